//! Property tests of the runtime's parsers of untrusted input: the agent
//! configuration (TOML), the control plane's configuration documents
//! (JSON), the state files and the outbox's batch files. Bounded on stable;
//! the same entry functions are the fuzz targets in `fuzz/runtime/`
//! (cargo-fuzz on nightly).

#![allow(clippy::unwrap_used, clippy::expect_used)] // tests fail loudly by design

#[allow(dead_code)]
#[path = "hostile/entries.rs"]
mod entries;

use proptest::prelude::*;

/// JSON values built from the schema's own keys, so that generated
/// documents reach past the first level.
fn document() -> impl Strategy<Value = serde_json::Value> {
    let key = prop::sample::select(vec![
        "runtime",
        "plugin",
        "policy",
        "name",
        "path",
        "version",
        "source",
        "url",
        "github",
        "grants",
        "read",
        "commands",
        "env",
        "host_facts",
        "limits",
        "memory_mib",
        "timeout",
        "schedule",
        "every",
        "cron",
        "config",
        "enabled",
        "trusted_keys",
        "state_dir",
        "assessment_root",
        "max_concurrent_jobs",
        "outbox_max_mib",
        "remote_path_plugins",
        "x",
    ]);
    let leaf = prop_oneof![
        Just(serde_json::Value::Null),
        any::<bool>().prop_map(serde_json::Value::from),
        any::<i64>().prop_map(serde_json::Value::from),
        any::<f64>().prop_map(serde_json::Value::from),
        "[ -~]{0,12}".prop_map(serde_json::Value::from),
        prop::sample::select(vec![
            "/etc",
            "/",
            "..",
            "/bin/sh",
            "1.0.0",
            "1s",
            "http://x",
            "https://y",
            "a"
        ])
        .prop_map(serde_json::Value::from),
    ];
    leaf.prop_recursive(4, 64, 6, move |inner| {
        prop_oneof![
            prop::collection::vec(inner.clone(), 0..4).prop_map(serde_json::Value::from),
            prop::collection::btree_map(key.clone(), inner, 0..5).prop_map(|m| {
                serde_json::Value::Object(m.into_iter().map(|(k, v)| (k.to_string(), v)).collect())
            }),
        ]
    })
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(1000))]

    #[test]
    fn arbitrary_text_never_panics_the_configuration_parser(text in "(?s).{0,300}") {
        entries::agent_config(text.as_bytes());
    }

    #[test]
    fn arbitrary_documents_never_panic_the_remote_configuration(doc in document()) {
        entries::remote_config_value(&doc, &entries::local_config());
    }

    #[test]
    fn edited_valid_files_never_panic_the_parser(at in 0usize..500, cut in 0usize..20, insert in "(?s).{0,20}") {
        // A valid file; scripts/fuzz.sh seeds the fuzz target with it too.
        let valid = include_str!("hostile/seeds/agent.toml");
        let mut text: Vec<char> = valid.chars().collect();
        let at = at.min(text.len());
        let end = (at + cut).min(text.len());
        text.splice(at..end, insert.chars());
        let text: String = text.into_iter().collect();
        entries::agent_config(text.as_bytes());
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(300))]

    #[test]
    fn arbitrary_state_files_never_panic_the_runtime(bytes in prop::collection::vec(any::<u8>(), 0..400)) {
        entries::state_files(&bytes);
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(200))]

    #[test]
    fn arbitrary_bytes_in_a_batch_file_are_set_aside_never_a_crash(bytes in prop::collection::vec(any::<u8>(), 0..512)) {
        entries::outbox_batch(&bytes);
    }
}
