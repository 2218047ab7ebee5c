//! The benchmarks' plugin logic as a native program, for the
//! process-per-plugin baseline: spawned once per job, it reports its one
//! finding as a JSON line on stdout (the pipe), as a plugin behind an RPC
//! handshake would. `native-probe` emits one finding; `native-probe DIR N`
//! stats and reads `DIR/f0` … `DIR/f{N-1}` first, like the wasm plugin
//! `bench/plugin`.

use std::io::Write;

fn main() -> std::process::ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let message = match args.as_slice() {
        [] => "one finding".to_string(),
        [dir, count] => {
            let Ok(count) = count.parse::<u64>() else {
                eprintln!("usage: native-probe [DIR COUNT]");
                return std::process::ExitCode::from(2);
            };
            let mut bytes = 0u64;
            for i in 0..count {
                let path = format!("{dir}/f{i}");
                let read = std::fs::metadata(&path).and_then(|m| {
                    let content = std::fs::read(&path)?;
                    Ok((m.len(), content.len() as u64))
                });
                match read {
                    Ok((size, len)) if size == len => bytes += size,
                    Ok(_) => {
                        eprintln!("{path}: size changed");
                        return std::process::ExitCode::FAILURE;
                    }
                    Err(e) => {
                        eprintln!("{path}: {e}");
                        return std::process::ExitCode::FAILURE;
                    }
                }
            }
            format!("read {count} files, {bytes} bytes")
        }
        _ => {
            eprintln!("usage: native-probe [DIR COUNT]");
            return std::process::ExitCode::from(2);
        }
    };
    let finding = serde_json::json!({
        "check_id": "bench-one",
        "status": "pass",
        "message": message,
    });
    let mut out = std::io::stdout().lock();
    if writeln!(out, "{finding}")
        .and_then(|()| out.flush())
        .is_err()
    {
        return std::process::ExitCode::FAILURE;
    }
    std::process::ExitCode::SUCCESS
}
