//! Workflow semantics as data: each folder of `tests/workflow_cases/` holds `workflow.yaml`,
//! `input.json`, `script.json` (the simulated action results) and `expected.json` (the
//! requests in order, the final status, the result, or the load error), run by one test.
//! A folder with `chain.yaml` instead of `workflow.yaml` holds an st2 ActionChain (the
//! `action-chain` runner's file); its `input.json` is the action's parameters.
//!
//! An optional `kv.json` is the key-value store the workflow's `st2kv()` reads (a secret is
//! `{"value": ..., "encrypted": ...}`), and an optional `st2.json` is `ctx().st2`.
//!
//! `script.json` is a list of steps `{task, item?, status, result?}` answered in order (each
//! must match a request that is outstanding), or `{steps: [...], otherwise: "echo"}` where,
//! once the steps run out, every outstanding request succeeds in request order with its
//! input as result. A step may also be an operator's command, `{command: pause|resume|cancel}`
//! or `{command: rerun, tasks: [...], reset: [...]}` (a re-run of the failed workflow), or a
//! check of the status at that point, `{expect_status: paused}`. This file must never simulate
//! anything the conductor decides.

use std::collections::BTreeMap;
use std::path::Path;

use serde_json::{json, Value};
use squall_actions::RunnerType;
use squall_engine::rules::KeyValueLookup;
use squall_engine::workflow::{
    Conductor, OutcomeStatus, TaskOutcome, TaskRequest, Workflow, WorkflowStatus,
};

/// The key-value store a case sees: `kv.json`, a map of names to values.
struct Keys(Value);

impl KeyValueLookup for Keys {
    fn get(&self, name: &str) -> Option<String> {
        self.get_stored(name, true)
    }

    /// A secret is written `{"value": clear, "encrypted": ciphertext}`.
    fn get_stored(&self, name: &str, decrypt: bool) -> Option<String> {
        let v = self.0.get(name)?;
        let v = match v.get("encrypted") {
            Some(encrypted) if !decrypt => encrypted,
            Some(_) => v.get("value")?,
            None => v,
        };
        v.as_str().map(str::to_string)
    }
}

fn read_json(dir: &Path, name: &str, default: Value) -> Value {
    match std::fs::read_to_string(dir.join(name)) {
        Ok(text) => {
            serde_json::from_str(&text).unwrap_or_else(|e| panic!("{}/{name}: {e}", dir.display()))
        }
        Err(_) => default,
    }
}

fn request_matches(expected: &Value, got: &TaskRequest) -> bool {
    match expected {
        Value::String(s) => {
            let label = match got.item {
                Some(i) => format!("{}[{i}]", got.task),
                None => got.task.clone(),
            };
            *s == label
        }
        Value::Object(m) => m.iter().all(|(k, v)| match k.as_str() {
            "task" => v == &json!(got.task),
            "item" => v == &json!(got.item),
            "attempt" => v == &json!(got.attempt),
            "action" => v == &json!(got.action),
            "input" => v == &json!(got.input),
            "delay" => v == &json!(got.delay),
            "notify" => v == &json!(got.notify),
            other => panic!("unknown request field '{other}' in expected.json"),
        }),
        other => panic!("a request is a label or an object, not {other}"),
    }
}

fn run_case(dir: &Path) -> Result<(), String> {
    let (text, runner) = match std::fs::read_to_string(dir.join("chain.yaml")) {
        Ok(text) => (text, RunnerType::ActionChain),
        Err(_) => (
            std::fs::read_to_string(dir.join("workflow.yaml")).map_err(|e| e.to_string())?,
            RunnerType::Workflow,
        ),
    };
    let expected = read_json(dir, "expected.json", json!({}));
    let workflow = match Workflow::parse_for(runner, &text) {
        Ok(w) => w,
        Err(problems) => {
            let got: Vec<String> = problems.iter().map(|p| p.to_string()).collect();
            let want = expected["load_errors"]
                .as_array()
                .ok_or_else(|| format!("unexpected load errors: {got:?}"))?;
            if want.len() != got.len() {
                return Err(format!("load errors: want {want:?}, got {got:?}"));
            }
            for (w, g) in want.iter().zip(&got) {
                if !g.contains(w.as_str().unwrap_or_default()) {
                    return Err(format!("load error '{g}' does not contain {w}"));
                }
            }
            return Ok(());
        }
    };
    if expected.get("load_errors").is_some() {
        return Err("the workflow loaded, but load errors were expected".into());
    }
    let input = read_json(dir, "input.json", json!({}));
    let kv: std::sync::Arc<dyn KeyValueLookup> =
        std::sync::Arc::new(Keys(read_json(dir, "kv.json", json!({}))));
    let st2 = std::fs::read_to_string(dir.join("st2.json"))
        .ok()
        .map(|_| read_json(dir, "st2.json", json!({})));
    let mut conductor =
        Conductor::with_context(workflow, input, Some(kv), st2).map_err(|e| e.to_string())?;

    let script = read_json(dir, "script.json", json!([]));
    let (steps, echo) = match &script {
        Value::Array(steps) => (steps.clone(), false),
        Value::Object(m) => (
            m.get("steps")
                .and_then(Value::as_array)
                .cloned()
                .unwrap_or_default(),
            m.get("otherwise") == Some(&json!("echo")),
        ),
        other => {
            return Err(format!(
                "script.json must be a list or an object, not {other}"
            ))
        }
    };
    let mut steps = steps.into_iter().peekable();
    let mut outstanding: Vec<TaskRequest> = Vec::new();
    let mut log: Vec<TaskRequest> = Vec::new();
    let mut max_outstanding: BTreeMap<String, usize> = BTreeMap::new();
    loop {
        let new = conductor.next_requests();
        log.extend(new.iter().cloned());
        outstanding.extend(new);
        for r in &outstanding {
            let n = outstanding.iter().filter(|o| o.task == r.task).count();
            let max = max_outstanding.entry(r.task.clone()).or_default();
            *max = (*max).max(n);
        }
        let is_operator_step =
            |step: &Value| step.get("command").is_some() || step.get("expect_status").is_some();
        let terminal = matches!(
            conductor.status(),
            WorkflowStatus::Succeeded | WorkflowStatus::Failed | WorkflowStatus::Canceled
        );
        if terminal && !steps.peek().is_some_and(is_operator_step) {
            break;
        }
        if steps.peek().is_some_and(is_operator_step) {
            let step = steps.next().unwrap_or_default();
            operator_step(&mut conductor, &step)?;
            continue;
        }
        let (pos, outcome) = match steps.next() {
            Some(step) => {
                let task = step["task"].as_str().unwrap_or_default().to_string();
                let item = step.get("item").and_then(Value::as_u64).map(|i| i as usize);
                let pos = outstanding
                    .iter()
                    .position(|r| r.task == task && (item.is_none() || r.item == item))
                    .ok_or_else(|| format!("step {step} matches no outstanding request"))?;
                let outcome: TaskOutcome = serde_json::from_value(step.clone())
                    .map_err(|e| format!("step {step}: {e}"))?;
                (pos, outcome)
            }
            None if echo && !outstanding.is_empty() => (
                0,
                TaskOutcome {
                    status: OutcomeStatus::Succeeded,
                    result: Value::Object(outstanding[0].input.clone()),
                },
            ),
            None => return Err(format!("script ran out with {outstanding:?} outstanding")),
        };
        let req = outstanding.remove(pos);
        conductor
            .on_task_result(&req.task, req.item, outcome)
            .map_err(|e| e.to_string())?;
    }
    if let Some(step) = steps.next() {
        return Err(format!("the workflow ended before step {step}"));
    }
    if !outstanding.is_empty() {
        return Err(format!("ended with requests outstanding: {outstanding:?}"));
    }

    if let Some(want) = expected.get("requests").and_then(Value::as_array) {
        let labels: Vec<String> = log
            .iter()
            .map(|r| match r.item {
                Some(i) => format!("{}[{i}]", r.task),
                None => r.task.clone(),
            })
            .collect();
        if want.len() != log.len() || !want.iter().zip(&log).all(|(w, g)| request_matches(w, g)) {
            return Err(format!("requests: want {want:?}, got {labels:?} ({log:?})"));
        }
    }
    if let Some(want) = expected.get("status") {
        let got = json!(conductor.status());
        if *want != got {
            return Err(format!("status: want {want}, got {got}"));
        }
    }
    if let Some(want) = expected.get("result") {
        let got = conductor.output();
        if *want != got {
            return Err(format!("result: want {want}, got {got}"));
        }
    }
    if let Some(want) = expected.get("max_outstanding").and_then(Value::as_object) {
        for (task, n) in want {
            let got = max_outstanding.get(task).copied().unwrap_or(0);
            if json!(got) != *n {
                return Err(format!("max outstanding for '{task}': want {n}, got {got}"));
            }
        }
    }
    Ok(())
}

fn operator_step(conductor: &mut Conductor, step: &Value) -> Result<(), String> {
    if let Some(want) = step.get("expect_status") {
        let got = json!(conductor.status());
        return if *want == got {
            Ok(())
        } else {
            Err(format!("at {step}: status {got}, wanted {want}"))
        };
    }
    let names = |key: &str| -> Vec<String> {
        step.get(key)
            .and_then(Value::as_array)
            .map(|a| {
                a.iter()
                    .filter_map(|v| v.as_str().map(str::to_string))
                    .collect()
            })
            .unwrap_or_default()
    };
    let done = match step["command"].as_str() {
        Some("pause") => conductor.pause(),
        Some("resume") => conductor.resume(),
        Some("cancel") => conductor.cancel(),
        Some("rerun") => conductor.rerun(&names("tasks"), &names("reset")),
        other => return Err(format!("unknown command {other:?} in {step}")),
    };
    match (done, step.get("error").and_then(Value::as_str)) {
        (Ok(()), None) => Ok(()),
        (Err(e), Some(want)) if e.to_string().contains(want) => Ok(()),
        (Ok(()), Some(want)) => Err(format!("{step}: succeeded, wanted error {want}")),
        (Err(e), _) => Err(format!("{step}: {e}")),
    }
}

#[test]
fn workflow_cases() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/workflow_cases");
    let mut dirs: Vec<_> = std::fs::read_dir(&root)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.is_dir())
        .collect();
    dirs.sort();
    assert!(
        dirs.len() >= 12,
        "expected the workflow cases in {}",
        root.display()
    );
    let failures: Vec<String> = dirs
        .iter()
        .filter_map(|d| {
            run_case(d)
                .err()
                .map(|e| format!("{}: {e}", d.file_name().unwrap().to_string_lossy()))
        })
        .collect();
    assert!(
        failures.is_empty(),
        "{} case(s) failed:\n{}",
        failures.len(),
        failures.join("\n")
    );
}
