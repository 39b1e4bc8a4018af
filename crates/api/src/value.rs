//! Reading JSON objects: small helpers every layer uses the same way.

use serde_json::Value;

/// The strings of a JSON array (other elements skipped); empty when the
/// value is absent or not an array.
pub fn strings(v: Option<&Value>) -> Vec<String> {
    v.and_then(Value::as_array)
        .map(|a| {
            a.iter()
                .filter_map(Value::as_str)
                .map(str::to_string)
                .collect()
        })
        .unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn strings_of_an_array() {
        assert_eq!(strings(Some(&json!(["a", 1, "b"]))), vec!["a", "b"]);
        assert!(strings(Some(&json!("a"))).is_empty());
        assert!(strings(None).is_empty());
    }
}
