//! Chat commands straight from Slack (slash commands, Events API) and Mattermost (outgoing
//! webhooks, slash commands): each request is checked (Slack's signature and replay window,
//! Mattermost's token), its user mapped to a squall user, its command matched against the
//! aliases and requested as an alias execution, and answered at once (the acknowledgement, or
//! what went wrong: never silence). The result follows through st2's notification path
//! (`core.st2.generic.notifytrigger` -> the `chatops` pack -> `chatops.post_message`).
//!
//! A command no alias takes may answer an inquiry (`core.ask`): `respond <id> <response>`, or
//! the st2 pack's words `st2 respond to inquiry <id> with <response>`, the response a JSON
//! object or `key=value` pairs; answered as the mapped user, at once, with whether it was
//! accepted. A pack's alias with the same words wins.
//!
//! These routes take no API key: the platform's signature or token is their authentication.

use squall_chat::{mattermost, slack};

use super::aliases::{match_one, run_alias, AliasRun};
use super::*;
use crate::chatops::{answer, squall_user, Chat, Target};

/// Slack's replay window, in seconds.
const REPLAY_WINDOW: i64 = 300;

/// A command as it arrived from a chat, whatever the platform.
struct ChatCommand {
    platform: &'static str,
    user_id: String,
    user_name: Option<String>,
    channel_id: String,
    channel_name: Option<String>,
    text: String,
    /// Where answers go: squall's own reply address, kept as the execution's
    /// `source_context`.
    context: Value,
}

fn chat_of(state: &AppState) -> Result<&Arc<Chat>, ApiError> {
    state
        .engine
        .chat
        .get()
        .ok_or_else(|| ApiError::not_found("chatops is not configured (settings file: chatops:)"))
}

fn unauthorized(e: impl std::fmt::Display) -> ApiError {
    ApiError::new(StatusCode::UNAUTHORIZED, e.to_string())
}

fn header<'a>(headers: &'a HeaderMap, name: &str) -> Option<&'a str> {
    headers.get(name).and_then(|v| v.to_str().ok())
}

fn now_unix() -> i64 {
    chrono::Utc::now().timestamp()
}

/// Slack's signature and timestamp; `Ok(false)` for a signature seen before (a replay inside
/// the window).
fn verify_slack(chat: &Chat, headers: &HeaderMap, body: &[u8]) -> Result<bool, ApiError> {
    let Some(settings) = &chat.settings.slack else {
        return Err(ApiError::not_found("chatops.slack is not configured"));
    };
    let signature = header(headers, "x-slack-signature");
    slack::verify(
        &settings.signing_secret,
        header(headers, "x-slack-request-timestamp"),
        signature,
        body,
        now_unix(),
    )
    .map_err(unauthorized)?;
    let fresh = match chat.signatures.lock() {
        Ok(mut seen) => seen.first_time(signature.unwrap_or_default(), now_unix(), REPLAY_WINDOW),
        Err(p) => {
            p.into_inner()
                .first_time(signature.unwrap_or_default(), now_unix(), REPLAY_WINDOW)
        }
    };
    Ok(fresh)
}

/// The command a slash command stands for: its text when it is the generic one
/// (`/squall cdos 1`), else its name without the slash, then its text (`/cdos 1`).
fn slash_text(command: &str, text: &str, generic: &str) -> String {
    if command.trim() == generic.trim() {
        text.trim().to_string()
    } else {
        format!("{} {}", command.trim().trim_start_matches('/'), text.trim())
            .trim()
            .to_string()
    }
}

/// `POST /api/v1/chatops/slack/commands`: a slash command, answered in the channel at once.
pub(super) async fn slack_command(
    State(state): State<AppState>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let chat = match chat_of(&state) {
        Ok(c) => c.clone(),
        Err(e) => return e.into_response(),
    };
    match verify_slack(&chat, &headers, &body) {
        Err(e) => return e.into_response(),
        Ok(false) => {
            return unauthorized("this signed request was already received: a replay is refused")
                .into_response()
        }
        Ok(true) => {}
    }
    let cmd = match slack::parse_slash_command(&body) {
        Ok(c) => c,
        Err(e) => return ApiError::bad_request(e.to_string()).into_response(),
    };
    let generic = chat
        .settings
        .slack
        .as_ref()
        .map(|s| s.slash_command.clone())
        .unwrap_or_default();
    // The text comes unformatted (`squall_chat` undoes Slack's escapes).
    let text = slash_text(&cmd.command, &cmd.text, &generic);
    let command = ChatCommand {
        platform: "slack",
        context: json!({
            "platform": "slack",
            "team_id": cmd.team_id,
            "channel_id": cmd.channel_id,
            "response_url": cmd.response_url,
        }),
        user_id: cmd.user_id,
        user_name: Some(cmd.user_name).filter(|n| !n.is_empty()),
        channel_id: cmd.channel_id,
        channel_name: Some(cmd.channel_name).filter(|n| !n.is_empty()),
        text,
    };
    match take_command(&state, &chat, command).await {
        Some(reply) => Json(slack::command_response(&reply, true)).into_response(),
        None => StatusCode::OK.into_response(),
    }
}

/// `POST /api/v1/chatops/slack/events`: the Events API. Answered 200 at once (Slack waits 3
/// seconds); the acknowledgement is posted with `chat.postMessage`.
pub(super) async fn slack_events(
    State(state): State<AppState>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let chat = match chat_of(&state) {
        Ok(c) => c.clone(),
        Err(e) => return e.into_response(),
    };
    match verify_slack(&chat, &headers, &body) {
        Err(e) => return e.into_response(),
        // The same event, already taken (an event runs once; see event ids below).
        Ok(false) => return StatusCode::OK.into_response(),
        Ok(true) => {}
    }
    let prefix = chat
        .settings
        .slack
        .as_ref()
        .map(|s| s.prefix.clone())
        .filter(|p| !p.is_empty());
    let event = match slack::parse_event(&body, prefix.as_deref()) {
        Ok(e) => e,
        Err(e) => return ApiError::bad_request(e.to_string()).into_response(),
    };
    let ev = match event {
        slack::Event::UrlVerification { challenge } => {
            return Json(json!({ "challenge": challenge })).into_response()
        }
        slack::Event::Ignored(why) => {
            tracing::debug!(reason = %why, "slack event ignored");
            return StatusCode::OK.into_response();
        }
        slack::Event::Command(ev) => ev,
    };
    // Slack sends an event again when it is unsure it arrived: it runs once.
    if let Some(id) = &ev.event_id {
        let first = match chat.events.lock() {
            Ok(mut seen) => seen.first_time(id, now_unix(), 3600),
            Err(p) => p.into_inner().first_time(id, now_unix(), 3600),
        };
        if !first {
            return StatusCode::OK.into_response();
        }
    }
    let command = ChatCommand {
        platform: "slack",
        context: json!({
            "platform": "slack",
            "team_id": ev.team_id,
            "channel_id": ev.channel,
            "thread_ts": ev.thread_ts,
        }),
        user_id: ev.user,
        user_name: None,
        channel_id: ev.channel.clone(),
        channel_name: None,
        text: ev.text,
    };
    let target = Target {
        platform: Some("slack".into()),
        channel_name: None,
        channel: Some(ev.channel),
        thread_ts: ev.thread_ts,
        response_url: None,
    };
    tokio::spawn(async move {
        if let Some(reply) = take_command(&state, &chat, command).await {
            if let Err(e) = chat.post(&target, &reply).await {
                tracing::warn!(error = %e, "cannot post a chat answer to Slack");
            }
        }
    });
    StatusCode::OK.into_response()
}

/// `POST /api/v1/chatops/mattermost`: an outgoing webhook or a slash command, answered in the
/// response (Mattermost posts it in the channel).
pub(super) async fn mattermost_command(
    State(state): State<AppState>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let chat = match chat_of(&state) {
        Ok(c) => c.clone(),
        Err(e) => return e.into_response(),
    };
    let Some(settings) = chat.settings.mattermost.clone() else {
        return ApiError::not_found("chatops.mattermost is not configured").into_response();
    };
    let req = match mattermost::parse_request(header(&headers, "content-type"), &body) {
        Ok(r) => r,
        Err(e) => return ApiError::bad_request(e.to_string()).into_response(),
    };
    if let Err(e) = mattermost::check_token(&settings.tokens, &req.token) {
        return unauthorized(e).into_response();
    }
    let text = match (&req.kind, &req.command) {
        (mattermost::Kind::SlashCommand, Some(c)) => {
            slash_text(c, &req.text, &settings.slash_command)
        }
        _ => req.text.trim().to_string(),
    };
    let command = ChatCommand {
        platform: "mattermost",
        context: json!({
            "platform": "mattermost",
            "team_id": req.team_id,
            "channel_id": req.channel_id,
            "channel": req.channel_name,
            "response_url": req.response_url,
        }),
        user_id: req.user_id,
        user_name: req.user_name,
        channel_id: req.channel_id,
        channel_name: req.channel_name.clone(),
        text,
    };
    match take_command(&state, &chat, command).await {
        Some(reply) => Json(mattermost::response(&reply, true)).into_response(),
        None => StatusCode::OK.into_response(),
    }
}

/// Maps the user, matches the command and requests its execution: the acknowledgement, or
/// what went wrong, as the text to answer (`None`: the alias acknowledges nothing).
async fn take_command(state: &AppState, chat: &Chat, c: ChatCommand) -> Option<String> {
    let users = match c.platform {
        "slack" => chat.settings.slack.as_ref().map(|s| &s.users),
        _ => chat.settings.mattermost.as_ref().map(|m| &m.users),
    };
    let empty = Default::default();
    let user = match squall_user(
        users.unwrap_or(&empty),
        chat.settings.default_user.as_deref(),
        c.platform,
        &c.user_id,
        c.user_name.as_deref(),
    ) {
        Ok(u) => u,
        Err(why) => return Some(why),
    };
    let command = c.text.trim();
    if command.is_empty() {
        return Some(no_match(state, command));
    }
    let (name, format) = match match_one(state, command) {
        Ok(m) => m,
        Err(why) if why.contains("matched no patterns") => {
            if let Some((id, response)) = inquiry_response(command) {
                return Some(respond(state, &id, response, &user).await);
            }
            return Some(no_match(state, command));
        }
        Err(why) => {
            return Some(format!(
                "Sorry, {why}: say it so that only one command takes it."
            ))
        }
    };
    let run = AliasRun {
        name: name.clone(),
        format,
        command: command.to_string(),
        known_as: [
            Some(user.clone()),
            Some(c.user_id.clone()),
            c.user_name.clone(),
        ]
        .into_iter()
        .flatten()
        .collect(),
        user,
        channels: [Some(c.channel_id.clone()), c.channel_name.clone()]
            .into_iter()
            .flatten()
            .collect(),
        api_user: c.user_name.clone().or(Some(c.user_id.clone())),
        source_channel: c.channel_name.clone().or(Some(c.channel_id.clone())),
        source: Some(c.platform.to_string()),
        source_context: Some(c.context),
        route: "chatops".to_string(),
    };
    match run_alias(state, run).await {
        Ok(result) => {
            let loaded = state.engine.loaded();
            let alias = loaded.catalog.alias(&name)?;
            answer::ack_message(
                &alias.alias,
                result["message"].as_str().map(str::to_string),
                &result["execution"],
            )
        }
        Err(e) => Some(refusal(command, &e)),
    }
}

/// `respond <id> <response>` (or `st2 respond to inquiry <id> with <response>`): the inquiry
/// and the response, a JSON object or `key=value` pairs read as YAML scalars
/// (`continue=true count=3 note="in 5 min"`). `Err` says what is wrong with the response.
fn inquiry_response(command: &str) -> Option<(String, Result<Value, String>)> {
    let rest = command.trim();
    let rest = rest
        .strip_prefix("st2 ")
        .map(str::trim_start)
        .unwrap_or(rest);
    let rest = rest.strip_prefix("respond ")?.trim_start();
    let rest = rest
        .strip_prefix("to inquiry ")
        .map(str::trim_start)
        .unwrap_or(rest);
    let (id, text) = rest.split_once(char::is_whitespace)?;
    let text = text.trim_start();
    let text = text.strip_prefix("with ").unwrap_or(text).trim();
    if text.is_empty() {
        return None;
    }
    let id = id.to_string();
    if text.starts_with('{') {
        let parsed = serde_json::from_str::<Value>(text)
            .map_err(|e| format!("the response is not a JSON object ({e})"));
        return Some((id, parsed));
    }
    let mut map = Map::new();
    for pair in shell_words(text) {
        let Some((key, value)) = pair.split_once('=') else {
            return Some((
                id,
                Err(format!("'{pair}' is not key=value (or give a JSON object)")),
            ));
        };
        let value = serde_yaml::from_str::<Value>(value).unwrap_or(Value::String(value.into()));
        map.insert(key.to_string(), value);
    }
    Some((id, Ok(Value::Object(map))))
}

/// Words split at spaces, double quotes keeping spaces in (`note="in 5 min"`).
fn shell_words(text: &str) -> Vec<String> {
    let mut words = Vec::new();
    let mut word = String::new();
    let mut quoted = false;
    for c in text.chars() {
        match c {
            '"' => quoted = !quoted,
            c if c.is_whitespace() && !quoted => {
                if !word.is_empty() {
                    words.push(std::mem::take(&mut word));
                }
            }
            c => word.push(c),
        }
    }
    if !word.is_empty() {
        words.push(word);
    }
    words
}

/// Answers an inquiry from chat as `user`: what became of it, in a sentence.
async fn respond(
    state: &AppState,
    id: &str,
    response: Result<Value, String>,
    user: &str,
) -> String {
    let response = match response {
        Ok(r) => r,
        Err(why) => return format!("Sorry, your response to inquiry {id} was not sent: {why}."),
    };
    let engine = state.engine.clone();
    let (inquiry, user) = (id.to_string(), user.to_string());
    let answered =
        tokio::task::spawn_blocking(move || engine.respond_inquiry(&inquiry, response, &user))
            .await;
    match answered {
        Ok(Ok(response)) => format!("Your response to inquiry {id} was accepted: {response}"),
        Ok(Err(e)) => format!("Sorry, your response to inquiry {id} was not accepted: {e}."),
        Err(e) => format!("Sorry, your response to inquiry {id} was not recorded: {e}."),
    }
}

/// The help for a command no alias takes: the closest aliases' formats.
fn no_match(state: &AppState, command: &str) -> String {
    let loaded = state.engine.loaded();
    let aliases: Vec<(String, &squall_rules::Alias)> = loaded
        .catalog
        .aliases()
        .map(|a| (a.reference.clone(), &a.alias))
        .collect();
    let help = answer::closest_help(&aliases, command, 8);
    let mut text = format!("Sorry, no command matches \"{command}\".");
    if !help.is_empty() {
        text.push_str(" Try one of:\n");
        text.push_str(&help.join("\n"));
    }
    text
}

/// An alias execution refused: why, with each bad parameter and its reason.
fn refusal(command: &str, e: &ApiError) -> String {
    let mut text = format!("Sorry, \"{command}\" was not run: {}", e.error);
    if let Some(items) = e.detail.as_array() {
        for item in items {
            let line = match (item["parameter"].as_str(), item["message"].as_str()) {
                (Some(p), Some(m)) if !m.contains(p) => format!("{p}: {m}"),
                (_, Some(m)) => m.to_string(),
                _ => item.to_string(),
            };
            text.push_str(&format!("\n- {line}"));
        }
    }
    text
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn inquiry_responses_are_read_in_both_wordings() {
        let (id, r) = inquiry_response("respond 01J9 continue=true count=3 note=\"in 5 min\"")
            .expect("a response");
        assert_eq!(id, "01J9");
        assert_eq!(
            r,
            Ok(json!({"continue": true, "count": 3, "note": "in 5 min"}))
        );
        let (id, r) = inquiry_response("st2 respond to inquiry 01J9 with {\"continue\": false}")
            .expect("st2's");
        assert_eq!((id.as_str(), r), ("01J9", Ok(json!({"continue": false}))));
        let (_, r) = inquiry_response("respond 01J9 yes").expect("a response");
        assert!(r.unwrap_err().contains("'yes' is not key=value"));
        let (_, r) = inquiry_response("respond 01J9 {continue}").expect("a response");
        assert!(r.unwrap_err().contains("not a JSON object"));
        assert_eq!(inquiry_response("respond 01J9"), None);
        assert_eq!(inquiry_response("hello ops"), None);
    }
}
