//! Typed access to the plugin's configuration.
//!
//! Values are set by the operator; the host has already checked them against
//! the options the plugin announced. These getters turn a missing key into
//! `None` (or the default) and a value of the wrong kind into a
//! [`ConfigError`] that names the key, which converts into
//! [`crate::RunError::InvalidConfig`] with `?`.

use crate::imports::config;

pub use config::Value;

/// A configuration value of the wrong kind.
#[derive(Debug, Clone, PartialEq)]
pub struct ConfigError {
    /// The configuration key.
    pub key: String,
    /// What was expected, e.g. `an integer`.
    pub expected: &'static str,
}

impl std::fmt::Display for ConfigError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "configuration key `{}` must be {}",
            self.key, self.expected
        )
    }
}

impl std::error::Error for ConfigError {}

/// The raw value of `key`, if set.
pub fn get(key: &str) -> Option<Value> {
    config::get(key)
}

/// Every key the operator set, sorted.
pub fn keys() -> Vec<String> {
    config::keys()
}

fn typed<T>(
    key: &str,
    expected: &'static str,
    pick: impl FnOnce(Value) -> Option<T>,
) -> Result<Option<T>, ConfigError> {
    match config::get(key) {
        None => Ok(None),
        Some(v) => pick(v).map(Some).ok_or_else(|| ConfigError {
            key: key.to_string(),
            expected,
        }),
    }
}

/// A text value.
pub fn string(key: &str) -> Result<Option<String>, ConfigError> {
    typed(key, "a string", |v| match v {
        Value::Text(s) => Some(s),
        _ => None,
    })
}

/// An integer value.
pub fn integer(key: &str) -> Result<Option<i64>, ConfigError> {
    typed(key, "an integer", |v| match v {
        Value::Integer(i) => Some(i),
        _ => None,
    })
}

/// A number (an integer is accepted).
pub fn float(key: &str) -> Result<Option<f64>, ConfigError> {
    typed(key, "a number", |v| match v {
        Value::Float(f) => Some(f),
        Value::Integer(i) => Some(i as f64),
        _ => None,
    })
}

/// A boolean value.
pub fn boolean(key: &str) -> Result<Option<bool>, ConfigError> {
    typed(key, "a boolean", |v| match v {
        Value::Boolean(b) => Some(b),
        _ => None,
    })
}

/// A list of strings.
pub fn string_list(key: &str) -> Result<Option<Vec<String>>, ConfigError> {
    typed(key, "a list of strings", |v| match v {
        Value::TextList(l) => Some(l),
        _ => None,
    })
}

/// A text value, or `default` when unset.
pub fn string_or(key: &str, default: &str) -> Result<String, ConfigError> {
    Ok(string(key)?.unwrap_or_else(|| default.to_string()))
}

/// An integer value, or `default` when unset.
pub fn integer_or(key: &str, default: i64) -> Result<i64, ConfigError> {
    Ok(integer(key)?.unwrap_or(default))
}

/// A boolean value, or `default` when unset.
pub fn boolean_or(key: &str, default: bool) -> Result<bool, ConfigError> {
    Ok(boolean(key)?.unwrap_or(default))
}

/// A list of strings, or an empty list when unset.
pub fn string_list_or_empty(key: &str) -> Result<Vec<String>, ConfigError> {
    Ok(string_list(key)?.unwrap_or_default())
}

// Conversions into a configuration value, so that tests (see
// `testing::MockHost::config`) can write `("max_auth_tries", 3)`.

macro_rules! integer_values {
    ($($t:ty),*) => {$(
        impl From<$t> for Value {
            fn from(v: $t) -> Self {
                Value::Integer(i64::from(v))
            }
        }
    )*};
}
integer_values!(i8, i16, i32, i64, u8, u16, u32);

impl From<f64> for Value {
    fn from(v: f64) -> Self {
        Value::Float(v)
    }
}

impl From<f32> for Value {
    fn from(v: f32) -> Self {
        Value::Float(f64::from(v))
    }
}

impl From<bool> for Value {
    fn from(v: bool) -> Self {
        Value::Boolean(v)
    }
}

impl From<&str> for Value {
    fn from(v: &str) -> Self {
        Value::Text(v.to_string())
    }
}

impl From<String> for Value {
    fn from(v: String) -> Self {
        Value::Text(v)
    }
}

impl From<Vec<String>> for Value {
    fn from(v: Vec<String>) -> Self {
        Value::TextList(v)
    }
}

impl From<&[&str]> for Value {
    fn from(v: &[&str]) -> Self {
        Value::TextList(v.iter().map(|s| s.to_string()).collect())
    }
}

impl<const N: usize> From<[&str; N]> for Value {
    fn from(v: [&str; N]) -> Self {
        Value::TextList(v.iter().map(|s| s.to_string()).collect())
    }
}

impl From<Vec<&str>> for Value {
    fn from(v: Vec<&str>) -> Self {
        Value::TextList(v.into_iter().map(str::to_string).collect())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn values_convert_from_rust_types() {
        assert!(matches!(Value::from(3), Value::Integer(3)));
        assert!(matches!(Value::from(7u32), Value::Integer(7)));
        assert!(matches!(Value::from(0.5), Value::Float(f) if f == 0.5));
        assert!(matches!(Value::from(true), Value::Boolean(true)));
        assert!(matches!(Value::from("x"), Value::Text(s) if s == "x"));
        assert!(matches!(Value::from(["a", "b"]), Value::TextList(l) if l == ["a", "b"]));
        assert!(matches!(Value::from(vec!["c"]), Value::TextList(l) if l == ["c"]));
    }
}
