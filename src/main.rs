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
mod correlate_test;
mod inquiry_cmd;
mod pack_cmd;
mod pack_create;
mod pack_test_cmd;
mod remote_cmd;
mod run_cmd;

/// jemalloc rather than glibc's allocator: squall allocates many small, short-lived values per
/// event (JSON, records), and glibc's malloc spent about a quarter of the ingest path's time
/// consolidating and unlinking chunks. Among the allocators measured under sustained load
/// (BENCHMARKS.md, "Memory and disk under sustained load"), jemalloc kept resident memory
/// nearly level where glibc's malloc and mimalloc fragmented under the store's cache replacing
/// pages of varying sizes, at the throughput mimalloc gave.
#[global_allocator]
static ALLOCATOR: tikv_jemallocator::Jemalloc = tikv_jemallocator::Jemalloc;

use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::Arc;

use anyhow::{anyhow, bail, Context, Result};
use clap::{ArgGroup, Args, Parser, Subcommand};
use serde_json::{Map, Value};
use squall_engine::actions::{
    parse_cli_value, validate_params, CancelToken, KvStore, Limits, LogLine, MemoryKv, RhaiRuntime,
};
use squall_engine::rules::{
    EvalEnv, KeyValueLookup, NoKeyValues, Rule, RuleSet, TriggerInstanceView,
};
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
    /// Inquiries (questions `core.ask` asks): list, show, respond.
    Inquiry {
        #[command(subcommand)]
        command: inquiry_cmd::InquiryCommand,
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
        Command::Inquiry { command } => inquiry_cmd::inquiry(&command),
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
    let mut rule = Rule::from_yaml(&text).map_err(|errs| {
        let lines: Vec<String> = errs
            .iter()
            .map(|p| format!("{}: {p}", rule_file.display()))
            .collect();
        anyhow!("invalid rule:\n{}", lines.join("\n"))
    })?;
    // st2-rule-tester evaluates a disabled rule as if it were enabled; so does this, saying so.
    if !rule.enabled {
        rule.enabled = true;
        println!("note: the rule is disabled (enabled: false); evaluated as if it were enabled");
    }
    if rule.is_correlation() {
        return correlate_test::correlation_test(rule, &read_data(instance_file)?);
    }
    let instance = trigger_instance(&read_data(instance_file)?)
        .map_err(|e| anyhow!("{}: {e}", instance_file.display()))?;
    let catalog = optional_catalog(packs);
    let verdict = check_rule(rule, &instance, catalog.as_ref(), Arc::new(NoKeyValues))?;
    let found = match verdict {
        RuleVerdict::NoMatch { rule, why } => {
            println!("=== RULE DOES NOT MATCH ===");
            println!("rule: {rule}");
            println!("{why}");
            return Ok(ExitCode::FAILURE);
        }
        RuleVerdict::Matches(found) => *found,
    };
    println!("=== RULE MATCHES ===");
    println!("rule: {}", found.rule);
    println!("action: {}", found.action);
    println!("parameters: {}", pretty(&Value::Object(found.shown)));
    if !found.refused.is_empty() {
        bail!(
            "the action would be refused:\n  {}",
            found.refused.join("\n  ")
        );
    }
    if let Some(t) = found.throttle {
        println!("{t}");
    }
    if let Some(n) = found.note {
        println!("{n}");
    }
    Ok(ExitCode::SUCCESS)
}

/// A trigger instance as `rule test` reads it (st2-rule-tester's file):
/// `{"trigger": "<type ref>", "payload": {...}, "trigger_parameters": {...}}`.
struct TriggerInstance {
    trigger: String,
    payload: Value,
    trigger_parameters: Option<Value>,
}

fn trigger_instance(value: &Value) -> std::result::Result<TriggerInstance, String> {
    let trigger = value
        .get("trigger")
        .and_then(Value::as_str)
        .ok_or("'trigger' (the trigger type ref) is required")?
        .to_string();
    Ok(TriggerInstance {
        trigger,
        payload: value
            .get("payload")
            .cloned()
            .unwrap_or(Value::Object(Map::new())),
        trigger_parameters: value.get("trigger_parameters").cloned(),
    })
}

/// What a rule does with a trigger instance, as st2-rule-tester tells it.
enum RuleVerdict {
    NoMatch { rule: String, why: String },
    Matches(Box<RuleMatch>),
}

struct RuleMatch {
    rule: String,
    action: String,
    /// The parameters the rule renders, cast to the action's types when a loaded pack provides
    /// it (without the defaults the action would add).
    parameters: Map<String, Value>,
    /// The parameters as `rule test` shows them: cast ones with their secrets masked.
    shown: Map<String, Value>,
    /// Why the action would refuse the parameters, one line each; empty when it would not.
    refused: Vec<String>,
    /// The rule's throttle, described.
    throttle: Option<String>,
    /// Said when the action could not be checked.
    note: Option<String>,
}

/// Checks `rule` against `instance` as `squall rule test` does (and `pack test` for its rule
/// cases): the criteria, then the action's parameters rendered with `kv` and, when `catalog`
/// has the action, checked and cast against its metadata. A rule that matches but whose
/// parameters cannot be rendered is an error.
fn check_rule(
    rule: Rule,
    instance: &TriggerInstance,
    catalog: Option<&Catalog>,
    kv: Arc<dyn KeyValueLookup>,
) -> Result<RuleVerdict> {
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
        kv,
    };
    let view = TriggerInstanceView {
        trigger: &instance.trigger,
        payload: &instance.payload,
        trigger_parameters: instance.trigger_parameters.as_ref(),
    };
    if let Err(why) = set.check(0, &view, &env, false) {
        return Ok(RuleVerdict::NoMatch {
            rule: rule_ref,
            why: why.to_string(),
        });
    }
    let request = set
        .render_action(0, &instance.payload, None, &env)
        .map_err(|e| anyhow!("rule {rule_ref} matches but its action cannot be rendered: {e}"))?;
    let mut found = RuleMatch {
        parameters: request.parameters.clone(),
        shown: request.parameters,
        refused: Vec::new(),
        throttle: throttle.map(|t| {
            format!(
                "throttle: at most {} per {} s per {}",
                t.max,
                t.window.as_secs(),
                squall_engine::rules::ThrottleState::group_key(&t, &instance.payload)
            )
        }),
        note: None,
        rule: rule_ref,
        action: request.action,
    };
    if let Some(catalog) = catalog {
        match catalog.action(&found.action) {
            Some(action) => match validate_params(&action.meta, found.parameters.clone()) {
                Ok(cast) => {
                    found.shown = squall_engine::actions::mask_secrets(&action.meta, &cast);
                    found.parameters = cast
                        .into_iter()
                        .filter(|(name, _)| found.parameters.contains_key(name))
                        .collect();
                }
                Err(errors) => found.refused = errors.iter().map(ToString::to_string).collect(),
            },
            None => {
                found.note = Some(format!(
                    "note: action '{}' is not in the loaded packs",
                    found.action
                ))
            }
        }
    }
    Ok(RuleVerdict::Matches(Box::new(found)))
}

fn pretty(v: &Value) -> String {
    serde_json::to_string_pretty(v).unwrap_or_else(|_| v.to_string())
}

/// Where `action exec` sends log lines as the script prints them.
type LiveLog = Arc<dyn Fn(&LogLine) + Send + Sync>;

/// The settings a pack's actions see as `ctx.config`.
fn pack_config(catalog: &Catalog, pack: &str) -> Value {
    catalog
        .packs
        .iter()
        .find(|p| p.reference == pack)
        .map(|p| Value::Object(p.config.clone()))
        .unwrap_or(Value::Null)
}

/// What a run here and now (`action exec`, `pack test`) gives the script besides its
/// parameters: `ctx` is `{execution_id, action, user, config}`.
fn local_run(
    action_ref: &str,
    execution_id: String,
    user: String,
    config: Value,
    kv: Arc<dyn KvStore>,
    on_log: Option<LiveLog>,
) -> RunContext {
    RunContext {
        kv,
        cancel: CancelToken::default(),
        ctx: serde_json::json!({
            "execution_id": execution_id,
            "action": action_ref,
            "user": user,
            "config": config,
        }),
        on_log,
    }
}

/// Runs `work` on a thread with the deep stack scripts need (see SCRIPT_THREAD_STACK_SIZE, the
/// worker pool's), and waits for it.
fn on_script_thread<R: Send>(work: impl FnOnce() -> R + Send) -> Result<R> {
    std::thread::scope(|scope| {
        std::thread::Builder::new()
            .stack_size(squall_engine::actions::SCRIPT_THREAD_STACK_SIZE)
            .spawn_scoped(scope, work)
            .map_err(|e| anyhow!("cannot start the script thread: {e}"))?
            .join()
            .map_err(|_| anyhow!("the script thread panicked"))
    })
}

/// A failed run's message with where the script failed: `message (line L, column C of FILE)`.
fn failure_message(result: &Value, entry_point: &Path) -> String {
    let message = result["error"].as_str().unwrap_or("no message");
    match (result["line"].as_u64(), result["column"].as_u64()) {
        (Some(l), Some(c)) => format!(
            "{message} (line {l}, column {c} of {})",
            entry_point.display()
        ),
        _ => message.to_string(),
    }
}

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
    let live: Option<LiveLog> = if json {
        None
    } else {
        Some(Arc::new(|line: &LogLine| {
            let level = serde_json::to_value(line.level).unwrap_or(Value::Null);
            eprintln!("[{}] {}", level.as_str().unwrap_or("log"), line.message);
        }))
    };
    let context = local_run(
        action_ref,
        format!("local-{}", chrono::Utc::now().timestamp_micros()),
        std::env::var("USER").unwrap_or_else(|_| "cli".into()),
        pack_config(&catalog, &action.pack),
        Arc::new(MemoryKv::new()),
        live,
    );
    let record = on_script_thread(|| run_action(&catalog, &rt, action_ref, given, context))??;
    if json {
        println!("{}", pretty(&serde_json::to_value(&record)?));
    } else {
        match (&record.result, record.status) {
            (Value::String(s), FinalStatus::Succeeded) => println!("{s}"),
            (other, FinalStatus::Succeeded) => println!("{}", pretty(other)),
            (result, status) => eprintln!(
                "{}: {}",
                status.as_str(),
                failure_message(result, &action.entry_point)
            ),
        }
    }
    Ok(if record.status == FinalStatus::Succeeded {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    })
}
