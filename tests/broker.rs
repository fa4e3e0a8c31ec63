//! Real RabbitMQ brokers for end-to-end tests, started and stopped by `scripts/rabbitmq`: each
//! with its own directory, ports, node name and epmd, never the machine's broker. A broker that
//! cannot start fails the test with the broker's log; no test is skipped for want of a broker.

use std::io::{Read, Write};
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use tempfile::TempDir;

use crate::harness::{free_port, repo};

/// The AMQP 0-9-1 protocol header a client opens a connection with.
const PROTOCOL_HEADER: &[u8] = b"AMQP\x00\x00\x09\x01";

/// A broker of this test process, stopped (and its directory removed) when dropped.
pub struct Broker {
    dir: TempDir,
    port: u16,
    url: String,
}

fn script() -> PathBuf {
    repo().join("scripts/rabbitmq")
}

/// Runs `scripts/rabbitmq start` and returns the URL it prints. The script's watchdog stops the
/// broker once this process is gone, should it end without dropping the broker.
fn start(dir: &Path, port: u16) -> String {
    let out = Command::new(script())
        .arg("start")
        .arg(dir)
        .arg(port.to_string())
        .arg("--watch")
        .arg(std::process::id().to_string())
        .output()
        .expect("scripts/rabbitmq runs");
    assert!(
        out.status.success(),
        "scripts/rabbitmq start {} {port} failed ({}):\n{}{}",
        dir.display(),
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).trim().to_string()
}

impl Broker {
    /// Starts a broker of its own in a fresh temporary directory, on a free port.
    pub fn private() -> Broker {
        Broker::private_with(|_| String::new())
    }

    /// A private broker with more settings in its `rabbitmq.conf`: `extra` is given the
    /// broker's directory (for files the settings name) and returns the lines.
    pub fn private_with(extra: impl FnOnce(&Path) -> String) -> Broker {
        let dir = tempfile::Builder::new()
            .prefix("squall-rabbitmq-")
            .tempdir()
            .expect("a temporary directory");
        let conf = extra(dir.path());
        if !conf.is_empty() {
            std::fs::write(dir.path().join("extra.conf"), conf).expect("extra.conf");
        }
        let port = free_port();
        let url = start(dir.path(), port);
        Broker { dir, port, url }
    }

    /// `amqp://guest:guest@127.0.0.1:PORT/%2f`.
    pub fn url(&self) -> String {
        self.url.clone()
    }

    pub fn port(&self) -> u16 {
        self.port
    }

    /// Kills the broker's Erlang VM with SIGKILL (no chance to flush or close anything) and
    /// waits until its AMQP port refuses connections.
    pub fn kill9(&mut self) {
        let pid_file = self.dir.path().join("beam.pid");
        let pid = std::fs::read_to_string(&pid_file).expect("scripts/rabbitmq recorded beam.pid");
        let status = Command::new("kill")
            .arg("-KILL")
            .arg(pid.trim())
            .status()
            .expect("kill runs");
        assert!(status.success(), "kill -KILL {} failed", pid.trim());
        let deadline = Instant::now() + Duration::from_secs(30);
        while TcpStream::connect(("127.0.0.1", self.port)).is_ok() {
            assert!(
                Instant::now() < deadline,
                "the broker's port {} still accepts connections 30 s after kill -9",
                self.port
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// Starts the broker again on the same directory, port and node name: what it had stored
    /// durably is there again.
    pub fn start_again(&mut self) {
        self.url = start(self.dir.path(), self.port);
    }
}

impl Drop for Broker {
    fn drop(&mut self) {
        match Command::new(script())
            .arg("stop")
            .arg(self.dir.path())
            .output()
        {
            Ok(out) if out.status.success() => {}
            Ok(out) => eprintln!(
                "scripts/rabbitmq stop {} failed ({}):\n{}",
                self.dir.path().display(),
                out.status,
                String::from_utf8_lossy(&out.stderr)
            ),
            Err(e) => eprintln!("scripts/rabbitmq stop does not run: {e}"),
        }
    }
}

/// The broker of this test process, when `SQUALL_TEST_AMQP` names none.
static SHARED: OnceLock<Broker> = OnceLock::new();

/// The URL of the broker the tests of a run share: `SQUALL_TEST_AMQP` when set (scripts/test
/// starts one broker for the whole run), else a private broker started once for this test
/// process, which its watchdog stops when the process ends (a static is never dropped).
pub fn shared_url() -> String {
    if let Some(url) = std::env::var("SQUALL_TEST_AMQP")
        .ok()
        .filter(|url| !url.is_empty())
    {
        return url;
    }
    SHARED.get_or_init(Broker::private).url()
}

/// A virtual host of its own on the shared broker, for one test: tests that share the broker
/// do not see each other's queues. Its URL.
pub fn shared_vhost(name: &str) -> String {
    let out = Command::new(script())
        .arg("vhost")
        .arg(shared_dir())
        .arg(name)
        .output()
        .expect("scripts/rabbitmq runs");
    assert!(
        out.status.success(),
        "scripts/rabbitmq vhost {name} failed ({}):\n{}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).trim().to_string()
}

/// Waits up to `secs` until `queue` of virtual host `vhost` on the shared broker holds at
/// least `count` messages (what a test proves was published while nobody consumed it).
pub fn wait_for_messages(vhost: &str, queue: &str, count: u64, secs: u64) {
    let deadline = Instant::now() + Duration::from_secs(secs);
    let mut last = String::new();
    while Instant::now() < deadline {
        let out = Command::new(script())
            .arg("messages")
            .arg(shared_dir())
            .arg(vhost)
            .arg(queue)
            .output()
            .expect("scripts/rabbitmq runs");
        last = String::from_utf8_lossy(&out.stdout).trim().to_string();
        if last.parse::<u64>().is_ok_and(|n| n >= count) {
            return;
        }
        std::thread::sleep(Duration::from_millis(200));
    }
    panic!("{queue} in {vhost} did not reach {count} messages within {secs} s (last: {last})");
}

/// The directory of the shared broker.
fn shared_dir() -> PathBuf {
    match std::env::var("SQUALL_TEST_AMQP_DIR")
        .ok()
        .filter(|d| !d.is_empty())
    {
        Some(dir) => PathBuf::from(dir),
        None => {
            shared_url();
            SHARED
                .get()
                .map(|b| b.dir.path().to_path_buf())
                .expect("the shared broker was started")
        }
    }
}

/// The port of an `amqp://user:password@host:port/vhost` URL.
fn port_of(url: &str) -> u16 {
    let authority = url
        .strip_prefix("amqp://")
        .and_then(|rest| rest.split('/').next())
        .unwrap_or_else(|| panic!("{url} is not an amqp:// URL"));
    let host_port = authority.rsplit('@').next().unwrap_or(authority);
    host_port
        .rsplit_once(':')
        .and_then(|(_, port)| port.parse().ok())
        .unwrap_or_else(|| panic!("{url} names no port"))
}

/// What 127.0.0.1:`port` answers to the protocol header (at most 8 bytes), or why it does not.
fn answer_to_protocol_header(port: u16) -> Result<Vec<u8>, String> {
    let mut stream =
        TcpStream::connect(("127.0.0.1", port)).map_err(|e| format!("connect: {e}"))?;
    stream
        .set_read_timeout(Some(Duration::from_secs(5)))
        .map_err(|e| e.to_string())?;
    stream
        .write_all(PROTOCOL_HEADER)
        .map_err(|e| format!("write: {e}"))?;
    let mut buf = [0u8; 8];
    let n = stream.read(&mut buf).map_err(|e| format!("read: {e}"))?;
    Ok(buf[..n].to_vec())
}

/// Asserts that a broker answers on `port` with the first frame of a connection: a method frame
/// (type 1, Connection.Start) on channel 0.
fn assert_answers_amqp(port: u16) {
    let answer = answer_to_protocol_header(port)
        .unwrap_or_else(|e| panic!("127.0.0.1:{port} does not answer AMQP: {e}"));
    assert!(
        answer.len() >= 3 && answer[0] == 1 && answer[1..3] == [0, 0],
        "127.0.0.1:{port} answered {answer:?}, not a method frame on channel 0"
    );
}

#[test]
fn a_private_broker_starts_is_killed_and_comes_back() {
    let mut broker = Broker::private();
    assert_eq!(
        broker.url(),
        format!("amqp://guest:guest@127.0.0.1:{}/%2f", broker.port())
    );
    assert_answers_amqp(broker.port());

    broker.kill9();
    assert!(
        TcpStream::connect(("127.0.0.1", broker.port())).is_err(),
        "the port of a killed broker accepts connections"
    );

    broker.start_again();
    assert_answers_amqp(broker.port());
}

#[test]
fn the_shared_broker_answers_amqp() {
    assert_answers_amqp(port_of(&shared_url()));
}
