//! `squall pack install|remove|upgrade`, and `pack list --packs DIR`: packs by version from git
//! repositories or folders, into the packs directories `squall run` reads. The work is
//! `squall_engine::pack_install`'s; here are the arguments, the printing and the exit codes
//! (0 done, 1 a pack has problems or cannot be fetched, 2 bad input).

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::{anyhow, Result};
use clap::Args;
use serde_json::{json, Value};
use squall_engine::pack_install::{self, InstallError, InstallOptions, Installed, InstalledPack};

use crate::client::{self, ApiOptions, PackReloadArgs};

/// Where packs are installed: as `squall run` is told.
#[derive(Args, Debug)]
pub struct PackDirs {
    /// The packs folders (may be repeated); packs are installed into the first
    /// [default: the settings file's `packs`, else ./packs].
    #[arg(
        long = "packs",
        value_name = "DIR",
        env = "SQUALL_PACKS",
        value_delimiter = ':'
    )]
    pub packs: Vec<PathBuf>,
    /// Where pack configs live [default: the settings file's `configs`, else ./configs].
    #[arg(long, value_name = "DIR", env = "SQUALL_CONFIGS")]
    pub configs: Option<PathBuf>,
    /// The settings file `squall run` reads (for `packs`, `configs` and `runners`).
    #[arg(long, value_name = "FILE", env = "SQUALL_CONFIG")]
    pub config: Option<PathBuf>,
}

impl PackDirs {
    fn options(&self) -> Result<InstallOptions> {
        let file = crate::run_cmd::settings_file(self.config.as_deref())?;
        let packs = if !self.packs.is_empty() {
            self.packs.clone()
        } else {
            file.packs.unwrap_or_else(|| vec![PathBuf::from("./packs")])
        };
        let configs = self
            .configs
            .clone()
            .or(file.configs)
            .unwrap_or_else(|| PathBuf::from("./configs"));
        let mut opts = InstallOptions::new(packs, configs);
        if let Some(names) = &file.runners {
            opts.runners =
                Some(squall_engine::runners_allowed::parse(names).map_err(|e| anyhow!("{e}"))?);
        }
        Ok(opts)
    }
}

/// After a change: make a running server load its packs again.
#[derive(Args, Debug)]
pub struct ReloadOptions {
    /// Then make the running server reload its packs.
    #[arg(long)]
    pub reload: bool,
    #[command(flatten)]
    pub api: ApiOptions,
}

#[derive(Args, Debug)]
pub struct InstallArgs {
    /// `SOURCE[@REF]`: a git repository (URL, local path or bare repository) or a folder
    /// holding pack.yaml, at a tag, branch or commit (st2's `SOURCE=VERSION` also works).
    #[arg(required = true, value_name = "SOURCE[@REF]")]
    pub sources: Vec<String>,
    #[command(flatten)]
    pub dirs: PackDirs,
    #[command(flatten)]
    pub reload: ReloadOptions,
    /// Print what was done as JSON.
    #[arg(long)]
    pub json: bool,
}

#[derive(Args, Debug)]
pub struct RemoveArgs {
    /// The pack's ref.
    pub name: String,
    /// Remove it even when other installed packs depend on it.
    #[arg(long)]
    pub force: bool,
    #[command(flatten)]
    pub dirs: PackDirs,
    #[command(flatten)]
    pub reload: ReloadOptions,
    #[arg(long)]
    pub json: bool,
}

#[derive(Args, Debug)]
pub struct UpgradeArgs {
    /// `NAME[@REF]`: the installed pack, and the version to install (default: the
    /// repository's highest version tag, or its branch's newest commit).
    #[arg(value_name = "NAME[@REF]")]
    pub name: String,
    #[command(flatten)]
    pub dirs: PackDirs,
    #[command(flatten)]
    pub reload: ReloadOptions,
    #[arg(long)]
    pub json: bool,
}

pub fn install(args: &InstallArgs) -> Result<ExitCode> {
    let opts = args.dirs.options()?;
    let outcome = pack_install::install(&args.sources, &opts, &crate::runtime());
    report(outcome, &opts, &args.reload, args.json)
}

pub fn upgrade(args: &UpgradeArgs) -> Result<ExitCode> {
    let opts = args.dirs.options()?;
    let (name, reference) = match args.name.split_once('@') {
        Some((n, r)) => (n, Some(r)),
        None => (args.name.as_str(), None),
    };
    let outcome = pack_install::upgrade(name, reference, &opts, &crate::runtime());
    report(outcome, &opts, &args.reload, args.json)
}

pub fn remove(args: &RemoveArgs) -> Result<ExitCode> {
    let opts = args.dirs.options()?;
    match pack_install::remove(&args.name, &opts, args.force) {
        Ok(removed) => {
            if args.json {
                println!("{}", json!({ "removed": removed }));
            } else {
                println!(
                    "removed {} {} ({})",
                    removed.name,
                    removed.version,
                    removed.dir.display()
                );
            }
            reload(&args.reload, args.json)
        }
        Err(e) => {
            eprintln!("error: {e}");
            Ok(ExitCode::FAILURE)
        }
    }
}

/// `squall pack list --packs DIR`: the packs in the folders, without a server.
pub fn list_local(dirs: &[PathBuf], json_out: bool) -> Result<ExitCode> {
    let packs = pack_install::installed_packs(dirs);
    if json_out {
        let list: Vec<Value> = packs.iter().map(local_json).collect();
        println!("{}", serde_json::to_string_pretty(&list)?);
        return Ok(ExitCode::SUCCESS);
    }
    if packs.is_empty() {
        println!("no packs in {}", display_dirs(dirs));
    }
    for p in &packs {
        println!("{}", local_line(p));
    }
    for dep in pack_install::missing_dependencies(&packs) {
        println!("missing dependency: {dep}");
    }
    Ok(ExitCode::SUCCESS)
}

fn display_dirs(dirs: &[PathBuf]) -> String {
    dirs.iter()
        .map(|d| d.display().to_string())
        .collect::<Vec<_>>()
        .join(", ")
}

fn local_json(p: &InstalledPack) -> Value {
    json!({
        "ref": p.name,
        "version": p.version,
        "path": p.dir,
        "install": p.record,
    })
}

fn local_line(p: &InstalledPack) -> String {
    let mut line = format!("pack {} {} ({})", p.name, p.version, p.dir.display());
    line.push_str(&client::install_note(
        &serde_json::to_value(&p.record).unwrap_or_default(),
    ));
    line
}

fn report(
    outcome: Result<Vec<Installed>, InstallError>,
    opts: &InstallOptions,
    reload_opts: &ReloadOptions,
    json_out: bool,
) -> Result<ExitCode> {
    match outcome {
        Ok(done) => {
            if json_out {
                println!(
                    "{}",
                    serde_json::to_string_pretty(&json!({ "installed": done }))?
                );
            } else {
                print_installed(&done);
            }
            reload(reload_opts, json_out)
        }
        Err(InstallError::Problems {
            spec,
            pack,
            problems,
            installed,
        }) => {
            if json_out {
                let list: Vec<String> = problems.iter().map(ToString::to_string).collect();
                println!(
                    "{}",
                    serde_json::to_string_pretty(&json!({
                        "installed": installed,
                        "failed": {"spec": spec, "pack": pack, "problems": list},
                    }))?
                );
            } else {
                print_installed(&installed);
                eprintln!(
                    "{spec}: pack {pack} not installed: {} problems",
                    problems.len()
                );
                for p in &problems {
                    eprintln!("  {p}");
                }
                match pack_install::installed_packs(&opts.packs_dirs)
                    .iter()
                    .find(|p| p.name == pack)
                {
                    Some(p) => {
                        eprintln!("pack {pack} stays at {} ({})", p.version, p.dir.display())
                    }
                    None => eprintln!("pack {pack} is not installed"),
                }
            }
            if !installed.is_empty() {
                let _ = reload(reload_opts, json_out)?;
            }
            Ok(ExitCode::FAILURE)
        }
        Err(InstallError::Failed(why)) => {
            eprintln!("error: {why}");
            Ok(ExitCode::FAILURE)
        }
    }
}

fn print_installed(done: &[Installed]) {
    for i in done {
        let mut line = format!("installed {} {}", i.name, i.version);
        match &i.previous {
            Some(prev) if *prev == i.version => line.push_str(" (again)"),
            Some(prev) => line.push_str(&format!(" (was {prev})")),
            None => {}
        }
        if let Some(of) = &i.dependency_of {
            line.push_str(&format!(", needed by {of}"));
        }
        line.push_str(&format!(" into {}", i.dir.display()));
        line.push_str(&client::install_note(
            &serde_json::to_value(&i.record).unwrap_or_default(),
        ));
        println!("{line}");
        for w in &i.warnings {
            println!("  note: {w}");
        }
    }
}

fn reload(opts: &ReloadOptions, json_out: bool) -> Result<ExitCode> {
    if !opts.reload {
        return Ok(ExitCode::SUCCESS);
    }
    // Problems the reload lists are printed; what was installed is done either way.
    client::pack_reload(&PackReloadArgs {
        json: json_out,
        api: ApiOptions {
            url: opts.api.url.clone(),
            key: opts.api.key.clone(),
        },
    })?;
    Ok(ExitCode::SUCCESS)
}
