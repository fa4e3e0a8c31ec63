//! Conversions between JSON values (parameters, context, results) and Rhai values.
//!
//! Hand-written rather than through serde because this is on every run's path and must never
//! fail on a value a script can build: function pointers, timestamps and other exotic values
//! become their text, non-finite floats become null.

use rhai::{Array, Dynamic, ImmutableString, Map};
use serde_json::Value;

/// How deeply nested a script's result may be; deeper values would risk the native stack.
pub(crate) const MAX_RESULT_DEPTH: usize = 128;

pub(crate) fn to_dynamic(value: &Value) -> Dynamic {
    match value {
        Value::Null => Dynamic::UNIT,
        Value::Bool(b) => Dynamic::from_bool(*b),
        Value::Number(n) => match n.as_i64() {
            Some(i) => Dynamic::from_int(i),
            None => Dynamic::from_float(n.as_f64().unwrap_or(f64::NAN)),
        },
        Value::String(s) => Dynamic::from(ImmutableString::from(s.as_str())),
        Value::Array(items) => Dynamic::from_array(items.iter().map(to_dynamic).collect()),
        Value::Object(map) => Dynamic::from_map(object_to_map(map)),
    }
}

pub(crate) fn object_to_map(map: &serde_json::Map<String, Value>) -> Map {
    map.iter()
        .map(|(k, v)| (k.as_str().into(), to_dynamic(v)))
        .collect()
}

pub(crate) fn to_json(value: &Dynamic) -> Result<Value, String> {
    to_json_at(value, 0)
}

fn to_json_at(value: &Dynamic, depth: usize) -> Result<Value, String> {
    if depth > MAX_RESULT_DEPTH {
        return Err(format!(
            "the value is nested more than {MAX_RESULT_DEPTH} levels deep"
        ));
    }
    if value.is_shared() {
        return to_json_at(&value.flatten_clone(), depth);
    }
    if value.is_unit() {
        return Ok(Value::Null);
    }
    if let Ok(b) = value.as_bool() {
        return Ok(Value::Bool(b));
    }
    if let Ok(i) = value.as_int() {
        return Ok(Value::from(i));
    }
    if let Ok(f) = value.as_float() {
        return Ok(serde_json::Number::from_f64(f).map_or(Value::Null, Value::Number));
    }
    if let Ok(c) = value.as_char() {
        return Ok(Value::String(c.to_string()));
    }
    if let Ok(s) = value.as_immutable_string_ref() {
        return Ok(Value::String(s.to_string()));
    }
    if let Ok(items) = value.as_array_ref() {
        return array_to_json(&items, depth);
    }
    if let Ok(map) = value.as_map_ref() {
        let mut object = serde_json::Map::with_capacity(map.len());
        for (key, item) in map.iter() {
            object.insert(key.to_string(), to_json_at(item, depth + 1)?);
        }
        return Ok(Value::Object(object));
    }
    if let Ok(blob) = value.as_blob_ref() {
        return Ok(Value::Array(blob.iter().map(|b| Value::from(*b)).collect()));
    }
    Ok(Value::String(value.to_string()))
}

fn array_to_json(items: &Array, depth: usize) -> Result<Value, String> {
    items
        .iter()
        .map(|item| to_json_at(item, depth + 1))
        .collect::<Result<Vec<_>, _>>()
        .map(Value::Array)
}

/// A value as a message: strings as they are, anything else as JSON text.
pub(crate) fn to_message(value: &Dynamic) -> String {
    if let Ok(s) = value.as_immutable_string_ref() {
        return s.to_string();
    }
    to_json(value).map_or_else(|_| value.to_string(), |v| v.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn round_trip() {
        let value = json!({"a": [1, 2.5, "x", true, null], "b": {"c": {}}});
        assert_eq!(to_json(&to_dynamic(&value)), Ok(value));
    }

    #[test]
    fn exotic_values_become_text_or_null() {
        assert_eq!(to_json(&Dynamic::from_float(f64::NAN)), Ok(Value::Null));
        assert_eq!(to_json(&Dynamic::from_char('z')), Ok(json!("z")));
        assert_eq!(to_json(&Dynamic::from_blob(vec![1, 2])), Ok(json!([1, 2])));
    }

    #[test]
    fn deep_values_are_refused() {
        let mut value = Dynamic::UNIT;
        for _ in 0..(MAX_RESULT_DEPTH + 2) {
            value = Dynamic::from_array(vec![value]);
        }
        assert!(to_json(&value).is_err_and(|e| e.contains("nested")));
    }
}
