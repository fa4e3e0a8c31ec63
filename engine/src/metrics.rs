//! Counters for `/metrics` (Prometheus text format): trigger instances per trigger type, rule
//! matches per rule, executions per final status, running executions, and a histogram of
//! execution durations.
//!
//! Updating a counter never blocks on I/O; the lock is held only to bump a number.

use std::collections::BTreeMap;
use std::fmt::Write;
use std::sync::Mutex;

use crate::model::ExecutionStatus;

/// The process's resident memory, the data dir's size and the records waiting for the store's
/// writer, for `/metrics`: what an operator watches to size the store's cache
/// (`store_cache_mb`) and `retention_days`.
pub fn render_resources(store_bytes: u64, journal_bytes: u64, store_backlog: usize) -> String {
    let mut out = String::new();
    // VmRSS is in kB; without /proc (not Linux) the gauge is left out rather than made up.
    let rss_kb = std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|status| {
            status.lines().find_map(|line| {
                line.strip_prefix("VmRSS:")
                    .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<u64>().ok())
            })
        });
    if let Some(kb) = rss_kb {
        let _ = writeln!(
            out,
            "# HELP squall_process_resident_memory_bytes Resident memory of the squall process."
        );
        let _ = writeln!(out, "# TYPE squall_process_resident_memory_bytes gauge");
        let _ = writeln!(out, "squall_process_resident_memory_bytes {}", kb * 1024);
    }
    let _ = writeln!(
        out,
        "# HELP squall_store_disk_bytes Bytes on disk, per part of the data dir."
    );
    let _ = writeln!(out, "# TYPE squall_store_disk_bytes gauge");
    let _ = writeln!(
        out,
        "squall_store_disk_bytes{{part=\"store\"}} {store_bytes}"
    );
    let _ = writeln!(
        out,
        "squall_store_disk_bytes{{part=\"journal\"}} {journal_bytes}"
    );
    let _ = writeln!(
        out,
        "# HELP squall_store_writer_backlog_records Records (trigger instances, enforcements, executions) handed to the store's writer and not yet written."
    );
    let _ = writeln!(out, "# TYPE squall_store_writer_backlog_records gauge");
    let _ = writeln!(out, "squall_store_writer_backlog_records {store_backlog}");
    out
}

/// Upper bounds (seconds) of the duration histogram's buckets.
const BUCKETS: [f64; 12] = [
    0.001, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 5.0, 30.0, 300.0,
];

/// Distinct trigger types counted by name; the rest are counted as [`OTHER_TRIGGERS`].
const MAX_TRIGGER_SERIES: usize = 1000;
const OTHER_TRIGGERS: &str = "other";

#[derive(Default)]
struct Counters {
    trigger_instances: BTreeMap<String, u64>,
    /// Docker container events by (action, host), bounded as trigger types are.
    docker_events: BTreeMap<(String, String), u64>,
    rule_matches: BTreeMap<String, u64>,
    finished: BTreeMap<&'static str, u64>,
    running: BTreeMap<String, i64>,
    buckets: [u64; BUCKETS.len()],
    duration_sum: f64,
    duration_count: u64,
    /// Trigger instances the rules loop has decided (matched, enforced, correlated).
    rules_loop_instances: u64,
}

/// Adds `by` to `key`'s counter; the key is copied only the first time.
fn bump<T: std::ops::AddAssign>(map: &mut BTreeMap<String, T>, key: &str, by: T) {
    match map.get_mut(key) {
        Some(v) => *v += by,
        None => {
            map.insert(key.to_string(), by);
        }
    }
}

#[derive(Default)]
pub struct Metrics {
    counters: Mutex<Counters>,
}

impl Metrics {
    fn with<T>(&self, f: impl FnOnce(&mut Counters) -> T) -> T {
        match self.counters.lock() {
            Ok(mut c) => f(&mut c),
            Err(p) => f(&mut p.into_inner()),
        }
    }

    /// A Docker container event seen on `host` (a sensor host's name, or this host's).
    pub fn docker_event(&self, action: &str, host: &str) {
        self.with(|c| {
            let key = (action.to_string(), host.to_string());
            if c.docker_events.len() >= MAX_TRIGGER_SERIES && !c.docker_events.contains_key(&key) {
                *c.docker_events
                    .entry((OTHER_TRIGGERS.to_string(), host.to_string()))
                    .or_default() += 1;
                return;
            }
            *c.docker_events.entry(key).or_default() += 1;
        });
    }

    pub fn trigger_instance(&self, trigger: &str) {
        self.with(|c| {
            // Trigger names can come from clients (st2's generic webhook): past this many,
            // new ones share one series instead of growing the scrape without bound.
            let key = if c.trigger_instances.len() >= MAX_TRIGGER_SERIES
                && !c.trigger_instances.contains_key(trigger)
            {
                OTHER_TRIGGERS
            } else {
                trigger
            };
            bump(&mut c.trigger_instances, key, 1)
        });
    }

    /// The rules loop took `n` more trigger instances.
    pub fn rules_loop_done(&self, n: usize) {
        self.with(|c| c.rules_loop_instances += n as u64);
    }

    pub fn rule_matched(&self, rule: &str) {
        self.with(|c| bump(&mut c.rule_matches, rule, 1));
    }

    pub fn running_delta(&self, action: &str, delta: i64) {
        self.with(|c| bump(&mut c.running, action, delta));
    }

    /// Counts one more running execution of `action` if fewer than `threshold` run, in one
    /// step (two workers claiming at once cannot both see room for one).
    pub fn try_running(&self, action: &str, threshold: usize) -> bool {
        self.with(|c| {
            let now = c.running.get(action).copied().unwrap_or(0).max(0) as usize;
            if now >= threshold {
                return false;
            }
            bump(&mut c.running, action, 1);
            true
        })
    }

    pub fn running_of(&self, action: &str) -> usize {
        self.with(|c| c.running.get(action).copied().unwrap_or(0).max(0) as usize)
    }

    pub fn execution_finished(&self, status: ExecutionStatus, seconds: f64) {
        self.with(|c| {
            *c.finished.entry(status.as_str()).or_default() += 1;
            if status != ExecutionStatus::Abandoned {
                for (i, bound) in BUCKETS.iter().enumerate() {
                    if seconds <= *bound {
                        c.buckets[i] += 1;
                    }
                }
                c.duration_sum += seconds;
                c.duration_count += 1;
            }
        });
    }

    /// The counters as the console's overview shows them: instances per trigger type, matches
    /// per rule, finished executions per status, running per action, Docker events, and the
    /// durations' p50 and p95 (a histogram bucket's upper bound: at most that long).
    pub fn snapshot(&self) -> serde_json::Value {
        self.with(|c| {
            let quantile = |q: f64| -> Option<f64> {
                if c.duration_count == 0 {
                    return None;
                }
                let wanted = (q * c.duration_count as f64).ceil() as u64;
                BUCKETS
                    .iter()
                    .zip(c.buckets.iter())
                    .find(|(_, n)| **n >= wanted)
                    .map(|(b, _)| *b)
            };
            let docker: Vec<serde_json::Value> = c
                .docker_events
                .iter()
                .map(|((action, host), n)| serde_json::json!({"action": action, "host": host, "count": n}))
                .collect();
            serde_json::json!({
                "trigger_instances": c.trigger_instances,
                "rule_matches": c.rule_matches,
                "finished": c.finished,
                "running": c.running.iter().filter(|(_, n)| **n > 0).collect::<BTreeMap<_, _>>(),
                "running_total": c.running.values().filter(|n| **n > 0).sum::<i64>(),
                "docker_events": docker,
                "duration_p50": quantile(0.5),
                "duration_p95": quantile(0.95),
                "duration_mean": (c.duration_count > 0).then(|| c.duration_sum / c.duration_count as f64),
                "durations_counted": c.duration_count,
            })
        })
    }

    /// The Prometheus text exposition. `queue_depth` and `stored` (executions per status in the
    /// store) come from the caller.
    pub fn render(&self, queue_depth: usize, stored: &[(ExecutionStatus, u64)]) -> String {
        let mut out = String::new();
        self.with(|c| {
            let _ = writeln!(out, "# HELP squall_trigger_instances_total Trigger instances accepted, per trigger type.");
            let _ = writeln!(out, "# TYPE squall_trigger_instances_total counter");
            for (k, v) in &c.trigger_instances {
                let _ = writeln!(out, "squall_trigger_instances_total{{trigger=\"{}\"}} {v}", escape(k));
            }
            if !c.docker_events.is_empty() {
                let _ = writeln!(out, "# HELP squall_docker_events_total Docker container events seen, per action and host.");
                let _ = writeln!(out, "# TYPE squall_docker_events_total counter");
                for ((action, host), v) in &c.docker_events {
                    let _ = writeln!(out, "squall_docker_events_total{{action=\"{}\",host=\"{}\"}} {v}", escape(action), escape(host));
                }
            }
            let _ = writeln!(out, "# HELP squall_rules_loop_instances_total Trigger instances the rules loop has taken (matched and enforced) since start.");
            let _ = writeln!(out, "# TYPE squall_rules_loop_instances_total counter");
            let _ = writeln!(out, "squall_rules_loop_instances_total {}", c.rules_loop_instances);
            let _ = writeln!(out, "# HELP squall_rule_matches_total Rule matches, per rule.");
            let _ = writeln!(out, "# TYPE squall_rule_matches_total counter");
            for (k, v) in &c.rule_matches {
                let _ = writeln!(out, "squall_rule_matches_total{{rule=\"{}\"}} {v}", escape(k));
            }
            let _ = writeln!(out, "# HELP squall_executions_finished_total Executions that reached a final status since start, per status.");
            let _ = writeln!(out, "# TYPE squall_executions_finished_total counter");
            for (k, v) in &c.finished {
                let _ = writeln!(out, "squall_executions_finished_total{{status=\"{k}\"}} {v}");
            }
            let _ = writeln!(out, "# HELP squall_executions_running Executions running now.");
            let _ = writeln!(out, "# TYPE squall_executions_running gauge");
            let running: i64 = c.running.values().sum();
            let _ = writeln!(out, "squall_executions_running {running}");
            let _ = writeln!(out, "# HELP squall_execution_duration_seconds Time from request to final status (elapsed_seconds).");
            let _ = writeln!(out, "# TYPE squall_execution_duration_seconds histogram");
            for (i, bound) in BUCKETS.iter().enumerate() {
                let _ = writeln!(out, "squall_execution_duration_seconds_bucket{{le=\"{bound}\"}} {}", c.buckets[i]);
            }
            let _ = writeln!(out, "squall_execution_duration_seconds_bucket{{le=\"+Inf\"}} {}", c.duration_count);
            let _ = writeln!(out, "squall_execution_duration_seconds_sum {}", c.duration_sum);
            let _ = writeln!(out, "squall_execution_duration_seconds_count {}", c.duration_count);
        });
        let _ = writeln!(
            out,
            "# HELP squall_work_queue_depth Executions waiting for a worker."
        );
        let _ = writeln!(out, "# TYPE squall_work_queue_depth gauge");
        let _ = writeln!(out, "squall_work_queue_depth {queue_depth}");
        let _ = writeln!(
            out,
            "# HELP squall_executions Executions in the store, per status."
        );
        let _ = writeln!(out, "# TYPE squall_executions gauge");
        for (status, n) in stored {
            let _ = writeln!(
                out,
                "squall_executions{{status=\"{}\"}} {n}",
                status.as_str()
            );
        }
        out
    }
}

/// A label value as Prometheus' text format writes it.
pub(crate) fn escape(s: &str) -> String {
    s.replace('\\', "\\\\")
        .replace('"', "\\\"")
        .replace('\n', "\\n")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn trigger_series_are_bounded() {
        let m = Metrics::default();
        for i in 0..MAX_TRIGGER_SERIES + 5 {
            m.trigger_instance(&format!("made.up_{i}"));
        }
        m.trigger_instance("made.up_0");
        let text = m.render(0, &[]);
        let series = text
            .lines()
            .filter(|l| l.starts_with("squall_trigger_instances_total{"))
            .count();
        assert_eq!(
            series,
            MAX_TRIGGER_SERIES + 1,
            "the named ones and one other"
        );
        assert!(text.contains("squall_trigger_instances_total{trigger=\"other\"} 5"));
        assert!(text.contains("squall_trigger_instances_total{trigger=\"made.up_0\"} 2"));
    }
}
