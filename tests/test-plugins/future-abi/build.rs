//! Writes the plugin ABI's WIT with its minor version bumped past the
//! latest one into `wit/` (generated, not committed), so that this test
//! plugin targets a future ABI without keeping a copy of the WIT.

use std::path::Path;

fn main() {
    let real = Path::new("../../../wit");
    println!("cargo:rerun-if-changed={}", real.display());
    let out = Path::new("wit");
    std::fs::create_dir_all(out).unwrap_or_else(|e| panic!("cannot create wit/: {e}"));
    let entries =
        std::fs::read_dir(real).unwrap_or_else(|e| panic!("cannot read {}: {e}", real.display()));
    for entry in entries.flatten() {
        let path = entry.path();
        if path.extension().is_none_or(|e| e != "wit") {
            continue;
        }
        let text = std::fs::read_to_string(&path)
            .unwrap_or_else(|e| panic!("cannot read {}: {e}", path.display()));
        let bumped: String = text
            .lines()
            .map(
                |line| match line.trim().strip_prefix("package assessment:plugin@") {
                    Some(version) => {
                        let mut parts = version.trim_end_matches(';').split('.');
                        let major = parts.next().unwrap_or("0");
                        let minor: u32 = parts.next().and_then(|m| m.parse().ok()).unwrap_or(0);
                        format!("package assessment:plugin@{major}.{}.0;\n", minor + 1)
                    }
                    None => format!("{line}\n"),
                },
            )
            .collect();
        let target = out.join(entry.file_name());
        if std::fs::read_to_string(&target).ok().as_deref() != Some(bumped.as_str()) {
            std::fs::write(&target, bumped)
                .unwrap_or_else(|e| panic!("cannot write {}: {e}", target.display()));
        }
    }
}
