//! Use cases of the consents service: recording consent events, the Check hot path,
//! and keeping the subject projection current. No tonic types here.

use std::sync::Arc;

use chrono::{DateTime, Utc};
use vern_kit::context::TenantId;
use vern_kit::error::{FieldViolation, Violations};
use vern_kit::idempotency::Key;
use vern_kit::validate;

use crate::domain::{
    self, Channel, ConsentAction, ConsentEvent, Decision, GroundsDecision, LegalBasis,
    ObjectionEffect, PurposeRule, SubjectChange, SubjectStatus,
};
use crate::error::ConsentError;
use crate::purposes::{PurposeCache, Versioned};
use crate::remote::SubjectSource;
use crate::store::{ConsentStore, Page, StoredState};

/// Most subjects in one BatchCheck.
pub const MAX_BATCH: usize = 10_000;

/// Input of RecordConsent after decoding.
#[derive(Debug, Clone)]
pub struct NewEvent {
    /// Subject id.
    pub subject_id: String,
    /// Purpose key.
    pub purpose: String,
    /// GRANT, WITHDRAW or OBJECT (None: not given).
    pub action: Option<ConsentAction>,
    /// Channel (None: not given).
    pub channel: Option<Channel>,
    /// Notice version.
    pub notice_version: String,
    /// Evidence reference.
    pub evidence: String,
    /// Who collected it.
    pub actor: String,
    /// Causing rights request.
    pub rights_request_id: String,
    /// When the subject acted (None: now).
    pub occur_time: Option<DateTime<Utc>>,
    /// Expiry of a GRANT.
    pub expires_at: Option<DateTime<Utc>>,
}

/// Input of RecordCompellingGrounds after decoding.
#[derive(Debug, Clone, Copy)]
pub struct NewGrounds<'a> {
    /// Subject id.
    pub subject_id: &'a str,
    /// Purpose key.
    pub purpose: &'a str,
    /// The controller's grounds.
    pub reason: &'a str,
}

/// A subject id in canonical form (lower-case hyphenated UUID).
pub fn subject_id(field: &str, value: &str) -> Result<String, FieldViolation> {
    uuid::Uuid::parse_str(value)
        .map(|u| u.hyphenated().to_string())
        .map_err(|_| FieldViolation::new(field, "must be a subject id (UUID)"))
}

/// A purpose key.
pub fn purpose_key(field: &str, value: &str) -> Result<(), FieldViolation> {
    validate::slug(field, value, 2, 63)
}

/// The consents service's use cases.
#[derive(Clone)]
pub struct Consents {
    store: ConsentStore,
    purposes: Arc<PurposeCache>,
    subjects: Arc<dyn SubjectSource>,
}

impl std::fmt::Debug for Consents {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Consents").finish_non_exhaustive()
    }
}

impl Consents {
    /// Use cases over the store, the purpose cache and the subject source.
    pub fn new(
        store: ConsentStore,
        purposes: Arc<PurposeCache>,
        subjects: Arc<dyn SubjectSource>,
    ) -> Self {
        Self {
            store,
            purposes,
            subjects,
        }
    }

    /// The store.
    pub fn store(&self) -> &ConsentStore {
        &self.store
    }

    /// The purpose cache.
    pub fn purposes(&self) -> &PurposeCache {
        &self.purposes
    }

    /// The idempotency key of a call. The request carries evidence, so it is
    /// fingerprinted with the tenant's blind-index key: the stored hash is not an
    /// unkeyed hash of personal data. `None` when `request_id` is empty.
    pub fn request_key(
        &self,
        tenant: &TenantId,
        request_id: &str,
        method: &'static str,
        request: &[u8],
    ) -> Result<Option<Key>, ConsentError> {
        if request_id.is_empty() {
            return Ok(None);
        }
        let fingerprints = self.store.sealer().fingerprints(tenant.as_str(), request)?;
        Ok(Key::fingerprinted(
            Some(tenant.as_str()),
            request_id,
            method,
            &fingerprints,
        ))
    }

    /// RecordConsent: validates, checks purpose and subject, appends the event.
    pub async fn record(
        &self,
        tenant: &TenantId,
        recorded_by: &str,
        new: NewEvent,
        request_id: &str,
        key: Option<Key>,
    ) -> Result<ConsentEvent, ConsentError> {
        let now = vern_kit::time::now();
        let mut v = Violations::new();
        let subject = v.check(subject_id("subject_id", &new.subject_id));
        v.check(purpose_key("purpose", &new.purpose));
        if new.action.is_none() {
            v.add("action", "is required (GRANT, WITHDRAW or OBJECT)");
        }
        if new.channel.is_none() {
            v.add("channel", "is required");
        }
        v.check(validate::optional_text("evidence", &new.evidence, 4096));
        v.check(validate::optional_line("actor", &new.actor, 200));
        v.check(validate::optional_line(
            "rights_request_id",
            &new.rights_request_id,
            64,
        ));
        // Microseconds, as stored: a retry re-reads the event and answers the same.
        let micros = |t: DateTime<Utc>| DateTime::from_timestamp_micros(t.timestamp_micros());
        let occur_time = new.occur_time.map_or(now, |t| micros(t).unwrap_or(t));
        let expires_at = new.expires_at.map(|t| micros(t).unwrap_or(t));
        if let Some(action) = new.action {
            domain::validate_event(
                &mut v,
                action,
                &new.notice_version,
                occur_time,
                expires_at,
                now,
            );
        }
        v.finish()?;
        let (Some(subject_id), Some(action), Some(channel)) = (subject, new.action, new.channel)
        else {
            return Err(ConsentError::Api(vern_kit::ApiError::Internal(
                "validated input missing",
            )));
        };
        // The stored answer holds ids only: read the event again (evidence opened).
        if let Some(r) = self
            .store
            .replay::<crate::store::Recorded>(key.as_ref())
            .await?
        {
            return self
                .store
                .event(tenant.as_str(), &r.event_id)
                .await?
                .ok_or(ConsentError::Api(vern_kit::ApiError::Internal(
                    "recorded event missing",
                )));
        }
        if self
            .purposes
            .get(tenant.as_str(), &new.purpose)
            .await?
            .is_none()
        {
            return Err(ConsentError::PurposeNotFound);
        }
        match self.subject_status(tenant, &subject_id).await? {
            SubjectStatus::Unknown => return Err(ConsentError::SubjectNotFound),
            SubjectStatus::Erased => return Err(ConsentError::SubjectErased),
            SubjectStatus::Active | SubjectStatus::Restricted => {}
        }
        let event = ConsentEvent {
            tenant_id: tenant.as_str().to_owned(),
            event_id: uuid::Uuid::now_v7().to_string(),
            subject_id,
            purpose: new.purpose,
            action,
            channel,
            notice_version: new.notice_version.trim().to_owned(),
            evidence: new.evidence,
            actor: new.actor,
            recorded_by: recorded_by.to_owned(),
            request_id: request_id.to_owned(),
            rights_request_id: new.rights_request_id,
            occur_time,
            expires_at,
            create_time: now,
        };
        self.store.record_event(&event, key.as_ref()).await
    }

    /// The subject's state from the projection, asking the subjects service (and
    /// remembering the answer) when the projection has not heard of it yet.
    async fn subject_status(
        &self,
        tenant: &TenantId,
        subject_id: &str,
    ) -> Result<SubjectStatus, ConsentError> {
        if let Some((status, _)) = self
            .store
            .subject_state(tenant.as_str(), subject_id)
            .await?
        {
            return Ok(status);
        }
        match self
            .subjects
            .fetch_state(tenant.as_str(), subject_id)
            .await?
        {
            None => Ok(SubjectStatus::Unknown),
            Some(status) => {
                // Version 0: any notification from the subjects service supersedes it.
                self.store
                    .apply_subject_states(
                        tenant.as_str(),
                        &[SubjectChange::new(
                            subject_id,
                            status,
                            0,
                            vern_kit::time::now(),
                        )],
                    )
                    .await?;
                Ok(status)
            }
        }
    }

    /// Check: one cached purpose lookup and one indexed read.
    pub async fn check(
        &self,
        tenant: &TenantId,
        subject: &str,
        purpose: &str,
    ) -> Result<(Decision, Option<LegalBasis>), ConsentError> {
        let mut v = Violations::new();
        let subject = v.check(subject_id("subject_id", subject));
        v.check(purpose_key("purpose", purpose));
        v.finish()?;
        let subject = subject.unwrap_or_default();
        let rule = self.purposes.get(tenant.as_str(), purpose).await?;
        let Some(rule) = rule else {
            return Ok((decide(None, None, Utc::now()), None));
        };
        let rows = self
            .store
            .check_rows(tenant.as_str(), purpose, std::slice::from_ref(&subject))
            .await?;
        Ok((
            decide(Some(&rule), rows.get(&subject), Utc::now()),
            Some(rule.legal_basis),
        ))
    }

    /// BatchCheck: the same answer as Check for each subject, in request order, from
    /// one query.
    pub async fn batch_check(
        &self,
        tenant: &TenantId,
        purpose: &str,
        subjects: &[String],
    ) -> Result<(Vec<(String, Decision)>, Option<LegalBasis>), ConsentError> {
        let mut v = Violations::new();
        v.check(purpose_key("purpose", purpose));
        if subjects.len() > MAX_BATCH {
            v.add("subject_ids", format!("at most {MAX_BATCH} per call"));
        }
        let ids: Vec<String> = subjects
            .iter()
            .enumerate()
            .filter_map(|(i, s)| v.check(subject_id(&format!("subject_ids[{i}]"), s)))
            .collect();
        v.finish()?;
        let rule = self.purposes.get(tenant.as_str(), purpose).await?;
        let now = Utc::now();
        let Some(rule) = rule else {
            return Ok((
                ids.into_iter()
                    .map(|id| (id, decide(None, None, now)))
                    .collect(),
                None,
            ));
        };
        let mut unique = ids.clone();
        unique.sort();
        unique.dedup();
        let rows = if unique.is_empty() {
            Default::default()
        } else {
            self.store
                .check_rows(tenant.as_str(), purpose, &unique)
                .await?
        };
        let results = ids
            .into_iter()
            .map(|id| {
                let d = decide(Some(&rule), rows.get(&id), now);
                (id, d)
            })
            .collect();
        Ok((results, Some(rule.legal_basis)))
    }

    /// GetConsentState.
    pub async fn state(
        &self,
        tenant: &TenantId,
        subject: &str,
        purpose: &str,
    ) -> Result<Option<StoredState>, ConsentError> {
        let mut v = Violations::new();
        let subject = v.check(subject_id("subject_id", subject));
        v.check(purpose_key("purpose", purpose));
        v.finish()?;
        let mut state = self
            .store
            .consent_state(tenant.as_str(), &subject.unwrap_or_default(), purpose)
            .await?;
        if let Some(s) = state.as_mut() {
            self.attach_grounds(tenant, std::slice::from_mut(s)).await?;
        }
        Ok(state)
    }

    /// Fills in the decision of every state whose standing objection is overridden
    /// (one read per subject concerned).
    async fn attach_grounds(
        &self,
        tenant: &TenantId,
        states: &mut [StoredState],
    ) -> Result<(), ConsentError> {
        let mut by_subject: std::collections::HashMap<String, Vec<GroundsDecision>> =
            Default::default();
        for s in states.iter_mut() {
            let Some(g) = s
                .state
                .compelling_grounds
                .clone()
                .filter(|_| s.state.objection_overridden())
            else {
                continue;
            };
            if !by_subject.contains_key(&s.subject_id) {
                let decisions = self
                    .store
                    .grounds_decisions(tenant.as_str(), &s.subject_id)
                    .await?;
                by_subject.insert(s.subject_id.clone(), decisions);
            }
            s.grounds = by_subject
                .get(&s.subject_id)
                .and_then(|d| d.iter().find(|d| d.decision_id == g.decision_id))
                .cloned();
        }
        Ok(())
    }

    /// RecordCompellingGrounds: a privacy officer's decision that compelling legitimate
    /// grounds override the subject's standing objection (Art. 21(1)).
    pub async fn record_grounds(
        &self,
        tenant: &TenantId,
        decided_by: &str,
        grounds: NewGrounds<'_>,
        request_id: &str,
        key: Option<vern_kit::idempotency::Key>,
    ) -> Result<GroundsDecision, ConsentError> {
        let NewGrounds {
            subject_id: subject,
            purpose,
            reason,
        } = grounds;
        let mut v = Violations::new();
        let subject = v.check(subject_id("subject_id", subject));
        v.check(purpose_key("purpose", purpose));
        v.check(validate::text("reason", reason, 1000));
        v.finish()?;
        let subject = subject.unwrap_or_default();
        // The stored answer holds ids only: read the decision again (reason opened; `""`
        // once the subject is erased).
        if let Some(r) = self
            .store
            .replay::<crate::store::GroundsRecorded>(key.as_ref())
            .await?
        {
            return self
                .store
                .grounds_decision(tenant.as_str(), &r.decision_id)
                .await?
                .ok_or(ConsentError::Api(vern_kit::ApiError::Internal(
                    "recorded decision missing",
                )));
        }
        // No new statement about an erased subject's case (the store checks again in
        // its transaction, against an erasure racing the call).
        if let Some((SubjectStatus::Erased, _)) =
            self.store.subject_state(tenant.as_str(), &subject).await?
        {
            return Err(ConsentError::SubjectErased);
        }
        let Some(rule) = self.purposes.get(tenant.as_str(), purpose).await? else {
            return Err(ConsentError::PurposeNotFound);
        };
        match domain::objection_effect(&rule) {
            ObjectionEffect::StopsUnlessCompellingGrounds => {}
            ObjectionEffect::StopsAbsolutely => {
                return Err(ConsentError::Api(vern_kit::ApiError::precondition(
                    "OBJECTION_ABSOLUTE",
                    "purpose",
                    "an objection to direct marketing is absolute (GDPR Art. 21(3)): no grounds override it",
                )));
            }
            ObjectionEffect::NoRightToObject | ObjectionEffect::EndsConsent => {
                return Err(ConsentError::Api(vern_kit::ApiError::precondition(
                    "GROUNDS_NOT_APPLICABLE",
                    "purpose",
                    "compelling grounds apply only to purposes on public task or legitimate interests (GDPR Art. 21(1))",
                )));
            }
        }
        let objection = self
            .store
            .consent_state(tenant.as_str(), &subject, purpose)
            .await?
            .and_then(|s| s.state.standing_objection);
        let Some(objection) = objection else {
            return Err(ConsentError::Api(vern_kit::ApiError::precondition(
                "NO_STANDING_OBJECTION",
                "purpose",
                "the subject has no standing objection to this purpose",
            )));
        };
        let decision = GroundsDecision {
            tenant_id: tenant.as_str().to_owned(),
            decision_id: uuid::Uuid::now_v7().to_string(),
            subject_id: subject,
            purpose: purpose.to_owned(),
            objection_event_id: objection.event_id,
            reason: reason.trim().to_owned(),
            decided_by: decided_by.to_owned(),
            request_id: request_id.to_owned(),
            decide_time: vern_kit::time::now(),
        };
        self.store.record_grounds(&decision, key.as_ref()).await
    }

    /// ListConsentHistory.
    pub async fn history(
        &self,
        tenant: &TenantId,
        subject: &str,
        purpose: Option<&str>,
        after: Option<&str>,
        limit: u64,
    ) -> Result<Page<ConsentEvent>, ConsentError> {
        let mut v = Violations::new();
        let subject = v.check(subject_id("subject_id", subject));
        if let Some(p) = purpose {
            v.check(purpose_key("purpose", p));
        }
        v.finish()?;
        self.store
            .history(
                tenant.as_str(),
                &subject.unwrap_or_default(),
                purpose,
                after,
                limit,
            )
            .await
    }

    /// GetConsentStats: per purpose, consents given now and withdrawn.
    pub async fn stats(&self, tenant: &TenantId) -> Result<Vec<(String, i64, i64)>, ConsentError> {
        self.store
            .consent_stats(tenant.as_str(), vern_kit::time::now())
            .await
    }

    /// ListConsentStates.
    pub async fn list_states(
        &self,
        tenant: &TenantId,
        subject: Option<&str>,
        purpose: Option<&str>,
        update_before: Option<DateTime<Utc>>,
        after: Option<(String, String)>,
        limit: u64,
    ) -> Result<Page<StoredState>, ConsentError> {
        let mut v = Violations::new();
        let subject = subject.and_then(|s| v.check(subject_id("subject_id", s)));
        if let Some(p) = purpose {
            v.check(purpose_key("purpose", p));
        }
        v.finish()?;
        let mut page = self
            .store
            .list_states(
                tenant.as_str(),
                subject.as_deref(),
                purpose,
                update_before,
                after,
                limit,
            )
            .await?;
        self.attach_grounds(tenant, &mut page.items).await?;
        Ok(page)
    }

    /// ApplySubjectStates (from the subjects service's outbox).
    pub async fn apply_subject_states(
        &self,
        tenant: &TenantId,
        changes: Vec<SubjectChange>,
    ) -> Result<(u32, u32), ConsentError> {
        let mut v = Violations::new();
        let mut valid = Vec::with_capacity(changes.len());
        for (i, mut c) in changes.into_iter().enumerate() {
            let id = v.check(subject_id(
                &format!("changes[{i}].subject_id"),
                &c.subject_id,
            ));
            if c.status == SubjectStatus::Unknown {
                v.add(format!("changes[{i}].state"), "is required");
            }
            for (j, p) in c.restricted_purposes.iter().enumerate() {
                v.check(purpose_key(
                    &format!("changes[{i}].restricted_purposes[{j}]"),
                    p,
                ));
            }
            if let Some(id) = id {
                c.subject_id = id;
                valid.push(c);
            }
        }
        v.finish()?;
        self.store
            .apply_subject_states(tenant.as_str(), &valid)
            .await
    }

    /// ApplyPurposes (from the tenants service's outbox): stores the definitions newer
    /// than the known ones, for every replica; returns how many were applied.
    pub async fn apply_purposes(
        &self,
        tenant: &TenantId,
        purposes: Vec<(String, Versioned)>,
    ) -> Result<usize, ConsentError> {
        self.purposes.apply(tenant.as_str(), purposes).await
    }
}

/// The decision for one subject: purpose rule (None: unknown purpose) and what the
/// store holds (None: subject never notified).
fn decide(
    rule: Option<&PurposeRule>,
    row: Option<&crate::store::CheckRow>,
    now: DateTime<Utc>,
) -> Decision {
    match (rule, row) {
        (None, _) => domain::check(None, SubjectStatus::Unknown, None, None, None, now),
        (Some(rule), None) => {
            domain::check(Some(rule), SubjectStatus::Unknown, None, None, None, now)
        }
        (Some(rule), Some(row)) => row.consent.check(Some(rule), row.subject, now),
    }
}
