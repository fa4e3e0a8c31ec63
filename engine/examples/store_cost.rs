//! The store's cost per pipeline execution, without HTTP or Rhai, as the pipeline uses it: the
//! rules loop hands the store's writer a new trigger instance with its enforcement and
//! scheduled execution, a worker reads the execution back (its claim) and hands over its final
//! status, in batches of B (first argument, default 8), for N executions (second, 40,000); the writer
//! writes each batch in one transaction (at 10,000 executions/s, 10 ms gather about 100).
//! Prints the callers' wall time per stage, the whole run's wall time per execution (the
//! writer's included), CPU time (user, system) and bytes written per execution.
//! Run: `cargo run --release -p squall-engine --example store_cost -- 8`.
use serde_json::json;
use squall_engine::model::*;
use squall_engine::store::{NewInstance, Store};
use std::sync::Arc;
use std::time::Instant;

fn main() {
    let b: usize = std::env::args()
        .nth(1)
        .map(|s| s.parse().expect("store_cost"))
        .unwrap_or(8);
    let n: usize = std::env::args()
        .nth(2)
        .map(|s| s.parse().expect("store_cost"))
        .unwrap_or(40_000);
    let dir = tempfile::tempdir().expect("store_cost");
    let store = Store::open(dir.path(), None).expect("store_cost");
    let mut t_complete = 0f64;
    let mut t_run = 0f64;
    let mut t_final = 0f64;
    let mut t_enc = 0f64;
    let all = Instant::now();
    for _ in 0..n / b {
        let t = Instant::now();
        let mut tis = Vec::new();
        let mut enfs = Vec::new();
        let mut execs = Vec::new();
        for i in 0..b {
            let ti = TriggerInstance::new(
                "core.webhook",
                Some(json!({"url": "pipeline"})),
                json!({"headers": {"Host": "127.0.0.1:9305", "Content-Type": "application/json", "Content-Length": "58"}, "body": {"n": i, "host": "web-1.example.com", "status": "firing"}}),
                "webhook/pipeline",
            );
            let mut params = serde_json::Map::new();
            params.insert("n".into(), json!(41));
            let mut e = Execution::new("bench.trivial", params);
            e.status = ExecutionStatus::Scheduled;
            e.rule = Some("bench.pipeline".into());
            e.trigger_instance = Some(ti.id.clone());
            let enf = RuleEnforcement {
                v: 1,
                id: new_id(),
                rule_ref: "bench.pipeline".into(),
                trigger_instance_id: ti.id.clone(),
                execution_id: Some(e.id.clone()),
                enforced_at: chrono::Utc::now(),
                failure_reason: None,
            };
            tis.push(ti);
            enfs.push(vec![enf]);
            execs.push(vec![e]);
        }
        t_enc += t.elapsed().as_secs_f64();
        let t = Instant::now();
        let list = tis
            .into_iter()
            .zip(enfs)
            .zip(execs.iter())
            .map(|((ti, enforcements), executions)| NewInstance {
                ti: Arc::new(ti),
                status: TriggerInstanceStatus::Processed,
                enforcements,
                executions: executions.iter().map(|e| Arc::new(e.clone())).collect(),
                correlation: Vec::new(),
            })
            .collect();
        store.complete_new_later(list, None).expect("store_cost");
        t_complete += t.elapsed().as_secs_f64();
        let t = Instant::now();
        let mut claimed: Vec<Execution> = execs
            .iter()
            .map(|v| {
                let mut e = store
                    .execution(&v[0].id)
                    .expect("store_cost")
                    .expect("store_cost");
                e.status = ExecutionStatus::Running;
                e
            })
            .collect();
        t_run += t.elapsed().as_secs_f64();
        let t = Instant::now();
        for e in &mut claimed {
            e.status = ExecutionStatus::Succeeded;
            e.result = json!(42);
            e.end_timestamp = Some(chrono::Utc::now());
        }
        store.put_executions_later(claimed.into_iter().map(Arc::new).collect(), None);
        t_final += t.elapsed().as_secs_f64();
        // The writer writes each batch on its own, as it would a batch that gathered while
        // the pipeline ran.
        store.settle();
    }
    store.settle();
    let io = std::fs::read_to_string("/proc/self/io").expect("store_cost");
    let wb: f64 = io
        .lines()
        .find(|l| l.starts_with("wchar"))
        .expect("store_cost")
        .split_whitespace()
        .nth(1)
        .expect("store_cost")
        .parse()
        .expect("store_cost");
    println!(
        "written {:.0} bytes/execution; sled size on disk {}",
        wb / n as f64,
        store_size(&dir)
    );
    let st = std::fs::read_to_string("/proc/self/stat").expect("store_cost");
    let f: Vec<&str> = st
        .rsplit(')')
        .next()
        .expect("store_cost")
        .split_whitespace()
        .collect();
    let (ut, stt): (f64, f64) = (
        f[11].parse().expect("store_cost"),
        f[12].parse().expect("store_cost"),
    );
    println!(
        "cpu: user {:.1} us, sys {:.1} us per execution",
        ut * 1e4 / n as f64,
        stt * 1e4 / n as f64
    );
    let per = |t: f64| t * 1e6 / n as f64;
    println!("batch {b}: build {:.1} hand over new {:.1} claim {:.1} hand over final {:.1}; all written {:.1} us/execution", per(t_enc), per(t_complete), per(t_run), per(t_final), per(all.elapsed().as_secs_f64()));
}

fn store_size(dir: &tempfile::TempDir) -> u64 {
    fn walk(p: &std::path::Path) -> u64 {
        std::fs::read_dir(p)
            .map(|r| {
                r.flatten()
                    .map(|e| {
                        let m = e.metadata().expect("store_cost");
                        if m.is_dir() {
                            walk(&e.path())
                        } else {
                            m.len()
                        }
                    })
                    .sum()
            })
            .unwrap_or(0)
    }
    walk(dir.path())
}
