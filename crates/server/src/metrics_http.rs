//! The metrics endpoint (`--metrics-listen`): a minimal HTTP/1.1 responder on its own port,
//! answering `GET /metrics` with [`crate::metrics`] in Prometheus' text format.
//!
//! One request per connection (the answer closes it), which is what a scraper needs.
//! Bounded: [`MAX_METRICS_CONNECTIONS`] served at once (others wait in the accept backlog),
//! a request head of at most [`MAX_REQUEST_HEAD_BYTES`] read within [`REQUEST_TIMEOUT`],
//! an answer written within [`REQUEST_TIMEOUT`]. Answers: 200 with the metrics; 503 while
//! the node starts (its metrics do not exist yet); 404 for any other path; 405 for any other
//! method; 400 for a request that does not parse, is too large or too slow.

use std::sync::Arc;
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio_util::sync::CancellationToken;

use crate::NodeSlot;

/// Connections the endpoint serves at once, at most.
pub const MAX_METRICS_CONNECTIONS: usize = 16;
/// Bytes of a request's line and headers, at most.
pub const MAX_REQUEST_HEAD_BYTES: usize = 8 << 10;
/// How long reading a request's head, and writing its answer, may each take.
pub const REQUEST_TIMEOUT: Duration = Duration::from_secs(10);

/// The content type of Prometheus' text format.
const TEXT_FORMAT: &str = "text/plain; version=0.0.4; charset=utf-8";

/// Serves the metrics of the node in `slot` on `listener` until `cancel`.
pub async fn serve(listener: TcpListener, slot: NodeSlot, cancel: CancellationToken) {
    let permits = Arc::new(tokio::sync::Semaphore::new(MAX_METRICS_CONNECTIONS));
    loop {
        let Ok(permit) = permits.clone().acquire_owned().await else {
            return;
        };
        let conn = tokio::select! {
            conn = listener.accept() => conn,
            _ = cancel.cancelled() => return,
        };
        match conn {
            Ok((stream, _)) => {
                let slot = slot.clone();
                tokio::spawn(async move {
                    answer(stream, &slot).await;
                    drop(permit);
                });
            }
            Err(e) => {
                tracing::debug!(error = %e, "metrics endpoint: accept failed");
                // Out of file descriptors and the like: do not spin.
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        }
    }
}

/// What a request asks for.
#[derive(Debug, PartialEq, Eq)]
pub enum Asked {
    Metrics,
    NotFound,
    MethodNotAllowed,
    BadRequest,
}

/// Parses a request head (`GET /metrics HTTP/1.1` and headers); a query string is ignored.
pub fn parse(head: &[u8]) -> Asked {
    let Ok(text) = std::str::from_utf8(head) else {
        return Asked::BadRequest;
    };
    let mut parts = text.lines().next().unwrap_or("").split(' ');
    let (Some(method), Some(target), Some(version)) = (parts.next(), parts.next(), parts.next())
    else {
        return Asked::BadRequest;
    };
    if !version.starts_with("HTTP/1.") {
        return Asked::BadRequest;
    }
    let path = target.split('?').next().unwrap_or("");
    match (method, path) {
        ("GET", "/metrics") => Asked::Metrics,
        ("GET", _) => Asked::NotFound,
        _ => Asked::MethodNotAllowed,
    }
}

/// Reads the request head, up to the blank line that ends it; `None` if it is too large,
/// too slow or the connection closes first.
async fn read_head(stream: &mut TcpStream) -> Option<Vec<u8>> {
    let mut head = Vec::with_capacity(512);
    let mut buf = [0u8; 1024];
    let read = async {
        loop {
            let n = stream.read(&mut buf).await.ok()?;
            if n == 0 {
                return None;
            }
            head.extend_from_slice(&buf[..n]);
            if head.windows(4).any(|w| w == b"\r\n\r\n") || head.windows(2).any(|w| w == b"\n\n") {
                return Some(());
            }
            if head.len() > MAX_REQUEST_HEAD_BYTES {
                return None;
            }
        }
    };
    tokio::time::timeout(REQUEST_TIMEOUT, read).await.ok()??;
    Some(head)
}

async fn answer(mut stream: TcpStream, slot: &NodeSlot) {
    let asked = match read_head(&mut stream).await {
        Some(head) => parse(&head),
        None => Asked::BadRequest,
    };
    let (status, body) = match asked {
        Asked::Metrics => match slot.get() {
            Some(node) => ("200 OK", node.metrics().render(node)),
            None => (
                "503 Service Unavailable",
                "the node is starting: no metrics yet\n".to_string(),
            ),
        },
        Asked::NotFound => (
            "404 Not Found",
            "only /metrics is served here\n".to_string(),
        ),
        Asked::MethodNotAllowed => (
            "405 Method Not Allowed",
            "only GET /metrics is served here\n".to_string(),
        ),
        Asked::BadRequest => ("400 Bad Request", "not an HTTP/1 request\n".to_string()),
    };
    let content_type = if status.starts_with("200") {
        TEXT_FORMAT
    } else {
        "text/plain; charset=utf-8"
    };
    let head = format!(
        "HTTP/1.1 {status}\r\nContent-Type: {content_type}\r\nContent-Length: {}\r\n\
         Connection: close\r\n\r\n",
        body.len()
    );
    let write = async {
        stream.write_all(head.as_bytes()).await?;
        stream.write_all(body.as_bytes()).await?;
        stream.shutdown().await
    };
    if let Ok(Err(e)) = tokio::time::timeout(REQUEST_TIMEOUT, write).await {
        tracing::debug!(error = %e, "metrics endpoint: answer not written");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_get_of_the_metrics_path_is_served() {
        assert_eq!(
            parse(b"GET /metrics HTTP/1.1\r\nHost: x\r\n\r\n"),
            Asked::Metrics
        );
        assert_eq!(parse(b"GET /metrics?x=1 HTTP/1.0\r\n\r\n"), Asked::Metrics);
        assert_eq!(parse(b"GET / HTTP/1.1\r\n\r\n"), Asked::NotFound);
        assert_eq!(
            parse(b"POST /metrics HTTP/1.1\r\n\r\n"),
            Asked::MethodNotAllowed
        );
        assert_eq!(parse(b"hello\r\n\r\n"), Asked::BadRequest);
        assert_eq!(parse(b"GET /metrics SPDY/3\r\n\r\n"), Asked::BadRequest);
        assert_eq!(parse(&[0xff, 0xfe]), Asked::BadRequest);
    }
}
