//! The glue between fjord's injected network and turmoil's simulated one: the incoming
//! connections of a node, the channels nodes open to each other, and the client's channels.
//!
//! turmoil's TCP never retransmits: a segment dropped by a partition leaves a hole that wedges
//! the connection for good. HTTP/2 keep-alives are what notice it and make tonic reconnect, so
//! every channel here sets them, short.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use futures::Stream;
use hyper_util::rt::TokioIo;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tonic::transport::server::Connected;
use tonic::transport::{Channel, Endpoint, Uri};

/// Port every simulated node listens on for clients.
pub const NODE_PORT: u16 = 7100;
/// Port every simulated node listens on for its peers.
pub const PEER_PORT: u16 = 7200;
/// Keep-alive ping interval and timeout of every simulated channel.
const KEEP_ALIVE: Duration = Duration::from_millis(1_000);
/// Time allowed to open a simulated connection.
const CONNECT_TIMEOUT: Duration = Duration::from_millis(500);

/// An accepted simulated connection, as tonic's server wants it.
pub struct Accepted(turmoil::net::TcpStream);

impl Connected for Accepted {
    type ConnectInfo = ();
    fn connect_info(&self) -> Self::ConnectInfo {}
}

impl AsyncRead for Accepted {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.0).poll_read(cx, buf)
    }
}

impl AsyncWrite for Accepted {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        Pin::new(&mut self.0).poll_write(cx, buf)
    }
    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.0).poll_flush(cx)
    }
    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.0).poll_shutdown(cx)
    }
}

/// The connections accepted on `listener`, for `fjord_server::run_on`.
pub fn incoming(
    listener: turmoil::net::TcpListener,
) -> impl Stream<Item = std::io::Result<Accepted>> + Send + 'static {
    futures::stream::unfold(listener, |listener| async move {
        let accepted = listener.accept().await.map(|(s, _)| Accepted(s));
        Some((accepted, listener))
    })
}

/// Dials `host:port` through turmoil: tonic's connector.
#[derive(Clone, Copy, Debug, Default)]
struct Dial;

impl tower_service::Service<Uri> for Dial {
    type Response = TokioIo<turmoil::net::TcpStream>;
    type Error = std::io::Error;
    type Future =
        Pin<Box<dyn Future<Output = Result<Self::Response, Self::Error>> + Send + 'static>>;

    fn poll_ready(&mut self, _: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, uri: Uri) -> Self::Future {
        Box::pin(async move {
            let host = uri.host().ok_or_else(|| {
                std::io::Error::new(std::io::ErrorKind::InvalidInput, "no host in uri")
            })?;
            let port = uri.port_u16().unwrap_or(NODE_PORT);
            let stream = turmoil::net::TcpStream::connect((host, port)).await?;
            Ok(TokioIo::new(stream))
        })
    }
}

fn with_keep_alive(endpoint: Endpoint) -> Endpoint {
    endpoint
        .http2_keep_alive_interval(KEEP_ALIVE)
        .keep_alive_timeout(KEEP_ALIVE)
        .keep_alive_while_idle(true)
}

/// How a simulated node reaches its peers.
#[derive(Debug, Default)]
pub struct PeerConnector;

impl fjord_raft::peer::Connector for PeerConnector {
    fn connect(&self, addr: &str) -> Result<Channel, fjord_raft::peer::ConnectError> {
        let endpoint = fjord_raft::peer::peer_endpoint(addr)?.connect_timeout(CONNECT_TIMEOUT);
        Ok(with_keep_alive(endpoint).connect_with_connector_lazy(Dial))
    }
}

/// How the simulated client reaches the nodes.
#[derive(Debug, Default)]
pub struct ClientConnect;

impl fjord_client::Connect for ClientConnect {
    fn connect(&self, endpoint: Endpoint) -> Channel {
        with_keep_alive(endpoint).connect_with_connector_lazy(Dial)
    }
}

/// The connectors, shared.
pub fn peer_connector() -> Arc<dyn fjord_raft::peer::Connector> {
    Arc::new(PeerConnector)
}
