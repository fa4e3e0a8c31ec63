//! The marathon pack's actions (`get_app`, `scale_app`, `wait_deployment`, `wait_app`) run as a
//! user runs them, `squall action exec --configs DIR`, against a Marathon simulator on
//! 127.0.0.1. Marathon cannot run here, so the simulator speaks its documented REST API
//! (docs/docs/rest-api in mesosphere/marathon): `GET /v2/apps/{id}` answers `{"app": {...}}`,
//! `PUT /v2/apps/{id}` starts a deployment and answers `{version, deploymentId}`, a PUT while a
//! deployment of the app is listed answers 409 "App is locked by one or more deployments"
//! unless `?force=true` (which cancels it), `GET /v2/deployments` lists running deployments,
//! and with credentials set every request needs them (401 otherwise).
//!
//! A deployment stays listed for the time a test gives it (or for ever); that is the
//! simulated Marathon's pace, not synchronisation: tests wait for the action to exit and then
//! look at what the simulator saw.

use std::collections::BTreeMap;
use std::io::{BufRead, BufReader, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::process::Command;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use serde_json::{json, Value};

use crate::harness::{repo, write};

// ---------------------------------------------------------------------------------------------
// The simulator.

/// How long a deployment started by a PUT stays listed.
const PUT_DEPLOYMENT_LASTS: Duration = Duration::from_secs(1);

struct App {
    instances: u64,
    running: u64,
    health_checked: bool,
}

struct Deployment {
    id: String,
    app: String,
    /// When Marathon is done with it; `None`: never (a stuck deployment).
    ends: Option<Instant>,
}

/// One request the simulator answered.
#[derive(Clone, Debug)]
struct Seen {
    method: String,
    /// Path and query, as sent.
    target: String,
    authorization: Option<String>,
    body: Value,
    status: u16,
    answer: Value,
    at: Instant,
}

#[derive(Default)]
struct State {
    apps: BTreeMap<String, App>,
    deployments: Vec<Deployment>,
    /// Deployments that ended, with when.
    ended: BTreeMap<String, Instant>,
    /// The `Authorization` header every request must carry, when set.
    authorization: Option<String>,
    next_id: u64,
    seen: Vec<Seen>,
}

impl State {
    fn deployment_id(&mut self) -> String {
        self.next_id += 1;
        format!("5ed4c0c5-9ff8-4a6f-a0cd-{:012x}", self.next_id)
    }

    /// Ends the deployments whose time has come; their apps then run what they asked for.
    fn finish_deployments(&mut self, now: Instant) {
        let (done, running): (Vec<_>, Vec<_>) = std::mem::take(&mut self.deployments)
            .into_iter()
            .partition(|d| d.ends.is_some_and(|ends| ends <= now));
        self.deployments = running;
        for d in done {
            if let Some(app) = self.apps.get_mut(&d.app) {
                app.running = app.instances;
            }
            self.ended.insert(d.id, now);
        }
    }

    fn app_json(&self, id: &str, app: &App) -> Value {
        let health_checks = if app.health_checked {
            json!([{"protocol": "HTTP", "path": "/health", "portIndex": 0,
                    "gracePeriodSeconds": 300, "intervalSeconds": 60, "maxConsecutiveFailures": 3}])
        } else {
            json!([])
        };
        let deployments: Vec<Value> = self
            .deployments
            .iter()
            .filter(|d| d.app == id)
            .map(|d| json!({"id": d.id}))
            .collect();
        json!({
            "id": id,
            "cmd": "python3 -m http.server $PORT0",
            "cpus": 0.5,
            "mem": 128.0,
            "instances": app.instances,
            "healthChecks": health_checks,
            "version": "2026-11-25T09:59:00.000Z",
            "tasksStaged": 0,
            "tasksRunning": app.running,
            "tasksHealthy": if app.health_checked { app.running } else { 0 },
            "tasksUnhealthy": 0,
            "deployments": deployments,
        })
    }

    fn deployment_json(d: &Deployment) -> Value {
        let action = json!({"action": "ScaleApplication", "app": d.app});
        json!({
            "id": d.id,
            "version": "2026-11-25T10:00:00.000Z",
            "affectedApps": [d.app],
            "affectedPods": [],
            "steps": [{"actions": [action]}],
            "currentActions": [{"action": "ScaleApplication", "app": d.app, "readinessCheckResults": []}],
            "currentStep": 1,
            "totalSteps": 1,
        })
    }

    /// Marathon's answer to one request: status, extra headers, JSON body.
    fn answer(&mut self, method: &str, target: &str, auth: Option<&str>, body: &Value) -> Answer {
        self.finish_deployments(Instant::now());
        if self.authorization.is_some() && self.authorization.as_deref() != auth {
            return Answer::new(401, json!({"message": "Invalid username or password."}))
                .header("WWW-Authenticate", "Basic realm=\"Marathon\"");
        }
        let (path, query) = target.split_once('?').unwrap_or((target, ""));
        if method == "GET" && path == "/v2/deployments" {
            let list: Vec<Value> = self
                .deployments
                .iter()
                .map(State::deployment_json)
                .collect();
            return Answer::new(200, Value::Array(list));
        }
        let Some(app_id) = path.strip_prefix("/v2/apps") else {
            return Answer::new(
                404,
                json!({"message": format!("Resource {path} not found")}),
            );
        };
        match method {
            "GET" => match self.apps.get(app_id) {
                Some(app) => Answer::new(200, json!({"app": self.app_json(app_id, app)})),
                None => Answer::not_found(app_id),
            },
            "PUT" => self.update_app(app_id, query.split('&').any(|q| q == "force=true"), body),
            _ => Answer::new(405, json!({"message": "Method not allowed"})),
        }
    }

    fn update_app(&mut self, app_id: &str, force: bool, body: &Value) -> Answer {
        if !self.apps.contains_key(app_id) {
            // A PUT of an unknown id creates the app, and `{"instances": N}` alone is no app.
            return Answer::new(
                422,
                json!({"message": "Object is not valid", "details": [
                    {"path": "/", "errors": ["AppDefinition must either contain one of 'cmd' or 'args', and/or a 'container'."]}
                ]}),
            );
        }
        let locked_by: Vec<String> = self
            .deployments
            .iter()
            .filter(|d| d.app == app_id)
            .map(|d| d.id.clone())
            .collect();
        if !locked_by.is_empty() {
            if !force {
                let ids: Vec<Value> = locked_by.iter().map(|id| json!({"id": id})).collect();
                return Answer::new(
                    409,
                    json!({
                        "message": "App is locked by one or more deployments. Override with the option '?force=true'. View details at '/v2/deployments/<DEPLOYMENT_ID>'.",
                        "deployments": ids,
                    }),
                );
            }
            // force=true cancels the deployments that lock the app.
            self.deployments.retain(|d| d.app != app_id);
        }
        let Some(instances) = body["instances"].as_u64() else {
            return Answer::new(
                400,
                json!({"message": "Invalid JSON", "details": [{"path": "/instances", "errors": ["error.expected.jsnumber"]}]}),
            );
        };
        if let Some(app) = self.apps.get_mut(app_id) {
            app.instances = instances;
        }
        let id = self.deployment_id();
        self.deployments.push(Deployment {
            id: id.clone(),
            app: app_id.to_string(),
            ends: Some(Instant::now() + PUT_DEPLOYMENT_LASTS),
        });
        Answer::new(
            200,
            json!({"version": "2026-11-25T10:01:00.000Z", "deploymentId": id}),
        )
        .header("Marathon-Deployment-Id", &id)
    }
}

struct Answer {
    status: u16,
    headers: Vec<(String, String)>,
    body: Value,
}

impl Answer {
    fn new(status: u16, body: Value) -> Answer {
        Answer {
            status,
            headers: Vec::new(),
            body,
        }
    }

    fn not_found(app_id: &str) -> Answer {
        Answer::new(
            404,
            json!({"message": format!("App '{app_id}' does not exist")}),
        )
    }

    fn header(mut self, name: &str, value: &str) -> Answer {
        self.headers.push((name.to_string(), value.to_string()));
        self
    }
}

struct Marathon {
    url: String,
    state: Arc<Mutex<State>>,
    stop: Arc<AtomicBool>,
}

impl Marathon {
    /// A Marathon with one app, `/web`, with health checks, running 2 healthy tasks.
    fn start() -> Marathon {
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind");
        let url = format!("http://{}", listener.local_addr().expect("address"));
        let mut state = State::default();
        state.apps.insert(
            "/web".to_string(),
            App {
                instances: 2,
                running: 2,
                health_checked: true,
            },
        );
        let state = Arc::new(Mutex::new(state));
        let stop = Arc::new(AtomicBool::new(false));
        let (shared, stopping) = (state.clone(), stop.clone());
        std::thread::spawn(move || {
            for stream in listener.incoming() {
                if stopping.load(Ordering::Relaxed) {
                    return;
                }
                if let Ok(stream) = stream {
                    let shared = shared.clone();
                    std::thread::spawn(move || serve(stream, &shared));
                }
            }
        });
        Marathon { url, state, stop }
    }

    fn state(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().expect("simulator state")
    }

    /// Requires HTTP basic authentication with this header value.
    fn require(&self, authorization: &str) {
        self.state().authorization = Some(authorization.to_string());
    }

    /// Starts a deployment of `app` as another client would; `None` never ends.
    fn deploy(&self, app: &str, lasts: Option<Duration>) -> String {
        let mut state = self.state();
        let id = state.deployment_id();
        state.deployments.push(Deployment {
            id: id.clone(),
            app: app.to_string(),
            ends: lasts.map(|lasts| Instant::now() + lasts),
        });
        id
    }

    /// Sets an app's instance count behind a deployment lasting `lasts`, as a scale would.
    fn scale(&self, app: &str, instances: u64, lasts: Duration) -> String {
        let id = self.deploy(app, Some(lasts));
        if let Some(app) = self.state().apps.get_mut(app) {
            app.instances = instances;
        }
        id
    }

    fn instances(&self, app: &str) -> u64 {
        self.state().apps.get(app).map_or(0, |a| a.instances)
    }

    fn is_listed(&self, deployment: &str) -> bool {
        let mut state = self.state();
        state.finish_deployments(Instant::now());
        state.deployments.iter().any(|d| d.id == deployment)
    }

    fn seen(&self) -> Vec<Seen> {
        self.state().seen.clone()
    }

    fn seen_of(&self, method: &str) -> Vec<Seen> {
        self.seen()
            .into_iter()
            .filter(|s| s.method == method)
            .collect()
    }
}

impl Drop for Marathon {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        // Wakes the accept loop so that it sees the flag.
        let _ = TcpStream::connect(self.url.trim_start_matches("http://"));
    }
}

/// Answers one HTTP/1.1 request and closes the connection.
fn serve(stream: TcpStream, state: &Mutex<State>) {
    let Ok(read_half) = stream.try_clone() else {
        return;
    };
    let mut reader = BufReader::new(read_half);
    let mut request_line = String::new();
    if reader.read_line(&mut request_line).unwrap_or(0) == 0 {
        return;
    }
    let mut parts = request_line.split_whitespace();
    let (method, target) = (
        parts.next().unwrap_or_default().to_string(),
        parts.next().unwrap_or_default().to_string(),
    );
    let mut authorization = None;
    let mut length = 0;
    loop {
        let mut line = String::new();
        if reader.read_line(&mut line).unwrap_or(0) == 0 || line.trim().is_empty() {
            break;
        }
        if let Some((name, value)) = line.split_once(':') {
            match name.trim().to_ascii_lowercase().as_str() {
                "authorization" => authorization = Some(value.trim().to_string()),
                "content-length" => length = value.trim().parse().unwrap_or(0),
                _ => {}
            }
        }
    }
    let mut body = vec![0; length];
    if reader.read_exact(&mut body).is_err() {
        return;
    }
    let body: Value = serde_json::from_slice(&body).unwrap_or(Value::Null);
    let answer = {
        let mut state = state.lock().expect("simulator state");
        let answer = state.answer(&method, &target, authorization.as_deref(), &body);
        state.seen.push(Seen {
            method,
            target,
            authorization,
            body,
            status: answer.status,
            answer: answer.body.clone(),
            at: Instant::now(),
        });
        answer
    };
    let text = answer.body.to_string();
    let mut head = format!(
        "HTTP/1.1 {} Marathon\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n",
        answer.status,
        text.len()
    );
    for (name, value) in &answer.headers {
        head.push_str(&format!("{name}: {value}\r\n"));
    }
    head.push_str("\r\n");
    let mut stream = stream;
    let _ = stream.write_all(head.as_bytes());
    let _ = stream.write_all(text.as_bytes());
}

// ---------------------------------------------------------------------------------------------
// Running the actions.

/// An execution record of `squall action exec --json`.
struct Run {
    code: Option<i32>,
    record: Value,
}

impl Run {
    /// The result of a run that succeeded.
    fn result(&self) -> &Value {
        assert_eq!(self.code, Some(0), "{:#}", self.record);
        &self.record["result"]
    }

    /// Asserts that the run failed with an error saying each of `words`.
    fn fails_saying(&self, words: &[&str]) {
        assert_eq!(self.code, Some(1), "{:#}", self.record);
        assert_eq!(self.record["status"], "failed");
        let error = self.record["result"]["error"].as_str().unwrap_or_default();
        for said in words {
            assert!(error.contains(said), "{said:?} is not in: {error}");
        }
    }

    /// Its log lines, one a line.
    fn log(&self) -> String {
        self.record["log"]
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(|line| line["message"].as_str())
            .collect::<Vec<_>>()
            .join("\n")
    }
}

impl Marathon {
    /// Runs `squall action exec marathon.<action> PARAMS` with a `configs/marathon.yaml` that
    /// points at this Marathon.
    fn exec(&self, action: &str, params: &[&str]) -> Run {
        self.exec_with("", action, params)
    }

    /// The same, with more `settings` in `marathon.yaml`.
    fn exec_with(&self, settings: &str, action: &str, params: &[&str]) -> Run {
        let configs = tempfile::tempdir().expect("tempdir");
        write(
            configs.path(),
            "marathon.yaml",
            &format!("url: {}/\n{settings}", self.url),
        );
        let out = Command::new(env!("CARGO_BIN_EXE_squall"))
            .args(["action", "exec", &format!("marathon.{action}")])
            .args(params)
            .arg("--packs")
            .arg(repo().join("packs"))
            .arg("--configs")
            .arg(configs.path())
            .arg("--json")
            .output()
            .expect("squall runs");
        let record = serde_json::from_slice(&out.stdout).unwrap_or_else(|e| {
            panic!(
                "no execution record ({e}):\n{}{}",
                String::from_utf8_lossy(&out.stdout),
                String::from_utf8_lossy(&out.stderr)
            )
        });
        Run {
            code: out.status.code(),
            record,
        }
    }
}

// ---------------------------------------------------------------------------------------------
// The tests.

#[test]
fn get_app_returns_the_counts_and_the_app() {
    let marathon = Marathon::start();

    let run = marathon.exec("get_app", &["app_id=web"]);

    let result = run.result();
    assert_eq!(result["id"], "/web");
    assert_eq!(result["instances"], 2);
    assert_eq!(result["tasksRunning"], 2);
    assert_eq!(result["tasksHealthy"], 2);
    assert_eq!(result["tasksStaged"], 0);
    assert_eq!(result["deployments"], json!([]));
    assert_eq!(result["app"]["cmd"], "python3 -m http.server $PORT0");
    assert_eq!(result["app"]["healthChecks"][0]["path"], "/health");
    let seen = marathon.seen();
    assert_eq!(seen.len(), 1);
    assert_eq!(seen[0].target, "/v2/apps/web");
    assert_eq!(seen[0].authorization, None, "no credentials configured");
}

#[test]
fn scale_app_sets_the_instance_count() {
    let marathon = Marathon::start();

    let run = marathon.exec("scale_app", &["app_id=/web", "instances=5"]);

    let result = run.result();
    assert_eq!(marathon.instances("/web"), 5);
    let puts = marathon.seen_of("PUT");
    assert_eq!(puts.len(), 1);
    assert_eq!(puts[0].target, "/v2/apps/web");
    assert_eq!(puts[0].body, json!({"instances": 5}));
    assert_eq!(result["app_id"], "/web");
    assert_eq!(result["before"], 2);
    assert_eq!(result["instances"], 5);
    assert_eq!(result["deployment_id"], puts[0].answer["deploymentId"]);
    assert!(run.log().contains("/web: scaling from 2 to 5 instances"));
}

#[test]
fn scale_app_waits_while_a_deployment_locks_the_app() {
    let marathon = Marathon::start();
    let lock = marathon.deploy("/web", Some(Duration::from_millis(1500)));

    let run = marathon.exec("scale_app", &["app_id=/web", "instances=4", "timeout=30"]);

    let result = run.result();
    assert_eq!(marathon.instances("/web"), 4);
    let puts = marathon.seen_of("PUT");
    let (last, refused) = puts.split_last().expect("PUTs were sent");
    assert!(!refused.is_empty(), "the first PUT met the lock: {puts:?}");
    assert!(refused.iter().all(|p| p.status == 409), "{puts:?}");
    assert_eq!(refused[0].answer["deployments"], json!([{"id": lock}]));
    assert_eq!(last.status, 200);
    let ended = marathon.state().ended.get(&lock).copied();
    assert!(
        ended.is_some_and(|ended| ended <= last.at),
        "the PUT that passed came after the lock ended"
    );
    assert!(run.log().contains(&format!("locked by deployment {lock}")));
    assert_eq!(result["deployment_id"], last.answer["deploymentId"]);
}

#[test]
fn scale_app_with_force_overrides_the_lock() {
    let marathon = Marathon::start();
    let stuck = marathon.deploy("/web", None);

    let run = marathon.exec("scale_app", &["app_id=/web", "instances=3", "force=true"]);

    run.result();
    let puts = marathon.seen_of("PUT");
    assert_eq!(puts.len(), 1, "{puts:?}");
    assert_eq!(puts[0].target, "/v2/apps/web?force=true");
    assert_eq!(marathon.instances("/web"), 3);
    assert!(!marathon.is_listed(&stuck), "force canceled the deployment");
}

#[test]
fn scale_app_gives_up_when_the_lock_outlasts_its_timeout() {
    let marathon = Marathon::start();
    let stuck = marathon.deploy("/web", None);

    let run = marathon.exec("scale_app", &["app_id=/web", "instances=6", "timeout=1"]);

    run.fails_saying(&[
        "cannot scale /web to 6",
        &format!("locked by deployment {stuck}"),
        "Marathon answered 409: App is locked by one or more deployments",
    ]);
    assert_eq!(marathon.instances("/web"), 2);
    assert!(marathon.seen_of("PUT").len() > 1, "it tried again");
}

#[test]
fn scale_app_of_an_unknown_app_fails_with_marathons_message() {
    let marathon = Marathon::start();

    let run = marathon.exec("scale_app", &["app_id=/nope", "instances=3"]);

    run.fails_saying(&["cannot read app /nope: Marathon answered 404: App '/nope' does not exist"]);
    assert!(
        marathon.seen_of("PUT").is_empty(),
        "no PUT, which would create the app"
    );
}

#[test]
fn wait_deployment_returns_once_the_deployment_is_over() {
    let marathon = Marathon::start();
    let deployment = marathon.scale("/web", 3, Duration::from_secs(1));

    let id = format!("deployment_id={deployment}");
    let run = marathon.exec("wait_deployment", &[&id, "timeout=30", "interval=0.1"]);

    assert_eq!(run.result()["deployment_id"], deployment);
    let polls = marathon.seen_of("GET");
    assert!(polls.iter().all(|p| p.target == "/v2/deployments"));
    let listed = |p: &Seen| p.answer.to_string().contains(&deployment);
    assert!(
        polls.first().is_some_and(listed),
        "it saw the deployment running"
    );
    assert!(
        !polls.last().is_some_and(listed),
        "it stopped once it was gone"
    );
    assert!(!marathon.is_listed(&deployment));
}

#[test]
fn wait_deployment_times_out_saying_what_is_pending() {
    let marathon = Marathon::start();
    let stuck = marathon.deploy("/web", None);

    let id = format!("deployment_id={stuck}");
    let run = marathon.exec("wait_deployment", &[&id, "timeout=1", "interval=0.2"]);

    run.fails_saying(&[
        &format!("deployment {stuck} still running after 1 s"),
        "step 1 of 1 (ScaleApplication /web) for /web",
    ]);
}

#[test]
fn wait_app_returns_when_the_tasks_run_and_are_healthy() {
    let marathon = Marathon::start();
    marathon.scale("/web", 3, Duration::from_secs(1));

    let run = marathon.exec("wait_app", &["app_id=/web", "timeout=30", "interval=0.1"]);

    assert_eq!(run.result()["tasksRunning"], 3);
    assert_eq!(run.result()["tasksHealthy"], 3);
    let polls = marathon.seen_of("GET");
    assert_eq!(
        polls
            .first()
            .map(|p| p.answer["app"]["tasksRunning"].clone()),
        Some(json!(2)),
        "it saw the app short of its count"
    );

    let run = marathon.exec(
        "wait_app",
        &["app_id=/web", "instances=9", "timeout=1", "interval=0.2"],
    );
    run.fails_saying(&["app /web did not reach 9 instances in 1 s: 3 running, 3 healthy"]);
}

#[test]
fn basic_auth_is_sent_when_configured() {
    let marathon = Marathon::start();
    // base64("ops:s3cret")
    marathon.require("Basic b3BzOnMzY3JldA==");

    let run = marathon.exec_with(
        "username: ops\npassword: s3cret\n",
        "scale_app",
        &["app_id=/web", "instances=3"],
    );
    run.result();
    let seen = marathon.seen();
    assert_eq!(seen.len(), 2, "GET then PUT: {seen:?}");
    assert!(seen
        .iter()
        .all(|s| s.authorization.as_deref() == Some("Basic b3BzOnMzY3JldA==")));

    let run = marathon.exec_with(
        "username: ops\npassword: guess\n",
        "get_app",
        &["app_id=/web"],
    );
    run.fails_saying(&[
        "cannot read app /web: Marathon answered 401: Invalid username or password.",
    ]);
}

/// The ops pack on the Marathon backend: a firing capacity alert for app `web` reads `/web`'s
/// instances, scales it by the step, waits until the new tasks run, and records the change.
#[test]
fn ops_scale_out_scales_a_marathon_app() {
    let marathon = Marathon::start();
    let dir = tempfile::tempdir().expect("tempdir");
    write(
        dir.path(),
        "configs/marathon.yaml",
        &format!("url: {}/\n", marathon.url),
    );
    write(
        dir.path(),
        "configs/ops.yaml",
        "backend: marathon\nstep: 2\nmax_instances: 4\nalertnames: [HighLoad]\n",
    );
    let configs = dir.path().join("configs");
    let s = crate::harness::Squall::start(
        &dir.path().join("data"),
        &[],
        &["--configs", configs.to_str().expect("utf-8 path")],
    );
    crate::ops::alert(&s, "firing", "HighLoad", "web", "a");
    let runs = crate::ops::ended(&s, "ops.scale_out", 1);
    assert_eq!(runs[0]["status"], "succeeded", "{}", runs[0]);
    let output = &runs[0]["result"]["output"];
    assert_eq!(output["before"], 2, "{output}");
    assert_eq!(output["after"], 4, "{output}");
    assert!(
        output["outcome"].to_string().contains("on marathon"),
        "{output}"
    );
    assert_eq!(marathon.instances("/web"), 4);
    let puts = marathon.seen_of("PUT");
    assert_eq!(puts.len(), 1, "{puts:?}");
    assert_eq!(puts[0].body, json!({"instances": 4}));
    // It waited for the deployment: the app's tasks were running when it ended.
    let last_get = marathon
        .seen_of("GET")
        .into_iter()
        .rev()
        .find(|g| g.target.starts_with("/v2/apps/web"))
        .expect("a GET of the app");
    assert_eq!(last_get.answer["app"]["tasksRunning"], 4, "{last_get:?}");
}
