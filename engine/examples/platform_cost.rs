//! What this machine charges for the two things a durable webhook cannot avoid, apart from
//! HTTP itself: handing work to another thread and waking the one waiting for it, and an
//! `fdatasync`. Prints wall time and CPU time (user + system, the whole process) per round.
//!
//! `cargo run --release -p squall-engine --example platform_cost -- [DIR] [ROUNDS]`
//! (DIR: where the sync test writes its file, default the current directory, which should be
//! on the disk squall's data dir is on; ROUNDS default 20,000 for wake-ups, a tenth for syncs.)

use std::fs::OpenOptions;
use std::os::unix::fs::FileExt;
use std::sync::{Arc, Condvar, Mutex};
use std::time::Instant;

/// CPU time of this process so far, in microseconds (from /proc, in clock ticks of 10 ms).
fn cpu_us() -> u64 {
    let stat = std::fs::read_to_string("/proc/self/stat").expect("read /proc/self/stat");
    // Fields after the command's closing parenthesis: utime and stime are the 12th and 13th.
    let rest = &stat[stat.rfind(')').expect("stat has a command") + 2..];
    let fields: Vec<&str> = rest.split_whitespace().collect();
    let ticks: u64 =
        fields[11].parse::<u64>().expect("utime") + fields[12].parse::<u64>().expect("stime");
    ticks * 10_000
}

fn report(what: &str, rounds: u64, wall: std::time::Duration, cpu: u64) {
    println!(
        "{what}: {:.1} us wall, {:.1} us CPU per round ({rounds} rounds)",
        wall.as_secs_f64() * 1e6 / rounds as f64,
        cpu as f64 / rounds as f64
    );
}

/// Two threads hand a token back and forth through a mutex and condition variable (as the
/// journal's writer and the threads submitting to it do): each round wakes each thread once.
fn wakes(rounds: u64) {
    let state = Arc::new((Mutex::new(false), Condvar::new()));
    let other = state.clone();
    let peer = std::thread::spawn(move || {
        let (lock, cv) = &*other;
        for _ in 0..rounds {
            let mut turn = lock.lock().expect("lock");
            while !*turn {
                turn = cv.wait(turn).expect("wait");
            }
            *turn = false;
            cv.notify_one();
        }
    });
    let (lock, cv) = &*state;
    let (t0, c0) = (Instant::now(), cpu_us());
    for _ in 0..rounds {
        let mut turn = lock.lock().expect("lock");
        *turn = true;
        cv.notify_one();
        while *turn {
            turn = cv.wait(turn).expect("wait");
        }
    }
    let (wall, cpu) = (t0.elapsed(), cpu_us() - c0);
    peer.join().expect("peer");
    report("a wake-up each way between two threads", rounds, wall, cpu);
}

/// 4 KiB written over a file already written and synced (as the journal's zero-filled
/// segments are), then `fdatasync`.
fn syncs(dir: &std::path::Path, rounds: u64) {
    let path = dir.join(format!("platform-cost-{}.tmp", std::process::id()));
    let file = OpenOptions::new()
        .create(true)
        .truncate(true)
        .read(true)
        .write(true)
        .open(&path)
        .expect("create the test file");
    let block = vec![0u8; 4096];
    for i in 0..rounds {
        file.write_all_at(&block, i * 4096).expect("fill");
    }
    file.sync_all().expect("sync");
    let data = vec![b'x'; 4096];
    let (t0, c0) = (Instant::now(), cpu_us());
    for i in 0..rounds {
        file.write_all_at(&data, i * 4096).expect("write");
        file.sync_data().expect("fdatasync");
    }
    let (wall, cpu) = (t0.elapsed(), cpu_us() - c0);
    drop(file);
    let _ = std::fs::remove_file(&path);
    report("a 4 KiB overwrite and its fdatasync", rounds, wall, cpu);
}

fn main() {
    let mut args = std::env::args().skip(1);
    let dir = std::path::PathBuf::from(args.next().unwrap_or_else(|| ".".into()));
    let rounds: u64 = args
        .next()
        .map(|r| r.parse().expect("ROUNDS is a number"))
        .unwrap_or(20_000);
    wakes(rounds);
    syncs(&dir, (rounds / 10).max(1));
}
