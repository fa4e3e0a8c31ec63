//! The Docker sensor against the Docker daemon on this machine: real containers, started with
//! the docker CLI and labelled with a per-test run id, and what the sensor hands its emitter.
//!
//! No registry is reachable, so the tests build their image (`squall-test-busybox:latest`)
//! from Debian's static busybox with `docker import`. Every container a test starts is removed
//! when the test ends, pass or fail. Waits are deadlines on what the emitter received, never
//! fixed sleeps.

use std::os::unix::fs::symlink;
use std::path::Path;
use std::process::{Command, Output};
use std::sync::atomic::{AtomicU32, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, Instant};

use serde_json::{json, Map, Value};
use squall_sensors::{
    builtin_sensors, docker, Checkpoint, EmitError, Emitter, MemoryCheckpoint, SensorContext,
    SensorEvent, SensorStatus,
};
use tokio::sync::{watch, Notify};

const IMAGE: &str = "squall-test-busybox:latest";
const SOCKET: &str = "/var/run/docker.sock";
/// Generous: the daemon on a loaded CI machine can take seconds to create a container.
const DEADLINE: Duration = Duration::from_secs(60);

// ---- the emitter ----

/// Collects what the sensor emits; can refuse its first few events like a store that is down.
#[derive(Default)]
struct Collector {
    events: Mutex<Vec<SensorEvent>>,
    notify: Notify,
    refuse: AtomicU32,
    refused: AtomicU32,
}

impl Collector {
    fn refusing(n: u32) -> Collector {
        let c = Collector::default();
        c.refuse.store(n, Ordering::SeqCst);
        c
    }

    fn snapshot(&self) -> Vec<SensorEvent> {
        self.events.lock().expect("events lock").clone()
    }

    /// Waits until `done` holds for what was received, and returns it.
    async fn wait_for(
        &self,
        what: &str,
        done: impl Fn(&[SensorEvent]) -> bool,
    ) -> Vec<SensorEvent> {
        let deadline = Instant::now() + DEADLINE;
        loop {
            let notified = self.notify.notified();
            tokio::pin!(notified);
            // Registered before looking, so an event emitted in between still wakes us.
            notified.as_mut().enable();
            let events = self.snapshot();
            if done(&events) {
                return events;
            }
            let Some(left) = deadline.checked_duration_since(Instant::now()) else {
                panic!("timed out waiting for {what}; received: {events:#?}");
            };
            let _ = tokio::time::timeout(left, notified).await;
        }
    }
}

impl Emitter for Collector {
    fn emit(
        &self,
        event: SensorEvent,
    ) -> std::pin::Pin<Box<dyn std::future::Future<Output = Result<(), EmitError>> + Send + '_>>
    {
        Box::pin(async move {
            let refuse = self
                .refuse
                .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |n| n.checked_sub(1));
            if refuse.is_ok() {
                self.refused.fetch_add(1, Ordering::SeqCst);
                return Err(EmitError("store unavailable (test)".into()));
            }
            self.events.lock().expect("events lock").push(event);
            self.notify.notify_waiters();
            Ok(())
        })
    }
}

// ---- running a sensor ----

struct Running {
    shutdown: watch::Sender<bool>,
    task: tokio::task::JoinHandle<()>,
    status: Arc<SensorStatus>,
}

fn start_sensor(
    settings: Value,
    emitter: Arc<Collector>,
    checkpoint: Arc<dyn Checkpoint>,
) -> Running {
    let settings: Map<String, Value> = settings.as_object().cloned().expect("settings map");
    let sensor = docker::build(&settings).expect("docker sensor builds");
    let (tx, rx) = watch::channel(false);
    let status = Arc::new(SensorStatus::default());
    let ctx = SensorContext {
        emitter,
        checkpoint,
        status: status.clone(),
        shutdown: rx,
    };
    Running {
        shutdown: tx,
        task: tokio::spawn(sensor.run(ctx)),
        status,
    }
}

impl Running {
    async fn wait_until(
        &self,
        what: &str,
        done: impl Fn(&squall_sensors::SensorStatusView) -> bool,
    ) {
        let deadline = Instant::now() + DEADLINE;
        loop {
            let view = self.status.view();
            if done(&view) {
                return;
            }
            assert!(
                Instant::now() < deadline,
                "timed out waiting for {what}: {view:?}"
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    async fn wait_connected(&self) {
        self.wait_until("the sensor to connect", |s| s.connected)
            .await;
    }

    async fn stop(self) {
        let _ = self.shutdown.send(true);
        tokio::time::timeout(Duration::from_secs(10), self.task)
            .await
            .expect("the sensor stops promptly on shutdown")
            .expect("the sensor task does not panic");
    }
}

fn label_filter(run: &str) -> Value {
    json!({"label": [format!("squall.test={run}")]})
}

// ---- containers ----

fn run_id() -> String {
    static COUNTER: AtomicUsize = AtomicUsize::new(0);
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.subsec_nanos())
        .unwrap_or(0);
    format!(
        "{}-{nanos}-{}",
        std::process::id(),
        COUNTER.fetch_add(1, Ordering::SeqCst)
    )
}

fn docker_cli(args: &[&str]) -> Output {
    Command::new("docker")
        .args(args)
        .output()
        .expect("the docker CLI runs")
}

/// Runs the docker CLI off the async runtime's threads.
async fn docker_async(args: &[&str]) -> Output {
    let args: Vec<String> = args.iter().map(|s| s.to_string()).collect();
    tokio::task::spawn_blocking(move || {
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        docker_cli(&args)
    })
    .await
    .expect("docker CLI task")
}

/// Removes the test's containers when the test ends, however it ends.
struct Containers {
    run: String,
    names: Vec<String>,
}

impl Containers {
    fn new(run: &str) -> Containers {
        Containers {
            run: run.to_string(),
            names: Vec::new(),
        }
    }

    /// A container name for this test, registered for removal.
    fn name(&mut self, suffix: &str) -> String {
        let name = format!("squall-test-{}-{suffix}", self.run);
        self.names.push(name.clone());
        name
    }

    /// `docker run` (attached: returns when the container exits) with the run's label.
    async fn run_to_exit(&mut self, suffix: &str, script: &str) -> (String, Output) {
        let name = self.name(suffix);
        let label = format!("squall.test={}", self.run);
        let out = docker_async(&[
            "run",
            "--name",
            &name,
            "--label",
            &label,
            "--label",
            "squall.app=web",
            "--network",
            "none",
            test_image(),
            "sh",
            "-c",
            script,
        ])
        .await;
        (name, out)
    }
}

impl Drop for Containers {
    fn drop(&mut self) {
        if self.names.is_empty() {
            return;
        }
        let mut args = vec!["rm", "-f"];
        args.extend(self.names.iter().map(String::as_str));
        let _ = docker_cli(&args);
    }
}

// ---- the image ----

fn test_image() -> &'static str {
    static READY: OnceLock<Result<(), String>> = OnceLock::new();
    if let Err(e) = READY.get_or_init(prepare_image) {
        panic!("cannot build the test image {IMAGE}: {e}");
    }
    IMAGE
}

fn command_ok(program: &str, args: &[&str]) -> Result<Output, String> {
    let out = Command::new(program)
        .args(args)
        .output()
        .map_err(|e| format!("{program}: {e}"))?;
    if out.status.success() {
        Ok(out)
    } else {
        Err(format!(
            "{program} {}: {}{}",
            args.join(" "),
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        ))
    }
}

/// Debian's busybox-static as /bin/busybox, installed when it is not there yet.
fn ensure_static_busybox() -> Result<(), String> {
    let installed = Command::new("dpkg")
        .args(["-s", "busybox-static"])
        .output()
        .map(|o| {
            o.status.success()
                && String::from_utf8_lossy(&o.stdout).contains("install ok installed")
        })
        .unwrap_or(false);
    if installed {
        return Ok(());
    }
    let install = ["install", "-y", "-q", "busybox-static"];
    if command_ok("apt-get", &install).is_err() {
        // The package lists may be missing or stale on a fresh machine.
        command_ok("apt-get", &["update", "-q"])?;
        command_ok("apt-get", &install)?;
    }
    Ok(())
}

fn prepare_image() -> Result<(), String> {
    if docker_cli(&["image", "inspect", IMAGE]).status.success() {
        return Ok(());
    }
    ensure_static_busybox()?;
    let dir = tempfile::tempdir().map_err(|e| e.to_string())?;
    let bin = dir.path().join("rootfs/bin");
    std::fs::create_dir_all(&bin).map_err(|e| e.to_string())?;
    std::fs::copy("/bin/busybox", bin.join("busybox")).map_err(|e| format!("/bin/busybox: {e}"))?;
    for applet in ["sh", "sleep"] {
        symlink("busybox", bin.join(applet)).map_err(|e| e.to_string())?;
    }
    let tarball = dir.path().join("rootfs.tar");
    let rootfs = dir.path().join("rootfs");
    command_ok(
        "tar",
        &["-C", path_str(&rootfs)?, "-cf", path_str(&tarball)?, "."],
    )?;
    match command_ok("docker", &["import", path_str(&tarball)?, IMAGE]) {
        Ok(_) => Ok(()),
        // Another test binary imported it at the same moment.
        Err(e) if e.contains("already exists") => Ok(()),
        Err(e) => Err(e),
    }
}

fn path_str(p: &Path) -> Result<&str, String> {
    p.to_str()
        .ok_or_else(|| format!("{} is not UTF-8", p.display()))
}

// ---- reading what was emitted ----

/// The container events of the container `name`, in the order they were emitted.
fn of_container<'a>(events: &'a [SensorEvent], name: &str) -> Vec<&'a SensorEvent> {
    events
        .iter()
        .filter(|e| e.trigger == docker::CONTAINER_EVENT && e.payload["name"] == name)
        .collect()
}

fn actions(events: &[&SensorEvent]) -> Vec<String> {
    events
        .iter()
        .map(|e| e.payload["action"].as_str().unwrap_or("").to_string())
        .collect()
}

fn has(events: &[SensorEvent], name: &str, action: &str) -> bool {
    of_container(events, name)
        .iter()
        .any(|e| e.payload["action"] == action)
}

fn find<'a>(events: &[&'a SensorEvent], action: &str) -> &'a SensorEvent {
    events
        .iter()
        .copied()
        .find(|e| e.payload["action"] == action)
        .unwrap_or_else(|| panic!("no {action} in {:?}", actions(events)))
}

/// Each action appears once at most: no duplicates.
fn assert_no_duplicates(events: &[&SensorEvent], name: &str) {
    let list = actions(events);
    let mut sorted = list.clone();
    sorted.sort();
    sorted.dedup();
    assert_eq!(
        sorted.len(),
        list.len(),
        "duplicate events for {name}: {list:?}"
    );
}

// ---- tests ----

#[test]
fn the_docker_kind_is_registered_and_builds_where_docker_runs() {
    let kind = builtin_sensors()
        .into_iter()
        .find(|k| k.name == "docker")
        .expect("docker is a builtin sensor kind");
    let refs: Vec<_> = (kind.trigger_types)().iter().map(|t| t.reference).collect();
    assert_eq!(refs, vec!["docker.container_event", "docker.event"]);
    assert!(
        Path::new(SOCKET).exists(),
        "these tests need the Docker daemon"
    );
    assert!((kind.build)(&Map::new()).is_ok());
    let err = (kind.build)(
        &json!({"host": "unix:///nonexistent.sock"})
            .as_object()
            .cloned()
            .expect("map"),
    )
    .err()
    .expect("a missing socket is refused");
    assert!(err.contains("does not exist"), "{err}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_container_that_exits_3_gives_start_then_die_with_exit_code_and_labels() {
    let run = run_id();
    let mut containers = Containers::new(&run);
    let _ = test_image();
    let collector = Arc::new(Collector::default());
    let sensor = start_sensor(
        json!({"filters": label_filter(&run)}),
        collector.clone(),
        Arc::new(MemoryCheckpoint::default()),
    );
    sensor.wait_connected().await;

    let (name, out) = containers.run_to_exit("exit3", "exit 3").await;
    assert_eq!(out.status.code(), Some(3), "{out:?}");
    let events = collector
        .wait_for("die of the container", |ev| has(ev, &name, "die"))
        .await;

    let mine = of_container(&events, &name);
    let list = actions(&mine);
    let start_at = list
        .iter()
        .position(|a| a == "start")
        .expect("a start event");
    let die_at = list.iter().position(|a| a == "die").expect("a die event");
    assert!(start_at < die_at, "start comes before die: {list:?}");
    assert_no_duplicates(&mine, &name);

    let die = find(&mine, "die");
    assert_eq!(die.payload["exit_code"], 3);
    assert_eq!(die.payload["image"], IMAGE);
    assert_eq!(die.payload["labels"]["squall.test"], run.as_str());
    assert_eq!(die.payload["labels"]["squall.app"], "web");
    assert!(die.payload["labels"].get("exitCode").is_none());
    assert_eq!(die.payload["attributes"]["exitCode"], "3");
    assert_eq!(die.payload["id"].as_str().map(str::len), Some(64));
    let start = find(&mine, "start");
    assert_eq!(start.payload["labels"]["squall.test"], run.as_str());
    assert!(start.payload.get("exit_code").is_none());
    assert!(die.occurred_at >= start.occurred_at);
    // Only this test's containers pass the label filter.
    assert!(events
        .iter()
        .all(|e| e.payload["labels"]["squall.test"] == run.as_str()));

    sensor.stop().await;
    drop(containers);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn docker_kill_gives_kill_with_signal_9_and_die_with_137() {
    let run = run_id();
    let mut containers = Containers::new(&run);
    let label = format!("squall.test={run}");
    let collector = Arc::new(Collector::default());
    let sensor = start_sensor(
        json!({"filters": label_filter(&run)}),
        collector.clone(),
        Arc::new(MemoryCheckpoint::default()),
    );
    sensor.wait_connected().await;

    let name = containers.name("killed");
    let out = docker_async(&[
        "run",
        "-d",
        "--name",
        &name,
        "--label",
        &label,
        "--network",
        "none",
        test_image(),
        "sleep",
        "300",
    ])
    .await;
    assert!(out.status.success(), "{out:?}");
    collector
        .wait_for("start of the sleeper", |ev| has(ev, &name, "start"))
        .await;
    let out = docker_async(&["kill", &name]).await;
    assert!(out.status.success(), "{out:?}");
    let events = collector
        .wait_for("die of the killed container", |ev| has(ev, &name, "die"))
        .await;

    let mine = of_container(&events, &name);
    let list = actions(&mine);
    let kill_at = list.iter().position(|a| a == "kill").expect("a kill event");
    let die_at = list.iter().position(|a| a == "die").expect("a die event");
    assert!(kill_at < die_at, "{list:?}");
    assert_eq!(find(&mine, "kill").payload["signal"], 9);
    assert_eq!(find(&mine, "die").payload["exit_code"], 137);
    assert_no_duplicates(&mine, &name);

    sensor.stop().await;
    drop(containers);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn events_while_the_sensor_is_stopped_arrive_after_restart_without_duplicates() {
    let run = run_id();
    let mut containers = Containers::new(&run);
    let checkpoint: Arc<MemoryCheckpoint> = Arc::new(MemoryCheckpoint::default());
    let first = Arc::new(Collector::default());
    let sensor = start_sensor(
        json!({"filters": label_filter(&run)}),
        first.clone(),
        checkpoint.clone(),
    );
    sensor.wait_connected().await;
    let (before, _) = containers.run_to_exit("before", "exit 0").await;
    first
        .wait_for("die before the restart", |ev| has(ev, &before, "die"))
        .await;
    sensor.stop().await;
    assert!(checkpoint.load().is_some(), "the sensor saved its position");

    // squall is down: this container lives and dies unseen.
    let (during, out) = containers.run_to_exit("during", "exit 4").await;
    assert_eq!(out.status.code(), Some(4), "{out:?}");

    let second = Arc::new(Collector::default());
    let sensor = start_sensor(
        json!({"filters": label_filter(&run)}),
        second.clone(),
        checkpoint.clone(),
    );
    let events = second
        .wait_for("die of the container run while stopped", |ev| {
            has(ev, &during, "die")
        })
        .await;
    // Docker replays in time order, so anything replayed of `before` came ahead of `during`'s
    // die: what is not there now never will be.
    let replayed = of_container(&events, &before);
    assert!(
        replayed.is_empty(),
        "duplicates at the seam: {:?}",
        actions(&replayed)
    );
    let mine = of_container(&events, &during);
    let list = actions(&mine);
    for action in ["create", "start", "die"] {
        assert!(
            list.iter().any(|a| a == action),
            "{action} missing: {list:?}"
        );
    }
    assert_no_duplicates(&mine, &during);
    assert_eq!(find(&mine, "die").payload["exit_code"], 4);
    assert!(of_container(&first.snapshot(), &during).is_empty());

    sensor.stop().await;
    drop(containers);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_refused_event_is_retried_not_dropped() {
    let run = run_id();
    let mut containers = Containers::new(&run);
    let collector = Arc::new(Collector::refusing(3));
    let checkpoint = Arc::new(MemoryCheckpoint::default());
    let sensor = start_sensor(
        json!({"filters": label_filter(&run)}),
        collector.clone(),
        checkpoint.clone(),
    );
    sensor.wait_connected().await;
    let saved_at_start = checkpoint.load();

    let (name, _) = containers.run_to_exit("refused", "exit 0").await;
    let events = collector
        .wait_for("die after refusals", |ev| has(ev, &name, "die"))
        .await;
    assert_eq!(collector.refused.load(Ordering::SeqCst), 3);
    let mine = of_container(&events, &name);
    let list = actions(&mine);
    assert_eq!(
        list.first().map(String::as_str),
        Some("create"),
        "the refused event came first: {list:?}"
    );
    assert_no_duplicates(&mine, &name);
    assert!(sensor.status.view().errors >= 3);
    assert_ne!(
        checkpoint.load(),
        saved_at_start,
        "the checkpoint moved once events were stored"
    );

    sensor.stop().await;
    drop(containers);
}

/// A TCP front for the Docker socket on 127.0.0.1 that the test can cut, to take the sensor's
/// connection away the way a daemon restart or a network fault would.
struct Proxy {
    port: u16,
    open: Arc<std::sync::atomic::AtomicBool>,
    connections: Arc<Mutex<Vec<tokio::task::AbortHandle>>>,
    accept: tokio::task::JoinHandle<()>,
}

impl Proxy {
    async fn start() -> Proxy {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind 127.0.0.1");
        let port = listener.local_addr().expect("local addr").port();
        let open = Arc::new(std::sync::atomic::AtomicBool::new(true));
        let connections: Arc<Mutex<Vec<tokio::task::AbortHandle>>> = Arc::default();
        let (o, c) = (open.clone(), connections.clone());
        let accept = tokio::spawn(async move {
            while let Ok((mut tcp, _)) = listener.accept().await {
                if !o.load(Ordering::SeqCst) {
                    continue; // dropped: the client sees its connection closed
                }
                let task = tokio::spawn(async move {
                    if let Ok(mut unix) = tokio::net::UnixStream::connect(SOCKET).await {
                        let _ = tokio::io::copy_bidirectional(&mut tcp, &mut unix).await;
                    }
                });
                c.lock()
                    .expect("connections lock")
                    .push(task.abort_handle());
            }
        });
        Proxy {
            port,
            open,
            connections,
            accept,
        }
    }

    /// Closes every open connection and refuses new ones.
    fn cut(&self) {
        self.open.store(false, Ordering::SeqCst);
        for c in self.connections.lock().expect("connections lock").drain(..) {
            c.abort();
        }
    }

    fn restore(&self) {
        self.open.store(true, Ordering::SeqCst);
    }
}

impl Drop for Proxy {
    fn drop(&mut self) {
        self.cut();
        self.accept.abort();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_lost_connection_is_re_established_and_catches_up_without_duplicates() {
    let run = run_id();
    let mut containers = Containers::new(&run);
    let _ = test_image();
    let proxy = Proxy::start().await;
    let collector = Arc::new(Collector::default());
    let sensor = start_sensor(
        json!({"host": format!("tcp://127.0.0.1:{}", proxy.port), "filters": label_filter(&run)}),
        collector.clone(),
        Arc::new(MemoryCheckpoint::default()),
    );
    sensor.wait_connected().await;
    let (before, _) = containers.run_to_exit("before", "exit 0").await;
    collector
        .wait_for("die before the cut", |ev| has(ev, &before, "die"))
        .await;

    proxy.cut();
    sensor
        .wait_until("the sensor to notice the cut", |s| {
            !s.connected && s.errors >= 1
        })
        .await;
    let (during, _) = containers.run_to_exit("during", "exit 5").await;
    proxy.restore();

    let events = collector
        .wait_for("die of the container run while cut off", |ev| {
            has(ev, &during, "die")
        })
        .await;
    let view = sensor.status.view();
    assert!(view.reconnects >= 1, "{view:?}");
    assert!(view.connected, "{view:?}");
    let before_events = of_container(&events, &before);
    assert_no_duplicates(&before_events, &before);
    let mine = of_container(&events, &during);
    assert_no_duplicates(&mine, &during);
    let list = actions(&mine);
    for action in ["create", "start", "die"] {
        assert!(
            list.iter().any(|a| a == action),
            "{action} missing: {list:?}"
        );
    }
    assert_eq!(find(&mine, "die").payload["exit_code"], 5);

    sensor.stop().await;
    drop(containers);
}
