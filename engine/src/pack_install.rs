//! Installing packs by version: `squall pack install SOURCE[@REF]`, `remove`, `upgrade`, and
//! `POST /api/v1/packs/install`.
//!
//! A SOURCE is a git repository (any URL git accepts, a local path, a bare repository) or a
//! folder holding `pack.yaml`; REF a tag, branch or commit (st2's `SOURCE=VERSION` is read
//! the same, trying the tag `vVERSION` as st2 does). Every install goes the same way:
//!
//! 1. fetched into a staging folder (`<first packs dir>/.staging/<id>/`), `.git` removed;
//! 2. its `dependencies` (st2's form: a pack name or a repository, with `=VERSION` or a
//!    version requirement such as `>=1.2`) checked against the installed packs; a repository
//!    dependency that is missing, or not at a version that fits, is installed first;
//! 3. validated with the installed packs (this pack's old version left out): every problem in
//!    the new version is listed and nothing is activated, so the installed version stays;
//! 4. for a pack with Python actions or a `requirements.txt`, a virtualenv made in the staged
//!    pack (`.venv`) with its requirements installed;
//! 5. swapped in under the first packs directory in one rename (`RENAME_EXCHANGE` where the
//!    file system has it), with `.squall-install.json` recording source, ref, commit, version.
//!
//! One install at a time per packs directory (a lock file in the staging folder).

use std::collections::BTreeSet;
use std::fs::File;
use std::path::{Path, PathBuf};
use std::process::Command;

use serde::{Deserialize, Serialize};
use squall_actions::{RhaiRuntime, RunnerType};

use crate::packs::{load_packs_with_configs, PackMeta, Problem};

/// The file in an installed pack that says where it came from.
pub const RECORD_FILE: &str = ".squall-install.json";
/// The staging folder, inside the first packs directory (so the swap is one rename).
const STAGING: &str = ".staging";
/// The pack's own virtualenv, for its Python actions.
pub const VENV_DIR: &str = ".venv";

/// Where an installed pack came from.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct InstallRecord {
    /// The repository or folder, as git or the file system reads it (local paths absolute).
    pub source: String,
    /// The tag, branch or commit asked for (none: the repository's default branch, or a folder
    /// copied as it was).
    #[serde(rename = "ref")]
    pub reference: Option<String>,
    /// The commit installed, when the source is a git repository.
    pub commit: Option<String>,
    pub version: String,
    pub installed_at: String,
}

/// What install, remove and upgrade need to know.
#[derive(Clone)]
pub struct InstallOptions {
    /// The packs directories; packs are installed into the first.
    pub packs_dirs: Vec<PathBuf>,
    /// Where the deployment's pack configs live.
    pub configs_dir: PathBuf,
    /// The runners the deployment allows (`runners:`); `None` allows every runner.
    pub runners: Option<Vec<RunnerType>>,
    /// The Python that makes packs' virtualenvs (`python3` unless `SQUALL_PYTHON` says).
    pub python: String,
}

impl InstallOptions {
    /// Relative folders are made absolute (against the current directory) now.
    pub fn new(packs_dirs: Vec<PathBuf>, configs_dir: PathBuf) -> InstallOptions {
        let absolute = |p: PathBuf| std::path::absolute(&p).unwrap_or(p);
        InstallOptions {
            packs_dirs: packs_dirs.into_iter().map(absolute).collect(),
            configs_dir: absolute(configs_dir),
            runners: None,
            python: std::env::var("SQUALL_PYTHON").unwrap_or_else(|_| "python3".to_string()),
        }
    }

    fn target(&self) -> Result<&Path, InstallError> {
        self.packs_dirs
            .first()
            .map(PathBuf::as_path)
            .ok_or_else(|| InstallError::Failed("no packs directory is configured".into()))
    }
}

/// One pack installed (or found already there, for a dependency).
#[derive(Debug, Clone, Serialize)]
pub struct Installed {
    #[serde(rename = "ref")]
    pub name: String,
    pub version: String,
    /// The version it replaced.
    pub previous: Option<String>,
    pub dir: PathBuf,
    pub record: InstallRecord,
    /// Set when it was installed as a dependency of this pack.
    pub dependency_of: Option<String>,
    /// What does not stop the install but needs the operator (a config to write).
    pub warnings: Vec<String>,
}

#[derive(Debug, thiserror::Error)]
pub enum InstallError {
    /// The pack (or a dependency) was fetched but has problems: nothing was activated.
    #[error("{spec}: not installed, {} problems", problems.len())]
    Problems {
        spec: String,
        pack: String,
        problems: Vec<Problem>,
        /// Dependencies installed before the problems were found (they stay).
        installed: Vec<Installed>,
    },
    #[error("{0}")]
    Failed(String),
}

impl InstallError {
    fn failed(what: impl std::fmt::Display) -> InstallError {
        InstallError::Failed(what.to_string())
    }
}

/// A source with its ref, as given on the command line or in `dependencies`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Spec {
    pub source: String,
    pub reference: Option<String>,
}

impl std::fmt::Display for Spec {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match &self.reference {
            Some(r) => write!(f, "{}@{}", self.source, r),
            None => write!(f, "{}", self.source),
        }
    }
}

impl Spec {
    /// `SOURCE@REF` or st2's `SOURCE=VERSION`. An `@` is a ref only where it cannot be part of
    /// the source: not in `user@host:path` (what follows has a `:`), not the user of
    /// `ssh://user@host/...`.
    pub fn parse(text: &str) -> Spec {
        let text = text.trim();
        for sep in ['@', '='] {
            if let Some(at) = text.rfind(sep) {
                let (source, reference) = (&text[..at], &text[at + 1..]);
                let userinfo = source
                    .split_once("://")
                    .is_some_and(|(_, rest)| !rest.contains('/'));
                let ok = !source.is_empty()
                    && !reference.is_empty()
                    && !reference.contains(':')
                    && !(sep == '=' && (reference.contains('/') || source.contains('?')))
                    && !userinfo;
                if ok {
                    return Spec {
                        source: source.to_string(),
                        reference: Some(reference.to_string()),
                    };
                }
            }
        }
        Spec {
            source: text.to_string(),
            reference: None,
        }
    }
}

/// A pack already in one of the packs directories.
#[derive(Debug, Clone)]
pub struct InstalledPack {
    pub name: String,
    pub version: String,
    pub dir: PathBuf,
    pub meta: PackMeta,
    pub record: Option<InstallRecord>,
}

/// Reads an installed pack's record (none for a pack copied by hand).
pub fn read_record(pack_dir: &Path) -> Option<InstallRecord> {
    let text = std::fs::read_to_string(pack_dir.join(RECORD_FILE)).ok()?;
    serde_json::from_str(&text).ok()
}

fn read_meta(pack_dir: &Path) -> Result<PackMeta, String> {
    let file = pack_dir.join("pack.yaml");
    let text = std::fs::read_to_string(&file).map_err(|e| format!("{}: {e}", file.display()))?;
    serde_yaml::from_str(&text).map_err(|e| {
        let p = squall_rules::yaml_problem(&e);
        format!("{}:{}: {}", file.display(), p.line.unwrap_or(0), p.message)
    })
}

fn pack_name(meta: &PackMeta) -> String {
    meta.reference.clone().unwrap_or_else(|| meta.name.clone())
}

/// The packs in `dirs` (each a pack or a folder of packs), in order.
pub fn installed_packs(dirs: &[PathBuf]) -> Vec<InstalledPack> {
    let mut out = Vec::new();
    for dir in dirs {
        let mut found = Vec::new();
        if dir.join("pack.yaml").is_file() {
            found.push(dir.clone());
        } else if let Ok(entries) = std::fs::read_dir(dir) {
            found = entries
                .filter_map(|e| e.ok().map(|e| e.path()))
                .filter(|p| p.join("pack.yaml").is_file())
                .collect();
            found.sort();
        }
        for pack_dir in found {
            if let Ok(meta) = read_meta(&pack_dir) {
                out.push(InstalledPack {
                    name: pack_name(&meta),
                    version: meta.version.clone(),
                    record: read_record(&pack_dir),
                    dir: pack_dir,
                    meta,
                });
            }
        }
    }
    out
}

/// Installs each spec in turn (with its dependencies); stops at the first that fails.
pub fn install(
    specs: &[String],
    opts: &InstallOptions,
    runtime: &RhaiRuntime,
) -> Result<Vec<Installed>, InstallError> {
    let target = opts.target()?;
    std::fs::create_dir_all(target.join(STAGING)).map_err(|e| {
        InstallError::failed(format!(
            "cannot create {}: {e}",
            target.join(STAGING).display()
        ))
    })?;
    let _lock = lock(target)?;
    let mut done = Vec::new();
    for text in specs {
        let spec = Spec::parse(text);
        let mut installer = Installer {
            opts,
            runtime,
            visiting: Vec::new(),
            done: Vec::new(),
        };
        match installer.install(&spec, None) {
            Ok(()) => done.extend(installer.done),
            Err(InstallError::Problems {
                spec,
                pack,
                problems,
                mut installed,
            }) => {
                done.append(&mut installed);
                done.extend(installer.done);
                return Err(InstallError::Problems {
                    spec,
                    pack,
                    problems,
                    installed: done,
                });
            }
            Err(e) => return Err(e),
        }
    }
    Ok(done)
}

/// Installs another version of an installed pack from the source it was installed from: `REF`,
/// or the highest version tag of the repository, or (with no version tags) its default branch.
pub fn upgrade(
    name: &str,
    reference: Option<&str>,
    opts: &InstallOptions,
    runtime: &RhaiRuntime,
) -> Result<Vec<Installed>, InstallError> {
    let pack = installed_packs(&opts.packs_dirs)
        .into_iter()
        .find(|p| p.name == name)
        .ok_or_else(|| InstallError::failed(format!("pack '{name}' is not installed")))?;
    let record = pack.record.ok_or_else(|| {
        InstallError::failed(format!(
            "pack '{name}' ({}) was not installed by `squall pack install`, so where it came from is not known: install it from its source",
            pack.dir.display()
        ))
    })?;
    let reference = match reference {
        Some(r) => Some(r.to_string()),
        // Installed from git (a ref was asked for, or the source is no plain folder).
        None if record.reference.is_some() || is_git(&record.source) => newest_tag(&record.source)?
            .or_else(|| {
                // No version tags: the branch it follows, or the default branch.
                record.reference.clone().filter(|r| {
                    record
                        .commit
                        .as_deref()
                        .is_none_or(|c| !c.starts_with(r.as_str()))
                })
            }),
        None => None,
    };
    let spec = Spec {
        source: record.source,
        reference,
    };
    install(&[spec.to_string()], opts, runtime)
}

/// What `remove` did.
#[derive(Debug, Clone, Serialize)]
pub struct Removed {
    #[serde(rename = "ref")]
    pub name: String,
    pub version: String,
    pub dir: PathBuf,
}

/// Removes an installed pack; refused while another installed pack depends on it, unless
/// `force`.
pub fn remove(name: &str, opts: &InstallOptions, force: bool) -> Result<Removed, InstallError> {
    let packs = installed_packs(&opts.packs_dirs);
    let pack = packs
        .iter()
        .find(|p| p.name == name)
        .ok_or_else(|| InstallError::failed(format!("pack '{name}' is not installed")))?;
    let dependents: Vec<String> = packs
        .iter()
        .filter(|p| {
            p.meta
                .dependencies
                .iter()
                .any(|d| Dependency::parse(d).name == name)
        })
        .map(|p| p.name.clone())
        .collect();
    if !dependents.is_empty() && !force {
        return Err(InstallError::failed(format!(
            "pack '{name}' is needed by {}: remove them first, or give --force",
            dependents.join(", ")
        )));
    }
    let parent = pack
        .dir
        .parent()
        .ok_or_else(|| InstallError::failed("a pack cannot be a root folder"))?;
    std::fs::create_dir_all(parent.join(STAGING)).map_err(|e| {
        InstallError::failed(format!(
            "cannot create {}: {e}",
            parent.join(STAGING).display()
        ))
    })?;
    let _lock = lock(parent)?;
    // Moved out in one rename (the pack is there or not, never half), then deleted.
    let gone = parent
        .join(STAGING)
        .join(format!("removed-{}-{}", name, ulid::Ulid::new()));
    std::fs::rename(&pack.dir, &gone)
        .map_err(|e| InstallError::failed(format!("cannot remove {}: {e}", pack.dir.display())))?;
    sync_dir(parent);
    let _ = std::fs::remove_dir_all(&gone);
    Ok(Removed {
        name: name.to_string(),
        version: pack.version.clone(),
        dir: pack.dir.clone(),
    })
}

/// A `dependencies` entry of `pack.yaml`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Dependency {
    pub name: String,
    /// A repository or folder to install it from (st2's URL form).
    pub source: Option<String>,
    /// The version wanted: `=1.2.0` (st2's form), or a requirement such as `>=1.2, <2`.
    pub version: Option<String>,
}

impl Dependency {
    pub fn parse(text: &str) -> Dependency {
        let text = text.trim();
        let looks_like_source = text.contains("://")
            || text.starts_with('/')
            || text.starts_with('.')
            || text.starts_with("git@")
            || text.starts_with("file:");
        if looks_like_source {
            let spec = Spec::parse(text);
            return Dependency {
                name: repository_pack_name(&spec.source),
                source: Some(spec.source),
                version: spec.reference,
            };
        }
        match text.find(['=', '<', '>', '~', '^', '@']) {
            Some(at) => Dependency {
                name: text[..at].trim().to_string(),
                source: None,
                version: Some(text[at..].trim_start_matches('@').trim().to_string()),
            },
            None => Dependency {
                name: text.to_string(),
                source: None,
                version: None,
            },
        }
    }

    /// Whether `version` fits; a requirement that cannot be read fits only an equal string.
    pub fn fits(&self, version: &str) -> bool {
        let Some(wanted) = &self.version else {
            return true;
        };
        let Some(have) = loose_version(version) else {
            return wanted.trim_start_matches(['=', 'v']) == version;
        };
        let text = wanted.trim();
        let req = if text.starts_with(['=', '<', '>', '~', '^']) {
            text.to_string()
        } else {
            format!("={}", text.trim_start_matches('v'))
        };
        let req = req
            .split(',')
            .map(|part| {
                let part = part.trim();
                let op_end = part
                    .find(|c: char| c.is_ascii_digit())
                    .unwrap_or(part.len());
                let (op, v) = part.split_at(op_end);
                match loose_version(v) {
                    Some(v) => format!("{}{}", op.trim(), v),
                    None => part.to_string(),
                }
            })
            .collect::<Vec<_>>()
            .join(", ");
        semver::VersionReq::parse(&req).is_ok_and(|r| r.matches(&have))
    }
}

impl std::fmt::Display for Dependency {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}", self.name)?;
        if let Some(v) = &self.version {
            if v.starts_with(['=', '<', '>', '~', '^']) {
                write!(f, " {v}")?;
            } else {
                write!(f, " ={v}")?;
            }
        }
        Ok(())
    }
}

/// A pack version as semver: `1.2` is `1.2.0`, a leading `v` is dropped.
fn loose_version(text: &str) -> Option<semver::Version> {
    let text = text.trim().trim_start_matches('v');
    if let Ok(v) = semver::Version::parse(text) {
        return Some(v);
    }
    let (core, rest) = match text.find(['-', '+']) {
        Some(at) => text.split_at(at),
        None => (text, ""),
    };
    let mut parts: Vec<&str> = core.split('.').collect();
    if parts.is_empty() || parts.len() > 3 || parts.iter().any(|p| p.parse::<u64>().is_err()) {
        return None;
    }
    while parts.len() < 3 {
        parts.push("0");
    }
    semver::Version::parse(&format!("{}{rest}", parts.join("."))).ok()
}

/// The pack a repository holds by st2's naming: its last path part without `.git` and without
/// the `stackstorm-` prefix of the Exchange's repositories.
fn repository_pack_name(source: &str) -> String {
    let last = source
        .trim_end_matches('/')
        .rsplit(['/', ':'])
        .next()
        .unwrap_or(source);
    let last = last.strip_suffix(".git").unwrap_or(last);
    last.strip_prefix("stackstorm-").unwrap_or(last).to_string()
}

struct Installer<'a> {
    opts: &'a InstallOptions,
    runtime: &'a RhaiRuntime,
    /// Packs being installed up the dependency chain (a cycle ends there).
    visiting: Vec<String>,
    done: Vec<Installed>,
}

/// Removes a staging folder however the install ends.
struct Staged(PathBuf);

impl Drop for Staged {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

impl Installer<'_> {
    fn install(&mut self, spec: &Spec, dependency_of: Option<&str>) -> Result<(), InstallError> {
        let target = self.opts.target()?.to_path_buf();
        let stage = Staged(target.join(STAGING).join(ulid::Ulid::new().to_string()));
        std::fs::create_dir_all(&stage.0).map_err(|e| {
            InstallError::failed(format!("cannot create {}: {e}", stage.0.display()))
        })?;
        let fetched = fetch(spec, &stage.0.join("fetch"))?;
        let meta = read_meta(&fetched.dir).map_err(|e| {
            InstallError::failed(format!(
                "{spec}: {}",
                e.replace(&format!("{}/", fetched.dir.display()), "")
            ))
        })?;
        let name = pack_name(&meta);
        if !valid_pack_name(&name) {
            return Err(InstallError::failed(format!(
                "{spec}: pack.yaml names the pack '{name}': a pack's ref is lowercase letters, digits and underscores"
            )));
        }
        if self.visiting.contains(&name) {
            return Ok(());
        }
        let staged = stage.0.join(&name);
        std::fs::rename(&fetched.dir, &staged)
            .map_err(|e| InstallError::failed(format!("cannot stage {name}: {e}")))?;
        let installed = installed_packs(&self.opts.packs_dirs);
        let previous = installed.iter().find(|p| p.name == name);
        let final_dir = target.join(&name);
        if let Some(p) = previous {
            if p.dir != final_dir {
                return Err(InstallError::failed(format!(
                    "pack '{name}' is already at {}, outside {}: remove it there first (`squall pack remove {name}`)",
                    p.dir.display(),
                    target.display()
                )));
            }
        }
        let problem_at = |message: String| {
            let text = std::fs::read_to_string(staged.join("pack.yaml")).unwrap_or_default();
            Problem {
                file: PathBuf::from(&name).join("pack.yaml"),
                line: squall_rules::line_of(&text, "dependencies"),
                column: None,
                message,
            }
        };

        // Dependencies first: an install of this pack needs them in place to validate.
        self.visiting.push(name.clone());
        let mut problems = Vec::new();
        for text in &meta.dependencies {
            let dep = Dependency::parse(text);
            let have = installed_packs(&self.opts.packs_dirs)
                .into_iter()
                .find(|p| p.name == dep.name);
            if have.as_ref().is_some_and(|p| dep.fits(&p.version)) {
                continue;
            }
            let Some(source) = &dep.source else {
                problems.push(problem_at(match &have {
                    Some(p) => format!(
                        "depends on pack {dep}, which is installed at {}: install a version that fits first",
                        p.version
                    ),
                    None => format!(
                        "depends on pack {dep}, which is not installed: install it first (`squall pack install SOURCE`)"
                    ),
                }));
                continue;
            };
            let dep_spec = Spec {
                source: source.clone(),
                reference: dep
                    .version
                    .clone()
                    .map(|v| v.trim_start_matches('=').to_string()),
            };
            match self.install(&dep_spec, Some(&name)) {
                Ok(()) => {
                    let now = installed_packs(&self.opts.packs_dirs)
                        .into_iter()
                        .find(|p| p.name == dep.name);
                    match now {
                        Some(p) if dep.fits(&p.version) => {}
                        Some(p) => problems.push(problem_at(format!(
                            "depends on pack {dep}; {dep_spec} holds version {}",
                            p.version
                        ))),
                        None => problems.push(problem_at(format!(
                            "depends on pack {dep}; {dep_spec} holds no pack of that name"
                        ))),
                    }
                }
                Err(InstallError::Problems {
                    spec: s,
                    problems: ps,
                    ..
                }) => {
                    problems.push(problem_at(format!(
                        "depends on pack {dep}, whose install from {s} failed:"
                    )));
                    problems.extend(ps);
                }
                Err(InstallError::Failed(why)) => problems.push(problem_at(format!(
                    "depends on pack {dep}, which could not be installed: {why}"
                ))),
            }
        }
        self.visiting.pop();
        if problems.is_empty() {
            problems = self.validate(&name, &staged);
        }
        if problems.is_empty() && needs_python(&staged) {
            if let Err(why) = make_venv(&self.opts.python, &staged) {
                problems.push(Problem {
                    file: PathBuf::from(&name).join("requirements.txt"),
                    line: None,
                    column: None,
                    message: why,
                });
            }
        }
        if !problems.is_empty() {
            return Err(InstallError::Problems {
                spec: spec.to_string(),
                pack: name,
                problems,
                installed: std::mem::take(&mut self.done),
            });
        }

        let record = InstallRecord {
            source: fetched.source,
            reference: spec.reference.clone(),
            commit: fetched.commit,
            version: meta.version.clone(),
            installed_at: chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Secs, true),
        };
        let text = serde_json::to_string_pretty(&record).unwrap_or_default();
        std::fs::write(staged.join(RECORD_FILE), text + "\n")
            .map_err(|e| InstallError::failed(format!("cannot write the install record: {e}")))?;
        swap_in(&staged, &final_dir).map_err(|e| {
            InstallError::failed(format!("cannot move {name} into {}: {e}", target.display()))
        })?;
        let warnings = self.config_warnings(&name);
        self.done.push(Installed {
            name,
            version: meta.version,
            previous: previous.map(|p| p.version.clone()),
            dir: final_dir,
            record,
            dependency_of: dependency_of.map(str::to_string),
            warnings,
        });
        Ok(())
    }

    /// The staged pack loaded with every installed pack but its own old version: its problems,
    /// with paths as `<pack>/<file>`.
    fn validate(&self, name: &str, staged: &Path) -> Vec<Problem> {
        let mut dirs: Vec<PathBuf> = installed_packs(&self.opts.packs_dirs)
            .into_iter()
            .filter(|p| p.name != name)
            .map(|p| p.dir)
            .collect();
        dirs.push(staged.to_path_buf());
        let catalog = load_packs_with_configs(&dirs, &self.opts.configs_dir, self.runtime);
        let mut problems: Vec<Problem> = catalog
            .problems
            .into_iter()
            .filter_map(|mut p| {
                let rel = p.file.strip_prefix(staged).ok()?.to_path_buf();
                p.file = PathBuf::from(name).join(rel);
                p.message = p
                    .message
                    .replace(&staged.to_string_lossy().into_owned(), name);
                Some(p)
            })
            .collect();
        if let (Some(allowed), Some(pack)) = (
            &self.opts.runners,
            catalog.packs.iter().find(|p| p.reference == name),
        ) {
            for a in &pack.actions {
                if !allowed.contains(&a.meta.runner_type) {
                    let rel = a.file.strip_prefix(staged).unwrap_or(&a.file);
                    let text = std::fs::read_to_string(&a.file).unwrap_or_default();
                    problems.push(Problem {
                        file: PathBuf::from(name).join(rel),
                        line: squall_rules::line_of(&text, "runner_type"),
                        column: None,
                        message: crate::runners_allowed::refusal(&a.meta.runner_type, allowed),
                    });
                }
            }
        }
        problems
    }

    /// The deployment's config problems for a pack just installed: they do not stop it (the
    /// config can be written after), but the operator hears of them.
    fn config_warnings(&self, name: &str) -> Vec<String> {
        let config_file = self.opts.configs_dir.join(format!("{name}.yaml"));
        let catalog = load_packs_with_configs(
            &[self.opts.target().map(|t| t.join(name)).unwrap_or_default()],
            &self.opts.configs_dir,
            self.runtime,
        );
        catalog
            .problems
            .iter()
            .filter(|p| {
                p.file == config_file || p.file == config_file.with_extension("yaml (missing)")
            })
            .map(ToString::to_string)
            .collect()
    }
}

fn valid_pack_name(name: &str) -> bool {
    !name.is_empty()
        && name
            .chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_' || c == '-')
}

struct Fetched {
    /// The pack's root in the staging folder.
    dir: PathBuf,
    /// The source as recorded (local paths made absolute).
    source: String,
    commit: Option<String>,
}

/// Whether `source` is read with git (anything but a folder holding `pack.yaml`).
fn is_git(source: &str) -> bool {
    !Path::new(source).join("pack.yaml").is_file()
}

fn fetch(spec: &Spec, dest: &Path) -> Result<Fetched, InstallError> {
    let local = Path::new(&spec.source);
    let source = if local.exists() {
        std::fs::canonicalize(local)
            .map(|p| p.to_string_lossy().into_owned())
            .unwrap_or_else(|_| spec.source.clone())
    } else {
        spec.source.clone()
    };
    if spec.reference.is_none() && local.join("pack.yaml").is_file() {
        // A folder as it is: copied (its commit noted when it is a git work tree).
        copy_tree(local, dest)
            .map_err(|e| InstallError::failed(format!("cannot copy {}: {e}", local.display())))?;
        let commit = git(local, &["rev-parse", "HEAD"]).ok();
        return Ok(Fetched {
            dir: dest.to_path_buf(),
            source,
            commit,
        });
    }
    let parent = dest.parent().unwrap_or(dest);
    let dest_text = dest.to_string_lossy().into_owned();
    git(parent, &["clone", "--quiet", "--", &source, &dest_text])
        .map_err(|e| InstallError::failed(format!("{spec}: cannot fetch: {e}")))?;
    if let Some(reference) = &spec.reference {
        let mut candidates = vec![reference.clone(), format!("origin/{reference}")];
        if reference.starts_with(|c: char| c.is_ascii_digit()) {
            // st2's `pack=1.2.0` installs the tag v1.2.0.
            candidates.push(format!("v{reference}"));
        }
        let commit =
            candidates
                .iter()
                .find_map(|c| {
                    git(
                        dest,
                        &[
                            "rev-parse",
                            "--verify",
                            "--quiet",
                            &format!("{c}^{{commit}}"),
                        ],
                    )
                    .ok()
                })
                .ok_or_else(|| {
                    let tags = git(dest, &["tag", "--list"]).unwrap_or_default();
                    let tags: Vec<&str> = tags.lines().collect();
                    InstallError::failed(format!(
                    "{spec}: '{reference}' is not a tag, branch or commit of {source} (tags: {})",
                    if tags.is_empty() { "none".to_string() } else { tags.join(", ") }
                ))
                })?;
        git(
            dest,
            &[
                "-c",
                "advice.detachedHead=false",
                "checkout",
                "--quiet",
                "--detach",
                &commit,
            ],
        )
        .map_err(|e| InstallError::failed(format!("{spec}: cannot check out {reference}: {e}")))?;
    }
    let commit = git(dest, &["rev-parse", "HEAD"]).ok();
    let _ = std::fs::remove_dir_all(dest.join(".git"));
    if !dest.join("pack.yaml").is_file() {
        return Err(InstallError::failed(format!(
            "{spec}: no pack.yaml at the root of the repository"
        )));
    }
    Ok(Fetched {
        dir: dest.to_path_buf(),
        source,
        commit,
    })
}

/// Runs git in `dir`; its trimmed output, or what it said on failure. Never prompts.
fn git(dir: &Path, args: &[&str]) -> Result<String, String> {
    let out = Command::new("git")
        .args(args)
        .current_dir(dir)
        .env("GIT_TERMINAL_PROMPT", "0")
        .stdin(std::process::Stdio::null())
        .output()
        .map_err(|e| format!("cannot run git: {e}"))?;
    if out.status.success() {
        Ok(String::from_utf8_lossy(&out.stdout).trim().to_string())
    } else {
        let err = String::from_utf8_lossy(&out.stderr);
        Err(err
            .trim()
            .lines()
            .last()
            .unwrap_or("git failed")
            .to_string())
    }
}

/// The highest version tag of a repository (`v1.2.0` or `1.2.0`), if it has any.
fn newest_tag(source: &str) -> Result<Option<String>, InstallError> {
    let here = std::env::current_dir().unwrap_or_else(|_| PathBuf::from("/"));
    let out = git(&here, &["ls-remote", "--tags", "--refs", "--", source])
        .map_err(|e| InstallError::failed(format!("{source}: cannot list its tags: {e}")))?;
    Ok(out
        .lines()
        .filter_map(|l| l.split('\t').nth(1)?.strip_prefix("refs/tags/"))
        .filter_map(|t| Some((loose_version(t)?, t.to_string())))
        .filter(|(v, _)| v.pre.is_empty())
        .max_by(|a, b| a.0.cmp(&b.0))
        .map(|(_, t)| t))
}

/// Copies a folder, leaving out `.git`, a virtualenv and an install record.
fn copy_tree(from: &Path, to: &Path) -> std::io::Result<()> {
    std::fs::create_dir_all(to)?;
    for entry in std::fs::read_dir(from)? {
        let entry = entry?;
        let name = entry.file_name();
        if name == ".git" || name == VENV_DIR || name == RECORD_FILE || name == STAGING {
            continue;
        }
        let kind = entry.file_type()?;
        let dest = to.join(&name);
        if kind.is_dir() {
            copy_tree(&entry.path(), &dest)?;
        } else if kind.is_symlink() {
            std::os::unix::fs::symlink(std::fs::read_link(entry.path())?, &dest)?;
        } else {
            std::fs::copy(entry.path(), &dest)?;
        }
    }
    Ok(())
}

/// Whether the pack needs a virtualenv: Python actions or a `requirements.txt`.
fn needs_python(pack: &Path) -> bool {
    if pack.join("requirements.txt").is_file() {
        return true;
    }
    let Ok(entries) = std::fs::read_dir(pack.join("actions")) else {
        return false;
    };
    entries.filter_map(Result::ok).any(|e| {
        let p = e.path();
        matches!(p.extension().and_then(|x| x.to_str()), Some("yaml" | "yml"))
            && std::fs::read_to_string(&p).is_ok_and(|t| {
                t.lines().any(|l| {
                    l.trim_start().starts_with("runner_type") && l.contains("python-script")
                })
            })
    })
}

/// Makes `<pack>/.venv` and installs `requirements.txt` into it.
fn make_venv(python: &str, pack: &Path) -> Result<(), String> {
    let venv = pack.join(VENV_DIR);
    let run = |cmd: &mut Command, what: &str| -> Result<(), String> {
        let out = cmd
            .current_dir(pack)
            .stdin(std::process::Stdio::null())
            .output()
            .map_err(|e| format!("{what}: cannot run: {e}"))?;
        if out.status.success() {
            return Ok(());
        }
        let err = String::from_utf8_lossy(&out.stderr);
        let tail: Vec<&str> = err.trim().lines().rev().take(6).collect();
        let tail: Vec<&str> = tail.into_iter().rev().collect();
        Err(format!("{what} failed: {}", tail.join(" | ")))
    };
    run(
        Command::new(python).arg("-m").arg("venv").arg(&venv),
        &format!("{python} -m venv"),
    )?;
    if pack.join("requirements.txt").is_file() {
        run(
            Command::new(venv.join("bin").join("python")).args([
                "-m",
                "pip",
                "install",
                "--quiet",
                "--disable-pip-version-check",
                "--no-input",
                "-r",
                "requirements.txt",
            ]),
            "pip install -r requirements.txt",
        )?;
    }
    Ok(())
}

/// Puts the staged pack where the installed one is, in one step: the two folders exchanged
/// (then the old one deleted), or a plain rename where there was none.
fn swap_in(staged: &Path, final_dir: &Path) -> std::io::Result<()> {
    let parent = final_dir.parent().unwrap_or(Path::new("."));
    if final_dir.exists() {
        let exchanged = rustix::fs::renameat_with(
            rustix::fs::CWD,
            staged,
            rustix::fs::CWD,
            final_dir,
            rustix::fs::RenameFlags::EXCHANGE,
        );
        if exchanged.is_err() {
            // A file system without RENAME_EXCHANGE: the old one out, then the new one in.
            let old = staged.with_extension("old");
            std::fs::rename(final_dir, &old)?;
            std::fs::rename(staged, final_dir)?;
            sync_dir(parent);
            let _ = std::fs::remove_dir_all(&old);
            return Ok(());
        }
        sync_dir(parent);
        // `staged` now holds the old version.
        let _ = std::fs::remove_dir_all(staged);
        return Ok(());
    }
    std::fs::rename(staged, final_dir)?;
    sync_dir(parent);
    Ok(())
}

fn sync_dir(dir: &Path) {
    if let Ok(d) = File::open(dir) {
        let _ = d.sync_all();
    }
}

/// Held while installing or removing in a packs directory.
fn lock(target: &Path) -> Result<File, InstallError> {
    let path = target.join(STAGING).join(".lock");
    let file = std::fs::OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .open(&path)
        .map_err(|e| InstallError::failed(format!("cannot open {}: {e}", path.display())))?;
    rustix::fs::flock(&file, rustix::fs::FlockOperation::LockExclusive)
        .map_err(|e| InstallError::failed(format!("cannot lock {}: {e}", path.display())))?;
    Ok(file)
}

/// Pack names in `dependencies` of the installed packs that are not installed (for listings).
pub fn missing_dependencies(packs: &[InstalledPack]) -> BTreeSet<String> {
    packs
        .iter()
        .flat_map(|p| p.meta.dependencies.iter().map(|d| Dependency::parse(d)))
        .filter(|d| !packs.iter().any(|p| p.name == d.name && d.fits(&p.version)))
        .map(|d| d.to_string())
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn specs() {
        let s = Spec::parse("https://github.com/org/repo.git@v1.2.0");
        assert_eq!(s.source, "https://github.com/org/repo.git");
        assert_eq!(s.reference.as_deref(), Some("v1.2.0"));
        let s = Spec::parse("git@github.com:org/repo.git");
        assert_eq!(s.source, "git@github.com:org/repo.git");
        assert_eq!(s.reference, None);
        let s = Spec::parse("git@github.com:org/repo.git@main");
        assert_eq!(s.source, "git@github.com:org/repo.git");
        assert_eq!(s.reference.as_deref(), Some("main"));
        let s = Spec::parse("ssh://git@host/repo.git");
        assert_eq!(s.reference, None);
        let s = Spec::parse("ssh://git@host/repo.git@feature/x");
        assert_eq!(s.source, "ssh://git@host/repo.git");
        assert_eq!(s.reference.as_deref(), Some("feature/x"));
        // st2's form.
        let s = Spec::parse("https://github.com/StackStorm-Exchange/stackstorm-aws.git=1.2.0");
        assert_eq!(
            s.source,
            "https://github.com/StackStorm-Exchange/stackstorm-aws.git"
        );
        assert_eq!(s.reference.as_deref(), Some("1.2.0"));
        let s = Spec::parse("/srv/packs/mypack");
        assert_eq!(s.reference, None);
        let s = Spec::parse("./repos/mypack@abc1234");
        assert_eq!(s.source, "./repos/mypack");
    }

    #[test]
    fn dependencies() {
        let d = Dependency::parse("core");
        assert_eq!((d.name.as_str(), d.version.as_deref()), ("core", None));
        assert!(d.fits("3.8.0"));
        let d = Dependency::parse("linux=1.0.0");
        assert_eq!(
            (d.name.as_str(), d.version.as_deref()),
            ("linux", Some("=1.0.0"))
        );
        assert!(d.fits("1.0.0"));
        assert!(!d.fits("1.1.0"));
        let d = Dependency::parse("https://github.com/StackStorm-Exchange/stackstorm-aws.git=1.2");
        assert_eq!(d.name, "aws");
        assert_eq!(
            d.source.as_deref(),
            Some("https://github.com/StackStorm-Exchange/stackstorm-aws.git")
        );
        assert!(d.fits("1.2.0"));
        assert!(!d.fits("1.3.0"));
        let d = Dependency::parse("base>=1.2, <2");
        assert!(d.fits("1.4.1"));
        assert!(!d.fits("2.0.0"));
        assert!(!d.fits("1.1"));
        let d = Dependency::parse("/srv/repos/base@v1.1.0");
        assert_eq!(d.name, "base");
        assert!(d.fits("1.1.0"));
        assert!(!d.fits("1.0.0"));
    }

    #[test]
    fn versions() {
        assert_eq!(
            loose_version("1.2").map(|v| v.to_string()).as_deref(),
            Some("1.2.0")
        );
        assert_eq!(
            loose_version("v2").map(|v| v.to_string()).as_deref(),
            Some("2.0.0")
        );
        assert!(loose_version("latest").is_none());
        assert_eq!(
            repository_pack_name("git@github.com:org/stackstorm-jira.git"),
            "jira"
        );
        assert_eq!(repository_pack_name("/srv/repos/base/"), "base");
    }
}
