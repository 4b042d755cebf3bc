//! gRPC handlers of RightsService: decode, convert, call the use cases, convert back.

use std::time::Duration;

use prost::Message;
use tokio_stream::wrappers::ReceiverStream;
use tonic::codegen::BoxStream;
use tonic::{Request, Response, Status};
use vern_kit::context::CallContext;
use vern_kit::error::{ApiError, FieldViolation, Violations};
use vern_kit::idempotency::Key;
use vern_kit::page;
use vern_kit::time::{Bounds, to_timestamp};
use vern_proto::common::v1 as common;
use vern_proto::rights::v1 as pb;

use crate::domain::{
    Channel, ErasureCause, EventType, RejectionGround, RequestStatus, RequestType,
    VerificationMethod,
};
use crate::error::RightsError;
use crate::model::{
    Confirmation, Event, ExternalRef, Identity, Rectification, RetainedItem, RightsRequest,
    Settings,
};
use crate::report::Report;
use crate::service::{NewRequest, Rights, WATCH_BATCH, request_id_of, subject_id};
use crate::store::{ErasedSubject, EventFilter, EventRef, RequestFilter, RestrictionChange};

/// How often a tenant's watched feed is read when nothing woke it: events committed
/// by another replica appear within this time (one read per tenant, not per watcher).
pub const WATCH_POLL: Duration = crate::feed::POLL;

/// The RightsService implementation.
#[derive(Clone, Debug)]
pub struct RightsApi {
    rights: Rights,
    /// The server's largest message (`server.max_message_bytes`): a report above it is
    /// refused by GetReport with a pointer to ExportReport instead of failing to encode.
    max_message_bytes: usize,
}

/// Bytes of the report's JSON per ExportReport chunk (less under a lower message limit).
pub const REPORT_CHUNK_BYTES: usize = 1024 * 1024;

impl RightsApi {
    /// Handlers over the use cases.
    pub fn new(rights: Rights) -> Self {
        Self {
            rights,
            max_message_bytes: usize::MAX,
        }
    }

    /// Answers GetReport with REPORT_TOO_LARGE above `bytes` (the server's limit).
    pub fn with_message_limit(mut self, bytes: usize) -> Self {
        self.max_message_bytes = bytes;
        self
    }

    /// The idempotency key of a call whose request carries free text about the
    /// subject's case (a note, a reason): fingerprinted with the tenant's blind-index
    /// key, so no unkeyed (guessable) hash of that text is stored. An answer stored by
    /// an older version under the plain hash still matches (never written so).
    /// `None` when `request_id` is empty.
    fn keyed(
        &self,
        tenant: &str,
        request_id: &str,
        method: &'static str,
        request: &[u8],
    ) -> Result<Option<Key>, Status> {
        if request_id.is_empty() {
            return Ok(None);
        }
        let fps = self.rights.sealer().fingerprints(tenant, request)?;
        Ok(Key::fingerprinted(Some(tenant), request_id, method, &fps)
            .map(|k| k.also_matching(request)))
    }
}

fn invalid(field: &str, why: &str) -> Status {
    ApiError::InvalidArgument(vec![FieldViolation::new(field, why)]).into()
}

fn time(
    field: &str,
    t: Option<&prost_types::Timestamp>,
    bounds: Bounds,
) -> Result<Option<chrono::DateTime<chrono::Utc>>, Status> {
    vern_kit::time::field(field, t, bounds).map_err(|v| ApiError::InvalidArgument(vec![v]).into())
}

// Protobuf ↔ domain by explicit arms (vern_kit::proto_enum): stored names, report
// texts and feed values never follow the protobuf value names.
vern_kit::proto_enum!(pub(crate) type_to_pb, type_of: RequestType => pb::RequestType {
    Access, Rectification, Erasure, Restriction, Objection, Portability, WithdrawConsent
});
vern_kit::proto_enum!(pub(crate) status_to_pb, status_of: RequestStatus => pb::RequestStatus {
    Received, Verified, InProgress, Completed, Rejected
});
vern_kit::proto_enum!(pub(crate) channel_to_pb, channel_of: Channel => pb::RequestChannel {
    WebForm, Email, Paper, Phone, InPerson, Api
});
vern_kit::proto_enum!(pub(crate) method_to_pb, method_of: VerificationMethod => pb::VerificationMethod {
    ElectronicId, IdDocument, EmailConfirmation, SmsConfirmation, InPerson, AuthenticatedSession,
    Other
});
vern_kit::proto_enum!(pub(crate) ground_to_pb, ground_of: RejectionGround => pb::RejectionGround {
    ManifestlyUnfounded, Excessive, IdentityNotVerified, LegalExemption, WithdrawnBySubject, Other
});
vern_kit::proto_enum!(pub(crate) event_type_to_pb, event_type_of: EventType => pb::RightsEventType {
    Erased, Restricted, RestrictionLifted, Rectified, Objected, ConsentWithdrawn, RecordsErased
});
vern_kit::proto_enum!(pub(crate) cause_to_pb, cause_of: ErasureCause => pb::ErasureCause {
    RightsRequest, Direct, Retention
});

/// The stored name of a data category (records, reports, feed details).
pub(crate) fn category_name(c: common::DataCategory) -> &'static str {
    use common::DataCategory as C;
    match c {
        C::Unspecified => "DATA_CATEGORY_UNSPECIFIED",
        C::Contact => "CONTACT",
        C::Identity => "IDENTITY",
        C::Employment => "EMPLOYMENT",
        C::Demographic => "DEMOGRAPHIC",
        C::Behaviour => "BEHAVIOUR",
        C::Communications => "COMMUNICATIONS",
        C::Preferences => "PREFERENCES",
        C::Financial => "FINANCIAL",
        C::Absence => "ABSENCE",
        C::Health => "HEALTH",
    }
}

/// The data category of a stored name; `None` for an unknown or the unspecified name.
pub(crate) fn category_of_name(s: &str) -> Option<common::DataCategory> {
    use common::DataCategory as C;
    Some(match s {
        "CONTACT" => C::Contact,
        "IDENTITY" => C::Identity,
        "EMPLOYMENT" => C::Employment,
        "DEMOGRAPHIC" => C::Demographic,
        "BEHAVIOUR" => C::Behaviour,
        "COMMUNICATIONS" => C::Communications,
        "PREFERENCES" => C::Preferences,
        "FINANCIAL" => C::Financial,
        "ABSENCE" => C::Absence,
        "HEALTH" => C::Health,
        _ => return None,
    })
}

/// The stored name of a legal basis (reports, the objection rules).
pub(crate) fn basis_name(b: common::LegalBasis) -> &'static str {
    use common::LegalBasis as B;
    match b {
        B::Unspecified => "LEGAL_BASIS_UNSPECIFIED",
        B::Consent => "CONSENT",
        B::Contract => "CONTRACT",
        B::LegalObligation => "LEGAL_OBLIGATION",
        B::VitalInterests => "VITAL_INTERESTS",
        B::PublicTask => "PUBLIC_TASK",
        B::LegitimateInterests => "LEGITIMATE_INTERESTS",
    }
}

/// The legal basis of a stored name; `None` for an unknown or the unspecified name.
pub(crate) fn basis_of_name(s: &str) -> Option<common::LegalBasis> {
    use common::LegalBasis as B;
    Some(match s {
        "CONSENT" => B::Consent,
        "CONTRACT" => B::Contract,
        "LEGAL_OBLIGATION" => B::LegalObligation,
        "VITAL_INTERESTS" => B::VitalInterests,
        "PUBLIC_TASK" => B::PublicTask,
        "LEGITIMATE_INTERESTS" => B::LegitimateInterests,
        _ => return None,
    })
}

/// A protobuf enum value as our enum: 0 → `None`, unknown → INVALID_ARGUMENT. `of`
/// converts a nonzero value (`None` when unknown).
fn decode<E>(field: &str, v: i32, of: impl Fn(i32) -> Option<E>) -> Result<Option<E>, Status> {
    if v == 0 {
        return Ok(None);
    }
    of(v)
        .map(Some)
        .ok_or_else(|| invalid(field, "is not a known value"))
}

fn ts(t: Option<chrono::DateTime<chrono::Utc>>) -> Option<prost_types::Timestamp> {
    t.map(to_timestamp)
}

fn ext_pb(r: &ExternalRef) -> pb::ExternalRef {
    pb::ExternalRef {
        system: r.system.clone(),
        id: r.id.clone(),
    }
}

fn identity_pb(i: &Identity) -> pb::Identity {
    pb::Identity {
        email: i.email.clone(),
        phone: i.phone.clone(),
        national_id: i.national_id.clone(),
        name: i.name.clone(),
        external_ref: i.external_ref.as_ref().map(ext_pb),
    }
}

fn confirmation_pb(c: &Confirmation) -> pb::Confirmation {
    pb::Confirmation {
        system: c.system.clone(),
        event_id: c.event_id.clone(),
        acked_by: c.acked_by.clone(),
        ack_time: Some(to_timestamp(c.ack_time)),
    }
}

fn category_pb(name: &str) -> i32 {
    category_of_name(name).map_or(0, |c| c as i32)
}

fn retained_pb(r: &RetainedItem) -> pb::RetainedItem {
    pb::RetainedItem {
        record_id: r.record_id.clone(),
        category: category_pb(&r.category),
        field: r.field.clone(),
        retain_until_time: ts(r.retain_until_time),
        legal_reference: r.legal_reference.clone(),
    }
}

fn request_pb(r: RightsRequest) -> pb::RightsRequest {
    let now = chrono::Utc::now();
    pb::RightsRequest {
        overdue: r.overdue(now),
        tenant_id: r.tenant_id,
        rights_request_id: r.rights_request_id,
        r#type: type_to_pb(r.request_type) as i32,
        status: status_to_pb(r.status) as i32,
        subject_id: r.subject_id,
        identity: r.personal.identity.as_ref().map(identity_pb),
        channel: channel_to_pb(r.channel) as i32,
        request_id: r.request_id,
        description: r.personal.description,
        purposes: r.purposes,
        rectifications: r
            .personal
            .rectifications
            .into_iter()
            .map(|x| pb::Rectification {
                field: x.field,
                record_id: x.record_id,
                value: x.value,
            })
            .collect(),
        received_at: Some(to_timestamp(r.received_at)),
        due_at: Some(to_timestamp(r.due_at)),
        original_due_at: Some(to_timestamp(r.original_due_at)),
        extended: r.extended,
        extension_months: r.extension_months,
        extension_reason: r.personal.extension_reason,
        subject_informed_at: ts(r.subject_informed_at),
        verify_time: ts(r.verify_time),
        verified_by: r.verified_by,
        verification_method: r.verification_method.map_or(0, |m| method_to_pb(m) as i32),
        rejection_ground: r.rejection_ground.map_or(0, |g| ground_to_pb(g) as i32),
        rejection_reason: r.personal.rejection_reason,
        reject_time: ts(r.reject_time),
        complete_time: ts(r.complete_time),
        outcome: r.outcome.map(|o| pb::Outcome {
            summary: o.summary,
            erased_record_count: o.erased_record_count,
            retained: o.retained.iter().map(retained_pb).collect(),
            event_ids: o.event_ids,
        }),
        required_systems: r.required_systems,
        confirmations: r.confirmations.iter().map(confirmation_pb).collect(),
        pending_systems: r.pending_systems,
        update_time: Some(to_timestamp(r.update_time)),
        language: r
            .language
            .map(|l| l.as_str().to_owned())
            .unwrap_or_default(),
    }
}

/// The opaque resume token of an event.
pub fn cursor_of(seq: i64) -> String {
    page::encode_token("rights_feed", &seq.to_string())
}

fn seq_of_cursor(field: &str, cursor: &str) -> Result<i64, Status> {
    let bad = || invalid(field, "is not a cursor of this feed");
    match page::decode_token("rights_feed", cursor).map_err(|_| bad())? {
        None => Ok(0),
        Some(s) => s.parse::<i64>().ok().filter(|n| *n >= 0).ok_or_else(bad),
    }
}

fn event_pb(e: Event) -> pb::RightsEvent {
    pb::RightsEvent {
        cursor: cursor_of(e.seq),
        tenant_id: e.tenant_id,
        event_id: e.event_id,
        seq: e.seq,
        r#type: event_type_to_pb(e.event_type) as i32,
        subject_id: e.subject_id,
        external_refs: e.external_refs.iter().map(ext_pb).collect(),
        rights_request_id: e.rights_request_id,
        purposes: e.purposes,
        fields: e.fields,
        retain_until_time: ts(e.retain_until_time),
        occur_time: Some(to_timestamp(e.occur_time)),
        confirmations: e.confirmations.iter().map(confirmation_pb).collect(),
        erasure_cause: e.erasure.cause.map_or(0, |c| cause_to_pb(c) as i32),
        erased_records: e
            .erasure
            .records
            .into_iter()
            .map(|r| pb::ErasedRecord {
                record_id: r.record_id,
                category: category_pb(&r.category),
                field: r.field,
            })
            .collect(),
        policy_id: e.erasure.policy_id,
    }
}

fn settings_pb(s: Settings) -> pb::RightsSettings {
    pb::RightsSettings {
        tenant_id: s.tenant_id,
        required_systems: s.required_systems,
        automated_decision_making: s.automated_decision_making,
        update_time: ts(s.update_time),
        default_language: s.default_language.as_str().to_owned(),
    }
}

/// The report as its JSON document (Report.json, ExportReport).
pub fn report_json(r: &Report) -> Result<String, Status> {
    serde_json::to_string_pretty(r)
        .map_err(|_| Status::from(ApiError::Internal("report not serialisable")))
}

/// The stored report as the `Report` message, with `json` the same report as one
/// JSON document.
pub fn report_pb(r: &Report) -> Result<pb::Report, Status> {
    let json = report_json(r)?;
    Ok(pb::Report {
        rights_request_id: r.rights_request_id.clone(),
        r#type: RequestType::parse(&r.request_type).map_or(0, |t| type_to_pb(t) as i32),
        subject_id: r.subject_id.clone(),
        generate_time: Some(to_timestamp(r.generate_time)),
        controller: Some(pb::ReportController {
            tenant_id: r.controller.tenant_id.clone(),
            name: r.controller.name.clone(),
            org_number: r.controller.org_number.clone(),
            dpo_email: r.controller.dpo_email.clone(),
        }),
        identifiers: r.identifiers.as_ref().map(identity_pb),
        external_refs: r.external_refs.iter().map(ext_pb).collect(),
        data: r
            .data
            .iter()
            .map(|d| pb::ReportRecord {
                record_id: d.record_id.clone(),
                category: category_pb(&d.category),
                field: d.field.clone(),
                value: d.value.clone(),
                source: d.source.clone(),
                purposes: d.purposes.clone(),
                collected_at: ts(d.collected_at),
                provided_by_subject: d.provided_by_subject,
                restricted: d.restricted,
            })
            .collect(),
        purposes: r
            .purposes
            .iter()
            .map(|p| pb::ReportPurpose {
                key: p.key.clone(),
                description: p.description.clone(),
                legal_basis: basis_of_name(&p.legal_basis).map_or(0, |b| b as i32),
                legitimate_interest: p.legitimate_interest.clone(),
                data_categories: p.data_categories.iter().map(|c| category_pb(c)).collect(),
                recipients: p
                    .recipients
                    .iter()
                    .map(|x| pb::ReportRecipient {
                        name: x.name.clone(),
                        role: x.role.clone(),
                        country: x.country.clone(),
                        transfer_safeguard: x.transfer_safeguard.clone(),
                        end_time: ts(x.end_time),
                    })
                    .collect(),
                retention: p.retention.clone(),
                direct_marketing: p.direct_marketing,
                consent_status: p.consent_status.clone(),
                retention_rules: p.retention_rules.iter().map(retention_pb).collect(),
            })
            .collect(),
        retention: r.retention.iter().map(retention_pb).collect(),
        rights: r.rights.clone(),
        complaint_authority: Some(pb::ComplaintAuthority {
            name: r.complaint_authority.name.clone(),
            url: r.complaint_authority.url.clone(),
        }),
        automated_decision_making: r.automated_decision_making.clone(),
        retained: r.retained.iter().map(retained_pb).collect(),
        erased_record_count: r.erased_record_count,
        json,
        language: r.language.clone(),
    })
}

fn retention_pb(x: &crate::report::ReportRetention) -> pb::ReportRetention {
    pb::ReportRetention {
        category: category_pb(&x.category),
        purpose: x.purpose.clone(),
        period: x.period.clone(),
        anchor: x.anchor.clone(),
        legal_reference: x.legal_reference.clone(),
        field: x.field.clone(),
    }
}

fn key(tenant: &str, request_id: &str, method: &'static str, bytes: &[u8]) -> Option<Key> {
    Key::new(Some(tenant), request_id, method, bytes)
}

fn check_request_id(id: &str) -> Result<(), Status> {
    vern_kit::validate::request_id(id).map_err(|v| ApiError::InvalidArgument(vec![v]).into())
}

fn event_type_names(field: &str, types: &[i32]) -> Result<Vec<String>, Status> {
    types
        .iter()
        .enumerate()
        .map(|(i, t)| {
            decode(&format!("{field}[{i}]"), *t, |v| {
                pb::RightsEventType::try_from(v)
                    .ok()
                    .and_then(event_type_of)
            })?
            .map(|e| e.as_str().to_owned())
            .ok_or_else(|| invalid(&format!("{field}[{i}]"), "is not a known value"))
        })
        .collect()
}

#[tonic::async_trait]
impl pb::rights_service_server::RightsService for RightsApi {
    async fn rewrap_data_keys(
        &self,
        req: Request<common::RewrapDataKeysRequest>,
    ) -> Result<Response<common::RewrapDataKeysResponse>, Status> {
        let r = &self.rights;
        let page = r
            .store
            .rewrap_data_keys(r.sealer.keyring(), req.get_ref())
            .await?;
        Ok(Response::new(page))
    }

    async fn count_data_keys(
        &self,
        _req: Request<common::CountDataKeysRequest>,
    ) -> Result<Response<common::CountDataKeysResponse>, Status> {
        let r = &self.rights;
        Ok(Response::new(
            r.store.count_data_keys(r.sealer.keyring()).await?,
        ))
    }

    async fn submit_request(
        &self,
        req: Request<pb::SubmitRequestRequest>,
    ) -> Result<Response<pb::SubmitRequestResponse>, Status> {
        let ctx = CallContext::of(&req)?;
        let tenant = ctx.tenant()?.clone();
        let r = req.into_inner();
        check_request_id(&r.request_id)?;
        // The request carries personal data: its fingerprint is keyed.
        let k = if r.request_id.is_empty() {
            None
        } else {
            let fps = self
                .rights
                .sealer()
                .fingerprints(tenant.as_str(), &r.encode_to_vec())?;
            Key::fingerprinted(Some(tenant.as_str()), &r.request_id, "SubmitRequest", &fps)
        };
        let request_type = decode("type", r.r#type, |v| {
            pb::RequestType::try_from(v).ok().and_then(type_of)
        })?;
        let channel = decode("channel", r.channel, |v| {
            pb::RequestChannel::try_from(v).ok().and_then(channel_of)
        })?;
        let (subject_id, identity) = match r.requester {
            Some(pb::submit_request_request::Requester::SubjectId(s)) => {
                if s.is_empty() {
                    return Err(invalid("subject_id", "is empty"));
                }
                (s, None)
            }
            Some(pb::submit_request_request::Requester::Identity(i)) => (
                String::new(),
                Some(Identity {
                    email: i.email,
                    phone: i.phone,
                    national_id: i.national_id,
                    name: i.name,
                    external_ref: i.external_ref.map(|x| ExternalRef {
                        system: x.system,
                        id: x.id,
                    }),
                }),
            ),
            None => (String::new(), None),
        };
        let new = NewRequest {
            request_type,
            subject_id,
            identity,
            channel,
            received_at: time("received_at", r.received_at.as_ref(), Bounds::Event)?,
            description: r.description,
            purposes: r.purposes,
            rectifications: r
                .rectifications
                .into_iter()
                .map(|x| Rectification {
                    field: x.field,
                    record_id: x.record_id,
                    value: x.value,
                })
                .collect(),
            language: r.language,
        };
        let created = self.rights.submit(&tenant, new, &r.request_id, k).await?;
        let out = request_pb(created);
        Ok(Response::new(pb::SubmitRequestResponse {
            rights_request_id: out.rights_request_id.clone(),
            due_at: out.due_at,
            rights_request: Some(out),
        }))
    }

    async fn get_request(
        &self,
        req: Request<pb::GetRequestRequest>,
    ) -> Result<Response<pb::RightsRequest>, Status> {
        let ctx = CallContext::of(&req)?;
        let tenant = ctx.tenant()?.clone();
        let r = req.into_inner();
        vern_kit::audit::resource("rights_request", &r.rights_request_id);
        let got = self.rights.get(&tenant, &r.rights_request_id).await?;
        Ok(Response::new(request_pb(got)))
    }

    async fn get_request_stats(
        &self,
        req: Request<pb::GetRequestStatsRequest>,
    ) -> Result<Response<pb::RequestStats>, Status> {
        let ctx = CallContext::of(&req)?;
        let tenant = ctx.tenant()?.clone();
        let (by_status, overdue_count) = self.rights.stats(&tenant).await?;
        let nearest_deadline_time = by_status
            .iter()
            .filter(|(s, _, _)| !s.is_final())
            .filter_map(|(_, _, due)| *due)
            .min()
            .map(to_timestamp);
        let mut by_status = by_status;
        by_status.sort_by_key(|(s, _, _)| status_to_pb(*s) as i32);
        Ok(Response::new(pb::RequestStats {
            statuses: by_status
                .into_iter()
                .map(|(status, count, due)| pb::RequestStatusCount {
                    status: status_to_pb(status) as i32,
                    count,
                    nearest_deadline_time: due.map(to_timestamp),
                })
                .collect(),
            overdue_count,
            nearest_deadline_time,
        }))
    }

    async fn list_requests(
        &self,
        req: Request<pb::ListRequestsRequest>,
    ) -> Result<Response<pb::ListRequestsResponse>, Status> {
        let ctx = CallContext::of(&req)?;
        let tenant = ctx.tenant()?.clone();
        let r = req.into_inner();
        let limit = page::page_size(r.page_size)?;
        let after = page::decode_token("rights_requests", &r.page_token)?
            .map(|k| {
                let bad = || invalid("page_token", "is not a token this list issued");
                let (micros, id) = k.split_once('\n').ok_or_else(bad)?;
                let micros: i64 = micros.parse().map_err(|_| bad())?;
                let due = chrono::DateTime::from_timestamp_micros(micros).ok_or_else(bad)?;
                Ok::<_, Status>((due, id.to_owned()))
            })
            .transpose()?;
        let filter = RequestFilter {
            status: decode("status", r.status, |v| {
                pb::RequestStatus::try_from(v).ok().and_then(status_of)
            })?,
            overdue_at: r.overdue.then(vern_kit::time::now),
            request_type: decode("type", r.r#type, |v| {
                pb::RequestType::try_from(v).ok().and_then(type_of)
            })?
            .map(|t| t.as_str().to_owned()),
            subject_id: (!r.subject_id.is_empty()).then_some(r.subject_id),
            due_before: time("due_before", r.due_before.as_ref(), Bounds::Protobuf)?,
        };
        let page = self.rights.list(&tenant, filter, after, limit).await?;
        let last = page
            .items
            .last()
            .map(|x| format!("{}\n{}", x.due_at.timestamp_micros(), x.rights_request_id));
        let next_page_token = page::next_token("rights_requests", page.more, last.as_deref());
        Ok(Response::new(pb::ListRequestsResponse {
            rights_requests: page.items.into_iter().map(request_pb).collect(),
            next_page_token,
        }))
    }

    async fn verify_identity(
        &self,
        req: Request<pb::VerifyIdentityRequest>,
    ) -> Result<Response<pb::RightsRequest>, Status> {
        let ctx = CallContext::of(&req)?;
        let tenant = ctx.tenant()?.clone();
        let r = req.into_inner();
        check_request_id(&r.request_id)?;
        vern_kit::audit::resource("rights_request", &r.rights_request_id);
        let k = self.keyed(
            tenant.as_str(),
            &r.request_id,
            "VerifyIdentity",
            &r.encode_to_vec(),
        )?;
        let method = decode("method", r.method, |v| {
            pb::VerificationMethod::try_from(v).ok().and_then(method_of)
        })?;
        let out = self
            .rights
            .verify(
                &tenant,
                &ctx.sub,
                &r.rights_request_id,
                &r.subject_id,
                method,
                &r.note,
                k,
            )
            .await?;
        Ok(Response::new(request_pb(out)))
    }

    async fn extend_deadline(
        &self,
        req: Request<pb::ExtendDeadlineRequest>,
    ) -> Result<Response<pb::RightsRequest>, Status> {
        let ctx = CallContext::of(&req)?;
        let tenant = ctx.tenant()?.clone();
        let r = req.into_inner();
        check_request_id(&r.request_id)?;
        vern_kit::audit::resource("rights_request", &r.rights_request_id);
        let k = self.keyed(
            tenant.as_str(),
            &r.request_id,
            "ExtendDeadline",
            &r.encode_to_vec(),
        )?;
        let informed = time(
            "subject_informed_at",
            r.subject_informed_at.as_ref(),
            Bounds::Event,
        )?;
        let out = self
            .rights
            .extend(
                &tenant,
                &r.rights_request_id,
                r.months,
                &r.reason,
                informed,
                k,
            )
            .await?;
        Ok(Response::new(request_pb(out)))
    }

    async fn reject_request(
        &self,
        req: Request<pb::RejectRequestRequest>,
    ) -> Result<Response<pb::RightsRequest>, Status> {
        let ctx = CallContext::of(&req)?;
        let tenant = ctx.tenant()?.clone();
        let r = req.into_inner();
        check_request_id(&r.request_id)?;
        vern_kit::audit::resource("rights_request", &r.rights_request_id);
        let k = self.keyed(
            tenant.as_str(),
            &r.request_id,
            "RejectRequest",
            &r.encode_to_vec(),
        )?;
        let ground = decode("ground", r.ground, |v| {
            pb::RejectionGround::try_from(v).ok().and_then(ground_of)
        })?;
        let out = self
            .rights
            .reject(&tenant, &r.rights_request_id, ground, &r.reason, k)
            .await?;
        Ok(Response::new(request_pb(out)))
    }

    async fn fulfil_request(
        &self,
        req: Request<pb::FulfilRequestRequest>,
    ) -> Result<Response<pb::RightsRequest>, Status> {
        let ctx = CallContext::of(&req)?;
        let tenant = ctx.tenant()?.clone();
        let r = req.into_inner();
        check_request_id(&r.request_id)?;
        vern_kit::audit::resource("rights_request", &r.rights_request_id);
        let k = self.keyed(
            tenant.as_str(),
            &r.request_id,
            "FulfilRequest",
            &r.encode_to_vec(),
        )?;
        let out = self
            .rights
            .fulfil(&tenant, &r.rights_request_id, &r.note, k)
            .await?;
        Ok(Response::new(request_pb(out)))
    }

    async fn get_report(
        &self,
        req: Request<pb::GetReportRequest>,
    ) -> Result<Response<pb::Report>, Status> {
        let ctx = CallContext::of(&req)?;
        let tenant = ctx.tenant()?.clone();
        let r = req.into_inner();
        let report = self
            .rights
            .report(&tenant, &r.rights_request_id, None)
            .await?;
        let answer = report_pb(&report)?;
        // Refused here with a way out, rather than by the encoder as OUT_OF_RANGE.
        let size = answer.encoded_len();
        if size > self.max_message_bytes {
            return Err(RightsError::state(
                "REPORT_TOO_LARGE",
                format!(
                    "the report ({} records, {size} bytes) is above the message limit of {} \
                     bytes: read it with ExportReport",
                    report.data.len(),
                    self.max_message_bytes
                ),
            )
            .into());
        }
        Ok(Response::new(answer))
    }

    async fn export_report(
        &self,
        req: Request<pb::ExportReportRequest>,
    ) -> Result<Response<BoxStream<pb::ReportChunk>>, Status> {
        let ctx = CallContext::of(&req)?;
        let tenant = ctx.tenant()?.clone();
        let r = req.into_inner();
        let language = crate::domain::language("language", &r.language)
            .map_err(|v| invalid(&v.field, &v.description))?;
        let report = self
            .rights
            .report(&tenant, &r.rights_request_id, language)
            .await?;
        let json = report_json(&report)?.into_bytes();
        let total = json.len() as i64;
        // Each chunk well inside the message limit, whatever it is set to.
        let size = REPORT_CHUNK_BYTES.min(self.max_message_bytes / 2).max(1024);
        let chunks: Vec<Result<pb::ReportChunk, Status>> = json
            .chunks(size)
            .enumerate()
            .map(|(i, c)| {
                Ok(pb::ReportChunk {
                    json: c.to_vec(),
                    offset: (i * size) as i64,
                    total_bytes: total,
                })
            })
            .collect();
        Ok(Response::new(Box::pin(tokio_stream::iter(chunks))))
    }

    async fn watch_events(
        &self,
        req: Request<pb::WatchEventsRequest>,
    ) -> Result<Response<BoxStream<pb::RightsEvent>>, Status> {
        let ctx = CallContext::of(&req)?;
        let tenant = ctx.tenant()?.as_str().to_owned();
        let r = req.into_inner();
        let mut after = seq_of_cursor("cursor", &r.cursor)?;
        let types = event_type_names("types", &r.types)?;
        if r.unacked_only {
            crate::service::system_name("system", &r.system)
                .map_err(|v| Status::from(ApiError::InvalidArgument(vec![v])))?;
        }
        let filter = EventFilter {
            types,
            unacked_by: r.unacked_only.then_some(r.system),
            ..Default::default()
        };
        let (tx, rx) = tokio::sync::mpsc::channel(64);
        let rights = self.rights.clone();
        // Subscribed before the catch-up read, so an event committed in between is
        // either read or received (and taken once: only seqs after `after`).
        let mut feed = rights
            .feed()
            .subscribe(&rights, &tenant)
            .await
            .map_err(Status::from)?;
        // Ends when the client goes away (the receiver is dropped): `tx.closed()` wakes
        // the task even while it waits for new events.
        tokio::spawn(async move {
            'catch_up: loop {
                // What was committed before (or while falling behind): read as a page
                // of this watcher's own, filtered by the database.
                loop {
                    let page = match rights
                        .list_events(&tenant, &filter, after, WATCH_BATCH)
                        .await
                    {
                        Ok(p) => p,
                        Err(e) => {
                            let _ = tx.send(Err(Status::from(e))).await;
                            return;
                        }
                    };
                    for e in page.items {
                        after = e.seq;
                        if tx.send(Ok(event_pb(e))).await.is_err() {
                            return;
                        }
                    }
                    if !page.more {
                        break;
                    }
                }
                // Then what the tenant's one reader broadcasts.
                loop {
                    let batch = tokio::select! {
                        _ = tx.closed() => return,
                        b = feed.recv() => b,
                    };
                    match batch {
                        Ok(events) => {
                            for e in events.iter() {
                                if e.seq <= after {
                                    continue;
                                }
                                after = e.seq;
                                if filter.matches(e)
                                    && tx.send(Ok(event_pb(e.clone()))).await.is_err()
                                {
                                    return;
                                }
                            }
                        }
                        // Fell behind the broadcast: read the gap from the database.
                        Err(tokio::sync::broadcast::error::RecvError::Lagged(_)) => {
                            continue 'catch_up;
                        }
                        Err(tokio::sync::broadcast::error::RecvError::Closed) => {
                            match rights.feed().subscribe(&rights, &tenant).await {
                                Ok(rx) => feed = rx,
                                Err(e) => {
                                    let _ = tx.send(Err(Status::from(e))).await;
                                    return;
                                }
                            }
                            continue 'catch_up;
                        }
                    }
                }
            }
        });
        Ok(Response::new(Box::pin(ReceiverStream::new(rx))))
    }

    async fn list_events(
        &self,
        req: Request<pb::ListEventsRequest>,
    ) -> Result<Response<pb::ListEventsResponse>, Status> {
        let ctx = CallContext::of(&req)?;
        let tenant = ctx.tenant()?.clone();
        let r = req.into_inner();
        let limit = page::page_size(r.page_size)?;
        let after = match page::decode_token("rights_events", &r.page_token)? {
            None => 0,
            Some(s) => s
                .parse::<i64>()
                .map_err(|_| invalid("page_token", "is not a token this list issued"))?,
        };
        if !r.unacked_by_system.is_empty() {
            crate::service::system_name("unacked_by_system", &r.unacked_by_system)
                .map_err(|v| Status::from(ApiError::InvalidArgument(vec![v])))?;
        }
        let filter = EventFilter {
            rights_request_id: (!r.rights_request_id.is_empty()).then_some(r.rights_request_id),
            subject_id: (!r.subject_id.is_empty()).then_some(r.subject_id),
            types: if r.r#type == 0 {
                vec![]
            } else {
                event_type_names("type", &[r.r#type])?
            },
            unacked_by: (!r.unacked_by_system.is_empty()).then_some(r.unacked_by_system),
        };
        let page = self
            .rights
            .list_events(tenant.as_str(), &filter, after, limit)
            .await?;
        let last = page.items.last().map(|e| e.seq.to_string());
        let next_page_token = page::next_token("rights_events", page.more, last.as_deref());
        Ok(Response::new(pb::ListEventsResponse {
            events: page.items.into_iter().map(event_pb).collect(),
            next_page_token,
        }))
    }

    async fn ack_event(
        &self,
        req: Request<pb::AckEventRequest>,
    ) -> Result<Response<pb::RightsEvent>, Status> {
        let ctx = CallContext::of(&req)?;
        let tenant = ctx.tenant()?.clone();
        let r = req.into_inner();
        check_request_id(&r.request_id)?;
        let k = key(
            tenant.as_str(),
            &r.request_id,
            "AckEvent",
            &r.encode_to_vec(),
        );
        let seq;
        let by = match &r.event {
            Some(pb::ack_event_request::Event::EventId(id)) => EventRef::Id(id.as_str()),
            Some(pb::ack_event_request::Event::Cursor(c)) => {
                seq = seq_of_cursor("cursor", c)?;
                EventRef::Seq(seq)
            }
            None => return Err(invalid("event", "is required: event_id or cursor")),
        };
        let out = self.rights.ack(&tenant, &ctx.sub, by, &r.system, k).await?;
        Ok(Response::new(event_pb(out)))
    }

    async fn get_rights_settings(
        &self,
        req: Request<pb::GetRightsSettingsRequest>,
    ) -> Result<Response<pb::RightsSettings>, Status> {
        let ctx = CallContext::of(&req)?;
        let tenant = ctx.tenant()?.clone();
        Ok(Response::new(settings_pb(
            self.rights.settings(&tenant).await?,
        )))
    }

    async fn update_rights_settings(
        &self,
        req: Request<pb::UpdateRightsSettingsRequest>,
    ) -> Result<Response<pb::RightsSettings>, Status> {
        let ctx = CallContext::of(&req)?;
        let tenant = ctx.tenant()?.clone();
        let r = req.into_inner();
        check_request_id(&r.request_id)?;
        let k = key(
            tenant.as_str(),
            &r.request_id,
            "UpdateRightsSettings",
            &r.encode_to_vec(),
        );
        let s = r.settings.unwrap_or_default();
        vern_kit::validate::own_tenant("settings.tenant_id", &s.tenant_id, tenant.as_str())
            .map_err(|v| invalid(&v.field, &v.description))?;
        let mask = r.update_mask.map(|m| m.paths).unwrap_or_default();
        // Decoded only when updated: an empty value then resets to the default.
        let default_language = if mask.iter().any(|p| p == "default_language") {
            crate::domain::language("settings.default_language", &s.default_language)
                .map_err(|v| invalid(&v.field, &v.description))?
                .unwrap_or(crate::domain::DEFAULT_LANGUAGE)
        } else {
            crate::domain::DEFAULT_LANGUAGE
        };
        let new = Settings {
            tenant_id: tenant.as_str().to_owned(),
            required_systems: s.required_systems,
            automated_decision_making: s.automated_decision_making,
            update_time: None,
            default_language,
        };
        let out = self.rights.update_settings(&tenant, new, &mask, k).await?;
        Ok(Response::new(settings_pb(out)))
    }

    async fn apply_subject_erasures(
        &self,
        req: Request<pb::ApplySubjectErasuresRequest>,
    ) -> Result<Response<pb::ApplySubjectErasuresResponse>, Status> {
        let ctx = CallContext::of(&req)?;
        let tenant = ctx.tenant()?.clone();
        let r = req.into_inner();
        check_request_id(&r.request_id)?;
        let k = key(
            tenant.as_str(),
            &r.request_id,
            "ApplySubjectErasures",
            &r.encode_to_vec(),
        );
        let mut v = Violations::new();
        let mut erasures = Vec::with_capacity(r.erasures.len());
        for (i, e) in r.erasures.into_iter().enumerate() {
            let subject = v.check(subject_id(
                &format!("erasures[{i}].subject_id"),
                &e.subject_id,
            ));
            let field = format!("erasures[{i}].erase_time");
            let at = match e.erase_time.as_ref() {
                None => {
                    v.add(field, "is required");
                    None
                }
                Some(t) => v.check(vern_kit::time::check(
                    &field,
                    t,
                    Bounds::Business,
                    vern_kit::time::now(),
                )),
            };
            let by_request = if e.rights_request_id.is_empty() {
                None
            } else {
                v.check(request_id_of(
                    &format!("erasures[{i}].rights_request_id"),
                    &e.rights_request_id,
                ))
            };
            let cause = match e.cause {
                0 => None,
                c => {
                    let cause = pb::ErasureCause::try_from(c).ok().and_then(cause_of);
                    if cause.is_none() {
                        v.add(format!("erasures[{i}].cause"), "is not a known value");
                    }
                    cause
                }
            };
            let mut records = Vec::with_capacity(e.records.len());
            for (j, r) in e.records.into_iter().enumerate() {
                let field = format!("erasures[{i}].records[{j}]");
                v.check(subject_id(&format!("{field}.record_id"), &r.record_id));
                let category = common::DataCategory::try_from(r.category)
                    .ok()
                    .filter(|c| *c != common::DataCategory::Unspecified);
                match category {
                    None => v.add(format!("{field}.category"), "is not a known value"),
                    Some(c) => records.push(crate::model::ErasedRecord {
                        record_id: r.record_id,
                        category: category_name(c).to_owned(),
                        field: r.field,
                    }),
                }
            }
            if let (Some(subject_id), Some(at)) = (subject, at) {
                erasures.push(ErasedSubject {
                    subject_id,
                    at,
                    by_request,
                    cause,
                    records,
                    policy_id: e.policy_id,
                });
            }
        }
        let mut restrictions = Vec::with_capacity(r.restrictions.len());
        for (i, c) in r.restrictions.into_iter().enumerate() {
            let subject = v.check(subject_id(
                &format!("restrictions[{i}].subject_id"),
                &c.subject_id,
            ));
            let field = format!("restrictions[{i}].change_time");
            let at = match c.change_time.as_ref() {
                None => {
                    v.add(field, "is required");
                    None
                }
                Some(t) => v.check(vern_kit::time::check(
                    &field,
                    t,
                    Bounds::Business,
                    vern_kit::time::now(),
                )),
            };
            for (j, p) in c.purposes.iter().enumerate() {
                v.check(vern_kit::validate::slug(
                    &format!("restrictions[{i}].purposes[{j}]"),
                    p,
                    2,
                    63,
                ));
            }
            let by_request = if c.rights_request_id.is_empty() {
                None
            } else {
                v.check(request_id_of(
                    &format!("restrictions[{i}].rights_request_id"),
                    &c.rights_request_id,
                ))
            };
            if let (Some(subject_id), Some(at)) = (subject, at) {
                restrictions.push(RestrictionChange {
                    subject_id,
                    restricted: c.restricted,
                    purposes: c.purposes,
                    at,
                    by_request,
                });
            }
        }
        v.finish()?;
        let applied = self
            .rights
            .apply_erasures(&tenant, restrictions, erasures, k)
            .await?;
        Ok(Response::new(pb::ApplySubjectErasuresResponse {
            applied_count: applied,
        }))
    }
    async fn list_outbox_rows(
        &self,
        req: Request<vern_proto::common::v1::ListOutboxRowsRequest>,
    ) -> Result<Response<vern_proto::common::v1::ListOutboxRowsResponse>, Status> {
        let db = self.rights.store().connection();
        Ok(Response::new(
            vern_kit::outbox::admin::list(db, req.get_ref()).await?,
        ))
    }

    async fn retry_outbox_rows(
        &self,
        req: Request<vern_proto::common::v1::RetryOutboxRowsRequest>,
    ) -> Result<Response<vern_proto::common::v1::RetryOutboxRowsResponse>, Status> {
        let db = self.rights.store().connection();
        Ok(Response::new(
            vern_kit::outbox::admin::retry(db, req.get_ref()).await?,
        ))
    }
}

#[cfg(test)]
mod tests {
    use std::collections::HashMap;
    use std::sync::Arc;

    use tokio_stream::StreamExt;
    use vern_kit::auth::{Permission, Role, ServiceTokens};
    use vern_kit::context::TenantId;
    use vern_proto::rights::v1::rights_service_server::RightsService;
    use vern_seal::keyring::Keyring;

    use super::*;
    use crate::model::Identity;
    use crate::remote::Upstream;
    use crate::seal::Sealer;
    use crate::store::RightsStore;
    use crate::store::entities::event;

    const MASTER: &str = "AAECAwQFBgcICQoLDA0ODxAREhMUFRYXGBkaGxwdHh8=";

    async fn rights(db: &vern_kit::testing::TestDb) -> Rights {
        let store = RightsStore::open(&db.target).await.expect("store");
        let mut config = vern_kit::config::Config::default();
        config.auth.hs256_secret = Some("unit-test".into());
        let tokens = Arc::new(
            ServiceTokens::from_config(&config)
                .expect("io")
                .expect("tokens"),
        );
        // Nothing listens there: these tests never reach another service.
        let ch = vern_kit::client::channel("http://127.0.0.1:9").expect("channel");
        let upstream = Arc::new(Upstream::new(
            ch.clone(),
            ch.clone(),
            ch.clone(),
            ch,
            tokens,
        ));
        let keyring = Keyring::from_base64(Some(MASTER), &HashMap::new()).expect("keys");
        Rights::new(store, Sealer::new(keyring), upstream)
    }

    #[tokio::test]
    async fn watchers_receive_new_events_and_stop_when_the_client_goes() {
        let db = vern_kit::testing::TestDb::sqlite("rights");
        let rights = rights(&db).await;
        let feed = rights.feed();
        let api = RightsApi::new(rights.clone());
        let mut req = Request::new(pb::WatchEventsRequest::default());
        req.extensions_mut().insert(CallContext::for_tests(
            Some("t1"),
            &[Role::Integration],
            Permission::RightsEvents,
        ));
        let mut stream = api.watch_events(req).await.expect("watch").into_inner();
        assert_eq!(feed.watchers("t1"), 1, "a watcher is subscribed");
        // A second watcher of the tenant shares the tenant's one reader.
        let mut second = Request::new(pb::WatchEventsRequest::default());
        second.extensions_mut().insert(CallContext::for_tests(
            Some("t1"),
            &[Role::Integration],
            Permission::RightsEvents,
        ));
        let mut second = api.watch_events(second).await.expect("watch").into_inner();
        assert_eq!(feed.watchers("t1"), 2);
        assert_eq!(feed.tenants(), 1, "one reader for the tenant");

        // A request submitted with an identity only (no other service involved), then
        // an event committed for it while the watcher waits.
        let tenant = TenantId::new("t1");
        let submitted = rights
            .submit(
                &tenant,
                NewRequest {
                    request_type: Some(RequestType::Erasure),
                    identity: Some(Identity {
                        email: "kari@example.no".into(),
                        ..Default::default()
                    }),
                    channel: Some(Channel::Email),
                    ..Default::default()
                },
                "",
                None,
            )
            .await
            .expect("submit");
        let row = rights
            .store()
            .request("t1", &submitted.rights_request_id)
            .await
            .expect("row")
            .expect("row");
        let version = row.version;
        let updated = crate::store::entities::request::Model {
            version: version + 1,
            ..row
        };
        let ev = event::Model {
            tenant_id: "t1".into(),
            seq: 0,
            event_id: uuid::Uuid::now_v7().to_string(),
            event_type: EventType::Erased.as_str().into(),
            subject_id: String::new(),
            external_refs: "[]".into(),
            rights_request_id: submitted.rights_request_id.clone(),
            purposes: "[]".into(),
            fields: "[]".into(),
            retain_until_time: None,
            occur_time: vern_kit::time::now(),
            external_refs_ct: None,
            detail: "{}".into(),
        };
        let event_id = ev.event_id.clone();
        rights
            .store()
            .commit_request(updated, version, vec![ev], None, None)
            .await
            .expect("commit");
        feed.wake("t1");
        for stream in [&mut stream, &mut second] {
            let got = tokio::time::timeout(Duration::from_secs(5), stream.next())
                .await
                .expect("event in time")
                .expect("open")
                .expect("event");
            assert_eq!(got.event_id, event_id);
            assert_eq!(got.seq, 1);
            assert_eq!(seq_of_cursor("cursor", &got.cursor).expect("cursor"), 1);
        }

        // The clients go away: their tasks end and the reader forgets the tenant.
        drop(stream);
        drop(second);
        let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
        while feed.watchers("t1") > 0 || feed.tenants() > 0 {
            assert!(
                tokio::time::Instant::now() < deadline,
                "watcher task still running after the client left"
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        db.cleanup().await;
    }

    /// Feed references at rest: sealed with the request's key (also rows of an older
    /// version, by the pass at start); an erasure drops those of every request but the
    /// ERASURE one, whose references downstream systems still need.
    async fn feed_references_are_sealed(db: vern_kit::testing::TestDb) {
        use vern_kit::testing::raw;
        const REF: &str = "CRM-REF-4711";
        let rights = rights(&db).await;
        let tenant = TenantId::new("t1");
        let subject = uuid::Uuid::now_v7().to_string();
        let mut requests = vec![];
        for t in [RequestType::Erasure, RequestType::Access] {
            let submitted = rights
                .submit(
                    &tenant,
                    NewRequest {
                        request_type: Some(t),
                        identity: Some(Identity {
                            email: "kari@example.no".into(),
                            ..Default::default()
                        }),
                        channel: Some(Channel::Email),
                        ..Default::default()
                    },
                    "",
                    None,
                )
                .await
                .expect("submit");
            let row = rights
                .store()
                .request("t1", &submitted.rights_request_id)
                .await
                .expect("row")
                .expect("row");
            let version = row.version;
            let updated = crate::store::entities::request::Model {
                version: version + 1,
                subject_id: subject.clone(),
                ..row
            };
            // As a version before m0003 wrote it: the references in plaintext.
            let ev = event::Model {
                tenant_id: "t1".into(),
                seq: 0,
                event_id: uuid::Uuid::now_v7().to_string(),
                event_type: EventType::Erased.as_str().into(),
                subject_id: subject.clone(),
                external_refs: format!(r#"[{{"system":"crm","id":"{REF}"}}]"#),
                rights_request_id: submitted.rights_request_id.clone(),
                purposes: "[]".into(),
                fields: "[]".into(),
                retain_until_time: None,
                occur_time: vern_kit::time::now(),
                external_refs_ct: None,
                detail: "{}".into(),
            };
            rights
                .store()
                .commit_request(updated, version, vec![ev], None, None)
                .await
                .expect("commit");
            requests.push(submitted.rights_request_id);
        }
        let db_conn = rights.store().connection().clone();
        assert!(
            !raw::cells_containing(&db_conn, REF.as_bytes())
                .await
                .is_empty()
        );
        assert_eq!(rights.seal_legacy_feed().await.expect("seal"), 2);
        assert_eq!(rights.seal_legacy_feed().await.expect("again"), 0);
        assert_eq!(
            raw::cells_containing(&db_conn, REF.as_bytes()).await,
            Vec::<String>::new(),
            "no plaintext reference in any table"
        );
        let refs_of = |request: String| {
            let rights = rights.clone();
            async move {
                let filter = crate::store::EventFilter {
                    rights_request_id: Some(request),
                    ..Default::default()
                };
                let page = rights
                    .list_events("t1", &filter, 0, 10)
                    .await
                    .expect("events");
                page.items[0]
                    .external_refs
                    .iter()
                    .map(|r| r.id.clone())
                    .collect::<Vec<_>>()
            }
        };
        for r in &requests {
            assert_eq!(refs_of(r.clone()).await, [REF], "readable with the key");
        }
        // The subject is erased (EraseSubject called directly).
        rights
            .store()
            .shred_erased(
                "t1",
                vec![],
                vec![crate::store::ErasedSubject {
                    cause: None,
                    records: vec![],
                    policy_id: String::new(),
                    subject_id: subject.clone(),
                    at: vern_kit::time::now(),
                    by_request: None,
                }],
                None,
            )
            .await
            .expect("shred");
        assert_eq!(
            refs_of(requests[0].clone()).await,
            [REF],
            "ERASURE keeps them"
        );
        assert!(
            refs_of(requests[1].clone()).await.is_empty(),
            "ACCESS: shredded"
        );
        let sealed: Vec<String> = raw::dump(&db_conn)
            .await
            .into_iter()
            .filter(|(c, v)| c == "rights_events.external_refs_ct" && !v.is_empty())
            .map(|(c, _)| c)
            .collect();
        assert_eq!(
            sealed.len(),
            1,
            "only the ERASURE event's ciphertext is left"
        );
        db.cleanup().await;
    }

    #[tokio::test]
    async fn feed_references_are_sealed_sqlite() {
        feed_references_are_sealed(vern_kit::testing::TestDb::sqlite("rights")).await;
    }

    #[tokio::test]
    async fn feed_references_are_sealed_postgres() {
        if let Some(db) = vern_kit::testing::TestDb::postgres("rights") {
            feed_references_are_sealed(db).await;
        }
    }

    /// Case texts at rest: the verification note and the extension and rejection
    /// reasons are sealed with the request's personal data (also those an older
    /// version stored in plaintext, by the pass at start), read back while the
    /// request's key exists, and gone with the erased subject's personal content.
    async fn case_texts_are_sealed(db: vern_kit::testing::TestDb) {
        use crate::store::entities::request;
        use vern_kit::testing::raw;
        const NOTE: &str = "NOTE-passport-seen-7731";
        const EXTENDED: &str = "EXTEND-archive-backlog-5512";
        const REJECTED: &str = "REJECT-fourth-repeat-9048";
        const LEGACY: &str = "LEGACY-plain-reason-2290";
        let rights = rights(&db).await;
        let db_conn = rights.store().connection().clone();
        let tenant = TenantId::new("t1");
        let subject = uuid::Uuid::now_v7().to_string();
        // Three requests of the subject: submitted with an identity, then linked to the
        // subject in the store (no other service is reached).
        let mut ids = vec![];
        for _ in 0..3 {
            let submitted = rights
                .submit(
                    &tenant,
                    NewRequest {
                        request_type: Some(RequestType::Access),
                        identity: Some(Identity {
                            email: "kari@example.no".into(),
                            ..Default::default()
                        }),
                        channel: Some(Channel::Email),
                        ..Default::default()
                    },
                    "",
                    None,
                )
                .await
                .expect("submit");
            let row = rights
                .store()
                .request("t1", &submitted.rights_request_id)
                .await
                .expect("row")
                .expect("row");
            let version = row.version;
            rights
                .store()
                .update_request(
                    request::Model {
                        subject_id: subject.clone(),
                        version: version + 1,
                        ..row
                    },
                    version,
                    None,
                )
                .await
                .expect("link");
            ids.push(submitted.rights_request_id);
        }
        rights
            .verify(
                &tenant,
                "officer",
                &ids[0],
                "",
                Some(VerificationMethod::IdDocument),
                NOTE,
                None,
            )
            .await
            .expect("verify");
        rights
            .extend(
                &tenant,
                &ids[0],
                1,
                EXTENDED,
                Some(vern_kit::time::now()),
                None,
            )
            .await
            .expect("extend");
        rights
            .reject(
                &tenant,
                &ids[1],
                Some(RejectionGround::Excessive),
                REJECTED,
                None,
            )
            .await
            .expect("reject");
        // The third as an older version left it: its note in a plaintext column.
        let write_plain = |id: String, text: &'static str| {
            let rights = rights.clone();
            async move {
                let row = rights
                    .store()
                    .request("t1", &id)
                    .await
                    .expect("row")
                    .expect("row");
                let version = row.version;
                rights
                    .store()
                    .update_request(
                        request::Model {
                            verification_note: text.to_owned(),
                            version: version + 1,
                            ..row
                        },
                        version,
                        None,
                    )
                    .await
                    .expect("plaintext");
            }
        };
        write_plain(ids[2].clone(), LEGACY).await;
        for text in [NOTE, EXTENDED, REJECTED] {
            assert_eq!(
                raw::cells_containing(&db_conn, text.as_bytes()).await,
                Vec::<String>::new(),
                "no plaintext {text} in any table"
            );
        }
        assert!(
            !raw::cells_containing(&db_conn, LEGACY.as_bytes())
                .await
                .is_empty(),
            "the search works"
        );
        assert_eq!(rights.seal_legacy_case_texts().await.expect("seal"), 1);
        assert_eq!(rights.seal_legacy_case_texts().await.expect("again"), 0);
        assert_eq!(
            raw::cells_containing(&db_conn, LEGACY.as_bytes()).await,
            Vec::<String>::new(),
            "the older version's note is sealed"
        );

        // Read back while the keys exist: GetRequest and ListRequests.
        let texts = |r: &RightsRequest| {
            (
                r.personal.verification_note.clone(),
                r.personal.extension_reason.clone(),
                r.personal.rejection_reason.clone(),
            )
        };
        let none = (String::new(), String::new(), String::new());
        let got: Vec<RightsRequest> = {
            let mut v = vec![];
            for id in &ids {
                v.push(rights.get(&tenant, id).await.expect("get"));
            }
            v
        };
        assert_eq!(
            texts(&got[0]),
            (NOTE.to_owned(), EXTENDED.to_owned(), String::new())
        );
        assert_eq!(
            texts(&got[1]),
            (String::new(), String::new(), REJECTED.to_owned())
        );
        assert_eq!(
            texts(&got[2]),
            (LEGACY.to_owned(), String::new(), String::new())
        );
        assert_eq!(
            got[0].verification_method,
            Some(VerificationMethod::IdDocument)
        );
        assert_eq!(got[1].rejection_ground, Some(RejectionGround::Excessive));
        let pb0 = request_pb(got[0].clone());
        assert_eq!(pb0.extension_reason, EXTENDED);
        assert_eq!(request_pb(got[1].clone()).rejection_reason, REJECTED);
        let listed = rights
            .list(
                &tenant,
                RequestFilter {
                    subject_id: Some(subject.clone()),
                    ..Default::default()
                },
                None,
                10,
            )
            .await
            .expect("list");
        assert_eq!(listed.items.len(), 3);
        for r in &listed.items {
            let want = got
                .iter()
                .find(|g| g.rights_request_id == r.rights_request_id)
                .expect("listed");
            assert_eq!(texts(r), texts(want), "ListRequests reads them too");
        }

        // The subject is erased (EraseSubject called directly): the texts go with the
        // personal content.
        rights
            .store()
            .shred_erased(
                "t1",
                vec![],
                vec![crate::store::ErasedSubject {
                    cause: None,
                    records: vec![],
                    policy_id: String::new(),
                    subject_id: subject.clone(),
                    at: vern_kit::time::now(),
                    by_request: None,
                }],
                None,
            )
            .await
            .expect("shred");
        for id in &ids {
            let r = rights.get(&tenant, id).await.expect("get");
            assert_eq!(texts(&r), none, "{id}: texts gone");
            let pb = request_pb(r);
            assert_eq!(
                (pb.extension_reason.as_str(), pb.rejection_reason.as_str()),
                ("", "")
            );
        }
        // A plaintext text an older version left on a request since shredded is
        // dropped by the pass at start.
        write_plain(ids[1].clone(), LEGACY).await;
        assert_eq!(rights.seal_legacy_case_texts().await.expect("seal"), 1);
        assert_eq!(
            texts(&rights.get(&tenant, &ids[1]).await.expect("get")),
            none
        );
        for text in [NOTE, EXTENDED, REJECTED, LEGACY] {
            assert_eq!(
                raw::cells_containing(&db_conn, text.as_bytes()).await,
                Vec::<String>::new(),
                "no {text} left in any table"
            );
        }
        let sealed: Vec<String> = raw::dump(&db_conn)
            .await
            .into_iter()
            .filter(|(c, v)| c == "rights_requests.personal" && !v.is_empty())
            .map(|(c, _)| c)
            .collect();
        assert_eq!(sealed, Vec::<String>::new(), "no sealed personal data left");
        db.cleanup().await;
    }

    #[tokio::test]
    async fn case_texts_are_sealed_sqlite() {
        case_texts_are_sealed(vern_kit::testing::TestDb::sqlite("rights")).await;
    }

    #[tokio::test]
    async fn case_texts_are_sealed_postgres() {
        if let Some(db) = vern_kit::testing::TestDb::postgres("rights") {
            case_texts_are_sealed(db).await;
        }
    }

    #[test]
    fn cursors_are_opaque_and_checked() {
        assert_eq!(seq_of_cursor("cursor", &cursor_of(42)).expect("ok"), 42);
        assert_eq!(seq_of_cursor("cursor", "").expect("start"), 0);
        assert!(seq_of_cursor("cursor", "nonsense").is_err());
        let other_list = page::encode_token("rights_requests", "42");
        assert!(seq_of_cursor("cursor", &other_list).is_err());
    }
}
