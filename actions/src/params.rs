//! Parameter validation and casting: turns the parameters a user, a rule or a workflow gave
//! into the exact set an action runs with, or lists every way they do not fit.
//!
//! Casting follows st2, because rule templates render to text: `"42"` is a fine integer,
//! `"yes"` a fine boolean, `"[1, 2]"` a fine array. Choices where st2 is loose:
//! - `number` parameters always arrive as floating-point numbers (`5` becomes `5.0`), so that
//!   `params.ratio / 2` in a script never silently does integer division;
//! - an explicit `null` is treated as "not given": the default applies, or `required` fails;
//! - an optional parameter with no value and no default is left out of the result (a script
//!   reading it gets `()`);
//! - an array or object given to a `string` parameter becomes its Python `repr()`
//!   (`{'a': 1}`, `['x', 'y']`, `True` and `None` inside): st2 renders a rule's `{{ trigger.x }}`
//!   with Jinja, which prints a dict or list that way, and squall's templates keep such values
//!   whole until this cast;
//! - a default that does not fit its type is passed as written (st2 does not check defaults);
//! - after casting, a value is validated against the parameter's other JSON Schema keywords
//!   (nested `properties`, `items`, `oneOf`, ...: see [`crate::schema`]).
//!
//! This file never shows a secret parameter's value: error messages and [`mask_secrets`] say
//! `********` instead.

use serde_json::{Map, Value};

use crate::error::ParamError;
use crate::meta::{is_template, ActionMeta, ParamSpec, ParamType};

/// What a secret value is replaced with wherever it is shown.
pub const SECRET_MASK: &str = "********";

/// Applies defaults and casts, and checks required, enum, immutable, bounds and unknown
/// parameters. Returns the parameters to run with, in declaration order, or every violation.
/// How deep a parameter's value or a script's result may nest. Records hold them a few levels
/// down (an execution's `parameters.NAME`, an instance's `payload.result`), and what is stored
/// must read back (serde_json reads at most 128 levels).
pub const MAX_VALUE_NESTING: usize = 64;

/// How many levels of arrays and objects `value` nests (0 for a scalar).
pub fn nesting(value: &Value) -> usize {
    let mut deepest = 0;
    let mut stack: Vec<(&Value, usize)> = vec![(value, 0)];
    while let Some((v, depth)) = stack.pop() {
        match v {
            Value::Array(items) => stack.extend(items.iter().map(|c| (c, depth + 1))),
            Value::Object(map) => stack.extend(map.values().map(|c| (c, depth + 1))),
            _ => continue,
        }
        deepest = deepest.max(depth + 1);
    }
    deepest
}

pub fn validate_params(
    meta: &ActionMeta,
    given: Map<String, Value>,
) -> Result<Map<String, Value>, Vec<ParamError>> {
    let mut given = given;
    let mut errors = Vec::new();
    let mut valid = Map::with_capacity(meta.parameters.len());
    for (name, spec) in &meta.parameters {
        let value = given
            .remove(name)
            .filter(|v| !v.is_null() || spec.ty == ParamType::Null);
        match value {
            Some(value) => match check_given(spec, &value) {
                Ok(value) => {
                    valid.insert(name.clone(), value);
                }
                Err(message) => errors.push(ParamError::new(name, message)),
            },
            None => match &spec.default {
                Some(default) => match cast_value(spec, default) {
                    Ok(value) => {
                        valid.insert(name.clone(), value);
                    }
                    Err(message) if is_template_value(default) => errors.push(ParamError::new(
                        name,
                        format!("its default is a template that was not rendered: {message}"),
                    )),
                    // As st2 does: the default is the action author's, passed as written.
                    Err(_) => {
                        valid.insert(name.clone(), default.clone());
                    }
                },
                None if spec.required => errors.push(ParamError::new(name, "is required")),
                None => {}
            },
        }
    }
    if !given.is_empty() {
        let accepted = if meta.parameters.is_empty() {
            "the action takes no parameters".to_string()
        } else {
            let names: Vec<&str> = meta.parameters.keys().map(String::as_str).collect();
            format!("the action accepts: {}", names.join(", "))
        };
        for name in given.keys() {
            errors.push(ParamError::new(
                name,
                format!("unknown parameter ({accepted})"),
            ));
        }
    }
    if errors.is_empty() {
        Ok(valid)
    } else {
        Err(errors)
    }
}

fn check_given(spec: &ParamSpec, value: &Value) -> Result<Value, String> {
    let cast = cast_value(spec, value)?;
    let depth = nesting(&cast);
    if depth > MAX_VALUE_NESTING {
        return Err(format!(
            "nests {depth} levels deep: at most {MAX_VALUE_NESTING} are accepted"
        ));
    }
    if spec.immutable {
        let fixed = match &spec.default {
            Some(default) => cast_value(spec, default).ok(),
            None => None,
        };
        match fixed {
            Some(fixed) if values_equal(&fixed, &cast) => {}
            Some(fixed) => {
                return Err(format!(
                    "is immutable and cannot be changed from its default {}",
                    shown(spec, &fixed)
                ))
            }
            None => return Err("is immutable and cannot be set".to_string()),
        }
    }
    if let Some(values) = &spec.enum_values {
        if !enum_contains(values, &cast) {
            return Err(format!(
                "{} is not one of the allowed values {}",
                shown(spec, &cast),
                Value::Array(values.clone())
            ));
        }
    }
    Ok(cast)
}

/// Casts a value to a parameter's type and checks its bounds and item types.
pub(crate) fn cast_value(spec: &ParamSpec, value: &Value) -> Result<Value, String> {
    let mut cast = cast_to(spec.ty, value, spec.secret)?;
    if let (Some(items), Value::Array(elements)) = (&spec.items, &mut cast) {
        for (index, element) in elements.iter_mut().enumerate() {
            *element = cast_to(items.ty, element, spec.secret)
                .map_err(|message| format!("item {index}: {message}"))?;
        }
    }
    if !spec.schema.is_empty() {
        let mut problems = Vec::new();
        crate::schema::validate(
            &Value::Object(spec.schema.clone()),
            &cast,
            "",
            &mut problems,
        );
        if !problems.is_empty() {
            if spec.secret {
                return Err(format!("{SECRET_MASK} does not fit the parameter's schema"));
            }
            let problems: Vec<String> = problems
                .into_iter()
                .map(|p| p.strip_prefix(": ").map(str::to_string).unwrap_or(p))
                .map(|p| p.strip_prefix('.').map(str::to_string).unwrap_or(p))
                .collect();
            return Err(problems.join("; "));
        }
    }
    if let Some(number) = cast.as_f64() {
        if let Some(min) = spec.minimum.filter(|min| number < *min) {
            return Err(format!(
                "{} is less than the minimum {min}",
                shown(spec, &cast)
            ));
        }
        if let Some(max) = spec.maximum.filter(|max| number > *max) {
            return Err(format!(
                "{} is greater than the maximum {max}",
                shown(spec, &cast)
            ));
        }
    }
    Ok(cast)
}

/// Whether `value` equals one of `values` (numbers compare by value: `1` is `1.0`).
pub(crate) fn enum_contains(values: &[Value], value: &Value) -> bool {
    values.iter().any(|allowed| values_equal(allowed, value))
}

fn values_equal(a: &Value, b: &Value) -> bool {
    match (a, b) {
        (Value::Number(x), Value::Number(y)) => match (x.as_i64(), y.as_i64()) {
            (Some(x), Some(y)) => x == y,
            _ => x.as_f64() == y.as_f64(),
        },
        _ => a == b,
    }
}

fn is_template_value(value: &Value) -> bool {
    matches!(value, Value::String(s) if is_template(s))
}

fn shown(spec: &ParamSpec, value: &Value) -> String {
    if spec.secret {
        SECRET_MASK.to_string()
    } else {
        short(value)
    }
}

/// A value as JSON text, cut so one huge value does not drown the message.
fn short(value: &Value) -> String {
    const MAX: usize = 80;
    let text = value.to_string();
    if text.chars().count() <= MAX {
        text
    } else {
        let cut: String = text.chars().take(MAX).collect();
        format!("{cut}...")
    }
}

/// Casts one value to a type with st2's rules (see the module doc).
pub(crate) fn cast_to(ty: ParamType, value: &Value, secret: bool) -> Result<Value, String> {
    let fail = || {
        let got = if secret {
            SECRET_MASK.to_string()
        } else {
            short(value)
        };
        Err(format!("expected {ty}, got {} {got}", ParamType::of(value)))
    };
    match (ty, value) {
        (ParamType::String, Value::String(_)) => Ok(value.clone()),
        (ParamType::String, Value::Number(_) | Value::Bool(_)) => {
            Ok(Value::String(value.to_string()))
        }
        (ParamType::String, Value::Array(_) | Value::Object(_)) => {
            Ok(Value::String(squall_yaql::python_repr(value)))
        }
        (ParamType::Integer, Value::Number(n)) => {
            if n.is_i64() {
                Ok(value.clone())
            } else if n.is_u64() {
                // Scripts' integers are 64-bit signed: a larger one would become a float.
                let got = if secret {
                    SECRET_MASK.to_string()
                } else {
                    n.to_string()
                };
                Err(format!(
                    "integer {got} is out of range (at most {})",
                    i64::MAX
                ))
            } else {
                n.as_f64().and_then(integral).map_or_else(fail, Ok)
            }
        }
        (ParamType::Integer, Value::String(s)) => parse_integer(s.trim()).map_or_else(fail, Ok),
        (ParamType::Number, Value::Number(n)) => n.as_f64().and_then(float).map_or_else(fail, Ok),
        (ParamType::Number, Value::String(s)) => s
            .trim()
            .parse::<f64>()
            .ok()
            .and_then(float)
            .map_or_else(fail, Ok),
        (ParamType::Boolean, Value::Bool(_)) => Ok(value.clone()),
        (ParamType::Boolean, Value::String(s)) => parse_bool(s.trim()).map_or_else(fail, Ok),
        (ParamType::Boolean, Value::Number(n)) => match n.as_i64() {
            Some(0) => Ok(Value::Bool(false)),
            Some(1) => Ok(Value::Bool(true)),
            _ => fail(),
        },
        (ParamType::Array, Value::Array(_)) | (ParamType::Object, Value::Object(_)) => {
            Ok(value.clone())
        }
        // st2 reads JSON text, else a Python literal (`"['a', 'b']"`, `"{'k': True}"`), as
        // values rendered by Jinja into text come back.
        (ParamType::Array | ParamType::Object, Value::String(s)) => {
            match serde_json::from_str::<Value>(s)
                .or_else(|_| crate::pyliteral::literal_eval(s.trim()))
            {
                Ok(parsed) if ty.admits(&parsed) => Ok(parsed),
                _ => fail(),
            }
        }
        (ParamType::Null, Value::Null) => Ok(Value::Null),
        (ParamType::Null, Value::String(s)) if matches!(s.trim(), "" | "null") => Ok(Value::Null),
        _ => fail(),
    }
}

fn integral(f: f64) -> Option<Value> {
    // 2^63 is exactly representable; anything at or beyond it does not fit an i64.
    const LIMIT: f64 = 9_223_372_036_854_775_808.0;
    (f.is_finite() && f.fract() == 0.0 && (-LIMIT..LIMIT).contains(&f))
        .then(|| Value::from(f as i64))
}

fn float(f: f64) -> Option<Value> {
    serde_json::Number::from_f64(f).map(Value::Number)
}

fn parse_integer(text: &str) -> Option<Value> {
    if let Ok(i) = text.parse::<i64>() {
        return Some(Value::from(i));
    }
    // Digits beyond an i64 are refused, not rounded through a float.
    if text
        .trim_start_matches(['-', '+'])
        .bytes()
        .all(|b| b.is_ascii_digit())
    {
        return None;
    }
    text.parse::<f64>().ok().and_then(integral)
}

fn parse_bool(text: &str) -> Option<Value> {
    match text.to_ascii_lowercase().as_str() {
        "true" | "yes" | "1" | "on" => Some(Value::Bool(true)),
        "false" | "no" | "0" | "off" => Some(Value::Bool(false)),
        _ => None,
    }
}

/// Parses one `name=value` value from the command line (`squall action run REF n=5`).
///
/// Strings are taken verbatim. Arrays are JSON (`[1,2]`) or, as st2's CLI allows, a
/// comma-separated list of strings (`a,b,c`) that validation then casts item by item.
/// Everything else is parsed by type, with the same rules as [`validate_params`].
pub fn parse_cli_value(ty: ParamType, text: &str) -> Result<Value, String> {
    match ty {
        ParamType::String => Ok(Value::String(text.to_string())),
        ParamType::Array if !text.trim_start().starts_with('[') => Ok(Value::Array(
            text.split(',')
                .map(str::trim)
                .filter(|s| !s.is_empty())
                .map(|s| Value::String(s.to_string()))
                .collect(),
        )),
        ParamType::Array | ParamType::Object => serde_json::from_str::<Value>(text)
            .map_err(|e| format!("expected {ty} as JSON text: {e}"))
            .and_then(|v| {
                if ty.admits(&v) {
                    Ok(v)
                } else {
                    Err(format!("expected {ty}, got {}", ParamType::of(&v)))
                }
            }),
        _ => cast_to(ty, &Value::String(text.to_string()), false),
    }
}

/// A copy of `params` with the values of secret parameters replaced by `********`.
pub fn mask_secrets(meta: &ActionMeta, params: &Map<String, Value>) -> Map<String, Value> {
    params
        .iter()
        .map(|(name, value)| {
            let shown = if meta.is_secret(name) {
                Value::String(SECRET_MASK.to_string())
            } else {
                value.clone()
            };
            (name.clone(), shown)
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn meta(yaml_params: &str) -> ActionMeta {
        let text =
            format!("name: a\nrunner_type: rhai\nentry_point: a.rhai\nparameters:\n{yaml_params}");
        ActionMeta::from_yaml(&text).expect("valid metadata")
    }

    fn obj(value: Value) -> Map<String, Value> {
        match value {
            Value::Object(map) => map,
            other => panic!("not an object: {other}"),
        }
    }

    fn errors(meta: &ActionMeta, given: Value) -> Vec<ParamError> {
        match validate_params(meta, obj(given)) {
            Ok(valid) => panic!("expected errors, got {valid:?}"),
            Err(errors) => errors,
        }
    }

    #[test]
    fn values_nested_too_deep_to_keep_are_refused_naming_the_parameter() {
        let deep = |n: usize| format!("{}1{}", "[".repeat(n), "]".repeat(n));
        assert_eq!(nesting(&json!(1)), 0);
        assert_eq!(nesting(&json!([[1], {"a": [2]}])), 3);
        // Given as JSON text to an array parameter, as the CLI and templates give them.
        let e = cast("array", Value::String(deep(126))).expect_err("too deep");
        assert!(e.contains("v") && e.contains("126 levels"), "{e}");
        let fine: Value = serde_json::from_str(&deep(MAX_VALUE_NESTING)).expect("json");
        assert_eq!(cast("array", fine.clone()).expect("fits"), fine);
        let e = cast(
            "object",
            json!({"a": serde_json::from_str::<Value>(&deep(70)).expect("json")}),
        )
        .expect_err("too deep");
        assert!(e.contains("71 levels"), "{e}");
    }

    fn one_param(ty: &str) -> ActionMeta {
        meta(&format!("  v:\n    type: {ty}\n"))
    }

    fn cast(ty: &str, value: Value) -> Result<Value, String> {
        let meta = one_param(ty);
        match validate_params(&meta, obj(json!({ "v": value }))) {
            Ok(mut valid) => Ok(valid.remove("v").unwrap_or(Value::Null)),
            Err(errors) => {
                assert_eq!(errors.len(), 1);
                assert_eq!(errors[0].parameter, "v");
                Err(errors[0].to_string())
            }
        }
    }

    #[test]
    fn arrays_and_objects_are_read_from_json_or_python_text_as_st2_reads_them() {
        assert_eq!(cast("array", json!("[\"a\", 1]")), Ok(json!(["a", 1])));
        assert_eq!(
            cast("array", json!("['web', 'db']")),
            Ok(json!(["web", "db"]))
        );
        assert_eq!(
            cast("object", json!("{'up': True, 'n': None}")),
            Ok(json!({"up": true, "n": null}))
        );
        assert!(cast("array", json!("{'a': 1}")).is_err());
        assert!(cast("object", json!("os.system('x')")).is_err());
    }

    #[test]
    fn defaults_apply_and_given_values_win() {
        let m = meta("  a:\n    type: integer\n    default: 3\n  b:\n    type: string\n    default: x\n  c:\n    type: string\n");
        let valid = validate_params(&m, obj(json!({"b": "given"}))).expect("valid");
        assert_eq!(Value::Object(valid), json!({"a": 3, "b": "given"}));
        let valid = validate_params(&m, obj(json!({"a": null}))).expect("null means not given");
        assert_eq!(valid["a"], json!(3));
    }

    #[test]
    fn required_parameters_must_be_given() {
        let m = meta("  host:\n    type: string\n    required: true\n  port:\n    type: integer\n    required: true\n    default: 22\n");
        let e = errors(&m, json!({}));
        assert_eq!(e.len(), 1);
        assert_eq!(e[0].to_string(), "parameter 'host': is required");
        let e = errors(&m, json!({"host": null}));
        assert_eq!(e[0].parameter, "host");
    }

    #[test]
    fn unknown_parameters_are_named() {
        let m = meta("  host:\n    type: string\n");
        let e = errors(&m, json!({"host": "a", "hots": "b"}));
        assert_eq!(e.len(), 1);
        assert_eq!(e[0].parameter, "hots");
        assert!(e[0].message.contains("unknown parameter"));
        assert!(e[0].message.contains("host"));
    }

    #[test]
    fn every_violation_is_reported() {
        let m = meta("  a:\n    type: integer\n  b:\n    type: boolean\n  c:\n    type: string\n    required: true\n");
        let e = errors(&m, json!({"a": "x", "b": "maybe", "d": 1}));
        let names: Vec<&str> = e.iter().map(|e| e.parameter.as_str()).collect();
        assert_eq!(names, ["a", "b", "c", "d"]);
    }

    #[test]
    fn enum_is_checked_after_casting() {
        let m = meta("  level:\n    type: string\n    enum: [info, warn]\n  n:\n    type: integer\n    enum: [1, 2]\n");
        let valid = validate_params(&m, obj(json!({"level": "warn", "n": "2"}))).expect("valid");
        assert_eq!(valid["n"], json!(2));
        let e = errors(&m, json!({"level": "debug", "n": 3}));
        assert_eq!(
            e[0].to_string(),
            "parameter 'level': \"debug\" is not one of the allowed values [\"info\",\"warn\"]"
        );
        assert_eq!(e[1].parameter, "n");
    }

    #[test]
    fn immutable_parameters_keep_their_default() {
        let m = meta("  mode:\n    type: string\n    immutable: true\n    default: safe\n  n:\n    type: integer\n    immutable: true\n    default: 5\n");
        let valid = validate_params(&m, obj(json!({}))).expect("defaults");
        assert_eq!(Value::Object(valid), json!({"mode": "safe", "n": 5}));
        validate_params(&m, obj(json!({"mode": "safe", "n": "5"})))
            .expect("the same value, even as text, is allowed");
        let e = errors(&m, json!({"mode": "yolo"}));
        assert_eq!(e.len(), 1);
        assert_eq!(
            e[0].to_string(),
            "parameter 'mode': is immutable and cannot be changed from its default \"safe\""
        );
    }

    #[test]
    fn bounds_and_items_are_enforced() {
        let m = meta("  n:\n    type: integer\n    minimum: 1\n    maximum: 10\n  ids:\n    type: array\n    items:\n      type: integer\n");
        let valid =
            validate_params(&m, obj(json!({"n": "10", "ids": "[1, \"2\"]"}))).expect("valid");
        assert_eq!(Value::Object(valid), json!({"n": 10, "ids": [1, 2]}));
        let e = errors(&m, json!({"n": 0, "ids": [1, "x"]}));
        assert_eq!(
            e[0].to_string(),
            "parameter 'n': 0 is less than the minimum 1"
        );
        assert_eq!(
            e[1].to_string(),
            "parameter 'ids': item 1: expected integer, got string \"x\""
        );
        let e = errors(&m, json!({"n": 11}));
        assert!(e[0].message.contains("greater than the maximum 10"));
    }

    #[test]
    fn string_to_integer() {
        assert_eq!(cast("integer", json!("42")), Ok(json!(42)));
        assert_eq!(cast("integer", json!(" -7 ")), Ok(json!(-7)));
        assert_eq!(cast("integer", json!("3.0")), Ok(json!(3)));
        assert_eq!(cast("integer", json!(4.0)), Ok(json!(4)));
        assert!(cast("integer", json!(u64::MAX))
            .expect_err("beyond an i64")
            .contains("out of range"));
        assert!(cast("integer", json!("18446744073709551615")).is_err());
        assert_eq!(
            cast("integer", json!(i64::MAX.to_string())),
            Ok(json!(i64::MAX))
        );
        assert_eq!(
            cast("integer", json!("3.5")),
            Err("parameter 'v': expected integer, got string \"3.5\"".into())
        );
        assert_eq!(
            cast("integer", json!(true)),
            Err("parameter 'v': expected integer, got boolean true".into())
        );
        assert!(cast("integer", json!("1e30")).is_err());
    }

    #[test]
    fn string_and_integer_to_number() {
        assert_eq!(cast("number", json!("2.5")), Ok(json!(2.5)));
        assert_eq!(cast("number", json!(5)), Ok(json!(5.0)));
        assert_eq!(cast("number", json!("5")), Ok(json!(5.0)));
        assert_eq!(
            cast("number", json!("NaN")),
            Err("parameter 'v': expected number, got string \"NaN\"".into())
        );
        assert!(cast("number", json!("fast")).is_err());
    }

    #[test]
    fn string_to_boolean() {
        for yes in ["true", "TRUE", "yes", "Yes", "1", "on", "ON"] {
            assert_eq!(cast("boolean", json!(yes)), Ok(json!(true)), "{yes}");
        }
        for no in ["false", "False", "no", "NO", "0", "off", "Off"] {
            assert_eq!(cast("boolean", json!(no)), Ok(json!(false)), "{no}");
        }
        assert_eq!(cast("boolean", json!(1)), Ok(json!(true)));
        assert_eq!(
            cast("boolean", json!("maybe")),
            Err("parameter 'v': expected boolean, got string \"maybe\"".into())
        );
    }

    #[test]
    fn string_to_array_and_object() {
        assert_eq!(cast("array", json!("[1, 2, 3]")), Ok(json!([1, 2, 3])));
        assert_eq!(cast("object", json!("{\"a\": 1}")), Ok(json!({"a": 1})));
        assert_eq!(cast("array", json!(["x"])), Ok(json!(["x"])));
        assert_eq!(
            cast("array", json!("{\"a\": 1}")),
            Err("parameter 'v': expected array, got string \"{\\\"a\\\": 1}\"".into())
        );
        assert!(cast("object", json!("not json")).is_err());
        assert!(cast("object", json!([1])).is_err());
    }

    #[test]
    fn numbers_and_booleans_to_string() {
        assert_eq!(cast("string", json!(42)), Ok(json!("42")));
        assert_eq!(cast("string", json!(2.5)), Ok(json!("2.5")));
        assert_eq!(cast("string", json!(true)), Ok(json!("true")));
    }

    #[test]
    fn containers_to_string_are_pythons_repr_as_st2_renders_them() {
        assert_eq!(cast("string", json!({"a": 1})), Ok(json!("{'a': 1}")));
        assert_eq!(cast("string", json!(["x", "y"])), Ok(json!("['x', 'y']")));
        assert_eq!(
            cast(
                "string",
                json!({"ok": true, "none": null, "f": 2.0, "q": "it's"})
            ),
            Ok(json!("{'ok': True, 'none': None, 'f': 2.0, 'q': \"it's\"}"))
        );
    }

    #[test]
    fn nested_schemas_are_validated_after_casting() {
        let m = meta("  attachments:\n    type: array\n    items:\n      type: object\n      properties:\n        title: {type: string, required: true}\n        short: {type: boolean}\n      additionalProperties: false\n  channel:\n    type: string\n    maxLength: 3\n");
        let valid = validate_params(
            &m,
            obj(json!({"attachments": "[{\"title\": \"t\", \"short\": true}]", "channel": "abc"})),
        )
        .expect("fits");
        assert_eq!(valid["attachments"], json!([{"title": "t", "short": true}]));
        let e = errors(
            &m,
            json!({"attachments": [{"short": 1, "x": 2}], "channel": "abcd"}),
        );
        let shown: Vec<String> = e.iter().map(ToString::to_string).collect();
        assert_eq!(
            shown,
            [
                "parameter 'attachments': [0].title: is required; [0].short: expected boolean, got integer 1; [0].x: is not allowed (allowed: title, short)",
                "parameter 'channel': \"abcd\" is longer than 3 characters",
            ]
        );
    }

    #[test]
    fn a_default_that_does_not_fit_is_passed_as_written() {
        let m = meta("  retries:\n    type: integer\n    default: three\n  level:\n    type: string\n    enum: [a, b]\n    default: c\n");
        let valid = validate_params(&m, Map::new()).expect("st2 passes defaults through");
        assert_eq!(
            Value::Object(valid),
            json!({"retries": "three", "level": "c"})
        );
    }

    #[test]
    fn null_type() {
        assert_eq!(cast("\"null\"", json!("null")), Ok(Value::Null));
        assert!(cast("\"null\"", json!(1)).is_err());
    }

    #[test]
    fn secrets_never_appear_in_errors_or_masks() {
        let m = meta("  token:\n    type: integer\n    secret: true\n  user:\n    type: string\n");
        let e = errors(&m, json!({"token": "hunter2"}));
        assert_eq!(
            e[0].to_string(),
            "parameter 'token': expected integer, got string ********"
        );
        let shown = mask_secrets(&m, &obj(json!({"token": 5, "user": "bob"})));
        assert_eq!(
            Value::Object(shown),
            json!({"token": "********", "user": "bob"})
        );
    }

    #[test]
    fn cli_values_are_parsed_by_type() {
        assert_eq!(parse_cli_value(ParamType::String, "x=1"), Ok(json!("x=1")));
        assert_eq!(parse_cli_value(ParamType::String, "42"), Ok(json!("42")));
        assert_eq!(parse_cli_value(ParamType::Integer, "42"), Ok(json!(42)));
        assert_eq!(parse_cli_value(ParamType::Number, "0.5"), Ok(json!(0.5)));
        assert_eq!(parse_cli_value(ParamType::Boolean, "true"), Ok(json!(true)));
        assert_eq!(
            parse_cli_value(ParamType::Array, "[1,2,3]"),
            Ok(json!([1, 2, 3]))
        );
        assert_eq!(
            parse_cli_value(ParamType::Array, "a, b,c"),
            Ok(json!(["a", "b", "c"]))
        );
        assert_eq!(
            parse_cli_value(ParamType::Object, "{\"k\":\"v\"}"),
            Ok(json!({"k": "v"}))
        );
        assert!(parse_cli_value(ParamType::Integer, "ten")
            .is_err_and(|e| e.contains("expected integer") && e.contains("ten")));
        assert!(
            parse_cli_value(ParamType::Object, "[1]").is_err_and(|e| e.contains("expected object"))
        );
        assert!(parse_cli_value(ParamType::Array, "[1,").is_err_and(|e| e.contains("JSON")));
    }
}
