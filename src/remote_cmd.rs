//! `squall worker` and `squall sensors`: the roles that join a server over RabbitMQ.

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::{bail, Result};
use clap::{Args, Subcommand};

use crate::client;

#[derive(Args, Debug)]
#[command(args_conflicts_with_subcommands = true)]
pub struct WorkerArgs {
    #[command(subcommand)]
    command: Option<WorkerCommand>,
    /// The RabbitMQ URL (amqp://user:password@host:port/vhost; `?heartbeat=10` finds a lost
    /// host sooner).
    #[arg(long, value_name = "URL", env = "SQUALL_AMQP")]
    amqp: Option<String>,
    /// A named queue to serve (`squall.work.NAME`), besides the shared one; may be repeated.
    #[arg(long = "queue", value_name = "NAME")]
    queues: Vec<String>,
    /// Serve only the named queues, not the shared one.
    #[arg(long = "only-named")]
    only_named: bool,
    /// Actions run at once [default: the number of cores].
    #[arg(long, value_name = "N", env = "SQUALL_WORKER_CONCURRENCY")]
    concurrency: Option<usize>,
    /// This worker's name, as `worker list` shows it [default: the host name and pid].
    #[arg(long, value_name = "NAME")]
    name: Option<String>,
    /// Seconds running actions get to end after SIGTERM.
    #[arg(long = "grace-seconds", value_name = "S", default_value_t = 30)]
    grace_seconds: u64,
}

#[derive(Subcommand, Debug)]
enum WorkerCommand {
    /// The server's workers and sensor hosts, from their heartbeats.
    List(client::WorkerListArgs),
}

#[derive(Args, Debug)]
pub struct SensorsArgs {
    /// The RabbitMQ URL.
    #[arg(long, value_name = "URL", env = "SQUALL_AMQP")]
    amqp: String,
    /// A pack or a folder of packs whose sensors to run; may be repeated.
    #[arg(long = "packs", value_name = "DIR", required = true)]
    packs: Vec<PathBuf>,
    /// Where pack configs live (`<DIR>/<pack>.yaml`).
    #[arg(long, value_name = "DIR", default_value = "./configs")]
    configs: PathBuf,
    /// This host's name in the instances it sends [default: the host name].
    #[arg(long, value_name = "NAME")]
    name: Option<String>,
    /// Where sensors' checkpoints are kept.
    #[arg(
        long = "state-dir",
        value_name = "DIR",
        default_value = "./squall-sensors"
    )]
    state_dir: PathBuf,
}

pub fn worker(args: WorkerArgs) -> Result<ExitCode> {
    if let Some(WorkerCommand::List(list)) = &args.command {
        return client::worker_list(list);
    }
    let Some(url) = args.amqp else {
        bail!("squall worker needs --amqp URL (or SQUALL_AMQP)");
    };
    let concurrency = match args.concurrency {
        Some(0) => bail!("concurrency must be at least 1"),
        Some(n) => n,
        None => std::thread::available_parallelism()
            .map(|n| n.get())
            .unwrap_or(2),
    };
    if args.only_named && args.queues.is_empty() {
        bail!("--only-named needs at least one --queue NAME");
    }
    crate::run_cmd::init_logging();
    let name = args.name.unwrap_or_else(|| {
        format!(
            "{}-{}",
            squall_engine::amqp::host_name(),
            std::process::id()
        )
    });
    squall_engine::amqp::worker::run(squall_engine::amqp::worker::WorkerOptions {
        url,
        queues: args.queues,
        shared: !args.only_named,
        concurrency,
        name,
        grace: std::time::Duration::from_secs(args.grace_seconds),
    })?;
    Ok(ExitCode::SUCCESS)
}

pub fn sensors(args: SensorsArgs) -> Result<ExitCode> {
    crate::run_cmd::init_logging();
    squall_engine::amqp::sensor_host::run(squall_engine::amqp::sensor_host::SensorHostOptions {
        url: args.amqp,
        packs: args.packs,
        configs: args.configs,
        name: args.name.unwrap_or_else(squall_engine::amqp::host_name),
        state_dir: args.state_dir,
    })?;
    Ok(ExitCode::SUCCESS)
}
