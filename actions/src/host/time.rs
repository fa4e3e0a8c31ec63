//! The `time` host module: `time::now()` (ISO-8601 UTC), `time::unix()`, `time::unix_ms()`
//! and `time::sleep(seconds)`.
//!
//! A sleep must never outlive its run: it sleeps in short slices and ends the script as
//! canceled or timed out as soon as either happens.

use std::time::{Duration, Instant};

use chrono::{SecondsFormat, Utc};
use rhai::{EvalAltResult, Module, NativeCallContext, FLOAT, INT};

use super::{located, run_bounds, script_error, stop_error, Stop};

/// How often a sleeping script looks at its cancel token.
const SLICE: Duration = Duration::from_millis(10);

pub(super) fn module() -> Module {
    let mut module = Module::new();
    add_fn!(&mut module, "now", || {
        Utc::now().to_rfc3339_opts(SecondsFormat::Millis, true)
    });
    add_fn!(&mut module, "unix", || Utc::now().timestamp());
    add_fn!(&mut module, "unix_ms", || Utc::now().timestamp_millis());
    add_fn!(
        &mut module,
        "sleep",
        |context: NativeCallContext, seconds: INT| { located(&context, sleep(seconds as FLOAT)) }
    );
    add_fn!(
        &mut module,
        "sleep",
        |context: NativeCallContext, seconds: FLOAT| { located(&context, sleep(seconds)) }
    );
    module
}

fn sleep(seconds: FLOAT) -> Result<(), Box<EvalAltResult>> {
    let wanted = Duration::try_from_secs_f64(seconds).map_err(|_| {
        script_error(format!(
            "time::sleep: expected a non-negative number of seconds, got {seconds}"
        ))
    })?;
    let (deadline, cancel) = run_bounds()?;
    let until = Instant::now().checked_add(wanted);
    loop {
        if cancel.is_canceled() {
            return Err(stop_error(Stop::Canceled));
        }
        let now = Instant::now();
        if until.is_some_and(|until| now >= until) {
            return Ok(());
        }
        if now >= deadline {
            return Err(stop_error(Stop::Timeout));
        }
        let mut nap = SLICE.min(deadline - now);
        if let Some(until) = until {
            nap = nap.min(until - now);
        }
        std::thread::sleep(nap);
    }
}
