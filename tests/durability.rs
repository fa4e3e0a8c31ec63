//! What a succeeded action did is never lost: `kill -9` of `squall run` at random points under
//! bursts of webhooks whose actions (plain, and a workflow's tasks) write the key-value store,
//! then checks of what a user sees after each restart: the keys the scripts wrote, the
//! executions' statuses, the instances' enforcements. Also claims racing around a crash, and a
//! client that sends a whole over-limit body before it reads the answer.

use std::collections::{HashMap, HashSet};
use std::time::{Duration, Instant};

use serde_json::Value;

use crate::harness::{is_terminal, repo, Squall};

fn start() -> (tempfile::TempDir, Squall) {
    let dir = tempfile::tempdir().expect("tempdir");
    let packs = [repo().join("tests/packs/durable")];
    let squall = Squall::start(&dir.path().join("data"), &packs, &[]);
    (dir, squall)
}

/// A xorshift generator seeded from the clock; the seed is printed so a failure can be replayed.
fn random() -> impl FnMut(u64) -> u64 {
    let mut seed = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_nanos() as u64)
        .unwrap_or(7)
        | 1;
    eprintln!("random seed {seed}");
    move |n| {
        seed ^= seed << 13;
        seed ^= seed >> 7;
        seed ^= seed << 17;
        seed % n
    }
}

/// Every execution of `action` (workflow tasks included), once all of them are terminal.
fn all_ended(s: &Squall, action: &str) -> Vec<Value> {
    let path = format!("/api/v1/executions?action={action}&limit=-1");
    let list = s.wait_for(&path, 60, |v| {
        v.as_array().is_some_and(|a| {
            a.iter()
                .all(|e| is_terminal(e["status"].as_str().unwrap_or("")))
        })
    });
    list.as_array().cloned().unwrap_or_default()
}

/// The key-value pairs under `prefix`, name to value.
fn keys(s: &Squall, prefix: &str) -> HashMap<String, String> {
    let (code, list) = s.get(&format!("/api/v1/keys?prefix={prefix}&limit=-1"));
    assert_eq!(code, 200, "{list}");
    list.as_array()
        .expect("a list of keys")
        .iter()
        .map(|k| {
            (
                k["name"].as_str().unwrap_or_default().to_string(),
                k["value"].as_str().unwrap_or_default().to_string(),
            )
        })
        .collect()
}

/// What scripts wrote agrees with what squall says of their executions: a succeeded
/// `durable.mark` has its key, holding its id; every key was written by an execution that
/// started (and so ended succeeded, or abandoned by a crash); every succeeded workflow has both
/// its tasks' keys.
fn assert_writes_match_results(s: &Squall) {
    // Workflows first: once they have all ended no task is created any more, so the keys read
    // after the list of executions were all written by executions in it.
    let (flows, marks, seen) = loop {
        let flows = all_ended(s, "durable.flow");
        let marks = all_ended(s, "durable.mark");
        let seen = keys(s, "seen.");
        if all_ended(s, "durable.flow").len() == flows.len()
            && all_ended(s, "durable.mark").len() == marks.len()
        {
            break (flows, marks, seen);
        }
    };
    let by_id: HashMap<&str, &Value> = marks
        .iter()
        .map(|e| (e["id"].as_str().unwrap_or_default(), e))
        .collect();
    for e in &marks {
        let item = e["parameters"]["item"].as_str().expect("item");
        let key = format!("seen.{item}");
        match e["status"].as_str().unwrap_or_default() {
            "succeeded" => assert_eq!(
                seen.get(&key).map(String::as_str),
                e["id"].as_str(),
                "{key} of a succeeded execution: {e}"
            ),
            "abandoned" => {}
            other => panic!("durable.mark ended {other}: {e}"),
        }
    }
    for (key, writer) in &seen {
        // The list is what the user sees first; an execution it leaves out is looked up by id,
        // and then said, so that a listing gap is not taken for a lost execution.
        let fetched;
        let e = match by_id.get(writer.as_str()) {
            Some(e) => *e,
            None => {
                let (code, e) = s.get(&format!("/api/v1/executions/{writer}"));
                assert_eq!(
                    code, 200,
                    "{key} was written by {writer}, which is not an execution: {e}"
                );
                eprintln!("{key}: its writer {writer} is not in the action's list: {e}");
                fetched = e;
                &fetched
            }
        };
        assert_eq!(
            e["parameters"]["item"]
                .as_str()
                .map(|i| format!("seen.{i}")),
            Some(key.clone()),
            "{e}"
        );
        let status = e["status"].as_str().unwrap_or_default();
        assert!(
            status == "succeeded" || status == "abandoned",
            "{key} written by an execution that is {status}: {e}"
        );
    }
    for w in flows.iter().filter(|w| w["status"] == "succeeded") {
        let item = w["parameters"]["item"].as_str().expect("item");
        for task in ["first", "second"] {
            assert!(
                seen.contains_key(&format!("seen.{item}.{task}")),
                "workflow {} succeeded without its {task} task's key",
                w["id"]
            );
        }
    }
}

/// Twenty kills under bursts from four clients; after each restart every succeeded action's
/// write is there, no write is there whose execution never started, every acknowledged
/// instance has its enforcement, and nothing stays running. A fifth of the webhooks start a
/// workflow whose two tasks write keys.
#[test]
fn what_succeeded_actions_wrote_survives_kill_9() {
    let (_dir, mut s) = start();
    let mut random = random();
    let mut total = 0;
    for round in 0..20 {
        let port = s.port;
        let kill_after = Duration::from_millis(30 + random(300));
        let senders: Vec<_> = (0..4)
            .map(|client| {
                std::thread::spawn(move || {
                    let http = Squall::client_for(port);
                    let mut ok = Vec::new();
                    for i in 0..80 {
                        let hook = if i % 5 == 0 { "flow" } else { "mark" };
                        let body = format!(r#"{{"item": "r{round}c{client}n{i}"}}"#);
                        let path = format!("/api/v1/webhooks/{hook}");
                        match http.request("POST", &path, Some(&body)) {
                            Ok((202, v)) => {
                                ok.push(v["id"].as_str().unwrap_or_default().to_string())
                            }
                            Ok(_) | Err(_) => break,
                        }
                    }
                    ok
                })
            })
            .collect();
        std::thread::sleep(kill_after);
        s.kill9();
        let acknowledged: Vec<String> = senders
            .into_iter()
            .flat_map(|t| t.join().expect("sender"))
            .collect();
        total += acknowledged.len();
        s.restart();
        s.assert_enforced_once(&acknowledged);
        assert_writes_match_results(&s);
    }
    let marks = all_ended(&s, "durable.mark");
    let abandoned = marks.iter().filter(|e| e["status"] == "abandoned").count();
    eprintln!(
        "{total} webhooks acknowledged over 20 kills; {} key-writing executions, {abandoned} abandoned",
        marks.len()
    );
    assert!(total > 0);
}

/// A server on 127.0.0.1 that records the JSON body of every request it gets and answers 200:
/// what actions did outside squall.
fn reports() -> (String, std::sync::Arc<std::sync::Mutex<Vec<Value>>>) {
    use std::io::{BufRead, BufReader, Read, Write};
    let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    let url = format!("http://{}/report", listener.local_addr().expect("address"));
    let got = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
    let record = got.clone();
    std::thread::spawn(move || {
        for stream in listener.incoming().flatten() {
            let mut reader = BufReader::new(stream);
            let mut length = 0;
            loop {
                let mut line = String::new();
                if reader.read_line(&mut line).unwrap_or(0) == 0 {
                    break;
                }
                let lower = line.to_ascii_lowercase();
                if let Some(n) = lower.strip_prefix("content-length:") {
                    length = n.trim().parse().unwrap_or(0);
                }
                if line == "\r\n" {
                    break;
                }
            }
            let mut body = vec![0; length];
            if reader.read_exact(&mut body).is_ok() {
                if let Ok(v) = serde_json::from_slice::<Value>(&body) {
                    record.lock().expect("reports").push(v);
                }
            }
            let _ = reader
                .get_mut()
                .write_all(b"HTTP/1.1 200 OK\r\ncontent-length: 0\r\nconnection: close\r\n\r\n");
        }
    });
    (url, got)
}

/// Pairs of executions race to claim one key while squall is killed at random points; the
/// action is idempotent, so one in flight at the kill runs again and must find its own claim.
/// Of each pair exactly one ever holds the key: whoever acted on a claim (told the report
/// server) holds it after the restarts, at most one execution acted or won, and a winner that
/// wrote what the claim guards (`holder.<lock>.<id>`) holds the claim.
#[test]
fn of_two_claims_racing_around_a_crash_exactly_one_ever_holds_the_key() {
    let (_dir, mut s) = start();
    let (report, reported) = reports();
    let mut random = random();
    let rounds = 16;
    for round in 0..rounds {
        let port = s.port;
        let posts: Vec<_> = (0..2)
            .map(|_| {
                let body = format!(r#"{{"lock": "lock{round}", "report": "{report}", "hold": 0}}"#);
                std::thread::spawn(move || {
                    Squall::client_for(port)
                        .request("POST", "/api/v1/webhooks/claim", Some(&body))
                        .ok()
                })
            })
            .collect();
        std::thread::sleep(Duration::from_millis(random(25)));
        s.kill9();
        for p in posts {
            let _ = p.join();
        }
        s.restart();
    }
    let claims = all_ended(&s, "durable.claim");
    let locks = keys(&s, "lock");
    let holders = keys(&s, "holder.");
    let reported = reported.lock().expect("reports").clone();
    let mut won = 0;
    for round in 0..rounds {
        let lock = format!("lock{round}");
        let held = locks.get(&lock).map(String::as_str);
        let acted: HashSet<&str> = reported
            .iter()
            .filter(|r| r["lock"] == lock.as_str())
            .filter_map(|r| r["execution"].as_str())
            .collect();
        assert!(acted.len() <= 1, "{lock} acted on by {acted:?}");
        if let Some(actor) = acted.iter().next() {
            assert_eq!(held, Some(*actor), "{lock}: {actor} acted on its claim");
        }
        let mine: Vec<&Value> = claims
            .iter()
            .filter(|e| e["parameters"]["lock"] == lock.as_str())
            .collect();
        let winners: HashSet<&str> = mine
            .iter()
            .filter(|e| e["status"] == "succeeded" && e["result"] == "won")
            .filter_map(|e| e["id"].as_str())
            .collect();
        assert!(winners.len() <= 1, "{lock} won by {winners:?}");
        if let Some(winner) = winners.iter().next() {
            won += 1;
            assert_eq!(held, Some(*winner), "{lock}");
            assert!(
                acted.contains(winner),
                "{lock}: {winner} won without acting"
            );
        }
        let wrote: Vec<&String> = holders
            .keys()
            .filter(|k| k.starts_with(&format!("holder.{lock}.")))
            .collect();
        assert!(wrote.len() <= 1, "{lock}: two holders wrote {wrote:?}");
        if let Some(key) = wrote.first() {
            let holder = key.rsplit('.').next().unwrap_or_default();
            assert_eq!(held, Some(holder), "{key} was written after its claim");
        }
        for e in mine.iter().filter(|e| e["result"] == "lost") {
            assert_ne!(held, e["id"].as_str(), "{lock}: {e}");
        }
    }
    eprintln!(
        "{rounds} rounds of two racing claims: {won} won by a succeeded execution, {} acted on",
        reported.len()
    );
}

/// An execution claims a key and acts on it, and squall is killed at once, before the
/// execution ends; after the restart another execution claims the same key. The claim was
/// durable before its script went on: the second loses, and only the first ever acted. Run
/// again after the crash (idempotent), the first gets its own claim back and finishes; not
/// idempotent, it is abandoned and keeps the claim.
#[test]
fn a_claim_acted_on_is_never_lost_to_another_execution() {
    let (_dir, mut s) = start();
    let (report, reported) = reports();
    for round in 0..8 {
        let hook = if round % 2 == 0 {
            "claim"
        } else {
            "claim_once"
        };
        let lock = format!("acted{round}");
        let first = format!(r#"{{"lock": "{lock}", "report": "{report}", "hold": 2}}"#);
        let (code, _) = s.post(&format!("/api/v1/webhooks/{hook}"), &first);
        assert_eq!(code, 202);
        let deadline = Instant::now() + Duration::from_secs(20);
        let actor = loop {
            let got = reported.lock().expect("reports").clone();
            if let Some(r) = got.iter().find(|r| r["lock"] == lock.as_str()) {
                break r["execution"].as_str().unwrap_or_default().to_string();
            }
            assert!(Instant::now() < deadline, "{lock}: nobody acted");
            std::thread::sleep(Duration::from_millis(2));
        };
        s.kill9();
        s.restart();
        let second = format!(r#"{{"lock": "{lock}", "report": "{report}", "hold": 0}}"#);
        let (code, ti) = s.post(&format!("/api/v1/webhooks/{hook}"), &second);
        assert_eq!(code, 202);
        let ti = ti["id"].as_str().expect("instance id").to_string();
        let other = s.executions_of(&ti, 1).remove(0);
        assert_eq!(other["result"], "lost", "{lock}: {other}");
        let first = s.wait_for(&format!("/api/v1/executions/{actor}"), 30, |e| {
            is_terminal(e["status"].as_str().unwrap_or(""))
        });
        let want = if hook == "claim" {
            "succeeded"
        } else {
            "abandoned"
        };
        assert_eq!(first["status"], want, "{lock}: {first}");
        let (_, held) = s.get(&format!("/api/v1/keys/{lock}"));
        assert_eq!(held["value"], actor.as_str(), "{lock}");
        let acted: HashSet<String> = reported
            .lock()
            .expect("reports")
            .iter()
            .filter(|r| r["lock"] == lock.as_str())
            .filter_map(|r| r["execution"].as_str().map(str::to_string))
            .collect();
        assert_eq!(acted, HashSet::from([actor.clone()]), "{lock}");
    }
}

/// What the key-value API answered 2xx to is on disk: `kill -9` right after each answer loses
/// no write, no TTL and no delete.
#[test]
fn key_value_api_writes_are_durable_at_their_answer() {
    let (_dir, mut s) = start();
    for round in 0..5 {
        let put = |name: &str, body: &str| {
            let (code, v) = s
                .request("PUT", &format!("/api/v1/keys/{name}"), Some(body))
                .expect("PUT");
            assert_eq!(code, 200, "{name}: {v}");
        };
        put(
            &format!("api{round}"),
            &format!(r#"{{"value": "v{round}"}}"#),
        );
        put(&format!("ttl{round}"), r#"{"value": "t", "ttl": 3600}"#);
        if round > 0 {
            let (code, v) = s
                .request("DELETE", &format!("/api/v1/keys/api{}", round - 1), None)
                .expect("DELETE");
            assert_eq!(code, 204, "{v}");
        }
        s.kill9();
        s.restart();
        let (code, v) = s.get(&format!("/api/v1/keys/api{round}"));
        assert_eq!(
            (code, v["value"].as_str()),
            (200, Some(format!("v{round}").as_str())),
            "{v}"
        );
        let (code, v) = s.get(&format!("/api/v1/keys/ttl{round}"));
        assert_eq!(code, 200, "{v}");
        assert!(v["expire_timestamp"].is_string(), "the TTL was kept: {v}");
        if round > 0 {
            let (code, v) = s.get(&format!("/api/v1/keys/api{}", round - 1));
            assert_eq!(code, 404, "the delete was kept: {v}");
        }
    }
}

/// Python's urllib sends a whole body before it reads the answer: over the limit, it gets the
/// 413 and its JSON error rather than a reset connection, on webhooks and the rest of the API.
#[test]
fn a_client_that_sends_its_whole_body_first_gets_the_413() {
    let (_dir, s) = start();
    let script = r#"
import json, sys, urllib.request, urllib.error
url, size = sys.argv[1], int(sys.argv[2])
body = b'{"item": "' + b'x' * size + b'"}'
request = urllib.request.Request(url, data=body, headers={"Content-Type": "application/json"})
try:
    with urllib.request.urlopen(request) as r:
        print(r.status)
except urllib.error.HTTPError as e:
    print(e.code)
    print(json.loads(e.read())["error"])
"#;
    for (path, size, limit) in [
        (
            "/api/v1/webhooks/mark",
            3 * 1024 * 1024,
            "webhook_body_limit",
        ),
        ("/api/v1/executions", 5 * 1024 * 1024, "the API's limit"),
    ] {
        let url = format!("http://127.0.0.1:{}{path}", s.port);
        let out = std::process::Command::new("python3")
            .args(["-c", script, &url, &size.to_string()])
            .output()
            .expect("python3 runs");
        let stdout = String::from_utf8_lossy(&out.stdout);
        let stderr = String::from_utf8_lossy(&out.stderr);
        let mut lines = stdout.lines();
        assert_eq!(lines.next(), Some("413"), "{path}: {stdout}{stderr}");
        let error = lines.next().unwrap_or_default();
        assert!(
            error.contains("larger than") && error.contains(limit),
            "{path}: {error}"
        );
    }
    // Nothing was accepted, and squall goes on serving.
    let (_, list) = s.get("/api/v1/executions?action=durable.mark");
    assert_eq!(list.as_array().map(Vec::len), Some(0), "{list}");
    assert_eq!(s.get("/healthz").0, 200);
}
