//! st2's inquiries: an execution of the `inquirer` runner (`core.ask`) asks a question and
//! waits, `pending`, until someone answers it (`PUT /api/v1/inquiries/{id}`, `squall inquiry
//! respond`, st2's `st2 inquiry respond`) or its `ttl` runs out.
//!
//! As in st2 (its inquirer runner and `st2common/services/inquiry.py`):
//! - the execution's result is the question: `{schema, roles, users, route, ttl}`, and
//!   `core.st2.generic.inquiry` fires with `{id, route}` so rules can tell someone;
//! - its workflow pauses once nothing else of it is running (Orquesta's way: other branches
//!   carry on; see `workflows`), and its parents with it;
//! - an answer is checked (still pending, the user among `users` when any are named, the
//!   response valid against `schema`, its defaults filled in), then the execution succeeds with
//!   `response` added to its result and the paused workflows resume;
//! - an inquiry not answered within `ttl` minutes ends `timeout` (st2 leaves this to a garbage
//!   collector that is off by default; squall always honours `ttl`), and its workflow resumes
//!   to follow its failure path.
//!
//! Roles: squall has no RBAC, so `roles` admits every user, as st2 without RBAC does.
//!
//! The question, the answer and the timeout are each one durable write of the execution; a
//! restart finds pending inquiries pending (they are never run again).

use chrono::{DateTime, Utc};
use serde_json::{json, Map, Value};

use super::workflows::{Control, WorkflowEvent};
use super::{Engine, EngineError, Loaded};
use crate::model::{Execution, ExecutionStatus, TriggerInstance};

/// The trigger an inquiry fires when it starts waiting.
pub const INQUIRY_TRIGGER: &str = "core.st2.generic.inquiry";

/// How often unanswered inquiries are checked against their `ttl`.
pub(super) const EXPIRY_CHECK: std::time::Duration = std::time::Duration::from_secs(5);

/// st2's InquiryResponseAPI: what the inquiries API shows of one.
pub fn inquiry_json(e: &Execution) -> Value {
    let r = &e.result;
    json!({
        "id": e.id,
        "route": r.get("route").cloned().unwrap_or(json!("")),
        "ttl": r.get("ttl").cloned().unwrap_or(json!(1440)),
        "users": r.get("users").cloned().unwrap_or(json!([])),
        "roles": r.get("roles").cloned().unwrap_or(json!([])),
        "schema": r.get("schema").cloned().unwrap_or(json!({})),
    })
}

/// Whether `e` is an inquiry (an execution of an `inquirer` action).
fn is_inquiry(loaded: &Loaded, e: &Execution) -> bool {
    match loaded.catalog.action(&e.action) {
        Some(a) => a.meta.runner_type == squall_actions::RunnerType::Inquirer,
        // Its pack unloaded since: the question it asked says what it is.
        None => e.result.get("schema").is_some() && e.result.get("ttl").is_some(),
    }
}

/// When an inquiry started at `start` with `ttl` minutes runs out (none for a ttl of 0 or less,
/// which st2 treats as never).
pub fn expires_at(start: DateTime<Utc>, ttl: &Value) -> Option<DateTime<Utc>> {
    let minutes = ttl.as_i64().filter(|m| *m > 0)?;
    start.checked_add_signed(chrono::Duration::minutes(minutes))
}

/// The response with the schema's top-level defaults filled in where it has no value, as st2
/// validates with `use_default=True`.
fn with_defaults(schema: &Value, response: Value) -> Value {
    let (Value::Object(mut map), Some(Value::Object(props))) =
        (response.clone(), schema.get("properties"))
    else {
        return response;
    };
    for (name, spec) in props {
        if let Some(default) = spec.get("default") {
            map.entry(name.clone()).or_insert_with(|| default.clone());
        }
    }
    Value::Object(map)
}

impl Engine {
    /// Starts an `inquirer` execution: pending with its question as result, durable, then the
    /// stream and `core.st2.generic.inquiry` hear of it and its workflow may pause.
    pub(super) fn run_inquiry(&self, loaded: &Loaded, e: &Execution) {
        let mut e = e.clone();
        let p = &e.parameters;
        let result = json!({
            "schema": p.get("schema").cloned().unwrap_or_else(|| json!({})),
            "roles": p.get("roles").cloned().unwrap_or_else(|| json!([])),
            "users": p.get("users").cloned().unwrap_or_else(|| json!([])),
            "route": p.get("route").cloned().unwrap_or_else(|| json!("")),
            "ttl": p.get("ttl").cloned().unwrap_or_else(|| json!(1440)),
        });
        e.status = ExecutionStatus::Pending;
        let route = result["route"].clone();
        e.result = result;
        let ti = TriggerInstance::new(
            INQUIRY_TRIGGER,
            None,
            json!({"id": e.id, "route": route}),
            "squall",
        );
        let written = self
            .store
            .put_execution(&e)
            .and_then(|()| self.store.insert_trigger_instance(&ti));
        if let Err(err) = written {
            tracing::error!(execution = %e.id, error = %err, "cannot record an inquiry");
            let result = json!({"error": format!("the inquiry could not be recorded: {err}")});
            self.finish(loaded, &mut e, ExecutionStatus::Failed, result, Vec::new());
            return;
        }
        self.durable_blocking();
        self.publish_execution("st2.execution__update", loaded, &e);
        self.metrics.trigger_instance(INQUIRY_TRIGGER);
        let _ = self.ti_tx.send((std::sync::Arc::new(ti), None));
        if let Some(parent) = e.parent.clone() {
            self.workflow_event(WorkflowEvent::ChildPending(parent));
        }
    }

    /// The inquiries waiting for an answer, oldest first.
    pub fn inquiries(&self) -> Result<Vec<Execution>, EngineError> {
        let loaded = self.loaded();
        let mut list: Vec<Execution> = self
            .store
            .active_executions()?
            .into_iter()
            .filter(|e| e.status == ExecutionStatus::Pending && is_inquiry(&loaded, e))
            .collect();
        list.sort_by(|a, b| {
            a.start_timestamp
                .cmp(&b.start_timestamp)
                .then(a.id.cmp(&b.id))
        });
        Ok(list)
    }

    /// One inquiry that can still be answered (st2's `check_inquiry`).
    pub fn inquiry(&self, id: &str) -> Result<Execution, EngineError> {
        let e = self
            .store
            .execution(id)?
            .ok_or_else(|| EngineError::NoExecution(id.to_string()))?;
        if !is_inquiry(&self.loaded(), &e) {
            return Err(EngineError::InquiryRefused(format!(
                "execution {id} is not an inquiry (its action '{}' is not of the inquirer runner)",
                e.action
            )));
        }
        match e.status {
            ExecutionStatus::Pending => Ok(e),
            ExecutionStatus::Timeout => Err(EngineError::InquiryRefused(format!(
                "inquiry {id} timed out and cannot be responded to"
            ))),
            _ => Err(EngineError::InquiryRefused(format!(
                "inquiry {id} has already been responded to (it is {})",
                e.status.as_str()
            ))),
        }
    }

    /// Answers an inquiry as `user`: checked, recorded durably (the execution succeeds with
    /// `response` in its result), then its workflows resume. Returns the response as stored
    /// (with the schema's defaults).
    pub fn respond_inquiry(
        &self,
        id: &str,
        response: Value,
        user: &str,
    ) -> Result<Value, EngineError> {
        let mut e = self.inquiry(id)?;
        let users: Vec<&str> = e.result["users"]
            .as_array()
            .map(|u| u.iter().filter_map(Value::as_str).collect())
            .unwrap_or_default();
        if !users.is_empty() && !users.contains(&user) {
            return Err(EngineError::InquiryForbidden(format!(
                "user '{user}' is not allowed to respond to inquiry {id} (allowed: {})",
                users.join(", ")
            )));
        }
        if !response.is_object() {
            return Err(EngineError::InquiryRefused(format!(
                "the response to inquiry {id} must be an object, not {response}"
            )));
        }
        let schema = e.result["schema"].clone();
        let response = with_defaults(&schema, response);
        let mut problems = Vec::new();
        squall_actions::schema::validate(&schema, &response, "response", &mut problems);
        if !problems.is_empty() {
            return Err(EngineError::InquiryRefused(format!(
                "the response to inquiry {id} did not pass its schema: {}",
                problems.join("; ")
            )));
        }
        let loaded = self.loaded();
        let mut result: Map<String, Value> = e.result.as_object().cloned().unwrap_or_default();
        result.insert("response".into(), response.clone());
        let mut log = std::mem::take(&mut e.log);
        log.push(squall_actions::LogLine {
            timestamp: Utc::now(),
            level: squall_actions::LogLevel::Info,
            message: format!("responded by {user}"),
        });
        self.finish(
            &loaded,
            &mut e,
            ExecutionStatus::Succeeded,
            Value::Object(result),
            log,
        );
        self.resume_after_inquiry(&e);
        Ok(response)
    }

    /// Ends the inquiries whose `ttl` ran out by `now`: `timeout`, and their workflows resume
    /// to follow their failure paths.
    pub(super) fn expire_inquiries(&self, now: DateTime<Utc>) {
        let list = match self.inquiries() {
            Ok(list) => list,
            Err(err) => {
                tracing::error!(error = %err, "cannot list inquiries");
                return;
            }
        };
        let loaded = self.loaded();
        for mut e in list {
            if expires_at(e.start_timestamp, &e.result["ttl"]).is_none_or(|at| at > now) {
                continue;
            }
            // Answered meanwhile: nothing to expire.
            let still_pending = matches!(
                self.store.execution(&e.id),
                Ok(Some(s)) if s.status == ExecutionStatus::Pending
            );
            if !still_pending {
                continue;
            }
            tracing::info!(execution = %e.id, "inquiry timed out unanswered");
            let result = e.result.clone();
            e.reason = Some(format!(
                "no response within its ttl of {} minutes",
                e.result["ttl"]
            ));
            self.finish(
                &loaded,
                &mut e,
                ExecutionStatus::Timeout,
                result,
                Vec::new(),
            );
            self.resume_after_inquiry(&e);
        }
    }

    /// Resumes the workflows an inquiry paused: the highest of its paused ancestors (resuming
    /// reaches the subworkflows below it). Sent after the inquiry's result, so each workflow
    /// has it when it resumes.
    fn resume_after_inquiry(&self, e: &Execution) {
        let mut target = None;
        let mut next = e.parent.clone();
        while let Some(id) = next {
            let Ok(Some(p)) = self.store.execution(&id) else {
                break;
            };
            if !matches!(p.status, ExecutionStatus::Paused | ExecutionStatus::Pausing) {
                break;
            }
            next = p.parent.clone();
            target = Some(id);
        }
        if let Some(id) = target {
            self.workflow_event(WorkflowEvent::Control(id, Control::Resume, None));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ttl_is_minutes_from_the_start_and_zero_is_never() {
        let start = DateTime::parse_from_rfc3339("2026-01-01T00:00:00Z")
            .unwrap()
            .with_timezone(&Utc);
        assert_eq!(
            expires_at(start, &json!(90)).map(|t| t.to_rfc3339()),
            Some("2026-01-01T01:30:00+00:00".to_string())
        );
        assert_eq!(expires_at(start, &json!(0)), None);
        assert_eq!(expires_at(start, &json!(-5)), None);
        assert_eq!(expires_at(start, &json!("x")), None);
    }

    #[test]
    fn defaults_fill_what_the_response_leaves_out() {
        let schema = json!({"type": "object", "properties": {
            "continue": {"type": "boolean", "required": true},
            "reason": {"type": "string", "default": "none given"}}});
        assert_eq!(
            with_defaults(&schema, json!({"continue": true})),
            json!({"continue": true, "reason": "none given"})
        );
        assert_eq!(
            with_defaults(&schema, json!({"continue": false, "reason": "x"})),
            json!({"continue": false, "reason": "x"})
        );
        let mut problems = Vec::new();
        squall_actions::schema::validate(
            &schema,
            &json!({"reason": "x"}),
            "response",
            &mut problems,
        );
        assert_eq!(problems, ["response.continue: is required"]);
    }
}
