//! `squall pack test DIR...`: runs the tests packs carry in `tests/*.yaml`, here and now,
//! without a server.
//!
//! A test file holds `rules:` cases, each checking what a rule does with a trigger instance
//! with the code of `squall rule test` (st2-rule-tester's semantics; a rule with `enabled:
//! false` is checked as if enabled, as st2-rule-tester does), and `actions:` cases, each running
//! a Rhai action with the code of `squall action exec`, with a pack config, a key-value store,
//! HTTP responses and Docker results of its own. The format is in the README ("Testing packs").
//!
//! This command must never let a test reach a real system: every action case runs inside
//! [`with_stubs`], so an `http` or `docker` call the case does not declare fails, naming the
//! call. Exit codes: 0 when every case passed, 1 when one failed, 2 for bad input (a test file
//! that does not parse, a pack that does not load cleanly), which also counts as a failure of
//! its pack.

use std::collections::{BTreeMap, HashSet};
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::Arc;
use std::time::Instant;

use anyhow::{Context, Result};
use clap::Args;
use serde_json::{Map, Value};
use squall_engine::actions::{
    validate_params, with_stubs, ActionMeta, DockerStub, HttpStub, KvStore, MemoryKv, RhaiRuntime,
    RunnerType, StubReport, Stubs,
};
use squall_engine::packs::Pack;
use squall_engine::rules::KeyValueLookup;
use squall_engine::{load_packs, run_action, Catalog, FinalStatus};

use crate::{check_rule, failure_message, local_run, on_script_thread, trigger_instance};

#[derive(Args, Debug)]
pub struct TestArgs {
    /// A pack or a folder of packs to test; may be repeated.
    #[arg(required = true)]
    pub dirs: Vec<PathBuf>,
    /// Packs the tested ones use (a rule running another pack's action), loaded beside them
    /// but not tested; may be repeated.
    #[arg(long = "packs", value_name = "DIR", default_value = "./packs")]
    pub packs: Vec<PathBuf>,
    /// Also write the results as JUnit XML to FILE.
    #[arg(long, value_name = "FILE")]
    pub junit: Option<PathBuf>,
}

pub fn test(args: &TestArgs) -> Result<ExitCode> {
    let mut bad_input = false;
    let mut tested = Vec::new();
    for dir in &args.dirs {
        let found = pack_dirs(dir);
        if found.is_empty() {
            eprintln!(
                "{}: neither a pack (no pack.yaml) nor a folder of packs",
                dir.display()
            );
            bad_input = true;
        }
        tested.extend(found);
    }
    let tested_real: HashSet<PathBuf> = tested
        .iter()
        .filter_map(|d| d.canonicalize().ok())
        .collect();
    let mut load = tested.clone();
    for extra in &args.packs {
        let default_only = args.packs.len() == 1 && extra == Path::new("./packs");
        if default_only && !extra.exists() {
            continue;
        }
        load.extend(
            pack_dirs(extra)
                .into_iter()
                .filter(|d| d.canonicalize().is_ok_and(|d| !tested_real.contains(&d))),
        );
    }
    let rt = crate::runtime();
    let catalog = load_packs(&load, &rt);
    let suites = on_script_thread(|| {
        tested
            .iter()
            .map(|dir| test_pack(dir, &catalog, &rt))
            .collect::<Vec<Suite>>()
    })?;

    let (mut passed, mut failed) = (0, 0);
    for case in suites.iter().flat_map(|s| &s.cases) {
        match case.verdict {
            Verdict::Passed => passed += 1,
            Verdict::Failed(_) => failed += 1,
            Verdict::Invalid(_) => {
                failed += 1;
                bad_input = true;
            }
        }
    }
    println!("{passed} passed, {failed} failed");
    if let Some(file) = &args.junit {
        std::fs::write(file, junit(&suites))
            .with_context(|| format!("cannot write {}", file.display()))?;
    }
    Ok(if bad_input {
        ExitCode::from(2)
    } else if failed > 0 {
        ExitCode::FAILURE
    } else {
        ExitCode::SUCCESS
    })
}

/// The packs in `dir`, as `load_packs` finds them: `dir` itself, or its folders with a
/// `pack.yaml`, in name order.
fn pack_dirs(dir: &Path) -> Vec<PathBuf> {
    if dir.join("pack.yaml").is_file() {
        return vec![dir.to_path_buf()];
    }
    let mut found: Vec<PathBuf> = std::fs::read_dir(dir)
        .map(|entries| {
            entries
                .filter_map(|e| e.ok().map(|e| e.path()))
                .filter(|p| p.join("pack.yaml").is_file())
                .collect()
        })
        .unwrap_or_default();
    found.sort();
    found
}

/// One pack's results: a JUnit test suite.
struct Suite {
    name: String,
    cases: Vec<CaseResult>,
}

struct CaseResult {
    name: String,
    /// `<pack>.<file stem>`: JUnit's class name.
    class: String,
    file: PathBuf,
    line: Option<usize>,
    seconds: f64,
    verdict: Verdict,
}

enum Verdict {
    Passed,
    /// What differed from what the case expects, one entry each.
    Failed(Vec<String>),
    /// Bad input: a test file that does not parse, a pack that does not load cleanly.
    Invalid(String),
}

impl CaseResult {
    fn print(&self, pack: &str) {
        let at = match self.line {
            Some(line) => format!("{}:{line}", self.file.display()),
            None => self.file.display().to_string(),
        };
        match &self.verdict {
            Verdict::Passed => println!("ok    {pack}: {}", self.name),
            Verdict::Failed(why) => {
                println!("FAIL  {pack}: {} ({at})", self.name);
                for reason in why {
                    println!("{}", indent(reason, "      "));
                }
            }
            Verdict::Invalid(why) => {
                println!("FAIL  {pack}: {}", self.name);
                println!("{}", indent(why, "      "));
            }
        }
    }
}

fn indent(text: &str, by: &str) -> String {
    text.lines()
        .map(|l| format!("{by}{l}"))
        .collect::<Vec<_>>()
        .join("\n")
}

/// Runs the tests of the pack in `dir`, printing each case's line as it ends.
fn test_pack(dir: &Path, catalog: &Catalog, rt: &RhaiRuntime) -> Suite {
    let real = dir.canonicalize().ok();
    let pack = catalog
        .packs
        .iter()
        .find(|p| p.dir == dir || (real.is_some() && p.dir.canonicalize().ok() == real));
    let name = match pack {
        Some(p) => p.reference.clone(),
        None => dir
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_else(|| dir.display().to_string()),
    };
    let mut suite = Suite {
        name: name.clone(),
        cases: Vec::new(),
    };
    let version = pack
        .map(|p| format!(" {}", p.meta.version))
        .unwrap_or_default();
    let files = test_files(&dir.join("tests"));
    match &files {
        Ok(files) if files.is_empty() => println!(
            "pack {name}{version} ({}): no test files (tests/*.yaml)",
            dir.display()
        ),
        Ok(_) => println!("pack {name}{version} ({})", dir.display()),
        Err(_) => println!("pack {name}{version} ({}): no tests/ folder", dir.display()),
    }

    let mut problems: Vec<String> = catalog
        .problems
        .iter()
        .filter(|p| p.file.starts_with(dir))
        .map(ToString::to_string)
        .collect();
    if pack.is_none() && problems.is_empty() {
        problems.push(format!("{}: the pack does not load", dir.display()));
    }
    if !problems.is_empty() {
        suite.push(CaseResult {
            name: "the pack loads cleanly (squall pack validate)".into(),
            class: format!("{name}.load"),
            file: dir.join("pack.yaml"),
            line: None,
            seconds: 0.0,
            verdict: Verdict::Invalid(problems.join("\n")),
        });
    }
    if let Some(pack) = pack {
        for file in files.unwrap_or_default() {
            test_file(&file, dir, pack, catalog, rt, &mut suite);
        }
    }
    suite
}

impl Suite {
    fn push(&mut self, result: CaseResult) {
        result.print(&self.name);
        self.cases.push(result);
    }
}

/// Runs the cases of one test file; a file that cannot be read is one failed case.
fn test_file(
    file: &Path,
    dir: &Path,
    pack: &Pack,
    catalog: &Catalog,
    rt: &RhaiRuntime,
    suite: &mut Suite,
) {
    let stem = file
        .file_stem()
        .map(|s| s.to_string_lossy().into_owned())
        .unwrap_or_default();
    let class = format!("{}.{stem}", suite.name);
    let cases = std::fs::read_to_string(file)
        .map_err(|e| format!("{}: cannot read: {e}", file.display()))
        .and_then(|text| parse_file(file, &text));
    let cases = match cases {
        Ok(cases) => cases,
        Err(why) => {
            return suite.push(CaseResult {
                name: format!("{} is a valid test file", relative(file, dir)),
                class,
                file: file.to_path_buf(),
                line: None,
                seconds: 0.0,
                verdict: Verdict::Invalid(why),
            })
        }
    };
    for (number, case) in cases.into_iter().enumerate() {
        let started = Instant::now();
        let failures = match &case.kind {
            Kind::Rule(c) => run_rule_case(c, pack, catalog),
            Kind::Action(c) => run_action_case(c, pack, catalog, rt, number + 1),
        };
        suite.push(CaseResult {
            name: case.name,
            class: class.clone(),
            file: file.to_path_buf(),
            line: case.line,
            seconds: started.elapsed().as_secs_f64(),
            verdict: if failures.is_empty() {
                Verdict::Passed
            } else {
                Verdict::Failed(failures)
            },
        });
    }
}

/// `tests/*.yaml` (and `*.yml`) in name order; an error when there is no `tests/` folder.
fn test_files(tests: &Path) -> std::io::Result<Vec<PathBuf>> {
    let mut files: Vec<PathBuf> = std::fs::read_dir(tests)?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.is_file() && p.extension().is_some_and(|e| e == "yaml" || e == "yml"))
        .collect();
    files.sort();
    Ok(files)
}

fn relative(file: &Path, dir: &Path) -> String {
    file.strip_prefix(dir).unwrap_or(file).display().to_string()
}

// ---------------------------------------------------------------------------------------------
// The test file format.

/// One case of a test file.
struct Case {
    name: String,
    line: Option<usize>,
    kind: Kind,
}

enum Kind {
    Rule(RuleCase),
    Action(ActionCase),
}

struct RuleCase {
    rule: String,
    instance: crate::TriggerInstance,
    kv: BTreeMap<String, String>,
    matches: bool,
    action: Option<String>,
    parameters: Option<Value>,
    parameters_contain: Option<Value>,
    reason: Option<String>,
    error: Option<String>,
}

struct ActionCase {
    action: String,
    parameters: Map<String, Value>,
    config: Option<Map<String, Value>>,
    kv: BTreeMap<String, String>,
    stubs: Stubs,
    result: Option<Value>,
    result_contains: Option<Value>,
    error: Option<String>,
    status: Option<String>,
    log_contains: Vec<String>,
    calls: Option<Vec<Value>>,
    kv_after: Option<Map<String, Value>>,
}

const FILE_KEYS: [&str; 2] = ["rules", "actions"];
const RULE_KEYS: [&str; 11] = [
    "name",
    "description",
    "rule",
    "trigger_instance",
    "kv",
    "matches",
    "action",
    "parameters",
    "parameters_contain",
    "reason",
    "error",
];
const ACTION_KEYS: [&str; 15] = [
    "name",
    "description",
    "action",
    "parameters",
    "config",
    "kv",
    "http",
    "docker",
    "result",
    "result_contains",
    "error",
    "status",
    "log_contains",
    "calls",
    "kv_after",
];
const STATUSES: [&str; 4] = ["succeeded", "failed", "timeout", "canceled"];

/// Reads a test file; every problem is reported, each with the file and line.
fn parse_file(file: &Path, text: &str) -> std::result::Result<Vec<Case>, String> {
    let at = |line: Option<usize>, message: &str| match line {
        Some(l) => format!("{}:{l}: {message}", file.display()),
        None => format!("{}: {message}", file.display()),
    };
    let document: Value = serde_yaml::from_str(text).map_err(|e| {
        let p = squall_engine::rules::yaml_problem(&e);
        at(p.line, &p.message)
    })?;
    let top =
        match document {
            Value::Object(m) => m,
            Value::Null => {
                return Err(at(
                    None,
                    "the file is empty: expected `rules:` and/or `actions:`, each a list of cases",
                ))
            }
            _ => return Err(at(
                Some(1),
                "a test file is a mapping with `rules:` and/or `actions:`, each a list of cases",
            )),
        };
    let mut problems = Vec::new();
    let mut cases = Vec::new();
    for (key, value) in &top {
        if !FILE_KEYS.contains(&key.as_str()) {
            problems.push(at(
                squall_engine::rules::line_of(text, key),
                &format!(
                    "unknown key '{key}' (a test file has: {})",
                    FILE_KEYS.join(", ")
                ),
            ));
            continue;
        }
        let items = match value {
            Value::Array(items) => items.as_slice(),
            Value::Null => &[],
            _ => {
                problems.push(at(
                    squall_engine::rules::line_of(text, key),
                    &format!("`{key}` must be a list of cases"),
                ));
                continue;
            }
        };
        let starts = item_lines(text, key);
        for (i, item) in items.iter().enumerate() {
            let line = starts.get(i).copied();
            let end = starts.get(i + 1).copied();
            let kind = if key == "rules" { "rule" } else { "action" };
            let Value::Object(fields) = item else {
                problems.push(at(line, &format!("{key} #{}: a case is a mapping", i + 1)));
                continue;
            };
            let mut reader = Reader {
                fields,
                text,
                start: line,
                end,
                problems: Vec::new(),
            };
            let case = if kind == "rule" {
                reader.rule_case(i + 1)
            } else {
                reader.action_case(i + 1)
            };
            for (l, message) in reader.problems {
                problems.push(at(l.or(line), &message));
            }
            if let Some(mut case) = case {
                case.line = line;
                cases.push(case);
            }
        }
    }
    if !problems.is_empty() {
        return Err(problems.join("\n"));
    }
    if cases.is_empty() {
        return Err(at(None, "the file holds no cases"));
    }
    Ok(cases)
}

/// The line (1-based) where each item of the top-level list `key` starts, when written in
/// block style (`- name: ...`); empty for a flow-style list.
fn item_lines(text: &str, key: &str) -> Vec<usize> {
    let lines: Vec<&str> = text.lines().collect();
    let opens = |l: &str| {
        l.strip_prefix(key)
            .and_then(|rest| rest.strip_prefix(':'))
            .is_some_and(|rest| rest.trim().is_empty() || rest.trim_start().starts_with('#'))
    };
    let Some(start) = lines.iter().position(|l| opens(l)) else {
        return Vec::new();
    };
    let mut found = Vec::new();
    let mut item_indent = None;
    for (i, line) in lines.iter().enumerate().skip(start + 1) {
        let trimmed = line.trim_start();
        let indent = line.len() - trimmed.len();
        if trimmed.is_empty() || trimmed.starts_with('#') {
            continue;
        }
        if indent == 0 && !trimmed.starts_with('-') {
            break;
        }
        if trimmed == "-" || trimmed.starts_with("- ") {
            match item_indent {
                None => {
                    item_indent = Some(indent);
                    found.push(i + 1);
                }
                Some(at) if at == indent => found.push(i + 1),
                _ => {}
            }
        }
    }
    found
}

/// Reads one case's fields, collecting every problem with the line of its key.
struct Reader<'a> {
    fields: &'a Map<String, Value>,
    text: &'a str,
    /// The case's first line, and the next case's.
    start: Option<usize>,
    end: Option<usize>,
    problems: Vec<(Option<usize>, String)>,
}

impl Reader<'_> {
    /// The line of the case's key `key`.
    fn line_of(&self, key: &str) -> Option<usize> {
        let start = self.start?;
        let lines: Vec<&str> = self.text.lines().collect();
        let end = self.end.map_or(lines.len(), |e| e - 1).min(lines.len());
        let first = lines.get(start - 1)?;
        let item_indent = first.len() - first.trim_start().len();
        let wanted = |l: &str| {
            l.strip_prefix(key)
                .is_some_and(|rest| rest.starts_with(':'))
        };
        (start - 1..end).find_map(|i| {
            let line = lines[i];
            let trimmed = line.trim_start();
            let indent = line.len() - trimmed.len();
            let is_key = if i == start - 1 {
                trimmed
                    .strip_prefix('-')
                    .map(str::trim_start)
                    .is_some_and(wanted)
            } else {
                indent == item_indent + 2 && wanted(trimmed)
            };
            is_key.then_some(i + 1)
        })
    }

    fn problem(&mut self, key: &str, message: String) {
        let line = self.line_of(key);
        self.problems.push((line, message));
    }

    fn unknown_keys(&mut self, known: &[&str], what: &str) {
        let unknown: Vec<String> = self
            .fields
            .keys()
            .filter(|k| !known.contains(&k.as_str()))
            .cloned()
            .collect();
        for key in unknown {
            self.problem(
                &key,
                format!("{what}: unknown key '{key}' (known: {})", known.join(", ")),
            );
        }
    }

    fn string(&mut self, key: &str, what: &str) -> Option<String> {
        match self.fields.get(key) {
            None | Some(Value::Null) => None,
            Some(Value::String(s)) => Some(s.clone()),
            Some(other) => {
                self.problem(
                    key,
                    format!("{what}: `{key}` must be text, got {}", kind_of(other)),
                );
                None
            }
        }
    }

    fn mapping(&mut self, key: &str, what: &str) -> Option<Map<String, Value>> {
        match self.fields.get(key) {
            None | Some(Value::Null) => None,
            Some(Value::Object(m)) => Some(m.clone()),
            Some(other) => {
                self.problem(
                    key,
                    format!("{what}: `{key}` must be a mapping, got {}", kind_of(other)),
                );
                None
            }
        }
    }

    fn list(&mut self, key: &str, what: &str) -> Option<Vec<Value>> {
        match self.fields.get(key) {
            None | Some(Value::Null) => None,
            Some(Value::Array(items)) => Some(items.clone()),
            Some(other) => {
                self.problem(
                    key,
                    format!("{what}: `{key}` must be a list, got {}", kind_of(other)),
                );
                None
            }
        }
    }

    /// `kv:`: names to values; a value that is not text is stored as its JSON text, as st2's
    /// datastore holds strings.
    fn kv(&mut self, key: &str, what: &str) -> BTreeMap<String, String> {
        self.mapping(key, what)
            .unwrap_or_default()
            .into_iter()
            .map(|(k, v)| {
                let text = match v {
                    Value::String(s) => s,
                    other => other.to_string(),
                };
                (k, text)
            })
            .collect()
    }

    fn name(&mut self, kind: &str, number: usize, reference: Option<&str>) -> (String, String) {
        let name = self
            .string("name", &format!("{kind} case #{number}"))
            .unwrap_or_else(|| match reference {
                Some(r) => format!("{r} #{number}"),
                None => format!("{kind} case #{number}"),
            });
        let what = format!("{kind} case '{name}'");
        (name, what)
    }

    /// A required text field (`rule`, `action`), its problem reported at the case's first line.
    fn required(&mut self, key: &str, what: &str, description: &str) -> Option<String> {
        let value = self.string(key, what);
        if !self.fields.contains_key(key) {
            self.problem(
                "name",
                format!("{what}: `{key}` ({description}) is required"),
            );
        }
        value
    }

    fn boolean(&mut self, key: &str, what: &str, default: bool) -> bool {
        match self.fields.get(key) {
            None | Some(Value::Null) => default,
            Some(Value::Bool(b)) => *b,
            Some(other) => {
                self.problem(
                    key,
                    format!(
                        "{what}: `{key}` must be true or false, got {}",
                        kind_of(other)
                    ),
                );
                default
            }
        }
    }

    fn trigger_instance(&mut self, what: &str) -> Option<crate::TriggerInstance> {
        let key = "trigger_instance";
        match self.fields.get(key) {
            None | Some(Value::Null) => {
                let shape = "{trigger: <type ref>, payload: {...}}";
                self.problem("name", format!("{what}: `{key}` ({shape}) is required"));
                None
            }
            Some(value @ Value::Object(_)) => match trigger_instance(value) {
                Ok(instance) => Some(instance),
                Err(e) => {
                    self.problem(key, format!("{what}: {key}: {e}"));
                    None
                }
            },
            Some(other) => {
                let got = kind_of(other);
                self.problem(
                    key,
                    format!("{what}: `{key}` must be a mapping {{trigger, payload}}, got {got}"),
                );
                None
            }
        }
    }

    fn rule_case(&mut self, number: usize) -> Option<Case> {
        let rule = self.fields.get("rule").and_then(Value::as_str);
        let (name, what) = self.name("rule", number, rule);
        self.unknown_keys(&RULE_KEYS, &what);
        let rule = self.required("rule", &what, "the rule's ref, pack.name");
        let instance = self.trigger_instance(&what);
        let matches = self.boolean("matches", &what, true);
        let reason = self.string("reason", &what);
        if !matches {
            for key in ["action", "parameters", "parameters_contain"] {
                if self.fields.contains_key(key) {
                    self.problem(
                        key,
                        format!("{what}: `{key}` is checked only when the rule matches, and the case says `matches: false`"),
                    );
                }
            }
        } else if reason.is_some() {
            self.problem(
                "reason",
                format!("{what}: `reason` (why the rule does not match) needs `matches: false`"),
            );
        }
        let case = RuleCase {
            rule: rule.unwrap_or_default(),
            instance: instance?,
            kv: self.kv("kv", &what),
            matches,
            action: self.string("action", &what),
            parameters: self.mapping("parameters", &what).map(Value::Object),
            parameters_contain: self.mapping("parameters_contain", &what).map(Value::Object),
            reason,
            error: self.string("error", &what),
        };
        Some(Case {
            name,
            line: None,
            kind: Kind::Rule(case),
        })
    }

    /// `http:` and `docker:`: the answers the case declares.
    fn stubs(&mut self, what: &str) -> Stubs {
        let mut stubs = Stubs::default();
        for (i, item) in self.list("http", what).into_iter().flatten().enumerate() {
            match serde_json::from_value::<HttpStub>(item) {
                Ok(stub) => stubs.http.push(stub),
                Err(e) => self.problem("http", format!("{what}: http #{}: {e}", i + 1)),
            }
        }
        for (i, item) in self.list("docker", what).into_iter().flatten().enumerate() {
            match serde_json::from_value::<DockerStub>(item) {
                Ok(stub) => stubs.docker.push(stub),
                Err(e) => self.problem("docker", format!("{what}: docker #{}: {e}", i + 1)),
            }
        }
        for problem in stubs.problems() {
            let key = if problem.starts_with("http") {
                "http"
            } else {
                "docker"
            };
            self.problem(key, format!("{what}: {problem}"));
        }
        stubs
    }

    /// `status:`, one of [`STATUSES`], and not `succeeded` when an `error` is expected.
    fn status(&mut self, what: &str, error: Option<&String>) -> Option<String> {
        let status = self.string("status", what)?;
        if !STATUSES.contains(&status.as_str()) {
            let known = STATUSES.join(", ");
            self.problem(
                "status",
                format!("{what}: unknown status '{status}' (statuses: {known})"),
            );
        } else if status == "succeeded" && error.is_some() {
            self.problem(
                "error",
                format!("{what}: `error` cannot be expected of a run that `status: succeeded`"),
            );
        }
        Some(status)
    }

    /// Text, or a list of texts.
    fn texts(&mut self, key: &str, what: &str) -> Vec<String> {
        match self.fields.get(key) {
            None | Some(Value::Null) => Vec::new(),
            Some(Value::String(s)) => vec![s.clone()],
            Some(Value::Array(items)) if items.iter().all(Value::is_string) => items
                .iter()
                .filter_map(|i| i.as_str().map(str::to_string))
                .collect(),
            Some(_) => {
                self.problem(
                    key,
                    format!("{what}: `{key}` must be text or a list of texts"),
                );
                Vec::new()
            }
        }
    }

    fn action_case(&mut self, number: usize) -> Option<Case> {
        let action = self.fields.get("action").and_then(Value::as_str);
        let (name, what) = self.name("action", number, action);
        self.unknown_keys(&ACTION_KEYS, &what);
        let action = self.required("action", &what, "the action's ref, pack.name");
        let error = self.string("error", &what);
        let calls = self.list("calls", &what);
        if calls.iter().flatten().any(|c| !c.is_object()) {
            self.problem(
                "calls",
                format!("{what}: each of `calls` is a mapping ({{http: GET, url: ...}} or {{docker: scale, args: [...]}})"),
            );
        }
        let case = ActionCase {
            action: action.unwrap_or_default(),
            parameters: self.mapping("parameters", &what).unwrap_or_default(),
            config: self.mapping("config", &what),
            kv: self.kv("kv", &what),
            stubs: self.stubs(&what),
            result: self.fields.get("result").cloned(),
            result_contains: self.fields.get("result_contains").cloned(),
            status: self.status(&what, error.as_ref()),
            error,
            log_contains: self.texts("log_contains", &what),
            calls,
            kv_after: self.mapping("kv_after", &what),
        };
        Some(Case {
            name,
            line: None,
            kind: Kind::Action(case),
        })
    }
}

fn kind_of(value: &Value) -> &'static str {
    match value {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "text",
        Value::Array(_) => "a list",
        Value::Object(_) => "a mapping",
    }
}

// ---------------------------------------------------------------------------------------------
// Running cases.

/// The key-value store a rule case's templates read (`st2kv.system.NAME`, `kv.NAME`).
struct CaseKv(BTreeMap<String, String>);

impl KeyValueLookup for CaseKv {
    fn get(&self, name: &str) -> Option<String> {
        self.0.get(name).cloned()
    }
}

/// What a rule did with a case's trigger instance.
enum RuleOutcome {
    NoMatch(String),
    Matches(Box<crate::RuleMatch>),
    /// It matches, but its parameters cannot be rendered, or the action would refuse them.
    Error(String),
}

impl RuleOutcome {
    fn describe(&self) -> String {
        match self {
            RuleOutcome::NoMatch(why) => format!("the rule does not match: {why}"),
            RuleOutcome::Matches(found) => format!(
                "the rule matches, running {} with {}",
                found.action,
                show(&Value::Object(found.parameters.clone()))
            ),
            RuleOutcome::Error(message) => message.clone(),
        }
    }
}

/// Checks the case's rule against its trigger instance as `squall rule test` does; `Err` when
/// no loaded pack has the rule.
fn evaluate_rule(
    case: &RuleCase,
    pack: &Pack,
    catalog: &Catalog,
) -> std::result::Result<RuleOutcome, String> {
    let Some(loaded) = catalog.rules().find(|r| r.rule.reference() == case.rule) else {
        return Err(format!(
            "no loaded pack has rule '{}' (rules of pack {}: {})",
            case.rule,
            pack.reference,
            pack.rules
                .iter()
                .map(|r| r.rule.reference())
                .collect::<Vec<_>>()
                .join(", ")
        ));
    };
    // As st2-rule-tester: a rule shipped disabled is still tested.
    let mut rule = loaded.rule.clone();
    rule.enabled = true;
    let kv = Arc::new(CaseKv(case.kv.clone()));
    Ok(match check_rule(rule, &case.instance, Some(catalog), kv) {
        Err(e) => RuleOutcome::Error(format!("{e:#}")),
        Ok(crate::RuleVerdict::NoMatch { why, .. }) => RuleOutcome::NoMatch(why),
        Ok(crate::RuleVerdict::Matches(found)) if !found.refused.is_empty() => {
            RuleOutcome::Error(format!(
                "the action would be refused:\n  {}\n(parameters: {})",
                found.refused.join("\n  "),
                show(&Value::Object(found.parameters.clone()))
            ))
        }
        Ok(crate::RuleVerdict::Matches(found)) => RuleOutcome::Matches(found),
    })
}

/// What differs from what the case expects; empty when it passed.
fn run_rule_case(case: &RuleCase, pack: &Pack, catalog: &Catalog) -> Vec<String> {
    let outcome = match evaluate_rule(case, pack, catalog) {
        Ok(outcome) => outcome,
        Err(missing) => return vec![missing],
    };
    let mut failures = Vec::new();
    match (&case.error, outcome) {
        (Some(want), RuleOutcome::Error(message)) => {
            failures.extend(error_mismatch(want, &message))
        }
        (Some(want), other) => failures.push(format!(
            "error: expected one containing {}, got none: {}",
            quoted(want),
            other.describe()
        )),
        (None, RuleOutcome::Error(message)) => failures.push(format!("error: {message}")),
        (None, RuleOutcome::NoMatch(why)) if case.matches => failures.push(format!(
            "matches: expected the rule to match; it does not:\n  {why}"
        )),
        (None, RuleOutcome::NoMatch(why)) => {
            if let Some(want) = case.reason.as_ref().filter(|w| !why.contains(w.as_str())) {
                failures.push(format!(
                    "reason: expected one containing {}, got: {why}",
                    quoted(want)
                ));
            }
        }
        (None, found @ RuleOutcome::Matches(_)) if !case.matches => failures.push(format!(
            "matches: expected the rule not to match; {}",
            found.describe().trim_start_matches("the rule ")
        )),
        (None, RuleOutcome::Matches(found)) => failures.extend(check_match(case, &found)),
    }
    failures
}

/// A matching rule's action and parameters against the case's.
fn check_match(case: &RuleCase, found: &crate::RuleMatch) -> Vec<String> {
    let mut failures = Vec::new();
    let parameters = Value::Object(found.parameters.clone());
    if let Some(note) = &found.note {
        failures.push(format!(
            "{note}: its parameters could not be checked (load the pack that has it with --packs)"
        ));
    }
    if let Some(want) = case.action.as_ref().filter(|w| **w != found.action) {
        failures.push(format!("action: expected {want}, got {}", found.action));
    }
    if let Some(want) = case.parameters.as_ref().filter(|w| !same(w, &parameters)) {
        failures.push(expected_got("parameters", want, &parameters));
    }
    if let Some(want) = case
        .parameters_contain
        .as_ref()
        .filter(|w| !contains(w, &parameters))
    {
        failures.push(expected_got("parameters_contain", want, &parameters));
    }
    failures
}

/// A failure when `message` does not contain the expected `want`.
fn error_mismatch(want: &str, message: &str) -> Option<String> {
    (!message.contains(want)).then(|| {
        format!(
            "error: expected one containing {}, got: {message}",
            quoted(want)
        )
    })
}

/// Text as JSON shows it, quoted.
fn quoted(text: &str) -> String {
    Value::String(text.to_string()).to_string()
}

/// How a run ended, as an action case sees it.
struct RunOutcome {
    /// A run refused before it started (bad parameters, the pack's config) counts as failed.
    status: FinalStatus,
    result: Value,
    /// The failure's message, with where in the script.
    error: Option<String>,
    log: Vec<String>,
}

fn run_action_case(
    case: &ActionCase,
    pack: &Pack,
    catalog: &Catalog,
    rt: &RhaiRuntime,
    number: usize,
) -> Vec<String> {
    let Some(action) = catalog.action(&case.action) else {
        return vec![format!(
            "no loaded pack provides action '{}' (actions of pack {}: {})",
            case.action,
            pack.reference,
            pack.actions
                .iter()
                .map(|a| a.reference.as_str())
                .collect::<Vec<_>>()
                .join(", ")
        )];
    };
    if !matches!(
        action.meta.runner_type,
        RunnerType::Rhai | RunnerType::HttpRequest | RunnerType::Noop
    ) {
        return vec![format!(
            "action {} runs with the {} runner, which `squall pack test` cannot run: only Rhai, http-request and noop actions run here (test it under `squall run`)",
            case.action, action.meta.runner_type
        )];
    }
    let kv = Arc::new(MemoryKv::new());
    for (name, value) in &case.kv {
        if let Err(e) = kv.set(name, value, None) {
            return vec![format!("kv: cannot set '{name}': {e}")];
        }
    }
    let owner = catalog
        .packs
        .iter()
        .find(|p| p.reference == action.pack)
        .unwrap_or(pack);
    let (outcome, report) = match case_config(owner, case.config.as_ref()) {
        Err(why) => (RunOutcome::refused(why), StubReport::default()),
        Ok(config) => {
            let context = local_run(
                &case.action,
                format!("test-{}-{number}", pack.reference),
                "test".into(),
                config,
                kv.clone(),
                None,
            );
            let (run, report) = with_stubs(case.stubs.clone(), || {
                run_action(catalog, rt, &case.action, case.parameters.clone(), context)
            });
            let outcome = match run {
                Ok(record) => RunOutcome {
                    error: (record.status != FinalStatus::Succeeded)
                        .then(|| failure_message(&record.result, &action.entry_point)),
                    status: record.status,
                    result: record.result,
                    log: record.log.into_iter().map(|l| l.message).collect(),
                },
                Err(e) => RunOutcome::refused(e.to_string()),
            };
            (outcome, report)
        }
    };
    let mut failures = check_outcome(case, &outcome);
    failures.extend(check_calls(case, &report));
    failures.extend(check_kv_after(case, kv.as_ref()));
    failures
}

impl RunOutcome {
    /// A run refused before it started: bad parameters, a config that does not fit.
    fn refused(why: String) -> RunOutcome {
        RunOutcome {
            status: FinalStatus::Failed,
            result: serde_json::json!({ "error": why }),
            error: Some(why),
            log: Vec::new(),
        }
    }
}

/// The key-value store after the run against the case's `kv_after` (`null`: absent).
fn check_kv_after(case: &ActionCase, kv: &MemoryKv) -> Vec<String> {
    let mut failures = Vec::new();
    for (name, expected) in case.kv_after.iter().flatten() {
        let got = match kv.get(name) {
            Ok(Some(v)) => Value::String(v),
            Ok(None) => Value::Null,
            Err(e) => Value::String(format!("(cannot read: {e})")),
        };
        let expected = match expected {
            Value::String(_) | Value::Null => expected.clone(),
            other => Value::String(other.to_string()),
        };
        if got != expected {
            failures.push(expected_got(&format!("kv_after '{name}'"), &expected, &got));
        }
    }
    failures
}

fn check_outcome(case: &ActionCase, outcome: &RunOutcome) -> Vec<String> {
    let mut failures = Vec::new();
    let status = outcome.status.as_str();
    let status_ok = match (&case.status, &case.error) {
        (Some(want), _) => want == status,
        (None, Some(_)) => outcome.status != FinalStatus::Succeeded,
        (None, None) => outcome.status == FinalStatus::Succeeded,
    };
    if !status_ok {
        let want = case.status.clone().unwrap_or_else(|| {
            if case.error.is_some() {
                "not succeeded".into()
            } else {
                "succeeded".into()
            }
        });
        let why = match &outcome.error {
            Some(message) => format!(": {message}"),
            None => format!(", with result {}", show(&outcome.result)),
        };
        failures.push(format!("status: expected {want}, got {status}{why}"));
    }
    if let Some(want) = &case.error {
        match &outcome.error {
            Some(message) => failures.extend(error_mismatch(want, message)),
            None if status_ok => failures.push(format!(
                "error: expected one containing {}, got none",
                quoted(want)
            )),
            None => {}
        }
    }
    if let Some(want) = &case.result {
        if !same(want, &outcome.result) {
            failures.push(expected_got("result", want, &outcome.result));
        }
    }
    if let Some(want) = &case.result_contains {
        if !contains(want, &outcome.result) {
            failures.push(expected_got("result_contains", want, &outcome.result));
        }
    }
    for want in &case.log_contains {
        if !outcome.log.iter().any(|l| l.contains(want.as_str())) {
            failures.push(format!(
                "log_contains: no log line contains {}; the log:\n{}",
                quoted(want),
                if outcome.log.is_empty() {
                    "  (empty)".to_string()
                } else {
                    indent(&outcome.log.join("\n"), "  ")
                }
            ));
        }
    }
    failures
}

/// The case's declared calls against the calls the run made.
fn check_calls(case: &ActionCase, report: &StubReport) -> Vec<String> {
    let mut failures = Vec::new();
    for call in report.unanswered() {
        failures.push(format!(
            "undeclared call: {} (declare its answer under `{}:`; a test never reaches a real system)",
            call.label,
            if call.request.get("http").is_some() {
                "http"
            } else {
                "docker"
            }
        ));
    }
    for label in &report.unused {
        failures.push(format!(
            "declared but never called: {label} (mark it `optional: true` if the run may not call it)"
        ));
    }
    if let Some(want) = &case.calls {
        let made: Vec<Value> = report.calls.iter().map(|c| c.request.clone()).collect();
        let matches =
            want.len() == made.len() && want.iter().zip(&made).all(|(w, m)| contains(w, m));
        if !matches {
            failures.push(expected_got(
                "calls",
                &Value::Array(want.clone()),
                &Value::Array(made),
            ));
        }
    }
    failures
}

/// The pack config an action case runs with: the case's `config:`, checked against the
/// pack's `config.schema.yaml` with its defaults applied, as `squall run` checks
/// `configs/<pack>.yaml`. A config that does not fit fails the run, as it would there.
fn case_config(
    pack: &Pack,
    given: Option<&Map<String, Value>>,
) -> std::result::Result<Value, String> {
    let given = given.cloned().unwrap_or_default();
    let schema = match &pack.config_schema {
        None if given.is_empty() => return Ok(Value::Object(Map::new())),
        None => {
            return Err(format!(
                "pack '{}' has no config.schema.yaml, so it takes no config",
                pack.reference
            ))
        }
        Some(Value::Object(m)) => m.clone(),
        Some(Value::Null) => Map::new(),
        Some(_) => {
            return Err(format!(
                "pack '{}': config.schema.yaml must map each setting to its schema",
                pack.reference
            ))
        }
    };
    // A schema is read as action parameters, so settings are checked and cast like them.
    let doc = serde_json::json!({
        "name": "config",
        "runner_type": "rhai",
        "entry_point": "config",
        "parameters": schema,
    });
    let text = serde_yaml::to_string(&doc).map_err(|e| e.to_string())?;
    let meta = ActionMeta::from_yaml(&text).map_err(|problems| {
        format!(
            "pack '{}': config.schema.yaml is not a valid config schema: {}",
            pack.reference,
            problems
                .iter()
                .map(|p| p.message.clone())
                .collect::<Vec<_>>()
                .join("; ")
        )
    })?;
    let undeclared: Vec<&String> = given
        .keys()
        .filter(|k| !meta.parameters.contains_key(*k))
        .collect();
    if !undeclared.is_empty() {
        return Err(format!(
            "config: {} not in the pack's config.schema.yaml (it declares: {})",
            undeclared
                .iter()
                .map(|k| format!("setting '{k}'"))
                .collect::<Vec<_>>()
                .join(", "),
            meta.parameters
                .keys()
                .cloned()
                .collect::<Vec<_>>()
                .join(", ")
        ));
    }
    validate_params(&meta, given)
        .map(Value::Object)
        .map_err(|errors| {
            format!(
                "the pack's config does not fit its config.schema.yaml: {}",
                errors
                    .iter()
                    .map(|e| format!("setting '{}': {}", e.parameter, e.message))
                    .collect::<Vec<_>>()
                    .join("; ")
            )
        })
}

// ---------------------------------------------------------------------------------------------
// Comparing and showing values.

/// Equal as JSON, a number equal to the same number written otherwise (`2` and `2.0`).
fn same(a: &Value, b: &Value) -> bool {
    match (a, b) {
        (Value::Number(x), Value::Number(y)) => match (x.as_i64(), y.as_i64()) {
            (Some(x), Some(y)) => x == y,
            _ => x.as_f64() == y.as_f64(),
        },
        (Value::Array(x), Value::Array(y)) => {
            x.len() == y.len() && x.iter().zip(y).all(|(x, y)| same(x, y))
        }
        (Value::Object(x), Value::Object(y)) => {
            x.len() == y.len() && x.iter().all(|(k, v)| y.get(k).is_some_and(|w| same(v, w)))
        }
        _ => a == b,
    }
}

/// Whether `actual` holds `expected`: a mapping may have keys `expected` does not name (a
/// missing key is `null`), lists are compared item by item and must be as long.
fn contains(expected: &Value, actual: &Value) -> bool {
    match (expected, actual) {
        (Value::Object(e), Value::Object(a)) => e
            .iter()
            .all(|(k, v)| contains(v, a.get(k).unwrap_or(&Value::Null))),
        (Value::Array(e), Value::Array(a)) => {
            e.len() == a.len() && e.iter().zip(a).all(|(e, a)| contains(e, a))
        }
        _ => same(expected, actual),
    }
}

/// A value as JSON: on one line when short, else pretty-printed.
fn show(value: &Value) -> String {
    let line = value.to_string();
    if line.len() <= 80 {
        return line;
    }
    serde_json::to_string_pretty(value).unwrap_or(line)
}

fn expected_got(what: &str, expected: &Value, got: &Value) -> String {
    let (e, g) = (show(expected), show(got));
    if e.contains('\n') || g.contains('\n') {
        format!(
            "{what}:\n  expected {}\n  got      {}",
            indent(&e, "           ").trim_start(),
            indent(&g, "           ").trim_start()
        )
    } else {
        format!(
            "{what}: expected {e}\n{}got {g}",
            " ".repeat(what.len() + 7)
        )
    }
}

// ---------------------------------------------------------------------------------------------
// JUnit XML.

/// The results as JUnit XML (one `testsuite` per pack, one `testcase` per case, `failure` for
/// a case that failed and `error` for bad input), as Jenkins and GitLab read it.
fn junit(suites: &[Suite]) -> String {
    let count =
        |s: &Suite, f: fn(&Verdict) -> bool| s.cases.iter().filter(|c| f(&c.verdict)).count();
    let is_failure = |v: &Verdict| matches!(v, Verdict::Failed(_));
    let is_error = |v: &Verdict| matches!(v, Verdict::Invalid(_));
    let time = |s: &Suite| s.cases.iter().map(|c| c.seconds).sum::<f64>();
    let tests: usize = suites.iter().map(|s| s.cases.len()).sum();
    let failures: usize = suites.iter().map(|s| count(s, is_failure)).sum();
    let errors: usize = suites.iter().map(|s| count(s, is_error)).sum();
    let total: f64 = suites.iter().map(time).sum();
    let mut xml = String::from("<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n");
    xml.push_str(&format!(
        "<testsuites name=\"squall pack test\" tests=\"{tests}\" failures=\"{failures}\" errors=\"{errors}\" time=\"{total:.3}\">\n"
    ));
    for suite in suites {
        xml.push_str(&format!(
            "  <testsuite name=\"{}\" tests=\"{}\" failures=\"{}\" errors=\"{}\" skipped=\"0\" time=\"{:.3}\">\n",
            escape(&suite.name),
            suite.cases.len(),
            count(suite, is_failure),
            count(suite, is_error),
            time(suite)
        ));
        for case in &suite.cases {
            let file = match case.line {
                Some(line) => format!("{}:{line}", case.file.display()),
                None => case.file.display().to_string(),
            };
            xml.push_str(&format!(
                "    <testcase name=\"{}\" classname=\"{}\" file=\"{}\" time=\"{:.3}\"",
                escape(&case.name),
                escape(&case.class),
                escape(&case.file.display().to_string()),
                case.seconds
            ));
            let (element, text) = match &case.verdict {
                Verdict::Passed => {
                    xml.push_str("/>\n");
                    continue;
                }
                Verdict::Failed(why) => ("failure", why.join("\n")),
                Verdict::Invalid(why) => ("error", why.clone()),
            };
            let message = text.lines().next().unwrap_or_default();
            xml.push_str(&format!(
                ">\n      <{element} message=\"{}\" type=\"{}\">{}</{element}>\n    </testcase>\n",
                escape(message),
                if element == "failure" {
                    "failure"
                } else {
                    "invalid"
                },
                escape_text(&format!("{file}\n{text}"))
            ));
        }
        xml.push_str("  </testsuite>\n");
    }
    xml.push_str("</testsuites>\n");
    xml
}

/// Text as an XML attribute value: markup and quotes escaped, line breaks kept as character
/// references (a parser would turn them into spaces), and the characters XML 1.0 forbids even
/// escaped replaced by U+FFFD.
fn escape(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        match c {
            '\n' => out.push_str("&#10;"),
            '\r' => out.push_str("&#13;"),
            '\t' => out.push_str("&#9;"),
            c => escape_char(c, &mut out),
        }
    }
    out
}

/// Text as XML character data: as [`escape`], with line breaks left as they are.
fn escape_text(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        match c {
            '\n' | '\t' => out.push(c),
            c => escape_char(c, &mut out),
        }
    }
    out
}

fn escape_char(c: char, out: &mut String) {
    match c {
        '&' => out.push_str("&amp;"),
        '<' => out.push_str("&lt;"),
        '>' => out.push_str("&gt;"),
        '"' => out.push_str("&quot;"),
        '\'' => out.push_str("&apos;"),
        c if (c as u32) < 0x20 || c == '\u{FFFE}' || c == '\u{FFFF}' => out.push('\u{FFFD}'),
        c => out.push(c),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn values_compare_as_json_numbers_and_subsets() {
        assert!(same(&json!({"a": [1, 2.0]}), &json!({"a": [1.0, 2]})));
        assert!(!same(&json!({"a": 1}), &json!({"a": 1, "b": 2})));
        assert!(!same(&json!("1"), &json!(1)));
        assert!(contains(&json!({"a": 1}), &json!({"a": 1, "b": 2})));
        assert!(contains(&json!({"a": null}), &json!({"b": 2})));
        assert!(contains(
            &json!({"list": [{"id": "x"}]}),
            &json!({"list": [{"id": "x", "n": 1}]})
        ));
        assert!(!contains(&json!({"list": [1]}), &json!({"list": [1, 2]})));
        assert!(!contains(&json!({"a": {"b": 1}}), &json!({"a": {"b": 2}})));
    }

    #[test]
    fn xml_text_is_escaped_and_forbidden_characters_replaced() {
        assert_eq!(
            escape("a<b & \"c\" 'd'>\n\u{1}"),
            "a&lt;b &amp; &quot;c&quot; &apos;d&apos;&gt;&#10;\u{FFFD}"
        );
        assert_eq!(
            escape_text("x < y\n\r\u{1b}[0m"),
            "x &lt; y\n\u{FFFD}\u{FFFD}[0m"
        );
    }

    #[test]
    fn cases_are_found_with_their_lines() {
        let text = "# tests\nrules:\n  - name: one\n    rule: p.r\n    matches: true\n\n  - rule: p.r\n    name: two\nactions:\n- name: three\n  action: p.a\n";
        assert_eq!(item_lines(text, "rules"), vec![3, 7]);
        assert_eq!(item_lines(text, "actions"), vec![10]);
        assert_eq!(
            item_lines("rules: [{name: a}]\n", "rules"),
            Vec::<usize>::new()
        );
        let fields = Map::new();
        let reader = Reader {
            fields: &fields,
            text,
            start: Some(7),
            end: Some(9),
            problems: Vec::new(),
        };
        assert_eq!(reader.line_of("rule"), Some(7));
        assert_eq!(reader.line_of("name"), Some(8));
        assert_eq!(reader.line_of("matches"), None);
    }

    #[test]
    fn a_bad_file_is_reported_with_every_problem_and_its_line() {
        let text = "rules:\n  - name: r\n    rule: p.r\n    matchs: true\nactions:\n  - name: a\n    action: p.a\n    status: done\n    http:\n      - {url: x, staus: 200}\n";
        let why = parse_file(Path::new("t.yaml"), text)
            .err()
            .unwrap_or_default();
        assert!(
            why.contains("t.yaml:4: rule case 'r': unknown key 'matchs'"),
            "{why}"
        );
        assert!(
            why.contains("t.yaml:2: rule case 'r': `trigger_instance`"),
            "{why}"
        );
        assert!(
            why.contains("t.yaml:8: action case 'a': unknown status 'done'"),
            "{why}"
        );
        assert!(
            why.contains("t.yaml:9: action case 'a': http #1: unknown field `staus`"),
            "{why}"
        );
        let syntax = parse_file(Path::new("t.yaml"), "rules:\n  - name: [\n")
            .err()
            .unwrap_or_default();
        assert!(syntax.starts_with("t.yaml:"), "{syntax}");
    }
}
