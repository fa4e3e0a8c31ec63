//! Evaluation of a syntax tree over JSON data, with Python's semantics for numbers, truth,
//! equality and ordering as yaql inherits them. Never does I/O; host functions go through
//! [`Context::call_kw`].

use serde_json::{Map, Number, Value};

use crate::library;
use crate::syntax::{Arg, Node};
use crate::{Context, EvalError};

pub(crate) type Res<T = Value> = Result<T, EvalError>;

pub(crate) fn fail<T>(msg: impl Into<String>) -> Res<T> {
    Err(EvalError::Failed(msg.into()))
}

/// Variables visible to an expression: `$` is stored under the empty name.
pub(crate) struct Scope<'p> {
    pub(crate) vars: Vec<(String, Value)>,
    pub(crate) parent: Option<&'p Scope<'p>>,
}

impl<'p> Scope<'p> {
    fn lookup<'s>(&'s self, name: &str, ctx: &'s dyn Context) -> Option<&'s Value> {
        let mut scope = Some(self);
        while let Some(s) = scope {
            if let Some((_, v)) = s.vars.iter().rev().find(|(n, _)| n == name) {
                return Some(v);
            }
            scope = s.parent;
        }
        if name.is_empty() {
            Some(ctx.root())
        } else {
            None
        }
    }

    /// A child scope where `$` (and `$1`) is `value`: how yaql calls a lambda argument.
    pub(crate) fn with_dollar(&'p self, value: Value) -> Scope<'p> {
        Scope {
            vars: vec![("1".into(), value.clone()), (String::new(), value)],
            parent: Some(self),
        }
    }
}

pub(crate) struct Eval<'c> {
    pub(crate) ctx: &'c dyn Context,
}

pub(crate) fn evaluate(node: &Node, ctx: &dyn Context) -> Res {
    let root = Scope {
        vars: Vec::new(),
        parent: None,
    };
    Eval { ctx }.eval(node, &root)
}

impl Eval<'_> {
    pub(crate) fn eval(&self, node: &Node, scope: &Scope) -> Res {
        match node {
            Node::Const(v) => Ok(v.clone()),
            Node::Keyword(k) => Ok(Value::String(k.clone())),
            Node::Var(name) => Ok(scope.lookup(name, self.ctx).cloned().unwrap_or(Value::Null)),
            Node::List(args) => {
                let mut items = Vec::with_capacity(args.len());
                for arg in args {
                    match arg {
                        Arg::Pos(n) => items.push(self.eval(n, scope)?),
                        Arg::Named(..) => return fail("a list takes no named items"),
                    }
                }
                Ok(Value::Array(items))
            }
            Node::Map(args) => {
                let mut map = Map::new();
                for arg in args {
                    match arg {
                        Arg::Named(k, v) => {
                            let key = self.eval(k, scope)?;
                            let value = self.eval(v, scope)?;
                            map.insert(dict_key(&key)?, value);
                        }
                        Arg::Pos(_) => return fail("a dict needs key => value items"),
                    }
                }
                Ok(Value::Object(map))
            }
            Node::Call { name, args } => self.call(name, None, args, scope),
            Node::Dot { recv, rhs, safe } => {
                let receiver = self.eval(recv, scope)?;
                if *safe && receiver.is_null() {
                    return Ok(Value::Null);
                }
                self.dot(receiver, rhs, scope)
            }
            Node::Index { recv, args } => {
                let receiver = self.eval(recv, scope)?;
                let args = self.positional(args, scope)?;
                index(&receiver, &args)
            }
            Node::Unary { op, operand } => {
                let v = self.eval(operand, scope)?;
                match *op {
                    "not" => Ok(Value::Bool(!truthy(&v))),
                    "-" => match num(&v) {
                        Some(Num::I(i)) => i
                            .checked_neg()
                            .map(Value::from)
                            .ok_or_else(|| EvalError::Failed("integer overflow".into())),
                        Some(Num::F(f)) => float(-f),
                        None => fail(format!("no operator - for {}", type_name(&v))),
                    },
                    _ => match num(&v) {
                        Some(_) => Ok(v),
                        None => fail(format!("no operator + for {}", type_name(&v))),
                    },
                }
            }
            Node::Binary { op, left, right } => self.binary(op, left, right, scope),
        }
    }

    fn dot(&self, receiver: Value, rhs: &Node, scope: &Scope) -> Res {
        match rhs {
            Node::Call { name, args } => self.call(name, Some(receiver), args, scope),
            Node::Keyword(key) => attribute(&receiver, key),
            other => {
                let inner = scope.with_dollar(receiver);
                self.eval(other, &inner)
            }
        }
    }

    pub(crate) fn positional(&self, args: &[Arg], scope: &Scope) -> Res<Vec<Value>> {
        args.iter()
            .map(|a| match a {
                Arg::Pos(n) => self.eval(n, scope),
                Arg::Named(..) => fail("unexpected named argument"),
            })
            .collect()
    }

    fn call(&self, name: &str, recv: Option<Value>, args: &[Arg], scope: &Scope) -> Res {
        if recv.is_none() && !library::is_lazy(name) {
            let all_positional = args.iter().all(|a| matches!(a, Arg::Pos(_)));
            if all_positional {
                let values = self.positional(args, scope)?;
                if let Some(result) = self.ctx.call_kw(name, &values, &[]) {
                    return result.map_err(EvalError::Failed);
                }
                return library::call(self, name, None, args, Some(values), scope);
            }
            // `name => value` with a bare word is a keyword argument (yaql's keyword rule);
            // with any other left side it is a pair, as `dict('a' => 1)` takes them.
            let keywords = args
                .iter()
                .all(|a| matches!(a, Arg::Pos(_) | Arg::Named(Node::Keyword(_), _)));
            if keywords && name != "dict" {
                let mut values = Vec::new();
                let mut kwargs = Vec::new();
                for arg in args {
                    match arg {
                        Arg::Pos(n) => values.push(self.eval(n, scope)?),
                        Arg::Named(Node::Keyword(k), v) => {
                            kwargs.push((k.clone(), self.eval(v, scope)?));
                        }
                        Arg::Named(..) => {}
                    }
                }
                if let Some(result) = self.ctx.call_kw(name, &values, &kwargs) {
                    return result.map_err(EvalError::Failed);
                }
                let names: Vec<String> = kwargs.iter().map(|(k, _)| format!("'{k}'")).collect();
                return fail(format!(
                    "{name}() takes no keyword argument {}",
                    names.join(", ")
                ));
            }
        }
        library::call(self, name, recv, args, None, scope)
    }

    fn binary(&self, op: &str, left: &Node, right: &Node, scope: &Scope) -> Res {
        match op {
            "and" => {
                let l = self.eval(left, scope)?;
                return if truthy(&l) {
                    self.eval(right, scope)
                } else {
                    Ok(l)
                };
            }
            "or" => {
                let l = self.eval(left, scope)?;
                return if truthy(&l) {
                    Ok(l)
                } else {
                    self.eval(right, scope)
                };
            }
            "->" => return self.send_context(left, right, scope),
            _ => {}
        }
        let l = self.eval(left, scope)?;
        let r = self.eval(right, scope)?;
        binary_values(op, &l, &r)
    }

    /// `let(x => 1) -> $x`: the right side sees the variables the left side defines.
    fn send_context(&self, left: &Node, right: &Node, scope: &Scope) -> Res {
        let Node::Call { name, args } = left else {
            return fail("the left side of -> must be let(...) or with(...)");
        };
        if name != "let" && name != "with" {
            return fail("the left side of -> must be let(...) or with(...)");
        }
        let mut vars = Vec::new();
        let mut index = 1;
        for arg in args {
            match arg {
                Arg::Pos(n) => {
                    let v = self.eval(n, scope)?;
                    vars.push((index.to_string(), v));
                    index += 1;
                }
                Arg::Named(k, v) if name == "let" => {
                    let key = match k {
                        Node::Keyword(k) => k.clone(),
                        other => match self.eval(other, scope)? {
                            Value::String(s) => s,
                            _ => return fail("let() names must be strings"),
                        },
                    };
                    let value = self.eval(v, scope)?;
                    vars.push((key, value));
                }
                Arg::Named(..) => return fail("with() takes no named arguments"),
            }
        }
        let inner = Scope {
            vars,
            parent: Some(scope),
        };
        self.eval(right, &inner)
    }
}

pub(crate) fn dict_key(key: &Value) -> Res<String> {
    match key {
        Value::String(s) => Ok(s.clone()),
        // JSON objects only have string keys; other hashable keys are printed as Python would.
        Value::Number(_) | Value::Bool(_) | Value::Null => Ok(crate::pyrepr::python_repr(key)),
        _ => fail(format!("unhashable type: '{}'", type_name(key))),
    }
}

fn attribute(receiver: &Value, key: &str) -> Res {
    match receiver {
        Value::Object(map) => map
            .get(key)
            .cloned()
            .ok_or_else(|| EvalError::MissingKey(key.to_string())),
        Value::Array(items) => items
            .iter()
            .map(|item| attribute(item, key))
            .collect::<Res<Vec<_>>>()
            .map(Value::Array),
        // yaql looks `x.key` up as the function `#property#key`, which only maps have.
        _ => Err(EvalError::NoFunction(format!("#property#{key}"))),
    }
}

pub(crate) fn index(receiver: &Value, args: &[Value]) -> Res {
    match (receiver, args) {
        (Value::Array(items), [idx]) => {
            let Some(Num::I(i)) = num(idx) else {
                return fail(format!(
                    "list index must be an integer, not {}",
                    type_name(idx)
                ));
            };
            let len = items.len() as i64;
            let pos = if i < 0 { i + len } else { i };
            if pos < 0 || pos >= len {
                return fail("list index out of range");
            }
            Ok(items[pos as usize].clone())
        }
        (Value::Object(map), [key]) => {
            let k = dict_key(key)?;
            map.get(&k).cloned().ok_or(EvalError::MissingKey(k))
        }
        (Value::Object(map), [key, default]) => Ok(map
            .get(&dict_key(key)?)
            .cloned()
            .unwrap_or_else(|| default.clone())),
        _ => fail(format!("no indexer for {}", type_name(receiver))),
    }
}

#[derive(Debug, Clone, Copy)]
pub(crate) enum Num {
    I(i64),
    F(f64),
}

impl Num {
    pub(crate) fn f(self) -> f64 {
        match self {
            Num::I(i) => i as f64,
            Num::F(f) => f,
        }
    }
}

/// A number, excluding booleans (yaql does not do arithmetic on them).
pub(crate) fn num(v: &Value) -> Option<Num> {
    match v {
        Value::Number(n) => {
            if let Some(i) = n.as_i64() {
                Some(Num::I(i))
            } else {
                n.as_f64().map(Num::F)
            }
        }
        _ => None,
    }
}

pub(crate) fn float(f: f64) -> Res {
    Number::from_f64(f)
        .map(Value::Number)
        .ok_or_else(|| EvalError::Failed(format!("{f} is not a JSON number")))
}

pub(crate) fn truthy(v: &Value) -> bool {
    match v {
        Value::Null => false,
        Value::Bool(b) => *b,
        Value::Number(_) => num(v).map(|n| n.f() != 0.0).unwrap_or(false),
        Value::String(s) => !s.is_empty(),
        Value::Array(a) => !a.is_empty(),
        Value::Object(m) => !m.is_empty(),
    }
}

pub(crate) fn type_name(v: &Value) -> &'static str {
    match v {
        Value::Null => "null",
        Value::Bool(_) => "boolean",
        Value::Number(n) if n.is_f64() => "float",
        Value::Number(_) => "integer",
        Value::String(_) => "string",
        Value::Array(_) => "list",
        Value::Object(_) => "dict",
    }
}

/// Python's `==`: 1 == 1.0, True == 1, containers element-wise.
pub(crate) fn py_eq(a: &Value, b: &Value) -> bool {
    let as_num = |v: &Value| match v {
        Value::Bool(b) => Some(Num::I(*b as i64)),
        other => num(other),
    };
    match (a, b) {
        (Value::Array(x), Value::Array(y)) => {
            x.len() == y.len() && x.iter().zip(y).all(|(p, q)| py_eq(p, q))
        }
        (Value::Object(x), Value::Object(y)) => {
            x.len() == y.len() && x.iter().all(|(k, v)| y.get(k).is_some_and(|w| py_eq(v, w)))
        }
        (Value::String(x), Value::String(y)) => x == y,
        (Value::Null, Value::Null) => true,
        _ => match (as_num(a), as_num(b)) {
            (Some(Num::I(x)), Some(Num::I(y))) => x == y,
            (Some(x), Some(y)) => x.f() == y.f(),
            _ => false,
        },
    }
}

/// yaql's ordering operators: numbers with numbers, strings with strings, else an error.
pub(crate) fn py_cmp(a: &Value, b: &Value) -> Res<std::cmp::Ordering> {
    use std::cmp::Ordering;
    match (a, b) {
        (Value::String(x), Value::String(y)) => Ok(x.cmp(y)),
        _ => match (num(a), num(b)) {
            (Some(Num::I(x)), Some(Num::I(y))) => Ok(x.cmp(&y)),
            (Some(x), Some(y)) => Ok(x.f().partial_cmp(&y.f()).unwrap_or(Ordering::Equal)),
            _ => fail(format!(
                "cannot compare {} with {}",
                type_name(a),
                type_name(b)
            )),
        },
    }
}

fn arith(op: &str, a: Num, b: Num) -> Res {
    let overflow = || EvalError::Failed("integer overflow".into());
    match (a, b) {
        (Num::I(x), Num::I(y)) => match op {
            "+" => x.checked_add(y).map(Value::from).ok_or_else(overflow),
            "-" => x.checked_sub(y).map(Value::from).ok_or_else(overflow),
            "*" => x.checked_mul(y).map(Value::from).ok_or_else(overflow),
            "/" | "mod" => {
                if y == 0 {
                    return fail("integer division or modulo by zero");
                }
                let q = x.checked_div_euclid(y).ok_or_else(overflow)?;
                let r = x.rem_euclid(y);
                // Python floors towards negative infinity.
                let (q, r) = if r != 0 && (y < 0) {
                    (q + 1, r + y)
                } else {
                    (q, r)
                };
                Ok(Value::from(if op == "/" { q } else { r }))
            }
            _ => fail(format!("unknown operator {op}")),
        },
        (x, y) => {
            let (x, y) = (x.f(), y.f());
            match op {
                "+" => float(x + y),
                "-" => float(x - y),
                "*" => float(x * y),
                "/" => {
                    if y == 0.0 {
                        return fail("float division by zero");
                    }
                    float(x / y)
                }
                "mod" => {
                    if y == 0.0 {
                        return fail("float modulo");
                    }
                    let r = x % y;
                    float(if r != 0.0 && (r < 0.0) != (y < 0.0) {
                        r + y
                    } else {
                        r
                    })
                }
                _ => fail(format!("unknown operator {op}")),
            }
        }
    }
}

fn repeat<T: Clone>(items: &[T], times: i64) -> Vec<T> {
    let mut out = Vec::new();
    for _ in 0..times.max(0) {
        out.extend_from_slice(items);
    }
    out
}

pub(crate) fn binary_values(op: &str, l: &Value, r: &Value) -> Res {
    use std::cmp::Ordering::*;
    let no_op = || {
        fail(format!(
            "no operator {op} for {} and {}",
            type_name(l),
            type_name(r)
        ))
    };
    match op {
        "=" => return Ok(Value::Bool(py_eq(l, r))),
        "!=" => return Ok(Value::Bool(!py_eq(l, r))),
        "<" => return Ok(Value::Bool(py_cmp(l, r)? == Less)),
        ">" => return Ok(Value::Bool(py_cmp(l, r)? == Greater)),
        "<=" => return Ok(Value::Bool(py_cmp(l, r)? != Greater)),
        ">=" => return Ok(Value::Bool(py_cmp(l, r)? != Less)),
        "in" => {
            return match r {
                Value::Array(items) => Ok(Value::Bool(items.iter().any(|i| py_eq(l, i)))),
                Value::String(s) => match l {
                    Value::String(sub) => Ok(Value::Bool(s.contains(sub.as_str()))),
                    _ => no_op(),
                },
                _ => no_op(),
            }
        }
        "=~" | "!~" => {
            let (Value::String(s), Value::String(pattern)) = (l, r) else {
                return no_op();
            };
            let found = library::regex(pattern)?.is_match(s);
            return Ok(Value::Bool(found == (op == "=~")));
        }
        _ => {}
    }
    if let (Some(a), Some(b)) = (num(l), num(r)) {
        return arith(op, a, b);
    }
    match (op, l, r) {
        ("+", Value::String(a), Value::String(b)) => Ok(Value::String(format!("{a}{b}"))),
        ("+", Value::Array(a), Value::Array(b)) => {
            Ok(Value::Array(a.iter().chain(b.iter()).cloned().collect()))
        }
        ("+", Value::Object(a), Value::Object(b)) => {
            let mut m = a.clone();
            for (k, v) in b {
                m.insert(k.clone(), v.clone());
            }
            Ok(Value::Object(m))
        }
        ("*", Value::String(s), n) | ("*", n, Value::String(s)) => match num(n) {
            Some(Num::I(t)) => Ok(Value::String(s.repeat(t.max(0) as usize))),
            _ => no_op(),
        },
        ("*", Value::Array(items), n) | ("*", n, Value::Array(items)) => match num(n) {
            Some(Num::I(t)) => Ok(Value::Array(repeat(items, t))),
            _ => no_op(),
        },
        _ => no_op(),
    }
}
