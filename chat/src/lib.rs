//! squall-chat: what Slack and Mattermost send squall and what squall answers them, in each
//! platform's documented format. Pure: no I/O, no clock (callers pass the time), no engine.
//!
//! Authenticity is checked here (`slack::verify`, `mattermost::check_token`), but never
//! decided by the caller's configuration beyond the secrets it passes in: this crate must never
//! read the environment, a file or the network, and must never panic on what a request holds.

mod fields;
pub mod mattermost;
mod secret;
pub mod slack;
mod text;

/// Why a chat request was refused or a platform's answer reported a failure. Each message says
/// what was wrong (which header or field, what could not be parsed) so that an operator reading
/// a log line can fix the platform's configuration without a debugger.
#[derive(Debug, thiserror::Error, PartialEq)]
pub enum ChatError {
    /// A header the platform always sends is absent: the request did not come from it, or a
    /// proxy dropped the header.
    #[error("missing header {0}")]
    MissingHeader(&'static str),
    /// The request signature does not match the body and the configured signing secret.
    #[error("request signature does not match (wrong signing secret, or the body was altered)")]
    BadSignature,
    /// The signed timestamp is too far from now: a replayed request, or a clock that is off.
    /// Positive ages are in the past, negative ones in the future.
    #[error("request timestamp is {age_seconds} s away from now (at most 300 s is accepted)")]
    StaleTimestamp { age_seconds: i64 },
    /// The timestamp header is not a Unix time in whole seconds.
    #[error("request timestamp {0:?} is not a Unix time in seconds")]
    BadTimestamp(String),
    /// The request's token is none of the configured ones.
    #[error("request token matches no configured token")]
    BadToken,
    /// The body cannot be read: not JSON, not form-encoded, or a required field is missing.
    #[error("bad request body: {0}")]
    BadBody(String),
    /// The platform answered a call with a failure of its own (Slack's `{"ok": false, "error"}`).
    #[error("chat platform refused the call: {0}")]
    Platform(String),
}
