//! The one place where text chosen by a plugin (log messages, denial
//! reasons carrying guest paths, run errors, `describe` fields, notes) is
//! made safe to leave the sandbox: control characters are escaped so a
//! plugin cannot forge a log line or drive a terminal, and the length is
//! capped with a visible marker so it cannot fill a disk or a heartbeat.

use std::fmt::Write as _;

/// Caps of the guest-derived strings the host passes on, in bytes.
pub mod caps {
    /// One log message (the run's log budget bounds their sum).
    pub const LOG_MESSAGE: usize = 8 << 10;
    /// One denial reason (it names the refused path or program).
    pub const DENIAL: usize = 512;
    /// A run error (`run-error.failed` / `invalid-config`) or a note.
    pub const RUN_ERROR: usize = 2 << 10;
    /// A field of `describe` quoted in an error message.
    pub const DESCRIBE_FIELD: usize = 256;
}

/// `text` with control characters escaped (`\n`, `\u{1b}`, …; tabs kept)
/// and, when the escaped text is longer than `max` bytes, cut at a
/// character boundary and followed by `…[truncated N bytes]`, N counting
/// the bytes of the original text that were left out.
pub fn bounded(text: &str, max: usize) -> String {
    let mut out = String::with_capacity(text.len().min(max) + 32);
    for (offset, c) in text.char_indices() {
        let before = out.len();
        match c {
            '\t' => out.push('\t'),
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\\' => out.push_str("\\\\"),
            c if c.is_control() || is_invisible_format(c) => {
                let _ = write!(out, "\\u{{{:x}}}", c as u32);
            }
            c => out.push(c),
        }
        if out.len() > max {
            out.truncate(before);
            let _ = write!(out, "…[truncated {} bytes]", text.len() - offset);
            break;
        }
    }
    out
}

/// Characters that render as nothing but reorder or hide what follows
/// (bidirectional overrides, zero-width joiners): a terminal or a log
/// viewer would show a line other than the one written.
fn is_invisible_format(c: char) -> bool {
    matches!(c, '\u{200b}'..='\u{200f}' | '\u{202a}'..='\u{202e}' | '\u{2066}'..='\u{2069}' | '\u{feff}')
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn control_characters_are_escaped_so_no_line_can_be_forged() {
        assert_eq!(
            bounded("a\nb\x1b[31mc\td\r\\", 100),
            "a\\nb\\u{1b}[31mc\td\\r\\\\"
        );
        assert_eq!(bounded("x\u{202e}y", 100), "x\\u{202e}y");
        assert!(!bounded("2026 INFO forged\nline", 100).contains('\n'));
    }

    #[test]
    fn long_text_is_cut_with_a_visible_count() {
        let text = "é".repeat(1000); // 2000 bytes
        let out = bounded(&text, 101);
        assert!(out.starts_with(&"é".repeat(50)), "{out}");
        assert!(out.ends_with("…[truncated 1900 bytes]"), "{out}");
        assert_eq!(bounded("short", 5), "short");
        assert_eq!(bounded("", 0), "");
    }

    #[test]
    fn escapes_count_against_the_cap() {
        let out = bounded(&"\n".repeat(1 << 20), 64);
        assert!(out.len() < 64 + 32, "{}", out.len());
        assert!(out.ends_with("bytes]"));
    }
}
