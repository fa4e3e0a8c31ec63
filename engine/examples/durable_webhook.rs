//! The durable ceiling for webhook ingest benchmarks: a bare axum handler that answers 202 only
//! once the body is on disk, with the simplest group commit, and nothing else (no trigger
//! instance, no store, no rules). It writes as squall's journal does: records appended with
//! `pwrite` to a file zero-filled ahead, one `fdatasync` for everything appended meanwhile.
//! `scripts/bench-http` measures it beside the bare handler and squall, so a run shows what
//! the disk's syncs alone leave of the ceiling.
//!
//! Run: `cargo run --release -p squall-engine --example durable_webhook -- 127.0.0.1:9205 DIR`
//! (DIR: where its file goes, on the disk a data dir would be on).

use std::fs::{File, OpenOptions};
use std::os::unix::fs::FileExt;
use std::path::Path;
use std::sync::{Arc, Condvar, Mutex, MutexGuard};

use axum::http::StatusCode;
use axum::routing::post;
use axum::Router;
use tokio::sync::oneshot;

/// The file is zero-filled to this size at start and written round and round.
const FILE_BYTES: u64 = 64 * 1024 * 1024;

#[derive(Default)]
struct Pending {
    buffer: Vec<u8>,
    waiters: Vec<oneshot::Sender<bool>>,
    /// The writer waits for records: an append must wake it.
    idle: bool,
}

#[derive(Default)]
struct Journal {
    pending: Mutex<Pending>,
    wake: Condvar,
}

fn lock(m: &Mutex<Pending>) -> MutexGuard<'_, Pending> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

impl Journal {
    /// Waits for records; takes everything appended so far.
    fn take(&self) -> (Vec<u8>, Vec<oneshot::Sender<bool>>) {
        let mut p = lock(&self.pending);
        while p.buffer.is_empty() {
            p.idle = true;
            p = self.wake.wait(p).unwrap_or_else(|e| e.into_inner());
        }
        p.idle = false;
        (
            std::mem::take(&mut p.buffer),
            std::mem::take(&mut p.waiters),
        )
    }

    /// Appends one record (`u32 length | bytes`); the receiver says whether it is on disk.
    fn append(&self, body: &[u8]) -> oneshot::Receiver<bool> {
        let (tx, rx) = oneshot::channel();
        let idle = {
            let mut p = lock(&self.pending);
            p.buffer
                .extend_from_slice(&(body.len() as u32).to_le_bytes());
            p.buffer.extend_from_slice(body);
            p.waiters.push(tx);
            p.idle
        };
        if idle {
            self.wake.notify_one();
        }
        rx
    }

    fn writer(&self, file: File) {
        let mut at = 0u64;
        loop {
            let (bytes, waiters) = self.take();
            if at + bytes.len() as u64 > FILE_BYTES {
                at = 0;
            }
            let ok = file
                .write_all_at(&bytes, at)
                .and_then(|()| file.sync_data())
                .is_ok();
            at += bytes.len() as u64;
            for w in waiters {
                let _ = w.send(ok);
            }
        }
    }
}

/// The journal's file, zero-filled and synced, so later syncs write data only.
fn create(dir: &Path) -> std::io::Result<File> {
    let path = dir.join(format!("durable-webhook-{}.log", std::process::id()));
    let file = OpenOptions::new()
        .create(true)
        .truncate(true)
        .read(true)
        .write(true)
        .open(&path)?;
    // Unlinked at once: the file lives as long as the process.
    std::fs::remove_file(&path)?;
    let zeros = vec![0u8; 1 << 20];
    for mib in 0..FILE_BYTES >> 20 {
        file.write_all_at(&zeros, mib << 20)?;
    }
    file.sync_all()?;
    Ok(file)
}

fn main() -> std::io::Result<()> {
    let mut args = std::env::args().skip(1);
    let addr = args.next().unwrap_or_else(|| "127.0.0.1:9205".to_string());
    let dir = args.next().unwrap_or_else(|| ".".to_string());
    let file = create(Path::new(&dir))?;
    let journal = Arc::new(Journal::default());
    let writer = journal.clone();
    std::thread::Builder::new()
        .name("journal".into())
        .spawn(move || writer.writer(file))?;
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    runtime.block_on(async move {
        let app = Router::new().route(
            "/api/v1/webhooks/{*url}",
            post(move |body: axum::body::Bytes| {
                let journal = journal.clone();
                async move {
                    // Parsed as squall and the bare handler do.
                    if serde_json::from_slice::<serde_json::Value>(&body).is_err() {
                        return StatusCode::BAD_REQUEST;
                    }
                    match journal.append(&body).await {
                        Ok(true) => StatusCode::ACCEPTED,
                        _ => StatusCode::INTERNAL_SERVER_ERROR,
                    }
                }
            }),
        );
        let listener = tokio::net::TcpListener::bind(&addr).await?;
        axum::serve(listener, app).await
    })
}
