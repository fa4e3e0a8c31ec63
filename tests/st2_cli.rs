//! StackStorm's own `st2` CLI (st2client 3.9.0 from PyPI, which `scripts/test` installs into a
//! virtualenv and names in `SQUALL_ST2`) against a `squall run` it starts: what an operator
//! does every day, with and without `--auth`, asserted on what the CLI prints and its exit
//! code. Each squall start serves many commands, since every `st2` call starts Python.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::Value;

use crate::harness::{repo, Squall};

/// Where `scripts/test` installs st2's CLI unless `SQUALL_ST2` says otherwise.
fn st2_binary() -> PathBuf {
    let path = std::env::var_os("SQUALL_ST2")
        .map(PathBuf::from)
        .unwrap_or_else(|| repo().join("target/st2client-venv/bin/st2"));
    assert!(
        path.is_file(),
        "StackStorm's st2 CLI is missing at {}: run ./scripts/test, which installs st2client 3.9.0 \
         into a virtualenv and sets SQUALL_ST2 (or set SQUALL_ST2 to an st2 binary)",
        path.display()
    );
    path
}

/// st2's CLI pointed at one squall, with a home of its own (it writes `~/.st2`).
pub(crate) struct St2 {
    bin: PathBuf,
    home: PathBuf,
    port: u16,
    key: Option<String>,
    /// The API's and the stream's URLs: squall's (`/api/v1`) or st2's own (`/v1`,
    /// `/stream/v1`).
    api: &'static str,
    stream: &'static str,
}

/// What one `st2` command printed (stdout then stderr, colours removed) and its exit code.
pub(crate) struct Said {
    code: Option<i32>,
    text: String,
}

impl Said {
    pub(crate) fn ok(self, what: &str) -> String {
        assert_eq!(self.code, Some(0), "st2 {what}:\n{}", self.text);
        self.text
    }

    pub(crate) fn failed(self, what: &str) -> String {
        assert_eq!(self.code, Some(1), "st2 {what}:\n{}", self.text);
        self.text
    }
}

impl St2 {
    pub(crate) fn new(dir: &Path, s: &Squall, key: Option<&str>) -> St2 {
        let home = dir.join("st2-home");
        std::fs::create_dir_all(&home).expect("st2's home");
        St2 {
            bin: st2_binary(),
            home,
            port: s.port,
            key: key.map(str::to_string),
            api: "/api/v1",
            stream: "/api/v1",
        }
    }

    /// Pointed at st2's own paths, as an st2 configuration left unchanged would be.
    fn with_st2_paths(mut self) -> St2 {
        self.api = "/v1";
        self.stream = "/stream/v1";
        self
    }

    pub(crate) fn run(&self, args: &[&str]) -> Said {
        let base = format!("http://127.0.0.1:{}", self.port);
        let mut cmd = Command::new(&self.bin);
        cmd.args(args)
            .env("HOME", &self.home)
            .env("ST2_API_URL", format!("{base}{}", self.api))
            .env("ST2_STREAM_URL", format!("{base}{}", self.stream))
            .env("ST2_AUTH_URL", format!("{base}/auth/v1"))
            // Wide tables: a wrapped cell would split ids.
            .env("COLUMNS", "300")
            .env_remove("ST2_API_KEY")
            .env_remove("ST2_AUTH_TOKEN")
            .env_remove("ST2_BASE_URL")
            .env_remove("ST2_CONFIG_FILE")
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        if let Some(key) = &self.key {
            cmd.env("ST2_API_KEY", key);
        }
        let child = cmd.spawn().expect("st2 starts");
        let out = wait_with_deadline(child, Duration::from_secs(60), args);
        Said {
            code: out.status.code(),
            text: without_colours(&format!(
                "{}{}",
                String::from_utf8_lossy(&out.stdout),
                String::from_utf8_lossy(&out.stderr)
            )),
        }
    }
}

/// The output of a child, or a panic naming the command once `limit` has passed.
fn wait_with_deadline(
    child: std::process::Child,
    limit: Duration,
    args: &[&str],
) -> std::process::Output {
    let id = child.id();
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let _ = tx.send(child.wait_with_output());
    });
    match rx.recv_timeout(limit) {
        Ok(out) => out.expect("st2's output"),
        Err(_) => {
            let _ = Command::new("kill").arg("-9").arg(id.to_string()).status();
            panic!("st2 {args:?} did not end within {limit:?}");
        }
    }
}

/// Text without ANSI colour sequences (st2 colours statuses and attribute names).
fn without_colours(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    let mut chars = text.chars();
    while let Some(c) = chars.next() {
        if c == '\u{1b}' {
            // ESC [ parameters, up to a final letter.
            for c in chars.by_ref() {
                if c.is_ascii_alphabetic() {
                    break;
                }
            }
        } else {
            out.push(c);
        }
    }
    out
}

/// The id `st2 run -a` says to look at.
/// Starts `e2e.ticker` (`n` ticks) with `st2 run -a`, follows it with `st2 execution tail` to
/// its last tick and its end, and returns its id.
fn tail_a_ticker(st2: &St2, n: u32) -> String {
    let n_arg = format!("n={n}");
    let text = st2
        .run(&["run", "-a", "e2e.ticker", &n_arg, "every=0.25"])
        .ok("run -a e2e.ticker");
    let ticking = async_id(&text);
    let text = st2
        .run(&["execution", "tail", &ticking])
        .ok("execution tail");
    assert!(text.contains(&format!("tick {}", n - 1)), "{text}");
    assert!(text.contains("has completed (status=succeeded)"), "{text}");
    ticking
}

fn async_id(text: &str) -> String {
    text.split("st2 execution get ")
        .nth(1)
        .and_then(|rest| rest.split_whitespace().next())
        .unwrap_or_else(|| panic!("no execution id in:\n{text}"))
        .to_string()
}

/// The first JSON value in `text` (what `st2 ... -j` prints after a blank line).
fn first_json(text: &str) -> Value {
    let start = text
        .find(['{', '['])
        .unwrap_or_else(|| panic!("no JSON in:\n{text}"));
    serde_json::Deserializer::from_str(&text[start..])
        .into_iter::<Value>()
        .next()
        .and_then(Result::ok)
        .unwrap_or_else(|| panic!("no JSON in:\n{text}"))
}

fn start(dir: &Path, extra: &[&str]) -> Squall {
    Squall::start(&dir.join("data"), &[repo().join("tests/packs/e2e")], extra)
}

/// A webhook to `greet` (what `examples.greet_on_webhook` listens to): its status and body.
fn greet_hook(s: &Squall, key: Option<&str>, name: &str) -> (u16, Value) {
    let headers: Vec<(&str, &str)> = key.map(|k| ("St2-Api-Key", k)).into_iter().collect();
    s.request_with(
        "POST",
        "/api/v1/webhooks/greet",
        Some(&format!(r#"{{"name": "{name}"}}"#)),
        &headers,
    )
    .expect("request")
}

/// The rule that greets on webhooks, disabled with `st2 rule disable`: the webhook no longer
/// fires it, and `st2 rule list --disabled` lists it.
fn disable_greeting_rule(st2: &St2, s: &Squall, key: Option<&str>) {
    let text = st2
        .run(&["rule", "disable", "examples.greet_on_webhook"])
        .ok("rule disable");
    assert!(
        text.lines()
            .any(|l| l.contains("enabled") && l.contains("False")),
        "{text}"
    );
    let (code, body) = greet_hook(s, key, "nobody");
    assert_eq!(code, 404, "a disabled rule is not fired: {body}");
    let text = st2.run(&["rule", "list", "--disabled"]).ok("rule list");
    assert!(text.contains("examples.greet_on_webhook"), "{text}");
}

#[test]
fn st2_cli_runs_and_inspects_without_auth() {
    let dir = tempfile::tempdir().expect("tempdir");
    let s = start(dir.path(), &[]);
    let st2 = St2::new(dir.path(), &s, None);

    // Actions and runs.
    let text = st2
        .run(&["action", "list", "-p", "examples"])
        .ok("action list");
    assert!(text.contains("examples.greet"), "{text}");
    assert!(text.contains("Greet someone"), "{text}");
    let text = st2
        .run(&["action", "get", "examples.greet"])
        .ok("action get");
    assert!(
        text.contains("runner_type") && text.contains("rhai"),
        "{text}"
    );

    let text = st2
        .run(&["run", "examples.greet", "name=ops", "times=2", "loud=true"])
        .ok("run");
    assert!(text.contains("status: succeeded"), "{text}");
    assert!(text.contains("action.ref: examples.greet"), "{text}");
    assert!(
        text.contains("HELLO, OPS"),
        "typed parameters reach the action: {text}"
    );

    let text = st2
        .run(&["run", "-a", "examples.greet", "name=later"])
        .ok("run -a");
    assert!(text.contains("st2 execution tail "), "{text}");
    let greeted = async_id(&text);

    let out = st2
        .run(&["run", "-j", "core.echo", "message=as json"])
        .ok("run -j");
    let json = first_json(&out);
    assert_eq!(json["status"], "succeeded", "{out}");
    assert_eq!(json["result"]["stdout"], "as json", "{out}");
    assert_eq!(json["action"]["ref"], "core.echo", "{out}");

    // A failed action: st2 exits 1 with the result shown.
    let text = st2.run(&["run", "e2e.fail"]).failed("run e2e.fail");
    assert!(text.contains("status: failed"), "{text}");
    assert!(text.contains("this action always fails"), "{text}");

    // A workflow: its result, then its tasks.
    let text = st2.run(&["run", "e2e.flow", "name=ops"]).ok("run e2e.flow");
    assert!(text.contains("shouted: HELLO OPS"), "{text}");
    let tasks: Vec<&str> = text.lines().filter(|l| l.contains("core.echo")).collect();
    assert_eq!(tasks.len(), 2, "the workflow's two tasks: {text}");
    assert!(
        tasks[0].contains("greet") && tasks[1].contains("shout"),
        "{text}"
    );

    // Executions: top-level only, newest last.
    let (_, flows) = s.get("/api/v1/executions?action=e2e.flow");
    let flow = flows[0]["id"]
        .as_str()
        .expect("the workflow's id")
        .to_string();
    let (_, children) = s.get(&format!("/api/v1/executions?parent={flow}"));
    let child = children[0]["id"].as_str().expect("a task's id").to_string();
    let text = st2.run(&["execution", "list"]).ok("execution list");
    assert!(text.contains(&greeted) && text.contains(&flow), "{text}");
    assert!(
        !text.contains(&child),
        "a workflow's tasks are not listed: {text}"
    );
    assert!(text.contains("examples.greet"), "{text}");
    let text = st2
        .run(&["execution", "list", "--action", "e2e.fail"])
        .ok("execution list --action");
    assert!(
        text.contains("failed") && !text.contains(&greeted),
        "{text}"
    );

    // The CLI shows only what it asks for: the API itself keeps and drops attributes.
    let (_, listed) = s.get("/api/v1/executions/?limit=1&include_attributes=action.ref,status");
    assert_eq!(
        listed[0]
            .as_object()
            .map(|o| o.keys().cloned().collect::<Vec<_>>()),
        Some(vec![
            "id".to_string(),
            "action".to_string(),
            "status".to_string()
        ]),
        "{listed}"
    );
    assert_eq!(
        listed[0]["action"].as_object().map(|o| o.len()),
        Some(1),
        "{listed}"
    );
    let (_, one) = s.get(&format!(
        "/api/v1/executions/{greeted}?exclude_attributes=result,log"
    ));
    assert!(
        one.get("result").is_none() && one.get("log").is_none(),
        "{one}"
    );
    assert_eq!(one["status"], "succeeded", "{one}");
    let text = st2
        .run(&["execution", "list", "-n", "1"])
        .ok("execution list -n 1");
    assert!(
        text.contains("Only one action execution is displayed"),
        "{text}"
    );

    let text = st2.run(&["execution", "get", &greeted]).ok("execution get");
    assert!(text.contains("status: succeeded"), "{text}");
    assert!(text.contains("hello, later"), "{text}");
    let text = st2
        .run(&["execution", "get", "01NOSUCHEXECUTION"])
        .failed("execution get of nothing");
    assert!(text.contains("not found"), "{text}");

    let text = st2
        .run(&["execution", "re-run", &greeted, "name=again"])
        .ok("execution re-run");
    assert!(text.contains("status: succeeded"), "{text}");
    assert!(text.contains("hello, again"), "{text}");

    // Tail of a running execution: its output over the stream, then its end.
    let text = st2
        .run(&["run", "-a", "e2e.ticker", "n=12", "every=0.25"])
        .ok("run -a e2e.ticker");
    let ticking = async_id(&text);
    let (_, e) = s.get(&format!("/api/v1/executions/{ticking}"));
    assert!(
        !crate::harness::is_terminal(e["status"].as_str().unwrap_or("")),
        "still running when tailed: {e}"
    );
    let text = st2
        .run(&["execution", "tail", &ticking])
        .ok("execution tail");
    assert!(text.contains("tick 11"), "{text}");
    assert!(
        text.contains(&format!(
            "Execution {ticking} has completed (status=succeeded)."
        )),
        "{text}"
    );

    // Cancel: a running one, one that ended, one that does not exist.
    let text = st2
        .run(&["run", "-a", "core.sleep", "delay=30"])
        .ok("run -a core.sleep");
    let sleeping = async_id(&text);
    let text = st2
        .run(&["execution", "cancel", &sleeping])
        .ok("execution cancel");
    assert!(
        text.contains(&format!("action execution with id {sleeping} canceled.")),
        "{text}"
    );
    s.wait_for(&format!("/api/v1/executions/{sleeping}"), 20, |e| {
        e["status"] == "canceled"
    });
    let text = st2
        .run(&["execution", "cancel", &greeted])
        .ok("cancel ended");
    assert!(
        text.contains("Action cannot be canceled. State of action execution is succeeded."),
        "{text}"
    );
    let text = st2
        .run(&["execution", "cancel", "nope"])
        .ok("cancel nothing");
    assert!(text.contains("no execution nope"), "{text}");
    assert!(!text.contains("canceled."), "{text}");

    // Rules: listed, read, disabled (a webhook no longer fires it) and enabled again.
    let text = st2.run(&["rule", "list", "-p", "examples"]).ok("rule list");
    assert!(text.contains("examples.greet_on_webhook"), "{text}");
    let text = st2
        .run(&["rule", "list", "-p", "examples", "--iftt"])
        .ok("rule list --iftt");
    assert!(
        text.contains("core.st2.webhook") && text.contains("examples.greet"),
        "{text}"
    );
    let text = st2
        .run(&["rule", "get", "examples.greet_on_webhook"])
        .ok("rule get");
    assert!(text.contains("rule:examples:greet_on_webhook"), "{text}");
    // A rule's PUT changes `enabled` only: its other fields are its file's.
    let (_, mut rule) = s.get("/api/v1/rules/examples.greet_on_webhook");
    rule["criteria"] = serde_json::json!({});
    let (code, body) = s
        .request(
            "PUT",
            "/api/v1/rules/examples.greet_on_webhook",
            Some(&rule.to_string()),
        )
        .expect("request");
    assert_eq!(code, 400, "{body}");
    assert!(
        body["faultstring"]
            .as_str()
            .is_some_and(|f| f.contains("field 'criteria' differs from the rule's file")),
        "{body}"
    );
    disable_greeting_rule(&st2, &s, None);
    let text = st2
        .run(&["rule", "enable", "examples.greet_on_webhook"])
        .ok("rule enable");
    assert!(
        text.lines()
            .any(|l| l.contains("enabled") && l.contains("True")),
        "{text}"
    );
    let (code, hook) = greet_hook(&s, None, "hooked");
    assert_eq!(code, 202, "{hook}");
    let instance = hook["id"].as_str().expect("instance id").to_string();
    let fired = s.executions_of(&instance, 1);
    assert_eq!(fired[0]["status"], "succeeded", "{fired:?}");

    // What the webhook gave: its trigger instance and the rule's enforcement.
    let text = st2
        .run(&["trigger", "list", "-p", "core"])
        .ok("trigger list");
    assert!(text.contains("core.webhook"), "{text}");
    let text = st2
        .run(&["trigger-instance", "list"])
        .ok("trigger-instance list");
    assert!(text.contains(&instance), "{text}");
    let text = st2
        .run(&["trigger-instance", "get", &instance])
        .ok("trigger-instance get");
    assert!(
        text.contains("webhook/greet") && text.contains("hooked"),
        "{text}"
    );
    let text = st2
        .run(&[
            "rule-enforcement",
            "list",
            "--rule",
            "examples.greet_on_webhook",
        ])
        .ok("rule-enforcement list");
    assert!(text.contains(&instance), "{text}");
    assert!(text.contains("examples.greet_on_webhook"), "{text}");

    // Keys: st2's default scope for lists is `all`, squall's keys are the system scope's.
    let text = st2.run(&["key", "set", "greeting", "hello"]).ok("key set");
    assert!(text.contains("st2kv.system"), "{text}");
    let text = st2.run(&["key", "list"]).ok("key list");
    assert!(
        text.contains("greeting") && text.contains("hello"),
        "{text}"
    );
    let text = st2
        .run(&["key", "get", "greeting", "-s", "st2kv.system"])
        .ok("key get");
    assert!(text.contains("hello"), "{text}");
    let text = st2
        .run(&["key", "list", "-s", "user"])
        .ok("key list -s user");
    assert!(text.contains("No matching items found"), "{text}");
    let text = st2
        .run(&["key", "set", "mine", "x", "-s", "user"])
        .failed("key set -s user");
    assert!(
        text.contains("squall keeps the system scope only"),
        "{text}"
    );
    let text = st2.run(&["key", "delete", "greeting"]).ok("key delete");
    assert!(text.contains("successfully deleted"), "{text}");
    let text = st2
        .run(&["key", "get", "greeting"])
        .failed("key get deleted");
    assert!(text.contains("not found"), "{text}");

    // An st2 configuration left on st2's own paths: /v1 and /stream/v1.
    let st2_paths = St2::new(dir.path(), &s, None).with_st2_paths();
    tail_a_ticker(&st2_paths, 6);

    // Packs, sensors, who is asking, and st2's login.
    let text = st2.run(&["pack", "list"]).ok("pack list");
    assert!(text.contains("examples") && text.contains("e2e"), "{text}");
    let text = st2.run(&["pack", "get", "examples"]).ok("pack get");
    assert!(text.contains("Small examples"), "{text}");
    let text = st2.run(&["sensor", "list"]).ok("sensor list");
    for sensor in ["docker.events", "marathon.events", "mesos.master"] {
        assert!(text.contains(sensor), "{sensor}: {text}");
    }
    let text = st2.run(&["whoami"]).ok("whoami");
    assert!(text.contains(r#"Currently logged in as "api""#), "{text}");
    let text = st2.run(&["login", "admin", "-p", "secret"]).failed("login");
    assert!(text.contains("squall does not issue tokens"), "{text}");
    assert!(text.contains("ST2_API_KEY"), "{text}");
}

#[test]
fn st2_cli_with_an_api_key_against_squall_with_auth() {
    let dir = tempfile::tempdir().expect("tempdir");
    let mut s = start(dir.path(), &["--auth"]);
    // The first key, made from this machine.
    let (code, created) = s.post("/api/v1/apikeys", "{}");
    assert_eq!(code, 201, "{created}");
    let key = created["key"].as_str().expect("key").to_string();
    let key_id = created["id"].as_str().expect("key id").to_string();

    // Without a key, squall's message reaches the user.
    let without = St2::new(dir.path(), &s, None);
    let text = without
        .run(&["action", "list"])
        .failed("action list without key");
    assert!(text.contains("401"), "{text}");
    assert!(text.contains("MESSAGE: an API key is required"), "{text}");
    let text = without
        .run(&["login", "admin", "-p", "secret"])
        .failed("login");
    assert!(text.contains("squall does not issue tokens"), "{text}");

    let st2 = St2::new(dir.path(), &s, Some(&key));
    let text = st2.run(&["whoami"]).ok("whoami");
    assert!(text.contains(r#"Currently logged in as "admin""#), "{text}");
    assert!(text.contains("api key"), "{text}");
    let text = st2.run(&["apikey", "list"]).ok("apikey list");
    assert!(text.contains(&key_id) && text.contains("admin"), "{text}");
    let text = st2.run(&["action", "list", "-p", "core"]).ok("action list");
    assert!(text.contains("core.echo"), "{text}");
    let text = st2.run(&["action", "get", "core.echo"]).ok("action get");
    assert!(text.contains("core.echo"), "{text}");

    let text = st2.run(&["run", "examples.greet", "name=ops"]).ok("run");
    assert!(text.contains("status: succeeded"), "{text}");
    assert!(text.contains("hello, ops"), "{text}");
    assert!(text.contains("context.user: admin"), "{text}");
    let out = st2
        .run(&["run", "-j", "core.echo", "message=keyed"])
        .ok("run -j");
    assert_eq!(first_json(&out)["context"]["user"], "admin", "{out}");
    // The stream takes the key in its query string (st2's CLI sends no header there).
    let ticking = tail_a_ticker(&st2, 8);
    let text = st2.run(&["execution", "list"]).ok("execution list");
    assert!(text.contains(&ticking) && text.contains("admin"), "{text}");
    let text = st2.run(&["execution", "get", &ticking]).ok("execution get");
    assert!(text.contains("tick 3"), "{text}");
    let text = st2
        .run(&["execution", "re-run", &ticking, "n=1", "-a"])
        .ok("execution re-run -a");
    let again = async_id(&text);
    let rerun = s
        .request_with(
            "GET",
            &format!("/api/v1/executions/{again}"),
            None,
            &[("St2-Api-Key", &key)],
        )
        .expect("request")
        .1;
    assert_eq!(rerun["parameters"]["n"], 1, "{rerun}");
    let text = st2
        .run(&["execution", "cancel", &ticking])
        .ok("execution cancel");
    assert!(
        text.contains("State of action execution is succeeded."),
        "{text}"
    );

    // A rule disabled stays disabled across a restart.
    disable_greeting_rule(&st2, &s, Some(&key));
    s.terminate();
    s.restart();
    let st2 = St2::new(dir.path(), &s, Some(&key));
    let text = st2
        .run(&["rule", "list", "--disabled"])
        .ok("rule list --disabled");
    assert!(text.contains("examples.greet_on_webhook"), "{text}");
    let (code, body) = greet_hook(&s, Some(&key), "after restart");
    assert_eq!(code, 404, "still disabled after a restart: {body}");
    let (code, body) = s
        .request_with(
            "POST",
            "/api/v1/packs/reload",
            None,
            &[("St2-Api-Key", &key)],
        )
        .expect("request");
    assert_eq!(code, 200, "{body}");
    let (code, body) = greet_hook(&s, Some(&key), "after a reload");
    assert_eq!(code, 404, "still disabled after a reload: {body}");
    let text = st2
        .run(&["rule", "get", "examples.greet_on_webhook"])
        .ok("rule get");
    assert!(
        text.lines()
            .any(|l| l.contains("enabled") && l.contains("False")),
        "{text}"
    );
    st2.run(&["rule", "enable", "examples.greet_on_webhook"])
        .ok("rule enable");
    let (code, hook) = greet_hook(&s, Some(&key), "keyed");
    assert_eq!(code, 202, "{hook}");
    let instance = hook["id"].as_str().expect("instance id").to_string();

    // The rest of what an operator reads, with the key.
    let text = st2.run(&["rule", "list"]).ok("rule list");
    assert!(text.contains("ops.autoheal"), "{text}");
    let text = st2.run(&["trigger", "list"]).ok("trigger list");
    assert!(text.contains("core.webhook"), "{text}");
    let text = st2
        .run(&["trigger-instance", "list"])
        .ok("trigger-instance list");
    assert!(text.contains(&instance), "{text}");
    let text = st2
        .run(&["trigger-instance", "get", &instance])
        .ok("trigger-instance get");
    assert!(text.contains("keyed"), "{text}");
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let text = st2
            .run(&["rule-enforcement", "list"])
            .ok("rule-enforcement list");
        if text.contains(&instance) {
            break;
        }
        assert!(Instant::now() < deadline, "no enforcement listed:\n{text}");
        std::thread::sleep(Duration::from_millis(100));
    }
    st2.run(&["key", "set", "region", "eu-west"]).ok("key set");
    let text = st2.run(&["key", "list", "-s", "system"]).ok("key list");
    assert!(
        text.contains("region") && text.contains("eu-west"),
        "{text}"
    );
    let text = st2.run(&["key", "get", "region"]).ok("key get");
    assert!(text.contains("eu-west"), "{text}");
    let text = st2.run(&["key", "delete", "region"]).ok("key delete");
    assert!(text.contains("successfully deleted"), "{text}");
    let text = st2.run(&["pack", "list"]).ok("pack list");
    assert!(text.contains("examples"), "{text}");
    let text = st2.run(&["pack", "get", "ops"]).ok("pack get");
    assert!(text.contains("ops"), "{text}");
    let text = st2
        .run(&["sensor", "list", "-p", "docker"])
        .ok("sensor list");
    assert!(
        text.contains("docker.events") && !text.contains("mesos.master"),
        "{text}"
    );
}
