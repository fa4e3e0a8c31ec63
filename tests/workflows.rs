//! Workflows under `squall run`, as an operator drives them over the API: pause and resume,
//! cancel, subworkflows (and the cascade of pause, resume and cancel into them), and a re-run
//! from the failed task that keeps what succeeded.

use serde_json::Value;

use crate::harness::{is_terminal, repo, Squall};

fn start() -> (tempfile::TempDir, Squall) {
    let dir = tempfile::tempdir().expect("tempdir");
    let squall = Squall::start(
        &dir.path().join("data"),
        &[repo().join("tests/packs/e2e")],
        &[],
    );
    (dir, squall)
}

fn run(s: &Squall, action: &str, parameters: &str) -> String {
    let (code, e) = s.post(
        "/api/v1/executions",
        &format!(r#"{{"action": "{action}", "parameters": {parameters}}}"#),
    );
    assert_eq!(code, 201, "{e}");
    e["id"].as_str().expect("id").to_string()
}

fn set_status(s: &Squall, id: &str, status: &str) -> (u16, Value) {
    s.request(
        "PUT",
        &format!("/api/v1/executions/{id}"),
        Some(&format!(r#"{{"status": "{status}"}}"#)),
    )
    .expect("request")
}

fn wait_status(s: &Squall, id: &str, want: &str) -> Value {
    s.wait_for(&format!("/api/v1/executions/{id}"), 30, |v| {
        v["status"] == want
    })
}

fn wait_end(s: &Squall, id: &str) -> Value {
    s.wait_for(&format!("/api/v1/executions/{id}"), 30, |v| {
        is_terminal(v["status"].as_str().unwrap_or(""))
    })
}

fn children(s: &Squall, id: &str) -> Vec<Value> {
    let (_, list) = s.get(&format!("/api/v1/executions?parent={id}"));
    list.as_array().cloned().unwrap_or_default()
}

fn tasks_of(s: &Squall, id: &str) -> Vec<String> {
    let mut tasks: Vec<String> = children(s, id)
        .iter()
        .filter_map(|c| c["task"].as_str().map(str::to_string))
        .collect();
    tasks.reverse();
    tasks
}

/// The id of a workflow's one task, once it exists.
fn only_child(s: &Squall, id: &str) -> String {
    s.wait_for(&format!("/api/v1/executions?parent={id}"), 30, |v| {
        v.as_array().is_some_and(|a| a.len() == 1)
    })[0]["id"]
        .as_str()
        .expect("id")
        .to_string()
}

fn wait_task_running(s: &Squall, id: &str, task: &str) {
    s.wait_for(&format!("/api/v1/executions?parent={id}"), 30, |v| {
        v.as_array().is_some_and(|a| {
            a.iter()
                .any(|c| c["task"] == task && c["status"] == "running")
        })
    });
}

#[test]
fn a_paused_workflow_starts_nothing_until_resumed() {
    let (_dir, s) = start();
    let id = run(&s, "e2e.flow_pause", r#"{"seconds": 1}"#);
    wait_task_running(&s, &id, "first");
    let (code, e) = set_status(&s, &id, "pausing");
    assert_eq!(code, 200, "{e}");
    assert_eq!(e["status"], "pausing", "the running task goes on: {e}");
    wait_status(&s, &id, "paused");
    // Paused: the next task has not started, and does not while it stays paused.
    std::thread::sleep(std::time::Duration::from_millis(1500));
    assert_eq!(tasks_of(&s, &id), ["first"]);
    assert_eq!(
        s.get(&format!("/api/v1/executions/{id}")).1["status"],
        "paused"
    );

    let (code, e) = set_status(&s, &id, "resuming");
    assert_eq!(code, 200, "{e}");
    let done = wait_end(&s, &id);
    assert_eq!(done["status"], "succeeded", "{done}");
    assert_eq!(
        done["result"]["output"]["greeting"],
        "HELLO PAUSED SUCCEEDED"
    );
    assert_eq!(tasks_of(&s, &id), ["first", "second", "greet"]);

    // Bad requests say why.
    let (code, e) = set_status(&s, &id, "resuming");
    assert_eq!(code, 409, "{e}");
    assert!(e.to_string().contains("succeeded"), "{e}");
    let (code, e) = set_status(&s, &id, "sleeping");
    assert_eq!(code, 400, "{e}");
    let plain = run(&s, "core.echo", r#"{"message": "x"}"#);
    let (code, e) = set_status(&s, &plain, "pausing");
    assert_eq!(code, 400, "{e}");
    assert!(e.to_string().contains("not a workflow"), "{e}");
}

#[test]
fn subworkflows_run_as_tasks_and_pause_resume_and_cancel_with_their_parent() {
    let (_dir, s) = start();
    // A subworkflow is a task whose result is the inner workflow's {output}.
    let id = run(&s, "e2e.flow_nested", r#"{"seconds": 0.2}"#);
    let done = wait_end(&s, &id);
    assert_eq!(done["status"], "succeeded", "{done}");
    assert_eq!(
        done["result"]["output"]["inner"]["greeting"],
        "HELLO PAUSED SUCCEEDED"
    );
    let inner = children(&s, &id);
    assert_eq!(inner.len(), 1, "{inner:?}");
    assert_eq!(inner[0]["action"]["ref"], "e2e.flow_pause");
    let inner_id = inner[0]["id"].as_str().expect("id");
    assert_eq!(tasks_of(&s, inner_id), ["first", "second", "greet"]);
    // st2's children endpoint: every level by default, parents before their children.
    let ids = |v: &Value| -> Vec<String> {
        v.as_array()
            .expect("array")
            .iter()
            .map(|c| c["id"].as_str().expect("id").to_string())
            .collect()
    };
    let mut want = vec![inner_id.to_string()];
    let mut grandchildren = children(&s, inner_id);
    grandchildren.reverse();
    want.extend(ids(&Value::Array(grandchildren)));
    let (code, two) = s.get(&format!("/api/v1/executions/{id}/children?depth=2"));
    assert_eq!(code, 200, "{two}");
    assert_eq!(ids(&two), want);
    let (_, all) = s.get(&format!("/api/v1/executions/{id}/children"));
    let all = ids(&all);
    assert!(all.starts_with(&want) && all.len() >= want.len(), "{all:?}");
    let (_, one) = s.get(&format!("/api/v1/executions/{id}/children?depth=1"));
    assert_eq!(ids(&one), [inner_id]);
    let (code, _) = s.get("/api/v1/executions/01HZZZZZZZZZZZZZZZZZZZZZZZ/children");
    assert_eq!(code, 404);

    // Pause reaches the subworkflow; the parent is paused once it is.
    let id = run(&s, "e2e.flow_nested", r#"{"seconds": 1}"#);
    let inner = only_child(&s, &id);
    wait_task_running(&s, &inner, "first");
    let (code, e) = set_status(&s, &id, "pausing");
    assert_eq!(code, 200, "{e}");
    wait_status(&s, &inner, "paused");
    wait_status(&s, &id, "paused");
    assert_eq!(tasks_of(&s, &inner), ["first"]);
    set_status(&s, &id, "resuming");
    let done = wait_end(&s, &id);
    assert_eq!(done["status"], "succeeded", "{done}");
    assert_eq!(tasks_of(&s, &inner), ["first", "second", "greet"]);

    // Cancel reaches every level and the running action.
    let id = run(&s, "e2e.flow_nested", r#"{"seconds": 5}"#);
    let inner = only_child(&s, &id);
    wait_task_running(&s, &inner, "first");
    let (code, e) = s
        .request("DELETE", &format!("/api/v1/executions/{id}"), None)
        .expect("request");
    assert_eq!(code, 200, "{e}");
    let done = wait_end(&s, &id);
    assert_eq!(done["status"], "canceled", "{done}");
    assert_eq!(wait_end(&s, &inner)["status"], "canceled");
    let first = children(&s, &inner);
    assert_eq!(first.len(), 1, "nothing after a cancel: {first:?}");
    assert_eq!(
        wait_end(&s, first[0]["id"].as_str().expect("id"))["status"],
        "canceled"
    );
}

#[test]
fn a_failed_workflow_reruns_from_its_failed_task() {
    let (_dir, s) = start();
    let id = run(&s, "e2e.flow_gate", "{}");
    let failed = wait_end(&s, &id);
    assert_eq!(failed["status"], "failed", "{failed}");
    assert!(failed["result"]["errors"]
        .to_string()
        .contains("the gate is closed"));

    // Only a failed task can be re-run, and only for a workflow.
    let (code, e) = s.post(
        &format!("/api/v1/executions/{id}/re_run"),
        r#"{"tasks": ["before"]}"#,
    );
    assert_eq!(code, 409, "{e}");
    assert!(e.to_string().contains("'before' has not failed"), "{e}");

    let (code, _) = s
        .request("PUT", "/api/v1/keys/e2e.gate", Some(r#"{"value": "open"}"#))
        .expect("request");
    assert_eq!(code, 200);
    // Workflows read the key-value store with st2kv().
    let kv = run(&s, "e2e.flow_kv", "{}");
    let done = wait_end(&s, &kv);
    assert_eq!(done["result"]["output"]["said"], "gate is open", "{done}");
    let (code, rerun) = s.post(
        &format!("/api/v1/executions/{id}/re_run"),
        r#"{"tasks": ["gate"]}"#,
    );
    assert_eq!(code, 201, "{rerun}");
    assert_eq!(rerun["rerun_of"], id.as_str());
    let rerun_id = rerun["id"].as_str().expect("id");
    let done = wait_end(&s, rerun_id);
    assert_eq!(done["status"], "succeeded", "{done}");
    // The task that had succeeded kept its result and did not run again.
    assert_eq!(done["result"]["output"]["before"], 1);
    assert_eq!(done["result"]["output"]["gate"], "passed");
    assert_eq!(tasks_of(&s, rerun_id), ["gate"]);
    let (_, before_runs) = s.get("/api/v1/keys/e2e.before_runs");
    assert_eq!(before_runs["value"], "1", "{before_runs}");
    let (_, gate_runs) = s.get("/api/v1/keys/e2e.gate_runs");
    assert_eq!(gate_runs["value"], "2", "{gate_runs}");

    // The original stays as it was.
    assert_eq!(
        s.get(&format!("/api/v1/executions/{id}")).1["status"],
        "failed"
    );
}

/// kill -9 at random points while workflows run, many times: after the last restart every
/// workflow ends, nothing stays running, a step that is not idempotent ran at most once (and
/// exactly once when it is recorded as succeeded), and idempotent workflows all succeed.
#[test]
fn workflows_survive_repeated_kill_9_at_random_points() {
    let (_dir, mut s) = start();
    let mut seed: u64 = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_nanos() as u64)
        .unwrap_or(7)
        | 1;
    let mut random = move |n: u64| {
        seed ^= seed << 13;
        seed ^= seed >> 7;
        seed ^= seed << 17;
        seed % n
    };
    let mut unsafe_ids = Vec::new();
    let mut safe_ids = Vec::new();
    for round in 0..6 {
        for i in 0..3 {
            let tag = format!("r{round}w{i}");
            unsafe_ids.push(run(&s, "e2e.flow_crash", &format!(r#"{{"tag": "{tag}"}}"#)));
        }
        safe_ids.push(run(&s, "e2e.flow_crash_safe", "{}"));
        std::thread::sleep(std::time::Duration::from_millis(100 + random(600)));
        s.kill9();
        s.restart();
    }
    for id in unsafe_ids.iter().chain(&safe_ids) {
        let done = s.wait_for(&format!("/api/v1/executions/{id}"), 60, |v| {
            is_terminal(v["status"].as_str().unwrap_or(""))
        });
        for child in children(&s, id) {
            let status = child["status"].as_str().unwrap_or("");
            assert!(
                is_terminal(status),
                "a task stays {status}: {child}\nof {done}"
            );
        }
    }
    for id in &safe_ids {
        let done = s.get(&format!("/api/v1/executions/{id}")).1;
        assert_eq!(done["status"], "succeeded", "{done}");
        assert_eq!(tasks_of(&s, id).len(), 6, "{:?}", tasks_of(&s, id));
    }
    for id in &unsafe_ids {
        for child in children(&s, id) {
            let key = child["parameters"]["key"].as_str().expect("key");
            let (_, kv) = s.get(&format!("/api/v1/keys/{key}"));
            let runs = kv["value"].as_str().unwrap_or("0").to_string();
            assert!(
                runs == "0" || runs == "1",
                "{key} ran {runs} times: {child}"
            );
            if child["status"] == "succeeded" {
                assert_eq!(runs, "1", "{key} succeeded: {child}");
            }
        }
        // Each step (task, item) has one execution at most: abandoned is never started again.
        let mut steps: Vec<String> = children(&s, id)
            .iter()
            .map(|c| format!("{}[{}]", c["task"], c["item"]))
            .collect();
        let all = steps.len();
        steps.sort();
        steps.dedup();
        assert_eq!(all, steps.len(), "a step ran twice: {steps:?}");
    }
    let abandoned = unsafe_ids
        .iter()
        .flat_map(|id| children(&s, id))
        .filter(|c| c["status"] == "abandoned")
        .count();
    let failed = unsafe_ids
        .iter()
        .filter(|id| s.get(&format!("/api/v1/executions/{id}")).1["status"] == "failed")
        .count();
    eprintln!(
        "{} workflows through 6 kills: {abandoned} steps abandoned, {failed} workflows failed on them",
        unsafe_ids.len() + safe_ids.len()
    );
    // After all that, the same workflows run to success.
    let id = run(&s, "e2e.flow_crash", r#"{"tag": "after"}"#);
    assert_eq!(wait_end(&s, &id)["status"], "succeeded");
}

/// A workflow written as st2's own examples are (YAQL in inline actions, conditions, publish and
/// output; `core.local`'s st2 result): it runs and gives st2's output.
#[test]
fn a_yaql_workflow_as_st2_writes_it_runs_to_its_output() {
    let (_dir, s) = start();
    let id = run(&s, "e2e.yaql_sequential", r#"{"name": "Stanley"}"#);
    let e = wait_end(&s, &id);
    assert_eq!(e["status"], "succeeded", "{e}");
    assert_eq!(
        e["result"]["output"],
        serde_json::json!({"greeting": "STANLEY, HOW ARE YOU?", "words": 4}),
        "{e}"
    );
    assert_eq!(tasks_of(&s, &id), vec!["task1", "task2", "task3"]);
}
