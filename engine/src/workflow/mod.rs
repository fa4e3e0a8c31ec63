//! Workflows: Orquesta's language and st2's older ActionChain format ([`chain`], read into the
//! same model), the model and loader ([`model`]), the expressions, Jinja and YAQL, with
//! Orquesta's functions ([`expr`]) and the conductor that runs a workflow as a deterministic,
//! serialisable state machine ([`conductor`]).
//!
//! Pure logic: this folder must never do I/O, use tokio or touch the store. The engine runs the
//! action executions the conductor asks for and persists the conductor between steps.

pub mod chain;
pub mod conductor;
pub mod expr;
pub mod model;

pub use conductor::{Conductor, Error, OutcomeStatus, TaskOutcome, TaskRequest, WorkflowStatus};
pub use model::{Dialect, Join, Retry, Task, Transition, WithItems, Workflow};
