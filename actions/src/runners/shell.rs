//! st2's shell runners: `local-shell-cmd` (a command line run by `/bin/sh -c`) and
//! `local-shell-script` (a pack's script run with st2's argument passing: positional
//! parameters by their `position`, the others as `--name=value`, `true` booleans as `--name`).
//! The result is st2's: `{stdout, stderr, return_code, succeeded, failed}`; each output line
//! is also a log line as it comes (stdout as `print`, stderr as `error`).
//!
//! The process runs in a process group of its own: a timeout or a cancel ends the whole group
//! (children included). Secret values are never put on the command line (the caller passes
//! them in the environment) and are masked in the output. This file must never run a command
//! through a shell other than for `local-shell-cmd`'s own command line, and never block past
//! the timeout.

use std::collections::BTreeMap;
use std::io::{BufRead, BufReader, Read};
use std::os::unix::process::CommandExt;
use std::path::PathBuf;
use std::process::{Command, ExitStatus, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use indexmap::IndexMap;
use serde_json::{json, Map, Value};

use crate::meta::ParamSpec;
use crate::runtime::{CancelToken, LogLevel, LogLine, LogSink};

/// Parameters the shell runners take themselves, never passed to a script as arguments.
pub const RUNNER_PARAMETERS: [&str; 6] = ["cmd", "env", "cwd", "sudo", "timeout", "kwarg_op"];

/// Output kept per stream; past it the rest is dropped and the result says so.
const MAX_OUTPUT_BYTES: usize = 4 * 1024 * 1024;

/// What to run.
#[derive(Debug, Clone, PartialEq)]
pub enum ShellCommand {
    /// `local-shell-cmd`: a command line for `/bin/sh -c`.
    Line(String),
    /// `local-shell-script`: a script file and its arguments.
    Script { path: PathBuf, args: Vec<String> },
}

pub struct ShellJob {
    pub command: ShellCommand,
    pub env: Vec<(String, String)>,
    pub cwd: Option<PathBuf>,
    pub timeout: Duration,
    pub cancel: CancelToken,
    /// Values masked (`********`) wherever they appear in the output.
    pub secrets: Vec<String>,
    pub on_log: Option<LogSink>,
}

/// How a run ended.
#[derive(Debug, Clone, PartialEq)]
pub enum ShellOutcome {
    /// Exit code 0.
    Succeeded(Value),
    /// A non-zero exit code or a signal: the result says which.
    Failed(Value),
    Timeout {
        after: Duration,
        result: Value,
    },
    Canceled(Value),
    /// It could not be started (no such script, not executable...).
    NotStarted(String),
}

pub struct ShellReport {
    pub outcome: ShellOutcome,
    pub log: Vec<LogLine>,
}

/// st2's `local-shell-script` arguments for `params`: the positional ones in `position` order,
/// then the named ones as `--name=value` (`kwarg_op` instead of `--` when given), `true`
/// booleans as `--name`; empty strings, nulls, `false`, the runner's own parameters and the
/// secret ones (passed in the environment instead) are left out.
pub fn script_arguments(
    params: &Map<String, Value>,
    specs: &IndexMap<String, ParamSpec>,
) -> Vec<String> {
    let kwarg_op = params
        .get("kwarg_op")
        .and_then(Value::as_str)
        .unwrap_or("--")
        .to_string();
    let mut positional: BTreeMap<u32, String> = BTreeMap::new();
    let mut named = Vec::new();
    for (name, value) in params {
        let spec = specs.get(name);
        if RUNNER_PARAMETERS.contains(&name.as_str()) || spec.is_some_and(|s| s.secret) {
            continue;
        }
        if let Some(position) = spec.and_then(|s| s.position) {
            positional.insert(position, text(value));
            continue;
        }
        match value {
            Value::Null => {}
            Value::String(s) if s.is_empty() => {}
            Value::Bool(true) => named.push(format!("{kwarg_op}{name}")),
            Value::Bool(false) => {}
            other => named.push(format!("{kwarg_op}{name}={}", text(other))),
        }
    }
    let mut args: Vec<String> = positional.into_values().collect();
    args.extend(named);
    args
}

/// A value as a script argument: strings as they are, anything else as JSON.
fn text(value: &Value) -> String {
    match value {
        Value::String(s) => s.clone(),
        Value::Null => String::new(),
        other => other.to_string(),
    }
}

/// The environment st2 gives a shell action besides its `env`: each non-runner parameter as
/// `ST2_ACTION_<NAME>` (the only way secret ones reach a script).
pub fn parameter_env(params: &Map<String, Value>) -> Vec<(String, String)> {
    params
        .iter()
        .filter(|(name, _)| !RUNNER_PARAMETERS.contains(&name.as_str()))
        .map(|(name, value)| {
            (
                format!("ST2_ACTION_{}", name.to_ascii_uppercase()),
                text(value),
            )
        })
        .collect()
}

/// Runs the job on this thread (it blocks) and reports how it ended.
pub fn run_shell(job: ShellJob) -> ShellReport {
    let what = match &job.command {
        ShellCommand::Line(_) => "/bin/sh".to_string(),
        ShellCommand::Script { path, .. } => path.display().to_string(),
    };
    let mut command = match &job.command {
        ShellCommand::Line(line) => {
            let mut c = Command::new("/bin/sh");
            c.arg("-c").arg(line);
            c
        }
        ShellCommand::Script { path, args } => {
            let mut c = Command::new(path);
            c.args(args);
            c
        }
    };
    command
        .envs(job.env.iter().map(|(k, v)| (k, v)))
        .stdin(Stdio::null());
    if let Some(cwd) = &job.cwd {
        command.current_dir(cwd);
    }
    let output = Arc::new(Output::new(job.secrets.clone(), job.on_log.clone()));
    let ended = match supervise(command, &output, job.timeout, &job.cancel) {
        Ok(ended) => ended,
        Err(e) => {
            return ShellReport {
                outcome: ShellOutcome::NotStarted(format!("cannot run {what}: {e}")),
                log: Vec::new(),
            }
        }
    };
    let (stdout, stderr, log) = output.finish();
    let succeeded = ended.by.is_none() && ended.status.and_then(|s| s.code()) == Some(0);
    let mut result = json!({
        "stdout": stdout.trim_end_matches('\n'),
        "stderr": stderr.trim_end_matches('\n'),
        "return_code": ended.code(),
        "succeeded": succeeded,
        "failed": !succeeded,
    });
    let outcome = match ended.by {
        Some(EndedBy::Timeout) => {
            result["error"] = json!(timeout_message(job.timeout));
            ShellOutcome::Timeout {
                after: job.timeout,
                result,
            }
        }
        Some(EndedBy::Cancel) => ShellOutcome::Canceled(result),
        None if succeeded => ShellOutcome::Succeeded(result),
        None => ShellOutcome::Failed(result),
    };
    ShellReport { outcome, log }
}

/// st2's error for an action that ran past its timeout.
pub(crate) fn timeout_message(after: Duration) -> String {
    format!(
        "Action failed to complete in {} seconds",
        after.as_secs_f64()
    )
}

/// Which stream of a process a line came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Stream {
    Stdout,
    Stderr,
}

/// What a runner's process wrote, shared by the threads that read it: each stream's text (the
/// first [`MAX_OUTPUT_BYTES`] of it) and the log lines, secrets masked in both.
pub(crate) struct Output {
    secrets: Vec<String>,
    on_log: Option<LogSink>,
    log: Mutex<Vec<LogLine>>,
    stdout: Mutex<String>,
    stderr: Mutex<String>,
}

impl Output {
    pub(crate) fn new(secrets: Vec<String>, on_log: Option<LogSink>) -> Output {
        Output {
            secrets,
            on_log,
            log: Mutex::new(Vec::new()),
            stdout: Mutex::new(String::new()),
            stderr: Mutex::new(String::new()),
        }
    }

    /// One line of `stream` (its newline included, if it had one): kept in the stream's text
    /// and logged at `level`.
    pub(crate) fn line(&self, stream: Stream, level: LogLevel, raw: &str) {
        let text = mask(raw, &self.secrets);
        self.keep_masked(stream, &text);
        self.log_masked(level, text.trim_end_matches(['\n', '\r']));
    }

    /// Text that belongs in a stream's output without being a log line of its own.
    pub(crate) fn keep(&self, stream: Stream, text: &str) {
        self.keep_masked(stream, &mask(text, &self.secrets));
    }

    /// A log line that is not part of either stream.
    pub(crate) fn log(&self, level: LogLevel, message: &str) {
        self.log_masked(level, &mask(message, &self.secrets));
    }

    fn keep_masked(&self, stream: Stream, text: &str) {
        let out = match stream {
            Stream::Stdout => &self.stdout,
            Stream::Stderr => &self.stderr,
        };
        if let Ok(mut out) = out.lock() {
            if out.len() < MAX_OUTPUT_BYTES {
                out.push_str(text);
            }
        }
    }

    fn log_masked(&self, level: LogLevel, message: &str) {
        let entry = LogLine {
            timestamp: chrono::Utc::now(),
            level,
            message: message.to_string(),
        };
        if let Some(sink) = &self.on_log {
            sink(&entry);
        }
        if let Ok(mut l) = self.log.lock() {
            if l.len() < crate::host::MAX_LOG_LINES {
                l.push(entry);
            }
        }
    }

    /// The text of stdout and stderr (each with a note when it was cut), and the log.
    pub(crate) fn finish(&self) -> (String, String, Vec<LogLine>) {
        let take = |m: &Mutex<String>| {
            let mut text = m
                .lock()
                .map(|mut t| std::mem::take(&mut *t))
                .unwrap_or_default();
            if text.len() >= MAX_OUTPUT_BYTES {
                text.push_str("\n[output cut: over 4 MiB]");
            }
            text
        };
        let log = self
            .log
            .lock()
            .map(|mut l| std::mem::take(&mut *l))
            .unwrap_or_default();
        (take(&self.stdout), take(&self.stderr), log)
    }
}

/// Why squall ended a process before it exited by itself.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum EndedBy {
    Timeout,
    Cancel,
}

/// How a supervised process ended.
#[derive(Debug)]
pub(crate) struct Ended {
    /// `None` when it could not be waited for.
    pub(crate) status: Option<ExitStatus>,
    pub(crate) by: Option<EndedBy>,
}

impl Ended {
    /// The exit code, or minus the signal that ended the process (st2's `-9` for a kill).
    pub(crate) fn code(&self) -> Option<i32> {
        let status = self.status?;
        status
            .code()
            .or_else(|| std::os::unix::process::ExitStatusExt::signal(&status).map(|s| -s))
    }
}

/// Runs `command` (its program, arguments, environment and stdin set by the caller) in a
/// process group of its own, its stdout and stderr read line by line into `output` (stdout as
/// `print`, stderr as `error`), until it exits, `timeout` passes or `cancel` is set: then the
/// whole group is killed. Blocks until the process is gone and both streams are closed.
pub(crate) fn supervise(
    mut command: Command,
    output: &Arc<Output>,
    timeout: Duration,
    cancel: &CancelToken,
) -> std::io::Result<Ended> {
    command
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        // Its own process group, so that a timeout ends every process it started.
        .process_group(0);
    let spawned = command.spawn();
    // The command keeps the parent's copies of what it handed the child (a socket for its
    // stdin): they go now, so that the child's end is the only one left open.
    drop(command);
    let mut child = spawned?;
    let readers: Vec<_> = [
        child
            .stdout
            .take()
            .map(|s| Box::new(s) as Box<dyn Read + Send>),
        child
            .stderr
            .take()
            .map(|s| Box::new(s) as Box<dyn Read + Send>),
    ]
    .into_iter()
    .zip([
        (Stream::Stdout, LogLevel::Print),
        (Stream::Stderr, LogLevel::Error),
    ])
    .filter_map(|(pipe, (stream, level))| {
        let pipe = pipe?;
        let output = output.clone();
        Some(std::thread::spawn(move || {
            read_lines(pipe, stream, level, &output)
        }))
    })
    .collect();

    let started = Instant::now();
    // Short commands end within a millisecond or two: look often at first, then less.
    let mut pause = Duration::from_micros(100);
    let mut by: Option<EndedBy> = None;
    let status = loop {
        match child.try_wait() {
            Ok(Some(status)) => break Some(status),
            Ok(None) => {}
            Err(_) => break None,
        }
        if started.elapsed() >= timeout {
            by = Some(EndedBy::Timeout);
        } else if cancel.is_canceled() {
            by = Some(EndedBy::Cancel);
        }
        if by.is_some() {
            kill_group(child.id());
            let _ = child.kill();
            break child.wait().ok();
        }
        std::thread::sleep(pause);
        pause = (pause * 2).min(Duration::from_millis(5));
    };
    // Whatever the group left behind holds the pipes open: it is ended with the group.
    if by.is_some() {
        kill_group(child.id());
    }
    for reader in readers {
        let _ = reader.join();
    }
    Ok(Ended { status, by })
}

/// Reads one stream to its end, line by line, into `output`.
fn read_lines(pipe: Box<dyn Read + Send>, stream: Stream, level: LogLevel, output: &Output) {
    let mut reader = BufReader::new(pipe);
    let mut line = Vec::new();
    loop {
        line.clear();
        match reader.read_until(b'\n', &mut line) {
            Ok(0) | Err(_) => break,
            Ok(_) => {}
        }
        output.line(stream, level, &String::from_utf8_lossy(&line));
    }
}

/// `text` with every secret replaced by `********`.
pub(crate) fn mask(text: &str, secrets: &[String]) -> String {
    let mut out = text.to_string();
    for s in secrets.iter().filter(|s| !s.is_empty()) {
        out = out.replace(s.as_str(), crate::SECRET_MASK);
    }
    out
}

/// SIGKILL to every process of the group `pgid` (the child's pid: it leads its group).
fn kill_group(pgid: u32) {
    let _ = Command::new("kill")
        .args(["-KILL", "--", &format!("-{pgid}")])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status();
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::meta::ParamType;

    fn job(command: ShellCommand) -> ShellJob {
        ShellJob {
            command,
            env: Vec::new(),
            cwd: None,
            timeout: Duration::from_secs(10),
            cancel: CancelToken::new(),
            secrets: Vec::new(),
            on_log: None,
        }
    }

    fn result(outcome: &ShellOutcome) -> &Value {
        match outcome {
            ShellOutcome::Succeeded(v) | ShellOutcome::Failed(v) | ShellOutcome::Canceled(v) => v,
            ShellOutcome::Timeout { result, .. } => result,
            ShellOutcome::NotStarted(e) => panic!("not started: {e}"),
        }
    }

    #[test]
    fn a_command_gives_st2s_result_and_its_lines_as_log() {
        let mut j = job(ShellCommand::Line(
            "echo out; echo err >&2; echo $GREETING".into(),
        ));
        j.env = vec![("GREETING".into(), "hi".into())];
        let report = run_shell(j);
        assert!(matches!(report.outcome, ShellOutcome::Succeeded(_)));
        let r = result(&report.outcome);
        assert_eq!(r["stdout"], "out\nhi");
        assert_eq!(r["stderr"], "err");
        assert_eq!(r["return_code"], 0);
        assert_eq!(
            (r["succeeded"].clone(), r["failed"].clone()),
            (json!(true), json!(false))
        );
        let errors: Vec<&str> = report
            .log
            .iter()
            .filter(|l| l.level == LogLevel::Error)
            .map(|l| l.message.as_str())
            .collect();
        assert_eq!(errors, ["err"]);
    }

    #[test]
    fn a_non_zero_exit_fails_with_its_code() {
        let report = run_shell(job(ShellCommand::Line("echo no >&2; exit 3".into())));
        assert!(matches!(report.outcome, ShellOutcome::Failed(_)));
        assert_eq!(result(&report.outcome)["return_code"], 3);
    }

    #[test]
    fn a_timeout_ends_the_whole_process_group() {
        let dir = tempfile::tempdir().expect("tempdir");
        let marker = dir.path().join("child-survived");
        // The child outlives its shell unless its group is killed.
        let mut j = job(ShellCommand::Line(format!(
            "(sleep 2; touch {}) & sleep 30",
            marker.display()
        )));
        j.timeout = Duration::from_millis(300);
        let started = Instant::now();
        let report = run_shell(j);
        assert!(
            matches!(report.outcome, ShellOutcome::Timeout { .. }),
            "{:?}",
            report.outcome
        );
        assert!(started.elapsed() < Duration::from_secs(5));
        // The would-be child had 2 s to write its marker; a wait on its (gone) group shows it.
        let deadline = Instant::now() + Duration::from_secs(4);
        while Instant::now() < deadline {
            assert!(
                !marker.exists(),
                "a child of the timed-out command kept running"
            );
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    #[test]
    fn secrets_are_masked_in_the_output() {
        let mut j = job(ShellCommand::Line("echo token=$TOKEN".into()));
        j.env = vec![("TOKEN".into(), "s3cr3t".into())];
        j.secrets = vec!["s3cr3t".into()];
        let report = run_shell(j);
        assert_eq!(result(&report.outcome)["stdout"], "token=********");
        assert!(report.log.iter().all(|l| !l.message.contains("s3cr3t")));
    }

    #[test]
    fn script_arguments_are_st2s() {
        let mut specs = IndexMap::new();
        let spec = |ty, position, secret| ParamSpec {
            position,
            secret,
            ..ParamSpec::of_type(ty)
        };
        specs.insert("host".to_string(), spec(ParamType::String, Some(1), false));
        specs.insert("path".to_string(), spec(ParamType::String, Some(0), false));
        specs.insert("force".to_string(), spec(ParamType::Boolean, None, false));
        specs.insert("quiet".to_string(), spec(ParamType::Boolean, None, false));
        specs.insert("count".to_string(), spec(ParamType::Integer, None, false));
        specs.insert("password".to_string(), spec(ParamType::String, None, true));
        let params = json!({"host": "web-1", "path": "/srv", "force": true, "quiet": false,
            "count": 3, "password": "p", "timeout": 60, "empty": ""});
        let args = script_arguments(params.as_object().expect("object"), &specs);
        assert_eq!(args, ["/srv", "web-1", "--force", "--count=3"]);
    }
}
