//! The `squall` command line: one binary for validating packs, testing rules, running actions
//! here and now, (with `run`) the whole engine, and (in `client`) the commands that talk to a
//! running engine over its HTTP API.
//!
//! Only argument parsing, printing and exit codes live here; everything else is in the crates.
//! Exit codes follow st2-rule-tester where it applies: 0 success/match, 1 failure/no match,
//! 2 bad input (or an API error, or no server to talk to).

mod alias_cmd;
mod capacity_cmd;
mod client;
mod pack_cmd;
mod pack_create;
mod pack_test_cmd;
mod remote_cmd;
mod run_cmd;

/// mimalloc rather than glibc's allocator: squall allocates many small, short-lived values per
/// event (JSON, records), and glibc's malloc spent about a quarter of the ingest path's time
/// consolidating and unlinking chunks (with mimalloc the full pipeline ran about 50% faster).
/// Built without transparent huge pages, which tripled idle memory (66 MB against 22 MB).
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::Arc;

use anyhow::{anyhow, bail, Context, Result};
use clap::{ArgGroup, Args, Parser, Subcommand};
use serde_json::{Map, Value};
use squall_engine::actions::{
    parse_cli_value, validate_params, CancelToken, Limits, LogLine, MemoryKv, RhaiRuntime,
};
use squall_engine::rules::{EvalEnv, NoKeyValues, Rule, RuleSet, TriggerInstanceView};
use squall_engine::{load_packs, run_action, Catalog, FinalStatus, RunContext};

#[derive(Parser)]
#[command(
    name = "squall",
    version,
    about = "Event-driven automation for operations teams"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run the whole engine in one process (with --amqp, its actions on remote workers).
    Run(run_cmd::RunArgs),
    /// A remote worker: runs the actions a server (`squall run --amqp`) sends over RabbitMQ;
    /// `worker list` shows the server's workers.
    Worker(remote_cmd::WorkerArgs),
    /// A sensor host: runs the sensors of the packs given and sends their trigger instances
    /// to the server over RabbitMQ.
    Sensors(remote_cmd::SensorsArgs),
    /// Capacity per app and cluster (containers online vs expected, CPU, memory), from the
    /// capacity pack's collector; with an app, its containers.
    Capacity(capacity_cmd::CapacityArgs),
    /// Packs: validate them here; list or reload the server's.
    Pack {
        #[command(subcommand)]
        command: PackCommand,
    },
    /// Rules: list and show the server's; test one against a trigger instance.
    Rule {
        #[command(subcommand)]
        command: RuleCommand,
    },
    /// Action aliases (ChatOps commands): match a command here, as StackStorm does.
    Alias {
        #[command(subcommand)]
        command: alias_cmd::AliasCommand,
    },
    /// Actions: run one on the server or here and now; list and show the server's.
    Action {
        #[command(subcommand)]
        command: ActionCommand,
    },
    /// Executions on the server: list, show, follow, cancel, re-run.
    Execution {
        #[command(subcommand)]
        command: client::ExecutionCommand,
    },
    /// Trigger types and trigger instances on the server; fire a trigger.
    Trigger {
        #[command(subcommand)]
        command: client::TriggerCommand,
    },
    /// The server's key-value store (st2kv).
    Key {
        #[command(subcommand)]
        command: client::KeyCommand,
    },
    /// The server's sensors and their state.
    Sensor {
        #[command(subcommand)]
        command: client::SensorCommand,
    },
    /// API keys for the server.
    Apikey {
        #[command(subcommand)]
        command: client::ApikeyCommand,
    },
}

#[derive(Subcommand)]
enum PackCommand {
    /// Check packs (each DIR is a pack or a folder of packs) together; list every problem.
    Validate {
        #[arg(required = true)]
        dirs: Vec<PathBuf>,
    },
    /// List the packs the server has loaded, with their versions, where each was installed
    /// from, and their problems (exit 1 if any); with --packs DIR, the packs in DIR.
    List(client::PackListArgs),
    /// Make the server load its packs again; print what it loaded and the problems.
    Reload(client::PackReloadArgs),
    /// Install packs from git repositories (any URL git accepts, a local path, a bare repo) or
    /// folders, at a tag, branch or commit (`SOURCE@REF`): staged, validated, then swapped in.
    Install(pack_cmd::InstallArgs),
    /// Remove an installed pack.
    Remove(pack_cmd::RemoveArgs),
    /// Install another version of an installed pack from where it came from.
    Upgrade(pack_cmd::UpgradeArgs),
    /// Create a new pack with an example action, rule, alias, tests and README.
    Create(pack_create::CreateArgs),
    /// Run packs' own tests (`tests/*.yaml`: rule cases and action cases).
    Test(pack_test_cmd::TestArgs),
}

#[derive(Args)]
struct PacksArg {
    /// A pack or a folder of packs; may be repeated.
    #[arg(long = "packs", value_name = "DIR", default_value = "./packs")]
    packs: Vec<PathBuf>,
    /// Where pack configs live (`<DIR>/<pack>.yaml`).
    #[arg(long, value_name = "DIR", default_value = "./configs")]
    configs: PathBuf,
}

#[derive(Subcommand)]
enum RuleCommand {
    /// List the server's rules.
    List(client::RuleListArgs),
    /// Show one of the server's rules.
    Get(client::RuleGetArgs),
    /// Test a rule against a trigger instance, like st2-rule-tester: files here
    /// (--rule, --trigger-instance), or the server's rule and stored instance
    /// (--rule-ref, --trigger-instance-id).
    Test(RuleTestArgs),
}

#[derive(Args)]
#[command(group(ArgGroup::new("mode").required(true).args(["rule", "rule_ref"])))]
struct RuleTestArgs {
    /// The rule (YAML or JSON).
    #[arg(long, value_name = "FILE", requires = "trigger_instance")]
    rule: Option<PathBuf>,
    /// The trigger instance: {"trigger": "<type ref>", "payload": {...}} (YAML or JSON).
    #[arg(long = "trigger-instance", value_name = "FILE", requires = "rule")]
    trigger_instance: Option<PathBuf>,
    /// With --rule: a pack or a folder of packs to check the action against; may be repeated.
    #[arg(long = "packs", value_name = "DIR", default_value = "./packs")]
    packs: Vec<PathBuf>,
    /// A rule the server has, by reference.
    #[arg(
        long = "rule-ref",
        value_name = "REF",
        requires = "trigger_instance_id",
        conflicts_with_all = ["rule", "trigger_instance", "packs"]
    )]
    rule_ref: Option<String>,
    /// A trigger instance the server has stored, by id.
    #[arg(
        long = "trigger-instance-id",
        value_name = "ID",
        requires = "rule_ref",
        conflicts_with_all = ["rule", "trigger_instance", "packs"]
    )]
    trigger_instance_id: Option<String>,
    /// With --rule-ref: print the server's answer as JSON.
    #[arg(long, requires = "rule_ref")]
    json: bool,
    #[command(flatten)]
    api: client::ApiOptions,
}

#[derive(Subcommand)]
enum ActionCommand {
    /// Run an action on the server and follow it to its end (or not, with --async).
    Run(client::ActionRunArgs),
    /// List the server's actions.
    List(client::ActionListArgs),
    /// Show one of the server's actions and its parameters.
    Get(client::ActionGetArgs),
    /// Run an action here and now, without a server, and print its result.
    Exec {
        /// The action's reference, e.g. core.echo.
        action: String,
        /// Parameters as name=value; values are read as the parameter's type (n=3, xs=[1,2]).
        params: Vec<String>,
        #[command(flatten)]
        packs: PacksArg,
        /// Print the whole execution record as JSON.
        #[arg(long)]
        json: bool,
    },
}

/// A command whose output is piped into one that stops reading (`| head`) ends quietly, as
/// Unix tools killed by SIGPIPE do (status 141), instead of with a panic's backtrace: Rust's
/// `println!` panics when stdout is a closed pipe.
fn quiet_on_closed_stdout() {
    let default = std::panic::take_hook();
    std::panic::set_hook(Box::new(move |info| {
        let message = info
            .payload()
            .downcast_ref::<String>()
            .map(String::as_str)
            .or_else(|| info.payload().downcast_ref::<&str>().copied())
            .unwrap_or_default();
        if message.starts_with("failed printing to stdout") && message.contains("Broken pipe") {
            std::process::exit(141);
        }
        default(info);
    }));
}

/// The arguments with `--api`/`--api-key` given before the command moved after it (`squall
/// --api URL execution list` as well as `squall execution list --api URL`): each API command
/// takes them, and a flag after a command's positional arguments is still a flag.
fn server_options_last(args: Vec<std::ffi::OsString>) -> Vec<std::ffi::OsString> {
    let mut out = Vec::with_capacity(args.len());
    let mut moved = Vec::new();
    let mut iter = args.into_iter();
    out.extend(iter.next()); // the program's name
    let mut leading = true;
    while let Some(arg) = iter.next() {
        let text = arg.to_string_lossy();
        if leading && (text == "--api" || text == "--api-key") {
            moved.push(arg);
            moved.extend(iter.next());
        } else if leading && (text.starts_with("--api=") || text.starts_with("--api-key=")) {
            moved.push(arg);
        } else {
            leading = false;
            out.push(arg);
        }
    }
    // Before a `--`, after which everything is positional.
    let at = out.iter().position(|a| a == "--").unwrap_or(out.len());
    out.splice(at..at, moved);
    out
}

fn main() -> ExitCode {
    let cli = Cli::parse_from(server_options_last(std::env::args_os().collect()));
    quiet_on_closed_stdout();
    let outcome = match cli.command {
        Command::Run(args) => run_cmd::run(args),
        Command::Pack { command } => match command {
            PackCommand::Validate { dirs } => pack_validate(&dirs),
            PackCommand::List(args) if !args.packs.is_empty() => {
                pack_cmd::list_local(&args.packs, args.json)
            }
            PackCommand::List(args) => client::pack_list(&args),
            PackCommand::Reload(args) => client::pack_reload(&args),
            PackCommand::Install(args) => pack_cmd::install(&args),
            PackCommand::Remove(args) => pack_cmd::remove(&args),
            PackCommand::Upgrade(args) => pack_cmd::upgrade(&args),
            PackCommand::Create(args) => pack_create::create(&args),
            PackCommand::Test(args) => pack_test_cmd::test(&args),
        },
        Command::Rule { command } => match command {
            RuleCommand::List(args) => client::rule_list(&args),
            RuleCommand::Get(args) => client::rule_get(&args),
            RuleCommand::Test(args) => rule_test_either(&args),
        },
        Command::Alias { command } => alias_cmd::alias(&command, &runtime()),
        Command::Action { command } => match command {
            ActionCommand::Run(args) => client::action_run(&args),
            ActionCommand::List(args) => client::action_list(&args),
            ActionCommand::Get(args) => client::action_get(&args),
            ActionCommand::Exec {
                action,
                params,
                packs,
                json,
            } => action_exec(&action, &params, &packs, json),
        },
        Command::Execution { command } => client::execution(&command),
        Command::Trigger { command } => client::trigger(&command),
        Command::Key { command } => client::key(&command),
        Command::Apikey { command } => client::apikey(&command),
        Command::Sensor { command } => client::sensor(&command),
        Command::Worker(args) => remote_cmd::worker(args),
        Command::Sensors(args) => remote_cmd::sensors(args),
        Command::Capacity(args) => capacity_cmd::capacity(&args),
    };
    match outcome {
        Ok(code) => code,
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::from(2)
        }
    }
}

/// `rule test` takes either the local pair of options or the server's; clap has checked that
/// exactly one pair is complete, this says so again rather than trust it.
fn rule_test_either(args: &RuleTestArgs) -> Result<ExitCode> {
    match (
        &args.rule,
        &args.trigger_instance,
        &args.rule_ref,
        &args.trigger_instance_id,
    ) {
        (Some(rule), Some(instance), None, None) => rule_test(rule, instance, &args.packs),
        (None, None, Some(rule), Some(instance)) => {
            client::rule_test(&args.api, rule, instance, args.json)
        }
        _ => bail!(
            "give either --rule FILE --trigger-instance FILE, or --rule-ref REF --trigger-instance-id ID"
        ),
    }
}

pub(crate) fn runtime() -> RhaiRuntime {
    RhaiRuntime::new(Limits::default())
}

fn pack_validate(dirs: &[PathBuf]) -> Result<ExitCode> {
    let catalog = load_packs(dirs, &runtime());
    for pack in &catalog.packs {
        println!(
            "pack {} {} ({}): {} actions, {} rules, {} aliases",
            pack.reference,
            pack.meta.version,
            pack.dir.display(),
            pack.actions.len(),
            pack.rules.len(),
            pack.aliases.len()
        );
    }
    if catalog.problems.is_empty() {
        println!("ok: {} packs, no problems", catalog.packs.len());
        return Ok(ExitCode::SUCCESS);
    }
    for p in &catalog.problems {
        eprintln!("{p}");
    }
    eprintln!("{} problems found", catalog.problems.len());
    Ok(ExitCode::FAILURE)
}

/// Loads packs for a command that can do without them when the default folder is absent.
fn optional_catalog(dirs: &[PathBuf]) -> Option<Catalog> {
    let default_only = dirs.len() == 1 && dirs[0] == Path::new("./packs");
    if default_only && !dirs[0].exists() {
        return None;
    }
    Some(load_packs(dirs, &runtime()))
}

fn read_data(path: &Path) -> Result<Value> {
    let text =
        std::fs::read_to_string(path).with_context(|| format!("cannot read {}", path.display()))?;
    serde_yaml::from_str::<Value>(&text).map_err(|e| {
        let p = squall_engine::rules::yaml_problem(&e);
        match p.line {
            Some(l) => anyhow!("{}:{l}: {}", path.display(), p.message),
            None => anyhow!("{}: {}", path.display(), p.message),
        }
    })
}

fn rule_test(rule_file: &Path, instance_file: &Path, packs: &[PathBuf]) -> Result<ExitCode> {
    let text = std::fs::read_to_string(rule_file)
        .with_context(|| format!("cannot read {}", rule_file.display()))?;
    let rule = Rule::from_yaml(&text).map_err(|errs| {
        let lines: Vec<String> = errs
            .iter()
            .map(|p| format!("{}: {p}", rule_file.display()))
            .collect();
        anyhow!("invalid rule:\n{}", lines.join("\n"))
    })?;
    let instance = read_data(instance_file)?;
    let trigger = instance
        .get("trigger")
        .and_then(Value::as_str)
        .ok_or_else(|| {
            anyhow!(
                "{}: 'trigger' (the trigger type ref) is required",
                instance_file.display()
            )
        })?
        .to_string();
    let payload = instance
        .get("payload")
        .cloned()
        .unwrap_or(Value::Object(Map::new()));
    let rule_ref = rule.reference();
    let throttle = rule.throttle.clone();
    let set = RuleSet::new(vec![rule]).map_err(|errs| {
        anyhow!(
            "invalid rule: {}",
            errs.iter()
                .map(|(_, m)| m.clone())
                .collect::<Vec<_>>()
                .join("; ")
        )
    })?;
    let env = EvalEnv {
        now: chrono::Utc::now(),
        kv: Arc::new(NoKeyValues),
    };
    let view = TriggerInstanceView {
        trigger: &trigger,
        payload: &payload,
        trigger_parameters: instance.get("trigger_parameters"),
    };
    if let Err(why) = set.check(0, &view, &env, false) {
        println!("=== RULE DOES NOT MATCH ===");
        println!("rule: {rule_ref}");
        println!("{why}");
        return Ok(ExitCode::FAILURE);
    }
    let request = set
        .render_action(0, &payload, None, &env)
        .map_err(|e| anyhow!("rule {rule_ref} matches but its action cannot be rendered: {e}"))?;
    let mut parameters = request.parameters.clone();
    let mut note = None;
    if let Some(catalog) = optional_catalog(packs) {
        match catalog.action(&request.action) {
            Some(action) => match validate_params(&action.meta, parameters.clone()) {
                Ok(cast) => parameters = squall_engine::actions::mask_secrets(&action.meta, &cast),
                Err(errors) => {
                    println!("=== RULE MATCHES ===");
                    println!("rule: {rule_ref}");
                    println!("action: {}", request.action);
                    println!("parameters: {}", pretty(&Value::Object(parameters)));
                    let list: Vec<String> = errors.iter().map(ToString::to_string).collect();
                    bail!("the action would be refused:\n  {}", list.join("\n  "));
                }
            },
            None => {
                note = Some(format!(
                    "note: action '{}' is not in the loaded packs",
                    request.action
                ))
            }
        }
    }
    println!("=== RULE MATCHES ===");
    println!("rule: {rule_ref}");
    println!("action: {}", request.action);
    println!("parameters: {}", pretty(&Value::Object(parameters)));
    if let Some(t) = throttle {
        println!(
            "throttle: at most {} per {} s per {}",
            t.max,
            t.window.as_secs(),
            squall_engine::rules::ThrottleState::group_key(&t, &payload)
        );
    }
    if let Some(n) = note {
        println!("{n}");
    }
    Ok(ExitCode::SUCCESS)
}

fn pretty(v: &Value) -> String {
    serde_json::to_string_pretty(v).unwrap_or_else(|_| v.to_string())
}

/// Where `action exec` sends log lines as the script prints them.
type LiveLog = Arc<dyn Fn(&LogLine) + Send + Sync>;

fn action_exec(
    action_ref: &str,
    args: &[String],
    packs: &PacksArg,
    json: bool,
) -> Result<ExitCode> {
    let rt = runtime();
    let catalog = squall_engine::load_packs_with_configs(&packs.packs, &packs.configs, &rt);
    let action = catalog.action(action_ref).ok_or_else(|| {
        let mut msg = format!("no loaded pack provides action '{action_ref}'");
        if !catalog.problems.is_empty() {
            msg.push_str(&format!(
                " ({} problems while loading packs; run `squall pack validate`)",
                catalog.problems.len()
            ));
        }
        anyhow!(msg)
    })?;
    let mut given = Map::new();
    let mut errors = Vec::new();
    for arg in args {
        let Some((name, text)) = arg.split_once('=') else {
            errors.push(format!("'{arg}' is not name=value"));
            continue;
        };
        match action.meta.parameters.get(name) {
            None => errors.push(format!(
                "parameter '{name}': action {action_ref} has no such parameter (it has: {})",
                action
                    .meta
                    .parameters
                    .keys()
                    .cloned()
                    .collect::<Vec<_>>()
                    .join(", ")
            )),
            Some(spec) => match parse_cli_value(spec.ty, text) {
                Ok(v) => {
                    given.insert(name.to_string(), v);
                }
                Err(e) => errors.push(format!("parameter '{name}': {e}")),
            },
        }
    }
    if !errors.is_empty() {
        bail!("invalid parameters:\n  {}", errors.join("\n  "));
    }
    let cancel = CancelToken::default();
    let live: Option<LiveLog> = if json {
        None
    } else {
        Some(Arc::new(|line: &LogLine| {
            let level = serde_json::to_value(line.level).unwrap_or(Value::Null);
            eprintln!("[{}] {}", level.as_str().unwrap_or("log"), line.message);
        }))
    };
    let config = catalog
        .packs
        .iter()
        .find(|p| p.reference == action.pack)
        .map(|p| Value::Object(p.config.clone()))
        .unwrap_or(Value::Null);
    let context = RunContext {
        kv: Arc::new(MemoryKv::new()),
        cancel,
        ctx: serde_json::json!({
            "execution_id": format!("local-{}", chrono::Utc::now().timestamp_micros()),
            "action": action_ref,
            "user": std::env::var("USER").unwrap_or_else(|_| "cli".into()),
            "config": config,
        }),
        on_log: live,
    };
    // Scripts need the deep stack the worker pool gives them (see SCRIPT_THREAD_STACK_SIZE).
    let record = std::thread::scope(|scope| {
        std::thread::Builder::new()
            .stack_size(squall_engine::actions::SCRIPT_THREAD_STACK_SIZE)
            .spawn_scoped(scope, || {
                run_action(&catalog, &rt, action_ref, given, context)
            })
            .map_err(|e| anyhow!("cannot start the script thread: {e}"))?
            .join()
            .map_err(|_| anyhow!("the script thread panicked"))
    })??;
    if json {
        println!("{}", pretty(&serde_json::to_value(&record)?));
    } else {
        match (&record.result, record.status) {
            (Value::String(s), FinalStatus::Succeeded) => println!("{s}"),
            (other, FinalStatus::Succeeded) => println!("{}", pretty(other)),
            (result, status) => {
                let message = result["error"].as_str().unwrap_or("no message");
                let at = match (result["line"].as_u64(), result["column"].as_u64()) {
                    (Some(l), Some(c)) => format!(
                        " (line {l}, column {c} of {})",
                        action.entry_point.display()
                    ),
                    _ => String::new(),
                };
                eprintln!("{}: {message}{at}", status.as_str());
            }
        }
    }
    Ok(if record.status == FinalStatus::Succeeded {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    })
}
