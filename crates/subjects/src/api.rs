//! gRPC handlers of SubjectService: decode, convert to domain input, call the use
//! cases, convert back. Nothing else.

use prost::Message;
use tonic::{Request, Response, Status};
use vern_kit::context::{CallContext, TenantId};
use vern_kit::error::{ApiError, FieldViolation};
use vern_kit::idempotency::Key;
use vern_kit::page;
use vern_kit::time::{Bounds, to_timestamp};
use vern_proto::common::v1 as common;
use vern_proto::subjects::v1 as pb;

use crate::domain::identifiers::NationalIdKind;
use crate::domain::{
    DataCategory, EraseOutcome, ExternalRef, IdentifierKind, NewSubject, PurgeAction, PurgeFilter,
    PurgeOutcome, PurgeRequest, Record, RecordInput, Retain, Subject, SubjectChanges, SubjectState,
    View,
};
use crate::service::{self, Lookup, RecordsPage, RestrictionCall, Subjects};
use crate::store::ListFilter;

/// Name of the ListSubjects page-token list.
const LIST: &str = "subjects";

/// The SubjectService implementation.
#[derive(Clone, Debug)]
pub struct SubjectApi {
    subjects: Subjects,
    /// The server's largest message (`server.max_message_bytes`): a page of records
    /// fills at most half of it.
    max_message_bytes: usize,
}

impl SubjectApi {
    /// Handlers over the use cases.
    pub fn new(subjects: Subjects) -> Self {
        Self {
            subjects,
            max_message_bytes: 4 * 1024 * 1024,
        }
    }

    /// Pages of records fill at most half of `bytes` (the server's limit).
    pub fn with_message_limit(mut self, bytes: usize) -> Self {
        self.max_message_bytes = bytes;
        self
    }

    /// The use cases.
    pub fn subjects(&self) -> &Subjects {
        &self.subjects
    }

    fn key<M: Message>(
        &self,
        tenant: &TenantId,
        request_id: &str,
        method: &'static str,
        msg: &M,
    ) -> Result<Option<Key>, Status> {
        Ok(self
            .subjects
            .request_key(tenant, request_id, method, &msg.encode_to_vec())?)
    }
}

fn invalid(v: FieldViolation) -> Status {
    ApiError::InvalidArgument(vec![v]).into()
}

fn tenant(ctx: &CallContext) -> Result<TenantId, Status> {
    ctx.tenant().cloned()
}

fn time(
    field: &str,
    t: Option<&prost_types::Timestamp>,
    bounds: Bounds,
) -> Result<Option<chrono::DateTime<chrono::Utc>>, Status> {
    vern_kit::time::field(field, t, bounds).map_err(invalid)
}

fn view(v: i32, default: View) -> Result<View, Status> {
    match pb::SubjectView::try_from(v) {
        Ok(pb::SubjectView::Unspecified) => Ok(default),
        Ok(pb::SubjectView::Basic) => Ok(View::Basic),
        Ok(pb::SubjectView::Full) => Ok(View::Full),
        Err(_) => Err(invalid(FieldViolation::new("view", "is not a known value"))),
    }
}

// Protobuf ↔ domain by explicit arms (vern_kit::proto_enum): stored names never follow
// the protobuf value names. Also used by `purposes` and `relay`.
vern_kit::proto_enum!(pub(crate) category_to_pb, category_of: DataCategory => common::DataCategory {
    Contact, Identity, Employment, Demographic, Behaviour, Communications, Preferences,
    Financial, Absence, Health
});

/// A category from the wire; `None` for unset or unknown values.
fn category(v: i32) -> Option<DataCategory> {
    common::DataCategory::try_from(v).ok().and_then(category_of)
}

fn category_pb(c: DataCategory) -> i32 {
    category_to_pb(c) as i32
}

fn state_pb(s: SubjectState) -> i32 {
    match s {
        SubjectState::Active => pb::SubjectState::Active as i32,
        SubjectState::Restricted => pb::SubjectState::Restricted as i32,
        SubjectState::Erased => pb::SubjectState::Erased as i32,
    }
}

fn kind_pb(k: Option<NationalIdKind>) -> i32 {
    match k {
        None => pb::NationalIdKind::Unspecified as i32,
        Some(NationalIdKind::Fodselsnummer) => pb::NationalIdKind::Fodselsnummer as i32,
        Some(NationalIdKind::DNumber) => pb::NationalIdKind::DNumber as i32,
        Some(NationalIdKind::HNumber) => pb::NationalIdKind::HNumber as i32,
        Some(NationalIdKind::Synthetic) => pb::NationalIdKind::Synthetic as i32,
    }
}

fn refs(v: Vec<pb::ExternalRef>) -> Vec<ExternalRef> {
    v.into_iter()
        .map(|r| ExternalRef {
            system: r.system,
            id: r.id,
        })
        .collect()
}

fn record_input(field: &str, r: pb::Record) -> Result<RecordInput, Status> {
    Ok(RecordInput {
        category: category(r.category),
        collected_at: time(
            &format!("{field}collected_at"),
            r.collected_at.as_ref(),
            Bounds::Event,
        )?,
        field: r.field,
        value: r.value,
        source: r.source,
        purposes: r.purposes,
        provided_by_subject: r.provided_by_subject,
    })
}

fn record_inputs(v: Vec<pb::Record>) -> Result<Vec<RecordInput>, Status> {
    v.into_iter()
        .enumerate()
        .map(|(i, r)| record_input(&format!("records[{i}]."), r))
        .collect()
}

fn record_pb(r: Record) -> pb::Record {
    pb::Record {
        record_id: r.record_id,
        category: category_pb(r.data.category),
        field: r.data.field,
        value: r.data.value,
        source: r.data.source,
        purposes: r.data.purposes,
        collected_at: Some(to_timestamp(r.data.collected_at)),
        provided_by_subject: r.data.provided_by_subject,
        restricted: r.restricted,
        retain_until_time: r.retain_until_time.map(to_timestamp),
        legal_reference: r.legal_reference,
        create_time: Some(to_timestamp(r.create_time)),
        update_time: Some(to_timestamp(r.update_time)),
    }
}

fn subject_pb(s: Subject) -> pb::Subject {
    pb::Subject {
        tenant_id: s.tenant_id,
        subject_id: s.subject_id,
        email: s.identifiers.email.unwrap_or_default(),
        phone: s.identifiers.phone.unwrap_or_default(),
        national_id: s.identifiers.national_id.unwrap_or_default(),
        national_id_kind: kind_pb(s.identifiers.national_id_kind),
        external_refs: s
            .external_refs
            .into_iter()
            .map(|r| pb::ExternalRef {
                system: r.system,
                id: r.id,
            })
            .collect(),
        records: s.records.into_iter().map(record_pb).collect(),
        state: state_pb(s.state),
        restriction_reason: s.restriction_reason,
        restrict_time: s.restrict_time.map(to_timestamp),
        erase_request_time: s.erase_request_time.map(to_timestamp),
        erase_time: s.erase_time.map(to_timestamp),
        relationship_end_time: s.relationship_end_time.map(to_timestamp),
        create_time: Some(to_timestamp(s.create_time)),
        update_time: Some(to_timestamp(s.update_time)),
        next_records_page_token: String::new(),
        restricted_purposes: s.restricted_purposes,
    }
}

fn retained_pb(r: Retain) -> pb::RetainedRecord {
    pb::RetainedRecord {
        record_id: r.record_id,
        retain_until_time: r.retain_until_time.map(to_timestamp),
        legal_reference: r.legal_reference,
    }
}

fn erase_pb(o: EraseOutcome) -> pb::EraseSubjectResponse {
    pb::EraseSubjectResponse {
        subject_id: o.subject_id,
        state: state_pb(o.state),
        fully_erased: o.fully_erased,
        erased_record_count: o.erased_record_count,
        retained: o.retained.into_iter().map(retained_pb).collect(),
        erase_time: Some(to_timestamp(o.erase_time)),
    }
}

fn purge_pb(o: PurgeOutcome) -> pb::PurgeRecordsResponse {
    pb::PurgeRecordsResponse {
        matched_count: o.matched_count,
        purged_count: o.purged_count,
        items: o
            .items
            .into_iter()
            .map(|i| pb::PurgeItem {
                subject_id: i.subject_id,
                record_id: i.record_id,
                category: category_pb(i.category),
                field: i.field,
                purposes: i.purposes,
                collected_at: Some(to_timestamp(i.collected_at)),
            })
            .collect(),
        truncated: o.truncated,
        erased_subject_ids: o.erased_subject_ids,
    }
}

fn non_empty(s: String) -> Option<String> {
    (!s.is_empty()).then_some(s)
}

/// The domain input of a CreateSubject (or an ImportSubjects row).
fn new_subject(r: pb::CreateSubjectRequest) -> Result<NewSubject, Status> {
    Ok(NewSubject {
        relationship_end_time: time(
            "relationship_end_time",
            r.relationship_end_time.as_ref(),
            Bounds::Business,
        )?,
        records: record_inputs(r.records)?,
        email: r.email,
        phone: r.phone,
        national_id: r.national_id,
        external_refs: refs(r.external_refs),
    })
}

/// The field violations of an INVALID_ARGUMENT status (one naming the status's
/// message when it carries none; messages name fields, never values).
fn status_violations(s: &Status) -> Vec<FieldViolation> {
    use tonic_types::StatusExt;
    let v: Vec<FieldViolation> = s
        .get_details_bad_request()
        .map(|b| {
            b.field_violations
                .into_iter()
                .map(|v| FieldViolation::new(v.field, v.description))
                .collect()
        })
        .unwrap_or_default();
    if v.is_empty() {
        vec![FieldViolation::new("", s.message())]
    } else {
        v
    }
}

fn import_result_pb(index: usize, o: service::ImportOutcome) -> pb::ImportSubjectResult {
    use service::ImportOutcome as O;
    let index = i32::try_from(index).unwrap_or(i32::MAX);
    let violation = |v: FieldViolation| pb::ImportViolation {
        field: v.field,
        description: v.description,
    };
    match o {
        O::Created {
            subject_id,
            replayed,
        } => pb::ImportSubjectResult {
            index,
            status: pb::ImportStatus::Created as i32,
            subject_id,
            replayed,
            violations: vec![],
        },
        O::AlreadyPresent { subject_id, field } => pb::ImportSubjectResult {
            index,
            status: pb::ImportStatus::AlreadyPresent as i32,
            subject_id,
            replayed: false,
            violations: vec![violation(FieldViolation::new(
                field,
                "is already held by a subject of the tenant",
            ))],
        },
        O::Invalid(v) => pb::ImportSubjectResult {
            index,
            status: pb::ImportStatus::Invalid as i32,
            subject_id: String::new(),
            replayed: false,
            violations: v.into_iter().map(violation).collect(),
        },
    }
}

#[tonic::async_trait]
impl pb::subject_service_server::SubjectService for SubjectApi {
    async fn rewrap_data_keys(
        &self,
        req: Request<common::RewrapDataKeysRequest>,
    ) -> Result<Response<common::RewrapDataKeysResponse>, Status> {
        let page = self.subjects.rewrap_data_keys(req.get_ref()).await?;
        Ok(Response::new(page))
    }

    async fn count_data_keys(
        &self,
        _req: Request<common::CountDataKeysRequest>,
    ) -> Result<Response<common::CountDataKeysResponse>, Status> {
        Ok(Response::new(self.subjects.count_data_keys().await?))
    }

    async fn reindex_subjects(
        &self,
        req: Request<pb::ReindexSubjectsRequest>,
    ) -> Result<Response<pb::ReindexSubjectsResponse>, Status> {
        let r = req.get_ref();
        let page = self
            .subjects
            .reindex(&r.page_token, r.page_size, r.index_key_version)
            .await?;
        Ok(Response::new(pb::ReindexSubjectsResponse {
            examined: page.examined,
            reindexed: page.reindexed,
            next_page_token: page.next_page_token,
            total: page.total,
            index_key_version: page.index_version,
            unopenable: page.unopenable,
        }))
    }

    async fn create_subject(
        &self,
        req: Request<pb::CreateSubjectRequest>,
    ) -> Result<Response<pb::Subject>, Status> {
        let ctx = CallContext::of(&req)?;
        let t = tenant(&ctx)?;
        let r = req.into_inner();
        let idem = self.key(&t, &r.request_id, "CreateSubject", &r)?;
        let new = new_subject(r)?;
        let s = self.subjects.create(&t, new, idem).await?;
        Ok(Response::new(subject_pb(s)))
    }

    async fn import_subjects(
        &self,
        req: Request<pb::ImportSubjectsRequest>,
    ) -> Result<Response<pb::ImportSubjectsResponse>, Status> {
        let ctx = CallContext::of(&req)?;
        let t = tenant(&ctx)?;
        let r = req.into_inner();
        if r.subjects.len() > service::MAX_IMPORT_ROWS {
            return Err(invalid(FieldViolation::new(
                format!("subjects[{}]", service::MAX_IMPORT_ROWS),
                format!(
                    "at most {} subjects per call; send the rest in another call",
                    service::MAX_IMPORT_ROWS
                ),
            )));
        }
        // Each created subject is audited as a subject (one event each).
        vern_kit::audit::resource("subject", "");
        let mut rows = Vec::with_capacity(r.subjects.len());
        for s in r.subjects {
            // The key of the row as CreateSubject computes it, so either RPC replays it.
            let key = match self.key(&t, &s.request_id, "CreateSubject", &s) {
                Ok(k) => k,
                Err(e) => {
                    rows.push(service::ImportRow {
                        input: Err(status_violations(&e)),
                        key: None,
                    });
                    continue;
                }
            };
            let input = new_subject(s).map_err(|e| status_violations(&e));
            rows.push(service::ImportRow { input, key });
        }
        let outcomes = self.subjects.import(&t, rows).await?;
        let results = outcomes
            .into_iter()
            .enumerate()
            .map(|(i, o)| import_result_pb(i, o))
            .collect();
        Ok(Response::new(pb::ImportSubjectsResponse { results }))
    }

    async fn get_subject(
        &self,
        req: Request<pb::GetSubjectRequest>,
    ) -> Result<Response<pb::Subject>, Status> {
        let ctx = CallContext::of(&req)?;
        let t = tenant(&ctx)?;
        let r = req.into_inner();
        vern_kit::audit::subject(&r.subject_id);
        let v = view(r.view, View::Full)?;
        if r.records_page_size == 0 && r.records_page_token.is_empty() {
            let s = self.subjects.get(&t, &r.subject_id, v).await?;
            return Ok(Response::new(subject_pb(s)));
        }
        let page = RecordsPage::new(
            r.records_page_size,
            &r.records_page_token,
            self.max_message_bytes / 2,
        )?;
        let (s, next) = self.subjects.get_page(&t, &r.subject_id, v, page).await?;
        let mut out = subject_pb(s);
        out.next_records_page_token = next.unwrap_or_default();
        Ok(Response::new(out))
    }

    async fn find_subject(
        &self,
        req: Request<pb::FindSubjectRequest>,
    ) -> Result<Response<pb::Subject>, Status> {
        use pb::find_subject_request::Identifier;
        let ctx = CallContext::of(&req)?;
        let t = tenant(&ctx)?;
        let r = req.into_inner();
        let v = view(r.view, View::Full)?;
        let by = match r.identifier {
            Some(Identifier::Email(e)) => Lookup::Identifier(IdentifierKind::Email, e),
            Some(Identifier::Phone(p)) => Lookup::Identifier(IdentifierKind::Phone, p),
            Some(Identifier::NationalId(n)) => Lookup::Identifier(IdentifierKind::NationalId, n),
            Some(Identifier::ExternalRef(x)) => Lookup::ExternalRef(ExternalRef {
                system: x.system,
                id: x.id,
            }),
            None => {
                return Err(invalid(FieldViolation::new(
                    "identifier",
                    "is required: one of email, phone, national_id, external_ref",
                )));
            }
        };
        let s = self.subjects.find(&t, by, v).await?;
        vern_kit::audit::subject(&s.subject_id);
        Ok(Response::new(subject_pb(s)))
    }

    async fn get_subject_stats(
        &self,
        req: Request<pb::GetSubjectStatsRequest>,
    ) -> Result<Response<pb::SubjectStats>, Status> {
        let ctx = CallContext::of(&req)?;
        let counts = self.subjects.stats(&tenant(&ctx)?).await?;
        let n = |s| counts.get(&s).copied().unwrap_or_default();
        Ok(Response::new(pb::SubjectStats {
            active_count: n(SubjectState::Active),
            restricted_count: n(SubjectState::Restricted),
            erased_count: n(SubjectState::Erased),
        }))
    }

    async fn list_subjects(
        &self,
        req: Request<pb::ListSubjectsRequest>,
    ) -> Result<Response<pb::ListSubjectsResponse>, Status> {
        let ctx = CallContext::of(&req)?;
        let t = tenant(&ctx)?;
        let r = req.into_inner();
        let limit = page::page_size(r.page_size)?;
        let after = page::decode_token(LIST, &r.page_token)?;
        let v = view(r.view, View::Basic)?;
        let state = match pb::SubjectState::try_from(r.state) {
            Ok(pb::SubjectState::Unspecified) => None,
            Ok(pb::SubjectState::Active) => Some(SubjectState::Active),
            Ok(pb::SubjectState::Restricted) => Some(SubjectState::Restricted),
            Ok(pb::SubjectState::Erased) => Some(SubjectState::Erased),
            Err(_) => {
                return Err(invalid(FieldViolation::new(
                    "state",
                    "is not a known value",
                )));
            }
        };
        let filter = ListFilter {
            state,
            external_system: non_empty(r.external_system),
        };
        let page = self
            .subjects
            .list(&t, after.as_deref(), limit, filter, v)
            .await?;
        let next_page_token = page::next_token(
            LIST,
            page.more,
            page.items.last().map(service::cursor).as_deref(),
        );
        Ok(Response::new(pb::ListSubjectsResponse {
            subjects: page.items.into_iter().map(subject_pb).collect(),
            next_page_token,
        }))
    }

    async fn update_subject(
        &self,
        req: Request<pb::UpdateSubjectRequest>,
    ) -> Result<Response<pb::Subject>, Status> {
        let ctx = CallContext::of(&req)?;
        let t = tenant(&ctx)?;
        let r = req.into_inner();
        let idem = self.key(&t, &r.request_id, "UpdateSubject", &r)?;
        let s = r
            .subject
            .ok_or_else(|| invalid(FieldViolation::new("subject", "is required")))?;
        vern_kit::validate::own_tenant("subject.tenant_id", &s.tenant_id, t.as_str())
            .map_err(invalid)?;
        let mask = r.update_mask.map(|m| m.paths).unwrap_or_default();
        vern_kit::audit::subject(&s.subject_id);
        vern_kit::audit::changed_fields(&mask);
        let changes = SubjectChanges {
            relationship_end_time: time(
                "subject.relationship_end_time",
                s.relationship_end_time.as_ref(),
                Bounds::Business,
            )?,
            email: s.email,
            phone: s.phone,
            national_id: s.national_id,
            external_refs: refs(s.external_refs),
        };
        let s = self
            .subjects
            .update(&t, &s.subject_id, &mask, changes, idem)
            .await?;
        Ok(Response::new(subject_pb(s)))
    }

    async fn add_records(
        &self,
        req: Request<pb::AddRecordsRequest>,
    ) -> Result<Response<pb::AddRecordsResponse>, Status> {
        let ctx = CallContext::of(&req)?;
        let t = tenant(&ctx)?;
        let r = req.into_inner();
        vern_kit::audit::subject(&r.subject_id);
        let idem = self.key(&t, &r.request_id, "AddRecords", &r)?;
        let records = record_inputs(r.records)?;
        let added = self
            .subjects
            .add_records(&t, &r.subject_id, records, idem)
            .await?;
        Ok(Response::new(pb::AddRecordsResponse {
            records: added.into_iter().map(record_pb).collect(),
        }))
    }

    async fn update_record(
        &self,
        req: Request<pb::UpdateRecordRequest>,
    ) -> Result<Response<pb::Record>, Status> {
        let ctx = CallContext::of(&req)?;
        let t = tenant(&ctx)?;
        let r = req.into_inner();
        vern_kit::audit::subject(&r.subject_id);
        let idem = self.key(&t, &r.request_id, "UpdateRecord", &r)?;
        let rec = r
            .record
            .ok_or_else(|| invalid(FieldViolation::new("record", "is required")))?;
        let mask = r.update_mask.map(|m| m.paths).unwrap_or_default();
        let record_id = rec.record_id.clone();
        let changes = record_input("record.", rec)?;
        let updated = self
            .subjects
            .update_record(&t, &r.subject_id, &record_id, &mask, changes, idem)
            .await?;
        Ok(Response::new(record_pb(updated)))
    }

    async fn delete_record(
        &self,
        req: Request<pb::DeleteRecordRequest>,
    ) -> Result<Response<()>, Status> {
        let ctx = CallContext::of(&req)?;
        let t = tenant(&ctx)?;
        let r = req.into_inner();
        vern_kit::audit::subject(&r.subject_id);
        let idem = self.key(&t, &r.request_id, "DeleteRecord", &r)?;
        self.subjects
            .delete_record(&t, &r.subject_id, &r.record_id, idem)
            .await?;
        Ok(Response::new(()))
    }

    async fn restrict_subject(
        &self,
        req: Request<pb::RestrictSubjectRequest>,
    ) -> Result<Response<pb::Subject>, Status> {
        let ctx = CallContext::of(&req)?;
        let t = tenant(&ctx)?;
        let r = req.into_inner();
        vern_kit::audit::subject(&r.subject_id);
        let idem = self.key(&t, &r.request_id, "RestrictSubject", &r)?;
        let call = RestrictionCall {
            subject_id: &r.subject_id,
            reason: &r.reason,
            purposes: &r.purposes,
            rights_request_id: &r.rights_request_id,
        };
        let s = self.subjects.restrict(&t, call, idem).await?;
        Ok(Response::new(subject_pb(s)))
    }

    async fn lift_restriction(
        &self,
        req: Request<pb::LiftRestrictionRequest>,
    ) -> Result<Response<pb::Subject>, Status> {
        let ctx = CallContext::of(&req)?;
        let t = tenant(&ctx)?;
        let r = req.into_inner();
        vern_kit::audit::subject(&r.subject_id);
        let idem = self.key(&t, &r.request_id, "LiftRestriction", &r)?;
        let call = RestrictionCall {
            subject_id: &r.subject_id,
            reason: &r.reason,
            purposes: &r.purposes,
            rights_request_id: "",
        };
        let s = self.subjects.lift_restriction(&t, call, idem).await?;
        Ok(Response::new(subject_pb(s)))
    }

    async fn erase_subject(
        &self,
        req: Request<pb::EraseSubjectRequest>,
    ) -> Result<Response<pb::EraseSubjectResponse>, Status> {
        let ctx = CallContext::of(&req)?;
        let t = tenant(&ctx)?;
        let r = req.into_inner();
        vern_kit::audit::subject(&r.subject_id);
        let idem = self.key(&t, &r.request_id, "EraseSubject", &r)?;
        let retain = r
            .retain
            .into_iter()
            .enumerate()
            .map(|(i, k)| {
                Ok(Retain {
                    retain_until_time: time(
                        &format!("retain[{i}].retain_until_time"),
                        k.retain_until_time.as_ref(),
                        // Derived by retention: up to 200 years after a business time.
                        Bounds::Protobuf,
                    )?,
                    record_id: k.record_id,
                    legal_reference: k.legal_reference,
                })
            })
            .collect::<Result<Vec<_>, Status>>()?;
        let o = self
            .subjects
            .erase(
                &t,
                &r.subject_id,
                &r.reason,
                retain,
                &r.rights_request_id,
                idem,
            )
            .await?;
        Ok(Response::new(erase_pb(o)))
    }

    async fn purge_records(
        &self,
        req: Request<pb::PurgeRecordsRequest>,
    ) -> Result<Response<pb::PurgeRecordsResponse>, Status> {
        let ctx = CallContext::of(&req)?;
        let t = tenant(&ctx)?;
        let r = req.into_inner();
        let idem = self.key(&t, &r.request_id, "PurgeRecords", &r)?;
        let category =
            match r.category {
                0 => None,
                c => Some(category(c).ok_or_else(|| {
                    invalid(FieldViolation::new("category", "is not a known value"))
                })?),
            };
        let action = match pb::PurgeAction::try_from(r.action) {
            Ok(pb::PurgeAction::Delete) => Some(PurgeAction::Delete),
            Ok(pb::PurgeAction::Anonymise) => Some(PurgeAction::Anonymise),
            Ok(pb::PurgeAction::Unspecified) | Err(_) => None,
        };
        let req = PurgeRequest {
            filter: PurgeFilter {
                category,
                purpose: non_empty(r.purpose),
                older_than: time("older_than", r.older_than.as_ref(), Bounds::Protobuf)?,
                field: non_empty(r.field),
                subject_ids: r.subject_ids,
                exclude_subject_ids: r.exclude_subject_ids,
                relationship_end_before: time(
                    "relationship_end_before",
                    r.relationship_end_before.as_ref(),
                    Bounds::Protobuf,
                )?,
                retain_until_before: time(
                    "retain_until_before",
                    r.retain_until_before.as_ref(),
                    Bounds::Protobuf,
                )?,
                include_open_ended: r.include_open_ended,
            },
            action,
            dry_run: r.dry_run,
            limit: r.limit,
            policy_id: r.policy_id,
        };
        let o = self.subjects.purge(&t, req, idem).await?;
        Ok(Response::new(purge_pb(o)))
    }
    async fn list_outbox_rows(
        &self,
        req: Request<vern_proto::common::v1::ListOutboxRowsRequest>,
    ) -> Result<Response<vern_proto::common::v1::ListOutboxRowsResponse>, Status> {
        let db = self.subjects.store().connection();
        Ok(Response::new(
            vern_kit::outbox::admin::list(db, req.get_ref()).await?,
        ))
    }

    async fn retry_outbox_rows(
        &self,
        req: Request<vern_proto::common::v1::RetryOutboxRowsRequest>,
    ) -> Result<Response<vern_proto::common::v1::RetryOutboxRowsResponse>, Status> {
        let db = self.subjects.store().connection();
        Ok(Response::new(
            vern_kit::outbox::admin::retry(db, req.get_ref()).await?,
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::crypto::{KEY_LEN, MasterKey};
    use crate::domain::keyring::Keyring;
    use crate::store::{KeyStore, SubjectStore};
    use pb::subject_service_server::SubjectService;
    use vern_kit::auth::{Permission, Role};
    use vern_kit::testing::TestDb;

    async fn api(db: &TestDb) -> SubjectApi {
        let keys_target = vern_kit::db::DbTarget {
            url: db.target.url.replace("/subjects.db", "/subject_keys.db"),
            schema: None,
            max_connections: None,
        };
        let store = SubjectStore::open(&db.target).await.expect("store");
        let keys = KeyStore::open(&keys_target).await.expect("keys");
        let ring = Keyring::new(
            Some(MasterKey::from_bytes([1; KEY_LEN])),
            Default::default(),
        )
        .expect("ring");
        let purposes = crate::purposes::FixedPurposes(
            [(
                "newsletter".to_owned(),
                vec![crate::domain::DataCategory::Contact],
            )]
            .into(),
        );
        SubjectApi::new(Subjects::new(
            store,
            keys,
            ring,
            std::sync::Arc::new(purposes),
        ))
    }

    fn req<T>(tenant: Option<&str>, msg: T) -> Request<T> {
        let mut r = Request::new(msg);
        r.extensions_mut().insert(CallContext::for_tests(
            tenant,
            &[Role::Integration],
            Permission::SubjectsWrite,
        ));
        r
    }

    fn a<T>(msg: T) -> Request<T> {
        req(Some("dept-a"), msg)
    }

    fn record(category: i32) -> pb::Record {
        pb::Record {
            category,
            field: "name".into(),
            value: "Ola Nordmann".into(),
            source: "web-form".into(),
            purposes: vec!["newsletter".into()],
            ..Default::default()
        }
    }

    #[tokio::test]
    async fn import_answers_per_row_and_refuses_a_batch_too_large() {
        use tonic_types::StatusExt;
        let db = TestDb::sqlite("subjects");
        let api = api(&db).await;
        let row = |i: usize| pb::CreateSubjectRequest {
            email: format!("p{i}@example.no"),
            request_id: format!("imp-{i}"),
            ..Default::default()
        };
        let too_many = pb::ImportSubjectsRequest {
            subjects: (0..=service::MAX_IMPORT_ROWS).map(row).collect(),
        };
        let e = api
            .import_subjects(a(too_many))
            .await
            .expect_err("too large");
        assert_eq!(e.code(), tonic::Code::InvalidArgument);
        let bad = e.get_details_bad_request().expect("details");
        assert_eq!(bad.field_violations[0].field, "subjects[1000]");
        assert!(!e.message().contains("example.no"));

        let batch = pb::ImportSubjectsRequest {
            subjects: vec![
                row(0),
                pb::CreateSubjectRequest {
                    email: "not-an-address".into(),
                    records: vec![pb::Record {
                        collected_at: Some(prost_types::Timestamp {
                            seconds: 0,
                            nanos: -1,
                        }),
                        ..record(common::DataCategory::Contact as i32)
                    }],
                    ..row(1)
                },
                row(2),
            ],
        };
        let out = api
            .import_subjects(a(batch.clone()))
            .await
            .expect("import")
            .into_inner()
            .results;
        assert_eq!(out.len(), 3);
        assert_eq!(out[0].status, pb::ImportStatus::Created as i32);
        assert_eq!(out[1].status, pb::ImportStatus::Invalid as i32);
        assert_eq!(out[1].violations[0].field, "records[0].collected_at");
        assert!(!format!("{:?}", out[1]).contains("not-an-address"));
        assert_eq!(out[2].status, pb::ImportStatus::Created as i32);
        // A row sent again through CreateSubject is the same subject (the same key).
        let s = api
            .create_subject(a(row(2)))
            .await
            .expect("replay")
            .into_inner();
        assert_eq!(s.subject_id, out[2].subject_id);
        let again = api
            .import_subjects(a(batch))
            .await
            .expect("again")
            .into_inner()
            .results;
        assert_eq!(again[0].subject_id, out[0].subject_id);
        assert!(again[0].replayed);
    }

    #[tokio::test]
    async fn handlers_convert_and_scope_by_the_callers_tenant() {
        let db = TestDb::sqlite("subjects");
        let api = api(&db).await;
        let create = pb::CreateSubjectRequest {
            email: "Ola@Example.no".into(),
            national_id: String::new(),
            external_refs: vec![pb::ExternalRef {
                system: "crm".into(),
                id: "42".into(),
            }],
            records: vec![record(common::DataCategory::Contact as i32)],
            request_id: "r-1".into(),
            ..Default::default()
        };
        let bad = api
            .create_subject(a(pb::CreateSubjectRequest {
                records: vec![record(0)],
                national_id: "0101901006X".into(),
                ..create.clone()
            }))
            .await
            .expect_err("bad input");
        assert_eq!(bad.code(), tonic::Code::InvalidArgument);
        for field in ["national_id", "records[0].category"] {
            assert!(bad.message().contains(field), "{}", bad.message());
        }
        let valid = create.clone();
        let s = api
            .create_subject(a(valid.clone()))
            .await
            .expect("create")
            .into_inner();
        assert_eq!(s.email, "ola@example.no");
        assert_eq!(s.state, pb::SubjectState::Active as i32);
        assert_eq!(s.records[0].category, common::DataCategory::Contact as i32);
        assert_eq!(s.records[0].value, "Ola Nordmann");
        let again = api
            .create_subject(a(valid))
            .await
            .expect("retry")
            .into_inner();
        assert_eq!(again.subject_id, s.subject_id, "idempotent by request_id");

        let found = api
            .find_subject(a(pb::FindSubjectRequest {
                identifier: Some(pb::find_subject_request::Identifier::ExternalRef(
                    pb::ExternalRef {
                        system: "crm".into(),
                        id: "42".into(),
                    },
                )),
                view: pb::SubjectView::Basic as i32,
            }))
            .await
            .expect("find")
            .into_inner();
        assert_eq!(found.subject_id, s.subject_id);
        assert_eq!(found.email, "", "BASIC");
        let e = api
            .find_subject(a(pb::FindSubjectRequest::default()))
            .await
            .expect_err("no identifier");
        assert_eq!(e.code(), tonic::Code::InvalidArgument);

        let get = |tenant: Option<&'static str>| {
            req(
                tenant,
                pb::GetSubjectRequest {
                    subject_id: s.subject_id.clone(),
                    view: 0,
                    ..Default::default()
                },
            )
        };
        let full = api
            .get_subject(get(Some("dept-a")))
            .await
            .expect("get")
            .into_inner();
        assert_eq!(full.email, "ola@example.no", "FULL by default");
        let e = api
            .get_subject(get(Some("dept-b")))
            .await
            .expect_err("other tenant");
        assert_eq!(e.code(), tonic::Code::NotFound);
        let e = api.get_subject(get(None)).await.expect_err("no tenant");
        assert_eq!(e.code(), tonic::Code::PermissionDenied);

        api.create_subject(a(pb::CreateSubjectRequest {
            email: "kari@example.no".into(),
            ..Default::default()
        }))
        .await
        .expect("kari");
        let page = api
            .list_subjects(a(pb::ListSubjectsRequest {
                page_size: 1,
                ..Default::default()
            }))
            .await
            .expect("list")
            .into_inner();
        assert_eq!(page.subjects.len(), 1);
        assert_eq!(page.subjects[0].email, "", "BASIC by default");
        let next = api
            .list_subjects(a(pb::ListSubjectsRequest {
                page_size: 1,
                page_token: page.next_page_token.clone(),
                ..Default::default()
            }))
            .await
            .expect("next")
            .into_inner();
        assert_ne!(next.subjects[0].subject_id, page.subjects[0].subject_id);
        assert!(next.next_page_token.is_empty());

        let dry = api
            .purge_records(a(pb::PurgeRecordsRequest {
                older_than: Some(to_timestamp(
                    vern_kit::time::now() + chrono::Duration::hours(1),
                )),
                action: pb::PurgeAction::Delete as i32,
                dry_run: true,
                ..Default::default()
            }))
            .await
            .expect("dry run")
            .into_inner();
        assert_eq!(dry.matched_count, 1);
        assert_eq!(dry.items[0].category, common::DataCategory::Contact as i32);

        let erased = api
            .erase_subject(a(pb::EraseSubjectRequest {
                subject_id: s.subject_id.clone(),
                reason: "Art. 17 request".into(),
                ..Default::default()
            }))
            .await
            .expect("erase")
            .into_inner();
        assert!(erased.fully_erased);
        assert_eq!(erased.state, pb::SubjectState::Erased as i32);
        let tomb = api
            .get_subject(get(Some("dept-a")))
            .await
            .expect("tombstone")
            .into_inner();
        assert_eq!(tomb.state, pb::SubjectState::Erased as i32);
        assert!(tomb.erase_time.is_some());
        db.cleanup().await;
    }
}
