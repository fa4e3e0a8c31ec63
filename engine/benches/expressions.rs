//! Time per workflow expression, YAQL beside Jinja: the same questions asked of the same
//! workflow context in both languages (a lookup, a condition, a transformation of a list).
//!
//! Measures only; it must never assert on timings.
//! Run: `cargo bench -p squall-engine --bench expressions -- --warm-up-time 1 --measurement-time 3`.

use criterion::{criterion_group, criterion_main, Criterion};
use serde_json::{json, Map, Value};
use squall_engine::workflow::expr::{eval_single, single, Scope};

fn bench(c: &mut Criterion) {
    let ctx: Map<String, Value> = json!({
        "name": "web",
        "count": 3,
        "hosts": ["web-1", "web-2", "web-3", "db-1"],
        "apps": [{"name": "web", "admin": true}, {"name": "api", "admin": false}, {"name": "ops", "admin": true}],
    })
    .as_object()
    .cloned()
    .unwrap_or_default();
    let result = json!({"stdout": "ok", "return_code": 0});
    let scope = Scope {
        ctx: Some(&ctx),
        result: Some(&result),
        status: Some("succeeded"),
        ..Scope::default()
    };
    let cases = [
        ("lookup", "{{ ctx().name }}", "<% ctx().name %>"),
        (
            "condition",
            "{{ succeeded() and ctx().count > 2 }}",
            "<% succeeded() and $.count > 2 %>",
        ),
        (
            "transform",
            "{{ ctx().apps | selectattr('admin') | map(attribute='name') | join(', ') }}",
            "<% $.apps.where($.admin).select($.name).join(', ') %>",
        ),
    ];
    let mut group = c.benchmark_group("workflow_expression");
    for (name, jinja, yaql) in cases {
        for (lang, source) in [("jinja", jinja), ("yaql", yaql)] {
            let one = single(source).expect("one expression");
            // Both must answer the same before they are timed.
            let value = eval_single(one, &scope).expect("evaluates");
            assert!(!value.is_null(), "{lang} {name}");
            group.bench_function(format!("{name}/{lang}"), |b| {
                b.iter(|| eval_single(one, &scope))
            });
        }
    }
    group.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
