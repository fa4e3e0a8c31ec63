//! Capacity per app and cluster as the API and `/metrics` show it: the figures the capacity
//! collector (`squall_sensors::capacity`) last took in this process. Reading only; the
//! collector decides what to emit.

use std::fmt::Write;

use serde_json::{json, Value};
use squall_sensors::capacity::{board, Snapshot};

use crate::metrics::escape;

/// `GET /api/v1/capacity[?app=APP]`: the last collection, per app (with its containers).
pub fn capacity_json(app: Option<&str>) -> Value {
    let Snapshot {
        collected_at,
        interval_seconds,
        apps,
        error,
    } = board().snapshot();
    let apps: Vec<_> = apps
        .into_iter()
        .filter(|a| app.is_none_or(|wanted| a.app == wanted))
        .collect();
    json!({
        "collected_at": collected_at,
        "interval_seconds": interval_seconds,
        "error": error,
        "apps": apps,
    })
}

/// The per-app gauges for `/metrics` (nothing until the collector has run once).
pub fn render_metrics() -> String {
    let snapshot = board().snapshot();
    let mut out = String::new();
    if snapshot.collected_at.is_none() {
        return out;
    }
    let gauges: [(&str, &str); 4] = [
        ("squall_app_containers", "Containers of the app running."),
        (
            "squall_app_expected_containers",
            "Containers the app should have (when known).",
        ),
        (
            "squall_app_cpu_percent",
            "The app's CPU use, % of its containers' CPU limit (of the host's cores when unlimited), averaged over its containers.",
        ),
        (
            "squall_app_memory_percent",
            "The app's memory use, % of its containers' memory limit (of the host's memory when unlimited), averaged over its containers.",
        ),
    ];
    for (i, (name, help)) in gauges.iter().enumerate() {
        let _ = writeln!(out, "# HELP {name} {help}");
        let _ = writeln!(out, "# TYPE {name} gauge");
        for a in &snapshot.apps {
            let value = match i {
                0 => Some(a.online as f64),
                1 => a.expected.map(|e| e as f64),
                2 => Some(a.cpu_percent),
                _ => Some(a.memory_percent),
            };
            if let Some(v) = value {
                let _ = writeln!(
                    out,
                    "{name}{{app=\"{}\",cluster=\"{}\"}} {v}",
                    escape(&a.app),
                    escape(&a.cluster)
                );
            }
        }
    }
    out
}
