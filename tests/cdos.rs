//! The cdos pack end to end: its chat commands' actions under `squall run` against the
//! machine's Docker daemon (an app of two labelled containers: `cdos.service` with its links,
//! an unknown app's clear failure, `cdos.restart`, `cdos.scale` through the ops pack with its
//! limits, cooldown and history, `cdos.history`), what chat shows for them (each alias's
//! `result.format` rendered over the execution as the API gives it), the aliases' matching
//! with `squall alias match`, and the Marathon backend against a simulator on 127.0.0.1 that
//! speaks Marathon's REST API (`GET /v2/apps/{id}?embed=app.tasks`, `POST
//! /v2/apps/{id}/restart`), since Marathon cannot run here.
//!
//! The test app's containers carry a label key of their own (`squall.cdos-test`, set in both
//! configs/cdos.yaml and configs/ops.yaml), so that the ops pack's auto-heal in other tests'
//! squalls, which watch the same daemon, leaves them alone; its value is unique per test.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::path::Path;
use std::process::{Command, Output};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};

use serde_json::{json, Value};

use crate::docker::docker;
use crate::harness::{is_terminal, repo, squall, write, Squall};

const IMAGE: &str = "squall-test-busybox:latest";
const LABEL_KEY: &str = "squall.cdos-test";
/// Stops at once on SIGTERM (exit 0), so a restart takes no stop timeout.
const SERVE: &str = "trap 'exit 0' TERM; sleep 3600 & wait";

/// The app's containers, removed when the test ends however it ends.
struct App {
    name: String,
    label: String,
}

impl App {
    fn new(name: &str) -> App {
        let status = Command::new(repo().join("scripts/test-image"))
            .status()
            .expect("scripts/test-image runs");
        assert!(status.success(), "the test image could not be built");
        App {
            name: name.to_string(),
            label: format!("{LABEL_KEY}={name}"),
        }
    }

    /// Starts one container of the app; returns its id.
    fn run(&self, number: usize) -> String {
        let name = format!("{}-{number}", self.name);
        docker(&[
            "run",
            "-d",
            "--name",
            &name,
            "--label",
            &self.label,
            "--label",
            "squall.expected=2",
            IMAGE,
            "sh",
            "-c",
            SERVE,
        ])
    }

    fn running(&self) -> Vec<String> {
        let filter = format!("label={}", self.label);
        docker(&["ps", "-q", "--no-trunc", "--filter", &filter])
            .lines()
            .map(str::to_string)
            .collect()
    }
}

impl Drop for App {
    fn drop(&mut self) {
        let filter = format!("label={}", self.label);
        let ids = docker(&["ps", "-aq", "--filter", &filter]);
        for id in ids.lines() {
            let _ = Command::new("docker").args(["rm", "-f", id]).output();
        }
    }
}

/// Runs `action` through the API and waits for it to end; returns the execution.
fn run(s: &Squall, action: &str, parameters: Value) -> Value {
    let body = json!({"action": action, "parameters": parameters});
    let (code, e) = s.post("/api/v1/executions", &body.to_string());
    assert_eq!(code, 201, "{action}: {e}");
    let id = e["id"].as_str().expect("an execution id");
    s.wait_for(&format!("/api/v1/executions/{id}"), 120, |v| {
        is_terminal(v["status"].as_str().unwrap_or(""))
    })
}

/// Runs a chat command as st2's chat clients do (`POST
/// /api/v1/aliasexecution/match_and_execute`) and waits for its execution to end; returns the
/// alias's acknowledgement and the execution.
fn command(s: &Squall, text: &str) -> (String, Value) {
    let body = json!({"command": text, "user": "ada", "source_channel": "platform"});
    let (code, answer) = s.post(
        "/api/v1/aliasexecution/match_and_execute",
        &body.to_string(),
    );
    assert_eq!(code, 201, "{text}: {answer}");
    let result = &answer["results"][0];
    let id = result["execution"]["id"].as_str().expect("an execution id");
    let e = s.wait_for(&format!("/api/v1/executions/{id}"), 120, |v| {
        is_terminal(v["status"].as_str().unwrap_or(""))
    });
    (text_of(&result["message"]).to_string(), e)
}

/// What chat shows for `execution`: the cdos alias's `result.format`, rendered as squall
/// renders alias templates.
fn chat(alias: &str, execution: &Value) -> String {
    let file = repo().join(format!("packs/cdos/aliases/{alias}.yaml"));
    let text = std::fs::read_to_string(&file).expect("the alias file");
    let alias = match squall_rules::Alias::from_yaml(&text) {
        Ok(a) => a,
        Err(problems) => panic!("{}: {} problems", file.display(), problems.len()),
    };
    let format = alias
        .result
        .and_then(|r| r.format)
        .expect("the alias has a result.format");
    squall_rules::template::environment()
        .render_str(&format, json!({ "execution": execution }))
        .unwrap_or_else(|e| panic!("{}: result.format: {e}", file.display()))
        .trim()
        .to_string()
}

fn inspect(id: &str, format: &str) -> String {
    docker(&["inspect", "-f", format, id])
}

fn text_of(v: &Value) -> &str {
    v.as_str().unwrap_or_default()
}

#[test]
fn cdos_shows_restarts_scales_and_tells_the_history_of_a_docker_app() {
    let dir = tempfile::tempdir().expect("tempdir");
    let name = format!("cdos{}", std::process::id());
    let app = App::new(&name);
    let first = app.run(1);
    let second = app.run(2);
    write(
        dir.path(),
        "configs/cdos.yaml",
        &format!(
            "app_label: {LABEL_KEY}\ndocker_host_name: node-7\n\
             console_url: \"http://console.example/#/tasks/{{task}}?host={{host}}&app={{app}}\"\n"
        ),
    );
    write(
        dir.path(),
        "configs/ops.yaml",
        &format!(
            "app_label: {LABEL_KEY}\nmin_instances: 1\nmax_instances: 3\ncooldown_seconds: 300\n"
        ),
    );
    let configs = dir.path().join("configs");
    let s = Squall::start(
        &dir.path().join("data"),
        &[],
        &["--configs", configs.to_str().expect("utf-8 path")],
    );

    // `!cdos <app>`: the fields chat shows, links carrying the app id, the containers.
    let (ack, e) = command(&s, &format!("cdos {name}"));
    assert_eq!(ack, format!("Looking up {name}..."));
    assert_eq!(e["action"]["ref"], "cdos.service", "{e}");
    assert_eq!(e["status"], "succeeded", "{e}");
    let r = &e["result"];
    assert_eq!(r["name"], name.as_str(), "{r}");
    assert_eq!(
        text_of(&r["console"]),
        format!("http://console.example/#/tasks/{first}?host=node-7&app={name}")
    );
    assert!(
        text_of(&r["kibana"]).starts_with("http://kibana.example:5601/app/discover#/")
            && text_of(&r["kibana"]).contains(&format!("query:'app:%22{name}%22'")),
        "{r}"
    );
    assert_eq!(
        text_of(&r["grafana"]),
        format!("http://grafana.example:3000/d/apps/apps?var-app={name}")
    );
    let created = inspect(&first, "{{.Created}}");
    assert_eq!(
        text_of(&r["create_time"]),
        format!("{}Z", &created[..19]),
        "{r}"
    );
    assert_eq!(r["instances"], 2, "{r}");
    assert_eq!(r["expected"], 2, "{r}");
    let containers = r["containers"].as_array().expect("containers");
    let ids: Vec<&str> = containers.iter().map(|c| text_of(&c["id"])).collect();
    assert_eq!(ids, [first.as_str(), second.as_str()], "oldest first: {r}");
    for (c, number) in containers.iter().zip(1..) {
        assert_eq!(c["name"], format!("{name}-{number}").as_str(), "{c}");
        assert_eq!(c["host"], "node-7", "{c}");
        assert_eq!(c["state"], "running", "{c}");
        assert!(text_of(&c["status"]).starts_with("Up"), "{c}");
    }
    let shown = chat("service", &e);
    let lines: Vec<&str> = shown.lines().collect();
    assert_eq!(
        lines[..6],
        [
            "Action cdos.service completed.".to_string(),
            format!("console : {}", text_of(&r["console"])),
            format!("name : {name}"),
            format!("kibana : {}", text_of(&r["kibana"])),
            format!("grafana : {}", text_of(&r["grafana"])),
            format!("create_time : {}", text_of(&r["create_time"])),
        ],
        "{shown}"
    );
    assert!(
        shown.contains(&format!("{name}-2 on node-7: running")),
        "{shown}"
    );

    // An app id nobody runs: a failure that says so.
    let missing = format!("{name}-missing");
    let e = run(&s, "cdos.service", json!({"appid": missing}));
    assert_eq!(e["status"], "failed", "{e}");
    let error = text_of(&e["result"]["error"]);
    assert!(
        error.starts_with(&format!("no containers for app {missing} ")),
        "{error}"
    );
    assert_eq!(
        chat("service", &e),
        format!("Action cdos.service failed: {error}")
    );

    // `!cdos restart`: each container is started again and runs.
    let started: Vec<String> = [&first, &second]
        .iter()
        .map(|id| inspect(id, "{{.State.StartedAt}}"))
        .collect();
    let e = run(&s, "cdos.restart", json!({"appid": name}));
    assert_eq!(e["status"], "succeeded", "{e}");
    assert_eq!(e["result"]["count"], 2, "{e}");
    for (id, before) in [&first, &second].iter().zip(&started) {
        assert_ne!(&inspect(id, "{{.State.StartedAt}}"), before, "{id}");
        assert_eq!(inspect(id, "{{.State.Status}}"), "running", "{id}");
    }
    assert!(
        chat("restart", &e).starts_with(&format!("restarted the 2 containers of {name}")),
        "{}",
        chat("restart", &e)
    );

    // `!cdos scale <app> 3`: through ops (check, count, decide, scale, record).
    let (ack, e) = command(&s, &format!("cdos scale {name} 3"));
    assert_eq!(ack, format!("Scaling {name} to 3 instances..."));
    assert_eq!(e["parameters"]["instances"], 3, "{e}");
    assert_eq!(e["status"], "succeeded", "{e}");
    let out = &e["result"]["output"];
    assert_eq!(
        (out["before"].clone(), out["after"].clone()),
        (json!(2), json!(3)),
        "{out}"
    );
    assert_eq!(app.running().len(), 3);
    assert_eq!(
        chat("scale", &e),
        format!("scaled {name} out from 2 to 3 instances on docker")
    );

    // Beyond ops's max_instances (3): nothing changes, and chat says why.
    let e = run(&s, "cdos.scale", json!({"appid": name, "instances": 9}));
    assert_eq!(e["status"], "succeeded", "{e}");
    assert_eq!(
        e["result"]["output"]["outcome"],
        "nothing done: already at 3 instances, max_instances is 3",
        "{e}"
    );
    assert_eq!(app.running().len(), 3);

    // The manual scaling started ops's cooldown: an alert's scaling now does nothing...
    let e = run(
        &s,
        "ops.scale_out",
        json!({"app": name, "alertname": "HighLoad"}),
    );
    let outcome = text_of(&e["result"]["output"]["outcome"]);
    assert!(
        outcome.contains("cooling down") && outcome.contains("scaled out from 2 to 3"),
        "{e}"
    );
    // ...while a person's goes ahead, and starts the cooldown again.
    let e = run(&s, "cdos.scale", json!({"appid": name, "instances": 2}));
    assert_eq!(e["status"], "succeeded", "{e}");
    assert_eq!(
        e["result"]["output"]["outcome"],
        format!("scaled {name} in from 3 to 2 instances on docker").as_str()
    );
    assert_eq!(app.running().len(), 2);

    // Asking for what runs already changes nothing.
    let e = run(&s, "cdos.scale", json!({"appid": name, "instances": 2}));
    assert_eq!(
        e["result"]["output"]["outcome"],
        format!("nothing done: {name} runs 2 instances already").as_str(),
        "{e}"
    );

    // A scaling under way (a claim without a result) refuses a manual one, and keeps its claim.
    let key = format!("/api/v1/keys/ops.cooldown.{name}");
    let claim =
        json!({"direction": "out", "alertname": "HighLoad", "since": "2026-11-25T10:00:00.000Z"});
    let (code, answer) = s
        .request(
            "PUT",
            &key,
            Some(&json!({"value": claim.to_string(), "ttl": 600}).to_string()),
        )
        .expect("request");
    assert_eq!(code, 200, "{answer}");
    let e = run(&s, "cdos.scale", json!({"appid": name, "instances": 3}));
    assert_eq!(e["status"], "failed", "{e}");
    assert_eq!(
        chat("scale", &e),
        format!(
            "Scaling {name} failed: {name} is being scaled already (scaling since \
             2026-11-25T10:00:00.000Z on alert HighLoad): try again when that scaling is over"
        ),
        "{e}"
    );
    assert_eq!(app.running().len(), 2);
    let (_, kept) = s.get(&key);
    assert_eq!(kept["value"], claim.to_string().as_str(), "{kept}");

    // `!cdos history`: both manual scalings, newest first.
    let e = run(&s, "cdos.history", json!({"appid": name}));
    assert_eq!(e["status"], "succeeded", "{e}");
    let history = e["result"]["history"].as_array().expect("history");
    let seen: Vec<(Value, Value, Value, Value)> = history
        .iter()
        .map(|h| {
            (
                h["direction"].clone(),
                h["before"].clone(),
                h["after"].clone(),
                h["cause"].clone(),
            )
        })
        .collect();
    assert_eq!(
        seen,
        [
            (json!("in"), json!(3), json!(2), json!("manual")),
            (json!("out"), json!(2), json!(3), json!("manual")),
        ],
        "{e}"
    );
    let shown = chat("history", &e);
    assert!(
        shown.starts_with(&format!("2 scalings of {name} recorded, newest first\n")),
        "{shown}"
    );
    assert!(
        shown.contains("in from 3 to 2 on docker (manual)"),
        "{shown}"
    );
    let e = run(&s, "cdos.history", json!({"appid": missing}));
    assert_eq!(e["status"], "succeeded", "{e}");
    assert_eq!(e["result"]["history"], json!([]));
    assert!(
        chat("history", &e).starts_with(&format!("no scaling of {missing} recorded")),
        "{e}"
    );
}

fn alias_match(command: &str) -> Output {
    let packs = repo().join("packs");
    squall(&[
        "alias",
        "match",
        "--packs",
        packs.to_str().expect("utf-8 path"),
        command,
    ])
}

#[test]
fn cdos_commands_each_match_their_own_alias() {
    for (command, alias, parameters) in [
        ("cdos web-1", "cdos.service", json!({"appid": "web-1"})),
        (
            "cdos scale web 3",
            "cdos.scale",
            json!({"appid": "web", "instances": "3"}),
        ),
        ("cdos restart web", "cdos.restart", json!({"appid": "web"})),
        ("cdos history web", "cdos.history", json!({"appid": "web"})),
        // An app may be named like a command: alone, it is an app.
        ("cdos history", "cdos.service", json!({"appid": "history"})),
    ] {
        let out = alias_match(command);
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(0), "{command}: {stderr}");
        let got: Value = serde_json::from_slice(&out.stdout).expect("JSON on stdout");
        assert_eq!(got["alias"], alias, "{command}: {got}");
        assert_eq!(got["parameters"], parameters, "{command}: {got}");
    }
    let out = alias_match("cdos web extra words");
    assert_eq!(out.status.code(), Some(1));
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("matched no patterns"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );

    // The pack passes `squall pack validate` (other packs are not this test's business).
    let out = squall(&["pack", "validate", "packs"]);
    let printed = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        printed.contains("pack cdos 0.1.0 (packs/cdos): 5 actions, 0 rules, 4 aliases"),
        "{printed}"
    );
    assert!(
        !printed.lines().any(|l| l.contains("packs/cdos/")),
        "{printed}"
    );
}

// ---------------------------------------------------------------------------------------------
// Marathon.

/// A Marathon on 127.0.0.1 that knows one app, `/shop/cart`, with two tasks, and answers
/// `GET /v2/apps/{id}?embed=app.tasks` and `POST /v2/apps/{id}/restart` as Marathon does
/// (404 `{"message": "App '/x' does not exist"}` for another app). It keeps what it was asked.
struct Marathon {
    port: u16,
    seen: Arc<Mutex<Vec<String>>>,
    stop: Arc<AtomicBool>,
}

impl Marathon {
    fn start() -> Marathon {
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind");
        let port = listener.local_addr().expect("address").port();
        let seen = Arc::new(Mutex::new(Vec::new()));
        let stop = Arc::new(AtomicBool::new(false));
        let (log, done) = (Arc::clone(&seen), Arc::clone(&stop));
        std::thread::spawn(move || {
            for stream in listener.incoming() {
                if done.load(Ordering::SeqCst) {
                    return;
                }
                if let Ok(stream) = stream {
                    Marathon::serve(stream, &log);
                }
            }
        });
        Marathon { port, seen, stop }
    }

    fn serve(mut stream: TcpStream, seen: &Mutex<Vec<String>>) {
        let mut reader = BufReader::new(stream.try_clone().expect("clone"));
        let mut request_line = String::new();
        if reader.read_line(&mut request_line).is_err() {
            return;
        }
        let mut length = 0;
        loop {
            let mut line = String::new();
            if reader.read_line(&mut line).unwrap_or(0) == 0 || line.trim().is_empty() {
                break;
            }
            if let Some((name, value)) = line.split_once(':') {
                if name.eq_ignore_ascii_case("content-length") {
                    length = value.trim().parse().unwrap_or(0);
                }
            }
        }
        let mut body = vec![0; length];
        let _ = reader.read_exact(&mut body);
        let mut parts = request_line.split_whitespace();
        let method = parts.next().unwrap_or("").to_string();
        let target = parts.next().unwrap_or("").to_string();
        if let Ok(mut seen) = seen.lock() {
            seen.push(format!("{method} {target}"));
        }
        let (status, answer) = Marathon::answer(&method, &target);
        let body = answer.to_string();
        let reason = if status == 200 { "OK" } else { "Not Found" };
        let _ = write!(
            stream,
            "HTTP/1.1 {status} {reason}\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
            body.len()
        );
    }

    fn answer(method: &str, target: &str) -> (u16, Value) {
        let (path, query) = target.split_once('?').unwrap_or((target, ""));
        let task = |n: u32, host: &str, staged: &str, state: &str| {
            json!({
                "id": format!("shop_cart.{n}a2b3c4d-0000-11ef-9c6b-0242ac11000{n}"),
                "appId": "/shop/cart",
                "host": host,
                "ports": [31000 + n],
                "slaveId": format!("db7c7b47-4c0e-4b1c-9b0c-2f1f3a0c2b1e-S{n}"),
                "stagedAt": staged,
                "startedAt": staged.replace(":00.", ":05."),
                "state": state,
                "version": "2026-11-25T09:59:00.000Z",
                "healthCheckResults": [{"alive": true, "consecutiveFailures": 0,
                    "taskId": format!("shop_cart.{n}"), "lastSuccess": staged}],
            })
        };
        match (method, path) {
            ("GET", "/v2/apps/shop/cart") => {
                let mut app = json!({
                    "id": "/shop/cart",
                    "instances": 3,
                    "tasksRunning": 2,
                    "tasksStaged": 0,
                    "tasksHealthy": 2,
                    "tasksUnhealthy": 0,
                    "deployments": [],
                });
                if query.contains("embed=app.tasks") {
                    app["tasks"] = json!([
                        task(
                            2,
                            "agent-2.example",
                            "2026-11-25T10:20:00.000Z",
                            "TASK_RUNNING"
                        ),
                        task(
                            1,
                            "agent-1.example",
                            "2026-11-25T09:10:00.000Z",
                            "TASK_RUNNING"
                        ),
                    ]);
                }
                (200, json!({ "app": app }))
            }
            ("POST", "/v2/apps/shop/cart/restart") => (
                200,
                json!({"version": "2026-11-25T10:30:00.000Z",
                       "deploymentId": "5ed4c0c5-9ff8-4a6f-a0cd-000000000001"}),
            ),
            (_, p) => {
                let id = p
                    .trim_start_matches("/v2/apps")
                    .trim_end_matches("/restart");
                (
                    404,
                    json!({"message": format!("App '{id}' does not exist")}),
                )
            }
        }
    }

    fn seen(&self) -> Vec<String> {
        self.seen.lock().map(|s| s.clone()).unwrap_or_default()
    }
}

impl Drop for Marathon {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        // Wakes the accept loop so that it sees the flag.
        let _ = TcpStream::connect(("127.0.0.1", self.port));
    }
}

/// `squall action exec ... --json ACTION PARAMS`: the execution record it prints.
fn exec(configs: &Path, action: &str, params: &[&str]) -> Value {
    let packs = repo().join("packs");
    let mut args = vec![
        "action",
        "exec",
        "--packs",
        packs.to_str().expect("utf-8 path"),
        "--configs",
        configs.to_str().expect("utf-8 path"),
        "--json",
        action,
    ];
    args.extend_from_slice(params);
    let out = squall(&args);
    serde_json::from_slice(&out.stdout).unwrap_or_else(|e| {
        panic!(
            "{action}: {e}: {}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        )
    })
}

#[test]
fn cdos_on_marathon_shows_the_apps_tasks_and_restarts_it() {
    let marathon = Marathon::start();
    let dir = tempfile::tempdir().expect("tempdir");
    write(
        dir.path(),
        "cdos.yaml",
        &format!(
            "backend: marathon\nmarathon_url: http://127.0.0.1:{}/\nmarathon_app_prefix: /shop/\n",
            marathon.port
        ),
    );

    let e = exec(dir.path(), "cdos.service", &["appid=cart"]);
    assert_eq!(e["status"], "succeeded", "{e}");
    let r = &e["result"];
    assert_eq!(
        r["console"], "http://marathon.example:8080/ui/#/apps/%2Fshop%2Fcart",
        "{r}"
    );
    assert_eq!(r["name"], "cart");
    assert!(text_of(&r["kibana"]).contains("app:%22cart%22"), "{r}");
    assert!(text_of(&r["grafana"]).ends_with("var-app=cart"), "{r}");
    assert_eq!(
        r["create_time"], "2026-11-25T09:10:00.000Z",
        "oldest task: {r}"
    );
    assert_eq!(
        (r["instances"].clone(), r["expected"].clone()),
        (json!(2), json!(3))
    );
    let hosts: Vec<&str> = r["containers"]
        .as_array()
        .expect("containers")
        .iter()
        .map(|c| text_of(&c["host"]))
        .collect();
    assert_eq!(hosts, ["agent-1.example", "agent-2.example"], "{r}");
    assert_eq!(r["containers"][0]["state"], "TASK_RUNNING");
    assert_eq!(r["containers"][0]["status"], "healthy");
    assert!(
        marathon
            .seen()
            .contains(&"GET /v2/apps/shop/cart?embed=app.tasks".to_string()),
        "{:?}",
        marathon.seen()
    );

    let e = exec(dir.path(), "cdos.service", &["appid=till"]);
    assert_eq!(e["status"], "failed", "{e}");
    assert_eq!(
        e["result"]["error"],
        "no containers for app till: Marathon has no app /shop/till"
    );

    let e = exec(dir.path(), "cdos.restart", &["appid=cart"]);
    assert_eq!(e["status"], "succeeded", "{e}");
    assert_eq!(
        e["result"]["deployment_id"],
        "5ed4c0c5-9ff8-4a6f-a0cd-000000000001"
    );
    assert!(
        marathon
            .seen()
            .contains(&"POST /v2/apps/shop/cart/restart".to_string()),
        "{:?}",
        marathon.seen()
    );
}

/// `/cdos <app>` typed in Slack: the signed slash command reaches squall, the answer lands
/// in the channel through the command's response url, and reads as the platform team expects.
#[test]
fn cdos_answers_a_slack_slash_command_in_the_channel() {
    use crate::chat_sim::{slack_headers, slash_command_body, unix_now, ChatSim};
    let sim = ChatSim::start("xoxb-cdos");
    let dir = tempfile::tempdir().expect("tempdir");
    let name = format!("cdoschat{}", std::process::id());
    let app = App::new(&name);
    app.run(1);
    write(
        dir.path(),
        "configs/cdos.yaml",
        &format!("app_label: {LABEL_KEY}\ndocker_host_name: node-7\n"),
    );
    write(
        dir.path(),
        "squall.yaml",
        &format!(
            "chatops:\n  slack:\n    signing_secret: cdos-secret\n    api_url: {}\n  default_user: chatops\n",
            sim.slack_api()
        ),
    );
    let configs = dir.path().join("configs");
    let settings = dir.path().join("squall.yaml");
    let s = Squall::start(
        &dir.path().join("data"),
        &[],
        &[
            "--configs",
            configs.to_str().expect("utf-8 path"),
            "--config",
            settings.to_str().expect("utf-8 path"),
        ],
    );
    let body = slash_command_body(
        "U7",
        "ada",
        "C1",
        "platform",
        "/cdos",
        &name,
        &sim.response_url("cdos1"),
    );
    let headers = slack_headers(
        "cdos-secret",
        unix_now(),
        &body,
        "application/x-www-form-urlencoded",
    );
    let headers: Vec<(&str, &str)> = headers
        .iter()
        .map(|(k, v)| (k.as_str(), v.as_str()))
        .collect();
    let (status, ack) = s
        .request_with(
            "POST",
            "/api/v1/chatops/slack/commands",
            Some(&body),
            &headers,
        )
        .expect("request");
    assert_eq!(status, 200, "{ack}");
    assert_eq!(ack["text"], format!("Looking up {name}..."), "{ack}");
    let answer = sim.wait_for_post(60, |p| p.path == "/slack/response/cdos1");
    let text = answer.text().unwrap_or_default();
    let lines: Vec<&str> = text.lines().collect();
    assert_eq!(lines[0], "Action cdos.service completed.", "{text}");
    for (line, field) in
        lines[1..6]
            .iter()
            .zip(["console", "name", "kibana", "grafana", "create_time"])
    {
        assert!(line.starts_with(&format!("{field} : ")), "{text}");
    }
    assert_eq!(lines[2], format!("name : {name}"), "{text}");
    assert!(text.contains("on node-7: running"), "{text}");
}
