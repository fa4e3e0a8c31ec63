//! The rule model and its loader: StackStorm rule files, unchanged, plus squall's `throttle`
//! and `correlate` (rules over several instances, loaded by [`crate::correlate`]).
//!
//! Loading checks everything that can be checked without the rest of the pack (field names,
//! operators, keys, regular expressions, template syntax, throttle windows) and reports every
//! problem it finds with its line. It must never touch the file system: callers hand it text.

use std::time::Duration;

use fancy_regex::Regex;
use serde::Deserialize;
use serde_json::{Map, Value};

use crate::correlate::{parse_correlation, read_block, Correlation};
use crate::lookup::KeyPath;
use crate::operators::Operator;
use crate::template::{is_template, Compiled, Templates};

/// A problem in a rule file: what is wrong and, when known, where.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SourceProblem {
    pub line: Option<usize>,
    pub column: Option<usize>,
    pub message: String,
}

impl std::fmt::Display for SourceProblem {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match (self.line, self.column) {
            (Some(l), Some(c)) => write!(f, "line {l}, column {c}: {}", self.message),
            (Some(l), None) => write!(f, "line {l}: {}", self.message),
            _ => f.write_str(&self.message),
        }
    }
}

/// `standard` rules match on their own; `backstop` rules only when no standard rule matched.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RuleType {
    Standard,
    Backstop,
}

/// `search`'s condition: how items and child criteria combine.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SearchCondition {
    /// some item matches every child criterion
    Any,
    /// every item matches every child criterion
    All,
    /// some item matches some child criterion
    Any2Any,
    /// every item matches some child criterion
    All2Any,
}

impl SearchCondition {
    fn parse(s: &str) -> Option<SearchCondition> {
        match s {
            "any" => Some(SearchCondition::Any),
            "all" => Some(SearchCondition::All),
            "any2any" => Some(SearchCondition::Any2Any),
            "all2any" => Some(SearchCondition::All2Any),
            _ => None,
        }
    }
}

/// A criterion's pattern as written: a literal, or a template rendered per instance.
#[derive(Debug, Clone)]
pub enum PatternSource {
    Literal {
        value: Value,
        regex: Option<Regex>,
    },
    /// `compiled` is set when the rule joins a [`crate::RuleSet`], which owns the template.
    Template {
        source: String,
        compiled: Option<Compiled>,
    },
}

/// One criterion: `key: {type, pattern[, condition]}`.
#[derive(Debug, Clone)]
pub struct Criterion {
    /// The key as written, `#suffix` included.
    pub key: String,
    pub path: KeyPath,
    /// The operator name as written (for reports).
    pub operator_name: String,
    pub operator: Operator,
    pub pattern: PatternSource,
    /// For `search`: the condition and the child criteria over `item.*`.
    pub search: Option<(SearchCondition, Vec<Criterion>)>,
}

/// squall's rate limit for a rule: at most `max` enforcements per `window` per group.
#[derive(Debug, Clone)]
pub struct Throttle {
    pub window: Duration,
    pub max: u32,
    /// Criteria-style keys whose values form the group (`trigger.labels.app`).
    pub group_by: Vec<(String, KeyPath)>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Tag {
    pub name: String,
    pub value: Option<String>,
}

/// A loaded rule.
#[derive(Debug, Clone)]
pub struct Rule {
    pub name: String,
    pub pack: String,
    pub description: String,
    pub enabled: bool,
    /// The trigger type reference as written; empty for a correlation rule, whose parts name
    /// theirs (see [`Rule::is_correlation`] and [`Rule::trigger_types`]).
    pub trigger_type: String,
    pub trigger_parameters: Map<String, Value>,
    pub criteria: Vec<Criterion>,
    pub action_ref: String,
    pub action_parameters: Map<String, Value>,
    /// squall: with remote workers, the named queue the action goes to (`action.queue`, a
    /// template over the instance like the parameters), e.g. the host that sensed it.
    pub action_queue: Option<String>,
    pub rule_type: RuleType,
    pub tags: Vec<Tag>,
    pub throttle: Option<Throttle>,
    /// squall: the rule matches several instances over time (`correlate:`); it has no
    /// `trigger` and no top-level `criteria` then.
    pub correlate: Option<Correlation>,
}

impl Rule {
    /// `pack.name`.
    pub fn reference(&self) -> String {
        format!("{}.{}", self.pack, self.name)
    }

    /// Whether the rule correlates several instances (`correlate:`) rather than matching one.
    pub fn is_correlation(&self) -> bool {
        self.correlate.is_some()
    }

    /// The trigger types the rule listens to, as written: its trigger, or its parts'.
    pub fn trigger_types(&self) -> Vec<&str> {
        match &self.correlate {
            Some(c) => {
                let mut types: Vec<&str> = c
                    .all_parts()
                    .map(|(_, p)| p.trigger_type.as_str())
                    .collect();
                types.sort_unstable();
                types.dedup();
                types
            }
            None => vec![self.trigger_type.as_str()],
        }
    }

    /// Parses a rule file (YAML or JSON). Every problem found is returned, each with its line
    /// when it can be located.
    pub fn from_yaml(text: &str) -> Result<Rule, Vec<SourceProblem>> {
        let raw: RawRule = serde_yaml::from_str(text).map_err(|e| vec![yaml_problem(&e)])?;
        let mut problems = Vec::new();
        let locate = |needle: &str| line_of(text, needle);

        let top = |key: &str| top_level_line(text, key);
        let (trigger_type, trigger_parameters, correlate) = match (raw.trigger, raw.correlate) {
            (Some(_), Some(_)) => {
                problems.push(problem(
                    top("trigger"),
                    "give either trigger or correlate, not both: a correlation rule names its triggers in its parts",
                ));
                (String::new(), None, None)
            }
            (None, Some(c)) => {
                if raw.criteria.is_some() {
                    problems.push(problem(
                        top("criteria"),
                        "a correlation rule's criteria belong to its parts (correlate.all[i].criteria ...)",
                    ));
                }
                if raw.rule_type.as_ref().is_some_and(|t| t.ref_ == "backstop") {
                    problems.push(problem(
                        top("type"),
                        "a correlation rule cannot be a backstop rule",
                    ));
                }
                let (raw_block, mut unknown) = read_block(c, text);
                let parsed = raw_block.map(|c| parse_correlation(c, text));
                problems.append(&mut unknown);
                match parsed {
                    Ok(Ok(c)) if problems.is_empty() => (String::new(), None, Some(c)),
                    Ok(Ok(_)) => (String::new(), None, None),
                    Ok(Err(mut e)) | Err(mut e) => {
                        problems.append(&mut e);
                        (String::new(), None, None)
                    }
                }
            }
            (Some(trigger), None) => match trigger.type_.or(trigger.ref_) {
                Some(t) if !t.trim().is_empty() => (t, trigger.parameters, None),
                _ => {
                    problems.push(problem(locate("trigger"), "trigger.type is required"));
                    (String::new(), None, None)
                }
            },
            (None, None) => {
                problems.push(problem(
                    Some(1),
                    "missing field `trigger` (or a correlate block)",
                ));
                (String::new(), None, None)
            }
        };
        if raw.name.trim().is_empty() {
            problems.push(problem(locate("name"), "name must not be empty"));
        }
        if !raw.action.ref_.contains('.') {
            problems.push(problem(
                locate("ref"),
                format!(
                    "action.ref {:?} must be a reference 'pack.action'",
                    raw.action.ref_
                ),
            ));
        }
        let rule_type = match raw.rule_type.as_ref().map(|t| t.ref_.as_str()) {
            None | Some("standard") => RuleType::Standard,
            Some("backstop") => RuleType::Backstop,
            Some(other) => {
                problems.push(problem(
                    locate("type"),
                    format!("type.ref {other:?} is not a rule type (standard, backstop)"),
                ));
                RuleType::Standard
            }
        };

        let mut criteria = Vec::new();
        if let Some(map) = raw.criteria {
            for (k, v) in map {
                match parse_criterion(&k, v, text, "trigger") {
                    Ok(c) => criteria.push(c),
                    Err(mut errs) => problems.append(&mut errs),
                }
            }
        }

        let action_parameters = match raw.action.parameters {
            None => Map::new(),
            Some(p) => match yaml_to_json_map(p) {
                Ok(m) => m,
                Err(e) => {
                    problems.push(problem(locate("parameters"), e));
                    Map::new()
                }
            },
        };
        check_templates(&action_parameters, "action.parameters", text, &mut problems);

        let trigger_parameters = match trigger_parameters {
            None => Map::new(),
            Some(p) => yaml_to_json_map(p).unwrap_or_else(|e| {
                problems.push(problem(locate("parameters"), e));
                Map::new()
            }),
        };

        let throttle = raw.throttle.and_then(|t| match parse_throttle(t, text) {
            Ok(t) => Some(t),
            Err(mut e) => {
                problems.append(&mut e);
                None
            }
        });

        let tags = raw
            .tags
            .unwrap_or_default()
            .into_iter()
            .map(|t| match t {
                RawTag::Plain(name) => Tag { name, value: None },
                RawTag::Pair { name, value } => Tag { name, value },
            })
            .collect();

        if !problems.is_empty() {
            return Err(problems);
        }
        Ok(Rule {
            name: raw.name,
            pack: raw.pack.unwrap_or_else(|| "default".to_string()),
            description: raw.description.unwrap_or_default(),
            enabled: raw.enabled,
            trigger_type,
            trigger_parameters,
            criteria,
            action_ref: raw.action.ref_,
            action_parameters,
            action_queue: raw.action.queue.filter(|q| !q.trim().is_empty()),
            rule_type,
            tags,
            throttle,
            correlate,
        })
    }
}

/// The file as st2 writes it. Fields st2 exports but squall does not use (`id`, `uid`, `ref`,
/// `context`, `metadata_file`) are accepted so exported rules load unchanged.
#[derive(Deserialize)]
#[serde(
    deny_unknown_fields,
    expecting = "a rule: a mapping with name, trigger (or correlate), action and optional criteria"
)]
struct RawRule {
    name: String,
    #[serde(default)]
    pack: Option<String>,
    #[serde(default)]
    description: Option<String>,
    /// st2's default: a rule without `enabled: true` is disabled.
    #[serde(default)]
    enabled: bool,
    #[serde(default)]
    trigger: Option<RawTrigger>,
    /// squall: a rule over several instances, instead of `trigger`.
    #[serde(default)]
    /// Read as YAML first, so every unknown key of the block is reported, not only the first.
    correlate: Option<serde_yaml::Value>,
    #[serde(default)]
    criteria: Option<serde_yaml::Mapping>,
    action: RawAction,
    #[serde(default, rename = "type")]
    rule_type: Option<RawRuleType>,
    #[serde(default)]
    tags: Option<Vec<RawTag>>,
    #[serde(default)]
    throttle: Option<RawThrottle>,
    #[serde(default, rename = "id")]
    _id: Option<serde_yaml::Value>,
    #[serde(default, rename = "uid")]
    _uid: Option<serde_yaml::Value>,
    #[serde(default, rename = "ref")]
    _ref: Option<serde_yaml::Value>,
    #[serde(default, rename = "context")]
    _context: Option<serde_yaml::Value>,
    #[serde(default, rename = "metadata_file")]
    _metadata_file: Option<serde_yaml::Value>,
}

#[derive(Deserialize)]
#[serde(
    deny_unknown_fields,
    expecting = "a trigger: a mapping with type and optional parameters"
)]
struct RawTrigger {
    #[serde(default, rename = "type")]
    type_: Option<String>,
    #[serde(default, rename = "ref")]
    ref_: Option<String>,
    #[serde(default)]
    parameters: Option<serde_yaml::Value>,
    #[serde(default, rename = "description")]
    _description: Option<serde_yaml::Value>,
}

#[derive(Deserialize)]
#[serde(
    deny_unknown_fields,
    expecting = "an action: a mapping with ref and optional parameters"
)]
struct RawAction {
    #[serde(rename = "ref")]
    ref_: String,
    #[serde(default)]
    parameters: Option<serde_yaml::Value>,
    /// squall: the work queue the execution goes to with remote workers (templatable).
    #[serde(default)]
    queue: Option<String>,
    #[serde(default, rename = "description")]
    _description: Option<serde_yaml::Value>,
}

#[derive(Deserialize)]
#[serde(
    deny_unknown_fields,
    expecting = "a rule type: a mapping with ref (standard or backstop)"
)]
struct RawRuleType {
    #[serde(rename = "ref")]
    ref_: String,
    #[serde(default, rename = "parameters")]
    _parameters: Option<serde_yaml::Value>,
}

#[derive(Deserialize)]
#[serde(untagged)]
enum RawTag {
    Plain(String),
    Pair { name: String, value: Option<String> },
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawThrottle {
    /// Ansible rulebooks' name: at most once within this window.
    #[serde(default)]
    once_within: Option<serde_yaml::Value>,
    #[serde(default)]
    window: Option<serde_yaml::Value>,
    #[serde(default)]
    max: Option<u32>,
    #[serde(default, alias = "group_by_attributes")]
    group_by: Vec<String>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawCriterion {
    #[serde(rename = "type")]
    type_: Option<String>,
    #[serde(default)]
    pattern: Option<serde_yaml::Value>,
    #[serde(default)]
    condition: Option<String>,
}

fn problem(line: Option<usize>, message: impl Into<String>) -> SourceProblem {
    SourceProblem {
        line,
        column: None,
        message: message.into(),
    }
}

/// A serde_yaml error with its location, if it has one.
pub fn yaml_problem(e: &serde_yaml::Error) -> SourceProblem {
    let loc = e.location();
    let mut message = e.to_string();
    // serde_yaml appends " at line L column C"; the location is reported on its own.
    if let Some(idx) = message.find(" at line ") {
        message.truncate(idx);
    }
    SourceProblem {
        line: loc.as_ref().map(|l| l.line()),
        column: loc.as_ref().map(|l| l.column()),
        message,
    }
}

/// The line (1-based) of `key` as a key of the file's top-level mapping (not indented).
fn top_level_line(text: &str, key: &str) -> Option<usize> {
    text.lines()
        .position(|l| {
            [
                format!("{key}:"),
                format!("'{key}':"),
                format!("\"{key}\":"),
            ]
            .iter()
            .any(|c| l.starts_with(c.as_str()))
        })
        .map(|i| i + 1)
        .or_else(|| line_of(text, key))
}

/// The first line (1-based) on which `needle` appears as a mapping key.
pub fn line_of(text: &str, needle: &str) -> Option<usize> {
    let candidates = [
        format!("{needle}:"),
        format!("'{needle}':"),
        format!("\"{needle}\":"),
        format!("\"{needle}\" :"),
    ];
    text.lines()
        .position(|l| {
            let t = l.trim_start().trim_start_matches("- ");
            candidates.iter().any(|c| t.starts_with(c.as_str()))
        })
        .map(|i| i + 1)
}

fn yaml_to_json(v: serde_yaml::Value) -> Result<Value, String> {
    serde_json::to_value(v).map_err(|e| format!("not representable as JSON: {e}"))
}

fn yaml_to_json_map(v: serde_yaml::Value) -> Result<Map<String, Value>, String> {
    match yaml_to_json(v)? {
        Value::Object(m) => Ok(m),
        Value::Null => Ok(Map::new()),
        other => Err(format!("parameters must be a mapping, not {other}")),
    }
}

pub(crate) fn parse_criterion(
    key: &serde_yaml::Value,
    value: serde_yaml::Value,
    text: &str,
    root: &str,
) -> Result<Criterion, Vec<SourceProblem>> {
    let key = match key {
        serde_yaml::Value::String(s) => s.clone(),
        other => {
            return Err(vec![problem(
                None,
                format!("criteria key {other:?} must be a string such as 'trigger.field'"),
            )])
        }
    };
    let line = line_of(text, &key);
    let err = |msg: String| vec![problem(line, format!("criterion '{key}': {msg}"))];
    let raw: RawCriterion = serde_yaml::from_value(value).map_err(|e| err(e.to_string()))?;
    let path = KeyPath::parse(&key).map_err(|e| err(format!("bad key: {e}")))?;
    if path.root != root {
        return Err(err(format!(
            "the key must start with '{root}.' (the payload is named '{root}')"
        )));
    }
    let operator_name = raw
        .type_
        .ok_or_else(|| err("'type' (the operator) is required".to_string()))?;
    let operator = Operator::from_name(&operator_name).ok_or_else(|| {
        err(format!(
            "unknown operator {operator_name:?}; operators are: {}",
            Operator::all_names().join(", ")
        ))
    })?;

    if operator == Operator::Search {
        let condition_name = raw.condition.unwrap_or_default();
        let condition = SearchCondition::parse(&condition_name).ok_or_else(|| {
            err(format!(
                "search needs 'condition' any, all, any2any or all2any, not {condition_name:?}"
            ))
        })?;
        let children = match raw.pattern {
            Some(serde_yaml::Value::Mapping(m)) => m,
            _ => {
                return Err(err(
                    "search needs 'pattern': a map of item.* criteria".to_string()
                ))
            }
        };
        let mut parsed = Vec::new();
        let mut problems = Vec::new();
        for (k, v) in children {
            match parse_criterion(&k, v, text, "item") {
                Ok(c) => parsed.push(c),
                Err(mut e) => problems.append(&mut e),
            }
        }
        if !problems.is_empty() {
            return Err(problems);
        }
        return Ok(Criterion {
            key,
            path,
            operator_name,
            operator,
            pattern: PatternSource::Literal {
                value: Value::Null,
                regex: None,
            },
            search: Some((condition, parsed)),
        });
    }
    if raw.condition.is_some() {
        return Err(err(
            "'condition' only applies to the search operator".to_string()
        ));
    }

    let value = match raw.pattern {
        None => Value::Null,
        Some(p) => yaml_to_json(p).map_err(err)?,
    };
    let pattern = match value {
        Value::String(s) if is_template(&s) => {
            Templates::new()
                .compile_pattern(&s)
                .map_err(|e| err(format!("pattern template: {e}")))?;
            PatternSource::Template {
                source: s,
                compiled: None,
            }
        }
        value => {
            let regex = match (&value, operator.is_regex()) {
                (Value::String(s), true) => Some(operator.compile(s).map_err(err)?),
                _ => None,
            };
            PatternSource::Literal { value, regex }
        }
    };
    Ok(Criterion {
        key,
        path,
        operator_name,
        operator,
        pattern,
        search: None,
    })
}

fn check_templates(
    map: &Map<String, Value>,
    at: &str,
    text: &str,
    problems: &mut Vec<SourceProblem>,
) {
    for (k, v) in map {
        check_template_value(v, &format!("{at}.{k}"), k, text, problems);
    }
}

fn check_template_value(
    v: &Value,
    at: &str,
    key: &str,
    text: &str,
    problems: &mut Vec<SourceProblem>,
) {
    match v {
        Value::String(s) if is_template(s) => {
            if let Err(e) = Templates::new().compile_value(s) {
                problems.push(problem(line_of(text, key), format!("{at}: template: {e}")));
            }
        }
        Value::Array(items) => {
            for (i, item) in items.iter().enumerate() {
                check_template_value(item, &format!("{at}[{i}]"), key, text, problems);
            }
        }
        Value::Object(m) => {
            for (k, item) in m {
                check_template_value(item, &format!("{at}.{k}"), k, text, problems);
            }
        }
        _ => {}
    }
}

fn parse_throttle(raw: RawThrottle, text: &str) -> Result<Throttle, Vec<SourceProblem>> {
    let line = line_of(text, "throttle");
    let err = |m: String| vec![problem(line, format!("throttle: {m}"))];
    let (window, max) = match (raw.once_within, raw.window) {
        (Some(w), None) => {
            if raw.max.is_some_and(|m| m != 1) {
                return Err(err(
                    "once_within means max 1; use window and max instead".into()
                ));
            }
            (w, 1)
        }
        (None, Some(w)) => (w, raw.max.unwrap_or(1)),
        (Some(_), Some(_)) => {
            return Err(err("give either once_within or window, not both".into()))
        }
        (None, None) => return Err(err("needs once_within (or window and max)".into())),
    };
    if max == 0 {
        return Err(err("max must be at least 1".into()));
    }
    let window = parse_duration(&window).map_err(err)?;
    let mut group_by = Vec::new();
    for key in raw.group_by {
        let path = KeyPath::parse(&key).map_err(|e| err(format!("group_by key '{key}': {e}")))?;
        if path.root != "trigger" {
            return Err(err(format!(
                "group_by key '{key}' must start with 'trigger.'"
            )));
        }
        group_by.push((key, path));
    }
    Ok(Throttle {
        window,
        max,
        group_by,
    })
}

/// A duration as operators write it: `300`, `"300"`, `"30s"`, `"5m"`, `"2h"`, `"1d"`,
/// `"5 minutes"`, `"1 hour"`.
pub fn parse_duration(v: &serde_yaml::Value) -> Result<Duration, String> {
    if let Some(n) = v.as_u64() {
        return Ok(Duration::from_secs(n));
    }
    let s = v
        .as_str()
        .ok_or_else(|| format!("{v:?} is not a duration such as 300, '30s', '5m' or '5 minutes'"))?
        .trim();
    let split = s.find(|c: char| !c.is_ascii_digit()).unwrap_or(s.len());
    let (num, unit) = s.split_at(split);
    let n: u64 = num
        .parse()
        .map_err(|_| format!("{s:?} is not a duration such as 300, '30s', '5m' or '5 minutes'"))?;
    let secs = match unit.trim() {
        "" | "s" | "sec" | "secs" | "second" | "seconds" => 1,
        "m" | "min" | "mins" | "minute" | "minutes" => 60,
        "h" | "hour" | "hours" => 3600,
        "d" | "day" | "days" => 86400,
        other => return Err(format!("unknown time unit {other:?} in {s:?}")),
    };
    Ok(Duration::from_secs(n * secs))
}

#[cfg(test)]
mod tests {
    use super::*;

    const GOOD: &str = r#"
name: restart_on_oom
pack: docker
description: Restart containers of labelled apps that die of OOM.
enabled: true
trigger:
  type: docker.container_event
criteria:
  trigger.action:            {type: equals, pattern: die}
  trigger.attributes.exitCode: {type: eq, pattern: "137"}
  trigger.labels['com.example.app']: {type: exists}
action:
  ref: docker.restart_container
  parameters:
    container: "{{ trigger.id }}"
throttle:
  window: 10m
  max: 3
  group_by: [trigger.id]
"#;

    #[test]
    fn loads_a_st2_rule() {
        let r = Rule::from_yaml(GOOD).unwrap();
        assert_eq!(r.reference(), "docker.restart_on_oom");
        assert_eq!(r.criteria.len(), 3);
        assert_eq!(r.criteria[1].operator, Operator::Equals);
        let t = r.throttle.unwrap();
        assert_eq!((t.window.as_secs(), t.max), (600, 3));
    }

    #[test]
    fn unknown_field_names_field_and_line() {
        let text =
            "name: x\nenabled: true\ntrigger: {type: a.b}\naction: {ref: core.noop}\ncritera: {}\n";
        let errs = Rule::from_yaml(text).unwrap_err();
        assert_eq!(errs.len(), 1);
        assert!(errs[0].message.contains("critera"), "{}", errs[0]);
        assert_eq!(errs[0].line, Some(5));
    }

    #[test]
    fn reports_every_problem() {
        let text = "name: x\nenabled: true\ntrigger: {type: a.b}\ncriteria:\n  trigger.a: {type: equalz, pattern: 1}\n  trigger.b: {type: regex, pattern: '('}\n  trigger.c: {pattern: 1}\naction:\n  ref: core.noop\n  parameters:\n    p: '{{ trigger.a '\n";
        let errs = Rule::from_yaml(text).unwrap_err();
        assert_eq!(errs.len(), 4, "{errs:?}");
        assert!(errs[0].message.contains("equalz") && errs[0].line == Some(5));
        assert!(errs[1].message.contains("regular expression") && errs[1].line == Some(6));
        assert!(errs[2].message.contains("'type'") && errs[2].line == Some(7));
        assert!(errs[3].message.contains("action.parameters.p") && errs[3].line == Some(11));
    }

    #[test]
    fn durations() {
        for (s, secs) in [
            ("300", 300),
            ("30s", 30),
            ("5m", 300),
            ("5 minutes", 300),
            ("2h", 7200),
            ("1 day", 86400),
        ] {
            let v = serde_yaml::Value::String(s.to_string());
            assert_eq!(parse_duration(&v).unwrap().as_secs(), secs);
        }
        assert!(parse_duration(&serde_yaml::Value::String("5 fortnights".into())).is_err());
    }
}
