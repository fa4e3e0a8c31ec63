//! The crate's error types: what went wrong in a metadata file, a parameter set or a script,
//! with the context (line, parameter name) a user needs to fix it.
//!
//! Only types here; this file must never decide policy (what is an error is decided in
//! `meta`, `params` and `runtime`).

use std::fmt;

/// One problem found in a YAML source, with its position when it is known.
///
/// Lines and columns are 1-based, as editors show them.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SourceProblem {
    pub line: Option<usize>,
    pub column: Option<usize>,
    pub message: String,
}

impl SourceProblem {
    pub(crate) fn at(line: Option<usize>, message: impl Into<String>) -> Self {
        SourceProblem {
            line,
            column: None,
            message: message.into(),
        }
    }
}

impl fmt::Display for SourceProblem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match (self.line, self.column) {
            (Some(line), Some(column)) => {
                write!(f, "line {line}, column {column}: {}", self.message)
            }
            (Some(line), None) => write!(f, "line {line}: {}", self.message),
            _ => f.write_str(&self.message),
        }
    }
}

impl std::error::Error for SourceProblem {}

/// One parameter that does not fit the action's declaration.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("parameter '{parameter}': {message}")]
pub struct ParamError {
    pub parameter: String,
    pub message: String,
}

impl ParamError {
    pub(crate) fn new(parameter: &str, message: impl Into<String>) -> Self {
        ParamError {
            parameter: parameter.to_string(),
            message: message.into(),
        }
    }
}

/// A script that does not compile, with the position of the problem.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub struct ScriptError {
    pub line: Option<usize>,
    pub column: Option<usize>,
    pub message: String,
}

impl fmt::Display for ScriptError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match (self.line, self.column) {
            (Some(line), Some(column)) => {
                write!(f, "line {line}, column {column}: {}", self.message)
            }
            (Some(line), None) => write!(f, "line {line}: {}", self.message),
            _ => f.write_str(&self.message),
        }
    }
}

/// The crate's error, for callers that want one type for everything an action can reject.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ActionError {
    /// The metadata YAML of an action is malformed; every problem found is listed.
    #[error("invalid action metadata{}: {}", file_suffix(.file), join(.problems))]
    InvalidMetadata {
        /// Where the metadata came from (a file path), when the caller knows it.
        file: Option<String>,
        problems: Vec<SourceProblem>,
    },
    /// The parameters given to an action do not fit its declaration.
    #[error("invalid parameters for action '{action}': {}", join(.errors))]
    InvalidParameters {
        action: String,
        errors: Vec<ParamError>,
    },
    /// A script does not compile.
    #[error("script '{script}' does not compile: {error}")]
    InvalidScript { script: String, error: ScriptError },
}

fn file_suffix(file: &Option<String>) -> String {
    file.as_ref()
        .map(|s| format!(" in {s}"))
        .unwrap_or_default()
}

fn join<T: fmt::Display>(items: &[T]) -> String {
    items
        .iter()
        .map(ToString::to_string)
        .collect::<Vec<_>>()
        .join("; ")
}
