//! Action metadata: the st2-shaped YAML that declares an action (name, runner, entry point,
//! typed parameters), parsed into [`ActionMeta`] with every problem reported in one go.
//!
//! Parsing here is pure: it never reads files (the engine passes the text), never renders
//! templates and never looks at the script itself.
//!
//! Choices where st2 is loose, so an operator knows what to expect:
//! - `uid`, `ref`, `id` and `metadata_file` (bookkeeping st2 writes into exported action files)
//!   are accepted and ignored; any other unknown field is an error.
//! - `notify` is st2's: `on-complete`, `on-success`, `on-failure`, each with `message`, `data`
//!   and `routes` (`channels`, st2's older name, is read as `routes`).
//! - A parameter without `type` takes the type of its `default`, or `string` when it has none.
//! - `default: null` is the same as no default.
//! - A string default that contains a Jinja tag (`{{` or `{%`) is not checked against the
//!   parameter's type: st2 renders such defaults (e.g. from the pack config) before use.
//! - Besides st2's parameter fields, the JSON Schema (draft 4) keywords st2 packs use are
//!   understood and enforced as st2 enforces them (see [`crate::schema`]): nested `properties`,
//!   `additionalProperties` and `items`, `minLength`, `maxLength`, `oneOf`, `anyOf`, ...; a
//!   keyword that is neither st2's nor draft 4's is an error, since most are typos.
//! - A name may contain dots (slack's `chat.postMessage`): a reference is split at its first
//!   dot, so `slack.chat.postMessage` is pack `slack`, action `chat.postMessage`.
//! - A default is not checked against its parameter's type, as st2 does not check it: it is
//!   passed to the action as written.

use std::collections::HashMap;
use std::fmt;
use std::path::{Component, Path};
use std::str::FromStr;

use indexmap::IndexMap;
use serde::de::IgnoredAny;
use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::error::SourceProblem;

/// How an action is run.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum RunnerType {
    /// A Rhai script, run by this crate's [`crate::RhaiRuntime`].
    Rhai,
    /// A workflow (`orquesta` or `workflow` in the YAML), run by the engine's conductor.
    Workflow,
    /// st2's `announcement`: the parameters are announced on the event stream
    /// (`st2.announcement__<route>`) and posted to the chat they name; run by the engine.
    Announcement,
    /// st2's `local-shell-cmd`: the `cmd` parameter run by `/bin/sh -c` (`core.local`).
    LocalShellCmd,
    /// st2's `local-shell-script`: the entry point run with the parameters as arguments.
    LocalShellScript,
    /// st2's `python-script`: the entry point's `Action` subclass run by a Python interpreter
    /// (`crate::runners::python`).
    PythonScript,
    /// st2's `action-chain`: the entry point is an ActionChain file (st2's older workflow
    /// format), run by the engine's workflow conductor.
    ActionChain,
    /// st2's `http-request`: one HTTP request made from the parameters (`core.http`).
    HttpRequest,
    /// st2's `noop`: does nothing and succeeds (`core.noop`).
    Noop,
    /// st2's `inquirer`: asks a question and pauses its workflow until someone answers
    /// (`core.ask`); run by the engine.
    Inquirer,
}

impl RunnerType {
    /// The runner type names squall understands, as written in metadata files.
    pub const KNOWN: [&'static str; 11] = [
        "rhai",
        "orquesta",
        "workflow",
        "announcement",
        "local-shell-cmd",
        "local-shell-script",
        "python-script",
        "action-chain",
        "http-request",
        "noop",
        "inquirer",
    ];

    pub fn parse(text: &str) -> Option<RunnerType> {
        match text {
            "rhai" => Some(RunnerType::Rhai),
            "orquesta" | "workflow" => Some(RunnerType::Workflow),
            "announcement" => Some(RunnerType::Announcement),
            "local-shell-cmd" => Some(RunnerType::LocalShellCmd),
            "local-shell-script" => Some(RunnerType::LocalShellScript),
            "python-script" => Some(RunnerType::PythonScript),
            "action-chain" => Some(RunnerType::ActionChain),
            "http-request" => Some(RunnerType::HttpRequest),
            "noop" => Some(RunnerType::Noop),
            "inquirer" => Some(RunnerType::Inquirer),
            // st2's names before 1.x, still in older packs.
            "run-python" => Some(RunnerType::PythonScript),
            "run-local" => Some(RunnerType::LocalShellCmd),
            "run-local-script" => Some(RunnerType::LocalShellScript),
            _ => None,
        }
    }

    /// The runner's name as st2's API gives it (`orquesta` for squall's workflows).
    pub fn st2_name(self) -> &'static str {
        match self {
            RunnerType::Workflow => "orquesta",
            RunnerType::Rhai => "rhai",
            RunnerType::Announcement => "announcement",
            RunnerType::LocalShellCmd => "local-shell-cmd",
            RunnerType::LocalShellScript => "local-shell-script",
            RunnerType::PythonScript => "python-script",
            RunnerType::ActionChain => "action-chain",
            RunnerType::HttpRequest => "http-request",
            RunnerType::Noop => "noop",
            RunnerType::Inquirer => "inquirer",
        }
    }

    /// Whether the engine's workflow conductor runs it (Orquesta and ActionChain files).
    pub fn is_workflow(self) -> bool {
        matches!(self, RunnerType::Workflow | RunnerType::ActionChain)
    }

    /// Whether its actions name a file to run (`entry_point`); the others are wholly
    /// described by their parameters.
    pub fn has_entry_point(self) -> bool {
        matches!(
            self,
            RunnerType::Rhai
                | RunnerType::Workflow
                | RunnerType::ActionChain
                | RunnerType::LocalShellScript
                | RunnerType::PythonScript
        )
    }
}

impl fmt::Display for RunnerType {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            RunnerType::Rhai => "rhai",
            RunnerType::Workflow => "workflow",
            RunnerType::Announcement => "announcement",
            RunnerType::LocalShellCmd => "local-shell-cmd",
            RunnerType::LocalShellScript => "local-shell-script",
            RunnerType::PythonScript => "python-script",
            RunnerType::ActionChain => "action-chain",
            RunnerType::HttpRequest => "http-request",
            RunnerType::Noop => "noop",
            RunnerType::Inquirer => "inquirer",
        })
    }
}

/// The type of a parameter, as st2 names them.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum ParamType {
    String,
    Integer,
    Number,
    Boolean,
    Array,
    Object,
    Null,
}

impl ParamType {
    /// Every type name, in the order error messages list them.
    pub const NAMES: [&'static str; 7] = [
        "string", "integer", "number", "boolean", "array", "object", "null",
    ];

    pub fn name(self) -> &'static str {
        match self {
            ParamType::String => "string",
            ParamType::Integer => "integer",
            ParamType::Number => "number",
            ParamType::Boolean => "boolean",
            ParamType::Array => "array",
            ParamType::Object => "object",
            ParamType::Null => "null",
        }
    }

    /// The type a JSON value already has (integers are `integer`, other numbers `number`).
    pub fn of(value: &Value) -> ParamType {
        match value {
            Value::Null => ParamType::Null,
            Value::Bool(_) => ParamType::Boolean,
            Value::Number(n) if n.is_i64() || n.is_u64() => ParamType::Integer,
            Value::Number(_) => ParamType::Number,
            Value::String(_) => ParamType::String,
            Value::Array(_) => ParamType::Array,
            Value::Object(_) => ParamType::Object,
        }
    }

    /// Whether `value` is of this type without any casting (an integer is a number).
    pub fn admits(self, value: &Value) -> bool {
        let actual = ParamType::of(value);
        actual == self || (self == ParamType::Number && actual == ParamType::Integer)
    }
}

impl fmt::Display for ParamType {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

impl FromStr for ParamType {
    type Err = String;

    fn from_str(text: &str) -> Result<Self, Self::Err> {
        match text {
            "string" => Ok(ParamType::String),
            "integer" => Ok(ParamType::Integer),
            "number" => Ok(ParamType::Number),
            "boolean" => Ok(ParamType::Boolean),
            "array" => Ok(ParamType::Array),
            "object" => Ok(ParamType::Object),
            "null" => Ok(ParamType::Null),
            other => Err(format!(
                "unknown type '{other}' (expected one of: {})",
                ParamType::NAMES.join(", ")
            )),
        }
    }
}

/// The element type of an array parameter (`items: {type: integer}`).
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct ItemsSpec {
    #[serde(rename = "type")]
    pub ty: ParamType,
}

/// One declared parameter of an action.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct ParamSpec {
    #[serde(rename = "type")]
    pub ty: ParamType,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub description: Option<String>,
    pub required: bool,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub default: Option<Value>,
    #[serde(rename = "enum", skip_serializing_if = "Option::is_none")]
    pub enum_values: Option<Vec<Value>>,
    pub secret: bool,
    pub immutable: bool,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub position: Option<u32>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub minimum: Option<f64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub maximum: Option<f64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub items: Option<ItemsSpec>,
    /// The other JSON Schema keywords of the parameter (`properties`, `additionalProperties`,
    /// `items` as written, `minLength`, `oneOf`, ...), checked by [`crate::schema::validate`]
    /// after the value is cast.
    #[serde(flatten)]
    pub schema: serde_json::Map<String, Value>,
}

impl ParamSpec {
    /// A plain optional parameter of the given type, for callers that build metadata in code.
    pub fn of_type(ty: ParamType) -> Self {
        ParamSpec {
            ty,
            description: None,
            required: false,
            default: None,
            enum_values: None,
            secret: false,
            immutable: false,
            position: None,
            minimum: None,
            maximum: None,
            items: None,
            schema: serde_json::Map::new(),
        }
    }

    /// Whether the default is a template the engine renders before use (see the module doc).
    pub fn default_is_template(&self) -> bool {
        matches!(&self.default, Some(Value::String(s)) if is_template(s))
    }
}

/// An st2 tag: `{name, value}`; a plain string in the YAML is a tag with an empty value.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Tag {
    pub name: String,
    pub value: String,
}

/// A parsed, checked action declaration.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct ActionMeta {
    pub name: String,
    pub pack: Option<String>,
    pub description: String,
    pub enabled: bool,
    pub runner_type: RunnerType,
    pub entry_point: String,
    pub parameters: IndexMap<String, ParamSpec>,
    pub output_schema: Option<Value>,
    pub tags: Vec<Tag>,
    pub timeout: Option<u64>,
    pub idempotent: bool,
    /// squall: with remote workers, the named queue its executions go to (a template over the
    /// execution's parameters, e.g. `"{{ host }}"`), unless a rule or the request names one.
    pub queue: Option<String>,
    /// st2's `notify`: what to announce when an execution of it ends.
    pub notify: Option<Notify>,
}

/// st2's notification settings (an action's `notify`, or an execution's): for each outcome, a
/// `core.st2.generic.notifytrigger` instance per route when an execution ends.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Notify {
    #[serde(
        default,
        rename = "on-complete",
        alias = "on_complete",
        skip_serializing_if = "Option::is_none"
    )]
    pub on_complete: Option<NotifySubSection>,
    #[serde(
        default,
        rename = "on-success",
        alias = "on_success",
        skip_serializing_if = "Option::is_none"
    )]
    pub on_success: Option<NotifySubSection>,
    #[serde(
        default,
        rename = "on-failure",
        alias = "on_failure",
        skip_serializing_if = "Option::is_none"
    )]
    pub on_failure: Option<NotifySubSection>,
}

/// One outcome's notification: a Jinja `message` and `data` (rendered with the execution's
/// `action_parameters`, `action_context` and `action_results`), sent to each route.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NotifySubSection {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub message: Option<String>,
    #[serde(default, skip_serializing_if = "serde_json::Map::is_empty")]
    pub data: serde_json::Map<String, Value>,
    #[serde(default, alias = "channels")]
    pub routes: Vec<String>,
}

impl Notify {
    /// The sub-sections that apply to an execution that ended `succeeded` (or not), with the
    /// suffix st2 gives a message that has none ("succeeded.", "failed.", "completed.").
    pub fn applicable(&self, succeeded: bool) -> Vec<(&NotifySubSection, &'static str)> {
        let mut out = Vec::new();
        if let Some(s) = &self.on_complete {
            out.push((s, "completed."));
        }
        match (succeeded, &self.on_success, &self.on_failure) {
            (true, Some(s), _) => out.push((s, "succeeded.")),
            (false, _, Some(s)) => out.push((s, "failed.")),
            _ => {}
        }
        out
    }
}

impl ActionMeta {
    /// The action's reference, `pack.name`. The metadata's own `pack` wins; `pack` (the folder
    /// the engine found the file in) is used when the metadata names none.
    pub fn action_ref(&self, pack: &str) -> String {
        format!("{}.{}", self.pack.as_deref().unwrap_or(pack), self.name)
    }

    /// Whether parameter `name` is declared `secret` (its value is never shown).
    pub fn is_secret(&self, name: &str) -> bool {
        self.parameters.get(name).is_some_and(|spec| spec.secret)
    }

    /// Parses and checks metadata YAML, returning every problem found, each with its line
    /// when it can be located.
    pub fn from_yaml(text: &str) -> Result<ActionMeta, Vec<SourceProblem>> {
        if text.trim().is_empty() {
            return Err(vec![SourceProblem::at(
                None,
                "the file is empty: expected an action's metadata (name, runner_type, entry_point, parameters)",
            )]);
        }
        let raw: RawAction = serde_yaml::from_str(text).map_err(|e| vec![yaml_problem(&e)])?;
        let lines = KeyLines::scan(text);
        let mut checker = Checker {
            lines: &lines,
            problems: Vec::new(),
            runner_params: Vec::new(),
        };
        let meta = checker.check(raw);
        let mut problems = checker.problems;
        match meta {
            Some(meta) if problems.is_empty() => Ok(meta),
            _ => {
                // Stable sort: problems without a line keep their order, after the located ones.
                problems.sort_by_key(|p| p.line.unwrap_or(usize::MAX));
                Err(problems)
            }
        }
    }
}

/// The parameters st2's runners declare themselves (their `runner.yaml`), which every action
/// of the runner has without declaring them. An action may declare one again, in part: what
/// it gives overrides the runner's attributes (`default`, `immutable`...) and the rest (its
/// type, say) comes from the runner, as st2 merges them.
///
/// The shell and Python runners apply their own defaults when they run (timeout, `kwarg_op`,
/// log level), so their parameters are added without defaults and an execution records only
/// what was given; the others' defaults are the parameters' (an inquiry's schema and ttl).
fn runner_parameters(runner: RunnerType) -> &'static str {
    match runner {
        RunnerType::LocalShellCmd => {
            "cmd: {type: string}\ncwd: {type: string}\nenv: {type: object}\nkwarg_op: {type: string}\nsudo: {type: boolean}\nsudo_password: {type: string, secret: true}\ntimeout: {type: integer}\n"
        }
        RunnerType::LocalShellScript => {
            "cwd: {type: string}\nenv: {type: object}\nkwarg_op: {type: string}\nsudo: {type: boolean}\nsudo_password: {type: string, secret: true}\ntimeout: {type: integer}\n"
        }
        RunnerType::PythonScript => {
            "env: {type: object}\ntimeout: {type: integer}\nlog_level: {type: string, enum: [AUDIT, CRITICAL, DEBUG, ERROR, INFO, WARNING]}\ndebug: {type: boolean}\ncontent_version: {type: string}\n"
        }
        RunnerType::Inquirer => {
            "schema:\n  type: object\n  description: A JSON schema that will be used to validate the response data\n  default:\n    title: response_data\n    type: object\n    properties:\n      continue:\n        type: boolean\n        description: Would you like to continue the workflow?\n        required: true\nroute:\n  type: string\n  default: \"\"\n  description: An arbitrary value for allowing rules to route to proper notification channel\nroles:\n  type: array\n  default: []\n  description: A list of roles that are permitted to respond to the action (if nothing provided, all are permitted)\nusers:\n  type: array\n  default: []\n  description: A list of usernames that are permitted to respond to the action (if nothing provided, all are permitted)\nttl:\n  type: integer\n  default: 1440\n  description: Time (in minutes) to wait before timing out the inquiry if no response is received\n"
        }
        RunnerType::HttpRequest => {
            "url: {type: string, required: true}\nheaders: {type: object}\ncookies: {type: object}\nusername: {type: string}\npassword: {type: string, secret: true}\nhttp_proxy: {type: string}\nhttps_proxy: {type: string}\nallow_redirects: {type: boolean, default: false}\nverify_ssl_cert: {type: boolean, default: true}\nurl_hosts_blacklist: {type: array}\nurl_hosts_whitelist: {type: array}\n"
        }
        // The announcement runner's `route` and `experimental` are the actions' own in
        // squall's packs, and the announcement carries the parameters as they are.
        RunnerType::Rhai
        | RunnerType::Workflow
        | RunnerType::ActionChain
        | RunnerType::Announcement
        | RunnerType::Noop => "",
    }
}

/// An action's parameters with its runner's merged in (see [`runner_parameters`]).
fn with_runner_parameters(
    runner: RunnerType,
    mut declared: IndexMap<String, Option<RawParam>>,
) -> IndexMap<String, Option<RawParam>> {
    let text = runner_parameters(runner);
    if text.is_empty() {
        return declared;
    }
    let Ok(inherited) = serde_yaml::from_str::<IndexMap<String, RawParam>>(text) else {
        return declared;
    };
    for (name, base) in inherited {
        match declared.get_mut(&name) {
            None => {
                declared.insert(name, Some(base));
            }
            Some(slot) => {
                let own = slot.take().unwrap_or_default();
                *slot = Some(overlay(base, own));
            }
        }
    }
    declared
}

/// `own`'s attributes over `base`'s.
fn overlay(base: RawParam, own: RawParam) -> RawParam {
    let (Ok(Value::Object(mut merged)), Ok(Value::Object(own_fields))) =
        (serde_json::to_value(&base), serde_json::to_value(&own))
    else {
        return own;
    };
    for (key, value) in own_fields {
        if !value.is_null() {
            merged.insert(key, value);
        }
    }
    serde_json::from_value(Value::Object(merged)).unwrap_or(own)
}

pub(crate) fn is_template(text: &str) -> bool {
    text.contains("{{") || text.contains("{%")
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawAction {
    name: Option<String>,
    pack: Option<String>,
    description: Option<String>,
    enabled: Option<bool>,
    runner_type: Option<String>,
    entry_point: Option<String>,
    parameters: Option<IndexMap<String, Option<RawParam>>>,
    output_schema: Option<Value>,
    tags: Option<Vec<RawTag>>,
    timeout: Option<u64>,
    idempotent: Option<bool>,
    queue: Option<String>,
    // Bookkeeping fields st2 writes into exported files; accepted so such files load.
    #[serde(rename = "uid")]
    _uid: Option<IgnoredAny>,
    #[serde(rename = "ref")]
    _ref: Option<IgnoredAny>,
    #[serde(rename = "id")]
    _id: Option<IgnoredAny>,
    notify: Option<Value>,
    #[serde(rename = "metadata_file")]
    _metadata_file: Option<IgnoredAny>,
}

#[derive(Deserialize, Serialize, Default, Clone)]
#[serde(deny_unknown_fields)]
struct RawParam {
    #[serde(rename = "type")]
    ty: Option<String>,
    description: Option<String>,
    /// st2's `true`/`false`, or, on an object, draft 4's list of required properties.
    required: Option<Value>,
    default: Option<Value>,
    #[serde(rename = "enum")]
    enum_values: Option<Vec<Value>>,
    secret: Option<bool>,
    immutable: Option<bool>,
    position: Option<u32>,
    minimum: Option<f64>,
    maximum: Option<f64>,
    items: Option<Value>,
    // JSON Schema draft 4, as st2 validates parameters with it.
    properties: Option<Value>,
    #[serde(rename = "additionalProperties")]
    additional_properties: Option<Value>,
    #[serde(rename = "patternProperties")]
    pattern_properties: Option<Value>,
    #[serde(rename = "minLength")]
    min_length: Option<Value>,
    #[serde(rename = "maxLength")]
    max_length: Option<Value>,
    pattern: Option<Value>,
    format: Option<Value>,
    title: Option<Value>,
    #[serde(rename = "oneOf")]
    one_of: Option<Value>,
    #[serde(rename = "anyOf")]
    any_of: Option<Value>,
    #[serde(rename = "allOf")]
    all_of: Option<Value>,
    not: Option<Value>,
    #[serde(rename = "minItems")]
    min_items: Option<Value>,
    #[serde(rename = "maxItems")]
    max_items: Option<Value>,
    #[serde(rename = "uniqueItems")]
    unique_items: Option<Value>,
    #[serde(rename = "exclusiveMinimum")]
    exclusive_minimum: Option<Value>,
    #[serde(rename = "exclusiveMaximum")]
    exclusive_maximum: Option<Value>,
}

impl RawParam {
    /// The draft-4 keywords given besides st2's own fields, as a schema mapping.
    fn schema_keywords(&self) -> serde_json::Map<String, Value> {
        let fields = [
            ("items", &self.items),
            ("properties", &self.properties),
            ("additionalProperties", &self.additional_properties),
            ("patternProperties", &self.pattern_properties),
            ("minLength", &self.min_length),
            ("maxLength", &self.max_length),
            ("pattern", &self.pattern),
            ("format", &self.format),
            ("title", &self.title),
            ("oneOf", &self.one_of),
            ("anyOf", &self.any_of),
            ("allOf", &self.all_of),
            ("not", &self.not),
            ("minItems", &self.min_items),
            ("maxItems", &self.max_items),
            ("uniqueItems", &self.unique_items),
            ("exclusiveMinimum", &self.exclusive_minimum),
            ("exclusiveMaximum", &self.exclusive_maximum),
        ];
        let required = self.required.as_ref().filter(|r| r.is_array());
        fields
            .into_iter()
            .chain([("required", &required.cloned())])
            .filter_map(|(key, value)| {
                value
                    .as_ref()
                    .filter(|v| !v.is_null())
                    .map(|v| (key.to_string(), v.clone()))
            })
            .collect()
    }
}

#[derive(Deserialize)]
#[serde(untagged)]
enum RawTag {
    Plain(String),
    Named {
        name: String,
        #[serde(default)]
        value: Option<Value>,
    },
}

fn yaml_problem(error: &serde_yaml::Error) -> SourceProblem {
    let mut message = error.to_string();
    // The location is reported in its own fields; keep the message free of it.
    if let Some(at) = message.rfind(" at line ") {
        let tail = &message[at + " at line ".len()..];
        if tail
            .split(" column ")
            .all(|n| !n.is_empty() && n.bytes().all(|b| b.is_ascii_digit()))
        {
            message.truncate(at);
        }
    }
    if message.contains("untagged enum RawTag") {
        message = "tags: each tag must be a string or a mapping {name, value}".to_string();
    }
    let location = error.location();
    SourceProblem {
        line: location.as_ref().map(|l| l.line()),
        column: location.as_ref().map(|l| l.column()),
        message,
    }
}

/// Where keys sit in the source, found by scanning block-style YAML: serde does not keep
/// positions for values that parsed fine but fail a semantic check.
#[derive(Default)]
struct KeyLines {
    top: HashMap<String, (usize, usize)>,
    params: HashMap<String, (usize, usize)>,
    param_fields: HashMap<(String, String), (usize, usize)>,
}

impl KeyLines {
    fn scan(text: &str) -> KeyLines {
        let mut found = KeyLines::default();
        let mut in_params = false;
        let mut param_indent: Option<usize> = None;
        let mut field_indent: Option<usize> = None;
        let mut current: Option<String> = None;
        for (index, line) in text.lines().enumerate() {
            let number = index + 1;
            let trimmed = line.trim_start();
            if trimmed.is_empty() || trimmed.starts_with('#') || trimmed.starts_with("---") {
                continue;
            }
            let indent = line.len() - trimmed.len();
            let Some(key) = mapping_key(trimmed) else {
                continue;
            };
            let at = (number, indent + 1);
            if indent == 0 {
                in_params = key == "parameters";
                param_indent = None;
                field_indent = None;
                current = None;
                found.top.entry(key).or_insert(at);
                continue;
            }
            if !in_params {
                continue;
            }
            let level = *param_indent.get_or_insert(indent);
            if indent == level {
                field_indent = None;
                found.params.entry(key.clone()).or_insert(at);
                current = Some(key);
            } else if indent > level {
                let field_level = *field_indent.get_or_insert(indent);
                if let (true, Some(param)) = (indent == field_level, &current) {
                    found.param_fields.entry((param.clone(), key)).or_insert(at);
                }
            }
        }
        found
    }

    fn top(&self, key: &str) -> Option<(usize, usize)> {
        self.top.get(key).copied()
    }

    fn param(&self, name: &str) -> Option<(usize, usize)> {
        self.params.get(name).copied()
    }

    /// The line of a parameter's field, or of the parameter itself when the field is not found.
    fn field(&self, name: &str, field: &str) -> Option<(usize, usize)> {
        self.param_fields
            .get(&(name.to_string(), field.to_string()))
            .copied()
            .or_else(|| self.param(name))
    }
}

/// The key of a block mapping line (`key:` or `key: value`, possibly quoted).
fn mapping_key(trimmed: &str) -> Option<String> {
    let (key, rest) = if let Some(quote @ ('"' | '\'')) = trimmed.chars().next() {
        let end = trimmed[1..].find(quote)? + 1;
        (&trimmed[1..end], &trimmed[end + 1..])
    } else {
        let colon = trimmed.find(':')?;
        (trimmed[..colon].trim_end(), &trimmed[colon..])
    };
    let after = rest.strip_prefix(':')?;
    if !(after.is_empty() || after.starts_with(' ') || after.starts_with('\t')) {
        return None;
    }
    if key.is_empty() || key.starts_with('-') || key.starts_with('[') || key.starts_with('{') {
        return None;
    }
    Some(key.to_string())
}

struct Checker<'a> {
    lines: &'a KeyLines,
    problems: Vec<SourceProblem>,
    /// The runner's own parameters (see [`runner_parameters`]).
    runner_params: Vec<String>,
}

impl Checker<'_> {
    fn problem(&mut self, at: Option<(usize, usize)>, message: impl Into<String>) {
        self.problems.push(SourceProblem {
            line: at.map(|a| a.0),
            column: at.map(|a| a.1),
            message: message.into(),
        });
    }

    fn check(&mut self, raw: RawAction) -> Option<ActionMeta> {
        let name = self.check_name(raw.name);
        if let Some(pack) = &raw.pack {
            if !is_plain_name(pack) {
                self.problem(
                    self.lines.top("pack"),
                    format!("pack '{pack}' must be non-empty and must not contain '.', '/' or whitespace"),
                );
            }
        }
        let runner_type = match raw.runner_type.as_deref() {
            None => {
                self.problem(
                    None,
                    format!(
                        "missing field 'runner_type' (one of: {})",
                        RunnerType::KNOWN.join(", ")
                    ),
                );
                None
            }
            Some(text) => {
                let parsed = RunnerType::parse(text);
                if parsed.is_none() {
                    self.problem(
                        self.lines.top("runner_type"),
                        format!(
                            "runner_type '{text}' is not supported by squall (known: {})",
                            RunnerType::KNOWN.join(", ")
                        ),
                    );
                }
                parsed
            }
        };
        // A runner squall lacks (st2's remote-shell-cmd, winrm...) is the action's one problem:
        // what its entry point and parameters need depends on that runner.
        let unsupported = raw.runner_type.is_some() && runner_type.is_none();
        let missing_entry = raw
            .entry_point
            .as_deref()
            .is_none_or(|e| e.trim().is_empty());
        let entry_point = if unsupported && missing_entry {
            None
        } else {
            self.check_entry_point(raw.entry_point, runner_type)
        };
        if raw.timeout == Some(0) {
            self.problem(
                self.lines.top("timeout"),
                "timeout must be at least 1 second",
            );
        }
        let output_schema = raw.output_schema.filter(|v| !v.is_null());
        if let Some(schema) = &output_schema {
            if !schema.is_object() {
                self.problem(
                    self.lines.top("output_schema"),
                    format!(
                        "output_schema must be a mapping, not {}",
                        ParamType::of(schema)
                    ),
                );
            }
        }
        let tags = self.check_tags(raw.tags.unwrap_or_default());
        let declared = raw.parameters.unwrap_or_default();
        if let Some(runner) = runner_type {
            self.runner_params = serde_yaml::from_str::<IndexMap<String, serde_yaml::Value>>(
                runner_parameters(runner),
            )
            .map(|m| m.into_keys().collect())
            .unwrap_or_default();
        }
        if unsupported {
            return None;
        }
        let parameters = self.check_parameters(match runner_type {
            Some(runner) => with_runner_parameters(runner, declared),
            None => declared,
        });
        let notify = match raw.notify.filter(|v| !v.is_null()) {
            None => None,
            Some(value) => match serde_json::from_value::<Notify>(value) {
                Ok(n) => Some(n),
                Err(e) => {
                    self.problem(
                        self.lines.top("notify"),
                        format!("notify: {e} (expected on-complete, on-success and on-failure, each with message, data and routes)"),
                    );
                    None
                }
            },
        };
        Some(ActionMeta {
            name: name?,
            pack: raw.pack,
            description: raw.description.unwrap_or_default(),
            enabled: raw.enabled.unwrap_or(true),
            runner_type: runner_type?,
            entry_point: entry_point?,
            parameters,
            output_schema,
            tags,
            timeout: raw.timeout,
            idempotent: raw.idempotent.unwrap_or(false),
            queue: raw.queue.filter(|q| !q.trim().is_empty()),
            notify,
        })
    }

    fn check_name(&mut self, name: Option<String>) -> Option<String> {
        match name {
            None => {
                self.problem(None, "missing field 'name'");
                None
            }
            Some(name) if !is_action_name(&name) => {
                self.problem(
                    self.lines.top("name"),
                    format!(
                        "name '{name}' must be non-empty and must not contain '/' or whitespace"
                    ),
                );
                None
            }
            Some(name) => Some(name),
        }
    }

    fn check_entry_point(
        &mut self,
        entry_point: Option<String>,
        runner_type: Option<RunnerType>,
    ) -> Option<String> {
        let at = self.lines.top("entry_point");
        match entry_point.filter(|e| !e.trim().is_empty()) {
            // The announcement, command, HTTP, noop and inquirer runners have no file to run:
            // st2 writes `entry_point: ""`.
            None if runner_type.is_some_and(|r| !r.has_entry_point()) => Some(String::new()),
            None => {
                let runner = runner_type.map(|r| r.to_string());
                self.problem(
                    at,
                    format!(
                        "missing field 'entry_point' (the {} file to run, relative to the pack's actions/ folder)",
                        runner.as_deref().map_or("script".to_string(), |r| format!("{r} runner's")),
                    ),
                );
                None
            }
            Some(entry) => {
                // The engine joins this to the pack folder: it must not be able to point outside.
                let path = Path::new(&entry);
                let escapes = path.is_absolute()
                    || path
                        .components()
                        .any(|c| !matches!(c, Component::Normal(_) | Component::CurDir));
                if escapes {
                    self.problem(
                        at,
                        format!("entry_point '{entry}' must be a relative path inside the pack's actions/ folder (no leading '/', no '..')"),
                    );
                    None
                } else {
                    Some(entry)
                }
            }
        }
    }

    fn check_tags(&mut self, raw: Vec<RawTag>) -> Vec<Tag> {
        let mut tags = Vec::with_capacity(raw.len());
        for tag in raw {
            let (name, value) = match tag {
                RawTag::Plain(name) => (name, String::new()),
                RawTag::Named { name, value } => {
                    let value = match value {
                        None | Some(Value::Null) => String::new(),
                        Some(Value::String(s)) => s,
                        Some(other) => other.to_string(),
                    };
                    (name, value)
                }
            };
            if name.trim().is_empty() {
                self.problem(self.lines.top("tags"), "a tag has an empty name");
                continue;
            }
            tags.push(Tag { name, value });
        }
        tags
    }

    fn check_parameters(
        &mut self,
        raw: IndexMap<String, Option<RawParam>>,
    ) -> IndexMap<String, ParamSpec> {
        let mut specs = IndexMap::with_capacity(raw.len());
        let mut positions: HashMap<u32, String> = HashMap::new();
        for (name, param) in raw {
            let param = param.unwrap_or_default();
            if name.trim().is_empty() {
                self.problem(
                    self.lines.top("parameters"),
                    "a parameter has an empty name",
                );
                continue;
            }
            if let Some(spec) = self.check_parameter(&name, param) {
                if let Some(position) = spec.position {
                    if let Some(first) = positions.get(&position) {
                        let message = format!(
                            "parameter '{name}': position {position} is already used by parameter '{first}'"
                        );
                        self.problem(self.lines.field(&name, "position"), message);
                    } else {
                        positions.insert(position, name.clone());
                    }
                }
                specs.insert(name, spec);
            }
        }
        specs
    }

    fn check_parameter(&mut self, name: &str, raw: RawParam) -> Option<ParamSpec> {
        let keywords = raw.schema_keywords();
        if let Some(required) = raw
            .required
            .as_ref()
            .filter(|r| !(r.is_boolean() || r.is_array() || r.is_null()))
        {
            self.problem(
                self.lines.field(name, "required"),
                format!("parameter '{name}': required must be true, false or a list of property names, not {required}"),
            );
        }
        let default = raw.default.filter(|v| !v.is_null());
        let ty = match raw.ty.as_deref() {
            Some(text) => match text.parse::<ParamType>() {
                Ok(ty) => ty,
                Err(message) => {
                    self.problem(
                        self.lines.field(name, "type"),
                        format!("parameter '{name}': {message}"),
                    );
                    return None;
                }
            },
            None => default.as_ref().map_or(ParamType::String, ParamType::of),
        };
        for (key, value) in &keywords {
            let mut shape = Vec::new();
            let one = serde_json::Map::from_iter([(key.clone(), value.clone())]);
            crate::schema::check_schema(
                &Value::Object(one),
                &format!("parameter '{name}'"),
                &mut shape,
            );
            for message in shape {
                self.problem(self.lines.field(name, key), message);
            }
        }
        let items = match raw.items.as_ref() {
            None => None,
            // JSON Schema applies `items` to arrays only and ignores it on other values, as
            // st2 does (pagerduty's `incident.create` has it on an object).
            Some(_) if ty != ParamType::Array => None,
            // A single item type is cast to, as the parameter's own type is; the rest of the
            // item schema is validated.
            Some(items) => items
                .get("type")
                .and_then(Value::as_str)
                .and_then(|t| t.parse::<ParamType>().ok())
                .map(|ty| ItemsSpec { ty }),
        };
        let numeric = matches!(ty, ParamType::Integer | ParamType::Number);
        for (field, bound) in [("minimum", raw.minimum), ("maximum", raw.maximum)] {
            if bound.is_some() && !numeric {
                self.problem(
                    self.lines.field(name, field),
                    format!("parameter '{name}': '{field}' applies to integer and number parameters only, and this parameter is of type {ty}"),
                );
            }
        }
        if let (Some(min), Some(max)) = (raw.minimum, raw.maximum) {
            if min > max {
                self.problem(
                    self.lines.field(name, "minimum"),
                    format!("parameter '{name}': minimum {min} is greater than maximum {max}"),
                );
            }
        }
        let spec = ParamSpec {
            ty,
            description: raw.description,
            required: raw
                .required
                .as_ref()
                .and_then(Value::as_bool)
                .unwrap_or(false),
            default,
            enum_values: raw.enum_values,
            secret: raw.secret.unwrap_or(false),
            immutable: raw.immutable.unwrap_or(false),
            position: raw.position,
            minimum: raw.minimum.filter(|_| numeric),
            maximum: raw.maximum.filter(|_| numeric),
            items,
            schema: keywords,
        };
        self.check_enum(name, &spec);
        self.check_default(name, &spec);
        Some(spec)
    }

    fn check_enum(&mut self, name: &str, spec: &ParamSpec) {
        let Some(values) = &spec.enum_values else {
            return;
        };
        let at = self.lines.field(name, "enum");
        if values.is_empty() {
            self.problem(
                at,
                format!("parameter '{name}': enum must list at least one value"),
            );
        }
        for value in values {
            if !spec.ty.admits(value) {
                self.problem(
                    at,
                    format!(
                        "parameter '{name}': enum value {value} is not of the parameter's type {}",
                        spec.ty
                    ),
                );
            }
        }
    }

    fn check_default(&mut self, name: &str, spec: &ParamSpec) {
        // st2 checks neither a default's type nor its enum: it is passed as written, so a
        // default that does not fit is not a problem here.
        // A runner's parameter made immutable by the action keeps the runner's own default
        // (st2's `sudo: {immutable: true}` in core.local), which the runner applies itself.
        if spec.default.is_none() && spec.immutable && !self.runner_params.iter().any(|p| p == name)
        {
            self.problem(
                self.lines.field(name, "immutable"),
                format!("parameter '{name}': an immutable parameter needs a default"),
            );
        }
    }
}

/// An action's name may hold dots (st2 splits a reference at its first dot); it becomes part
/// of paths, so no separators or whitespace.
fn is_action_name(name: &str) -> bool {
    !name.is_empty()
        && !name
            .chars()
            .any(|c| c == '/' || c == '\\' || c.is_whitespace())
}

/// A pack's name becomes the part of `pack.name` references before the first dot, and a path.
fn is_plain_name(name: &str) -> bool {
    !name.is_empty()
        && !name
            .chars()
            .any(|c| c == '.' || c == '/' || c == '\\' || c.is_whitespace())
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    const ECHO: &str = "\
name: echo
pack: core
description: Print a message and return it.
enabled: true
runner_type: rhai
entry_point: echo.rhai
timeout: 60
idempotent: true
tags:
  - name: team
    value: ops
  - plain
output_schema:
  type: object
parameters:
  message:
    type: string
    description: What to print.
    required: true
  count:
    type: integer
    default: 1
    minimum: 1
    maximum: 10
    position: 1
  level:
    type: string
    enum: [info, warn]
    default: info
  token:
    type: string
    secret: true
  numbers:
    type: array
    items:
      type: integer
";

    fn problems(text: &str) -> Vec<SourceProblem> {
        match ActionMeta::from_yaml(text) {
            Ok(meta) => panic!("expected problems, got {meta:?}"),
            Err(problems) => problems,
        }
    }

    #[test]
    fn parses_a_complete_action() {
        let meta = ActionMeta::from_yaml(ECHO).expect("valid metadata");
        assert_eq!(meta.name, "echo");
        assert_eq!(meta.pack.as_deref(), Some("core"));
        assert_eq!(meta.runner_type, RunnerType::Rhai);
        assert_eq!(meta.entry_point, "echo.rhai");
        assert_eq!(meta.timeout, Some(60));
        assert!(meta.idempotent);
        assert!(meta.enabled);
        assert_eq!(
            meta.tags,
            vec![
                Tag {
                    name: "team".into(),
                    value: "ops".into()
                },
                Tag {
                    name: "plain".into(),
                    value: String::new()
                }
            ]
        );
        assert_eq!(
            meta.output_schema,
            Some(serde_json::json!({"type": "object"}))
        );
        let names: Vec<&str> = meta.parameters.keys().map(String::as_str).collect();
        assert_eq!(names, ["message", "count", "level", "token", "numbers"]);
        let message = &meta.parameters["message"];
        assert_eq!(message.ty, ParamType::String);
        assert!(message.required);
        let count = &meta.parameters["count"];
        assert_eq!(count.default, Some(serde_json::json!(1)));
        assert_eq!((count.minimum, count.maximum), (Some(1.0), Some(10.0)));
        assert_eq!(count.position, Some(1));
        assert!(meta.parameters["token"].secret);
        assert_eq!(
            meta.parameters["numbers"].items,
            Some(ItemsSpec {
                ty: ParamType::Integer
            })
        );
        assert_eq!(meta.action_ref("ignored"), "core.echo");
    }

    #[test]
    fn defaults_and_pack_from_folder() {
        let meta = ActionMeta::from_yaml("name: a\nrunner_type: rhai\nentry_point: a.rhai\n")
            .expect("valid");
        assert!(meta.enabled);
        assert!(!meta.idempotent);
        assert_eq!(meta.pack, None);
        assert_eq!(meta.timeout, None);
        assert_eq!(meta.action_ref("ops"), "ops.a");
        assert!(meta.parameters.is_empty());
    }

    #[test]
    fn orquesta_and_workflow_are_workflows() {
        for runner in ["orquesta", "workflow"] {
            let text = format!("name: wf\nrunner_type: {runner}\nentry_point: workflows/wf.yaml\n");
            let meta = ActionMeta::from_yaml(&text).expect("valid");
            assert_eq!(meta.runner_type, RunnerType::Workflow);
        }
    }

    #[test]
    fn st2_bookkeeping_fields_are_ignored() {
        let text = "\
name: a
ref: core.a
uid: action:core:a
id: 5f0c
metadata_file: actions/a.yaml
notify:
  on-complete:
    routes: [slack]
runner_type: rhai
entry_point: a.rhai
";
        assert!(ActionMeta::from_yaml(text).is_ok());
    }

    #[test]
    fn notify_is_read_as_st2_writes_it() {
        let text = "name: a\nrunner_type: rhai\nentry_point: a.rhai\nnotify:\n  on-success:\n    message: done\n    routes: [ops]\n  on-failure:\n    channels: [pager]\n";
        let meta = ActionMeta::from_yaml(text).expect("valid");
        let notify = meta.notify.expect("notify");
        let on_success = notify.applicable(true);
        assert_eq!(on_success.len(), 1);
        assert_eq!(on_success[0].0.routes, ["ops"]);
        assert_eq!(on_success[0].1, "succeeded.");
        assert_eq!(notify.applicable(false)[0].0.routes, ["pager"]);
        let p =
            problems("name: a\nrunner_type: rhai\nentry_point: a.rhai\nnotify:\n  on-done: {}\n");
        assert_eq!(p[0].line, Some(4), "{}", p[0]);
    }

    #[test]
    fn unknown_field_is_an_error_with_its_line() {
        let p = problems("name: a\nrunner_type: rhai\nentry_point: a.rhai\nentrypoint: b\n");
        assert_eq!(p.len(), 1);
        assert_eq!(p[0].line, Some(4));
        assert!(
            p[0].message.contains("unknown field `entrypoint`"),
            "{}",
            p[0]
        );
        assert!(!p[0].message.contains(" at line "), "{}", p[0]);
        assert!(p[0].to_string().starts_with("line 4, column "), "{}", p[0]);
    }

    #[test]
    fn unknown_parameter_field_names_the_parameter_and_line() {
        let text = "\
name: a
runner_type: rhai
entry_point: a.rhai
parameters:
  message:
    type: string
    requird: true
";
        let p = problems(text);
        assert_eq!(p.len(), 1);
        assert_eq!(p[0].line, Some(7));
        assert!(p[0].message.contains("message"), "{}", p[0]);
        assert!(p[0].message.contains("requird"), "{}", p[0]);
    }

    #[test]
    fn every_semantic_problem_is_reported_with_parameter_and_line() {
        let text = "\
name: a
runner_type: rhai
parameters:
  mode:
    type: strng
  count:
    type: integer
    default: many
  level:
    type: string
    enum: [info, 3]
    default: debug
  fixed:
    type: string
    immutable: true
  first:
    type: string
    position: 0
  second:
    type: string
    position: 0
";
        let p = problems(text);
        let text_of = |needle: &str| -> &SourceProblem {
            p.iter()
                .find(|p| p.message.contains(needle))
                .unwrap_or_else(|| panic!("no problem mentions {needle:?}: {p:?}"))
        };
        let entry = text_of("entry_point");
        assert_eq!(entry.line, None);
        let mode = text_of("parameter 'mode'");
        assert!(mode.message.contains("unknown type 'strng'"), "{mode}");
        assert_eq!(mode.line, Some(5));
        // st2 checks no default: `many` for an integer and `debug` outside the enum load.
        assert!(
            !p.iter()
                .any(|p| p.message.contains("does not fit") || p.message.contains("allowed values")),
            "{p:?}"
        );
        let enum_problem = text_of("enum value 3");
        assert!(enum_problem.message.contains("parameter 'level'"));
        assert_eq!(enum_problem.line, Some(11));
        let fixed = text_of("parameter 'fixed'");
        assert!(fixed.message.contains("immutable"), "{fixed}");
        assert_eq!(fixed.line, Some(15));
        let second = text_of("parameter 'second'");
        assert!(second.message.contains("already used by parameter 'first'"));
        assert_eq!(second.line, Some(21));
        assert_eq!(p.len(), 5, "{p:#?}");
        // Located problems come first, in source order.
        let lines: Vec<usize> = p.iter().filter_map(|p| p.line).collect();
        let mut sorted = lines.clone();
        sorted.sort_unstable();
        assert_eq!(lines, sorted);
    }

    #[test]
    fn missing_name_and_runner_are_reported_together() {
        let p = problems("description: nothing else\n");
        let messages: Vec<&str> = p.iter().map(|p| p.message.as_str()).collect();
        assert!(
            messages.iter().any(|m| m.contains("missing field 'name'")),
            "{messages:?}"
        );
        assert!(
            messages
                .iter()
                .any(|m| m.contains("missing field 'runner_type'")),
            "{messages:?}"
        );
        assert!(
            messages
                .iter()
                .any(|m| m.contains("missing field 'entry_point'")),
            "{messages:?}"
        );
    }

    #[test]
    fn runners_parameters_are_every_actions_and_can_be_overridden_in_part() {
        // st2's core.ask declares no parameter: the inquirer runner's are its.
        let ask = ActionMeta::from_yaml(
            "name: ask\npack: core\nrunner_type: inquirer\nentry_point: ''\nparameters: {}\n",
        )
        .expect("valid");
        let names: Vec<&str> = ask.parameters.keys().map(String::as_str).collect();
        assert_eq!(names, ["schema", "route", "roles", "users", "ttl"]);
        assert_eq!(ask.parameters["ttl"].default, Some(json!(1440)));
        assert_eq!(ask.parameters["schema"].ty, ParamType::Object);
        assert_eq!(
            ask.parameters["schema"].default.as_ref().unwrap()["properties"]["continue"]["type"],
            "boolean"
        );
        // A shell action overriding `cmd` by its default only: the type is the runner's, and
        // the runner's own parameters come without defaults.
        let date = ActionMeta::from_yaml(
            "name: date\nrunner_type: local-shell-cmd\nentry_point: ''\nparameters:\n  cmd:\n    default: date -u\n    immutable: true\n  ttl_hint:\n    type: integer\n",
        )
        .expect("valid");
        let cmd = &date.parameters["cmd"];
        assert_eq!(
            (cmd.ty, cmd.immutable, cmd.default.clone()),
            (ParamType::String, true, Some(json!("date -u")))
        );
        assert_eq!(date.parameters["timeout"].default, None);
        assert!(date.parameters["sudo_password"].secret);
        assert_eq!(
            date.parameters.get_index(0).map(|(k, _)| k.as_str()),
            Some("cmd")
        );
        // A runner's parameter made immutable without a default keeps the runner's.
        let local = ActionMeta::from_yaml(
            "name: local\nrunner_type: local-shell-cmd\nentry_point: ''\nparameters:\n  sudo:\n    immutable: true\n",
        )
        .expect("valid");
        assert!(local.parameters["sudo"].immutable);
        // A runner squall lacks is the action's one problem (st2's core.remote).
        let remote = ActionMeta::from_yaml(
            "name: remote\nrunner_type: remote-shell-cmd\nparameters:\n  sudo:\n    immutable: true\n",
        )
        .expect_err("unsupported");
        assert_eq!(remote.len(), 1, "{remote:?}");
        assert!(remote[0].message.contains("remote-shell-cmd"));
        // st2's older runner names.
        assert_eq!(
            RunnerType::parse("run-python"),
            Some(RunnerType::PythonScript)
        );
        assert_eq!(
            RunnerType::parse("run-local"),
            Some(RunnerType::LocalShellCmd)
        );
        // Rhai actions have no runner parameters.
        let rhai = ActionMeta::from_yaml("name: a\nrunner_type: rhai\nentry_point: a.rhai\n")
            .expect("valid");
        assert!(rhai.parameters.is_empty());
    }

    #[test]
    fn unsupported_runner_and_escaping_entry_point() {
        let p = problems("name: a\nrunner_type: remote-shell-cmd\nentry_point: ../../etc/passwd\n");
        assert_eq!(p.len(), 2, "{p:?}");
        assert_eq!(p[0].line, Some(2));
        assert!(p[0].message.contains("'remote-shell-cmd' is not supported"));
        assert_eq!(p[1].line, Some(3));
        assert!(p[1].message.contains("relative path"));
        let p = problems("name: a\nrunner_type: rhai\nentry_point: /abs/a.rhai\n");
        assert!(p[0].message.contains("relative path"), "{p:?}");
    }

    #[test]
    fn bad_names_and_timeout() {
        let p = problems("name: a b\nrunner_type: rhai\nentry_point: a.rhai\ntimeout: 0\n");
        assert_eq!(p.len(), 2, "{p:?}");
        assert_eq!(p[0].line, Some(1));
        assert!(p[0].message.contains("'a b'"));
        assert_eq!(p[1].line, Some(4));
        assert!(p[1].message.contains("timeout"));
    }

    #[test]
    fn type_errors_in_yaml_have_lines() {
        let p = problems("name: a\nrunner_type: rhai\nentry_point: a.rhai\ntimeout: soon\n");
        assert_eq!(p.len(), 1);
        assert_eq!(p[0].line, Some(4));
        assert!(p[0].message.contains("timeout"), "{}", p[0]);
    }

    #[test]
    fn structural_errors_name_the_path_and_line() {
        let p = problems("name: a\nrunner_type: rhai\nentry_point: a.rhai\ntags:\n  - [x]\n");
        assert_eq!(p[0].line, Some(5));
        assert_eq!(
            p[0].message,
            "tags: each tag must be a string or a mapping {name, value}"
        );
        let p = problems("name: a\nrunner_type: rhai\nentry_point: a.rhai\nparameters:\n  x:\n    type: string\n    required: maybe\n");
        assert_eq!(
            p[0].to_string(),
            "line 7, column 5: parameter 'x': required must be true, false or a list of property names, not \"maybe\""
        );
        let p = problems("name: a\n  bad indent: x\n");
        assert_eq!(p[0].line, Some(2));
    }

    #[test]
    fn empty_file_is_explained() {
        let p = problems("  \n");
        assert!(p[0].message.contains("empty"));
    }

    #[test]
    fn missing_type_is_inferred_from_default() {
        let text = "\
name: a
runner_type: rhai
entry_point: a.rhai
parameters:
  retries:
    default: 3
  label: {}
  templated:
    type: integer
    default: \"{{ config_context.retries }}\"
";
        let meta = ActionMeta::from_yaml(text).expect("valid");
        assert_eq!(meta.parameters["retries"].ty, ParamType::Integer);
        assert_eq!(meta.parameters["label"].ty, ParamType::String);
        assert!(meta.parameters["templated"].default_is_template());
    }

    #[test]
    fn schema_keywords_must_fit_the_type() {
        let text = "\
name: a
runner_type: rhai
entry_point: a.rhai
parameters:
  word:
    type: string
    minimum: 1
  list:
    type: array
    items:
      type: integr
  n:
    type: number
    minimum: 5
    maximum: 1
";
        let p = problems(text);
        assert_eq!(p.len(), 3, "{p:?}");
        assert_eq!(p[0].line, Some(7));
        assert!(p[0].message.contains("parameter 'word'"));
        assert_eq!(p[1].line, Some(10));
        assert!(p[1].message.contains("unknown type 'integr'"));
        assert_eq!(p[2].line, Some(14));
        assert!(p[2].message.contains("greater than maximum"));
    }

    #[test]
    fn null_type_is_known() {
        let text = "name: a\nrunner_type: rhai\nentry_point: a.rhai\nparameters:\n  nothing:\n    type: \"null\"\n";
        let meta = ActionMeta::from_yaml(text).expect("valid");
        assert_eq!(meta.parameters["nothing"].ty, ParamType::Null);
    }

    #[test]
    fn key_lines_handle_quotes_and_comments() {
        let text = "# header\nparameters:\n  # a comment\n  \"quoted\":\n    type: x\n  plain:\n    default: 1\nname: a\n";
        let lines = KeyLines::scan(text);
        assert_eq!(lines.param("quoted"), Some((4, 3)));
        assert_eq!(lines.field("quoted", "type"), Some((5, 5)));
        assert_eq!(lines.field("plain", "default"), Some((7, 5)));
        assert_eq!(lines.top("name"), Some((8, 1)));
        assert_eq!(lines.param("name"), None);
    }

    #[test]
    fn dotted_names_load_and_their_ref_splits_at_the_first_dot() {
        let text = "name: chat.postMessage\npack: slack\nrunner_type: python-script\nentry_point: run.py\n";
        let meta = ActionMeta::from_yaml(text).expect("st2 accepts dotted names");
        assert_eq!(meta.name, "chat.postMessage");
        assert_eq!(meta.action_ref("other"), "slack.chat.postMessage");
        assert_eq!(
            "slack.chat.postMessage".split_once('.'),
            Some(("slack", "chat.postMessage"))
        );
        let p = problems("name: a/b\nrunner_type: rhai\nentry_point: a.rhai\n");
        assert!(p[0].message.contains("'a/b'"), "{p:?}");
    }

    #[test]
    fn nested_draft4_parameters_load_as_st2_packs_write_them() {
        let text = "\
name: chat.postMessage
runner_type: python-script
entry_point: run.py
parameters:
  attachments:
    type: array
    description: Structured attachments.
    items:
      type: object
      properties:
        title: {type: string, required: true}
        fields:
          type: array
          items: {type: object, properties: {short: {type: boolean}}}
      additionalProperties: false
  blocks:
    type: object
    properties:
      kind: {type: string, enum: [section, divider]}
    required: [kind]
  channel:
    type: string
    minLength: 1
    maxLength: 80
    pattern: '^[#@]?[a-z0-9_-]+$'
  id:
    oneOf: [{type: string}, {type: integer}]
    anyOf: [{type: string}, {type: integer}]
  retries:
    type: integer
    default: three
";
        let meta = ActionMeta::from_yaml(text).expect("valid");
        let attachments = &meta.parameters["attachments"];
        assert_eq!(
            attachments.items.as_ref().map(|i| i.ty),
            Some(ParamType::Object)
        );
        assert!(attachments.schema["items"]["properties"]["fields"].is_object());
        assert_eq!(meta.parameters["channel"].schema["maxLength"], 80);
        // The default is kept as written, not refused.
        assert_eq!(
            meta.parameters["retries"].default,
            Some(Value::from("three"))
        );
    }

    #[test]
    fn nested_schema_shape_problems_are_located() {
        let text = "\
name: a
runner_type: rhai
entry_point: a.rhai
parameters:
  thing:
    type: object
    properties:
      inner: {type: strng}
";
        let p = problems(text);
        assert_eq!(p.len(), 1, "{p:?}");
        assert_eq!(p[0].line, Some(7));
        assert!(
            p[0].message
                .contains("parameter 'thing'.inner: unknown type 'strng'"),
            "{p:?}"
        );
    }
}
