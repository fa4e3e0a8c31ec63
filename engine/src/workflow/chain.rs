//! st2's ActionChain format (the `action-chain` runner), read into the workflow model so the
//! conductor runs it with st2's semantics. Pure: text in, a [`Workflow`] or every problem
//! found (each with its line) out; it must never render a template or look an action up.
//!
//! The file (st2's `actionchain.py` model): `chain`, a list of nodes, each `name`, `ref` (the
//! action), `parameters` (or the older `params`, not both), `on-success` and `on-failure` (the
//! next node's name), `publish` and `notify`; `default`, the node a run starts with (when
//! absent, the first node no `on-success` or `on-failure` names, else the first node); and
//! `vars`, rendered once with the action's parameters.
//!
//! How it runs (st2's `action_chain_runner.py`), and how it is translated:
//! - Nodes run one at a time from `default`. Each node becomes a task running `ref` with its
//!   parameters; `on-success` becomes a transition taken `{{ succeeded() }}`, `on-failure` one
//!   taken `{{ failed() }}`; `publish` a transition taken whatever the outcome (st2 publishes
//!   after every execution that ran, failed or not), evaluated before the route.
//! - Templates are Jinja, rendered to text; they see the parameters, every node's latest
//!   result under the node's name (`{{ c1.stdout }}`), the variables (`vars` and published
//!   ones), `__results` (all node results), `st2kv.system.KEY`, `system.KEY` and, in node
//!   parameters, `action_context` (`parent.execution_id`, `parent.user`). See
//!   [`super::expr::render`] and the conductor.
//! - The chain's status is its last node's: a node that fails with an `on-failure` route is
//!   handled, and if the route's nodes succeed the chain succeeds; a node that fails with no
//!   `on-failure` ends the chain failed. A template that does not render ends it failed with
//!   st2's top-level `error`.
//! - The result is st2's `{tasks: [...], published: {...}}` (see the conductor's
//!   `chain_output` for what an entry holds and what it leaves out).
//!
//! Where squall is stricter than st2 (each said in the problem's message): every node is
//! checked against the schema (st2's schema, `items: [Node]`, checks only the first); a
//! duplicate node name is refused (st2 runs the first); a node name that is a template is
//! refused (st2 accepts it, then cannot find the node when it gets there, as it never renders
//! node names); `fail`, `noop` and `continue` are refused as node names, since squall's
//! conductor reads them as its engine commands.

use indexmap::IndexMap;
use serde_json::{Map, Value};
use serde_yaml::Value as Yaml;
use squall_rules::{yaml_problem, SourceProblem};

use super::expr;
use super::model::{Dialect, Task, Transition, Workflow, ENGINE_COMMANDS};

/// The keys of a chain file, and of a node (st2's schema).
const CHAIN_KEYS: [&str; 3] = ["chain", "default", "vars"];
const NODE_KEYS: [&str; 8] = [
    "name",
    "ref",
    "params",
    "parameters",
    "on-success",
    "on-failure",
    "publish",
    "notify",
];

/// One node as read, before the checks that need every node.
struct Node {
    name: String,
    reference: String,
    parameters: Map<String, Value>,
    on_success: Option<String>,
    on_failure: Option<String>,
    publish: Vec<(String, Value)>,
    notify: Option<squall_actions::Notify>,
    /// The entry's index in `chain`, to locate its problems.
    index: usize,
}

/// Parses an ActionChain file. Every problem found is returned, each with its line when the
/// text shows where.
pub fn parse(text: &str) -> Result<Workflow, Vec<SourceProblem>> {
    let root: Yaml = serde_yaml::from_str(text).map_err(|e| vec![yaml_problem(&e)])?;
    let at = Locator::new(text);
    let mut problems = Vec::new();
    let mut report = |line: Option<usize>, message: String| {
        problems.push(SourceProblem {
            line,
            column: None,
            message,
        })
    };
    let Yaml::Mapping(root) = root else {
        report(
            Some(1),
            "an ActionChain file is a map: chain, and optionally default and vars".to_string(),
        );
        return Err(problems);
    };
    for key in root.keys() {
        match key.as_str() {
            Some(k) if CHAIN_KEYS.contains(&k) => {}
            _ => {
                let shown = yaml_text(key);
                report(
                    at.top_key(&shown),
                    format!("unknown key '{shown}' (an ActionChain has chain, default and vars)"),
                );
            }
        }
    }

    let nodes = match root.get("chain") {
        None => {
            report(
                Some(1),
                "the file has no 'chain': the list of nodes to run".to_string(),
            );
            Vec::new()
        }
        Some(Yaml::Sequence(items)) => items
            .iter()
            .enumerate()
            .filter_map(|(index, item)| read_node(index, item, &at, &mut report))
            .collect(),
        Some(_) => {
            report(
                at.top_key("chain"),
                "'chain' must be a list of nodes".to_string(),
            );
            Vec::new()
        }
    };
    if root
        .get("chain")
        .and_then(Yaml::as_sequence)
        .is_some_and(|items| items.is_empty())
    {
        report(
            at.top_key("chain"),
            "the chain has no nodes, so it has no node to start with".to_string(),
        );
    }

    let vars = match root.get("vars") {
        None | Some(Yaml::Null) => Vec::new(),
        Some(Yaml::Mapping(m)) => {
            let mut out = Vec::new();
            for (k, v) in m {
                let name = yaml_text(k);
                match serde_json::to_value(v) {
                    Ok(value) => {
                        check_templates(&value, &format!("vars '{name}'"), &mut |message| {
                            report(at.key_after(at.top_key("vars"), &name), message)
                        });
                        out.push((name, value));
                    }
                    Err(e) => report(
                        at.key_after(at.top_key("vars"), &name),
                        format!("vars '{name}': {e}"),
                    ),
                }
            }
            out
        }
        Some(_) => {
            report(
                at.top_key("vars"),
                "'vars' must be a map of names to values".to_string(),
            );
            Vec::new()
        }
    };

    let default = match root.get("default") {
        None | Some(Yaml::Null) => None,
        Some(Yaml::String(s)) => Some(s.clone()),
        Some(other) => {
            report(
                at.top_key("default"),
                format!("'default' must be a node's name, not {}", yaml_text(other)),
            );
            None
        }
    };

    // Checks that need every node.
    let mut first_line: IndexMap<&str, Option<usize>> = IndexMap::new();
    for node in &nodes {
        let line = at.item(node.index);
        if let Some(earlier) = first_line.get(node.name.as_str()) {
            let also = earlier
                .map(|l| format!(" (first at line {l})"))
                .unwrap_or_default();
            report(
                at.key_in_item(node.index, "name").or(line),
                format!(
                    "node name '{}' is used twice{also}: st2 would only ever run the first",
                    node.name
                ),
            );
        } else {
            first_line.insert(&node.name, line);
        }
        if ENGINE_COMMANDS.contains(&node.name.as_str()) {
            report(
                at.key_in_item(node.index, "name").or(line),
                format!(
                    "node '{}': squall reserves the names fail, noop and continue for its workflow engine; rename the node",
                    node.name
                ),
            );
        }
        for (key, target) in [
            ("on-success", &node.on_success),
            ("on-failure", &node.on_failure),
        ] {
            let Some(target) = target else { continue };
            let known = nodes.iter().any(|n| n.name == *target);
            if !known {
                let why = if squall_rules::template::is_template(target) {
                    " (node names are not rendered: st2 would fail when it got there)"
                } else {
                    ""
                };
                report(
                    at.key_in_item(node.index, key).or(line),
                    format!(
                        "Unable to find node with name \"{target}\" referenced in \"{key}\" in task \"{}\"{why}.",
                        node.name
                    ),
                );
            }
        }
    }
    if let Some(d) = &default {
        if !nodes.is_empty() && !nodes.iter().any(|n| n.name == *d) {
            report(
                at.top_key("default"),
                format!("Unable to find node with name \"{d}\" referenced in \"default\"."),
            );
        }
    }

    if !problems.is_empty() {
        return Err(problems);
    }
    let start = default.or_else(|| default_node(&nodes));
    let tasks = nodes
        .into_iter()
        .map(|node| (node.name.clone(), into_task(node)))
        .collect();
    Ok(Workflow {
        description: None,
        input: Vec::new(),
        vars,
        tasks,
        output: Vec::new(),
        dialect: Dialect::ActionChain,
        start,
    })
}

/// st2's `_get_default`: the first node no `on-success` or `on-failure` names, else the first.
fn default_node(nodes: &[Node]) -> Option<String> {
    let referenced = |name: &str| {
        nodes
            .iter()
            .any(|n| n.on_success.as_deref() == Some(name) || n.on_failure.as_deref() == Some(name))
    };
    nodes
        .iter()
        .find(|n| !referenced(&n.name))
        .or_else(|| nodes.first())
        .map(|n| n.name.clone())
}

fn into_task(node: Node) -> Task {
    let mut next = Vec::new();
    if !node.publish.is_empty() {
        next.push(Transition {
            when: None,
            publish: node.publish,
            targets: Vec::new(),
        });
    }
    if let Some(target) = node.on_success {
        next.push(Transition {
            when: Some("{{ succeeded() }}".to_string()),
            publish: Vec::new(),
            targets: vec![target],
        });
    }
    if let Some(target) = node.on_failure {
        next.push(Transition {
            when: Some("{{ failed() }}".to_string()),
            publish: Vec::new(),
            targets: vec![target],
        });
    }
    Task {
        action: Some(node.reference),
        input: node.parameters,
        input_expr: None,
        next,
        join: None,
        with: None,
        retry: None,
        delay: None,
        notify: node.notify,
    }
}

/// Reads entry `index` of `chain`, reporting what is wrong with it; `None` when it has no
/// usable name.
fn read_node(
    index: usize,
    item: &Yaml,
    at: &Locator,
    report: &mut impl FnMut(Option<usize>, String),
) -> Option<Node> {
    let line = at.item(index);
    let Yaml::Mapping(m) = item else {
        report(
            line,
            format!(
                "chain entry {} must be a map with at least name and ref",
                index + 1
            ),
        );
        return None;
    };
    let label = match m.get("name") {
        Some(Yaml::String(n)) => format!("node '{n}'"),
        _ => format!("chain entry {}", index + 1),
    };
    let key_line = |key: &str| at.key_in_item(index, key).or(line);
    for key in m.keys() {
        let shown = yaml_text(key);
        if !NODE_KEYS.contains(&shown.as_str()) {
            report(
                key_line(&shown),
                format!(
                    "{label}: unknown key '{shown}' (a node has name, ref, parameters or params, on-success, on-failure, publish and notify)"
                ),
            );
        }
    }
    let name = match m.get("name") {
        Some(Yaml::String(n)) if !n.is_empty() => Some(n.clone()),
        None => {
            report(line, format!("{label} has no name"));
            None
        }
        Some(other) => {
            report(
                key_line("name"),
                format!("{label}: name must be text, not {}", yaml_text(other)),
            );
            None
        }
    };
    let reference = match m.get("ref") {
        Some(Yaml::String(r)) if !r.trim().is_empty() => {
            if expr::is_template(r) || r.trim().contains(char::is_whitespace) {
                report(
                    key_line("ref"),
                    format!("{label}: ref must be an action ref (pack.action), not '{r}'"),
                );
            }
            Some(r.trim().to_string())
        }
        None => {
            report(
                line,
                format!("{label} has no ref: the action it runs (pack.action)"),
            );
            None
        }
        Some(other) => {
            report(
                key_line("ref"),
                format!(
                    "{label}: ref must be an action ref (pack.action), not {}",
                    yaml_text(other)
                ),
            );
            None
        }
    };
    let mut map_of = |key: &str| -> Map<String, Value> {
        match m.get(key) {
            None | Some(Yaml::Null) => Map::new(),
            Some(v @ Yaml::Mapping(_)) => match serde_json::to_value(v) {
                Ok(Value::Object(map)) => map,
                Ok(_) => Map::new(),
                Err(e) => {
                    report(key_line(key), format!("{label}: {key}: {e}"));
                    Map::new()
                }
            },
            Some(other) => {
                report(
                    key_line(key),
                    format!(
                        "{label}: {key} must be a map of names to values, not {}",
                        yaml_text(other)
                    ),
                );
                Map::new()
            }
        }
    };
    let params = map_of("params");
    let parameters = map_of("parameters");
    let publish_map = map_of("publish");
    if !params.is_empty() && !parameters.is_empty() {
        report(
            key_line("params"),
            format!("{label}: Either \"params\" or \"parameters\" attribute needs to be provided, but not both"),
        );
    }
    // st2's `get_parameters`: `parameters or params`.
    let parameters = if parameters.is_empty() {
        params
    } else {
        parameters
    };
    for (key, value) in &parameters {
        check_templates(
            value,
            &format!("{label} parameter '{key}'"),
            &mut |message| report(at.key_in_item(index, key).or(line), message),
        );
    }
    for (key, value) in &publish_map {
        check_templates(value, &format!("{label} publish '{key}'"), &mut |message| {
            report(at.key_in_item(index, key).or(line), message)
        });
    }
    let mut route = |key: &str| -> Option<String> {
        match m.get(key) {
            None | Some(Yaml::Null) => None,
            // st2's default is "": no next node.
            Some(Yaml::String(s)) if s.is_empty() => None,
            Some(Yaml::String(s)) => Some(s.clone()),
            Some(other) => {
                report(
                    key_line(key),
                    format!(
                        "{label}: {key} must be a node's name, not {}",
                        yaml_text(other)
                    ),
                );
                None
            }
        }
    };
    let on_success = route("on-success");
    let on_failure = route("on-failure");
    let notify = match m.get("notify") {
        None | Some(Yaml::Null) => None,
        Some(v) => match serde_yaml::from_value::<squall_actions::Notify>(v.clone()) {
            Ok(n) => Some(n),
            Err(e) => {
                report(key_line("notify"), format!("{label}: notify: {e}"));
                None
            }
        },
    };
    Some(Node {
        name: name?,
        reference: reference.unwrap_or_default(),
        parameters,
        on_success,
        on_failure,
        publish: publish_map.into_iter().collect(),
        notify,
        index,
    })
}

/// Reports every template in `value` whose Jinja does not compile.
fn check_templates(value: &Value, what: &str, report: &mut dyn FnMut(String)) {
    match value {
        Value::String(s) => {
            if let Err(e) = expr::check_jinja(s) {
                report(format!("{what}: template does not compile: {e}"));
            }
        }
        Value::Array(items) => items.iter().for_each(|i| check_templates(i, what, report)),
        Value::Object(m) => m.values().for_each(|i| check_templates(i, what, report)),
        _ => {}
    }
}

/// A YAML scalar as the file shows it (keys and wrong values in messages).
fn yaml_text(v: &Yaml) -> String {
    match v {
        Yaml::String(s) => s.clone(),
        other => serde_yaml::to_string(other)
            .map(|s| s.trim().to_string())
            .unwrap_or_default(),
    }
}

/// Finds lines in the file's text: top-level keys, the entries of `chain` and keys inside one
/// entry. Plain text search, good for the block style chain files are written in; where it
/// cannot tell (flow style), problems carry the line of the nearest thing it found, or none.
struct Locator<'t> {
    lines: Vec<&'t str>,
    /// The line index where each entry of `chain` starts.
    items: Vec<usize>,
}

impl<'t> Locator<'t> {
    fn new(text: &'t str) -> Self {
        let lines: Vec<&str> = text.lines().collect();
        let items = chain_items(&lines);
        Locator { lines, items }
    }

    /// The 1-based line of a top-level `key:`.
    fn top_key(&self, key: &str) -> Option<usize> {
        self.lines
            .iter()
            .position(|l| indent(l) == 0 && is_key(l, key))
            .map(|i| i + 1)
    }

    /// The first `key:` after the 1-based line `from` (a key of a top-level map).
    fn key_after(&self, from: Option<usize>, key: &str) -> Option<usize> {
        let from = from?;
        self.lines
            .iter()
            .enumerate()
            .skip(from)
            .take_while(|(_, l)| indent(l) > 0 || l.trim().is_empty() || is_comment(l))
            .find(|(_, l)| is_key(l, key))
            .map(|(i, _)| i + 1)
            .or(Some(from))
    }

    /// The 1-based line where entry `index` of `chain` starts.
    fn item(&self, index: usize) -> Option<usize> {
        self.items.get(index).map(|i| i + 1)
    }

    /// The 1-based line of `key:` inside entry `index` of `chain`.
    fn key_in_item(&self, index: usize, key: &str) -> Option<usize> {
        let start = *self.items.get(index)?;
        let end = self
            .items
            .get(index + 1)
            .copied()
            .unwrap_or(self.lines.len());
        (start..end)
            .find(|&i| is_key(self.lines[i], key))
            .map(|i| i + 1)
    }
}

/// The line indexes where the entries of the top-level `chain:` list start: lines that begin
/// (after their indentation) with `-` at the list's indentation.
fn chain_items(lines: &[&str]) -> Vec<usize> {
    let Some(chain) = lines
        .iter()
        .position(|l| indent(l) == 0 && is_key(l, "chain"))
    else {
        return Vec::new();
    };
    let mut dash_indent = None;
    let mut items = Vec::new();
    for (i, line) in lines.iter().enumerate().skip(chain + 1) {
        let t = line.trim_start();
        if t.is_empty() || t.starts_with('#') {
            continue;
        }
        let n = indent(line);
        let is_dash = t == "-" || t.starts_with("- ");
        match dash_indent {
            None if is_dash => {
                dash_indent = Some(n);
                items.push(i);
            }
            None => break,
            Some(d) if is_dash && n == d => items.push(i),
            Some(d) if n > d => {}
            Some(_) => break,
        }
    }
    items
}

fn indent(line: &str) -> usize {
    line.len() - line.trim_start().len()
}

fn is_comment(line: &str) -> bool {
    line.trim_start().starts_with('#')
}

/// Whether the line holds `key:` (after a list dash, quoted or not).
fn is_key(line: &str, key: &str) -> bool {
    let t = line.trim_start();
    let t = t.strip_prefix('-').map(str::trim_start).unwrap_or(t);
    [
        format!("{key}:"),
        format!("'{key}':"),
        format!("\"{key}\":"),
    ]
    .iter()
    .any(|k| t.starts_with(k.as_str()))
}

#[cfg(test)]
mod tests {
    use super::*;

    const ECHOCHAIN: &str = "---\nchain:\n  -\n    name: \"c1\"\n    ref: \"core.local\"\n    parameters:\n      cmd: \"echo c1\"\n    on-success: \"c2\"\n    on-failure: \"c4\"\n  -\n    name: \"c2\"\n    ref: \"core.local\"\n    parameters:\n      cmd: \"echo \\\"c2: parent exec is {{action_context.parent.execution_id}}.\\\"\"\n    on-success: \"c3\"\n    on-failure: \"c4\"\n  -\n    name: \"c3\"\n    ref: \"core.local\"\n    parameters:\n      cmd: \"echo c3\"\n    on-failure: \"c4\"\n  -\n    name: \"c4\"\n    ref: \"core.local\"\n    parameters:\n      cmd: \"echo fail c4\"\n";

    #[test]
    fn st2s_example_reads_as_a_chain_starting_at_its_first_node() {
        let wf = parse(ECHOCHAIN).unwrap();
        assert_eq!(wf.dialect, Dialect::ActionChain);
        assert_eq!(wf.start_tasks(), vec!["c1"]);
        assert_eq!(
            wf.tasks.keys().collect::<Vec<_>>(),
            vec!["c1", "c2", "c3", "c4"]
        );
        let c1 = &wf.tasks["c1"];
        assert_eq!(c1.action.as_deref(), Some("core.local"));
        assert_eq!(c1.next.len(), 2);
        assert_eq!(c1.next[0].targets, vec!["c2"]);
        assert_eq!(c1.next[1].when.as_deref(), Some("{{ failed() }}"));
    }

    #[test]
    fn default_is_the_first_node_nothing_leads_to() {
        let text = "chain:\n  - name: b\n    ref: core.noop\n  - name: a\n    ref: core.noop\n    on-success: b\n";
        assert_eq!(parse(text).unwrap().start, Some("a".into()));
        let looped = "chain:\n  - name: a\n    ref: core.noop\n    on-success: b\n  - name: b\n    ref: core.noop\n    on-success: a\n";
        assert_eq!(parse(looped).unwrap().start, Some("a".into()));
    }

    #[test]
    fn items_are_located_in_both_list_styles() {
        let lines: Vec<&str> = ECHOCHAIN.lines().collect();
        assert_eq!(chain_items(&lines), vec![2, 9, 16, 22]);
        let compact = "chain:\n- name: a\n  ref: x.y\n- name: b\n  ref: x.y\nvars: {}\n";
        let lines: Vec<&str> = compact.lines().collect();
        assert_eq!(chain_items(&lines), vec![1, 3]);
    }
}
