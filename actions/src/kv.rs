//! The key-value store as scripts see it (`kv::get`, `kv::set`, `kv::delete`): a narrow trait
//! the engine implements over its store, and [`MemoryKv`] for the CLI and tests.
//!
//! Values are strings, as in st2's datastore. This file never persists anything: durability is
//! the engine's implementation's job.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// A key-value store reachable from scripts. Errors are messages shown to the script author.
pub trait KvStore: Send + Sync {
    /// The value of `name`, or `None` when it is absent or expired.
    fn get(&self, name: &str) -> Result<Option<String>, String>;
    /// Sets `name`, expiring it after `ttl_seconds` when given.
    fn set(&self, name: &str, value: &str, ttl_seconds: Option<u64>) -> Result<(), String>;
    /// Deletes `name`; true when it existed.
    fn delete(&self, name: &str) -> Result<bool, String>;
    /// Sets `name` only when it is absent (or expired); true when it was set. Two scripts
    /// claiming one name at once: exactly one gets true (a cooldown, a lock). A store that
    /// knows the execution running the script (squall's) also answers true to the execution
    /// that holds the claim, so that one run again after a crash is not refused by itself.
    fn claim(&self, name: &str, value: &str, ttl_seconds: Option<u64>) -> Result<bool, String>;
}

/// An in-memory store with TTLs, for the CLI's local runs and for tests.
#[derive(Debug, Default)]
pub struct MemoryKv {
    entries: Mutex<HashMap<String, Entry>>,
}

#[derive(Debug)]
struct Entry {
    value: String,
    expires: Option<Instant>,
}

impl Entry {
    fn live(&self, now: Instant) -> bool {
        self.expires.is_none_or(|at| now < at)
    }
}

impl MemoryKv {
    pub fn new() -> Self {
        MemoryKv::default()
    }

    fn entries(&self) -> std::sync::MutexGuard<'_, HashMap<String, Entry>> {
        // A panic while holding the lock cannot leave a half-written entry (each operation
        // is a single map call), so the data is still good after poisoning.
        self.entries
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }
}

impl KvStore for MemoryKv {
    fn get(&self, name: &str) -> Result<Option<String>, String> {
        let now = Instant::now();
        let mut entries = self.entries();
        match entries.get(name) {
            Some(entry) if entry.live(now) => Ok(Some(entry.value.clone())),
            Some(_) => {
                entries.remove(name);
                Ok(None)
            }
            None => Ok(None),
        }
    }

    fn set(&self, name: &str, value: &str, ttl_seconds: Option<u64>) -> Result<(), String> {
        let expires = expiry(ttl_seconds)?;
        self.entries().insert(
            name.to_string(),
            Entry {
                value: value.to_string(),
                expires,
            },
        );
        Ok(())
    }

    fn delete(&self, name: &str) -> Result<bool, String> {
        let now = Instant::now();
        Ok(self
            .entries()
            .remove(name)
            .is_some_and(|entry| entry.live(now)))
    }

    fn claim(&self, name: &str, value: &str, ttl_seconds: Option<u64>) -> Result<bool, String> {
        let now = Instant::now();
        let expires = expiry(ttl_seconds)?;
        let mut entries = self.entries();
        if entries.get(name).is_some_and(|entry| entry.live(now)) {
            return Ok(false);
        }
        entries.insert(
            name.to_string(),
            Entry {
                value: value.to_string(),
                expires,
            },
        );
        Ok(true)
    }
}

/// When an entry set now with `ttl_seconds` expires.
fn expiry(ttl_seconds: Option<u64>) -> Result<Option<Instant>, String> {
    match ttl_seconds {
        None => Ok(None),
        Some(seconds) => Instant::now()
            .checked_add(Duration::from_secs(seconds))
            .map(Some)
            .ok_or_else(|| format!("ttl of {seconds} seconds is too large")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn set_get_delete() {
        let kv = MemoryKv::new();
        assert_eq!(kv.get("a"), Ok(None));
        kv.set("a", "1", None).expect("set");
        assert_eq!(kv.get("a"), Ok(Some("1".into())));
        kv.set("a", "2", None).expect("overwrite");
        assert_eq!(kv.get("a"), Ok(Some("2".into())));
        assert_eq!(kv.delete("a"), Ok(true));
        assert_eq!(kv.delete("a"), Ok(false));
        assert_eq!(kv.get("a"), Ok(None));
    }

    #[test]
    fn ttl_expires() {
        let kv = MemoryKv::new();
        kv.set("short", "x", Some(1)).expect("set");
        kv.set("long", "y", Some(3600)).expect("set");
        assert_eq!(kv.get("short"), Ok(Some("x".into())));
        let deadline = Instant::now() + Duration::from_secs(5);
        while kv.get("short") != Ok(None) {
            assert!(
                Instant::now() < deadline,
                "ttl of 1 s did not expire within 5 s"
            );
            std::thread::sleep(Duration::from_millis(20));
        }
        assert_eq!(kv.get("long"), Ok(Some("y".into())));
        assert_eq!(kv.delete("short"), Ok(false));
    }

    #[test]
    fn claim_sets_only_an_absent_or_expired_name() {
        let kv = MemoryKv::new();
        assert_eq!(kv.claim("c", "first", Some(1)), Ok(true));
        assert_eq!(kv.claim("c", "second", Some(1)), Ok(false));
        assert_eq!(kv.get("c"), Ok(Some("first".into())));
        std::thread::sleep(Duration::from_millis(1100));
        assert_eq!(kv.claim("c", "third", None), Ok(true));
        assert_eq!(kv.get("c"), Ok(Some("third".into())));
    }
}
