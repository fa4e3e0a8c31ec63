//! `squall inquiry list|get|respond`: the server's inquiries (questions `core.ask` asks in
//! workflows) and answering them, as `st2 inquiry` does. Only talks to the API.

use std::process::ExitCode;

use anyhow::{bail, Context, Result};
use clap::{Args, Subcommand};
use serde_json::{json, Value};

use crate::client::{pretty, print_json, ApiOptions, Client};

#[derive(Subcommand, Debug)]
pub enum InquiryCommand {
    /// List the inquiries waiting for a response.
    List(InquiryListArgs),
    /// Show an inquiry: who may respond, and the schema the response must fit.
    Get(InquiryGetArgs),
    /// Respond to an inquiry; its workflow carries on. Exit 1 when the response is refused.
    Respond(InquiryRespondArgs),
}

#[derive(Args, Debug)]
pub struct InquiryListArgs {
    #[arg(long)]
    pub json: bool,
    #[command(flatten)]
    pub api: ApiOptions,
}

#[derive(Args, Debug)]
pub struct InquiryGetArgs {
    pub id: String,
    #[arg(long)]
    pub json: bool,
    #[command(flatten)]
    pub api: ApiOptions,
}

#[derive(Args, Debug)]
pub struct InquiryRespondArgs {
    pub id: String,
    /// The response, a JSON object (e.g. '{"continue": true}').
    #[arg(short = 'r', long = "response", value_name = "JSON")]
    pub response: String,
    #[arg(long)]
    pub json: bool,
    #[command(flatten)]
    pub api: ApiOptions,
}

pub fn inquiry(command: &InquiryCommand) -> Result<ExitCode> {
    match command {
        InquiryCommand::List(args) => {
            let client = Client::new(&args.api)?;
            let list = client.get(&["inquiries"], &[])?;
            if args.json {
                return Ok(print_json(&list));
            }
            let items = list.as_array().cloned().unwrap_or_default();
            if items.is_empty() {
                println!("no inquiry is waiting for a response");
                return Ok(ExitCode::SUCCESS);
            }
            println!("{:<28} {:<16} {:>6}  users", "id", "route", "ttl");
            for i in items {
                println!(
                    "{:<28} {:<16} {:>6}  {}",
                    i["id"].as_str().unwrap_or_default(),
                    i["route"].as_str().unwrap_or_default(),
                    i["ttl"],
                    names(&i["users"]),
                );
            }
            Ok(ExitCode::SUCCESS)
        }
        InquiryCommand::Get(args) => {
            let client = Client::new(&args.api)?;
            let i = client.get(&["inquiries", &args.id], &[])?;
            if args.json {
                return Ok(print_json(&i));
            }
            println!("id: {}", i["id"].as_str().unwrap_or_default());
            println!("route: {}", i["route"].as_str().unwrap_or_default());
            println!("ttl: {} minutes", i["ttl"]);
            println!("users: {}", names(&i["users"]));
            println!("roles: {}", names(&i["roles"]));
            println!("schema:\n{}", pretty(&i["schema"]));
            Ok(ExitCode::SUCCESS)
        }
        InquiryCommand::Respond(args) => {
            let response: Value = serde_json::from_str(&args.response)
                .with_context(|| format!("--response is not JSON: {}", args.response))?;
            if !response.is_object() {
                bail!("--response must be a JSON object, such as '{{\"continue\": true}}'");
            }
            let client = Client::new(&args.api)?;
            let body = json!({"id": args.id, "response": response});
            match client.call(
                reqwest::Method::PUT,
                &["inquiries", &args.id],
                &[],
                Some(&body),
            ) {
                Ok(answer) if args.json => Ok(print_json(&answer)),
                Ok(_) => {
                    println!("response accepted for inquiry {}", args.id);
                    Ok(ExitCode::SUCCESS)
                }
                Err(e) => {
                    eprintln!("error: {e}");
                    Ok(ExitCode::FAILURE)
                }
            }
        }
    }
}

/// A list of names as one line (`anyone` when empty: no restriction).
fn names(v: &Value) -> String {
    let list: Vec<&str> = v
        .as_array()
        .map(|a| a.iter().filter_map(Value::as_str).collect())
        .unwrap_or_default();
    if list.is_empty() {
        "anyone".to_string()
    } else {
        list.join(", ")
    }
}
