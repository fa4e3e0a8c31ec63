//! Running one action here and now, outside any pipeline: what `squall action exec` does for a
//! tool developer trying an action, and what a worker does with one work item.
//!
//! Blocking: call it on a worker thread, never on an async runtime's thread.

use std::sync::Arc;
use std::time::Duration;

use serde::Serialize;
use serde_json::{Map, Value};
use squall_actions::{
    mask_secrets, validate_params, CancelToken, KvStore, LogLine, Outcome, ParamError, RhaiRuntime,
    RunnerType, ScriptJob,
};

use crate::packs::Catalog;

/// st2's execution statuses that a finished run can have.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum FinalStatus {
    Succeeded,
    Failed,
    Timeout,
    Canceled,
}

impl FinalStatus {
    pub fn as_str(self) -> &'static str {
        match self {
            FinalStatus::Succeeded => "succeeded",
            FinalStatus::Failed => "failed",
            FinalStatus::Timeout => "timeout",
            FinalStatus::Canceled => "canceled",
        }
    }
}

/// The record of a finished run, shaped like an st2 execution's `status`/`result`/`log`.
#[derive(Debug, Clone, Serialize)]
pub struct RunRecord {
    pub action: String,
    /// Parameters as run, secrets masked.
    pub parameters: Map<String, Value>,
    pub status: FinalStatus,
    pub result: Value,
    pub log: Vec<LogLine>,
    pub elapsed_seconds: f64,
}

/// Why an action could not be started.
#[derive(Debug, thiserror::Error)]
pub enum ExecError {
    #[error("no loaded pack provides action '{0}'")]
    UnknownAction(String),
    #[error("action '{0}' is disabled")]
    Disabled(String),
    #[error("action '{action}' has invalid parameters:\n  {}", .errors.iter().map(ToString::to_string).collect::<Vec<_>>().join("\n  "))]
    InvalidParameters {
        action: String,
        errors: Vec<ParamError>,
    },
    #[error("action '{0}' runs with the {1} runner, which runs only under `squall run` (here: Rhai, http-request and noop actions)")]
    NotRunnableHere(String, RunnerType),
}

/// What a run needs besides the action and its parameters.
pub struct RunContext {
    pub kv: Arc<dyn KvStore>,
    pub cancel: CancelToken,
    /// Execution context given to the script as `ctx` (execution id, trigger, user...).
    pub ctx: Value,
    pub on_log: Option<squall_actions::runtime::LogSink>,
}

/// Validates `given` against the action and runs it to a final status.
pub fn run_action(
    catalog: &Catalog,
    runtime: &RhaiRuntime,
    action_ref: &str,
    given: Map<String, Value>,
    run: RunContext,
) -> Result<RunRecord, ExecError> {
    let action = catalog
        .action(action_ref)
        .ok_or_else(|| ExecError::UnknownAction(action_ref.to_string()))?;
    if !action.meta.enabled {
        return Err(ExecError::Disabled(action_ref.to_string()));
    }
    let params =
        validate_params(&action.meta, given).map_err(|errors| ExecError::InvalidParameters {
            action: action_ref.to_string(),
            errors,
        })?;
    let masked = mask_secrets(&action.meta, &params);
    let source = match (&action.meta.runner_type, &action.source) {
        (RunnerType::Rhai, Some(source)) => source.clone(),
        (RunnerType::HttpRequest | RunnerType::Noop, _) => {
            let started = std::time::Instant::now();
            let (status, result) = run_without_script(action, &params, &run.cancel);
            return Ok(RunRecord {
                action: action.reference.clone(),
                parameters: masked,
                status,
                result,
                log: Vec::new(),
                elapsed_seconds: started.elapsed().as_secs_f64(),
            });
        }
        (other, _) => return Err(ExecError::NotRunnableHere(action_ref.to_string(), *other)),
    };
    let report = runtime.run(ScriptJob {
        script_key: action.reference.clone(),
        source,
        params,
        ctx: run.ctx,
        timeout: action.meta.timeout.map(Duration::from_secs),
        cancel: run.cancel,
        kv: run.kv,
        on_log: run.on_log,
    });
    let (status, result) = match report.outcome {
        Outcome::Succeeded(v) => (FinalStatus::Succeeded, v),
        Outcome::Failed {
            message,
            line,
            column,
        } => (
            FinalStatus::Failed,
            serde_json::json!({"error": message, "line": line, "column": column}),
        ),
        Outcome::Timeout { after } => (
            FinalStatus::Timeout,
            serde_json::json!({"error": format!("action timed out after {:.1} s", after.as_secs_f64())}),
        ),
        Outcome::Canceled => (
            FinalStatus::Canceled,
            serde_json::json!({"error": "execution was canceled"}),
        ),
    };
    Ok(RunRecord {
        action: action.reference.clone(),
        parameters: masked,
        status,
        result,
        log: report.log,
        elapsed_seconds: report.elapsed.as_secs_f64(),
    })
}

/// The runners that need no script: an HTTP request (answered by declared responses under
/// `squall pack test`), or nothing at all.
fn run_without_script(
    action: &crate::packs::LoadedAction,
    params: &Map<String, Value>,
    cancel: &CancelToken,
) -> (FinalStatus, Value) {
    use squall_actions::runners::http::{run_http, HttpOutcome, HttpRequest};
    if action.meta.runner_type == RunnerType::Noop {
        return (
            FinalStatus::Succeeded,
            serde_json::json!({"failed": false, "succeeded": true, "return_code": 0}),
        );
    }
    let limit = action.meta.timeout.map(Duration::from_secs);
    let request = match HttpRequest::from_parameters(&action.reference, params, limit) {
        Ok(r) => r,
        Err(why) => return (FinalStatus::Failed, serde_json::json!({ "error": why })),
    };
    match run_http(&request, cancel) {
        HttpOutcome::Succeeded(r) => (FinalStatus::Succeeded, r),
        HttpOutcome::Failed(r) => (FinalStatus::Failed, r),
        HttpOutcome::Timeout(r) => (FinalStatus::Timeout, r),
        HttpOutcome::Canceled(r) => (FinalStatus::Canceled, r),
    }
}
