//! Grafana alerting's webhook notifications (contact point type "webhook", payload version 1)
//! turned into `grafana.alert` events, one per alert.
//!
//! Pure: a parsed JSON body in, events or an error naming the offending field's path out. It
//! must never do I/O, check Grafana's HMAC signature, deduplicate or store anything: the
//! engine's HTTP receiver (`engine/src/alerts.rs`) does that. Grafana's payload is
//! Alertmanager's with extra fields, so the shared parsing lives in [`crate::alertmanager`].
//! Legacy (pre-8) Grafana alerting, which sent `ruleName`/`evalMatches` and no `version`, is
//! refused with an error that says so.

use serde_json::{json, Map, Value};

use crate::alertmanager::{alert_schema_properties, kind, opt_string, Alert, Notification};
use crate::{SensorEvent, TriggerTypeInfo};

/// The trigger type every Grafana alert becomes.
pub const TRIGGER: &str = "grafana.alert";

const VERSION: &str = "1";

/// One event per alert of a Grafana notification. The error names the JSON path of the first
/// thing that makes the body not a version 1 notification.
pub fn to_sensor_events(payload: &Value) -> Result<Vec<SensorEvent>, String> {
    if payload.get("version").is_none() && payload.get("ruleName").is_some() {
        return Err(
            "$.version: missing: this is legacy Grafana alerting's payload (ruleName, \
             evalMatches); use Grafana's unified alerting webhook contact point"
                .to_string(),
        );
    }
    let n = Notification::parse(payload, VERSION)?;
    let org_id = match n.obj.get("orgId") {
        None | Some(Value::Null) => Value::Null,
        Some(Value::Number(id)) if id.is_i64() || id.is_u64() => Value::Number(id.clone()),
        Some(other) => {
            return Err(format!(
                "$.orgId: expected an integer, found {}",
                kind(other)
            ))
        }
    };
    let title = opt_string(n.obj, "$", "title")?;
    let state = opt_string(n.obj, "$", "state")?;
    n.alerts
        .iter()
        .enumerate()
        .map(|(i, raw)| {
            let a = Alert::parse(raw, &format!("$.alerts[{i}]"))?;
            let mut p = a.payload();
            p.insert("values".into(), values(a.obj, &a.path)?);
            for (field, key) in [
                ("dashboard_url", "dashboardURL"),
                ("panel_url", "panelURL"),
                ("silence_url", "silenceURL"),
            ] {
                p.insert(
                    field.into(),
                    Value::String(opt_string(a.obj, &a.path, key)?),
                );
            }
            n.extend(&mut p);
            p.insert("org_id".into(), org_id.clone());
            p.insert("title".into(), Value::String(title.clone()));
            p.insert("state".into(), Value::String(state.clone()));
            Ok(SensorEvent {
                trigger: TRIGGER.to_string(),
                occurred_at: a.occurred_at(),
                payload: Value::Object(p),
            })
        })
        .collect()
}

/// The query results that made the alert fire (`{"B": 0.87}`); Grafana sends null when the
/// rule had none, which reads as `{}` so rules can always index into it.
fn values(alert: &Map<String, Value>, path: &str) -> Result<Value, String> {
    match alert.get("values") {
        None | Some(Value::Null) => Ok(Value::Object(Map::new())),
        Some(Value::Object(m)) => Ok(Value::Object(m.clone())),
        Some(other) => Err(format!(
            "{path}.values: expected an object, found {}",
            kind(other)
        )),
    }
}

/// The trigger types this source emits, with their payload schema.
pub fn trigger_types() -> Vec<TriggerTypeInfo> {
    let mut props = alert_schema_properties();
    let extra = json!({
        "values": {"type": "object", "additionalProperties": {"type": "number"}, "description": "Query results by refId, e.g. {\"B\": 0.87}."},
        "dashboard_url": {"type": "string"},
        "panel_url": {"type": "string"},
        "silence_url": {"type": "string"},
        "org_id": {"type": ["integer", "null"]},
        "title": {"type": "string", "description": "The notification's title, e.g. \"[FIRING:1] MemoryHigh\"."},
        "state": {"type": "string", "description": "The notification's state: alerting or ok."},
    });
    if let Value::Object(extra) = extra {
        props.extend(extra);
    }
    vec![TriggerTypeInfo {
        reference: TRIGGER,
        description: "One alert of a Grafana alerting webhook notification \
                      (POST /api/v1/webhooks/grafana), firing or resolved.",
        payload_schema: json!({"type": "object", "properties": props}),
    }]
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The documented payload (a copy of shared/fixtures), shared with the engine's tests.
    const FIXTURE: &str = include_str!("../tests/fixtures/grafana-webhook.json");

    fn fixture() -> Value {
        serde_json::from_str(FIXTURE).unwrap()
    }

    fn error_of(mutate: impl FnOnce(&mut Value)) -> String {
        let mut v = fixture();
        mutate(&mut v);
        to_sensor_events(&v).unwrap_err()
    }

    #[test]
    fn one_event_per_alert_with_grafana_fields() {
        let events = to_sensor_events(&fixture()).unwrap();
        assert_eq!(events.len(), 1);
        let e = &events[0];
        assert_eq!(e.trigger, "grafana.alert");
        assert_eq!(e.occurred_at.to_rfc3339(), "2026-11-25T10:00:00+00:00");
        assert_eq!(
            e.payload,
            json!({
                "status": "firing",
                "alertname": "MemoryHigh",
                "labels": {"alertname": "MemoryHigh", "app": "100008580", "grafana_folder": "capacity"},
                "annotations": {"summary": "Memory above 85%"},
                "starts_at": "2026-11-25T10:00:00Z",
                "ends_at": null,
                "fingerprint": "5e2a1b0c9d8e7f6a",
                "generator_url": "http://grafana.dc1:3000/alerting/grafana/abc/view",
                "values": {"B": 0.87},
                "dashboard_url": "http://grafana.dc1:3000/d/cdos-docker-service",
                "panel_url": "http://grafana.dc1:3000/d/cdos-docker-service?viewPanel=2",
                "silence_url": "http://grafana.dc1:3000/alerting/silence/new?matcher=alertname%3DMemoryHigh",
                "receiver": "squall",
                "group_key": "{}:{alertname=\"MemoryHigh\"}",
                "external_url": "http://grafana.dc1:3000/",
                "group_labels": {"alertname": "MemoryHigh"},
                "common_labels": {"alertname": "MemoryHigh", "app": "100008580"},
                "org_id": 1,
                "title": "[FIRING:1] MemoryHigh",
                "state": "alerting",
            })
        );
    }

    #[test]
    fn resolved_alerts_and_absent_optional_fields() {
        let mut v = fixture();
        let a = v["alerts"][0].as_object_mut().unwrap();
        a.insert("status".into(), json!("resolved"));
        a.insert("endsAt".into(), json!("2026-11-25T10:05:00Z"));
        a.insert("values".into(), Value::Null);
        a.remove("dashboardURL");
        a.remove("panelURL");
        let events = to_sensor_events(&v).unwrap();
        let p = &events[0].payload;
        assert_eq!(p["status"], "resolved");
        assert_eq!(p["ends_at"], "2026-11-25T10:05:00Z");
        assert_eq!(p["values"], json!({}));
        assert_eq!(p["dashboard_url"], "");
        assert_eq!(p["panel_url"], "");
        assert_eq!(
            events[0].occurred_at.to_rfc3339(),
            "2026-11-25T10:05:00+00:00"
        );
    }

    #[test]
    fn malformed_bodies_name_the_field() {
        assert_eq!(
            error_of(|v| v["version"] = json!("4")),
            "$.version: \"4\" is not supported (expected \"1\")"
        );
        assert_eq!(
            error_of(|v| {
                v.as_object_mut().unwrap().remove("alerts");
            }),
            "$.alerts: missing"
        );
        assert_eq!(
            error_of(|v| {
                v["alerts"][0].as_object_mut().unwrap().remove("labels");
            }),
            "$.alerts[0].labels: missing"
        );
        assert_eq!(
            error_of(|v| v["alerts"][0]["values"] = json!([0.87])),
            "$.alerts[0].values: expected an object, found an array"
        );
        assert_eq!(
            error_of(|v| v["alerts"][0]["dashboardURL"] = json!(3)),
            "$.alerts[0].dashboardURL: expected a string, found a number"
        );
        assert_eq!(
            error_of(|v| v["orgId"] = json!("1")),
            "$.orgId: expected an integer, found a string"
        );
        let legacy = json!({"title": "[Alerting] CPU", "ruleName": "CPU", "state": "alerting", "evalMatches": []});
        assert!(to_sensor_events(&legacy)
            .unwrap_err()
            .contains("legacy Grafana alerting"));
        assert_eq!(
            to_sensor_events(&json!("firing")).unwrap_err(),
            "$: expected a JSON object, found a string"
        );
    }

    #[test]
    fn trigger_type_declares_every_payload_field() {
        let types = trigger_types();
        assert_eq!(types[0].reference, TRIGGER);
        let props = types[0].payload_schema["properties"].as_object().unwrap();
        let events = to_sensor_events(&fixture()).unwrap();
        let payload = events[0].payload.as_object().unwrap();
        let mut declared: Vec<&String> = props.keys().collect();
        let mut sent: Vec<&String> = payload.keys().collect();
        declared.sort();
        sent.sort();
        assert_eq!(declared, sent);
    }
}
