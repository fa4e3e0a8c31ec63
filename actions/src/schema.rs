//! The JSON Schema (draft 4) subset st2 packs use for parameters and config settings: nested
//! `type: object` with `properties`, `required` and `additionalProperties`, `type: array` with
//! `items`, and `enum`, `minimum`, `maximum`, `exclusiveMinimum`, `exclusiveMaximum`,
//! `minLength`, `maxLength`, `minItems`, `maxItems`, `uniqueItems`, `oneOf`, `anyOf`, `allOf`,
//! `not`. st2 validates with jsonschema draft 4; this checks values the same way, without
//! casting (casting is for a parameter's own value, in `params`).
//!
//! Choices, so an operator knows what to expect:
//! - inside `properties`, a property's `required: true` (st2's and draft 3's spelling) and an
//!   object's `required: [names]` (draft 4's) both make the property required;
//! - `default`, `description`, `title`, `format`, `secret`, `position`, `immutable` are read
//!   and not enforced (as jsonschema does not enforce them); `pattern` and `patternProperties`
//!   are accepted and not enforced (this crate has no regular-expression engine).
//!
//! This file never reads files and never shows a value longer than a short excerpt.

use serde_json::{Map, Value};

use crate::meta::ParamType;

/// Problems in a schema's own shape (an unknown type name, `properties` that is not a mapping),
/// each prefixed with the path to the keyword.
pub fn check_schema(schema: &Value, path: &str, problems: &mut Vec<String>) {
    let Value::Object(map) = schema else {
        problems.push(format!(
            "{path}: a schema must be a mapping, not {}",
            ParamType::of(schema)
        ));
        return;
    };
    if let Some(ty) = map.get("type") {
        for name in type_names(ty) {
            if let Err(message) = name.parse::<ParamType>() {
                problems.push(format!("{path}: {message}"));
            }
        }
        if !matches!(ty, Value::String(_) | Value::Array(_)) {
            problems.push(format!("{path}: 'type' must be a name or a list of names"));
        }
    }
    if let Some(props) = map.get("properties") {
        match props {
            Value::Object(props) => {
                for (name, sub) in props {
                    check_schema(sub, &format!("{path}.{name}"), problems);
                }
            }
            _ => problems.push(format!("{path}: 'properties' must be a mapping")),
        }
    }
    match map.get("items") {
        None => {}
        Some(Value::Array(list)) => {
            for (i, sub) in list.iter().enumerate() {
                check_schema(sub, &format!("{path}[{i}]"), problems);
            }
        }
        Some(sub) => check_schema(sub, &format!("{path}[]"), problems),
    }
    if let Some(extra @ Value::Object(_)) = map.get("additionalProperties") {
        check_schema(extra, &format!("{path}.*"), problems);
    }
    for key in ["oneOf", "anyOf", "allOf"] {
        match map.get(key) {
            None => {}
            Some(Value::Array(list)) => {
                for (i, sub) in list.iter().enumerate() {
                    check_schema(sub, &format!("{path}.{key}[{i}]"), problems);
                }
            }
            Some(_) => problems.push(format!("{path}: '{key}' must be a list of schemas")),
        }
    }
    if let Some(Value::Array(required)) = map.get("required") {
        if required.iter().any(|r| !r.is_string()) {
            problems.push(format!("{path}: 'required' must list property names"));
        }
    }
}

/// Checks `value` against `schema`, pushing one message per violation, each naming the path
/// (`path` is where `value` sits, e.g. the parameter's name).
pub fn validate(schema: &Value, value: &Value, path: &str, problems: &mut Vec<String>) {
    let Value::Object(schema) = schema else {
        return;
    };
    if let Some(ty) = schema.get("type") {
        let names = type_names(ty);
        if !names.is_empty() && !names.iter().any(|name| type_admits(name, value)) {
            problems.push(format!(
                "{path}: expected {}, got {} {}",
                names.join(" or "),
                ParamType::of(value),
                short(value)
            ));
            return;
        }
    }
    if let Some(Value::Array(allowed)) = schema.get("enum") {
        if !allowed.iter().any(|a| same(a, value)) {
            problems.push(format!(
                "{path}: {} is not one of the allowed values {}",
                short(value),
                Value::Array(allowed.clone())
            ));
        }
    }
    match value {
        Value::Number(n) => check_number(schema, n.as_f64().unwrap_or(0.0), path, problems),
        Value::String(s) => {
            let length = s.chars().count() as u64;
            if let Some(min) = schema.get("minLength").and_then(Value::as_u64) {
                if length < min {
                    problems.push(format!(
                        "{path}: {} is shorter than {min} characters",
                        short(value)
                    ));
                }
            }
            if let Some(max) = schema.get("maxLength").and_then(Value::as_u64) {
                if length > max {
                    problems.push(format!(
                        "{path}: {} is longer than {max} characters",
                        short(value)
                    ));
                }
            }
        }
        Value::Array(items) => check_array(schema, items, path, problems),
        Value::Object(map) => check_object(schema, map, path, problems),
        Value::Bool(_) | Value::Null => {}
    }
    check_combinators(schema, value, path, problems);
}

fn check_number(schema: &Map<String, Value>, n: f64, path: &str, problems: &mut Vec<String>) {
    let exclusive = |key: &str| schema.get(key).and_then(Value::as_bool).unwrap_or(false);
    if let Some(min) = schema.get("minimum").and_then(Value::as_f64) {
        if n < min || (exclusive("exclusiveMinimum") && n == min) {
            problems.push(format!("{path}: {n} is less than the minimum {min}"));
        }
    }
    if let Some(max) = schema.get("maximum").and_then(Value::as_f64) {
        if n > max || (exclusive("exclusiveMaximum") && n == max) {
            problems.push(format!("{path}: {n} is greater than the maximum {max}"));
        }
    }
}

fn check_array(schema: &Map<String, Value>, items: &[Value], path: &str, out: &mut Vec<String>) {
    let count = items.len() as u64;
    if let Some(min) = schema.get("minItems").and_then(Value::as_u64) {
        if count < min {
            out.push(format!("{path}: has {count} items, fewer than {min}"));
        }
    }
    if let Some(max) = schema.get("maxItems").and_then(Value::as_u64) {
        if count > max {
            out.push(format!("{path}: has {count} items, more than {max}"));
        }
    }
    if schema.get("uniqueItems").and_then(Value::as_bool) == Some(true) {
        for (i, item) in items.iter().enumerate() {
            if items[..i].iter().any(|earlier| same(earlier, item)) {
                out.push(format!("{path}[{i}]: {} is repeated", short(item)));
            }
        }
    }
    match schema.get("items") {
        Some(Value::Array(positional)) => {
            for (i, (sub, item)) in positional.iter().zip(items).enumerate() {
                validate(sub, item, &format!("{path}[{i}]"), out);
            }
        }
        Some(sub) => {
            for (i, item) in items.iter().enumerate() {
                validate(sub, item, &format!("{path}[{i}]"), out);
            }
        }
        None => {}
    }
}

fn check_object(
    schema: &Map<String, Value>,
    map: &Map<String, Value>,
    path: &str,
    out: &mut Vec<String>,
) {
    let empty = Map::new();
    let props = match schema.get("properties") {
        Some(Value::Object(p)) => p,
        _ => &empty,
    };
    let mut required: Vec<&str> = match schema.get("required") {
        Some(Value::Array(names)) => names.iter().filter_map(Value::as_str).collect(),
        _ => Vec::new(),
    };
    for (name, sub) in props {
        if sub.get("required").and_then(Value::as_bool) == Some(true) {
            required.push(name);
        }
    }
    for name in required {
        if !map.contains_key(name) {
            out.push(format!("{path}.{name}: is required"));
        }
    }
    for (name, item) in map {
        let at = format!("{path}.{name}");
        match (props.get(name), schema.get("additionalProperties")) {
            (Some(sub), _) => validate(sub, item, &at, out),
            (None, Some(Value::Bool(false))) => {
                let known: Vec<&str> = props.keys().map(String::as_str).collect();
                out.push(format!(
                    "{at}: is not allowed (allowed: {})",
                    if known.is_empty() {
                        "none".to_string()
                    } else {
                        known.join(", ")
                    }
                ));
            }
            (None, Some(extra @ Value::Object(_))) => validate(extra, item, &at, out),
            (None, _) => {}
        }
    }
}

fn check_combinators(
    schema: &Map<String, Value>,
    value: &Value,
    path: &str,
    out: &mut Vec<String>,
) {
    let passes = |sub: &Value| {
        let mut found = Vec::new();
        validate(sub, value, path, &mut found);
        found.is_empty()
    };
    if let Some(Value::Array(all)) = schema.get("allOf") {
        for sub in all {
            validate(sub, value, path, out);
        }
    }
    if let Some(Value::Array(any)) = schema.get("anyOf") {
        if !any.iter().any(passes) {
            out.push(format!(
                "{path}: {} fits none of the schemas of anyOf",
                short(value)
            ));
        }
    }
    if let Some(Value::Array(one)) = schema.get("oneOf") {
        let fitting = one.iter().filter(|sub| passes(sub)).count();
        if fitting != 1 {
            out.push(format!(
                "{path}: {} fits {fitting} of the schemas of oneOf, not exactly one",
                short(value)
            ));
        }
    }
    if let Some(not) = schema.get("not") {
        if passes(not) {
            out.push(format!("{path}: {} fits the schema of 'not'", short(value)));
        }
    }
}

fn type_names(ty: &Value) -> Vec<&str> {
    match ty {
        Value::String(s) => vec![s.as_str()],
        Value::Array(list) => list.iter().filter_map(Value::as_str).collect(),
        _ => Vec::new(),
    }
}

/// draft 4's type test: an integer is a number; `1.0` is not an integer (as Python's
/// jsonschema under st2 decides).
fn type_admits(name: &str, value: &Value) -> bool {
    match name.parse::<ParamType>() {
        Ok(ty) => ty.admits(value),
        // An unknown name is reported by `check_schema`; it does not refuse values too.
        Err(_) => true,
    }
}

/// Numbers compare by value (`1` is `1.0`), as in Python.
fn same(a: &Value, b: &Value) -> bool {
    match (a, b) {
        (Value::Number(x), Value::Number(y)) => x.as_f64() == y.as_f64(),
        (Value::Array(x), Value::Array(y)) => {
            x.len() == y.len() && x.iter().zip(y).all(|(a, b)| same(a, b))
        }
        (Value::Object(x), Value::Object(y)) => {
            x.len() == y.len() && x.iter().all(|(k, a)| y.get(k).is_some_and(|b| same(a, b)))
        }
        _ => a == b,
    }
}

fn short(value: &Value) -> String {
    const MAX: usize = 60;
    let text = value.to_string();
    if text.chars().count() <= MAX {
        text
    } else {
        format!("{}...", text.chars().take(MAX).collect::<String>())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn problems(schema: Value, value: Value) -> Vec<String> {
        let mut out = Vec::new();
        validate(&schema, &value, "p", &mut out);
        out
    }

    #[test]
    fn nested_objects_and_arrays_are_checked_with_paths() {
        let schema = json!({
            "type": "array",
            "items": {
                "type": "object",
                "properties": {
                    "title": {"type": "string", "required": true, "maxLength": 5},
                    "short": {"type": "boolean"},
                },
                "additionalProperties": false,
            },
        });
        assert!(problems(schema.clone(), json!([{"title": "a", "short": true}])).is_empty());
        let p = problems(
            schema,
            json!([{"short": "no"}, {"title": "toolong", "extra": 1}]),
        );
        assert_eq!(
            p,
            [
                "p[0].title: is required",
                "p[0].short: expected boolean, got string \"no\"",
                "p[1].title: \"toolong\" is longer than 5 characters",
                "p[1].extra: is not allowed (allowed: title, short)",
            ]
        );
    }

    #[test]
    fn draft4_required_list_enum_bounds_and_combinators() {
        let schema = json!({
            "type": "object",
            "required": ["level"],
            "properties": {
                "level": {"enum": ["low", "high"]},
                "count": {"type": "integer", "minimum": 1, "maximum": 3},
                "id": {"oneOf": [{"type": "string"}, {"type": "integer"}]},
                "any": {"anyOf": [{"type": "null"}, {"type": "string", "minLength": 2}]},
            },
        });
        assert!(problems(
            schema.clone(),
            json!({"level": "low", "id": 4, "any": "ab"})
        )
        .is_empty());
        let p = problems(schema, json!({"count": 9, "id": 1.5, "any": "a"}));
        assert_eq!(p.len(), 4, "{p:?}");
        assert!(p[0].contains("p.level: is required"));
        assert!(p[1].contains("greater than the maximum 3"));
        assert!(p[2].contains("fits 0 of the schemas of oneOf"));
        assert!(p[3].contains("fits none of the schemas of anyOf"));
    }

    #[test]
    fn schema_shape_problems_name_their_path() {
        let mut out = Vec::new();
        check_schema(
            &json!({"type": "object", "properties": {"a": {"type": "strng"}, "b": {"items": 3}}}),
            "config",
            &mut out,
        );
        assert_eq!(out.len(), 2, "{out:?}");
        assert!(out[0].starts_with("config.a: unknown type 'strng'"));
        assert!(out[1].starts_with("config.b[]: a schema must be a mapping"));
    }
}
