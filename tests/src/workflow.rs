//! The GitHub workflows' steps, read as the runner reads them.

/// The `run:` script of the step named `name` in the text of `workflow`,
/// as bash receives it (the suite runs workflow steps as written).
pub fn step_script(workflow: &str, name: &str) -> String {
    let lines: Vec<&str> = workflow.lines().collect();
    let indent = |line: &str| line.len() - line.trim_start().len();
    let start = lines
        .iter()
        .position(|l| l.trim() == format!("- name: {name}"))
        .unwrap_or_else(|| panic!("no step named {name:?}"));
    let keys = indent(lines[start]) + 2;
    let mut i = start + 1;
    while i < lines.len() && !(indent(lines[i]) == keys && lines[i].trim() == "run: |") {
        assert!(
            lines[i].trim().is_empty() || indent(lines[i]) >= keys,
            "step {name:?} has no `run: |` script"
        );
        i += 1;
    }
    let script: Vec<&str> = lines[i + 1..]
        .iter()
        .take_while(|l| l.trim().is_empty() || indent(l) > keys)
        .copied()
        .collect();
    let margin = script
        .iter()
        .filter(|l| !l.trim().is_empty())
        .map(|l| indent(l))
        .min()
        .unwrap();
    let script: String = script
        .iter()
        .map(|l| l.get(margin..).unwrap_or("").to_string() + "\n")
        .collect();
    assert!(
        !script.contains("${{"),
        "step {name:?} takes its inputs from env, not from expressions in the script"
    );
    script
}
