//! The Docker sensor inside `squall run`, against the machine's Docker daemon: the bundled
//! `docker` pack's sensor records daemon events as trigger instances, and events that happen
//! while squall is stopped arrive after it restarts, once each. Docker networks are used as the
//! events' subject because creating one needs no image.

use std::process::Command;
use std::time::{Duration, Instant};

use serde_json::Value;

use crate::harness::Squall;

pub(crate) fn docker(args: &[&str]) -> String {
    let out = Command::new("docker")
        .args(args)
        .output()
        .expect("docker runs");
    assert!(
        out.status.success(),
        "docker {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).trim().to_string()
}

/// Removes the test's network even when an assertion fails.
struct Network(String);

impl Drop for Network {
    fn drop(&mut self) {
        let _ = Command::new("docker")
            .args(["network", "rm", &self.0])
            .output();
    }
}

fn network_events(s: &Squall, name: &str) -> Vec<String> {
    let (_, list) = s.get("/api/v1/triggerinstances?trigger=docker.event&limit=10000");
    list.as_array()
        .map(|a| {
            a.iter()
                .filter(|t| t["payload"]["attributes"]["name"] == name)
                .filter_map(|t| t["payload"]["action"].as_str().map(str::to_string))
                .collect()
        })
        .unwrap_or_default()
}

fn wait_for_actions(s: &Squall, name: &str, want: &[&str]) -> Vec<String> {
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let got = network_events(s, name);
        if want.iter().all(|w| got.iter().any(|g| g == w)) {
            return got;
        }
        assert!(
            Instant::now() < deadline,
            "network {name}: saw {got:?}, wanted {want:?}\n{}",
            s.log()
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

#[test]
fn docker_events_are_recorded_and_survive_a_restart() {
    let dir = tempfile::tempdir().expect("tempdir");
    let mut s = Squall::start(&dir.path().join("data"), &[], &[]);
    // The sensor connects on its own; wait until /api/v1/sensors says so.
    s.wait_for("/api/v1/sensors", 20, |v| {
        v.as_array().is_some_and(|a| {
            a.iter()
                .any(|x| x["ref"] == "docker.events" && x["connected"] == true)
        })
    });
    let name = format!("squall-e2e-{}", std::process::id());
    let net = Network(name.clone());
    docker(&["network", "create", &net.0]);
    wait_for_actions(&s, &name, &["create"]);

    assert_eq!(s.terminate().code(), Some(0));
    docker(&["network", "rm", &net.0]);
    s.restart();
    let got = wait_for_actions(&s, &name, &["create", "destroy"]);
    assert_eq!(
        got.iter().filter(|a| *a == "create").count(),
        1,
        "no duplicate at the seam: {got:?}"
    );
    let (_, sensors) = s.get("/api/v1/sensors");
    let docker_sensor: Vec<&Value> = sensors
        .as_array()
        .map(|a| a.iter().filter(|x| x["ref"] == "docker.events").collect())
        .unwrap_or_default();
    assert!(docker_sensor[0]["events"].as_u64().unwrap_or(0) >= 1);
    let (_, metrics) = s.get("/metrics");
    assert!(metrics
        .as_str()
        .unwrap_or_default()
        .contains("squall_sensor_events_total{sensor=\"docker.events\"}"));
}
