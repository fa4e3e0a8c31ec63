//! StackStorm-Exchange-shaped pack metadata loads and runs as st2 loads and runs it: dotted
//! action names, nested draft-4 parameter and config schemas, defaults st2 does not check,
//! objects rendered into string parameters, sensor trigger types with a `parameters_schema`,
//! `core.st2.generic.actiontrigger`'s payload and `rule test` on a disabled rule. The fixture
//! pack is tests/packs/st2like/slack.
//!
//! These tests never reach Slack: the fixture's actions answer locally.

use std::path::{Path, PathBuf};
use std::process::Output;

use serde_json::{json, Value};

use crate::harness::{is_terminal, repo, squall, write, Squall};

fn st2like() -> PathBuf {
    repo().join("tests/packs/st2like")
}

fn text(out: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

fn path(p: &Path) -> &str {
    p.to_str().expect("utf-8 path")
}

#[test]
fn an_exchange_shaped_pack_validates_without_problems() {
    let out = squall(&["pack", "validate", path(&st2like())]);
    let all = text(&out);
    assert_eq!(out.status.code(), Some(0), "{all}");
    assert!(
        all.contains("pack slack 2.1.0") && all.contains("2 actions, 3 rules"),
        "{all}"
    );
    assert!(all.contains("ok: 1 packs, no problems"), "{all}");
}

#[test]
fn rule_test_renders_an_object_into_a_string_parameter_as_st2_does() {
    let st2like = st2like();
    let out = squall(&[
        "rule",
        "test",
        "--rule",
        path(&st2like.join("slack/rules/relay_message.yaml")),
        "--trigger-instance",
        path(&st2like.join("instances/message.json")),
        "--packs",
        path(&st2like),
    ]);
    let all = text(&out);
    assert_eq!(out.status.code(), Some(0), "{all}");
    assert!(all.contains("action: slack.chat.postMessage"), "{all}");
    // Jinja under Python prints a dict as its repr: single quotes, True, None.
    assert!(
        all.contains(
            r#""text": "{'type': 'section', 'ok': True, 'none': None, 'items': ['x', 'y']}""#
        ),
        "{all}"
    );
    // The nested attachments fit their schema and pass as an array; the default that does not
    // fit its type passes as written.
    assert!(all.contains(r#""color": "good""#), "{all}");
    assert!(all.contains(r#""link_names": "sometimes""#), "{all}");
}

#[test]
fn rule_test_evaluates_a_disabled_rule_and_says_so() {
    let st2like = st2like();
    let out = squall(&[
        "rule",
        "test",
        "--rule",
        path(&st2like.join("slack/rules/disabled_relay.yaml")),
        "--trigger-instance",
        path(&st2like.join("instances/message.json")),
        "--packs",
        path(&st2like),
    ]);
    let all = text(&out);
    assert_eq!(out.status.code(), Some(0), "{all}");
    assert!(all.contains("the rule is disabled"), "{all}");
    assert!(all.contains("=== RULE MATCHES ==="), "{all}");
    assert!(all.contains(r##""channel": "#deploys""##), "{all}");
}

/// A pack beside the fixture: its rules give parameters that do not fit the sensor's schema,
/// and parameters to a trigger that declares none; its config schema has one broken setting.
#[test]
fn trigger_parameters_and_config_schemas_are_checked_entry_by_entry() {
    let dir = tempfile::tempdir().expect("tempdir");
    let root = dir.path().join("other");
    write(&root, "pack.yaml", "ref: other\nname: other\n");
    write(
        &root,
        "config.schema.yaml",
        "broken:\n  type: strng\nport:\n  type: integer\n  default: 80\n",
    );
    write(
        &root,
        "rules/wrong_channel.yaml",
        "name: wrong_channel\npack: other\ntrigger:\n  type: slack.message\n  parameters:\n    channel: 5\naction:\n  ref: slack.chat.postMessage\n  parameters: {channel: x, text: y}\n",
    );
    write(
        &root,
        "rules/fitting_channel.yaml",
        "name: fitting_channel\npack: other\ntrigger:\n  type: slack.message\n  parameters:\n    channel: \"#ops\"\naction:\n  ref: slack.chat.postMessage\n  parameters: {channel: x, text: y}\n",
    );
    write(
        &root,
        "rules/no_schema.yaml",
        "name: no_schema\npack: other\ntrigger:\n  type: other.thing\n  parameters:\n    a: 1\naction:\n  ref: slack.chat.postMessage\n  parameters: {channel: x, text: y}\n",
    );
    let st2like = st2like();
    let out = squall(&["pack", "validate", path(&st2like), path(&root)]);
    let all = text(&out);
    assert_eq!(out.status.code(), Some(1), "{all}");
    assert!(
        all.contains("rule 'other.wrong_channel' gives trigger 'slack.message' parameters that do not fit its parameters_schema: parameters.channel: expected string, got integer 5"),
        "{all}"
    );
    assert!(
        all.contains("rule 'other.fitting_channel' gives parameters to trigger 'slack.message' (they fit its parameters_schema), but squall's sensors do not emit instances per trigger parameters yet, so it would never fire"),
        "{all}"
    );
    assert!(
        all.contains("rule 'other.no_schema' gives parameters to trigger 'other.thing', whose instances carry none"),
        "{all}"
    );
    assert!(
        all.contains("config.schema.yaml:1: parameter 'broken': unknown type 'strng'")
            && all.contains("setting 'broken' is kept as given"),
        "{all}"
    );
    // The fixture's own rules load.
    assert!(
        all.contains("pack slack 2.1.0") && all.contains("2 actions, 3 rules"),
        "{all}"
    );
    assert_eq!(all.matches("problems found").count(), 1, "{all}");
    assert!(all.contains("4 problems found"), "{all}");
}

/// Run through the API (as `st2 run slack.chat.postMessage` does): the nested parameters are
/// validated, the object given to `text` becomes its repr, and the action trigger's payload is
/// st2's, which the fixture's rule matches on `action_name` and `runner_ref`.
#[test]
fn a_dotted_action_runs_and_action_finished_carries_st2s_payload() {
    let dir = tempfile::tempdir().expect("tempdir");
    let s = Squall::start_only(&dir.path().join("data"), &[st2like()], &[]);
    let refused = json!({"action": "slack.chat.postMessage", "parameters": {
        "channel": "#audit", "text": "x", "attachments": [{"color": "blue"}]}});
    let (code, e) = s.post("/api/v1/executions", &refused.to_string());
    assert_eq!(code, 400, "{e}");
    let shown = e.to_string();
    assert!(shown.contains("[0].title: is required"), "{shown}");
    assert!(
        shown.contains("\\\"blue\\\" is not one of the allowed values"),
        "{shown}"
    );

    let body = json!({"action": "slack.chat.postMessage", "parameters": {
        "channel": "#audit",
        "text": {"type": "section", "ok": true, "none": null},
        "attachments": [{"title": "build", "fields": [{"short": true}]}]}});
    let (code, e) = s.post("/api/v1/executions", &body.to_string());
    assert_eq!(code, 201, "{e}");
    let id = e["id"].as_str().expect("id").to_string();
    let post = s.wait_for(&format!("/api/v1/executions/{id}"), 30, |v| {
        is_terminal(v["status"].as_str().unwrap_or(""))
    });
    assert_eq!(post["status"], "succeeded", "{post}");
    assert_eq!(
        post["result"]["message"]["text"],
        "{'type': 'section', 'ok': True, 'none': None}"
    );

    let instances = s.wait_for(
        "/api/v1/triggerinstances?trigger=core.st2.generic.actiontrigger",
        20,
        |v| {
            v.as_array().is_some_and(|a| {
                a.iter()
                    .any(|t| t["payload"]["execution_id"] == id.as_str())
            })
        },
    );
    let finished = instances
        .as_array()
        .into_iter()
        .flatten()
        .find(|t| t["payload"]["execution_id"] == id.as_str())
        .expect("instance");
    let payload = &finished["payload"];
    assert_eq!(
        payload["action_name"], "slack.chat.postMessage",
        "{payload}"
    );
    assert_eq!(payload["action_ref"], "slack.chat.postMessage", "{payload}");
    assert_eq!(payload["runner_ref"], "rhai", "{payload}");
    assert_eq!(payload["status"], "succeeded", "{payload}");
    assert_eq!(payload["parameters"]["channel"], "#audit", "{payload}");
    assert_eq!(
        payload["parameters"]["link_names"], "sometimes",
        "{payload}"
    );
    assert!(payload["start_timestamp"].is_string(), "{payload}");
    assert_eq!(payload["result"]["ok"], true, "{payload}");

    // The rule on the action trigger matched on action_name and ran the other dotted action.
    let lookups = s.executions_of(finished["id"].as_str().expect("id"), 1);
    assert_eq!(lookups[0]["action"]["ref"], "slack.users.lookupByEmail");
    assert_eq!(lookups[0]["status"], "succeeded", "{}", lookups[0]);
    assert_eq!(
        lookups[0]["result"]["user"]["profile"]["email"],
        Value::from("#audit@example.com")
    );
}

#[test]
fn st2_metadata_of_older_packs_loads_as_st2_reads_it() {
    let dir = tempfile::tempdir().expect("tempdir");
    let pack = dir.path().join("legacy");
    write(
        &pack,
        "pack.yaml",
        "ref: legacy\nname: legacy\ndescription: st2 content of older shapes\nversion: 0.1.0\nauthor: ops\n",
    );
    // An old runner name, a runner parameter made immutable without a default (core.local's
    // `sudo`), and `items` on an object parameter (pagerduty's incident.create).
    write(
        &pack,
        "actions/uptime.yaml",
        "name: uptime\nrunner_type: run-local\nentry_point: ''\nparameters:\n  cmd:\n    default: uptime\n    immutable: true\n  sudo:\n    immutable: true\n  details:\n    type: object\n    items:\n      type: string\n",
    );
    // st2's Python sensor: its trigger type is registered, so the rule on it loads; the
    // sensor itself is the one problem, said at its line.
    write(
        &pack,
        "sensors/watch.yaml",
        "---\nclass_name: FileWatchSensor\nentry_point: file_watch_sensor.py\ndescription: Watches files\ntrigger_types:\n  - name: file_watch.line\n    payload_schema: {type: object}\n",
    );
    write(
        &pack,
        "rules/on_line.yaml",
        "name: on_line\npack: legacy\nenabled: true\ntrigger:\n  type: legacy.file_watch.line\naction:\n  ref: legacy.uptime\n",
    );
    let out = squall(&[
        "pack",
        "validate",
        path(&repo().join("packs")),
        path(dir.path()),
    ]);
    let all = text(&out);
    let problems: Vec<&str> = all.lines().filter(|l| l.contains("legacy/")).collect();
    assert_eq!(problems.len(), 1, "{all}");
    assert!(
        problems[0].contains("sensors/watch.yaml:2")
            && problems[0]
                .contains("st2 Python sensor 'FileWatchSensor' does not run under squall"),
        "{all}"
    );
    assert!(all.contains("1 actions, 1 rules"), "{all}");
}
