//! The one narrow interface to persistence: trigger instances, rule enforcements, executions,
//! the key-value store and API keys, kept in an embedded sled database.
//!
//! This file and its `pages` and `behind` modules are all that touch sled, so the backend can
//! change without the rest of the engine noticing. It must never decide policy (what to run, when to retry, who
//! may see what): it stores, indexes and finds records. It must never write a secret value in
//! clear text, never store a clear API key, and never delete a pending trigger instance or a
//! non-terminal execution, because those are what recovery after a crash starts from.
//!
//! Layout: records are JSON in sled trees. Time-ordered records are keyed by their ULID id, so
//! key order is time order (newest first = reverse iteration) and retention is a range scan.
//! Trigger instances and rule enforcements, written by the rules loop in batches and never
//! changed after (but for a pending instance's status), are kept in pages: all those of one
//! millisecond in one value keyed by the ids' first ten characters (`store/pages.rs`), since
//! sled's cost is per write; their by-trigger and by-rule indexes name pages.
//! Secondary indexes live in their own trees and change in the same sled transaction as the
//! record they index. The pipeline's records reach sled through the store's writer thread
//! (`store/behind.rs`), many per transaction; reads see them as if written at once. Writes are
//! durable once the caller has awaited [`Store::flush`] (which first lets the writer write what
//! it holds).
//! The sled files live in `<dir>/sled/`; the key that encrypts secrets, when none is
//! configured, in `<dir>/secret.key`.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::fmt;
use std::fs;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine as _;
use chacha20poly1305::{ChaCha20Poly1305, Key, KeyInit};
use chrono::{DateTime, Utc};
use rand::rngs::OsRng;
use rand::RngCore;
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use sled::transaction::{
    ConflictableTransactionError, TransactionError, Transactional, TransactionalTree,
};
use sled::Tree;

mod behind;
mod kv;
mod markers;
mod pages;

pub use behind::{AfterStored, NewInstance};
use behind::{Behind, HotTrees};
use kv::KvDurability;
pub use kv::{ScriptKv, StoreKv};
use markers::{TxMarkers, T_ENF_MARKERS};
use pages::{Paged, TxPages};

use crate::model::{
    new_id, ApiKey, Execution, ExecutionStatus, KeyValuePair, RuleEnforcement, TriggerInstance,
    TriggerInstanceStatus, SCHEMA_VERSION,
};

/// sled's page cache unless set otherwise (`store_cache_mb`): sled's own default, 1 GiB, is
/// more than a small VM should give an ops daemon.
pub const DEFAULT_CACHE_BYTES: u64 = 128 * 1024 * 1024;

/// Version of the secondary indexes' layout. When a data dir was indexed under another
/// version (or never), the indexes are rebuilt from the records at open, so changing an
/// index's layout only needs a bump here.
const INDEX_VERSION: u32 = 6;

/// Trigger instances in pages, one per millisecond of ids (see `pages`).
const T_TI_PAGES: &str = "trigger_instance_pages";
/// Where squall kept trigger instances one per value, before pages; moved into pages at open.
const T_TI_LEGACY: &str = "trigger_instances";
const T_PENDING: &str = "trigger_instances_pending";
const T_TI_BY_TRIGGER: &str = "trigger_instances_by_trigger";
/// Rule enforcements in pages, like trigger instances.
const T_ENF_PAGES: &str = "enforcement_pages";
/// Where squall kept rule enforcements one per value, before pages; moved into pages at open.
const T_ENF_LEGACY: &str = "enforcements";
/// Where squall kept an instance's enforcement markers one per value, before marker pages
/// (`markers`); dropped when the indexes are rebuilt.
const T_ENF_BY_INSTANCE_LEGACY: &str = "enforcements_by_instance";
const T_ENF_BY_RULE: &str = "enforcements_by_rule";
/// Finished executions in pages, like trigger instances, labelled with their status: most
/// executions end within the store writer's few milliseconds and are written once, into the
/// page of their id's millisecond (sled keeps memory per page of every tree, so one value per
/// millisecond instead of one per execution keeps squall's memory from following its data).
const T_EXEC_PAGES: &str = "execution_pages";
/// Unfinished executions, one per value (`status \0 record`); an execution moves from here to
/// its page when it ends.
const T_LIVE: &str = "executions_live";
/// Where squall kept every execution one per value, before pages; moved at open.
const T_EXEC_LEGACY: &str = "executions";
/// The statuses of unfinished executions, before `executions_live`; dropped at open.
const T_ACTIVE_LEGACY: &str = "executions_active";
const T_EXEC_BY_FIELD: &str = "executions_by_field";
const T_EXEC_COUNTS: &str = "execution_counts";
const T_KV: &str = "kv";
const T_KV_EXPIRY: &str = "kv_expiry";
const T_APIKEYS: &str = "apikeys";
const T_APIKEY_BY_HASH: &str = "apikeys_by_hash";
const T_META: &str = "meta";
/// Parts of large workflows' states kept beside their execution record (see
/// [`Store::put_workflow_step`]), keyed by workflow id, then the part's own key.
const T_WORKFLOW_PARTS: &str = "workflow_parts";
/// Correlation rules' open groups (see [`CorrelationWrite`]): per rule, a header and one record
/// per open group, changed in the same transaction as the instance whose outcome changed them.
const T_CORRELATIONS: &str = "correlations";

const META_INDEX_VERSION: &[u8] = b"index_version";
/// Prefix of the `meta` entries saying whether a rule is enabled (see
/// [`Store::rule_enabled_overrides`]).
const RULE_ENABLED_PREFIX: &[u8] = b"rule_enabled/";
const KEY_FILE: &str = "secret.key";
const NONCE_LEN: usize = 12;

// Tags of the execution field index (`executions_by_field`): `<tag><value>\0<id>`.
const IDX_ACTION: u8 = b'a';
const IDX_PARENT: u8 = b'p';
const IDX_RULE: u8 = b'r';
const IDX_TRIGGER_INSTANCE: u8 = b't';

/// What can go wrong reaching the store.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("store: {0}")]
    Sled(#[from] sled::Error),
    #[error("store: record `{key}` in `{tree}` cannot be read: {error}")]
    Corrupt {
        tree: &'static str,
        key: String,
        error: String,
    },
    #[error("store: {0}")]
    Crypto(String),
    #[error("store: {path}: {source}")]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
    /// The caller asked for something the store refuses (a bad argument, not bad data).
    #[error("store: {0}")]
    Invalid(String),
    #[error("store: no {kind} `{id}`")]
    NotFound { kind: &'static str, id: String },
}

pub type StoreResult<T> = Result<T, StoreError>;

/// Which executions to list; every field set must match (ANDed).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ExecutionFilter {
    pub action: Option<String>,
    pub status: Option<ExecutionStatus>,
    pub parent: Option<String>,
    pub trigger_instance: Option<String>,
    pub rule: Option<String>,
}

impl ExecutionFilter {
    fn matches(&self, e: &Execution) -> bool {
        wanted(self.action.as_deref(), Some(e.action.as_str()))
            && (self.status.is_none() || self.status == Some(e.status))
            && wanted(self.parent.as_deref(), e.parent.as_deref())
            && wanted(
                self.trigger_instance.as_deref(),
                e.trigger_instance.as_deref(),
            )
            && wanted(self.rule.as_deref(), e.rule.as_deref())
    }
}

/// True when no value is wanted or the value is the one wanted.
fn wanted(want: Option<&str>, have: Option<&str>) -> bool {
    match want {
        None => true,
        Some(w) => have == Some(w),
    }
}

/// How many records a retention sweep deleted.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct SweepCounts {
    pub trigger_instances: usize,
    pub enforcements: usize,
    pub executions: usize,
}

/// squall's persistent state. Cheap to share behind an `Arc`; every method is safe to call
/// from many threads at once.
pub struct Store {
    db: sled::Db,
    tis: Paged,
    pending: Tree,
    ti_by_trigger: Tree,
    enfs: Paged,
    enf_markers: Tree,
    enf_by_rule: Tree,
    live: Tree,
    exec_pages: Paged,
    exec_by_field: Tree,
    exec_counts: Tree,
    kv: Tree,
    kv_expiry: Tree,
    apikeys: Tree,
    apikey_by_hash: Tree,
    meta: Tree,
    workflow_parts: Tree,
    correlations: Tree,
    cipher: ChaCha20Poly1305,
    /// Counts key-value writes and shares the flushes that make them durable (see `kv`).
    kv_durability: KvDurability,
    /// The pipeline's records on their way to sled (see `behind`).
    behind: Arc<Behind>,
    writer: std::sync::Mutex<Option<std::thread::JoinHandle<()>>>,
}

impl Drop for Store {
    /// Everything queued for the writer is written before the store closes.
    fn drop(&mut self) {
        self.behind.stop();
        let handle = match self.writer.lock() {
            Ok(mut h) => h.take(),
            Err(p) => p.into_inner().take(),
        };
        if let Some(handle) = handle {
            if handle.join().is_err() {
                tracing::error!("the store's writer thread panicked");
            }
        }
    }
}

impl fmt::Debug for Store {
    // Hand-written so the cipher (the secrets' key) can never end up in a log line.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Store").finish_non_exhaustive()
    }
}

/// Every record type carries its schema version.
trait Record: DeserializeOwned {
    fn version(&self) -> u32;
}

macro_rules! record {
    ($($t:ty),*) => {
        $(impl Record for $t {
            fn version(&self) -> u32 {
                self.v
            }
        })*
    };
}
record!(
    TriggerInstance,
    RuleEnforcement,
    Execution,
    KeyValuePair,
    ApiKey
);

/// Just the version of a record, to explain why a record that does not parse fails.
#[derive(Deserialize)]
struct Versioned {
    v: u32,
}

fn newer_schema(tree: &'static str, key: &[u8], v: u32) -> StoreError {
    StoreError::Corrupt {
        tree,
        key: String::from_utf8_lossy(key).into_owned(),
        error: format!(
            "written by a newer squall (schema version {v}; this build reads up to {SCHEMA_VERSION})"
        ),
    }
}

fn decode<T: Record>(tree: &'static str, key: &[u8], bytes: &[u8]) -> StoreResult<T> {
    match serde_json::from_slice::<T>(bytes) {
        Ok(record) if record.version() <= SCHEMA_VERSION => Ok(record),
        Ok(record) => Err(newer_schema(tree, key, record.version())),
        Err(error) => match serde_json::from_slice::<Versioned>(bytes) {
            Ok(Versioned { v }) if v > SCHEMA_VERSION => Err(newer_schema(tree, key, v)),
            _ => Err(StoreError::Corrupt {
                tree,
                key: String::from_utf8_lossy(key).into_owned(),
                error: error.to_string(),
            }),
        },
    }
}

fn encode<T: Serialize>(tree: &'static str, key: &str, record: &T) -> StoreResult<Vec<u8>> {
    serde_json::to_vec(record).map_err(|e| StoreError::Corrupt {
        tree,
        key: key.to_string(),
        error: format!("cannot encode: {e}"),
    })
}

type TxResult<T> = Result<T, ConflictableTransactionError<StoreError>>;

fn tx_error(e: TransactionError<StoreError>) -> StoreError {
    match e {
        TransactionError::Abort(e) => e,
        TransactionError::Storage(e) => StoreError::Sled(e),
    }
}

fn abort<T>(e: StoreError) -> TxResult<T> {
    Err(ConflictableTransactionError::Abort(e))
}

/// Refuses a completion the store must not write: a status that is not final, an enforcement
/// of another instance, or an execution no enforcement requested (written on its own, it would
/// escape the exactly-once check).
fn check_completion(
    ti_id: &str,
    status: TriggerInstanceStatus,
    enforcements: &[RuleEnforcement],
    executions: &[&Execution],
) -> StoreResult<()> {
    if matches!(
        status,
        TriggerInstanceStatus::Pending | TriggerInstanceStatus::Processing
    ) {
        return Err(StoreError::Invalid(format!(
            "trigger instance `{ti_id}` cannot be completed with status {status:?}"
        )));
    }
    if let Some(enf) = enforcements
        .iter()
        .find(|enf| enf.trigger_instance_id != ti_id)
    {
        return Err(StoreError::Invalid(format!(
            "enforcement `{}` is for trigger instance `{}`, not `{ti_id}`",
            enf.id, enf.trigger_instance_id
        )));
    }
    let requested: HashSet<&str> = enforcements
        .iter()
        .filter_map(|enf| enf.execution_id.as_deref())
        .collect();
    if let Some(e) = executions
        .iter()
        .find(|e| !requested.contains(e.id.as_str()))
    {
        return Err(StoreError::Invalid(format!(
            "execution `{}` is not requested by any enforcement of `{ti_id}`",
            e.id
        )));
    }
    Ok(())
}

/// `<a>\0<b>`: the layout of every composite index key. Lookups always re-check the record,
/// so a value that itself holds a NUL can at worst cost a wasted read, never a wrong answer.
/// A workflow part's key: the workflow's id, a 0 byte, the part's own key.
fn part_key(workflow: &str, key: &[u8]) -> Vec<u8> {
    let mut k = Vec::with_capacity(workflow.len() + 1 + key.len());
    k.extend_from_slice(workflow.as_bytes());
    k.push(0);
    k.extend_from_slice(key);
    k
}

/// In a sweep's transaction: takes the records of page `pk` that `goes` selects out of it.
/// Returns how many records went and the labels no record left in the page has (their index
/// entries may go: see [`drop_stale_entries`]).
fn sweep_page(
    tree: &TransactionalTree,
    name: &'static str,
    pk: &[u8],
    mut goes: impl FnMut(&pages::Frame<'_>) -> TxResult<bool>,
) -> TxResult<(usize, Vec<Vec<u8>>)> {
    let Some(page) = tree.get(pk)? else {
        return Ok((0, Vec::new()));
    };
    let mut removed = 0usize;
    let mut gone: HashSet<Vec<u8>> = HashSet::new();
    let mut kept: HashSet<Vec<u8>> = HashSet::new();
    let rest = pages::retain(
        &page,
        |frame| {
            let go = goes(frame)?;
            if go {
                removed += 1;
                gone.insert(frame.label.to_vec());
            } else {
                kept.insert(frame.label.to_vec());
            }
            Ok(!go)
        },
        |e| ConflictableTransactionError::Abort(pages::corrupt(name, pk, e)),
    )?;
    if removed == 0 {
        return Ok((0, Vec::new()));
    }
    if rest.is_empty() {
        tree.remove(pk)?;
    } else {
        tree.insert(pk, rest)?;
    }
    Ok((removed, gone.difference(&kept).cloned().collect()))
}

/// After a sweep: removes the entries of `index` (keyed by label and group) for labels that
/// went from pages of `paged` and that no page left in their group has.
fn drop_stale_entries(
    paged: &Paged,
    index: &Tree,
    gone: std::collections::BTreeMap<Vec<u8>, HashSet<Vec<u8>>>,
) -> StoreResult<()> {
    for (group, labels) in gone {
        let mut present = HashSet::new();
        for item in paged.tree.scan_prefix(&group) {
            let (pk, page) = item?;
            for frame in pages::frames(&page) {
                let frame = frame.map_err(|e| pages::corrupt(paged.name, &pk, e))?;
                present.insert(frame.label.to_vec());
            }
        }
        for label in labels.difference(&present) {
            index.remove(pages::index_key(label, &group))?;
        }
    }
    Ok(())
}

/// Inserts an index entry (an empty value) unless it is there: entries are shared by many
/// records, and a read costs less than a write.
fn ensure_entry(tree: &TransactionalTree, key: Vec<u8>) -> TxResult<()> {
    if tree.get(&key)?.is_none() {
        tree.insert(key, &[][..])?;
    }
    Ok(())
}

fn field_prefix(tag: u8, value: &str) -> Vec<u8> {
    let mut k = Vec::with_capacity(value.len() + 2);
    k.push(tag);
    k.extend_from_slice(value.as_bytes());
    k.push(0);
    k
}

/// The index values of an execution's fields: its action, parent, rule, and its trigger
/// instance's group (instances of 32 ms share an entry; a lookup re-checks the records).
fn exec_fields(e: &Execution) -> [(u8, Option<&str>); 4] {
    [
        (IDX_ACTION, Some(e.action.as_str())),
        (IDX_PARENT, e.parent.as_deref()),
        (IDX_RULE, e.rule.as_deref()),
        (
            IDX_TRIGGER_INSTANCE,
            e.trigger_instance
                .as_deref()
                .map(|t| std::str::from_utf8(pages::group_key(t.as_bytes())).unwrap_or(t)),
        ),
    ]
}

/// The index value a filter on `tag` looks up.
fn field_value(tag: u8, wanted: &str) -> &str {
    if tag == IDX_TRIGGER_INSTANCE {
        std::str::from_utf8(pages::group_key(wanted.as_bytes())).unwrap_or(wanted)
    } else {
        wanted
    }
}

/// The field index's entries for an execution: `tag value \0 group`, naming the 32 ms of
/// execution ids (a prefix of the executions tree, see `pages::group_key`) that hold
/// executions with that value. Executions of one group share entries, so most writes add none:
/// sled's cost is per write.
fn exec_field_keys(e: &Execution) -> Vec<Vec<u8>> {
    exec_fields(e)
        .into_iter()
        .filter_map(|(tag, value)| {
            value.map(|v| {
                let mut k = field_prefix(tag, v);
                k.extend_from_slice(pages::group_key(e.id.as_bytes()));
                k
            })
        })
        .collect()
}

/// The smallest ULID text of the cutoff's millisecond: every id before it is older.
fn cutoff_key(cutoff: DateTime<Utc>) -> Option<String> {
    let ms = u64::try_from(cutoff.timestamp_millis()).ok()?;
    // ULIDs hold 48 bits of milliseconds (year 10889); a later cutoff means "everything".
    let ms = ms.min((1u64 << 48) - 1);
    Some(ulid::Ulid::from_parts(ms, 0).to_string())
}

/// `kv_expiry` key: expiry in milliseconds (big endian, so key order is time order) + name.
fn expiry_key(at: DateTime<Utc>, name: &str) -> Vec<u8> {
    let ms = u64::try_from(at.timestamp_millis()).unwrap_or(0);
    let mut k = Vec::with_capacity(8 + name.len());
    k.extend_from_slice(&ms.to_be_bytes());
    k.extend_from_slice(name.as_bytes());
    k
}

fn hex(bytes: &[u8]) -> String {
    use fmt::Write as _;
    let mut s = String::with_capacity(bytes.len() * 2);
    for b in bytes {
        // Writing to a String cannot fail.
        let _ = write!(s, "{b:02x}");
    }
    s
}

fn hash_api_key(key: &str) -> String {
    hex(&Sha256::digest(key.as_bytes()))
}

fn suffix_after(key: &[u8], prefix_len: usize) -> Vec<u8> {
    key.get(prefix_len..).unwrap_or_default().to_vec()
}

/// Keeps the records `keep` accepts, skipping `offset` of them, up to `limit`.
fn page<T>(
    items: impl Iterator<Item = StoreResult<Option<T>>>,
    keep: impl Fn(&T) -> bool,
    limit: usize,
    offset: usize,
) -> StoreResult<Vec<T>> {
    let mut out = Vec::new();
    if limit == 0 {
        return Ok(out);
    }
    let mut skipped = 0;
    for item in items {
        let item = match item {
            // `None`: an index entry whose record a concurrent sweep just removed.
            Ok(None) => continue,
            Ok(Some(item)) => item,
            // One damaged record must not hide every other (nor stop a restart): it is said
            // and left out.
            Err(e @ StoreError::Corrupt { .. }) => {
                tracing::error!(error = %e, "a stored record cannot be read; left out");
                continue;
            }
            Err(e) => return Err(e),
        };
        if !keep(&item) {
            continue;
        }
        if skipped < offset {
            skipped += 1;
            continue;
        }
        out.push(item);
        if out.len() >= limit {
            break;
        }
    }
    Ok(out)
}

/// Two sequences of executions, each in id order (both newest first, or both oldest first),
/// merged into one in that order; an error comes out as soon as it is met.
struct MergeById<A: Iterator, B: Iterator> {
    a: std::iter::Peekable<A>,
    b: std::iter::Peekable<B>,
    newest_first: bool,
}

impl<A, B> Iterator for MergeById<A, B>
where
    A: Iterator<Item = StoreResult<Execution>>,
    B: Iterator<Item = StoreResult<Execution>>,
{
    type Item = StoreResult<Execution>;

    fn next(&mut self) -> Option<Self::Item> {
        let a_first = match (self.a.peek(), self.b.peek()) {
            (Some(Err(_)), _) | (Some(_), None) => true,
            (_, Some(Err(_))) | (None, _) => false,
            (Some(Ok(x)), Some(Ok(y))) if x.id == y.id => {
                // Seen in both while it moved between them: the second (its page) is the
                // later state.
                self.a.next();
                false
            }
            (Some(Ok(x)), Some(Ok(y))) => (x.id > y.id) == self.newest_first,
        };
        if a_first {
            self.a.next()
        } else {
            self.b.next()
        }
    }
}

/// A live execution's value in `executions_live`: its status, a 0 byte, its record, so
/// updating a running workflow reads its status without decoding its state.
fn live_value(e: &Execution, bytes: &[u8]) -> Vec<u8> {
    let status = e.status.as_str().as_bytes();
    let mut v = Vec::with_capacity(status.len() + 1 + bytes.len());
    v.extend_from_slice(status);
    v.push(0);
    v.extend_from_slice(bytes);
    v
}

/// The status and record bytes of a live execution's value.
fn split_live<'v>(key: &[u8], v: &'v [u8]) -> StoreResult<(ExecutionStatus, &'v [u8])> {
    let parsed = v.iter().position(|b| *b == 0).and_then(|at| {
        let status = std::str::from_utf8(&v[..at])
            .ok()
            .and_then(ExecutionStatus::parse)?;
        Some((status, &v[at + 1..]))
    });
    parsed.ok_or_else(|| StoreError::Corrupt {
        tree: T_LIVE,
        key: String::from_utf8_lossy(key).into_owned(),
        error: "value does not start with a status and a 0 byte".into(),
    })
}

fn decode_live(key: &[u8], v: &[u8]) -> StoreResult<Execution> {
    let (_, record) = split_live(key, v)?;
    decode(T_LIVE, key, record)
}

/// The trees an execution write touches, inside a transaction: unfinished executions one per
/// value in `executions_live`, finished ones in pages (labelled with their status). Status
/// counters change once per transaction and pages are written once ([`ExecTx::finish`]),
/// however many executions it writes.
struct ExecTx<'a> {
    live: &'a TransactionalTree,
    pages: std::cell::RefCell<TxPages<'a>>,
    by_field: &'a TransactionalTree,
    counts: &'a TransactionalTree,
    /// Per status (in [`ExecutionStatus::ALL`]'s order), how its counter moves.
    deltas: std::cell::RefCell<[i64; ExecutionStatus::ALL.len()]>,
    /// Field index entries this transaction has seen to.
    indexed: std::cell::RefCell<HashSet<Vec<u8>>>,
}

impl<'a> ExecTx<'a> {
    fn new(
        live: &'a TransactionalTree,
        pages: &'a TransactionalTree,
        by_field: &'a TransactionalTree,
        counts: &'a TransactionalTree,
    ) -> Self {
        ExecTx {
            live,
            pages: std::cell::RefCell::new(TxPages::new(pages, T_EXEC_PAGES)),
            by_field,
            counts,
            deltas: std::cell::RefCell::new([0; ExecutionStatus::ALL.len()]),
            indexed: std::cell::RefCell::default(),
        }
    }

    fn bump(&self, status: ExecutionStatus, up: bool) {
        if let Some(i) = ExecutionStatus::ALL.iter().position(|s| *s == status) {
            self.deltas.borrow_mut()[i] += if up { 1 } else { -1 };
        }
    }

    /// Writes the pages and counters this transaction changed: call once, last, in every
    /// transaction that wrote executions.
    fn finish(&self) -> TxResult<()> {
        self.pages.borrow_mut().write()?;
        let deltas = *self.deltas.borrow();
        for (status, delta) in ExecutionStatus::ALL.iter().zip(deltas) {
            if delta == 0 {
                continue;
            }
            let key = status.as_str().as_bytes();
            let current = match self.counts.get(key)? {
                None => 0,
                Some(v) => match <[u8; 8]>::try_from(v.as_ref()) {
                    Ok(b) => u64::from_be_bytes(b),
                    Err(_) => {
                        return abort(StoreError::Corrupt {
                            tree: T_EXEC_COUNTS,
                            key: status.as_str().to_string(),
                            error: format!("counter holds {} bytes, expected 8", v.len()),
                        })
                    }
                },
            };
            let next = current.saturating_add_signed(delta);
            self.counts.insert(key, next.to_be_bytes().to_vec())?;
        }
        Ok(())
    }

    /// The stored status of an execution: from its live value's prefix or its page frame's
    /// label, so an update decodes no record.
    fn old_status(&self, id: &str) -> TxResult<Option<ExecutionStatus>> {
        if let Some(v) = self.live.get(id.as_bytes())? {
            return split_live(id.as_bytes(), &v)
                .map(|(s, _)| Some(s))
                .or_else(abort);
        }
        let Some(label) = self.pages.borrow_mut().label(id)? else {
            return Ok(None);
        };
        match std::str::from_utf8(&label)
            .ok()
            .and_then(ExecutionStatus::parse)
        {
            Some(s) => Ok(Some(s)),
            None => abort(StoreError::Corrupt {
                tree: T_EXEC_PAGES,
                key: id.to_string(),
                error: format!("label `{}` is no status", String::from_utf8_lossy(&label)),
            }),
        }
    }

    /// Writes an execution. Its indexed fields (action, parent, rule, trigger instance) are
    /// set when it is created and never change, so only a new execution adds index entries.
    fn put(&self, e: &Execution, bytes: &[u8]) -> TxResult<()> {
        let old_status = self.old_status(&e.id)?;
        self.write(e, bytes, old_status)
    }

    /// Writes an execution created in this transaction (its id was never stored): no lookup
    /// of a previous status.
    fn put_new(&self, e: &Execution, bytes: &[u8]) -> TxResult<()> {
        self.write(e, bytes, None)
    }

    fn write(
        &self,
        e: &Execution,
        bytes: &[u8],
        old_status: Option<ExecutionStatus>,
    ) -> TxResult<()> {
        let status = e.status.as_str();
        if e.status.is_terminal() {
            let mut pages = self.pages.borrow_mut();
            match old_status {
                None => pages.put_new(&e.id, status, bytes)?,
                Some(s) if s.is_terminal() => pages.put(&e.id, status, bytes)?,
                Some(_) => {
                    // It ends: from live to its page.
                    self.live.remove(e.id.as_bytes())?;
                    pages.put(&e.id, status, bytes)?;
                }
            }
        } else {
            self.live.insert(e.id.as_bytes(), live_value(e, bytes))?;
            if old_status.is_some_and(|s| s.is_terminal()) {
                // Re-run into a live state: out of its page.
                self.pages.borrow_mut().remove(&e.id)?;
            }
        }
        if old_status.is_none() {
            for k in exec_field_keys(e) {
                // Entries are shared: most are there already, and a read costs less than a
                // write.
                if self.indexed.borrow_mut().insert(k.clone()) && self.by_field.get(&k)?.is_none() {
                    self.by_field.insert(k, &[][..])?;
                }
            }
        }
        match old_status {
            Some(s) if s == e.status => {}
            Some(s) => {
                self.bump(s, false);
                self.bump(e.status, true);
            }
            None => self.bump(e.status, true),
        }
        Ok(())
    }

    /// Removes an execution; its field index entries may name other executions too (the
    /// retention sweep drops those left naming none).
    fn remove(&self, e: &Execution) -> TxResult<()> {
        if e.status.is_terminal() {
            self.pages.borrow_mut().remove(&e.id)?;
        } else {
            self.live.remove(e.id.as_bytes())?;
        }
        self.bump(e.status, false);
        Ok(())
    }
}

impl Store {
    /// Opens (creating if needed) the store in `dir`. Secrets are encrypted under
    /// `secret_key` when given, else under `<dir>/secret.key`, created on first open. A
    /// different key does not stop the store from opening: only decrypting secrets fails.
    /// sled's cache is [`DEFAULT_CACHE_BYTES`].
    pub fn open(dir: &Path, secret_key: Option<[u8; 32]>) -> StoreResult<Store> {
        Store::open_with_cache(dir, secret_key, DEFAULT_CACHE_BYTES)
    }

    /// [`Store::open`] with sled's cache of recently used pages limited to `cache_bytes`: the
    /// most of the store held in memory (squall's resident memory levels off near it under
    /// load); what it leaves out is read back from disk when asked for (older records' pages).
    pub fn open_with_cache(
        dir: &Path,
        secret_key: Option<[u8; 32]>,
        cache_bytes: u64,
    ) -> StoreResult<Store> {
        if dir.exists() && !dir.is_dir() {
            return Err(StoreError::Invalid(format!(
                "{} is not a directory: the data dir must be one (or not exist yet)",
                dir.display()
            )));
        }
        fs::create_dir_all(dir).map_err(|source| StoreError::Io {
            path: dir.to_path_buf(),
            source,
        })?;
        // sled locks its directory, so once this succeeds no other process is creating the
        // key file below at the same time.
        let db = sled::Config::new()
            .path(dir.join("sled"))
            .cache_capacity(cache_bytes)
            .open()
            .map_err(|e| match e {
                // sled locks its directory (its error names no kind to match on).
                sled::Error::Io(io) if io.to_string().contains("could not acquire lock") => {
                    StoreError::Invalid(format!(
                        "{} is in use by another squall (or another process holds its lock): stop it, or give another --data-dir",
                        dir.display()
                    ))
                }
                other => StoreError::Sled(other),
            })?;
        let key = match secret_key {
            Some(k) => k,
            None => load_or_create_key(dir)?,
        };
        let store = Store {
            tis: Paged {
                tree: db.open_tree(T_TI_PAGES)?,
                name: T_TI_PAGES,
            },
            pending: db.open_tree(T_PENDING)?,
            ti_by_trigger: db.open_tree(T_TI_BY_TRIGGER)?,
            enfs: Paged {
                tree: db.open_tree(T_ENF_PAGES)?,
                name: T_ENF_PAGES,
            },
            enf_markers: db.open_tree(T_ENF_MARKERS)?,
            enf_by_rule: db.open_tree(T_ENF_BY_RULE)?,
            live: db.open_tree(T_LIVE)?,
            exec_pages: Paged {
                tree: db.open_tree(T_EXEC_PAGES)?,
                name: T_EXEC_PAGES,
            },
            exec_by_field: db.open_tree(T_EXEC_BY_FIELD)?,
            exec_counts: db.open_tree(T_EXEC_COUNTS)?,
            kv: db.open_tree(T_KV)?,
            kv_expiry: db.open_tree(T_KV_EXPIRY)?,
            apikeys: db.open_tree(T_APIKEYS)?,
            apikey_by_hash: db.open_tree(T_APIKEY_BY_HASH)?,
            meta: db.open_tree(T_META)?,
            workflow_parts: db.open_tree(T_WORKFLOW_PARTS)?,
            correlations: db.open_tree(T_CORRELATIONS)?,
            cipher: ChaCha20Poly1305::new(Key::from_slice(&key)),
            kv_durability: KvDurability::default(),
            db,
            behind: Arc::default(),
            writer: std::sync::Mutex::new(None),
        };
        store.move_legacy(T_TI_LEGACY, &store.tis, |key, bytes| {
            let ti: TriggerInstance = decode(T_TI_LEGACY, key, bytes)?;
            Ok(Some((ti.id, ti.trigger)))
        })?;
        store.move_legacy(T_ENF_LEGACY, &store.enfs, |key, bytes| {
            let enf: RuleEnforcement = decode(T_ENF_LEGACY, key, bytes)?;
            Ok(Some((enf.id, enf.rule_ref)))
        })?;
        store.move_legacy_executions()?;
        store.ensure_indexes()?;
        let trees = HotTrees {
            tis: store.tis.clone(),
            ti_by_trigger: store.ti_by_trigger.clone(),
            enfs: store.enfs.clone(),
            enf_markers: store.enf_markers.clone(),
            enf_by_rule: store.enf_by_rule.clone(),
            live: store.live.clone(),
            exec_pages: store.exec_pages.clone(),
            exec_by_field: store.exec_by_field.clone(),
            exec_counts: store.exec_counts.clone(),
            correlations: store.correlations.clone(),
        };
        let behind = store.behind.clone();
        let handle = std::thread::Builder::new()
            .name("squall-store".into())
            .spawn(move || behind.run(&trees))
            .map_err(|source| StoreError::Io {
                path: dir.to_path_buf(),
                source,
            })?;
        if let Ok(mut w) = store.writer.lock() {
            *w = Some(handle);
        }
        Ok(store)
    }

    /// Waits until every record handed to [`Store::complete_new_later`] or
    /// [`Store::put_executions_later`] before the call is written (not yet flushed). Every
    /// other read or write of trigger instances, enforcements and executions does this first.
    pub fn settle(&self) {
        self.behind.settle();
    }

    /// Hands new trigger instances (straight from the journal, never stored) with their
    /// outcomes to the store's writer, which writes them within milliseconds, many per
    /// transaction; `after` runs once they are written. Checked here: each status must be final,
    /// each enforcement for its instance, each execution requested by one of its enforcements.
    pub fn complete_new_later(
        &self,
        list: Vec<NewInstance>,
        after: Option<AfterStored>,
    ) -> StoreResult<()> {
        for n in &list {
            let ti_id = n.ti.id.as_str();
            let executions: Vec<&Execution> = n.executions.iter().map(|e| &**e).collect();
            check_completion(ti_id, n.status, &n.enforcements, &executions)?;
        }
        self.behind.push_instances(list, after);
        Ok(())
    }

    /// Hands executions' new states to the store's writer (see [`Store::complete_new_later`]);
    /// [`Store::execution`] returns them at once.
    pub fn put_executions_later(&self, list: Vec<Arc<Execution>>, after: Option<AfterStored>) {
        self.behind.push_executions(list, after);
    }

    /// Records handed to the store's writer and not yet written.
    pub fn writer_backlog(&self) -> usize {
        self.behind.backlog()
    }

    /// Waits until everything written so far is on disk.
    pub async fn flush(&self) -> StoreResult<()> {
        self.settle();
        self.db.flush_async().await?;
        Ok(())
    }

    /// [`Store::flush`] for threads outside the async runtime.
    pub fn flush_blocking(&self) -> StoreResult<()> {
        self.settle();
        self.db.flush()?;
        Ok(())
    }

    /// Bytes sled's files take on disk.
    pub fn size_on_disk(&self) -> StoreResult<u64> {
        Ok(self.db.size_on_disk()?)
    }

    /// A sensor's saved position (its checkpoint), by sensor reference.
    pub fn sensor_state(&self, sensor: &str) -> StoreResult<Option<String>> {
        let key = format!("sensor/{sensor}");
        Ok(self
            .meta
            .get(key.as_bytes())?
            .map(|v| String::from_utf8_lossy(&v).into_owned()))
    }

    /// Saves a sensor's position; durable with the next flush.
    pub fn set_sensor_state(&self, sensor: &str, value: &str) -> StoreResult<()> {
        let key = format!("sensor/{sensor}");
        self.meta.insert(key.as_bytes(), value.as_bytes())?;
        Ok(())
    }

    /// Rules enabled or disabled through the API (st2's `st2 rule enable|disable`), by rule
    /// reference: what overrides their files' `enabled` at start and on reload.
    pub fn rule_enabled_overrides(&self) -> StoreResult<HashMap<String, bool>> {
        let mut out = HashMap::new();
        for item in self.meta.scan_prefix(RULE_ENABLED_PREFIX) {
            let (k, v) = item?;
            let rule = String::from_utf8_lossy(&k[RULE_ENABLED_PREFIX.len()..]).into_owned();
            out.insert(rule, v.as_ref() == b"1");
        }
        Ok(out)
    }

    /// Records that a rule is enabled or disabled through the API; durable with the next
    /// flush.
    pub fn set_rule_enabled(&self, rule: &str, enabled: bool) -> StoreResult<()> {
        let mut key = RULE_ENABLED_PREFIX.to_vec();
        key.extend_from_slice(rule.as_bytes());
        self.meta
            .insert(key, if enabled { &b"1"[..] } else { &b"0"[..] })?;
        Ok(())
    }

    /// Rebuilds the secondary indexes from the records when they were built by another
    /// layout version. The version is written last, so a crash mid-rebuild redoes it.
    fn ensure_indexes(&self) -> StoreResult<()> {
        let current = self
            .meta
            .get(META_INDEX_VERSION)?
            .and_then(|v| <[u8; 4]>::try_from(v.as_ref()).ok())
            .map(u32::from_be_bytes);
        if current == Some(INDEX_VERSION) {
            return Ok(());
        }
        if current.is_some() || !self.live.is_empty() || !self.exec_pages.tree.is_empty() {
            tracing::info!(from = ?current, to = INDEX_VERSION, "rebuilding store indexes");
        }
        for tree in [
            &self.ti_by_trigger,
            &self.enf_markers,
            &self.enf_by_rule,
            &self.exec_by_field,
            &self.exec_counts,
        ] {
            tree.clear()?;
        }
        // Markers one per value, before marker pages: rebuilt below into pages.
        self.db.drop_tree(T_ENF_BY_INSTANCE_LEGACY)?;
        for item in self.tis.tree.iter() {
            let (pk, page) = item?;
            for frame in pages::frames(&page) {
                let frame = frame.map_err(|e| pages::corrupt(T_TI_PAGES, &pk, e))?;
                self.ti_by_trigger
                    .insert(pages::index_key(frame.label, &pk), &[][..])?;
            }
        }
        for item in self.enfs.tree.iter() {
            let (pk, page) = item?;
            for frame in pages::frames(&page) {
                let frame = frame.map_err(|e| pages::corrupt(T_ENF_PAGES, &pk, e))?;
                let enf: RuleEnforcement = decode(T_ENF_PAGES, frame.id, frame.record)?;
                markers::add(
                    &self.enf_markers,
                    &enf.trigger_instance_id,
                    &enf.rule_ref,
                    &enf.id,
                )?;
                self.enf_by_rule
                    .insert(pages::index_key(frame.label, &pk), &[][..])?;
            }
        }
        let mut counts: HashMap<ExecutionStatus, u64> = HashMap::new();
        for e in self.executions_with_prefix(b"", false) {
            let e = e?;
            for key in exec_field_keys(&e) {
                self.exec_by_field.insert(key, &[][..])?;
            }
            *counts.entry(e.status).or_default() += 1;
        }
        for (status, n) in counts {
            self.exec_counts
                .insert(status.as_str().as_bytes(), &n.to_be_bytes()[..])?;
        }
        self.db.flush()?;
        self.meta
            .insert(META_INDEX_VERSION, &INDEX_VERSION.to_be_bytes()[..])?;
        self.db.flush()?;
        Ok(())
    }

    // ---- trigger instances ----

    /// Moves the records of `legacy`, a tree of one record per value kept by a squall before
    /// pages, into `paged`, then drops it. `id_label` gives a record's id and label (from its
    /// key and bytes). Pages are
    /// written and flushed before the old tree goes, and a record put twice replaces itself,
    /// so a crash midway only repeats the move.
    fn move_legacy(
        &self,
        legacy: &'static str,
        paged: &Paged,
        id_label: impl Fn(&[u8], &[u8]) -> StoreResult<Option<(String, String)>>,
    ) -> StoreResult<()> {
        if !self.db.tree_names().iter().any(|n| n == legacy.as_bytes()) {
            return Ok(());
        }
        let old = self.db.open_tree(legacy)?;
        if !old.is_empty() {
            tracing::info!(
                tree = legacy,
                records = old.len(),
                "moving records into pages"
            );
        }
        let mut current: Option<(Vec<u8>, Vec<u8>)> = None;
        let write = |page: Option<(Vec<u8>, Vec<u8>)>| -> StoreResult<()> {
            if let Some((pk, bytes)) = page {
                paged.tree.insert(pk, bytes)?;
            }
            Ok(())
        };
        for item in old.iter() {
            let (k, v) = item?;
            let Some((id, label)) = id_label(&k, &v)? else {
                continue;
            };
            let pk = pages::page_key(&id).to_vec();
            if current.as_ref().is_none_or(|(c, _)| *c != pk) {
                write(current.take())?;
                let existing = paged.tree.get(&pk)?.map(|p| p.to_vec()).unwrap_or_default();
                current = Some((pk.clone(), existing));
            }
            if let Some((_, page)) = current.as_mut() {
                pages::put(page, &id, &label, &v)
                    .map_err(|e| pages::corrupt(paged.name, &pk, e))?;
            }
        }
        write(current.take())?;
        self.db.flush()?;
        // Pages change the layout of the indexes naming them: rebuild those.
        self.meta.remove(META_INDEX_VERSION)?;
        self.db.drop_tree(legacy)?;
        self.db.flush()?;
        Ok(())
    }

    /// Moves executions kept one per value by a squall before execution pages: unfinished ones
    /// into `executions_live`, finished ones into pages (a crash midway repeats the move, which
    /// writes the same values again); the old index of unfinished ones' statuses goes.
    fn move_legacy_executions(&self) -> StoreResult<()> {
        let names = self.db.tree_names();
        if names.iter().any(|n| n == T_EXEC_LEGACY.as_bytes()) {
            let old = self.db.open_tree(T_EXEC_LEGACY)?;
            for item in old.iter() {
                let (k, v) = item?;
                let e: Execution = decode(T_EXEC_LEGACY, &k, &v)?;
                if !e.status.is_terminal() {
                    self.live.insert(&k, live_value(&e, &v))?;
                }
            }
            self.move_legacy(T_EXEC_LEGACY, &self.exec_pages, |k, v| {
                let e: Execution = decode(T_EXEC_LEGACY, k, v)?;
                Ok(e.status
                    .is_terminal()
                    .then(|| (e.id, e.status.as_str().to_string())))
            })?;
        }
        if names.iter().any(|n| n == T_ACTIVE_LEGACY.as_bytes()) {
            self.db.drop_tree(T_ACTIVE_LEGACY)?;
        }
        Ok(())
    }

    /// Stores a trigger instance and marks it pending for the rules loop, atomically.
    pub fn insert_trigger_instance(&self, ti: &TriggerInstance) -> StoreResult<()> {
        self.settle();
        let bytes = encode(T_TI_PAGES, &ti.id, ti)?;
        let pk = pages::page_key(&ti.id);
        (&self.tis.tree, &self.pending, &self.ti_by_trigger)
            .transaction(|(tis, pending, by_trigger)| {
                let mut tis = TxPages::new(tis, T_TI_PAGES);
                tis.put(&ti.id, &ti.trigger, &bytes)?;
                tis.write()?;
                pending.insert(ti.id.as_bytes(), &[][..])?;
                ensure_entry(by_trigger, pages::index_key(ti.trigger.as_bytes(), pk))?;
                Ok(())
            })
            .map_err(tx_error)
    }

    pub fn trigger_instance(&self, id: &str) -> StoreResult<Option<TriggerInstance>> {
        self.settle();
        self.tis.get(id)
    }

    /// Newest first. `trigger` accepts st2's names of built-in triggers as well as squall's.
    pub fn list_trigger_instances(
        &self,
        trigger: Option<&str>,
        limit: usize,
        offset: usize,
    ) -> StoreResult<Vec<TriggerInstance>> {
        self.settle();
        let by_trigger = trigger
            .map(squall_rules::canonical_trigger_ref)
            .map(|t| (&self.ti_by_trigger, t));
        self.tis.list(by_trigger, |_| true, limit, offset)
    }

    /// Oldest first: the trigger instances the rules loop has not completed.
    pub fn pending_trigger_instances(&self) -> StoreResult<Vec<TriggerInstance>> {
        self.settle();
        let mut out = Vec::new();
        for item in self.pending.iter() {
            let (k, _) = item?;
            let id = String::from_utf8_lossy(&k);
            let found = match self.trigger_instance(&id) {
                Err(e @ StoreError::Corrupt { .. }) => {
                    tracing::error!(error = %e, "a pending trigger instance cannot be read; skipped");
                    continue;
                }
                other => other?,
            };
            match found {
                Some(ti) => out.push(ti),
                // Inserted with its record in one transaction and never swept, so this means
                // the data dir was damaged; recovering the rest beats refusing to start.
                None => tracing::warn!(
                    id = %id,
                    "pending trigger instance has no record; skipped"
                ),
            }
        }
        Ok(out)
    }

    /// The rules loop's commit, in one transaction: writes each enforcement whose
    /// (trigger instance, rule) was not enforced before, with the execution it requested;
    /// skips those already enforced and their executions (exactly-once after a crash); sets
    /// the instance's status and takes it off the pending set. Returns the enforcements
    /// actually written.
    ///
    /// `status` must be final (processed or processing_failed), every enforcement must be for
    /// `ti_id` and every execution must be requested by one of the enforcements.
    pub fn complete_trigger_instance(
        &self,
        ti_id: &str,
        status: TriggerInstanceStatus,
        enforcements: &[RuleEnforcement],
        executions: &[Execution],
        correlation: &[CorrelationWrite],
    ) -> StoreResult<Vec<RuleEnforcement>> {
        self.settle();
        let requested: Vec<&Execution> = executions.iter().collect();
        check_completion(ti_id, status, enforcements, &requested)?;
        let enfs = enforcements
            .iter()
            .map(|enf| Ok((enf, encode(T_ENF_PAGES, &enf.id, enf)?)))
            .collect::<StoreResult<Vec<_>>>()?;
        let execs = executions
            .iter()
            .map(|e| Ok((e.id.as_str(), (e, encode(T_EXEC_PAGES, &e.id, e)?))))
            .collect::<StoreResult<HashMap<_, _>>>()?;
        (
            &self.tis.tree,
            &self.pending,
            &self.enfs.tree,
            &self.enf_markers,
            &self.enf_by_rule,
            &self.live,
            &self.exec_pages.tree,
            &self.exec_by_field,
            &self.exec_counts,
            &self.correlations,
        )
            .transaction(
                |(
                    tis,
                    pending,
                    enf_tree,
                    marker_tree,
                    by_rule,
                    live,
                    exec_pages,
                    by_field,
                    counts,
                    correlations,
                )| {
                    let exec_tx = ExecTx::new(live, exec_pages, by_field, counts);
                    // Built afresh on each attempt: sled reruns this closure on conflict.
                    let mut ti_pages = TxPages::new(tis, T_TI_PAGES);
                    let mut enf_pages = TxPages::new(enf_tree, T_ENF_PAGES);
                    let mut markers = TxMarkers::new(marker_tree);
                    let Some(mut ti) = ti_pages.get::<TriggerInstance>(ti_id)? else {
                        return abort(StoreError::NotFound {
                            kind: "trigger instance",
                            id: ti_id.to_string(),
                        });
                    };
                    ti.status = status;
                    let ti_bytes = encode(T_TI_PAGES, ti_id, &ti).or_else(abort)?;
                    ti_pages.put(ti_id, &ti.trigger, &ti_bytes)?;
                    pending.remove(ti_id.as_bytes())?;
                    // Rules enforced for it before (a run cut short after its outcome was
                    // written): skipped. One rule may enforce several times in one outcome
                    // (a correlation rule's windows closing together).
                    let mut before: HashMap<&str, bool> = HashMap::new();
                    for (enf, _) in &enfs {
                        if !before.contains_key(enf.rule_ref.as_str()) {
                            let had = markers.has(ti_id, &enf.rule_ref)?;
                            before.insert(&enf.rule_ref, had);
                        }
                    }
                    let mut written = Vec::new();
                    for (enf, enf_bytes) in &enfs {
                        if before.get(enf.rule_ref.as_str()) == Some(&true) {
                            continue;
                        }
                        markers.add(ti_id, &enf.rule_ref, &enf.id)?;
                        enf_pages.put(&enf.id, &enf.rule_ref, enf_bytes)?;
                        ensure_entry(
                            by_rule,
                            pages::index_key(enf.rule_ref.as_bytes(), pages::page_key(&enf.id)),
                        )?;
                        if let Some((e, e_bytes)) =
                            enf.execution_id.as_deref().and_then(|id| execs.get(id))
                        {
                            exec_tx.put(e, e_bytes)?;
                        }
                        written.push((*enf).clone());
                    }
                    write_correlation(correlations, correlation)?;
                    ti_pages.write()?;
                    enf_pages.write()?;
                    markers.write()?;
                    exec_tx.finish()?;
                    Ok(written)
                },
            )
            .map_err(tx_error)
    }

    /// The rules already enforced for a trigger instance.
    pub fn enforced_rules(&self, ti_id: &str) -> StoreResult<Vec<String>> {
        self.settle();
        Ok(markers::of_instance(&self.enf_markers, ti_id)?
            .into_iter()
            .map(|(rule, _)| rule)
            .collect())
    }

    // ---- executions ----

    /// Creates or replaces an execution, keeping the active index and counters in step.
    pub fn put_execution(&self, e: &Execution) -> StoreResult<()> {
        self.put_executions(std::slice::from_ref(e))
    }

    /// Several executions in one transaction (a workflow step: the workflow's state and the
    /// tasks it starts are written together or not at all).
    pub fn put_executions(&self, list: &[Execution]) -> StoreResult<()> {
        self.put_workflow_step(list, &[])
    }

    /// Puts back an execution the journal holds after a crash took it (or its latest status)
    /// from the store: written unless the store has it at the same stage or further (queued,
    /// started, ended). One a rule requested gets its enforcement back too, so re-processing
    /// its trigger instance does not enforce that rule again. True when it was written.
    pub fn restore_execution(&self, e: &Execution) -> StoreResult<bool> {
        self.settle();
        fn stage(s: ExecutionStatus) -> u8 {
            if s.is_terminal() {
                2
            } else if matches!(
                s,
                ExecutionStatus::Requested | ExecutionStatus::Scheduled | ExecutionStatus::Delayed
            ) {
                0
            } else {
                1
            }
        }
        let bytes = encode(T_EXEC_PAGES, &e.id, e)?;
        let enforcement = match (&e.rule, &e.trigger_instance) {
            (Some(rule), Some(ti)) => {
                let enf = RuleEnforcement {
                    v: crate::model::SCHEMA_VERSION,
                    id: crate::model::new_id(),
                    rule_ref: rule.clone(),
                    trigger_instance_id: ti.clone(),
                    execution_id: Some(e.id.clone()),
                    enforced_at: e.start_timestamp,
                    failure_reason: None,
                };
                let enf_bytes = encode(T_ENF_PAGES, &enf.id, &enf)?;
                Some((enf, enf_bytes))
            }
            _ => None,
        };
        (
            &self.live,
            &self.exec_pages.tree,
            &self.exec_by_field,
            &self.exec_counts,
            &self.enfs.tree,
            &self.enf_markers,
            &self.enf_by_rule,
        )
            .transaction(
                |(live, exec_pages, by_field, counts, enfs, marker_tree, by_rule)| {
                    let tx = ExecTx::new(live, exec_pages, by_field, counts);
                    let newer = tx
                        .old_status(&e.id)?
                        .is_none_or(|current| stage(e.status) > stage(current));
                    if newer {
                        tx.put(e, &bytes)?;
                    }
                    if let Some((enf, enf_bytes)) = &enforcement {
                        let mut markers = TxMarkers::new(marker_tree);
                        if !markers.has(&enf.trigger_instance_id, &enf.rule_ref)? {
                            markers.add(&enf.trigger_instance_id, &enf.rule_ref, &enf.id)?;
                            markers.write()?;
                            let mut enf_pages = TxPages::new(enfs, T_ENF_PAGES);
                            enf_pages.put(&enf.id, &enf.rule_ref, enf_bytes)?;
                            enf_pages.write()?;
                            ensure_entry(
                                by_rule,
                                pages::index_key(enf.rule_ref.as_bytes(), pages::page_key(&enf.id)),
                            )?;
                        }
                    }
                    tx.finish()?;
                    Ok(newer)
                },
            )
            .map_err(tx_error)
    }

    /// A workflow step: executions (the workflows' records and their new tasks) and parts of
    /// the workflows' states kept apart from their records, in one transaction. A part is
    /// `(workflow id, part key, bytes)`; writing a part replaces the one with that key.
    ///
    /// Large workflows (with-items over thousands of items) change a few items per step:
    /// keeping each item's state as its own part makes a step's cost follow what changed,
    /// not the workflow's size.
    pub fn put_workflow_step(
        &self,
        list: &[Execution],
        parts: &[(String, Vec<u8>, Vec<u8>)],
    ) -> StoreResult<()> {
        self.settle();
        let encoded = list
            .iter()
            .map(|e| encode(T_EXEC_PAGES, &e.id, e).map(|b| (e, b)))
            .collect::<StoreResult<Vec<_>>>()?;
        (
            &self.live,
            &self.exec_pages.tree,
            &self.exec_by_field,
            &self.exec_counts,
            &self.workflow_parts,
        )
            .transaction(|(live, exec_pages, by_field, counts, wf_parts)| {
                let tx = ExecTx::new(live, exec_pages, by_field, counts);
                for (e, bytes) in &encoded {
                    tx.put(e, bytes)?;
                }
                for (workflow, key, bytes) in parts {
                    wf_parts.insert(part_key(workflow, key), bytes.as_slice())?;
                }
                tx.finish()?;
                Ok(())
            })
            .map_err(tx_error)
    }

    /// Every correlation rule's stored state: its header and its open groups' records.
    pub fn correlation_states(&self) -> StoreResult<BTreeMap<String, StoredCorrelation>> {
        let mut out: BTreeMap<String, StoredCorrelation> = BTreeMap::new();
        for item in self.correlations.iter() {
            let (k, v) = item?;
            let Some(split) = k.iter().position(|b| *b == 0) else {
                continue;
            };
            let rule = String::from_utf8_lossy(&k[..split]).into_owned();
            let text = String::from_utf8_lossy(&v).into_owned();
            let entry = out.entry(rule).or_default();
            match k.get(split + 1) {
                Some(b'h') => entry.header = Some(text),
                Some(b'g') => entry.groups.push(text),
                _ => {}
            }
        }
        Ok(out)
    }

    /// Forgets a correlation rule's stored state (a rule removed, or changed so its groups no
    /// longer fit).
    pub fn drop_correlation_state(&self, rule: &str) -> StoreResult<()> {
        let mut prefix = rule.as_bytes().to_vec();
        prefix.push(0);
        let mut batch = sled::Batch::default();
        for item in self.correlations.scan_prefix(&prefix) {
            batch.remove(item?.0);
        }
        self.correlations.apply_batch(batch)?;
        Ok(())
    }

    /// A workflow's parts, as `(part key, bytes)` in key order.
    pub fn workflow_parts(&self, workflow: &str) -> StoreResult<Vec<(Vec<u8>, Vec<u8>)>> {
        let prefix = part_key(workflow, b"");
        self.workflow_parts
            .scan_prefix(&prefix)
            .map(|item| {
                let (k, v) = item?;
                Ok((k[prefix.len()..].to_vec(), v.to_vec()))
            })
            .collect()
    }

    pub fn execution(&self, id: &str) -> StoreResult<Option<Execution>> {
        if let Some(e) = self.behind.execution(id) {
            return Ok(Some((*e).clone()));
        }
        if let Some(v) = self.live.get(id.as_bytes())? {
            return decode_live(id.as_bytes(), &v).map(Some);
        }
        if let Some(e) = self.exec_pages.get(id)? {
            return Ok(Some(e));
        }
        // It may have moved from its page back to live in between (re-run).
        match self.live.get(id.as_bytes())? {
            Some(v) => decode_live(id.as_bytes(), &v).map(Some),
            None => Ok(None),
        }
    }

    /// The stored executions whose ids start with `prefix` (all of them for an empty one),
    /// live and finished merged, newest or oldest first.
    fn executions_with_prefix(
        &self,
        prefix: &[u8],
        newest_first: bool,
    ) -> Box<dyn Iterator<Item = StoreResult<Execution>> + '_> {
        let live = pages::scan_in_order(&self.live, prefix, newest_first).map(|item| {
            let (k, v) = item?;
            decode_live(&k, &v)
        });
        Box::new(MergeById {
            a: live.peekable(),
            b: self
                .exec_pages
                .records::<Execution>(prefix, newest_first)
                .peekable(),
            newest_first,
        })
    }

    /// Newest first; the filter's fields are ANDed. Uses the most selective index the filter
    /// allows, so listing a workflow's children or a rule's executions does not scan them all.
    pub fn list_executions(
        &self,
        filter: &ExecutionFilter,
        limit: usize,
        offset: usize,
    ) -> StoreResult<Vec<Execution>> {
        self.settle();
        let keep = |e: &Execution| filter.matches(e);
        let indexed = [
            (IDX_PARENT, filter.parent.as_deref()),
            (IDX_TRIGGER_INSTANCE, filter.trigger_instance.as_deref()),
            (IDX_RULE, filter.rule.as_deref()),
            (IDX_ACTION, filter.action.as_deref()),
        ]
        .into_iter()
        .find_map(|(tag, value)| value.map(|v| field_prefix(tag, field_value(tag, v))));
        if let Some(prefix) = indexed {
            // Entries name groups of execution ids: each is a range of ids, newest first,
            // whose records the filter then checks.
            let items = self
                .exec_by_field
                .scan_prefix(&prefix)
                .keys()
                .rev()
                .flat_map(|k| {
                    let records: Vec<StoreResult<Option<Execution>>> = match k {
                        Ok(k) => self
                            .executions_with_prefix(&suffix_after(&k, prefix.len()), true)
                            .map(|e| e.map(Some))
                            .collect(),
                        Err(e) => vec![Err(e.into())],
                    };
                    records
                });
            return page(items, keep, limit, offset);
        }
        if let Some(status) = filter.status.filter(|s| !s.is_terminal()) {
            let items = self.live.iter().rev().map(|item| {
                let (k, v) = item?;
                match split_live(&k, &v)? {
                    (s, record) if s == status => decode(T_LIVE, &k, record).map(Some),
                    _ => Ok(None),
                }
            });
            return page(items, keep, limit, offset);
        }
        let items = self.executions_with_prefix(b"", true).map(|e| e.map(Some));
        page(items, keep, limit, offset)
    }

    /// Non-terminal executions, oldest first: what recovery after a crash must look at.
    pub fn active_executions(&self) -> StoreResult<Vec<Execution>> {
        self.settle();
        let items = self.live.iter().map(|item| {
            let (k, v) = item?;
            decode_live(&k, &v).map(Some)
        });
        page(items, |_| true, usize::MAX, 0)
    }

    /// How many executions are in each status (every status, zeros included), from counters
    /// kept by every write: no scan.
    pub fn count_executions_by_status(&self) -> StoreResult<Vec<(ExecutionStatus, u64)>> {
        ExecutionStatus::ALL
            .into_iter()
            .map(|status| {
                let n = match self.exec_counts.get(status.as_str().as_bytes())? {
                    None => 0,
                    Some(v) => {
                        u64::from_be_bytes(<[u8; 8]>::try_from(v.as_ref()).map_err(|_| {
                            StoreError::Corrupt {
                                tree: T_EXEC_COUNTS,
                                key: status.as_str().to_string(),
                                error: format!("counter holds {} bytes, expected 8", v.len()),
                            }
                        })?)
                    }
                };
                Ok((status, n))
            })
            .collect()
    }

    // ---- enforcements ----

    /// Newest first; both filters ANDed.
    pub fn enforcement(&self, id: &str) -> StoreResult<Option<RuleEnforcement>> {
        self.settle();
        self.enfs.get(id)
    }

    pub fn list_enforcements(
        &self,
        rule_ref: Option<&str>,
        trigger_instance: Option<&str>,
        limit: usize,
        offset: usize,
    ) -> StoreResult<Vec<RuleEnforcement>> {
        self.settle();
        let keep = |enf: &RuleEnforcement| {
            wanted(rule_ref, Some(enf.rule_ref.as_str()))
                && wanted(trigger_instance, Some(enf.trigger_instance_id.as_str()))
        };
        if let Some(ti) = trigger_instance {
            // One entry per rule that matched the instance: few, so sorting them is cheap.
            let mut ids: Vec<String> = markers::of_instance(&self.enf_markers, ti)?
                .into_iter()
                .map(|(_, id)| id)
                .collect();
            ids.sort_unstable_by(|a, b| b.cmp(a));
            let items = ids.into_iter().map(|id| self.enfs.get(&id));
            return page(items, keep, limit, offset);
        }
        let by_rule = rule_ref.map(|r| (&self.enf_by_rule, r));
        self.enfs.list(by_rule, keep, limit, offset)
    }

    // ---- API keys ----

    /// Creates an API key for `user`: the stored record (hash only) and the clear key, which
    /// is never seen again.
    pub fn apikey_create(&self, user: &str) -> StoreResult<(ApiKey, String)> {
        let mut raw = [0u8; 32];
        OsRng.fill_bytes(&mut raw);
        let key = URL_SAFE_NO_PAD.encode(raw);
        let record = ApiKey {
            v: SCHEMA_VERSION,
            id: new_id(),
            key_hash: hash_api_key(&key),
            user: user.to_string(),
            created_at: Utc::now(),
            enabled: true,
        };
        let bytes = encode(T_APIKEYS, &record.id, &record)?;
        (&self.apikeys, &self.apikey_by_hash)
            .transaction(|(keys, by_hash)| {
                keys.insert(record.id.as_bytes(), bytes.as_slice())?;
                by_hash.insert(record.key_hash.as_bytes(), record.id.as_bytes())?;
                Ok(())
            })
            .map_err(tx_error)?;
        Ok((record, key))
    }

    /// The enabled API key whose clear text is `key`. Looked up by hash, so timing reveals
    /// nothing about stored keys.
    pub fn apikey_verify(&self, key: &str) -> StoreResult<Option<ApiKey>> {
        let Some(id) = self.apikey_by_hash.get(hash_api_key(key).as_bytes())? else {
            return Ok(None);
        };
        let Some(bytes) = self.apikeys.get(&id)? else {
            return Ok(None);
        };
        let record: ApiKey = decode(T_APIKEYS, &id, &bytes)?;
        Ok(record.enabled.then_some(record))
    }

    /// Every API key (hashes only), oldest first.
    pub fn apikey_list(&self) -> StoreResult<Vec<ApiKey>> {
        self.apikeys
            .iter()
            .map(|item| {
                let (k, v) = item?;
                decode(T_APIKEYS, &k, &v)
            })
            .collect()
    }

    /// Deletes an API key by id; true when it existed.
    pub fn apikey_delete(&self, id: &str) -> StoreResult<bool> {
        (&self.apikeys, &self.apikey_by_hash)
            .transaction(|(keys, by_hash)| {
                let Some(bytes) = keys.remove(id.as_bytes())? else {
                    return Ok(false);
                };
                let record: ApiKey = decode(T_APIKEYS, id.as_bytes(), &bytes).or_else(abort)?;
                by_hash.remove(record.key_hash.as_bytes())?;
                Ok(true)
            })
            .map_err(tx_error)
    }

    pub fn apikey_count(&self) -> StoreResult<usize> {
        Ok(self.apikeys.len())
    }

    // ---- retention ----

    /// Deletes trigger instances, enforcements and terminal executions whose id (ULID) was
    /// minted before `cutoff`: a range scan over the oldest keys. Pending trigger instances
    /// and active executions are kept whatever their age.
    pub fn sweep_older_than(&self, cutoff: DateTime<Utc>) -> StoreResult<SweepCounts> {
        self.settle();
        let mut counts = SweepCounts::default();
        let Some(end) = cutoff_key(cutoff) else {
            return Ok(counts);
        };
        let end = end.as_bytes();

        // Pages before the cutoff's millisecond hold only older records.
        let end_page = pages::page_key(std::str::from_utf8(end).unwrap_or_default()).to_vec();
        // Per group of pages swept, the labels that went from them (their entries may go).
        let mut gone = std::collections::BTreeMap::<Vec<u8>, HashSet<Vec<u8>>>::new();
        for item in self.tis.tree.range(..end_page.as_slice()) {
            let (pk, _) = item?;
            let (removed, labels) = (&self.tis.tree, &self.pending)
                .transaction(|(tis, pending)| {
                    // Pending instances stay (checked inside the transaction: one may have
                    // been re-queued since the scan), with their trigger's index entry.
                    sweep_page(tis, T_TI_PAGES, &pk, |frame| {
                        Ok(pending.get(frame.id)?.is_none())
                    })
                })
                .map_err(tx_error)?;
            counts.trigger_instances += removed;
            if !labels.is_empty() {
                gone.entry(pages::group_key(&pk).to_vec())
                    .or_default()
                    .extend(labels);
            }
        }
        drop_stale_entries(&self.tis, &self.ti_by_trigger, gone)?;

        let mut gone = std::collections::BTreeMap::<Vec<u8>, HashSet<Vec<u8>>>::new();
        for item in self.enfs.tree.range(..end_page.as_slice()) {
            let (pk, _) = item?;
            let (removed, labels) = (&self.enfs.tree, &self.enf_markers, &self.pending)
                .transaction(|(enfs, marker_tree, pending)| {
                    let mut markers = TxMarkers::new(marker_tree);
                    let swept = sweep_page(enfs, T_ENF_PAGES, &pk, |frame| {
                        let enf: RuleEnforcement =
                            decode(T_ENF_PAGES, frame.id, frame.record).or_else(abort)?;
                        // Its marker is what keeps a re-processed instance exactly-once.
                        if pending.get(enf.trigger_instance_id.as_bytes())?.is_some() {
                            return Ok(false);
                        }
                        markers.remove(&enf.trigger_instance_id, &enf.rule_ref, &enf.id)?;
                        Ok(true)
                    })?;
                    markers.write()?;
                    Ok(swept)
                })
                .map_err(tx_error)?;
            counts.enforcements += removed;
            if !labels.is_empty() {
                gone.entry(pages::group_key(&pk).to_vec())
                    .or_default()
                    .extend(labels);
            }
        }
        drop_stale_entries(&self.enfs, &self.enf_by_rule, gone)?;

        // Per group of ids swept, the field index entries of the executions that went.
        let mut went: std::collections::BTreeMap<Vec<u8>, HashSet<Vec<u8>>> = Default::default();
        // Finished (only finished ones are in pages), and (one that ran or waited past the
        // cutoff) ended before it, as st2's garbage collector keeps them.
        let due = |e: &Execution| {
            e.status.is_terminal() && e.end_timestamp.is_none_or(|end| end < cutoff)
        };
        for item in self.exec_pages.tree.range(..end_page.as_slice()) {
            let (pk, _) = item?;
            let removed = (
                &self.live,
                &self.exec_pages.tree,
                &self.exec_by_field,
                &self.exec_counts,
            )
                .transaction(|(live, exec_pages, by_field, counts)| {
                    // Read inside: one may have been re-run into a live state since the scan.
                    let Some(page) = exec_pages.get(&pk)? else {
                        return Ok(Vec::new());
                    };
                    let tx = ExecTx::new(live, exec_pages, by_field, counts);
                    let mut removed = Vec::new();
                    for frame in pages::frames(&page) {
                        let frame = frame
                            .map_err(|e| pages::corrupt(T_EXEC_PAGES, &pk, e))
                            .or_else(abort)?;
                        match decode::<Execution>(T_EXEC_PAGES, frame.id, frame.record) {
                            Ok(e) if due(&e) => {
                                tx.remove(&e)?;
                                removed.push(e);
                            }
                            Ok(_) => {}
                            // A record that cannot be read is kept (and said): the sweep goes
                            // on past it.
                            Err(e) => tracing::error!(
                                error = %e,
                                "an execution past retention cannot be read; kept"
                            ),
                        }
                    }
                    tx.finish()?;
                    Ok(removed)
                })
                .map_err(tx_error)?;
            for e in removed {
                let prefix = part_key(&e.id, b"");
                for part in self.workflow_parts.scan_prefix(&prefix).keys() {
                    self.workflow_parts.remove(part?)?;
                }
                went.entry(pages::group_key(e.id.as_bytes()).to_vec())
                    .or_default()
                    .extend(exec_field_keys(&e));
                counts.executions += 1;
            }
        }
        // An entry goes once no execution left in its group has its value (those left are
        // live ones, kept, or later ones).
        for (group, keys) in went {
            let mut kept = HashSet::new();
            // One that cannot be read keeps no entry alive (it was said above).
            for e in self.executions_with_prefix(&group, true).flatten() {
                kept.extend(exec_field_keys(&e));
            }
            for key in keys.difference(&kept) {
                self.exec_by_field.remove(key)?;
            }
        }
        Ok(counts)
    }
}

/// Reads `<dir>/secret.key`, creating it with 32 random bytes (mode 0600) on first use.
fn load_or_create_key(dir: &Path) -> StoreResult<[u8; 32]> {
    let path = dir.join(KEY_FILE);
    let io = |path: &Path| {
        let path = path.to_path_buf();
        move |source| StoreError::Io { path, source }
    };
    match fs::read(&path) {
        Ok(bytes) => <[u8; 32]>::try_from(bytes.as_slice()).map_err(|_| {
            StoreError::Crypto(format!(
                "{} holds {} bytes; a secret key is 32 bytes",
                path.display(),
                bytes.len()
            ))
        }),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            let mut key = [0u8; 32];
            OsRng.fill_bytes(&mut key);
            // Written beside and renamed into place, so a crash never leaves a short key file
            // that would make every secret unreadable.
            let tmp = dir.join(format!("{KEY_FILE}.tmp"));
            let mut options = fs::OpenOptions::new();
            options.write(true).create(true).truncate(true);
            #[cfg(unix)]
            {
                use std::os::unix::fs::OpenOptionsExt;
                options.mode(0o600);
            }
            let mut file = options.open(&tmp).map_err(io(&tmp))?;
            file.write_all(&key).map_err(io(&tmp))?;
            file.sync_all().map_err(io(&tmp))?;
            drop(file);
            fs::rename(&tmp, &path).map_err(io(&path))?;
            // The rename itself must be durable before any secret is written under this key.
            #[cfg(unix)]
            fs::File::open(dir)
                .and_then(|d| d.sync_all())
                .map_err(io(dir))?;
            Ok(key)
        }
        Err(e) => Err(StoreError::Io { path, source: e }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::TimeDelta;
    use serde_json::{json, Map, Value};
    use std::sync::atomic::Ordering;
    use std::time::{Duration, Instant};

    /// A ULID minted `ms` milliseconds after a fixed recent base, so tests control id order.
    fn id_at(ms: u64) -> String {
        let base = u64::try_from(Utc::now().timestamp_millis()).expect("clock after 1970") - 60_000;
        ulid::Ulid::from_parts(base + ms, 7).to_string()
    }

    fn old_id(age: Duration, n: u128) -> String {
        let at = std::time::SystemTime::now() - age;
        let ms = at
            .duration_since(std::time::UNIX_EPOCH)
            .expect("clock after 1970")
            .as_millis();
        ulid::Ulid::from_parts(u64::try_from(ms).expect("ms fit"), n).to_string()
    }

    fn open(dir: &Path) -> Store {
        open_with(dir, None)
    }

    /// sled releases its file lock from a background thread after a drop, so reopening a data
    /// dir in the same process may briefly find it locked: wait for it, with a deadline.
    fn open_with(dir: &Path, key: Option<[u8; 32]>) -> Store {
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
        loop {
            match Store::open(dir, key) {
                Ok(s) => return s,
                Err(e)
                    if e.to_string().contains("in use by another squall")
                        && std::time::Instant::now() < deadline =>
                {
                    std::thread::sleep(std::time::Duration::from_millis(20));
                }
                Err(e) => panic!("open store: {e}"),
            }
        }
    }

    fn ti(id: &str, trigger: &str) -> TriggerInstance {
        let mut t = TriggerInstance::new(trigger, None, json!({"n": id}), "test");
        t.id = id.to_string();
        t
    }

    fn exec(id: &str, action: &str, status: ExecutionStatus) -> Execution {
        let mut params = Map::new();
        params.insert("x".into(), json!(1));
        let mut e = Execution::new(action, params);
        e.id = id.to_string();
        e.status = status;
        e
    }

    fn enforcement(id: &str, rule: &str, ti: &str, execution: Option<&str>) -> RuleEnforcement {
        RuleEnforcement {
            v: SCHEMA_VERSION,
            id: id.to_string(),
            rule_ref: rule.to_string(),
            trigger_instance_id: ti.to_string(),
            execution_id: execution.map(str::to_string),
            enforced_at: Utc::now(),
            failure_reason: execution.is_none().then(|| "no action".to_string()),
        }
    }

    fn as_json<T: Serialize>(t: &T) -> Value {
        serde_json::to_value(t).expect("serialize")
    }

    fn ids<T: Serialize>(records: &[T]) -> Vec<String> {
        records
            .iter()
            .map(|r| as_json(r)["id"].as_str().expect("id").to_string())
            .collect()
    }

    fn count(store: &Store, status: ExecutionStatus) -> u64 {
        store
            .count_executions_by_status()
            .expect("counts")
            .into_iter()
            .find(|(s, _)| *s == status)
            .map_or(0, |(_, n)| n)
    }

    #[test]
    fn a_record_that_cannot_be_read_is_left_out_of_lists_and_recovery() {
        let dir = tempfile::tempdir().expect("tempdir");
        let store = open(dir.path());
        let deep: Value = serde_json::from_str(&format!("{}1{}", "[".repeat(127), "]".repeat(127)))
            .expect("json");
        let (good, bad) = (id_at(1), id_at(2));
        store
            .put_execution(&exec(&good, "pack.a", ExecutionStatus::Running))
            .expect("put");
        let mut unreadable = exec(&bad, "pack.a", ExecutionStatus::Running);
        unreadable.parameters.insert("deep".into(), deep.clone());
        store.put_execution(&unreadable).expect("put");
        assert!(matches!(
            store.execution(&bad),
            Err(StoreError::Corrupt { .. })
        ));
        let listed = store
            .list_executions(&ExecutionFilter::default(), 10, 0)
            .expect("the others list");
        assert_eq!(ids(&listed), std::slice::from_ref(&good));
        assert_eq!(
            ids(&store.active_executions().expect("recovery reads")),
            [good]
        );
        let (ok_ti, bad_ti) = (id_at(3), id_at(4));
        store
            .insert_trigger_instance(&ti(&ok_ti, "core.webhook"))
            .expect("insert");
        let mut deep_ti = ti(&bad_ti, "core.webhook");
        deep_ti.payload = deep;
        store.insert_trigger_instance(&deep_ti).expect("insert");
        let listed = store
            .list_trigger_instances(None, 10, 0)
            .expect("the others list");
        assert_eq!(listed.len(), 1);
        assert_eq!(listed[0].id, ok_ti);
        let pending = store.pending_trigger_instances().expect("recovery reads");
        assert_eq!(pending.len(), 1);
        // Nor does one stop the retention sweep past it.
        let week = Duration::from_secs(7 * 24 * 3600);
        let (old_bad, old_done) = (old_id(week, 1), old_id(week, 2));
        let mut bad_done = exec(&old_bad, "pack.a", ExecutionStatus::Succeeded);
        bad_done.parameters = unreadable.parameters.clone();
        store.put_execution(&bad_done).expect("put");
        store
            .put_execution(&exec(&old_done, "pack.a", ExecutionStatus::Succeeded))
            .expect("put");
        let cutoff = Utc::now() - TimeDelta::try_days(1).expect("1 day");
        let counts = store.sweep_older_than(cutoff).expect("the sweep goes on");
        assert_eq!(counts.executions, 1);
        assert!(store.execution(&old_done).expect("get").is_none());
    }

    #[test]
    fn a_data_dir_in_use_or_not_a_directory_is_named_as_such() {
        let dir = tempfile::tempdir().expect("tempdir");
        let _first = open(dir.path());
        let Err(err) = Store::open(dir.path(), None) else {
            panic!("the second open fails");
        };
        let err = err.to_string();
        assert!(err.contains("in use by another squall"), "{err}");
        let file = dir.path().join("a-file");
        std::fs::write(&file, "x").expect("write");
        let Err(err) = Store::open(&file, None) else {
            panic!("a file is no data dir");
        };
        let err = err.to_string();
        assert!(err.contains("is not a directory"), "{err}");
    }

    #[test]
    fn trigger_instances_round_trip_and_list_newest_first() {
        let dir = tempfile::tempdir().expect("tempdir");
        let store = open(dir.path());
        let (a, b, c) = (id_at(1), id_at(2), id_at(3));
        let mut first = ti(&a, "core.webhook");
        first.trace_tag = Some("tag-1".into());
        first.trigger_parameters = Some(json!({"url": "alerts"}));
        store.insert_trigger_instance(&first).expect("insert");
        store
            .insert_trigger_instance(&ti(&b, "docker.container_event"))
            .expect("insert");
        store
            .insert_trigger_instance(&ti(&c, "core.webhook"))
            .expect("insert");

        let got = store.trigger_instance(&a).expect("get").expect("present");
        assert_eq!(as_json(&got), as_json(&first));
        assert!(store.trigger_instance("nope").expect("get").is_none());

        let all = store.list_trigger_instances(None, 10, 0).expect("list");
        assert_eq!(ids(&all), [c.as_str(), b.as_str(), a.as_str()]);
        let page = store.list_trigger_instances(None, 1, 1).expect("list");
        assert_eq!(ids(&page), [b.as_str()]);
        assert!(store
            .list_trigger_instances(None, 0, 0)
            .expect("list")
            .is_empty());
        assert!(store
            .list_trigger_instances(None, 5, 3)
            .expect("list")
            .is_empty());

        let hooks = store
            .list_trigger_instances(Some("core.webhook"), 10, 0)
            .expect("list");
        assert_eq!(ids(&hooks), [c.as_str(), a.as_str()]);
        // st2's name of the same trigger finds the same instances.
        let st2 = store
            .list_trigger_instances(Some("core.st2.webhook"), 10, 0)
            .expect("list");
        assert_eq!(ids(&st2), [c.as_str(), a.as_str()]);
        let hooks = store
            .list_trigger_instances(Some("core.webhook"), 1, 1)
            .expect("list");
        assert_eq!(ids(&hooks), [a.as_str()]);

        let pending = store.pending_trigger_instances().expect("pending");
        assert_eq!(ids(&pending), [a, b, c], "oldest first");
    }

    #[test]
    fn markers_kept_one_per_value_are_rebuilt_into_pages_at_open() {
        let dir = tempfile::tempdir().expect("tempdir");
        let (t, e1, enf1) = (id_at(1), id_at(2), id_at(3));
        {
            let store = open(dir.path());
            store
                .insert_trigger_instance(&ti(&t, "core.webhook"))
                .expect("insert");
            store
                .complete_trigger_instance(
                    &t,
                    TriggerInstanceStatus::Processed,
                    &[enforcement(&enf1, "pack.restart", &t, Some(&e1))],
                    &[exec(&e1, "pack.restart", ExecutionStatus::Requested)],
                    &[],
                )
                .expect("complete");
            // As a data dir indexed by the version before marker pages looks.
            store.enf_markers.clear().expect("clear");
            let legacy = store.db.open_tree(T_ENF_BY_INSTANCE_LEGACY).expect("tree");
            let mut marker = t.as_bytes().to_vec();
            marker.push(0);
            marker.extend_from_slice(b"pack.restart");
            legacy.insert(marker, enf1.as_bytes()).expect("insert");
            store
                .meta
                .insert(META_INDEX_VERSION, &5u32.to_be_bytes()[..])
                .expect("version");
            store.flush_blocking().expect("flush");
        }
        let store = open(dir.path());
        assert_eq!(
            store.enforced_rules(&t).expect("enforced"),
            ["pack.restart"]
        );
        assert_eq!(
            ids(&store
                .list_enforcements(None, Some(&t), 10, 0)
                .expect("list")),
            [enf1.as_str()]
        );
        assert!(!store
            .db
            .tree_names()
            .iter()
            .any(|n| n == T_ENF_BY_INSTANCE_LEGACY.as_bytes()));
        // Still exactly-once: the rebuilt marker stops a second enforcement of the rule.
        let again = store
            .complete_trigger_instance(
                &t,
                TriggerInstanceStatus::Processed,
                &[enforcement(&id_at(4), "pack.restart", &t, Some(&id_at(5)))],
                &[exec(&id_at(5), "pack.restart", ExecutionStatus::Requested)],
                &[],
            )
            .expect("complete");
        assert!(again.is_empty());
    }

    #[test]
    fn complete_trigger_instance_is_exactly_once() {
        let dir = tempfile::tempdir().expect("tempdir");
        let store = open(dir.path());
        let t = id_at(1);
        store
            .insert_trigger_instance(&ti(&t, "core.webhook"))
            .expect("insert");

        let (e1, enf1, enf2) = (id_at(2), id_at(3), id_at(4));
        let enforcements = [
            enforcement(&enf1, "pack.restart", &t, Some(&e1)),
            enforcement(&enf2, "pack.broken", &t, None),
        ];
        let executions = [exec(&e1, "pack.restart", ExecutionStatus::Requested)];
        let written = store
            .complete_trigger_instance(
                &t,
                TriggerInstanceStatus::Processed,
                &enforcements,
                &executions,
                &[],
            )
            .expect("complete");
        assert_eq!(ids(&written), [enf1.as_str(), enf2.as_str()]);
        let stored = store.execution(&e1).expect("get").expect("written");
        assert_eq!(as_json(&stored), as_json(&executions[0]));
        assert_eq!(
            ids(&store.active_executions().expect("active")),
            [e1.as_str()]
        );
        assert_eq!(
            store.trigger_instance(&t).expect("get").expect("ti").status,
            TriggerInstanceStatus::Processed
        );
        assert!(store
            .pending_trigger_instances()
            .expect("pending")
            .is_empty());
        let mut rules = store.enforced_rules(&t).expect("enforced");
        rules.sort();
        assert_eq!(rules, ["pack.broken", "pack.restart"]);
        assert_eq!(count(&store, ExecutionStatus::Requested), 1);

        // Reprocessing after a crash mints new ids for the same rules: nothing new is written.
        let (e2, enf3, enf4) = (id_at(5), id_at(6), id_at(7));
        let again = store
            .complete_trigger_instance(
                &t,
                TriggerInstanceStatus::Processed,
                &[
                    enforcement(&enf3, "pack.restart", &t, Some(&e2)),
                    enforcement(&enf4, "pack.broken", &t, None),
                ],
                &[exec(&e2, "pack.restart", ExecutionStatus::Requested)],
                &[],
            )
            .expect("complete again");
        assert!(again.is_empty());
        assert!(store.execution(&e2).expect("get").is_none());
        assert!(store.execution(&e1).expect("get").is_some());
        assert_eq!(
            ids(&store
                .list_enforcements(None, Some(&t), 10, 0)
                .expect("list")),
            [enf2, enf1]
        );
        assert_eq!(count(&store, ExecutionStatus::Requested), 1);

        // A new rule matching on reprocessing is still enforced once.
        let (e3, enf5) = (id_at(8), id_at(9));
        let added = store
            .complete_trigger_instance(
                &t,
                TriggerInstanceStatus::Processed,
                &[enforcement(&enf5, "pack.new", &t, Some(&e3))],
                &[exec(&e3, "pack.other", ExecutionStatus::Requested)],
                &[],
            )
            .expect("complete");
        assert_eq!(ids(&added), [enf5]);
        assert!(store.execution(&e3).expect("get").is_some());
    }

    #[test]
    fn complete_trigger_instance_rejects_bad_calls_and_changes_nothing() {
        let dir = tempfile::tempdir().expect("tempdir");
        let store = open(dir.path());
        let t = id_at(1);
        store
            .insert_trigger_instance(&ti(&t, "core.webhook"))
            .expect("insert");
        let e = exec(&id_at(2), "pack.a", ExecutionStatus::Requested);

        let orphan = store.complete_trigger_instance(
            &t,
            TriggerInstanceStatus::Processed,
            &[],
            std::slice::from_ref(&e),
            &[],
        );
        assert!(matches!(orphan, Err(StoreError::Invalid(m)) if m.contains(&e.id)));
        let not_final =
            store.complete_trigger_instance(&t, TriggerInstanceStatus::Processing, &[], &[], &[]);
        assert!(matches!(not_final, Err(StoreError::Invalid(_))));
        let other_ti = store.complete_trigger_instance(
            &t,
            TriggerInstanceStatus::Processed,
            &[enforcement(&id_at(3), "pack.r", "other", None)],
            &[],
            &[],
        );
        assert!(matches!(other_ti, Err(StoreError::Invalid(_))));
        let unknown = store.complete_trigger_instance(
            "missing",
            TriggerInstanceStatus::Processed,
            &[enforcement(&id_at(4), "pack.r", "missing", None)],
            &[],
            &[],
        );
        assert!(matches!(unknown, Err(StoreError::NotFound { .. })));

        assert_eq!(
            ids(&store.pending_trigger_instances().expect("pending")),
            [t]
        );
        assert!(store.execution(&e.id).expect("get").is_none());
        assert!(store
            .list_enforcements(None, None, 10, 0)
            .expect("list")
            .is_empty());
    }

    /// What the journal puts back after a crash: only what is newer than the store has, and
    /// the rule's enforcement with it, once.
    #[test]
    fn restored_executions_move_only_forward_and_bring_their_enforcement() {
        let dir = tempfile::tempdir().expect("tempdir");
        let store = open(dir.path());
        let id = id_at(1);
        let mut e = exec(&id, "pack.deploy", ExecutionStatus::Succeeded);
        e.rule = Some("pack.on_push".into());
        e.trigger_instance = Some("ti-1".into());
        assert!(store.restore_execution(&e).expect("restore"));
        assert_eq!(
            store.enforced_rules("ti-1").expect("rules"),
            ["pack.on_push"]
        );
        assert_eq!(count(&store, ExecutionStatus::Succeeded), 1);
        // An older status of it changes nothing; nor does the same one again.
        let mut older = e.clone();
        older.status = ExecutionStatus::Running;
        assert!(!store.restore_execution(&older).expect("restore"));
        assert!(!store.restore_execution(&e).expect("restore"));
        assert_eq!(
            store.execution(&id).expect("get").map(|x| x.status),
            Some(ExecutionStatus::Succeeded)
        );
        let enfs = store
            .list_enforcements(None, Some("ti-1"), 10, 0)
            .expect("list");
        assert_eq!(enfs.len(), 1);
        assert_eq!(enfs[0].execution_id.as_deref(), Some(id.as_str()));
        // A started one ends.
        let other = id_at(2);
        store
            .put_execution(&exec(&other, "pack.deploy", ExecutionStatus::Running))
            .expect("put");
        let done = exec(&other, "pack.deploy", ExecutionStatus::Failed);
        assert!(store.restore_execution(&done).expect("restore"));
        assert_eq!(count(&store, ExecutionStatus::Running), 0);
        assert_eq!(count(&store, ExecutionStatus::Failed), 1);
        assert!(store.active_executions().expect("active").is_empty());
    }

    #[test]
    fn executions_list_filters_and_active_index() {
        let dir = tempfile::tempdir().expect("tempdir");
        let store = open(dir.path());
        let (a, b, c, d) = (id_at(1), id_at(2), id_at(3), id_at(4));
        let mut ea = exec(&a, "pack.deploy", ExecutionStatus::Running);
        ea.rule = Some("pack.on_push".into());
        ea.trigger_instance = Some("ti-1".into());
        ea.user = Some("alice".into());
        let mut eb = exec(&b, "pack.step", ExecutionStatus::Succeeded);
        eb.parent = Some(a.clone());
        eb.result = json!({"ok": true});
        eb.end_timestamp = Some(Utc::now());
        let mut ec = exec(&c, "pack.step", ExecutionStatus::Requested);
        ec.parent = Some(a.clone());
        let mut ed = exec(&d, "pack.deploy", ExecutionStatus::Failed);
        ed.rule = Some("pack.on_push".into());
        ed.trigger_instance = Some("ti-2".into());
        for e in [&ea, &eb, &ec, &ed] {
            store.put_execution(e).expect("put");
        }
        assert_eq!(
            as_json(&store.execution(&b).expect("get").expect("present")),
            as_json(&eb)
        );
        assert!(store.execution("nope").expect("get").is_none());

        let list = |f: ExecutionFilter, limit, offset| {
            ids(&store.list_executions(&f, limit, offset).expect("list"))
        };
        let all = ExecutionFilter::default();
        assert_eq!(
            list(all.clone(), 10, 0),
            [d.as_str(), c.as_str(), b.as_str(), a.as_str()]
        );
        assert_eq!(list(all.clone(), 2, 1), [c.as_str(), b.as_str()]);
        let action = |a: &str| ExecutionFilter {
            action: Some(a.into()),
            ..Default::default()
        };
        assert_eq!(list(action("pack.deploy"), 10, 0), [d.as_str(), a.as_str()]);
        assert_eq!(list(action("pack.step"), 1, 1), [b.as_str()]);
        let status = |s| ExecutionFilter {
            status: Some(s),
            ..Default::default()
        };
        assert_eq!(
            list(status(ExecutionStatus::Succeeded), 10, 0),
            [b.as_str()]
        );
        assert_eq!(list(status(ExecutionStatus::Running), 10, 0), [a.as_str()]);
        assert!(list(status(ExecutionStatus::Paused), 10, 0).is_empty());
        let parent = ExecutionFilter {
            parent: Some(a.clone()),
            ..Default::default()
        };
        assert_eq!(list(parent.clone(), 10, 0), [c.as_str(), b.as_str()]);
        let parent_done = ExecutionFilter {
            status: Some(ExecutionStatus::Succeeded),
            ..parent
        };
        assert_eq!(list(parent_done, 10, 0), [b.as_str()]);
        let by_ti = ExecutionFilter {
            trigger_instance: Some("ti-2".into()),
            ..Default::default()
        };
        assert_eq!(list(by_ti, 10, 0), [d.as_str()]);
        let by_rule = ExecutionFilter {
            rule: Some("pack.on_push".into()),
            ..Default::default()
        };
        assert_eq!(list(by_rule.clone(), 10, 0), [d.as_str(), a.as_str()]);
        let rule_and_action = ExecutionFilter {
            action: Some("pack.step".into()),
            ..by_rule
        };
        assert!(list(rule_and_action, 10, 0).is_empty());

        assert_eq!(
            ids(&store.active_executions().expect("active")),
            [a.as_str(), c.as_str()]
        );
        assert_eq!(count(&store, ExecutionStatus::Running), 1);
        assert_eq!(count(&store, ExecutionStatus::Requested), 1);
        assert_eq!(count(&store, ExecutionStatus::Succeeded), 1);
        assert_eq!(count(&store, ExecutionStatus::Failed), 1);
        assert_eq!(
            store.count_executions_by_status().expect("counts").len(),
            ExecutionStatus::ALL.len()
        );

        // Status changes move executions in and out of the active index and the counters
        // (the indexed fields never change after an execution is created).
        ea.status = ExecutionStatus::Succeeded;
        store.put_execution(&ea).expect("put");
        ec.status = ExecutionStatus::Running;
        store.put_execution(&ec).expect("put");
        store.put_execution(&ec).expect("put is idempotent");
        assert_eq!(
            ids(&store.active_executions().expect("active")),
            [c.as_str()]
        );
        assert_eq!(count(&store, ExecutionStatus::Running), 1);
        assert_eq!(count(&store, ExecutionStatus::Requested), 0);
        assert_eq!(count(&store, ExecutionStatus::Succeeded), 2);
        ec.status = ExecutionStatus::Canceled;
        store.put_execution(&ec).expect("put");
        assert!(store.active_executions().expect("active").is_empty());
    }

    #[test]
    fn enforcements_list_filters() {
        let dir = tempfile::tempdir().expect("tempdir");
        let store = open(dir.path());
        let (t1, t2) = (id_at(1), id_at(2));
        for t in [&t1, &t2] {
            store
                .insert_trigger_instance(&ti(t, "core.webhook"))
                .expect("insert");
        }
        let (n1, n2, n3) = (id_at(3), id_at(4), id_at(5));
        let first = enforcement(&n1, "pack.a", &t1, None);
        store
            .complete_trigger_instance(
                &t1,
                TriggerInstanceStatus::Processed,
                &[first.clone(), enforcement(&n2, "pack.b", &t1, None)],
                &[],
                &[],
            )
            .expect("complete");
        store
            .complete_trigger_instance(
                &t2,
                TriggerInstanceStatus::ProcessingFailed,
                &[enforcement(&n3, "pack.a", &t2, None)],
                &[],
                &[],
            )
            .expect("complete");
        let list = |rule: Option<&str>, t: Option<&str>, limit, offset| {
            ids(&store
                .list_enforcements(rule, t, limit, offset)
                .expect("list"))
        };
        assert_eq!(
            list(None, None, 10, 0),
            [n3.as_str(), n2.as_str(), n1.as_str()]
        );
        assert_eq!(list(None, None, 1, 2), [n1.as_str()]);
        assert_eq!(
            list(Some("pack.a"), None, 10, 0),
            [n3.as_str(), n1.as_str()]
        );
        assert_eq!(list(Some("pack.a"), None, 1, 1), [n1.as_str()]);
        assert_eq!(list(None, Some(&t1), 10, 0), [n2.as_str(), n1.as_str()]);
        assert_eq!(list(Some("pack.a"), Some(&t1), 10, 0), [n1.as_str()]);
        assert!(list(Some("pack.b"), Some(&t2), 10, 0).is_empty());
        let got = store
            .list_enforcements(Some("pack.a"), Some(&t1), 1, 0)
            .expect("list");
        assert_eq!(as_json(&got[0]), as_json(&first));
        assert_eq!(
            store
                .trigger_instance(&t2)
                .expect("get")
                .expect("ti")
                .status,
            TriggerInstanceStatus::ProcessingFailed
        );
    }

    #[test]
    fn kv_set_get_list_delete() {
        let dir = tempfile::tempdir().expect("tempdir");
        let store = open(dir.path());
        let set = store.kv_set("app.replicas", "3", false, None).expect("set");
        assert_eq!(set.value, "3");
        store
            .kv_set("app.image", "nginx", false, None)
            .expect("set");
        store.kv_set("other", "x", false, None).expect("set");
        let got = store
            .kv_get("app.replicas", false)
            .expect("get")
            .expect("present");
        assert_eq!(as_json(&got), as_json(&set));
        assert!(store.kv_get("missing", true).expect("get").is_none());

        let names = |prefix| {
            store
                .kv_list(prefix, false)
                .expect("list")
                .into_iter()
                .map(|p| p.name)
                .collect::<Vec<_>>()
        };
        assert_eq!(names(None), ["app.image", "app.replicas", "other"]);
        assert_eq!(names(Some("app.")), ["app.image", "app.replicas"]);

        store
            .kv_set("app.replicas", "4", false, None)
            .expect("overwrite");
        assert_eq!(
            store
                .kv_get("app.replicas", true)
                .expect("get")
                .expect("present")
                .value,
            "4"
        );
        assert!(store.kv_delete("app.replicas").expect("delete"));
        assert!(!store.kv_delete("app.replicas").expect("delete"));
        assert!(store.kv_get("app.replicas", true).expect("get").is_none());
        assert!(matches!(
            store.kv_set("", "x", false, None),
            Err(StoreError::Invalid(_))
        ));
        assert!(matches!(
            store.kv_set("big", "x", false, Some(u64::MAX)),
            Err(StoreError::Invalid(_))
        ));
    }

    #[test]
    fn kv_ttl_expires_through_sweep_and_get() {
        let dir = tempfile::tempdir().expect("tempdir");
        let store = open(dir.path());
        let short = store.kv_set("short", "x", false, Some(1)).expect("set");
        assert!(short.expire_timestamp.is_some());
        store.kv_set("long", "y", false, Some(3600)).expect("set");
        store.kv_set("forever", "z", false, None).expect("set");
        // Set with a TTL, then overwritten without one: the old expiry must not delete it.
        store.kv_set("kept", "1", false, Some(1)).expect("set");
        store.kv_set("kept", "2", false, None).expect("set");
        assert_eq!(
            store
                .kv_get("short", false)
                .expect("get")
                .expect("live")
                .value,
            "x"
        );

        let now = Utc::now();
        assert_eq!(store.kv_sweep_expired(now).expect("sweep"), 0);
        let later = now + TimeDelta::try_seconds(2).expect("2 s");
        assert_eq!(store.kv_sweep_expired(later).expect("sweep"), 1);
        assert!(store.kv_get("short", false).expect("get").is_none());
        assert_eq!(store.kv_sweep_expired(later).expect("sweep"), 0);
        for name in ["long", "forever", "kept"] {
            assert!(store.kv_get(name, false).expect("get").is_some(), "{name}");
        }
        assert!(
            store.kv_expiry.len() == 1,
            "only `long` is still due to expire"
        );

        // Without a sweep, reads stop seeing the pair once its TTL has passed.
        store.kv_set("lazy", "v", false, Some(1)).expect("set");
        let deadline = Instant::now() + Duration::from_secs(5);
        while store.kv_get("lazy", false).expect("get").is_some() {
            assert!(
                Instant::now() < deadline,
                "ttl of 1 s did not expire in 5 s"
            );
            std::thread::sleep(Duration::from_millis(50));
        }
        assert!(
            store.kv.get("lazy").expect("raw").is_none(),
            "deleted lazily"
        );
        assert!(!store.kv_delete("lazy").expect("delete"));
        let names: Vec<_> = store
            .kv_list(None, false)
            .expect("list")
            .into_iter()
            .map(|p| p.name)
            .collect();
        assert_eq!(names, ["forever", "kept", "long"]);
    }

    #[test]
    fn a_claim_is_held_by_the_execution_that_made_it() {
        let dir = tempfile::tempdir().expect("tempdir");
        let store = open(dir.path());
        assert_eq!(store.kv_claim("lock", "first", None, "E1").ok(), Some(true));
        assert_eq!(
            store.kv_claim("lock", "second", None, "E2").ok(),
            Some(false)
        );
        // The same execution, run again after a crash, gets its claim back as it was made.
        assert_eq!(store.kv_claim("lock", "again", None, "E1").ok(), Some(true));
        let pair = store.kv_get("lock", false).expect("get").expect("held");
        assert_eq!(pair.value, "first");
        assert_eq!(pair.claimed_by.as_deref(), Some("E1"));
        // A plain write replaces the claim: nobody holds it any more.
        store.kv_set("lock", "free", false, None).expect("set");
        assert_eq!(
            store.kv_claim("lock", "third", None, "E1").ok(),
            Some(false)
        );
        // An expired claim may be taken by anyone.
        assert_eq!(store.kv_claim("short", "a", Some(1), "E1").ok(), Some(true));
        let deadline = Instant::now() + Duration::from_secs(5);
        while store.kv_claim("short", "b", Some(60), "E2").ok() != Some(true) {
            assert!(Instant::now() < deadline, "a 1 s claim did not expire");
            std::thread::sleep(Duration::from_millis(50));
        }
        assert_eq!(store.kv_claim("short", "c", None, "E1").ok(), Some(false));
        assert!(store.kv_claim("", "x", None, "E1").is_err());
    }

    #[test]
    fn of_racing_claims_exactly_one_wins() {
        let dir = tempfile::tempdir().expect("tempdir");
        let store = Arc::new(open(dir.path()));
        for round in 0..20 {
            let name = format!("race{round}");
            let won: usize = (0..8)
                .map(|i| {
                    let store = store.clone();
                    let name = name.clone();
                    std::thread::spawn(move || {
                        store
                            .kv_claim(&name, "x", None, &format!("E{i}"))
                            .expect("claim")
                    })
                })
                .collect::<Vec<_>>()
                .into_iter()
                .map(|t| usize::from(t.join().expect("thread")))
                .sum();
            assert_eq!(won, 1, "{name}");
        }
    }

    #[test]
    fn key_value_durability_flushes_only_for_writes_not_yet_covered() {
        let dir = tempfile::tempdir().expect("tempdir");
        let store = Arc::new(open(dir.path()));
        let flushes = || store.kv_durability.lock().done;
        store.kv_durable(0).expect("nothing to cover");
        assert_eq!(flushes(), 0);
        store.kv_set("a", "1", false, None).expect("set");
        let mark = store.kv_writes_begun();
        assert!(mark >= 1);
        store.kv_durable(mark).expect("durable");
        assert_eq!(flushes(), 1);
        store.kv_durable(mark).expect("covered already");
        assert_eq!(flushes(), 1, "a covered mark needs no flush");
        // Threads waiting at once share flushes: never more flushes than waiters.
        let waiters: Vec<_> = (0..8)
            .map(|i| {
                let store = store.clone();
                std::thread::spawn(move || {
                    store.kv_delete(&format!("k{i}")).expect("delete");
                    store.kv_durable(store.kv_writes_begun())
                })
            })
            .collect();
        for w in waiters {
            w.join().expect("thread").expect("durable");
        }
        assert!(flushes() <= 1 + 8);
        assert!(store.kv_durability.covered.load(Ordering::SeqCst) >= mark + 8);
    }

    #[test]
    fn kv_list_leaves_out_expired_pairs() {
        let dir = tempfile::tempdir().expect("tempdir");
        let store = open(dir.path());
        store.kv_set("a", "1", false, Some(1)).expect("set");
        store.kv_set("b", "2", false, None).expect("set");
        let deadline = Instant::now() + Duration::from_secs(5);
        while store.kv_list(None, false).expect("list").len() != 1 {
            assert!(
                Instant::now() < deadline,
                "ttl of 1 s did not expire in 5 s"
            );
            std::thread::sleep(Duration::from_millis(50));
        }
        assert_eq!(store.kv_list(None, false).expect("list")[0].name, "b");
    }

    fn raw_kv_bytes(store: &Store) -> Vec<u8> {
        let mut all = Vec::new();
        for item in store.kv.iter() {
            let (k, v) = item.expect("raw");
            all.extend_from_slice(&k);
            all.extend_from_slice(&v);
        }
        all
    }

    fn contains(haystack: &[u8], needle: &[u8]) -> bool {
        haystack.windows(needle.len()).any(|w| w == needle)
    }

    #[test]
    fn secrets_are_encrypted_at_rest() {
        let dir = tempfile::tempdir().expect("tempdir");
        let store = open(dir.path());
        let clear = "hunter2-very-secret-password";
        let stored = store.kv_set("db.password", clear, true, None).expect("set");
        assert!(stored.secret);
        assert_ne!(stored.value, clear);
        assert!(!contains(&raw_kv_bytes(&store), clear.as_bytes()));

        let masked = store
            .kv_get("db.password", false)
            .expect("get")
            .expect("present");
        assert_eq!(masked.value, stored.value, "ciphertext, never clear text");
        let revealed = store
            .kv_get("db.password", true)
            .expect("get")
            .expect("present");
        assert_eq!(revealed.value, clear);
        assert!(revealed.secret);

        let again = store.kv_set("db.password", clear, true, None).expect("set");
        assert_ne!(again.value, stored.value, "a fresh nonce per write");
        let listed = store.kv_list(Some("db."), true).expect("list");
        assert_eq!(listed[0].value, clear);
        let listed = store.kv_list(Some("db."), false).expect("list");
        assert_eq!(listed[0].value, again.value);

        use squall_actions::KvStore as _;
        let store = Arc::new(store);
        let lookup = StoreKv(store.clone());
        assert_eq!(
            squall_rules::KeyValueLookup::get(&lookup, "db.password").as_deref(),
            Some(clear)
        );
        let script = ScriptKv::new(store.clone(), "E1");
        script.set("script.value", "v", None).expect("script set");
        assert_eq!(script.get("script.value"), Ok(Some("v".to_string())));
        let pair = store
            .kv_get("script.value", false)
            .expect("get")
            .expect("set");
        assert!(!pair.secret, "values scripts set are not secret");
        assert_eq!(script.delete("script.value"), Ok(true));
        assert_eq!(
            squall_rules::KeyValueLookup::get(&lookup, "script.value"),
            None
        );
    }

    #[tokio::test]
    async fn key_file_persists_across_reopen() {
        let dir = tempfile::tempdir().expect("tempdir");
        {
            let store = open(dir.path());
            store.kv_set("token", "s3cr3t", true, None).expect("set");
            store.flush().await.expect("flush");
        }
        let key_path = dir.path().join(KEY_FILE);
        let key = fs::read(&key_path).expect("key file");
        assert_eq!(key.len(), 32);
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            let mode = fs::metadata(&key_path)
                .expect("metadata")
                .permissions()
                .mode();
            assert_eq!(mode & 0o777, 0o600);
        }
        let store = open(dir.path());
        let got = store
            .kv_get("token", true)
            .expect("decrypt")
            .expect("present");
        assert_eq!(got.value, "s3cr3t");
        assert_eq!(
            fs::read(&key_path).expect("key file"),
            key,
            "not regenerated"
        );
    }

    #[test]
    fn wrong_key_is_a_crypto_error_and_plain_data_still_reads() {
        let dir = tempfile::tempdir().expect("tempdir");
        {
            let store = open_with(dir.path(), Some([1; 32]));
            store.kv_set("token", "s3cr3t", true, None).expect("set");
            store.kv_set("plain", "p", false, None).expect("set");
            store
                .put_execution(&exec(&id_at(1), "pack.a", ExecutionStatus::Succeeded))
                .expect("put");
            store.flush_blocking().expect("flush");
        }
        let store = open_with(dir.path(), Some([2; 32]));
        assert_eq!(
            store
                .secret_needing_another_key()
                .expect("check")
                .as_deref(),
            Some("token")
        );
        assert_eq!(
            store
                .kv_get("plain", true)
                .expect("get")
                .expect("present")
                .value,
            "p"
        );
        assert_eq!(
            store
                .list_executions(&ExecutionFilter::default(), 10, 0)
                .expect("list")
                .len(),
            1
        );
        assert!(matches!(
            store.kv_get("token", true),
            Err(StoreError::Crypto(m)) if m.contains("token")
        ));
        assert!(store.kv_get("token", false).expect("ciphertext").is_some());
        assert!(matches!(
            store.kv_list(None, true),
            Err(StoreError::Crypto(_))
        ));
        assert!(
            !dir.path().join(KEY_FILE).exists(),
            "a configured key needs no file"
        );
        drop(store);
        let store = open_with(dir.path(), Some([1; 32]));
        assert_eq!(store.secret_needing_another_key().expect("check"), None);
    }

    #[test]
    fn api_keys_create_verify_delete() {
        let dir = tempfile::tempdir().expect("tempdir");
        let store = open(dir.path());
        let (record, key) = store.apikey_create("alice").expect("create");
        assert_eq!(key.len(), 43, "32 bytes, base64url without padding");
        assert!(!key.contains('=') && !key.contains('+') && !key.contains('/'));
        assert_eq!(record.user, "alice");
        assert!(record.enabled);
        let verified = store.apikey_verify(&key).expect("verify").expect("valid");
        assert_eq!(verified.id, record.id);
        assert!(store.apikey_verify("not-a-key").expect("verify").is_none());
        let (other, other_key) = store.apikey_create("bob").expect("create");
        assert_eq!(store.apikey_count().expect("count"), 2);

        let listed = store.apikey_list().expect("list");
        assert_eq!(listed.len(), 2);
        let dump = serde_json::to_string(&listed).expect("json");
        assert!(
            !dump.contains(&key) && !dump.contains(&other_key),
            "hashes only"
        );

        assert!(store.apikey_delete(&record.id).expect("delete"));
        assert!(!store.apikey_delete(&record.id).expect("delete"));
        assert!(store.apikey_verify(&key).expect("verify").is_none());
        assert_eq!(store.apikey_count().expect("count"), 1);
        assert_eq!(
            store
                .apikey_verify(&other_key)
                .expect("verify")
                .map(|k| k.id),
            Some(other.id)
        );
    }

    #[test]
    fn sweep_removes_old_terminal_records_and_keeps_live_ones() {
        let dir = tempfile::tempdir().expect("tempdir");
        let store = open(dir.path());
        let week = Duration::from_secs(7 * 24 * 3600);
        let (old_done, old_pending) = (old_id(week, 1), old_id(week, 2));
        store
            .insert_trigger_instance(&ti(&old_done, "core.webhook"))
            .expect("insert");
        store
            .insert_trigger_instance(&ti(&old_pending, "core.webhook"))
            .expect("insert");
        let (old_exec, old_enf) = (old_id(week, 3), old_id(week, 4));
        let mut e = exec(&old_exec, "pack.a", ExecutionStatus::Requested);
        e.trigger_instance = Some(old_done.clone());
        store
            .complete_trigger_instance(
                &old_done,
                TriggerInstanceStatus::Processed,
                &[enforcement(&old_enf, "pack.r", &old_done, Some(&old_exec))],
                std::slice::from_ref(&e),
                &[],
            )
            .expect("complete");
        e.status = ExecutionStatus::Succeeded;
        store.put_execution(&e).expect("finish");
        let old_active = old_id(week, 5);
        store
            .put_execution(&exec(&old_active, "pack.a", ExecutionStatus::Running))
            .expect("put");
        let new_done = id_at(1);
        store
            .put_execution(&exec(&new_done, "pack.a", ExecutionStatus::Failed))
            .expect("put");
        // Requested a week ago, ended just now: kept.
        let old_long = old_id(week, 6);
        let mut long = exec(&old_long, "pack.long", ExecutionStatus::Canceled);
        long.end_timestamp = Some(Utc::now());
        store.put_execution(&long).expect("put");
        let new_ti = id_at(2);
        store
            .insert_trigger_instance(&ti(&new_ti, "core.webhook"))
            .expect("insert");
        store
            .complete_trigger_instance(&new_ti, TriggerInstanceStatus::Processed, &[], &[], &[])
            .expect("complete");

        let cutoff = Utc::now() - TimeDelta::try_days(1).expect("1 day");
        let counts = store.sweep_older_than(cutoff).expect("sweep");
        assert_eq!(
            counts,
            SweepCounts {
                trigger_instances: 1,
                enforcements: 1,
                executions: 1
            }
        );
        assert!(store.trigger_instance(&old_done).expect("get").is_none());
        assert!(store.trigger_instance(&old_pending).expect("get").is_some());
        assert!(store.trigger_instance(&new_ti).expect("get").is_some());
        assert!(store.execution(&old_exec).expect("get").is_none());
        assert!(store.execution(&old_active).expect("get").is_some());
        assert!(store.execution(&new_done).expect("get").is_some());
        assert!(store.execution(&old_long).expect("get").is_some());
        assert!(store
            .enforced_rules(&old_done)
            .expect("enforced")
            .is_empty());
        assert!(store
            .list_enforcements(Some("pack.r"), None, 10, 0)
            .expect("list")
            .is_empty());
        assert_eq!(
            store.enf_by_rule.len(),
            0,
            "the swept rule's index entry went"
        );
        assert_eq!(
            store.ti_by_trigger.len(),
            2,
            "entries of the groups with the pending and the new instance stay"
        );
        assert!(store
            .list_trigger_instances(Some("core.webhook"), 10, 0)
            .expect("list")
            .iter()
            .all(|t| t.id != old_done));
        let by_ti = ExecutionFilter {
            trigger_instance: Some(old_done.clone()),
            ..Default::default()
        };
        assert!(store
            .list_executions(&by_ti, 10, 0)
            .expect("list")
            .is_empty());
        // The index entry that named only the swept execution went with it; the one shared
        // with a live execution stayed.
        let ti_entry = field_prefix(
            IDX_TRIGGER_INSTANCE,
            field_value(IDX_TRIGGER_INSTANCE, &old_done),
        );
        assert_eq!(store.exec_by_field.scan_prefix(ti_entry).count(), 0);
        let by_action = ExecutionFilter {
            action: Some("pack.a".into()),
            ..Default::default()
        };
        assert_eq!(
            ids(&store.list_executions(&by_action, 10, 0).expect("list")),
            [new_done.clone(), old_active.clone()]
        );
        assert_eq!(count(&store, ExecutionStatus::Succeeded), 0);
        assert_eq!(count(&store, ExecutionStatus::Running), 1);
        assert_eq!(count(&store, ExecutionStatus::Failed), 1);
        assert_eq!(
            ids(&store.pending_trigger_instances().expect("pending")),
            [old_pending]
        );
        assert_eq!(
            store.sweep_older_than(cutoff).expect("sweep"),
            SweepCounts::default()
        );
    }

    #[tokio::test]
    async fn data_survives_reopen_after_flush() {
        let dir = tempfile::tempdir().expect("tempdir");
        let (t, e) = (id_at(1), id_at(2));
        let key = {
            let store = open(dir.path());
            store
                .insert_trigger_instance(&ti(&t, "core.webhook"))
                .expect("insert");
            store
                .put_execution(&exec(&e, "pack.a", ExecutionStatus::Running))
                .expect("put");
            store.kv_set("k", "v", false, None).expect("set");
            let (_, key) = store.apikey_create("alice").expect("create");
            store.flush().await.expect("flush");
            key
        };
        let store = open(dir.path());
        assert_eq!(
            ids(&store.pending_trigger_instances().expect("pending")),
            [t.as_str()]
        );
        assert_eq!(
            ids(&store.active_executions().expect("active")),
            [e.as_str()]
        );
        assert_eq!(count(&store, ExecutionStatus::Running), 1);
        assert_eq!(
            store.kv_get("k", false).expect("get").expect("kv").value,
            "v"
        );
        assert!(store.apikey_verify(&key).expect("verify").is_some());
    }

    #[test]
    fn indexes_are_rebuilt_when_missing() {
        let dir = tempfile::tempdir().expect("tempdir");
        let (a, b) = (id_at(1), id_at(2));
        {
            let store = open(dir.path());
            let mut ea = exec(&a, "pack.a", ExecutionStatus::Running);
            ea.parent = Some("wf".into());
            store.put_execution(&ea).expect("put");
            store
                .put_execution(&exec(&b, "pack.b", ExecutionStatus::Succeeded))
                .expect("put");
            // As a data dir from a build with other (or no) indexes would look.
            for tree in [&store.exec_by_field, &store.exec_counts] {
                tree.clear().expect("clear");
            }
            store.meta.remove(META_INDEX_VERSION).expect("remove");
            store.flush_blocking().expect("flush");
        }
        let store = open(dir.path());
        assert_eq!(
            ids(&store.active_executions().expect("active")),
            [a.as_str()]
        );
        assert_eq!(count(&store, ExecutionStatus::Succeeded), 1);
        let children = ExecutionFilter {
            parent: Some("wf".into()),
            ..Default::default()
        };
        assert_eq!(
            ids(&store.list_executions(&children, 10, 0).expect("list")),
            [a.as_str()]
        );
    }

    #[test]
    fn records_handed_to_the_writer_read_as_written_and_land_once_in_their_final_state() {
        use std::sync::atomic::{AtomicBool, Ordering};
        let dir = tempfile::tempdir().expect("tempdir");
        let store = open(dir.path());
        let (t, e_id, enf_id) = (id_at(1), id_at(2), id_at(3));
        let mut e = exec(&e_id, "core.noop", ExecutionStatus::Scheduled);
        e.rule = Some("pack.rule".into());
        e.trigger_instance = Some(t.clone());
        store
            .complete_new_later(
                vec![NewInstance {
                    correlation: Vec::new(),
                    ti: Arc::new(ti(&t, "core.webhook")),
                    status: TriggerInstanceStatus::Processed,
                    enforcements: vec![enforcement(&enf_id, "pack.rule", &t, Some(&e_id))],
                    executions: vec![Arc::new(e.clone())],
                }],
                None,
            )
            .expect("queued");
        e.status = ExecutionStatus::Running;
        store.put_executions_later(vec![Arc::new(e.clone())], None);
        e.status = ExecutionStatus::Succeeded;
        let written = Arc::new(AtomicBool::new(false));
        let flag = written.clone();
        store.put_executions_later(
            vec![Arc::new(e.clone())],
            Some(Box::new(move || flag.store(true, Ordering::SeqCst))),
        );
        // Seen at once, in its latest state.
        let got = store.execution(&e_id).expect("get").expect("queued");
        assert_eq!(got.status, ExecutionStatus::Succeeded);
        // A list waits for the writer: everything is there, and `after` ran.
        let by_rule = ExecutionFilter {
            rule: Some("pack.rule".into()),
            ..Default::default()
        };
        assert_eq!(
            ids(&store.list_executions(&by_rule, 10, 0).expect("list")),
            [e_id.as_str()]
        );
        assert!(written.load(Ordering::SeqCst));
        assert!(store.active_executions().expect("active").is_empty());
        assert_eq!(count(&store, ExecutionStatus::Succeeded), 1);
        for s in [ExecutionStatus::Scheduled, ExecutionStatus::Running] {
            assert_eq!(count(&store, s), 0, "{s:?}");
        }
        let tis = store.list_trigger_instances(None, 10, 0).expect("list");
        assert_eq!(ids(&tis), [t.as_str()]);
        assert_eq!(tis[0].status, TriggerInstanceStatus::Processed);
        assert!(store
            .pending_trigger_instances()
            .expect("pending")
            .is_empty());
        assert_eq!(store.enforced_rules(&t).expect("enforced"), ["pack.rule"]);
        assert_eq!(
            ids(&store
                .list_enforcements(None, Some(&t), 10, 0)
                .expect("list")),
            [enf_id]
        );
        // A write that does not go through the writer lands after what was queued before it.
        e.status = ExecutionStatus::Running;
        store.put_executions_later(vec![Arc::new(e.clone())], None);
        let mut direct = e.clone();
        direct.status = ExecutionStatus::Failed;
        store.put_execution(&direct).expect("put");
        let got = store.execution(&e_id).expect("get").expect("stored");
        assert_eq!(got.status, ExecutionStatus::Failed);
        assert_eq!(count(&store, ExecutionStatus::Failed), 1);
        assert_eq!(count(&store, ExecutionStatus::Succeeded), 0);
    }

    #[test]
    fn the_writer_refuses_a_bad_completion_and_writes_everything_before_the_store_closes() {
        let dir = tempfile::tempdir().expect("tempdir");
        let (t, e_id) = (id_at(1), id_at(2));
        {
            let store = open(dir.path());
            let stray = exec(&e_id, "core.noop", ExecutionStatus::Scheduled);
            let refused = store.complete_new_later(
                vec![NewInstance {
                    correlation: Vec::new(),
                    ti: Arc::new(ti(&t, "core.webhook")),
                    status: TriggerInstanceStatus::Processed,
                    enforcements: Vec::new(),
                    executions: vec![Arc::new(stray.clone())],
                }],
                None,
            );
            assert!(matches!(refused, Err(StoreError::Invalid(m)) if m.contains(&e_id)));
            assert!(
                store.execution(&e_id).expect("get").is_none(),
                "nothing queued"
            );
            // Closed at once: the writer writes it first.
            store.put_executions_later(vec![Arc::new(stray)], None);
        }
        let store = open(dir.path());
        let got = store
            .execution(&e_id)
            .expect("get")
            .expect("written before the close");
        assert_eq!(got.status, ExecutionStatus::Scheduled);
        assert_eq!(count(&store, ExecutionStatus::Scheduled), 1);
    }

    #[test]
    fn instances_of_one_millisecond_share_a_page_in_any_arrival_order() {
        let dir = tempfile::tempdir().expect("tempdir");
        let store = open(dir.path());
        let ms = ulid::Ulid::from_string(&id_at(4))
            .expect("ulid")
            .timestamp_ms();
        let in_ms = |n: u128| ulid::Ulid::from_parts(ms, n).to_string();
        let (a, b, c, d) = (in_ms(1), in_ms(2), in_ms(3), id_at(6));
        let fresh = |ids: &[&String]| -> Vec<TriggerInstance> {
            ids.iter()
                .map(|id| {
                    ti(
                        id,
                        if *id == &b {
                            "core.timer"
                        } else {
                            "core.webhook"
                        },
                    )
                })
                .collect()
        };
        // The rules loop's batches: c and d first, then a and b of c's millisecond.
        for batch in [fresh(&[&c, &d]), fresh(&[&a, &b])] {
            let list = batch
                .into_iter()
                .map(|t| NewInstance {
                    correlation: Vec::new(),
                    ti: Arc::new(t),
                    status: TriggerInstanceStatus::Processed,
                    enforcements: Vec::new(),
                    executions: Vec::new(),
                })
                .collect();
            store.complete_new_later(list, None).expect("complete");
            // Written as two batches, not one.
            store.settle();
        }
        assert_eq!(store.tis.tree.len(), 2);
        let all = store.list_trigger_instances(None, 10, 0).expect("list");
        assert_eq!(ids(&all), [&d, &c, &b, &a].map(String::clone));
        assert!(all
            .iter()
            .all(|t| t.status == TriggerInstanceStatus::Processed));
        let middle = store.list_trigger_instances(None, 2, 1).expect("list");
        assert_eq!(ids(&middle), [&c, &b].map(String::clone));
        let hooks = store
            .list_trigger_instances(Some("core.webhook"), 2, 1)
            .expect("list");
        assert_eq!(ids(&hooks), [&c, &a].map(String::clone));
        assert_eq!(
            store.trigger_instance(&b).expect("get").map(|t| t.trigger),
            Some("core.timer".to_string())
        );
        // A pending instance stored beside them is completed in place.
        let e = in_ms(9);
        store
            .insert_trigger_instance(&ti(&e, "core.timer"))
            .expect("insert");
        store
            .complete_trigger_instance(&e, TriggerInstanceStatus::Processed, &[], &[], &[])
            .expect("complete");
        let got = store.trigger_instance(&e).expect("get").expect("present");
        assert_eq!(got.status, TriggerInstanceStatus::Processed);
        assert!(store
            .pending_trigger_instances()
            .expect("pending")
            .is_empty());
        assert_eq!(
            store
                .list_trigger_instances(None, 10, 0)
                .expect("list")
                .len(),
            5
        );
        assert_eq!(store.tis.tree.len(), 2);
    }

    #[test]
    fn records_stored_one_per_value_move_into_pages_at_open() {
        let dir = tempfile::tempdir().expect("tempdir");
        // Two in one millisecond (one page), one in another; one of them still pending.
        let (a, b, c) = (id_at(5), format!("{}Z", &id_at(5)[..25]), id_at(9));
        {
            let store = open(dir.path());
            // As a data dir from before pages looks: one value per instance.
            let legacy = store.db.open_tree(T_TI_LEGACY).expect("tree");
            for (id, trigger) in [
                (&a, "core.webhook"),
                (&b, "core.timer"),
                (&c, "core.webhook"),
            ] {
                let bytes = encode(T_TI_LEGACY, id, &ti(id, trigger)).expect("encode");
                legacy.insert(id.as_bytes(), bytes).expect("insert");
            }
            store
                .pending
                .insert(c.as_bytes(), &[][..])
                .expect("pending");
            let legacy = store.db.open_tree(T_ENF_LEGACY).expect("tree");
            for (id, rule, instance) in [(&a, "pack.one", &a), (&c, "pack.two", &b)] {
                let enf = enforcement(id, rule, instance, None);
                let bytes = encode(T_ENF_LEGACY, id, &enf).expect("encode");
                legacy.insert(id.as_bytes(), bytes).expect("insert");
            }
            store.flush_blocking().expect("flush");
        }
        let store = open(dir.path());
        let by_rule = store
            .list_enforcements(Some("pack.two"), None, 10, 0)
            .expect("list");
        assert_eq!(ids(&by_rule), [c.as_str()]);
        let by_instance = store
            .list_enforcements(None, Some(&a), 10, 0)
            .expect("list");
        assert_eq!(ids(&by_instance), [a.as_str()]);
        assert_eq!(
            store
                .list_enforcements(None, None, 10, 0)
                .expect("list")
                .len(),
            2
        );
        assert_eq!(store.enforced_rules(&b).expect("enforced"), ["pack.two"]);
        assert!(!store
            .db
            .tree_names()
            .iter()
            .any(|n| n == T_TI_LEGACY.as_bytes() || n == T_ENF_LEGACY.as_bytes()));
        assert_eq!(store.tis.tree.len(), 2);
        assert_eq!(
            store.trigger_instance(&b).expect("get").map(|t| t.trigger),
            Some("core.timer".to_string())
        );
        let all = store.list_trigger_instances(None, 10, 0).expect("list");
        assert_eq!(ids(&all), [c.as_str(), b.as_str(), a.as_str()]);
        let hooks = store
            .list_trigger_instances(Some("core.webhook"), 10, 0)
            .expect("list");
        assert_eq!(ids(&hooks), [c.as_str(), a.as_str()]);
        assert_eq!(
            ids(&store.pending_trigger_instances().expect("pending")),
            [c.as_str()]
        );
        drop(store);
        // Opening again finds nothing left to move and changes nothing.
        let store = open(dir.path());
        assert_eq!(
            store
                .list_trigger_instances(None, 10, 0)
                .expect("list")
                .len(),
            3
        );
    }

    #[test]
    fn an_execution_moves_from_live_to_its_page_when_it_ends_and_lists_stay_in_id_order() {
        let dir = tempfile::tempdir().expect("tempdir");
        let store = open(dir.path());
        // Two of one millisecond (one page), one of another; b still running.
        let (a, b, c) = (id_at(5), format!("{}Z", &id_at(5)[..25]), id_at(9));
        store
            .put_execution(&exec(&a, "pack.a", ExecutionStatus::Succeeded))
            .expect("put");
        store
            .put_execution(&exec(&b, "pack.a", ExecutionStatus::Running))
            .expect("put");
        store
            .put_execution(&exec(&c, "pack.b", ExecutionStatus::Failed))
            .expect("put");
        assert_eq!(store.live.len(), 1);
        assert_eq!(store.exec_pages.tree.len(), 2);
        let all = ExecutionFilter::default();
        let listed = store.list_executions(&all, 10, 0).expect("list");
        assert_eq!(ids(&listed), [c.as_str(), b.as_str(), a.as_str()]);
        assert_eq!(
            ids(&store.list_executions(&all, 1, 1).expect("list")),
            [b.as_str()]
        );
        let by_action = ExecutionFilter {
            action: Some("pack.a".into()),
            ..Default::default()
        };
        assert_eq!(
            ids(&store.list_executions(&by_action, 10, 0).expect("list")),
            [b.as_str(), a.as_str()]
        );
        // b ends: out of live, into the page it shares with a.
        let mut ended = exec(&b, "pack.a", ExecutionStatus::Succeeded);
        ended.result = json!({"ok": true});
        store.put_execution(&ended).expect("put");
        assert!(store.live.is_empty());
        assert_eq!(store.exec_pages.tree.len(), 2);
        assert!(store.active_executions().expect("active").is_empty());
        assert_eq!(
            store.execution(&b).expect("get").map(|e| e.result),
            Some(json!({"ok": true}))
        );
        assert_eq!(
            ids(&store.list_executions(&all, 10, 0).expect("list")),
            [c.as_str(), b.as_str(), a.as_str()]
        );
        assert_eq!(count(&store, ExecutionStatus::Succeeded), 2);
        assert_eq!(count(&store, ExecutionStatus::Running), 0);
        // Re-run into a live state: out of its page again.
        store
            .put_execution(&exec(&a, "pack.a", ExecutionStatus::Running))
            .expect("put");
        assert_eq!(
            ids(&store.active_executions().expect("active")),
            [a.as_str()]
        );
        assert_eq!(
            store.execution(&a).expect("get").map(|e| e.status),
            Some(ExecutionStatus::Running)
        );
        assert_eq!(
            ids(&store.list_executions(&all, 10, 0).expect("list")),
            [c.as_str(), b.as_str(), a.as_str()]
        );
        assert_eq!(count(&store, ExecutionStatus::Running), 1);
        assert_eq!(count(&store, ExecutionStatus::Succeeded), 1);
    }

    #[test]
    fn the_writers_backlog_counts_what_waits_for_it() {
        // No writer thread: what is queued stays queued.
        let behind = behind::Behind::default();
        assert_eq!(behind.backlog(), 0);
        let list: Vec<Arc<Execution>> = (1..=3)
            .map(|ms| Arc::new(exec(&id_at(ms), "pack.a", ExecutionStatus::Running)))
            .collect();
        behind.push_executions(list, None);
        assert_eq!(behind.backlog(), 3);
        behind.push_executions(
            vec![Arc::new(exec(
                &id_at(4),
                "pack.a",
                ExecutionStatus::Succeeded,
            ))],
            None,
        );
        assert_eq!(behind.backlog(), 4);
    }

    #[test]
    fn executions_stored_one_per_value_move_at_open() {
        let dir = tempfile::tempdir().expect("tempdir");
        let (a, b, c) = (id_at(5), format!("{}Z", &id_at(5)[..25]), id_at(9));
        {
            let store = open(dir.path());
            // As a data dir from before execution pages looks: one value per execution and
            // an index of the live ones' statuses.
            let legacy = store.db.open_tree(T_EXEC_LEGACY).expect("tree");
            let active = store.db.open_tree(T_ACTIVE_LEGACY).expect("tree");
            for (id, status) in [
                (&a, ExecutionStatus::Succeeded),
                (&b, ExecutionStatus::Running),
                (&c, ExecutionStatus::Failed),
            ] {
                let mut e = exec(id, "pack.a", status);
                e.parent = Some("wf".into());
                let bytes = encode(T_EXEC_LEGACY, id, &e).expect("encode");
                legacy.insert(id.as_bytes(), bytes).expect("insert");
                if !status.is_terminal() {
                    active
                        .insert(id.as_bytes(), status.as_str().as_bytes())
                        .expect("insert");
                }
            }
            store.meta.remove(META_INDEX_VERSION).expect("remove");
            store.flush_blocking().expect("flush");
        }
        let store = open(dir.path());
        assert!(!store
            .db
            .tree_names()
            .iter()
            .any(|n| n == T_EXEC_LEGACY.as_bytes() || n == T_ACTIVE_LEGACY.as_bytes()));
        assert_eq!(
            ids(&store.active_executions().expect("active")),
            [b.as_str()]
        );
        let children = ExecutionFilter {
            parent: Some("wf".into()),
            ..Default::default()
        };
        assert_eq!(
            ids(&store.list_executions(&children, 10, 0).expect("list")),
            [c.as_str(), b.as_str(), a.as_str()]
        );
        assert_eq!(count(&store, ExecutionStatus::Succeeded), 1);
        assert_eq!(count(&store, ExecutionStatus::Running), 1);
        assert_eq!(store.exec_pages.tree.len(), 2);
        drop(store);
        // Opening again finds nothing left to move and changes nothing.
        let store = open(dir.path());
        assert_eq!(
            store
                .list_executions(&ExecutionFilter::default(), 10, 0)
                .expect("list")
                .len(),
            3
        );
    }

    #[test]
    fn records_from_a_newer_squall_are_refused_clearly() {
        let dir = tempfile::tempdir().expect("tempdir");
        let store = open(dir.path());
        let id = id_at(1);
        let mut record = as_json(&exec(&id, "pack.a", ExecutionStatus::Succeeded));
        record["v"] = json!(SCHEMA_VERSION + 1);
        let mut value = b"succeeded\0".to_vec();
        value.extend(serde_json::to_vec(&record).expect("json"));
        store.live.insert(id.as_bytes(), value).expect("raw insert");
        match store.execution(&id) {
            Err(StoreError::Corrupt { tree, key, error }) => {
                assert_eq!(tree, T_LIVE);
                assert_eq!(key, id);
                assert!(error.contains("newer squall"), "{error}");
            }
            other => panic!("expected a corrupt-record error, got {other:?}"),
        }
        // A newer record that no longer parses says the same, not a serde message.
        store
            .kv
            .insert(
                "n",
                serde_json::to_vec(&json!({"v": 99, "shape": "new"})).expect("json"),
            )
            .expect("raw insert");
        assert!(matches!(
            store.kv_get("n", false),
            Err(StoreError::Corrupt { error, .. }) if error.contains("newer squall")
        ));
        store.kv.insert("g", &b"not json"[..]).expect("raw insert");
        assert!(matches!(
            store.kv_get("g", false),
            Err(StoreError::Corrupt { tree: T_KV, .. })
        ));
    }

    #[test]
    fn rules_enabled_through_the_api_are_kept_across_a_reopen() {
        let dir = tempfile::tempdir().expect("tempdir");
        {
            let store = open(dir.path());
            assert!(store.rule_enabled_overrides().expect("read").is_empty());
            store
                .set_rule_enabled("examples.greet_on_webhook", false)
                .expect("set");
            store.set_rule_enabled("ops.autoheal", true).expect("set");
            store
                .set_rule_enabled("ops.autoheal", false)
                .expect("set again");
            store
                .set_sensor_state("docker.events", "42")
                .expect("other meta");
            store.flush_blocking().expect("flush");
        }
        let store = open(dir.path());
        let overrides = store.rule_enabled_overrides().expect("read");
        assert_eq!(overrides.len(), 2, "{overrides:?}");
        assert_eq!(overrides.get("examples.greet_on_webhook"), Some(&false));
        assert_eq!(overrides.get("ops.autoheal"), Some(&false));
    }
}

/// One correlation rule's state changes, stored with the outcome of the instance (or window)
/// that made them: its header and each changed group by key, `None` for a group that closed.
#[derive(Debug, Clone, Default)]
pub struct CorrelationWrite {
    pub rule: String,
    pub header: String,
    pub groups: Vec<(String, Option<String>)>,
}

/// A correlation rule's state as stored: its header (none before its first change) and its
/// open groups' records.
#[derive(Debug, Clone, Default)]
pub struct StoredCorrelation {
    pub header: Option<String>,
    pub groups: Vec<String>,
}

fn correlation_key(rule: &str, kind: u8, group: &str) -> Vec<u8> {
    let mut key = Vec::with_capacity(rule.len() + group.len() + 2);
    key.extend_from_slice(rule.as_bytes());
    key.push(0);
    key.push(kind);
    key.extend_from_slice(group.as_bytes());
    key
}

/// Applies correlation changes in a transaction, in order (a later change to a group wins).
pub(crate) fn write_correlation(
    tree: &TransactionalTree,
    writes: &[CorrelationWrite],
) -> TxResult<()> {
    for w in writes {
        tree.insert(correlation_key(&w.rule, b'h', ""), w.header.as_bytes())?;
        for (group, record) in &w.groups {
            let key = correlation_key(&w.rule, b'g', group);
            match record {
                Some(r) => {
                    tree.insert(key, r.as_bytes())?;
                }
                None => {
                    tree.remove(key)?;
                }
            }
        }
    }
    Ok(())
}
