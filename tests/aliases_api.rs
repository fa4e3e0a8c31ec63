//! st2's action-alias API on a running squall (`/api/v1/actionalias`, its `match` and `help`),
//! asserted on status codes and JSON as hubot and `st2 action-alias` read them.

use serde_json::{json, Value};

use crate::harness::{one_action_pack, write, Squall};

/// A pack `chat` (action `chat.deploy`) with three aliases: `deploy` (a plain format and one
/// with a display), `redeploy` (whose format overlaps `deploy`'s) and `hidden` (disabled).
fn chat_pack(root: &std::path::Path) {
    let pack = root.join("chat");
    one_action_pack(
        &pack,
        "chat",
        "deploy",
        "parameters:\n  app: {type: string, required: true}\n  env: {type: string, default: staging}\n",
        "42\n",
    );
    write(
        &pack,
        "aliases/deploy.yaml",
        "name: deploy\naction_ref: chat.deploy\ndescription: Deploy an app.\nformats:\n  - \"deploy {{ app }}\"\n  - display: \"ship <app> to <env>\"\n    representation:\n      - \"ship {{ app }} to {{ env }}\"\n",
    );
    write(
        &pack,
        "aliases/redeploy.yaml",
        "name: redeploy\naction_ref: chat.deploy\ndescription: Deploy again.\nformats:\n  - \"deploy {{ app }} now\"\n",
    );
    write(
        &pack,
        "aliases/hidden.yaml",
        "name: hidden\naction_ref: chat.deploy\nenabled: false\nformats:\n  - \"Deploy secretly {{ app }}\"\n",
    );
}

fn start() -> (tempfile::TempDir, Squall) {
    let dir = tempfile::tempdir().expect("tempdir");
    let packs = dir.path().join("packs");
    chat_pack(&packs);
    let s = Squall::start(&dir.path().join("data"), &[packs], &[]);
    (dir, s)
}

fn refs(list: &Value) -> Vec<&str> {
    list.as_array()
        .expect("a list")
        .iter()
        .map(|a| a["ref"].as_str().expect("ref"))
        .collect()
}

#[test]
fn aliases_are_listed_and_shown_as_st2_shows_them() {
    let (_dir, s) = start();

    let (status, list) = s.get("/api/v1/actionalias");
    assert_eq!(status, 200, "{list}");
    assert_eq!(
        refs(&list),
        [
            "cdos.history",
            "cdos.restart",
            "cdos.scale",
            "cdos.service",
            "chat.deploy",
            "chat.hidden",
            "chat.redeploy",
            "examples.greet"
        ]
    );

    let (status, greet) = s.get("/api/v1/actionalias/examples.greet");
    assert_eq!(status, 200, "{greet}");
    assert_eq!(
        greet,
        json!({
            "id": "examples.greet",
            "ref": "examples.greet",
            "uid": "action_alias:examples:greet",
            "name": "greet",
            "pack": "examples",
            "description": "Greet someone from chat.",
            "enabled": true,
            "action_ref": "examples.greet",
            "formats": [
                "greet {{ name }}",
                {
                    "display": "say hello to <name> <times> times",
                    "representation": ["say hello to {{ name }} {{ times }} times"],
                },
            ],
            "ack": {
                "enabled": true,
                "format": "Greeting {{ execution.parameters.name }}...",
                "append_url": false,
            },
            "result": {"enabled": true, "format": "{{ execution.result.lines | join('\n') }}"},
            "extra": {},
            "metadata_file": "aliases/greet.yaml",
        })
    );

    let (_, hidden) = s.get("/api/v1/actionalias/chat.hidden");
    assert_eq!(hidden["enabled"], false);
    assert!(hidden.get("ack").is_none(), "{hidden}");

    let (_, by_pack) = s.get("/api/v1/actionalias?pack=chat");
    assert_eq!(
        refs(&by_pack),
        ["chat.deploy", "chat.hidden", "chat.redeploy"]
    );
    let (_, by_name) = s.get("/api/v1/actionalias?pack=chat&name=redeploy");
    assert_eq!(refs(&by_name), ["chat.redeploy"]);
    let (_, none) = s.get("/api/v1/actionalias?pack=nosuchpack");
    assert_eq!(none, json!([]));

    let (status, missing) = s.get("/api/v1/actionalias/chat.nosuch");
    assert_eq!(status, 404, "{missing}");
    assert_eq!(
        missing["faultstring"],
        "Resource with a reference or id \"chat.nosuch\" not found"
    );
}

#[test]
fn a_command_matches_one_alias_or_is_refused_with_st2s_message() {
    let (_dir, s) = start();

    let (status, m) = s.post("/api/v1/actionalias/match", r#"{"command": "greet Ada"}"#);
    assert_eq!(status, 200, "{m}");
    assert_eq!(m["actionalias"]["ref"], "examples.greet");
    assert_eq!(m["actionalias"]["action_ref"], "examples.greet");
    assert_eq!(m["display"], "greet {{ name }}");
    assert_eq!(m["representation"], "greet {{ name }}");

    let (status, m) = s.post(
        "/api/v1/actionalias/match",
        r#"{"command": "ship web to prod"}"#,
    );
    assert_eq!(status, 200, "{m}");
    assert_eq!(m["actionalias"]["ref"], "chat.deploy");
    assert_eq!(m["display"], "ship <app> to <env>");
    assert_eq!(m["representation"], "ship {{ app }} to {{ env }}");

    let (status, err) = s.post("/api/v1/actionalias/match", r#"{"command": "dance"}"#);
    assert_eq!(status, 400, "{err}");
    assert_eq!(err["faultstring"], "Command 'dance' matched no patterns");

    // Both `deploy {{ app }}` and `deploy {{ app }} now` take it.
    let (status, err) = s.post(
        "/api/v1/actionalias/match",
        r#"{"command": "deploy web now"}"#,
    );
    assert_eq!(status, 400, "{err}");
    assert_eq!(
        err["faultstring"],
        "Command 'deploy web now' matched more than 1 pattern"
    );

    // A disabled alias matches nothing.
    let (status, err) = s.post(
        "/api/v1/actionalias/match",
        r#"{"command": "Deploy secretly web"}"#,
    );
    assert_eq!(status, 400, "{err}");
    assert_eq!(
        err["faultstring"],
        "Command 'Deploy secretly web' matched no patterns"
    );

    let (status, _) = s.post("/api/v1/actionalias/match", r#"{"text": "greet Ada"}"#);
    assert!(
        (400..500).contains(&status),
        "a body without a command is refused, got {status}"
    );
}

#[test]
fn help_lists_enabled_displays_filtered_and_paged_as_st2_does() {
    let (_dir, s) = start();

    let (status, all) = s.post(
        "/api/v1/actionalias/help",
        r#"{"filter": "", "pack": "", "limit": 0, "offset": 0}"#,
    );
    assert_eq!(status, 200, "{all}");
    assert_eq!(
        all,
        json!({
            "available": 9,
            "helpstrings": [
                {"pack": "cdos", "display": "cdos history <appid>", "description": "An app's scaling history (ops.history.<appid>), newest first."},
                {"pack": "cdos", "display": "cdos restart <appid>", "description": "Restart an app's containers (Docker: one after the other; Marathon: a restart deployment)."},
                {"pack": "cdos", "display": "cdos scale <appid> <instances>", "description": "Scale an app to <instances> (within ops's min_instances..max_instances), recorded in its history."},
                {"pack": "cdos", "display": "cdos <appid>", "description": "Show an app's containers (hosts, states) and its console, Kibana and Grafana links."},
                {"pack": "chat", "display": "deploy {{ app }}", "description": "Deploy an app."},
                {"pack": "chat", "display": "ship <app> to <env>", "description": "Deploy an app."},
                {"pack": "chat", "display": "deploy {{ app }} now", "description": "Deploy again."},
                {"pack": "examples", "display": "greet {{ name }}", "description": "Greet someone from chat."},
                {"pack": "examples", "display": "say hello to <name> <times> times", "description": "Greet someone from chat."},
            ],
        })
    );

    let displays = |v: &Value| -> Vec<String> {
        v["helpstrings"]
            .as_array()
            .expect("helpstrings")
            .iter()
            .map(|h| h["display"].as_str().expect("display").to_string())
            .collect()
    };

    // The filter is a regular expression searched ignoring case.
    let (_, found) = s.post(
        "/api/v1/actionalias/help",
        r#"{"filter": "DEPLOY", "pack": "chat"}"#,
    );
    assert_eq!(found["available"], 2);
    assert_eq!(
        displays(&found),
        ["deploy {{ app }}", "deploy {{ app }} now"]
    );

    // `available` counts every match; the page is `offset`, `limit`.
    let (_, page) = s.post(
        "/api/v1/actionalias/help",
        r#"{"pack": "chat", "limit": 1, "offset": 1}"#,
    );
    assert_eq!(page["available"], 3);
    assert_eq!(displays(&page), ["ship <app> to <env>"]);
    let (_, first) = s.post("/api/v1/actionalias/help", r#"{"limit": 2}"#);
    assert_eq!(first["available"], 9);
    assert_eq!(
        displays(&first),
        ["cdos history <appid>", "cdos restart <appid>"]
    );

    // st2's own form: a GET with the same parameters in the query.
    let (status, q) =
        s.get("/api/v1/actionalias/help?filter=hello&pack=examples&limit=10&offset=0");
    assert_eq!(status, 200, "{q}");
    assert_eq!(q["available"], 1);
    assert_eq!(displays(&q), ["say hello to <name> <times> times"]);
    let (status, everything) = s.post("/api/v1/actionalias/help", "");
    assert_eq!(status, 200, "{everything}");
    assert_eq!(everything["available"], 9);

    let (status, err) = s.post("/api/v1/actionalias/help", r#"{"filter": "("}"#);
    assert_eq!(status, 400, "{err}");
    assert!(
        err["faultstring"]
            .as_str()
            .expect("faultstring")
            .starts_with("help filter: invalid regular expression"),
        "{err}"
    );
}

#[test]
fn an_alias_execution_runs_the_action_with_cast_parameters_and_the_chat_context() {
    let (_dir, s) = start();

    let (status, r) = s.post(
        "/api/v1/aliasexecution",
        r##"{"name": "greet", "format": "say hello to {{ name }} {{ times }} times",
            "command": "say hello to Ada 2 times tags=web,api", "user": "ada",
            "source_channel": "#ops", "notification_route": "hubot"}"##,
    );
    assert_eq!(status, 201, "{r}");
    assert_eq!(r["actionalias"]["ref"], "examples.greet");
    assert_eq!(r["message"], "Greeting Ada...");
    let e = &r["execution"];
    assert_eq!(e["action"]["ref"], "examples.greet");
    // Strings cast to the action's types: an integer, and an array split on commas.
    assert_eq!(e["parameters"]["name"], "Ada");
    assert_eq!(e["parameters"]["times"], 2);
    assert_eq!(e["parameters"]["tags"], json!(["web", "api"]));
    assert_eq!(e["context"]["action_alias_ref"], "examples.greet");
    assert_eq!(e["context"]["api_user"], "ada");
    assert_eq!(e["context"]["source_channel"], "#ops");

    let id = e["id"].as_str().expect("execution id");
    let done = s.wait_for(&format!("/api/v1/executions/{id}"), 20, |v| {
        v["status"] == "succeeded"
    });
    assert_eq!(done["result"]["lines"], json!(["hello, Ada", "hello, Ada"]));
    assert_eq!(done["result"]["tags"], json!(["web", "api"]));
    // The chat context is kept with the execution, not only in the first answer.
    assert_eq!(done["context"]["api_user"], "ada");
    assert_eq!(done["context"]["source_channel"], "#ops");

    // match_and_execute finds the alias and format itself.
    let (status, r) = s.post(
        "/api/v1/aliasexecution/match_and_execute",
        r##"{"command": "greet Bo", "user": "bo", "source_channel": "#dev"}"##,
    );
    assert_eq!(status, 201, "{r}");
    let results = r["results"].as_array().expect("results");
    assert_eq!(results.len(), 1, "{r}");
    assert_eq!(results[0]["message"], "Greeting Bo...");
    assert_eq!(results[0]["execution"]["parameters"]["name"], "Bo");
    assert_eq!(results[0]["execution"]["context"]["api_user"], "bo");
    assert_eq!(results[0]["actionalias"]["ref"], "examples.greet");

    // An alias without an ack answers no message.
    let (status, r) = s.post(
        "/api/v1/aliasexecution",
        r#"{"name": "deploy", "format": "deploy {{ app }}", "command": "deploy web"}"#,
    );
    assert_eq!(status, 201, "{r}");
    assert!(r.get("message").is_none(), "{r}");
    assert_eq!(r["execution"]["parameters"]["app"], "web");
    assert_eq!(r["execution"]["parameters"]["env"], "staging");
}

#[test]
fn an_alias_execution_that_cannot_run_is_refused_with_the_reason() {
    let (_dir, s) = start();
    let refused = |body: &str, status: u16, message: &str| {
        let (got, err) = s.post("/api/v1/aliasexecution", body);
        assert_eq!(got, status, "{body}: {err}");
        assert_eq!(err["faultstring"], message, "{body}");
    };
    refused(
        r#"{"format": "greet {{ name }}", "command": "greet Ada"}"#,
        400,
        "Alias execution \"name\" is required",
    );
    refused(
        r#"{"name": "nosuch", "format": "greet {{ name }}", "command": "greet Ada"}"#,
        404,
        "Unable to identify action alias with name \"nosuch\".",
    );
    refused(
        r#"{"name": "hidden", "format": "Deploy secretly {{ app }}", "command": "Deploy secretly web"}"#,
        400,
        "Action alias with name \"hidden\" is disabled.",
    );
    refused(
        r#"{"name": "greet", "format": "wave at {{ name }}", "command": "wave at Ada"}"#,
        400,
        "Format string \"wave at {{ name }}\" is not available on the alias \"greet\"",
    );
    let (status, err) = s.post(
        "/api/v1/aliasexecution",
        r#"{"name": "greet", "format": "say hello to {{ name }} {{ times }} times", "command": "say hello to Ada many times"}"#,
    );
    assert_eq!(status, 400, "{err}");
    assert!(
        err["faultstring"]
            .as_str()
            .expect("faultstring")
            .contains("times"),
        "{err}"
    );
    let (status, err) = s.post(
        "/api/v1/aliasexecution",
        r#"{"name": "greet", "format": "greet {{ name }}", "command": "dance"}"#,
    );
    assert_eq!(status, 400, "{err}");

    let (status, err) = s.post(
        "/api/v1/aliasexecution/match_and_execute",
        r#"{"command": "deploy web now", "user": "ada"}"#,
    );
    assert_eq!(status, 400, "{err}");
    assert_eq!(
        err["faultstring"],
        "Command 'deploy web now' matched more than 1 pattern"
    );

    // Nothing was requested by any of these.
    let (_, executions) = s.get("/api/v1/executions");
    assert_eq!(executions, json!([]), "{executions}");
}
