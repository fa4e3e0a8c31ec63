//! Benchmarks of running an action end to end: parameter validation plus a Rhai run with a
//! cached script. The project's target for a trivial action is under 20 µs.
//!
//! Measures only; it must never assert on timings.

use std::sync::Arc;
use std::time::Duration;

use criterion::{black_box, criterion_group, criterion_main, Criterion};
use serde_json::{json, Map, Value};
use squall_actions::{
    validate_params, ActionMeta, CancelToken, KvStore, MemoryKv, Outcome, RhaiRuntime, ScriptJob,
};

const META: &str = "\
name: inc
runner_type: rhai
entry_point: inc.rhai
parameters:
  x:
    type: integer
    required: true
";

struct Fixture {
    meta: ActionMeta,
    runtime: RhaiRuntime,
    kv: Arc<dyn KvStore>,
}

impl Fixture {
    fn new() -> Option<Fixture> {
        Some(Fixture {
            meta: ActionMeta::from_yaml(META).ok()?,
            runtime: RhaiRuntime::default(),
            kv: Arc::new(MemoryKv::new()),
        })
    }

    /// What the worker does for one execution: validate (the value arrives as text, as rule
    /// templates render it, so it is cast) and run.
    fn execute(&self, source: &Arc<str>) -> Outcome {
        let mut given = Map::new();
        given.insert("x".into(), Value::String("41".into()));
        let params = match validate_params(&self.meta, given) {
            Ok(params) => params,
            Err(errors) => {
                return Outcome::Failed {
                    message: format!("{errors:?}"),
                    line: None,
                    column: None,
                }
            }
        };
        self.runtime
            .run(ScriptJob {
                script_key: "bench.inc".into(),
                source: Arc::clone(source),
                params,
                ctx: json!({"execution_id": "01JBENCH"}),
                timeout: Some(Duration::from_secs(60)),
                cancel: CancelToken::new(),
                kv: Arc::clone(&self.kv),
                on_log: None,
            })
            .outcome
    }
}

fn benches(c: &mut Criterion) {
    let Some(fixture) = Fixture::new() else {
        eprintln!("the benchmark's action metadata does not parse");
        return;
    };
    let trivial: Arc<str> = Arc::from("params.x + 1");
    let looping: Arc<str> = Arc::from("let sum = 0; for i in 0..1000 { sum += i; } sum + params.x");
    // Check once, outside the measurement, that both really run.
    for (source, expected) in [(&trivial, json!(42)), (&looping, json!(499_541))] {
        let outcome = fixture.execute(source);
        if outcome != Outcome::Succeeded(expected) {
            eprintln!("the benchmark's script does not run: {outcome:?}");
            return;
        }
    }
    c.bench_function("trivial action end to end (validate + run, cached)", |b| {
        b.iter(|| black_box(fixture.execute(&trivial)))
    });
    c.bench_function(
        "action with a 1,000-iteration loop (validate + run, cached)",
        |b| b.iter(|| black_box(fixture.execute(&looping))),
    );
    c.bench_function("validate_params alone", |b| {
        b.iter(|| {
            let mut given = Map::new();
            given.insert("x".into(), Value::String("41".into()));
            black_box(validate_params(&fixture.meta, given).is_ok())
        })
    });
}

criterion_group!(rhai_action, benches);
criterion_main!(rhai_action);
