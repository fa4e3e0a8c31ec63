//! `squall run`: everything in one process. Opens the store, loads the packs, recovers what a
//! previous run left unfinished, starts the rules loop, the worker pool, the timers, the
//! retention sweep and the HTTP API, and shuts them down in order on SIGTERM or Ctrl-C.
//!
//! Settings come from [`RunConfig`]; the command line merges flags, environment and the YAML
//! config file into it. Nothing here decides what a rule or an action means.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use serde::Deserialize;
use serde_json::json;
use squall_actions::{Limits, RhaiRuntime};
use tokio::sync::watch;

use crate::api::{packs_json, router, ApiConfig, AppState, RuleEnabledFn};
use crate::packs::{load_packs_with_configs, Catalog};
use crate::pipeline::Engine;
use crate::signatures::SignatureCheck;
use crate::store::Store;
use crate::timers::{spawn_timer, timers_from_rules};

/// The settings file (`--config FILE`), every key optional; flags and `SQUALL_*` variables win.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FileConfig {
    pub data_dir: Option<PathBuf>,
    pub packs: Option<Vec<PathBuf>>,
    pub configs: Option<PathBuf>,
    pub listen: Option<String>,
    pub workers: Option<usize>,
    pub strict: Option<bool>,
    pub auth: Option<bool>,
    pub webhook_body_limit: Option<usize>,
    pub retention_days: Option<u64>,
    pub shutdown_grace_seconds: Option<u64>,
    /// Rhai operations an action may run (0: no count, only its timeout ends a runaway loop).
    pub action_max_operations: Option<u64>,
    /// Megabytes of the store kept in memory (sled's page cache).
    pub store_cache_mb: Option<u64>,
    /// A RabbitMQ URL: remote workers (`squall worker`) run the actions, and sensor hosts
    /// (`squall sensors`) send trigger instances.
    pub amqp: Option<String>,
    /// A file holding the 32-byte key that encrypts secrets (hex), instead of `<data_dir>/secret.key`.
    pub secret_key_file: Option<PathBuf>,
    /// Signature checks per webhook url, e.g. `github: {scheme: github, secret: ...}`.
    #[serde(default)]
    pub webhooks: HashMap<String, SignatureCheck>,
    /// The Alertmanager receiver (`POST /api/v1/webhooks/alertmanager`).
    #[serde(default)]
    pub alertmanager: Option<crate::alerts::AlertReceiverConfig>,
    /// The Grafana receiver (`POST /api/v1/webhooks/grafana`).
    #[serde(default)]
    pub grafana: Option<crate::alerts::AlertReceiverConfig>,
    /// Chat commands from Slack and Mattermost, and where answers go.
    #[serde(default)]
    pub chatops: Option<crate::chatops::ChatSettings>,
    /// The runners actions may use (all when absent): `[rhai, orquesta, local-shell-cmd, ...]`.
    pub runners: Option<Vec<String>>,
}

/// Everything `squall run` needs, resolved.
#[derive(Debug, Clone)]
pub struct RunConfig {
    pub data_dir: PathBuf,
    pub packs: Vec<PathBuf>,
    pub configs: PathBuf,
    pub listen: SocketAddr,
    pub workers: usize,
    pub strict: bool,
    pub auth: bool,
    pub webhook_body_limit: usize,
    /// Bytes of the store kept in memory (sled's page cache).
    pub store_cache_bytes: u64,
    pub retention: Duration,
    pub shutdown_grace: Duration,
    /// The sandbox's limits for actions.
    pub limits: Limits,
    pub secret_key: Option<[u8; 32]>,
    pub webhooks: HashMap<String, SignatureCheck>,
    /// Alert receivers' settings by source (`alertmanager`, `grafana`).
    pub alert_receivers: HashMap<String, crate::alerts::AlertReceiverConfig>,
    /// With remote workers: the broker's URL.
    pub amqp: Option<String>,
    /// Squall's own chat (`chatops:` in the settings file).
    pub chatops: crate::chatops::ChatSettings,
    /// The runners actions may use (`None`: all).
    pub runners: Option<Vec<squall_actions::RunnerType>>,
}

#[derive(Debug, thiserror::Error)]
pub enum ServerError {
    #[error("{0}")]
    Config(String),
    #[error("cannot open the store in {path}: {error}")]
    Store { path: PathBuf, error: String },
    #[error("packs have problems and --strict is set:\n{0}")]
    Strict(String),
    #[error("cannot listen on {addr}: {error}")]
    Listen { addr: SocketAddr, error: String },
    #[error("{0}")]
    Engine(#[from] crate::pipeline::EngineError),
}

/// The packs, with the actions of runners the settings do not allow left out (and reported).
fn load_allowed(
    packs: &[PathBuf],
    configs: &std::path::Path,
    runtime: &RhaiRuntime,
    runners: &Option<Vec<squall_actions::RunnerType>>,
) -> Catalog {
    let mut catalog = load_packs_with_configs(packs, configs, runtime);
    if let Some(allowed) = runners {
        crate::runners_allowed::restrict(&mut catalog, allowed);
    }
    catalog
}

/// `POST /api/v1/packs/install`: installs into the first packs directory as `squall pack
/// install` does, then reloads when anything was installed.
fn install_fn(
    config: &RunConfig,
    runtime: Arc<RhaiRuntime>,
    reload: crate::api::ReloadFn,
) -> crate::api::InstallFn {
    let mut opts =
        crate::pack_install::InstallOptions::new(config.packs.clone(), config.configs.clone());
    opts.runners = config.runners.clone();
    Arc::new(move |specs: Vec<String>| {
        let (installed, error) = match crate::pack_install::install(&specs, &opts, &runtime) {
            Ok(done) => (done, None),
            Err(crate::pack_install::InstallError::Problems {
                spec,
                pack,
                problems,
                installed,
            }) => (
                installed,
                Some(json!({
                    "error": format!("{spec}: not installed, {} problems; what was installed stays", problems.len()),
                    "pack": pack,
                    "problems": problems.iter().map(ToString::to_string).collect::<Vec<_>>(),
                })),
            ),
            Err(e) => (Vec::new(), Some(json!({"error": e.to_string()}))),
        };
        let reloaded = if installed.is_empty() {
            serde_json::Value::Null
        } else {
            reload()
        };
        json!({"installed": installed, "failed": error, "reload": reloaded})
    })
}

/// This process's API as workflows' `ctx().st2.api_url` names it (a wildcard listen address
/// as loopback).
static API_URL: std::sync::OnceLock<String> = std::sync::OnceLock::new();

fn set_api_url(local: SocketAddr) {
    let host = if local.ip().is_unspecified() {
        std::net::IpAddr::from([127, 0, 0, 1])
    } else {
        local.ip()
    };
    let _ = API_URL.set(format!(
        "http://{}/api/v1",
        SocketAddr::new(host, local.port())
    ));
}

/// The API's URL (`http://ADDRESS:PORT/api/v1`), once `squall run` listens; the default
/// address before.
pub fn api_url() -> String {
    API_URL
        .get()
        .cloned()
        .unwrap_or_else(|| "http://127.0.0.1:9101/api/v1".to_string())
}

/// Reads a secret key file: 64 hex characters, or the 32 bytes themselves (as squall writes
/// `<data_dir>/secret.key`, so that file can be moved out of the data dir and named here).
pub fn read_secret_key(path: &std::path::Path) -> Result<[u8; 32], ServerError> {
    let bytes = std::fs::read(path)
        .map_err(|e| ServerError::Config(format!("secret_key_file {}: {e}", path.display())))?;
    if let Ok(raw) = <[u8; 32]>::try_from(bytes.as_slice()) {
        // 32 hex digits are half a hex key, not a key squall wrote.
        if !raw.iter().all(u8::is_ascii_hexdigit) {
            return Ok(raw);
        }
    }
    let text = String::from_utf8_lossy(&bytes);
    let hex = text.trim();
    if hex.len() != 64 {
        return Err(ServerError::Config(format!(
            "secret_key_file {}: expected 64 hex characters or 32 bytes, found {} bytes",
            path.display(),
            bytes.len()
        )));
    }
    let mut key = [0u8; 32];
    for (i, byte) in key.iter_mut().enumerate() {
        *byte = hex
            .get(2 * i..2 * i + 2)
            .and_then(|pair| u8::from_str_radix(pair, 16).ok())
            .ok_or_else(|| {
                ServerError::Config(format!(
                    "secret_key_file {}: not hexadecimal",
                    path.display()
                ))
            })?;
    }
    Ok(key)
}

/// Runs until SIGTERM or Ctrl-C; returns after a graceful shutdown.
pub async fn run(config: RunConfig) -> Result<(), ServerError> {
    let started = Instant::now();
    if !config.listen.ip().is_loopback() && !config.auth {
        return Err(ServerError::Config(format!(
            "refusing to listen on {} without authentication: set auth: true (or --auth) and create API keys, or listen on 127.0.0.1",
            config.listen
        )));
    }
    // Bound first, so a start that cannot listen fails before it recovers or runs anything.
    // Connections made meanwhile wait in the backlog until squall is ready.
    let listener = tokio::net::TcpListener::bind(config.listen)
        .await
        .map_err(|e| ServerError::Listen {
            addr: config.listen,
            error: e.to_string(),
        })?;
    let local = listener.local_addr().map_err(|e| ServerError::Listen {
        addr: config.listen,
        error: e.to_string(),
    })?;
    set_api_url(local);
    // A SIGHUP during the start is held for the reload loop instead of ending the process.
    let hup = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::hangup()).ok();
    let store = Store::open_with_cache(
        &config.data_dir,
        config.secret_key,
        config.store_cache_bytes,
    )
    .map_err(|e| ServerError::Store {
        path: config.data_dir.clone(),
        error: e.to_string(),
    })?;
    if let Ok(Some(name)) = store.secret_needing_another_key() {
        tracing::warn!(secret = %name, "stored secrets cannot be decrypted with this secret key (secret '{name}' among them): was the data dir's key replaced, or secret_key_file changed? Scripts reading them will fail");
    }
    let store = Arc::new(store);
    let journal = open_journal(&config.data_dir, &store)?;
    if config.auth
        && store
            .apikey_count()
            .map_err(|e| ServerError::Config(e.to_string()))?
            == 0
    {
        tracing::warn!("authentication is on and no API key exists: create the first one with `squall apikey create` from this machine (allowed from 127.0.0.1 without a key until one exists)");
    }
    let runtime = Arc::new(RhaiRuntime::new(config.limits.clone()));
    let mut catalog = load_allowed(&config.packs, &config.configs, &runtime, &config.runners);
    let rule_states = store
        .rule_enabled_overrides()
        .map_err(|e| ServerError::Store {
            path: config.data_dir.clone(),
            error: e.to_string(),
        })?;
    catalog.set_rules_enabled(&rule_states);
    if !catalog.problems.is_empty() {
        let list: Vec<String> = catalog.problems.iter().map(ToString::to_string).collect();
        if config.strict {
            return Err(ServerError::Strict(list.join("\n")));
        }
        for p in &list {
            tracing::warn!(problem = %p, "pack problem");
        }
    }
    tracing::info!(
        packs = catalog.packs.len(),
        actions = catalog.actions().count(),
        rules = catalog.rules().count(),
        problems = catalog.problems.len(),
        "packs loaded"
    );
    let remote = config
        .amqp
        .as_ref()
        .map(|_| Arc::new(crate::pipeline::remote::Remote::default()));
    let (engine, ti_rx) =
        Engine::with_workers(store.clone(), journal, catalog, runtime.clone(), remote);
    warn_unused_signature_checks(&engine, &config.webhooks);
    let chat = crate::chatops::Chat::new(config.chatops.clone()).map_err(ServerError::Config)?;
    let _ = engine.chat.set(Arc::new(chat));
    let workers = engine.start(ti_rx, config.workers)?;
    if let Some(url) = config.amqp.clone() {
        crate::amqp::server::start(engine.clone(), url);
    }

    let (shutdown_tx, shutdown_rx) = watch::channel(false);
    let timers = {
        let mut t = Timers::new(&engine);
        t.update(&engine, &shutdown_rx);
        Arc::new(Mutex::new(t))
    };
    restart_sensors(&engine, shutdown_rx.clone());

    // A reload and a rule enabled or disabled through the API each swap what is loaded: one at
    // a time, so neither undoes the other.
    let swapping = Arc::new(Mutex::new(()));
    let reload = {
        let swapping = swapping.clone();
        let engine = engine.clone();
        let packs = config.packs.clone();
        let configs = config.configs.clone();
        let runtime = runtime.clone();
        let timers = timers.clone();
        let shutdown_rx = shutdown_rx.clone();
        let handle = tokio::runtime::Handle::current();
        let strict = config.strict;
        let checks = config.webhooks.clone();
        let runners = config.runners.clone();
        Arc::new(move || {
            let _one_at_a_time = swapping.lock().unwrap_or_else(|p| p.into_inner());
            let catalog = with_rule_states(
                load_allowed(&packs, &configs, &runtime, &runners),
                &engine.store,
            );
            let problems: Vec<String> = catalog.problems.iter().map(ToString::to_string).collect();
            if strict && !problems.is_empty() {
                // As at start: with problems, nothing changes; what was loaded stays.
                tracing::warn!(
                    problems = problems.len(),
                    "packs not reloaded: they have problems and --strict is set"
                );
                return json!({"packs": packs_json(&catalog), "problems": problems, "applied": false});
            }
            let summary =
                json!({"packs": packs_json(&catalog), "problems": problems, "applied": true});
            engine.set_loaded(catalog);
            warn_unused_signature_checks(&engine, &checks);
            let _guard = handle.enter();
            if let Ok(mut timers) = timers.lock() {
                timers.update(&engine, &shutdown_rx);
            }
            restart_sensors(&engine, shutdown_rx.clone());
            tracing::info!(problems = problems.len(), "packs reloaded");
            summary
        }) as Arc<dyn Fn() -> serde_json::Value + Send + Sync>
    };
    let set_rule_enabled = {
        let engine = engine.clone();
        let timers = timers.clone();
        let shutdown_rx = shutdown_rx.clone();
        let handle = tokio::runtime::Handle::current();
        let checks = config.webhooks.clone();
        Arc::new(move |rule: &str, enabled: bool| {
            let _one_at_a_time = swapping.lock().unwrap_or_else(|p| p.into_inner());
            engine
                .store
                .set_rule_enabled(rule, enabled)
                .map_err(|e| e.to_string())?;
            let mut catalog = engine.loaded().catalog.clone();
            catalog.set_rules_enabled(&HashMap::from([(rule.to_string(), enabled)]));
            engine.set_loaded(catalog);
            warn_unused_signature_checks(&engine, &checks);
            let _guard = handle.enter();
            if let Ok(mut timers) = timers.lock() {
                timers.update(&engine, &shutdown_rx);
            }
            tracing::info!(rule, enabled, "rule enabled or disabled through the API");
            Ok(())
        }) as RuleEnabledFn
    };

    let (streams_end, streams_end_rx) = watch::channel(false);
    let state = AppState {
        engine: engine.clone(),
        config: Arc::new(ApiConfig {
            auth: config.auth,
            body_limit: config.webhook_body_limit,
            signatures: config.webhooks.clone(),
            alert_receivers: config.alert_receivers.clone(),
            reload: reload.clone(),
            set_rule_enabled,
            install: install_fn(&config, runtime.clone(), reload.clone()),
        }),
        deliveries: Arc::new(recent_deliveries(&engine, &config.webhooks)),
        streams_end: streams_end_rx,
        console: Arc::new(crate::console::ConsoleState::new()),
    };

    tokio::spawn(retention_loop(
        engine.clone(),
        config.retention,
        shutdown_rx.clone(),
    ));
    if let Some(hup) = hup {
        tokio::spawn(reload_on_sighup(hup, reload, shutdown_rx.clone()));
    }

    tracing::info!(
        listen = %local,
        data_dir = %config.data_dir.display(),
        workers = workers.len(),
        store_cache_mb = config.store_cache_bytes / (1024 * 1024),
        ready_ms = started.elapsed().as_millis() as u64,
        "squall is ready"
    );
    let app = router(state);
    let mut http_shutdown = shutdown_rx.clone();
    let server = tokio::spawn(async move {
        axum::serve(
            listener,
            app.into_make_service_with_connect_info::<SocketAddr>(),
        )
        .with_graceful_shutdown(async move {
            let _ = http_shutdown.wait_for(|stop| *stop).await;
        })
        .await
    });

    wait_for_signal().await;
    tracing::info!("stopping: no new work is accepted; running executions may finish");
    let _ = shutdown_tx.send(true);
    engine.shutdown(config.shutdown_grace).await;
    let _ = streams_end.send(true);
    match tokio::time::timeout(Duration::from_secs(5), server).await {
        Ok(Ok(Err(e))) => tracing::error!(error = %e, "HTTP server stopped with an error"),
        Ok(_) => {}
        Err(_) => tracing::warn!("HTTP connections still open after 5 s; closing"),
    }
    for w in workers {
        let _ = tokio::task::spawn_blocking(move || w.join()).await;
    }
    if let Err(e) = store.flush().await {
        tracing::error!(error = %e, "final flush failed");
    }
    tracing::info!("stopped");
    Ok(())
}

/// The signed deliveries accepted lately, from the stored instances, so that a sender's retry
/// right after a restart still gives no second instance.
fn recent_deliveries(
    engine: &Engine,
    webhooks: &std::collections::HashMap<String, crate::signatures::SignatureCheck>,
) -> crate::signatures::Deliveries {
    let deliveries = crate::signatures::Deliveries::default();
    // The longest a delivery is accepted by any hook that names its deliveries.
    let Some(longest) = webhooks
        .values()
        .filter_map(|c| c.delivery_tolerance())
        .max()
    else {
        return deliveries;
    };
    let since = chrono::Utc::now()
        - i64::try_from(longest.saturating_mul(2))
            .ok()
            .and_then(chrono::TimeDelta::try_seconds)
            .unwrap_or(chrono::TimeDelta::MAX);
    let mut offset = 0;
    'pages: loop {
        let page = match engine
            .store
            .list_trigger_instances(Some("core.webhook"), 1000, offset)
        {
            Ok(page) => page,
            Err(e) => {
                tracing::warn!(error = %e, "cannot read recent webhook deliveries");
                break;
            }
        };
        if page.is_empty() {
            break;
        }
        offset += page.len();
        for ti in page {
            if ti.received_time < since {
                break 'pages;
            }
            let url = ti
                .trigger_parameters
                .as_ref()
                .and_then(|p| p.get("url"))
                .and_then(serde_json::Value::as_str);
            let id = ti.payload["headers"]
                .get("Webhook-Id")
                .and_then(serde_json::Value::as_str);
            if let (Some(url), Some(id)) = (url, id) {
                if let Some(tolerance) = webhooks.get(url).and_then(|c| c.delivery_tolerance()) {
                    deliveries.remember(url, id, &ti.id, ti.received_time, tolerance);
                }
            }
        }
    }
    deliveries
}

/// Puts back into the store what the ingest journal holds and a crash took from the store,
/// then starts a fresh journal.
fn open_journal(
    data_dir: &std::path::Path,
    store: &Store,
) -> Result<Arc<crate::journal::Journal>, ServerError> {
    let dir = data_dir.join("journal");
    let fail = |e: String| ServerError::Store {
        path: dir.clone(),
        error: e,
    };
    let records = crate::journal::replay(&dir).map_err(|e| fail(e.to_string()))?;
    let (mut restored, mut executions) = (0usize, 0usize);
    for record in records {
        match record {
            crate::journal::Record::TriggerInstance(ti) => {
                if store
                    .trigger_instance(&ti.id)
                    .map_err(|e| fail(e.to_string()))?
                    .is_none()
                {
                    store
                        .insert_trigger_instance(&ti)
                        .map_err(|e| fail(e.to_string()))?;
                    restored += 1;
                }
            }
            crate::journal::Record::Execution(e) => {
                if store
                    .restore_execution(&e)
                    .map_err(|e| fail(e.to_string()))?
                {
                    executions += 1;
                }
            }
        }
    }
    store.flush_blocking().map_err(|e| fail(e.to_string()))?;
    if restored > 0 || executions > 0 {
        tracing::info!(
            trigger_instances = restored,
            executions,
            "records restored from the journal"
        );
    }
    let journal = crate::journal::Journal::open(&dir).map_err(|e| fail(e.to_string()))?;
    journal.clear().map_err(|e| fail(e.to_string()))?;
    Ok(journal)
}

/// The packs as loaded, with the rules enabled or disabled through the API as they were set.
fn with_rule_states(mut catalog: Catalog, store: &Store) -> Catalog {
    match store.rule_enabled_overrides() {
        Ok(states) => catalog.set_rules_enabled(&states),
        Err(e) => {
            tracing::error!(error = %e, "cannot read which rules were enabled or disabled through the API: the rules' files say")
        }
    }
    catalog
}

/// Stops the running sensors (if any) and starts those the loaded packs declare.
fn restart_sensors(engine: &Arc<Engine>, shutdown: watch::Receiver<bool>) {
    let (declarations, _) = crate::sensing::declarations(&engine.loaded().catalog);
    let started = crate::sensing::start_sensors(engine, declarations, shutdown);
    match engine.sensors.lock() {
        Ok(mut s) => *s = started,
        Err(p) => *p.into_inner() = started,
    }
}

/// A signature check set for a hook no enabled rule listens to is most likely a typo: said at
/// start and after each reload (the hook answers 404 until a rule listens to it).
fn warn_unused_signature_checks(engine: &Engine, checks: &HashMap<String, SignatureCheck>) {
    let loaded = engine.loaded();
    for url in checks.keys() {
        if url != "st2" && !loaded.webhooks.contains(url) {
            tracing::warn!(webhook = %url, "a signature check is set for webhook '{url}', which no enabled rule listens to");
        }
    }
}

/// The running timers, one task per distinct (trigger type, parameters), and the channel their
/// instances go through to the engine. A reload stops the timers no rule needs any more and
/// starts the new ones; a timer whose rules are unchanged keeps running (an interval timer
/// keeps its period's phase, as st2 keeps unchanged timers).
struct Timers {
    tasks: std::collections::HashMap<String, tokio::task::JoinHandle<()>>,
    tx: tokio::sync::mpsc::Sender<crate::model::TriggerInstance>,
}

impl Timers {
    /// Starts the task that ingests what the timers fire; no timer runs yet.
    fn new(engine: &Arc<Engine>) -> Timers {
        let (tx, mut rx) = tokio::sync::mpsc::channel(256);
        let engine = engine.clone();
        tokio::spawn(async move {
            while let Some(ti) = rx.recv().await {
                if let Err(e) = engine.ingest(ti).await {
                    tracing::error!(error = %e, "a timer's trigger instance could not be stored");
                }
            }
        });
        Timers {
            tasks: std::collections::HashMap::new(),
            tx,
        }
    }

    /// Runs the timers the loaded rules give, keeping those already running.
    fn update(&mut self, engine: &Arc<Engine>, shutdown: &watch::Receiver<bool>) {
        let loaded = engine.loaded();
        // Rules whose timer parameters do not parse were reported and not loaded (`packs`).
        let (timers, _) = timers_from_rules(loaded.rules.rules().iter());
        let now = chrono::Utc::now();
        let mut wanted = std::collections::HashMap::new();
        for timer in timers {
            // Parameters in name order: the same timer whatever order a rule gives them in.
            let mut parameters: Vec<(&String, &serde_json::Value)> =
                timer.parameters.iter().collect();
            parameters.sort_by(|a, b| a.0.cmp(b.0));
            let key = format!("{} {parameters:?}", timer.trigger_type);
            if timer.spec.next_after(now).is_none() {
                tracing::warn!(trigger = %timer.trigger_type, parameters = %serde_json::Value::Object(timer.parameters.clone()), "timer never fires: its time has passed");
            }
            wanted.insert(key, timer);
        }
        self.tasks.retain(|key, task| {
            let keep = wanted.contains_key(key) && !task.is_finished();
            if !keep {
                task.abort();
            }
            keep
        });
        for (key, timer) in wanted {
            if self.tasks.contains_key(&key) {
                continue;
            }
            let task = spawn_timer(timer, self.tx.clone(), shutdown.clone());
            self.tasks.insert(key, task);
        }
    }
}

async fn retention_loop(
    engine: Arc<Engine>,
    retention: Duration,
    mut shutdown: watch::Receiver<bool>,
) {
    loop {
        let now = chrono::Utc::now();
        let cutoff =
            now - chrono::Duration::from_std(retention).unwrap_or(chrono::Duration::days(30));
        let store = engine.store.clone();
        let swept = tokio::task::spawn_blocking(move || {
            let counts = store.sweep_older_than(cutoff);
            let keys = store.kv_sweep_expired(now);
            (counts, keys)
        })
        .await;
        match swept {
            Ok((Ok(c), Ok(k))) => {
                if c.trigger_instances + c.enforcements + c.executions + k > 0 {
                    tracing::info!(
                        trigger_instances = c.trigger_instances,
                        enforcements = c.enforcements,
                        executions = c.executions,
                        expired_keys = k,
                        "retention sweep"
                    );
                }
            }
            Ok((Err(e), _)) | Ok((_, Err(e))) => {
                tracing::error!(error = %e, "retention sweep failed")
            }
            Err(e) => tracing::error!(error = %e, "retention sweep failed"),
        }
        tokio::select! {
            _ = tokio::time::sleep(Duration::from_secs(60)) => {}
            _ = shutdown.changed() => {
                if *shutdown.borrow() {
                    return;
                }
            }
        }
    }
}

async fn reload_on_sighup(
    mut hup: tokio::signal::unix::Signal,
    reload: Arc<dyn Fn() -> serde_json::Value + Send + Sync>,
    mut shutdown: watch::Receiver<bool>,
) {
    loop {
        tokio::select! {
            _ = hup.recv() => {
                let reload = reload.clone();
                let _ = tokio::task::spawn_blocking(move || reload()).await;
            }
            _ = shutdown.changed() => {
                if *shutdown.borrow() {
                    return;
                }
            }
        }
    }
}

async fn wait_for_signal() {
    let term = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    tokio::select! {
        _ = term => {}
        _ = tokio::signal::ctrl_c() => {}
    }
}

#[cfg(test)]
mod tests {
    use super::read_secret_key;

    #[test]
    fn a_secret_key_file_holds_64_hex_characters_or_the_32_bytes() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("key");
        let key: [u8; 32] = std::array::from_fn(|i| (i * 7 + 200) as u8);
        std::fs::write(&path, key).expect("write");
        assert_eq!(read_secret_key(&path).expect("raw bytes"), key);
        let hex: String = key.iter().map(|b| format!("{b:02x}")).collect();
        std::fs::write(&path, format!("{hex}\n")).expect("write");
        assert_eq!(read_secret_key(&path).expect("hex"), key);
        for bad in [&hex[..32], &hex[..40], "zz".repeat(32).as_str()] {
            std::fs::write(&path, bad).expect("write");
            let err = read_secret_key(&path).expect_err(bad).to_string();
            assert!(err.contains("secret_key_file"), "{err}");
        }
    }
}
