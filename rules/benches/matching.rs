//! Rule evaluation throughput: one trigger instance matched against rule sets of 10, 1,000 and
//! 10,000 rules spread over 100 trigger types (fewer types when there are fewer rules).
//!
//! `indexed`: each rule has an `equals` criterion on the app name (the usual shape of ops
//! rules), so the index narrows the candidates. `scan`: the rules of a type use only
//! `matchwildcard`, so every rule of the instance's type is checked: the worst case.
//! Run: `cargo bench -p squall-rules --bench matching`.

use std::sync::Arc;

use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion, Throughput};
use serde_json::json;
use squall_rules::{EvalEnv, NoKeyValues, Rule, RuleSet, TriggerInstanceView};

fn rule_text(i: usize, types: usize, indexed: bool) -> String {
    let t = i % types;
    let app_criterion = if indexed {
        format!("  trigger.labels.app: {{type: equals, pattern: app-{i}}}\n")
    } else {
        format!("  trigger.labels.app: {{type: matchwildcard, pattern: 'app-{i}'}}\n")
    };
    format!(
        "name: r{i}\npack: bench\nenabled: true\ntrigger: {{type: bench.t{t}}}\ncriteria:\n{app_criterion}  trigger.status: {{type: equals, pattern: firing}}\n  trigger.value: {{type: gt, pattern: 80}}\naction:\n  ref: core.noop\n  parameters:\n    app: '{{{{ trigger.labels.app }}}}'\n"
    )
}

fn rule_set(n: usize, indexed: bool) -> RuleSet {
    let types = n.min(100);
    let rules: Vec<Rule> = (0..n)
        .map(|i| Rule::from_yaml(&rule_text(i, types, indexed)).expect("bench rule loads"))
        .collect();
    RuleSet::new(rules).expect("bench rules compile")
}

fn bench(c: &mut Criterion) {
    let env = EvalEnv {
        now: chrono::Utc::now(),
        kv: Arc::new(NoKeyValues),
    };
    for indexed in [true, false] {
        let mut group = c.benchmark_group(if indexed {
            "evaluate/indexed"
        } else {
            "evaluate/scan"
        });
        group.throughput(Throughput::Elements(1));
        for n in [10usize, 1_000, 10_000] {
            let set = rule_set(n, indexed);
            let types = n.min(100);
            // The instance matches rule n-1 (of type (n-1) % types).
            let target = n - 1;
            let trigger = format!("bench.t{}", target % types);
            let payload = json!({"labels": {"app": format!("app-{target}")}, "status": "firing", "value": 93});
            let view = TriggerInstanceView {
                trigger: &trigger,
                payload: &payload,
                trigger_parameters: None,
            };
            let eval = set.evaluate(&view, &env);
            assert_eq!(
                eval.matched.len(),
                1,
                "the instance matches exactly one rule"
            );
            group.bench_with_input(BenchmarkId::from_parameter(n), &n, |b, _| {
                b.iter(|| set.evaluate(&view, &env).matched.len())
            });
        }
        group.finish();
    }
    let set = rule_set(1_000, true);
    let payload = json!({"labels": {"app": "app-999"}, "status": "firing", "value": 93});
    let mut group = c.benchmark_group("render_action");
    group.throughput(Throughput::Elements(1));
    group.bench_function("one_template", |b| {
        b.iter(|| set.render_action(999, &payload, None, &env))
    });
    group.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
