//! Prometheus Alertmanager's webhook notifications (`webhook_configs`, payload version 4)
//! turned into `alertmanager.alert` events, one per alert.
//!
//! Pure: a parsed JSON body in, events or an error naming the offending field's path out. It
//! must never do I/O, authenticate, deduplicate or store anything: the engine's HTTP receiver
//! (`engine/src/alerts.rs`) does that. The parsing helpers here are shared with
//! [`crate::grafana`], because Grafana's alerting webhook is Alertmanager's template data with
//! a few fields added (Grafana's alerting is built on Alertmanager's code).

use chrono::{DateTime, Datelike, SecondsFormat, Utc};
use serde_json::{json, Map, Value};

use crate::{SensorEvent, TriggerTypeInfo};

/// The trigger type every Alertmanager alert becomes.
pub const TRIGGER: &str = "alertmanager.alert";

/// The only payload version Alertmanager has sent since 0.6 (it has never changed it).
const VERSION: &str = "4";

/// One event per alert of an Alertmanager notification. The error names the JSON path of the
/// first thing that makes the body not a version 4 notification.
pub fn to_sensor_events(payload: &Value) -> Result<Vec<SensorEvent>, String> {
    let n = Notification::parse(payload, VERSION)?;
    n.alerts
        .iter()
        .enumerate()
        .map(|(i, raw)| {
            let a = Alert::parse(raw, &format!("$.alerts[{i}]"))?;
            let mut p = a.payload();
            n.extend(&mut p);
            Ok(SensorEvent {
                trigger: TRIGGER.to_string(),
                occurred_at: a.occurred_at(),
                payload: Value::Object(p),
            })
        })
        .collect()
}

/// The trigger types this source emits, with their payload schema.
pub fn trigger_types() -> Vec<TriggerTypeInfo> {
    vec![TriggerTypeInfo {
        reference: TRIGGER,
        description: "One alert of a Prometheus Alertmanager webhook notification \
                      (POST /api/v1/webhooks/alertmanager), firing or resolved.",
        payload_schema: json!({
            "type": "object",
            "properties": alert_schema_properties(),
        }),
    }]
}

/// The payload properties Alertmanager and Grafana alerts share.
pub(crate) fn alert_schema_properties() -> Map<String, Value> {
    let string_map = json!({"type": "object", "additionalProperties": {"type": "string"}});
    let props = json!({
        "status": {"type": "string", "enum": ["firing", "resolved"], "description": "The alert's own status (a notification may mix both)."},
        "alertname": {"type": ["string", "null"], "description": "The alertname label; null when the alert has none."},
        "labels": string_map,
        "annotations": string_map,
        "starts_at": {"type": "string", "format": "date-time"},
        "ends_at": {"type": ["string", "null"], "format": "date-time", "description": "When it stopped firing; null while it fires."},
        "fingerprint": {"type": "string", "description": "Identifies the alert (a hash of its labels)."},
        "generator_url": {"type": "string"},
        "receiver": {"type": "string"},
        "group_key": {"type": "string"},
        "external_url": {"type": "string"},
        "group_labels": string_map,
        "common_labels": string_map,
    });
    match props {
        Value::Object(m) => m,
        _ => Map::new(),
    }
}

/// The notification-level fields every alert's event carries.
pub(crate) struct Notification<'a> {
    pub obj: &'a Map<String, Value>,
    pub alerts: &'a [Value],
    receiver: String,
    group_key: String,
    external_url: String,
    group_labels: Map<String, Value>,
    common_labels: Map<String, Value>,
}

impl<'a> Notification<'a> {
    /// Checks the envelope: an object of the expected `version` with an `alerts` array.
    pub(crate) fn parse(body: &'a Value, version: &str) -> Result<Notification<'a>, String> {
        let obj = body
            .as_object()
            .ok_or_else(|| format!("$: expected a JSON object, found {}", kind(body)))?;
        match obj.get("version") {
            Some(Value::String(v)) if v == version => {}
            Some(Value::String(v)) => {
                return Err(format!(
                    "$.version: \"{v}\" is not supported (expected \"{version}\")"
                ))
            }
            Some(other) => {
                return Err(format!(
                    "$.version: expected the string \"{version}\", found {}",
                    kind(other)
                ))
            }
            None => return Err(format!("$.version: missing (expected \"{version}\")")),
        }
        let alerts = match obj.get("alerts") {
            Some(Value::Array(a)) => a.as_slice(),
            Some(other) => {
                return Err(format!(
                    "$.alerts: expected an array, found {}",
                    kind(other)
                ))
            }
            None => return Err("$.alerts: missing".to_string()),
        };
        Ok(Notification {
            obj,
            alerts,
            receiver: opt_string(obj, "$", "receiver")?,
            group_key: opt_string(obj, "$", "groupKey")?,
            external_url: opt_string(obj, "$", "externalURL")?,
            group_labels: string_map(obj, "$", "groupLabels", false)?,
            common_labels: string_map(obj, "$", "commonLabels", false)?,
        })
    }

    /// Adds the notification's fields to an alert's payload.
    pub(crate) fn extend(&self, p: &mut Map<String, Value>) {
        p.insert("receiver".into(), Value::String(self.receiver.clone()));
        p.insert("group_key".into(), Value::String(self.group_key.clone()));
        p.insert(
            "external_url".into(),
            Value::String(self.external_url.clone()),
        );
        p.insert(
            "group_labels".into(),
            Value::Object(self.group_labels.clone()),
        );
        p.insert(
            "common_labels".into(),
            Value::Object(self.common_labels.clone()),
        );
    }
}

/// The fields of one alert that Alertmanager and Grafana share.
pub(crate) struct Alert<'a> {
    pub obj: &'a Map<String, Value>,
    pub path: String,
    status: String,
    labels: Map<String, Value>,
    annotations: Map<String, Value>,
    starts_at: DateTime<Utc>,
    ends_at: Option<DateTime<Utc>>,
    fingerprint: String,
    generator_url: String,
}

impl<'a> Alert<'a> {
    pub(crate) fn parse(raw: &'a Value, path: &str) -> Result<Alert<'a>, String> {
        let obj = raw
            .as_object()
            .ok_or_else(|| format!("{path}: expected an alert object, found {}", kind(raw)))?;
        let status = match obj.get("status") {
            Some(Value::String(s)) if s == "firing" || s == "resolved" => s.clone(),
            Some(other) => {
                return Err(format!(
                    "{path}.status: expected \"firing\" or \"resolved\", found {other}"
                ))
            }
            None => return Err(format!("{path}.status: missing")),
        };
        let labels = string_map(obj, path, "labels", true)?;
        if labels.is_empty() {
            return Err(format!(
                "{path}.labels: empty (an alert is identified by its labels)"
            ));
        }
        let starts_at =
            time(obj, path, "startsAt")?.ok_or_else(|| format!("{path}.startsAt: missing"))?;
        // Alertmanager hides the end of a firing alert as Go's zero time (year 1).
        let ends_at = time(obj, path, "endsAt")?.filter(|t| t.year() > 1);
        let fingerprint = match obj.get("fingerprint") {
            Some(Value::String(f)) if !f.is_empty() => f.clone(),
            // Alertmanager before 0.20 did not send it; it is the hash of the labels, so
            // computing it keeps deduplication and rules working the same.
            None | Some(Value::Null) => labels_fingerprint(&labels),
            Some(Value::String(_)) => labels_fingerprint(&labels),
            Some(other) => {
                return Err(format!(
                    "{path}.fingerprint: expected a string, found {}",
                    kind(other)
                ))
            }
        };
        Ok(Alert {
            obj,
            path: path.to_string(),
            status,
            annotations: string_map(obj, path, "annotations", false)?,
            generator_url: opt_string(obj, path, "generatorURL")?,
            labels,
            starts_at,
            ends_at,
            fingerprint,
        })
    }

    /// When the alert's news happened: when it started firing, or when it stopped.
    pub(crate) fn occurred_at(&self) -> DateTime<Utc> {
        match (self.status.as_str(), self.ends_at) {
            ("resolved", Some(end)) => end,
            _ => self.starts_at,
        }
    }

    /// The alert's own fields, in the payload's names.
    pub(crate) fn payload(&self) -> Map<String, Value> {
        let alertname = self.labels.get("alertname").cloned().unwrap_or(Value::Null);
        let mut p = Map::new();
        p.insert("status".into(), Value::String(self.status.clone()));
        p.insert("alertname".into(), alertname);
        p.insert("labels".into(), Value::Object(self.labels.clone()));
        p.insert(
            "annotations".into(),
            Value::Object(self.annotations.clone()),
        );
        p.insert("starts_at".into(), Value::String(rfc3339(self.starts_at)));
        p.insert(
            "ends_at".into(),
            self.ends_at
                .map(|t| Value::String(rfc3339(t)))
                .unwrap_or(Value::Null),
        );
        p.insert(
            "fingerprint".into(),
            Value::String(self.fingerprint.clone()),
        );
        p.insert(
            "generator_url".into(),
            Value::String(self.generator_url.clone()),
        );
        p
    }
}

/// Times in UTC with `Z`, keeping the sender's sub-second precision, so that rules compare
/// one format whatever offset the sender used.
fn rfc3339(t: DateTime<Utc>) -> String {
    t.to_rfc3339_opts(SecondsFormat::AutoSi, true)
}

/// Prometheus' label-set fingerprint (`model.LabelSet.Fingerprint`): FNV-1a 64 over the
/// labels sorted by name, each name and value followed by the byte 255, as 16 hex digits.
pub(crate) fn labels_fingerprint(labels: &Map<String, Value>) -> String {
    const OFFSET: u64 = 14_695_981_039_346_656_037;
    const PRIME: u64 = 1_099_511_628_211;
    const SEPARATOR: u8 = 255;
    let mut names: Vec<&String> = labels.keys().collect();
    names.sort();
    let mut h = OFFSET;
    let mut add = |bytes: &[u8]| {
        for b in bytes {
            h ^= u64::from(*b);
            h = h.wrapping_mul(PRIME);
        }
    };
    for name in names {
        add(name.as_bytes());
        add(&[SEPARATOR]);
        add(labels
            .get(name)
            .and_then(Value::as_str)
            .unwrap_or("")
            .as_bytes());
        add(&[SEPARATOR]);
    }
    format!("{h:016x}")
}

/// A JSON type's name for error messages.
pub(crate) fn kind(v: &Value) -> &'static str {
    match v {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "an array",
        Value::Object(_) => "an object",
    }
}

/// A string field; absent or null reads as "" (senders leave optional URLs out).
pub(crate) fn opt_string(
    obj: &Map<String, Value>,
    path: &str,
    key: &str,
) -> Result<String, String> {
    match obj.get(key) {
        None | Some(Value::Null) => Ok(String::new()),
        Some(Value::String(s)) => Ok(s.clone()),
        Some(other) => Err(format!(
            "{path}.{key}: expected a string, found {}",
            kind(other)
        )),
    }
}

/// A `{name: "value"}` map such as labels. When not `required`, absent or null reads as `{}`.
pub(crate) fn string_map(
    obj: &Map<String, Value>,
    path: &str,
    key: &str,
    required: bool,
) -> Result<Map<String, Value>, String> {
    let map = match obj.get(key) {
        Some(Value::Object(m)) => m,
        None | Some(Value::Null) if !required => return Ok(Map::new()),
        None | Some(Value::Null) => return Err(format!("{path}.{key}: missing")),
        Some(other) => {
            return Err(format!(
                "{path}.{key}: expected an object, found {}",
                kind(other)
            ))
        }
    };
    for (name, value) in map {
        if !value.is_string() {
            return Err(format!(
                "{path}.{key}[\"{name}\"]: expected a string, found {}",
                kind(value)
            ));
        }
    }
    Ok(map.clone())
}

/// An RFC 3339 time field; absent or null is `None`.
fn time(obj: &Map<String, Value>, path: &str, key: &str) -> Result<Option<DateTime<Utc>>, String> {
    match obj.get(key) {
        None | Some(Value::Null) => Ok(None),
        Some(Value::String(s)) => DateTime::parse_from_rfc3339(s)
            .map(|t| Some(t.with_timezone(&Utc)))
            .map_err(|e| format!("{path}.{key}: \"{s}\" is not an RFC 3339 time ({e})")),
        Some(other) => Err(format!(
            "{path}.{key}: expected an RFC 3339 time string, found {}",
            kind(other)
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The documented payload (a copy of shared/fixtures), shared with the engine's tests.
    const FIXTURE: &str = include_str!("../tests/fixtures/alertmanager-webhook.json");

    fn fixture() -> Value {
        serde_json::from_str(FIXTURE).unwrap()
    }

    fn error_of(mutate: impl FnOnce(&mut Value)) -> String {
        let mut v = fixture();
        mutate(&mut v);
        to_sensor_events(&v).unwrap_err()
    }

    #[test]
    fn one_event_per_alert_with_its_own_status() {
        let events = to_sensor_events(&fixture()).unwrap();
        assert_eq!(events.len(), 2);
        let firing = &events[0];
        assert_eq!(firing.trigger, "alertmanager.alert");
        assert_eq!(
            firing.payload,
            json!({
                "status": "firing",
                "alertname": "ContainerCPUHigh",
                "labels": {"alertname": "ContainerCPUHigh", "severity": "page", "cluster": "dc1", "app": "100008580"},
                "annotations": {"summary": "CPU above 80% for 5 minutes", "value": "0.91"},
                "starts_at": "2026-11-25T10:00:00Z",
                "ends_at": null,
                "fingerprint": "c6eadffa33fcdf37",
                "generator_url": "http://prometheus.dc1:9090/graph?g0.expr=avg_cpu%3E0.8",
                "receiver": "squall",
                "group_key": "{}:{alertname=\"ContainerCPUHigh\"}",
                "external_url": "http://alertmanager.dc1:9093",
                "group_labels": {"alertname": "ContainerCPUHigh"},
                "common_labels": {"alertname": "ContainerCPUHigh", "severity": "page", "cluster": "dc1"},
            })
        );
        assert_eq!(firing.occurred_at.to_rfc3339(), "2026-11-25T10:00:00+00:00");

        // The second alert is resolved although the notification as a whole is firing.
        let resolved = &events[1];
        assert_eq!(resolved.payload["status"], "resolved");
        assert_eq!(resolved.payload["labels"]["app"], "100008990");
        assert_eq!(resolved.payload["ends_at"], "2026-11-25T09:58:00Z");
        assert_eq!(resolved.payload["fingerprint"], "0b1d7a2e3f4c5d6e");
        assert_eq!(
            resolved.occurred_at.to_rfc3339(),
            "2026-11-25T09:58:00+00:00"
        );
    }

    #[test]
    fn times_are_normalised_to_utc_keeping_precision() {
        let mut v = fixture();
        v["alerts"][0]["startsAt"] = json!("2026-11-25T11:00:00.123456789+01:00");
        let events = to_sensor_events(&v).unwrap();
        assert_eq!(
            events[0].payload["starts_at"],
            "2026-11-25T10:00:00.123456789Z"
        );
    }

    #[test]
    fn an_empty_notification_has_no_events() {
        let mut v = fixture();
        v["alerts"] = json!([]);
        assert_eq!(to_sensor_events(&v).unwrap(), Vec::new());
    }

    #[test]
    fn a_missing_fingerprint_is_computed_as_prometheus_does() {
        let mut v = fixture();
        v["alerts"][0]
            .as_object_mut()
            .unwrap()
            .remove("fingerprint");
        let events = to_sensor_events(&v).unwrap();
        let labels = v["alerts"][0]["labels"].as_object().unwrap();
        assert_eq!(events[0].payload["fingerprint"], labels_fingerprint(labels));
    }

    #[test]
    fn fingerprint_matches_alertmanager() {
        // The empty label set hashes to FNV-1a's offset basis (prometheus/common's
        // emptyLabelSignature); the others are what a real Alertmanager 0.25 sent for these
        // labels (tests/alertmanager.rs checks the running binary agrees).
        let cases = [
            (json!({}), "cbf29ce484222325"),
            (json!({"foo": "bar"}), "3fff2c2d7595e046"),
            (json!({"foo": "bar", "baz": "qux"}), "e4d83091cd448e77"),
            (
                json!({"severity": "page", "alertname": "SquallE2E", "app": "web"}),
                "6c841511aa472f5d",
            ),
        ];
        for (labels, expected) in cases {
            assert_eq!(
                labels_fingerprint(labels.as_object().unwrap()),
                expected,
                "{labels}"
            );
        }
    }

    #[test]
    fn malformed_bodies_name_the_field() {
        assert_eq!(
            to_sensor_events(&json!([1])).unwrap_err(),
            "$: expected a JSON object, found an array"
        );
        assert_eq!(
            error_of(|v| {
                v.as_object_mut().unwrap().remove("alerts");
            }),
            "$.alerts: missing"
        );
        assert_eq!(
            error_of(|v| v["alerts"] = json!({})),
            "$.alerts: expected an array, found an object"
        );
        assert_eq!(
            error_of(|v| v["version"] = json!("3")),
            "$.version: \"3\" is not supported (expected \"4\")"
        );
        assert_eq!(
            error_of(|v| v["version"] = json!(4)),
            "$.version: expected the string \"4\", found a number"
        );
        assert_eq!(
            error_of(|v| {
                v.as_object_mut().unwrap().remove("version");
            }),
            "$.version: missing (expected \"4\")"
        );
        assert_eq!(
            error_of(|v| {
                v["alerts"][1].as_object_mut().unwrap().remove("labels");
            }),
            "$.alerts[1].labels: missing"
        );
        assert_eq!(
            error_of(|v| v["alerts"][1]["labels"] = json!({})),
            "$.alerts[1].labels: empty (an alert is identified by its labels)"
        );
        assert_eq!(
            error_of(|v| v["alerts"][0]["labels"]["app"] = json!(7)),
            "$.alerts[0].labels[\"app\"]: expected a string, found a number"
        );
        assert_eq!(
            error_of(|v| v["alerts"][0]["status"] = json!("pending")),
            "$.alerts[0].status: expected \"firing\" or \"resolved\", found \"pending\""
        );
        assert_eq!(
            error_of(|v| {
                v["alerts"][0].as_object_mut().unwrap().remove("startsAt");
            }),
            "$.alerts[0].startsAt: missing"
        );
        assert!(
            error_of(|v| v["alerts"][0]["startsAt"] = json!("yesterday"))
                .starts_with("$.alerts[0].startsAt: \"yesterday\" is not an RFC 3339 time")
        );
        assert_eq!(
            error_of(|v| v["alerts"][0] = json!("firing")),
            "$.alerts[0]: expected an alert object, found a string"
        );
        assert_eq!(
            error_of(|v| v["receiver"] = json!(["squall"])),
            "$.receiver: expected a string, found an array"
        );
        assert_eq!(
            error_of(|v| v["commonLabels"] = json!("x")),
            "$.commonLabels: expected an object, found a string"
        );
    }

    #[test]
    fn trigger_type_declares_every_payload_field() {
        let types = trigger_types();
        assert_eq!(types.len(), 1);
        assert_eq!(types[0].reference, TRIGGER);
        let props = types[0].payload_schema["properties"].as_object().unwrap();
        let events = to_sensor_events(&fixture()).unwrap();
        let fields: Vec<&String> = events[0].payload.as_object().unwrap().keys().collect();
        assert_eq!(props.keys().collect::<Vec<_>>(), fields);
    }
}
