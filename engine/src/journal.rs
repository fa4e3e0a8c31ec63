//! The ingest journal: an append-only file that makes an accepted trigger instance durable
//! in one `fdatasync`, with group commit, so webhooks can be acknowledged fast.
//!
//! sled's own flush writes every dirty page of every tree and is slow under load; the journal
//! writes only what was just accepted. A trigger instance is appended here and handed to the
//! rules loop, which puts it into the store, while its sync runs; its 202 waits for the sync.
//! The writer itself hands each batch's instances on ([`Journal::set_hand_on`]) as it takes
//! them, so a request wakes one thread (the writer, and only when it is idle) instead of two.
//! At start, records the store lost in a crash are put back from the journal. A segment is
//! deleted once every record in it is in the store (or superseded there) and a store flush has
//! covered it.
//!
//! Executions' `running` marks and final statuses are journaled too
//! ([`Journal::submit_executions`]): one group-committed `fdatasync` instead of a store flush;
//! at start they are put back where the store lost them.
//!
//! Record format: `u32 length (little endian) | u64 FNV-1a checksum of the bytes | JSON bytes`;
//! the JSON is a trigger instance, or `{"execution": {...}}`. A torn or corrupt tail (a crash
//! mid-write) ends replay of that segment; nothing before it is lost. This file never
//! interprets records beyond decoding them.
//!
//! A segment is zero-filled ahead of its records ([`PREALLOCATE_BYTES`] at a time), so most
//! syncs write data only: a sync that also has to record a larger file costs more. Replay stops
//! at the first zero length, where the records end.

use std::fs::{File, OpenOptions};
use std::io::Read;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Condvar, Mutex};

use crate::model::{Execution, TriggerInstance};

/// A journal record, as replayed.
#[derive(Debug)]
pub enum Record {
    TriggerInstance(Box<TriggerInstance>),
    Execution(Box<Execution>),
}

#[derive(serde::Serialize, serde::Deserialize)]
struct ExecutionRecord<E> {
    execution: E,
}

/// A segment larger than this is closed and a new one started.
const SEGMENT_BYTES: u64 = 32 * 1024 * 1024;

/// Zeros written ahead of a segment's records at a time.
const PREALLOCATE_BYTES: u64 = 1024 * 1024;

#[derive(Debug, thiserror::Error)]
pub enum JournalError {
    #[error("journal {path}: {source}")]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("journal: {0}")]
    Encode(String),
    #[error("the journal writer stopped")]
    Stopped,
    #[error("the journal refuses writes after an earlier failure: {0}")]
    Failed(String),
}

fn io(path: &Path) -> impl FnOnce(std::io::Error) -> JournalError + '_ {
    move |source| JournalError::Io {
        path: path.to_path_buf(),
        source,
    }
}

fn checksum(bytes: &[u8]) -> u64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for b in bytes {
        h ^= u64::from(*b);
        h = h.wrapping_mul(0x0100_0000_01b3);
    }
    h
}

struct Waiter {
    done: tokio::sync::oneshot::Sender<Result<u64, String>>,
    /// Records of this append that still have to reach the store (see [`Journal::stored`]).
    records: u64,
    /// For records handed on before their sync (a trigger instance to the rules loop, results
    /// to the store's writer): counted only if the store does not have them yet when they are
    /// written.
    ticket: Option<Arc<Ticket>>,
    /// The instance to hand on with `ticket` when the writer takes it
    /// ([`Journal::submit_and_hand_on`]).
    hand_on: Option<Arc<TriggerInstance>>,
}

/// Where records handed on before their sync stand (a trigger instance handed to the rules
/// loop, results handed to the store's writer): whichever of "written to segment N" and "in
/// the store" comes second settles the segment's count.
pub struct Ticket {
    state: Mutex<TicketState>,
    /// How many records of the segment this ticket holds.
    records: u64,
}

impl Default for Ticket {
    /// A ticket for one record.
    fn default() -> Self {
        Ticket::for_records(1)
    }
}

#[derive(Default, Clone, Copy)]
enum TicketState {
    #[default]
    Pending,
    Written(u64),
    Stored,
}

impl Ticket {
    /// A ticket for `records` records appended together.
    pub fn for_records(records: u64) -> Ticket {
        Ticket {
            state: Mutex::new(TicketState::Pending),
            records,
        }
    }

    /// The records are in the store (not yet flushed).
    pub fn stored(&self, journal: &Journal) {
        let written = {
            let mut state = lock(&self.state);
            let before = *state;
            *state = TicketState::Stored;
            before
        };
        if let TicketState::Written(seq) = written {
            journal.stored_n(seq, self.records);
        }
    }
}

struct Pending {
    buffer: Vec<u8>,
    waiters: Vec<Waiter>,
    stopped: bool,
    /// Set by a failed write or sync: what was written after it could be durable while what
    /// came before is not, so nothing more is accepted.
    failed: Option<String>,
    /// The writer waits for records: an append must wake it. While it writes or syncs, it
    /// takes what was appended meanwhile when it is done, and an append spares the wake-up.
    idle: bool,
}

/// A trigger instance appended for the rules loop, with the ticket that settles its segment.
pub type Accepted = (Arc<TriggerInstance>, Arc<Ticket>);

/// Where [`Journal::submit_and_hand_on`]'s instances go, a batch at a time, in journal order.
/// Called on the writer's thread before the batch is written: it must not block.
pub type HandOn = Box<dyn Fn(Vec<Accepted>) + Send + Sync>;

struct Segments {
    current: File,
    current_seq: u64,
    current_len: u64,
    /// The current segment is zero-filled up to here (records end at `current_len`).
    zeroed: u64,
    /// Closed segments: deletable once none of their records waits to enter the store and a
    /// store flush has run since.
    closed: Vec<(u64, PathBuf)>,
    /// Per segment, records written but not yet in the store (see [`Journal::stored`]).
    outstanding: std::collections::HashMap<u64, u64>,
}

/// The journal. Cheap to share; appends from many tasks are written together.
pub struct Journal {
    dir: PathBuf,
    segment_bytes: u64,
    pending: Mutex<Pending>,
    wake: Condvar,
    segments: Mutex<Segments>,
    hand_on: std::sync::OnceLock<HandOn>,
}

fn segment_path(dir: &Path, seq: u64) -> PathBuf {
    dir.join(format!("ingest-{seq:020}.log"))
}

fn list_segments(dir: &Path) -> Result<Vec<(u64, PathBuf)>, JournalError> {
    let mut out = Vec::new();
    for entry in std::fs::read_dir(dir).map_err(io(dir))? {
        let entry = entry.map_err(io(dir))?;
        let name = entry.file_name().to_string_lossy().into_owned();
        if let Some(seq) = name
            .strip_prefix("ingest-")
            .and_then(|n| n.strip_suffix(".log"))
            .and_then(|n| n.parse::<u64>().ok())
        {
            out.push((seq, entry.path()));
        }
    }
    out.sort();
    Ok(out)
}

/// Reads every intact record of every segment in `dir`, oldest first.
pub fn replay(dir: &Path) -> Result<Vec<Record>, JournalError> {
    if !dir.exists() {
        return Ok(Vec::new());
    }
    let mut out = Vec::new();
    for (_, path) in list_segments(dir)? {
        let mut bytes = Vec::new();
        File::open(&path)
            .and_then(|mut f| f.read_to_end(&mut bytes))
            .map_err(io(&path))?;
        let mut at = 0usize;
        while at + 12 <= bytes.len() {
            let len = u32::from_le_bytes([bytes[at], bytes[at + 1], bytes[at + 2], bytes[at + 3]])
                as usize;
            if len == 0 {
                // The zeros written ahead of the records: the segment ends here.
                break;
            }
            let mut sum = [0u8; 8];
            sum.copy_from_slice(&bytes[at + 4..at + 12]);
            let start = at + 12;
            let Some(record) = bytes.get(start..start + len) else {
                tracing::warn!(segment = %path.display(), offset = at, "journal ends in a torn record; replay stops there");
                break;
            };
            if checksum(record) != u64::from_le_bytes(sum) {
                tracing::warn!(segment = %path.display(), offset = at, "journal record fails its checksum; replay of this segment stops there");
                break;
            }
            let decoded = if record.starts_with(b"{\"execution\":") {
                serde_json::from_slice::<ExecutionRecord<Execution>>(record)
                    .map(|r| Record::Execution(Box::new(r.execution)))
            } else {
                serde_json::from_slice::<TriggerInstance>(record)
                    .map(|t| Record::TriggerInstance(Box::new(t)))
            };
            match decoded {
                Ok(r) => out.push(r),
                Err(e) => {
                    tracing::warn!(segment = %path.display(), offset = at, error = %e, "journal record cannot be read; skipped")
                }
            }
            at = start + len;
        }
    }
    Ok(out)
}

impl Journal {
    /// Opens a fresh segment in `dir` (after [`replay`] and [`Journal::clear`] at start) and
    /// starts the writer thread.
    /// Bytes its segments take on disk (written ahead: a segment is zero-filled when made).
    pub fn size_on_disk(&self) -> u64 {
        list_segments(&self.dir)
            .unwrap_or_default()
            .iter()
            .filter_map(|(_, path)| std::fs::metadata(path).ok())
            .map(|m| m.len())
            .sum()
    }

    pub fn open(dir: &Path) -> Result<Arc<Journal>, JournalError> {
        Journal::open_with_segment_size(dir, SEGMENT_BYTES)
    }

    /// [`Journal::open`] with segments closed at `segment_bytes` (small ones for tests).
    pub fn open_with_segment_size(
        dir: &Path,
        segment_bytes: u64,
    ) -> Result<Arc<Journal>, JournalError> {
        std::fs::create_dir_all(dir).map_err(io(dir))?;
        let next = list_segments(dir)?.last().map(|(s, _)| s + 1).unwrap_or(1);
        let file = create_segment(dir, next)?;
        let closed = list_segments(dir)?
            .into_iter()
            .filter(|(s, _)| *s != next)
            .collect();
        let journal = Arc::new(Journal {
            dir: dir.to_path_buf(),
            segment_bytes,
            pending: Mutex::new(Pending {
                buffer: Vec::new(),
                waiters: Vec::new(),
                stopped: false,
                failed: None,
                idle: false,
            }),
            wake: Condvar::new(),
            segments: Mutex::new(Segments {
                current: file,
                current_seq: next,
                current_len: 0,
                zeroed: 0,
                closed,
                outstanding: std::collections::HashMap::new(),
            }),
            hand_on: std::sync::OnceLock::new(),
        });
        let writer = journal.clone();
        std::thread::Builder::new()
            .name("squall-journal".into())
            .spawn(move || writer.writer_loop())
            .map_err(io(dir))?;
        Ok(journal)
    }

    /// Deletes every segment but the current one: call after the store was flushed with what
    /// they held.
    pub fn clear(&self) -> Result<(), JournalError> {
        let mut segs = lock(&self.segments);
        for (_, path) in segs.closed.drain(..) {
            std::fs::remove_file(&path).map_err(io(&path))?;
        }
        Ok(())
    }

    /// The closed segments whose records are all in the store (call before a store flush; once
    /// the flush succeeded, pass them to [`Journal::release`]).
    pub fn releasable(&self) -> Vec<u64> {
        let segs = lock(&self.segments);
        segs.closed
            .iter()
            .filter(|(s, _)| segs.outstanding.get(s).copied().unwrap_or(0) == 0)
            .map(|(s, _)| *s)
            .collect()
    }

    /// Deletes these closed segments: a store flush made their records durable.
    pub fn release(&self, seqs: &[u64]) {
        let mut segs = lock(&self.segments);
        segs.closed.retain(|(s, path)| {
            if !seqs.contains(s) {
                return true;
            }
            if let Err(e) = std::fs::remove_file(path) {
                tracing::warn!(segment = %path.display(), error = %e, "cannot delete a journal segment");
                return true;
            }
            false
        });
        for s in seqs {
            segs.outstanding.remove(s);
        }
    }

    /// Records that a record of segment `seq` is now in the store (not yet flushed).
    pub fn stored(&self, seq: u64) {
        self.stored_n(seq, 1);
    }

    /// Records that `n` records of segment `seq` are now in the store (not yet flushed).
    pub fn stored_n(&self, seq: u64, n: u64) {
        let mut segs = lock(&self.segments);
        if let Some(left) = segs.outstanding.get_mut(&seq) {
            *left = left.saturating_sub(n);
        }
    }

    /// Appends a trigger instance without waiting, so it can be handed on while its sync runs;
    /// the returned [`PendingSync`] answers once it is on disk. The instance's segment is held
    /// until `ticket` says the store has it ([`Ticket::stored`]). Anything appended after it is
    /// durable only if it is: the journal is written in order, and refuses every append after
    /// a failed write or sync.
    pub fn submit_instance(
        &self,
        ti: &TriggerInstance,
        ticket: Arc<Ticket>,
    ) -> Result<PendingSync<'_>, JournalError> {
        self.enqueue(frame_instance(ti)?, 0, Some(ticket), None)
    }

    /// Sets where [`Journal::submit_and_hand_on`] hands instances (once; later calls are
    /// ignored).
    pub fn set_hand_on(&self, hand_on: HandOn) {
        let _ = self.hand_on.set(hand_on);
    }

    /// [`Journal::submit_instance`], the instance then handed on (see [`Journal::set_hand_on`])
    /// by the writer as it takes it for writing: before its sync, after everything appended
    /// before it was handed on. Without a hand-off set, nothing is appended.
    pub fn submit_and_hand_on(
        &self,
        ti: Arc<TriggerInstance>,
        ticket: Arc<Ticket>,
    ) -> Result<PendingSync<'_>, JournalError> {
        if self.hand_on.get().is_none() {
            return Err(JournalError::Failed(
                "no hand-off for trigger instances is set".into(),
            ));
        }
        self.enqueue(frame_instance(&ti)?, 0, Some(ticket), Some(ti))
    }

    /// Appends executions; returns once they are on disk, with the segment they are in. Like
    /// a trigger instance, each holds its segment back until [`Journal::stored`] says the store
    /// has it (or a later status of its execution). For worker threads: it blocks, and must not
    /// be called from an async runtime's thread.
    pub fn append_executions_blocking<E: std::borrow::Borrow<Execution>>(
        &self,
        list: &[E],
    ) -> Result<u64, JournalError> {
        self.submit_executions(list)?.wait_blocking()
    }

    /// Appends executions without waiting: the returned [`PendingSync`] says when they are on
    /// disk (and in which segment), so the caller can write the store meanwhile.
    pub fn submit_executions<E: std::borrow::Borrow<Execution>>(
        &self,
        list: &[E],
    ) -> Result<PendingSync<'_>, JournalError> {
        self.enqueue(frame_executions(list)?, list.len() as u64, None, None)
    }

    /// [`Journal::submit_executions`] whose records hold their segment until `ticket` says the
    /// store has them ([`Ticket::stored`], before or after the write): for results handed to
    /// the store's writer while their sync runs. `ticket` must count `list.len()` records.
    pub fn submit_executions_ticket<E: std::borrow::Borrow<Execution>>(
        &self,
        list: &[E],
        ticket: Arc<Ticket>,
    ) -> Result<PendingSync<'_>, JournalError> {
        self.enqueue(frame_executions(list)?, 0, Some(ticket), None)
    }

    /// [`Journal::submit_executions_ticket`] with trigger instances that follow from these
    /// executions (their notifications), in the same write: a crash keeps both or neither,
    /// so a final status on disk never lacks what it announces. The instances are handed on
    /// as [`Journal::submit_and_hand_on`]'s are.
    pub fn submit_executions_and_instances<E: std::borrow::Borrow<Execution>>(
        &self,
        list: &[E],
        ticket: Arc<Ticket>,
        instances: Vec<Arc<TriggerInstance>>,
    ) -> Result<PendingSync<'_>, JournalError> {
        if instances.is_empty() {
            return self.submit_executions_ticket(list, ticket);
        }
        if self.hand_on.get().is_none() {
            return Err(JournalError::Failed(
                "no hand-off for trigger instances is set".into(),
            ));
        }
        let mut buffer = frame_executions(list)?;
        let mut entries = vec![(0, Some(ticket), None)];
        for ti in instances {
            buffer.extend_from_slice(&frame_instance(&ti)?);
            entries.push((0, Some(Arc::new(Ticket::for_records(1))), Some(ti)));
        }
        self.enqueue_all(buffer, entries)
    }

    /// Hands framed records to the writer; `records` of them hold their segment (see
    /// [`Journal::stored`]), and so does the ticket's instance; `hand_on` goes to the hand-off,
    /// with the ticket, when the writer takes the records.
    fn enqueue(
        &self,
        buffer: Vec<u8>,
        records: u64,
        ticket: Option<Arc<Ticket>>,
        hand_on: Option<Arc<TriggerInstance>>,
    ) -> Result<PendingSync<'_>, JournalError> {
        self.enqueue_all(buffer, vec![(records, ticket, hand_on)])
    }

    /// [`Journal::enqueue`] of several appends in one buffer, taken by the writer together
    /// (one write); the answer is the first's.
    #[allow(clippy::type_complexity)]
    fn enqueue_all(
        &self,
        buffer: Vec<u8>,
        entries: Vec<(u64, Option<Arc<Ticket>>, Option<Arc<TriggerInstance>>)>,
    ) -> Result<PendingSync<'_>, JournalError> {
        let (done, wait) = tokio::sync::oneshot::channel();
        let mut done = Some(done);
        let idle = {
            let mut p = lock(&self.pending);
            if p.stopped {
                return Err(JournalError::Stopped);
            }
            if let Some(e) = &p.failed {
                return Err(JournalError::Failed(e.clone()));
            }
            p.buffer.extend_from_slice(&buffer);
            for (records, ticket, hand_on) in entries {
                // Only the first append's caller waits; the others' answers go nowhere.
                let done = done
                    .take()
                    .unwrap_or_else(|| tokio::sync::oneshot::channel().0);
                p.waiters.push(Waiter {
                    done,
                    records,
                    ticket,
                    hand_on,
                });
            }
            p.idle
        };
        if idle {
            self.wake.notify_one();
        }
        Ok(PendingSync {
            journal: self,
            wait,
        })
    }

    /// Why the journal refuses appends, after a failed write or sync.
    pub fn failure(&self) -> Option<String> {
        lock(&self.pending).failed.clone()
    }

    /// Stops the writer after it wrote what is pending.
    pub fn stop(&self) {
        lock(&self.pending).stopped = true;
        self.wake.notify_one();
    }

    fn writer_loop(&self) {
        loop {
            let (buffer, mut waiters, stopped) = {
                let mut p = lock(&self.pending);
                while p.buffer.is_empty() && !p.stopped {
                    p.idle = true;
                    p = match self.wake.wait(p) {
                        Ok(g) => g,
                        Err(poisoned) => poisoned.into_inner(),
                    };
                }
                p.idle = false;
                (
                    std::mem::take(&mut p.buffer),
                    std::mem::take(&mut p.waiters),
                    p.stopped,
                )
            };
            let hand_on: Vec<Accepted> = waiters
                .iter_mut()
                .filter_map(|w| Some((w.hand_on.take()?, w.ticket.clone()?)))
                .collect();
            if !hand_on.is_empty() {
                if let Some(to) = self.hand_on.get() {
                    to(hand_on);
                }
            }
            let result = if buffer.is_empty() {
                Ok(0)
            } else {
                self.write(&buffer, &waiters)
            };
            let shared = result.map_err(|e| e.to_string());
            if let Err(e) = &shared {
                let mut p = lock(&self.pending);
                p.failed.get_or_insert_with(|| e.clone());
                // Appends queued behind the failure cannot be made durable either.
                for w in std::mem::take(&mut p.waiters) {
                    let _ = w.done.send(Err(e.clone()));
                }
                p.buffer.clear();
            }
            for w in waiters {
                // A caller that went away no longer needs the answer.
                let _ = w.done.send(shared.clone());
            }
            if stopped {
                return;
            }
        }
    }

    fn write(&self, buffer: &[u8], waiters: &[Waiter]) -> Result<u64, JournalError> {
        let mut segs = lock(&self.segments);
        if segs.current_len >= self.segment_bytes {
            let next = segs.current_seq + 1;
            let file = create_segment(&self.dir, next)?;
            let old = std::mem::replace(&mut segs.current, file);
            drop(old);
            let closed_seq = segs.current_seq;
            segs.closed
                .push((closed_seq, segment_path(&self.dir, closed_seq)));
            segs.current_seq = next;
            segs.current_len = 0;
            segs.zeroed = 0;
        }
        let seq = segs.current_seq;
        let path = segment_path(&self.dir, seq);
        // Counted before the write, under the lock `releasable` takes, so a segment can never be
        // released while one of its records is on its way to the store.
        let mut records: u64 = waiters.iter().map(|w| w.records).sum();
        for w in waiters {
            if let Some(ticket) = &w.ticket {
                let mut state = lock(&ticket.state);
                if !matches!(*state, TicketState::Stored) {
                    *state = TicketState::Written(seq);
                    records += ticket.records;
                }
            }
        }
        *segs.outstanding.entry(seq).or_default() += records;
        let at = segs.current_len;
        let end = at + buffer.len() as u64;
        let mut zeroed = segs.zeroed;
        let written = (|| {
            if end > zeroed {
                // Zeros ahead (synced with this write), so the next syncs write data only.
                let grow = PREALLOCATE_BYTES.max(end - zeroed);
                let zeros = vec![0u8; usize::try_from(grow).unwrap_or(usize::MAX)];
                segs.current.write_all_at(&zeros, zeroed)?;
                zeroed += grow;
            }
            segs.current.write_all_at(buffer, at)?;
            segs.current.sync_data()
        })();
        segs.zeroed = zeroed.max(segs.zeroed);
        if let Err(e) = written {
            if let Some(n) = segs.outstanding.get_mut(&seq) {
                *n = n.saturating_sub(records);
            }
            // Not in the segment after all: their count is gone, so nothing may settle it.
            for ticket in waiters.iter().filter_map(|w| w.ticket.as_ref()) {
                *lock(&ticket.state) = TicketState::Stored;
            }
            return Err(io(&path)(e));
        }
        segs.current_len += buffer.len() as u64;
        Ok(seq)
    }
}

/// Creates segment `seq` and makes its name durable (the directory's sync).
fn create_segment(dir: &Path, seq: u64) -> Result<File, JournalError> {
    let path = segment_path(dir, seq);
    let file = OpenOptions::new()
        .create(true)
        .truncate(false)
        .read(true)
        .write(true)
        .open(&path)
        .map_err(io(&path))?;
    File::open(dir)
        .and_then(|d| d.sync_all())
        .map_err(io(dir))?;
    Ok(file)
}

/// A trigger instance framed as a journal record.
fn frame_instance(ti: &TriggerInstance) -> Result<Vec<u8>, JournalError> {
    let mut buffer = Vec::with_capacity(1024);
    frame(ti, &mut buffer)?;
    Ok(buffer)
}

/// Executions framed as journal records, one after the other.
fn frame_executions<E: std::borrow::Borrow<Execution>>(
    list: &[E],
) -> Result<Vec<u8>, JournalError> {
    let mut buffer = Vec::with_capacity(1024 * list.len());
    for e in list {
        frame(
            &ExecutionRecord {
                execution: e.borrow(),
            },
            &mut buffer,
        )?;
    }
    Ok(buffer)
}

/// Appends one record (`u32 length | u64 checksum | JSON`) to `out`.
fn frame<T: serde::Serialize>(record: &T, out: &mut Vec<u8>) -> Result<(), JournalError> {
    // Serialized in place after room for the header, which is filled in once the length is
    // known; on an error `out` is left as it was.
    let start = out.len();
    out.extend_from_slice(&[0; 12]);
    let written = serde_json::to_writer(&mut *out, record)
        .map_err(|e| JournalError::Encode(e.to_string()))
        .and_then(|()| {
            u32::try_from(out.len() - start - 12)
                .map_err(|_| JournalError::Encode("record too large".into()))
        });
    let len = match written {
        Ok(len) => len,
        Err(e) => {
            out.truncate(start);
            return Err(e);
        }
    };
    let sum = checksum(&out[start + 12..]);
    out[start..start + 4].copy_from_slice(&len.to_le_bytes());
    out[start + 4..start + 12].copy_from_slice(&sum.to_le_bytes());
    Ok(())
}

/// Records handed to the journal: on disk once a wait returns Ok, with their segment.
pub struct PendingSync<'a> {
    journal: &'a Journal,
    wait: tokio::sync::oneshot::Receiver<Result<u64, String>>,
}

impl PendingSync<'_> {
    /// Waits for the sync; returns the segment.
    pub async fn wait(self) -> Result<u64, JournalError> {
        let journal = self.journal;
        journal.answer(self.wait.await)
    }

    /// [`PendingSync::wait`] for threads outside an async runtime (it blocks).
    pub fn wait_blocking(self) -> Result<u64, JournalError> {
        self.journal.answer(self.wait.blocking_recv())
    }
}

impl Journal {
    fn answer(
        &self,
        got: Result<Result<u64, String>, tokio::sync::oneshot::error::RecvError>,
    ) -> Result<u64, JournalError> {
        match got {
            Ok(Ok(seq)) => Ok(seq),
            Ok(Err(e)) => Err(JournalError::Io {
                path: self.dir.clone(),
                source: std::io::Error::other(e),
            }),
            Err(_) => Err(JournalError::Stopped),
        }
    }
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    match m.lock() {
        Ok(g) => g,
        Err(p) => p.into_inner(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    /// A record whose serialization fails halfway (after writing part of it).
    struct Unwritable;

    impl serde::Serialize for Unwritable {
        fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
            use serde::ser::{Error, SerializeMap};
            let mut map = s.serialize_map(None)?;
            map.serialize_entry("half", "written")?;
            Err(S::Error::custom("cannot be written"))
        }
    }

    #[test]
    fn frames_hold_their_length_and_checksum_and_a_failed_one_leaves_nothing() {
        let mut out = Vec::new();
        frame(&json!({"a": 1}), &mut out).expect("frame");
        let first = out.clone();
        let err = frame(&Unwritable, &mut out).expect_err("refused");
        assert!(err.to_string().contains("cannot be written"), "{err}");
        assert_eq!(out, first, "nothing of the failed record is left");
        frame(&json!({"b": [2, 3]}), &mut out).expect("frame");
        let mut at = 0;
        let mut records = Vec::new();
        while at < out.len() {
            let len = u32::from_le_bytes(out[at..at + 4].try_into().unwrap()) as usize;
            let sum = u64::from_le_bytes(out[at + 4..at + 12].try_into().unwrap());
            let record = &out[at + 12..at + 12 + len];
            assert_eq!(checksum(record), sum);
            records.push(serde_json::from_slice::<serde_json::Value>(record).expect("json"));
            at += 12 + len;
        }
        assert_eq!(records, vec![json!({"a": 1}), json!({"b": [2, 3]})]);
    }

    impl Journal {
        /// Appends an instance and waits for its sync; the caller settles it with
        /// [`Journal::stored`].
        async fn append(&self, ti: &TriggerInstance) -> Result<u64, JournalError> {
            self.submit_instance(ti, Arc::new(Ticket::default()))?
                .wait()
                .await
        }
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_failed_write_is_reported_and_refuses_later_appends() {
        let dir = tempfile::tempdir().unwrap();
        let journal_dir = dir.path().join("journal");
        // Segments of one byte: every append after the first starts a new segment.
        let j = Journal::open_with_segment_size(&journal_dir, 1).unwrap();
        let ti = TriggerInstance::new("core.webhook", None, json!({}), "test");
        j.append(&ti).await.unwrap();
        assert_eq!(j.failure(), None);
        // The next segment cannot be created: the write fails.
        std::fs::remove_dir_all(&journal_dir).unwrap();
        assert!(j.append(&ti).await.is_err());
        let why = j.failure().expect("failure kept");
        assert!(why.contains("journal"), "{why}");
        assert!(matches!(j.append(&ti).await, Err(JournalError::Failed(_))));
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn appended_records_replay_and_a_torn_tail_is_ignored() {
        let dir = tempfile::tempdir().unwrap();
        let j = Journal::open(dir.path()).unwrap();
        let mut ids = Vec::new();
        for i in 0..50 {
            let ti = TriggerInstance::new("core.webhook", None, json!({"i": i}), "test");
            ids.push(ti.id.clone());
            let seq = j.append(&ti).await.unwrap();
            assert_eq!(seq, 1);
        }
        j.stop();
        // A crash mid-write leaves a partial record at the end.
        let (_, path) = list_segments(dir.path()).unwrap().pop().unwrap();
        let bytes = std::fs::read(&path).unwrap();
        assert!(bytes.len() as u64 >= PREALLOCATE_BYTES, "zeros ahead");
        let mut end = 0usize;
        while u32::from_le_bytes(bytes[end..end + 4].try_into().unwrap()) != 0 {
            end += 12 + u32::from_le_bytes(bytes[end..end + 4].try_into().unwrap()) as usize;
        }
        let f = OpenOptions::new().write(true).open(&path).unwrap();
        f.write_all_at(&[200, 0, 0, 0, 1, 2, 3], end as u64)
            .unwrap();
        assert_eq!(ids_of(replay(dir.path()).unwrap()), ids);
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn an_instance_handed_on_before_its_sync_holds_its_segment_until_stored() {
        let dir = tempfile::tempdir().unwrap();
        let j = Journal::open_with_segment_size(dir.path(), 1).unwrap();
        // Stored after it was written: its segment waits for the store.
        let first = TriggerInstance::new("core.webhook", None, json!({}), "test");
        let ticket = Arc::new(Ticket::default());
        let s1 = j
            .submit_instance(&first, ticket.clone())
            .unwrap()
            .wait()
            .await
            .unwrap();
        // The next write closes segment s1 (segments of one byte).
        let second = TriggerInstance::new("core.webhook", None, json!({}), "test");
        let early = Arc::new(Ticket::default());
        // Stored before it is written: nothing to wait for.
        early.stored(&j);
        let s2 = j
            .submit_instance(&second, early)
            .unwrap()
            .wait()
            .await
            .unwrap();
        assert!(s2 > s1);
        assert!(
            j.releasable().is_empty(),
            "the first is not in the store yet"
        );
        ticket.stored(&j);
        assert_eq!(j.releasable(), vec![s1]);
        // Both replay, in order.
        assert_eq!(
            ids_of(replay(dir.path()).unwrap()),
            vec![first.id, second.id]
        );
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn instances_are_handed_on_in_journal_order_by_the_writer() {
        let dir = tempfile::tempdir().unwrap();
        let j = Journal::open(dir.path()).unwrap();
        let lonely = TriggerInstance::new("core.webhook", None, json!({}), "test");
        let refused = j
            .submit_and_hand_on(Arc::new(lonely), Arc::new(Ticket::default()))
            .err()
            .expect("no hand-off set");
        assert!(refused.to_string().contains("no hand-off"), "{refused}");
        let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel();
        j.set_hand_on(Box::new(move |batch| {
            for (ti, _) in batch {
                let _ = tx.send(ti.id.clone());
            }
        }));
        let mut sent = Vec::new();
        let mut syncs = Vec::new();
        for i in 0..200 {
            let ti = Arc::new(TriggerInstance::new(
                "core.webhook",
                None,
                json!({"i": i}),
                "t",
            ));
            sent.push(ti.id.clone());
            syncs.push(
                j.submit_and_hand_on(ti, Arc::new(Ticket::default()))
                    .unwrap(),
            );
        }
        for s in syncs {
            s.wait().await.unwrap();
        }
        let mut handed = Vec::new();
        while let Ok(id) = rx.try_recv() {
            handed.push(id);
        }
        assert_eq!(
            handed, sent,
            "every instance, once, in order, by the time it is synced"
        );
        assert_eq!(ids_of(replay(dir.path()).unwrap()), sent);
    }

    #[test]
    fn records_longer_than_the_zeros_ahead_are_written_whole() {
        let dir = tempfile::tempdir().unwrap();
        let j = Journal::open(dir.path()).unwrap();
        let big = "x".repeat(usize::try_from(PREALLOCATE_BYTES).unwrap() + 10);
        let mut e = Execution::new("core.noop", serde_json::Map::new());
        e.result = json!(big);
        let small = Execution::new("core.noop", serde_json::Map::new());
        j.append_executions_blocking(std::slice::from_ref(&small))
            .unwrap();
        j.append_executions_blocking(std::slice::from_ref(&e))
            .unwrap();
        j.append_executions_blocking(std::slice::from_ref(&small))
            .unwrap();
        let back = replay(dir.path()).unwrap();
        assert_eq!(back.len(), 3);
        assert!(matches!(&back[1], Record::Execution(x) if x.result == json!(big)));
    }

    /// The ids of the records, in order.
    fn ids_of(records: Vec<Record>) -> Vec<String> {
        records
            .into_iter()
            .map(|r| match r {
                Record::TriggerInstance(t) => t.id,
                Record::Execution(e) => e.id,
            })
            .collect()
    }

    #[test]
    fn executions_are_journaled_between_trigger_instances_and_hold_their_segment_until_stored() {
        let dir = tempfile::tempdir().unwrap();
        let j = Journal::open_with_segment_size(dir.path(), 1).unwrap();
        let rt = tokio::runtime::Builder::new_current_thread()
            .build()
            .unwrap();
        let ti = TriggerInstance::new("core.webhook", None, json!({}), "test");
        let s1 = rt.block_on(j.append(&ti)).unwrap();
        let mut e = Execution::new("core.noop", serde_json::Map::new());
        e.status = crate::model::ExecutionStatus::Succeeded;
        let s2 = j
            .append_executions_blocking(std::slice::from_ref(&e))
            .unwrap();
        let back = replay(dir.path()).unwrap();
        assert!(matches!(&back[0], Record::TriggerInstance(t) if t.id == ti.id));
        assert!(matches!(&back[1], Record::Execution(x) if x.id == e.id && x.status == e.status));
        // Each record holds its segment back until the store has it.
        j.append_executions_blocking(std::slice::from_ref(&e))
            .unwrap();
        assert!(j.releasable().iter().all(|s| *s != s1 && *s != s2));
        j.stored(s1);
        assert!(j.releasable().contains(&s1));
        assert!(!j.releasable().contains(&s2));
        j.stored_n(s2, 1);
        assert!(j.releasable().contains(&s2));
    }

    #[test]
    fn results_and_their_notifications_go_in_one_write_and_the_notifications_are_handed_on() {
        let dir = tempfile::tempdir().unwrap();
        let j = Journal::open_with_segment_size(dir.path(), 1).unwrap();
        let handed = Arc::new(Mutex::new(Vec::new()));
        let to = handed.clone();
        j.set_hand_on(Box::new(move |batch| {
            to.lock()
                .unwrap()
                .extend(batch.into_iter().map(|(ti, _)| ti.id.clone()));
        }));
        let mut e = Execution::new("core.noop", serde_json::Map::new());
        e.status = crate::model::ExecutionStatus::Succeeded;
        let notes: Vec<Arc<TriggerInstance>> = (0..2)
            .map(|_| {
                Arc::new(TriggerInstance::new(
                    "core.st2.generic.notifytrigger",
                    None,
                    json!({}),
                    "squall",
                ))
            })
            .collect();
        let ticket = Arc::new(Ticket::for_records(1));
        j.submit_executions_and_instances(std::slice::from_ref(&e), ticket, notes.clone())
            .unwrap()
            .wait_blocking()
            .unwrap();
        let ids: Vec<String> = notes.iter().map(|t| t.id.clone()).collect();
        // One segment per write (its size is 1 byte): all three records are in the first.
        let mut expected = vec![e.id.clone()];
        expected.extend(ids.clone());
        assert_eq!(ids_of(replay(dir.path()).unwrap()), expected);
        assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 1);
        assert_eq!(*handed.lock().unwrap(), ids);
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_segment_is_released_only_when_its_records_are_stored() {
        let dir = tempfile::tempdir().unwrap();
        let j = Journal::open_with_segment_size(dir.path(), 1).unwrap();
        let first = TriggerInstance::new("core.webhook", None, json!({}), "test");
        let s1 = j.append(&first).await.unwrap();
        let second = TriggerInstance::new("core.webhook", None, json!({}), "test");
        let s2 = j.append(&second).await.unwrap();
        assert!(s2 > s1, "the first segment was closed by its size");
        assert!(
            j.releasable().is_empty(),
            "its record is not in the store yet"
        );
        j.stored(s1);
        assert_eq!(j.releasable(), vec![s1]);
        j.release(&[s1]);
        assert_eq!(ids_of(replay(dir.path()).unwrap()), vec![second.id]);
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn concurrent_appends_are_all_durable_and_segments_are_released() {
        let dir = tempfile::tempdir().unwrap();
        let j = Journal::open(dir.path()).unwrap();
        let mut tasks = Vec::new();
        for i in 0..200 {
            let j = j.clone();
            tasks.push(tokio::spawn(async move {
                let ti = TriggerInstance::new("core.webhook", None, json!({"i": i}), "test");
                j.append(&ti).await.map(|_| ti.id)
            }));
        }
        let mut ids = Vec::new();
        for t in tasks {
            ids.push(t.await.unwrap().unwrap());
        }
        let back = ids_of(replay(dir.path()).unwrap());
        assert_eq!(back.len(), 200);
        for id in &ids {
            assert!(back.contains(id));
        }
        // Reopening starts a new segment; the old one is released once the store has it.
        j.stop();
        let j2 = Journal::open(dir.path()).unwrap();
        assert_eq!(list_segments(dir.path()).unwrap().len(), 2);
        let old = j2.releasable();
        assert_eq!(old.len(), 1);
        j2.release(&old);
        assert_eq!(list_segments(dir.path()).unwrap().len(), 1);
        assert!(replay(dir.path()).unwrap().is_empty());
    }
}
