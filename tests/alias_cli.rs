//! `squall alias match` and aliases in `squall pack validate`, run as a user runs them (no
//! server), asserting on exit codes and what is printed.

use std::path::Path;
use std::process::Output;

use serde_json::{json, Value};

use crate::harness::{one_action_pack, squall, write};

fn stderr(out: &Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}

/// A pack `chat` with an action `chat.deploy` (parameters `app`, `env`) and the given aliases.
fn chat_pack(aliases: &[(&str, &str)]) -> tempfile::TempDir {
    let dir = tempfile::tempdir().expect("tempdir");
    let root = dir.path().join("chat");
    one_action_pack(
        &root,
        "chat",
        "deploy",
        "parameters:\n  app: {type: string, required: true}\n  env: {type: string, default: staging}\n",
        "42\n",
    );
    for (file, text) in aliases {
        write(&root, &format!("aliases/{file}"), text);
    }
    dir
}

fn alias_match(packs: &Path, command: &str) -> Output {
    squall(&[
        "alias",
        "match",
        "--packs",
        packs.to_str().expect("utf-8"),
        command,
    ])
}

#[test]
fn alias_match_prints_the_alias_format_and_parameters_of_the_shipped_example() {
    let out = squall(&[
        "alias",
        "match",
        "--packs",
        "packs",
        "say hello to \"Ada Lovelace\" 3 times loud=true",
    ]);
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    let got: Value = serde_json::from_slice(&out.stdout).expect("JSON on stdout");
    assert_eq!(
        got,
        json!({
            "alias": "examples.greet",
            "format": "say hello to {{ name }} {{ times }} times",
            "display": "say hello to <name> <times> times",
            "parameters": {"name": "Ada Lovelace", "times": "3", "loud": "true"},
        })
    );

    let out = squall(&["alias", "match", "--packs", "packs", "greet Ada times=2"]);
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    let got: Value = serde_json::from_slice(&out.stdout).expect("JSON on stdout");
    assert_eq!(got["format"], "greet {{ name }}");
    assert_eq!(got["parameters"], json!({"name": "Ada", "times": "2"}));
}

#[test]
fn alias_match_without_a_matching_format_exits_1_with_st2s_message() {
    let out = squall(&["alias", "match", "--packs", "packs", "Greet Ada"]);
    assert_eq!(out.status.code(), Some(1));
    assert!(out.stdout.is_empty());
    assert!(
        stderr(&out).contains("Command 'Greet Ada' matched no patterns"),
        "{}",
        stderr(&out)
    );
}

#[test]
fn alias_match_refuses_a_command_two_formats_match() {
    let packs = chat_pack(&[
        (
            "deploy.yaml",
            "name: deploy\naction_ref: chat.deploy\nformats:\n  - 'deploy {{ app }}'\n",
        ),
        (
            "deploy_to.yaml",
            "name: deploy_to\naction_ref: chat.deploy\nformats:\n  - 'deploy {{ app }} {{ env=prod }}'\n",
        ),
        (
            "off.yaml",
            "name: off\naction_ref: chat.deploy\nenabled: false\nformats:\n  - 'ship {{ app }}'\n",
        ),
    ]);
    let out = alias_match(packs.path(), "deploy web");
    assert_eq!(out.status.code(), Some(1));
    let err = stderr(&out);
    assert!(
        err.contains("Command 'deploy web' matched more than 1 pattern"),
        "{err}"
    );
    assert!(err.contains("chat.deploy_to"), "{err}");

    // A disabled alias matches nothing.
    let out = alias_match(packs.path(), "ship web");
    assert_eq!(out.status.code(), Some(1));
    assert!(stderr(&out).contains("matched no patterns"));
}

#[test]
fn alias_match_on_bad_packs_exits_2_naming_file_and_line() {
    let packs = chat_pack(&[(
        "broken.yaml",
        "name: broken\naction_ref: chat.deploy\nformats:\n  - 'deploy {{ app }}'\nformat_typo: 1\n",
    )]);
    let out = alias_match(packs.path(), "deploy web");
    assert_eq!(out.status.code(), Some(2));
    let err = stderr(&out);
    let line = err
        .lines()
        .find(|l| l.contains("broken.yaml"))
        .unwrap_or_else(|| panic!("no problem in broken.yaml reported:\n{err}"));
    assert!(
        line.contains(":5") && line.contains("format_typo"),
        "{line}"
    );
}

#[test]
fn pack_validate_reports_bad_aliases_with_their_lines_and_skips_them() {
    let packs = chat_pack(&[
        (
            "good.yaml",
            "name: good\naction_ref: chat.deploy\nformats:\n  - 'deploy {{ app }}'\n",
        ),
        (
            "bad_regex.yaml",
            "name: bad_regex\naction_ref: chat.deploy\nformats:\n  - 'deploy {{ app }}'\n  - 'ship ( {{ app }}'\n",
        ),
        (
            "no_action.yaml",
            "name: no_action\ndescription: x\naction_ref: chat.missing\nformats: ['x {{ app }}']\n",
        ),
        (
            "unknown_param.yaml",
            "name: unknown_param\naction_ref: chat.deploy\nformats:\n  - 'deploy {{ app }}'\n  - 'deploy {{ app }} in {{ region }}'\n",
        ),
        (
            "other_pack.yaml",
            "name: other\npack: elsewhere\naction_ref: chat.deploy\nformats: ['y']\n",
        ),
    ]);
    let core = Path::new(env!("CARGO_MANIFEST_DIR")).join("packs/core");
    let out = squall(&[
        "pack",
        "validate",
        packs.path().to_str().expect("utf-8"),
        core.to_str().expect("utf-8"),
    ]);
    assert_eq!(out.status.code(), Some(1));
    let err = stderr(&out);
    for (at, words) in [
        ("bad_regex.yaml:5", "regular expression"),
        ("no_action.yaml:3", "chat.missing"),
        ("unknown_param.yaml:5", "region"),
        ("other_pack.yaml:2", "elsewhere"),
    ] {
        let line = err
            .lines()
            .find(|l| l.contains(at))
            .unwrap_or_else(|| panic!("no problem reported at {at}:\n{err}"));
        assert!(line.contains(words), "{line}");
    }
    assert!(err.contains("4 problems found"), "{err}");
    let listed = String::from_utf8_lossy(&out.stdout);
    assert!(
        listed.contains("1 actions, 0 rules, 1 aliases"),
        "only the good alias is loaded:\n{listed}"
    );

    // The good alias still loads: a command in its format matches it.
    let out = alias_match(packs.path(), "deploy web");
    assert_eq!(out.status.code(), Some(2), "the packs still have problems");
    std::fs::remove_dir_all(packs.path().join("chat/aliases")).expect("rm");
    write(
        &packs.path().join("chat"),
        "aliases/good.yaml",
        "name: good\naction_ref: chat.deploy\nformats:\n  - 'deploy {{ app }}'\n",
    );
    let out = alias_match(packs.path(), "deploy web env=prod");
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    let got: Value = serde_json::from_slice(&out.stdout).expect("JSON");
    assert_eq!(got["alias"], "chat.good");
    assert_eq!(got["parameters"], json!({"app": "web", "env": "prod"}));
}

/// `squall alias list` and `squall alias exec` against a running squall: the commands chat can
/// run, and a command run as chat would run it, answered with the alias's result format; a
/// command nothing matches exits non-zero with st2's message.
#[test]
fn alias_list_and_exec_go_through_the_server() {
    let dir = tempfile::tempdir().expect("tempdir");
    let s = crate::harness::Squall::start(&dir.path().join("data"), &[], &[]);
    let cli = |args: &[&str]| {
        std::process::Command::new(env!("CARGO_BIN_EXE_squall"))
            .args(args)
            .env("SQUALL_API_URL", format!("http://127.0.0.1:{}", s.port))
            .env_remove("SQUALL_API_KEY")
            .output()
            .expect("squall runs")
    };
    let out = cli(&["alias", "list"]);
    let listed = String::from_utf8_lossy(&out.stdout).to_string();
    assert!(out.status.success(), "{}", stderr(&out));
    assert!(
        listed
            .lines()
            .any(|l| l.starts_with("examples.greet") && l.contains("greet {{ name }}")),
        "{listed}"
    );
    let out = cli(&["alias", "exec", "greet Ada times=2"]);
    assert!(out.status.success(), "{}", stderr(&out));
    assert_eq!(
        String::from_utf8_lossy(&out.stdout),
        "hello, Ada\nhello, Ada\n"
    );
    assert!(stderr(&out).contains("Greeting Ada..."), "{}", stderr(&out));
    let out = cli(&["alias", "exec", "grete Ada"]);
    assert!(!out.status.success());
    assert!(
        stderr(&out).contains("Command 'grete Ada' matched no patterns"),
        "{}",
        stderr(&out)
    );
}
