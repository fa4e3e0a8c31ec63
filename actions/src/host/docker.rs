//! The `docker` host module: containers on a Docker daemon, through bollard.
//!
//! Which daemon: `docker::connect(host)` returns a `Docker` handle for `host`:
//! `unix:///var/run/docker.sock` (or a bare `/path/to/docker.sock`) or `tcp://HOST:PORT`
//! (plain HTTP); `()` or `""` means `DOCKER_HOST` when it is set, else the default socket. It
//! asks the daemon its API version, so an unreachable daemon fails there. The `docker` pack's
//! actions connect to their pack config's `host`: `docker::connect(ctx.config?.host)`.
//!
//! Every function below is both a method of a handle (`d.stop("web-1")`, or
//! `docker::stop(d, "web-1")`) and a module function on the default daemon
//! (`docker::stop("web-1")`). A container is named by its id, short id or name.
//! - `list()`, `list(filter)`: running containers, newest first, each as
//!   `#{id, name, image, labels, state, status, created}` (`created` in Unix seconds). `filter`
//!   is a label (`"squall.app"` or `"squall.app=web"`) or a map `#{label, all}`: `label` a
//!   string or an array of them (all must match), `all: true` to include stopped containers.
//! - `inspect(container)`: Docker's inspect document as a map, keys as Docker spells them
//!   (`State.Status`, `Config.Labels`).
//! - `start(container)`, `stop(container)`, `stop(container, timeout)`, `restart(container)`,
//!   `restart(container, timeout)`: the container's state afterwards, `#{id, name, state}`.
//!   `timeout` is the seconds Docker waits after the stop signal before it kills (`()`: the
//!   container's own, usually 10). Starting a running container or stopping a stopped one is
//!   not an error.
//! - `remove(container)`, `remove(container, force)`: `()`; `force` removes a running one too.
//! - `logs(container, tail)`: the last `tail` lines of stdout and stderr, as one string.
//! - `scale(label_key, app, count)`: makes the number of running containers labelled
//!   `label_key=app` equal to `count`. Short: creates copies of the newest running one (else of
//!   the newest stopped one) and starts them: the same image reference, command, entrypoint,
//!   environment, labels, working directory, user, ports and volumes declared, stop signal and
//!   timeout, healthcheck, and the whole host config (restart policy, network mode, binds,
//!   resources; a fixed host port then collides, as Docker says). Extra networks and the
//!   hostname are not copied; a copy is named `<app>-<8 hex digits>`. Over: stops and removes
//!   the newest ones (with their anonymous volumes). Stopped containers are neither restarted
//!   nor counted. Returns `#{app, before, after, created, removed}` (`created` and `removed`
//!   are ids; `after` is counted again once done).
//!
//! Errors are catchable script errors that name the operation and the container (`docker stop
//! web-1: No such container: web-1`). A call never outlives its run: bollard is async, so this
//! module owns one tokio runtime (one worker thread, built on first use) where each call runs,
//! while the script's thread waits with a 10 ms poll so that a cancel or the run's timeout ends
//! the script at once and aborts the call. Scripts never run on that runtime. The module offers
//! containers' lifecycle and nothing more: no exec, no image pulls, no creating a container
//! that is not a copy of an existing one. Inside [`super::stubs::with_stubs`] (`squall pack
//! test`) no daemon is asked anything: `connect` only names the host, and each call is answered
//! from the results the test case declares.

use std::collections::HashMap;
use std::future::Future;
use std::hash::{BuildHasher, Hasher};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{mpsc, Arc, LazyLock, Mutex, OnceLock};
use std::time::{Duration, Instant};

use bollard::errors::Error as DockerError;
use bollard::models::{
    ContainerCreateBody, ContainerInspectResponse, ContainerStateStatusEnum, ContainerSummary,
    ContainerSummaryStateEnum,
};
use bollard::query_parameters::{
    CreateContainerOptions, InspectContainerOptions, ListContainersOptions, LogsOptions,
    RemoveContainerOptions, RestartContainerOptions, StartContainerOptions, StopContainerOptions,
};
use bollard::{Docker, API_DEFAULT_VERSION};
use chrono::{DateTime, FixedOffset};
use futures_util::future::join_all;
use futures_util::StreamExt;
use rhai::{Array, Dynamic, EvalAltResult, FnNamespace, Map, Module, NativeCallContext, INT};
use tokio::runtime::Runtime;

use super::{
    check_stop, convert, error_chain, located, max_string_size, run_bounds, script_error,
    stop_error, stubs,
};

type Result<T> = std::result::Result<T, Box<EvalAltResult>>;

const DEFAULT_HOST: &str = "unix:///var/run/docker.sock";
/// How often a script waiting on the daemon looks at its cancel token and deadline.
const POLL: Duration = Duration::from_millis(10);
/// bollard's own timeout (whole seconds) is set past the run's deadline, which ends a call
/// first.
const TIMEOUT_MARGIN_SECS: u64 = 2;
/// Negotiated clients kept, by host; a script naming ever new hosts must not grow the cache.
const MAX_CACHED_CLIENTS: usize = 16;
const FILTER_KEYS: &str = "label, all";

/// A connection to one daemon, as scripts hold it (`let d = docker::connect(host)`).
#[derive(Clone)]
pub(super) struct Daemon {
    host: Arc<str>,
    client: Docker,
}

/// Registers `$name` twice: as a module function on the default daemon (`docker::start(id)`)
/// and, in the global namespace, as a method of a handle (`d.start(id)`). `$daemon` names the
/// handle in `$body`.
macro_rules! add_op {
    ($module:expr, $name:literal, |$daemon:ident $(, $arg:ident: $ty:ty)*| $body:expr) => {{
        add_fn!($module, $name, |c: NativeCallContext $(, $arg: $ty)*| {
            located(&c, connect(&Dynamic::UNIT).and_then(|$daemon| {
                answer(&$daemon, $name, || vec![$(stubs::arg(&$arg)),*], || $body)
            }))
        });
        rhai::FuncRegistration::new($name)
            .with_namespace(FnNamespace::Global)
            .with_volatility(true)
            .with_purity(true)
            .set_into_module($module, |c: NativeCallContext, $daemon: Daemon $(, $arg: $ty)*| {
                located(&c, answer(&$daemon, $name, || vec![$(stubs::arg(&$arg)),*], || $body))
            });
    }};
}

/// What an operation returns: the result a test case declared (`squall pack test`) when
/// stubs are installed, else the daemon's, through `op`.
fn answer<T: std::any::Any + Clone>(
    daemon: &Daemon,
    name: &str,
    args: impl FnOnce() -> Vec<serde_json::Value>,
    op: impl FnOnce() -> Result<T>,
) -> Result<T> {
    if !stubs::active() {
        return op();
    }
    let declared = stubs::answer_docker(&daemon.host, name, args()).map_err(script_error)?;
    let value = convert::to_dynamic(&declared);
    let kind = value.type_name();
    value.try_cast::<T>().ok_or_else(|| {
        script_error(format!(
            "docker {name}: the test case declares a result of type {kind}, which docker {name} does not return"
        ))
    })
}

pub(super) fn module() -> Module {
    let mut module = Module::new();
    module.set_custom_type::<Daemon>("Docker");
    add_fn!(&mut module, "connect", |c: NativeCallContext| {
        located(&c, connect(&Dynamic::UNIT))
    });
    add_fn!(
        &mut module,
        "connect",
        |c: NativeCallContext, host: Dynamic| { located(&c, connect(&host)) }
    );
    for name in ["to_string", "to_debug"] {
        rhai::FuncRegistration::new(name)
            .with_namespace(FnNamespace::Global)
            .set_into_module(&mut module, |d: &mut Daemon| format!("Docker({})", d.host));
    }
    add_op!(&mut module, "list", |d| d.list(&Dynamic::UNIT));
    add_op!(&mut module, "list", |d, filter: Dynamic| d.list(&filter));
    add_op!(&mut module, "inspect", |d, id: &str| d.inspect(id));
    add_op!(&mut module, "start", |d, id: &str| d.start(id));
    add_op!(&mut module, "stop", |d, id: &str| d
        .stop(id, &Dynamic::UNIT));
    add_op!(&mut module, "stop", |d, id: &str, timeout: Dynamic| d
        .stop(id, &timeout));
    add_op!(&mut module, "restart", |d, id: &str| d
        .restart(id, &Dynamic::UNIT));
    add_op!(&mut module, "restart", |d, id: &str, timeout: Dynamic| d
        .restart(id, &timeout));
    add_op!(&mut module, "remove", |d, id: &str| d.remove(id, false));
    add_op!(&mut module, "remove", |d, id: &str, force: bool| d
        .remove(id, force));
    add_op!(&mut module, "logs", |d, id: &str, tail: INT| d
        .logs(id, tail));
    add_op!(
        &mut module,
        "scale",
        |d, label_key: &str, app: &str, count: INT| d.scale(label_key, app, count)
    );
    module
}

/// The handle for `host` (`()` or `""`: `DOCKER_HOST`, else the default socket), its API
/// version negotiated once per host.
fn connect(host: &Dynamic) -> Result<Daemon> {
    let given = if host.is_unit() {
        String::new()
    } else {
        host.as_immutable_string_ref()
            .map_err(|_| {
                script_error(format!(
                    "docker connect: host must be a string such as {DEFAULT_HOST} or tcp://HOST:PORT, got {}",
                    host.type_name()
                ))
            })?
            .trim()
            .to_string()
    };
    let host = if !given.is_empty() {
        given
    } else {
        std::env::var("DOCKER_HOST")
            .ok()
            .filter(|h| !h.trim().is_empty())
            .unwrap_or_else(|| DEFAULT_HOST.to_string())
    };
    if stubs::active() {
        // A test's calls are answered by its stubs (see `answer`): no daemon is asked anything,
        // and this client, of an address that cannot resolve, is never used.
        let client = Docker::connect_with_http("squall-test.invalid:2375", 1, API_DEFAULT_VERSION)
            .map_err(|e| failure("docker connect", error_chain(&e)))?;
        return Ok(Daemon {
            host: host.into(),
            client,
        });
    }
    static CLIENTS: LazyLock<Mutex<HashMap<String, Docker>>> = LazyLock::new(Mutex::default);
    let cached = CLIENTS.lock().ok().and_then(|c| c.get(&host).cloned());
    let client = match cached {
        Some(client) => client,
        None => {
            let fresh = new_client(&host).map_err(|e| failure("docker connect", e))?;
            let client = wait(fresh.negotiate_version())?
                .map_err(|e| failure("docker connect", describe(&host, &e)))?;
            if let Ok(mut clients) = CLIENTS.lock() {
                if clients.len() < MAX_CACHED_CLIENTS {
                    clients.insert(host.clone(), client.clone());
                }
            }
            client
        }
    };
    Ok(Daemon {
        host: host.into(),
        client,
    })
}

fn new_client(host: &str) -> std::result::Result<Docker, String> {
    // bollard's timeout is replaced on every call (see `Daemon::call`).
    let timeout = 120;
    if let Some(path) = host
        .strip_prefix("unix://")
        .or_else(|| host.starts_with('/').then_some(host))
    {
        return Docker::connect_with_unix(path, timeout, API_DEFAULT_VERSION)
            .map_err(|e| describe(host, &e));
    }
    if let Some(addr) = host
        .strip_prefix("tcp://")
        .or_else(|| host.strip_prefix("http://"))
    {
        return Docker::connect_with_http(addr, timeout, API_DEFAULT_VERSION)
            .map_err(|e| describe(host, &e));
    }
    Err(format!(
        "the host must be unix:///path/to/docker.sock or tcp://HOST:PORT (TLS and SSH are not supported), got '{host}'"
    ))
}

/// The module's runtime, never dropped: it outlives every call and every run.
fn runtime() -> Result<&'static Runtime> {
    static RUNTIME: OnceLock<std::result::Result<Runtime, String>> = OnceLock::new();
    RUNTIME
        .get_or_init(|| {
            tokio::runtime::Builder::new_multi_thread()
                .worker_threads(1)
                .thread_name("squall-docker")
                .enable_io()
                .enable_time()
                .build()
                .map_err(|e| e.to_string())
        })
        .as_ref()
        .map_err(|e| script_error(format!("docker: cannot start the Docker client: {e}")))
}

/// Runs `future` on the module's runtime and waits for it, ending the script (and aborting
/// the call) as soon as the run is canceled or out of time.
fn wait<T: Send + 'static>(future: impl Future<Output = T> + Send + 'static) -> Result<T> {
    if let Some(stop) = check_stop() {
        return Err(stop_error(stop));
    }
    let (tx, rx) = mpsc::channel();
    let task = runtime()?.spawn(async move {
        // The receiver is gone when the script was stopped; the result is then unwanted.
        let _ = tx.send(future.await);
    });
    loop {
        match rx.recv_timeout(POLL) {
            Ok(value) => return Ok(value),
            Err(mpsc::RecvTimeoutError::Timeout) => {
                if let Some(stop) = check_stop() {
                    task.abort();
                    return Err(stop_error(stop));
                }
            }
            Err(mpsc::RecvTimeoutError::Disconnected) => {
                return Err(script_error(
                    "docker: the call to the Docker daemon ended without an answer",
                ))
            }
        }
    }
}

/// What went wrong, in the daemon's words when it answered, else with the causes.
fn describe(host: &str, error: &DockerError) -> String {
    match error {
        DockerError::DockerResponseServerError { message, .. } => message.trim().to_string(),
        DockerError::SocketNotFoundError(path) => {
            format!("the Docker socket {path} does not exist (is Docker running here?)")
        }
        DockerError::HyperLegacyError { .. } | DockerError::IOError { .. } => {
            format!(
                "cannot reach the Docker daemon at {host}: {}",
                error_chain(error)
            )
        }
        other => error_chain(other),
    }
}

/// A failed call's script error; one that failed because the run ran out of time (bollard's
/// own timeout racing the deadline) ends the script as the timeout it is.
fn failure(what: &str, why: String) -> Box<EvalAltResult> {
    match check_stop() {
        Some(stop) => stop_error(stop),
        None => script_error(format!("{what}: {why}")),
    }
}

/// A stop timeout from a script: seconds, or `()` for the container's own.
fn timeout_of(what: &str, value: &Dynamic) -> Result<Option<i32>> {
    if value.is_unit() {
        return Ok(None);
    }
    let seconds = value.as_int().map_err(|_| {
        script_error(format!(
            "{what}: the timeout must be a whole number of seconds, got {}",
            value.type_name()
        ))
    })?;
    count_of(seconds, "the timeout")
        .map(Some)
        .map_err(|e| script_error(format!("{what}: {e}")))
}

/// A number of seconds or lines from a script: 0 or more.
fn count_of(value: INT, what: &str) -> std::result::Result<i32, String> {
    i32::try_from(value)
        .ok()
        .filter(|v| *v >= 0)
        .ok_or_else(|| {
            format!(
                "{what} must be a number from 0 to {}, got {value}",
                i32::MAX
            )
        })
}

impl Daemon {
    /// Runs one call against the daemon; `what` ("docker stop web-1") starts its error.
    fn call<T, F>(&self, what: &str, op: impl FnOnce(Docker) -> F) -> Result<T>
    where
        T: Send + 'static,
        F: Future<Output = std::result::Result<T, DockerError>> + Send + 'static,
    {
        let outcome = wait(op(self.timed_client()?))?;
        outcome.map_err(|e| failure(what, describe(&self.host, &e)))
    }

    /// The client, its timeout past the run's deadline.
    fn timed_client(&self) -> Result<Docker> {
        let (deadline, _) = run_bounds()?;
        let left = deadline.saturating_duration_since(Instant::now());
        let timeout = Duration::from_secs(left.as_secs() + TIMEOUT_MARGIN_SECS);
        Ok(self.client.clone().with_timeout(timeout))
    }

    fn list(&self, filter: &Dynamic) -> Result<Array> {
        let (labels, all) = list_filter(filter)?;
        let what = format!("docker list {}", labels.join(","));
        let options = ListContainersOptions {
            all,
            filters: (!labels.is_empty()).then(|| HashMap::from([("label".into(), labels)])),
            ..Default::default()
        };
        let containers = self.call(
            &what,
            |c| async move { c.list_containers(Some(options)).await },
        )?;
        Ok(containers.iter().map(summary_to_map).collect())
    }

    fn inspect(&self, id: &str) -> Result<Dynamic> {
        let what = format!("docker inspect {id}");
        let key = id.to_string();
        let document = self.call(&what, |c| async move {
            c.inspect_container(&key, None::<InspectContainerOptions>)
                .await
        })?;
        let json = serde_json::to_value(&document)
            .map_err(|e| script_error(format!("{what}: cannot read Docker's answer: {e}")))?;
        Ok(convert::to_dynamic(&json))
    }

    /// Runs `op` on the container, then reads its state: `#{id, name, state}`.
    fn change<F>(&self, what: &str, id: &str, op: impl FnOnce(Docker, String) -> F) -> Result<Map>
    where
        F: Future<Output = std::result::Result<(), DockerError>> + Send + 'static,
    {
        let key = id.to_string();
        let inspected = self.call(what, |c| {
            let changed = op(c.clone(), key.clone());
            async move {
                changed.await?;
                c.inspect_container(&key, None::<InspectContainerOptions>)
                    .await
            }
        })?;
        Ok(state_of(&inspected))
    }

    fn start(&self, id: &str) -> Result<Map> {
        self.change(&format!("docker start {id}"), id, |c, id| async move {
            c.start_container(&id, None::<StartContainerOptions>).await
        })
    }

    fn stop(&self, id: &str, timeout: &Dynamic) -> Result<Map> {
        let what = format!("docker stop {id}");
        let t = timeout_of(&what, timeout)?;
        self.change(&what, id, move |c, id| async move {
            c.stop_container(&id, Some(StopContainerOptions { t, signal: None }))
                .await
        })
    }

    fn restart(&self, id: &str, timeout: &Dynamic) -> Result<Map> {
        let what = format!("docker restart {id}");
        let t = timeout_of(&what, timeout)?;
        self.change(&what, id, move |c, id| async move {
            c.restart_container(&id, Some(RestartContainerOptions { t, signal: None }))
                .await
        })
    }

    fn remove(&self, id: &str, force: bool) -> Result<()> {
        let key = id.to_string();
        self.call(&format!("docker remove {id}"), |c| async move {
            let options = RemoveContainerOptions {
                force,
                ..Default::default()
            };
            c.remove_container(&key, Some(options)).await
        })
    }

    fn logs(&self, id: &str, tail: INT) -> Result<String> {
        let what = format!("docker logs {id}");
        let tail = count_of(tail, "tail").map_err(|e| script_error(format!("{what}: {e}")))?;
        let limit = max_string_size()?;
        let key = id.to_string();
        let (bytes, complete) = self.call(&what, |c| async move {
            let options = LogsOptions {
                stdout: true,
                stderr: true,
                tail: tail.to_string(),
                ..Default::default()
            };
            let mut stream = c.logs(&key, Some(options));
            let mut bytes = Vec::new();
            while let Some(chunk) = stream.next().await {
                bytes.extend_from_slice(&chunk?.into_bytes());
                if bytes.len() > limit {
                    return Ok((bytes, false));
                }
            }
            Ok((bytes, true))
        })?;
        if !complete {
            return Err(script_error(format!(
                "{what}: the last {tail} lines are larger than the script's string limit of {limit} bytes"
            )));
        }
        Ok(String::from_utf8_lossy(&bytes).into_owned())
    }

    fn scale(&self, label_key: &str, app: &str, count: INT) -> Result<Map> {
        let label = format!("{label_key}={app}");
        let what = format!("docker scale {label} to {count}");
        let fail = |e: String| script_error(format!("{what}: {e}"));
        if label_key.trim().is_empty() || app.trim().is_empty() {
            return Err(fail("the label key and the app must not be empty".into()));
        }
        let count = count_of(count, "the count").map_err(fail)?;
        let client = self.timed_client()?;
        let host = Arc::clone(&self.host);
        let plan = Scaling {
            client,
            host,
            label,
            app: app.to_string(),
            count: usize::try_from(count).unwrap_or(0),
        };
        let outcome = wait(plan.run())?.map_err(|e| failure(&what, e))?;
        let ids = |ids: Vec<String>| -> Dynamic {
            Dynamic::from_array(ids.into_iter().map(Dynamic::from).collect())
        };
        let mut map = Map::new();
        map.insert("app".into(), app.into());
        map.insert("before".into(), int(outcome.before));
        map.insert("after".into(), int(outcome.after));
        map.insert("created".into(), ids(outcome.created));
        map.insert("removed".into(), ids(outcome.removed));
        Ok(map)
    }
}

fn int(n: usize) -> Dynamic {
    Dynamic::from_int(INT::try_from(n).unwrap_or(INT::MAX))
}

/// `list`'s filter: the labels to match and whether stopped containers count.
fn list_filter(filter: &Dynamic) -> Result<(Vec<String>, bool)> {
    let labels_of = |value: &Dynamic| -> Result<Vec<String>> {
        if value.is_unit() {
            return Ok(Vec::new());
        }
        if let Ok(label) = value.as_immutable_string_ref() {
            return Ok(Some(label.trim().to_string())
                .into_iter()
                .filter(|l| !l.is_empty())
                .collect());
        }
        let items = value.as_array_ref().map_err(|_| {
            script_error(format!(
                "docker list: the label filter must be a string or an array of strings, got {}",
                value.type_name()
            ))
        })?;
        Ok(items.iter().map(convert::to_message).collect())
    };
    if filter.is_unit() {
        return Ok((Vec::new(), false));
    }
    let Ok(map) = filter.as_map_ref() else {
        return Ok((labels_of(filter)?, false));
    };
    let mut labels = Vec::new();
    let mut all = false;
    for (key, value) in map.iter() {
        match key.as_str() {
            "label" => labels = labels_of(value)?,
            "all" => {
                all = value.as_bool().map_err(|_| {
                    script_error(format!(
                        "docker list: 'all' must be true or false, got {}",
                        value.type_name()
                    ))
                })?
            }
            other => {
                return Err(script_error(format!(
                    "docker list: unknown filter '{other}' (known: {FILTER_KEYS})"
                )))
            }
        }
    }
    Ok((labels, all))
}

fn summary_to_map(c: &ContainerSummary) -> Dynamic {
    let text = |s: Option<&str>| Dynamic::from(s.unwrap_or_default().to_string());
    let name = c
        .names
        .as_ref()
        .and_then(|n| n.first())
        .map(|n| n.trim_start_matches('/'));
    let labels: Map = c
        .labels
        .iter()
        .flatten()
        .map(|(k, v)| (k.as_str().into(), Dynamic::from(v.clone())))
        .collect();
    let state = c
        .state
        .filter(|s| *s != ContainerSummaryStateEnum::EMPTY)
        .map(|s| s.to_string());
    let mut map = Map::new();
    map.insert("id".into(), text(c.id.as_deref()));
    map.insert("name".into(), text(name));
    map.insert("image".into(), text(c.image.as_deref()));
    map.insert("labels".into(), Dynamic::from_map(labels));
    map.insert("state".into(), text(state.as_deref()));
    map.insert("status".into(), text(c.status.as_deref()));
    map.insert("created".into(), Dynamic::from_int(c.created.unwrap_or(0)));
    Dynamic::from_map(map)
}

/// One `scale` call, run on the module's runtime.
struct Scaling {
    client: Docker,
    host: Arc<str>,
    /// `key=app`.
    label: String,
    app: String,
    count: usize,
}

struct Scaled {
    before: usize,
    after: usize,
    created: Vec<String>,
    removed: Vec<String>,
}

impl Scaling {
    fn describe(&self, error: &DockerError) -> String {
        describe(&self.host, error)
    }

    /// The labelled containers, inspected (for their exact creation time), newest first.
    async fn labelled(&self) -> std::result::Result<Vec<ContainerInspectResponse>, String> {
        let options = ListContainersOptions {
            all: true,
            filters: Some(HashMap::from([("label".into(), vec![self.label.clone()])])),
            ..Default::default()
        };
        let listed = self
            .client
            .list_containers(Some(options))
            .await
            .map_err(|e| self.describe(&e))?;
        let inspections = listed.iter().filter_map(|c| c.id.as_deref()).map(|id| {
            self.client
                .inspect_container(id, None::<InspectContainerOptions>)
        });
        let mut found = Vec::new();
        for inspected in join_all(inspections).await {
            match inspected {
                Ok(c) => found.push(c),
                // Removed between the list and its inspection: simply gone.
                Err(DockerError::DockerResponseServerError {
                    status_code: 404, ..
                }) => {}
                Err(e) => return Err(self.describe(&e)),
            }
        }
        found.sort_by_key(|c| std::cmp::Reverse((created_at(c), c.id.clone())));
        Ok(found)
    }

    async fn run(self) -> std::result::Result<Scaled, String> {
        let labelled = self.labelled().await?;
        let (running, stopped): (Vec<_>, Vec<_>) = labelled.iter().partition(|c| is_running(c));
        let before = running.len();
        let mut created = Vec::new();
        let mut removed = Vec::new();
        let mut failures = Vec::new();
        if self.count > before {
            let template = running.first().or(stopped.first()).ok_or_else(|| {
                format!(
                    "no container labelled {} to copy: start one first",
                    self.label
                )
            })?;
            let body = copy_of(template);
            let copies = (before..self.count).map(|_| self.start_copy(body.clone()));
            for result in join_all(copies).await {
                match result {
                    Ok(id) => created.push(id),
                    Err(e) => failures.push(e),
                }
            }
        } else {
            let extra = running.iter().take(before - self.count);
            let removals = extra
                .filter_map(|c| c.id.as_deref())
                .map(|id| self.retire(id));
            for result in join_all(removals).await {
                match result {
                    Ok(id) => removed.push(id),
                    Err(e) => failures.push(e),
                }
            }
        }
        let after = match self.labelled().await {
            Ok(now) => now.iter().filter(|c| is_running(c)).count(),
            Err(e) => {
                failures.push(format!("counting the running containers again failed: {e}"));
                (before + created.len()).saturating_sub(removed.len())
            }
        };
        if !failures.is_empty() {
            return Err(format!(
                "{} (created: [{}], removed: [{}], running now: {after})",
                failures.join("; "),
                created.join(", "),
                removed.join(", ")
            ));
        }
        Ok(Scaled {
            before,
            after,
            created,
            removed,
        })
    }

    /// Creates and starts one copy; a copy that will not start is removed again.
    async fn start_copy(&self, body: ContainerCreateBody) -> std::result::Result<String, String> {
        let options = CreateContainerOptions {
            name: Some(copy_name(&self.app)),
            ..Default::default()
        };
        let id = self
            .client
            .create_container(Some(options), body)
            .await
            .map_err(|e| format!("creating a copy failed: {}", self.describe(&e)))?
            .id;
        let started = self
            .client
            .start_container(&id, None::<StartContainerOptions>)
            .await;
        if let Err(e) = started {
            let force = RemoveContainerOptions {
                force: true,
                v: true,
                ..Default::default()
            };
            let _ = self.client.remove_container(&id, Some(force)).await;
            return Err(format!("starting copy {id} failed: {}", self.describe(&e)));
        }
        Ok(id)
    }

    /// Stops one container (gracefully, with its own timeout), then removes it.
    async fn retire(&self, id: &str) -> std::result::Result<String, String> {
        let fail = |e: DockerError| format!("removing {id} failed: {}", self.describe(&e));
        self.client
            .stop_container(id, None::<StopContainerOptions>)
            .await
            .map_err(fail)?;
        let options = RemoveContainerOptions {
            v: true,
            ..Default::default()
        };
        self.client
            .remove_container(id, Some(options))
            .await
            .map_err(fail)?;
        Ok(id.to_string())
    }
}

/// `#{id, name, state}` of an inspected container.
fn state_of(c: &ContainerInspectResponse) -> Map {
    let text = |s: Option<&str>| Dynamic::from(s.unwrap_or_default().to_string());
    let state = c
        .state
        .as_ref()
        .and_then(|s| s.status)
        .map(|s| s.to_string());
    let mut map = Map::new();
    map.insert("id".into(), text(c.id.as_deref()));
    map.insert(
        "name".into(),
        text(c.name.as_deref().map(|n| n.trim_start_matches('/'))),
    );
    map.insert("state".into(), text(state.as_deref()));
    map
}

fn is_running(c: &ContainerInspectResponse) -> bool {
    c.state.as_ref().and_then(|s| s.status) == Some(ContainerStateStatusEnum::RUNNING)
}

/// When a container was created, to the nanosecond Docker records (the list's Unix seconds
/// cannot order containers created in the same second). Read through JSON so it does not
/// depend on which date type bollard was built with.
fn created_at(c: &ContainerInspectResponse) -> Option<DateTime<FixedOffset>> {
    let value = serde_json::to_value(&c.created).ok()?;
    DateTime::parse_from_rfc3339(value.as_str()?).ok()
}

/// What a copy of `template` is created from (see the module's doc for what is copied).
fn copy_of(template: &ContainerInspectResponse) -> ContainerCreateBody {
    let config = template.config.clone().unwrap_or_default();
    ContainerCreateBody {
        image: config.image.or_else(|| template.image.clone()),
        cmd: config.cmd,
        entrypoint: config.entrypoint,
        env: config.env,
        labels: config.labels,
        working_dir: config.working_dir,
        user: config.user,
        domainname: config.domainname,
        exposed_ports: config.exposed_ports,
        volumes: config.volumes,
        stop_signal: config.stop_signal,
        stop_timeout: config.stop_timeout,
        healthcheck: config.healthcheck,
        tty: config.tty,
        open_stdin: config.open_stdin,
        shell: config.shell,
        host_config: template.host_config.clone(),
        ..Default::default()
    }
}

/// `<app>-<8 hex digits>`, with what Docker refuses in a name turned into `-`.
fn copy_name(app: &str) -> String {
    static COPIES: AtomicU64 = AtomicU64::new(0);
    let cleaned: String = app
        .chars()
        .map(|c| match c {
            'a'..='z' | 'A'..='Z' | '0'..='9' | '_' | '.' | '-' => c,
            _ => '-',
        })
        .collect();
    let base = cleaned.trim_start_matches(['_', '.', '-']);
    let base = if base.is_empty() { "squall" } else { base };
    let mut hasher = std::hash::RandomState::new().build_hasher();
    hasher.write_u64(COPIES.fetch_add(1, Ordering::Relaxed));
    hasher.write_u128(
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_nanos())
            .unwrap_or(0),
    );
    format!("{base}-{:08x}", hasher.finish() & 0xffff_ffff)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn copy_names_are_valid_docker_names() {
        let name = copy_name("web");
        assert!(
            name.starts_with("web-") && name.len() == "web-".len() + 8,
            "{name}"
        );
        assert_ne!(copy_name("web"), copy_name("web"));
        assert!(copy_name("my app/v2").starts_with("my-app-v2-"));
        assert!(copy_name("/..").starts_with("squall-"));
    }

    #[test]
    fn list_filters() {
        let label = Dynamic::from("squall.app=web".to_string());
        assert_eq!(
            list_filter(&label).ok(),
            Some((vec!["squall.app=web".to_string()], false))
        );
        let mut map = Map::new();
        map.insert("label".into(), label);
        map.insert("all".into(), Dynamic::TRUE);
        assert_eq!(
            list_filter(&Dynamic::from_map(map.clone())).ok(),
            Some((vec!["squall.app=web".to_string()], true))
        );
        map.insert("status".into(), Dynamic::from("running".to_string()));
        let error = list_filter(&Dynamic::from_map(map)).map(|_| ());
        assert!(error.is_err_and(|e| e.to_string().contains("unknown filter 'status'")));
    }
}
