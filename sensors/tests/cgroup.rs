//! The cgroup reader against fixture trees and against this machine's real Docker daemon.
//!
//! `tests/fixtures/cgroup/<tree>/` is a cgroup mount root as a host of that kind lays it out,
//! with a limited container (0.5 CPU, 256 MiB) and an unlimited one, and `expected.json`: the
//! version and every container's exact sample. A new layout is a new folder. `v1-cgroupfs` keeps
//! cpu and cpuacct apart (as this machine mounts them); `v1-systemd` co-mounts them as
//! `cpu,cpuacct` without the usual symlinks. `proc/` is a /proc with meminfo and cpuinfo.
//!
//! The real-daemon test starts its own containers from `squall-test-busybox:latest` (built by
//! scripts/test-image, as no registry is reachable) and removes them however it ends.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use serde_json::Value;
use squall_sensors::cgroup::{
    cpu_percent, host_cores, host_cores_in, host_memory_bytes, memory_percent, CgroupError,
    CgroupReader, CgroupSample,
};

const LIMITED: &str = "efa3a7795079af75b031436eaf6498623a85467c8451bfc7fa8016a958659101";
const UNLIMITED: &str = "a523954f629e3bfba07666608f6134b2f6532051eb1fcbf94eec78a960fe57a7";
const MIB: u64 = 1024 * 1024;

fn fixtures() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/cgroup")
}

fn read_json(path: &Path) -> Value {
    let text = std::fs::read_to_string(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    serde_json::from_str(&text).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

/// Every fixture tree: the folders with an expected.json.
fn trees() -> Vec<PathBuf> {
    let mut trees: Vec<PathBuf> = std::fs::read_dir(fixtures())
        .expect("fixtures folder")
        .map(|entry| entry.expect("fixture entry").path())
        .filter(|path| path.join("expected.json").is_file())
        .collect();
    trees.sort();
    trees
}

/// Copies a fixture tree, so a test can break one of its files.
fn copy_tree(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).expect("mkdir");
    for entry in std::fs::read_dir(from).expect("read fixture dir") {
        let entry = entry.expect("fixture entry");
        let target = to.join(entry.file_name());
        if entry.file_type().expect("file type").is_dir() {
            copy_tree(&entry.path(), &target);
        } else {
            std::fs::copy(entry.path(), &target).expect("copy fixture file");
        }
    }
}

fn sample(cores: Option<f64>, cpu_usage_ns: u64) -> CgroupSample {
    CgroupSample {
        cpu_usage_ns,
        cpu_limit_cores: cores,
        memory_bytes: 0,
        memory_limit_bytes: None,
    }
}

fn assert_close(got: f64, want: f64) {
    assert!((got - want).abs() < 1e-9, "got {got}, want {want}");
}

// ---- fixture trees ----

#[test]
fn every_fixture_tree_reads_exactly_what_it_holds() {
    let trees = trees();
    let names: Vec<_> = trees
        .iter()
        .filter_map(|t| t.file_name()?.to_str().map(str::to_string))
        .collect();
    assert_eq!(
        names,
        ["v1-cgroupfs", "v1-systemd", "v2-cgroupfs", "v2-systemd"]
    );
    for tree in trees {
        let expected = read_json(&tree.join("expected.json"));
        let reader = CgroupReader::detect(&tree).unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(
            serde_json::to_value(reader.version()).expect("serialises"),
            expected["version"],
            "{}",
            tree.display()
        );
        let containers = expected["containers"].as_object().expect("containers");
        assert_eq!(containers.len(), 2, "{}", tree.display());
        for (id, want) in containers {
            let got = reader
                .sample(id, None)
                .unwrap_or_else(|e| panic!("{}: {e}", tree.display()));
            assert_eq!(
                &serde_json::to_value(&got).expect("serialises"),
                want,
                "{} {id}",
                tree.display()
            );
        }
    }
}

#[test]
fn limited_and_unlimited_containers_read_as_such_on_every_layout() {
    for tree in trees() {
        let reader = CgroupReader::detect(&tree).expect("detects");
        let limited = reader.sample(LIMITED, None).expect("limited reads");
        assert_eq!(limited.cpu_limit_cores, Some(0.5), "{}", tree.display());
        assert_eq!(
            limited.memory_limit_bytes,
            Some(256 * MIB),
            "{}",
            tree.display()
        );
        let unlimited = reader.sample(UNLIMITED, None).expect("unlimited reads");
        assert_eq!(unlimited.cpu_limit_cores, None, "{}", tree.display());
        assert_eq!(unlimited.memory_limit_bytes, None, "{}", tree.display());
    }
}

#[test]
fn an_unknown_container_names_every_path_tried() {
    let id = "0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef";
    let v1 = fixtures().join("v1-cgroupfs");
    let err = CgroupReader::detect(&v1)
        .expect("detects")
        .sample(id, None)
        .expect_err("no such container");
    let message = err.to_string();
    match err {
        CgroupError::NotFound { container, tried } => {
            assert_eq!(container, id);
            assert_eq!(
                tried,
                vec![
                    v1.join("cpuacct/docker").join(id),
                    v1.join("cpuacct/system.slice")
                        .join(format!("docker-{id}.scope")),
                ]
            );
            assert!(message.contains(&format!("docker-{id}.scope")), "{message}");
        }
        other => panic!("expected NotFound, got {other:?}"),
    }

    let v2 = fixtures().join("v2-systemd");
    match CgroupReader::detect(&v2)
        .expect("detects")
        .sample(id, Some("ops-web.slice"))
    {
        Err(CgroupError::NotFound { tried, .. }) => assert_eq!(
            tried,
            vec![
                v2.join("ops-web.slice").join(id),
                v2.join("ops.slice/ops-web.slice")
                    .join(format!("docker-{id}.scope")),
            ]
        ),
        other => panic!("expected NotFound, got {other:?}"),
    }
}

#[test]
fn a_short_id_is_refused_rather_than_not_found() {
    let reader = CgroupReader::detect(&fixtures().join("v1-cgroupfs")).expect("detects");
    assert!(matches!(
        reader.sample(&LIMITED[..12], None),
        Err(CgroupError::InvalidContainerId { .. })
    ));
}

#[test]
fn a_folder_that_is_no_cgroup_mount_is_refused() {
    let dir = tempfile::tempdir().expect("tempdir");
    match CgroupReader::detect(dir.path()) {
        Err(CgroupError::NoCgroupFs { root }) => assert_eq!(root, dir.path()),
        other => panic!("expected NoCgroupFs, got {other:?}"),
    }
}

#[test]
fn a_garbled_file_is_a_parse_error_naming_it() {
    let dir = tempfile::tempdir().expect("tempdir");
    copy_tree(&fixtures().join("v1-cgroupfs"), dir.path());
    let usage = dir
        .path()
        .join("cpuacct/docker")
        .join(LIMITED)
        .join("cpuacct.usage");
    std::fs::write(&usage, "twelve\n").expect("write");
    let err = CgroupReader::detect(dir.path())
        .expect("detects")
        .sample(LIMITED, None)
        .expect_err("garbled");
    assert!(err.to_string().contains("cpuacct.usage"), "{err}");
    match err {
        CgroupError::Parse { path, text } => {
            assert_eq!(path, usage);
            assert_eq!(text, "twelve");
        }
        other => panic!("expected Parse, got {other:?}"),
    }

    let dir = tempfile::tempdir().expect("tempdir");
    copy_tree(&fixtures().join("v2-cgroupfs"), dir.path());
    let cpu_max = dir.path().join("docker").join(LIMITED).join("cpu.max");
    std::fs::write(&cpu_max, "half 100000\n").expect("write");
    match CgroupReader::detect(dir.path())
        .expect("detects")
        .sample(LIMITED, None)
    {
        Err(CgroupError::Parse { path, text }) => {
            assert_eq!(path, cpu_max);
            assert_eq!(text, "half 100000");
        }
        other => panic!("expected Parse, got {other:?}"),
    }
}

#[test]
fn a_missing_file_is_a_read_error_naming_it() {
    let dir = tempfile::tempdir().expect("tempdir");
    copy_tree(&fixtures().join("v1-systemd"), dir.path());
    let stat = dir
        .path()
        .join("memory/system.slice")
        .join(format!("docker-{UNLIMITED}.scope"))
        .join("memory.stat");
    std::fs::remove_file(&stat).expect("remove");
    let err = CgroupReader::detect(dir.path())
        .expect("detects")
        .sample(UNLIMITED, None)
        .expect_err("missing");
    assert!(err.to_string().contains("memory.stat"), "{err}");
    match err {
        CgroupError::Read { path, source } => {
            assert_eq!(path, stat);
            assert_eq!(source.kind(), std::io::ErrorKind::NotFound);
        }
        other => panic!("expected Read, got {other:?}"),
    }
}

#[test]
fn a_stat_file_without_the_needed_line_names_file_and_line() {
    let dir = tempfile::tempdir().expect("tempdir");
    copy_tree(&fixtures().join("v2-systemd"), dir.path());
    let stat = dir
        .path()
        .join("system.slice")
        .join(format!("docker-{LIMITED}.scope"))
        .join("memory.stat");
    let text = std::fs::read_to_string(&stat).expect("read");
    let without: String = text
        .lines()
        .filter(|line| !line.starts_with("inactive_file "))
        .map(|line| format!("{line}\n"))
        .collect();
    std::fs::write(&stat, without).expect("write");
    match CgroupReader::detect(dir.path())
        .expect("detects")
        .sample(LIMITED, None)
    {
        Err(CgroupError::MissingField { path, field }) => {
            assert_eq!(path, stat);
            assert_eq!(field, "inactive_file");
        }
        other => panic!("expected MissingField, got {other:?}"),
    }
}

// ---- percentages ----

#[test]
fn half_a_core_busy_under_a_half_core_limit_is_100_percent() {
    let before = sample(Some(0.5), 10_000_000_000);
    let after = sample(Some(0.5), 10_500_000_000);
    assert_close(
        cpu_percent(&before, &after, Duration::from_secs(1), 2.0),
        100.0,
    );
}

#[test]
fn one_core_busy_unlimited_on_a_two_core_host_is_50_percent() {
    let before = sample(None, 0);
    let after = sample(None, 2_000_000_000);
    assert_close(
        cpu_percent(&before, &after, Duration::from_secs(2), 2.0),
        50.0,
    );
}

#[test]
fn a_counter_that_went_backwards_is_0_percent() {
    let before = sample(None, 9_000_000_000);
    let after = sample(None, 1_000_000);
    assert_eq!(
        cpu_percent(&before, &after, Duration::from_secs(1), 2.0),
        0.0
    );
    // No time passed: nothing to divide by.
    assert_eq!(cpu_percent(&before, &before, Duration::ZERO, 2.0), 0.0);
}

#[test]
fn memory_percent_is_of_the_limit_or_of_the_host() {
    let limited = CgroupSample {
        memory_bytes: 64 * MIB,
        memory_limit_bytes: Some(256 * MIB),
        ..sample(None, 0)
    };
    assert_close(memory_percent(&limited, 8192 * MIB), 25.0);
    let unlimited = CgroupSample {
        memory_limit_bytes: None,
        ..limited
    };
    assert_close(memory_percent(&unlimited, 1024 * MIB), 6.25);
}

#[test]
fn host_figures_come_from_proc() {
    let proc = fixtures().join("proc");
    assert_eq!(host_memory_bytes(&proc).expect("meminfo"), 8_147_356 * 1024);
    assert_eq!(host_cores_in(&proc).expect("cpuinfo"), 4.0);
    match host_memory_bytes(&fixtures().join("no-such-proc")) {
        Err(CgroupError::Read { path, .. }) => {
            assert_eq!(path, fixtures().join("no-such-proc/meminfo"))
        }
        other => panic!("expected Read, got {other:?}"),
    }
}

// ---- this machine ----

const IMAGE: &str = "squall-test-busybox:latest";
/// The daemon on a loaded machine can take seconds to start a container.
const DEADLINE: Duration = Duration::from_secs(60);
/// How long CPU use is measured over: the sleep between the two samples is the measurement,
/// not a wait for something to happen.
const MEASUREMENT_INTERVAL: Duration = Duration::from_secs(1);

fn docker(args: &[&str]) -> String {
    let out = Command::new("docker")
        .args(args)
        .output()
        .expect("docker runs");
    assert!(
        out.status.success(),
        "docker {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).trim().to_string()
}

/// The test's containers, removed however the test ends.
struct Containers(Vec<String>);

impl Drop for Containers {
    fn drop(&mut self) {
        for name in &self.0 {
            let _ = Command::new("docker").args(["rm", "-f", name]).output();
        }
    }
}

/// Samples `id` until its CPU counter has moved past `at_least_ns`, so the measurement starts
/// with the container's process running rather than still starting.
fn sample_once_running(reader: &CgroupReader, id: &str, at_least_ns: u64) -> CgroupSample {
    let deadline = Instant::now() + DEADLINE;
    loop {
        match reader.sample(id, None) {
            Ok(s) if s.cpu_usage_ns > at_least_ns => return s,
            Ok(_) | Err(CgroupError::NotFound { .. }) => {}
            Err(e) => panic!("{id}: {e}"),
        }
        assert!(Instant::now() < deadline, "{id} never started using CPU");
        std::thread::sleep(Duration::from_millis(20));
    }
}

#[test]
fn real_containers_read_their_limits_and_cpu_use() {
    let image = Command::new(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../scripts/test-image"
    ))
    .status()
    .expect("scripts/test-image runs");
    assert!(image.success(), "the test image could not be built");

    let pid = std::process::id();
    let burner_name = format!("squall-cgroup-burner-{pid}");
    let idle_name = format!("squall-cgroup-idle-{pid}");
    let _cleanup = Containers(vec![burner_name.clone(), idle_name.clone()]);
    let burner = docker(&[
        "run",
        "-d",
        "--name",
        &burner_name,
        "--cpus",
        "0.5",
        "--memory",
        "64m",
        IMAGE,
        "sh",
        "-c",
        "while :; do :; done",
    ]);
    let idle = docker(&["run", "-d", "--name", &idle_name, IMAGE, "sleep", "300"]);
    // `docker run -d` prints the full id last (warnings go before it).
    let burner = burner.lines().last().unwrap_or_default().to_string();
    let idle = idle.lines().last().unwrap_or_default().to_string();

    let reader = CgroupReader::detect(Path::new("/sys/fs/cgroup")).expect("a cgroup mount");
    let cores = host_cores();
    // The burner has burnt a few ms of CPU: its loop is running. The idle one's counter moves
    // once `sleep` has been exec'd.
    sample_once_running(&reader, &burner, 5_000_000);
    sample_once_running(&reader, &idle, 0);

    let burner_before = reader.sample(&burner, None).expect("burner");
    let idle_before = reader.sample(&idle, None).expect("idle");
    let started = Instant::now();
    std::thread::sleep(MEASUREMENT_INTERVAL);
    let burner_after = reader.sample(&burner, None).expect("burner");
    let idle_after = reader.sample(&idle, None).expect("idle");
    let elapsed = started.elapsed();

    let burner_pct = cpu_percent(&burner_before, &burner_after, elapsed, cores);
    let idle_pct = cpu_percent(&idle_before, &idle_after, elapsed, cores);
    eprintln!(
        "{:?}, {cores} cores, over {elapsed:?}: burner {burner_pct:.1}% of its limit ({burner_after:?}), idle {idle_pct:.2}% of the host ({idle_after:?})",
        reader.version()
    );
    assert_eq!(burner_after.cpu_limit_cores, Some(0.5));
    assert_eq!(burner_after.memory_limit_bytes, Some(64 * MIB));
    assert!(
        (70.0..=130.0).contains(&burner_pct),
        "the burner used {burner_pct}% of its 0.5 CPU limit"
    );
    assert_eq!(idle_after.cpu_limit_cores, None);
    assert_eq!(idle_after.memory_limit_bytes, None);
    assert!(
        idle_pct < 5.0,
        "the idle container used {idle_pct}% of the host"
    );
    assert!(burner_after.memory_bytes > 0 && burner_after.memory_bytes < 64 * MIB);
    let host_memory = host_memory_bytes(Path::new("/proc")).expect("meminfo");
    let pct = memory_percent(&burner_after, host_memory);
    assert!(pct > 0.0 && pct < 100.0, "{pct}");
}
