//! `squall pack test DIR...`: runs packs' own tests.

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Result;
use clap::Args;

#[derive(Args, Debug)]
pub struct TestArgs {
    /// A pack or a folder of packs; may be repeated.
    #[arg(required = true)]
    pub dirs: Vec<PathBuf>,
    /// Also write the results as JUnit XML to FILE.
    #[arg(long, value_name = "FILE")]
    pub junit: Option<PathBuf>,
}

pub fn test(args: &TestArgs) -> Result<ExitCode> {
    anyhow::bail!("pack test {:?}: not built", args.dirs)
}
