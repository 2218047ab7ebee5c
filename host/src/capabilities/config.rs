//! `assessment:plugin/config`: the operator's configuration values for this
//! plugin, already checked against the keys the plugin announced.

use std::collections::BTreeMap;

use crate::agent_config::ConfigValue;
use crate::bindings::latest::assessment::plugin::config::{self, Value};
use crate::bindings::latest::assessment::plugin::types::{ConfigOption, ValueKind};

use super::PluginState;

/// The configuration values of one plugin.
#[derive(Debug, Clone, Default)]
pub struct ConfigCtx {
    values: BTreeMap<String, ConfigValue>,
}

impl ConfigCtx {
    /// Values as configured.
    pub fn new(values: BTreeMap<String, ConfigValue>) -> Self {
        ConfigCtx { values }
    }

    /// Check the values against the options the plugin announced: an
    /// unknown key or a value of another kind is an error naming the key,
    /// the plugin and what it accepts.
    pub fn validate(&self, plugin: &str, options: &[ConfigOption]) -> Result<(), String> {
        for (key, value) in &self.values {
            let Some(option) = options.iter().find(|o| &o.name == key) else {
                let known: Vec<&str> = options.iter().map(|o| o.name.as_str()).collect();
                return Err(format!(
                    "plugin `{plugin}` has no configuration key `{key}`; remove it from the plugin's `config` (accepted keys: {})",
                    if known.is_empty() {
                        "none".to_string()
                    } else {
                        known.join(", ")
                    }
                ));
            };
            let fits = matches!(
                (option.kind, value),
                (ValueKind::Text, ConfigValue::Text(_))
                    | (ValueKind::Integer, ConfigValue::Integer(_))
                    | (
                        ValueKind::Float,
                        ConfigValue::Float(_) | ConfigValue::Integer(_)
                    )
                    | (ValueKind::Boolean, ConfigValue::Boolean(_))
                    | (ValueKind::TextList, ConfigValue::TextList(_))
            );
            if !fits {
                return Err(format!(
                    "plugin `{plugin}` configuration key `{key}` must be {} ({})",
                    kind_name(option.kind),
                    option.description
                ));
            }
        }
        Ok(())
    }
}

fn kind_name(kind: ValueKind) -> &'static str {
    match kind {
        ValueKind::Text => "a string",
        ValueKind::Integer => "an integer",
        ValueKind::Float => "a number",
        ValueKind::Boolean => "a boolean",
        ValueKind::TextList => "a list of strings",
    }
}

fn to_wit(value: &ConfigValue) -> Value {
    match value {
        ConfigValue::Text(s) => Value::Text(s.clone()),
        ConfigValue::Integer(i) => Value::Integer(*i),
        ConfigValue::Float(f) => Value::Float(*f),
        ConfigValue::Boolean(b) => Value::Boolean(*b),
        ConfigValue::TextList(l) => Value::TextList(l.clone()),
    }
}

impl config::Host for PluginState {
    async fn get(&mut self, key: String) -> wasmtime::Result<Option<Value>> {
        Ok(self.config.values.get(&key).map(to_wit))
    }

    async fn keys(&mut self) -> wasmtime::Result<Vec<String>> {
        Ok(self.config.values.keys().cloned().collect())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn option(name: &str, kind: ValueKind) -> ConfigOption {
        ConfigOption {
            name: name.to_string(),
            kind,
            description: format!("the {name}"),
        }
    }

    fn ctx(values: &[(&str, ConfigValue)]) -> ConfigCtx {
        ConfigCtx::new(
            values
                .iter()
                .map(|(k, v)| (k.to_string(), v.clone()))
                .collect(),
        )
    }

    #[test]
    fn unknown_keys_and_wrong_kinds_are_refused() {
        let options = [
            option("tries", ValueKind::Integer),
            option("ratio", ValueKind::Float),
        ];
        assert!(
            ctx(&[
                ("tries", ConfigValue::Integer(3)),
                ("ratio", ConfigValue::Integer(1))
            ])
            .validate("p", &options)
            .is_ok()
        );
        let e = ctx(&[("trys", ConfigValue::Integer(3))])
            .validate("p", &options)
            .unwrap_err();
        assert!(
            e.contains("no configuration key `trys`") && e.contains("tries, ratio"),
            "{e}"
        );
        let e = ctx(&[("tries", ConfigValue::Text("3".into()))])
            .validate("p", &options)
            .unwrap_err();
        assert!(e.contains("`tries` must be an integer"), "{e}");
    }

    #[tokio::test]
    async fn the_plugin_sees_its_values() {
        use config::Host;
        let c = ctx(&[
            ("b", ConfigValue::Boolean(true)),
            ("a", ConfigValue::TextList(vec!["x".into()])),
        ]);
        let mut state = super::super::tests_support::state_with_config(c);
        assert_eq!(state.keys().await.unwrap(), vec!["a", "b"]);
        assert!(matches!(
            state.get("b".into()).await.unwrap(),
            Some(Value::Boolean(true))
        ));
        assert!(state.get("c".into()).await.unwrap().is_none());
    }
}
