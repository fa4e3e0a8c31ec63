//! Data-driven alias tests: one folder per case under `tests/alias_cases/`, run by one test
//! function. The `st2_*` cases are StackStorm's own unit tests of its alias parser.
//!
//! A case folder holds `command.txt` (the command; one final newline is not part of it), either
//! `alias.yaml` (one alias) or an `aliases/` folder (several, tried in file-name order), and
//! `expected.json`: `{"alias": REF, "display": TEXT, "format": REPRESENTATION, "parameters":
//! {...}}` for a match, or `{"error": MESSAGE}` (st2's message) when no format or more than one
//! matches. A new case is a new folder, not new code.

use std::path::{Path, PathBuf};

use serde_json::{json, Value};
use squall_rules::{match_command, Alias};

fn read(path: &Path) -> String {
    std::fs::read_to_string(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

fn load(path: &Path) -> Result<Alias, String> {
    Alias::from_yaml(&read(path)).map_err(|errs| {
        let lines: Vec<String> = errs.iter().map(ToString::to_string).collect();
        format!("{}: {}", path.display(), lines.join("; "))
    })
}

fn run_case(dir: &Path) -> Result<(), String> {
    let files: Vec<PathBuf> = if dir.join("aliases").is_dir() {
        let mut files: Vec<PathBuf> = std::fs::read_dir(dir.join("aliases"))
            .map_err(|e| e.to_string())?
            .filter_map(|e| e.ok().map(|e| e.path()))
            .collect();
        files.sort();
        files
    } else {
        vec![dir.join("alias.yaml")]
    };
    let aliases = files
        .iter()
        .map(|f| load(f))
        .collect::<Result<Vec<_>, _>>()?;
    let text = read(&dir.join("command.txt"));
    let command = text.strip_suffix('\n').unwrap_or(&text);
    let expected: Value = serde_json::from_str(&read(&dir.join("expected.json")))
        .map_err(|e| format!("expected.json: {e}"))?;

    let got = match match_command(&aliases, command) {
        Ok(m) => {
            let alias = &aliases[m.index];
            json!({
                "alias": alias.reference(alias.pack.as_deref().unwrap_or("cases")),
                "display": m.display,
                "format": m.representation,
                "parameters": m.parameters,
            })
        }
        Err(e) => json!({ "error": e.to_string() }),
    };
    if got == expected {
        Ok(())
    } else {
        Err(format!("got {got:#}\nexpected {expected:#}"))
    }
}

#[test]
fn alias_cases() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/alias_cases");
    let mut dirs: Vec<PathBuf> = std::fs::read_dir(&root)
        .unwrap_or_else(|e| panic!("{}: {e}", root.display()))
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.is_dir())
        .collect();
    dirs.sort();
    assert!(dirs.len() >= 50, "only {} alias cases found", dirs.len());
    let failures: Vec<String> = dirs
        .iter()
        .filter_map(|d| {
            run_case(d).err().map(|e| {
                format!(
                    "{}:\n{e}",
                    d.file_name().unwrap_or_default().to_string_lossy()
                )
            })
        })
        .collect();
    assert!(
        failures.is_empty(),
        "{} of {} alias cases failed:\n\n{}",
        failures.len(),
        dirs.len(),
        failures.join("\n\n")
    );
}
