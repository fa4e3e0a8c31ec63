//! `squall pack create NAME`: a new pack to start from, in `DIR/NAME` (`./packs` by default):
//! `pack.yaml`, a Rhai action with typed parameters, a rule on a webhook, a chat alias, tests
//! that pass (`squall pack test`) and a README that says what each file is.
//!
//! It never overwrites: an existing `DIR/NAME` is refused, and a pack half written (a full
//! disk) is removed again.

use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::{bail, Context, Result};
use clap::Args;

#[derive(Args, Debug)]
pub struct CreateArgs {
    /// The pack's name (its ref): lowercase letters, digits and underscores, starting with a
    /// letter.
    pub name: String,
    /// The folder to create the pack in (the pack is `DIR/NAME`).
    #[arg(long, value_name = "DIR", default_value = "./packs")]
    pub dir: PathBuf,
}

pub fn create(args: &CreateArgs) -> Result<ExitCode> {
    let name = args.name.as_str();
    check_name(name)?;
    let root = args.dir.join(name);
    if root.exists() {
        bail!(
            "{} already exists: `squall pack create` never overwrites; choose another name or --dir",
            root.display()
        );
    }
    std::fs::create_dir_all(&args.dir)
        .with_context(|| format!("cannot create {}", args.dir.display()))?;
    // `create_dir` fails when the folder appeared meanwhile: the check above is not trusted.
    std::fs::create_dir(&root).with_context(|| format!("cannot create {}", root.display()))?;
    let files = files(name);
    if let Err(e) = write_all(&root, &files) {
        let _ = std::fs::remove_dir_all(&root);
        return Err(e);
    }
    println!("created pack {name} in {}:", root.display());
    for (path, _) in &files {
        println!("  {path}");
    }
    let shown = root.display();
    println!("next:");
    println!("  squall pack validate {shown}");
    println!("  squall pack test {shown}");
    println!("  squall action exec {name}.hello name=ops --packs {shown}");
    Ok(ExitCode::SUCCESS)
}

/// A pack's ref as st2 allows it, starting with a letter so that it reads as a name in
/// templates and chat commands.
fn check_name(name: &str) -> Result<()> {
    let mut chars = name.chars();
    let starts_well = chars.next().is_some_and(|c| c.is_ascii_lowercase());
    let rest_ok = chars.all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_');
    if !starts_well || !rest_ok || name.len() > 64 {
        bail!(
            "'{name}' is not a pack name: use lowercase letters, digits and underscores, starting with a letter, at most 64 (e.g. my_pack)"
        );
    }
    Ok(())
}

fn write_all(root: &Path, files: &[(&str, String)]) -> Result<()> {
    for (path, content) in files {
        let file = root.join(path);
        if let Some(parent) = file.parent() {
            std::fs::create_dir_all(parent)
                .with_context(|| format!("cannot create {}", parent.display()))?;
        }
        std::fs::write(&file, content)
            .with_context(|| format!("cannot write {}", file.display()))?;
    }
    Ok(())
}

/// The pack's files, `NAME` replaced by the pack's name.
fn files(name: &str) -> Vec<(&'static str, String)> {
    [
        ("pack.yaml", PACK_YAML),
        ("actions/hello.yaml", HELLO_YAML),
        ("actions/hello.rhai", HELLO_RHAI),
        ("rules/hello_on_webhook.yaml", RULE_YAML),
        ("aliases/hello.yaml", ALIAS_YAML),
        ("tests/test_hello.yaml", TESTS_YAML),
        ("README.md", README_MD),
    ]
    .into_iter()
    .map(|(path, template)| (path, template.replace("NAME", name)))
    .collect()
}

const PACK_YAML: &str = r#"# The pack's identity. `ref` is how actions and rules are named: NAME.hello.
ref: NAME
name: NAME
description: What the NAME pack automates (say it in one line).
version: 0.1.0
author: Your Name
email: you@example.com
"#;

const HELLO_YAML: &str = r#"# An action's metadata, in StackStorm's shape; its script is hello.rhai.
name: hello
pack: NAME
description: Say hello to someone, and optionally post the greeting to a chat webhook.
enabled: true
runner_type: rhai
entry_point: hello.rhai
timeout: 30
parameters:
  name:
    type: string
    description: Who to greet.
    required: true
  times:
    type: integer
    description: How many times to say it.
    default: 1
    minimum: 1
  shout:
    type: boolean
    description: Say it in capitals.
    default: false
  notify_url:
    type: string
    description: A webhook (Slack, Mattermost) to post the greeting to, if any.
"#;

const HELLO_RHAI: &str = r#"// NAME.hello. `params` holds the parameters of hello.yaml, checked and cast to their types;
// `ctx` holds the run's context (`ctx.execution_id`, `ctx.user`, `ctx.config`: this pack's
// config). The last value is the result; `throw "message"` fails the execution.
let greeting = `hello, ${params.name}`;
if params.shout {
    greeting = greeting.to_upper();
}
let lines = [];
for i in 0..params.times {
    lines.push(greeting);
}
if params.notify_url != () {
    let response = http::post(params.notify_url, #{ text: greeting });
    if response.status >= 300 {
        throw `posting to ${params.notify_url} failed: HTTP ${response.status} ${response.body}`;
    }
}
log::info(`greeted ${params.name} ${params.times} time(s)`);
#{ greeting: greeting, lines: lines }
"#;

const RULE_YAML: &str = r#"# A rule, in StackStorm's format: POST {"name": "ops"} to /api/v1/webhooks/NAME to run
# NAME.hello. Try it offline with `squall pack test` (tests/test_hello.yaml) or
# `squall rule test --rule rules/hello_on_webhook.yaml --trigger-instance FILE`.
name: hello_on_webhook
pack: NAME
description: Run NAME.hello for webhooks to /api/v1/webhooks/NAME that name someone.
enabled: true
trigger:
  type: core.webhook
  parameters:
    url: NAME
criteria:
  trigger.body.name:
    type: exists
action:
  ref: NAME.hello
  parameters:
    name: "{{ trigger.body.name }}"
    times: "{{ trigger.body.times | default(1) }}"
"#;

const ALIAS_YAML: &str = r#"# A chat command, in StackStorm's alias format: `hello Ada` runs NAME.hello with name Ada.
# Try it offline: squall alias match --packs packs "hello Ada"
name: hello
pack: NAME
action_ref: NAME.hello
description: Say hello from chat.
enabled: true
formats:
  - "hello {{ name }}"
ack:
  format: "Saying hello to {{ execution.parameters.name }}..."
  append_url: false
result:
  format: "{{ execution.result.lines | join('\n') }}"
"#;

const TESTS_YAML: &str = r#"# The pack's tests: `squall pack test packs/NAME` runs every tests/*.yaml.
# Rule cases check what a rule does with a trigger instance, as `squall rule test` does.
rules:
  - name: a webhook that names someone runs hello
    rule: NAME.hello_on_webhook
    trigger_instance:
      trigger: core.webhook
      payload: {headers: {}, body: {name: ops, times: 2}}
    matches: true
    action: NAME.hello
    parameters: {name: ops, times: 2}

  - name: a webhook that names nobody runs nothing
    rule: NAME.hello_on_webhook
    trigger_instance:
      trigger: core.webhook
      payload: {headers: {}, body: {team: ops}}
    matches: false

# Action cases run an action as `squall action exec` does. HTTP calls are answered from the
# responses a case declares (`http:`), Docker calls from its `docker:` results: a test never
# reaches a real system, and a call the case does not declare fails it.
actions:
  - name: hello greets as many times as asked
    action: NAME.hello
    parameters: {name: ops, times: 2}
    result: {greeting: "hello, ops", lines: ["hello, ops", "hello, ops"]}
    log_contains: greeted ops 2 time(s)

  - name: hello posts the greeting to notify_url
    action: NAME.hello
    parameters: {name: ops, shout: true, notify_url: "http://chat.example.com/hooks/ops"}
    http:
      - {method: POST, url: "http://chat.example.com/hooks/ops", status: 200, body: ok}
    result_contains: {greeting: "HELLO, OPS"}
    calls:
      - {http: POST, url: "http://chat.example.com/hooks/ops", json: {text: "HELLO, OPS"}}

  - name: a failing webhook fails the run
    action: NAME.hello
    parameters: {name: ops, notify_url: "http://chat.example.com/hooks/ops"}
    http:
      - {method: POST, url: "http://chat.example.com/hooks/ops", status: 500, body: down}
    status: failed
    error: "HTTP 500 down"

  - name: a name is required
    action: NAME.hello
    parameters: {times: 2}
    error: "parameter 'name': is required"
"#;

const README_MD: &str = r#"# NAME

What the NAME pack automates, for whom, and what it needs (say it here).

## What is in it

| file | what it is |
| --- | --- |
| `pack.yaml` | the pack's ref, name, description, version and author |
| `actions/hello.yaml` | the `NAME.hello` action's metadata: its typed parameters (StackStorm's shape) |
| `actions/hello.rhai` | its Rhai script: gets `params` and `ctx`, returns a map |
| `rules/hello_on_webhook.yaml` | a rule: a webhook to `/api/v1/webhooks/NAME` naming someone runs `NAME.hello` |
| `aliases/hello.yaml` | a chat command: `hello Ada` runs `NAME.hello` |
| `tests/test_hello.yaml` | the pack's tests: rule cases and action cases |

Add a pack config by writing `config.schema.yaml` (each setting's `type`, `default`,
`required`, `secret`); a deployment's values go in `configs/NAME.yaml`, and scripts read them as
`ctx.config`.

## Check it, test it, try it

```sh
squall pack validate packs/NAME          # every problem, with its file and line
squall pack test packs/NAME              # runs tests/*.yaml; --junit FILE for CI
squall action exec NAME.hello name=ops times=2 --packs packs
squall alias match --packs packs "hello Ada"
```

`squall pack test` runs each rule case as `squall rule test` does, and each action case as
`squall action exec` does, with the HTTP responses and Docker results the case declares: no
test reaches a real system. Add a case for each thing the pack must keep doing.

## Install it

Put the folder in the packs folder squall loads (`squall run --packs packs`), then
`squall pack reload` on a running server; or install it from its git repository with
`squall pack install URL@v0.1.0`.
"#;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_are_checked() {
        for good in ["ops", "my_pack2", "a"] {
            assert!(check_name(good).is_ok(), "{good}");
        }
        for bad in ["", "My", "2fa", "_x", "a-b", "a.b", "a b", "../x", "é"] {
            let error = check_name(bad).map_err(|e| e.to_string());
            assert!(
                error.is_err_and(|e| e.contains("is not a pack name")),
                "{bad}"
            );
        }
    }

    #[test]
    fn every_file_names_the_pack() {
        for (path, content) in files("deploys") {
            assert!(!content.contains("NAME"), "{path}");
            if path != "README.md" {
                assert!(content.contains("deploys"), "{path}");
            }
        }
    }
}
