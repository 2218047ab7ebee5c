//! The audit of a plugin component: the sandboxing rules a component must
//! meet before it is signed (in CI) and before it is stored or compiled (in
//! the host). Rejections are findings with `level: reject`; anything worth a
//! reviewer's look is `level: warn`. The verdict is one of three outcomes:
//! `accepted` (nothing found), `flagged` (warnings only: released after a
//! person approves) or `rejected`.

use serde::{Deserialize, Serialize};
use wasmparser::{Parser, Payload, Validator};

use capability_model::abi::split_interface;
use capability_model::{AbiVersion, Capability};

use crate::manifest::Manifest;

pub use capability_model::ABI_PACKAGE;

/// Default size limit of a component: admits a typical componentize-py
/// plugin (18–40 MB) with room to spare; a runtime and a plugin can set
/// their own.
pub const DEFAULT_MAX_BYTES: u64 = 64 << 20;

/// Interfaces (prefixes, any 0.2.x version) that a plugin may import besides
/// the plugin ABI: what Rust's standard library links for `wasm32-wasip2`.
/// The host links them with nothing reachable.
pub const WASI_PREFIXES: &[&str] = &[
    "wasi:cli/",
    "wasi:io/",
    "wasi:clocks/",
    "wasi:random/",
    "wasi:filesystem/",
    "wasi:sockets/",
];

/// How serious an audit finding is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Level {
    /// The component is refused.
    Reject,
    /// Worth a reviewer's look; not a refusal.
    Warn,
}

/// The outcome of an audit, in increasing severity.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Verdict {
    /// Nothing found: signed and published.
    Accepted,
    /// Warnings only: published after a person approves.
    Flagged,
    /// Refused: never signed.
    Rejected,
}

impl Verdict {
    /// `accepted`, `flagged` or `rejected`.
    pub fn as_str(self) -> &'static str {
        match self {
            Verdict::Accepted => "accepted",
            Verdict::Flagged => "flagged",
            Verdict::Rejected => "rejected",
        }
    }

    /// The verdict of these findings: rejected on any rejection, flagged on
    /// any warning, accepted otherwise.
    pub fn of(findings: &[AuditFinding]) -> Verdict {
        findings
            .iter()
            .map(|f| match f.level {
                Level::Reject => Verdict::Rejected,
                Level::Warn => Verdict::Flagged,
            })
            .max()
            .unwrap_or(Verdict::Accepted)
    }
}

impl std::fmt::Display for Verdict {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// One rule outcome.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct AuditFinding {
    /// Stable rule id, e.g. `abi-version`.
    pub rule: &'static str,
    /// Reject or warn.
    pub level: Level,
    /// What was found and how to fix it.
    pub message: String,
}

/// The audit of one component.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct AuditReport {
    /// Accepted, flagged (warnings only) or rejected.
    pub verdict: Verdict,
    /// Lowercase hex SHA-256 of the component.
    pub sha256: String,
    /// Size in bytes.
    pub size: u64,
    /// The ABI version the component targets, if found.
    pub abi_version: Option<String>,
    /// Top-level imports.
    pub imports: Vec<String>,
    /// Top-level exports.
    pub exports: Vec<String>,
    /// Every rule that did not simply pass.
    pub findings: Vec<AuditFinding>,
}

impl AuditReport {
    /// Whether the component was not rejected (its verdict is accepted or
    /// flagged): what the host requires before it stores or runs one.
    pub fn accepted(&self) -> bool {
        self.findings.iter().all(|f| f.level != Level::Reject)
    }

    /// The first rejection, if any.
    pub fn first_rejection(&self) -> Option<&AuditFinding> {
        self.findings.iter().find(|f| f.level == Level::Reject)
    }

    /// The report as text for people.
    pub fn to_text(&self) -> String {
        let mut out = format!(
            "verdict: {}\nsha256:  {}\nsize:    {} bytes\nabi:     {}\n",
            self.verdict,
            self.sha256,
            self.size,
            self.abi_version
                .as_deref()
                .map_or("unknown".to_string(), |v| format!("{ABI_PACKAGE}@{v}"))
        );
        out.push_str(&format!(
            "imports: {}\n",
            if self.imports.is_empty() {
                "none".to_string()
            } else {
                self.imports.join(", ")
            }
        ));
        for f in &self.findings {
            out.push_str(&format!(
                "{:<6} {}: {}\n",
                if f.level == Level::Reject {
                    "REJECT"
                } else {
                    "warn"
                },
                f.rule,
                f.message
            ));
        }
        out
    }
}

impl AuditReport {
    /// Add a finding made outside the component's audit (a capability
    /// widening found by the capability diff), and update the verdict.
    pub fn add_finding(&mut self, finding: AuditFinding) {
        self.findings.push(finding);
        self.verdict = Verdict::of(&self.findings);
    }
}

/// An audit report as read back from its JSON (`audit --json-report`):
/// what `package --audit-report` checks before it signs.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
pub struct RecordedReport {
    /// The verdict recorded.
    pub verdict: Verdict,
    /// The audited component's SHA-256 (lowercase hex).
    pub sha256: String,
    /// Its size in bytes.
    pub size: u64,
    /// The findings.
    #[serde(default)]
    pub findings: Vec<RecordedFinding>,
}

/// One finding of a [`RecordedReport`].
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
pub struct RecordedFinding {
    /// Rule id.
    pub rule: String,
    /// Reject or warn.
    pub level: Level,
    /// The message.
    pub message: String,
}

/// Why an audit report could not be read.
#[derive(Debug, thiserror::Error)]
#[error("not an audit report (plugin-registry audit --json-report): {0}")]
pub struct ReportError(String);

impl RecordedReport {
    /// Parse a report. The verdict must be the one its findings give, so
    /// that a report edited to say `accepted` over a rejection is refused.
    pub fn from_bytes(bytes: &[u8]) -> Result<Self, ReportError> {
        let report: RecordedReport =
            serde_json::from_slice(bytes).map_err(|e| ReportError(e.to_string()))?;
        let from_findings = report
            .findings
            .iter()
            .map(|f| match f.level {
                Level::Reject => Verdict::Rejected,
                Level::Warn => Verdict::Flagged,
            })
            .max()
            .unwrap_or(Verdict::Accepted);
        if from_findings != report.verdict {
            return Err(ReportError(format!(
                "its verdict is {} but its findings make it {from_findings}",
                report.verdict
            )));
        }
        Ok(report)
    }
}

/// Whether a plugin built for ABI version `found` runs on this build (any
/// supported version line; see [`AbiVersion::of`]).
pub fn abi_compatible(found: &str) -> bool {
    AbiVersion::of(found).is_some()
}

/// `assessment:plugin/plugin@0.1.3` → `Some("0.1.3")` for `interface =
/// "plugin"` (or any interface when `interface` is empty).
fn abi_version_of(name: &str, interface: &str) -> Option<String> {
    let (iface, version) = split_interface(name)?;
    (interface.is_empty() || iface == interface).then(|| version.to_string())
}

/// Audit `bytes`; with `manifest`, also check that the component is the one
/// the manifest describes and uses no more than it declares.
pub fn audit(bytes: &[u8], manifest: Option<&Manifest>, max_bytes: u64) -> AuditReport {
    audit_known(bytes, manifest, max_bytes, Known::default())
}

/// What the caller already knows of the bytes it audits, so that the audit
/// need not work it out again.
#[derive(Debug, Clone, Copy, Default)]
pub struct Known<'a> {
    /// Their SHA-256 (lowercase hex), computed by the caller from these
    /// very bytes.
    pub sha256: Option<&'a str>,
    /// These very bytes (by that digest) were validated in full before:
    /// the host compiled them with wasmtime, which validates every
    /// function body. The audit then checks everything but the function
    /// bodies again (the size, the structure, the ABI, the imports, the
    /// manifest): the bodies are most of the work for a large component
    /// and cannot have changed under the same digest.
    pub validated: bool,
}

/// [`audit`], told what the caller already knows of `bytes`.
pub fn audit_known(
    bytes: &[u8],
    manifest: Option<&Manifest>,
    max_bytes: u64,
    known: Known<'_>,
) -> AuditReport {
    let mut findings = Vec::new();
    let mut reject = |rule, message: String| {
        findings.push(AuditFinding {
            rule,
            level: Level::Reject,
            message,
        })
    };
    let sha256 = match known.sha256 {
        Some(digest) => digest.to_string(),
        None => crate::manifest::sha256_hex(bytes),
    };
    let size = bytes.len() as u64;
    let mut report = AuditReport {
        verdict: Verdict::Rejected,
        sha256,
        size,
        abi_version: None,
        imports: Vec::new(),
        exports: Vec::new(),
        findings: Vec::new(),
    };

    if size > max_bytes {
        // Refused without being parsed: the limit bounds the work too.
        reject(
            "size",
            format!("{size} bytes is more than the {max_bytes}-byte limit"),
        );
    } else if Parser::is_core_wasm(bytes) {
        reject(
            "component",
            "a core WebAssembly module, not a component; build plugins for `wasm32-wasip2` (or wrap the module with `wasm-tools component new`)".to_string(),
        );
    } else if !Parser::is_component(bytes) {
        reject("component", "not a WebAssembly file".to_string());
    } else if let Err(e) = (!known.validated)
        .then(|| Validator::new().validate_all(bytes))
        .transpose()
    {
        reject("validation", format!("malformed component: {e}"));
    } else {
        match structure(bytes) {
            Err(e) => reject("validation", format!("malformed component: {e}")),
            Ok(s) => {
                if s.start_sections > 0 {
                    reject("start-function", "the component has a start function; plugins must do nothing until `run` is called".to_string());
                }
                match s.exports.iter().find_map(|e| abi_version_of(e, "plugin")) {
                    None => reject(
                        "abi-export",
                        format!(
                            "does not export `{ABI_PACKAGE}/plugin`; is it an Assessment Runtime plugin? (exports: {})",
                            if s.exports.is_empty() {
                                "none".to_string()
                            } else {
                                s.exports.join(", ")
                            }
                        ),
                    ),
                    Some(found) => {
                        if !abi_compatible(&found) {
                            reject(
                                "abi-version",
                                format!(
                                    "built for plugin ABI {ABI_PACKAGE}@{found}, this host supports {ABI_PACKAGE} {}; rebuild the plugin with a matching assessment-sdk or upgrade the host",
                                    AbiVersion::supported_list()
                                ),
                            );
                        }
                        report.abi_version = Some(found);
                    }
                }
                let exported = report.abi_version.as_deref().and_then(AbiVersion::of);
                for import in &s.imports {
                    let ok = match abi_version_of(import, "") {
                        // The imports of the plugin ABI are those of the
                        // version it exports: one plugin, one contract.
                        Some(version) => {
                            AbiVersion::of(&version).is_some()
                                && AbiVersion::of(&version) == exported
                        }
                        None => {
                            WASI_PREFIXES.iter().any(|p| import.starts_with(p))
                                && import.contains("@0.2.")
                        }
                    };
                    if !ok {
                        reject(
                            "imports",
                            format!(
                                "imports `{import}`, which the host does not provide to plugins"
                            ),
                        );
                    }
                }
                report.imports = s.imports;
                report.exports = s.exports;
            }
        }
    }

    if let Some(m) = manifest {
        if m.component.sha256 != report.sha256 {
            reject(
                "manifest-digest",
                format!(
                    "the component's sha256 is {}, the manifest says {}",
                    report.sha256, m.component.sha256
                ),
            );
        }
        if m.component.size != size {
            reject(
                "manifest-size",
                format!(
                    "the component has {size} bytes, the manifest says {}",
                    m.component.size
                ),
            );
        }
        if let Some(found) = &report.abi_version {
            let declared = format!("{ABI_PACKAGE}@{found}");
            if m.abi != declared {
                reject(
                    "manifest-abi",
                    format!(
                        "the manifest declares ABI {}, the component targets {declared}",
                        m.abi
                    ),
                );
            }
        }
        if let Some(abi) = report.abi_version.as_deref().and_then(AbiVersion::of) {
            capability_rules(abi, &report.imports, &m.capabilities, &mut findings);
        }
    }

    report.verdict = Verdict::of(&findings);
    report.findings = findings;
    report
}

/// Per capability: a component that imports a capability's interface must
/// declare it (the operator's grants are intersected with the
/// declaration), and a declaration is refused where the component does not
/// import the interface (it could never be used, and would widen what a
/// reviewer has to trust). In ABI 0.1.0 one `target` interface carries
/// every capability, so only "imports `target` but declares nothing" and
/// "declares but does not import `target`" can be told.
fn capability_rules(
    abi: AbiVersion,
    imports: &[String],
    declared: &capability_model::Capabilities,
    findings: &mut Vec<AuditFinding>,
) {
    for capability in declared.declared() {
        if capability.interface(abi).is_none() {
            findings.push(AuditFinding {
                rule: "unusable-capability",
                level: Level::Reject,
                message: format!(
                    "the manifest declares `{capability}`, which {abi} does not have; build the plugin for a newer ABI or remove `{capability}` from plugin.toml"
                ),
            });
        }
    }
    if abi == AbiVersion::V0_1 {
        let uses_target = Capability::Filesystem.usable_with(abi, imports);
        let declares = declared
            .declared()
            .iter()
            .any(|c| c.interface(abi).is_some());
        if uses_target && !declares {
            findings.push(AuditFinding {
                rule: "undeclared-capability",
                level: Level::Reject,
                message: format!(
                    "the component imports `{}` but the manifest declares no capability; declare what it reads in plugin.toml",
                    abi.interface("target")
                ),
            });
        }
        if declares && !uses_target {
            findings.push(AuditFinding {
                rule: "unused-capability",
                level: Level::Warn,
                message: "the manifest declares capabilities the component never uses (it does not import `target`)".to_string(),
            });
        }
        return;
    }
    for capability in Capability::ALL
        .into_iter()
        .filter(|c| c.interface(abi).is_some())
    {
        let interface = capability.interface_name(abi);
        match (
            capability.usable_with(abi, imports),
            declared.declares(capability),
        ) {
            (true, false) => findings.push(AuditFinding {
                rule: "undeclared-capability",
                level: Level::Reject,
                message: format!(
                    "the component imports `{interface}` but the manifest declares no `{}`; declare what it needs under [capabilities] in plugin.toml",
                    capability.grant_key()
                ),
            }),
            (false, true) => findings.push(AuditFinding {
                rule: "unusable-capability",
                level: Level::Reject,
                message: format!(
                    "the manifest declares `{}` but the component does not import `{interface}`, so it can never be granted; remove `{}` from plugin.toml",
                    capability.grant_key(),
                    capability.grant_key()
                ),
            }),
            _ => {}
        }
    }
}

struct Structure {
    imports: Vec<String>,
    exports: Vec<String>,
    start_sections: usize,
}

/// Top-level import and export names, and start sections at any depth.
fn structure(bytes: &[u8]) -> Result<Structure, String> {
    let mut s = Structure {
        imports: Vec::new(),
        exports: Vec::new(),
        start_sections: 0,
    };
    // Nested modules and components have their own sections; only depth 0
    // is the plugin's interface.
    let mut depth = 0usize;
    for payload in Parser::new(0).parse_all(bytes) {
        match payload.map_err(|e| e.to_string())? {
            Payload::ModuleSection { .. } | Payload::ComponentSection { .. } => depth += 1,
            Payload::End(_) => depth = depth.saturating_sub(1),
            Payload::ComponentStartSection { .. } | Payload::StartSection { .. } => {
                s.start_sections += 1
            }
            Payload::ComponentImportSection(reader) if depth == 0 => {
                for import in reader {
                    s.imports
                        .push(import.map_err(|e| e.to_string())?.name.name.to_string());
                }
            }
            Payload::ComponentExportSection(reader) if depth == 0 => {
                for export in reader {
                    s.exports
                        .push(export.map_err(|e| e.to_string())?.name.name.to_string());
                }
            }
            _ => {}
        }
    }
    Ok(s)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn abi_versions_follow_component_model_semver() {
        assert!(abi_compatible("0.1.0"));
        assert!(abi_compatible("0.1.7"));
        assert!(abi_compatible("0.2.0"));
        assert!(!abi_compatible("0.3.0"));
        assert!(!abi_compatible("1.1.0"));
        assert!(!abi_compatible("banana"));
        assert_eq!(
            abi_version_of("assessment:plugin/plugin@0.1.0", "plugin").as_deref(),
            Some("0.1.0")
        );
        assert_eq!(
            abi_version_of("assessment:plugin/target@0.1.0", "plugin"),
            None
        );
        assert_eq!(
            abi_version_of("assessment:plugin/target@0.1.0", "").as_deref(),
            Some("0.1.0")
        );
        assert_eq!(abi_version_of("other:plugin/plugin@0.1.0", "plugin"), None);
    }

    #[test]
    fn each_capability_is_declared_exactly_when_its_interface_is_imported() {
        let v2 = AbiVersion::V0_2;
        let imports = vec![v2.interface("filesystem"), v2.interface("results")];
        let rules = |declared: &capability_model::Capabilities| {
            let mut findings = Vec::new();
            capability_rules(v2, &imports, declared, &mut findings);
            findings
                .into_iter()
                .map(|f| (f.rule, f.level, f.message))
                .collect::<Vec<_>>()
        };
        let mut declared = capability_model::Capabilities::default();
        let none = rules(&declared);
        assert_eq!(none.len(), 1);
        assert_eq!(none[0].0, "undeclared-capability");
        assert!(none[0].2.contains("filesystem@") && none[0].2.contains("`read`"));
        declared.read.insert("/etc".into());
        assert!(rules(&declared).is_empty());
        declared.commands.insert("/usr/bin/id".into());
        let widened = rules(&declared);
        assert_eq!(widened.len(), 1);
        assert_eq!(
            (widened[0].0, widened[0].1),
            ("unusable-capability", Level::Reject)
        );
        assert!(
            widened[0]
                .2
                .contains("does not import `assessment:plugin/process@")
        );

        // In 0.1.0 one `target` interface carries every capability.
        let mut findings = Vec::new();
        capability_rules(
            AbiVersion::V0_1,
            &["assessment:plugin/target@0.1.0".to_string()],
            &declared,
            &mut findings,
        );
        assert!(findings.is_empty());
    }

    #[test]
    fn core_modules_garbage_and_oversized_files_are_rejected() {
        let core = audit(b"\0asm\x01\0\0\0", None, DEFAULT_MAX_BYTES);
        assert!(!core.accepted());
        assert_eq!(core.first_rejection().unwrap().rule, "component");
        assert!(
            core.first_rejection()
                .unwrap()
                .message
                .contains("core WebAssembly module")
        );
        let garbage = audit(b"hello", None, DEFAULT_MAX_BYTES);
        assert_eq!(
            garbage.first_rejection().unwrap().message,
            "not a WebAssembly file"
        );
        let big = audit(b"\0asm\x01\0\0\0", None, 4);
        assert_eq!(big.first_rejection().unwrap().rule, "size");
        assert_eq!(big.verdict, Verdict::Rejected);
    }

    #[test]
    fn oversized_components_are_rejected_without_being_parsed() {
        // A component header followed by garbage: parsed, it would also be
        // rejected as malformed; over the limit, only the size is reported.
        let mut bytes = b"\0asm\x0d\0\x01\0".to_vec();
        bytes.extend(std::iter::repeat_n(0xff, 64));
        let within = audit(&bytes, None, DEFAULT_MAX_BYTES);
        assert_eq!(within.first_rejection().unwrap().rule, "validation");
        let over = audit(&bytes, None, 16);
        assert_eq!(
            over.findings.iter().map(|f| f.rule).collect::<Vec<_>>(),
            ["size"]
        );
        assert_eq!(over.size, 72);
        assert_eq!(over.sha256, crate::manifest::sha256_hex(&bytes));
    }
}
