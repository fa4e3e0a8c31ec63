//! `squall pack install|remove|upgrade`: packs by version from git repositories or folders.

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Result;
use clap::Args;

#[derive(Args, Debug)]
pub struct InstallArgs {
    /// `SOURCE[@REF]`: a git repository or a folder, at a tag, branch or commit.
    #[arg(required = true)]
    pub sources: Vec<String>,
    /// The packs folders; packs are installed into the first.
    #[arg(long = "packs", value_name = "DIR", default_value = "./packs")]
    pub packs: Vec<PathBuf>,
}

#[derive(Args, Debug)]
pub struct RemoveArgs {
    pub name: String,
}

#[derive(Args, Debug)]
pub struct UpgradeArgs {
    pub name: String,
}

pub fn install(_args: &InstallArgs) -> Result<ExitCode> {
    anyhow::bail!("not built")
}
pub fn remove(_args: &RemoveArgs) -> Result<ExitCode> {
    anyhow::bail!("not built")
}
pub fn upgrade(_args: &UpgradeArgs) -> Result<ExitCode> {
    anyhow::bail!("not built")
}
