//! Slack: request signing (v0), slash commands, the Events API, Slack's message markup, and the
//! bodies squall posts back, all as Slack documents them. Must never accept a request whose
//! signature it has not checked in constant time, and must never hand squall's own or another
//! bot's messages to the engine as commands (a bot answering bots loops forever).

use hmac::Mac;
use serde_json::{json, Map, Value};

use crate::fields::{json_kind, Fields};
use crate::secret::hmac_sha256;
use crate::text::plain_quotes;
use crate::ChatError;

/// The header carrying the Unix time the request was signed at.
pub const TIMESTAMP_HEADER: &str = "X-Slack-Request-Timestamp";
/// The header carrying `v0=<hex HMAC>`.
pub const SIGNATURE_HEADER: &str = "X-Slack-Signature";
/// How far, in seconds and in either direction, a request's timestamp may be from now. Slack
/// recommends five minutes: long enough for clock drift and retries, short enough that a
/// captured request cannot be replayed later.
pub const MAX_CLOCK_SKEW_SECONDS: i64 = 300;

/// Slack request signing v0: signature = "v0=" + hex(HMAC-SHA256(secret, "v0:" + timestamp +
/// ":" + raw_body)).
///
/// Refuses timestamps more than 300 s away from `now_unix` (either direction) and compares in
/// constant time. `timestamp` and `signature` are the values of [`TIMESTAMP_HEADER`] and
/// [`SIGNATURE_HEADER`], `None` when absent; `body` must be the raw bytes as received, before
/// any decoding. An empty `signing_secret` refuses every request: anyone can sign with it.
pub fn verify(
    signing_secret: &str,
    timestamp: Option<&str>,
    signature: Option<&str>,
    body: &[u8],
    now_unix: i64,
) -> Result<(), ChatError> {
    let timestamp = timestamp.ok_or(ChatError::MissingHeader(TIMESTAMP_HEADER))?;
    let signature = signature.ok_or(ChatError::MissingHeader(SIGNATURE_HEADER))?;
    let signed_at = parse_timestamp(timestamp)?;
    // Saturating: the timestamp is attacker-chosen and may be near i64's ends.
    let age_seconds = now_unix.saturating_sub(signed_at);
    if age_seconds.unsigned_abs() > MAX_CLOCK_SKEW_SECONDS.unsigned_abs() {
        return Err(ChatError::StaleTimestamp { age_seconds });
    }
    if signing_secret.is_empty() {
        return Err(ChatError::BadSignature);
    }
    let sent = signature
        .strip_prefix("v0=")
        .and_then(decode_hex)
        .ok_or(ChatError::BadSignature)?;
    signature_mac(signing_secret, timestamp, body)
        .verify_slice(&sent)
        .map_err(|_| ChatError::BadSignature)
}

/// Signs (used by tests and simulators): returns `"v0=<hex>"`.
pub fn sign(signing_secret: &str, timestamp: &str, body: &[u8]) -> String {
    let digest = signature_mac(signing_secret, timestamp, body)
        .finalize()
        .into_bytes();
    format!("v0={}", encode_hex(&digest))
}

/// The MAC over Slack's base string `v0:{timestamp}:{body}`.
fn signature_mac(signing_secret: &str, timestamp: &str, body: &[u8]) -> crate::secret::HmacSha256 {
    let mut mac = hmac_sha256(signing_secret.as_bytes());
    mac.update(b"v0:");
    mac.update(timestamp.as_bytes());
    mac.update(b":");
    mac.update(body);
    mac
}

/// Slack sends whole seconds as plain digits; signs, spaces and fractions are refused rather
/// than read leniently, since the same text is part of what was signed.
fn parse_timestamp(timestamp: &str) -> Result<i64, ChatError> {
    if timestamp.is_empty() || !timestamp.bytes().all(|b| b.is_ascii_digit()) {
        return Err(ChatError::BadTimestamp(timestamp.to_owned()));
    }
    timestamp
        .parse()
        .map_err(|_| ChatError::BadTimestamp(timestamp.to_owned()))
}

fn encode_hex(bytes: &[u8]) -> String {
    const DIGITS: &[u8; 16] = b"0123456789abcdef";
    let mut text = String::with_capacity(bytes.len() * 2);
    for byte in bytes {
        text.push(char::from(DIGITS[usize::from(byte >> 4)]));
        text.push(char::from(DIGITS[usize::from(byte & 0x0f)]));
    }
    text
}

/// `None` for an odd length or a non-hex digit; either way the signature cannot match.
fn decode_hex(text: &str) -> Option<Vec<u8>> {
    fn nibble(digit: u8) -> Option<u8> {
        match digit {
            b'0'..=b'9' => Some(digit - b'0'),
            b'a'..=b'f' => Some(digit - b'a' + 10),
            b'A'..=b'F' => Some(digit - b'A' + 10),
            _ => None,
        }
    }
    let pairs = text.as_bytes().chunks_exact(2);
    if !pairs.remainder().is_empty() {
        return None;
    }
    pairs
        .map(|pair| Some(nibble(pair[0])? << 4 | nibble(pair[1])?))
        .collect()
}

/// A slash command (application/x-www-form-urlencoded body).
///
/// Fields Slack always sends but squall does not need to act are empty strings when absent.
#[derive(Debug, Clone, PartialEq)]
pub struct SlashCommand {
    pub team_id: String,
    pub team_domain: String,
    pub channel_id: String,
    pub channel_name: String,
    pub user_id: String,
    pub user_name: String,
    /// The command word as typed, with its slash: `/cdos`.
    pub command: String,
    /// What followed the command word, passed through [`unformat`]: Slack escapes `&`, `<`,
    /// `>` in it (and turns links and channels into markup when the command escapes them) as
    /// in any message text.
    pub text: String,
    /// Where to post later answers; `None` when absent or empty.
    pub response_url: Option<String>,
    pub trigger_id: Option<String>,
}

/// Reads a slash command. `user_id` and `command` are required; when either is absent or
/// empty, the error names each one that is.
pub fn parse_slash_command(body: &[u8]) -> Result<SlashCommand, ChatError> {
    let fields = Fields::from_form(body);
    fields.require("Slack slash command", &["user_id", "command"])?;
    Ok(SlashCommand {
        team_id: fields.or_empty("team_id"),
        team_domain: fields.or_empty("team_domain"),
        channel_id: fields.or_empty("channel_id"),
        channel_name: fields.or_empty("channel_name"),
        user_id: fields.or_empty("user_id"),
        user_name: fields.or_empty("user_name"),
        command: fields.or_empty("command"),
        text: unformat(&fields.or_empty("text")),
        response_url: fields.optional("response_url"),
        trigger_id: fields.optional("trigger_id"),
    })
}

/// Events API body (JSON).
#[derive(Debug, Clone, PartialEq)]
pub enum Event {
    /// `url_verification`: answer with the challenge.
    UrlVerification { challenge: String },
    /// A message addressed to the bot: an `app_mention`, or a `message` whose text starts with
    /// the prefix.
    Command(EventCommand),
    /// Anything else (bot messages, edits, other event types, messages without the prefix):
    /// acknowledged and ignored; the string says why (for logs).
    Ignored(String),
}

/// A command someone addressed to the bot in a channel.
#[derive(Debug, Clone, PartialEq)]
pub struct EventCommand {
    /// Slack's id of this delivery's event; the same on retries, so it serves to drop them.
    pub event_id: Option<String>,
    pub team_id: Option<String>,
    pub channel: String,
    pub user: String,
    /// The command text with the mention or prefix removed and Slack's formatting undone.
    pub text: String,
    pub ts: Option<String>,
    /// The thread the message is in, if any: answers belong there.
    pub thread_ts: Option<String>,
}

/// Reads an Events API body.
///
/// `prefix` e.g. "!" (None: only app_mention; an empty prefix counts as none, since it would
/// make every message in every channel a command). Messages with a `bot_id` or a `subtype`
/// (bot_message, message_changed, ...) are Ignored so the bot never answers itself. For
/// app_mention, the leading `<@UXXXX>` mention is stripped with an optional `:` or `,` after it
/// and the whitespace that follows (`@squall: cdos 1` is common); an app_mention that does not
/// start with the mention ("thanks @squall") is Ignored rather than answered with an error. A
/// plain `message` whose text starts with `<@` is Ignored: if it mentions the bot, the
/// app_mention for it is the one answered. A command that is empty once the mention or prefix
/// is removed is Ignored too.
pub fn parse_event(body: &[u8], prefix: Option<&str>) -> Result<Event, ChatError> {
    let value: Value = serde_json::from_slice(body)
        .map_err(|err| ChatError::BadBody(format!("Slack event body is not JSON: {err}")))?;
    let Value::Object(envelope) = value else {
        return Err(ChatError::BadBody(format!(
            "Slack event body is not a JSON object but {}",
            json_kind(&value)
        )));
    };
    match required_str(&envelope, "", "type")? {
        "url_verification" => Ok(Event::UrlVerification {
            challenge: required_str(&envelope, "", "challenge")?.to_owned(),
        }),
        "event_callback" => {
            let event = match envelope.get("event") {
                Some(Value::Object(event)) => event,
                Some(other) => {
                    return Err(ChatError::BadBody(format!(
                        "Slack event_callback: `event` is {}, not an object",
                        json_kind(other)
                    )))
                }
                None => {
                    return Err(ChatError::BadBody(
                        "Slack event_callback lacks required field `event`".into(),
                    ))
                }
            };
            parse_callback_event(&envelope, event, prefix.filter(|p| !p.is_empty()))
        }
        other => Ok(Event::Ignored(format!(
            "Slack envelope type `{other}` carries no event"
        ))),
    }
}

fn parse_callback_event(
    envelope: &Map<String, Value>,
    event: &Map<String, Value>,
    prefix: Option<&str>,
) -> Result<Event, ChatError> {
    let event_type = required_str(event, "event.", "type")?;
    if !matches!(event_type, "app_mention" | "message") {
        return Ok(Event::Ignored(format!(
            "event type `{event_type}` is not a command"
        )));
    }
    // Checked before anything else so that no bot message, squall's own included, can ever
    // become a command whatever its text.
    if let Some(bot_id) = event.get("bot_id").filter(|v| !v.is_null()) {
        let bot_id = bot_id.as_str().unwrap_or("?");
        return Ok(Event::Ignored(format!(
            "{event_type} from a bot (bot_id {bot_id})"
        )));
    }
    if let Some(subtype) = optional_str(event, "event.", "subtype")? {
        return Ok(Event::Ignored(format!(
            "{event_type} with subtype `{subtype}` (edits, joins, bot posts are not commands)"
        )));
    }
    let raw = optional_str(event, "event.", "text")?.unwrap_or_default();
    let command = if event_type == "app_mention" {
        match strip_leading_mention(raw) {
            Some(rest) => unformat(rest),
            None => {
                return Ok(Event::Ignored(
                    "app_mention does not start with the mention".into(),
                ))
            }
        }
    } else {
        let Some(prefix) = prefix else {
            return Ok(Event::Ignored(
                "message without a configured prefix (only mentions are commands)".into(),
            ));
        };
        if raw.trim_start().starts_with("<@") {
            return Ok(Event::Ignored(
                "message starts with a mention (its app_mention is answered instead)".into(),
            ));
        }
        // Unformatted first, so that a prefix such as `>` or `&` is compared with what the
        // user typed, not with Slack's `&gt;`.
        let text = unformat(raw);
        match text.trim_start().strip_prefix(prefix) {
            Some(rest) => rest.trim_start().to_owned(),
            None => {
                return Ok(Event::Ignored(format!(
                    "message does not start with the prefix `{prefix}`"
                )))
            }
        }
    };
    if command.trim().is_empty() {
        return Ok(Event::Ignored(format!("{event_type} holds no command")));
    }
    Ok(Event::Command(EventCommand {
        event_id: optional_str(envelope, "", "event_id")?.map(str::to_owned),
        team_id: optional_str(envelope, "", "team_id")?.map(str::to_owned),
        channel: required_str(event, "event.", "channel")?.to_owned(),
        user: required_str(event, "event.", "user")?.to_owned(),
        text: command,
        ts: optional_str(event, "event.", "ts")?.map(str::to_owned),
        thread_ts: optional_str(event, "event.", "thread_ts")?.map(str::to_owned),
    }))
}

/// The text after a leading `<@U…>` (and an optional `:` or `,`, and whitespace); `None` when
/// the text does not start with a mention.
fn strip_leading_mention(text: &str) -> Option<&str> {
    let after_open = text.trim_start().strip_prefix("<@")?;
    let close = after_open.find('>')?;
    let rest = &after_open[close + 1..];
    let rest = rest.strip_prefix([':', ',']).unwrap_or(rest);
    Some(rest.trim_start())
}

/// A string field of a JSON object; `None` when absent or null. `path` prefixes the name in
/// errors (`event.`), so the message says where in the body the problem is.
fn optional_str<'a>(
    object: &'a Map<String, Value>,
    path: &str,
    name: &str,
) -> Result<Option<&'a str>, ChatError> {
    match object.get(name) {
        None | Some(Value::Null) => Ok(None),
        Some(Value::String(text)) => Ok(Some(text)),
        Some(other) => Err(ChatError::BadBody(format!(
            "Slack event: `{path}{name}` is {}, not a string",
            json_kind(other)
        ))),
    }
}

fn required_str<'a>(
    object: &'a Map<String, Value>,
    path: &str,
    name: &str,
) -> Result<&'a str, ChatError> {
    optional_str(object, path, name)?.ok_or_else(|| {
        ChatError::BadBody(format!("Slack event lacks required field `{path}{name}`"))
    })
}

/// Undo Slack's message formatting so the command is what the user typed: `&lt;` `&gt;`
/// `&amp;` unescaped; `<http://x|label>` and `<http://x>` become `http://x`;
/// `<mailto:a@b|a@b>` becomes `a@b`; `<#C123|general>` becomes `#general`; `<@U123>` stays as
/// is; smart quotes “ ” ‘ ’ become plain " and ' (Slack clients insert them, and alias matching
/// strips only plain quotes).
///
/// One refinement: when a link's label is its URL without the scheme, the label is what the
/// user typed and Slack added the scheme while auto-linking (`host.example.com` arrives as
/// `<http://host.example.com|host.example.com>`), so the label is kept; a command taking a
/// host name must not receive `http://` in front of it. Also `<!here>`, `<!channel>`,
/// `<!everyone>` become `@here` …, and other `<!…|label>` sequences their label.
pub fn unformat(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    let mut rest = text;
    while let Some(open) = rest.find('<') {
        out.push_str(&plain_quotes(&unescape(&rest[..open])));
        let inside = &rest[open + 1..];
        let Some(close) = inside.find('>') else {
            // Slack escapes every literal `<`, so an unclosed one is not markup: keep it.
            out.push_str(&plain_quotes(&unescape(&rest[open..])));
            return out;
        };
        out.push_str(&undo_control_sequence(&inside[..close]));
        rest = &inside[close + 1..];
    }
    out.push_str(&plain_quotes(&unescape(rest)));
    out
}

/// What a `<target|label>` sequence stands for, as the user typed it.
fn undo_control_sequence(sequence: &str) -> String {
    let (target, label) = match sequence.split_once('|') {
        Some((target, label)) if !label.is_empty() => (target, Some(unescape(label))),
        Some((target, _)) => (target, None),
        None => (sequence, None),
    };
    if target.starts_with('@') {
        // User mentions stay markup: aliases and actions may want the user id.
        return format!("<{sequence}>");
    }
    if let Some(channel) = target.strip_prefix('#') {
        return format!("#{}", label.unwrap_or_else(|| channel.to_owned()));
    }
    if let Some(special) = target.strip_prefix('!') {
        return match (label, special) {
            (Some(label), _) => label,
            (None, "here" | "channel" | "everyone" | "group") => format!("@{special}"),
            (None, _) => format!("<{sequence}>"),
        };
    }
    let url = unescape(target);
    if let Some(address) = url.strip_prefix("mailto:") {
        return address.to_owned();
    }
    match label {
        Some(label) if url.split_once("://").map(|(_, rest)| rest) == Some(label.as_str()) => label,
        _ => url,
    }
}

/// Slack's three entities, in one pass so that `&amp;lt;` becomes `&lt;`, not `<`.
fn unescape(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    let mut rest = text;
    while let Some(amp) = rest.find('&') {
        out.push_str(&rest[..amp]);
        let after = &rest[amp..];
        let (replacement, len) = if after.starts_with("&lt;") {
            ('<', 4)
        } else if after.starts_with("&gt;") {
            ('>', 4)
        } else if after.starts_with("&amp;") {
            ('&', 5)
        } else {
            ('&', 1)
        };
        out.push(replacement);
        rest = &after[len..];
    }
    out.push_str(rest);
    out
}

/// Escapes text for Slack (&, <, > → &amp; &lt; &gt;) — message text squall posts must not be
/// taken as Slack markup.
pub fn escape(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            other => out.push(other),
        }
    }
    out
}

/// The immediate answer to a slash command: {"response_type": "in_channel"|"ephemeral",
/// "text": text}.
pub fn command_response(text: &str, in_channel: bool) -> Value {
    let response_type = if in_channel {
        "in_channel"
    } else {
        "ephemeral"
    };
    json!({ "response_type": response_type, "text": text })
}

/// A body for POST {api}/chat.postMessage: {"channel", "text", "thread_ts"?}.
pub fn post_message_body(channel: &str, text: &str, thread_ts: Option<&str>) -> Value {
    let mut body = json!({ "channel": channel, "text": text });
    if let (Some(thread_ts), Value::Object(fields)) = (thread_ts, &mut body) {
        fields.insert("thread_ts".into(), Value::from(thread_ts));
    }
    body
}

/// A body for a response_url: {"response_type": "in_channel", "replace_original": false,
/// "text"}.
pub fn response_url_body(text: &str) -> Value {
    json!({ "response_type": "in_channel", "replace_original": false, "text": text })
}

/// Slack's Web API answers 200 with {"ok": false, "error": "..."} on failure: returns
/// Err(ChatError::Platform(error)) for that, with ` (needed: scope)` appended when Slack names
/// the scope the token lacks, since that is the fix. The plain-text `ok` that incoming
/// webhooks and response_urls answer is accepted as success too.
pub fn check_api_answer(body: &[u8]) -> Result<(), ChatError> {
    if body.trim_ascii() == b"ok" {
        return Ok(());
    }
    let answer: Value = serde_json::from_slice(body).map_err(|err| {
        let start: String = String::from_utf8_lossy(body).chars().take(200).collect();
        ChatError::BadBody(format!(
            "Slack's answer is not JSON ({err}); it begins {start:?}"
        ))
    })?;
    match answer.get("ok") {
        Some(Value::Bool(true)) => Ok(()),
        Some(Value::Bool(false)) => {
            let error = answer
                .get("error")
                .and_then(Value::as_str)
                .unwrap_or("no error given");
            Err(ChatError::Platform(
                match answer.get("needed").and_then(Value::as_str) {
                    Some(needed) => format!("{error} (needed: {needed})"),
                    None => error.to_owned(),
                },
            ))
        }
        _ => Err(ChatError::BadBody(
            "Slack's answer has no boolean `ok` field".into(),
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    // Slack's published example, from "Verifying requests from Slack".
    const SECRET: &str = "8f742231b10e8888abcd99yyyzzz85a5";
    const TIMESTAMP: &str = "1531420618";
    const SIGNATURE: &str = "v0=a2114d57b48eac39b9ad189dd8316235a7b4a8d21a10bd27519666489c69b503";
    const BODY: &str = "token=xyzz0WbapA4vBCDEFasx0q6G&team_id=T1DC2JH3J&team_domain=testteamnow&channel_id=G8PSS9T3V&channel_name=foobar&user_id=U2CERLKJA&user_name=roadrunner&command=%2Fwebhook-collect&text=&response_url=https%3A%2F%2Fhooks.slack.com%2Fcommands%2FT1DC2JH3J%2F397700885554%2F96rGlfmibIGlgcZRskXaIFfN&trigger_id=398738663015.47445629121.803a0bc887a14d10d2c447fce8b6703c";
    const NOW: i64 = 1_531_420_618;

    fn verify_vector(
        secret: &str,
        timestamp: Option<&str>,
        signature: Option<&str>,
        body: &[u8],
        now: i64,
    ) -> Result<(), ChatError> {
        verify(secret, timestamp, signature, body, now)
    }

    #[test]
    fn slacks_published_vector_verifies_and_signs() {
        assert_eq!(sign(SECRET, TIMESTAMP, BODY.as_bytes()), SIGNATURE);
        assert_eq!(
            verify_vector(
                SECRET,
                Some(TIMESTAMP),
                Some(SIGNATURE),
                BODY.as_bytes(),
                NOW
            ),
            Ok(())
        );
    }

    #[test]
    fn signature_check_is_case_insensitive_in_hex_only() {
        let upper = format!("v0={}", SIGNATURE["v0=".len()..].to_uppercase());
        assert_eq!(
            verify_vector(SECRET, Some(TIMESTAMP), Some(&upper), BODY.as_bytes(), NOW),
            Ok(())
        );
        let wrong_version = SIGNATURE.replacen("v0=", "v1=", 1);
        assert_eq!(
            verify_vector(
                SECRET,
                Some(TIMESTAMP),
                Some(&wrong_version),
                BODY.as_bytes(),
                NOW
            ),
            Err(ChatError::BadSignature)
        );
    }

    #[test]
    fn an_altered_body_is_refused() {
        let mut body = BODY.as_bytes().to_vec();
        // `roadrunner` becomes `roadrunnes`: one byte, still a well-formed body.
        let at = BODY.find("roadrunner").unwrap() + "roadrunne".len();
        body[at] = b's';
        assert_eq!(
            verify_vector(SECRET, Some(TIMESTAMP), Some(SIGNATURE), &body, NOW),
            Err(ChatError::BadSignature)
        );
    }

    #[test]
    fn a_wrong_or_empty_secret_is_refused() {
        let wrong = "8f742231b10e8888abcd99yyyzzz85a6";
        assert_eq!(
            verify_vector(
                wrong,
                Some(TIMESTAMP),
                Some(SIGNATURE),
                BODY.as_bytes(),
                NOW
            ),
            Err(ChatError::BadSignature)
        );
        let signed_with_empty = sign("", TIMESTAMP, BODY.as_bytes());
        assert_eq!(
            verify_vector(
                "",
                Some(TIMESTAMP),
                Some(&signed_with_empty),
                BODY.as_bytes(),
                NOW
            ),
            Err(ChatError::BadSignature)
        );
    }

    #[test]
    fn missing_headers_are_named() {
        assert_eq!(
            verify_vector(SECRET, None, Some(SIGNATURE), BODY.as_bytes(), NOW),
            Err(ChatError::MissingHeader("X-Slack-Request-Timestamp"))
        );
        assert_eq!(
            verify_vector(SECRET, Some(TIMESTAMP), None, BODY.as_bytes(), NOW),
            Err(ChatError::MissingHeader("X-Slack-Signature"))
        );
    }

    #[test]
    fn malformed_signatures_are_refused() {
        for signature in [
            "",
            "v0=",
            "v0=abc",
            "v0=zz",
            &SIGNATURE[3..],
            &SIGNATURE[..60],
        ] {
            assert_eq!(
                verify_vector(
                    SECRET,
                    Some(TIMESTAMP),
                    Some(signature),
                    BODY.as_bytes(),
                    NOW
                ),
                Err(ChatError::BadSignature),
                "{signature:?}"
            );
        }
    }

    #[test]
    fn timestamps_that_are_not_whole_seconds_are_refused() {
        for timestamp in [
            "",
            "abc",
            "1531420618.5",
            " 1531420618",
            "+1531420618",
            "-5",
        ] {
            let signature = sign(SECRET, timestamp, BODY.as_bytes());
            assert_eq!(
                verify_vector(
                    SECRET,
                    Some(timestamp),
                    Some(&signature),
                    BODY.as_bytes(),
                    NOW
                ),
                Err(ChatError::BadTimestamp(timestamp.to_owned())),
                "{timestamp:?}"
            );
        }
        let huge = "99999999999999999999999";
        assert_eq!(
            verify_vector(SECRET, Some(huge), Some(SIGNATURE), BODY.as_bytes(), NOW),
            Err(ChatError::BadTimestamp(huge.to_owned()))
        );
    }

    #[test]
    fn timestamps_more_than_300_s_away_are_refused_either_way() {
        let body = BODY.as_bytes();
        let signed_at = |at: i64| (at.to_string(), sign(SECRET, &at.to_string(), body));
        for (offset, accepted) in [(-300, true), (300, true), (-301, false), (301, false)] {
            let (timestamp, signature) = signed_at(NOW + offset);
            let outcome = verify_vector(SECRET, Some(&timestamp), Some(&signature), body, NOW);
            if accepted {
                assert_eq!(outcome, Ok(()), "offset {offset}");
            } else {
                assert_eq!(
                    outcome,
                    Err(ChatError::StaleTimestamp {
                        age_seconds: -offset
                    }),
                    "offset {offset}"
                );
            }
        }
        // The published vector itself, checked an hour late.
        assert_eq!(
            verify_vector(SECRET, Some(TIMESTAMP), Some(SIGNATURE), body, NOW + 3600),
            Err(ChatError::StaleTimestamp { age_seconds: 3600 })
        );
        // Far-off values must not overflow.
        assert_eq!(
            verify_vector(
                SECRET,
                Some("9223372036854775807"),
                Some(SIGNATURE),
                body,
                i64::MIN
            ),
            Err(ChatError::StaleTimestamp {
                age_seconds: i64::MIN
            })
        );
    }

    #[test]
    fn the_vectors_slash_command_parses() {
        assert_eq!(
            parse_slash_command(BODY.as_bytes()),
            Ok(SlashCommand {
                team_id: "T1DC2JH3J".into(),
                team_domain: "testteamnow".into(),
                channel_id: "G8PSS9T3V".into(),
                channel_name: "foobar".into(),
                user_id: "U2CERLKJA".into(),
                user_name: "roadrunner".into(),
                command: "/webhook-collect".into(),
                text: String::new(),
                response_url: Some(
                    "https://hooks.slack.com/commands/T1DC2JH3J/397700885554/96rGlfmibIGlgcZRskXaIFfN"
                        .into()
                ),
                trigger_id: Some("398738663015.47445629121.803a0bc887a14d10d2c447fce8b6703c".into()),
            })
        );
    }

    #[test]
    fn slash_command_text_is_unformatted() {
        let body = b"user_id=U1&command=%2Fcdos&text=msg%3D%E2%80%9Ca+%26amp%3B+b%E2%80%9D+%3C%23C1%7Cops%3E";
        let command = parse_slash_command(body).unwrap();
        assert_eq!(command.text, "msg=\"a & b\" #ops");
        assert_eq!(command.response_url, None);
        assert_eq!(command.channel_name, "");
    }

    #[test]
    fn slash_commands_lacking_user_or_command_name_them() {
        assert_eq!(
            parse_slash_command(b"user_id=U1&text=x"),
            Err(ChatError::BadBody(
                "Slack slash command lacks required field `command` (absent or empty)".into()
            ))
        );
        assert_eq!(
            parse_slash_command(b"user_id=&command=%2Fcdos"),
            Err(ChatError::BadBody(
                "Slack slash command lacks required field `user_id` (absent or empty)".into()
            ))
        );
        assert_eq!(
            parse_slash_command(br#"{"user_id":"U1","command":"/cdos"}"#),
            Err(ChatError::BadBody(
                "Slack slash command lacks required fields `user_id`, `command` (absent or empty)"
                    .into()
            ))
        );
    }

    #[test]
    fn url_verification_answers_the_challenge() {
        let body = br#"{"token":"Jhj5dZrVaK7ZwHHjRyZWjbDl","challenge":"3eZbrw1aBm2rZgRNFdxV2595E9CY3gmdALWMmHkvFXO7tYXAYM8P","type":"url_verification"}"#;
        assert_eq!(
            parse_event(body, None),
            Ok(Event::UrlVerification {
                challenge: "3eZbrw1aBm2rZgRNFdxV2595E9CY3gmdALWMmHkvFXO7tYXAYM8P".into()
            })
        );
        assert_eq!(
            parse_event(br#"{"type":"url_verification"}"#, None),
            Err(ChatError::BadBody(
                "Slack event lacks required field `challenge`".into()
            ))
        );
    }

    #[test]
    fn an_app_mention_is_a_command_without_the_mention() {
        let body = br#"{"type":"event_callback","team_id":"T1","event_id":"Ev1","event":{"type":"app_mention","user":"U1","text":"<@U0BOT> cdos 100008580","ts":"1515449522.000016","channel":"C1","event_ts":"1515449522000016"}}"#;
        assert_eq!(
            parse_event(body, None),
            Ok(Event::Command(EventCommand {
                event_id: Some("Ev1".into()),
                team_id: Some("T1".into()),
                channel: "C1".into(),
                user: "U1".into(),
                text: "cdos 100008580".into(),
                ts: Some("1515449522.000016".into()),
                thread_ts: None,
            }))
        );
    }

    /// An `event_callback` around `event`, parsed with `prefix`.
    fn callback(event: Value, prefix: Option<&str>) -> Result<Event, ChatError> {
        let body =
            json!({"type": "event_callback", "team_id": "T1", "event_id": "Ev9", "event": event});
        parse_event(body.to_string().as_bytes(), prefix)
    }

    fn command_text(event: Value, prefix: Option<&str>) -> String {
        match callback(event, prefix) {
            Ok(Event::Command(command)) => command.text,
            other => panic!("expected a command, got {other:?}"),
        }
    }

    fn ignored(event: Value, prefix: Option<&str>) -> String {
        match callback(event, prefix) {
            Ok(Event::Ignored(why)) => why,
            other => panic!("expected the event to be ignored, got {other:?}"),
        }
    }

    #[test]
    fn mention_forms_are_stripped() {
        for text in [
            "<@U0BOT> cdos 1",
            "  <@U0BOT>:  cdos 1",
            "<@U0BOT|squall>, cdos 1",
            "<@U0BOT>\ncdos 1",
        ] {
            let event = json!({"type": "app_mention", "user": "U1", "channel": "C1", "text": text});
            assert_eq!(command_text(event, Some("!")), "cdos 1", "{text:?}");
        }
        let later = json!({"type": "app_mention", "user": "U1", "channel": "C1", "text": "thanks <@U0BOT>"});
        assert_eq!(
            ignored(later, None),
            "app_mention does not start with the mention"
        );
        let bare =
            json!({"type": "app_mention", "user": "U1", "channel": "C1", "text": "<@U0BOT>"});
        assert_eq!(ignored(bare, None), "app_mention holds no command");
    }

    #[test]
    fn a_prefixed_message_is_a_command_in_its_thread() {
        let event = json!({"type": "message", "user": "U1", "channel": "C1", "text": "!cdos 1",
                           "ts": "2.0", "thread_ts": "1.0", "channel_type": "channel"});
        assert_eq!(
            callback(event, Some("!")),
            Ok(Event::Command(EventCommand {
                event_id: Some("Ev9".into()),
                team_id: Some("T1".into()),
                channel: "C1".into(),
                user: "U1".into(),
                text: "cdos 1".into(),
                ts: Some("2.0".into()),
                thread_ts: Some("1.0".into()),
            }))
        );
        let spaced = json!({"type": "message", "user": "U1", "channel": "C1", "text": "! cdos 1"});
        assert_eq!(command_text(spaced, Some("!")), "cdos 1");
        // A prefix Slack escapes is compared with what the user typed.
        let quoted =
            json!({"type": "message", "user": "U1", "channel": "C1", "text": "&gt; cdos 1"});
        assert_eq!(command_text(quoted, Some(">")), "cdos 1");
    }

    #[test]
    fn messages_that_are_not_commands_are_ignored_with_a_reason() {
        let cases = [
            (
                json!({"type": "message", "bot_id": "B1", "channel": "C1", "text": "!cdos 1"}),
                Some("!"),
                "message from a bot (bot_id B1)",
            ),
            (
                json!({"type": "app_mention", "bot_id": "B2", "user": "U2", "channel": "C1", "text": "<@U0BOT> cdos"}),
                None,
                "app_mention from a bot (bot_id B2)",
            ),
            (
                json!({"type": "message", "subtype": "message_changed", "channel": "C1",
                       "message": {"user": "U1", "text": "!cdos 1"}}),
                Some("!"),
                "message with subtype `message_changed` (edits, joins, bot posts are not commands)",
            ),
            (
                json!({"type": "message", "subtype": "bot_message", "channel": "C1", "text": "!cdos 1"}),
                Some("!"),
                "message with subtype `bot_message` (edits, joins, bot posts are not commands)",
            ),
            (
                json!({"type": "message", "user": "U1", "channel": "C1", "text": "cdos 1"}),
                Some("!"),
                "message does not start with the prefix `!`",
            ),
            (
                json!({"type": "message", "user": "U1", "channel": "C1", "text": "!cdos 1"}),
                None,
                "message without a configured prefix (only mentions are commands)",
            ),
            (
                json!({"type": "message", "user": "U1", "channel": "C1", "text": "!cdos 1"}),
                Some(""),
                "message without a configured prefix (only mentions are commands)",
            ),
            (
                json!({"type": "message", "user": "U1", "channel": "C1", "text": "<@U0BOT> !cdos 1"}),
                Some("!"),
                "message starts with a mention (its app_mention is answered instead)",
            ),
            (
                json!({"type": "message", "user": "U1", "channel": "C1", "text": "!  "}),
                Some("!"),
                "message holds no command",
            ),
            (
                json!({"type": "reaction_added", "user": "U1", "reaction": "thumbsup"}),
                Some("!"),
                "event type `reaction_added` is not a command",
            ),
        ];
        for (event, prefix, why) in cases {
            assert_eq!(ignored(event.clone(), prefix), why, "{event}");
        }
        assert_eq!(
            parse_event(
                br#"{"type":"app_rate_limited","minute_rate_limited":1}"#,
                None
            ),
            Ok(Event::Ignored(
                "Slack envelope type `app_rate_limited` carries no event".into()
            ))
        );
    }

    #[test]
    fn malformed_event_bodies_name_the_problem() {
        let Err(ChatError::BadBody(message)) = parse_event(b"token=x", None) else {
            panic!("a form body must be refused");
        };
        assert!(
            message.starts_with("Slack event body is not JSON: "),
            "{message}"
        );
        let cases: [(&[u8], &str); 6] = [
            (b"[]", "Slack event body is not a JSON object but an array"),
            (b"{}", "Slack event lacks required field `type`"),
            (
                br#"{"type":"event_callback"}"#,
                "Slack event_callback lacks required field `event`",
            ),
            (
                br#"{"type":"event_callback","event":"x"}"#,
                "Slack event_callback: `event` is a string, not an object",
            ),
            (
                br#"{"type":"event_callback","event":{"type":"app_mention","text":"<@U0> hi","user":"U1"}}"#,
                "Slack event lacks required field `event.channel`",
            ),
            (
                br#"{"type":"event_callback","event":{"type":"message","text":5}}"#,
                "Slack event: `event.text` is a number, not a string",
            ),
        ];
        for (body, message) in cases {
            assert_eq!(
                parse_event(body, Some("!")),
                Err(ChatError::BadBody(message.into())),
                "{}",
                String::from_utf8_lossy(body)
            );
        }
    }

    #[test]
    fn unformat_gives_back_what_the_user_typed() {
        let cases = [
            ("a &lt;b&gt; &amp; c", "a <b> & c"),
            ("&amp;lt; stays one level", "&lt; stays one level"),
            ("&nbsp; &am", "&nbsp; &am"),
            (
                "open <http://example.com/a?b=1&amp;c=2>",
                "open http://example.com/a?b=1&c=2",
            ),
            ("see <http://x|label>", "see http://x"),
            (
                "ping <http://host.example.com|host.example.com>",
                "ping host.example.com",
            ),
            (
                "get <https://example.com/x|example.com/x>",
                "get example.com/x",
            ),
            ("mail <mailto:a@b|a@b>", "mail a@b"),
            ("mail <mailto:a@b>", "mail a@b"),
            ("in <#C123|general>", "in #general"),
            ("in <#C123|>", "in #C123"),
            ("in <#C123>", "in #C123"),
            ("hi <@U123> and <@U456|bob>", "hi <@U123> and <@U456|bob>"),
            (
                "<!here> <!channel|@channel> <!subteam^S1|@ops>",
                "@here @channel @ops",
            ),
            ("<!date^1392734382^{date}>", "<!date^1392734382^{date}>"),
            ("msg=“hello world” it‘s ’x’", "msg=\"hello world\" it's 'x'"),
            ("unclosed <http://x", "unclosed <http://x"),
            ("", ""),
        ];
        for (raw, typed) in cases {
            assert_eq!(unformat(raw), typed, "{raw:?}");
        }
    }

    #[test]
    fn escape_undoes_unformat_for_plain_text() {
        assert_eq!(escape("a <b> & c"), "a &lt;b&gt; &amp; c");
        let text = "if a < b && c > d: <@U1>";
        assert_eq!(unformat(&escape(text)), text);
    }

    #[test]
    fn reply_bodies_have_slacks_shape() {
        assert_eq!(
            command_response("hi", true),
            json!({"response_type": "in_channel", "text": "hi"})
        );
        assert_eq!(
            command_response("hi", false),
            json!({"response_type": "ephemeral", "text": "hi"})
        );
        assert_eq!(
            post_message_body("C1", "hi", None),
            json!({"channel": "C1", "text": "hi"})
        );
        assert_eq!(
            post_message_body("C1", "hi", Some("1.0")),
            json!({"channel": "C1", "text": "hi", "thread_ts": "1.0"})
        );
        assert_eq!(
            response_url_body("hi"),
            json!({"response_type": "in_channel", "replace_original": false, "text": "hi"})
        );
    }

    #[test]
    fn api_answers_report_slacks_errors() {
        assert_eq!(check_api_answer(br#"{"ok":true,"ts":"1.0"}"#), Ok(()));
        assert_eq!(check_api_answer(b"ok"), Ok(()));
        assert_eq!(
            check_api_answer(br#"{"ok":false,"error":"channel_not_found"}"#),
            Err(ChatError::Platform("channel_not_found".into()))
        );
        assert_eq!(
            check_api_answer(
                br#"{"ok":false,"error":"missing_scope","needed":"chat:write","provided":"x"}"#
            ),
            Err(ChatError::Platform(
                "missing_scope (needed: chat:write)".into()
            ))
        );
        assert_eq!(
            check_api_answer(br#"{"ok":false}"#),
            Err(ChatError::Platform("no error given".into()))
        );
        assert_eq!(
            check_api_answer(br#"{"channel":"C1"}"#),
            Err(ChatError::BadBody(
                "Slack's answer has no boolean `ok` field".into()
            ))
        );
        let Err(ChatError::BadBody(message)) = check_api_answer(b"invalid_payload") else {
            panic!("a plain-text error must be refused");
        };
        assert!(
            message.ends_with("it begins \"invalid_payload\""),
            "{message}"
        );
    }
}
