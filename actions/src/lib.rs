//! squall-actions: what an action is and how it runs.
//!
//! Three parts, used by the engine and the CLI:
//! - [`meta`]: st2-shaped action metadata YAML, parsed with every problem reported at once;
//! - [`params`]: parameter validation and st2-style casting of rendered values;
//! - [`runtime`]: the sandboxed Rhai runtime (limits, timeout, cancellation, host modules);
//!   [`with_stubs`] answers a run's `http` and `docker` calls from declared responses instead,
//!   for `squall pack test`.
//!
//! This crate never imports `engine`, `rules` or `sensors`, never runs a script on tokio (the
//! `docker` host module alone keeps a private runtime for bollard's calls), and gives scripts no
//! file system and no processes.

pub mod error;
mod host;
pub mod kv;
pub mod meta;
pub mod params;
pub mod pyliteral;
pub mod runners;
pub mod runtime;
pub mod schema;

pub use error::{ActionError, ParamError, ScriptError, SourceProblem};
pub use host::stubs::{
    with_stubs, DockerStub, HttpStub, StubCall, StubReport, Stubs, DOCKER_CALLS,
};
pub use kv::{KvStore, MemoryKv};
pub use meta::{
    ActionMeta, ItemsSpec, Notify, NotifySubSection, ParamSpec, ParamType, RunnerType, Tag,
};
pub use params::{mask_secrets, parse_cli_value, validate_params, SECRET_MASK};
pub use runtime::{
    CancelToken, Limits, LogLevel, LogLine, LogSink, Outcome, RhaiRuntime, ScriptJob, ScriptReport,
    SCRIPT_THREAD_STACK_SIZE,
};
