//! `squall run` driven over HTTP as an operator or an alerting system would: webhooks to rules
//! to Rhai actions to stored results, the API's errors, timers, policies, the key-value store,
//! authentication, graceful shutdown, and crashes (SIGKILL) at random points.

use std::path::PathBuf;
use std::time::{Duration, Instant};

use serde_json::{json, Value};

use crate::harness::{is_terminal, repo, write, Squall};

fn e2e_pack() -> PathBuf {
    repo().join("tests/packs/e2e")
}

fn start(extra_packs: &[PathBuf], args: &[&str]) -> (tempfile::TempDir, Squall) {
    let dir = tempfile::tempdir().expect("tempdir");
    let mut packs = vec![e2e_pack()];
    packs.extend(extra_packs.iter().cloned());
    let squall = Squall::start(&dir.path().join("data"), &packs, args);
    (dir, squall)
}

#[test]
fn webhook_runs_a_rule_and_records_everything() {
    let (_dir, s) = start(&[], &[]);
    let (status, ti) = s
        .request_with(
            "POST",
            "/api/v1/webhooks/hello",
            Some(r#"{"name": "ops"}"#),
            &[("X-Request-Id", "r-42")],
        )
        .expect("request");
    assert_eq!(status, 202, "{ti}");
    let ti_id = ti["id"].as_str().expect("trigger instance id").to_string();
    assert_eq!(ti["trigger"], "core.webhook");
    assert_eq!(ti["payload"]["body"]["name"], "ops");

    let execs = s.executions_of(&ti_id, 1);
    let e = &execs[0];
    assert_eq!(e["status"], "succeeded", "{e}");
    assert_eq!(e["action"]["ref"], "core.echo");
    assert_eq!(e["result"]["stdout"], "hello ops (r-42)", "{e}");
    assert_eq!(e["result"]["return_code"], 0, "{e}");
    assert_eq!(e["rule"]["ref"], "e2e.hello");
    assert_eq!(e["log"][0]["message"], "hello ops (r-42)");
    assert!(e["elapsed_seconds"].as_f64().is_some());

    let (_, enforcements) = s.get("/api/v1/ruleenforcements?rule_ref=e2e.hello");
    let enf = enforcements.as_array().expect("list");
    assert_eq!(enf.len(), 1);
    assert_eq!(enf[0]["execution_id"], e["id"]);
    assert_eq!(enf[0]["trigger_instance_id"], ti_id.as_str());

    let (_, instances) = s.get("/api/v1/triggerinstances?trigger=core.st2.webhook");
    assert!(instances
        .as_array()
        .expect("list")
        .iter()
        .any(|t| t["id"] == ti_id.as_str()));
    let (code, one) = s.get(&format!(
        "/api/v1/executions/{}",
        e["id"].as_str().expect("id")
    ));
    assert_eq!(code, 200);
    assert_eq!(one["id"], e["id"]);

    // core.action_finished (st2: core.st2.generic.actiontrigger) fires for every final status.
    s.wait_for(
        "/api/v1/triggerinstances?trigger=core.action_finished",
        10,
        |v| {
            v.as_array().is_some_and(|a| {
                a.iter().any(|t| {
                    t["payload"]["execution_id"] == e["id"] && t["payload"]["status"] == "succeeded"
                })
            })
        },
    );
    let (_, metrics) = s.get("/metrics");
    let text = metrics.as_str().expect("text");
    assert!(
        text.contains("squall_trigger_instances_total{trigger=\"core.webhook\"} 1"),
        "{text}"
    );
    assert!(
        text.contains("squall_rule_matches_total{rule=\"e2e.hello\"} 1"),
        "{text}"
    );
    assert!(
        text.contains("squall_executions{status=\"succeeded\"}"),
        "{text}"
    );
}

#[test]
fn an_action_sees_its_trigger_and_ids_in_ctx() {
    let (_dir, s) = start(&[], &[]);
    let (status, ti) = s
        .request_with(
            "POST",
            "/api/v1/webhooks/context",
            Some(r#"{"n": 5}"#),
            &[("X-Team", "ops")],
        )
        .expect("request");
    assert_eq!(status, 202, "{ti}");
    let ti_id = ti["id"].as_str().expect("trigger instance id").to_string();
    let execs = s.executions_of(&ti_id, 1);
    let e = &execs[0];
    assert_eq!(e["status"], "succeeded", "{e}");
    assert_eq!(
        e["result"],
        json!({
            "execution_id": e["id"],
            "action": "e2e.context",
            "rule": "e2e.context",
            "trigger_instance": ti_id,
            "n": 5,
            "team": "ops",
        })
    );
}

#[test]
fn rendered_parameters_are_cast_and_secrets_masked() {
    let (_dir, s) = start(&[], &[]);
    let (code, _) = s
        .request(
            "PUT",
            "/api/v1/keys/e2e_greeting",
            Some(r#"{"value": "hi"}"#),
        )
        .expect("put");
    assert_eq!(code, 200);
    let (status, ti) = s.post(
        "/api/v1/webhooks/typed",
        r#"{"token": "s3cr3t-value", "count": "7"}"#,
    );
    assert_eq!(status, 202);
    let execs = s.executions_of(ti["id"].as_str().expect("id"), 1);
    let e = &execs[0];
    assert_eq!(e["status"], "succeeded", "{e}");
    assert_eq!(
        e["result"],
        json!({"length": 12, "count": 7, "from_kv": "hi"})
    );
    assert_eq!(e["parameters"]["token"], "********");
    assert_eq!(e["parameters"]["count"], 7);
    let all = s
        .get(&format!(
            "/api/v1/executions/{}",
            e["id"].as_str().expect("id")
        ))
        .1;
    assert!(!all.to_string().contains("s3cr3t-value"));

    // Re-run with the parameters as shown: the masked secret keeps its value.
    let id = e["id"].as_str().expect("id");
    let body = json!({"parameters": e["parameters"]}).to_string();
    let (code, again) = s.post(&format!("/api/v1/executions/{id}/re_run"), &body);
    assert_eq!(code, 201, "{again}");
    let again_id = again["id"].as_str().expect("id");
    let done = s.wait_for(&format!("/api/v1/executions/{again_id}"), 20, |v| {
        is_terminal(v["status"].as_str().unwrap_or(""))
    });
    assert_eq!(done["result"]["length"], 12, "{done}");
    // `reset` without `tasks` is refused, not ignored.
    let (code, refused) = s.post(
        &format!("/api/v1/executions/{id}/re_run"),
        r#"{"reset": ["x"]}"#,
    );
    assert_eq!(code, 400, "{refused}");
}

#[test]
fn api_errors_are_clear() {
    let dir = tempfile::tempdir().expect("tempdir");
    let config = dir.path().join("squall.yaml");
    std::fs::write(&config, "webhook_body_limit: 1024\n").expect("write");
    let s = Squall::start(
        &dir.path().join("data"),
        &[e2e_pack()],
        &["--config", config.to_str().expect("utf-8")],
    );

    let (code, body) = s.post("/api/v1/webhooks/hello", "{\"name\": ");
    assert_eq!(code, 400, "{body}");
    assert!(
        body["error"]
            .as_str()
            .expect("error")
            .contains("not valid JSON"),
        "{body}"
    );

    let (code, body) = s.post("/api/v1/webhooks/nobody-listens", "{}");
    assert_eq!(code, 404, "{body}");
    assert!(body["error"]
        .as_str()
        .expect("error")
        .contains("nobody-listens"));

    let big = format!("{{\"name\": \"{}\"}}", "x".repeat(4096));
    let (code, body) = s.post("/api/v1/webhooks/hello", &big);
    assert_eq!(code, 413);
    assert!(
        body["error"]
            .as_str()
            .expect("error")
            .contains("webhook_body_limit"),
        "{body}"
    );
    // A value serde cannot take is named by its field.
    let (code, body) = s.post(
        "/api/v1/executions",
        r#"{"action": "core.sleep", "parameters": {"seconds": 1e400}}"#,
    );
    assert_eq!(code, 400, "{body}");
    assert!(
        body["error"]
            .as_str()
            .expect("error")
            .contains("field 'parameters.seconds'"),
        "{body}"
    );
    let (code, body) = s
        .request(
            "PUT",
            "/api/v1/keys/x",
            Some(r#"{"value": "x", "ttl": -1}"#),
        )
        .expect("request");
    assert_eq!(code, 400, "{body}");
    assert!(
        body["error"]
            .as_str()
            .expect("error")
            .contains("field 'ttl'"),
        "{body}"
    );
    // The webhook limit is the webhooks': the rest of the API takes larger bodies.
    let value = format!("{{\"value\": \"{}\"}}", "x".repeat(4096));
    let (code, body) = s
        .request("PUT", "/api/v1/keys/big", Some(&value))
        .expect("request");
    assert_eq!(code, 200, "{body}");

    let (code, body) = s.post(
        "/api/v1/executions",
        r#"{"action": "examples.greet", "parameters": {"times": "many", "colour": "red"}}"#,
    );
    assert_eq!(code, 400, "{body}");
    let detail = body["detail"].as_array().expect("detail lists parameters");
    let named: Vec<&str> = detail
        .iter()
        .filter_map(|d| d["parameter"].as_str())
        .collect();
    for p in ["name", "times", "colour"] {
        assert!(named.contains(&p), "{p} not reported: {body}");
    }

    let (code, body) = s.post("/api/v1/executions", r#"{"action": "nope.nothing"}"#);
    assert_eq!(code, 400);
    assert!(body["error"]
        .as_str()
        .expect("error")
        .contains("nope.nothing"));

    let (code, _) = s.get("/api/v1/executions/01HZZZZZZZZZZZZZZZZZZZZZZZ");
    assert_eq!(code, 404);
    let (code, body) = s.get("/api/v1/executions?status=sleeping");
    assert_eq!(code, 400);
    assert!(body["error"].as_str().expect("error").contains("sleeping"));
    let (code, body) = s.post("/api/v1/webhooks/st2", r#"{"payload": {}}"#);
    assert_eq!(code, 400, "{body}");
    // st2's generic webhook naming the webhook trigger itself gives an instance with no url:
    // it sets off no url's rules (nor skips a url's signature check).
    let (code, ti) = s.post(
        "/api/v1/webhooks/st2",
        r#"{"trigger": "core.st2.webhook", "payload": {"headers": {}, "body": {"name": "x"}}}"#,
    );
    assert_eq!(code, 202, "{ti}");
    let id = ti["id"].as_str().expect("id");
    let seen = s.wait_for(&format!("/api/v1/triggerinstances/{id}"), 20, |v| {
        v["status"] == "processed" || v["status"] == "processing_failed"
    });
    assert_eq!(seen["status"], "processed", "{seen}");
    let (_, execs) = s.get(&format!("/api/v1/executions?trigger_instance={id}"));
    assert_eq!(execs, json!([]), "no rule was enforced");

    // Nothing accepted was lost: a good webhook still works after the bad ones.
    let (code, ti) = s.post("/api/v1/webhooks/hello", r#"{"name": "after"}"#);
    assert_eq!(code, 202);
    let execs = s.executions_of(ti["id"].as_str().expect("id"), 1);
    assert_eq!(execs[0]["status"], "succeeded");
}

/// A webhook's body is read by its content type, as st2 reads it; credentials sent with it are
/// not kept in its payload; a body nested too deep to store and read back is refused.
#[test]
fn webhook_bodies_by_content_type_without_credentials() {
    let (_dir, s) = start(&[], &[]);
    let post = |body: &str, headers: &[(&str, &str)]| {
        s.request_with("POST", "/api/v1/webhooks/hello", Some(body), headers)
            .expect("request")
    };
    let form = [("Content-Type", "application/x-www-form-urlencoded")];
    let (code, ti) = post("name=ops&tag=a&tag=b&empty=", &form);
    assert_eq!(code, 202, "{ti}");
    assert_eq!(
        ti["payload"]["body"],
        json!({"name": ["ops"], "tag": ["a", "b"]}),
        "{ti}"
    );
    // `curl -d '{...}'` sends JSON as a form: read as JSON.
    let (code, ti) = post(r#"{"name": "curl"}"#, &form);
    assert_eq!(code, 202, "{ti}");
    assert_eq!(ti["payload"]["body"], json!({"name": "curl"}));
    let (code, ti) = post(
        "just text",
        &[("Content-Type", "text/plain; charset=utf-8")],
    );
    assert_eq!(code, 202, "{ti}");
    assert_eq!(ti["payload"]["body"], "just text");
    let (code, body) = post(
        "--x--",
        &[("Content-Type", "multipart/form-data; boundary=x")],
    );
    assert_eq!(code, 415, "{body}");

    let (code, ti) = post(
        r#"{"name": "secret-free"}"#,
        &[
            ("St2-Api-Key", "k1"),
            ("Authorization", "Bearer k2"),
            ("Cookie", "session=k3"),
            ("X-Auth-Token", "k4"),
            ("X-Request-Id", "kept"),
        ],
    );
    assert_eq!(code, 202, "{ti}");
    let stored = s.wait_for(
        &format!(
            "/api/v1/triggerinstances/{}",
            ti["id"].as_str().expect("id")
        ),
        20,
        |v| v["id"] == ti["id"],
    );
    let headers = stored["payload"]["headers"].to_string();
    for secret in ["k1", "k2", "k3", "k4"] {
        assert!(!headers.contains(secret), "{headers}");
    }
    assert_eq!(stored["payload"]["headers"]["X-Request-Id"], "kept");
    // st2's trace tag is the instance's.
    let (code, ti) = post("{}", &[("St2-Trace-Tag", "deploy-42")]);
    assert_eq!(code, 202, "{ti}");
    assert_eq!(ti["trace_tag"], "deploy-42", "{ti}");
    assert!(
        ti["payload"]["headers"].get("St2-Trace-Tag").is_none(),
        "{ti}"
    );
    let (code, ti) = s.post(
        "/api/v1/webhooks/st2",
        r#"{"trigger": "core.st2.webhook", "payload": {}, "trace_tag": "run-7"}"#,
    );
    assert_eq!(code, 202, "{ti}");
    let id = ti["id"].as_str().expect("id");
    let stored = s.wait_for(&format!("/api/v1/triggerinstances/{id}"), 20, |v| {
        v["id"] == id
    });
    assert_eq!(stored["trace_tag"], "run-7", "{stored}");

    let deep = format!("{}{}", "[".repeat(127), "]".repeat(127));
    let (code, body) = post(&deep, &[]);
    assert_eq!(code, 400, "{body}");
    assert!(
        body["error"].as_str().expect("error").contains("levels"),
        "{body}"
    );
    let fine = format!("{{\"a\": {}1{}}}", "[".repeat(99), "]".repeat(99));
    let (code, ti) = post(&fine, &[]);
    assert_eq!(code, 202, "{ti}");
    // What was accepted reads back.
    let id = ti["id"].as_str().expect("id");
    s.wait_for(&format!("/api/v1/triggerinstances/{id}"), 20, |v| {
        v["id"] == id
    });
}

#[test]
fn lists_page_and_filter_and_errors_are_json() {
    let (_dir, s) = start(&[], &[]);
    let (code, all) = s.get("/api/v1/rules");
    assert_eq!(code, 200);
    let all = all.as_array().expect("array").clone();
    assert!(all.len() >= 3, "{all:?}");
    let (_, one) = s.get("/api/v1/rules?limit=1&offset=1");
    assert_eq!(one, json!([all[1].clone()]));
    // st2's X-Total-Count counts the whole list, not the page.
    let head = response_head(s.port, "/api/v1/rules?limit=1").to_ascii_lowercase();
    assert!(
        head.contains(&format!("x-total-count: {}\r\n", all.len())),
        "{head}"
    );
    // st2's -1: everything.
    let (_, every) = s.get("/api/v1/rules?limit=-1");
    assert_eq!(every.as_array().map(Vec::len), Some(all.len()));
    let (code, _) = s.get("/api/v1/executions?limit=-1");
    assert_eq!(code, 200);
    let (code, body) = s.get("/api/v1/executions?limit=-2");
    assert_eq!(code, 400, "{body}");
    assert!(
        body["error"].as_str().expect("error").contains("-1"),
        "{body}"
    );
    let (_, e2e) = s.get("/api/v1/rules?pack=e2e&enabled=true");
    let e2e = e2e.as_array().expect("array").clone();
    assert!(!e2e.is_empty());
    assert!(e2e
        .iter()
        .all(|r| r["pack"] == "e2e" && r["enabled"] == true));
    let (_, hooks) = s.get("/api/v1/rules?trigger=core.st2.webhook");
    assert!(hooks
        .as_array()
        .expect("array")
        .iter()
        .all(|r| squall_rules_canonical(&r["trigger"]["type"]) == "core.webhook"));
    for path in [
        "/api/v1/actions?limit=2",
        "/api/v1/packs?limit=1",
        "/api/v1/triggertypes?limit=2",
    ] {
        let (code, page) = s.get(path);
        assert_eq!(code, 200, "{path}: {page}");
        let n = page.as_array().expect("array").len();
        assert!((1..=2).contains(&n), "{path}: {page}");
    }
    // One of each by its ref (st2's names too) or id.
    let (code, t) = s.get("/api/v1/triggertypes/core.st2.webhook");
    assert_eq!(code, 200, "{t}");
    assert_eq!(t["ref"], "core.webhook");
    let (code, p) = s.get("/api/v1/packs/e2e");
    assert_eq!(code, 200, "{p}");
    assert_eq!(p["ref"], "e2e");
    for missing in [
        "/api/v1/triggertypes/nope.nothing",
        "/api/v1/packs/nope",
        "/api/v1/ruleenforcements/01HZZZZZZZZZZZZZZZZZZZZZZZ",
    ] {
        let (code, body) = s.get(missing);
        assert_eq!(code, 404, "{missing}: {body}");
    }
    let (code, ti) = s.post("/api/v1/webhooks/hello", r#"{"name": "enf"}"#);
    assert_eq!(code, 202);
    let tid = ti["id"].as_str().expect("id");
    s.executions_of(tid, 1);
    let (_, enfs) = s.get(&format!("/api/v1/ruleenforcements?trigger_instance={tid}"));
    let enf = enfs[0].clone();
    let (code, one) = s.get(&format!(
        "/api/v1/ruleenforcements/{}",
        enf["id"].as_str().expect("id")
    ));
    assert_eq!(code, 200, "{one}");
    assert_eq!(one, enf);
    let (_, core_types) = s.get("/api/v1/triggertypes?pack=core");
    assert!(core_types
        .as_array()
        .expect("array")
        .iter()
        .all(|t| t["pack"] == "core"));

    // Errors axum answers itself come in the API's shape too.
    let (code, body) = s.get("/api/v1/rules?limit=abc");
    assert_eq!(code, 400, "{body}");
    assert!(
        body["error"].as_str().expect("error").contains("limit"),
        "{body}"
    );
    let (code, body) = s
        .request("PATCH", "/api/v1/executions", Some("{}"))
        .expect("request");
    assert_eq!(code, 405, "{body}");
    assert!(
        body["error"].as_str().expect("error").contains("method"),
        "{body}"
    );
    let big = format!("{{\"name\": \"{}\"}}", "x".repeat(2 * 1024 * 1024));
    let (code, body) = s.post("/api/v1/webhooks/hello", &big);
    assert_eq!(code, 413);
    assert!(
        body["error"].as_str().expect("error").contains("limit"),
        "{body}"
    );

    // Key-value values are strings; the system scope only; a pair read can be written back.
    for bad in [
        r#"{"value": 5}"#,
        r#"{"value": null}"#,
        r#"{"value": {"a": 1}}"#,
    ] {
        let (code, body) = s
            .request("PUT", "/api/v1/keys/num", Some(bad))
            .expect("request");
        assert_eq!(code, 400, "{bad}: {body}");
        assert!(body["error"].as_str().expect("error").contains("string"));
    }
    let (code, body) = s
        .request(
            "PUT",
            "/api/v1/keys/k",
            Some(r#"{"value": "v", "scope": "user"}"#),
        )
        .expect("request");
    assert_eq!(code, 400, "{body}");
    let (code, body) = s
        .request(
            "PUT",
            "/api/v1/keys/k",
            Some(r#"{"value": "v", "ttl": 99999999999999}"#),
        )
        .expect("request");
    assert_eq!(code, 400, "{body}");
    assert!(body["error"].as_str().expect("error").contains("ttl"));
    let (code, _) = s
        .request("PUT", "/api/v1/keys/k", Some(r#"{"value": "v"}"#))
        .expect("request");
    assert_eq!(code, 200);
    // What st2's CLI sends with `st2 key set`.
    let st2_cli = r#"{"id": "k", "name": "k", "value": "v", "scope": "st2kv.system", "user": "st2admin", "description": "from st2"}"#;
    let (code, body) = s
        .request("PUT", "/api/v1/keys/k", Some(st2_cli))
        .expect("request");
    assert_eq!(code, 200, "{body}");
    // The names `.` and `..` are not keys: a path could not name them.
    for name in [".", ".."] {
        let (code, body) = s
            .request(
                "PUT",
                &format!("/api/v1/keys/{name}"),
                Some(r#"{"value": "v"}"#),
            )
            .expect("request");
        assert_ne!(code, 200, "{name}: {body}");
    }
    let (_, read) = s.get("/api/v1/keys/k");
    let (code, body) = s
        .request("PUT", "/api/v1/keys/k", Some(&read.to_string()))
        .expect("request");
    assert_eq!(code, 200, "{body}");
    assert_eq!(body["value"], "v");
    // A pair with a TTL written back as read keeps expiring.
    s.request(
        "PUT",
        "/api/v1/keys/brief",
        Some(r#"{"value": "v", "ttl": 600}"#),
    )
    .expect("request");
    let (_, read) = s.get("/api/v1/keys/brief");
    let (code, body) = s
        .request("PUT", "/api/v1/keys/brief", Some(&read.to_string()))
        .expect("request");
    assert_eq!(code, 200, "{body}");
    assert!(body["expire_timestamp"].is_string(), "{body}");
    for i in 0..3 {
        s.request(
            "PUT",
            &format!("/api/v1/keys/page{i}"),
            Some(r#"{"value": "x"}"#),
        )
        .expect("request");
    }
    let (_, page) = s.get("/api/v1/keys?prefix=page&limit=2");
    assert_eq!(page.as_array().expect("array").len(), 2);

    // A header sent twice keeps both values; one that is not UTF-8 is kept, not emptied.
    let (code, ti) = s
        .request_with(
            "POST",
            "/api/v1/webhooks/hello",
            Some(r#"{"name": "h"}"#),
            &[("X-Foo", "a"), ("X-Foo", "b"), ("X-Bin", "caf\u{e9}")],
        )
        .expect("request");
    assert_eq!(code, 202, "{ti}");
    assert_eq!(ti["payload"]["headers"]["X-Foo"], "a, b", "{ti}");
    assert!(!ti["payload"]["headers"]["X-Bin"]
        .as_str()
        .expect("kept")
        .is_empty());
}

/// The status line and headers of a GET.
fn response_head(port: u16, path: &str) -> String {
    use std::io::{Read, Write};
    let mut stream = std::net::TcpStream::connect(("127.0.0.1", port)).expect("connect");
    write!(
        stream,
        "GET {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n"
    )
    .expect("send");
    let mut raw = String::new();
    stream.read_to_string(&mut raw).expect("read");
    raw.split("\r\n\r\n").next().unwrap_or_default().to_string() + "\r\n"
}

/// st2's trigger names as squall's (`core.st2.webhook` is `core.webhook`).
fn squall_rules_canonical(t: &Value) -> String {
    match t.as_str().unwrap_or_default() {
        "core.st2.webhook" => "core.webhook".to_string(),
        other => other.to_string(),
    }
}

#[test]
fn executions_from_the_api_cancel_and_rerun() {
    let (_dir, s) = start(&[], &[]);
    let (code, e) = s.post(
        "/api/v1/executions",
        r#"{"action": "examples.greet", "parameters": {"name": "api", "times": "2"}}"#,
    );
    assert_eq!(code, 201, "{e}");
    let id = e["id"].as_str().expect("id").to_string();
    let done = s.wait_for(&format!("/api/v1/executions/{id}"), 20, |v| {
        is_terminal(v["status"].as_str().unwrap_or(""))
    });
    assert_eq!(done["status"], "succeeded");
    assert_eq!(done["result"]["lines"], json!(["hello, api", "hello, api"]));

    let (code, again) = s.post(
        &format!("/api/v1/executions/{id}/re_run"),
        r#"{"parameters": {"loud": true}}"#,
    );
    assert_eq!(code, 201);
    let again_id = again["id"].as_str().expect("id").to_string();
    let done = s.wait_for(&format!("/api/v1/executions/{again_id}"), 20, |v| {
        is_terminal(v["status"].as_str().unwrap_or(""))
    });
    assert_eq!(done["result"]["lines"], json!(["HELLO, API", "HELLO, API"]));
    assert_eq!(done["rerun_of"], id.as_str());

    let (_, slow) = s.post(
        "/api/v1/executions",
        r#"{"action": "e2e.slow", "parameters": {"seconds": 60}}"#,
    );
    let slow_id = slow["id"].as_str().expect("id").to_string();
    s.wait_for(&format!("/api/v1/executions/{slow_id}"), 20, |v| {
        v["status"] == "running"
    });
    let started = Instant::now();
    let (code, _) = s
        .request("DELETE", &format!("/api/v1/executions/{slow_id}"), None)
        .expect("delete");
    assert_eq!(code, 200);
    let done = s.wait_for(&format!("/api/v1/executions/{slow_id}"), 10, |v| {
        is_terminal(v["status"].as_str().unwrap_or(""))
    });
    assert_eq!(done["status"], "canceled");
    assert!(started.elapsed() < Duration::from_secs(5));

    let (_, list) = s.get("/api/v1/executions?action=examples.greet&status=succeeded");
    assert_eq!(list.as_array().expect("list").len(), 2);
    let (_, list) = s.get("/api/v1/executions?action=examples.greet&limit=1&offset=1");
    assert_eq!(list.as_array().expect("list").len(), 1);
    assert_eq!(
        list[0]["id"],
        id.as_str(),
        "newest first, so offset 1 is the first run"
    );
}

#[test]
fn interval_timer_fires() {
    let (_dir, s) = start(&[repo().join("tests/packs/e2e_timers")], &[]);
    let v = s.wait_for(
        "/api/v1/executions?rule=e2e_timers.every_second&status=succeeded",
        15,
        |v| v.as_array().is_some_and(|a| a.len() >= 2),
    );
    assert!(
        v[0]["result"]["stdout"]
            .as_str()
            .expect("text")
            .starts_with("tick at "),
        "{v}"
    );
    let (_, instances) = s.get("/api/v1/triggerinstances?trigger=core.interval_timer");
    let t = &instances[0];
    assert_eq!(
        t["trigger_parameters"],
        json!({"unit": "seconds", "delta": 1})
    );
    assert!(t["payload"]["executed_at"].is_string());
}

/// Requests `action` (sleeping `first` seconds), waits until it runs, then requests it again
/// (sleeping `second`): the first one's id and the second request's answer.
fn second_while_first_runs(s: &Squall, action: &str, first: f64, second: f64) -> (String, Value) {
    let request = |seconds: f64| {
        let body = json!({"action": action, "parameters": {"seconds": seconds}}).to_string();
        let (code, e) = s.post("/api/v1/executions", &body);
        assert_eq!(code, 201, "{e}");
        e
    };
    let first_id = request(first)["id"].as_str().expect("id").to_string();
    s.wait_for(&format!("/api/v1/executions/{first_id}"), 20, |v| {
        v["status"] == "running"
    });
    (first_id, request(second))
}

#[test]
fn retry_and_concurrency_policies() {
    let (_dir, s) = start(&[], &[]);
    let (code, _) = s.post("/api/v1/executions", r#"{"action": "e2e.fail"}"#);
    assert_eq!(code, 201);
    let v = s.wait_for("/api/v1/executions?action=e2e.fail", 20, |v| {
        v.as_array().is_some_and(|a| {
            a.len() == 3
                && a.iter()
                    .all(|e| is_terminal(e["status"].as_str().unwrap_or("")))
        })
    });
    let attempts: Vec<u64> = v
        .as_array()
        .expect("list")
        .iter()
        .filter_map(|e| e["attempt"].as_u64())
        .collect();
    assert_eq!(attempts, vec![3, 2, 1], "newest first");
    assert!(v
        .as_array()
        .expect("list")
        .iter()
        .all(|e| e["status"] == "failed"));
    assert!(v[0]["result"]["error"]
        .as_str()
        .expect("error")
        .contains("always fails"));

    let (first_id, second) = second_while_first_runs(&s, "e2e.limited", 3.0, 3.0);
    let second_id = second["id"].as_str().expect("id").to_string();
    let done = s.wait_for(&format!("/api/v1/executions/{second_id}"), 20, |v| {
        is_terminal(v["status"].as_str().unwrap_or(""))
    });
    assert_eq!(done["status"], "canceled", "{done}");
    assert!(done["result"]["error"]
        .as_str()
        .expect("reason")
        .contains("one_at_a_time"));
    let done = s.wait_for(&format!("/api/v1/executions/{first_id}"), 20, |v| {
        is_terminal(v["status"].as_str().unwrap_or(""))
    });
    assert_eq!(done["status"], "succeeded");

    // Delayed by a policy: it runs once the first ends, keeps its request's start time (as
    // in st2, its elapsed time counts the wait) and drops the reason it waited.
    let (_, second) = second_while_first_runs(&s, "e2e.queued", 1.0, 0.1);
    let second_id = second["id"].as_str().expect("id").to_string();
    let delayed = s.wait_for(&format!("/api/v1/executions/{second_id}"), 20, |v| {
        v["status"] == "delayed"
    });
    assert!(delayed["reason"]
        .as_str()
        .expect("reason")
        .contains("one_in_turn"));
    let done = s.wait_for(&format!("/api/v1/executions/{second_id}"), 20, |v| {
        is_terminal(v["status"].as_str().unwrap_or(""))
    });
    assert_eq!(done["status"], "succeeded", "{done}");
    assert_eq!(done["start_timestamp"], second["start_timestamp"]);
    assert!(done["reason"].is_null(), "{done}");
    assert!(
        done["elapsed_seconds"].as_f64().expect("elapsed") > 0.3,
        "{done}"
    );
}

/// An action that fails while SIGTERM's grace period runs keeps its retry: recorded `delayed`,
/// not started while squall stops, run by the next start.
#[test]
fn a_failure_during_the_grace_period_is_retried_by_the_next_start() {
    let (_dir, mut s) = start(&[], &[]);
    let (code, e) = s.post(
        "/api/v1/executions",
        r#"{"action": "e2e.fail_slowly", "parameters": {"seconds": 1}}"#,
    );
    assert_eq!(code, 201, "{e}");
    let id = e["id"].as_str().expect("id").to_string();
    s.wait_for(&format!("/api/v1/executions/{id}"), 20, |v| {
        v["status"] == "running"
    });
    assert_eq!(s.terminate().code(), Some(0));
    s.restart();
    let v = s.wait_for("/api/v1/executions?action=e2e.fail_slowly", 20, |v| {
        v.as_array().is_some_and(|a| {
            a.len() == 2
                && a.iter()
                    .all(|e| is_terminal(e["status"].as_str().unwrap_or("")))
        })
    });
    let list = v.as_array().expect("list");
    assert_eq!(list[0]["attempt"], 2, "{v}");
    assert_eq!(list[1]["id"], id.as_str(), "{v}");
    assert!(list.iter().all(|e| e["status"] == "failed"), "{v}");
}

/// The concurrency policy holds whatever way an execution comes to start: delayed ones
/// dispatched again after `kill -9` start one at a time too.
#[test]
fn concurrency_policy_holds_after_a_restart() {
    let (_dir, mut s) = start(&[], &[]);
    let mut ids = Vec::new();
    for _ in 0..3 {
        let (code, e) = s.post(
            "/api/v1/executions",
            r#"{"action": "e2e.queued", "parameters": {"seconds": 1}}"#,
        );
        assert_eq!(code, 201, "{e}");
        ids.push(e["id"].as_str().expect("id").to_string());
    }
    s.wait_for(
        "/api/v1/executions?action=e2e.queued&status=delayed",
        20,
        |v| v.as_array().is_some_and(|a| a.len() == 2),
    );
    s.kill9();
    s.restart();
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let (_, running) = s.get("/api/v1/executions?action=e2e.queued&status=running");
        let n = running.as_array().map_or(0, Vec::len);
        assert!(n <= 1, "{n} running at once: {running}");
        let (_, all) = s.get("/api/v1/executions?action=e2e.queued");
        let all = all.as_array().cloned().unwrap_or_default();
        if all
            .iter()
            .all(|e| is_terminal(e["status"].as_str().unwrap_or("")))
        {
            let succeeded = all.iter().filter(|e| e["status"] == "succeeded").count();
            assert!(succeeded >= 2, "the delayed ones ran: {all:?}");
            break;
        }
        assert!(Instant::now() < deadline, "not finished: {all:?}");
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// A retry waits for its policy's delay, even when squall restarts meanwhile.
#[test]
fn a_retry_keeps_its_delay_across_a_restart() {
    let (_dir, mut s) = start(&[], &[]);
    let (code, e) = s.post("/api/v1/executions", r#"{"action": "e2e.fail_later"}"#);
    assert_eq!(code, 201, "{e}");
    let retry = s.wait_for("/api/v1/executions?action=e2e.fail_later", 20, |v| {
        v.as_array().is_some_and(|a| a.len() == 2)
    });
    let first_end = retry[1]["end_timestamp"]
        .as_str()
        .expect("ended")
        .to_string();
    assert_eq!(retry[0]["status"], "delayed", "{retry}");
    s.kill9();
    s.restart();
    let list = s.wait_for("/api/v1/executions?action=e2e.fail_later", 20, |v| {
        v.as_array()
            .is_some_and(|a| a.len() == 2 && is_terminal(a[0]["status"].as_str().unwrap_or("")))
    });
    let at = |t: &str| chrono::DateTime::parse_from_rfc3339(t).expect("timestamp");
    let waited = at(list[0]["end_timestamp"].as_str().expect("ended")) - at(&first_end);
    assert!(
        waited.num_milliseconds() >= 2900,
        "the retry ran {waited} after the failure: {list}"
    );
}

/// st2's `delay` on a request and on a re-run: the execution waits that long, as `delayed`.
#[test]
fn a_requested_delay_holds_the_execution_back() {
    let (_dir, s) = start(&[], &[]);
    let (code, e) = s.post(
        "/api/v1/executions",
        r#"{"action": "core.noop", "delay": 1500}"#,
    );
    assert_eq!(code, 201, "{e}");
    assert_eq!(e["status"], "delayed", "{e}");
    let id = e["id"].as_str().expect("id").to_string();
    let done = s.wait_for(&format!("/api/v1/executions/{id}"), 20, |v| {
        v["status"] == "succeeded"
    });
    let at =
        |t: &Value| chrono::DateTime::parse_from_rfc3339(t.as_str().expect("time")).expect("time");
    let waited = at(&done["end_timestamp"]) - at(&done["start_timestamp"]);
    assert!(waited.num_milliseconds() >= 1400, "{done}");

    let (code, again) = s.post(
        &format!("/api/v1/executions/{id}/re_run"),
        r#"{"delay": 1000}"#,
    );
    assert_eq!(code, 201, "{again}");
    assert_eq!(again["status"], "delayed");
    let again_id = again["id"].as_str().expect("id");
    s.wait_for(&format!("/api/v1/executions/{again_id}"), 20, |v| {
        v["status"] == "succeeded"
    });

    // Canceled while it waits: it says it was canceled, not why it was waiting.
    let (code, held) = s.post(
        "/api/v1/executions",
        r#"{"action": "core.noop", "delay": 60000}"#,
    );
    assert_eq!(code, 201, "{held}");
    let held_id = held["id"].as_str().expect("id");
    let (code, canceled) = s
        .request("DELETE", &format!("/api/v1/executions/{held_id}"), None)
        .expect("request");
    assert!(code == 200 || code == 204, "{code} {canceled}");
    let done = s.wait_for(&format!("/api/v1/executions/{held_id}"), 20, |v| {
        v["status"] == "canceled"
    });
    assert_eq!(done["reason"], "canceled before it started", "{done}");
}

/// Log lines are stored while the action runs: the API shows them, and an execution abandoned
/// by `kill -9` keeps what it wrote.
#[test]
fn log_lines_are_stored_while_an_action_runs() {
    let (_dir, mut s) = start(&[], &[]);
    let (code, e) = s.post(
        "/api/v1/executions",
        r#"{"action": "e2e.ticker", "parameters": {"n": 100, "every": 0.1}}"#,
    );
    assert_eq!(code, 201, "{e}");
    let id = e["id"].as_str().expect("id").to_string();
    let path = format!("/api/v1/executions/{id}");
    let live = s.wait_for(&path, 20, |v| {
        v["status"] == "running" && v["log"].as_array().is_some_and(|l| l.len() >= 3)
    });
    assert_eq!(live["log"][0]["message"], "tick 0", "{live}");
    // A key-value write answers once the store is flushed, with what was queued before it.
    let (code, _) = s
        .request("PUT", "/api/v1/keys/flushed", Some(r#"{"value": "yes"}"#))
        .expect("put");
    assert_eq!(code, 200);
    s.kill9();
    s.restart();
    let after = s.wait_for(&path, 20, |v| v["status"] == "abandoned");
    let kept = after["log"].as_array().map_or(0, Vec::len);
    assert!(kept >= 3, "{after}");
    // st2's output endpoint: the lines as text.
    let (code, out) = s.get(&format!("{path}/output"));
    assert_eq!(code, 200);
    assert!(
        out.as_str().expect("text").starts_with("tick 0\ntick 1\n"),
        "{out}"
    );
    let (_, none) = s.get(&format!("{path}/output?output_type=stderr"));
    assert_eq!(none, json!(""));
    let (code, _) = s.get(&format!("{path}/output?output_type=both"));
    assert_eq!(code, 400);

    // Lines held back between two writes are written once the interval has passed, not
    // only with the next line or the result.
    let (_, e) = s.post(
        "/api/v1/executions",
        r#"{"action": "e2e.quiet", "parameters": {"seconds": 3}}"#,
    );
    let quiet = format!("/api/v1/executions/{}", e["id"].as_str().expect("id"));
    let seen = s.wait_for(&quiet, 20, |v| {
        v["status"] == "running" && v["log"].as_array().is_some_and(|l| l.len() == 3)
    });
    assert_eq!(seen["log"][2]["message"], "three", "{seen}");
}

#[test]
fn key_value_store_ttl_and_secrets() {
    let (dir, mut s) = start(&[], &[]);
    let (code, k) = s
        .request(
            "PUT",
            "/api/v1/keys/db_password",
            Some(r#"{"value": "hunter2-clear", "secret": true}"#),
        )
        .expect("put");
    assert_eq!(code, 200, "{k}");
    assert_eq!(k["encrypted"], true);
    assert_ne!(k["value"], "hunter2-clear");
    let (_, k) = s.get("/api/v1/keys/db_password");
    assert_ne!(k["value"], "hunter2-clear");
    let (_, k) = s.get("/api/v1/keys/db_password?decrypt=true");
    assert_eq!(k["value"], "hunter2-clear");
    // Written back as read (encrypted), it keeps its value; a new value without `secret`
    // stays secret.
    let (_, read) = s.get("/api/v1/keys/db_password");
    let (code, body) = s
        .request("PUT", "/api/v1/keys/db_password", Some(&read.to_string()))
        .expect("put");
    assert_eq!(code, 200, "{body}");
    let (_, k) = s.get("/api/v1/keys/db_password?decrypt=true");
    assert_eq!(k["value"], "hunter2-clear");
    s.request(
        "PUT",
        "/api/v1/keys/db_password",
        Some(r#"{"value": "hunter3-clear"}"#),
    )
    .expect("put");
    let (_, k) = s.get("/api/v1/keys/db_password");
    assert_eq!(k["secret"], true, "{k}");
    assert_ne!(k["value"], "hunter3-clear");
    let (_, k) = s.get("/api/v1/keys/db_password?decrypt=true");
    assert_eq!(k["value"], "hunter3-clear");

    s.request("PUT", "/api/v1/keys/app.limit", Some(r#"{"value": "10"}"#))
        .expect("put");
    s.request("PUT", "/api/v1/keys/app.owner", Some(r#"{"value": "ops"}"#))
        .expect("put");
    let (_, list) = s.get("/api/v1/keys?prefix=app.");
    assert_eq!(list.as_array().expect("list").len(), 2);

    s.request(
        "PUT",
        "/api/v1/keys/short_lived",
        Some(r#"{"value": "x", "ttl": 1}"#),
    )
    .expect("put");
    let (code, _) = s.get("/api/v1/keys/short_lived");
    assert_eq!(code, 200);
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let (code, _) = s.get("/api/v1/keys/short_lived");
        if code == 404 {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "a key with ttl 1 was still there after 10 s"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    let (code, _) = s
        .request("DELETE", "/api/v1/keys/app.owner", None)
        .expect("delete");
    assert_eq!(code, 204);
    let (code, _) = s.get("/api/v1/keys/app.owner");
    assert_eq!(code, 404);

    // At rest, the secret is not in clear anywhere in the data dir.
    assert_eq!(s.terminate().code(), Some(0));
    let mut found = false;
    for entry in walk(&dir.path().join("data")) {
        let bytes = std::fs::read(&entry).unwrap_or_default();
        for clear in [&b"hunter2-clear"[..], &b"hunter3-clear"[..]] {
            if bytes.windows(clear.len()).any(|w| w == clear) {
                found = true;
            }
        }
    }
    assert!(!found, "the secret was stored in clear");
    s.restart();
    let (_, k) = s.get("/api/v1/keys/db_password?decrypt=true");
    assert_eq!(k["value"], "hunter3-clear", "secrets survive a restart");
}

fn walk(dir: &std::path::Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    if let Ok(entries) = std::fs::read_dir(dir) {
        for e in entries.flatten() {
            let p = e.path();
            if p.is_dir() {
                out.extend(walk(&p));
            } else {
                out.push(p);
            }
        }
    }
    out
}

#[test]
fn authentication_with_api_keys() {
    let (_dir, mut s) = start(&[], &[]);
    let (code, created) = s.post("/api/v1/apikeys", r#"{"user": "ci"}"#);
    assert_eq!(code, 201, "{created}");
    let key = created["key"].as_str().expect("key shown once").to_string();
    let (_, admin) = s.post("/api/v1/apikeys", r#"{"user": "admin"}"#);
    let admin_key = admin["key"].as_str().expect("key").to_string();
    let (_, listed) = s.get("/api/v1/apikeys");
    assert!(
        !listed.to_string().contains(&key),
        "keys are stored hashed and never listed"
    );
    assert_eq!(s.terminate().code(), Some(0));

    s.extra_args.push("--auth".into());
    s.restart();
    let (code, body) = s.get("/api/v1/executions");
    assert_eq!(code, 401, "{body}");
    assert!(body["error"].as_str().expect("error").contains("API key"));
    let (code, _) = s
        .request_with("GET", "/api/v1/executions", None, &[("St2-Api-Key", &key)])
        .expect("request");
    assert_eq!(code, 200);
    let bearer = format!("Bearer {key}");
    let (code, _) = s
        .request_with(
            "GET",
            "/api/v1/executions",
            None,
            &[("Authorization", &bearer)],
        )
        .expect("request");
    assert_eq!(code, 200);
    let (code, _) = s
        .request_with(
            "GET",
            "/api/v1/executions",
            None,
            &[("St2-Api-Key", "wrong")],
        )
        .expect("request");
    assert_eq!(code, 401);
    let (code, _) = s.get("/healthz");
    assert_eq!(code, 200);

    // The scheme's name is case-insensitive.
    let lower = format!("bearer {key}");
    let (code, _) = s
        .request_with("GET", "/api/v1/rules", None, &[("Authorization", &lower)])
        .expect("request");
    assert_eq!(code, 200);
    // An execution is recorded as its key's user, and a key cannot act as someone else.
    let (code, e) = s
        .request_with(
            "POST",
            "/api/v1/executions",
            Some(r#"{"action": "core.noop"}"#),
            &[("St2-Api-Key", &key)],
        )
        .expect("request");
    assert_eq!(code, 201, "{e}");
    assert_eq!(e["context"]["user"], "ci", "{e}");
    let (code, refused) = s
        .request_with(
            "POST",
            "/api/v1/executions",
            Some(r#"{"action": "core.noop", "user": "admin"}"#),
            &[("St2-Api-Key", &key)],
        )
        .expect("request");
    assert_eq!(code, 403, "{refused}");
    assert!(refused["error"].as_str().expect("error").contains("admin"));
    // A key created with no user named is the caller's.
    let (code, second) = s
        .request_with("POST", "/api/v1/apikeys", None, &[("St2-Api-Key", &key)])
        .expect("request");
    assert_eq!(code, 201, "{second}");
    assert_eq!(second["user"], "ci");
    // Nor can it make a key for someone else.
    let (code, refused) = s
        .request_with(
            "POST",
            "/api/v1/apikeys",
            Some(r#"{"user": "admin"}"#),
            &[("St2-Api-Key", &key)],
        )
        .expect("request");
    assert_eq!(code, 403, "{refused}");
    // admin's key can.
    let (code, ops) = s
        .request_with(
            "POST",
            "/api/v1/apikeys",
            Some(r#"{"user": "ops"}"#),
            &[("St2-Api-Key", &admin_key)],
        )
        .expect("request");
    assert_eq!(code, 201, "{ops}");
    assert_eq!(ops["user"], "ops");
    // A key sees and deletes only its own user's keys; admin's sees and deletes all.
    let (code, seen) = s
        .request_with("GET", "/api/v1/apikeys", None, &[("St2-Api-Key", &key)])
        .expect("request");
    assert_eq!(code, 200, "{seen}");
    let users: Vec<&str> = seen
        .as_array()
        .expect("list")
        .iter()
        .map(|k| k["user"].as_str().expect("user"))
        .collect();
    assert_eq!(users, ["ci", "ci"], "{seen}");
    let (_, all) = s
        .request_with(
            "GET",
            "/api/v1/apikeys",
            None,
            &[("St2-Api-Key", &admin_key)],
        )
        .expect("request");
    assert_eq!(all.as_array().expect("list").len(), 4, "{all}");
    let admin_id = admin["id"].as_str().expect("id");
    let (code, refused) = s
        .request_with(
            "DELETE",
            &format!("/api/v1/apikeys/{admin_id}"),
            None,
            &[("St2-Api-Key", &key)],
        )
        .expect("request");
    assert_eq!(code, 403, "{refused}");
    let (code, _) = s
        .request_with("GET", "/api/v1/rules", None, &[("St2-Api-Key", &admin_key)])
        .expect("request");
    assert_eq!(code, 200, "admin's key still works");
    let second_id = second["id"].as_str().expect("id");
    let (code, _) = s
        .request_with(
            "DELETE",
            &format!("/api/v1/apikeys/{second_id}"),
            None,
            &[("St2-Api-Key", &key)],
        )
        .expect("request");
    assert_eq!(code, 204);
    let ops_id = ops["id"].as_str().expect("id");
    let (code, _) = s
        .request_with(
            "DELETE",
            &format!("/api/v1/apikeys/{ops_id}"),
            None,
            &[("St2-Api-Key", &admin_key)],
        )
        .expect("request");
    assert_eq!(code, 204);
}

#[test]
fn first_api_key_can_be_created_from_loopback_when_auth_is_on() {
    let (_dir, s) = start(&[], &["--auth"]);
    let (code, _) = s.get("/api/v1/executions");
    assert_eq!(code, 401);
    // Requests racing for the first key: one gets it.
    let port = s.port;
    let racers: Vec<_> = (0..8)
        .map(|_| {
            std::thread::spawn(move || {
                Squall::client_for(port)
                    .request("POST", "/api/v1/apikeys", Some(r#"{"user": "first"}"#))
                    .expect("request")
            })
        })
        .collect();
    let answers: Vec<(u16, Value)> = racers
        .into_iter()
        .map(|t| t.join().expect("racer"))
        .collect();
    let made: Vec<&Value> = answers
        .iter()
        .filter(|(code, _)| *code == 201)
        .map(|(_, body)| body)
        .collect();
    assert_eq!(made.len(), 1, "{answers:?}");
    assert!(answers.iter().all(|(code, _)| *code == 201 || *code == 401));
    let created = made[0].clone();
    let (code, _) = s.post("/api/v1/apikeys", r#"{"user": "second"}"#);
    assert_eq!(code, 401, "once a key exists, creating another needs one");
    let key = created["key"].as_str().expect("key");
    let (code, _) = s
        .request_with(
            "POST",
            "/api/v1/apikeys",
            Some("{}"),
            &[("St2-Api-Key", key)],
        )
        .expect("request");
    assert_eq!(code, 201);
    // admin's key makes keys for other users (as `squall apikey create --user ci` does).
    let (code, admin) = s
        .request_with(
            "POST",
            "/api/v1/apikeys",
            Some(r#"{"user": "admin"}"#),
            &[("St2-Api-Key", key)],
        )
        .expect("request");
    assert_eq!(code, 403, "first's key is not admin's: {admin}");
}

/// A start that cannot listen changes nothing: it fails before it opens the data dir (so it
/// neither recovers nor runs what a previous run left).
#[test]
fn a_start_on_a_busy_port_fails_before_it_touches_the_data_dir() {
    let dir = tempfile::tempdir().expect("tempdir");
    let busy = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    let port = busy.local_addr().expect("addr").port();
    let data = dir.path().join("data");
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_squall"))
        .args([
            "run",
            "--listen",
            &format!("127.0.0.1:{port}"),
            "--data-dir",
        ])
        .arg(&data)
        .arg("--packs")
        .arg(repo().join("packs"))
        .output()
        .expect("runs");
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("cannot listen"), "{stderr}");
    assert!(!data.exists(), "the data dir was not opened");
}

#[test]
fn refuses_to_listen_beyond_loopback_without_auth() {
    let dir = tempfile::tempdir().expect("tempdir");
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_squall"))
        .args(["run", "--listen", "0.0.0.0:0", "--data-dir"])
        .arg(dir.path().join("data"))
        .arg("--packs")
        .arg(repo().join("packs"))
        .output()
        .expect("runs");
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("without authentication"));
}

#[test]
fn sigterm_lets_running_executions_finish() {
    let (_dir, mut s) = start(&[], &[]);
    // A client following the event stream: it sees the action's output as st2 shows it, and
    // does not hold the shutdown back (its stream ends once the running executions finished).
    let mut stream = std::net::TcpStream::connect(("127.0.0.1", s.port)).expect("connect");
    stream
        .set_read_timeout(Some(Duration::from_secs(20)))
        .expect("timeout");
    std::io::Write::write_all(
        &mut stream,
        b"GET /api/v1/stream HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n",
    )
    .expect("send");
    let mut head = [0u8; 12];
    std::io::Read::read_exact(&mut stream, &mut head).expect("the stream answers");
    assert_eq!(&head, b"HTTP/1.1 200");
    let (_, e) = s.post(
        "/api/v1/executions",
        r#"{"action": "e2e.slow", "parameters": {"seconds": 1.5}}"#,
    );
    let id = e["id"].as_str().expect("id").to_string();
    let mut seen = String::new();
    while !seen.contains(r#""data":"sleeping\n""#) {
        let mut buf = [0u8; 4096];
        let n = std::io::Read::read(&mut stream, &mut buf).expect("the stream goes on");
        assert!(n > 0, "the stream ended early: {seen}");
        seen.push_str(&String::from_utf8_lossy(&buf[..n]));
    }
    assert!(seen.contains(r#""output_type":"stdout""#), "{seen}");
    s.wait_for(&format!("/api/v1/executions/{id}"), 20, |v| {
        v["status"] == "running"
    });
    assert_eq!(s.terminate().code(), Some(0), "{}", s.log());
    assert!(
        !s.log().contains("connections still open"),
        "the stream ended with the shutdown: {}",
        s.log()
    );
    s.restart();
    let (_, done) = s.get(&format!("/api/v1/executions/{id}"));
    assert_eq!(done["status"], "succeeded", "{done}");
    assert_eq!(done["result"], "woke up");
}

#[test]
fn sigterm_cancels_what_outlasts_the_grace_period_and_says_so() {
    let dir = tempfile::tempdir().expect("tempdir");
    let config = dir.path().join("squall.yaml");
    std::fs::write(&config, "shutdown_grace_seconds: 1\n").expect("write");
    let mut s = Squall::start(
        &dir.path().join("data"),
        &[e2e_pack()],
        &["--config", config.to_str().expect("utf-8")],
    );
    let (_, e) = s.post(
        "/api/v1/executions",
        r#"{"action": "e2e.ticker", "parameters": {"n": 600, "every": 0.1}}"#,
    );
    let id = e["id"].as_str().expect("id").to_string();
    s.wait_for(&format!("/api/v1/executions/{id}"), 20, |v| {
        v["status"] == "running"
    });
    assert_eq!(s.terminate().code(), Some(0), "{}", s.log());
    s.restart();
    let (_, done) = s.get(&format!("/api/v1/executions/{id}"));
    assert_eq!(done["status"], "canceled", "{done}");
    assert!(
        done["result"]["error"]
            .as_str()
            .expect("error")
            .contains("grace period"),
        "{done}"
    );
}

#[test]
fn bad_packs_are_reported_and_skipped_or_refused_with_strict() {
    let dir = tempfile::tempdir().expect("tempdir");
    let bad = dir.path().join("bad");
    write(&bad, "pack.yaml", "ref: bad\nname: bad\n");
    write(&bad, "rules/typo.yaml", "name: typo\nenabled: true\ntrigger: {type: core.webhook}\naction: {ref: core.noop}\ncritera: {}\n");
    // The same rule twice (the second file is not loaded) and a rule on a missing action.
    let rule = "name: twice\npack: bad\nenabled: true\ntrigger: {type: core.webhook, parameters: {url: twice}}\naction: {ref: core.noop}\n";
    write(&bad, "rules/a_twice.yaml", rule);
    write(&bad, "rules/b_twice.yaml", rule);
    write(&bad, "rules/orphan.yaml", "name: orphan\npack: bad\nenabled: true\ntrigger: {type: core.webhook, parameters: {url: orphan}}\naction: {ref: nope.missing}\n");
    // Parameters on a trigger whose instances carry none: it could never match.
    write(&bad, "rules/never.yaml", "name: never\npack: bad\nenabled: true\ntrigger: {type: bad.deployed, parameters: {env: prod}}\naction: {ref: core.noop}\n");
    // A pack whose pack.yaml does not parse is listed as not loaded, with why.
    let broken = dir.path().join("broken");
    write(&broken, "pack.yaml", "ref: broken\nname: [\n");
    let core = repo().join("packs/core");
    let s = Squall::start(
        &dir.path().join("data"),
        &[bad.clone(), broken.clone(), core],
        &[],
    );
    let (_, rules) = s.get("/api/v1/rules?pack=bad");
    let refs: Vec<&str> = rules
        .as_array()
        .expect("array")
        .iter()
        .filter_map(|r| r["ref"].as_str())
        .collect();
    assert_eq!(refs, ["bad.twice"], "{rules}");
    let (code, ti) = s.post("/api/v1/webhooks/twice", "{}");
    assert_eq!(code, 202);
    // An instance is marked processed in the transaction that writes all its enforcements.
    let tid = ti["id"].as_str().expect("id");
    s.wait_for(&format!("/api/v1/triggerinstances/{tid}"), 20, |v| {
        v["status"] == "processed"
    });
    let (_, enfs) = s.get(&format!("/api/v1/ruleenforcements?trigger_instance={tid}"));
    assert_eq!(
        enfs.as_array().expect("array").len(),
        1,
        "one rule, one enforcement: {enfs}"
    );
    assert_eq!(s.executions_of(tid, 1).len(), 1);
    let (code, _) = s.post("/api/v1/webhooks/orphan", "{}");
    assert_eq!(code, 404, "a rule whose action is missing is not loaded");
    let (_, packs) = s.get("/api/v1/packs");
    let unloaded = packs
        .as_array()
        .expect("list")
        .iter()
        .find(|p| p["loaded"] == false)
        .cloned()
        .expect("the broken pack listed");
    assert!(
        unloaded["problems"].to_string().contains("pack.yaml"),
        "{unloaded}"
    );
    let all = packs.to_string();
    for said in [
        "b_twice.yaml",
        "also defined",
        "nope.missing",
        "never match",
    ] {
        assert!(all.contains(said), "{said}: {all}");
    }
    let (_, packs) = s.get("/api/v1/packs");
    let bad_pack = packs
        .as_array()
        .expect("list")
        .iter()
        .find(|p| p["ref"] == "bad")
        .cloned()
        .expect("bad pack listed");
    assert!(
        bad_pack["problems"][0]
            .as_str()
            .expect("problem")
            .contains("typo.yaml:5"),
        "{bad_pack}"
    );
    drop(s);

    let out = std::process::Command::new(env!("CARGO_BIN_EXE_squall"))
        .args(["run", "--strict", "--listen", "127.0.0.1:0", "--data-dir"])
        .arg(dir.path().join("data2"))
        .arg("--packs")
        .arg(repo().join("packs"))
        .arg("--packs")
        .arg(&bad)
        .output()
        .expect("runs");
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("critera"));
}

/// A burst of webhooks with SIGKILL at random points, many times: after each restart every
/// acknowledged (202) trigger instance is processed exactly once and no execution is stuck.
#[test]
fn crash_safety_under_sigkill() {
    let (_dir, mut s) = start(&[], &[]);
    let mut acknowledged: Vec<String> = Vec::new();
    let mut seed: u64 = 0x5eed_1234_abcd_0001;
    let mut next = move || {
        seed ^= seed << 13;
        seed ^= seed >> 7;
        seed ^= seed << 17;
        seed
    };
    for round in 0..8 {
        let port = s.port;
        let kill_after = Duration::from_millis(50 + next() % 400);
        let sender = std::thread::spawn(move || {
            let mut ok = Vec::new();
            let client = Squall::client_for(port);
            for i in 0..400 {
                let body = format!("{{\"seconds\": {}}}", if i % 10 == 0 { "0.3" } else { "0" });
                match client.request("POST", "/api/v1/webhooks/burst", Some(&body)) {
                    Ok((202, v)) => ok.push(v["id"].as_str().unwrap_or_default().to_string()),
                    Ok(_) | Err(_) => break,
                }
            }
            ok
        });
        std::thread::sleep(kill_after);
        s.kill9();
        let ok = sender.join().expect("sender");
        acknowledged.extend(ok);
        s.restart();
        assert!(round < 100);
    }
    assert!(!acknowledged.is_empty());
    // Every acknowledged instance ends processed with exactly one enforcement, and every
    // execution reaches a final status (abandoned included: e2e.slow is not idempotent).
    s.assert_enforced_once(&acknowledged);
    let all = s.wait_for("/api/v1/executions?action=e2e.slow&limit=10000", 60, |v| {
        v.as_array().is_some_and(|a| {
            a.iter()
                .all(|e| is_terminal(e["status"].as_str().unwrap_or("")))
        })
    });
    let execs = all.as_array().expect("list");
    assert!(
        execs.len() >= acknowledged.len(),
        "{} executions for {} instances",
        execs.len(),
        acknowledged.len()
    );
    let abandoned: Vec<&Value> = execs
        .iter()
        .filter(|e| e["status"] == "abandoned")
        .collect();
    println!(
        "{} webhooks acknowledged over 8 kills; {} executions, {} abandoned",
        acknowledged.len(),
        execs.len(),
        abandoned.len()
    );
    for e in abandoned {
        assert!(
            e["reason"]
                .as_str()
                .unwrap_or("")
                .contains("not idempotent"),
            "{e}"
        );
    }
}

#[test]
fn packs_reload_on_sighup_and_on_request() {
    let dir = tempfile::tempdir().expect("tempdir");
    let extra = dir.path().join("live");
    write(&extra, "pack.yaml", "ref: live\nname: live\n");
    let s = Squall::start(&dir.path().join("data"), std::slice::from_ref(&extra), &[]);
    let (code, _) = s.get("/api/v1/rules/live.first");
    assert_eq!(code, 404);

    write(
        &extra,
        "rules/first.yaml",
        "name: first\nenabled: true\ntrigger: {type: core.webhook, parameters: {url: first}}\naction: {ref: core.noop}\n",
    );
    let status = std::process::Command::new("kill")
        .args(["-HUP", &s.child.id().to_string()])
        .status()
        .expect("kill");
    assert!(status.success());
    s.wait_for("/api/v1/rules", 10, |v| {
        v.as_array()
            .is_some_and(|a| a.iter().any(|r| r["ref"] == "live.first"))
    });
    let (code, _) = s.post("/api/v1/webhooks/first", "{}");
    assert_eq!(code, 202, "the reloaded rule's webhook is live");

    write(
        &extra,
        "rules/second.yaml",
        "name: second\nenabled: true\ntrigger: {type: core.webhook}\naction: {ref: live.missing}\n",
    );
    let (code, summary) = s.post("/api/v1/packs/reload", "");
    assert_eq!(code, 200);
    assert!(
        summary["problems"].to_string().contains("live.missing"),
        "{summary}"
    );
    let (code, _) = s.post("/api/v1/webhooks/first", "{}");
    assert_eq!(code, 202, "a bad file is skipped; the rest keeps working");
}

/// `action_max_operations` sets the sandbox's count of operations; 0 leaves a runaway loop to the
/// action's timeout alone.
#[test]
fn the_operation_limit_is_a_setting() {
    let dir = tempfile::tempdir().expect("tempdir");
    let spin = dir.path().join("spin");
    crate::harness::one_action_pack(
        &spin,
        "spin",
        "forever",
        "timeout: 2\n",
        "let n = 0;\nloop { n += 1; }\n",
    );
    for (limit, status, words) in [
        (10_000, "failed", "limit of 10000 operations"),
        (0, "timeout", ""),
    ] {
        let config = dir.path().join(format!("squall-{limit}.yaml"));
        std::fs::write(&config, format!("action_max_operations: {limit}\n")).expect("write");
        let s = Squall::start(
            &dir.path().join(format!("data-{limit}")),
            std::slice::from_ref(&spin),
            &["--config", config.to_str().expect("utf-8")],
        );
        let (code, e) = s.post("/api/v1/executions", r#"{"action": "spin.forever"}"#);
        assert_eq!(code, 201, "{e}");
        let id = e["id"].as_str().expect("id");
        let done = s.wait_for(&format!("/api/v1/executions/{id}"), 20, |v| {
            is_terminal(v["status"].as_str().unwrap_or(""))
        });
        assert_eq!(done["status"], status, "{done}");
        assert!(done["result"].to_string().contains(words), "{done}");
    }
}

/// A reload keeps the timers whose rules did not change: an interval timer keeps its phase, so
/// reloads more frequent than its period do not keep it from firing (as in st2).
#[test]
fn interval_timers_keep_running_across_reloads() {
    let dir = tempfile::tempdir().expect("tempdir");
    let extra = dir.path().join("ticks");
    write(&extra, "pack.yaml", "ref: ticks\nname: ticks\n");
    write(
        &extra,
        "rules/every2s.yaml",
        "name: every2s\nenabled: true\ntrigger: {type: core.st2.IntervalTimer, parameters: {unit: seconds, delta: 2}}\naction: {ref: core.noop}\n",
    );
    let s = Squall::start(
        &dir.path().join("data"),
        &[repo().join("packs/core"), extra],
        &[],
    );
    // Reloads one after another, far more often than the period, until the timer has fired
    // twice (a timer restarted by each reload would never fire).
    let deadline = Instant::now() + Duration::from_secs(20);
    let mut reloads = 0;
    loop {
        let (code, _) = s.post("/api/v1/packs/reload", "");
        assert_eq!(code, 200);
        reloads += 1;
        let (_, fired) = s.get("/api/v1/triggerinstances?trigger=core.interval_timer");
        if fired.as_array().is_some_and(|a| a.len() >= 2) {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "the 2 s timer fired fewer than twice in 20 s of {reloads} reloads: {fired}"
        );
    }
}

/// A pack's config: settings the schema does not declare are kept (and reported), defaults
/// apply; a config that does not fit its schema fails the pack's actions with why, rather than
/// running them with no config.
#[test]
fn pack_configs_apply_defaults_keep_extras_and_fail_actions_when_invalid() {
    let dir = tempfile::tempdir().expect("tempdir");
    let cfgpack = dir.path().join("cfg");
    write(&cfgpack, "pack.yaml", "ref: cfg\nname: cfg\n");
    write(
        &cfgpack,
        "config.schema.yaml",
        "region: {type: string, required: true}\nlimit: {type: integer, default: 5}\n",
    );
    write(
        &cfgpack,
        "actions/show.yaml",
        "name: show\nrunner_type: rhai\nentry_point: show.rhai\n",
    );
    write(&cfgpack, "actions/show.rhai", "ctx.config\n");
    let configs = dir.path().join("configs");
    write(&configs, "cfg.yaml", "region: eu\nextra: 1\n");
    let s = Squall::start(
        &dir.path().join("data"),
        std::slice::from_ref(&cfgpack),
        &["--configs", configs.to_str().expect("utf-8")],
    );
    let run = |s: &Squall| {
        let (code, e) = s.post("/api/v1/executions", r#"{"action": "cfg.show"}"#);
        assert_eq!(code, 201, "{e}");
        let id = e["id"].as_str().expect("id").to_string();
        s.wait_for(&format!("/api/v1/executions/{id}"), 20, |v| {
            is_terminal(v["status"].as_str().unwrap_or(""))
        })
    };
    let done = run(&s);
    assert_eq!(done["status"], "succeeded", "{done}");
    assert_eq!(
        done["result"],
        json!({"region": "eu", "limit": 5, "extra": 1})
    );
    let (_, pack) = s.get("/api/v1/packs/cfg");
    assert!(pack["problems"].to_string().contains("extra"), "{pack}");

    write(&configs, "cfg.yaml", "region: eu\nlimit: lots\n");
    let (code, _) = s.post("/api/v1/packs/reload", "");
    assert_eq!(code, 200);
    let done = run(&s);
    assert_eq!(done["status"], "failed", "{done}");
    let error = done["result"]["error"].as_str().expect("error");
    assert!(
        error.contains("limit") && error.contains("cfg.yaml"),
        "{error}"
    );
}

/// Under `--strict` a reload with problems is refused, as a start is: what was loaded stays.
#[test]
fn a_strict_reload_with_problems_changes_nothing() {
    let dir = tempfile::tempdir().expect("tempdir");
    let live = dir.path().join("live");
    write(&live, "pack.yaml", "ref: live\nname: live\n");
    let rule = "name: first\nenabled: true\ntrigger: {type: core.webhook, parameters: {url: first}}\naction: {ref: core.noop}\n";
    write(&live, "rules/first.yaml", rule);
    let s = Squall::start(
        &dir.path().join("data"),
        std::slice::from_ref(&live),
        &["--strict"],
    );
    let (code, _) = s.post("/api/v1/webhooks/first", "{}");
    assert_eq!(code, 202);
    write(
        &live,
        "rules/first.yaml",
        &rule.replace("trigger:", "triger:"),
    );
    let (code, summary) = s.post("/api/v1/packs/reload", "");
    assert_eq!(code, 200);
    assert_eq!(summary["applied"], false, "{summary}");
    assert!(
        summary["problems"].to_string().contains("first.yaml"),
        "{summary}"
    );
    let (code, _) = s.post("/api/v1/webhooks/first", "{}");
    assert_eq!(code, 202, "the rule loaded before still listens");
}

#[test]
fn workflows_run_their_tasks_as_child_executions() {
    let (_dir, s) = start(&[], &[]);
    let (code, e) = s.post(
        "/api/v1/executions",
        r#"{"action": "e2e.flow", "parameters": {"name": "ops"}}"#,
    );
    assert_eq!(code, 201, "{e}");
    let id = e["id"].as_str().expect("id").to_string();
    let done = s.wait_for(&format!("/api/v1/executions/{id}"), 20, |v| {
        is_terminal(v["status"].as_str().unwrap_or(""))
    });
    assert_eq!(done["status"], "succeeded", "{done}");
    assert_eq!(
        done["result"]["output"],
        json!({"greeting": "hello ops", "shouted": "HELLO OPS"})
    );
    let (_, children) = s.get(&format!("/api/v1/executions?parent={id}"));
    let tasks: Vec<&str> = children
        .as_array()
        .expect("list")
        .iter()
        .filter_map(|c| c["task"].as_str())
        .collect();
    assert_eq!(tasks, vec!["shout", "greet"], "newest first");
    assert!(children
        .as_array()
        .expect("list")
        .iter()
        .all(|c| c["status"] == "succeeded" && c["parent"] == id.as_str()));

    let (_, e) = s.post("/api/v1/executions", r#"{"action": "e2e.flow_fail"}"#);
    let id = e["id"].as_str().expect("id").to_string();
    let done = s.wait_for(&format!("/api/v1/executions/{id}"), 20, |v| {
        is_terminal(v["status"].as_str().unwrap_or(""))
    });
    assert_eq!(done["status"], "failed", "{done}");
    assert!(
        done["result"]["errors"].to_string().contains("boom"),
        "{done}"
    );
    let (_, children) = s.get(&format!("/api/v1/executions?parent={id}"));
    assert_eq!(
        children.as_array().map(Vec::len),
        Some(1),
        "a workflow's task is not retried by action policies: {children}"
    );
}

/// kill -9 while a workflow's task runs: after the restart an idempotent task runs again and the
/// workflow completes; a task that is not idempotent is abandoned and the workflow fails on it.
/// Either way nothing stays running.
#[test]
fn workflows_survive_sigkill() {
    let (_dir, mut s) = start(&[], &[]);
    let (_, safe) = s.post(
        "/api/v1/executions",
        r#"{"action": "e2e.flow_slow", "parameters": {"idempotent_sleep": true}}"#,
    );
    let (_, unsafe_) = s.post("/api/v1/executions", r#"{"action": "e2e.flow_slow"}"#);
    let safe = safe["id"].as_str().expect("id").to_string();
    let unsafe_ = unsafe_["id"].as_str().expect("id").to_string();
    for id in [&safe, &unsafe_] {
        s.wait_for(&format!("/api/v1/executions?parent={id}"), 20, |v| {
            v.as_array()
                .is_some_and(|a| a.iter().any(|c| c["status"] == "running"))
        });
    }
    s.kill9();
    s.restart();
    let done = s.wait_for(&format!("/api/v1/executions/{safe}"), 30, |v| {
        is_terminal(v["status"].as_str().unwrap_or(""))
    });
    assert_eq!(done["status"], "succeeded", "{done}");
    let done = s.wait_for(&format!("/api/v1/executions/{unsafe_}"), 30, |v| {
        is_terminal(v["status"].as_str().unwrap_or(""))
    });
    assert_eq!(done["status"], "failed", "{done}");
    let (_, children) = s.get(&format!("/api/v1/executions?parent={unsafe_}"));
    let slow = children
        .as_array()
        .and_then(|a| a.iter().find(|c| c["task"] == "slow").cloned())
        .expect("the slow task");
    assert_eq!(slow["status"], "abandoned", "{slow}");
    for id in [&safe, &unsafe_] {
        let (_, children) = s.get(&format!("/api/v1/executions?parent={id}"));
        assert!(
            children
                .as_array()
                .expect("list")
                .iter()
                .all(|e| is_terminal(e["status"].as_str().unwrap_or(""))),
            "nothing stays running: {children}"
        );
    }
}

#[test]
fn throttled_rules_fire_at_most_max_times_per_window_and_group() {
    let (_dir, s) = start(&[], &[]);
    let mut ids = Vec::new();
    for host in ["web-1", "web-1", "web-1", "web-2"] {
        let (code, ti) = s.post(
            "/api/v1/webhooks/throttled",
            &format!("{{\"host\": \"{host}\"}}"),
        );
        assert_eq!(code, 202);
        ids.push(ti["id"].as_str().expect("id").to_string());
    }
    let enforcements = s.wait_for("/api/v1/ruleenforcements?rule_ref=e2e.throttled", 20, |v| {
        v.as_array().is_some_and(|a| a.len() == 4)
    });
    let throttled: Vec<&Value> = enforcements
        .as_array()
        .expect("list")
        .iter()
        .filter(|e| e["execution_id"].is_null())
        .collect();
    assert_eq!(throttled.len(), 1, "{enforcements}");
    assert_eq!(throttled[0]["trigger_instance_id"], ids[2].as_str());
    assert!(throttled[0]["failure_reason"]
        .as_str()
        .unwrap_or("")
        .contains("throttled"));
    let runs = s.wait_for("/api/v1/executions?rule=e2e.throttled", 20, |v| {
        v.as_array().is_some_and(|a| {
            a.len() == 3
                && a.iter()
                    .all(|e| is_terminal(e["status"].as_str().unwrap_or("")))
        })
    });
    let hosts: Vec<&str> = runs
        .as_array()
        .expect("list")
        .iter()
        .filter_map(|e| e["result"]["stdout"].as_str())
        .collect();
    assert_eq!(hosts.iter().filter(|h| **h == "web-1").count(), 2);
    assert_eq!(hosts.iter().filter(|h| **h == "web-2").count(), 1);
}

/// The value of an unlabelled (or fully labelled) gauge in `/metrics`' text.
fn gauge(text: &str, name: &str) -> Option<f64> {
    text.lines().find_map(|line| {
        line.strip_prefix(name)?
            .strip_prefix(' ')?
            .trim()
            .parse()
            .ok()
    })
}

#[test]
fn metrics_report_memory_disk_and_the_store_writers_backlog() {
    let (_dir, s) = start(&[], &["--store-cache-mb", "16"]);
    let (status, ti) = s.post("/api/v1/webhooks/hello", r#"{"name": "ops"}"#);
    assert_eq!(status, 202, "{ti}");
    let ti_id = ti["id"].as_str().expect("trigger instance id").to_string();
    assert_eq!(s.executions_of(&ti_id, 1)[0]["status"], "succeeded");
    // Once the execution is stored, nothing waits for the store's writer.
    let metrics = s.wait_for("/metrics", 10, |m| {
        gauge(
            m.as_str().unwrap_or_default(),
            "squall_store_writer_backlog_records",
        ) == Some(0.0)
    });
    let text = metrics.as_str().unwrap_or_default();
    assert_eq!(
        gauge(text, "squall_store_writer_backlog_records"),
        Some(0.0),
        "{text}"
    );
    let rss = gauge(text, "squall_process_resident_memory_bytes").expect("resident memory");
    assert!(rss > 1e6 && rss < 4e9, "{rss}");
    let store = gauge(text, "squall_store_disk_bytes{part=\"store\"}").expect("store bytes");
    assert!(store > 0.0, "{text}");
    assert!(gauge(text, "squall_store_disk_bytes{part=\"journal\"}").is_some());
}
