//! Starting and stopping a real `squall run` for end-to-end tests: a temporary data dir, the
//! bundled packs plus test packs, a free port on 127.0.0.1, and small HTTP helpers.

use std::io::{Read, Write};
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::Value;

pub struct Squall {
    pub child: Child,
    pub port: u16,
    pub data_dir: PathBuf,
    pub packs: Vec<PathBuf>,
    pub extra_args: Vec<String>,
    /// Environment variables squall is started with.
    pub env: Vec<(String, String)>,
    log: PathBuf,
}

pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("a free port")
}

pub fn repo() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

pub fn write(root: &Path, rel: &str, content: &str) {
    let path = root.join(rel);
    std::fs::create_dir_all(path.parent().expect("has a parent")).expect("mkdir");
    std::fs::write(path, content).expect("write");
}

/// Runs the `squall` binary without a server (from the repository's root) and waits for it.
pub fn squall(args: &[&str]) -> std::process::Output {
    Command::new(env!("CARGO_BIN_EXE_squall"))
        .args(args)
        .current_dir(env!("CARGO_MANIFEST_DIR"))
        .output()
        .expect("squall runs")
}

/// A pack `pack` in `root` with one Rhai action `action` running `script`; `meta` is added to
/// the action's metadata (`timeout: 1\n`, parameters...).
pub fn one_action_pack(root: &Path, pack: &str, action: &str, meta: &str, script: &str) {
    write(root, "pack.yaml", &format!("ref: {pack}\nname: {pack}\n"));
    write(
        root,
        &format!("actions/{action}.yaml"),
        &format!("name: {action}\nrunner_type: rhai\nentry_point: {action}.rhai\n{meta}"),
    );
    write(root, &format!("actions/{action}.rhai"), script);
}

impl Squall {
    /// Starts squall on `data_dir` with the bundled packs plus `packs`, and waits until ready.
    pub fn start(data_dir: &Path, packs: &[PathBuf], extra: &[&str]) -> Squall {
        let mut s = Squall::start_stopped(data_dir, packs, extra);
        s.spawn();
        s.wait_ready();
        s
    }

    /// [`Squall::start`] with only `packs` (not the bundled ones), the first of them first.
    pub fn start_only(data_dir: &Path, packs: &[PathBuf], extra: &[&str]) -> Squall {
        let mut s = Squall::start_stopped(data_dir, &[], extra);
        s.packs = packs.to_vec();
        s.spawn();
        s.wait_ready();
        s
    }

    /// The settings of a squall, not yet started.
    fn start_stopped(data_dir: &Path, packs: &[PathBuf], extra: &[&str]) -> Squall {
        let mut all = vec![repo().join("packs")];
        all.extend(packs.iter().cloned());
        let mut s = Squall {
            child: Command::new("true").spawn().expect("spawn"),
            port: free_port(),
            data_dir: data_dir.to_path_buf(),
            packs: all,
            extra_args: extra.iter().map(|s| s.to_string()).collect(),
            env: Vec::new(),
            log: data_dir.with_extension("log"),
        };
        let _ = s.child.wait();
        s
    }

    /// [`Squall::start`] with environment variables.
    pub fn start_with_env(
        data_dir: &Path,
        packs: &[PathBuf],
        extra: &[&str],
        env: &[(&str, &str)],
    ) -> Squall {
        let mut s = Squall::start_stopped(data_dir, packs, extra);
        s.env = env
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        s.spawn();
        s.wait_ready();
        s
    }

    fn spawn(&mut self) {
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_squall"));
        cmd.arg("run")
            .arg("--data-dir")
            .arg(&self.data_dir)
            .arg("--listen")
            .arg(format!("127.0.0.1:{}", self.port))
            .arg("--workers")
            .arg("2");
        for p in &self.packs {
            cmd.arg("--packs").arg(p);
        }
        cmd.args(&self.extra_args);
        cmd.envs(self.env.iter().map(|(k, v)| (k, v)));
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&self.log)
            .expect("log file");
        cmd.env_remove("SQUALL_API_KEY")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(log);
        self.child = cmd.spawn().expect("squall starts");
    }

    pub fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    pub fn wait_ready(&mut self) {
        let deadline = Instant::now() + Duration::from_secs(20);
        while Instant::now() < deadline {
            if let Ok(Some(status)) = self.child.try_wait() {
                panic!(
                    "squall exited with {status} before it was ready:\n{}",
                    self.log()
                );
            }
            if let Ok((200, _)) = self.request("GET", "/healthz", None) {
                return;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        panic!("squall was not ready within 20 s:\n{}", self.log());
    }

    /// Kills squall with SIGKILL (no chance to clean up) and waits for it to be gone.
    pub fn kill9(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    /// Sends SIGTERM and waits for the exit status.
    pub fn terminate(&mut self) -> std::process::ExitStatus {
        let _ = Command::new("kill")
            .arg("-TERM")
            .arg(self.child.id().to_string())
            .status();
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            if let Ok(Some(status)) = self.child.try_wait() {
                return status;
            }
            assert!(
                Instant::now() < deadline,
                "squall did not stop after SIGTERM"
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    pub fn restart(&mut self) {
        self.spawn();
        self.wait_ready();
    }

    /// A raw HTTP/1.1 request; returns the status and the body as JSON (or a JSON string).
    pub fn request(
        &self,
        method: &str,
        path: &str,
        body: Option<&str>,
    ) -> std::io::Result<(u16, Value)> {
        self.request_with(method, path, body, &[])
    }

    pub fn request_with(
        &self,
        method: &str,
        path: &str,
        body: Option<&str>,
        headers: &[(&str, &str)],
    ) -> std::io::Result<(u16, Value)> {
        Squall::client_for(self.port).request_with(method, path, body, headers)
    }

    /// A client for a squall on `port`, usable from another thread.
    pub fn client_for(port: u16) -> Client {
        Client { port }
    }
}

/// A plain HTTP client for one squall.
pub struct Client {
    port: u16,
}

impl Client {
    pub fn request(
        &self,
        method: &str,
        path: &str,
        body: Option<&str>,
    ) -> std::io::Result<(u16, Value)> {
        self.request_with(method, path, body, &[])
    }

    pub fn request_with(
        &self,
        method: &str,
        path: &str,
        body: Option<&str>,
        headers: &[(&str, &str)],
    ) -> std::io::Result<(u16, Value)> {
        let mut stream = TcpStream::connect(("127.0.0.1", self.port))?;
        stream.set_read_timeout(Some(Duration::from_secs(30)))?;
        let body = body.unwrap_or("");
        let mut req = format!(
            "{method} {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\nContent-Length: {}\r\n",
            body.len()
        );
        // JSON unless the caller says otherwise.
        if !headers
            .iter()
            .any(|(k, _)| k.eq_ignore_ascii_case("content-type"))
        {
            req.push_str("Content-Type: application/json\r\n");
        }
        for (k, v) in headers {
            req.push_str(&format!("{k}: {v}\r\n"));
        }
        req.push_str("\r\n");
        req.push_str(body);
        stream.write_all(req.as_bytes())?;
        let mut raw = Vec::new();
        stream.read_to_end(&mut raw)?;
        let text = String::from_utf8_lossy(&raw).to_string();
        let (head, rest) = text.split_once("\r\n\r\n").unwrap_or((&text, ""));
        let status: u16 = head
            .split_whitespace()
            .nth(1)
            .and_then(|s| s.parse().ok())
            .unwrap_or(0);
        let body = if head
            .to_ascii_lowercase()
            .contains("transfer-encoding: chunked")
        {
            dechunk(rest)
        } else {
            rest.to_string()
        };
        let value = serde_json::from_str(&body).unwrap_or(Value::String(body));
        Ok((status, value))
    }
}

impl Squall {
    pub fn get(&self, path: &str) -> (u16, Value) {
        self.request("GET", path, None).expect("request")
    }

    pub fn post(&self, path: &str, body: &str) -> (u16, Value) {
        self.request("POST", path, Some(body)).expect("request")
    }

    /// Polls `path` until `done` holds, or panics after `secs` seconds with the last answer.
    pub fn wait_for(&self, path: &str, secs: u64, done: impl Fn(&Value) -> bool) -> Value {
        let deadline = Instant::now() + Duration::from_secs(secs);
        let mut last = Value::Null;
        while Instant::now() < deadline {
            if let Ok((200, v)) = self.request("GET", path, None) {
                if done(&v) {
                    return v;
                }
                last = v;
            }
            std::thread::sleep(Duration::from_millis(25));
        }
        panic!(
            "{path}: condition not met within {secs} s; last answer: {last}\nlog:\n{}",
            self.log()
        );
    }

    /// Waits for the executions started by a trigger instance to reach a final status.
    /// Each of `instances` gets processed (within 60 s) and has exactly one enforcement, which
    /// requested an execution.
    pub fn assert_enforced_once(&self, instances: &[String]) {
        let deadline = Instant::now() + Duration::from_secs(60);
        for id in instances {
            loop {
                let (_, ti) = self.get(&format!("/api/v1/triggerinstances/{id}"));
                if ti["status"] == "processed" {
                    break;
                }
                assert!(
                    Instant::now() < deadline,
                    "instance {id} not processed: {ti}"
                );
                std::thread::sleep(Duration::from_millis(20));
            }
            let (_, enf) = self.get(&format!("/api/v1/ruleenforcements?trigger_instance={id}"));
            let enf = enf.as_array().cloned().unwrap_or_default();
            assert_eq!(enf.len(), 1, "instance {id}: {enf:?}");
            assert!(
                enf[0]["execution_id"].is_string(),
                "instance {id} has no execution: {enf:?}"
            );
        }
    }

    pub fn executions_of(&self, trigger_instance: &str, count: usize) -> Vec<Value> {
        let v = self.wait_for(
            &format!("/api/v1/executions?trigger_instance={trigger_instance}"),
            20,
            |v| {
                v.as_array().is_some_and(|a| {
                    a.len() >= count
                        && a.iter()
                            .all(|e| is_terminal(e["status"].as_str().unwrap_or("")))
                })
            },
        );
        v.as_array().cloned().unwrap_or_default()
    }
}

pub fn is_terminal(status: &str) -> bool {
    matches!(
        status,
        "succeeded" | "failed" | "timeout" | "canceled" | "abandoned"
    )
}

fn dechunk(mut s: &str) -> String {
    let mut out = String::new();
    while let Some((size, rest)) = s.split_once("\r\n") {
        let n = usize::from_str_radix(size.trim(), 16).unwrap_or(0);
        if n == 0 || rest.len() < n {
            break;
        }
        out.push_str(&rest[..n]);
        s = rest[n..].trim_start_matches("\r\n");
    }
    out
}

impl Drop for Squall {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
