//! Use cases of the tenants service: validation through the domain, tenant scoping and
//! idempotency around the store. No tonic types here.

use vern_kit::context::TenantId;
use vern_kit::error::Violations;
use vern_kit::idempotency::Key;

use crate::domain::{
    self, NewRecipient, Purpose, PurposeSpec, Recipient, Tenant, TenantProfile, TenantStatus,
};
use crate::error::TenantError;
use crate::store::{Page, TenantFilter, TenantStore};

/// Which tenants a caller may see: all (platform level) or only its own.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Visibility {
    /// Platform administrators: every tenant.
    All,
    /// Tenant-scoped callers: only this one.
    Own(TenantId),
}

impl Visibility {
    fn allows(&self, tenant_id: &str) -> bool {
        match self {
            Visibility::All => true,
            Visibility::Own(t) => t.as_str() == tenant_id,
        }
    }
}

/// The tenants service's use cases.
#[derive(Clone, Debug)]
pub struct Registry {
    store: TenantStore,
    relay: Option<vern_kit::outbox::Relay>,
}

impl Registry {
    /// Use cases over `store` (purpose notifications wait in the outbox).
    pub fn new(store: TenantStore) -> Self {
        Self { store, relay: None }
    }

    /// Use cases over `store` whose purpose notifications `relay` delivers.
    pub fn with_relay(store: TenantStore, relay: vern_kit::outbox::Relay) -> Self {
        Self {
            store,
            relay: Some(relay),
        }
    }

    fn nudge(&self) {
        if let Some(r) = &self.relay {
            r.nudge();
        }
    }

    /// The store.
    pub fn store(&self) -> &TenantStore {
        &self.store
    }

    /// CreateTenant.
    pub async fn create_tenant(
        &self,
        tenant_id: String,
        profile: TenantProfile,
        key: Option<Key>,
    ) -> Result<Tenant, TenantError> {
        let mut v = Violations::new();
        v.check(domain::new_tenant_id("tenant_id", &tenant_id));
        let profile = profile.validate("", &mut v);
        v.finish()?;
        if let Some(t) = self.store.replay(key.as_ref()).await? {
            return Ok(t);
        }
        let now = vern_kit::time::now();
        let t = Tenant {
            tenant_id,
            name: profile.name,
            org_number: profile.org_number,
            dpo_email: profile.dpo_email,
            dpo_name: profile.dpo_name,
            supervisory_authority: profile.supervisory_authority,
            group_id: profile.group_id,
            status: TenantStatus::Active,
            security_measures: profile.security_measures,
            suspension_reason: String::new(),
            create_time: now,
            update_time: now,
        };
        let created = self.store.create_tenant(&t, key.as_ref()).await?;
        vern_kit::tenancy::status_changed(Some(&created.tenant_id));
        Ok(created)
    }

    /// GetTenant: a tenant the caller cannot see is NOT_FOUND.
    pub async fn get_tenant(
        &self,
        vis: &Visibility,
        tenant_id: &str,
    ) -> Result<Tenant, TenantError> {
        if !vis.allows(tenant_id) {
            return Err(TenantError::TenantNotFound);
        }
        self.store
            .get_tenant(tenant_id)
            .await?
            .ok_or(TenantError::TenantNotFound)
    }

    /// ListTenants.
    pub async fn list_tenants(
        &self,
        vis: &Visibility,
        after: Option<&str>,
        limit: u64,
        mut filter: TenantFilter,
    ) -> Result<Page<Tenant>, TenantError> {
        if let Visibility::Own(t) = vis {
            filter.only = Some(vec![t.as_str().to_owned()]);
        }
        self.store.list_tenants(after, limit, &filter).await
    }

    /// UpdateTenant: applies the masked fields of `changes` and validates the result.
    pub async fn update_tenant(
        &self,
        vis: &Visibility,
        tenant_id: &str,
        mask: &[String],
        changes: TenantProfile,
        key: Option<Key>,
    ) -> Result<Tenant, TenantError> {
        let mut v = Violations::new();
        check_mask(&mut v, mask, domain::TENANT_UPDATABLE);
        v.finish()?;
        if let Some(t) = self.store.replay(key.as_ref()).await? {
            return Ok(t);
        }
        let current = self.get_tenant(vis, tenant_id).await?;
        // A suspended controller's record of processing is frozen with it.
        if current.status == TenantStatus::Suspended {
            return Err(TenantError::TenantSuspended);
        }
        let mut merged = TenantProfile {
            name: current.name.clone(),
            org_number: current.org_number.clone(),
            dpo_email: current.dpo_email.clone(),
            dpo_name: current.dpo_name.clone(),
            supervisory_authority: current.supervisory_authority.clone(),
            group_id: current.group_id.clone(),
            security_measures: current.security_measures.clone(),
        };
        for path in mask {
            match path.as_str() {
                "name" => merged.name = changes.name.clone(),
                "org_number" => merged.org_number = changes.org_number.clone(),
                "dpo_email" => merged.dpo_email = changes.dpo_email.clone(),
                "dpo_name" => merged.dpo_name = changes.dpo_name.clone(),
                "supervisory_authority" => {
                    merged.supervisory_authority = changes.supervisory_authority.clone()
                }
                "group_id" => merged.group_id = changes.group_id.clone(),
                "security_measures" => merged.security_measures = changes.security_measures.clone(),
                _ => {}
            }
        }
        let mut v = Violations::new();
        let p = merged.validate("tenant.", &mut v);
        v.finish()?;
        let updated = Tenant {
            name: p.name,
            org_number: p.org_number,
            dpo_email: p.dpo_email,
            dpo_name: p.dpo_name,
            supervisory_authority: p.supervisory_authority,
            group_id: p.group_id,
            security_measures: p.security_measures,
            update_time: vern_kit::time::now()
                .max(current.update_time + chrono::Duration::microseconds(1)),
            ..current.clone()
        };
        self.store
            .update_tenant(&updated, current.update_time, false, key.as_ref())
            .await
    }

    /// SuspendTenant. Suspending a suspended tenant changes nothing.
    pub async fn suspend_tenant(
        &self,
        tenant_id: &str,
        reason: &str,
        key: Option<Key>,
    ) -> Result<Tenant, TenantError> {
        self.set_status(tenant_id, TenantStatus::Suspended, reason, key)
            .await
    }

    /// ResumeTenant. Resuming an active tenant changes nothing. The reason is kept in
    /// the audit chain of the call, not on the tenant.
    pub async fn resume_tenant(
        &self,
        tenant_id: &str,
        reason: &str,
        key: Option<Key>,
    ) -> Result<Tenant, TenantError> {
        self.set_status(tenant_id, TenantStatus::Active, reason, key)
            .await
    }

    /// Moves a tenant to `status` for `reason` (required); a tenant already there is
    /// answered as it is. A suspended tenant keeps its reason; an active one has none.
    async fn set_status(
        &self,
        tenant_id: &str,
        status: TenantStatus,
        reason: &str,
        key: Option<Key>,
    ) -> Result<Tenant, TenantError> {
        let mut v = Violations::new();
        v.check(vern_kit::validate::text("reason", reason, 1000));
        v.finish()?;
        if let Some(t) = self.store.replay(key.as_ref()).await? {
            return Ok(t);
        }
        let current = self.get_tenant(&Visibility::All, tenant_id).await?;
        if current.status == status {
            return Ok(current);
        }
        let suspension_reason = match status {
            TenantStatus::Suspended => reason.trim().to_owned(),
            TenantStatus::Active => String::new(),
        };
        let updated = Tenant {
            status,
            suspension_reason,
            update_time: vern_kit::time::now()
                .max(current.update_time + chrono::Duration::microseconds(1)),
            ..current.clone()
        };
        let changed = self
            .store
            .update_tenant(&updated, current.update_time, true, key.as_ref())
            .await?;
        // In force in this process from the answer; the others learn it from the
        // generation bumped in the same transaction.
        vern_kit::tenancy::status_changed(Some(tenant_id));
        Ok(changed)
    }

    /// The generation of tenant statuses (GetTenantStatusGeneration).
    pub async fn status_generation(&self) -> Result<i64, TenantError> {
        self.store.status_generation().await
    }

    async fn active_tenant(&self, tenant: &TenantId) -> Result<Tenant, TenantError> {
        let t = self
            .store
            .get_tenant(tenant.as_str())
            .await?
            .ok_or(TenantError::TenantNotFound)?;
        if t.status == TenantStatus::Suspended {
            return Err(TenantError::TenantSuspended);
        }
        Ok(t)
    }

    /// CreatePurpose.
    pub async fn create_purpose(
        &self,
        tenant: &TenantId,
        key: String,
        spec: PurposeSpec,
        idem: Option<Key>,
    ) -> Result<Purpose, TenantError> {
        let mut v = Violations::new();
        v.check(domain::purpose_key("key", &key));
        let spec = spec.validate("", &mut v);
        v.finish()?;
        if let Some(p) = self.store.replay(idem.as_ref()).await? {
            return Ok(p);
        }
        self.active_tenant(tenant).await?;
        let now = vern_kit::time::now();
        let p = Purpose {
            tenant_id: tenant.as_str().to_owned(),
            key,
            spec,
            create_time: now,
            update_time: now,
        };
        let created = self
            .store
            .create_purpose(&p, idem.as_ref(), purpose_notification(&p))
            .await?;
        self.nudge();
        Ok(created)
    }

    /// GetPurpose.
    pub async fn get_purpose(&self, tenant: &TenantId, key: &str) -> Result<Purpose, TenantError> {
        let mut v = Violations::new();
        v.check(domain::purpose_key("key", key));
        v.finish()?;
        self.store
            .get_purpose(tenant.as_str(), key)
            .await?
            .ok_or(TenantError::PurposeNotFound)
    }

    /// ListPurposes.
    pub async fn list_purposes(
        &self,
        tenant: &TenantId,
        after: Option<&str>,
        limit: u64,
    ) -> Result<Page<Purpose>, TenantError> {
        self.store
            .list_purposes(tenant.as_str(), after, limit)
            .await
    }

    /// UpdatePurpose.
    pub async fn update_purpose(
        &self,
        tenant: &TenantId,
        key: &str,
        mask: &[String],
        changes: PurposeSpec,
        idem: Option<Key>,
    ) -> Result<Purpose, TenantError> {
        let mut v = Violations::new();
        v.check(domain::purpose_key("purpose.key", key));
        check_mask(&mut v, mask, domain::PURPOSE_UPDATABLE);
        v.finish()?;
        if let Some(p) = self.store.replay(idem.as_ref()).await? {
            return Ok(p);
        }
        self.active_tenant(tenant).await?;
        let current = self.get_purpose(tenant, key).await?;
        let mut spec = current.spec.clone();
        for path in mask {
            match path.as_str() {
                "description" => spec.description = changes.description.clone(),
                "legal_basis" => spec.legal_basis = changes.legal_basis,
                "data_categories" => spec.data_categories = changes.data_categories.clone(),
                "direct_marketing" => spec.direct_marketing = changes.direct_marketing,
                "subject_categories" => {
                    spec.subject_categories = changes.subject_categories.clone()
                }
                "legitimate_interest" => {
                    spec.legitimate_interest = changes.legitimate_interest.clone()
                }
                "special_category_condition" => spec.special_condition = changes.special_condition,
                "retention_summary" => spec.retention_summary = changes.retention_summary.clone(),
                _ => {}
            }
        }
        let mut v = Violations::new();
        let spec = spec.validate("purpose.", &mut v);
        v.finish()?;
        let updated = Purpose {
            spec,
            update_time: vern_kit::time::now()
                .max(current.update_time + chrono::Duration::microseconds(1)),
            ..current.clone()
        };
        let notification = purpose_notification(&updated);
        let saved = self
            .store
            .update_purpose(&updated, current.update_time, idem.as_ref(), notification)
            .await?;
        self.nudge();
        Ok(saved)
    }

    /// CreateRecipient.
    pub async fn create_recipient(
        &self,
        tenant: &TenantId,
        new: NewRecipient,
        idem: Option<Key>,
    ) -> Result<Recipient, TenantError> {
        let mut v = Violations::new();
        let new = new.validate(&mut v);
        v.finish()?;
        if let Some(r) = self.store.replay(idem.as_ref()).await? {
            return Ok(r);
        }
        self.active_tenant(tenant).await?;
        let role = new
            .role
            .ok_or_else(|| vern_kit::ApiError::invalid("role", "is required"))?;
        let now = vern_kit::time::now();
        let r = Recipient {
            tenant_id: tenant.as_str().to_owned(),
            recipient_id: uuid::Uuid::now_v7().to_string(),
            name: new.name,
            role,
            purposes: new.purposes,
            country: new.country,
            transfer_safeguard: new.transfer_safeguard,
            description: new.description,
            create_time: now,
            dpa_reference: new.dpa_reference,
            dpa_signed_date: new.dpa_signed_date,
            dpa_expiry_date: new.dpa_expiry_date,
            end_time: None,
            end_reason: String::new(),
            update_time: now,
        };
        self.store.create_recipient(&r, idem.as_ref()).await
    }

    async fn current_recipient(
        &self,
        tenant: &TenantId,
        field: &str,
        recipient_id: &str,
    ) -> Result<Recipient, TenantError> {
        let id = uuid::Uuid::parse_str(recipient_id)
            .map_err(|_| vern_kit::ApiError::invalid(field, "must be a recipient id (UUID)"))?
            .hyphenated()
            .to_string();
        let r = self
            .store
            .get_recipient(tenant.as_str(), &id)
            .await?
            .ok_or(TenantError::RecipientNotFound)?;
        if r.end_time.is_some() {
            return Err(TenantError::RecipientEnded);
        }
        Ok(r)
    }

    /// UpdateRecipient: applies the masked fields of `changes` and checks the result as
    /// CreateRecipient does. An ended recipient cannot change.
    pub async fn update_recipient(
        &self,
        tenant: &TenantId,
        recipient_id: &str,
        mask: &[String],
        changes: NewRecipient,
        idem: Option<Key>,
    ) -> Result<Recipient, TenantError> {
        let mut v = Violations::new();
        check_mask(&mut v, mask, domain::RECIPIENT_UPDATABLE);
        v.finish()?;
        if let Some(r) = self.store.replay(idem.as_ref()).await? {
            return Ok(r);
        }
        self.active_tenant(tenant).await?;
        let current = self
            .current_recipient(tenant, "recipient.recipient_id", recipient_id)
            .await?;
        let mut merged = current.as_new();
        for path in mask {
            match path.as_str() {
                "name" => merged.name = changes.name.clone(),
                "purposes" => merged.purposes = changes.purposes.clone(),
                "country" => merged.country = changes.country.clone(),
                "transfer_safeguard" => merged.transfer_safeguard = changes.transfer_safeguard,
                "description" => merged.description = changes.description.clone(),
                "dpa_reference" => merged.dpa_reference = changes.dpa_reference.clone(),
                "dpa_signed_date" => merged.dpa_signed_date = changes.dpa_signed_date,
                "dpa_expiry_date" => merged.dpa_expiry_date = changes.dpa_expiry_date,
                _ => {}
            }
        }
        let mut v = Violations::new();
        let m = merged.validate_with("recipient.", &mut v);
        v.finish()?;
        let updated = Recipient {
            name: m.name,
            purposes: m.purposes,
            country: m.country,
            transfer_safeguard: m.transfer_safeguard,
            description: m.description,
            dpa_reference: m.dpa_reference,
            dpa_signed_date: m.dpa_signed_date,
            dpa_expiry_date: m.dpa_expiry_date,
            update_time: vern_kit::time::now()
                .max(current.update_time + chrono::Duration::microseconds(1)),
            ..current.clone()
        };
        self.store
            .update_recipient(&updated, current.update_time, idem.as_ref())
            .await
    }

    /// EndRecipient: data stops going to the recipient at `end_time` (default now). It
    /// leaves the record of processing and stays in the history. Ending an ended
    /// recipient is FAILED_PRECONDITION (a retry with the same request id gets the
    /// first answer).
    pub async fn end_recipient(
        &self,
        tenant: &TenantId,
        recipient_id: &str,
        end_time: Option<chrono::DateTime<chrono::Utc>>,
        reason: &str,
        idem: Option<Key>,
    ) -> Result<Recipient, TenantError> {
        let mut v = Violations::new();
        let reason = v.check(domain::end_reason("reason", reason));
        v.finish()?;
        if let Some(r) = self.store.replay(idem.as_ref()).await? {
            return Ok(r);
        }
        self.active_tenant(tenant).await?;
        let current = self
            .current_recipient(tenant, "recipient_id", recipient_id)
            .await?;
        let now = vern_kit::time::now();
        let ended = Recipient {
            end_time: Some(end_time.unwrap_or(now)),
            end_reason: reason.unwrap_or_default(),
            update_time: now.max(current.update_time + chrono::Duration::microseconds(1)),
            ..current.clone()
        };
        self.store
            .update_recipient(&ended, current.update_time, idem.as_ref())
            .await
    }

    /// ListRecipients: the current recipients, or all with `include_ended`.
    pub async fn list_recipients(
        &self,
        tenant: &TenantId,
        after: Option<&str>,
        limit: u64,
        include_ended: bool,
    ) -> Result<Page<Recipient>, TenantError> {
        self.store
            .list_recipients(tenant.as_str(), after, limit, include_ended)
            .await
    }

    /// The inputs of the Art. 30 record.
    pub async fn processing_record(
        &self,
        tenant: &TenantId,
    ) -> Result<(Tenant, Vec<Purpose>, Vec<Recipient>), TenantError> {
        let t = self
            .store
            .get_tenant(tenant.as_str())
            .await?
            .ok_or(TenantError::TenantNotFound)?;
        let (purposes, recipients) = self.store.registry(tenant.as_str()).await?;
        Ok((t, purposes, recipients))
    }
}

/// The notification of a purpose change for the consents service's cache.
fn purpose_notification(p: &Purpose) -> Vec<u8> {
    use prost::Message;
    vern_proto::consents::v1::PurposeDefinition {
        key: p.key.clone(),
        legal_basis: crate::api::legal_basis_pb(p.spec.legal_basis) as i32,
        direct_marketing: p.spec.direct_marketing,
        deleted: false,
        update_time: Some(vern_kit::time::to_timestamp(p.update_time)),
    }
    .encode_to_vec()
}

fn check_mask(v: &mut Violations, mask: &[String], allowed: &[&str]) {
    if mask.is_empty() {
        v.add("update_mask", "is required: name the fields to update");
    }
    for (i, p) in mask.iter().enumerate() {
        if !allowed.contains(&p.as_str()) {
            v.add(
                format!("update_mask.paths[{i}]"),
                format!(
                    "cannot update this field; updatable: {}",
                    allowed.join(", ")
                ),
            );
        }
    }
}
