//! A running action's log lines on their way to the stream and the store, and how a script's
//! end becomes an execution's final status.

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use serde_json::{json, Value};
use squall_actions::{CancelToken, LogLine, Outcome};

use super::{later, marks, Engine, StreamEvent};
use crate::model::{Execution, ExecutionStatus};
use crate::store::Store;

/// A running action's log lines on their way to the store (see `Engine::execute`).
pub(super) struct LiveLog {
    state: Mutex<LiveState>,
    marks: Arc<marks::RunningMarks>,
    store: Arc<Store>,
    /// The execution as marked running: each write is a copy of it with the lines so far.
    marked: Arc<Execution>,
    canceled: CancelToken,
}

#[derive(Default)]
pub(super) struct LiveState {
    lines: Vec<LogLine>,
    written_at: Option<Instant>,
    /// Lines came since the last write.
    held: bool,
    /// A deferred write is waiting (on the engine's `later` thread).
    deferred: bool,
    /// The action ended: its result carries the log.
    finished: bool,
}

impl LiveLog {
    fn lock(&self) -> std::sync::MutexGuard<'_, LiveState> {
        match self.state.lock() {
            Ok(g) => g,
            Err(p) => p.into_inner(),
        }
    }

    /// Less often as the log grows, since each write carries all of it.
    fn every(lines: usize) -> Duration {
        LIVE_LOG_EVERY * (1 + (lines / 1000) as u32)
    }

    /// Takes a line and writes the log when it is due; else returns when a deferred write
    /// should run, if none is waiting yet.
    fn add(&self, line: &LogLine) -> Option<Instant> {
        let mut state = self.lock();
        state.lines.push(line.clone());
        state.held = true;
        let every = Self::every(state.lines.len());
        match state.written_at {
            Some(at) if at.elapsed() < every => {
                if state.deferred {
                    return None;
                }
                state.deferred = true;
                Some(at + every)
            }
            _ => {
                self.write(&mut state);
                None
            }
        }
    }

    /// The deferred write: the lines held back, unless the action ended meanwhile.
    fn write_held(&self) {
        let mut state = self.lock();
        state.deferred = false;
        if state.held && !state.finished {
            self.write(&mut state);
        }
    }

    /// Under the state's lock, so a write is handed to the store before [`LiveLog::finish`]
    /// returns, and so before the result; not once a cancel was asked for (the store shows
    /// `canceling` then).
    fn write(&self, state: &mut LiveState) {
        if self.canceled.is_canceled() {
            return;
        }
        state.written_at = Some(Instant::now());
        state.held = false;
        let mut copy = (*self.marked).clone();
        copy.log = state.lines.clone();
        self.marks.running_log(Arc::new(copy), &self.store);
    }

    pub(super) fn finish(&self) {
        self.lock().finished = true;
    }
}

/// How often a running action's log lines so far are stored, for its first thousand lines
/// (then less often: see `Engine::execute`).
const LIVE_LOG_EVERY: Duration = Duration::from_millis(250);

impl Engine {
    /// The log sink of a running action: lines are streamed as they come and stored while
    /// the action runs (at most every LIVE_LOG_EVERY, and lines held back by that are written
    /// when it has passed), so the API, `execution tail` and an execution abandoned by a crash
    /// show what it wrote. `e` is the execution as marked running.
    pub(super) fn live_log(
        &self,
        e: &Arc<Execution>,
        cancel: &CancelToken,
    ) -> (Arc<LiveLog>, squall_actions::LogSink) {
        let exec_id = e.id.clone();
        let events = self.events.clone();
        let live = Arc::new(LiveLog {
            state: Mutex::new(LiveState::default()),
            marks: self.marks.clone(),
            store: self.store.clone(),
            marked: e.clone(),
            canceled: cancel.clone(),
        });
        let later = self.later.clone();
        let logging = live.clone();
        let on_log: squall_actions::LogSink = Arc::new(move |line: &LogLine| {
            // Serialized only when someone follows the stream.
            if events.wants("st2.execution.output__create") {
                let mut data = serde_json::to_value(line).unwrap_or(Value::Null);
                if let Value::Object(m) = &mut data {
                    m.insert("execution_id".into(), Value::String(exec_id.clone()));
                    // st2's own fields for an output line, for st2's clients: warnings and errors
                    // are the script's stderr (as `/output` shows them).
                    let stderr = matches!(
                        line.level,
                        squall_actions::LogLevel::Warn | squall_actions::LogLevel::Error
                    );
                    m.insert(
                        "output_type".into(),
                        Value::String(if stderr { "stderr" } else { "stdout" }.into()),
                    );
                    m.insert("data".into(), Value::String(format!("{}\n", line.message)));
                }
                events.send(StreamEvent {
                    id: 0,
                    event: "st2.execution.output__create".into(),
                    data: Arc::from(data.to_string()),
                });
            }
            if let Some(at) = logging.add(line) {
                let deferred = logging.clone();
                later.add(at, later::Job::Run(Box::new(move || deferred.write_held())));
            }
        });
        (live, on_log)
    }
}

/// An action's final status and result from how its script ended. `grace_over`: squall was
/// stopping and its grace period ran out (what canceled it).
pub(crate) fn outcome_status(outcome: Outcome, grace_over: bool) -> (ExecutionStatus, Value) {
    match outcome {
        Outcome::Succeeded(v) => (ExecutionStatus::Succeeded, v),
        Outcome::Failed {
            message,
            line,
            column,
        } => (
            ExecutionStatus::Failed,
            json!({"error": message, "line": line, "column": column}),
        ),
        Outcome::Timeout { after } => (
            ExecutionStatus::Timeout,
            json!({"error": format!("action timed out after {:.1} s", after.as_secs_f64())}),
        ),
        Outcome::Canceled if grace_over => (
            ExecutionStatus::Canceled,
            json!({"error": "canceled: squall was stopping and its shutdown grace period (shutdown_grace_seconds) ran out"}),
        ),
        Outcome::Canceled => (
            ExecutionStatus::Canceled,
            json!({"error": "execution was canceled"}),
        ),
    }
}
