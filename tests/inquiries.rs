//! Inquiries through `squall run`: a workflow asks (`core.ask`) and pauses once nothing else
//! of it runs, a rule on `core.st2.generic.inquiry` hears of it, wrong answers are refused and
//! change nothing, the question survives `kill -9`, StackStorm's own `st2 inquiry respond`
//! answers it and the workflow carries on with the answer; an inquiry nobody answers times out
//! after its ttl and its workflow follows its failure path; users not named cannot answer.

use serde_json::{json, Value};

use crate::harness::{repo, squall, Squall};
use crate::st2_cli::St2;

fn start(dir: &tempfile::TempDir) -> Squall {
    Squall::start(
        &dir.path().join("data"),
        &[repo().join("tests/packs/asking")],
        &[],
    )
}

fn run(s: &Squall, action: &str, parameters: Value) -> String {
    let body = json!({"action": action, "parameters": parameters}).to_string();
    let (code, e) = s.post("/api/v1/executions", &body);
    assert_eq!(code, 201, "{e}");
    e["id"].as_str().expect("id").to_string()
}

fn put(s: &Squall, path: &str, body: Value) -> (u16, Value) {
    s.request("PUT", path, Some(&body.to_string()))
        .expect("request")
}

/// The children of a workflow, by task name.
fn tasks(s: &Squall, id: &str) -> Vec<(String, String)> {
    let (_, children) = s.get(&format!("/api/v1/executions?parent={id}&sort_asc=true"));
    children
        .as_array()
        .cloned()
        .unwrap_or_default()
        .iter()
        .map(|c| {
            (
                c["context"]["orquesta"]["task_name"]
                    .as_str()
                    .or(c["task"].as_str())
                    .unwrap_or_default()
                    .to_string(),
                c["status"].as_str().unwrap_or_default().to_string(),
            )
        })
        .collect()
}

#[test]
fn a_workflow_asks_pauses_survives_kill_9_and_carries_on_with_st2s_answer() {
    let dir = tempfile::tempdir().expect("tempdir");
    let mut s = start(&dir);
    let wf = run(&s, "asking.scale_with_approval", json!({"app": "web"}));

    // The other branch (`note`) runs to its end; then only the question is left and the
    // workflow pauses, as Orquesta pauses it.
    let paused = s.wait_for(&format!("/api/v1/executions/{wf}"), 30, |e| {
        e["status"] == "paused"
    });
    let mut seen = tasks(&s, &wf);
    seen.sort();
    assert_eq!(
        seen,
        [
            ("ask".to_string(), "pending".to_string()),
            ("note".to_string(), "succeeded".to_string()),
            ("start".to_string(), "succeeded".to_string())
        ],
        "{paused}"
    );

    // The API lists the question as st2 shows it.
    let (code, list) = s.get("/api/v1/inquiries");
    assert_eq!(code, 200, "{list}");
    let list = list.as_array().cloned().unwrap_or_default();
    assert_eq!(list.len(), 1, "{list:?}");
    let inquiry = &list[0];
    let id = inquiry["id"].as_str().expect("inquiry id").to_string();
    assert_eq!(inquiry["route"], "ops");
    assert_eq!(inquiry["ttl"], 1440);
    assert_eq!(inquiry["users"], json!([]));
    assert_eq!(
        inquiry["schema"]["properties"]["continue"]["type"],
        "boolean"
    );
    let (code, one) = s.get(&format!("/api/v1/inquiries/{id}"));
    assert_eq!((code, &one), (200, inquiry));
    let (_, ask) = s.get(&format!("/api/v1/executions/{id}"));
    assert_eq!(ask["status"], "pending", "{ask}");
    assert_eq!(ask["action"]["ref"], "core.ask", "{ask}");

    // The rule on core.st2.generic.inquiry ran, with the inquiry's id and route.
    let told = s.wait_for("/api/v1/executions?rule=asking.tell_ops", 20, |v| {
        v.as_array()
            .is_some_and(|a| a.len() == 1 && a[0]["status"] == "succeeded")
    });
    assert_eq!(
        told[0]["result"]["stdout"],
        format!("inquiry {id} waits on ops"),
        "{told}"
    );
    let (_, instances) = s.get("/api/v1/triggerinstances?trigger=core.st2.generic.inquiry");
    assert_eq!(
        instances[0]["payload"],
        json!({"id": id, "route": "ops"}),
        "{instances}"
    );

    // Answers the schema refuses are refused with the reason, and change nothing.
    let path = format!("/api/v1/inquiries/{id}");
    let (code, err) = put(
        &s,
        &path,
        json!({"id": id, "response": {"continue": "yes"}}),
    );
    assert_eq!(code, 400, "{err}");
    assert!(
        err["error"].as_str().unwrap_or("").contains("continue"),
        "{err}"
    );
    let (code, err) = put(&s, &path, json!({"response": {"instances": 5}}));
    assert_eq!(code, 400, "{err}");
    assert!(
        err["error"].as_str().unwrap_or("").contains("required"),
        "{err}"
    );
    let (code, err) = put(&s, &path, json!({"response": "yes"}));
    assert_eq!(code, 400, "{err}");
    let (_, ask) = s.get(&format!("/api/v1/executions/{id}"));
    assert_eq!(ask["status"], "pending", "{ask}");

    // kill -9: the question is still asked and the workflow still paused after the restart.
    s.kill9();
    s.restart();
    let (_, list) = s.get("/api/v1/inquiries");
    assert_eq!(list.as_array().map(Vec::len), Some(1), "{list}");
    let (_, e) = s.get(&format!("/api/v1/executions/{wf}"));
    assert_eq!(e["status"], "paused", "{e}");
    // Resumed by hand while the question is open, it waits again.
    let (code, e) = put(
        &s,
        &format!("/api/v1/executions/{wf}"),
        json!({"status": "resuming"}),
    );
    assert_eq!(code, 200, "{e}");
    s.wait_for(&format!("/api/v1/executions/{wf}"), 20, |e| {
        e["status"] == "paused"
    });

    // StackStorm's CLI lists it and answers it.
    let st2 = St2::new(dir.path(), &s, None);
    let text = st2.run(&["inquiry", "list"]).ok("inquiry list");
    assert!(text.contains(&id), "{text}");
    let text = st2
        .run(&["inquiry", "respond", &id, "-r", r#"{"continue": true}"#])
        .ok("inquiry respond");
    assert!(text.contains(&id), "{text}");

    let done = s.wait_for(&format!("/api/v1/executions/{wf}"), 30, |e| {
        e["status"] == "succeeded" || e["status"] == "failed"
    });
    assert_eq!(done["status"], "succeeded", "{done}");
    assert_eq!(
        done["result"]["output"],
        json!({"instances": 3, "said": "scaling web to 3"}),
        "{done}"
    );
    let (_, ask) = s.get(&format!("/api/v1/executions/{id}"));
    assert_eq!(ask["status"], "succeeded", "{ask}");
    assert_eq!(
        ask["result"]["response"],
        json!({"continue": true, "instances": 3}),
        "{ask}"
    );
    assert_eq!(ask["result"]["route"], "ops", "{ask}");

    // Answered once only.
    let (code, err) = put(&s, &path, json!({"response": {"continue": false}}));
    assert_eq!(code, 400, "{err}");
    assert!(
        err["error"]
            .as_str()
            .unwrap_or("")
            .contains("already been responded"),
        "{err}"
    );
    let (_, list) = s.get("/api/v1/inquiries");
    assert_eq!(list, json!([]));
}

#[test]
fn an_unanswered_inquiry_times_out_after_its_ttl_and_the_workflow_follows_its_failure_path() {
    let dir = tempfile::tempdir().expect("tempdir");
    let s = start(&dir);
    let wf = run(&s, "asking.expiring", json!({}));
    s.wait_for(&format!("/api/v1/executions/{wf}"), 30, |e| {
        e["status"] == "paused"
    });
    // The ttl is one minute; the check runs every few seconds.
    let done = s.wait_for(&format!("/api/v1/executions/{wf}"), 100, |e| {
        e["status"] == "succeeded" || e["status"] == "failed"
    });
    assert_eq!(done["status"], "succeeded", "{done}");
    assert_eq!(
        done["result"]["output"],
        json!({"outcome": "nobody answered"})
    );
    let (_, children) = s.get(&format!("/api/v1/executions?parent={wf}"));
    let ask = &children[0];
    assert_eq!(ask["status"], "timeout", "{ask}");
    let id = ask["id"].as_str().expect("id");
    let (code, err) = s.get(&format!("/api/v1/inquiries/{id}"));
    assert_eq!(code, 400, "{err}");
    assert!(
        err["error"].as_str().unwrap_or("").contains("timed out"),
        "{err}"
    );
}

#[test]
fn only_the_users_an_inquiry_names_may_answer_it() {
    let dir = tempfile::tempdir().expect("tempdir");
    let s = start(&dir);
    let id = run(&s, "core.ask", json!({"users": ["alice"], "route": "dba"}));
    s.wait_for(&format!("/api/v1/executions/{id}"), 20, |e| {
        e["status"] == "pending"
    });

    // Without --auth a request acts as `api`, which is not alice.
    let path = format!("/api/v1/inquiries/{id}");
    let (code, err) = put(&s, &path, json!({"response": {"continue": true}}));
    assert_eq!(code, 403, "{err}");
    assert!(
        err["error"].as_str().unwrap_or("").contains("alice"),
        "{err}"
    );

    // squall's own CLI lists it and says why the answer is refused.
    let api = format!("http://127.0.0.1:{}", s.port);
    let out = squall(&["inquiry", "list", "--api", &api]);
    let text = String::from_utf8_lossy(&out.stdout).to_string();
    assert!(out.status.success(), "{text}");
    assert!(
        text.contains(&id) && text.contains("dba") && text.contains("alice"),
        "{text}"
    );
    let out = squall(&[
        "inquiry",
        "respond",
        &id,
        "--api",
        &api,
        "-r",
        r#"{"continue": true}"#,
    ]);
    assert_eq!(out.status.code(), Some(1));
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("not allowed"),
        "{out:?}"
    );
    let (_, e) = s.get(&format!("/api/v1/executions/{id}"));
    assert_eq!(e["status"], "pending", "{e}");

    // A pending inquiry can be canceled like any execution, and then cannot be answered.
    let (code, e) = s
        .request("DELETE", &format!("/api/v1/executions/{id}"), None)
        .expect("request");
    assert_eq!(code, 200, "{e}");
    let (code, err) = s.get(&path);
    assert_eq!(code, 400, "{err}");
}

#[test]
fn a_question_in_a_subworkflow_pauses_both_and_the_answer_resumes_both() {
    let dir = tempfile::tempdir().expect("tempdir");
    let s = start(&dir);
    let wf = run(&s, "asking.nested", json!({}));
    s.wait_for(&format!("/api/v1/executions/{wf}"), 30, |e| {
        e["status"] == "paused"
    });
    let (_, children) = s.get(&format!("/api/v1/executions?parent={wf}"));
    let sub = children[0]["id"]
        .as_str()
        .expect("the subworkflow")
        .to_string();
    let (_, e) = s.get(&format!("/api/v1/executions/{sub}"));
    assert_eq!(e["status"], "paused", "{e}");
    let (_, list) = s.get("/api/v1/inquiries");
    let id = list[0]["id"].as_str().expect("the inquiry").to_string();
    let (code, r) = put(
        &s,
        &format!("/api/v1/inquiries/{id}"),
        json!({"response": {"continue": true}}),
    );
    assert_eq!(code, 200, "{r}");
    let done = s.wait_for(&format!("/api/v1/executions/{wf}"), 30, |e| {
        e["status"] == "succeeded" || e["status"] == "failed"
    });
    assert_eq!(done["status"], "succeeded", "{done}");
    assert_eq!(done["result"]["output"], json!({"go": true}), "{done}");
    let (_, e) = s.get(&format!("/api/v1/executions/{sub}"));
    assert_eq!(e["status"], "succeeded", "{e}");
}
