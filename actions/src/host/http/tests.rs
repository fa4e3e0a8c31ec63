//! Tests of the `http` host module against a tiny HTTP/1.1 server on 127.0.0.1.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::sync::{mpsc, Arc, Mutex};
use std::time::{Duration, Instant};

use serde_json::{json, Value};

use crate::kv::MemoryKv;
use crate::runtime::{CancelToken, Limits, LogLine, Outcome, RhaiRuntime, ScriptJob, ScriptReport};

/// How long the `/slow` route waits before answering: longer than any test waits for it.
const SLOW: Duration = Duration::from_secs(5);

/// Starts the test server and returns its base URL (`http://127.0.0.1:PORT`).
fn serve() -> String {
    let listener = TcpListener::bind("127.0.0.1:0").expect("bind 127.0.0.1");
    let address = listener.local_addr().expect("address");
    std::thread::spawn(move || {
        for stream in listener.incoming().flatten() {
            std::thread::spawn(move || handle(stream));
        }
    });
    format!("http://{address}")
}

fn handle(stream: TcpStream) {
    let mut reader = BufReader::new(stream);
    let mut request_line = String::new();
    if reader.read_line(&mut request_line).is_err() {
        return;
    }
    let mut parts = request_line.split_whitespace();
    let method = parts.next().unwrap_or_default().to_string();
    let target = parts.next().unwrap_or_default().to_string();
    let mut headers = serde_json::Map::new();
    let mut length = 0usize;
    loop {
        let mut line = String::new();
        if reader.read_line(&mut line).is_err() || line.trim().is_empty() {
            break;
        }
        if let Some((name, value)) = line.trim_end().split_once(':') {
            let name = name.trim().to_ascii_lowercase();
            let value = value.trim().to_string();
            if name == "content-length" {
                length = value.parse().unwrap_or(0);
            }
            headers.insert(name, Value::String(value));
        }
    }
    let mut body = vec![0; length];
    if reader.read_exact(&mut body).is_err() {
        return;
    }
    let (path, query) = target.split_once('?').unwrap_or((target.as_str(), ""));
    let (status, extra, content) = match path {
        "/hello" => (
            200,
            "Content-Type: application/json\r\nX-Test: yes\r\n",
            r#"{"hello": "world"}"#.to_string(),
        ),
        "/echo" => (
            200,
            "Content-Type: application/json\r\n",
            json!({
                "method": method,
                "query": query,
                "headers": headers,
                "body": String::from_utf8_lossy(&body),
            })
            .to_string(),
        ),
        "/slow" => {
            std::thread::sleep(SLOW);
            (200, "", "late".to_string())
        }
        "/big" => (200, "", "x".repeat(2000)),
        _ => match path
            .strip_prefix("/status/")
            .and_then(|s| s.parse::<u16>().ok())
        {
            Some(code) => (code, "", format!("status {code}")),
            None => (404, "", "no such route".to_string()),
        },
    };
    let response = format!(
        "HTTP/1.1 {status} Test\r\n{extra}Content-Length: {}\r\nConnection: close\r\n\r\n{content}",
        content.len()
    );
    let mut stream = reader.into_inner();
    let _ = stream.write_all(response.as_bytes());
}

fn job(source: &str, base: &str) -> ScriptJob {
    let mut params = serde_json::Map::new();
    params.insert("base".into(), json!(base));
    ScriptJob {
        script_key: "test.http".into(),
        source: Arc::from(source),
        params,
        ctx: json!({}),
        timeout: Some(Duration::from_secs(30)),
        cancel: CancelToken::new(),
        kv: Arc::new(MemoryKv::new()),
        on_log: None,
    }
}

fn value(report: &ScriptReport) -> &Value {
    match &report.outcome {
        Outcome::Succeeded(value) => value,
        other => panic!("expected success, got {other:?}"),
    }
}

fn message(report: &ScriptReport) -> &str {
    match &report.outcome {
        Outcome::Failed { message, .. } => message,
        other => panic!("expected a failure, got {other:?}"),
    }
}

#[test]
fn get_returns_status_headers_body_and_json() {
    let base = serve();
    let report = RhaiRuntime::default().run(job(
        r#"
        let r = http::get(params.base + "/hello");
        #{ status: r.status, test: r.headers["x-test"], body: r.body, hello: r.json.hello }
        "#,
        &base,
    ));
    assert_eq!(
        value(&report),
        &json!({"status": 200, "test": "yes", "body": "{\"hello\": \"world\"}", "hello": "world"})
    );
}

#[test]
fn post_sends_json_text_headers_and_query() {
    let base = serve();
    let report = RhaiRuntime::default().run(job(
        r#"
        let url = params.base + "/echo";
        [
            http::post(url, #{ replicas: 3 }).json,
            http::post(url, "raw text", #{ headers: #{ "X-Token": "t0k" } }).json,
            http::request("put", url, #{ json: [1, 2], query: #{ app: "web 1" } }).json,
            http::get(url, #{ query: #{ n: 5 } }).json,
            http::delete(url).json,
        ]
        "#,
        &base,
    ));
    let replies = value(&report);
    assert_eq!(replies[0]["method"], "POST");
    assert_eq!(replies[0]["headers"]["content-type"], "application/json");
    assert_eq!(replies[0]["body"], r#"{"replicas":3}"#);
    assert_eq!(replies[1]["body"], "raw text");
    assert_eq!(replies[1]["headers"]["x-token"], "t0k");
    assert_eq!(replies[2]["method"], "PUT");
    assert_eq!(replies[2]["body"], "[1,2]");
    assert_eq!(replies[2]["query"], "app=web+1");
    assert_eq!(replies[3]["method"], "GET");
    assert_eq!(replies[3]["query"], "n=5");
    assert_eq!(replies[4]["method"], "DELETE");
}

#[test]
fn non_2xx_statuses_are_returned_not_thrown() {
    let base = serve();
    let report = RhaiRuntime::default().run(job(
        r#"let r = http::get(params.base + "/status/503"); #{ status: r.status, body: r.body, json: r.json }"#,
        &base,
    ));
    assert_eq!(
        value(&report),
        &json!({"status": 503, "body": "status 503", "json": null})
    );
}

#[test]
fn a_request_timeout_throws_with_the_url() {
    let base = serve();
    let started = Instant::now();
    let report = RhaiRuntime::default().run(job(
        "let x = 1;\nhttp::get(params.base + \"/slow\", #{ timeout: 0.3 })",
        &base,
    ));
    let text = message(&report);
    assert!(text.contains("timed out after 0.3 s"), "{text}");
    assert!(text.contains(&format!("{base}/slow")), "{text}");
    assert!(matches!(
        report.outcome,
        Outcome::Failed { line: Some(2), .. }
    ));
    assert!(started.elapsed() < SLOW, "{:?}", started.elapsed());
}

#[test]
fn connection_errors_throw_with_the_url_and_can_be_caught() {
    let closed = {
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind");
        format!("http://{}", listener.local_addr().expect("address"))
    };
    let runtime = RhaiRuntime::default();
    let report = runtime.run(job("http::get(params.base + \"/x\")", &closed));
    let text = message(&report);
    assert!(
        text.starts_with(&format!("http GET {closed}/x: ")),
        "{text}"
    );
    assert!(text.to_lowercase().contains("connect"), "{text}");
    let report = runtime.run(job(
        "let r = \"\"; try { http::get(params.base) } catch (e) { r = \"caught\" } r",
        &closed,
    ));
    assert_eq!(value(&report), &json!("caught"));
}

#[test]
fn a_request_never_outlives_the_execution() {
    let base = serve();
    let mut j = job("http::get(params.base + \"/slow\")", &base);
    j.timeout = Some(Duration::from_millis(500));
    let report = RhaiRuntime::default().run(j);
    assert_eq!(
        report.outcome,
        Outcome::Timeout {
            after: Duration::from_millis(500)
        }
    );
    assert!(report.elapsed < SLOW, "{:?}", report.elapsed);
}

#[test]
fn cancel_ends_a_request_in_flight() {
    let base = serve();
    let (started_tx, started_rx) = mpsc::channel();
    let started_tx = Mutex::new(started_tx);
    let mut j = job(
        "print(\"started\"); http::get(params.base + \"/slow\")",
        &base,
    );
    j.on_log = Some(Arc::new(move |line: &LogLine| {
        if line.message == "started" {
            let _ = started_tx.lock().expect("lock").send(());
        }
    }));
    let cancel = j.cancel.clone();
    let runtime = Arc::new(RhaiRuntime::default());
    let handle = std::thread::spawn(move || runtime.run(j));
    started_rx
        .recv_timeout(Duration::from_secs(30))
        .expect("the script did not start");
    let canceled_at = Instant::now();
    cancel.cancel();
    let report = handle.join().expect("join");
    assert_eq!(report.outcome, Outcome::Canceled);
    assert!(
        canceled_at.elapsed() < Duration::from_secs(2),
        "{:?}",
        canceled_at.elapsed()
    );
}

#[test]
fn bad_options_are_named() {
    let base = serve();
    let runtime = RhaiRuntime::default();
    let report = runtime.run(job("http::get(params.base, #{ hedaers: #{} })", &base));
    assert_eq!(
        message(&report),
        "http: unknown option 'hedaers' (known: headers, body, json, query, timeout)"
    );
    let report = runtime.run(job("http::get(params.base, #{ timeout: \"soon\" })", &base));
    assert!(message(&report).contains("'timeout' must be a number"));
    let report = runtime.run(job("http::request(\"NOT A METHOD\", params.base)", &base));
    assert!(message(&report).contains("is not an HTTP method"));
}

#[test]
fn a_body_over_the_string_limit_is_refused() {
    let base = serve();
    let runtime = RhaiRuntime::new(Limits {
        max_string_size: 1000,
        ..Limits::default()
    });
    let report = runtime.run(job("http::get(params.base + \"/big\").body", &base));
    assert!(
        message(&report).contains("larger than the script's string limit of 1000 bytes"),
        "{:?}",
        report.outcome
    );
}
