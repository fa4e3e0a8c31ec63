//! The `log` host module: `log::debug`, `log::info`, `log::warn`, `log::error`, each adding a
//! log line of that level to the execution (the same lines `print` and `debug` produce).
//!
//! Never writes anywhere itself: lines go to the run's log and live tail only.

use rhai::{Dynamic, Module};

use super::{convert, emit};
use crate::runtime::LogLevel;

pub(super) fn module() -> Module {
    let mut module = Module::new();
    let levels = [
        ("debug", LogLevel::Debug),
        ("info", LogLevel::Info),
        ("warn", LogLevel::Warn),
        ("error", LogLevel::Error),
    ];
    for (name, level) in levels {
        add_fn!(&mut module, name, move |message: Dynamic| {
            emit(level, convert::to_message(&message));
        });
    }
    module
}
