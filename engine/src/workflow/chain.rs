//! st2's ActionChain format (the `action-chain` runner), read into the workflow model.

use squall_rules::SourceProblem;

use super::model::Workflow;

/// Parses an ActionChain file.
pub fn parse(_text: &str) -> Result<Workflow, Vec<SourceProblem>> {
    Err(vec![SourceProblem {
        line: None,
        column: None,
        message: "the action-chain runner cannot read this file".to_string(),
    }])
}
