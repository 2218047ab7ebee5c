//! The web view's pages as HTML. maud escapes every value spliced into
//! the markup, so text a plugin or a runtime chose (titles, messages,
//! names, heartbeat fields) renders as text, never as markup; links are
//! built only from values the store validated (UUIDs) or URL-encoded.

use maud::{DOCTYPE, Markup, html};
use serde_json::Value;

use crate::db::{
    CheckSummary, EnrollmentTokenSummary, FleetDetails, LatestResult, ResultFilter, StreamPage,
};
use crate::model::{RuntimeSummary, StoredEvidence};

/// Which page a header link is for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Section {
    /// The latest results.
    Results,
    /// The per-check summary.
    Summary,
    /// Runtimes and enrollment tokens.
    Fleet,
}

/// The frame of every signed-in page.
pub fn layout(title: &str, section: Option<Section>, csrf: &str, body: Markup) -> Markup {
    let link = |target: Section, href: &str, text: &str| {
        html! { a href=(href) class=[(section == Some(target)).then_some("current")] { (text) } }
    };
    html! {
        (DOCTYPE)
        html lang="en" {
            head {
                meta charset="utf-8";
                meta name="viewport" content="width=device-width, initial-scale=1";
                title { (title) " · Assessment control plane" }
                link rel="stylesheet" href="/ui/style.css";
            }
            body {
                header {
                    span.brand { "Assessment control plane" }
                    nav {
                        (link(Section::Results, "/ui/results", "Results"))
                        (link(Section::Summary, "/ui/summary", "Checks"))
                        (link(Section::Fleet, "/ui/fleet", "Fleet"))
                    }
                    form method="post" action="/ui/sign-out" {
                        input type="hidden" name="csrf" value=(csrf);
                        button type="submit" { "Sign out" }
                    }
                }
                main { (body) }
            }
        }
    }
}

/// The sign-in page, with an error when an attempt failed.
pub fn sign_in(csrf: &str, error: Option<&str>) -> Markup {
    html! {
        (DOCTYPE)
        html lang="en" {
            head {
                meta charset="utf-8";
                title { "Sign in · Assessment control plane" }
                link rel="stylesheet" href="/ui/style.css";
            }
            body {
                form.signin method="post" action="/ui/sign-in" {
                    h1 { "Assessment control plane" }
                    @if let Some(error) = error {
                        p.notice.error { (error) }
                    }
                    label for="token" { "Admin token" }
                    input #token type="password" name="token" autocomplete="current-password" required autofocus;
                    input type="hidden" name="csrf" value=(csrf);
                    button type="submit" { "Sign in" }
                }
            }
        }
    }
}

/// A page saying what went wrong (the message is escaped like all text).
pub fn message(title: &str, text: &str) -> Markup {
    html! {
        (DOCTYPE)
        html lang="en" {
            head {
                meta charset="utf-8";
                title { (title) }
                link rel="stylesheet" href="/ui/style.css";
            }
            body { main { h1 { (title) } p.notice.error { (text) } p { a href="/ui/results" { "Back to the results" } } } }
        }
    }
}

fn status_badge(status: Option<&str>) -> Markup {
    match status {
        Some("not-satisfied") => html! { span.badge.fail { "fail" } },
        Some("satisfied") => html! { span.badge.pass { "pass" } },
        Some(other) => html! { span.badge { (other) } },
        None => html! { span.badge { "unknown" } },
    }
}

fn or_dash(value: Option<&str>) -> &str {
    value.unwrap_or("—")
}

/// The query string of `filter` (URL-encoded), for links that keep it.
pub fn filter_query(filter: &ResultFilter) -> String {
    serde_urlencoded::to_string(filter).unwrap_or_default()
}

/// The values the results page's select boxes offer.
pub struct Facets<'a> {
    /// Plugins seen in the latest results.
    pub plugins: &'a [String],
    /// Severities seen.
    pub severities: &'a [String],
    /// Runtimes (id, name).
    pub runtimes: &'a [(String, String)],
}

/// The latest result per check per runtime, failing first.
pub fn results(
    filter: &ResultFilter,
    facets: &Facets<'_>,
    rows: &[LatestResult],
    next: Option<&str>,
) -> Markup {
    let selected = |current: &Option<String>, value: &str| current.as_deref() == Some(value);
    let next_link = next.map(|next| {
        let query = filter_query(&ResultFilter {
            after: Some(next.to_string()),
            limit: None,
            ..filter.clone()
        });
        format!("/ui/results?{query}")
    });
    html! {
        h1 { "Latest results" }
        form.filters method="get" action="/ui/results" {
            label { "Status"
                select name="status" {
                    option value="" { "any" }
                    option value="not-satisfied" selected[selected(&filter.status, "not-satisfied")] { "fail" }
                    option value="satisfied" selected[selected(&filter.status, "satisfied")] { "pass" }
                }
            }
            label { "Severity"
                select name="severity" {
                    option value="" { "any" }
                    @for severity in facets.severities {
                        option value=(severity) selected[selected(&filter.severity, severity)] { (severity) }
                    }
                }
            }
            label { "Plugin"
                select name="plugin" {
                    option value="" { "any" }
                    @for plugin in facets.plugins {
                        option value=(plugin) selected[selected(&filter.plugin, plugin)] { (plugin) }
                    }
                }
            }
            label { "Runtime"
                select name="runtime" {
                    option value="" { "any" }
                    @for (id, name) in facets.runtimes {
                        option value=(id) selected[selected(&filter.runtime, id)] { (name) }
                    }
                }
            }
            label { "Reference"
                input type="text" name="reference" placeholder="e.g. CIS 5.2.8" value=[filter.reference.as_deref()];
            }
            button type="submit" { "Filter" }
            a href="/ui/results" { "Clear" }
        }
        @if rows.is_empty() {
            p.notice { "No results match." }
        } @else {
            table #results {
                thead { tr { th { "Status" } th { "Severity" } th { "Runtime" } th { "Plugin" } th { "Check" } th { "Subject" } th { "Title" } th { "Received" } th {} } }
                tbody {
                    @for row in rows {
                        tr {
                            td { (status_badge(row.status.as_deref())) }
                            td { (or_dash(row.severity.as_deref())) }
                            td { (row.runtime_name) }
                            td { (or_dash(row.plugin.as_deref())) }
                            td.mono { (or_dash(row.check.as_deref())) }
                            td { (or_dash(row.subject.as_deref())) }
                            td.title { (or_dash(row.title.as_deref())) }
                            td.muted { (row.received_at) }
                            td { a href={ "/ui/streams/" (row.uuid) } { "history" } }
                        }
                    }
                }
            }
        }
        @if let Some(href) = next_link {
            p.pager { a #next href=(href) { "Next page →" } }
        }
    }
}

/// How each check fares across the fleet.
pub fn summary(checks: &[CheckSummary]) -> Markup {
    html! {
        h1 { "Checks across the fleet" }
        @if checks.is_empty() {
            p.notice { "No results yet." }
        } @else {
            table #summary {
                thead { tr { th { "Plugin" } th { "Check" } th { "Machines failing" } th { "Machines reporting" } th {} } }
                tbody {
                    @for check in checks {
                        @let query = filter_query(&ResultFilter {
                            plugin: check.plugin.clone(),
                            status: Some("not-satisfied".to_string()),
                            ..ResultFilter::default()
                        });
                        tr {
                            td { (or_dash(check.plugin.as_deref())) }
                            td.mono { (or_dash(check.check.as_deref())) }
                            td.num { @if check.failing_runtimes > 0 { span.badge.fail { (check.failing_runtimes) } } @else { "0" } }
                            td.num { (check.runtimes) }
                            td { a href={ "/ui/results?" (query) } { "failing results" } }
                        }
                    }
                }
            }
        }
    }
}

fn evidence_text<'a>(record: &'a StoredEvidence, key: &str) -> Option<&'a str> {
    record.evidence.get(key).and_then(Value::as_str)
}

/// One stream's history, newest first.
pub fn stream(latest: &LatestResult, page: &StreamPage, uuid: &str) -> Markup {
    html! {
        h1 { "History of " span.mono { (or_dash(latest.check.as_deref())) } " on " (latest.runtime_name) }
        p.muted {
            "Plugin " (or_dash(latest.plugin.as_deref()))
            @if let Some(subject) = &latest.subject { ", subject " (subject) }
            ", stream " span.mono { (uuid) }
        }
        table #history {
            thead { tr { th { "Received" } th { "Status" } th { "Title" } th { "Message" } th { "Remediation" } } }
            tbody {
                @for record in &page.evidence {
                    tr {
                        td.muted { (record.received_at) }
                        td { (status_badge(record.status.as_deref())) }
                        td { (or_dash(evidence_text(record, "title"))) }
                        td { (or_dash(evidence_text(record, "description"))) }
                        td { (or_dash(evidence_text(record, "remarks"))) }
                    }
                }
            }
        }
        @if let Some(next) = &page.next {
            @let query = serde_urlencoded::to_string([("before", next)]).unwrap_or_default();
            p.pager { a #older href={ "/ui/streams/" (uuid) "?" (query) } { "Older records →" } }
        }
    }
}

fn plugin_states(heartbeat: Option<&Value>) -> Markup {
    let plugins = heartbeat
        .and_then(|h| h.get("plugins"))
        .and_then(Value::as_object);
    html! {
        @match plugins {
            Some(plugins) if !plugins.is_empty() => {
                ul.plain {
                    @for (name, state) in plugins {
                        li { span.mono { (name) } ": " (state.as_str().unwrap_or("?")) }
                    }
                }
            }
            _ => { span.muted { "—" } }
        }
    }
}

/// The runtimes and the enrollment tokens; `created` is a token just
/// created, shown once.
pub fn fleet(
    runtimes: &[(RuntimeSummary, FleetDetails)],
    tokens: &[EnrollmentTokenSummary],
    csrf: &str,
    created: Option<(&str, &str, &str)>,
) -> Markup {
    html! {
        h1 { "Fleet" }
        @if runtimes.is_empty() {
            p.notice { "No runtime has enrolled yet." }
        } @else {
            table #runtimes {
                thead { tr { th { "Name" } th { "Group" } th { "Last heartbeat" } th { "State" } th { "Plugins" } th { "Certificate expires" } th { "Configuration in force" } } }
                tbody {
                    @for (runtime, details) in runtimes {
                        tr {
                            td { (runtime.name) br; span.mono.muted { (runtime.id) } }
                            td { (runtime.group) }
                            td { (or_dash(runtime.last_heartbeat_at.as_deref())) }
                            td {
                                @if runtime.revoked { span.badge.fail { "revoked" } }
                                @else if runtime.stale { span.badge.stale { "stale" } }
                                @else { span.badge.pass { "fresh" } }
                            }
                            td { (plugin_states(runtime.heartbeat.as_ref())) }
                            td { (or_dash(details.certificate_not_after.as_deref())) }
                            td {
                                @match &details.config {
                                    Some(config) => {
                                        (if config.own { "its own" } else { "its group's" }) ", version " (config.version)
                                        br; span.mono.muted { (config.etag) }
                                    }
                                    None => { span.muted { "none" } }
                                }
                            }
                        }
                    }
                }
            }
        }
        h2 { "Enrollment tokens" }
        @if let Some((token, group, expires)) = created {
            div.notice #new-token {
                p { "New enrollment token for group " strong { (group) } ", single use, valid until " (expires) ". Copy it now: it is not shown again." }
                p.token.mono { (token) }
            }
        }
        form.filters method="post" action="/ui/enrollment-tokens" {
            input type="hidden" name="csrf" value=(csrf);
            label { "Group" input type="text" name="group" value="default" required; }
            label { "Valid for"
                select name="ttl" {
                    option value="1h" { "1 hour" }
                    option value="24h" { "1 day" }
                    option value="7d" { "7 days" }
                }
            }
            button type="submit" { "Create enrollment token" }
        }
        @if tokens.is_empty() {
            p.muted { "No enrollment tokens." }
        } @else {
            table #tokens {
                thead { tr { th { "Token" } th { "Group" } th { "Created" } th { "Expires" } th { "State" } } }
                tbody {
                    @for token in tokens {
                        tr {
                            td.mono { (token.id) "…" }
                            td { (token.group) }
                            td.muted { (token.created_at) }
                            td.muted { (token.expires_at) }
                            td {
                                @if let Some(used) = &token.used_at {
                                    "spent " (used)
                                    @if let Some(by) = &token.used_by { " by " span.mono { (by) } }
                                } @else if token.expired { span.muted { "expired" } }
                                @else { span.badge.pass { "unused" } }
                            }
                        }
                    }
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hostile_text_renders_inert() {
        let row = LatestResult {
            uuid: "00000000-0000-4000-8000-000000000001".to_string(),
            runtime_id: "r".to_string(),
            runtime_name: "<b>host</b>".to_string(),
            plugin: Some("p\"><script>alert(1)</script>".to_string()),
            check: Some("c".to_string()),
            status: Some("not-satisfied".to_string()),
            severity: Some("high".to_string()),
            subject: None,
            title: Some("<script>alert('x')</script>".to_string()),
            received_at: "now".to_string(),
            idempotency_key: "k".to_string(),
        };
        let facets = Facets {
            plugins: &["<img src=x onerror=alert(1)>".to_string()],
            severities: &[],
            runtimes: &[],
        };
        let filter = ResultFilter {
            reference: Some("\"><script>".to_string()),
            ..ResultFilter::default()
        };
        let page = results(&filter, &facets, &[row], Some("a&b")).into_string();
        assert!(!page.contains("<script>"), "{page}");
        assert!(!page.contains("<img"), "{page}");
        assert!(!page.contains("<b>host"), "{page}");
        assert!(
            page.contains("&lt;script&gt;alert('x')&lt;/script&gt;"),
            "{page}"
        );
        assert!(page.contains("after=a%26b"), "{page}");
    }
}
