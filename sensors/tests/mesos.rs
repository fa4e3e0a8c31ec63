//! End-to-end tests of the `mesos` sensor against a simulated Mesos master.
//!
//! Mesos cannot run here, so [`Master`] simulates one on 127.0.0.1: a hand-written HTTP/1.1
//! server that answers `POST /api/v1` SUBSCRIBE the way the operator API documents it (a
//! chunked response carrying a RecordIO stream of JSON events: SUBSCRIBED first, then changes
//! and HEARTBEATs), and that can misbehave on cue: frames cut at odd places, a connection
//! dropped mid-record, heartbeats that stop, a 307 to the leading master. The simulator writes
//! RecordIO by hand rather than through the crate's decoder, so a shared mistake cannot hide.
//!
//! Tests wait on what the sensor hands the engine (a collecting [`Emitter`]) and on the
//! requests the simulator receives, always with a deadline; nothing sleeps to synchronise.

// A failed unwrap in a test is a failed test, with its message.
#![allow(clippy::unwrap_used)]

use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use serde_json::{json, Value};
use squall_sensors::{
    builtin_sensors, EmitError, Emitter, MemoryCheckpoint, SensorContext, SensorEvent,
    SensorStatus, SensorStatusView,
};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{watch, Notify};
use tokio::task::JoinHandle;
use tokio::time::Instant;

/// Generous: a loaded CI machine must not fail a correct sensor.
const DEADLINE: Duration = Duration::from_secs(20);

// ---------------------------------------------------------------------------------------------
// The operator API's wire format.

/// One RecordIO frame: the record's length in decimal, `\n`, the record.
fn frame(event: &Value) -> Vec<u8> {
    let body = event.to_string();
    let mut out = format!("{}\n", body.len()).into_bytes();
    out.extend_from_slice(body.as_bytes());
    out
}

fn subscribed(heartbeat_interval_seconds: f64) -> Value {
    json!({"type": "SUBSCRIBED", "subscribed": {
        "get_state": {"get_tasks": {"tasks": []}, "get_agents": {"agents": []},
                      "get_frameworks": {"frameworks": []}},
        "heartbeat_interval_seconds": heartbeat_interval_seconds}})
}

fn heartbeat() -> Value {
    json!({"type": "HEARTBEAT"})
}

const FRAMEWORK: &str = "49154f1b-8cf6-4421-bf13-8bd11dccd1f1-0001";
const AGENT: &str = "c3946a13-1f2e-4a5b-9c8d-0e1f2a3b4c5d-S3";

/// TASK_UPDATED as a master really sends it: ids inside `status`, not at the top level.
fn task_updated(task: &str, state: &str) -> Value {
    json!({"type": "TASK_UPDATED", "task_updated": {
        "framework_id": {"value": FRAMEWORK},
        "status": {"task_id": {"value": task}, "state": state, "source": "SOURCE_EXECUTOR",
                   "agent_id": {"value": AGENT}, "timestamp": 1764062400.12, "healthy": true},
        "state": state}})
}

fn task_added(task: &str) -> Value {
    json!({"type": "TASK_ADDED", "task_added": {"task": {
        "name": "web", "task_id": {"value": task}, "framework_id": {"value": FRAMEWORK},
        "agent_id": {"value": AGENT}, "state": "TASK_STAGING", "resources": [],
        "labels": {"labels": [{"key": "app", "value": "shop"}]}}}})
}

fn agent_removed() -> Value {
    json!({"type": "AGENT_REMOVED", "agent_removed": {"agent_id": {"value": AGENT}}})
}

/// How the simulator cuts a stream into HTTP chunks.
#[derive(Debug, Clone, Copy)]
enum Chunking {
    /// One frame per chunk, as Mesos itself writes.
    Whole,
    /// Every byte its own chunk.
    OneByte,
    /// Each length cut in two, split from its record, and the record cut in half.
    LengthSplit,
    /// Two frames and the start of a third in one chunk, the rest in 37-byte pieces.
    Merged,
}

fn chunked(frames: &[Vec<u8>], how: Chunking) -> Vec<Step> {
    let chunks: Vec<Vec<u8>> = match how {
        Chunking::Whole => frames.to_vec(),
        Chunking::OneByte => frames.concat().into_iter().map(|b| vec![b]).collect(),
        Chunking::LengthSplit => frames
            .iter()
            .flat_map(|f| {
                let newline = f.iter().position(|b| *b == b'\n').unwrap();
                let half = newline + 1 + (f.len() - newline - 1) / 2;
                vec![
                    f[..1].to_vec(),
                    f[1..newline].to_vec(),
                    f[newline..half].to_vec(),
                    f[half..].to_vec(),
                ]
            })
            .collect(),
        Chunking::Merged => {
            let all = frames.concat();
            let first = (frames[0].len() + frames[1].len() + 2).min(all.len());
            let mut chunks = vec![all[..first].to_vec()];
            chunks.extend(all[first..].chunks(37).map(<[u8]>::to_vec));
            chunks
        }
    };
    chunks
        .into_iter()
        // An empty chunk would end the HTTP body.
        .filter(|c| !c.is_empty())
        .map(Step::Chunk)
        .collect()
}

// ---------------------------------------------------------------------------------------------
// The simulated master.

/// What the simulator does on a SUBSCRIBE stream, in order.
#[derive(Debug, Clone)]
enum Step {
    /// Bytes sent as one HTTP chunk.
    Chunk(Vec<u8>),
    /// `count` HEARTBEAT frames, one every `every`.
    Heartbeats { count: usize, every: Duration },
    /// Close the TCP connection without ending the chunked body.
    Drop,
    /// End the chunked body cleanly (a master shutting the stream).
    End,
}

/// How the simulator answers one connection. A stream whose steps run out stays open and
/// silent until the client leaves.
#[derive(Debug, Clone)]
enum Reply {
    Stream(Vec<Step>),
    Redirect(String),
    Status(u16, &'static str),
}

fn stream(events: &[Value]) -> Reply {
    Reply::Stream(events.iter().map(|e| Step::Chunk(frame(e))).collect())
}

#[derive(Debug, Clone)]
struct Request {
    method: String,
    path: String,
    headers: Vec<(String, String)>,
    body: String,
}

impl Request {
    fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }
}

#[derive(Default)]
struct RequestLog {
    requests: Mutex<Vec<(Request, Instant)>>,
    notify: Notify,
}

/// A simulated Mesos master: answers its `n`-th connection with `replies[n]`, and any later
/// one with a healthy stream that only says SUBSCRIBED.
struct Master {
    addr: SocketAddr,
    log: Arc<RequestLog>,
    accept: JoinHandle<()>,
}

impl Master {
    async fn start(replies: Vec<Reply>) -> Master {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let log = Arc::new(RequestLog::default());
        let replies = Arc::new(replies);
        let next = Arc::new(AtomicUsize::new(0));
        let accept = {
            let log = log.clone();
            tokio::spawn(async move {
                while let Ok((socket, _)) = listener.accept().await {
                    let n = next.fetch_add(1, Ordering::SeqCst);
                    let reply = replies
                        .get(n)
                        .cloned()
                        .unwrap_or_else(|| stream(&[subscribed(15.0)]));
                    tokio::spawn(serve(socket, reply, log.clone()));
                }
            })
        };
        Master { addr, log, accept }
    }

    fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    fn requests(&self) -> Vec<Request> {
        let requests = self.log.requests.lock().unwrap();
        requests.iter().map(|(r, _)| r.clone()).collect()
    }

    /// Waits until `n` requests arrived; returns when each did.
    async fn wait_requests(&self, n: usize) -> Vec<Instant> {
        wait_until(
            &format!("{n} requests at {}", self.addr),
            &self.log.notify,
            || {
                let requests = self.log.requests.lock().unwrap();
                (requests.len() >= n).then(|| requests.iter().map(|(_, at)| *at).collect())
            },
        )
        .await
    }
}

impl Drop for Master {
    fn drop(&mut self) {
        self.accept.abort();
    }
}

async fn serve(mut socket: TcpStream, reply: Reply, log: Arc<RequestLog>) {
    // Without this, the kernel would merge our tiny chunks and the odd cuts would not reach
    // the client as cut.
    let _ = socket.set_nodelay(true);
    let Some(request) = read_request(&mut socket).await else {
        return;
    };
    log.requests.lock().unwrap().push((request, Instant::now()));
    log.notify.notify_waiters();

    match reply {
        Reply::Redirect(location) => {
            let head = format!(
                "HTTP/1.1 307 Temporary Redirect\r\nLocation: {location}\r\nContent-Length: 0\r\nConnection: close\r\n\r\n"
            );
            let _ = socket.write_all(head.as_bytes()).await;
        }
        Reply::Status(code, body) => {
            let head = format!(
                "HTTP/1.1 {code} Simulated\r\nContent-Type: text/plain\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
                body.len()
            );
            let _ = socket.write_all(head.as_bytes()).await;
        }
        Reply::Stream(steps) => {
            // As Mesos answers SUBSCRIBE: chunked, keep-alive, no Content-Length.
            let head = "HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nTransfer-Encoding: chunked\r\nConnection: keep-alive\r\n\r\n";
            if socket.write_all(head.as_bytes()).await.is_err() {
                return;
            }
            for step in steps {
                let sent = match step {
                    Step::Chunk(bytes) => write_chunk(&mut socket, &bytes).await,
                    Step::Heartbeats { count, every } => {
                        let mut ok = true;
                        for _ in 0..count {
                            tokio::time::sleep(every).await;
                            ok = write_chunk(&mut socket, &frame(&heartbeat())).await;
                            if !ok {
                                break;
                            }
                        }
                        ok
                    }
                    Step::Drop => return,
                    Step::End => {
                        let _ = socket.write_all(b"0\r\n\r\n").await;
                        return;
                    }
                };
                if !sent {
                    return;
                }
            }
            // Silent but open, like a master whose heartbeats stopped, until the client
            // leaves.
            let mut sink = [0u8; 256];
            while matches!(socket.read(&mut sink).await, Ok(n) if n > 0) {}
        }
    }
}

async fn write_chunk(socket: &mut TcpStream, bytes: &[u8]) -> bool {
    let mut out = format!("{:x}\r\n", bytes.len()).into_bytes();
    out.extend_from_slice(bytes);
    out.extend_from_slice(b"\r\n");
    socket.write_all(&out).await.is_ok()
}

async fn read_request(socket: &mut TcpStream) -> Option<Request> {
    let mut buf = Vec::new();
    let mut chunk = [0u8; 1024];
    let head_end = loop {
        if let Some(at) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
            break at;
        }
        let n = socket.read(&mut chunk).await.ok()?;
        if n == 0 {
            return None;
        }
        buf.extend_from_slice(&chunk[..n]);
    };
    let head = String::from_utf8_lossy(&buf[..head_end]).to_string();
    let mut lines = head.split("\r\n");
    let mut request_line = lines.next()?.split(' ');
    let method = request_line.next()?.to_string();
    let path = request_line.next()?.to_string();
    let headers: Vec<(String, String)> = lines
        .filter_map(|line| line.split_once(':'))
        .map(|(n, v)| (n.trim().to_string(), v.trim().to_string()))
        .collect();
    let length: usize = headers
        .iter()
        .find(|(n, _)| n.eq_ignore_ascii_case("content-length"))
        .and_then(|(_, v)| v.parse().ok())
        .unwrap_or(0);
    let mut body = buf[head_end + 4..].to_vec();
    while body.len() < length {
        let n = socket.read(&mut chunk).await.ok()?;
        if n == 0 {
            return None;
        }
        body.extend_from_slice(&chunk[..n]);
    }
    Some(Request {
        method,
        path,
        headers,
        body: String::from_utf8_lossy(&body).to_string(),
    })
}

/// A port nothing listens on: bound, then released.
async fn dead_url() -> String {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    drop(listener);
    format!("http://{addr}")
}

// ---------------------------------------------------------------------------------------------
// The engine's side: a collecting emitter and a running sensor.

/// Stores events in memory; can refuse the first few, like an engine whose disk is full.
#[derive(Default)]
struct Collector {
    events: Mutex<Vec<SensorEvent>>,
    notify: Notify,
    refuse_first: AtomicUsize,
}

impl Emitter for Collector {
    fn emit(
        &self,
        event: SensorEvent,
    ) -> std::pin::Pin<Box<dyn std::future::Future<Output = Result<(), EmitError>> + Send + '_>>
    {
        Box::pin(async move {
            let refuse = self
                .refuse_first
                .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |n| n.checked_sub(1))
                .is_ok();
            if refuse {
                return Err(EmitError("store unavailable (simulated)".to_string()));
            }
            self.events.lock().unwrap().push(event);
            self.notify.notify_waiters();
            Ok(())
        })
    }
}

impl Collector {
    async fn wait_events(&self, n: usize) -> Vec<SensorEvent> {
        wait_until(&format!("{n} events"), &self.notify, || {
            let events = self.events.lock().unwrap();
            (events.len() >= n).then(|| events.clone())
        })
        .await
    }

    fn events(&self) -> Vec<SensorEvent> {
        self.events.lock().unwrap().clone()
    }
}

/// Polls `check` until it gives a value, waking on `notify` or every 10 ms (status counters
/// have no notification), and fails the test at the deadline.
async fn wait_until<T>(what: &str, notify: &Notify, mut check: impl FnMut() -> Option<T>) -> T {
    let deadline = Instant::now() + DEADLINE;
    loop {
        let notified = notify.notified();
        tokio::pin!(notified);
        notified.as_mut().enable();
        if let Some(value) = check() {
            return value;
        }
        if Instant::now() >= deadline {
            panic!("timed out waiting for {what}");
        }
        tokio::select! {
            _ = notified => {}
            _ = tokio::time::sleep(Duration::from_millis(10)) => {}
        }
    }
}

struct RunningSensor {
    collector: Arc<Collector>,
    status: Arc<SensorStatus>,
    shutdown: watch::Sender<bool>,
    task: JoinHandle<()>,
}

impl RunningSensor {
    fn start(settings: Value) -> RunningSensor {
        Self::start_with(settings, Arc::new(Collector::default()))
    }

    /// Builds the sensor through the registry, as the engine does.
    fn start_with(settings: Value, collector: Arc<Collector>) -> RunningSensor {
        let kind = builtin_sensors()
            .into_iter()
            .find(|k| k.name == "mesos")
            .unwrap();
        let sensor = (kind.build)(settings.as_object().unwrap()).unwrap();
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

    /// Waits until `n` events were stored and counted in the status.
    async fn wait_events(&self, n: usize) -> Vec<SensorEvent> {
        let events = self.collector.wait_events(n).await;
        // The sensor counts an event once `emit` returned, a moment after the collector saw it.
        self.wait_status(&format!("{n} events counted"), |s| s.events >= n as u64)
            .await;
        events
    }

    fn status(&self) -> SensorStatusView {
        self.status.view()
    }

    async fn wait_status(&self, what: &str, check: impl Fn(&SensorStatusView) -> bool) {
        let never = Notify::new();
        wait_until(what, &never, || check(&self.status.view()).then_some(())).await;
    }

    /// Signals shutdown and requires the sensor to finish promptly.
    async fn stop(self) {
        self.shutdown.send(true).unwrap();
        tokio::time::timeout(Duration::from_secs(3), self.task)
            .await
            .expect("the sensor did not stop within 3 s of shutdown")
            .unwrap();
    }
}

fn states(events: &[SensorEvent]) -> Vec<(String, String)> {
    events
        .iter()
        .filter(|e| e.trigger == "mesos.task_update")
        .map(|e| {
            (
                e.payload["task_id"].as_str().unwrap().to_string(),
                e.payload["state"].as_str().unwrap().to_string(),
            )
        })
        .collect()
}

fn pair(task: &str, state: &str) -> (String, String) {
    (task.to_string(), state.to_string())
}

// ---------------------------------------------------------------------------------------------
// The tests.

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn task_updates_are_parsed_whatever_the_chunking() {
    let frames: Vec<Vec<u8>> = [
        subscribed(15.0),
        heartbeat(),
        task_added("web.1"),
        task_updated("web.1", "TASK_RUNNING"),
        heartbeat(),
        task_updated("web.1", "TASK_FAILED"),
        agent_removed(),
    ]
    .iter()
    .map(frame)
    .collect();

    for how in [
        Chunking::Whole,
        Chunking::OneByte,
        Chunking::LengthSplit,
        Chunking::Merged,
    ] {
        let master = Master::start(vec![Reply::Stream(chunked(&frames, how))]).await;
        let sensor = RunningSensor::start(json!({"master": master.url()}));
        let events = sensor.wait_events(4).await;

        let triggers: Vec<&str> = events.iter().map(|e| e.trigger.as_str()).collect();
        assert_eq!(
            triggers,
            [
                "mesos.task_added",
                "mesos.task_update",
                "mesos.task_update",
                "mesos.agent_removed"
            ],
            "{how:?}"
        );
        assert_eq!(
            events[0].payload["labels"],
            json!({"app": "shop"}),
            "{how:?}"
        );
        let failed = &events[2].payload;
        assert_eq!(failed["task_id"], "web.1", "{how:?}");
        assert_eq!(failed["framework_id"], FRAMEWORK, "{how:?}");
        assert_eq!(failed["agent_id"], AGENT, "{how:?}");
        assert_eq!(failed["state"], "TASK_FAILED", "{how:?}");
        assert_eq!(failed["terminal"], true, "{how:?}");
        assert_eq!(events[1].payload["terminal"], false, "{how:?}");
        assert_eq!(events[3].payload["agent_id"], AGENT, "{how:?}");

        // The request is the documented SUBSCRIBE call.
        let requests = master.requests();
        assert_eq!(requests.len(), 1, "{how:?}");
        let request = &requests[0];
        assert_eq!(request.method, "POST");
        assert_eq!(request.path, "/api/v1");
        assert_eq!(request.header("content-type"), Some("application/json"));
        assert_eq!(request.header("accept"), Some("application/json"));
        assert_eq!(
            serde_json::from_str::<Value>(&request.body).unwrap(),
            json!({"type": "SUBSCRIBE"})
        );
        assert_eq!(request.header("authorization"), None);

        let status = sensor.status();
        assert!(status.connected, "{how:?}");
        assert_eq!(
            (status.events, status.reconnects, status.errors),
            (4, 0, 0),
            "{how:?}: {status:?}"
        );
        sensor.stop().await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn resubscribes_after_a_dropped_connection_and_an_ended_stream() {
    let failed = frame(&task_updated("web.1", "TASK_FAILED"));
    let master = Master::start(vec![
        // Cut inside a record, then the connection dies: nothing of that record may surface.
        Reply::Stream(vec![
            Step::Chunk(frame(&subscribed(15.0))),
            Step::Chunk(frame(&task_updated("web.1", "TASK_RUNNING"))),
            Step::Chunk(failed[..failed.len() / 2].to_vec()),
            Step::Drop,
        ]),
        // The master ends the stream cleanly (as when it loses leadership).
        Reply::Stream(vec![
            Step::Chunk(frame(&subscribed(15.0))),
            Step::Chunk(failed.clone()),
            Step::End,
        ]),
        stream(&[subscribed(15.0), task_updated("web.2", "TASK_RUNNING")]),
    ])
    .await;
    let sensor = RunningSensor::start(json!({"master": master.url()}));

    let events = sensor.wait_events(3).await;
    assert_eq!(
        states(&events),
        [
            pair("web.1", "TASK_RUNNING"),
            pair("web.1", "TASK_FAILED"),
            pair("web.2", "TASK_RUNNING"),
        ]
    );
    master.wait_requests(3).await;
    sensor
        .wait_status("connected after the third subscription", |s| s.connected)
        .await;
    let status = sensor.status();
    assert_eq!(
        (status.events, status.reconnects, status.errors),
        (3, 2, 2),
        "{status:?}"
    );
    assert!(
        status
            .last_error
            .as_deref()
            .unwrap()
            .contains("master closed the event stream"),
        "{status:?}"
    );
    assert_eq!(
        sensor.collector.events().len(),
        3,
        "no event from the cut record"
    );
    sensor.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn heartbeats_keep_the_stream_and_their_absence_ends_it() {
    // Interval 0.2 s and the default factor of 5: one second of silence kills the stream. The
    // first connection beats for two seconds (so the watchdog must be fed by heartbeats),
    // sends one update, then goes silent.
    let master = Master::start(vec![
        Reply::Stream(vec![
            Step::Chunk(frame(&subscribed(0.2))),
            Step::Heartbeats {
                count: 10,
                every: Duration::from_millis(200),
            },
            Step::Chunk(frame(&task_updated("web.1", "TASK_RUNNING"))),
        ]),
        stream(&[subscribed(0.2), task_updated("web.1", "TASK_KILLED")]),
    ])
    .await;
    let sensor = RunningSensor::start(json!({"master": master.url()}));

    let first = sensor.wait_events(1).await;
    let silence_began = Instant::now();
    assert_eq!(states(&first), [pair("web.1", "TASK_RUNNING")]);
    assert_eq!(
        master.requests().len(),
        1,
        "heartbeats flowing must not trigger a resubscription"
    );

    let requests = master.wait_requests(2).await;
    let waited = requests[1].saturating_duration_since(silence_began);
    assert!(
        waited >= Duration::from_millis(800),
        "resubscribed after {waited:?}, before 5 intervals of silence"
    );
    assert!(
        waited <= Duration::from_secs(5),
        "resubscribed only after {waited:?}"
    );

    let events = sensor.wait_events(2).await;
    assert_eq!(states(&events)[1], pair("web.1", "TASK_KILLED"));
    assert_eq!(events[1].payload["terminal"], true);
    let status = sensor.status();
    assert_eq!((status.reconnects, status.errors), (1, 1), "{status:?}");
    assert!(
        status.last_error.as_deref().unwrap().contains("heartbeat"),
        "{status:?}"
    );
    sensor.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn follows_a_redirect_to_the_leader_keeping_credentials() {
    let leader = Master::start(vec![stream(&[
        subscribed(15.0),
        task_updated("web.1", "TASK_RUNNING"),
    ])])
    .await;
    // What a non-leading Mesos master answers: 307 with a scheme-relative Location.
    let follower = Master::start(vec![Reply::Redirect(format!("//{}/api/v1", leader.addr))]).await;
    let sensor = RunningSensor::start(json!({
        "master": follower.url(),
        "principal": "ops",
        "secret": "s3cret",
    }));

    let events = sensor.wait_events(1).await;
    assert_eq!(states(&events), [pair("web.1", "TASK_RUNNING")]);
    assert_eq!(follower.requests().len(), 1);
    let at_leader = leader.requests();
    assert_eq!(at_leader.len(), 1);
    assert_eq!(at_leader[0].method, "POST");
    assert_eq!(at_leader[0].path, "/api/v1");
    assert_eq!(
        serde_json::from_str::<Value>(&at_leader[0].body).unwrap(),
        json!({"type": "SUBSCRIBE"})
    );
    // base64("ops:s3cret"): the leader is another host, and must still get the credentials.
    assert_eq!(
        at_leader[0].header("authorization"),
        Some("Basic b3BzOnMzY3JldA==")
    );
    assert_eq!(
        follower.requests()[0].header("authorization"),
        Some("Basic b3BzOnMzY3JldA==")
    );
    let status = sensor.status();
    assert!(status.connected);
    assert_eq!((status.reconnects, status.errors), (0, 0), "{status:?}");
    sensor.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tries_the_next_master_when_one_is_down_or_failing() {
    let unavailable = Master::start(vec![Reply::Status(503, "No leader elected")]).await;
    let healthy = Master::start(vec![stream(&[
        subscribed(15.0),
        task_updated("web.1", "TASK_RUNNING"),
    ])])
    .await;
    let sensor = RunningSensor::start(json!({
        "master": [dead_url().await, unavailable.url(), healthy.url()],
    }));

    let events = sensor.wait_events(1).await;
    assert_eq!(states(&events), [pair("web.1", "TASK_RUNNING")]);
    assert_eq!(unavailable.requests().len(), 1);
    assert_eq!(healthy.requests().len(), 1);
    let status = sensor.status();
    assert!(status.connected);
    // One attempt went through the list and succeeded: neither an error nor a reconnect.
    assert_eq!((status.reconnects, status.errors), (0, 0), "{status:?}");
    sensor.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unreachable_masters_are_retried_with_backoff_and_reported() {
    let url = dead_url().await;
    let sensor = RunningSensor::start(json!({"master": url}));
    sensor
        .wait_status("two failed attempts", |s| s.errors >= 2)
        .await;
    let status = sensor.status();
    assert!(!status.connected);
    assert!(status.reconnects >= 1, "{status:?}");
    let last_error = status.last_error.unwrap();
    assert!(last_error.contains(&url), "{last_error}");
    // Shutdown while waiting to retry.
    sensor.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stream_that_is_not_recordio_is_dropped_and_resubscribed() {
    let mut garbage = frame(&subscribed(15.0));
    garbage.extend_from_slice(b"{\"type\":\"HEARTBEAT\"}");
    let master = Master::start(vec![
        Reply::Stream(vec![Step::Chunk(garbage)]),
        stream(&[subscribed(15.0), task_updated("web.1", "TASK_FINISHED")]),
    ])
    .await;
    let sensor = RunningSensor::start(json!({"master": master.url()}));

    let events = sensor.wait_events(1).await;
    assert_eq!(states(&events), [pair("web.1", "TASK_FINISHED")]);
    let status = sensor.status();
    assert_eq!((status.reconnects, status.errors), (1, 1), "{status:?}");
    assert!(
        status.last_error.as_deref().unwrap().contains("RecordIO"),
        "{status:?}"
    );
    sensor.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_event_the_engine_refuses_is_retried_not_dropped() {
    let master = Master::start(vec![stream(&[
        subscribed(15.0),
        task_updated("web.1", "TASK_RUNNING"),
        task_updated("web.1", "TASK_FAILED"),
    ])])
    .await;
    let collector = Arc::new(Collector::default());
    collector.refuse_first.store(2, Ordering::SeqCst);
    let sensor = RunningSensor::start_with(json!({"master": master.url()}), collector);

    let events = sensor.wait_events(2).await;
    assert_eq!(
        states(&events),
        [pair("web.1", "TASK_RUNNING"), pair("web.1", "TASK_FAILED")]
    );
    let status = sensor.status();
    assert_eq!(
        (status.events, status.errors, status.reconnects),
        (2, 2, 0),
        "{status:?}"
    );
    assert_eq!(
        master.requests().len(),
        1,
        "refusals must not cost the stream"
    );
    sensor.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stops_promptly_while_streaming_or_retrying_an_emit() {
    // Streaming, nothing arriving.
    let master = Master::start(vec![stream(&[subscribed(15.0)])]).await;
    let sensor = RunningSensor::start(json!({"master": master.url()}));
    sensor.wait_status("connected", |s| s.connected).await;
    sensor.stop().await;

    // Retrying an event the engine keeps refusing.
    let master = Master::start(vec![stream(&[
        subscribed(15.0),
        task_updated("web.1", "TASK_RUNNING"),
    ])])
    .await;
    let collector = Arc::new(Collector::default());
    collector.refuse_first.store(usize::MAX, Ordering::SeqCst);
    let sensor = RunningSensor::start_with(json!({"master": master.url()}), collector);
    sensor
        .wait_status("a refused emit", |s| s.errors >= 1)
        .await;
    sensor.stop().await;
}
