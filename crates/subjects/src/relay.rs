//! Subject state changes for the consents service, erasures for the rights service.
//!
//! Every state change (create, restrict, lift, erase) enqueues a
//! `vern.consents.v1.SubjectStateChange` in the outbox in the same transaction as the
//! change ([`state_change`]); the outbox relay delivers them per tenant, in order and
//! at least once, to `ConsentService.ApplySubjectStates` ([`ConsentsDelivery`]).
//! Consents ignores changes whose version is not above the one it holds.
//!
//! Every erasure also enqueues a `vern.rights.v1.SubjectErasure` ([`erasure_notice`]),
//! delivered the same way to `RightsService.ApplySubjectErasures` ([`RightsDelivery`]):
//! the rights service then destroys the personal content of its copies (identities and
//! reports of the subject's rights requests), whoever erased the subject. Restrictions
//! and their lifting travel the same topic ([`restriction_notice`]), so recipients
//! hear of them on the feed in order with the erasures (Art. 19).

use chrono::{DateTime, Utc};
use prost::Message;
use sha2::{Digest, Sha256};
use vern_kit::auth::ServiceTokens;
use vern_kit::client::ServiceChannel as Channel;
use vern_kit::outbox::{Deliver, DeliveryError};
use vern_proto::consents::v1 as consents;
use vern_proto::consents::v1::consent_service_client::ConsentServiceClient;
use vern_proto::rights::v1 as rights;
use vern_proto::rights::v1::rights_service_client::RightsServiceClient;

use crate::domain::{DataCategory, SubjectState};
use crate::store::{ERASURE_TOPIC, STATE_TOPIC};

/// Rows the relay delivers per round.
pub const BATCH: u64 = 200;

/// The outbox payload of a state change.
pub fn state_change(
    subject_id: &str,
    state: SubjectState,
    version: i64,
    change_time: DateTime<Utc>,
    restricted_purposes: &[String],
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
        restricted_purposes: restricted_purposes.to_vec(),
    }
    .encode_to_vec()
}

/// The outbox payload of a restriction (`restricted`) or its lifting, for the rights
/// feed (Art. 19): `purposes` those concerned, empty for the whole subject;
/// `by_request` the rights request carried out, if any. Wrapped in a `SubjectNotice`
/// (erasure payloads are bare `SubjectErasure`s, see [`erasure_request`]).
pub fn restriction_notice(
    subject_id: &str,
    restricted: bool,
    purposes: &[String],
    change_time: DateTime<Utc>,
    by_request: Option<&str>,
) -> Vec<u8> {
    rights::SubjectNotice {
        notice: Some(rights::subject_notice::Notice::Restriction(
            rights::SubjectRestriction {
                subject_id: subject_id.to_owned(),
                restricted,
                purposes: purposes.to_vec(),
                change_time: Some(vern_kit::time::to_timestamp(change_time)),
                rights_request_id: by_request.unwrap_or_default().to_owned(),
            },
        )),
    }
    .encode_to_vec()
}

/// The outbox payload of a subject's erasure: `by_request` is the rights request it
/// carries out, if any; `policy_id` the retention policy whose period ended (a purge
/// erasing a subject's last kept record).
pub fn erasure_notice(
    subject_id: &str,
    erase_time: DateTime<Utc>,
    by_request: Option<&str>,
    policy_id: Option<&str>,
) -> Vec<u8> {
    let cause = match (by_request, policy_id) {
        (Some(_), _) => rights::ErasureCause::RightsRequest,
        (None, Some(_)) => rights::ErasureCause::Retention,
        (None, None) => rights::ErasureCause::Direct,
    };
    rights::SubjectErasure {
        subject_id: subject_id.to_owned(),
        erase_time: Some(vern_kit::time::to_timestamp(erase_time)),
        rights_request_id: by_request.unwrap_or_default().to_owned(),
        cause: cause as i32,
        records: vec![],
        policy_id: policy_id.unwrap_or_default().to_owned(),
    }
    .encode_to_vec()
}

/// The outbox payload of records purged by retention while their subject remains:
/// `records` are (record id, category, field name), never values.
pub fn records_erased_notice(
    subject_id: &str,
    erase_time: DateTime<Utc>,
    policy_id: &str,
    records: &[(String, DataCategory, String)],
) -> Vec<u8> {
    rights::SubjectErasure {
        subject_id: subject_id.to_owned(),
        erase_time: Some(vern_kit::time::to_timestamp(erase_time)),
        rights_request_id: String::new(),
        cause: rights::ErasureCause::Retention as i32,
        records: records
            .iter()
            .map(|(id, category, field)| rights::ErasedRecord {
                record_id: id.clone(),
                category: crate::api::category_to_pb(*category) as i32,
                field: field.clone(),
            })
            .collect(),
        policy_id: policy_id.to_owned(),
    }
    .encode_to_vec()
}

/// Decodes one batch's payloads and derives its `request_id` from them, so a retried
/// batch carries the same id. Undecodable payloads (never written by this build) are
/// skipped.
fn decode_batch<M: Message + Default>(payloads: &[Vec<u8>], what: &str) -> (Vec<M>, String) {
    let items = payloads
        .iter()
        .filter_map(|p| match M::decode(p.as_slice()) {
            Ok(c) => Some(c),
            Err(_) => {
                tracing::error!(kind = "outbox_payload", what, "undecodable payload skipped");
                None
            }
        })
        .collect();
    (items, batch_id(payloads))
}

/// The `request_id` of a batch, derived from its payloads.
fn batch_id(payloads: &[Vec<u8>]) -> String {
    let mut hash = Sha256::new();
    for p in payloads {
        hash.update((p.len() as u64).to_be_bytes());
        hash.update(p);
    }
    let digest = hash.finalize();
    let id: String = digest[..16].iter().map(|b| format!("{b:02x}")).collect();
    format!("subjects-outbox-{id}")
}

/// The ApplySubjectStates request of one batch.
pub fn batch_request(payloads: &[Vec<u8>]) -> consents::ApplySubjectStatesRequest {
    let (changes, request_id) = decode_batch(payloads, "subject state change");
    consents::ApplySubjectStatesRequest {
        changes,
        request_id,
    }
}

/// The ApplySubjectErasures request of one batch: restriction notices (payloads that
/// decode as a `SubjectNotice` holding one) go to `restrictions`, everything else is
/// read as a bare `SubjectErasure`. The rights service applies the restrictions first,
/// which keeps the order that matters: nothing follows a subject's erasure.
pub fn erasure_request(payloads: &[Vec<u8>]) -> rights::ApplySubjectErasuresRequest {
    use rights::subject_notice::Notice;
    let (mut erasures, mut restrictions) = (vec![], vec![]);
    for p in payloads {
        let notice = rights::SubjectNotice::decode(p.as_slice()).map(|n| n.notice);
        match notice {
            Ok(Some(Notice::Restriction(r))) => restrictions.push(r),
            Ok(Some(Notice::Erasure(e))) => erasures.push(e),
            _ => match rights::SubjectErasure::decode(p.as_slice()) {
                Ok(e) => erasures.push(e),
                Err(_) => tracing::error!(
                    kind = "outbox_payload",
                    what = "subject notice",
                    "undecodable payload skipped"
                ),
            },
        }
    }
    rights::ApplySubjectErasuresRequest {
        erasures,
        request_id: batch_id(payloads),
        restrictions,
    }
}

/// Delivers one outbox topic to another service's client `C`, with a `service` token
/// for the batch's tenant.
pub struct ServiceDelivery<C> {
    client: C,
    tokens: ServiceTokens,
}

impl<C> std::fmt::Debug for ServiceDelivery<C> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ServiceDelivery").finish_non_exhaustive()
    }
}

impl<C> ServiceDelivery<C> {
    /// Delivery through `client`, signing with `tokens`.
    pub fn new(client: C, tokens: ServiceTokens) -> Self {
        Self { client, tokens }
    }
}

/// State changes to ConsentService.ApplySubjectStates.
pub type ConsentsDelivery = ServiceDelivery<ConsentServiceClient<Channel>>;
/// Erasures to RightsService.ApplySubjectErasures.
pub type RightsDelivery = ServiceDelivery<RightsServiceClient<Channel>>;

#[async_trait::async_trait]
impl Deliver for ConsentsDelivery {
    async fn deliver(
        &self,
        tenant_id: &str,
        topic: &str,
        payloads: Vec<Vec<u8>>,
    ) -> Result<(), DeliveryError> {
        if topic != STATE_TOPIC {
            tracing::error!(topic, "unknown outbox topic dropped");
            return Ok(());
        }
        let req = signed(&self.tokens, tenant_id, batch_request(&payloads))?;
        let mut client = self.client.clone();
        client
            .apply_subject_states(req)
            .await
            .map_err(|s| DeliveryError::from_status("ApplySubjectStates", &s))?;
        Ok(())
    }
}

#[async_trait::async_trait]
impl Deliver for RightsDelivery {
    async fn deliver(
        &self,
        tenant_id: &str,
        topic: &str,
        payloads: Vec<Vec<u8>>,
    ) -> Result<(), DeliveryError> {
        if topic != ERASURE_TOPIC {
            tracing::error!(topic, "unknown outbox topic dropped");
            return Ok(());
        }
        let req = signed(&self.tokens, tenant_id, erasure_request(&payloads))?;
        let mut client = self.client.clone();
        client
            .apply_subject_erasures(req)
            .await
            .map_err(|s| DeliveryError::from_status("ApplySubjectErasures", &s))?;
        Ok(())
    }
}

/// `msg` as a request carrying a `service` token for `tenant_id`.
fn signed<T>(tokens: &ServiceTokens, tenant_id: &str, msg: T) -> Result<tonic::Request<T>, String> {
    let token = tokens
        .for_tenant(tenant_id)
        .map_err(|_| "signing a service token failed".to_owned())?;
    vern_kit::client::request(msg, &token).map_err(|s| s.message().to_owned())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn payloads_round_trip_and_batches_have_stable_ids() {
        let t = vern_kit::time::now();
        let a = state_change("s-1", SubjectState::Active, 1, t, &[]);
        let b = state_change("s-1", SubjectState::Erased, 2, t, &[]);
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

    #[test]
    fn erasure_notices_round_trip_with_the_request_they_carry_out() {
        let t = vern_kit::time::now();
        let direct = erasure_notice("s-1", t, None, None);
        let by_request = erasure_notice("s-2", t, Some("r-1"), None);
        let req = erasure_request(&[direct.clone(), vec![0xff, 0xff], by_request.clone()]);
        assert_eq!(req.erasures.len(), 2, "garbage skipped");
        assert_eq!(req.erasures[0].subject_id, "s-1");
        assert_eq!(req.erasures[0].rights_request_id, "");
        assert_eq!(
            req.erasures[0]
                .erase_time
                .as_ref()
                .and_then(vern_kit::time::from_timestamp),
            Some(t)
        );
        assert_eq!(req.erasures[1].rights_request_id, "r-1");
        assert_eq!(req.erasures[0].cause, rights::ErasureCause::Direct as i32);
        assert_eq!(
            req.erasures[1].cause,
            rights::ErasureCause::RightsRequest as i32
        );
        let swept = erasure_request(&[
            erasure_notice("s-3", t, None, Some("p-1")),
            records_erased_notice(
                "s-4",
                t,
                "p-1",
                &[("r-9".into(), DataCategory::Financial, "invoice".into())],
            ),
        ]);
        assert_eq!(
            swept.erasures[0].cause,
            rights::ErasureCause::Retention as i32
        );
        assert!(swept.erasures[0].records.is_empty(), "the whole subject");
        assert_eq!(swept.erasures[1].records[0].field, "invoice");
        assert_eq!(
            swept.erasures[1].records[0].category,
            vern_proto::common::v1::DataCategory::Financial as i32
        );
        assert_eq!(swept.erasures[1].policy_id, "p-1");
        assert_eq!(
            req.request_id,
            erasure_request(&[direct.clone(), vec![0xff, 0xff], by_request]).request_id
        );
        assert_ne!(req.request_id, erasure_request(&[direct]).request_id);
    }
}
