//! RecordIO decoding throughput over a realistic Mesos event stream: TASK_UPDATED events of
//! about 600 bytes (as a master sends them, ids inside `status`), fed to the decoder in 4 KiB
//! chunks (a busy stream read from a socket) and in 64-byte chunks (a stream trickling through
//! a proxy). Reports bytes/s and records/s. It measures framing only, not JSON parsing.
//!
//! Run: `cargo bench -p squall-sensors --bench recordio -- --warm-up-time 1 --measurement-time 3`

use std::hint::black_box;

use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use squall_sensors::recordio::RecordIoDecoder;

const RECORDS: usize = 4096;

/// One TASK_UPDATED event, padded through its message to about 600 bytes like real updates
/// with a reason, a message and container status.
fn task_update(n: usize) -> String {
    let base = format!(
        concat!(
            r#"{{"type":"TASK_UPDATED","task_updated":{{"framework_id":{{"value":"49154f1b-8cf6-4421-bf13-8bd11dccd1f1-0001"}},"#,
            r#""status":{{"task_id":{{"value":"shop_web.{:08x}-4f1c-11ee-9a3b-0242ac110002"}},"state":"TASK_FAILED","#,
            r#""source":"SOURCE_EXECUTOR","reason":"REASON_COMMAND_EXECUTOR_FAILED","#,
            r#""agent_id":{{"value":"c3946a13-1f2e-4a5b-9c8d-0e1f2a3b4c5d-S{}"}},"#,
            r#""executor_id":{{"value":"shop_web.{:08x}"}},"timestamp":1764062470.{:02},"healthy":false,"message":""#
        ),
        n,
        n % 64,
        n,
        n % 100
    );
    let tail = r#""},"state":"TASK_FAILED"}}"#;
    let pad = 600usize.saturating_sub(base.len() + tail.len());
    format!("{base}{}{tail}", "x".repeat(pad))
}

fn stream() -> Vec<u8> {
    let mut out = Vec::new();
    for n in 0..RECORDS {
        let record = task_update(n);
        out.extend_from_slice(format!("{}\n", record.len()).as_bytes());
        out.extend_from_slice(record.as_bytes());
    }
    out
}

/// Decodes the whole stream in `chunk`-byte pieces; returns the record count so the work
/// cannot be optimised away.
fn decode(stream: &[u8], chunk: usize) -> usize {
    let mut decoder = RecordIoDecoder::new();
    let mut records = 0;
    for piece in stream.chunks(chunk) {
        decoder.push(piece);
        for record in decoder.records() {
            match record {
                Ok(bytes) => {
                    black_box(&bytes);
                    records += 1;
                }
                Err(e) => panic!("benchmark stream is not valid RecordIO: {e}"),
            }
        }
    }
    records
}

fn bench(c: &mut Criterion) {
    let stream = stream();
    assert_eq!(decode(&stream, 4096), RECORDS);

    let mut bytes = c.benchmark_group("recordio_bytes");
    bytes.throughput(Throughput::Bytes(stream.len() as u64));
    for chunk in [4096usize, 64] {
        bytes.bench_function(format!("chunks_of_{chunk}"), |b| {
            b.iter(|| decode(black_box(&stream), chunk))
        });
    }
    bytes.finish();

    let mut records = c.benchmark_group("recordio_records");
    records.throughput(Throughput::Elements(RECORDS as u64));
    for chunk in [4096usize, 64] {
        records.bench_function(format!("chunks_of_{chunk}"), |b| {
            b.iter(|| decode(black_box(&stream), chunk))
        });
    }
    records.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
