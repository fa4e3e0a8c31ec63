//! Records as the API and the live stream show them: st2's fields, secrets masked, serialized
//! without copying the records.

use chrono::Utc;
use serde_json::{Map, Value};
use squall_actions::LogLine;

use super::Loaded;
use crate::model::{Execution, ExecutionStatus, TriggerInstance, TriggerInstanceStatus};

/// A trigger instance as the API shows it.
pub fn trigger_instance_json(ti: &TriggerInstance) -> Value {
    serde_json::to_value(TriggerInstanceOut::from(ti)).unwrap_or(Value::Null)
}

/// A trigger instance as the API shows it (st2's fields), serialized without copying it.
#[derive(serde::Serialize)]
pub struct TriggerInstanceOut<'a> {
    id: &'a str,
    trigger: &'a str,
    trigger_parameters: &'a Option<Value>,
    payload: &'a Value,
    #[serde(serialize_with = "crate::timestamp::serialize")]
    occurrence_time: &'a chrono::DateTime<Utc>,
    #[serde(serialize_with = "crate::timestamp::serialize")]
    received_time: &'a chrono::DateTime<Utc>,
    source: &'a str,
    status: TriggerInstanceStatus,
    /// st2's trace tag, when the sender gave one (`St2-Trace-Tag`).
    #[serde(skip_serializing_if = "Option::is_none")]
    trace_tag: &'a Option<String>,
    /// The sensor host and sensor, for an instance a sensor host sent.
    #[serde(skip_serializing_if = "Option::is_none")]
    context: &'a Option<Value>,
}

impl<'a> From<&'a TriggerInstance> for TriggerInstanceOut<'a> {
    fn from(ti: &'a TriggerInstance) -> Self {
        TriggerInstanceOut {
            id: &ti.id,
            trigger: &ti.trigger,
            trigger_parameters: &ti.trigger_parameters,
            payload: &ti.payload,
            occurrence_time: &ti.occurrence_time,
            received_time: &ti.received_time,
            source: &ti.source,
            status: ti.status,
            trace_tag: &ti.trace_tag,
            context: &ti.context,
        }
    }
}

/// Whether the execution runs a workflow (by its action's runner, or by its saved state).
pub fn is_workflow(loaded: &Loaded, e: &Execution) -> bool {
    e.workflow.is_some()
        || loaded
            .catalog
            .action(&e.action)
            .is_some_and(|a| a.meta.runner_type.is_workflow())
}

/// An execution as the API shows it: st2's fields, secrets masked.
pub fn execution_json(loaded: &Loaded, e: &Execution) -> Value {
    serde_json::to_value(ExecutionOut::new(loaded, e)).unwrap_or(Value::Null)
}

/// An execution as the API shows it, serialized without copying it (the stream's events).
#[derive(serde::Serialize)]
pub struct ExecutionOut<'a> {
    id: &'a str,
    action: ActionRef<'a>,
    parameters: Masked<'a>,
    status: ExecutionStatus,
    result: &'a Value,
    log: &'a [LogLine],
    #[serde(serialize_with = "crate::timestamp::serialize")]
    start_timestamp: &'a chrono::DateTime<Utc>,
    #[serde(serialize_with = "crate::timestamp::serialize_opt")]
    end_timestamp: &'a Option<chrono::DateTime<Utc>>,
    elapsed_seconds: Option<f64>,
    parent: &'a Option<String>,
    rule: Option<Ref<'a>>,
    trigger_instance: Option<IdOf<'a>>,
    context: Context<'a>,
    attempt: u32,
    reason: &'a Option<String>,
    rerun_of: &'a Option<String>,
    task: &'a Option<String>,
    item: &'a Option<usize>,
}

#[derive(serde::Serialize)]
struct Ref<'a> {
    #[serde(rename = "ref")]
    reference: &'a str,
}

/// An execution's action: its reference and its runner (`rhai` or `orquesta`, as st2's
/// clients read it to show a workflow's tasks).
#[derive(serde::Serialize)]
struct ActionRef<'a> {
    #[serde(rename = "ref")]
    reference: &'a str,
    runner_type: &'static str,
}

#[derive(serde::Serialize)]
struct IdOf<'a> {
    id: &'a str,
}

/// st2's `context`: who runs it and, for a workflow's task, the workflow and the task (as
/// st2's Orquesta shows them).
#[derive(serde::Serialize)]
struct Context<'a> {
    user: &'a Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    parent: Option<ParentOf<'a>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    orquesta: Option<TaskOf<'a>>,
    /// An alias execution's `action_alias_ref`, `api_user` and `source_channel`.
    #[serde(flatten)]
    chat: Option<&'a crate::model::ChatOrigin>,
    /// The remote worker that runs (or ran) it.
    #[serde(skip_serializing_if = "Option::is_none")]
    worker: Option<&'a str>,
    /// The named work queue it was sent to.
    #[serde(skip_serializing_if = "Option::is_none")]
    queue: Option<&'a str>,
}

#[derive(serde::Serialize)]
struct ParentOf<'a> {
    execution_id: &'a str,
}

#[derive(serde::Serialize)]
struct TaskOf<'a> {
    task_name: &'a str,
}

/// Parameters with the values of the action's secret parameters masked.
struct Masked<'a> {
    meta: Option<&'a squall_actions::ActionMeta>,
    params: &'a Map<String, Value>,
}

impl serde::Serialize for Masked<'_> {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        use serde::ser::SerializeMap;
        let mut map = serializer.serialize_map(Some(self.params.len()))?;
        for (name, value) in self.params {
            if self.meta.is_some_and(|m| m.is_secret(name)) {
                map.serialize_entry(name, squall_actions::SECRET_MASK)?;
            } else {
                map.serialize_entry(name, value)?;
            }
        }
        map.end()
    }
}

impl<'a> ExecutionOut<'a> {
    pub fn new(loaded: &'a Loaded, e: &'a Execution) -> Self {
        let action = loaded.catalog.action(&e.action);
        // As `is_workflow`, with the action looked up once.
        let workflow =
            e.workflow.is_some() || action.is_some_and(|a| a.meta.runner_type.is_workflow());
        ExecutionOut {
            id: &e.id,
            action: ActionRef {
                reference: &e.action,
                runner_type: match action {
                    Some(a) => a.meta.runner_type.st2_name(),
                    None if workflow => "orquesta",
                    None => "rhai",
                },
            },
            parameters: Masked {
                meta: action.map(|a| &a.meta),
                params: &e.parameters,
            },
            status: e.status,
            result: &e.result,
            log: &e.log,
            start_timestamp: &e.start_timestamp,
            end_timestamp: &e.end_timestamp,
            elapsed_seconds: e.elapsed_seconds(),
            parent: &e.parent,
            rule: e.rule.as_deref().map(|r| Ref { reference: r }),
            trigger_instance: e.trigger_instance.as_deref().map(|id| IdOf { id }),
            context: Context {
                user: &e.user,
                parent: e.parent.as_deref().map(|id| ParentOf { execution_id: id }),
                orquesta: e
                    .task
                    .as_deref()
                    .filter(|_| e.parent.is_some())
                    .map(|task| TaskOf { task_name: task }),
                chat: e.chat.as_ref(),
                worker: e.worker.as_deref(),
                queue: e.queue.as_deref(),
            },
            attempt: e.attempt,
            reason: &e.reason,
            rerun_of: &e.rerun_of,
            task: &e.task,
            item: &e.item,
        }
    }
}
