//! The capacity collector: every `interval` it reads each running container's cgroup (see
//! [`crate::cgroup`]; no `docker stats` streams), groups the containers by their app label and a
//! cluster name, and keeps per app: containers online against expected, CPU (a rate: % of the
//! containers' CPU limit, or of the host's cores) and memory. It emits trigger instances only
//! when something changes, as Prometheus alerting rules would: `capacity.threshold` when a
//! metric stays above a threshold for its `for` and when it comes back under it, and
//! `capacity.below_expected` when an app has fewer containers online than expected for
//! `below_expected_for` seconds, and when it has them again.
//!
//! Settings (`configs/capacity.yaml`, checked against the capacity pack's schema):
//! `interval` (s, 10), `cluster` (the host name), `app_label` (`squall.app`), `expected_label`
//! (`squall.expected`), `expected` (app -> instances), `marathon_url` and
//! `marathon_app_prefix` (expected instances from Marathon's apps), `thresholds` (`metric`:
//! cpu|memory, `above` %, `for` s, `apps`), `below_expected_for` (s, 30), `docker_host`,
//! `cgroup_root` (`/sys/fs/cgroup`), `proc_root` (`/proc`). Expected instances come from the
//! `expected` setting, else Marathon, else the label.
//!
//! The latest figures are on the process's [`board`] (the API's `/api/v1/capacity` and
//! `/metrics` read it). Which alerts are firing is the sensor's checkpoint, so an alert that
//! cleared while squall was down is resolved when it starts. This file must never block the
//! runtime: cgroup reads run on the blocking pool.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::future::Future;
use std::path::PathBuf;
use std::pin::Pin;
use std::sync::{Arc, OnceLock, RwLock};
use std::time::{Duration, Instant};

use bollard::query_parameters::ListContainersOptions;
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use serde_json::{json, Map, Value};

use crate::cgroup::{cpu_percent, memory_percent, CgroupReader, CgroupSample};
use crate::{
    backoff_sleep, stopped, Sensor, SensorContext, SensorEvent, SensorKind, TriggerTypeInfo,
};

/// A metric above its threshold for its `for`, and back under it.
pub const THRESHOLD: &str = "capacity.threshold";
/// An app with fewer containers online than expected, and back to its count.
pub const BELOW_EXPECTED: &str = "capacity.below_expected";

/// The capacity sensor kind, for [`crate::builtin_sensors`].
pub fn kind() -> SensorKind {
    SensorKind {
        name: "capacity",
        description: "Reads running containers' cgroups every interval: per app containers \
                      online vs expected, CPU and memory; emits threshold and below-expected \
                      changes.",
        trigger_types,
        build: |settings| Ok(Box::new(CapacitySensor::from_settings(settings)?)),
    }
}

/// The trigger types the collector emits.
pub fn trigger_types() -> Vec<TriggerTypeInfo> {
    let string = |d: &str| json!({"type": "string", "description": d});
    let number = |d: &str| json!({"type": "number", "description": d});
    vec![
        TriggerTypeInfo {
            reference: THRESHOLD,
            description: "An app's CPU or memory stayed above a threshold for its `for` \
                          (status firing), or came back under it (status resolved).",
            payload_schema: json!({"type": "object", "properties": {
                "app": string("The app (its containers' app label)."),
                "cluster": string("The cluster (the collector's setting, else its host name)."),
                "metric": string("cpu or memory."),
                "value": number("The app's average over its containers, in %."),
                "threshold": number("The threshold, in %."),
                "for_seconds": number("How long it had to stay above."),
                "status": string("firing or resolved."),
                "online": number("Containers running."),
                "expected": number("Containers expected (absent when unknown)."),
            }}),
        },
        TriggerTypeInfo {
            reference: BELOW_EXPECTED,
            description: "An app had fewer containers online than expected for \
                          below_expected_for seconds (status firing), or has them again \
                          (status resolved).",
            payload_schema: json!({"type": "object", "properties": {
                "app": string("The app."),
                "cluster": string("The cluster."),
                "online": number("Containers running."),
                "expected": number("Containers expected."),
                "missing": number("expected - online (0 when resolved)."),
                "for_seconds": number("How long it had to last."),
                "status": string("firing or resolved."),
            }}),
        },
    ]
}

// ---- settings ----

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Metric {
    Cpu,
    Memory,
}

impl Metric {
    fn name(self) -> &'static str {
        match self {
            Metric::Cpu => "cpu",
            Metric::Memory => "memory",
        }
    }
}

/// One threshold, as a Prometheus alerting rule would say it: `metric > above for N s`.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Threshold {
    pub metric: Metric,
    pub above: f64,
    #[serde(rename = "for", default)]
    pub for_seconds: f64,
    /// Only these apps (every app when empty).
    #[serde(default)]
    pub apps: Vec<String>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
struct Settings {
    #[serde(default = "ten")]
    interval: f64,
    #[serde(default)]
    cluster: String,
    #[serde(default = "app_label")]
    app_label: String,
    #[serde(default = "expected_label")]
    expected_label: String,
    #[serde(default)]
    expected: BTreeMap<String, u64>,
    #[serde(default)]
    marathon_url: String,
    #[serde(default = "slash")]
    marathon_app_prefix: String,
    #[serde(default)]
    thresholds: Vec<Threshold>,
    #[serde(default = "thirty")]
    below_expected_for: f64,
    #[serde(default)]
    docker_host: String,
    #[serde(default = "cgroup_root")]
    cgroup_root: PathBuf,
    #[serde(default = "proc_root")]
    proc_root: PathBuf,
}

fn ten() -> f64 {
    10.0
}
fn thirty() -> f64 {
    30.0
}
fn app_label() -> String {
    "squall.app".into()
}
fn expected_label() -> String {
    "squall.expected".into()
}
fn slash() -> String {
    "/".into()
}
fn cgroup_root() -> PathBuf {
    PathBuf::from("/sys/fs/cgroup")
}
fn proc_root() -> PathBuf {
    PathBuf::from("/proc")
}

// ---- what the collector knows ----

/// One container's latest figures.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct ContainerCapacity {
    pub id: String,
    pub name: String,
    pub cpu_percent: f64,
    pub cpu_limit_cores: Option<f64>,
    pub memory_bytes: u64,
    pub memory_limit_bytes: Option<u64>,
    pub memory_percent: f64,
}

/// One app's latest figures on one cluster.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct AppCapacity {
    pub app: String,
    pub cluster: String,
    pub online: usize,
    pub expected: Option<u64>,
    /// Averages over the app's containers (0 with none).
    pub cpu_percent: f64,
    pub memory_percent: f64,
    pub memory_bytes: u64,
    pub containers: Vec<ContainerCapacity>,
}

/// The latest collection, for the API and `/metrics`.
#[derive(Debug, Clone, Default, Serialize)]
pub struct Snapshot {
    pub collected_at: Option<DateTime<Utc>>,
    pub interval_seconds: f64,
    pub apps: Vec<AppCapacity>,
    /// Why the last collection failed, if it did.
    pub error: Option<String>,
}

/// The process's latest capacity figures (one collector per process).
#[derive(Default)]
pub struct Board(RwLock<Snapshot>);

impl Board {
    pub fn snapshot(&self) -> Snapshot {
        match self.0.read() {
            Ok(s) => s.clone(),
            Err(p) => p.into_inner().clone(),
        }
    }
    fn set(&self, snapshot: Snapshot) {
        match self.0.write() {
            Ok(mut s) => *s = snapshot,
            Err(p) => *p.into_inner() = snapshot,
        }
    }
}

/// The board the collector of this process writes.
pub fn board() -> &'static Board {
    static BOARD: OnceLock<Board> = OnceLock::new();
    BOARD.get_or_init(Board::default)
}

// ---- alerts: when to emit (pure) ----

#[derive(Debug, Clone, Copy, PartialEq)]
enum AlertState {
    /// Above since then (seconds on the collector's clock), not yet for long enough.
    Pending(f64),
    Firing,
}

/// Alert states by key (`threshold:<i>:<app>` or `below:<app>`), stepped once per collection.
#[derive(Debug, Default)]
pub struct Alerts {
    states: HashMap<String, AlertState>,
    /// The last expected count seen per app, so an app whose containers all stopped (and so
    /// carry no label to read) is still found below it.
    last_expected: HashMap<String, u64>,
}

impl Alerts {
    /// Starts with these alerts firing (the checkpoint): each resolves at the first collection
    /// that finds it no longer true.
    pub fn with_firing(keys: impl IntoIterator<Item = String>) -> Alerts {
        Alerts {
            states: keys.into_iter().map(|k| (k, AlertState::Firing)).collect(),
            last_expected: HashMap::new(),
        }
    }

    /// The alerts firing now (the checkpoint's content).
    pub fn firing(&self) -> Vec<String> {
        let mut keys: Vec<String> = self
            .states
            .iter()
            .filter(|(_, s)| **s == AlertState::Firing)
            .map(|(k, _)| k.clone())
            .collect();
        keys.sort();
        keys
    }

    /// One collection at `now` (seconds): the events to emit, firings and resolutions.
    pub fn step(
        &mut self,
        now: f64,
        cluster: &str,
        apps: &[AppCapacity],
        thresholds: &[Threshold],
        below_for: f64,
    ) -> Vec<(String, Value)> {
        let mut out = Vec::new();
        let mut seen = HashSet::new();
        for app in apps {
            if let Some(e) = app.expected {
                self.last_expected.insert(app.app.clone(), e);
            }
        }
        // Apps with no container left are still judged: against what they should have, and
        // so that their alerts resolve (as a Prometheus alert does when its series is gone).
        let mut all: Vec<AppCapacity> = apps.to_vec();
        let mut vanished: Vec<String> = self.last_expected.keys().cloned().collect();
        vanished.extend(self.states.keys().filter_map(|k| {
            k.strip_prefix("below:")
                .or_else(|| {
                    k.strip_prefix("threshold:")
                        .and_then(|r| r.split_once(':').map(|(_, app)| app))
                })
                .map(str::to_string)
        }));
        vanished.sort();
        vanished.dedup();
        for name in vanished {
            if !all.iter().any(|a| a.app == name) {
                all.push(AppCapacity {
                    expected: self.last_expected.get(&name).copied(),
                    app: name,
                    cluster: cluster.to_string(),
                    online: 0,
                    cpu_percent: 0.0,
                    memory_percent: 0.0,
                    memory_bytes: 0,
                    containers: Vec::new(),
                });
            }
        }
        for app in &all {
            for (i, t) in thresholds.iter().enumerate() {
                if !t.apps.is_empty() && !t.apps.contains(&app.app) {
                    continue;
                }
                let value = match t.metric {
                    Metric::Cpu => app.cpu_percent,
                    Metric::Memory => app.memory_percent,
                };
                let key = format!("threshold:{i}:{}", app.app);
                seen.insert(key.clone());
                let above = app.online > 0 && value > t.above;
                if let Some(status) = self.transition(&key, above, now, t.for_seconds) {
                    out.push((
                        THRESHOLD.to_string(),
                        json!({
                            "app": app.app, "cluster": app.cluster, "metric": t.metric.name(),
                            "value": round2(value), "threshold": t.above,
                            "for_seconds": t.for_seconds, "status": status,
                            "online": app.online, "expected": app.expected,
                        }),
                    ));
                }
            }
            if let Some(expected) = app.expected {
                let key = format!("below:{}", app.app);
                seen.insert(key.clone());
                let below = (app.online as u64) < expected;
                if let Some(status) = self.transition(&key, below, now, below_for) {
                    out.push((
                        BELOW_EXPECTED.to_string(),
                        json!({
                            "app": app.app, "cluster": app.cluster, "online": app.online,
                            "expected": expected,
                            "missing": expected.saturating_sub(app.online as u64),
                            "for_seconds": below_for, "status": status,
                        }),
                    ));
                }
            }
        }
        // An alert whose app or threshold is gone (settings changed) resolves.
        let gone: Vec<String> = self
            .states
            .keys()
            .filter(|k| !seen.contains(*k))
            .cloned()
            .collect();
        for key in gone {
            if self.states.remove(&key) == Some(AlertState::Firing) {
                tracing::info!(alert = %key, "capacity alert dropped: its app or threshold is gone");
            }
        }
        out
    }

    /// The alert `key`'s next state given whether its condition holds; `Some(status)` when
    /// that is an event.
    fn transition(
        &mut self,
        key: &str,
        holds: bool,
        now: f64,
        for_seconds: f64,
    ) -> Option<&'static str> {
        let state = self.states.get(key).copied();
        match (state, holds) {
            (None, true) if for_seconds <= 0.0 => {
                self.states.insert(key.to_string(), AlertState::Firing);
                Some("firing")
            }
            (None, true) => {
                self.states
                    .insert(key.to_string(), AlertState::Pending(now));
                None
            }
            (Some(AlertState::Pending(since)), true) if now - since >= for_seconds => {
                self.states.insert(key.to_string(), AlertState::Firing);
                Some("firing")
            }
            (Some(_), true) | (None, false) => None,
            (Some(AlertState::Pending(_)), false) => {
                self.states.remove(key);
                None
            }
            (Some(AlertState::Firing), false) => {
                self.states.remove(key);
                Some("resolved")
            }
        }
    }
}

fn round2(v: f64) -> f64 {
    (v * 100.0).round() / 100.0
}

// ---- the sensor ----

pub struct CapacitySensor {
    settings: Settings,
    cluster: String,
}

impl CapacitySensor {
    pub fn from_settings(settings: &Map<String, Value>) -> Result<Self, String> {
        let settings: Settings = serde_json::from_value(Value::Object(settings.clone()))
            .map_err(|e| format!("capacity sensor: {e}"))?;
        if !(settings.interval >= 1.0 && settings.interval <= 3600.0) {
            return Err(format!(
                "capacity sensor: setting `interval` must be 1 to 3600 seconds, got {}",
                settings.interval
            ));
        }
        for t in &settings.thresholds {
            if !(t.above.is_finite() && t.for_seconds >= 0.0) {
                return Err(format!(
                    "capacity sensor: a threshold on {} needs a number `above` and a `for` of 0 or more seconds",
                    t.metric.name()
                ));
            }
        }
        if !settings.marathon_url.is_empty() {
            reqwest::Url::parse(&settings.marathon_url).map_err(|e| {
                format!("capacity sensor: setting `marathon_url` is not a valid URL ({e})")
            })?;
        }
        crate::docker::checked_host(&settings.docker_host)
            .map_err(|e| format!("capacity sensor: setting `docker_host`: {e}"))?;
        let cluster = if settings.cluster.trim().is_empty() {
            host_name()
        } else {
            settings.cluster.clone()
        };
        Ok(CapacitySensor { settings, cluster })
    }

    async fn run_until_shutdown(self, mut ctx: SensorContext) {
        let docker = match crate::docker::connect_to(&self.settings.docker_host) {
            Ok(d) => d,
            Err(e) => {
                ctx.status.error(format!("capacity: {e}"));
                tracing::warn!(error = %e, "capacity collector cannot reach Docker");
                return;
            }
        };
        let reader = match CgroupReader::detect(&self.settings.cgroup_root) {
            Ok(r) => Arc::new(r),
            Err(e) => {
                ctx.status.error(format!("capacity: {e}"));
                tracing::warn!(error = %e, "capacity collector cannot read cgroups");
                return;
            }
        };
        let host_cores = crate::cgroup::host_cores();
        let host_memory = crate::cgroup::host_memory_bytes(&self.settings.proc_root).unwrap_or(0);
        let http = reqwest::Client::builder()
            .timeout(Duration::from_secs(10))
            .build()
            .unwrap_or_default();
        let firing: Vec<String> = ctx
            .checkpoint
            .load()
            .and_then(|text| serde_json::from_str(&text).ok())
            .unwrap_or_default();
        let mut alerts = Alerts::with_firing(firing);
        let started = Instant::now();
        let mut previous: HashMap<String, (CgroupSample, Instant)> = HashMap::new();
        let interval = Duration::from_secs_f64(self.settings.interval);
        tracing::info!(cluster = %self.cluster, cgroups = ?reader.version(), "capacity collector started");
        loop {
            let began = Instant::now();
            match self
                .collect(
                    &docker,
                    &reader,
                    &http,
                    &mut previous,
                    host_cores,
                    host_memory,
                )
                .await
            {
                Ok(apps) => {
                    ctx.status.set_connected(true);
                    let events = alerts.step(
                        started.elapsed().as_secs_f64(),
                        &self.cluster,
                        &apps,
                        &self.settings.thresholds,
                        self.settings.below_expected_for,
                    );
                    board().set(Snapshot {
                        collected_at: Some(Utc::now()),
                        interval_seconds: self.settings.interval,
                        apps,
                        error: None,
                    });
                    for (trigger, payload) in events {
                        if !emit(&ctx, trigger, payload).await {
                            return;
                        }
                    }
                    let firing = serde_json::to_string(&alerts.firing()).unwrap_or_default();
                    if let Err(e) = ctx.checkpoint.save(&firing) {
                        tracing::warn!(error = %e, "capacity: cannot save which alerts fire");
                    }
                }
                Err(e) => {
                    ctx.status.set_connected(false);
                    ctx.status.error(e.clone());
                    let mut s = board().snapshot();
                    s.error = Some(e.clone());
                    board().set(s);
                    tracing::warn!(error = %e, "capacity collection failed");
                }
            }
            let wait = interval.saturating_sub(began.elapsed());
            tokio::select! {
                _ = tokio::time::sleep(wait) => {}
                _ = stopped(&mut ctx.shutdown) => return,
            }
        }
    }

    /// One collection: every running container with the app label, read and grouped.
    async fn collect(
        &self,
        docker: &bollard::Docker,
        reader: &Arc<CgroupReader>,
        http: &reqwest::Client,
        previous: &mut HashMap<String, (CgroupSample, Instant)>,
        host_cores: f64,
        host_memory: u64,
    ) -> Result<Vec<AppCapacity>, String> {
        let label = self.settings.app_label.clone();
        let options = ListContainersOptions {
            all: false,
            filters: Some(HashMap::from([("label".to_string(), vec![label.clone()])])),
            ..Default::default()
        };
        let listed = docker
            .list_containers(Some(options))
            .await
            .map_err(|e| format!("listing containers: {e}"))?;
        let containers: Vec<(String, String, HashMap<String, String>)> = listed
            .into_iter()
            .filter_map(|c| {
                let id = c.id?;
                let name = c
                    .names
                    .and_then(|n| n.first().cloned())
                    .unwrap_or_default()
                    .trim_start_matches('/')
                    .to_string();
                Some((id, name, c.labels.unwrap_or_default()))
            })
            .collect();
        let ids: Vec<String> = containers.iter().map(|c| c.0.clone()).collect();
        let reader = reader.clone();
        let samples = tokio::task::spawn_blocking(move || {
            ids.iter()
                .map(|id| reader.sample(id, None))
                .collect::<Vec<_>>()
        })
        .await
        .map_err(|e| format!("reading cgroups: {e}"))?;
        let now = Instant::now();
        let mut by_app: BTreeMap<String, Vec<ContainerCapacity>> = BTreeMap::new();
        let mut label_expected: HashMap<String, u64> = HashMap::new();
        let mut current = HashMap::new();
        for ((id, name, labels), sample) in containers.into_iter().zip(samples) {
            let Some(app) = labels.get(&label).cloned() else {
                continue;
            };
            if let Some(n) = labels
                .get(&self.settings.expected_label)
                .and_then(|v| v.trim().parse::<u64>().ok())
            {
                label_expected.insert(app.clone(), n);
            }
            let sample = match sample {
                Ok(s) => s,
                Err(e) => {
                    // Gone between the listing and the read, most likely: next time.
                    tracing::debug!(container = %id, error = %e, "capacity: cgroup not read");
                    continue;
                }
            };
            let cpu = previous
                .get(&id)
                .map(|(prev, at)| cpu_percent(prev, &sample, now.duration_since(*at), host_cores))
                .unwrap_or(0.0);
            by_app.entry(app).or_default().push(ContainerCapacity {
                id: id.clone(),
                name,
                cpu_percent: round2(cpu),
                cpu_limit_cores: sample.cpu_limit_cores,
                memory_bytes: sample.memory_bytes,
                memory_limit_bytes: sample.memory_limit_bytes,
                memory_percent: round2(memory_percent(&sample, host_memory)),
            });
            current.insert(id, (sample, now));
        }
        *previous = current;
        let mut apps = Vec::with_capacity(by_app.len());
        for (app, containers) in by_app {
            let n = containers.len().max(1) as f64;
            let expected = match self.settings.expected.get(&app) {
                Some(e) => Some(*e),
                None => match self.marathon_instances(http, &app).await {
                    Some(e) => Some(e),
                    None => label_expected.get(&app).copied(),
                },
            };
            apps.push(AppCapacity {
                cluster: self.cluster.clone(),
                online: containers.len(),
                expected,
                cpu_percent: round2(containers.iter().map(|c| c.cpu_percent).sum::<f64>() / n),
                memory_percent: round2(
                    containers.iter().map(|c| c.memory_percent).sum::<f64>() / n,
                ),
                memory_bytes: containers.iter().map(|c| c.memory_bytes).sum(),
                containers,
                app,
            });
        }
        // Apps expected by setting with nothing running are reported too.
        for (app, expected) in &self.settings.expected {
            if !apps.iter().any(|a| &a.app == app) {
                apps.push(AppCapacity {
                    app: app.clone(),
                    cluster: self.cluster.clone(),
                    online: 0,
                    expected: Some(*expected),
                    cpu_percent: 0.0,
                    memory_percent: 0.0,
                    memory_bytes: 0,
                    containers: Vec::new(),
                });
            }
        }
        Ok(apps)
    }

    /// Marathon's `instances` for the app, when a Marathon is configured and answers.
    async fn marathon_instances(&self, http: &reqwest::Client, app: &str) -> Option<u64> {
        if self.settings.marathon_url.is_empty() {
            return None;
        }
        let url = format!(
            "{}/v2/apps/{}{}",
            self.settings.marathon_url.trim_end_matches('/'),
            self.settings.marathon_app_prefix.trim_start_matches('/'),
            app
        );
        let answer: Value = http.get(&url).send().await.ok()?.json().await.ok()?;
        answer["app"]["instances"].as_u64()
    }
}

/// Emits one event, retrying until it is stored or squall stops (false then).
async fn emit(ctx: &SensorContext, trigger: String, payload: Value) -> bool {
    let mut shutdown = ctx.shutdown.clone();
    let mut attempt = 0;
    loop {
        let event = SensorEvent {
            trigger: trigger.clone(),
            payload: payload.clone(),
            occurred_at: Utc::now(),
        };
        match ctx.emitter.emit(event).await {
            Ok(()) => {
                ctx.status.event();
                return true;
            }
            Err(e) => {
                ctx.status
                    .error(format!("capacity: cannot emit {trigger}: {e}"));
                if !backoff_sleep(
                    attempt,
                    Duration::from_millis(100),
                    Duration::from_secs(5),
                    &mut shutdown,
                )
                .await
                {
                    return false;
                }
                attempt += 1;
            }
        }
    }
}

fn host_name() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .map(|h| h.trim().to_string())
        .ok()
        .filter(|h| !h.is_empty())
        .unwrap_or_else(|| "local".to_string())
}

impl Sensor for CapacitySensor {
    fn run(self: Box<Self>, ctx: SensorContext) -> Pin<Box<dyn Future<Output = ()> + Send>> {
        Box::pin(async move { self.run_until_shutdown(ctx).await })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn app(name: &str, online: usize, expected: Option<u64>, cpu: f64) -> AppCapacity {
        AppCapacity {
            app: name.into(),
            cluster: "c1".into(),
            online,
            expected,
            cpu_percent: cpu,
            memory_percent: 10.0,
            memory_bytes: 0,
            containers: Vec::new(),
        }
    }

    fn statuses(events: &[(String, Value)]) -> Vec<(String, String)> {
        events
            .iter()
            .map(|(t, p)| (t.clone(), p["status"].as_str().unwrap_or("").to_string()))
            .collect()
    }

    #[test]
    fn a_threshold_fires_once_after_its_for_and_resolves_once() {
        let t = [Threshold {
            metric: Metric::Cpu,
            above: 80.0,
            for_seconds: 30.0,
            apps: vec![],
        }];
        let mut a = Alerts::default();
        let hot = [app("web", 2, None, 95.0)];
        let cool = [app("web", 2, None, 20.0)];
        assert!(a.step(0.0, "c1", &hot, &t, 30.0).is_empty());
        assert!(a.step(20.0, "c1", &hot, &t, 30.0).is_empty());
        let fired = a.step(30.0, "c1", &hot, &t, 30.0);
        assert_eq!(
            statuses(&fired),
            [(THRESHOLD.to_string(), "firing".to_string())]
        );
        assert_eq!(fired[0].1["value"], 95.0);
        assert!(a.step(40.0, "c1", &hot, &t, 30.0).is_empty(), "fires once");
        assert_eq!(a.firing(), ["threshold:0:web"]);
        let resolved = a.step(50.0, "c1", &cool, &t, 30.0);
        assert_eq!(
            statuses(&resolved),
            [(THRESHOLD.to_string(), "resolved".to_string())]
        );
        assert!(
            a.step(60.0, "c1", &cool, &t, 30.0).is_empty(),
            "resolves once"
        );
        // A dip before `for` ran out starts the wait again.
        a.step(70.0, "c1", &hot, &t, 30.0);
        a.step(80.0, "c1", &cool, &t, 30.0);
        assert!(a.step(90.0, "c1", &hot, &t, 30.0).is_empty());
        assert!(a.step(110.0, "c1", &hot, &t, 30.0).is_empty());
        assert_eq!(statuses(&a.step(120.0, "c1", &hot, &t, 30.0)).len(), 1);
    }

    #[test]
    fn an_app_whose_containers_are_all_gone_resolves_its_alerts() {
        let t = [Threshold {
            metric: Metric::Cpu,
            above: 80.0,
            for_seconds: 0.0,
            apps: vec![],
        }];
        let mut a = Alerts::default();
        assert_eq!(
            a.step(0.0, "c1", &[app("web", 1, None, 95.0)], &t, 30.0)
                .len(),
            1
        );
        let gone = a.step(10.0, "c1", &[], &t, 30.0);
        assert_eq!(
            statuses(&gone),
            [(THRESHOLD.to_string(), "resolved".to_string())]
        );
        assert_eq!(gone[0].1["online"], 0);
        assert!(a.step(20.0, "c1", &[], &t, 30.0).is_empty());
        assert!(a.firing().is_empty());
    }

    #[test]
    fn below_expected_fires_for_an_app_with_nothing_left_and_resolves() {
        let mut a = Alerts::default();
        assert!(a
            .step(0.0, "c1", &[app("web", 2, Some(2), 1.0)], &[], 10.0)
            .is_empty());
        // Every container gone: the app is no longer listed, but it should have two.
        assert!(a.step(5.0, "c1", &[], &[], 10.0).is_empty());
        let fired = a.step(15.0, "c1", &[], &[], 10.0);
        assert_eq!(
            statuses(&fired),
            [(BELOW_EXPECTED.to_string(), "firing".to_string())]
        );
        assert_eq!(fired[0].1["missing"], 2);
        let back = a.step(20.0, "c1", &[app("web", 2, Some(2), 1.0)], &[], 10.0);
        assert_eq!(
            statuses(&back),
            [(BELOW_EXPECTED.to_string(), "resolved".to_string())]
        );
    }

    #[test]
    fn an_alert_firing_before_a_restart_resolves_when_no_longer_true() {
        let t = [Threshold {
            metric: Metric::Memory,
            above: 50.0,
            for_seconds: 0.0,
            apps: vec!["web".into()],
        }];
        let mut a = Alerts::with_firing(["threshold:0:web".to_string()]);
        let events = a.step(
            0.0,
            "c1",
            &[app("web", 1, None, 0.0), app("db", 1, None, 0.0)],
            &t,
            0.0,
        );
        assert_eq!(
            statuses(&events),
            [(THRESHOLD.to_string(), "resolved".to_string())]
        );
    }

    #[test]
    fn bad_settings_name_the_setting() {
        let bad = |v: Value| match CapacitySensor::from_settings(v.as_object().expect("object")) {
            Err(e) => e,
            Ok(_) => panic!("accepted {v}"),
        };
        assert!(bad(json!({"intervall": 5})).contains("intervall"));
        assert!(bad(json!({"interval": 0})).contains("interval"));
        assert!(bad(json!({"thresholds": [{"metric": "disk", "above": 1}]})).contains("disk"));
        // No daemon there: the sensor is not started (listed with why), not failing each time.
        let no_socket = bad(json!({"docker_host": "unix:///nonexistent/docker.sock"}));
        assert!(
            no_socket.contains("/nonexistent/docker.sock"),
            "{no_socket}"
        );
        assert!(CapacitySensor::from_settings(
            json!({"cluster": "eu-1"}).as_object().expect("object")
        )
        .is_ok());
    }
}
