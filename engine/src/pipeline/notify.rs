//! st2's notifications and announcements. When an execution ends, its `notify` (the request's,
//! else its action's) becomes one `core.st2.generic.notifytrigger` instance per route, with
//! st2's payload; for an alias execution, its message is the chat answer (the alias's
//! `result.format`, or st2's default layout). An action of the `announcement` runner (such as
//! `chatops.post_message`) puts its parameters on the stream as `st2.announcement__<route>`
//! and posts the message to squall's own chat, when one is configured.
//!
//! Nothing here matches rules or decides where a route leads: rules do (the `chatops` pack's
//! `notify` rule sends chat answers to `chatops.post_message`).

use std::sync::Arc;

use chrono::Utc;
use serde_json::{json, Map, Value};

use super::{out::execution_json, Engine, Loaded};
use crate::chatops::{announcement_data, answer, Target};
use crate::model::{Execution, ExecutionStatus, TriggerInstance};

/// st2's notification trigger type.
pub const NOTIFY_TRIGGER: &str = "core.st2.generic.notifytrigger";

impl Engine {
    /// Fires `core.st2.generic.notifytrigger` for an execution that has just ended (see
    /// [`Engine::notify_instances`]): stored, then handed to the rules loop.
    pub(super) fn notify_final(&self, loaded: &Loaded, e: &Execution) {
        for ti in self.notify_instances(loaded, e) {
            if let Err(err) = self.store.insert_trigger_instance(&ti) {
                tracing::error!(execution = %e.id, error = %err, "cannot record a notification");
                continue;
            }
            let _ = self.ti_tx.send((Arc::new(ti), None));
        }
    }

    /// The `core.st2.generic.notifytrigger` instances an ended execution fires: one per route
    /// of its `notify` (the request's, else its action's), when a rule listens (storing
    /// instances nobody reads would cost every execution a write).
    pub(super) fn notify_instances(&self, loaded: &Loaded, e: &Execution) -> Vec<TriggerInstance> {
        let mut out = Vec::new();
        let Some(notify) = e.notify.as_ref().or_else(|| {
            loaded
                .catalog
                .action(&e.action)
                .and_then(|a| a.meta.notify.as_ref())
        }) else {
            return out;
        };
        if !loaded.rules.trigger_types().any(|t| t == NOTIFY_TRIGGER) {
            return out;
        }
        let execution = execution_json(loaded, e);
        let context = json!({
            "action_parameters": execution["parameters"],
            "action_context": execution["context"],
            "action_results": e.result,
            "execution": execution,
        });
        let env = squall_rules::template::environment();
        let succeeded = e.status == ExecutionStatus::Succeeded;
        for (section, suffix) in notify.applicable(succeeded) {
            if section.routes.is_empty() {
                continue;
            }
            let mut data = Map::new();
            for (k, v) in &section.data {
                data.insert(k.clone(), answer::render_values(&env, v, &context));
            }
            let message = match &section.message {
                Some(m) => env.render_str(m, &context).unwrap_or_else(|err| {
                    tracing::warn!(execution = %e.id, error = %err, "notify: cannot render the message");
                    m.clone()
                }),
                None if e.chat.is_some() => {
                    let alias = e.chat.as_ref().and_then(|c| {
                        loaded
                            .catalog
                            .alias(&c.action_alias_ref)
                            .map(|a| (c.action_alias_ref.as_str(), &a.alias))
                    });
                    // An alias whose results are off answers nothing.
                    let Some((message, extra)) = answer::result_message(alias, &execution)
                    else {
                        continue;
                    };
                    // Always there, so rules can pass it on (`{{ trigger.data.extra }}`).
                    let extra = if extra.is_null() { json!({}) } else { extra };
                    data.entry("extra").or_insert(extra);
                    message
                }
                None => format!("Action {} {suffix}", e.action),
            };
            // st2 sends the result as JSON text (rules cannot look into it).
            data.insert(
                "result".into(),
                Value::String(serde_json::to_string(&e.result).unwrap_or_default()),
            );
            for route in &section.routes {
                let payload = json!({
                    "message": message,
                    "data": data,
                    "execution_id": e.id,
                    "status": e.status.as_str(),
                    "start_timestamp": e.start_timestamp,
                    "end_timestamp": e.end_timestamp.unwrap_or_else(Utc::now),
                    "action_ref": e.action,
                    "runner_ref": execution["action"]["runner_type"],
                    "route": route,
                    "channel": route,
                });
                self.metrics.trigger_instance(NOTIFY_TRIGGER);
                out.push(TriggerInstance::new(
                    NOTIFY_TRIGGER,
                    None,
                    payload,
                    "squall",
                ));
            }
        }
        out
    }

    /// Runs an `announcement` runner's execution: the stream hears it at once, then the
    /// message is posted (on the runtime) and the execution ends with where it went.
    pub(super) fn run_announcement(self: &Arc<Self>, e: &Execution) {
        let route = e
            .parameters
            .get("route")
            .and_then(Value::as_str)
            .filter(|r| !r.is_empty())
            .unwrap_or("chatops")
            .to_string();
        let data = announcement_data(&e.parameters);
        let event = format!("st2.announcement__{route}");
        self.publish(event.clone(), data.clone());
        let message = data["message"].as_str().unwrap_or_default().to_string();
        let target = Target::from_announcement(data["channel"].as_str(), data.get("context"));
        let chat = self.chat.get().cloned();
        let engine = self.clone();
        let e = e.clone();
        let Some(handle) = self.handle.get().cloned() else {
            tracing::error!(execution = %e.id, "no runtime to post an announcement on");
            return;
        };
        handle.spawn(async move {
            let posted = match &chat {
                Some(chat) if !message.is_empty() => chat.post(&target, &message).await,
                _ => Ok(None),
            };
            let (status, result) = match posted {
                Ok(posted) => (
                    ExecutionStatus::Succeeded,
                    json!({"announced": event, "posted": posted}),
                ),
                Err(error) => (
                    ExecutionStatus::Failed,
                    json!({"announced": event, "error": error}),
                ),
            };
            let _ = tokio::task::spawn_blocking(move || {
                let loaded = engine.loaded();
                let mut e = e;
                engine.finish(&loaded, &mut e, status, result, Vec::new());
            })
            .await;
        });
    }
}
