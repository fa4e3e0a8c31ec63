//! `squall run`: the whole engine in one process. Merges the settings — flags first, then
//! `SQUALL_*` environment variables, then the YAML file given with `--config`, then the
//! defaults — and hands them to the engine's server.

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::{anyhow, bail, Context, Result};
use clap::Args;
use squall_engine::server::{read_secret_key, FileConfig, RunConfig};
use squall_engine::signatures::SignatureCheck;

#[derive(Args, Debug)]
pub struct RunArgs {
    /// A pack or a folder of packs; may be repeated [default: ./packs].
    #[arg(
        long = "packs",
        value_name = "DIR",
        env = "SQUALL_PACKS",
        value_delimiter = ':'
    )]
    packs: Vec<PathBuf>,
    /// Where pack configs live (`<DIR>/<pack>.yaml`) [default: ./configs].
    #[arg(long, value_name = "DIR", env = "SQUALL_CONFIGS")]
    configs: Option<PathBuf>,
    /// Where squall keeps its records [default: ./squall-data].
    #[arg(long = "data-dir", value_name = "DIR", env = "SQUALL_DATA_DIR")]
    data_dir: Option<PathBuf>,
    /// Address of the HTTP API [default: 127.0.0.1:9101].
    #[arg(long, value_name = "ADDR", env = "SQUALL_LISTEN")]
    listen: Option<String>,
    /// Worker threads running actions [default: the number of cores].
    #[arg(long, value_name = "N", env = "SQUALL_WORKERS")]
    workers: Option<usize>,
    /// Megabytes of the store kept in memory (sled's page cache); older records are read from
    /// disk when asked for [default: 128].
    #[arg(
        long = "store-cache-mb",
        value_name = "MB",
        env = "SQUALL_STORE_CACHE_MB"
    )]
    store_cache_mb: Option<u64>,
    /// A RabbitMQ URL (amqp://user:password@host:port/vhost): remote workers (`squall
    /// worker`) run the actions and sensor hosts (`squall sensors`) send trigger instances.
    #[arg(long, value_name = "URL", env = "SQUALL_AMQP")]
    amqp: Option<String>,
    /// A YAML settings file (keys: data_dir, packs, configs, listen, workers, strict, auth,
    /// webhook_body_limit, store_cache_mb, retention_days, shutdown_grace_seconds,
    /// action_max_operations, secret_key_file, amqp, webhooks, alertmanager, grafana, chatops,
    /// runners).
    #[arg(long, value_name = "FILE", env = "SQUALL_CONFIG")]
    config: Option<PathBuf>,
    /// Refuse to start (or reload) when a pack has a problem (default: report it and skip
    /// the file). `SQUALL_STRICT` takes 1/0, true/false, yes/no, on/off.
    /// `--strict=false` (or `SQUALL_STRICT=0`) turns off what the settings file turns on.
    #[arg(long, env = "SQUALL_STRICT", value_name = "BOOL", num_args = 0..=1, require_equals = true, default_missing_value = "true", value_parser = clap::builder::BoolishValueParser::new())]
    strict: Option<bool>,
    /// Require an API key on every request (required to listen beyond loopback); `--auth=false`
    /// (or `SQUALL_AUTH=0`) turns off what the settings file turns on.
    #[arg(long, env = "SQUALL_AUTH", value_name = "BOOL", num_args = 0..=1, require_equals = true, default_missing_value = "true", value_parser = clap::builder::BoolishValueParser::new())]
    auth: Option<bool>,
}

/// The settings file (`--config`), or no settings; a problem names the file and line.
pub fn settings_file(path: Option<&std::path::Path>) -> Result<FileConfig> {
    let Some(path) = path else {
        return Ok(FileConfig::default());
    };
    let text =
        std::fs::read_to_string(path).with_context(|| format!("cannot read {}", path.display()))?;
    serde_yaml::from_str(&text).map_err(|e| {
        let p = squall_engine::rules::yaml_problem(&e);
        anyhow!("{}:{}: {}", path.display(), p.line.unwrap_or(0), p.message)
    })
}

fn resolve(args: RunArgs) -> Result<RunConfig> {
    let file = settings_file(args.config.as_deref())?;
    let listen_text = args
        .listen
        .or(file.listen)
        .unwrap_or_else(|| "127.0.0.1:9101".to_string());
    let listen = listen_address(&listen_text)?;
    let packs = if !args.packs.is_empty() {
        args.packs
    } else {
        file.packs.unwrap_or_else(|| vec![PathBuf::from("./packs")])
    };
    let secret_key = match &file.secret_key_file {
        Some(path) => Some(read_secret_key(path)?),
        None => None,
    };
    let cores = std::thread::available_parallelism()
        .map(|n| n.get())
        .unwrap_or(2);
    Ok(RunConfig {
        data_dir: args
            .data_dir
            .or(file.data_dir)
            .unwrap_or_else(|| PathBuf::from("./squall-data")),
        packs,
        configs: args
            .configs
            .or(file.configs)
            .unwrap_or_else(|| PathBuf::from("./configs")),
        listen,
        workers: match args.workers.or(file.workers) {
            Some(0) => bail!("workers must be at least 1"),
            Some(n) => n,
            None => cores.max(1),
        },
        strict: args.strict.or(file.strict).unwrap_or(false),
        auth: args.auth.or(file.auth).unwrap_or(false),
        webhook_body_limit: file.webhook_body_limit.unwrap_or(1024 * 1024),
        store_cache_bytes: match args.store_cache_mb.or(file.store_cache_mb) {
            Some(0) => bail!("store_cache_mb must be at least 1"),
            Some(mb) => mb
                .checked_mul(1024 * 1024)
                .ok_or_else(|| anyhow!("store_cache_mb {mb} is too large"))?,
            None => squall_engine::store::DEFAULT_CACHE_BYTES,
        },
        retention: std::time::Duration::from_secs(retention_days(file.retention_days)? * 86_400),
        shutdown_grace: std::time::Duration::from_secs(file.shutdown_grace_seconds.unwrap_or(30)),
        limits: {
            let mut limits = squall_engine::actions::Limits::default();
            if let Some(n) = file.action_max_operations {
                limits.max_operations = n;
            }
            limits
        },
        secret_key,
        amqp: match args.amqp.or(file.amqp).filter(|u| !u.is_empty()) {
            Some(url) => {
                squall_engine::amqp::check_url(&url)?;
                Some(url)
            }
            None => None,
        },
        webhooks: webhook_checks(file.webhooks)?,
        runners: match &file.runners {
            Some(names) => {
                Some(squall_engine::runners_allowed::parse(names).map_err(|e| anyhow!("{e}"))?)
            }
            None => None,
        },
        chatops: {
            let c = file.chatops.unwrap_or_default();
            c.check().map_err(|e| anyhow!("{e}"))?;
            c
        },
        alert_receivers: [
            ("alertmanager", file.alertmanager),
            ("grafana", file.grafana),
        ]
        .into_iter()
        .map(|(name, c)| {
            let c = c.unwrap_or_default();
            c.validate()
                .map(|()| (name.to_string(), c))
                .map_err(|e| anyhow!("{name}: {e}"))
        })
        .collect::<Result<_>>()?,
    })
}

/// The settings file's `webhooks`: signature checks by hook url, named as rules name them (`/deploy`
/// and `deploy` are one hook, as in st2), each checked now rather than at its first delivery.
fn webhook_checks(
    checks: std::collections::HashMap<String, SignatureCheck>,
) -> Result<std::collections::HashMap<String, SignatureCheck>> {
    let mut out = std::collections::HashMap::new();
    for (given, check) in checks {
        let url = squall_engine::model::hook_name(&given).to_string();
        if url.is_empty() {
            bail!("webhooks: {given:?} names no hook: give the url its rules listen to");
        }
        if url == "alertmanager" || url == "grafana" {
            bail!("webhooks.{given}: the {url} receiver has its own settings: put them under `{url}:`");
        }
        check
            .validate()
            .map_err(|e| anyhow!("webhooks.{given}: {e}"))?;
        if out.insert(url.clone(), check).is_some() {
            bail!("webhooks: hook {url:?} is given twice (its url with and without slashes)");
        }
    }
    Ok(out)
}

/// `retention_days`, 30 unless set; 0 is refused (it would delete every finished record at
/// once), and so is more than a thousand years.
fn retention_days(setting: Option<u64>) -> Result<u64> {
    match setting.unwrap_or(30) {
        0 => Err(anyhow!(
            "retention_days must be at least 1: records older than it are deleted, so 0 would delete every finished record"
        )),
        days if days > 365_000 => Err(anyhow!(
            "retention_days {days} is more than a thousand years: give at most 365000"
        )),
        days => Ok(days),
    }
}

/// `ADDRESS:PORT`, or `HOST:PORT` resolved (its first IPv4 address, as `localhost` means
/// 127.0.0.1 to most clients).
fn listen_address(text: &str) -> Result<std::net::SocketAddr> {
    if let Ok(addr) = text.parse() {
        return Ok(addr);
    }
    let addrs: Vec<std::net::SocketAddr> = std::net::ToSocketAddrs::to_socket_addrs(text)
        .with_context(|| format!("listen address {text:?} is not ADDRESS:PORT or HOST:PORT"))?
        .collect();
    addrs
        .iter()
        .find(|a| a.is_ipv4())
        .or(addrs.first())
        .copied()
        .with_context(|| format!("listen address {text:?} resolves to no address"))
}

/// Threads of the async runtime (HTTP, sensors, timers): `SQUALL_IO_THREADS`, else 8.
fn io_threads() -> usize {
    std::env::var("SQUALL_IO_THREADS")
        .ok()
        .and_then(|v| v.parse().ok())
        .filter(|n| *n > 0)
        .unwrap_or(8)
}

pub fn run(args: RunArgs) -> Result<ExitCode> {
    let config = resolve(args)?;
    init_logging();
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .thread_name("squall-io")
        .worker_threads(io_threads())
        .build()
        .context("cannot start the async runtime")?;
    runtime.block_on(squall_engine::server::run(config))?;
    Ok(ExitCode::SUCCESS)
}

/// Logs to stderr, filtered by `SQUALL_LOG` (default `info`).
pub fn init_logging() {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_env("SQUALL_LOG")
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info")),
        )
        .with_writer(std::io::stderr)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .init();
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn listen_takes_an_address_or_a_host_name() {
        let a = listen_address("127.0.0.1:9101").expect("address");
        assert_eq!(a.to_string(), "127.0.0.1:9101");
        let named = listen_address("localhost:9404").expect("host name");
        assert!(named.ip().is_loopback() && named.port() == 9404, "{named}");
        let err = listen_address("9101").expect_err("no port").to_string();
        assert!(err.contains("HOST:PORT"), "{err}");
    }

    #[derive(clap::Parser)]
    struct Cli {
        #[command(flatten)]
        run: RunArgs,
    }

    fn resolved(args: &[&str]) -> RunConfig {
        use clap::Parser;
        let cli = Cli::try_parse_from(std::iter::once("run").chain(args.iter().copied()))
            .expect("arguments parse");
        resolve(cli.run).expect("settings resolve")
    }

    #[test]
    fn flags_turn_off_what_the_settings_file_turns_on() {
        let dir = tempfile::tempdir().expect("tempdir");
        let file = dir.path().join("squall.yaml");
        std::fs::write(&file, "strict: true\nauth: true\n").expect("write");
        let config = file.to_str().expect("utf-8");
        let from_file = resolved(&["--config", config]);
        assert!(from_file.strict && from_file.auth);
        let off = resolved(&["--config", config, "--strict=false", "--auth=0"]);
        assert!(!off.strict && !off.auth);
        let on = resolved(&["--strict", "--auth"]);
        assert!(on.strict && on.auth);
        let default = resolved(&[]);
        assert!(!default.strict && !default.auth);
    }

    #[test]
    fn the_store_cache_is_a_flag_over_the_settings_file_over_128_mb() {
        let mb = |c: RunConfig| c.store_cache_bytes / (1024 * 1024);
        assert_eq!(mb(resolved(&[])), 128);
        let dir = tempfile::tempdir().expect("tempdir");
        let file = dir.path().join("squall.yaml");
        std::fs::write(&file, "store_cache_mb: 64\n").expect("write");
        let config = file.to_str().expect("utf-8");
        assert_eq!(mb(resolved(&["--config", config])), 64);
        assert_eq!(
            mb(resolved(&["--config", config, "--store-cache-mb", "32"])),
            32
        );
        let cli = <Cli as clap::Parser>::try_parse_from(["run", "--store-cache-mb", "0"])
            .expect("arguments parse");
        let err = resolve(cli.run).expect_err("zero").to_string();
        assert!(err.contains("at least 1"), "{err}");
    }

    #[test]
    fn retention_of_zero_days_is_refused() {
        assert_eq!(retention_days(None).expect("default"), 30);
        assert_eq!(retention_days(Some(7)).expect("set"), 7);
        let err = retention_days(Some(0)).expect_err("zero").to_string();
        assert!(err.contains("at least 1"), "{err}");
        assert!(retention_days(Some(u64::MAX)).is_err());
    }
}
