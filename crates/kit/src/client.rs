//! Service-to-service calls: lazily connected channels and requests carrying a
//! `service` token for one tenant. Services call each other directly, never through
//! the gateway.

use std::time::Duration;

use crate::balance::{Balanced, Settings};

/// A channel to one service: calls spread over every address its name resolves to
/// ([`crate::balance`]).
pub type ServiceChannel = Balanced;

/// A lazily connected channel to `url`, balanced per call when `url` names a host.
pub fn channel(url: &str) -> Result<ServiceChannel, tonic::transport::Error> {
    Balanced::new(
        url,
        Settings {
            timeout: Some(Duration::from_secs(30)),
            ..Settings::default()
        },
    )
}

/// `msg` as a request authenticated with `token` (a service token for one tenant).
pub fn request<T>(msg: T, token: &str) -> Result<tonic::Request<T>, tonic::Status> {
    let mut req = tonic::Request::new(msg);
    let value = format!("Bearer {token}")
        .parse()
        .map_err(|_| tonic::Status::internal("service token is not valid metadata"))?;
    req.metadata_mut().insert("authorization", value);
    // The callee's spans join the current call's trace.
    crate::telemetry::inject_current(req.metadata_mut());
    Ok(req)
}

/// A channel whose calls, inside a traced call, get a client span and carry it as
/// the callee's parent.
pub type TracedChannel = crate::telemetry::Traced<ServiceChannel>;

/// The socket path of a `unix:` URL (`unix:/run/vern.sock`, `unix:///run/vern.sock`);
/// `None` for any other URL.
pub fn unix_socket_path(url: &str) -> Option<std::path::PathBuf> {
    let rest = url.strip_prefix("unix:")?;
    let path = rest.strip_prefix("//").unwrap_or(rest);
    path.starts_with('/')
        .then(|| std::path::PathBuf::from(path))
}

/// A lazily connected channel over the Unix socket at `path`, with `endpoint`'s
/// settings (its URL only names the `:authority` calls carry).
pub fn unix_channel(
    endpoint: tonic::transport::Endpoint,
    path: std::path::PathBuf,
) -> tonic::transport::Channel {
    endpoint.connect_with_connector_lazy(tower::service_fn(move |_: tonic::transport::Uri| {
        let path = path.clone();
        async move {
            let stream = tokio::net::UnixStream::connect(path).await?;
            Ok::<_, std::io::Error>(hyper_util::rt::TokioIo::new(stream))
        }
    }))
}

/// A lazily connected, traced channel to `url`.
pub fn traced_channel(url: &str) -> Result<TracedChannel, tonic::transport::Error> {
    Ok(crate::telemetry::Traced::new(channel(url)?))
}
