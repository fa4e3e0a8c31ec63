//! squall's rules over several trigger instances: the `correlate` block (its model and its
//! loading, every problem with its line) and the state machine that follows partial matches.
//!
//! A correlation rule names no `trigger` of its own (its `trigger_type` is empty and its
//! `correlate` is set): each part names a trigger type and st2 criteria over that part's
//! instance, which the matcher checks exactly as it checks a rule's criteria. What follows the
//! matches over time is [`CorrelationState`], one per rule.
//!
//! Pure: no I/O and no clock. Every time is passed in by the caller, and the state is plain
//! data (serde) that the engine persists; nothing here may read a clock or hold anything that
//! cannot be written down and read back.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::time::Duration;

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize, Serializer};
use serde_json::Value;

use crate::lookup::KeyPath;
use crate::model::{parse_criterion, parse_duration, Criterion, PatternSource, SourceProblem};

/// How many open groups a rule keeps when its `limit` is not given.
pub const DEFAULT_LIMIT: usize = 10_000;

/// The most parts (positive and `none` together) a rule may have: a [`PartSet`] is one word.
pub const MAX_PARTS: usize = 64;

/// The schema version of a persisted [`CorrelationState`].
pub const STATE_VERSION: u32 = 1;

/// What completes a group.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum CorrelationMode {
    /// `all`: every part, in any order, within the window.
    All,
    /// `sequence`: every part, in the order written, within the window.
    Sequence,
    /// `any`: one of the parts.
    Any,
    /// Only `none`: the rule fires when a window passes without any of them.
    Absence,
}

/// One part: a trigger type and criteria over its instance.
#[derive(Debug, Clone)]
pub struct Part {
    /// The trigger type as written (st2's names allowed; the matcher maps them).
    pub trigger_type: String,
    /// The trigger's parameters, as a rule's `trigger.parameters` (a webhook's `url`): an
    /// instance with other parameters is not this part's.
    pub parameters: serde_json::Map<String, Value>,
    pub criteria: Vec<Criterion>,
}

/// A rule's `correlate` block.
#[derive(Debug, Clone)]
pub struct Correlation {
    pub mode: CorrelationMode,
    /// The positive parts (`all`, `sequence` or `any`), empty for [`CorrelationMode::Absence`].
    pub parts: Vec<Part>,
    /// The parts that must not arrive (`none`).
    pub none: Vec<Part>,
    pub within: Duration,
    /// Criteria-style keys whose values over each instance form its group.
    pub group_by: Vec<(String, KeyPath)>,
    /// The most open groups the rule keeps.
    pub limit: usize,
    /// What the parts, mode and grouping are, as text: state kept for another signature means
    /// something else (parts renumbered, other groups) and is not to be resumed.
    pub signature: String,
}

impl Correlation {
    /// Every part with its number: the positive parts first, then `none`'s.
    pub fn all_parts(&self) -> impl Iterator<Item = (usize, &Part)> {
        self.parts.iter().chain(self.none.iter()).enumerate()
    }

    /// The part numbered `index` (see [`Correlation::all_parts`]).
    pub fn part(&self, index: usize) -> Option<&Part> {
        self.all_parts().nth(index).map(|(_, p)| p)
    }

    /// Whether part `index` is one of `none`'s.
    pub fn is_none_part(&self, index: usize) -> bool {
        index >= self.parts.len()
    }

    /// The group an instance falls in: its `group_by` values (null where missing) and their
    /// JSON text, which is the group's key.
    pub fn group_of(&self, payload: &Value) -> (String, Vec<Value>) {
        (self.group_key_of(payload), self.group_values(payload))
    }

    fn group_values(&self, payload: &Value) -> Vec<Value> {
        self.group_by
            .iter()
            .map(|(_, p)| p.lookup(payload).cloned().unwrap_or(Value::Null))
            .collect()
    }

    /// The key alone, from borrowed values: most instances find their group open (or none to
    /// cancel), and then nothing of the payload is copied.
    fn group_key_of(&self, payload: &Value) -> String {
        const NULL: Value = Value::Null;
        let values: Vec<&Value> = self
            .group_by
            .iter()
            .map(|(_, p)| p.lookup(payload).unwrap_or(&NULL))
            .collect();
        serde_json::to_string(&values).unwrap_or_default()
    }
}

fn group_key(values: &[Value]) -> String {
    // Serializing JSON values to text cannot fail; an empty key would only merge groups.
    serde_json::to_string(values).unwrap_or_default()
}

/// Which parts of a rule one instance matched (bit `i` for part `i`).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct PartSet(u64);

impl PartSet {
    pub fn insert(&mut self, index: usize) {
        if index < MAX_PARTS {
            self.0 |= 1 << index;
        }
    }

    pub fn contains(self, index: usize) -> bool {
        index < MAX_PARTS && self.0 & (1 << index) != 0
    }

    pub fn is_empty(self) -> bool {
        self.0 == 0
    }

    /// The parts in the set, lowest first.
    pub fn iter(self) -> impl Iterator<Item = usize> {
        let mut bits = self.0;
        std::iter::from_fn(move || {
            if bits == 0 {
                return None;
            }
            let i = bits.trailing_zeros() as usize;
            bits &= bits - 1;
            Some(i)
        })
    }
}

impl FromIterator<usize> for PartSet {
    fn from_iter<I: IntoIterator<Item = usize>>(iter: I) -> Self {
        let mut set = PartSet::default();
        for i in iter {
            set.insert(i);
        }
        set
    }
}

// ---------------------------------------------------------------------------------------------
// Loading

#[derive(Deserialize)]
#[serde(
    deny_unknown_fields,
    expecting = "a correlate block: a mapping with within, optional group_by and limit, and parts under all, sequence or any and/or none"
)]
pub(crate) struct RawCorrelate {
    #[serde(default)]
    within: Option<serde_yaml::Value>,
    #[serde(default)]
    group_by: Vec<String>,
    #[serde(default)]
    limit: Option<u64>,
    #[serde(default)]
    all: Option<Vec<RawPart>>,
    #[serde(default)]
    sequence: Option<Vec<RawPart>>,
    #[serde(default)]
    any: Option<Vec<RawPart>>,
    #[serde(default)]
    none: Option<Vec<RawPart>>,
}

#[derive(Deserialize)]
#[serde(
    deny_unknown_fields,
    expecting = "a part: a mapping with trigger (a trigger type such as docker.container_event) and optional criteria"
)]
struct RawPart {
    trigger: String,
    #[serde(default)]
    parameters: Option<serde_json::Map<String, Value>>,
    #[serde(default)]
    criteria: Option<serde_yaml::Mapping>,
}

/// Where the `correlate` block is in the file: its key's line and the line after its last.
struct Block<'t> {
    text: &'t str,
    lines: Vec<&'t str>,
    /// 1-based line of `correlate:`, when found.
    start: Option<usize>,
    /// 1-based line past the block.
    end: usize,
}

fn indent(line: &str) -> usize {
    line.len() - line.trim_start().len()
}

fn is_blank(line: &str) -> bool {
    let t = line.trim();
    t.is_empty() || t.starts_with('#')
}

/// The key a line starts, if it starts `key:` (after a list's `- `), quoted or not.
fn starts_key(line: &str, key: &str) -> bool {
    let t = line.trim_start().trim_start_matches("- ").trim_start();
    [
        format!("{key}:"),
        format!("'{key}':"),
        format!("\"{key}\":"),
    ]
    .iter()
    .any(|c| t.starts_with(c.as_str()))
}

impl<'t> Block<'t> {
    fn find(text: &'t str) -> Block<'t> {
        let lines: Vec<&str> = text.lines().collect();
        let start = lines
            .iter()
            .position(|l| indent(l) == 0 && starts_key(l, "correlate"))
            .map(|i| i + 1);
        let end = start
            .and_then(|s| {
                lines
                    .iter()
                    .enumerate()
                    .skip(s)
                    .find(|(_, l)| !is_blank(l) && indent(l) == 0)
                    .map(|(i, _)| i + 1)
            })
            .unwrap_or(lines.len() + 1);
        Block {
            text,
            lines,
            start,
            end,
        }
    }

    /// The first line in the block, from `from` on, that starts the key `key`.
    fn key_line(&self, key: &str, from: Option<usize>) -> Option<usize> {
        let from = from.or(self.start)?;
        (from..self.end).find(|&n| self.lines.get(n - 1).is_some_and(|l| starts_key(l, key)))
    }

    /// The line of item `index` of the list under the key on line `list`: items are the lines
    /// starting `- ` at the indentation of the first one, until the list's block ends.
    fn item_line(&self, list: usize, index: usize) -> Option<usize> {
        let key_indent = indent(self.lines.get(list - 1)?);
        let mut item_indent = None;
        let mut seen = 0;
        for n in list + 1..self.end {
            let line = self.lines.get(n - 1)?;
            if is_blank(line) {
                continue;
            }
            let dash = line.trim_start().starts_with('-');
            if indent(line) < key_indent || (indent(line) == key_indent && !dash) {
                return None;
            }
            if dash && item_indent.is_none_or(|i| i == indent(line)) {
                item_indent = Some(indent(line));
                if seen == index {
                    return Some(n);
                }
                seen += 1;
            }
        }
        None
    }

    /// The text from line `line` on (criteria keys are looked up in it, so the first one found
    /// is the part's own and not an earlier part's).
    fn text_from(&self, line: usize) -> &'t str {
        let offset: usize = self
            .text
            .split_inclusive('\n')
            .take(line.saturating_sub(1))
            .map(str::len)
            .sum();
        self.text.get(offset..).unwrap_or("")
    }
}

fn problem(line: Option<usize>, message: impl Into<String>) -> SourceProblem {
    SourceProblem {
        line,
        column: None,
        message: message.into(),
    }
}

const BLOCK_KEYS: [&str; 7] = [
    "within", "group_by", "limit", "all", "sequence", "any", "none",
];
const PART_KEYS: [&str; 3] = ["trigger", "parameters", "criteria"];

/// Reads a `correlate` block as written: every unknown key (of the block and of its parts) is a
/// problem at its line and is left out, so the rest is still checked.
pub(crate) fn read_block(
    mut value: serde_yaml::Value,
    text: &str,
) -> (Result<RawCorrelate, Vec<SourceProblem>>, Vec<SourceProblem>) {
    let block = Block::find(text);
    let mut unknown = Vec::new();
    if let serde_yaml::Value::Mapping(map) = &mut value {
        let keys: Vec<serde_yaml::Value> = map.keys().cloned().collect();
        for key in keys {
            let name = key.as_str().unwrap_or_default().to_string();
            if !BLOCK_KEYS.contains(&name.as_str()) {
                unknown.push(problem(
                    block.key_line(&name, None).or(block.start),
                    format!(
                        "correlate: unknown key '{name}' (expected {})",
                        BLOCK_KEYS.join(", ")
                    ),
                ));
                map.remove(&key);
            }
        }
        for list_name in ["all", "sequence", "any", "none"] {
            let list_line = block.key_line(list_name, None);
            let Some(serde_yaml::Value::Sequence(items)) = map.get_mut(list_name) else {
                continue;
            };
            for (i, item) in items.iter_mut().enumerate() {
                let serde_yaml::Value::Mapping(part) = item else {
                    continue;
                };
                let keys: Vec<serde_yaml::Value> = part.keys().cloned().collect();
                for key in keys {
                    let name = key.as_str().unwrap_or_default().to_string();
                    if !PART_KEYS.contains(&name.as_str()) {
                        let item = list_line.and_then(|l| block.item_line(l, i)).or(list_line);
                        // The key's own line (`- critera:` on the item's line, or below it).
                        let line = item
                            .filter(|&l| text.lines().nth(l - 1).is_some_and(|t| t.contains(&name)))
                            .or_else(|| block.key_line(&name, item))
                            .or(item);
                        unknown.push(problem(
                            line,
                            format!(
                                "correlate.{list_name}[{i}]: unknown key '{name}' (expected {})",
                                PART_KEYS.join(", ")
                            ),
                        ));
                        part.remove(&key);
                    }
                }
            }
        }
    }
    let raw = serde_yaml::from_value::<RawCorrelate>(value)
        .map_err(|e| vec![problem(block.start, format!("correlate: {e}"))]);
    (raw, unknown)
}

/// Checks a `correlate` block, reporting every problem with its line in `text` (the whole
/// rule file).
pub(crate) fn parse_correlation(
    raw: RawCorrelate,
    text: &str,
) -> Result<Correlation, Vec<SourceProblem>> {
    let block = Block::find(text);
    let mut problems = Vec::new();
    let line = |key: &str| block.key_line(key, None).or(block.start);

    let positives: Vec<(&str, Vec<RawPart>)> = [
        ("all", raw.all),
        ("sequence", raw.sequence),
        ("any", raw.any),
    ]
    .into_iter()
    .filter_map(|(name, parts)| parts.map(|p| (name, p)))
    .collect();
    let mode = match positives.as_slice() {
        [] if raw.none.is_some() => CorrelationMode::Absence,
        [] => {
            problems.push(problem(
                block.start,
                "correlate: needs parts: all, sequence or any (and/or none)",
            ));
            CorrelationMode::All
        }
        [(name, _)] => match *name {
            "all" => CorrelationMode::All,
            "sequence" => CorrelationMode::Sequence,
            _ => CorrelationMode::Any,
        },
        [_, (second, _), ..] => {
            problems.push(problem(
                line(second),
                format!(
                    "correlate: give one of all, sequence or any, not {}",
                    positives
                        .iter()
                        .map(|(n, _)| *n)
                        .collect::<Vec<_>>()
                        .join(" and ")
                ),
            ));
            CorrelationMode::All
        }
    };

    let parse_list = |name: &str, raw_parts: Vec<RawPart>, problems: &mut Vec<_>| {
        let list_line = line(name);
        if raw_parts.is_empty() {
            problems.push(problem(
                list_line,
                format!("correlate.{name}: has no parts; give at least one"),
            ));
        }
        let mut parts = Vec::new();
        for (i, raw) in raw_parts.into_iter().enumerate() {
            let part_line = list_line.and_then(|l| block.item_line(l, i)).or(list_line);
            let at = format!("correlate.{name}[{i}]");
            if raw.trigger.trim().is_empty() {
                problems.push(problem(
                    part_line,
                    format!("{at}: trigger must name a trigger type"),
                ));
            }
            let mut criteria = Vec::new();
            let from = part_line.unwrap_or(1);
            let sub = block.text_from(from);
            for (k, v) in raw.criteria.unwrap_or_default() {
                match parse_criterion(&k, v, sub, "trigger") {
                    Ok(c) => criteria.push(c),
                    Err(errs) => problems.extend(errs.into_iter().map(|mut e| {
                        e.line = e.line.map(|l| l + from - 1).or(part_line);
                        e.message = format!("{at}: {}", e.message);
                        e
                    })),
                }
            }
            parts.push(Part {
                trigger_type: raw.trigger.trim().to_string(),
                parameters: raw.parameters.unwrap_or_default(),
                criteria,
            });
        }
        parts
    };
    let mut parts = Vec::new();
    for (name, raw_parts) in positives {
        // With several lists given (reported above), each is still checked.
        parts.extend(parse_list(name, raw_parts, &mut problems));
    }
    let none = match raw.none {
        Some(raw_parts) => parse_list("none", raw_parts, &mut problems),
        None => Vec::new(),
    };
    if parts.len() + none.len() > MAX_PARTS {
        problems.push(problem(
            block.start,
            format!(
                "correlate: {} parts; a rule may have at most {MAX_PARTS}",
                parts.len() + none.len()
            ),
        ));
    }

    let within = match raw.within {
        None => {
            problems.push(problem(
                block.start,
                "correlate: needs within, the window the parts must fall in (e.g. 60s, 5m)",
            ));
            Duration::ZERO
        }
        Some(w) => match parse_duration(&w) {
            Ok(d) if d.is_zero() => {
                problems.push(problem(
                    line("within"),
                    "correlate.within: must be more than 0",
                ));
                d
            }
            Ok(d) => d,
            Err(e) => {
                problems.push(problem(line("within"), format!("correlate.within: {e}")));
                Duration::ZERO
            }
        },
    };

    let mut group_by = Vec::new();
    for key in raw.group_by {
        let at = line("group_by");
        match KeyPath::parse(&key) {
            Err(e) => problems.push(problem(
                at,
                format!("correlate.group_by: key '{key}': {e}"),
            )),
            Ok(p) if p.root != "trigger" => problems.push(problem(
                at,
                format!(
                    "correlate.group_by: key '{key}' must start with 'trigger.' (each part's instance)"
                ),
            )),
            Ok(p) if p.has_wildcard() => problems.push(problem(
                at,
                format!("correlate.group_by: key '{key}' must name one value, without wildcards"),
            )),
            Ok(p) => group_by.push((key, p)),
        }
    }

    let limit = match raw.limit {
        None => DEFAULT_LIMIT,
        Some(0) => {
            problems.push(problem(
                line("limit"),
                "correlate.limit: must be at least 1",
            ));
            DEFAULT_LIMIT
        }
        Some(n) => usize::try_from(n).unwrap_or(usize::MAX),
    };

    if !problems.is_empty() {
        return Err(problems);
    }
    let signature = signature(mode, &parts, &none, &group_by);
    Ok(Correlation {
        mode,
        parts,
        none,
        within,
        group_by,
        limit,
        signature,
    })
}

/// The parts, mode and grouping as JSON text. `within` and `limit` are left out: a group keeps
/// the deadline it was given, and a new limit applies to new groups.
fn signature(
    mode: CorrelationMode,
    parts: &[Part],
    none: &[Part],
    group_by: &[(String, KeyPath)],
) -> String {
    fn criteria(cs: &[Criterion]) -> Value {
        Value::Array(
            cs.iter()
                .map(|c| {
                    let pattern = match &c.pattern {
                        PatternSource::Literal { value, .. } => value.clone(),
                        PatternSource::Template { source, .. } => Value::String(source.clone()),
                    };
                    let children = c
                        .search
                        .as_ref()
                        .map(|(cond, ch)| {
                            serde_json::json!([format!("{cond:?}").to_lowercase(), criteria(ch)])
                        })
                        .unwrap_or(Value::Null);
                    serde_json::json!([c.key, c.operator_name, pattern, children])
                })
                .collect(),
        )
    }
    let describe = |ps: &[Part]| -> Value {
        ps.iter()
            .map(|p| serde_json::json!([p.trigger_type, criteria(&p.criteria)]))
            .collect()
    };
    serde_json::json!({
        "mode": mode,
        "parts": describe(parts),
        "none": describe(none),
        "group_by": group_by.iter().map(|(k, _)| k.as_str()).collect::<Vec<_>>(),
    })
    .to_string()
}

// ---------------------------------------------------------------------------------------------
// State

/// An instance handed to [`CorrelationState::feed`].
#[derive(Debug, Clone, Copy)]
pub struct FedInstance<'a> {
    pub id: &'a str,
    pub trigger: &'a str,
    pub payload: &'a Value,
}

/// An instance that matched a part, as the state keeps it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct MatchedEvent {
    /// The part it matched (numbered as in [`Correlation::all_parts`]).
    pub part: usize,
    pub instance_id: String,
    pub trigger: String,
    pub at: DateTime<Utc>,
    pub payload: Value,
}

/// What feeding an instance or advancing time decided.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(tag = "outcome", rename_all = "snake_case")]
pub enum Outcome {
    /// The rule fires: enforce it once, with `events` (in arrival order) as the templates'
    /// `events` and the last of them as `trigger`. `at` is when it fired: the instance that
    /// completed the group, or the deadline of a window that had to close first (with `none`,
    /// and for absence).
    Fire {
        group: Vec<Value>,
        opened_at: DateTime<Utc>,
        at: DateTime<Utc>,
        events: Vec<MatchedEvent>,
    },
    /// A window closed before its group was complete: nothing fires.
    Expired {
        group: Vec<Value>,
        opened_at: DateTime<Utc>,
        deadline: DateTime<Utc>,
        events: Vec<MatchedEvent>,
    },
    /// An instance of a `none` part arrived within the window: the group is dropped.
    Cancelled {
        group: Vec<Value>,
        opened_at: DateTime<Utc>,
        at: DateTime<Utc>,
        instance_id: String,
        part: usize,
    },
    /// A new group was not opened: the rule holds `limit` open groups already. The instance
    /// is not used by this rule.
    Refused {
        group: Vec<Value>,
        at: DateTime<Utc>,
        instance_id: String,
        limit: usize,
        reason: String,
    },
}

/// One open group, as [`CorrelationState::open_groups`] lists it.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct OpenGroup {
    pub group: Vec<Value>,
    pub opened_at: DateTime<Utc>,
    pub deadline: DateTime<Utc>,
    /// The parts matched so far, in arrival order.
    pub matched: Vec<usize>,
    /// Their instances, in the same order.
    pub instances: Vec<String>,
    /// `any` only: the rule fired for this group; it stays open until its window closes so the
    /// group fires once per window.
    pub fired: bool,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
struct Group {
    /// The order groups opened in: it breaks ties between equal deadlines, and is kept so a
    /// restart does not change that order.
    seq: u64,
    group: Vec<Value>,
    opened_at: DateTime<Utc>,
    deadline: DateTime<Utc>,
    events: Vec<MatchedEvent>,
    #[serde(default)]
    fired: bool,
}

/// One correlation rule's open groups and their deadlines.
///
/// Deterministic: the same calls in the same order give the same outcomes, whatever the
/// process. Persist it with serde (it carries [`STATE_VERSION`]) after the calls that changed
/// it; read it back and call [`CorrelationState::advance`] with the current time to fire or
/// expire, once each, the windows that closed meanwhile.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(try_from = "Persisted")]
pub struct CorrelationState {
    signature: String,
    groups: HashMap<String, Group>,
    /// Every open group's deadline (then its `seq`) and key, soonest first: closing what is
    /// due costs only that.
    deadlines: BTreeMap<(DateTime<Utc>, u64), String>,
    /// The next group's `seq`.
    next_seq: u64,
    /// Keys of the groups changed since [`CorrelationState::take_changes`] was last called.
    dirty: BTreeSet<String>,
}

#[derive(Serialize)]
struct PersistedRef<'a> {
    version: u32,
    signature: &'a str,
    next_seq: u64,
    groups: Vec<&'a Group>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Persisted {
    version: u32,
    signature: String,
    next_seq: u64,
    groups: Vec<Group>,
}

impl Serialize for CorrelationState {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        // Groups by key, so the same state is always the same text.
        let mut keyed: Vec<(&String, &Group)> = self.groups.iter().collect();
        keyed.sort_unstable_by(|a, b| a.0.cmp(b.0));
        PersistedRef {
            version: STATE_VERSION,
            signature: &self.signature,
            next_seq: self.next_seq,
            groups: keyed.into_iter().map(|(_, g)| g).collect(),
        }
        .serialize(s)
    }
}

impl TryFrom<Persisted> for CorrelationState {
    type Error = String;

    fn try_from(p: Persisted) -> Result<Self, String> {
        if p.version != STATE_VERSION {
            return Err(format!(
                "correlation state version {} is not {STATE_VERSION}",
                p.version
            ));
        }
        let mut state = CorrelationState {
            signature: p.signature,
            next_seq: p.next_seq,
            ..CorrelationState::default()
        };
        for g in p.groups {
            let key = group_key(&g.group);
            state.deadlines.insert((g.deadline, g.seq), key.clone());
            state.groups.insert(key, g);
        }
        Ok(state)
    }
}

fn deadline_after(at: DateTime<Utc>, within: Duration) -> DateTime<Utc> {
    chrono::Duration::from_std(within)
        .ok()
        .and_then(|d| at.checked_add_signed(d))
        .unwrap_or(DateTime::<Utc>::MAX_UTC)
}

fn complete(corr: &Correlation, g: &Group) -> bool {
    match corr.mode {
        CorrelationMode::All | CorrelationMode::Sequence => g.events.len() >= corr.parts.len(),
        CorrelationMode::Any => !g.events.is_empty(),
        CorrelationMode::Absence => false,
    }
}

impl CorrelationState {
    /// An empty state for a rule.
    pub fn new(corr: &Correlation) -> CorrelationState {
        CorrelationState {
            signature: corr.signature.clone(),
            ..CorrelationState::default()
        }
    }

    /// Whether this state was kept for this rule's parts and grouping. State read back for a
    /// rule whose block changed since must be replaced by [`CorrelationState::new`]: its parts'
    /// numbers and groups may mean something else now.
    pub fn fits(&self, corr: &Correlation) -> bool {
        self.signature == corr.signature
    }

    /// How many groups are open.
    pub fn len(&self) -> usize {
        self.groups.len()
    }

    pub fn is_empty(&self) -> bool {
        self.groups.is_empty()
    }

    /// When the next window closes: call [`CorrelationState::advance`] then.
    pub fn next_deadline(&self) -> Option<DateTime<Utc>> {
        self.deadlines.first_key_value().map(|((d, _), _)| *d)
    }

    /// The open groups, soonest deadline first.
    pub fn open_groups(&self) -> Vec<OpenGroup> {
        self.deadlines
            .values()
            .filter_map(|key| self.groups.get(key))
            .map(|g| OpenGroup {
                group: g.group.clone(),
                opened_at: g.opened_at,
                deadline: g.deadline,
                matched: g.events.iter().map(|e| e.part).collect(),
                instances: g.events.iter().map(|e| e.instance_id.clone()).collect(),
                fired: g.fired,
            })
            .collect()
    }

    /// Closes every window whose deadline is at or before `now`, in deadline order (then the
    /// order the groups opened in), each once: groups complete with `none` absent fire, the others expire, absence
    /// fires. A window is `[opened, deadline)`: an instance at the deadline is too late.
    ///
    /// An absence rule without `group_by` watches from its first call: the first `advance` (or
    /// `feed`) arms its window, and every close re-arms it.
    pub fn advance(&mut self, corr: &Correlation, now: DateTime<Utc>) -> Vec<Outcome> {
        let mut out = Vec::new();
        self.advance_into(corr, now, &mut out);
        out
    }

    fn advance_into(&mut self, corr: &Correlation, now: DateTime<Utc>, out: &mut Vec<Outcome>) {
        while self
            .deadlines
            .first_key_value()
            .is_some_and(|((d, _), _)| *d <= now)
        {
            let Some((_, key)) = self.deadlines.pop_first() else {
                break;
            };
            let Some(g) = self.groups.remove(&key) else {
                continue;
            };
            self.dirty.insert(key.clone());
            self.close(corr, key, g, now, out);
        }
        if corr.mode == CorrelationMode::Absence && corr.group_by.is_empty() && self.is_empty() {
            self.open(
                group_key(&[]),
                Group {
                    seq: 0,
                    group: Vec::new(),
                    opened_at: now,
                    deadline: deadline_after(now, corr.within),
                    events: Vec::new(),
                    fired: false,
                },
            );
        }
    }

    fn close(
        &mut self,
        corr: &Correlation,
        key: String,
        g: Group,
        now: DateTime<Utc>,
        out: &mut Vec<Outcome>,
    ) {
        match corr.mode {
            CorrelationMode::Absence => {
                out.push(Outcome::Fire {
                    group: g.group.clone(),
                    opened_at: g.opened_at,
                    at: g.deadline,
                    events: Vec::new(),
                });
                if corr.group_by.is_empty() {
                    // The watch goes on from the deadline, so windows follow each other
                    // evenly; silence through whole windows while nobody advanced (squall was
                    // down) is one fire, and the next window starts now.
                    let next = deadline_after(g.deadline, corr.within);
                    let opened_at = if next > now { g.deadline } else { now };
                    self.open(
                        key,
                        Group {
                            seq: 0,
                            group: g.group,
                            opened_at,
                            deadline: deadline_after(opened_at, corr.within),
                            events: Vec::new(),
                            fired: false,
                        },
                    );
                }
            }
            // It fired when it opened; its window of quiet is over.
            CorrelationMode::Any if g.fired => {}
            _ if complete(corr, &g) => out.push(Outcome::Fire {
                group: g.group,
                opened_at: g.opened_at,
                at: g.deadline,
                events: g.events,
            }),
            _ => out.push(Outcome::Expired {
                group: g.group,
                opened_at: g.opened_at,
                deadline: g.deadline,
                events: g.events,
            }),
        }
    }

    /// Files a group (its `seq` is given here) under its key and deadline.
    fn open(&mut self, key: String, mut g: Group) {
        g.seq = self.next_seq;
        self.next_seq += 1;
        self.deadlines.insert((g.deadline, g.seq), key.clone());
        self.dirty.insert(key.clone());
        self.groups.insert(key, g);
    }

    fn remove(&mut self, key: &str) -> Option<Group> {
        let g = self.groups.remove(key)?;
        self.deadlines.remove(&(g.deadline, g.seq));
        self.dirty.insert(key.to_string());
        Some(g)
    }

    /// What changed since the last call, for storing group by group: the state's header
    /// (version, signature, next group number) and each changed group by its key, with its
    /// stored form, or `None` when it closed. [`CorrelationState::from_stored`] reads them back.
    pub fn take_changes(&mut self) -> (String, Vec<(String, Option<String>)>) {
        let header = serde_json::json!({
            "version": STATE_VERSION,
            "signature": self.signature,
            "next_seq": self.next_seq,
        })
        .to_string();
        let changes = std::mem::take(&mut self.dirty)
            .into_iter()
            .map(|key| {
                let stored = self
                    .groups
                    .get(&key)
                    .and_then(|g| serde_json::to_string(g).ok());
                (key, stored)
            })
            .collect();
        (header, changes)
    }

    /// A state from its stored header and groups (as [`CorrelationState::take_changes`] gave
    /// them).
    pub fn from_stored<'a>(
        header: &str,
        groups: impl IntoIterator<Item = &'a str>,
    ) -> Result<CorrelationState, String> {
        let mut persisted: serde_json::Map<String, Value> =
            serde_json::from_str(header).map_err(|e| format!("correlation state header: {e}"))?;
        let groups = groups
            .into_iter()
            .map(|g| {
                serde_json::from_str::<Value>(g).map_err(|e| format!("correlation group: {e}"))
            })
            .collect::<Result<Vec<_>, _>>()?;
        persisted.insert("groups".into(), Value::Array(groups));
        serde_json::from_value(Value::Object(persisted)).map_err(|e| e.to_string())
    }

    /// Takes one instance at `at`: `parts` are the rule's parts it matched (the matcher's
    /// [`crate::Evaluation::correlated`]). Windows due by `at` close first, so their outcomes
    /// come before the instance's.
    ///
    /// An instance is in one group (its `group_by` values), fills at most one part (for `all`
    /// the first it matches that is still missing; for `sequence` only the next), and one that
    /// matches a `none` part is never a positive one.
    pub fn feed(
        &mut self,
        corr: &Correlation,
        parts: PartSet,
        inst: FedInstance<'_>,
        at: DateTime<Utc>,
    ) -> Vec<Outcome> {
        let mut out = Vec::new();
        self.advance_into(corr, at, &mut out);
        if parts.is_empty() {
            return out;
        }
        let positives = corr.parts.len();
        let none_part = parts.iter().find(|&p| p >= positives);
        let key = corr.group_key_of(inst.payload);
        let event = |part: usize| MatchedEvent {
            part,
            instance_id: inst.id.to_string(),
            trigger: inst.trigger.to_string(),
            at,
            payload: inst.payload.clone(),
        };
        let refused = |values: Vec<Value>| Outcome::Refused {
            // The key is the values' JSON text.
            reason: format!(
                "the rule holds {} open groups, its limit; group {key} was not opened",
                corr.limit
            ),
            group: values,
            at,
            instance_id: inst.id.to_string(),
            limit: corr.limit,
        };

        if corr.mode == CorrelationMode::Absence {
            if none_part.is_none() {
                return out;
            }
            // Each instance restarts its group's watch.
            let deadline = deadline_after(at, corr.within);
            if let Some(mut g) = self.remove(&key) {
                g.opened_at = at;
                g.deadline = deadline;
                self.open(key, g);
            } else if self.groups.len() >= corr.limit {
                out.push(refused(corr.group_values(inst.payload)));
            } else {
                self.open(
                    key,
                    Group {
                        seq: 0,
                        group: corr.group_values(inst.payload),
                        opened_at: at,
                        deadline,
                        events: Vec::new(),
                        fired: false,
                    },
                );
            }
            return out;
        }

        if let Some(part) = none_part {
            if let Some(g) = self.remove(&key) {
                out.push(Outcome::Cancelled {
                    group: g.group,
                    opened_at: g.opened_at,
                    at,
                    instance_id: inst.id.to_string(),
                    part,
                });
            }
            return out;
        }

        if let Some(g) = self.groups.get_mut(&key) {
            if g.fired || complete(corr, g) {
                return out;
            }
            let next = match corr.mode {
                CorrelationMode::All => parts
                    .iter()
                    .find(|&p| p < positives && !g.events.iter().any(|e| e.part == p)),
                CorrelationMode::Sequence => Some(g.events.len()).filter(|&n| parts.contains(n)),
                CorrelationMode::Any | CorrelationMode::Absence => None,
            };
            let Some(part) = next else {
                return out;
            };
            g.events.push(event(part));
            self.dirty.insert(key.clone());
            if corr.none.is_empty() && complete(corr, g) {
                if let Some(g) = self.remove(&key) {
                    out.push(Outcome::Fire {
                        group: g.group,
                        opened_at: g.opened_at,
                        at,
                        events: g.events,
                    });
                }
            }
            return out;
        }

        let opening = match corr.mode {
            CorrelationMode::All | CorrelationMode::Any => parts.iter().find(|&p| p < positives),
            // Only the first part opens a sequence: a later part alone is a near miss.
            CorrelationMode::Sequence => Some(0).filter(|_| parts.contains(0)),
            CorrelationMode::Absence => None,
        };
        let Some(part) = opening else {
            return out;
        };
        let mut g = Group {
            seq: 0,
            group: corr.group_values(inst.payload),
            opened_at: at,
            deadline: deadline_after(at, corr.within),
            events: vec![event(part)],
            fired: false,
        };
        if corr.none.is_empty() && corr.mode != CorrelationMode::Any && complete(corr, &g) {
            // Complete as it opens (a single part): nothing to keep.
            out.push(Outcome::Fire {
                group: g.group,
                opened_at: at,
                at,
                events: g.events,
            });
            return out;
        }
        if self.groups.len() >= corr.limit {
            out.push(refused(g.group));
            return out;
        }
        if corr.mode == CorrelationMode::Any && corr.none.is_empty() {
            out.push(Outcome::Fire {
                group: g.group.clone(),
                opened_at: at,
                at,
                events: g.events.clone(),
            });
            g.fired = true;
        }
        self.open(key, g);
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::Rule;
    use serde_json::json;

    fn corr(block: &str) -> Correlation {
        let text =
            format!("name: c\nenabled: true\ncorrelate:\n{block}action: {{ref: core.noop}}\n");
        match Rule::from_yaml(&text) {
            Ok(r) => r.correlate.expect("a correlation rule"),
            Err(e) => panic!("{e:?}"),
        }
    }

    fn t(s: i64) -> DateTime<Utc> {
        DateTime::<Utc>::UNIX_EPOCH + chrono::Duration::seconds(s)
    }

    fn fed<'a>(id: &'a str, payload: &'a Value) -> FedInstance<'a> {
        FedInstance {
            id,
            trigger: "a.b",
            payload,
        }
    }

    #[test]
    fn changes_are_stored_group_by_group_and_read_back() {
        let c = corr("  within: 60s\n  group_by: [trigger.host]\n  all:\n    - trigger: a.b\n      criteria: {trigger.k: {type: equals, pattern: x}}\n    - trigger: a.b\n      criteria: {trigger.k: {type: equals, pattern: y}}\n");
        let mut state = CorrelationState::new(&c);
        let parts = |n: usize| -> PartSet { [n].into_iter().collect() };
        let (w1, w2) = (
            json!({"host": "w1", "k": "x"}),
            json!({"host": "w2", "k": "x"}),
        );
        assert!(state.feed(&c, parts(0), fed("i1", &w1), t(1)).is_empty());
        assert!(state.feed(&c, parts(0), fed("i2", &w2), t(2)).is_empty());
        let (header, changes) = state.take_changes();
        assert_eq!(changes.len(), 2);
        assert!(changes.iter().all(|(_, g)| g.is_some()));
        let stored: Vec<String> = changes.into_iter().filter_map(|(_, g)| g).collect();
        let back = CorrelationState::from_stored(&header, stored.iter().map(String::as_str))
            .expect("read back");
        assert!(back.fits(&c));
        assert_eq!(back.open_groups(), state.open_groups());
        // Nothing changed since: nothing to store.
        assert!(state.take_changes().1.is_empty());
        // w1 completes and fires: its group is closed, the other untouched.
        let y = json!({"host": "w1", "k": "y"});
        let fired = state.feed(&c, parts(1), fed("i3", &y), t(3));
        assert!(matches!(fired.as_slice(), [Outcome::Fire { .. }]));
        let (_, changes) = state.take_changes();
        assert_eq!(changes, vec![(group_key(&[json!("w1")]), None)]);
        // w2's window closes by time: a change too.
        let closed = state.advance(&c, t(120));
        assert!(matches!(closed.as_slice(), [Outcome::Expired { .. }]));
        let (_, changes) = state.take_changes();
        assert_eq!(changes, vec![(group_key(&[json!("w2")]), None)]);
    }

    #[test]
    fn part_sets_list_their_members_in_order() {
        let s: PartSet = [5, 0, 63, 64].into_iter().collect();
        assert_eq!(s.iter().collect::<Vec<_>>(), vec![0, 5, 63]);
        assert!(s.contains(63) && !s.contains(64) && !s.contains(1));
        assert!(PartSet::default().is_empty());
    }

    #[test]
    fn items_are_located_in_their_list() {
        let text = "name: x\ncorrelate:\n  all:\n    - trigger: a\n\n    - trigger: b\n      criteria: {}\n  none:\n  - trigger: c\naction: {ref: a.b}\n";
        let b = Block::find(text);
        assert_eq!(b.start, Some(2));
        assert_eq!(b.end, 10);
        let all = b.key_line("all", None).expect("all");
        assert_eq!(
            (
                b.item_line(all, 0),
                b.item_line(all, 1),
                b.item_line(all, 2)
            ),
            (Some(4), Some(6), None)
        );
        let none = b.key_line("none", None).expect("none");
        assert_eq!(b.item_line(none, 0), Some(9));
        assert!(b.text_from(6).starts_with("    - trigger: b"));
    }

    #[test]
    fn a_restored_state_is_the_same_state() {
        let c = corr("  within: 60\n  group_by: [trigger.id]\n  sequence:\n    - trigger: a.b\n    - trigger: a.b\n");
        let mut s = CorrelationState::new(&c);
        for (i, id) in ["x", "y", "z"].iter().enumerate() {
            let p = json!({"id": id});
            s.feed(&c, [0].into_iter().collect(), fed(id, &p), t(i as i64));
        }
        let text = serde_json::to_string(&s).expect("serializes");
        let back: CorrelationState = serde_json::from_str(&text).expect("reads back");
        assert!(back.fits(&c));
        assert_eq!(back.open_groups(), s.open_groups());
        assert_eq!(back.next_deadline(), Some(t(60)));
        assert_eq!(serde_json::to_string(&back).expect("serializes"), text);
        let other: Value =
            serde_json::from_str(&text.replace("\"version\":1", "\"version\":9")).expect("json");
        assert!(serde_json::from_value::<CorrelationState>(other).is_err());
    }

    #[test]
    fn a_changed_block_does_not_fit_old_state() {
        let a = corr("  within: 60\n  all:\n    - trigger: a.b\n");
        let b = corr("  within: 90\n  limit: 3\n  all:\n    - trigger: a.b\n");
        let c = corr("  within: 60\n  all:\n    - trigger: a.c\n");
        let s = CorrelationState::new(&a);
        assert!(s.fits(&b), "window and limit apply to new groups");
        assert!(!s.fits(&c));
    }

    #[test]
    fn any_fires_once_per_group_per_window() {
        let c = corr("  within: 10\n  group_by: [trigger.id]\n  any:\n    - trigger: a.b\n    - trigger: a.c\n");
        let mut s = CorrelationState::new(&c);
        let p = json!({"id": 1});
        let fires = |o: &[Outcome]| {
            o.iter()
                .filter(|o| matches!(o, Outcome::Fire { .. }))
                .count()
        };
        assert_eq!(
            fires(&s.feed(&c, [1].into_iter().collect(), fed("i1", &p), t(0))),
            1
        );
        assert_eq!(
            fires(&s.feed(&c, [0].into_iter().collect(), fed("i2", &p), t(5))),
            0
        );
        let out = s.feed(&c, [0].into_iter().collect(), fed("i3", &p), t(10));
        assert_eq!(fires(&out), 1, "{out:?}");
        assert_eq!(out.len(), 1, "the closed window reports nothing: {out:?}");
    }
}
