//! st2's expression function library (`st2common/expressions/functions/*.py`) over JSON
//! values, as rules' Jinja filters and Orquesta's Jinja and YAQL functions all call it, plus
//! Orquesta's own generic `json()` and `zip()`. Each function keeps st2's argument names and
//! defaults, positional or by name, and its output to the character (`json.dumps` spacing,
//! PyYAML's emitter, Python's `re`, python-semver's ordering).
//!
//! [`FUNCTIONS`] names them all; [`call`] is the one way in. Pure: no I/O, no clock, no
//! key-value store (squall's lookups already give clear text, so `decrypt_kv` passes its input
//! through).

use std::cmp::Ordering;
use std::rc::Rc;
use std::sync::LazyLock;

use fancy_regex::Regex as PyRegex;
use regex::Regex;
use serde::Deserialize as _;
use serde_json::{Map, Number, Value};

use crate::operators::python_regex;

/// A parameter's default when the caller leaves it out.
#[derive(Debug, Clone, Copy)]
enum Default {
    Required,
    None,
    False,
    True,
    Zero,
    /// `to_json_string`'s `separators=(",", ": ")`.
    Separators,
}

impl Default {
    fn value(self) -> Option<Value> {
        match self {
            Default::Required => None,
            Default::None => Some(Value::Null),
            Default::False => Some(Value::Bool(false)),
            Default::True => Some(Value::Bool(true)),
            Default::Zero => Some(Value::from(0)),
            Default::Separators => Some(Value::Array(vec![
                Value::String(",".into()),
                Value::String(": ".into()),
            ])),
        }
    }
}

struct Param {
    name: &'static str,
    default: Default,
}

const fn req(name: &'static str) -> Param {
    Param {
        name,
        default: Default::Required,
    }
}

const fn opt(name: &'static str, default: Default) -> Param {
    Param { name, default }
}

/// One function: st2's name, its parameters in order, and its body. A `variadic` function
/// (Orquesta's `zip(*args, pad=None)`) takes any number of positional arguments before its
/// named parameters.
pub struct Function {
    pub name: &'static str,
    params: &'static [Param],
    variadic: bool,
    body: fn(&Args) -> Result<Value, String>,
}

const VALUE: &[Param] = &[req("value")];
const PATH: &[Param] = &[req("path")];
const VERSION_PAIR: &[Param] = &[req("value"), req("pattern")];
const REGEX_TEST: &[Param] = &[
    req("value"),
    req("pattern"),
    opt("ignorecase", Default::False),
];

const fn f(
    name: &'static str,
    params: &'static [Param],
    body: fn(&Args) -> Result<Value, String>,
) -> Function {
    Function {
        name,
        params,
        variadic: false,
        body,
    }
}

/// Every function, under every name st2 gives it: the Jinja filters of
/// `st2common.util.jinja.get_filters()`, the aliases st2common registers for Orquesta
/// (`json_dump`, `json_parse`, `yaml_dump`, `yaml_parse`), and Orquesta's `json` and `zip`.
pub static FUNCTIONS: &[Function] = &[
    f("decrypt_kv", VALUE, decrypt_kv),
    f("from_json_string", VALUE, from_json_string),
    f("json_parse", VALUE, from_json_string),
    f("from_yaml_string", VALUE, from_yaml_string),
    f("yaml_parse", VALUE, from_yaml_string),
    f("json_escape", VALUE, json_escape),
    f(
        "jsonpath_query",
        &[req("value"), req("query")],
        jsonpath_query,
    ),
    f("to_complex", VALUE, to_complex),
    f("to_json_string", TO_JSON_PARAMS, to_json_string),
    f("json_dump", TO_JSON_PARAMS, to_json_string),
    f("to_yaml_string", TO_YAML_PARAMS, to_yaml_string),
    f("yaml_dump", TO_YAML_PARAMS, to_yaml_string),
    f("regex_match", REGEX_TEST, regex_match),
    f(
        "regex_replace",
        &[
            req("value"),
            req("pattern"),
            req("replacement"),
            opt("ignorecase", Default::False),
        ],
        regex_replace,
    ),
    f("regex_search", REGEX_TEST, regex_search),
    f(
        "regex_substring",
        &[
            req("value"),
            req("pattern"),
            opt("result_index", Default::Zero),
            opt("ignorecase", Default::False),
        ],
        regex_substring,
    ),
    f(
        "to_human_time_from_seconds",
        &[req("seconds")],
        to_human_time_from_seconds,
    ),
    f("version_compare", VERSION_PAIR, version_compare),
    f("version_more_than", VERSION_PAIR, version_more_than),
    f("version_less_than", VERSION_PAIR, version_less_than),
    f("version_equal", VERSION_PAIR, version_equal),
    f("version_match", VERSION_PAIR, version_match),
    f("version_bump_major", VALUE, version_bump_major),
    f("version_bump_minor", VALUE, version_bump_minor),
    f("version_bump_patch", VALUE, version_bump_patch),
    f("version_strip_patch", VALUE, version_strip_patch),
    f("use_none", VALUE, use_none),
    f("basename", PATH, basename),
    f("dirname", PATH, dirname),
    f("json", &[req("s")], orquesta_json),
    Function {
        name: "zip",
        params: &[opt("pad", Default::None)],
        variadic: true,
        body: orquesta_zip,
    },
];

const TO_JSON_PARAMS: &[Param] = &[
    req("value"),
    opt("indent", Default::None),
    opt("sort_keys", Default::False),
    opt("separators", Default::Separators),
];

const TO_YAML_PARAMS: &[Param] = &[
    req("value"),
    opt("indent", Default::None),
    opt("allow_unicode", Default::True),
];

/// Calls the function `name` with positional `args` and named `kwargs`; `None` when no
/// function has that name.
pub fn call(
    name: &str,
    args: &[Value],
    kwargs: &[(String, Value)],
) -> Option<Result<Value, String>> {
    let function = FUNCTIONS.iter().find(|f| f.name == name)?;
    Some(bind(function, args, kwargs).and_then(|bound| (function.body)(&bound)))
}

/// The name of every function, aliases included.
pub fn names() -> impl Iterator<Item = &'static str> {
    FUNCTIONS.iter().map(|f| f.name)
}

/// A call's arguments matched to the function's parameters, as Python binds them.
pub struct Args {
    function: &'static str,
    params: &'static [Param],
    values: Vec<Value>,
    rest: Vec<Value>,
}

fn bind(
    function: &'static Function,
    args: &[Value],
    kwargs: &[(String, Value)],
) -> Result<Args, String> {
    let name = function.name;
    let mut slots: Vec<Option<Value>> = vec![None; function.params.len()];
    let mut rest = Vec::new();
    if function.variadic {
        rest = args.to_vec();
    } else {
        if args.len() > function.params.len() {
            return Err(format!(
                "{name}() takes at most {} arguments ({} given)",
                function.params.len(),
                args.len()
            ));
        }
        for (slot, value) in slots.iter_mut().zip(args) {
            *slot = Some(value.clone());
        }
    }
    for (key, value) in kwargs {
        let Some(index) = function.params.iter().position(|p| p.name == key) else {
            return Err(format!(
                "{name}() got an unexpected keyword argument '{key}'"
            ));
        };
        if slots[index].is_some() {
            return Err(format!("{name}() got multiple values for argument '{key}'"));
        }
        slots[index] = Some(value.clone());
    }
    let mut values = Vec::with_capacity(slots.len());
    for (slot, param) in slots.into_iter().zip(function.params) {
        match slot.or_else(|| param.default.value()) {
            Some(v) => values.push(v),
            None => {
                return Err(format!(
                    "{name}() missing required argument '{}'",
                    param.name
                ))
            }
        }
    }
    Ok(Args {
        function: name,
        params: function.params,
        values,
        rest,
    })
}

impl Args {
    fn get(&self, i: usize) -> &Value {
        &self.values[i]
    }

    fn fail<T>(&self, msg: impl std::fmt::Display) -> Result<T, String> {
        Err(format!("{}(): {msg}", self.function))
    }

    fn arg_fail<T>(&self, i: usize, msg: impl std::fmt::Display) -> Result<T, String> {
        Err(format!(
            "{}(): argument '{}' {msg}",
            self.function, self.params[i].name
        ))
    }

    fn str(&self, i: usize) -> Result<&str, String> {
        match self.get(i) {
            Value::String(s) => Ok(s),
            other => self.arg_fail(i, format!("must be a string, not {}", py_type(other))),
        }
    }

    /// Python's `str(value)`, what st2's regex functions do to a value that is not a string.
    fn text(&self, i: usize) -> String {
        squall_yaql::python_str(self.get(i))
    }

    /// Python's truth of an argument (`ignorecase`, `sort_keys`, `allow_unicode`).
    fn truthy(&self, i: usize) -> bool {
        squall_yaql::is_true(self.get(i))
    }

    fn int(&self, i: usize) -> Result<i64, String> {
        match self.get(i) {
            Value::Bool(b) => Ok(i64::from(*b)),
            Value::Number(n) if n.is_i64() => Ok(n.as_i64().unwrap_or_default()),
            other => self.arg_fail(i, format!("must be an integer, not {}", py_type(other))),
        }
    }
}

/// Python's type name of a value, for messages that read like st2's.
fn py_type(v: &Value) -> &'static str {
    crate::operators::py_type(Some(v))
}

// --- data.py -------------------------------------------------------------------------------

fn from_json_string(a: &Args) -> Result<Value, String> {
    let text = a.text(0);
    serde_json::from_str(&text).or_else(|e| a.fail(format!("not valid JSON: {e}")))
}

fn from_yaml_string(a: &Args) -> Result<Value, String> {
    yaml_load(&a.text(0)).or_else(|e| a.fail(e))
}

/// st2 passes `separators=(",", ": ")` by default: no space after a comma, unlike
/// `json.dumps`'s own default (`to_complex`).
fn to_json_string(a: &Args) -> Result<Value, String> {
    let indent = match a.get(1) {
        Value::Null => None,
        Value::String(s) => Some(s.clone()),
        Value::Bool(_) | Value::Number(_) => Some(" ".repeat(a.int(1)?.max(0) as usize)),
        other => {
            return a.arg_fail(
                1,
                format!("must be an integer or a string, not {}", py_type(other)),
            )
        }
    };
    let (item, key) = match a.get(3) {
        // st2 leaves `separators` out of json.dumps when None: Python's own defaults apply.
        Value::Null if indent.is_some() => (",".to_string(), ": ".to_string()),
        Value::Null => (", ".to_string(), ": ".to_string()),
        Value::Array(pair) => match pair.as_slice() {
            [Value::String(i), Value::String(k)] => (i.clone(), k.clone()),
            _ => return a.arg_fail(3, "must be a pair of strings"),
        },
        other => {
            return a.arg_fail(
                3,
                format!("must be a pair of strings, not {}", py_type(other)),
            )
        }
    };
    let style = JsonStyle {
        indent,
        item: &item,
        key: &key,
        sort_keys: a.truthy(2),
    };
    let mut out = String::new();
    python_json(a.get(0), &style, 0, &mut out);
    Ok(Value::String(out))
}

fn to_complex(a: &Args) -> Result<Value, String> {
    Ok(Value::String(python_json_dumps(a.get(0))))
}

/// Python's `json.dumps(value)` with its defaults (`, ` and `: `, non-ASCII escaped).
pub fn python_json_dumps(value: &Value) -> String {
    let style = JsonStyle {
        indent: None,
        item: ", ",
        key: ": ",
        sort_keys: false,
    };
    let mut out = String::new();
    python_json(value, &style, 0, &mut out);
    out
}

fn json_escape(a: &Args) -> Result<Value, String> {
    // st2 strips every double quote at both ends, not only the pair json.dumps adds.
    let dumped = python_json_dumps(a.get(0));
    Ok(Value::String(dumped.trim_matches('"').to_string()))
}

fn to_yaml_string(a: &Args) -> Result<Value, String> {
    // PyYAML takes an indent only between 2 and 9; otherwise it keeps 2.
    let indent = match a.get(1) {
        Value::Null => 2,
        _ => match a.int(1)? {
            i @ 2..=9 => i as usize,
            _ => 2,
        },
    };
    let allow_unicode = a.truthy(2);
    Ok(Value::String(yaml_dump(a.get(0), indent, allow_unicode)))
}

fn jsonpath_query(a: &Args) -> Result<Value, String> {
    let query = a.str(1)?;
    let path =
        JsonPath::parse(query).or_else(|e| a.fail(format!("bad JSONPath {query:?}: {e}")))?;
    let root = Rc::new(Datum {
        value: std::borrow::Cow::Borrowed(a.get(0)),
        context: None,
    });
    let found = path.find(&root).or_else(|e| a.fail(e))?;
    if found.is_empty() {
        return Ok(Value::Null);
    }
    Ok(Value::Array(
        found
            .into_iter()
            .map(|d| d.value.clone().into_owned())
            .collect(),
    ))
}

/// st2 turns None into a placeholder string that its parameter rendering turns back into None;
/// squall's values carry null as it is, so the value passes through.
fn use_none(a: &Args) -> Result<Value, String> {
    Ok(a.get(0).clone())
}

// --- datastore.py --------------------------------------------------------------------------

/// squall's key-value lookups give clear text already, so the value passes through.
fn decrypt_kv(a: &Args) -> Result<Value, String> {
    Ok(a.get(0).clone())
}

// --- path.py -------------------------------------------------------------------------------

fn basename(a: &Args) -> Result<Value, String> {
    let path = path_arg(a)?;
    let start = path.rfind('/').map(|i| i + 1).unwrap_or(0);
    Ok(Value::String(path[start..].to_string()))
}

fn dirname(a: &Args) -> Result<Value, String> {
    let path = path_arg(a)?;
    let end = path.rfind('/').map(|i| i + 1).unwrap_or(0);
    let head = &path[..end];
    // posixpath.dirname strips trailing slashes unless the head is only slashes.
    let head = if !head.is_empty() && head.chars().any(|c| c != '/') {
        head.trim_end_matches('/')
    } else {
        head
    };
    Ok(Value::String(head.to_string()))
}

fn path_arg(a: &Args) -> Result<&str, String> {
    match a.get(0) {
        Value::String(s) => Ok(s),
        other => a.arg_fail(
            0,
            format!(
                "must be str, bytes or os.PathLike object, not {}",
                py_type(other)
            ),
        ),
    }
}

// --- regex.py ------------------------------------------------------------------------------

fn compile(a: &Args, pattern: usize, ignorecase: bool, anchored: bool) -> Result<PyRegex, String> {
    let source = python_regex(a.str(pattern)?);
    let source = match (anchored, ignorecase) {
        (true, true) => format!(r"\A(?i:{source})"),
        (true, false) => format!(r"\A(?:{source})"),
        (false, true) => format!("(?i:{source})"),
        (false, false) => source,
    };
    PyRegex::new(&source)
        .or_else(|e| a.arg_fail(pattern, format!("is not a valid regular expression: {e}")))
}

fn regex_match(a: &Args) -> Result<Value, String> {
    let re = compile(a, 1, a.truthy(2), true)?;
    re.is_match(&a.text(0))
        .map(Value::Bool)
        .or_else(|e| a.fail(e))
}

fn regex_search(a: &Args) -> Result<Value, String> {
    let re = compile(a, 1, a.truthy(2), false)?;
    re.is_match(&a.text(0))
        .map(Value::Bool)
        .or_else(|e| a.fail(e))
}

/// A piece of a Python `re.sub` replacement: text, or a group's match.
enum Piece {
    Text(String),
    Group(usize),
    Named(String),
}

/// Reads a Python replacement template: `\1`, `\g<1>`, `\g<name>`, and the escapes `re`
/// processes (`\n`, `\t`, `\\` ...); any other backslash before a non-letter stays as written.
fn replacement(a: &Args, template: &str) -> Result<Vec<Piece>, String> {
    let mut pieces = Vec::new();
    let mut text = String::new();
    let chars: Vec<char> = template.chars().collect();
    let mut i = 0;
    while i < chars.len() {
        let c = chars[i];
        if c != '\\' || i + 1 >= chars.len() {
            text.push(c);
            i += 1;
            continue;
        }
        let next = chars[i + 1];
        i += 2;
        let escaped = match next {
            'n' => Some('\n'),
            't' => Some('\t'),
            'r' => Some('\r'),
            'f' => Some('\x0c'),
            'v' => Some('\x0b'),
            'a' => Some('\x07'),
            'b' => Some('\x08'),
            '\\' => Some('\\'),
            _ => None,
        };
        if let Some(e) = escaped {
            text.push(e);
            continue;
        }
        let group = if next == '0' {
            // `\0` starts an octal escape (up to two more octal digits), not a group.
            let mut code = 0u32;
            let mut taken = 0;
            while taken < 2 && i < chars.len() && ('0'..='7').contains(&chars[i]) {
                code = code * 8 + chars[i].to_digit(8).unwrap_or_default();
                i += 1;
                taken += 1;
            }
            text.push(char::from_u32(code).unwrap_or('\0'));
            None
        } else if next.is_ascii_digit() {
            let mut digits = next.to_string();
            if i < chars.len() && chars[i].is_ascii_digit() {
                digits.push(chars[i]);
                i += 1;
            }
            Some(Piece::Group(digits.parse().unwrap_or_default()))
        } else if next == 'g' && chars.get(i) == Some(&'<') {
            let Some(close) = chars[i..].iter().position(|&c| c == '>') else {
                return a.arg_fail(2, "has an unterminated group name");
            };
            let name: String = chars[i + 1..i + close].iter().collect();
            i += close + 1;
            Some(match name.parse::<usize>() {
                Ok(n) => Piece::Group(n),
                Err(_) => Piece::Named(name),
            })
        } else if next.is_ascii_alphabetic() {
            return a.arg_fail(2, format!("has a bad escape \\{next}"));
        } else {
            text.push('\\');
            text.push(next);
            None
        };
        if let Some(g) = group {
            pieces.push(Piece::Text(std::mem::take(&mut text)));
            pieces.push(g);
        }
    }
    pieces.push(Piece::Text(text));
    Ok(pieces)
}

fn regex_replace(a: &Args) -> Result<Value, String> {
    let re = compile(a, 1, a.truthy(3), false)?;
    let template = replacement(a, a.str(2)?)?;
    let value = a.text(0);
    let mut out = String::new();
    let mut last = 0;
    for caps in re.captures_iter(&value) {
        let caps = caps.or_else(|e| a.fail(e))?;
        let Some(whole) = caps.get(0) else { continue };
        out.push_str(&value[last..whole.start()]);
        for piece in &template {
            match piece {
                Piece::Text(t) => out.push_str(t),
                Piece::Group(n) => {
                    if *n >= caps.len() {
                        return a
                            .arg_fail(2, format!("refers to group {n}, which the pattern lacks"));
                    }
                    out.push_str(caps.get(*n).map(|m| m.as_str()).unwrap_or_default());
                }
                Piece::Named(name) => {
                    if !re.capture_names().any(|n| n == Some(name.as_str())) {
                        return a.arg_fail(2, format!("refers to unknown group name '{name}'"));
                    }
                    out.push_str(caps.name(name).map(|m| m.as_str()).unwrap_or_default());
                }
            }
        }
        last = whole.end();
    }
    out.push_str(&value[last..]);
    Ok(Value::String(out))
}

fn regex_substring(a: &Args) -> Result<Value, String> {
    let re = compile(a, 1, a.truthy(3), false)?;
    let value = a.text(0);
    let groups = re.captures_len() - 1;
    // re.findall: whole matches without groups, the group with one, a tuple with several.
    let mut found = Vec::new();
    for caps in re.captures_iter(&value) {
        let caps = caps.or_else(|e| a.fail(e))?;
        let text = |i: usize| {
            Value::String(
                caps.get(i)
                    .map(|m| m.as_str())
                    .unwrap_or_default()
                    .to_string(),
            )
        };
        found.push(match groups {
            0 => text(0),
            1 => text(1),
            n => Value::Array((1..=n).map(text).collect()),
        });
    }
    let index = a.int(2)?;
    let len = found.len() as i64;
    let at = if index < 0 { index + len } else { index };
    if at < 0 || at >= len {
        return a.fail(format!(
            "no match at index {index} ({len} found; IndexError: list index out of range)"
        ));
    }
    Ok(found.swap_remove(at as usize))
}

// --- time.py -------------------------------------------------------------------------------

fn to_human_time_from_seconds(a: &Args) -> Result<Value, String> {
    let seconds = match a.get(0) {
        Value::Bool(b) => Number::from(i64::from(*b)),
        Value::Number(n) => n.clone(),
        other => {
            return a.arg_fail(
                0,
                format!("must be an int or a float, not {}", py_type(other)),
            )
        }
    };
    if seconds.as_f64() == Some(0.0) {
        return Ok(Value::String("0s".into()));
    }
    let as_float = seconds.as_f64().unwrap_or_default();
    if as_float < 1.0 {
        // Python's "%s" of the number, then the micro sign.
        let shown = squall_yaql::python_repr(&Value::Number(seconds));
        return Ok(Value::String(format!("{shown}\u{3bc}s")));
    }
    let whole: i64 = match seconds.as_i64() {
        Some(i) if !seconds.is_f64() => i,
        // Python's round(): halves to even.
        _ => as_float.round_ties_even() as i64,
    };
    // st2 adds the seconds to 0001-01-01 and reads the date's fields: a month's worth of days
    // is dropped from the days shown, as st2 does.
    let base = chrono::NaiveDate::from_ymd_opt(1, 1, 1)
        .and_then(|d| d.and_hms_opt(0, 0, 0))
        .ok_or_else(|| format!("{}(): no base date", a.function))?;
    let date = chrono::Duration::try_seconds(whole)
        .and_then(|d| base.checked_add_signed(d))
        .ok_or_else(|| format!("{}(): date value out of range (OverflowError)", a.function))?;
    use chrono::{Datelike, Timelike};
    let parts = [
        i64::from(date.year() - 1),
        i64::from(date.day() - 1),
        i64::from(date.hour()),
        i64::from(date.minute()),
        i64::from(date.second()),
    ];
    let first = parts.iter().position(|p| *p != 0);
    let Some(first) = first else {
        return Ok(Value::String("0s".into()));
    };
    let units = ["y", "d", "h", "m", "s"];
    let kept = &parts[first..];
    // st2's formats by count of parts: "%ss", "%sm%ss", "%sh%sm%ss"...: the units are those of
    // the last parts, whatever the first non-zero part was.
    let labels = &units[units.len() - kept.len()..];
    let text: String = kept
        .iter()
        .zip(labels)
        .map(|(p, u)| format!("{p}{u}"))
        .collect();
    Ok(Value::String(text))
}

// --- version.py (python-semver 3) ----------------------------------------------------------

#[derive(Debug, Clone, PartialEq)]
struct SemVer {
    major: u64,
    minor: u64,
    patch: u64,
    prerelease: Option<String>,
    build: Option<String>,
}

static SEMVER: LazyLock<Regex> = LazyLock::new(|| {
    Regex::new(
        r"^(0|[1-9]\d*)\.(0|[1-9]\d*)\.(0|[1-9]\d*)(?:-((?:0|[1-9]\d*|\d*[a-zA-Z-][0-9a-zA-Z-]*)(?:\.(?:0|[1-9]\d*|\d*[a-zA-Z-][0-9a-zA-Z-]*))*))?(?:\+([0-9a-zA-Z-]+(?:\.[0-9a-zA-Z-]+)*))?$",
    )
    .expect("a literal, valid regex")
});

impl SemVer {
    fn parse(text: &str) -> Result<SemVer, String> {
        let invalid = || format!("{text} is not valid SemVer string");
        let caps = SEMVER.captures(text).ok_or_else(invalid)?;
        let number = |i: usize| -> Result<u64, String> {
            caps.get(i)
                .map(|m| m.as_str())
                .unwrap_or_default()
                .parse()
                .map_err(|_| invalid())
        };
        Ok(SemVer {
            major: number(1)?,
            minor: number(2)?,
            patch: number(3)?,
            prerelease: caps.get(4).map(|m| m.as_str().to_string()),
            build: caps.get(5).map(|m| m.as_str().to_string()),
        })
    }

    /// python-semver's `compare`: numbers, then prerelease (a version without one is greater);
    /// build metadata is ignored.
    fn compare(&self, other: &SemVer) -> Ordering {
        let numbers =
            (self.major, self.minor, self.patch).cmp(&(other.major, other.minor, other.patch));
        if numbers != Ordering::Equal {
            return numbers;
        }
        let (a, b) = (
            self.prerelease.as_deref().unwrap_or(""),
            other.prerelease.as_deref().unwrap_or(""),
        );
        let natural = nat_cmp(a, b);
        if natural == Ordering::Equal {
            return Ordering::Equal;
        }
        match (a.is_empty(), b.is_empty()) {
            (true, _) => Ordering::Greater,
            (_, true) => Ordering::Less,
            _ => natural,
        }
    }
}

/// python-semver's `_nat_cmp`: dot-separated parts, numbers below words; when one list of
/// parts runs out, the longer text is greater.
fn nat_cmp(a: &str, b: &str) -> Ordering {
    for (x, y) in a.split('.').zip(b.split('.')) {
        let number = |s: &str| {
            (!s.is_empty() && s.bytes().all(|c| c.is_ascii_digit()))
                .then(|| s.parse::<u128>().ok())
                .flatten()
        };
        let order = match (number(x), number(y)) {
            (Some(p), Some(q)) => p.cmp(&q),
            (Some(_), None) => Ordering::Less,
            (None, Some(_)) => Ordering::Greater,
            (None, None) => x.cmp(y),
        };
        if order != Ordering::Equal {
            return order;
        }
    }
    a.len().cmp(&b.len())
}

impl std::fmt::Display for SemVer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}.{}.{}", self.major, self.minor, self.patch)?;
        if let Some(p) = &self.prerelease {
            write!(f, "-{p}")?;
        }
        if let Some(b) = &self.build {
            write!(f, "+{b}")?;
        }
        Ok(())
    }
}

fn semver_arg(a: &Args, i: usize) -> Result<SemVer, String> {
    SemVer::parse(a.str(i)?).or_else(|e| a.arg_fail(i, format!("is invalid: {e}")))
}

fn compared(a: &Args) -> Result<Ordering, String> {
    Ok(semver_arg(a, 0)?.compare(&semver_arg(a, 1)?))
}

fn version_compare(a: &Args) -> Result<Value, String> {
    Ok(Value::from(compared(a)? as i64))
}

fn version_more_than(a: &Args) -> Result<Value, String> {
    Ok(Value::Bool(compared(a)? == Ordering::Greater))
}

fn version_less_than(a: &Args) -> Result<Value, String> {
    Ok(Value::Bool(compared(a)? == Ordering::Less))
}

fn version_equal(a: &Args) -> Result<Value, String> {
    Ok(Value::Bool(compared(a)? == Ordering::Equal))
}

/// python-semver's `match`: `<`, `>`, `==`, `<=`, `>=`, `!=` and a version; a bare version
/// means `==`.
fn version_match(a: &Args) -> Result<Value, String> {
    let version = semver_arg(a, 0)?;
    let expr = a.str(1)?;
    let (op, rest) = if let Some(op) = ["<=", ">=", "==", "!="]
        .iter()
        .find(|op| expr.starts_with(**op))
    {
        (*op, &expr[2..])
    } else if let Some(op) = ["<", ">"].iter().find(|op| expr.starts_with(**op)) {
        (*op, &expr[1..])
    } else if expr.starts_with(|c: char| c.is_ascii_digit()) {
        ("==", expr)
    } else {
        return a.arg_fail(
            1,
            format!(
                "should be in format <op><ver>, where <op> is one of ['<', '>', '==', '<=', '>=', '!=']. You provided: {expr:?}"
            ),
        );
    };
    let other = SemVer::parse(rest).or_else(|e| a.arg_fail(1, format!("is invalid: {e}")))?;
    let order = version.compare(&other);
    let hit = match op {
        "<" => order == Ordering::Less,
        ">" => order == Ordering::Greater,
        "==" => order == Ordering::Equal,
        "!=" => order != Ordering::Equal,
        "<=" => order != Ordering::Greater,
        _ => order != Ordering::Less,
    };
    Ok(Value::Bool(hit))
}

fn bumped(a: &Args, bump: fn(&mut SemVer)) -> Result<Value, String> {
    let mut v = semver_arg(a, 0)?;
    bump(&mut v);
    v.prerelease = None;
    v.build = None;
    Ok(Value::String(v.to_string()))
}

fn version_bump_major(a: &Args) -> Result<Value, String> {
    bumped(a, |v| {
        v.major += 1;
        v.minor = 0;
        v.patch = 0;
    })
}

fn version_bump_minor(a: &Args) -> Result<Value, String> {
    bumped(a, |v| {
        v.minor += 1;
        v.patch = 0;
    })
}

fn version_bump_patch(a: &Args) -> Result<Value, String> {
    bumped(a, |v| v.patch += 1)
}

fn version_strip_patch(a: &Args) -> Result<Value, String> {
    let v = semver_arg(a, 0)?;
    Ok(Value::String(format!("{}.{}", v.major, v.minor)))
}

// --- orquesta/expressions/functions/common.py ----------------------------------------------

fn orquesta_json(a: &Args) -> Result<Value, String> {
    match a.get(0) {
        Value::Object(_) => Ok(a.get(0).clone()),
        Value::String(s) => {
            serde_json::from_str(s).or_else(|e| a.fail(format!("not valid JSON: {e}")))
        }
        _ => a.fail("Given object is not typeof string. (TypeError)"),
    }
}

fn orquesta_zip(a: &Args) -> Result<Value, String> {
    // None stands for an empty list; a single argument comes back as it is.
    let lists: Vec<Value> = a
        .rest
        .iter()
        .map(|v| {
            if v.is_null() {
                Value::Array(Vec::new())
            } else {
                v.clone()
            }
        })
        .collect();
    if let [only] = lists.as_slice() {
        return Ok(only.clone());
    }
    let mut columns = Vec::new();
    for (i, list) in lists.iter().enumerate() {
        columns.push(match list {
            Value::Array(items) => items.clone(),
            Value::String(s) => s.chars().map(|c| Value::String(c.to_string())).collect(),
            Value::Object(m) => m.keys().map(|k| Value::String(k.clone())).collect(),
            other => {
                return a.fail(format!(
                    "argument {} is not iterable ('{}' object)",
                    i + 1,
                    py_type(other)
                ))
            }
        });
    }
    let rows = columns.iter().map(Vec::len).max().unwrap_or(0);
    let pad = a.get(0);
    Ok(Value::Array(
        (0..rows)
            .map(|r| {
                Value::Array(
                    columns
                        .iter()
                        .map(|c| c.get(r).cloned().unwrap_or_else(|| pad.clone()))
                        .collect(),
                )
            })
            .collect(),
    ))
}

// --- Python's json.dumps -------------------------------------------------------------------

struct JsonStyle<'a> {
    indent: Option<String>,
    item: &'a str,
    key: &'a str,
    sort_keys: bool,
}

fn python_json(value: &Value, style: &JsonStyle, level: usize, out: &mut String) {
    match value {
        Value::Null => out.push_str("null"),
        Value::Bool(true) => out.push_str("true"),
        Value::Bool(false) => out.push_str("false"),
        Value::Number(n) if n.is_f64() => out.push_str(&squall_yaql::python_repr(value)),
        Value::Number(n) => out.push_str(&n.to_string()),
        Value::String(s) => json_string(s, out),
        Value::Array(items) if items.is_empty() => out.push_str("[]"),
        Value::Object(map) if map.is_empty() => out.push_str("{}"),
        Value::Array(items) => {
            out.push('[');
            for (i, item) in items.iter().enumerate() {
                separate(style, level, i == 0, out);
                python_json(item, style, level + 1, out);
            }
            close(style, level, out);
            out.push(']');
        }
        Value::Object(map) => {
            out.push('{');
            let mut entries: Vec<(&String, &Value)> = map.iter().collect();
            if style.sort_keys {
                entries.sort_by(|x, y| x.0.cmp(y.0));
            }
            for (i, (k, v)) in entries.into_iter().enumerate() {
                separate(style, level, i == 0, out);
                json_string(k, out);
                out.push_str(style.key);
                python_json(v, style, level + 1, out);
            }
            close(style, level, out);
            out.push('}');
        }
    }
}

fn separate(style: &JsonStyle, level: usize, first: bool, out: &mut String) {
    if !first {
        out.push_str(style.item);
    }
    if let Some(indent) = &style.indent {
        out.push('\n');
        out.push_str(&indent.repeat(level + 1));
    }
}

fn close(style: &JsonStyle, level: usize, out: &mut String) {
    if let Some(indent) = &style.indent {
        out.push('\n');
        out.push_str(&indent.repeat(level));
    }
}

/// A JSON string as Python's json.dumps writes it with `ensure_ascii`.
fn json_string(s: &str, out: &mut String) {
    out.push('"');
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push_str("\\t"),
            '\x08' => out.push_str("\\b"),
            '\x0c' => out.push_str("\\f"),
            ' '..='~' => out.push(c),
            _ => {
                let mut units = [0u16; 2];
                for unit in c.encode_utf16(&mut units) {
                    out.push_str(&format!("\\u{unit:04x}"));
                }
            }
        }
    }
    out.push('"');
}

// --- YAML 1.1 as PyYAML's safe loader and dumper read and write it -------------------------

/// What PyYAML's resolver makes of a plain scalar.
#[derive(Debug, Clone, Copy, PartialEq)]
enum YamlTag {
    Null,
    Bool,
    Int,
    Float,
    Timestamp,
    Merge,
    Value,
    Str,
}

static YAML_BOOL: LazyLock<Regex> = LazyLock::new(|| {
    Regex::new(r"^(?:yes|Yes|YES|no|No|NO|true|True|TRUE|false|False|FALSE|on|On|ON|off|Off|OFF)$")
        .expect("a literal, valid regex")
});
static YAML_FLOAT: LazyLock<Regex> = LazyLock::new(|| {
    Regex::new(
        r"^(?:[-+]?(?:[0-9][0-9_]*)\.[0-9_]*(?:[eE][-+][0-9]+)?|\.[0-9][0-9_]*(?:[eE][-+][0-9]+)?|[-+]?[0-9][0-9_]*(?::[0-5]?[0-9])+\.[0-9_]*|[-+]?\.(?:inf|Inf|INF)|\.(?:nan|NaN|NAN))$",
    )
    .expect("a literal, valid regex")
});
static YAML_INT: LazyLock<Regex> = LazyLock::new(|| {
    Regex::new(
        r"^(?:[-+]?0b[0-1_]+|[-+]?0[0-7_]+|[-+]?(?:0|[1-9][0-9_]*)|[-+]?0x[0-9a-fA-F_]+|[-+]?[1-9][0-9_]*(?::[0-5]?[0-9])+)$",
    )
    .expect("a literal, valid regex")
});
static YAML_TIMESTAMP: LazyLock<Regex> = LazyLock::new(|| {
    Regex::new(
        r"^(?:[0-9][0-9][0-9][0-9]-[0-9][0-9]-[0-9][0-9]|[0-9][0-9][0-9][0-9]-[0-9][0-9]?-[0-9][0-9]?(?:[Tt]|[ \t]+)[0-9][0-9]?:[0-9][0-9]:[0-9][0-9](?:\.[0-9]*)?(?:[ \t]*(?:Z|[-+][0-9][0-9]?(?::[0-9][0-9])?))?)$",
    )
    .expect("a literal, valid regex")
});

/// PyYAML's implicit resolvers, in their order. Python's `$` also matches before a final
/// newline, hence the one newline dropped.
fn yaml_resolve(text: &str) -> YamlTag {
    let s = text.strip_suffix('\n').unwrap_or(text);
    if YAML_BOOL.is_match(s) {
        YamlTag::Bool
    } else if YAML_FLOAT.is_match(s) {
        YamlTag::Float
    } else if YAML_INT.is_match(s) {
        YamlTag::Int
    } else if s == "<<" {
        YamlTag::Merge
    } else if matches!(s, "~" | "null" | "Null" | "NULL" | "") {
        YamlTag::Null
    } else if YAML_TIMESTAMP.is_match(s) {
        YamlTag::Timestamp
    } else if s == "=" {
        YamlTag::Value
    } else {
        YamlTag::Str
    }
}

/// A plain scalar as PyYAML's SafeConstructor builds it. A timestamp stays its text: JSON has
/// no dates.
fn yaml_plain(text: &str) -> Result<Value, String> {
    let float = |f: f64| {
        Number::from_f64(f)
            .map(Value::Number)
            .ok_or_else(|| format!("{text:?} is not a finite number"))
    };
    match yaml_resolve(text) {
        YamlTag::Null => Ok(Value::Null),
        YamlTag::Bool => Ok(Value::Bool(matches!(
            text.trim_end().to_ascii_lowercase().as_str(),
            "yes" | "true" | "on"
        ))),
        YamlTag::Int => {
            let clean: String = text.trim_end().chars().filter(|c| *c != '_').collect();
            let (negative, digits) = match clean.strip_prefix('-') {
                Some(rest) => (true, rest),
                None => (false, clean.strip_prefix('+').unwrap_or(&clean)),
            };
            let magnitude: Option<i128> = if digits == "0" {
                Some(0)
            } else if let Some(b) = digits.strip_prefix("0b") {
                i128::from_str_radix(b, 2).ok()
            } else if let Some(h) = digits.strip_prefix("0x") {
                i128::from_str_radix(h, 16).ok()
            } else if digits.contains(':') {
                digits.split(':').try_fold(0i128, |acc, part| {
                    acc.checked_mul(60)?.checked_add(part.parse::<i128>().ok()?)
                })
            } else if let Some(o) = digits.strip_prefix('0') {
                i128::from_str_radix(o, 8).ok()
            } else {
                digits.parse().ok()
            };
            let n = magnitude
                .map(|m| if negative { -m } else { m })
                .ok_or_else(|| format!("{text:?} is too large an integer"))?;
            if let Ok(i) = i64::try_from(n) {
                Ok(Value::from(i))
            } else if let Ok(u) = u64::try_from(n) {
                Ok(Value::from(u))
            } else {
                Err(format!("{text:?} is too large an integer"))
            }
        }
        YamlTag::Float => {
            let clean: String = text
                .trim_end()
                .chars()
                .filter(|c| *c != '_')
                .collect::<String>()
                .to_lowercase();
            let (sign, body) = match clean.strip_prefix('-') {
                Some(rest) => (-1.0, rest.to_string()),
                None => (1.0, clean.strip_prefix('+').unwrap_or(&clean).to_string()),
            };
            if body.contains(':') {
                let mut total = 0.0;
                for part in body.split(':') {
                    total = total * 60.0 + part.parse::<f64>().unwrap_or(0.0);
                }
                float(sign * total)
            } else {
                body.parse::<f64>()
                    .map_err(|_| format!("{text:?} is not a number"))
                    .and_then(|f| float(sign * f))
            }
        }
        YamlTag::Value => Err(format!(
            "could not determine a constructor for the tag 'tag:yaml.org,2002:value' ({text:?})"
        )),
        YamlTag::Timestamp | YamlTag::Merge | YamlTag::Str => Ok(Value::String(text.to_string())),
    }
}

/// `yaml.safe_load`: YAML 1.1 (`yes`, `off`, `0o17` as text, `010` octal, `1_000`). serde_yaml
/// reads the document twice: once for its shape, then each scalar as written, so that plain
/// scalars can be resolved as PyYAML does and quoted ones stay strings.
fn yaml_load(text: &str) -> Result<Value, String> {
    use serde::de::DeserializeSeed;
    let shape: serde_yaml::Value = serde_yaml::from_str(text).map_err(|e| e.to_string())?;
    let de = serde_yaml::Deserializer::from_str(text);
    match (Guided {
        shape: &shape,
        source: text,
    })
    .deserialize(de)
    {
        Ok(v) => Ok(v),
        // A document with no node (empty, or only comments) has no scalar to read again.
        Err(_) if shape.is_null() => Ok(Value::Null),
        Err(e) => Err(e.to_string()),
    }
}

/// serde_yaml's own reading of a node, for tagged nodes PyYAML's safe loader would refuse.
fn yaml_as_json(v: &serde_yaml::Value) -> Value {
    match v {
        serde_yaml::Value::Null => Value::Null,
        serde_yaml::Value::Bool(b) => Value::Bool(*b),
        serde_yaml::Value::Number(n) => {
            if let Some(i) = n.as_i64() {
                Value::from(i)
            } else if let Some(u) = n.as_u64() {
                Value::from(u)
            } else {
                n.as_f64()
                    .and_then(Number::from_f64)
                    .map(Value::Number)
                    .unwrap_or(Value::Null)
            }
        }
        serde_yaml::Value::String(s) => Value::String(s.clone()),
        serde_yaml::Value::Sequence(items) => {
            Value::Array(items.iter().map(yaml_as_json).collect())
        }
        serde_yaml::Value::Mapping(m) => Value::Object(
            m.iter()
                .map(|(k, v)| (json_key(&yaml_as_json(k)), yaml_as_json(v)))
                .collect(),
        ),
        serde_yaml::Value::Tagged(t) => yaml_as_json(&t.value),
    }
}

/// A mapping key as JSON text: JSON's spelling of numbers, booleans and null.
fn json_key(key: &Value) -> String {
    match key {
        Value::String(s) => s.clone(),
        other => python_json_dumps(other),
    }
}

struct Guided<'s> {
    shape: &'s serde_yaml::Value,
    source: &'s str,
}

impl<'de, 's> serde::de::DeserializeSeed<'de> for Guided<'s> {
    type Value = Value;

    fn deserialize<D: serde::Deserializer<'de>>(self, d: D) -> Result<Value, D::Error> {
        match self.shape {
            serde_yaml::Value::Sequence(items) => d.deserialize_seq(SeqGuide {
                items,
                source: self.source,
            }),
            serde_yaml::Value::Mapping(map) => d.deserialize_map(MapGuide {
                map,
                source: self.source,
            }),
            serde_yaml::Value::Tagged(_) => {
                serde::de::IgnoredAny::deserialize(d)?;
                Ok(yaml_as_json(self.shape))
            }
            _ => d.deserialize_str(ScalarGuide {
                source: self.source,
            }),
        }
    }
}

struct ScalarGuide<'s> {
    source: &'s str,
}

impl<'de> serde::de::Visitor<'de> for ScalarGuide<'_> {
    type Value = Value;

    fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
        f.write_str("a scalar")
    }

    fn visit_borrowed_str<E: serde::de::Error>(self, v: &'de str) -> Result<Value, E> {
        // serde_yaml lends a scalar's text out of the document: a quoted one sits between its
        // quotes, a plain one is its own text.
        let start = (v.as_ptr() as usize).wrapping_sub(self.source.as_ptr() as usize);
        let bytes = self.source.as_bytes();
        let before = start.checked_sub(1).and_then(|i| bytes.get(i));
        let after = bytes.get(start + v.len());
        let quoted = matches!(before, Some(b'\'' | b'"')) && before == after;
        if quoted {
            Ok(Value::String(v.to_string()))
        } else {
            yaml_plain(v).map_err(E::custom)
        }
    }

    fn visit_str<E: serde::de::Error>(self, v: &str) -> Result<Value, E> {
        // Text serde_yaml could not lend is quoted with escapes, a block scalar, or plain over
        // several lines: none of them resolves to anything but a string, save the empty one.
        if v.is_empty() {
            return Ok(Value::Null);
        }
        Ok(Value::String(v.to_string()))
    }
}

struct SeqGuide<'s> {
    items: &'s [serde_yaml::Value],
    source: &'s str,
}

impl<'de> serde::de::Visitor<'de> for SeqGuide<'_> {
    type Value = Value;

    fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
        f.write_str("a sequence")
    }

    fn visit_seq<A: serde::de::SeqAccess<'de>>(self, mut seq: A) -> Result<Value, A::Error> {
        let mut out = Vec::with_capacity(self.items.len());
        for shape in self.items {
            let item = seq.next_element_seed(Guided {
                shape,
                source: self.source,
            })?;
            out.push(item.unwrap_or(Value::Null));
        }
        Ok(Value::Array(out))
    }
}

struct MapGuide<'s> {
    map: &'s serde_yaml::Mapping,
    source: &'s str,
}

impl<'de> serde::de::Visitor<'de> for MapGuide<'_> {
    type Value = Value;

    fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
        f.write_str("a mapping")
    }

    fn visit_map<A: serde::de::MapAccess<'de>>(self, mut access: A) -> Result<Value, A::Error> {
        let mut merged: Vec<(String, Value)> = Vec::new();
        let mut own: Vec<(String, Value)> = Vec::new();
        for (k, v) in self.map {
            let key = access
                .next_key_seed(Guided {
                    shape: k,
                    source: self.source,
                })?
                .unwrap_or(Value::Null);
            let value = access.next_value_seed(Guided {
                shape: v,
                source: self.source,
            })?;
            // PyYAML's merge key: `<<: *base` (or a list of them) puts the merged mappings'
            // pairs first, the last of a list first of all, so the mapping's own pairs win.
            if k.as_str() == Some("<<") {
                let sources = match &value {
                    Value::Object(_) => vec![value.clone()],
                    Value::Array(items) => items.iter().rev().cloned().collect(),
                    _ => Vec::new(),
                };
                if !sources.is_empty() && sources.iter().all(Value::is_object) {
                    for m in sources {
                        if let Value::Object(m) = m {
                            merged.extend(m);
                        }
                    }
                    continue;
                }
            }
            own.push((json_key(&key), value));
        }
        let mut out = Map::new();
        for (k, v) in merged.into_iter().chain(own) {
            out.insert(k, v);
        }
        Ok(Value::Object(out))
    }
}

/// `yaml.safe_dump(value, default_flow_style=False, allow_unicode=..., indent=...)`.
fn yaml_dump(value: &Value, indent: usize, allow_unicode: bool) -> String {
    let mut e = YamlEmitter {
        out: String::new(),
        column: 0,
        whitespace: true,
        indention: true,
        open_ended: false,
        indent: None,
        indents: Vec::new(),
        best_indent: indent,
        allow_unicode,
    };
    e.document(value);
    e.out
}

/// A scalar ready to write: its text and whether PyYAML's resolver would read the text back
/// as the same type when written plain.
struct YamlScalar {
    text: String,
    plain_implicit: bool,
}

fn yaml_scalar(value: &Value) -> YamlScalar {
    let (text, plain_implicit) = match value {
        Value::Null => ("null".to_string(), true),
        Value::Bool(b) => (b.to_string(), true),
        Value::Number(n) if n.is_f64() => {
            let mut t = squall_yaql::python_repr(value).to_lowercase();
            // PyYAML adds ".0" to exponent forms without a point (1e+17 -> 1.0e+17).
            if !t.contains('.') && t.contains('e') {
                t = t.replacen('e', ".0e", 1);
            }
            (t, true)
        }
        Value::Number(n) => (n.to_string(), true),
        Value::String(s) => (s.clone(), yaml_resolve(s) == YamlTag::Str),
        _ => (String::new(), false),
    };
    YamlScalar {
        text,
        plain_implicit,
    }
}

/// PyYAML's `Emitter.analyze_scalar`: which styles can carry the text.
struct Analysis {
    empty: bool,
    multiline: bool,
    allow_block_plain: bool,
    allow_single_quoted: bool,
}

fn is_break(c: char) -> bool {
    matches!(c, '\n' | '\u{85}' | '\u{2028}' | '\u{2029}')
}

fn is_space_or_end(c: Option<&char>) -> bool {
    matches!(
        c,
        None | Some('\0' | ' ' | '\t' | '\r' | '\n' | '\u{85}' | '\u{2028}' | '\u{2029}')
    )
}

fn analyze(text: &str, allow_unicode: bool) -> Analysis {
    if text.is_empty() {
        return Analysis {
            empty: true,
            multiline: false,
            allow_block_plain: true,
            allow_single_quoted: true,
        };
    }
    let chars: Vec<char> = text.chars().collect();
    let mut block_indicators = text.starts_with("---") || text.starts_with("...");
    let mut line_breaks = false;
    let mut special = false;
    let (mut leading_space, mut leading_break) = (false, false);
    let (mut trailing_space, mut trailing_break) = (false, false);
    let (mut break_space, mut space_break) = (false, false);
    let mut preceded_by_whitespace = true;
    let mut followed_by_whitespace = chars.len() == 1 || is_space_or_end(chars.get(1));
    let (mut previous_space, mut previous_break) = (false, false);
    for (index, &ch) in chars.iter().enumerate() {
        if index == 0 {
            if "#,[]{}&*!|>'\"%@`".contains(ch) {
                block_indicators = true;
            }
            if (ch == '?' || ch == ':' || ch == '-') && followed_by_whitespace {
                block_indicators = true;
            }
        } else if (ch == ':' && followed_by_whitespace) || (ch == '#' && preceded_by_whitespace) {
            block_indicators = true;
        }
        if is_break(ch) {
            line_breaks = true;
        }
        if !(ch == '\n' || (' '..='~').contains(&ch)) {
            let unicode = (ch == '\u{85}'
                || ('\u{a0}'..='\u{d7ff}').contains(&ch)
                || ('\u{e000}'..='\u{fffd}').contains(&ch)
                || ('\u{10000}'..'\u{10ffff}').contains(&ch))
                && ch != '\u{feff}';
            if !unicode || !allow_unicode {
                special = true;
            }
        }
        if ch == ' ' {
            leading_space |= index == 0;
            trailing_space |= index == chars.len() - 1;
            break_space |= previous_break;
            previous_space = true;
            previous_break = false;
        } else if is_break(ch) {
            leading_break |= index == 0;
            trailing_break |= index == chars.len() - 1;
            space_break |= previous_space;
            previous_space = false;
            previous_break = true;
        } else {
            previous_space = false;
            previous_break = false;
        }
        preceded_by_whitespace = is_space_or_end(Some(&ch));
        followed_by_whitespace = is_space_or_end(chars.get(index + 2));
    }
    let mut allow_block_plain = true;
    let mut allow_single_quoted = true;
    if leading_space || leading_break || trailing_space || trailing_break {
        allow_block_plain = false;
    }
    if break_space {
        allow_block_plain = false;
        allow_single_quoted = false;
    }
    // A space before a line break, or a character YAML cannot print, needs double quotes.
    if space_break || special {
        allow_block_plain = false;
        allow_single_quoted = false;
    }
    if line_breaks || block_indicators {
        allow_block_plain = false;
    }
    Analysis {
        empty: false,
        multiline: line_breaks,
        allow_block_plain,
        allow_single_quoted,
    }
}

/// The part of PyYAML's `Emitter` that block-style `safe_dump` output goes through, with its
/// state (column, whitespace, indention, indents) kept as PyYAML keeps it, so that lines wrap
/// at 80 columns where PyYAML wraps them.
struct YamlEmitter {
    out: String,
    column: usize,
    whitespace: bool,
    indention: bool,
    open_ended: bool,
    indent: Option<usize>,
    indents: Vec<Option<usize>>,
    best_indent: usize,
    allow_unicode: bool,
}

const BEST_WIDTH: usize = 80;

#[derive(Clone, Copy, Default)]
struct NodeContext {
    root: bool,
    mapping: bool,
    simple_key: bool,
}

impl YamlEmitter {
    fn document(&mut self, value: &Value) {
        self.node(
            value,
            NodeContext {
                root: true,
                ..NodeContext::default()
            },
        );
        self.write_indent();
        if self.open_ended {
            self.write_indicator("...", true, false, false);
            self.write_indent();
        }
    }

    fn write(&mut self, data: &str) {
        self.column += data.chars().count();
        self.out.push_str(data);
    }

    fn write_indicator(
        &mut self,
        indicator: &str,
        need_whitespace: bool,
        whitespace: bool,
        indention: bool,
    ) {
        if !self.whitespace && need_whitespace {
            self.write(" ");
        }
        self.write(indicator);
        self.whitespace = whitespace;
        self.indention = self.indention && indention;
        self.open_ended = false;
    }

    fn write_line_break(&mut self) {
        self.whitespace = true;
        self.indention = true;
        self.column = 0;
        self.out.push('\n');
    }

    fn write_indent(&mut self) {
        let indent = self.indent.unwrap_or(0);
        if !self.indention || self.column > indent || (self.column == indent && !self.whitespace) {
            self.write_line_break();
        }
        if self.column < indent {
            self.whitespace = true;
            let pad = " ".repeat(indent - self.column);
            self.write(&pad);
        }
    }

    fn increase_indent(&mut self, flow: bool, indentless: bool) {
        self.indents.push(self.indent);
        self.indent = match self.indent {
            None if flow => Some(self.best_indent),
            None => Some(0),
            Some(i) if !indentless => Some(i + self.best_indent),
            same => same,
        };
    }

    fn pop_indent(&mut self) {
        self.indent = self.indents.pop().flatten();
    }

    fn node(&mut self, value: &Value, ctx: NodeContext) {
        match value {
            Value::Array(items) if items.is_empty() => self.empty_flow("[", "]"),
            Value::Object(map) if map.is_empty() => self.empty_flow("{", "}"),
            Value::Array(items) => {
                let indentless = ctx.mapping && !self.indention;
                self.increase_indent(false, indentless);
                for item in items {
                    self.write_indent();
                    self.write_indicator("-", true, false, true);
                    self.node(item, NodeContext::default());
                }
                self.pop_indent();
            }
            Value::Object(map) => {
                self.increase_indent(false, false);
                let mut entries: Vec<(&String, &Value)> = map.iter().collect();
                entries.sort_by(|x, y| x.0.cmp(y.0));
                for (k, v) in entries {
                    self.write_indent();
                    let key = Value::String(k.clone());
                    let analysis = analyze(k, self.allow_unicode);
                    let simple = k.chars().count() < 128 && !analysis.empty && !analysis.multiline;
                    let value_ctx = NodeContext {
                        mapping: true,
                        ..NodeContext::default()
                    };
                    if simple {
                        self.node(
                            &key,
                            NodeContext {
                                mapping: true,
                                simple_key: true,
                                ..NodeContext::default()
                            },
                        );
                        self.write_indicator(":", false, false, false);
                    } else {
                        self.write_indicator("?", true, false, true);
                        self.node(&key, value_ctx);
                        self.write_indent();
                        self.write_indicator(":", true, false, true);
                    }
                    self.node(v, value_ctx);
                }
                self.pop_indent();
            }
            scalar => {
                self.increase_indent(true, false);
                self.scalar(&yaml_scalar(scalar), ctx);
                self.pop_indent();
            }
        }
    }

    fn empty_flow(&mut self, open: &str, close: &str) {
        self.write_indicator(open, true, true, false);
        self.write_indicator(close, false, false, false);
    }

    fn scalar(&mut self, scalar: &YamlScalar, ctx: NodeContext) {
        let analysis = analyze(&scalar.text, self.allow_unicode);
        let split = !ctx.simple_key;
        let plain = scalar.plain_implicit
            && !(ctx.simple_key && (analysis.empty || analysis.multiline))
            && analysis.allow_block_plain;
        if plain {
            self.write_plain(&scalar.text, split, ctx.root);
        } else if analysis.allow_single_quoted && !(ctx.simple_key && analysis.multiline) {
            self.write_single_quoted(&scalar.text, split);
        } else {
            self.write_double_quoted(&scalar.text, split);
        }
    }

    fn write_plain(&mut self, text: &str, split: bool, root: bool) {
        if root {
            self.open_ended = true;
        }
        if text.is_empty() {
            return;
        }
        if !self.whitespace {
            self.write(" ");
        }
        self.whitespace = false;
        self.indention = false;
        let chars: Vec<char> = text.chars().collect();
        let mut spaces = false;
        let mut start = 0;
        for end in 0..=chars.len() {
            let ch = chars.get(end).copied();
            if spaces {
                if ch != Some(' ') {
                    if start + 1 == end && self.column > BEST_WIDTH && split {
                        self.write_indent();
                        self.whitespace = false;
                        self.indention = false;
                    } else {
                        let data: String = chars[start..end].iter().collect();
                        self.write(&data);
                    }
                    start = end;
                }
            } else if ch.is_none() || ch == Some(' ') {
                let data: String = chars[start..end].iter().collect();
                self.write(&data);
                start = end;
            }
            if let Some(c) = ch {
                spaces = c == ' ';
            }
        }
    }

    fn write_single_quoted(&mut self, text: &str, split: bool) {
        self.write_indicator("'", true, false, false);
        let chars: Vec<char> = text.chars().collect();
        let (mut spaces, mut breaks) = (false, false);
        let mut start = 0;
        for end in 0..=chars.len() {
            let ch = chars.get(end).copied();
            if spaces {
                if ch != Some(' ') {
                    if start + 1 == end
                        && self.column > BEST_WIDTH
                        && split
                        && start != 0
                        && end != chars.len()
                    {
                        self.write_indent();
                    } else {
                        let data: String = chars[start..end].iter().collect();
                        self.write(&data);
                    }
                    start = end;
                }
            } else if breaks {
                if !ch.is_some_and(is_break) {
                    if chars[start] == '\n' {
                        self.write_line_break();
                    }
                    for &br in &chars[start..end] {
                        if br == '\n' {
                            self.write_line_break();
                        } else {
                            self.whitespace = true;
                            self.indention = true;
                            self.column = 0;
                            self.out.push(br);
                        }
                    }
                    self.write_indent();
                    start = end;
                }
            } else if (ch.is_none()
                || ch == Some(' ')
                || ch.is_some_and(is_break)
                || ch == Some('\''))
                && start < end
            {
                let data: String = chars[start..end].iter().collect();
                self.write(&data);
                start = end;
            }
            if ch == Some('\'') {
                self.write("''");
                start = end + 1;
            }
            if let Some(c) = ch {
                spaces = c == ' ';
                breaks = is_break(c);
            }
        }
        self.write_indicator("'", false, false, false);
    }

    fn write_double_quoted(&mut self, text: &str, split: bool) {
        self.write_indicator("\"", true, false, false);
        let chars: Vec<char> = text.chars().collect();
        let mut start = 0;
        for end in 0..=chars.len() {
            let ch = chars.get(end).copied();
            let plain_char = |c: char| {
                (' '..='~').contains(&c)
                    || (self.allow_unicode
                        && (('\u{a0}'..='\u{d7ff}').contains(&c)
                            || ('\u{e000}'..='\u{fffd}').contains(&c)))
            };
            let escape = match ch {
                None => true,
                Some(c) => "\"\\\u{85}\u{2028}\u{2029}\u{feff}".contains(c) || !plain_char(c),
            };
            if escape {
                if start < end {
                    let data: String = chars[start..end].iter().collect();
                    self.write(&data);
                    start = end;
                }
                if let Some(c) = ch {
                    let data = match c {
                        '\0' => "\\0".to_string(),
                        '\x07' => "\\a".to_string(),
                        '\x08' => "\\b".to_string(),
                        '\t' => "\\t".to_string(),
                        '\n' => "\\n".to_string(),
                        '\x0b' => "\\v".to_string(),
                        '\x0c' => "\\f".to_string(),
                        '\r' => "\\r".to_string(),
                        '\x1b' => "\\e".to_string(),
                        '"' => "\\\"".to_string(),
                        '\\' => "\\\\".to_string(),
                        '\u{85}' => "\\N".to_string(),
                        '\u{a0}' => "\\_".to_string(),
                        '\u{2028}' => "\\L".to_string(),
                        '\u{2029}' => "\\P".to_string(),
                        c if (c as u32) <= 0xff => format!("\\x{:02X}", c as u32),
                        c if (c as u32) <= 0xffff => format!("\\u{:04X}", c as u32),
                        c => format!("\\U{:08X}", c as u32),
                    };
                    self.write(&data);
                    start = end + 1;
                }
            }
            if 0 < end
                && end + 1 < chars.len()
                && (ch == Some(' ') || start >= end)
                && self.column + end.saturating_sub(start) > BEST_WIDTH
                && split
            {
                let mut data: String = chars[start.min(end)..end].iter().collect();
                data.push('\\');
                if start < end {
                    start = end;
                }
                self.write(&data);
                self.write_indent();
                self.whitespace = false;
                self.indention = false;
                if chars.get(start) == Some(&' ') {
                    self.write("\\");
                }
            }
        }
        self.write_indicator("\"", false, false, false);
    }
}

// --- JSONPath as jsonpath_rw reads and runs it ---------------------------------------------

/// A matched value and the datum it was found in (jsonpath_rw's `DatumInContext`).
struct Datum<'a> {
    value: std::borrow::Cow<'a, Value>,
    context: Option<Rc<Datum<'a>>>,
}

#[derive(Debug, Clone, PartialEq)]
enum JsonPath {
    Root,
    This,
    Parent,
    Fields(Vec<String>),
    Index(i64),
    Slice(Option<i64>, Option<i64>),
    Child(Box<JsonPath>, Box<JsonPath>),
    Descendants(Box<JsonPath>, Box<JsonPath>),
    Union(Box<JsonPath>, Box<JsonPath>),
    Intersect(Box<JsonPath>, Box<JsonPath>),
    Where(Box<JsonPath>, Box<JsonPath>),
}

#[derive(Debug, Clone, PartialEq)]
enum PathTok {
    Id(String),
    Num(i64),
    Named(String),
    Where,
    DoubleDot,
    Sym(char),
}

fn path_lex(src: &str) -> Result<Vec<PathTok>, String> {
    let chars: Vec<char> = src.chars().collect();
    let mut out = Vec::new();
    let mut i = 0;
    while i < chars.len() {
        let c = chars[i];
        if c == ' ' || c == '\t' {
            i += 1;
        } else if c == '.' && chars.get(i + 1) == Some(&'.') {
            out.push(PathTok::DoubleDot);
            i += 2;
        } else if "*.[]()$,:|&".contains(c) {
            out.push(PathTok::Sym(c));
            i += 1;
        } else if c.is_ascii_digit()
            || (c == '-' && chars.get(i + 1).is_some_and(char::is_ascii_digit))
        {
            let start = i;
            i += 1;
            while i < chars.len() && chars[i].is_ascii_digit() {
                i += 1;
            }
            let text: String = chars[start..i].iter().collect();
            out.push(PathTok::Num(
                text.parse().map_err(|_| format!("bad number {text}"))?,
            ));
        } else if c.is_ascii_alphabetic() || c == '_' || c == '@' {
            let start = i;
            while i < chars.len() && (chars[i].is_ascii_alphanumeric() || "_@-".contains(chars[i]))
            {
                i += 1;
            }
            let word: String = chars[start..i].iter().collect();
            out.push(if word == "where" {
                PathTok::Where
            } else {
                PathTok::Id(word)
            });
        } else if c == '\'' || c == '"' || c == '`' {
            let mut text = String::new();
            i += 1;
            loop {
                match chars.get(i) {
                    None => return Err(format!("unterminated {c} at {i}")),
                    Some('\\') => {
                        if let Some(n) = chars.get(i + 1) {
                            text.push(*n);
                        }
                        i += 2;
                    }
                    Some(&q) if q == c => {
                        i += 1;
                        break;
                    }
                    Some(&other) => {
                        text.push(other);
                        i += 1;
                    }
                }
            }
            out.push(if c == '`' {
                PathTok::Named(text)
            } else {
                PathTok::Id(text)
            });
        } else {
            return Err(format!("unexpected character {c:?} at {i}"));
        }
    }
    Ok(out)
}

struct PathParser {
    toks: Vec<PathTok>,
    pos: usize,
}

impl PathParser {
    fn peek(&self) -> Option<&PathTok> {
        self.toks.get(self.pos)
    }

    fn next(&mut self) -> Option<PathTok> {
        let t = self.toks.get(self.pos).cloned();
        self.pos += 1;
        t
    }

    fn expect(&mut self, c: char) -> Result<(), String> {
        match self.next() {
            Some(PathTok::Sym(s)) if s == c => Ok(()),
            other => Err(format!("expected '{c}', found {other:?}")),
        }
    }

    /// jsonpath_rw's precedence, loosest first: `..`, `.`, `|`, `&`, `where`; all left
    /// associative; brackets bind tightest.
    fn expr(&mut self, min: u8) -> Result<JsonPath, String> {
        let mut left = self.postfix()?;
        loop {
            let (power, op) = match self.peek() {
                Some(PathTok::DoubleDot) => (1, ".."),
                Some(PathTok::Sym('.')) => (2, "."),
                Some(PathTok::Sym('|')) => (3, "|"),
                Some(PathTok::Sym('&')) => (4, "&"),
                Some(PathTok::Where) => (5, "where"),
                _ => break,
            };
            if power <= min {
                break;
            }
            self.pos += 1;
            let right = Box::new(self.expr(power)?);
            let l = Box::new(left);
            left = match op {
                ".." => JsonPath::Descendants(l, right),
                "." => JsonPath::Child(l, right),
                "|" => JsonPath::Union(l, right),
                "&" => JsonPath::Intersect(l, right),
                _ => JsonPath::Where(l, right),
            };
        }
        Ok(left)
    }

    fn postfix(&mut self) -> Result<JsonPath, String> {
        let mut node = self.primary()?;
        while self.peek() == Some(&PathTok::Sym('[')) {
            self.pos += 1;
            let inner = self.bracket()?;
            node = JsonPath::Child(Box::new(node), Box::new(inner));
        }
        Ok(node)
    }

    fn fields(&mut self, first: String) -> Vec<String> {
        let mut names = vec![first];
        while self.peek() == Some(&PathTok::Sym(',')) {
            if let Some(PathTok::Id(next)) = self.toks.get(self.pos + 1).cloned() {
                self.pos += 2;
                names.push(next);
            } else {
                break;
            }
        }
        names
    }

    fn primary(&mut self) -> Result<JsonPath, String> {
        match self.next() {
            Some(PathTok::Id(name)) => Ok(JsonPath::Fields(self.fields(name))),
            Some(PathTok::Sym('*')) => Ok(JsonPath::Fields(vec!["*".into()])),
            Some(PathTok::Sym('$')) => Ok(JsonPath::Root),
            Some(PathTok::Named(n)) if n == "this" => Ok(JsonPath::This),
            Some(PathTok::Named(n)) if n == "parent" => Ok(JsonPath::Parent),
            Some(PathTok::Named(n)) => Err(format!("unknown named operator `{n}`")),
            Some(PathTok::Sym('[')) => self.bracket(),
            Some(PathTok::Sym('(')) => {
                let inner = self.expr(0)?;
                self.expect(')')?;
                Ok(inner)
            }
            other => Err(format!("unexpected {other:?}")),
        }
    }

    /// What follows `[`: `*`, an index, a slice `start:end`, or field names.
    fn bracket(&mut self) -> Result<JsonPath, String> {
        let node = match self.next() {
            Some(PathTok::Sym('*')) => JsonPath::Slice(None, None),
            Some(PathTok::Num(n)) if self.peek() == Some(&PathTok::Sym(':')) => {
                self.pos += 1;
                JsonPath::Slice(Some(n), self.maybe_int())
            }
            Some(PathTok::Num(n)) => JsonPath::Index(n),
            Some(PathTok::Sym(':')) => JsonPath::Slice(None, self.maybe_int()),
            Some(PathTok::Id(name)) => JsonPath::Fields(self.fields(name)),
            other => return Err(format!("unexpected {other:?} after '['")),
        };
        self.expect(']')?;
        Ok(node)
    }

    fn maybe_int(&mut self) -> Option<i64> {
        if let Some(PathTok::Num(n)) = self.peek().cloned() {
            self.pos += 1;
            Some(n)
        } else {
            None
        }
    }
}

type Found<'a> = Result<Vec<Rc<Datum<'a>>>, String>;

/// Python's `len()` of a value, where it has one.
fn py_len(v: &Value) -> Option<usize> {
    match v {
        Value::String(s) => Some(s.chars().count()),
        Value::Array(a) => Some(a.len()),
        Value::Object(m) => Some(m.len()),
        _ => None,
    }
}

fn child<'a>(value: std::borrow::Cow<'a, Value>, context: &Rc<Datum<'a>>) -> Rc<Datum<'a>> {
    Rc::new(Datum {
        value,
        context: Some(context.clone()),
    })
}

/// A borrowed part of a datum's value: borrowed from the document when the datum is.
fn part<'a>(
    datum: &Datum<'a>,
    pick: impl Fn(&Value) -> Option<&Value>,
) -> Option<std::borrow::Cow<'a, Value>> {
    match &datum.value {
        std::borrow::Cow::Borrowed(v) => pick(v).map(std::borrow::Cow::Borrowed),
        std::borrow::Cow::Owned(v) => pick(v).map(|p| std::borrow::Cow::Owned(p.clone())),
    }
}

impl JsonPath {
    fn parse(src: &str) -> Result<JsonPath, String> {
        let mut p = PathParser {
            toks: path_lex(src)?,
            pos: 0,
        };
        let path = p.expr(0)?;
        if p.pos < p.toks.len() {
            return Err(format!("unexpected {:?}", p.toks[p.pos]));
        }
        Ok(path)
    }

    fn find<'a>(&self, datum: &Rc<Datum<'a>>) -> Found<'a> {
        match self {
            JsonPath::Root => {
                let mut d = datum.clone();
                while let Some(c) = d.context.clone() {
                    d = c;
                }
                Ok(vec![Rc::new(Datum {
                    value: d.value.clone(),
                    context: None,
                })])
            }
            JsonPath::This => Ok(vec![datum.clone()]),
            JsonPath::Parent => datum
                .context
                .clone()
                .map(|c| vec![c])
                .ok_or_else(|| "`parent` of the root".to_string()),
            JsonPath::Fields(names) => {
                let Value::Object(map) = datum.value.as_ref() else {
                    return Ok(Vec::new());
                };
                let names: Vec<String> = if names.iter().any(|n| n == "*") {
                    map.keys().cloned().collect()
                } else {
                    names.clone()
                };
                Ok(names
                    .iter()
                    .filter_map(|n| part(datum, |v| v.get(n)).map(|v| child(v, datum)))
                    .collect())
            }
            JsonPath::Index(i) => {
                let value = datum.value.as_ref();
                if !squall_yaql::is_true(value) {
                    return Ok(Vec::new());
                }
                let len = py_len(value)
                    .ok_or_else(|| format!("object of type '{}' has no len()", py_type(value)))?
                    as i64;
                if len <= *i {
                    return Ok(Vec::new());
                }
                let at = if *i < 0 { i + len } else { *i };
                match value {
                    Value::Array(_) if at >= 0 => Ok(vec![child(
                        part(datum, |v| v.get(at as usize)).unwrap_or_default(),
                        datum,
                    )]),
                    Value::String(s) if at >= 0 => {
                        let c = s
                            .chars()
                            .nth(at as usize)
                            .map(String::from)
                            .unwrap_or_default();
                        Ok(vec![child(
                            std::borrow::Cow::Owned(Value::String(c)),
                            datum,
                        )])
                    }
                    Value::Object(_) => Err(format!("KeyError: {i}")),
                    _ => Err("IndexError: list index out of range".to_string()),
                }
            }
            JsonPath::Slice(start, end) => {
                let value = datum.value.as_ref();
                if !squall_yaql::is_true(value) {
                    return Ok(Vec::new());
                }
                // jsonpath_rw slices a dict, a number or a string as a list of itself.
                if matches!(value, Value::Object(_) | Value::String(_) | Value::Bool(_))
                    || matches!(value, Value::Number(n) if !n.is_f64())
                {
                    let wrapper = Rc::new(Datum {
                        value: std::borrow::Cow::Owned(Value::Array(vec![value.clone()])),
                        context: datum.context.clone(),
                    });
                    return JsonPath::Slice(*start, *end).find(&wrapper);
                }
                let Value::Array(items) = value else {
                    return Err(format!("object of type '{}' has no len()", py_type(value)));
                };
                let (from, to) = py_slice(items.len(), *start, *end);
                Ok((from..to)
                    .map(|i| child(part(datum, |v| v.get(i)).unwrap_or_default(), datum))
                    .collect())
            }
            JsonPath::Child(left, right) => {
                let mut out = Vec::new();
                for sub in left.find(datum)? {
                    out.extend(right.find(&sub)?);
                }
                Ok(out)
            }
            JsonPath::Descendants(left, right) => {
                let mut out = Vec::new();
                for sub in left.find(datum)? {
                    descend(right, &sub, &mut out)?;
                }
                Ok(out)
            }
            JsonPath::Union(left, right) => {
                let mut out = left.find(datum)?;
                out.extend(right.find(datum)?);
                Ok(out)
            }
            JsonPath::Intersect(..) => {
                Err("NotImplementedError: jsonpath_rw does not implement '&'".into())
            }
            JsonPath::Where(left, right) => {
                let mut out = Vec::new();
                for sub in left.find(datum)? {
                    if !right.find(&sub)?.is_empty() {
                        out.push(sub);
                    }
                }
                Ok(out)
            }
        }
    }
}

/// `<left> .. <right>`: `right` at the datum, then at every list element and dict value below.
fn descend<'a>(
    right: &JsonPath,
    datum: &Rc<Datum<'a>>,
    out: &mut Vec<Rc<Datum<'a>>>,
) -> Result<(), String> {
    out.extend(right.find(datum)?);
    let below: Vec<std::borrow::Cow<'a, Value>> = match datum.value.as_ref() {
        Value::Array(items) => (0..items.len())
            .filter_map(|i| part(datum, |v| v.get(i)))
            .collect(),
        Value::Object(map) => map
            .keys()
            .filter_map(|k| part(datum, |v| v.get(k)))
            .collect(),
        _ => Vec::new(),
    };
    for value in below {
        descend(right, &child(value, datum), out)?;
    }
    Ok(())
}

/// Python's `range(len)[start:end]` bounds.
fn py_slice(len: usize, start: Option<i64>, end: Option<i64>) -> (usize, usize) {
    let len = len as i64;
    let clamp = |i: i64| -> i64 {
        if i < 0 {
            (i + len).max(0)
        } else {
            i.min(len)
        }
    };
    let from = start.map(clamp).unwrap_or(0);
    let to = end.map(clamp).unwrap_or(len);
    (from as usize, to.max(from) as usize)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn run(name: &str, args: &[Value]) -> Result<Value, String> {
        call(name, args, &[]).expect("a known function")
    }

    fn run_kw(name: &str, args: &[Value], kwargs: &[(&str, Value)]) -> Result<Value, String> {
        let kw: Vec<(String, Value)> = kwargs
            .iter()
            .map(|(k, v)| (k.to_string(), v.clone()))
            .collect();
        call(name, args, &kw).expect("a known function")
    }

    fn text(name: &str, args: &[Value]) -> String {
        match run(name, args) {
            Ok(Value::String(s)) => s,
            other => panic!("{name}{args:?}: {other:?}"),
        }
    }

    #[test]
    fn every_name_is_listed_once_and_unknown_names_are_none() {
        let all: Vec<&str> = names().collect();
        let mut unique = all.clone();
        unique.sort_unstable();
        unique.dedup();
        assert_eq!(unique.len(), all.len());
        for name in [
            "decrypt_kv",
            "from_json_string",
            "from_yaml_string",
            "json_escape",
            "jsonpath_query",
            "to_complex",
            "to_json_string",
            "to_yaml_string",
            "regex_match",
            "regex_replace",
            "regex_search",
            "regex_substring",
            "to_human_time_from_seconds",
            "version_compare",
            "version_more_than",
            "version_less_than",
            "version_equal",
            "version_match",
            "version_bump_major",
            "version_bump_minor",
            "version_bump_patch",
            "version_strip_patch",
            "use_none",
            "basename",
            "dirname",
            "json_dump",
            "json_parse",
            "yaml_dump",
            "yaml_parse",
            "json",
            "zip",
        ] {
            assert!(all.contains(&name), "{name}");
        }
        assert!(call("no_such_function", &[], &[]).is_none());
    }

    #[test]
    fn arguments_bind_by_position_and_name_and_errors_say_where() {
        let obj = json!({"b": 1, "a": [1, 2]});
        assert_eq!(
            run_kw(
                "to_json_string",
                std::slice::from_ref(&obj),
                &[("sort_keys", json!(true))]
            ),
            Ok(json!("{\"a\": [1,2],\"b\": 1}"))
        );
        assert_eq!(
            run("to_json_string", &[obj.clone(), Value::Null, json!(true)]),
            Ok(json!("{\"a\": [1,2],\"b\": 1}"))
        );
        let err = run_kw(
            "to_json_string",
            std::slice::from_ref(&obj),
            &[("indnet", json!(2))],
        )
        .unwrap_err();
        assert!(
            err.contains("to_json_string()") && err.contains("'indnet'"),
            "{err}"
        );
        let err = run_kw(
            "to_json_string",
            &[obj.clone(), json!(2)],
            &[("indent", json!(2))],
        )
        .unwrap_err();
        assert!(
            err.contains("multiple values for argument 'indent'"),
            "{err}"
        );
        let err = run("regex_match", &[json!("x")]).unwrap_err();
        assert!(
            err.contains("regex_match()") && err.contains("'pattern'"),
            "{err}"
        );
        let err = run("basename", &[json!("a"), json!("b")]).unwrap_err();
        assert!(err.contains("basename() takes at most 1"), "{err}");
        let err = run("version_compare", &[json!("1.0"), json!("1.0.0")]).unwrap_err();
        assert!(
            err.contains("version_compare()") && err.contains("'value'"),
            "{err}"
        );
    }

    // st2common/tests/unit/test_jinja_render_data_filters.py
    #[test]
    fn json_and_yaml_strings_as_st2_writes_and_reads_them() {
        let obj = json!({"a": "b", "c": {"d": "e", "f": 1, "g": true}});
        assert_eq!(
            text("to_json_string", std::slice::from_ref(&obj)),
            r#"{"a": "b","c": {"d": "e","f": 1,"g": true}}"#
        );
        assert_eq!(
            run(
                "from_json_string",
                &[json!(r#"{"a": "b", "c": {"d": "e", "f": 1, "g": true}}"#)]
            ),
            Ok(obj.clone())
        );
        assert_eq!(
            run(
                "from_yaml_string",
                &[json!("---\na: b\nc:\n  d: e\n  f: 1\n  g: true\n")]
            ),
            Ok(obj.clone())
        );
        assert_eq!(
            run("from_yaml_string", &[json!("---\n- a\n- b\n- c\n")]),
            Ok(json!(["a", "b", "c"]))
        );
        assert_eq!(
            text("to_yaml_string", &[obj]),
            "a: b\nc:\n  d: e\n  f: 1\n  g: true\n"
        );
        // The aliases st2common registers for Orquesta.
        assert_eq!(run("json_parse", &[json!("[1]")]), Ok(json!([1])));
        assert_eq!(text("json_dump", &[json!({"k": [1]})]), r#"{"k": [1]}"#);
        assert_eq!(run("yaml_parse", &[json!("k: [1]")]), Ok(json!({"k": [1]})));
        assert_eq!(text("yaml_dump", &[json!({"k": [1]})]), "k:\n- 1\n");
    }

    #[test]
    fn to_json_string_takes_indent_sort_keys_and_separators_as_json_dumps_does() {
        let v = json!({"b": [1, 2.5, null], "a": {"é": "\u{1F600}\n"}, "c": []});
        assert_eq!(
            text("to_json_string", std::slice::from_ref(&v)),
            r#"{"b": [1,2.5,null],"a": {"\u00e9": "\ud83d\ude00\n"},"c": []}"#
        );
        assert_eq!(
            run_kw("to_json_string", std::slice::from_ref(&v), &[("indent", json!(2)), ("sort_keys", json!(true))]),
            Ok(json!(
                "{\n  \"a\": {\n    \"\\u00e9\": \"\\ud83d\\ude00\\n\"\n  },\n  \"b\": [\n    1,\n    2.5,\n    null\n  ],\n  \"c\": []\n}"
            ))
        );
        assert_eq!(
            run_kw(
                "to_json_string",
                &[json!([1, {"a": 1}])],
                &[("separators", json!([",", ":"]))]
            ),
            Ok(json!("[1,{\"a\":1}]"))
        );
        assert_eq!(
            run_kw("to_json_string", &[json!([1])], &[("indent", json!("\t"))]),
            Ok(json!("[\n\t1\n]"))
        );
        assert_eq!(
            text("to_complex", &[json!({"a": [1, "x"], "f": 1.0})]),
            r#"{"a": [1, "x"], "f": 1.0}"#
        );
        assert_eq!(text("to_json_string", &[json!(1e17)]), "1e+17");
    }

    // st2common/tests/unit/test_jinja_render_json_escape_filters.py
    #[test]
    fn json_escape_follows_st2() {
        for (input, expected) in [
            ("foo \"\"\" bar", "foo \\\"\\\"\\\" bar"),
            ("foo \\ bar", "foo \\\\ bar"),
            ("foo \x08 bar", "foo \\b bar"),
            ("foo \x0c bar", "foo \\f bar"),
            ("foo \n bar", "foo \\n bar"),
            ("foo \r bar", "foo \\r bar"),
            ("foo \t bar", "foo \\t bar"),
        ] {
            assert_eq!(text("json_escape", &[json!(input)]), expected);
        }
        // json.dumps(value).strip('"'): every quote at the ends goes.
        assert_eq!(text("json_escape", &[json!("a\"")]), "a\\");
        assert_eq!(text("json_escape", &[json!(5)]), "5");
    }

    // st2common/tests/unit/test_jinja_render_jsonpath_query_filters.py
    #[test]
    fn jsonpath_query_follows_st2() {
        let obj = json!({
            "people": [
                {"first": "James", "last": "d"},
                {"first": "Jacob", "last": "e"},
                {"first": "Jayden", "last": "f"},
                {"missing": "different"}
            ],
            "foo": {"bar": "baz"}
        });
        assert_eq!(
            run("jsonpath_query", &[obj.clone(), json!("people[*].first")]),
            Ok(json!(["James", "Jacob", "Jayden"]))
        );
        assert_eq!(
            run("jsonpath_query", &[obj.clone(), json!("people[*].last")]),
            Ok(json!(["d", "e", "f"]))
        );
        assert_eq!(
            run(
                "jsonpath_query",
                &[obj.clone(), json!("query_returns_no_results")]
            ),
            Ok(Value::Null)
        );
        // jsonpath_rw's other forms.
        assert_eq!(
            run("jsonpath_query", &[obj.clone(), json!("$.foo.bar")]),
            Ok(json!(["baz"]))
        );
        assert_eq!(
            run("jsonpath_query", &[obj.clone(), json!("people[1].first")]),
            Ok(json!(["Jacob"]))
        );
        assert_eq!(
            run(
                "jsonpath_query",
                &[obj.clone(), json!("people[-1].missing")]
            ),
            Ok(json!(["different"]))
        );
        assert_eq!(
            run("jsonpath_query", &[obj.clone(), json!("people[0:2].last")]),
            Ok(json!(["d", "e"]))
        );
        assert_eq!(
            run("jsonpath_query", &[obj.clone(), json!("$..bar")]),
            Ok(json!(["baz"]))
        );
        assert_eq!(
            run(
                "jsonpath_query",
                &[obj.clone(), json!("people[*].(first|missing)")]
            ),
            Ok(json!(["James", "Jacob", "Jayden", "different"]))
        );
        assert_eq!(
            run(
                "jsonpath_query",
                &[obj.clone(), json!("people[*] where missing")]
            ),
            Ok(json!([{"missing": "different"}]))
        );
        assert_eq!(
            run(
                "jsonpath_query",
                &[obj.clone(), json!("foo.`parent`.foo.bar")]
            ),
            Ok(json!(["baz"]))
        );
        assert_eq!(
            run("jsonpath_query", &[obj.clone(), json!("foo[*].bar")]),
            Ok(json!(["baz"]))
        );
        assert!(run("jsonpath_query", &[obj, json!("people[")]).is_err());
    }

    // st2common/tests/unit/test_jinja_render_path_filters.py
    #[test]
    fn basename_and_dirname_follow_st2() {
        assert_eq!(
            text("basename", &[json!("/some/path/to/file.txt")]),
            "file.txt"
        );
        assert_eq!(text("basename", &[json!("/some/path/to/dir")]), "dir");
        assert_eq!(text("basename", &[json!("/some/path/to/dir/")]), "");
        assert_eq!(
            text("dirname", &[json!("/some/path/to/file.txt")]),
            "/some/path/to"
        );
        assert_eq!(
            text("dirname", &[json!("/some/path/to/dir")]),
            "/some/path/to"
        );
        assert_eq!(
            text("dirname", &[json!("/some/path/to/dir/")]),
            "/some/path/to/dir"
        );
        assert_eq!(text("dirname", &[json!("//")]), "//");
        assert_eq!(text("dirname", &[json!("file")]), "");
    }

    // st2common/tests/unit/test_jinja_render_regex_filters.py
    #[test]
    fn regex_functions_follow_st2() {
        assert_eq!(
            run("regex_match", &[json!("xyz"), json!("x")]),
            Ok(json!(true))
        );
        assert_eq!(
            run("regex_match", &[json!("xyz"), json!("y")]),
            Ok(json!(false))
        );
        let version = r"^v(\d+\.)?(\d+\.)?(\*|\d+)$";
        assert_eq!(
            run("regex_match", &[json!("v0.10.1"), json!(version)]),
            Ok(json!(true))
        );
        assert_eq!(
            text("regex_replace", &[json!("xyz"), json!("x"), json!("y")]),
            "yyz"
        );
        assert_eq!(
            text(
                "regex_replace",
                &[
                    json!("blue socks and red shoes"),
                    json!("(blue|white|red)"),
                    json!("color")
                ]
            ),
            "color socks and color shoes"
        );
        assert_eq!(
            run("regex_search", &[json!("xyz"), json!("x")]),
            Ok(json!(true))
        );
        assert_eq!(
            run("regex_search", &[json!("xyz"), json!("y")]),
            Ok(json!(true))
        );
        assert_eq!(
            run("regex_search", &[json!("v0.10.1"), json!(version)]),
            Ok(json!(true))
        );
        let address = r"([0-9]{3} \w+ (?:Ave|St|Dr))";
        assert_eq!(
            text(
                "regex_substring",
                &[
                    json!("My address is 123 Somewhere Ave. See you soon!"),
                    json!(address)
                ]
            ),
            "123 Somewhere Ave"
        );
        assert_eq!(
            text(
                "regex_substring",
                &[
                    json!("Your address is 567 Elsewhere Dr. My address is 123 Somewhere Ave."),
                    json!(address),
                    json!(1)
                ]
            ),
            "123 Somewhere Ave"
        );
        assert!(run(
            "regex_substring",
            &[
                json!("Your address is 567 Elsewhere Dr."),
                json!(address),
                json!(1)
            ]
        )
        .is_err());
        assert!(run(
            "regex_substring",
            &[
                json!("My address is 986 Somewhere Ave. See you soon!"),
                json!(r"([0-3]{3} \w+ (?:Ave|St|Dr))")
            ]
        )
        .is_err());
        // ignorecase, Python's replacement syntax, str() of non-strings.
        assert_eq!(
            run_kw(
                "regex_match",
                &[json!("XYZ"), json!("x")],
                &[("ignorecase", json!(true))]
            ),
            Ok(json!(true))
        );
        assert_eq!(
            text(
                "regex_replace",
                &[
                    json!("web-01"),
                    json!(r"(\w+)-(?P<n>\d+)"),
                    json!(r"\g<n>.\1\n")
                ]
            ),
            "01.web\n"
        );
        assert_eq!(
            text("regex_replace", &[json!(5), json!("5"), json!("$x")]),
            "$x"
        );
        assert_eq!(
            run("regex_search", &[json!(true), json!("^True$")]),
            Ok(json!(true))
        );
        assert_eq!(
            run(
                "regex_substring",
                &[json!("a=1 b=2"), json!(r"(\w)=(\d)"), json!(-1)]
            ),
            Ok(json!(["b", "2"]))
        );
    }

    // st2common/tests/unit/test_jinja_render_time_filters.py and
    // st2common/tests/unit/test_time_jinja_filters.py
    #[test]
    fn human_time_follows_st2() {
        assert_eq!(
            text("to_human_time_from_seconds", &[json!(12345)]),
            "3h25m45s"
        );
        assert_eq!(text("to_human_time_from_seconds", &[json!(0)]), "0s");
        assert_eq!(
            text("to_human_time_from_seconds", &[json!(0.1)]),
            "0.1\u{3bc}s"
        );
        assert_eq!(text("to_human_time_from_seconds", &[json!(56)]), "56s");
        assert_eq!(text("to_human_time_from_seconds", &[json!(56.2)]), "56s");
        assert_eq!(text("to_human_time_from_seconds", &[json!(456)]), "7m36s");
        assert_eq!(
            text("to_human_time_from_seconds", &[json!(4560)]),
            "1h16m0s"
        );
        assert_eq!(
            text("to_human_time_from_seconds", &[json!(45678997)]),
            "1y12d16h36m37s"
        );
        assert!(run("to_human_time_from_seconds", &[json!("stuff")]).is_err());
    }

    // st2common/tests/unit/test_jinja_render_version_filters.py
    #[test]
    fn versions_follow_st2() {
        for (v, cmp, more, less, equal) in [
            ("0.9.0", -1, false, true, false),
            ("0.10.1", 1, true, false, false),
            ("0.10.0", 0, false, false, true),
        ] {
            let args = [json!(v), json!("0.10.0")];
            assert_eq!(run("version_compare", &args), Ok(json!(cmp)));
            assert_eq!(run("version_more_than", &args), Ok(json!(more)));
            assert_eq!(run("version_less_than", &args), Ok(json!(less)));
            assert_eq!(run("version_equal", &args), Ok(json!(equal)));
        }
        for (v, pattern, expected) in [
            ("0.10.1", ">0.10.0", true),
            ("0.1.1", ">0.10.0", false),
            ("0.1.0", "<0.10.0", true),
            ("1.1.0", "<0.10.0", false),
            ("0.10.0", "==0.10.0", true),
            ("0.10.1", "==0.10.0", false),
            ("0.10.1", "0.10.1", true),
            ("1.0.0-rc.1", "<1.0.0", true),
        ] {
            assert_eq!(
                run("version_match", &[json!(v), json!(pattern)]),
                Ok(json!(expected)),
                "{v} {pattern}"
            );
        }
        assert!(run("version_match", &[json!("1.0.0"), json!("~1.0.0")]).is_err());
        assert_eq!(text("version_bump_major", &[json!("0.10.1")]), "1.0.0");
        assert_eq!(text("version_bump_minor", &[json!("0.10.1")]), "0.11.0");
        assert_eq!(text("version_bump_patch", &[json!("0.10.1")]), "0.10.2");
        assert_eq!(text("version_strip_patch", &[json!("0.10.1")]), "0.10");
        // python-semver: build metadata is ignored; numeric prerelease parts sort first.
        assert_eq!(
            run("version_compare", &[json!("1.0.0+b2"), json!("1.0.0+b1")]),
            Ok(json!(0))
        );
        assert_eq!(
            run(
                "version_compare",
                &[json!("1.0.0-alpha.1"), json!("1.0.0-alpha.beta")]
            ),
            Ok(json!(-1))
        );
        assert_eq!(
            run(
                "version_compare",
                &[json!("1.0.0-rc.2"), json!("1.0.0-rc.10")]
            ),
            Ok(json!(-1))
        );
    }

    // orquesta/tests/unit/expressions/test_functions_common.py (Orquesta's json and zip)
    #[test]
    fn orquesta_json_and_zip() {
        assert_eq!(run("json", &[json!({"k1": "v1"})]), Ok(json!({"k1": "v1"})));
        assert!(run("json", &[json!(123)]).is_err());
        assert!(run("json", &[json!(false)]).is_err());
        assert!(run("json", &[json!(["a", "b"])]).is_err());
        assert_eq!(
            run("json", &[json!("{\"k1\": \"v1\"}")]),
            Ok(json!({"k1": "v1"}))
        );
        assert_eq!(
            run("json", &[json!("[{\"a\": 1}, {\"b\": 2}]")]),
            Ok(json!([{"a": 1}, {"b": 2}]))
        );
        assert_eq!(run("zip", &[]), Ok(json!([])));
        assert_eq!(run("zip", &[Value::Null]), Ok(json!([])));
        assert_eq!(
            run("zip", &[json!([1, 2, 3, 4, 5])]),
            Ok(json!([1, 2, 3, 4, 5]))
        );
        let l1 = json!([1, 2, 3, 4, 5]);
        assert_eq!(
            run(
                "zip",
                &[
                    l1.clone(),
                    json!(["a", "b", "c", "d", "e"]),
                    json!(["i", "ii", "iii", "iv", "v"])
                ]
            ),
            Ok(json!([
                [1, "a", "i"],
                [2, "b", "ii"],
                [3, "c", "iii"],
                [4, "d", "iv"],
                [5, "e", "v"]
            ]))
        );
        assert_eq!(
            run("zip", &[l1.clone(), json!(["a", "b", "c"])]),
            Ok(json!([[1, "a"], [2, "b"], [3, "c"], [4, null], [5, null]]))
        );
        assert_eq!(
            run_kw(
                "zip",
                &[l1, json!(["a", "b", "c"])],
                &[("pad", json!("foobar"))]
            ),
            Ok(json!([
                [1, "a"],
                [2, "b"],
                [3, "c"],
                [4, "foobar"],
                [5, "foobar"]
            ]))
        );
        assert_eq!(
            run_kw(
                "zip",
                &[json!([]), json!(["a", "b", "c"])],
                &[("pad", json!("z"))]
            ),
            Ok(json!([["z", "a"], ["z", "b"], ["z", "c"]]))
        );
    }

    #[test]
    fn use_none_and_decrypt_kv_pass_values_through() {
        assert_eq!(run("use_none", &[Value::Null]), Ok(Value::Null));
        assert_eq!(run("use_none", &[json!("x")]), Ok(json!("x")));
        assert_eq!(
            run("decrypt_kv", &[json!("clear text")]),
            Ok(json!("clear text"))
        );
    }

    #[test]
    fn yaml_is_read_as_pyyaml_reads_yaml_1_1() {
        let doc = "a: yes\nb: 'yes'\nc: off\nd: 010\ne: 0o17\nf: 1_000\ng: 0x1F\nh: 1:30\n\
                   i: ~\nj:\nk: 2001-12-14\nl: \"on\"\nm: 1.5\nn: 1e3\no: .5\np: |\n  yes\n";
        assert_eq!(
            run("from_yaml_string", &[json!(doc)]),
            Ok(json!({
                "a": true, "b": "yes", "c": false, "d": 8, "e": "0o17", "f": 1000, "g": 31,
                "h": 90, "i": null, "j": null, "k": "2001-12-14", "l": "on", "m": 1.5,
                "n": "1e3", "o": 0.5, "p": "yes\n"
            }))
        );
        assert_eq!(
            run(
                "from_yaml_string",
                &[json!("base: &b {x: 1, y: 2}\nother:\n  <<: *b\n  y: 3\n")]
            ),
            Ok(json!({"base": {"x": 1, "y": 2}, "other": {"x": 1, "y": 3}}))
        );
        assert_eq!(run("from_yaml_string", &[json!("")]), Ok(Value::Null));
        assert_eq!(
            run("from_yaml_string", &[json!("[1, 'a', b]")]),
            Ok(json!([1, "a", "b"]))
        );
        assert_eq!(
            run("from_yaml_string", &[json!("1: a\n")]),
            Ok(json!({"1": "a"}))
        );
        assert!(run("from_yaml_string", &[json!("a: [")]).is_err());
    }

    #[test]
    fn yaml_is_written_as_pyyaml_safe_dump_writes_it() {
        let cases: Vec<(Value, &str)> = vec![
            (
                json!({"b": [1, 2], "a": {"x": null}}),
                "a:\n  x: null\nb:\n- 1\n- 2\n",
            ),
            (
                json!([{"a": 1, "b": [true]}, [1, 2], []]),
                "- a: 1\n  b:\n  - true\n- - 1\n  - 2\n- []\n",
            ),
            (json!("abc"), "abc\n...\n"),
            (json!(""), "''\n"),
            (json!(1), "1\n...\n"),
            (json!(null), "null\n...\n"),
            (json!({}), "{}\n"),
            (json!("yes"), "'yes'\n"),
            (
                json!({"k": "123", "e": "", "q": "it's", "s": "a: b", "t": "tab\there"}),
                "e: ''\nk: '123'\nq: it's\ns: 'a: b'\nt: \"tab\\there\"\n",
            ),
            (json!({"m": "line1\nline2"}), "m: 'line1\n\n  line2'\n"),
            (json!({"f": 1e17, "g": 0.5}), "f: 1.0e+17\ng: 0.5\n"),
            (json!({"u": "héllo"}), "u: héllo\n"),
        ];
        for (value, expected) in cases {
            assert_eq!(
                text("to_yaml_string", std::slice::from_ref(&value)),
                expected,
                "{value}"
            );
        }
        assert_eq!(
            run_kw(
                "to_yaml_string",
                &[json!({"u": "héllo"})],
                &[("allow_unicode", json!(false))]
            ),
            Ok(json!("u: \"h\\xE9llo\"\n"))
        );
        assert_eq!(
            run_kw(
                "to_yaml_string",
                &[json!({"a": {"b": [1]}})],
                &[("indent", json!(4))]
            ),
            Ok(json!("a:\n    b:\n    - 1\n"))
        );
        // PyYAML folds plain text past 80 columns at a space, indenting the continuation.
        let long = "word ".repeat(20).trim_end().to_string();
        assert_eq!(
            text("to_yaml_string", &[json!({ "key": long })]),
            format!(
                "key: {}\n  {}\n",
                "word ".repeat(16).trim_end(),
                "word ".repeat(4).trim_end()
            )
        );
    }
}
