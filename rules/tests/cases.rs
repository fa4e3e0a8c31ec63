//! Data-driven rule tests: one folder per case under `tests/cases/`, run by one test function.
//!
//! A case folder holds `trigger_instance.json` (`{"trigger": REF, "payload": {...}}`), either
//! `rule.yaml` (one rule) or a `rules/` folder (several, for backstop and index cases),
//! `expected.json`, and optionally `env.json` (`{"now": RFC3339, "kv": {name: value}}`).
//! `expected.json` for one rule: `{"matches": true, "action": REF, "parameters": {...}}`,
//! `{"matches": false, "failed_key": KEY, "error": BOOL}`, or `{"load_error": TEXT}`; for a
//! `rules/` folder: `{"matched": [RULE_REF, ...]}`. A new case is a new folder, not new code.

use std::path::Path;
use std::sync::Arc;

use serde_json::Value;
use squall_rules::{EvalEnv, KeyValueLookup, NoMatch, Rule, RuleSet, TriggerInstanceView};

struct CaseKv(serde_json::Map<String, Value>);

impl KeyValueLookup for CaseKv {
    fn get(&self, name: &str) -> Option<String> {
        self.0
            .get(name)
            .and_then(|v| v.as_str())
            .map(str::to_string)
    }
}

fn read_json(path: &Path) -> Value {
    let text = std::fs::read_to_string(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    serde_json::from_str(&text).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

fn env_for(dir: &Path) -> EvalEnv {
    let env_file = dir.join("env.json");
    let (now, kv) = if env_file.exists() {
        let v = read_json(&env_file);
        let now = v["now"]
            .as_str()
            .map(|s| {
                s.parse()
                    .unwrap_or_else(|e| panic!("{}: now: {e}", dir.display()))
            })
            .unwrap_or_else(chrono::Utc::now);
        let kv = v["kv"].as_object().cloned().unwrap_or_default();
        (now, kv)
    } else {
        (chrono::Utc::now(), serde_json::Map::new())
    };
    EvalEnv {
        now,
        kv: Arc::new(CaseKv(kv)),
    }
}

fn load(path: &Path) -> Result<Rule, String> {
    let text = std::fs::read_to_string(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    Rule::from_yaml(&text).map_err(|errs| {
        errs.iter()
            .map(ToString::to_string)
            .collect::<Vec<_>>()
            .join("\n")
    })
}

fn run_case(dir: &Path) -> Result<(), String> {
    let expected = read_json(&dir.join("expected.json"));
    let instance = read_json(&dir.join("trigger_instance.json"));
    let trigger = instance["trigger"]
        .as_str()
        .ok_or("trigger_instance.json: no trigger")?;
    let payload = instance.get("payload").cloned().unwrap_or(Value::Null);
    let params = instance.get("trigger_parameters");
    let view = TriggerInstanceView {
        trigger,
        payload: &payload,
        trigger_parameters: params,
    };
    let env = env_for(dir);

    if dir.join("rules").is_dir() {
        let mut files: Vec<_> = std::fs::read_dir(dir.join("rules"))
            .map_err(|e| e.to_string())?
            .filter_map(|e| e.ok().map(|e| e.path()))
            .collect();
        files.sort();
        let rules = files
            .iter()
            .map(|f| load(f))
            .collect::<Result<Vec<_>, _>>()?;
        let set = RuleSet::new(rules).map_err(|e| format!("{e:?}"))?;
        let eval = set.evaluate(&view, &env);
        let got: Vec<String> = eval
            .matched
            .iter()
            .map(|&id| set.rule(id).reference())
            .collect();
        let want: Vec<String> =
            serde_json::from_value(expected["matched"].clone()).map_err(|e| e.to_string())?;
        return if got == want {
            Ok(())
        } else {
            Err(format!("matched {got:?}, expected {want:?}"))
        };
    }

    let rule = load(&dir.join("rule.yaml"));
    if let Some(want) = expected.get("load_error").and_then(Value::as_str) {
        return match rule {
            Err(e) if e.contains(want) => Ok(()),
            Err(e) => Err(format!("load error {e:?} does not mention {want:?}")),
            Ok(_) => Err(format!(
                "rule loaded; expected an error mentioning {want:?}"
            )),
        };
    }
    let set = RuleSet::new(vec![rule?]).map_err(|e| format!("{e:?}"))?;
    let verdict = set.check(0, &view, &env, false);
    let want_match = expected["matches"]
        .as_bool()
        .ok_or("expected.json: no 'matches'")?;
    match (verdict, want_match) {
        (Ok(()), true) => {
            let rendered = set.render_action(0, &payload, None, &env);
            if let Some(want) = expected.get("render_error").and_then(Value::as_str) {
                return match rendered {
                    Err(e) if e.contains(want) => Ok(()),
                    Err(e) => Err(format!("render error {e:?} does not mention {want:?}")),
                    Ok(_) => Err(format!(
                        "rendered; expected a render error mentioning {want:?}"
                    )),
                };
            }
            let req = rendered?;
            if let Some(action) = expected.get("action") {
                if Value::String(req.action.clone()) != *action {
                    return Err(format!("action {} != {action}", req.action));
                }
            }
            if let Some(p) = expected.get("parameters") {
                if Value::Object(req.parameters.clone()) != *p {
                    return Err(format!(
                        "parameters {} != {p}",
                        Value::Object(req.parameters)
                    ));
                }
            }
            if let Some(want) = expected.get("render_error").and_then(Value::as_str) {
                return Err(format!(
                    "rendered, expected a render error mentioning {want:?}"
                ));
            }
            Ok(())
        }
        (Ok(()), false) => Err("matched; expected no match".into()),
        (Err(why), true) => Err(format!("did not match; expected a match:\n{why}")),
        (Err(why), false) => {
            if let Some(key) = expected.get("failed_key").and_then(Value::as_str) {
                match &why {
                    NoMatch::Criterion(f) if f.key == key => {}
                    other => return Err(format!("failed on {other:?}, expected key {key}")),
                }
            }
            if let Some(want_err) = expected.get("error").and_then(Value::as_bool) {
                let has_err = matches!(&why, NoMatch::Criterion(f) if f.error.is_some());
                if has_err != want_err {
                    return Err(format!(
                        "error recorded: {has_err}, expected {want_err}: {why:?}"
                    ));
                }
            }
            Ok(())
        }
    }
}

#[test]
fn rule_cases() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/cases");
    let mut dirs: Vec<_> = std::fs::read_dir(&root)
        .expect("tests/cases exists")
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
    println!("{} rule cases run", dirs.len());
    assert!(
        failures.is_empty(),
        "{} of {} cases failed:\n{}",
        failures.len(),
        dirs.len(),
        failures.join("\n\n")
    );
}
