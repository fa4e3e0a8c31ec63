//! Jinja templating for criteria patterns and action parameters (minijinja), with the context
//! st2 gives them: `trigger` (the payload), `st2kv.system.NAME` and squall's shorter `kv.NAME`.
//!
//! Templates are compiled once when a rule set is built; rendering never parses. The key-value
//! store is reached through [`KeyValueLookup`], which the engine implements: this file must never
//! do I/O of its own.

use std::sync::Arc;

use minijinja::value::{Kwargs, Object, Rest, Value as JValue};
use minijinja::{Environment, ErrorKind, UndefinedBehavior};
use regex::Regex;
use serde_json::Value;

/// Read access to the key-value store, as templates see it.
pub trait KeyValueLookup: Send + Sync {
    fn get(&self, name: &str) -> Option<String>;

    /// The value as st2's workflow function `st2kv(name, decrypt=...)` gives it: a secret's
    /// stored ciphertext unless `decrypt`. A lookup that holds only clear text gives that.
    fn get_stored(&self, name: &str, decrypt: bool) -> Option<String> {
        let _ = decrypt;
        self.get(name)
    }
}

/// A key-value store with nothing in it: for `squall rule test` and tests.
pub struct NoKeyValues;

impl KeyValueLookup for NoKeyValues {
    fn get(&self, _name: &str) -> Option<String> {
        None
    }
}

/// True when a string holds Jinja markup and must be rendered.
pub fn is_template(s: &str) -> bool {
    s.contains("{{") || s.contains("{%")
}

/// Builds squall's Jinja environment: strict about undefined names (a typo is an error, as in
/// st2's rule enforcement), with st2's expression functions ([`crate::st2fn`]) both as filters
/// (`{{ x | to_json_string }}`, as st2's rules have them) and as functions
/// (`{{ to_json_string(x) }}`, as Orquesta has them), and Python string methods.
pub fn environment() -> Environment<'static> {
    let mut env = Environment::new();
    env.set_undefined_behavior(UndefinedBehavior::Strict);
    env.set_auto_escape_callback(|_| minijinja::AutoEscape::None);
    env.set_unknown_method_callback(minijinja_contrib::pycompat::unknown_method_callback);
    env.set_formatter(python_formatter);
    for name in crate::st2fn::names() {
        env.add_filter(name, move |args: Rest<JValue>, kwargs: Kwargs| {
            call_st2(name, &args, &kwargs)
        });
        env.add_function(name, move |args: Rest<JValue>, kwargs: Kwargs| {
            call_st2(name, &args, &kwargs)
        });
    }
    env.add_filter(AS_DATA, as_data);
    env
}

/// The filter squall wraps a parameter's or a criteria pattern's expression in to read its
/// value back as data: `json.dumps` as st2's `to_complex`, but serde's compact text, since
/// only the value read back counts.
const AS_DATA: &str = "__squall_as_data";

/// Calls one of st2's functions from a template: the arguments as JSON (a key that is not in
/// the store as the empty text st2's lookup gives), the result back as a template value.
fn call_st2(
    name: &'static str,
    args: &[JValue],
    kwargs: &Kwargs,
) -> Result<JValue, minijinja::Error> {
    let invalid = |msg: String| minijinja::Error::new(ErrorKind::InvalidOperation, msg);
    if name == "decrypt_kv" {
        // st2 refuses a datastore item that does not exist rather than decrypting nothing.
        if let Some(missing) = args
            .first()
            .and_then(|a| a.downcast_object_ref::<KvObject>())
        {
            return Err(invalid(format!(
                "Referenced datastore item \"{}\" doesn't exist or it contains an empty string",
                missing.prefix.trim_end_matches('.')
            )));
        }
    }
    let positional = args.iter().map(arg_json).collect::<Result<Vec<_>, _>>()?;
    let mut named = Vec::new();
    for key in kwargs.args() {
        let value: JValue = kwargs.get(key)?;
        named.push((key.to_string(), arg_json(&value)?));
    }
    match crate::st2fn::call(name, &positional, &named) {
        Some(Ok(value)) => Ok(JValue::from_serialize(&value)),
        Some(Err(msg)) => Err(invalid(msg)),
        None => Err(invalid(format!("unknown function {name}"))),
    }
}

/// A template value as JSON for st2's functions.
fn arg_json(v: &JValue) -> Result<Value, minijinja::Error> {
    if v.is_undefined() {
        return Err(minijinja::Error::new(
            ErrorKind::UndefinedError,
            "the expression is undefined",
        ));
    }
    if v.downcast_object_ref::<KvObject>().is_some() {
        return Ok(Value::String(String::new()));
    }
    to_json(v).map_err(|e| minijinja::Error::new(ErrorKind::InvalidOperation, e))
}

/// Prints values in text the way Jinja2 under Python does (st2 renders with it): lists and
/// maps as Python's repr (`['web', 'api']`), `None`, `True`, `False`.
fn python_formatter(
    out: &mut minijinja::Output<'_>,
    state: &minijinja::State<'_, '_>,
    value: &JValue,
) -> Result<(), minijinja::Error> {
    use minijinja::value::ValueKind;
    match value.kind() {
        ValueKind::Seq | ValueKind::Map | ValueKind::None | ValueKind::Bool => {
            let json = serde_json::to_value(value)
                .map_err(|e| minijinja::Error::new(ErrorKind::InvalidOperation, e.to_string()))?;
            out.write_str(&squall_yaql::python_repr(&json))
                .map_err(|e| minijinja::Error::new(ErrorKind::WriteFailure, e.to_string()))
        }
        _ => minijinja::escape_formatter(out, state, value),
    }
}

fn as_data(v: JValue) -> Result<String, minijinja::Error> {
    if v.is_undefined() {
        return Err(minijinja::Error::new(
            ErrorKind::UndefinedError,
            "the expression is undefined",
        ));
    }
    if v.downcast_object_ref::<KvObject>().is_some() {
        return Ok("\"\"".to_string());
    }
    serde_json::to_string(&v)
        .map_err(|e| minijinja::Error::new(ErrorKind::InvalidOperation, e.to_string()))
}

/// The key-value store seen from a template: `kv.NAME`, `st2kv.system.NAME`, and dotted names
/// (`kv.app.limit` reads the key `app.limit`).
#[derive(Clone)]
struct KvObject {
    store: Arc<dyn KeyValueLookup>,
    prefix: String,
}

impl std::fmt::Debug for KvObject {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "<key-value lookup {:?}>", self.prefix)
    }
}

impl Object for KvObject {
    fn get_value(self: &Arc<Self>, key: &JValue) -> Option<JValue> {
        let name = format!("{}{}", self.prefix, key.as_str()?);
        match self.store.get(&name) {
            Some(v) => Some(JValue::from(v)),
            None => Some(JValue::from_object(KvObject {
                store: self.store.clone(),
                prefix: format!("{name}."),
            })),
        }
    }

    fn render(self: &Arc<Self>, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result
    where
        Self: Sized + 'static,
    {
        // A key that does not exist renders as empty text, as st2's lookup does.
        f.write_str("")
    }
}

/// `st2kv`: only the `system` scope exists in squall.
#[derive(Debug)]
struct St2KvObject(JValue);

impl Object for St2KvObject {
    fn get_value(self: &Arc<Self>, key: &JValue) -> Option<JValue> {
        (key.as_str()? == "system").then(|| self.0.clone())
    }
}

/// The variables a template sees: `root` bound to `value` (`trigger`, or `item` inside
/// `search`), plus the key-value store.
pub fn context(root: &str, value: &Value, kv: &Arc<dyn KeyValueLookup>) -> JValue {
    let kv_obj = JValue::from_object(KvObject {
        store: kv.clone(),
        prefix: String::new(),
    });
    let st2kv = JValue::from_object(St2KvObject(kv_obj.clone()));
    let mut map = std::collections::BTreeMap::new();
    map.insert(root.to_string(), JValue::from_serialize(value));
    map.insert("kv".to_string(), kv_obj);
    map.insert("st2kv".to_string(), st2kv);
    JValue::from(map)
}

/// What a template sees ([`context`]), built only when a template needs minijinja: a plain
/// attribute path (`{{ trigger.body.n }}`, the common action parameter) is read straight from
/// the data.
pub struct Context<'a> {
    root: &'a str,
    value: &'a Value,
    kv: &'a Arc<dyn KeyValueLookup>,
    built: std::cell::OnceCell<JValue>,
}

impl<'a> Context<'a> {
    pub fn new(root: &'a str, value: &'a Value, kv: &'a Arc<dyn KeyValueLookup>) -> Self {
        Context {
            root,
            value,
            kv,
            built: std::cell::OnceCell::new(),
        }
    }

    /// The context as minijinja values (built on first use).
    pub fn jinja(&self) -> &JValue {
        self.built
            .get_or_init(|| context(self.root, self.value, self.kv))
    }

    /// The value at `path` (the root's name, then keys), if every step is an object holding
    /// the next key.
    fn lookup(&self, path: &[String]) -> Option<&'a Value> {
        let (first, keys) = path.split_first()?;
        if first != self.root {
            return None;
        }
        keys.iter()
            .try_fold(self.value, |v, key| v.as_object()?.get(key))
    }
}

/// The names of a plain attribute path (`trigger.body.n`): identifiers joined by dots, none of
/// them a word Jinja reads otherwise. Anything else (spaces, indexes, filters, calls) is left
/// to minijinja.
fn plain_path(expr: &str) -> Option<Vec<String>> {
    const WORDS: [&str; 16] = [
        "true", "false", "none", "True", "False", "None", "and", "or", "not", "in", "is", "if",
        "else", "loop", "self", "super",
    ];
    let names: Vec<String> = expr.split('.').map(str::to_string).collect();
    let plain = names.iter().all(|n| {
        let mut chars = n.chars();
        chars
            .next()
            .is_some_and(|c| c.is_ascii_alphabetic() || c == '_')
            && chars.all(|c| c.is_ascii_alphanumeric() || c == '_')
            && !WORDS.contains(&n.as_str())
    });
    plain.then_some(names)
}

/// Turns a rendered minijinja value into JSON.
pub fn to_json(v: &JValue) -> Result<Value, String> {
    serde_json::to_value(v).map_err(|e| e.to_string())
}

/// A compiled set of templates living in one environment, addressed by index.
pub struct Templates {
    env: Environment<'static>,
    count: usize,
}

impl Default for Templates {
    fn default() -> Self {
        Templates::new()
    }
}

/// A compiled template.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TemplateId(usize);

/// Where a criteria pattern's or a parameter's template was compiled to.
#[derive(Debug, Clone)]
pub enum Compiled {
    /// A string holding one `{{ expression }}` and nothing else: its value keeps its type.
    Native(TemplateId),
    /// A [`Compiled::Native`] whose expression is a plain attribute path (`trigger.body.n`):
    /// read straight from the data when every step finds its key (the value rendering gives,
    /// without building the template's context), else rendered.
    NativePath { id: TemplateId, path: Vec<String> },
    /// Text with markup: renders to a string.
    Text(TemplateId),
    /// st2's criteria patterns: `{{ x }}` is rendered as `{{ x | to_complex }}` and the whole
    /// output read back as JSON when it parses; otherwise rendered plainly.
    Pattern {
        complex: TemplateId,
        plain: TemplateId,
    },
}

impl Templates {
    pub fn new() -> Templates {
        Templates {
            env: environment(),
            count: 0,
        }
    }

    fn add(&mut self, source: String) -> Result<TemplateId, String> {
        let id = TemplateId(self.count);
        self.env
            .add_template_owned(format!("t{}", self.count), source)
            .map_err(|e| describe(&e))?;
        self.count += 1;
        Ok(id)
    }

    /// Compiles an action parameter's template.
    pub fn compile_value(&mut self, source: &str) -> Result<Compiled, String> {
        match single_expression(source) {
            Some(expr) => {
                let id = self.add(format!("{{{{ ({expr}) | {AS_DATA} }}}}"))?;
                Ok(match plain_path(expr) {
                    Some(path) => Compiled::NativePath { id, path },
                    None => Compiled::Native(id),
                })
            }
            None => Ok(Compiled::Text(self.add(source.to_string())?)),
        }
    }

    /// Compiles a criteria pattern's template the way st2 renders criteria patterns.
    pub fn compile_pattern(&mut self, source: &str) -> Result<Compiled, String> {
        let plain = self.add(source.to_string())?;
        // st2 inserts `| to_complex`; squall's own filter gives the same value read back.
        let complex = match_criteria()
            .replace_all(source, format!("${{1}}${{2}} | {AS_DATA}${{3}}").as_str());
        if complex == source {
            return Ok(Compiled::Text(plain));
        }
        match self.add(complex.into_owned()) {
            Ok(complex) => Ok(Compiled::Pattern { complex, plain }),
            // The rewrite can break a template st2 would still render plainly.
            Err(_) => Ok(Compiled::Text(plain)),
        }
    }

    fn render_text(&self, id: TemplateId, ctx: &JValue) -> Result<String, String> {
        let tmpl = self
            .env
            .get_template(&format!("t{}", id.0))
            .map_err(|e| describe(&e))?;
        tmpl.render(ctx).map_err(|e| describe(&e))
    }

    /// Renders a compiled template to a JSON value in a [`Context`], which is built for
    /// minijinja only if the template needs it.
    pub fn render_in(&self, compiled: &Compiled, ctx: &Context<'_>) -> Result<Value, String> {
        if let Compiled::NativePath { path, .. } = compiled {
            if let Some(found) = ctx.lookup(path) {
                return Ok(found.clone());
            }
        }
        self.render(compiled, ctx.jinja())
    }

    /// Renders a compiled template to a JSON value.
    pub fn render(&self, compiled: &Compiled, ctx: &JValue) -> Result<Value, String> {
        match compiled {
            Compiled::Native(id) | Compiled::NativePath { id, .. } => {
                let text = self.render_text(*id, ctx)?;
                serde_json::from_str(&text).map_err(|e| format!("rendered value is not data: {e}"))
            }
            Compiled::Text(id) => Ok(Value::String(self.render_text(*id, ctx)?)),
            Compiled::Pattern { complex, plain } => {
                if let Ok(text) = self.render_text(*complex, ctx) {
                    if let Ok(v) = serde_json::from_str::<Value>(&text) {
                        return Ok(v);
                    }
                }
                Ok(Value::String(self.render_text(*plain, ctx)?))
            }
        }
    }
}

/// st2's `MATCH_CRITERIA`: `({{)\s*(.*)\s*(}})`, applied line by line like Python's `re.sub`.
fn match_criteria() -> &'static Regex {
    static RE: std::sync::LazyLock<Regex> = std::sync::LazyLock::new(|| {
        Regex::new(r"(\{\{)\s*(.*)\s*(\}\})").expect("a literal, valid regex")
    });
    &RE
}

/// `Some(expr)` when `source` is exactly one `{{ expr }}` (surrounding whitespace allowed).
fn single_expression(source: &str) -> Option<&str> {
    let t = source.trim();
    let inner = t.strip_prefix("{{")?.strip_suffix("}}")?;
    if inner.contains("{{") || inner.contains("}}") || inner.contains("{%") {
        return None;
    }
    Some(inner.trim()).filter(|s| !s.is_empty())
}

/// A minijinja error as one line: what went wrong and where in the template.
pub fn describe(e: &minijinja::Error) -> String {
    let mut msg = match e.detail() {
        Some(detail) => format!("{}: {}", e.kind(), detail),
        None => e.kind().to_string(),
    };
    if let Some(line) = e.line() {
        msg.push_str(&format!(" (template line {line})"));
    }
    msg
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;
    use std::collections::HashMap;

    struct Kv(HashMap<String, String>);
    impl KeyValueLookup for Kv {
        fn get(&self, name: &str) -> Option<String> {
            self.0.get(name).cloned()
        }
    }

    fn kv() -> Arc<dyn KeyValueLookup> {
        let mut m = HashMap::new();
        m.insert("limit".to_string(), "10".to_string());
        m.insert("app.owner".to_string(), "ops".to_string());
        Arc::new(Kv(m))
    }

    #[test]
    fn a_plain_path_reads_what_rendering_gives_and_falls_back_to_it_otherwise() {
        let mut t = Templates::new();
        let payload = json!({
            "n": 5, "big": u64::MAX, "neg": -7, "f": 1.0, "g": 2.5e-300, "s": "007",
            "quote": "it's \"x\"", "nothing": null, "yes": true, "list": [1, "a", {"b": [2]}],
            "labels": {"app": "web", "z": 1, "a": 2, "items": "kept"}, "empty": {},
            "body": {"alerts": [{"labels": {"severity": "page"}}]}
        });
        let kv = kv();
        let paths = [
            "trigger",
            "trigger.n",
            "trigger.big",
            "trigger.neg",
            "trigger.f",
            "trigger.g",
            "trigger.s",
            "trigger.quote",
            "trigger.nothing",
            "trigger.yes",
            "trigger.list",
            "trigger.labels",
            "trigger.labels.items",
            "trigger.empty",
            "trigger.body",
        ];
        // What reading the path gives, and what rendering its template gives.
        let mut both = |path: &str| {
            let fast = t.compile_value(&format!("{{{{ {path} }}}}")).unwrap();
            let Compiled::NativePath { id, .. } = &fast else {
                panic!("{path} is a plain path: {fast:?}");
            };
            let rendered = t.render(&Compiled::Native(*id), &context("trigger", &payload, &kv));
            let read = t.render_in(&fast, &Context::new("trigger", &payload, &kv));
            (read, rendered)
        };
        for path in paths {
            let (read, rendered) = both(path);
            assert_eq!(read, rendered, "{path}");
            assert!(read.is_ok(), "{path}");
        }
        // Misses, steps into a non-object, and other roots are rendered, errors included.
        for path in [
            "trigger.nope",
            "trigger.n.x",
            "trigger.list.x",
            "kv.limit",
            "nope",
        ] {
            let (read, rendered) = both(path);
            assert_eq!(read, rendered, "{path}");
        }
        let limit = t.compile_value("{{ kv.limit }}").unwrap();
        assert_eq!(
            t.render_in(&limit, &Context::new("trigger", &payload, &kv)),
            Ok(json!("10"))
        );
        // Not plain paths: minijinja reads them.
        for source in [
            "{{ trigger.list[0] }}",
            "{{ trigger.n + 1 }}",
            "{{ trigger.s | int }}",
            "{{ trigger . n }}",
            "{{ trigger.list.0 }}",
            "{{ trigger.labels.items() }}",
            "{{ true }}",
            "{{ trigger.none.x if trigger.none else 3 }}",
            "n={{ trigger.n }}",
        ] {
            let compiled = t.compile_value(source).unwrap();
            assert!(
                !matches!(compiled, Compiled::NativePath { .. }),
                "{source}: {compiled:?}"
            );
        }
    }

    #[test]
    fn native_and_text_rendering() {
        let mut t = Templates::new();
        let payload = json!({"n": 5, "labels": {"app": "web"}, "id": "007"});
        let ctx = context("trigger", &payload, &kv());
        let native = t.compile_value("{{ trigger.n }}").unwrap();
        assert_eq!(t.render(&native, &ctx).unwrap(), json!(5));
        let obj = t.compile_value("{{ trigger.labels }}").unwrap();
        assert_eq!(t.render(&obj, &ctx).unwrap(), json!({"app": "web"}));
        let id = t.compile_value("{{ trigger.id }}").unwrap();
        assert_eq!(t.render(&id, &ctx).unwrap(), json!("007"));
        let text = t
            .compile_value("app={{ trigger.labels.app }} n={{ trigger.n }}")
            .unwrap();
        assert_eq!(t.render(&text, &ctx).unwrap(), json!("app=web n=5"));
        let kvt = t
            .compile_value("{{ st2kv.system.limit }}/{{ kv.limit }}/{{ kv.app.owner }}")
            .unwrap();
        assert_eq!(t.render(&kvt, &ctx).unwrap(), json!("10/10/ops"));
        let missing = t.compile_value("{{ trigger.nope }}").unwrap();
        assert!(t.render(&missing, &ctx).is_err());
        let py = t.compile_value("{{ trigger.labels.app.upper() }}").unwrap();
        assert_eq!(t.render(&py, &ctx).unwrap(), json!("WEB"));
    }

    #[test]
    fn criteria_patterns_follow_st2() {
        let mut t = Templates::new();
        let payload = json!({"n": 5, "s": "42"});
        let ctx = context("trigger", &payload, &kv());
        let p = t.compile_pattern("{{ trigger.n }}").unwrap();
        assert_eq!(t.render(&p, &ctx).unwrap(), json!(5));
        let p = t.compile_pattern("{{ trigger.s }}").unwrap();
        assert_eq!(t.render(&p, &ctx).unwrap(), json!("42"));
        let p = t.compile_pattern("x-{{ trigger.s }}").unwrap();
        assert_eq!(t.render(&p, &ctx).unwrap(), json!("x-42"));
        let p = t.compile_pattern("[{{ trigger.n }}]").unwrap();
        assert_eq!(t.render(&p, &ctx).unwrap(), json!([5]));
    }

    #[test]
    fn text_prints_like_python() {
        let mut t = Templates::new();
        let payload = json!({"l": ["web", "it's"], "m": {"a": 1.0, "b": null}, "t": true});
        let ctx = context("trigger", &payload, &kv());
        let c = t
            .compile_value("{{ trigger.l }} {{ trigger.m }} {{ trigger.t }}")
            .unwrap();
        assert_eq!(
            t.render(&c, &ctx).unwrap(),
            json!("['web', \"it's\"] {'a': 1.0, 'b': None} True")
        );
    }

    #[test]
    fn syntax_errors_are_reported() {
        let mut t = Templates::new();
        assert!(t.compile_value("{{ trigger.x ").is_err());
        assert!(t.compile_value("{% if %}").is_err());
    }

    #[test]
    fn filters() {
        let mut t = Templates::new();
        let payload = json!({"host": "web-01.example.com", "doc": "{\"a\": 1}"});
        let ctx = context("trigger", &payload, &kv());
        let c = t
            .compile_value(
                "{{ trigger.host | regex_replace('^(\\\\w+)-(\\\\d+).*$', '\\\\2-\\\\1') }}",
            )
            .unwrap();
        assert_eq!(t.render(&c, &ctx).unwrap(), json!("01-web"));
        let c = t
            .compile_value("{{ (trigger.doc | from_json_string).a }}")
            .unwrap();
        assert_eq!(t.render(&c, &ctx).unwrap(), json!(1));
        let c = t.compile_value("{{ trigger | to_json_string }}").unwrap();
        assert!(t
            .render(&c, &ctx)
            .unwrap()
            .as_str()
            .unwrap()
            .contains("web-01"));
    }

    // st2common/tests/unit/test_jinja_render_*_filters.py: st2's functions as filters, and as
    // Orquesta's functions with named arguments.
    #[test]
    fn st2_functions_as_filters_and_functions() {
        let mut t = Templates::new();
        let payload = json!({
            "obj": {"b": 1, "a": [1, 2]}, "version": "0.9.0", "k1": "xyz", "secs": 12345,
            "path": "/some/path/to/file.txt"
        });
        let kv = kv();
        let ctx = context("trigger", &payload, &kv);
        let mut render = |source: &str| {
            let compiled = t.compile_value(source).map_err(|e| e.to_string())?;
            t.render(&compiled, &ctx)
        };
        assert_eq!(
            render("{{ trigger.obj | to_json_string }}"),
            Ok(json!("{\"b\": 1,\"a\": [1,2]}"))
        );
        assert_eq!(
            render("{{ to_json_string(trigger.obj, indent=2, sort_keys=true) }}"),
            Ok(json!("{\n  \"a\": [\n    1,\n    2\n  ],\n  \"b\": 1\n}"))
        );
        assert_eq!(
            render("{{ trigger.obj | to_yaml_string }}"),
            Ok(json!("a:\n- 1\n- 2\nb: 1\n"))
        );
        assert_eq!(
            render("{{ trigger.version | version_compare(\"0.10.0\") }}"),
            Ok(json!(-1))
        );
        assert_eq!(
            render("v={{ trigger.version | version_less_than(\"0.10.0\") }}"),
            Ok(json!("v=True"))
        );
        assert_eq!(
            render("{{ trigger.k1 | regex_match(\"X\", ignorecase=true) }}"),
            Ok(json!(true))
        );
        assert_eq!(
            render("{{ trigger.secs | to_human_time_from_seconds }}"),
            Ok(json!("3h25m45s"))
        );
        assert_eq!(
            render("{{ basename(trigger.path) }}"),
            Ok(json!("file.txt"))
        );
        assert_eq!(
            render("{{ zip([1, 2], ['a'], pad='z') }}"),
            Ok(json!([[1, "a"], [2, "z"]]))
        );
        assert_eq!(render("{{ kv.limit | decrypt_kv }}"), Ok(json!("10")));
        let missing = render("{{ kv.nope | decrypt_kv }}").unwrap_err();
        assert!(missing.contains("\"nope\" doesn't exist"), "{missing}");
        let bad = render("{{ trigger.obj | to_json_string(indnet=2) }}").unwrap_err();
        assert!(
            bad.contains("to_json_string()") && bad.contains("'indnet'"),
            "{bad}"
        );
        assert!(render("{{ trigger.nope | to_json_string }}").is_err());
    }
}
