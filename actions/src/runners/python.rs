//! st2's `python-script` runner: an st2 Python action (a class inheriting
//! `st2common.runners.base_action.Action`, its `run(**parameters)` called) run unchanged by a
//! Python interpreter, with st2's `self.config`, `self.logger` and `self.action_service`
//! (datastore calls answered from squall's key-value store). The result is st2's:
//! `{result, stdout, stderr, exit_code}` (and `error` when it timed out or could not load).
//!
//! squall ships a small shim (`python/*.py`, compiled in): the `st2common` modules actions
//! import, and a wrapper that loads the entry point, runs it and reports. It is written once per
//! process to a fresh directory of its own (mode 0700) under the system's temp dir (again if a
//! temp-file cleaner removed it), and the shims of squall processes that are gone are removed.
//!
//! The wrapper talks to squall over a Unix socket pair handed to it as stdin (the job first, as
//! one JSON line, then JSON lines both ways), so the action's stdout and stderr stay its own:
//! they are the result's `stdout` and `stderr` and the execution's live log lines. No path is
//! left on disk for another process to connect to, and the wrapper sees the end of the socket
//! when the process is gone. Parameters travel on the socket only: never on a command line,
//! where `ps` would show secrets.
//!
//! Process handling is the shell runners' (`shell::supervise`): a process group of its own, the
//! whole group killed on timeout or cancel, output size limits, secrets masked (in the output,
//! the log lines and the returned value). This file must never run the interpreter through a
//! shell, and never block past the timeout.

use std::io::{BufRead, BufReader, Read, Write};
use std::os::fd::OwnedFd;
use std::os::unix::fs::DirBuilderExt;
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use serde_json::{json, Map, Value};

use super::shell::{mask, supervise, timeout_message, EndedBy, Output, Stream};
pub use super::shell::{ShellOutcome as PythonOutcome, ShellReport as PythonReport};
use crate::runtime::{CancelToken, LogLevel, LogSink};

/// st2's default timeout for `python-script` actions.
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(600);

/// Parameters the runner takes itself (st2's `python-script` runner parameters), never passed
/// to `run()`.
pub const RUNNER_PARAMETERS: [&str; 5] =
    ["env", "timeout", "log_level", "debug", "content_version"];

/// Where a pack's virtualenv is (made by pack installation from its `requirements.txt`).
pub const VENV_DIR: &str = ".venv";

/// The longest message the wrapper may send (a result is one message).
const MAX_MESSAGE_BYTES: u64 = 64 * 1024 * 1024;

/// The wrapper's file name in the shim directory.
const WRAPPER: &str = "squall_python_action.py";

/// The shim: each file's path in the shim directory and its text.
const SHIM_FILES: [(&str, &str); 7] = [
    (WRAPPER, include_str!("python/wrapper.py")),
    ("st2common/__init__.py", ""),
    ("st2common/runners/__init__.py", ""),
    (
        "st2common/runners/base_action.py",
        include_str!("python/base_action.py"),
    ),
    (
        "st2common/runners/utils.py",
        include_str!("python/utils.py"),
    ),
    ("st2common/constants/__init__.py", ""),
    (
        "st2common/constants/keyvalue.py",
        include_str!("python/keyvalue.py"),
    ),
];

/// A datastore item as `list_values` gives it.
#[derive(Debug, Clone, PartialEq)]
pub struct KeyEntry {
    pub name: String,
    /// Clear text, or the stored ciphertext of a secret.
    pub value: String,
    pub secret: bool,
    /// RFC 3339, when the item expires.
    pub expire_timestamp: Option<String>,
}

/// st2's datastore as a Python action reaches it through `self.action_service`. Names arrive
/// whole (`<pack>.<Class>:<name>` for local ones). Errors are messages for the action's author.
pub trait Datastore: Send + Sync {
    /// The value of `name`; a secret's ciphertext unless `decrypt`.
    fn get(&self, name: &str, decrypt: bool) -> Result<Option<String>, String>;
    fn set(
        &self,
        name: &str,
        value: &str,
        ttl_seconds: Option<u64>,
        encrypt: bool,
    ) -> Result<(), String>;
    /// True when it existed.
    fn delete(&self, name: &str) -> Result<bool, String>;
    /// Items whose name starts with `prefix` (all without one), secrets as ciphertext.
    fn list(&self, prefix: Option<&str>) -> Result<Vec<KeyEntry>, String>;
}

/// A [`crate::KvStore`] as a datastore, for running Python actions outside the engine (the
/// bench, tests): it keeps no secrets and cannot list.
pub struct KvDatastore(pub Arc<dyn crate::KvStore>);

impl Datastore for KvDatastore {
    fn get(&self, name: &str, _decrypt: bool) -> Result<Option<String>, String> {
        self.0.get(name)
    }
    fn set(
        &self,
        name: &str,
        value: &str,
        ttl_seconds: Option<u64>,
        encrypt: bool,
    ) -> Result<(), String> {
        if encrypt {
            return Err("this key-value store keeps no encrypted values".into());
        }
        self.0.set(name, value, ttl_seconds)
    }
    fn delete(&self, name: &str) -> Result<bool, String> {
        self.0.delete(name)
    }
    fn list(&self, _prefix: Option<&str>) -> Result<Vec<KeyEntry>, String> {
        Err("this key-value store cannot list its keys".into())
    }
}

/// One Python action to run.
pub struct PythonJob {
    /// The interpreter (see [`interpreter`]).
    pub python: PathBuf,
    /// The action's file.
    pub entry_point: PathBuf,
    pub pack: String,
    pub pack_dir: PathBuf,
    /// The parameters given to `run()` (see [`action_parameters`]).
    pub parameters: Map<String, Value>,
    /// The pack's config: the action's `self.config`.
    pub config: Value,
    /// The user the execution runs for (`action_service.get_user_info()`).
    pub user: Option<String>,
    /// The level `self.logger` logs from (st2's `log_level` runner parameter).
    pub log_level: String,
    /// Environment variables besides squall's own: the `env` runner parameter, `ST2_ACTION_*`.
    pub env: Vec<(String, String)>,
    pub timeout: Duration,
    pub cancel: CancelToken,
    /// Values masked (`********`) wherever they appear in the output and the log.
    pub secrets: Vec<String>,
    pub on_log: Option<LogSink>,
    pub datastore: Arc<dyn Datastore>,
}

/// The interpreter for a pack: its virtualenv's when it has one, else `python3` from `PATH`.
pub fn interpreter(pack_dir: &Path) -> PathBuf {
    let venv = pack_dir.join(VENV_DIR).join("bin").join("python");
    if venv.is_file() {
        venv
    } else {
        PathBuf::from("python3")
    }
}

/// The parameters `run()` gets: all but the runner's own, and, as st2 passes them, every
/// parameter the action declares that has no value as `None` (so `run(self, cmd, hosts)` gets
/// its arguments whether or not they were given).
pub fn action_parameters<'a>(
    params: &Map<String, Value>,
    declared: impl IntoIterator<Item = &'a String>,
) -> Map<String, Value> {
    let mut out: Map<String, Value> = params
        .iter()
        .filter(|(name, _)| !RUNNER_PARAMETERS.contains(&name.as_str()))
        .map(|(k, v)| (k.clone(), v.clone()))
        .collect();
    for name in declared {
        if !RUNNER_PARAMETERS.contains(&name.as_str()) && !out.contains_key(name) {
            out.insert(name.clone(), Value::Null);
        }
    }
    out
}

/// The `env` runner parameter's variables, strings as they are and other values as JSON;
/// `PYTHONPATH` is left out (as st2 does: the runner sets it).
pub fn user_env(params: &Map<String, Value>) -> Vec<(String, String)> {
    let Some(Value::Object(vars)) = params.get("env") else {
        return Vec::new();
    };
    vars.iter()
        .filter(|(k, _)| !k.eq_ignore_ascii_case("PYTHONPATH"))
        .map(|(k, v)| {
            let v = match v {
                Value::String(s) => s.clone(),
                other => other.to_string(),
            };
            (k.clone(), v)
        })
        .collect()
}

/// `PYTHONPATH` for an action: the shim, then the pack's `actions/lib` (where st2 lets actions
/// import their pack's shared code from). The entry point's own folder (`actions/`) is not put
/// here but at the end of `sys.path` by the wrapper, as st2 does: an action file named like a
/// standard module (`email.py`, `json.py`) must not hide that module from the code it imports.
fn python_path(shim: &Path, pack_dir: &Path) -> String {
    [shim.to_path_buf(), pack_dir.join("actions").join("lib")]
        .iter()
        .map(|p| p.to_string_lossy().into_owned())
        .collect::<Vec<_>>()
        .join(":")
}

/// The shim's directory, written on first use, and written again (to a new directory) if its
/// files are gone: a long-running squall's temp files may be swept (systemd-tmpfiles removes
/// old files under /tmp), and a missing shim must not fail every Python action from then on.
fn shim_dir() -> Result<PathBuf, String> {
    static DIR: Mutex<Option<PathBuf>> = Mutex::new(None);
    usable_shim(&mut DIR.lock().unwrap_or_else(PoisonError::into_inner))
}

/// The shim in `slot` if its files are all there, else a new one, put in `slot`.
fn usable_shim(slot: &mut Option<PathBuf>) -> Result<PathBuf, String> {
    if let Some(current) = slot.as_ref() {
        if SHIM_FILES
            .iter()
            .all(|(file, _)| current.join(file).is_file())
        {
            return Ok(current.clone());
        }
        let _ = std::fs::remove_dir_all(current);
    }
    let fresh = write_shim().map_err(|e| format!("cannot write squall's Python shim: {e}"))?;
    *slot = Some(fresh.clone());
    Ok(fresh)
}

/// Writes the shim to a new directory (mode 0700, created here: never one found in place).
fn write_shim() -> Result<PathBuf, String> {
    let base = std::env::temp_dir();
    let pid = std::process::id();
    let salt = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.subsec_nanos())
        .unwrap_or_default();
    for attempt in 0..32u32 {
        let dir = base.join(format!("squall-python-{pid}-{salt:x}{attempt}"));
        match std::fs::DirBuilder::new().mode(0o700).create(&dir) {
            Ok(()) => {
                for (file, text) in SHIM_FILES {
                    let path = dir.join(file);
                    if let Some(parent) = path.parent() {
                        std::fs::DirBuilder::new()
                            .recursive(true)
                            .mode(0o700)
                            .create(parent)
                            .map_err(|e| format!("{}: {e}", parent.display()))?;
                    }
                    std::fs::write(&path, text).map_err(|e| format!("{}: {e}", path.display()))?;
                }
                remove_stale_shims(&base, &dir);
                return Ok(dir);
            }
            Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => continue,
            Err(e) => return Err(format!("{}: {e}", dir.display())),
        }
    }
    Err(format!("no free directory name in {}", base.display()))
}

/// Removes the shims that squall processes gone (no `/proc/<pid>`) left behind: only
/// directories owned by the same user as `ours`.
fn remove_stale_shims(base: &Path, ours: &Path) {
    use std::os::unix::fs::MetadataExt;
    if !Path::new("/proc/self").exists() {
        return;
    }
    let Ok(uid) = std::fs::metadata(ours).map(|m| m.uid()) else {
        return;
    };
    let Ok(entries) = std::fs::read_dir(base) else {
        return;
    };
    for entry in entries.filter_map(Result::ok) {
        let name = entry.file_name();
        let Some(pid) = name
            .to_str()
            .and_then(|n| n.strip_prefix("squall-python-"))
            .and_then(|rest| rest.split('-').next())
            .and_then(|pid| pid.parse::<u32>().ok())
        else {
            continue;
        };
        let path = entry.path();
        let ours_to_remove =
            std::fs::symlink_metadata(&path).is_ok_and(|m| m.is_dir() && m.uid() == uid);
        if path != ours && ours_to_remove && !Path::new("/proc").join(pid.to_string()).exists() {
            let _ = std::fs::remove_dir_all(&path);
        }
    }
}

/// What the wrapper reported over the socket.
#[derive(Debug, Default, PartialEq)]
struct Reported {
    /// `run()` returned: its status (`None` when it returned a plain value) and result.
    outcome: Option<(Option<bool>, Value)>,
    /// Why the action could not be loaded or its status is not valid.
    error: Option<String>,
}

/// Runs the job on this thread (it blocks) and reports how it ended.
pub fn run_python(job: PythonJob) -> PythonReport {
    let not_started = |why: String| PythonReport {
        outcome: PythonOutcome::NotStarted(why),
        log: Vec::new(),
    };
    let shim = match shim_dir() {
        Ok(dir) => dir,
        Err(e) => return not_started(e),
    };
    let (ours, theirs) = match UnixStream::pair() {
        Ok(pair) => pair,
        Err(e) => return not_started(format!("cannot open a socket for the action: {e}")),
    };
    let mut command = Command::new(&job.python);
    // `-u`: print() reaches the log as it happens, as in st2.
    command.arg("-u").arg(shim.join(WRAPPER));
    // A virtualenv's interpreter (a path, not a name looked up on PATH): the virtualenv's
    // scripts come first on PATH, as st2 has it.
    if let Some(bin) = job.python.parent().filter(|b| !b.as_os_str().is_empty()) {
        let bin = std::path::absolute(bin).unwrap_or_else(|_| bin.to_path_buf());
        let path = std::env::var_os("PATH").unwrap_or_default();
        let dirs = std::iter::once(bin).chain(std::env::split_paths(&path));
        if let Ok(joined) = std::env::join_paths(dirs) {
            command.env("PATH", joined);
        }
    }
    command
        .envs(job.env.iter().map(|(k, v)| (k, v)))
        .env("PYTHONPATH", python_path(&shim, &job.pack_dir))
        .env("PYTHONUNBUFFERED", "1")
        .env("ST2_ACTION_PACK_NAME", &job.pack)
        .stdin(Stdio::from(OwnedFd::from(theirs)));

    let document = json!({
        "entry_point": job.entry_point.to_string_lossy(),
        "parameters": job.parameters,
        "config": job.config,
        "pack": job.pack,
        "user": job.user,
        "log_level": job.log_level,
    });
    let output = Arc::new(Output::new(job.secrets.clone(), job.on_log.clone()));
    let talk = {
        let (output, datastore) = (output.clone(), job.datastore.clone());
        std::thread::spawn(move || converse(ours, &document, &*datastore, &output))
    };
    let ended = supervise(command, &output, job.timeout, &job.cancel);
    // The process is gone: its end of the socket is closed, and so the conversation ends.
    let mut reported = talk.join().unwrap_or_default();
    let ended = match ended {
        Ok(ended) => ended,
        Err(e) => {
            return not_started(format!(
                "cannot run the Python interpreter {}: {e}",
                job.python.display()
            ))
        }
    };
    let (stdout, stderr, log) = output.finish();
    if let Some((_, value)) = &mut reported.outcome {
        mask_strings(value, &job.secrets);
    }
    let outcome = st2_outcome(
        ended.by,
        ended.code(),
        reported,
        stdout,
        stderr,
        job.timeout,
    );
    PythonReport { outcome, log }
}

/// Masks the secrets in every string of a returned value (its keys too), as in the output.
fn mask_strings(value: &mut Value, secrets: &[String]) {
    if secrets.iter().all(String::is_empty) {
        return;
    }
    match value {
        Value::String(s) => *s = mask(s, secrets),
        Value::Array(items) => items.iter_mut().for_each(|v| mask_strings(v, secrets)),
        Value::Object(map) => {
            let entries = std::mem::take(map);
            for (k, mut v) in entries {
                mask_strings(&mut v, secrets);
                map.insert(mask(&k, secrets), v);
            }
        }
        _ => {}
    }
}

/// st2's status and result for how the process ended and what it reported.
fn st2_outcome(
    by: Option<EndedBy>,
    exit_code: Option<i32>,
    reported: Reported,
    stdout: String,
    stderr: String,
    timeout: Duration,
) -> PythonOutcome {
    let (status, value) = match reported.outcome {
        Some((status, value)) => (status, value),
        // st2's result when the action gave none (it raised, or was killed).
        None => (None, Value::String("None".into())),
    };
    let mut result = json!({
        "result": value,
        "stdout": stdout,
        "stderr": stderr,
        "exit_code": exit_code,
    });
    let error = match by {
        Some(EndedBy::Timeout) => Some(timeout_message(timeout)),
        _ => reported.error,
    };
    if let Some(error) = error {
        result["error"] = Value::String(error);
    }
    match by {
        Some(EndedBy::Timeout) => PythonOutcome::Timeout {
            after: timeout,
            result,
        },
        Some(EndedBy::Cancel) => PythonOutcome::Canceled(result),
        None if exit_code == Some(0) && status != Some(false) => PythonOutcome::Succeeded(result),
        None => PythonOutcome::Failed(result),
    }
}

/// squall's side of the socket: sends the job, then answers datastore calls and takes log
/// records and the outcome until the wrapper's end closes.
fn converse(
    stream: UnixStream,
    document: &Value,
    datastore: &dyn Datastore,
    output: &Output,
) -> Reported {
    let mut reported = Reported::default();
    let mut writer = match stream.try_clone() {
        Ok(w) => w,
        Err(e) => {
            reported.error = Some(format!("cannot talk to the action: {e}"));
            return reported;
        }
    };
    let mut first = document.to_string();
    first.push('\n');
    if writer.write_all(first.as_bytes()).is_err() {
        // It did not start, or ended before reading its job: its exit says why.
        return reported;
    }
    let mut reader = BufReader::new(stream);
    let mut line = Vec::new();
    loop {
        line.clear();
        match reader
            .by_ref()
            .take(MAX_MESSAGE_BYTES)
            .read_until(b'\n', &mut line)
        {
            Ok(0) | Err(_) => break,
            Ok(_) => {}
        }
        if line.last() != Some(&b'\n') && line.len() as u64 >= MAX_MESSAGE_BYTES {
            reported.error = Some("the action sent a message over 64 MiB (its result?)".into());
            break;
        }
        let Ok(message) = serde_json::from_slice::<Value>(&line) else {
            continue;
        };
        match message["op"].as_str() {
            Some("log") => {
                let text = |k: &str| message[k].as_str().unwrap_or_default().to_string();
                output.log(log_level(&text("level")), &text("message"));
                output.keep(Stream::Stderr, &format!("{}\n", text("text")));
            }
            Some("outcome") => {
                reported.outcome = Some((
                    message["status"].as_bool(),
                    message.get("result").cloned().unwrap_or(Value::Null),
                ));
            }
            Some("error") => {
                reported.error = message["message"].as_str().map(str::to_string);
            }
            _ => {
                let mut reply = answer(&message, datastore).to_string();
                reply.push('\n');
                if writer.write_all(reply.as_bytes()).is_err() {
                    break;
                }
            }
        }
    }
    reported
}

/// A Python logging level as a squall log level.
fn log_level(name: &str) -> LogLevel {
    match name {
        "DEBUG" | "NOTSET" => LogLevel::Debug,
        "INFO" | "AUDIT" => LogLevel::Info,
        "WARNING" | "WARN" => LogLevel::Warn,
        "ERROR" | "CRITICAL" | "FATAL" => LogLevel::Error,
        _ => LogLevel::Info,
    }
}

/// The answer to one datastore call: `{value}`, `{ok}`, `{deleted}`, `{items}`, or `{error}`.
fn answer(request: &Value, datastore: &dyn Datastore) -> Value {
    let name = || {
        request["name"]
            .as_str()
            .filter(|n| !n.is_empty())
            .ok_or_else(|| "a datastore call needs a key name".to_string())
    };
    let done = match request["op"].as_str() {
        Some("get") => name()
            .and_then(|n| datastore.get(n, request["decrypt"].as_bool().unwrap_or(false)))
            .map(|value| json!({ "value": value })),
        Some("set") => name().and_then(|n| {
            let value = match &request["value"] {
                Value::String(s) => s.clone(),
                other => other.to_string(),
            };
            let ttl = request["ttl"]
                .as_f64()
                .filter(|t| *t > 0.0 && t.is_finite())
                .map(|t| t.ceil() as u64);
            datastore
                .set(
                    n,
                    &value,
                    ttl,
                    request["encrypt"].as_bool().unwrap_or(false),
                )
                .map(|()| json!({ "ok": true }))
        }),
        Some("delete") => name()
            .and_then(|n| datastore.delete(n))
            .map(|deleted| json!({ "deleted": deleted })),
        Some("list") => datastore
            .list(request["prefix"].as_str().filter(|p| !p.is_empty()))
            .map(|items| {
                let items: Vec<Value> = items
                    .into_iter()
                    .map(|k| {
                        json!({
                            "name": k.name,
                            "value": k.value,
                            "secret": k.secret,
                            "encrypted": k.secret,
                            "scope": "st2kv.system",
                            "expire_timestamp": k.expire_timestamp,
                        })
                    })
                    .collect();
                json!({ "items": items })
            }),
        other => Err(format!("squall does not know the request {other:?}")),
    };
    done.unwrap_or_else(|error| json!({ "error": error }))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::MemoryKv;

    fn memory() -> KvDatastore {
        KvDatastore(Arc::new(MemoryKv::new()))
    }

    #[test]
    fn the_interpreter_is_the_packs_virtualenvs_when_it_has_one() {
        let dir = tempfile::tempdir().expect("tempdir");
        assert_eq!(interpreter(dir.path()), PathBuf::from("python3"));
        let bin = dir.path().join(".venv/bin");
        std::fs::create_dir_all(&bin).expect("mkdir");
        std::fs::write(bin.join("python"), "").expect("write");
        assert_eq!(interpreter(dir.path()), bin.join("python"));
    }

    #[test]
    fn runner_parameters_stay_with_the_runner() {
        let params = json!({"name": "x", "count": 2, "timeout": 5, "env": {"A": "1", "PYTHONPATH": "/evil", "N": 3}, "log_level": "INFO"});
        let params = params.as_object().expect("object");
        let given = action_parameters(params, &[]);
        assert_eq!(Value::Object(given), json!({"name": "x", "count": 2}));
        // Declared without a value: None, as st2 passes it; the runner's own stay out.
        let declared = [
            "name".to_string(),
            "hosts".to_string(),
            "timeout".to_string(),
        ];
        let given = action_parameters(params, &declared);
        assert_eq!(
            Value::Object(given),
            json!({"name": "x", "count": 2, "hosts": null})
        );
        let mut env = user_env(params);
        env.sort();
        assert_eq!(
            env,
            [("A".to_string(), "1".to_string()), ("N".into(), "3".into())]
        );
    }

    #[test]
    fn the_python_path_has_the_shim_then_the_packs_lib() {
        let path = python_path(Path::new("/tmp/shim"), Path::new("/packs/p"));
        assert_eq!(path, "/tmp/shim:/packs/p/actions/lib");
    }

    #[test]
    fn datastore_calls_are_answered_from_the_store() {
        let store = memory();
        let set = json!({"op": "set", "name": "p.A:k", "value": "v", "ttl": 60, "encrypt": false});
        assert_eq!(answer(&set, &store), json!({"ok": true}));
        let get = json!({"op": "get", "name": "p.A:k", "decrypt": false});
        assert_eq!(answer(&get, &store), json!({"value": "v"}));
        let delete = json!({"op": "delete", "name": "p.A:k"});
        assert_eq!(answer(&delete, &store), json!({"deleted": true}));
        assert_eq!(answer(&delete, &store), json!({"deleted": false}));
        assert_eq!(answer(&get, &store), json!({"value": null}));
        let nameless = json!({"op": "get", "name": ""});
        assert!(answer(&nameless, &store)["error"]
            .as_str()
            .is_some_and(|e| e.contains("key name")));
        let unknown = json!({"op": "drop_table"});
        assert!(answer(&unknown, &store)["error"].is_string());
    }

    #[test]
    fn st2s_status_follows_the_exit_code_and_the_returned_status() {
        let run = |by, code, reported| {
            st2_outcome(
                by,
                code,
                reported,
                "out\n".into(),
                String::new(),
                DEFAULT_TIMEOUT,
            )
        };
        let returned = |status, value| Reported {
            outcome: Some((status, value)),
            error: None,
        };
        let ok = run(None, Some(0), returned(Some(true), json!({"n": 1})));
        assert_eq!(
            ok,
            PythonOutcome::Succeeded(
                json!({"result": {"n": 1}, "stdout": "out\n", "stderr": "", "exit_code": 0})
            )
        );
        assert!(matches!(
            run(None, Some(0), returned(None, json!([1, 2]))),
            PythonOutcome::Succeeded(_)
        ));
        let PythonOutcome::Failed(refused) = run(None, Some(0), returned(Some(false), json!("no")))
        else {
            panic!("(False, x) must fail");
        };
        assert_eq!(refused["result"], "no");
        let PythonOutcome::Failed(raised) = run(None, Some(1), Reported::default()) else {
            panic!("an exception must fail");
        };
        assert_eq!(
            (raised["result"].clone(), raised["exit_code"].clone()),
            (json!("None"), json!(1))
        );
        let PythonOutcome::Timeout { result, .. } =
            run(Some(EndedBy::Timeout), Some(-9), Reported::default())
        else {
            panic!("a timeout");
        };
        assert_eq!(result["error"], "Action failed to complete in 600 seconds");
        assert_eq!(result["exit_code"], -9);
    }

    fn job(dir: &Path, source: &str, parameters: Value) -> PythonJob {
        job_in_file(dir, "act.py", source, parameters)
    }

    fn job_in_file(dir: &Path, file: &str, source: &str, parameters: Value) -> PythonJob {
        std::fs::create_dir_all(dir.join("actions")).expect("mkdir");
        let entry_point = dir.join("actions").join(file);
        std::fs::write(&entry_point, source).expect("write");
        PythonJob {
            python: interpreter(dir),
            entry_point,
            pack: "p".into(),
            pack_dir: dir.to_path_buf(),
            parameters: parameters.as_object().cloned().unwrap_or_default(),
            config: json!({"region": "eu"}),
            user: Some("ops".into()),
            log_level: "DEBUG".into(),
            env: Vec::new(),
            timeout: Duration::from_secs(30),
            cancel: CancelToken::new(),
            secrets: vec!["hunter2".into()],
            on_log: None,
            datastore: Arc::new(memory()),
        }
    }

    #[test]
    fn an_st2_action_runs_with_its_config_logger_and_datastore() {
        let dir = tempfile::tempdir().expect("tempdir");
        let source = r#"
import sys
from st2common.runners.base_action import Action

class Greet(Action):
    def run(self, name, password):
        print("hello", name, password)
        self.logger.warning("careful")
        self.action_service.set_value("seen", name)
        return (True, {"region": self.config["region"], "seen": self.action_service.get_value("seen"), "echo": "pw=" + password})
"#;
        let report = run_python(job(
            dir.path(),
            source,
            json!({"name": "ann", "password": "hunter2"}),
        ));
        let PythonOutcome::Succeeded(result) = &report.outcome else {
            panic!("{:?} {:?}", report.outcome, report.log);
        };
        assert_eq!(
            result["result"],
            json!({"region": "eu", "seen": "ann", "echo": "pw=********"})
        );
        assert_eq!(result["stdout"], "hello ann ********\n");
        assert_eq!(result["stderr"], "actions.python.Greet: WARNING  careful\n");
        assert_eq!(result["exit_code"], 0);
        assert!(report
            .log
            .iter()
            .any(|l| l.level == LogLevel::Warn && l.message == "careful"));
        assert!(report.log.iter().all(|l| !l.message.contains("hunter2")));
    }

    #[test]
    fn an_action_file_named_like_a_standard_module_does_not_hide_it() {
        let dir = tempfile::tempdir().expect("tempdir");
        // `smtplib` imports the standard `email` package, which this file must not replace.
        let source = "import smtplib\nfrom st2common.runners.base_action import Action\nclass Mail(Action):\n    def run(self):\n        return smtplib.__name__\n";
        let report = run_python(job_in_file(dir.path(), "email.py", source, json!({})));
        let PythonOutcome::Succeeded(result) = &report.outcome else {
            panic!("{:?}", report.outcome);
        };
        assert_eq!(result["result"], "smtplib");
    }

    #[test]
    fn a_shim_swept_from_the_temp_dir_is_written_again() {
        // A slot of its own: the process's shim is in use by the other tests.
        let mut slot = None;
        let first = usable_shim(&mut slot).expect("shim");
        assert_eq!(usable_shim(&mut slot).expect("same shim"), first);
        std::fs::remove_file(first.join("st2common/runners/base_action.py")).expect("sweep");
        let second = usable_shim(&mut slot).expect("shim again");
        assert_ne!(first, second);
        assert!(!first.exists(), "the swept shim's remains are removed");
        for (file, text) in SHIM_FILES {
            assert_eq!(
                std::fs::read_to_string(second.join(file)).expect("file"),
                text
            );
        }
        let mode = std::os::unix::fs::PermissionsExt::mode(
            &std::fs::metadata(&second).expect("metadata").permissions(),
        );
        assert_eq!(mode & 0o777, 0o700);
        std::fs::remove_dir_all(&second).expect("clean up");
    }

    #[test]
    fn a_cancel_ends_the_action_at_once() {
        let dir = tempfile::tempdir().expect("tempdir");
        let source = "import time\nfrom st2common.runners.base_action import Action\nclass Wait(Action):\n    def run(self):\n        print('waiting', flush=True)\n        time.sleep(60)\n";
        let j = job(dir.path(), source, json!({}));
        let cancel = j.cancel.clone();
        let canceler = std::thread::spawn(move || {
            std::thread::sleep(Duration::from_millis(500));
            cancel.cancel();
        });
        let started = std::time::Instant::now();
        let report = run_python(j);
        canceler.join().expect("canceler");
        assert!(
            matches!(report.outcome, PythonOutcome::Canceled(_)),
            "{:?}",
            report.outcome
        );
        assert!(started.elapsed() < Duration::from_secs(20));
    }

    #[test]
    fn a_file_without_exactly_one_action_class_says_so() {
        let dir = tempfile::tempdir().expect("tempdir");
        let none = "class NotAnAction(object):\n    def run(self):\n        return 1\n";
        let report = run_python(job(dir.path(), none, json!({})));
        let PythonOutcome::Failed(result) = &report.outcome else {
            panic!("{:?}", report.outcome);
        };
        assert!(
            result["error"]
                .as_str()
                .is_some_and(|e| e.contains("has no Action subclass")),
            "{result}"
        );
        let two = "from st2common.runners.base_action import Action\nclass A(Action):\n    def run(self):\n        return 1\nclass B(Action):\n    def run(self):\n        return 2\n";
        let report = run_python(job(dir.path(), two, json!({})));
        let PythonOutcome::Failed(result) = &report.outcome else {
            panic!("{:?}", report.outcome);
        };
        assert!(
            result["error"]
                .as_str()
                .is_some_and(|e| e.contains("2 Action subclasses (A, B)")),
            "{result}"
        );
    }
}
