//! JSON the way the real programs write and read it.
//!
//! - The daemon (rapidjson) answers results pretty-printed with 4 spaces plus a newline and
//!   errors compact, keys in the order written (the captures show both).
//! - The wallet API (nlohmann::json) sorts object keys and pretty-prints with 4 spaces plus a
//!   newline (`j.dump(4) + "\n"`).
//! - Parameters are read like the daemon's `JsonHelper.h`, whose exceptions become HTTP 400
//!   `{"status":"Failed","error":…}` with these exact texts.

use serde::Serialize;
use serde_json::{Map, Value};

/// `value` pretty-printed with a 4-space indent and a trailing newline.
pub(crate) fn pretty(value: &Value) -> Vec<u8> {
    let mut out = Vec::with_capacity(256);
    let formatter = serde_json::ser::PrettyFormatter::with_indent(b"    ");
    let mut serializer = serde_json::Serializer::with_formatter(&mut out, formatter);
    // Serializing a Value into a Vec cannot fail.
    let _ = value.serialize(&mut serializer);
    out.push(b'\n');
    out
}

/// `value` compact, no trailing newline.
pub(crate) fn compact(value: &Value) -> Vec<u8> {
    serde_json::to_vec(value).unwrap_or_default()
}

/// `value` with every object's keys sorted, as nlohmann::json (a `std::map`) stores them.
pub(crate) fn sorted(value: Value) -> Value {
    match value {
        Value::Object(map) => {
            let mut entries: Vec<(String, Value)> = map.into_iter().collect();
            entries.sort_by(|a, b| a.0.cmp(&b.0));
            Value::Object(entries.into_iter().map(|(k, v)| (k, sorted(v))).collect::<Map<String, Value>>())
        }
        Value::Array(items) => Value::Array(items.into_iter().map(sorted).collect()),
        other => other,
    }
}

/// rapidjson's `kTypeNames` for a value.
fn type_name(value: &Value) -> &'static str {
    match value {
        Value::Null => "Null",
        Value::Bool(false) => "False",
        Value::Bool(true) => "True",
        Value::Object(_) => "Object",
        Value::Array(_) => "Array",
        Value::String(_) => "String",
        Value::Number(_) => "Number",
    }
}

fn wrong_type(expected: &str, got: &Value) -> String {
    format!("JSON parameter is wrong type. Expected {expected}, got {}", type_name(got))
}

/// `getJsonValue`: the member `key` of an object.
pub(crate) fn member<'a>(object: &'a Value, key: &str) -> Result<&'a Value, String> {
    object.get(key).ok_or_else(|| format!("Missing JSON parameter: '{key}'"))
}

/// `getUint64FromJSON`.
pub(crate) fn get_u64(object: &Value, key: &str) -> Result<u64, String> {
    let value = member(object, key)?;
    value.as_u64().ok_or_else(|| wrong_type("uint64_t", value))
}

/// `getStringFromJSON`.
pub(crate) fn get_str<'a>(object: &'a Value, key: &str) -> Result<&'a str, String> {
    let value = member(object, key)?;
    value.as_str().ok_or_else(|| wrong_type("String", value))
}

/// `getStringFromJSONString`: an array element that must be a string.
pub(crate) fn as_str(value: &Value) -> Result<&str, String> {
    value.as_str().ok_or_else(|| wrong_type("String", value))
}

/// `getObjectFromJSON`.
pub(crate) fn get_object<'a>(object: &'a Value, key: &str) -> Result<&'a Value, String> {
    let value = member(object, key)?;
    if value.is_object() {
        Ok(value)
    } else {
        Err(wrong_type("Object", value))
    }
}

/// `getArrayFromJSON`.
pub(crate) fn get_array<'a>(object: &'a Value, key: &str) -> Result<&'a Vec<Value>, String> {
    let value = member(object, key)?;
    value.as_array().ok_or_else(|| wrong_type("Array", value))
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn formats_like_the_captures() {
        let v = json!({"height": 1, "upgrade_heights": [250, 500000], "empty": []});
        assert_eq!(
            String::from_utf8(pretty(&v)).unwrap(),
            "{\n    \"height\": 1,\n    \"upgrade_heights\": [\n        250,\n        500000\n    ],\n    \"empty\": []\n}\n"
        );
        let e = json!({"jsonrpc": "2.0", "error": {"message": "Block not accepted", "code": -7}});
        assert_eq!(compact(&e), br#"{"jsonrpc":"2.0","error":{"message":"Block not accepted","code":-7}}"#);
        let w = sorted(json!({"unlocked": 2, "locked": 1, "x": [{"b": 1, "a": 2}]}));
        assert_eq!(w.to_string(), r#"{"locked":1,"unlocked":2,"x":[{"a":2,"b":1}]}"#);
    }

    #[test]
    fn parameter_errors_read_like_rapidjson() {
        let p = json!({"reserve_size": -1, "a": [1], "s": "x", "o": {}});
        assert_eq!(get_u64(&p, "missing").unwrap_err(), "Missing JSON parameter: 'missing'");
        assert_eq!(
            get_u64(&p, "reserve_size").unwrap_err(),
            "JSON parameter is wrong type. Expected uint64_t, got Number"
        );
        assert_eq!(get_array(&p, "o").unwrap_err(), "JSON parameter is wrong type. Expected Array, got Object");
        assert_eq!(get_object(&p, "a").unwrap_err(), "JSON parameter is wrong type. Expected Object, got Array");
        assert_eq!(get_str(&p, "s").unwrap(), "x");
        assert_eq!(as_str(&json!(true)).unwrap_err(), "JSON parameter is wrong type. Expected String, got True");
    }
}
