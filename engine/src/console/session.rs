//! Console sessions: a login trades an API key for a random token kept here, sent back as an
//! HttpOnly, SameSite=Strict cookie; the key itself is never stored or put in a URL. Sessions
//! live in memory (a restart asks for the key again), expire, and are bounded in number.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use rand::RngCore;

/// The cookie's name.
pub const COOKIE: &str = "squall_session";
/// How long a session lasts.
pub const LIFETIME: Duration = Duration::from_secs(12 * 3600);
/// The most sessions kept; past it, the oldest go first.
const MAX_SESSIONS: usize = 10_000;

struct Session {
    user: String,
    expires: Instant,
}

#[derive(Default)]
pub struct Sessions {
    by_token: Mutex<HashMap<String, Session>>,
}

impl Sessions {
    /// A new session for `user`; its token.
    pub fn create(&self, user: &str) -> String {
        let mut raw = [0u8; 32];
        rand::rngs::OsRng.fill_bytes(&mut raw);
        let token: String = raw.iter().map(|b| format!("{b:02x}")).collect();
        let mut map = self.by_token.lock().unwrap_or_else(|p| p.into_inner());
        let now = Instant::now();
        map.retain(|_, s| s.expires > now);
        if map.len() >= MAX_SESSIONS {
            if let Some(oldest) = map
                .iter()
                .min_by_key(|(_, s)| s.expires)
                .map(|(t, _)| t.clone())
            {
                map.remove(&oldest);
            }
        }
        map.insert(
            token.clone(),
            Session {
                user: user.to_string(),
                expires: now + LIFETIME,
            },
        );
        token
    }

    /// The user of a live session.
    pub fn user(&self, token: &str) -> Option<String> {
        let map = self.by_token.lock().unwrap_or_else(|p| p.into_inner());
        map.get(token)
            .filter(|s| s.expires > Instant::now())
            .map(|s| s.user.clone())
    }

    pub fn end(&self, token: &str) {
        let mut map = self.by_token.lock().unwrap_or_else(|p| p.into_inner());
        map.remove(token);
    }
}

/// The session token a request's `Cookie` header carries.
pub fn token_of(headers: &axum::http::HeaderMap) -> Option<String> {
    headers
        .get_all(axum::http::header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .filter_map(|pair| pair.trim().split_once('='))
        .find(|(name, _)| *name == COOKIE)
        .map(|(_, value)| value.trim().to_string())
        .filter(|t| !t.is_empty())
}

/// Whether a request that changes something comes from the console's own pages: its `Origin`
/// (or, without one, its `Referer`) names the host the request was sent to.
pub fn same_origin(headers: &axum::http::HeaderMap) -> bool {
    let Some(host) = headers
        .get(axum::http::header::HOST)
        .and_then(|v| v.to_str().ok())
    else {
        return false;
    };
    let from = headers
        .get(axum::http::header::ORIGIN)
        .or_else(|| headers.get(axum::http::header::REFERER))
        .and_then(|v| v.to_str().ok());
    let Some(from) = from else {
        return false;
    };
    let rest = from
        .strip_prefix("http://")
        .or_else(|| from.strip_prefix("https://"))
        .unwrap_or("");
    let authority = rest.split('/').next().unwrap_or("");
    authority.eq_ignore_ascii_case(host)
}

#[cfg(test)]
mod tests {
    use super::*;
    use axum::http::{HeaderMap, HeaderValue};

    #[test]
    fn sessions_carry_their_user_until_ended() {
        let s = Sessions::default();
        let t = s.create("ops");
        assert_eq!(t.len(), 64);
        assert_eq!(s.user(&t).as_deref(), Some("ops"));
        assert_eq!(s.user("nope"), None);
        s.end(&t);
        assert_eq!(s.user(&t), None);
    }

    #[test]
    fn cookies_and_origins() {
        let mut h = HeaderMap::new();
        h.insert(
            "cookie",
            HeaderValue::from_static("a=1; squall_session=abc; b=2"),
        );
        assert_eq!(token_of(&h).as_deref(), Some("abc"));
        h.insert("host", HeaderValue::from_static("127.0.0.1:9101"));
        assert!(!same_origin(&h), "no origin: refused");
        h.insert("origin", HeaderValue::from_static("http://127.0.0.1:9101"));
        assert!(same_origin(&h));
        h.insert("origin", HeaderValue::from_static("http://evil.example"));
        assert!(!same_origin(&h));
        h.remove("origin");
        h.insert(
            "referer",
            HeaderValue::from_static("http://127.0.0.1:9101/executions?x=1"),
        );
        assert!(same_origin(&h));
    }
}
