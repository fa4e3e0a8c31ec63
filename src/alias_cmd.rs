//! `squall alias`: `match` tells which action alias a ChatOps command runs, and the parameters
//! it extracts, worked out here from pack folders (no server), as StackStorm matches it; `list`
//! and `exec` ask a server (see `client`).
//!
//! Only loading, printing and exit codes: matching is `squall_rules::match_command`. `match`
//! must never run the action.

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Result;
use clap::Subcommand;
use serde_json::json;
use squall_engine::load_packs;
use squall_engine::rules::{match_command, Alias};

#[derive(Subcommand)]
pub enum AliasCommand {
    /// Match a command against the packs' aliases; print the alias, the format and the
    /// parameters as JSON (exit 0), or st2's message when no format or more than one matches
    /// (exit 1). Exits 2 when the packs have problems.
    Match {
        /// A pack or a folder of packs; may be repeated.
        #[arg(long = "packs", value_name = "DIR", default_value = "./packs")]
        packs: Vec<PathBuf>,
        /// The command, as typed in chat (one argument: quote it).
        command: String,
    },
    /// The server's aliases: the commands chat can run.
    List(crate::client::AliasListArgs),
    /// Run a command through the server, as chat would, and print the answer chat would show.
    Exec(crate::client::AliasExecArgs),
}

pub fn alias(
    command: &AliasCommand,
    runtime: &squall_engine::actions::RhaiRuntime,
) -> Result<ExitCode> {
    match command {
        AliasCommand::Match { packs, command } => alias_match(packs, command, runtime),
        AliasCommand::List(args) => crate::client::alias_list(args),
        AliasCommand::Exec(args) => crate::client::alias_exec(args),
    }
}

fn alias_match(
    dirs: &[PathBuf],
    command: &str,
    runtime: &squall_engine::actions::RhaiRuntime,
) -> Result<ExitCode> {
    let catalog = load_packs(dirs, runtime);
    if !catalog.problems.is_empty() {
        for p in &catalog.problems {
            eprintln!("{p}");
        }
        eprintln!(
            "{} problems found in the packs; fix them first (squall pack validate)",
            catalog.problems.len()
        );
        return Ok(ExitCode::from(2));
    }
    let loaded: Vec<_> = catalog.aliases().collect();
    let aliases: Vec<Alias> = loaded.iter().map(|a| a.alias.clone()).collect();
    match match_command(&aliases, command) {
        Ok(m) => {
            let out = json!({
                "alias": loaded[m.index].reference,
                "format": m.representation,
                "display": m.display,
                "parameters": m.parameters,
            });
            println!("{}", serde_json::to_string_pretty(&out)?);
            Ok(ExitCode::SUCCESS)
        }
        Err(e) => {
            eprintln!("{e}");
            if let squall_engine::rules::AliasMatchError::Ambiguous { matches, .. } = &e {
                for (index, format) in matches {
                    eprintln!("  {}: {format:?}", loaded[*index].reference);
                }
            }
            Ok(ExitCode::FAILURE)
        }
    }
}
