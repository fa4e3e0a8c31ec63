//! Latency of `squall run`'s full pipeline at a fixed offered rate: the time from sending
//! `POST /api/v1/webhooks/pipeline` (bench pack: rule bench.pipeline -> Rhai action bench.trivial)
//! to the execution it causes reaching `succeeded`, as seen on the server-sent event stream
//! `GET /api/v1/stream`. Reports p50, p90, p99 and max of that latency, the achieved send rate,
//! how late the senders ran against their schedule, the 202 answer time, and how many executions
//! did not finish (or were not seen on the stream) within 30 s of the last send.
//!
//! Method: starts the release build of squall on a free 127.0.0.1 port with a fresh data dir and
//! the core and bench packs (2 workers), opens the event stream, checks it end to end with one
//! warm-up webhook, then N sender connections share one absolute schedule (request i is due at
//! start + i/rate; a free sender takes the next due request, so one slow answer does not delay
//! the others) over keep-alive HTTP/1.1. Send times are taken just before each request is
//! written; finish times when the read that carries the `succeeded` update returns.
//!
//! The client is kept cheap, since it shares the machine with squall: one current-thread tokio
//! runtime for the senders and the event stream, HTTP/1.1 spoken by hand, JSON parsed only for
//! execution events that can matter (creates with a trigger instance, updates with a final
//! status), and one plain thread that releases each request at its due time (std's sleep is
//! finer than tokio's millisecond timer).
//!
//! Usage: `scripts/bench-latency [--rate 1000] [--seconds 10] [--connections 16] [--hook pipeline_kv] [--json]
//! [--squall-arg=ARG ...]` (builds squall and this example in release, then runs this with
//! `--binary`). `--json` adds one JSON line with the same figures (milliseconds). Each
//! `--squall-arg` adds one word to `squall run`'s command line (`--squall-arg=--amqp
//! --squall-arg=URL`: remote workers the caller started, as `scripts/bench-amqp` does). Exit
//! status 1 if a request was not accepted or an execution did not succeed in time.

use std::borrow::Cow;
use std::collections::HashMap;
use std::fs::File;
use std::io::{Read, Seek, SeekFrom};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitCode, Stdio};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use anyhow::{anyhow, bail, Context, Result};
use clap::{CommandFactory, Parser};
use serde_json::{json, Value};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::sync::Semaphore;
use tokio::task::JoinSet;
use tokio::time::timeout;

const STRAGGLER_WAIT: Duration = Duration::from_secs(30);
const REQUEST_TIMEOUT: Duration = Duration::from_secs(30);
const FINAL: [&[u8]; 5] = [
    b"\"succeeded\"",
    b"\"failed\"",
    b"\"timeout\"",
    b"\"canceled\"",
    b"\"abandoned\"",
];
const SUCCEEDED_METRIC: &str = "squall_executions_finished_total{status=\"succeeded\"}";

#[derive(Parser)]
#[command(
    name = "bench-latency",
    about = "webhook -> succeeded latency of squall at a fixed rate",
    args_override_self = true
)]
struct Args {
    /// offered requests/s
    #[arg(long, default_value_t = 1000.0)]
    rate: f64,
    /// sending time in seconds
    #[arg(long, default_value_t = 10.0)]
    seconds: f64,
    /// sender connections
    #[arg(long, default_value_t = 16)]
    connections: usize,
    /// the webhook posted to: `pipeline` (bench.trivial) or `pipeline_kv` (bench.write, which
    /// writes one key per execution)
    #[arg(long, default_value = "pipeline")]
    hook: String,
    /// also print one JSON line of the figures
    #[arg(long)]
    json: bool,
    /// the squall binary [default: ${CARGO_TARGET_DIR:-target}/release/squall]
    #[arg(long)]
    binary: Option<PathBuf>,
    /// one more argument for `squall run`, after the others (repeat it for each word, e.g.
    /// `--squall-arg=--amqp --squall-arg=amqp://...`: remote workers started by the caller)
    #[arg(long = "squall-arg", value_name = "ARG", allow_hyphen_values = true)]
    squall_args: Vec<String>,
}

/// How a run ended, before squall is stopped.
enum Outcome {
    Done(u8),
    Failed(anyhow::Error),
    Signal(i32),
}

fn main() -> ExitCode {
    let args = Args::parse();
    if !(args.rate > 0.0 && args.seconds > 0.0 && args.connections > 0) {
        Args::command()
            .error(
                clap::error::ErrorKind::ValueValidation,
                "--rate, --seconds and --connections must be positive",
            )
            .exit();
    }
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let binary = match &args.binary {
        Some(p) => std::path::absolute(p).unwrap_or_else(|_| p.clone()),
        None => {
            let target = std::env::var_os("CARGO_TARGET_DIR")
                .filter(|t| !t.is_empty())
                .map(PathBuf::from)
                .unwrap_or_else(|| PathBuf::from("target"));
            root.join(target).join("release").join("squall")
        }
    };
    let runtime = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(r) => r,
        Err(e) => {
            eprintln!("error: cannot start the tokio runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    ExitCode::from(runtime.block_on(run_all(&args, root, &binary)))
}

/// Starts squall, runs the benchmark, stops squall (also on error or signal), and returns the
/// exit status.
async fn run_all(args: &Args, root: &Path, binary: &Path) -> u8 {
    let work = match tempfile::Builder::new()
        .prefix("squall-bench-latency-")
        .tempdir()
    {
        Ok(w) => w,
        Err(e) => {
            eprintln!("error: cannot create a work directory: {e}");
            return 1;
        }
    };
    let log_path = work.path().join("squall.log");
    let mut squall = match start_squall(root, binary, work.path(), &log_path, &args.squall_args) {
        Ok(s) => s,
        Err(e) => {
            eprintln!("error: {e:#}");
            return 1;
        }
    };
    let outcome = tokio::select! {
        r = bench(args, &mut squall) => match r {
            Ok(code) => Outcome::Done(code),
            Err(e) => Outcome::Failed(e),
        },
        s = signals() => Outcome::Signal(s),
    };
    // The client tasks were aborted when `bench` ended; a short pause lets the runtime drop them,
    // so their sockets are closed before squall's graceful shutdown begins.
    tokio::time::sleep(Duration::from_millis(5)).await;
    if let Outcome::Failed(_) = outcome {
        print_log_tail(&log_path);
    }
    squall.stop().await;
    drop(work);
    match outcome {
        Outcome::Done(code) => code,
        Outcome::Failed(e) => {
            eprintln!("error: {e:#}");
            1
        }
        Outcome::Signal(2) => {
            eprintln!("interrupted");
            130
        }
        Outcome::Signal(s) => (128 + s).clamp(0, 255) as u8,
    }
}

/// SIGINT (2) or SIGTERM (15), whichever comes first.
async fn signals() -> i32 {
    use tokio::signal::unix::{signal, SignalKind};
    let (Ok(mut int), Ok(mut term)) = (
        signal(SignalKind::interrupt()),
        signal(SignalKind::terminate()),
    ) else {
        return std::future::pending().await;
    };
    tokio::select! {
        _ = int.recv() => 2,
        _ = term.recv() => 15,
    }
}

/// The squall child process; killed outright if dropped while still running.
struct Squall {
    child: Child,
    port: u16,
}

fn start_squall(
    root: &Path,
    binary: &Path,
    work: &Path,
    log_path: &Path,
    extra: &[String],
) -> Result<Squall> {
    let port = free_port()?;
    let log = File::create(log_path).context("creating squall's log file")?;
    let child = Command::new(binary)
        .arg("run")
        .arg("--listen")
        .arg(format!("127.0.0.1:{port}"))
        .arg("--data-dir")
        .arg(work.join("data"))
        .args(["--packs", "packs/core", "--packs", "benches/packs/bench"])
        .args(["--workers", "2"])
        .args(extra)
        .current_dir(root)
        .stdin(Stdio::null())
        .stdout(log.try_clone().context("opening squall's log file")?)
        .stderr(log)
        .spawn()
        .with_context(|| format!("starting {}", binary.display()))?;
    Ok(Squall { child, port })
}

impl Squall {
    /// SIGTERM, then up to 15 s for a graceful exit, then SIGKILL.
    async fn stop(&mut self) {
        if !matches!(self.child.try_wait(), Ok(None)) {
            return;
        }
        let _ = Command::new("kill")
            .args(["-TERM", &self.child.id().to_string()])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status();
        let deadline = Instant::now() + Duration::from_secs(15);
        while Instant::now() < deadline {
            match self.child.try_wait() {
                Ok(None) => tokio::time::sleep(Duration::from_millis(10)).await,
                _ => return,
            }
        }
        eprintln!("squall did not stop within 15 s of SIGTERM; killing it");
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Drop for Squall {
    fn drop(&mut self) {
        if matches!(self.child.try_wait(), Ok(None)) {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

fn free_port() -> Result<u16> {
    let l = std::net::TcpListener::bind(("127.0.0.1", 0)).context("finding a free port")?;
    Ok(l.local_addr()?.port())
}

fn print_log_tail(log_path: &Path) {
    let Ok(mut f) = File::open(log_path) else {
        return;
    };
    let len = f.metadata().map(|m| m.len()).unwrap_or(0);
    let _ = f.seek(SeekFrom::Start(len.saturating_sub(2000)));
    let mut tail = Vec::new();
    let _ = f.read_to_end(&mut tail);
    let tail = String::from_utf8_lossy(&tail);
    if !tail.trim().is_empty() {
        eprintln!("--- squall log (tail) ---\n{tail}");
    }
}

async fn bench(args: &Args, squall: &mut Squall) -> Result<u8> {
    let port = squall.port;
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        if let Ok(Some(status)) = squall.child.try_wait() {
            bail!("squall exited with {status} before answering /healthz");
        }
        if let Ok((200, _)) = http_get(port, "/healthz", Duration::from_secs(1)).await {
            break;
        }
        if Instant::now() > deadline {
            bail!("squall did not answer /healthz within 30 s");
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    run(args, port).await
}

// ---------------------------------------------------------------------------------------------
// HTTP/1.1
// ---------------------------------------------------------------------------------------------

/// A keep-alive HTTP/1.1 client connection with its read buffer.
struct Conn {
    stream: TcpStream,
    buf: Vec<u8>,
    /// The server said `Connection: close` or ended a body by closing.
    closed: bool,
}

/// A response's status line and the headers that matter here.
struct Head {
    status: u16,
    status_line: String,
    content_length: Option<usize>,
    chunked: bool,
}

impl Conn {
    async fn connect(port: u16) -> Result<Conn> {
        let stream = TcpStream::connect(("127.0.0.1", port))
            .await
            .with_context(|| format!("connecting to 127.0.0.1:{port}"))?;
        stream.set_nodelay(true)?;
        Ok(Conn {
            stream,
            buf: Vec::with_capacity(8192),
            closed: false,
        })
    }

    /// Reads more bytes into the buffer; an error at the end of the stream.
    async fn fill(&mut self) -> Result<()> {
        self.buf.reserve(8192);
        if self.stream.read_buf(&mut self.buf).await? == 0 {
            bail!("connection closed by the server");
        }
        Ok(())
    }

    async fn head(&mut self) -> Result<Head> {
        let end = loop {
            if let Some(i) = find(&self.buf, b"\r\n\r\n") {
                break i;
            }
            if self.buf.len() > 64 * 1024 {
                bail!("response headers longer than 64 KiB");
            }
            self.fill().await?;
        };
        let text = String::from_utf8_lossy(&self.buf[..end]).into_owned();
        self.buf.drain(..end + 4);
        let mut lines = text.split("\r\n");
        let status_line = lines.next().unwrap_or_default().to_string();
        let status = status_line
            .split(' ')
            .nth(1)
            .and_then(|s| s.parse::<u16>().ok())
            .filter(|_| status_line.starts_with("HTTP/1."))
            .ok_or_else(|| anyhow!("bad status line: {status_line:?}"))?;
        let mut head = Head {
            status,
            status_line,
            content_length: None,
            chunked: false,
        };
        for line in lines {
            let Some((name, value)) = line.split_once(':') else {
                continue;
            };
            let (name, value) = (name.trim(), value.trim());
            if name.eq_ignore_ascii_case("content-length") {
                head.content_length = Some(value.parse().context("bad Content-Length")?);
            } else if name.eq_ignore_ascii_case("transfer-encoding") {
                head.chunked = value.to_ascii_lowercase().contains("chunked");
            } else if name.eq_ignore_ascii_case("connection") {
                self.closed |= value.eq_ignore_ascii_case("close");
            }
        }
        Ok(head)
    }

    /// One CRLF-terminated line (without the CRLF).
    async fn line(&mut self) -> Result<Vec<u8>> {
        loop {
            if let Some(i) = find(&self.buf, b"\r\n") {
                let line = self.buf[..i].to_vec();
                self.buf.drain(..i + 2);
                return Ok(line);
            }
            self.fill().await?;
        }
    }

    async fn take(&mut self, n: usize) -> Result<Vec<u8>> {
        while self.buf.len() < n {
            self.fill().await?;
        }
        Ok(self.buf.drain(..n).collect())
    }

    async fn body(&mut self, head: &Head) -> Result<Vec<u8>> {
        if head.status < 200 || head.status == 204 || head.status == 304 {
            return Ok(Vec::new());
        }
        if head.chunked {
            let mut body = Vec::new();
            loop {
                let size = chunk_size(&self.line().await?)?;
                if size == 0 {
                    while !self.line().await?.is_empty() {} // trailers
                    return Ok(body);
                }
                body.extend(self.take(size).await?);
                self.take(2).await?;
            }
        }
        if let Some(n) = head.content_length {
            return self.take(n).await;
        }
        // Neither: the body ends with the connection.
        self.closed = true;
        let mut body = std::mem::take(&mut self.buf);
        self.stream.read_to_end(&mut body).await?;
        Ok(body)
    }

    async fn request(&mut self, request: &[u8]) -> Result<(u16, Vec<u8>)> {
        self.stream.write_all(request).await?;
        let head = self.head().await?;
        let body = self.body(&head).await?;
        Ok((head.status, body))
    }
}

fn chunk_size(line: &[u8]) -> Result<usize> {
    let digits = line.split(|&b| b == b';').next().unwrap_or_default();
    std::str::from_utf8(digits)
        .ok()
        .and_then(|s| usize::from_str_radix(s.trim(), 16).ok())
        .ok_or_else(|| anyhow!("bad chunk size line {:?}", String::from_utf8_lossy(line)))
}

/// The first position of `needle` in `haystack` (a byte scan for its first byte, then a
/// comparison; the needles here are short).
fn find(haystack: &[u8], needle: &[u8]) -> Option<usize> {
    let (&first, rest) = needle.split_first()?;
    let last = haystack.len().checked_sub(needle.len())?;
    let mut i = 0;
    while i <= last {
        i += haystack[i..=last].iter().position(|&b| b == first)?;
        if haystack[i + 1..i + needle.len()] == *rest {
            return Some(i);
        }
        i += 1;
    }
    None
}

fn post_request(port: u16, hook: &str, body: &[u8]) -> Vec<u8> {
    let mut r = format!(
        "POST /api/v1/webhooks/{hook} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\n\
         Content-Type: application/json\r\nContent-Length: {}\r\n\r\n",
        body.len()
    )
    .into_bytes();
    r.extend_from_slice(body);
    r
}

/// One GET on a fresh connection.
async fn http_get(port: u16, path: &str, limit: Duration) -> Result<(u16, Vec<u8>)> {
    let request =
        format!("GET {path} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nConnection: close\r\n\r\n");
    timeout(limit, async {
        let mut c = Conn::connect(port).await?;
        c.request(request.as_bytes()).await
    })
    .await
    .map_err(|_| anyhow!("GET {path} timed out"))?
}

/// squall's count of succeeded executions (`GET /metrics`), `None` if it did not answer.
async fn metric_succeeded(port: u16) -> Option<i64> {
    let (_, body) = http_get(port, "/metrics", Duration::from_secs(5))
        .await
        .ok()?;
    for line in String::from_utf8_lossy(&body).lines() {
        if line.starts_with(SUCCEEDED_METRIC) {
            return line
                .split_whitespace()
                .last()
                .and_then(|v| v.parse::<f64>().ok())
                .map(|v| v as i64);
        }
    }
    Some(0)
}

/// The `id` of a 202 answer's trigger instance.
fn id_of(body: &[u8]) -> Option<String> {
    let v: Value = serde_json::from_slice(body).ok()?;
    v.get("id")?.as_str().map(str::to_string)
}

// ---------------------------------------------------------------------------------------------
// The event stream
// ---------------------------------------------------------------------------------------------

#[derive(Default)]
struct StreamState {
    /// execution id -> trigger instance id
    ti_of_exec: HashMap<String, String>,
    /// trigger instance id -> arrival of its execution's `succeeded` update
    succeeded: HashMap<String, Instant>,
    /// trigger instance id -> final status other than succeeded
    failed: HashMap<String, String>,
    error: Option<String>,
    closed: bool,
}

type Shared = Arc<Mutex<StreamState>>;

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

/// Chunked transfer decoding, fed piece by piece.
#[derive(Default)]
enum Chunks {
    #[default]
    Size,
    Data(usize),
    Crlf,
    End,
}

impl Chunks {
    /// Moves the payload of the complete framing in `raw` to `out`; leaves the rest in `raw`.
    fn decode(&mut self, raw: &mut Vec<u8>, out: &mut Vec<u8>) -> Result<()> {
        let mut pos = 0;
        loop {
            match *self {
                Chunks::Size => {
                    let Some(i) = find(&raw[pos..], b"\r\n") else {
                        break;
                    };
                    let need = chunk_size(&raw[pos..pos + i])?;
                    pos += i + 2;
                    *self = if need > 0 {
                        Chunks::Data(need)
                    } else {
                        Chunks::End
                    };
                }
                Chunks::Data(need) => {
                    let take = need.min(raw.len() - pos);
                    out.extend_from_slice(&raw[pos..pos + take]);
                    pos += take;
                    if take < need {
                        *self = Chunks::Data(need - take);
                        break;
                    }
                    *self = Chunks::Crlf;
                }
                Chunks::Crlf => {
                    if raw.len() - pos < 2 {
                        break;
                    }
                    pos += 2;
                    *self = Chunks::Size;
                }
                Chunks::End => {
                    pos = raw.len();
                    break;
                }
            }
        }
        raw.drain(..pos);
        Ok(())
    }
}

/// Opens `GET /api/v1/stream` and checks its answer; returns the connection and whether the
/// body is chunked.
async fn open_stream(port: u16) -> Result<(Conn, bool)> {
    timeout(Duration::from_secs(10), async {
        let mut c = Conn::connect(port).await?;
        c.stream
            .write_all(
                b"GET /api/v1/stream HTTP/1.1\r\nHost: 127.0.0.1\r\nAccept: text/event-stream\r\n\r\n",
            )
            .await?;
        let head = c
            .head()
            .await
            .context("the event stream closed before its headers")?;
        if head.status != 200 {
            bail!("GET /api/v1/stream answered: {}", head.status_line);
        }
        Ok((c, head.chunked))
    })
    .await
    .map_err(|_| anyhow!("GET /api/v1/stream did not answer within 10 s"))?
}

/// Reads the event stream until it ends or the task is aborted. Each read is stamped with
/// `Instant::now()` as it returns; every event completed by that read gets that time.
async fn read_stream(mut conn: Conn, chunked: bool, shared: Shared) {
    let mut raw = std::mem::take(&mut conn.buf); // what came with the headers
    let mut text = Vec::new(); // decoded SSE bytes
    let mut scanned = 0; // `text` before this holds no event end
    let mut chunks = Chunks::default();
    let mut piece = vec![0u8; 256 * 1024];
    let mut first = true;
    loop {
        let t = if std::mem::take(&mut first) {
            Instant::now()
        } else {
            match conn.stream.read(&mut piece).await {
                Ok(0) => break,
                Ok(n) => {
                    let t = Instant::now();
                    raw.extend_from_slice(&piece[..n]);
                    t
                }
                Err(e) => {
                    lock(&shared).error = Some(e.to_string());
                    break;
                }
            }
        };
        if chunked {
            if let Err(e) = chunks.decode(&mut raw, &mut text) {
                lock(&shared).error = Some(format!("{e:#}"));
                break;
            }
        } else {
            text.append(&mut raw);
        }
        let mut begin = 0;
        while let Some(i) = find(&text[scanned..], b"\n\n") {
            let end = scanned + i;
            event(&text[begin..end], t, &shared);
            begin = end + 2;
            scanned = begin;
        }
        text.drain(..begin);
        scanned = text.len().saturating_sub(1);
    }
    lock(&shared).closed = true;
}

/// One SSE event: only execution creates that carry a trigger instance and execution updates
/// with a final status are parsed.
fn event(block: &[u8], t: Instant, shared: &Shared) {
    let mut name: &[u8] = b"";
    let mut data: Vec<&[u8]> = Vec::new(); // allocates only for a second data line
    let mut first_data: Option<&[u8]> = None;
    for line in block.split(|&b| b == b'\n') {
        let line = line.strip_suffix(b"\r").unwrap_or(line);
        if let Some(v) = line.strip_prefix(b"event:") {
            name = v.trim_ascii();
        } else if let Some(v) = line.strip_prefix(b"data:") {
            let v = v.strip_prefix(b" ").unwrap_or(v);
            match first_data {
                None => first_data = Some(v),
                Some(_) => data.push(v),
            }
        }
    }
    let is_update = match name {
        b"st2.execution__update" => true,
        b"st2.execution__create" => false,
        _ => return,
    };
    let d: Cow<[u8]> = match first_data {
        None => return,
        Some(first) if data.is_empty() => Cow::Borrowed(first),
        Some(first) => {
            data.insert(0, first);
            Cow::Owned(data.join(&b'\n'))
        }
    };
    if is_update {
        if !FINAL.iter().any(|s| find(&d, s).is_some()) {
            return;
        }
    } else if find(&d, b"\"trigger_instance\":null").is_some() {
        return;
    }
    let Ok(e) = serde_json::from_slice::<Value>(&d) else {
        return;
    };
    let Some(eid) = e.get("id").and_then(Value::as_str) else {
        return;
    };
    let ti = e
        .get("trigger_instance")
        .and_then(|t| t.get("id"))
        .and_then(Value::as_str)
        .filter(|t| !t.is_empty());
    let mut s = lock(shared);
    let ti = match ti {
        Some(ti) => {
            s.ti_of_exec.insert(eid.to_string(), ti.to_string());
            ti.to_string()
        }
        None => match s.ti_of_exec.get(eid) {
            Some(ti) => ti.clone(),
            None => return,
        },
    };
    match e.get("status").and_then(Value::as_str) {
        Some("succeeded") => {
            s.succeeded.entry(ti).or_insert(t);
        }
        Some(status @ ("failed" | "timeout" | "canceled" | "abandoned")) => {
            s.failed.insert(ti, status.to_string());
        }
        _ => {}
    }
}

// ---------------------------------------------------------------------------------------------
// The benchmark
// ---------------------------------------------------------------------------------------------

/// The shared schedule: the next request to send and how many were given up.
struct Slots {
    next: usize,
    abandoned: usize,
}

struct Schedule {
    port: u16,
    hook: String,
    total: usize,
    start: Instant,
    interval: f64,
    give_up: Instant,
    slots: Mutex<Slots>,
    /// One permit per request that is due; closed when no request is left.
    due: Semaphore,
}

impl Schedule {
    fn due_at(&self, i: usize) -> Instant {
        self.start + Duration::from_secs_f64(i as f64 * self.interval)
    }
}

/// Closes the schedule when dropped, so the pacer thread ends also on error.
struct CloseOnDrop(Arc<Schedule>);

impl Drop for CloseOnDrop {
    fn drop(&mut self) {
        self.0.due.close();
    }
}

#[derive(Default)]
struct SenderResult {
    sent: Vec<(String, Instant)>,
    lateness: Vec<f64>,
    acks: Vec<f64>,
    errors: Vec<String>,
}

/// One sender: takes the next due request, sends it, reads the answer, until none is left.
async fn sender(conn: Conn, s: Arc<Schedule>) -> SenderResult {
    let mut conn = Some(conn);
    let mut out = SenderResult::default();
    loop {
        match s.due.acquire().await {
            Ok(permit) => permit.forget(),
            Err(_) => break, // closed: every request is taken
        }
        let i = {
            let mut slots = lock(&s.slots);
            if slots.next >= s.total {
                break;
            }
            slots.next += 1;
            if slots.next == s.total {
                s.due.close();
            }
            slots.next - 1
        };
        let due = s.due_at(i);
        let now = Instant::now();
        if now > s.give_up {
            let mut slots = lock(&s.slots);
            slots.abandoned += s.total - slots.next + 1;
            slots.next = s.total;
            s.due.close();
            break;
        }
        if due > now {
            // The pacer releases a request at its due time, so this is rare.
            tokio::time::sleep_until(due.into()).await;
        }
        let request = post_request(s.port, &s.hook, format!("{{\"n\": {i}}}").as_bytes());
        let t0 = Instant::now();
        let result = timeout(REQUEST_TIMEOUT, async {
            if conn.is_none() {
                conn = Some(Conn::connect(s.port).await?);
            }
            match conn.as_mut() {
                Some(c) => c.request(&request).await,
                None => Err(anyhow!("no connection")),
            }
        })
        .await
        .unwrap_or_else(|_| Err(anyhow!("no answer within 30 s")));
        let t1 = Instant::now();
        let (status, body) = match result {
            Ok(r) => r,
            Err(e) => {
                out.errors.push(format!("{e:#}"));
                conn = timeout(Duration::from_secs(10), Conn::connect(s.port))
                    .await
                    .ok()
                    .and_then(Result::ok);
                continue;
            }
        };
        if conn.as_ref().is_some_and(|c| c.closed) {
            conn = None;
        }
        if status != 202 {
            out.errors.push(format!(
                "HTTP {status}: {}",
                bytes_repr(&body[..body.len().min(120)])
            ));
            continue;
        }
        let Some(id) = id_of(&body) else {
            out.errors.push(format!(
                "HTTP 202 without an id: {}",
                bytes_repr(&body[..body.len().min(120)])
            ));
            continue;
        };
        out.sent.push((id, t0));
        out.lateness
            .push(t0.saturating_duration_since(due).as_secs_f64());
        out.acks.push((t1 - t0).as_secs_f64());
    }
    out
}

async fn run(args: &Args, port: u16) -> Result<u8> {
    let shared: Shared = Arc::default();
    let (stream_conn, chunked) = open_stream(port).await?;
    let mut stream_task = JoinSet::new();
    stream_task.spawn(read_stream(stream_conn, chunked, shared.clone()));

    // One warm-up webhook, seen through to `succeeded` on the stream: proves the reader is
    // subscribed before the measured sends begin.
    let (status, body) = timeout(Duration::from_secs(10), async {
        let mut c = Conn::connect(port).await?;
        c.request(&post_request(port, &args.hook, b"{\"n\": -1}"))
            .await
    })
    .await
    .map_err(|_| anyhow!("the warm-up webhook got no answer within 10 s"))??;
    if status != 202 {
        bail!(
            "warm-up webhook answered {status}: {}",
            bytes_repr(&body[..body.len().min(200)])
        );
    }
    let warm = id_of(&body).ok_or_else(|| anyhow!("the warm-up webhook's answer has no id"))?;
    let deadline = Instant::now() + Duration::from_secs(10);
    while !lock(&shared).succeeded.contains_key(&warm) {
        if Instant::now() > deadline {
            bail!("the warm-up execution's `succeeded` never came on the event stream");
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    let base_succeeded = metric_succeeded(port).await.unwrap_or(0);

    let total = (args.rate * args.seconds).round_ties_even() as usize;
    let interval = 1.0 / args.rate;
    let mut conns = Vec::with_capacity(args.connections);
    for _ in 0..args.connections {
        conns.push(
            timeout(Duration::from_secs(30), Conn::connect(port))
                .await
                .map_err(|_| anyhow!("connecting a sender timed out"))??,
        );
    }
    let start = Instant::now() + Duration::from_millis(200);
    let schedule = Arc::new(Schedule {
        port,
        hook: args.hook.clone(),
        total,
        start,
        interval,
        // stop taking requests if hopelessly behind
        give_up: start + Duration::from_secs_f64(3.0 * args.seconds + 10.0),
        slots: Mutex::new(Slots {
            next: 0,
            abandoned: 0,
        }),
        due: Semaphore::new(0),
    });
    if total == 0 {
        schedule.due.close();
    }
    let close_guard = CloseOnDrop(schedule.clone());
    let pacer = {
        let s = schedule.clone();
        std::thread::spawn(move || {
            for i in 0..s.total {
                if s.due.is_closed() {
                    return;
                }
                let due = s.due_at(i);
                let now = Instant::now();
                if due > now {
                    std::thread::sleep(due - now);
                }
                s.due.add_permits(1);
            }
        })
    };
    let mut senders = JoinSet::new();
    for conn in conns {
        senders.spawn(sender(conn, schedule.clone()));
    }
    let mut sent: HashMap<String, Instant> = HashMap::with_capacity(total);
    let mut lateness = Vec::with_capacity(total);
    let mut acks = Vec::with_capacity(total);
    let mut errors = Vec::new();
    while let Some(r) = senders.join_next().await {
        let r = r.context("a sender task failed")?;
        sent.extend(r.sent);
        lateness.extend(r.lateness);
        acks.extend(r.acks);
        errors.extend(r.errors);
    }
    drop(close_guard);
    let _ = pacer.join();
    let abandoned = lock(&schedule.slots).abandoned;
    let last_send = sent.values().copied().max().unwrap_or(start);
    let send_window =
        (last_send.saturating_duration_since(start).as_secs_f64() + interval).max(interval);

    // Stragglers: up to 30 s after the last send, until every accepted webhook's execution
    // has finished on the stream.
    let wait_until = Instant::now() + STRAGGLER_WAIT;
    while Instant::now() < wait_until {
        {
            let s = lock(&shared);
            let done = sent
                .keys()
                .filter(|ti| s.succeeded.contains_key(*ti) || s.failed.contains_key(*ti))
                .count();
            if done >= sent.len() || s.closed {
                break;
            }
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let waited = last_send.elapsed().as_secs_f64();
    let server_succeeded = metric_succeeded(port).await;

    let (mut lat, failed, stream_error) = {
        let s = lock(&shared);
        let lat: Vec<f64> = sent
            .iter()
            .filter_map(|(ti, t0)| {
                s.succeeded
                    .get(ti)
                    .map(|t| t.saturating_duration_since(*t0).as_secs_f64())
            })
            .collect();
        let failed = sent
            .keys()
            .filter(|ti| s.failed.contains_key(*ti) && !s.succeeded.contains_key(*ti))
            .count();
        let stream_error = s
            .error
            .clone()
            .or_else(|| s.closed.then(|| "closed early".to_string()));
        (lat, failed, stream_error)
    };
    // Close the stream before squall is stopped.
    stream_task.abort_all();
    while stream_task.join_next().await.is_some() {}

    let unfinished = sent.len() - lat.len() - failed;
    lat.sort_by(f64::total_cmp);
    lateness.sort_by(f64::total_cmp);
    acks.sort_by(f64::total_cmp);
    let achieved = round_to(sent.len() as f64 / send_window, 1);
    let server = server_succeeded.map(|n| n - base_succeeded);
    let lat_ms = [
        ms(pct(&lat, 50.0)),
        ms(pct(&lat, 90.0)),
        ms(pct(&lat, 99.0)),
        lat.last().and_then(|v| ms(*v)),
    ];
    let ack_ms = [
        ms(pct(&acks, 50.0)),
        ms(pct(&acks, 99.0)),
        acks.last().and_then(|v| ms(*v)),
    ];
    let late_ms = [
        ms(pct(&lateness, 50.0)),
        ms(pct(&lateness, 99.0)),
        lateness.last().and_then(|v| ms(*v)),
    ];
    let res = json!({
        "offered_rate": args.rate,
        "seconds": args.seconds,
        "connections": args.connections,
        "scheduled": total,
        "accepted": sent.len(),
        "errors": errors.len(),
        "abandoned": abandoned,
        "achieved_rate": achieved,
        "latency_ms": {"p50": lat_ms[0], "p90": lat_ms[1], "p99": lat_ms[2], "max": lat_ms[3]},
        "succeeded": lat.len(),
        "failed": failed,
        "not_finished": unfinished,
        "ack_ms": {"p50": ack_ms[0], "p99": ack_ms[1], "max": ack_ms[2]},
        "send_lateness_ms": {"p50": late_ms[0], "p99": late_ms[1], "max": late_ms[2]},
        "server_succeeded": server,
        "stream_error": stream_error,
    });

    let f = |v: Option<f64>| v.map_or_else(|| "None".to_string(), py_float);
    println!(
        "squall webhook -> succeeded latency: offered {}/s for {} s, {} connections",
        fmt_g(args.rate),
        fmt_g(args.seconds),
        args.connections
    );
    println!(
        "  sent {} of {total} accepted (202) in {send_window:.2} s => achieved {} req/s; \
         errors {}, abandoned {abandoned}",
        sent.len(),
        thousands_1(achieved),
        errors.len()
    );
    println!(
        "  send lateness vs schedule: p50 {} ms, p99 {} ms, max {} ms; \
         202 answer: p50 {} ms, p99 {} ms, max {} ms",
        f(late_ms[0]),
        f(late_ms[1]),
        f(late_ms[2]),
        f(ack_ms[0]),
        f(ack_ms[1]),
        f(ack_ms[2])
    );
    println!(
        "  latency to succeeded: p50 {} ms, p90 {} ms, p99 {} ms, max {} ms",
        f(lat_ms[0]),
        f(lat_ms[1]),
        f(lat_ms[2]),
        f(lat_ms[3])
    );
    println!(
        "  executions: {} succeeded, {failed} failed, {unfinished} not finished \
         (waited {waited:.1} s after the last send); squall's metrics count {} succeeded",
        lat.len(),
        server.map_or_else(|| "None".to_string(), |n| n.to_string())
    );
    if server.is_some_and(|n| n > lat.len() as i64) {
        println!(
            "  note: squall counted more successes than the stream showed; the stream drops \
             events for a subscriber that lags (broadcast buffer of 4096)"
        );
    }
    if let Some(e) = &stream_error {
        println!("  warning: the event stream failed: {e}");
    }
    if !errors.is_empty() {
        let first: Vec<String> = errors.iter().take(3).map(|e| format!("{e:?}")).collect();
        println!("  first errors: [{}]", first.join(", "));
    }
    if args.json {
        println!("{res}");
    }
    Ok(if unfinished > 0 || !errors.is_empty() {
        1
    } else {
        0
    })
}

// ---------------------------------------------------------------------------------------------
// Figures and their formatting (as the Python client printed them)
// ---------------------------------------------------------------------------------------------

/// Nearest-rank percentile of sorted values; NaN when there are none.
fn pct(sorted: &[f64], p: f64) -> f64 {
    if sorted.is_empty() {
        return f64::NAN;
    }
    let rank = (p / 100.0 * sorted.len() as f64).ceil() as i64 - 1;
    sorted[rank.clamp(0, sorted.len() as i64 - 1) as usize]
}

fn round_to(v: f64, digits: i32) -> f64 {
    let f = 10f64.powi(digits);
    (v * f).round() / f
}

/// Seconds to milliseconds, two decimals; `None` for NaN.
fn ms(v: f64) -> Option<f64> {
    (!v.is_nan()).then(|| round_to(v * 1000.0, 2))
}

/// Python's repr of a float: "12.0", "0.25".
fn py_float(v: f64) -> String {
    if v.is_finite() && v == v.trunc() && v.abs() < 1e16 {
        format!("{v:.1}")
    } else {
        format!("{v}")
    }
}

/// Python's `{:g}`: six significant digits, no trailing zeros.
fn fmt_g(v: f64) -> String {
    if !v.is_finite() {
        return format!("{v}");
    }
    if v == 0.0 {
        return "0".to_string();
    }
    let sci = format!("{v:.5e}");
    let (mantissa, exp) = sci.split_once('e').unwrap_or((&sci, "0"));
    let exp: i32 = exp.parse().unwrap_or(0);
    let trim = |s: &str| -> String {
        if s.contains('.') {
            s.trim_end_matches('0').trim_end_matches('.').to_string()
        } else {
            s.to_string()
        }
    };
    if (-4..6).contains(&exp) {
        trim(&format!("{v:.*}", (5 - exp) as usize))
    } else {
        let sign = if exp < 0 { '-' } else { '+' };
        format!("{}e{sign}{:02}", trim(mantissa), exp.abs())
    }
}

/// Python's `{:,.1f}`.
fn thousands_1(v: f64) -> String {
    let s = format!("{:.1}", v.abs());
    let (int, frac) = s.split_once('.').unwrap_or((&s, "0"));
    let mut grouped = String::new();
    for (k, c) in int.chars().enumerate() {
        if k > 0 && (int.len() - k) % 3 == 0 {
            grouped.push(',');
        }
        grouped.push(c);
    }
    let sign = if v < 0.0 { "-" } else { "" };
    format!("{sign}{grouped}.{frac}")
}

/// Python's repr of bytes.
fn bytes_repr(b: &[u8]) -> String {
    let q = if b.contains(&b'\'') && !b.contains(&b'"') {
        b'"'
    } else {
        b'\''
    };
    let mut out = format!("b{}", q as char);
    for &c in b {
        match c {
            b'\\' => out.push_str("\\\\"),
            b'\n' => out.push_str("\\n"),
            b'\r' => out.push_str("\\r"),
            b'\t' => out.push_str("\\t"),
            c if c == q => {
                out.push('\\');
                out.push(c as char);
            }
            0x20..=0x7e => out.push(c as char),
            c => out.push_str(&format!("\\x{c:02x}")),
        }
    }
    out.push(q as char);
    out
}
