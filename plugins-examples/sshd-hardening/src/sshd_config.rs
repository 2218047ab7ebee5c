//! A parser for `sshd_config(5)`: keywords and arguments, `Include` with
//! glob patterns (expanded in lexical order, as sshd does), and `Match`
//! blocks. It reads files through the [`Files`] trait so that it can be
//! tested without a host.

use wildmatch::WildMatch;

/// Where configuration files come from.
pub trait Files {
    /// The content of `path`, `Ok(None)` when it does not exist.
    fn read(&self, path: &str) -> Result<Option<String>, String>;
    /// The file names in directory `dir`, `Ok(None)` when it does not exist.
    fn list(&self, dir: &str) -> Result<Option<Vec<String>>, String>;
}

/// One `Keyword arguments` line.
#[derive(Debug, Clone, PartialEq)]
pub struct Directive {
    /// Lowercased keyword.
    pub keyword: String,
    /// The arguments, as written.
    pub value: String,
    /// `file:line`.
    pub source: String,
    /// The `Match` criteria this line is under, `None` at global scope.
    pub match_block: Option<String>,
}

/// A parsed configuration, in the order sshd reads it.
#[derive(Debug, Default)]
pub struct SshdConfig {
    pub directives: Vec<Directive>,
    /// Every file read, in order.
    pub files: Vec<String>,
}

impl SshdConfig {
    /// The effective global value of `keyword`: sshd uses the first value it
    /// reads outside `Match` blocks.
    pub fn global(&self, keyword: &str) -> Option<&Directive> {
        let keyword = keyword.to_ascii_lowercase();
        self.directives
            .iter()
            .find(|d| d.match_block.is_none() && d.keyword == keyword)
    }

    /// Every `Match` block line that sets `keyword`.
    pub fn in_match_blocks(&self, keyword: &str) -> impl Iterator<Item = &Directive> {
        let keyword = keyword.to_ascii_lowercase();
        self.directives
            .iter()
            .filter(move |d| d.match_block.is_some() && d.keyword == keyword)
    }
}

/// Includes nest at most this deep (sshd itself uses 16).
const MAX_INCLUDE_DEPTH: usize = 16;

/// Parse the configuration starting at `path`. Relative `Include` paths are
/// taken relative to `/etc/ssh`, as sshd does.
pub fn parse(files: &dyn Files, path: &str) -> Result<Option<SshdConfig>, String> {
    let Some(text) = files.read(path)? else {
        return Ok(None);
    };
    let mut config = SshdConfig::default();
    let mut match_block = None;
    parse_text(files, path, &text, 0, &mut match_block, &mut config)?;
    Ok(Some(config))
}

fn parse_text(
    files: &dyn Files,
    path: &str,
    text: &str,
    depth: usize,
    match_block: &mut Option<String>,
    config: &mut SshdConfig,
) -> Result<(), String> {
    config.files.push(path.to_string());
    for (index, raw) in text.lines().enumerate() {
        let source = format!("{path}:{}", index + 1);
        let Some((keyword, value)) = split_line(raw) else {
            continue;
        };
        match keyword.as_str() {
            "match" => {
                // `Match all` returns to global scope.
                *match_block = if value.eq_ignore_ascii_case("all") {
                    None
                } else {
                    Some(value)
                };
            }
            "include" => {
                if depth >= MAX_INCLUDE_DEPTH {
                    return Err(format!(
                        "{source}: Include nested deeper than {MAX_INCLUDE_DEPTH}"
                    ));
                }
                for pattern in value.split_whitespace() {
                    for included in expand_include(files, pattern)? {
                        if let Some(text) = files.read(&included)? {
                            parse_text(files, &included, &text, depth + 1, match_block, config)?;
                        }
                    }
                }
            }
            _ => config.directives.push(Directive {
                keyword,
                value,
                source,
                match_block: match_block.clone(),
            }),
        }
    }
    Ok(())
}

/// Split `Keyword value` or `Keyword=value`, dropping comments and blanks.
fn split_line(line: &str) -> Option<(String, String)> {
    let line = line.trim();
    if line.is_empty() || line.starts_with('#') {
        return None;
    }
    let end = line
        .find(|c: char| c.is_whitespace() || c == '=')
        .unwrap_or(line.len());
    let keyword = line[..end].to_ascii_lowercase();
    let rest = line[end..].trim_start();
    let rest = rest.strip_prefix('=').unwrap_or(rest).trim();
    let value = rest.trim_matches('"').to_string();
    Some((keyword, value))
}

/// The files an `Include` pattern names, sorted. Globs are supported in the
/// last path component.
fn expand_include(files: &dyn Files, pattern: &str) -> Result<Vec<String>, String> {
    let pattern = if pattern.starts_with('/') {
        pattern.to_string()
    } else {
        format!("/etc/ssh/{pattern}")
    };
    let (dir, name) = pattern.rsplit_once('/').unwrap_or(("", pattern.as_str()));
    let dir = if dir.is_empty() { "/" } else { dir };
    if !name.contains(['*', '?', '[']) {
        return Ok(vec![pattern.clone()]);
    }
    if dir.contains(['*', '?', '[']) {
        return Err(format!(
            "Include {pattern}: globs in directory components are not supported"
        ));
    }
    let matcher = WildMatch::new(name);
    let mut names: Vec<String> = files
        .list(dir)?
        .unwrap_or_default()
        .into_iter()
        .filter(|n| matcher.matches(n))
        .collect();
    names.sort();
    Ok(names
        .into_iter()
        .map(|n| format!("{}/{n}", dir.trim_end_matches('/')))
        .collect())
}

/// An sshd time value (`90`, `1m30s`, `2h`) in seconds.
pub fn parse_time(value: &str) -> Option<u64> {
    let mut total = 0u64;
    let mut number = String::new();
    for c in value.trim().chars() {
        if c.is_ascii_digit() {
            number.push(c);
            continue;
        }
        let unit = match c.to_ascii_lowercase() {
            's' => 1,
            'm' => 60,
            'h' => 3600,
            'd' => 86_400,
            'w' => 604_800,
            _ => return None,
        };
        total = total.checked_add(number.parse::<u64>().ok()?.checked_mul(unit)?)?;
        number.clear();
    }
    if !number.is_empty() {
        total = total.checked_add(number.parse::<u64>().ok()?)?;
    }
    Some(total)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::BTreeMap;

    struct MemFiles(BTreeMap<&'static str, &'static str>);

    impl Files for MemFiles {
        fn read(&self, path: &str) -> Result<Option<String>, String> {
            Ok(self.0.get(path).map(|s| s.to_string()))
        }
        fn list(&self, dir: &str) -> Result<Option<Vec<String>>, String> {
            let prefix = format!("{dir}/");
            Ok(Some(
                self.0
                    .keys()
                    .filter_map(|k| k.strip_prefix(prefix.as_str()))
                    .filter(|rest| !rest.contains('/'))
                    .map(str::to_string)
                    .collect(),
            ))
        }
    }

    fn files(entries: &[(&'static str, &'static str)]) -> MemFiles {
        MemFiles(entries.iter().copied().collect())
    }

    #[test]
    fn first_global_value_wins_and_keywords_are_case_insensitive() {
        let f = files(&[(
            "/etc/ssh/sshd_config",
            "# comment\nPermitRootLogin no\npermitrootlogin yes\nMaxAuthTries=3\n",
        )]);
        let c = parse(&f, "/etc/ssh/sshd_config").unwrap().unwrap();
        let d = c.global("PermitRootLogin").unwrap();
        assert_eq!(d.value, "no");
        assert_eq!(d.source, "/etc/ssh/sshd_config:2");
        assert_eq!(c.global("maxauthtries").unwrap().value, "3");
    }

    #[test]
    fn includes_expand_globs_in_order_before_later_lines() {
        let f = files(&[
            (
                "/etc/ssh/sshd_config",
                "Include /etc/ssh/sshd_config.d/*.conf\nX11Forwarding no\n",
            ),
            ("/etc/ssh/sshd_config.d/20-b.conf", "X11Forwarding yes\n"),
            ("/etc/ssh/sshd_config.d/10-a.conf", "LogLevel VERBOSE\n"),
            ("/etc/ssh/sshd_config.d/notes.txt", "X11Forwarding maybe\n"),
        ]);
        let c = parse(&f, "/etc/ssh/sshd_config").unwrap().unwrap();
        assert_eq!(c.global("X11Forwarding").unwrap().value, "yes");
        assert_eq!(
            c.global("X11Forwarding").unwrap().source,
            "/etc/ssh/sshd_config.d/20-b.conf:1"
        );
        assert_eq!(
            c.files,
            vec![
                "/etc/ssh/sshd_config",
                "/etc/ssh/sshd_config.d/10-a.conf",
                "/etc/ssh/sshd_config.d/20-b.conf"
            ]
        );
    }

    #[test]
    fn relative_includes_are_under_etc_ssh() {
        let f = files(&[
            ("/etc/ssh/sshd_config", "Include extra.conf\n"),
            ("/etc/ssh/extra.conf", "PermitRootLogin no\n"),
        ]);
        let c = parse(&f, "/etc/ssh/sshd_config").unwrap().unwrap();
        assert_eq!(c.global("permitrootlogin").unwrap().value, "no");
    }

    #[test]
    fn match_blocks_are_not_global_until_match_all() {
        let f = files(&[(
            "/etc/ssh/sshd_config",
            "Match User backup\n  PermitRootLogin yes\nMatch all\nPermitRootLogin no\n",
        )]);
        let c = parse(&f, "/etc/ssh/sshd_config").unwrap().unwrap();
        assert_eq!(c.global("PermitRootLogin").unwrap().value, "no");
        let m: Vec<_> = c.in_match_blocks("PermitRootLogin").collect();
        assert_eq!(m.len(), 1);
        assert_eq!(m[0].match_block.as_deref(), Some("User backup"));
    }

    #[test]
    fn recursive_include_is_bounded() {
        let f = files(&[("/etc/ssh/sshd_config", "Include /etc/ssh/sshd_config\n")]);
        let err = parse(&f, "/etc/ssh/sshd_config").unwrap_err();
        assert!(err.contains("nested deeper"), "{err}");
    }

    #[test]
    fn missing_config_is_none() {
        assert!(
            parse(&files(&[]), "/etc/ssh/sshd_config")
                .unwrap()
                .is_none()
        );
    }

    #[test]
    fn time_values() {
        assert_eq!(parse_time("60"), Some(60));
        assert_eq!(parse_time("1m30s"), Some(90));
        assert_eq!(parse_time("2h"), Some(7200));
        assert_eq!(parse_time("soon"), None);
    }
}
