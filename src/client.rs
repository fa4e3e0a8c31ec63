//! The commands that talk to a running squall (`squall run`) over its st2-shaped HTTP API:
//! `action run|list|get`, `execution ...`, `rule list|get|test --rule-ref`, `trigger ...`,
//! `key ...`, `pack list|reload` and `apikey ...`, with the blocking HTTP client they share and
//! the reader of the server-sent event stream that `action run` and `execution tail` follow.
//!
//! Everything here handles the server's answers as JSON values, not as the engine's types: the
//! CLI shows what the server sends, and a field it does not know about is no error. This file
//! must never open the store or run anything itself; what it knows, it asked the server.
//!
//! Choices an st2 user may want to know about:
//! - `name=value` arguments are sent as JSON when the text is JSON (`n=3`, `xs=[1,2]`,
//!   `on=true`) and as a string otherwise; the server casts them by the action's parameter
//!   types. A number is sent as a number only when that loses nothing (`v=1.10` stays "1.10").
//! - Following an execution polls `GET /api/v1/executions/{id}` every 200 ms and reads
//!   `GET /api/v1/stream` alongside for log lines as they happen; either alone gets it to the
//!   end, so a stream that drops or never opens cannot hang the CLI.
//! - `--timeout SECONDS` on `action run` and `execution rerun` bounds how long the CLI waits,
//!   not the execution: when it runs out the execution goes on and the exit code is 1.
//! - Exit codes: 0 ok; 1 the thing asked for failed (an execution that ended other than
//!   succeeded, a rule that does not match, a pack with problems, a key that does not exist);
//!   2 bad input, an API error, or a server that cannot be reached.

use std::collections::HashMap;
use std::io::{BufRead, BufReader, Read};
use std::net::IpAddr;
use std::process::ExitCode;
use std::sync::mpsc::{self, Receiver, RecvTimeoutError, Sender};
use std::time::{Duration, Instant};

use anyhow::{anyhow, bail, Context, Result};
use clap::{Args, Subcommand};
use reqwest::blocking::Client as Http;
use reqwest::{Method, Url};
use serde_json::{json, Map, Value};

/// Where `squall run` serves its API unless told otherwise.
pub const DEFAULT_API: &str = "http://127.0.0.1:9101";

/// How often a followed execution is polled.
const POLL_EVERY: Duration = Duration::from_millis(200);

/// Consecutive failed polls tolerated while following (a server restarting): 5 s at 200 ms.
const POLL_MISSES: u32 = 25;

/// How long `action run` waits for the event stream to open before it relies on polling alone.
const STREAM_OPEN_WAIT: Duration = Duration::from_secs(2);

/// A longer line in the event stream is treated as a broken stream.
const MAX_SSE_LINE: u64 = 16 * 1024 * 1024;

/// The execution statuses st2 knows, in its order.
const STATUSES: [&str; 14] = [
    "requested",
    "scheduled",
    "delayed",
    "running",
    "pending",
    "pausing",
    "paused",
    "resuming",
    "canceling",
    "canceled",
    "succeeded",
    "failed",
    "timeout",
    "abandoned",
];

/// The statuses an execution ends in.
const TERMINAL: [&str; 5] = ["succeeded", "failed", "timeout", "canceled", "abandoned"];

// ---------------------------------------------------------------------------------------------
// Command-line arguments
// ---------------------------------------------------------------------------------------------

/// Where the server is and who is asking: accepted by every API command.
#[derive(Args, Debug, Clone)]
#[command(next_help_heading = "Server")]
pub struct ApiOptions {
    /// The squall API's base URL.
    #[arg(long = "api", value_name = "URL", env = "SQUALL_API_URL", default_value = DEFAULT_API)]
    pub url: String,
    /// API key, sent as the St2-Api-Key header.
    #[arg(
        long = "api-key",
        value_name = "KEY",
        env = "SQUALL_API_KEY",
        hide_env_values = true
    )]
    pub key: Option<String>,
}

/// How to wait for an execution that was just requested.
#[derive(Args, Debug, Clone)]
pub struct FollowOptions {
    /// Do not wait: print the execution's id and return.
    #[arg(long = "async")]
    pub detach: bool,
    /// Print the execution as JSON (and no live log lines).
    #[arg(long)]
    pub json: bool,
    /// Stop waiting after this many seconds (the execution goes on); exit code 1.
    #[arg(long, value_name = "SECONDS", conflicts_with = "detach")]
    pub timeout: Option<f64>,
}

#[derive(Args, Debug)]
pub struct ActionRunArgs {
    /// The action's reference, e.g. core.echo.
    pub action: String,
    /// Parameters as name=value; JSON values are sent as JSON (n=3, xs=[1,2]), others as text.
    pub params: Vec<String>,
    #[command(flatten)]
    pub follow: FollowOptions,
    #[command(flatten)]
    pub api: ApiOptions,
}

#[derive(Args, Debug)]
pub struct ActionListArgs {
    /// Only this pack's actions.
    #[arg(long)]
    pub pack: Option<String>,
    #[arg(long)]
    pub json: bool,
    #[command(flatten)]
    pub api: ApiOptions,
}

#[derive(Args, Debug)]
pub struct ActionGetArgs {
    /// The action's reference.
    pub action: String,
    #[arg(long)]
    pub json: bool,
    #[command(flatten)]
    pub api: ApiOptions,
}

#[derive(Subcommand, Debug)]
pub enum ExecutionCommand {
    /// List executions, newest first.
    List(ExecutionListArgs),
    /// Show one execution: parameters, status, result and log.
    Get(ExecutionGetArgs),
    /// Cancel a running execution (a workflow: with its tasks and subworkflows).
    Cancel(ExecutionIdArgs),
    /// Pause a workflow: nothing new starts; paused once its running tasks end.
    Pause(ExecutionIdArgs),
    /// Resume a paused workflow.
    Resume(ExecutionIdArgs),
    /// Run an execution again, with some parameters changed; then follow it like `action run`.
    Rerun(ExecutionRerunArgs),
    /// Print an execution's log lines as they come until it ends (its stored log if it has).
    Tail(ExecutionTailArgs),
}

#[derive(Args, Debug)]
pub struct ExecutionListArgs {
    /// Only executions of this action.
    #[arg(long, value_name = "REF")]
    pub action: Option<String>,
    /// Only executions in this status.
    #[arg(long, value_name = "STATUS", value_parser = STATUSES)]
    pub status: Option<String>,
    /// Only the children of this (workflow) execution.
    #[arg(long, value_name = "ID")]
    pub parent: Option<String>,
    /// Only executions requested by rules for this trigger instance.
    #[arg(long = "trigger-instance", value_name = "ID")]
    pub trigger_instance: Option<String>,
    /// How many to show.
    #[arg(
        short = 'n',
        long = "limit",
        value_name = "LIMIT",
        default_value_t = 50
    )]
    pub limit: u32,
    /// How many of the newest to skip.
    #[arg(long, value_name = "N")]
    pub offset: Option<u32>,
    #[arg(long)]
    pub json: bool,
    #[command(flatten)]
    pub api: ApiOptions,
}

#[derive(Args, Debug)]
pub struct ExecutionGetArgs {
    pub id: String,
    #[arg(long)]
    pub json: bool,
    #[command(flatten)]
    pub api: ApiOptions,
}

#[derive(Args, Debug)]
pub struct ExecutionIdArgs {
    pub id: String,
    #[arg(long)]
    pub json: bool,
    #[command(flatten)]
    pub api: ApiOptions,
}

#[derive(Args, Debug)]
pub struct ExecutionRerunArgs {
    pub id: String,
    /// Parameters to change, as name=value (the others are the original's).
    pub params: Vec<String>,
    /// A failed workflow: run it again from these failed tasks (comma-separated or repeated),
    /// keeping its context and the tasks that succeeded.
    #[arg(long, value_name = "TASK", value_delimiter = ',')]
    pub tasks: Vec<String>,
    /// With-items tasks among --tasks whose every item runs again, not only the failed ones.
    #[arg(long, value_name = "TASK", value_delimiter = ',')]
    pub reset: Vec<String>,
    #[command(flatten)]
    pub follow: FollowOptions,
    #[command(flatten)]
    pub api: ApiOptions,
}

#[derive(Args, Debug)]
pub struct ExecutionTailArgs {
    pub id: String,
    #[command(flatten)]
    pub api: ApiOptions,
}

#[derive(Args, Debug)]
pub struct RuleListArgs {
    /// Only this pack's rules.
    #[arg(long)]
    pub pack: Option<String>,
    #[arg(long)]
    pub json: bool,
    #[command(flatten)]
    pub api: ApiOptions,
}

#[derive(Args, Debug)]
pub struct RuleGetArgs {
    /// The rule's reference, e.g. examples.disk_alert.
    pub rule: String,
    #[arg(long)]
    pub json: bool,
    #[command(flatten)]
    pub api: ApiOptions,
}

#[derive(Subcommand, Debug)]
pub enum TriggerCommand {
    /// List the trigger types the server knows.
    List(TriggerListArgs),
    /// Fire a trigger: the server records a trigger instance and runs the rules on it.
    Fire(TriggerFireArgs),
    /// List recent trigger instances, newest first.
    Instances(TriggerInstancesArgs),
}

#[derive(Args, Debug)]
pub struct TriggerListArgs {
    #[arg(long)]
    pub json: bool,
    #[command(flatten)]
    pub api: ApiOptions,
}

#[derive(Args, Debug)]
pub struct TriggerFireArgs {
    /// The trigger type's reference, e.g. core.webhook.
    pub trigger: String,
    /// Payload fields as name=value (JSON values are sent as JSON).
    #[arg(conflicts_with = "payload")]
    pub fields: Vec<String>,
    /// The whole payload as JSON.
    #[arg(long, value_name = "JSON")]
    pub payload: Option<String>,
    #[arg(long)]
    pub json: bool,
    #[command(flatten)]
    pub api: ApiOptions,
}

#[derive(Args, Debug)]
pub struct TriggerInstancesArgs {
    /// Only instances of this trigger type.
    #[arg(long, value_name = "REF")]
    pub trigger: Option<String>,
    /// How many to show.
    #[arg(short = 'n', long = "limit", value_name = "N", default_value_t = 50)]
    pub limit: u32,
    #[arg(long)]
    pub json: bool,
    #[command(flatten)]
    pub api: ApiOptions,
}

#[derive(Subcommand, Debug)]
pub enum KeyCommand {
    /// Print a key's value (exit 1 when there is no such key).
    Get(KeyGetArgs),
    /// Set a key.
    Set(KeySetArgs),
    /// Delete a key (exit 1 when there is no such key).
    Delete(KeyDeleteArgs),
    /// List keys.
    List(KeyListArgs),
}

#[derive(Args, Debug)]
pub struct KeyGetArgs {
    pub name: String,
    /// Show a secret's value in clear.
    #[arg(long)]
    pub decrypt: bool,
    #[arg(long)]
    pub json: bool,
    #[command(flatten)]
    pub api: ApiOptions,
}

#[derive(Args, Debug)]
pub struct KeySetArgs {
    pub name: String,
    pub value: String,
    /// Expire the key after this many seconds.
    #[arg(long, value_name = "SECONDS")]
    pub ttl: Option<u64>,
    /// Store the value encrypted and show it masked.
    #[arg(long)]
    pub secret: bool,
    #[arg(long)]
    pub json: bool,
    #[command(flatten)]
    pub api: ApiOptions,
}

#[derive(Args, Debug)]
pub struct KeyDeleteArgs {
    pub name: String,
    #[command(flatten)]
    pub api: ApiOptions,
}

#[derive(Args, Debug)]
pub struct KeyListArgs {
    /// Only keys whose name starts with this.
    #[arg(long)]
    pub prefix: Option<String>,
    /// Show secrets' values in clear.
    #[arg(long)]
    pub decrypt: bool,
    #[arg(long)]
    pub json: bool,
    #[command(flatten)]
    pub api: ApiOptions,
}

#[derive(Args, Debug)]
pub struct PackListArgs {
    #[arg(long)]
    pub json: bool,
    /// List the packs in these folders (may be repeated), with where each was installed from,
    /// instead of asking the server.
    #[arg(long = "packs", value_name = "DIR")]
    pub packs: Vec<std::path::PathBuf>,
    #[command(flatten)]
    pub api: ApiOptions,
}

#[derive(Args, Debug)]
pub struct PackReloadArgs {
    #[arg(long)]
    pub json: bool,
    #[command(flatten)]
    pub api: ApiOptions,
}

#[derive(Subcommand, Debug)]
pub enum SensorCommand {
    /// List the server's sensors: running or why not, connected, events, last error.
    List(SensorListArgs),
}

#[derive(Args, Debug)]
pub struct SensorListArgs {
    #[arg(long)]
    pub json: bool,
    #[command(flatten)]
    pub api: ApiOptions,
}

#[derive(Subcommand, Debug)]
pub enum ApikeyCommand {
    /// Create an API key; it is printed once, now.
    Create(ApikeyCreateArgs),
    /// List API keys (never the keys themselves).
    List(ApikeyListArgs),
    /// Delete an API key.
    Delete(ApikeyDeleteArgs),
}

#[derive(Args, Debug)]
pub struct ApikeyCreateArgs {
    /// Whom the key is for (default: the server decides, usually the caller).
    #[arg(long)]
    pub user: Option<String>,
    #[arg(long)]
    pub json: bool,
    #[command(flatten)]
    pub api: ApiOptions,
}

#[derive(Args, Debug)]
pub struct ApikeyListArgs {
    #[arg(long)]
    pub json: bool,
    #[command(flatten)]
    pub api: ApiOptions,
}

#[derive(Args, Debug)]
pub struct ApikeyDeleteArgs {
    pub id: String,
    #[command(flatten)]
    pub api: ApiOptions,
}

// ---------------------------------------------------------------------------------------------
// The HTTP client
// ---------------------------------------------------------------------------------------------

/// Why a request got no usable answer. Shown by `main` as `error: <this>`, exit code 2.
#[derive(Debug)]
pub enum ApiFailure {
    /// No connection (refused, no route, DNS).
    Unreachable { url: String, cause: String },
    /// Connected, but no answer in time.
    TimedOut { url: String },
    /// The request could not even be built (a header value with a newline, say).
    Request { why: String },
    /// The server said no: its `{"error", "detail"}` body.
    Api {
        status: u16,
        error: String,
        detail: Value,
        hint: Option<&'static str>,
    },
    /// The server answered with something that is not what the API promises.
    BadResponse { url: String, why: String },
}

impl std::fmt::Display for ApiFailure {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            ApiFailure::Unreachable { url, cause } => {
                write!(f, "cannot reach squall at {url}: is `squall run` running?")?;
                if !cause.is_empty() {
                    write!(f, " ({cause})")?;
                }
                Ok(())
            }
            ApiFailure::TimedOut { url } => write!(f, "squall at {url} did not answer in time"),
            ApiFailure::Request { why } => write!(f, "cannot send the request: {why}"),
            ApiFailure::Api {
                error,
                detail,
                hint,
                ..
            } => {
                f.write_str(error)?;
                for line in detail_lines(detail) {
                    write!(f, "\n  {line}")?;
                }
                if let Some(h) = hint {
                    write!(f, "\n{h}")?;
                }
                Ok(())
            }
            ApiFailure::BadResponse { url, why } => {
                write!(f, "unexpected answer from squall at {url}: {why}")
            }
        }
    }
}

impl std::error::Error for ApiFailure {}

impl ApiFailure {
    fn status(&self) -> Option<u16> {
        match self {
            ApiFailure::Api { status, .. } => Some(*status),
            _ => None,
        }
    }

    /// A failure that may go away if asked again a moment later.
    fn transient(&self) -> bool {
        matches!(
            self,
            ApiFailure::Unreachable { .. } | ApiFailure::TimedOut { .. }
        )
    }
}

/// The lines that explain an error body's `detail`: one per parameter for a 400 on
/// parameters (`[{parameter, message}]`), one per item for other lists, the text of a string.
pub fn detail_lines(detail: &Value) -> Vec<String> {
    fn item(v: &Value) -> String {
        match v {
            Value::String(s) => s.clone(),
            Value::Object(o) => match (o.get("parameter"), o.get("message")) {
                (Some(p), Some(m)) => format!("parameter '{}': {}", text(p), text(m)),
                (None, Some(m)) => match o.get("path").or_else(|| o.get("field")) {
                    Some(at) => format!("{}: {}", text(at), text(m)),
                    None => text(m),
                },
                _ => v.to_string(),
            },
            other => other.to_string(),
        }
    }
    match detail {
        Value::Null => Vec::new(),
        Value::String(s) if s.trim().is_empty() => Vec::new(),
        Value::String(s) => s.lines().map(str::to_string).collect(),
        Value::Array(items) => items.iter().map(item).collect(),
        Value::Object(o) if o.contains_key("message") => vec![item(detail)],
        Value::Object(o) => o.iter().map(|(k, v)| format!("{k}: {}", text(v))).collect(),
        other => vec![other.to_string()],
    }
}

/// Turns an error answer into an [`ApiFailure`]: the API's `{"error", "detail"}` body, or
/// whatever a proxy or an older server sent instead.
pub fn api_failure(status: u16, reason: &str, body: &str, sent_key: bool) -> ApiFailure {
    let hint = match status {
        401 | 403 if !sent_key => Some("hint: give an API key with --api-key or SQUALL_API_KEY"),
        _ => None,
    };
    let parsed: Option<Value> = serde_json::from_str(body).ok();
    if let Some(Value::Object(o)) = &parsed {
        if let Some(Value::String(error)) = o.get("error") {
            return ApiFailure::Api {
                status,
                error: error.clone(),
                detail: o.get("detail").cloned().unwrap_or(Value::Null),
                hint,
            };
        }
    }
    let trimmed = body.trim();
    ApiFailure::Api {
        status,
        error: format!("HTTP {status} {reason}").trim_end().to_string(),
        detail: if trimmed.is_empty() {
            Value::Null
        } else {
            Value::String(clip(trimmed, 500))
        },
        hint,
    }
}

/// A connection to squall's API.
pub struct Client {
    base: Url,
    /// The base URL as the user gave it, for messages.
    shown: String,
    key: Option<String>,
    http: Http,
    /// For the event stream, which stays open as long as it is read: no overall timeout.
    stream_http: Http,
}

impl Client {
    pub fn new(opts: &ApiOptions) -> Result<Client> {
        // st2's clients take the API's base with `/api/v1`; squall's paths add it themselves.
        let shown = opts
            .url
            .trim_end_matches('/')
            .trim_end_matches("/api/v1")
            .trim_end_matches('/')
            .to_string();
        let base =
            Url::parse(&shown).map_err(|e| anyhow!("--api {}: not a URL ({e})", opts.url))?;
        if !matches!(base.scheme(), "http" | "https") || base.cannot_be_a_base() {
            bail!("--api {}: give an http:// or https:// URL", opts.url);
        }
        let loopback = base.host_str().is_some_and(|h| {
            h.trim_start_matches('[')
                .trim_end_matches(']')
                .parse::<IpAddr>()
                .map(|ip| ip.is_loopback())
                .unwrap_or(h == "localhost")
        });
        let builder = || {
            let b = Http::builder()
                .user_agent(concat!("squall-cli/", env!("CARGO_PKG_VERSION")))
                .connect_timeout(Duration::from_secs(5));
            // A proxy between the CLI and a server on this machine is never what is meant.
            if loopback {
                b.no_proxy()
            } else {
                b
            }
        };
        let http = builder()
            .timeout(Duration::from_secs(30))
            .build()
            .context("cannot set up the HTTP client")?;
        let stream_http = builder()
            .timeout(None::<Duration>)
            .build()
            .context("cannot set up the HTTP client")?;
        Ok(Client {
            base,
            shown,
            key: opts.key.clone().filter(|k| !k.is_empty()),
            http,
            stream_http,
        })
    }

    /// `<base>/api/v1/<path...>?<query>`; path parts are percent-encoded, so a key name or an
    /// id with `/` or `?` in it stays one part.
    fn url(&self, path: &[&str], query: &[(&str, Option<String>)]) -> Url {
        let mut url = self.base.clone();
        if let Ok(mut segments) = url.path_segments_mut() {
            segments.pop_if_empty().push("api").push("v1").extend(path);
        }
        let pairs: Vec<(&str, &String)> = query
            .iter()
            .filter_map(|(k, v)| v.as_ref().map(|v| (*k, v)))
            .collect();
        if !pairs.is_empty() {
            let mut q = url.query_pairs_mut();
            for (k, v) in pairs {
                q.append_pair(k, v);
            }
        }
        url
    }

    pub fn call(
        &self,
        method: Method,
        path: &[&str],
        query: &[(&str, Option<String>)],
        body: Option<&Value>,
    ) -> Result<Value, ApiFailure> {
        let url = self.url(path, query);
        let mut request = self.http.request(method, url.clone());
        if let Some(key) = &self.key {
            request = request.header("St2-Api-Key", key);
        }
        if let Some(body) = body {
            request = request.json(body);
        }
        let response = request.send().map_err(|e| self.transport_failure(&e))?;
        let status = response.status();
        let text = response.text().map_err(|e| self.transport_failure(&e))?;
        if !status.is_success() {
            return Err(api_failure(
                status.as_u16(),
                status.canonical_reason().unwrap_or(""),
                &text,
                self.key.is_some(),
            ));
        }
        if text.trim().is_empty() {
            return Ok(Value::Null);
        }
        serde_json::from_str(&text).map_err(|e| ApiFailure::BadResponse {
            url: url.to_string(),
            why: format!("not JSON ({e}): {}", clip(text.trim(), 200)),
        })
    }

    pub fn get(
        &self,
        path: &[&str],
        query: &[(&str, Option<String>)],
    ) -> Result<Value, ApiFailure> {
        self.call(Method::GET, path, query, None)
    }

    pub fn post(&self, path: &[&str], body: &Value) -> Result<Value, ApiFailure> {
        self.call(Method::POST, path, &[], Some(body))
    }

    fn transport_failure(&self, e: &reqwest::Error) -> ApiFailure {
        if e.is_builder() {
            return ApiFailure::Request { why: root_cause(e) };
        }
        if e.is_timeout() {
            return ApiFailure::TimedOut {
                url: self.shown.clone(),
            };
        }
        ApiFailure::Unreachable {
            url: self.shown.clone(),
            cause: root_cause(e),
        }
    }
}

/// The innermost error's message: "Connection refused (os error 111)" rather than
/// "error sending request for url (...)".
fn root_cause(e: &(dyn std::error::Error + 'static)) -> String {
    let mut current = e;
    while let Some(next) = current.source() {
        current = next;
    }
    current.to_string()
}

// ---------------------------------------------------------------------------------------------
// Server-sent events
// ---------------------------------------------------------------------------------------------

/// One event of a `text/event-stream`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SseEvent {
    /// The `event:` field; "message" when there was none.
    pub event: String,
    /// The `data:` lines, joined with newlines.
    pub data: String,
}

/// Reads events from a `text/event-stream` body, line by line, as the HTML standard says:
/// `field: value` lines, `:` comments, a blank line ends an event, an event without data is
/// not dispatched, an event cut off by the end of the stream is dropped. Lines end with LF or
/// CRLF (a lone CR, which no server we know sends, is not a line end here).
pub struct SseReader<R> {
    reader: R,
    line: Vec<u8>,
    event: String,
    data: String,
    has_data: bool,
}

impl<R: BufRead> SseReader<R> {
    pub fn new(reader: R) -> Self {
        SseReader {
            reader,
            line: Vec::new(),
            event: String::new(),
            data: String::new(),
            has_data: false,
        }
    }

    /// The next event, or `None` at the end of the stream.
    pub fn next_event(&mut self) -> std::io::Result<Option<SseEvent>> {
        loop {
            self.line.clear();
            let n = (&mut self.reader)
                .take(MAX_SSE_LINE)
                .read_until(b'\n', &mut self.line)?;
            if n == 0 {
                return Ok(None);
            }
            if self.line.last() != Some(&b'\n') {
                if n as u64 == MAX_SSE_LINE {
                    return Err(std::io::Error::new(
                        std::io::ErrorKind::InvalidData,
                        "event stream line too long",
                    ));
                }
                // The stream ended inside a line, so inside an event: drop it.
                return Ok(None);
            }
            self.line.pop();
            if self.line.last() == Some(&b'\r') {
                self.line.pop();
            }
            let line = String::from_utf8_lossy(&self.line);
            if line.is_empty() {
                let event = std::mem::take(&mut self.event);
                let mut data = std::mem::take(&mut self.data);
                if !std::mem::take(&mut self.has_data) {
                    continue;
                }
                data.pop(); // the newline after the last data line
                let event = if event.is_empty() {
                    "message".to_string()
                } else {
                    event
                };
                return Ok(Some(SseEvent { event, data }));
            }
            if line.starts_with(':') {
                continue;
            }
            let (field, value) = match line.split_once(':') {
                Some((f, v)) => (f, v.strip_prefix(' ').unwrap_or(v)),
                None => (line.as_ref(), ""),
            };
            match field {
                "event" => self.event = value.to_string(),
                "data" => {
                    self.data.push_str(value);
                    self.data.push('\n');
                    self.has_data = true;
                }
                _ => {}
            }
        }
    }
}

/// What the follow loop wants from the stream.
#[derive(Debug)]
enum StreamEvent {
    /// `st2.execution__create|update`: the execution.
    Execution(Value),
    /// `st2.execution.output__create`: `{execution_id, timestamp, level, message}` (and st2's
    /// `output_type`, `data`).
    Output(Value),
}

impl StreamEvent {
    fn from_sse(e: &SseEvent) -> Option<StreamEvent> {
        let data = || serde_json::from_str::<Value>(&e.data).ok();
        match e.event.as_str() {
            "st2.execution__create" | "st2.execution__update" => data().map(StreamEvent::Execution),
            "st2.execution.output__create" => data().map(StreamEvent::Output),
            _ => None,
        }
    }
}

/// Opens `GET /api/v1/stream` on a thread that forwards execution events. `None` when the
/// stream does not open soon (an old server, a proxy that buffers): following then polls.
fn open_stream(client: &Client) -> Option<Receiver<StreamEvent>> {
    let (events, rx) = mpsc::channel();
    let (ready, is_ready) = mpsc::channel();
    let mut request = client
        .stream_http
        .get(client.url(&["stream"], &[]))
        .header(reqwest::header::ACCEPT, "text/event-stream");
    if let Some(key) = &client.key {
        request = request.header("St2-Api-Key", key);
    }
    std::thread::Builder::new()
        .name("squall-events".into())
        .spawn(move || {
            let response = match request.send() {
                Ok(r) if r.status().is_success() => r,
                _ => {
                    let _ = ready.send(false);
                    return;
                }
            };
            let _ = ready.send(true);
            forward_events(response, &events);
        })
        .ok()?;
    match is_ready.recv_timeout(STREAM_OPEN_WAIT) {
        Ok(true) => Some(rx),
        _ => None,
    }
}

fn forward_events(body: impl Read, events: &Sender<StreamEvent>) {
    let mut reader = SseReader::new(BufReader::new(body));
    while let Ok(Some(event)) = reader.next_event() {
        if let Some(e) = StreamEvent::from_sse(&event) {
            if events.send(e).is_err() {
                return;
            }
        }
    }
}

// ---------------------------------------------------------------------------------------------
// Following an execution
// ---------------------------------------------------------------------------------------------

/// Prints each log line once, whether it came from the stream, from a poll, or both.
///
/// A line is known by (timestamp, level, message) and counted, so a script that prints the
/// same thing twice in the same microsecond still shows twice.
#[derive(Default)]
struct LogPrinter {
    printed: HashMap<(String, String, String), usize>,
    streamed: HashMap<(String, String, String), usize>,
}

impl LogPrinter {
    /// The lines of an execution's stored `log` not printed yet.
    fn unseen_in_log(&mut self, log: &Value) -> Vec<String> {
        let mut seen: HashMap<(String, String, String), usize> = HashMap::new();
        let mut out = Vec::new();
        for line in log.as_array().into_iter().flatten() {
            let key = log_key(line);
            let n = seen.entry(key.clone()).or_default();
            *n += 1;
            let printed = self.printed.entry(key).or_default();
            if *n > *printed {
                *printed = *n;
                out.push(format_log_line(line));
            }
        }
        out
    }

    /// An output event's line, unless a poll printed it already.
    fn unseen_event(&mut self, line: &Value) -> Option<String> {
        let key = log_key(line);
        let n = self.streamed.entry(key.clone()).or_default();
        *n += 1;
        let printed = self.printed.entry(key).or_default();
        if *n > *printed {
            *printed = *n;
            Some(format_log_line(line))
        } else {
            None
        }
    }
}

fn log_key(line: &Value) -> (String, String, String) {
    let timestamp = match &line["timestamp"] {
        Value::String(s) => chrono::DateTime::parse_from_rfc3339(s)
            .map(|t| t.timestamp_nanos_opt().unwrap_or_default().to_string())
            .unwrap_or_else(|_| s.clone()),
        other => other.to_string(),
    };
    (timestamp, text(&line["level"]), text(&line["message"]))
}

/// `[level] message`, as `action exec` prints them.
fn format_log_line(line: &Value) -> String {
    let level = match &line["level"] {
        Value::Null => "log".to_string(),
        other => text(other),
    };
    format!("[{level}] {}", text(&line["message"]))
}

enum Followed {
    /// It ended: the final record.
    Done(Value),
    /// The wait ran out first: the last record seen.
    StillRunning(Value),
}

/// Follows execution `id` to its end, giving each new log line to `sink` once.
fn follow(
    client: &Client,
    id: &str,
    mut events: Option<Receiver<StreamEvent>>,
    deadline: Option<Instant>,
    printer: &mut LogPrinter,
    sink: &mut dyn FnMut(&str),
) -> Result<Followed, ApiFailure> {
    let mut misses = 0;
    loop {
        match client.get(&["executions", id], &[]) {
            Ok(execution) => {
                misses = 0;
                for line in printer.unseen_in_log(&execution["log"]) {
                    sink(&line);
                }
                if is_terminal(&execution) {
                    return Ok(Followed::Done(execution));
                }
                if deadline.is_some_and(|d| Instant::now() >= d) {
                    return Ok(Followed::StillRunning(execution));
                }
            }
            Err(e) if e.transient() && misses < POLL_MISSES => misses += 1,
            Err(e) => return Err(e),
        }
        wait_for_events(&mut events, id, Instant::now() + POLL_EVERY, printer, sink);
    }
}

/// Until `wake`, prints the stream's log lines for `id`; returns early when the stream says it
/// ended, so the final poll comes at once.
fn wait_for_events(
    events: &mut Option<Receiver<StreamEvent>>,
    id: &str,
    wake: Instant,
    printer: &mut LogPrinter,
    sink: &mut dyn FnMut(&str),
) {
    loop {
        let now = Instant::now();
        if now >= wake {
            return;
        }
        let Some(rx) = events.as_ref() else {
            std::thread::sleep(wake - now);
            return;
        };
        match rx.recv_timeout(wake - now) {
            Ok(StreamEvent::Output(line)) if line["execution_id"].as_str() == Some(id) => {
                if let Some(text) = printer.unseen_event(&line) {
                    sink(&text);
                }
            }
            Ok(StreamEvent::Execution(e)) if e["id"].as_str() == Some(id) && is_terminal(&e) => {
                return
            }
            Ok(_) => {}
            Err(RecvTimeoutError::Timeout) => return,
            Err(RecvTimeoutError::Disconnected) => *events = None,
        }
    }
}

fn is_terminal(execution: &Value) -> bool {
    TERMINAL.contains(&execution["status"].as_str().unwrap_or(""))
}

fn exit_for(execution: &Value) -> ExitCode {
    if execution["status"].as_str() == Some("succeeded") {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    }
}

fn deadline(opts: &FollowOptions) -> Result<Option<Instant>> {
    let Some(seconds) = opts.timeout else {
        return Ok(None);
    };
    match Duration::try_from_secs_f64(seconds) {
        Ok(d) if seconds > 0.0 => Ok(Instant::now().checked_add(d)),
        _ => bail!("--timeout {seconds}: give a number of seconds above 0"),
    }
}

/// After a 201 with a new execution: print it (`--async`) or follow it to the end.
fn report_requested(
    client: &Client,
    created: Value,
    opts: &FollowOptions,
    events: Option<Receiver<StreamEvent>>,
) -> Result<ExitCode> {
    report_requested_as(client, created, opts, events, &|e| {
        format_execution(e, false)
    })
}

/// [`report_requested`], the ended execution shown as `show` says.
fn report_requested_as(
    client: &Client,
    created: Value,
    opts: &FollowOptions,
    events: Option<Receiver<StreamEvent>>,
    show: &dyn Fn(&Value) -> String,
) -> Result<ExitCode> {
    let id = text(&created["id"]);
    if id.is_empty() {
        bail!("the server answered without an execution id: {created}");
    }
    if opts.detach {
        if opts.json {
            println!("{}", pretty(&created));
        } else {
            println!("id: {id}");
            println!("status: {}", text(&created["status"]));
            println!("follow it with `squall execution tail {id}`, see it with `squall execution get {id}`");
        }
        return Ok(ExitCode::SUCCESS);
    }
    let deadline = deadline(opts)?;
    let mut printer = LogPrinter::default();
    let json = opts.json;
    let mut sink = |line: &str| {
        if !json {
            eprintln!("{line}");
        }
    };
    match follow(client, &id, events, deadline, &mut printer, &mut sink)? {
        Followed::Done(execution) => {
            if json {
                println!("{}", pretty(&execution));
            } else {
                print!("{}", show(&execution));
            }
            Ok(exit_for(&execution))
        }
        Followed::StillRunning(execution) => {
            if json {
                println!("{}", pretty(&execution));
            }
            eprintln!(
                "execution {id} is still {} after {} s; it goes on: follow it with `squall execution tail {id}`",
                text(&execution["status"]),
                opts.timeout.unwrap_or_default()
            );
            Ok(ExitCode::FAILURE)
        }
    }
}

// ---------------------------------------------------------------------------------------------
// Printing
// ---------------------------------------------------------------------------------------------

/// A value as text: strings without quotes, anything else as compact JSON, null as "".
fn text(v: &Value) -> String {
    match v {
        Value::String(s) => s.clone(),
        Value::Null => String::new(),
        other => other.to_string(),
    }
}

pub(crate) fn pretty(v: &Value) -> String {
    serde_json::to_string_pretty(v).unwrap_or_else(|_| v.to_string())
}

/// At most `max` characters, the last an ellipsis when cut.
fn clip(s: &str, max: usize) -> String {
    if s.chars().count() <= max {
        return s.to_string();
    }
    let mut out: String = s.chars().take(max.saturating_sub(1)).collect();
    out.push('…');
    out
}

/// One line of a table cell: newlines and tabs become spaces.
fn cell(s: &str) -> String {
    s.chars()
        .map(|c| if c.is_control() { ' ' } else { c })
        .collect()
}

/// A reference that the API gives either as text or as `{"ref": ...}`.
fn reference(v: &Value) -> String {
    match v {
        Value::Object(o) => o
            .get("ref")
            .or_else(|| o.get("id"))
            .map(text)
            .unwrap_or_default(),
        other => text(other),
    }
}

/// Columns padded to their widest cell, two spaces apart; the last column is not padded.
pub fn table(headers: &[&str], rows: &[Vec<String>]) -> String {
    let columns = headers.len();
    let mut widths: Vec<usize> = headers.iter().map(|h| h.chars().count()).collect();
    for row in rows {
        for (i, c) in row.iter().enumerate().take(columns) {
            widths[i] = widths[i].max(c.chars().count());
        }
    }
    let mut out = String::new();
    let header: Vec<String> = headers.iter().map(|h| h.to_string()).collect();
    for row in std::iter::once(&header).chain(rows) {
        let mut line = String::new();
        for (i, width) in widths.iter().enumerate() {
            let c = row.get(i).map(String::as_str).unwrap_or("");
            if i + 1 < columns {
                line.push_str(c);
                line.push_str(&" ".repeat(width - c.chars().count() + 2));
            } else {
                line.push_str(c);
            }
        }
        out.push_str(line.trim_end());
        out.push('\n');
    }
    out
}

/// `2024-05-01 12:00:03` (UTC) from an RFC 3339 timestamp; "-" for none.
fn short_time(v: &Value) -> String {
    match v {
        Value::String(s) => chrono::DateTime::parse_from_rfc3339(s)
            .map(|t| {
                t.with_timezone(&chrono::Utc)
                    .format("%Y-%m-%d %H:%M:%S")
                    .to_string()
            })
            .unwrap_or_else(|_| s.clone()),
        Value::Null => "-".to_string(),
        other => other.to_string(),
    }
}

/// `40ms`, `3.4s`, `2m05s`, `3h07m`.
pub fn duration_text(seconds: f64) -> String {
    if !seconds.is_finite() || seconds < 0.0 {
        return "-".to_string();
    }
    if seconds < 1.0 {
        return format!("{}ms", (seconds * 1000.0).round() as u64);
    }
    if seconds < 60.0 {
        return format!("{seconds:.1}s");
    }
    let whole = seconds as u64;
    if whole < 3600 {
        format!("{}m{:02}s", whole / 60, whole % 60)
    } else {
        format!("{}h{:02}m", whole / 3600, (whole % 3600) / 60)
    }
}

/// How long an execution took, or has been running for.
fn elapsed(execution: &Value) -> Option<String> {
    if let Some(s) = execution["elapsed_seconds"].as_f64() {
        return Some(duration_text(s));
    }
    if is_terminal(execution) {
        return None;
    }
    let start =
        chrono::DateTime::parse_from_rfc3339(execution["start_timestamp"].as_str()?).ok()?;
    let running = chrono::Utc::now().signed_duration_since(start);
    Some(duration_text(running.num_milliseconds() as f64 / 1000.0))
}

fn indented(block: &str) -> String {
    block.lines().map(|l| format!("  {l}\n")).collect()
}

/// An execution as `key: value` lines, st2 style; `full` adds its context and log.
pub fn format_execution(e: &Value, full: bool) -> String {
    let mut out = String::new();
    let mut field = |name: &str, value: String| {
        out.push_str(&format!("{name}: {value}\n"));
    };
    field("id", text(&e["id"]));
    field("action", reference(&e["action"]));
    if e["parameters"].as_object().is_some_and(|p| !p.is_empty()) {
        field("parameters", e["parameters"].to_string());
    }
    let status = match elapsed(e) {
        Some(t) => format!("{} ({t})", text(&e["status"])),
        None => text(&e["status"]),
    };
    field("status", status);
    if full {
        field("start", short_time(&e["start_timestamp"]));
        if !e["end_timestamp"].is_null() {
            field("end", short_time(&e["end_timestamp"]));
        }
        for (name, key) in [
            ("rule", "rule"),
            ("trigger instance", "trigger_instance"),
            ("parent", "parent"),
            ("re-run of", "rerun_of"),
            ("user", "user"),
        ] {
            let mut v = reference(&e[key]);
            if v.is_empty() {
                v = reference(&e["context"][key]);
            }
            if !v.is_empty() {
                field(name, v);
            }
        }
        if e["attempt"].as_u64().is_some_and(|a| a > 1) {
            field("attempt", text(&e["attempt"]));
        }
    }
    if let Some(reason) = e["reason"].as_str() {
        field("reason", reason.to_string());
    }
    match &e["result"] {
        Value::Null => {}
        Value::String(s) => out.push_str(&format!("result:\n{}", indented(s))),
        other => out.push_str(&format!("result:\n{}", indented(&pretty(other)))),
    }
    if full {
        if let Some(log) = e["log"].as_array().filter(|l| !l.is_empty()) {
            out.push_str("log:\n");
            for line in log {
                out.push_str(&indented(&format_log_line(line)));
            }
        }
    }
    out
}

/// What `rule test` prints for the server's answer, and its exit code: the local form's
/// `=== RULE MATCHES ===` / `=== RULE DOES NOT MATCH ===` and the same lines after.
pub fn format_rule_test(answer: &Value, asked: &str) -> Result<(String, ExitCode)> {
    let matches = answer["matches"]
        .as_bool()
        .ok_or_else(|| anyhow!("the server's answer has no 'matches': {answer}"))?;
    let rule = match reference(&answer["rule"]) {
        r if r.is_empty() => asked.to_string(),
        r => r,
    };
    let mut out = String::new();
    if matches {
        out.push_str("=== RULE MATCHES ===\n");
        out.push_str(&format!("rule: {rule}\n"));
        out.push_str(&format!("action: {}\n", reference(&answer["action"])));
        let parameters = match &answer["parameters"] {
            Value::Null => Value::Object(Map::new()),
            other => other.clone(),
        };
        out.push_str(&format!("parameters: {}\n", pretty(&parameters)));
        // It matches, but its enforcement fails (parameters the action refuses, a template
        // that does not render): said, with the local form's exit code for it.
        if let Some(reason) = answer["reason"].as_str().filter(|r| !r.is_empty()) {
            out.push_str(&format!("{reason}\n"));
            return Ok((out, ExitCode::from(2)));
        }
        return Ok((out, ExitCode::SUCCESS));
    }
    out.push_str("=== RULE DOES NOT MATCH ===\n");
    out.push_str(&format!("rule: {rule}\n"));
    let failure = &answer["failure"];
    if failure.is_object() {
        // As squall-rules' CriterionFailure shows itself.
        out.push_str("criterion failed:\n");
        out.push_str(&format!("  key: {}\n", text(&failure["key"])));
        out.push_str(&format!("  pattern: {}\n", failure["pattern"]));
        out.push_str(&format!("  type: {}\n", text(&failure["type"])));
        out.push_str(&format!("  payload: {}\n", failure["payload_value"]));
        if !failure["error"].is_null() {
            out.push_str(&format!("  error: {}\n", text(&failure["error"])));
        }
    } else {
        match answer["reason"].as_str() {
            Some(r) if !r.is_empty() => out.push_str(&format!("{r}\n")),
            _ => out.push_str("no reason given\n"),
        }
    }
    Ok((out, ExitCode::FAILURE))
}

// ---------------------------------------------------------------------------------------------
// Parameters
// ---------------------------------------------------------------------------------------------

/// `name=value` arguments as a JSON object. A value is sent as JSON when it parses as JSON
/// (and, for a number, when writing it back gives the same text), else as a string.
pub fn parse_params(args: &[String]) -> Result<Map<String, Value>> {
    typed_params(args, &Value::Null)
}

/// [`parse_params`] for an action whose declared parameters (`GET /actions/{ref}`'s
/// `parameters`) are known: each value is read as its declared type, as `action exec` reads
/// it (a string parameter takes the text as it is, `{"a":1}` included; an array takes `a,b,c`
/// or JSON); a name the action does not declare is guessed, and the server names it if wrong.
fn typed_params(args: &[String], declared: &Value) -> Result<Map<String, Value>> {
    let mut params = Map::new();
    let mut errors = Vec::new();
    for arg in args {
        let Some((name, raw)) = arg.split_once('=') else {
            errors.push(format!("'{arg}' is not name=value"));
            continue;
        };
        let name = name.trim();
        if name.is_empty() {
            errors.push(format!("'{arg}' has no name before '='"));
            continue;
        }
        if params.contains_key(name) {
            errors.push(format!("parameter '{name}' is given twice"));
            continue;
        }
        let ty = declared[name]["type"]
            .as_str()
            .and_then(|t| t.parse::<squall_actions::ParamType>().ok());
        // A value its type cannot read is sent as guessed: the server then names every bad or
        // missing parameter at once.
        let value = ty
            .and_then(|ty| squall_actions::parse_cli_value(ty, raw).ok())
            .unwrap_or_else(|| cli_value(raw));
        params.insert(name.to_string(), value);
    }
    if !errors.is_empty() {
        bail!("invalid parameters:\n  {}", errors.join("\n  "));
    }
    Ok(params)
}

fn cli_value(raw: &str) -> Value {
    match serde_json::from_str::<Value>(raw) {
        Ok(Value::Number(n)) if n.to_string() != raw.trim() => Value::String(raw.to_string()),
        Ok(v) => v,
        Err(_) => Value::String(raw.to_string()),
    }
}

// ---------------------------------------------------------------------------------------------
// The commands
// ---------------------------------------------------------------------------------------------

pub(crate) fn print_json(v: &Value) -> ExitCode {
    println!("{}", pretty(v));
    ExitCode::SUCCESS
}

fn list(v: Value, what: &str) -> Result<Vec<Value>> {
    match v {
        Value::Array(items) => Ok(items),
        other => bail!(
            "the server's list of {what} is not a list: {}",
            clip(&other.to_string(), 200)
        ),
    }
}

/// The parameters an action declares, as the API lists them (`Null` when it cannot say:
/// the request then names any problem).
fn declared_params(client: &Client, action: &str) -> Value {
    client
        .get(&["actions", action], &[])
        .map(|a| a["parameters"].clone())
        .unwrap_or(Value::Null)
}

pub fn action_run(args: &ActionRunArgs) -> Result<ExitCode> {
    parse_params(&args.params)?;
    deadline(&args.follow)?;
    let client = Client::new(&args.api)?;
    let params = typed_params(&args.params, &declared_params(&client, &args.action))?;
    let events = if args.follow.detach {
        None
    } else {
        open_stream(&client)
    };
    let created = client.post(
        &["executions"],
        &json!({"action": args.action, "parameters": params}),
    )?;
    report_requested(&client, created, &args.follow, events)
}

#[derive(Args, Debug)]
pub struct AliasListArgs {
    /// Only this pack's aliases.
    #[arg(long)]
    pub pack: Option<String>,
    #[arg(long)]
    pub json: bool,
    #[command(flatten)]
    pub api: ApiOptions,
}

/// `squall alias list`: the server's aliases and the commands they take.
pub fn alias_list(args: &AliasListArgs) -> Result<ExitCode> {
    let client = Client::new(&args.api)?;
    let mut aliases = list(client.get(&["actionalias"], &[])?, "aliases")?;
    if let Some(pack) = &args.pack {
        aliases.retain(|a| a["pack"].as_str() == Some(pack));
    }
    if args.json {
        return Ok(print_json(&Value::Array(aliases)));
    }
    if aliases.is_empty() {
        println!("no aliases");
        return Ok(ExitCode::SUCCESS);
    }
    let rows: Vec<Vec<String>> = aliases
        .iter()
        .map(|a| {
            let formats: Vec<String> = a["formats"]
                .as_array()
                .map(|fs| {
                    fs.iter()
                        .map(|f| match f {
                            Value::String(s) => s.clone(),
                            other => text(&other["display"]),
                        })
                        .collect()
                })
                .unwrap_or_default();
            vec![
                cell(&text(&a["ref"])),
                if a["enabled"] == Value::Bool(false) {
                    "no"
                } else {
                    "yes"
                }
                .to_string(),
                cell(&text(&a["action_ref"])),
                cell(&formats.join(" | ")),
            ]
        })
        .collect();
    print!(
        "{}",
        table(&["REF", "ENABLED", "ACTION", "COMMANDS"], &rows)
    );
    Ok(ExitCode::SUCCESS)
}

#[derive(Args, Debug)]
pub struct AliasExecArgs {
    /// The command, as typed in chat (one argument: quote it).
    pub command: String,
    #[command(flatten)]
    pub follow: FollowOptions,
    #[command(flatten)]
    pub api: ApiOptions,
}

/// `squall alias exec`: runs a chat command through the server and prints its answer as chat
/// would show it (the alias's `result.format`).
pub fn alias_exec(args: &AliasExecArgs) -> Result<ExitCode> {
    deadline(&args.follow)?;
    let client = Client::new(&args.api)?;
    let user = std::env::var("USER").unwrap_or_else(|_| "cli".to_string());
    let events = if args.follow.detach {
        None
    } else {
        open_stream(&client)
    };
    // Route `cli`: the answer is printed here, not posted to a chat.
    let answer = client.post(
        &["aliasexecution", "match_and_execute"],
        &json!({"command": args.command, "user": user, "source_channel": "cli", "notification_route": "cli"}),
    )?;
    let result = &answer["results"][0];
    if let Some(ack) = result["message"].as_str() {
        if !args.follow.json {
            eprintln!("{ack}");
        }
    }
    let alias = squall_engine::rules::Alias::from_yaml(&result["actionalias"].to_string()).ok();
    let reference = text(&result["actionalias"]["ref"]);
    let show = |e: &Value| {
        let message = squall_engine::chatops::answer::result_message(
            alias.as_ref().map(|a| (reference.as_str(), a)),
            e,
        );
        message.map(|(m, _)| format!("{m}\n")).unwrap_or_default()
    };
    report_requested_as(
        &client,
        result["execution"].clone(),
        &args.follow,
        events,
        &show,
    )
}

pub fn action_list(args: &ActionListArgs) -> Result<ExitCode> {
    let client = Client::new(&args.api)?;
    let mut actions = list(client.get(&["actions"], &[])?, "actions")?;
    if let Some(pack) = &args.pack {
        actions.retain(|a| a["pack"].as_str() == Some(pack));
    }
    if args.json {
        return Ok(print_json(&Value::Array(actions)));
    }
    if actions.is_empty() {
        println!("no actions");
        return Ok(ExitCode::SUCCESS);
    }
    let rows: Vec<Vec<String>> = actions
        .iter()
        .map(|a| {
            let mut description = first_line(&text(&a["description"]));
            if a["enabled"] == Value::Bool(false) {
                description = format!("[disabled] {description}");
            }
            vec![
                cell(&text(&a["ref"])),
                cell(&text(&a["runner_type"])),
                cell(&clip(&description, 70)),
            ]
        })
        .collect();
    print!("{}", table(&["REF", "RUNNER", "DESCRIPTION"], &rows));
    Ok(ExitCode::SUCCESS)
}

fn first_line(s: &str) -> String {
    s.lines().next().unwrap_or("").to_string()
}

pub fn action_get(args: &ActionGetArgs) -> Result<ExitCode> {
    let client = Client::new(&args.api)?;
    let action = client.get(&["actions", &args.action], &[])?;
    if args.json {
        return Ok(print_json(&action));
    }
    println!("ref: {}", text(&action["ref"]));
    for (name, key) in [
        ("description", "description"),
        ("runner", "runner_type"),
        ("enabled", "enabled"),
        ("entry point", "entry_point"),
        ("timeout", "timeout"),
    ] {
        if !action[key].is_null() {
            println!("{name}: {}", text(&action[key]));
        }
    }
    let parameters = action["parameters"]
        .as_object()
        .cloned()
        .unwrap_or_default();
    if parameters.is_empty() {
        println!("parameters: none");
        return Ok(ExitCode::SUCCESS);
    }
    println!("parameters:");
    let rows: Vec<Vec<String>> = parameters
        .iter()
        .map(|(name, spec)| {
            let mut ty = text(&spec["type"]);
            if spec["secret"] == Value::Bool(true) {
                ty.push_str(" (secret)");
            }
            let required = if spec["required"] == Value::Bool(true) {
                "yes"
            } else {
                ""
            };
            let default = match &spec["default"] {
                Value::Null => String::new(),
                other => other.to_string(),
            };
            let mut description = first_line(&text(&spec["description"]));
            if let Some(choices) = spec["enum"].as_array() {
                let choices: Vec<String> = choices.iter().map(Value::to_string).collect();
                description = format!("{description} (one of {})", choices.join(", "));
            }
            vec![
                cell(name),
                cell(&ty),
                required.to_string(),
                cell(&clip(&default, 30)),
                cell(description.trim()),
            ]
        })
        .collect();
    print!(
        "{}",
        indented(&table(
            &["NAME", "TYPE", "REQUIRED", "DEFAULT", "DESCRIPTION"],
            &rows
        ))
    );
    Ok(ExitCode::SUCCESS)
}

pub fn execution(command: &ExecutionCommand) -> Result<ExitCode> {
    match command {
        ExecutionCommand::List(args) => execution_list(args),
        ExecutionCommand::Get(args) => execution_get(args),
        ExecutionCommand::Cancel(args) => execution_cancel(args),
        ExecutionCommand::Pause(args) => execution_set_status(args, "pausing"),
        ExecutionCommand::Resume(args) => execution_set_status(args, "resuming"),
        ExecutionCommand::Rerun(args) => execution_rerun(args),
        ExecutionCommand::Tail(args) => execution_tail(args),
    }
}

/// The rows of `execution list`.
pub fn execution_rows(executions: &[Value]) -> Vec<Vec<String>> {
    executions
        .iter()
        .map(|e| {
            vec![
                cell(&text(&e["id"])),
                cell(&reference(&e["action"])),
                cell(&text(&e["status"])),
                short_time(&e["start_timestamp"]),
                elapsed(e).unwrap_or_else(|| "-".to_string()),
            ]
        })
        .collect()
}

fn execution_list(args: &ExecutionListArgs) -> Result<ExitCode> {
    let client = Client::new(&args.api)?;
    let executions = list(
        client.get(
            &["executions"],
            &[
                ("action", args.action.clone()),
                ("status", args.status.clone()),
                ("parent", args.parent.clone()),
                ("trigger_instance", args.trigger_instance.clone()),
                ("limit", Some(args.limit.to_string())),
                ("offset", args.offset.map(|o| o.to_string())),
            ],
        )?,
        "executions",
    )?;
    if args.json {
        return Ok(print_json(&Value::Array(executions)));
    }
    if executions.is_empty() {
        println!("no executions");
        return Ok(ExitCode::SUCCESS);
    }
    print!(
        "{}",
        table(
            &["ID", "ACTION", "STATUS", "START (UTC)", "ELAPSED"],
            &execution_rows(&executions)
        )
    );
    if executions.len() as u64 >= u64::from(args.limit) {
        eprintln!("(the newest {}; -n for more)", args.limit);
    }
    Ok(ExitCode::SUCCESS)
}

fn execution_get(args: &ExecutionGetArgs) -> Result<ExitCode> {
    let client = Client::new(&args.api)?;
    let execution = client.get(&["executions", &args.id], &[])?;
    if args.json {
        return Ok(print_json(&execution));
    }
    print!("{}", format_execution(&execution, true));
    Ok(ExitCode::SUCCESS)
}

fn execution_cancel(args: &ExecutionIdArgs) -> Result<ExitCode> {
    let client = Client::new(&args.api)?;
    // As st2 says: an execution that already ended cannot be canceled.
    let before = client.get(&["executions", &args.id], &[])?;
    if is_terminal(&before) && before["status"] != "canceled" {
        if args.json {
            print_json(&before);
        }
        bail!(
            "execution {} cannot be canceled: it already ended as {}",
            args.id,
            text(&before["status"])
        );
    }
    let execution = client.call(Method::DELETE, &["executions", &args.id], &[], None)?;
    // It ended meanwhile: the server says so instead of answering the execution.
    if let (Some(why), None) = (
        execution["faultstring"].as_str(),
        execution["status"].as_str(),
    ) {
        bail!("execution {}: {why}", args.id);
    }
    if args.json {
        return Ok(print_json(&execution));
    }
    match execution["status"].as_str() {
        Some(status) => println!("execution {}: {status}", args.id),
        None => println!("execution {}: cancel requested", args.id),
    }
    Ok(ExitCode::SUCCESS)
}

/// Pause or resume, as st2 does: `PUT /executions/{id}` with the status asked for.
fn execution_set_status(args: &ExecutionIdArgs, status: &str) -> Result<ExitCode> {
    let client = Client::new(&args.api)?;
    let body = json!({ "status": status });
    let execution = client.call(Method::PUT, &["executions", &args.id], &[], Some(&body))?;
    if args.json {
        return Ok(print_json(&execution));
    }
    println!("execution {}: {}", args.id, text(&execution["status"]));
    Ok(ExitCode::SUCCESS)
}

fn execution_rerun(args: &ExecutionRerunArgs) -> Result<ExitCode> {
    parse_params(&args.params)?;
    deadline(&args.follow)?;
    let client = Client::new(&args.api)?;
    let params = if args.params.is_empty() {
        Map::new()
    } else {
        let old = client.get(&["executions", &args.id], &[])?;
        let action = old["action"]["ref"]
            .as_str()
            .unwrap_or_default()
            .to_string();
        typed_params(&args.params, &declared_params(&client, &action))?
    };
    let events = if args.follow.detach {
        None
    } else {
        open_stream(&client)
    };
    let body = if args.tasks.is_empty() {
        json!({ "parameters": params })
    } else {
        json!({ "tasks": args.tasks, "reset": args.reset })
    };
    let created = client.post(&["executions", &args.id, "re_run"], &body)?;
    report_requested(&client, created, &args.follow, events)
}

fn execution_tail(args: &ExecutionTailArgs) -> Result<ExitCode> {
    let client = Client::new(&args.api)?;
    let mut printer = LogPrinter::default();
    let first = client.get(&["executions", &args.id], &[])?;
    let execution = if is_terminal(&first) {
        for line in printer.unseen_in_log(&first["log"]) {
            println!("{line}");
        }
        first
    } else {
        let events = open_stream(&client);
        let mut sink = |line: &str| println!("{line}");
        match follow(&client, &args.id, events, None, &mut printer, &mut sink)? {
            Followed::Done(e) | Followed::StillRunning(e) => e,
        }
    };
    match elapsed(&execution) {
        Some(t) => eprintln!("execution {} {} ({t})", args.id, text(&execution["status"])),
        None => eprintln!("execution {} {}", args.id, text(&execution["status"])),
    }
    Ok(exit_for(&execution))
}

pub fn rule_list(args: &RuleListArgs) -> Result<ExitCode> {
    let client = Client::new(&args.api)?;
    let mut rules = list(client.get(&["rules"], &[])?, "rules")?;
    if let Some(pack) = &args.pack {
        rules.retain(|r| r["pack"].as_str() == Some(pack));
    }
    if args.json {
        return Ok(print_json(&Value::Array(rules)));
    }
    if rules.is_empty() {
        println!("no rules");
        return Ok(ExitCode::SUCCESS);
    }
    let rows: Vec<Vec<String>> = rules
        .iter()
        .map(|r| {
            let mut trigger = text(&r["trigger"]["type"]);
            if r["type"]["ref"].as_str() == Some("backstop") {
                trigger.push_str(" (backstop)");
            }
            vec![
                cell(&text(&r["ref"])),
                if r["enabled"] == Value::Bool(false) {
                    "no".to_string()
                } else {
                    "yes".to_string()
                },
                cell(&trigger),
                cell(&reference(&r["action"])),
            ]
        })
        .collect();
    print!("{}", table(&["REF", "ENABLED", "TRIGGER", "ACTION"], &rows));
    Ok(ExitCode::SUCCESS)
}

pub fn rule_get(args: &RuleGetArgs) -> Result<ExitCode> {
    let client = Client::new(&args.api)?;
    let rule = client.get(&["rules", &args.rule], &[])?;
    if args.json {
        return Ok(print_json(&rule));
    }
    // Rules are written in YAML; show them that way.
    match serde_yaml::to_string(&rule) {
        Ok(yaml) => print!("{yaml}"),
        Err(_) => println!("{}", pretty(&rule)),
    }
    Ok(ExitCode::SUCCESS)
}

/// `rule test --rule-ref R --trigger-instance-id I`: st2-rule-tester's post-mortem mode, on
/// the server's rule and stored trigger instance.
pub fn rule_test(
    api: &ApiOptions,
    rule: &str,
    trigger_instance_id: &str,
    json: bool,
) -> Result<ExitCode> {
    let client = Client::new(api)?;
    let answer = client.post(
        &["rules", rule, "test"],
        &json!({ "trigger_instance_id": trigger_instance_id }),
    )?;
    let (out, code) = format_rule_test(&answer, rule)?;
    if json {
        println!("{}", pretty(&answer));
    } else {
        print!("{out}");
    }
    Ok(code)
}

pub fn trigger(command: &TriggerCommand) -> Result<ExitCode> {
    match command {
        TriggerCommand::List(args) => {
            let client = Client::new(&args.api)?;
            let types = list(client.get(&["triggertypes"], &[])?, "trigger types")?;
            Ok(print_list(
                types,
                args.json,
                "no trigger types",
                &["REF", "DESCRIPTION"],
                |t| {
                    vec![
                        cell(&text(&t["ref"])),
                        cell(&clip(&first_line(&text(&t["description"])), 70)),
                    ]
                },
            ))
        }
        TriggerCommand::Fire(args) => {
            let payload = match &args.payload {
                Some(raw) => serde_json::from_str::<Value>(raw)
                    .map_err(|e| anyhow!("--payload is not JSON: {e}"))?,
                None => Value::Object(parse_params(&args.fields)?),
            };
            let client = Client::new(&args.api)?;
            let answer = client.post(
                &["webhooks", "st2"],
                &json!({"trigger": args.trigger, "payload": payload}),
            )?;
            if args.json {
                return Ok(print_json(&answer));
            }
            let id = text(&answer["id"]);
            if id.is_empty() {
                bail!("the server accepted the trigger but gave no trigger instance id: {answer}");
            }
            println!("{id}");
            Ok(ExitCode::SUCCESS)
        }
        TriggerCommand::Instances(args) => {
            let client = Client::new(&args.api)?;
            let mut instances = list(
                client.get(
                    &["triggerinstances"],
                    &[
                        ("trigger", args.trigger.clone()),
                        ("limit", Some(args.limit.to_string())),
                    ],
                )?,
                "trigger instances",
            )?;
            instances.truncate(args.limit as usize);
            if args.json {
                return Ok(print_json(&Value::Array(instances)));
            }
            if instances.is_empty() {
                println!("no trigger instances");
                return Ok(ExitCode::SUCCESS);
            }
            let rows: Vec<Vec<String>> = instances
                .iter()
                .map(|t| {
                    vec![
                        cell(&text(&t["id"])),
                        cell(&text(&t["trigger"])),
                        cell(&text(&t["status"])),
                        short_time(&t["occurrence_time"]),
                        cell(&clip(&t["payload"].to_string(), 60)),
                    ]
                })
                .collect();
            print!(
                "{}",
                table(
                    &["ID", "TRIGGER", "STATUS", "OCCURRED (UTC)", "PAYLOAD"],
                    &rows
                )
            );
            Ok(ExitCode::SUCCESS)
        }
    }
}

pub fn key(command: &KeyCommand) -> Result<ExitCode> {
    let name = match command {
        KeyCommand::Get(args) => Some(&args.name),
        KeyCommand::Set(args) => Some(&args.name),
        KeyCommand::Delete(args) => Some(&args.name),
        _ => None,
    };
    if name.is_some_and(|n| n.trim().is_empty()) {
        bail!("a key needs a name");
    }
    if let Some(n) = name.filter(|n| *n == "." || *n == "..") {
        bail!("'{n}' cannot name a key: a URL path could not reach it");
    }
    match command {
        KeyCommand::Get(args) => {
            let client = Client::new(&args.api)?;
            let decrypt = args.decrypt.then(|| "true".to_string());
            let pair = match client.get(&["keys", &args.name], &[("decrypt", decrypt)]) {
                Ok(pair) => pair,
                Err(e) if e.status() == Some(404) => {
                    eprintln!("no key {}", args.name);
                    return Ok(ExitCode::FAILURE);
                }
                Err(e) => return Err(e.into()),
            };
            if args.json {
                return Ok(print_json(&pair));
            }
            println!("name: {}", text(&pair["name"]));
            println!("value: {}", text(&pair["value"]));
            if pair["secret"] == Value::Bool(true) {
                let state = if pair["encrypted"] == Value::Bool(true) {
                    "secret (encrypted; --decrypt to see it)"
                } else {
                    "secret"
                };
                println!("{state}");
            }
            if !pair["expire_timestamp"].is_null() {
                println!("expires: {} UTC", short_time(&pair["expire_timestamp"]));
            }
            Ok(ExitCode::SUCCESS)
        }
        KeyCommand::Set(args) => {
            let client = Client::new(&args.api)?;
            // `secret` only when asked: a secret given a new value stays secret.
            let mut body = json!({"value": args.value});
            if let (true, Value::Object(o)) = (args.secret, &mut body) {
                o.insert("secret".into(), json!(true));
            }
            if let (Some(ttl), Value::Object(o)) = (args.ttl, &mut body) {
                o.insert("ttl".into(), json!(ttl));
            }
            let pair = client.call(Method::PUT, &["keys", &args.name], &[], Some(&body))?;
            if args.json {
                return Ok(print_json(&pair));
            }
            let mut note = String::new();
            if args.secret {
                note.push_str(", secret");
            }
            if let Some(ttl) = args.ttl {
                note.push_str(&format!(", expires in {ttl} s"));
            }
            println!("key {} set{note}", args.name);
            Ok(ExitCode::SUCCESS)
        }
        KeyCommand::Delete(args) => {
            let client = Client::new(&args.api)?;
            match client.call(Method::DELETE, &["keys", &args.name], &[], None) {
                Ok(_) => {
                    println!("key {} deleted", args.name);
                    Ok(ExitCode::SUCCESS)
                }
                Err(e) if e.status() == Some(404) => {
                    eprintln!("no key {}", args.name);
                    Ok(ExitCode::FAILURE)
                }
                Err(e) => Err(e.into()),
            }
        }
        KeyCommand::List(args) => {
            let client = Client::new(&args.api)?;
            let pairs = list(
                client.get(
                    &["keys"],
                    &[
                        ("prefix", args.prefix.clone()),
                        ("decrypt", args.decrypt.then(|| "true".to_string())),
                    ],
                )?,
                "keys",
            )?;
            if args.json {
                return Ok(print_json(&Value::Array(pairs)));
            }
            if pairs.is_empty() {
                println!("no keys");
                return Ok(ExitCode::SUCCESS);
            }
            let rows: Vec<Vec<String>> = pairs
                .iter()
                .map(|p| {
                    vec![
                        cell(&text(&p["name"])),
                        // A long value is shown whole by `key get`.
                        cell(&clip(&text(&p["value"]), 80)),
                        if p["secret"] == Value::Bool(true) {
                            "yes".to_string()
                        } else {
                            String::new()
                        },
                        match &p["expire_timestamp"] {
                            Value::Null => String::new(),
                            t => short_time(t),
                        },
                    ]
                })
                .collect();
            print!(
                "{}",
                table(&["NAME", "VALUE", "SECRET", "EXPIRES (UTC)"], &rows)
            );
            Ok(ExitCode::SUCCESS)
        }
    }
}

fn count(v: &Value) -> String {
    match v {
        Value::Array(items) => items.len().to_string(),
        Value::Null => "0".to_string(),
        other => text(other),
    }
}

/// One pack as `pack list` and `pack reload` show it, its problems indented below.
fn format_pack(pack: &Value) -> String {
    let mut out = if pack["loaded"] == false {
        format!(
            "pack {} ({}): not loaded",
            text(&pack["ref"]),
            text(&pack["path"])
        )
    } else {
        let mut out = format!(
            "pack {} {}: {} actions, {} rules",
            text(&pack["ref"]),
            text(&pack["version"]),
            count(&pack["actions"]),
            count(&pack["rules"])
        );
        let description = first_line(&text(&pack["description"]));
        if !description.is_empty() {
            out.push_str(&format!(" ({})", clip(&description, 60)));
        }
        out.push_str(&install_note(&pack["install"]));
        out
    };
    out.push('\n');
    for problem in pack["problems"].as_array().into_iter().flatten() {
        out.push_str(&format!("  {}\n", text(problem)));
    }
    out
}

/// ` from SOURCE @ REF (commit abc1234)` for a pack `squall pack install` put there.
pub fn install_note(record: &Value) -> String {
    if !record.is_object() {
        return String::new();
    }
    let mut out = format!(", from {}", text(&record["source"]));
    if let Some(r) = record["ref"].as_str() {
        out.push_str(&format!(" @ {r}"));
    }
    if let Some(c) = record["commit"].as_str() {
        out.push_str(&format!(" (commit {})", &c[..c.len().min(12)]));
    }
    out
}

fn pack_problems(pack: &Value) -> usize {
    pack["problems"].as_array().map_or(0, Vec::len)
}

pub fn pack_list(args: &PackListArgs) -> Result<ExitCode> {
    let client = Client::new(&args.api)?;
    let packs = list(client.get(&["packs"], &[])?, "packs")?;
    let problems: usize = packs.iter().map(pack_problems).sum();
    let code = if problems == 0 {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    };
    if args.json {
        print_json(&Value::Array(packs));
        return Ok(code);
    }
    if packs.is_empty() {
        println!("no packs");
    }
    for pack in &packs {
        print!("{}", format_pack(pack));
    }
    if problems > 0 {
        eprintln!("{problems} problems found");
    }
    Ok(code)
}

pub fn sensor(command: &SensorCommand) -> Result<ExitCode> {
    let SensorCommand::List(args) = command;
    let client = Client::new(&args.api)?;
    let sensors = list(client.get(&["sensors"], &[])?, "sensors")?;
    let headers = [
        "SENSOR",
        "KIND",
        "STATE",
        "EVENTS",
        "RECONNECTS",
        "ERRORS",
        "LAST EVENT",
        "LAST ERROR",
    ];
    Ok(print_list(
        sensors,
        args.json,
        "no sensors",
        &headers,
        |s| {
            let state = if s["running"].as_bool() == Some(true) {
                if s["connected"].as_bool() == Some(true) {
                    "connected"
                } else {
                    "connecting"
                }
                .to_string()
            } else {
                format!("not running: {}", text(&s["not_started"]))
            };
            // A sensor host's sensor is named with its host.
            let name = match s["host"].as_str() {
                Some(host) => format!("{host}/{}", text(&s["ref"])),
                None => text(&s["ref"]),
            };
            vec![
                name,
                text(&s["kind"]),
                state,
                count(&s["events"]),
                count(&s["reconnects"]),
                count(&s["errors"]),
                text(&s["last_event"]),
                text(&s["last_error"]),
            ]
        },
    ))
}

/// Prints a list the server returned: its JSON with `--json`, a note when it is empty, or a
/// table with one row per item.
fn print_list(
    items: Vec<Value>,
    json: bool,
    empty: &str,
    headers: &[&str],
    row: impl Fn(&Value) -> Vec<String>,
) -> ExitCode {
    if json {
        return print_json(&Value::Array(items));
    }
    if items.is_empty() {
        println!("{empty}");
        return ExitCode::SUCCESS;
    }
    let rows: Vec<Vec<String>> = items.iter().map(row).collect();
    print!("{}", table(headers, &rows));
    ExitCode::SUCCESS
}

pub fn pack_reload(args: &PackReloadArgs) -> Result<ExitCode> {
    let client = Client::new(&args.api)?;
    let answer = client.call(Method::POST, &["packs", "reload"], &[], None)?;
    let packs = answer["packs"].as_array().cloned().unwrap_or_default();
    // Problems not tied to one pack (a pack folder that does not load at all) come on their own.
    let shown: Vec<String> = packs
        .iter()
        .flat_map(|p| p["problems"].as_array().cloned().unwrap_or_default())
        .map(|p| text(&p))
        .collect();
    let others: Vec<String> = answer["problems"]
        .as_array()
        .into_iter()
        .flatten()
        .map(text)
        .filter(|p| !shown.contains(p))
        .collect();
    let problems = shown.len() + others.len();
    let code = if problems == 0 {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    };
    if args.json {
        print_json(&answer);
        return Ok(code);
    }
    for pack in &packs {
        print!("{}", format_pack(pack));
    }
    for problem in &others {
        println!("{problem}");
    }
    let actions: u64 = packs
        .iter()
        .map(|p| count(&p["actions"]).parse::<u64>().unwrap_or(0))
        .sum();
    let rules: u64 = packs
        .iter()
        .map(|p| count(&p["rules"]).parse::<u64>().unwrap_or(0))
        .sum();
    let loaded = packs.iter().filter(|p| p["loaded"] != false).count();
    if answer["applied"] == false {
        eprintln!(
            "{problems} problems found; not reloaded (--strict): the packs loaded before stay"
        );
    } else if problems == 0 {
        println!("reloaded {loaded} packs: {actions} actions, {rules} rules, no problems");
    } else {
        println!("reloaded {loaded} packs: {actions} actions, {rules} rules");
        eprintln!("{problems} problems found");
    }
    Ok(code)
}

pub fn apikey(command: &ApikeyCommand) -> Result<ExitCode> {
    match command {
        ApikeyCommand::Create(args) => {
            let client = Client::new(&args.api)?;
            let body = match &args.user {
                Some(user) => json!({ "user": user }),
                None => json!({}),
            };
            let created = client.post(&["apikeys"], &body)?;
            if args.json {
                return Ok(print_json(&created));
            }
            let key = text(&created["key"]);
            if key.is_empty() {
                bail!("the server created an API key but did not send it: {created}");
            }
            println!("id: {}", text(&created["id"]));
            println!("user: {}", text(&created["user"]));
            println!("key: {key}");
            eprintln!("note: the key is shown only now (squall keeps only its hash); store it somewhere safe");
            Ok(ExitCode::SUCCESS)
        }
        ApikeyCommand::List(args) => {
            let client = Client::new(&args.api)?;
            let keys = list(client.get(&["apikeys"], &[])?, "API keys")?;
            let headers = ["ID", "USER", "CREATED (UTC)", "ENABLED"];
            Ok(print_list(keys, args.json, "no API keys", &headers, |k| {
                let enabled = if k["enabled"] == Value::Bool(false) {
                    "no"
                } else {
                    "yes"
                };
                vec![
                    cell(&text(&k["id"])),
                    cell(&text(&k["user"])),
                    short_time(&k["created_at"]),
                    enabled.to_string(),
                ]
            }))
        }
        ApikeyCommand::Delete(args) => {
            let client = Client::new(&args.api)?;
            client.call(Method::DELETE, &["apikeys", &args.id], &[], None)?;
            println!("API key {} deleted", args.id);
            Ok(ExitCode::SUCCESS)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;
    use std::net::{TcpListener, TcpStream};
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::sync::Arc;

    fn strings(xs: &[&str]) -> Vec<String> {
        xs.iter().map(|s| s.to_string()).collect()
    }

    #[test]
    fn params_are_json_when_they_parse_and_text_otherwise() {
        let p = parse_params(&strings(&[
            "n=3",
            "xs=[1,2]",
            "flag=true",
            "name=ops",
            "quoted=\"7\"",
            "version=1.10",
            "big=1e3",
            "ratio=0.5",
            "empty=",
            "eq=a=b",
            "obj={\"a\": null}",
        ]))
        .expect("valid");
        assert_eq!(
            Value::Object(p),
            json!({
                "n": 3, "xs": [1, 2], "flag": true, "name": "ops", "quoted": "7",
                "version": "1.10", "big": "1e3", "ratio": 0.5, "empty": "", "eq": "a=b",
                "obj": {"a": null}
            })
        );
    }

    #[test]
    fn bad_params_are_all_named() {
        let e = parse_params(&strings(&["novalue", "=x", "a=1", "a=2"])).expect_err("invalid");
        let msg = e.to_string();
        assert!(msg.contains("'novalue' is not name=value"), "{msg}");
        assert!(msg.contains("'=x' has no name"), "{msg}");
        assert!(msg.contains("parameter 'a' is given twice"), "{msg}");
    }

    /// Hands out at most three bytes per read, so lines, CRLFs and a UTF-8 character are split.
    struct Trickle(Vec<u8>, usize);

    impl Read for Trickle {
        fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
            let n = buf.len().min(3).min(self.0.len() - self.1);
            buf[..n].copy_from_slice(&self.0[self.1..self.1 + n]);
            self.1 += n;
            Ok(n)
        }
    }

    #[test]
    fn sse_events_are_read_across_split_reads() {
        let stream = concat!(
            ": keep-alive\n\n",
            "event: st2.execution__create\n",
            "data: {\"id\":\"E1\",\"status\":\"requested\"}\n\n",
            "event: st2.execution.output__create\r\n",
            "data: {\"execution_id\":\"E1\",\r\n",
            "data:\"message\":\"héllo\"}\r\n",
            "id: 7\r\n\r\n",
            "data: plain\n\n",
            "event: empty\ndata\n\n",
            "event: no-data\n\n",
            "event: cut-off\ndata: lost",
        );
        let mut reader = SseReader::new(BufReader::with_capacity(4, Trickle(stream.into(), 0)));
        let mut events = Vec::new();
        while let Some(e) = reader.next_event().expect("readable") {
            events.push((e.event, e.data));
        }
        let expected = vec![
            (
                "st2.execution__create".to_string(),
                "{\"id\":\"E1\",\"status\":\"requested\"}".to_string(),
            ),
            (
                "st2.execution.output__create".to_string(),
                "{\"execution_id\":\"E1\",\n\"message\":\"héllo\"}".to_string(),
            ),
            ("message".to_string(), "plain".to_string()),
            ("empty".to_string(), String::new()),
        ];
        assert_eq!(events, expected);
        let output = StreamEvent::from_sse(&SseEvent {
            event: expected[1].0.clone(),
            data: expected[1].1.clone(),
        });
        match output {
            Some(StreamEvent::Output(v)) => assert_eq!(v["message"], "héllo"),
            other => panic!("not an output event: {other:?}"),
        }
    }

    #[test]
    fn tables_pad_every_column_but_the_last() {
        let rows = vec![
            strings(&["01J0", "core.echo", "succeeded"]),
            strings(&["01J1", "examples.disk_report", "failed"]),
            strings(&["01J2", "é", ""]),
        ];
        assert_eq!(
            table(&["ID", "ACTION", "STATUS"], &rows),
            concat!(
                "ID    ACTION                STATUS\n",
                "01J0  core.echo             succeeded\n",
                "01J1  examples.disk_report  failed\n",
                "01J2  é\n",
            )
        );
    }

    #[test]
    fn execution_rows_show_ref_times_and_elapsed() {
        let rows = execution_rows(&[json!({
            "id": "01J", "action": {"ref": "core.echo"}, "status": "succeeded",
            "start_timestamp": "2024-05-01T12:00:03.123456Z", "elapsed_seconds": 125.2
        })]);
        assert_eq!(
            rows,
            vec![strings(&[
                "01J",
                "core.echo",
                "succeeded",
                "2024-05-01 12:00:03",
                "2m05s"
            ])]
        );
        assert_eq!(duration_text(0.04), "40ms");
        assert_eq!(duration_text(3.44), "3.4s");
        assert_eq!(duration_text(7300.0), "2h01m");
    }

    #[test]
    fn error_bodies_show_the_error_and_one_line_per_parameter() {
        let body = r#"{"error": "invalid parameters for examples.greet", "detail": [
            {"parameter": "times", "message": "expected an integer, got \"x\""},
            {"parameter": "colour", "message": "no such parameter"}]}"#;
        let failure = api_failure(400, "Bad Request", body, true);
        assert_eq!(
            failure.to_string(),
            concat!(
                "invalid parameters for examples.greet\n",
                "  parameter 'times': expected an integer, got \"x\"\n",
                "  parameter 'colour': no such parameter"
            )
        );
        let plain = api_failure(502, "Bad Gateway", "<html>proxy</html>", true);
        assert_eq!(
            plain.to_string(),
            "HTTP 502 Bad Gateway\n  <html>proxy</html>"
        );
        let denied = api_failure(401, "Unauthorized", r#"{"error": "no API key"}"#, false);
        assert!(
            denied.to_string().starts_with("no API key\nhint: "),
            "{denied}"
        );
        assert_eq!(detail_lines(&json!("one\ntwo")), strings(&["one", "two"]));
    }

    #[test]
    fn remote_rule_test_prints_like_the_local_one() {
        let (out, code) = format_rule_test(
            &json!({"matches": true, "rule": "examples.disk_alert", "action": "ops.report",
                    "parameters": {"host": "db-1"}, "failure": null, "reason": null}),
            "examples.disk_alert",
        )
        .expect("an answer");
        assert_eq!(code, ExitCode::SUCCESS);
        assert_eq!(
            out,
            "=== RULE MATCHES ===\nrule: examples.disk_alert\naction: ops.report\nparameters: {\n  \"host\": \"db-1\"\n}\n"
        );
        let (out, code) = format_rule_test(
            &json!({"matches": false, "rule": "examples.disk_alert", "action": null,
                    "parameters": null, "reason": "criterion failed",
                    "failure": {"key": "trigger.body.status", "type": "equals",
                                "pattern": "firing", "payload_value": "resolved", "error": null}}),
            "examples.disk_alert",
        )
        .expect("an answer");
        assert_eq!(code, ExitCode::FAILURE);
        assert_eq!(
            out,
            concat!(
                "=== RULE DOES NOT MATCH ===\nrule: examples.disk_alert\ncriterion failed:\n",
                "  key: trigger.body.status\n  pattern: \"firing\"\n  type: equals\n",
                "  payload: \"resolved\"\n"
            )
        );
        // It matches, but the engine would refuse the action: said, exit code 2.
        let (out, code) = format_rule_test(
            &json!({"matches": true, "rule": "t.hook", "action": "core.echo",
                    "parameters": {"message": {"k": 1}}, "failure": null,
                    "reason": "the action would be refused: parameter 'message': expected string, got object"}),
            "t.hook",
        )
        .expect("an answer");
        assert_eq!(code, ExitCode::from(2));
        assert!(out.starts_with("=== RULE MATCHES ===\n"), "{out}");
        assert!(
            out.ends_with(
                "the action would be refused: parameter 'message': expected string, got object\n"
            ),
            "{out}"
        );
        assert!(format_rule_test(&json!({"error": "?"}), "r").is_err());
    }

    #[test]
    fn log_lines_print_once_whichever_way_they_come() {
        let a =
            json!({"timestamp": "2024-05-01T12:00:00.000001Z", "level": "info", "message": "a"});
        let a_again = json!({"timestamp": "2024-05-01T12:00:00.000001+00:00", "level": "info", "message": "a"});
        let b =
            json!({"timestamp": "2024-05-01T12:00:00.000002Z", "level": "info", "message": "b"});
        let mut printer = LogPrinter::default();
        assert_eq!(printer.unseen_event(&a), Some("[info] a".to_string()));
        assert_eq!(
            printer.unseen_in_log(&json!([a_again])),
            Vec::<String>::new()
        );
        assert_eq!(
            printer.unseen_in_log(&json!([a, b, b])),
            strings(&["[info] b", "[info] b"])
        );
        assert_eq!(printer.unseen_event(&b), None);
        assert_eq!(printer.unseen_event(&b), None);
        assert_eq!(printer.unseen_event(&b), Some("[info] b".to_string()));
    }

    #[test]
    fn executions_show_like_st2() {
        let e = json!({
            "id": "01J", "action": {"ref": "examples.greet"}, "parameters": {"name": "ops"},
            "status": "failed", "elapsed_seconds": 0.25, "result": {"error": "boom", "line": 2},
            "log": [{"timestamp": "2024-05-01T12:00:00Z", "level": "warn", "message": "hm"}],
            "start_timestamp": "2024-05-01T12:00:00Z", "end_timestamp": "2024-05-01T12:00:00.25Z",
            "rule": {"ref": "examples.disk_alert"}, "trigger_instance": {"id": "01T"}, "attempt": 1
        });
        assert_eq!(
            format_execution(&e, false),
            concat!(
                "id: 01J\naction: examples.greet\nparameters: {\"name\":\"ops\"}\n",
                "status: failed (250ms)\nresult:\n  {\n    \"error\": \"boom\",\n    \"line\": 2\n  }\n"
            )
        );
        let full = format_execution(&e, true);
        assert!(
            full.contains("rule: examples.disk_alert\ntrigger instance: 01T\n"),
            "{full}"
        );
        assert!(full.ends_with("log:\n  [warn] hm\n"), "{full}");
        assert_eq!(exit_for(&e), ExitCode::FAILURE);
    }

    /// A request as the fake server saw it.
    #[derive(Debug)]
    struct Seen {
        method: String,
        path: String,
        headers: Vec<(String, String)>,
        body: String,
    }

    impl Seen {
        fn header(&self, name: &str) -> Option<&str> {
            self.headers
                .iter()
                .find(|(k, _)| k.eq_ignore_ascii_case(name))
                .map(|(_, v)| v.as_str())
        }
    }

    type Answer = (u16, &'static str, String);

    /// An HTTP server on 127.0.0.1 that answers each request (one per connection) with what
    /// `answer` says and reports what it was asked.
    fn fake_server(
        answer: impl Fn(&Seen) -> Answer + Send + 'static,
    ) -> (ApiOptions, Receiver<Seen>) {
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind 127.0.0.1");
        let url = format!("http://{}", listener.local_addr().expect("address"));
        let (tx, rx) = mpsc::channel();
        std::thread::spawn(move || {
            for conn in listener.incoming() {
                let Ok(mut conn) = conn else { continue };
                let Some(seen) = read_request(&conn) else {
                    continue;
                };
                let (status, content_type, body) = answer(&seen);
                let _ = write!(
                    conn,
                    "HTTP/1.1 {status} Canned\r\nContent-Type: {content_type}\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
                    body.len()
                );
                let _ = conn.flush();
                if tx.send(seen).is_err() {
                    return;
                }
            }
        });
        (
            ApiOptions {
                url,
                key: Some("k3y".to_string()),
            },
            rx,
        )
    }

    fn read_request(conn: &TcpStream) -> Option<Seen> {
        conn.set_read_timeout(Some(Duration::from_secs(5))).ok()?;
        let mut reader = BufReader::new(conn);
        let mut line = String::new();
        reader.read_line(&mut line).ok()?;
        let mut parts = line.split_whitespace();
        let (method, path) = (parts.next()?.to_string(), parts.next()?.to_string());
        let mut headers = Vec::new();
        loop {
            let mut h = String::new();
            reader.read_line(&mut h).ok()?;
            let h = h.trim_end();
            if h.is_empty() {
                break;
            }
            let (k, v) = h.split_once(':')?;
            headers.push((k.trim().to_string(), v.trim().to_string()));
        }
        let length: usize = headers
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case("content-length"))
            .and_then(|(_, v)| v.parse().ok())
            .unwrap_or(0);
        let mut body = vec![0; length];
        reader.read_exact(&mut body).ok()?;
        Some(Seen {
            method,
            path,
            headers,
            body: String::from_utf8_lossy(&body).into_owned(),
        })
    }

    fn run_args(api: ApiOptions, params: &[&str], detach: bool) -> ActionRunArgs {
        ActionRunArgs {
            action: "examples.greet".to_string(),
            params: strings(params),
            follow: FollowOptions {
                detach,
                json: false,
                timeout: Some(10.0),
            },
            api,
        }
    }

    #[test]
    fn action_run_async_posts_the_execution_request() {
        let (api, seen) = fake_server(|_| {
            (
                201,
                "application/json",
                json!({"id": "01JEXEC", "action": {"ref": "examples.greet"}, "status": "requested"})
                    .to_string(),
            )
        });
        let code = action_run(&run_args(
            api,
            &["name=ops", "times=2", "tags=[\"db\"]"],
            true,
        ))
        .expect("accepted");
        assert_eq!(code, ExitCode::SUCCESS);
        // The action's declared parameters are asked for first (here: none known).
        let asked = seen
            .recv_timeout(Duration::from_secs(5))
            .expect("a request");
        assert_eq!(asked.method, "GET");
        assert_eq!(asked.path, "/api/v1/actions/examples.greet");
        let request = seen
            .recv_timeout(Duration::from_secs(5))
            .expect("a request");
        assert_eq!(request.method, "POST");
        assert_eq!(request.path, "/api/v1/executions");
        assert_eq!(request.header("st2-api-key"), Some("k3y"));
        let body: Value = serde_json::from_str(&request.body).expect("a JSON body");
        assert_eq!(
            body,
            json!({"action": "examples.greet", "parameters": {"name": "ops", "times": 2, "tags": ["db"]}})
        );
    }

    #[test]
    fn a_400_on_parameters_is_printed_one_parameter_a_line() {
        let (api, _seen) = fake_server(|_| {
            (
                400,
                "application/json",
                json!({"error": "invalid parameters for examples.greet",
                       "detail": [{"parameter": "times", "message": "expected an integer"}]})
                .to_string(),
            )
        });
        let e = action_run(&run_args(api, &["times=x"], true)).expect_err("refused");
        // As `main` prints it.
        assert_eq!(
            format!("error: {e:#}"),
            "error: invalid parameters for examples.greet\n  parameter 'times': expected an integer"
        );
    }

    #[test]
    fn an_absent_server_is_named() {
        let port = {
            let l = TcpListener::bind("127.0.0.1:0").expect("bind 127.0.0.1");
            l.local_addr().expect("address").port()
        };
        let api = ApiOptions {
            url: format!("http://127.0.0.1:{port}/"),
            key: None,
        };
        let e = action_run(&run_args(api, &[], true)).expect_err("nobody there");
        let msg = format!("{e:#}");
        assert!(
            msg.starts_with(&format!(
                "cannot reach squall at http://127.0.0.1:{port}: is `squall run` running?"
            )),
            "{msg}"
        );
    }

    #[test]
    fn following_merges_stream_and_polls_and_ends_with_the_status() {
        let polls = Arc::new(AtomicUsize::new(0));
        let counter = polls.clone();
        let line = |ts: &str, m: &str| json!({"timestamp": ts, "level": "info", "message": m});
        let (a, b) = (
            line("2024-05-01T12:00:00.000001Z", "a"),
            line("2024-05-01T12:00:00.000002Z", "b"),
        );
        let (a2, b2) = (a.clone(), b.clone());
        let (api, _seen) = fake_server(move |req| {
            if req.path == "/api/v1/stream" {
                let output = |l: &Value| {
                    let mut o = l.clone();
                    o["execution_id"] = json!("E1");
                    format!("event: st2.execution.output__create\ndata: {o}\n\n")
                };
                let body = format!(
                    "{}{}{}event: st2.execution__update\ndata: {}\n\n",
                    output(&json!({"timestamp": "x", "level": "info", "message": "other"}))
                        .replace("E1", "E0"),
                    output(&a2),
                    output(&b2),
                    json!({"id": "E1", "status": "succeeded"})
                );
                return (200, "text/event-stream", body);
            }
            let n = counter.fetch_add(1, Ordering::SeqCst);
            let execution = if n < 2 {
                json!({"id": "E1", "status": "running", "log": [a2]})
            } else {
                json!({"id": "E1", "status": "succeeded", "log": [a2, b2], "result": 1})
            };
            (200, "application/json", execution.to_string())
        });
        let client = Client::new(&api).expect("client");
        let events = open_stream(&client);
        assert!(events.is_some(), "the stream opens");
        let mut lines = Vec::new();
        let mut sink = |l: &str| lines.push(l.to_string());
        let outcome = follow(
            &client,
            "E1",
            events,
            Some(Instant::now() + Duration::from_secs(20)),
            &mut LogPrinter::default(),
            &mut sink,
        )
        .expect("followed");
        let Followed::Done(execution) = outcome else {
            panic!("not finished");
        };
        assert_eq!(execution["status"], "succeeded");
        assert_eq!(lines, strings(&["[info] a", "[info] b"]));
        assert!(polls.load(Ordering::SeqCst) >= 3);
    }
}

#[derive(Args, Debug)]
pub struct WorkerListArgs {
    #[arg(long)]
    pub json: bool,
    #[command(flatten)]
    pub api: ApiOptions,
}

/// `squall worker list`: the server's remote workers and sensor hosts, from their heartbeats.
pub fn worker_list(args: &WorkerListArgs) -> Result<ExitCode> {
    let client = Client::new(&args.api)?;
    let workers = list(client.get(&["workers"], &[])?, "workers")?;
    let headers = [
        "NAME",
        "ROLE",
        "HOST",
        "STATE",
        "QUEUES",
        "CONCURRENCY",
        "RUNNING",
        "LAST HEARTBEAT",
    ];
    Ok(print_list(
        workers,
        args.json,
        "no workers have been seen (is the server started with --amqp, and a `squall worker` running?)",
        &headers,
        |w| {
            let queues: Vec<String> = w["queues"]
                .as_array()
                .into_iter()
                .flatten()
                .map(text)
                .collect();
            vec![
                text(&w["name"]),
                text(&w["role"]),
                text(&w["host"]),
                text(&w["state"]),
                queues.join(","),
                text(&w["concurrency"]),
                count(&w["running"]),
                format!(
                    "{} ago",
                    duration_text(w["last_heartbeat_seconds"].as_f64().unwrap_or(0.0))
                ),
            ]
        },
    ))
}
