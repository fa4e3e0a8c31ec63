//! squall-engine: the runtime that wires squall's parts together: pack loading, the store, the
//! rules loop, the scheduler and worker pool, timers, the HTTP API and `squall run`'s server.
//!
//! The only crate that imports `rules`, `actions` and `sensors` together; shared vocabulary is
//! re-exported from here.

pub mod alerts;
pub mod amqp;
pub mod api;
pub mod capacity;
pub mod chatops;
pub mod console;
pub mod exec;
pub mod journal;
pub mod metrics;
pub mod model;
pub mod pack_install;
pub mod packs;
pub mod pipeline;
pub mod policies;
pub mod runners_allowed;
pub mod sensing;
pub mod server;
pub mod signatures;
pub mod store;
pub mod timers;
pub mod timestamp;
pub mod workflow;

pub use exec::{run_action, ExecError, FinalStatus, RunContext, RunRecord};
pub use packs::{
    load_packs, load_packs_with_configs, Catalog, LoadedAction, LoadedAlias, LoadedRule, Pack,
    PackMeta, Problem,
};
pub use squall_actions as actions;
pub use squall_rules as rules;
