//! The `ops` pack under `squall run` with the machine's Docker daemon: a firing capacity alert
//! scales an app's containers out (once per cooldown), a resolved one scales it back in, and a
//! labelled container that keeps crashing is restarted up to the limit, then left alone.

use std::path::Path;
use std::process::Command;

use serde_json::{json, Value};

use crate::docker::docker;
use crate::harness::{is_terminal, repo, write, Squall};

const IMAGE: &str = "squall-test-busybox:latest";

/// The app's containers, removed when the test ends however it ends.
struct App {
    label: String,
}

impl App {
    /// An app whose containers carry `label_key=name`.
    fn new(label_key: &str, name: &str) -> App {
        let status = Command::new(repo().join("scripts/test-image"))
            .status()
            .expect("scripts/test-image runs");
        assert!(status.success(), "the test image could not be built");
        App {
            label: format!("{label_key}={name}"),
        }
    }

    fn run(&self, command: &[&str]) -> String {
        let mut args = vec!["run", "-d", "--label", &self.label, IMAGE];
        args.extend_from_slice(command);
        docker(&args)
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

fn start(dir: &Path, ops: &str) -> Squall {
    write(dir, "configs/ops.yaml", ops);
    let configs = dir.join("configs");
    Squall::start(
        &dir.join("data"),
        &[],
        &["--configs", configs.to_str().expect("utf-8 path")],
    )
}

pub(crate) fn alert(s: &Squall, status: &str, alertname: &str, app: &str, instance: &str) {
    let body = json!({
        "version": "4",
        "status": status,
        "receiver": "squall",
        "groupKey": format!("{{}}:{{alertname=\"{alertname}\"}}"),
        "alerts": [{
            "status": status,
            "labels": {"alertname": alertname, "app": app, "instance": instance},
            "annotations": {"summary": "load above 80%"},
            "startsAt": "2026-11-25T10:00:00Z",
            "endsAt": if status == "resolved" { "2026-11-25T10:05:00Z" } else { "0001-01-01T00:00:00Z" },
            "fingerprint": format!("{app}{instance}{status}"),
        }],
    });
    let (code, answer) = s.post("/api/v1/webhooks/alertmanager", &body.to_string());
    assert_eq!(code, 200, "{answer}");
    assert_eq!(answer["accepted"], 1, "{answer}");
}

/// Waits for `count` executions of `action` to end; returns them, oldest first.
pub(crate) fn ended(s: &Squall, action: &str, count: usize) -> Vec<Value> {
    let list = s.wait_for(&format!("/api/v1/executions?action={action}"), 90, |v| {
        v.as_array().is_some_and(|a| {
            a.len() >= count
                && a.iter()
                    .all(|e| is_terminal(e["status"].as_str().unwrap_or("")))
        })
    });
    let mut list = list.as_array().cloned().unwrap_or_default();
    list.reverse();
    list
}

#[test]
fn a_capacity_alert_scales_the_app_out_once_per_cooldown_and_back_in() {
    let dir = tempfile::tempdir().expect("tempdir");
    let name = format!("web{}", std::process::id());
    let app = App::new("squall.app", &name);
    app.run(&["sleep", "3600"]);
    app.run(&["sleep", "3600"]);
    let s = start(
        dir.path(),
        "step: 2\nmin_instances: 1\nmax_instances: 4\ncooldown_seconds: 120\nalertnames: [HighLoad]\n",
    );

    alert(&s, "firing", "HighLoad", &name, "a");
    let runs = ended(&s, "ops.scale_out", 1);
    assert_eq!(runs[0]["status"], "succeeded", "{}", runs[0]);
    let output = &runs[0]["result"]["output"];
    assert_eq!(output["before"], 2, "{output}");
    assert_eq!(output["after"], 4, "{output}");
    assert!(
        output["outcome"]
            .as_str()
            .is_some_and(|o| o.contains("from 2 to 4")),
        "{output}"
    );
    assert_eq!(app.running().len(), 4);
    let id = runs[0]["id"].as_str().expect("id");
    let (_, tasks) = s.get(&format!("/api/v1/executions?parent={id}"));
    let mut tasks: Vec<&str> = tasks
        .as_array()
        .expect("list")
        .iter()
        .filter_map(|t| t["task"].as_str())
        .collect();
    tasks.reverse();
    assert_eq!(
        tasks,
        ["check", "count_docker", "decide", "scale_docker", "record"]
    );
    let (_, history) = s.get(&format!("/api/v1/keys/ops.history.{name}"));
    assert!(
        history["value"]
            .as_str()
            .is_some_and(|h| h.contains("\"after\":4")),
        "{history}"
    );

    // A second alert during the cooldown changes nothing, and says why.
    alert(&s, "firing", "HighLoad", &name, "b");
    let runs = ended(&s, "ops.scale_out", 2);
    assert_eq!(runs[1]["status"], "succeeded", "{}", runs[1]);
    let outcome = runs[1]["result"]["output"]["outcome"].to_string();
    assert!(
        outcome.contains("cooling down") && outcome.contains("scaled out from 2 to 4 at"),
        "{outcome}"
    );
    // An alert that is not about capacity changes nothing either.
    alert(&s, "firing", "DiskFull", &name, "c");
    let runs = ended(&s, "ops.scale_out", 3);
    let outcome = runs[2]["result"]["output"]["outcome"].to_string();
    assert!(
        outcome.contains("not one of the capacity alerts"),
        "{outcome}"
    );
    // Grafana's alerts go the same way (here: still cooling down).
    let grafana = json!({
        "receiver": "squall", "status": "firing", "orgId": 1, "version": "1",
        "groupKey": "{}:{alertname=\"HighLoad\"}",
        "alerts": [{
            "status": "firing",
            "labels": {"alertname": "HighLoad", "app": name},
            "annotations": {"summary": "load above 80%"},
            "startsAt": "2026-11-25T10:00:00Z", "endsAt": "0001-01-01T00:00:00Z",
            "fingerprint": format!("{name}grafana"),
        }],
    });
    let (code, answer) = s.post("/api/v1/webhooks/grafana", &grafana.to_string());
    assert_eq!(code, 200, "{answer}");
    let runs = ended(&s, "ops.scale_out", 4);
    assert_eq!(runs[3]["rule"]["ref"], "ops.scale_out_on_grafana_alert");
    let outcome = runs[3]["result"]["output"]["outcome"].to_string();
    assert!(outcome.contains("cooling down"), "{outcome}");
    assert_eq!(app.running().len(), 4);

    // Once the cooldown is over, the resolved alert scales back in by the step.
    let (code, _) = s
        .request("DELETE", &format!("/api/v1/keys/ops.cooldown.{name}"), None)
        .expect("request");
    assert_eq!(code, 204);
    alert(&s, "resolved", "HighLoad", &name, "a");
    let runs = ended(&s, "ops.scale_in", 1);
    assert_eq!(runs[0]["status"], "succeeded", "{}", runs[0]);
    assert_eq!(runs[0]["result"]["output"]["after"], 2, "{}", runs[0]);
    assert_eq!(app.running().len(), 2);
}

#[test]
fn a_crashing_app_container_is_restarted_up_to_the_limit() {
    let dir = tempfile::tempdir().expect("tempdir");
    let name = format!("heal{}", std::process::id());
    // Its own label, so that the squall of the test above (running at the same time, with the
    // same rules, watching the same daemon) leaves this container alone.
    let app = App::new("squall.heal-test", &name);
    let s = start(
        dir.path(),
        "app_label: squall.heal-test\nrestart_limit: 2\nrestart_window_seconds: 600\n",
    );
    // Wait until the Docker sensor streams, so the first death is seen.
    s.wait_for("/api/v1/sensors", 30, |v| {
        v.as_array().is_some_and(|a| {
            a.iter()
                .any(|s| s["ref"] == "docker.events" && s["connected"] == true)
        })
    });
    let id = app.run(&["sh", "-c", "sleep 1; exit 3"]);

    // Other tests' containers die too: only this one's executions count.
    let mine = |v: &Value| -> Vec<Value> {
        let mut list: Vec<Value> = v
            .as_array()
            .map(|a| {
                a.iter()
                    .filter(|r| r["parameters"]["container"] == id.as_str())
                    .cloned()
                    .collect()
            })
            .unwrap_or_default();
        list.reverse();
        list
    };
    let all = s.wait_for("/api/v1/executions?action=ops.autoheal", 90, |v| {
        let list = mine(v);
        list.len() >= 3
            && list
                .iter()
                .all(|e| is_terminal(e["status"].as_str().unwrap_or("")))
    });
    let runs = mine(&all);
    let actions: Vec<&str> = runs
        .iter()
        .map(|r| r["result"]["action"].as_str().unwrap_or(""))
        .collect();
    assert_eq!(actions, ["restarted", "restarted", "gave_up"], "{runs:?}");
    let why = runs[2]["result"]["reason"].to_string();
    assert!(why.contains("restarted 2 times"), "{why}");
    // It is left stopped: gave_up restarted nothing, so no further death can come.
    let state = docker(&["inspect", "-f", "{{.State.Status}}", &id]);
    assert_eq!(state, "exited");
    let (_, all) = s.get("/api/v1/executions?action=ops.autoheal");
    assert_eq!(mine(&all).len(), 3, "{all}");
}
