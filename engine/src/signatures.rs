//! Webhook signature verification: the HMAC-SHA256 schemes of GitHub (`X-Hub-Signature-256`),
//! Standard Webhooks (`webhook-id`, `webhook-timestamp`, `webhook-signature`), Grafana alerting
//! (`X-Grafana-Alerting-Signature`, optionally with a timestamp header) and Slack
//! (`X-Slack-Signature`, `X-Slack-Request-Timestamp`), checked against the raw request body.
//!
//! It must never: compare a signature other than in constant time (every comparison goes through
//! hmac's `verify_slice`), put the expected signature or a secret in an error or a `Debug`
//! output, accept a timestamped request outside its tolerance, or look at anything but the raw
//! body bytes (a re-serialised body would not match what the sender signed).

use std::collections::HashMap;
use std::fmt;

use base64::engine::general_purpose::STANDARD as BASE64;
use base64::Engine as _;
use chrono::{DateTime, Utc};
use hmac::{Hmac, Mac};
use serde::Deserialize;
use sha2::Sha256;

type HmacSha256 = Hmac<Sha256>;

const GITHUB_HEADER: &str = "X-Hub-Signature-256";
const SW_ID_HEADER: &str = "webhook-id";
const SW_TIMESTAMP_HEADER: &str = "webhook-timestamp";
const SW_SIGNATURE_HEADER: &str = "webhook-signature";
const GRAFANA_DEFAULT_HEADER: &str = "X-Grafana-Alerting-Signature";
const SLACK_SIGNATURE_HEADER: &str = "X-Slack-Signature";
const SLACK_TIMESTAMP_HEADER: &str = "X-Slack-Request-Timestamp";

/// Standard Webhooks and Slack both ask receivers to reject requests more than 5 minutes off.
fn default_tolerance() -> u64 {
    300
}

/// How a webhook proves it comes from who holds the secret. Configured per webhook; `scheme`
/// selects the variant.
#[derive(Clone, Deserialize)]
#[serde(rename_all = "snake_case", tag = "scheme", deny_unknown_fields)]
pub enum SignatureCheck {
    /// `X-Hub-Signature-256: sha256=<hex HMAC of the body>`.
    Github { secret: String },
    /// Standard Webhooks 1.0: `webhook-signature` is a space-separated list of `v1,<base64 HMAC
    /// of id.timestamp.body>`, any of which may match; the secret is `whsec_<base64 key>`.
    StandardWebhooks {
        secret: String,
        #[serde(default = "default_tolerance")]
        tolerance_seconds: u64,
    },
    /// Grafana alerting's HMAC: lowercase hex HMAC of the body, or of `timestamp:body` when
    /// Grafana is configured with a timestamp header (Unix seconds, then checked against
    /// `tolerance_seconds`).
    Grafana {
        secret: String,
        /// Defaults to `X-Grafana-Alerting-Signature`.
        #[serde(default)]
        header: Option<String>,
        #[serde(default)]
        timestamp_header: Option<String>,
        #[serde(default = "default_tolerance")]
        tolerance_seconds: u64,
    },
    /// Slack's signing secret: `X-Slack-Signature: v0=<hex HMAC of v0:timestamp:body>`.
    Slack {
        signing_secret: String,
        #[serde(default = "default_tolerance")]
        tolerance_seconds: u64,
    },
}

/// Written by hand so that secrets never reach a log line.
impl fmt::Debug for SignatureCheck {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        const MASK: &str = "********";
        match self {
            SignatureCheck::Github { .. } => {
                f.debug_struct("Github").field("secret", &MASK).finish()
            }
            SignatureCheck::StandardWebhooks {
                tolerance_seconds, ..
            } => f
                .debug_struct("StandardWebhooks")
                .field("secret", &MASK)
                .field("tolerance_seconds", tolerance_seconds)
                .finish(),
            SignatureCheck::Grafana {
                header,
                timestamp_header,
                tolerance_seconds,
                ..
            } => f
                .debug_struct("Grafana")
                .field("secret", &MASK)
                .field("header", header)
                .field("timestamp_header", timestamp_header)
                .field("tolerance_seconds", tolerance_seconds)
                .finish(),
            SignatureCheck::Slack {
                tolerance_seconds, ..
            } => f
                .debug_struct("Slack")
                .field("signing_secret", &MASK)
                .field("tolerance_seconds", tolerance_seconds)
                .finish(),
        }
    }
}

impl SignatureCheck {
    /// Checks the settings themselves, so a check that could never pass (or would pass for
    /// anyone) is refused at start rather than found by the first delivery. The error never
    /// shows the secret.
    pub fn validate(&self) -> Result<(), String> {
        let secret = match self {
            SignatureCheck::Github { secret }
            | SignatureCheck::StandardWebhooks { secret, .. }
            | SignatureCheck::Grafana { secret, .. } => secret,
            SignatureCheck::Slack { signing_secret, .. } => signing_secret,
        };
        if secret.is_empty() {
            return Err("the secret is empty: anyone could sign with it".into());
        }
        if let SignatureCheck::StandardWebhooks { secret, .. } = self {
            let encoded = secret.strip_prefix("whsec_").unwrap_or(secret);
            match BASE64.decode(encoded) {
                Ok(key) if !key.is_empty() => {}
                _ => {
                    return Err(
                        "the secret is not \"whsec_\" followed by base64 (Standard Webhooks)"
                            .into(),
                    )
                }
            }
        }
        Ok(())
    }

    /// For a scheme whose deliveries carry an id that stays the same when the sender retries
    /// (Standard Webhooks' `webhook-id`): that id, and how long a delivery is accepted.
    pub fn delivery_id<'h>(&self, headers: &'h HashMap<String, String>) -> Option<(&'h str, u64)> {
        let tolerance = self.delivery_tolerance()?;
        headers.get(SW_ID_HEADER).map(|id| (id.as_str(), tolerance))
    }

    /// How long a delivery is accepted, for a scheme whose deliveries carry an id.
    pub fn delivery_tolerance(&self) -> Option<u64> {
        match self {
            SignatureCheck::StandardWebhooks {
                tolerance_seconds, ..
            } => Some(*tolerance_seconds),
            _ => None,
        }
    }

    /// Checks a request. `headers` maps lowercase header names to values; `body` is the raw body
    /// as received; `now` is the time timestamps are checked against. The error says what is
    /// missing or wrong, never what the signature should have been.
    pub fn verify(
        &self,
        headers: &HashMap<String, String>,
        body: &[u8],
        now: DateTime<Utc>,
    ) -> Result<(), String> {
        match self {
            SignatureCheck::Github { secret } => verify_github(secret, headers, body),
            SignatureCheck::StandardWebhooks {
                secret,
                tolerance_seconds,
            } => verify_standard_webhooks(secret, *tolerance_seconds, headers, body, now),
            SignatureCheck::Grafana {
                secret,
                header,
                timestamp_header,
                tolerance_seconds,
            } => {
                let header = header.as_deref().unwrap_or(GRAFANA_DEFAULT_HEADER);
                let timestamp = timestamp_header
                    .as_deref()
                    .map(|name| (name, *tolerance_seconds));
                verify_grafana(secret, header, timestamp, headers, body, now)
            }
            SignatureCheck::Slack {
                signing_secret,
                tolerance_seconds,
            } => verify_slack(signing_secret, *tolerance_seconds, headers, body, now),
        }
    }
}

fn verify_github(
    secret: &str,
    headers: &HashMap<String, String>,
    body: &[u8],
) -> Result<(), String> {
    let value = header(headers, GITHUB_HEADER)?;
    let hex = value
        .strip_prefix("sha256=")
        .ok_or_else(|| format!("{GITHUB_HEADER} must be \"sha256=\" followed by a hex digest"))?;
    let given = decode_hex(hex).ok_or_else(|| format!("{GITHUB_HEADER} is not a hex digest"))?;
    let mut mac = new_mac(secret.as_bytes())?;
    mac.update(body);
    mac.verify_slice(&given)
        .map_err(|_| mismatch(GITHUB_HEADER))
}

fn verify_standard_webhooks(
    secret: &str,
    tolerance: u64,
    headers: &HashMap<String, String>,
    body: &[u8],
    now: DateTime<Utc>,
) -> Result<(), String> {
    // The spec's libraries accept the key with or without its `whsec_` prefix.
    let encoded = secret.strip_prefix("whsec_").unwrap_or(secret);
    let key = BASE64.decode(encoded).map_err(|_| {
        "the configured secret is not \"whsec_\" followed by base64 (Standard Webhooks)".to_string()
    })?;
    let id = header(headers, SW_ID_HEADER)?;
    let timestamp = parse_timestamp(headers, SW_TIMESTAMP_HEADER)?;
    let signatures = header(headers, SW_SIGNATURE_HEADER)?;
    check_fresh(SW_TIMESTAMP_HEADER, timestamp, now, tolerance)?;

    let mut mac = new_mac(&key)?;
    mac.update(id.as_bytes());
    mac.update(b".");
    mac.update(timestamp.to_string().as_bytes());
    mac.update(b".");
    mac.update(body);

    // Other versions (v1a: asymmetric) are not ours to check; a v1 entry that is not base64
    // simply does not match.
    let mut saw_v1 = false;
    for entry in signatures.split_whitespace() {
        let Some(("v1", encoded)) = entry.split_once(',') else {
            continue;
        };
        saw_v1 = true;
        if let Ok(given) = BASE64.decode(encoded) {
            if mac.clone().verify_slice(&given).is_ok() {
                return Ok(());
            }
        }
    }
    if saw_v1 {
        Err(mismatch(SW_SIGNATURE_HEADER))
    } else {
        Err(format!(
            "{SW_SIGNATURE_HEADER} has no \"v1,<base64>\" signature"
        ))
    }
}

fn verify_grafana(
    secret: &str,
    signature_header: &str,
    timestamp: Option<(&str, u64)>,
    headers: &HashMap<String, String>,
    body: &[u8],
    now: DateTime<Utc>,
) -> Result<(), String> {
    let value = header(headers, signature_header)?;
    let given =
        decode_hex(value).ok_or_else(|| format!("{signature_header} is not a hex digest"))?;
    let mut mac = new_mac(secret.as_bytes())?;
    if let Some((timestamp_header, tolerance)) = timestamp {
        let raw = header(headers, timestamp_header)?;
        let seconds = parse_timestamp(headers, timestamp_header)?;
        check_fresh(timestamp_header, seconds, now, tolerance)?;
        // Grafana signs the timestamp exactly as it sent it.
        mac.update(raw.as_bytes());
        mac.update(b":");
    }
    mac.update(body);
    mac.verify_slice(&given)
        .map_err(|_| mismatch(signature_header))
}

fn verify_slack(
    signing_secret: &str,
    tolerance: u64,
    headers: &HashMap<String, String>,
    body: &[u8],
    now: DateTime<Utc>,
) -> Result<(), String> {
    let value = header(headers, SLACK_SIGNATURE_HEADER)?;
    let raw_timestamp = header(headers, SLACK_TIMESTAMP_HEADER)?;
    let timestamp = parse_timestamp(headers, SLACK_TIMESTAMP_HEADER)?;
    check_fresh(SLACK_TIMESTAMP_HEADER, timestamp, now, tolerance)?;
    let hex = value.strip_prefix("v0=").ok_or_else(|| {
        format!("{SLACK_SIGNATURE_HEADER} must be \"v0=\" followed by a hex digest")
    })?;
    let given =
        decode_hex(hex).ok_or_else(|| format!("{SLACK_SIGNATURE_HEADER} is not a hex digest"))?;
    let mut mac = new_mac(signing_secret.as_bytes())?;
    mac.update(b"v0:");
    mac.update(raw_timestamp.as_bytes());
    mac.update(b":");
    mac.update(body);
    mac.verify_slice(&given)
        .map_err(|_| mismatch(SLACK_SIGNATURE_HEADER))
}

/// A header's trimmed value; `name` is looked up lowercased and shown as written.
fn header<'h>(headers: &'h HashMap<String, String>, name: &str) -> Result<&'h str, String> {
    match headers.get(&name.to_ascii_lowercase()).map(|v| v.trim()) {
        Some(v) if !v.is_empty() => Ok(v),
        _ => Err(format!("missing header {name}")),
    }
}

fn parse_timestamp(headers: &HashMap<String, String>, name: &str) -> Result<i64, String> {
    header(headers, name)?
        .parse::<i64>()
        .map_err(|_| format!("{name} is not a Unix timestamp in seconds"))
}

/// Rejects timestamps more than `tolerance` seconds from `now` either way: old ones may be
/// replays, future ones would stay replayable for longer than the tolerance.
fn check_fresh(
    name: &str,
    timestamp: i64,
    now: DateTime<Utc>,
    tolerance: u64,
) -> Result<(), String> {
    let age = now.timestamp().saturating_sub(timestamp);
    let tolerance_i = i64::try_from(tolerance).unwrap_or(i64::MAX);
    if age > tolerance_i {
        Err(format!(
            "{name} is {age} s old, more than the {tolerance} s allowed (a replayed or delayed \
             request, or clocks out of sync)"
        ))
    } else if age.saturating_neg() > tolerance_i {
        Err(format!(
            "{name} is {} s in the future, more than the {tolerance} s allowed (clocks out of sync?)",
            age.saturating_neg()
        ))
    } else {
        Ok(())
    }
}

fn new_mac(key: &[u8]) -> Result<HmacSha256, String> {
    // HMAC takes keys of any length, so this does not fail in practice.
    HmacSha256::new_from_slice(key)
        .map_err(|_| "the configured secret cannot key HMAC-SHA256".to_string())
}

fn mismatch(header: &str) -> String {
    format!("{header} does not match the body (wrong secret, or the body was altered)")
}

fn decode_hex(text: &str) -> Option<Vec<u8>> {
    if !text.len().is_multiple_of(2) {
        return None;
    }
    text.as_bytes()
        .chunks(2)
        .map(|pair| {
            let hi = (pair[0] as char).to_digit(16)?;
            let lo = (pair[1] as char).to_digit(16)?;
            u8::try_from(hi * 16 + lo).ok()
        })
        .collect()
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    fn headers(pairs: &[(&str, &str)]) -> HashMap<String, String> {
        pairs
            .iter()
            .map(|(k, v)| (k.to_ascii_lowercase(), v.to_string()))
            .collect()
    }

    fn at(unix: i64) -> DateTime<Utc> {
        DateTime::from_timestamp(unix, 0).unwrap()
    }

    fn check(json: &str) -> SignatureCheck {
        serde_json::from_str(json).unwrap()
    }

    fn hmac_hex(key: &[u8], parts: &[&[u8]]) -> String {
        let mut mac = HmacSha256::new_from_slice(key).unwrap();
        for p in parts {
            mac.update(p);
        }
        mac.finalize()
            .into_bytes()
            .iter()
            .map(|b| format!("{b:02x}"))
            .collect()
    }

    // Published vector: GitHub's "Validating webhook deliveries".
    const GH_SECRET: &str = "It's a Secret to Everybody";
    const GH_BODY: &[u8] = b"Hello, World!";
    const GH_SIG: &str = "sha256=757107ea0eb2509fc211221cce984b8a37570b6d7586c22c46f4379c8b043e17";

    #[test]
    fn settings_that_could_never_pass_or_would_pass_for_anyone_are_refused() {
        assert_eq!(
            check(r#"{"scheme": "github", "secret": "x"}"#).validate(),
            Ok(())
        );
        let empty = check(r#"{"scheme": "github", "secret": ""}"#).validate();
        assert!(empty.unwrap_err().contains("empty"));
        let slack = check(r#"{"scheme": "slack", "signing_secret": ""}"#).validate();
        assert!(slack.unwrap_err().contains("empty"));
        let sw = |secret: &str| {
            check(&format!(
                r#"{{"scheme": "standard_webhooks", "secret": "{secret}"}}"#
            ))
            .validate()
        };
        assert_eq!(sw("whsec_C2FVsBQIhrscChlQIMV+b5sSYspob7oD"), Ok(()));
        let bad = sw("whsec_not base64!!").unwrap_err();
        assert!(
            bad.contains("base64") && !bad.contains("not base64!!"),
            "{bad}"
        );
        assert!(sw("whsec_").is_err());
    }

    #[test]
    fn github_vector_and_rejections() {
        let c = check(r#"{"scheme": "github", "secret": "It's a Secret to Everybody"}"#);
        let now = at(1_700_000_000);
        let h = headers(&[("X-Hub-Signature-256", GH_SIG)]);
        assert_eq!(c.verify(&h, GH_BODY, now), Ok(()));

        let e = c.verify(&h, b"Hello, World?", now).unwrap_err();
        assert!(e.contains("does not match"), "{e}");
        let wrong = SignatureCheck::Github {
            secret: "not it".into(),
        };
        assert!(wrong
            .verify(&h, GH_BODY, now)
            .unwrap_err()
            .contains("does not match"));
        let e = c.verify(&HashMap::new(), GH_BODY, now).unwrap_err();
        assert_eq!(e, "missing header X-Hub-Signature-256");
        let e = c
            .verify(
                &headers(&[("X-Hub-Signature-256", "sha1=abcd")]),
                GH_BODY,
                now,
            )
            .unwrap_err();
        assert!(e.contains("sha256="), "{e}");
        let e = c
            .verify(
                &headers(&[("X-Hub-Signature-256", "sha256=zz")]),
                GH_BODY,
                now,
            )
            .unwrap_err();
        assert!(e.contains("not a hex digest"), "{e}");
    }

    // Published vector: the Standard Webhooks specification's example.
    const SW_SECRET: &str = "whsec_C2FVsBQIhrscChlQIMV+b5sSYspob7oD";
    const SW_ID: &str = "msg_27UH4WbU6Z5A5EzD8u03UvzRbpk";
    const SW_TS: i64 = 1_649_367_553;
    const SW_BODY: &[u8] = br#"{"email":"test@example.com","username":"test_user"}"#;
    const SW_SIG: &str = "v1,tZ1I4/hDygAJgO5TYxiSd6Sd0kDW6hPenDe+bTa3Kkw=";

    fn sw_headers(signature: &str) -> HashMap<String, String> {
        headers(&[
            ("webhook-id", SW_ID),
            ("webhook-timestamp", &SW_TS.to_string()),
            ("webhook-signature", signature),
        ])
    }

    #[test]
    fn standard_webhooks_vector_and_rejections() {
        let c = check(&format!(
            r#"{{"scheme": "standard_webhooks", "secret": "{SW_SECRET}"}}"#
        ));
        let now = at(SW_TS + 10);
        assert_eq!(c.verify(&sw_headers(SW_SIG), SW_BODY, now), Ok(()));
        // Any v1 entry of the list may match (key rotation); others are skipped.
        let list = format!("v1,AAAA v1a,ZZZZ {SW_SIG}");
        assert_eq!(c.verify(&sw_headers(&list), SW_BODY, now), Ok(()));

        let e = c
            .verify(
                &sw_headers(SW_SIG),
                br#"{"email":"evil@example.com","username":"test_user"}"#,
                now,
            )
            .unwrap_err();
        assert!(e.contains("webhook-signature does not match"), "{e}");
        let wrong = SignatureCheck::StandardWebhooks {
            secret: "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw".into(),
            tolerance_seconds: 300,
        };
        assert!(wrong
            .verify(&sw_headers(SW_SIG), SW_BODY, now)
            .unwrap_err()
            .contains("does not match"));
        let mut h = sw_headers(SW_SIG);
        h.remove("webhook-id");
        assert_eq!(
            c.verify(&h, SW_BODY, now).unwrap_err(),
            "missing header webhook-id"
        );
        let e = c
            .verify(&sw_headers(SW_SIG), SW_BODY, at(SW_TS + 301))
            .unwrap_err();
        assert!(e.contains("webhook-timestamp is 301 s old"), "{e}");
        let e = c
            .verify(&sw_headers(SW_SIG), SW_BODY, at(SW_TS - 301))
            .unwrap_err();
        assert!(e.contains("in the future"), "{e}");
        // Within tolerance at both edges.
        assert_eq!(
            c.verify(&sw_headers(SW_SIG), SW_BODY, at(SW_TS + 300)),
            Ok(())
        );
        assert_eq!(
            c.verify(&sw_headers(SW_SIG), SW_BODY, at(SW_TS - 300)),
            Ok(())
        );
        let e = c.verify(&sw_headers("v1a,abc"), SW_BODY, now).unwrap_err();
        assert!(e.contains("no \"v1,<base64>\""), "{e}");
        let bad_secret = SignatureCheck::StandardWebhooks {
            secret: "whsec_***".into(),
            tolerance_seconds: 300,
        };
        let e = bad_secret
            .verify(&sw_headers(SW_SIG), SW_BODY, now)
            .unwrap_err();
        assert!(e.contains("configured secret"), "{e}");
    }

    #[test]
    fn grafana_body_only_and_with_timestamp() {
        let secret = "grafana-secret";
        let body = br#"{"receiver":"squall","status":"firing"}"#;
        let now = at(1_700_000_000);

        let c = check(r#"{"scheme": "grafana", "secret": "grafana-secret"}"#);
        let sig = hmac_hex(secret.as_bytes(), &[body]);
        let h = headers(&[("X-Grafana-Alerting-Signature", &sig)]);
        assert_eq!(c.verify(&h, body, now), Ok(()));
        assert!(c
            .verify(&h, b"{}", now)
            .unwrap_err()
            .contains("does not match"));
        assert_eq!(
            c.verify(&HashMap::new(), body, now).unwrap_err(),
            "missing header X-Grafana-Alerting-Signature"
        );

        let c = check(
            r#"{"scheme": "grafana", "secret": "grafana-secret", "header": "X-Signature",
                "timestamp_header": "X-Grafana-Alerting-Timestamp"}"#,
        );
        let ts = "1700000000";
        let sig = hmac_hex(secret.as_bytes(), &[ts.as_bytes(), b":", body]);
        let h = headers(&[("X-Signature", &sig), ("X-Grafana-Alerting-Timestamp", ts)]);
        assert_eq!(c.verify(&h, body, now), Ok(()));
        let wrong = SignatureCheck::Grafana {
            secret: "other".into(),
            header: Some("X-Signature".into()),
            timestamp_header: Some("X-Grafana-Alerting-Timestamp".into()),
            tolerance_seconds: 300,
        };
        assert!(wrong
            .verify(&h, body, now)
            .unwrap_err()
            .contains("does not match"));
        // The body-only signature does not pass once a timestamp is expected.
        let body_only = hmac_hex(secret.as_bytes(), &[body]);
        let h2 = headers(&[
            ("X-Signature", &body_only),
            ("X-Grafana-Alerting-Timestamp", ts),
        ]);
        assert!(c
            .verify(&h2, body, now)
            .unwrap_err()
            .contains("does not match"));
        let e = c
            .verify(&headers(&[("X-Signature", &sig)]), body, now)
            .unwrap_err();
        assert_eq!(e, "missing header X-Grafana-Alerting-Timestamp");
        let e = c.verify(&h, body, at(1_700_000_000 + 3600)).unwrap_err();
        assert!(e.contains("3600 s old"), "{e}");
    }

    // Slack's published signing example ("Verifying requests from Slack"), a slash command body.
    const SLACK_SECRET: &str = "8f742231b10e8888abcd99yyyzzz85a5";
    const SLACK_TS: &str = "1531420618";
    const SLACK_SIG: &str = "v0=a2114d57b48eac39b9ad189dd8316235a7b4a8d21a10bd27519666489c69b503";
    const SLACK_BODY: &str = "token=xyzz0WbapA4vBCDEFasx0q6G&team_id=T1DC2JH3J&team_domain=testteamnow&channel_id=G8PSS9T3V&channel_name=foobar&user_id=U2CERLKJA&user_name=roadrunner&command=%2Fwebhook-collect&text=&response_url=https%3A%2F%2Fhooks.slack.com%2Fcommands%2FT1DC2JH3J%2F397700885554%2F96rGlfmibIGlgcZRskXaIFfN&trigger_id=398738663015.47445629121.803a0bc887a14d10d2c447fce8b6703c";

    fn slack_fixture() -> (String, String, String, Vec<u8>) {
        (
            SLACK_SECRET.to_string(),
            SLACK_TS.to_string(),
            SLACK_SIG.to_string(),
            SLACK_BODY.as_bytes().to_vec(),
        )
    }

    #[test]
    fn slack_vector_and_rejections() {
        let (secret, ts, sig, body) = slack_fixture();
        assert_eq!(secret, "8f742231b10e8888abcd99yyyzzz85a5");
        let c = check(&format!(
            r#"{{"scheme": "slack", "signing_secret": "{secret}"}}"#
        ));
        let ts_n: i64 = ts.parse().unwrap();
        let now = at(ts_n + 60);
        let h = headers(&[
            ("X-Slack-Signature", &sig),
            ("X-Slack-Request-Timestamp", &ts),
        ]);
        assert_eq!(c.verify(&h, &body, now), Ok(()));

        let mut changed = body.clone();
        changed.extend_from_slice(b"&admin=true");
        assert!(c
            .verify(&h, &changed, now)
            .unwrap_err()
            .contains("does not match"));
        let wrong = SignatureCheck::Slack {
            signing_secret: "8f742231b10e8888abcd99yyyzzz85a6".into(),
            tolerance_seconds: 300,
        };
        assert!(wrong
            .verify(&h, &body, now)
            .unwrap_err()
            .contains("does not match"));
        let e = c
            .verify(&headers(&[("X-Slack-Signature", &sig)]), &body, now)
            .unwrap_err();
        assert_eq!(e, "missing header X-Slack-Request-Timestamp");
        let e = c.verify(&h, &body, at(ts_n + 301)).unwrap_err();
        assert!(e.contains("X-Slack-Request-Timestamp is 301 s old"), "{e}");
        // A larger tolerance is honoured.
        let lenient = check(&format!(
            r#"{{"scheme": "slack", "signing_secret": "{secret}", "tolerance_seconds": 600}}"#
        ));
        assert_eq!(lenient.verify(&h, &body, at(ts_n + 301)), Ok(()));
    }

    #[test]
    fn config_is_strict_and_debug_hides_secrets() {
        let e = serde_json::from_str::<SignatureCheck>(
            r#"{"scheme": "github", "secret": "s", "algo": "sha1"}"#,
        )
        .unwrap_err();
        assert!(e.to_string().contains("algo"), "{e}");
        assert!(
            serde_json::from_str::<SignatureCheck>(r#"{"scheme": "gitlab", "secret": "s"}"#)
                .is_err()
        );
        let c = check(r#"{"scheme": "slack", "signing_secret": "hunter2"}"#);
        let shown = format!("{c:?}");
        assert!(
            !shown.contains("hunter2") && shown.contains("tolerance_seconds: 300"),
            "{shown}"
        );
        let c = check(&format!(
            r#"{{"scheme": "standard_webhooks", "secret": "{SW_SECRET}"}}"#
        ));
        assert!(!format!("{c:?}").contains("whsec_"));
    }

    #[test]
    fn errors_never_reveal_the_expected_signature() {
        let c = SignatureCheck::Github {
            secret: GH_SECRET.into(),
        };
        let h = headers(&[("X-Hub-Signature-256", "sha256=00")]);
        let e = c.verify(&h, GH_BODY, at(0)).unwrap_err();
        assert!(!e.contains(&GH_SIG[7..]) && !e.contains(GH_SECRET), "{e}");
    }
}

/// Deliveries already accepted, by webhook url and delivery id, so that a sender's retry of one
/// (same `webhook-id`, as Standard Webhooks retries) gives no second trigger instance. An entry
/// is kept twice as long as its hook accepts a delivery (its timestamp is checked against the
/// tolerance); a restart fills the guard again from the instances stored since then.
#[derive(Default)]
pub struct Deliveries {
    seen: std::sync::Mutex<Seen>,
}

/// A webhook's url and a delivery's id.
type DeliveryKey = (String, String);

#[derive(Default)]
struct Seen {
    by_key: HashMap<DeliveryKey, Delivered>,
    /// The same entries by when they expire (a sequence number keeps equal times apart).
    by_expiry: std::collections::BTreeMap<(DateTime<Utc>, u64), DeliveryKey>,
    next_seq: u64,
}

struct Delivered {
    expires: (DateTime<Utc>, u64),
    instance: String,
    /// Its instance is durable (its 202 was sent); until then a retry must not be told so.
    accepted: bool,
}

/// What a delivery is, as [`Deliveries::first`] finds it.
#[derive(Debug, PartialEq, Eq)]
pub enum Delivery {
    /// Not seen before: it gives the instance named, once accepted.
    New,
    /// Accepted already, with this instance.
    Accepted(String),
    /// Being accepted right now, with this instance (its sync has not ended).
    InFlight(String),
}

fn keep_for(tolerance_seconds: u64) -> chrono::TimeDelta {
    i64::try_from(tolerance_seconds.saturating_mul(2))
        .ok()
        .and_then(chrono::TimeDelta::try_seconds)
        .unwrap_or(chrono::TimeDelta::MAX)
}

impl Seen {
    fn prune(&mut self, now: DateTime<Utc>) {
        while let Some(entry) = self.by_expiry.first_entry() {
            if entry.key().0 > now {
                break;
            }
            let (expires, key) = entry.remove_entry();
            if self.by_key.get(&key).is_some_and(|d| d.expires == expires) {
                self.by_key.remove(&key);
            }
        }
    }

    fn insert(&mut self, key: DeliveryKey, until: DateTime<Utc>, instance: &str, accepted: bool) {
        let expires = (until, self.next_seq);
        self.next_seq += 1;
        self.by_expiry.insert(expires, key.clone());
        self.by_key.insert(
            key,
            Delivered {
                expires,
                instance: instance.to_string(),
                accepted,
            },
        );
    }
}

impl Deliveries {
    fn seen(&self) -> std::sync::MutexGuard<'_, Seen> {
        match self.seen.lock() {
            Ok(g) => g,
            Err(p) => p.into_inner(),
        }
    }

    /// What this delivery is; a new one is recorded as giving `instance` (call
    /// [`Deliveries::accepted`] once that instance is durable, [`Deliveries::forget`] if it is
    /// refused).
    pub fn first(
        &self,
        url: &str,
        delivery: &str,
        tolerance_seconds: u64,
        instance: &str,
        now: DateTime<Utc>,
    ) -> Delivery {
        let mut seen = self.seen();
        seen.prune(now);
        let key = (url.to_string(), delivery.to_string());
        if let Some(d) = seen.by_key.get(&key) {
            return if d.accepted {
                Delivery::Accepted(d.instance.clone())
            } else {
                Delivery::InFlight(d.instance.clone())
            };
        }
        let until = now
            .checked_add_signed(keep_for(tolerance_seconds))
            .unwrap_or(DateTime::<Utc>::MAX_UTC);
        seen.insert(key, until, instance, false);
        Delivery::New
    }

    /// The delivery's instance is durable: a retry now gets it.
    pub fn accepted(&self, url: &str, delivery: &str) {
        if let Some(d) = self
            .seen()
            .by_key
            .get_mut(&(url.to_string(), delivery.to_string()))
        {
            d.accepted = true;
        }
    }

    /// Records a delivery accepted at `at` (refilling the guard at start).
    pub fn remember(
        &self,
        url: &str,
        delivery: &str,
        instance: &str,
        at: DateTime<Utc>,
        tolerance_seconds: u64,
    ) {
        let mut seen = self.seen();
        let key = (url.to_string(), delivery.to_string());
        if seen.by_key.contains_key(&key) {
            return;
        }
        let until = at
            .checked_add_signed(keep_for(tolerance_seconds))
            .unwrap_or(DateTime::<Utc>::MAX_UTC);
        seen.insert(key, until, instance, true);
    }

    /// Forgets a delivery whose instance was refused, so the sender's retry is taken.
    pub fn forget(&self, url: &str, delivery: &str) {
        let mut seen = self.seen();
        if let Some(d) = seen.by_key.remove(&(url.to_string(), delivery.to_string())) {
            seen.by_expiry.remove(&d.expires);
        }
    }
}

#[cfg(test)]
mod delivery_tests {
    use super::*;

    #[test]
    fn each_hook_keeps_its_deliveries_for_its_own_tolerance() {
        let d = Deliveries::default();
        let t0 = Utc::now();
        assert_eq!(d.first("short", "m1", 60, "ti-a", t0), Delivery::New);
        assert_eq!(d.first("long", "m1", 3600, "ti-b", t0), Delivery::New);
        assert_eq!(
            d.first("long", "m1", 3600, "ti-x", t0),
            Delivery::InFlight("ti-b".into()),
            "not accepted yet"
        );
        d.accepted("long", "m1");
        d.accepted("short", "m1");
        // Ten minutes on: the short hook's entry is gone, the long one's stays.
        let later = t0 + chrono::TimeDelta::minutes(10);
        assert_eq!(d.first("short", "m2", 60, "ti-c", later), Delivery::New);
        assert_eq!(
            d.first("long", "m1", 3600, "ti-y", later),
            Delivery::Accepted("ti-b".into())
        );
        assert_eq!(d.first("short", "m1", 60, "ti-d", later), Delivery::New);
        d.forget("short", "m1");
        assert_eq!(d.first("short", "m1", 60, "ti-e", later), Delivery::New);
    }
}
