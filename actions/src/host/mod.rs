//! The host side of a script run: the per-run state (log sink, deadline, cancel token, key-value
//! store) that host functions reach through a thread-local, and the registration of the host
//! modules (`kv`, `http`, `json`, `time`, `log`, `docker`) on an engine.
//!
//! The state lives in a thread-local because each worker thread has one `rhai::Engine`,
//! configured once, whose callbacks cannot capture per-run data; the state is installed for
//! exactly the duration of one run. Nothing here may give a script access to files or processes.

/// Registers a host function as volatile, so the optimizer never evaluates it at compile time
/// (`time::now()` must be read when the script runs, not when it is compiled). A macro because
/// the bounds of `FuncRegistration::set_into_module` name a trait rhai does not export.
macro_rules! add_fn {
    ($module:expr, $name:expr, $func:expr $(,)?) => {
        rhai::FuncRegistration::new($name)
            .with_volatility(true)
            .with_purity(true)
            .set_into_module($module, $func)
    };
}

pub(crate) mod convert;
mod docker;
mod http;
mod json;
mod kv;
mod log;
pub mod stubs;
mod time;

use std::cell::{Cell, RefCell};
use std::sync::Arc;
use std::time::Instant;

use rhai::{Dynamic, Engine, EvalAltResult, Module, NativeCallContext, Position, Scope};

use crate::kv::KvStore;
use crate::runtime::{CancelToken, LogLevel, LogLine, LogSink};

/// Why the host stopped a script before it finished.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Stop {
    Timeout,
    Canceled,
}

impl Stop {
    fn name(self) -> &'static str {
        match self {
            Stop::Timeout => "timeout",
            Stop::Canceled => "canceled",
        }
    }
}

/// Everything a host function may need about the run it is part of.
pub(crate) struct RunState {
    pub deadline: Instant,
    pub cancel: CancelToken,
    pub kv: Arc<dyn KvStore>,
    pub on_log: Option<LogSink>,
    pub log: Vec<LogLine>,
    pub stop: Option<Stop>,
    pub max_string_size: usize,
    pub max_array_size: usize,
    pub max_map_size: usize,
    /// Lines not kept because the run already logged [`MAX_LOG_LINES`].
    pub dropped_lines: u64,
}

/// How many log lines one run keeps: a script printing in a loop must not exhaust memory
/// before its timeout ends it.
pub(crate) const MAX_LOG_LINES: usize = 10_000;

thread_local! {
    static RUN: RefCell<Option<RunState>> = const { RefCell::new(None) };
    /// Variable reads left before the next look at the sizes of the script's variables.
    static SIZE_CHECK_IN: Cell<u64> = const { Cell::new(SIZE_CHECK_INTERVAL) };
}

/// The fewest variable reads between two size checks.
const SIZE_CHECK_INTERVAL: u64 = 4096;
/// How deep the size check looks into nested values.
const SIZE_CHECK_DEPTH: usize = 64;

/// Installs a run's state on this thread; dropping the guard removes it, even on a panic, so
/// no state leaks into the next run on the same worker thread. A run started from inside
/// another (a log sink that runs a script) stacks on top and restores the outer one.
pub(crate) struct RunGuard {
    previous: Option<RunState>,
    finished: bool,
}

impl RunGuard {
    pub(crate) fn install(state: RunState) -> RunGuard {
        let previous = RUN.with(|run| run.replace(Some(state)));
        SIZE_CHECK_IN.set(SIZE_CHECK_INTERVAL);
        RunGuard {
            previous,
            finished: false,
        }
    }

    /// Removes the state and hands it back (with the log and why the run stopped, if it did).
    pub(crate) fn finish(mut self) -> Option<RunState> {
        self.finished = true;
        let previous = self.previous.take();
        RUN.with(|run| run.replace(previous))
    }
}

impl Drop for RunGuard {
    fn drop(&mut self) {
        if self.finished {
            return;
        }
        let previous = self.previous.take();
        RUN.with(|run| {
            if let Ok(mut run) = run.try_borrow_mut() {
                *run = previous;
            }
        });
    }
}

fn with_run<R>(f: impl FnOnce(&mut RunState) -> R) -> Result<R, Box<EvalAltResult>> {
    RUN.with(|run| match run.try_borrow_mut() {
        Ok(mut run) => match run.as_mut() {
            Some(state) => Ok(f(state)),
            None => Err(script_error("host function called outside of a script run")),
        },
        Err(_) => Err(script_error("host function called re-entrantly")),
    })
}

/// Records a log line and hands it to the live tail, if any.
pub(crate) fn emit(level: LogLevel, message: String) {
    let line = LogLine {
        timestamp: chrono::Utc::now(),
        level,
        message,
    };
    let accepted = with_run(|state| {
        if state.log.len() >= MAX_LOG_LINES {
            state.dropped_lines += 1;
            None
        } else {
            Some(state.on_log.clone())
        }
    });
    let Ok(Some(sink)) = accepted else {
        return;
    };
    // The sink is called outside the borrow so that it may take its time or log itself.
    if let Some(sink) = sink {
        sink(&line);
    }
    let _ = with_run(|state| state.log.push(line));
}

/// Whether the run must stop now (canceled or out of time); records the reason.
pub(crate) fn check_stop() -> Option<Stop> {
    with_run(|state| {
        let stop = if state.cancel.is_canceled() {
            Some(Stop::Canceled)
        } else if Instant::now() >= state.deadline {
            Some(Stop::Timeout)
        } else {
            None
        };
        if stop.is_some() {
            state.stop = stop;
        }
        stop
    })
    .ok()
    .flatten()
}

/// The value `on_progress` returns to end a script: rhai turns it into `ErrorTerminated`,
/// which scripts cannot catch.
pub(crate) fn stop_token(stop: Stop) -> Dynamic {
    Dynamic::from(stop.name())
}

/// Ends the script from inside a host function (a sleep or a request that outlived the run).
pub(crate) fn stop_error(stop: Stop) -> Box<EvalAltResult> {
    // Recorded so the outcome does not depend on how rhai wraps the error on its way out.
    let _ = with_run(|state| state.stop = Some(stop));
    EvalAltResult::ErrorTerminated(stop_token(stop), Position::NONE).into()
}

/// Enforces the array, map and string limits on the script's variables, every so often.
///
/// rhai checks sizes when a function returns, but not when a script assigns into a map by
/// index (`m[key] = v`), so `loop { m[`k${i}`] = i; i += 1; }` would grow until memory runs
/// out. This runs from the variable-read hook; it waits at least as many reads as the last
/// look cost, so its cost stays proportional to the script's own work.
pub(crate) fn check_sizes(scope: &Scope) -> Result<(), Box<EvalAltResult>> {
    let left = SIZE_CHECK_IN.get();
    if left > 0 {
        SIZE_CHECK_IN.set(left - 1);
        return Ok(());
    }
    let limits = with_run(|state| {
        (
            state.max_array_size,
            state.max_map_size,
            state.max_string_size,
        )
    })?;
    let mut work = 0usize;
    let mut result = Ok(());
    for (_, _, value) in scope.iter_raw() {
        let mut sizes = Sizes::default();
        sizes.add(value, 0);
        work = work.saturating_add(sizes.arrays + sizes.maps);
        if let Some(what) = sizes.over(limits) {
            result = Err(EvalAltResult::ErrorDataTooLarge(what.to_string(), Position::NONE).into());
            break;
        }
    }
    SIZE_CHECK_IN.set(SIZE_CHECK_INTERVAL.max(u64::try_from(work).unwrap_or(u64::MAX)));
    result
}

/// Items in arrays, entries in maps and bytes in strings, summed through nested values as
/// rhai's own size check does.
#[derive(Default)]
struct Sizes {
    arrays: usize,
    maps: usize,
    strings: usize,
}

impl Sizes {
    fn add(&mut self, value: &Dynamic, depth: usize) {
        if depth > SIZE_CHECK_DEPTH {
            return;
        }
        if let Ok(items) = value.as_array_ref() {
            self.arrays = self.arrays.saturating_add(items.len());
            for item in items.iter() {
                self.add(item, depth + 1);
            }
        } else if let Ok(map) = value.as_map_ref() {
            self.maps = self.maps.saturating_add(map.len());
            for item in map.values() {
                self.add(item, depth + 1);
            }
        } else if let Ok(text) = value.as_immutable_string_ref() {
            self.strings = self.strings.saturating_add(text.len());
        } else if let Ok(blob) = value.as_blob_ref() {
            self.arrays = self.arrays.saturating_add(blob.len());
        }
    }

    /// rhai's wording, which the runtime turns into its own message.
    fn over(
        &self,
        (max_array, max_map, max_string): (usize, usize, usize),
    ) -> Option<&'static str> {
        if self.strings > max_string {
            Some("Length of string")
        } else if self.arrays > max_array {
            Some("Size of array/BLOB")
        } else if self.maps > max_map {
            Some("Size of object map")
        } else {
            None
        }
    }
}

/// The deadline and cancel token of the current run.
pub(crate) fn run_bounds() -> Result<(Instant, CancelToken), Box<EvalAltResult>> {
    with_run(|state| (state.deadline, state.cancel.clone()))
}

pub(crate) fn kv_store() -> Result<Arc<dyn KvStore>, Box<EvalAltResult>> {
    with_run(|state| Arc::clone(&state.kv))
}

pub(crate) fn max_string_size() -> Result<usize, Box<EvalAltResult>> {
    with_run(|state| state.max_string_size)
}

/// Gives a host function's error the position of the call. rhai does this for plain function
/// calls but not for calls through a module path (`kv::get`), and a script author needs it.
pub(crate) fn located<T>(
    context: &NativeCallContext,
    result: Result<T, Box<EvalAltResult>>,
) -> Result<T, Box<EvalAltResult>> {
    result.map_err(|mut error| {
        if error.position().is_none() {
            error.set_position(context.call_position());
        }
        error
    })
}

/// A catchable script error; [`located`] gives it its position.
pub(crate) fn script_error(message: impl Into<String>) -> Box<EvalAltResult> {
    EvalAltResult::ErrorRuntime(Dynamic::from(message.into()), Position::NONE).into()
}

/// An error and its causes: the cause ("connection refused") is what a script author needs,
/// and many errors' own text stops before it.
pub(crate) fn error_chain(error: &dyn std::error::Error) -> String {
    let mut text = error.to_string();
    let mut source = error.source();
    while let Some(cause) = source {
        let cause_text = cause.to_string();
        if !text.contains(&cause_text) {
            text.push_str(": ");
            text.push_str(&cause_text);
        }
        source = cause.source();
    }
    text
}

/// The host modules, registered under their names (`kv::get(...)`); the one list of them.
pub(crate) fn register(engine: &mut Engine) {
    let modules: [(&str, Module); 6] = [
        ("kv", kv::module()),
        ("http", http::module()),
        ("json", json::module()),
        ("time", time::module()),
        ("log", log::module()),
        ("docker", docker::module()),
    ];
    for (name, module) in modules {
        engine.register_static_module(name, module.into());
    }
}
