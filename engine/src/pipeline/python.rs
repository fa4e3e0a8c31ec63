//! Running an action of st2's `python-script` runner on a worker thread: its pack's interpreter
//! and config, its parameters and environment handed to `squall_actions::runners::python`, its
//! datastore calls answered from the store, its output followed live, its outcome into a final
//! status. Nothing here decides what runs.
//!
//! The action's key-value writes are as durable as a Rhai script's: plain ones go through the
//! execution's [`ScriptKv`] (whose mark the worker's batch makes durable before it records the
//! result); the others (encrypted values, lists, reads of ciphertext) reach the store directly,
//! and are made durable here before the result is returned.

use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use serde_json::{json, Value};
use squall_actions::runners::python::{
    action_parameters, interpreter, run_python, user_env, Datastore, KeyEntry, PythonJob,
    PythonOutcome, DEFAULT_TIMEOUT,
};
use squall_actions::{CancelToken, KvStore, LogLine};

use super::{Engine, WorkItem};
use crate::model::{Execution, ExecutionStatus};
use crate::store::{ScriptKv, Store};

impl Engine {
    pub(super) fn execute_python(
        &self,
        item: WorkItem,
        e: &Arc<Execution>,
        cancel: &CancelToken,
        kv: &Arc<ScriptKv>,
    ) -> (ExecutionStatus, Value, Vec<LogLine>) {
        let fail = |why: String| (ExecutionStatus::Failed, json!({ "error": why }), Vec::new());
        let loaded = self.loaded();
        let Some(action) = loaded.catalog.action(&item.action) else {
            return fail(format!("action '{}' is no longer loaded", item.action));
        };
        let Some(pack) = loaded
            .catalog
            .packs
            .iter()
            .find(|p| p.reference == action.pack)
        else {
            return fail(format!(
                "the pack of action '{}' is no longer loaded",
                item.action
            ));
        };
        let entry_point = item
            .source
            .as_deref()
            .map(PathBuf::from)
            .unwrap_or_else(|| action.entry_point.clone());
        let params = &item.parameters;
        let (secrets, timeout) =
            super::shell::secrets_and_timeout(&action.meta, &item, DEFAULT_TIMEOUT);
        let log_level = params
            .get("log_level")
            .and_then(Value::as_str)
            .unwrap_or("DEBUG")
            .to_string();
        let mut env = user_env(params);
        env.push(("ST2_ACTION_EXECUTION_ID".into(), e.id.clone()));
        let datastore = Arc::new(ExecutionDatastore {
            kv: kv.clone(),
            store: self.store.clone(),
            mark: AtomicU64::new(0),
        });
        let (live, on_log) = self.live_log(e, cancel);
        let report = run_python(PythonJob {
            python: interpreter(&pack.dir),
            entry_point,
            pack: pack.reference.clone(),
            pack_dir: pack.dir.clone(),
            parameters: action_parameters(params, action.meta.parameters.keys()),
            config: item.ctx.get("config").cloned().unwrap_or(json!({})),
            user: item
                .ctx
                .get("user")
                .and_then(Value::as_str)
                .map(str::to_string),
            log_level,
            env,
            timeout,
            cancel: cancel.clone(),
            secrets,
            on_log: Some(on_log),
            datastore: datastore.clone(),
        });
        live.finish();
        let (mut status, mut result) = match report.outcome {
            PythonOutcome::Succeeded(r) => (ExecutionStatus::Succeeded, r),
            PythonOutcome::Failed(r) => (ExecutionStatus::Failed, r),
            PythonOutcome::Timeout { result, .. } => (ExecutionStatus::Timeout, result),
            PythonOutcome::Canceled(r) => (ExecutionStatus::Canceled, r),
            PythonOutcome::NotStarted(why) => (ExecutionStatus::Failed, json!({ "error": why })),
        };
        if let Err(err) = datastore.make_durable() {
            tracing::error!(execution = %e.id, error = %err, "a Python action's key-value writes are not durable");
            if status == ExecutionStatus::Succeeded {
                status = ExecutionStatus::Failed;
                result = json!({"error": format!("the action ran, but its key-value writes could not be made durable: {err}")});
            }
        }
        (status, result, report.log)
    }
}

/// The datastore as one execution's Python action sees it.
struct ExecutionDatastore {
    kv: Arc<ScriptKv>,
    store: Arc<Store>,
    /// How far the store's writes had gone at the last call that bypassed `kv`.
    mark: AtomicU64,
}

impl ExecutionDatastore {
    fn saw(&self) {
        self.mark
            .fetch_max(self.store.kv_writes_begun(), Ordering::SeqCst);
    }

    /// Makes the calls that bypassed `kv` durable (those through `kv` are the batch's).
    fn make_durable(&self) -> Result<(), String> {
        match self.mark.load(Ordering::SeqCst) {
            0 => Ok(()),
            mark => self.store.kv_durable(mark).map_err(|e| e.to_string()),
        }
    }
}

impl Datastore for ExecutionDatastore {
    fn get(&self, name: &str, decrypt: bool) -> Result<Option<String>, String> {
        if decrypt {
            return self.kv.get(name);
        }
        // st2 gives a secret's ciphertext unless asked to decrypt it.
        let pair = self.store.kv_get(name, false);
        self.saw();
        pair.map(|p| p.map(|p| p.value)).map_err(|e| e.to_string())
    }

    fn set(
        &self,
        name: &str,
        value: &str,
        ttl_seconds: Option<u64>,
        encrypt: bool,
    ) -> Result<(), String> {
        if !encrypt {
            return self.kv.set(name, value, ttl_seconds);
        }
        let done = self.store.kv_set(name, value, true, ttl_seconds);
        self.saw();
        done.map(|_| ()).map_err(|e| e.to_string())
    }

    fn delete(&self, name: &str) -> Result<bool, String> {
        self.kv.delete(name)
    }

    fn list(&self, prefix: Option<&str>) -> Result<Vec<KeyEntry>, String> {
        let pairs = self.store.kv_list(prefix, false);
        self.saw();
        Ok(pairs
            .map_err(|e| e.to_string())?
            .into_iter()
            .map(|p| KeyEntry {
                name: p.name,
                value: p.value,
                secret: p.secret,
                expire_timestamp: p.expire_timestamp.map(|t| t.to_rfc3339()),
            })
            .collect())
    }
}
