//! What squall says in chat: the message an alias execution's result becomes (the alias's
//! `result.format`, or st2's default layout), and the help shown when a command matches no
//! alias. Pure text from records; nothing here posts or runs anything.

use serde_json::{json, Value};
use squall_rules::Alias;

/// The result message of an execution a chat command requested, and the alias's rendered
/// `result.extra`: `None` when the alias turns its results off (`result.enabled: false`).
/// `execution` is the execution as the API shows it.
pub fn result_message(alias: Option<(&str, &Alias)>, execution: &Value) -> Option<(String, Value)> {
    let options = alias.and_then(|(_, a)| a.result.as_ref());
    if options.is_some_and(|r| !r.enabled) {
        return None;
    }
    let context = json!({
        "execution": execution,
        "alias": alias.map(|(reference, a)| json!({
            "ref": reference,
            "name": a.name,
            "action_ref": a.action_ref,
            "description": a.description,
            "extra": a.extra,
        })),
    });
    let env = squall_rules::template::environment();
    let message = match options.and_then(|r| r.format.as_deref()) {
        Some(format) => env.render_str(format, &context).unwrap_or_else(|e| {
            format!(
                "Cannot render \"format\" in field \"result\" for alias. {}",
                squall_rules::template::describe(&e)
            )
        }),
        None => default_result(execution),
    };
    let extra = options
        .map(|r| render_values(&env, &Value::Object(r.extra.clone()), &context))
        .unwrap_or(Value::Null);
    Some((message.trim().to_string(), extra))
}

/// st2's `render_values`: every string inside rendered as a template (a string that cannot be
/// rendered stays as written).
pub(crate) fn render_values(
    env: &minijinja::Environment<'_>,
    value: &Value,
    context: &Value,
) -> Value {
    match value {
        Value::String(s) => Value::String(env.render_str(s, context).unwrap_or_else(|_| s.clone())),
        Value::Array(items) => Value::Array(
            items
                .iter()
                .map(|v| render_values(env, v, context))
                .collect(),
        ),
        Value::Object(map) => Value::Object(
            map.iter()
                .map(|(k, v)| (k.clone(), render_values(env, v, context)))
                .collect(),
        ),
        other => other.clone(),
    }
}

/// st2's chatops default template, in the same layout: `Action <ref> completed.`, status,
/// execution id, then the result's fields as `key : value` lines (nested ones indented).
pub fn default_result(execution: &Value) -> String {
    let reference = execution["action"]["ref"].as_str().unwrap_or("?");
    let mut out = format!(
        "Action {reference} completed.\nstatus : {}\nexecution: {}\n",
        execution["status"].as_str().unwrap_or("?"),
        execution["id"].as_str().unwrap_or("?"),
    );
    let result = &execution["result"];
    let empty = match result {
        Value::Null => true,
        Value::Object(m) => m.is_empty(),
        Value::Array(a) => a.is_empty(),
        Value::String(s) => s.is_empty(),
        _ => false,
    };
    if !empty {
        out.push_str("\nresult :\n--------\n");
        match result {
            Value::Object(map) => serialize(map, "", &mut out),
            other => {
                out.push_str(&scalar(other));
                out.push('\n');
            }
        }
    }
    out
}

fn serialize(map: &serde_json::Map<String, Value>, prefix: &str, out: &mut String) {
    for (key, value) in map {
        match value {
            Value::Object(inner) => {
                out.push_str(&format!("{prefix}{key} : \n"));
                serialize(inner, &format!("{prefix}  "), out);
            }
            Value::String(s) if s.trim().contains('\n') => {
                out.push_str(&format!("{prefix}{key} : \n{prefix}  {}\n", s.trim()));
            }
            other => out.push_str(&format!("{prefix}{key} : {}\n", scalar(other).trim())),
        }
    }
}

fn scalar(value: &Value) -> String {
    match value {
        Value::String(s) => s.clone(),
        Value::Null => "None".to_string(),
        other => other.to_string(),
    }
}

/// The acknowledgement of a command: the alias's `ack.format` rendered over `{execution,
/// actionalias}` when it has one; else which action runs and its execution id. `None` when the
/// alias turns acknowledgements off.
pub fn ack_message(alias: &Alias, rendered: Option<String>, execution: &Value) -> Option<String> {
    if alias.ack.as_ref().is_some_and(|a| !a.enabled) {
        return None;
    }
    Some(rendered.unwrap_or_else(|| {
        format!(
            "Running {} (execution {}).",
            execution["action"]["ref"]
                .as_str()
                .unwrap_or(&alias.action_ref),
            execution["id"].as_str().unwrap_or("?"),
        )
    }))
}

/// Help for a command no alias matched: the formats whose first word is closest to the
/// command's (by edit distance), one line each, at most `limit`.
pub fn closest_help(aliases: &[(String, &Alias)], command: &str, limit: usize) -> Vec<String> {
    let first = command.split_whitespace().next().unwrap_or("");
    let mut lines: Vec<(usize, String)> = aliases
        .iter()
        .filter(|(_, a)| a.enabled)
        .flat_map(|(_, a)| {
            a.formats.iter().map(move |f| {
                let shown = f
                    .display
                    .clone()
                    .or_else(|| f.representations.first().cloned())
                    .unwrap_or_default();
                let distance = edit_distance(shown.split_whitespace().next().unwrap_or(""), first);
                let line = match &a.description {
                    Some(d) if !d.is_empty() => format!("{shown} — {d}"),
                    _ => shown,
                };
                (distance, line)
            })
        })
        .collect();
    lines.sort();
    lines.dedup();
    lines.into_iter().take(limit).map(|(_, l)| l).collect()
}

/// Levenshtein's distance, in characters.
fn edit_distance(a: &str, b: &str) -> usize {
    let b: Vec<char> = b.chars().collect();
    let mut row: Vec<usize> = (0..=b.len()).collect();
    for (i, ca) in a.chars().enumerate() {
        let mut diagonal = row[0];
        row[0] = i + 1;
        for (j, cb) in b.iter().enumerate() {
            let above = row[j + 1];
            row[j + 1] = (above + 1)
                .min(row[j] + 1)
                .min(diagonal + usize::from(ca != *cb));
            diagonal = above;
        }
    }
    row[b.len()]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_default_reads_as_st2s() {
        let e = json!({"id": "E1", "status": "succeeded", "action": {"ref": "cdos.service"},
            "result": {"console": "http://c/x", "name": "x", "nested": {"a": 1}, "log": "one\ntwo"}});
        assert_eq!(
            default_result(&e),
            "Action cdos.service completed.\nstatus : succeeded\nexecution: E1\n\nresult :\n--------\nconsole : http://c/x\nname : x\nnested : \n  a : 1\nlog : \n  one\ntwo\n"
        );
        let failed = json!({"id": "E2", "status": "failed", "action": {"ref": "a.b"}, "result": {"error": "boom"}});
        assert!(default_result(&failed).ends_with("error : boom\n"));
    }

    #[test]
    fn help_lists_the_closest_aliases_first() {
        let text = "name: scale\naction_ref: cdos.scale\ndescription: Scale.\nformats: [\"cdos scale {{ app }} {{ n }}\"]\n";
        let scale = Alias::from_yaml(text).expect("alias");
        let other =
            Alias::from_yaml("name: greet\naction_ref: x.y\nformats: [\"hello {{ who }}\"]\n")
                .expect("alias");
        let all = vec![
            ("cdos.scale".to_string(), &scale),
            ("x.greet".to_string(), &other),
        ];
        assert_eq!(
            closest_help(&all, "cdos scal web", 1),
            ["cdos scale {{ app }} {{ n }} — Scale."]
        );
        assert_eq!(closest_help(&all, "helo", 1), ["hello {{ who }}"]);
        assert_eq!(closest_help(&all, "what", 5).len(), 2);
    }
}
