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
    #[error("action '{0}' is a workflow; workflows run under `squall run`")]
    NotRunnableHere(String),
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
    let source = match (&action.meta.runner_type, &action.source) {
        (RunnerType::Rhai, Some(source)) => source.clone(),
        _ => return Err(ExecError::NotRunnableHere(action_ref.to_string())),
    };
    let masked = mask_secrets(&action.meta, &params);
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
