//! The `kv` host module: `kv::get(name)`, `kv::set(name, value[, ttl_seconds])`,
//! `kv::delete(name)`, and `kv::claim(name, value[, ttl_seconds])`, which sets the name only
//! when it is absent and says whether it did (of two scripts claiming a name at once, exactly
//! one gets `true`: a cooldown or a lock), over the run's [`crate::KvStore`]. A claim is held by
//! the execution that made it: the same execution claiming the name again (run again after a
//! crash) gets `true`, any other `false` until the pair expires or is deleted or overwritten.
//!
//! Values are strings; a non-string value given to `kv::set` is stored as its JSON text.
//! Store errors become script errors; this module never caches values across runs.

use rhai::{Dynamic, EvalAltResult, Module, NativeCallContext, INT};

use super::{convert, kv_store, located, script_error};

type Result<T> = std::result::Result<T, Box<EvalAltResult>>;

pub(super) fn module() -> Module {
    let mut module = Module::new();
    add_fn!(
        &mut module,
        "get",
        |context: NativeCallContext, name: &str| { located(&context, get(name)) }
    );
    add_fn!(
        &mut module,
        "set",
        |context: NativeCallContext, name: &str, value: Dynamic| {
            located(&context, set(name, &value, None))
        }
    );
    add_fn!(
        &mut module,
        "set",
        |context: NativeCallContext, name: &str, value: Dynamic, ttl: INT| {
            let ttl = u64::try_from(ttl).map_err(|_| {
                script_error(format!(
                    "kv::set('{name}'): ttl must not be negative, got {ttl}"
                ))
            });
            located(&context, ttl.and_then(|ttl| set(name, &value, Some(ttl))))
        }
    );
    add_fn!(
        &mut module,
        "delete",
        |context: NativeCallContext, name: &str| { located(&context, delete(name)) }
    );
    add_fn!(
        &mut module,
        "claim",
        |context: NativeCallContext, name: &str, value: Dynamic| {
            located(&context, claim(name, &value, None))
        }
    );
    add_fn!(
        &mut module,
        "claim",
        |context: NativeCallContext, name: &str, value: Dynamic, ttl: INT| {
            let ttl = u64::try_from(ttl).map_err(|_| {
                script_error(format!(
                    "kv::claim('{name}'): ttl must not be negative, got {ttl}"
                ))
            });
            located(&context, ttl.and_then(|ttl| claim(name, &value, Some(ttl))))
        }
    );
    module
}

fn claim(name: &str, value: &Dynamic, ttl: Option<u64>) -> Result<bool> {
    let text = convert::to_message(value);
    kv_store()?
        .claim(name, &text, ttl)
        .map_err(|e| script_error(format!("kv::claim('{name}'): {e}")))
}

fn get(name: &str) -> Result<Dynamic> {
    match kv_store()?.get(name) {
        Ok(Some(value)) => Ok(Dynamic::from(value)),
        Ok(None) => Ok(Dynamic::UNIT),
        Err(e) => Err(script_error(format!("kv::get('{name}'): {e}"))),
    }
}

fn set(name: &str, value: &Dynamic, ttl: Option<u64>) -> Result<()> {
    let text = convert::to_message(value);
    kv_store()?
        .set(name, &text, ttl)
        .map_err(|e| script_error(format!("kv::set('{name}'): {e}")))
}

fn delete(name: &str) -> Result<bool> {
    kv_store()?
        .delete(name)
        .map_err(|e| script_error(format!("kv::delete('{name}'): {e}")))
}
