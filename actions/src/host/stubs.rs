//! Declared answers for a script's `http` and `docker` calls, for `squall pack test`: inside
//! [`with_stubs`], each such call is answered from the responses a test case declares, and
//! recorded; a call for which no response was declared fails with a message naming it, so a
//! pack's tests never reach a real service or Docker daemon.
//!
//! The stubs live in a thread-local beside the run's state ([`super::RunState`]) because
//! scripts run on the thread that calls [`crate::RhaiRuntime::run`]. With none installed, the
//! `http` and `docker` modules behave exactly as without this file, for the price of one
//! thread-local read per call. This file must never open a connection.
//!
//! Matching: an HTTP response matches a call by method (any when none is declared) and URL
//! (a declared URL without a query matches the call whatever its query; `*` matches any run of
//! characters); a Docker result by call name, and by host and arguments when declared. When
//! several declared answers match a call, they answer in the order declared, the last one then
//! answering every further call (a poll that sees "deploying", then "done").

use std::cell::RefCell;

use rhai::{Dynamic, INT};
use serde::Deserialize;
use serde_json::{Map, Value};

use super::convert;

/// The Docker calls a test case can declare results for: the `docker` module's operations.
pub const DOCKER_CALLS: [&str; 8] = [
    "list", "inspect", "start", "stop", "restart", "remove", "logs", "scale",
];

/// The answers one run may get.
#[derive(Debug, Clone, Default)]
pub struct Stubs {
    pub http: Vec<HttpStub>,
    pub docker: Vec<DockerStub>,
}

/// A declared HTTP response.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct HttpStub {
    /// `GET`, `POST`...: any method when absent.
    #[serde(default)]
    pub method: Option<String>,
    /// The URL called; see the module's doc for how it matches.
    pub url: String,
    #[serde(default = "default_status")]
    pub status: u16,
    /// Response headers (values are sent as text).
    #[serde(default)]
    pub headers: Map<String, Value>,
    /// The response body, as text.
    #[serde(default)]
    pub body: Option<String>,
    /// The response body, as JSON (with `Content-Type: application/json` unless given).
    #[serde(default)]
    pub json: Option<Value>,
    /// Instead of a response, the call fails with this message (a refused connection).
    #[serde(default)]
    pub error: Option<String>,
    /// Not being called is not a failure.
    #[serde(default)]
    pub optional: bool,
}

fn default_status() -> u16 {
    200
}

/// A declared result of a `docker` call.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DockerStub {
    /// One of [`DOCKER_CALLS`].
    pub call: String,
    /// The daemon (`unix:///var/run/docker.sock`, `tcp://HOST:PORT`): any when absent.
    #[serde(default)]
    pub host: Option<String>,
    /// The call's arguments, as the script gives them: any when absent.
    #[serde(default)]
    pub args: Option<Vec<Value>>,
    /// What the call returns to the script, in the shape the `docker` module returns.
    #[serde(default)]
    pub result: Value,
    /// Instead of a result, the call fails with this message (Docker's error).
    #[serde(default)]
    pub error: Option<String>,
    /// Not being called is not a failure.
    #[serde(default)]
    pub optional: bool,
}

/// One call a script made while stubs were installed.
#[derive(Debug, Clone, PartialEq)]
pub struct StubCall {
    /// How messages name it: `GET http://m:8080/v2/apps/web`, `docker scale("app", "web", 3)`.
    pub label: String,
    /// The call as a test can check it: `{"http": "GET", "url", "headers"?, "json"?|"body"?}`
    /// or `{"docker": "scale", "host", "args"}`.
    pub request: Value,
    /// Whether a declared answer answered it (if not, the call failed).
    pub answered: bool,
}

/// What the run did with the stubs it was given.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct StubReport {
    /// Every `http` and `docker` call, in order.
    pub calls: Vec<StubCall>,
    /// The declared answers no call used (those marked `optional` left out), each named.
    pub unused: Vec<String>,
}

impl StubReport {
    /// The calls no declared answer answered.
    pub fn unanswered(&self) -> impl Iterator<Item = &StubCall> {
        self.calls.iter().filter(|c| !c.answered)
    }
}

impl Stubs {
    /// What is wrong with the declarations, each naming the answer (`http #2: ...`).
    pub fn problems(&self) -> Vec<String> {
        let mut problems = Vec::new();
        for (i, stub) in self.http.iter().enumerate() {
            let at = format!("http #{}", i + 1);
            if stub.body.is_some() && stub.json.is_some() {
                problems.push(format!("{at}: give `body` or `json`, not both"));
            }
            if stub.error.is_some() && (stub.body.is_some() || stub.json.is_some()) {
                problems.push(format!(
                    "{at}: a call that fails with `error` has no `body` or `json`"
                ));
            }
            if !(100..=599).contains(&stub.status) {
                problems.push(format!(
                    "{at}: status {} is not an HTTP status (100 to 599)",
                    stub.status
                ));
            }
            if let Some(method) = &stub.method {
                if method.is_empty() || !method.chars().all(|c| c.is_ascii_alphabetic()) {
                    problems.push(format!("{at}: '{method}' is not an HTTP method"));
                }
            }
        }
        for (i, stub) in self.docker.iter().enumerate() {
            let at = format!("docker #{}", i + 1);
            if !DOCKER_CALLS.contains(&stub.call.as_str()) {
                problems.push(format!(
                    "{at}: unknown call '{}' (calls: {})",
                    stub.call,
                    DOCKER_CALLS.join(", ")
                ));
            }
            if stub.error.is_some() && !stub.result.is_null() {
                problems.push(format!(
                    "{at}: a call that fails with `error` has no `result`"
                ));
            }
        }
        problems
    }
}

impl HttpStub {
    fn label(&self) -> String {
        let method = self.method.as_deref().unwrap_or("*").to_ascii_uppercase();
        format!("{method} {}", self.url)
    }

    fn matches(&self, method: &str, url: &str) -> bool {
        if let Some(m) = &self.method {
            if !m.eq_ignore_ascii_case(method) {
                return false;
            }
        }
        let pattern = normalized_url(&self.url);
        let target = if pattern.contains('?') {
            url
        } else {
            url.split_once('?').map_or(url, |(base, _)| base)
        };
        glob_matches(&pattern, target)
    }
}

impl DockerStub {
    fn label(&self) -> String {
        match &self.args {
            Some(args) => docker_label(&self.call, args),
            None => format!("docker {}", self.call),
        }
    }

    fn matches(&self, host: &str, call: &str, args: &[Value]) -> bool {
        self.call == call
            && self.host.as_deref().is_none_or(|h| h == host)
            && self.args.as_deref().is_none_or(|a| a == args)
    }
}

/// The stubs installed on this thread, with what the run did with them.
struct Installed {
    stubs: Stubs,
    http_uses: Vec<usize>,
    docker_uses: Vec<usize>,
    calls: Vec<StubCall>,
}

impl Installed {
    fn new(stubs: Stubs) -> Installed {
        Installed {
            http_uses: vec![0; stubs.http.len()],
            docker_uses: vec![0; stubs.docker.len()],
            stubs,
            calls: Vec::new(),
        }
    }

    fn report(self) -> StubReport {
        let mut unused = Vec::new();
        for (stub, uses) in self.stubs.http.iter().zip(&self.http_uses) {
            if *uses == 0 && !stub.optional {
                unused.push(stub.label());
            }
        }
        for (stub, uses) in self.stubs.docker.iter().zip(&self.docker_uses) {
            if *uses == 0 && !stub.optional {
                unused.push(stub.label());
            }
        }
        StubReport {
            calls: self.calls,
            unused,
        }
    }
}

thread_local! {
    static STUBS: RefCell<Option<Installed>> = const { RefCell::new(None) };
}

/// Removes the stubs when the closure ends, even by a panic, restoring any installed before.
struct Guard {
    previous: Option<Installed>,
    finished: bool,
}

impl Guard {
    fn finish(mut self) -> Option<Installed> {
        self.finished = true;
        let previous = self.previous.take();
        STUBS.with(|s| s.replace(previous))
    }
}

impl Drop for Guard {
    fn drop(&mut self) {
        if self.finished {
            return;
        }
        let previous = self.previous.take();
        STUBS.with(|s| {
            if let Ok(mut s) = s.try_borrow_mut() {
                *s = previous;
            }
        });
    }
}

/// Runs `run` (a script run, e.g. `|| runtime.run(job)`) with its `http` and `docker` calls
/// answered from `stubs` instead of the network, and reports the calls it made.
pub fn with_stubs<R>(stubs: Stubs, run: impl FnOnce() -> R) -> (R, StubReport) {
    let guard = Guard {
        previous: STUBS.with(|s| s.replace(Some(Installed::new(stubs)))),
        finished: false,
    };
    let result = run();
    let report = guard.finish().map(Installed::report).unwrap_or_default();
    (result, report)
}

/// Whether calls on this thread are answered by stubs. A stub table busy elsewhere on the
/// stack counts as installed: the call then fails rather than reach the network.
pub(crate) fn active() -> bool {
    STUBS.with(|s| s.try_borrow().map(|s| s.is_some()).unwrap_or(true))
}

fn with_installed<R>(f: impl FnOnce(&mut Installed) -> R) -> Result<R, String> {
    STUBS.with(|s| match s.try_borrow_mut() {
        Ok(mut s) => s
            .as_mut()
            .map(f)
            .ok_or_else(|| "no test stubs are installed".to_string()),
        Err(_) => Err("the test stubs were called re-entrantly".to_string()),
    })
}

/// Which of the matching declared answers answers: the first unused one, else the last.
fn pick(matching: &[usize], uses: &[usize]) -> Option<usize> {
    matching
        .iter()
        .copied()
        .find(|&i| uses[i] == 0)
        .or_else(|| matching.last().copied())
}

/// An HTTP request a script makes.
pub(crate) struct HttpCall<'a> {
    /// Upper case.
    pub method: &'a str,
    pub url: &'a str,
    pub query: &'a [(String, String)],
    pub headers: &'a [(String, String)],
    pub text: Option<&'a str>,
    pub json: Option<&'a Value>,
}

/// A declared response, ready for the `http` module to return.
pub(crate) struct HttpAnswer {
    pub status: u16,
    /// Lower-case names, as reqwest gives them.
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
}

/// The declared response to `call`; the error names the call, as the `http` module's own do.
pub(crate) fn answer_http(call: &HttpCall) -> Result<HttpAnswer, String> {
    let url = full_url(call.url, call.query);
    let label = format!("{} {url}", call.method);
    let mut request = Map::new();
    request.insert("http".into(), Value::String(call.method.to_string()));
    request.insert("url".into(), Value::String(url.clone()));
    if !call.headers.is_empty() {
        let headers = call
            .headers
            .iter()
            .map(|(k, v)| (k.clone(), Value::String(v.clone())))
            .collect();
        request.insert("headers".into(), Value::Object(headers));
    }
    if let Some(json) = call.json {
        request.insert("json".into(), json.clone());
    } else if let Some(text) = call.text {
        request.insert("body".into(), Value::String(text.to_string()));
    }
    let chosen = with_installed(|installed| {
        let matching: Vec<usize> = (0..installed.stubs.http.len())
            .filter(|&i| installed.stubs.http[i].matches(call.method, &url))
            .collect();
        let chosen = pick(&matching, &installed.http_uses);
        if let Some(i) = chosen {
            installed.http_uses[i] += 1;
        }
        installed.calls.push(StubCall {
            label: label.clone(),
            request: Value::Object(request),
            answered: chosen.is_some(),
        });
        match chosen {
            Some(i) => Ok(installed.stubs.http[i].clone()),
            None => Err(undeclared(
                "http",
                installed.stubs.http.iter().map(HttpStub::label).collect(),
            )),
        }
    })
    .map_err(|e| format!("http {label}: {e}"))?;
    let stub = chosen.map_err(|e| format!("http {label}: {e}"))?;
    if let Some(error) = stub.error {
        return Err(format!("http {label}: {error}"));
    }
    let mut headers: Vec<(String, String)> = stub
        .headers
        .iter()
        .map(|(k, v)| {
            let text = match v {
                Value::String(s) => s.clone(),
                other => other.to_string(),
            };
            (k.to_ascii_lowercase(), text)
        })
        .collect();
    let body = match (stub.json, stub.body) {
        (Some(json), _) => {
            if !headers.iter().any(|(k, _)| k == "content-type") {
                headers.push(("content-type".into(), "application/json".into()));
            }
            json.to_string()
        }
        (None, Some(text)) => text,
        (None, None) => String::new(),
    };
    Ok(HttpAnswer {
        status: stub.status,
        headers,
        body: body.into_bytes(),
    })
}

/// The declared result of the `docker` call `call(args)` on `host`; the error names the call.
pub(crate) fn answer_docker(host: &str, call: &str, args: Vec<Value>) -> Result<Value, String> {
    let label = docker_label(call, &args);
    let chosen = with_installed(|installed| {
        let matching: Vec<usize> = (0..installed.stubs.docker.len())
            .filter(|&i| installed.stubs.docker[i].matches(host, call, &args))
            .collect();
        let chosen = pick(&matching, &installed.docker_uses);
        if let Some(i) = chosen {
            installed.docker_uses[i] += 1;
        }
        let mut request = Map::new();
        request.insert("docker".into(), Value::String(call.to_string()));
        request.insert("host".into(), Value::String(host.to_string()));
        request.insert("args".into(), Value::Array(args));
        installed.calls.push(StubCall {
            label: label.clone(),
            request: Value::Object(request),
            answered: chosen.is_some(),
        });
        match chosen {
            Some(i) => Ok(installed.stubs.docker[i].clone()),
            None => Err(undeclared(
                "docker",
                installed
                    .stubs
                    .docker
                    .iter()
                    .map(DockerStub::label)
                    .collect(),
            )),
        }
    })
    .map_err(|e| format!("{label} on {host}: {e}"))?;
    let stub = chosen.map_err(|e| format!("{label} on {host}: {e}"))?;
    match stub.error {
        Some(error) => Err(format!("{label}: {error}")),
        None => Ok(stub.result),
    }
}

/// Why a call failed for want of a declared answer, with the answers of its `kind` (`http`,
/// `docker`) that were declared.
fn undeclared(kind: &str, declared: Vec<String>) -> String {
    let mut text = "the test case declares no answer for this call".to_string();
    if declared.is_empty() {
        text.push_str(&format!(" (it declares no `{kind}:` answers)"));
    } else {
        text.push_str(&format!(" (it declares: {})", declared.join("; ")));
    }
    text
}

/// `docker scale("squall.app", "web", 3)`.
fn docker_label(call: &str, args: &[Value]) -> String {
    let args: Vec<String> = args.iter().map(Value::to_string).collect();
    format!("docker {call}({})", args.join(", "))
}

/// The URL as reqwest sends it: the query options appended, in its normal form (so a declared
/// `http://m:8080` matches the call of `http://m:8080/`).
fn full_url(url: &str, query: &[(String, String)]) -> String {
    match reqwest::Url::parse(url) {
        Ok(mut parsed) => {
            if !query.is_empty() {
                parsed.query_pairs_mut().extend_pairs(query);
            }
            parsed.to_string()
        }
        Err(_) if query.is_empty() => url.to_string(),
        Err(_) => {
            let pairs: Vec<String> = query.iter().map(|(k, v)| format!("{k}={v}")).collect();
            format!("{url}?{}", pairs.join("&"))
        }
    }
}

fn normalized_url(url: &str) -> String {
    reqwest::Url::parse(url).map_or_else(|_| url.to_string(), |u| u.to_string())
}

/// Whether `text` matches `pattern`, where `*` matches any run of characters.
fn glob_matches(pattern: &str, text: &str) -> bool {
    let mut parts = pattern.split('*');
    let first = parts.next().unwrap_or_default();
    let Some(mut rest) = text.strip_prefix(first) else {
        return false;
    };
    let parts: Vec<&str> = parts.collect();
    let Some((last, middle)) = parts.split_last() else {
        return rest.is_empty();
    };
    for part in middle {
        match rest.find(part) {
            Some(at) => rest = &rest[at + part.len()..],
            None => return false,
        }
    }
    rest.len() >= last.len() && rest.ends_with(last)
}

/// A `docker` call's argument as a test declares it.
pub(crate) trait StubArg {
    fn to_json(&self) -> Value;
}

impl StubArg for &str {
    fn to_json(&self) -> Value {
        Value::String((*self).to_string())
    }
}

impl StubArg for INT {
    fn to_json(&self) -> Value {
        Value::from(*self)
    }
}

impl StubArg for bool {
    fn to_json(&self) -> Value {
        Value::Bool(*self)
    }
}

impl StubArg for Dynamic {
    fn to_json(&self) -> Value {
        convert::to_json(self).unwrap_or_else(|_| Value::String(self.to_string()))
    }
}

pub(crate) fn arg(value: &impl StubArg) -> Value {
    value.to_json()
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn stubs(value: Value) -> Stubs {
        let http = serde_json::from_value(value["http"].clone()).unwrap_or_default();
        let docker = serde_json::from_value(value["docker"].clone()).unwrap_or_default();
        Stubs { http, docker }
    }

    fn get(url: &str) -> Result<HttpAnswer, String> {
        answer_http(&HttpCall {
            method: "GET",
            url,
            query: &[],
            headers: &[],
            text: None,
            json: None,
        })
    }

    #[test]
    fn nothing_is_installed_outside_with_stubs() {
        assert!(!active());
        let (inside, report) = with_stubs(Stubs::default(), active);
        assert!(inside);
        assert!(!active());
        assert_eq!(report, StubReport::default());
        assert!(get("http://x/").is_err_and(|e| e.contains("no test stubs")));
    }

    #[test]
    fn http_answers_by_method_and_url_and_records_the_calls() {
        let declared = stubs(json!({"http": [
            {"method": "GET", "url": "http://m:8080/v2/apps/web", "json": {"app": {"instances": 2}}},
            {"method": "put", "url": "http://m:8080/v2/apps/web", "status": 201, "body": "ok",
             "headers": {"X-Id": 7}},
        ]}));
        let (answers, report) = with_stubs(declared, || {
            let first = get("http://m:8080/v2/apps/web").map(|a| (a.status, a.body, a.headers));
            let put = answer_http(&HttpCall {
                method: "PUT",
                url: "http://m:8080/v2/apps/web",
                query: &[("force".into(), "true".into())],
                headers: &[("Accept".into(), "application/json".into())],
                text: None,
                json: Some(&json!({"instances": 3})),
            })
            .map(|a| (a.status, a.body, a.headers));
            (first, put)
        });
        assert_eq!(
            answers.0,
            Ok((
                200,
                br#"{"app":{"instances":2}}"#.to_vec(),
                vec![("content-type".into(), "application/json".into())]
            ))
        );
        assert_eq!(
            answers.1,
            Ok((201, b"ok".to_vec(), vec![("x-id".into(), "7".into())]))
        );
        assert_eq!(report.unused, Vec::<String>::new());
        let requests: Vec<&Value> = report.calls.iter().map(|c| &c.request).collect();
        assert_eq!(
            requests,
            [
                &json!({"http": "GET", "url": "http://m:8080/v2/apps/web"}),
                &json!({"http": "PUT", "url": "http://m:8080/v2/apps/web?force=true",
                        "headers": {"Accept": "application/json"}, "json": {"instances": 3}}),
            ]
        );
        assert_eq!(
            report.calls[1].label,
            "PUT http://m:8080/v2/apps/web?force=true"
        );
    }

    #[test]
    fn an_undeclared_call_fails_naming_itself_and_the_declared_ones() {
        let declared = stubs(json!({"http": [{"url": "http://a/x"}]}));
        let (answer, report) = with_stubs(declared, || get("http://b/y").map(|a| a.status));
        let error = answer.err().unwrap_or_default();
        assert!(error.starts_with("http GET http://b/y: "), "{error}");
        assert!(error.contains("declares no answer"), "{error}");
        assert!(error.contains("* http://a/x"), "{error}");
        assert_eq!(report.unanswered().count(), 1);
        assert_eq!(report.unused, vec!["* http://a/x".to_string()]);
    }

    #[test]
    fn matching_answers_are_used_in_order_and_the_last_one_repeats() {
        let declared = stubs(json!({"http": [
            {"url": "http://m/deployments", "json": ["d1"]},
            {"url": "http://m/deployments", "json": []},
            {"url": "http://m/other", "optional": true},
        ]}));
        let (bodies, report) = with_stubs(declared, || {
            (0..3)
                .map(|_| get("http://m/deployments").map(|a| a.body))
                .collect::<Vec<_>>()
        });
        assert_eq!(
            bodies,
            vec![
                Ok(b"[\"d1\"]".to_vec()),
                Ok(b"[]".to_vec()),
                Ok(b"[]".to_vec())
            ]
        );
        assert!(report.unused.is_empty(), "{:?}", report.unused);
    }

    #[test]
    fn urls_match_without_query_with_normal_form_and_wildcards() {
        let stub = |url: &str| HttpStub {
            method: None,
            url: url.into(),
            status: 200,
            headers: Map::new(),
            body: None,
            json: None,
            error: None,
            optional: false,
        };
        assert!(stub("http://m:8080").matches("GET", "http://m:8080/"));
        assert!(stub("http://m/apps").matches("GET", "http://m/apps?embed=tasks"));
        assert!(!stub("http://m/apps?embed=x").matches("GET", "http://m/apps?embed=tasks"));
        assert!(stub("http://m/apps/*").matches("DELETE", "http://m/apps/web/tasks"));
        assert!(stub("http://*/health").matches("GET", "http://db-1:9000/health"));
        assert!(!stub("http://m/apps/*").matches("GET", "http://m/queue"));
        assert!(glob_matches("a*b*c", "abbbc"));
        assert!(!glob_matches("a*bc", "abcx"));
        assert!(!glob_matches("ab*ba", "aba"));
    }

    #[test]
    fn a_declared_error_fails_the_call() {
        let declared =
            stubs(json!({"http": [{"url": "http://m/", "error": "connection refused"}]}));
        let (answer, report) = with_stubs(declared, || get("http://m/").map(|a| a.status));
        assert_eq!(answer, Err("http GET http://m/: connection refused".into()));
        assert!(report.calls[0].answered);
    }

    #[test]
    fn docker_answers_by_call_host_and_args() {
        let declared = stubs(json!({"docker": [
            {"call": "list", "result": [{"id": "c1", "name": "web-1"}]},
            {"call": "scale", "args": ["squall.app", "web", 3], "result": {"before": 2, "after": 3}},
            {"call": "stop", "host": "tcp://other:2375", "args": ["web-1"], "error": "No such container: web-1"},
            {"call": "remove", "optional": true},
        ]}));
        let host = "unix:///var/run/docker.sock";
        let (answers, report) = with_stubs(declared, || {
            vec![
                answer_docker(host, "list", vec![json!("squall.app")]),
                answer_docker(
                    host,
                    "scale",
                    vec![json!("squall.app"), json!("web"), json!(3)],
                ),
                answer_docker(
                    host,
                    "scale",
                    vec![json!("squall.app"), json!("web"), json!(4)],
                ),
                answer_docker("tcp://other:2375", "stop", vec![json!("web-1")]),
            ]
        });
        assert_eq!(answers[0], Ok(json!([{"id": "c1", "name": "web-1"}])));
        assert_eq!(answers[1], Ok(json!({"before": 2, "after": 3})));
        let undeclared = answers[2].clone().err().unwrap_or_default();
        assert!(
            undeclared.starts_with(r#"docker scale("squall.app", "web", 4) on unix:///var/run/docker.sock: the test case declares no answer"#),
            "{undeclared}"
        );
        assert_eq!(
            answers[3],
            Err(r#"docker stop("web-1"): No such container: web-1"#.into())
        );
        assert_eq!(
            report.calls[1].request,
            json!({"docker": "scale", "host": host, "args": ["squall.app", "web", 3]})
        );
        assert_eq!(
            report
                .unanswered()
                .map(|c| c.label.as_str())
                .collect::<Vec<_>>(),
            [r#"docker scale("squall.app", "web", 4)"#]
        );
        assert!(report.unused.is_empty(), "{:?}", report.unused);
    }

    #[test]
    fn declarations_are_checked() {
        let declared = stubs(json!({
            "http": [{"url": "http://m/", "body": "x", "json": {}, "status": 42, "method": "G T"}],
            "docker": [{"call": "exec"}, {"call": "list", "result": [], "error": "down"}],
        }));
        let problems = declared.problems();
        assert_eq!(problems.len(), 5, "{problems:?}");
        assert!(problems[0].starts_with("http #1: give `body` or `json`"));
        assert!(problems.iter().any(|p| p.contains("unknown call 'exec'")));
        assert!(problems.iter().any(|p| p.starts_with("docker #2:")));
        let unknown = serde_json::from_value::<HttpStub>(json!({"url": "x", "staus": 1}));
        assert!(unknown.is_err_and(|e| e.to_string().contains("unknown field `staus`")));
    }

    fn run_script(source: &str) -> crate::runtime::Outcome {
        let job = crate::runtime::ScriptJob {
            script_key: "test.stubs".into(),
            source: std::sync::Arc::from(source),
            params: Map::new(),
            ctx: json!({}),
            timeout: Some(std::time::Duration::from_secs(10)),
            cancel: crate::runtime::CancelToken::new(),
            kv: std::sync::Arc::new(crate::kv::MemoryKv::new()),
            on_log: None,
        };
        crate::runtime::RhaiRuntime::default().run(job).outcome
    }

    #[test]
    fn a_scripts_http_and_docker_calls_are_answered_by_the_stubs() {
        let declared = stubs(json!({
            "http": [{"method": "GET", "url": "http://marathon:8080/v2/apps/web",
                      "json": {"app": {"instances": 2}}}],
            "docker": [
                {"call": "list", "args": ["squall.app=web"], "result": [{"id": "c1"}]},
                {"call": "scale", "host": "tcp://docker-1:2375", "result": {"after": 3}},
                {"call": "remove", "args": ["c1", true]},
                {"call": "logs", "args": ["c1", 2], "result": "one\ntwo\n"},
            ],
        }));
        let (outcome, report) = with_stubs(declared, || {
            run_script(
                r#"
                let app = http::get("http://marathon:8080/v2/apps/web").json.app;
                let listed = docker::list("squall.app=web");
                let d = docker::connect("tcp://docker-1:2375");
                let scaled = d.scale("squall.app", "web", app.instances + 1);
                let removed = docker::remove(listed[0].id, true);
                let logs = d.logs(listed[0].id, 2);
                #{ instances: app.instances, first: listed[0].id, after: scaled.after, removed: removed, logs: logs }
                "#,
            )
        });
        assert_eq!(
            outcome,
            crate::runtime::Outcome::Succeeded(
                json!({"instances": 2, "first": "c1", "after": 3, "removed": null, "logs": "one\ntwo\n"})
            )
        );
        let labels: Vec<&str> = report.calls.iter().map(|c| c.label.as_str()).collect();
        assert_eq!(
            labels,
            [
                "GET http://marathon:8080/v2/apps/web",
                r#"docker list("squall.app=web")"#,
                r#"docker scale("squall.app", "web", 3)"#,
                r#"docker remove("c1", true)"#,
                r#"docker logs("c1", 2)"#,
            ]
        );
        assert_eq!(report.calls[2].request["host"], "tcp://docker-1:2375");
    }

    #[test]
    fn an_undeclared_call_in_a_script_fails_the_run_naming_the_call() {
        let (outcome, report) = with_stubs(Stubs::default(), || {
            run_script(
                "let x = 1;\nhttp::post(\"http://deploy.internal/hooks\", #{ app: \"web\" })",
            )
        });
        let crate::runtime::Outcome::Failed { message, line, .. } = outcome else {
            panic!("expected a failure, got {outcome:?}");
        };
        assert!(
            message.contains(
                "http POST http://deploy.internal/hooks: the test case declares no answer"
            ),
            "{message}"
        );
        assert_eq!(line, Some(2));
        assert_eq!(
            report.calls[0].request,
            json!({"http": "POST", "url": "http://deploy.internal/hooks", "json": {"app": "web"}})
        );
        let wrong = stubs(json!({"docker": [{"call": "list", "result": {"id": "c1"}}]}));
        let (outcome, _) = with_stubs(wrong, || run_script("docker::list()"));
        assert!(
            matches!(&outcome, crate::runtime::Outcome::Failed { message, .. } if message.contains("docker list: the test case declares a result of type map")),
            "{outcome:?}"
        );
        let (outcome, _) = with_stubs(Stubs::default(), || run_script("docker::stop(\"web-1\")"));
        assert!(
            matches!(&outcome, crate::runtime::Outcome::Failed { message, .. } if message.contains(r#"docker stop("web-1") on "#)),
            "{outcome:?}"
        );
    }

    #[test]
    fn stubs_stack_and_are_removed_on_a_panic() {
        let outer = stubs(json!({"http": [{"url": "http://outer/"}]}));
        let ((), report) = with_stubs(outer, || {
            let inner = Stubs::default();
            let caught = std::panic::catch_unwind(|| {
                with_stubs(inner, || panic!("a script thread panicked"))
            });
            assert!(caught.is_err());
            assert!(get("http://outer/").is_ok());
        });
        assert_eq!(report.calls.len(), 1);
        assert!(!active());
    }
}
