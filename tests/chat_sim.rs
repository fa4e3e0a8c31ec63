//! A Slack and Mattermost stand-in for end-to-end tests of squall's ChatOps. Neither service can
//! run here, so this simulator speaks their documented wire formats on 127.0.0.1: Slack's Web API
//! `chat.postMessage` (and `auth.test`), Slack `response_url`s, Mattermost incoming webhooks and
//! Mattermost slash-command `response_url`s. It records every request so that tests can assert
//! what a chat user would have seen. It also builds what those services send to squall: signed
//! Slack slash commands and Events API callbacks, Mattermost outgoing webhooks and slash commands.
//!
//! It must never listen beyond 127.0.0.1, sleep to synchronise (waits are on a condvar under a
//! deadline), or outlive its `ChatSim`: dropping it closes the listener and every connection.

#![allow(dead_code)]

use std::collections::HashMap;
use std::io::{BufRead, BufReader, Read, Write};
use std::net::{Shutdown, TcpListener, TcpStream};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Condvar, Mutex, MutexGuard, PoisonError};
use std::thread::JoinHandle;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use hmac::{Hmac, Mac};
use serde_json::{json, Map, Value};
use sha2::{Digest, Sha256};

// ---------------------------------------------------------------------------------------------
// Identities the simulated workspaces use. The Slack ones are those of Slack's published
// request-signing example, so that a slash command built here can reproduce it byte for byte.

/// The (deprecated) verification token Slack puts in slash commands and event callbacks.
pub const SLACK_VERIFICATION_TOKEN: &str = "xyzz0WbapA4vBCDEFasx0q6G";
pub const SLACK_TEAM_ID: &str = "T1DC2JH3J";
pub const SLACK_TEAM_DOMAIN: &str = "testteamnow";
pub const SLACK_TRIGGER_ID: &str = "398738663015.47445629121.803a0bc887a14d10d2c447fce8b6703c";
pub const SLACK_APP_ID: &str = "A0SQUALL01";
/// The bot's user id: an `app_mention` event's text starts with `<@UBOT>`.
pub const SLACK_BOT_USER_ID: &str = "UBOT";
pub const SLACK_BOT_ID: &str = "B0SQUALL01";
pub const MATTERMOST_TEAM_DOMAIN: &str = "squall";
/// Slack and Mattermost both accept at most this many posts to one `response_url`.
pub const RESPONSE_URL_USES: usize = 5;

/// The longest request head (request line and headers) the simulator reads.
const MAX_HEAD: usize = 64 * 1024;

// ---------------------------------------------------------------------------------------------
// What the simulator saw.

/// One request the simulator answered.
#[derive(Debug, Clone)]
pub struct Posted {
    pub method: String,
    /// The request target without its query string, e.g. `/api/chat.postMessage`.
    pub path: String,
    /// The query string without `?`; empty when there is none.
    pub query: String,
    /// Every header, names as sent.
    pub headers: Vec<(String, String)>,
    pub authorization: Option<String>,
    pub content_type: Option<String>,
    /// The body as sent (after undoing chunked transfer coding), lossily decoded as UTF-8.
    pub raw_body: String,
    /// JSON bodies parsed; `application/x-www-form-urlencoded` bodies as an object of strings;
    /// `text/*` bodies (and JSON that does not parse) as a string; an empty body as null.
    pub body: Value,
    /// The HTTP status the simulator answered.
    pub status: u16,
    /// The body the simulator answered.
    pub answer: String,
    /// Whether the service would have shown this as a message (a successful post).
    pub delivered: bool,
    pub at: Instant,
}

impl Posted {
    /// The message text as the chat would show it: the body's `text`, the `text` of a
    /// Mattermost form `payload`, or a plain-text body (a Mattermost command response).
    pub fn text(&self) -> Option<String> {
        match &self.body {
            Value::Object(fields) => match fields.get("text") {
                Some(Value::String(text)) => Some(text.clone()),
                _ => fields
                    .get("payload")
                    .and_then(Value::as_str)
                    .and_then(|payload| serde_json::from_str::<Value>(payload).ok())
                    .and_then(|payload| payload.get("text")?.as_str().map(str::to_string)),
            },
            Value::String(text) => Some(text.clone()),
            _ => None,
        }
    }

    /// A request header, by case-insensitive name.
    pub fn header(&self, name: &str) -> Option<&str> {
        header(&self.headers, name)
    }
}

// ---------------------------------------------------------------------------------------------
// The simulator.

pub struct ChatSim {
    /// `http://127.0.0.1:PORT`
    pub url: String,
    shared: Arc<Shared>,
    accept: Option<JoinHandle<()>>,
}

struct Shared {
    bot_token: String,
    started: Instant,
    log: Mutex<Log>,
    /// Notified after each request is recorded.
    arrived: Condvar,
    connections: Mutex<Connections>,
}

#[derive(Default)]
struct Log {
    requests: Vec<Posted>,
    fail_next: usize,
    /// The last `ts` handed out, in microseconds since the Unix epoch.
    last_ts: u64,
    /// Posts accepted per response URL path.
    uses: HashMap<String, usize>,
}

impl Log {
    /// A Slack message timestamp, `"<seconds>.<microseconds>"`, strictly increasing.
    fn next_ts(&mut self) -> String {
        self.last_ts = unix_micros().max(self.last_ts + 1);
        format!(
            "{}.{:06}",
            self.last_ts / 1_000_000,
            self.last_ts % 1_000_000
        )
    }
}

/// Open connections, so that dropping the simulator can close them; registering a connection
/// and setting `stopping` happen under the same lock, so none is missed.
#[derive(Default)]
struct Connections {
    stopping: bool,
    next_id: u64,
    open: HashMap<u64, TcpStream>,
}

impl ChatSim {
    /// Starts the simulator; `bot_token` is the Slack bot token `chat.postMessage` accepts.
    pub fn start(bot_token: &str) -> ChatSim {
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind the chat simulator");
        let url = format!(
            "http://{}",
            listener.local_addr().expect("chat simulator address")
        );
        let shared = Arc::new(Shared {
            bot_token: bot_token.to_string(),
            started: Instant::now(),
            log: Mutex::new(Log::default()),
            arrived: Condvar::new(),
            connections: Mutex::new(Connections::default()),
        });
        let accepting = shared.clone();
        let accept = std::thread::Builder::new()
            .name("chat-sim-accept".to_string())
            .spawn(move || accept_connections(&listener, &accepting))
            .expect("spawn the chat simulator");
        ChatSim {
            url,
            shared,
            accept: Some(accept),
        }
    }

    /// `{url}/slack/response/{id}`: a Slack `response_url`.
    pub fn response_url(&self, id: &str) -> String {
        format!("{}/slack/response/{id}", self.url)
    }

    /// `{url}/mattermost/hooks/{id}`: a Mattermost incoming webhook.
    pub fn mattermost_hook(&self, id: &str) -> String {
        format!("{}/mattermost/hooks/{id}", self.url)
    }

    /// `{url}/mattermost/response/{id}`: a Mattermost slash command's `response_url`.
    pub fn mattermost_response_url(&self, id: &str) -> String {
        format!("{}/mattermost/response/{id}", self.url)
    }

    /// `{url}/api/`: the Slack Web API base URL.
    pub fn slack_api(&self) -> String {
        format!("{}/api/", self.url)
    }

    /// Every request received, in order, failed ones included.
    pub fn requests(&self) -> Vec<Posted> {
        lock(&self.shared.log).requests.clone()
    }

    /// Successful message posts only (`chat.postMessage` with `ok: true`, accepted posts to
    /// response URLs and incoming webhooks), in order.
    pub fn posted(&self) -> Vec<Posted> {
        lock(&self.shared.log)
            .requests
            .iter()
            .filter(|p| p.delivered)
            .cloned()
            .collect()
    }

    /// The next `n` requests, on any path, answer 500 (recorded, not delivered).
    pub fn fail_next(&self, n: usize) {
        lock(&self.shared.log).fail_next = n;
    }

    /// Waits until a successful post satisfies `pred` (posts received before the call count)
    /// and returns it; panics with every request seen so far when `secs` pass first.
    pub fn wait_for_post(&self, secs: u64, pred: impl Fn(&Posted) -> bool) -> Posted {
        let deadline = Instant::now() + Duration::from_secs(secs);
        let mut checked = 0;
        loop {
            let (fresh, total) = self.since(checked);
            if let Some(found) = fresh.into_iter().find(|p| p.delivered && pred(p)) {
                return found;
            }
            checked = total;
            if !self.wait_for_more(checked, deadline) {
                panic!(
                    "no matching post within {secs} s; the chat simulator saw:\n{}",
                    self.transcript()
                );
            }
        }
    }

    /// Asserts that no successful post satisfying `pred` exists or arrives within `secs`.
    /// Posts received before the call count too; to look only at later ones, test `p.at`.
    pub fn assert_no_post(&self, secs: f64, pred: impl Fn(&Posted) -> bool) {
        let deadline = Instant::now() + Duration::from_secs_f64(secs);
        let mut checked = 0;
        loop {
            let (fresh, total) = self.since(checked);
            if let Some(found) = fresh.into_iter().find(|p| p.delivered && pred(p)) {
                panic!(
                    "unexpected post {} {}: {}; the chat simulator saw:\n{}",
                    found.method,
                    found.path,
                    found.raw_body,
                    self.transcript()
                );
            }
            checked = total;
            if !self.wait_for_more(checked, deadline) {
                return;
            }
        }
    }

    /// Every request so far, one per line, for failure messages.
    pub fn transcript(&self) -> String {
        let requests = self.requests();
        if requests.is_empty() {
            return "  (no requests)".to_string();
        }
        requests
            .iter()
            .map(|p| {
                format!(
                    "  +{:.3}s {} {}{}{} -> {}{} [{}] {} => {}",
                    p.at.duration_since(self.shared.started).as_secs_f64(),
                    p.method,
                    p.path,
                    if p.query.is_empty() { "" } else { "?" },
                    p.query,
                    p.status,
                    if p.delivered { " delivered" } else { "" },
                    p.content_type.as_deref().unwrap_or("no content type"),
                    p.raw_body,
                    p.answer
                )
            })
            .collect::<Vec<_>>()
            .join("\n")
    }

    /// The requests from index `from` on, and how many there are in all.
    fn since(&self, from: usize) -> (Vec<Posted>, usize) {
        let log = lock(&self.shared.log);
        (
            log.requests.get(from..).unwrap_or_default().to_vec(),
            log.requests.len(),
        )
    }

    /// Blocks until more than `seen` requests are recorded (true) or `deadline` passes (false).
    fn wait_for_more(&self, seen: usize, deadline: Instant) -> bool {
        let mut log = lock(&self.shared.log);
        while log.requests.len() <= seen {
            let now = Instant::now();
            if now >= deadline {
                return false;
            }
            log = match self.shared.arrived.wait_timeout(log, deadline - now) {
                Ok((log, _)) => log,
                Err(poisoned) => poisoned.into_inner().0,
            };
        }
        true
    }
}

impl Drop for ChatSim {
    fn drop(&mut self) {
        let open = {
            let mut connections = lock(&self.shared.connections);
            connections.stopping = true;
            std::mem::take(&mut connections.open)
        };
        // Unblocks every connection thread waiting for its next request.
        for stream in open.values() {
            let _ = stream.shutdown(Shutdown::Both);
        }
        // Wakes the accept loop so that it sees `stopping`, then waits for it to close the
        // listener.
        if TcpStream::connect(self.url.trim_start_matches("http://")).is_ok() {
            if let Some(accept) = self.accept.take() {
                let _ = accept.join();
            }
        }
    }
}

fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(PoisonError::into_inner)
}

fn accept_connections(listener: &TcpListener, shared: &Arc<Shared>) {
    for stream in listener.incoming() {
        let Ok(stream) = stream else {
            if lock(&shared.connections).stopping {
                return;
            }
            continue;
        };
        let id = {
            let mut connections = lock(&shared.connections);
            if connections.stopping {
                return;
            }
            let Ok(handle) = stream.try_clone() else {
                continue;
            };
            connections.next_id += 1;
            let id = connections.next_id;
            connections.open.insert(id, handle);
            id
        };
        let serving = shared.clone();
        let spawned = std::thread::Builder::new()
            .name(format!("chat-sim-conn-{id}"))
            .spawn(move || {
                serve(stream, &serving);
                lock(&serving.connections).open.remove(&id);
            });
        if spawned.is_err() {
            lock(&shared.connections).open.remove(&id);
        }
    }
}

// ---------------------------------------------------------------------------------------------
// HTTP/1.1: several requests per connection, Content-Length or chunked bodies, answers with
// Content-Length.

struct Request {
    method: String,
    target: String,
    version: String,
    headers: Vec<(String, String)>,
    body: Vec<u8>,
}

impl Request {
    fn header(&self, name: &str) -> Option<&str> {
        header(&self.headers, name)
    }

    fn keep_alive(&self) -> bool {
        let tokens: Vec<String> = self
            .header("connection")
            .unwrap_or_default()
            .split(',')
            .map(|t| t.trim().to_ascii_lowercase())
            .collect();
        if self.version == "HTTP/1.0" {
            tokens.iter().any(|t| t == "keep-alive")
        } else {
            !tokens.iter().any(|t| t == "close")
        }
    }
}

enum ReadError {
    /// The peer closed the connection or it failed: nothing to answer.
    Closed,
    /// Not HTTP/1.x: answered 400 and closed.
    Malformed,
}

impl From<std::io::Error> for ReadError {
    fn from(_: std::io::Error) -> Self {
        ReadError::Closed
    }
}

struct Answer {
    status: u16,
    content_type: &'static str,
    body: String,
    delivered: bool,
}

impl Answer {
    fn json(status: u16, body: Value) -> Answer {
        Answer {
            status,
            content_type: "application/json; charset=utf-8",
            body: body.to_string(),
            delivered: false,
        }
    }

    fn text(status: u16, body: &str) -> Answer {
        Answer {
            status,
            content_type: "text/plain; charset=utf-8",
            body: body.to_string(),
            delivered: false,
        }
    }

    fn delivered(mut self) -> Answer {
        self.delivered = true;
        self
    }
}

fn serve(stream: TcpStream, shared: &Shared) {
    let Ok(read_half) = stream.try_clone() else {
        return;
    };
    let mut reader = BufReader::new(read_half);
    let mut writer = stream;
    loop {
        let request = match read_request(&mut reader, &mut writer) {
            Ok(request) => request,
            Err(ReadError::Closed) => return,
            Err(ReadError::Malformed) => {
                let answer = Answer::text(400, "malformed HTTP request");
                let _ = write_answer(&mut writer, &answer, false);
                return;
            }
        };
        let keep_alive = request.keep_alive();
        let answer = shared.handle(request);
        if write_answer(&mut writer, &answer, keep_alive).is_err() || !keep_alive {
            let _ = writer.shutdown(Shutdown::Both);
            return;
        }
    }
}

/// Reads one line, without its CRLF (or LF); `Closed` at end of stream.
fn read_line(reader: &mut BufReader<TcpStream>, budget: &mut usize) -> Result<String, ReadError> {
    let mut line = Vec::new();
    let read = reader
        .by_ref()
        .take(*budget as u64 + 1)
        .read_until(b'\n', &mut line)?;
    if read == 0 {
        return Err(ReadError::Closed);
    }
    if read > *budget || line.last() != Some(&b'\n') {
        return Err(ReadError::Malformed);
    }
    *budget -= read;
    while matches!(line.last(), Some(b'\n' | b'\r')) {
        line.pop();
    }
    String::from_utf8(line).map_err(|_| ReadError::Malformed)
}

fn read_request(
    reader: &mut BufReader<TcpStream>,
    writer: &mut TcpStream,
) -> Result<Request, ReadError> {
    let mut budget = MAX_HEAD;
    // RFC 9112 2.2: ignore empty lines before the request line.
    let request_line = loop {
        let line = read_line(reader, &mut budget)?;
        if !line.is_empty() {
            break line;
        }
    };
    let mut parts = request_line.split(' ');
    let (Some(method), Some(target), Some(version), None) =
        (parts.next(), parts.next(), parts.next(), parts.next())
    else {
        return Err(ReadError::Malformed);
    };
    if !version.starts_with("HTTP/1.") || method.is_empty() || !target.starts_with('/') {
        return Err(ReadError::Malformed);
    }
    let mut headers = Vec::new();
    loop {
        let line = read_line(reader, &mut budget)?;
        if line.is_empty() {
            break;
        }
        let Some((name, value)) = line.split_once(':') else {
            return Err(ReadError::Malformed);
        };
        headers.push((name.trim().to_string(), value.trim().to_string()));
    }
    let mut request = Request {
        method: method.to_string(),
        target: target.to_string(),
        version: version.to_string(),
        headers,
        body: Vec::new(),
    };
    if request.version != "HTTP/1.0"
        && request
            .header("expect")
            .is_some_and(|e| e.eq_ignore_ascii_case("100-continue"))
    {
        writer.write_all(b"HTTP/1.1 100 Continue\r\n\r\n")?;
    }
    let chunked = request.header("transfer-encoding").is_some_and(|codings| {
        codings
            .rsplit(',')
            .next()
            .is_some_and(|last| last.trim().eq_ignore_ascii_case("chunked"))
    });
    if chunked {
        request.body = read_chunked(reader)?;
    } else if let Some(length) = request.header("content-length") {
        let length: usize = length.parse().map_err(|_| ReadError::Malformed)?;
        let mut body = vec![0; length];
        reader.read_exact(&mut body)?;
        request.body = body;
    }
    Ok(request)
}

fn read_chunked(reader: &mut BufReader<TcpStream>) -> Result<Vec<u8>, ReadError> {
    let mut body = Vec::new();
    let mut budget = MAX_HEAD;
    loop {
        let line = read_line(reader, &mut budget)?;
        let size = line.split(';').next().unwrap_or_default().trim();
        let size = usize::from_str_radix(size, 16).map_err(|_| ReadError::Malformed)?;
        if size == 0 {
            // Trailer fields, up to the empty line.
            while !read_line(reader, &mut budget)?.is_empty() {}
            return Ok(body);
        }
        let start = body.len();
        body.resize(start + size, 0);
        reader.read_exact(&mut body[start..])?;
        if !read_line(reader, &mut budget)?.is_empty() {
            return Err(ReadError::Malformed);
        }
    }
}

fn write_answer(writer: &mut TcpStream, answer: &Answer, keep_alive: bool) -> std::io::Result<()> {
    let reason = match answer.status {
        200 => "OK",
        400 => "Bad Request",
        403 => "Forbidden",
        404 => "Not Found",
        405 => "Method Not Allowed",
        500 => "Internal Server Error",
        _ => "Unknown",
    };
    let mut head = format!(
        "HTTP/1.1 {} {reason}\r\nContent-Type: {}\r\nContent-Length: {}\r\n",
        answer.status,
        answer.content_type,
        answer.body.len()
    );
    if !keep_alive {
        head.push_str("Connection: close\r\n");
    }
    head.push_str("\r\n");
    writer.write_all(head.as_bytes())?;
    writer.write_all(answer.body.as_bytes())?;
    writer.flush()
}

fn header<'a>(headers: &'a [(String, String)], name: &str) -> Option<&'a str> {
    headers
        .iter()
        .find(|(n, _)| n.eq_ignore_ascii_case(name))
        .map(|(_, v)| v.as_str())
}

/// A content type's media type, lower case, without parameters.
fn media_type(content_type: Option<&str>) -> String {
    content_type
        .unwrap_or_default()
        .split(';')
        .next()
        .unwrap_or_default()
        .trim()
        .to_ascii_lowercase()
}

fn parse_body(media: &str, raw: &str) -> Value {
    if raw.is_empty() {
        return Value::Null;
    }
    match media {
        "application/x-www-form-urlencoded" => Value::Object(form_object(raw)),
        "application/json" => {
            serde_json::from_str(raw).unwrap_or_else(|_| Value::String(raw.to_string()))
        }
        media if media.starts_with("text/") => Value::String(raw.to_string()),
        _ => serde_json::from_str(raw).unwrap_or_else(|_| Value::String(raw.to_string())),
    }
}

// ---------------------------------------------------------------------------------------------
// The services.

/// One request, as the routes see it.
struct Call<'a> {
    method: &'a str,
    query: &'a str,
    authorization: Option<&'a str>,
    media: &'a str,
    raw_body: &'a str,
    body: &'a Value,
}

impl Shared {
    fn handle(&self, request: Request) -> Answer {
        let (path, query) = request
            .target
            .split_once('?')
            .unwrap_or((request.target.as_str(), ""));
        let content_type = request.header("content-type").map(str::to_string);
        let authorization = request.header("authorization").map(str::to_string);
        let media = media_type(content_type.as_deref());
        let raw_body = String::from_utf8_lossy(&request.body).into_owned();
        let body = parse_body(&media, &raw_body);
        let call = Call {
            method: &request.method,
            query,
            authorization: authorization.as_deref(),
            media: &media,
            raw_body: &raw_body,
            body: &body,
        };
        let mut log = lock(&self.log);
        let answer = if log.fail_next > 0 {
            log.fail_next -= 1;
            Answer::text(500, "simulated failure")
        } else {
            self.route(&mut log, path, &call)
        };
        log.requests.push(Posted {
            method: request.method.clone(),
            path: path.to_string(),
            query: query.to_string(),
            headers: request.headers.clone(),
            authorization,
            content_type,
            raw_body: raw_body.clone(),
            body,
            status: answer.status,
            answer: answer.body.clone(),
            delivered: answer.delivered,
            at: Instant::now(),
        });
        drop(log);
        self.arrived.notify_all();
        answer
    }

    fn route(&self, log: &mut Log, path: &str, call: &Call) -> Answer {
        let segments: Vec<&str> = path.trim_start_matches('/').split('/').collect();
        match segments.as_slice() {
            ["api", method] => self.slack_api(log, method, call),
            ["slack", "response", id] if !id.is_empty() => slack_response(log, path, call),
            ["mattermost", "hooks", id] if !id.is_empty() => mattermost_hook(call),
            ["mattermost", "response", id] if !id.is_empty() => {
                mattermost_response(log, path, call)
            }
            _ => Answer::text(404, "404 page not found"),
        }
    }

    /// Slack's Web API: arguments from the query string and the body (JSON or form); the token
    /// from `Authorization: Bearer`, or a `token` argument when the body is not JSON. Errors are
    /// HTTP 200 with `{"ok": false, "error": ...}`, as Slack answers them.
    fn slack_api(&self, log: &mut Log, method: &str, call: &Call) -> Answer {
        let is_json = call.media == "application/json";
        let mut args = form_object(call.query);
        if is_json {
            match call.body {
                Value::Object(fields) => args.extend(fields.clone()),
                _ => return slack_error("invalid_json"),
            }
        } else {
            args.extend(form_object(call.raw_body));
        }
        if !matches!(method, "chat.postMessage" | "auth.test") {
            return slack_error("unknown_method");
        }
        let bearer = call
            .authorization
            .and_then(|a| a.strip_prefix("Bearer "))
            .map(str::trim);
        let token = match bearer {
            Some(token) => Some(token),
            None if !is_json => args.get("token").and_then(Value::as_str),
            None => None,
        };
        match token {
            None | Some("") => return slack_error("not_authed"),
            Some(token) if token != self.bot_token => return slack_error("invalid_auth"),
            Some(_) => {}
        }
        if method == "auth.test" {
            return Answer::json(
                200,
                json!({
                    "ok": true,
                    "url": format!("https://{SLACK_TEAM_DOMAIN}.slack.com/"),
                    "team": "Test Team Now",
                    "user": "squall",
                    "team_id": SLACK_TEAM_ID,
                    "user_id": SLACK_BOT_USER_ID,
                    "bot_id": SLACK_BOT_ID,
                }),
            );
        }
        let Some(channel) = non_empty_str(args.get("channel")) else {
            return slack_error("channel_not_found");
        };
        let text = non_empty_str(args.get("text"));
        if text.is_none()
            && !has_content(args.get("blocks"))
            && !has_content(args.get("attachments"))
        {
            return slack_error("no_text");
        }
        let ts = log.next_ts();
        let mut message = json!({
            "type": "message",
            "user": SLACK_BOT_USER_ID,
            "bot_id": SLACK_BOT_ID,
            "text": text.unwrap_or_default(),
            "ts": ts,
        });
        if let Some(thread_ts) = args.get("thread_ts").filter(|t| !t.is_null()) {
            message["thread_ts"] = thread_ts.clone();
        }
        Answer::json(
            200,
            json!({"ok": true, "channel": channel, "ts": ts, "message": message}),
        )
        .delivered()
    }
}

fn slack_error(error: &str) -> Answer {
    Answer::json(200, json!({"ok": false, "error": error}))
}

/// A Slack `response_url`: a JSON message, at most five times; answers `ok` as Slack's
/// incoming webhooks do, and their plain-text errors otherwise.
fn slack_response(log: &mut Log, path: &str, call: &Call) -> Answer {
    if call.method != "POST" {
        return Answer::text(405, "invalid_method");
    }
    if log.uses.get(path).copied().unwrap_or(0) >= RESPONSE_URL_USES {
        return Answer::text(404, "used_url");
    }
    let Value::Object(message) = call.body else {
        return Answer::text(400, "invalid_payload");
    };
    let deletes = message.get("delete_original").and_then(Value::as_bool) == Some(true);
    if !deletes
        && non_empty_str(message.get("text")).is_none()
        && !has_content(message.get("blocks"))
        && !has_content(message.get("attachments"))
    {
        return Answer::text(400, "no_text");
    }
    *log.uses.entry(path.to_string()).or_default() += 1;
    Answer {
        content_type: "text/html",
        ..Answer::text(200, "ok")
    }
    .delivered()
}

/// A Mattermost incoming webhook: JSON, or a form with the JSON in `payload`
/// (mattermost-server web/webhook.go `incomingWebhook`).
fn mattermost_hook(call: &Call) -> Answer {
    if call.method != "POST" {
        return mattermost_error(405, "api.context.invalid_url", "Invalid method");
    }
    let message = if call.media == "application/x-www-form-urlencoded" {
        call.body
            .get("payload")
            .and_then(Value::as_str)
            .and_then(|payload| serde_json::from_str::<Value>(payload).ok())
    } else {
        Some(call.body.clone())
    };
    let Some(Value::Object(message)) = message else {
        return mattermost_error(
            400,
            "web.incoming_webhook.parse.app_error",
            "Unable to parse incoming data.",
        );
    };
    if non_empty_str(message.get("text")).is_none() && !has_content(message.get("attachments")) {
        return mattermost_error(
            400,
            "web.incoming_webhook.text.app_error",
            "No text specified.",
        );
    }
    mattermost_ok()
}

/// A Mattermost slash command's `response_url` (mattermost-server `commandWebhook`): a JSON
/// command response when the content type is JSON, else the body is the text; at most five.
fn mattermost_response(log: &mut Log, path: &str, call: &Call) -> Answer {
    if call.method != "POST" {
        return mattermost_error(405, "api.context.invalid_url", "Invalid method");
    }
    if call.media == "application/json" && !call.body.is_object() {
        return mattermost_error(
            400,
            "web.command_webhook.parse.app_error",
            "Unable to parse incoming data.",
        );
    }
    if log.uses.get(path).copied().unwrap_or(0) >= RESPONSE_URL_USES {
        return mattermost_error(
            400,
            "web.command_webhook.invalid.app_error",
            "Invalid webhook.",
        );
    }
    *log.uses.entry(path.to_string()).or_default() += 1;
    mattermost_ok()
}

fn mattermost_ok() -> Answer {
    Answer {
        content_type: "text/plain",
        ..Answer::text(200, "ok")
    }
    .delivered()
}

fn mattermost_error(status: u16, id: &str, message: &str) -> Answer {
    Answer::json(
        status,
        json!({
            "id": id,
            "message": message,
            "detailed_error": "",
            "request_id": mattermost_id(&format!("request:{}", unix_micros())),
            "status_code": status,
        }),
    )
}

fn non_empty_str(value: Option<&Value>) -> Option<&str> {
    value.and_then(Value::as_str).filter(|s| !s.is_empty())
}

/// Whether `blocks` or `attachments` hold something: a non-empty array, or (form-encoded) a
/// non-empty JSON string.
fn has_content(value: Option<&Value>) -> bool {
    match value {
        Some(Value::Array(items)) => !items.is_empty(),
        Some(Value::String(text)) => !matches!(text.trim(), "" | "[]"),
        _ => false,
    }
}

// ---------------------------------------------------------------------------------------------
// What Slack and Mattermost send to squall.

/// Slack request signing v0: `"v0=" + hex(HMAC-SHA256(secret, "v0:" + timestamp + ":" + body))`.
pub fn slack_signature(secret: &str, timestamp: &str, body: &str) -> String {
    let mut mac =
        Hmac::<Sha256>::new_from_slice(secret.as_bytes()).expect("HMAC takes keys of any length");
    mac.update(b"v0:");
    mac.update(timestamp.as_bytes());
    mac.update(b":");
    mac.update(body.as_bytes());
    format!("v0={}", hex(&mac.finalize().into_bytes()))
}

/// Headers of a signed Slack request at Unix time `ts`: `X-Slack-Request-Timestamp`,
/// `X-Slack-Signature` and `Content-Type`.
pub fn slack_headers(
    secret: &str,
    ts: i64,
    body: &str,
    content_type: &str,
) -> Vec<(String, String)> {
    let ts = ts.to_string();
    vec![
        ("X-Slack-Request-Timestamp".to_string(), ts.clone()),
        (
            "X-Slack-Signature".to_string(),
            slack_signature(secret, &ts, body),
        ),
        ("Content-Type".to_string(), content_type.to_string()),
    ]
}

/// Seconds since the Unix epoch, for `slack_headers`.
pub fn unix_now() -> i64 {
    i64::try_from(unix_micros() / 1_000_000).unwrap_or(i64::MAX)
}

/// Every field of a Slack slash command, in the order Slack sends them.
#[derive(Debug, Clone)]
pub struct SlashCommand<'a> {
    pub token: &'a str,
    pub team_id: &'a str,
    pub team_domain: &'a str,
    pub channel_id: &'a str,
    pub channel_name: &'a str,
    pub user_id: &'a str,
    pub user_name: &'a str,
    pub command: &'a str,
    pub text: &'a str,
    pub response_url: &'a str,
    pub trigger_id: &'a str,
}

impl SlashCommand<'_> {
    /// The form-encoded body, exactly as Slack sends it.
    pub fn body(&self) -> String {
        form_encode(
            &[
                ("token", self.token),
                ("team_id", self.team_id),
                ("team_domain", self.team_domain),
                ("channel_id", self.channel_id),
                ("channel_name", self.channel_name),
                ("user_id", self.user_id),
                ("user_name", self.user_name),
                ("command", self.command),
                ("text", self.text),
                ("response_url", self.response_url),
                ("trigger_id", self.trigger_id),
            ],
            WHATWG_FORM_SAFE,
        )
    }
}

/// A slash command body as Slack sends it (`application/x-www-form-urlencoded`), with the
/// workspace of Slack's signing example: token `SLACK_VERIFICATION_TOKEN`, team
/// `SLACK_TEAM_ID`/`SLACK_TEAM_DOMAIN`, trigger id `SLACK_TRIGGER_ID`.
pub fn slash_command_body(
    user_id: &str,
    user_name: &str,
    channel_id: &str,
    channel_name: &str,
    command: &str,
    text: &str,
    response_url: &str,
) -> String {
    SlashCommand {
        token: SLACK_VERIFICATION_TOKEN,
        team_id: SLACK_TEAM_ID,
        team_domain: SLACK_TEAM_DOMAIN,
        channel_id,
        channel_name,
        user_id,
        user_name,
        command,
        text,
        response_url,
        trigger_id: SLACK_TRIGGER_ID,
    }
    .body()
}

/// An Events API `event_callback` body, JSON as Slack sends it. An `app_mention`'s text is
/// `"<@UBOT> " + text`; any other event type (`message`) carries `text` as given, and a
/// `message` also carries `channel_type` (from the channel id's first letter).
pub fn slack_event_body(
    event_type: &str,
    event_id: &str,
    user: &str,
    channel: &str,
    text: &str,
) -> String {
    let micros = unix_micros();
    let ts = format!("{}.{:06}", micros / 1_000_000, micros % 1_000_000);
    let text = if event_type == "app_mention" {
        format!("<@{SLACK_BOT_USER_ID}> {text}")
    } else {
        text.to_string()
    };
    let mut event = json!({
        "type": event_type,
        "user": user,
        "text": text,
        "ts": ts,
        "channel": channel,
        "event_ts": ts,
    });
    if event_type == "message" {
        let channel_type = match channel.chars().next() {
            Some('D') => "im",
            Some('G') => "group",
            _ => "channel",
        };
        event["channel_type"] = json!(channel_type);
    }
    json!({
        "token": SLACK_VERIFICATION_TOKEN,
        "team_id": SLACK_TEAM_ID,
        "api_app_id": SLACK_APP_ID,
        "event": event,
        "type": "event_callback",
        "event_id": event_id,
        "event_time": micros / 1_000_000,
    })
    .to_string()
}

/// The Events API `url_verification` handshake body.
pub fn slack_url_verification_body(challenge: &str) -> String {
    json!({
        "token": SLACK_VERIFICATION_TOKEN,
        "challenge": challenge,
        "type": "url_verification",
    })
    .to_string()
}

/// A Mattermost outgoing-webhook body (JSON, fields in mattermost-server's
/// `OutgoingWebhookPayload` order). `text` is the whole message as posted, trigger word
/// included (Mattermost does not strip it); ids are derived from the names.
pub fn mattermost_outgoing_body(
    token: &str,
    user_name: &str,
    channel_name: &str,
    trigger_word: &str,
    text: &str,
) -> String {
    static POSTS: AtomicU64 = AtomicU64::new(0);
    let post = POSTS.fetch_add(1, Ordering::Relaxed);
    json!({
        "token": token,
        "team_id": mattermost_id(&format!("team:{MATTERMOST_TEAM_DOMAIN}")),
        "team_domain": MATTERMOST_TEAM_DOMAIN,
        "channel_id": mattermost_id(&format!("channel:{channel_name}")),
        "channel_name": channel_name,
        "timestamp": unix_micros() / 1000,
        "user_id": mattermost_id(&format!("user:{user_name}")),
        "user_name": user_name,
        "post_id": mattermost_id(&format!("post:{post}:{}", unix_micros())),
        "text": text,
        "trigger_word": trigger_word,
        "file_ids": "",
    })
    .to_string()
}

/// A Mattermost slash command body (`application/x-www-form-urlencoded`, keys sorted and values
/// escaped as Go's `url.Values.Encode` does).
pub fn mattermost_slash_body(
    token: &str,
    user_name: &str,
    channel_name: &str,
    command: &str,
    text: &str,
    response_url: &str,
) -> String {
    let channel_id = mattermost_id(&format!("channel:{channel_name}"));
    let team_id = mattermost_id(&format!("team:{MATTERMOST_TEAM_DOMAIN}"));
    let user_id = mattermost_id(&format!("user:{user_name}"));
    let trigger_id = mattermost_id(&format!("trigger:{}", unix_micros()));
    form_encode(
        &[
            ("channel_id", &channel_id),
            ("channel_name", channel_name),
            ("command", command),
            ("response_url", response_url),
            ("team_domain", MATTERMOST_TEAM_DOMAIN),
            ("team_id", &team_id),
            ("text", text),
            ("token", token),
            ("trigger_id", &trigger_id),
            ("user_id", &user_id),
            ("user_name", user_name),
        ],
        GO_QUERY_SAFE,
    )
}

/// The headers Mattermost sends with a slash command.
pub fn mattermost_slash_headers(token: &str) -> Vec<(String, String)> {
    vec![
        (
            "Content-Type".to_string(),
            "application/x-www-form-urlencoded".to_string(),
        ),
        ("Accept".to_string(), "application/json".to_string()),
        ("Authorization".to_string(), format!("Token {token}")),
    ]
}

/// A 26-character Mattermost id (base32 with Mattermost's alphabet), derived from `seed`.
pub fn mattermost_id(seed: &str) -> String {
    const ALPHABET: &[u8; 32] = b"ybndrfg8ejkmcpqxot1uwisza345h769";
    let digest = Sha256::digest(seed.as_bytes());
    let (mut bits, mut pending, mut id) = (0u32, 0u32, String::new());
    for byte in &digest[..16] {
        bits = (bits << 8) | u32::from(*byte);
        pending += 8;
        while pending >= 5 {
            pending -= 5;
            id.push(char::from(ALPHABET[((bits >> pending) & 31) as usize]));
        }
    }
    id.push(char::from(
        ALPHABET[((bits << (5 - pending)) & 31) as usize],
    ));
    id
}

/// Bytes `application/x-www-form-urlencoded` (WHATWG) leaves as they are, besides alphanumerics.
const WHATWG_FORM_SAFE: &[u8] = b"-._*";
/// Bytes Go's `url.QueryEscape` leaves as they are, besides alphanumerics.
const GO_QUERY_SAFE: &[u8] = b"-._~";

fn form_encode(fields: &[(&str, &str)], safe: &[u8]) -> String {
    fields
        .iter()
        .map(|(name, value)| format!("{}={}", escape(name, safe), escape(value, safe)))
        .collect::<Vec<_>>()
        .join("&")
}

fn escape(text: &str, safe: &[u8]) -> String {
    let mut out = String::with_capacity(text.len());
    for byte in text.bytes() {
        match byte {
            b' ' => out.push('+'),
            b if b.is_ascii_alphanumeric() || safe.contains(&b) => out.push(char::from(b)),
            b => out.push_str(&format!("%{b:02X}")),
        }
    }
    out
}

/// A form-encoded string as an object of strings (a repeated name keeps its last value).
fn form_object(form: &str) -> Map<String, Value> {
    form.split('&')
        .filter(|pair| !pair.is_empty())
        .map(|pair| {
            let (name, value) = pair.split_once('=').unwrap_or((pair, ""));
            (unescape(name), Value::String(unescape(value)))
        })
        .collect()
}

fn unescape(text: &str) -> String {
    let bytes = text.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        match bytes[i] {
            b'+' => out.push(b' '),
            b'%' if i + 2 < bytes.len() => {
                match std::str::from_utf8(&bytes[i + 1..i + 3])
                    .ok()
                    .and_then(|hex| u8::from_str_radix(hex, 16).ok())
                {
                    Some(byte) => {
                        out.push(byte);
                        i += 2;
                    }
                    None => out.push(b'%'),
                }
            }
            byte => out.push(byte),
        }
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

fn unix_micros() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| u64::try_from(d.as_micros()).unwrap_or(u64::MAX))
        .unwrap_or(0)
}

// ---------------------------------------------------------------------------------------------
// The simulator's own tests, with a raw TcpStream client.

/// Slack's published request-signing example ("Verifying requests from Slack").
const SLACK_SIGNING_SECRET: &str = "8f742231b10e8888abcd99yyyzzz85a5";
const SLACK_SIGNED_AT: &str = "1531420618";
const SLACK_SIGNED_BODY: &str = "token=xyzz0WbapA4vBCDEFasx0q6G&team_id=T1DC2JH3J&team_domain=testteamnow&channel_id=G8PSS9T3V&channel_name=foobar&user_id=U2CERLKJA&user_name=roadrunner&command=%2Fwebhook-collect&text=&response_url=https%3A%2F%2Fhooks.slack.com%2Fcommands%2FT1DC2JH3J%2F397700885554%2F96rGlfmibIGlgcZRskXaIFfN&trigger_id=398738663015.47445629121.803a0bc887a14d10d2c447fce8b6703c";
const SLACK_SIGNATURE: &str = "v0=a2114d57b48eac39b9ad189dd8316235a7b4a8d21a10bd27519666489c69b503";
const BOT_TOKEN: &str = "xoxb-17653672481-19874698323-pdFZKVeTuE8sk7oOcBrzbqgy";

/// A client connection that keeps its read buffer between answers.
struct Client {
    reader: BufReader<TcpStream>,
}

/// An answer as the client read it.
struct Reply {
    status: u16,
    headers: Vec<(String, String)>,
    body: String,
}

impl Reply {
    fn json(&self) -> Value {
        serde_json::from_str(&self.body).expect("a JSON answer")
    }
}

impl Client {
    fn connect(sim: &ChatSim) -> Client {
        let stream =
            TcpStream::connect(sim.url.trim_start_matches("http://")).expect("connect to the sim");
        stream
            .set_read_timeout(Some(Duration::from_secs(10)))
            .expect("read timeout");
        Client {
            reader: BufReader::new(stream),
        }
    }

    fn send(&mut self, raw: &str) -> Reply {
        self.reader
            .get_mut()
            .write_all(raw.as_bytes())
            .expect("send a request");
        let mut line = String::new();
        self.reader.read_line(&mut line).expect("status line");
        let status = line
            .split(' ')
            .nth(1)
            .and_then(|s| s.parse().ok())
            .unwrap_or_else(|| panic!("a status line, got {line:?}"));
        let mut headers = Vec::new();
        loop {
            let mut line = String::new();
            self.reader.read_line(&mut line).expect("header line");
            let line = line.trim_end();
            if line.is_empty() {
                break;
            }
            let (name, value) = line.split_once(':').expect("a header");
            headers.push((name.to_string(), value.trim().to_string()));
        }
        let length: usize = header(&headers, "content-length")
            .expect("answers carry Content-Length")
            .parse()
            .expect("a length");
        let mut body = vec![0; length];
        self.reader.read_exact(&mut body).expect("body");
        Reply {
            status,
            headers,
            body: String::from_utf8(body).expect("UTF-8 body"),
        }
    }

    /// POSTs `body` with `headers` on this connection.
    fn post(&mut self, path: &str, headers: &[(&str, &str)], body: &str) -> Reply {
        let mut raw = format!("POST {path} HTTP/1.1\r\nHost: 127.0.0.1\r\n");
        for (name, value) in headers {
            raw.push_str(&format!("{name}: {value}\r\n"));
        }
        raw.push_str(&format!("Content-Length: {}\r\n\r\n{body}", body.len()));
        self.send(&raw)
    }

    /// Whether the server closed the connection (end of stream).
    fn is_closed(&mut self) -> bool {
        let mut rest = Vec::new();
        matches!(self.reader.read_to_end(&mut rest), Ok(0))
    }
}

fn post_json(sim: &ChatSim, path: &str, authorization: Option<&str>, body: &Value) -> Reply {
    let mut headers = vec![
        ("Content-Type", "application/json"),
        ("Connection", "close"),
    ];
    if let Some(authorization) = authorization {
        headers.push(("Authorization", authorization));
    }
    Client::connect(sim).post(path, &headers, &body.to_string())
}

#[test]
fn signature_matches_slacks_published_example() {
    assert_eq!(
        slack_signature(SLACK_SIGNING_SECRET, SLACK_SIGNED_AT, SLACK_SIGNED_BODY),
        SLACK_SIGNATURE
    );
    let headers = slack_headers(
        SLACK_SIGNING_SECRET,
        1531420618,
        SLACK_SIGNED_BODY,
        "application/x-www-form-urlencoded",
    );
    assert_eq!(
        headers,
        vec![
            (
                "X-Slack-Request-Timestamp".to_string(),
                SLACK_SIGNED_AT.to_string()
            ),
            ("X-Slack-Signature".to_string(), SLACK_SIGNATURE.to_string()),
            (
                "Content-Type".to_string(),
                "application/x-www-form-urlencoded".to_string()
            ),
        ]
    );
}

#[test]
fn slash_command_body_reproduces_slacks_published_example() {
    let body = slash_command_body(
        "U2CERLKJA",
        "roadrunner",
        "G8PSS9T3V",
        "foobar",
        "/webhook-collect",
        "",
        "https://hooks.slack.com/commands/T1DC2JH3J/397700885554/96rGlfmibIGlgcZRskXaIFfN",
    );
    assert_eq!(body, SLACK_SIGNED_BODY);
    // Form encoding as Slack does it: space as `+`, `*` kept, everything else escaped.
    let body = slash_command_body("U1", "a b", "C1", "general", "/st2", "run x*y ~é&", "u");
    assert!(
        body.contains("&text=run+x*y+%7E%C3%A9%26&"),
        "unexpected encoding: {body}"
    );
    assert_eq!(form_object(&body)["text"], "run x*y ~é&");
}

#[test]
fn post_message_checks_the_token_as_slack_does() {
    let sim = ChatSim::start(BOT_TOKEN);
    let message = json!({"channel": "C0123", "text": "hello"});
    let path = "/api/chat.postMessage";

    let bad = post_json(&sim, path, Some("Bearer xoxb-wrong"), &message);
    assert_eq!(bad.status, 200);
    assert_eq!(bad.json(), json!({"ok": false, "error": "invalid_auth"}));
    let missing = post_json(&sim, path, None, &message);
    assert_eq!(missing.json(), json!({"ok": false, "error": "not_authed"}));
    assert!(sim.posted().is_empty(), "{}", sim.transcript());
    assert_eq!(sim.requests().len(), 2);
    assert_eq!(
        sim.requests()[0].authorization.as_deref(),
        Some("Bearer xoxb-wrong")
    );

    let bearer = format!("Bearer {BOT_TOKEN}");
    let no_channel = post_json(&sim, path, Some(&bearer), &json!({"text": "hello"}));
    assert_eq!(no_channel.json()["error"], "channel_not_found");
    let no_text = post_json(&sim, path, Some(&bearer), &json!({"channel": "C0123"}));
    assert_eq!(no_text.json()["error"], "no_text");

    let first = post_json(&sim, path, Some(&bearer), &message).json();
    assert_eq!(first["ok"], true, "{first}");
    assert_eq!(first["channel"], "C0123");
    assert_eq!(first["message"]["text"], "hello");
    let threaded = json!({"channel": "C0123", "text": "again", "thread_ts": first["ts"]});
    let second = post_json(&sim, path, Some(&bearer), &threaded).json();
    assert_eq!(second["message"]["thread_ts"], first["ts"]);
    let ts = |answer: &Value| -> f64 { answer["ts"].as_str().expect("ts").parse().expect("f64") };
    assert!(ts(&second) > ts(&first), "{first} then {second}");

    // A form body may carry the token instead of the header.
    let form = form_encode(
        &[
            ("token", BOT_TOKEN),
            ("channel", "C0123"),
            ("text", "a form"),
        ],
        WHATWG_FORM_SAFE,
    );
    let answer = Client::connect(&sim).post(
        path,
        &[
            ("Content-Type", "application/x-www-form-urlencoded"),
            ("Connection", "close"),
        ],
        &form,
    );
    assert_eq!(answer.json()["ok"], true, "{}", answer.body);

    let posted = sim.posted();
    let texts: Vec<_> = posted.iter().filter_map(Posted::text).collect();
    assert_eq!(texts, ["hello", "again", "a form"]);
    assert_eq!(posted[2].body["channel"], "C0123");
    assert_eq!(sim.requests().len(), 7);
}

#[test]
fn one_keep_alive_connection_carries_several_requests() {
    let sim = ChatSim::start(BOT_TOKEN);
    let mut client = Client::connect(&sim);

    let first = client.post(
        "/slack/response/r1",
        &[("Content-Type", "application/json")],
        r#"{"text":"first","response_type":"in_channel","replace_original":false}"#,
    );
    assert_eq!((first.status, first.body.as_str()), (200, "ok"));
    assert!(header(&first.headers, "connection").is_none());

    // A chunked body, split mid-JSON, with a chunk extension and a trailer.
    let chunked = "POST /mattermost/hooks/h1 HTTP/1.1\r\nHost: 127.0.0.1\r\n\
        Content-Type: application/json\r\nTransfer-Encoding: chunked\r\n\r\n\
        9;ext=1\r\n{\"text\":\"\r\n8\r\nsecond\"}\r\n0\r\nX-Trailer: 1\r\n\r\n";
    let second = client.send(chunked);
    assert_eq!((second.status, second.body.as_str()), (200, "ok"));

    let third = client.post(
        "/mattermost/response/m1",
        &[("Content-Type", "text/plain"), ("Connection", "close")],
        "third",
    );
    assert_eq!(third.status, 200);
    assert_eq!(header(&third.headers, "connection"), Some("close"));
    assert!(client.is_closed());

    let posted = sim.posted();
    let seen: Vec<_> = posted
        .iter()
        .map(|p| (p.path.as_str(), p.text().unwrap_or_default()))
        .collect();
    assert_eq!(
        seen,
        [
            ("/slack/response/r1", "first".to_string()),
            ("/mattermost/hooks/h1", "second".to_string()),
            ("/mattermost/response/m1", "third".to_string()),
        ]
    );
    assert_eq!(posted[0].body["response_type"], "in_channel");
    assert_eq!(posted[1].raw_body, r#"{"text":"second"}"#);
}

#[test]
fn wait_for_post_finds_a_post_from_another_thread() {
    let sim = ChatSim::start(BOT_TOKEN);
    let url = sim.response_url("abc");
    let path = url.trim_start_matches(&sim.url).to_string();
    let address = sim.url.trim_start_matches("http://").to_string();
    let poster = std::thread::spawn(move || {
        let stream = TcpStream::connect(address).expect("connect");
        let mut client = Client {
            reader: BufReader::new(stream),
        };
        client.post(
            &path,
            &[
                ("Content-Type", "application/json"),
                ("Connection", "close"),
            ],
            r#"{"text":"deployed"}"#,
        )
    });
    let post = sim.wait_for_post(10, |p| p.text().as_deref() == Some("deployed"));
    assert_eq!(post.path, "/slack/response/abc");
    assert_eq!(post.content_type.as_deref(), Some("application/json"));
    assert_eq!(poster.join().expect("poster").status, 200);
    sim.assert_no_post(0.2, |p| p.text().as_deref() == Some("failed"));
}

#[test]
fn wait_for_post_reports_every_request_when_nothing_matches() {
    let sim = ChatSim::start(BOT_TOKEN);
    post_json(
        &sim,
        "/api/chat.postMessage",
        Some("Bearer nope"),
        &json!({"channel": "C1", "text": "not delivered"}),
    );
    let failed = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
        sim.wait_for_post(0, |_| true);
    }));
    let message = failed
        .expect_err("no post was delivered")
        .downcast::<String>()
        .expect("a formatted panic message");
    assert!(
        message.contains("/api/chat.postMessage") && message.contains("not delivered"),
        "{message}"
    );
}

#[test]
fn fail_next_answers_500_then_recovers() {
    let sim = ChatSim::start(BOT_TOKEN);
    sim.fail_next(2);
    let hook = "/mattermost/hooks/retry";
    let body = json!({"text": "try"});
    assert_eq!(post_json(&sim, hook, None, &body).status, 500);
    assert_eq!(post_json(&sim, hook, None, &body).status, 500);
    assert_eq!(post_json(&sim, hook, None, &body).status, 200);
    let statuses: Vec<u16> = sim.requests().iter().map(|p| p.status).collect();
    assert_eq!(statuses, [500, 500, 200]);
    assert_eq!(sim.posted().len(), 1);
}

#[test]
fn response_urls_take_five_posts_and_webhooks_check_their_payload() {
    let sim = ChatSim::start(BOT_TOKEN);
    let slack = "/slack/response/five";
    let mattermost = "/mattermost/response/five";
    for n in 0..RESPONSE_URL_USES {
        let body = json!({ "text": format!("update {n}") });
        assert_eq!(post_json(&sim, slack, None, &body).status, 200);
        assert_eq!(post_json(&sim, mattermost, None, &body).status, 200);
    }
    let sixth = post_json(&sim, slack, None, &json!({"text": "sixth"}));
    assert_eq!((sixth.status, sixth.body.as_str()), (404, "used_url"));
    let sixth = post_json(&sim, mattermost, None, &json!({"text": "sixth"}));
    assert_eq!(sixth.status, 400);
    assert_eq!(sixth.json()["id"], "web.command_webhook.invalid.app_error");

    let empty = post_json(&sim, "/slack/response/other", None, &json!({"text": ""}));
    assert_eq!((empty.status, empty.body.as_str()), (400, "no_text"));
    let empty = post_json(&sim, "/mattermost/hooks/h", None, &json!({"channel": "x"}));
    assert_eq!(empty.json()["id"], "web.incoming_webhook.text.app_error");

    // Mattermost also takes a form whose `payload` is the JSON.
    let form = form_encode(&[("payload", r#"{"text":"via form"}"#)], GO_QUERY_SAFE);
    let answer = Client::connect(&sim).post(
        "/mattermost/hooks/h",
        &[
            ("Content-Type", "application/x-www-form-urlencoded"),
            ("Connection", "close"),
        ],
        &form,
    );
    assert_eq!(answer.status, 200);
    let delivered = sim.posted();
    assert_eq!(delivered.len(), 2 * RESPONSE_URL_USES + 1);
    assert_eq!(
        delivered.last().and_then(Posted::text).as_deref(),
        Some("via form")
    );
}

#[test]
fn mattermost_bodies_are_what_mattermost_sends() {
    let outgoing: Value = serde_json::from_str(&mattermost_outgoing_body(
        "tok",
        "alice",
        "town-square",
        "!st2",
        "!st2 pack list",
    ))
    .expect("JSON");
    let keys: Vec<&str> = outgoing
        .as_object()
        .expect("an object")
        .keys()
        .map(String::as_str)
        .collect();
    assert_eq!(
        keys,
        [
            "token",
            "team_id",
            "team_domain",
            "channel_id",
            "channel_name",
            "timestamp",
            "user_id",
            "user_name",
            "post_id",
            "text",
            "trigger_word",
            "file_ids"
        ]
    );
    assert_eq!(outgoing["text"], "!st2 pack list");
    assert_eq!(outgoing["file_ids"], "");
    assert!(outgoing["timestamp"].is_u64());
    assert_eq!(outgoing["channel_id"].as_str().map(str::len), Some(26));

    let slash = mattermost_slash_body(
        "tok",
        "alice",
        "town-square",
        "/st2",
        "run a~b*c",
        "http://x/r",
    );
    assert!(slash.starts_with("channel_id="), "{slash}");
    assert!(slash.contains("&text=run+a~b%2Ac&"), "{slash}");
    let fields = form_object(&slash);
    let names: Vec<&str> = fields.keys().map(String::as_str).collect();
    let mut sorted = names.clone();
    sorted.sort_unstable();
    assert_eq!(names, sorted);
    assert_eq!(fields["response_url"], "http://x/r");
    assert_eq!(fields["user_name"], "alice");
    assert_eq!(fields["token"], "tok");
}

#[test]
fn slack_event_bodies_are_event_callbacks() {
    let mention: Value = serde_json::from_str(&slack_event_body(
        "app_mention",
        "Ev01",
        "U2CERLKJA",
        "C0123",
        "pack list",
    ))
    .expect("JSON");
    assert_eq!(mention["type"], "event_callback");
    assert_eq!(mention["event_id"], "Ev01");
    assert_eq!(mention["event"]["type"], "app_mention");
    assert_eq!(mention["event"]["text"], "<@UBOT> pack list");
    assert_eq!(mention["event"]["ts"], mention["event"]["event_ts"]);
    assert!(mention["event_time"].is_u64());
    let message: Value =
        serde_json::from_str(&slack_event_body("message", "Ev02", "U1", "D0456", "hi"))
            .expect("JSON");
    assert_eq!(message["event"]["text"], "hi");
    assert_eq!(message["event"]["channel_type"], "im");
}

#[test]
fn dropping_the_simulator_closes_its_connections_and_listener() {
    let sim = ChatSim::start(BOT_TOKEN);
    let address = sim.url.trim_start_matches("http://").to_string();
    let mut client = Client::connect(&sim);
    let answer = client.post(
        "/mattermost/hooks/x",
        &[("Content-Type", "application/json")],
        r#"{"text":"still open"}"#,
    );
    assert_eq!(answer.status, 200);
    drop(sim);
    assert!(client.is_closed());
    assert!(TcpStream::connect(address).is_err());
}
