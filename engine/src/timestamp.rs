//! Timestamps serialized as chrono's serde does (RFC 3339 in UTC, `Z`, with 0, 3, 6 or 9
//! fractional digits, whichever shows the value exactly), written without `fmt` machinery:
//! every record squall journals, stores or shows carries two or more of them, and chrono's
//! `Display`-based path costs about three times as much (`examples/timestamp_cost.rs`).
//! Deserialization stays chrono's own.
//!
//! Use on a field: `#[serde(serialize_with = "crate::timestamp::serialize")]` (or
//! `serialize_opt` for an `Option`), for owned and borrowed timestamps alike.

use std::borrow::Borrow;

use chrono::{DateTime, Datelike, Timelike, Utc};
use serde::Serializer;

/// Longest text written: `9999-12-31T23:59:60.123456789Z`.
const MAX: usize = 30;

/// Writes `t` as chrono's serde does; `None` for a year outside 0..=9999 (chrono then writes
/// a sign and more digits, which [`serialize`] leaves to chrono).
fn write(t: &DateTime<Utc>, out: &mut [u8; MAX]) -> Option<usize> {
    let date = t.date_naive();
    let time = t.time();
    let year = u32::try_from(date.year()).ok().filter(|y| *y <= 9999)?;
    fn two(out: &mut [u8], at: usize, v: u32) {
        out[at] = b'0' + (v / 10) as u8;
        out[at + 1] = b'0' + (v % 10) as u8;
    }
    out[..20].copy_from_slice(b"0000-00-00T00:00:00.");
    two(out, 0, year / 100);
    two(out, 2, year % 100);
    two(out, 5, date.month());
    two(out, 8, date.day());
    two(out, 11, time.hour());
    two(out, 14, time.minute());
    // A leap second is kept in the nanoseconds (>= 1e9): chrono shows it as second 60.
    let nanos = time.nanosecond();
    let (second, nanos) = if nanos >= 1_000_000_000 {
        (time.second() + 1, nanos - 1_000_000_000)
    } else {
        (time.second(), nanos)
    };
    two(out, 17, second);
    let mut len = 19;
    if nanos != 0 {
        let (mut value, digits) = if nanos % 1_000_000 == 0 {
            (nanos / 1_000_000, 3)
        } else if nanos % 1_000 == 0 {
            (nanos / 1_000, 6)
        } else {
            (nanos, 9)
        };
        for i in (0..digits).rev() {
            out[20 + i] = b'0' + (value % 10) as u8;
            value /= 10;
        }
        len = 20 + digits;
    }
    out[len] = b'Z';
    Some(len + 1)
}

/// Serializes a timestamp (owned or borrowed).
pub fn serialize<T: Borrow<DateTime<Utc>>, S: Serializer>(t: &T, s: S) -> Result<S::Ok, S::Error> {
    let t = t.borrow();
    let mut buf = [0u8; MAX];
    match write(t, &mut buf).and_then(|n| std::str::from_utf8(&buf[..n]).ok()) {
        Some(text) => s.serialize_str(text),
        None => serde::Serialize::serialize(t, s),
    }
}

/// Serializes an optional timestamp (owned or borrowed).
pub fn serialize_opt<T: Borrow<Option<DateTime<Utc>>>, S: Serializer>(
    t: &T,
    s: S,
) -> Result<S::Ok, S::Error> {
    match t.borrow() {
        Some(t) => s.serialize_some(&Ts(t)),
        None => s.serialize_none(),
    }
}

struct Ts<'a>(&'a DateTime<Utc>);

impl serde::Serialize for Ts<'_> {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        serialize(self.0, s)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::TimeZone;

    fn ours(t: &DateTime<Utc>) -> String {
        serde_json::to_string(&Ts(t)).unwrap()
    }

    #[test]
    fn timestamps_serialize_exactly_as_chrono_does() {
        let start = Utc.with_ymd_and_hms(2026, 12, 2, 18, 5, 0).unwrap();
        // Whole seconds, milliseconds, microseconds and nanoseconds, across days and years.
        for step_ns in [
            1_000_000_000i64,
            1_000_000,
            1_000,
            1,
            7_919_013,
            86_399_999_999_937,
        ] {
            for i in 0..20_000i64 {
                let t = start + chrono::Duration::nanoseconds(step_ns.wrapping_mul(i) % (1 << 62));
                assert_eq!(ours(&t), serde_json::to_string(&t).unwrap(), "at {t:?}");
            }
        }
        for t in [
            Utc.with_ymd_and_hms(0, 1, 1, 0, 0, 0).unwrap(),
            Utc.with_ymd_and_hms(9999, 12, 31, 23, 59, 59).unwrap(),
            Utc.with_ymd_and_hms(10_000, 1, 1, 0, 0, 0).unwrap(),
            Utc.with_ymd_and_hms(-1, 6, 1, 12, 0, 0).unwrap(),
            Utc.timestamp_opt(1_483_228_799, 1_500_000_000).unwrap(),
            Utc::now(),
        ] {
            assert_eq!(ours(&t), serde_json::to_string(&t).unwrap(), "at {t:?}");
        }
    }

    #[test]
    fn optional_timestamps_serialize_as_chrono_does_and_read_back() {
        #[derive(serde::Serialize)]
        struct Both<'a> {
            #[serde(serialize_with = "serialize_opt")]
            end: Option<DateTime<Utc>>,
            #[serde(serialize_with = "serialize_opt")]
            none: &'a Option<DateTime<Utc>>,
            #[serde(serialize_with = "serialize")]
            at: &'a DateTime<Utc>,
        }
        let now = Utc::now();
        let text = serde_json::to_string(&Both {
            end: Some(now),
            none: &None,
            at: &now,
        })
        .unwrap();
        let expected = serde_json::json!({"end": now, "none": null, "at": now});
        assert_eq!(
            serde_json::from_str::<serde_json::Value>(&text).unwrap(),
            expected
        );
        let back: DateTime<Utc> = serde_json::from_value(
            serde_json::from_str::<serde_json::Value>(&text).unwrap()["at"].clone(),
        )
        .unwrap();
        assert_eq!(back, now);
    }
}
