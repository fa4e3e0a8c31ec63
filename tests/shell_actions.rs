//! st2's shell runners under `squall run`: `core.local` (`local-shell-cmd`) and a pack's
//! `local-shell-script`, with st2's result shape, exit codes, the timeout ending the whole
//! process group, output followed live, st2's argument passing, and secrets kept off the
//! command line and out of the output.

use std::time::{Duration, Instant};

use serde_json::{json, Value};

use crate::harness::{is_terminal, write, Squall};

fn run(s: &Squall, action: &str, parameters: Value) -> Value {
    let body = json!({"action": action, "parameters": parameters});
    let (code, e) = s.post("/api/v1/executions", &body.to_string());
    assert_eq!(code, 201, "{e}");
    let id = e["id"].as_str().expect("id").to_string();
    s.wait_for(&format!("/api/v1/executions/{id}"), 60, |v| {
        is_terminal(v["status"].as_str().unwrap_or(""))
    })
}

fn start() -> (tempfile::TempDir, Squall) {
    let dir = tempfile::tempdir().expect("tempdir");
    let pack = dir.path().join("packs/sh");
    write(&pack, "pack.yaml", "ref: sh\nname: sh\n");
    write(
        &pack,
        "actions/args.yaml",
        "name: args\nrunner_type: local-shell-script\nentry_point: args.sh\nparameters:\n  path: {type: string, position: 0}\n  host: {type: string, position: 1}\n  force: {type: boolean, default: false}\n  count: {type: integer}\n  password: {type: string, secret: true}\n",
    );
    write(
        &pack,
        "actions/args.sh",
        "#!/bin/sh\necho \"args: $*\"\necho \"password: $ST2_ACTION_PASSWORD\"\ntr '\\0' ' ' < /proc/$$/cmdline; echo\n",
    );
    let script = pack.join("actions/args.sh");
    let mut perms = std::fs::metadata(&script).expect("script").permissions();
    std::os::unix::fs::PermissionsExt::set_mode(&mut perms, 0o755);
    std::fs::set_permissions(&script, perms).expect("chmod");
    let s = Squall::start(&dir.path().join("data"), &[dir.path().join("packs")], &[]);
    (dir, s)
}

#[test]
fn core_local_runs_a_command_with_st2s_result() {
    let (_dir, s) = start();
    let e = run(
        &s,
        "core.local",
        json!({"cmd": "echo hi; echo oops >&2; echo $WHO", "env": {"WHO": "ops"}}),
    );
    assert_eq!(e["status"], "succeeded", "{e}");
    assert_eq!(
        e["result"],
        json!({"stdout": "hi\nops", "stderr": "oops", "return_code": 0, "succeeded": true, "failed": false})
    );
    let log: Vec<&str> = e["log"]
        .as_array()
        .expect("log")
        .iter()
        .filter_map(|l| l["message"].as_str())
        .collect();
    assert!(
        log.contains(&"hi") && log.contains(&"oops") && log.contains(&"ops"),
        "{log:?}"
    );

    let e = run(&s, "core.local", json!({"cmd": "echo bad >&2; exit 3"}));
    assert_eq!(e["status"], "failed", "{e}");
    assert_eq!(e["result"]["return_code"], 3);
    assert_eq!(e["result"]["stderr"], "bad");

    let e = run(&s, "core.local", json!({"cmd": "pwd", "cwd": "/tmp"}));
    assert_eq!(e["result"]["stdout"], "/tmp");
    // sudo is immutable in core.local, as in st2: refused at the request.
    let (code, e) = s.post(
        "/api/v1/executions",
        r#"{"action": "core.local", "parameters": {"cmd": "true", "sudo": true}}"#,
    );
    assert_eq!(code, 400, "{e}");
    assert!(e.to_string().contains("sudo"), "{e}");
}

#[test]
fn a_timeout_ends_the_command_and_every_process_it_started() {
    let (dir, s) = start();
    let marker = dir.path().join("survivor");
    let started = Instant::now();
    let e = run(
        &s,
        "core.local",
        json!({"cmd": format!("(sleep 3; touch {}) & sleep 60", marker.display()), "timeout": 1}),
    );
    assert_eq!(e["status"], "timeout", "{e}");
    assert!(started.elapsed() < Duration::from_secs(20));
    assert!(
        e["result"]["error"]
            .as_str()
            .is_some_and(|m| m.contains("failed to complete in 1 seconds")),
        "{e}"
    );
    // The background child would have written its marker 3 s after the start.
    let until = Instant::now() + Duration::from_secs(5);
    while Instant::now() < until {
        assert!(
            !marker.exists(),
            "a child of the timed-out command kept running"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
}

#[test]
fn a_script_gets_st2s_arguments_and_its_secrets_only_in_the_environment() {
    let (_dir, s) = start();
    let e = run(
        &s,
        "sh.args",
        json!({"path": "/srv", "host": "web-1", "force": true, "count": 3, "password": "hunter2"}),
    );
    assert_eq!(e["status"], "succeeded", "{e}");
    let out = e["result"]["stdout"].as_str().unwrap_or_default();
    let lines: Vec<&str> = out.lines().collect();
    assert_eq!(lines[0], "args: /srv web-1 --force --count=3", "{out}");
    // The script read the secret from its environment; its output shows it masked.
    assert_eq!(lines[1], "password: ********", "{out}");
    // Its command line (what `ps` shows) never had it.
    assert!(
        !lines[2].contains("hunter2") && lines[2].contains("--count=3"),
        "{out}"
    );
    assert!(!e.to_string().contains("hunter2"), "{e}");
}
