//! Start-up cost of one execution per runner: a trivial Rhai action (cached script) against
//! st2's shell runners running `true` (`local-shell-cmd`: `/bin/sh -c true`) and a one-line
//! script (`local-shell-script`), and st2's `python-script` runner running an action whose
//! `run()` returns at once (`python3` from `PATH`: the interpreter's start, the shim's imports
//! and the socket conversation). What a process runner costs is a fork and exec (and the
//! reader threads); Rhai pays none of it, and nothing here is paid by Rhai actions when no
//! shell or Python action runs.
//!
//! Measures only; it must never assert on timings.
//! Run: `cargo bench -p squall-actions --bench runners -- --warm-up-time 1 --measurement-time 3`.

use std::sync::Arc;
use std::time::Duration;

use criterion::{criterion_group, criterion_main, Criterion};
use serde_json::{json, Map};
use squall_actions::runners::python::{
    interpreter, run_python, KvDatastore, PythonJob, PythonOutcome,
};
use squall_actions::runners::shell::{run_shell, ShellCommand, ShellJob, ShellOutcome};
use squall_actions::{CancelToken, KvStore, MemoryKv, Outcome, RhaiRuntime, ScriptJob};

fn shell(command: ShellCommand) -> ShellOutcome {
    run_shell(ShellJob {
        command,
        env: Vec::new(),
        cwd: None,
        timeout: Duration::from_secs(10),
        cancel: CancelToken::new(),
        secrets: Vec::new(),
        on_log: None,
    })
    .outcome
}

fn bench(c: &mut Criterion) {
    let mut group = c.benchmark_group("runner_start");
    let runtime = RhaiRuntime::default();
    let kv: Arc<dyn KvStore> = Arc::new(MemoryKv::new());
    let source: Arc<str> = Arc::from("params.len() + 1");
    group.bench_function("rhai", |b| {
        b.iter(|| {
            let report = runtime.run(ScriptJob {
                script_key: "bench.trivial".into(),
                source: source.clone(),
                params: Map::new(),
                ctx: serde_json::Value::Null,
                timeout: None,
                cancel: CancelToken::new(),
                kv: kv.clone(),
                on_log: None,
            });
            matches!(report.outcome, Outcome::Succeeded(_))
        })
    });
    group.bench_function("local-shell-cmd", |b| {
        b.iter(|| shell(ShellCommand::Line("true".into())))
    });
    let dir = std::env::temp_dir().join(format!("squall-bench-runners-{}", std::process::id()));
    let script = dir.join("noop.sh");
    let ready = std::fs::create_dir_all(&dir)
        .and_then(|_| std::fs::write(&script, "#!/bin/sh\nexit 0\n"))
        .and_then(|_| {
            use std::os::unix::fs::PermissionsExt;
            std::fs::set_permissions(&script, std::fs::Permissions::from_mode(0o755))
        });
    if ready.is_ok() {
        group.bench_function("local-shell-script", |b| {
            b.iter(|| {
                shell(ShellCommand::Script {
                    path: script.clone(),
                    args: vec!["--n=1".into()],
                })
            })
        });
    }
    let pack = dir.join("pybench");
    let entry_point = pack.join("actions/noop.py");
    let ready = std::fs::create_dir_all(pack.join("actions")).and_then(|_| {
        std::fs::write(
            &entry_point,
            "from st2common.runners.base_action import Action\n\n\nclass Noop(Action):\n    def run(self, n):\n        return (True, {\"n\": n})\n",
        )
    });
    if ready.is_ok() {
        // Each run is an interpreter's start: tens of milliseconds, so fewer samples.
        group.sample_size(20);
        group.bench_function("python-script", |b| {
            b.iter(|| {
                let report = run_python(PythonJob {
                    python: interpreter(&pack),
                    entry_point: entry_point.clone(),
                    pack: "pybench".into(),
                    pack_dir: pack.clone(),
                    parameters: json!({"n": 1}).as_object().cloned().unwrap_or_default(),
                    config: json!({}),
                    user: None,
                    log_level: "DEBUG".into(),
                    env: Vec::new(),
                    timeout: Duration::from_secs(30),
                    cancel: CancelToken::new(),
                    secrets: Vec::new(),
                    on_log: None,
                    datastore: Arc::new(KvDatastore(kv.clone())),
                });
                matches!(report.outcome, PythonOutcome::Succeeded(_))
            })
        });
    }
    group.finish();
    let _ = std::fs::remove_dir_all(&dir);
}

criterion_group!(benches, bench);
criterion_main!(benches);
