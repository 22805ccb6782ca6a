//! At most [`crate::MAX_CONNECTIONS`] connections (clients and peers together) are served at
//! once: each accepted connection holds a permit until it closes, and the next accepted one
//! waits for a permit before it is served (its peer sees a slow start, not a refusal; the
//! kernel's accept queue holds the ones behind it).

use std::io;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use futures::{Stream, StreamExt};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::sync::{OwnedSemaphorePermit, Semaphore};

/// A connection and its permit.
pub struct Limited<IO> {
    io: IO,
    _permit: OwnedSemaphorePermit,
}

/// `incoming`, each connection served only once it holds one of `max` permits.
pub fn limit<I, IO, IE>(incoming: I, max: usize) -> impl Stream<Item = Result<Limited<IO>, IE>>
where
    I: Stream<Item = Result<IO, IE>>,
{
    let permits = Arc::new(Semaphore::new(max));
    incoming.then(move |conn| {
        let permits = permits.clone();
        async move {
            let io = conn?;
            let permit = permits
                .acquire_owned()
                .await
                .expect("the connection semaphore is never closed");
            Ok(Limited {
                io,
                _permit: permit,
            })
        }
    })
}

impl<IO: tonic::transport::server::Connected> tonic::transport::server::Connected for Limited<IO> {
    type ConnectInfo = IO::ConnectInfo;

    fn connect_info(&self) -> Self::ConnectInfo {
        self.io.connect_info()
    }
}

impl<IO: AsyncRead + Unpin> AsyncRead for Limited<IO> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        Pin::new(&mut self.io).poll_read(cx, buf)
    }
}

impl<IO: AsyncWrite + Unpin> AsyncWrite for Limited<IO> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.io).poll_write(cx, buf)
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.io).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.io).poll_shutdown(cx)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.io).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.io.is_write_vectored()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_connection_past_the_limit_waits_for_one_to_close() {
        let (a, _a) = tokio::io::duplex(64);
        let (b, _b) = tokio::io::duplex(64);
        let (c, _c) = tokio::io::duplex(64);
        let incoming = futures::stream::iter([a, b, c].map(Ok::<_, io::Error>));
        let mut limited = Box::pin(limit(incoming, 2));
        let first = limited.next().await.unwrap().unwrap();
        let _second = limited.next().await.unwrap().unwrap();
        let mut third = limited.next();
        assert!(
            futures::poll!(&mut third).is_pending(),
            "a third connection is not served while two are open"
        );
        drop(first);
        assert!(third.await.unwrap().is_ok(), "served once one closed");
    }
}
