//! st2's `action-chain` runner under `squall run`: an ActionChain action in st2's own file
//! format (`tests/packs/chains`) calling core actions, requested and read back over the HTTP
//! API as a user sees it: the chain's status and st2's result shape, and its children, one
//! per node that ran, with the parameters the chain's templates gave them.

use serde_json::{json, Value};

use crate::harness::{is_terminal, repo, Squall};

fn start() -> (tempfile::TempDir, Squall) {
    let dir = tempfile::tempdir().expect("tempdir");
    let squall = Squall::start(
        &dir.path().join("data"),
        &[repo().join("tests/packs/chains")],
        &[],
    );
    (dir, squall)
}

fn run_chain(s: &Squall, parameters: Value) -> Value {
    let body = json!({"action": "chains.greet_chain", "parameters": parameters});
    let (code, e) = s.post("/api/v1/executions", &body.to_string());
    assert_eq!(code, 201, "{e}");
    let id = e["id"].as_str().expect("id").to_string();
    s.wait_for(&format!("/api/v1/executions/{id}"), 60, |v| {
        is_terminal(v["status"].as_str().unwrap_or(""))
    })
}

/// The chain's children by node name, in the order they ran.
fn children(s: &Squall, id: &str) -> Vec<Value> {
    let (code, list) = s.get(&format!("/api/v1/executions?parent={id}"));
    assert_eq!(code, 200, "{list}");
    let mut list = list.as_array().cloned().unwrap_or_default();
    // Newest first over the API.
    list.reverse();
    list
}

#[test]
fn a_chain_follows_on_failure_and_ends_with_its_last_node_status() {
    let (_dir, s) = start();
    let e = run_chain(&s, json!({"who": "squall"}));
    let id = e["id"].as_str().expect("id");
    assert_eq!(e["status"], "succeeded", "{e}");

    let result = &e["result"];
    let tasks = result["tasks"].as_array().expect("tasks");
    let names: Vec<&str> = tasks.iter().filter_map(|t| t["name"].as_str()).collect();
    assert_eq!(names, ["greet", "explode", "recover", "done"], "{result}");
    let states: Vec<&str> = tasks.iter().filter_map(|t| t["state"].as_str()).collect();
    assert_eq!(
        states,
        ["succeeded", "failed", "succeeded", "succeeded"],
        "{result}"
    );
    assert_eq!(tasks[0]["id"], "greet");
    assert_eq!(tasks[0]["workflow"], Value::Null);
    assert_eq!(tasks[0]["result"]["stdout"], "hello squall", "{result}");
    assert_eq!(tasks[1]["result"]["return_code"], 3, "{result}");
    assert_eq!(tasks[1]["result"]["stderr"], "broken", "{result}");
    assert_eq!(result["published"], json!({"said": "hello squall"}));
    assert!(result.get("error").is_none(), "{result}");

    let kids = children(&s, id);
    let by_task: Vec<(&str, &str, &str)> = kids
        .iter()
        .map(|c| {
            (
                c["task"].as_str().unwrap_or(""),
                c["action"]["ref"]
                    .as_str()
                    .or(c["action"].as_str())
                    .unwrap_or(""),
                c["status"].as_str().unwrap_or(""),
            )
        })
        .collect();
    assert_eq!(
        by_task,
        [
            ("greet", "core.local", "succeeded"),
            ("explode", "core.local", "failed"),
            ("recover", "core.echo", "succeeded"),
            ("done", "core.noop", "succeeded"),
        ],
        "{kids:?}"
    );
    assert_eq!(kids[0]["parameters"]["cmd"], "echo hello squall");
    // `{{ code }}` rendered to text, as st2 renders, and the parameter's default applied.
    assert_eq!(kids[1]["parameters"]["cmd"], "echo broken >&2; exit 3");
    assert_eq!(
        kids[2]["parameters"]["message"],
        format!("explode failed with 3 after 'hello squall' in {id}")
    );
    assert!(kids.iter().all(|c| c["parent"] == id), "{kids:?}");
}

#[test]
fn a_node_failing_without_on_failure_fails_the_chain() {
    let (_dir, s) = start();
    // The greeting's command ends `exit 4`: the first node fails, and it has no on-failure.
    let e = run_chain(&s, json!({"who": "squall; exit 4", "code": 0}));
    let id = e["id"].as_str().expect("id");
    assert_eq!(e["status"], "failed", "{e}");
    let tasks = e["result"]["tasks"].as_array().expect("tasks");
    assert_eq!(tasks.len(), 1, "{e}");
    assert_eq!(tasks[0]["name"], "greet");
    assert_eq!(tasks[0]["state"], "failed");
    assert_eq!(tasks[0]["result"]["return_code"], 4);
    // st2 publishes after every node execution that ran, failed or not.
    assert_eq!(e["result"]["published"], json!({"said": "hello squall"}));
    assert_eq!(children(&s, id).len(), 1);

    // `explode` exiting 0 succeeds: its on-success, `never`, is the last node.
    let e = run_chain(&s, json!({"who": "again", "code": 0}));
    assert_eq!(e["status"], "succeeded", "{e}");
    let names: Vec<&str> = e["result"]["tasks"]
        .as_array()
        .expect("tasks")
        .iter()
        .filter_map(|t| t["name"].as_str())
        .collect();
    assert_eq!(names, ["greet", "explode", "never"]);
}
