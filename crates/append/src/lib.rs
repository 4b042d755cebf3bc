//! Delivers the `audit` outbox topic to `AuditService/AppendEvents` with a service
//! token. Kept out of vern-kit, which names no service's RPC: every service that writes
//! audit events links this small crate instead (the layering check counts it as shared).

use std::sync::Arc;

use prost::Message;
use vern_kit::outbox::{Deliver, DeliveryError};
use vern_proto::audit::v1 as pb;

/// Delivers `audit` outbox rows to `AuditService/AppendEvents` with a service token.
pub struct AuditDelivery {
    channel: vern_kit::client::ServiceChannel,
    tokens: Arc<vern_kit::auth::ServiceTokens>,
}

impl AuditDelivery {
    /// Delivery to the audit service at `url`.
    pub fn new(
        url: &str,
        tokens: Arc<vern_kit::auth::ServiceTokens>,
    ) -> Result<Self, tonic::transport::Error> {
        Ok(Self {
            channel: vern_kit::client::channel(url)?,
            tokens,
        })
    }
}

#[async_trait::async_trait]
impl Deliver for AuditDelivery {
    async fn deliver(
        &self,
        tenant_id: &str,
        _topic: &str,
        payloads: Vec<Vec<u8>>,
    ) -> Result<(), DeliveryError> {
        let events = payloads
            .iter()
            .map(|p| pb::AuditEvent::decode(p.as_slice()))
            .collect::<Result<Vec<_>, _>>()
            // It never will decode: park it rather than retry it for ever.
            .map_err(|_| DeliveryError::Refused("undecodable audit event".to_owned()))?;
        let token = self
            .tokens
            .for_tenant(tenant_id)
            .map_err(|_| "signing a service token failed".to_owned())?;
        let req = vern_kit::client::request(
            pb::AppendEventsRequest {
                events,
                request_id: String::new(),
            },
            &token,
        )
        .map_err(|s| s.message().to_owned())?;
        pb::audit_service_client::AuditServiceClient::new(self.channel.clone())
            .append_events(req)
            .await
            .map(|_| ())
            .map_err(|s| DeliveryError::from_status("AppendEvents", &s))
    }
}
