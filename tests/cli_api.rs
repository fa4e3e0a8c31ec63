//! The command line against a running `squall run`, as an operator uses it: run an action and
//! wait for it, look at executions, the key-value store, rules (post-mortem test), triggers,
//! packs and sensors; and a webhook guarded by a GitHub signature.

use std::process::{Command, Output};

use hmac::{Hmac, Mac};
use serde_json::Value;
use sha2::Sha256;

use crate::harness::{repo, Squall};

fn cli(s: &Squall, args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_squall"))
        .args(args)
        .env("SQUALL_API_URL", format!("http://127.0.0.1:{}", s.port))
        .env_remove("SQUALL_API_KEY")
        .current_dir(repo())
        .output()
        .expect("squall runs")
}

fn text(out: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

/// A squall with the bundled packs and the e2e test pack; the directory holds its data.
fn start_with_e2e_pack() -> (tempfile::TempDir, Squall) {
    let dir = tempfile::tempdir().expect("tempdir");
    let s = Squall::start(
        &dir.path().join("data"),
        &[repo().join("tests/packs/e2e")],
        &[],
    );
    (dir, s)
}

#[test]
fn operator_commands_against_a_running_server() {
    let (_dir, s) = start_with_e2e_pack();

    let out = cli(
        &s,
        &["action", "run", "examples.greet", "name=cli", "times=2"],
    );
    let all = text(&out);
    assert_eq!(out.status.code(), Some(0), "{all}");
    assert!(all.contains("hello, cli"), "{all}");
    assert!(all.contains("succeeded"), "{all}");

    // Values are read as the action declares them: a string parameter takes JSON-looking
    // text as it is.
    let out = cli(&s, &["action", "run", "core.echo", r#"message={"a":1}"#]);
    let all = text(&out);
    assert_eq!(out.status.code(), Some(0), "{all}");
    assert!(all.contains(r#"{"a":1}"#), "{all}");

    // st2's habit of giving the base with /api/v1 works too.
    let base = format!("http://127.0.0.1:{}/api/v1/", s.port);
    let out = cli(&s, &["rule", "list", "--api", &base]);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    let out = cli(&s, &["key", "set", "", "x"]);
    assert_ne!(out.status.code(), Some(0));
    assert!(text(&out).contains("needs a name"), "{}", text(&out));

    let out = cli(&s, &["action", "run", "e2e.fail"]);
    assert_eq!(
        out.status.code(),
        Some(1),
        "a failed execution exits 1: {}",
        text(&out)
    );

    let out = cli(&s, &["action", "run", "examples.greet", "times=x"]);
    assert_eq!(out.status.code(), Some(2));
    assert!(text(&out).contains("name"), "{}", text(&out));

    let out = cli(
        &s,
        &["execution", "list", "--action", "examples.greet", "--json"],
    );
    let list: Value = serde_json::from_slice(&out.stdout).expect("json");
    assert_eq!(list.as_array().map(Vec::len), Some(1));
    // An execution that already ended cannot be canceled, and says so.
    let done = list[0]["id"].as_str().expect("id");
    let out = cli(&s, &["execution", "cancel", done]);
    assert!(!out.status.success(), "{}", text(&out));
    assert!(
        text(&out).contains("already ended as succeeded"),
        "{}",
        text(&out)
    );

    assert!(cli(&s, &["key", "set", "owner", "ops-team"])
        .status
        .success());
    let out = cli(&s, &["key", "get", "owner"]);
    assert!(text(&out).contains("ops-team"), "{}", text(&out));
    assert!(cli(&s, &["key", "set", "token", "t0ps3cret", "--secret"])
        .status
        .success());
    let out = cli(&s, &["key", "get", "token"]);
    assert!(
        !text(&out).contains("t0ps3cret"),
        "secrets stay encrypted without --decrypt"
    );
    let out = cli(&s, &["key", "get", "token", "--decrypt"]);
    assert!(text(&out).contains("t0ps3cret"));
    let out = cli(&s, &["key", "get", "nobody"]);
    assert_eq!(out.status.code(), Some(1));

    // Post-mortem rule test on a stored trigger instance.
    let (code, ti) = s.post("/api/v1/webhooks/hello", r#"{"name": "pm"}"#);
    assert_eq!(code, 202);
    let id = ti["id"].as_str().expect("id").to_string();
    s.executions_of(&id, 1);
    let out = cli(
        &s,
        &[
            "rule",
            "test",
            "--rule-ref",
            "e2e.hello",
            "--trigger-instance-id",
            &id,
        ],
    );
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    assert!(text(&out).contains("=== RULE MATCHES ==="));
    let out = cli(
        &s,
        &[
            "rule",
            "test",
            "--rule-ref",
            "e2e.typed",
            "--trigger-instance-id",
            &id,
        ],
    );
    assert_eq!(out.status.code(), Some(1), "{}", text(&out));
    assert!(text(&out).contains("=== RULE DOES NOT MATCH ==="));
    // It matches, but the engine refused the action (`times` is no integer): said, exit 2.
    let (code, ti) = s.post(
        "/api/v1/webhooks/greet",
        r#"{"name": "x", "times": "many"}"#,
    );
    assert_eq!(code, 202, "{ti}");
    let refused_id = ti["id"].as_str().expect("id").to_string();
    s.wait_for(&format!("/api/v1/triggerinstances/{refused_id}"), 20, |v| {
        v["status"] == "processing_failed" || v["status"] == "processed"
    });
    let out = cli(
        &s,
        &[
            "rule",
            "test",
            "--rule-ref",
            "examples.greet_on_webhook",
            "--trigger-instance-id",
            &refused_id,
        ],
    );
    assert_eq!(out.status.code(), Some(2), "{}", text(&out));
    assert!(
        text(&out).contains("=== RULE MATCHES ==="),
        "{}",
        text(&out)
    );
    assert!(
        text(&out).contains("would be refused") && text(&out).contains("times"),
        "{}",
        text(&out)
    );

    let out = cli(&s, &["trigger", "fire", "examples.deploy_done", "app=web"]);
    assert!(out.status.success(), "{}", text(&out));
    let (_, instances) = s.get("/api/v1/triggerinstances?trigger=examples.deploy_done");
    assert_eq!(instances[0]["payload"]["app"], "web");
    // A trigger type nothing declares or names (a typo) is refused, as st2 does.
    let out = cli(&s, &["trigger", "fire", "examples.deplyo_done", "app=web"]);
    assert!(!out.status.success(), "{}", text(&out));
    assert!(
        text(&out).contains("no trigger type 'examples.deplyo_done'"),
        "{}",
        text(&out)
    );

    let out = cli(&s, &["pack", "list"]);
    assert!(out.status.success(), "{}", text(&out));
    assert!(text(&out).contains("examples"));
    let out = cli(&s, &["sensor", "list"]);
    assert!(text(&out).contains("docker.events"), "{}", text(&out));
    let out = cli(&s, &["rule", "list"]);
    assert!(text(&out).contains("e2e.hello"));
    // The server's options may come before the command too.
    let out = Command::new(env!("CARGO_BIN_EXE_squall"))
        .args([
            "--api",
            &format!("http://127.0.0.1:{}", s.port),
            "rule",
            "list",
        ])
        .env_remove("SQUALL_API_URL")
        .env_remove("SQUALL_API_KEY")
        .output()
        .expect("squall runs");
    assert!(out.status.success(), "{}", text(&out));
    assert!(text(&out).contains("e2e.hello"), "{}", text(&out));
    // ... and before a `--` that ends the options.
    let out = Command::new(env!("CARGO_BIN_EXE_squall"))
        .args([
            "--api",
            &format!("http://127.0.0.1:{}", s.port),
            "action",
            "run",
            "core.echo",
            "--",
            "message=hi",
        ])
        .env_remove("SQUALL_API_URL")
        .env_remove("SQUALL_API_KEY")
        .output()
        .expect("squall runs");
    assert!(out.status.success(), "{}", text(&out));
    assert!(text(&out).contains("hi"), "{}", text(&out));
}

#[test]
fn webhook_with_a_github_signature() {
    let dir = tempfile::tempdir().expect("tempdir");
    let config = dir.path().join("squall.yaml");
    std::fs::write(
        &config,
        "webhooks:\n  hello: {scheme: github, secret: \"It's a Secret to Everybody\"}\n",
    )
    .expect("write");
    let s = Squall::start(
        &dir.path().join("data"),
        &[repo().join("tests/packs/e2e")],
        &["--config", config.to_str().expect("utf-8")],
    );
    let body = r#"{"name": "signed"}"#;
    let header = github_signature("It's a Secret to Everybody", body);
    let (code, ti) = s
        .request_with(
            "POST",
            "/api/v1/webhooks/hello",
            Some(body),
            &[("X-Hub-Signature-256", &header)],
        )
        .expect("request");
    assert_eq!(code, 202, "{ti}");
    let (code, err) = s
        .request_with(
            "POST",
            "/api/v1/webhooks/hello",
            Some(r#"{"name": "forged"}"#),
            &[("X-Hub-Signature-256", &header)],
        )
        .expect("request");
    assert_eq!(code, 401, "{err}");
    let (code, _) = s.post("/api/v1/webhooks/hello", body);
    assert_eq!(code, 401, "an unsigned request is refused");
}

fn github_signature(secret: &str, body: &str) -> String {
    let mut mac = Hmac::<Sha256>::new_from_slice(secret.as_bytes()).expect("key");
    mac.update(body.as_bytes());
    let hex: String = mac
        .finalize()
        .into_bytes()
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect();
    format!("sha256={hex}")
}

/// A hook is one hook with or without its slashes, as in st2: a rule on `url: /slashed/` fires
/// for POST /webhooks/slashed, and a signature check set for `/slashed` guards it. A check set
/// for `st2` guards that hook too.
#[test]
fn hooks_are_named_with_or_without_slashes_and_their_checks_hold() {
    let dir = tempfile::tempdir().expect("tempdir");
    let pack = dir.path().join("hooks");
    crate::harness::write(&pack, "pack.yaml", "ref: hooks\nname: hooks\n");
    crate::harness::write(
        &pack,
        "rules/slashed.yaml",
        "name: slashed\nenabled: true\ntrigger: {type: core.st2.webhook, parameters: {url: /slashed/}}\naction: {ref: core.noop}\n",
    );
    let config = dir.path().join("squall.yaml");
    std::fs::write(
        &config,
        "webhooks:\n  /slashed: {scheme: github, secret: one}\n  st2: {scheme: github, secret: two}\n",
    )
    .expect("write");
    let s = Squall::start(
        &dir.path().join("data"),
        &[repo().join("packs/core"), pack],
        &["--config", config.to_str().expect("utf-8")],
    );
    let body = r#"{"n": 1}"#;
    let (code, err) = s.post("/api/v1/webhooks/slashed", body);
    assert_eq!(code, 401, "unsigned: {err}");
    let signed = github_signature("one", body);
    let (code, ti) = s
        .request_with(
            "POST",
            "/api/v1/webhooks/slashed",
            Some(body),
            &[("X-Hub-Signature-256", &signed)],
        )
        .expect("request");
    assert_eq!(code, 202, "{ti}");
    let execs = s.executions_of(ti["id"].as_str().expect("id"), 1);
    assert_eq!(execs[0]["rule"]["ref"], "hooks.slashed", "{execs:?}");

    let st2 = r#"{"trigger": "core.st2.webhook", "payload": {}}"#;
    let (code, err) = s.post("/api/v1/webhooks/st2", st2);
    assert_eq!(code, 401, "unsigned st2 hook: {err}");
    let (code, ti) = s
        .request_with(
            "POST",
            "/api/v1/webhooks/st2",
            Some(st2),
            &[("X-Hub-Signature-256", &github_signature("two", st2))],
        )
        .expect("request");
    assert_eq!(code, 202, "{ti}");
}

/// Signature settings that could never pass, or would pass for anyone, stop the start.
#[test]
fn unusable_signature_settings_are_refused_at_start() {
    let dir = tempfile::tempdir().expect("tempdir");
    for (settings, expect) in [
        (
            "webhooks:\n  deploys: {scheme: standard_webhooks, secret: \"whsec_not base64!!\"}\n",
            "webhooks.deploys: the secret is not",
        ),
        ("webhooks:\n  hello: {scheme: github, secret: \"\"}\n", "empty"),
        (
            "webhooks:\n  hello: {scheme: github, secret: a}\n  /hello/: {scheme: github, secret: b}\n",
            "given twice",
        ),
        // The alert receivers take no API key once they have credentials: none may be empty.
        (
            "auth: true\ngrafana: {signature: {scheme: grafana, secret: \"\"}}\n",
            "grafana: signature: the secret is empty",
        ),
        ("alertmanager: {bearer_token: \"\"}\n", "bearer_token is empty"),
        (
            "alertmanager: {basic: {username: ops, password: \"\"}}\n",
            "alertmanager: basic needs",
        ),
    ] {
        let config = dir.path().join("squall.yaml");
        std::fs::write(&config, settings).expect("write");
        let data = dir.path().join("data");
        let out = Command::new(env!("CARGO_BIN_EXE_squall"))
            .args(["run", "--listen", "127.0.0.1:0", "--config"])
            .arg(&config)
            .arg("--data-dir")
            .arg(&data)
            .arg("--packs")
            .arg(repo().join("packs/core"))
            .output()
            .expect("runs");
        assert!(!out.status.success(), "{settings}");
        assert!(text(&out).contains(expect), "{settings}: {}", text(&out));
        assert!(!data.exists(), "refused before the data dir is made");
    }
}

/// A Standard Webhooks sender retries a delivery with the same `webhook-id`: one instance,
/// one execution, even across a restart.
#[test]
fn a_standard_webhooks_retry_gives_no_second_instance() {
    use base64::Engine as _;
    let dir = tempfile::tempdir().expect("tempdir");
    let config = dir.path().join("squall.yaml");
    std::fs::write(
        &config,
        "webhooks:\n  hello: {scheme: standard_webhooks, secret: \"whsec_C2FVsBQIhrscChlQIMV+b5sSYspob7oD\"}\n  st2: {scheme: standard_webhooks, secret: \"whsec_C2FVsBQIhrscChlQIMV+b5sSYspob7oD\"}\n",
    )
    .expect("write");
    let mut s = Squall::start(
        &dir.path().join("data"),
        &[repo().join("tests/packs/e2e")],
        &["--config", config.to_str().expect("utf-8")],
    );
    let key = base64::engine::general_purpose::STANDARD
        .decode("C2FVsBQIhrscChlQIMV+b5sSYspob7oD")
        .expect("key");
    let deliver_to = |s: &Squall, hook: &str, id: &str, body: &str| {
        let timestamp = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .expect("clock")
            .as_secs()
            .to_string();
        let mut mac = Hmac::<Sha256>::new_from_slice(&key).expect("key");
        mac.update(format!("{id}.{timestamp}.{body}").as_bytes());
        let sig = format!(
            "v1,{}",
            base64::engine::general_purpose::STANDARD.encode(mac.finalize().into_bytes())
        );
        s.request_with(
            "POST",
            &format!("/api/v1/webhooks/{hook}"),
            Some(body),
            &[
                ("webhook-id", id),
                ("webhook-timestamp", &timestamp),
                ("webhook-signature", &sig),
            ],
        )
        .expect("request")
    };
    let deliver = |s: &Squall, id: &str, body: &str| deliver_to(s, "hello", id, body);
    // To the st2 hook too.
    let st2 = r#"{"trigger": "core.st2.webhook", "payload": {}}"#;
    let (code, st2_first) = deliver_to(&s, "st2", "st2_1", st2);
    assert_eq!(code, 202, "{st2_first}");
    let (code, st2_again) = deliver_to(&s, "st2", "st2_1", st2);
    assert_eq!(code, 202, "{st2_again}");
    assert_eq!(st2_again["duplicate"], true, "{st2_again}");
    assert_eq!(st2_again["id"], st2_first["id"]);
    let (code, first) = deliver(&s, "msg_1", r#"{"name": "once"}"#);
    assert_eq!(code, 202, "{first}");
    let first_id = first["id"].as_str().expect("id").to_string();
    let (code, again) = deliver(&s, "msg_1", r#"{"name": "once"}"#);
    assert_eq!(code, 202, "{again}");
    assert_eq!(again["id"], first_id.as_str(), "{again}");
    assert_eq!(again["duplicate"], true);
    let (code, other) = deliver(&s, "msg_2", r#"{"name": "twice"}"#);
    assert_eq!(code, 202);
    assert_ne!(other["id"], first_id.as_str());

    s.executions_of(&first_id, 1);
    assert_eq!(s.terminate().code(), Some(0));
    s.restart();
    let (code, after) = deliver(&s, "msg_1", r#"{"name": "once"}"#);
    assert_eq!(code, 202, "{after}");
    assert_eq!(
        after["id"],
        first_id.as_str(),
        "remembered across a restart: {after}"
    );
    let (_, instances) = s.get("/api/v1/triggerinstances?trigger=core.webhook");
    assert_eq!(
        instances.as_array().expect("array").len(),
        3,
        "two to hello and one to st2: {instances}"
    );
    let execs = s.executions_of(&first_id, 1);
    assert_eq!(execs.len(), 1);
}

/// `execution pause`, `resume` and `rerun --tasks` drive a workflow as the API does.
#[test]
fn workflow_commands_pause_resume_and_rerun_from_a_task() {
    let (_dir, s) = start_with_e2e_pack();
    let out = cli(
        &s,
        &["action", "run", "e2e.flow_pause", "seconds=1", "--async"],
    );
    let all = text(&out);
    assert_eq!(out.status.code(), Some(0), "{all}");
    let id = all
        .split_whitespace()
        .find(|w| w.len() == 26 && w.chars().all(|c| c.is_ascii_alphanumeric()))
        .unwrap_or_else(|| panic!("an execution id in {all}"))
        .to_string();
    let out = cli(&s, &["execution", "pause", &id]);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    assert!(text(&out).contains("paus"), "{}", text(&out));
    s.wait_for(&format!("/api/v1/executions/{id}"), 30, |v| {
        v["status"] == "paused"
    });
    let out = cli(&s, &["execution", "resume", &id]);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    let done = s.wait_for(&format!("/api/v1/executions/{id}"), 30, |v| {
        v["status"] == "succeeded"
    });
    assert_eq!(
        done["result"]["output"]["greeting"],
        "HELLO PAUSED SUCCEEDED"
    );
    let out = cli(&s, &["execution", "pause", &id]);
    assert_ne!(
        out.status.code(),
        Some(0),
        "a finished workflow cannot pause"
    );
    assert!(text(&out).contains("succeeded"), "{}", text(&out));

    let out = cli(&s, &["action", "run", "e2e.flow_gate"]);
    assert_eq!(out.status.code(), Some(1), "{}", text(&out));
    let (_, list) = s.get("/api/v1/executions?action=e2e.flow_gate");
    let failed = list[0]["id"].as_str().expect("id").to_string();
    let (code, _) = s
        .request("PUT", "/api/v1/keys/e2e.gate", Some(r#"{"value": "open"}"#))
        .expect("request");
    assert_eq!(code, 200);
    let out = cli(&s, &["execution", "rerun", &failed, "--tasks", "gate"]);
    let all = text(&out);
    assert_eq!(out.status.code(), Some(0), "{all}");
    assert!(all.contains("passed"), "{all}");
}
