//! Use cases of the retention service: validation through the domain, tenant scoping,
//! idempotency and the calls to other services. No tonic types here.

use std::sync::Arc;

use chrono::{DateTime, Utc};
use vern_kit::context::TenantId;
use vern_kit::error::Violations;
use vern_kit::idempotency::Key;

use crate::domain::{self, Anchor, Decision, Hold, HoldInput, Policy, PolicyInput, SubjectFacts};
use crate::error::RetentionError;
use crate::remote::Upstream;
use crate::store::{HoldFilter, Page, PolicyFilter, RetentionStore};

/// The answer of Evaluate.
#[derive(Debug, Clone)]
pub struct Evaluation {
    /// The subject.
    pub subject_id: String,
    /// One decision per record, with the record's metadata.
    pub decisions: Vec<(domain::RecordInfo, Decision)>,
    /// Active holds affecting the subject.
    pub holds: Vec<Hold>,
    /// Any record kept.
    pub any_kept: bool,
    /// Latest end among kept records; `None` when none or open-ended.
    pub retain_until: Option<DateTime<Utc>>,
    /// The time evaluated at.
    pub evaluate_time: DateTime<Utc>,
}

/// The retention service's use cases.
#[derive(Clone)]
pub struct Retention {
    pub(crate) store: RetentionStore,
    pub(crate) upstream: Arc<dyn Upstream>,
}

impl std::fmt::Debug for Retention {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Retention").finish_non_exhaustive()
    }
}

fn check_mask(v: &mut Violations, mask: &[String]) {
    if mask.is_empty() {
        v.add("update_mask", "is required: name the fields to update");
    }
    for (i, p) in mask.iter().enumerate() {
        if !domain::POLICY_UPDATABLE.contains(&p.as_str()) {
            v.add(
                format!("update_mask.paths[{i}]"),
                format!(
                    "cannot update this field; updatable: {}",
                    domain::POLICY_UPDATABLE.join(", ")
                ),
            );
        }
    }
}

fn later_than(t: DateTime<Utc>) -> DateTime<Utc> {
    vern_kit::time::now().max(t + chrono::Duration::microseconds(1))
}

impl Retention {
    /// Use cases over `store`, calling other services through `upstream`.
    pub fn new(store: RetentionStore, upstream: Arc<dyn Upstream>) -> Self {
        Self { store, upstream }
    }

    /// The store.
    pub fn store(&self) -> &RetentionStore {
        &self.store
    }

    async fn check_purpose(
        &self,
        tenant: &TenantId,
        purpose: Option<&str>,
        field: &'static str,
    ) -> Result<(), RetentionError> {
        if let Some(p) = purpose
            && !self.upstream.purpose_exists(tenant.as_str(), p).await?
        {
            return Err(RetentionError::UnknownPurpose(field));
        }
        Ok(())
    }

    /// CreatePolicy.
    pub async fn create_policy(
        &self,
        tenant: &TenantId,
        input: PolicyInput,
        key: Option<Key>,
    ) -> Result<Policy, RetentionError> {
        let mut v = Violations::new();
        let spec = input.validate("", &mut v);
        v.finish()?;
        let spec = spec.ok_or_else(|| vern_kit::ApiError::invalid("period", "is invalid"))?;
        if let Some(p) = self.store.replay(key.as_ref()).await? {
            return Ok(p);
        }
        self.check_purpose(tenant, spec.purpose.as_deref(), "purpose")
            .await?;
        let now = vern_kit::time::now();
        let p = Policy {
            tenant_id: tenant.as_str().to_owned(),
            policy_id: uuid::Uuid::now_v7().to_string(),
            spec,
            create_time: now,
            update_time: now,
        };
        self.store.create_policy(&p, key.as_ref()).await
    }

    /// GetPolicy.
    pub async fn get_policy(&self, tenant: &TenantId, id: &str) -> Result<Policy, RetentionError> {
        let mut v = Violations::new();
        let id = v.check(domain::uuid("policy_id", id));
        v.finish()?;
        self.store
            .get_policy(tenant.as_str(), &id.unwrap_or_default())
            .await?
            .ok_or(RetentionError::PolicyNotFound)
    }

    /// ListPolicies.
    pub async fn list_policies(
        &self,
        tenant: &TenantId,
        after: Option<&str>,
        limit: u64,
        filter: PolicyFilter,
    ) -> Result<Page<Policy>, RetentionError> {
        if let Some(p) = &filter.purpose {
            let mut v = Violations::new();
            v.check(domain::purpose_key("purpose", p));
            v.finish()?;
        }
        self.store
            .list_policies(tenant.as_str(), after, limit, &filter)
            .await
    }

    /// UpdatePolicy: applies the masked fields of `changes` and validates the result.
    pub async fn update_policy(
        &self,
        tenant: &TenantId,
        id: &str,
        mask: &[String],
        changes: PolicyInput,
        key: Option<Key>,
    ) -> Result<Policy, RetentionError> {
        let mut v = Violations::new();
        let id = v.check(domain::uuid("policy.policy_id", id));
        check_mask(&mut v, mask);
        v.finish()?;
        if let Some(p) = self.store.replay(key.as_ref()).await? {
            return Ok(p);
        }
        let current = self.get_policy(tenant, &id.unwrap_or_default()).await?;
        let s = &current.spec;
        let mut merged = PolicyInput {
            name: s.name.clone(),
            category: s.category,
            purpose: s.purpose.clone().unwrap_or_default(),
            field: s.field.clone().unwrap_or_default(),
            period: s.period.to_string(),
            anchor: Some(s.anchor),
            action: Some(s.action),
            legal_reference: s.legal_reference.clone(),
            legal_duty: s.legal_duty,
        };
        for path in mask {
            match path.as_str() {
                "name" => merged.name = changes.name.clone(),
                "category" => merged.category = changes.category,
                "purpose" => merged.purpose = changes.purpose.clone(),
                "field" => merged.field = changes.field.clone(),
                "period" => merged.period = changes.period.clone(),
                "anchor" => merged.anchor = changes.anchor,
                "action" => merged.action = changes.action,
                "legal_reference" => merged.legal_reference = changes.legal_reference.clone(),
                "legal_duty" => merged.legal_duty = changes.legal_duty,
                _ => {}
            }
        }
        let mut v = Violations::new();
        let spec = merged.validate("policy.", &mut v);
        v.finish()?;
        let spec = spec.ok_or_else(|| vern_kit::ApiError::invalid("policy", "is invalid"))?;
        if mask.iter().any(|m| m == "purpose") {
            self.check_purpose(tenant, spec.purpose.as_deref(), "policy.purpose")
                .await?;
        }
        let updated = Policy {
            spec,
            update_time: later_than(current.update_time),
            ..current.clone()
        };
        self.store
            .update_policy(&updated, current.update_time, key.as_ref())
            .await
    }

    /// DeletePolicy.
    pub async fn delete_policy(
        &self,
        tenant: &TenantId,
        id: &str,
        key: Option<Key>,
    ) -> Result<(), RetentionError> {
        let mut v = Violations::new();
        let id = v.check(domain::uuid("policy_id", id));
        v.finish()?;
        let id = id.unwrap_or_default();
        if self.store.replay::<()>(key.as_ref()).await?.is_some() {
            return Ok(());
        }
        vern_kit::audit::resource("policy", &id);
        self.store
            .delete_policy(tenant.as_str(), &id, key.as_ref())
            .await
    }

    /// PlaceHold.
    pub async fn place_hold(
        &self,
        tenant: &TenantId,
        input: HoldInput,
        placed_by: &str,
        key: Option<Key>,
    ) -> Result<Hold, RetentionError> {
        let now = vern_kit::time::now();
        let (scope, subject_id, reason) = input.validate(now)?;
        if let Some(h) = self.store.replay::<Hold>(key.as_ref()).await? {
            vern_kit::audit::resource("hold", &h.hold_id);
            return Ok(h);
        }
        // A hold names a subject of this tenant: an id from elsewhere (another
        // department's, a typo) would hold nothing and look as if it did.
        if let Some(s) = &subject_id
            && self.upstream.subject(tenant.as_str(), s).await?.is_none()
        {
            return Err(RetentionError::SubjectNotFound);
        }
        let h = Hold {
            tenant_id: tenant.as_str().to_owned(),
            hold_id: uuid::Uuid::now_v7().to_string(),
            scope,
            subject_id,
            reason,
            end_time: input.end_time,
            placed_by: placed_by.to_owned(),
            create_time: now,
            release_time: None,
            released_by: String::new(),
            release_reason: String::new(),
        };
        vern_kit::audit::resource("hold", &h.hold_id);
        if let Some(s) = &h.subject_id {
            vern_kit::audit::subject(s);
        }
        self.store.place_hold(&h, key.as_ref()).await
    }

    /// GetHold.
    pub async fn get_hold(&self, tenant: &TenantId, id: &str) -> Result<Hold, RetentionError> {
        let mut v = Violations::new();
        let id = v.check(domain::uuid("hold_id", id));
        v.finish()?;
        self.store
            .get_hold(tenant.as_str(), &id.unwrap_or_default())
            .await?
            .ok_or(RetentionError::HoldNotFound)
    }

    /// ReleaseHold. Releasing a released hold is FAILED_PRECONDITION; an expired hold
    /// may still be released (the record then says who ended it).
    pub async fn release_hold(
        &self,
        tenant: &TenantId,
        id: &str,
        reason: &str,
        released_by: &str,
        key: Option<Key>,
    ) -> Result<Hold, RetentionError> {
        let mut v = Violations::new();
        let id = v.check(domain::uuid("hold_id", id));
        v.check(vern_kit::validate::text("reason", reason, 1000));
        v.finish()?;
        let id = id.unwrap_or_default();
        vern_kit::audit::resource("hold", &id);
        if let Some(h) = self.store.replay::<Hold>(key.as_ref()).await? {
            return Ok(h);
        }
        let current = self.get_hold(tenant, &id).await?;
        if current.release_time.is_some() {
            return Err(RetentionError::HoldReleased);
        }
        if let Some(s) = &current.subject_id {
            vern_kit::audit::subject(s);
        }
        let released = Hold {
            release_time: Some(vern_kit::time::now()),
            released_by: released_by.to_owned(),
            release_reason: reason.trim().to_owned(),
            ..current
        };
        self.store.release_hold(&released, key.as_ref()).await
    }

    /// ListHolds.
    pub async fn list_holds(
        &self,
        tenant: &TenantId,
        before: Option<&str>,
        limit: u64,
        subject_id: &str,
        include_inactive: bool,
    ) -> Result<Page<Hold>, RetentionError> {
        let mut v = Violations::new();
        let subject_id = if subject_id.is_empty() {
            None
        } else {
            v.check(domain::uuid("subject_id", subject_id))
        };
        v.finish()?;
        let filter = HoldFilter {
            subject_id,
            include_inactive,
        };
        self.store
            .list_holds(
                tenant.as_str(),
                before,
                limit,
                &filter,
                vern_kit::time::now(),
            )
            .await
    }

    /// Evaluate: the retention decision for every record of a subject.
    pub async fn evaluate(
        &self,
        tenant: &TenantId,
        subject_id: &str,
        at: Option<DateTime<Utc>>,
    ) -> Result<Evaluation, RetentionError> {
        let mut v = Violations::new();
        let subject_id = v.check(domain::uuid("subject_id", subject_id));
        v.finish()?;
        let subject_id = subject_id.unwrap_or_default();
        vern_kit::audit::subject(&subject_id);
        let now = at.unwrap_or_else(vern_kit::time::now);
        self.evaluate_at(tenant.as_str(), subject_id, now).await
    }

    /// The decisions for every record of a (validated) subject at `now`.
    pub(crate) async fn evaluate_at(
        &self,
        t: &str,
        subject_id: String,
        now: DateTime<Utc>,
    ) -> Result<Evaluation, RetentionError> {
        let subject = self
            .upstream
            .subject(t, &subject_id)
            .await?
            .ok_or(RetentionError::SubjectNotFound)?;
        let policies = self.store.all_policies(t).await?;
        let holds = self.store.active_holds(t, Some(&subject_id), now).await?;
        let mut facts = SubjectFacts {
            relationship_end: subject.relationship_end,
            ..Default::default()
        };
        if policies
            .iter()
            .any(|p| p.spec.anchor == Anchor::ConsentWithdrawn)
        {
            for w in self
                .upstream
                .withdrawals(t, Some(&subject_id), None, None)
                .await?
            {
                facts.withdrawn.insert(w.purpose, w.time);
            }
        }
        let decisions: Vec<(domain::RecordInfo, Decision)> = subject
            .records
            .into_iter()
            .map(|r| {
                let d = domain::decide(&r, &policies, &holds, &facts, now);
                (r, d)
            })
            .collect();
        let only: Vec<Decision> = decisions.iter().map(|(_, d)| d.clone()).collect();
        let (any_kept, retain_until) = domain::overall(&only);
        Ok(Evaluation {
            subject_id,
            decisions,
            holds,
            any_kept,
            retain_until,
            evaluate_time: now,
        })
    }
}
