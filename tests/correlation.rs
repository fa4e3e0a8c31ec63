//! Correlation rules through `squall run`: two events of one host within a window, across a
//! `kill -9` between them; a container that died and was not started again (and one whose
//! window closed while squall was down, firing once at the next start); a missing heartbeat
//! firing with no events at all; the limit of open groups refusing a new one; open groups in
//! the rule's API and in `/metrics`.

use std::time::{Duration, Instant};

use serde_json::{json, Value};

use crate::harness::{repo, Squall};

fn start(dir: &tempfile::TempDir) -> Squall {
    Squall::start(
        &dir.path().join("data"),
        &[repo().join("tests/packs/correlating")],
        &[],
    )
}

fn hook(s: &Squall, url: &str, body: Value) {
    let (code, v) = s.post(&format!("/api/v1/webhooks/{url}"), &body.to_string());
    assert_eq!(code, 202, "{v}");
}

/// The messages the rule's executions echoed, once `count` of them succeeded.
fn echoed(s: &Squall, rule: &str, count: usize) -> Vec<String> {
    let list = s.wait_for(&format!("/api/v1/executions?rule={rule}"), 30, |v| {
        v.as_array()
            .is_some_and(|a| a.iter().filter(|e| e["status"] == "succeeded").count() >= count)
    });
    let mut said: Vec<String> = list
        .as_array()
        .cloned()
        .unwrap_or_default()
        .iter()
        .filter_map(|e| e["result"]["stdout"].as_str().map(str::to_string))
        .collect();
    said.sort();
    said
}

/// How many executions the rule has after `wait` more (an absence: nothing else fired).
fn count_after(s: &Squall, rule: &str, wait: Duration) -> usize {
    let until = Instant::now() + wait;
    while Instant::now() < until {
        std::thread::sleep(Duration::from_millis(100));
    }
    let (_, list) = s.get(&format!("/api/v1/executions?rule={rule}"));
    list.as_array().map_or(0, Vec::len)
}

#[test]
fn two_events_of_a_host_fire_once_across_a_kill_9_between_them() {
    let dir = tempfile::tempdir().expect("tempdir");
    let mut s = start(&dir);
    hook(&s, "events", json!({"host": "web-1", "kind": "a"}));
    hook(&s, "events", json!({"host": "web-2", "kind": "b"}));
    // Both groups are open, each with its one part, as the rule's API shows them.
    let rule = s.wait_for("/api/v1/rules/correlating.pair", 20, |r| {
        r["correlate"]["open_groups"]
            .as_array()
            .is_some_and(|g| g.len() == 2)
    });
    let groups = rule["correlate"]["open_groups"]
        .as_array()
        .cloned()
        .unwrap_or_default();
    let web1 = groups
        .iter()
        .find(|g| g["group"] == json!(["web-1"]))
        .expect("web-1's group");
    assert_eq!(web1["matched"], json!([0]), "{rule}");
    assert_eq!(rule["correlate"]["mode"], "all", "{rule}");
    assert_eq!(rule["correlate"]["limit"], 3, "{rule}");

    // A durable partial match: the group survives kill -9 and completes after it. (An
    // instance accepted just before the kill may come back from the journal, fed again by
    // the rules loop after the start: wait for it rather than read at once.)
    s.kill9();
    s.restart();
    s.wait_for("/api/v1/rules/correlating.pair", 20, |r| {
        r["correlate"]["open_groups"]
            .as_array()
            .is_some_and(|g| g.len() == 2)
    });
    hook(&s, "events", json!({"host": "web-1", "kind": "b"}));
    assert_eq!(echoed(&s, "correlating.pair", 1), ["web-1: a,b"]);
    // The completed group is closed; web-2's waits for its a.
    let (_, rule) = s.get("/api/v1/rules/correlating.pair");
    let open: Vec<Value> = rule["correlate"]["open_groups"]
        .as_array()
        .cloned()
        .unwrap_or_default()
        .iter()
        .map(|g| g["group"].clone())
        .collect();
    assert_eq!(open, [json!(["web-2"])], "{rule}");

    // The enforcement names the instance that completed the group.
    let (_, enf) = s.get("/api/v1/ruleenforcements?rule_ref=correlating.pair");
    let enf = enf.as_array().cloned().unwrap_or_default();
    assert_eq!(enf.len(), 1, "{enf:?}");
    assert!(enf[0]["execution_id"].is_string(), "{enf:?}");

    // The limit (3 open groups): web-3 and web-4 open, web-5 is refused with why.
    for host in ["web-3", "web-4", "web-5"] {
        hook(&s, "events", json!({"host": host, "kind": "a"}));
    }
    let refused = s.wait_for(
        "/api/v1/ruleenforcements?rule_ref=correlating.pair",
        20,
        |v| {
            v.as_array().is_some_and(|a| {
                a.iter().any(|e| {
                    e["failure_reason"]
                        .as_str()
                        .is_some_and(|r| r.contains("limit"))
                })
            })
        },
    );
    let reason = refused
        .as_array()
        .into_iter()
        .flatten()
        .find_map(|e| e["failure_reason"].as_str())
        .unwrap_or_default()
        .to_string();
    assert!(reason.contains("3 open groups"), "{reason}");
    let (_, metrics) = s.get("/metrics");
    let metrics = metrics.as_str().unwrap_or_default().to_string();
    assert!(
        metrics.contains("squall_correlation_open_groups{rule=\"correlating.pair\"} 3"),
        "{metrics}"
    );
    assert!(
        metrics.contains(
            "squall_correlation_groups_total{rule=\"correlating.pair\",outcome=\"refused\"} 1"
        ),
        "{metrics}"
    );
}

#[test]
fn a_container_that_stays_down_fires_and_one_started_again_does_not() {
    let dir = tempfile::tempdir().expect("tempdir");
    let mut s = start(&dir);
    hook(&s, "containers", json!({"id": "c1", "action": "die"}));
    hook(&s, "containers", json!({"id": "c2", "action": "die"}));
    hook(&s, "containers", json!({"id": "c2", "action": "start"}));
    assert_eq!(echoed(&s, "correlating.stayed_down", 1), ["c1 stayed down"]);
    assert_eq!(
        count_after(&s, "correlating.stayed_down", Duration::from_secs(3)),
        1,
        "c2 was started again within its window"
    );

    // A window that closes while squall is down fires at the next start, once.
    hook(&s, "containers", json!({"id": "c3", "action": "die"}));
    s.wait_for("/api/v1/rules/correlating.stayed_down", 20, |r| {
        r["correlate"]["open_groups"]
            .as_array()
            .is_some_and(|g| g.len() == 1)
    });
    s.kill9();
    let down = Instant::now() + Duration::from_secs(3);
    while Instant::now() < down {
        std::thread::sleep(Duration::from_millis(100));
    }
    s.restart();
    assert_eq!(
        echoed(&s, "correlating.stayed_down", 2),
        ["c1 stayed down", "c3 stayed down"]
    );
    s.kill9();
    s.restart();
    assert_eq!(
        count_after(&s, "correlating.stayed_down", Duration::from_secs(2)),
        2,
        "a window fires once, restarts or not"
    );
}

#[test]
fn a_missing_heartbeat_fires_with_no_events_at_all() {
    let dir = tempfile::tempdir().expect("tempdir");
    let s = start(&dir);
    let said = echoed(&s, "correlating.heartbeat", 1);
    assert_eq!(said[0], "no heartbeat");
    // Windows close on the correlation timer's instances, which say when.
    let (_, instances) = s.get("/api/v1/triggerinstances?trigger=core.correlation_window");
    assert!(
        instances
            .as_array()
            .is_some_and(|a| !a.is_empty() && a[0]["payload"]["at"].is_string()),
        "{instances}"
    );
}

#[test]
fn rule_test_feeds_timed_instances_to_a_correlation_rule() {
    let dir = tempfile::tempdir().expect("tempdir");
    let instances = dir.path().join("instances.yaml");
    let hook = |id: &str, action: &str, at: f64| {
        format!("- {{trigger: core.st2.webhook, trigger_parameters: {{url: containers}}, payload: {{body: {{id: {id}, action: {action}}}}}, at: {at}}}\n")
    };
    let text = [
        hook("c1", "die", 0.0),
        hook("c2", "die", 0.5),
        hook("c2", "start", 1.5),
        hook("c3", "start", 4.0),
    ]
    .concat();
    std::fs::write(&instances, text).expect("instances");
    let rule = repo().join("tests/packs/correlating/rules/stayed_down.yaml");
    let packs = repo().join("packs");
    // `squall rule test` over the instances file as it is now: exit code and what it printed.
    let rule_test = || {
        let out = crate::harness::squall(&[
            "rule",
            "test",
            "--rule",
            rule.to_str().expect("utf-8"),
            "--trigger-instance",
            instances.to_str().expect("utf-8"),
            "--packs",
            packs.to_str().expect("utf-8"),
        ]);
        (
            out.status.code(),
            String::from_utf8_lossy(&out.stdout).to_string(),
        )
    };
    let (code, text) = rule_test();
    assert_eq!(code, Some(0), "{text}");
    let lines: Vec<&str> = text.lines().collect();
    assert_eq!(
        lines,
        [
            "0s: instance 0 (core.st2.webhook) matches part(s) [0]",
            "0.5s: instance 1 (core.st2.webhook) matches part(s) [0]",
            "1.5s: instance 2 (core.st2.webhook) matches part(s) [1]",
            "1.5s: group [\"c2\"] cancelled by a 'none' part",
            "2s: FIRES for group [\"c1\"] (1 event(s))",
            "  action: core.echo {\"message\":\"c1 stayed down\"}",
            "4s: instance 3 (core.st2.webhook) matches part(s) [1]",
            "=== RULE FIRES 1 TIME(S) ===",
        ],
        "{text}"
    );

    // A near miss: c1 started again in time; nothing fires, exit 1.
    std::fs::write(
        &instances,
        [hook("c1", "die", 0.0), hook("c1", "start", 1.0)].concat(),
    )
    .expect("instances");
    let (code, text) = rule_test();
    assert_eq!(code, Some(1), "{text}");
    assert!(text.ends_with("=== RULE DOES NOT FIRE ===\n"), "{text}");
}
