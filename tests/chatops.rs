//! ChatOps end to end: signed Slack slash commands and Events API messages, Mattermost
//! outgoing webhooks and slash commands, sent to a real squall; the answers asserted where a
//! user sees them, posted to a Slack/Mattermost stand-in (`chat_sim`), and on the event stream
//! as st2's chat client (hubot) reads it.

use std::io::{Read, Write};
use std::path::Path;
use std::time::Duration;

use serde_json::{json, Value};

use crate::chat_sim::{
    mattermost_outgoing_body, mattermost_slash_body, slack_event_body, slack_headers,
    slash_command_body, unix_now, ChatSim, Posted,
};
use crate::harness::{one_action_pack, write, Squall};

const SECRET: &str = "8f742231b10e8888abcd99yyyzzz85a5";
const BOT_TOKEN: &str = "xoxb-test-token";
const MM_TOKEN: &str = "mm-hook-token";

/// A pack `t` with `t.hello` (answers "hello <who>"), `t.fail` (throws) and `t.count`
/// (an integer parameter), their aliases, and `t.guarded`, an alias only bob may run.
fn chat_pack(root: &Path) {
    let pack = root.join("t");
    one_action_pack(
        &pack,
        "t",
        "hello",
        "parameters:\n  who: {type: string, required: true}\n",
        "#{ greeting: `hello ${params.who}` }\n",
    );
    write(
        &pack,
        "actions/fail.yaml",
        "name: fail\nrunner_type: rhai\nentry_point: fail.rhai\nparameters:\n  why: {type: string, default: boom}\n",
    );
    write(&pack, "actions/fail.rhai", "throw params.why;\n");
    write(
        &pack,
        "actions/count.yaml",
        "name: count\nrunner_type: rhai\nentry_point: count.rhai\nparameters:\n  n: {type: integer, required: true}\n",
    );
    write(&pack, "actions/count.rhai", "params.n + 1\n");
    write(
        &pack,
        "actions/slow.yaml",
        "name: slow\nrunner_type: rhai\nentry_point: slow.rhai\nparameters:\n  s: {type: number, required: true}\n",
    );
    write(
        &pack,
        "actions/slow.rhai",
        "time::sleep(params.s); \"rested\"\n",
    );
    write(
        &pack,
        "aliases/slow.yaml",
        "name: slow\naction_ref: t.slow\nformats:\n  - \"slow {{ s }}\"\n",
    );
    write(
        &pack,
        "aliases/hello.yaml",
        "name: hello\naction_ref: t.hello\ndescription: Say hello.\nformats:\n  - \"hello {{ who }}\"\n",
    );
    write(
        &pack,
        "aliases/fail.yaml",
        "name: fail\naction_ref: t.fail\ndescription: Always fails.\nformats:\n  - \"fail {{ why }}\"\n",
    );
    write(
        &pack,
        "aliases/count.yaml",
        "name: count\naction_ref: t.count\ndescription: Count one more.\nformats:\n  - \"count {{ n }}\"\nresult:\n  format: \"{{ execution.parameters.n }} + 1 = {{ execution.result }}\"\n",
    );
    write(
        &pack,
        "aliases/guarded.yaml",
        "name: guarded\naction_ref: t.hello\ndescription: Bob's only.\nformats:\n  - \"guarded {{ who }}\"\nallow:\n  users: [bob]\n",
    );
}

struct Chat {
    _dir: tempfile::TempDir,
    s: Squall,
    sim: ChatSim,
}

fn start() -> Chat {
    let sim = ChatSim::start(BOT_TOKEN);
    let dir = tempfile::tempdir().expect("tempdir");
    let packs = dir.path().join("packs");
    chat_pack(&packs);
    let settings = dir.path().join("squall.yaml");
    std::fs::write(
        &settings,
        format!(
            "chatops:\n  slack:\n    signing_secret: {SECRET}\n    bot_token: {BOT_TOKEN}\n    api_url: {api}\n    users:\n      U1: alice\n      U2: bob\n  mattermost:\n    tokens: [{MM_TOKEN}]\n    incoming_webhook: {hook}\n    username: squall\n    users:\n      carol: carol\n",
            api = sim.slack_api(),
            hook = sim.mattermost_hook("h1"),
        ),
    )
    .expect("settings");
    let s = Squall::start(
        &dir.path().join("data"),
        &[packs],
        &["--config", settings.to_str().expect("utf-8")],
    );
    Chat { _dir: dir, s, sim }
}

impl Chat {
    /// A slash command `/squall <text>` from `user_id`, signed now.
    fn slash(&self, user_id: &str, text: &str, response_id: &str) -> (u16, Value) {
        let body = slash_command_body(
            user_id,
            "someone",
            "C1",
            "ops",
            "/squall",
            text,
            &self.sim.response_url(response_id),
        );
        self.signed("/api/v1/chatops/slack/commands", &body, unix_now(), SECRET)
    }

    fn signed(&self, path: &str, body: &str, ts: i64, secret: &str) -> (u16, Value) {
        let ct = if path.ends_with("events") {
            "application/json"
        } else {
            "application/x-www-form-urlencoded"
        };
        let headers = slack_headers(secret, ts, body, ct);
        let headers: Vec<(&str, &str)> = headers
            .iter()
            .map(|(k, v)| (k.as_str(), v.as_str()))
            .collect();
        self.s
            .request_with("POST", path, Some(body), &headers)
            .expect("request")
    }

    fn answer_at(&self, path: &str) -> Posted {
        self.sim.wait_for_post(20, |p| p.path == path)
    }

    fn executions(&self) -> Vec<Value> {
        let (_, list) = self.s.get("/api/v1/executions?limit=100");
        list.as_array().cloned().unwrap_or_default()
    }
}

fn text(p: &Posted) -> String {
    p.text().unwrap_or_default()
}

#[test]
fn a_slash_command_runs_its_alias_and_the_result_is_posted_back() {
    let c = start();
    let (status, ack) = c.slash("U1", "hello ops", "r1");
    assert_eq!(status, 200, "{ack}");
    assert_eq!(ack["response_type"], "in_channel", "{ack}");
    let ack_text = ack["text"].as_str().unwrap_or_default();
    assert!(ack_text.starts_with("Running t.hello (execution "), "{ack}");

    let answer = c.answer_at("/slack/response/r1");
    let t = text(&answer);
    assert!(
        t.starts_with("Action t.hello completed.\nstatus : succeeded"),
        "{t}"
    );
    assert!(t.contains("greeting : hello ops"), "{t}");
    assert_eq!(
        answer.body["response_type"], "in_channel",
        "{:?}",
        answer.body
    );

    // The execution says who asked, where, as st2 shows it, and runs as the mapped user.
    let e = c
        .executions()
        .into_iter()
        .find(|e| e["action"]["ref"] == "t.hello")
        .expect("the execution");
    assert_eq!(e["context"]["user"], "alice", "{e}");
    assert_eq!(e["context"]["api_user"], "someone", "{e}");
    assert_eq!(e["context"]["source_channel"], "ops", "{e}");
    assert_eq!(e["context"]["source"], "slack", "{e}");
    assert_eq!(e["context"]["action_alias_ref"], "t.hello", "{e}");
}

#[test]
fn a_failure_and_a_custom_result_format_are_answered_in_the_channel() {
    let c = start();
    assert_eq!(c.slash("U1", "fail disk-full", "f1").0, 200);
    let t = text(&c.answer_at("/slack/response/f1"));
    assert!(t.contains("status : failed"), "{t}");
    assert!(t.contains("disk-full"), "{t}");

    assert_eq!(c.slash("U2", "count 41", "n1").0, 200);
    assert_eq!(text(&c.answer_at("/slack/response/n1")), "41 + 1 = 42");
}

#[test]
fn commands_that_cannot_run_are_answered_with_why() {
    let c = start();
    // No alias takes it: the closest aliases' formats.
    let (_, a) = c.slash("U1", "helo ops", "x1");
    let t = a["text"].as_str().unwrap_or_default();
    assert!(t.contains("no command matches \"helo ops\""), "{a}");
    assert!(t.contains("hello {{ who }} — Say hello."), "{a}");
    // A parameter of the wrong type: which one, and why.
    let (_, a) = c.slash("U1", "count many", "x2");
    let t = a["text"].as_str().unwrap_or_default();
    assert!(t.contains("was not run") && t.contains("n:"), "{a}");
    // A user nobody mapped (and no default user).
    let (_, a) = c.slash("U9", "hello ops", "x3");
    assert!(
        a["text"]
            .as_str()
            .unwrap_or_default()
            .contains("may not run commands here"),
        "{a}"
    );
    // An alias only bob may run.
    let (_, a) = c.slash("U1", "guarded x", "x4");
    assert!(
        a["text"]
            .as_str()
            .unwrap_or_default()
            .contains("only bob may run it"),
        "{a}"
    );
    let (_, a) = c.slash("U2", "guarded x", "x5");
    assert!(
        a["text"]
            .as_str()
            .unwrap_or_default()
            .starts_with("Running"),
        "{a}"
    );
    c.answer_at("/slack/response/x5");
    // Only bob's ran (of what chat commands start: other tests' containers dying on this
    // machine's Docker daemon run the ops pack's rules here too).
    let ran: Vec<Value> = c
        .executions()
        .into_iter()
        .filter(|e| {
            let action = e["action"]["ref"].as_str().unwrap_or_default();
            action.starts_with("t.") || action == "chatops.post_message"
        })
        .collect();
    assert_eq!(
        ran.len(),
        2,
        "bob's command and its answer, nothing else: {ran:?}"
    );
}

#[test]
fn bad_signatures_stale_timestamps_and_replays_are_refused() {
    let c = start();
    let body = slash_command_body(
        "U1",
        "a",
        "C1",
        "ops",
        "/squall",
        "hello x",
        &c.sim.response_url("s1"),
    );
    let path = "/api/v1/chatops/slack/commands";
    let (status, e) = c.signed(path, &body, unix_now(), "not-the-secret");
    assert_eq!(status, 401, "{e}");
    let (status, e) = c.signed(path, &body, unix_now() - 600, SECRET);
    assert_eq!(status, 401, "{e}");
    let headers = slack_headers(
        SECRET,
        unix_now(),
        &body,
        "application/x-www-form-urlencoded",
    );
    let headers: Vec<(&str, &str)> = headers
        .iter()
        .map(|(k, v)| (k.as_str(), v.as_str()))
        .collect();
    let (status, _) =
        c.s.request_with("POST", path, Some(&body), &headers)
            .expect("request");
    assert_eq!(status, 200);
    let (status, e) =
        c.s.request_with("POST", path, Some(&body), &headers)
            .expect("request");
    assert_eq!(
        status, 401,
        "the same signed request again is a replay: {e}"
    );
    c.answer_at("/slack/response/s1");
    assert_eq!(c.executions().len(), 2, "one command ran, and its answer");
}

#[test]
fn events_api_mentions_are_acknowledged_and_answered_with_the_bot_token() {
    let c = start();
    let (status, v) = c.signed(
        "/api/v1/chatops/slack/events",
        r#"{"token":"x","challenge":"ch4ll3nge","type":"url_verification"}"#,
        unix_now(),
        SECRET,
    );
    assert_eq!((status, v["challenge"].as_str()), (200, Some("ch4ll3nge")));

    let body = slack_event_body("app_mention", "Ev1", "U1", "C7", "hello events");
    let (status, _) = c.signed("/api/v1/chatops/slack/events", &body, unix_now(), SECRET);
    assert_eq!(status, 200);
    let is_post =
        |p: &Posted, start: &str| p.path == "/api/chat.postMessage" && text(p).starts_with(start);
    let ack = c.sim.wait_for_post(20, |p| is_post(p, "Running t.hello"));
    assert_eq!(ack.authorization.as_deref(), Some("Bearer xoxb-test-token"));
    assert_eq!(ack.body["channel"], "C7");
    let answer = c
        .sim
        .wait_for_post(20, |p| is_post(p, "Action t.hello completed."));
    assert!(text(&answer).contains("hello events"), "{:?}", answer.body);

    // Slack's retry of the same event (signed again, a second later) runs nothing again.
    let (status, _) = c.signed(
        "/api/v1/chatops/slack/events",
        &body,
        unix_now() + 1,
        SECRET,
    );
    assert_eq!(status, 200);
    // A prefixed message works as a mention does.
    let body = slack_event_body("message", "Ev2", "U2", "C7", "!hello prefix");
    c.signed("/api/v1/chatops/slack/events", &body, unix_now(), SECRET);
    c.sim
        .wait_for_post(20, |p| text(p).contains("greeting : hello prefix"));
    let hellos = c
        .executions()
        .into_iter()
        .filter(|e| e["action"]["ref"] == "t.hello")
        .count();
    assert_eq!(hellos, 2, "the retried event ran once");
}

#[test]
fn mattermost_commands_are_answered_in_the_response_and_by_webhook() {
    let c = start();
    let body = mattermost_outgoing_body(MM_TOKEN, "carol", "town-square", "!", "!hello mm");
    let (status, a) =
        c.s.request_with("POST", "/api/v1/chatops/mattermost", Some(&body), &[])
            .expect("request");
    assert_eq!(status, 200, "{a}");
    assert!(
        a["text"]
            .as_str()
            .unwrap_or_default()
            .starts_with("Running t.hello"),
        "{a}"
    );
    let answer = c.answer_at("/mattermost/hooks/h1");
    assert!(text(&answer).contains("hello mm"), "{:?}", answer.body);
    assert_eq!(answer.body["channel"], "town-square", "{:?}", answer.body);

    let body = mattermost_slash_body(
        MM_TOKEN,
        "carol",
        "town-square",
        "/hello",
        "slash",
        &c.sim.mattermost_response_url("m2"),
    );
    let form = [("Content-Type", "application/x-www-form-urlencoded")];
    let (status, _) =
        c.s.request_with("POST", "/api/v1/chatops/mattermost", Some(&body), &form)
            .expect("request");
    assert_eq!(status, 200);
    assert!(text(&c.answer_at("/mattermost/response/m2")).contains("hello slash"));

    let body = mattermost_outgoing_body("wrong", "carol", "town-square", "!", "!hello mm");
    let (status, _) =
        c.s.request_with("POST", "/api/v1/chatops/mattermost", Some(&body), &[])
            .expect("request");
    assert_eq!(status, 401);
}

/// Reads server-sent events until one named `name` arrives; its data.
fn read_event(stream: &mut std::net::TcpStream, name: &str) -> Value {
    let mut seen = String::new();
    let marker = format!("event: {name}\n");
    let deadline = std::time::Instant::now() + Duration::from_secs(20);
    loop {
        assert!(
            std::time::Instant::now() < deadline,
            "no {name} within 20 s: {seen}"
        );
        if let Some(at) = seen.find(&marker) {
            let rest = &seen[at + marker.len()..];
            if let Some(end) = rest.find("\n\n") {
                let data: String = rest[..end]
                    .lines()
                    .filter_map(|l| l.strip_prefix("data: "))
                    .collect();
                return serde_json::from_str(&data).expect("event data is JSON");
            }
        }
        let mut buf = [0u8; 4096];
        let n = stream.read(&mut buf).expect("the stream goes on");
        assert!(n > 0, "the stream ended: {seen}");
        seen.push_str(&String::from_utf8_lossy(&buf[..n]));
    }
}

#[test]
fn hubots_alias_executions_are_announced_on_the_stream() {
    let c = start();
    let mut stream = std::net::TcpStream::connect(("127.0.0.1", c.s.port)).expect("connect");
    stream
        .set_read_timeout(Some(Duration::from_secs(20)))
        .expect("timeout");
    stream
        .write_all(b"GET /api/v1/stream HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n")
        .expect("send");
    // As hubot-stackstorm sends it.
    let (status, v) = c.s.post(
        "/api/v1/aliasexecution",
        r##"{"name": "hello", "format": "hello {{ who }}", "command": "hello hubot", "user": "stanley", "source_channel": "#ops", "notification_route": "hubot", "source_context": {"id": "m1"}}"##,
    );
    assert_eq!(status, 201, "{v}");
    let a = read_event(&mut stream, "st2.announcement__chatops");
    assert_eq!(a["channel"], "#ops", "{a}");
    assert_eq!(a["user"], "stanley", "{a}");
    assert_eq!(a["whisper"], false, "{a}");
    assert_eq!(a["context"]["id"], "m1", "{a}");
    assert!(
        a["message"]
            .as_str()
            .unwrap_or_default()
            .contains("greeting : hello hubot"),
        "{a}"
    );
}

#[test]
fn an_actions_notify_reaches_a_channel_through_a_rule() {
    let sim_dir = tempfile::tempdir().expect("tempdir");
    let packs = sim_dir.path().join("more");
    let pack = packs.join("n");
    one_action_pack(
        &pack,
        "n",
        "deploy",
        "parameters:\n  app: {type: string, required: true}\nnotify:\n  on-success:\n    message: \"deployed {{ action_parameters.app }}\"\n    routes: [ops]\n  on-failure:\n    routes: [ops]\n",
        "if params.app == \"bad\" { throw \"no\" } params.app\n",
    );
    write(
        &pack,
        "rules/tell_ops.yaml",
        "name: tell_ops\nenabled: true\ntrigger:\n  type: core.st2.generic.notifytrigger\ncriteria:\n  trigger.route: {type: equals, pattern: ops}\naction:\n  ref: chatops.post_message\n  parameters:\n    channel: \"#ops\"\n    message: \"{{ trigger.message }} ({{ trigger.status }})\"\n",
    );
    let sim = ChatSim::start(BOT_TOKEN);
    let settings = sim_dir.path().join("squall.yaml");
    std::fs::write(
        &settings,
        format!(
            "chatops:\n  slack:\n    signing_secret: s3cret\n    bot_token: {BOT_TOKEN}\n    api_url: {}\n",
            sim.slack_api()
        ),
    )
    .expect("settings");
    let s = Squall::start(
        &sim_dir.path().join("data"),
        &[packs],
        &["--config", settings.to_str().expect("utf-8")],
    );
    s.post(
        "/api/v1/executions",
        r#"{"action": "n.deploy", "parameters": {"app": "web"}}"#,
    );
    let posted = sim.wait_for_post(20, |p| text(p) == "deployed web (succeeded)");
    assert_eq!(posted.body["channel"], "#ops");
    s.post(
        "/api/v1/executions",
        r#"{"action": "n.deploy", "parameters": {"app": "bad"}}"#,
    );
    sim.wait_for_post(20, |p| text(p) == "Action n.deploy failed. (failed)");
}

/// squall killed (SIGKILL) while a chat command's action runs: after the restart the action,
/// which is not idempotent, is abandoned, and the channel is told so; nobody waits forever.
#[test]
fn a_command_cut_short_by_a_crash_is_answered_after_the_restart() {
    let mut c = start();
    assert_eq!(c.slash("U1", "slow 30", "k1").0, 200);
    c.s.wait_for("/api/v1/executions?action=t.slow", 20, |v| {
        v[0]["status"] == "running"
    });
    c.s.kill9();
    c.s.restart();
    let t = text(&c.answer_at("/slack/response/k1"));
    assert!(
        t.starts_with("Action t.slow completed.\nstatus : abandoned"),
        "{t}"
    );
}

#[test]
fn an_inquiry_is_answered_from_chat_by_a_user_it_allows() {
    let c = start();
    let (code, e) = c.s.post(
        "/api/v1/executions",
        r#"{"action": "core.ask", "parameters": {"users": ["alice"]}}"#,
    );
    assert_eq!(code, 201, "{e}");
    let id = e["id"].as_str().expect("id").to_string();
    c.s.wait_for(&format!("/api/v1/executions/{id}"), 20, |e| {
        e["status"] == "pending"
    });

    // bob (U2) is not among its users: told so at once, and it stays pending.
    let (status, ack) = c.slash("U2", &format!("respond {id} continue=true"), "q1");
    assert_eq!(status, 200, "{ack}");
    let said = ack["text"].as_str().unwrap_or_default();
    assert!(
        said.contains("not accepted") && said.contains("'bob'"),
        "{ack}"
    );
    // A response its schema refuses, with the reason.
    let (_, ack) = c.slash("U1", &format!("respond {id} continue=maybe"), "q2");
    assert!(
        ack["text"]
            .as_str()
            .unwrap_or_default()
            .contains("continue"),
        "{ack}"
    );
    let (_, e) = c.s.get(&format!("/api/v1/executions/{id}"));
    assert_eq!(e["status"], "pending", "{e}");

    // alice (U1), in the st2 pack's words.
    let (_, ack) = c.slash(
        "U1",
        &format!("st2 respond to inquiry {id} with {{\"continue\": true}}"),
        "q3",
    );
    assert!(
        ack["text"]
            .as_str()
            .unwrap_or_default()
            .starts_with(&format!("Your response to inquiry {id} was accepted")),
        "{ack}"
    );
    let e = c.s.wait_for(&format!("/api/v1/executions/{id}"), 20, |e| {
        e["status"] == "succeeded"
    });
    assert_eq!(e["result"]["response"], json!({"continue": true}), "{e}");
    assert!(e["log"].to_string().contains("responded by alice"), "{e}");
}
