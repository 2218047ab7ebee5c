//! The ABI version is written once, in the WIT package line
//! (`wit/world.wit`); the SDK reads it from there.

fn main() {
    let world = std::path::Path::new("wit/world.wit");
    println!("cargo:rerun-if-changed=wit");
    let text = std::fs::read_to_string(world)
        .unwrap_or_else(|e| panic!("cannot read {}: {e}", world.display()));
    let version = text
        .lines()
        .find_map(|line| {
            line.trim()
                .strip_prefix("package assessment:plugin@")?
                .strip_suffix(';')
                .map(str::to_string)
        })
        .unwrap_or_else(|| panic!("{} has no package line", world.display()));
    println!("cargo:rustc-env=ASSESSMENT_ABI_VERSION={version}");
}
