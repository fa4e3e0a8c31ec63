//! st2's `http-request` runner (`core.http`): one HTTP request made from an action's
//! parameters, answered with st2's result `{status_code, body, parsed, headers}`.
//!
//! The request is built as st2's `HTTPClient` builds it (st2's `http_runner.py`):
//! - `method` defaults to `POST` when there is a body, else `GET`.
//! - With the header `Content-Type: application/json` (exactly that value) the body is cast
//!   (JSON text, else a Python literal, which is what an object given to the string parameter
//!   `body` becomes) and sent as compact JSON; without a body that is `null`, as st2 sends it.
//!   Any other body is sent as it is; an object body is form-encoded, as `requests` does.
//! - `params` is the query string, `cookies` the `Cookie` header, `username`/`password` basic
//!   authentication, `allow_redirects` (default false), `verify_ssl_cert` (default true),
//!   `http_proxy`/`https_proxy`, `url_hosts_blacklist`/`url_hosts_whitelist` (st2's messages).
//! - Headers `User-Agent` (squall's, unless the action gives one) and `X-Stanley-Action`
//!   (the action's name) are added.
//!
//! The result is st2's: `body` is parsed when the answer's `Content-Type`, before any `;`, is
//! `application/json` and the body parses (`parsed` says so). Statuses 200 to 206 succeed; any
//! other (a redirect not followed included) fails with the same result. No answer within
//! `timeout` seconds (default 60) is the execution's `timeout` with `{error}`; a request that
//! could not be made fails with `{error}`.
//!
//! Where squall differs, and why: the timeout bounds the whole exchange (`requests` bounds the
//! connection and each read), so a slow body cannot hold a worker past it; response header
//! names are Title-Case (`Content-Type`), the form nearly every server writes, because the HTTP
//! library lowers the names it receives; the body is decoded as UTF-8 (invalid bytes
//! replaced) and at most 16 MiB of it is accepted. st2's `auth` parameter (handed to
//! `requests`, where a string fails) and file uploads (`file_name`, `file_content`,
//! `file_path`, `file_content_type`) are refused with an error, never ignored.
//!
//! Requests run on this module's own tokio runtime (one thread, built on first use) while the
//! caller's thread waits, looking at its cancel token every 10 ms: a cancel or the timeout drops
//! the request, closing its connection. This file must never block its caller past the
//! timeout or a cancel, and never run anything but the one request.

use std::net::IpAddr;
use std::ops::RangeInclusive;
use std::sync::{mpsc, OnceLock};
use std::time::Duration;

use reqwest::header::{HeaderMap, HeaderName, HeaderValue};
use reqwest::{redirect, Client, Method, Proxy, Url};
use serde::{Deserialize, Serialize};
use serde_json::{json, Map, Value};
use tokio::runtime::Runtime;

use crate::runtime::CancelToken;

/// st2's default for the `timeout` parameter.
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(60);

/// The statuses st2 counts as success (its `range(200, 207)`).
const SUCCESS_STATUSES: RangeInclusive<u16> = 200..=206;

/// The most of a response body kept; a larger one fails the execution rather than fill the
/// store with it.
const MAX_BODY_BYTES: usize = 16 * 1024 * 1024;

/// How often the waiting thread looks at its cancel token.
const POLL: Duration = Duration::from_millis(10);

/// `requests`' limit on redirects followed.
const MAX_REDIRECTS: usize = 30;

/// Parameters st2 declares for file uploads, which squall does not make.
const FILE_PARAMETERS: [&str; 4] = [
    "file_name",
    "file_content",
    "file_path",
    "file_content_type",
];

/// One request, everything decided from the action's parameters: what runs here, or is sent
/// whole to a remote worker.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct HttpRequest {
    pub method: String,
    pub url: String,
    /// In order, names as given; `User-Agent`, `X-Stanley-Action` and `Cookie` included.
    pub headers: Vec<(String, String)>,
    /// Added to the URL's own query string.
    pub query: Vec<(String, String)>,
    pub body: Option<RequestBody>,
    /// Username and password, for HTTP basic authentication.
    pub basic_auth: Option<(String, String)>,
    pub timeout_ms: u64,
    pub allow_redirects: bool,
    pub verify_ssl_cert: bool,
    pub http_proxy: Option<String>,
    pub https_proxy: Option<String>,
}

/// What a request carries.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum RequestBody {
    /// Sent as it is (UTF-8): text, or the JSON st2 encodes.
    Text(String),
    /// An object body without a JSON content type, form-encoded as `requests` encodes it.
    Form(Vec<(String, String)>),
}

/// How a request ended, with the execution's result.
#[derive(Debug, Clone, PartialEq)]
pub enum HttpOutcome {
    /// An answer with a status from 200 to 206.
    Succeeded(Value),
    /// Any other answer (st2's result), or no request made (`{error}`).
    Failed(Value),
    /// No whole answer within the timeout.
    Timeout(Value),
    Canceled(Value),
}

impl HttpRequest {
    /// The request st2's runner would make for `parameters` of the action `action` (its
    /// reference; st2 names only the action in `X-Stanley-Action`). `limit` is the execution's
    /// own timeout, which the request's never exceeds.
    pub fn from_parameters(
        action: &str,
        parameters: &Map<String, Value>,
        limit: Option<Duration>,
    ) -> Result<HttpRequest, String> {
        refuse_unsupported(parameters)?;
        let url = url_of(parameters)?;
        check_hosts(&url, parameters)?;
        let body = parameters.get("body").filter(|b| !b.is_null());
        let method = match parameters.get("method") {
            None | Some(Value::Null) => None,
            Some(Value::String(m)) if m.is_empty() => None,
            Some(Value::String(m)) => Some(m.to_ascii_uppercase()),
            Some(other) => {
                return Err(format!(
                    "the `method` parameter must be a string, got {}",
                    kind(other)
                ))
            }
        };
        let method = method.unwrap_or_else(|| {
            if body.is_some_and(truthy) {
                "POST".into()
            } else {
                "GET".into()
            }
        });
        Method::from_bytes(method.as_bytes())
            .map_err(|_| format!("the `method` parameter {method:?} is not an HTTP method"))?;

        let mut headers = pairs(parameters.get("headers"), "headers")?;
        let cookies = pairs(parameters.get("cookies"), "cookies")?;
        if !cookies.is_empty() {
            // `requests` writes the cookies' header over one given in `headers`.
            headers.retain(|(name, _)| !name.eq_ignore_ascii_case("cookie"));
            let line = cookies
                .iter()
                .map(|(k, v)| format!("{k}={v}"))
                .collect::<Vec<_>>()
                .join("; ");
            headers.push(("Cookie".into(), line));
        }
        let json_content = headers.iter().any(|(name, value)| {
            name.eq_ignore_ascii_case("content-type") && value == "application/json"
        });
        let body = request_body(body, json_content)?;

        let username = text_of(parameters.get("username"), "username")?;
        let password = text_of(parameters.get("password"), "password")?;
        let basic_auth = if username.as_deref().is_some_and(|u| !u.is_empty())
            || password.as_deref().is_some_and(|p| !p.is_empty())
        {
            // `requests` puts the basic credentials over an `Authorization` header given.
            headers.retain(|(name, _)| !name.eq_ignore_ascii_case("authorization"));
            Some((username.unwrap_or_default(), password.unwrap_or_default()))
        } else {
            None
        };
        if !headers
            .iter()
            .any(|(name, _)| name.eq_ignore_ascii_case("user-agent"))
        {
            headers.push((
                "User-Agent".into(),
                concat!("squall/", env!("CARGO_PKG_VERSION")).into(),
            ));
        }
        headers.retain(|(name, _)| !name.eq_ignore_ascii_case("x-stanley-action"));
        let name = action.split_once('.').map_or(action, |(_, name)| name);
        headers.push(("X-Stanley-Action".into(), name.into()));
        for (name, value) in &headers {
            HeaderName::from_bytes(name.as_bytes())
                .map_err(|_| format!("the header name {name:?} is not valid in HTTP"))?;
            HeaderValue::from_str(value)
                .map_err(|_| format!("the value of the header {name:?} is not valid in HTTP"))?;
        }

        let query = pairs(parameters.get("params"), "params")?;
        let timeout = timeout_of(parameters)?;
        let timeout = limit.map_or(timeout, |limit| timeout.min(limit));
        let http_proxy = proxy_of(parameters, "http_proxy")?;
        let https_proxy = proxy_of(parameters, "https_proxy")?;
        Ok(HttpRequest {
            method,
            url: url.to_string(),
            headers,
            query,
            body,
            basic_auth,
            timeout_ms: u64::try_from(timeout.as_millis()).unwrap_or(u64::MAX),
            allow_redirects: flag(parameters, "allow_redirects", false)?,
            verify_ssl_cert: flag(parameters, "verify_ssl_cert", true)?,
            http_proxy,
            https_proxy,
        })
    }

    /// `METHOD URL`, the URL's password hidden: how messages name the request.
    pub fn label(&self) -> String {
        format!("{} {}", self.method, shown_url(&self.url))
    }
}

/// Makes the request and waits for its answer on this thread, ending it at once when `cancel`
/// is set or the timeout passes.
pub fn run_http(request: &HttpRequest, cancel: &CancelToken) -> HttpOutcome {
    let label = request.label();
    let fail = |why: String| HttpOutcome::Failed(json!({ "error": format!("{label}: {why}") }));
    if cancel.is_canceled() {
        return canceled();
    }
    if crate::host::stubs::active() {
        // `squall pack test`: the case's declared responses answer, in order.
        return stubbed(request).unwrap_or_else(fail);
    }
    let runtime = match runtime() {
        Ok(runtime) => runtime,
        Err(why) => return fail(why),
    };
    let client = match client_for(request) {
        Ok(client) => client,
        Err(why) => return fail(why),
    };
    let built = match build(&client, request) {
        Ok(built) => built,
        Err(why) => return fail(why),
    };
    let timeout = Duration::from_millis(request.timeout_ms);
    let (tx, rx) = mpsc::channel();
    let task = runtime.spawn(async move {
        // Dropping the exchange when the time is up closes its connection.
        let outcome = tokio::time::timeout(timeout, exchange(client, built)).await;
        // The receiver is gone when the execution was canceled; the answer is then unwanted.
        let _ = tx.send(outcome);
    });
    loop {
        match rx.recv_timeout(POLL) {
            Ok(Ok(Ok(reply))) => {
                let result = st2_result(reply.status, &reply.headers, &reply.body);
                return if SUCCESS_STATUSES.contains(&reply.status) {
                    HttpOutcome::Succeeded(result)
                } else {
                    HttpOutcome::Failed(result)
                };
            }
            Ok(Ok(Err(failure))) => return fail(failure),
            Ok(Err(_elapsed)) => {
                return HttpOutcome::Timeout(json!({
                    "error": format!("{label}: no answer within the timeout of {} s", seconds(timeout))
                }))
            }
            Err(mpsc::RecvTimeoutError::Timeout) => {
                if cancel.is_canceled() {
                    task.abort();
                    return canceled();
                }
            }
            Err(mpsc::RecvTimeoutError::Disconnected) => {
                return fail("the request ended without an answer".into())
            }
        }
    }
}

/// The declared response to `request` while stubs are active, as a real answer would end.
fn stubbed(request: &HttpRequest) -> Result<HttpOutcome, String> {
    let form;
    let text = match &request.body {
        None => None,
        Some(RequestBody::Text(t)) => Some(t.as_str()),
        Some(RequestBody::Form(pairs)) => {
            form = pairs
                .iter()
                .map(|(k, v)| format!("{k}={v}"))
                .collect::<Vec<_>>()
                .join("&");
            Some(form.as_str())
        }
    };
    let parsed = text
        .filter(|_| {
            request.headers.iter().any(|(n, v)| {
                n.eq_ignore_ascii_case("content-type") && v.starts_with("application/json")
            })
        })
        .and_then(|t| serde_json::from_str::<Value>(t).ok());
    let call = crate::host::stubs::HttpCall {
        method: &request.method,
        url: &request.url,
        query: &request.query,
        headers: &request.headers,
        text: if parsed.is_some() { None } else { text },
        json: parsed.as_ref(),
    };
    let answer = crate::host::stubs::answer_http(&call)?;
    let result = st2_result(answer.status, &answer.headers, &answer.body);
    Ok(if SUCCESS_STATUSES.contains(&answer.status) {
        HttpOutcome::Succeeded(result)
    } else {
        HttpOutcome::Failed(result)
    })
}

/// st2's result for an answer: `body` parsed when it is JSON by its content type.
pub fn st2_result(status: u16, headers: &[(String, String)], body: &[u8]) -> Value {
    let text = String::from_utf8_lossy(body).into_owned();
    // st2 compares the content type before any `;` as it is: no trimming, no lowering.
    let json_type = headers
        .iter()
        .find(|(name, _)| name.eq_ignore_ascii_case("content-type"))
        .is_some_and(|(_, value)| value.split(';').next() == Some("application/json"));
    let (body, parsed) = match json_type.then(|| serde_json::from_str::<Value>(&text)) {
        Some(Ok(value)) => (value, true),
        _ => (Value::String(text), false),
    };
    let headers: Map<String, Value> = headers
        .iter()
        .map(|(name, value)| (name.clone(), Value::String(value.clone())))
        .collect();
    json!({
        "status_code": status,
        "body": body,
        "parsed": parsed,
        "headers": headers,
    })
}

fn canceled() -> HttpOutcome {
    HttpOutcome::Canceled(json!({"error": "execution was canceled"}))
}

fn seconds(d: Duration) -> String {
    let s = d.as_secs_f64();
    if s.fract() == 0.0 {
        format!("{s:.0}")
    } else {
        format!("{s}")
    }
}

// ---------------------------------------------------------------------------------------------
// Reading the parameters.

fn kind(value: &Value) -> &'static str {
    match value {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "an array",
        Value::Object(_) => "an object",
    }
}

/// Python's truth of a value, which st2 tests parameters with.
fn truthy(value: &Value) -> bool {
    match value {
        Value::Null => false,
        Value::Bool(b) => *b,
        Value::Number(n) => n.as_f64().is_some_and(|f| f != 0.0),
        Value::String(s) => !s.is_empty(),
        Value::Array(a) => !a.is_empty(),
        Value::Object(o) => !o.is_empty(),
    }
}

fn refuse_unsupported(parameters: &Map<String, Value>) -> Result<(), String> {
    if parameters.get("auth").is_some_and(truthy) {
        return Err(
            "the `auth` parameter is not supported (st2 hands it to Python's requests, \
             where a string fails): use `username` and `password`, or an `Authorization` header"
                .into(),
        );
    }
    if let Some(name) = FILE_PARAMETERS
        .iter()
        .find(|name| parameters.get(**name).is_some_and(truthy))
    {
        return Err(format!(
            "file uploads are not supported: the `{name}` parameter must be left out"
        ));
    }
    Ok(())
}

fn url_of(parameters: &Map<String, Value>) -> Result<Url, String> {
    let text = match parameters.get("url") {
        Some(Value::String(s)) if !s.trim().is_empty() => s,
        None | Some(Value::Null) | Some(Value::String(_)) => {
            return Err("the `url` parameter is required".into())
        }
        Some(other) => {
            return Err(format!(
                "the `url` parameter must be a string, got {}",
                kind(other)
            ))
        }
    };
    let url = Url::parse(text.trim())
        .map_err(|e| format!("the url {:?} is not a valid URL: {e}", shown_url(text)))?;
    if !matches!(url.scheme(), "http" | "https") {
        return Err(format!(
            "the url {:?} is not an http or https URL",
            shown_url(text)
        ));
    }
    Ok(url)
}

/// st2's `url_hosts_blacklist` and `url_hosts_whitelist`: the URL's host (no port, no
/// brackets) must not be in the first, and must be in the second when it is given. Addresses
/// are compared as addresses, so `::1` matches `0:0::1`.
fn check_hosts(url: &Url, parameters: &Map<String, Value>) -> Result<(), String> {
    let black = host_list(parameters, "url_hosts_blacklist")?;
    let white = host_list(parameters, "url_hosts_whitelist")?;
    if !black.is_empty() && !white.is_empty() {
        return Err("\"url_hosts_blacklist\" and \"url_hosts_whitelist\" parameters are mutually exclusive. Only one should be provided.".into());
    }
    let host = url
        .host_str()
        .unwrap_or_default()
        .trim_start_matches('[')
        .trim_end_matches(']')
        .to_ascii_lowercase();
    let same = |entry: &String| {
        let entry = entry
            .trim()
            .trim_start_matches('[')
            .trim_end_matches(']')
            .to_ascii_lowercase();
        match (host.parse::<IpAddr>(), entry.parse::<IpAddr>()) {
            (Ok(a), Ok(b)) => a == b,
            _ => entry == host,
        }
    };
    let shown = shown_url(url.as_str());
    if black.iter().any(same) {
        return Err(format!("URL \"{shown}\" is blacklisted"));
    }
    if !white.is_empty() && !white.iter().any(same) {
        return Err(format!("URL \"{shown}\" is not whitelisted"));
    }
    Ok(())
}

fn host_list(parameters: &Map<String, Value>, name: &str) -> Result<Vec<String>, String> {
    match parameters.get(name) {
        None | Some(Value::Null) => Ok(Vec::new()),
        Some(Value::Array(items)) => items
            .iter()
            .map(|item| match item {
                Value::String(s) => Ok(s.clone()),
                other => Err(format!(
                    "the `{name}` parameter must list host names, got {}",
                    kind(other)
                )),
            })
            .collect(),
        Some(other) => Err(format!(
            "the `{name}` parameter must be an array of host names, got {}",
            kind(other)
        )),
    }
}

/// A scalar as Python's `str()` writes it, which is how `requests` sends query values, form
/// fields and cookies.
fn scalar_text(value: &Value, what: &str) -> Result<String, String> {
    match value {
        Value::String(s) => Ok(s.clone()),
        Value::Bool(_) | Value::Number(_) => Ok(squall_yaql::python_str(value)),
        other => Err(format!(
            "{what} must be a string or a number, got {}",
            kind(other)
        )),
    }
}

/// An object parameter's entries as text pairs: `null` values left out (as `requests` leaves
/// them out) and a list's items each sent under its key.
fn pairs(value: Option<&Value>, name: &str) -> Result<Vec<(String, String)>, String> {
    let map = match value {
        None | Some(Value::Null) => return Ok(Vec::new()),
        Some(Value::Object(map)) => map,
        Some(other) => {
            return Err(format!(
                "the `{name}` parameter must be an object, got {}",
                kind(other)
            ))
        }
    };
    let mut out = Vec::new();
    for (key, value) in map {
        let what = format!("`{name}.{key}`");
        match value {
            Value::Null => {}
            Value::Array(items) => {
                for item in items.iter().filter(|i| !i.is_null()) {
                    out.push((key.clone(), scalar_text(item, &what)?));
                }
            }
            other => out.push((key.clone(), scalar_text(other, &what)?)),
        }
    }
    Ok(out)
}

fn text_of(value: Option<&Value>, name: &str) -> Result<Option<String>, String> {
    match value {
        None | Some(Value::Null) => Ok(None),
        Some(other) => scalar_text(other, &format!("the `{name}` parameter")).map(Some),
    }
}

fn flag(parameters: &Map<String, Value>, name: &str, default: bool) -> Result<bool, String> {
    match parameters.get(name) {
        None | Some(Value::Null) => Ok(default),
        Some(Value::Bool(b)) => Ok(*b),
        Some(other) => Err(format!(
            "the `{name}` parameter must be a boolean, got {}",
            kind(other)
        )),
    }
}

/// st2's `float(timeout)`: a number of seconds, or text that is one.
fn timeout_of(parameters: &Map<String, Value>) -> Result<Duration, String> {
    let seconds = match parameters.get("timeout") {
        None | Some(Value::Null) => return Ok(DEFAULT_TIMEOUT),
        Some(Value::Number(n)) => n.as_f64(),
        Some(Value::String(s)) => s.trim().parse::<f64>().ok(),
        Some(_) => None,
    };
    seconds
        .filter(|s| *s > 0.0)
        .and_then(|s| Duration::try_from_secs_f64(s).ok())
        .ok_or_else(|| {
            format!(
                "the `timeout` parameter must be a positive number of seconds, got {}",
                parameters
                    .get("timeout")
                    .map(Value::to_string)
                    .unwrap_or_default()
            )
        })
}

fn proxy_of(parameters: &Map<String, Value>, name: &str) -> Result<Option<String>, String> {
    match parameters.get(name) {
        None | Some(Value::Null) => Ok(None),
        Some(Value::String(s)) if s.trim().is_empty() => Ok(None),
        Some(Value::String(s)) => {
            Proxy::all(s.trim())
                .map_err(|e| format!("the `{name}` parameter is not a proxy URL: {e}"))?;
            Ok(Some(s.trim().to_string()))
        }
        Some(other) => Err(format!(
            "the `{name}` parameter must be a URL, got {}",
            kind(other)
        )),
    }
}

/// The body as st2 sends it (see the module's comment).
fn request_body(body: Option<&Value>, json_content: bool) -> Result<Option<RequestBody>, String> {
    if json_content {
        let value = match body {
            None => Value::Null,
            Some(Value::String(text)) => match serde_json::from_str::<Value>(text) {
                Ok(value) => value,
                Err(_) => crate::pyliteral::literal_eval(text).map_err(|why| {
                    format!("the body is sent as JSON (Content-Type: application/json) but is neither JSON nor a Python literal: {why}")
                })?,
            },
            Some(other) => other.clone(),
        };
        let text = serde_json::to_string(&value)
            .map_err(|e| format!("the body cannot be written as JSON: {e}"))?;
        return Ok(Some(RequestBody::Text(text)));
    }
    match body {
        None => Ok(None),
        Some(Value::String(text)) => Ok(Some(RequestBody::Text(text.clone()))),
        Some(Value::Object(_)) => Ok(Some(RequestBody::Form(pairs(body, "body")?))),
        Some(value @ (Value::Bool(_) | Value::Number(_))) => {
            Ok(Some(RequestBody::Text(squall_yaql::python_str(value))))
        }
        Some(other) => Err(format!(
            "the body is {}: send it as JSON with the header Content-Type: application/json",
            kind(other)
        )),
    }
}

/// The URL with its password, if any, hidden.
fn shown_url(text: &str) -> String {
    match Url::parse(text) {
        Ok(mut url) if url.password().is_some() => {
            let _ = url.set_password(Some("********"));
            url.to_string()
        }
        _ => text.to_string(),
    }
}

// ---------------------------------------------------------------------------------------------
// Making the request.

/// The module's runtime, never dropped: it outlives every request.
fn runtime() -> Result<&'static Runtime, String> {
    static RUNTIME: OnceLock<Result<Runtime, String>> = OnceLock::new();
    RUNTIME
        .get_or_init(|| {
            tokio::runtime::Builder::new_multi_thread()
                .worker_threads(1)
                .thread_name("squall-http-runner")
                .enable_io()
                .enable_time()
                .build()
                .map_err(|e| e.to_string())
        })
        .as_ref()
        .map_err(|e| format!("cannot start the HTTP client's runtime: {e}"))
}

/// A client for the request's redirect and certificate settings: one each, kept for the
/// process (their connection pools), except with a proxy, which gets its own.
fn client_for(request: &HttpRequest) -> Result<Client, String> {
    if request.http_proxy.is_some() || request.https_proxy.is_some() {
        return new_client(request);
    }
    static CLIENTS: [OnceLock<Result<Client, String>>; 4] = [
        OnceLock::new(),
        OnceLock::new(),
        OnceLock::new(),
        OnceLock::new(),
    ];
    let slot = usize::from(request.allow_redirects) * 2 + usize::from(request.verify_ssl_cert);
    CLIENTS[slot].get_or_init(|| new_client(request)).clone()
}

fn new_client(request: &HttpRequest) -> Result<Client, String> {
    let policy = if request.allow_redirects {
        redirect::Policy::limited(MAX_REDIRECTS)
    } else {
        redirect::Policy::none()
    };
    let mut builder = Client::builder()
        .redirect(policy)
        .danger_accept_invalid_certs(!request.verify_ssl_cert)
        // As `requests` writes its own headers; servers compare names without case anyway.
        .http1_title_case_headers();
    if let Some(proxy) = &request.http_proxy {
        builder = builder
            .proxy(Proxy::http(proxy).map_err(|e| format!("the http_proxy {proxy:?}: {e}"))?);
    }
    if let Some(proxy) = &request.https_proxy {
        builder = builder
            .proxy(Proxy::https(proxy).map_err(|e| format!("the https_proxy {proxy:?}: {e}"))?);
    }
    builder
        .build()
        .map_err(|e| format!("cannot create the HTTP client: {}", error_chain(&e)))
}

fn build(client: &Client, request: &HttpRequest) -> Result<reqwest::Request, String> {
    let method = Method::from_bytes(request.method.as_bytes())
        .map_err(|_| format!("{:?} is not an HTTP method", request.method))?;
    let url = Url::parse(&request.url).map_err(|e| format!("not a valid URL: {e}"))?;
    let mut headers = HeaderMap::new();
    for (name, value) in &request.headers {
        let name = HeaderName::from_bytes(name.as_bytes())
            .map_err(|_| format!("the header name {name:?} is not valid in HTTP"))?;
        let value = HeaderValue::from_str(value)
            .map_err(|_| format!("the value of the header {name} is not valid in HTTP"))?;
        headers.append(name, value);
    }
    let mut builder = client.request(method, url).headers(headers);
    if !request.query.is_empty() {
        builder = builder.query(&request.query);
    }
    if let Some((username, password)) = &request.basic_auth {
        builder = builder.basic_auth(username, Some(password));
    }
    builder = match &request.body {
        Some(RequestBody::Text(text)) => builder.body(text.clone()),
        Some(RequestBody::Form(fields)) => builder.form(fields),
        None => builder,
    };
    builder
        .build()
        .map_err(|e| format!("cannot build the request: {}", error_chain(&e)))
}

struct Reply {
    status: u16,
    headers: Vec<(String, String)>,
    body: Vec<u8>,
}

async fn exchange(client: Client, request: reqwest::Request) -> Result<Reply, String> {
    let mut response = client
        .execute(request)
        .await
        .map_err(|e| error_chain(&e.without_url()))?;
    let status = response.status().as_u16();
    let mut headers: Vec<(String, String)> = Vec::new();
    for (name, value) in response.headers() {
        let name = title_case(name.as_str());
        let value = String::from_utf8_lossy(value.as_bytes()).into_owned();
        // Python's `dict(resp.headers)` joins a repeated header's values with ", ".
        match headers.iter_mut().find(|(n, _)| *n == name) {
            Some((_, existing)) => {
                existing.push_str(", ");
                existing.push_str(&value);
            }
            None => headers.push((name, value)),
        }
    }
    let mut body = Vec::new();
    while let Some(chunk) = response.chunk().await.map_err(|e| {
        format!(
            "reading the answer failed: {}",
            error_chain(&e.without_url())
        )
    })? {
        if body.len() + chunk.len() > MAX_BODY_BYTES {
            return Err(format!(
                "the answer's body is larger than {} MiB, the most squall keeps",
                MAX_BODY_BYTES / (1024 * 1024)
            ));
        }
        body.extend_from_slice(&chunk);
    }
    Ok(Reply {
        status,
        headers,
        body,
    })
}

/// `content-type` as `Content-Type`.
fn title_case(name: &str) -> String {
    name.split('-')
        .map(|word| {
            let mut chars = word.chars();
            match chars.next() {
                Some(first) => first.to_ascii_uppercase().to_string() + chars.as_str(),
                None => String::new(),
            }
        })
        .collect::<Vec<_>>()
        .join("-")
}

/// An error and its causes ("connection refused" is a cause, not the error itself).
fn error_chain(error: &dyn std::error::Error) -> String {
    let mut text = error.to_string();
    let mut source = error.source();
    while let Some(cause) = source {
        let cause_text = cause.to_string();
        if !text.contains(&cause_text) {
            text.push_str(": ");
            text.push_str(&cause_text);
        }
        source = cause.source();
    }
    text
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::{Read, Write};
    use std::net::TcpListener;
    use std::time::Instant;

    fn params(value: Value) -> Map<String, Value> {
        match value {
            Value::Object(map) => map,
            other => panic!("parameters must be an object, got {other}"),
        }
    }

    fn plan(value: Value) -> HttpRequest {
        HttpRequest::from_parameters("core.http", &params(value), None).expect("a request")
    }

    fn refusal(value: Value) -> String {
        match HttpRequest::from_parameters("core.http", &params(value), None) {
            Ok(request) => panic!("expected a refusal, got {request:?}"),
            Err(why) => why,
        }
    }

    fn header<'a>(request: &'a HttpRequest, name: &str) -> Vec<&'a str> {
        request
            .headers
            .iter()
            .filter(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
            .collect()
    }

    #[test]
    fn the_method_is_post_with_a_body_and_get_without_as_in_st2() {
        assert_eq!(plan(json!({"url": "http://127.0.0.1/"})).method, "GET");
        assert_eq!(
            plan(json!({"url": "http://127.0.0.1/", "body": ""})).method,
            "GET"
        );
        assert_eq!(
            plan(json!({"url": "http://127.0.0.1/", "body": "x"})).method,
            "POST"
        );
        assert_eq!(
            plan(json!({"url": "http://127.0.0.1/", "method": "patch", "body": "x"})).method,
            "PATCH"
        );
        assert_eq!(
            plan(json!({"url": "http://127.0.0.1/", "method": "PURGE"})).method,
            "PURGE"
        );
        assert!(
            refusal(json!({"url": "http://127.0.0.1/", "method": "GE T"}))
                .contains("not an HTTP method")
        );
    }

    #[test]
    fn a_json_content_type_sends_the_body_as_compact_json() {
        let json_headers = json!({"Content-Type": "application/json"});
        let sent = |body: Value| {
            let mut p = json!({"url": "http://127.0.0.1/", "headers": json_headers});
            if !body.is_null() {
                p["body"] = body;
            }
            plan(p).body
        };
        let text = |t: &str| Some(RequestBody::Text(t.into()));
        assert_eq!(
            sent(json!("{\"a\": 1, \"b\": [true]}")),
            text("{\"a\":1,\"b\":[true]}")
        );
        // An object given to the string parameter arrives as its Python repr.
        assert_eq!(
            sent(json!(
                "{'a': True, 'b': None, 'c': 'it\\'s', 'd': (1, -2.5)}"
            )),
            text("{\"a\":true,\"b\":null,\"c\":\"it's\",\"d\":[1,-2.5]}")
        );
        assert_eq!(sent(json!({"k": "v"})), text("{\"k\":\"v\"}"));
        // st2 encodes a missing body too.
        assert_eq!(sent(Value::Null), text("null"));
        let why =
            refusal(json!({"url": "http://127.0.0.1/", "headers": json_headers, "body": "a=1"}));
        assert!(why.contains("neither JSON nor a Python literal"), "{why}");
    }

    #[test]
    fn only_the_exact_json_content_type_makes_the_body_json() {
        let p = plan(json!({
            "url": "http://127.0.0.1/",
            "headers": {"content-type": "application/json; charset=utf-8"},
            "body": "{'a': 1}",
        }));
        assert_eq!(p.body, Some(RequestBody::Text("{'a': 1}".into())));
    }

    #[test]
    fn an_object_body_without_json_is_form_encoded_as_requests_does() {
        let p = plan(json!({
            "url": "http://127.0.0.1/",
            "body": {"name": "web", "tags": ["a", "b"], "on": true, "gone": null},
        }));
        assert_eq!(
            p.body,
            Some(RequestBody::Form(vec![
                ("name".into(), "web".into()),
                ("tags".into(), "a".into()),
                ("tags".into(), "b".into()),
                ("on".into(), "True".into()),
            ]))
        );
        assert_eq!(p.method, "POST");
        assert!(refusal(json!({"url": "http://127.0.0.1/", "body": [1, 2]}))
            .contains("Content-Type: application/json"));
    }

    #[test]
    fn query_cookies_agent_and_action_headers() {
        let p = plan(json!({
            "url": "http://127.0.0.1/x?a=0",
            "params": {"a": 1, "b": ["x", "y"], "c": null, "d": 1.5},
            "cookies": {"session": "s1", "n": 2},
            "headers": {"Cookie": "old=1", "X-Stanley-Action": "spoofed", "Accept": "text/plain"},
        }));
        assert_eq!(
            p.query,
            vec![
                ("a".to_string(), "1".to_string()),
                ("b".into(), "x".into()),
                ("b".into(), "y".into()),
                ("d".into(), "1.5".into()),
            ]
        );
        assert_eq!(header(&p, "cookie"), ["session=s1; n=2"]);
        assert_eq!(header(&p, "x-stanley-action"), ["http"]);
        assert_eq!(header(&p, "accept"), ["text/plain"]);
        assert_eq!(
            header(&p, "user-agent"),
            [concat!("squall/", env!("CARGO_PKG_VERSION"))]
        );
        let own = plan(json!({"url": "http://127.0.0.1/", "headers": {"user-agent": "probe/1"}}));
        assert_eq!(header(&own, "user-agent"), ["probe/1"]);
    }

    #[test]
    fn username_and_password_are_basic_auth_over_an_authorization_header() {
        let p = plan(json!({
            "url": "http://127.0.0.1/",
            "username": "ops",
            "password": "hunter2",
            "headers": {"Authorization": "Bearer x"},
        }));
        assert_eq!(p.basic_auth, Some(("ops".into(), "hunter2".into())));
        assert!(header(&p, "authorization").is_empty());
        let none = plan(json!({"url": "http://127.0.0.1/", "username": "", "password": null}));
        assert_eq!(none.basic_auth, None);
    }

    #[test]
    fn redirects_certificates_proxies_and_timeout_take_st2s_defaults() {
        let p = plan(json!({"url": "https://127.0.0.1/"}));
        assert!(!p.allow_redirects);
        assert!(p.verify_ssl_cert);
        assert_eq!(p.timeout_ms, 60_000);
        assert_eq!((p.http_proxy, p.https_proxy), (None, None));
        let p = plan(json!({
            "url": "https://127.0.0.1/",
            "allow_redirects": true,
            "verify_ssl_cert": false,
            "timeout": 2.5,
            "https_proxy": "http://127.0.0.1:3128",
        }));
        assert!(p.allow_redirects);
        assert!(!p.verify_ssl_cert);
        assert_eq!(p.timeout_ms, 2_500);
        assert_eq!(p.https_proxy.as_deref(), Some("http://127.0.0.1:3128"));
        let limited = HttpRequest::from_parameters(
            "core.http",
            &params(json!({"url": "http://127.0.0.1/", "timeout": 30})),
            Some(Duration::from_secs(3)),
        )
        .expect("a request");
        assert_eq!(limited.timeout_ms, 3_000);
        assert!(refusal(json!({"url": "http://127.0.0.1/", "timeout": 0}))
            .contains("positive number of seconds"));
    }

    #[test]
    fn what_squall_does_not_do_is_refused_not_ignored() {
        let url = "http://127.0.0.1/";
        assert!(refusal(json!({"url": url, "auth": "x-auth-token=XYZ"})).contains("`auth`"));
        for name in FILE_PARAMETERS {
            let why = refusal(json!({"url": url, name: "report.txt"}));
            assert!(why.contains("file uploads are not supported"), "{why}");
            assert!(why.contains(name), "{why}");
        }
        // st2's defaults for them (empty) are not uses.
        plan(json!({"url": url, "auth": {}, "file_name": ""}));
        assert!(refusal(json!({"url": "ftp://127.0.0.1/x"})).contains("not an http or https URL"));
        assert!(refusal(json!({"method": "GET"})).contains("`url` parameter is required"));
    }

    #[test]
    fn host_lists_follow_st2s_tests() {
        let black = json!([
            "example.com",
            "127.0.0.1",
            "::1",
            "2001:0db8:85a3:0000:0000:8a2e:0370:7334"
        ]);
        for url in [
            "https://example.com",
            "http://example.com:81",
            "http://[::1]:80/",
            "http://[::1]",
            "https://[2001:0db8:85a3:0000:0000:8a2e:0370:7334]:8000",
            "http://user:pw@127.0.0.1:9/",
        ] {
            let why = refusal(json!({"url": url, "url_hosts_blacklist": black}));
            assert!(why.ends_with("\" is blacklisted"), "{url}: {why}");
            assert!(!why.contains("pw@"), "the password is hidden: {why}");
        }
        for url in [
            "https://example2.com",
            "http://example4.com:81",
            "http://127.0.0.2/",
        ] {
            plan(json!({"url": url, "url_hosts_blacklist": black}));
            let why = refusal(json!({"url": url, "url_hosts_whitelist": black}));
            assert!(why.ends_with("\" is not whitelisted"), "{url}: {why}");
        }
        plan(json!({"url": "http://[::1]:9000", "url_hosts_whitelist": black}));
        let why = refusal(
            json!({"url": "http://a/", "url_hosts_blacklist": ["b"], "url_hosts_whitelist": ["a"]}),
        );
        assert!(why.contains("mutually exclusive"), "{why}");
    }

    #[test]
    fn python_literals_read_back_what_python_repr_wrote() {
        let values = [
            json!({"name": "it's \"quoted\"", "n": -3, "f": 0.0001, "big": 1e20, "list": [1, [2, {}]], "t": true, "none": null}),
            json!([
                "tab\there",
                "line\nbreak",
                "back\\slash",
                "ctrl\u{1}",
                "ünïcödé"
            ]),
            json!(i64::MIN),
            json!(-1.5e-7),
        ];
        for value in values {
            let text = squall_yaql::python_repr(&value);
            assert_eq!(crate::pyliteral::literal_eval(&text), Ok(value), "{text}");
        }
        assert_eq!(crate::pyliteral::literal_eval("(1,)"), Ok(json!([1])));
        assert_eq!(
            crate::pyliteral::literal_eval("18446744073709551615"),
            Ok(json!(u64::MAX))
        );
        assert_eq!(crate::pyliteral::literal_eval("u'x'"), Ok(json!("x")));
        assert!(crate::pyliteral::literal_eval("{1: 'a'}").is_err());
        assert!(crate::pyliteral::literal_eval("[1, 2").is_err());
        assert!(crate::pyliteral::literal_eval("os.system('x')").is_err());
        assert!(crate::pyliteral::literal_eval("1 2").is_err());
    }

    #[test]
    fn the_body_is_parsed_only_for_a_json_content_type_as_in_st2() {
        let with = |ct: &str, body: &str| {
            st2_result(200, &[("Content-Type".into(), ct.into())], body.as_bytes())
        };
        let r = with("text/html", "foo bar ponies");
        assert_eq!(r["body"], json!("foo bar ponies"));
        assert_eq!(r["parsed"], json!(false));
        assert_eq!(
            with("text/html", "{\"test1\": \"val1\"}")["body"],
            json!("{\"test1\": \"val1\"}")
        );
        let r = with("application/json", "{\"test1\": \"val1\"}");
        assert_eq!(r["body"], json!({"test1": "val1"}));
        assert_eq!(r["parsed"], json!(true));
        assert_eq!(
            with("application/json; charset=UTF-8", "{\"test1\": \"val1\"}")["body"],
            json!({"test1": "val1"})
        );
        let r = with("application/json", "not json");
        assert_eq!(
            (r["body"].clone(), r["parsed"].clone()),
            (json!("not json"), json!(false))
        );
        assert_eq!(with("application/json", "")["body"], json!(""));
        assert_eq!(
            with("application/vnd.api+json", "{}")["parsed"],
            json!(false)
        );
        let r = st2_result(404, &[], b"");
        assert_eq!(
            r,
            json!({"status_code": 404, "body": "", "parsed": false, "headers": {}})
        );
        let shaped = with("text/plain", "x");
        let keys: Vec<&String> = shaped.as_object().expect("object").keys().collect();
        assert_eq!(keys, ["status_code", "body", "parsed", "headers"]);
    }

    #[test]
    fn header_names_are_title_case() {
        assert_eq!(title_case("content-type"), "Content-Type");
        assert_eq!(title_case("x-request-id"), "X-Request-Id");
        assert_eq!(title_case("server"), "Server");
    }

    /// A server on 127.0.0.1 that reads one request and answers `answer` (never, for `None`),
    /// then reports when the client closed the connection. Returns the URL, the request's
    /// text, and the close.
    fn one_exchange(
        answer: Option<&'static str>,
    ) -> (String, mpsc::Receiver<String>, mpsc::Receiver<()>) {
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind");
        let url = format!("http://{}/probe", listener.local_addr().expect("address"));
        let (seen_tx, seen) = mpsc::channel();
        let (closed_tx, closed) = mpsc::channel();
        std::thread::spawn(move || {
            let Ok((mut stream, _)) = listener.accept() else {
                return;
            };
            let mut text = Vec::new();
            let mut buf = [0u8; 4096];
            while !text.windows(4).any(|w| w == b"\r\n\r\n") {
                match stream.read(&mut buf) {
                    Ok(0) | Err(_) => return,
                    Ok(n) => text.extend_from_slice(&buf[..n]),
                }
            }
            let _ = seen_tx.send(String::from_utf8_lossy(&text).into_owned());
            if let Some(answer) = answer {
                let _ = stream.write_all(answer.as_bytes());
            }
            // Blocks until the client closes its end.
            loop {
                match stream.read(&mut buf) {
                    Ok(0) | Err(_) => break,
                    Ok(_) => {}
                }
            }
            let _ = closed_tx.send(());
        });
        (url, seen, closed)
    }

    #[test]
    fn a_404_fails_with_st2s_result() {
        let (url, seen, _closed) = one_exchange(Some(
            "HTTP/1.1 404 Not Found\r\ncontent-type: application/json\r\nx-trace: a\r\nx-trace: b\r\ncontent-length: 19\r\n\r\n{\"error\": \"absent\"}",
        ));
        let request = plan(json!({"url": url, "params": {"q": "a b"}}));
        let outcome = run_http(&request, &CancelToken::new());
        let HttpOutcome::Failed(result) = outcome else {
            panic!("a 404 fails: {outcome:?}");
        };
        assert_eq!(result["status_code"], json!(404));
        assert_eq!(result["body"], json!({"error": "absent"}));
        assert_eq!(result["parsed"], json!(true));
        assert_eq!(result["headers"]["X-Trace"], json!("a, b"));
        let text = seen
            .recv_timeout(Duration::from_secs(10))
            .expect("the request");
        assert!(text.starts_with("GET /probe?q=a+b HTTP/1.1\r\n"), "{text}");
        assert!(text.contains("X-Stanley-Action: http\r\n"), "{text}");
    }

    #[test]
    fn an_http_proxy_gets_the_request() {
        let (proxy, seen, _closed) = one_exchange(Some(
            "HTTP/1.1 200 OK\r\ncontent-type: text/plain\r\ncontent-length: 7\r\n\r\nproxied",
        ));
        let proxy = proxy.trim_end_matches("/probe").to_string();
        let request = plan(json!({"url": "http://127.0.0.1:9/target", "http_proxy": proxy}));
        let outcome = run_http(&request, &CancelToken::new());
        let HttpOutcome::Succeeded(result) = outcome else {
            panic!("the proxy answered 200: {outcome:?}");
        };
        assert_eq!(result["body"], json!("proxied"));
        let text = seen
            .recv_timeout(Duration::from_secs(10))
            .expect("the request");
        assert!(
            text.starts_with("GET http://127.0.0.1:9/target HTTP/1.1\r\n"),
            "{text}"
        );
    }

    #[test]
    fn the_timeout_ends_the_request_in_flight() {
        let (url, seen, closed) = one_exchange(None);
        let request = plan(json!({"url": url, "timeout": 0.3}));
        let started = Instant::now();
        let outcome = run_http(&request, &CancelToken::new());
        let HttpOutcome::Timeout(result) = outcome else {
            panic!("expected a timeout: {outcome:?}");
        };
        assert!(started.elapsed() >= Duration::from_millis(300));
        assert!(
            result["error"]
                .as_str()
                .unwrap_or_default()
                .contains("no answer within the timeout of 0.3 s"),
            "{result}"
        );
        seen.recv_timeout(Duration::from_secs(10))
            .expect("the request arrived");
        closed
            .recv_timeout(Duration::from_secs(10))
            .expect("the connection is closed once the time is up");
    }

    #[test]
    fn a_cancel_ends_the_request_in_flight() {
        let (url, seen, closed) = one_exchange(None);
        let request = plan(json!({"url": url, "timeout": 120}));
        let cancel = CancelToken::new();
        let canceler = cancel.clone();
        let waiter = std::thread::spawn(move || {
            seen.recv_timeout(Duration::from_secs(10))
                .expect("the request arrived");
            canceler.cancel();
        });
        let started = Instant::now();
        let outcome = run_http(&request, &cancel);
        assert_eq!(
            outcome,
            HttpOutcome::Canceled(json!({"error": "execution was canceled"}))
        );
        assert!(started.elapsed() < Duration::from_secs(60));
        waiter.join().expect("the canceling thread");
        closed
            .recv_timeout(Duration::from_secs(10))
            .expect("the connection is closed at the cancel");
    }

    #[test]
    fn a_refused_connection_fails_naming_the_request() {
        let port = TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .expect("a free port")
            .port();
        let request = plan(json!({"url": format!("http://127.0.0.1:{port}/x")}));
        let HttpOutcome::Failed(result) = run_http(&request, &CancelToken::new()) else {
            panic!("a refused connection fails");
        };
        let error = result["error"].as_str().unwrap_or_default();
        assert!(
            error.starts_with(&format!("GET http://127.0.0.1:{port}/x: ")),
            "{error}"
        );
        assert!(
            error.to_lowercase().contains("connection refused"),
            "{error}"
        );
    }
}
