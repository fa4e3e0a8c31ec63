//! The Marathon sensor against a Marathon simulator on 127.0.0.1: a hand-written HTTP/1.1 server
//! that answers `GET /v2/events` with `text/event-stream` in chunked transfer encoding, as
//! Marathon does, and can split events at odd places, send keep-alive comments and drop the
//! connection. Marathon itself cannot run here; only the sensor's public interface is used.
//!
//! Tests wait on what the emitter received (or on the sensor's status) with deadlines; nothing
//! here sleeps to synchronise.

// The whole file is test code: its helpers (simulator, emitter) panic to fail the test, which
// clippy's allow-unwrap-in-tests only sees inside #[test] functions.
#![allow(clippy::unwrap_used)]

use std::collections::VecDeque;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use serde_json::{json, Value};
use squall_sensors::{
    builtin_sensors, marathon, EmitError, Emitter, MemoryCheckpoint, SensorContext, SensorEvent,
    SensorStatus,
};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{watch, Notify};
use tokio::task::JoinHandle;

/// /work/shared/fixtures/marathon-events.sse, verbatim.
const FIXTURE: &str = concat!(
    "event: event_stream_attached\n",
    "data: {\"remoteAddress\":\"10.0.0.5\",\"eventType\":\"event_stream_attached\",\"timestamp\":\"2026-11-25T10:00:00.000Z\"}\n",
    "\n",
    "event: status_update_event\n",
    "data: {\"eventType\":\"status_update_event\",\"timestamp\":\"2026-11-25T10:00:01.158Z\",\"slaveId\":\"c3946a13-S3\",\"taskId\":\"100008580_web.4f1c\",\"taskStatus\":\"TASK_RUNNING\",\"message\":\"\",\"appId\":\"/100008580/web\",\"host\":\"agent-3.dc1\",\"ipAddresses\":[{\"ipAddress\":\"10.2.25.27\",\"protocol\":\"IPv4\"}],\"ports\":[31372],\"version\":\"2026-11-25T09:59:00.000Z\"}\n",
    "\n",
    "event: status_update_event\n",
    "data: {\"eventType\":\"status_update_event\",\"timestamp\":\"2026-11-25T10:05:12.001Z\",\"slaveId\":\"c3946a13-S3\",\"taskId\":\"100008580_web.4f1c\",\"taskStatus\":\"TASK_FAILED\",\"message\":\"Command exited with status 137\",\"appId\":\"/100008580/web\",\"host\":\"agent-3.dc1\",\"ipAddresses\":[],\"ports\":[31372],\"version\":\"2026-11-25T09:59:00.000Z\"}\n",
    "\n",
    "event: deployment_success\n",
    "data: {\"eventType\":\"deployment_success\",\"timestamp\":\"2026-11-25T10:06:00.000Z\",\"id\":\"5ed4c0c5-9ff8-4a6f-a0cd-f57f59a34b43\",\"plan\":{\"id\":\"5ed4c0c5-9ff8-4a6f-a0cd-f57f59a34b43\"}}\n",
    "\n",
);

const DEADLINE: Duration = Duration::from_secs(10);
/// How long a stopped sensor may take to return.
const PROMPT: Duration = Duration::from_secs(2);

/// The fixture's events, one string each (blank line included).
fn fixture_events() -> Vec<String> {
    FIXTURE
        .split_inclusive("\n\n")
        .map(str::to_string)
        .collect()
}

// ---------------------------------------------------------------------------------------------
// The simulator.

/// What the simulator does on one connection, step by step.
#[derive(Clone, Debug)]
enum Step {
    /// Sends these bytes as one HTTP chunk.
    Chunk(Vec<u8>),
    /// Sends a status line other than 200 with a short body, then closes.
    Refuse(u16),
    /// Ends the body properly (zero-length chunk) and closes.
    End,
    /// Closes the socket without ending the body, as a crashed Marathon or a proxy would.
    Drop,
    /// Keeps the connection open until the client goes away.
    Hold,
}

struct Simulator {
    port: u16,
    /// Each accepted connection's request head (request line and headers).
    requests: Arc<Mutex<Vec<String>>>,
    server: JoinHandle<()>,
}

impl Simulator {
    /// Serves the scripts in order, one per connection; connections beyond them are held open.
    async fn start(scripts: Vec<Vec<Step>>) -> Simulator {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        let requests = Arc::new(Mutex::new(Vec::new()));
        let mut scripts: VecDeque<Vec<Step>> = scripts.into();
        let seen = requests.clone();
        let server = tokio::spawn(async move {
            loop {
                let Ok((socket, _)) = listener.accept().await else {
                    return;
                };
                let script = scripts.pop_front().unwrap_or_else(|| vec![Step::Hold]);
                let seen = seen.clone();
                tokio::spawn(serve(socket, script, seen));
            }
        });
        Simulator {
            port,
            requests,
            server,
        }
    }

    fn url(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    fn requests(&self) -> Vec<String> {
        self.requests.lock().unwrap().clone()
    }
}

impl Drop for Simulator {
    fn drop(&mut self) {
        self.server.abort();
    }
}

async fn serve(mut socket: TcpStream, script: Vec<Step>, seen: Arc<Mutex<Vec<String>>>) {
    socket.set_nodelay(true).unwrap();
    let mut head = Vec::new();
    let mut buf = [0u8; 1024];
    while !head.windows(4).any(|w| w == b"\r\n\r\n") {
        match socket.read(&mut buf).await {
            Ok(0) | Err(_) => return,
            Ok(n) => head.extend_from_slice(&buf[..n]),
        }
    }
    seen.lock()
        .unwrap()
        .push(String::from_utf8_lossy(&head).into_owned());

    if let Some(Step::Refuse(code)) = script.first() {
        let body = "{\"message\":\"refused\"}";
        let response = format!(
            "HTTP/1.1 {code} Refused\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
            body.len()
        );
        let _ = socket.write_all(response.as_bytes()).await;
        return;
    }
    let head = "HTTP/1.1 200 OK\r\nContent-Type: text/event-stream\r\nCache-Control: no-cache, no-store, must-revalidate\r\nTransfer-Encoding: chunked\r\n\r\n";
    if socket.write_all(head.as_bytes()).await.is_err() {
        return;
    }
    for step in script {
        match step {
            Step::Chunk(bytes) => {
                let mut chunk = format!("{:x}\r\n", bytes.len()).into_bytes();
                chunk.extend_from_slice(&bytes);
                chunk.extend_from_slice(b"\r\n");
                if socket.write_all(&chunk).await.is_err() {
                    return;
                }
                // Lets the client read this chunk on its own before the next one is written;
                // the tests do not rely on it, it only makes odd splits reach the parser.
                tokio::task::yield_now().await;
            }
            Step::End => {
                let _ = socket.write_all(b"0\r\n\r\n").await;
                return;
            }
            Step::Drop | Step::Refuse(_) => return,
            Step::Hold => {
                // Returns when the client closes its side (or the test ends).
                let _ = socket.read(&mut buf).await;
                return;
            }
        }
    }
}

/// Splits `bytes` into chunks at the given sizes, cycling through them.
fn chunked(bytes: &[u8], sizes: &[usize]) -> Vec<Step> {
    let mut steps = Vec::new();
    let mut rest = bytes;
    for size in sizes.iter().cycle() {
        if rest.is_empty() {
            break;
        }
        let (chunk, tail) = rest.split_at((*size).clamp(1, rest.len()));
        steps.push(Step::Chunk(chunk.to_vec()));
        rest = tail;
    }
    steps
}

// ---------------------------------------------------------------------------------------------
// The test emitter and a running sensor.

/// Records every event it is offered and every event it accepted, refusing the first
/// `failures` offers.
#[derive(Default)]
struct RecordingEmitter {
    accepted: Mutex<Vec<SensorEvent>>,
    offered: Mutex<Vec<SensorEvent>>,
    failures: AtomicUsize,
    /// Refuses everything, for shutdown during retries.
    always_fail: bool,
    changed: Notify,
}

impl RecordingEmitter {
    fn failing(times: usize) -> Self {
        Self {
            failures: AtomicUsize::new(times),
            ..Self::default()
        }
    }

    fn accepted(&self) -> Vec<SensorEvent> {
        self.accepted.lock().unwrap().clone()
    }

    fn offered(&self) -> Vec<SensorEvent> {
        self.offered.lock().unwrap().clone()
    }

    /// Waits until `done` holds for the accepted events, or fails the test at the deadline.
    async fn wait_for(&self, what: &str, done: impl Fn(&[SensorEvent]) -> bool) {
        let deadline = tokio::time::Instant::now() + DEADLINE;
        loop {
            let notified = self.changed.notified();
            tokio::pin!(notified);
            // Registered before checking, so an emit between the check and the wait is not missed.
            notified.as_mut().enable();
            if done(&self.accepted()) {
                return;
            }
            if tokio::time::timeout_at(deadline, notified).await.is_err() {
                panic!(
                    "timed out waiting for {what}; accepted: {:#?}",
                    self.accepted()
                );
            }
        }
    }

    async fn wait_for_count(&self, count: usize) {
        self.wait_for(&format!("{count} events"), |events| events.len() >= count)
            .await;
    }
}

impl Emitter for RecordingEmitter {
    fn emit(
        &self,
        event: SensorEvent,
    ) -> std::pin::Pin<Box<dyn std::future::Future<Output = Result<(), EmitError>> + Send + '_>>
    {
        Box::pin(async move {
            self.offered.lock().unwrap().push(event.clone());
            let refused = self.always_fail
                || self
                    .failures
                    .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |n| n.checked_sub(1))
                    .is_ok();
            let result = if refused {
                Err(EmitError("store unavailable".into()))
            } else {
                self.accepted.lock().unwrap().push(event);
                Ok(())
            };
            self.changed.notify_waiters();
            result
        })
    }
}

struct Running {
    emitter: Arc<RecordingEmitter>,
    status: Arc<SensorStatus>,
    shutdown: watch::Sender<bool>,
    task: JoinHandle<()>,
}

impl Running {
    /// Signals shutdown and asserts the sensor returns promptly.
    async fn stop(self) {
        self.shutdown.send(true).unwrap();
        tokio::time::timeout(PROMPT, self.task)
            .await
            .expect("the sensor did not stop promptly")
            .unwrap();
        assert!(!self.status.view().connected);
    }

    /// Polls the sensor's status until `done` holds, or fails the test at the deadline.
    async fn wait_for_status(
        &self,
        what: &str,
        done: impl Fn(&squall_sensors::SensorStatusView) -> bool,
    ) {
        let deadline = tokio::time::Instant::now() + DEADLINE;
        loop {
            let view = self.status.view();
            if done(&view) {
                return;
            }
            assert!(
                tokio::time::Instant::now() < deadline,
                "timed out waiting for {what}; status: {view:?}"
            );
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }
}

fn start_sensor(settings: Value, emitter: RecordingEmitter) -> Running {
    let kind = marathon::kind();
    let sensor = (kind.build)(settings.as_object().unwrap()).unwrap();
    let emitter = Arc::new(emitter);
    let status = Arc::new(SensorStatus::default());
    let (shutdown, receiver) = watch::channel(false);
    let ctx = SensorContext {
        emitter: emitter.clone(),
        checkpoint: Arc::new(MemoryCheckpoint::default()),
        status: status.clone(),
        shutdown: receiver,
    };
    let task = tokio::spawn(sensor.run(ctx));
    Running {
        emitter,
        status,
        shutdown,
        task,
    }
}

/// The value of a request header, its name matched without regard to case.
fn header<'a>(request: &'a str, name: &str) -> Option<&'a str> {
    request.lines().skip(1).find_map(|line| {
        let (key, value) = line.split_once(':')?;
        key.eq_ignore_ascii_case(name).then(|| value.trim())
    })
}

fn settings_for(sim: &Simulator) -> Value {
    json!({"url": sim.url(), "reconnect_max_seconds": 1})
}

fn triggers(events: &[SensorEvent]) -> Vec<&str> {
    events.iter().map(|e| e.trigger.as_str()).collect()
}

fn task_statuses(events: &[SensorEvent]) -> Vec<&str> {
    events
        .iter()
        .filter_map(|e| e.payload["task_status"].as_str())
        .collect()
}

/// Asserts the fixture's four events arrived, typed and filled in.
fn assert_fixture_received(events: &[SensorEvent]) {
    assert_eq!(
        triggers(events),
        [
            "marathon.event",
            "marathon.status_update",
            "marathon.status_update",
            "marathon.deployment_success"
        ]
    );
    assert_eq!(events[0].payload["event_type"], "event_stream_attached");
    assert_eq!(events[0].payload["data"]["remoteAddress"], "10.0.0.5");

    let running = &events[1].payload;
    assert_eq!(running["app_id"], "/100008580/web");
    assert_eq!(running["appId"], "/100008580/web");
    assert_eq!(running["task_id"], "100008580_web.4f1c");
    assert_eq!(running["task_status"], "TASK_RUNNING");
    assert_eq!(running["taskStatus"], "TASK_RUNNING");
    assert_eq!(running["host"], "agent-3.dc1");
    assert_eq!(running["slave_id"], "c3946a13-S3");
    assert_eq!(running["ports"], json!([31372]));
    assert_eq!(running["terminal"], false);

    let failed = &events[2].payload;
    assert_eq!(failed["task_status"], "TASK_FAILED");
    assert_eq!(failed["message"], "Command exited with status 137");
    assert_eq!(failed["terminal"], true);
    assert_eq!(
        events[2].occurred_at.to_rfc3339(),
        "2026-11-25T10:05:12.001+00:00"
    );

    assert_eq!(
        events[3].payload["deployment_id"],
        "5ed4c0c5-9ff8-4a6f-a0cd-f57f59a34b43"
    );
}

// ---------------------------------------------------------------------------------------------
// Tests.

#[tokio::test]
async fn fixture_events_arrive_typed_whatever_the_chunking() {
    let crlf = FIXTURE.replace('\n', "\r\n");
    let cases: Vec<(&str, Vec<Step>)> = vec![
        ("whole", vec![Step::Chunk(FIXTURE.as_bytes().to_vec())]),
        ("one byte per chunk", chunked(FIXTURE.as_bytes(), &[1])),
        (
            "odd sizes",
            chunked(FIXTURE.as_bytes(), &[3, 17, 1, 250, 2, 64]),
        ),
        (
            "CRLF, odd sizes",
            chunked(crlf.as_bytes(), &[5, 1, 1, 90, 7]),
        ),
        (
            "keep-alive comments between and inside events",
            fixture_events()
                .iter()
                .flat_map(|event| {
                    let (head, tail) = event.split_at(event.find('\n').unwrap() + 1);
                    [
                        Step::Chunk(b":\n".to_vec()),
                        Step::Chunk(head.as_bytes().to_vec()),
                        Step::Chunk(b": keep-alive\n".to_vec()),
                        Step::Chunk(tail.as_bytes().to_vec()),
                    ]
                })
                .collect(),
        ),
    ];
    for (name, mut script) in cases {
        script.push(Step::Hold);
        let sim = Simulator::start(vec![script]).await;
        let running = start_sensor(settings_for(&sim), RecordingEmitter::default());
        running.emitter.wait_for_count(4).await;
        let events = running.emitter.accepted();
        assert_eq!(events.len(), 4, "{name}");
        assert_fixture_received(&events);
        let view = running.status.view();
        assert!(view.connected, "{name}");
        assert_eq!(view.events, 4, "{name}");
        assert_eq!(view.reconnects, 0, "{name}");
        running.stop().await;
    }
}

#[tokio::test]
async fn subscribes_with_filters_accept_header_and_basic_auth() {
    let sim = Simulator::start(vec![vec![
        Step::Chunk(fixture_events()[1].as_bytes().to_vec()),
        Step::Hold,
    ]])
    .await;
    let running = start_sensor(
        json!({
            "url": format!("{}/", sim.url()),
            "event_types": ["status_update_event", "deployment_success"],
            "username": "ops",
            "password": "s3cret",
        }),
        RecordingEmitter::default(),
    );
    running.emitter.wait_for_count(1).await;
    let requests = sim.requests();
    let request = &requests[0];
    assert!(
        request.starts_with(
            "GET /v2/events?event_type=status_update_event&event_type=deployment_success HTTP/1.1\r\n"
        ),
        "{request}"
    );
    assert_eq!(header(request, "accept"), Some("text/event-stream"));
    // base64("ops:s3cret")
    assert_eq!(
        header(request, "authorization"),
        Some("Basic b3BzOnMzY3JldA==")
    );
    running.stop().await;
}

#[tokio::test]
async fn reconnects_after_the_server_drops_the_connection_and_continues() {
    let events = fixture_events();
    let third = events[2].as_bytes();
    // First connection: two events, half of the third, then the socket is dropped mid-body.
    // Second connection: the body ends cleanly after the third event.
    // Third connection: the last event, then held open.
    let sim = Simulator::start(vec![
        vec![
            Step::Chunk(events[0].as_bytes().to_vec()),
            Step::Chunk(events[1].as_bytes().to_vec()),
            Step::Chunk(third[..third.len() / 2].to_vec()),
            Step::Drop,
        ],
        vec![Step::Chunk(third.to_vec()), Step::End],
        vec![Step::Chunk(events[3].as_bytes().to_vec()), Step::Hold],
    ])
    .await;
    let running = start_sensor(settings_for(&sim), RecordingEmitter::default());
    running.emitter.wait_for_count(4).await;
    running
        .wait_for_status("the third connection", |view| view.connected)
        .await;

    let received = running.emitter.accepted();
    // The half-sent event was discarded, not emitted truncated; the resent one came once.
    assert_fixture_received(&received);
    assert_eq!(sim.requests().len(), 3);
    let view = running.status.view();
    assert_eq!(view.reconnects, 2);
    assert_eq!(view.events, 4);
    assert!(view.errors >= 2, "{view:?}");
    assert!(view.last_error.is_some());
    running.stop().await;
}

#[tokio::test]
async fn retries_after_an_http_error_status() {
    let sim = Simulator::start(vec![
        vec![Step::Refuse(503)],
        vec![
            Step::Chunk(fixture_events()[2].as_bytes().to_vec()),
            Step::Hold,
        ],
    ])
    .await;
    let running = start_sensor(settings_for(&sim), RecordingEmitter::default());
    running.emitter.wait_for_count(1).await;
    assert_eq!(task_statuses(&running.emitter.accepted()), ["TASK_FAILED"]);
    let view = running.status.view();
    assert_eq!(view.reconnects, 1);
    assert!(
        view.last_error
            .as_deref()
            .unwrap_or_default()
            .contains("503"),
        "{view:?}"
    );
    running.stop().await;
}

#[tokio::test]
async fn an_event_the_emitter_refuses_is_offered_again_until_accepted() {
    let sim = Simulator::start(vec![vec![
        Step::Chunk(FIXTURE.as_bytes().to_vec()),
        Step::Hold,
    ]])
    .await;
    let running = start_sensor(settings_for(&sim), RecordingEmitter::failing(2));
    running.emitter.wait_for_count(4).await;

    let offered = running.emitter.offered();
    // The first event was offered three times, unchanged; the rest once each.
    assert_eq!(offered.len(), 6);
    assert_eq!(offered[0], offered[1]);
    assert_eq!(offered[1], offered[2]);
    assert_fixture_received(&offered[2..]);
    assert_fixture_received(&running.emitter.accepted());

    let view = running.status.view();
    assert_eq!(view.events, 4);
    assert_eq!(view.errors, 2);
    assert_eq!(view.reconnects, 0);
    running.stop().await;
}

#[tokio::test]
async fn stops_promptly_while_connected_and_idle() {
    let sim = Simulator::start(vec![vec![Step::Chunk(b": hello\n".to_vec()), Step::Hold]]).await;
    let running = start_sensor(settings_for(&sim), RecordingEmitter::default());
    running
        .wait_for_status("a connection", |view| view.connected)
        .await;
    running.stop().await;
}

#[tokio::test]
async fn stops_promptly_while_retrying_a_refused_event() {
    let sim = Simulator::start(vec![vec![
        Step::Chunk(fixture_events()[1].as_bytes().to_vec()),
        Step::Hold,
    ]])
    .await;
    let emitter = RecordingEmitter {
        always_fail: true,
        ..RecordingEmitter::default()
    };
    // A long backoff ceiling, so the sensor is certainly asleep between offers when stopped.
    let running = start_sensor(
        json!({"url": sim.url(), "reconnect_max_seconds": 600}),
        emitter,
    );
    running
        .wait_for_status("two refused offers", |view| view.errors >= 2)
        .await;
    assert!(running.emitter.accepted().is_empty());
    running.stop().await;
}

#[tokio::test]
async fn stops_promptly_while_marathon_is_unreachable() {
    // A port that was just free on 127.0.0.1: connections to it are refused.
    let port = {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        listener.local_addr().unwrap().port()
    };
    let running = start_sensor(
        json!({"url": format!("http://127.0.0.1:{port}"), "reconnect_max_seconds": 600}),
        RecordingEmitter::default(),
    );
    running
        .wait_for_status("a failed connection", |view| view.errors >= 1)
        .await;
    assert!(!running.status.view().connected);
    running.stop().await;
}

#[test]
fn is_a_builtin_sensor_declaring_its_trigger_types() {
    let kinds = builtin_sensors();
    let kind = kinds
        .iter()
        .find(|k| k.name == "marathon")
        .expect("marathon is listed in builtin_sensors");
    let refs: Vec<&str> = (kind.trigger_types)().iter().map(|t| t.reference).collect();
    for expected in [
        "marathon.status_update",
        "marathon.deployment_success",
        "marathon.deployment_failed",
        "marathon.instance_changed",
        "marathon.event",
    ] {
        assert!(refs.contains(&expected), "{expected} missing from {refs:?}");
    }
    let unknown = json!({"url": "http://127.0.0.1:8080", "reconnect_max": 5});
    let err = (kind.build)(unknown.as_object().unwrap())
        .err()
        .expect("an unknown setting is an error");
    assert!(err.contains("reconnect_max"), "{err}");
}
