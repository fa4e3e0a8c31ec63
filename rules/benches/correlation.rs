//! Correlation throughput: container events through 100 correlation rules holding 10,000 open
//! groups (100 containers per rule), beside the same events through 100 plain rules.
//!
//! Each rule is about one app (`equals` on its label, so the index narrows both kinds alike).
//! - `plain`: st2 rules firing on `die`: evaluate, then render the action of the match.
//! - `correlate/none_cycle`: "died and stayed down" (`all: [die]`, `none: [start]`, per
//!   container, 10 minutes): the events alternate `start` (cancels the container's group) and
//!   `die` (opens it again), so 10,000 groups stay open and every event changes one.
//! - `correlate/all_fires`: "died of OOM" (`all: [die, oom]`, per container) beside 10,000 open
//!   groups that never complete: each `die` opens a group and the `oom` after it fires it, the
//!   action rendered with `events`.
//!
//! Every figure is per event. Run: `cargo bench -p squall-rules --bench correlation`.

use std::sync::Arc;

use chrono::{DateTime, Utc};
use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use serde_json::{json, Value};
use squall_rules::{
    CorrelationState, EvalEnv, FedInstance, NoKeyValues, Outcome, Rule, RuleSet,
    TriggerInstanceView,
};

const RULES: usize = 100;
const PER_RULE: usize = 100;
const TRIGGER: &str = "bench.container";

fn plain_rule(i: usize) -> String {
    format!(
        "name: p{i}\npack: bench\nenabled: true\ntrigger: {{type: {TRIGGER}}}\ncriteria:\n  trigger.labels.app: {{type: equals, pattern: app-{i}}}\n  trigger.action: {{type: equals, pattern: die}}\naction:\n  ref: core.noop\n  parameters:\n    container: '{{{{ trigger.id }}}}'\n"
    )
}

fn none_rule(i: usize) -> String {
    format!(
        "name: n{i}\npack: bench\nenabled: true\ncorrelate:\n  within: 10m\n  group_by: [trigger.id]\n  all:\n    - trigger: {TRIGGER}\n      criteria:\n        trigger.labels.app: {{type: equals, pattern: app-{i}}}\n        trigger.action: {{type: equals, pattern: die}}\n  none:\n    - trigger: {TRIGGER}\n      criteria:\n        trigger.labels.app: {{type: equals, pattern: app-{i}}}\n        trigger.action: {{type: equals, pattern: start}}\naction:\n  ref: core.noop\n  parameters:\n    container: '{{{{ events[0].id }}}}'\n"
    )
}

fn all_rule(i: usize) -> String {
    format!(
        "name: a{i}\npack: bench\nenabled: true\ncorrelate:\n  within: 10m\n  group_by: [trigger.id]\n  all:\n    - trigger: {TRIGGER}\n      criteria:\n        trigger.labels.app: {{type: equals, pattern: app-{i}}}\n        trigger.action: {{type: equals, pattern: die}}\n    - trigger: {TRIGGER}\n      criteria:\n        trigger.labels.app: {{type: equals, pattern: app-{i}}}\n        trigger.action: {{type: equals, pattern: oom}}\naction:\n  ref: core.noop\n  parameters:\n    container: '{{{{ events[0].id }}}}'\n"
    )
}

fn rule_set(text: fn(usize) -> String) -> RuleSet {
    let rules: Vec<Rule> = (0..RULES)
        .map(|i| Rule::from_yaml(&text(i)).expect("bench rule loads"))
        .collect();
    RuleSet::new(rules).expect("bench rules compile")
}

fn event(app: usize, container: &str, action: &str) -> Value {
    json!({"id": container, "action": action, "labels": {"app": format!("app-{app}")}, "status": "exited"})
}

/// One event through the rule set and the states of the correlation rules it concerns.
/// Returns how many rules fired.
fn correlate_one(
    set: &RuleSet,
    states: &mut [CorrelationState],
    payload: &Value,
    at: DateTime<Utc>,
    env: &EvalEnv,
) -> usize {
    let view = TriggerInstanceView {
        trigger: TRIGGER,
        payload,
        trigger_parameters: None,
    };
    let eval = set.evaluate(&view, env);
    let mut fired = 0;
    for (id, parts) in eval.correlated {
        let Some(corr) = set.rule(id).correlate.as_ref() else {
            continue;
        };
        let inst = FedInstance {
            id: "bench",
            trigger: TRIGGER,
            payload,
        };
        for o in states[id].feed(corr, parts, inst, at) {
            if let Outcome::Fire { events, group, .. } = o {
                if set
                    .render_correlated_action(id, &events, &group, None, env)
                    .is_ok()
                {
                    fired += 1;
                }
            }
        }
    }
    fired
}

fn states_for(set: &RuleSet) -> Vec<CorrelationState> {
    set.rules()
        .iter()
        .map(|r| match &r.correlate {
            Some(c) => CorrelationState::new(c),
            None => CorrelationState::default(),
        })
        .collect()
}

fn bench(c: &mut Criterion) {
    let env = EvalEnv {
        now: Utc::now(),
        kv: Arc::new(NoKeyValues),
    };
    let start = env.now;
    // One microsecond per event: millions of iterations stay well inside the 10-minute windows,
    // so the open groups are the same 10,000 throughout.
    let tick = chrono::Duration::microseconds(1);

    // The same containers for every kind: 100 per app.
    let containers: Vec<(usize, String)> = (0..RULES)
        .flat_map(|app| (0..PER_RULE).map(move |k| (app, format!("c{app}-{k}"))))
        .collect();
    let mut group = c.benchmark_group("correlation");
    group.throughput(Throughput::Elements(1));

    // Plain rules: every event a `die` of some app's container.
    let plain = rule_set(plain_rule);
    let dies: Vec<Value> = containers
        .iter()
        .map(|(app, id)| event(*app, id, "die"))
        .collect();
    let mut i = 0;
    group.bench_function("plain", |b| {
        b.iter(|| {
            let payload = &dies[i % dies.len()];
            i += 1;
            let view = TriggerInstanceView {
                trigger: TRIGGER,
                payload,
                trigger_parameters: None,
            };
            let eval = plain.evaluate(&view, &env);
            eval.matched
                .iter()
                .filter(|&&id| plain.render_action(id, payload, None, &env).is_ok())
                .count()
        })
    });

    // `none`: 10,000 groups open, then start/die pairs cycling through them.
    let set = rule_set(none_rule);
    let mut states = states_for(&set);
    for (n, payload) in dies.iter().enumerate() {
        correlate_one(&set, &mut states, payload, start + tick * n as i32, &env);
    }
    let open: usize = states.iter().map(CorrelationState::len).sum();
    assert_eq!(open, RULES * PER_RULE, "every container has an open group");
    let cycle: Vec<Value> = containers
        .iter()
        .flat_map(|(app, id)| [event(*app, id, "start"), event(*app, id, "die")])
        .collect();
    let mut n = dies.len() as i64;
    group.bench_function("correlate/none_cycle", |b| {
        b.iter(|| {
            let payload = &cycle[n as usize % cycle.len()];
            n += 1;
            correlate_one(&set, &mut states, payload, start + tick * n as i32, &env)
        })
    });
    let open: usize = states.iter().map(CorrelationState::len).sum();
    assert!(open >= RULES * PER_RULE - 1, "{open} groups open");

    // `all`: 10,000 groups that never complete, and die/oom pairs of other containers firing.
    let set = rule_set(all_rule);
    let mut states = states_for(&set);
    for (n, payload) in dies.iter().enumerate() {
        correlate_one(&set, &mut states, payload, start + tick * n as i32, &env);
    }
    let pairs: Vec<Value> = containers
        .iter()
        .flat_map(|(app, id)| {
            let other = format!("{id}-x");
            [event(*app, &other, "die"), event(*app, &other, "oom")]
        })
        .collect();
    let mut n = dies.len() as i64;
    let mut fired = 0;
    group.bench_function("correlate/all_fires", |b| {
        b.iter(|| {
            let payload = &pairs[n as usize % pairs.len()];
            n += 1;
            fired += correlate_one(&set, &mut states, payload, start + tick * n as i32, &env);
        })
    });
    // However many iterations ran (one under `cargo test`), a die then its oom fire once.
    let app = containers[0].0;
    for action in ["die", "oom"] {
        n += 1;
        let payload = event(app, "last-check", action);
        fired += correlate_one(&set, &mut states, &payload, start + tick * n as i32, &env);
    }
    assert!(fired > 0, "the oom events completed groups");
    let open: usize = states.iter().map(CorrelationState::len).sum();
    assert!(open >= RULES * PER_RULE, "{open} groups open");
    group.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
