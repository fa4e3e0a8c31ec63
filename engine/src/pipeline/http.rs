//! Running an action of st2's `http-request` runner (`core.http`): its parameters turned into
//! an [`HttpPlan`] on the server, the plan's one request made (`squall_actions::runners::http`)
//! here or on a remote worker, its outcome into a final status. Nothing here decides what is
//! requested beyond what the parameters say.

use std::sync::Arc;

use serde::{Deserialize, Serialize};
use serde_json::{json, Value};
use squall_actions::runners::http::{run_http, HttpOutcome, HttpRequest};
use squall_actions::{CancelToken, LogLine};

use super::{Engine, WorkItem};
use crate::model::{Execution, ExecutionStatus};

/// What an `http-request` action does, everything decided: a remote worker gets it whole, and
/// needs neither the pack nor the action's metadata.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct HttpPlan {
    pub request: HttpRequest,
}

/// The plan for an `http-request` action's work item, or why it cannot run. The execution's
/// own timeout, when it has one, bounds the request's.
pub(crate) fn http_plan(item: &WorkItem) -> Result<HttpPlan, String> {
    HttpRequest::from_parameters(&item.action, &item.parameters, item.timeout)
        .map(|request| HttpPlan { request })
}

impl HttpPlan {
    /// Makes the request on this thread; a cancel ends it at once.
    pub fn run(self, cancel: &CancelToken) -> (ExecutionStatus, Value, Vec<LogLine>) {
        let (status, result) = match run_http(&self.request, cancel) {
            HttpOutcome::Succeeded(r) => (ExecutionStatus::Succeeded, r),
            HttpOutcome::Failed(r) => (ExecutionStatus::Failed, r),
            HttpOutcome::Timeout(r) => (ExecutionStatus::Timeout, r),
            HttpOutcome::Canceled(r) => (ExecutionStatus::Canceled, r),
        };
        (status, result, Vec::new())
    }
}

impl Engine {
    pub(super) fn execute_http(
        &self,
        item: WorkItem,
        _e: &Arc<Execution>,
        cancel: &CancelToken,
    ) -> (ExecutionStatus, Value, Vec<LogLine>) {
        match http_plan(&item) {
            Ok(plan) => plan.run(cancel),
            Err(why) => (
                ExecutionStatus::Failed,
                json!({ "error": format!("action '{}': {why}", item.action) }),
                Vec::new(),
            ),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::Map;
    use squall_actions::RunnerType;
    use std::time::Duration;

    fn item(parameters: Value, timeout: Option<Duration>) -> WorkItem {
        let Value::Object(parameters) = parameters else {
            panic!("parameters are an object");
        };
        WorkItem {
            execution_id: "e1".into(),
            action: "ops.notify".into(),
            runner: RunnerType::HttpRequest,
            source: None,
            parameters,
            ctx: json!({}),
            timeout,
            config_error: None,
            queue: None,
        }
    }

    #[test]
    fn a_plan_survives_the_trip_to_a_worker_and_keeps_the_executions_bound() {
        let plan = http_plan(&item(
            json!({"url": "http://127.0.0.1:9/hook", "body": "hi", "timeout": 60, "password": "s", "username": "u"}),
            Some(Duration::from_secs(5)),
        ))
        .expect("a plan");
        assert_eq!(plan.request.timeout_ms, 5_000);
        assert_eq!(plan.request.method, "POST");
        let name = plan
            .request
            .headers
            .iter()
            .find(|(n, _)| n == "X-Stanley-Action")
            .map(|(_, v)| v.as_str());
        assert_eq!(name, Some("notify"));
        let wire = serde_json::to_string(&plan).expect("serializes");
        let back: HttpPlan = serde_json::from_str(&wire).expect("deserializes");
        assert_eq!(back.request, plan.request);
    }

    #[test]
    fn a_plan_that_cannot_be_made_names_the_parameter() {
        let why = http_plan(&item(
            json!({"url": "http://127.0.0.1/", "file_path": "/etc/hosts"}),
            None,
        ))
        .expect_err("refused");
        assert!(why.contains("`file_path`"), "{why}");
        let mut params = Map::new();
        params.insert("url".into(), json!(""));
        let why = HttpRequest::from_parameters("core.http", &params, None).expect_err("refused");
        assert!(why.contains("`url`"), "{why}");
    }
}
