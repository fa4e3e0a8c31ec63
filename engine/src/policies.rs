//! st2's action policies, read from a pack's `policies/*.yaml`: `action.retry` (retry on failure
//! or timeout, up to a count, after a delay) and `action.concurrency` (a threshold of running
//! executions per action; beyond it new ones are delayed or canceled).
//!
//! Parsing reports every problem with its file; applying the policies is the pipeline's job.

use std::collections::HashMap;
use std::path::Path;
use std::time::Duration;

use serde::Deserialize;
use serde_json::Value;

use crate::packs::{Catalog, Problem};

/// The most retries a retry policy may ask for.
const MAX_RETRY_COUNT: u64 = 100;

/// The longest delay before a retry, in seconds (a day).
const MAX_RETRY_DELAY_SECONDS: f64 = 86_400.0;

#[derive(Debug, Clone)]
pub struct RetryPolicy {
    pub name: String,
    pub on_failure: bool,
    pub on_timeout: bool,
    pub max_retry_count: u32,
    pub delay: Duration,
}

#[derive(Debug, Clone)]
pub struct ConcurrencyPolicy {
    pub name: String,
    pub threshold: usize,
    /// `action: cancel` instead of st2's default `delay`.
    pub cancel: bool,
}

/// Policies by action reference.
#[derive(Debug, Default)]
pub struct Policies {
    retry: HashMap<String, RetryPolicy>,
    concurrency: HashMap<String, ConcurrencyPolicy>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawPolicy {
    name: String,
    #[serde(default)]
    pack: Option<String>,
    #[serde(default)]
    description: Option<String>,
    #[serde(default = "yes")]
    enabled: bool,
    resource_ref: String,
    policy_type: String,
    #[serde(default)]
    parameters: serde_json::Map<String, Value>,
}

fn yes() -> bool {
    true
}

impl Policies {
    pub fn retry(&self, action: &str) -> Option<&RetryPolicy> {
        self.retry.get(action)
    }

    pub fn concurrency(&self, action: &str) -> Option<&ConcurrencyPolicy> {
        self.concurrency.get(action)
    }

    /// Policies of every loaded pack. Invalid ones were reported by [`check`] at load time and
    /// are skipped here.
    pub fn from_catalog(catalog: &Catalog) -> Policies {
        let mut p = Policies::default();
        for pack in &catalog.packs {
            for (file, value) in pack.extras.get("policies").into_iter().flatten() {
                if let Ok(parsed) = parse(file, value) {
                    match parsed {
                        // The first of two policies of a type for one action applies; [`check`]
                        // reports the other.
                        Parsed::Retry(action, r) => {
                            p.retry.entry(action).or_insert(r);
                        }
                        Parsed::Concurrency(action, c) => {
                            p.concurrency.entry(action).or_insert(c);
                        }
                        Parsed::Disabled => {}
                    }
                }
            }
        }
        p
    }
}

enum Parsed {
    Retry(String, RetryPolicy),
    Concurrency(String, ConcurrencyPolicy),
    Disabled,
}

fn parse(file: &Path, value: &Value) -> Result<Parsed, Problem> {
    let err = |m: String| Problem {
        file: file.to_path_buf(),
        line: None,
        column: None,
        message: m,
    };
    let raw: RawPolicy = serde_json::from_value(value.clone()).map_err(|e| err(e.to_string()))?;
    let _ = (&raw.pack, &raw.description);
    if !raw.enabled {
        return Ok(Parsed::Disabled);
    }
    let params = &raw.parameters;
    let allowed: &[&str] = match raw.policy_type.as_str() {
        "action.retry" => &["retry_on", "max_retry_count", "delay"],
        "action.concurrency" => &["threshold", "action"],
        other => {
            return Err(err(format!(
                "policy_type {other:?} is not supported (action.retry, action.concurrency)"
            )))
        }
    };
    if let Some(unknown) = params.keys().find(|k| !allowed.contains(&k.as_str())) {
        return Err(err(format!(
            "parameter '{unknown}' is not a parameter of {} ({})",
            raw.policy_type,
            allowed.join(", ")
        )));
    }
    if raw.policy_type == "action.retry" {
        let (on_failure, on_timeout) = match params.get("retry_on") {
            None => (true, false),
            Some(Value::String(on)) if on == "failure" => (true, false),
            Some(Value::String(on)) if on == "timeout" => (false, true),
            Some(other) => {
                return Err(err(format!(
                    "retry_on must be failure or timeout, not {other}"
                )))
            }
        };
        let max = params
            .get("max_retry_count")
            .map(|v| {
                v.as_u64().filter(|n| *n <= MAX_RETRY_COUNT).ok_or_else(|| {
                    err(format!(
                        "max_retry_count must be an integer from 0 to {MAX_RETRY_COUNT}, not {v}"
                    ))
                })
            })
            .transpose()?
            .unwrap_or(2);
        let delay = params
            .get("delay")
            .map(|v| {
                v.as_f64()
                    .filter(|d| (0.0..=MAX_RETRY_DELAY_SECONDS).contains(d))
                    .ok_or_else(|| {
                        // An infinite number in YAML reaches here as null.
                        let given = if v.is_null() { "not a finite number".to_string() } else { format!("not {v}") };
                        err(format!(
                            "delay must be a number of seconds from 0 to {MAX_RETRY_DELAY_SECONDS}, {given}"
                        ))
                    })
            })
            .transpose()?
            .unwrap_or(0.0);
        return Ok(Parsed::Retry(
            raw.resource_ref,
            RetryPolicy {
                name: raw.name,
                on_failure,
                on_timeout,
                max_retry_count: u32::try_from(max).unwrap_or(u32::MAX),
                delay: Duration::from_secs_f64(delay),
            },
        ));
    }
    let threshold = params
        .get("threshold")
        .and_then(Value::as_u64)
        .filter(|t| *t > 0)
        .ok_or_else(|| err("threshold must be a positive integer".into()))?;
    let cancel = match params
        .get("action")
        .and_then(Value::as_str)
        .unwrap_or("delay")
    {
        "delay" => false,
        "cancel" => true,
        other => {
            return Err(err(format!(
                "action must be delay or cancel, not {other:?}"
            )))
        }
    };
    Ok(Parsed::Concurrency(
        raw.resource_ref,
        ConcurrencyPolicy {
            name: raw.name,
            threshold: threshold as usize,
            cancel,
        },
    ))
}

/// Checks the policies of every pack, reporting problems (bad fields, unknown actions).
pub fn check(catalog: &Catalog) -> Vec<Problem> {
    let mut problems = Vec::new();
    // (policy type, action) -> the file of the policy that applies.
    let mut applied: HashMap<(&str, String), &Path> = HashMap::new();
    for pack in &catalog.packs {
        for (file, value) in pack.extras.get("policies").into_iter().flatten() {
            let parsed = parse(file, value);
            let (kind, action) = match parsed {
                Err(p) => {
                    problems.push(p);
                    continue;
                }
                Ok(Parsed::Retry(action, _)) => ("action.retry", action),
                Ok(Parsed::Concurrency(action, _)) => ("action.concurrency", action),
                Ok(Parsed::Disabled) => continue,
            };
            let problem = |message: String| Problem {
                file: file.clone(),
                line: None,
                column: None,
                message,
            };
            if catalog.action(&action).is_none() {
                problems.push(problem(format!(
                    "resource_ref '{action}' is not a loaded action"
                )));
            } else if let Some(first) = applied.get(&(kind, action.clone())) {
                problems.push(problem(format!(
                    "action '{action}' already has an enabled {kind} policy, in {}; this one is not applied",
                    first.display()
                )));
            } else {
                applied.insert((kind, action), file);
            }
        }
    }
    problems
}
