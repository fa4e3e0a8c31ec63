//! What serializing a timestamp costs: chrono's own serde against `squall_engine::timestamp`
//! (the same text), each over a million distinct timestamps written into a reused buffer.
//!
//! Run: `cargo run --release -p squall-engine --example timestamp_cost`.

use std::time::Instant;

use chrono::{DateTime, Duration, Utc};

#[derive(serde::Serialize)]
struct Ours<'a>(#[serde(serialize_with = "squall_engine::timestamp::serialize")] &'a DateTime<Utc>);

fn main() {
    let start = Utc::now();
    let n: i32 = 1_000_000;
    let mut out = Vec::with_capacity(64);
    let mut time = |label: &str, write: &dyn Fn(&DateTime<Utc>, &mut Vec<u8>)| {
        let began = Instant::now();
        for i in 0..n {
            out.clear();
            write(
                &(start + Duration::microseconds(i64::from(i) * 7)),
                &mut out,
            );
            std::hint::black_box(&out);
        }
        println!(
            "{label}: {:?} per timestamp",
            began.elapsed() / n.unsigned_abs()
        );
    };
    time("chrono's serde", &|t, out| {
        serde_json::to_writer(out, t).expect("serializes")
    });
    time("squall_engine::timestamp", &|t, out| {
        serde_json::to_writer(out, &Ours(t)).expect("serializes")
    });
}
