//! Python's `str()` and `repr()` of JSON values, as Orquesta and yaql print them into text.
//! Formatting only; never fails.

use serde_json::Value;

/// Python's `str(value)`: strings as they are, everything else as `repr`.
pub fn python_str(value: &Value) -> String {
    match value {
        Value::String(s) => s.clone(),
        other => python_repr(other),
    }
}

/// yaql's `str()`: like Python's but `null`, `true`, `false` at the top level.
pub(crate) fn yaql_str(value: &Value) -> String {
    match value {
        Value::Null => "null".into(),
        Value::Bool(true) => "true".into(),
        Value::Bool(false) => "false".into(),
        Value::String(s) => s.clone(),
        // yaql holds lists as tuples internally, so its str() prints them as tuples.
        other => {
            let mut out = String::new();
            write_repr(other, &mut out, true);
            out
        }
    }
}

/// Python's `repr(value)` (`None`, `True`, `['a', 1]`, `{'k': 'v'}`), as Jinja under Python
/// prints a list or a dict.
pub fn python_repr(value: &Value) -> String {
    let mut out = String::new();
    write_repr(value, &mut out, false);
    out
}

fn write_repr(value: &Value, out: &mut String, tuples: bool) {
    match value {
        Value::Null => out.push_str("None"),
        Value::Bool(true) => out.push_str("True"),
        Value::Bool(false) => out.push_str("False"),
        // Integers print as they are, those above i64's range included.
        Value::Number(n) if !n.is_f64() => out.push_str(&n.to_string()),
        Value::Number(n) => out.push_str(&float_repr(n.as_f64().unwrap_or(0.0))),
        Value::String(s) => out.push_str(&string_repr(s)),
        Value::Array(items) => {
            out.push(if tuples { '(' } else { '[' });
            for (i, item) in items.iter().enumerate() {
                if i > 0 {
                    out.push_str(", ");
                }
                write_repr(item, out, tuples);
            }
            if tuples && items.len() == 1 {
                out.push(',');
            }
            out.push(if tuples { ')' } else { ']' });
        }
        Value::Object(map) => {
            out.push('{');
            for (i, (k, v)) in map.iter().enumerate() {
                if i > 0 {
                    out.push_str(", ");
                }
                out.push_str(&string_repr(k));
                out.push_str(": ");
                write_repr(v, out, tuples);
            }
            out.push('}');
        }
    }
}

fn string_repr(s: &str) -> String {
    let quote = if s.contains('\'') && !s.contains('"') {
        '"'
    } else {
        '\''
    };
    let mut out = String::new();
    out.push(quote);
    for c in s.chars() {
        match c {
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push_str("\\t"),
            c if c == quote => {
                out.push('\\');
                out.push(c);
            }
            c if (c as u32) < 0x20 || c as u32 == 0x7f => {
                out.push_str(&format!("\\x{:02x}", c as u32));
            }
            c => out.push(c),
        }
    }
    out.push(quote);
    out
}

/// Python's `repr(float)`: shortest round-trip digits, exponent form below 1e-4 and from 1e16.
pub(crate) fn float_repr(f: f64) -> String {
    if f.is_nan() {
        return "nan".into();
    }
    if f.is_infinite() {
        return if f > 0.0 { "inf".into() } else { "-inf".into() };
    }
    if f == 0.0 {
        return if f.is_sign_negative() {
            "-0.0".into()
        } else {
            "0.0".into()
        };
    }
    let sci = format!("{f:e}");
    let (mantissa, exp) = sci.split_once('e').unwrap_or((&sci, "0"));
    let exp: i32 = exp.parse().unwrap_or(0);
    if (-4..16).contains(&exp) {
        let s = format!("{f}");
        if s.contains('.') {
            s
        } else {
            format!("{s}.0")
        }
    } else {
        let sign = if exp < 0 { '-' } else { '+' };
        format!("{mantissa}e{sign}{:02}", exp.abs())
    }
}
