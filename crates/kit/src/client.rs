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
    Ok(req)
}
