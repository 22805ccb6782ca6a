//! The gRPC edge: what every RPC's answer passes through before it leaves the node, so the
//! codes a client sees are fjord's, not tonic's defaults. [`crate::error`] maps fjord's own
//! errors; this layer covers the three answers tonic makes itself:
//!
//! - **A deadline that passes.** tonic answers a request whose `grpc-timeout` ran out with
//!   CANCELLED "Timeout expired", which reads as "not done"; but the handler was dropped at
//!   an arbitrary point, perhaps after a produce or a topic was proposed. The edge runs the
//!   handler under the same deadline less [`DEADLINE_MARGIN`], so it always fires first (tonic
//!   polls the handler before its own timer), and answers DEADLINE_EXCEEDED: the outcome is
//!   unknown, as `docs/guarantees.md` promises.
//! - **A body that does not decode** (tonic: INTERNAL): INVALID_ARGUMENT.
//! - **A message over the size limit** (tonic: OUT_OF_RANGE, which fjord uses for offsets):
//!   RESOURCE_EXHAUSTED, naming the limit.
//!
//! tonic's own texts are matched to recognise the last two (its `Status` has no kind for
//! them); the tests pin them, so an upgrade that changes them fails loudly.

use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;

use tonic::{Code, Status};

/// How much earlier than the client's deadline the handler is stopped (so the edge's answer,
/// not tonic's CANCELLED, goes out).
pub const DEADLINE_MARGIN: Duration = Duration::from_millis(1);

/// The layer, for `tonic::transport::Server::builder().layer(..)`.
#[derive(Debug, Clone, Copy, Default)]
pub struct EdgeLayer;

impl<S> tower::Layer<S> for EdgeLayer {
    type Service = Edge<S>;

    fn layer(&self, inner: S) -> Edge<S> {
        Edge { inner }
    }
}

/// See the module doc.
#[derive(Debug, Clone)]
pub struct Edge<S> {
    inner: S,
}

impl<S, ReqBody, ResBody> tower::Service<http::Request<ReqBody>> for Edge<S>
where
    S: tower::Service<http::Request<ReqBody>, Response = http::Response<ResBody>>,
    S::Future: Send + 'static,
    S::Error: Send + 'static,
    ResBody: Default + Send + 'static,
{
    type Response = http::Response<ResBody>;
    type Error = S::Error;
    type Future = Pin<Box<dyn Future<Output = Result<Self::Response, S::Error>> + Send>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), S::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, req: http::Request<ReqBody>) -> Self::Future {
        let deadline = req
            .headers()
            .get("grpc-timeout")
            .and_then(|v| v.to_str().ok())
            .and_then(parse_grpc_timeout);
        let answer = self.inner.call(req);
        Box::pin(async move {
            let mut response = match deadline {
                None => answer.await?,
                Some(d) => {
                    match tokio::time::timeout(d.saturating_sub(DEADLINE_MARGIN), answer).await {
                        Ok(r) => r?,
                        Err(_) => return Ok(deadline_passed(d).into_http()),
                    }
                }
            };
            if let Some(status) = Status::from_header_map(response.headers())
                && let Some(better) = recode(&status)
            {
                let headers = response.headers_mut();
                headers.remove("grpc-status");
                headers.remove("grpc-message");
                headers.remove("grpc-status-details-bin");
                if better.add_header(headers).is_err() {
                    return Ok(Status::internal("could not encode an error").into_http());
                }
            }
            Ok(response)
        })
    }
}

/// The answer to a request whose deadline passed before it was done.
fn deadline_passed(d: Duration) -> Status {
    Status::deadline_exceeded(format!(
        "the request's deadline ({} ms) passed before it was done: its outcome is unknown \
         (a write may or may not have been applied; an idempotent retry is safe)",
        d.as_millis()
    ))
}

/// fjord's code for one of tonic's own answers, if it makes one (see the module doc).
pub fn recode(status: &Status) -> Option<Status> {
    let message = status.message();
    match status.code() {
        Code::Internal if message.starts_with("failed to decode Protobuf message") => {
            Some(Status::invalid_argument(format!(
                "the request body does not decode as this RPC's message ({message}); a client \
                 must be generated from proto/fjord.proto"
            )))
        }
        Code::OutOfRange if message.starts_with("Error, decoded message length too large") => {
            Some(Status::resource_exhausted(format!(
                "the request message is too large ({}); the limits are in proto/fjord.proto",
                message.trim_start_matches("Error, decoded message length too large: ")
            )))
        }
        _ => None,
    }
}

/// The `grpc-timeout` header's value: at most 8 digits and a unit (H, M, S, m, u, n).
pub fn parse_grpc_timeout(value: &str) -> Option<Duration> {
    if value.len() < 2 || value.len() > 9 {
        return None;
    }
    let (digits, unit) = value.split_at(value.len() - 1);
    if !digits.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    let n: u64 = digits.parse().ok()?;
    Some(match unit {
        "H" => Duration::from_secs(n * 3600),
        "M" => Duration::from_secs(n * 60),
        "S" => Duration::from_secs(n),
        "m" => Duration::from_millis(n),
        "u" => Duration::from_micros(n),
        "n" => Duration::from_nanos(n),
        _ => return None,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn grpc_timeouts_parse_as_the_spec_writes_them() {
        assert_eq!(parse_grpc_timeout("1m"), Some(Duration::from_millis(1)));
        assert_eq!(parse_grpc_timeout("2S"), Some(Duration::from_secs(2)));
        assert_eq!(
            parse_grpc_timeout("99999999u"),
            Some(Duration::from_micros(99_999_999))
        );
        assert_eq!(parse_grpc_timeout("1H"), Some(Duration::from_secs(3600)));
        assert_eq!(parse_grpc_timeout("m"), None);
        assert_eq!(parse_grpc_timeout("123456789m"), None, "over 8 digits");
        assert_eq!(parse_grpc_timeout("-1m"), None);
        assert_eq!(parse_grpc_timeout("1x"), None);
    }

    #[test]
    fn tonic_codec_answers_get_fjord_codes_and_others_are_left_alone() {
        // The texts tonic and prost use (pinned: an upgrade that changes them fails here).
        let err =
            <fjord_proto::v1::FetchRequest as prost::Message>::decode(&[0xffu8, 0xff, 0xff][..])
                .unwrap_err();
        let decode = Status::internal(err.to_string());
        assert_eq!(recode(&decode).unwrap().code(), Code::InvalidArgument);
        let big = Status::out_of_range(
            "Error, decoded message length too large: found 9000000 bytes, the limit is: 5242880 bytes",
        );
        let r = recode(&big).unwrap();
        assert_eq!(r.code(), Code::ResourceExhausted);
        assert!(
            r.message()
                .contains("found 9000000 bytes, the limit is: 5242880 bytes")
        );
        assert!(recode(&Status::out_of_range("offset 9 is past the end")).is_none());
        assert!(recode(&Status::internal("a bug")).is_none());
    }
}
