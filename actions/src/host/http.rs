//! The `http` host module: `http::get`, `http::post`, `http::put`, `http::patch`,
//! `http::delete` and `http::request(method, url, options)`, over one shared blocking client.
//!
//! Options (a map): `headers` (map), `body` (string, or map/array sent as JSON), `json`
//! (map/array sent as JSON), `query` (map), `timeout` (seconds). The result is
//! `#{status, headers, body, json}`; `json` is the parsed body when it parses, else `()`.
//! Non-2xx statuses are returned, not thrown; connection errors and timeouts throw with the URL.
//!
//! A request never outlives its run: its timeout (30 s by default) is cut to the time the
//! execution has left, and it is waited for on a helper thread so that a cancel ends the script
//! at once (the abandoned request then ends on its own, within its timeout). A response body
//! larger than the script's string limit is refused, not buffered. Inside
//! [`super::stubs::with_stubs`] (`squall pack test`) a request is answered from the responses
//! the test case declares, and never sent.

use std::io::Read;
use std::sync::{mpsc, OnceLock};
use std::time::{Duration, Instant};

use reqwest::blocking::{Client, RequestBuilder};
use reqwest::Method;
use rhai::{Dynamic, EvalAltResult, ImmutableString, Map, Module, NativeCallContext, FLOAT, INT};
use serde_json::Value;

use super::{convert, located, max_string_size, run_bounds, script_error, stop_error, stubs, Stop};

type Result<T> = std::result::Result<T, Box<EvalAltResult>>;

const DEFAULT_TIMEOUT: Duration = Duration::from_secs(30);
/// How often a script waiting on a response looks at its cancel token.
const POLL: Duration = Duration::from_millis(10);
const OPTIONS: &str = "headers, body, json, query, timeout";

pub(super) fn module() -> Module {
    let mut module = Module::new();
    add_fn!(&mut module, "get", |c: NativeCallContext, url: &str| {
        located(&c, request("GET", url, None, None))
    });
    add_fn!(
        &mut module,
        "get",
        |c: NativeCallContext, url: &str, options: Map| {
            located(&c, request("GET", url, None, Some(options)))
        }
    );
    add_fn!(&mut module, "delete", |c: NativeCallContext, url: &str| {
        located(&c, request("DELETE", url, None, None))
    });
    add_fn!(
        &mut module,
        "delete",
        |c: NativeCallContext, url: &str, options: Map| {
            located(&c, request("DELETE", url, None, Some(options)))
        }
    );
    for method in ["POST", "PUT", "PATCH"] {
        let name = method.to_ascii_lowercase();
        add_fn!(
            &mut module,
            &name,
            move |c: NativeCallContext, url: &str, body: Dynamic| {
                located(&c, request(method, url, Some(body), None))
            }
        );
        add_fn!(
            &mut module,
            &name,
            move |c: NativeCallContext, url: &str, body: Dynamic, options: Map| {
                located(&c, request(method, url, Some(body), Some(options)))
            }
        );
    }
    add_fn!(
        &mut module,
        "request",
        |c: NativeCallContext, method: &str, url: &str| {
            located(&c, request(method, url, None, None))
        }
    );
    add_fn!(
        &mut module,
        "request",
        |c: NativeCallContext, method: &str, url: &str, options: Map| {
            located(&c, request(method, url, None, Some(options)))
        }
    );
    module
}

/// The one client of the process: it holds the connection pool, and dropping a blocking
/// client inside an async runtime panics, so it is never dropped.
fn client() -> Result<Client> {
    static CLIENT: OnceLock<std::result::Result<Client, String>> = OnceLock::new();
    CLIENT
        .get_or_init(|| {
            Client::builder()
                .user_agent(concat!("squall/", env!("CARGO_PKG_VERSION")))
                .build()
                .map_err(|e| e.to_string())
        })
        .clone()
        .map_err(|e| script_error(format!("http: cannot create the HTTP client: {e}")))
}

enum Body {
    Text(String),
    Json(Value),
}

#[derive(Default)]
struct Options {
    headers: Vec<(String, String)>,
    body: Option<Body>,
    query: Vec<(String, String)>,
    timeout: Option<Duration>,
}

fn body_of(value: &Dynamic, what: &str) -> Result<Option<Body>> {
    if value.is_unit() {
        return Ok(None);
    }
    if let Ok(text) = value.as_immutable_string_ref() {
        return Ok(Some(Body::Text(text.to_string())));
    }
    let json = convert::to_json(value).map_err(|e| script_error(format!("http: {what}: {e}")))?;
    Ok(Some(match json {
        Value::Array(_) | Value::Object(_) => Body::Json(json),
        other => Body::Text(other.to_string()),
    }))
}

fn text_pairs(value: &Dynamic, what: &str) -> Result<Vec<(String, String)>> {
    let map = value.as_map_ref().map_err(|_| {
        script_error(format!(
            "http: option '{what}' must be a map, got {}",
            value.type_name()
        ))
    })?;
    Ok(map
        .iter()
        .map(|(k, v)| (k.to_string(), convert::to_message(v)))
        .collect())
}

fn parse_options(body: Option<Dynamic>, options: Option<Map>) -> Result<Options> {
    let mut parsed = Options::default();
    if let Some(body) = body {
        parsed.body = body_of(&body, "body")?;
    }
    for (key, value) in options.unwrap_or_default() {
        match key.as_str() {
            "headers" => parsed.headers = text_pairs(&value, "headers")?,
            "query" => parsed.query = text_pairs(&value, "query")?,
            "body" => parsed.body = body_of(&value, "body")?,
            "json" => {
                let json = convert::to_json(&value)
                    .map_err(|e| script_error(format!("http: json: {e}")))?;
                parsed.body = Some(Body::Json(json));
            }
            "timeout" => {
                let seconds = value
                    .as_float()
                    .or_else(|_| value.as_int().map(|i| i as FLOAT))
                    .map_err(|_| {
                        script_error(format!(
                            "http: option 'timeout' must be a number of seconds, got {}",
                            value.type_name()
                        ))
                    })?;
                let timeout = Duration::try_from_secs_f64(seconds)
                    .ok()
                    .filter(|t| !t.is_zero())
                    .ok_or_else(|| script_error(format!("http: option 'timeout' must be a positive number of seconds, got {seconds}")))?;
                parsed.timeout = Some(timeout);
            }
            other => {
                return Err(script_error(format!(
                    "http: unknown option '{other}' (known: {OPTIONS})"
                )))
            }
        }
    }
    Ok(parsed)
}

struct Reply {
    status: u16,
    headers: Vec<(String, String)>,
    body: Vec<u8>,
}

fn request(
    method: &str,
    url: &str,
    body: Option<Dynamic>,
    options: Option<Map>,
) -> Result<Dynamic> {
    let method_name = method.to_ascii_uppercase();
    let method = Method::from_bytes(method_name.as_bytes())
        .map_err(|_| script_error(format!("http: '{method}' is not an HTTP method")))?;
    let options = parse_options(body, options)?;
    if stubs::active() {
        return stubbed(&method_name, url, &options);
    }
    let (deadline, cancel) = run_bounds()?;
    let limit = max_string_size()?;
    let left = deadline.saturating_duration_since(Instant::now());
    if left.is_zero() {
        return Err(stop_error(Stop::Timeout));
    }
    let wanted = options.timeout.unwrap_or(DEFAULT_TIMEOUT);
    let timeout = wanted.min(left);
    let cut_by_deadline = timeout < wanted;
    let builder = build(client()?, method, url, options, timeout);

    let (tx, rx) = mpsc::channel();
    let label = format!("http {method_name} {url}");
    std::thread::Builder::new()
        .name("squall-http".into())
        .spawn(move || {
            // The receiver is gone when the script was canceled; the reply is then unwanted.
            let _ = tx.send(send(builder, limit));
        })
        .map_err(|e| script_error(format!("{label}: cannot start the request: {e}")))?;
    let outcome = loop {
        match rx.recv_timeout(POLL) {
            Ok(outcome) => break outcome,
            Err(mpsc::RecvTimeoutError::Timeout) => {
                if cancel.is_canceled() {
                    return Err(stop_error(Stop::Canceled));
                }
                if Instant::now() >= deadline {
                    return Err(stop_error(Stop::Timeout));
                }
            }
            Err(mpsc::RecvTimeoutError::Disconnected) => {
                return Err(script_error(format!(
                    "{label}: the request ended without a reply"
                )))
            }
        }
    };
    match outcome {
        Ok(reply) => Ok(reply_to_map(reply)),
        Err(Failure::TooLarge) => Err(script_error(format!(
            "{label}: the response body is larger than the script's string limit of {limit} bytes"
        ))),
        Err(Failure::Http(e)) if e.is_timeout() => {
            if cut_by_deadline {
                Err(stop_error(Stop::Timeout))
            } else {
                Err(script_error(format!(
                    "{label}: timed out after {} s",
                    timeout.as_secs_f64()
                )))
            }
        }
        Err(Failure::Http(e)) => Err(script_error(format!("{label}: {}", error_chain(e)))),
        Err(Failure::Read(e)) => Err(script_error(format!(
            "{label}: reading the response failed: {e}"
        ))),
    }
}

/// The response a test case declared (`squall pack test`), instead of the network's.
fn stubbed(method: &str, url: &str, options: &Options) -> Result<Dynamic> {
    let (text, json) = match &options.body {
        Some(Body::Text(text)) => (Some(text.as_str()), None),
        Some(Body::Json(json)) => (None, Some(json)),
        None => (None, None),
    };
    let answer = stubs::answer_http(&stubs::HttpCall {
        method,
        url,
        query: &options.query,
        headers: &options.headers,
        text,
        json,
    })
    .map_err(script_error)?;
    Ok(reply_to_map(Reply {
        status: answer.status,
        headers: answer.headers,
        body: answer.body,
    }))
}

fn build(
    client: Client,
    method: Method,
    url: &str,
    options: Options,
    timeout: Duration,
) -> RequestBuilder {
    let mut builder = client.request(method, url).timeout(timeout);
    for (name, value) in &options.headers {
        builder = builder.header(name.as_str(), value.as_str());
    }
    if !options.query.is_empty() {
        builder = builder.query(&options.query);
    }
    match options.body {
        Some(Body::Text(text)) => builder.body(text),
        Some(Body::Json(json)) => builder.json(&json),
        None => builder,
    }
}

enum Failure {
    Http(reqwest::Error),
    Read(std::io::Error),
    TooLarge,
}

fn send(builder: RequestBuilder, limit: usize) -> std::result::Result<Reply, Failure> {
    let response = builder.send().map_err(Failure::Http)?;
    let status = response.status().as_u16();
    let mut headers: Vec<(String, String)> = Vec::new();
    for (name, value) in response.headers() {
        let value = String::from_utf8_lossy(value.as_bytes()).into_owned();
        match headers.iter_mut().find(|(n, _)| n == name.as_str()) {
            Some((_, existing)) => {
                existing.push_str(", ");
                existing.push_str(&value);
            }
            None => headers.push((name.as_str().to_string(), value)),
        }
    }
    let mut body = Vec::new();
    let cap = u64::try_from(limit).unwrap_or(u64::MAX).saturating_add(1);
    response
        .take(cap)
        .read_to_end(&mut body)
        .map_err(Failure::Read)?;
    if body.len() > limit {
        return Err(Failure::TooLarge);
    }
    Ok(Reply {
        status,
        headers,
        body,
    })
}

fn reply_to_map(reply: Reply) -> Dynamic {
    let text = String::from_utf8_lossy(&reply.body).into_owned();
    let json = serde_json::from_str::<Value>(&text)
        .map(|v| convert::to_dynamic(&v))
        .unwrap_or(Dynamic::UNIT);
    let headers: Map = reply
        .headers
        .into_iter()
        .map(|(k, v)| (k.into(), Dynamic::from(ImmutableString::from(v))))
        .collect();
    let mut map = Map::new();
    map.insert("status".into(), Dynamic::from_int(INT::from(reply.status)));
    map.insert("headers".into(), Dynamic::from_map(headers));
    map.insert("body".into(), Dynamic::from(ImmutableString::from(text)));
    map.insert("json".into(), json);
    Dynamic::from_map(map)
}

/// reqwest's error and its causes ("connection refused" is a cause, not the error itself).
fn error_chain(error: reqwest::Error) -> String {
    super::error_chain(&error.without_url())
}

#[cfg(test)]
mod tests;
