//! Docker containers' CPU and memory use, read straight from their cgroups: the numbers
//! `docker stats` shows, without opening one slow stats stream per container. Handles cgroup v1
//! (controllers mounted one per folder, or `cpu,cpuacct` co-mounted) and v2 (one unified tree),
//! with Docker's cgroupfs driver (`docker/<id>`) and systemd driver
//! (`system.slice/docker-<id>.scope`), and a container's own `--cgroup-parent`.
//!
//! Reads are plain synchronous `std::fs` calls, a handful of small files per container: the
//! caller runs them on a blocking thread, never on the async runtime. This file must never
//! write to a cgroup, never talk to the Docker daemon (the caller knows the container ids and
//! cgroup parents) and never guess a number it could not read: a missing or garbled file is an
//! error naming that file, not a zero.

use std::fmt::Write as _;
use std::io::Read as _;
use std::path::{Component, Path, PathBuf};
use std::time::Duration;

/// Which cgroup hierarchy the host mounts.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
pub enum CgroupVersion {
    V1,
    V2,
}

/// Why a container's (or the host's) figures could not be read.
#[derive(Debug, thiserror::Error)]
pub enum CgroupError {
    #[error(
        "container {container} has no cgroup here; tried {}",
        list_paths(tried)
    )]
    NotFound {
        container: String,
        /// Every folder looked for, in the order tried.
        tried: Vec<PathBuf>,
    },
    #[error("{}: {source}", path.display())]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{}: cannot read a number from {text:?}", path.display())]
    Parse {
        path: PathBuf,
        /// The offending text (one line of it for multi-line files).
        text: String,
    },
    #[error("{}: no `{field}` line", path.display())]
    MissingField { path: PathBuf, field: &'static str },
    #[error(
        "{} is not a cgroup mount: it has neither cgroup.controllers (v2) nor cpu, cpuacct and memory controller folders (v1)",
        root.display()
    )]
    NoCgroupFs { root: PathBuf },
    #[error("{} is a cgroup v1 mount without the {controller} controller", root.display())]
    MissingController {
        root: PathBuf,
        controller: &'static str,
    },
    #[error("{id:?} is not a full container id (64 hexadecimal digits)")]
    InvalidContainerId { id: String },
    #[error("cgroup parent {parent:?} climbs out of the cgroup tree")]
    InvalidCgroupParent { parent: String },
}

fn list_paths(paths: &[PathBuf]) -> String {
    let mut out = String::new();
    for (n, path) in paths.iter().enumerate() {
        if n > 0 {
            out.push_str(", ");
        }
        let _ = write!(out, "{}", path.display());
    }
    out
}

/// One reading of one container's cgroup.
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct CgroupSample {
    /// Total CPU time used since the container started, in nanoseconds (v1 cpuacct.usage; v2
    /// cpu.stat usage_usec * 1000).
    pub cpu_usage_ns: u64,
    /// The CPU limit in cores (v1 cpu.cfs_quota_us / cpu.cfs_period_us, -1 = none; v2 cpu.max
    /// "max 100000" = none, "50000 100000" = 0.5). None = unlimited.
    pub cpu_limit_cores: Option<f64>,
    /// Memory in use, as docker stats counts it: usage minus the inactive file cache (v1:
    /// memory.usage_in_bytes - total_inactive_file from memory.stat; v2: memory.current -
    /// inactive_file from memory.stat), never below 0.
    pub memory_bytes: u64,
    /// The memory limit (v1 memory.limit_in_bytes, where a huge value like
    /// 9223372036854771712 means none; v2 memory.max, where "max" means none). None = unlimited.
    pub memory_limit_bytes: Option<u64>,
}

/// v1 memory limits at or above this mean "no limit". The kernel shows no limit as LONG_MAX
/// rounded down to its page size (9223372036854771712 with 4 KiB pages, 9223372036854710272
/// with 64 KiB pages) and kernels before 3.x showed u64::MAX; no machine has 4 EiB of memory,
/// so anything this large cannot be a limit someone set.
const V1_NO_MEMORY_LIMIT: u64 = 1 << 62;

/// Where each v1 controller is mounted under the root. Distributions co-mount cpu and cpuacct
/// as `cpu,cpuacct` (some spell it `cpuacct,cpu`) and add `cpu` and `cpuacct` symlinks; others
/// mount them apart. Plain names come first so a symlink or a lone mount wins.
const V1_CPU_DIRS: [&str; 3] = ["cpu", "cpu,cpuacct", "cpuacct,cpu"];
const V1_CPUACCT_DIRS: [&str; 3] = ["cpuacct", "cpu,cpuacct", "cpuacct,cpu"];
const V1_MEMORY_DIRS: [&str; 1] = ["memory"];

/// Where the controllers are, decided once by [`CgroupReader::detect`].
#[derive(Debug, Clone)]
enum Layout {
    V1 {
        cpu: PathBuf,
        cpuacct: PathBuf,
        memory: PathBuf,
    },
    V2,
}

/// Reads containers' cgroups under one cgroup mount root.
#[derive(Debug, Clone)]
pub struct CgroupReader {
    root: PathBuf,
    layout: Layout,
}

impl CgroupReader {
    /// Looks at a cgroup mount root (normally /sys/fs/cgroup; tests pass a fixture folder): v2
    /// when `cgroup.controllers` is at the root, else v1 (controllers in subfolders `cpu,cpuacct`
    /// or `cpuacct` and `cpu`, and `memory`).
    ///
    /// A hybrid host (v1 controllers plus a v2 tree at `unified/`) is v1: Docker puts containers
    /// in the v1 controllers there, and the root has no `cgroup.controllers`.
    pub fn detect(root: &Path) -> Result<CgroupReader, CgroupError> {
        if root.join("cgroup.controllers").is_file() {
            return Ok(CgroupReader {
                root: root.to_path_buf(),
                layout: Layout::V2,
            });
        }
        let find = |names: &[&str]| {
            names
                .iter()
                .map(|name| root.join(name))
                .find(|path| path.is_dir())
        };
        let (cpu, cpuacct, memory) = (
            find(&V1_CPU_DIRS),
            find(&V1_CPUACCT_DIRS),
            find(&V1_MEMORY_DIRS),
        );
        match (cpu, cpuacct, memory) {
            (Some(cpu), Some(cpuacct), Some(memory)) => Ok(CgroupReader {
                root: root.to_path_buf(),
                layout: Layout::V1 {
                    cpu,
                    cpuacct,
                    memory,
                },
            }),
            (None, None, None) => Err(CgroupError::NoCgroupFs {
                root: root.to_path_buf(),
            }),
            (cpu, cpuacct, _) => Err(CgroupError::MissingController {
                root: root.to_path_buf(),
                controller: if cpu.is_none() {
                    "cpu"
                } else if cpuacct.is_none() {
                    "cpuacct"
                } else {
                    "memory"
                },
            }),
        }
    }

    pub fn version(&self) -> CgroupVersion {
        match self.layout {
            Layout::V1 { .. } => CgroupVersion::V1,
            Layout::V2 => CgroupVersion::V2,
        }
    }

    /// The mount root this reader was detected on.
    pub fn root(&self) -> &Path {
        &self.root
    }

    /// Reads container `id`'s (the full 64-hex id) cgroup. `cgroup_parent`: Docker's
    /// HostConfig.CgroupParent when set (else the driver defaults). Tries, in order, the
    /// cgroupfs layout (`<controller>/docker/<id>`, v2 `<root>/docker/<id>`, or
    /// `<cgroup_parent>/<id>`) and the systemd layout (`<controller>/system.slice/docker-<id>.scope`,
    /// v2 `<root>/system.slice/docker-<id>.scope`, or `<cgroup_parent>/docker-<id>.scope`, a
    /// parent slice such as `my-app.slice` expanded as systemd nests it, to
    /// `my.slice/my-app.slice`); NotFound lists what was tried.
    pub fn sample(
        &self,
        id: &str,
        cgroup_parent: Option<&str>,
    ) -> Result<CgroupSample, CgroupError> {
        let candidates = candidate_dirs(id, cgroup_parent)?;
        let mut files = FileReader::default();
        let mut tried = Vec::with_capacity(candidates.len());
        // Reading straight away rather than looking for the folder first saves a syscall per
        // container on the common layout. A file that is not there means "not this layout" only
        // when its container's folder is not there either; otherwise the file itself is missing.
        // That is also how a container removed halfway through a sample ends up NotFound.
        for relative in &candidates {
            let read = match &self.layout {
                Layout::V1 {
                    cpu,
                    cpuacct,
                    memory,
                } => read_v1(
                    &mut files,
                    &cpu.join(relative),
                    &cpuacct.join(relative),
                    &memory.join(relative),
                ),
                Layout::V2 => read_v2(&mut files, &self.root.join(relative)),
            };
            if let Err(CgroupError::Read { source, .. }) = &read {
                let anchor = self.anchor(relative);
                if source.kind() == std::io::ErrorKind::NotFound && !anchor.is_dir() {
                    tried.push(anchor);
                    continue;
                }
            }
            return read;
        }
        Err(CgroupError::NotFound {
            container: id.to_string(),
            tried,
        })
    }

    /// The folder whose presence says a container's cgroup is at `relative`: on v1 its cpuacct
    /// folder (Docker creates all controllers' folders together), on v2 its one folder.
    fn anchor(&self, relative: &Path) -> PathBuf {
        match &self.layout {
            Layout::V1 { cpuacct, .. } => cpuacct.join(relative),
            Layout::V2 => self.root.join(relative),
        }
    }
}

/// One v1 container's sample, from its folders in the cpu, cpuacct and memory controllers.
fn read_v1(
    files: &mut FileReader,
    cpu: &Path,
    cpuacct: &Path,
    memory: &Path,
) -> Result<CgroupSample, CgroupError> {
    let cpu_usage_ns = files.read_u64(&cpuacct.join("cpuacct.usage"))?;

    let quota_path = cpu.join("cpu.cfs_quota_us");
    let quota = parse_number::<i64>(&quota_path, files.read(&quota_path)?)?;
    let period = files.read_u64(&cpu.join("cpu.cfs_period_us"))?;
    // The kernel writes -1 for "no quota" and refuses a period of 0; a negative or
    // zero here means no limit rather than a division by zero.
    let cpu_limit_cores = match u64::try_from(quota) {
        Ok(quota) if quota > 0 && period > 0 => Some(quota as f64 / period as f64),
        _ => None,
    };

    let usage = files.read_u64(&memory.join("memory.usage_in_bytes"))?;
    let limit = files.read_u64(&memory.join("memory.limit_in_bytes"))?;
    let stat_path = memory.join("memory.stat");
    let stat = files.read(&stat_path)?;
    // total_inactive_file counts the whole subtree, which is what usage_in_bytes
    // counts too; plain inactive_file is the cgroup alone. Docker prefers the total.
    let inactive = match stat_field(&stat_path, stat, "total_inactive_file")? {
        Some(n) => n,
        None => stat_field(&stat_path, stat, "inactive_file")?.ok_or_else(|| {
            CgroupError::MissingField {
                path: stat_path.clone(),
                field: "total_inactive_file",
            }
        })?,
    };

    Ok(CgroupSample {
        cpu_usage_ns,
        cpu_limit_cores,
        memory_bytes: usage.saturating_sub(inactive),
        memory_limit_bytes: (limit < V1_NO_MEMORY_LIMIT).then_some(limit),
    })
}

/// One v2 container's sample, from its one folder.
fn read_v2(files: &mut FileReader, dir: &Path) -> Result<CgroupSample, CgroupError> {
    let stat_path = dir.join("cpu.stat");
    let usage_usec = required_field(&stat_path, files.read(&stat_path)?, "usage_usec")?;

    let max_path = dir.join("cpu.max");
    let cpu_limit_cores = parse_cpu_max(&max_path, files.read(&max_path)?)?;

    let current = files.read_u64(&dir.join("memory.current"))?;
    let max_path = dir.join("memory.max");
    let memory_limit_bytes = match files.read(&max_path)?.trim() {
        "max" => None,
        text => Some(parse_number::<u64>(&max_path, text)?),
    };
    let stat_path = dir.join("memory.stat");
    let inactive = required_field(&stat_path, files.read(&stat_path)?, "inactive_file")?;

    Ok(CgroupSample {
        cpu_usage_ns: usage_usec.saturating_mul(1000),
        cpu_limit_cores,
        memory_bytes: current.saturating_sub(inactive),
        memory_limit_bytes,
    })
}

/// The folders, relative to a controller's root, where Docker puts container `id`'s cgroup:
/// the cgroupfs driver's first, then the systemd driver's.
fn candidate_dirs(id: &str, cgroup_parent: Option<&str>) -> Result<Vec<PathBuf>, CgroupError> {
    if id.len() != 64 || !id.bytes().all(|b| b.is_ascii_hexdigit()) {
        return Err(CgroupError::InvalidContainerId { id: id.to_string() });
    }
    // Docker treats an empty CgroupParent as unset.
    let parent = cgroup_parent.filter(|p| !p.is_empty());
    let Some(parent) = parent else {
        return Ok(vec![
            PathBuf::from("docker").join(id),
            PathBuf::from("system.slice").join(format!("docker-{id}.scope")),
        ]);
    };
    // The cgroupfs driver takes the parent as a path from the hierarchy's root ("/my/group" or
    // "my/group"; runc resolves a relative one against its own cgroup, which is the root for a
    // daemon started by init). It must stay inside the tree we were given.
    let relative = Path::new(parent.trim_start_matches('/'));
    if relative
        .components()
        .any(|c| !matches!(c, Component::Normal(_) | Component::CurDir))
    {
        return Err(CgroupError::InvalidCgroupParent {
            parent: parent.to_string(),
        });
    }
    // The systemd driver takes the parent as a slice name and nests it the way systemd does:
    // `my-app.slice` lives in `my.slice/my-app.slice`.
    let slice = expand_slice(parent).unwrap_or_else(|| relative.to_path_buf());
    Ok(vec![
        relative.join(id),
        slice.join(format!("docker-{id}.scope")),
    ])
}

/// systemd's slice nesting (runc's `ExpandSlice`): `a-b-c.slice` is
/// `a.slice/a-b.slice/a-b-c.slice`, `-.slice` is the root. None when `slice` is not a valid slice
/// name (no `.slice` suffix, a `/`, or an empty dash-separated part).
fn expand_slice(slice: &str) -> Option<PathBuf> {
    let name = slice.strip_suffix(".slice")?;
    if name.is_empty() || slice.contains('/') {
        return None;
    }
    if name == "-" {
        return Some(PathBuf::new());
    }
    let mut path = PathBuf::new();
    let mut prefix = String::new();
    for part in name.split('-') {
        if part.is_empty() {
            return None;
        }
        path.push(format!("{prefix}{part}.slice"));
        prefix.push_str(part);
        prefix.push('-');
    }
    Some(path)
}

/// Reads whole small files, reusing one buffer across a sample's files.
#[derive(Default)]
struct FileReader {
    bytes: Vec<u8>,
}

impl FileReader {
    /// The whole of cgroup file `path`.
    ///
    /// Not `read_to_string`: it first asks the file for its size and position, two more
    /// syscalls per file, and cgroup files do not know their size anyway (they all claim 0
    /// bytes). And no read past the end to see it return 0 when a read came back short with a
    /// whole last line: the cgroup files read here are single-record kernfs files, which the
    /// kernel hands over whole in one read, and reading v1 memory.stat again at its end
    /// regenerates it (measured here: 22 us for two reads, 17 us for one).
    fn read(&mut self, path: &Path) -> Result<&str, CgroupError> {
        self.read_file(path, true)
    }

    /// The whole of `path`, read until the kernel says it has ended: /proc files such as
    /// cpuinfo hold many records and may come back short, at a line's end, before their end.
    fn read_to_end(&mut self, path: &Path) -> Result<&str, CgroupError> {
        self.read_file(path, false)
    }

    fn read_file(&mut self, path: &Path, single_record: bool) -> Result<&str, CgroupError> {
        let read_error = |source| CgroupError::Read {
            path: path.to_path_buf(),
            source,
        };
        self.bytes.clear();
        let mut file = std::fs::File::open(path).map_err(read_error)?;
        let mut chunk = [0u8; 8192];
        loop {
            match file.read(&mut chunk) {
                Ok(0) => break,
                Ok(n) => {
                    self.bytes.extend_from_slice(&chunk[..n]);
                    if single_record && n < chunk.len() && chunk[n - 1] == b'\n' {
                        break;
                    }
                }
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
                Err(e) => return Err(read_error(e)),
            }
        }
        std::str::from_utf8(&self.bytes)
            .map_err(|_| parse_error(path, &String::from_utf8_lossy(&self.bytes)))
    }

    /// The one unsigned number `path` holds.
    fn read_u64(&mut self, path: &Path) -> Result<u64, CgroupError> {
        let text = self.read(path)?;
        parse_number(path, text)
    }
}

fn parse_number<T: std::str::FromStr>(path: &Path, text: &str) -> Result<T, CgroupError> {
    let text = text.trim();
    text.parse().map_err(|_| parse_error(path, text))
}

/// How much of a bad file to quote: cgroup files worth quoting are one short line.
const MAX_QUOTED: usize = 120;

fn parse_error(path: &Path, text: &str) -> CgroupError {
    let mut end = text.len().min(MAX_QUOTED);
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    CgroupError::Parse {
        path: path.to_path_buf(),
        text: text[..end].to_string(),
    }
}

/// The value of a `key value` line in a flat-keyed file (memory.stat, cpu.stat), or None when
/// the file has no such line. A line with that key but no number is a Parse error.
fn stat_field(path: &Path, text: &str, key: &str) -> Result<Option<u64>, CgroupError> {
    for line in text.lines() {
        let mut words = line.split_ascii_whitespace();
        if words.next() == Some(key) {
            let value = words.next().unwrap_or_default();
            return match (value.parse(), words.next()) {
                (Ok(n), None) => Ok(Some(n)),
                _ => Err(parse_error(path, line)),
            };
        }
    }
    Ok(None)
}

fn required_field(path: &Path, text: &str, key: &'static str) -> Result<u64, CgroupError> {
    stat_field(path, text, key)?.ok_or_else(|| CgroupError::MissingField {
        path: path.to_path_buf(),
        field: key,
    })
}

/// v2 `cpu.max`: `$MAX $PERIOD`, where `$MAX` is `max` for no limit.
fn parse_cpu_max(path: &Path, text: &str) -> Result<Option<f64>, CgroupError> {
    let text = text.trim();
    let mut words = text.split_ascii_whitespace();
    match (words.next(), words.next(), words.next()) {
        (Some("max"), Some(period), None) if period.parse::<u64>().is_ok() => Ok(None),
        (Some(quota), Some(period), None) => match (quota.parse::<u64>(), period.parse::<u64>()) {
            (Ok(quota), Ok(period)) if quota > 0 && period > 0 => {
                Ok(Some(quota as f64 / period as f64))
            }
            _ => Err(parse_error(path, text)),
        },
        _ => Err(parse_error(path, text)),
    }
}

/// CPU use between two samples of one container taken `elapsed` apart, as a percentage of its
/// CPU limit, or of `host_cores` when it has none (so 100 = the whole limit, or every core,
/// busy). 0 when the counter went backwards (container restarted).
///
/// A limit above the host's cores is capped at them, since the container can never use more
/// (like Docker capping a memory limit at the host's memory); otherwise a busy container limited
/// to 8 cores on a 4-core host would never pass 50%. The result is not clamped to 100: the
/// kernel accounts CPU time in whole scheduler periods, so a short interval can read a little
/// over.
pub fn cpu_percent(
    previous: &CgroupSample,
    current: &CgroupSample,
    elapsed: Duration,
    host_cores: f64,
) -> f64 {
    let Some(used_ns) = current.cpu_usage_ns.checked_sub(previous.cpu_usage_ns) else {
        return 0.0;
    };
    let capacity = match current.cpu_limit_cores {
        Some(limit) if host_cores > 0.0 => limit.min(host_cores),
        Some(limit) => limit,
        None => host_cores,
    };
    let elapsed_ns = elapsed.as_nanos() as f64;
    // Written to be false for NaN too.
    if !(capacity > 0.0 && elapsed_ns > 0.0) {
        return 0.0;
    }
    used_ns as f64 / elapsed_ns / capacity * 100.0
}

/// Memory use as a percentage of the limit, or of `host_memory_bytes` when unlimited. A limit
/// above the host's memory is capped at it, as Docker's daemon does.
pub fn memory_percent(sample: &CgroupSample, host_memory_bytes: u64) -> f64 {
    let limit = match sample.memory_limit_bytes {
        Some(limit) if host_memory_bytes > 0 => limit.min(host_memory_bytes),
        Some(limit) => limit,
        None => host_memory_bytes,
    };
    if limit == 0 {
        return 0.0;
    }
    sample.memory_bytes as f64 / limit as f64 * 100.0
}

/// The host's cores: the `processor` entries in /proc/cpuinfo (the online CPUs, what Docker
/// reports as `online_cpus`), else [`std::thread::available_parallelism`], else 1.
///
/// cpuinfo comes first because available_parallelism counts what *this process* may use (its
/// own cgroup quota and CPU affinity), which is less than the host when squall itself runs in a
/// limited container.
pub fn host_cores() -> f64 {
    host_cores_in(Path::new("/proc"))
        .ok()
        .or_else(|| {
            std::thread::available_parallelism()
                .ok()
                .map(|n| n.get() as f64)
        })
        .unwrap_or(1.0)
}

/// The `processor` entries in `<proc_root>/cpuinfo`. An error when it cannot be read or lists
/// none (some architectures, s390 for one, spell it differently).
pub fn host_cores_in(proc_root: &Path) -> Result<f64, CgroupError> {
    let path = proc_root.join("cpuinfo");
    let mut files = FileReader::default();
    let cores = files
        .read_to_end(&path)?
        .lines()
        .filter(|line| line.split(':').next().map(str::trim) == Some("processor"))
        .count();
    if cores == 0 {
        return Err(CgroupError::MissingField {
            path,
            field: "processor",
        });
    }
    Ok(cores as f64)
}

/// The host's memory: MemTotal in `<proc_root>/meminfo` (normally /proc; tests pass a fixture).
pub fn host_memory_bytes(proc_root: &Path) -> Result<u64, CgroupError> {
    let path = proc_root.join("meminfo");
    let mut files = FileReader::default();
    let line = files
        .read_to_end(&path)?
        .lines()
        .find(|line| line.starts_with("MemTotal:"))
        .ok_or_else(|| CgroupError::MissingField {
            path: path.clone(),
            field: "MemTotal",
        })?;
    // "MemTotal:       24683784 kB": the kernel always counts it in KiB.
    let mut words = line.split_ascii_whitespace().skip(1);
    match (
        words.next().map(str::parse::<u64>),
        words.next(),
        words.next(),
    ) {
        (Some(Ok(kib)), Some("kB"), None) => Ok(kib.saturating_mul(1024)),
        _ => Err(parse_error(&path, line)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const ID: &str = "efa3a7795079af75b031436eaf6498623a85467c8451bfc7fa8016a958659101";

    fn write(path: &Path, text: &str) {
        std::fs::create_dir_all(path.parent().expect("parent")).expect("mkdir");
        std::fs::write(path, text).expect("write");
    }

    /// A v1 container's files, in whichever controller folders the test names.
    fn v1_container(cpu: &Path, cpuacct: &Path, memory: &Path, stat: &str) {
        write(&cpuacct.join("cpuacct.usage"), "1000\n");
        write(&cpu.join("cpu.cfs_quota_us"), "-1\n");
        write(&cpu.join("cpu.cfs_period_us"), "100000\n");
        write(&memory.join("memory.usage_in_bytes"), "10000\n");
        write(
            &memory.join("memory.limit_in_bytes"),
            "9223372036854771712\n",
        );
        write(&memory.join("memory.stat"), stat);
    }

    #[test]
    fn default_layouts_are_cgroupfs_then_systemd() {
        assert_eq!(
            candidate_dirs(ID, None).expect("valid"),
            vec![
                PathBuf::from(format!("docker/{ID}")),
                PathBuf::from(format!("system.slice/docker-{ID}.scope")),
            ]
        );
        // Docker treats an empty parent as none.
        assert_eq!(
            candidate_dirs(ID, Some("")).expect("valid"),
            candidate_dirs(ID, None).expect("valid")
        );
    }

    #[test]
    fn a_cgroup_parent_is_a_path_for_cgroupfs_and_a_nested_slice_for_systemd() {
        assert_eq!(
            candidate_dirs(ID, Some("/ops/web")).expect("valid"),
            vec![
                PathBuf::from(format!("ops/web/{ID}")),
                PathBuf::from(format!("ops/web/docker-{ID}.scope")),
            ]
        );
        assert_eq!(
            candidate_dirs(ID, Some("ops-web.slice")).expect("valid"),
            vec![
                PathBuf::from(format!("ops-web.slice/{ID}")),
                PathBuf::from(format!("ops.slice/ops-web.slice/docker-{ID}.scope")),
            ]
        );
    }

    #[test]
    fn slices_expand_as_systemd_nests_them() {
        assert_eq!(
            expand_slice("a-b-c.slice"),
            Some(PathBuf::from("a.slice/a-b.slice/a-b-c.slice"))
        );
        assert_eq!(
            expand_slice("system.slice"),
            Some(PathBuf::from("system.slice"))
        );
        assert_eq!(expand_slice("-.slice"), Some(PathBuf::new()));
        for invalid in ["a--b.slice", "-a.slice", ".slice", "a/b.slice", "docker"] {
            assert_eq!(expand_slice(invalid), None, "{invalid}");
        }
    }

    #[test]
    fn ids_and_parents_cannot_leave_the_cgroup_tree() {
        for id in ["../../etc", "abc", &ID[..12], &format!("{}/x", &ID[..62])] {
            assert!(
                matches!(
                    candidate_dirs(id, None),
                    Err(CgroupError::InvalidContainerId { .. })
                ),
                "{id}"
            );
        }
        assert!(matches!(
            candidate_dirs(ID, Some("/docker/../../etc")),
            Err(CgroupError::InvalidCgroupParent { .. })
        ));
    }

    #[test]
    fn cpu_max_forms() {
        let p = Path::new("cpu.max");
        assert_eq!(parse_cpu_max(p, "max 100000\n").expect("parses"), None);
        assert_eq!(
            parse_cpu_max(p, "150000 100000\n").expect("parses"),
            Some(1.5)
        );
        for bad in ["", "max", "50000", "half 100000", "50000 0", "1 2 3"] {
            assert!(
                matches!(parse_cpu_max(p, bad), Err(CgroupError::Parse { .. })),
                "{bad:?}"
            );
        }
    }

    #[test]
    fn stat_fields_match_whole_keys_only() {
        let p = Path::new("memory.stat");
        let text = "total_inactive_file 7\ninactive_file_x 8\ninactive_file 9\n";
        assert_eq!(
            stat_field(p, text, "inactive_file").expect("parses"),
            Some(9)
        );
        assert_eq!(stat_field(p, text, "active_file").expect("parses"), None);
        assert!(matches!(
            stat_field(p, "inactive_file lots\n", "inactive_file"),
            Err(CgroupError::Parse { text, .. }) if text == "inactive_file lots"
        ));
    }

    #[test]
    fn symlinked_co_mounted_v1_controllers_are_read() {
        let dir = tempfile::tempdir().expect("tempdir");
        let root = dir.path();
        let both = root.join("cpu,cpuacct").join("docker").join(ID);
        let memory = root.join("memory").join("docker").join(ID);
        v1_container(&both, &both, &memory, "total_inactive_file 4000\n");
        std::os::unix::fs::symlink("cpu,cpuacct", root.join("cpu")).expect("symlink");
        std::os::unix::fs::symlink("cpu,cpuacct", root.join("cpuacct")).expect("symlink");

        let reader = CgroupReader::detect(root).expect("detects");
        assert_eq!(reader.version(), CgroupVersion::V1);
        let sample = reader.sample(ID, None).expect("reads");
        assert_eq!(sample.cpu_usage_ns, 1000);
        assert_eq!(sample.cpu_limit_cores, None);
        assert_eq!(sample.memory_bytes, 6000);
        assert_eq!(sample.memory_limit_bytes, None);
    }

    #[test]
    fn v1_memory_stat_without_totals_falls_back_to_inactive_file() {
        let dir = tempfile::tempdir().expect("tempdir");
        let root = dir.path();
        let at = |c: &str| root.join(c).join("docker").join(ID);
        v1_container(
            &at("cpu"),
            &at("cpuacct"),
            &at("memory"),
            "cache 1\ninactive_file 2500\n",
        );
        let sample = CgroupReader::detect(root)
            .expect("detects")
            .sample(ID, None)
            .expect("reads");
        assert_eq!(sample.memory_bytes, 7500);
    }

    #[test]
    fn a_container_under_a_custom_slice_is_found() {
        let dir = tempfile::tempdir().expect("tempdir");
        let root = dir.path();
        write(&root.join("cgroup.controllers"), "cpu memory\n");
        let scope = root.join(format!("ops.slice/ops-web.slice/docker-{ID}.scope"));
        write(&scope.join("cpu.stat"), "usage_usec 3\n");
        write(&scope.join("cpu.max"), "max 100000\n");
        write(&scope.join("memory.current"), "8192\n");
        write(&scope.join("memory.max"), "max\n");
        write(&scope.join("memory.stat"), "inactive_file 4096\n");
        let sample = CgroupReader::detect(root)
            .expect("detects")
            .sample(ID, Some("ops-web.slice"))
            .expect("reads");
        assert_eq!(sample.cpu_usage_ns, 3000);
        assert_eq!(sample.memory_bytes, 4096);
    }

    #[test]
    fn v1_without_a_memory_controller_says_so() {
        let dir = tempfile::tempdir().expect("tempdir");
        std::fs::create_dir_all(dir.path().join("cpu,cpuacct")).expect("mkdir");
        assert!(matches!(
            CgroupReader::detect(dir.path()),
            Err(CgroupError::MissingController {
                controller: "memory",
                ..
            })
        ));
    }

    #[test]
    fn limits_beyond_the_host_are_capped_at_the_host() {
        let sample = CgroupSample {
            cpu_usage_ns: 2_000_000_000,
            cpu_limit_cores: Some(8.0),
            memory_bytes: 1024,
            memory_limit_bytes: Some(1 << 40),
        };
        let start = CgroupSample {
            cpu_usage_ns: 0,
            ..sample.clone()
        };
        // Both of a 2-core host's cores busy for a second: the whole of what it can have.
        let pct = cpu_percent(&start, &sample, Duration::from_secs(1), 2.0);
        assert!((pct - 100.0).abs() < 1e-9, "{pct}");
        assert!((memory_percent(&sample, 2048) - 50.0).abs() < 1e-9);
    }
}
