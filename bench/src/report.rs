//! `BENCHMARKS.md`: one section per benchmark, each a table with the
//! median, the 99th percentile, the baseline measured in the same run, the
//! ratio and the target.

use std::fmt::Write;

/// One benchmark's table.
pub struct Table {
    title: String,
    intro: String,
    header: Vec<String>,
    rows: Vec<Vec<String>>,
    notes: Vec<String>,
}

impl Table {
    /// A table titled `title` with the columns `header`; `intro` says what
    /// is measured and how.
    pub fn new(title: &str, intro: &str, header: &[&str]) -> Self {
        Table {
            title: title.to_string(),
            intro: intro.to_string(),
            header: header.iter().map(|h| h.to_string()).collect(),
            rows: Vec::new(),
            notes: Vec::new(),
        }
    }

    /// A row (as many cells as columns).
    pub fn row(&mut self, cells: Vec<String>) {
        self.rows.push(cells);
    }

    /// A line under the table.
    pub fn note(&mut self, note: impl Into<String>) {
        self.notes.push(note.into());
    }

    /// The table as Markdown.
    pub fn markdown(&self) -> String {
        let mut out = String::new();
        let _ = writeln!(out, "## {}\n\n{}\n", self.title, self.intro);
        let _ = writeln!(out, "| {} |", self.header.join(" | "));
        let _ = writeln!(
            out,
            "|{}",
            self.header.iter().map(|_| "---|").collect::<String>()
        );
        for row in &self.rows {
            let _ = writeln!(out, "| {} |", row.join(" | "));
        }
        if !self.notes.is_empty() {
            out.push('\n');
            for note in &self.notes {
                let _ = writeln!(out, "{note}\n");
            }
        }
        out
    }
}

/// Whether a target is met, for the table's last column.
pub fn verdict(met: bool, by: &str) -> String {
    if met {
        "met".to_string()
    } else if by.is_empty() {
        "**missed**".to_string()
    } else {
        format!("**missed** ({by})")
    }
}

/// A size in KiB for a table: MiB, GiB or TiB.
pub fn size(kib: u64) -> String {
    let mib = kib as f64 / 1024.0;
    if mib < 10.0 * 1024.0 {
        format!("{mib:.0} MiB")
    } else if mib < 10.0 * 1024.0 * 1024.0 {
        format!("{:.0} GiB", mib / 1024.0)
    } else {
        format!("{:.1} TiB", mib / 1024.0 / 1024.0)
    }
}
