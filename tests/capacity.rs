//! The capacity pack's collector under `squall run` with the machine's Docker daemon and its
//! real cgroups: a CPU burner limited to half a core reads near 100% of its limit and an idle
//! container near 0%, a threshold with a `for` fires once and resolves once, an app short of
//! its expected containers fires `capacity.below_expected`, and, end to end with no Prometheus,
//! burners take their app from 2 to 4 containers through `ops.scale_out`.
//!
//! The test apps' containers carry a label key of their own (`squall.captest`, set as the
//! collector's and ops's `app_label`), so other tests' squalls, which watch the same daemon
//! with the default `squall.app`, leave them alone.

use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

use serde_json::Value;

use crate::docker::docker;
use crate::harness::{repo, write, Squall};

const IMAGE: &str = "squall-test-busybox:latest";
const LABEL_KEY: &str = "squall.captest";
const BURN: &str = "while :; do :; done";

/// An app's containers, removed when the test ends however it ends.
struct App {
    name: String,
}

impl App {
    fn new(name: &str) -> App {
        let status = Command::new(repo().join("scripts/test-image"))
            .status()
            .expect("scripts/test-image runs");
        assert!(status.success(), "the test image could not be built");
        App {
            name: name.to_string(),
        }
    }

    fn run(&self, extra: &[&str], script: &str) -> String {
        let label = format!("{LABEL_KEY}={}", self.name);
        let mut args = vec!["run", "-d", "--label", &label];
        args.extend_from_slice(extra);
        args.extend_from_slice(&[IMAGE, "sh", "-c", script]);
        docker(&args)
    }

    fn running(&self) -> usize {
        let filter = format!("label={LABEL_KEY}={}", self.name);
        docker(&["ps", "-q", "--filter", &filter]).lines().count()
    }
}

impl Drop for App {
    fn drop(&mut self) {
        let filter = format!("label={LABEL_KEY}={}", self.name);
        for id in docker(&["ps", "-aq", "--filter", &filter]).lines() {
            let _ = Command::new("docker").args(["rm", "-f", id]).output();
        }
    }
}

fn start(dir: &Path, capacity: &str, ops: &str) -> Squall {
    write(dir, "configs/capacity.yaml", capacity);
    write(dir, "configs/ops.yaml", ops);
    let configs = dir.join("configs");
    Squall::start(
        &dir.join("data"),
        &[],
        &["--configs", configs.to_str().expect("utf-8 path")],
    )
}

/// Waits until the collector's figures for `app` satisfy `done`; returns them.
fn app_figures(s: &Squall, app: &str, secs: u64, done: impl Fn(&Value) -> bool) -> Value {
    let v = s.wait_for(&format!("/api/v1/capacity?app={app}"), secs, |v| {
        v["apps"]
            .as_array()
            .and_then(|a| a.first())
            .is_some_and(&done)
    });
    v["apps"][0].clone()
}

/// The trigger instances of `trigger` for `app`, oldest first.
fn instances(s: &Squall, trigger: &str, app: &str) -> Vec<Value> {
    let (_, list) = s.get(&format!("/api/v1/triggerinstances?trigger={trigger}"));
    let mut list: Vec<Value> = list
        .as_array()
        .cloned()
        .unwrap_or_default()
        .into_iter()
        .filter(|ti| ti["payload"]["app"] == app)
        .collect();
    list.reverse();
    list
}

fn statuses(list: &[Value]) -> Vec<String> {
    list.iter()
        .map(|ti| ti["payload"]["status"].as_str().unwrap_or("").to_string())
        .collect()
}

/// Waits for `n` more collections than the one at the time of the call.
fn collections_pass(s: &Squall, n: u32) {
    let (_, first) = s.get("/api/v1/capacity");
    let start = first["collected_at"].clone();
    let mut seen = 0;
    let mut last = start;
    let deadline = Instant::now() + Duration::from_secs(30);
    while seen < n {
        assert!(
            Instant::now() < deadline,
            "the collector stopped collecting"
        );
        let (_, now) = s.get("/api/v1/capacity");
        if now["collected_at"] != last {
            seen += 1;
            last = now["collected_at"].clone();
        }
        std::thread::sleep(Duration::from_millis(100));
    }
}

#[test]
fn the_collector_reads_cgroups_and_fires_thresholds_once() {
    let dir = tempfile::tempdir().expect("tempdir");
    let pid = std::process::id();
    let (hot, idle, short) = (
        format!("hot{pid}"),
        format!("idle{pid}"),
        format!("short{pid}"),
    );
    let hot_app = App::new(&hot);
    let idle_app = App::new(&idle);
    let short_app = App::new(&short);
    let mem = format!("mem{pid}");
    let mem_app = App::new(&mem);
    // Holds 24 MiB in its /dev/shm (tmpfs): memory its cgroup is charged for, not file cache.
    mem_app.run(
        &["--memory", "128m"],
        "dd if=/dev/zero of=/dev/shm/x bs=1M count=24; sleep 3600",
    );
    let burner = hot_app.run(&["--cpus", "0.5", "--memory", "64m"], BURN);
    idle_app.run(&[], "sleep 3600");
    short_app.run(&["--label", "squall.expected=2"], "sleep 3600");
    let s = start(
        dir.path(),
        &format!(
            "interval: 1\ncluster: test-cluster\napp_label: {LABEL_KEY}\nbelow_expected_for: 2\nthresholds:\n  - {{metric: cpu, above: 50, for: 2, apps: [{hot}, {idle}]}}\n"
        ),
        // Its capacity alerts scale nothing here: not one of ops's alertnames.
        &format!("app_label: {LABEL_KEY}\nalertnames: [SomethingElse]\n"),
    );

    let h = app_figures(&s, &hot, 30, |a| {
        a["cpu_percent"].as_f64().is_some_and(|c| c > 70.0)
    });
    assert!(h["cpu_percent"].as_f64().is_some_and(|c| c < 130.0), "{h}");
    assert_eq!(h["cluster"], "test-cluster");
    assert_eq!(h["online"], 1);
    assert_eq!(h["containers"][0]["cpu_limit_cores"], 0.5, "{h}");
    assert_eq!(
        h["containers"][0]["memory_limit_bytes"],
        64 * 1024 * 1024,
        "{h}"
    );
    let i = app_figures(&s, &idle, 30, |a| {
        a["containers"][0]["cpu_percent"].is_number()
    });
    assert!(i["cpu_percent"].as_f64().is_some_and(|c| c < 5.0), "{i}");
    let m = app_figures(&s, &mem, 60, |a| {
        a["memory_bytes"].as_u64().is_some_and(|b| b > 20_000_000)
    });
    assert!(
        m["memory_percent"].as_f64().is_some_and(|p| p > 14.0),
        "{m}"
    );

    // The CLI's table.
    let out = Command::new(env!("CARGO_BIN_EXE_squall"))
        .args(["capacity", &hot])
        .env("SQUALL_API_URL", format!("http://127.0.0.1:{}", s.port))
        .env_remove("SQUALL_API_KEY")
        .output()
        .expect("squall runs");
    let table = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{table}");
    assert!(
        table
            .lines()
            .any(|l| l.starts_with(&hot) && l.contains("test-cluster")),
        "{table}"
    );
    assert!(table.contains("CPU LIMIT"), "{table}");

    // Fires once, after its `for`.
    let fired = s.wait_for(
        "/api/v1/triggerinstances?trigger=capacity.threshold",
        30,
        |_| !instances(&s, "capacity.threshold", &hot).is_empty(),
    );
    assert!(fired.is_array());
    let list = instances(&s, "capacity.threshold", &hot);
    let p = &list[0]["payload"];
    assert_eq!(p["status"], "firing", "{p}");
    assert_eq!(p["metric"], "cpu");
    assert_eq!(p["threshold"], 50.0);
    assert_eq!(p["for_seconds"], 2.0);
    collections_pass(&s, 3);
    assert_eq!(
        statuses(&instances(&s, "capacity.threshold", &hot)),
        ["firing"]
    );
    assert!(instances(&s, "capacity.threshold", &idle).is_empty());

    // The app short of its expected count.
    s.wait_for(
        "/api/v1/triggerinstances?trigger=capacity.below_expected",
        30,
        |_| !instances(&s, "capacity.below_expected", &short).is_empty(),
    );
    let below = instances(&s, "capacity.below_expected", &short);
    assert_eq!(below[0]["payload"]["online"], 1, "{}", below[0]);
    assert_eq!(below[0]["payload"]["expected"], 2);
    assert_eq!(below[0]["payload"]["missing"], 1);

    // Resolves once, when the burner is gone.
    docker(&["rm", "-f", &burner]);
    s.wait_for(
        "/api/v1/triggerinstances?trigger=capacity.threshold",
        30,
        |_| instances(&s, "capacity.threshold", &hot).len() >= 2,
    );
    collections_pass(&s, 3);
    assert_eq!(
        statuses(&instances(&s, "capacity.threshold", &hot)),
        ["firing", "resolved"]
    );

    // On /metrics too.
    let (_, metrics) = s.get("/metrics");
    let text = metrics.as_str().unwrap_or_default();
    assert!(
        text.contains(&format!(
            "squall_app_expected_containers{{app=\"{short}\",cluster=\"test-cluster\"}} 2"
        )),
        "{text}"
    );
    drop(idle_app);
    drop(short_app);
    drop(mem_app);
}

#[test]
fn burning_containers_scale_their_app_out_without_prometheus() {
    let dir = tempfile::tempdir().expect("tempdir");
    let name = format!("burn{}", std::process::id());
    let app = App::new(&name);
    app.run(&["--cpus", "0.2"], BURN);
    app.run(&["--cpus", "0.2"], BURN);
    let s = start(
        dir.path(),
        &format!(
            "interval: 1\napp_label: {LABEL_KEY}\nthresholds:\n  - {{metric: cpu, above: 60, for: 2, apps: [{name}]}}\n"
        ),
        &format!(
            "app_label: {LABEL_KEY}\nstep: 2\nmin_instances: 1\nmax_instances: 4\ncooldown_seconds: 600\n"
        ),
    );
    let runs = s.wait_for("/api/v1/executions?action=ops.scale_out", 60, |v| {
        v.as_array().is_some_and(|a| {
            a.iter()
                .any(|e| e["status"] == "succeeded" || e["status"] == "failed")
        })
    });
    let run = runs
        .as_array()
        .and_then(|a| a.iter().find(|e| e["status"] == "succeeded"))
        .cloned()
        .unwrap_or_else(|| panic!("ops.scale_out did not succeed: {runs}"));
    let output = &run["result"]["output"];
    assert_eq!(output["before"], 2, "{output}");
    assert_eq!(output["after"], 4, "{output}");
    assert!(
        output["outcome"]
            .as_str()
            .is_some_and(|o| o.contains("HighCpuLoad")),
        "{output}"
    );
    assert_eq!(app.running(), 4);
    // The collector sees the four, still hot: the cooldown holds further scaling.
    app_figures(&s, &name, 30, |a| a["online"] == 4);
    // The Docker sensor counted the starts of the two new containers (at least).
    s.wait_for("/metrics", 30, |metrics| {
        let starts: u64 = metrics
            .as_str()
            .unwrap_or_default()
            .lines()
            .filter(|l| l.starts_with("squall_docker_events_total{action=\"start\""))
            .filter_map(|l| l.rsplit(' ').next()?.parse::<u64>().ok())
            .sum();
        starts >= 2
    });
}

/// The mesos pack's `metrics` poller against a stand-in master answering `/metrics/snapshot`
/// (Mesos cannot run here): its traffic counters and their rates reach squall's `/metrics`.
#[test]
fn the_mesos_masters_traffic_reaches_metrics() {
    use std::io::{Read, Write};
    let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    let port = listener.local_addr().expect("addr").port();
    std::thread::spawn(move || {
        for (n, conn) in listener.incoming().enumerate() {
            let Ok(mut conn) = conn else { continue };
            let mut buf = [0u8; 4096];
            let _ = conn.read(&mut buf);
            let body = format!(
                r#"{{"master/elected": 1, "master/messages_launch_tasks": {}, "master/messages_status_update": 500, "master/tasks_running": 42, "master/outstanding_offers": 3, "master/slaves_active": 5}}"#,
                100 + 10 * n
            );
            let _ = write!(
                conn,
                "HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
                body.len()
            );
        }
    });
    let dir = tempfile::tempdir().expect("tempdir");
    write(
        dir.path(),
        "configs/mesos.yaml",
        &format!("master: [\"http://127.0.0.1:{port}\"]\nmetrics_interval: 0.5\n"),
    );
    let configs = dir.path().join("configs");
    let s = Squall::start(
        &dir.path().join("data"),
        &[],
        &["--configs", configs.to_str().expect("utf-8 path")],
    );
    let leader = format!("leader=\"http://127.0.0.1:{port}\"");
    let metrics = s.wait_for("/metrics", 30, |m| {
        m.as_str().unwrap_or_default().lines().any(|l| {
            l.starts_with("squall_mesos_master_messages_launch_tasks_per_second")
                && l.contains(&leader)
        })
    });
    let text = metrics.as_str().unwrap_or_default();
    assert!(
        text.contains(&format!("squall_mesos_master_tasks_running{{{leader}}} 42")),
        "{text}"
    );
    let (_, sensors) = s.get("/api/v1/sensors");
    assert!(
        sensors.as_array().is_some_and(|a| a
            .iter()
            .any(|x| x["ref"] == "mesos.metrics" || x["name"] == "metrics")),
        "{sensors}"
    );
}

/// Expected instances from Marathon: the app's `instances` in `GET /v2/apps/<prefix><app>`
/// (a stand-in Marathon; it cannot run here), and the `expected` setting over it.
#[test]
fn expected_instances_come_from_marathon_or_the_setting() {
    use std::io::{Read, Write};
    let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    let port = listener.local_addr().expect("addr").port();
    let asked = std::sync::Arc::new(std::sync::Mutex::new(Vec::<String>::new()));
    let seen = asked.clone();
    std::thread::spawn(move || {
        for conn in listener.incoming() {
            let Ok(mut conn) = conn else { continue };
            let mut buf = [0u8; 4096];
            let n = conn.read(&mut buf).unwrap_or(0);
            let head = String::from_utf8_lossy(&buf[..n]).to_string();
            let path = head.split_whitespace().nth(1).unwrap_or("").to_string();
            if let Ok(mut s) = seen.lock() {
                s.push(path);
            }
            let body = r#"{"app": {"id": "/prod/x", "instances": 3}}"#;
            let _ = write!(
                conn,
                "HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
                body.len()
            );
        }
    });
    let dir = tempfile::tempdir().expect("tempdir");
    let pid = std::process::id();
    let (from_marathon, from_setting) = (format!("mar{pid}"), format!("set{pid}"));
    let a = App::new(&from_marathon);
    let b = App::new(&from_setting);
    a.run(&[], "sleep 3600");
    b.run(&[], "sleep 3600");
    let s = start(
        dir.path(),
        &format!(
            "interval: 1\napp_label: {LABEL_KEY}\nmarathon_url: http://127.0.0.1:{port}\nmarathon_app_prefix: /prod/\nexpected: {{{from_setting}: 5}}\n"
        ),
        &format!("app_label: {LABEL_KEY}\n"),
    );
    let m = app_figures(&s, &from_marathon, 30, |a| a["expected"].is_number());
    assert_eq!(m["expected"], 3, "{m}");
    let set = app_figures(&s, &from_setting, 30, |a| a["expected"].is_number());
    assert_eq!(set["expected"], 5, "{set}");
    let paths = asked.lock().map(|p| p.clone()).unwrap_or_default();
    assert!(
        paths.contains(&format!("/v2/apps/prod/{from_marathon}")),
        "{paths:?}"
    );
}
