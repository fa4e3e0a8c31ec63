//! Which runners a deployment allows (`runners:` in the settings): an action needing another
//! is a pack problem, reported with its file and line and not loaded, and so are the rules and
//! aliases that would run it; nothing fails silently when it is asked for.

use squall_actions::RunnerType;

use crate::packs::{Catalog, Problem};

/// Reads the settings' runner names (`orquesta` and `workflow` are one runner).
pub fn parse(names: &[String]) -> Result<Vec<RunnerType>, String> {
    let mut out = Vec::new();
    for name in names {
        let runner = RunnerType::parse(name.trim()).ok_or_else(|| {
            format!(
                "runners: '{name}' is not a runner squall knows (known: {})",
                RunnerType::KNOWN.join(", ")
            )
        })?;
        if !out.contains(&runner) {
            out.push(runner);
        }
    }
    Ok(out)
}

/// Why an action of `runner` is not loaded.
pub fn refusal(runner: &RunnerType, allowed: &[RunnerType]) -> String {
    let names: Vec<String> = allowed.iter().map(ToString::to_string).collect();
    format!(
        "runner '{runner}' is not allowed here (the settings' `runners` allow: {}); the action is not loaded",
        if names.is_empty() { "none".to_string() } else { names.join(", ") }
    )
}

/// Leaves out the actions whose runner is not allowed, and the rules and aliases that run them,
/// each reported.
pub fn restrict(catalog: &mut Catalog, allowed: &[RunnerType]) {
    let mut problems = Vec::new();
    let mut refused = std::collections::HashSet::new();
    for pack in &mut catalog.packs {
        pack.actions.retain(|a| {
            if allowed.contains(&a.meta.runner_type) {
                return true;
            }
            let text = std::fs::read_to_string(&a.file).unwrap_or_default();
            problems.push(Problem {
                file: a.file.clone(),
                line: squall_rules::line_of(&text, "runner_type"),
                column: None,
                message: format!(
                    "action '{}': {}",
                    a.reference,
                    refusal(&a.meta.runner_type, allowed)
                ),
            });
            refused.insert(a.reference.clone());
            false
        });
    }
    if refused.is_empty() {
        return;
    }
    for pack in &mut catalog.packs {
        pack.rules.retain(|r| {
            if !refused.contains(&r.rule.action_ref) {
                return true;
            }
            let text = std::fs::read_to_string(&r.file).unwrap_or_default();
            problems.push(Problem {
                file: r.file.clone(),
                line: squall_rules::line_of(&text, "ref"),
                column: None,
                message: format!(
                    "rule '{}' runs action '{}', whose runner is not allowed here; the rule is not loaded",
                    r.rule.reference(),
                    r.rule.action_ref
                ),
            });
            false
        });
        pack.aliases.retain(|a| {
            if !refused.contains(&a.alias.action_ref) {
                return true;
            }
            let text = std::fs::read_to_string(&a.file).unwrap_or_default();
            problems.push(Problem {
                file: a.file.clone(),
                line: squall_rules::line_of(&text, "action_ref"),
                column: None,
                message: format!(
                    "alias '{}' runs action '{}', whose runner is not allowed here; the alias is not loaded",
                    a.reference, a.alias.action_ref
                ),
            });
            false
        });
    }
    catalog.problems.extend(problems);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names() {
        let r = parse(&["rhai".into(), "orquesta".into(), "workflow".into()]).expect("known");
        assert_eq!(r, vec![RunnerType::Rhai, RunnerType::Workflow]);
        let e = parse(&["bash".into()]).expect_err("unknown");
        assert!(e.contains("'bash'") && e.contains("local-shell-cmd"), "{e}");
    }
}
