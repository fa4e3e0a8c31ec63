//! Matching trigger instances against a rule set, st2's way, and rendering what to run.
//!
//! Rules are indexed by trigger type, and within a type by the literal of one `equals`
//! criterion when they have one, so the cost of matching an instance grows with the rules that
//! could match it, not with the rule set. The parts of correlation rules are indexed the same
//! way, beside the rules, so an instance is checked only against the parts that could take it
//! and a load without correlation rules pays nothing for them. Pure: no I/O, no clock (callers
//! pass "now").

use std::collections::{HashMap, VecDeque};
use std::sync::Arc;

use chrono::{DateTime, Utc};
use serde::Serialize;
use serde_json::{Map, Value};

use crate::correlate::{MatchedEvent, PartSet};
use crate::lookup::KeyPath;
use crate::model::{Criterion, PatternSource, Rule, RuleType, SearchCondition, Throttle};
use crate::operators::{py_type, Operator};
use crate::template::{context, Compiled, Context, KeyValueLookup, Templates};

/// st2's trigger type names that squall knows under a shorter one.
const TRIGGER_ALIASES: &[(&str, &str)] = &[
    ("core.st2.webhook", "core.webhook"),
    ("core.st2.IntervalTimer", "core.interval_timer"),
    ("core.st2.CronTimer", "core.cron_timer"),
    ("core.st2.DateTimer", "core.date_timer"),
    ("core.st2.generic.actiontrigger", "core.action_finished"),
];

/// The canonical name of a trigger type (st2's names map to squall's).
pub fn canonical_trigger_ref(r: &str) -> &str {
    TRIGGER_ALIASES
        .iter()
        .find(|(st2, _)| *st2 == r)
        .map(|(_, ours)| *ours)
        .unwrap_or(r)
}

/// What the matcher needs of a trigger instance.
#[derive(Debug, Clone, Copy)]
pub struct TriggerInstanceView<'a> {
    pub trigger: &'a str,
    pub payload: &'a Value,
    /// The parameters of the trigger that fired (a webhook's `url`, a timer's settings). `None`
    /// means "not known": a rule's trigger parameters are then not checked.
    pub trigger_parameters: Option<&'a Value>,
}

/// What evaluation needs from outside: the time and the key-value store.
#[derive(Clone)]
pub struct EvalEnv {
    pub now: DateTime<Utc>,
    pub kv: Arc<dyn KeyValueLookup>,
}

/// Index of a rule in its [`RuleSet`].
pub type RuleId = usize;

/// Why a criterion did not match: st2-rule-tester's `key, pattern, type, payload` and, when the
/// operator could not compare at all, the error.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct CriterionFailure {
    pub key: String,
    #[serde(rename = "type")]
    pub operator: String,
    pub pattern: Value,
    pub payload_value: Value,
    pub error: Option<String>,
}

impl std::fmt::Display for CriterionFailure {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "  key: {}\n  pattern: {}\n  type: {}\n  payload: {}",
            self.key, self.pattern, self.operator, self.payload_value
        )?;
        if let Some(e) = &self.error {
            write!(f, "\n  error: {e}")?;
        }
        Ok(())
    }
}

/// Why a rule did not match an instance.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(tag = "reason", rename_all = "snake_case")]
pub enum NoMatch {
    Disabled,
    WrongTrigger {
        expected: String,
        got: String,
    },
    TriggerParameters {
        expected: Value,
    },
    EmptyPayload,
    BackstopSkipped,
    /// A correlation rule matches several instances over time, never one alone.
    Correlation,
    Criterion(Box<CriterionFailure>),
}

impl std::fmt::Display for NoMatch {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            NoMatch::Disabled => f.write_str("the rule is disabled"),
            NoMatch::WrongTrigger { expected, got } => {
                write!(
                    f,
                    "the rule is for trigger {expected}, the instance is of {got}"
                )
            }
            NoMatch::TriggerParameters { expected } => {
                write!(f, "the rule is for trigger parameters {expected}")
            }
            NoMatch::EmptyPayload => f.write_str("the rule has criteria and the payload is empty"),
            NoMatch::BackstopSkipped => {
                f.write_str("a standard rule matched, so backstop rules do not")
            }
            NoMatch::Correlation => f.write_str(
                "the rule correlates several instances (correlate:); one instance alone does not enforce it",
            ),
            NoMatch::Criterion(c) => write!(f, "criterion failed:\n{c}"),
        }
    }
}

/// The outcome of matching one instance against the rule set.
#[derive(Debug, Default)]
pub struct Evaluation {
    /// Rules that matched, in rule-set order (standard first; backstop only when none did).
    pub matched: Vec<RuleId>,
    /// Rules whose criteria could not be evaluated (a comparison that raises in st2, a template
    /// that fails to render): they do not match, and this says why.
    pub errors: Vec<(RuleId, CriterionFailure)>,
    /// How many rules (and correlation parts) were checked in full (after the index).
    pub checked: usize,
    /// Correlation rules with parts this instance matched, in rule-set order, and which:
    /// what to hand to each rule's [`crate::CorrelationState::feed`]. A part whose criteria
    /// could not be evaluated is not matched and is in `errors`.
    pub correlated: Vec<(RuleId, PartSet)>,
}

/// What a matched rule asks for.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct ActionRequest {
    pub action: String,
    pub parameters: Map<String, Value>,
    /// The named work queue, when the rule gives one and it renders to a non-empty name.
    pub queue: Option<String>,
}

/// A key for `equals` literals that respects Python equality: `1`, `1.0` and `true` are one.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
enum EqKey {
    Str(String),
    Num(u64),
}

fn eq_key(v: &Value) -> Option<EqKey> {
    match v {
        Value::String(s) => Some(EqKey::Str(s.clone())),
        Value::Bool(b) => Some(EqKey::Num(if *b { 1f64 } else { 0f64 }.to_bits())),
        Value::Number(n) => n.as_f64().map(|f| EqKey::Num((f + 0.0).to_bits())),
        _ => None,
    }
}

#[derive(Default)]
struct Bucket {
    /// Rules indexed by one equals criterion: key path -> literal -> rules.
    by_literal: Vec<(KeyPath, HashMap<EqKey, Vec<RuleId>>)>,
    /// Rules with no indexable criterion: always checked.
    rest: Vec<RuleId>,
}

impl Bucket {
    fn is_empty(&self) -> bool {
        self.rest.is_empty() && self.by_literal.is_empty()
    }

    /// Files `id` (a rule, or a correlation part) under one of its `equals` criteria.
    fn add(&mut self, id: RuleId, criteria: &[Criterion]) {
        let indexable = criteria
            .iter()
            .find_map(|c| match (&c.operator, &c.pattern) {
                (Operator::Equals, PatternSource::Literal { value, .. })
                    if !c.path.has_wildcard() =>
                {
                    eq_key(value).map(|k| (c.path.clone(), k))
                }
                _ => None,
            });
        match indexable {
            Some((path, key)) => {
                let slot = match self.by_literal.iter().position(|(p, _)| *p == path) {
                    Some(i) => i,
                    None => {
                        self.by_literal.push((path, HashMap::new()));
                        self.by_literal.len() - 1
                    }
                };
                self.by_literal[slot].1.entry(key).or_default().push(id);
            }
            None => self.rest.push(id),
        }
    }

    fn candidates(&self, payload: &Value, out: &mut Vec<RuleId>) {
        out.extend_from_slice(&self.rest);
        for (path, map) in &self.by_literal {
            let found = lookup_root(path, "trigger", payload).and_then(eq_key);
            if let Some(ids) = found.and_then(|k| map.get(&k)) {
                out.extend_from_slice(ids);
            }
        }
    }
}

#[derive(Default)]
struct TriggerIndex {
    standard: Bucket,
    backstop: Bucket,
    /// Correlation parts of this trigger type, by their index in [`RuleSet::parts`].
    parts: Bucket,
    /// The correlation rules with a part of this trigger type, in order.
    correlation_rules: Vec<RuleId>,
}

/// Compiled action parameter templates of one rule.
struct RuleTemplates {
    parameters: Vec<(String, CompiledValue)>,
    queue: Option<CompiledValue>,
}

/// An action parameter value with its templates compiled.
enum CompiledValue {
    Plain(Value),
    Template(Compiled),
    Array(Vec<CompiledValue>),
    Object(Vec<(String, CompiledValue)>),
}

/// A set of rules ready to match trigger instances.
pub struct RuleSet {
    rules: Vec<Rule>,
    compiled: Vec<RuleTemplates>,
    templates: Templates,
    index: HashMap<String, TriggerIndex>,
    /// Every enabled correlation rule's parts: (rule, part number).
    parts: Vec<(RuleId, usize)>,
}

impl RuleSet {
    /// Builds the set and its index. Errors name the rule and what failed to compile.
    pub fn new(rules: Vec<Rule>) -> Result<RuleSet, Vec<(String, String)>> {
        let (set, problems) = RuleSet::build(rules);
        if problems.is_empty() {
            Ok(set)
        } else {
            Err(problems)
        }
    }

    /// Builds the set from the rules that compile, and names each rule left out and why.
    pub fn build(given: Vec<Rule>) -> (RuleSet, Vec<(String, String)>) {
        let mut templates = Templates::new();
        let mut rules = Vec::with_capacity(given.len());
        let mut compiled = Vec::with_capacity(given.len());
        let mut problems = Vec::new();
        for mut rule in given {
            let mut errs = Vec::new();
            compile_patterns(&mut rule.criteria, &mut templates, &mut errs);
            if let Some(c) = &mut rule.correlate {
                for part in c.parts.iter_mut().chain(c.none.iter_mut()) {
                    compile_patterns(&mut part.criteria, &mut templates, &mut errs);
                }
            }
            let mut parameters = Vec::new();
            for (k, v) in &rule.action_parameters {
                match compile_value(v, &mut templates) {
                    Ok(c) => parameters.push((k.clone(), c)),
                    Err(e) => errs.push(format!("action.parameters.{k}: {e}")),
                }
            }
            let queue = match rule.action_queue.as_deref() {
                Some(q) => match compile_value(&Value::String(q.to_string()), &mut templates) {
                    Ok(c) => Some(c),
                    Err(e) => {
                        errs.push(format!("action.queue: {e}"));
                        None
                    }
                },
                None => None,
            };
            if errs.is_empty() {
                compiled.push(RuleTemplates { parameters, queue });
                rules.push(rule);
            } else {
                for e in errs {
                    problems.push((rule.reference(), e));
                }
            }
        }
        let mut index: HashMap<String, TriggerIndex> = HashMap::new();
        let mut parts = Vec::new();
        for (id, rule) in rules.iter().enumerate() {
            if !rule.enabled {
                continue;
            }
            if let Some(c) = &rule.correlate {
                for (n, part) in c.all_parts() {
                    let entry = index
                        .entry(canonical_trigger_ref(&part.trigger_type).to_string())
                        .or_default();
                    entry.parts.add(parts.len(), &part.criteria);
                    if entry.correlation_rules.last() != Some(&id) {
                        entry.correlation_rules.push(id);
                    }
                    parts.push((id, n));
                }
                continue;
            }
            let entry = index
                .entry(canonical_trigger_ref(&rule.trigger_type).to_string())
                .or_default();
            match rule.rule_type {
                RuleType::Standard => entry.standard.add(id, &rule.criteria),
                RuleType::Backstop => entry.backstop.add(id, &rule.criteria),
            }
        }
        (
            RuleSet {
                rules,
                compiled,
                templates,
                index,
                parts,
            },
            problems,
        )
    }

    pub fn rules(&self) -> &[Rule] {
        &self.rules
    }

    pub fn rule(&self, id: RuleId) -> &Rule {
        &self.rules[id]
    }

    pub fn find(&self, reference: &str) -> Option<RuleId> {
        self.rules.iter().position(|r| r.reference() == reference)
    }

    /// Trigger types some enabled rule listens to (canonical names), correlation rules' parts
    /// included.
    pub fn trigger_types(&self) -> impl Iterator<Item = &str> {
        self.index.keys().map(String::as_str)
    }

    /// The enabled correlation rules, in order: those whose state the caller keeps and
    /// advances.
    pub fn correlation_rules(&self) -> impl Iterator<Item = RuleId> + '_ {
        self.rules
            .iter()
            .enumerate()
            .filter(|(_, r)| r.enabled && r.is_correlation())
            .map(|(id, _)| id)
    }

    /// The enabled correlation rules with a part of this trigger type (one map lookup).
    pub fn correlation_rules_for(&self, trigger: &str) -> &[RuleId] {
        self.index
            .get(canonical_trigger_ref(trigger))
            .map(|i| i.correlation_rules.as_slice())
            .unwrap_or(&[])
    }

    /// Matches an instance against every rule that could match it.
    pub fn evaluate(&self, inst: &TriggerInstanceView<'_>, env: &EvalEnv) -> Evaluation {
        let mut eval = Evaluation::default();
        let Some(idx) = self.index.get(canonical_trigger_ref(inst.trigger)) else {
            return eval;
        };
        let mut candidates = Vec::new();
        self.pass(&idx.standard, inst, env, &mut candidates, &mut eval);
        if eval.matched.is_empty() {
            candidates.clear();
            self.pass(&idx.backstop, inst, env, &mut candidates, &mut eval);
        }
        if !idx.parts.is_empty() {
            candidates.clear();
            self.parts_pass(&idx.parts, inst, env, &mut candidates, &mut eval);
        }
        eval
    }

    /// Checks the correlation parts that could take the instance. A part matching does not
    /// count as a rule matching: backstop rules still run when only parts matched.
    fn parts_pass(
        &self,
        bucket: &Bucket,
        inst: &TriggerInstanceView<'_>,
        env: &EvalEnv,
        candidates: &mut Vec<usize>,
        eval: &mut Evaluation,
    ) {
        bucket.candidates(inst.payload, candidates);
        // Parts are numbered rule by rule, so sorted parts come grouped by rule, in order.
        if candidates.len() > 1 {
            candidates.sort_unstable();
            candidates.dedup();
        }
        for &p in candidates.iter() {
            let Some(&(id, n)) = self.parts.get(p) else {
                continue;
            };
            eval.checked += 1;
            match self.check_part(id, n, inst, env) {
                Ok(()) => match eval.correlated.last_mut() {
                    Some((last, set)) if *last == id => set.insert(n),
                    _ => eval.correlated.push((id, [n].into_iter().collect())),
                },
                Err(Some(NoMatch::Criterion(f))) if f.error.is_some() => eval.errors.push((id, *f)),
                Err(_) => {}
            }
        }
    }

    /// Whether an instance matches part `n` of correlation rule `id`: its trigger type and its
    /// criteria, checked exactly as a rule's.
    pub fn check_part(
        &self,
        id: RuleId,
        n: usize,
        inst: &TriggerInstanceView<'_>,
        env: &EvalEnv,
    ) -> Result<(), Option<NoMatch>> {
        let rule = &self.rules[id];
        let Some(part) = rule.correlate.as_ref().and_then(|c| c.part(n)) else {
            return Err(None);
        };
        if canonical_trigger_ref(&part.trigger_type) != canonical_trigger_ref(inst.trigger) {
            return Err(Some(NoMatch::WrongTrigger {
                expected: part.trigger_type.clone(),
                got: inst.trigger.to_string(),
            }));
        }
        if !part.parameters.is_empty() {
            if let Some(given) = inst.trigger_parameters {
                let expected = Value::Object(part.parameters.clone());
                if *given != expected {
                    return Err(Some(NoMatch::TriggerParameters { expected }));
                }
            }
        }
        if part.criteria.is_empty() {
            return Ok(());
        }
        if is_empty_payload(inst.payload) {
            return Err(Some(NoMatch::EmptyPayload));
        }
        let templates = &self.compiled[id];
        for c in &part.criteria {
            self.check_criterion(c, "trigger", inst.payload, templates, env, false)
                .map_err(|f| f.map(NoMatch::Criterion))?;
        }
        Ok(())
    }

    fn pass(
        &self,
        bucket: &Bucket,
        inst: &TriggerInstanceView<'_>,
        env: &EvalEnv,
        candidates: &mut Vec<RuleId>,
        eval: &mut Evaluation,
    ) {
        bucket.candidates(inst.payload, candidates);
        if candidates.len() > 1 {
            candidates.sort_unstable();
            candidates.dedup();
        }
        for &id in candidates.iter() {
            eval.checked += 1;
            match self.check_criteria(id, inst, env, false) {
                Ok(()) => eval.matched.push(id),
                Err(Some(NoMatch::Criterion(f))) if f.error.is_some() => eval.errors.push((id, *f)),
                Err(_) => {}
            }
        }
    }

    /// Checks one rule against one instance, saying why it does not match (st2-rule-tester).
    /// `standard_matched` tells whether a standard rule matched, for backstop rules.
    pub fn check(
        &self,
        id: RuleId,
        inst: &TriggerInstanceView<'_>,
        env: &EvalEnv,
        standard_matched: bool,
    ) -> Result<(), NoMatch> {
        let rule = &self.rules[id];
        if !rule.enabled {
            return Err(NoMatch::Disabled);
        }
        if rule.is_correlation() {
            return Err(NoMatch::Correlation);
        }
        let (want, got) = (
            canonical_trigger_ref(&rule.trigger_type),
            canonical_trigger_ref(inst.trigger),
        );
        if want != got {
            return Err(NoMatch::WrongTrigger {
                expected: rule.trigger_type.clone(),
                got: inst.trigger.to_string(),
            });
        }
        if rule.rule_type == RuleType::Backstop && standard_matched {
            return Err(NoMatch::BackstopSkipped);
        }
        // With `detail` every failure carries its explanation.
        self.check_criteria(id, inst, env, true).map_err(|e| {
            e.unwrap_or(NoMatch::Criterion(Box::new(CriterionFailure {
                key: String::new(),
                operator: String::new(),
                pattern: Value::Null,
                payload_value: Value::Null,
                error: Some("no explanation recorded".to_string()),
            })))
        })
    }

    /// `Err(None)` is a plain mismatch whose explanation was not asked for (`detail` false):
    /// the hot path builds no report for the many rules that simply do not match.
    fn check_criteria(
        &self,
        id: RuleId,
        inst: &TriggerInstanceView<'_>,
        env: &EvalEnv,
        detail: bool,
    ) -> Result<(), Option<NoMatch>> {
        let rule = &self.rules[id];
        if !rule.trigger_parameters.is_empty() {
            if let Some(given) = inst.trigger_parameters {
                let expected = Value::Object(rule.trigger_parameters.clone());
                if *given != expected {
                    return Err(Some(NoMatch::TriggerParameters { expected }));
                }
            }
        }
        if rule.criteria.is_empty() {
            return Ok(());
        }
        if is_empty_payload(inst.payload) {
            return Err(Some(NoMatch::EmptyPayload));
        }
        let templates = &self.compiled[id];
        for c in &rule.criteria {
            self.check_criterion(c, "trigger", inst.payload, templates, env, detail)
                .map_err(|f| f.map(NoMatch::Criterion))?;
        }
        Ok(())
    }

    fn check_criterion(
        &self,
        c: &Criterion,
        root: &str,
        root_value: &Value,
        templates: &RuleTemplates,
        env: &EvalEnv,
        detail: bool,
    ) -> Result<(), Option<Box<CriterionFailure>>> {
        let value = lookup_root(&c.path, root, root_value);
        let fail = |pattern: Value, error: Option<String>| {
            Some(Box::new(CriterionFailure {
                key: c.key.clone(),
                operator: c.operator_name.clone(),
                pattern,
                payload_value: value.cloned().unwrap_or(Value::Null),
                error,
            }))
        };
        if let Some((condition, children)) = &c.search {
            return match self.search(value, *condition, children, templates, env) {
                Ok(true) => Ok(()),
                Ok(false) if !detail => Err(None),
                Ok(false) => Err(fail(
                    Value::String(format!("{condition:?}").to_lowercase()),
                    None,
                )),
                Err(e) => Err(fail(Value::Null, Some(e))),
            };
        }
        let rendered;
        let (pattern, regex) = match &c.pattern {
            PatternSource::Literal { value, regex } => (value, regex.as_ref()),
            PatternSource::Template { source, compiled } => {
                let compiled = compiled.as_ref().ok_or_else(|| {
                    fail(
                        Value::String(source.clone()),
                        Some("pattern was not compiled".into()),
                    )
                })?;
                let ctx = context(root, root_value, &env.kv);
                rendered = self.templates.render(compiled, &ctx).map_err(|e| {
                    fail(
                        Value::String(source.clone()),
                        Some(format!("pattern failed to render: {e}")),
                    )
                })?;
                (&rendered, None)
            }
        };
        match c.operator.apply(value, pattern, regex, env.now) {
            Ok(true) => Ok(()),
            Ok(false) if !detail => Err(None),
            Ok(false) => Err(fail(pattern.clone(), None)),
            Err(e) => Err(fail(pattern.clone(), Some(e))),
        }
    }

    fn search(
        &self,
        value: Option<&Value>,
        condition: SearchCondition,
        children: &[Criterion],
        templates: &RuleTemplates,
        env: &EvalEnv,
    ) -> Result<bool, String> {
        let items: Vec<&Value> = match value {
            Some(Value::Array(items)) => items.iter().collect(),
            // Python iterates a dict's keys.
            Some(Value::Object(_)) => {
                return Err("search iterates a list; the value is a dict".to_string())
            }
            other => return Err(format!("'{}' object is not iterable", py_type(other))),
        };
        let item_matches = |item: &Value, need_all: bool| {
            let mut results = children.iter().map(|child| {
                self.check_criterion(child, "item", item, templates, env, false)
                    .is_ok()
            });
            if need_all {
                results.all(|b| b)
            } else {
                results.any(|b| b)
            }
        };
        Ok(match condition {
            SearchCondition::Any => items.iter().any(|i| item_matches(i, true)),
            SearchCondition::All => items.iter().all(|i| item_matches(i, true)),
            SearchCondition::Any2Any => items.iter().any(|i| item_matches(i, false)),
            SearchCondition::All2Any => items.iter().all(|i| item_matches(i, false)),
        })
    }

    /// Renders the action a matched rule requests, parameters templated over the instance.
    /// `context`: where the instance was sensed (a sensor host's), which the action's queue
    /// sees as `trigger.context` (unless the payload has a `context` of its own).
    pub fn render_action(
        &self,
        id: RuleId,
        payload: &Value,
        context: Option<&Value>,
        env: &EvalEnv,
    ) -> Result<ActionRequest, String> {
        let ctx = Context::new("trigger", payload, &env.kv);
        self.render_in_scope(id, payload, &Scope::Single(&ctx), context, env)
    }

    /// Renders the action a correlation rule's fire requests: its templates see `events`
    /// (the matched instances' payloads, in arrival order), `trigger` (the last of them, or an
    /// empty mapping when none, as for absence) and `group` (the `group_by` values, in order).
    /// `context`: where the last instance was sensed, as for [`RuleSet::render_action`].
    pub fn render_correlated_action(
        &self,
        id: RuleId,
        events: &[MatchedEvent],
        group: &[Value],
        context: Option<&Value>,
        env: &EvalEnv,
    ) -> Result<ActionRequest, String> {
        let empty = Value::Object(Map::new());
        let trigger = events.last().map(|e| &e.payload).unwrap_or(&empty);
        let payloads: Vec<&Value> = events.iter().map(|e| &e.payload).collect();
        let mut extra = std::collections::BTreeMap::new();
        extra.insert("events", minijinja::Value::from_serialize(&payloads));
        extra.insert("group", minijinja::Value::from_serialize(group));
        let jinja = minijinja::value::merge_maps([
            minijinja::Value::from(extra),
            crate::template::context("trigger", trigger, &env.kv),
        ]);
        self.render_in_scope(
            id,
            trigger,
            &Scope::Correlated { trigger, jinja },
            context,
            env,
        )
    }

    fn render_in_scope(
        &self,
        id: RuleId,
        payload: &Value,
        scope: &Scope<'_>,
        context: Option<&Value>,
        env: &EvalEnv,
    ) -> Result<ActionRequest, String> {
        let rule = &self.rules[id];
        let mut parameters = Map::new();
        for (k, v) in &self.compiled[id].parameters {
            let rendered = self
                .render_value(v, scope)
                .map_err(|e| format!("action parameter '{k}': {e}"))?;
            parameters.insert(k.clone(), rendered);
        }
        let with_context = match (context, payload) {
            (Some(c), Value::Object(m)) if !m.contains_key("context") => {
                let mut m = m.clone();
                m.insert("context".into(), c.clone());
                Some(Value::Object(m))
            }
            _ => None,
        };
        let queue_ctx = with_context
            .as_ref()
            .map(|p| Context::new("trigger", p, &env.kv));
        let queue_scope = queue_ctx.as_ref().map(Scope::Single);
        let queue = match &self.compiled[id].queue {
            Some(q) => match self
                .render_value(q, queue_scope.as_ref().unwrap_or(scope))
                .map_err(|e| format!("action queue: {e}"))?
            {
                Value::String(s) if s.trim().is_empty() => None,
                Value::String(s) => Some(s.trim().to_string()),
                Value::Null => None,
                other => Some(other.to_string()),
            },
            None => None,
        };
        Ok(ActionRequest {
            action: rule.action_ref.clone(),
            parameters,
            queue,
        })
    }

    fn render_value(&self, v: &CompiledValue, ctx: &Scope<'_>) -> Result<Value, String> {
        Ok(match v {
            CompiledValue::Plain(v) => v.clone(),
            CompiledValue::Template(c) => match ctx {
                Scope::Single(ctx) => self.templates.render_in(c, ctx)?,
                Scope::Correlated { trigger, jinja } => {
                    // The plain-path shortcut `render_in` takes, over the last instance.
                    if let Compiled::NativePath { path, .. } = c {
                        if let Some(found) = read_path(path, trigger) {
                            return Ok(found.clone());
                        }
                    }
                    self.templates.render(c, jinja)?
                }
            },
            CompiledValue::Array(items) => Value::Array(
                items
                    .iter()
                    .map(|i| self.render_value(i, ctx))
                    .collect::<Result<_, _>>()?,
            ),
            CompiledValue::Object(fields) => {
                let mut m = Map::new();
                for (k, f) in fields {
                    m.insert(k.clone(), self.render_value(f, ctx)?);
                }
                Value::Object(m)
            }
        })
    }
}

/// What a rule's action templates see: one instance (through [`Context`], built for minijinja
/// only when needed), or a correlation's fire.
enum Scope<'a> {
    Single(&'a Context<'a>),
    Correlated {
        trigger: &'a Value,
        jinja: minijinja::Value,
    },
}

/// `trigger.a.b` read from the payload when every step is a mapping holding the next key.
fn read_path<'a>(path: &[String], trigger: &'a Value) -> Option<&'a Value> {
    let (first, keys) = path.split_first()?;
    if first != "trigger" {
        return None;
    }
    keys.iter()
        .try_fold(trigger, |v, key| v.as_object()?.get(key))
}

fn compile_patterns(criteria: &mut [Criterion], templates: &mut Templates, errs: &mut Vec<String>) {
    for c in criteria {
        if let PatternSource::Template { source, compiled } = &mut c.pattern {
            match templates.compile_pattern(source) {
                Ok(t) => *compiled = Some(t),
                Err(e) => errs.push(format!("criterion '{}': {e}", c.key)),
            }
        }
        if let Some((_, children)) = &mut c.search {
            compile_patterns(children, templates, errs);
        }
    }
}

fn compile_value(v: &Value, templates: &mut Templates) -> Result<CompiledValue, String> {
    Ok(match v {
        Value::String(s) if crate::template::is_template(s) => {
            CompiledValue::Template(templates.compile_value(s)?)
        }
        Value::Array(items) => CompiledValue::Array(
            items
                .iter()
                .map(|i| compile_value(i, templates))
                .collect::<Result<_, _>>()?,
        ),
        Value::Object(m) => CompiledValue::Object(
            m.iter()
                .map(|(k, v)| Ok((k.clone(), compile_value(v, templates)?)))
                .collect::<Result<_, String>>()?,
        ),
        other => CompiledValue::Plain(other.clone()),
    })
}

fn is_empty_payload(v: &Value) -> bool {
    match v {
        Value::Null => true,
        Value::Object(m) => m.is_empty(),
        Value::Array(a) => a.is_empty(),
        Value::String(s) => s.is_empty(),
        _ => false,
    }
}

/// Looks a key up when its root names `root` (`trigger` or `item`); another root finds nothing.
fn lookup_root<'a>(path: &KeyPath, root: &str, value: &'a Value) -> Option<&'a Value> {
    if path.root == root {
        path.lookup(value)
    } else {
        None
    }
}

/// Remembers recent enforcements of throttled rules. A group whose window has passed is
/// forgotten (checked every [`PRUNE_EVERY`] admissions), so the state stays as large as the
/// groups seen within their windows, however many groups come and go.
#[derive(Default)]
pub struct ThrottleState {
    seen: HashMap<(String, String), Group>,
    admitted: u64,
}

/// One rule's enforcements for one group, and the window they count in.
struct Group {
    window: chrono::Duration,
    times: VecDeque<DateTime<Utc>>,
}

/// How many admissions between two sweeps of groups whose window has passed.
const PRUNE_EVERY: u64 = 1024;

impl ThrottleState {
    /// The group an instance falls in: the JSON of its `group_by` values.
    pub fn group_key(throttle: &Throttle, payload: &Value) -> String {
        let values: Vec<Value> = throttle
            .group_by
            .iter()
            .map(|(_, p)| p.lookup(payload).cloned().unwrap_or(Value::Null))
            .collect();
        Value::Array(values).to_string()
    }

    /// True (and recorded) when the rule may fire for this group now.
    pub fn admit(
        &mut self,
        rule_ref: &str,
        throttle: &Throttle,
        group: &str,
        now: DateTime<Utc>,
    ) -> bool {
        let window = chrono::Duration::from_std(throttle.window).unwrap_or(chrono::Duration::MAX);
        self.admitted += 1;
        if self.admitted.is_multiple_of(PRUNE_EVERY) {
            self.seen.retain(|_, g| {
                g.times
                    .back()
                    .is_some_and(|last| now.signed_duration_since(*last) < g.window)
            });
        }
        let g = self
            .seen
            .entry((rule_ref.to_string(), group.to_string()))
            .or_insert_with(|| Group {
                window,
                times: VecDeque::new(),
            });
        // A reload may have changed the rule's window.
        g.window = window;
        while g.times.front().is_some_and(|t| now - *t >= window) {
            g.times.pop_front();
        }
        if g.times.len() >= throttle.max as usize {
            return false;
        }
        g.times.push_back(now);
        true
    }

    /// Groups remembered now (for tests and metrics).
    pub fn groups(&self) -> usize {
        self.seen.len()
    }

    /// A rule's groups within their windows now: each group's key, its enforcements in the
    /// window, and when the oldest of them leaves it (a refused group admits again then).
    pub fn groups_of(
        &self,
        rule_ref: &str,
        now: DateTime<Utc>,
    ) -> Vec<(String, usize, DateTime<Utc>)> {
        let mut out: Vec<(String, usize, DateTime<Utc>)> = self
            .seen
            .iter()
            .filter(|((rule, _), _)| rule == rule_ref)
            .filter_map(|((_, group), g)| {
                let live: Vec<&DateTime<Utc>> =
                    g.times.iter().filter(|t| now - **t < g.window).collect();
                let oldest = **live.first()?;
                Some((group.clone(), live.len(), oldest + g.window))
            })
            .collect();
        out.sort();
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_action_queue_renders_from_the_instance_and_its_context() {
        let rule = Rule::from_yaml(
            "name: q\nenabled: true\ntrigger: {type: a.b}\naction:\n  ref: core.noop\n  queue: \"{% if trigger.context is defined %}{{ trigger.context.host }}{% endif %}\"\n",
        )
        .unwrap();
        let (set, problems) = RuleSet::build(vec![rule]);
        assert!(problems.is_empty(), "{problems:?}");
        let env = EvalEnv {
            now: chrono::Utc::now(),
            kv: Arc::new(crate::NoKeyValues),
        };
        let payload = serde_json::json!({"id": "c1"});
        let sensed = serde_json::json!({"host": "docker-7", "sensor": "docker.events"});
        let r = set.render_action(0, &payload, Some(&sensed), &env).unwrap();
        assert_eq!(r.queue.as_deref(), Some("docker-7"));
        // Without a sensor host: the shared queue.
        let r = set.render_action(0, &payload, None, &env).unwrap();
        assert_eq!(r.queue, None);
        // The payload's own `context` is not hidden.
        let own = serde_json::json!({"context": {"host": "mine"}});
        let r = set.render_action(0, &own, Some(&sensed), &env).unwrap();
        assert_eq!(r.queue.as_deref(), Some("mine"));
    }

    #[test]
    fn correlation_parts_are_indexed_beside_rules_and_leave_them_alone() {
        let plain = "name: plain\nenabled: true\ntrigger: {type: d.e}\ncriteria:\n  trigger.action: {type: equals, pattern: die}\naction: {ref: core.noop}\n";
        let backstop = "name: back\nenabled: true\ntype: {ref: backstop}\ntrigger: {type: d.e}\naction: {ref: core.noop}\n";
        let corr = |name: &str, action: &str| {
            format!("name: {name}\nenabled: true\ncorrelate:\n  within: 60\n  all:\n    - trigger: d.e\n      criteria: {{trigger.action: {{type: equals, pattern: {action}}}}}\n    - trigger: core.st2.webhook\n  none:\n    - trigger: d.e\n      criteria: {{trigger.action: {{type: equals, pattern: start}}}}\naction: {{ref: core.noop}}\n")
        };
        let rules: Vec<Rule> = [
            plain.to_string(),
            corr("c1", "die"),
            backstop.to_string(),
            corr("c2", "oom"),
        ]
        .iter()
        .map(|t| Rule::from_yaml(t).unwrap())
        .collect();
        assert!(rules[1].is_correlation() && rules[1].trigger_type.is_empty());
        assert_eq!(rules[1].trigger_types(), vec!["core.st2.webhook", "d.e"]);
        let set = RuleSet::new(rules).unwrap();
        let env = EvalEnv {
            now: chrono::Utc::now(),
            kv: Arc::new(crate::NoKeyValues),
        };
        let eval = |trigger: &str, payload: Value| {
            set.evaluate(
                &TriggerInstanceView {
                    trigger,
                    payload: &payload,
                    trigger_parameters: None,
                },
                &env,
            )
        };
        let die = eval("d.e", serde_json::json!({"action": "die"}));
        assert_eq!(die.matched, vec![0]);
        assert_eq!(die.correlated, vec![(1, [0].into_iter().collect())]);
        // Only the parts the index files under `start` (and those without a literal) are
        // checked: c1's and c2's `none` part and their webhook parts are on another type.
        let start = eval("d.e", serde_json::json!({"action": "start"}));
        assert_eq!(
            start.matched,
            vec![2],
            "a part matching is not a rule matching"
        );
        let none_part = |id| (id, [2].into_iter().collect::<PartSet>());
        assert_eq!(start.correlated, vec![none_part(1), none_part(3)]);
        assert_eq!(start.checked, 1 + 2);
        let hook = eval("core.webhook", serde_json::json!({"x": 1}));
        assert_eq!(
            hook.correlated,
            vec![
                (1, [1].into_iter().collect()),
                (3, [1].into_iter().collect())
            ]
        );
        assert_eq!(set.correlation_rules().collect::<Vec<_>>(), vec![1, 3]);
        assert_eq!(set.correlation_rules_for("core.st2.webhook"), &[1, 3]);
        assert!(set.correlation_rules_for("x.y").is_empty());
        let mut types: Vec<&str> = set.trigger_types().collect();
        types.sort_unstable();
        assert_eq!(types, vec!["core.webhook", "d.e"]);
        let view = TriggerInstanceView {
            trigger: "d.e",
            payload: &Value::Null,
            trigger_parameters: None,
        };
        assert_eq!(set.check(1, &view, &env, false), Err(NoMatch::Correlation));
    }

    #[test]
    fn a_fire_renders_with_events_trigger_and_group() {
        let rule = Rule::from_yaml(
            "name: c\nenabled: true\ncorrelate:\n  within: 60\n  group_by: [trigger.id]\n  sequence:\n    - trigger: a.b\n    - trigger: a.b\naction:\n  ref: core.noop\n  queue: '{{ trigger.context.host }}'\n  parameters:\n    first: '{{ events[0].n }}'\n    last: '{{ trigger.n }}'\n    ns: '{{ events | map(attribute=\"n\") | list }}'\n    id: '{{ group[0] }}'\n    kv: '{{ kv.nothing }}'\n",
        )
        .unwrap();
        let set = RuleSet::new(vec![rule]).unwrap();
        let env = EvalEnv {
            now: chrono::Utc::now(),
            kv: Arc::new(crate::NoKeyValues),
        };
        let event = |n: i64| MatchedEvent {
            part: 0,
            instance_id: format!("i{n}"),
            trigger: "a.b".into(),
            at: env.now,
            payload: serde_json::json!({"id": "c1", "n": n}),
        };
        let sensed = serde_json::json!({"host": "h7"});
        let group = [serde_json::json!("c1")];
        let r = set
            .render_correlated_action(0, &[event(1), event(2)], &group, Some(&sensed), &env)
            .unwrap();
        assert_eq!(
            Value::Object(r.parameters),
            serde_json::json!({"first": 1, "last": 2, "ns": [1, 2], "id": "c1", "kv": ""})
        );
        assert_eq!(r.queue.as_deref(), Some("h7"));
        // An absence fire has no events: `trigger` is empty, and a template reading it fails
        // as it would over an instance without the key.
        let e = set
            .render_correlated_action(0, &[], &group, None, &env)
            .unwrap_err();
        assert!(e.contains("first"), "{e}");
    }

    #[test]
    fn throttle_admits_max_per_window_per_group() {
        let rule = Rule::from_yaml(
            "name: t\nenabled: true\ntrigger: {type: a.b}\naction: {ref: core.noop}\nthrottle: {window: 60, max: 2, group_by: [trigger.host]}\n",
        )
        .unwrap();
        let t = rule.throttle.unwrap();
        let now = chrono::Utc::now();
        let a = ThrottleState::group_key(&t, &serde_json::json!({"host": "a"}));
        let b = ThrottleState::group_key(&t, &serde_json::json!({"host": "b"}));
        let mut state = ThrottleState::default();
        assert!(state.admit("p.t", &t, &a, now));
        assert!(state.admit("p.t", &t, &a, now));
        assert!(
            !state.admit("p.t", &t, &a, now),
            "a third in the window is refused"
        );
        assert!(
            state.admit("p.t", &t, &b, now),
            "another group has its own count"
        );
        let groups = state.groups_of("p.t", now);
        assert_eq!(groups.len(), 2);
        assert_eq!((groups[0].0.as_str(), groups[0].1), ("[\"a\"]", 2));
        assert_eq!(groups[0].2, now + chrono::Duration::seconds(60));
        assert!(state.groups_of("p.other", now).is_empty());
        let later = now + chrono::Duration::seconds(61);
        assert!(state.admit("p.t", &t, &a, later), "the window moved on");
    }

    #[test]
    fn throttle_forgets_groups_whose_window_has_passed() {
        let rule = Rule::from_yaml(
            "name: t\nenabled: true\ntrigger: {type: a.b}\naction: {ref: core.noop}\nthrottle: {window: 60, max: 1, group_by: [trigger.host]}\n",
        )
        .unwrap();
        let t = rule.throttle.unwrap();
        let start = chrono::Utc::now();
        let mut state = ThrottleState::default();
        // A new host every second for three hours: only the last minute's hosts are kept.
        for i in 0..10_800 {
            let host = ThrottleState::group_key(&t, &serde_json::json!({"host": i}));
            let now = start + chrono::Duration::seconds(i);
            assert!(state.admit("p.t", &t, &host, now));
        }
        assert!(
            state.groups() <= 60 + PRUNE_EVERY as usize,
            "{} groups remembered",
            state.groups()
        );
    }
}
