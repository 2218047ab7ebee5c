//! The benchmarks' plugin (see `bench/`). Without configuration it emits
//! one finding and returns: the smallest real job, for per-job overhead and
//! throughput. With `files = "/dir"` and `count = N` it stats and reads
//! `/dir/f0` … `/dir/f{N-1}` and emits one finding with the bytes read:
//! the host-call path. `bench/src/bin/native-probe.rs` is the same logic as
//! a native program.

use assessment_sdk::{
    Check, Plugin, PluginInfo, RunError, RunSummary, Severity, ValueKind, config, fs, register,
};

const ONE: Check = Check::new("bench-one", "Benchmark finding", Severity::Info);

struct BenchProbe;

impl Plugin for BenchProbe {
    fn describe() -> PluginInfo {
        PluginInfo::new(
            "bench-probe",
            env!("CARGO_PKG_VERSION"),
            "The benchmarks' plugin",
        )
        .check(&ONE)
        .config_option(
            "files",
            ValueKind::Text,
            "directory of the files f0..f{count-1}",
        )
        .config_option(
            "count",
            ValueKind::Integer,
            "how many files to stat and read",
        )
    }

    fn run() -> Result<RunSummary, RunError> {
        let Some(dir) = config::string("files")? else {
            ONE.pass("one finding").emit()?;
            return Ok(RunSummary::default());
        };
        let count = config::integer_or("count", 0)?;
        let mut bytes = 0u64;
        for i in 0..count {
            let path = format!("{dir}/f{i}");
            let size = fs::stat(&path)
                .map_err(|e| RunError::Failed(e.explain()))?
                .size;
            let content = fs::read_file(&path).map_err(|e| RunError::Failed(e.explain()))?;
            if content.len() as u64 != size {
                return Err(RunError::Failed(format!("{path}: size changed")));
            }
            bytes += size;
        }
        ONE.pass(format!("read {count} files, {bytes} bytes"))
            .evidence("bytes", bytes)
            .emit()?;
        Ok(RunSummary::default())
    }
}

register!(BenchProbe);
