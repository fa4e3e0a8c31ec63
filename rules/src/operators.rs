//! The criteria operators, with StackStorm's names, aliases and semantics.
//!
//! st2 evaluates criteria in Python: a payload value and a pattern are compared as the Python
//! objects JSON decodes to, so `"137"` does not equal `137`, `true` equals `1`, `contains` works
//! on strings, lists and maps, and a comparison Python cannot make (`None < 5`) raises. Here such
//! a comparison is an `Err` naming the types: the criterion then does not match and the reason
//! is recorded. This file must never do I/O; "now" for `timediff_*` is passed in.

use std::cmp::Ordering;

use chrono::{DateTime, NaiveDate, NaiveDateTime, Utc};
use fancy_regex::Regex;
use serde_json::Value;

/// Every st2 criteria operator. `Search` is evaluated by the matcher (it recurses into child
/// criteria); the others by [`Operator::apply`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Operator {
    Equals,
    NEquals,
    IEquals,
    Contains,
    IContains,
    NContains,
    INContains,
    StartsWith,
    IStartsWith,
    EndsWith,
    IEndsWith,
    LessThan,
    GreaterThan,
    MatchWildcard,
    Regex,
    IRegex,
    MatchRegex,
    TimeDiffLt,
    TimeDiffGt,
    Exists,
    NExists,
    Inside,
    NInside,
    Search,
}

/// Names and aliases, as st2's `operators` table has them (lookup is case-insensitive).
const NAMES: &[(&str, Operator)] = &[
    ("equals", Operator::Equals),
    ("eq", Operator::Equals),
    ("nequals", Operator::NEquals),
    ("neq", Operator::NEquals),
    ("iequals", Operator::IEquals),
    ("ieq", Operator::IEquals),
    ("contains", Operator::Contains),
    ("icontains", Operator::IContains),
    ("ncontains", Operator::NContains),
    ("incontains", Operator::INContains),
    ("startswith", Operator::StartsWith),
    ("istartswith", Operator::IStartsWith),
    ("endswith", Operator::EndsWith),
    ("iendswith", Operator::IEndsWith),
    ("lessthan", Operator::LessThan),
    ("lt", Operator::LessThan),
    ("greaterthan", Operator::GreaterThan),
    ("gt", Operator::GreaterThan),
    ("matchwildcard", Operator::MatchWildcard),
    ("regex", Operator::Regex),
    ("iregex", Operator::IRegex),
    ("matchregex", Operator::MatchRegex),
    ("timediff_lt", Operator::TimeDiffLt),
    ("td_lt", Operator::TimeDiffLt),
    ("timediff_gt", Operator::TimeDiffGt),
    ("td_gt", Operator::TimeDiffGt),
    ("exists", Operator::Exists),
    ("nexists", Operator::NExists),
    ("inside", Operator::Inside),
    ("in", Operator::Inside),
    ("ninside", Operator::NInside),
    ("nin", Operator::NInside),
    ("search", Operator::Search),
];

impl Operator {
    pub fn from_name(name: &str) -> Option<Operator> {
        let lower = name.to_ascii_lowercase();
        NAMES.iter().find(|(n, _)| *n == lower).map(|(_, op)| *op)
    }

    /// The operator's canonical (long) name.
    pub fn name(self) -> &'static str {
        NAMES
            .iter()
            .find(|(_, op)| *op == self)
            .map(|(n, _)| *n)
            .unwrap_or("search")
    }

    /// Every accepted name, for error messages.
    pub fn all_names() -> Vec<&'static str> {
        NAMES.iter().map(|(n, _)| *n).collect()
    }

    /// True for operators whose pattern is a regular expression.
    pub fn is_regex(self) -> bool {
        matches!(
            self,
            Operator::Regex | Operator::IRegex | Operator::MatchRegex | Operator::MatchWildcard
        )
    }

    /// Compiles the regular expression a regex-like operator uses for `pattern`, with Python's
    /// `re` semantics (look-around and backreferences work; `$` also matches before a final
    /// newline; `\Z` is the very end).
    pub fn compile(self, pattern: &str) -> Result<Regex, String> {
        let py = python_regex(pattern);
        let source = match self {
            Operator::Regex => py,
            Operator::IRegex => format!("(?i:{py})"),
            // Python's re.match anchors at the start only; DOTALL lets '.' cross newlines.
            Operator::MatchRegex => format!(r"\A(?s:{py})"),
            Operator::MatchWildcard => fnmatch_to_regex(pattern),
            _ => return Err(format!("{} takes no regular expression", self.name())),
        };
        Regex::new(&source).map_err(|e| format!("invalid regular expression {pattern:?}: {e}"))
    }

    /// Applies the operator. `value` is `None` when the key is missing or null (Python's None).
    /// `regex` is the pattern's compiled regex for regex-like operators when known in advance.
    pub fn apply(
        self,
        value: Option<&Value>,
        pattern: &Value,
        regex: Option<&Regex>,
        now: DateTime<Utc>,
    ) -> Result<bool, String> {
        use Operator::*;
        // st2: every operator but nequals, exists and nexists is false for a None pattern.
        if pattern.is_null() && !matches!(self, NEquals | Exists | NExists) {
            return Ok(false);
        }
        match self {
            Equals => Ok(py_eq(value, Some(pattern))),
            NEquals => Ok(!py_eq(value, Some(pattern))),
            IEquals => Ok(py_lower(value, "value")? == py_lower(Some(pattern), "pattern")?),
            Contains => py_in(Some(pattern), value),
            NContains => py_in(Some(pattern), value).map(|b| !b),
            IContains => {
                let (v, p) = (
                    py_lower(value, "value")?,
                    py_lower(Some(pattern), "pattern")?,
                );
                Ok(v.contains(&p))
            }
            INContains => {
                let (v, p) = (
                    py_lower(value, "value")?,
                    py_lower(Some(pattern), "pattern")?,
                );
                Ok(!v.contains(&p))
            }
            StartsWith => {
                Ok(py_str(value, "value")?.starts_with(py_str(Some(pattern), "pattern")?))
            }
            EndsWith => Ok(py_str(value, "value")?.ends_with(py_str(Some(pattern), "pattern")?)),
            IStartsWith => {
                let (v, p) = (
                    py_lower(value, "value")?,
                    py_lower(Some(pattern), "pattern")?,
                );
                Ok(v.starts_with(&p))
            }
            IEndsWith => {
                let (v, p) = (
                    py_lower(value, "value")?,
                    py_lower(Some(pattern), "pattern")?,
                );
                Ok(v.ends_with(&p))
            }
            LessThan => Ok(py_cmp(value, Some(pattern))? == Ordering::Less),
            GreaterThan => Ok(py_cmp(value, Some(pattern))? == Ordering::Greater),
            MatchWildcard | Regex | IRegex | MatchRegex => {
                let text = py_str(value, "value")?;
                let pat = py_str(Some(pattern), "pattern")?;
                let found = match regex {
                    Some(re) => re.is_match(text),
                    None => self.compile(pat)?.is_match(text),
                };
                found.map_err(|e| format!("regular expression {pat:?} failed: {e}"))
            }
            TimeDiffLt | TimeDiffGt => {
                let text = match value {
                    Some(Value::String(s)) => s,
                    other => {
                        return Err(format!(
                            "a time must be a string to parse, not {}",
                            py_type(other)
                        ))
                    }
                };
                let then = parse_time(text)?;
                let elapsed = (now - then).num_microseconds().map(|us| us as f64 / 1e6);
                let elapsed = elapsed.ok_or_else(|| format!("time {text:?} is out of range"))?;
                let ord = py_cmp(Some(&float_value(elapsed)), Some(pattern))?;
                Ok(if self == TimeDiffLt {
                    ord == Ordering::Less
                } else {
                    ord == Ordering::Greater
                })
            }
            Exists => Ok(value.is_some_and(|v| !v.is_null())),
            NExists => Ok(value.is_none_or(|v| v.is_null())),
            Inside => py_in(value, pattern_ref(pattern)),
            NInside => py_in(value, pattern_ref(pattern)).map(|b| !b),
            Search => Err("search is evaluated by the matcher".to_string()),
        }
    }
}

fn pattern_ref(pattern: &Value) -> Option<&Value> {
    Some(pattern)
}

fn float_value(f: f64) -> Value {
    serde_json::Number::from_f64(f)
        .map(Value::Number)
        .unwrap_or(Value::Null)
}

/// Python's type name for a JSON value, for error messages that read like st2's.
pub fn py_type(v: Option<&Value>) -> &'static str {
    match v {
        None | Some(Value::Null) => "NoneType",
        Some(Value::Bool(_)) => "bool",
        Some(Value::Number(n)) if n.is_f64() => "float",
        Some(Value::Number(_)) => "int",
        Some(Value::String(_)) => "str",
        Some(Value::Array(_)) => "list",
        Some(Value::Object(_)) => "dict",
    }
}

fn normalize(v: Option<&Value>) -> Option<&Value> {
    v.filter(|v| !v.is_null())
}

/// A number as Python sees it: bools are ints.
enum PyNum {
    Int(i128),
    Float(f64),
}

fn as_num(v: &Value) -> Option<PyNum> {
    match v {
        Value::Bool(b) => Some(PyNum::Int(i128::from(*b))),
        Value::Number(n) => {
            if let Some(i) = n.as_i64() {
                Some(PyNum::Int(i128::from(i)))
            } else if let Some(u) = n.as_u64() {
                Some(PyNum::Int(i128::from(u)))
            } else {
                n.as_f64().map(PyNum::Float)
            }
        }
        _ => None,
    }
}

fn num_cmp(a: &PyNum, b: &PyNum) -> Option<Ordering> {
    match (a, b) {
        (PyNum::Int(x), PyNum::Int(y)) => Some(x.cmp(y)),
        (PyNum::Int(x), PyNum::Float(y)) => int_float_cmp(*x, *y),
        (PyNum::Float(x), PyNum::Int(y)) => int_float_cmp(*y, *x).map(Ordering::reverse),
        (PyNum::Float(x), PyNum::Float(y)) => x.partial_cmp(y),
    }
}

/// Compares an integer with a float exactly, as Python does (no rounding of big integers).
fn int_float_cmp(i: i128, f: f64) -> Option<Ordering> {
    if f.is_nan() {
        return None;
    }
    // Beyond ±2^100 every i64/u64 payload integer is smaller in magnitude.
    const LIMIT: f64 = 1.2676506002282294e30;
    if f >= LIMIT {
        return Some(Ordering::Less);
    }
    if f <= -LIMIT {
        return Some(Ordering::Greater);
    }
    let floor = f.floor();
    let whole = floor as i128;
    match i.cmp(&whole) {
        Ordering::Equal if floor == f => Some(Ordering::Equal),
        // i == floor(f) < f
        Ordering::Equal => Some(Ordering::Less),
        other => Some(other),
    }
}

/// Python `==` between two decoded JSON values (None for missing).
pub fn py_eq(a: Option<&Value>, b: Option<&Value>) -> bool {
    match (normalize(a), normalize(b)) {
        (None, None) => true,
        (None, _) | (_, None) => false,
        (Some(x), Some(y)) => {
            if let (Some(nx), Some(ny)) = (as_num(x), as_num(y)) {
                return num_cmp(&nx, &ny) == Some(Ordering::Equal);
            }
            match (x, y) {
                (Value::String(s), Value::String(t)) => s == t,
                (Value::Array(s), Value::Array(t)) => {
                    s.len() == t.len() && s.iter().zip(t).all(|(p, q)| py_eq(Some(p), Some(q)))
                }
                (Value::Object(s), Value::Object(t)) => {
                    s.len() == t.len()
                        && s.iter()
                            .all(|(k, v)| t.get(k).is_some_and(|w| py_eq(Some(v), Some(w))))
                }
                _ => false,
            }
        }
    }
}

/// Python's ordering (`<`, `>`), which raises for unlike types.
pub fn py_cmp(a: Option<&Value>, b: Option<&Value>) -> Result<Ordering, String> {
    let (x, y) = match (normalize(a), normalize(b)) {
        (Some(x), Some(y)) => (x, y),
        _ => return Err(unorderable(a, b)),
    };
    if let (Some(nx), Some(ny)) = (as_num(x), as_num(y)) {
        return num_cmp(&nx, &ny).ok_or_else(|| "cannot order NaN".to_string());
    }
    match (x, y) {
        (Value::String(s), Value::String(t)) => Ok(s.as_str().cmp(t.as_str())),
        (Value::Array(s), Value::Array(t)) => {
            for (p, q) in s.iter().zip(t) {
                if !py_eq(Some(p), Some(q)) {
                    return py_cmp(Some(p), Some(q));
                }
            }
            Ok(s.len().cmp(&t.len()))
        }
        _ => Err(unorderable(a, b)),
    }
}

fn unorderable(a: Option<&Value>, b: Option<&Value>) -> String {
    format!(
        "'<' not supported between instances of '{}' and '{}'",
        py_type(a),
        py_type(b)
    )
}

/// Python's `needle in haystack`.
pub fn py_in(needle: Option<&Value>, haystack: Option<&Value>) -> Result<bool, String> {
    match normalize(haystack) {
        Some(Value::String(h)) => match normalize(needle) {
            Some(Value::String(n)) => Ok(h.contains(n.as_str())),
            other => Err(format!(
                "'in <string>' requires string as left operand, not {}",
                py_type(other)
            )),
        },
        Some(Value::Array(items)) => Ok(items.iter().any(|i| py_eq(needle, Some(i)))),
        Some(Value::Object(map)) => match normalize(needle) {
            Some(Value::String(n)) => Ok(map.contains_key(n.as_str())),
            Some(Value::Array(_)) | Some(Value::Object(_)) => {
                Err(format!("unhashable type: '{}'", py_type(normalize(needle))))
            }
            // JSON object keys are strings: a number, bool or None is never one of them.
            _ => Ok(false),
        },
        other => Err(format!(
            "argument of type '{}' is not iterable",
            py_type(other)
        )),
    }
}

fn py_str<'a>(v: Option<&'a Value>, what: &str) -> Result<&'a str, String> {
    match v {
        Some(Value::String(s)) => Ok(s),
        other => Err(format!("{what} must be a string, not {}", py_type(other))),
    }
}

fn py_lower(v: Option<&Value>, what: &str) -> Result<String, String> {
    py_str(v, what).map(str::to_lowercase)
}

/// Rewrites a Python regular expression for fancy-regex: an unescaped `$` outside a character
/// class becomes "end, or before a final newline" as in Python, and `\Z` becomes `\z`. A
/// pattern that sets multi-line mode itself is left as it is.
pub fn python_regex(pattern: &str) -> String {
    if pattern.contains("(?m") {
        return pattern.to_string();
    }
    let mut out = String::with_capacity(pattern.len() + 8);
    let mut chars = pattern.chars().peekable();
    let mut in_class = false;
    while let Some(c) = chars.next() {
        match c {
            '\\' => match chars.next() {
                Some('Z') if !in_class => out.push_str("\\z"),
                Some(n) => {
                    out.push('\\');
                    out.push(n);
                }
                None => out.push('\\'),
            },
            '[' if !in_class => {
                in_class = true;
                out.push('[');
                // A ']' right after '[' or '[^' is a literal member.
                if chars.peek() == Some(&'^') {
                    out.push('^');
                    chars.next();
                }
                if chars.peek() == Some(&']') {
                    out.push_str("\\]");
                    chars.next();
                }
            }
            ']' if in_class => {
                in_class = false;
                out.push(']');
            }
            '$' if !in_class => out.push_str("(?=\\n?\\z)"),
            other => out.push(other),
        }
    }
    out
}

/// Python's `fnmatch.translate`: `*`, `?`, `[seq]`, `[!seq]`, anchored at both ends.
pub fn fnmatch_to_regex(pattern: &str) -> String {
    let chars: Vec<char> = pattern.chars().collect();
    let mut out = String::from(r"\A(?s:");
    let mut i = 0;
    while i < chars.len() {
        let c = chars[i];
        i += 1;
        match c {
            '*' => {
                while i < chars.len() && chars[i] == '*' {
                    i += 1;
                }
                out.push_str(".*");
            }
            '?' => out.push('.'),
            '[' => {
                let mut j = i;
                if j < chars.len() && chars[j] == '!' {
                    j += 1;
                }
                if j < chars.len() && chars[j] == ']' {
                    j += 1;
                }
                while j < chars.len() && chars[j] != ']' {
                    j += 1;
                }
                if j >= chars.len() {
                    out.push_str(r"\[");
                } else {
                    let mut set = String::new();
                    let inner = &chars[i..j];
                    let (negate, body) = match inner.first() {
                        Some('!') => (true, &inner[1..]),
                        _ => (false, inner),
                    };
                    set.push('[');
                    if negate {
                        set.push('^');
                    }
                    for &ch in body {
                        if matches!(ch, '\\' | '[' | ']' | '^' | '&' | '~') {
                            set.push('\\');
                        }
                        set.push(ch);
                    }
                    set.push(']');
                    out.push_str(&set);
                    i = j + 1;
                }
            }
            other => out.push_str(&regex::escape(&other.to_string())),
        }
    }
    out.push_str(r")\z");
    out
}

/// Parses a time the way st2's `date_utils.parse` does for the usual forms: ISO-8601 / RFC 3339
/// with or without offset (no offset means UTC), with `T` or a space, or a bare date.
pub fn parse_time(text: &str) -> Result<DateTime<Utc>, String> {
    let t = text.trim();
    if let Ok(dt) = DateTime::parse_from_rfc3339(t) {
        return Ok(dt.with_timezone(&Utc));
    }
    for fmt in [
        "%Y-%m-%dT%H:%M:%S%.f%#z",
        "%Y-%m-%d %H:%M:%S%.f%#z",
        "%Y-%m-%dT%H:%M:%S%.f%:z",
    ] {
        if let Ok(dt) = DateTime::parse_from_str(t, fmt) {
            return Ok(dt.with_timezone(&Utc));
        }
    }
    for fmt in [
        "%Y-%m-%dT%H:%M:%S%.f",
        "%Y-%m-%d %H:%M:%S%.f",
        "%Y-%m-%dT%H:%M",
        "%Y-%m-%d %H:%M",
    ] {
        if let Ok(dt) = NaiveDateTime::parse_from_str(t, fmt) {
            return Ok(dt.and_utc());
        }
    }
    if let Ok(d) = NaiveDate::parse_from_str(t, "%Y-%m-%d") {
        if let Some(dt) = d.and_hms_opt(0, 0, 0) {
            return Ok(dt.and_utc());
        }
    }
    Err(format!(
        "{text:?} is not a time squall can parse (use ISO-8601)"
    ))
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn ap(op: &str, value: Value, pattern: Value) -> Result<bool, String> {
        let v = if value.is_null() { None } else { Some(&value) };
        Operator::from_name(op)
            .unwrap()
            .apply(v, &pattern, None, Utc::now())
    }

    #[test]
    fn python_equality() {
        assert!(!ap("equals", json!("137"), json!(137)).unwrap());
        assert!(ap("eq", json!(137), json!(137.0)).unwrap());
        assert!(ap("equals", json!(true), json!(1)).unwrap());
        assert!(ap("equals", json!({"a": [1, 2]}), json!({"a": [1, 2]})).unwrap());
        assert!(!ap("equals", json!(null), json!(null)).unwrap());
        assert!(ap("nequals", json!(null), json!(null)).is_ok_and(|b| !b));
        assert!(ap("neq", json!("a"), json!(null)).unwrap());
    }

    #[test]
    fn containment_and_errors() {
        assert!(ap("contains", json!("hello"), json!("ell")).unwrap());
        assert!(ap("contains", json!(["a", 1]), json!(1)).unwrap());
        assert!(ap("contains", json!({"k": 1}), json!("k")).unwrap());
        assert!(ap("contains", json!(5), json!("5")).is_err());
        assert!(ap("contains", json!("5"), json!(5)).is_err());
        assert!(ap("inside", json!("a"), json!(["a", "b"])).unwrap());
        assert!(ap("nin", json!("c"), json!(["a", "b"])).unwrap());
        assert!(ap("lt", json!(null), json!(5)).is_err());
        assert!(ap("lt", json!("3"), json!(5)).is_err());
        assert!(ap("lt", json!(3), json!(5.5)).unwrap());
        assert!(ap("gt", json!("b"), json!("a")).unwrap());
    }

    #[test]
    fn big_ints_compare_exactly_with_floats() {
        let big = json!(1714557600123456789i64);
        let near: Value = serde_json::from_str("1714557600123456768.0").unwrap();
        assert!(!ap("equals", big.clone(), near.clone()).unwrap());
        assert!(ap("gt", big, near).unwrap());
        assert!(ap("lt", json!(2), json!(2.5)).unwrap());
        assert!(ap("gt", json!(-2), json!(-2.5)).unwrap());
        assert!(ap("eq", json!(3), json!(3.0)).unwrap());
    }

    #[test]
    fn python_regex_semantics() {
        assert!(ap("regex", json!("done: OK\n"), json!("OK$")).unwrap());
        assert!(!ap("regex", json!("done: OK\n\n"), json!("OK$")).unwrap());
        assert!(ap("regex", json!("shop-web-1"), json!("^shop-(?!db-)")).unwrap());
        assert!(!ap("regex", json!("shop-db-1"), json!("^shop-(?!db-)")).unwrap());
        assert!(ap("regex", json!("cost: $5"), json!("[$]5")).unwrap());
        assert!(ap("regex", json!("cost: $5"), json!("\\$5")).unwrap());
        assert!(!ap("regex", json!("OK\n"), json!("OK\\Z")).unwrap());
        assert!(ap("matchregex", json!("a\nb"), json!("a.b")).unwrap());
        assert!(!ap("matchregex", json!("xab"), json!("ab")).unwrap());
    }

    #[test]
    fn wildcard_translation() {
        let re = Regex::new(&fnmatch_to_regex("web-*.example.[!x]om")).unwrap();
        assert!(re.is_match("web-1.example.com").unwrap());
        assert!(!re.is_match("web-1.example.xom").unwrap());
        assert!(!re.is_match("xweb-1.example.com").unwrap());
        let re = Regex::new(&fnmatch_to_regex("a[b")).unwrap();
        assert!(re.is_match("a[b").unwrap());
        let re = Regex::new(&fnmatch_to_regex("f?o")).unwrap();
        assert!(re.is_match("f\no").unwrap());
    }

    #[test]
    fn times() {
        let now = parse_time("2024-01-01T00:10:00Z").unwrap();
        let v = json!("2024-01-01T00:00:00");
        let lt = Operator::TimeDiffLt.apply(Some(&v), &json!(3600), None, now);
        assert!(lt.unwrap());
        let gt = Operator::TimeDiffGt.apply(Some(&v), &json!(60), None, now);
        assert!(gt.unwrap());
        assert!(Operator::TimeDiffGt
            .apply(Some(&v), &json!("60"), None, now)
            .is_err());
        assert!(parse_time("2024-01-01 10:00:00.123+02:00").is_ok());
        assert!(parse_time("yesterday").is_err());
    }
}
