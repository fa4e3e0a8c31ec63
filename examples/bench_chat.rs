//! Chat command to answer posted, for a trivial action: the time from sending a signed Slack
//! slash command (`/squall trivial <i>`, alias bench.trivial) to squall's answer arriving at
//! the command's response url. Reports p50, p90, p99 and max of that time, and of the slash
//! command's own HTTP answer (squall acknowledges at once; here the alias acknowledges nothing).
//!
//! Method: starts the release build of squall on a free 127.0.0.1 port with a fresh data dir,
//! the core, chatops and bench packs and a `chatops.slack` setting; a response-url receiver on
//! another 127.0.0.1 port notes when each answer arrives. Commands are sent one connection at a
//! time on a fixed schedule (command i at start + i/rate), each signed as Slack signs them.
//! 20 warm-up commands are not counted.
//!
//! Usage: `scripts/bench-chat [--rate 50] [--count 1000]`. Exit status 1 if an answer did not
//! arrive within 30 s of the last command, or said something else than the action's result.

use std::collections::HashMap;
use std::io::{BufRead, BufReader, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitCode, Stdio};
use std::sync::{Arc, Condvar, Mutex};
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use clap::Parser;
use hmac::{Hmac, Mac};
use sha2::Sha256;

const SECRET: &str = "bench-signing-secret";
const WARM_UP: usize = 20;

#[derive(Parser)]
#[command(
    name = "bench-chat",
    about = "chat command -> answer posted latency of squall"
)]
struct Args {
    /// commands per second
    #[arg(long, default_value_t = 50.0)]
    rate: f64,
    /// commands measured (after the warm-up)
    #[arg(long, default_value_t = 1000)]
    count: usize,
    /// the squall binary [default: ${CARGO_TARGET_DIR:-target}/release/squall]
    #[arg(long)]
    binary: Option<PathBuf>,
}

/// Answers received at the response urls: command number -> (arrival, text).
#[derive(Default)]
struct Answers {
    seen: Mutex<HashMap<usize, (Instant, String)>>,
    arrived: Condvar,
}

fn main() -> ExitCode {
    match run(&Args::parse()) {
        Ok(code) => code,
        Err(e) => {
            eprintln!("bench-chat: {e:#}");
            ExitCode::from(2)
        }
    }
}

fn run(args: &Args) -> Result<ExitCode> {
    let root = PathBuf::from(env!("CARGO_MANIFEST_DIR"));
    let binary = args.binary.clone().unwrap_or_else(|| {
        let target = std::env::var("CARGO_TARGET_DIR").unwrap_or_else(|_| "target".into());
        root.join(target).join("release/squall")
    });
    let answers = Arc::new(Answers::default());
    let receiver = TcpListener::bind("127.0.0.1:0").context("binding the receiver")?;
    let receiver_port = receiver.local_addr()?.port();
    {
        let answers = answers.clone();
        std::thread::spawn(move || {
            for conn in receiver.incoming().flatten() {
                let answers = answers.clone();
                std::thread::spawn(move || receive(conn, &answers));
            }
        });
    }

    let work = tempfile::tempdir()?;
    let settings = work.path().join("squall.yaml");
    std::fs::write(
        &settings,
        format!("chatops:\n  slack:\n    signing_secret: {SECRET}\n    api_url: http://127.0.0.1:{receiver_port}/api\n  default_user: bench\n"),
    )?;
    let port = free_port()?;
    let log = work.path().join("squall.log");
    let mut squall = Squall(
        Command::new(&binary)
            .arg("run")
            .args(["--listen", &format!("127.0.0.1:{port}")])
            .arg("--data-dir")
            .arg(work.path().join("data"))
            .args(["--packs", "packs/core", "--packs", "packs/chatops"])
            .args(["--packs", "benches/packs/bench", "--workers", "2"])
            .arg("--config")
            .arg(&settings)
            .current_dir(&root)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(&log)?)
            .spawn()
            .with_context(|| format!("starting {}", binary.display()))?,
    );
    wait_ready(port, &log)?;

    let http = reqwest::blocking::Client::new();
    let send = |i: usize| -> Result<Duration> {
        let body = format!(
            "token=x&team_id=T1&team_domain=bench&channel_id=C1&channel_name=bench&user_id=U1&user_name=bench&command=%2Fsquall&text=trivial+{i}&response_url=http%3A%2F%2F127.0.0.1%3A{receiver_port}%2Fr%2F{i}&trigger_id=t"
        );
        let ts = chrono::Utc::now().timestamp().to_string();
        let started = Instant::now();
        let answer = http
            .post(format!(
                "http://127.0.0.1:{port}/api/v1/chatops/slack/commands"
            ))
            .header("Content-Type", "application/x-www-form-urlencoded")
            .header("X-Slack-Request-Timestamp", &ts)
            .header("X-Slack-Signature", sign(&ts, &body))
            .body(body)
            .send()?;
        let status = answer.status();
        let text = answer.text()?;
        if !status.is_success() {
            bail!("command {i} answered {status}: {text}");
        }
        Ok(started.elapsed())
    };

    for i in 0..WARM_UP {
        send(i)?;
    }
    let first = WARM_UP;
    let start = Instant::now();
    let mut sent = Vec::with_capacity(args.count);
    let mut acks = Vec::with_capacity(args.count);
    for k in 0..args.count {
        let due = start + Duration::from_secs_f64(k as f64 / args.rate);
        if let Some(wait) = due.checked_duration_since(Instant::now()) {
            std::thread::sleep(wait);
        }
        sent.push(Instant::now());
        acks.push(send(first + k)?);
    }
    let send_seconds = start.elapsed().as_secs_f64();

    let deadline = Instant::now() + Duration::from_secs(30);
    let mut seen = answers
        .seen
        .lock()
        .map_err(|_| anyhow::anyhow!("poisoned"))?;
    while (first..first + args.count).any(|i| !seen.contains_key(&i)) && Instant::now() < deadline {
        let (guard, _) = answers
            .arrived
            .wait_timeout(seen, Duration::from_millis(100))
            .map_err(|_| anyhow::anyhow!("poisoned"))?;
        seen = guard;
    }
    let mut latencies = Vec::with_capacity(args.count);
    let mut missing = 0;
    let mut wrong = 0;
    for (k, at) in sent.iter().enumerate() {
        let i = first + k;
        match seen.get(&i) {
            Some((arrived, text)) => {
                if *text != (i + 1).to_string() {
                    wrong += 1;
                }
                latencies.push(arrived.duration_since(*at));
            }
            None => missing += 1,
        }
    }
    drop(seen);
    squall.stop();

    println!(
        "chat command -> answer posted ({} commands at {:.0}/s offered, {:.1}/s sent; trivial action):",
        args.count,
        args.rate,
        args.count as f64 / send_seconds
    );
    print_figures("answer posted", &mut latencies);
    print_figures("slash command answered", &mut acks);
    println!("missing answers: {missing}, wrong answers: {wrong}");
    Ok(if missing == 0 && wrong == 0 {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    })
}

fn print_figures(what: &str, values: &mut [Duration]) {
    if values.is_empty() {
        println!("  {what}: no figures");
        return;
    }
    values.sort();
    let at =
        |q: f64| values[((values.len() as f64 * q).ceil() as usize).clamp(1, values.len()) - 1];
    let ms = |d: Duration| d.as_secs_f64() * 1000.0;
    println!(
        "  {what}: p50 {:.2} ms, p90 {:.2} ms, p99 {:.2} ms, max {:.2} ms",
        ms(at(0.50)),
        ms(at(0.90)),
        ms(at(0.99)),
        ms(values[values.len() - 1])
    );
}

fn sign(ts: &str, body: &str) -> String {
    let mut mac = <Hmac<Sha256> as Mac>::new_from_slice(SECRET.as_bytes()).expect("any key length");
    mac.update(format!("v0:{ts}:{body}").as_bytes());
    let digest = mac.finalize().into_bytes();
    let hex: String = digest.iter().map(|b| format!("{b:02x}")).collect();
    format!("v0={hex}")
}

/// One connection of the response-url receiver: each POST to `/r/<i>` is noted (keep-alive).
fn receive(conn: TcpStream, answers: &Answers) {
    let Ok(mut writer) = conn.try_clone() else {
        return;
    };
    let mut reader = BufReader::new(conn);
    loop {
        let mut request_line = String::new();
        if reader.read_line(&mut request_line).unwrap_or(0) == 0 {
            return;
        }
        let mut length = 0usize;
        loop {
            let mut line = String::new();
            if reader.read_line(&mut line).unwrap_or(0) == 0 {
                return;
            }
            let line = line.trim_end();
            if line.is_empty() {
                break;
            }
            if let Some((k, v)) = line.split_once(':') {
                if k.eq_ignore_ascii_case("content-length") {
                    length = v.trim().parse().unwrap_or(0);
                }
            }
        }
        let mut body = vec![0u8; length];
        if reader.read_exact(&mut body).is_err() {
            return;
        }
        let arrived = Instant::now();
        let number = request_line
            .split_whitespace()
            .nth(1)
            .and_then(|p| p.strip_prefix("/r/"))
            .and_then(|n| n.parse::<usize>().ok());
        if let Some(i) = number {
            let text = serde_json::from_slice::<serde_json::Value>(&body)
                .ok()
                .and_then(|v| v["text"].as_str().map(str::to_string))
                .unwrap_or_default();
            if let Ok(mut seen) = answers.seen.lock() {
                seen.insert(i, (arrived, text));
            }
            answers.arrived.notify_all();
        }
        if writer
            .write_all(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok")
            .is_err()
        {
            return;
        }
    }
}

struct Squall(Child);

impl Squall {
    fn stop(&mut self) {
        let _ = Command::new("kill")
            .args(["-TERM", &self.0.id().to_string()])
            .status();
        let _ = self.0.wait();
    }
}

impl Drop for Squall {
    fn drop(&mut self) {
        if matches!(self.0.try_wait(), Ok(None)) {
            let _ = self.0.kill();
            let _ = self.0.wait();
        }
    }
}

fn free_port() -> Result<u16> {
    let l = TcpListener::bind(("127.0.0.1", 0)).context("finding a free port")?;
    Ok(l.local_addr()?.port())
}

fn wait_ready(port: u16, log: &Path) -> Result<()> {
    let deadline = Instant::now() + Duration::from_secs(30);
    while Instant::now() < deadline {
        if reqwest::blocking::get(format!("http://127.0.0.1:{port}/healthz"))
            .is_ok_and(|r| r.status().is_success())
        {
            return Ok(());
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    bail!(
        "squall did not become ready within 30 s; its log:\n{}",
        std::fs::read_to_string(log).unwrap_or_default()
    )
}
