//! The machine baseline: a bare tonic service (no layers, no database) answering
//! Check-shaped messages at once, served on loopback in the same process as the client.

use std::net::SocketAddr;

use tokio::net::TcpListener;
use tonic::{Request, Response, Status};

/// Generated code of `vern.bench.v1`.
#[allow(missing_docs, clippy::all)]
pub mod pb {
    tonic::include_proto!("vern.bench.v1");
}

/// The echo implementation.
#[derive(Debug, Default, Clone, Copy)]
pub struct Echo;

#[tonic::async_trait]
impl pb::echo_service_server::EchoService for Echo {
    async fn echo(
        &self,
        req: Request<pb::EchoRequest>,
    ) -> Result<Response<pb::EchoResponse>, Status> {
        let r = req.into_inner();
        Ok(Response::new(pb::EchoResponse {
            allowed: true,
            reason: 1,
            legal_basis: 1,
            evidence_id: r.subject_id,
        }))
    }
}

/// A running echo server.
pub struct EchoServer {
    /// Where it listens.
    pub addr: SocketAddr,
    stop: tokio::sync::oneshot::Sender<()>,
    handle: tokio::task::JoinHandle<()>,
}

impl EchoServer {
    /// Serves the echo on a free loopback port.
    pub async fn start() -> anyhow::Result<Self> {
        let listener = TcpListener::bind("127.0.0.1:0").await?;
        let addr = listener.local_addr()?;
        let (stop, rx) = tokio::sync::oneshot::channel::<()>();
        let handle = tokio::spawn(async move {
            let served = tonic::transport::Server::builder()
                .add_service(pb::echo_service_server::EchoServiceServer::new(Echo))
                .serve_with_incoming_shutdown(
                    // Small answers must not wait for Nagle (40 ms stalls with delayed ACKs).
                    tonic::transport::server::TcpIncoming::from(listener).with_nodelay(Some(true)),
                    async move {
                        let _ = rx.await;
                    },
                )
                .await;
            if let Err(e) = served {
                tracing::warn!(error = %e, "echo server stopped");
            }
        });
        Ok(Self { addr, stop, handle })
    }

    /// Stops the server.
    pub async fn stop(self) {
        let _ = self.stop.send(());
        let _ = self.handle.await;
    }
}
