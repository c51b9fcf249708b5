//! The agent ingest server: mutual-TLS gRPC, one stream per node agent.
//!
//! TLS is terminated here (not by tonic) so the certificates can be swapped
//! while streams run, and so the client certificate's identity travels with
//! each connection to the handler, which checks the hello against it.

#[doc(hidden)]
pub mod fuzzing;
pub mod identity;
pub mod placement;
mod pods;
pub mod registry;
pub mod rejected;
mod service;
pub mod slow;

use std::future::Future;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use knowton_proto::agent::v1::agent_stream_server::AgentStreamServer;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::mpsc;
use tokio_rustls::server::TlsStream;
use tokio_stream::wrappers::ReceiverStream;
use tonic::transport::server::Connected;

pub use placement::Placement;
pub use registry::{AgentState, Counters, LatestResult, NodeSample, Registry};
pub use rejected::RejectedResult;
pub use service::{IngestService, StreamSettings};
pub use slow::SlowThresholds;

use crate::tls::{ServerTls, certificate_identity};

/// Largest message an agent may send.
pub const MAX_MESSAGE_BYTES: usize = 4 * 1024 * 1024;
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);

/// Who is on the other end of a connection, from its verified certificate.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AgentPeer {
    pub node: String,
    pub remote: SocketAddr,
}

/// A TLS connection from an agent, carrying its peer identity.
#[derive(Debug)]
pub struct AgentConn {
    stream: TlsStream<TcpStream>,
    peer: AgentPeer,
}

impl Connected for AgentConn {
    type ConnectInfo = AgentPeer;

    fn connect_info(&self) -> AgentPeer {
        self.peer.clone()
    }
}

impl AsyncRead for AgentConn {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.stream).poll_read(cx, buf)
    }
}

impl AsyncWrite for AgentConn {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        Pin::new(&mut self.stream).poll_write(cx, buf)
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.stream).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.stream).poll_shutdown(cx)
    }
}

/// Serves agent streams on `listener` until `shutdown` resolves.
pub async fn serve(
    listener: TcpListener,
    tls: Arc<ServerTls>,
    service: IngestService,
    shutdown: impl Future<Output = ()> + Send,
) -> Result<(), tonic::transport::Error> {
    let (tx, rx) = mpsc::channel::<Result<AgentConn, std::io::Error>>(128);
    let registry = service.registry.clone();
    let acceptor = tokio::spawn(accept(listener, tls, registry, tx));
    let result = tonic::transport::Server::builder()
        .http2_keepalive_interval(Some(Duration::from_secs(10)))
        .http2_keepalive_timeout(Some(Duration::from_secs(10)))
        .max_concurrent_streams(Some(8))
        .add_service(AgentStreamServer::new(service).max_decoding_message_size(MAX_MESSAGE_BYTES))
        .serve_with_incoming_shutdown(ReceiverStream::new(rx), shutdown)
        .await;
    acceptor.abort();
    result
}

async fn accept(
    listener: TcpListener,
    tls: Arc<ServerTls>,
    registry: Arc<Registry>,
    tx: mpsc::Sender<Result<AgentConn, std::io::Error>>,
) {
    loop {
        let (tcp, remote) = match listener.accept().await {
            Ok(accepted) => accepted,
            Err(err) => {
                tracing::warn!(error = %err, "failed to accept an agent connection");
                tokio::time::sleep(Duration::from_millis(50)).await;
                continue;
            }
        };
        let _ = tcp.set_nodelay(true);
        let acceptor = tokio_rustls::TlsAcceptor::from(tls.current());
        let tx = tx.clone();
        let registry = registry.clone();
        tokio::spawn(async move {
            let stream = match tokio::time::timeout(HANDSHAKE_TIMEOUT, acceptor.accept(tcp)).await {
                Ok(Ok(stream)) => stream,
                Ok(Err(err)) => {
                    Counters::add(&registry.counters.handshakes_failed, 1);
                    tracing::info!(%remote, error = %err, "agent TLS handshake refused");
                    return;
                }
                Err(_) => {
                    Counters::add(&registry.counters.handshakes_failed, 1);
                    tracing::info!(%remote, "agent TLS handshake timed out");
                    return;
                }
            };
            let node = stream
                .get_ref()
                .1
                .peer_certificates()
                .and_then(|certs| certs.first())
                .and_then(certificate_identity);
            let Some(node) = node else {
                Counters::add(&registry.counters.handshakes_failed, 1);
                tracing::info!(%remote, "agent certificate has no identity (CN)");
                return;
            };
            let _ = tx
                .send(Ok(AgentConn {
                    stream,
                    peer: AgentPeer { node, remote },
                }))
                .await;
        });
    }
}
