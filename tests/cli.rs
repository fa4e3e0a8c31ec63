//! The commands that work without a server: `pack validate`, `rule test`, `action exec`, run as
//! a user runs them, asserting on exit codes and what is printed.

use std::path::{Path, PathBuf};
use std::process::Output;

use crate::harness::{one_action_pack, squall, write};

fn text(out: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

/// `pack validate` of `root` with the core pack: it fails, reporting `count` problems, one at
/// each location with its words. Returns what it printed.
fn validate_finds(root: &Path, expect: &[(&str, &str)], count: usize) -> String {
    let core = Path::new(env!("CARGO_MANIFEST_DIR")).join("packs/core");
    let out = squall(&[
        "pack",
        "validate",
        root.to_str().expect("utf-8"),
        core.to_str().expect("utf-8"),
    ]);
    let all = text(&out);
    assert_eq!(out.status.code(), Some(1), "{all}");
    for (location, words) in expect {
        let line = all
            .lines()
            .find(|l| l.contains(location))
            .unwrap_or_else(|| panic!("no problem reported at {location}:\n{all}"));
        assert!(line.contains(words), "{line}");
    }
    assert!(all.contains(&format!("{count} problems found")), "{all}");
    all
}

/// A pack `broken` with one problem per file, and a good action to show loading goes on.
fn broken_pack() -> (tempfile::TempDir, PathBuf) {
    let dir = tempfile::tempdir().expect("tempdir");
    let root = dir.path().join("broken");
    write(
        &root,
        "pack.yaml",
        "ref: broken\nname: broken\nversion: 1.0.0\n",
    );
    write(
        &root,
        "actions/good.yaml",
        "name: good\nrunner_type: rhai\nentry_point: good.rhai\nenabled: true\n",
    );
    write(&root, "actions/good.rhai", "42\n");
    write(
        &root,
        "actions/bad_yaml.yaml",
        "name: bad_yaml\nrunner_type: rhai\n  entry_point: x.rhai\n",
    );
    write(
        &root,
        "actions/bad_type.yaml",
        "name: bad_type\nrunner_type: rhai\nentry_point: good.rhai\nparameters:\n  count:\n    type: integr\n",
    );
    write(
        &root,
        "actions/bad_script.yaml",
        "name: bad_script\nrunner_type: rhai\nentry_point: bad_script.rhai\n",
    );
    write(
        &root,
        "actions/bad_script.rhai",
        "let x = 1;\nlet y = (x + ;\n",
    );
    write(
        &root,
        "actions/bad_flow.yaml",
        "name: bad_flow\nrunner_type: orquesta\nentry_point: workflows/bad_flow.yaml\n",
    );
    write(
        &root,
        "actions/workflows/bad_flow.yaml",
        "version: 1.0\ntasks:\n  first:\n    action: core.noop\n    next:\n      - do: second\n",
    );
    write(
        &root,
        "rules/typo.yaml",
        "name: typo\nenabled: true\ntrigger: {type: core.webhook}\naction: {ref: broken.good}\ncritera: {}\n",
    );
    write(
        &root,
        "rules/bad_op.yaml",
        "name: bad_op\nenabled: true\ntrigger: {type: core.webhook}\ncriteria:\n  trigger.body.x:\n    type: looks_like\n    pattern: 1\naction: {ref: broken.good}\n",
    );
    write(
        &root,
        "rules/missing_action.yaml",
        "name: missing_action\nenabled: true\ntrigger: {type: core.webhook}\naction:\n  ref: broken.nope\n",
    );
    (dir, root)
}

#[test]
fn bundled_packs_validate() {
    let out = squall(&["pack", "validate", "packs"]);
    assert!(out.status.success(), "{}", text(&out));
    assert!(text(&out).contains("no problems"));
}

/// A workflow's task naming an action no pack provides is a load problem at its line, as
/// Orquesta refuses such a workflow when it starts; an action given by an expression is not.
#[test]
fn a_workflow_task_running_a_missing_action_is_a_load_problem() {
    let dir = tempfile::tempdir().expect("tempdir");
    let root = dir.path().join("wfp");
    write(&root, "pack.yaml", "ref: wfp\nname: wfp\n");
    write(
        &root,
        "actions/flow.yaml",
        "name: flow\nrunner_type: orquesta\nentry_point: workflows/flow.yaml\n",
    );
    write(
        &root,
        "actions/workflows/flow.yaml",
        "version: 1.0\ntasks:\n  one:\n    action: core.noop\n    next:\n      - do: two\n  two:\n    action: wfp.missing message=\"x\"\n  three:\n    action: \"{{ ctx().which }}\"\n",
    );
    validate_finds(
        &root,
        &[(
            "actions/workflows/flow.yaml:8",
            "task 'two' of workflow 'wfp.flow' runs action 'wfp.missing', which no loaded pack provides",
        )],
        1,
    );
}

#[test]
fn validate_lists_every_problem_with_file_and_line() {
    let (_dir, root) = broken_pack();
    validate_finds(
        &root,
        &[
            ("actions/bad_yaml.yaml:3", "mapping values"),
            ("actions/bad_type.yaml:6", "integr"),
            ("actions/bad_script.rhai:2", ""),
            ("actions/workflows/bad_flow.yaml:", "second"),
            ("rules/typo.yaml:5", "critera"),
            ("rules/bad_op.yaml:5", "looks_like"),
            ("rules/missing_action.yaml:5", "broken.nope"),
        ],
        7,
    );
}

#[test]
fn validate_reports_policies_and_timers_that_cannot_be_used() {
    let dir = tempfile::tempdir().expect("tempdir");
    let root = dir.path().join("p");
    one_action_pack(&root, "p", "a", "", "1\n");
    let policy = |name: &str, parameters: &str| {
        format!("name: {name}\nresource_ref: p.a\npolicy_type: action.retry\nparameters: {parameters}\n")
    };
    for (file, parameters) in [
        ("huge_delay", "{delay: 1e20}"),
        ("endless_delay", "{delay: .inf}"),
        ("huge_count", "{max_retry_count: 4294967296}"),
        ("list_retry_on", "{retry_on: [failure, timeout]}"),
        ("first", "{max_retry_count: 1}"),
        ("second", "{max_retry_count: 3}"),
    ] {
        write(
            &root,
            &format!("policies/{file}.yaml"),
            &policy(file, parameters),
        );
    }
    let rule = |name: &str, trigger: &str, parameters: &str| {
        format!("name: {name}\npack: p\ntrigger:\n  type: {trigger}\n  parameters: {parameters}\naction:\n  ref: p.a\n")
    };
    write(
        &root,
        "rules/bad_hour.yaml",
        &rule("bad_hour", "core.st2.CronTimer", "{hour: 25}"),
    );
    write(
        &root,
        "rules/bad_unit.yaml",
        &rule(
            "bad_unit",
            "core.st2.IntervalTimer",
            "{unit: fortnights, delta: 1}",
        ),
    );
    // Two sensors of one name would share their metrics' label and their checkpoint.
    for file in ["sensors/one.yaml", "sensors/two.yaml"] {
        write(&root, file, "sensor: docker\nname: watch\nenabled: false\n");
    }
    let all = validate_finds(
        &root,
        &[
            ("sensors/two.yaml:2", "also declared in"),
            (
                "policies/huge_delay.yaml",
                "delay must be a number of seconds from 0",
            ),
            ("policies/endless_delay.yaml", "delay must be"),
            (
                "policies/huge_count.yaml",
                "max_retry_count must be an integer from 0",
            ),
            (
                "policies/list_retry_on.yaml",
                "retry_on must be failure or timeout",
            ),
            (
                "policies/second.yaml",
                "already has an enabled action.retry policy",
            ),
            ("rules/bad_hour.yaml:5", "hour"),
            ("rules/bad_unit.yaml:5", "unit"),
        ],
        8,
    );
    assert!(
        !all.lines().any(|l| l.contains("policies/first.yaml: ")),
        "{all}"
    );
}

#[test]
fn rule_test_matches_and_renders_cast_parameters() {
    let out = squall(&[
        "rule",
        "test",
        "--rule",
        "packs/examples/rules/disk_alert.yaml",
        "--trigger-instance",
        "examples/trigger-instances/disk-firing.json",
    ]);
    let all = text(&out);
    assert_eq!(out.status.code(), Some(0), "{all}");
    assert!(all.contains("=== RULE MATCHES ==="), "{all}");
    assert!(all.contains("\"host\": \"db-1.example.com\""), "{all}");
    assert!(all.contains("\"used_percent\": 93.5"), "{all}");
}

#[test]
fn rule_test_explains_a_mismatch() {
    let out = squall(&[
        "rule",
        "test",
        "--rule",
        "packs/examples/rules/disk_alert.yaml",
        "--trigger-instance",
        "examples/trigger-instances/disk-resolved.json",
    ]);
    let all = text(&out);
    assert_eq!(out.status.code(), Some(1), "{all}");
    assert!(all.contains("=== RULE DOES NOT MATCH ==="), "{all}");
    assert!(all.contains("key: trigger.body.status"), "{all}");
    assert!(all.contains("payload: \"resolved\""), "{all}");
}

#[test]
fn rule_test_reports_bad_input_with_exit_2() {
    let dir = tempfile::tempdir().expect("tempdir");
    write(dir.path(), "instance.json", "{\"payload\": {}}");
    write(dir.path(), "bad.json", "{\"trigger\": ");
    let instance = dir.path().join("instance.json");
    let out = squall(&[
        "rule",
        "test",
        "--rule",
        "packs/examples/rules/disk_alert.yaml",
        "--trigger-instance",
        instance.to_str().expect("utf-8"),
    ]);
    assert_eq!(out.status.code(), Some(2));
    assert!(text(&out).contains("'trigger'"), "{}", text(&out));
    let bad = dir.path().join("bad.json");
    let out = squall(&[
        "rule",
        "test",
        "--rule",
        "packs/examples/rules/disk_alert.yaml",
        "--trigger-instance",
        bad.to_str().expect("utf-8"),
    ]);
    assert_eq!(out.status.code(), Some(2));
    assert!(text(&out).contains("bad.json"), "{}", text(&out));
}

#[test]
fn action_exec_runs_with_typed_parameters() {
    let out = squall(&[
        "action",
        "exec",
        "examples.greet",
        "name=ops",
        "times=2",
        "loud=true",
        "tags=[\"db\",\"eu\"]",
        "--json",
    ]);
    assert!(out.status.success(), "{}", text(&out));
    let record: serde_json::Value = serde_json::from_slice(&out.stdout).expect("json");
    assert_eq!(record["status"], "succeeded");
    assert_eq!(
        record["result"]["lines"],
        serde_json::json!(["HELLO, OPS", "HELLO, OPS"])
    );
    assert_eq!(record["result"]["tags"], serde_json::json!(["db", "eu"]));
    assert_eq!(record["log"][0]["level"], "info");
}

#[test]
fn action_exec_failures_and_bad_parameters() {
    let out = squall(&[
        "action",
        "exec",
        "examples.disk_report",
        "host=h",
        "used_percent=120",
    ]);
    assert_eq!(out.status.code(), Some(1));
    assert!(
        text(&out).contains("used_percent must be between 0 and 100"),
        "{}",
        text(&out)
    );
    assert!(text(&out).contains("line 2"), "{}", text(&out));

    let out = squall(&["action", "exec", "examples.greet", "times=x", "colour=red"]);
    assert_eq!(out.status.code(), Some(2));
    let all = text(&out);
    assert!(all.contains("parameter 'times'"), "{all}");
    assert!(all.contains("parameter 'colour'"), "{all}");

    let out = squall(&["action", "exec", "examples.greet"]);
    assert_eq!(out.status.code(), Some(2));
    assert!(text(&out).contains("parameter 'name'"), "{}", text(&out));

    let out = squall(&["action", "exec", "nope.nothing"]);
    assert_eq!(out.status.code(), Some(2));
    assert!(text(&out).contains("nope.nothing"));
}

#[test]
fn action_exec_times_out_a_runaway_script() {
    let dir = tempfile::tempdir().expect("tempdir");
    let root = dir.path().join("spin");
    one_action_pack(
        &root,
        "spin",
        "forever",
        "timeout: 1\n",
        "let n = 0;\nloop { n += 1; }\n",
    );
    let started = std::time::Instant::now();
    let out = squall(&[
        "action",
        "exec",
        "spin.forever",
        "--packs",
        root.to_str().expect("utf-8"),
        "--json",
    ]);
    assert_eq!(out.status.code(), Some(1), "{}", text(&out));
    let record: serde_json::Value = serde_json::from_slice(&out.stdout).expect("json");
    assert_eq!(record["status"], "timeout");
    assert!(started.elapsed().as_secs_f64() >= 1.0);
}
