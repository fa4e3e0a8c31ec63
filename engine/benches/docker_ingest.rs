//! Docker events per second through the sensor into stored trigger instances: the Docker
//! sensor's pure conversion (`docker::to_sensor_event`) alone, and the conversion plus the
//! engine's durable ingest (a sled store: one `insert_trigger_instance` per event, one
//! `flush_blocking` per batch, as the engine batches durability). No daemon is involved: the
//! events are the fixture's shapes with fresh ids and times, so only squall's own cost is measured.
//!
//! Run: `cargo bench -p squall-engine --bench docker_ingest -- --warm-up-time 1 --measurement-time 3`

use criterion::{criterion_group, criterion_main, BatchSize, BenchmarkId, Criterion, Throughput};
use squall_engine::model::TriggerInstance;
use squall_engine::store::Store;
use squall_sensors::docker::{to_sensor_event, EventMessage};

/// The shapes of fixtures/docker-events.jsonl: a container's life, an exec, a network and an
/// image event. `{id}` and `{nano}` are filled in per event.
const SHAPES: [&str; 8] = [
    r#"{"Type":"container","Action":"create","Actor":{"ID":"{id}","Attributes":{"image":"registry.local/web:1.4","name":"web-{id}","com.example.app":"100008580"}},"scope":"local","time":0,"timeNano":{nano}}"#,
    r#"{"Type":"container","Action":"start","Actor":{"ID":"{id}","Attributes":{"image":"registry.local/web:1.4","name":"web-{id}","com.example.app":"100008580"}},"scope":"local","time":0,"timeNano":{nano}}"#,
    r#"{"Type":"container","Action":"health_status: unhealthy","Actor":{"ID":"{id}","Attributes":{"image":"registry.local/web:1.4","name":"web-{id}","com.example.app":"100008580"}},"scope":"local","time":0,"timeNano":{nano}}"#,
    r#"{"Type":"container","Action":"oom","Actor":{"ID":"{id}","Attributes":{"image":"registry.local/web:1.4","name":"web-{id}","com.example.app":"100008580"}},"scope":"local","time":0,"timeNano":{nano}}"#,
    r#"{"Type":"container","Action":"die","Actor":{"ID":"{id}","Attributes":{"exitCode":"137","execDuration":"70","image":"registry.local/web:1.4","name":"web-{id}","com.example.app":"100008580"}},"scope":"local","time":0,"timeNano":{nano}}"#,
    r#"{"Type":"container","Action":"exec_start: /bin/sh -c curl -f localhost/health","Actor":{"ID":"{id}","Attributes":{"execID":"e1","image":"busybox","name":"probe"}},"scope":"local","time":0,"timeNano":{nano}}"#,
    r#"{"Type":"network","Action":"connect","Actor":{"ID":"net01","Attributes":{"container":"{id}","name":"bridge","type":"bridge"}},"scope":"local","time":0,"timeNano":{nano}}"#,
    r#"{"Type":"image","Action":"pull","Actor":{"ID":"registry.local/web:1.5","Attributes":{"name":"registry.local/web"}},"scope":"local","time":0,"timeNano":{nano}}"#,
];

/// `n` events cycling through the fixture's shapes, 1 ms apart.
fn events(n: usize) -> Vec<EventMessage> {
    let start: i64 = 1_764_062_400_000_000_000;
    (0..n)
        .map(|i| {
            let nano = start + i as i64 * 1_000_000;
            let line = SHAPES[i % SHAPES.len()]
                .replace("{id}", &format!("{:012x}", i / SHAPES.len()))
                .replace("{nano}", &nano.to_string())
                .replace("\"time\":0", &format!("\"time\":{}", nano / 1_000_000_000));
            serde_json::from_str(&line).expect("a fixture-shaped EventMessage")
        })
        .collect()
}

fn conversion(c: &mut Criterion) {
    let batch = events(1000);
    let mut group = c.benchmark_group("docker_convert");
    group.throughput(Throughput::Elements(batch.len() as u64));
    group.bench_function("to_sensor_event", |b| {
        b.iter(|| {
            for msg in &batch {
                std::hint::black_box(to_sensor_event(std::hint::black_box(msg)));
            }
        })
    });
    group.finish();
}

fn ingest(c: &mut Criterion) {
    let dir = tempfile::tempdir().expect("tempdir");
    let store = Store::open(dir.path(), Some([7u8; 32])).expect("store opens");
    let mut group = c.benchmark_group("docker_ingest");
    for n in [1usize, 100, 1000] {
        let batch = events(n);
        group.throughput(Throughput::Elements(n as u64));
        group.bench_with_input(
            BenchmarkId::new("convert_store_flush", n),
            &batch,
            |b, batch| {
                b.iter_batched(
                    || batch.clone(),
                    |batch| {
                        for msg in &batch {
                            let event = to_sensor_event(msg).expect("fixture events convert");
                            let mut ti = TriggerInstance::new(
                                &event.trigger,
                                None,
                                event.payload,
                                "sensor/docker.events",
                            );
                            ti.occurrence_time = event.occurred_at;
                            store.insert_trigger_instance(&ti).expect("insert");
                        }
                        store.flush_blocking().expect("flush");
                    },
                    BatchSize::SmallInput,
                )
            },
        );
    }
    group.finish();
}

criterion_group!(benches, conversion, ingest);
criterion_main!(benches);
