//! Canonical JSON for configuration documents and their strong ETags.
//!
//! The canonical form is compact JSON with every object's keys sorted, so the
//! same document always has the same bytes and ETag whatever key order the
//! administrator sent (and whichever `serde_json` features are enabled).

use serde_json::{Map, Value};
use sha2::{Digest, Sha256};

/// `value` with every object's keys in sorted order.
pub fn canonicalize(value: &Value) -> Value {
    match value {
        Value::Object(map) => {
            let mut entries: Vec<(&String, &Value)> = map.iter().collect();
            entries.sort_by(|a, b| a.0.cmp(b.0));
            let mut sorted = Map::new();
            for (key, value) in entries {
                sorted.insert(key.clone(), canonicalize(value));
            }
            Value::Object(sorted)
        }
        Value::Array(items) => Value::Array(items.iter().map(canonicalize).collect()),
        other => other.clone(),
    }
}

/// The canonical bytes of `value`.
pub fn canonical_bytes(value: &Value) -> Result<Vec<u8>, serde_json::Error> {
    serde_json::to_vec(&canonicalize(value))
}

/// The quoted strong ETag of canonical document bytes: `"<sha256 hex>"`.
pub fn strong_etag(canonical: &[u8]) -> String {
    format!("\"{}\"", hex::encode(Sha256::digest(canonical)))
}

/// Whether an `If-None-Match` header value matches `etag` (weak comparison,
/// as RFC 9110 prescribes for `If-None-Match`; `*` matches any).
pub fn if_none_match_matches(header: &str, etag: &str) -> bool {
    let strip_weak = |tag: &str| tag.strip_prefix("W/").unwrap_or(tag).to_string();
    let current = strip_weak(etag);
    header
        .split(',')
        .map(str::trim)
        .any(|candidate| candidate == "*" || strip_weak(candidate) == current)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn key_order_does_not_change_the_bytes() {
        let a: Value =
            serde_json::from_str(r#"{"b":1,"a":{"y":[{"d":1,"c":2}],"x":null}}"#).unwrap();
        let b: Value =
            serde_json::from_str(r#"{"a":{"x":null,"y":[{"c":2,"d":1}]},"b":1}"#).unwrap();
        assert_eq!(canonical_bytes(&a).unwrap(), canonical_bytes(&b).unwrap());
        assert_eq!(
            String::from_utf8(canonical_bytes(&a).unwrap()).unwrap(),
            r#"{"a":{"x":null,"y":[{"c":2,"d":1}]},"b":1}"#
        );
    }

    #[test]
    fn etag_is_quoted_sha256() {
        let bytes = canonical_bytes(&json!({})).unwrap();
        assert_eq!(
            strong_etag(&bytes),
            "\"44136fa355b3678a1146ad16f7e8649e94fb4fc21fe77e8310c060f61caaff8a\""
        );
    }

    #[test]
    fn if_none_match_lists_weak_and_star() {
        let etag = "\"abc\"";
        assert!(if_none_match_matches("\"abc\"", etag));
        assert!(if_none_match_matches("\"x\", W/\"abc\"", etag));
        assert!(if_none_match_matches("*", etag));
        assert!(!if_none_match_matches("\"abd\"", etag));
        assert!(!if_none_match_matches("abc", etag));
    }
}
