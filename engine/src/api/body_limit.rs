//! Bodies over a limit are refused with a 413 the client can read.
//!
//! axum's `DefaultBodyLimit` stops reading a body at the limit and answers 413; hyper then
//! closes the connection with the rest of the body unread, and a client that sends its whole
//! body before it reads the answer (Python's urllib and requests do) gets a reset connection
//! instead of the 413. When the body's `Content-Length` already says it is over the limit, this
//! layer reads the body to its end and throws it away (up to [`DRAIN_AT_MOST`]; past that the
//! connection is closed as before), then answers 413 without running the handler. A body sent
//! in chunks, without a length, is still cut at the limit by `DefaultBodyLimit`.
//!
//! It must never pass a body over its limit to a handler, and never keep what it discards.

use axum::extract::Request;
use axum::http::{header, StatusCode};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use tokio_stream::StreamExt;

/// The most this layer reads of a body it refuses; a larger one is not worth the bandwidth.
pub(super) const DRAIN_AT_MOST: u64 = 64 * 1024 * 1024;

/// Answers 413 to a request whose declared length is over `limit`, once its body is read;
/// passes every other request on. Requests under `skip` are left to their own route's limit.
pub(super) async fn refuse_declared_over(
    limit: usize,
    skip: Option<&'static str>,
    req: Request,
    next: Next,
) -> Response {
    if skip.is_some_and(|prefix| req.uri().path().starts_with(prefix)) {
        return next.run(req).await;
    }
    let declared = req
        .headers()
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.trim().parse::<u64>().ok());
    let Some(declared) = declared.filter(|n| *n > limit as u64) else {
        return next.run(req).await;
    };
    // A client waiting for `100 Continue` has sent nothing yet: answer at once.
    let expects_continue = req
        .headers()
        .get(header::EXPECT)
        .is_some_and(|v| v.as_bytes().eq_ignore_ascii_case(b"100-continue"));
    if declared <= DRAIN_AT_MOST && !expects_continue {
        let mut body = req.into_body().into_data_stream();
        while let Some(chunk) = body.next().await {
            if chunk.is_err() {
                break;
            }
        }
    }
    StatusCode::PAYLOAD_TOO_LARGE.into_response()
}
