//! The ABI version is written once, in the WIT package line
//! (`wit/world.wit`); the SDK reads it from there. `wit` is the crate's own
//! directory (a symlink to the repository's, followed by `cargo package`),
//! so the bindings and this script read the same files in the repository
//! and in the published crate.

fn main() {
    let world = std::path::Path::new("wit/world.wit");
    println!("cargo:rerun-if-changed=wit");
    let text = std::fs::read_to_string(world).unwrap_or_else(|e| {
        panic!(
            "cannot read {}: {e}; in the repository, `sdk/wit` is a symlink to the one WIT \
             directory `../wit` (a checkout without symlinks needs it copied there), and a \
             packaged SDK carries its own copy",
            world.display()
        )
    });
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
