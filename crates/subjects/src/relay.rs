//! Subject state changes for the consents service.
//!
//! Every state change (create, restrict, lift, erase) enqueues a
//! `vern.consents.v1.SubjectStateChange` in the outbox in the same transaction as the
//! change ([`state_change`]); the outbox relay delivers them per tenant, in order and
//! at least once, to `ConsentService.ApplySubjectStates` ([`ConsentsDelivery`]).
//! Consents ignores changes whose version is not above the one it holds.

use chrono::{DateTime, Utc};
use prost::Message;
use sha2::{Digest, Sha256};
use tonic::transport::Channel;
use vern_kit::auth::ServiceTokens;
use vern_kit::outbox::Deliver;
use vern_proto::consents::v1 as consents;
use vern_proto::consents::v1::consent_service_client::ConsentServiceClient;

use crate::domain::SubjectState;
use crate::store::STATE_TOPIC;

/// Rows the relay delivers per round.
pub const BATCH: u64 = 200;

/// The outbox payload of a state change.
pub fn state_change(
    subject_id: &str,
    state: SubjectState,
    version: i64,
    change_time: DateTime<Utc>,
) -> Vec<u8> {
    let state = match state {
        SubjectState::Active => consents::SubjectState::Active,
        SubjectState::Restricted => consents::SubjectState::Restricted,
        SubjectState::Erased => consents::SubjectState::Erased,
    };
    consents::SubjectStateChange {
        subject_id: subject_id.to_owned(),
        state: state as i32,
        version,
        change_time: Some(vern_kit::time::to_timestamp(change_time)),
    }
    .encode_to_vec()
}

/// The ApplySubjectStates request of one batch. Its `request_id` is derived from the
/// payloads, so a retried batch carries the same id. Undecodable payloads (never
/// written by this build) are skipped.
pub fn batch_request(payloads: &[Vec<u8>]) -> consents::ApplySubjectStatesRequest {
    let mut hash = Sha256::new();
    let mut changes = Vec::with_capacity(payloads.len());
    for p in payloads {
        hash.update((p.len() as u64).to_be_bytes());
        hash.update(p);
        match consents::SubjectStateChange::decode(p.as_slice()) {
            Ok(c) => changes.push(c),
            Err(_) => tracing::error!(
                kind = "outbox_payload",
                "undecodable subject state change skipped"
            ),
        }
    }
    let digest = hash.finalize();
    let id: String = digest[..16].iter().map(|b| format!("{b:02x}")).collect();
    consents::ApplySubjectStatesRequest {
        changes,
        request_id: format!("subjects-outbox-{id}"),
    }
}

/// Delivers batches to ConsentService with a `service` token for the batch's tenant.
pub struct ConsentsDelivery {
    client: ConsentServiceClient<Channel>,
    tokens: ServiceTokens,
}

impl std::fmt::Debug for ConsentsDelivery {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ConsentsDelivery").finish_non_exhaustive()
    }
}

impl ConsentsDelivery {
    /// Delivery over `channel` (to the consents service) signing with `tokens`.
    pub fn new(channel: Channel, tokens: ServiceTokens) -> Self {
        Self {
            client: ConsentServiceClient::new(channel),
            tokens,
        }
    }
}

#[async_trait::async_trait]
impl Deliver for ConsentsDelivery {
    async fn deliver(
        &self,
        tenant_id: &str,
        topic: &str,
        payloads: Vec<Vec<u8>>,
    ) -> Result<(), String> {
        if topic != STATE_TOPIC {
            tracing::error!(topic, "unknown outbox topic dropped");
            return Ok(());
        }
        let req = batch_request(&payloads);
        let token = self
            .tokens
            .for_tenant(tenant_id)
            .map_err(|_| "signing a service token failed".to_owned())?;
        let req = vern_kit::client::request(req, &token).map_err(|s| s.message().to_owned())?;
        let mut client = self.client.clone();
        client
            .apply_subject_states(req)
            .await
            .map_err(|s| format!("ApplySubjectStates failed: {:?}", s.code()))?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn payloads_round_trip_and_batches_have_stable_ids() {
        let t = vern_kit::time::now();
        let a = state_change("s-1", SubjectState::Active, 1, t);
        let b = state_change("s-1", SubjectState::Erased, 2, t);
        let req = batch_request(&[a.clone(), b.clone(), vec![0xff, 0xff]]);
        assert_eq!(req.changes.len(), 2, "garbage skipped");
        assert_eq!(req.changes[0].state, consents::SubjectState::Active as i32);
        assert_eq!(req.changes[1].state, consents::SubjectState::Erased as i32);
        assert_eq!(req.changes[1].version, 2);
        assert_eq!(req.changes[1].subject_id, "s-1");
        let again = batch_request(&[a.clone(), b.clone(), vec![0xff, 0xff]]);
        assert_eq!(
            req.request_id, again.request_id,
            "a retry carries the same id"
        );
        assert_ne!(req.request_id, batch_request(&[a]).request_id);
        assert!(req.request_id.len() <= vern_kit::validate::MAX_REQUEST_ID_LEN);
    }
}
