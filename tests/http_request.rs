//! st2's `http-request` runner under `squall run`: `core.http` requests to a real HTTP server
//! on 127.0.0.1 started here (GET with a query and headers, POST with a JSON body and with a
//! text body, basic authentication), what that server received, st2's result (`status_code`,
//! `body` parsed from JSON, `parsed`, `headers`), a 404 and a 500 failing the execution with
//! that result, and the timeout ending both the execution and the request.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use base64::Engine as _;
use serde_json::{json, Value};

use crate::harness::{is_terminal, Squall};

/// One request the server received.
#[derive(Clone, Debug)]
struct Seen {
    method: String,
    /// Path and query, as sent.
    target: String,
    headers: Vec<(String, String)>,
    body: String,
}

impl Seen {
    fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }
}

/// The server: it answers by path, records every request, and counts the connections of
/// `/slow` (which it never answers) that the client closed.
struct Server {
    url: String,
    seen: Arc<Mutex<Vec<Seen>>>,
    slow_closed: Arc<AtomicUsize>,
}

const CREDENTIALS: &str = "ops:hunter2";

impl Server {
    fn start() -> Server {
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind");
        let url = format!("http://{}", listener.local_addr().expect("address"));
        let seen = Arc::new(Mutex::new(Vec::new()));
        let slow_closed = Arc::new(AtomicUsize::new(0));
        let (log, closed) = (seen.clone(), slow_closed.clone());
        std::thread::spawn(move || {
            for stream in listener.incoming().flatten() {
                let (log, closed) = (log.clone(), closed.clone());
                std::thread::spawn(move || serve(stream, &log, &closed));
            }
        });
        Server {
            url,
            seen,
            slow_closed,
        }
    }

    /// The requests received for `path` (without the query).
    fn requests_to(&self, path: &str) -> Vec<Seen> {
        self.seen
            .lock()
            .expect("the server's log")
            .iter()
            .filter(|s| s.target.split('?').next() == Some(path))
            .cloned()
            .collect()
    }

    /// The one request received for `path`.
    fn one_request_to(&self, path: &str) -> Seen {
        let seen = self.requests_to(path);
        assert_eq!(seen.len(), 1, "{path}: {seen:?}");
        seen[0].clone()
    }
}

fn serve(stream: TcpStream, log: &Mutex<Vec<Seen>>, slow_closed: &AtomicUsize) {
    let Ok(read_half) = stream.try_clone() else {
        return;
    };
    let mut reader = BufReader::new(read_half);
    let mut request_line = String::new();
    if reader.read_line(&mut request_line).unwrap_or(0) == 0 {
        return;
    }
    let mut parts = request_line.split_whitespace();
    let method = parts.next().unwrap_or_default().to_string();
    let target = parts.next().unwrap_or_default().to_string();
    let mut headers = Vec::new();
    loop {
        let mut line = String::new();
        if reader.read_line(&mut line).unwrap_or(0) == 0 || line.trim().is_empty() {
            break;
        }
        if let Some((name, value)) = line.split_once(':') {
            headers.push((name.trim().to_string(), value.trim().to_string()));
        }
    }
    let length = headers
        .iter()
        .find(|(n, _)| n.eq_ignore_ascii_case("content-length"))
        .and_then(|(_, v)| v.parse().ok())
        .unwrap_or(0);
    let mut body = vec![0; length];
    if reader.read_exact(&mut body).is_err() {
        return;
    }
    let seen = Seen {
        method,
        target,
        headers,
        body: String::from_utf8_lossy(&body).into_owned(),
    };
    log.lock().expect("the server's log").push(seen.clone());
    let path = seen
        .target
        .split('?')
        .next()
        .unwrap_or_default()
        .to_string();
    let expected = format!(
        "Basic {}",
        base64::engine::general_purpose::STANDARD.encode(CREDENTIALS)
    );
    let (status, content_type, answer) = match path.as_str() {
        "/echo" => (
            "200 OK",
            "application/json",
            json!({"method": seen.method, "got": seen.body}).to_string(),
        ),
        "/text" => (
            "201 Created",
            "text/plain; charset=utf-8",
            "plain words".to_string(),
        ),
        "/missing" => (
            "404 Not Found",
            "application/json",
            r#"{"error": "no such app"}"#.to_string(),
        ),
        "/broken" => (
            "500 Internal Server Error",
            "text/html",
            "<h1>boom</h1>".to_string(),
        ),
        "/private" if seen.header("authorization") == Some(expected.as_str()) => (
            "200 OK",
            "application/json",
            r#"{"user": "ops"}"#.to_string(),
        ),
        "/private" => ("401 Unauthorized", "text/plain", "who are you?".to_string()),
        "/slow" => {
            // Never answers: waits for the client to give up and close the connection.
            let mut rest = [0u8; 256];
            loop {
                match reader.read(&mut rest) {
                    Ok(0) | Err(_) => break,
                    Ok(_) => {}
                }
            }
            slow_closed.fetch_add(1, Ordering::SeqCst);
            return;
        }
        _ => ("404 Not Found", "text/plain", "unknown path".to_string()),
    };
    let head = format!(
        "HTTP/1.1 {status}\r\nContent-Type: {content_type}\r\nContent-Length: {}\r\nX-Served-By: probe\r\nConnection: close\r\n\r\n",
        answer.len()
    );
    let mut stream = stream;
    let _ = stream.write_all(head.as_bytes());
    let _ = stream.write_all(answer.as_bytes());
}

/// Requests an execution of `core.http`; returns its id.
fn request(s: &Squall, parameters: Value) -> String {
    let body = json!({"action": "core.http", "parameters": parameters});
    let (code, e) = s.post("/api/v1/executions", &body.to_string());
    assert_eq!(code, 201, "{e}");
    e["id"].as_str().expect("id").to_string()
}

fn finished(s: &Squall, id: &str) -> Value {
    s.wait_for(&format!("/api/v1/executions/{id}"), 60, |v| {
        is_terminal(v["status"].as_str().unwrap_or(""))
    })
}

fn start() -> (tempfile::TempDir, Squall) {
    let dir = tempfile::tempdir().expect("tempdir");
    let s = Squall::start(&dir.path().join("data"), &[], &[]);
    (dir, s)
}

#[test]
fn core_http_sends_what_st2_sends_and_returns_st2s_result() {
    let server = Server::start();
    let (_dir, s) = start();
    let get = request(
        &s,
        json!({
            "url": format!("{}/echo?fixed=1", server.url),
            "params": {"app": "web 1", "replicas": 3},
            "headers": {"X-Request-Id": "r-42", "Accept": "application/json"},
        }),
    );
    let post_json = request(
        &s,
        json!({
            "url": format!("{}/echo", server.url),
            "method": "POST",
            "headers": {"Content-Type": "application/json"},
            "body": "{\"app\": \"web\", \"scale\": 3}",
        }),
    );
    let post_text = request(
        &s,
        json!({"url": format!("{}/text", server.url), "body": "hello there"}),
    );
    let private = request(
        &s,
        json!({"url": format!("{}/private", server.url), "username": "ops", "password": "hunter2"}),
    );

    // GET: the query added to the URL's own, the headers given plus st2's.
    let e = finished(&s, &get);
    assert_eq!(e["status"], "succeeded", "{e}");
    assert_eq!(
        e["result"],
        json!({
            "status_code": 200,
            "body": {"method": "GET", "got": ""},
            "parsed": true,
            "headers": {
                "Content-Type": "application/json",
                "Content-Length": "25",
                "X-Served-By": "probe",
                "Connection": "close",
            },
        }),
        "{e}"
    );
    let seen = server
        .requests_to("/echo")
        .into_iter()
        .find(|r| r.method == "GET")
        .expect("the GET arrived");
    assert_eq!(seen.target, "/echo?fixed=1&app=web+1&replicas=3");
    assert_eq!(seen.header("x-request-id"), Some("r-42"));
    assert_eq!(seen.header("accept"), Some("application/json"));
    assert_eq!(seen.header("x-stanley-action"), Some("http"));
    assert!(
        seen.header("user-agent")
            .is_some_and(|a| a.starts_with("squall/")),
        "{seen:?}"
    );

    // POST with JSON: the body re-encoded as st2 encodes it, the content type as given.
    let e = finished(&s, &post_json);
    assert_eq!(e["status"], "succeeded", "{e}");
    assert_eq!(
        e["result"]["body"],
        json!({"method": "POST", "got": "{\"app\":\"web\",\"scale\":3}"})
    );
    let seen = server
        .requests_to("/echo")
        .into_iter()
        .find(|r| r.method == "POST")
        .expect("the POST arrived");
    assert_eq!(seen.header("content-type"), Some("application/json"));
    assert_eq!(
        serde_json::from_str::<Value>(&seen.body).expect("JSON"),
        json!({"app": "web", "scale": 3})
    );

    // A text body: POST (st2's default with a body), sent as it is, with no content type;
    // a text answer stays text.
    let e = finished(&s, &post_text);
    assert_eq!(e["status"], "succeeded", "{e}");
    assert_eq!(e["result"]["status_code"], 201);
    assert_eq!(e["result"]["body"], "plain words");
    assert_eq!(e["result"]["parsed"], false);
    let seen = server.one_request_to("/text");
    assert_eq!(seen.method, "POST");
    assert_eq!(seen.body, "hello there");
    assert_eq!(seen.header("content-type"), None);

    // Basic authentication from username and password; the password stays masked.
    let e = finished(&s, &private);
    assert_eq!(e["status"], "succeeded", "{e}");
    assert_eq!(e["result"]["body"], json!({"user": "ops"}));
    assert_eq!(e["parameters"]["password"], "********", "{e}");
    let expected = format!(
        "Basic {}",
        base64::engine::general_purpose::STANDARD.encode(CREDENTIALS)
    );
    assert_eq!(
        server.one_request_to("/private").header("authorization"),
        Some(expected.as_str())
    );
}

#[test]
fn a_404_or_a_500_fails_the_execution_with_st2s_result() {
    let server = Server::start();
    let (_dir, s) = start();
    let missing = request(&s, json!({"url": format!("{}/missing", server.url)}));
    let broken = request(
        &s,
        json!({"url": format!("{}/broken", server.url), "method": "DELETE"}),
    );
    let e = finished(&s, &missing);
    assert_eq!(e["status"], "failed", "{e}");
    assert_eq!(e["result"]["status_code"], 404);
    assert_eq!(e["result"]["body"], json!({"error": "no such app"}));
    assert_eq!(e["result"]["parsed"], true);
    assert_eq!(e["result"]["headers"]["X-Served-By"], "probe");
    let e = finished(&s, &broken);
    assert_eq!(e["status"], "failed", "{e}");
    assert_eq!(e["result"]["status_code"], 500);
    assert_eq!(e["result"]["body"], "<h1>boom</h1>");
    assert_eq!(e["result"]["parsed"], false);
    assert_eq!(server.one_request_to("/missing").method, "GET");
    assert_eq!(server.one_request_to("/broken").method, "DELETE");
    // Without credentials the private path answers 401: failed, never retried.
    let e = finished(
        &s,
        &request(&s, json!({"url": format!("{}/private", server.url)})),
    );
    assert_eq!(e["status"], "failed", "{e}");
    assert_eq!(e["result"]["status_code"], 401);
    assert_eq!(server.requests_to("/private").len(), 1);
}

#[test]
fn the_timeout_ends_the_execution_and_the_request() {
    let server = Server::start();
    let (_dir, s) = start();
    let started = Instant::now();
    let id = request(
        &s,
        json!({"url": format!("{}/slow", server.url), "timeout": 1}),
    );
    let e = finished(&s, &id);
    assert_eq!(e["status"], "timeout", "{e}");
    let error = e["result"]["error"].as_str().unwrap_or_default();
    assert!(
        error.contains("/slow") && error.contains("no answer within the timeout of 1 s"),
        "{e}"
    );
    assert!(started.elapsed() >= Duration::from_secs(1));
    assert_eq!(server.one_request_to("/slow").method, "GET");
    // The server sees its connection closed: the request did not outlive the execution.
    let deadline = Instant::now() + Duration::from_secs(10);
    while server.slow_closed.load(Ordering::SeqCst) == 0 {
        assert!(
            Instant::now() < deadline,
            "the request's connection is still open"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}
