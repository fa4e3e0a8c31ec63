//! Mattermost: outgoing webhooks and slash commands as Mattermost sends them, the token check
//! that authenticates them, and the bodies squall answers or posts with. Must never accept a
//! request whose token it has not compared, in constant time, with a configured one.

use serde_json::{json, Value};

use crate::fields::Fields;
use crate::secret::constant_time_eq;
use crate::text::plain_quotes;
use crate::ChatError;

/// Which Mattermost integration sent a request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    OutgoingWebhook,
    SlashCommand,
}

/// Mattermost outgoing webhooks (form-encoded or JSON, fields token, team_id, team_domain,
/// channel_id, channel_name, timestamp, user_id, user_name, post_id, text, trigger_word,
/// file_ids) and slash commands (form-encoded: token, team_id, team_domain, channel_id,
/// channel_name, user_id, user_name, command, text, response_url, trigger_id). Which it is: a
/// `command` field means slash command.
#[derive(Debug, Clone, PartialEq)]
pub struct Request {
    pub kind: Kind,
    /// The integration's token; empty when the request carried none, which
    /// [`check_token`] refuses.
    pub token: String,
    pub team_id: Option<String>,
    pub channel_id: String,
    pub channel_name: Option<String>,
    pub user_id: String,
    pub user_name: Option<String>,
    /// For an outgoing webhook: the text without its trigger word, then leading whitespace
    /// removed. A trigger word that starts with a symbol loses only the symbol (trigger_word
    /// "!" or "!cdos" and text "!cdos 100" give "cdos 100"); a name loses the whole word
    /// (trigger_word "squall" and text "squall cdos 100" give "cdos 100"). For a slash command: its text as given (the
    /// command word, e.g. "/cdos", is in the `command` field, which the engine prepends without
    /// the slash). In both, curly quotes that autocorrection typed are made plain again.
    pub text: String,
    /// Slash commands only: the command typed (e.g. `/cdos`).
    pub command: Option<String>,
    /// Slash commands only: where later answers go.
    pub response_url: Option<String>,
    /// Outgoing webhooks only: the post that triggered it.
    pub post_id: Option<String>,
}

/// The fields squall reads; a JSON body holding an array or object in one of them is refused.
const READ_FIELDS: &[&str] = &[
    "token",
    "team_id",
    "channel_id",
    "channel_name",
    "user_id",
    "user_name",
    "command",
    "text",
    "trigger_word",
    "response_url",
    "post_id",
];

/// Reads an outgoing webhook or slash command request.
///
/// The body is read as JSON when `content_type` says `application/json` (or `…+json`), as a
/// form when it says `application/x-www-form-urlencoded`, and otherwise by its first
/// non-blank byte (`{` means JSON), since Mattermost's content type for outgoing webhooks is a
/// per-hook setting and proxies sometimes drop the header. `channel_id` and `user_id` are
/// required; the error names each one that is absent or empty.
pub fn parse_request(content_type: Option<&str>, body: &[u8]) -> Result<Request, ChatError> {
    let fields = if is_json(content_type, body) {
        Fields::from_json(body, "Mattermost request", READ_FIELDS)?
    } else {
        Fields::from_form(body)
    };
    let kind = if fields.get("command").is_some() {
        Kind::SlashCommand
    } else {
        Kind::OutgoingWebhook
    };
    let what = match kind {
        Kind::OutgoingWebhook => "Mattermost outgoing webhook",
        Kind::SlashCommand => "Mattermost slash command",
    };
    fields.require(what, &["channel_id", "user_id"])?;
    let text = fields.or_empty("text");
    let text = match (kind, fields.get("trigger_word")) {
        (Kind::OutgoingWebhook, Some(trigger_word)) => {
            let text = text.trim_start();
            // A trigger word that starts with a symbol (`!`, `!cdos`) marks a command: only
            // the symbol goes, so `!cdos 1` is the command `cdos 1`. A name (`squall`,
            // `@squall`) addresses the bot: the whole word goes.
            let symbol: String = trigger_word
                .chars()
                .take_while(|c| !c.is_alphanumeric() && *c != '@')
                .collect();
            let strip = if symbol.is_empty() {
                trigger_word
            } else {
                symbol.as_str()
            };
            text.strip_prefix(strip)
                .unwrap_or(text)
                .trim_start()
                .to_owned()
        }
        _ => text,
    };
    Ok(Request {
        kind,
        token: fields.or_empty("token"),
        team_id: fields.optional("team_id"),
        channel_id: fields.or_empty("channel_id"),
        channel_name: fields.optional("channel_name"),
        user_id: fields.or_empty("user_id"),
        user_name: fields.optional("user_name"),
        text: plain_quotes(&text),
        command: fields.optional("command"),
        response_url: fields.optional("response_url"),
        post_id: fields.optional("post_id"),
    })
}

fn is_json(content_type: Option<&str>, body: &[u8]) -> bool {
    let media_type = content_type
        .and_then(|value| value.split(';').next())
        .map(|media_type| media_type.trim().to_ascii_lowercase());
    match media_type.as_deref() {
        Some("application/json") => true,
        Some(other) if other.ends_with("+json") => true,
        Some("application/x-www-form-urlencoded") => false,
        _ => body.trim_ascii_start().starts_with(b"{"),
    }
}

/// Constant-time comparison against each configured token; Err(ChatError::BadToken) when none
/// matches (an empty configured list refuses everything).
///
/// Empty tokens never match, configured or received: a blank line in the configuration must
/// not let in requests that carry no token. Every configured token is compared, without
/// stopping at a match, so the time taken does not say which one matched.
pub fn check_token(configured: &[String], got: &str) -> Result<(), ChatError> {
    if got.is_empty() {
        return Err(ChatError::BadToken);
    }
    let mut matched = false;
    for token in configured.iter().filter(|token| !token.is_empty()) {
        matched |= constant_time_eq(token.as_bytes(), got.as_bytes());
    }
    if matched {
        Ok(())
    } else {
        Err(ChatError::BadToken)
    }
}

/// The immediate answer: {"response_type": "in_channel"|"ephemeral", "text"} (outgoing
/// webhooks ignore response_type; fine).
pub fn response(text: &str, in_channel: bool) -> Value {
    let response_type = if in_channel {
        "in_channel"
    } else {
        "ephemeral"
    };
    json!({ "response_type": response_type, "text": text })
}

/// Body for a later post to a response_url or an incoming webhook: {"response_type":
/// "in_channel", "text", "channel"?: channel name, "username"?}.
pub fn post_body(text: &str, channel: Option<&str>, username: Option<&str>) -> Value {
    let mut body = serde_json::Map::new();
    body.insert("response_type".into(), Value::from("in_channel"));
    body.insert("text".into(), Value::from(text));
    if let Some(channel) = channel {
        body.insert("channel".into(), Value::from(channel));
    }
    if let Some(username) = username {
        body.insert("username".into(), Value::from(username));
    }
    Value::Object(body)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn webhook(text: &str) -> Request {
        Request {
            kind: Kind::OutgoingWebhook,
            token: "hook-token".into(),
            team_id: Some("T1".into()),
            channel_id: "C1".into(),
            channel_name: Some("town-square".into()),
            user_id: "U1".into(),
            user_name: Some("alice".into()),
            text: text.into(),
            command: None,
            response_url: None,
            post_id: Some("P1".into()),
        }
    }

    #[test]
    fn an_outgoing_webhook_as_json_loses_its_trigger_word() {
        let body = json!({
            "token": "hook-token", "team_id": "T1", "team_domain": "ops",
            "channel_id": "C1", "channel_name": "town-square", "timestamp": 1445532266,
            "user_id": "U1", "user_name": "alice", "post_id": "P1",
            "text": "!cdos 100", "trigger_word": "!", "file_ids": ""
        });
        assert_eq!(
            parse_request(Some("application/json"), body.to_string().as_bytes()),
            Ok(webhook("cdos 100"))
        );
    }

    #[test]
    fn an_outgoing_webhook_as_a_form_loses_its_trigger_word() {
        let body = b"token=hook-token&team_id=T1&team_domain=ops&channel_id=C1&channel_name=town-square&timestamp=1445532266&user_id=U1&user_name=alice&post_id=P1&text=squall+cdos+100&trigger_word=squall&file_ids=";
        assert_eq!(
            parse_request(Some("application/x-www-form-urlencoded"), body),
            Ok(webhook("cdos 100"))
        );
    }

    #[test]
    fn trigger_words_are_stripped_only_at_the_start() {
        let cases = [
            ("!", "!cdos 100", "cdos 100"),
            ("!", "! cdos 100", "cdos 100"),
            ("@squall", "  @squall   cdos “a b”", "cdos \"a b\""),
            ("!cdos", "!cdos 100", "cdos 100"),
            ("squall", "run squall now", "run squall now"),
        ];
        for (trigger_word, text, command) in cases {
            let body = json!({"token": "t", "channel_id": "C1", "user_id": "U1",
                              "text": text, "trigger_word": trigger_word});
            let request = parse_request(None, body.to_string().as_bytes()).unwrap();
            assert_eq!(request.text, command, "{trigger_word:?} {text:?}");
        }
    }

    #[test]
    fn a_slash_command_keeps_its_text() {
        let body = b"token=cmd-token&team_id=T1&team_domain=ops&channel_id=C1&channel_name=town-square&user_id=U1&user_name=alice&command=%2Fcdos&text=100+%E2%80%9Cx%E2%80%9D&response_url=https%3A%2F%2Fmm.example.com%2Fhooks%2Fcommands%2Fabc&trigger_id=tr1";
        assert_eq!(
            parse_request(
                Some("application/x-www-form-urlencoded; charset=utf-8"),
                body
            ),
            Ok(Request {
                kind: Kind::SlashCommand,
                token: "cmd-token".into(),
                team_id: Some("T1".into()),
                channel_id: "C1".into(),
                channel_name: Some("town-square".into()),
                user_id: "U1".into(),
                user_name: Some("alice".into()),
                text: "100 \"x\"".into(),
                command: Some("/cdos".into()),
                response_url: Some("https://mm.example.com/hooks/commands/abc".into()),
                post_id: None,
            })
        );
    }

    #[test]
    fn the_body_format_follows_the_content_type_or_the_body() {
        let json_body = br#" {"token":"t","channel_id":"C1","user_id":"U1","text":"hi"}"#;
        let form_body = b"token=t&channel_id=C1&user_id=U1&text=hi";
        for (content_type, body) in [
            (Some("application/json"), &json_body[..]),
            (Some("Application/JSON; charset=utf-8"), &json_body[..]),
            (Some("application/vnd.mattermost+json"), &json_body[..]),
            (None, &json_body[..]),
            (Some("text/plain"), &json_body[..]),
            (Some("application/x-www-form-urlencoded"), &form_body[..]),
            (None, &form_body[..]),
        ] {
            let request = parse_request(content_type, body).unwrap();
            assert_eq!(
                (request.kind, request.text.as_str(), request.token.as_str()),
                (Kind::OutgoingWebhook, "hi", "t"),
                "{content_type:?}"
            );
        }
    }

    #[test]
    fn missing_fields_are_named() {
        assert_eq!(
            parse_request(None, b"token=t&channel_id=C1&text=hi"),
            Err(ChatError::BadBody(
                "Mattermost outgoing webhook lacks required field `user_id` (absent or empty)"
                    .into()
            ))
        );
        assert_eq!(
            parse_request(None, b"token=t&command=%2Fcdos&channel_id=&text=hi"),
            Err(ChatError::BadBody(
                "Mattermost slash command lacks required fields `channel_id`, `user_id` (absent or empty)"
                    .into()
            ))
        );
        // A request without a token parses; the token check is what refuses it.
        let request = parse_request(None, b"channel_id=C1&user_id=U1").unwrap();
        assert_eq!((request.token.as_str(), request.text.as_str()), ("", ""));
        assert_eq!(
            check_token(&["t".to_owned()], &request.token),
            Err(ChatError::BadToken)
        );
    }

    #[test]
    fn bad_json_is_refused() {
        let Err(ChatError::BadBody(message)) =
            parse_request(Some("application/json"), b"{\"token\": ")
        else {
            panic!("truncated JSON must be refused");
        };
        assert!(
            message.starts_with("Mattermost request is not JSON: "),
            "{message}"
        );
        assert_eq!(
            parse_request(Some("application/json"), b"\"text\""),
            Err(ChatError::BadBody(
                "Mattermost request is not a JSON object but a string".into()
            ))
        );
        assert_eq!(
            parse_request(
                None,
                br#"{"token":"t","channel_id":"C1","user_id":"U1","text":["x"]}"#
            ),
            Err(ChatError::BadBody(
                "Mattermost request: field `text` is an array, not a string".into()
            ))
        );
    }

    #[test]
    fn tokens_must_match_a_configured_one() {
        let configured = vec!["first-token".to_owned(), "second-token".to_owned()];
        assert_eq!(check_token(&configured, "first-token"), Ok(()));
        assert_eq!(check_token(&configured, "second-token"), Ok(()));
        assert_eq!(
            check_token(&configured, "second-tokem"),
            Err(ChatError::BadToken)
        );
        assert_eq!(
            check_token(&configured, "first-token "),
            Err(ChatError::BadToken)
        );
        assert_eq!(check_token(&[], "first-token"), Err(ChatError::BadToken));
        assert_eq!(check_token(&[String::new()], ""), Err(ChatError::BadToken));
        assert_eq!(
            check_token(&[String::new(), "t".to_owned()], ""),
            Err(ChatError::BadToken)
        );
    }

    #[test]
    fn answer_bodies_have_mattermosts_shape() {
        assert_eq!(
            response("hi", true),
            json!({"response_type": "in_channel", "text": "hi"})
        );
        assert_eq!(
            response("hi", false),
            json!({"response_type": "ephemeral", "text": "hi"})
        );
        assert_eq!(
            post_body("hi", None, None),
            json!({"response_type": "in_channel", "text": "hi"})
        );
        assert_eq!(
            post_body("hi", Some("ops"), Some("squall")),
            json!({"response_type": "in_channel", "text": "hi", "channel": "ops", "username": "squall"})
        );
    }
}
