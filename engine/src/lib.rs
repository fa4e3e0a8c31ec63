//! squall-engine: the runtime that wires squall's parts together. Today: loading packs from
//! disk with every problem located, and running actions; the store, bus, rules loop, worker pool
//! and HTTP API build on these.
//!
//! The only crate that imports `rules`, `actions` and `sensors` together; shared vocabulary is
//! re-exported from here.

pub mod exec;
pub mod packs;

pub use exec::{run_action, ExecError, FinalStatus, RunContext, RunRecord};
pub use packs::{load_packs, Catalog, LoadedAction, LoadedRule, Pack, PackMeta, Problem};
pub use squall_actions as actions;
pub use squall_rules as rules;
