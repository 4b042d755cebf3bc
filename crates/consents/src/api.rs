//! gRPC handlers of ConsentService: decode, convert, call the use cases, convert back.

use prost::Message;
use tonic::{Request, Response, Status};
use vern_kit::context::CallContext;
use vern_kit::error::{ApiError, FieldViolation};
use vern_kit::page;
use vern_kit::time::{Bounds, micros, to_timestamp};
use vern_proto::common::v1 as common;
use vern_proto::consents::v1 as pb;

use crate::domain::{
    Channel, ConsentAction, ConsentEvent, ConsentStatus, Decision, LegalBasis, PurposeRule, Reason,
    SubjectChange, SubjectStatus,
};
use crate::purposes::Versioned;
use crate::service::{Consents, NewEvent};
use crate::store::StoredState;

/// The ConsentService implementation.
#[derive(Clone, Debug)]
pub struct ConsentApi {
    consents: Consents,
}

impl ConsentApi {
    /// Handlers over the use cases.
    pub fn new(consents: Consents) -> Self {
        Self { consents }
    }
}

fn invalid(v: FieldViolation) -> Status {
    ApiError::InvalidArgument(vec![v]).into()
}

fn time(
    field: &str,
    t: Option<&prost_types::Timestamp>,
    bounds: Bounds,
) -> Result<Option<chrono::DateTime<chrono::Utc>>, Status> {
    vern_kit::time::field(field, t, bounds).map_err(invalid)
}

// Protobuf ↔ domain by explicit arms (vern_kit::proto_enum): stored names and metric
// labels never follow the protobuf value names.
vern_kit::proto_enum!(action_to_pb, action_of: ConsentAction => pb::ConsentAction {
    Grant, Withdraw, Object
});
vern_kit::proto_enum!(channel_to_pb, channel_of: Channel => pb::ConsentChannel {
    WebForm, Email, Paper, Phone, InPerson, Api
});
vern_kit::proto_enum!(pub(crate) basis_to_pb, basis_of: LegalBasis => common::LegalBasis {
    Consent, Contract, LegalObligation, VitalInterests, PublicTask, LegitimateInterests
});
vern_kit::proto_enum!(status_to_pb, status_of: ConsentStatus => pb::ConsentStatus {
    Granted, Withdrawn, Objected, Expired, NotRecorded
});
vern_kit::proto_enum!(reason_to_pb, reason_of: Reason => pb::CheckReason {
    ConsentGranted, NoObjection, BasisAllows, CompellingGrounds, NoConsent, ConsentWithdrawn,
    ConsentExpired, SubjectObjected, SubjectRestricted, SubjectErased, SubjectUnknown,
    PurposeUnknown
});

fn action_pb(a: ConsentAction) -> i32 {
    action_to_pb(a) as i32
}

fn channel_pb(c: Channel) -> i32 {
    channel_to_pb(c) as i32
}

fn basis_pb(b: Option<LegalBasis>) -> i32 {
    b.map_or(0, |b| basis_to_pb(b) as i32)
}

fn event_pb(e: ConsentEvent) -> pb::ConsentEvent {
    pb::ConsentEvent {
        tenant_id: e.tenant_id,
        event_id: e.event_id,
        subject_id: e.subject_id,
        purpose: e.purpose,
        action: action_pb(e.action),
        channel: channel_pb(e.channel),
        notice_version: e.notice_version,
        evidence: e.evidence,
        actor: e.actor,
        recorded_by: e.recorded_by,
        request_id: e.request_id,
        occur_time: Some(to_timestamp(e.occur_time)),
        expires_at: e.expires_at.map(to_timestamp),
        rights_request_id: e.rights_request_id,
        create_time: Some(to_timestamp(e.create_time)),
    }
}

fn state_pb(tenant: &str, s: StoredState) -> pb::ConsentState {
    let now = chrono::Utc::now();
    let status = s.state.status(now);
    let latest = s.state.latest.clone();
    pb::ConsentState {
        tenant_id: tenant.to_owned(),
        subject_id: s.subject_id,
        purpose: s.purpose,
        status: status_to_pb(status) as i32,
        latest_event_id: latest
            .as_ref()
            .map(|l| l.event_id.clone())
            .unwrap_or_default(),
        update_time: Some(to_timestamp(s.update_time)),
        expires_at: latest.and_then(|l| l.expires_at).map(to_timestamp),
        notice_version: s.notice_version,
        channel: channel_pb(s.channel),
        compelling_grounds: s.grounds.map(grounds_pb),
    }
}

fn grounds_pb(d: crate::domain::GroundsDecision) -> pb::CompellingGroundsDecision {
    pb::CompellingGroundsDecision {
        decision_id: d.decision_id,
        subject_id: d.subject_id,
        purpose: d.purpose,
        objection_event_id: d.objection_event_id,
        reason: d.reason,
        decided_by: d.decided_by,
        decide_time: Some(to_timestamp(d.decide_time)),
    }
}

fn decision_fields(d: &Decision) -> (bool, i32, String) {
    let reason = reason_to_pb(d.reason) as i32;
    // Every Check and BatchCheck decision passes here.
    vern_kit::metrics::consent_check(d.allowed, reason);
    (d.allowed, reason, d.evidence_id.clone().unwrap_or_default())
}

#[tonic::async_trait]
impl pb::consent_service_server::ConsentService for ConsentApi {
    async fn rewrap_data_keys(
        &self,
        req: Request<common::RewrapDataKeysRequest>,
    ) -> Result<Response<common::RewrapDataKeysResponse>, Status> {
        let page = self
            .consents
            .store()
            .rewrap_data_keys(req.get_ref())
            .await?;
        Ok(Response::new(page))
    }

    async fn count_data_keys(
        &self,
        _req: Request<common::CountDataKeysRequest>,
    ) -> Result<Response<common::CountDataKeysResponse>, Status> {
        Ok(Response::new(
            self.consents.store().count_data_keys().await?,
        ))
    }

    async fn record_consent(
        &self,
        req: Request<pb::RecordConsentRequest>,
    ) -> Result<Response<pb::ConsentEvent>, Status> {
        let ctx = CallContext::of(&req)?;
        let tenant = ctx.tenant()?.clone();
        let r = req.into_inner();
        vern_kit::audit::subject(&r.subject_id);
        vern_kit::validate::request_id(&r.request_id).map_err(invalid)?;
        let key = self.consents.request_key(
            &tenant,
            &r.request_id,
            "RecordConsent",
            &r.encode_to_vec(),
        )?;
        let action = match r.action {
            0 => None,
            v => Some(
                pb::ConsentAction::try_from(v)
                    .ok()
                    .and_then(action_of)
                    .ok_or_else(|| {
                        invalid(FieldViolation::new("action", "is not a known value"))
                    })?,
            ),
        };
        let channel = match r.channel {
            0 => None,
            v => Some(
                pb::ConsentChannel::try_from(v)
                    .ok()
                    .and_then(channel_of)
                    .ok_or_else(|| {
                        invalid(FieldViolation::new("channel", "is not a known value"))
                    })?,
            ),
        };
        let new = NewEvent {
            subject_id: r.subject_id,
            purpose: r.purpose,
            action,
            channel,
            notice_version: r.notice_version,
            evidence: r.evidence,
            actor: r.actor,
            rights_request_id: r.rights_request_id,
            occur_time: time("occur_time", r.occur_time.as_ref(), Bounds::Event)?,
            expires_at: time("expires_at", r.expires_at.as_ref(), Bounds::Business)?,
        };
        let e = self
            .consents
            .record(&tenant, &ctx.sub, new, &r.request_id, key)
            .await?;
        Ok(Response::new(event_pb(e)))
    }

    async fn record_compelling_grounds(
        &self,
        req: Request<pb::RecordCompellingGroundsRequest>,
    ) -> Result<Response<pb::CompellingGroundsDecision>, Status> {
        let ctx = CallContext::of(&req)?;
        let tenant = ctx.tenant()?.clone();
        let r = req.into_inner();
        vern_kit::audit::subject(&r.subject_id);
        vern_kit::validate::request_id(&r.request_id).map_err(invalid)?;
        let key = self.consents.request_key(
            &tenant,
            &r.request_id,
            "RecordCompellingGrounds",
            &r.encode_to_vec(),
        )?;
        let d = self
            .consents
            .record_grounds(
                &tenant,
                &ctx.sub,
                crate::service::NewGrounds {
                    subject_id: &r.subject_id,
                    purpose: &r.purpose,
                    reason: &r.reason,
                },
                &r.request_id,
                key,
            )
            .await?;
        Ok(Response::new(grounds_pb(d)))
    }

    async fn get_consent_state(
        &self,
        req: Request<pb::GetConsentStateRequest>,
    ) -> Result<Response<pb::ConsentState>, Status> {
        let ctx = CallContext::of(&req)?;
        let tenant = ctx.tenant()?.clone();
        let r = req.into_inner();
        vern_kit::audit::subject(&r.subject_id);
        let found = self
            .consents
            .state(&tenant, &r.subject_id, &r.purpose)
            .await?;
        Ok(Response::new(match found {
            Some(s) => state_pb(tenant.as_str(), s),
            None => pb::ConsentState {
                tenant_id: tenant.as_str().to_owned(),
                subject_id: r.subject_id,
                purpose: r.purpose,
                status: pb::ConsentStatus::NotRecorded as i32,
                ..Default::default()
            },
        }))
    }

    async fn get_consent_stats(
        &self,
        req: Request<pb::GetConsentStatsRequest>,
    ) -> Result<Response<pb::ConsentStats>, Status> {
        let ctx = CallContext::of(&req)?;
        let tenant = ctx.tenant()?.clone();
        let purposes = self
            .consents
            .stats(&tenant)
            .await?
            .into_iter()
            .map(
                |(purpose, granted_count, withdrawn_count)| pb::PurposeConsentCount {
                    purpose,
                    granted_count,
                    withdrawn_count,
                },
            )
            .collect();
        Ok(Response::new(pb::ConsentStats { purposes }))
    }

    async fn list_consent_states(
        &self,
        req: Request<pb::ListConsentStatesRequest>,
    ) -> Result<Response<pb::ListConsentStatesResponse>, Status> {
        let ctx = CallContext::of(&req)?;
        let tenant = ctx.tenant()?.clone();
        let r = req.into_inner();
        let limit = page::page_size(r.page_size)?;
        let update_before = time("update_before", r.update_before.as_ref(), Bounds::Protobuf)?;
        let after = page::decode_token("consent_states", &r.page_token)?
            .map(|k| match k.split_once('\n') {
                Some((s, p)) => Ok((s.to_owned(), p.to_owned())),
                None => Err(invalid(FieldViolation::new(
                    "page_token",
                    "is not a token this list issued",
                ))),
            })
            .transpose()?;
        let mut wanted = vec![];
        for (i, s) in r.statuses.iter().enumerate() {
            match pb::ConsentStatus::try_from(*s) {
                Ok(pb::ConsentStatus::Unspecified) | Err(_) => {
                    return Err(invalid(FieldViolation::new(
                        format!("statuses[{i}]"),
                        "is not a known value",
                    )));
                }
                Ok(s) => wanted.push(s as i32),
            }
        }
        let page = self
            .consents
            .list_states(
                &tenant,
                (!r.subject_id.is_empty()).then_some(r.subject_id.as_str()),
                (!r.purpose.is_empty()).then_some(r.purpose.as_str()),
                update_before,
                after,
                limit,
            )
            .await?;
        let last = page
            .items
            .last()
            .map(|s| format!("{}\n{}", s.subject_id, s.purpose));
        let next_page_token = page::next_token("consent_states", page.more, last.as_deref());
        // The status filter applies within the page (a page may hold fewer items).
        let consent_states = page
            .items
            .into_iter()
            .map(|s| state_pb(tenant.as_str(), s))
            .filter(|s| wanted.is_empty() || wanted.contains(&s.status))
            .collect();
        Ok(Response::new(pb::ListConsentStatesResponse {
            consent_states,
            next_page_token,
        }))
    }

    async fn list_consent_history(
        &self,
        req: Request<pb::ListConsentHistoryRequest>,
    ) -> Result<Response<pb::ListConsentHistoryResponse>, Status> {
        let ctx = CallContext::of(&req)?;
        let tenant = ctx.tenant()?.clone();
        let r = req.into_inner();
        vern_kit::audit::subject(&r.subject_id);
        let limit = page::page_size(r.page_size)?;
        let after = page::decode_token("consent_history", &r.page_token)?;
        let page = self
            .consents
            .history(
                &tenant,
                &r.subject_id,
                (!r.purpose.is_empty()).then_some(r.purpose.as_str()),
                after.as_deref(),
                limit,
            )
            .await?;
        let next_page_token = page::next_token(
            "consent_history",
            page.more,
            page.items.last().map(|e| e.event_id.as_str()),
        );
        Ok(Response::new(pb::ListConsentHistoryResponse {
            events: page.items.into_iter().map(event_pb).collect(),
            next_page_token,
        }))
    }

    async fn check(
        &self,
        req: Request<pb::CheckRequest>,
    ) -> Result<Response<pb::CheckResponse>, Status> {
        let ctx = CallContext::of(&req)?;
        let tenant = ctx.tenant()?;
        let r = req.get_ref();
        let (d, basis) = self
            .consents
            .check(tenant, &r.subject_id, &r.purpose)
            .await?;
        let (allowed, reason, evidence_id) = decision_fields(&d);
        Ok(Response::new(pb::CheckResponse {
            allowed,
            reason,
            legal_basis: basis_pb(basis),
            evidence_id,
        }))
    }

    async fn batch_check(
        &self,
        req: Request<pb::BatchCheckRequest>,
    ) -> Result<Response<pb::BatchCheckResponse>, Status> {
        let ctx = CallContext::of(&req)?;
        let tenant = ctx.tenant()?;
        let r = req.get_ref();
        let (results, basis) = self
            .consents
            .batch_check(tenant, &r.purpose, &r.subject_ids)
            .await?;
        let legal_basis = basis_pb(basis);
        Ok(Response::new(pb::BatchCheckResponse {
            results: results
                .into_iter()
                .map(|(subject_id, d)| {
                    let (allowed, reason, evidence_id) = decision_fields(&d);
                    pb::CheckResult {
                        subject_id,
                        allowed,
                        reason,
                        legal_basis,
                        evidence_id,
                    }
                })
                .collect(),
            legal_basis,
        }))
    }

    async fn apply_subject_states(
        &self,
        req: Request<pb::ApplySubjectStatesRequest>,
    ) -> Result<Response<pb::ApplySubjectStatesResponse>, Status> {
        let ctx = CallContext::of(&req)?;
        let tenant = ctx.tenant()?.clone();
        let changes = req
            .into_inner()
            .changes
            .into_iter()
            .enumerate()
            .map(|(i, c)| {
                let status = match pb::SubjectState::try_from(c.state) {
                    Ok(pb::SubjectState::Active) => SubjectStatus::Active,
                    Ok(pb::SubjectState::Restricted) => SubjectStatus::Restricted,
                    Ok(pb::SubjectState::Erased) => SubjectStatus::Erased,
                    _ => SubjectStatus::Unknown,
                };
                let at = time(
                    &format!("changes[{i}].change_time"),
                    c.change_time.as_ref(),
                    Bounds::Business,
                )?
                .unwrap_or_else(chrono::Utc::now);
                Ok(SubjectChange {
                    subject_id: c.subject_id,
                    status,
                    version: c.version,
                    at,
                    restricted_purposes: c.restricted_purposes,
                })
            })
            .collect::<Result<_, Status>>()?;
        let (applied, ignored) = self.consents.apply_subject_states(&tenant, changes).await?;
        Ok(Response::new(pb::ApplySubjectStatesResponse {
            applied_count: applied as i32,
            ignored_count: ignored as i32,
        }))
    }

    async fn apply_purposes(
        &self,
        req: Request<pb::ApplyPurposesRequest>,
    ) -> Result<Response<pb::ApplyPurposesResponse>, Status> {
        let ctx = CallContext::of(&req)?;
        let tenant = ctx.tenant()?.clone();
        let mut defs = vec![];
        for (i, p) in req.into_inner().purposes.into_iter().enumerate() {
            crate::service::purpose_key(&format!("purposes[{i}].key"), &p.key).map_err(invalid)?;
            let rule = if p.deleted {
                None
            } else {
                let basis = common::LegalBasis::try_from(p.legal_basis)
                    .ok()
                    .and_then(basis_of)
                    .ok_or_else(|| {
                        invalid(FieldViolation::new(
                            format!("purposes[{i}].legal_basis"),
                            "is required",
                        ))
                    })?;
                Some(PurposeRule {
                    legal_basis: basis,
                    direct_marketing: p.direct_marketing,
                })
            };
            // Unversioned (0) definitions apply only where nothing newer is known.
            let version = p.update_time.as_ref().map(micros).unwrap_or(0);
            defs.push((p.key, Versioned { rule, version }));
        }
        let n = self.consents.apply_purposes(&tenant, defs).await?;
        Ok(Response::new(pb::ApplyPurposesResponse {
            applied_count: n as i32,
        }))
    }
    async fn list_outbox_rows(
        &self,
        req: Request<vern_proto::common::v1::ListOutboxRowsRequest>,
    ) -> Result<Response<vern_proto::common::v1::ListOutboxRowsResponse>, Status> {
        let db = self.consents.store().connection();
        Ok(Response::new(
            vern_kit::outbox::admin::list(db, req.get_ref()).await?,
        ))
    }

    async fn retry_outbox_rows(
        &self,
        req: Request<vern_proto::common::v1::RetryOutboxRowsRequest>,
    ) -> Result<Response<vern_proto::common::v1::RetryOutboxRowsResponse>, Status> {
        let db = self.consents.store().connection();
        Ok(Response::new(
            vern_kit::outbox::admin::retry(db, req.get_ref()).await?,
        ))
    }
}
