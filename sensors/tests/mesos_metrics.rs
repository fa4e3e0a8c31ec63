//! End-to-end tests of the `mesos_metrics` sensor against simulated Mesos masters.
//!
//! Mesos cannot run here, so [`Cluster`] simulates masters on 127.0.0.1: each a small threaded
//! HTTP/1.1 server on a std `TcpListener` answering `GET /metrics/snapshot` with a flat JSON
//! object of doubles (with `master/elected` 1 on the leader, 0 elsewhere) and
//! `GET /master/redirect` with a 307 whose Location names the leader scheme-relatively
//! (`//127.0.0.1:<port>`), or 503 "No leader elected", as Mesos does.
//!
//! The leader answers only as many snapshots as the test allows; a further one waits. So the
//! test knows which poll the board shows, and nothing sleeps to synchronise: tests poll the
//! board and the status under a deadline. The board is process-wide, so the tests take turns.

// A failed unwrap in a test is a failed test, with its message.
#![allow(clippy::unwrap_used)]

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use serde_json::{json, Map, Value};
use squall_sensors::mesos_metrics::{board, render_metrics, MetricsSnapshot};
use squall_sensors::{
    builtin_sensors, EmitError, Emitter, MemoryCheckpoint, SensorContext, SensorEvent,
    SensorStatus, SensorStatusView,
};
use tokio::sync::watch;
use tokio::task::JoinHandle;

/// Generous: a loaded CI machine must not fail a correct sensor.
const DEADLINE: Duration = Duration::from_secs(20);
/// How long a held snapshot waits at most, so that a forgotten hold cannot hang a test.
const HOLD_LIMIT: Duration = Duration::from_secs(30);
const LAUNCH: &str = "master/messages_launch_tasks";
const STATUS_UPDATE: &str = "master/messages_status_update";
const FAILED: &str = "master/tasks_failed";
const RUNNING: &str = "master/tasks_running";
/// `ops:s3cret` in base64, as HTTP basic authentication sends it.
const BASIC_OPS: &str = "Basic b3BzOnMzY3JldA==";

/// The board belongs to the process: one test at a time uses it.
static SERIAL: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

// ---------------------------------------------------------------------------------------------
// The simulated masters.

#[derive(Debug, Clone)]
struct Request {
    master: usize,
    path: String,
    authorization: Option<String>,
}

/// A snapshot the leader answered.
#[derive(Debug, Clone)]
struct Served {
    master: usize,
    at: Instant,
}

struct State {
    ports: Vec<u16>,
    /// Which master is elected, if any.
    leader: Option<usize>,
    /// Each master's metrics (`master/elected` is added when answering).
    metrics: Vec<Map<String, Value>>,
    /// Masters that answer their snapshot with HTML instead of JSON.
    garbled: Vec<bool>,
    /// How many more snapshots the leader answers before holding the next; None: no limit.
    budget: Option<usize>,
    requests: Vec<Request>,
    served: Vec<Served>,
    closed: bool,
}

struct Shared {
    state: Mutex<State>,
    changed: Condvar,
}

impl Shared {
    fn lock(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }
}

/// Simulated masters sharing one election.
struct Cluster {
    shared: Arc<Shared>,
    addrs: Vec<SocketAddr>,
}

impl Cluster {
    fn start(metrics: Vec<Value>, leader: Option<usize>, budget: Option<usize>) -> Cluster {
        let listeners: Vec<TcpListener> = metrics
            .iter()
            .map(|_| TcpListener::bind("127.0.0.1:0").unwrap())
            .collect();
        let addrs: Vec<SocketAddr> = listeners.iter().map(|l| l.local_addr().unwrap()).collect();
        let shared = Arc::new(Shared {
            state: Mutex::new(State {
                ports: addrs.iter().map(SocketAddr::port).collect(),
                leader,
                garbled: vec![false; metrics.len()],
                metrics: metrics
                    .into_iter()
                    .map(|m| m.as_object().unwrap().clone())
                    .collect(),
                budget,
                requests: Vec::new(),
                served: Vec::new(),
                closed: false,
            }),
            changed: Condvar::new(),
        });
        for (index, listener) in listeners.into_iter().enumerate() {
            let shared = shared.clone();
            std::thread::spawn(move || {
                for socket in listener.incoming() {
                    if shared.lock().closed {
                        return;
                    }
                    let Ok(socket) = socket else { continue };
                    let shared = shared.clone();
                    std::thread::spawn(move || serve(socket, index, &shared));
                }
            });
        }
        Cluster { shared, addrs }
    }

    fn url(&self, master: usize) -> String {
        format!("http://{}", self.addrs[master])
    }

    fn change(&self, f: impl FnOnce(&mut State)) {
        f(&mut self.shared.lock());
        self.shared.changed.notify_all();
    }

    fn set(&self, master: usize, name: &str, value: f64) {
        self.change(|s| {
            s.metrics[master].insert(name.to_string(), json!(value));
        });
    }

    /// Lets the leader answer `n` more snapshots.
    fn allow(&self, n: usize) {
        self.change(|s| s.budget = Some(s.budget.unwrap_or(0) + n));
    }

    fn requests(&self) -> Vec<Request> {
        self.shared.lock().requests.clone()
    }

    fn served(&self) -> Vec<Served> {
        self.shared.lock().served.clone()
    }
}

impl Drop for Cluster {
    fn drop(&mut self) {
        self.change(|s| s.closed = true);
        // Wakes each accept loop so that it sees `closed`.
        for addr in &self.addrs {
            let _ = TcpStream::connect(addr);
        }
    }
}

fn serve(mut socket: TcpStream, master: usize, shared: &Shared) {
    let _ = socket.set_read_timeout(Some(Duration::from_secs(5)));
    let Some((path, authorization)) = read_request(&mut socket) else {
        return;
    };
    let mut state = shared.lock();
    state.requests.push(Request {
        master,
        path: path.clone(),
        authorization,
    });
    let reply = if path.starts_with("/metrics/snapshot") {
        // Held while this master leads and may not answer; an election meanwhile makes it a
        // standby, which answers at once.
        let began = Instant::now();
        while state.leader == Some(master)
            && state.budget == Some(0)
            && !state.closed
            && began.elapsed() < HOLD_LIMIT
        {
            state = shared
                .changed
                .wait_timeout(state, Duration::from_millis(100))
                .unwrap_or_else(|p| p.into_inner())
                .0;
        }
        let elected = state.leader == Some(master);
        let mut metrics = state.metrics[master].clone();
        metrics.insert(
            "master/elected".to_string(),
            json!(if elected { 1.0 } else { 0.0 }),
        );
        if elected {
            if let Some(n) = state.budget.as_mut() {
                *n = n.saturating_sub(1);
            }
            state.served.push(Served {
                master,
                at: Instant::now(),
            });
        }
        if state.garbled[master] {
            response(
                "200 OK",
                "text/html",
                "",
                "<html><body>Service Temporarily Unavailable</body></html>",
            )
        } else {
            response(
                "200 OK",
                "application/json",
                "",
                &Value::Object(metrics).to_string(),
            )
        }
    } else if path == "/master/redirect" {
        match state.leader {
            Some(leader) => response(
                "307 Temporary Redirect",
                "text/plain",
                &format!("Location: //127.0.0.1:{}\r\n", state.ports[leader]),
                "",
            ),
            None => response(
                "503 Service Unavailable",
                "text/plain",
                "",
                "No leader elected",
            ),
        }
    } else {
        response("404 Not Found", "text/plain", "", "")
    };
    drop(state);
    let _ = socket.write_all(reply.as_bytes());
}

fn response(status: &str, content_type: &str, extra_headers: &str, body: &str) -> String {
    format!(
        "HTTP/1.1 {status}\r\nContent-Type: {content_type}\r\n{extra_headers}Content-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    )
}

/// The path and the Authorization header of a GET.
fn read_request(socket: &mut TcpStream) -> Option<(String, Option<String>)> {
    let mut buf = Vec::new();
    let mut chunk = [0u8; 1024];
    while !buf.windows(4).any(|w| w == b"\r\n\r\n") {
        let n = socket.read(&mut chunk).ok()?;
        if n == 0 {
            return None;
        }
        buf.extend_from_slice(&chunk[..n]);
    }
    let head = String::from_utf8_lossy(&buf).to_string();
    let mut lines = head.split("\r\n");
    let path = lines.next()?.split(' ').nth(1)?.to_string();
    let authorization = lines
        .filter_map(|line| line.split_once(':'))
        .find(|(name, _)| name.trim().eq_ignore_ascii_case("authorization"))
        .map(|(_, value)| value.trim().to_string());
    Some((path, authorization))
}

/// A port nothing listens on: bound, then released.
fn dead_url() -> String {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    format!("http://{}", listener.local_addr().unwrap())
}

fn leader_metrics(launch: f64) -> Value {
    json!({
        LAUNCH: launch,
        STATUS_UPDATE: 5678.0,
        "master/messages_deactivate_framework": 3.0,
        "master/outstanding_offers": 2.0,
        "master/frameworks_active": 4.0,
        RUNNING: 100.0,
        "master/tasks_staging": 1.0,
        FAILED: 7.0,
        "master/tasks_finished": 50.0,
        "master/slaves_active": 10.0,
        "master/uptime_secs": 1234.5,
        // Not among the metrics the sensor keeps.
        "master/cpus_total": 64.0,
        "allocator/mesos/event_queue_dispatches": 0.0,
    })
}

/// A standby whose counters and uptime are all above the leader's, so that only knowing the
/// leader changed can keep a rate from mixing the two.
fn standby_metrics(launch: f64) -> Value {
    json!({LAUNCH: launch, RUNNING: 0.0, "master/uptime_secs": 99999.0})
}

// ---------------------------------------------------------------------------------------------
// The engine's side: an emitter that must stay empty, and a running sensor.

#[derive(Default)]
struct Collector(Mutex<Vec<SensorEvent>>);

impl Emitter for Collector {
    fn emit(
        &self,
        event: SensorEvent,
    ) -> std::pin::Pin<Box<dyn std::future::Future<Output = Result<(), EmitError>> + Send + '_>>
    {
        Box::pin(async move {
            self.0.lock().unwrap().push(event);
            Ok(())
        })
    }
}

struct RunningSensor {
    collector: Arc<Collector>,
    status: Arc<SensorStatus>,
    shutdown: watch::Sender<bool>,
    task: JoinHandle<()>,
}

impl RunningSensor {
    /// Builds the sensor through the registry, as the engine does.
    fn start(settings: Value) -> RunningSensor {
        let kind = builtin_sensors()
            .into_iter()
            .find(|k| k.name == "mesos_metrics")
            .unwrap();
        let sensor = (kind.build)(settings.as_object().unwrap()).unwrap();
        let collector = Arc::new(Collector::default());
        let status = Arc::new(SensorStatus::default());
        let (shutdown, receiver) = watch::channel(false);
        let ctx = SensorContext {
            emitter: collector.clone(),
            checkpoint: Arc::new(MemoryCheckpoint::default()),
            status: status.clone(),
            shutdown: receiver,
        };
        let task = tokio::spawn(sensor.run(ctx));
        RunningSensor {
            collector,
            status,
            shutdown,
            task,
        }
    }

    fn status(&self) -> SensorStatusView {
        self.status.view()
    }

    async fn wait_status(&self, what: &str, check: impl Fn(&SensorStatusView) -> bool) {
        wait_for(what, || check(&self.status.view()).then_some(())).await;
    }

    /// Signals shutdown and requires the sensor to finish promptly, well before a held
    /// request would time out.
    async fn stop(self) {
        assert!(
            self.collector.0.lock().unwrap().is_empty(),
            "the sensor emitted trigger instances"
        );
        self.shutdown.send(true).unwrap();
        tokio::time::timeout(Duration::from_secs(3), self.task)
            .await
            .expect("the sensor did not stop within 3 s of shutdown")
            .unwrap();
    }
}

/// Polls `check` every 10 ms until it gives a value; fails the test at the deadline.
async fn wait_for<T>(what: &str, mut check: impl FnMut() -> Option<T>) -> T {
    let deadline = Instant::now() + DEADLINE;
    loop {
        if let Some(value) = check() {
            return value;
        }
        if Instant::now() >= deadline {
            panic!(
                "timed out waiting for {what}; the board: {:?}",
                board().snapshot()
            );
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

async fn wait_board(what: &str, check: impl Fn(&MetricsSnapshot) -> bool) -> MetricsSnapshot {
    wait_for(what, || Some(board().snapshot()).filter(&check)).await
}

fn value(snapshot: &MetricsSnapshot, name: &str) -> Option<f64> {
    snapshot.values.get(name).copied()
}

/// Seconds between the leader's last two answers, as the simulator saw them.
fn last_gap(served: &[Served]) -> f64 {
    let [.., before, last] = served else {
        panic!("fewer than two snapshots served: {served:?}");
    };
    assert_eq!(before.master, last.master, "{served:?}");
    last.at.duration_since(before.at).as_secs_f64()
}

fn assert_close(actual: f64, expected: f64, tolerance: f64, what: &str) {
    assert!(
        (actual - expected).abs() <= tolerance,
        "{what}: {actual} is not within {tolerance} of {expected}"
    );
}

// ---------------------------------------------------------------------------------------------
// The tests.

/// Named after the sensor kind, so that `cargo test -p squall-sensors mesos_metrics` runs them.
mod mesos_metrics {
    use super::*;

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn the_board_shows_the_leaders_figures_and_rates() {
        let _turn = SERIAL.lock().await;
        // Master 0 stands by (with figures of its own), master 1 leads.
        let cluster = Cluster::start(
            vec![standby_metrics(9999.0), leader_metrics(100.0)],
            Some(1),
            Some(1),
        );
        let leader = cluster.url(1);
        let sensor = RunningSensor::start(json!({
            "master": [cluster.url(0), cluster.url(1)],
            "metrics_interval": 0.3,
            "principal": "ops",
            "secret": "s3cret",
        }));

        let first = wait_board("the leader's first snapshot", |s| {
            s.leader.as_deref() == Some(&leader) && value(s, LAUNCH).is_some()
        })
        .await;
        let expected: Vec<(&str, f64)> = vec![
            ("master/elected", 1.0),
            ("master/frameworks_active", 4.0),
            ("master/messages_deactivate_framework", 3.0),
            (LAUNCH, 100.0),
            (STATUS_UPDATE, 5678.0),
            ("master/outstanding_offers", 2.0),
            ("master/slaves_active", 10.0),
            (FAILED, 7.0),
            ("master/tasks_finished", 50.0),
            (RUNNING, 100.0),
            ("master/tasks_staging", 1.0),
            ("master/uptime_secs", 1234.5),
        ];
        let values: Vec<(&str, f64)> = first.values.iter().map(|(k, v)| (k.as_str(), *v)).collect();
        assert_eq!(
            values, expected,
            "the leader's kept metrics, not the standby's"
        );
        assert!(
            first.rates.is_empty(),
            "no rates on a first poll: {first:?}"
        );
        assert_eq!(first.rate_window_seconds, None);
        assert_eq!(first.error, None);
        assert_eq!(first.interval_seconds, 0.3);
        assert!(first.collected_at.is_some());
        sensor
            .wait_status("connected, one poll counted", |s| {
                s.connected && s.events >= 1
            })
            .await;

        // The counters grow by the next poll.
        cluster.set(1, LAUNCH, 160.0);
        cluster.set(1, STATUS_UPDATE, 5878.0);
        cluster.set(1, RUNNING, 90.0);
        cluster.allow(1);
        let second = wait_board("the leader's second snapshot", |s| {
            value(s, LAUNCH) == Some(160.0)
        })
        .await;
        let window = second.rate_window_seconds.expect("a rate window");
        let gap = last_gap(&cluster.served());
        assert_close(window, gap, 0.05 + 0.1 * gap, "the rate window");
        assert!(window > 0.1, "{window}");
        let rates: Vec<&str> = second.rates.keys().map(String::as_str).collect();
        // Counters present in both polls only; tasks_running is a gauge.
        assert_eq!(
            rates,
            [
                "master/messages_deactivate_framework",
                LAUNCH,
                STATUS_UPDATE,
                FAILED,
                "master/tasks_finished"
            ]
        );
        assert_close(second.rates[LAUNCH], 60.0 / window, 1e-9, "launch rate");
        assert_close(
            second.rates[LAUNCH],
            60.0 / gap,
            0.25 * 60.0 / gap,
            "launch rate against the simulator's clock",
        );
        assert_close(
            second.rates[STATUS_UPDATE],
            200.0 / window,
            1e-9,
            "status update rate",
        );
        assert_eq!(second.rates[FAILED], 0.0);
        assert_eq!(value(&second, RUNNING), Some(90.0));

        // The next poll is held by the leader, so the board stays on the second one.
        let text = render_metrics();
        let label = format!("{{leader=\"{leader}\"}}");
        for line in [
            "# TYPE squall_mesos_metrics_up gauge".to_string(),
            "squall_mesos_metrics_up 1".to_string(),
            "# TYPE squall_mesos_master_messages_launch_tasks counter".to_string(),
            format!("squall_mesos_master_messages_launch_tasks{label} 160"),
            "# TYPE squall_mesos_master_tasks_running gauge".to_string(),
            format!("squall_mesos_master_tasks_running{label} 90"),
            format!("squall_mesos_master_uptime_secs{label} 1234.5"),
            format!("squall_mesos_master_elected{label} 1"),
            "# TYPE squall_mesos_master_messages_launch_tasks_per_second gauge".to_string(),
            format!(
                "squall_mesos_master_messages_launch_tasks_per_second{label} {}",
                second.rates[LAUNCH]
            ),
        ] {
            assert!(text.lines().any(|l| l == line), "no {line:?} in\n{text}");
        }
        assert!(!text.contains("cpus_total"), "{text}");
        assert!(!text.contains("tasks_running_per_second"), "{text}");

        // The documented snapshot endpoint, with credentials, on both masters; no redirect needed.
        let requests = cluster.requests();
        assert!(requests.iter().any(|r| r.master == 0));
        for request in &requests {
            assert_eq!(
                request.path, "/metrics/snapshot?timeout=5secs",
                "{request:?}"
            );
            assert_eq!(
                request.authorization.as_deref(),
                Some(BASIC_OPS),
                "{request:?}"
            );
        }
        let status = sensor.status();
        assert!(status.events >= 2 && status.errors == 0, "{status:?}");

        // A poll is under way (held by the leader): shutdown must not wait for it.
        wait_for("the third poll to reach the leader", || {
            let held = cluster.requests().iter().filter(|r| r.master == 1).count() >= 3;
            held.then_some(())
        })
        .await;
        sensor.stop().await;
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_redirect_finds_the_leader_and_a_leader_change_restarts_the_rates() {
        let _turn = SERIAL.lock().await;
        let cluster = Cluster::start(
            vec![standby_metrics(5000.0), leader_metrics(100.0)],
            Some(1),
            Some(1),
        );
        // Only the standby is configured: the leader is found through its /master/redirect.
        let sensor = RunningSensor::start(json!({
            "master": cluster.url(0),
            "metrics_interval": 0.3,
        }));
        let first = wait_board("the leader found through a redirect", |s| {
            s.leader.as_deref() == Some(&cluster.url(1)) && value(s, LAUNCH).is_some()
        })
        .await;
        assert_eq!(value(&first, LAUNCH), Some(100.0));
        assert!(first.rates.is_empty());
        let paths: Vec<(usize, String)> = cluster
            .requests()
            .into_iter()
            .map(|r| (r.master, r.path))
            .collect();
        // (The next poll may have reached the leader already.)
        assert_eq!(
            paths[..3],
            [
                (0, "/metrics/snapshot?timeout=5secs".to_string()),
                (0, "/master/redirect".to_string()),
                (1, "/metrics/snapshot?timeout=5secs".to_string()),
            ]
        );
        assert!(cluster.requests().iter().all(|r| r.authorization.is_none()));

        cluster.set(1, LAUNCH, 130.0);
        cluster.allow(1);
        let second = wait_board("a second poll of the leader", |s| {
            value(s, LAUNCH) == Some(130.0)
        })
        .await;
        let window = second.rate_window_seconds.expect("a rate window");
        assert_close(second.rates[LAUNCH], 30.0 / window, 1e-9, "launch rate");

        // Master 0 wins an election, with counters far above the old leader's.
        cluster.change(|s| {
            s.leader = Some(0);
            s.budget = Some(1);
        });
        let third = wait_board("the new leader", |s| {
            s.leader.as_deref() == Some(&cluster.url(0))
        })
        .await;
        assert_eq!(value(&third, LAUNCH), Some(5000.0));
        assert_eq!(value(&third, "master/elected"), Some(1.0));
        assert!(
            third.rates.is_empty(),
            "no rate across two masters: {third:?}"
        );
        assert_eq!(third.rate_window_seconds, None);
        sensor
            .wait_status("the leader change counted", |s| s.reconnects >= 1)
            .await;
        let text = render_metrics();
        assert!(!text.contains("_per_second"), "{text}");
        assert!(
            text.contains(&format!(
                "squall_mesos_master_messages_launch_tasks{{leader=\"{}\"}} 5000",
                cluster.url(0)
            )),
            "{text}"
        );

        cluster.set(0, LAUNCH, 5020.0);
        cluster.allow(1);
        let fourth = wait_board("a second poll of the new leader", |s| {
            value(s, LAUNCH) == Some(5020.0)
        })
        .await;
        let window = fourth.rate_window_seconds.expect("a rate window");
        assert_close(
            fourth.rates[LAUNCH],
            20.0 / window,
            1e-9,
            "the new leader's own rate",
        );
        sensor.stop().await;
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn unreachable_masters_are_reported_and_polling_goes_on() {
        let _turn = SERIAL.lock().await;
        let (dead1, dead2) = (dead_url(), dead_url());
        let sensor = RunningSensor::start(json!({
            "master": [dead1, dead2],
            "metrics_interval": 0.2,
        }));
        sensor
            .wait_status("two failed polls", |s| s.errors >= 2)
            .await;
        let status = sensor.status();
        assert!(!status.connected, "{status:?}");
        assert_eq!(status.events, 0, "{status:?}");
        let error = status.last_error.clone().unwrap();
        assert!(error.contains("no leading master found"), "{error}");
        assert!(error.contains(&dead1) && error.contains(&dead2), "{error}");

        let snapshot = wait_board("the error on the board", |s| s.error.is_some()).await;
        let shown = snapshot.error.clone().unwrap();
        assert!(shown.contains(&dead1) && shown.contains(&dead2), "{shown}");
        assert_eq!(snapshot.leader, None);
        assert_eq!(snapshot.collected_at, None);
        assert!(snapshot.values.is_empty());
        assert_eq!(render_metrics(), "", "nothing before a poll that worked");
        sensor.stop().await;
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn no_leader_and_answers_that_are_not_json_are_errors_until_one_is_elected() {
        let _turn = SERIAL.lock().await;
        // No leader: both stand by; master 0 answers HTML, master 1's redirect answers 503.
        let cluster = Cluster::start(
            vec![standby_metrics(1.0), leader_metrics(100.0)],
            None,
            None,
        );
        cluster.change(|s| s.garbled[0] = true);
        let sensor = RunningSensor::start(json!({
            "master": [cluster.url(0), cluster.url(1)],
            "metrics_interval": 0.2,
        }));
        let failed = wait_board("an error", |s| s.error.is_some()).await;
        let error = failed.error.clone().unwrap();
        assert!(error.contains("no leading master found"), "{error}");
        assert!(
            error.contains(&format!(
                "{}/metrics/snapshot?timeout=5secs: the answer is not a JSON object",
                cluster.url(0)
            )),
            "{error}"
        );
        assert!(
            error.contains(&format!(
                "{}/master/redirect: answered 503 Service Unavailable: No leader elected",
                cluster.url(1)
            )),
            "{error}"
        );
        assert_eq!(failed.leader, None);
        sensor
            .wait_status("errors counted", |s| s.errors >= 1 && !s.connected)
            .await;

        // Master 1 is elected: the next poll works and clears the error.
        cluster.change(|s| s.leader = Some(1));
        let recovered = wait_board("a leader", |s| s.leader.is_some()).await;
        assert_eq!(recovered.leader.as_deref(), Some(cluster.url(1).as_str()));
        assert_eq!(recovered.error, None);
        assert_eq!(value(&recovered, LAUNCH), Some(100.0));
        sensor
            .wait_status("connected again", |s| s.connected && s.events >= 1)
            .await;

        // Losing it again keeps the last figures, with the error beside them.
        cluster.change(|s| s.leader = None);
        let lost = wait_board("the error again", |s| s.error.is_some()).await;
        assert_eq!(lost.leader.as_deref(), Some(cluster.url(1).as_str()));
        assert_eq!(value(&lost, LAUNCH), Some(100.0));
        assert!(render_metrics()
            .lines()
            .any(|l| l == "squall_mesos_metrics_up 0"));
        sensor.stop().await;
    }

    #[test]
    fn the_kind_is_registered_emits_nothing_and_takes_the_packs_settings() {
        let kinds = builtin_sensors();
        let kind = kinds
            .iter()
            .find(|k| k.name == "mesos_metrics")
            .expect("mesos_metrics is listed in builtin_sensors");
        assert!((kind.trigger_types)().is_empty());
        // Every setting of the mesos pack's config schema.
        let settings = json!({
            "master": ["http://m1:5050", "http://m2:5050"],
            "principal": "ops",
            "secret": "s3cret",
            "metrics_interval": 15,
        });
        assert!((kind.build)(settings.as_object().unwrap()).is_ok());
        let error = match (kind.build)(
            json!({"master": "http://m1:5050", "metrics_interval": 0})
                .as_object()
                .unwrap(),
        ) {
            Ok(_) => panic!("an interval of 0 was accepted"),
            Err(e) => e,
        };
        assert!(error.contains("`metrics_interval`"), "{error}");
    }
}
