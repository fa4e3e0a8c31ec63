//! Jinja expressions for workflows: squall's template environment
//! ([`squall_rules::template::environment`]) plus Orquesta's functions `ctx()`, `result()`,
//! `succeeded()`, `failed()`, `completed()`, `item()`, `task_status(name)` and
//! `st2kv('system.NAME')` (the key-value store; an absent key is an error, as in Orquesta).
//!
//! The functions are stateless: they read what they answer from hidden variables of the render
//! context ([`Scope`]), so one shared environment serves every workflow and the conductor's state
//! stays plain data. This file must never hold workflow state or do I/O.

use std::sync::{Arc, LazyLock};

use minijinja::value::Value as JValue;
use minijinja::value::{Kwargs, Object};
use minijinja::{Environment, Error, ErrorKind, State};
use serde_json::{Map, Value};
use squall_rules::template::{describe, environment, to_json, KeyValueLookup};

pub use squall_rules::template::is_template;

const CTX: &str = "__squall_ctx";
const RESULT: &str = "__squall_result";
const STATUS: &str = "__squall_status";
const ITEM: &str = "__squall_item";
const TASKS: &str = "__squall_tasks";
const KV: &str = "__squall_kv";

/// The key-value store, reachable from `st2kv()` through a hidden variable.
struct KvHandle(Arc<dyn KeyValueLookup>);

impl std::fmt::Debug for KvHandle {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("<key-value store>")
    }
}

impl Object for KvHandle {}

static ENV: LazyLock<Environment<'static>> = LazyLock::new(|| {
    let mut env = environment();
    env.add_function("ctx", |state: &State, name: Option<String>| {
        let ctx = hidden(state, CTX, "ctx()")?;
        match name {
            None => Ok(ctx),
            Some(n) => lookup_key(&ctx, &n, "ctx"),
        }
    });
    env.add_function("result", |state: &State| hidden(state, RESULT, "result()"));
    env.add_function("succeeded", |state: &State| {
        Ok::<_, Error>(status(state)? == "succeeded")
    });
    env.add_function("failed", |state: &State| {
        Ok::<_, Error>(status(state)? == "failed")
    });
    env.add_function("completed", |state: &State| {
        let s = status(state)?;
        Ok::<_, Error>(s == "succeeded" || s == "failed")
    });
    env.add_function("item", |state: &State, name: Option<String>| {
        let item = hidden(state, ITEM, "item()")?;
        match name {
            None => Ok(item),
            Some(n) => lookup_key(&item, &n, "item"),
        }
    });
    // st2's `st2kv(key, decrypt=false, default=...)`: a secret is its ciphertext unless
    // `decrypt=true`; an absent key is an error unless a default is given.
    env.add_function("st2kv", |state: &State, name: String, kwargs: Kwargs| {
        let decrypt = kwargs.get::<Option<JValue>>("decrypt")?;
        let decrypt = match decrypt {
            None => false,
            Some(v) if v.kind() == minijinja::value::ValueKind::Bool => v.is_true(),
            Some(_) => {
                return Err(Error::new(
                    ErrorKind::InvalidOperation,
                    "st2kv(): decrypt must be true or false",
                ))
            }
        };
        let default = if kwargs.has("default") {
            Some(kwargs.get::<JValue>("default")?)
        } else {
            None
        };
        kwargs.assert_all_used()?;
        let handle = hidden(state, KV, "st2kv()")?;
        let kv = handle.downcast_object_ref::<KvHandle>().ok_or_else(|| {
            Error::new(ErrorKind::InvalidOperation, "st2kv() is not available here")
        })?;
        let key = name.strip_prefix("system.").unwrap_or(&name);
        match (kv.0.get_stored(key, decrypt), default) {
            (Some(v), _) => Ok(JValue::from(v)),
            (None, Some(d)) => Ok(d),
            (None, None) => Err(Error::new(
                ErrorKind::UndefinedError,
                format!("st2kv('{name}'): no such key in the key-value store"),
            )),
        }
    });
    env.add_function("task_status", |state: &State, name: String| {
        let tasks = hidden(state, TASKS, "task_status()")?;
        // A task that has not run answers None, so `task_status('x') == 'succeeded'` is false.
        Ok::<_, Error>(
            tasks
                .get_attr(&name)
                .ok()
                .filter(|v| !v.is_undefined())
                .unwrap_or(JValue::from(())),
        )
    });
    env
});

fn hidden(state: &State, name: &str, func: &str) -> Result<JValue, Error> {
    state.lookup(name).ok_or_else(|| {
        Error::new(
            ErrorKind::InvalidOperation,
            format!("{func} is not available here"),
        )
    })
}

fn status(state: &State) -> Result<String, Error> {
    Ok(hidden(state, STATUS, "the task status")?
        .as_str()
        .unwrap_or_default()
        .to_string())
}

fn lookup_key(map: &JValue, key: &str, func: &str) -> Result<JValue, Error> {
    match map.get_attr(key) {
        Ok(v) if !v.is_undefined() => Ok(v),
        _ => Err(Error::new(
            ErrorKind::UndefinedError,
            format!("{func}('{key}') is not defined"),
        )),
    }
}

/// What an expression can see: the workflow context, and inside a task's transitions, retry
/// and items, that task's status, result and current item.
#[derive(Default)]
pub struct Scope<'a> {
    pub ctx: Option<&'a Map<String, Value>>,
    pub result: Option<&'a Value>,
    pub status: Option<&'a str>,
    pub item: Option<&'a Value>,
    pub tasks: Option<&'a Map<String, Value>>,
    pub kv: Option<&'a Arc<dyn KeyValueLookup>>,
}

impl Scope<'_> {
    fn context(&self) -> JValue {
        let mut m = std::collections::BTreeMap::new();
        if let Some(c) = self.ctx {
            m.insert(CTX, JValue::from_serialize(c));
        }
        if let Some(r) = self.result {
            m.insert(RESULT, JValue::from_serialize(r));
        }
        if let Some(s) = self.status {
            m.insert(STATUS, JValue::from(s));
        }
        if let Some(i) = self.item {
            m.insert(ITEM, JValue::from_serialize(i));
        }
        if let Some(t) = self.tasks {
            m.insert(TASKS, JValue::from_serialize(t));
        }
        if let Some(kv) = self.kv {
            m.insert(KV, JValue::from_object(KvHandle(kv.clone())));
        }
        JValue::from(m)
    }
}

/// `Some(expr)` when `source` is exactly one `{{ expr }}` (surrounding whitespace allowed).
pub fn single_expression(source: &str) -> Option<&str> {
    let t = source.trim();
    let inner = t.strip_prefix("{{")?.strip_suffix("}}")?;
    if inner.contains("{{") || inner.contains("}}") || inner.contains("{%") {
        return None;
    }
    Some(inner.trim()).filter(|s| !s.is_empty())
}

/// Checks that a string's template markup compiles, without rendering anything that matters.
pub fn check_template(source: &str) -> Result<(), String> {
    if !is_template(source) {
        return Ok(());
    }
    if let Some(e) = single_expression(source) {
        return ENV
            .compile_expression_owned(e.to_string())
            .map(|_| ())
            .map_err(|e| describe(&e));
    }
    // Rendering with an empty context compiles the template; only syntax errors count here,
    // since everything else depends on the run's data.
    match ENV.render_str(source, ()) {
        Err(e) if e.kind() == ErrorKind::SyntaxError => Err(describe(&e)),
        _ => Ok(()),
    }
}

/// Renders a value: strings holding exactly one `{{ expr }}` keep the expression's type, other
/// templated strings render to text, lists and maps are rendered member by member.
pub fn render(v: &Value, scope: &Scope) -> Result<Value, String> {
    match v {
        Value::String(s) if is_template(s) => match single_expression(s) {
            Some(e) => eval(e, scope),
            None => ENV
                .render_str(s, scope.context())
                .map(Value::String)
                .map_err(|e| describe(&e)),
        },
        Value::Array(items) => items
            .iter()
            .map(|i| render(i, scope))
            .collect::<Result<Vec<_>, _>>()
            .map(Value::Array),
        Value::Object(m) => m
            .iter()
            .map(|(k, i)| Ok((k.clone(), render(i, scope)?)))
            .collect::<Result<Map<_, _>, String>>()
            .map(Value::Object),
        other => Ok(other.clone()),
    }
}

/// Evaluates a bare expression (the inside of `{{ }}`) to JSON.
pub fn eval(expr: &str, scope: &Scope) -> Result<Value, String> {
    let compiled = ENV
        .compile_expression_owned(expr.to_string())
        .map_err(|e| describe(&e))?;
    let v = compiled.eval(scope.context()).map_err(|e| describe(&e))?;
    if v.is_undefined() {
        return Err(format!("'{expr}' is undefined"));
    }
    to_json(&v)
}

/// Evaluates a `{{ condition }}` to a truth value, as Jinja's `if` would.
pub fn condition(source: &str, scope: &Scope) -> Result<bool, String> {
    let e = single_expression(source).ok_or_else(|| format!("'{source}' is not an expression"))?;
    let compiled = ENV
        .compile_expression_owned(e.to_string())
        .map_err(|e| describe(&e))?;
    let v = compiled.eval(scope.context()).map_err(|e| describe(&e))?;
    Ok(v.is_true())
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn orquesta_functions() {
        let ctx = json!({"a": 1, "l": [1, 2]}).as_object().cloned().unwrap();
        let tasks = json!({"t1": "failed"}).as_object().cloned().unwrap();
        let result = json!({"code": 200});
        let item = json!({"x": "web"});
        let scope = Scope {
            ctx: Some(&ctx),
            result: Some(&result),
            status: Some("succeeded"),
            item: Some(&item),
            tasks: Some(&tasks),
            kv: None,
        };
        assert_eq!(eval("ctx().a + ctx('a')", &scope).unwrap(), json!(2));
        assert_eq!(eval("ctx().l", &scope).unwrap(), json!([1, 2]));
        assert_eq!(eval("result().code", &scope).unwrap(), json!(200));
        assert!(condition("{{ succeeded() and completed() and not failed() }}", &scope).unwrap());
        assert_eq!(eval("item('x')", &scope).unwrap(), json!("web"));
        assert_eq!(eval("task_status('t1')", &scope).unwrap(), json!("failed"));
        assert_eq!(eval("task_status('t9')", &scope).unwrap(), json!(null));
        assert_eq!(
            render(&json!("n={{ ctx().a }}"), &scope).unwrap(),
            json!("n=1")
        );
        assert!(eval("ctx('nope')", &scope).is_err());
        assert!(eval("result()", &Scope::default()).is_err());
    }

    #[test]
    fn syntax_is_checked() {
        assert!(check_template("{{ ctx( }}").is_err());
        assert!(check_template("x {% if %}").is_err());
        assert!(check_template("x {{ ctx().a }} y").is_ok());
        assert!(check_template("plain").is_ok());
    }
}
