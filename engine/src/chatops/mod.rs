//! ChatOps built in: the `chatops:` settings (Slack, Mattermost, who may run what), and the
//! posting of answers back to the chat a command came from (or to a named channel).
//!
//! What chat platforms send and expect is `squall_chat`'s (pure); the HTTP handlers that take
//! commands are in `api/chat.rs`; what an answer says is in `answer`. This module owns the one
//! HTTP client that posts, and never decides what a command runs.

pub mod answer;

use std::collections::{HashMap, VecDeque};
use std::sync::Mutex;
use std::time::Duration;

use serde::Deserialize;
use serde_json::{json, Map, Value};

/// The `chatops:` section of the settings file.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ChatSettings {
    #[serde(default)]
    pub slack: Option<SlackSettings>,
    #[serde(default)]
    pub mattermost: Option<MattermostSettings>,
    /// The squall user a chat user nobody mapped runs commands as; without it such users are
    /// refused.
    #[serde(default)]
    pub default_user: Option<String>,
}

/// Slack: slash commands and the Events API, signed with the app's signing secret.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SlackSettings {
    pub signing_secret: String,
    /// A bot token (`xoxb-...`): answers to Events API messages, answers that outlive a slash
    /// command's response url, and messages to named channels go through `chat.postMessage`.
    #[serde(default)]
    pub bot_token: Option<String>,
    #[serde(default = "slack_api")]
    pub api_url: String,
    /// Messages starting with this are commands (besides mentions of the bot); empty: only
    /// mentions.
    #[serde(default = "bang")]
    pub prefix: String,
    /// The slash command whose text is the whole command (`/squall cdos 1` runs `cdos 1`);
    /// any other slash command sent here is part of its command (`/cdos 1` runs `cdos 1`).
    #[serde(default = "squall_command")]
    pub slash_command: String,
    /// Slack user ids or names -> squall users.
    #[serde(default)]
    pub users: HashMap<String, String>,
}

/// Mattermost: outgoing webhooks and slash commands, each sent with a token.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MattermostSettings {
    /// The tokens of the outgoing webhooks and slash commands that may send commands.
    pub tokens: Vec<String>,
    /// An incoming webhook's URL: answers to outgoing webhooks and messages to named channels.
    #[serde(default)]
    pub incoming_webhook: Option<String>,
    /// The name answers are posted under (when the incoming webhook may override it).
    #[serde(default)]
    pub username: Option<String>,
    /// The slash command whose text is the whole command.
    #[serde(default = "squall_command")]
    pub slash_command: String,
    /// Mattermost user ids or names -> squall users.
    #[serde(default)]
    pub users: HashMap<String, String>,
}

fn slack_api() -> String {
    "https://slack.com/api".to_string()
}

fn bang() -> String {
    "!".to_string()
}

fn squall_command() -> String {
    "/squall".to_string()
}

impl ChatSettings {
    /// Problems that must stop the start (an empty secret would accept anyone).
    pub fn check(&self) -> Result<(), String> {
        if let Some(s) = &self.slack {
            if s.signing_secret.trim().is_empty() {
                return Err("chatops.slack.signing_secret is empty: every request would be refused (or, worse, forged); set the app's signing secret".into());
            }
            if s.bot_token.as_deref().is_some_and(|t| t.trim().is_empty()) {
                return Err("chatops.slack.bot_token is empty: leave it out or set the bot's token (xoxb-...)".into());
            }
            reqwest::Url::parse(&s.api_url)
                .map_err(|e| format!("chatops.slack.api_url {:?}: {e}", s.api_url))?;
        }
        if let Some(m) = &self.mattermost {
            if m.tokens.is_empty() || m.tokens.iter().any(|t| t.trim().is_empty()) {
                return Err("chatops.mattermost.tokens must list the (non-empty) tokens of the outgoing webhooks and slash commands".into());
            }
            if let Some(url) = &m.incoming_webhook {
                reqwest::Url::parse(url)
                    .map_err(|e| format!("chatops.mattermost.incoming_webhook {url:?}: {e}"))?;
            }
        }
        Ok(())
    }
}

/// Which squall user a chat user is, or why they may not run commands.
pub fn squall_user(
    users: &HashMap<String, String>,
    default_user: Option<&str>,
    platform: &str,
    user_id: &str,
    user_name: Option<&str>,
) -> Result<String, String> {
    users
        .get(user_id)
        .or_else(|| user_name.and_then(|n| users.get(n)))
        .cloned()
        .or_else(|| default_user.map(str::to_string))
        .ok_or_else(|| {
            let name = user_name.map(|n| format!(" ({n})")).unwrap_or_default();
            format!("Sorry, {platform} user {user_id}{name} may not run commands here: no squall user is mapped to them (chatops.{platform}.users) and there is no default_user.")
        })
}

/// Signatures seen in the last five minutes (Slack's replay window): a request sent twice is
/// refused the second time. Bounded: past `MAX_REMEMBERED` the oldest are forgotten.
#[derive(Default)]
pub struct SeenRecently {
    order: VecDeque<(i64, String)>,
    seen: std::collections::HashSet<String>,
}

const MAX_REMEMBERED: usize = 20_000;

impl SeenRecently {
    /// Remembers `key` at `now`; false when it was already seen within `window` seconds.
    pub fn first_time(&mut self, key: &str, now: i64, window: i64) -> bool {
        while let Some((at, k)) = self.order.front() {
            if now - *at > window || self.order.len() >= MAX_REMEMBERED {
                self.seen.remove(k);
                self.order.pop_front();
            } else {
                break;
            }
        }
        if !self.seen.insert(key.to_string()) {
            return false;
        }
        self.order.push_back((now, key.to_string()));
        true
    }
}

/// Squall's chat side: its settings, the client that posts, and the replay guards.
pub struct Chat {
    pub settings: ChatSettings,
    http: reqwest::Client,
    /// Slack signatures already taken (replays are refused).
    pub signatures: Mutex<SeenRecently>,
    /// Slack Events API event ids already taken (Slack delivers again when unsure).
    pub events: Mutex<SeenRecently>,
}

/// Where an answer goes.
#[derive(Debug, Clone, PartialEq)]
pub struct Target {
    pub platform: Option<String>,
    /// The channel's id (Slack posts by id), else its name.
    pub channel: Option<String>,
    /// The channel's name (Mattermost's incoming webhooks take names).
    pub channel_name: Option<String>,
    pub thread_ts: Option<String>,
    pub response_url: Option<String>,
}

impl Target {
    /// From an announcement's `channel` and `context` (squall's own reply address, when the
    /// command came through squall's chat endpoints).
    pub fn from_announcement(channel: Option<&str>, context: Option<&Value>) -> Target {
        let field = |k: &str| {
            context
                .and_then(|c| c.get(k))
                .and_then(Value::as_str)
                .filter(|s| !s.is_empty())
                .map(str::to_string)
        };
        Target {
            platform: field("platform"),
            channel: field("channel_id")
                .or_else(|| channel.filter(|c| !c.is_empty()).map(str::to_string)),
            channel_name: field("channel")
                .or_else(|| channel.filter(|c| !c.is_empty()).map(str::to_string)),
            thread_ts: field("thread_ts"),
            response_url: field("response_url"),
        }
    }
}

impl Chat {
    pub fn new(settings: ChatSettings) -> Result<Chat, String> {
        settings.check()?;
        let http = reqwest::Client::builder()
            .timeout(Duration::from_secs(10))
            .build()
            .map_err(|e| format!("cannot build the chat HTTP client: {e}"))?;
        Ok(Chat {
            settings,
            http,
            signatures: Mutex::new(SeenRecently::default()),
            events: Mutex::new(SeenRecently::default()),
        })
    }

    /// Posts `text` where `target` says. `Ok(None)`: no chat of squall's own is configured for
    /// it (the announcement on the stream is the answer, for hubot). `Ok(Some(how))` says
    /// where it went.
    pub async fn post(&self, target: &Target, text: &str) -> Result<Option<Value>, String> {
        let platform = target.platform.as_deref().or(
            match (&self.settings.slack, &self.settings.mattermost) {
                (Some(s), _) if s.bot_token.is_some() => Some("slack"),
                (_, Some(m)) if m.incoming_webhook.is_some() => Some("mattermost"),
                _ => None,
            },
        );
        match platform {
            Some("slack") => self.post_slack(target, text).await.map(Some),
            Some("mattermost") => self.post_mattermost(target, text).await.map(Some),
            Some(other) => Err(format!(
                "chat platform {other:?} is not one squall posts to"
            )),
            None => Ok(None),
        }
    }

    async fn post_slack(&self, target: &Target, text: &str) -> Result<Value, String> {
        let settings = self
            .settings
            .slack
            .as_ref()
            .ok_or("chatops.slack is not configured")?;
        let text = squall_chat::slack::escape(text);
        let mut url_error = None;
        if let Some(url) = &target.response_url {
            match self
                .send(url, None, &squall_chat::slack::response_url_body(&text))
                .await
            {
                Ok(_) => return Ok(json!({"platform": "slack", "via": "response_url"})),
                // A response url takes 5 answers within 30 minutes: past that, the bot posts.
                Err(e) => url_error = Some(e),
            }
        }
        let (Some(token), Some(channel)) = (&settings.bot_token, &target.channel) else {
            return Err(url_error.unwrap_or_else(|| {
                "no way to post to Slack: chatops.slack.bot_token is not set (and there is no response url)".to_string()
            }));
        };
        let url = format!(
            "{}/chat.postMessage",
            settings.api_url.trim_end_matches('/')
        );
        let body =
            squall_chat::slack::post_message_body(channel, &text, target.thread_ts.as_deref());
        let answer = self.send(&url, Some(token), &body).await?;
        squall_chat::slack::check_api_answer(&answer)
            .map_err(|e| format!("Slack chat.postMessage to {channel}: {e}"))?;
        Ok(json!({"platform": "slack", "via": "chat.postMessage", "channel": channel}))
    }

    async fn post_mattermost(&self, target: &Target, text: &str) -> Result<Value, String> {
        let settings = self
            .settings
            .mattermost
            .as_ref()
            .ok_or("chatops.mattermost is not configured")?;
        if let Some(url) = &target.response_url {
            let body = squall_chat::mattermost::post_body(text, None, settings.username.as_deref());
            if self.send(url, None, &body).await.is_ok() {
                return Ok(json!({"platform": "mattermost", "via": "response_url"}));
            }
        }
        let url = settings.incoming_webhook.as_ref().ok_or(
            "no way to post to Mattermost: chatops.mattermost.incoming_webhook is not set",
        )?;
        let body = squall_chat::mattermost::post_body(
            text,
            target.channel_name.as_deref(),
            settings.username.as_deref(),
        );
        self.send(url, None, &body).await?;
        Ok(
            json!({"platform": "mattermost", "via": "incoming_webhook", "channel": target.channel_name}),
        )
    }

    /// POSTs JSON; the answer's body when it is a 2xx.
    async fn send(&self, url: &str, token: Option<&str>, body: &Value) -> Result<Vec<u8>, String> {
        let mut req = self.http.post(url).json(body);
        if let Some(t) = token {
            req = req.bearer_auth(t);
        }
        let response = req
            .send()
            .await
            .map_err(|e| format!("POST {}: {e}", redact(url)))?;
        let status = response.status();
        let bytes = response
            .bytes()
            .await
            .map_err(|e| format!("POST {}: {e}", redact(url)))?;
        if !status.is_success() {
            return Err(format!(
                "POST {} answered {status}: {}",
                redact(url),
                String::from_utf8_lossy(&bytes[..bytes.len().min(300)])
            ));
        }
        Ok(bytes.to_vec())
    }
}

/// A URL as logs and results show it: response urls and webhooks are secrets in their path.
fn redact(url: &str) -> String {
    match reqwest::Url::parse(url) {
        Ok(u) => format!("{}://{}/…", u.scheme(), u.host_str().unwrap_or("")),
        Err(_) => "(a url)".to_string(),
    }
}

/// The announcement an `announcement` runner action makes: st2's stream event data.
pub fn announcement_data(params: &Map<String, Value>) -> Value {
    let get = |k: &str| params.get(k).cloned().unwrap_or(Value::Null);
    json!({
        "message": get("message"),
        "channel": get("channel"),
        "user": get("user"),
        "whisper": params.get("whisper").cloned().unwrap_or(Value::Bool(false)),
        "context": get("context"),
        "extra": get("extra"),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn replays_are_seen_within_the_window_only() {
        let mut seen = SeenRecently::default();
        assert!(seen.first_time("a", 100, 300));
        assert!(!seen.first_time("a", 200, 300));
        assert!(seen.first_time("b", 200, 300));
        // Past the window the first is forgotten (its timestamp is refused by then anyway).
        assert!(seen.first_time("a", 401, 300));
    }

    #[test]
    fn users_map_by_id_then_name_then_default() {
        let users: HashMap<String, String> = [
            ("U1".to_string(), "alice".to_string()),
            ("bob".to_string(), "robert".to_string()),
        ]
        .into();
        assert_eq!(
            squall_user(&users, None, "slack", "U1", Some("x")).as_deref(),
            Ok("alice")
        );
        assert_eq!(
            squall_user(&users, None, "slack", "U2", Some("bob")).as_deref(),
            Ok("robert")
        );
        assert_eq!(
            squall_user(&users, Some("chat"), "slack", "U3", None).as_deref(),
            Ok("chat")
        );
        let refused = squall_user(&users, None, "slack", "U3", Some("eve")).unwrap_err();
        assert!(refused.contains("U3 (eve)"), "{refused}");
    }

    #[test]
    fn targets_prefer_squalls_own_reply_address() {
        let ctx = json!({"platform": "slack", "channel_id": "C1", "response_url": "http://x/r"});
        let t = Target::from_announcement(Some("#ops"), Some(&ctx));
        assert_eq!(t.channel.as_deref(), Some("C1"));
        assert_eq!(t.response_url.as_deref(), Some("http://x/r"));
        let t = Target::from_announcement(Some("#ops"), None);
        assert_eq!((t.platform, t.channel.as_deref()), (None, Some("#ops")));
    }
}
