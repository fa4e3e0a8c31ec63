//! One full collection of container resource use from cgroups: every container of a host with
//! 1,000 of them sampled once, as a stats sensor does each tick. The tree is generated in a
//! tempdir as cgroup v1 lays it out (cpu, cpuacct and memory mounted apart, as on the machine
//! this was written on), in Docker's cgroupfs layout (`docker/<id>`) and its systemd layout
//! (`system.slice/docker-<id>.scope`, which is tried second, so it pays one failed lookup more).
//!
//! It measures the reader's own work (path building, six small reads, parsing) over ordinary
//! files; the kernel generates real cgroup files on each read, memory.stat above all, so a real
//! /sys/fs/cgroup costs more per file.
//!
//! Run: `cargo bench -p squall-sensors --bench cgroup -- --warm-up-time 1 --measurement-time 3`

use std::hint::black_box;
use std::path::Path;

use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use squall_sensors::cgroup::CgroupReader;

const CONTAINERS: usize = 1000;

/// Where a layout puts container `id`'s cgroup, relative to each controller.
type FolderOf = fn(&str) -> String;

/// A full container id, distinct for each `n`.
fn container_id(n: usize) -> String {
    format!("{:016x}", (n as u64).wrapping_mul(0x9e37_79b9_7f4a_7c15)).repeat(4)
}

fn write(path: &Path, text: &str) {
    if let Some(parent) = path.parent() {
        std::fs::create_dir_all(parent).expect("mkdir");
    }
    std::fs::write(path, text).expect("write");
}

/// A v1 memory.stat the size of a real one (about 1 KiB, 45 lines).
fn memory_stat(n: usize) -> String {
    let keys = [
        "cache",
        "rss",
        "rss_huge",
        "shmem",
        "mapped_file",
        "dirty",
        "writeback",
        "workingset_refault_anon",
        "workingset_refault_file",
        "swap",
        "swapcached",
        "pgpgin",
        "pgpgout",
        "pgfault",
        "pgmajfault",
        "inactive_anon",
        "active_anon",
        "inactive_file",
        "active_file",
        "unevictable",
    ];
    let mut out = String::new();
    for key in keys {
        out.push_str(&format!("{key} {}\n", 4096 * (n + 1)));
    }
    out.push_str("hierarchical_memory_limit 9223372036854771712\n");
    out.push_str("hierarchical_memsw_limit 9223372036854771712\n");
    for key in keys {
        out.push_str(&format!("total_{key} {}\n", 4096 * (n + 1)));
    }
    out
}

/// A v1 root holding `CONTAINERS` containers, each folder named by `folder(id)`; every other one
/// limited (0.5 CPU, 256 MiB).
fn v1_tree(root: &Path, folder: impl Fn(&str) -> String) -> Vec<String> {
    let ids: Vec<String> = (0..CONTAINERS).map(container_id).collect();
    for (n, id) in ids.iter().enumerate() {
        let dir = folder(id);
        let limited = n % 2 == 0;
        let cpu = root.join("cpu").join(&dir);
        let cpuacct = root.join("cpuacct").join(&dir);
        let memory = root.join("memory").join(&dir);
        write(
            &cpuacct.join("cpuacct.usage"),
            &format!("{}\n", 1_000_000 * n),
        );
        write(
            &cpu.join("cpu.cfs_quota_us"),
            if limited { "50000\n" } else { "-1\n" },
        );
        write(&cpu.join("cpu.cfs_period_us"), "100000\n");
        write(
            &memory.join("memory.usage_in_bytes"),
            &format!("{}\n", 8192 * (n + 1)),
        );
        write(
            &memory.join("memory.limit_in_bytes"),
            if limited {
                "268435456\n"
            } else {
                "9223372036854771712\n"
            },
        );
        write(&memory.join("memory.stat"), &memory_stat(n));
    }
    ids
}

fn collection(c: &mut Criterion) {
    let mut group = c.benchmark_group("cgroup v1 collection");
    group.throughput(Throughput::Elements(CONTAINERS as u64));
    let layouts: [(&str, FolderOf); 2] = [
        ("1,000 containers, cgroupfs driver", |id| {
            format!("docker/{id}")
        }),
        ("1,000 containers, systemd driver", |id| {
            format!("system.slice/docker-{id}.scope")
        }),
    ];
    for (name, folder) in layouts {
        let dir = tempfile::tempdir().expect("tempdir");
        let ids = v1_tree(dir.path(), folder);
        let reader = CgroupReader::detect(dir.path()).expect("a v1 tree");
        // Every container must read, or the bench would time error paths.
        for id in &ids {
            reader.sample(id, None).expect("sample");
        }
        group.bench_function(name, |b| {
            b.iter(|| {
                for id in &ids {
                    black_box(reader.sample(black_box(id), None).ok());
                }
            })
        });
    }
    group.finish();
}

criterion_group!(benches, collection);
criterion_main!(benches);
