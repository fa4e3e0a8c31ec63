//! Data-driven correlation tests: one folder per case under `tests/correlate_cases/`, run by one
//! test function, the way the engine drives a correlation rule (the rule set's evaluation
//! says which parts an instance matched; the rule's state takes it).
//!
//! A case folder holds `rule.yaml`, `expected.json` and, unless the rule must fail to load,
//! `events.json`: a list of steps, each one of
//! - `{"at": SECONDS, "trigger": REF, "payload": {...}, "id": ID}`: an instance at SECONDS
//!   after the start (2024-01-01T00:00:00Z); `id` defaults to `i<n>`, its rank among the
//!   instances from 1;
//! - `{"advance_to": SECONDS}`: time passes (windows that closed by then fire or expire);
//! - `{"restart": true}`: the state is written as JSON and read back, as across a restart.
//!
//! `expected.json`: `{"fires": [{"at", "group", "events": [ID...], "parameters"?}],
//! "expiries": [{"at", "group", "events"}], "cancels": [{"at", "group", "by"}],
//! "refusals": [{"at", "group", "instance"}], "open": [{"group", "opened_at", "deadline",
//! "instances"}], "criteria_errors": [{"instance", "key", "error"}]}` (a list left out is
//! expected empty), or `{"load_errors": [{"line": N,
//! "contains": TEXT}, ...]}`: every problem, in order. Times are seconds after the start.
//! After every step the harness also advances again to the same time and requires nothing
//! more: each window closes once.

use std::path::Path;
use std::sync::Arc;

use chrono::{DateTime, Utc};
use serde_json::{json, Value};
use squall_rules::{
    CorrelationState, EvalEnv, FedInstance, NoKeyValues, Outcome, Rule, RuleSet,
    TriggerInstanceView,
};

fn read_json(path: &Path) -> Value {
    let text = std::fs::read_to_string(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    serde_json::from_str(&text).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

fn start() -> DateTime<Utc> {
    "2024-01-01T00:00:00Z".parse().expect("a valid time")
}

fn time(seconds: &Value) -> Result<DateTime<Utc>, String> {
    let s = seconds
        .as_f64()
        .ok_or_else(|| format!("{seconds} is not a number of seconds"))?;
    Ok(start() + chrono::Duration::milliseconds((s * 1000.0).round() as i64))
}

/// Seconds after the start, as an integer when whole (as cases write them).
fn seconds(t: &DateTime<Utc>) -> Value {
    let ms = (*t - start()).num_milliseconds();
    if ms % 1000 == 0 {
        json!(ms / 1000)
    } else {
        json!(ms as f64 / 1000.0)
    }
}

fn load_errors(text: &str, expected: &Value) -> Result<(), String> {
    let want = expected["load_errors"]
        .as_array()
        .ok_or("load_errors must be a list")?;
    let errs = match Rule::from_yaml(text) {
        Ok(_) => return Err("the rule loaded; expected load errors".into()),
        Err(e) => e,
    };
    let shown: Vec<String> = errs.iter().map(ToString::to_string).collect();
    if errs.len() != want.len() {
        return Err(format!(
            "{} problems, expected {}:\n{}",
            errs.len(),
            want.len(),
            shown.join("\n")
        ));
    }
    for (e, w) in errs.iter().zip(want) {
        let line = w["line"].as_u64().map(|l| l as usize);
        let contains = w["contains"].as_str().ok_or("contains must be text")?;
        if e.line != line || !e.message.contains(contains) {
            return Err(format!(
                "problem {e} is not at line {line:?} mentioning {contains:?}; all problems:\n{}",
                shown.join("\n")
            ));
        }
    }
    Ok(())
}

/// What happened, in the shape of `expected.json`.
#[derive(Default)]
struct Seen {
    fires: Vec<Value>,
    expiries: Vec<Value>,
    cancels: Vec<Value>,
    refusals: Vec<Value>,
    errors: Vec<Value>,
}

fn record(
    seen: &mut Seen,
    outcomes: Vec<Outcome>,
    set: &RuleSet,
    env: &EvalEnv,
) -> Result<(), String> {
    for o in outcomes {
        match o {
            Outcome::Fire {
                group, at, events, ..
            } => {
                let request = set.render_correlated_action(0, &events, &group, None, env)?;
                let ids: Vec<&str> = events.iter().map(|e| e.instance_id.as_str()).collect();
                seen.fires.push(json!({
                    "at": seconds(&at), "group": group, "events": ids,
                    "parameters": request.parameters,
                }));
            }
            Outcome::Expired {
                group,
                deadline,
                events,
                ..
            } => {
                let ids: Vec<&str> = events.iter().map(|e| e.instance_id.as_str()).collect();
                seen.expiries
                    .push(json!({"at": seconds(&deadline), "group": group, "events": ids}));
            }
            Outcome::Cancelled {
                group,
                at,
                instance_id,
                ..
            } => seen
                .cancels
                .push(json!({"at": seconds(&at), "group": group, "by": instance_id})),
            Outcome::Refused {
                group,
                at,
                instance_id,
                reason,
                ..
            } => {
                if !reason.contains("limit") {
                    return Err(format!("a refusal that does not name the limit: {reason}"));
                }
                seen.refusals
                    .push(json!({"at": seconds(&at), "group": group, "instance": instance_id}));
            }
        }
    }
    Ok(())
}

fn run_case(dir: &Path) -> Result<(), String> {
    let text = std::fs::read_to_string(dir.join("rule.yaml")).map_err(|e| e.to_string())?;
    let expected = read_json(&dir.join("expected.json"));
    if expected.get("load_errors").is_some() {
        return load_errors(&text, &expected);
    }
    let rule = Rule::from_yaml(&text).map_err(|e| format!("{e:?}"))?;
    let set = RuleSet::new(vec![rule]).map_err(|e| format!("{e:?}"))?;
    if set.correlation_rules().collect::<Vec<_>>() != [0] {
        return Err("the rule is not a correlation rule".into());
    }
    let corr = set
        .rule(0)
        .correlate
        .clone()
        .ok_or("the rule has no correlate block")?;
    let mut state = CorrelationState::new(&corr);
    let mut seen = Seen::default();
    let mut instances = 0;
    let steps = read_json(&dir.join("events.json"));
    for step in steps.as_array().ok_or("events.json must be a list")? {
        let env_at = |now| EvalEnv {
            now,
            kv: Arc::new(NoKeyValues),
        };
        let now;
        if let Some(t) = step.get("advance_to") {
            now = time(t)?;
            let out = state.advance(&corr, now);
            record(&mut seen, out, &set, &env_at(now))?;
        } else if step.get("restart").is_some() {
            let text = serde_json::to_string(&state).map_err(|e| e.to_string())?;
            state = serde_json::from_str(&text).map_err(|e| format!("reading state back: {e}"))?;
            if !state.fits(&corr) {
                return Err("the state read back does not fit its rule".into());
            }
            continue;
        } else {
            instances += 1;
            now = time(&step["at"])?;
            let trigger = step["trigger"]
                .as_str()
                .ok_or("an instance needs trigger")?;
            let payload = step.get("payload").cloned().unwrap_or(Value::Null);
            let id = step["id"]
                .as_str()
                .map(str::to_string)
                .unwrap_or_else(|| format!("i{instances}"));
            let env = env_at(now);
            let view = TriggerInstanceView {
                trigger,
                payload: &payload,
                trigger_parameters: None,
            };
            let eval = set.evaluate(&view, &env);
            for (_, f) in &eval.errors {
                seen.errors
                    .push(json!({"instance": id, "key": f.key, "error": f.error}));
            }
            // The rule-set path and the cheap lookup agree on which rules care.
            let concerned = set.correlation_rules_for(trigger);
            if eval.correlated.iter().any(|(r, _)| !concerned.contains(r)) {
                return Err(format!("{id}: matched parts of a rule not concerned"));
            }
            // An instance no part takes still moves time on, as the engine's feed would.
            let parts = eval.correlated.first().map(|(_, p)| *p).unwrap_or_default();
            let inst = FedInstance {
                id: &id,
                trigger,
                payload: &payload,
            };
            let out = state.feed(&corr, parts, inst, now);
            record(&mut seen, out, &set, &env)?;
        }
        let again = state.advance(&corr, now);
        if !again.is_empty() {
            return Err(format!("advancing twice to {now} gave {again:?}"));
        }
    }

    let open: Vec<Value> = state
        .open_groups()
        .into_iter()
        .map(|g| {
            json!({"group": g.group, "opened_at": seconds(&g.opened_at),
                   "deadline": seconds(&g.deadline), "instances": g.instances})
        })
        .collect();
    let mut failures = Vec::new();
    let mut compare = |name: &str, got: Vec<Value>| {
        let want = expected
            .get(name)
            .cloned()
            .unwrap_or(Value::Array(Vec::new()));
        let want = want.as_array().cloned().unwrap_or_default();
        // A fire's parameters are compared only when the case gives them.
        let got: Vec<Value> = got
            .into_iter()
            .zip(want.iter().map(Some).chain(std::iter::repeat(None)))
            .map(|(mut g, w)| {
                if w.is_some_and(|w| w.get("parameters").is_none()) {
                    if let Some(m) = g.as_object_mut() {
                        m.remove("parameters");
                    }
                }
                g
            })
            .collect();
        if got != want {
            failures.push(format!(
                "{name}: got\n  {}\nexpected\n  {}",
                Value::Array(got),
                Value::Array(want)
            ));
        }
    };
    compare("fires", seen.fires);
    compare("expiries", seen.expiries);
    compare("cancels", seen.cancels);
    compare("refusals", seen.refusals);
    compare("open", open);
    compare("criteria_errors", seen.errors);
    if failures.is_empty() {
        Ok(())
    } else {
        Err(failures.join("\n"))
    }
}

#[test]
fn correlate_cases() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/correlate_cases");
    let mut dirs: Vec<_> = std::fs::read_dir(&root)
        .expect("tests/correlate_cases exists")
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.is_dir())
        .collect();
    dirs.sort();
    assert!(!dirs.is_empty(), "no cases in {}", root.display());
    let failures: Vec<String> = dirs
        .iter()
        .filter_map(|d| {
            run_case(d).err().map(|e| {
                format!(
                    "{}: {e}",
                    d.file_name().unwrap_or_default().to_string_lossy()
                )
            })
        })
        .collect();
    println!("{} correlation cases run", dirs.len());
    assert!(
        failures.is_empty(),
        "{} of {} cases failed:\n{}",
        failures.len(),
        dirs.len(),
        failures.join("\n\n")
    );
}
