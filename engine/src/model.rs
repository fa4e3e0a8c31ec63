//! The records squall keeps: trigger instances, rule enforcements, executions, key-value pairs
//! and API keys, in the shapes the API shows (st2's field names) and the store persists.
//!
//! Every persisted record carries a schema version (`v`). Types here are data only: no I/O, no
//! policy beyond what a status means.

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};
use squall_actions::LogLine;

/// The schema version written into every record.
pub const SCHEMA_VERSION: u32 = 1;

/// A new time-ordered id (ULID text: sorts by creation time, strictly increasing within this
/// process even inside one millisecond).
/// A webhook's name as squall matches it: its url without leading or trailing slashes, as st2
/// does, so `/deploy`, `deploy/` and `deploy` are one hook (for rules, signature checks and the
/// requests that reach it).
pub fn hook_name(url: &str) -> &str {
    url.trim_matches('/')
}

pub fn new_id() -> String {
    static GENERATOR: std::sync::Mutex<Option<ulid::Generator>> = std::sync::Mutex::new(None);
    let mut guard = match GENERATOR.lock() {
        Ok(g) => g,
        Err(p) => p.into_inner(),
    };
    let generator = guard.get_or_insert_with(ulid::Generator::new);
    // Overflow needs 2^80 ids in one millisecond; fall back to a random one if it ever happens.
    generator
        .generate()
        .unwrap_or_else(|_| ulid::Ulid::new())
        .to_string()
}

/// Where a trigger instance is in the rules loop (st2's names).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum TriggerInstanceStatus {
    Pending,
    Processing,
    Processed,
    ProcessingFailed,
}

/// Something that happened, as a sensor, a webhook, a timer or squall itself reported it.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct TriggerInstance {
    pub v: u32,
    pub id: String,
    /// The trigger type's reference (canonical name, e.g. `core.webhook`).
    pub trigger: String,
    /// Parameters of the trigger that fired (a webhook's `url`, a timer's settings).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub trigger_parameters: Option<Value>,
    pub payload: Value,
    #[serde(serialize_with = "crate::timestamp::serialize")]
    pub occurrence_time: DateTime<Utc>,
    #[serde(serialize_with = "crate::timestamp::serialize")]
    pub received_time: DateTime<Utc>,
    /// Who produced it: `webhook/<url>`, `timer/<rule>`, `api`, `squall`...
    pub source: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub trace_tag: Option<String>,
    pub status: TriggerInstanceStatus,
    /// Where it was sensed, for an instance from a sensor host (`{"host", "sensor"}`): rules'
    /// action queues see it as `trigger.context` (the payload itself is the source's).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub context: Option<Value>,
}

/// A trigger instance as stored, with another status, serialized without copying it: the same
/// fields and names as [`TriggerInstance`]'s own serialization.
#[derive(Serialize)]
pub struct TriggerInstanceAs<'a> {
    v: u32,
    id: &'a str,
    trigger: &'a str,
    #[serde(skip_serializing_if = "is_none")]
    trigger_parameters: &'a Option<Value>,
    payload: &'a Value,
    #[serde(serialize_with = "crate::timestamp::serialize")]
    occurrence_time: &'a DateTime<Utc>,
    #[serde(serialize_with = "crate::timestamp::serialize")]
    received_time: &'a DateTime<Utc>,
    source: &'a str,
    #[serde(skip_serializing_if = "is_none")]
    trace_tag: &'a Option<String>,
    status: TriggerInstanceStatus,
    #[serde(skip_serializing_if = "is_none")]
    context: &'a Option<Value>,
}

fn is_none<T>(o: &&Option<T>) -> bool {
    o.is_none()
}

/// What an instance without trigger parameters shows the rules: known to have none.
static NO_TRIGGER_PARAMETERS: Value = Value::Null;

impl TriggerInstance {
    /// This instance as the rules see it. Its trigger parameters are always known here (the
    /// offline rule tester's "not given, not checked" is for instance files): one without any,
    /// such as `core.st2.webhook` posted to st2's generic webhook, matches no rule that names
    /// parameters (a webhook's url, a timer's schedule).
    pub fn rule_view(&self) -> squall_rules::TriggerInstanceView<'_> {
        squall_rules::TriggerInstanceView {
            trigger: &self.trigger,
            payload: &self.payload,
            trigger_parameters: Some(
                self.trigger_parameters
                    .as_ref()
                    .unwrap_or(&NO_TRIGGER_PARAMETERS),
            ),
        }
    }

    /// This instance as it would be stored with `status`.
    pub fn with_status(&self, status: TriggerInstanceStatus) -> TriggerInstanceAs<'_> {
        // Every field named, so a field added to the instance cannot be left out here.
        let TriggerInstance {
            v,
            id,
            trigger,
            trigger_parameters,
            payload,
            occurrence_time,
            received_time,
            source,
            trace_tag,
            status: _,
            context,
        } = self;
        TriggerInstanceAs {
            v: *v,
            id,
            trigger,
            trigger_parameters,
            payload,
            occurrence_time,
            received_time,
            source,
            trace_tag,
            status,
            context,
        }
    }

    pub fn new(
        trigger: &str,
        trigger_parameters: Option<Value>,
        payload: Value,
        source: &str,
    ) -> Self {
        let now = Utc::now();
        TriggerInstance {
            v: SCHEMA_VERSION,
            id: new_id(),
            trigger: squall_rules::canonical_trigger_ref(trigger).to_string(),
            trigger_parameters,
            payload,
            occurrence_time: now,
            received_time: now,
            source: source.to_string(),
            trace_tag: None,
            status: TriggerInstanceStatus::Pending,
            context: None,
        }
    }
}

/// st2's execution statuses.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ExecutionStatus {
    Requested,
    Scheduled,
    Delayed,
    Running,
    Pending,
    Pausing,
    Paused,
    Resuming,
    Canceling,
    Canceled,
    Succeeded,
    Failed,
    Timeout,
    Abandoned,
}

impl ExecutionStatus {
    pub const ALL: [ExecutionStatus; 14] = [
        ExecutionStatus::Requested,
        ExecutionStatus::Scheduled,
        ExecutionStatus::Delayed,
        ExecutionStatus::Running,
        ExecutionStatus::Pending,
        ExecutionStatus::Pausing,
        ExecutionStatus::Paused,
        ExecutionStatus::Resuming,
        ExecutionStatus::Canceling,
        ExecutionStatus::Canceled,
        ExecutionStatus::Succeeded,
        ExecutionStatus::Failed,
        ExecutionStatus::Timeout,
        ExecutionStatus::Abandoned,
    ];

    /// Succeeded, failed, timeout, canceled and abandoned are final.
    pub fn is_terminal(self) -> bool {
        matches!(
            self,
            ExecutionStatus::Succeeded
                | ExecutionStatus::Failed
                | ExecutionStatus::Timeout
                | ExecutionStatus::Canceled
                | ExecutionStatus::Abandoned
        )
    }

    pub fn as_str(self) -> &'static str {
        match self {
            ExecutionStatus::Requested => "requested",
            ExecutionStatus::Scheduled => "scheduled",
            ExecutionStatus::Delayed => "delayed",
            ExecutionStatus::Running => "running",
            ExecutionStatus::Pending => "pending",
            ExecutionStatus::Pausing => "pausing",
            ExecutionStatus::Paused => "paused",
            ExecutionStatus::Resuming => "resuming",
            ExecutionStatus::Canceling => "canceling",
            ExecutionStatus::Canceled => "canceled",
            ExecutionStatus::Succeeded => "succeeded",
            ExecutionStatus::Failed => "failed",
            ExecutionStatus::Timeout => "timeout",
            ExecutionStatus::Abandoned => "abandoned",
        }
    }

    pub fn parse(s: &str) -> Option<ExecutionStatus> {
        ExecutionStatus::ALL.into_iter().find(|x| x.as_str() == s)
    }
}

/// A run of an action.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Execution {
    pub v: u32,
    pub id: String,
    pub action: String,
    /// Parameters as validated and cast (secrets in clear: masked when shown).
    pub parameters: Map<String, Value>,
    pub status: ExecutionStatus,
    #[serde(default)]
    pub result: Value,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub log: Vec<LogLine>,
    #[serde(serialize_with = "crate::timestamp::serialize")]
    pub start_timestamp: DateTime<Utc>,
    #[serde(
        default,
        skip_serializing_if = "Option::is_none",
        serialize_with = "crate::timestamp::serialize_opt"
    )]
    pub end_timestamp: Option<DateTime<Utc>>,
    /// 1 for the first run; retries (policy `action.retry`) count up.
    #[serde(default = "one")]
    pub attempt: u32,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub parent: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rule: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub trigger_instance: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub user: Option<String>,
    /// Why an execution ended as it did when the result does not say (abandoned, canceled).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
    /// The execution this one re-runs or retries.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rerun_of: Option<String>,
    /// Whether it may run again after a crash (from the action's metadata at request time).
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub idempotent: bool,
    /// For a workflow's task: the task's name and, under with-items, the item's index.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub task: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub item: Option<usize>,
    /// For a workflow execution: the conductor's state, saved after every step.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub workflow: Option<Value>,
    /// A retry waits until then (its policy's `delay`), after a restart too.
    #[serde(
        default,
        skip_serializing_if = "Option::is_none",
        serialize_with = "crate::timestamp::serialize_opt"
    )]
    pub not_before: Option<DateTime<Utc>>,
    /// For an execution a ChatOps command requested (st2's alias execution): the alias, the
    /// chat user and the channel, shown in its `context` as st2 shows them.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub chat: Option<ChatOrigin>,
    /// st2's `notify` given with the request (an alias execution's answer to its chat); when
    /// `None`, the action's own `notify`, if any, applies.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub notify: Option<squall_actions::Notify>,
    /// For an execution run by a remote worker (`squall run --amqp`): the claim its worker
    /// made for this run (a new one for each delivery of its work item), and the worker's name.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub claim: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub worker: Option<String>,
    /// With remote workers: the named queue it goes to (`None`: the shared one).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub queue: Option<String>,
}

/// Where a ChatOps command that requested an execution came from.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ChatOrigin {
    pub action_alias_ref: String,
    /// The chat user who typed the command (st2's `api_user`).
    pub api_user: Option<String>,
    pub source_channel: Option<String>,
    /// The chat it came from, when squall's own (`slack`, `mattermost`); `None` through the API.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub source: Option<String>,
    /// Where the answer goes: st2's `source_context` (hubot's message context, or squall's own
    /// reply address: platform, channel, thread, response url).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub source_context: Option<Value>,
}

fn one() -> u32 {
    1
}

impl Execution {
    pub fn new(action: &str, parameters: Map<String, Value>) -> Self {
        Execution {
            v: SCHEMA_VERSION,
            id: new_id(),
            action: action.to_string(),
            parameters,
            status: ExecutionStatus::Requested,
            result: Value::Null,
            log: Vec::new(),
            start_timestamp: Utc::now(),
            end_timestamp: None,
            attempt: 1,
            parent: None,
            rule: None,
            trigger_instance: None,
            user: None,
            reason: None,
            rerun_of: None,
            idempotent: false,
            task: None,
            item: None,
            workflow: None,
            not_before: None,
            chat: None,
            notify: None,
            claim: None,
            worker: None,
            queue: None,
        }
    }

    pub fn elapsed_seconds(&self) -> Option<f64> {
        self.end_timestamp
            .map(|end| (end - self.start_timestamp).num_microseconds().unwrap_or(0) as f64 / 1e6)
    }
}

/// One rule matching one trigger instance: what it requested, or why that failed.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct RuleEnforcement {
    pub v: u32,
    pub id: String,
    pub rule_ref: String,
    pub trigger_instance_id: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub execution_id: Option<String>,
    #[serde(serialize_with = "crate::timestamp::serialize")]
    pub enforced_at: DateTime<Utc>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub failure_reason: Option<String>,
}

/// A key-value pair (st2: values are strings).
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct KeyValuePair {
    pub v: u32,
    pub name: String,
    /// Clear text, or ciphertext (base64) when `secret`.
    pub value: String,
    #[serde(default)]
    pub secret: bool,
    #[serde(default)]
    pub expire_timestamp: Option<DateTime<Utc>>,
    pub updated_at: DateTime<Utc>,
    /// The execution whose script claimed the pair with `kv::claim`, so that the same
    /// execution run again after a crash finds its own claim (see `store/kv.rs`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub claimed_by: Option<String>,
}

/// An API key as stored: only its hash.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ApiKey {
    pub v: u32,
    pub id: String,
    /// SHA-256 of the key, hex.
    pub key_hash: String,
    pub user: String,
    pub created_at: DateTime<Utc>,
    #[serde(default)]
    pub enabled: bool,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_instance_with_another_status_serializes_as_a_copy_would() {
        let mut ti = TriggerInstance::new(
            "core.webhook",
            Some(serde_json::json!({"url": "x"})),
            serde_json::json!({"body": {"n": 1}}),
            "test",
        );
        for trace in [None, Some("t-1".to_string())] {
            ti.trace_tag = trace;
            let mut copy = ti.clone();
            copy.status = TriggerInstanceStatus::Processed;
            assert_eq!(
                serde_json::to_string(&ti.with_status(TriggerInstanceStatus::Processed)).unwrap(),
                serde_json::to_string(&copy).unwrap()
            );
        }
        ti.trigger_parameters = None;
        let mut copy = ti.clone();
        copy.status = TriggerInstanceStatus::ProcessingFailed;
        assert_eq!(
            serde_json::to_string(&ti.with_status(TriggerInstanceStatus::ProcessingFailed))
                .unwrap(),
            serde_json::to_string(&copy).unwrap()
        );
    }
}
