//! Workflows in Orquesta's language: the model and loader ([`model`]), the Jinja expressions
//! with Orquesta's functions ([`expr`]) and the conductor that runs a workflow as a
//! deterministic, serialisable state machine ([`conductor`]).
//!
//! Pure logic: this folder must never do I/O, use tokio or touch the store. The engine runs the
//! action executions the conductor asks for and persists the conductor between steps.

pub mod chain;
pub mod conductor;
pub mod expr;
pub mod model;

pub use conductor::{Conductor, Error, OutcomeStatus, TaskOutcome, TaskRequest, WorkflowStatus};
pub use model::{Join, Retry, Task, Transition, WithItems, Workflow};
