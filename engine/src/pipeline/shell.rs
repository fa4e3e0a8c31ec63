//! Running an action of st2's shell runners (`local-shell-cmd`, `local-shell-script`): its
//! parameters turned into a [`ShellPlan`] on the server (which knows the action's metadata),
//! the plan run as a process (`squall_actions::runners::shell`) here or on a remote worker, its
//! output followed live, its outcome into a final status. Nothing here decides what runs.

use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::{Deserialize, Serialize};
use serde_json::{json, Value};
use squall_actions::runners::shell::{
    parameter_env, run_shell, script_arguments, ShellCommand, ShellJob, ShellOutcome,
};
use squall_actions::{CancelToken, LogLine, LogSink, RunnerType};

use super::{Engine, WorkItem};
use crate::model::{Execution, ExecutionStatus};
use crate::packs::Catalog;

/// st2's shell runners' default timeout.
const DEFAULT_TIMEOUT: Duration = Duration::from_secs(60);

/// What a shell action runs, everything decided: a command line, or a script with its
/// arguments. A remote worker gets it whole (the script's text included), so it needs no pack.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ShellPlan {
    /// `local-shell-cmd`'s command line.
    pub line: Option<String>,
    /// `local-shell-script`'s script: its path on the server, and its text for a worker.
    pub script_path: Option<PathBuf>,
    pub script: Option<String>,
    pub args: Vec<String>,
    pub env: Vec<(String, String)>,
    pub cwd: Option<PathBuf>,
    pub timeout_ms: u64,
    /// Values masked in the output.
    pub secrets: Vec<String>,
}

/// The plan for a shell action's work item, or why it cannot run.
pub(crate) fn shell_plan(catalog: &Catalog, item: &WorkItem) -> Result<ShellPlan, String> {
    let action = catalog
        .action(&item.action)
        .ok_or_else(|| format!("action '{}' is no longer loaded", item.action))?;
    let params = &item.parameters;
    if params.get("sudo") == Some(&Value::Bool(true)) {
        return Err("sudo is not supported: squall runs shell actions as its own user".into());
    }
    let (line, script_path, args) = match item.runner {
        RunnerType::LocalShellCmd => match params.get("cmd").and_then(Value::as_str) {
            Some(cmd) if !cmd.trim().is_empty() => (Some(cmd.to_string()), None, Vec::new()),
            _ => return Err("local-shell-cmd needs a `cmd` parameter".into()),
        },
        RunnerType::LocalShellScript => match &item.source {
            Some(path) => (
                None,
                Some(PathBuf::from(path.as_ref())),
                script_arguments(params, &action.meta.parameters),
            ),
            None => return Err("local-shell-script has no script".into()),
        },
        other => return Err(format!("runner '{other}' is not a shell runner")),
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
    let (secrets, timeout) = secrets_and_timeout(&action.meta, item, DEFAULT_TIMEOUT);
    let cwd = params
        .get("cwd")
        .and_then(Value::as_str)
        .filter(|c| !c.is_empty())
        .map(Into::into);
    Ok(ShellPlan {
        line,
        script_path,
        script: None,
        args,
        env,
        cwd,
        timeout_ms: timeout.as_millis().min(u128::from(u64::MAX)) as u64,
        secrets,
    })
}

/// What st2's process runners share: the secret values to mask in the output, and the
/// timeout (the execution's, else the `timeout` runner parameter, else the runner's default).
pub(super) fn secrets_and_timeout(
    meta: &squall_actions::ActionMeta,
    item: &WorkItem,
    default: Duration,
) -> (Vec<String>, Duration) {
    let params = &item.parameters;
    let secrets = params
        .iter()
        .filter(|(name, _)| meta.is_secret(name))
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
        .unwrap_or(default);
    (secrets, timeout)
}

impl ShellPlan {
    /// The plan as a remote worker needs it: the script's text read now.
    pub(crate) fn for_worker(mut self) -> Result<ShellPlan, String> {
        if let Some(path) = &self.script_path {
            self.script = Some(
                std::fs::read_to_string(path)
                    .map_err(|e| format!("cannot read the script {}: {e}", path.display()))?,
            );
        }
        Ok(self)
    }

    /// Runs the plan on this thread. A script given as text (on a remote worker) is written
    /// to a private temporary folder first and removed after.
    pub fn run(
        self,
        cancel: &CancelToken,
        on_log: LogSink,
    ) -> (ExecutionStatus, Value, Vec<LogLine>) {
        let mut _scratch = None;
        let command = match (self.line, self.script, self.script_path) {
            (Some(line), _, _) => ShellCommand::Line(line),
            (None, Some(text), path) => {
                let name = path
                    .as_deref()
                    .and_then(Path::file_name)
                    .map(|n| n.to_string_lossy().into_owned())
                    .unwrap_or_else(|| "script".into());
                match write_script(&name, &text) {
                    Ok((dir, path)) => {
                        _scratch = Some(dir);
                        ShellCommand::Script {
                            path,
                            args: self.args,
                        }
                    }
                    Err(why) => {
                        return (ExecutionStatus::Failed, json!({ "error": why }), Vec::new())
                    }
                }
            }
            (None, None, Some(path)) => ShellCommand::Script {
                path,
                args: self.args,
            },
            (None, None, None) => {
                return (
                    ExecutionStatus::Failed,
                    json!({"error": "the shell action has nothing to run"}),
                    Vec::new(),
                )
            }
        };
        let report = run_shell(ShellJob {
            command,
            env: self.env,
            cwd: self.cwd,
            timeout: Duration::from_millis(self.timeout_ms),
            cancel: cancel.clone(),
            secrets: self.secrets,
            on_log: Some(on_log),
        });
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

/// Writes a script's text to a new private folder (0700), executable by its owner only.
fn write_script(name: &str, text: &str) -> Result<(ScratchDir, PathBuf), String> {
    use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt};
    let dir = std::env::temp_dir().join(format!("squall-script-{}", ulid::Ulid::new()));
    std::fs::DirBuilder::new()
        .mode(0o700)
        .create(&dir)
        .map_err(|e| format!("cannot create {}: {e}", dir.display()))?;
    let scratch = ScratchDir(dir.clone());
    let path = dir.join(name);
    let mut file = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o700)
        .open(&path)
        .map_err(|e| format!("cannot write {}: {e}", path.display()))?;
    std::io::Write::write_all(&mut file, text.as_bytes())
        .map_err(|e| format!("cannot write {}: {e}", path.display()))?;
    drop(file);
    Ok((scratch, path))
}

/// A folder removed when dropped.
struct ScratchDir(PathBuf);

impl Drop for ScratchDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

impl Engine {
    pub(super) fn execute_shell(
        &self,
        item: WorkItem,
        e: &std::sync::Arc<Execution>,
        cancel: &CancelToken,
    ) -> (ExecutionStatus, Value, Vec<LogLine>) {
        let plan = match shell_plan(&self.loaded().catalog, &item) {
            Ok(plan) => plan,
            Err(why) => return (ExecutionStatus::Failed, json!({ "error": why }), Vec::new()),
        };
        let (live, on_log) = self.live_log(e, cancel);
        let outcome = plan.run(cancel, on_log);
        live.finish();
        outcome
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;

    #[test]
    fn a_script_given_as_text_runs_and_is_removed() {
        let plan = ShellPlan {
            line: None,
            script_path: Some(PathBuf::from("/srv/packs/x/actions/hello.sh")),
            script: Some("#!/bin/sh\necho \"hello $1 from $0\"\n".into()),
            args: vec!["ops".into()],
            env: Vec::new(),
            cwd: None,
            timeout_ms: 10_000,
            secrets: Vec::new(),
        };
        let (status, result, _) = plan.run(&CancelToken::new(), Arc::new(|_: &LogLine| {}));
        assert_eq!(status, ExecutionStatus::Succeeded, "{result}");
        let out = result["stdout"].as_str().expect("stdout");
        assert!(out.starts_with("hello ops from "), "{out}");
        let path = out.trim_start_matches("hello ops from ");
        assert!(path.ends_with("/hello.sh"), "{path}");
        assert!(!Path::new(path).exists(), "the scratch copy is removed");
    }
}
