//! Server bootstrap shared by `vern dev`, `vern serve <service>` and tests: health,
//! reflection, the auth layer, message size limits, deadlines and graceful shutdown
//! that drains in-flight calls.

use std::future::Future;
use std::time::Duration;

use tokio::net::TcpListener;
use tonic::service::Routes;
use tonic::transport::Server;
use tonic_health::ServingStatus;
use tonic_health::server::HealthReporter;

use crate::auth::TokenVerifier;
use crate::config::ReflectionMode;
use crate::config::ServerConfig;
use crate::context::{AuthLayer, Exposure};
use crate::limits::{ConcurrencyLimitLayer, DeadlineLayer, RateLimitLayer};
use crate::streams::StreamGuardLayer;

/// Message size limits applied to every generated service.
#[derive(Debug, Clone, Copy)]
pub struct Limits {
    /// Largest message decoded or encoded, bytes.
    pub max_message_bytes: usize,
}

impl From<&ServerConfig> for Limits {
    fn from(c: &ServerConfig) -> Self {
        Self {
            max_message_bytes: c.max_message_bytes,
        }
    }
}

impl Default for Limits {
    fn default() -> Self {
        Self::from(&ServerConfig::default())
    }
}

/// Applies [`Limits`] to a generated tonic server type.
#[macro_export]
macro_rules! limited {
    ($server:expr, $limits:expr) => {
        $server
            .max_decoding_message_size($limits.max_message_bytes)
            .max_encoding_message_size($limits.max_message_bytes)
    };
}

/// What to serve.
pub struct Served {
    /// The vern services (and anything else) to serve.
    pub routes: Routes,
    /// gRPC service names reported SERVING by health.
    pub health_names: Vec<&'static str>,
    /// Where denied calls are reported (the audit hook), if anywhere.
    pub denials: Option<crate::audit::DenialSink>,
    /// Traces and metrics of this component ([`crate::telemetry::Telemetry::off`]: none).
    pub telemetry: crate::telemetry::Telemetry,
    /// Who reaches this listener: [`Exposure::Public`] for the gateway (the `service`
    /// role is refused), [`Exposure::Internal`] for a service's own listener.
    pub exposure: Exposure,
    /// Checks that each call's tenant exists and is active (`None`: not checked).
    pub tenants: Option<crate::tenancy::TenantGate>,
    /// Background work of the served services, told when shutdown begins and waited
    /// for (up to `shutdown_grace_seconds`) before [`serve`] returns.
    pub shutdown: crate::shutdown::Shutdown,
    /// TLS of the listener (`None`: plaintext).
    pub tls: Option<std::sync::Arc<crate::tls::ServerTls>>,
}

impl Served {
    /// `routes` served on an internal listener, with no denial hook, telemetry or
    /// tenant check (tests and tools; the assembly sets them).
    pub fn internal(routes: Routes, health_names: Vec<&'static str>) -> Self {
        Self {
            routes,
            health_names,
            denials: None,
            telemetry: crate::telemetry::Telemetry::off(),
            exposure: Exposure::Internal,
            tenants: None,
            shutdown: crate::shutdown::Shutdown::new(),
            tls: None,
        }
    }
}

/// Where a component listens: a TCP port (TLS when the component has certificates), or
/// a Unix socket (`vern dev`'s internal listener), guarded by its file permissions.
#[derive(Debug)]
pub enum Listener {
    /// A TCP port.
    Tcp(TcpListener),
    /// A Unix socket.
    Unix(tokio::net::UnixListener),
}

impl From<TcpListener> for Listener {
    fn from(l: TcpListener) -> Self {
        Listener::Tcp(l)
    }
}

impl From<tokio::net::UnixListener> for Listener {
    fn from(l: tokio::net::UnixListener) -> Self {
        Listener::Unix(l)
    }
}

/// Serves `served` on `listener` until `shutdown` resolves, then stops accepting,
/// lets in-flight calls finish for up to `shutdown_grace_seconds`, waits (as long
/// again at most) for the services' background work to stop, and returns.
pub async fn serve(
    served: Served,
    listener: impl Into<Listener>,
    config: &ServerConfig,
    verifier: TokenVerifier,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> Result<(), tonic::transport::Error> {
    // The build's test keeps this from happening; a hand-edited descriptor would
    // otherwise go unnoticed until callers are refused.
    if let Err(missing) = crate::permissions::check_complete() {
        tracing::error!(%missing, "RPCs without a permission are refused to every caller");
    }
    let (reporter, health) = tonic_health::server::health_reporter();
    set_all(&reporter, &served.health_names, ServingStatus::Serving).await;

    let reflection_v1 = tonic_reflection::server::Builder::configure()
        .register_encoded_file_descriptor_set(vern_proto::FILE_DESCRIPTOR_SET)
        .register_encoded_file_descriptor_set(tonic_health::pb::FILE_DESCRIPTOR_SET)
        .build_v1()
        .map_err(|_| ())
        .ok();
    let reflection_v1alpha = tonic_reflection::server::Builder::configure()
        .register_encoded_file_descriptor_set(vern_proto::FILE_DESCRIPTOR_SET)
        .register_encoded_file_descriptor_set(tonic_health::pb::FILE_DESCRIPTOR_SET)
        .build_v1alpha()
        .map_err(|_| ())
        .ok();

    let mut routes = served.routes.add_service(health);
    // Off: reflection answers UNIMPLEMENTED (the proto comments stay private).
    if config.reflection != ReflectionMode::Off {
        if let Some(r) = reflection_v1 {
            routes = routes.add_service(r);
        }
        if let Some(r) = reflection_v1alpha {
            routes = routes.add_service(r);
        }
    }

    let grace = Duration::from_secs(config.shutdown_grace_seconds);
    let (stop_tx, stop_rx) = tokio::sync::oneshot::channel::<()>();
    let names = served.health_names.clone();
    let background = served.shutdown.clone();
    let (closing_tx, closing) = tokio::sync::watch::channel(false);
    let signal = async move {
        shutdown.await;
        // New connections are refused from now on; open ones drain.
        let _ = closing_tx.send(true);
        // Background work stops while calls drain (a sweep records where it stopped).
        background.begin();
        // Probes see NOT_SERVING while in-flight calls drain.
        set_all(&reporter, &names, ServingStatus::NotServing).await;
        tracing::info!("shutting down: draining in-flight calls");
        let _ = stop_tx.send(());
    };

    let rate_limit = RateLimitLayer::new(
        config.rate_limit_per_client,
        config.rate_limit_burst,
        config.concurrency_limit_per_client,
    );
    let mut builder = Server::builder();
    if config.max_connection_age_seconds > 0 {
        // No forced close after the age: streams in progress (audit tail) finish.
        builder =
            builder.max_connection_age(Duration::from_secs(config.max_connection_age_seconds));
    }
    let server = builder
        .timeout(Duration::from_secs(config.request_timeout_seconds))
        // Pings find peers that went away without closing; one that does not answer
        // within the timeout is closed.
        .http2_keepalive_interval(Some(Duration::from_secs(30)))
        .http2_keepalive_timeout(Some(Duration::from_secs(20)))
        // The one place cross-cutting layers are composed, outermost first.
        .layer(
            tower::ServiceBuilder::new()
                // Outermost, so refusals by the layers below are counted and traced too.
                .option_layer(served.telemetry.layer())
                .layer(crate::wire::DecodeErrorLayer)
                .layer(DeadlineLayer::new(Some(Duration::from_secs(
                    config.request_timeout_seconds,
                ))))
                .layer(ConcurrencyLimitLayer::new(config.concurrency_limit))
                .layer(
                    AuthLayer::new(verifier.clone())
                        .with_denial_budget(rate_limit.denial_budget())
                        .with_denials(served.denials.clone())
                        .with_exposure(served.exposure)
                        .with_tenants(served.tenants.clone())
                        .with_open_reflection(config.reflection == ReflectionMode::Open),
                )
                // Inside the auth layer: it reads the call's context and authorises
                // server streams again while they run.
                .layer(StreamGuardLayer::new(
                    verifier,
                    served.exposure,
                    served.tenants.clone(),
                    Duration::from_secs(config.max_stream_seconds.max(1)),
                    config.max_streams,
                    config.max_streams_per_client,
                ))
                .layer(rate_limit),
        )
        .add_routes(routes);
    let handshake = Duration::from_secs(config.handshake_timeout_seconds.max(1));
    let server: std::pin::Pin<
        Box<dyn Future<Output = Result<(), tonic::transport::Error>> + Send>,
    > = match (listener.into(), served.tls.clone()) {
        (Listener::Tcp(listener), Some(tls)) => Box::pin(server.serve_with_incoming_shutdown(
            crate::listen::incoming_tls(listener, tls, handshake, closing),
            signal,
        )),
        (Listener::Tcp(listener), None) => Box::pin(server.serve_with_incoming_shutdown(
            crate::listen::incoming_plain(listener, handshake, closing),
            signal,
        )),
        // Only processes of the socket's owner connect; TLS would add nothing here.
        (Listener::Unix(listener), _) => Box::pin(server.serve_with_incoming_shutdown(
            crate::listen::incoming_plain(listener, handshake, closing),
            signal,
        )),
    };
    let mut server = server;
    let result = tokio::select! {
        res = &mut server => res,
        _ = async { if stop_rx.await.is_ok() { tokio::time::sleep(grace).await } else { std::future::pending::<()>().await } } => {
            tracing::warn!(grace_seconds = grace.as_secs(), "shutdown grace elapsed; closing remaining calls");
            Ok(())
        }
    };
    served.shutdown.finish(grace).await;
    // The last spans and metrics leave before the process does.
    served.telemetry.flush().await;
    result
}

async fn set_all(reporter: &HealthReporter, names: &[&'static str], status: ServingStatus) {
    reporter.set_service_status("", status).await;
    for name in names {
        reporter.set_service_status(*name, status).await;
    }
}

/// Resolves on SIGINT or SIGTERM.
pub async fn shutdown_signal() {
    let ctrl_c = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    #[cfg(unix)]
    let term = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    #[cfg(not(unix))]
    let term = std::future::pending::<()>();
    tokio::select! {
        _ = ctrl_c => {},
        _ = term => {},
    }
}
