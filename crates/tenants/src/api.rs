//! gRPC handlers of TenantService: decode, convert to domain input, call the
//! registry, convert back. Nothing else.

use prost::Message;
use tonic::{Request, Response, Status};
use vern_kit::context::CallContext;
use vern_kit::error::{ApiError, FieldViolation};
use vern_kit::idempotency::Key;
use vern_kit::page;
use vern_kit::time::to_timestamp;
use vern_proto::common::v1 as common;
use vern_proto::tenants::v1 as pb;

use crate::domain::{
    self, DataCategory, LegalBasis, NewRecipient, PurposeSpec, RecipientRole, SpecialCondition,
    TenantProfile, TenantStatus, TransferSafeguard,
};
use crate::service::{Registry, Visibility};
use crate::store::TenantFilter;

/// The TenantService implementation.
#[derive(Clone, Debug)]
pub struct TenantApi {
    registry: Registry,
}

impl TenantApi {
    /// Handlers over `registry`.
    pub fn new(registry: Registry) -> Self {
        Self { registry }
    }
}

fn key<M: Message>(
    ctx: &CallContext,
    request_id: &str,
    method: &'static str,
    msg: &M,
) -> Result<Option<Key>, Status> {
    vern_kit::validate::request_id(request_id)
        .map_err(|v| Status::from(ApiError::InvalidArgument(vec![v])))?;
    Ok(Key::new(
        ctx.tenant.as_ref().map(|t| t.as_str()),
        request_id,
        method,
        &msg.encode_to_vec(),
    ))
}

fn visibility(ctx: &CallContext) -> Visibility {
    match &ctx.tenant {
        Some(t) => Visibility::Own(t.clone()),
        None => Visibility::All,
    }
}

fn tenant(ctx: &CallContext) -> Result<&vern_kit::context::TenantId, Status> {
    ctx.tenant()
}

fn required_enum<T: TryFrom<i32>>(
    field: &str,
    v: i32,
    unspecified: i32,
) -> Result<T, FieldViolation> {
    if v == unspecified {
        return Err(FieldViolation::new(field, "is required"));
    }
    T::try_from(v).map_err(|_| FieldViolation::new(field, "is not a known value"))
}

fn invalid(v: FieldViolation) -> Status {
    ApiError::InvalidArgument(vec![v]).into()
}

fn legal_basis(field: &str, v: i32) -> Result<LegalBasis, FieldViolation> {
    let b: common::LegalBasis = required_enum(field, v, 0)?;
    Ok(match b {
        common::LegalBasis::Consent => LegalBasis::Consent,
        common::LegalBasis::Contract => LegalBasis::Contract,
        common::LegalBasis::LegalObligation => LegalBasis::LegalObligation,
        common::LegalBasis::VitalInterests => LegalBasis::VitalInterests,
        common::LegalBasis::PublicTask => LegalBasis::PublicTask,
        common::LegalBasis::LegitimateInterests => LegalBasis::LegitimateInterests,
        common::LegalBasis::Unspecified => return Err(FieldViolation::new(field, "is required")),
    })
}

/// Also the consents notification's basis (`service::purpose_notification`).
pub(crate) fn legal_basis_pb(b: LegalBasis) -> common::LegalBasis {
    match b {
        LegalBasis::Consent => common::LegalBasis::Consent,
        LegalBasis::Contract => common::LegalBasis::Contract,
        LegalBasis::LegalObligation => common::LegalBasis::LegalObligation,
        LegalBasis::VitalInterests => common::LegalBasis::VitalInterests,
        LegalBasis::PublicTask => common::LegalBasis::PublicTask,
        LegalBasis::LegitimateInterests => common::LegalBasis::LegitimateInterests,
    }
}

// Protobuf ↔ domain by explicit arms (vern_kit::proto_enum): stored names never follow
// the protobuf value names.
vern_kit::proto_enum!(category_to_pb, category_of: DataCategory => common::DataCategory {
    Contact, Identity, Employment, Demographic, Behaviour, Communications, Preferences,
    Financial, Absence, Health
});
vern_kit::proto_enum!(special_to_pb, special_of: SpecialCondition => pb::SpecialCategoryCondition {
    ExplicitConsent, EmploymentLaw, VitalInterestsIncapable, NotForProfitMembers,
    ManifestlyPublic, LegalClaims, SubstantialPublicInterest, HealthCare, PublicHealth,
    ArchivingResearch
});
vern_kit::proto_enum!(safeguard_to_pb, safeguard_of: TransferSafeguard => pb::TransferSafeguard {
    AdequacyDecision, StandardContractualClauses, BindingCorporateRules, Derogation
});
vern_kit::proto_enum!(role_to_pb, role_of: RecipientRole => pb::RecipientRole {
    Processor, Controller, Authority
});

fn categories(field: &str, v: &[i32]) -> Result<Vec<DataCategory>, FieldViolation> {
    v.iter()
        .enumerate()
        .map(|(i, c)| {
            let f = format!("{field}[{i}]");
            let c: common::DataCategory = required_enum(&f, *c, 0)?;
            category_of(c).ok_or_else(|| FieldViolation::new(f, "is not a known value"))
        })
        .collect()
}

fn categories_pb(v: &[DataCategory]) -> Vec<i32> {
    v.iter().map(|c| category_to_pb(*c) as i32).collect()
}

fn special(field: &str, v: i32) -> Result<Option<SpecialCondition>, FieldViolation> {
    if v == 0 {
        return Ok(None);
    }
    let c = pb::SpecialCategoryCondition::try_from(v)
        .map_err(|_| FieldViolation::new(field, "is not a known value"))?;
    Ok(special_of(c))
}

fn special_pb(c: Option<SpecialCondition>) -> i32 {
    c.map_or(0, |c| special_to_pb(c) as i32)
}

fn safeguard(field: &str, v: i32) -> Result<Option<TransferSafeguard>, FieldViolation> {
    if v == 0 {
        return Ok(None);
    }
    let s = pb::TransferSafeguard::try_from(v)
        .map_err(|_| FieldViolation::new(field, "is not a known value"))?;
    Ok(safeguard_of(s))
}

fn safeguard_pb(s: Option<TransferSafeguard>) -> i32 {
    s.map_or(0, |s| safeguard_to_pb(s) as i32)
}

fn role_pb(r: RecipientRole) -> i32 {
    role_to_pb(r) as i32
}

fn tenant_pb(t: domain::Tenant) -> pb::Tenant {
    pb::Tenant {
        tenant_id: t.tenant_id,
        name: t.name,
        org_number: t.org_number,
        dpo_email: t.dpo_email,
        dpo_name: t.dpo_name,
        supervisory_authority: t.supervisory_authority,
        group_id: t.group_id,
        status: match t.status {
            TenantStatus::Active => pb::TenantStatus::Active as i32,
            TenantStatus::Suspended => pb::TenantStatus::Suspended as i32,
        },
        security_measures: t.security_measures,
        suspension_reason: t.suspension_reason,
        create_time: Some(to_timestamp(t.create_time)),
        update_time: Some(to_timestamp(t.update_time)),
    }
}

fn purpose_pb(p: domain::Purpose) -> pb::Purpose {
    let s = p.spec;
    pb::Purpose {
        tenant_id: p.tenant_id,
        key: p.key,
        description: s.description,
        legal_basis: legal_basis_pb(s.legal_basis) as i32,
        data_categories: categories_pb(&s.data_categories),
        direct_marketing: s.direct_marketing,
        subject_categories: s.subject_categories,
        legitimate_interest: s.legitimate_interest,
        special_category_condition: special_pb(s.special_condition),
        retention_summary: s.retention_summary,
        create_time: Some(to_timestamp(p.create_time)),
        update_time: Some(to_timestamp(p.update_time)),
    }
}

fn recipient_pb(r: domain::Recipient) -> pb::Recipient {
    pb::Recipient {
        third_country_transfer: domain::is_third_country(&r.country),
        tenant_id: r.tenant_id,
        recipient_id: r.recipient_id,
        name: r.name,
        role: role_pb(r.role),
        purposes: r.purposes,
        country: r.country,
        transfer_safeguard: safeguard_pb(r.transfer_safeguard),
        description: r.description,
        create_time: Some(to_timestamp(r.create_time)),
        dpa_reference: r.dpa_reference,
        dpa_signed_date: r.dpa_signed_date.map(to_timestamp),
        dpa_expiry_date: r.dpa_expiry_date.map(to_timestamp),
        end_time: r.end_time.map(to_timestamp),
        end_reason: r.end_reason,
        update_time: Some(to_timestamp(r.update_time)),
    }
}

fn time(
    field: &str,
    t: Option<&prost_types::Timestamp>,
    bounds: vern_kit::time::Bounds,
) -> Result<Option<chrono::DateTime<chrono::Utc>>, Status> {
    vern_kit::time::field(field, t, bounds).map_err(invalid)
}

/// The DPA dates of a request: signed (an event: not in the future) and expiry (a
/// business time).
type DpaDates = (
    Option<chrono::DateTime<chrono::Utc>>,
    Option<chrono::DateTime<chrono::Utc>>,
);

fn dpa_dates(
    prefix: &str,
    signed: Option<&prost_types::Timestamp>,
    expiry: Option<&prost_types::Timestamp>,
) -> Result<DpaDates, Status> {
    use vern_kit::time::Bounds;
    Ok((
        time(&format!("{prefix}dpa_signed_date"), signed, Bounds::Event)?,
        time(
            &format!("{prefix}dpa_expiry_date"),
            expiry,
            Bounds::Business,
        )?,
    ))
}

/// Decodes a purpose spec; with `lenient`, unset enums are allowed (fields not in an
/// update mask).
fn purpose_spec(
    p: &pb::Purpose,
    prefix: &str,
    mask: Option<&[String]>,
) -> Result<PurposeSpec, Status> {
    let wants = |f: &str| mask.is_none_or(|m| m.iter().any(|x| x == f));
    let f = |n: &str| format!("{prefix}{n}");
    let mut v = vern_kit::error::Violations::new();
    let legal_basis = if wants("legal_basis") {
        v.check(legal_basis(&f("legal_basis"), p.legal_basis))
    } else {
        Some(LegalBasis::Consent)
    };
    let data_categories = if wants("data_categories") {
        v.check(categories(&f("data_categories"), &p.data_categories))
    } else {
        Some(vec![])
    };
    let special_condition = v.check(special(
        &f("special_category_condition"),
        p.special_category_condition,
    ));
    v.finish().map_err(Status::from)?;
    Ok(PurposeSpec {
        description: p.description.clone(),
        legal_basis: legal_basis.unwrap_or(LegalBasis::Consent),
        data_categories: data_categories.unwrap_or_default(),
        direct_marketing: p.direct_marketing,
        subject_categories: p.subject_categories.clone(),
        legitimate_interest: p.legitimate_interest.clone(),
        special_condition: special_condition.flatten(),
        retention_summary: p.retention_summary.clone(),
    })
}

#[tonic::async_trait]
impl pb::tenant_service_server::TenantService for TenantApi {
    async fn create_tenant(
        &self,
        req: Request<pb::CreateTenantRequest>,
    ) -> Result<Response<pb::Tenant>, Status> {
        let ctx = CallContext::of(&req)?;
        let r = req.into_inner();
        let idem = key(&ctx, &r.request_id, "CreateTenant", &r)?;
        let profile = TenantProfile {
            name: r.name,
            org_number: r.org_number,
            dpo_email: r.dpo_email,
            dpo_name: r.dpo_name,
            supervisory_authority: r.supervisory_authority,
            group_id: r.group_id,
            security_measures: r.security_measures,
        };
        let t = self
            .registry
            .create_tenant(r.tenant_id, profile, idem)
            .await?;
        Ok(Response::new(tenant_pb(t)))
    }

    async fn get_tenant(
        &self,
        req: Request<pb::GetTenantRequest>,
    ) -> Result<Response<pb::Tenant>, Status> {
        let ctx = CallContext::of(&req)?;
        let r = req.into_inner();
        domain::tenant_id("tenant_id", &r.tenant_id).map_err(invalid)?;
        let t = self
            .registry
            .get_tenant(&visibility(&ctx), &r.tenant_id)
            .await?;
        Ok(Response::new(tenant_pb(t)))
    }

    async fn get_tenant_status_generation(
        &self,
        _req: Request<pb::GetTenantStatusGenerationRequest>,
    ) -> Result<Response<pb::GetTenantStatusGenerationResponse>, Status> {
        let generation = self.registry.status_generation().await?;
        Ok(Response::new(pb::GetTenantStatusGenerationResponse {
            generation,
        }))
    }

    async fn list_tenants(
        &self,
        req: Request<pb::ListTenantsRequest>,
    ) -> Result<Response<pb::ListTenantsResponse>, Status> {
        let ctx = CallContext::of(&req)?;
        let r = req.into_inner();
        let limit = page::page_size(r.page_size)?;
        let after = page::decode_token("tenants", &r.page_token)?;
        let status = match r.status {
            0 => None,
            1 => Some(TenantStatus::Active),
            2 => Some(TenantStatus::Suspended),
            _ => {
                return Err(invalid(FieldViolation::new(
                    "status",
                    "is not a known value",
                )));
            }
        };
        let filter = TenantFilter {
            group_id: (!r.group_id.is_empty()).then_some(r.group_id),
            status,
            only: None,
        };
        let page = self
            .registry
            .list_tenants(&visibility(&ctx), after.as_deref(), limit, filter)
            .await?;
        let next_page_token = page::next_token(
            "tenants",
            page.more,
            page.items.last().map(|t| t.tenant_id.as_str()),
        );
        Ok(Response::new(pb::ListTenantsResponse {
            tenants: page.items.into_iter().map(tenant_pb).collect(),
            next_page_token,
        }))
    }

    async fn update_tenant(
        &self,
        req: Request<pb::UpdateTenantRequest>,
    ) -> Result<Response<pb::Tenant>, Status> {
        let ctx = CallContext::of(&req)?;
        let r = req.into_inner();
        let idem = key(&ctx, &r.request_id, "UpdateTenant", &r)?;
        let t = r
            .tenant
            .ok_or_else(|| invalid(FieldViolation::new("tenant", "is required")))?;
        domain::tenant_id("tenant.tenant_id", &t.tenant_id).map_err(invalid)?;
        let mask = r.update_mask.map(|m| m.paths).unwrap_or_default();
        vern_kit::audit::changed_fields(&mask);
        let changes = TenantProfile {
            name: t.name,
            org_number: t.org_number,
            dpo_email: t.dpo_email,
            dpo_name: t.dpo_name,
            supervisory_authority: t.supervisory_authority,
            group_id: t.group_id,
            security_measures: t.security_measures,
        };
        let t = self
            .registry
            .update_tenant(&visibility(&ctx), &t.tenant_id, &mask, changes, idem)
            .await?;
        Ok(Response::new(tenant_pb(t)))
    }

    async fn suspend_tenant(
        &self,
        req: Request<pb::SuspendTenantRequest>,
    ) -> Result<Response<pb::Tenant>, Status> {
        let ctx = CallContext::of(&req)?;
        let r = req.into_inner();
        let idem = key(&ctx, &r.request_id, "SuspendTenant", &r)?;
        domain::tenant_id("tenant_id", &r.tenant_id).map_err(invalid)?;
        let t = self
            .registry
            .suspend_tenant(&r.tenant_id, &r.reason, idem)
            .await?;
        Ok(Response::new(tenant_pb(t)))
    }

    async fn resume_tenant(
        &self,
        req: Request<pb::ResumeTenantRequest>,
    ) -> Result<Response<pb::Tenant>, Status> {
        let ctx = CallContext::of(&req)?;
        let r = req.into_inner();
        let idem = key(&ctx, &r.request_id, "ResumeTenant", &r)?;
        domain::tenant_id("tenant_id", &r.tenant_id).map_err(invalid)?;
        let t = self
            .registry
            .resume_tenant(&r.tenant_id, &r.reason, idem)
            .await?;
        Ok(Response::new(tenant_pb(t)))
    }

    async fn create_purpose(
        &self,
        req: Request<pb::CreatePurposeRequest>,
    ) -> Result<Response<pb::Purpose>, Status> {
        let ctx = CallContext::of(&req)?;
        let r = req.into_inner();
        let idem = key(&ctx, &r.request_id, "CreatePurpose", &r)?;
        let as_purpose = pb::Purpose {
            description: r.description,
            legal_basis: r.legal_basis,
            data_categories: r.data_categories,
            direct_marketing: r.direct_marketing,
            subject_categories: r.subject_categories,
            legitimate_interest: r.legitimate_interest,
            special_category_condition: r.special_category_condition,
            retention_summary: r.retention_summary,
            ..Default::default()
        };
        let spec = purpose_spec(&as_purpose, "", None)?;
        let p = self
            .registry
            .create_purpose(tenant(&ctx)?, r.key, spec, idem)
            .await?;
        Ok(Response::new(purpose_pb(p)))
    }

    async fn get_purpose(
        &self,
        req: Request<pb::GetPurposeRequest>,
    ) -> Result<Response<pb::Purpose>, Status> {
        let ctx = CallContext::of(&req)?;
        let p = self
            .registry
            .get_purpose(tenant(&ctx)?, &req.get_ref().key)
            .await?;
        Ok(Response::new(purpose_pb(p)))
    }

    async fn list_purposes(
        &self,
        req: Request<pb::ListPurposesRequest>,
    ) -> Result<Response<pb::ListPurposesResponse>, Status> {
        let ctx = CallContext::of(&req)?;
        let r = req.into_inner();
        let limit = page::page_size(r.page_size)?;
        let after = page::decode_token("purposes", &r.page_token)?;
        let page = self
            .registry
            .list_purposes(tenant(&ctx)?, after.as_deref(), limit)
            .await?;
        let next_page_token = page::next_token(
            "purposes",
            page.more,
            page.items.last().map(|p| p.key.as_str()),
        );
        Ok(Response::new(pb::ListPurposesResponse {
            purposes: page.items.into_iter().map(purpose_pb).collect(),
            next_page_token,
        }))
    }

    async fn update_purpose(
        &self,
        req: Request<pb::UpdatePurposeRequest>,
    ) -> Result<Response<pb::Purpose>, Status> {
        let ctx = CallContext::of(&req)?;
        let r = req.into_inner();
        let idem = key(&ctx, &r.request_id, "UpdatePurpose", &r)?;
        let p = r
            .purpose
            .ok_or_else(|| invalid(FieldViolation::new("purpose", "is required")))?;
        vern_kit::validate::own_tenant("purpose.tenant_id", &p.tenant_id, tenant(&ctx)?.as_str())
            .map_err(invalid)?;
        let mask = r.update_mask.map(|m| m.paths).unwrap_or_default();
        vern_kit::audit::changed_fields(&mask);
        let changes = purpose_spec(&p, "purpose.", Some(&mask))?;
        let p = self
            .registry
            .update_purpose(tenant(&ctx)?, &p.key, &mask, changes, idem)
            .await?;
        Ok(Response::new(purpose_pb(p)))
    }

    async fn create_recipient(
        &self,
        req: Request<pb::CreateRecipientRequest>,
    ) -> Result<Response<pb::Recipient>, Status> {
        let ctx = CallContext::of(&req)?;
        let r = req.into_inner();
        let idem = key(&ctx, &r.request_id, "CreateRecipient", &r)?;
        let role = match r.role {
            0 => None,
            v => Some(
                pb::RecipientRole::try_from(v)
                    .ok()
                    .and_then(role_of)
                    .ok_or_else(|| invalid(FieldViolation::new("role", "is not a known value")))?,
            ),
        };
        let (dpa_signed_date, dpa_expiry_date) =
            dpa_dates("", r.dpa_signed_date.as_ref(), r.dpa_expiry_date.as_ref())?;
        let new = NewRecipient {
            name: r.name,
            role,
            purposes: r.purposes,
            country: r.country,
            transfer_safeguard: safeguard("transfer_safeguard", r.transfer_safeguard)
                .map_err(invalid)?,
            description: r.description,
            dpa_reference: r.dpa_reference,
            dpa_signed_date,
            dpa_expiry_date,
        };
        let rec = self
            .registry
            .create_recipient(tenant(&ctx)?, new, idem)
            .await?;
        Ok(Response::new(recipient_pb(rec)))
    }

    async fn list_recipients(
        &self,
        req: Request<pb::ListRecipientsRequest>,
    ) -> Result<Response<pb::ListRecipientsResponse>, Status> {
        let ctx = CallContext::of(&req)?;
        let r = req.into_inner();
        let limit = page::page_size(r.page_size)?;
        let after = page::decode_token("recipients", &r.page_token)?;
        let page = self
            .registry
            .list_recipients(tenant(&ctx)?, after.as_deref(), limit, r.include_ended)
            .await?;
        let next_page_token = page::next_token(
            "recipients",
            page.more,
            page.items.last().map(|r| r.recipient_id.as_str()),
        );
        Ok(Response::new(pb::ListRecipientsResponse {
            recipients: page.items.into_iter().map(recipient_pb).collect(),
            next_page_token,
        }))
    }

    async fn update_recipient(
        &self,
        req: Request<pb::UpdateRecipientRequest>,
    ) -> Result<Response<pb::Recipient>, Status> {
        let ctx = CallContext::of(&req)?;
        let r = req.into_inner();
        let idem = key(&ctx, &r.request_id, "UpdateRecipient", &r)?;
        let rec = r
            .recipient
            .ok_or_else(|| invalid(FieldViolation::new("recipient", "is required")))?;
        vern_kit::validate::own_tenant(
            "recipient.tenant_id",
            &rec.tenant_id,
            tenant(&ctx)?.as_str(),
        )
        .map_err(invalid)?;
        vern_kit::audit::resource("recipient", &rec.recipient_id);
        let mask = r.update_mask.map(|m| m.paths).unwrap_or_default();
        vern_kit::audit::changed_fields(&mask);
        let wants = |f: &str| mask.iter().any(|x| x == f);
        let (dpa_signed_date, dpa_expiry_date) = dpa_dates(
            "recipient.",
            rec.dpa_signed_date
                .as_ref()
                .filter(|_| wants("dpa_signed_date")),
            rec.dpa_expiry_date
                .as_ref()
                .filter(|_| wants("dpa_expiry_date")),
        )?;
        let transfer_safeguard = if wants("transfer_safeguard") {
            safeguard("recipient.transfer_safeguard", rec.transfer_safeguard).map_err(invalid)?
        } else {
            None
        };
        let changes = NewRecipient {
            name: rec.name,
            role: None,
            purposes: rec.purposes,
            country: rec.country,
            transfer_safeguard,
            description: rec.description,
            dpa_reference: rec.dpa_reference,
            dpa_signed_date,
            dpa_expiry_date,
        };
        let out = self
            .registry
            .update_recipient(tenant(&ctx)?, &rec.recipient_id, &mask, changes, idem)
            .await?;
        Ok(Response::new(recipient_pb(out)))
    }

    async fn end_recipient(
        &self,
        req: Request<pb::EndRecipientRequest>,
    ) -> Result<Response<pb::Recipient>, Status> {
        let ctx = CallContext::of(&req)?;
        let r = req.into_inner();
        let idem = key(&ctx, &r.request_id, "EndRecipient", &r)?;
        vern_kit::audit::resource("recipient", &r.recipient_id);
        let end_time = time(
            "end_time",
            r.end_time.as_ref(),
            vern_kit::time::Bounds::Event,
        )?;
        let out = self
            .registry
            .end_recipient(tenant(&ctx)?, &r.recipient_id, end_time, &r.reason, idem)
            .await?;
        Ok(Response::new(recipient_pb(out)))
    }

    async fn get_processing_record(
        &self,
        req: Request<pb::GetProcessingRecordRequest>,
    ) -> Result<Response<pb::ProcessingRecord>, Status> {
        let ctx = CallContext::of(&req)?;
        let (t, purposes, recipients) = self.registry.processing_record(tenant(&ctx)?).await?;
        Ok(Response::new(processing_record(t, purposes, recipients)))
    }
    async fn list_outbox_rows(
        &self,
        req: Request<vern_proto::common::v1::ListOutboxRowsRequest>,
    ) -> Result<Response<vern_proto::common::v1::ListOutboxRowsResponse>, Status> {
        let db = self.registry.store().connection();
        Ok(Response::new(
            vern_kit::outbox::admin::list(db, req.get_ref()).await?,
        ))
    }

    async fn retry_outbox_rows(
        &self,
        req: Request<vern_proto::common::v1::RetryOutboxRowsRequest>,
    ) -> Result<Response<vern_proto::common::v1::RetryOutboxRowsResponse>, Status> {
        let db = self.registry.store().connection();
        Ok(Response::new(
            vern_kit::outbox::admin::retry(db, req.get_ref()).await?,
        ))
    }
}

/// Assembles the Art. 30(1) record from the registry's contents.
fn processing_record(
    t: domain::Tenant,
    purposes: Vec<domain::Purpose>,
    recipients: Vec<domain::Recipient>,
) -> pb::ProcessingRecord {
    let record_recipient = |r: &domain::Recipient| pb::RecordRecipient {
        name: r.name.clone(),
        role: role_pb(r.role),
        country: r.country.clone(),
    };
    let transfer = |r: &domain::Recipient| {
        domain::is_third_country(&r.country).then(|| pb::Transfer {
            recipient: r.name.clone(),
            country: r.country.clone(),
            safeguard: safeguard_pb(r.transfer_safeguard),
        })
    };
    let mut subject_categories: Vec<String> = vec![];
    let mut data_categories: Vec<DataCategory> = vec![];
    let activities = purposes
        .iter()
        .map(|p| {
            let s = &p.spec;
            subject_categories.extend(s.subject_categories.iter().cloned());
            data_categories.extend(s.data_categories.iter().copied());
            let for_purpose: Vec<&domain::Recipient> = recipients
                .iter()
                .filter(|r| r.purposes.contains(&p.key))
                .collect();
            pb::ProcessingActivity {
                purpose: p.key.clone(),
                description: s.description.clone(),
                legal_basis: legal_basis_pb(s.legal_basis) as i32,
                legitimate_interest: s.legitimate_interest.clone(),
                special_category_condition: special_pb(s.special_condition),
                subject_categories: s.subject_categories.clone(),
                data_categories: categories_pb(&s.data_categories),
                recipients: for_purpose.iter().map(|r| record_recipient(r)).collect(),
                transfers: for_purpose.iter().filter_map(|r| transfer(r)).collect(),
                erasure_time_limit: s.retention_summary.clone(),
                direct_marketing: s.direct_marketing,
            }
        })
        .collect();
    subject_categories.sort();
    subject_categories.dedup();
    data_categories.sort();
    data_categories.dedup();
    pb::ProcessingRecord {
        security_measures: t.security_measures.clone(),
        controller: Some(tenant_pb(t)),
        activities,
        subject_categories,
        data_categories: categories_pb(&data_categories),
        recipients: recipients.iter().map(record_recipient).collect(),
        transfers: recipients.iter().filter_map(transfer).collect(),
        generate_time: Some(to_timestamp(vern_kit::time::now())),
    }
}
