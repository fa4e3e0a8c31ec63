//! Running an action of st2's `http-request` runner.

use std::sync::Arc;

use serde_json::{json, Value};
use squall_actions::{CancelToken, LogLine};

use super::{Engine, WorkItem};
use crate::model::{Execution, ExecutionStatus};

impl Engine {
    pub(super) fn execute_http(
        &self,
        item: WorkItem,
        _e: &Arc<Execution>,
        _cancel: &CancelToken,
    ) -> (ExecutionStatus, Value, Vec<LogLine>) {
        (
            ExecutionStatus::Failed,
            json!({"error": format!("action '{}': the http-request runner is not available", item.action)}),
            Vec::<LogLine>::new(),
        )
    }
}
