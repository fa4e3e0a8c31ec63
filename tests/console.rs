//! The web console in a real browser (chromium through WebDriver, `browser.rs`): every view
//! renders with its navigation and no console error, an execution row appears live when a
//! webhook fires, a workflow's nodes turn green as its tasks end, a running execution is
//! canceled from the page, a trace leads from an instance to its executions, and with
//! `--auth` a key logs in for a session cookie.

use std::path::{Path, PathBuf};

use serde_json::{json, Value};

use crate::browser::{screenshot_path, Browser};
use crate::harness::{is_terminal, write, Squall};

/// A pack with a slow action, a workflow of three tasks (one over items) and a webhook rule.
fn console_pack(root: &Path) -> PathBuf {
    let pack = root.join("packs/consoletest");
    write(
        &pack,
        "pack.yaml",
        "ref: consoletest\nname: consoletest\nversion: 1.0.0\n",
    );
    write(
        &pack,
        "actions/slow.yaml",
        "name: slow\nrunner_type: rhai\nentry_point: slow.rhai\nparameters:\n  seconds: {type: number, default: 0}\n  token: {type: string, secret: true}\n",
    );
    write(
        &pack,
        "actions/slow.rhai",
        "print(`sleeping ${params.seconds} s`);\ntime::sleep(params.seconds);\nprint(\"awake\");\n\"slept\"\n",
    );
    write(
        &pack,
        "actions/flow.yaml",
        "name: flow\nrunner_type: orquesta\nentry_point: workflows/flow.yaml\nparameters:\n  first: {type: number, default: 2}\n",
    );
    write(
        &pack,
        "actions/workflows/flow.yaml",
        "version: 1.0\ninput: [first]\ntasks:\n  prepare:\n    action: consoletest.slow\n    input: {seconds: \"{{ ctx().first }}\"}\n    next:\n      - when: \"{{ succeeded() }}\"\n        do: [fan, report]\n  fan:\n    with: \"{{ [0.1, 0.2, 0.1] }}\"\n    action: consoletest.slow\n    input: {seconds: \"{{ item() }}\"}\n  report:\n    action: consoletest.slow\n    input: {seconds: 0}\n",
    );
    write(
        &pack,
        "rules/on_hook.yaml",
        "name: on_hook\npack: consoletest\nenabled: true\ntrigger:\n  type: core.webhook\n  parameters: {url: console}\ncriteria:\n  trigger.body.kind: {type: equals, pattern: nap}\naction:\n  ref: consoletest.slow\n  parameters:\n    seconds: \"{{ trigger.body.seconds }}\"\n",
    );
    root.join("packs")
}

fn start(extra: &[&str]) -> (tempfile::TempDir, Squall) {
    let dir = tempfile::tempdir().expect("tempdir");
    let packs = console_pack(dir.path());
    let s = Squall::start(&dir.path().join("data"), &[packs], extra);
    (dir, s)
}

fn request(s: &Squall, action: &str, params: Value) -> String {
    let (code, e) = s.post(
        "/api/v1/executions",
        &json!({"action": action, "parameters": params}).to_string(),
    );
    assert_eq!(code, 201, "{e}");
    e["id"].as_str().expect("id").to_string()
}

fn ended(s: &Squall, id: &str) -> Value {
    s.wait_for(&format!("/api/v1/executions/{id}"), 60, |v| {
        is_terminal(v["status"].as_str().unwrap_or(""))
    })
}

/// Asserts the page has the navigation bar naming every view, and no console error.
fn page_is_whole(b: &Browser, path: &str) {
    let nav = b.text("header nav");
    for view in [
        "Overview",
        "Executions",
        "Rules",
        "Actions",
        "Sensors",
        "Timers",
        "Keys",
        "Packs",
        "Boards",
    ] {
        assert!(
            nav.contains(view),
            "{path}: the navigation lacks {view}: {nav}"
        );
    }
    let h1 = b.text("main h1");
    assert!(!h1.is_empty(), "{path}: no heading");
    let errors = b.console_errors();
    assert!(errors.is_empty(), "{path}: console errors: {errors:?}");
}

#[test]
fn every_view_renders_with_its_navigation_and_no_console_error() {
    let (_dir, s) = start(&[]);
    let Some(b) = Browser::open(s.port) else {
        return;
    };
    // Something to show: a webhook's execution, a workflow, a key (a secret too).
    let (code, ti) = s.post(
        "/api/v1/webhooks/console",
        r#"{"kind": "nap", "seconds": 0}"#,
    );
    assert_eq!(code, 202, "{ti}");
    let ti = ti["id"].as_str().expect("instance id").to_string();
    let flow = request(&s, "consoletest.flow", json!({"first": 0}));
    ended(&s, &flow);
    let (code, _) = s
        .request(
            "PUT",
            "/api/v1/keys/console.plain",
            Some(r#"{"value": "visible"}"#),
        )
        .expect("put key");
    assert_eq!(code, 200);
    let (code, _) = s
        .request(
            "PUT",
            "/api/v1/keys/console.secret",
            Some(r#"{"value": "hunter2", "secret": true}"#),
        )
        .expect("put secret");
    assert_eq!(code, 200);
    let views = [
        "/",
        "/executions",
        "/executions?status=succeeded&action=consoletest.flow",
        &format!("/executions/{flow}"),
        &format!("/trace/{ti}"),
        "/rules",
        "/rules/consoletest.on_hook",
        "/actions",
        "/actions/consoletest.slow",
        "/sensors",
        "/timers",
        "/keys",
        "/packs",
        "/boards",
    ];
    for path in views {
        b.goto(path);
        page_is_whole(&b, path);
    }
    // Secrets stay masked.
    b.goto("/keys");
    let keys = b.text("#keys");
    assert!(
        keys.contains("visible") && !keys.contains("hunter2"),
        "{keys}"
    );
    // Screenshots for the README.
    for (path, name) in [
        ("/".to_string(), "overview.png"),
        ("/executions".to_string(), "executions.png"),
        (format!("/executions/{flow}"), "workflow.png"),
        (format!("/trace/{ti}"), "trace.png"),
    ] {
        b.goto(&path);
        b.screenshot(&screenshot_path(name));
    }
    // Without the script, the same pages read: the server rendered the rows.
    let html = s
        .request("GET", "/executions", None)
        .map(|(_, v)| v.as_str().unwrap_or_default().to_string())
        .unwrap_or_default();
    assert!(
        html.contains("consoletest.flow") && html.contains("<nav"),
        "{html}"
    );
}

#[test]
fn a_webhook_execution_appears_live_and_a_running_one_is_canceled_from_the_page() {
    let (_dir, s) = start(&[]);
    let Some(b) = Browser::open(s.port) else {
        return;
    };
    b.goto("/executions");
    b.wait_js("document.body.dataset.live === '1'", 20);
    // A marker that a reload would lose.
    b.js("window.__kept = 42; return null;");
    let (code, _) = s.post(
        "/api/v1/webhooks/console",
        r#"{"kind": "nap", "seconds": 30}"#,
    );
    assert_eq!(code, 202);
    let id = b.wait_js(
        "(() => { const r = document.querySelector('#executions tbody tr[data-action=\"consoletest.slow\"]'); return r && r.dataset.id; })()",
        20,
    );
    let id = id.as_str().expect("row id").to_string();
    b.wait_js(
        &format!("document.querySelector('tr[data-id=\"{id}\"]').dataset.status === 'running'"),
        20,
    );
    assert_eq!(
        b.js("return window.__kept;"),
        json!(42),
        "the row came without a reload"
    );
    // Cancel from the row.
    b.click(&format!(
        "tr[data-id=\"{id}\"] button[data-command=\"cancel\"]"
    ));
    let e = ended(&s, &id);
    assert_eq!(e["status"], "canceled", "{e}");
    // Back on the list, which shows it canceled.
    b.wait_js(
        &format!("(() => {{ const r = document.querySelector('tr[data-id=\"{id}\"]'); return r && r.dataset.status === 'canceled'; }})()"),
        20,
    );
    let errors = b.console_errors();
    assert!(errors.is_empty(), "{errors:?}");
}

#[test]
fn a_workflows_nodes_turn_green_as_its_tasks_end() {
    let (_dir, s) = start(&[]);
    let Some(b) = Browser::open(s.port) else {
        return;
    };
    let flow = request(&s, "consoletest.flow", json!({"first": 8}));
    b.goto(&format!("/executions/{flow}"));
    // The whole declared graph is there before the later tasks run.
    for task in ["prepare", "fan", "report"] {
        b.wait_js(
            &format!("document.querySelector('#graph g[data-task=\"{task}\"]')"),
            10,
        );
    }
    assert_eq!(
        b.js("return document.querySelector('#graph g[data-task=\"report\"]').getAttribute('class').includes('state-succeeded');"),
        json!(false)
    );
    b.wait_js("document.body.dataset.live === '1'", 20);
    b.js("window.__kept = 7; return null;");
    b.wait_js(
        "document.querySelector('#graph g[data-task=\"prepare\"]').getAttribute('class').includes('state-running')",
        20,
    );
    // The log is followed: the running task's line arrives in its own page... here, the
    // workflow's children table fills as tasks start.
    for task in ["prepare", "fan", "report"] {
        b.wait_js(
            &format!("document.querySelector('#graph g[data-task=\"{task}\"]').getAttribute('class').includes('state-succeeded')"),
            30,
        );
    }
    let badge = b.wait_js(
        "document.querySelector('#graph g[data-task=\"fan\"]').textContent",
        5,
    );
    assert!(badge.as_str().unwrap_or("").contains("3/3"), "{badge}");
    let e = ended(&s, &flow);
    assert_eq!(e["status"], "succeeded", "{e}");
    let errors = b.console_errors();
    assert!(errors.is_empty(), "{errors:?}");
}

#[test]
fn a_running_actions_log_is_followed_live() {
    let (_dir, s) = start(&[]);
    let Some(b) = Browser::open(s.port) else {
        return;
    };
    let id = request(
        &s,
        "consoletest.slow",
        json!({"seconds": 2, "token": "s3cret"}),
    );
    b.goto(&format!("/executions/{id}"));
    b.wait_js(
        "document.getElementById('log').textContent.includes('sleeping 2')",
        20,
    );
    b.wait_js(
        "document.getElementById('log').textContent.includes('awake')",
        20,
    );
    b.wait_js(
        "document.querySelector('#summary [data-status]').textContent === 'succeeded'",
        20,
    );
    let params = b.text("#parameters");
    assert!(
        params.contains("********") && !params.contains("s3cret"),
        "{params}"
    );
}

#[test]
fn a_trace_leads_from_an_instance_to_its_executions() {
    let (_dir, s) = start(&[]);
    let Some(b) = Browser::open(s.port) else {
        return;
    };
    let (code, ti) = s.post(
        "/api/v1/webhooks/console",
        r#"{"kind": "nap", "seconds": 0}"#,
    );
    assert_eq!(code, 202);
    let ti = ti["id"].as_str().expect("id").to_string();
    let (_, other) = s.post("/api/v1/webhooks/console", r#"{"kind": "other"}"#);
    let other = other["id"].as_str().expect("id").to_string();
    let list = s.wait_for(
        &format!("/api/v1/executions?trigger_instance={ti}"),
        30,
        |v| {
            v.as_array()
                .is_some_and(|a| a.len() == 1 && is_terminal(a[0]["status"].as_str().unwrap_or("")))
        },
    );
    let exec_id = list[0]["id"].as_str().expect("id").to_string();
    b.goto(&format!("/trace/{ti}"));
    let verdict = b.text(".verdict[data-rule=\"consoletest.on_hook\"]");
    assert!(verdict.contains("matched"), "{verdict}");
    b.click(&format!("a[href=\"/executions/{exec_id}\"]"));
    b.wait_js(
        &format!("location.pathname === '/executions/{exec_id}'"),
        10,
    );
    // The instance that did not match says which criterion failed, and why.
    b.goto(&format!("/trace/{other}"));
    let verdict = b.text(".verdict[data-rule=\"consoletest.on_hook\"]");
    assert!(
        verdict.contains("no match") && verdict.contains("trigger.body.kind"),
        "{verdict}"
    );
    assert!(verdict.contains("other"), "the value it had: {verdict}");
}

#[test]
fn with_auth_a_key_logs_in_for_a_session_cookie() {
    let (_dir, s) = start(&["--auth"]);
    // The first key, from the machine itself.
    let (code, key) = s.post("/api/v1/apikeys", r#"{"user": "ops"}"#);
    assert_eq!(code, 201, "{key}");
    let key = key["key"].as_str().expect("key").to_string();
    let Some(b) = Browser::open(s.port) else {
        return;
    };
    b.goto("/executions?status=failed");
    b.wait_js("location.pathname === '/login'", 10);
    b.type_into("input[name=key]", "wrong");
    b.click("form.login button");
    b.wait_js("document.querySelector('.error') && document.querySelector('.error').textContent.includes('unknown')", 10);
    b.type_into("input[name=key]", &key);
    b.click("form.login button");
    b.wait_js("location.pathname === '/executions'", 10);
    assert!(
        b.url().ends_with("/executions?status=failed"),
        "{}",
        b.url()
    );
    assert!(!b.url().contains(&key), "the key is never in a URL");
    assert_eq!(
        b.js("return document.cookie.includes('squall_session');"),
        json!(false),
        "HttpOnly"
    );
    assert!(b.text("header nav").contains("ops"));
    // Live updates work over the session too.
    b.wait_js("document.body.dataset.live === '1'", 20);
    // Without a key or a session a page sends to the login page, the API answers 401.
    let (code, _) = s
        .request("POST", "/executions/x/cancel", None)
        .expect("request");
    assert_eq!(code, 303);
    let (code, _) = s
        .request("GET", "/api/v1/executions", None)
        .expect("request");
    assert_eq!(code, 401);
    // The session's cookie alone does not make a change: it must come with the console's
    // Origin (a page elsewhere cannot use it).
    let cookie = format!(
        "squall_session={}",
        b.cookie("squall_session").expect("the session cookie")
    );
    let (code, body) = s
        .request_with("POST", "/executions/x/cancel", None, &[("Cookie", &cookie)])
        .expect("request");
    assert_eq!(code, 403, "{body}");
    let (code, body) = s
        .request_with(
            "DELETE",
            "/api/v1/executions/x",
            None,
            &[("Cookie", &cookie), ("Origin", "http://evil.example")],
        )
        .expect("request");
    assert_eq!(code, 403, "{body}");
    let (code, _) = s
        .request_with(
            "POST",
            "/executions/x/cancel",
            None,
            &[("Cookie", &cookie), ("Origin", "http://127.0.0.1")],
        )
        .expect("request");
    assert_eq!(
        code, 404,
        "the change went through to the (unknown) execution"
    );
    // Log out: back to the login page.
    b.click("form[action=\"/logout\"] button");
    b.wait_js("location.pathname === '/login'", 10);
    b.goto("/");
    b.wait_js("location.pathname === '/login'", 10);
}
