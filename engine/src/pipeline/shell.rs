//! Running an action of st2's shell runners (`local-shell-cmd`, `local-shell-script`) on a
//! worker thread: its parameters turned into a process (`squall_actions::runners::shell`), its
//! output followed live, its outcome into a final status. Nothing here decides what runs.

use std::time::Duration;

use serde_json::{json, Value};
use squall_actions::runners::shell::{
    parameter_env, run_shell, script_arguments, ShellCommand, ShellJob, ShellOutcome,
};
use squall_actions::{CancelToken, LogLine, RunnerType};

use super::{Engine, WorkItem};
use crate::model::{Execution, ExecutionStatus};

/// st2's shell runners' default timeout.
const DEFAULT_TIMEOUT: Duration = Duration::from_secs(60);

impl Engine {
    pub(super) fn execute_shell(
        &self,
        item: WorkItem,
        e: &std::sync::Arc<Execution>,
        cancel: &CancelToken,
    ) -> (ExecutionStatus, Value, Vec<LogLine>) {
        let fail = |why: String| (ExecutionStatus::Failed, json!({ "error": why }), Vec::new());
        let loaded = self.loaded();
        let Some(action) = loaded.catalog.action(&item.action) else {
            return fail(format!("action '{}' is no longer loaded", item.action));
        };
        let params = &item.parameters;
        if params.get("sudo") == Some(&Value::Bool(true)) {
            return fail("sudo is not supported: squall runs shell actions as its own user".into());
        }
        let command = match item.runner {
            RunnerType::LocalShellCmd => match params.get("cmd").and_then(Value::as_str) {
                Some(cmd) if !cmd.trim().is_empty() => ShellCommand::Line(cmd.to_string()),
                _ => return fail("local-shell-cmd needs a `cmd` parameter".into()),
            },
            _ => match &item.source {
                Some(path) => ShellCommand::Script {
                    path: path.as_ref().into(),
                    args: script_arguments(params, &action.meta.parameters),
                },
                None => return fail("local-shell-script has no script".into()),
            },
        };
        let mut env = parameter_env(params);
        if let Some(Value::Object(vars)) = params.get("env") {
            for (k, v) in vars {
                let v = match v {
                    Value::String(s) => s.clone(),
                    other => other.to_string(),
                };
                env.push((k.clone(), v));
            }
        }
        let secrets = params
            .iter()
            .filter(|(name, _)| action.meta.is_secret(name))
            .filter_map(|(_, v)| v.as_str().map(str::to_string))
            .collect();
        let timeout = item
            .timeout
            .or_else(|| {
                params
                    .get("timeout")
                    .and_then(Value::as_f64)
                    .filter(|t| *t > 0.0 && t.is_finite())
                    .map(Duration::from_secs_f64)
            })
            .unwrap_or(DEFAULT_TIMEOUT);
        let cwd = params
            .get("cwd")
            .and_then(Value::as_str)
            .filter(|c| !c.is_empty())
            .map(Into::into);
        let (live, on_log) = self.live_log(e, cancel);
        let report = run_shell(ShellJob {
            command,
            env,
            cwd,
            timeout,
            cancel: cancel.clone(),
            secrets,
            on_log: Some(on_log),
        });
        live.finish();
        let (status, result) = match report.outcome {
            ShellOutcome::Succeeded(r) => (ExecutionStatus::Succeeded, r),
            ShellOutcome::Failed(r) => (ExecutionStatus::Failed, r),
            ShellOutcome::Timeout { result, .. } => (ExecutionStatus::Timeout, result),
            ShellOutcome::Canceled(r) => (ExecutionStatus::Canceled, r),
            ShellOutcome::NotStarted(why) => (ExecutionStatus::Failed, json!({ "error": why })),
        };
        (status, result, report.log)
    }
}
