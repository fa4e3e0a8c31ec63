//! `squall capacity [APP]`: the server's capacity per app and cluster (containers online vs
//! expected, CPU, memory), as a table, or one app's containers. Printing only: the figures are
//! the capacity collector's (`GET /api/v1/capacity`).

use std::process::ExitCode;

use anyhow::Result;
use clap::Args;
use serde_json::Value;

use crate::client::{table, ApiOptions, Client};

#[derive(Args, Debug)]
pub struct CapacityArgs {
    /// Only this app, with its containers.
    pub app: Option<String>,
    #[arg(long)]
    pub json: bool,
    #[command(flatten)]
    pub api: ApiOptions,
}

fn number(v: &Value) -> String {
    match v.as_f64() {
        Some(f) if f.fract() == 0.0 => format!("{f:.0}"),
        Some(f) => format!("{f:.1}"),
        None => "-".to_string(),
    }
}

fn mib(v: &Value) -> String {
    v.as_f64()
        .map(|b| format!("{:.0} MiB", b / 1048576.0))
        .unwrap_or_else(|| "-".to_string())
}

pub fn capacity(args: &CapacityArgs) -> Result<ExitCode> {
    let client = Client::new(&args.api)?;
    let answer = client.get(&["capacity"], &[("app", args.app.clone())])?;
    if args.json {
        println!("{}", serde_json::to_string_pretty(&answer)?);
        return Ok(ExitCode::SUCCESS);
    }
    if let Some(error) = answer["error"].as_str() {
        eprintln!("the last collection failed: {error}");
    }
    let apps = answer["apps"].as_array().cloned().unwrap_or_default();
    if answer["collected_at"].is_null() {
        println!("no capacity figures yet: is the capacity pack's collector running? (squall sensor list)");
        return Ok(ExitCode::FAILURE);
    }
    if apps.is_empty() {
        match &args.app {
            Some(app) => println!("no containers of app {app}"),
            None => println!("no app containers (label them with the capacity config's app_label)"),
        }
        return Ok(ExitCode::from(u8::from(args.app.is_some())));
    }
    let rows: Vec<Vec<String>> = apps
        .iter()
        .map(|a| {
            vec![
                a["app"].as_str().unwrap_or("").to_string(),
                a["cluster"].as_str().unwrap_or("").to_string(),
                number(&a["online"]),
                number(&a["expected"]),
                number(&a["cpu_percent"]),
                number(&a["memory_percent"]),
                mib(&a["memory_bytes"]),
            ]
        })
        .collect();
    print!(
        "{}",
        table(
            &["APP", "CLUSTER", "ONLINE", "EXPECTED", "CPU %", "MEMORY %", "MEMORY"],
            &rows
        )
    );
    if args.app.is_some() {
        let rows: Vec<Vec<String>> = apps
            .iter()
            .flat_map(|a| a["containers"].as_array().cloned().unwrap_or_default())
            .map(|c| {
                vec![
                    c["name"].as_str().unwrap_or("").to_string(),
                    c["id"].as_str().unwrap_or("").chars().take(12).collect(),
                    number(&c["cpu_percent"]),
                    number(&c["cpu_limit_cores"]),
                    mib(&c["memory_bytes"]),
                    mib(&c["memory_limit_bytes"]),
                ]
            })
            .collect();
        println!();
        print!(
            "{}",
            table(
                &[
                    "CONTAINER",
                    "ID",
                    "CPU %",
                    "CPU LIMIT",
                    "MEMORY",
                    "MEMORY LIMIT"
                ],
                &rows
            )
        );
    }
    Ok(ExitCode::SUCCESS)
}
