//! `squall rule test` for a correlation rule: the trigger instances file is a list of
//! instances with their times, fed in time order to the rule's state as `squall run` feeds
//! them; each window that closes on the way closes at its deadline; what fires is printed with
//! its rendered action. Pure: no server, no store.

use std::process::ExitCode;
use std::sync::Arc;

use anyhow::{anyhow, bail, Result};
use chrono::{DateTime, Utc};
use serde_json::Value;
use squall_engine::rules::{
    CorrelationState, EvalEnv, FedInstance, NoKeyValues, Outcome, Rule, RuleSet,
    TriggerInstanceView,
};

/// One timed instance: `{trigger, payload, trigger_parameters, at}`, `at` in seconds from the
/// start of the test or an RFC 3339 time.
struct Timed {
    trigger: String,
    payload: Value,
    trigger_parameters: Option<Value>,
    at: DateTime<Utc>,
}

fn start_of_test() -> DateTime<Utc> {
    DateTime::<Utc>::UNIX_EPOCH + chrono::Duration::days(20_000)
}

fn timed(i: usize, v: &Value) -> Result<Timed> {
    let at = match v.get("at") {
        None => {
            bail!("instance {i}: 'at' (seconds from the start, or an RFC 3339 time) is required")
        }
        Some(Value::Number(n)) => {
            let secs = n
                .as_f64()
                .ok_or_else(|| anyhow!("instance {i}: 'at' is not a number of seconds"))?;
            start_of_test() + chrono::Duration::milliseconds((secs * 1000.0).round() as i64)
        }
        Some(Value::String(t)) => DateTime::parse_from_rfc3339(t)
            .map_err(|e| anyhow!("instance {i}: 'at' {t}: {e}"))?
            .with_timezone(&Utc),
        Some(other) => bail!("instance {i}: 'at' must be seconds or a time, not {other}"),
    };
    Ok(Timed {
        trigger: v
            .get("trigger")
            .and_then(Value::as_str)
            .ok_or_else(|| anyhow!("instance {i}: 'trigger' (the trigger type ref) is required"))?
            .to_string(),
        payload: v
            .get("payload")
            .cloned()
            .unwrap_or(Value::Object(Default::default())),
        trigger_parameters: v.get("trigger_parameters").cloned(),
        at,
    })
}

fn shown(t: DateTime<Utc>) -> String {
    let secs = (t - start_of_test()).num_milliseconds() as f64 / 1000.0;
    if (0.0..1e6).contains(&secs) {
        format!("{secs}s")
    } else {
        t.to_rfc3339()
    }
}

/// Feeds `instances` (a list) to the correlation rule; exit 0 when it fired.
pub fn correlation_test(rule: Rule, instances: &Value) -> Result<ExitCode> {
    let list = instances.as_array().ok_or_else(|| {
        anyhow!("a correlation rule is tested with a list of instances, each with 'at'")
    })?;
    let mut timed_list = list
        .iter()
        .enumerate()
        .map(|(i, v)| timed(i, v))
        .collect::<Result<Vec<_>>>()?;
    timed_list.sort_by_key(|t| t.at);
    let reference = rule.reference();
    let Some(corr) = rule.correlate.clone() else {
        bail!("{reference} is not a correlation rule");
    };
    let (set, problems) = RuleSet::build(vec![rule]);
    if let Some((_, why)) = problems.first() {
        bail!("{reference}: {why}");
    }
    let mut state = CorrelationState::new(&corr);
    let env = EvalEnv {
        now: Utc::now(),
        kv: Arc::new(NoKeyValues),
    };
    let empty = Value::Object(Default::default());
    let mut fired = 0;
    let mut report = |outcomes: Vec<Outcome>| -> Result<()> {
        for o in outcomes {
            match o {
                Outcome::Fire {
                    group, at, events, ..
                } => {
                    fired += 1;
                    println!(
                        "{}: FIRES for group {} ({} event(s))",
                        shown(at),
                        Value::Array(group.clone()),
                        events.len()
                    );
                    match set.render_correlated_action(0, &events, &group, None, &env) {
                        Ok(r) => println!(
                            "  action: {} {}",
                            r.action,
                            serde_json::to_string(&r.parameters).unwrap_or_default()
                        ),
                        Err(e) => println!("  the action does not render: {e}"),
                    }
                }
                Outcome::Expired {
                    group, deadline, ..
                } => println!(
                    "{}: window of group {} closed incomplete",
                    shown(deadline),
                    Value::Array(group)
                ),
                Outcome::Cancelled { group, at, .. } => println!(
                    "{}: group {} cancelled by a 'none' part",
                    shown(at),
                    Value::Array(group)
                ),
                Outcome::Refused { at, reason, .. } => println!("{}: refused: {reason}", shown(at)),
            }
        }
        Ok(())
    };
    let mut last = start_of_test();
    report(state.advance(&corr, last))?;
    for (i, t) in timed_list.iter().enumerate() {
        let params = t.trigger_parameters.as_ref().unwrap_or(&empty);
        let view = TriggerInstanceView {
            trigger: &t.trigger,
            payload: &t.payload,
            trigger_parameters: Some(params),
        };
        // Windows due by now close first, in time order.
        report(state.advance(&corr, t.at))?;
        let eval = set.evaluate(&view, &env);
        let id = format!("instance-{i}");
        let inst = FedInstance {
            id: &id,
            trigger: &t.trigger,
            payload: &t.payload,
        };
        match eval.correlated.first() {
            Some((_, parts)) => {
                let parts: Vec<usize> = parts.iter().collect();
                println!(
                    "{}: instance {i} ({}) matches part(s) {parts:?}",
                    shown(t.at),
                    t.trigger
                );
                report(state.feed(&corr, eval.correlated[0].1, inst, t.at))?;
            }
            None => {
                println!(
                    "{}: instance {i} ({}) matches no part",
                    shown(t.at),
                    t.trigger
                );
            }
        }
        last = t.at;
    }
    // Every window still open closes, as time would close it.
    let end = state
        .open_groups()
        .iter()
        .map(|g| g.deadline)
        .max()
        .unwrap_or(last)
        .max(last);
    report(state.advance(&corr, end))?;
    if fired == 0 {
        println!("=== RULE DOES NOT FIRE ===");
        return Ok(ExitCode::FAILURE);
    }
    println!("=== RULE FIRES {fired} TIME(S) ===");
    Ok(ExitCode::SUCCESS)
}
