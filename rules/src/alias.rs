//! Action aliases (st2's ChatOps commands): the alias file model and matching a command against
//! aliases' formats, as StackStorm matches them.
//!
//! An alias file (`packs/<pack>/aliases/*.yaml`) has st2's fields: `name`, `pack`,
//! `action_ref`, `description`, `enabled`, `formats` (each a string, or
//! `{display, representation: [...]}`), `ack` (`enabled`, `format`, `append_url`), `result`
//! (`enabled`, `format`, `extra`) and `extra`. [`Alias::from_yaml`] reports every problem with
//! its line, including a format that is not a valid regular expression once its parameters
//! are substituted. st2's `immutable_parameters` and a format's `match_multiple` are refused
//! with that reason (squall does not support them); `id`, `ref`, `uid` and `metadata_file`
//! are accepted and ignored.
//!
//! Matching follows st2's `ActionAliasFormatParser` and `get_matching_alias`:
//! - a format is a regular expression, not escaped text. `{{ name }}` becomes a named group,
//!   `{{ name=default }}` an optional one (with the whitespace before it) whose default applies
//!   when it matches nothing; a value may be quoted (the quotes are not part of it) or a `{...}`
//!   block. A format without `^`/`\A` gets `^\s*` in front, one without `$`/`\Z` gets `\s*$`
//!   behind, and the command is padded with a space on each side, so the whole command must
//!   match; the last parameter therefore takes the rest of the line. Matching is case-sensitive.
//! - `key=value` pairs at the end of the command (values quoted, `{...}` or one word) are cut
//!   from it before matching and become parameters, winning over same-named format parameters.
//! - every representation of every enabled alias is tried; more than one match is refused
//!   ("Command '...' matched more than 1 pattern"), none is "Command '...' matched no patterns".
//!
//! Parameters come out as st2 extracts them: strings (or null for a named group that took no
//! part in the match), before any casting to the action's parameter types.
//!
//! Pure: no file system, no clock, no tokio. Callers hand it text.

use std::collections::HashMap;

use fancy_regex::Regex;
use indexmap::IndexMap;
use serde::Deserialize;
use serde_json::{Map, Value};

use crate::model::{line_of, yaml_problem, SourceProblem};
use crate::operators::python_regex;

/// One alias, as loaded from its file.
#[derive(Debug, Clone)]
pub struct Alias {
    pub name: String,
    /// The pack the file names (`None` when it names none: the pack it lives in).
    pub pack: Option<String>,
    pub action_ref: String,
    pub description: Option<String>,
    pub enabled: bool,
    pub formats: Vec<AliasFormat>,
    pub ack: Option<Ack>,
    pub result: Option<ResultOptions>,
    pub extra: Map<String, Value>,
    /// squall's extension: who may run it, and where (empty lists: anyone, anywhere).
    pub allow: Allow,
}

/// `allow` (a squall extension to st2's alias): the users (squall users, or chat user names or
/// ids) who may run the alias's commands, and the channels (names or ids) they may run them in.
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Allow {
    #[serde(default)]
    pub users: Vec<String>,
    #[serde(default)]
    pub channels: Vec<String>,
}

impl Allow {
    /// Why the command may not run for `users` (each name the person goes by) in `channels`
    /// (each name the channel goes by), if it may not. A leading `#` or `@` is not part of the
    /// name.
    pub fn refuses(&self, users: &[&str], channels: &[&str]) -> Option<String> {
        let bare = |s: &str| s.trim_start_matches(['#', '@']).to_string();
        let has = |list: &[String], names: &[&str]| {
            list.iter()
                .any(|l| names.iter().any(|n| !n.is_empty() && bare(l) == bare(n)))
        };
        if !self.users.is_empty() && !has(&self.users, users) {
            return Some(format!("only {} may run it", self.users.join(", ")));
        }
        if !self.channels.is_empty() && !has(&self.channels, channels) {
            return Some(format!("it runs only in {}", self.channels.join(", ")));
        }
        None
    }
}

/// One entry of `formats`: what help shows, and the regular expressions commands are matched
/// against. A plain string is both.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AliasFormat {
    pub display: Option<String>,
    pub representations: Vec<String>,
}

/// `ack`: what the chat bot answers when it accepts a command.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Ack {
    #[serde(default = "yes")]
    pub enabled: bool,
    pub format: Option<String>,
    #[serde(default)]
    pub extra: Map<String, Value>,
    #[serde(default = "yes")]
    pub append_url: bool,
}

/// `result`: how the chat bot shows the execution's result.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ResultOptions {
    #[serde(default = "yes")]
    pub enabled: bool,
    pub format: Option<String>,
    #[serde(default)]
    pub extra: Map<String, Value>,
}

fn yes() -> bool {
    true
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawAlias {
    name: String,
    #[serde(default)]
    pack: Option<String>,
    action_ref: String,
    #[serde(default)]
    description: Option<String>,
    #[serde(default = "yes")]
    enabled: bool,
    #[serde(default)]
    formats: Vec<RawFormat>,
    #[serde(default)]
    ack: Option<Ack>,
    #[serde(default)]
    result: Option<ResultOptions>,
    #[serde(default)]
    extra: Map<String, Value>,
    #[serde(default)]
    allow: Allow,
    // In st2's schema, refused with a reason rather than as an unknown field.
    #[serde(default)]
    immutable_parameters: Option<Value>,
    // Carried by st2's exports (ids, and the file st2 loaded it from); squall has no use for
    // them.
    #[serde(default, rename = "metadata_file")]
    _metadata_file: Option<Value>,
    #[serde(default, rename = "id")]
    _id: Option<Value>,
    #[serde(default, rename = "ref")]
    _ref: Option<Value>,
    #[serde(default, rename = "uid")]
    _uid: Option<Value>,
}

#[derive(Deserialize)]
#[serde(untagged)]
enum RawFormat {
    Text(String),
    Entry(RawFormatEntry),
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawFormatEntry {
    #[serde(default)]
    display: Option<String>,
    #[serde(default)]
    representation: Option<OneOrMany>,
    #[serde(default)]
    match_multiple: Option<bool>,
}

#[derive(Deserialize)]
#[serde(untagged)]
enum OneOrMany {
    One(String),
    Many(Vec<String>),
}

impl Alias {
    /// Parses an alias file (YAML or JSON). Every problem found is returned, each with its line
    /// when it can be located.
    pub fn from_yaml(text: &str) -> Result<Alias, Vec<SourceProblem>> {
        let raw: RawAlias = serde_yaml::from_str(text).map_err(|e| vec![yaml_problem(&e)])?;
        let mut problems = Vec::new();
        if raw.name.trim().is_empty() {
            problems.push(problem(line_of(text, "name"), "name must not be empty"));
        }
        match raw.action_ref.split_once('.') {
            Some((pack, action)) if !pack.is_empty() && !action.is_empty() => {}
            _ => problems.push(problem(
                line_of(text, "action_ref"),
                format!(
                    "action_ref {:?} must be a reference 'pack.action'",
                    raw.action_ref
                ),
            )),
        }
        if raw.immutable_parameters.is_some() {
            problems.push(problem(
                line_of(text, "immutable_parameters"),
                "immutable_parameters is not supported by squall",
            ));
        }
        let formats: Vec<AliasFormat> = raw
            .formats
            .into_iter()
            .map(|f| match f {
                RawFormat::Text(s) => AliasFormat {
                    display: Some(s.clone()),
                    representations: vec![s],
                },
                RawFormat::Entry(e) => {
                    if e.match_multiple == Some(true) {
                        problems.push(problem(
                            line_of(text, "match_multiple"),
                            "match_multiple is not supported by squall",
                        ));
                    }
                    AliasFormat {
                        display: e.display,
                        representations: match e.representation {
                            None => Vec::new(),
                            Some(OneOrMany::One(s)) => vec![s],
                            Some(OneOrMany::Many(v)) => v,
                        },
                    }
                }
            })
            .collect();
        for f in &formats {
            if f.display.is_none() && f.representations.is_empty() {
                problems.push(problem(
                    line_of(text, "formats"),
                    "a format needs a display or a representation",
                ));
            }
            for r in &f.representations {
                if let Err(e) = FormatParser::new(r) {
                    problems.push(problem(line_containing(text, r), e));
                }
            }
        }
        if !problems.is_empty() {
            return Err(problems);
        }
        Ok(Alias {
            name: raw.name,
            pack: raw.pack,
            action_ref: raw.action_ref,
            description: raw.description,
            enabled: raw.enabled,
            formats,
            ack: raw.ack,
            result: raw.result,
            extra: raw.extra,
            allow: raw.allow,
        })
    }

    /// `pack.name`, with `pack` the pack it was loaded into.
    pub fn reference(&self, pack: &str) -> String {
        format!("{pack}.{}", self.name)
    }

    /// What st2's `list_format_strings_from_aliases` yields: (display, representation) for each
    /// representation; a format with a display and no representation matches as `""`.
    pub fn patterns(&self) -> Vec<(Option<&str>, &str)> {
        let mut out = Vec::new();
        for f in &self.formats {
            if f.representations.is_empty() {
                out.push((f.display.as_deref(), ""));
            }
            for r in &f.representations {
                out.push((f.display.as_deref(), r.as_str()));
            }
        }
        out
    }
}

fn problem(line: Option<usize>, message: impl Into<String>) -> SourceProblem {
    SourceProblem {
        line,
        column: None,
        message: message.into(),
    }
}

/// The first line (1-based) holding `needle` (a format as written, unquoted), else the line of
/// `formats:`.
fn line_containing(text: &str, needle: &str) -> Option<usize> {
    let first = needle.lines().next().unwrap_or(needle);
    text.lines()
        .position(|l| !first.is_empty() && l.contains(first))
        .map(|i| i + 1)
        .or_else(|| line_of(text, "formats"))
}

/// Parameters extracted from a command, in st2's order (the format's groups, then the trailing
/// `key=value` pairs). `None` is a named group that took no part in the match.
pub type AliasParameters = IndexMap<String, Option<String>>;

/// A command matched by exactly one format.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AliasMatch {
    /// The index of the matched alias in the slice given to [`match_command`].
    pub index: usize,
    pub display: Option<String>,
    pub representation: String,
    pub parameters: AliasParameters,
}

/// Why a command was not matched, in st2's words.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum AliasMatchError {
    #[error("Command '{command}' matched no patterns")]
    NoMatch { command: String },
    /// `matches` names each (alias index, representation) that matched.
    #[error("Command '{command}' matched more than 1 pattern")]
    Ambiguous {
        command: String,
        matches: Vec<(usize, String)>,
    },
}

/// Why one format does not take a command (st2's `ParseException`).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct ParseError(pub String);

/// Matches `command` against every representation of every enabled alias, as st2's
/// `get_matching_alias` does: exactly one must match. To match many commands against the same
/// aliases, build an [`AliasIndex`] once.
pub fn match_command(aliases: &[Alias], command: &str) -> Result<AliasMatch, AliasMatchError> {
    AliasIndex::new(aliases).match_command(command)
}

/// The formats of a set of aliases compiled once, for matching many commands.
///
/// A first pass keeps matching fast with many aliases: a format that starts with plain words
/// (the usual `deploy {{ app }}`, `cdos scale {{ app }} {{ n }}`) can only take a command that
/// starts with the same words, since st2 anchors formats at the start. Formats are filed under
/// their first one or two plain words; only those filed under the command's own, and those
/// that start otherwise (a regular expression, a parameter), are run through st2's parser.
pub struct AliasIndex {
    entries: Vec<IndexEntry>,
    by_words: HashMap<(String, Option<String>), Vec<usize>>,
    /// Entries the first word cannot rule out.
    always: Vec<usize>,
}

struct IndexEntry {
    alias: usize,
    display: Option<String>,
    representation: String,
    parser: Option<FormatParser>,
}

impl AliasIndex {
    pub fn new(aliases: &[Alias]) -> AliasIndex {
        let mut entries = Vec::new();
        let mut by_words: HashMap<(String, Option<String>), Vec<usize>> = HashMap::new();
        let mut always = Vec::new();
        for (index, alias) in aliases.iter().enumerate() {
            if !alias.enabled {
                continue;
            }
            for (display, representation) in alias.patterns() {
                let at = entries.len();
                let parser = FormatParser::new(representation).ok();
                match (leading_words(representation), &parser) {
                    (Some(words), Some(p)) if p.anchored_by_st2 => {
                        by_words.entry(words).or_default().push(at)
                    }
                    _ => always.push(at),
                }
                entries.push(IndexEntry {
                    alias: index,
                    display: display.map(str::to_string),
                    representation: representation.to_string(),
                    parser,
                });
            }
        }
        AliasIndex {
            entries,
            by_words,
            always,
        }
    }

    /// st2's `get_matching_alias` over the indexed aliases.
    pub fn match_command(&self, command: &str) -> Result<AliasMatch, AliasMatchError> {
        let Ok((stream, pairs)) = split_pairs(command) else {
            return self.matches(command, 0..self.entries.len(), None);
        };
        let mut candidates = self.always.clone();
        let mut words = stream.split_whitespace();
        if let Some(first) = words.next() {
            let second = words.next();
            let keys = [
                (first.to_string(), None),
                (first.to_string(), second.map(str::to_string)),
            ];
            for key in &keys[..if second.is_some() { 2 } else { 1 }] {
                candidates.extend(self.by_words.get(key).into_iter().flatten());
            }
        }
        candidates.sort_unstable();
        self.matches(command, candidates.into_iter(), Some((&stream, &pairs)))
    }

    fn matches(
        &self,
        command: &str,
        candidates: impl Iterator<Item = usize>,
        split: Option<(&str, &[(String, String)])>,
    ) -> Result<AliasMatch, AliasMatchError> {
        let found = candidates
            .filter_map(|at| {
                let entry = self.entries.get(at)?;
                let parser = entry.parser.as_ref()?;
                let parameters = match split {
                    Some((stream, pairs)) => parser.extract_split(command, stream, pairs),
                    None => parser.extract(command),
                }
                .ok()?;
                Some(AliasMatch {
                    index: entry.alias,
                    display: entry.display.clone(),
                    representation: entry.representation.clone(),
                    parameters,
                })
            })
            .collect();
        one_match(command, found)
    }
}

/// The words a format's commands must start with: its first space-separated word when that is
/// plain text (no regular-expression syntax, no parameter), and its second when that is too.
/// They start every command the format takes when st2 anchors the format at the start (see
/// `FormatParser::anchored_by_st2`).
fn leading_words(format: &str) -> Option<(String, Option<String>)> {
    let plain = |word: &&str| {
        !word.is_empty()
            && word
                .chars()
                .all(|c| !c.is_whitespace() && !r"\.+*?()[]{}|^$#".contains(c))
    };
    let mut words = format.split(' ');
    let first = words.next().filter(plain)?;
    let second = words.next().filter(plain);
    Some((first.to_string(), second.map(str::to_string)))
}

fn one_match(command: &str, mut found: Vec<AliasMatch>) -> Result<AliasMatch, AliasMatchError> {
    match found.len() {
        0 => Err(AliasMatchError::NoMatch {
            command: command.to_string(),
        }),
        1 => Ok(found.remove(0)),
        _ => Err(AliasMatchError::Ambiguous {
            command: command.to_string(),
            matches: found
                .into_iter()
                .map(|m| (m.index, m.representation))
                .collect(),
        }),
    }
}

/// The names of the `{{ name }}` and `{{ name=default }}` parameters in a representation, in
/// order of appearance (named groups written as regular expressions are not included).
pub fn format_parameter_names(representation: &str) -> Vec<String> {
    let (Ok(optional), Ok(required)) = (
        compile(&format!(r"(\s*){}", optional_re())),
        compile(&format!(r"(\s*){}", required_re())),
    ) else {
        return Vec::new();
    };
    // Each placeholder is replaced by a marker holding its name, in one left-to-right text.
    let marked = substitute(&optional, representation, |_, name| {
        format!("\u{0}{name}\u{0}")
    })
    .and_then(|t| substitute(&required, &t, |_, name| format!("\u{0}{name}\u{0}")));
    match marked {
        Ok(text) => text
            .split('\u{0}')
            .skip(1)
            .step_by(2)
            .map(str::to_string)
            .collect(),
        Err(_) => Vec::new(),
    }
}

/// st2's `extract_parameters(format, command)`: the parameters `format` extracts from
/// `command`, or why it does not match.
pub fn extract_parameters(format: &str, command: &str) -> Result<AliasParameters, ParseError> {
    let parser = FormatParser::new(format).map_err(ParseError)?;
    parser.extract(command)
}

// The pieces of st2's parser, in Python's syntax as st2 writes them, with `{` and `'` written
// so that fancy-regex reads them as Python does (a literal brace, a quote needing no escape).
const KEY: &str = r"\s*(\S+?)\s*";
const VALUE: &str = r#"""|''|"(.+?)"|'(.+?)'|(\{.+?\})|(\S+)"#;
const EXT_VALUE: &str = r#"""|''|"(.+?)"|'(.+?)'|(\{.+?\})|(.+?)"#;

fn pairs_re() -> String {
    format!(r"(?:^|\s+){KEY}=({VALUE})")
}

fn optional_re() -> String {
    format!(r"\{{\{{{KEY}\s*=\s*(?:{EXT_VALUE})\s*\}}\}}")
}

fn required_re() -> String {
    format!(r"\{{\{{{KEY}\}}\}}")
}

fn compile(source: &str) -> Result<Regex, String> {
    Regex::new(&format!("(?s){}", python_regex(source))).map_err(|e| e.to_string())
}

/// The two patterns that cut trailing `key=value` pairs from a command (the same for every
/// format), compiled once.
fn pair_patterns() -> Result<&'static (Regex, Regex), ParseError> {
    static PATTERNS: std::sync::OnceLock<Result<(Regex, Regex), String>> =
        std::sync::OnceLock::new();
    PATTERNS
        .get_or_init(|| {
            let ending = compile(&format!(r".*?(({}\s*)*)$", pairs_re()))?;
            let pairs = compile(&pairs_re())?;
            Ok((ending, pairs))
        })
        .as_ref()
        .map_err(|e| ParseError(format!("internal alias pattern: {e}")))
}

/// st2's first step: the `key=value` pairs at the end of a command, and the command without
/// them (everywhere the same text appears, as Python's `str.replace` does), padded with a
/// space on each side as st2 pads it.
fn split_pairs(command: &str) -> Result<(String, Vec<(String, String)>), ParseError> {
    let mut kv_pairs = Vec::new();
    let mut stream = command.to_string();
    // A pair needs its `=`: without one there is nothing to cut.
    if !command.contains('=') {
        return Ok((format!(" {stream} "), kv_pairs));
    }
    let (ending, pairs) = pair_patterns()?;
    let err = |e: fancy_regex::Error| ParseError(e.to_string());
    if let Some(tail) = ending
        .captures(command)
        .map_err(err)?
        .and_then(|c| c.get(1))
        .map(|m| m.as_str())
        .filter(|t| !t.is_empty())
    {
        for caps in pairs.captures_iter(tail) {
            let caps = caps.map_err(err)?;
            let key = caps.get(1).map(|m| m.as_str()).unwrap_or_default();
            let value: String = (3..=6)
                .filter_map(|i| caps.get(i).map(|m| m.as_str()))
                .collect();
            kv_pairs.push((key.to_string(), value));
        }
        stream = stream.replace(tail, "");
    }
    Ok((format!(" {stream} "), kv_pairs))
}

/// The patterns that find placeholders in a format (`{{ name=default }}`, and each kind with
/// the whitespace before it), compiled once.
fn placeholder_patterns() -> Result<&'static (Regex, Regex, Regex), String> {
    static PATTERNS: std::sync::OnceLock<Result<(Regex, Regex, Regex), String>> =
        std::sync::OnceLock::new();
    PATTERNS
        .get_or_init(|| {
            Ok((
                compile(&optional_re())?,
                compile(&format!(r"(\s*){}", optional_re()))?,
                compile(&format!(r"(\s*){}", required_re()))?,
            ))
        })
        .as_ref()
        .map_err(|e| format!("internal alias pattern: {e}"))
}

/// A format compiled for matching: st2's `ActionAliasFormatParser` without the command.
struct FormatParser {
    format: String,
    /// (name, default) of each `{{ name=default }}`.
    optional: Vec<(String, String)>,
    regex: Regex,
    /// Whether st2 put the `^\s*` before it (the format has no start anchor of its own).
    anchored_by_st2: bool,
}

impl FormatParser {
    fn new(format: &str) -> Result<FormatParser, String> {
        let (optional_finder, optional_ws, required_ws) = placeholder_patterns()?;

        let mut optional = Vec::new();
        for caps in optional_finder.captures_iter(format) {
            let caps = caps.map_err(|e| e.to_string())?;
            let name = caps.get(1).map(|m| m.as_str()).unwrap_or_default();
            let default: String = (2..=5)
                .filter_map(|i| caps.get(i).map(|m| m.as_str()))
                .collect();
            optional.push((name.to_string(), default));
        }

        // `\1` is the whitespace before the placeholder, `\2` its name.
        let param_match = |ws: &str, name: &str| {
            format!(r#"{ws}["']?(?P<{name}>(?:(?<=').+?(?=')|(?<=").+?(?=")|\{{.+?\}}|.+?))["']?"#)
        };
        let reg = substitute(optional_ws, format, |ws, name| {
            format!("(?:{})?", param_match(ws, name))
        })?;
        let reg = substitute(required_ws, &reg, param_match)?;

        let mut reg = reg;
        let anchored_by_st2 = !has_anchor(&reg, Anchor::Beginning);
        if anchored_by_st2 {
            reg = format!(r"^\s*{reg}");
        }
        if !has_anchor(&reg, Anchor::End) {
            reg = format!(r"{reg}\s*$");
        }
        let regex = compile(&python_braces(&reg))
            .map_err(|e| format!("format {format:?} is not a valid regular expression: {e}"))?;
        Ok(FormatParser {
            format: format.to_string(),
            optional,
            regex,
            anchored_by_st2,
        })
    }

    fn extract(&self, command: &str) -> Result<AliasParameters, ParseError> {
        let (stream, kv_pairs) = split_pairs(command)?;
        self.extract_split(command, &stream, &kv_pairs)
    }

    /// [`FormatParser::extract`] once the pairs are cut from the command (`stream`, padded).
    fn extract_split(
        &self,
        command: &str,
        stream: &str,
        kv_pairs: &[(String, String)],
    ) -> Result<AliasParameters, ParseError> {
        let err = |e: fancy_regex::Error| ParseError(e.to_string());
        // 2. The command against the format.
        let Some(caps) = self.regex.captures(stream).map_err(err)? else {
            return Err(ParseError(format!(
                "Command \"{command}\" doesn't match format string \"{}\"",
                self.format
            )));
        };
        let mut result = AliasParameters::new();
        for name in self.regex.capture_names().flatten() {
            result.insert(
                name.to_string(),
                caps.name(name).map(|m| m.as_str().to_string()),
            );
        }
        // 3. Defaults for optional parameters that matched nothing, then the pairs.
        for (name, default) in &self.optional {
            let matched = result.get(name).cloned().flatten().unwrap_or_default();
            let value = if matched.is_empty() {
                default.clone()
            } else {
                matched
            };
            result.insert(name.clone(), Some(value));
        }
        for (key, value) in kv_pairs {
            result.insert(key.clone(), Some(value.clone()));
        }
        let any_value = result
            .values()
            .any(|v| v.as_deref().is_some_and(|s| !s.is_empty()));
        if !self.format.is_empty() && stream.trim().is_empty() && !any_value {
            return Err(ParseError(
                "No value supplied and no default value found.".to_string(),
            ));
        }
        Ok(result)
    }
}

/// Python's `re.sub(pattern, replacement, text)` where the replacement uses groups 1 and 2.
fn substitute(
    re: &Regex,
    text: &str,
    replace: impl Fn(&str, &str) -> String,
) -> Result<String, String> {
    let mut out = String::with_capacity(text.len() + 64);
    let mut last = 0;
    for caps in re.captures_iter(text) {
        let caps = caps.map_err(|e| e.to_string())?;
        let (Some(whole), Some(ws), Some(name)) = (caps.get(0), caps.get(1), caps.get(2)) else {
            continue;
        };
        out.push_str(&text[last..whole.start()]);
        out.push_str(&replace(ws.as_str(), name.as_str()));
        last = whole.end();
    }
    out.push_str(&text[last..]);
    Ok(out)
}

/// Python reads a `{` that does not start a `{m}`, `{m,}` or `{m,n}` repetition as a literal
/// brace, and a lone `}` likewise; fancy-regex wants them escaped.
fn python_braces(pattern: &str) -> String {
    let chars: Vec<char> = pattern.chars().collect();
    let mut out = String::with_capacity(pattern.len() + 8);
    let mut i = 0;
    let mut in_class = false;
    let mut in_repeat = false;
    while i < chars.len() {
        let c = chars[i];
        match c {
            '\\' => {
                out.push(c);
                if let Some(n) = chars.get(i + 1) {
                    out.push(*n);
                }
                i += 2;
                continue;
            }
            '[' if !in_class => in_class = true,
            ']' if in_class => in_class = false,
            '{' if !in_class => {
                let rest: String = chars[i + 1..].iter().collect();
                if is_repeat(&rest) {
                    in_repeat = true;
                } else {
                    out.push('\\');
                }
            }
            '}' if !in_class => {
                if in_repeat {
                    in_repeat = false;
                } else {
                    out.push('\\');
                }
            }
            _ => {}
        }
        out.push(c);
        i += 1;
    }
    out
}

/// Whether `rest` (what follows a `{`) is `m}`, `m,}`, `,n}` or `m,n}`.
fn is_repeat(rest: &str) -> bool {
    let Some(end) = rest.find('}') else {
        return false;
    };
    let body = &rest[..end];
    let (lo, hi) = match body.split_once(',') {
        Some((lo, hi)) => (lo, Some(hi)),
        None => (body, None),
    };
    let digits = |s: &str| s.chars().all(|c| c.is_ascii_digit());
    match hi {
        None => !lo.is_empty() && digits(lo),
        Some(hi) => digits(lo) && digits(hi) && !(lo.is_empty() && hi.is_empty()),
    }
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum Anchor {
    Beginning,
    End,
}

/// st2's `search_regex_tokens` over Python's parse of the format: an anchor (`^`/`\A`, or
/// `$`/`\Z`) counts at the top level and inside groups, not inside lookarounds or repeated
/// groups; of an alternation, only the second branch is searched (as st2 does), after Python
/// has moved a prefix common to all branches in front of the alternation.
fn has_anchor(pattern: &str, anchor: Anchor) -> bool {
    let chars: Vec<char> = pattern.chars().collect();
    let (seq, _) = parse_seq(&chars, 0);
    seq_has(&seq, anchor)
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum Tok {
    Begin,
    End,
    /// A group searched into: its branches.
    Group(Vec<Vec<Tok>>),
    /// An alternation: its branches.
    Branch(Vec<Vec<Tok>>),
    /// Anything else (literal, class, lookaround, repeated item), by its text.
    Other(String),
}

fn seq_has(seq: &[Tok], anchor: Anchor) -> bool {
    seq.iter().any(|t| match t {
        Tok::Begin => anchor == Anchor::Beginning,
        Tok::End => anchor == Anchor::End,
        Tok::Group(branches) => branches_has(branches, anchor),
        Tok::Branch(branches) => branches.get(1).is_some_and(|b| seq_has(b, anchor)),
        Tok::Other(_) => false,
    })
}

/// A group's content as Python parses it: one branch is a plain sequence; several share their
/// common prefix, then alternate.
fn branches_has(branches: &[Vec<Tok>], anchor: Anchor) -> bool {
    seq_has(&alternation(branches.to_vec()), anchor)
}

fn alternation(mut branches: Vec<Vec<Tok>>) -> Vec<Tok> {
    if branches.len() == 1 {
        return branches.remove(0);
    }
    let mut prefix = Vec::new();
    while let Some(first) = branches.first().and_then(|b| b.first()).cloned() {
        if !branches.iter().all(|b| b.first() == Some(&first)) {
            break;
        }
        for b in &mut branches {
            b.remove(0);
        }
        prefix.push(first);
    }
    prefix.push(Tok::Branch(branches));
    prefix
}

/// Parses branches until an unmatched `)` or the end; returns them as one sequence and the
/// position after the `)`.
fn parse_seq(chars: &[char], mut i: usize) -> (Vec<Tok>, usize) {
    let mut branches: Vec<Vec<Tok>> = vec![Vec::new()];
    while i < chars.len() {
        let c = chars[i];
        let current = branches.len() - 1;
        match c {
            ')' => {
                i += 1;
                break;
            }
            '|' => {
                branches.push(Vec::new());
                i += 1;
            }
            '^' => {
                branches[current].push(Tok::Begin);
                i += 1;
            }
            '$' => {
                branches[current].push(Tok::End);
                i += 1;
            }
            '\\' => {
                let n = chars.get(i + 1).copied().unwrap_or('\\');
                branches[current].push(match n {
                    'A' => Tok::Begin,
                    'Z' => Tok::End,
                    _ => Tok::Other(format!("\\{n}")),
                });
                i += 2;
            }
            '[' => {
                let start = i;
                i += 1;
                if chars.get(i) == Some(&'^') {
                    i += 1;
                }
                if chars.get(i) == Some(&']') {
                    i += 1;
                }
                while i < chars.len() && chars[i] != ']' {
                    if chars[i] == '\\' {
                        i += 1;
                    }
                    i += 1;
                }
                i += 1;
                let end = i.min(chars.len());
                branches[current].push(Tok::Other(chars[start..end].iter().collect()));
            }
            '(' => {
                let start = i;
                let rest: String = chars[i + 1..chars.len().min(i + 5)].iter().collect();
                let lookaround = ["?=", "?!", "?<=", "?<!"]
                    .iter()
                    .any(|p| rest.starts_with(p));
                // Skip the group's header to its content.
                let mut content = i + 1;
                if rest.starts_with("?P<") || (rest.starts_with("?<") && !lookaround) {
                    while content < chars.len() && chars[content] != '>' {
                        content += 1;
                    }
                    content += 1;
                } else if rest.starts_with("?:") {
                    content += 2;
                } else if rest.starts_with('?') && !lookaround {
                    // Flags, comments and other extensions: nothing to search in.
                    while content < chars.len() && chars[content] != ')' && chars[content] != ':' {
                        content += 1;
                    }
                    content += 1;
                }
                let (inner, after) = parse_seq(chars, content.min(chars.len()));
                i = after;
                let tok = if lookaround {
                    Tok::Other(chars[start..after.min(chars.len())].iter().collect())
                } else {
                    match inner.as_slice() {
                        [Tok::Branch(b)] => Tok::Group(b.clone()),
                        _ => Tok::Group(vec![inner]),
                    }
                };
                branches[current].push(tok);
            }
            '*' | '+' | '?' | '{' => {
                // A repeat: what it repeats is no longer searched (nor is the repeat's text).
                let mut text = String::from(c);
                i += 1;
                if c == '{' && is_repeat(&chars[i..].iter().collect::<String>()) {
                    while i < chars.len() && chars[i] != '}' {
                        text.push(chars[i]);
                        i += 1;
                    }
                    i += 1;
                } else if c == '{' {
                    branches[current].push(Tok::Other(text));
                    continue;
                }
                while i < chars.len() && matches!(chars[i], '?' | '+') {
                    text.push(chars[i]);
                    i += 1;
                }
                if let Some(last) = branches[current].pop() {
                    branches[current].push(Tok::Other(format!("{last:?}{text}")));
                }
            }
            other => {
                branches[current].push(Tok::Other(other.to_string()));
                i += 1;
            }
        }
    }
    (alternation(branches), i)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn anchors_as_st2_finds_them() {
        // st2's TestSearchRegexTokens.
        assert!(has_anchor("^asdf", Anchor::Beginning));
        assert!(!has_anchor("^asdf", Anchor::End));
        assert!(!has_anchor("asdf", Anchor::Beginning));
        assert!(!has_anchor("asdf", Anchor::End));
        assert!(has_anchor("^asdf$", Anchor::End));
        assert!(has_anchor("^asdf|fdsa$", Anchor::End));
        assert!(has_anchor("^(?:asdf|fdsa$)", Anchor::End));
        // Only the second branch is searched; a common prefix is hoisted first.
        assert!(!has_anchor("a$|b", Anchor::End));
        assert!(has_anchor("^a|^b", Anchor::Beginning));
        assert!(!has_anchor("(?=^a)b", Anchor::Beginning));
        assert!(!has_anchor("(a$)?", Anchor::End));
        assert!(!has_anchor(r"a\$", Anchor::End));
        assert!(!has_anchor("[$^]", Anchor::End));
    }

    #[test]
    fn python_braces_are_literal_unless_a_repeat() {
        assert_eq!(python_braces("a{2}"), "a{2}");
        assert_eq!(python_braces("a{x}"), r"a\{x\}");
        assert_eq!(python_braces(r"\{"), r"\{");
    }

    #[test]
    fn problems_are_located() {
        let text = "name: a\naction_ref: nodot\nformats:\n  - 'ok {{ x }}'\n  - 'bad ( {{ y }}'\n";
        let errs = Alias::from_yaml(text).unwrap_err();
        assert_eq!(errs.len(), 2, "{errs:?}");
        assert!(errs[0].message.contains("action_ref") && errs[0].line == Some(2));
        assert!(errs[1].message.contains("regular expression") && errs[1].line == Some(5));
        let errs = Alias::from_yaml("name: a\naction_ref: a.b\nformat: []\n").unwrap_err();
        assert!(errs[0].message.contains("format") && errs[0].line == Some(3));
        let text = "name: a\naction_ref: a.b\nformats:\n  - display: x\n    representation: [x]\n    match_multiple: true\nimmutable_parameters: {env: dev}\n";
        let errs = Alias::from_yaml(text).unwrap_err();
        assert_eq!(errs.len(), 2, "{errs:?}");
        assert!(errs[0].message.contains("immutable_parameters") && errs[0].line == Some(7));
        assert!(errs[1].message.contains("match_multiple") && errs[1].line == Some(6));
    }

    #[test]
    fn the_index_files_formats_under_their_plain_leading_words() {
        assert_eq!(
            leading_words("cdos scale {{ app }}"),
            Some(("cdos".into(), Some("scale".into())))
        );
        assert_eq!(leading_words("cdos {{ app }}"), Some(("cdos".into(), None)));
        assert_eq!(leading_words("(?i)cdos {{ app }}"), None);
        assert_eq!(leading_words("{{ app }} up"), None);
        let alias = |name: &str, format: &str| {
            Alias::from_yaml(&format!(
                "name: {name}\naction_ref: p.a\nformats: [\"{format}\"]\n"
            ))
            .expect("alias")
        };
        let aliases = [
            alias("scale", "cdos scale {{ app }} {{ n }}"),
            alias("show", "cdos (?!\\\\S*\\\\s+\\\\S){{ app }}"),
            alias("anchored", "^.*deploy {{ app }}"),
        ];
        let index = AliasIndex::new(&aliases);
        assert_eq!(
            index.match_command("  cdos scale web 3").map(|m| m.index),
            Ok(0)
        );
        assert_eq!(index.match_command("cdos web").map(|m| m.index), Ok(1));
        // A format with its own anchor is tried whatever the first word.
        assert_eq!(
            index.match_command("please deploy web").map(|m| m.index),
            Ok(2)
        );
        assert!(index.match_command("cdos  scale web 3").is_err());
    }

    #[test]
    fn format_parameters_in_order() {
        assert_eq!(
            format_parameter_names("s {{a}} x {{ b = 1 }} {{ c }} {{ d={'k': 'v'} }}"),
            ["a", "b", "c", "d"]
        );
    }
}
