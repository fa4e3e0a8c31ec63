//! A real Prometheus Alertmanager (Debian's `prometheus-alertmanager`, which `scripts/test`
//! installs) notifying `squall run` through `POST /api/v1/webhooks/alertmanager`: alerts pushed
//! into Alertmanager become `alertmanager.alert` trigger instances and rule executions, its
//! repeat notifications make nothing new, and resolving an alert gets through as `resolved`.
//!
//! Alertmanager runs on its own free port with clustering off and its own storage, so a system
//! Alertmanager the package may have started on :9093 neither helps nor disturbs these tests.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use chrono::{DateTime, SecondsFormat, Utc};
use serde_json::{json, Value};

use crate::harness::{free_port, is_terminal, repo, write, Client, Squall};

const ALERTMANAGER: &str = "/usr/bin/prometheus-alertmanager";
/// The bearer token squall's receiver requires and Alertmanager's `http_config` sends.
const TOKEN: &str = "e2e-alertmanager-token";
const HOOK: &str = "/api/v1/webhooks/alertmanager";
/// The labels of the test's `web` alert, and the fingerprint Alertmanager gives them (also
/// asserted against squall's own computation in sensors/src/alertmanager.rs).
const WEB_FINGERPRINT: &str = "6c841511aa472f5d";

/// A running Alertmanager, killed when dropped.
struct Alertmanager {
    child: Child,
    port: u16,
    log: PathBuf,
}

impl Alertmanager {
    /// Starts Alertmanager with one route to squall's receiver, grouping by alertname and
    /// flushing groups every second so the test does not wait minutes, and waits until ready.
    fn start(dir: &Path, squall_port: u16) -> Alertmanager {
        assert!(
            Path::new(ALERTMANAGER).exists(),
            "{ALERTMANAGER} is missing: run scripts/test, which installs Debian's \
             prometheus-alertmanager package"
        );
        let config = format!(
            r#"route:
  receiver: squall
  group_by: [alertname]
  group_wait: 1s
  group_interval: 1s
  repeat_interval: 2s
receivers:
  - name: squall
    webhook_configs:
      - url: http://127.0.0.1:{squall_port}{HOOK}
        send_resolved: true
        http_config:
          authorization:
            credentials: {TOKEN}
"#
        );
        write(dir, "alertmanager.yml", &config);
        let port = free_port();
        let log = dir.join("alertmanager.log");
        let log_file = std::fs::File::create(&log).expect("alertmanager log");
        let child = Command::new(ALERTMANAGER)
            .arg(format!(
                "--config.file={}",
                dir.join("alertmanager.yml").display()
            ))
            .arg(format!("--web.listen-address=127.0.0.1:{port}"))
            .arg("--cluster.listen-address=")
            .arg(format!(
                "--storage.path={}",
                dir.join("alertmanager-data").display()
            ))
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(log_file)
            .spawn()
            .expect("alertmanager starts");
        let mut am = Alertmanager { child, port, log };
        am.wait_ready();
        am
    }

    fn client(&self) -> Client {
        Squall::client_for(self.port)
    }

    fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    fn wait_ready(&mut self) {
        let deadline = Instant::now() + Duration::from_secs(20);
        while Instant::now() < deadline {
            if let Ok(Some(status)) = self.child.try_wait() {
                panic!("alertmanager exited with {status}:\n{}", self.log());
            }
            if let Ok((200, _)) = self.client().request("GET", "/-/ready", None) {
                return;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        panic!("alertmanager was not ready within 20 s:\n{}", self.log());
    }

    /// Pushes alerts as Prometheus does (`POST /api/v2/alerts`).
    fn push(&self, alerts: Value) {
        let (status, body) = self
            .client()
            .request("POST", "/api/v2/alerts", Some(&alerts.to_string()))
            .expect("alertmanager answers");
        assert_eq!(status, 200, "alertmanager refused the alerts: {body}");
    }

    /// Webhook notifications Alertmanager has attempted and failed, from its own metrics.
    fn notifications(&self) -> (u64, u64) {
        let (status, body) = self
            .client()
            .request("GET", "/metrics", None)
            .expect("alertmanager metrics");
        assert_eq!(status, 200);
        let text = body.as_str().unwrap_or_default();
        let sum = |metric: &str| -> u64 {
            text.lines()
                .filter(|l| l.starts_with(&format!("{metric}{{")))
                .filter(|l| l.contains("integration=\"webhook\""))
                .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
                .sum::<f64>() as u64
        };
        (
            sum("alertmanager_notifications_total"),
            sum("alertmanager_notifications_failed_total"),
        )
    }

    /// Waits until Alertmanager has started `more` notifications after `after`. It counts a
    /// notification before sending it and sends a group's one at a time, so once the count
    /// reaches `after + more`, the first `after + more - 1` have been answered.
    fn wait_notifications(&self, after: u64, more: u64, squall: &Squall) -> u64 {
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            let (sent, failed) = self.notifications();
            assert_eq!(
                failed,
                0,
                "squall refused a notification:\n{}\nsquall log:\n{}",
                self.log(),
                squall.log()
            );
            if sent >= after + more {
                return sent;
            }
            assert!(
                Instant::now() < deadline,
                "alertmanager sent {sent} notifications, waited for {}:\n{}",
                after + more,
                self.log()
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }
}

impl Drop for Alertmanager {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn start_squall(dir: &Path) -> Squall {
    write(
        dir,
        "squall.yaml",
        &format!("alertmanager:\n  bearer_token: {TOKEN}\n"),
    );
    let config = dir.join("squall.yaml");
    let config = config.to_str().expect("utf-8 temp path");
    Squall::start(
        &dir.join("data"),
        &[repo().join("tests/packs/alerts")],
        &["--config", config],
    )
}

fn rfc3339(t: DateTime<Utc>) -> String {
    t.to_rfc3339_opts(SecondsFormat::Secs, true)
}

fn time(v: &Value) -> DateTime<Utc> {
    v.as_str()
        .and_then(|s| DateTime::parse_from_rfc3339(s).ok())
        .map(|t| t.with_timezone(&Utc))
        .unwrap_or_else(|| panic!("not a time: {v}"))
}

fn alert(app: &str, starts_at: &str, ends_at: Option<&str>) -> Value {
    let mut a = json!({
        "labels": {"alertname": "SquallE2E", "app": app, "severity": "page"},
        "annotations": {"summary": format!("{app} is over capacity")},
        "startsAt": starts_at,
        "generatorURL": "http://prometheus.e2e:9090/graph?g0.expr=up",
    });
    if let Some(end) = ends_at {
        a["endsAt"] = json!(end);
    }
    a
}

const INSTANCES: &str = "/api/v1/triggerinstances?trigger=alertmanager.alert";
const EXECUTIONS: &str = "/api/v1/executions?rule=alerts.echo_alert";

fn instances(s: &Squall) -> Vec<Value> {
    let (status, v) = s.get(INSTANCES);
    assert_eq!(status, 200, "{v}");
    v.as_array().cloned().unwrap_or_default()
}

fn of_app<'a>(list: &'a [Value], app: &str, status: &str) -> Vec<&'a Value> {
    list.iter()
        .filter(|t| t["payload"]["labels"]["app"] == app && t["payload"]["status"] == status)
        .collect()
}

/// Waits until the echo rule has `count` finished executions, and returns their results.
fn echoed(s: &Squall, count: usize) -> Vec<String> {
    let v = s.wait_for(EXECUTIONS, 30, |v| {
        v.as_array().is_some_and(|a| {
            a.len() >= count
                && a.iter()
                    .all(|e| is_terminal(e["status"].as_str().unwrap_or("")))
        })
    });
    let list = v.as_array().cloned().unwrap_or_default();
    assert_eq!(list.len(), count, "{v}");
    let mut results: Vec<String> = list
        .iter()
        .map(|e| {
            assert_eq!(e["status"], "succeeded", "{e}");
            e["result"]["stdout"]
                .as_str()
                .unwrap_or_default()
                .to_string()
        })
        .collect();
    results.sort();
    results
}

#[test]
fn alertmanager_notifications_become_trigger_instances_and_executions() {
    let dir = tempfile::tempdir().expect("tempdir");
    let s = start_squall(dir.path());
    let am = Alertmanager::start(dir.path(), s.port);

    // Two alerts of one group, as Prometheus would push them.
    let starts = rfc3339(Utc::now() - chrono::Duration::seconds(60));
    am.push(json!([
        alert("web", &starts, None),
        alert("db", &starts, None)
    ]));

    let list = s.wait_for(INSTANCES, 30, |v| {
        v.as_array().is_some_and(|a| a.len() >= 2)
    });
    let list = list.as_array().cloned().unwrap_or_default();
    assert_eq!(list.len(), 2, "{list:?}");
    let web = of_app(&list, "web", "firing");
    assert_eq!(web.len(), 1, "{list:?}");
    let web = web[0].clone();
    assert_eq!(of_app(&list, "db", "firing").len(), 1, "{list:?}");
    let p = &web["payload"];
    assert_eq!(web["trigger"], "alertmanager.alert");
    assert_eq!(web["source"], "alertmanager");
    assert_eq!(p["alertname"], "SquallE2E");
    assert_eq!(p["labels"]["severity"], "page");
    assert_eq!(p["annotations"]["summary"], "web is over capacity");
    assert_eq!(p["starts_at"], starts.as_str());
    assert_eq!(p["ends_at"], Value::Null);
    assert_eq!(p["fingerprint"], WEB_FINGERPRINT);
    assert_eq!(
        p["generator_url"],
        "http://prometheus.e2e:9090/graph?g0.expr=up"
    );
    assert_eq!(p["receiver"], "squall");
    assert_eq!(p["group_key"], "{}:{alertname=\"SquallE2E\"}");
    assert_eq!(p["group_labels"], json!({"alertname": "SquallE2E"}));
    // Alertmanager may send the first notification before it has received both alerts of
    // the group; the labels common to what it sent always include these two.
    assert_eq!(p["common_labels"]["alertname"], "SquallE2E");
    assert_eq!(p["common_labels"]["severity"], "page");
    assert!(
        p["external_url"].as_str().is_some_and(|u| !u.is_empty()),
        "{p}"
    );
    assert_eq!(time(&web["occurrence_time"]), time(&json!(starts)));

    assert_eq!(
        echoed(&s, 2),
        ["SquallE2E firing app=db", "SquallE2E firing app=web"]
    );

    // Alertmanager repeats the group every 2 s (repeat_interval): nothing new is stored.
    let (sent, _) = am.notifications();
    let sent = am.wait_notifications(sent, 2, &s);
    assert_eq!(instances(&s).len(), 2, "a repeat notification was stored");

    // The same notification sent again by hand (a retry) is a duplicate too, every time.
    let repeat = json!({
        "version": "4",
        "groupKey": p["group_key"],
        "truncatedAlerts": 0,
        "status": "firing",
        "receiver": "squall",
        "groupLabels": p["group_labels"],
        "commonLabels": p["common_labels"],
        "commonAnnotations": {},
        "externalURL": p["external_url"],
        "alerts": [{
            "status": "firing",
            "labels": p["labels"],
            "annotations": p["annotations"],
            "startsAt": starts,
            "endsAt": "0001-01-01T00:00:00Z",
            "generatorURL": p["generator_url"],
            "fingerprint": WEB_FINGERPRINT,
        }],
    })
    .to_string();
    let bearer = format!("Bearer {TOKEN}");
    for _ in 0..2 {
        let (status, body) = s
            .request_with("POST", HOOK, Some(&repeat), &[("Authorization", &bearer)])
            .expect("request");
        assert_eq!(status, 200, "{body}");
        assert_eq!(
            body,
            json!({"accepted": 0, "duplicates": 1, "trigger_instances": []})
        );
    }
    // Without the token Alertmanager is configured to send, nothing gets in.
    let (status, body) = s.post(HOOK, &repeat);
    assert_eq!(status, 401, "{body}");
    assert!(
        body["error"]
            .as_str()
            .is_some_and(|e| e.contains("missing Authorization: Bearer")),
        "{body}"
    );
    assert_eq!(instances(&s).len(), 2);

    // web recovers: Prometheus sends it again with an end in the past. Alertmanager's next
    // notification holds web resolved and db still firing; only web's news is stored.
    let ends = rfc3339(Utc::now() - chrono::Duration::seconds(1));
    am.push(json!([alert("web", &starts, Some(&ends))]));
    let list = s.wait_for(INSTANCES, 30, |v| {
        v.as_array()
            .is_some_and(|a| !of_app(a, "web", "resolved").is_empty())
    });
    let list = list.as_array().cloned().unwrap_or_default();
    let resolved = of_app(&list, "web", "resolved")[0].clone();
    assert_eq!(resolved["payload"]["fingerprint"], WEB_FINGERPRINT);
    assert_eq!(resolved["payload"]["starts_at"], starts.as_str());
    assert_eq!(resolved["payload"]["ends_at"], ends.as_str());
    assert_eq!(time(&resolved["occurrence_time"]), time(&json!(ends)));
    assert_eq!(
        echoed(&s, 3),
        [
            "SquallE2E firing app=db",
            "SquallE2E firing app=web",
            "SquallE2E resolved app=web"
        ]
    );

    // db keeps firing and being repeated; still nothing new.
    am.wait_notifications(sent, 3, &s);
    let list = instances(&s);
    assert_eq!(list.len(), 3, "{list:?}");
    assert_eq!(of_app(&list, "db", "firing").len(), 1);
}

#[test]
fn alertmanager_receiver_rejects_bad_credentials_and_malformed_bodies() {
    let dir = tempfile::tempdir().expect("tempdir");
    let s = start_squall(dir.path());
    let bearer = format!("Bearer {TOKEN}");

    let (status, body) = s
        .request_with(
            "POST",
            HOOK,
            Some(r#"{"version": "4", "alerts": []}"#),
            &[("Authorization", "Bearer not-the-token")],
        )
        .expect("request");
    assert_eq!(status, 401, "{body}");
    assert_eq!(body["error"], "the bearer token is wrong");

    let (status, body) = s
        .request_with(
            "POST",
            HOOK,
            Some(r#"{"version": "4", "alerts": [{"status": "firing", "startsAt": "2026-11-25T10:00:00Z"}]}"#),
            &[("Authorization", &bearer)],
        )
        .expect("request");
    assert_eq!(status, 400, "{body}");
    assert_eq!(body["detail"]["path"], "$.alerts[0].labels");

    let (status, body) = s
        .request_with(
            "POST",
            HOOK,
            Some(r#"{"version": "4", "alerts": []}"#),
            &[("Authorization", &bearer)],
        )
        .expect("request");
    assert_eq!(status, 200, "{body}");
    assert_eq!(
        body,
        json!({"accepted": 0, "duplicates": 0, "trigger_instances": []})
    );
    assert!(instances(&s).is_empty());
}
