//! StackStorm's timer triggers: `core.interval_timer`, `core.cron_timer` and `core.date_timer`
//! (st2's `core.st2.IntervalTimer`, `core.st2.CronTimer`, `core.st2.DateTimer`). This file turns a
//! rule's timer parameters into a schedule, computes fire times, and runs one task per distinct
//! timer that emits trigger instances shaped like st2's: `trigger_parameters` are the rule's
//! parameters (so the rule's parameter check matches) and the payload is
//! `{"executed_at": "<ISO-8601 UTC>", "schedule": <the parameters, or null when there are none>}`.
//! (st2 itself sends `parameters.time` as `schedule`, which is null for every timer; its payload
//! schema documents the parameters object, which is what squall sends.)
//!
//! Semantics follow APScheduler 3, which st2 uses:
//! - interval: the first fire is one period after the timer starts; `timezone` is accepted and
//!   checked but does not change an interval.
//! - cron: APScheduler's fields and defaults (fields more significant than the least
//!   significant one given are `*`, less significant ones take their minimum; `day_of_week` 0 is
//!   Monday; `day` also takes `last`, `1st fri`..`5th fri` and `last fri`; `week` is the ISO week),
//!   evaluated in the wall-clock time of `timezone` (UTC by default). A local time the spring
//!   clock change skips does not fire; a local time the autumn change repeats fires once, at its
//!   first occurrence (so a schedule firing several times an hour pauses for the repeated hour).
//!   Years run to 2100, the limit of the `cron` crate.
//! - date: fires once; a date without an offset is read in `timezone`; a date in the past never
//!   fires.
//!
//! It must never: fire a burst of missed ticks after a pause (each fire schedules the next one
//! after now), panic or silently ignore a parameter it does not understand (every problem is an
//! error naming the parameter), or know anything of what rules do with the instances it emits.

use std::collections::BTreeSet;
use std::str::FromStr;

use chrono::{
    DateTime, Datelike, Duration, NaiveDate, NaiveDateTime, NaiveTime, SecondsFormat, TimeZone,
    Utc, Weekday,
};
use chrono_tz::Tz;
use serde_json::{json, Map, Value};
use squall_rules::{canonical_trigger_ref, Rule};
use tokio::sync::{mpsc, watch};
use tokio::task::JoinHandle;

use crate::model::TriggerInstance;

/// squall's name for st2's `core.st2.IntervalTimer`.
pub const INTERVAL_TIMER: &str = "core.interval_timer";
/// squall's name for st2's `core.st2.CronTimer`.
pub const CRON_TIMER: &str = "core.cron_timer";
/// squall's name for st2's `core.st2.DateTimer`.
pub const DATE_TIMER: &str = "core.date_timer";

/// The `source` of every trigger instance a timer emits.
pub const TIMER_SOURCE: &str = "timer";

/// The longest single sleep. Timers sleep on tokio's monotonic clock but are defined on the wall
/// clock; waking at least this often lets a wall-clock jump (NTP step, suspend) be noticed
/// instead of firing hours late.
const MAX_SLEEP: std::time::Duration = std::time::Duration::from_secs(60);

const INTERVAL_PARAMETERS: &[&str] = &["unit", "delta", "timezone"];
const DATE_PARAMETERS: &[&str] = &["date", "timezone"];
const CRON_PARAMETERS: &[&str] = &[
    "year",
    "month",
    "day",
    "week",
    "day_of_week",
    "hour",
    "minute",
    "second",
    "timezone",
];

/// When a timer fires.
#[derive(Debug, Clone, PartialEq)]
pub enum TimerSpec {
    /// Every `period`, the first one period after the timer starts.
    Interval { period: Duration },
    /// At the wall-clock times a cron schedule matches in a time zone (boxed: it is far larger
    /// than the other variants).
    Cron(Box<CronSchedule>),
    /// Once, at `at`.
    Date { at: DateTime<Utc> },
}

/// An APScheduler cron schedule translated to the `cron` crate, plus the date conditions that
/// crate cannot express (`last`, `2nd fri`, ISO weeks), checked on each candidate day.
#[derive(Debug, Clone, PartialEq)]
pub struct CronSchedule {
    schedule: cron::Schedule,
    timezone: Tz,
    /// `Some` only when `day` uses an expression beyond plain day numbers.
    days: Option<Vec<DayExpr>>,
    /// `Some` only when `week` is not `*`.
    weeks: Option<BTreeSet<u32>>,
}

/// One comma-separated part of APScheduler's `day` field.
#[derive(Debug, Clone, PartialEq)]
enum DayExpr {
    Numbers(BTreeSet<u32>),
    /// `last`: the last day of the month.
    LastDay,
    /// `1st fri` .. `5th fri`.
    Nth(u32, Weekday),
    /// `last fri`.
    LastWeekday(Weekday),
}

impl CronSchedule {
    /// The 7-field expression given to the `cron` crate (sec min hour day month weekday year,
    /// weekdays numbered from Sunday = 1 as that crate does).
    pub fn expression(&self) -> &str {
        self.schedule.source()
    }

    pub fn timezone(&self) -> Tz {
        self.timezone
    }

    fn next_after(&self, after: DateTime<Utc>) -> Option<DateTime<Utc>> {
        let mut from = after.with_timezone(&self.timezone);
        // Each round either returns or moves `from` to the next local day, and the cron crate
        // stops at its last year, so this ends.
        loop {
            // An ambiguous local time yields both instants; the earlier one may precede `after`.
            let candidate = self
                .schedule
                .after(&from)
                .find(|t| t.with_timezone(&Utc) > after)?;
            let date = candidate.date_naive();
            if self.date_matches(date) {
                return Some(candidate.with_timezone(&Utc));
            }
            // The date conditions depend on the day only: skip the rest of this day at once
            // rather than walk it second by second.
            let next_day = start_of_day(self.timezone, date.succ_opt()?)?;
            from = next_day - Duration::seconds(1);
        }
    }

    fn date_matches(&self, date: NaiveDate) -> bool {
        let weeks_ok = self
            .weeks
            .as_ref()
            .is_none_or(|w| w.contains(&date.iso_week().week()));
        let days_ok = self
            .days
            .as_ref()
            .is_none_or(|exprs| exprs.iter().any(|e| e.matches(date)));
        weeks_ok && days_ok
    }
}

impl DayExpr {
    fn matches(&self, date: NaiveDate) -> bool {
        let day = date.day();
        let last = days_in_month(date);
        match self {
            DayExpr::Numbers(set) => set.contains(&day),
            DayExpr::LastDay => day == last,
            DayExpr::Nth(n, wd) => date.weekday() == *wd && (day - 1) / 7 + 1 == *n,
            DayExpr::LastWeekday(wd) => date.weekday() == *wd && day + 7 > last,
        }
    }

    /// The days of the month this expression can match, for the `cron` crate's day field.
    fn candidate_days(&self) -> BTreeSet<u32> {
        match self {
            DayExpr::Numbers(set) => set.clone(),
            DayExpr::LastDay => (28..=31).collect(),
            DayExpr::Nth(n, _) => (7 * (n - 1) + 1..=(7 * n).min(31)).collect(),
            DayExpr::LastWeekday(_) => (22..=31).collect(),
        }
    }
}

fn days_in_month(date: NaiveDate) -> u32 {
    let (y, m) = (date.year(), date.month());
    let first_of_next = if m == 12 {
        NaiveDate::from_ymd_opt(y + 1, 1, 1)
    } else {
        NaiveDate::from_ymd_opt(y, m + 1, 1)
    };
    first_of_next
        .and_then(|d| d.pred_opt())
        .map_or(31, |d| d.day())
}

/// The first instant of a local day. Midnight itself may not exist (some zones change their
/// clocks at 00:00), so the first existing hour is taken.
fn start_of_day(tz: Tz, date: NaiveDate) -> Option<DateTime<Tz>> {
    (0..24).find_map(|h| {
        let t = date.and_hms_opt(h, 0, 0)?;
        tz.from_local_datetime(&t).earliest()
    })
}

impl TimerSpec {
    /// Whether `trigger_type` (squall's or st2's name) is one of the three timer types.
    pub fn is_timer_type(trigger_type: &str) -> bool {
        matches!(
            canonical_trigger_ref(trigger_type),
            INTERVAL_TIMER | CRON_TIMER | DATE_TIMER
        )
    }

    /// Reads a timer's parameters as st2 documents them. `trigger_type` may be squall's or st2's
    /// name. The error names the offending parameter.
    pub fn parse(trigger_type: &str, params: &Map<String, Value>) -> Result<TimerSpec, String> {
        match canonical_trigger_ref(trigger_type) {
            INTERVAL_TIMER => parse_interval(params),
            CRON_TIMER => parse_cron(params).map(|c| TimerSpec::Cron(Box::new(c))),
            DATE_TIMER => parse_date(params),
            other => Err(format!("`{other}` is not a timer trigger type")),
        }
    }

    /// The first fire time strictly after `after`, or `None` when the timer never fires again.
    pub fn next_after(&self, after: DateTime<Utc>) -> Option<DateTime<Utc>> {
        match self {
            TimerSpec::Interval { period } => after.checked_add_signed(*period),
            TimerSpec::Cron(c) => c.next_after(after),
            TimerSpec::Date { at } => (*at > after).then_some(*at),
        }
    }
}

fn check_known(
    params: &Map<String, Value>,
    allowed: &[&str],
    trigger_type: &str,
) -> Result<(), String> {
    match params.keys().find(|k| !allowed.contains(&k.as_str())) {
        Some(unknown) => Err(format!(
            "unknown parameter `{unknown}` for {trigger_type} (expected one of: {})",
            allowed.join(", ")
        )),
        None => Ok(()),
    }
}

fn parse_timezone(params: &Map<String, Value>) -> Result<Tz, String> {
    match params.get("timezone") {
        None | Some(Value::Null) => Ok(Tz::UTC),
        // Names are looked up ignoring case, as pytz (st2's) does: "utc", "europe/paris".
        Some(Value::String(name)) => Tz::from_str(name.trim())
            .ok()
            .or_else(|| {
                chrono_tz::TZ_VARIANTS
                    .iter()
                    .copied()
                    .find(|tz| tz.name().eq_ignore_ascii_case(name.trim()))
            })
            .ok_or_else(|| {
                format!(
                    "parameter `timezone`: unknown time zone {name:?} (use an IANA name such as \
                 \"Europe/Paris\" or \"UTC\")"
                )
            }),
        Some(other) => Err(format!(
            "parameter `timezone`: must be a string, got {other}"
        )),
    }
}

fn parse_interval(params: &Map<String, Value>) -> Result<TimerSpec, String> {
    check_known(params, INTERVAL_PARAMETERS, INTERVAL_TIMER)?;
    let units = "weeks, days, hours, minutes, seconds";
    let unit = match params.get("unit") {
        None | Some(Value::Null) => {
            return Err(format!("parameter `unit` is required (one of {units})"))
        }
        Some(Value::String(u)) => u.as_str(),
        Some(other) => {
            return Err(format!(
                "parameter `unit`: must be one of {units}, got {other}"
            ))
        }
    };
    let delta = match params.get("delta") {
        None | Some(Value::Null) => {
            return Err("parameter `delta` is required (an integer greater than 0)".to_string())
        }
        Some(v) => match v.as_i64() {
            Some(d) if d > 0 => d,
            _ => {
                return Err(format!(
                    "parameter `delta`: must be an integer greater than 0, got {v}"
                ))
            }
        },
    };
    parse_timezone(params)?;
    let period = match unit {
        "weeks" => Duration::try_weeks(delta),
        "days" => Duration::try_days(delta),
        "hours" => Duration::try_hours(delta),
        "minutes" => Duration::try_minutes(delta),
        "seconds" => Duration::try_seconds(delta),
        other => {
            return Err(format!(
                "parameter `unit`: must be one of {units}, got {other:?}"
            ))
        }
    }
    .ok_or_else(|| format!("parameter `delta`: {delta} {unit} is too long"))?;
    Ok(TimerSpec::Interval { period })
}

fn parse_date(params: &Map<String, Value>) -> Result<TimerSpec, String> {
    check_known(params, DATE_PARAMETERS, DATE_TIMER)?;
    let text = match params.get("date") {
        None | Some(Value::Null) => {
            return Err("parameter `date` is required (e.g. \"2014-12-31 23:59:59\")".to_string())
        }
        Some(Value::String(s)) => s.trim(),
        Some(other) => {
            return Err(format!(
                "parameter `date`: must be a string such as \"2014-12-31 23:59:59\", got {other}"
            ))
        }
    };
    let tz = parse_timezone(params)?;
    let at = parse_date_text(text, tz)?;
    Ok(TimerSpec::Date { at })
}

/// st2 reads dates with dateutil; squall takes the forms people write: `2014-12-31 23:59:59`,
/// ISO-8601 with `T`, optional fractions, `Z` or an offset, minutes-only times, or a bare date
/// (midnight). A date with an offset ignores `timezone`, as APScheduler does.
fn parse_date_text(text: &str, tz: Tz) -> Result<DateTime<Utc>, String> {
    let bad = || {
        format!(
            "parameter `date`: {text:?} is not a date-time (expected e.g. \"2014-12-31 23:59:59\" \
             or \"2014-12-31T23:59:59+01:00\")"
        )
    };
    // One separator for the formats below: `2014-12-31 23:59:59` and `...T...` mean the same.
    let mut normal = text.to_string();
    if normal.len() > 10 && normal.is_char_boundary(10) && normal.is_char_boundary(11) {
        let sep = &normal[10..11];
        if sep == " " || sep == "t" {
            normal.replace_range(10..11, "T");
        }
    }
    if let Some(stripped) = normal.strip_suffix('z') {
        normal = format!("{stripped}Z");
    }
    if let Ok(dt) = DateTime::parse_from_rfc3339(&normal) {
        return Ok(dt.with_timezone(&Utc));
    }
    if let Ok(dt) = DateTime::parse_from_str(&normal, "%Y-%m-%dT%H:%M:%S%.f%z") {
        return Ok(dt.with_timezone(&Utc));
    }
    let naive = NaiveDateTime::parse_from_str(&normal, "%Y-%m-%dT%H:%M:%S%.f")
        .or_else(|_| NaiveDateTime::parse_from_str(&normal, "%Y-%m-%dT%H:%M"))
        .or_else(|_| {
            NaiveDate::parse_from_str(&normal, "%Y-%m-%d").map(|d| d.and_time(NaiveTime::MIN))
        })
        .map_err(|_| bad())?;
    // An ambiguous local time (autumn clock change) is taken at its first occurrence.
    tz.from_local_datetime(&naive)
        .earliest()
        .map(|dt| dt.with_timezone(&Utc))
        .ok_or_else(|| {
            format!("parameter `date`: {naive} does not exist in {tz} (the clocks skip it)")
        })
}

/// One APScheduler cron field: its name, range and the names its values may take.
struct CronField {
    name: &'static str,
    min: u32,
    max: u32,
    /// Names of `min`, `min + 1`, ...
    names: &'static [&'static str],
    /// The value a field less significant than every given one takes.
    default: &'static str,
}

const WEEKDAY_NAMES: &[&str] = &["mon", "tue", "wed", "thu", "fri", "sat", "sun"];
const MONTH_NAMES: &[&str] = &[
    "jan", "feb", "mar", "apr", "may", "jun", "jul", "aug", "sep", "oct", "nov", "dec",
];

/// APScheduler's fields, most significant first (the order its defaults depend on).
const CRON_FIELDS: [CronField; 8] = [
    CronField {
        name: "year",
        min: 1970,
        // APScheduler allows 9999; the cron crate stops at 2100.
        max: 2100,
        names: &[],
        default: "*",
    },
    CronField {
        name: "month",
        min: 1,
        max: 12,
        names: MONTH_NAMES,
        default: "1",
    },
    CronField {
        name: "day",
        min: 1,
        max: 31,
        names: &[],
        default: "1",
    },
    CronField {
        name: "week",
        min: 1,
        max: 53,
        names: &[],
        default: "*",
    },
    CronField {
        name: "day_of_week",
        min: 0,
        max: 6,
        names: WEEKDAY_NAMES,
        default: "*",
    },
    CronField {
        name: "hour",
        min: 0,
        max: 23,
        names: &[],
        default: "0",
    },
    CronField {
        name: "minute",
        min: 0,
        max: 59,
        names: &[],
        default: "0",
    },
    CronField {
        name: "second",
        min: 0,
        max: 59,
        names: &[],
        default: "0",
    },
];

fn parse_cron(params: &Map<String, Value>) -> Result<CronSchedule, String> {
    check_known(params, CRON_PARAMETERS, CRON_TIMER)?;
    let timezone = parse_timezone(params)?;
    let least_significant_given = CRON_FIELDS
        .iter()
        .rposition(|f| params.contains_key(f.name));
    let expr = |i: usize| field_expression(params, &CRON_FIELDS[i], i, least_significant_given);
    let [year, month, day, week, day_of_week, hour, minute, second] = &CRON_FIELDS;

    let years = parse_field(year, &expr(0)?)?;
    let months = parse_field(month, &expr(1)?)?;
    let day_exprs = parse_day_field(day, &expr(2)?)?;
    let weeks = parse_field(week, &expr(3)?)?;
    let weekdays = parse_field(day_of_week, &expr(4)?)?;
    let hours = parse_field(hour, &expr(5)?)?;
    let minutes = parse_field(minute, &expr(6)?)?;
    let seconds = parse_field(second, &expr(7)?)?;

    let candidate_days: BTreeSet<u32> =
        day_exprs.iter().flat_map(DayExpr::candidate_days).collect();
    let plain_days = day_exprs.iter().all(|e| matches!(e, DayExpr::Numbers(_)));
    // APScheduler numbers weekdays from Monday = 0; the cron crate from Sunday = 1.
    let cron_weekdays: BTreeSet<u32> = weekdays.iter().map(|d| (d + 1) % 7 + 1).collect();

    let expression = [
        render(&seconds, 0, 59),
        render(&minutes, 0, 59),
        render(&hours, 0, 23),
        render(&candidate_days, 1, 31),
        render(&months, 1, 12),
        render(&cron_weekdays, 1, 7),
        render(&years, year.min, year.max),
    ]
    .join(" ");
    let schedule = cron::Schedule::from_str(&expression)
        .map_err(|e| format!("cron schedule {expression:?} was refused: {e}"))?;
    let all_weeks = weeks.len() == (week.max - week.min + 1) as usize;
    Ok(CronSchedule {
        schedule,
        timezone,
        days: (!plain_days).then_some(day_exprs),
        weeks: (!all_weeks).then_some(weeks),
    })
}

/// The expression of the field at `index` in `CRON_FIELDS`: as given, or APScheduler's default
/// (`*` above the least significant field given, the field's minimum below it).
fn field_expression(
    params: &Map<String, Value>,
    field: &CronField,
    index: usize,
    least_significant_given: Option<usize>,
) -> Result<String, String> {
    let name = field.name;
    let expr = match params.get(name) {
        Some(Value::String(s)) => s.trim().to_ascii_lowercase(),
        Some(Value::Number(n)) => match n.as_u64() {
            Some(v) => v.to_string(),
            None => {
                return Err(format!(
                    "parameter `{name}`: must be a non-negative integer or an expression such as \
                     \"*/5\", got {n}"
                ))
            }
        },
        Some(other) => {
            return Err(format!(
            "parameter `{name}`: must be an integer or an expression such as \"*/5\", got {other}"
        ))
        }
        None => match least_significant_given {
            Some(last) if index > last => field.default.to_string(),
            _ => "*".to_string(),
        },
    };
    if expr.is_empty() {
        return Err(format!("parameter `{name}`: must not be empty"));
    }
    Ok(expr)
}

/// `*` for a full range, else the values listed: the cron crate then does no arithmetic of its
/// own, and APScheduler's steps and weekday numbering are applied here.
fn render(values: &BTreeSet<u32>, min: u32, max: u32) -> String {
    if values.len() == (max - min + 1) as usize {
        "*".to_string()
    } else {
        values
            .iter()
            .map(u32::to_string)
            .collect::<Vec<_>>()
            .join(",")
    }
}

/// Parses APScheduler's day field, which besides numbers takes `last`, `<nth> <weekday>` and
/// `last <weekday>`.
fn parse_day_field(field: &CronField, expr: &str) -> Result<Vec<DayExpr>, String> {
    let mut out = Vec::new();
    for part in expr.split(',') {
        let part = part.trim();
        let words: Vec<&str> = part.split_whitespace().collect();
        let parsed = match words.as_slice() {
            ["last"] => DayExpr::LastDay,
            [nth, weekday] => {
                let wd = weekday_from_name(weekday).ok_or_else(|| {
                    format!("parameter `day`: {weekday:?} in {part:?} is not a weekday (mon..sun)")
                })?;
                match *nth {
                    "1st" => DayExpr::Nth(1, wd),
                    "2nd" => DayExpr::Nth(2, wd),
                    "3rd" => DayExpr::Nth(3, wd),
                    "4th" => DayExpr::Nth(4, wd),
                    "5th" => DayExpr::Nth(5, wd),
                    "last" => DayExpr::LastWeekday(wd),
                    _ => {
                        return Err(format!(
                            "parameter `day`: {part:?} must be \"1st\"..\"5th\" or \"last\" \
                             followed by a weekday"
                        ))
                    }
                }
            }
            _ => DayExpr::Numbers(parse_field(field, part)?),
        };
        out.push(parsed);
    }
    Ok(out)
}

fn weekday_from_name(name: &str) -> Option<Weekday> {
    const DAYS: [Weekday; 7] = [
        Weekday::Mon,
        Weekday::Tue,
        Weekday::Wed,
        Weekday::Thu,
        Weekday::Fri,
        Weekday::Sat,
        Weekday::Sun,
    ];
    WEEKDAY_NAMES
        .iter()
        .position(|n| *n == name)
        .map(|i| DAYS[i])
}

/// Parses one APScheduler field expression (`*`, `*/n`, `a`, `a/n`, `a-b`, `a-b/n`, names, and
/// comma-separated lists of these) into the values it matches.
fn parse_field(field: &CronField, expr: &str) -> Result<BTreeSet<u32>, String> {
    let name = field.name;
    let mut values = BTreeSet::new();
    for part in expr.split(',') {
        let part = part.trim();
        let (base, step) = match part.split_once('/') {
            Some((base, step)) => {
                let step: u32 = step.trim().parse().ok().filter(|s| *s > 0).ok_or_else(|| {
                    format!("parameter `{name}`: the step in {part:?} must be an integer greater than 0")
                })?;
                (base.trim(), Some(step))
            }
            None => (part, None),
        };
        let (first, last) = if base == "*" {
            (field.min, field.max)
        } else if let Some((a, b)) = base.split_once('-') {
            let (a, b) = (field_value(field, a.trim())?, field_value(field, b.trim())?);
            if a > b {
                return Err(format!(
                    "parameter `{name}`: in {part:?} the first value is after the last"
                ));
            }
            (a, b)
        } else {
            let a = field_value(field, base)?;
            // APScheduler reads `a/n` as "from a to the end, every n".
            (a, if step.is_some() { field.max } else { a })
        };
        let step = step.unwrap_or(1);
        let mut v = first;
        while v <= last {
            values.insert(v);
            v = match v.checked_add(step) {
                Some(next) => next,
                None => break,
            };
        }
    }
    Ok(values)
}

fn field_value(field: &CronField, text: &str) -> Result<u32, String> {
    let name = field.name;
    let value = if let Ok(n) = text.parse::<u32>() {
        n
    } else if let Some(i) = field.names.iter().position(|n| *n == text) {
        field.min + i as u32
    } else if field.names.is_empty() {
        return Err(format!(
            "parameter `{name}`: {text:?} is not a number or an expression such as \"*/5\""
        ));
    } else {
        return Err(format!(
            "parameter `{name}`: {text:?} is not a number or one of {}",
            field.names.join(", ")
        ));
    };
    if value < field.min || value > field.max {
        return Err(format!(
            "parameter `{name}`: {value} is out of range {}-{}",
            field.min, field.max
        ));
    }
    Ok(value)
}

/// One timer to run: rules whose trigger has this type and these parameters share it.
#[derive(Debug, Clone, PartialEq)]
pub struct TimerDef {
    /// The canonical trigger type (`core.interval_timer`...).
    pub trigger_type: String,
    /// The parameters as the rules give them; sent as the instances' `trigger_parameters`.
    pub parameters: Map<String, Value>,
    pub spec: TimerSpec,
}

/// One timer per distinct (type, parameters) among the enabled rules with a timer trigger: two
/// rules with the same timer share it, like st2's triggers. Rules whose timer parameters are
/// invalid are returned with the error, by rule reference.
pub fn timers_from_rules<'a>(
    rules: impl IntoIterator<Item = &'a Rule>,
) -> (Vec<TimerDef>, Vec<(String, String)>) {
    let mut timers: Vec<TimerDef> = Vec::new();
    let mut errors = Vec::new();
    for rule in rules {
        if !rule.enabled || !TimerSpec::is_timer_type(&rule.trigger_type) {
            continue;
        }
        let trigger_type = canonical_trigger_ref(&rule.trigger_type);
        // serde_json's map equality ignores key order, as does the rules' parameter check.
        let shared = timers
            .iter()
            .any(|t| t.trigger_type == trigger_type && t.parameters == rule.trigger_parameters);
        if shared {
            continue;
        }
        match TimerSpec::parse(trigger_type, &rule.trigger_parameters) {
            Ok(spec) => timers.push(TimerDef {
                trigger_type: trigger_type.to_string(),
                parameters: rule.trigger_parameters.clone(),
                spec,
            }),
            Err(e) => errors.push((rule.reference(), e)),
        }
    }
    (timers, errors)
}

/// Runs a timer on a task of its own until `shutdown` becomes true (or its sender is dropped):
/// each firing sends a trigger instance (source `timer`) on `tx`. A timer whose receiver is
/// gone or that will never fire again ends its task.
pub fn spawn_timer(
    timer: TimerDef,
    tx: mpsc::Sender<TriggerInstance>,
    shutdown: watch::Receiver<bool>,
) -> JoinHandle<()> {
    tokio::spawn(run_timer(timer, tx, shutdown))
}

async fn run_timer(
    timer: TimerDef,
    tx: mpsc::Sender<TriggerInstance>,
    mut shutdown: watch::Receiver<bool>,
) {
    let parameters = Value::Object(timer.parameters.clone());
    let schedule = if timer.parameters.is_empty() {
        Value::Null
    } else {
        parameters.clone()
    };
    let mut next = timer.spec.next_after(Utc::now());
    while let Some(at) = next {
        if !sleep_until_wall_clock(at, &mut shutdown).await {
            return;
        }
        let fired_at = Utc::now();
        let payload = json!({
            "executed_at": fired_at.to_rfc3339_opts(SecondsFormat::Micros, true),
            "schedule": schedule.clone(),
        });
        let instance = TriggerInstance::new(
            &timer.trigger_type,
            Some(parameters.clone()),
            payload,
            TIMER_SOURCE,
        );
        tracing::debug!(trigger = %timer.trigger_type, parameters = %parameters, "timer fired");
        // A full channel must not keep the task from seeing a shutdown.
        tokio::select! {
            sent = tx.send(instance) => {
                if sent.is_err() {
                    tracing::debug!(trigger = %timer.trigger_type, "timer stops: nobody receives its instances");
                    return;
                }
            }
            _ = shutdown.wait_for(|stop| *stop) => return,
        }
        // Anchored on the scheduled instant so an interval does not drift by the time spent
        // firing, but never in the past, so a long pause fires once rather than a burst.
        let now = Utc::now();
        next = match timer.spec.next_after(at) {
            Some(n) if n > now => Some(n),
            _ => timer.spec.next_after(now),
        };
    }
    tracing::debug!(trigger = %timer.trigger_type, parameters = %parameters, "timer will not fire again");
}

/// Waits until the wall clock reaches `at`. Returns false when shutdown was requested (or its
/// sender dropped) first.
async fn sleep_until_wall_clock(at: DateTime<Utc>, shutdown: &mut watch::Receiver<bool>) -> bool {
    loop {
        if *shutdown.borrow_and_update() {
            return false;
        }
        let now = Utc::now();
        if now >= at {
            return true;
        }
        let wait = (at - now).to_std().unwrap_or_default().min(MAX_SLEEP);
        let deadline = tokio::time::Instant::now() + wait;
        tokio::select! {
            _ = tokio::time::sleep_until(deadline) => {}
            _ = shutdown.wait_for(|stop| *stop) => return false,
        }
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    fn params(v: Value) -> Map<String, Value> {
        match v {
            Value::Object(m) => m,
            other => panic!("not an object: {other}"),
        }
    }

    fn utc(s: &str) -> DateTime<Utc> {
        DateTime::parse_from_rfc3339(s).unwrap().with_timezone(&Utc)
    }

    fn next(kind: &str, p: Value, after: &str) -> Option<DateTime<Utc>> {
        TimerSpec::parse(kind, &params(p))
            .unwrap()
            .next_after(utc(after))
    }

    fn err(kind: &str, p: Value) -> String {
        TimerSpec::parse(kind, &params(p)).unwrap_err()
    }

    #[test]
    fn timer_types_include_st2_names() {
        for t in [
            "core.interval_timer",
            "core.cron_timer",
            "core.date_timer",
            "core.st2.IntervalTimer",
            "core.st2.CronTimer",
            "core.st2.DateTimer",
        ] {
            assert!(TimerSpec::is_timer_type(t), "{t}");
        }
        assert!(!TimerSpec::is_timer_type("core.webhook"));
        assert!(TimerSpec::parse("core.webhook", &Map::new())
            .unwrap_err()
            .contains("not a timer"));
    }

    #[test]
    fn interval_next_after_each_unit() {
        let after = "2024-05-01T10:00:00Z";
        let cases = [
            ("seconds", 30, "2024-05-01T10:00:30Z"),
            ("minutes", 5, "2024-05-01T10:05:00Z"),
            ("hours", 2, "2024-05-01T12:00:00Z"),
            ("days", 1, "2024-05-02T10:00:00Z"),
            ("weeks", 2, "2024-05-15T10:00:00Z"),
        ];
        for (unit, delta, expected) in cases {
            let got = next(
                "core.st2.IntervalTimer",
                json!({"unit": unit, "delta": delta}),
                after,
            );
            assert_eq!(got, Some(utc(expected)), "{unit}");
        }
        let with_tz = next(
            "core.interval_timer",
            json!({"unit": "seconds", "delta": 1, "timezone": "Europe/Paris"}),
            after,
        );
        assert_eq!(with_tz, Some(utc("2024-05-01T10:00:01Z")));
    }

    #[test]
    fn cron_every_quarter_hour() {
        let p = json!({"minute": "*/15"});
        assert_eq!(
            next("core.st2.CronTimer", p.clone(), "2024-05-01T10:07:12Z"),
            Some(utc("2024-05-01T10:15:00Z"))
        );
        // Strictly after: a fire time is not returned again.
        assert_eq!(
            next("core.cron_timer", p.clone(), "2024-05-01T10:15:00Z"),
            Some(utc("2024-05-01T10:30:00Z"))
        );
        assert_eq!(
            next("core.cron_timer", p, "2024-05-01T10:45:00Z"),
            Some(utc("2024-05-01T11:00:00Z"))
        );
    }

    #[test]
    fn cron_less_significant_fields_default_to_their_minimum() {
        // {hour: 2} is every day at 02:00:00, not every second of 02:xx.
        let p = json!({"hour": 2});
        assert_eq!(
            next("core.cron_timer", p.clone(), "2024-05-01T01:59:59Z"),
            Some(utc("2024-05-01T02:00:00Z"))
        );
        assert_eq!(
            next("core.cron_timer", p, "2024-05-01T02:00:00Z"),
            Some(utc("2024-05-02T02:00:00Z"))
        );
        // {second: 0}: more significant fields are `*`, so every minute.
        let p = json!({"second": 0});
        assert_eq!(
            next("core.cron_timer", p.clone(), "2024-05-01T10:07:12Z"),
            Some(utc("2024-05-01T10:08:00Z"))
        );
        assert_eq!(
            next("core.cron_timer", p, "2024-05-01T10:08:00Z"),
            Some(utc("2024-05-01T10:09:00Z"))
        );
        // {month: 6}: day defaults to 1, time to midnight.
        assert_eq!(
            next(
                "core.cron_timer",
                json!({"month": "jun"}),
                "2024-05-01T10:00:00Z"
            ),
            Some(utc("2024-06-01T00:00:00Z"))
        );
    }

    #[test]
    fn cron_weekdays_are_numbered_from_monday() {
        // 2024-05-03 is a Friday: next weekday 09:00 is Monday 2024-05-06.
        let p = json!({"day_of_week": "mon-fri", "hour": 9});
        assert_eq!(
            next("core.cron_timer", p.clone(), "2024-05-03T09:00:00Z"),
            Some(utc("2024-05-06T09:00:00Z"))
        );
        assert_eq!(
            next("core.cron_timer", p, "2024-05-06T08:00:00Z"),
            Some(utc("2024-05-06T09:00:00Z"))
        );
        // APScheduler's 0 is Monday and 6 is Sunday.
        assert_eq!(
            next(
                "core.cron_timer",
                json!({"day_of_week": 0}),
                "2024-05-03T09:00:00Z"
            ),
            Some(utc("2024-05-06T00:00:00Z"))
        );
        assert_eq!(
            next(
                "core.cron_timer",
                json!({"day_of_week": "6"}),
                "2024-05-03T09:00:00Z"
            ),
            Some(utc("2024-05-05T00:00:00Z"))
        );
        // A weekend range crosses the cron crate's Sunday = 1 boundary.
        assert_eq!(
            next(
                "core.cron_timer",
                json!({"day_of_week": "sat-sun", "hour": 12}),
                "2024-05-04T13:00:00Z"
            ),
            Some(utc("2024-05-05T12:00:00Z"))
        );
    }

    #[test]
    fn cron_in_a_time_zone_follows_its_clock_changes() {
        // Europe/Paris goes from UTC+1 to UTC+2 on 2024-03-31 at 02:00 local.
        let p = json!({"hour": 9, "timezone": "Europe/Paris"});
        assert_eq!(
            next("core.cron_timer", p.clone(), "2024-03-30T00:00:00Z"),
            Some(utc("2024-03-30T08:00:00Z"))
        );
        assert_eq!(
            next("core.cron_timer", p, "2024-03-30T08:00:00Z"),
            Some(utc("2024-03-31T07:00:00Z"))
        );
        // 02:30 does not exist on 2024-03-31 in Paris: that day is skipped.
        let p = json!({"hour": 2, "minute": 30, "timezone": "Europe/Paris"});
        assert_eq!(
            next("core.cron_timer", p, "2024-03-30T02:00:00Z"),
            Some(utc("2024-04-01T00:30:00Z"))
        );
        // 02:30 occurs twice on 2024-10-27: it fires once, at the first occurrence.
        let p = json!({"hour": 2, "minute": 30, "timezone": "Europe/Paris"});
        let first = next("core.cron_timer", p.clone(), "2024-10-26T12:00:00Z");
        assert_eq!(first, Some(utc("2024-10-27T00:30:00Z")));
        assert_eq!(
            next("core.cron_timer", p, "2024-10-27T00:30:00Z"),
            Some(utc("2024-10-28T01:30:00Z"))
        );
    }

    #[test]
    fn time_zone_names_ignore_case_as_pytz_does() {
        let p = json!({"hour": 9, "timezone": "europe/paris"});
        assert_eq!(
            next("core.cron_timer", p, "2024-03-30T00:00:00Z"),
            Some(utc("2024-03-30T08:00:00Z"))
        );
        let p = json!({"hour": 9, "timezone": "utc"});
        assert_eq!(
            next("core.cron_timer", p, "2024-03-30T00:00:00Z"),
            Some(utc("2024-03-30T09:00:00Z"))
        );
        let err = TimerSpec::parse(
            "core.cron_timer",
            json!({"hour": 9, "timezone": "Mars/Olympus"})
                .as_object()
                .expect("object"),
        )
        .expect_err("unknown zone");
        assert!(err.contains("timezone"), "{err}");
    }

    #[test]
    fn cron_day_expressions_and_weeks() {
        assert_eq!(
            next(
                "core.cron_timer",
                json!({"day": "last"}),
                "2024-02-10T00:00:00Z"
            ),
            Some(utc("2024-02-29T00:00:00Z"))
        );
        // Second Friday of May 2024 is the 10th.
        assert_eq!(
            next(
                "core.cron_timer",
                json!({"day": "2nd fri"}),
                "2024-05-01T00:00:00Z"
            ),
            Some(utc("2024-05-10T00:00:00Z"))
        );
        // Last Sunday of March 2024 is the 31st.
        assert_eq!(
            next(
                "core.cron_timer",
                json!({"month": 3, "day": "last sun"}),
                "2024-01-01T00:00:00Z"
            ),
            Some(utc("2024-03-31T00:00:00Z"))
        );
        // ISO week 10 of 2024 starts on Monday 2024-03-04.
        assert_eq!(
            next(
                "core.cron_timer",
                json!({"week": 10}),
                "2024-01-01T00:00:00Z"
            ),
            Some(utc("2024-03-04T00:00:00Z"))
        );
        assert_eq!(
            next(
                "core.cron_timer",
                json!({"year": 2023}),
                "2024-01-01T00:00:00Z"
            ),
            None
        );
    }

    #[test]
    fn cron_translates_to_the_cron_crate() {
        let spec = TimerSpec::parse(
            "core.cron_timer",
            &params(json!({"day_of_week": "mon-fri", "hour": 9})),
        )
        .unwrap();
        let TimerSpec::Cron(c) = spec else {
            panic!("not a cron timer: {spec:?}")
        };
        assert_eq!(c.expression(), "0 0 9 * * 2,3,4,5,6 *");
        assert_eq!(c.timezone(), Tz::UTC);
    }

    #[test]
    fn date_fires_once_and_never_in_the_past() {
        let p = json!({"date": "2014-12-31 23:59:59"});
        assert_eq!(
            next("core.st2.DateTimer", p.clone(), "2014-12-31T00:00:00Z"),
            Some(utc("2014-12-31T23:59:59Z"))
        );
        assert_eq!(
            next("core.date_timer", p.clone(), "2014-12-31T23:59:59Z"),
            None
        );
        assert_eq!(next("core.date_timer", p, "2020-01-01T00:00:00Z"), None);
        // A date without an offset is read in `timezone`; one with an offset keeps it.
        assert_eq!(
            next(
                "core.date_timer",
                json!({"date": "2014-12-31 23:59:59", "timezone": "Europe/Paris"}),
                "2014-01-01T00:00:00Z"
            ),
            Some(utc("2014-12-31T22:59:59Z"))
        );
        assert_eq!(
            next(
                "core.date_timer",
                json!({"date": "2014-12-31T23:59:59+05:00", "timezone": "Europe/Paris"}),
                "2014-01-01T00:00:00Z"
            ),
            Some(utc("2014-12-31T18:59:59Z"))
        );
        assert_eq!(
            next(
                "core.date_timer",
                json!({"date": "2030-01-02"}),
                "2024-01-01T00:00:00Z"
            ),
            Some(utc("2030-01-02T00:00:00Z"))
        );
    }

    #[test]
    fn every_error_names_its_parameter() {
        let cases: &[(&str, Value, &str)] = &[
            ("core.interval_timer", json!({"delta": 5}), "`unit`"),
            (
                "core.interval_timer",
                json!({"unit": "fortnights", "delta": 5}),
                "`unit`",
            ),
            ("core.interval_timer", json!({"unit": "seconds"}), "`delta`"),
            (
                "core.interval_timer",
                json!({"unit": "seconds", "delta": 0}),
                "`delta`",
            ),
            (
                "core.interval_timer",
                json!({"unit": "seconds", "delta": 1.5}),
                "`delta`",
            ),
            (
                "core.interval_timer",
                json!({"unit": "seconds", "delta": "5"}),
                "`delta`",
            ),
            (
                "core.interval_timer",
                json!({"unit": "weeks", "delta": i64::MAX}),
                "`delta`",
            ),
            (
                "core.interval_timer",
                json!({"unit": "seconds", "delta": 5, "timezone": "Mars/Olympus"}),
                "`timezone`",
            ),
            (
                "core.interval_timer",
                json!({"unit": "seconds", "delta": 5, "every": 1}),
                "`every`",
            ),
            ("core.cron_timer", json!({"hour": 24}), "`hour`"),
            ("core.cron_timer", json!({"minute": "*/0"}), "`minute`"),
            ("core.cron_timer", json!({"minute": "x"}), "`minute`"),
            ("core.cron_timer", json!({"second": -1}), "`second`"),
            (
                "core.cron_timer",
                json!({"day_of_week": "fri-mon"}),
                "`day_of_week`",
            ),
            (
                "core.cron_timer",
                json!({"day_of_week": "funday"}),
                "`day_of_week`",
            ),
            (
                "core.cron_timer",
                json!({"day_of_week": 7}),
                "`day_of_week`",
            ),
            ("core.cron_timer", json!({"day": 0}), "`day`"),
            ("core.cron_timer", json!({"day": "6th fri"}), "`day`"),
            ("core.cron_timer", json!({"month": 13}), "`month`"),
            ("core.cron_timer", json!({"week": 54}), "`week`"),
            ("core.cron_timer", json!({"year": 3000}), "`year`"),
            ("core.cron_timer", json!({"hour": ""}), "`hour`"),
            ("core.cron_timer", json!({"hour": true}), "`hour`"),
            ("core.cron_timer", json!({"timezone": 1}), "`timezone`"),
            ("core.cron_timer", json!({"hours": 1}), "`hours`"),
            ("core.date_timer", json!({}), "`date`"),
            ("core.date_timer", json!({"date": "tomorrow"}), "`date`"),
            ("core.date_timer", json!({"date": 1700000000}), "`date`"),
            (
                "core.date_timer",
                json!({"date": "2024-03-31 02:30:00", "timezone": "Europe/Paris"}),
                "`date`",
            ),
            (
                "core.date_timer",
                json!({"date": "2030-01-01", "tz": "UTC"}),
                "`tz`",
            ),
        ];
        for (kind, p, name) in cases {
            let e = err(kind, p.clone());
            assert!(e.contains(name), "{kind} {p}: {e:?} should name {name}");
        }
    }

    fn rule(name: &str, enabled: bool, trigger: &str) -> Rule {
        let text = format!(
            "name: {name}\npack: demo\nenabled: {enabled}\n{trigger}\naction:\n  ref: core.noop\n"
        );
        Rule::from_yaml(&text).unwrap()
    }

    #[test]
    fn rules_with_the_same_timer_share_it() {
        let rules = [
            rule(
                "a",
                true,
                "trigger:\n  type: core.st2.IntervalTimer\n  parameters: {unit: seconds, delta: 30}",
            ),
            // Same timer under squall's name, keys in another order.
            rule(
                "b",
                true,
                "trigger:\n  type: core.interval_timer\n  parameters: {delta: 30, unit: seconds}",
            ),
            rule(
                "c",
                true,
                "trigger:\n  type: core.st2.IntervalTimer\n  parameters: {unit: seconds, delta: 60}",
            ),
            rule(
                "d",
                false,
                "trigger:\n  type: core.st2.CronTimer\n  parameters: {hour: 3}",
            ),
            rule(
                "e",
                true,
                "trigger:\n  type: core.st2.CronTimer\n  parameters: {hour: 25}",
            ),
            rule("f", true, "trigger:\n  type: core.webhook\n  parameters: {url: x}"),
        ];
        let (timers, errors) = timers_from_rules(&rules);
        assert_eq!(timers.len(), 2, "{timers:?}");
        assert!(timers.iter().all(|t| t.trigger_type == INTERVAL_TIMER));
        assert_eq!(
            timers[0].parameters,
            params(json!({"unit": "seconds", "delta": 30}))
        );
        assert_eq!(
            timers[0].spec,
            TimerSpec::Interval {
                period: Duration::seconds(30)
            }
        );
        assert_eq!(
            timers[1].parameters,
            params(json!({"unit": "seconds", "delta": 60}))
        );
        assert_eq!(errors.len(), 1, "{errors:?}");
        assert_eq!(errors[0].0, "demo.e");
        assert!(errors[0].1.contains("`hour`"), "{errors:?}");
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn interval_timer_emits_instances_until_shutdown() {
        use tokio::time::timeout;
        let parameters = params(json!({"unit": "seconds", "delta": 1}));
        let timer = TimerDef {
            trigger_type: INTERVAL_TIMER.to_string(),
            spec: TimerSpec::parse("core.st2.IntervalTimer", &parameters).unwrap(),
            parameters: parameters.clone(),
        };
        let (tx, mut rx) = mpsc::channel(8);
        let (stop, shutdown) = watch::channel(false);
        let started = Utc::now();
        let task = spawn_timer(timer, tx, shutdown);

        let deadline = std::time::Duration::from_secs(5);
        let mut times = Vec::new();
        for _ in 0..2 {
            let inst = timeout(deadline, rx.recv()).await.unwrap().unwrap();
            assert_eq!(inst.trigger, "core.interval_timer");
            assert_eq!(inst.source, "timer");
            assert_eq!(
                inst.trigger_parameters,
                Some(Value::Object(parameters.clone()))
            );
            assert_eq!(inst.payload["schedule"], Value::Object(parameters.clone()));
            let executed_at = inst.payload["executed_at"].as_str().unwrap();
            let executed_at = utc(executed_at);
            assert!(executed_at.to_rfc3339().ends_with("+00:00"));
            times.push(executed_at);
        }
        assert!(
            times[0] >= started + Duration::milliseconds(900),
            "{times:?}"
        );
        assert!(
            times[1] - times[0] >= Duration::milliseconds(900),
            "{times:?}"
        );

        stop.send(true).unwrap();
        timeout(deadline, task).await.unwrap().unwrap();
        // The task has ended and dropped its sender, so the channel closes (after at most a tick
        // that fired before the shutdown).
        let mut late = 0;
        while timeout(deadline, rx.recv()).await.unwrap().is_some() {
            late += 1;
        }
        assert!(late <= 1, "{late} instances after shutdown");
    }
}
