//! The versioned JSON envelope shared by every `--json` output (docs/snapbackctl.md).
//!
//! Every document is an object whose first key is `"schema": "snapbackctl/1"`. Within
//! version 1, keys are only ever added; a removed or re-typed key makes it `snapbackctl/2`.

use serde_json::{Map, Value};

/// The schema identifier printed in every JSON document.
pub const SCHEMA: &str = "snapbackctl/1";

/// Wraps `fields` (a JSON object) as `{"schema": SCHEMA, ...fields}`.
pub fn document(fields: Value) -> Value {
    let mut out = Map::new();
    out.insert("schema".to_owned(), Value::String(SCHEMA.to_owned()));
    if let Value::Object(map) = fields {
        out.extend(map);
    }
    Value::Object(out)
}

/// The document as one line of compact JSON (`watch` prints one per event).
pub fn line(fields: Value) -> String {
    document(fields).to_string()
}

/// The document pretty-printed (the read commands).
pub fn pretty(fields: Value) -> String {
    // Serializing a `Value` cannot fail; fall back to compact output all the same.
    let doc = document(fields);
    serde_json::to_string_pretty(&doc).unwrap_or_else(|_| doc.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn schema_comes_first() {
        let s = line(json!({"a": 1}));
        assert_eq!(s, r#"{"schema":"snapbackctl/1","a":1}"#);
    }
}
