//! The Orquesta workflow model and its loader: `version, description, input, vars, tasks,
//! output`, and per task `action, input, next[{when, publish, do}], join, with, retry, delay`.
//!
//! Loading checks everything that can be checked before a run (field names, engine commands,
//! transition targets, joins, template syntax) and reports every problem found, each with its
//! line when the text shows where. It must never touch the file system or render a template:
//! callers hand it text, and the conductor does the rendering.

use indexmap::IndexMap;
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};
use squall_rules::{line_of, yaml_problem, SourceProblem};

use super::expr;

/// `do` words with a meaning to the engine rather than a task (Orquesta's engine commands).
pub const ENGINE_COMMANDS: [&str; 3] = ["fail", "noop", "continue"];

/// A parsed, checked workflow.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Workflow {
    pub description: Option<String>,
    /// Input names in order, each with its default (a value or a template) when it has one.
    pub input: Vec<(String, Option<Value>)>,
    /// Variables in order; values may be templates over `ctx()`.
    pub vars: Vec<(String, Value)>,
    pub tasks: IndexMap<String, Task>,
    /// Output entries in order; values may be templates over `ctx()`.
    pub output: Vec<(String, Value)>,
}

/// One task of a workflow.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Task {
    /// The action ref (may be a template). A task without one does no work: it succeeds at once
    /// with a null result, as Orquesta's action-less tasks do.
    pub action: Option<String>,
    pub input: Map<String, Value>,
    pub next: Vec<Transition>,
    pub join: Option<Join>,
    pub with: Option<WithItems>,
    pub retry: Option<Retry>,
    /// Seconds the engine waits before running the task (each item, for with-items).
    pub delay: Option<u64>,
}

/// One entry of a task's `next`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Transition {
    /// A `{{ expression }}`; `None` means "whenever the task completes".
    pub when: Option<String>,
    pub publish: Vec<(String, Value)>,
    /// Task names and engine commands, in order.
    pub targets: Vec<String>,
}

/// A task waiting on several inbound transitions.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum Join {
    /// Every task with a transition into this one must have taken it.
    All,
    /// At least this many inbound tasks must have taken their transition.
    Count(usize),
}

/// `with`: run the action once per item.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct WithItems {
    /// `x in ...` names the item (`item('x')`); several names unpack list items positionally.
    pub names: Vec<String>,
    /// A `{{ expression }}` giving the list.
    pub items: String,
    /// At most this many items outstanding at once; `None` means all at once.
    pub concurrency: Option<usize>,
}

/// `retry`: run the task again while `when` holds, at most `count` more times.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Retry {
    /// `None` retries on failure, as Orquesta does.
    pub when: Option<String>,
    pub count: u32,
    pub delay: Option<u64>,
}

impl Workflow {
    /// Parses a workflow file. Every problem found is returned, each with its line when known.
    pub fn parse(text: &str) -> Result<Workflow, Vec<SourceProblem>> {
        let raw: RawWorkflow = serde_yaml::from_str(text).map_err(|e| vec![yaml_problem(&e)])?;
        let mut problems = Vec::new();
        let mut report = |needle: Option<&str>, message: String| {
            problems.push(SourceProblem {
                line: needle.and_then(|n| line_of(text, n)),
                column: None,
                message,
            });
        };

        let version_ok = match &raw.version {
            serde_yaml::Value::Number(n) => n.as_f64() == Some(1.0),
            serde_yaml::Value::String(s) => s == "1.0" || s == "1",
            _ => false,
        };
        if !version_ok {
            report(
                Some("version"),
                "version must be 1.0 (Orquesta's language)".to_string(),
            );
        }

        let input = named_entries(raw.input, true, "input", &mut report);
        let vars = named_entries(raw.vars, false, "vars", &mut report)
            .into_iter()
            .map(|(n, v)| (n, v.unwrap_or(Value::Null)))
            .collect::<Vec<_>>();
        let output = named_entries(raw.output, false, "output", &mut report)
            .into_iter()
            .map(|(n, v)| (n, v.unwrap_or(Value::Null)))
            .collect::<Vec<_>>();
        for (name, v) in input.iter().filter_map(|(n, v)| v.as_ref().map(|v| (n, v))) {
            check_value_templates(v, &format!("input '{name}'"), name, &mut report);
        }
        for (name, v) in &vars {
            check_value_templates(v, &format!("vars '{name}'"), name, &mut report);
        }
        for (name, v) in &output {
            check_value_templates(v, &format!("output '{name}'"), name, &mut report);
        }

        if raw.tasks.is_empty() {
            report(Some("tasks"), "a workflow needs at least one task".into());
        }
        let mut tasks = IndexMap::new();
        for (name, raw_task) in raw.tasks {
            if ENGINE_COMMANDS.contains(&name.as_str()) || name == "retry" {
                report(
                    Some(&name),
                    format!("task '{name}': the name is reserved for an engine command"),
                );
            }
            let task = build_task(&name, raw_task, &mut report);
            tasks.insert(name, task);
        }

        // Checks that need every task: transition targets and joins.
        for (name, task) in &tasks {
            for t in &task.next {
                for target in &t.targets {
                    if !ENGINE_COMMANDS.contains(&target.as_str()) && !tasks.contains_key(target) {
                        report(
                            Some(name),
                            format!("task '{name}': 'do' names '{target}', which is neither a task nor an engine command (fail, noop, continue)"),
                        );
                    }
                }
            }
        }
        for (name, task) in &tasks {
            let Some(join) = task.join else { continue };
            let inbound = inbound_tasks(&tasks, name).len();
            match join {
                Join::All | Join::Count(_) if inbound == 0 => report(
                    Some(name),
                    format!("task '{name}': joins, but no transition leads to it"),
                ),
                Join::Count(n) if n == 0 || n > inbound => report(
                    Some(name),
                    format!("task '{name}': join {n} cannot be met: {inbound} task(s) lead to it"),
                ),
                _ => {}
            }
        }

        if problems.is_empty() {
            Ok(Workflow {
                description: raw.description,
                input,
                vars,
                tasks,
                output,
            })
        } else {
            Err(problems)
        }
    }

    /// The distinct tasks with a transition into `target`, in definition order.
    pub fn inbound(&self, target: &str) -> Vec<String> {
        inbound_tasks(&self.tasks, target)
    }

    /// Tasks no transition leads to: where a run starts.
    pub fn start_tasks(&self) -> Vec<String> {
        self.tasks
            .keys()
            .filter(|name| self.inbound(name).is_empty())
            .cloned()
            .collect()
    }
}

fn inbound_tasks(tasks: &IndexMap<String, Task>, target: &str) -> Vec<String> {
    tasks
        .iter()
        .filter(|(_, t)| {
            t.next
                .iter()
                .any(|tr| tr.targets.iter().any(|x| x == target))
        })
        .map(|(n, _)| n.clone())
        .collect()
}

fn build_task(name: &str, raw: RawTask, report: &mut impl FnMut(Option<&str>, String)) -> Task {
    let here = Some(name);
    if let Some(action) = &raw.action {
        // Orquesta's inline `action: x.y k=v` shorthand is not supported: inputs go in `input`.
        if action.trim().contains(char::is_whitespace) && !expr::is_template(action) {
            report(
                here,
                format!("task '{name}': action '{action}': write the action's input under 'input:', not inline"),
            );
        }
        check_template(action, &format!("task '{name}' action"), here, report);
    }
    let input = match raw.input {
        None => Map::new(),
        Some(v) => match serde_json::to_value(v) {
            Ok(Value::Object(m)) => m,
            _ => {
                report(here, format!("task '{name}': input must be a map"));
                Map::new()
            }
        },
    };
    for (k, v) in &input {
        check_value_templates(v, &format!("task '{name}' input '{k}'"), name, report);
    }
    let join = match raw.join {
        None => None,
        Some(serde_yaml::Value::String(s)) if s == "all" => Some(Join::All),
        Some(serde_yaml::Value::Number(n)) if n.as_u64().is_some() => {
            Some(Join::Count(n.as_u64().unwrap_or(0) as usize))
        }
        Some(_) => {
            report(
                here,
                format!("task '{name}': join must be 'all' or a number"),
            );
            None
        }
    };
    let with = raw.with.and_then(|w| {
        let (spec, concurrency) = match w {
            RawWith::Short(s) => (s, None),
            RawWith::Full { items, concurrency } => (items, concurrency),
        };
        if concurrency == Some(0) {
            report(here, format!("task '{name}': concurrency must be at least 1"));
        }
        match parse_items(&spec) {
            Some((names, items)) => {
                check_expression(&items, &format!("task '{name}' with items"), here, report);
                Some(WithItems {
                    names,
                    items,
                    concurrency: concurrency.map(|c| c as usize),
                })
            }
            None => {
                report(
                    here,
                    format!("task '{name}': with items must be '{{{{ expr }}}}' or 'name in {{{{ expr }}}}', not '{spec}'"),
                );
                None
            }
        }
    });
    let retry = raw.retry.map(|r| {
        if let Some(w) = &r.when {
            check_expression(w, &format!("task '{name}' retry when"), here, report);
        }
        Retry {
            when: r.when,
            count: r.count,
            delay: r.delay,
        }
    });
    let next = raw
        .next
        .into_iter()
        .map(|t| {
            if let Some(w) = &t.when {
                check_expression(w, &format!("task '{name}' next when"), here, report);
            }
            let publish = named_entries(t.publish, false, "publish", report)
                .into_iter()
                .map(|(k, v)| (k, v.unwrap_or(Value::Null)))
                .collect::<Vec<_>>();
            for (k, v) in &publish {
                check_value_templates(v, &format!("task '{name}' publish '{k}'"), name, report);
            }
            let targets = match t.targets {
                None => Vec::new(),
                Some(RawDo::One(s)) => s
                    .split(',')
                    .map(|s| s.trim().to_string())
                    .filter(|s| !s.is_empty())
                    .collect(),
                Some(RawDo::Many(v)) => v,
            };
            Transition {
                when: t.when,
                publish,
                targets,
            }
        })
        .collect();
    Task {
        action: raw.action,
        input,
        next,
        join,
        with,
        retry,
        delay: raw.delay,
    }
}

/// Splits `with` into item names and the items expression.
fn parse_items(spec: &str) -> Option<(Vec<String>, String)> {
    let spec = spec.trim();
    let (names, rest) = match spec.find(" in ") {
        Some(i) if !spec[..i].contains("{{") => (&spec[..i], spec[i + 4..].trim()),
        _ => ("", spec),
    };
    expr::single_expression(rest)?;
    let names: Vec<String> = names
        .split(',')
        .map(|s| s.trim().to_string())
        .filter(|s| !s.is_empty())
        .collect();
    if names
        .iter()
        .any(|n| !n.chars().all(|c| c.is_alphanumeric() || c == '_'))
    {
        return None;
    }
    Some((names, rest.to_string()))
}

/// Reads Orquesta's "list of names or single-key maps" (or a plain map) into ordered pairs.
fn named_entries(
    raw: Option<serde_yaml::Value>,
    bare_names: bool,
    section: &str,
    report: &mut impl FnMut(Option<&str>, String),
) -> Vec<(String, Option<Value>)> {
    let mut out = Vec::new();
    let mut bad = false;
    let mut push = |out: &mut Vec<(String, Option<Value>)>, k: &serde_yaml::Value, v| match (
        k.as_str(),
        serde_json::to_value::<serde_yaml::Value>(v),
    ) {
        (Some(k), Ok(v)) => out.push((k.to_string(), Some(v))),
        _ => bad = true,
    };
    match raw {
        None | Some(serde_yaml::Value::Null) => {}
        Some(serde_yaml::Value::Mapping(m)) => {
            for (k, v) in m {
                push(&mut out, &k, v);
            }
        }
        Some(serde_yaml::Value::Sequence(items)) => {
            for item in items {
                match item {
                    serde_yaml::Value::String(s) if bare_names => out.push((s, None)),
                    serde_yaml::Value::Mapping(m) if m.len() == 1 => {
                        for (k, v) in m {
                            push(&mut out, &k, v);
                        }
                    }
                    _ => report(
                        Some(section),
                        format!(
                            "{section}: each entry must be {}a single-key map {{name: value}}",
                            if bare_names { "a name or " } else { "" }
                        ),
                    ),
                }
            }
        }
        Some(_) => report(Some(section), format!("{section} must be a list or a map")),
    }
    if bad {
        report(
            Some(section),
            format!("{section}: every entry needs a text name and a JSON-representable value"),
        );
    }
    out
}

fn check_value_templates(
    v: &Value,
    what: &str,
    needle: &str,
    report: &mut impl FnMut(Option<&str>, String),
) {
    match v {
        Value::String(s) => check_template(s, what, Some(needle), report),
        Value::Array(items) => items
            .iter()
            .for_each(|i| check_value_templates(i, what, needle, report)),
        Value::Object(m) => m
            .values()
            .for_each(|i| check_value_templates(i, what, needle, report)),
        _ => {}
    }
}

fn check_template(
    s: &str,
    what: &str,
    needle: Option<&str>,
    report: &mut impl FnMut(Option<&str>, String),
) {
    if let Err(e) = expr::check_template(s) {
        report(needle, format!("{what}: template does not compile: {e}"));
    }
}

fn check_expression(
    s: &str,
    what: &str,
    needle: Option<&str>,
    report: &mut impl FnMut(Option<&str>, String),
) {
    if expr::single_expression(s).is_none() {
        report(
            needle,
            format!("{what}: must be one '{{{{ expression }}}}', not '{s}'"),
        );
    } else {
        check_template(s, what, needle, report);
    }
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawWorkflow {
    version: serde_yaml::Value,
    #[serde(default)]
    description: Option<String>,
    #[serde(default)]
    input: Option<serde_yaml::Value>,
    #[serde(default)]
    vars: Option<serde_yaml::Value>,
    #[serde(default)]
    tasks: IndexMap<String, RawTask>,
    #[serde(default)]
    output: Option<serde_yaml::Value>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawTask {
    #[serde(default)]
    action: Option<String>,
    #[serde(default)]
    input: Option<serde_yaml::Value>,
    #[serde(default)]
    next: Vec<RawTransition>,
    #[serde(default)]
    join: Option<serde_yaml::Value>,
    #[serde(default)]
    with: Option<RawWith>,
    #[serde(default)]
    retry: Option<RawRetry>,
    #[serde(default)]
    delay: Option<u64>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawTransition {
    #[serde(default)]
    when: Option<String>,
    #[serde(default)]
    publish: Option<serde_yaml::Value>,
    #[serde(default, rename = "do")]
    targets: Option<RawDo>,
}

#[derive(Deserialize)]
#[serde(untagged)]
enum RawDo {
    One(String),
    Many(Vec<String>),
}

#[derive(Deserialize)]
#[serde(untagged)]
enum RawWith {
    Short(String),
    Full {
        items: String,
        #[serde(default)]
        concurrency: Option<u64>,
    },
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawRetry {
    #[serde(default)]
    when: Option<String>,
    count: u32,
    #[serde(default)]
    delay: Option<u64>,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn unknown_fields_are_reported_with_their_line() {
        let text = "version: 1.0\ntasks:\n  a:\n    action: core.noop\n    nxet: []\n";
        let problems = Workflow::parse(text).unwrap_err();
        assert_eq!(problems.len(), 1);
        assert_eq!(problems[0].line, Some(5));
        assert!(problems[0].message.contains("nxet"), "{}", problems[0]);
    }

    #[test]
    fn every_semantic_problem_is_reported() {
        let text = "version: 1.0\ntasks:\n  a:\n    action: core.noop\n    next:\n      - do: [nope]\n  b:\n    join: all\n    action: core.noop\n  c:\n    action: \"{{ ctx( }}\"\n";
        let problems = Workflow::parse(text).unwrap_err();
        let text_of = |p: &SourceProblem| p.to_string();
        assert_eq!(problems.len(), 3, "{:?}", problems);
        assert!(
            text_of(&problems[0]).starts_with("line 10:"),
            "{}",
            problems[0]
        );
        assert!(problems
            .iter()
            .any(|p| p.line == Some(3) && p.message.contains("'nope'")));
        assert!(problems
            .iter()
            .any(|p| p.line == Some(7) && p.message.contains("joins")));
    }

    #[test]
    fn shorthand_forms() {
        let text = "version: 1.0\ninput:\n  - a\n  - b: 2\ntasks:\n  t:\n    with: x, y in {{ ctx().a }}\n    action: core.echo\n    next:\n      - publish: {p: 1}\n        do: u, noop\n  u:\n    join: 1\n";
        let wf = Workflow::parse(text).unwrap();
        assert_eq!(
            wf.input,
            vec![("a".into(), None), ("b".into(), Some(2.into()))]
        );
        let t = &wf.tasks["t"];
        assert_eq!(t.with.as_ref().unwrap().names, vec!["x", "y"]);
        assert_eq!(t.next[0].targets, vec!["u", "noop"]);
        assert_eq!(wf.tasks["u"].join, Some(Join::Count(1)));
        assert_eq!(wf.start_tasks(), vec!["t"]);
    }
}
