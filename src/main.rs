//! The `squall` command line: one binary for validating packs, testing rules, running actions
//! and (with `run`) the whole engine.
//!
//! Only argument parsing, printing and exit codes live here; everything else is in the crates.
//! Exit codes follow st2-rule-tester where it applies: 0 success/match, 1 failure/no match,
//! 2 bad input.

use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::Arc;

use anyhow::{anyhow, bail, Context, Result};
use clap::{Args, Parser, Subcommand};
use serde_json::{Map, Value};
use squall_engine::actions::{
    parse_cli_value, validate_params, CancelToken, Limits, LogLine, MemoryKv, RhaiRuntime,
};
use squall_engine::rules::{EvalEnv, NoKeyValues, Rule, RuleSet, TriggerInstanceView};
use squall_engine::{load_packs, run_action, Catalog, FinalStatus, RunContext};

#[derive(Parser)]
#[command(name = "squall", version, about = "Event-driven automation for operations teams")]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Packs: validate them.
    Pack {
        #[command(subcommand)]
        command: PackCommand,
    },
    /// Rules: test one against a trigger instance.
    Rule {
        #[command(subcommand)]
        command: RuleCommand,
    },
    /// Actions: run one here and now.
    Action {
        #[command(subcommand)]
        command: ActionCommand,
    },
}

#[derive(Subcommand)]
enum PackCommand {
    /// Check packs (each DIR is a pack or a folder of packs) together; list every problem.
    Validate {
        #[arg(required = true)]
        dirs: Vec<PathBuf>,
    },
}

#[derive(Args)]
struct PacksArg {
    /// A pack or a folder of packs; may be repeated.
    #[arg(long = "packs", value_name = "DIR", default_value = "./packs")]
    packs: Vec<PathBuf>,
}

#[derive(Subcommand)]
enum RuleCommand {
    /// Test a rule file against a trigger instance file, like st2-rule-tester.
    Test {
        /// The rule (YAML or JSON).
        #[arg(long, value_name = "FILE")]
        rule: PathBuf,
        /// The trigger instance: {"trigger": "<type ref>", "payload": {...}} (YAML or JSON).
        #[arg(long = "trigger-instance", value_name = "FILE")]
        trigger_instance: PathBuf,
        #[command(flatten)]
        packs: PacksArg,
    },
}

#[derive(Subcommand)]
enum ActionCommand {
    /// Run an action now and print its result.
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

fn main() -> ExitCode {
    let cli = Cli::parse();
    let outcome = match cli.command {
        Command::Pack {
            command: PackCommand::Validate { dirs },
        } => pack_validate(&dirs),
        Command::Rule {
            command:
                RuleCommand::Test {
                    rule,
                    trigger_instance,
                    packs,
                },
        } => rule_test(&rule, &trigger_instance, &packs.packs),
        Command::Action {
            command:
                ActionCommand::Exec {
                    action,
                    params,
                    packs,
                    json,
                },
        } => action_exec(&action, &params, &packs.packs, json),
    };
    match outcome {
        Ok(code) => code,
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::from(2)
        }
    }
}

fn runtime() -> RhaiRuntime {
    RhaiRuntime::new(Limits::default())
}

fn pack_validate(dirs: &[PathBuf]) -> Result<ExitCode> {
    let catalog = load_packs(dirs, &runtime());
    for pack in &catalog.packs {
        println!(
            "pack {} {} ({}): {} actions, {} rules",
            pack.reference,
            pack.meta.version,
            pack.dir.display(),
            pack.actions.len(),
            pack.rules.len()
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
    let text = std::fs::read_to_string(path).with_context(|| format!("cannot read {}", path.display()))?;
    serde_yaml::from_str::<Value>(&text).map_err(|e| {
        let p = squall_engine::rules::yaml_problem(&e);
        match p.line {
            Some(l) => anyhow!("{}:{l}: {}", path.display(), p.message),
            None => anyhow!("{}: {}", path.display(), p.message),
        }
    })
}

fn rule_test(rule_file: &Path, instance_file: &Path, packs: &[PathBuf]) -> Result<ExitCode> {
    let text = std::fs::read_to_string(rule_file).with_context(|| format!("cannot read {}", rule_file.display()))?;
    let rule = Rule::from_yaml(&text).map_err(|errs| {
        let lines: Vec<String> = errs.iter().map(|p| format!("{}: {p}", rule_file.display())).collect();
        anyhow!("invalid rule:\n{}", lines.join("\n"))
    })?;
    let instance = read_data(instance_file)?;
    let trigger = instance
        .get("trigger")
        .and_then(Value::as_str)
        .ok_or_else(|| anyhow!("{}: 'trigger' (the trigger type ref) is required", instance_file.display()))?
        .to_string();
    let payload = instance.get("payload").cloned().unwrap_or(Value::Object(Map::new()));
    let rule_ref = rule.reference();
    let throttle = rule.throttle.clone();
    let set = RuleSet::new(vec![rule]).map_err(|errs| {
        anyhow!(
            "invalid rule: {}",
            errs.iter().map(|(_, m)| m.clone()).collect::<Vec<_>>().join("; ")
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
        .render_action(0, &payload, &env)
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
            None => note = Some(format!("note: action '{}' is not in the loaded packs", request.action)),
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

fn action_exec(action_ref: &str, args: &[String], packs: &[PathBuf], json: bool) -> Result<ExitCode> {
    let rt = runtime();
    let catalog = load_packs(packs, &rt);
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
                action.meta.parameters.keys().cloned().collect::<Vec<_>>().join(", ")
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
    let live: Option<Arc<dyn Fn(&LogLine) + Send + Sync>> = if json {
        None
    } else {
        Some(Arc::new(|line: &LogLine| {
            let level = serde_json::to_value(line.level).unwrap_or(Value::Null);
            eprintln!("[{}] {}", level.as_str().unwrap_or("log"), line.message);
        }))
    };
    let record = run_action(
        &catalog,
        &rt,
        action_ref,
        given,
        RunContext {
            kv: Arc::new(MemoryKv::new()),
            cancel,
            ctx: serde_json::json!({
                "execution_id": format!("local-{}", chrono::Utc::now().timestamp_micros()),
                "action": action_ref,
                "user": std::env::var("USER").unwrap_or_else(|_| "cli".into()),
            }),
            on_log: live,
        },
    )?;
    if json {
        println!("{}", pretty(&serde_json::to_value(&record)?));
    } else {
        match (&record.result, record.status) {
            (Value::String(s), FinalStatus::Succeeded) => println!("{s}"),
            (other, FinalStatus::Succeeded) => println!("{}", pretty(other)),
            (result, status) => {
                let message = result["error"].as_str().unwrap_or("no message");
                let at = match (result["line"].as_u64(), result["column"].as_u64()) {
                    (Some(l), Some(c)) => format!(" (line {l}, column {c} of {})", action.entry_point.display()),
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
