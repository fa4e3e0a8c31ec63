//! st2's `python-script` runner under `squall run`: st2 Python actions (the `pyst2` test pack,
//! written exactly as for st2) with their pack config, `self.logger`, print() output and
//! `self.action_service`'s datastore calls (seen through the key API, and kept across a
//! `kill -9`), st2's result shape for `(False, x)`, exceptions and timeouts, the timeout ending
//! every process the action started, the pack's virtualenv, and secrets kept off command lines.

use std::path::Path;
use std::time::{Duration, Instant};

use serde_json::{json, Value};

use crate::harness::{is_terminal, repo, write, Squall};

fn run(s: &Squall, action: &str, parameters: Value) -> Value {
    let body = json!({"action": action, "parameters": parameters});
    let (code, e) = s.post("/api/v1/executions", &body.to_string());
    assert_eq!(code, 201, "{e}");
    let id = e["id"].as_str().expect("id").to_string();
    s.wait_for(&format!("/api/v1/executions/{id}"), 60, |v| {
        is_terminal(v["status"].as_str().unwrap_or(""))
    })
}

fn copy_dir(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).expect("mkdir");
    for entry in std::fs::read_dir(from).expect("read_dir") {
        let entry = entry.expect("entry");
        let dest = to.join(entry.file_name());
        if entry.file_type().expect("file type").is_dir() {
            copy_dir(&entry.path(), &dest);
        } else {
            std::fs::copy(entry.path(), dest).expect("copy");
        }
    }
}

/// The test pack copied to a temporary packs dir (so a virtualenv can be added to it), its
/// config in `configs/pyst2.yaml`.
fn pack_dir() -> tempfile::TempDir {
    let dir = tempfile::tempdir().expect("tempdir");
    copy_dir(
        &repo().join("tests/packs/pyst2"),
        &dir.path().join("packs/pyst2"),
    );
    write(dir.path(), "configs/pyst2.yaml", "region: eu-west\n");
    dir
}

fn start_in(dir: &Path) -> Squall {
    let configs = dir.join("configs");
    Squall::start(
        &dir.join("data"),
        &[dir.join("packs")],
        &["--configs", configs.to_str().expect("utf-8 path")],
    )
}

fn start() -> (tempfile::TempDir, Squall) {
    let dir = pack_dir();
    let s = start_in(dir.path());
    (dir, s)
}

fn log_messages(e: &Value) -> Vec<(String, String)> {
    e["log"]
        .as_array()
        .expect("log")
        .iter()
        .map(|l| {
            (
                l["level"].as_str().unwrap_or_default().to_string(),
                l["message"].as_str().unwrap_or_default().to_string(),
            )
        })
        .collect()
}

#[test]
fn an_st2_action_runs_with_its_config_logger_and_output() {
    let (_dir, s) = start();
    let e = run(&s, "pyst2.greet", json!({"name": "ops", "count": 2}));
    assert_eq!(e["status"], "succeeded", "{e}");
    let r = &e["result"];
    assert_eq!(r["result"]["greeting"], "HELLO OPS!", "{r}");
    assert_eq!(r["result"]["count"], 2);
    assert_eq!(r["result"]["region"], "eu-west");
    // The schema's default, applied to the config as st2 does.
    assert_eq!(r["result"]["retries"], 3);
    assert_eq!(r["stdout"], "hello from print\n");
    assert_eq!(r["exit_code"], 0);
    // st2's stderr: the logger's lines in st2's format, and what the action wrote there.
    let stderr = r["stderr"].as_str().expect("stderr");
    assert!(
        stderr.contains("actions.python.GreetAction: INFO     greeting ops\n")
            && stderr.contains("actions.python.GreetAction: DEBUG    in eu-west\n")
            && stderr.contains("a warning on stderr\n"),
        "{stderr}"
    );
    let log = log_messages(&e);
    for (level, message) in [
        ("info", "greeting ops"),
        ("debug", "in eu-west"),
        ("print", "hello from print"),
        ("error", "a warning on stderr"),
    ] {
        assert!(
            log.iter().any(|(l, m)| l == level && m == message),
            "{level} {message}: {log:?}"
        );
    }
}

#[test]
fn the_datastore_is_squalls_key_value_store_under_st2s_names() {
    let (_dir, mut s) = start();
    let e = run(&s, "pyst2.keys", json!({"mode": "write"}));
    assert_eq!(e["status"], "succeeded", "{e}");
    assert_eq!(
        e["result"]["result"],
        json!({
            "counter": "41",
            "missing": null,
            "token": "t0ps3cret",
            "deleted": true,
            "deleted_again": false,
            "names": ["pyst2.KeysAction:counter", "pyst2.KeysAction:token"],
        })
    );
    // The effect a user sees: st2's local names, `<pack>.<Class>:<name>`, in squall's keys.
    let (code, k) = s.get("/api/v1/keys/pyst2.KeysAction:counter");
    assert_eq!((code, k["value"].clone()), (200, json!("41")), "{k}");
    let (code, k) = s.get("/api/v1/keys/shared");
    assert_eq!((code, k["value"].clone()), (200, json!("yes")), "{k}");
    assert!(k["expire_timestamp"].is_string(), "{k}");
    let (code, k) = s.get("/api/v1/keys/pyst2.KeysAction:token");
    assert_eq!(code, 200, "{k}");
    assert_eq!(
        (k["secret"].clone(), k["encrypted"].clone()),
        (json!(true), json!(true))
    );
    assert_ne!(k["value"], "t0ps3cret");
    let (code, _) = s.get("/api/v1/keys/pyst2.KeysAction:doomed");
    assert_eq!(code, 404);

    // Set by squall's API, read by the action; a key the action deletes is gone.
    let (code, v) = s
        .request("PUT", "/api/v1/keys/seed", Some(r#"{"value": "from-api"}"#))
        .expect("put");
    assert!(code == 200 || code == 201, "{code} {v}");
    let e = run(&s, "pyst2.keys", json!({"mode": "read"}));
    assert_eq!(e["status"], "succeeded", "{e}");
    assert_eq!(
        e["result"]["result"],
        json!({"seed": "from-api", "counter": null})
    );
    assert_eq!(s.get("/api/v1/keys/pyst2.KeysAction:counter").0, 404);

    // What an action wrote before it said it succeeded survives a kill -9.
    let e = run(&s, "pyst2.keys", json!({"mode": "write"}));
    assert_eq!(e["status"], "succeeded", "{e}");
    s.kill9();
    s.restart();
    let (code, k) = s.get("/api/v1/keys/pyst2.KeysAction:counter");
    assert_eq!((code, k["value"].clone()), (200, json!("41")), "{k}");
    let (code, k) = s.get("/api/v1/keys/pyst2.KeysAction:token?decrypt=true");
    assert_eq!((code, k["value"].clone()), (200, json!("t0ps3cret")), "{k}");
}

#[test]
fn false_a_raise_or_a_bad_entry_point_fail_with_st2s_result() {
    let (_dir, s) = start();
    let e = run(&s, "pyst2.refuse", json!({}));
    assert_eq!(e["status"], "failed", "{e}");
    assert_eq!(e["result"]["result"], json!({"why": "not today"}));
    assert_eq!(e["result"]["exit_code"], 0);

    let e = run(&s, "pyst2.crash", json!({}));
    assert_eq!(e["status"], "failed", "{e}");
    let r = &e["result"];
    assert_eq!(r["exit_code"], 1, "{r}");
    assert_eq!(r["result"], "None", "{r}");
    assert_eq!(r["stdout"], "about to fail\n");
    let stderr = r["stderr"].as_str().expect("stderr");
    assert!(
        stderr.starts_with("Traceback (most recent call last):")
            && stderr.contains("in check")
            && stderr.contains("RuntimeError: no disk left"),
        "{stderr}"
    );
    let log = log_messages(&e);
    assert!(
        log.iter()
            .any(|(l, m)| l == "error" && m == "RuntimeError: no disk left"),
        "{log:?}"
    );

    let e = run(&s, "pyst2.two", json!({}));
    assert_eq!(e["status"], "failed", "{e}");
    let error = e["result"]["error"].as_str().unwrap_or_default();
    assert!(error.contains("2 Action subclasses (First, Second)"), "{e}");
}

#[test]
fn a_timeout_ends_the_action_and_every_process_it_started() {
    let (dir, s) = start();
    let marker = dir.path().join("survivor");
    let started = Instant::now();
    let e = run(
        &s,
        "pyst2.linger",
        json!({"marker": marker.to_str().expect("utf-8 path")}),
    );
    assert_eq!(e["status"], "timeout", "{e}");
    assert!(started.elapsed() < Duration::from_secs(20));
    assert_eq!(
        e["result"]["error"], "Action failed to complete in 1 seconds",
        "{e}"
    );
    assert_eq!(e["result"]["exit_code"], -9, "{e}");
    assert_eq!(e["result"]["stdout"], "child started\n", "{e}");
    // The child would have written its marker 3 s after it started.
    let until = Instant::now() + Duration::from_secs(5);
    while Instant::now() < until {
        assert!(
            !marker.exists(),
            "a child of the timed-out action kept running"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
}

#[test]
fn a_secret_parameter_is_on_no_command_line_and_masked_in_the_output() {
    let (_dir, s) = start();
    let e = run(&s, "pyst2.secret", json!({"password": "hunter2-xyzzy"}));
    assert_eq!(e["status"], "succeeded", "{e}");
    let r = &e["result"];
    // The action saw the processes (squall's, its interpreter's) and the secret on none.
    assert!(r["result"]["processes"].as_u64().unwrap_or(0) >= 2, "{r}");
    assert_eq!(r["result"]["hits"], 0, "{r}");
    assert_eq!(r["result"]["length"], 13, "{r}");
    assert_eq!(r["stdout"], "the password is ********\n");
    let shown = e.to_string();
    assert!(!shown.contains("hunter2-xyzzy"), "{shown}");
}

#[test]
fn a_pack_with_a_virtualenv_runs_in_it() {
    let dir = pack_dir();
    let venv = dir.path().join("packs/pyst2/.venv");
    let made = std::process::Command::new("python3")
        .args(["-m", "venv", "--without-pip"])
        .arg(&venv)
        .status()
        .expect("python3 runs");
    assert!(made.success(), "python3 -m venv failed");
    let s = start_in(dir.path());
    let e = run(&s, "pyst2.greet", json!({"name": "venv"}));
    assert_eq!(e["status"], "succeeded", "{e}");
    let prefix = e["result"]["result"]["prefix"].as_str().unwrap_or_default();
    let venv = venv.canonicalize().expect("venv");
    assert_eq!(
        Path::new(prefix).canonicalize().ok().as_deref(),
        Some(venv.as_path()),
        "{e}"
    );
}
