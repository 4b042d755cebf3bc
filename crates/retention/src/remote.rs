//! The services retention asks, each with a `service` token for the tenant, directly
//! (never through the gateway): tenants (does a purpose exist), subjects (a subject's
//! records, and the purge primitive), consents (who withdrew consent, and when).

use std::sync::Arc;

use chrono::{DateTime, Utc};
use tonic::Code;
use vern_kit::auth::ServiceTokens;
use vern_kit::client::ServiceChannel as Channel;
use vern_kit::client::request;
use vern_kit::time::{from_timestamp, to_timestamp};
use vern_proto::common::v1 as common;
use vern_proto::consents::v1 as cpb;
use vern_proto::subjects::v1 as spb;
use vern_proto::tenants::v1 as tpb;

use crate::domain::{Action, DataCategory, RecordInfo};
use crate::error::RetentionError;

/// What Evaluate needs of a subject (no personal data values).
#[derive(Debug, Clone, Default)]
pub struct SubjectSnapshot {
    /// When the relationship ended, if it has.
    pub relationship_end: Option<DateTime<Utc>>,
    /// The records' metadata.
    pub records: Vec<RecordInfo>,
}

/// A consent state that is WITHDRAWN or OBJECTED.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Withdrawal {
    /// The subject.
    pub subject_id: String,
    /// The purpose.
    pub purpose: String,
    /// When consent was withdrawn or objected to.
    pub time: DateTime<Utc>,
}

/// One PurgeRecords call (see the subjects API; every set filter must hold).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PurgeCall {
    /// Category filter.
    pub category: Option<DataCategory>,
    /// Purpose filter.
    pub purpose: Option<String>,
    /// Field filter.
    pub field: Option<String>,
    /// collected_at strictly before.
    pub older_than: Option<DateTime<Utc>>,
    /// Relationship ended strictly before.
    pub relationship_end_before: Option<DateTime<Utc>>,
    /// Kept-after-erasure records whose duty ended before.
    pub retain_until_before: Option<DateTime<Utc>>,
    /// With `retain_until_before`: also kept-after-erasure records without an end.
    pub include_open_ended: bool,
    /// Only these subjects (empty: all).
    pub subject_ids: Vec<String>,
    /// Never these subjects.
    pub exclude_subject_ids: Vec<String>,
    /// What to do.
    pub action: Action,
    /// Only report.
    pub dry_run: bool,
    /// Records per call.
    pub limit: i32,
    /// The policy applied (audit trail).
    pub policy_id: String,
    /// Idempotency key.
    pub request_id: String,
}

/// One EraseSubject call of a sweep: a subject awaiting erasure decided again.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EraseCall {
    /// The subject.
    pub subject_id: String,
    /// The records still to keep (every other record is erased; none: the subject is).
    pub retain: Vec<KeptRecord>,
    /// Idempotency key.
    pub request_id: String,
}

/// A record to keep, restricted, with until when and why.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KeptRecord {
    /// The record.
    pub record_id: String,
    /// Until when; `None`: open-ended (a hold until released, a duty not yet started).
    pub retain_until: Option<DateTime<Utc>>,
    /// Why (the duty's legal reference, or the hold).
    pub legal_reference: String,
}

/// A record matched by a purge.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PurgedRecord {
    /// Subject.
    pub subject_id: String,
    /// Record.
    pub record_id: String,
    /// Category.
    pub category: Option<DataCategory>,
    /// Field.
    pub field: String,
    /// Purposes.
    pub purposes: Vec<String>,
    /// Collected.
    pub collected_at: DateTime<Utc>,
}

/// The answer of one PurgeRecords call.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct PurgeOutcome {
    /// Matched (by this call; in total on a dry run).
    pub matched_count: i64,
    /// Deleted or anonymised.
    pub purged_count: i64,
    /// Matched records (dry run).
    pub items: Vec<PurgedRecord>,
    /// More match than the limit.
    pub truncated: bool,
}

/// The other services, as retention uses them.
#[async_trait::async_trait]
pub trait Upstream: Send + Sync + 'static {
    /// Whether the tenant has this purpose.
    async fn purpose_exists(&self, tenant: &str, key: &str) -> Result<bool, RetentionError>;
    /// A subject's record metadata; `None` when it does not exist in the tenant.
    async fn subject(
        &self,
        tenant: &str,
        subject_id: &str,
    ) -> Result<Option<SubjectSnapshot>, RetentionError>;
    /// Withdrawn or objected consent states, optionally of one subject or purpose and
    /// last changed before a time.
    async fn withdrawals(
        &self,
        tenant: &str,
        subject_id: Option<&str>,
        purpose: Option<&str>,
        before: Option<DateTime<Utc>>,
    ) -> Result<Vec<Withdrawal>, RetentionError>;
    /// SubjectService.PurgeRecords.
    async fn purge(&self, tenant: &str, call: PurgeCall) -> Result<PurgeOutcome, RetentionError>;
    /// SubjectService.EraseSubject; the number of records erased.
    async fn erase(&self, tenant: &str, call: EraseCall) -> Result<i64, RetentionError>;
}

/// [`Upstream`] over gRPC.
pub struct GrpcUpstream {
    /// Channel to the tenants service.
    pub tenants: Channel,
    /// Channel to the subjects service.
    pub subjects: Channel,
    /// Channel to the consents service.
    pub consents: Channel,
    /// Service token signer.
    pub tokens: Arc<ServiceTokens>,
}

impl GrpcUpstream {
    fn req<T>(
        &self,
        msg: T,
        tenant: &str,
        service: &'static str,
    ) -> Result<tonic::Request<T>, RetentionError> {
        let token = self
            .tokens
            .for_tenant(tenant)
            .map_err(|_| RetentionError::Upstream("service token"))?;
        request(msg, &token).map_err(|_| RetentionError::Upstream(service))
    }
}

// Protobuf ↔ domain by explicit arms (vern_kit::proto_enum): stored names never follow
// the protobuf value names.
vern_kit::proto_enum!(pub(crate) category_to_pb, category_of_pb: DataCategory => common::DataCategory {
    Contact, Identity, Employment, Demographic, Behaviour, Communications, Preferences,
    Financial, Absence, Health
});

fn category_of(v: i32) -> Option<DataCategory> {
    common::DataCategory::try_from(v)
        .ok()
        .and_then(category_of_pb)
}

/// The protobuf value of a category.
pub fn category_pb(c: Option<DataCategory>) -> i32 {
    c.map_or(0, |c| category_to_pb(c) as i32)
}

fn time(t: Option<&prost_types::Timestamp>) -> Option<DateTime<Utc>> {
    t.and_then(from_timestamp)
}

#[async_trait::async_trait]
impl Upstream for GrpcUpstream {
    async fn purpose_exists(&self, tenant: &str, key: &str) -> Result<bool, RetentionError> {
        let mut c = tpb::tenant_service_client::TenantServiceClient::new(self.tenants.clone());
        let req = self.req(
            tpb::GetPurposeRequest {
                key: key.to_owned(),
            },
            tenant,
            "tenants",
        )?;
        match c.get_purpose(req).await {
            Ok(_) => Ok(true),
            Err(s) if matches!(s.code(), Code::NotFound | Code::InvalidArgument) => Ok(false),
            Err(_) => Err(RetentionError::Upstream("tenants")),
        }
    }

    async fn subject(
        &self,
        tenant: &str,
        subject_id: &str,
    ) -> Result<Option<SubjectSnapshot>, RetentionError> {
        let mut c = spb::subject_service_client::SubjectServiceClient::new(self.subjects.clone());
        let msg = spb::GetSubjectRequest {
            subject_id: subject_id.to_owned(),
            view: spb::SubjectView::Basic as i32,
            ..Default::default()
        };
        let s = match c.get_subject(self.req(msg, tenant, "subjects")?).await {
            Ok(s) => s.into_inner(),
            Err(s) if matches!(s.code(), Code::NotFound | Code::InvalidArgument) => {
                return Ok(None);
            }
            Err(_) => return Err(RetentionError::Upstream("subjects")),
        };
        let records = s
            .records
            .into_iter()
            .map(|r| {
                Ok(RecordInfo {
                    category: category_of(r.category),
                    collected_at: time(r.collected_at.as_ref())
                        .ok_or(RetentionError::Upstream("subjects"))?,
                    retain_until: time(r.retain_until_time.as_ref()),
                    record_id: r.record_id,
                    field: r.field,
                    purposes: r.purposes,
                    restricted: r.restricted,
                    legal_reference: r.legal_reference,
                })
            })
            .collect::<Result<Vec<_>, RetentionError>>()?;
        Ok(Some(SubjectSnapshot {
            relationship_end: time(s.relationship_end_time.as_ref()),
            records,
        }))
    }

    async fn withdrawals(
        &self,
        tenant: &str,
        subject_id: Option<&str>,
        purpose: Option<&str>,
        before: Option<DateTime<Utc>>,
    ) -> Result<Vec<Withdrawal>, RetentionError> {
        let mut c = cpb::consent_service_client::ConsentServiceClient::new(self.consents.clone());
        let mut out = vec![];
        let mut page_token = String::new();
        loop {
            let msg = cpb::ListConsentStatesRequest {
                page_size: 1000,
                page_token: page_token.clone(),
                subject_id: subject_id.unwrap_or_default().to_owned(),
                purpose: purpose.unwrap_or_default().to_owned(),
                statuses: vec![
                    cpb::ConsentStatus::Withdrawn as i32,
                    cpb::ConsentStatus::Objected as i32,
                ],
                update_before: before.map(to_timestamp),
            };
            let page = c
                .list_consent_states(self.req(msg, tenant, "consents")?)
                .await
                .map_err(|_| RetentionError::Upstream("consents"))?
                .into_inner();
            for s in page.consent_states {
                if let Some(t) = time(s.update_time.as_ref()) {
                    out.push(Withdrawal {
                        subject_id: s.subject_id,
                        purpose: s.purpose,
                        time: t,
                    });
                }
            }
            if page.next_page_token.is_empty() {
                return Ok(out);
            }
            page_token = page.next_page_token;
        }
    }

    async fn purge(&self, tenant: &str, call: PurgeCall) -> Result<PurgeOutcome, RetentionError> {
        let mut c = spb::subject_service_client::SubjectServiceClient::new(self.subjects.clone());
        let msg = spb::PurgeRecordsRequest {
            category: category_pb(call.category),
            purpose: call.purpose.unwrap_or_default(),
            older_than: call.older_than.map(to_timestamp),
            dry_run: call.dry_run,
            action: match call.action {
                Action::Delete => spb::PurgeAction::Delete as i32,
                Action::Anonymise => spb::PurgeAction::Anonymise as i32,
            },
            field: call.field.unwrap_or_default(),
            subject_ids: call.subject_ids,
            exclude_subject_ids: call.exclude_subject_ids,
            relationship_end_before: call.relationship_end_before.map(to_timestamp),
            retain_until_before: call.retain_until_before.map(to_timestamp),
            include_open_ended: call.include_open_ended,
            limit: call.limit,
            policy_id: call.policy_id,
            request_id: call.request_id,
        };
        let r = c
            .purge_records(self.req(msg, tenant, "subjects")?)
            .await
            .map_err(|s| {
                tracing::warn!(code = ?s.code(), "PurgeRecords failed");
                RetentionError::Upstream("subjects")
            })?
            .into_inner();
        let items = r
            .items
            .into_iter()
            .map(|i| {
                Ok(PurgedRecord {
                    category: category_of(i.category),
                    collected_at: time(i.collected_at.as_ref())
                        .ok_or(RetentionError::Upstream("subjects"))?,
                    subject_id: i.subject_id,
                    record_id: i.record_id,
                    field: i.field,
                    purposes: i.purposes,
                })
            })
            .collect::<Result<Vec<_>, RetentionError>>()?;
        Ok(PurgeOutcome {
            matched_count: r.matched_count,
            purged_count: r.purged_count,
            items,
            truncated: r.truncated,
        })
    }

    async fn erase(&self, tenant: &str, call: EraseCall) -> Result<i64, RetentionError> {
        let mut c = spb::subject_service_client::SubjectServiceClient::new(self.subjects.clone());
        let msg = spb::EraseSubjectRequest {
            subject_id: call.subject_id,
            reason: "retention sweep: what was kept after the erasure, decided again".into(),
            retain: call
                .retain
                .into_iter()
                .map(|k| spb::RetainedRecord {
                    record_id: k.record_id,
                    retain_until_time: k.retain_until.map(to_timestamp),
                    legal_reference: k.legal_reference,
                })
                .collect(),
            rights_request_id: String::new(),
            request_id: call.request_id,
        };
        let r = c
            .erase_subject(self.req(msg, tenant, "subjects")?)
            .await
            .map_err(|s| {
                tracing::warn!(code = ?s.code(), "EraseSubject failed");
                RetentionError::Upstream("subjects")
            })?
            .into_inner();
        Ok(i64::from(r.erased_record_count))
    }
}
