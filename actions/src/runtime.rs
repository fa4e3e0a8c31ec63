//! The Rhai runtime: runs an action's script with its parameters and context, inside a sandbox
//! with limits, a wall-clock timeout and cancellation, and reports the outcome and log lines.
//!
//! Design: one [`RhaiRuntime`] is shared by all worker threads. It holds the compiled-script
//! cache (ASTs are `Send + Sync` with rhai's `sync` feature). Each worker thread builds one
//! `rhai::Engine` the first time it runs a script and keeps it; the engine's callbacks reach
//! the current run's state (log, deadline, cancel token, key-value store) through a
//! thread-local that is installed for exactly one run (see `host`).
//!
//! Log lines: `print(x)` logs `x` as text, `debug(x)` logs rhai's debug form of `x` (strings
//! quoted), `log::info/warn/error(x)` log `x` as text (maps and arrays as JSON). A run keeps at
//! most 10,000 lines and says how many more it dropped.
//!
//! What a script must never do: read or write files, start processes, import modules, call
//! `eval`, run past its timeout or its cancellation, or take the worker thread down. `run`
//! blocks and must be called on a worker thread, never on an async runtime's thread.

use std::cell::RefCell;
use std::collections::HashMap;
use std::panic::{self, AssertUnwindSafe};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, RwLock};
use std::time::{Duration, Instant};

use rhai::module_resolvers::DummyModuleResolver;
use rhai::{Dynamic, Engine, EvalAltResult, ParseError, Position, Scope, AST};
use serde::Serialize;
use serde_json::Value;

use crate::error::ScriptError;
use crate::host::{self, convert, RunGuard, RunState, Stop, MAX_LOG_LINES};
pub use crate::kv::{KvStore, MemoryKv};

/// The native stack a thread needs to run scripts at the default [`Limits`].
///
/// Rhai walks the AST recursively. A script that nests calls and expressions as deep as the
/// default limits allow needs between 8 and 16 MiB in an unoptimized build, far more than the
/// 2 MiB of a default Rust or tokio blocking thread; running out aborts the whole process.
/// Threads that call [`RhaiRuntime::run`] must be spawned with at least this much
/// (`std::thread::Builder::stack_size`); it is address space, touched only as used.
pub const SCRIPT_THREAD_STACK_SIZE: usize = 32 * 1024 * 1024;

/// How many operations run between two looks at the clock and the cancel token: often enough
/// to stop a runaway loop within a millisecond or so, rare enough to cost nothing measurable.
const CHECK_EVERY: u64 = 1024;

/// The sandbox's limits. The defaults suit ops scripts: generous, but a runaway script ends.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Limits {
    /// Operations per run (0 = unlimited).
    pub max_operations: u64,
    /// Nested function calls.
    pub max_call_levels: usize,
    /// Bytes in one string.
    pub max_string_size: usize,
    /// Items in one array.
    pub max_array_size: usize,
    /// Entries in one map.
    pub max_map_size: usize,
    /// Nesting of expressions, checked when a script compiles.
    pub max_expr_depth: usize,
    /// The wall-clock timeout of a run whose job does not set one.
    pub default_timeout: Duration,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            max_operations: 500_000_000,
            max_call_levels: 64,
            max_string_size: 8 * 1024 * 1024,
            max_array_size: 1_000_000,
            max_map_size: 1_000_000,
            max_expr_depth: 64,
            default_timeout: Duration::from_secs(600),
        }
    }
}

/// Cancels a run from another thread; the script ends as [`Outcome::Canceled`].
#[derive(Debug, Clone, Default)]
pub struct CancelToken(Arc<AtomicBool>);

impl CancelToken {
    pub fn new() -> Self {
        CancelToken::default()
    }

    pub fn cancel(&self) {
        self.0.store(true, Ordering::Relaxed);
    }

    pub fn is_canceled(&self) -> bool {
        self.0.load(Ordering::Relaxed)
    }
}

/// The level of a log line: `print` gives `print`, `debug` gives `debug`, `log::x` gives `x`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum LogLevel {
    Print,
    Debug,
    Info,
    Warn,
    Error,
}

/// One line a script logged.
#[derive(Debug, Clone, PartialEq, Serialize, serde::Deserialize)]
pub struct LogLine {
    #[serde(serialize_with = "rfc3339")]
    pub timestamp: chrono::DateTime<chrono::Utc>,
    pub level: LogLevel,
    pub message: String,
}

fn rfc3339<S: serde::Serializer>(
    timestamp: &chrono::DateTime<chrono::Utc>,
    serializer: S,
) -> Result<S::Ok, S::Error> {
    serializer.serialize_str(&timestamp.to_rfc3339_opts(chrono::SecondsFormat::AutoSi, true))
}

/// Receives each log line of a run as it happens.
pub type LogSink = Arc<dyn Fn(&LogLine) + Send + Sync>;

/// One script to run.
pub struct ScriptJob {
    /// Names the script in the compiled-script cache (e.g. `pack.action`).
    pub script_key: String,
    pub source: Arc<str>,
    /// The validated parameters; the script sees them as `params`.
    pub params: serde_json::Map<String, Value>,
    /// Execution id, trigger, user...; the script sees it as `ctx`.
    pub ctx: Value,
    /// The wall-clock limit; [`Limits::default_timeout`] when `None`.
    pub timeout: Option<Duration>,
    pub cancel: CancelToken,
    pub kv: Arc<dyn KvStore>,
    /// Called with each log line as it happens, for live tails.
    pub on_log: Option<LogSink>,
}

/// How a run ended.
#[derive(Debug, Clone, PartialEq)]
pub enum Outcome {
    /// The script's last value, as JSON (`()` is null).
    Succeeded(Value),
    /// A thrown value, a runtime error, a limit or a syntax error, with its position.
    Failed {
        message: String,
        line: Option<usize>,
        column: Option<usize>,
    },
    /// The wall-clock limit passed; `after` is that limit.
    Timeout {
        after: Duration,
    },
    Canceled,
}

/// What a run produced.
#[derive(Debug, Clone, PartialEq)]
pub struct ScriptReport {
    pub outcome: Outcome,
    pub log: Vec<LogLine>,
    pub elapsed: Duration,
}

struct CachedScript {
    source: Arc<str>,
    ast: Arc<AST>,
}

/// Runs Rhai scripts. Shared by all worker threads.
pub struct RhaiRuntime {
    limits: Limits,
    cache: RwLock<HashMap<String, CachedScript>>,
    compilations: AtomicU64,
}

struct WorkerEngine {
    limits: Limits,
    engine: Engine,
}

thread_local! {
    static ENGINE: RefCell<Option<WorkerEngine>> = const { RefCell::new(None) };
}

impl RhaiRuntime {
    pub fn new(limits: Limits) -> Self {
        RhaiRuntime {
            limits,
            cache: RwLock::new(HashMap::new()),
            compilations: AtomicU64::new(0),
        }
    }

    pub fn limits(&self) -> &Limits {
        &self.limits
    }

    /// Checks that a script compiles (for pack validation); never runs it.
    pub fn check_syntax(&self, source: &str) -> Result<(), ScriptError> {
        with_engine(&self.limits, |engine| engine.compile(source).map(drop))
            .map_err(|e| syntax_error(&e))
    }

    /// How many scripts the cache holds.
    pub fn cached_scripts(&self) -> usize {
        self.read_cache().len()
    }

    /// How many times a script was compiled since this runtime was created.
    pub fn compilations(&self) -> u64 {
        self.compilations.load(Ordering::Relaxed)
    }

    /// Drops a script from the cache (when its pack is unloaded).
    pub fn forget_script(&self, script_key: &str) {
        self.write_cache().remove(script_key);
    }

    /// Runs a script to its end, its timeout or its cancellation. Blocks the calling thread.
    pub fn run(&self, job: ScriptJob) -> ScriptReport {
        let started = Instant::now();
        let ScriptJob {
            script_key,
            source,
            params,
            ctx,
            timeout,
            cancel,
            kv,
            on_log,
        } = job;
        let limit = timeout.unwrap_or(self.limits.default_timeout);
        if cancel.is_canceled() {
            return ScriptReport {
                outcome: Outcome::Canceled,
                log: Vec::new(),
                elapsed: started.elapsed(),
            };
        }
        // A limit too large for the clock means "no limit" in practice.
        let deadline = started
            .checked_add(limit)
            .or_else(|| started.checked_add(Duration::from_secs(100 * 365 * 24 * 3600)))
            .unwrap_or(started);
        let guard = RunGuard::install(RunState {
            deadline,
            cancel,
            kv,
            on_log,
            log: Vec::new(),
            stop: None,
            max_string_size: self.limits.max_string_size,
            max_array_size: self.limits.max_array_size,
            max_map_size: self.limits.max_map_size,
            dropped_lines: 0,
        });
        let result = panic::catch_unwind(AssertUnwindSafe(|| {
            self.execute(&script_key, &source, &params, &ctx)
        }));
        let state = guard.finish();
        let (mut log, stop, dropped) = state
            .map(|s| (s.log, s.stop, s.dropped_lines))
            .unwrap_or_default();
        if dropped > 0 {
            log.push(LogLine {
                timestamp: chrono::Utc::now(),
                level: LogLevel::Warn,
                message: format!(
                    "{dropped} further log lines were dropped: a run keeps at most {MAX_LOG_LINES}"
                ),
            });
        }
        let outcome = match (result, stop) {
            (Ok(Ok(value)), _) => match crate::params::nesting(&value) {
                // It could be stored but not read back.
                depth if depth > crate::params::MAX_VALUE_NESTING => Outcome::Failed {
                    message: format!(
                        "the script's result nests {depth} levels deep: at most {} can be kept",
                        crate::params::MAX_VALUE_NESTING
                    ),
                    line: None,
                    column: None,
                },
                _ => Outcome::Succeeded(value),
            },
            (Ok(Err(_)), Some(Stop::Timeout)) => Outcome::Timeout { after: limit },
            (Ok(Err(_)), Some(Stop::Canceled)) => Outcome::Canceled,
            (Ok(Err(failed)), None) => failed,
            (Err(panic), _) => {
                // The engine may be in any state after a panic; the next run builds a new one.
                ENGINE.with(|cell| {
                    if let Ok(mut slot) = cell.try_borrow_mut() {
                        slot.take();
                    }
                });
                Outcome::Failed {
                    message: format!(
                        "internal error: the script runtime panicked: {}",
                        panic_message(panic.as_ref())
                    ),
                    line: None,
                    column: None,
                }
            }
        };
        ScriptReport {
            outcome,
            log,
            elapsed: started.elapsed(),
        }
    }

    fn execute(
        &self,
        script_key: &str,
        source: &Arc<str>,
        params: &serde_json::Map<String, Value>,
        ctx: &Value,
    ) -> Result<Value, Outcome> {
        with_engine(&self.limits, |engine| {
            let ast = self.compiled(engine, script_key, source)?;
            let mut scope = Scope::new();
            scope.push_dynamic("params", Dynamic::from_map(convert::object_to_map(params)));
            scope.push_dynamic("ctx", convert::to_dynamic(ctx));
            let value = engine
                .eval_ast_with_scope::<Dynamic>(&mut scope, &ast)
                .map_err(|e| self.failure(&e))?;
            convert::to_json(&value).map_err(|e| Outcome::Failed {
                message: format!("the script's result cannot be returned: {e}"),
                line: None,
                column: None,
            })
        })
    }

    fn compiled(
        &self,
        engine: &Engine,
        script_key: &str,
        source: &Arc<str>,
    ) -> Result<Arc<AST>, Outcome> {
        // Comparing the text (pointer first) is exact and costs no more than hashing it would.
        if let Some(cached) = self.read_cache().get(script_key) {
            if Arc::ptr_eq(&cached.source, source) || *cached.source == **source {
                return Ok(Arc::clone(&cached.ast));
            }
        }
        let ast = engine.compile(&**source).map_err(|e| {
            let error = syntax_error(&e);
            Outcome::Failed {
                message: format!("syntax error: {}", error.message),
                line: error.line,
                column: error.column,
            }
        })?;
        self.compilations.fetch_add(1, Ordering::Relaxed);
        let ast = Arc::new(ast);
        self.write_cache().insert(
            script_key.to_string(),
            CachedScript {
                source: Arc::clone(source),
                ast: Arc::clone(&ast),
            },
        );
        Ok(ast)
    }

    fn read_cache(&self) -> std::sync::RwLockReadGuard<'_, HashMap<String, CachedScript>> {
        // Entries are inserted whole, so a panic elsewhere cannot leave one half-written.
        self.cache
            .read()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    fn write_cache(&self) -> std::sync::RwLockWriteGuard<'_, HashMap<String, CachedScript>> {
        self.cache
            .write()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// A runtime error as the user should read it: the innermost cause, where it happened.
    fn failure(&self, error: &EvalAltResult) -> Outcome {
        let mut current = error;
        let mut position = error.position();
        let mut function = None;
        loop {
            match current {
                EvalAltResult::ErrorInFunctionCall(name, _, inner, pos) => {
                    function = Some(name.as_str());
                    if !pos.is_none() {
                        position = *pos;
                    }
                    current = inner;
                }
                EvalAltResult::ErrorInModule(_, inner, pos) => {
                    if !pos.is_none() {
                        position = *pos;
                    }
                    current = inner;
                }
                _ => break,
            }
        }
        if !current.position().is_none() {
            position = current.position();
        }
        let mut message = self.describe(current);
        if let Some(function) = function {
            message.push_str(&format!(" (in function '{function}')"));
        }
        Outcome::Failed {
            message,
            line: position.line(),
            column: position.position(),
        }
    }

    fn describe(&self, error: &EvalAltResult) -> String {
        let limits = &self.limits;
        match error {
            EvalAltResult::ErrorRuntime(value, _) => convert::to_message(value),
            EvalAltResult::ErrorTooManyOperations(_) => format!(
                "too many operations: the script went over its limit of {} operations",
                limits.max_operations
            ),
            EvalAltResult::ErrorStackOverflow(_) => format!(
                "stack overflow: too many nested function calls (the limit is {} levels)",
                limits.max_call_levels
            ),
            EvalAltResult::ErrorDataTooLarge(what, _) => {
                let what = what.to_ascii_lowercase();
                if what.contains("string") {
                    format!(
                        "string too large: the limit is {} bytes",
                        limits.max_string_size
                    )
                } else if what.contains("array") {
                    format!(
                        "array too large: the limit is {} items",
                        limits.max_array_size
                    )
                } else if what.contains("map") {
                    format!(
                        "map too large: the limit is {} entries",
                        limits.max_map_size
                    )
                } else {
                    format!("{what} too large")
                }
            }
            EvalAltResult::ErrorModuleNotFound(name, _) => {
                format!("module '{name}' not found: scripts cannot import files or modules")
            }
            other => {
                let text = other.to_string();
                let suffix = format!(" ({})", other.position());
                text.strip_suffix(&suffix).unwrap_or(&text).to_string()
            }
        }
    }
}

impl Default for RhaiRuntime {
    fn default() -> Self {
        RhaiRuntime::new(Limits::default())
    }
}

fn syntax_error(error: &ParseError) -> ScriptError {
    let position: Position = error.position();
    ScriptError {
        line: position.line(),
        column: position.position(),
        message: error.err_type().to_string(),
    }
}

/// Runs `f` with this thread's engine, building it (or re-applying limits) when needed.
fn with_engine<R>(limits: &Limits, f: impl FnOnce(&Engine) -> R) -> R {
    ENGINE.with(|cell| match cell.try_borrow_mut() {
        Ok(mut slot) => {
            let worker = slot.get_or_insert_with(|| WorkerEngine {
                limits: limits.clone(),
                engine: build_engine(limits),
            });
            if worker.limits != *limits {
                apply_limits(&mut worker.engine, limits);
                worker.limits = limits.clone();
            }
            f(&worker.engine)
        }
        // Only reachable when a log callback runs a script on the same thread; give that
        // nested run an engine of its own rather than fail it.
        Err(_) => f(&build_engine(limits)),
    })
}

fn build_engine(limits: &Limits) -> Engine {
    let mut engine = Engine::new();
    // The sandbox: nothing can be imported, and no code can be built from text at run time.
    engine.set_module_resolver(DummyModuleResolver::new());
    engine.disable_symbol("eval");
    apply_limits(&mut engine, limits);
    engine.on_print(|text| host::emit(LogLevel::Print, text.to_string()));
    engine.on_debug(|text, _source, _position| host::emit(LogLevel::Debug, text.to_string()));
    engine.on_progress(|operations| {
        if operations % CHECK_EVERY != 0 {
            return None;
        }
        host::check_stop().map(host::stop_token)
    });
    // rhai marks `on_var` deprecated only to say it may change; it is the one hook that sees
    // the script's variables, which the size check needs (see `host::check_sizes`).
    #[allow(deprecated)]
    engine.on_var(|_name, _index, context| host::check_sizes(context.scope()).map(|()| None));
    host::register(&mut engine);
    engine
}

fn apply_limits(engine: &mut Engine, limits: &Limits) {
    engine.set_max_operations(limits.max_operations);
    engine.set_max_call_levels(limits.max_call_levels);
    engine.set_max_string_size(limits.max_string_size);
    engine.set_max_array_size(limits.max_array_size);
    engine.set_max_map_size(limits.max_map_size);
    engine.set_max_expr_depths(limits.max_expr_depth, limits.max_expr_depth);
}

fn panic_message(payload: &(dyn std::any::Any + Send)) -> String {
    if let Some(text) = payload.downcast_ref::<&str>() {
        (*text).to_string()
    } else if let Some(text) = payload.downcast_ref::<String>() {
        text.clone()
    } else {
        "unknown panic".to_string()
    }
}

#[cfg(test)]
mod tests;
