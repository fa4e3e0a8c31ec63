//! The key-value store: pairs with TTLs and encrypted secrets, `kv::claim`, and the
//! durability of what scripts write.
//!
//! A script's writes (`kv::set`, `kv::delete`, `kv::claim`) go to sled at once, where every
//! reader sees them, and reach disk with a sled flush. The rule this file gives the engine the
//! means to keep: an execution's result is never durable before the writes its script made.
//! Each write is counted ([`Store::kv_writes_begun`]) before it is applied, under a shared
//! gate that a flush takes alone for an instant to learn how many writes it covers; a worker
//! passes the count it saw at a script's last key-value call to [`Store::kv_durable`] before it
//! records the result, and threads that wait at once share one flush (group commit). Reads
//! count too, so a result that depends on another script's write is never durable before it.
//! A claim that returned true is made durable before the script goes on, together with the
//! record of the execution that holds it ([`ScriptKv`]).
//!
//! It must never let a claim be held by two executions, and never store a secret in clear.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Condvar, Mutex, MutexGuard, PoisonError, RwLock, RwLockReadGuard};

use base64::engine::general_purpose::STANDARD;
use base64::Engine as _;
use chacha20poly1305::aead::Aead;
use chacha20poly1305::Nonce;
use chrono::{DateTime, TimeDelta, Utc};
use rand::rngs::OsRng;
use rand::RngCore;
use sled::Transactional;

use super::{
    decode, encode, expiry_key, tx_error, Store, StoreError, StoreResult, NONCE_LEN, T_KV,
};
use crate::model::{KeyValuePair, SCHEMA_VERSION};

/// Counts key-value writes and shares flushes among the threads that need them on disk.
#[derive(Debug, Default)]
pub(super) struct KvDurability {
    /// Held shared by a write while it is counted and applied; a flush takes it alone for the
    /// instant it reads `writes`, so that every write it counts is wholly in sled's log.
    gate: RwLock<()>,
    /// Writes begun.
    writes: AtomicU64,
    /// Writes known to be on disk: all those counted before the last good flush began.
    pub(super) covered: AtomicU64,
    flushes: Mutex<Flushes>,
    flushed: Condvar,
}

#[derive(Debug, Default)]
pub(super) struct Flushes {
    started: u64,
    pub(super) done: u64,
    running: bool,
    failure: Option<String>,
}

impl KvDurability {
    /// Counts a write about to be applied; hold the guard until it is.
    fn count_write(&self) -> RwLockReadGuard<'_, ()> {
        let guard = self.gate.read().unwrap_or_else(PoisonError::into_inner);
        self.writes.fetch_add(1, Ordering::SeqCst);
        guard
    }

    pub(super) fn lock(&self) -> MutexGuard<'_, Flushes> {
        self.flushes.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

impl Store {
    fn encrypt(&self, clear: &str) -> StoreResult<String> {
        let mut nonce = [0u8; NONCE_LEN];
        OsRng.fill_bytes(&mut nonce);
        let sealed = self
            .cipher
            .encrypt(Nonce::from_slice(&nonce), clear.as_bytes())
            .map_err(|_| StoreError::Crypto("cannot encrypt a secret value".to_string()))?;
        let mut out = Vec::with_capacity(NONCE_LEN + sealed.len());
        out.extend_from_slice(&nonce);
        out.extend_from_slice(&sealed);
        Ok(STANDARD.encode(out))
    }

    /// The clear text of a value this store encrypted (as `GET /keys/NAME` shows a secret),
    /// so a pair read can be written back as it is.
    pub fn kv_decrypt(&self, name: &str, encrypted: &str) -> StoreResult<String> {
        self.decrypt(name, encrypted)
    }

    fn decrypt(&self, name: &str, stored: &str) -> StoreResult<String> {
        let raw = STANDARD
            .decode(stored)
            .map_err(|e| StoreError::Crypto(format!("secret `{name}` is not valid base64: {e}")))?;
        if raw.len() < NONCE_LEN {
            return Err(StoreError::Crypto(format!(
                "secret `{name}` is too short to be a ciphertext"
            )));
        }
        let (nonce, sealed) = raw.split_at(NONCE_LEN);
        let clear = self
            .cipher
            .decrypt(Nonce::from_slice(nonce), sealed)
            .map_err(|_| {
                StoreError::Crypto(format!(
                    "secret `{name}` cannot be decrypted: wrong key, or the value was altered"
                ))
            })?;
        String::from_utf8(clear)
            .map_err(|_| StoreError::Crypto(format!("secret `{name}` is not UTF-8 text")))
    }

    /// The name of a stored secret this store's key cannot decrypt, if the first secret found
    /// is one: a sign the data dir is opened with another key than its secrets' (checked at
    /// start, so the operator hears of it before a script fails on it).
    pub fn secret_needing_another_key(&self) -> StoreResult<Option<String>> {
        for item in self.kv.iter() {
            let (k, v) = item?;
            let pair: KeyValuePair = decode(T_KV, &k, &v)?;
            if pair.secret {
                return Ok(self
                    .decrypt(&pair.name, &pair.value)
                    .err()
                    .map(|_| pair.name));
            }
        }
        Ok(None)
    }

    fn reveal(&self, mut pair: KeyValuePair, decrypt: bool) -> StoreResult<KeyValuePair> {
        if pair.secret && decrypt {
            pair.value = self.decrypt(&pair.name, &pair.value)?;
        }
        Ok(pair)
    }

    fn kv_record(&self, name: &str) -> StoreResult<Option<KeyValuePair>> {
        self.kv
            .get(name.as_bytes())?
            .map(|v| decode(T_KV, name.as_bytes(), &v))
            .transpose()
    }

    /// A pair, or `None` when absent or expired (an expired pair is deleted here). A secret
    /// is returned as its stored ciphertext unless `decrypt`.
    pub fn kv_get(&self, name: &str, decrypt: bool) -> StoreResult<Option<KeyValuePair>> {
        let Some(pair) = self.kv_record(name)? else {
            return Ok(None);
        };
        let now = Utc::now();
        if let Some(at) = pair.expire_timestamp.filter(|at| *at <= now) {
            self.kv_remove_expired(name, at, now)?;
            return Ok(None);
        }
        self.reveal(pair, decrypt).map(Some)
    }

    /// Deletes `name` if it still expires at `at` (not rewritten meanwhile) and `at <= now`.
    fn kv_remove_expired(
        &self,
        name: &str,
        at: DateTime<Utc>,
        now: DateTime<Utc>,
    ) -> StoreResult<bool> {
        (&self.kv, &self.kv_expiry)
            .transaction(|(kv, expiry)| {
                expiry.remove(expiry_key(at, name))?;
                let Some(bytes) = kv.get(name.as_bytes())? else {
                    return Ok(false);
                };
                let current: KeyValuePair = match decode(T_KV, name.as_bytes(), &bytes) {
                    Ok(p) => p,
                    // Leave an unreadable record for kv_get to report; dropping its stale
                    // expiry entry keeps the sweep from tripping over it again.
                    Err(e) => {
                        tracing::warn!(error = %e, "key-value pair not swept");
                        return Ok(false);
                    }
                };
                if current.expire_timestamp == Some(at) && at <= now {
                    kv.remove(name.as_bytes())?;
                    Ok(true)
                } else {
                    Ok(false)
                }
            })
            .map_err(tx_error)
    }

    /// Sets a pair (st2: values are strings). A secret is encrypted with a fresh nonce; the
    /// stored pair is returned (ciphertext for secrets).
    pub fn kv_set(
        &self,
        name: &str,
        value: &str,
        secret: bool,
        ttl_seconds: Option<u64>,
    ) -> StoreResult<KeyValuePair> {
        let pair = self.new_pair(name, value, secret, ttl_seconds, None)?;
        let bytes = encode(T_KV, name, &pair)?;
        let _counted = self.kv_durability.count_write();
        self.add_expiry(&pair)?;
        let old = self.kv.insert(name.as_bytes(), bytes)?;
        self.drop_old_expiry(&pair, old.as_deref())?;
        Ok(pair)
    }

    /// Sets a pair only when it is absent or expired, for `claimant` (an execution's id);
    /// true when it is now `claimant`'s. A live pair that `claimant` itself claimed is
    /// `claimant`'s still: an execution run again after a crash gets its own claim back, and
    /// the pair keeps the value and expiry its first run gave it. Atomic in sled (a
    /// compare-and-swap): of several claimants at once, exactly one gets true.
    pub fn kv_claim(
        &self,
        name: &str,
        value: &str,
        ttl_seconds: Option<u64>,
        claimant: &str,
    ) -> StoreResult<bool> {
        let pair = self.new_pair(name, value, false, ttl_seconds, Some(claimant))?;
        let bytes = encode(T_KV, name, &pair)?;
        let now = pair.updated_at;
        let _counted = self.kv_durability.count_write();
        loop {
            let current = self.kv.get(name.as_bytes())?;
            if let Some(old) = &current {
                let old: KeyValuePair = decode(T_KV, name.as_bytes(), old)?;
                if old.expire_timestamp.is_none_or(|at| at > now) {
                    return Ok(old.claimed_by.as_deref() == Some(claimant));
                }
            }
            self.add_expiry(&pair)?;
            match self.kv.compare_and_swap(
                name.as_bytes(),
                current.clone(),
                Some(bytes.as_slice()),
            )? {
                Ok(()) => {
                    self.drop_old_expiry(&pair, current.as_deref())?;
                    return Ok(true);
                }
                // Changed meanwhile: look again (the expiry entry added is met by the sweep,
                // which keeps only entries that match their pair).
                Err(_) => continue,
            }
        }
    }

    /// Pairs are written without a sled transaction (which would stop every other reader and
    /// writer of the store while it commits). The expiry index stays right without one: an
    /// entry is added before its pair, and an old pair's entry removed after it is replaced,
    /// so the live pair's entry is always there, and an entry left over by a crash or a race
    /// is dropped by the sweep, which removes a pair only if it still expires then.
    fn add_expiry(&self, pair: &KeyValuePair) -> StoreResult<()> {
        if let Some(at) = pair.expire_timestamp {
            self.kv_expiry.insert(expiry_key(at, &pair.name), &[][..])?;
        }
        Ok(())
    }

    /// Removes the expiry entry of the pair `old` that `pair` replaced, unless they share it.
    fn drop_old_expiry(&self, pair: &KeyValuePair, old: Option<&[u8]>) -> StoreResult<()> {
        let Some(old) = old else {
            return Ok(());
        };
        // An unreadable old record's expiry entry, if any, is dropped by the sweep.
        if let Ok(KeyValuePair {
            expire_timestamp: Some(at),
            ..
        }) = decode::<KeyValuePair>(T_KV, pair.name.as_bytes(), old)
        {
            if pair.expire_timestamp != Some(at) {
                self.kv_expiry.remove(expiry_key(at, &pair.name))?;
            }
        }
        Ok(())
    }

    /// The pair `kv_set` or `kv_claim` stores: its name checked, its value encrypted when
    /// secret, its expiry in whole milliseconds.
    fn new_pair(
        &self,
        name: &str,
        value: &str,
        secret: bool,
        ttl_seconds: Option<u64>,
        claimed_by: Option<&str>,
    ) -> StoreResult<KeyValuePair> {
        if name == "." || name == ".." {
            return Err(StoreError::Invalid(format!(
                "'{name}' cannot name a key-value pair: a URL path could not reach it"
            )));
        }
        if name.is_empty() {
            return Err(StoreError::Invalid(
                "a key-value pair needs a name".to_string(),
            ));
        }
        let now = Utc::now();
        let expire_timestamp = match ttl_seconds {
            None => None,
            Some(ttl) => {
                let too_large =
                    || StoreError::Invalid(format!("ttl of {ttl} seconds is too large"));
                let delta = i64::try_from(ttl)
                    .ok()
                    .and_then(TimeDelta::try_seconds)
                    .ok_or_else(too_large)?;
                let at = now.checked_add_signed(delta).ok_or_else(too_large)?;
                // Whole milliseconds, as in the expiry index key, so the sweep's range scan
                // and the record agree exactly on when it expires.
                Some(DateTime::from_timestamp_millis(at.timestamp_millis()).ok_or_else(too_large)?)
            }
        };
        Ok(KeyValuePair {
            v: SCHEMA_VERSION,
            name: name.to_string(),
            value: if secret {
                self.encrypt(value)?
            } else {
                value.to_string()
            },
            secret,
            expire_timestamp,
            updated_at: now,
            claimed_by: claimed_by.map(str::to_string),
        })
    }

    /// Deletes a pair; true when it existed and had not expired.
    pub fn kv_delete(&self, name: &str) -> StoreResult<bool> {
        let now = Utc::now();
        let _counted = self.kv_durability.count_write();
        let Some(old) = self.kv.remove(name.as_bytes())? else {
            return Ok(false);
        };
        match decode::<KeyValuePair>(T_KV, name.as_bytes(), &old) {
            Ok(KeyValuePair {
                expire_timestamp: Some(at),
                ..
            }) => {
                self.kv_expiry.remove(expiry_key(at, name))?;
                Ok(at > now)
            }
            _ => Ok(true),
        }
    }

    /// How many key-value writes this store has begun: a mark to pass to
    /// [`Store::kv_durable`] once what a caller wrote, or read, must be on disk.
    pub fn kv_writes_begun(&self) -> u64 {
        self.kv_durability.writes.load(Ordering::SeqCst)
    }

    /// Whether every key-value write begun before `mark` is known to be on disk.
    pub fn kv_covered(&self, mark: u64) -> bool {
        self.kv_durability.covered.load(Ordering::SeqCst) >= mark
    }

    /// Returns once every key-value write begun before `mark` (see
    /// [`Store::kv_writes_begun`]) is on disk: at once when a flush already covers them,
    /// otherwise after one sled flush shared by every thread that waits meanwhile.
    pub fn kv_durable(&self, mark: u64) -> StoreResult<()> {
        self.shared_flush(Some(mark))
    }

    /// Returns once everything written before the call is on disk, the pipeline's queued
    /// records (see [`Store::settle`]) as well as key-value pairs: what a claim needs, since
    /// the execution that holds it must be found after a crash to get it back. The flush is
    /// shared like [`Store::kv_durable`]'s.
    pub fn durable_now(&self) -> StoreResult<()> {
        self.settle();
        self.shared_flush(None)
    }

    /// Group commit: waits for a flush that starts after the call (one starts if none is
    /// running), unless `mark` says that the writes the caller needs are covered already.
    fn shared_flush(&self, mark: Option<u64>) -> StoreResult<()> {
        let d = &self.kv_durability;
        let covered =
            |mark: Option<u64>| mark.is_some_and(|m| d.covered.load(Ordering::SeqCst) >= m);
        if covered(mark) {
            return Ok(());
        }
        let mut flushes = d.lock();
        let target = flushes.started + 1;
        loop {
            if covered(mark) {
                return Ok(());
            }
            if flushes.done >= target {
                return match &flushes.failure {
                    None => Ok(()),
                    Some(why) => Err(StoreError::Invalid(format!(
                        "writes could not be made durable: {why}"
                    ))),
                };
            }
            if flushes.running {
                flushes = d
                    .flushed
                    .wait(flushes)
                    .unwrap_or_else(PoisonError::into_inner);
                continue;
            }
            flushes.running = true;
            flushes.started += 1;
            let id = flushes.started;
            drop(flushes);
            // With no write half-applied, every write counted so far is in sled's log, and
            // this flush takes it to disk.
            let covers = {
                let _alone = d.gate.write().unwrap_or_else(PoisonError::into_inner);
                d.writes.load(Ordering::SeqCst)
            };
            let result = self.db.flush();
            flushes = d.lock();
            flushes.running = false;
            flushes.done = id;
            match result {
                Ok(_) => {
                    d.covered.fetch_max(covers, Ordering::SeqCst);
                    flushes.failure = None;
                }
                Err(e) => {
                    tracing::error!(error = %e, "flushing the store failed");
                    flushes.failure = Some(e.to_string());
                }
            }
            d.flushed.notify_all();
        }
    }

    /// Pairs by name, those under `prefix` only when given; expired pairs are left out.
    pub fn kv_list(&self, prefix: Option<&str>, decrypt: bool) -> StoreResult<Vec<KeyValuePair>> {
        let now = Utc::now();
        let mut out = Vec::new();
        for item in self.kv.scan_prefix(prefix.unwrap_or_default().as_bytes()) {
            let (k, v) = item?;
            let pair: KeyValuePair = decode(T_KV, &k, &v)?;
            if pair.expire_timestamp.is_some_and(|at| at <= now) {
                continue;
            }
            out.push(self.reveal(pair, decrypt)?);
        }
        Ok(out)
    }

    /// Deletes the pairs that expired at or before `now`; returns how many.
    pub fn kv_sweep_expired(&self, now: DateTime<Utc>) -> StoreResult<usize> {
        let end = u64::try_from(now.timestamp_millis())
            .unwrap_or(0)
            .saturating_add(1)
            .to_be_bytes();
        let mut swept = 0;
        for item in self.kv_expiry.range(..&end[..]) {
            let (k, _) = item?;
            let (ms, name) = k.split_at(8.min(k.len()));
            let at = <[u8; 8]>::try_from(ms)
                .ok()
                .and_then(|b| i64::try_from(u64::from_be_bytes(b)).ok())
                .and_then(DateTime::from_timestamp_millis);
            let (Some(at), Ok(name)) = (at, std::str::from_utf8(name)) else {
                // Not a key this file writes: drop it so it is not met again.
                self.kv_expiry.remove(&k)?;
                continue;
            };
            if self.kv_remove_expired(name, at, now)? {
                swept += 1;
            }
        }
        Ok(swept)
    }
}

/// The store's key-value pairs as rules templates (`st2kv.system.x`, `kv.x`) and Rhai
/// scripts (`kv::get/set/delete`) see them.
#[derive(Debug, Clone)]
pub struct StoreKv(pub Arc<Store>);

impl squall_rules::KeyValueLookup for StoreKv {
    fn get(&self, name: &str) -> Option<String> {
        match self.0.kv_get(name, true) {
            Ok(pair) => pair.map(|p| p.value),
            // Templates can only say "undefined"; the cause goes to the log.
            Err(e) => {
                tracing::warn!(key = name, error = %e, "key-value lookup failed");
                None
            }
        }
    }
}

/// The key-value store as one execution's script sees it (`kv::get`, `kv::set`,
/// `kv::delete`, `kv::claim`). It remembers how far the store's writes had gone at the script's
/// last call, so that [`ScriptKv::make_durable`] can put what the script wrote or read on disk
/// before its result is recorded.
#[derive(Debug)]
pub struct ScriptKv {
    store: Arc<Store>,
    execution: String,
    seen: AtomicU64,
}

impl ScriptKv {
    /// The store as the script of `execution` (its id) sees it.
    pub fn new(store: Arc<Store>, execution: &str) -> Self {
        ScriptKv {
            store,
            execution: execution.to_string(),
            seen: AtomicU64::new(0),
        }
    }

    /// The mark to pass to [`Store::kv_durable`]: 0 when the script made no key-value call.
    pub fn seen(&self) -> u64 {
        self.seen.load(Ordering::SeqCst)
    }

    /// Makes what the script wrote, and the writes it read, durable.
    pub fn make_durable(&self) -> StoreResult<()> {
        match self.seen() {
            0 => Ok(()),
            mark => self.store.kv_durable(mark),
        }
    }

    fn saw(&self) {
        self.seen
            .fetch_max(self.store.kv_writes_begun(), Ordering::SeqCst);
    }
}

impl squall_actions::KvStore for ScriptKv {
    fn get(&self, name: &str) -> Result<Option<String>, String> {
        let value = self.store.kv_get(name, true);
        self.saw();
        value
            .map(|pair| pair.map(|p| p.value))
            .map_err(|e| e.to_string())
    }

    fn set(&self, name: &str, value: &str, ttl_seconds: Option<u64>) -> Result<(), String> {
        let done = self.store.kv_set(name, value, false, ttl_seconds);
        self.saw();
        done.map(|_| ()).map_err(|e| e.to_string())
    }

    fn delete(&self, name: &str) -> Result<bool, String> {
        let done = self.store.kv_delete(name);
        self.saw();
        done.map_err(|e| e.to_string())
    }

    /// Durable before the script goes on when true, with the execution that holds it: another
    /// execution, or this one run again after a crash, sees the claim.
    fn claim(&self, name: &str, value: &str, ttl_seconds: Option<u64>) -> Result<bool, String> {
        let claimed = self
            .store
            .kv_claim(name, value, ttl_seconds, &self.execution);
        self.saw();
        let claimed = claimed.map_err(|e| e.to_string())?;
        if claimed {
            self.store.durable_now().map_err(|e| e.to_string())?;
        }
        Ok(claimed)
    }
}
