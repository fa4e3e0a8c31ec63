//! Packs by version, as a user installs them: `squall pack install SOURCE@REF` from local git
//! repositories (work trees and bare ones) and folders, `upgrade` to the next tag, a broken
//! version that must leave the installed one in place, dependencies missing, at the wrong
//! version or installed from their repository, `remove`, `list`, a pack's virtualenv, and a
//! running server installing over its API and refusing runners its settings do not allow.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use serde_json::{json, Value};

use crate::harness::{is_terminal, squall, write, Squall};

fn text(out: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

fn git(dir: &Path, args: &[&str]) {
    let out = Command::new("git")
        .args(["-c", "user.email=ops@example.com", "-c", "user.name=ops"])
        .args(args)
        .current_dir(dir)
        .output()
        .expect("git runs");
    assert!(out.status.success(), "git {args:?}: {}", text(&out));
}

/// Commits everything in `repo` and tags it.
fn commit_tag(repo: &Path, tag: &str) {
    git(repo, &["add", "-A"]);
    git(repo, &["commit", "-q", "-m", tag]);
    git(repo, &["tag", tag]);
}

/// A pack `name` at `version` whose action `hi` returns `<word> <who>`.
fn hello_pack(root: &Path, name: &str, version: &str, word: &str, deps: &[&str]) {
    let mut meta = format!("ref: {name}\nname: {name}\nversion: {version}\n");
    if !deps.is_empty() {
        meta.push_str("dependencies:\n");
        for d in deps {
            meta.push_str(&format!("  - \"{d}\"\n"));
        }
    }
    write(root, "pack.yaml", &meta);
    write(
        root,
        "actions/hi.yaml",
        "name: hi\nrunner_type: rhai\nentry_point: hi.rhai\nparameters:\n  who: {type: string, default: ops}\n",
    );
    write(
        root,
        "actions/hi.rhai",
        &format!("\"{word} \" + params.who\n"),
    );
}

fn new_repo(dir: &Path) {
    std::fs::create_dir_all(dir).expect("mkdir");
    git(dir, &["init", "-q", "-b", "main"]);
}

fn s(p: &Path) -> &str {
    p.to_str().expect("utf-8")
}

fn pack_cmd(args: &[&str], packs: &Path) -> Output {
    let mut all: Vec<&str> = vec!["pack"];
    all.extend_from_slice(args);
    all.extend_from_slice(&["--packs", s(packs)]);
    squall(&all)
}

/// `squall action exec REF` against `packs`: what it printed.
fn exec(action: &str, packs: &Path) -> String {
    let out = squall(&["action", "exec", action, "--packs", s(packs)]);
    assert!(out.status.success(), "{}", text(&out));
    String::from_utf8_lossy(&out.stdout).into_owned()
}

#[test]
fn install_at_a_tag_upgrade_and_a_broken_version_leaves_the_old_one() {
    let dir = tempfile::tempdir().expect("tempdir");
    let repo = dir.path().join("hello-repo");
    let packs = dir.path().join("packs");
    new_repo(&repo);
    hello_pack(&repo, "hello", "1.0.0", "hi", &[]);
    commit_tag(&repo, "v1.0.0");
    hello_pack(&repo, "hello", "1.1.0", "hello", &[]);
    commit_tag(&repo, "v1.1.0");

    let out = pack_cmd(&["install", &format!("{}@v1.0.0", s(&repo))], &packs);
    let all = text(&out);
    assert!(out.status.success(), "{all}");
    assert!(all.contains("installed hello 1.0.0"), "{all}");
    assert!(exec("hello.hi", &packs).contains("hi ops"));
    let out = squall(&["pack", "list", "--packs", s(&packs)]);
    let all = text(&out);
    assert!(all.contains("pack hello 1.0.0"), "{all}");
    assert!(all.contains("@ v1.0.0 (commit "), "{all}");
    let out = squall(&["pack", "list", "--packs", s(&packs), "--json"]);
    let list: Value = serde_json::from_slice(&out.stdout).expect("json");
    assert_eq!(list[0]["install"]["ref"], "v1.0.0", "{list}");
    assert_eq!(
        list[0]["install"]["commit"].as_str().map(str::len),
        Some(40)
    );

    // Upgrade: the highest version tag.
    let out = pack_cmd(&["upgrade", "hello"], &packs);
    let all = text(&out);
    assert!(out.status.success(), "{all}");
    assert!(all.contains("installed hello 1.1.0 (was 1.0.0)"), "{all}");
    assert!(exec("hello.hi", &packs).contains("hello ops"));

    // A broken next version: every problem listed, nothing activated.
    hello_pack(&repo, "hello", "2.0.0", "bye", &[]);
    write(
        &repo,
        "actions/broken.yaml",
        "name: broken\nrunner_type: rhai\nentry_point: missing.rhai\n",
    );
    write(
        &repo,
        "rules/on_hook.yaml",
        "name: on_hook\npack: hello\ntrigger:\n  type: core.webhook\n  parameters: {url: hi}\naction:\n  ref: hello.nothere\n",
    );
    commit_tag(&repo, "v2.0.0");
    let out = pack_cmd(&["upgrade", "hello"], &packs);
    let all = text(&out);
    assert_eq!(out.status.code(), Some(1), "{all}");
    assert!(
        all.contains("pack hello not installed: 2 problems"),
        "{all}"
    );
    assert!(all.contains("hello/actions/broken.yaml:3"), "{all}");
    assert!(all.contains("hello/rules/on_hook.yaml"), "{all}");
    assert!(all.contains("hello.nothere"), "{all}");
    assert!(all.contains("stays at 1.1.0"), "{all}");
    assert!(
        !all.contains(".staging"),
        "staging paths are not shown: {all}"
    );
    assert!(exec("hello.hi", &packs).contains("hello ops"));
    let staging: Vec<_> = std::fs::read_dir(packs.join(".staging"))
        .expect("staging")
        .filter_map(Result::ok)
        .filter(|e| e.file_name() != ".lock")
        .collect();
    assert!(staging.is_empty(), "the staging folder is emptied");

    // Back down, by ref.
    let out = pack_cmd(&["upgrade", "hello@v1.0.0"], &packs);
    assert!(out.status.success(), "{}", text(&out));
    assert!(exec("hello.hi", &packs).contains("hi ops"));
    // A ref that does not exist names the ones that do.
    let out = pack_cmd(&["install", &format!("{}@v9", s(&repo))], &packs);
    let all = text(&out);
    assert_eq!(out.status.code(), Some(1), "{all}");
    assert!(all.contains("'v9' is not a tag, branch or commit"), "{all}");
    assert!(all.contains("v1.0.0, v1.1.0, v2.0.0"), "{all}");
}

#[test]
fn dependencies_missing_wrong_or_installed_from_their_repository() {
    let dir = tempfile::tempdir().expect("tempdir");
    let packs = dir.path().join("packs");
    let base = dir.path().join("base");
    new_repo(&base);
    hello_pack(&base, "base", "1.0.0", "base1", &[]);
    commit_tag(&base, "v1.0.0");
    hello_pack(&base, "base", "2.0.0", "base2", &[]);
    commit_tag(&base, "v2.0.0");

    // A dependency by name that is not installed: refused, said where.
    let app1 = dir.path().join("app1");
    hello_pack(&app1, "app1", "1.0.0", "app1", &["base=1.0.0"]);
    let out = pack_cmd(&["install", s(&app1)], &packs);
    let all = text(&out);
    assert_eq!(out.status.code(), Some(1), "{all}");
    assert!(
        all.contains("app1/pack.yaml:4: depends on pack base =1.0.0, which is not installed"),
        "{all}"
    );
    assert!(!packs.join("app1").exists());

    // A dependency given by repository and version: installed first, at that version.
    let app2 = dir.path().join("app2");
    hello_pack(
        &app2,
        "app2",
        "0.3.0",
        "app2",
        &[&format!("{}=1.0.0", s(&base))],
    );
    let out = pack_cmd(&["install", s(&app2)], &packs);
    let all = text(&out);
    assert!(out.status.success(), "{all}");
    assert!(
        all.contains("installed base 1.0.0, needed by app2"),
        "{all}"
    );
    assert!(all.contains("installed app2 0.3.0"), "{all}");
    assert!(exec("base.hi", &packs).contains("base1 ops"));
    // Now app1's dependency is there.
    let out = pack_cmd(&["install", s(&app1)], &packs);
    assert!(out.status.success(), "{}", text(&out));

    // At the wrong version.
    let out = pack_cmd(&["upgrade", "base"], &packs);
    assert!(out.status.success(), "{}", text(&out));
    let app3 = dir.path().join("app3");
    hello_pack(&app3, "app3", "1.0.0", "app3", &["base>=3.0"]);
    let out = pack_cmd(&["install", s(&app3)], &packs);
    let all = text(&out);
    assert_eq!(out.status.code(), Some(1), "{all}");
    assert!(
        all.contains("depends on pack base >=3.0, which is installed at 2.0.0"),
        "{all}"
    );

    // Remove: refused while needed, then in order.
    let out = pack_cmd(&["remove", "base"], &packs);
    let all = text(&out);
    assert_eq!(out.status.code(), Some(1), "{all}");
    assert!(all.contains("needed by app1, app2"), "{all}");
    assert!(packs.join("base").exists());
    for name in ["app1", "app2", "base"] {
        let out = pack_cmd(&["remove", name], &packs);
        assert!(out.status.success(), "{}", text(&out));
        assert!(!packs.join(name).exists());
    }
    let out = pack_cmd(&["remove", "base"], &packs);
    assert!(text(&out).contains("pack 'base' is not installed"));
}

#[test]
fn bare_repositories_branches_and_folders() {
    let dir = tempfile::tempdir().expect("tempdir");
    let packs = dir.path().join("packs");
    let work = dir.path().join("work");
    new_repo(&work);
    hello_pack(&work, "tools", "0.1.0", "tools", &[]);
    commit_tag(&work, "v0.1.0");
    git(&work, &["checkout", "-q", "-b", "next"]);
    hello_pack(&work, "tools", "0.2.0-dev", "next", &[]);
    git(&work, &["commit", "-q", "-am", "next"]);
    let bare = dir.path().join("tools.git");
    git(dir.path(), &["clone", "-q", "--bare", s(&work), s(&bare)]);

    let out = pack_cmd(&["install", &format!("{}@next", s(&bare))], &packs);
    let all = text(&out);
    assert!(out.status.success(), "{all}");
    assert!(all.contains("installed tools 0.2.0-dev"), "{all}");
    assert!(exec("tools.hi", &packs).contains("next ops"));
    assert!(
        !packs.join("tools/.git").exists(),
        "no .git in an installed pack"
    );

    // A folder is copied as it is, uncommitted changes included.
    let folder = dir.path().join("folder");
    hello_pack(&folder, "tools", "0.3.0", "folder", &[]);
    let out = pack_cmd(&["install", s(&folder)], &packs);
    let all = text(&out);
    assert!(out.status.success(), "{all}");
    assert!(
        all.contains("installed tools 0.3.0 (was 0.2.0-dev)"),
        "{all}"
    );
    assert!(exec("tools.hi", &packs).contains("folder ops"));

    // Not a repository, not a folder.
    let out = pack_cmd(&["install", s(&dir.path().join("nothing"))], &packs);
    let all = text(&out);
    assert_eq!(out.status.code(), Some(1), "{all}");
    assert!(all.contains("cannot fetch"), "{all}");
    // A pack whose name is not a ref.
    let bad = dir.path().join("bad");
    write(&bad, "pack.yaml", "ref: Bad Name\nname: bad\n");
    let out = pack_cmd(&["install", s(&bad)], &packs);
    assert!(
        text(&out).contains("a pack's ref is lowercase"),
        "{}",
        text(&out)
    );
}

/// A wheel of a one-module package, built by hand (so pip installs it with no index).
fn wheel(dir: &Path) -> PathBuf {
    let path = dir.join("greetlib-1.0-py3-none-any.whl");
    let script = format!(
        r#"
import zipfile, hashlib, base64
files = {{
  "greetlib.py": "def greet(who):\n    return 'greetings, ' + who\n",
  "greetlib-1.0.dist-info/METADATA": "Metadata-Version: 2.1\nName: greetlib\nVersion: 1.0\n",
  "greetlib-1.0.dist-info/WHEEL": "Wheel-Version: 1.0\nGenerator: hand\nRoot-Is-Purelib: true\nTag: py3-none-any\n",
}}
record = []
with zipfile.ZipFile({path:?}, "w") as z:
    for name, data in files.items():
        z.writestr(name, data)
        digest = base64.urlsafe_b64encode(hashlib.sha256(data.encode()).digest()).rstrip(b"=").decode()
        record.append(f"{{name}},sha256={{digest}},{{len(data)}}")
    record.append("greetlib-1.0.dist-info/RECORD,,")
    z.writestr("greetlib-1.0.dist-info/RECORD", "\n".join(record) + "\n")
"#,
        path = s(&path)
    );
    let out = Command::new("python3")
        .arg("-c")
        .arg(script)
        .output()
        .expect("python3 runs");
    assert!(out.status.success(), "{}", text(&out));
    path
}

#[test]
fn a_pack_with_requirements_gets_its_own_virtualenv() {
    let dir = tempfile::tempdir().expect("tempdir");
    let packs = dir.path().join("packs");
    let src = dir.path().join("pyreq");
    hello_pack(&src, "pyreq", "1.0.0", "py", &[]);
    let whl = wheel(&src);
    write(
        &src,
        "requirements.txt",
        &format!(
            "./{}\n",
            whl.file_name().and_then(|n| n.to_str()).expect("name")
        ),
    );
    let out = pack_cmd(&["install", s(&src)], &packs);
    assert!(out.status.success(), "{}", text(&out));
    let python = packs.join("pyreq/.venv/bin/python");
    let out = Command::new(&python)
        .args(["-c", "import greetlib; print(greetlib.greet('ops'))"])
        .output()
        .expect("the pack's python runs");
    assert_eq!(
        String::from_utf8_lossy(&out.stdout).trim(),
        "greetings, ops"
    );

    // A requirement that cannot be installed: the pack is not, and the old one stays.
    write(
        &src,
        "pack.yaml",
        "ref: pyreq\nname: pyreq\nversion: 1.1.0\n",
    );
    write(
        &src,
        "requirements.txt",
        "./no-such-package-1.0-py3-none-any.whl\n",
    );
    let out = pack_cmd(&["install", s(&src)], &packs);
    let all = text(&out);
    assert_eq!(out.status.code(), Some(1), "{all}");
    assert!(
        all.contains("pyreq/requirements.txt: pip install -r requirements.txt failed"),
        "{all}"
    );
    assert!(all.contains("stays at 1.0.0"), "{all}");
    assert!(python.exists());
}

fn run(s: &Squall, action: &str) -> Value {
    let body = json!({"action": action, "parameters": {}});
    let (code, e) = s.post("/api/v1/executions", &body.to_string());
    assert_eq!(code, 201, "{e}");
    let id = e["id"].as_str().expect("id").to_string();
    s.wait_for(&format!("/api/v1/executions/{id}"), 60, |v| {
        is_terminal(v["status"].as_str().unwrap_or(""))
    })
}

#[test]
fn a_server_installs_over_its_api_and_refuses_runners_not_allowed() {
    let dir = tempfile::tempdir().expect("tempdir");
    let packs = dir.path().join("packs");
    let repo = dir.path().join("hello-repo");
    new_repo(&repo);
    hello_pack(&repo, "hello", "1.0.0", "hi", &[]);
    commit_tag(&repo, "v1.0.0");
    hello_pack(&repo, "hello", "1.1.0", "hello", &[]);
    commit_tag(&repo, "v1.1.0");
    // A pack with a shell action and a rule and alias running it; the settings allow Rhai only.
    let mixed = packs.join("mixed");
    write(&mixed, "pack.yaml", "ref: mixed\nname: mixed\n");
    write(
        &mixed,
        "actions/sh.yaml",
        "name: sh\nrunner_type: local-shell-cmd\nparameters:\n  cmd: {type: string, default: id}\n",
    );
    write(
        &mixed,
        "rules/on_hook.yaml",
        "name: on_hook\npack: mixed\ntrigger:\n  type: core.webhook\n  parameters: {url: mixed}\naction:\n  ref: mixed.sh\n",
    );
    let settings = dir.path().join("squall.yaml");
    std::fs::write(&settings, "runners: [rhai]\n").expect("settings");
    let s = Squall::start_only(
        &dir.path().join("data"),
        std::slice::from_ref(&packs),
        &["--config", settings.to_str().expect("utf-8")],
    );
    let (code, list) = s.get("/api/v1/packs");
    assert_eq!(code, 200);
    let problems = list
        .as_array()
        .and_then(|l| l.iter().find(|p| p["ref"] == "mixed"))
        .map(|p| p["problems"].to_string())
        .unwrap_or_default();
    assert!(
        problems.contains("actions/sh.yaml:2")
            && problems.contains("runner 'local-shell-cmd' is not allowed here"),
        "{list}"
    );
    assert!(
        problems.contains("rule 'mixed.on_hook' runs action 'mixed.sh'"),
        "{problems}"
    );
    let (code, e) = s.post(
        "/api/v1/executions",
        r#"{"action": "mixed.sh", "parameters": {}}"#,
    );
    assert!(code == 404 || code == 400, "{code} {e}");

    // Install over the API: the server reloads, the action runs.
    let body = json!({"packs": [format!("{}@v1.0.0", s_path(&repo))]});
    let (code, answer) = s.post("/api/v1/packs/install", &body.to_string());
    assert_eq!(code, 200, "{answer}");
    assert_eq!(answer["installed"][0]["ref"], "hello", "{answer}");
    assert_eq!(answer["reload"]["applied"], true, "{answer}");
    let e = run(&s, "hello.hi");
    assert_eq!(e["result"], "hi ops", "{e}");
    let (_, pack) = s.get("/api/v1/packs/hello");
    assert_eq!(pack["install"]["ref"], "v1.0.0", "{pack}");

    // A version that does not load: 422 with its problems; the installed one still runs.
    write(&repo, "actions/hi.rhai", "let x = ;\n");
    write(
        &repo,
        "pack.yaml",
        "ref: hello\nname: hello\nversion: 1.2.0\n",
    );
    commit_tag(&repo, "v1.2.0");
    let body = json!({"packs": [format!("{}@v1.2.0", s_path(&repo))]});
    let (code, answer) = s.post("/api/v1/packs/install", &body.to_string());
    assert_eq!(code, 422, "{answer}");
    assert!(
        answer["detail"]["failed"]["problems"]
            .to_string()
            .contains("hello/actions/hi.rhai:1"),
        "{answer}"
    );
    assert_eq!(run(&s, "hello.hi")["result"], "hi ops");
    let (code, answer) = s.post("/api/v1/packs/install", r#"{"packs": "x"}"#);
    assert_eq!(code, 400, "{answer}");

    // The CLI's --reload: upgrade on disk, then the server reloads.
    let out = squall(&[
        "pack",
        "upgrade",
        "hello@v1.1.0",
        "--packs",
        s_path(&packs),
        "--config",
        settings.to_str().expect("utf-8"),
        "--reload",
        "--api",
        &format!("http://127.0.0.1:{}", s.port),
    ]);
    assert!(out.status.success(), "{}", text(&out));
    assert_eq!(run(&s, "hello.hi")["result"], "hello ops");
}

fn s_path(p: &Path) -> &str {
    s(p)
}
