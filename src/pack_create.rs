//! `squall pack create NAME`: a new pack to start from.

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Result;
use clap::Args;

#[derive(Args, Debug)]
pub struct CreateArgs {
    /// The pack's name (its ref): lowercase letters, digits and underscores.
    pub name: String,
    /// The folder to create the pack in (the pack is `DIR/NAME`).
    #[arg(long, value_name = "DIR", default_value = "./packs")]
    pub dir: PathBuf,
}

pub fn create(args: &CreateArgs) -> Result<ExitCode> {
    anyhow::bail!("pack create {}: not built", args.name)
}
