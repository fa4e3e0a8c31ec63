//! The `json` host module: `json::parse(text)` and `json::stringify(value[, pretty])`.
//!
//! Parse errors are thrown (catchable) with serde_json's message, which names line and column
//! in the text. Never reads anything but its argument.

use rhai::{Dynamic, EvalAltResult, Module, NativeCallContext};

use super::{convert, located, script_error};

pub(super) fn module() -> Module {
    let mut module = Module::new();
    add_fn!(
        &mut module,
        "parse",
        |context: NativeCallContext, text: &str| { located(&context, parse(text)) }
    );
    add_fn!(
        &mut module,
        "stringify",
        |context: NativeCallContext, value: Dynamic| {
            located(&context, stringify(&value, false))
        }
    );
    add_fn!(
        &mut module,
        "stringify",
        |context: NativeCallContext, value: Dynamic, pretty: bool| {
            located(&context, stringify(&value, pretty))
        }
    );
    module
}

fn parse(text: &str) -> Result<Dynamic, Box<EvalAltResult>> {
    serde_json::from_str::<serde_json::Value>(text)
        .map(|value| convert::to_dynamic(&value))
        .map_err(|e| script_error(format!("json::parse: {e}")))
}

fn stringify(value: &Dynamic, pretty: bool) -> Result<String, Box<EvalAltResult>> {
    let json =
        convert::to_json(value).map_err(|e| script_error(format!("json::stringify: {e}")))?;
    let text = if pretty {
        serde_json::to_string_pretty(&json)
    } else {
        serde_json::to_string(&json)
    };
    text.map_err(|e| script_error(format!("json::stringify: {e}")))
}
