//! The ABI version is written once, in `wit/world.wit`'s package line;
//! this reads it from there so that no other file repeats it.

use std::path::PathBuf;

fn main() {
    let manifest_dir = PathBuf::from(std::env::var_os("CARGO_MANIFEST_DIR").unwrap_or_default());
    let world = manifest_dir.join("../wit/world.wit");
    println!("cargo:rerun-if-changed={}", world.display());
    let text = std::fs::read_to_string(&world)
        .unwrap_or_else(|e| panic!("cannot read {}: {e}", world.display()));
    let version = text
        .lines()
        .find_map(|line| {
            line.trim()
                .strip_prefix("package assessment:plugin@")?
                .strip_suffix(';')
                .map(str::to_string)
        })
        .unwrap_or_else(|| {
            panic!(
                "{} has no `package assessment:plugin@X.Y.Z;` line",
                world.display()
            )
        });
    println!("cargo:rustc-env=ASSESSMENT_ABI_LATEST={version}");
}
