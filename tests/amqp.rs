//! squall over RabbitMQ: a server (`squall run --amqp`), remote workers (`squall worker`) and a
//! sensor host (`squall sensors`), real processes against a real broker. Each test works in a
//! virtual host of its own on the shared broker (`broker::shared_vhost`), or on a private
//! broker when it kills the broker.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::Value;

use crate::broker::{self, Broker};
use crate::harness::{is_terminal, write, Squall};

/// A `squall worker` process.
struct Worker {
    child: Child,
    log: PathBuf,
}

impl Worker {
    fn start(url: &str, name: &str, dir: &Path, extra: &[&str]) -> Worker {
        Worker::start_with_env(url, name, dir, extra, &[])
    }

    fn start_with_env(
        url: &str,
        name: &str,
        dir: &Path,
        extra: &[&str],
        env: &[(&str, &str)],
    ) -> Worker {
        let log = dir.join(format!("{name}.log"));
        let file = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&log)
            .expect("log file");
        let child = Command::new(env!("CARGO_BIN_EXE_squall"))
            .args(["worker", "--amqp", url, "--name", name])
            .args(extra)
            .env_remove("SQUALL_AMQP")
            .envs(env.iter().copied())
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(file)
            .spawn()
            .expect("squall worker starts");
        Worker { child, log }
    }

    fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    fn kill9(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Drop for Worker {
    fn drop(&mut self) {
        self.kill9();
    }
}

/// A child process killed when the test ends, passed or not.
struct Killed(Child);

impl Drop for Killed {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// Test actions: slow ones, idempotent or not, and one that writes a key.
fn remote_pack(root: &Path) -> PathBuf {
    let pack = root.join("remote");
    write(&pack, "pack.yaml", "ref: remote\nname: remote\n");
    write(
        &pack,
        "actions/nap.yaml",
        "name: nap\nrunner_type: rhai\nentry_point: nap.rhai\nidempotent: true\nparameters:\n  seconds: {type: number, default: 1}\n",
    );
    write(
        &pack,
        "actions/nap.rhai",
        "print(`napping on ${ctx.execution_id}`);\ntime::sleep(params.seconds);\nkv::set(`napped.${ctx.execution_id}`, \"yes\");\n\"rested\"\n",
    );
    write(
        &pack,
        "actions/nap_once.yaml",
        "name: nap_once\nrunner_type: rhai\nentry_point: nap.rhai\nparameters:\n  seconds: {type: number, default: 1}\n",
    );
    write(
        &pack,
        "actions/rest.yaml",
        "name: rest\nrunner_type: rhai\nentry_point: rest.rhai\nparameters:\n  seconds: {type: number, default: 1}\n",
    );
    write(
        &pack,
        "actions/rest.rhai",
        "print(\"resting\");\ntime::sleep(params.seconds);\n\"rested\"\n",
    );
    write(
        &pack,
        "actions/mark.yaml",
        "name: mark\nrunner_type: rhai\nentry_point: mark.rhai\nparameters:\n  item: {type: string, required: true}\n",
    );
    write(
        &pack,
        "actions/mark.rhai",
        "kv::set(`seen.${params.item}`, ctx.execution_id);\nif kv::claim(`first.${params.item}`, ctx.execution_id) { \"first\" } else { \"again\" }\n",
    );
    write(
        &pack,
        "actions/flow.yaml",
        "name: flow\nrunner_type: orquesta\nentry_point: workflows/flow.yaml\n",
    );
    write(
        &pack,
        "actions/workflows/flow.yaml",
        "version: 1.0\ntasks:\n  first:\n    action: remote.nap\n    input: {seconds: 0}\n    next:\n      - when: \"{{ succeeded() }}\"\n        do: second\n  second:\n    action: remote.nap\n    input: {seconds: 0}\n",
    );
    write(
        &pack,
        "actions/where.yaml",
        "name: where\nrunner_type: rhai\nentry_point: where.rhai\nqueue: \"{{ host }}\"\nparameters:\n  host: {type: string, required: true}\n",
    );
    write(&pack, "actions/where.rhai", "params.host\n");
    write(
        &pack,
        "actions/greet_sh.yaml",
        "name: greet_sh\nrunner_type: local-shell-script\nentry_point: greet.sh\nparameters:\n  who: {type: string, position: 0}\n  token: {type: string, secret: true}\n",
    );
    write(
        &pack,
        "actions/greet.sh",
        "#!/bin/sh\necho \"hello $1\"\necho \"token $ST2_ACTION_TOKEN\"\n",
    );
    write(
        &pack,
        "rules/routed.yaml",
        "name: routed\npack: remote\nenabled: true\ntrigger:\n  type: core.webhook\n  parameters: {url: routed}\naction:\n  ref: remote.mark\n  queue: \"{{ trigger.body.host }}\"\n  parameters:\n    item: \"{{ trigger.body.item }}\"\n",
    );
    write(
        &pack,
        "rules/mark_on_hook.yaml",
        "name: mark_on_hook\npack: remote\nenabled: true\ntrigger:\n  type: core.webhook\n  parameters: {url: mark}\naction:\n  ref: remote.mark\n  parameters:\n    item: \"{{ trigger.body.item }}\"\n",
    );
    pack
}

fn server(dir: &Path, url: &str, packs: &[PathBuf]) -> Squall {
    Squall::start(&dir.join("data"), packs, &["--amqp", url])
}

/// Requests an execution through the API; returns its id.
fn request(s: &Squall, action: &str, params: &str) -> String {
    let (code, e) = s.post(
        "/api/v1/executions",
        &format!(r#"{{"action": "{action}", "parameters": {params}}}"#),
    );
    assert_eq!(code, 201, "{e}");
    e["id"].as_str().expect("an id").to_string()
}

fn wait_execution(s: &Squall, id: &str, secs: u64, done: impl Fn(&Value) -> bool) -> Value {
    s.wait_for(&format!("/api/v1/executions/{id}"), secs, done)
}

fn ended(s: &Squall, id: &str, secs: u64) -> Value {
    wait_execution(s, id, secs, |e| {
        is_terminal(e["status"].as_str().unwrap_or(""))
    })
}

fn key(s: &Squall, name: &str) -> Option<String> {
    let (code, v) = s.get(&format!("/api/v1/keys/{name}"));
    (code == 200).then(|| v["value"].as_str().unwrap_or_default().to_string())
}

#[test]
fn remote_workers_run_actions_write_keys_and_are_listed() {
    let dir = tempfile::tempdir().expect("tempdir");
    let url = broker::shared_vhost("remote-basic");
    let pack = remote_pack(dir.path());
    let s = server(dir.path(), &url, &[pack]);
    let w = Worker::start(&url, "w-basic", dir.path(), &["--concurrency", "2"]);

    // A rule's action, through the broker: the script's key write is in the server's store.
    let (code, _) = s.post("/api/v1/webhooks/mark", r#"{"item": "a"}"#);
    assert_eq!(code, 202);
    let list = s.wait_for("/api/v1/executions?action=remote.mark", 60, |v| {
        v.as_array()
            .is_some_and(|a| a.len() == 1 && a[0]["status"] == "succeeded")
    });
    let e = &list[0];
    assert_eq!(e["result"], "first", "{e}\n{}", w.log());
    assert_eq!(key(&s, "seen.a").as_deref(), e["id"].as_str());

    // The bundled example too, with its log line.
    let id = request(&s, "examples.greet", r#"{"name": "ops"}"#);
    let e = ended(&s, &id, 30);
    assert_eq!(e["status"], "succeeded", "{e}");
    assert_eq!(e["result"]["lines"][0], "hello, ops");
    assert_eq!(e["log"][0]["message"], "greeted ops 1 time(s)", "{e}");

    // A workflow: the server drives it, its tasks run on the worker, their keys are written.
    let flow = request(&s, "remote.flow", "{}");
    let e = ended(&s, &flow, 60);
    assert_eq!(e["status"], "succeeded", "{e}\n{}", s.log());
    let (_, children) = s.get(&format!("/api/v1/executions?parent={flow}"));
    let children = children.as_array().cloned().unwrap_or_default();
    assert_eq!(children.len(), 2, "{children:?}");
    for c in &children {
        assert_eq!(c["status"], "succeeded", "{c}");
        assert_eq!(c["context"]["worker"], "w-basic", "{c}");
        let id = c["id"].as_str().unwrap_or_default();
        assert_eq!(key(&s, &format!("napped.{id}")).as_deref(), Some("yes"));
    }

    // Shell actions run on workers too: a pack's script (sent whole, its secret in the
    // environment and masked) and core.local.
    let id = request(
        &s,
        "remote.greet_sh",
        r#"{"who": "ops", "token": "s3cret"}"#,
    );
    let e = ended(&s, &id, 30);
    assert_eq!(e["status"], "succeeded", "{e}\n{}", w.log());
    assert_eq!(e["result"]["stdout"], "hello ops\ntoken ********", "{e}");
    assert_eq!(e["context"]["worker"], "w-basic", "{e}");
    let id = request(&s, "core.local", r#"{"cmd": "echo $((6*7))"}"#);
    let e = ended(&s, &id, 30);
    assert_eq!(e["result"]["stdout"], "42", "{e}");
    assert_eq!(e["context"]["worker"], "w-basic", "{e}");
    // And HTTP requests (st2's core.http), here to the server's own API on 127.0.0.1.
    let params = serde_json::json!({
        "url": format!("http://127.0.0.1:{}/api/v1/actions/core.echo", s.port),
    });
    let id = request(&s, "core.http", &params.to_string());
    let e = ended(&s, &id, 30);
    assert_eq!(e["status"], "succeeded", "{e}\n{}", w.log());
    assert_eq!(e["result"]["status_code"], 200, "{e}");
    assert_eq!(e["result"]["parsed"], true, "{e}");
    assert_eq!(e["result"]["body"]["ref"], "core.echo", "{e}");
    assert_eq!(e["context"]["worker"], "w-basic", "{e}");

    // The worker is listed, by the API, the CLI and /metrics.
    let workers = s.wait_for("/api/v1/workers", 20, |v| {
        v.as_array()
            .is_some_and(|a| a.iter().any(|w| w["name"] == "w-basic"))
    });
    let me = workers
        .as_array()
        .and_then(|a| a.iter().find(|w| w["name"] == "w-basic"))
        .cloned()
        .expect("listed");
    assert_eq!(me["state"], "up", "{me}");
    assert_eq!(me["concurrency"], 2);
    assert_eq!(me["queues"][0], "squall.work");
    let out = Command::new(env!("CARGO_BIN_EXE_squall"))
        .args([
            "worker",
            "list",
            "--api",
            &format!("http://127.0.0.1:{}", s.port),
        ])
        .output()
        .expect("worker list");
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success() && text.contains("w-basic") && text.contains("up"),
        "{text}"
    );
    let metrics = s
        .request("GET", "/metrics", None)
        .map(|(_, v)| v.as_str().unwrap_or_default().to_string())
        .unwrap_or_default();
    assert!(metrics.contains("squall_amqp_connected 1"), "{metrics}");
    assert!(
        metrics.contains("squall_worker_up{worker=\"w-basic\",role=\"worker\"} 1"),
        "{metrics}"
    );
    // The password is never logged.
    assert!(!s.log().contains("guest:guest"), "{}", s.log());
    assert!(!w.log().contains("guest:guest"), "{}", w.log());
}

/// An action runs where it must: a rule's queue (from the instance), an action's own queue
/// (from its parameters), the API's `queue`; the rest on the shared queue.
#[test]
fn executions_addressed_to_a_named_queue_run_on_its_workers() {
    let dir = tempfile::tempdir().expect("tempdir");
    let url = broker::shared_vhost("remote-routing");
    let pack = remote_pack(dir.path());
    let s = server(dir.path(), &url, &[pack]);
    let _shared = Worker::start(&url, "w-shared", dir.path(), &[]);
    let _east = Worker::start(
        &url,
        "w-east",
        dir.path(),
        &["--queue", "east", "--only-named"],
    );
    s.wait_for("/api/v1/workers", 20, |v| {
        v.as_array().is_some_and(|a| a.len() == 2)
    });
    let (code, _) = s.post(
        "/api/v1/webhooks/routed",
        r#"{"item": "r1", "host": "east"}"#,
    );
    assert_eq!(code, 202);
    let (code, _) = s.post("/api/v1/webhooks/mark", r#"{"item": "r2"}"#);
    assert_eq!(code, 202);
    let by_action = request(&s, "remote.where", r#"{"host": "east"}"#);
    let (code, e) = s.post(
        "/api/v1/executions",
        r#"{"action": "remote.nap", "parameters": {"seconds": 0}, "queue": "east"}"#,
    );
    assert_eq!(code, 201, "{e}");
    let by_api = e["id"].as_str().unwrap_or_default().to_string();
    let list = s.wait_for("/api/v1/executions?action=remote.mark", 60, |v| {
        v.as_array()
            .is_some_and(|a| a.len() == 2 && a.iter().all(|e| e["status"] == "succeeded"))
    });
    for e in list.as_array().into_iter().flatten() {
        let routed = e["parameters"]["item"] == "r1";
        let want = if routed { "w-east" } else { "w-shared" };
        assert_eq!(e["context"]["worker"], want, "{e}");
        if routed {
            assert_eq!(e["context"]["queue"], "east", "{e}");
        }
    }
    for id in [by_action, by_api] {
        let e = ended(&s, &id, 30);
        assert_eq!(e["status"], "succeeded", "{e}");
        assert_eq!(e["context"]["worker"], "w-east", "{e}");
    }
}

/// Guarantee 1: a worker killed mid-action. The idempotent action runs again on the other
/// worker and succeeds once; the other is abandoned, never run twice; nothing stays running.
#[test]
fn a_worker_killed_mid_action_is_replaced_or_its_action_abandoned() {
    let dir = tempfile::tempdir().expect("tempdir");
    let url = broker::shared_vhost("remote-worker-kill");
    let pack = remote_pack(dir.path());
    let s = server(dir.path(), &url, &[pack]);
    let mut a = Worker::start(&url, "w-a", dir.path(), &["--concurrency", "4"]);
    // Only `w-a` runs at first, so both actions start there.
    s.wait_for("/api/v1/workers", 20, |v| {
        v.as_array()
            .is_some_and(|a| a.iter().any(|w| w["name"] == "w-a"))
    });
    let again = request(&s, "remote.nap", r#"{"seconds": 3}"#);
    let once = request(&s, "remote.nap_once", r#"{"seconds": 3}"#);
    for id in [&again, &once] {
        let e = wait_execution(&s, id, 30, |e| e["status"] == "running");
        assert_eq!(e["context"]["worker"], "w-a", "{e}");
    }
    let _b = Worker::start(&url, "w-b", dir.path(), &["--concurrency", "4"]);
    s.wait_for("/api/v1/workers", 20, |v| {
        v.as_array()
            .is_some_and(|a| a.iter().any(|w| w["name"] == "w-b"))
    });
    a.kill9();

    let e = ended(&s, &again, 60);
    assert_eq!(e["status"], "succeeded", "{e}\n{}", s.log());
    assert_eq!(e["context"]["worker"], "w-b", "{e}");
    assert!(
        e["reason"].as_str().unwrap_or("").contains("w-a"),
        "the reason names the lost worker: {e}"
    );
    assert_eq!(key(&s, &format!("napped.{again}")).as_deref(), Some("yes"));

    let e = ended(&s, &once, 60);
    assert_eq!(e["status"], "abandoned", "{e}");
    assert!(
        e["reason"]
            .as_str()
            .unwrap_or("")
            .contains("not idempotent"),
        "{e}"
    );
    // Never run twice: w-a was killed before it ended, and nobody ran it again.
    assert_eq!(key(&s, &format!("napped.{once}")), None);
    let (_, running) = s.get("/api/v1/executions?status=running");
    assert_eq!(running, Value::Array(vec![]), "nothing stays running");
}

/// A worker killed mid-action while no other worker serves its queue: nothing stays running.
/// The non-idempotent action is abandoned once the worker is silent; the idempotent one is
/// scheduled again and runs when a worker comes.
#[test]
fn a_lost_worker_alone_leaves_nothing_running() {
    let dir = tempfile::tempdir().expect("tempdir");
    let url = broker::shared_vhost("remote-worker-alone");
    let pack = remote_pack(dir.path());
    let s = server(dir.path(), &url, &[pack]);
    let mut solo = Worker::start(&url, "w-solo", dir.path(), &["--concurrency", "4"]);
    s.wait_for("/api/v1/workers", 20, |v| {
        v.as_array()
            .is_some_and(|a| a.iter().any(|w| w["name"] == "w-solo"))
    });
    let again = request(&s, "remote.nap", r#"{"seconds": 3}"#);
    let once = request(&s, "remote.nap_once", r#"{"seconds": 3}"#);
    for id in [&again, &once] {
        wait_execution(&s, id, 30, |e| e["status"] == "running");
    }
    solo.kill9();
    let e = ended(&s, &once, 60);
    assert_eq!(e["status"], "abandoned", "{e}");
    assert!(e["reason"].as_str().unwrap_or("").contains("w-solo"), "{e}");
    let e = wait_execution(&s, &again, 60, |e| e["status"] == "scheduled");
    assert!(e["reason"].as_str().unwrap_or("").contains("w-solo"), "{e}");
    let workers = s.wait_for("/api/v1/workers", 20, |v| {
        v.as_array().is_some_and(|a| {
            a.iter()
                .any(|w| w["name"] == "w-solo" && w["state"] == "gone")
        })
    });
    assert!(workers.is_array());
    let _next = Worker::start(&url, "w-next", dir.path(), &[]);
    let e = ended(&s, &again, 60);
    assert_eq!(e["status"], "succeeded", "{e}");
    assert_eq!(e["context"]["worker"], "w-next", "{e}");
    let e = ended(&s, &once, 5);
    assert_eq!(e["status"], "abandoned", "dropped, never run: {e}");
    assert_eq!(key(&s, &format!("napped.{once}")), None);
}

/// Guarantee 3: the server is killed while a worker runs; the result the worker published
/// meanwhile is applied after the restart.
#[test]
fn results_published_while_the_server_is_down_are_applied_after_it_restarts() {
    let dir = tempfile::tempdir().expect("tempdir");
    let url = broker::shared_vhost("remote-server-kill");
    let pack = remote_pack(dir.path());
    let mut s = server(dir.path(), &url, &[pack]);
    let w = Worker::start(&url, "w-srv", dir.path(), &["--concurrency", "4"]);
    // Two that need nothing of the server to end (3 s and 5 s: their results go in separate
    // messages), and one whose last step writes a key (its call waits for the server).
    let rests: Vec<String> = [3, 5]
        .iter()
        .map(|n| request(&s, "remote.rest", &format!(r#"{{"seconds": {n}}}"#)))
        .collect();
    let nap = request(&s, "remote.nap", r#"{"seconds": 2}"#);
    for id in rests.iter().chain([&nap]) {
        wait_execution(&s, id, 30, |e| e["status"] == "running");
    }
    s.kill9();
    // The worker ends them and publishes their results while the server is down: the broker
    // holds them.
    broker::wait_for_messages("remote-server-kill", "squall.server", 2, 30);
    assert!(!w.log().contains("ERROR"), "{}", w.log());
    s.restart();
    for id in rests.iter().chain([&nap]) {
        let e = ended(&s, id, 60);
        assert_eq!(e["status"], "succeeded", "{e}\n{}", s.log());
        assert_eq!(e["result"], "rested");
    }
    assert_eq!(key(&s, &format!("napped.{nap}")).as_deref(), Some("yes"));
    let (_, running) = s.get("/api/v1/executions?status=running");
    assert_eq!(running, Value::Array(vec![]), "nothing stays running");
}

/// Guarantee 5: the broker is unreachable when the roles start: a clear error naming the URL
/// (password masked), retries, and webhooks still accepted; all carries on once it is up.
#[test]
fn roles_started_without_a_broker_say_so_retry_and_carry_on() {
    let dir = tempfile::tempdir().expect("tempdir");
    let mut b = Broker::private();
    let url = b.url();
    b.kill9();
    let pack = remote_pack(dir.path());
    let s = server(dir.path(), &url, &[pack]);
    let w = Worker::start(&url, "w-late", dir.path(), &[]);
    let (code, _) = s.post("/api/v1/webhooks/mark", r#"{"item": "late"}"#);
    assert_eq!(code, 202, "webhooks are accepted while the broker is away");
    let masked = format!("amqp://guest:***@127.0.0.1:{}", b.port());
    let deadline = Instant::now() + Duration::from_secs(20);
    while !(s.log().contains(&masked) && w.log().contains(&masked)) {
        assert!(
            Instant::now() < deadline,
            "no error naming {masked}:\n{}\n{}",
            s.log(),
            w.log()
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    assert!(s.log().contains("RabbitMQ is not reachable"), "{}", s.log());
    assert!(!s.log().contains("guest:guest"), "{}", s.log());
    assert!(!w.log().contains("guest:guest"), "{}", w.log());
    b.start_again();
    let list = s.wait_for("/api/v1/executions?action=remote.mark", 90, |v| {
        v.as_array()
            .is_some_and(|a| a.len() == 1 && a[0]["status"] == "succeeded")
    });
    assert_eq!(key(&s, "seen.late").as_deref(), list[0]["id"].as_str());
}

/// Guarantee 6: an item whose worker dies every time ends in the dead-letter queue, and its
/// execution fails saying so.
#[test]
fn an_item_that_loses_its_worker_every_time_is_dead_lettered() {
    let dir = tempfile::tempdir().expect("tempdir");
    let url = broker::shared_vhost("remote-dead-letter");
    let pack = remote_pack(dir.path());
    let s = server(dir.path(), &url, &[pack]);
    let id = request(&s, "remote.nap", r#"{"seconds": 30}"#);
    // The first delivery and two more, each worker killed while it runs the item.
    for round in 0..3 {
        let name = format!("w-dead-{round}");
        let mut w = Worker::start(&url, &name, dir.path(), &[]);
        wait_execution(&s, &id, 60, |e| {
            e["status"] == "running" && e["context"]["worker"] == name.as_str()
        });
        w.kill9();
    }
    let _last = Worker::start(&url, "w-dead-last", dir.path(), &[]);
    let e = ended(&s, &id, 60);
    assert_eq!(e["status"], "failed", "{e}\n{}", s.log());
    let reason = e["result"]["error"].as_str().unwrap_or("");
    assert!(
        reason.contains("dead-lettered") && reason.contains("3 times"),
        "{e}"
    );
}

/// Guarantee 2: the broker is killed under load and restarted; every accepted webhook is
/// enforced once and its execution ends, nothing lost; every role reconnects by itself.
#[test]
fn the_broker_killed_under_load_loses_nothing_confirmed() {
    let dir = tempfile::tempdir().expect("tempdir");
    let mut b = Broker::private();
    let url = b.url();
    let pack = remote_pack(dir.path());
    let s = server(dir.path(), &url, &[pack]);
    let _w1 = Worker::start(&url, "w-load-1", dir.path(), &["--concurrency", "8"]);
    let _w2 = Worker::start(&url, "w-load-2", dir.path(), &["--concurrency", "8"]);
    // Let the topology settle: a queue declared just before the broker dies may be lost.
    std::thread::sleep(Duration::from_secs(2));
    let client = Squall::client_for(s.port);
    let sender = std::thread::spawn(move || {
        let mut accepted = Vec::new();
        for i in 0..400 {
            let body = format!(r#"{{"item": "load-{i}"}}"#);
            if let Ok((202, ti)) = client.request("POST", "/api/v1/webhooks/mark", Some(&body)) {
                accepted.push((i, ti["id"].as_str().unwrap_or_default().to_string()));
            }
            std::thread::sleep(Duration::from_millis(10));
        }
        accepted
    });
    std::thread::sleep(Duration::from_millis(1500));
    b.kill9();
    std::thread::sleep(Duration::from_secs(2));
    b.start_again();
    let accepted = sender.join().expect("sender");
    assert_eq!(
        accepted.len(),
        400,
        "webhooks are accepted while the broker is away"
    );
    let ids: Vec<String> = accepted.iter().map(|(_, id)| id.clone()).collect();
    s.assert_enforced_once(&ids);
    let deadline = Instant::now() + Duration::from_secs(120);
    loop {
        let (_, list) = s.get("/api/v1/executions?action=remote.mark&limit=1000");
        let list = list.as_array().cloned().unwrap_or_default();
        let done = list.iter().filter(|e| e["status"] == "succeeded").count();
        if list.len() == 400 && done == 400 {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "{} executions, {done} succeeded; not succeeded: {:?}\n{}",
            list.len(),
            list.iter()
                .filter(|e| e["status"] != "succeeded")
                .take(5)
                .collect::<Vec<_>>(),
            s.log()
        );
        std::thread::sleep(Duration::from_millis(200));
    }
    for (i, _) in accepted.iter().step_by(37) {
        assert!(
            key(&s, &format!("seen.load-{i}")).is_some(),
            "seen.load-{i}"
        );
    }
}

/// Guarantee 4: a sensor host publishes while the server is down; every instance is
/// processed after the server starts, once.
#[test]
fn a_sensor_host_publishes_while_the_server_is_down() {
    let dir = tempfile::tempdir().expect("tempdir");
    let url = broker::shared_vhost("remote-sensors");
    let label = format!("squall-test-{}", std::process::id());
    // A sensor host watching this host's Docker daemon for networks with our label.
    let sensed = dir.path().join("sensed");
    write(&sensed, "pack.yaml", "ref: sensed\nname: sensed\n");
    write(
        &sensed,
        "sensors/nets.yaml",
        // Docker's network events carry no labels: the names tell ours apart.
        "sensor: docker\nname: nets\nsettings:\n  filters: {type: [network]}\n",
    );
    // The server's rule, in a pack of its own: the server runs no sensor of the host's.
    let rules = dir.path().join("rules");
    write(&rules, "pack.yaml", "ref: netrules\nname: netrules\n");
    write(
        &rules,
        "rules/net.yaml",
        "name: net\npack: netrules\nenabled: true\ntrigger:\n  type: docker.event\ncriteria:\n  trigger.action: {type: equals, pattern: create}\naction:\n  ref: core.noop\n",
    );
    let host_log = dir.path().join("sensors.log");
    let _host = Killed(
        Command::new(env!("CARGO_BIN_EXE_squall"))
            .args(["sensors", "--amqp", &url, "--name", "sensor-host-1"])
            .arg("--packs")
            .arg(&sensed)
            .arg("--configs")
            .arg(dir.path().join("configs"))
            .arg("--state-dir")
            .arg(dir.path().join("state"))
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(&host_log).expect("log"))
            .spawn()
            .expect("squall sensors starts"),
    );
    // Connected before anything happens.
    let deadline = Instant::now() + Duration::from_secs(30);
    while !std::fs::read_to_string(&host_log)
        .unwrap_or_default()
        .contains("connected to RabbitMQ")
        || !std::fs::read_to_string(&host_log)
            .unwrap_or_default()
            .contains("docker sensor streaming events")
    {
        assert!(
            Instant::now() < deadline,
            "{}",
            std::fs::read_to_string(&host_log).unwrap_or_default()
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    let nets: Vec<String> = (0..3).map(|i| format!("{label}-{i}")).collect();
    for n in &nets {
        let ok = Command::new("docker")
            .args(["network", "create", n])
            .stdout(Stdio::null())
            .status()
            .expect("docker");
        assert!(ok.success());
    }
    let cleanup = |nets: &[String]| {
        for n in nets {
            let _ = Command::new("docker")
                .args(["network", "rm", n])
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .status();
        }
    };
    // The instances are in the broker before the server starts.
    broker::wait_for_messages("remote-sensors", "squall.triggers", 3, 30);
    let s = server(dir.path(), &url, &[rules]);
    let ours = |t: &&Value| {
        t["payload"]["action"] == "create"
            && t["payload"]["attributes"]["name"]
                .as_str()
                .is_some_and(|n| n.starts_with(&label))
    };
    let found = s.wait_for(
        "/api/v1/triggerinstances?trigger=docker.event&limit=1000",
        60,
        |v| {
            v.as_array()
                .is_some_and(|a| a.iter().filter(ours).count() >= 3)
        },
    );
    cleanup(&nets);
    let creates: Vec<&Value> = found
        .as_array()
        .into_iter()
        .flatten()
        .filter(ours)
        .collect();
    assert_eq!(creates.len(), 3, "each once: {creates:?}");
    for t in &creates {
        assert_eq!(
            t["source"], "sensor/sensor-host-1/sensed.nets",
            "the instance names its host: {t}"
        );
        assert_eq!(t["context"]["host"], "sensor-host-1", "{t}");
        assert_eq!(
            t["payload"]["type"], "network",
            "the payload is the source's: {t}"
        );
    }
    let ids: Vec<String> = creates
        .iter()
        .map(|t| t["id"].as_str().unwrap_or_default().to_string())
        .collect();
    s.assert_enforced_once(&ids);
    // The server lists the host's sensors.
    let sensors = s.wait_for("/api/v1/sensors", 20, |v| {
        v.as_array()
            .is_some_and(|a| a.iter().any(|x| x["host"] == "sensor-host-1"))
    });
    assert!(sensors.to_string().contains("sensed.nets"), "{sensors}");
}

/// `amqps://`: server and worker reach a broker's TLS listener, whose certificate a private CA
/// signed (trusted through `SQUALL_AMQP_CA_FILE`); without the CA, the worker says why it cannot
/// connect.
#[test]
fn roles_connect_over_tls() {
    let dir = tempfile::tempdir().expect("tempdir");
    let tls_port = crate::harness::free_port();
    let certs = dir.path().join("certs");
    std::fs::create_dir_all(&certs).expect("certs dir");
    let openssl = |args: &[&str]| {
        let out = Command::new("openssl")
            .args(args)
            .current_dir(&certs)
            .output()
            .expect("openssl runs");
        assert!(
            out.status.success(),
            "openssl {args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    };
    openssl(&[
        "req",
        "-x509",
        "-newkey",
        "rsa:2048",
        "-nodes",
        "-keyout",
        "ca.key",
        "-out",
        "ca.pem",
        "-days",
        "2",
        "-subj",
        "/CN=squall test CA",
    ]);
    openssl(&[
        "req",
        "-newkey",
        "rsa:2048",
        "-nodes",
        "-keyout",
        "server.key",
        "-out",
        "server.csr",
        "-subj",
        "/CN=localhost",
    ]);
    write(
        &certs,
        "ext.cnf",
        "subjectAltName=DNS:localhost,IP:127.0.0.1\n",
    );
    openssl(&[
        "x509",
        "-req",
        "-in",
        "server.csr",
        "-CA",
        "ca.pem",
        "-CAkey",
        "ca.key",
        "-CAcreateserial",
        "-out",
        "server.pem",
        "-days",
        "2",
        "-extfile",
        "ext.cnf",
    ]);
    let c = certs.display().to_string();
    let _b = Broker::private_with(|_| {
        format!(
            "listeners.ssl.default = 127.0.0.1:{tls_port}\nssl_options.cacertfile = {c}/ca.pem\nssl_options.certfile = {c}/server.pem\nssl_options.keyfile = {c}/server.key\nssl_options.verify = verify_none\nssl_options.fail_if_no_peer_cert = false\n"
        )
    });
    let url = format!("amqps://guest:guest@localhost:{tls_port}/%2f");
    let ca = format!("{c}/ca.pem");
    let env = [("SQUALL_AMQP_CA_FILE", ca.as_str())];
    let pack = remote_pack(dir.path());
    let s = Squall::start_with_env(&dir.path().join("data"), &[pack], &["--amqp", &url], &env);
    let _w = Worker::start_with_env(&url, "w-tls", dir.path(), &[], &env);
    let untrusting = Worker::start(&url, "w-no-ca", dir.path(), &[]);
    let id = request(&s, "remote.nap", r#"{"seconds": 0}"#);
    let e = ended(&s, &id, 60);
    assert_eq!(e["status"], "succeeded", "{e}\n{}", s.log());
    assert_eq!(e["context"]["worker"], "w-tls", "{e}");
    // Without the CA the certificate is not trusted: said, with the URL masked.
    let deadline = Instant::now() + Duration::from_secs(20);
    while !untrusting
        .log()
        .contains("cannot connect to RabbitMQ at amqps://guest:***@localhost")
    {
        assert!(Instant::now() < deadline, "{}", untrusting.log());
        std::thread::sleep(Duration::from_millis(100));
    }
}
