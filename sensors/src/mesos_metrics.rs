//! The `mesos_metrics` sensor: every `metrics_interval` seconds it reads the leading Mesos
//! master's `GET /metrics/snapshot` (one flat JSON object mapping each metric's name to a
//! double), keeps the figures listed in [`METRICS`] (tasks by state, frameworks, agents,
//! offers, scheduler messages), works out per-second rates for the [`COUNTERS`], and publishes
//! the result on the process's [`board`]; [`render_metrics`] writes the board as Prometheus
//! text for `/metrics`.
//!
//! Settings (the mesos pack's config, shared with the `mesos` sensor):
//! - `master`: the master's URL (`http://mesos-master:5050`), or a list of URLs.
//! - `metrics_interval` (seconds, default 15): from 0.2 to 3600, fractions allowed. Intervals
//!   under 1 s exist for tests; in production they only load the master.
//! - `principal` / `secret` (optional, together): HTTP basic authentication.
//!
//! Finding the leader, at every poll: the leader of the last poll first, then each configured
//! master in order; the first whose snapshot says `master/elected` 1 is the leader. When none
//! does, each master that answered is asked `GET /master/redirect`, which Mesos answers 307
//! with the leader in Location (often scheme-relative, `//host:5050`), and the master named
//! there is read.
//!
//! A rate is (counter now - counter at the previous poll) / seconds between the two answers,
//! and exists only when both polls read the same leader: the first poll, the first after a
//! leader change, and a poll where a counter went down or `master/uptime_secs` went back (the
//! master restarted) have none. A failed poll leaves the last figures on the board with the
//! error beside them, and the next poll comes an interval later.
//!
//! The sensor emits no trigger instances: its health is its status (connected, one event per
//! poll that worked, the last error). This file must never panic on what a master answers,
//! never block the runtime, never log or publish the secret, and never compute a rate from two
//! different masters' counters.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::future::Future;
use std::pin::Pin;
use std::sync::{OnceLock, RwLock};
use std::time::{Duration, Instant};

use chrono::{DateTime, Utc};
use reqwest::header::LOCATION;
use reqwest::{StatusCode, Url};
use serde::Serialize;
use serde_json::{Map, Value};

use crate::{stopped, Sensor, SensorContext, SensorKind, TriggerTypeInfo};

/// The metrics kept from a snapshot (any the master does not report are simply absent).
pub const METRICS: [&str; 27] = [
    "master/messages_launch_tasks",
    "master/messages_status_update",
    "master/messages_deactivate_framework",
    "master/messages_decline_offers",
    "master/messages_kill_task",
    "master/outstanding_offers",
    "master/frameworks_active",
    "master/frameworks_inactive",
    "master/frameworks_connected",
    "master/tasks_staging",
    "master/tasks_starting",
    "master/tasks_running",
    "master/tasks_killing",
    "master/tasks_finished",
    "master/tasks_failed",
    "master/tasks_killed",
    "master/tasks_lost",
    "master/tasks_error",
    "master/tasks_dropped",
    "master/tasks_gone",
    "master/tasks_unreachable",
    "master/slaves_active",
    "master/slaves_inactive",
    "master/slaves_connected",
    "master/slaves_disconnected",
    "master/elected",
    "master/uptime_secs",
];

/// The metrics among [`METRICS`] that only grow while a master runs, and so get rates. The
/// others are gauges.
pub const COUNTERS: [&str; 12] = [
    "master/messages_launch_tasks",
    "master/messages_status_update",
    "master/messages_deactivate_framework",
    "master/messages_decline_offers",
    "master/messages_kill_task",
    "master/tasks_finished",
    "master/tasks_failed",
    "master/tasks_killed",
    "master/tasks_lost",
    "master/tasks_error",
    "master/tasks_dropped",
    "master/tasks_gone",
];

pub const DEFAULT_INTERVAL_SECS: f64 = 15.0;
/// The shortest `metrics_interval` accepted (for tests; see the file's doc).
pub const MIN_INTERVAL_SECS: f64 = 0.2;
pub const MAX_INTERVAL_SECS: f64 = 3600.0;

const ELECTED: &str = "master/elected";
const UPTIME: &str = "master/uptime_secs";
const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);
/// A whole request, body included. The snapshot asks the master to answer within 5 s
/// (`timeout=5secs` leaves out gauges that are slower), well inside this.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(10);
const SNAPSHOT_QUERY: &str = "timeout=5secs";
/// A master's snapshot is tens of kilobytes; anything this large is not one.
const MAX_SNAPSHOT_BYTES: usize = 16 * 1024 * 1024;
const MAX_ERROR_BODY_CHARS: usize = 300;
const SETTINGS: &str = "master, metrics_interval, principal, secret";

/// The `mesos_metrics` sensor kind, for [`crate::builtin_sensors`].
pub fn kind() -> SensorKind {
    SensorKind {
        name: "mesos_metrics",
        description: "Polls the leading Mesos master's /metrics/snapshot every interval: tasks \
                      by state, frameworks, agents, offers and scheduler messages, with \
                      per-second rates, for the API and /metrics. Emits no trigger instances.",
        trigger_types,
        build: |settings| Ok(Box::new(MetricsSensor::from_settings(settings)?)),
    }
}

/// None: the sensor publishes figures, not events.
pub fn trigger_types() -> Vec<TriggerTypeInfo> {
    Vec::new()
}

// ---- the board ----

/// What the last polls found, for the API and `/metrics`.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct MetricsSnapshot {
    /// The leading master's URL (`http://m1:5050`), as configured or as a redirect named it.
    pub leader: Option<String>,
    /// When the last poll that worked got its answer; `leader`, `values` and `rates` are from
    /// that poll.
    pub collected_at: Option<DateTime<Utc>>,
    pub interval_seconds: f64,
    /// Why the latest poll failed; none when it worked.
    pub error: Option<String>,
    /// The metrics of [`METRICS`] the leader reported, by their Mesos name.
    pub values: BTreeMap<String, f64>,
    /// Per second, for the [`COUNTERS`], since the previous poll of the same leader; empty on
    /// a first poll, after a leader change and after a restart.
    pub rates: BTreeMap<String, f64>,
    /// The seconds the rates were computed over (the time between the two answers).
    pub rate_window_seconds: Option<f64>,
}

/// The process's latest Mesos master figures (one `mesos_metrics` sensor per process).
#[derive(Default)]
pub struct MetricsBoard(RwLock<MetricsSnapshot>);

impl MetricsBoard {
    pub fn snapshot(&self) -> MetricsSnapshot {
        match self.0.read() {
            Ok(s) => s.clone(),
            Err(p) => p.into_inner().clone(),
        }
    }

    fn update(&self, change: impl FnOnce(&mut MetricsSnapshot)) {
        match self.0.write() {
            Ok(mut s) => change(&mut s),
            Err(p) => change(&mut p.into_inner()),
        }
    }
}

/// The board the `mesos_metrics` sensor of this process writes.
pub fn board() -> &'static MetricsBoard {
    static BOARD: OnceLock<MetricsBoard> = OnceLock::new();
    BOARD.get_or_init(MetricsBoard::default)
}

/// The board as Prometheus text (nothing before the first poll that worked).
pub fn render_metrics() -> String {
    render(&board().snapshot())
}

/// `snapshot` as Prometheus text: `squall_mesos_metrics_up` (1 when the latest poll worked,
/// 0 when the figures are from an older one), each value as `squall_mesos_<name>` (a counter
/// or a gauge, `/` becoming `_`) and each rate as the gauge `squall_mesos_<name>_per_second`,
/// all but `up` labelled with the leader.
pub fn render(snapshot: &MetricsSnapshot) -> String {
    let mut out = String::new();
    let (Some(leader), Some(_)) = (&snapshot.leader, snapshot.collected_at) else {
        return out;
    };
    let leader = escape_label(leader);
    let up = "squall_mesos_metrics_up";
    let _ = writeln!(
        out,
        "# HELP {up} 1 when the latest poll of the leading Mesos master's /metrics/snapshot \
         worked, 0 when it failed (the squall_mesos_ figures are then from the last one that did)."
    );
    let _ = writeln!(out, "# TYPE {up} gauge");
    let _ = writeln!(out, "{up} {}", u8::from(snapshot.error.is_none()));
    for (name, value) in &snapshot.values {
        let metric = metric_name(name);
        let kind = if COUNTERS.contains(&name.as_str()) {
            "counter"
        } else {
            "gauge"
        };
        let _ = writeln!(
            out,
            "# HELP {metric} Mesos {name}, from the leading master's /metrics/snapshot."
        );
        let _ = writeln!(out, "# TYPE {metric} {kind}");
        let _ = writeln!(
            out,
            "{metric}{{leader=\"{leader}\"}} {}",
            prometheus_number(*value)
        );
    }
    for (name, rate) in &snapshot.rates {
        let metric = format!("{}_per_second", metric_name(name));
        let _ = writeln!(
            out,
            "# HELP {metric} Mesos {name} per second between the last two polls of the same \
             leading master."
        );
        let _ = writeln!(out, "# TYPE {metric} gauge");
        let _ = writeln!(
            out,
            "{metric}{{leader=\"{leader}\"}} {}",
            prometheus_number(*rate)
        );
    }
    out
}

/// `master/tasks_running` -> `squall_mesos_master_tasks_running`.
fn metric_name(mesos_name: &str) -> String {
    let mut name = String::from("squall_mesos_");
    name.extend(mesos_name.chars().map(|c| {
        if c.is_ascii_alphanumeric() || c == '_' {
            c
        } else {
            '_'
        }
    }));
    name
}

/// A label value as the text format wants it: backslash, double quote and newline escaped.
fn escape_label(value: &str) -> String {
    let mut out = String::with_capacity(value.len());
    for c in value.chars() {
        match c {
            '\\' => out.push_str("\\\\"),
            '"' => out.push_str("\\\""),
            '\n' => out.push_str("\\n"),
            c => out.push(c),
        }
    }
    out
}

fn prometheus_number(value: f64) -> String {
    if value.is_nan() {
        "NaN".to_string()
    } else if value == f64::INFINITY {
        "+Inf".to_string()
    } else if value == f64::NEG_INFINITY {
        "-Inf".to_string()
    } else {
        value.to_string()
    }
}

// ---- rates ----

/// The previous poll that worked, to compute rates from.
#[derive(Default)]
struct RateTracker {
    previous: Option<Sample>,
}

struct Sample {
    leader: String,
    at: Instant,
    values: BTreeMap<String, f64>,
}

#[derive(Debug, Default, PartialEq)]
struct Step {
    rates: BTreeMap<String, f64>,
    window_seconds: Option<f64>,
    /// The leader differs from the previous poll's (false on the first poll).
    leader_changed: bool,
    /// A counter went down or the uptime went back: the master restarted.
    restarted: bool,
}

impl RateTracker {
    /// Takes a poll's values and gives the rates since the previous poll, if they can be had.
    fn observe(&mut self, leader: &str, at: Instant, values: &BTreeMap<String, f64>) -> Step {
        let previous = self.previous.replace(Sample {
            leader: leader.to_string(),
            at,
            values: values.clone(),
        });
        let Some(previous) = previous else {
            return Step::default();
        };
        if previous.leader != leader {
            return Step {
                leader_changed: true,
                ..Step::default()
            };
        }
        let went_down = |name: &str| matches!((previous.values.get(name), values.get(name)), (Some(before), Some(now)) if now < before);
        if COUNTERS.iter().any(|name| went_down(name)) || went_down(UPTIME) {
            return Step {
                restarted: true,
                ..Step::default()
            };
        }
        let seconds = at
            .checked_duration_since(previous.at)
            .map(|d| d.as_secs_f64())
            .unwrap_or(0.0);
        if seconds <= 0.0 {
            return Step::default();
        }
        let rates = COUNTERS
            .iter()
            .filter_map(|name| {
                let before = previous.values.get(*name)?;
                let now = values.get(*name)?;
                Some((name.to_string(), (now - before) / seconds))
            })
            .collect();
        Step {
            rates,
            window_seconds: Some(seconds),
            leader_changed: false,
            restarted: false,
        }
    }
}

// ---- settings ----

/// A configured `mesos_metrics` sensor.
struct MetricsSensor {
    /// The configured masters' base URLs (path ending in `/`), in the order given.
    masters: Vec<Url>,
    interval_seconds: f64,
    credentials: Option<Credentials>,
}

/// Deliberately not `Debug`: the secret must not reach a log.
struct Credentials {
    principal: String,
    secret: String,
}

impl MetricsSensor {
    /// Reads the settings by hand so that every error names the setting and says what was
    /// expected.
    fn from_settings(settings: &Map<String, Value>) -> Result<Self, String> {
        let mut masters = None;
        let mut interval_seconds = DEFAULT_INTERVAL_SECS;
        let mut principal = None;
        let mut secret = None;
        for (key, value) in settings {
            match key.as_str() {
                "master" => masters = Some(parse_masters(value)?),
                "metrics_interval" => {
                    interval_seconds = value
                        .as_f64()
                        .filter(|s| (MIN_INTERVAL_SECS..=MAX_INTERVAL_SECS).contains(s))
                        .ok_or_else(|| {
                            format!(
                                "setting `metrics_interval` must be a number of seconds from \
                                 {MIN_INTERVAL_SECS} to {MAX_INTERVAL_SECS} (got {value})"
                            )
                        })?;
                }
                "principal" => match value {
                    Value::String(s) => principal = Some(s.clone()),
                    _ => {
                        return Err(format!(
                            "setting `principal` must be a string (got {value})"
                        ))
                    }
                },
                // The value is never echoed: it is a password.
                "secret" => match value {
                    Value::String(s) => secret = Some(s.clone()),
                    _ => return Err("setting `secret` must be a string".to_string()),
                },
                other => {
                    return Err(format!(
                        "unknown setting `{other}` for the mesos_metrics sensor (known: {SETTINGS})"
                    ))
                }
            }
        }
        let masters = masters.ok_or_else(|| {
            "setting `master` is required: the Mesos master's URL, e.g. http://mesos-master:5050"
                .to_string()
        })?;
        let credentials = match (principal, secret) {
            (Some(principal), Some(secret)) => Some(Credentials { principal, secret }),
            (None, None) => None,
            (Some(_), None) => return Err("setting `principal` needs `secret` as well".into()),
            (None, Some(_)) => return Err("setting `secret` needs `principal` as well".into()),
        };
        Ok(Self {
            masters,
            interval_seconds,
            credentials,
        })
    }
}

fn parse_masters(value: &Value) -> Result<Vec<Url>, String> {
    crate::mesos::master_texts(value)?
        .into_iter()
        .map(master_base)
        .collect()
}

/// `http://m1:5050`, `http://m1:5050/api/v1` (the `mesos` sensor's endpoint) or a proxy prefix
/// such as `https://proxy/mesos` -> the master's base URL, its path ending in `/`.
fn master_base(text: &str) -> Result<Url, String> {
    let url = Url::parse(text.trim()).map_err(|e| {
        format!("setting `master`: `{text}` is not a URL ({e}); write e.g. http://{text}")
    })?;
    if !url.username().is_empty() || url.password().is_some() {
        // Not echoed: the URL holds a password, and the leader's URL is a /metrics label.
        return Err(
            "setting `master`: put credentials in `principal` and `secret`, not in the URL"
                .to_string(),
        );
    }
    if !matches!(url.scheme(), "http" | "https") || url.host_str().is_none() {
        return Err(format!(
            "setting `master`: `{text}` must be an http:// or https:// URL with a host"
        ));
    }
    let path = url.path().trim_end_matches('/');
    let path = path.strip_suffix("/api/v1").unwrap_or(path).to_string();
    Ok(base_with_path(url, &path))
}

/// `url` with `path` (without its trailing `/`) as its base path, no query, no fragment, no
/// credentials.
fn base_with_path(mut url: Url, path: &str) -> Url {
    url.set_path(&format!("{}/", path.trim_end_matches('/')));
    url.set_query(None);
    url.set_fragment(None);
    // Only fails for URLs that cannot have credentials, which then have none.
    let _ = url.set_username("");
    let _ = url.set_password(None);
    url
}

/// How a master is named on the board and in labels: its base URL without the trailing `/`.
fn master_name(base: &Url) -> String {
    base.as_str().trim_end_matches('/').to_string()
}

fn endpoint(base: &Url, path: &str, query: Option<&str>) -> Url {
    let mut url = base.clone();
    url.set_path(&format!("{}{path}", base.path()));
    url.set_query(query);
    url
}

// ---- polling ----

/// Why a poll found no figures. Each variant names the URL involved.
#[derive(Debug, thiserror::Error)]
enum MetricsError {
    #[error("{url}: request failed: {detail}")]
    Request { url: String, detail: String },
    #[error("{url}: no complete answer within {}s", REQUEST_TIMEOUT.as_secs())]
    Timeout { url: String },
    #[error("{url}: answered {status}: {body}")]
    Status {
        url: String,
        status: StatusCode,
        body: String,
    },
    #[error("{url}: the answer is larger than {MAX_SNAPSHOT_BYTES} bytes")]
    TooLarge { url: String },
    #[error("{url}: the answer is not a JSON object of metrics: {detail}")]
    NotJson { url: String, detail: String },
    #[error("{url}: answered {status} without a usable Location ({detail})")]
    BadRedirect {
        url: String,
        status: StatusCode,
        detail: String,
    },
    #[error("{url}: names {leader} as the leader, but {leader} is not elected")]
    LeaderNotElected { url: String, leader: String },
    #[error("{url}: answered {status} where a 307 to the leader was expected")]
    NoRedirect { url: String, status: StatusCode },
    #[error("no leading master found: {0}")]
    NoLeader(String),
}

impl MetricsError {
    fn request(url: &Url, error: &reqwest::Error) -> Self {
        if error.is_timeout() {
            MetricsError::Timeout {
                url: url.to_string(),
            }
        } else {
            MetricsError::Request {
                url: url.to_string(),
                detail: error_chain(error),
            }
        }
    }
}

/// One master's snapshot.
struct Reading {
    master: Url,
    values: BTreeMap<String, f64>,
    /// When the answer's headers arrived (the master computed the figures just before).
    at: Instant,
    collected_at: DateTime<Utc>,
}

impl Reading {
    fn elected(&self) -> bool {
        self.values.get(ELECTED) == Some(&1.0)
    }
}

impl MetricsSensor {
    async fn run_until_stopped(self, ctx: SensorContext) {
        let mut shutdown = ctx.shutdown.clone();
        // A fresh board: figures left by an earlier sensor in this process are not ours.
        board().update(|s| {
            *s = MetricsSnapshot {
                interval_seconds: self.interval_seconds,
                ..MetricsSnapshot::default()
            }
        });
        // Redirects are never followed by the client: reqwest would drop the Authorization
        // header on the way to another host, and /master/redirect is read, not followed.
        let client = match reqwest::Client::builder()
            .connect_timeout(CONNECT_TIMEOUT)
            .timeout(REQUEST_TIMEOUT)
            .redirect(reqwest::redirect::Policy::none())
            .build()
        {
            Ok(client) => client,
            Err(e) => {
                let message = format!("cannot build an HTTP client: {}", error_chain(&e));
                tracing::error!(sensor = "mesos_metrics", "{message}");
                ctx.status.error(message.clone());
                board().update(|s| s.error = Some(message));
                stopped(&mut shutdown).await;
                return;
            }
        };
        let interval = Duration::from_secs_f64(self.interval_seconds);
        let mut rates = RateTracker::default();
        let mut leader: Option<Url> = None;
        loop {
            let began = Instant::now();
            let outcome = tokio::select! {
                outcome = self.read_leader(&client, leader.as_ref()) => outcome,
                _ = stopped(&mut shutdown) => break,
            };
            match outcome {
                Ok(reading) => {
                    let name = master_name(&reading.master);
                    let step = rates.observe(&name, reading.at, &reading.values);
                    if step.leader_changed {
                        tracing::info!(sensor = "mesos_metrics", leader = %name, "the leading master changed; rates start again");
                        ctx.status.reconnect();
                    } else if step.restarted {
                        tracing::info!(sensor = "mesos_metrics", leader = %name, "the leading master's counters went back (a restart?); rates start again");
                    }
                    board().update(|s| {
                        *s = MetricsSnapshot {
                            leader: Some(name),
                            collected_at: Some(reading.collected_at),
                            interval_seconds: self.interval_seconds,
                            error: None,
                            values: reading.values,
                            rates: step.rates,
                            rate_window_seconds: step.window_seconds,
                        }
                    });
                    leader = Some(reading.master);
                    ctx.status.set_connected(true);
                    ctx.status.event();
                }
                Err(error) => {
                    let message = error.to_string();
                    tracing::warn!(sensor = "mesos_metrics", error = %message, "poll failed; trying again next interval");
                    ctx.status.set_connected(false);
                    ctx.status.error(message.clone());
                    board().update(|s| s.error = Some(message));
                }
            }
            let wait = interval.saturating_sub(began.elapsed());
            tokio::select! {
                _ = tokio::time::sleep(wait) => {}
                _ = stopped(&mut shutdown) => break,
            }
        }
        ctx.status.set_connected(false);
    }

    /// The leader's snapshot: the last leader first, then each configured master, then the
    /// masters that redirects name.
    async fn read_leader(
        &self,
        client: &reqwest::Client,
        last: Option<&Url>,
    ) -> Result<Reading, MetricsError> {
        let mut candidates: Vec<&Url> = last.into_iter().collect();
        for master in &self.masters {
            if !candidates.contains(&master) {
                candidates.push(master);
            }
        }
        let mut failures: Vec<String> = Vec::new();
        let mut tried: Vec<&Url> = Vec::new();
        let mut standing_by: Vec<&Url> = Vec::new();
        for base in candidates {
            tried.push(base);
            match self.snapshot(client, base).await {
                Ok(reading) if reading.elected() => return Ok(reading),
                Ok(_) => standing_by.push(base),
                Err(e) => failures.push(e.to_string()),
            }
        }
        for base in &standing_by {
            let named = match self.redirect(client, base).await {
                Ok(named) => named,
                Err(e) => {
                    failures.push(e.to_string());
                    continue;
                }
            };
            if tried.contains(&&named) {
                if standing_by.contains(&&named) {
                    failures.push(
                        MetricsError::LeaderNotElected {
                            url: base.to_string(),
                            leader: master_name(&named),
                        }
                        .to_string(),
                    );
                }
                continue;
            }
            match self.snapshot(client, &named).await {
                Ok(reading) if reading.elected() => return Ok(reading),
                Ok(_) => failures.push(
                    MetricsError::LeaderNotElected {
                        url: base.to_string(),
                        leader: master_name(&named),
                    }
                    .to_string(),
                ),
                Err(e) => failures.push(e.to_string()),
            }
        }
        if failures.is_empty() {
            failures.push("no master says it is elected".to_string());
        }
        Err(MetricsError::NoLeader(failures.join("; ")))
    }

    fn get(&self, client: &reqwest::Client, url: Url) -> reqwest::RequestBuilder {
        let request = client.get(url);
        match &self.credentials {
            Some(c) => request.basic_auth(&c.principal, Some(&c.secret)),
            None => request,
        }
    }

    /// `GET <base>/metrics/snapshot`, keeping the metrics of [`METRICS`].
    async fn snapshot(
        &self,
        client: &reqwest::Client,
        base: &Url,
    ) -> Result<Reading, MetricsError> {
        let url = endpoint(base, "metrics/snapshot", Some(SNAPSHOT_QUERY));
        let mut response = self
            .get(client, url.clone())
            .send()
            .await
            .map_err(|e| MetricsError::request(&url, &e))?;
        let at = Instant::now();
        let collected_at = Utc::now();
        let status = response.status();
        if !status.is_success() {
            return Err(MetricsError::Status {
                url: url.to_string(),
                status,
                body: error_body(response).await,
            });
        }
        if response
            .content_length()
            .is_some_and(|n| n > MAX_SNAPSHOT_BYTES as u64)
        {
            return Err(MetricsError::TooLarge {
                url: url.to_string(),
            });
        }
        let mut body = Vec::new();
        while let Some(chunk) = response
            .chunk()
            .await
            .map_err(|e| MetricsError::request(&url, &e))?
        {
            if body.len() + chunk.len() > MAX_SNAPSHOT_BYTES {
                return Err(MetricsError::TooLarge {
                    url: url.to_string(),
                });
            }
            body.extend_from_slice(&chunk);
        }
        let all: Map<String, Value> =
            serde_json::from_slice(&body).map_err(|e| MetricsError::NotJson {
                url: url.to_string(),
                detail: e.to_string(),
            })?;
        Ok(Reading {
            master: base.clone(),
            values: select(&all),
            at,
            collected_at,
        })
    }

    /// `GET <base>/master/redirect`: the leader's base URL, from the 307's Location.
    async fn redirect(&self, client: &reqwest::Client, base: &Url) -> Result<Url, MetricsError> {
        let url = endpoint(base, "master/redirect", None);
        let response = self
            .get(client, url.clone())
            .send()
            .await
            .map_err(|e| MetricsError::request(&url, &e))?;
        let status = response.status();
        if status.is_redirection() {
            return leader_from_location(&url, &response).map_err(|detail| {
                MetricsError::BadRedirect {
                    url: url.to_string(),
                    status,
                    detail,
                }
            });
        }
        if status.is_success() {
            return Err(MetricsError::NoRedirect {
                url: url.to_string(),
                status,
            });
        }
        // 503 "No leader elected" while an election runs.
        Err(MetricsError::Status {
            url: url.to_string(),
            status,
            body: error_body(response).await,
        })
    }
}

impl Sensor for MetricsSensor {
    fn run(self: Box<Self>, ctx: SensorContext) -> Pin<Box<dyn Future<Output = ()> + Send>> {
        Box::pin(self.run_until_stopped(ctx))
    }
}

/// The metrics of [`METRICS`] in a snapshot, those that are numbers.
fn select(snapshot: &Map<String, Value>) -> BTreeMap<String, f64> {
    METRICS
        .iter()
        .filter_map(|name| Some((name.to_string(), snapshot.get(*name)?.as_f64()?)))
        .collect()
}

/// The leader's base URL from a redirect's Location, resolved against the request (so that
/// Mesos' scheme-relative `//host:5050` keeps the scheme).
fn leader_from_location(from: &Url, response: &reqwest::Response) -> Result<Url, String> {
    let location = response
        .headers()
        .get(LOCATION)
        .ok_or_else(|| "no Location header".to_string())?
        .to_str()
        .map_err(|_| "Location is not ASCII".to_string())?;
    let next = from
        .join(location)
        .map_err(|e| format!("Location `{location}`: {e}"))?;
    if !matches!(next.scheme(), "http" | "https") || next.host_str().is_none() {
        return Err(format!("Location `{location}` is not an http(s) URL"));
    }
    // Mesos names the leader's root; a Location on the leader's own redirect endpoint means the
    // same master.
    let path = next.path().trim_end_matches('/');
    let path = path
        .strip_suffix("/master/redirect")
        .unwrap_or(path)
        .to_string();
    Ok(base_with_path(next, &path))
}

/// The start of an error answer's body, for the message.
async fn error_body(response: reqwest::Response) -> String {
    match response.text().await {
        Ok(text) if text.trim().is_empty() => "(empty body)".to_string(),
        Ok(text) => text.trim().chars().take(MAX_ERROR_BODY_CHARS).collect(),
        Err(e) => format!("(body unreadable: {e})"),
    }
}

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
    use serde_json::json;

    fn settings(value: Value) -> Map<String, Value> {
        value.as_object().expect("an object").clone()
    }

    fn build_error(value: Value) -> String {
        match MetricsSensor::from_settings(&settings(value)) {
            Ok(_) => panic!("settings accepted"),
            Err(e) => e,
        }
    }

    #[test]
    fn settings_accept_one_or_several_masters() {
        let one = MetricsSensor::from_settings(&settings(json!({"master": "http://m1:5050"})))
            .expect("valid");
        assert_eq!(one.masters[0].as_str(), "http://m1:5050/");
        assert_eq!(master_name(&one.masters[0]), "http://m1:5050");
        assert_eq!(one.interval_seconds, 15.0);
        assert!(one.credentials.is_none());

        let many = MetricsSensor::from_settings(&settings(json!({
            "master": ["http://m1:5050/", "https://proxy/mesos", "http://m3:5050/api/v1?x=1"],
            "metrics_interval": 0.5,
            "principal": "ops", "secret": "s3cret",
        })))
        .expect("valid");
        let urls: Vec<&str> = many.masters.iter().map(Url::as_str).collect();
        assert_eq!(
            urls,
            ["http://m1:5050/", "https://proxy/mesos/", "http://m3:5050/"]
        );
        assert_eq!(many.interval_seconds, 0.5);
        assert!(many.credentials.is_some());
        assert_eq!(
            endpoint(&many.masters[1], "metrics/snapshot", Some(SNAPSHOT_QUERY)).as_str(),
            "https://proxy/mesos/metrics/snapshot?timeout=5secs"
        );
        assert_eq!(
            endpoint(&many.masters[0], "master/redirect", None).as_str(),
            "http://m1:5050/master/redirect"
        );
    }

    #[test]
    fn settings_errors_name_the_setting() {
        let cases = [
            (
                json!({"master": "http://m:5050", "mastre": "x"}),
                "`mastre`",
            ),
            (json!({}), "`master` is required"),
            (json!({"master": []}), "`master` lists no URL"),
            (json!({"master": 5050}), "`master` must be a URL"),
            (json!({"master": ["http://m", 1]}), "every entry"),
            (json!({"master": "m1:5050"}), "http:// or https://"),
            (json!({"master": "mesos-master"}), "is not a URL"),
            (
                json!({"master": "http://m", "metrics_interval": 0.1}),
                "`metrics_interval`",
            ),
            (
                json!({"master": "http://m", "metrics_interval": 3601}),
                "`metrics_interval`",
            ),
            (
                json!({"master": "http://m", "metrics_interval": "15"}),
                "`metrics_interval`",
            ),
            (
                json!({"master": "http://m", "principal": "ops"}),
                "needs `secret`",
            ),
            (
                json!({"master": "http://m", "secret": "pw"}),
                "needs `principal`",
            ),
        ];
        for (value, expected) in cases {
            let error = build_error(value.clone());
            assert!(error.contains(expected), "{value}: {error}");
        }
        let error = build_error(json!({"master": "http://m", "secret": 12345}));
        assert!(!error.contains("12345"), "the secret leaked: {error}");
        let error = build_error(json!({"master": "http://ops:hunter2@m:5050"}));
        assert!(error.contains("`principal`"), "{error}");
        assert!(!error.contains("hunter2"), "the password leaked: {error}");
    }

    #[test]
    fn select_keeps_the_listed_numbers_only() {
        let snapshot = json!({
            "master/tasks_running": 100.0, "master/elected": 1, "master/uptime_secs": 1234.5,
            "master/cpus_total": 64, "allocator/event_queue_dispatches": 0,
            "master/tasks_failed": "7",
        });
        let values = select(snapshot.as_object().expect("object"));
        let expected: BTreeMap<String, f64> = [
            ("master/elected", 1.0),
            ("master/tasks_running", 100.0),
            ("master/uptime_secs", 1234.5),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_string(), v))
        .collect();
        assert_eq!(values, expected);
    }

    #[test]
    fn every_counter_is_a_listed_metric() {
        for counter in COUNTERS {
            assert!(METRICS.contains(&counter), "{counter}");
        }
    }

    fn values(pairs: &[(&str, f64)]) -> BTreeMap<String, f64> {
        pairs.iter().map(|(k, v)| (k.to_string(), *v)).collect()
    }

    #[test]
    fn rates_come_from_two_polls_of_the_same_leader() {
        let mut tracker = RateTracker::default();
        let t0 = Instant::now();
        let first = values(&[
            ("master/messages_launch_tasks", 100.0),
            ("master/tasks_running", 10.0),
            ("master/tasks_failed", 7.0),
            ("master/uptime_secs", 100.0),
        ]);
        assert_eq!(tracker.observe("http://m1", t0, &first), Step::default());

        let second = values(&[
            ("master/messages_launch_tasks", 160.0),
            ("master/tasks_running", 50.0),
            ("master/tasks_failed", 7.0),
            ("master/tasks_lost", 1.0),
            ("master/uptime_secs", 102.0),
        ]);
        let step = tracker.observe("http://m1", t0 + Duration::from_secs(2), &second);
        assert_eq!(step.window_seconds, Some(2.0));
        // Gauges get none; a counter the previous poll did not have gets none.
        assert_eq!(
            step.rates,
            values(&[
                ("master/messages_launch_tasks", 30.0),
                ("master/tasks_failed", 0.0)
            ])
        );

        // Another leader: no rates, even though the counters grew.
        let other = values(&[("master/messages_launch_tasks", 5000.0)]);
        let step = tracker.observe("http://m2", t0 + Duration::from_secs(4), &other);
        assert!(step.leader_changed);
        assert!(step.rates.is_empty());
        assert_eq!(step.window_seconds, None);
        let step = tracker.observe(
            "http://m2",
            t0 + Duration::from_secs(5),
            &values(&[("master/messages_launch_tasks", 5010.0)]),
        );
        assert_eq!(
            step.rates,
            values(&[("master/messages_launch_tasks", 10.0)])
        );
    }

    #[test]
    fn a_restarted_master_gives_no_rates_once() {
        let mut tracker = RateTracker::default();
        let t0 = Instant::now();
        let at = |s: u64| t0 + Duration::from_secs(s);
        tracker.observe(
            "m",
            at(0),
            &values(&[
                ("master/messages_launch_tasks", 100.0),
                ("master/uptime_secs", 500.0),
            ]),
        );
        let step = tracker.observe(
            "m",
            at(1),
            &values(&[
                ("master/messages_launch_tasks", 3.0),
                ("master/uptime_secs", 1.0),
            ]),
        );
        assert!(step.restarted && step.rates.is_empty());
        // Counters that grew past their old values, but the uptime says it restarted.
        tracker.observe(
            "m",
            at(2),
            &values(&[
                ("master/messages_launch_tasks", 10.0),
                ("master/uptime_secs", 600.0),
            ]),
        );
        let step = tracker.observe(
            "m",
            at(3),
            &values(&[
                ("master/messages_launch_tasks", 20.0),
                ("master/uptime_secs", 2.0),
            ]),
        );
        assert!(step.restarted && step.rates.is_empty());
        let step = tracker.observe(
            "m",
            at(5),
            &values(&[
                ("master/messages_launch_tasks", 30.0),
                ("master/uptime_secs", 4.0),
            ]),
        );
        assert_eq!(step.rates, values(&[("master/messages_launch_tasks", 5.0)]));
    }

    #[test]
    fn render_writes_the_text_format() {
        assert_eq!(render(&MetricsSnapshot::default()), "");
        let snapshot = MetricsSnapshot {
            leader: Some("http://m1:5050/\"x\"\\\n".to_string()),
            collected_at: Some(Utc::now()),
            interval_seconds: 15.0,
            error: None,
            values: values(&[
                ("master/tasks_running", 100.0),
                ("master/tasks_failed", 7.0),
                ("master/uptime_secs", 1234.5),
            ]),
            rates: values(&[
                ("master/tasks_failed", 0.25),
                ("master/tasks_lost", f64::NAN),
            ]),
            rate_window_seconds: Some(4.0),
        };
        let text = render(&snapshot);
        let label = r#"{leader="http://m1:5050/\"x\"\\\n"}"#;
        for line in [
            "# TYPE squall_mesos_metrics_up gauge".to_string(),
            "squall_mesos_metrics_up 1".to_string(),
            "# TYPE squall_mesos_master_tasks_running gauge".to_string(),
            format!("squall_mesos_master_tasks_running{label} 100"),
            "# TYPE squall_mesos_master_tasks_failed counter".to_string(),
            format!("squall_mesos_master_tasks_failed{label} 7"),
            format!("squall_mesos_master_uptime_secs{label} 1234.5"),
            "# TYPE squall_mesos_master_tasks_failed_per_second gauge".to_string(),
            format!("squall_mesos_master_tasks_failed_per_second{label} 0.25"),
            format!("squall_mesos_master_tasks_lost_per_second{label} NaN"),
        ] {
            assert!(
                text.lines().any(|l| l == line),
                "missing {line:?} in\n{text}"
            );
        }
        // Every sample line is a name, an optional label set and a number.
        for line in text.lines().filter(|l| !l.starts_with('#')) {
            assert!(line.starts_with("squall_mesos_"), "{line}");
        }

        let failed = MetricsSnapshot {
            error: Some("no leading master found".to_string()),
            ..snapshot
        };
        assert!(render(&failed)
            .lines()
            .any(|l| l == "squall_mesos_metrics_up 0"));
        assert_eq!(prometheus_number(f64::INFINITY), "+Inf");
        assert_eq!(prometheus_number(f64::NEG_INFINITY), "-Inf");
        assert_eq!(
            metric_name("master/tasks-odd.name"),
            "squall_mesos_master_tasks_odd_name"
        );
    }
}
