//! Correlation rules in the engine: each enabled rule's open groups (`squall_rules`'s
//! [`CorrelationState`]) kept in memory, fed by the rules loop and advanced by time.
//!
//! Durability follows the trigger instances': a state change is written in the same store
//! transaction as the outcome of the instance that made it (its enforcements and executions),
//! so after `kill -9` the stored state and the stored outcomes agree, and the instances the
//! journal replays feed the state again exactly as they did the first time (their own
//! `occurrence_time`, never the clock). Windows close by time: when one is due, the
//! correlation timer records a `core.correlation_window` instance carrying that moment, and
//! the rules loop advances every correlation rule to it, so what a window's closing fires is
//! written with that instance, once. Windows that closed while squall was down close at the
//! first such instance after the start.
//!
//! Nothing here decides what matches: `squall_rules` does; this file only holds the state,
//! turns outcomes into enforcements and says what to store.

use std::collections::HashMap;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use chrono::{DateTime, Utc};
use serde_json::{json, Value};
use squall_rules::{CorrelationState, EvalEnv, FedInstance, OpenGroup, Outcome, PartSet, RuleId};

use super::{enforcement, Enforced, Engine, Loaded};
use crate::model::{Execution, RuleEnforcement, TriggerInstance};
use crate::store::CorrelationWrite;

/// The trigger of the instances that close correlation windows: `{"at": time}`.
pub const CORRELATION_TICK: &str = "core.correlation_window";

/// How often the correlation timer looks for windows due.
const TICK_CHECK: Duration = Duration::from_millis(250);

/// What happened to a rule's groups since start, for `/metrics`.
#[derive(Debug, Default, Clone, Copy)]
struct Tally {
    fired: u64,
    expired: u64,
    cancelled: u64,
    refused: u64,
}

/// Every correlation rule's state, by rule reference.
#[derive(Default)]
pub(super) struct Correlations {
    states: HashMap<String, CorrelationState>,
    tallies: HashMap<String, Tally>,
}

impl Engine {
    fn correlations(&self) -> std::sync::MutexGuard<'_, Correlations> {
        match self.correlations.lock() {
            Ok(c) => c,
            Err(p) => p.into_inner(),
        }
    }

    /// Takes each enabled correlation rule's state: the one in memory when it still fits the
    /// rule, else the stored one, else a new one. States of rules no longer loaded (or changed
    /// so their groups no longer fit) are forgotten, in memory and in the store. Called at
    /// start and on every reload; a window check follows at once.
    pub(crate) fn load_correlations(&self, loaded: &Loaded) {
        let stored = match self.store.correlation_states() {
            Ok(s) => s,
            Err(err) => {
                tracing::error!(error = %err, "cannot read correlation rules' open groups");
                Default::default()
            }
        };
        let mut c = self.correlations();
        let mut kept: HashMap<String, CorrelationState> = HashMap::new();
        for id in loaded.rules.correlation_rules() {
            let rule = loaded.rules.rule(id);
            let Some(corr) = rule.correlate.as_ref() else {
                continue;
            };
            let reference = rule.reference();
            let state = match c.states.remove(&reference) {
                Some(s) if s.fits(corr) => s,
                _ => match stored.get(&reference) {
                    Some(s) => {
                        let header = s.header.clone().unwrap_or_default();
                        match CorrelationState::from_stored(
                            &header,
                            s.groups.iter().map(String::as_str),
                        ) {
                            Ok(state) if state.fits(corr) => state,
                            Ok(_) => {
                                tracing::warn!(rule = %reference, "the rule's parts changed: its open groups are dropped");
                                self.forget_stored(&reference);
                                CorrelationState::new(corr)
                            }
                            Err(err) => {
                                tracing::error!(rule = %reference, error = %err, "the rule's stored open groups cannot be read: they are dropped");
                                self.forget_stored(&reference);
                                CorrelationState::new(corr)
                            }
                        }
                    }
                    None => CorrelationState::new(corr),
                },
            };
            kept.insert(reference, state);
        }
        for gone in stored.keys().filter(|r| !kept.contains_key(*r)) {
            self.forget_stored(gone);
        }
        c.states = kept;
        drop(c);
        self.correlation_wake.store(true, Ordering::SeqCst);
    }

    fn forget_stored(&self, rule: &str) {
        if let Err(err) = self.store.drop_correlation_state(rule) {
            tracing::error!(rule = %rule, error = %err, "cannot drop a correlation rule's stored groups");
        }
    }

    /// Feeds an instance to the correlation rules it concerns (or, for a window instance,
    /// advances every rule to its time), turns their outcomes into enforcements and requested
    /// executions, and returns the state changes to store with the instance's outcome.
    pub(super) fn correlate(
        &self,
        loaded: &Loaded,
        ti: &TriggerInstance,
        correlated: &[(RuleId, PartSet)],
        env: &EvalEnv,
        enforcements: &mut Vec<RuleEnforcement>,
        executions: &mut Vec<Execution>,
    ) -> Vec<CorrelationWrite> {
        let tick_at = (ti.trigger == CORRELATION_TICK).then(|| {
            ti.payload["at"]
                .as_str()
                .and_then(|t| DateTime::parse_from_rfc3339(t).ok())
                .map(|t| t.with_timezone(&Utc))
                .unwrap_or(ti.occurrence_time)
        });
        let mut decided: Vec<(RuleId, Vec<Outcome>)> = Vec::new();
        let mut writes = Vec::new();
        {
            let mut c = self.correlations();
            let mut work = |id: RuleId, c: &mut Correlations, feed: Option<PartSet>| {
                let rule = loaded.rules.rule(id);
                let Some(corr) = rule.correlate.as_ref() else {
                    return;
                };
                let reference = rule.reference();
                let state = c
                    .states
                    .entry(reference.clone())
                    .or_insert_with(|| CorrelationState::new(corr));
                let outcomes = match (feed, tick_at) {
                    (Some(parts), _) => {
                        let inst = FedInstance {
                            id: &ti.id,
                            trigger: &ti.trigger,
                            payload: &ti.payload,
                        };
                        state.feed(corr, parts, inst, ti.occurrence_time)
                    }
                    (None, Some(at)) => state.advance(corr, at),
                    (None, None) => Vec::new(),
                };
                let (header, groups) = state.take_changes();
                if !groups.is_empty() {
                    writes.push(CorrelationWrite {
                        rule: reference.clone(),
                        header,
                        groups,
                    });
                }
                let tally = c.tallies.entry(reference).or_default();
                for o in &outcomes {
                    match o {
                        Outcome::Fire { .. } => tally.fired += 1,
                        Outcome::Expired { .. } => tally.expired += 1,
                        Outcome::Cancelled { .. } => tally.cancelled += 1,
                        Outcome::Refused { .. } => tally.refused += 1,
                    }
                }
                if !outcomes.is_empty() {
                    decided.push((id, outcomes));
                }
            };
            if tick_at.is_some() {
                let ids: Vec<RuleId> = loaded.rules.correlation_rules().collect();
                for id in ids {
                    work(id, &mut c, None);
                }
            } else {
                for (id, parts) in correlated {
                    work(*id, &mut c, Some(*parts));
                }
            }
        }
        if tick_at.is_some() {
            self.correlation_tick_pending.store(false, Ordering::SeqCst);
        }
        for (id, outcomes) in decided {
            let rule = loaded.rules.rule(id);
            let rule_ref = rule.reference();
            let enforced = Enforced {
                rule_ref: &rule_ref,
                ti_id: &ti.id,
                now: env.now,
            };
            for outcome in outcomes {
                match outcome {
                    Outcome::Fire { group, events, .. } => {
                        self.metrics.rule_matched(&rule_ref);
                        let empty = Value::Object(Default::default());
                        let last = events.last().map(|e| &e.payload).unwrap_or(&empty);
                        if !self.admitted(&enforced, rule.throttle.as_ref(), last, enforcements) {
                            continue;
                        }
                        // Where the last instance was sensed, when it is this one.
                        let context = events
                            .last()
                            .filter(|e| e.instance_id == ti.id)
                            .and(ti.context.as_ref());
                        let request = loaded
                            .rules
                            .render_correlated_action(id, &events, &group, context, env);
                        self.request_action(loaded, &enforced, request, enforcements, executions);
                    }
                    Outcome::Refused { reason, .. } => {
                        tracing::warn!(rule = %rule_ref, "{reason}");
                        enforcements.push(enforcement(
                            &rule_ref,
                            &ti.id,
                            None,
                            Some(format!("correlation limit: {reason}")),
                        ));
                    }
                    Outcome::Expired { group, .. } => {
                        tracing::debug!(rule = %rule_ref, group = ?group, "correlation window closed incomplete");
                    }
                    Outcome::Cancelled {
                        group, instance_id, ..
                    } => {
                        tracing::debug!(rule = %rule_ref, group = ?group, instance = %instance_id, "correlation group cancelled by a none part");
                    }
                }
            }
        }
        writes
    }

    /// A correlation rule's open groups, `None` when no such rule is loaded.
    pub fn open_groups(&self, rule_ref: &str) -> Option<Vec<OpenGroup>> {
        self.correlations()
            .states
            .get(rule_ref)
            .map(CorrelationState::open_groups)
    }

    /// `/metrics`: open groups, their limit and what became of groups, per correlation rule.
    pub fn render_correlation_metrics(&self, loaded: &Loaded) -> String {
        use std::fmt::Write;
        let c = self.correlations();
        if c.states.is_empty() {
            return String::new();
        }
        let mut out = String::new();
        let _ = writeln!(out, "# HELP squall_correlation_open_groups Open groups (partial matches) of a correlation rule.");
        let _ = writeln!(out, "# TYPE squall_correlation_open_groups gauge");
        let mut rules: Vec<(&String, &CorrelationState)> = c.states.iter().collect();
        rules.sort_by(|a, b| a.0.cmp(b.0));
        for (rule, state) in &rules {
            let _ = writeln!(
                out,
                "squall_correlation_open_groups{{rule=\"{rule}\"}} {}",
                state.len()
            );
        }
        let _ = writeln!(
            out,
            "# HELP squall_correlation_group_limit The most open groups a correlation rule keeps."
        );
        let _ = writeln!(out, "# TYPE squall_correlation_group_limit gauge");
        for id in loaded.rules.correlation_rules() {
            let rule = loaded.rules.rule(id);
            if let Some(corr) = rule.correlate.as_ref() {
                let _ = writeln!(
                    out,
                    "squall_correlation_group_limit{{rule=\"{}\"}} {}",
                    rule.reference(),
                    corr.limit
                );
            }
        }
        let _ = writeln!(out, "# HELP squall_correlation_groups_total Correlation groups that fired, expired, were cancelled by a none part, or were refused at the limit, since start.");
        let _ = writeln!(out, "# TYPE squall_correlation_groups_total counter");
        let mut tallies: Vec<(&String, &Tally)> = c.tallies.iter().collect();
        tallies.sort_by(|a, b| a.0.cmp(b.0));
        for (rule, t) in tallies {
            for (what, n) in [
                ("fired", t.fired),
                ("expired", t.expired),
                ("cancelled", t.cancelled),
                ("refused", t.refused),
            ] {
                let _ = writeln!(
                    out,
                    "squall_correlation_groups_total{{rule=\"{rule}\",outcome=\"{what}\"}} {n}"
                );
            }
        }
        out
    }

    /// The correlation timer: when a window is due (or the rules were just loaded, so
    /// absence rules start watching), records a window instance for the rules loop. One at a
    /// time: the next is recorded once the rules loop has taken the last.
    pub(super) async fn correlation_loop(self: Arc<Self>) {
        let mut tick = tokio::time::interval(TICK_CHECK);
        loop {
            tick.tick().await;
            if self.is_stopping() {
                return;
            }
            if self.correlation_tick_pending.load(Ordering::SeqCst) {
                continue;
            }
            let now = Utc::now();
            let due = {
                let c = self.correlations();
                let woken = self.correlation_wake.swap(false, Ordering::SeqCst);
                !c.states.is_empty()
                    && (woken
                        || c.states
                            .values()
                            .filter_map(CorrelationState::next_deadline)
                            .any(|d| d <= now))
            };
            if !due {
                continue;
            }
            let ti = TriggerInstance::new(
                CORRELATION_TICK,
                None,
                json!({"at": now.to_rfc3339_opts(chrono::SecondsFormat::Nanos, true)}),
                "squall",
            );
            self.correlation_tick_pending.store(true, Ordering::SeqCst);
            let engine = self.clone();
            let recorded = tokio::task::spawn_blocking(move || {
                engine.store.insert_trigger_instance(&ti).map(|()| ti)
            })
            .await;
            match recorded {
                Ok(Ok(ti)) => {
                    self.metrics.trigger_instance(CORRELATION_TICK);
                    let _ = self.ti_tx.send((Arc::new(ti), None));
                }
                Ok(Err(err)) => {
                    self.correlation_tick_pending.store(false, Ordering::SeqCst);
                    tracing::error!(error = %err, "cannot record a correlation window instance");
                }
                Err(err) => {
                    self.correlation_tick_pending.store(false, Ordering::SeqCst);
                    tracing::error!(error = %err, "correlation timer task failed");
                }
            }
        }
    }
}
