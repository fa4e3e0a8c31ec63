//! `squall pack test` and `squall pack create`, run as a user runs them: the fixture packs
//! `tests/packs/packtest_ok` (every case passes: rule cases, action cases with HTTP and Docker
//! answers) and `tests/packs/packtest_bad` (cases that fail, each for its own reason), the
//! JUnit XML read back, and a created pack validated and tested.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::Output;

use crate::harness::{repo, squall, write};

fn text(out: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

fn fixture(name: &str) -> String {
    repo()
        .join("tests/packs")
        .join(name)
        .to_str()
        .expect("utf-8")
        .to_string()
}

fn path(p: &Path) -> &str {
    p.to_str().expect("utf-8")
}

/// The line `squall pack test` printed for the case `name`, and the indented lines after it.
fn case_report<'a>(all: &'a str, name: &str) -> Vec<&'a str> {
    let mut lines = all.lines().skip_while(|l| {
        !(l.starts_with("ok ") || l.starts_with("FAIL ")) || !l.contains(&format!(": {name}"))
    });
    let Some(first) = lines.next() else {
        panic!("no line for case '{name}':\n{all}");
    };
    let mut report = vec![first];
    report.extend(lines.take_while(|l| l.starts_with("      ")));
    report
}

#[test]
fn pack_test_runs_a_packs_rule_and_action_cases() {
    let dir = tempfile::tempdir().expect("tempdir");
    let junit = dir.path().join("junit.xml");
    let out = squall(&[
        "pack",
        "test",
        &fixture("packtest_ok"),
        "--junit",
        path(&junit),
    ]);
    let all = text(&out);
    assert_eq!(out.status.code(), Some(0), "{all}");
    assert!(all.contains("pack packtest_ok 1.2.0 ("), "{all}");
    for case in [
        "a webhook with a name greets",
        "a disabled rule is tested as if enabled",
        "a resolved alert scales nothing",
        "scale out reads Marathon, scales the containers and tells Marathon",
        "restart restarts each container of the app",
        "a missing parameter is refused",
        "core.http posts JSON and reads the JSON answer",
        "core.http fails on a 503 with st2's result",
    ] {
        let report = case_report(&all, case);
        assert!(report[0].starts_with("ok "), "{report:?}");
    }
    assert!(all.contains("17 passed, 0 failed"), "{all}");
    assert!(!all.contains("FAIL"), "{all}");

    let xml = std::fs::read_to_string(&junit).expect("junit written");
    let root = parse_xml(&xml);
    assert_eq!(root.name, "testsuites");
    assert_eq!(root.attrs["tests"], "17");
    assert_eq!(root.attrs["failures"], "0");
    assert_eq!(root.attrs["errors"], "0");
    let suite = &root.children[0];
    assert_eq!(
        (suite.name.as_str(), suite.attrs["name"].as_str()),
        ("testsuite", "packtest_ok")
    );
    assert_eq!(suite.children.len(), 17);
    let classes: std::collections::BTreeSet<&str> = suite
        .children
        .iter()
        .map(|c| c.attrs["classname"].as_str())
        .collect();
    assert_eq!(
        classes.into_iter().collect::<Vec<_>>(),
        ["packtest_ok.test_actions", "packtest_ok.test_rules"]
    );
    assert!(suite.children.iter().all(|c| c.children.is_empty()));
}

#[test]
fn pack_test_names_each_failure_and_exits_1() {
    let dir = tempfile::tempdir().expect("tempdir");
    let junit = dir.path().join("results.xml");
    let out = squall(&[
        "pack",
        "test",
        &fixture("packtest_bad"),
        "--junit",
        path(&junit),
    ]);
    let all = text(&out);
    assert_eq!(out.status.code(), Some(1), "{all}");
    assert!(all.contains("1 passed, 6 failed"), "{all}");
    assert!(case_report(&all, "the rule matches a named webhook")[0].starts_with("ok "));

    let result = case_report(&all, "wrong expected result").join("\n");
    assert!(result.contains("test_failing.yaml:19)"), "{result}");
    assert!(
        result.contains(r#"result: expected {"greeting":"hi, ops"}"#),
        "{result}"
    );
    assert!(
        result.contains(r#"got {"greeting":"hello, ops"}"#),
        "{result}"
    );

    let matching = case_report(&all, "wrong match").join("\n");
    assert!(
        matching.contains("expected the rule to match; it does not"),
        "{matching}"
    );
    assert!(matching.contains("key: trigger.body.name"), "{matching}");

    let parameters = case_report(&all, "wrong parameters").join("\n");
    assert!(
        parameters.contains(r#"parameters: expected {"name":"ops"}"#)
            && parameters.contains(r#"got {"name":"OPS"}"#),
        "{parameters}"
    );

    let undeclared = case_report(&all, "undeclared http call").join("\n");
    assert!(
        undeclared.contains("undeclared call: POST http://chat.example.com/hooks/team"),
        "{undeclared}"
    );
    assert!(
        undeclared.contains("http POST http://chat.example.com/hooks/team: the test case declares no answer for this call"),
        "{undeclared}"
    );

    let unused = case_report(&all, "declared but never called").join("\n");
    assert!(
        unused.contains("declared but never called: GET http://never.example.com/"),
        "{unused}"
    );
    let shell = case_report(&all, "a shell action cannot run here").join("\n");
    assert!(
        shell.contains("action core.local runs with the local-shell-cmd runner, which `squall pack test` cannot run"),
        "{shell}"
    );

    let root = parse_xml(&std::fs::read_to_string(&junit).expect("junit written"));
    assert_eq!(
        (
            root.attrs["tests"].as_str(),
            root.attrs["failures"].as_str(),
            root.attrs["errors"].as_str()
        ),
        ("7", "6", "0")
    );
    let suite = &root.children[0];
    assert_eq!(suite.attrs["name"], "packtest_bad");
    assert_eq!(suite.attrs["failures"], "6");
    let case = |name: &str| {
        suite
            .children
            .iter()
            .find(|c| c.attrs["name"].starts_with(name))
            .unwrap_or_else(|| panic!("no testcase {name}: {xml:?}", xml = suite.children))
    };
    // The name's markup and quotes survive the round trip.
    let result = case("wrong expected result");
    assert_eq!(
        result.attrs["name"],
        r#"wrong expected result <&> "quoted" 'too'"#
    );
    let failure = &result.children[0];
    assert_eq!(failure.name, "failure");
    assert_eq!(
        failure.attrs["message"],
        r#"result: expected {"greeting":"hi, ops"}"#
    );
    assert!(
        failure.text.contains(r#"got {"greeting":"hello, ops"}"#),
        "{}",
        failure.text
    );
    let undeclared = &case("undeclared http call").children[0];
    assert!(
        undeclared
            .text
            .contains("undeclared call: POST http://chat.example.com/hooks/team"),
        "{}",
        undeclared.text
    );
    assert!(case("the rule matches a named webhook").children.is_empty());
}

/// A copy of the passing fixture pack in a folder of its own.
fn copy_of_ok_pack(root: &Path) -> PathBuf {
    fn copy(from: &Path, to: &Path) {
        std::fs::create_dir_all(to).expect("mkdir");
        for entry in std::fs::read_dir(from).expect("read fixture") {
            let entry = entry.expect("entry");
            let target = to.join(entry.file_name());
            if entry.path().is_dir() {
                copy(&entry.path(), &target);
            } else {
                std::fs::copy(entry.path(), &target).expect("copy");
            }
        }
    }
    let pack = root.join("packtest_ok");
    copy(&repo().join("tests/packs/packtest_ok"), &pack);
    pack
}

#[test]
fn a_bad_test_file_is_reported_with_its_line_and_exits_2() {
    let dir = tempfile::tempdir().expect("tempdir");
    let pack = copy_of_ok_pack(dir.path());
    write(
        &pack,
        "tests/test_typo.yaml",
        "actions:\n  - name: greet\n    action: packtest_ok.greet\n    parameters: {name: ops}\n    reslut: {lines: []}\n",
    );
    write(&pack, "tests/test_broken.yaml", "rules:\n  - name: [one\n");
    // A pack without tests is listed as such, and does not fail.
    let core = repo().join("packs/core");
    let junit = dir.path().join("junit.xml");
    let out = squall(&[
        "pack",
        "test",
        path(dir.path()),
        path(&core),
        "--junit",
        path(&junit),
    ]);
    let all = text(&out);
    assert_eq!(out.status.code(), Some(2), "{all}");
    let typo = format!("{}:5: ", pack.join("tests/test_typo.yaml").display());
    let line = all
        .lines()
        .find(|l| l.contains(&typo))
        .unwrap_or_else(|| panic!("no problem at {typo}:\n{all}"));
    assert!(
        line.contains("action case 'greet': unknown key 'reslut'"),
        "{line}"
    );
    let broken = format!("{}:3: ", pack.join("tests/test_broken.yaml").display());
    assert!(all.contains(&broken), "{all}");
    assert!(
        all.contains("FAIL  packtest_ok: tests/test_typo.yaml is a valid test file"),
        "{all}"
    );
    assert!(all.contains("17 passed, 2 failed"), "{all}");
    assert!(
        all.contains(&format!(
            "pack core 0.1.0 ({}): no tests/ folder",
            core.display()
        )),
        "{all}"
    );
    let root = parse_xml(&std::fs::read_to_string(&junit).expect("junit written"));
    assert_eq!(root.attrs["errors"], "2");
    assert_eq!(root.attrs["tests"], "19");
    let names: Vec<&str> = root
        .children
        .iter()
        .map(|s| s.attrs["name"].as_str())
        .collect();
    assert_eq!(names, ["packtest_ok", "core"]);
    assert_eq!(root.children[1].attrs["tests"], "0");
}

#[test]
fn pack_create_makes_a_pack_that_validates_and_passes_its_tests() {
    let dir = tempfile::tempdir().expect("tempdir");
    let packs = dir.path().join("my-packs");
    let out = squall(&["pack", "create", "deploys", "--dir", path(&packs)]);
    let all = text(&out);
    assert_eq!(out.status.code(), Some(0), "{all}");
    let pack = packs.join("deploys");
    for file in [
        "pack.yaml",
        "actions/hello.yaml",
        "actions/hello.rhai",
        "rules/hello_on_webhook.yaml",
        "aliases/hello.yaml",
        "tests/test_hello.yaml",
        "README.md",
    ] {
        assert!(pack.join(file).is_file(), "{file} missing:\n{all}");
    }
    let meta = std::fs::read_to_string(pack.join("pack.yaml")).expect("pack.yaml");
    assert!(
        meta.contains("ref: deploys") && meta.contains("version: 0.1.0"),
        "{meta}"
    );

    let out = squall(&["pack", "validate", path(&pack)]);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    assert!(text(&out).contains("1 actions, 1 rules, 1 aliases"));

    let out = squall(&["pack", "test", path(&pack)]);
    let all = text(&out);
    assert_eq!(out.status.code(), Some(0), "{all}");
    assert!(all.contains("6 passed, 0 failed"), "{all}");

    let out = squall(&[
        "alias",
        "match",
        "--packs",
        path(&packs),
        "hello Ada Lovelace",
    ]);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    assert!(
        text(&out).contains(r#""name": "Ada Lovelace""#),
        "{}",
        text(&out)
    );
}

#[test]
fn pack_create_refuses_a_bad_name_and_an_existing_folder() {
    let dir = tempfile::tempdir().expect("tempdir");
    for bad in ["Deploys", "my-pack", "../escape", "9lives", ""] {
        let out = squall(&["pack", "create", bad, "--dir", path(dir.path())]);
        let all = text(&out);
        assert_eq!(out.status.code(), Some(2), "{bad}: {all}");
        assert!(all.contains("is not a pack name"), "{bad}: {all}");
    }
    assert_eq!(
        std::fs::read_dir(dir.path()).expect("read").count(),
        0,
        "a refused name created something"
    );

    write(dir.path(), "ops/notes.txt", "mine\n");
    let out = squall(&["pack", "create", "ops", "--dir", path(dir.path())]);
    let all = text(&out);
    assert_eq!(out.status.code(), Some(2), "{all}");
    assert!(
        all.contains("already exists") && all.contains("never overwrites"),
        "{all}"
    );
    let left: Vec<_> = std::fs::read_dir(dir.path().join("ops"))
        .expect("read")
        .map(|e| e.expect("entry").file_name())
        .collect();
    assert_eq!(left, ["notes.txt"]);
}

/// An XML element as read back: enough of XML to check what CI systems read (well-formed,
/// entities decoded), and nothing more.
#[derive(Debug)]
struct Element {
    name: String,
    attrs: BTreeMap<String, String>,
    children: Vec<Element>,
    text: String,
}

fn parse_xml(xml: &str) -> Element {
    let rest = xml
        .strip_prefix("<?xml version=\"1.0\" encoding=\"UTF-8\"?>")
        .unwrap_or_else(|| panic!("no XML declaration: {xml}"));
    let (root, rest) = read_element(rest.trim_start());
    assert!(
        rest.trim().is_empty(),
        "text after the root element: {rest}"
    );
    root
}

fn read_element(s: &str) -> (Element, &str) {
    let s = s.strip_prefix('<').expect("an element starts with <");
    let end = s
        .find(|c: char| c.is_whitespace() || c == '>' || c == '/')
        .expect("the element's name ends");
    let mut element = Element {
        name: s[..end].to_string(),
        attrs: BTreeMap::new(),
        children: Vec::new(),
        text: String::new(),
    };
    let mut s = &s[end..];
    loop {
        s = s.trim_start();
        if let Some(rest) = s.strip_prefix("/>") {
            return (element, rest);
        }
        if let Some(rest) = s.strip_prefix('>') {
            s = rest;
            break;
        }
        let eq = s.find('=').expect("an attribute has =");
        let key = s[..eq].trim().to_string();
        let value = s[eq + 1..]
            .trim_start()
            .strip_prefix('"')
            .expect("a quoted value");
        let close = value.find('"').expect("the value ends");
        assert!(!value[..close].contains('<'), "< in an attribute: {value}");
        let decoded = decode(&value[..close]);
        assert!(
            element.attrs.insert(key.clone(), decoded).is_none(),
            "attribute {key} twice"
        );
        s = &value[close + 1..];
    }
    loop {
        let lt = s.find('<').expect("the element is closed");
        element.text.push_str(&decode(&s[..lt]));
        s = &s[lt..];
        if let Some(rest) = s.strip_prefix("</") {
            let gt = rest.find('>').expect("the closing tag ends");
            assert_eq!(rest[..gt].trim(), element.name, "mismatched closing tag");
            return (element, &rest[gt + 1..]);
        }
        let (child, rest) = read_element(s);
        element.children.push(child);
        s = rest;
    }
}

fn decode(text: &str) -> String {
    assert!(
        !text
            .chars()
            .any(|c| (c as u32) < 0x20 && !matches!(c, '\n' | '\r' | '\t')),
        "a character XML forbids: {text:?}"
    );
    let mut out = String::new();
    let mut rest = text;
    while let Some(at) = rest.find('&') {
        out.push_str(&rest[..at]);
        let semi = rest[at..].find(';').expect("the entity ends") + at;
        let entity = &rest[at + 1..semi];
        let c = match entity {
            "amp" => '&',
            "lt" => '<',
            "gt" => '>',
            "quot" => '"',
            "apos" => '\'',
            _ => entity
                .strip_prefix("#x")
                .map(|hex| u32::from_str_radix(hex, 16))
                .or_else(|| entity.strip_prefix('#').map(str::parse))
                .and_then(Result::ok)
                .and_then(char::from_u32)
                .unwrap_or_else(|| panic!("unknown entity &{entity};")),
        };
        out.push(c);
        rest = &rest[semi + 1..];
    }
    out.push_str(rest);
    out
}
