//! yaql's standard library (queries, collections, strings, math, boolean, regex, branching),
//! the part st2 workflows use. Every function is one arm of [`call`], so the whole library can be
//! read in one place. Functions here never touch the host; those go through `Context::call`.

use std::cmp::Ordering;

use serde_json::{Map, Value};

use crate::eval::{
    dict_key, fail, float, num, py_cmp, py_eq, truthy, type_name, Eval, Num, Res, Scope,
};
use crate::pyrepr::yaql_str;
use crate::syntax::{Arg, Node};
use crate::EvalError;

/// Functions whose arguments after the first are lambdas, evaluated once per element.
/// Every function and method name the standard library answers to (a name outside it, the
/// host's and the lazy ones is unknown: a load problem for the engine).
pub(crate) const FUNCTIONS: &[&str] = &[
    "abs",
    "all",
    "any",
    "append",
    "bool",
    "coalesce",
    "concat",
    "contains",
    "containsKey",
    "containsValue",
    "count",
    "dict",
    "distinct",
    "endsWith",
    "enumerate",
    "filter",
    "first",
    "flatten",
    "float",
    "get",
    "indexOf",
    "indexWhere",
    "int",
    "isBoolean",
    "isDict",
    "isEmpty",
    "isInteger",
    "isList",
    "isNumber",
    "isString",
    "items",
    "join",
    "keys",
    "last",
    "lastIndexOf",
    "len",
    "let",
    "limit",
    "list",
    "matches",
    "max",
    "min",
    "orderBy",
    "orderByDescending",
    "random",
    "range",
    "regex",
    "replace",
    "reverse",
    "select",
    "selectMany",
    "set",
    "single",
    "skip",
    "skipWhile",
    "split",
    "startsWith",
    "str",
    "substring",
    "sum",
    "switch",
    "take",
    "takeWhile",
    "toCharArray",
    "toList",
    "toLower",
    "toUpper",
    "trim",
    "trimLeft",
    "trimRight",
    "values",
    "where",
    "with",
];

pub(crate) fn is_lazy(name: &str) -> bool {
    matches!(
        name,
        "select"
            | "where"
            | "filter"
            | "any"
            | "all"
            | "orderBy"
            | "orderByDescending"
            | "selectMany"
            | "switch"
            | "distinct"
            | "takeWhile"
            | "skipWhile"
            | "indexWhere"
            | "count"
            | "let"
            | "with"
    )
}

pub(crate) fn regex(pattern: &str) -> Res<regex::Regex> {
    regex::Regex::new(pattern)
        .map_err(|e| EvalError::Failed(format!("bad regular expression {pattern:?}: {e}")))
}

fn list(v: &Value) -> Res<&Vec<Value>> {
    match v {
        Value::Array(items) => Ok(items),
        other => fail(format!("expected a list, got {}", type_name(other))),
    }
}

/// Iterable in yaql's sense: lists, and dicts (their keys) where a collection is expected.
fn iterable(v: &Value) -> Res<Vec<Value>> {
    match v {
        Value::Array(items) => Ok(items.clone()),
        Value::Object(m) => Ok(m.keys().map(|k| Value::String(k.clone())).collect()),
        other => fail(format!("expected a collection, got {}", type_name(other))),
    }
}

fn string(v: &Value) -> Res<&str> {
    match v {
        Value::String(s) => Ok(s),
        other => fail(format!("expected a string, got {}", type_name(other))),
    }
}

fn int(v: &Value) -> Res<i64> {
    match num(v) {
        Some(Num::I(i)) => Ok(i),
        _ => fail(format!("expected an integer, got {}", type_name(v))),
    }
}

fn chars(s: &str) -> Vec<char> {
    s.chars().collect()
}

/// Python's `str.find` over characters.
fn find(hay: &str, needle: &str, start: usize) -> i64 {
    let h = chars(hay);
    let n = chars(needle);
    if start > h.len() {
        return -1;
    }
    (start..=h.len().saturating_sub(n.len()))
        .find(|&i| i + n.len() <= h.len() && h[i..i + n.len()] == n[..])
        .map(|i| i as i64)
        .unwrap_or(-1)
}

fn strip(s: &str, chars_arg: Option<&Value>, left: bool, right: bool) -> Res<String> {
    let set: Option<Vec<char>> = match chars_arg {
        None | Some(Value::Null) => None,
        Some(v) => Some(string(v)?.chars().collect()),
    };
    let is_strip = |c: char| match &set {
        None => c.is_whitespace(),
        Some(set) => set.contains(&c),
    };
    let mut out = s;
    if left {
        out = out.trim_start_matches(is_strip);
    }
    if right {
        out = out.trim_end_matches(is_strip);
    }
    Ok(out.to_string())
}

/// Python's `str.split(sep, maxsplit)`.
fn split(s: &str, sep: Option<&str>, max: i64) -> Vec<Value> {
    let parts: Vec<String> = match sep {
        Some(sep) => {
            if max < 0 {
                s.split(sep).map(String::from).collect()
            } else {
                s.splitn(max as usize + 1, sep).map(String::from).collect()
            }
        }
        None => {
            let mut parts = Vec::new();
            let mut rest = s.trim_start();
            while !rest.is_empty() {
                if max >= 0 && parts.len() as i64 == max {
                    parts.push(rest.trim_end().to_string());
                    break;
                }
                let end = rest.find(char::is_whitespace).unwrap_or(rest.len());
                parts.push(rest[..end].to_string());
                rest = rest[end..].trim_start();
            }
            parts
        }
    };
    parts.into_iter().map(Value::String).collect()
}

fn sort_by_keys(items: Vec<Value>, keys: Vec<Value>, descending: bool) -> Res {
    let mut pairs: Vec<(Value, Value)> = keys.into_iter().zip(items).collect();
    let mut error = None;
    pairs.sort_by(|(a, _), (b, _)| match py_cmp(a, b) {
        Ok(o) => {
            if descending {
                o.reverse()
            } else {
                o
            }
        }
        Err(e) => {
            error.get_or_insert(e);
            Ordering::Equal
        }
    });
    match error {
        Some(e) => Err(e),
        None => Ok(Value::Array(pairs.into_iter().map(|(_, v)| v).collect())),
    }
}

fn extreme(items: &[Value], want: Ordering) -> Res {
    let mut best: Option<&Value> = None;
    for item in items {
        best = match best {
            None => Some(item),
            Some(b) if py_cmp(item, b)? == want => Some(item),
            keep => keep,
        };
    }
    best.cloned()
        .ok_or_else(|| EvalError::Failed("max()/min() of an empty sequence".into()))
}

fn to_int(v: &Value) -> Res {
    match v {
        Value::Null => Ok(Value::from(0)),
        Value::Bool(b) => Ok(Value::from(*b as i64)),
        Value::String(s) => s
            .trim()
            .parse::<i64>()
            .map(Value::from)
            .or_else(|_| fail(format!("invalid literal for int(): {s:?}"))),
        other => match num(other) {
            Some(Num::I(i)) => Ok(Value::from(i)),
            Some(Num::F(f)) if f.is_finite() => Ok(Value::from(f.trunc() as i64)),
            _ => fail(format!("int() of {}", type_name(other))),
        },
    }
}

fn to_float(v: &Value) -> Res {
    match v {
        Value::Null => float(0.0),
        Value::Bool(b) => float(*b as i64 as f64),
        Value::String(s) => match s.trim().parse::<f64>() {
            Ok(f) => float(f),
            Err(_) => fail(format!("could not convert string to float: {s:?}")),
        },
        other => match num(other) {
            Some(n) => float(n.f()),
            None => fail(format!("float() of {}", type_name(other))),
        },
    }
}

fn distinct_values(items: Vec<Value>, keys: Vec<Value>) -> Value {
    let mut seen: Vec<Value> = Vec::new();
    let mut out = Vec::new();
    for (item, key) in items.into_iter().zip(keys) {
        if !seen.iter().any(|s| py_eq(s, &key)) {
            seen.push(key);
            out.push(item);
        }
    }
    Value::Array(out)
}

pub(crate) fn call(
    ev: &Eval,
    name: &str,
    recv: Option<Value>,
    args: &[Arg],
    evaluated: Option<Vec<Value>>,
    scope: &Scope,
) -> Res {
    if is_lazy(name) {
        return call_lazy(ev, name, recv, args, scope);
    }
    if name == "dict" && args.iter().any(|a| matches!(a, Arg::Named(..))) {
        let mut map = Map::new();
        for arg in args {
            match arg {
                Arg::Named(k, v) => {
                    map.insert(dict_key(&ev.eval(k, scope)?)?, ev.eval(v, scope)?);
                }
                Arg::Pos(_) => return fail("dict() mixes pairs and key => value"),
            }
        }
        return Ok(Value::Object(map));
    }
    let mut a: Vec<Value> = Vec::new();
    let is_method = recv.is_some();
    if let Some(r) = recv {
        a.push(r);
    }
    match evaluated {
        Some(values) => a.extend(values),
        None => a.extend(ev.positional(args, scope)?),
    }
    eager(name, is_method, &a)
}

fn call_lazy(ev: &Eval, name: &str, recv: Option<Value>, args: &[Arg], scope: &Scope) -> Res {
    if name == "switch" {
        for arg in args {
            let Arg::Named(cond, value) = arg else {
                return fail("switch() takes condition => value pairs");
            };
            let c = match &recv {
                Some(r) => ev.eval(cond, &scope.with_dollar(r.clone()))?,
                None => ev.eval(cond, scope)?,
            };
            if truthy(&c) {
                return match &recv {
                    Some(r) => ev.eval(value, &scope.with_dollar(r.clone())),
                    None => ev.eval(value, scope),
                };
            }
        }
        return Ok(Value::Null);
    }
    if name == "let" || name == "with" {
        return fail(format!("{name}() is only meaningful on the left of ->"));
    }
    let mut nodes: Vec<&Node> = Vec::new();
    for arg in args {
        match arg {
            Arg::Pos(n) => nodes.push(n),
            Arg::Named(..) => return fail(format!("{name}() takes no named arguments")),
        }
    }
    let collection = match recv {
        Some(r) => r,
        None => match nodes.first() {
            Some(first) => {
                let v = ev.eval(first, scope)?;
                nodes.remove(0);
                v
            }
            None => return fail(format!("{name}() needs a collection")),
        },
    };
    let items = iterable(&collection)?;
    let apply = |node: &Node, item: &Value| ev.eval(node, &scope.with_dollar(item.clone()));
    let lambda = nodes.first().copied();
    let map_all = |node: &Node| -> Res<Vec<Value>> {
        items
            .iter()
            .map(|i| apply(node, i))
            .collect::<Res<Vec<_>>>()
    };
    if nodes.len() > 1 {
        return fail(format!("{name}() takes at most one lambda"));
    }
    match (name, lambda) {
        ("select", Some(f)) => Ok(Value::Array(map_all(f)?)),
        ("where" | "filter", Some(f)) => {
            let mut out = Vec::new();
            for item in &items {
                if truthy(&apply(f, item)?) {
                    out.push(item.clone());
                }
            }
            Ok(Value::Array(out))
        }
        ("any", f) => {
            for item in &items {
                let hit = match f {
                    Some(f) => truthy(&apply(f, item)?),
                    None => truthy(item),
                };
                if hit {
                    return Ok(Value::Bool(true));
                }
            }
            Ok(Value::Bool(false))
        }
        ("all", f) => {
            for item in &items {
                let hit = match f {
                    Some(f) => truthy(&apply(f, item)?),
                    None => truthy(item),
                };
                if !hit {
                    return Ok(Value::Bool(false));
                }
            }
            Ok(Value::Bool(true))
        }
        ("count", None) => Ok(Value::from(items.len())),
        ("count", Some(f)) => {
            let mut n = 0;
            for item in &items {
                if truthy(&apply(f, item)?) {
                    n += 1;
                }
            }
            Ok(Value::from(n))
        }
        ("orderBy", Some(f)) => sort_by_keys(items.clone(), map_all(f)?, false),
        ("orderByDescending", Some(f)) => sort_by_keys(items.clone(), map_all(f)?, true),
        ("selectMany", Some(f)) => {
            let mut out = Vec::new();
            for v in map_all(f)? {
                out.extend(iterable(&v)?);
            }
            Ok(Value::Array(out))
        }
        ("distinct", None) => Ok(distinct_values(items.clone(), items)),
        ("distinct", Some(f)) => Ok(distinct_values(items.clone(), map_all(f)?)),
        ("takeWhile", Some(f)) => {
            let mut out = Vec::new();
            for item in &items {
                if !truthy(&apply(f, item)?) {
                    break;
                }
                out.push(item.clone());
            }
            Ok(Value::Array(out))
        }
        ("skipWhile", Some(f)) => {
            let mut out = Vec::new();
            let mut skipping = true;
            for item in &items {
                if skipping && truthy(&apply(f, item)?) {
                    continue;
                }
                skipping = false;
                out.push(item.clone());
            }
            Ok(Value::Array(out))
        }
        ("indexWhere", Some(f)) => {
            for (i, item) in items.iter().enumerate() {
                if truthy(&apply(f, item)?) {
                    return Ok(Value::from(i));
                }
            }
            Ok(Value::from(-1))
        }
        _ => fail(format!("no function {name}() for these arguments")),
    }
}

fn eager(name: &str, is_method: bool, a: &[Value]) -> Res {
    let no_match = || fail(format!("no function {name}() matches the arguments"));
    match (name, a) {
        // Strings.
        ("toUpper", [s]) => Ok(Value::String(string(s)?.to_uppercase())),
        ("toLower", [s]) => Ok(Value::String(string(s)?.to_lowercase())),
        ("len" | "count", [Value::String(s)]) => Ok(Value::from(s.chars().count())),
        ("len" | "count", [Value::Array(items)]) => Ok(Value::from(items.len())),
        ("len" | "count", [Value::Object(m)]) => Ok(Value::from(m.len())),
        ("split", [s]) => Ok(Value::Array(split(string(s)?, None, -1))),
        ("split", [s, sep]) | ("split", [s, sep, _]) => {
            let max = a.get(2).map(int).transpose()?.unwrap_or(-1);
            let sep = match sep {
                Value::Null => None,
                other => Some(string(other)?),
            };
            if sep == Some("") {
                return fail("empty separator");
            }
            Ok(Value::Array(split(string(s)?, sep, max)))
        }
        ("join", [Value::Array(items), sep]) if is_method => {
            let sep = string(sep)?;
            let parts: Vec<String> = items.iter().map(yaql_str).collect();
            Ok(Value::String(parts.join(sep)))
        }
        ("join", [Value::String(sep), Value::Array(items)]) if is_method => {
            let parts: Vec<String> = items.iter().map(yaql_str).collect();
            Ok(Value::String(parts.join(sep)))
        }
        ("str", [v]) => Ok(Value::String(yaql_str(v))),
        ("concat", items) if !is_method && items.iter().all(|i| i.is_string()) => Ok(
            Value::String(items.iter().filter_map(|i| i.as_str()).collect::<String>()),
        ),
        ("concat", items) => {
            let mut out = Vec::new();
            for i in items {
                out.extend(iterable(i)?);
            }
            Ok(Value::Array(out))
        }
        ("trim", [s, rest @ ..]) if rest.len() <= 1 => {
            Ok(Value::String(strip(string(s)?, rest.first(), true, true)?))
        }
        ("trimLeft", [s, rest @ ..]) if rest.len() <= 1 => {
            Ok(Value::String(strip(string(s)?, rest.first(), true, false)?))
        }
        ("trimRight", [s, rest @ ..]) if rest.len() <= 1 => {
            Ok(Value::String(strip(string(s)?, rest.first(), false, true)?))
        }
        ("replace", [s, Value::Object(repl)]) => {
            let mut out = string(s)?.to_string();
            for (k, v) in repl {
                out = out.replace(k.as_str(), &yaql_str(v));
            }
            Ok(Value::String(out))
        }
        ("replace", [s, old, new, rest @ ..]) if rest.len() <= 1 => {
            let count = rest.first().map(int).transpose()?.unwrap_or(-1);
            let (s, old, new) = (string(s)?, string(old)?, string(new)?);
            Ok(Value::String(if count < 0 {
                s.replace(old, new)
            } else {
                s.replacen(old, new, count as usize)
            }))
        }
        ("substring", [s, start, rest @ ..]) if rest.len() <= 1 => {
            let c = chars(string(s)?);
            let len = c.len() as i64;
            let mut start = int(start)?;
            if start < 0 {
                start += len;
            }
            let start = start.clamp(0, len) as usize;
            let length = rest.first().map(int).transpose()?.unwrap_or(-1);
            let end = if length < 0 {
                c.len()
            } else {
                (start + length as usize).min(c.len())
            };
            Ok(Value::String(c[start..end.max(start)].iter().collect()))
        }
        ("indexOf", [Value::String(s), sub, rest @ ..]) if rest.len() <= 1 => {
            let start = rest.first().map(int).transpose()?.unwrap_or(0).max(0) as usize;
            Ok(Value::from(find(s, string(sub)?, start)))
        }
        ("indexOf", [Value::Array(items), item]) => Ok(Value::from(
            items
                .iter()
                .position(|i| py_eq(i, item))
                .map(|p| p as i64)
                .unwrap_or(-1),
        )),
        ("lastIndexOf", [Value::String(s), sub]) => {
            let (h, n) = (chars(s), chars(string(sub)?));
            let pos = (0..=h.len().saturating_sub(n.len()))
                .rev()
                .find(|&i| i + n.len() <= h.len() && h[i..i + n.len()] == n[..]);
            Ok(Value::from(pos.map(|p| p as i64).unwrap_or(-1)))
        }
        ("lastIndexOf", [Value::Array(items), item]) => Ok(Value::from(
            items
                .iter()
                .rposition(|i| py_eq(i, item))
                .map(|p| p as i64)
                .unwrap_or(-1),
        )),
        ("startsWith", [s, prefixes @ ..]) if !prefixes.is_empty() => {
            let s = string(s)?;
            let mut hit = false;
            for p in prefixes {
                hit |= s.starts_with(string(p)?);
            }
            Ok(Value::Bool(hit))
        }
        ("endsWith", [s, suffixes @ ..]) if !suffixes.is_empty() => {
            let s = string(s)?;
            let mut hit = false;
            for p in suffixes {
                hit |= s.ends_with(string(p)?);
            }
            Ok(Value::Bool(hit))
        }
        ("isEmpty", [Value::Null]) => Ok(Value::Bool(true)),
        ("isEmpty", [s]) => Ok(Value::Bool(string(s)?.trim().is_empty())),
        ("toCharArray", [s]) => Ok(Value::Array(
            string(s)?
                .chars()
                .map(|c| Value::String(c.to_string()))
                .collect(),
        )),
        // Regular expressions.
        ("matches", [s, pattern]) if is_method => {
            Ok(Value::Bool(regex(string(pattern)?)?.is_match(string(s)?)))
        }
        ("regex", _) => fail("regex() objects are not supported; use =~ or matches()"),
        // Types and conversions.
        ("int", [v]) => to_int(v),
        ("float", [v]) => to_float(v),
        ("bool", [v]) => Ok(Value::Bool(truthy(v))),
        ("isString", [v]) => Ok(Value::Bool(v.is_string())),
        ("isList", [v]) => Ok(Value::Bool(v.is_array())),
        ("isDict", [v]) => Ok(Value::Bool(v.is_object())),
        ("isInteger", [v]) => Ok(Value::Bool(matches!(num(v), Some(Num::I(_))))),
        ("isNumber", [v]) => Ok(Value::Bool(num(v).is_some())),
        ("isBoolean", [v]) => Ok(Value::Bool(v.is_boolean())),
        // Math.
        ("abs", [v]) => match num(v) {
            Some(Num::I(i)) => Ok(Value::from(i.unsigned_abs())),
            Some(Num::F(f)) => float(f.abs()),
            None => no_match(),
        },
        ("max", [x, y]) if !is_method => Ok(if py_cmp(y, x)? == Ordering::Greater {
            y.clone()
        } else {
            x.clone()
        }),
        ("min", [x, y]) if !is_method => Ok(if py_cmp(y, x)? == Ordering::Less {
            y.clone()
        } else {
            x.clone()
        }),
        ("max", [c]) => extreme(&iterable(c)?, Ordering::Greater),
        ("min", [c]) => extreme(&iterable(c)?, Ordering::Less),
        ("sum", [c]) => {
            let mut total = Value::from(0);
            for item in iterable(c)? {
                total = crate::eval::binary_values("+", &total, &item)?;
            }
            Ok(total)
        }
        // yaql's `random()` (a float in [0, 1)) and `random(a, b)` (Python's `randint`: an
        // integer in [a, b], both ends included).
        ("random", []) if !is_method => float((random_u64() >> 11) as f64 / (1u64 << 53) as f64),
        ("random", [low, high]) if !is_method => {
            let (low, high) = (int(low)?, int(high)?);
            if high < low {
                return fail(format!("empty range for randrange() ({low}, {})", high + 1));
            }
            let span = (high as i128 - low as i128 + 1) as u128;
            let pick = (random_u64() as u128 * span) >> 64;
            Ok(Value::from((low as i128 + pick as i128) as i64))
        }
        ("range", [stop]) => Ok(Value::Array((0..int(stop)?).map(Value::from).collect())),
        ("range", [start, stop, rest @ ..]) if rest.len() <= 1 => {
            let (start, stop) = (int(start)?, int(stop)?);
            let step = rest.first().map(int).transpose()?.unwrap_or(1);
            if step == 0 {
                return fail("range() step must not be zero");
            }
            let mut out = Vec::new();
            let mut i = start;
            while (step > 0 && i < stop) || (step < 0 && i > stop) {
                out.push(Value::from(i));
                i += step;
            }
            Ok(Value::Array(out))
        }
        // Branching.
        ("coalesce", items) if !is_method => Ok(items
            .iter()
            .find(|v| !v.is_null())
            .cloned()
            .unwrap_or(Value::Null)),
        // Collections.
        ("list", items) if !is_method => Ok(Value::Array(items.to_vec())),
        ("toList", [c]) => Ok(Value::Array(iterable(c)?)),
        ("set", items) if !is_method => Ok(distinct_values(items.to_vec(), items.to_vec())),
        ("dict", []) if !is_method => Ok(Value::Object(Map::new())),
        ("dict", [Value::Array(pairs)]) if !is_method => {
            let mut map = Map::new();
            for pair in pairs {
                match pair {
                    Value::Array(kv) if kv.len() == 2 => {
                        map.insert(dict_key(&kv[0])?, kv[1].clone());
                    }
                    _ => return fail("dict() needs [key, value] pairs"),
                }
            }
            Ok(Value::Object(map))
        }
        ("keys", [Value::Object(m)]) => {
            Ok(Value::Array(m.keys().cloned().map(Value::String).collect()))
        }
        ("values", [Value::Object(m)]) => Ok(Value::Array(m.values().cloned().collect())),
        ("items", [Value::Object(m)]) => Ok(Value::Array(
            m.iter()
                .map(|(k, v)| Value::Array(vec![Value::String(k.clone()), v.clone()]))
                .collect(),
        )),
        ("get", [Value::Object(m), key, rest @ ..]) if rest.len() <= 1 => Ok(m
            .get(&dict_key(key)?)
            .cloned()
            .unwrap_or_else(|| rest.first().cloned().unwrap_or(Value::Null))),
        ("containsKey", [Value::Object(m), key]) => {
            Ok(Value::Bool(m.contains_key(&dict_key(key)?)))
        }
        ("containsValue", [Value::Object(m), v]) => {
            Ok(Value::Bool(m.values().any(|x| py_eq(x, v))))
        }
        ("contains", [c, v]) => Ok(Value::Bool(iterable(c)?.iter().any(|x| py_eq(x, v)))),
        ("first" | "last", [c, rest @ ..]) if rest.len() <= 1 => {
            let items = iterable(c)?;
            let picked = if name == "first" {
                items.first()
            } else {
                items.last()
            };
            match (picked, rest.first()) {
                (Some(v), _) => Ok(v.clone()),
                (None, Some(default)) => Ok(default.clone()),
                (None, None) => fail(format!("{name}() of an empty collection")),
            }
        }
        ("single", [c]) => match iterable(c)?.as_slice() {
            [one] => Ok(one.clone()),
            _ => fail("single() needs exactly one element"),
        },
        ("skip", [c, n]) => Ok(Value::Array(
            iterable(c)?
                .into_iter()
                .skip(int(n)?.max(0) as usize)
                .collect(),
        )),
        ("take" | "limit", [c, n]) => Ok(Value::Array(
            iterable(c)?
                .into_iter()
                .take(int(n)?.max(0) as usize)
                .collect(),
        )),
        ("reverse", [c]) => Ok(Value::Array(iterable(c)?.into_iter().rev().collect())),
        ("flatten", [c]) => {
            fn flat(v: &Value, out: &mut Vec<Value>) {
                match v {
                    Value::Array(items) => items.iter().for_each(|i| flat(i, out)),
                    other => out.push(other.clone()),
                }
            }
            let mut out = Vec::new();
            for item in list(c)? {
                flat(item, &mut out);
            }
            Ok(Value::Array(out))
        }
        ("append", [c, more @ ..]) => {
            let mut items = iterable(c)?;
            items.extend(more.iter().cloned());
            Ok(Value::Array(items))
        }
        ("enumerate", [c, rest @ ..]) if rest.len() <= 1 => {
            let start = rest.first().map(int).transpose()?.unwrap_or(0);
            Ok(Value::Array(
                iterable(c)?
                    .into_iter()
                    .enumerate()
                    .map(|(i, v)| Value::Array(vec![Value::from(i as i64 + start), v]))
                    .collect(),
            ))
        }
        ("isEmpty" | "any" | "all" | "select" | "where", _) => no_match(),
        _ => no_match(),
    }
}

/// 64 random bits. The standard library's hasher keys are drawn from the operating system's
/// randomness (and stepped for every new key), so hashing nothing with a fresh one gives a new
/// random number without a generator crate or any state kept here.
fn random_u64() -> u64 {
    use std::hash::{BuildHasher, Hasher};
    std::collections::hash_map::RandomState::new()
        .build_hasher()
        .finish()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn random_stays_in_its_range() {
        let mut seen = std::collections::BTreeSet::new();
        for _ in 0..2000 {
            let v = eager("random", false, &[Value::from(1), Value::from(4)]);
            let n = v.ok().and_then(|v| v.as_i64());
            assert!(matches!(n, Some(1..=4)), "random(1, 4) gave {n:?}");
            seen.extend(n);
            let f = eager("random", false, &[]).ok().and_then(|v| v.as_f64());
            assert!(
                f.is_some_and(|f| (0.0..1.0).contains(&f)),
                "random() gave {f:?}"
            );
        }
        // Every value of the range comes up, both ends included.
        assert_eq!(seen.into_iter().collect::<Vec<_>>(), vec![1, 2, 3, 4]);
        assert!(eager("random", false, &[Value::from(5), Value::from(5)]).is_ok());
        assert!(eager("random", false, &[Value::from(5), Value::from(4)]).is_err());
    }

    #[test]
    fn every_name_the_library_answers_to_is_listed() {
        // The names in `eager`'s arms, as written (`("len", ...)`, `| "count"`), and the lazy ones.
        let source = include_str!("library.rs");
        let body = &source[source.find("fn eager(").unwrap_or(0)..];
        let mut missing = Vec::new();
        for (i, _) in body.match_indices('"') {
            let rest = &body[i + 1..];
            let Some(end) = rest.find('"') else { continue };
            let name = &rest[..end];
            let before = body[..i].trim_end();
            let is_arm = before.ends_with('(') || before.ends_with('|');
            let after = rest[end + 1..].trim_start();
            let arm_end =
                after.starts_with(',') || after.starts_with('|') || after.starts_with(')');
            if is_arm
                && arm_end
                && !name.is_empty()
                && name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_')
                && name.chars().next().is_some_and(|c| c.is_ascii_alphabetic())
                && !FUNCTIONS.contains(&name)
            {
                missing.push(name.to_string());
            }
        }
        assert!(missing.is_empty(), "not in FUNCTIONS: {missing:?}");
        for lazy in ["select", "where", "switch", "let", "with"] {
            assert!(is_lazy(lazy) && FUNCTIONS.contains(&lazy));
        }
    }
}
