//! The web console, served by `squall run` at `/` (the API stays under `/api/v1`): pages
//! rendered on the server from minijinja templates embedded in the binary, readable without
//! JavaScript, with filters in their URLs; one small script (`assets/console.js`) follows
//! `/api/v1/stream` to update them live.
//!
//! Pages read squall through its own API, called in process (`api_get`): what a page shows is
//! what the API answers (secrets masked the same way), with no second copy of the queries.
//! With `--auth`, a login page trades an API key for a session cookie (`session.rs`); requests
//! that change something must come from the console's own origin.

pub mod graph;
mod session;
mod views;

use std::sync::OnceLock;

use axum::body::Body;
use axum::extract::{Form, Query, State};
use axum::http::{header, HeaderMap, Request, StatusCode};
use axum::response::{Html, IntoResponse, Redirect, Response};
use axum::routing::{get, post};
use axum::Router;
use minijinja::Environment;
use serde::Deserialize;
use serde_json::{json, Value};

use crate::api::AppState;
pub use session::{same_origin, token_of, Sessions, COOKIE};
pub use views::overview_json;

/// What the console keeps: its templates, its sessions, and the API it reads (in process).
pub struct ConsoleState {
    templates: Environment<'static>,
    pub sessions: Sessions,
    /// The API's routes without authentication (the console checked it already).
    api: OnceLock<Router>,
}

impl Default for ConsoleState {
    fn default() -> Self {
        ConsoleState::new()
    }
}

/// The templates, by name; embedded in the binary.
const TEMPLATES: &[(&str, &str)] = &[
    ("base.html", include_str!("templates/base.html")),
    ("macros.html", include_str!("templates/macros.html")),
    ("login.html", include_str!("templates/login.html")),
    ("error.html", include_str!("templates/error.html")),
    ("overview.html", include_str!("templates/overview.html")),
    ("executions.html", include_str!("templates/executions.html")),
    ("execution.html", include_str!("templates/execution.html")),
    ("trace.html", include_str!("templates/trace.html")),
    ("rules.html", include_str!("templates/rules.html")),
    ("rule.html", include_str!("templates/rule.html")),
    ("actions.html", include_str!("templates/actions.html")),
    ("action.html", include_str!("templates/action.html")),
    ("sensors.html", include_str!("templates/sensors.html")),
    ("timers.html", include_str!("templates/timers.html")),
    ("keys.html", include_str!("templates/keys.html")),
    ("packs.html", include_str!("templates/packs.html")),
    ("boards.html", include_str!("templates/boards.html")),
];

const SCRIPT: &str = include_str!("assets/console.js");
const STYLE: &str = include_str!("assets/console.css");

/// The navigation bar: every view, in order.
const NAV: &[(&str, &str, &str)] = &[
    ("overview", "Overview", "/"),
    ("executions", "Executions", "/executions"),
    ("rules", "Rules", "/rules"),
    ("actions", "Actions", "/actions"),
    ("sensors", "Sensors", "/sensors"),
    ("timers", "Timers", "/timers"),
    ("keys", "Keys", "/keys"),
    ("packs", "Packs", "/packs"),
    ("boards", "Boards", "/boards"),
];

impl ConsoleState {
    pub fn new() -> ConsoleState {
        let mut env = Environment::new();
        for (name, source) in TEMPLATES {
            if let Err(e) = env.add_template(name, source) {
                // The templates are part of the binary: a broken one is a build's bug, caught
                // by the tests that render every page.
                tracing::error!(template = name, error = %e, "a console template does not parse");
            }
        }
        env.add_filter("json", |v: minijinja::Value| -> String {
            serde_json::to_string_pretty(&v).unwrap_or_default()
        });
        env.add_filter("duration", |v: Option<f64>| -> String {
            v.map(human_seconds).unwrap_or_default()
        });
        env.add_filter("short_time", |v: Option<String>| -> String {
            v.map(|t| short_time(&t)).unwrap_or_default()
        });
        ConsoleState {
            templates: env,
            sessions: Sessions::default(),
            api: OnceLock::new(),
        }
    }

    /// Gives the console the API's routes (without authentication) to read through.
    pub fn set_api(&self, api: Router) {
        let _ = self.api.set(api);
    }
}

/// `1.2 s`, `3 min 4 s`, `2 h 5 min`.
fn human_seconds(s: f64) -> String {
    if s < 1.0 {
        format!("{:.0} ms", s * 1000.0)
    } else if s < 60.0 {
        format!("{s:.1} s")
    } else if s < 3600.0 {
        format!("{} min {} s", (s / 60.0) as u64, (s % 60.0) as u64)
    } else {
        format!(
            "{} h {} min",
            (s / 3600.0) as u64,
            ((s % 3600.0) / 60.0) as u64
        )
    }
}

/// An RFC 3339 time as `2026-12-05 14:31:02`.
fn short_time(t: &str) -> String {
    let t = t.replace('T', " ");
    let t = t.trim_end_matches('Z');
    t.split('.').next().unwrap_or(t).to_string()
}

/// The console's pages (behind the API's authentication, when it is on).
pub fn routes() -> Router<AppState> {
    Router::new()
        .route("/", get(views::overview))
        .route("/executions", get(views::executions))
        .route("/executions/{id}", get(views::execution))
        .route("/executions/{id}/graph", get(views::execution_graph))
        .route("/executions/{id}/{command}", post(views::execution_command))
        .route("/trace/{id}", get(views::trace))
        .route("/rules", get(views::rules))
        .route("/rules/{rule_ref}", get(views::rule).post(views::rule_test))
        .route("/actions", get(views::actions))
        .route(
            "/actions/{action_ref}",
            get(views::action).post(views::action_run),
        )
        .route("/sensors", get(views::sensors))
        .route("/timers", get(views::timers))
        .route("/keys", get(views::keys))
        .route("/packs", get(views::packs))
        .route("/boards", get(views::boards))
        .route("/logout", post(logout))
}

/// What the console serves to anyone: the login page and its assets.
pub fn public_routes() -> Router<AppState> {
    Router::new()
        .route("/login", get(login_page).post(login))
        .route("/assets/console.js", get(script))
        .route("/assets/console.css", get(style))
}

async fn script() -> Response {
    (
        [
            (header::CONTENT_TYPE, "text/javascript; charset=utf-8"),
            (header::CACHE_CONTROL, "no-cache"),
        ],
        SCRIPT,
    )
        .into_response()
}

async fn style() -> Response {
    (
        [
            (header::CONTENT_TYPE, "text/css; charset=utf-8"),
            (header::CACHE_CONTROL, "no-cache"),
        ],
        STYLE,
    )
        .into_response()
}

/// Who is logged in (set by the API's authentication for a session or a key).
fn user_of(headers: &HeaderMap, state: &AppState) -> Option<String> {
    token_of(headers).and_then(|t| state.console.sessions.user(&t))
}

/// Renders a page with the navigation bar and the common context.
pub(crate) fn render(
    state: &AppState,
    headers: &HeaderMap,
    template: &str,
    page: &str,
    title: &str,
    ctx: Value,
) -> Response {
    let nav: Vec<Value> = NAV
        .iter()
        .map(|(p, name, href)| json!({"page": p, "name": name, "href": href}))
        .collect();
    let mut all = json!({
        "page": page,
        "title": title,
        "nav": nav,
        "auth": state.config.auth,
        "user": user_of(headers, state),
    });
    if let (Value::Object(all), Value::Object(ctx)) = (&mut all, ctx) {
        all.extend(ctx);
    }
    let rendered = state
        .console
        .templates
        .get_template(template)
        .and_then(|t| t.render(&all));
    match rendered {
        Ok(html) => Html(html).into_response(),
        Err(e) => {
            let mut why = e.to_string();
            let mut source = std::error::Error::source(&e);
            while let Some(s) = source {
                why.push_str(&format!(": {s}"));
                source = s.source();
            }
            tracing::error!(template, error = %why, "a console page cannot be rendered");
            (
                StatusCode::INTERNAL_SERVER_ERROR,
                Html(format!(
                    "<!doctype html><title>error</title><p>the page cannot be rendered: {}</p>",
                    minijinja::HtmlEscape(&why)
                )),
            )
                .into_response()
        }
    }
}

/// A page saying what went wrong, with the status the API answered.
pub(crate) fn error_page(
    state: &AppState,
    headers: &HeaderMap,
    status: StatusCode,
    message: &str,
) -> Response {
    let mut r = render(
        state,
        headers,
        "error.html",
        "",
        "Error",
        json!({"status": status.as_u16(), "message": message}),
    );
    *r.status_mut() = status;
    r
}

/// An API answer that is not 2xx.
pub(crate) struct ApiFailure {
    pub status: StatusCode,
    pub message: String,
}

/// Calls the API in process and reads its JSON answer.
pub(crate) async fn api_call(
    state: &AppState,
    method: &str,
    path: &str,
    body: Option<Value>,
) -> Result<Value, ApiFailure> {
    let Some(api) = state.console.api.get().cloned() else {
        return Err(ApiFailure {
            status: StatusCode::SERVICE_UNAVAILABLE,
            message: "the console is not connected to the API".into(),
        });
    };
    let mut req = Request::builder().method(method).uri(path);
    let body = match body {
        Some(b) => {
            req = req.header(header::CONTENT_TYPE, "application/json");
            Body::from(b.to_string())
        }
        None => Body::empty(),
    };
    let req = req.body(body).map_err(|e| ApiFailure {
        status: StatusCode::BAD_REQUEST,
        message: e.to_string(),
    })?;
    let response = match tower::ServiceExt::oneshot(api, req).await {
        Ok(r) => r,
        Err(never) => match never {},
    };
    let status = response.status();
    let bytes = axum::body::to_bytes(response.into_body(), 256 * 1024 * 1024)
        .await
        .unwrap_or_default();
    let value: Value = if bytes.is_empty() {
        Value::Null
    } else {
        serde_json::from_slice(&bytes)
            .unwrap_or_else(|_| Value::String(String::from_utf8_lossy(&bytes).into_owned()))
    };
    if status.is_success() {
        Ok(value)
    } else {
        Err(ApiFailure {
            status,
            message: value["error"]
                .as_str()
                .or(value["faultstring"].as_str())
                .map(str::to_string)
                .unwrap_or_else(|| value.to_string()),
        })
    }
}

/// `GET` through the API.
pub(crate) async fn api_get(state: &AppState, path: &str) -> Result<Value, ApiFailure> {
    api_call(state, "GET", path, None).await
}

#[derive(Deserialize)]
struct LoginQuery {
    next: Option<String>,
}

/// Where to go after logging in: a path of this site only.
fn local_path(next: Option<&str>) -> String {
    match next {
        Some(n) if n.starts_with('/') && !n.starts_with("//") && !n.contains('\\') => n.to_string(),
        _ => "/".to_string(),
    }
}

async fn login_page(
    State(state): State<AppState>,
    headers: HeaderMap,
    Query(q): Query<LoginQuery>,
) -> Response {
    if !state.config.auth {
        return Redirect::to("/").into_response();
    }
    render(
        &state,
        &headers,
        "login.html",
        "login",
        "Log in",
        json!({"next": local_path(q.next.as_deref()), "error": null}),
    )
}

#[derive(Deserialize)]
struct LoginForm {
    key: String,
    next: Option<String>,
}

async fn login(
    State(state): State<AppState>,
    headers: HeaderMap,
    Form(f): Form<LoginForm>,
) -> Response {
    if !state.config.auth {
        return Redirect::to("/").into_response();
    }
    if !same_origin(&headers) {
        return error_page(
            &state,
            &headers,
            StatusCode::FORBIDDEN,
            "a login must come from this console's own page",
        );
    }
    let next = local_path(f.next.as_deref());
    let key = f.key.trim().to_string();
    let engine = state.engine.clone();
    let verified = tokio::task::spawn_blocking(move || engine.store.apikey_verify(&key))
        .await
        .ok()
        .and_then(Result::ok)
        .flatten();
    let Some(k) = verified else {
        let mut r = render(
            &state,
            &headers,
            "login.html",
            "login",
            "Log in",
            json!({"next": next, "error": "unknown or disabled API key"}),
        );
        *r.status_mut() = StatusCode::UNAUTHORIZED;
        return r;
    };
    let token = state.console.sessions.create(&k.user);
    let cookie = format!(
        "{COOKIE}={token}; HttpOnly; SameSite=Strict; Path=/; Max-Age={}",
        session::LIFETIME.as_secs()
    );
    ([(header::SET_COOKIE, cookie)], Redirect::to(&next)).into_response()
}

async fn logout(State(state): State<AppState>, headers: HeaderMap) -> Response {
    if let Some(t) = token_of(&headers) {
        state.console.sessions.end(&t);
    }
    let cookie = format!("{COOKIE}=; HttpOnly; SameSite=Strict; Path=/; Max-Age=0");
    let to = if state.config.auth { "/login" } else { "/" };
    ([(header::SET_COOKIE, cookie)], Redirect::to(to)).into_response()
}

/// Whether a request is for the console's pages (not the API): an unauthenticated one is sent
/// to the login page rather than answered with JSON.
pub fn is_page(path: &str) -> bool {
    !(path.starts_with("/api/")
        || path.starts_with("/auth/")
        || path.starts_with("/v1/")
        || path == "/healthz"
        || path == "/metrics")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_template_parses() {
        let c = ConsoleState::new();
        for (name, _) in TEMPLATES {
            assert!(c.templates.get_template(name).is_ok(), "{name}");
        }
    }

    #[test]
    fn next_paths_stay_on_this_site() {
        assert_eq!(
            local_path(Some("/executions?status=failed")),
            "/executions?status=failed"
        );
        assert_eq!(local_path(Some("//evil.example/")), "/");
        assert_eq!(local_path(Some("https://evil.example/")), "/");
        assert_eq!(local_path(None), "/");
    }

    #[test]
    fn times_and_durations_read_well() {
        assert_eq!(human_seconds(0.0123), "12 ms");
        assert_eq!(human_seconds(4.25), "4.2 s");
        assert_eq!(human_seconds(184.0), "3 min 4 s");
        assert_eq!(
            short_time("2026-12-05T14:31:02.123456Z"),
            "2026-12-05 14:31:02"
        );
    }
}
