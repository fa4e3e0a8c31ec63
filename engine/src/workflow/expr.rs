//! Expressions for workflows, Jinja `{{ }}` and YAQL `<% %>` (through `squall_yaql`), as
//! Orquesta has both. Jinja: squall's template environment
//! ([`squall_rules::template::environment`]) plus Orquesta's functions `ctx()`, `result()`,
//! `succeeded()`, `failed()`, `completed()`, `item()`, `task_status(name)` and
//! `st2kv('system.NAME')` (the key-value store; an absent key is an error, as in Orquesta),
//! and `task(name)` / `task()` (see [`TaskStates`]), in YAQL too.
//!
//! An ActionChain's templates ([`Scope::names`]) are st2's: Jinja only, the chain's names at
//! the top level (`{{ c1.stdout }}`, `{{ __results }}`, `{{ st2kv.system.k }}`), rendered to
//! text as st2's `render_values` does (see [`render`]).
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

/// Whether a string holds an expression of either language.
pub fn is_template(source: &str) -> bool {
    squall_rules::template::is_template(source) || squall_yaql::has_expressions(source)
}

/// A string that is exactly one expression: its language and its inside.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Single<'a> {
    Jinja(&'a str),
    Yaql(&'a str),
}

/// `Some` when `source` is exactly one `{{ expr }}` or one `<% expr %>` (whitespace around
/// allowed).
pub fn single(source: &str) -> Option<Single<'_>> {
    if let Some(e) = jinja_single(source) {
        return Some(Single::Jinja(e));
    }
    let t = source.trim();
    let inner = t.strip_prefix("<%")?.strip_suffix("%>")?;
    if inner.contains("<%") || inner.contains("%>") || inner.contains('\n') {
        return None;
    }
    Some(Single::Yaql(inner.trim())).filter(|s| !matches!(s, Single::Yaql("")))
}

/// Evaluates one expression of either language to JSON.
pub fn eval_single(single: Single<'_>, scope: &Scope) -> Result<Value, String> {
    match single {
        Single::Jinja(e) => eval(e, scope),
        Single::Yaql(e) => eval_yaql(e, &format!("<% {e} %>"), scope),
    }
}

/// Evaluates the inside `e` of a `<% %>` written as `written`.
fn eval_yaql(e: &str, written: &str, scope: &Scope) -> Result<Value, String> {
    let parsed = squall_yaql::parse(e).map_err(|source| {
        let error = squall_yaql::EvalError::Parse {
            expr: written.to_string(),
            source,
        };
        yaql_error(written, &error)
    })?;
    squall_yaql::evaluate(&parsed, &YaqlScope::new(scope)).map_err(|err| yaql_error(written, &err))
}

/// Orquesta's exception classes that its (and st2's) expression functions raise: an error
/// text starting with one of them followed by ": " names what Python would have raised.
const RAISED: [&str; 3] = [
    "ExpressionEvaluationException",
    "VariableUndefinedError",
    "VariableInaccessibleError",
];

/// An error raised by one of Orquesta's functions, as `Class: message`.
fn raised(class: &str, message: impl std::fmt::Display) -> String {
    format!("{class}: {message}")
}

fn names_its_class(message: &str) -> bool {
    RAISED
        .iter()
        .any(|c| message.strip_prefix(c).is_some_and(|m| m.starts_with(": ")))
}

/// A YAQL error as Orquesta's `YAQLEvaluator` words it (and as it lands in a workflow's
/// errors, prefixed with the exception's class): a missing key is Python's `KeyError`,
/// anything else "Unable to evaluate expression" with the class Python would have raised.
fn yaql_error(expr: &str, err: &squall_yaql::EvalError) -> String {
    let detail = match err {
        squall_yaql::EvalError::MissingKey(key) => {
            return format!(
                "YaqlEvaluationException: Unable to resolve key '{key}' in expression '{expr}' from context."
            )
        }
        squall_yaql::EvalError::Failed(m) if names_its_class(m) => m.clone(),
        squall_yaql::EvalError::Parse { source, .. } => {
            format!("{}: {source}", err.python_class())
        }
        other => format!(
            "{}: {}",
            other.python_class(),
            other.to_string().trim_matches('\'')
        ),
    };
    format!("YaqlEvaluationException: Unable to evaluate expression '{expr}'. {detail}")
}

/// A Jinja error as Orquesta's `JinjaEvaluator` words it. minijinja's texts are its own; the
/// errors of Orquesta's functions carry Orquesta's class and text.
fn jinja_error(expr: &str, e: &Error) -> String {
    let detail = match e.detail() {
        Some(d) if names_its_class(d) => d.to_string(),
        _ if e.kind() == ErrorKind::UndefinedError => format!("UndefinedError: {}", describe(e)),
        _ => format!("TemplateError: {}", describe(e)),
    };
    format!("JinjaEvaluationException: Unable to evaluate expression '{expr}'. {detail}")
}

/// What a YAQL expression sees: `$` is the workflow context, and Orquesta's functions answer
/// from the same scope as Jinja's.
struct YaqlScope<'s, 'a> {
    scope: &'s Scope<'a>,
    root: Value,
}

impl<'s, 'a> YaqlScope<'s, 'a> {
    fn new(scope: &'s Scope<'a>) -> Self {
        YaqlScope {
            scope,
            root: scope
                .ctx
                .map(|c| Value::Object(c.clone()))
                .unwrap_or_else(|| Value::Object(Map::new())),
        }
    }

    fn status(&self, func: &str) -> Result<&str, String> {
        self.scope
            .status
            .ok_or_else(|| format!("{func}() is not available here"))
    }
}

/// `m[key]`, or what Orquesta's `ctx(key)` / `item(key)` raise when it is not there.
fn yaql_key(m: &Value, key: &Value, func: &str) -> Result<Value, String> {
    let key = key
        .as_str()
        .ok_or_else(|| format!("{func}(): the name must be a string"))?;
    m.get(key).cloned().ok_or_else(|| missing_key(func, key))
}

/// Orquesta's error for `ctx(key)` / `item(key)` without such a key.
fn missing_key(func: &str, key: &str) -> String {
    if func == "item" {
        raised(
            "ExpressionEvaluationException",
            format!("Item does not have key \"{key}\"."),
        )
    } else {
        raised(
            "VariableUndefinedError",
            format!("The variable \"{key}\" is referenced before assignment."),
        )
    }
}

impl squall_yaql::Context for YaqlScope<'_, '_> {
    fn root(&self) -> &Value {
        &self.root
    }

    fn call(&self, name: &str, args: &[Value]) -> Option<Result<Value, String>> {
        let scope = self.scope;
        Some(match (name, args) {
            ("ctx", []) => Ok(self.root.clone()),
            ("ctx", [key]) => yaql_key(&self.root, key, "ctx"),
            ("result", []) => scope
                .result
                .cloned()
                .ok_or_else(|| "result() is not available here".to_string()),
            ("succeeded", []) => self
                .status("succeeded")
                .map(|s| Value::Bool(s == "succeeded")),
            ("failed", []) => self.status("failed").map(|s| Value::Bool(s == "failed")),
            ("completed", []) => self
                .status("completed")
                .map(|s| Value::Bool(s == "succeeded" || s == "failed")),
            ("item", []) => scope
                .item
                .cloned()
                .ok_or_else(|| "item() is not available here".to_string()),
            ("item", [key]) => match scope.item {
                Some(item) => yaql_key(item, key, "item"),
                None => Err("item() is not available here".to_string()),
            },
            ("task", []) => scope.task_entry(None, None),
            ("task", [task]) | ("task", [task, _]) => match task.as_str() {
                Some(name) => scope.task_entry(Some(name), route_arg(args.get(1))),
                None => Err("task(): the name must be a string".to_string()),
            },
            ("task_status", [task]) => Ok(scope
                .tasks
                .and_then(|t| t.get(task.as_str().unwrap_or_default()))
                .cloned()
                .unwrap_or(Value::Null)),
            ("st2kv", [key]) | ("st2kv", [key, _]) => {
                self.st2kv(key, matches!(args.get(1), Some(Value::Bool(true))), None)
            }
            // st2's expression functions (`to_json_string`, `regex_match`, `json`, ...).
            _ => return squall_rules::st2fn::call(name, args, &[]),
        })
    }

    /// YAQL's named arguments: `st2kv('k', decrypt => true, default => 'x')`, and st2's
    /// functions' (`to_json_string($, indent => 2)`).
    fn call_kw(
        &self,
        name: &str,
        args: &[Value],
        kwargs: &[(String, Value)],
    ) -> Option<Result<Value, String>> {
        if kwargs.is_empty() {
            return self.call(name, args);
        }
        // st2's `task(task_id=None, route=None)`.
        if name == "task" {
            let mut task = args.first().cloned();
            let mut route = args.get(1).cloned();
            for (k, v) in kwargs {
                match k.as_str() {
                    "task_id" => task = Some(v.clone()),
                    "route" => route = Some(v.clone()),
                    other => {
                        return Some(Err(format!(
                            "task() got an unexpected keyword argument '{other}'"
                        )))
                    }
                }
            }
            let name = match &task {
                None | Some(Value::Null) => None,
                Some(Value::String(s)) => Some(s.as_str()),
                Some(_) => return Some(Err("task(): the name must be a string".to_string())),
            };
            return Some(self.scope.task_entry(name, route_arg(route.as_ref())));
        }
        if name != "st2kv" {
            return squall_rules::st2fn::call(name, args, kwargs);
        }
        let [key] = args else {
            return Some(Err(
                "st2kv() takes the key's name, then decrypt => and default =>".to_string(),
            ));
        };
        let (mut decrypt, mut default) = (false, None);
        for (k, v) in kwargs {
            match (k.as_str(), v) {
                ("decrypt", Value::Bool(b)) => decrypt = *b,
                ("decrypt", other) => {
                    return Some(Err(format!(
                        "st2kv(): decrypt must be true or false, not {other}"
                    )))
                }
                ("default", v) => default = Some(v.clone()),
                (other, _) => {
                    return Some(Err(format!(
                        "st2kv() got an unexpected keyword argument '{other}'"
                    )))
                }
            }
        }
        Some(self.st2kv(key, decrypt, default))
    }
}

impl YaqlScope<'_, '_> {
    /// A key's value (a secret's ciphertext unless `decrypt`), or `default` when it is absent.
    fn st2kv(&self, key: &Value, decrypt: bool, default: Option<Value>) -> Result<Value, String> {
        let Some(kv) = self.scope.kv else {
            return Err("st2kv() is not available here".to_string());
        };
        let name = key.as_str().unwrap_or_default();
        let short = name.strip_prefix("system.").unwrap_or(name);
        match (kv.get_stored(short, decrypt), default) {
            (Some(v), _) => Ok(Value::String(v)),
            (None, Some(d)) => Ok(d),
            (None, None) => Err(format!(
                "st2kv('{name}'): no such key in the key-value store"
            )),
        }
    }
}

const CTX: &str = "__squall_ctx";
const RESULT: &str = "__squall_result";
const STATUS: &str = "__squall_status";
const ITEM: &str = "__squall_item";
const TASKS: &str = "__squall_tasks";
const KV: &str = "__squall_kv";
const CURRENT_TASK: &str = "__squall_current_task";
const TASK_STATES: &str = "__squall_task_states";

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
    // `task()`: the current task's state entry (inside its transitions and retry); `task(name)`:
    // any started task's (see `TaskStates`).
    // st2's `task(task_id=None, route=None)`: the current task's entry (inside its
    // transitions, retry and input) or any started task's (see `TaskStates`).
    env.add_function(
        "task",
        |state: &State, name: Option<String>, route: Option<u64>, kwargs: Kwargs| {
            let name = match name {
                Some(n) => Some(n),
                None => kwargs.get::<Option<String>>("task_id")?,
            };
            let route = match route {
                Some(r) => Some(r),
                None => kwargs.get::<Option<u64>>("route")?,
            };
            kwargs.assert_all_used()?;
            let key = match (&name, route) {
                (None, None) => return hidden(state, CURRENT_TASK, "task() without a task name"),
                (Some(n), None) => n.clone(),
                (n, Some(r)) => {
                    let current = hidden(state, CURRENT_TASK, "task() without a task name");
                    let n = match n {
                        Some(n) => n.clone(),
                        None => current?
                            .get_attr("task_id")
                            .ok()
                            .and_then(|v| v.as_str().map(str::to_string))
                            .unwrap_or_default(),
                    };
                    format!("{n}{ROUTE_SEP}{r}")
                }
            };
            let states = hidden(state, TASK_STATES, "task()")?;
            match states.get_attr(&key) {
                Ok(v) if !v.is_undefined() && !v.is_none() => Ok(v),
                _ => {
                    let n = key.split(ROUTE_SEP).next().unwrap_or_default();
                    Err(Error::new(ErrorKind::InvalidOperation, not_found(n)))
                }
            }
        },
    );
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
            missing_key(func, key),
        )),
    }
}

/// Separates a task's name and route in the Jinja functions' table of task entries.
const ROUTE_SEP: &str = "\u{1}";

/// st2's error for `task(name)` when the task has no execution (on the route asked).
fn not_found(task: &str) -> String {
    raised(
        "ExpressionEvaluationException",
        format!("Unable to find task execution for \"{task}\"."),
    )
}

/// A `route` argument: a whole number, or none.
fn route_arg(v: Option<&Value>) -> Option<usize> {
    v.and_then(Value::as_u64)
        .map(|r| usize::try_from(r).unwrap_or(usize::MAX))
}

/// The tasks of a run as `task(name)` answers them: st2's `task()` (its Orquesta runner
/// registers one), which gives the task execution record `{task_id, task_name, route,
/// status, result, ...}` of the task on the current route (or the one asked). A with-items
/// task's result is st2's `{items: [{status, result}, ...]}` (an item not ended yet is
/// `null`). st2's record also has `task_execution_id`, `workflow_execution_id` and
/// timestamps: the conductor knows no execution ids or clock, so they are left out. A task
/// with no execution on the route is st2's error "Unable to find task execution for ...".
pub trait TaskStates {
    /// `task`'s entry on `route` (or the route it split from), or `None` when it has not
    /// started there.
    fn task_state(&self, task: &str, route: usize) -> Option<Value>;
    /// Every started task's entry, by name for the current route `route` and by
    /// `name` + [`ROUTE_SEP`] + route for each route it ran on.
    fn task_states(&self, route: usize) -> Map<String, Value>;
}

/// A task's entry as `task()` gives it.
pub fn task_entry_value(task: &str, route: usize, status: &Value, result: Value) -> Value {
    serde_json::json!({
        "task_id": task,
        "task_name": task,
        "route": route,
        "status": status,
        "result": result,
    })
}

/// The key of a task's entry on a route in [`TaskStates::task_states`].
pub fn route_key(task: &str, route: usize) -> String {
    format!("{task}{ROUTE_SEP}{route}")
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
    /// The task whose transitions or retry are evaluated (with `status` and `result`): what
    /// `task()` without a name answers.
    pub current: Option<&'a str>,
    /// The route of the task being rendered or completed (Orquesta's routes: 0 unless the
    /// workflow split); `task(name)` looks on it.
    pub route: usize,
    /// The run's tasks, for `task(name)`.
    pub states: Option<&'a dyn TaskStates>,
    /// An ActionChain's names, seen as top-level variables. When set, the expressions are an
    /// ActionChain's: Jinja only (`<% %>` is text) and rendered to text (see [`render`]).
    pub names: Option<&'a Map<String, Value>>,
}

impl Scope<'_> {
    /// `task(name)`, or `task()` for the current task; on `route`, or the current one.
    fn task_entry(&self, name: Option<&str>, route: Option<usize>) -> Result<Value, String> {
        let name = match (name, self.current) {
            (Some(n), _) => n,
            (None, Some(current)) => current,
            (None, None) => {
                return Err(raised(
                    "ExpressionEvaluationException",
                    "The current task is not set in the context.",
                ))
            }
        };
        let route = route.unwrap_or(self.route);
        if self.current == Some(name) && route == self.route {
            if let Some(entry) = self.current_entry() {
                return Ok(entry);
            }
        }
        self.states
            .and_then(|s| s.task_state(name, route))
            .ok_or_else(|| not_found(name))
    }

    /// The current task's entry: its record, with the status and (for a task without items)
    /// the result the scope holds, which are newer while its run is being completed.
    fn current_entry(&self) -> Option<Value> {
        let (name, status) = (self.current?, self.status?);
        let mut entry = self
            .states
            .and_then(|s| s.task_state(name, self.route))
            .unwrap_or_else(|| task_entry_value(name, self.route, &Value::Null, Value::Null));
        entry["status"] = Value::String(status.to_string());
        // A with-items task's record already holds every item (`{items}`), where the scope's
        // result is `result()`'s list.
        let itemized = entry["result"].get("items").is_some();
        if let Some(result) = self.result.filter(|_| !itemized) {
            entry["result"] = result.clone();
        }
        Some(entry)
    }

    /// The render context of `source`. Task entries are gathered only for an expression that
    /// calls `task(`, since that walks every run.
    fn context(&self, source: &str) -> JValue {
        let mut m = std::collections::BTreeMap::new();
        if let Some(names) = self.names {
            for (k, v) in names {
                m.insert(k.as_str(), JValue::from_serialize(v));
            }
            // st2's `render_values` adds the whole context as `__context`.
            m.insert("__context", JValue::from_serialize(names));
            if let Some(kv) = self.kv {
                // st2 puts `system` (the system scope) and `st2kv.system` after the names.
                let lookups = squall_rules::template::context("__context", &Value::Null, kv);
                if let Ok(system) = lookups.get_attr("kv") {
                    m.insert("system", system);
                }
                if let Ok(st2kv) = lookups.get_attr("st2kv") {
                    m.insert("st2kv", st2kv);
                }
            }
        }
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
        if source.contains("task(") {
            let current = self.current_entry();
            let mut states = self
                .states
                .map(|s| s.task_states(self.route))
                .unwrap_or_default();
            if let (Some(entry), Some(name)) = (&current, self.current) {
                states.insert(name.to_string(), entry.clone());
                states.insert(route_key(name, self.route), entry.clone());
            }
            if let Some(entry) = current {
                m.insert(CURRENT_TASK, JValue::from_serialize(entry));
            }
            m.insert(TASK_STATES, JValue::from_serialize(states));
        }
        JValue::from(m)
    }
}

/// `Some(inside)` when `source` is exactly one expression, `{{ }}` or `<% %>` (surrounding
/// whitespace allowed).
pub fn single_expression(source: &str) -> Option<&str> {
    match single(source)? {
        Single::Jinja(e) | Single::Yaql(e) => Some(e),
    }
}

/// `Some(expr)` when `source` is exactly one `{{ expr }}`.
fn jinja_single(source: &str) -> Option<&str> {
    let t = source.trim();
    let inner = t.strip_prefix("{{")?.strip_suffix("}}")?;
    if inner.contains("{{") || inner.contains("}}") || inner.contains("{%") {
        return None;
    }
    Some(inner.trim()).filter(|s| !s.is_empty())
}

/// Checks that a string's template markup compiles, without rendering anything that matters.
pub fn check_template(source: &str) -> Result<(), String> {
    if squall_yaql::has_expressions(source) {
        return squall_yaql::check_text(source).map_err(|e| e.to_string());
    }
    check_jinja(source)
}

/// Orquesta's own functions, as YAQL calls them.
const ORQUESTA_FUNCTIONS: [&str; 9] = [
    "ctx",
    "result",
    "item",
    "succeeded",
    "failed",
    "completed",
    "task_status",
    "st2kv",
    "task",
];

/// The names an expression uses that nothing provides: YAQL functions and methods outside
/// YAQL's library, Orquesta's and st2's functions; Jinja names that are neither functions of
/// the environment nor hidden context (a workflow's variables are `ctx().x`, never bare
/// names). Each is an error when the expression runs, so the loader reports it at its line.
/// Expressions that do not compile are [`check_template`]'s to report.
pub fn unknown_names(source: &str) -> Vec<String> {
    let mut unknown: Vec<String> = Vec::new();
    let mut note = |name: String| {
        if !unknown.contains(&name) {
            unknown.push(name);
        }
    };
    if squall_yaql::has_expressions(source) {
        for name in squall_yaql::calls_in_text(source).unwrap_or_default() {
            let known = squall_yaql::is_standard_function(&name)
                || ORQUESTA_FUNCTIONS.contains(&name.as_str())
                || squall_rules::st2fn::names().any(|n| n == name);
            if !known {
                note(format!("{name}()"));
            }
        }
        return unknown;
    }
    if !squall_rules::template::is_template(source) {
        return unknown;
    }
    let used = match jinja_single(source) {
        Some(e) => ENV
            .compile_expression(e)
            .map(|x| x.undeclared_variables(false)),
        None => ENV
            .template_from_str(source)
            .map(|t| t.undeclared_variables(false)),
    };
    let Ok(mut used) = used.map(|u| u.into_iter().collect::<Vec<_>>()) else {
        return unknown;
    };
    used.sort();
    for name in used {
        if ENV.globals().all(|(global, _)| global != name) {
            note(name);
        }
    }
    unknown
}

/// [`check_template`] for Jinja alone (an ActionChain's templates: `<% %>` is plain text there).
pub fn check_jinja(source: &str) -> Result<(), String> {
    if !squall_rules::template::is_template(source) {
        return Ok(());
    }
    if let Some(e) = jinja_single(source) {
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
///
/// With [`Scope::names`] (an ActionChain), as st2's `render_values`: Jinja only, every templated
/// string renders to text (`{{ n }}` with n = 1 gives "1"; the target action's parameter types
/// cast it back, as st2 casts), a string whose text does not change keeps its value. One
/// difference: a string that is exactly one `{{ expr }}` giving a list or a map keeps the list
/// or map, where st2 holds its Python text (`"['a', 'b']"`) and turns it back with
/// `ast.literal_eval` when a parameter wants an array or object; an action receives the same
/// value, a string parameter the same text (squall casts a list to its Python text), but a
/// published list stays a list. Lists and maps are rendered member by member (st2 renders
/// their JSON text, which a value holding a quote breaks).
pub fn render(v: &Value, scope: &Scope) -> Result<Value, String> {
    if scope.names.is_some() {
        return render_chain(v, scope);
    }
    match v {
        Value::String(s) if squall_yaql::has_expressions(s) => {
            squall_yaql::render_text_located(s, &YaqlScope::new(scope))
                .map_err(|e| yaql_error(&e.expr, &e.error))
        }
        Value::String(s) if is_template(s) => match jinja_single(s) {
            Some(e) => eval(e, scope),
            None => ENV
                .render_str(s, scope.context(s))
                .map(Value::String)
                .map_err(|e| jinja_error(s, &e)),
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

/// [`render`] for an ActionChain.
fn render_chain(v: &Value, scope: &Scope) -> Result<Value, String> {
    match v {
        Value::String(s) if squall_rules::template::is_template(s) => {
            if let Some(e) = jinja_single(s) {
                let value = eval(e, scope)?;
                if value.is_array() || value.is_object() {
                    return Ok(value);
                }
            }
            let text = ENV
                .render_str(s, scope.context(s))
                .map_err(|e| describe(&e))?;
            Ok(if text == *s {
                v.clone()
            } else {
                Value::String(text)
            })
        }
        Value::Array(items) => items
            .iter()
            .map(|i| render_chain(i, scope))
            .collect::<Result<Vec<_>, _>>()
            .map(Value::Array),
        Value::Object(m) => m
            .iter()
            .map(|(k, i)| Ok((k.clone(), render_chain(i, scope)?)))
            .collect::<Result<Map<_, _>, String>>()
            .map(Value::Object),
        other => Ok(other.clone()),
    }
}

/// Evaluates a bare expression (the inside of `{{ }}`) to JSON. An Orquesta workflow's
/// errors are worded as Orquesta's; an ActionChain's ([`Scope::names`]) as minijinja's.
pub fn eval(expr: &str, scope: &Scope) -> Result<Value, String> {
    let error = |e: Error| match scope.names {
        Some(_) => describe(&e),
        None => jinja_error(&format!("{{{{ {expr} }}}}"), &e),
    };
    let compiled = ENV
        .compile_expression_owned(expr.to_string())
        .map_err(error)?;
    let v = compiled.eval(scope.context(expr)).map_err(error)?;
    if v.is_undefined() {
        return Err(match scope.names {
            Some(_) => format!("'{expr}' is undefined"),
            None => format!(
                "JinjaEvaluationException: Unable to evaluate expression '{{{{ {expr} }}}}'. UndefinedError: '{expr}' is undefined"
            ),
        });
    }
    to_json(&v)
}

/// Evaluates a `{{ condition }}` to a truth value, as Jinja's `if` would.
pub fn condition(source: &str, scope: &Scope) -> Result<bool, String> {
    let e = match single(source) {
        Some(Single::Jinja(e)) => e,
        Some(Single::Yaql(e)) => {
            return eval_yaql(e, source.trim(), scope).map(|v| squall_yaql::is_true(&v))
        }
        None => return Err(format!("'{source}' is not an expression")),
    };
    let written = source.trim();
    let compiled = ENV
        .compile_expression_owned(e.to_string())
        .map_err(|e| jinja_error(written, &e))?;
    let v = compiled
        .eval(scope.context(e))
        .map_err(|e| jinja_error(written, &e))?;
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
            ..Scope::default()
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

    /// Two tasks: `a` finished (on routes 0 and 1), `b` running.
    struct Two;

    impl TaskStates for Two {
        fn task_state(&self, task: &str, route: usize) -> Option<Value> {
            let key = route_key(task, route);
            let all = self.task_states(route);
            all.get(&key).or_else(|| all.get(task)).cloned()
        }

        fn task_states(&self, _route: usize) -> Map<String, Value> {
            let a = task_entry_value("a", 0, &json!("succeeded"), json!({"n": 2}));
            let a1 = task_entry_value("a", 1, &json!("succeeded"), json!({"n": 3}));
            let b = task_entry_value("b", 0, &json!("running"), Value::Null);
            let mut m = Map::new();
            m.insert("a".into(), a.clone());
            m.insert(route_key("a", 0), a);
            m.insert(route_key("a", 1), a1);
            m.insert("b".into(), b.clone());
            m.insert(route_key("b", 0), b);
            m
        }
    }

    #[test]
    fn task_gives_st2s_task_records_in_both_languages() {
        let result = json!({"n": 9});
        let scope = Scope {
            states: Some(&Two),
            current: Some("b"),
            status: Some("failed"),
            result: Some(&result),
            ..Scope::default()
        };
        assert_eq!(eval("task('a').result.n", &scope).unwrap(), json!(2));
        assert_eq!(
            eval("task('a', route=1).result.n", &scope).unwrap(),
            json!(3)
        );
        assert_eq!(eval("task('a', 1).route", &scope).unwrap(), json!(1));
        let y = |e: &str| eval_single(single(e).unwrap(), &scope);
        assert_eq!(y("<% task(a).status %>").unwrap(), json!("succeeded"));
        assert_eq!(y("<% task(a, route => 1).result.n %>").unwrap(), json!(3));
        // The current task is seen as it ends, newer than its record.
        let current = json!({"task_id": "b", "task_name": "b", "route": 0, "status": "failed", "result": {"n": 9}});
        assert_eq!(eval("task()", &scope).unwrap(), current);
        assert_eq!(eval("task().task_name", &scope).unwrap(), json!("b"));
        assert_eq!(eval("task('b')", &scope).unwrap(), current);
        assert_eq!(y("<% task() %>").unwrap(), current);
        assert_eq!(y("<% task().task_id %>").unwrap(), json!("b"));
        assert_eq!(
            eval("task('zz')", &scope).unwrap_err(),
            "JinjaEvaluationException: Unable to evaluate expression '{{ task('zz') }}'. ExpressionEvaluationException: Unable to find task execution for \"zz\"."
        );
        assert_eq!(
            y("<% task(\"zz\") %>").unwrap_err(),
            "YaqlEvaluationException: Unable to evaluate expression '<% task(\"zz\") %>'. ExpressionEvaluationException: Unable to find task execution for \"zz\"."
        );
        let outside = Scope {
            states: Some(&Two),
            ..Scope::default()
        };
        assert!(eval("task()", &outside).is_err());
        assert!(eval_single(single("<% task() %>").unwrap(), &outside).is_err());
    }

    #[test]
    fn yaql_errors_read_as_orquestas() {
        let ctx = json!({"name": "x", "n": 8}).as_object().cloned().unwrap();
        let scope = Scope {
            ctx: Some(&ctx),
            ..Scope::default()
        };
        assert_eq!(
            render(&json!("<% ctx().greeting %>"), &scope).unwrap_err(),
            "YaqlEvaluationException: Unable to resolve key 'greeting' in expression '<% ctx().greeting %>' from context."
        );
        assert_eq!(
            render(&json!("hi <% ctx().n.value %>!"), &scope).unwrap_err(),
            "YaqlEvaluationException: Unable to evaluate expression '<% ctx().n.value %>'. NoFunctionRegisteredException: Unknown function \"#property#value\""
        );
        assert_eq!(
            condition("<% succeeded() and $.nope %>", &Scope { status: Some("succeeded"), ..Scope { ctx: Some(&ctx), ..Scope::default() } }).unwrap_err(),
            "YaqlEvaluationException: Unable to resolve key 'nope' in expression '<% succeeded() and $.nope %>' from context."
        );
        assert!(render(&json!("<% ctx(zz) %>"), &scope)
            .unwrap_err()
            .ends_with(
                "VariableUndefinedError: The variable \"zz\" is referenced before assignment."
            ));
        assert!(render(&json!("{{ ctx('zz') }}"), &scope)
            .unwrap_err()
            .starts_with(
                "JinjaEvaluationException: Unable to evaluate expression '{{ ctx('zz') }}'."
            ));
    }

    #[test]
    fn chain_templates_render_to_text_as_st2_does() {
        let names = json!({"n": 1, "ok": true, "l": ["a", "b"], "c1": {"stdout": "x"}})
            .as_object()
            .cloned()
            .unwrap();
        let scope = Scope {
            names: Some(&names),
            ..Scope::default()
        };
        let r = |v: Value| render(&v, &scope);
        assert_eq!(r(json!("{{ n }}")).unwrap(), json!("1"));
        assert_eq!(r(json!("{{ ok }}")).unwrap(), json!("True"));
        assert_eq!(r(json!("{{ c1.stdout }}!")).unwrap(), json!("x!"));
        assert_eq!(r(json!("{{ __context.n }}")).unwrap(), json!("1"));
        assert_eq!(r(json!("{{ l }}")).unwrap(), json!(["a", "b"]));
        assert_eq!(r(json!("l={{ l }}")).unwrap(), json!("l=['a', 'b']"));
        assert_eq!(r(json!("<% $.n %>")).unwrap(), json!("<% $.n %>"));
        assert_eq!(
            r(json!({"k": ["{{ n }}", 2]})).unwrap(),
            json!({"k": ["1", 2]})
        );
        assert!(r(json!("{{ nope }}")).is_err());
        // Orquesta's rendering keeps a single expression's type.
        let orquesta = Scope {
            ctx: Some(&names),
            ..Scope::default()
        };
        assert_eq!(
            render(&json!("{{ ctx().n }}"), &orquesta).unwrap(),
            json!(1)
        );
    }

    #[test]
    fn syntax_is_checked() {
        assert!(check_template("{{ ctx( }}").is_err());
        assert!(check_template("x {% if %}").is_err());
        assert!(check_template("x {{ ctx().a }} y").is_ok());
        assert!(check_template("plain").is_ok());
    }
}
