//! Service-to-service calls: lazily connected channels and requests carrying a
//! `service` token for one tenant. Services call each other directly, never through
//! the gateway.

use std::time::Duration;

use tonic::transport::{Channel, Endpoint};

/// A lazily connected channel to `url`.
pub fn channel(url: &str) -> Result<Channel, tonic::transport::Error> {
    Ok(Endpoint::from_shared(url.to_owned())?
        .connect_timeout(Duration::from_secs(5))
        .timeout(Duration::from_secs(30))
        .tcp_nodelay(true)
        .connect_lazy())
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
pub type TracedChannel = crate::telemetry::Traced<Channel>;

/// A lazily connected, traced channel to `url`.
pub fn traced_channel(url: &str) -> Result<TracedChannel, tonic::transport::Error> {
    Ok(crate::telemetry::Traced::new(channel(url)?))
}
