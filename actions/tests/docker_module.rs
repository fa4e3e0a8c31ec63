//! The `docker` host module and the `docker` pack's actions against the Docker daemon on this
//! machine: scripts run through the public runtime API, as a worker runs them, on real
//! containers labelled with a per-test run id.
//!
//! No registry is reachable, so the image (`squall-test-busybox:latest`, shared with the
//! sensors' tests) is built from Debian's static busybox with `docker import`. Every container a
//! test starts, and every copy `scale` makes of one, is removed when the test ends, pass or fail.

use std::path::PathBuf;
use std::process::Command;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{mpsc, Arc, Mutex, OnceLock};
use std::time::Duration;

use serde_json::{json, Map, Value};
use squall_actions::{
    validate_params, ActionMeta, CancelToken, LogLine, MemoryKv, Outcome, RhaiRuntime, ScriptJob,
    SCRIPT_THREAD_STACK_SIZE,
};

const IMAGE: &str = "squall-test-busybox:latest";
/// Generous: the daemon on a loaded machine can take seconds to create a container.
const DEADLINE: Duration = Duration::from_secs(120);

// ---- the image and the containers ----

/// Builds the image once per test binary, unless it is there already.
fn image() -> &'static str {
    static READY: OnceLock<Result<(), String>> = OnceLock::new();
    let build = || {
        let script = format!(
            "docker image inspect {IMAGE} >/dev/null 2>&1 && exit 0
             dpkg -s busybox-static 2>/dev/null | grep -q 'install ok installed' \
               || apt-get install -y -q busybox-static \
               || {{ apt-get update -q && apt-get install -y -q busybox-static; }} || exit 1
             root=$(mktemp -d) && mkdir -p $root/bin && cp /bin/busybox $root/bin/ \
               && ln -s busybox $root/bin/sh && ln -s busybox $root/bin/sleep || exit 1
             out=$(tar -C $root -c . | docker import - {IMAGE} 2>&1); status=$?
             rm -rf $root
             [ $status = 0 ] || echo \"$out\" | grep -q 'already exists' || {{ echo \"$out\"; exit 1; }}"
        );
        let out = Command::new("sh").args(["-c", &script]).output();
        match out {
            Ok(out) if out.status.success() => Ok(()),
            Ok(out) => Err(format!(
                "{}{}",
                String::from_utf8_lossy(&out.stdout),
                String::from_utf8_lossy(&out.stderr)
            )),
            Err(e) => Err(e.to_string()),
        }
    };
    if let Err(e) = READY.get_or_init(build) {
        panic!("cannot build the test image {IMAGE}: {e}");
    }
    IMAGE
}

fn docker_cli(args: &[&str]) -> String {
    let out = Command::new("docker")
        .args(args)
        .output()
        .expect("the docker CLI runs");
    assert!(
        out.status.success(),
        "docker {}: {}",
        args.join(" "),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).trim().to_string()
}

/// One test's containers: all carry `squall.test=<run>`, and all of them (copies included) are
/// removed when the test ends, however it ends.
struct Containers {
    run: String,
}

impl Containers {
    fn new() -> Containers {
        static COUNTER: AtomicUsize = AtomicUsize::new(0);
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.subsec_nanos())
            .unwrap_or(0);
        let n = COUNTER.fetch_add(1, Ordering::SeqCst);
        Containers {
            run: format!("{}-{nanos}-{n}", std::process::id()),
        }
    }

    fn label(&self) -> String {
        format!("squall.test={}", self.run)
    }

    /// `docker <how...>` of a container labelled `squall.test=<run>` and `squall.app=<run>`,
    /// named `squall-test-<run>-<suffix>`, running `cmd`; returns what the CLI printed (the id,
    /// for `run -d` and `create`).
    fn docker(&self, how: &[&str], suffix: &str, cmd: &[&str]) -> String {
        let name = format!("squall-test-{}-{suffix}", self.run);
        let label = self.label();
        let app = format!("squall.app={}", self.run);
        let mut args = how.to_vec();
        args.extend(["--name", &name, "--label", &label, "--label", &app]);
        args.extend(["--network", "none", image()]);
        args.extend(cmd);
        docker_cli(&args)
    }

    /// A running container whose stop signal is KILL, so that stopping it takes no time.
    fn sleeper(&self, suffix: &str) -> String {
        let how = ["run", "-d", "--stop-signal", "KILL"];
        self.docker(&how, suffix, &["sleep", "3600"])
    }

    /// The ids of this test's running containers.
    fn running(&self) -> Vec<String> {
        let filter = format!("label={}", self.label());
        let out = docker_cli(&["ps", "-q", "--no-trunc", "--filter", &filter]);
        out.lines().map(str::to_string).collect()
    }
}

impl Drop for Containers {
    fn drop(&mut self) {
        let filter = format!("label={}", self.label());
        let Ok(out) = Command::new("docker")
            .args(["ps", "-aq", "--filter", &filter])
            .output()
        else {
            return;
        };
        let ids = String::from_utf8_lossy(&out.stdout).to_string();
        let mut args = vec!["rm", "-f"];
        args.extend(ids.split_whitespace());
        if args.len() > 2 {
            let _ = Command::new("docker").args(&args).output();
        }
    }
}

/// A field of `docker inspect`, as the CLI prints it.
fn cli_inspect(id: &str, format: &str) -> String {
    docker_cli(&["inspect", "--format", format, id])
}

// ---- running scripts ----

fn job(source: &str, params: Value) -> ScriptJob {
    ScriptJob {
        script_key: format!("test.{}", source.len()),
        source: Arc::from(source),
        params: params.as_object().cloned().unwrap_or_default(),
        ctx: json!({"execution_id": "01JDOCKERTEST"}),
        timeout: Some(DEADLINE),
        cancel: CancelToken::new(),
        kv: Arc::new(MemoryKv::new()),
        on_log: None,
    }
}

/// Runs `job` as a worker does, on a thread with a script's stack, within [`DEADLINE`].
fn run(job: ScriptJob) -> (Outcome, Vec<LogLine>) {
    let (tx, rx) = mpsc::channel();
    std::thread::Builder::new()
        .stack_size(SCRIPT_THREAD_STACK_SIZE)
        .spawn(move || {
            let report = RhaiRuntime::default().run(job);
            let _ = tx.send((report.outcome, report.log));
        })
        .expect("spawn the script thread");
    rx.recv_timeout(DEADLINE + Duration::from_secs(30))
        .expect("the script ends")
}

fn succeeded(source: &str, params: Value) -> Value {
    match run(job(source, params)) {
        (Outcome::Succeeded(value), _) => value,
        (other, _) => panic!("expected `{source}` to succeed, got {other:?}"),
    }
}

fn failed(source: &str, params: Value) -> String {
    match run(job(source, params)) {
        (Outcome::Failed { message, line, .. }, _) => {
            assert!(line.is_some(), "the error has a position: {message}");
            message
        }
        (other, _) => panic!("expected `{source}` to fail, got {other:?}"),
    }
}

fn assert_has(text: &str, part: &str) {
    assert!(text.contains(part), "{text:?} does not contain {part:?}");
}

fn assert_starts(text: &str, start: &str) {
    assert!(
        text.starts_with(start),
        "{text:?} does not start with {start:?}"
    );
}

fn ids(value: &Value) -> Vec<String> {
    let mut ids: Vec<String> = value
        .as_array()
        .expect("an array")
        .iter()
        .map(|v| match v {
            Value::String(id) => id.clone(),
            other => other["id"].as_str().expect("an id").to_string(),
        })
        .collect();
    ids.sort();
    ids
}

fn sorted(mut ids: Vec<String>) -> Vec<String> {
    ids.sort();
    ids
}

/// Runs the `docker` pack's action `name` with `given` parameters (validated and cast by its
/// metadata) and the pack config the engine would pass.
fn pack_action(name: &str, given: Value) -> (Outcome, Vec<LogLine>) {
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../packs/docker/actions");
    let read = |file: &str| {
        std::fs::read_to_string(dir.join(file)).unwrap_or_else(|e| panic!("{file}: {e}"))
    };
    let meta = ActionMeta::from_yaml(&read(&format!("{name}.yaml")))
        .unwrap_or_else(|e| panic!("{name}.yaml: {e:?}"));
    let given: Map<String, Value> = given.as_object().cloned().unwrap_or_default();
    let params = validate_params(&meta, given).unwrap_or_else(|e| panic!("{name}: {e:?}"));
    let mut job = job(&read(&meta.entry_point), Value::Object(params));
    job.script_key = format!("docker.{name}");
    job.ctx = json!({
        "execution_id": "01JDOCKERTEST",
        "action": format!("docker.{name}"),
        "config": {"host": "unix:///var/run/docker.sock", "filters": {}},
    });
    run(job)
}

fn pack_result(name: &str, given: Value) -> (Value, Vec<String>) {
    match pack_action(name, given) {
        (Outcome::Succeeded(value), log) => (value, log.into_iter().map(|l| l.message).collect()),
        (other, log) => panic!("docker.{name} failed: {other:?}; log: {log:?}"),
    }
}

// ---- the module ----

#[test]
fn list_finds_containers_by_label() {
    let c = Containers::new();
    let a = c.sleeper("a");
    let b = c.sleeper("b");
    let stopped = c.docker(&["create"], "s", &["sleep", "3600"]);

    let running = succeeded("docker::list(params.label)", json!({"label": c.label()}));
    assert_eq!(ids(&running), sorted(vec![a.clone(), b.clone()]));
    for container in running.as_array().expect("an array") {
        let name = container["name"].as_str().expect("a name");
        assert_starts(name, &format!("squall-test-{}-", c.run));
        assert_eq!(container["image"], json!(IMAGE));
        assert_eq!(container["labels"]["squall.test"], json!(c.run));
        assert_eq!(container["state"], json!("running"));
        assert!(container["status"]
            .as_str()
            .is_some_and(|s| s.starts_with("Up")));
        assert!(container["created"]
            .as_i64()
            .is_some_and(|t| t > 1_600_000_000));
    }

    // Through a handle, stopped ones included, several labels (all must match).
    let all = succeeded(
        "let d = docker::connect(); d.list(#{ label: [params.label, params.app], all: true })",
        json!({"label": c.label(), "app": format!("squall.app={}", c.run)}),
    );
    assert_eq!(ids(&all), sorted(vec![a, b, stopped.clone()]));
    let created = all
        .as_array()
        .expect("an array")
        .iter()
        .find(|v| v["id"] == json!(stopped))
        .expect("the stopped container is listed");
    assert_eq!(created["state"], json!("created"));

    // What the pack's actions do, here with no pack config at all: the default daemon.
    let none = succeeded(
        "docker::connect(ctx.config?.host).list(params.label)",
        json!({"label": format!("squall.test={}-nobody", c.run)}),
    );
    assert_eq!(none, json!([]));
}

#[test]
fn inspect_stop_start_restart_and_remove() {
    let c = Containers::new();
    let id = c.sleeper("x");
    let name = format!("squall-test-{}-x", c.run);

    let document = succeeded("docker::inspect(params.name)", json!({"name": name}));
    assert_eq!(document["Id"], json!(id));
    // A handle's methods are module functions too.
    let same = succeeded(
        "docker::inspect(docker::connect(), params.name)",
        json!({"name": name}),
    );
    assert_eq!(same["Id"], json!(id));
    assert_eq!(document["State"]["Status"], json!("running"));
    assert_eq!(document["Config"]["Labels"]["squall.test"], json!(c.run));

    let state = succeeded("docker::stop(params.id, 5)", json!({"id": id}));
    assert_eq!(state, json!({"id": id, "name": name, "state": "exited"}));
    assert_eq!(cli_inspect(&id, "{{.State.Status}}"), "exited");
    // Stopping a stopped container is not an error.
    let state = succeeded("docker::stop(params.id)", json!({"id": id}));
    assert_eq!(state["state"], json!("exited"));

    let state = succeeded("docker::start(params.id)", json!({"id": id}));
    assert_eq!(state["state"], json!("running"));
    assert_eq!(cli_inspect(&id, "{{.State.Status}}"), "running");

    let started_at = cli_inspect(&id, "{{.State.StartedAt}}");
    let state = succeeded(
        r#"let d = docker::connect("unix:///var/run/docker.sock"); d.restart(params.id, 1)"#,
        json!({"id": id}),
    );
    assert_eq!(state["state"], json!("running"));
    assert_ne!(cli_inspect(&id, "{{.State.StartedAt}}"), started_at);

    let refused = failed("docker::remove(params.id)", json!({"id": id}));
    assert_starts(&refused, &format!("docker remove {id}: "));
    assert!(refused.to_lowercase().contains("running"), "{refused}");
    assert_eq!(
        succeeded("docker::remove(params.id, true)", json!({"id": id})),
        Value::Null
    );
    let left = docker_cli(&["ps", "-aq", "--filter", &format!("id={id}")]);
    assert_eq!(left, "", "the container is gone");
}

#[test]
fn logs_returns_the_last_lines_of_stdout_and_stderr() {
    let c = Containers::new();
    // Attached: each returns once its container has written everything and exited. One stream
    // each, because Docker's log file orders the two streams only as it happens to read them.
    let lines = "for i in 1 2 3 4 5; do echo out$i; done";
    c.docker(&["run"], "out", &["sh", "-c", lines]);
    c.docker(&["run"], "err", &["sh", "-c", "echo oops >&2"]);
    let out = json!({"name": format!("squall-test-{}-out", c.run)});
    let err = json!({"name": format!("squall-test-{}-err", c.run)});

    let tail = succeeded("docker::logs(params.name, 2)", out.clone());
    assert_eq!(tail, json!("out4\nout5\n"));
    let all = succeeded("docker::logs(params.name, 100)", out.clone());
    assert_eq!(all, json!("out1\nout2\nout3\nout4\nout5\n"));
    assert_eq!(
        succeeded("docker::logs(params.name, 0)", out.clone()),
        json!("")
    );
    let stderr = succeeded("docker::logs(params.name, 10)", err);
    assert_eq!(stderr, json!("oops\n"));
    let refused = failed("docker::logs(params.name, -1)", out);
    assert_has(&refused, "tail must be a number from 0");
}

#[test]
fn scale_copies_the_newest_container_up_and_removes_the_newest_down() {
    let c = Containers::new();
    let first = c.sleeper("a");
    let second = c.sleeper("b");
    let params = json!({"app": c.run});

    let up = succeeded(
        r#"docker::scale("squall.test", params.app, 4)"#,
        params.clone(),
    );
    assert_eq!(up["app"], json!(c.run));
    assert_eq!((&up["before"], &up["after"]), (&json!(2), &json!(4)));
    assert_eq!(up["removed"], json!([]));
    let copies = ids(&up["created"]);
    assert_eq!(copies.len(), 2);
    let mut expected = copies.clone();
    expected.extend([first.clone(), second.clone()]);
    assert_eq!(sorted(c.running()), sorted(expected));
    for copy in &copies {
        assert_eq!(cli_inspect(copy, "{{.State.Status}}"), "running");
        assert_eq!(
            cli_inspect(copy, r#"{{index .Config.Labels "squall.test"}}"#),
            c.run
        );
        assert_eq!(cli_inspect(copy, "{{.Config.Image}}"), IMAGE);
        assert_eq!(
            cli_inspect(copy, "{{json .Config.Cmd}}"),
            r#"["sleep","3600"]"#
        );
        assert_eq!(cli_inspect(copy, "{{.HostConfig.NetworkMode}}"), "none");
        let name = cli_inspect(copy, "{{.Name}}");
        assert_starts(&name, &format!("/{}-", c.run));
    }

    // Down to 1 through the pack's action: the three newest go, the oldest stays.
    let (down, log) = pack_result(
        "scale",
        json!({"app": c.run, "count": 1, "label_key": "squall.test"}),
    );
    assert_eq!((&down["before"], &down["after"]), (&json!(4), &json!(1)));
    assert_eq!(down["created"], json!([]));
    let mut newest = copies.clone();
    newest.push(second);
    assert_eq!(ids(&down["removed"]), sorted(newest));
    assert_eq!(c.running(), vec![first.clone()]);
    let all = docker_cli(&[
        "ps",
        "-aq",
        "--no-trunc",
        "--filter",
        &format!("label={}", c.label()),
    ]);
    assert_eq!(
        all, first,
        "the removed containers are gone, not just stopped"
    );
    assert!(log.iter().any(|l| l.contains("4 -> 1 running")), "{log:?}");

    // Already there: nothing to do.
    let (again, _) = pack_result(
        "scale",
        json!({"app": c.run, "count": 1, "label_key": "squall.test"}),
    );
    assert_eq!(
        again,
        json!({"app": c.run, "before": 1, "after": 1, "created": [], "removed": []})
    );
}

#[test]
fn errors_name_the_operation_and_the_container() {
    let c = Containers::new();
    let unknown = format!("squall-nope-{}", c.run);
    let params = json!({"id": unknown, "app": c.run});

    let message = failed("docker::inspect(params.id)", params.clone());
    assert_starts(&message, &format!("docker inspect {unknown}: "));
    assert_has(&message, "No such container");
    // Catchable, like any script error.
    let caught = succeeded(
        r#"let r = "no error"; try { docker::start(params.id); } catch (e) { r = e } r"#,
        params.clone(),
    );
    let caught = caught.as_str().expect("the error's text");
    assert_starts(caught, &format!("docker start {unknown}: "));
    let message = failed("docker::stop(params.id, 1)", params.clone());
    assert_starts(&message, &format!("docker stop {unknown}: "));

    let message = failed(
        r#"docker::scale("squall.test", params.app, 2)"#,
        params.clone(),
    );
    assert_has(
        &message,
        &format!("no container labelled squall.test={} to copy", c.run),
    );
    let message = failed(
        r#"docker::scale("squall.test", params.app, -1)"#,
        params.clone(),
    );
    assert_has(&message, "count must be a number from 0");
    let message = failed(r#"docker::list(#{ labels: "x" })"#, json!({}));
    assert_has(&message, "unknown filter 'labels'");

    let message = failed(r#"docker::connect("ftp://example")"#, json!({}));
    assert_has(&message, "unix:///path/to/docker.sock or tcp://HOST:PORT");
    let message = failed(
        r#"docker::connect("unix:///nonexistent/docker.sock")"#,
        json!({}),
    );
    assert_has(&message, "/nonexistent/docker.sock does not exist");
    let message = failed(r#"docker::connect("tcp://127.0.0.1:1")"#, json!({}));
    assert_has(
        &message,
        "cannot reach the Docker daemon at tcp://127.0.0.1:1",
    );
}

#[test]
fn cancel_and_timeout_end_a_waiting_call() {
    let c = Containers::new();
    // `sleep` as PID 1 ignores SIGTERM, so Docker waits the whole stop timeout before it kills.
    let id = c.docker(&["run", "-d"], "slow", &["sleep", "3600"]);
    let source = r#"print("started"); docker::stop(params.id, 600)"#;

    let mut canceled = job(source, json!({"id": id}));
    let cancel = canceled.cancel.clone();
    let (started_tx, started_rx) = mpsc::channel();
    let started_tx = Mutex::new(started_tx);
    canceled.on_log = Some(Arc::new(move |line: &LogLine| {
        if line.message == "started" {
            let _ = started_tx.lock().map(|tx| tx.send(()));
        }
    }));
    let waiting = std::thread::spawn(move || run(canceled));
    started_rx
        .recv_timeout(DEADLINE)
        .expect("the script starts");
    cancel.cancel();
    let (outcome, _) = waiting.join().expect("the script thread");
    assert_eq!(outcome, Outcome::Canceled);

    let mut timed = job(source, json!({"id": id}));
    timed.timeout = Some(Duration::from_secs(1));
    let (outcome, _) = run(timed);
    assert!(matches!(outcome, Outcome::Timeout { .. }), "{outcome:?}");
}

// ---- the pack's actions ----

#[test]
fn pack_actions_run_against_the_daemon() {
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../packs/docker/actions");
    let runtime = RhaiRuntime::default();
    let mut names = Vec::new();
    for entry in std::fs::read_dir(&dir).expect("the pack's actions") {
        let path = entry.expect("an entry").path();
        if path.extension().is_some_and(|e| e == "yaml") {
            let meta = ActionMeta::from_yaml(&std::fs::read_to_string(&path).expect("read"))
                .unwrap_or_else(|e| panic!("{}: {e:?}", path.display()));
            let source = std::fs::read_to_string(dir.join(&meta.entry_point)).expect("script");
            if let Err(e) = runtime.check_syntax(&source) {
                panic!("{}: {e}", meta.entry_point);
            }
            names.push(meta.name);
        }
    }
    names.sort();
    let expected = [
        "inspect",
        "list_containers",
        "logs",
        "remove",
        "restart",
        "scale",
        "start",
        "stop",
    ];
    assert_eq!(names, expected);

    let c = Containers::new();
    let id = c.sleeper("p");
    let name = format!("squall-test-{}-p", c.run);

    let (listed, log) = pack_result("list_containers", json!({"label": c.label()}));
    assert_eq!(listed["count"], json!(1));
    assert_eq!(listed["containers"][0]["id"], json!(id));
    assert!(log.iter().any(|l| l.starts_with("1 containers")), "{log:?}");

    let (document, _) = pack_result("inspect", json!({"container": name}));
    assert_eq!(document["Id"], json!(id));

    let (stopped, log) = pack_result("stop", json!({"container": id, "timeout": 1}));
    assert_eq!(stopped, json!({"id": id, "name": name, "state": "exited"}));
    assert_eq!(log, [format!("stopped {name} ({id}): exited")]);
    let (started, _) = pack_result("start", json!({"container": name}));
    assert_eq!(started["state"], json!("running"));
    let (restarted, _) = pack_result("restart", json!({"container": name}));
    assert_eq!(restarted["state"], json!("running"));

    let (logs, _) = pack_result("logs", json!({"container": name, "tail": 10}));
    assert_eq!(logs, json!({"container": name, "logs": ""}));

    match pack_action("remove", json!({"container": name})) {
        (Outcome::Failed { message, .. }, _) => {
            assert!(
                message.starts_with(&format!("docker remove {name}: ")),
                "{message}"
            )
        }
        other => panic!("removing a running container without force must fail: {other:?}"),
    }
    let (removed, _) = pack_result("remove", json!({"container": name, "force": true}));
    assert_eq!(removed, json!({"container": name, "removed": true}));
    assert!(c.running().is_empty());
}
