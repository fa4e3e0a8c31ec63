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

impl std::fmt::Display for Count {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Count::Fixed(n) => write!(f, "{n}"),
            Count::Expression(e) => f.write_str(e),
        }
    }
}

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
    /// Which language the workflow was written in: how its expressions see its data, what
    /// input it takes and what its result looks like.
    #[serde(default, skip_serializing_if = "Dialect::is_orquesta")]
    pub dialect: Dialect,
    /// The one task a run starts with, where the language names it (an ActionChain's
    /// `default`); `None` starts every task no transition leads to, as Orquesta does.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub start: Option<String>,
}

/// The language a [`Workflow`] was read from.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Dialect {
    /// Orquesta: input declared by the workflow, `ctx()`, Jinja and YAQL, result
    /// `{output, errors}`.
    #[default]
    Orquesta,
    /// st2's ActionChain (see [`super::chain`]): input is the action's parameters, templates
    /// are Jinja rendered to text with the parameters, node results and variables as top-level
    /// names, result `{tasks, published}`.
    ActionChain,
}

impl Dialect {
    pub fn is_orquesta(&self) -> bool {
        *self == Dialect::Orquesta
    }
}

/// One task of a workflow.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Task {
    /// The action ref (may be a template). A task without one does no work: it succeeds at once
    /// with a null result, as Orquesta's action-less tasks do.
    pub action: Option<String>,
    pub input: Map<String, Value>,
    /// `input` written as one expression giving the whole map (Orquesta's schema allows a
    /// string there), rendered when the task runs; `input` is then empty.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub input_expr: Option<String>,
    pub next: Vec<Transition>,
    pub join: Option<Join>,
    pub with: Option<WithItems>,
    pub retry: Option<Retry>,
    /// Seconds the engine waits before running the task (each item, for with-items).
    pub delay: Option<Count>,
    /// st2's `notify` for the task's executions (an ActionChain node's); Orquesta tasks have
    /// none.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub notify: Option<squall_actions::Notify>,
}

/// A whole number written as such or as a `{{ expression }}` evaluated when the task runs
/// (Orquesta allows both for `delay`, `retry.count`, `retry.delay` and `with.concurrency`).
/// Untagged, so a saved state holding a plain number reads back unchanged.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(untagged)]
pub enum Count {
    Fixed(u64),
    Expression(String),
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
    pub concurrency: Option<Count>,
}

/// `retry`: run the task again while `when` holds, at most `count` more times.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Retry {
    /// `None` retries on failure, as Orquesta does.
    pub when: Option<String>,
    pub count: Count,
    pub delay: Option<Count>,
}

impl Workflow {
    /// Parses the workflow file of an action of `runner`: Orquesta's language, or st2's
    /// ActionChain format (translated into the same model, see [`super::chain`]).
    pub fn parse_for(
        runner: squall_actions::RunnerType,
        text: &str,
    ) -> Result<Workflow, Vec<SourceProblem>> {
        if runner == squall_actions::RunnerType::ActionChain {
            super::chain::parse(text)
        } else {
            Workflow::parse(text)
        }
    }

    /// Parses a workflow file. Every problem found is returned, each with its line when known.
    pub fn parse(text: &str) -> Result<Workflow, Vec<SourceProblem>> {
        let raw: RawWorkflow = serde_yaml::from_str(text).map_err(|e| vec![yaml_problem(&e)])?;
        let mut problems = Vec::new();
        let mut report = |needle: Option<&str>, message: String| {
            problems.push(SourceProblem {
                line: needle.and_then(|n| locate(text, n)),
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

        let input = named_entries(raw.input, true, "input", "input", &mut report);
        let vars = named_entries(raw.vars, false, "vars", "vars", &mut report)
            .into_iter()
            .map(|(n, v)| (n, v.unwrap_or(Value::Null)))
            .collect::<Vec<_>>();
        let output = named_entries(raw.output, false, "output", "output", &mut report)
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
                    Some(&task_path(&name)),
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
                            Some(&task_path(name)),
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
                    Some(&task_path(name)),
                    format!("task '{name}': joins, but no transition leads to it"),
                ),
                Join::Count(n) if n == 0 || n > inbound => report(
                    Some(&task_path(name)),
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
                dialect: Dialect::Orquesta,
                start: None,
            })
        } else {
            Err(problems)
        }
    }

    /// The distinct tasks with a transition into `target`, in definition order.
    pub fn inbound(&self, target: &str) -> Vec<String> {
        inbound_tasks(&self.tasks, target)
    }

    /// Orquesta's split task: one without `join` that several transitions lead to (counted per
    /// transition, as Orquesta's `get_prev_tasks` does). Each arrival starts a new route.
    pub fn is_split(&self, name: &str) -> bool {
        let arrivals = self
            .tasks
            .values()
            .flat_map(|t| &t.next)
            .filter(|tr| tr.targets.iter().any(|x| x == name))
            .count();
        self.tasks.get(name).is_some_and(|t| t.join.is_none()) && arrivals > 1
    }

    /// Whether the transitions from `name` lead back to it (Orquesta's `in_cycle`): a task in
    /// a loop stays on its route.
    pub fn in_cycle(&self, name: &str) -> bool {
        let next_of = |task: &str| -> Vec<String> {
            self.tasks
                .get(task)
                .map(|t| t.next.iter().flat_map(|tr| tr.targets.clone()).collect())
                .unwrap_or_default()
        };
        let mut queue: std::collections::VecDeque<String> = next_of(name).into();
        let mut seen = std::collections::BTreeSet::new();
        while let Some(task) = queue.pop_front() {
            if task == name {
                return true;
            }
            if seen.insert(task.clone()) {
                queue.extend(next_of(&task));
            }
        }
        false
    }

    /// Where a run starts: the named start task, or else the tasks no transition leads to.
    pub fn start_tasks(&self) -> Vec<String> {
        if let Some(start) = &self.start {
            return vec![start.clone()];
        }
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
    let path = task_path(name);
    let here = Some(path.as_str());
    let field = |f: &str| format!("{path}{PATH_SEP}{f}");
    let mut input_expr = None;
    let mut input = match raw.input {
        None => Map::new(),
        // Orquesta's schema: a non-empty map, or a string (one expression giving the map).
        Some(serde_yaml::Value::String(s)) if !s.trim().is_empty() => {
            check_expression(
                &s,
                &format!("task '{name}' input"),
                Some(&field("input")),
                report,
            );
            input_expr = Some(s);
            Map::new()
        }
        Some(v) => match serde_json::to_value(v) {
            Ok(Value::Object(m)) if !m.is_empty() => m,
            Ok(other) => {
                report(
                    Some(&field("input")),
                    format!("task '{name}': input must be a map of the action's input, or one expression giving it (Orquesta's schema), not {other}"),
                );
                Map::new()
            }
            Err(_) => {
                report(
                    Some(&field("input")),
                    format!("task '{name}': input must be a map"),
                );
                Map::new()
            }
        },
    };
    // Orquesta's inline form `action: pack.name k=v k2="text"`: the ref, then its input.
    let action = raw.action.map(|action| {
        let inline = parse_inline_params(&action);
        for problem in &inline.problems {
            report(
                Some(&field("action")),
                format!("task '{name}': action '{action}': {problem}"),
            );
        }
        let action = if inline.params.is_empty() && inline.problems.is_empty() {
            action
        } else {
            let action = action.trim();
            let end = action.find(char::is_whitespace).unwrap_or(action.len());
            // Inline values win over `input:` entries of the same name.
            input.extend(inline.params);
            action[..end].to_string()
        };
        if action.trim().contains(char::is_whitespace) && !expr::is_template(&action) {
            report(
                Some(&field("action")),
                format!("task '{name}': action '{action}' must be an action ref, optionally followed by its input as name=value pairs"),
            );
        }
        check_template(&action, &format!("task '{name}' action"), Some(&field("action")), report);
        action
    });
    for (k, v) in &input {
        check_value_templates(
            v,
            &format!("task '{name}' input '{k}'"),
            &field("input"),
            report,
        );
    }
    let join = match raw.join {
        None => None,
        Some(serde_yaml::Value::String(s)) if s == "all" => Some(Join::All),
        Some(serde_yaml::Value::Number(n)) if n.as_u64().is_some() => {
            Some(Join::Count(n.as_u64().unwrap_or(0) as usize))
        }
        Some(_) => {
            report(
                Some(&field("join")),
                format!("task '{name}': join must be 'all' or a number"),
            );
            None
        }
    };
    let with = raw.with.and_then(|w| parse_with(name, w, &path, report));
    let retry = raw.retry.and_then(|r| parse_retry(name, r, &path, report));
    let delay = raw.delay.and_then(|d| {
        parse_count(
            &d,
            &format!("task '{name}': delay"),
            &field("delay"),
            report,
        )
    });
    let next = raw
        .next
        .into_iter()
        .map(|t| {
            if let Some(w) = &t.when {
                check_expression(w, &format!("task '{name}' next when"), here, report);
            }
            let publish = named_entries(
                t.publish,
                false,
                &format!("task '{name}': publish"),
                &field("publish"),
                report,
            )
            .into_iter()
            .map(|(k, v)| (k, v.unwrap_or(Value::Null)))
            .collect::<Vec<_>>();
            for (k, v) in &publish {
                check_value_templates(
                    v,
                    &format!("task '{name}' publish '{k}'"),
                    &field("publish"),
                    report,
                );
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
        action,
        input,
        input_expr,
        next,
        join,
        with,
        retry,
        delay,
        notify: None,
    }
}

/// `with: "x in {{ ... }}"` or `with: {items: ..., concurrency: ...}`.
fn parse_with(
    name: &str,
    raw: serde_yaml::Value,
    path: &str,
    report: &mut impl FnMut(Option<&str>, String),
) -> Option<WithItems> {
    let at = format!("{path}{PATH_SEP}with");
    let (spec, concurrency) = match raw {
        serde_yaml::Value::String(s) => (s, None),
        serde_yaml::Value::Mapping(m) => {
            let mut items = None;
            let mut concurrency = None;
            for (k, v) in m {
                match (k.as_str(), v) {
                    (Some("items"), serde_yaml::Value::String(s)) => items = Some(s),
                    (Some("items"), other) => report(
                        Some(&at),
                        format!(
                            "task '{name}': with items must be text: '{{{{ expr }}}}' or 'name in {{{{ expr }}}}' (Orquesta's schema), not {}",
                            serde_json::to_string(&other).unwrap_or_default()
                        ),
                    ),
                    (Some("concurrency"), v) => {
                        let loc = format!("{at}{PATH_SEP}concurrency");
                        concurrency =
                            parse_count(&v, &format!("task '{name}': concurrency"), &loc, report);
                        if concurrency == Some(Count::Fixed(0)) {
                            report(
                                Some(path),
                                format!("task '{name}': concurrency must be at least 1"),
                            );
                        }
                    }
                    (k, _) => report(
                        Some(&format!("{at}{PATH_SEP}{}", k.unwrap_or_default())),
                        format!(
                            "task '{name}': with has no field '{}' (items, concurrency)",
                            k.unwrap_or("?")
                        ),
                    ),
                }
            }
            match items {
                Some(items) => (items, concurrency),
                None => {
                    report(Some(&at), format!("task '{name}': with needs 'items'"));
                    return None;
                }
            }
        }
        other => {
            // Orquesta's schema takes only text or {items: text, concurrency}: a literal list
            // is refused there too.
            let shown = serde_json::to_string(&other).unwrap_or_default();
            report(
                Some(&at),
                format!("task '{name}': with must be 'name in <% expr %>' (or {{{{ expr }}}}) or a map {{items, concurrency}}, not {shown}; a literal list is written as an expression, e.g. with: <% [0, 1, 2] %>"),
            );
            return None;
        }
    };
    match parse_items(&spec) {
        Some((names, items)) => {
            check_expression(
                &items,
                &format!("task '{name}' with items"),
                Some(&at),
                report,
            );
            Some(WithItems {
                names,
                items,
                concurrency,
            })
        }
        None => {
            report(
                Some(&at),
                format!("task '{name}': with items must be '{{{{ expr }}}}' or 'name in {{{{ expr }}}}', not '{spec}'"),
            );
            None
        }
    }
}

/// `retry: {when, count, delay}`; `count` is required, as in Orquesta.
fn parse_retry(
    name: &str,
    raw: serde_yaml::Value,
    path: &str,
    report: &mut impl FnMut(Option<&str>, String),
) -> Option<Retry> {
    let at = format!("{path}{PATH_SEP}retry");
    let serde_yaml::Value::Mapping(m) = raw else {
        report(
            Some(&at),
            format!("task '{name}': retry must be a map {{when, count, delay}}"),
        );
        return None;
    };
    let (mut when, mut count, mut delay) = (None, None, None);
    for (k, v) in m {
        let loc = format!("{at}{PATH_SEP}{}", k.as_str().unwrap_or_default());
        match (k.as_str(), v) {
            (Some("when"), serde_yaml::Value::String(w)) => {
                check_expression(&w, &format!("task '{name}' retry when"), Some(&loc), report);
                when = Some(w);
            }
            (Some("when"), _) => report(
                Some(&loc),
                format!("task '{name}': retry when must be one '{{{{ expression }}}}'"),
            ),
            (Some("count"), v) => {
                count = parse_count(&v, &format!("task '{name}': retry count"), &loc, report);
            }
            (Some("delay"), v) => {
                delay = parse_count(&v, &format!("task '{name}': retry delay"), &loc, report);
            }
            (k, _) => report(
                Some(&loc),
                format!(
                    "task '{name}': retry has no field '{}' (when, count, delay)",
                    k.unwrap_or("?")
                ),
            ),
        }
    }
    let Some(count) = count else {
        report(Some(&at), format!("task '{name}': retry needs a count"));
        return None;
    };
    Some(Retry { when, count, delay })
}

/// A whole number, or one `{{ expression }}` giving one when the task runs.
fn parse_count(
    v: &serde_yaml::Value,
    what: &str,
    loc: &str,
    report: &mut impl FnMut(Option<&str>, String),
) -> Option<Count> {
    match v {
        serde_yaml::Value::Number(n) if n.as_u64().is_some() => n.as_u64().map(Count::Fixed),
        serde_yaml::Value::String(s) if s.trim().parse::<u64>().is_ok() => {
            s.trim().parse().ok().map(Count::Fixed)
        }
        serde_yaml::Value::String(s) if expr::single_expression(s).is_some() => {
            check_template(s, what, Some(loc), report);
            Some(Count::Expression(s.clone()))
        }
        other => {
            let shown = serde_json::to_string(other).unwrap_or_default();
            report(
                Some(loc),
                format!("{what} must be a whole number or one '{{{{ expression }}}}', not {shown}"),
            );
            None
        }
    }
}

/// Separates the steps of a location path given to [`locate`].
const PATH_SEP: char = '\u{1}';

/// Where a task's problems are reported: its own line under `tasks:`.
fn task_path(name: &str) -> String {
    format!("tasks{PATH_SEP}{name}")
}

/// The line of a path of keys (`tasks`, then the task, then a field), each searched after the
/// previous one; a step starting with `~` is text the line contains. A step that cannot be
/// found leaves the line of the last one that was.
fn locate(text: &str, path: &str) -> Option<usize> {
    let lines: Vec<&str> = text.lines().collect();
    let mut from = 0;
    let mut found = None;
    for step in path.split(PATH_SEP) {
        let hit = lines
            .iter()
            .enumerate()
            .skip(from)
            .find(|(_, l)| step_matches(l, step))
            .map(|(i, _)| i);
        match hit {
            Some(i) => {
                found = Some(i + 1);
                from = i + 1;
            }
            None => break,
        }
    }
    found.or_else(|| line_of(text, path))
}

fn step_matches(line: &str, step: &str) -> bool {
    if let Some(literal) = step.strip_prefix('~') {
        return !literal.is_empty() && line.contains(literal);
    }
    let t = line.trim_start().trim_start_matches("- ");
    [
        format!("{step}:"),
        format!("'{step}':"),
        format!("\"{step}\":"),
    ]
    .iter()
    .any(|c| t.starts_with(c.as_str()))
}

/// What [`parse_inline_params`] found: the pairs in order, and values it could not read.
#[derive(Debug, Default)]
struct InlineParams {
    params: Vec<(String, Value)>,
    problems: Vec<String>,
}

/// Orquesta's `parse_inline_params` (orquesta/utils/parameters.py): `name=value` pairs where a
/// value is `[...]`, `"..."`, `'...'`, a number, `true`/`false` (any case), `null`, or one
/// `{{ }}`, `{% %}` or `<% %>` expression. Values are read as JSON unless quoted (a quoted
/// `{...}` is still read as JSON), as Orquesta does. Orquesta silently skips a pair whose value
/// has none of these forms (`message=hello`); squall reports it, since the value is lost.
fn parse_inline_params(s: &str) -> InlineParams {
    let mut out = InlineParams::default();
    let mut i = 0;
    while i < s.len() {
        let rest = &s[i..];
        let word_len = rest
            .char_indices()
            .find(|(_, c)| !(c.is_alphanumeric() || *c == '_'))
            .map_or(rest.len(), |(p, _)| p);
        let at_word_start = s[..i]
            .chars()
            .next_back()
            .is_none_or(|c| !(c.is_alphanumeric() || c == '_'));
        if word_len > 0 && rest[word_len..].starts_with('=') {
            let key = &rest[..word_len];
            let value_start = i + word_len + 1;
            if let Some(len) = inline_value_len(&s[value_start..]) {
                let raw = &s[value_start..value_start + len];
                out.params.push((key.to_string(), inline_value(raw)));
                i = value_start + len;
                continue;
            }
            if at_word_start && (i == 0 || s[..i].ends_with(char::is_whitespace)) {
                out.problems.push(format!(
                    "the value of '{key}' must be quoted, a number, true, false, null, a list or an expression"
                ));
            }
            i = value_start;
            continue;
        }
        i += rest.chars().next().map_or(1, char::len_utf8);
    }
    out
}

/// The length of the value at the start of `s`, trying Orquesta's forms in its order.
fn inline_value_len(s: &str) -> Option<usize> {
    let line = s.split('\n').next().unwrap_or_default();
    let trailing_space = |end: usize| {
        end + s[end..]
            .char_indices()
            .find(|(_, c)| !c.is_whitespace())
            .map_or(s.len() - end, |(p, _)| p)
    };
    let delimited = |open: &str, close: &str, greedy: bool| -> Option<usize> {
        let body = line.strip_prefix(open)?;
        let at = if greedy {
            body.rfind(close)
        } else {
            body.find(close)
        }?;
        Some(open.len() + at + close.len())
    };
    if let Some(end) = delimited("[", "]", true) {
        return Some(trailing_space(end));
    }
    if let Some(end) = delimited("\"", "\"", false).or_else(|| {
        let body = s.strip_prefix('"')?;
        body.find('"').map(|p| p + 2)
    }) {
        return Some(trailing_space(end));
    }
    if let Some(end) = delimited("'", "'", false).or_else(|| {
        let body = s.strip_prefix('\'')?;
        body.find('\'').map(|p| p + 2)
    }) {
        return Some(trailing_space(end));
    }
    let digits = |t: &str| t.chars().take_while(char::is_ascii_digit).count();
    let sign = usize::from(s.starts_with('-'));
    let int_part = digits(&s[sign..]);
    let after = &s[sign + int_part..];
    if let Some(frac) = after.strip_prefix('.') {
        let n = digits(frac);
        if n > 0 {
            return Some(sign + int_part + 1 + n);
        }
    }
    if int_part > 0 {
        return Some(sign + int_part);
    }
    for word in ["true", "false"] {
        if s.len() >= word.len()
            && s.is_char_boundary(word.len())
            && s[..word.len()].eq_ignore_ascii_case(word)
        {
            return Some(word.len());
        }
    }
    if s.starts_with("null") {
        return Some(4);
    }
    for (open, close) in [("{{", "}}"), ("{%", "%}"), ("<%", "%>")] {
        if let Some(end) = delimited(open, close, false) {
            return Some(end);
        }
    }
    None
}

/// Orquesta's reading of one inline value: quotes stripped, then JSON unless it was quoted.
fn inline_value(raw: &str) -> Value {
    let v = raw.trim();
    let quoted = v.contains('"') && v.matches('"').count() >= 2
        || v.contains('\'') && v.matches('\'').count() >= 2;
    let v = v.strip_prefix('"').unwrap_or(v);
    let v = v.strip_suffix('"').unwrap_or(v);
    let v = v.strip_prefix('\'').unwrap_or(v);
    let v = v.strip_suffix('\'').unwrap_or(v);
    let braces = v.starts_with('{') && v.ends_with('}');
    if quoted && !braces && !v.is_empty() {
        return Value::String(v.to_string());
    }
    let lowered;
    let text = if v.eq_ignore_ascii_case("true") || v.eq_ignore_ascii_case("false") {
        lowered = v.to_ascii_lowercase();
        lowered.as_str()
    } else {
        v
    };
    serde_json::from_str(text).unwrap_or_else(|_| Value::String(v.to_string()))
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
/// Where `bare_names` is false, text is Orquesta's inline form `a=1 b="{{ ... }}"`, alone or
/// as list entries (how st2 users often write `publish`). `loc` is where problems are shown.
fn named_entries(
    raw: Option<serde_yaml::Value>,
    bare_names: bool,
    section: &str,
    loc: &str,
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
    let inline = |out: &mut Vec<(String, Option<Value>)>,
                  text: &str,
                  report: &mut dyn FnMut(Option<&str>, String)| {
        let at = format!(
            "{loc}{PATH_SEP}~{}",
            text.lines().next().unwrap_or_default().trim()
        );
        let parsed = parse_inline_params(text);
        for problem in &parsed.problems {
            report(Some(&at), format!("{section}: '{text}': {problem}"));
        }
        if parsed.params.is_empty() && parsed.problems.is_empty() {
            report(
                Some(&at),
                format!("{section}: '{text}' has no name=value pairs"),
            );
        }
        out.extend(parsed.params.into_iter().map(|(k, v)| (k, Some(v))));
    };
    match raw {
        None | Some(serde_yaml::Value::Null) => {}
        Some(serde_yaml::Value::Mapping(m)) => {
            for (k, v) in m {
                push(&mut out, &k, v);
            }
        }
        Some(serde_yaml::Value::String(s)) if !bare_names => {
            inline(&mut out, &s, &mut *report);
        }
        Some(serde_yaml::Value::Sequence(items)) => {
            for item in items {
                match item {
                    serde_yaml::Value::String(s) if bare_names => out.push((s, None)),
                    serde_yaml::Value::String(s) => inline(&mut out, &s, &mut *report),
                    serde_yaml::Value::Mapping(m) if m.len() == 1 => {
                        for (k, v) in m {
                            push(&mut out, &k, v);
                        }
                    }
                    _ => report(
                        Some(loc),
                        format!(
                            "{section}: each entry must be {}a single-key map {{name: value}}",
                            if bare_names {
                                "a name or "
                            } else {
                                "name=value text or "
                            }
                        ),
                    ),
                }
            }
        }
        Some(other) => report(
            Some(loc),
            format!(
                "{section} must be a list or a map (Orquesta's schema: a list), not {}",
                serde_json::to_string(&other).unwrap_or_default()
            ),
        ),
    }
    if bad {
        report(
            Some(loc),
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
        return;
    }
    for name in expr::unknown_names(s) {
        report(
            needle,
            format!("{what}: '{name}' is not a function or name Orquesta's expressions know (a workflow's variables are ctx().name)"),
        );
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
    with: Option<serde_yaml::Value>,
    #[serde(default)]
    retry: Option<serde_yaml::Value>,
    #[serde(default)]
    delay: Option<serde_yaml::Value>,
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
            text_of(&problems[0]).starts_with("line 11:"),
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
