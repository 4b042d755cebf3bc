//! Use cases of the rights service: submission, verification, extension, rejection,
//! reading requests and reports, the event feed and its confirmations, and the
//! settings. Fulfilment is in [`crate::fulfil`]. No tonic types here.

use std::collections::HashMap;
use std::sync::Arc;

use chrono::{DateTime, Utc};
use vern_kit::ApiError;
use vern_kit::context::TenantId;
use vern_kit::error::{FieldViolation, Violations};
use vern_kit::idempotency::Key;
use vern_kit::validate;

use crate::domain::{
    self, Channel, EventType, ExtensionRefused, IDENTIFIER_FIELDS, Language, RejectionGround,
    RequestStatus, RequestType, Step, VerificationMethod,
};
use crate::error::RightsError;
use crate::model::{
    Confirmation, Event, ExternalRef, Identity, NO_AUTOMATED_DECISIONS, Outcome, Personal,
    RightsRequest, Settings,
};
use crate::remote::Upstream;
use crate::report::Report;
use crate::seal::{Kind, Sealer};
use crate::store::entities::{event, request, settings};
use crate::store::{
    ErasedSubject, EventFilter, EventRef, Page, RequestFilter, RestrictionChange, RightsStore,
};

/// Erasures an ApplySubjectErasures call may carry (the subjects relay sends 200).
pub const MAX_ERASURES: usize = 1000;

/// Input of SubmitRequest after decoding.
#[derive(Debug, Clone, Default)]
pub struct NewRequest {
    /// The right (None: not given).
    pub request_type: Option<RequestType>,
    /// A known subject, or empty.
    pub subject_id: String,
    /// The claimed identity, when no subject id.
    pub identity: Option<Identity>,
    /// Channel (None: not given).
    pub channel: Option<Channel>,
    /// Receipt (None: now).
    pub received_at: Option<DateTime<Utc>>,
    /// Description.
    pub description: String,
    /// Purposes concerned.
    pub purposes: Vec<String>,
    /// Corrections.
    pub rectifications: Vec<crate::model::Rectification>,
    /// The language tag asked for (empty: the tenant's default).
    pub language: String,
}

/// A subject id in canonical form.
pub fn subject_id(field: &str, value: &str) -> Result<String, FieldViolation> {
    uuid::Uuid::parse_str(value)
        .map(|u| u.hyphenated().to_string())
        .map_err(|_| FieldViolation::new(field, "must be a subject id (UUID)"))
}

/// A rights request id in canonical form.
pub fn request_id_of(field: &str, value: &str) -> Result<String, FieldViolation> {
    uuid::Uuid::parse_str(value)
        .map(|u| u.hyphenated().to_string())
        .map_err(|_| FieldViolation::new(field, "must be a rights request id (UUID)"))
}

/// A downstream system name: 1–63 characters of a-z, 0-9 and '-'.
pub fn system_name(field: &str, value: &str) -> Result<(), FieldViolation> {
    let ok = !value.is_empty()
        && value.len() <= 63
        && value
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-');
    if ok {
        Ok(())
    } else {
        Err(FieldViolation::new(
            field,
            "must be 1-63 characters of a-z, 0-9 and '-'",
        ))
    }
}

/// Longest page of the feed a watcher reads at once.
pub const WATCH_BATCH: u64 = 200;

/// The rights service's use cases.
#[derive(Clone)]
pub struct Rights {
    pub(crate) store: RightsStore,
    pub(crate) sealer: Sealer,
    pub(crate) upstream: Arc<Upstream>,
    /// The watched feeds of this process: told after every commit that appends.
    pub(crate) feed: Arc<crate::feed::FeedHub>,
}

impl std::fmt::Debug for Rights {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Rights").finish_non_exhaustive()
    }
}

fn corrupt(what: &'static str) -> RightsError {
    RightsError::Corrupt(what)
}

fn json<T: serde::Serialize>(v: &T) -> Result<String, RightsError> {
    serde_json::to_string(v).map_err(|_| corrupt("serialise"))
}

fn from_json<T: serde::de::DeserializeOwned>(
    s: &str,
    what: &'static str,
) -> Result<T, RightsError> {
    serde_json::from_str(s).map_err(|_| corrupt(what))
}

/// Moves the case texts an older version stored in plaintext columns (verification
/// note, extension and rejection reasons) into the request's personal data, where it
/// has none of its own.
fn fold_plaintext_texts(personal: &mut Personal, row: &request::Model) {
    for (sealed, plain) in [
        (&mut personal.verification_note, &row.verification_note),
        (&mut personal.extension_reason, &row.extension_reason),
        (&mut personal.rejection_reason, &row.rejection_reason),
    ] {
        if sealed.is_empty() && !plain.is_empty() {
            *sealed = plain.clone();
        }
    }
}

fn validate_identity(v: &mut Violations, id: &Identity) {
    if id.email.is_empty()
        && id.phone.is_empty()
        && id.national_id.is_empty()
        && id.name.trim().is_empty()
        && id.external_ref.is_none()
    {
        v.add(
            "identity",
            "needs at least one of email, phone, national_id, name, external_ref",
        );
    }
    if !id.email.is_empty() {
        v.check(validate::email("identity.email", &id.email));
    }
    v.check(validate::optional_line("identity.phone", &id.phone, 32));
    v.check(validate::optional_line(
        "identity.national_id",
        &id.national_id,
        32,
    ));
    v.check(validate::optional_line("identity.name", &id.name, 200));
    if let Some(r) = &id.external_ref {
        v.check(system_name("identity.external_ref.system", &r.system));
        v.check(validate::line("identity.external_ref.id", &r.id, 200));
    }
}

impl Rights {
    /// Use cases over the store, the sealer and the other services.
    pub fn new(store: RightsStore, sealer: Sealer, upstream: Arc<Upstream>) -> Self {
        Self {
            store,
            sealer,
            upstream,
            feed: Arc::new(crate::feed::FeedHub::default()),
        }
    }

    /// The sealer of personal data.
    pub fn sealer(&self) -> &Sealer {
        &self.sealer
    }

    /// The store.
    pub fn store(&self) -> &RightsStore {
        &self.store
    }

    /// The watched feeds of this process (WatchEvents reads through it).
    pub fn feed(&self) -> Arc<crate::feed::FeedHub> {
        self.feed.clone()
    }

    /// SubmitRequest.
    pub async fn submit(
        &self,
        tenant: &TenantId,
        new: NewRequest,
        request_id: &str,
        key: Option<Key>,
    ) -> Result<RightsRequest, RightsError> {
        let now = vern_kit::time::now();
        let mut v = Violations::new();
        if new.request_type.is_none() {
            v.add("type", "is required");
        }
        if new.channel.is_none() {
            v.add("channel", "is required");
        }
        let mut subject = String::new();
        match (&new.identity, new.subject_id.is_empty()) {
            (None, true) => v.add("requester", "is required: a subject_id or an identity"),
            (Some(id), true) => validate_identity(&mut v, id),
            (_, false) => {
                if let Some(s) = v.check(subject_id("subject_id", &new.subject_id)) {
                    subject = s;
                }
            }
        }
        let received = new.received_at.unwrap_or(now);
        if received > now + vern_kit::time::CLOCK_SKEW {
            v.add("received_at", "must not be in the future");
        }
        let language = v
            .check(domain::language("language", &new.language))
            .flatten();
        v.check(validate::optional_text(
            "description",
            &new.description,
            10_000,
        ));
        for (i, p) in new.purposes.iter().enumerate() {
            v.check(validate::slug(&format!("purposes[{i}]"), p, 2, 63));
        }
        let rectification = new.request_type == Some(RequestType::Rectification);
        if rectification && new.rectifications.is_empty() {
            v.add(
                "rectifications",
                "at least one correction is required for RECTIFICATION",
            );
        }
        if !rectification && !new.rectifications.is_empty() {
            v.add(
                "rectifications",
                "only RECTIFICATION requests carry corrections",
            );
        }
        for (i, r) in new.rectifications.iter().enumerate() {
            v.check(validate::line(
                &format!("rectifications[{i}].field"),
                &r.field,
                63,
            ));
            if !IDENTIFIER_FIELDS.contains(&r.field.as_str()) {
                if r.record_id.is_empty() {
                    v.add(
                        format!("rectifications[{i}].record_id"),
                        "is required to correct a record (field is not email, phone or national_id)",
                    );
                } else {
                    v.check(
                        request_id_of(&format!("rectifications[{i}].record_id"), &r.record_id)
                            .map_err(|_| {
                                FieldViolation::new(
                                    format!("rectifications[{i}].record_id"),
                                    "must be a record id (UUID)",
                                )
                            }),
                    );
                }
            }
            v.check(validate::optional_text(
                &format!("rectifications[{i}].value"),
                &r.value,
                4096,
            ));
        }
        v.finish()?;
        let (Some(request_type), Some(channel)) = (new.request_type, new.channel) else {
            return Err(ApiError::Internal("validated input missing").into());
        };
        let Some(due) = domain::due_at(received) else {
            return Err(ApiError::invalid("received_at", "is out of range").into());
        };
        if let Some(id) = self.store.replay::<String>(key.as_ref()).await? {
            return self.get(tenant, &id).await;
        }
        let t = tenant.as_str();
        if !subject.is_empty() && self.upstream.subject(t, &subject, false).await?.is_none() {
            return Err(RightsError::SubjectNotFound);
        }
        let settings = self.settings(tenant).await?;
        let id = uuid::Uuid::now_v7().to_string();
        let (dek, wrapped) = self.sealer.new_key(t, &id)?;
        let personal = Personal {
            identity: if subject.is_empty() {
                new.identity
            } else {
                None
            },
            description: new.description,
            rectifications: new.rectifications,
            ..Personal::default()
        };
        let sealed = self.sealer.seal(&dek, t, &id, Kind::Personal, &personal)?;
        let row = request::Model {
            tenant_id: t.to_owned(),
            rights_request_id: id.clone(),
            request_type: request_type.as_str().to_owned(),
            status: RequestStatus::Received.as_str().to_owned(),
            subject_id: subject.clone(),
            channel: channel.as_str().to_owned(),
            request_id: request_id.to_owned(),
            wrapped_key: wrapped,
            personal: sealed,
            purposes: json(&domain::normalise_systems(&new.purposes))?,
            received_at: received,
            due_at: due,
            original_due_at: due,
            extended: false,
            extension_months: 0,
            extension_reason: String::new(),
            subject_informed_at: None,
            verify_time: None,
            verified_by: String::new(),
            verification_method: String::new(),
            verification_note: String::new(),
            rejection_ground: String::new(),
            rejection_reason: String::new(),
            reject_time: None,
            complete_time: None,
            fulfilled: false,
            outcome: None,
            required_systems: json(&settings.required_systems)?,
            version: 1,
            create_time: now,
            update_time: now,
            personal_erased_at: None,
            language: Some(
                language
                    .unwrap_or(settings.default_language)
                    .as_str()
                    .to_owned(),
            ),
        };
        vern_kit::audit::subject(&subject);
        let id = self.store.insert_request(row, key.as_ref()).await?;
        tracing::info!(tenant = t, rights_request_id = %id, request_type = request_type.as_str(), "rights request received");
        self.get(tenant, &id).await
    }

    pub(crate) async fn row(
        &self,
        tenant: &TenantId,
        id: &str,
    ) -> Result<request::Model, RightsError> {
        let id = request_id_of("rights_request_id", id)
            .map_err(|v| ApiError::InvalidArgument(vec![v]))?;
        self.store
            .request(tenant.as_str(), &id)
            .await?
            .ok_or(RightsError::NotFound)
    }

    /// GetRequest.
    pub async fn get(&self, tenant: &TenantId, id: &str) -> Result<RightsRequest, RightsError> {
        let row = self.row(tenant, id).await?;
        vern_kit::audit::subject(&row.subject_id);
        self.hydrate(row).await
    }

    /// A stored row as a request: personal data opened, confirmations and pending
    /// systems from the feed.
    pub(crate) async fn hydrate(&self, row: request::Model) -> Result<RightsRequest, RightsError> {
        let t = row.tenant_id.as_str();
        let id = row.rights_request_id.as_str();
        // Empty once destroyed with the erased subject.
        let personal: Personal = if row.personal.is_empty() {
            Personal::default()
        } else {
            let dek = self.sealer.key(t, id, &row.wrapped_key)?;
            let mut personal: Personal =
                self.sealer
                    .open(&dek, t, id, Kind::Personal, &row.personal)?;
            // Case texts of an older version, until sealed at start.
            fold_plaintext_texts(&mut personal, &row);
            personal
        };
        let required: Vec<String> = from_json(&row.required_systems, "required_systems")?;
        let events = self.store.events_of_request(t, id).await?;
        let ids: Vec<String> = events.iter().map(|e| e.event_id.clone()).collect();
        let acks = self.store.acks_of(t, &ids).await?;
        let pairs: Vec<(String, String)> = acks
            .iter()
            .map(|a| (a.event_id.clone(), a.system.clone()))
            .collect();
        let pending = domain::pending_systems(&required, row.fulfilled, &ids, &pairs);
        fn parse_opt(s: &str) -> Option<&str> {
            (!s.is_empty()).then_some(s)
        }
        Ok(RightsRequest {
            request_type: RequestType::parse(&row.request_type).ok_or_else(|| corrupt("type"))?,
            status: RequestStatus::parse(&row.status).ok_or_else(|| corrupt("status"))?,
            channel: Channel::parse(&row.channel).ok_or_else(|| corrupt("channel"))?,
            verification_method: parse_opt(&row.verification_method)
                .map(|s| VerificationMethod::parse(s).ok_or_else(|| corrupt("method")))
                .transpose()?,
            rejection_ground: parse_opt(&row.rejection_ground)
                .map(|s| RejectionGround::parse(s).ok_or_else(|| corrupt("ground")))
                .transpose()?,
            purposes: from_json(&row.purposes, "purposes")?,
            outcome: row
                .outcome
                .as_deref()
                .map(|o| from_json::<Outcome>(o, "outcome"))
                .transpose()?,
            confirmations: acks
                .into_iter()
                .map(|a| Confirmation {
                    system: a.system,
                    event_id: a.event_id,
                    acked_by: a.acked_by,
                    ack_time: a.ack_time,
                })
                .collect(),
            pending_systems: pending,
            required_systems: required,
            personal,
            tenant_id: row.tenant_id,
            rights_request_id: row.rights_request_id,
            subject_id: row.subject_id,
            request_id: row.request_id,
            received_at: row.received_at,
            due_at: row.due_at,
            original_due_at: row.original_due_at,
            extended: row.extended,
            extension_months: row.extension_months,
            subject_informed_at: row.subject_informed_at,
            verify_time: row.verify_time,
            verified_by: row.verified_by,
            reject_time: row.reject_time,
            complete_time: row.complete_time,
            fulfilled: row.fulfilled,
            update_time: row.update_time,
            language: row.language.as_deref().and_then(Language::parse),
        })
    }

    /// GetRequestStats: the tenant's requests by status, each status with its nearest
    /// deadline, and how many open ones are overdue.
    pub async fn stats(
        &self,
        tenant: &TenantId,
    ) -> Result<(Vec<(RequestStatus, i64, Option<DateTime<Utc>>)>, i64), RightsError> {
        let (rows, overdue) = self
            .store
            .request_stats(Some(tenant.as_str()), vern_kit::time::now())
            .await?;
        let mut by_status = Vec::with_capacity(rows.len());
        for (status, n, nearest) in rows {
            let status = RequestStatus::parse(&status)
                .ok_or(RightsError::Corrupt("rights_requests.status"))?;
            by_status.push((status, n, nearest));
        }
        Ok((by_status, overdue))
    }

    /// ListRequests.
    pub async fn list(
        &self,
        tenant: &TenantId,
        filter: RequestFilter,
        after: Option<(DateTime<Utc>, String)>,
        limit: u64,
    ) -> Result<Page<RightsRequest>, RightsError> {
        let mut filter = filter;
        if let Some(s) = &filter.subject_id {
            filter.subject_id =
                Some(subject_id("subject_id", s).map_err(|v| ApiError::InvalidArgument(vec![v]))?);
        }
        let page = self
            .store
            .list_requests(tenant.as_str(), &filter, after, limit)
            .await?;
        let mut items = Vec::with_capacity(page.items.len());
        for row in page.items {
            items.push(self.hydrate(row).await?);
        }
        Ok(Page {
            items,
            more: page.more,
        })
    }

    /// VerifyIdentity: RECEIVED → VERIFIED, linking the subject.
    #[allow(clippy::too_many_arguments)]
    pub async fn verify(
        &self,
        tenant: &TenantId,
        sub: &str,
        id: &str,
        subject: &str,
        method: Option<VerificationMethod>,
        note: &str,
        key: Option<Key>,
    ) -> Result<RightsRequest, RightsError> {
        let mut v = Violations::new();
        if method.is_none() {
            v.add("method", "is required");
        }
        let subject = if subject.is_empty() {
            None
        } else {
            v.check(subject_id("subject_id", subject))
        };
        v.check(validate::optional_text("note", note, 1000));
        v.finish()?;
        if let Some(id) = self.store.replay::<String>(key.as_ref()).await? {
            return self.get(tenant, &id).await;
        }
        let row = self.row(tenant, id).await?;
        let status = RequestStatus::parse(&row.status).ok_or_else(|| corrupt("status"))?;
        domain::allowed(status, Step::Verify)
            .map_err(|why| RightsError::state("NOT_RECEIVED", why))?;
        let linked = match (row.subject_id.as_str(), subject) {
            ("", None) => String::new(),
            ("", Some(s)) => s,
            (have, None) => have.to_owned(),
            (have, Some(s)) if have == s => s,
            _ => {
                return Err(ApiError::invalid(
                    "subject_id",
                    "differs from the subject the request was submitted for",
                )
                .into());
            }
        };
        let t = tenant.as_str();
        if !linked.is_empty()
            && linked != row.subject_id
            && self.upstream.subject(t, &linked, false).await?.is_none()
        {
            return Err(RightsError::SubjectNotFound);
        }
        vern_kit::audit::subject(&linked);
        let now = vern_kit::time::now();
        let version = row.version;
        // The note is sealed with the request's personal data.
        let row = self.reseal(row, |p| p.verification_note = note.to_owned())?;
        let updated = request::Model {
            status: RequestStatus::Verified.as_str().to_owned(),
            subject_id: linked,
            verify_time: Some(now),
            verified_by: sub.to_owned(),
            verification_method: method.map(|m| m.as_str().to_owned()).unwrap_or_default(),
            version: version + 1,
            update_time: now.max(row.update_time),
            ..row
        };
        let id = self
            .store
            .update_request(updated, version, key.as_ref())
            .await?;
        self.get(tenant, &id).await
    }

    /// ExtendDeadline (Art. 12(3)).
    pub async fn extend(
        &self,
        tenant: &TenantId,
        id: &str,
        months: i32,
        reason: &str,
        informed: Option<DateTime<Utc>>,
        key: Option<Key>,
    ) -> Result<RightsRequest, RightsError> {
        let mut v = Violations::new();
        v.check(validate::optional_text("reason", reason, 2000));
        v.finish()?;
        if let Some(id) = self.store.replay::<String>(key.as_ref()).await? {
            return self.get(tenant, &id).await;
        }
        let row = self.row(tenant, id).await?;
        vern_kit::audit::subject(&row.subject_id);
        let status = RequestStatus::parse(&row.status).ok_or_else(|| corrupt("status"))?;
        let now = vern_kit::time::now();
        let due = domain::extend(
            status,
            row.extended,
            row.received_at,
            row.original_due_at,
            months,
            reason,
            informed,
            now,
        )
        .map_err(|e| match e {
            ExtensionRefused::Invalid { field, why } => {
                RightsError::Api(ApiError::invalid(field, why))
            }
            ExtensionRefused::Precondition { kind, why } => RightsError::state(kind, why),
        })?;
        let version = row.version;
        // The reason is sealed with the request's personal data.
        let row = self.reseal(row, |p| p.extension_reason = reason.trim().to_owned())?;
        let updated = request::Model {
            due_at: due,
            extended: true,
            extension_months: months,
            subject_informed_at: informed,
            version: version + 1,
            update_time: now.max(row.update_time),
            ..row
        };
        vern_kit::audit::changed_fields(&[
            "due_at".to_owned(),
            "extension_months".to_owned(),
            "extension_reason".to_owned(),
        ]);
        let id = self
            .store
            .update_request(updated, version, key.as_ref())
            .await?;
        self.get(tenant, &id).await
    }

    /// RejectRequest (Art. 12(5)).
    pub async fn reject(
        &self,
        tenant: &TenantId,
        id: &str,
        ground: Option<RejectionGround>,
        reason: &str,
        key: Option<Key>,
    ) -> Result<RightsRequest, RightsError> {
        let mut v = Violations::new();
        if ground.is_none() {
            v.add("ground", "is required");
        }
        v.check(validate::text("reason", reason, 2000));
        v.finish()?;
        if let Some(id) = self.store.replay::<String>(key.as_ref()).await? {
            return self.get(tenant, &id).await;
        }
        let row = self.row(tenant, id).await?;
        vern_kit::audit::subject(&row.subject_id);
        let status = RequestStatus::parse(&row.status).ok_or_else(|| corrupt("status"))?;
        domain::allowed(status, Step::Reject)
            .map_err(|why| RightsError::state("REQUEST_CLOSED", why))?;
        if row.fulfilled {
            return Err(RightsError::state(
                "ALREADY_FULFILLED",
                "the request was already carried out; it cannot be rejected",
            ));
        }
        let now = vern_kit::time::now();
        let version = row.version;
        // The reason is sealed with the request's personal data; the ground is a code.
        let row = self.reseal(row, |p| p.rejection_reason = reason.trim().to_owned())?;
        let updated = request::Model {
            status: RequestStatus::Rejected.as_str().to_owned(),
            rejection_ground: ground.map(|g| g.as_str().to_owned()).unwrap_or_default(),
            reject_time: Some(now),
            version: version + 1,
            update_time: now.max(row.update_time),
            ..row
        };
        let id = self
            .store
            .update_request(updated, version, key.as_ref())
            .await?;
        self.get(tenant, &id).await
    }

    /// GetReport: the stored report, opened, its text in `language` (None: the
    /// request's own language, or the report's for requests from before languages
    /// existed). A read of personal data.
    pub async fn report(
        &self,
        tenant: &TenantId,
        id: &str,
        language: Option<Language>,
    ) -> Result<Report, RightsError> {
        let row = self.row(tenant, id).await?;
        let wanted = language.or_else(|| row.language.as_deref().and_then(Language::parse));
        vern_kit::audit::subject(&row.subject_id);
        vern_kit::audit::resource("rights_report", &row.rights_request_id);
        let t = tenant.as_str();
        let Some(stored) = self.store.report(t, &row.rights_request_id).await? else {
            // Read again: an erasure may have shredded the report after the first read.
            let row = self.row(tenant, id).await?;
            return Err(match row.personal_erased_at {
                Some(at) => RightsError::state(
                    "REPORT_ERASED",
                    format!(
                        "report content was erased with the subject on {}",
                        at.format("%Y-%m-%d")
                    ),
                ),
                None => RightsError::ReportNotFound,
            });
        };
        let dek = self
            .sealer
            .key(t, &row.rights_request_id, &row.wrapped_key)?;
        let mut report: Report = self.sealer.open(
            &dek,
            t,
            &row.rights_request_id,
            Kind::Report,
            &stored.sealed,
        )?;
        if let Some(lang) = wanted
            && lang != report.lang()
        {
            report.localise(lang);
        }
        Ok(report)
    }

    /// `row` with its personal data opened, changed by `change` and sealed again under
    /// the request's key; case texts an older version kept in plaintext columns are
    /// moved in first and the columns blanked. A request whose personal content was
    /// destroyed with its erased subject stays without: nothing is sealed, and the
    /// plaintext columns are blanked all the same.
    pub(crate) fn reseal(
        &self,
        row: request::Model,
        change: impl FnOnce(&mut Personal),
    ) -> Result<request::Model, RightsError> {
        let personal = if row.personal.is_empty() || row.wrapped_key.is_empty() {
            row.personal.clone()
        } else {
            let t = row.tenant_id.as_str();
            let id = row.rights_request_id.as_str();
            let dek = self.sealer.key(t, id, &row.wrapped_key)?;
            let mut personal: Personal =
                self.sealer
                    .open(&dek, t, id, Kind::Personal, &row.personal)?;
            fold_plaintext_texts(&mut personal, &row);
            change(&mut personal);
            self.sealer.seal(&dek, t, id, Kind::Personal, &personal)?
        };
        Ok(request::Model {
            personal,
            verification_note: String::new(),
            extension_reason: String::new(),
            rejection_reason: String::new(),
            ..row
        })
    }

    /// Moves the case texts (verification note, extension and rejection reasons) that
    /// older versions stored in plaintext columns into each request's sealed personal
    /// data, and blanks the columns; the texts of a request whose personal content was
    /// destroyed with its erased subject are dropped. Run once at start; a no-op once
    /// done. Returns the requests changed.
    pub async fn seal_legacy_case_texts(&self) -> Result<u64, RightsError> {
        let mut changed = 0;
        loop {
            let rows = self.store.plaintext_case_texts(500).await?;
            if rows.is_empty() {
                return Ok(changed);
            }
            let mut progress = false;
            for r in &rows {
                let sealed = self.reseal(r.clone(), |_| {})?;
                if self.store.seal_case_texts(r, sealed.personal).await? {
                    changed += 1;
                    progress = true;
                }
            }
            if !progress {
                return Ok(changed);
            }
        }
    }

    /// Seals the feed references that versions before m0003 stored in plaintext, with
    /// each event's request key (dropped when that key was destroyed with its erased
    /// subject). Run once at start; a no-op once done. Returns the events changed.
    pub async fn seal_legacy_feed(&self) -> Result<u64, RightsError> {
        let mut changed = 0;
        loop {
            let rows = self.store.plaintext_feed_events(500).await?;
            if rows.is_empty() {
                return Ok(changed);
            }
            let mut progress = false;
            for e in &rows {
                let t = e.tenant_id.as_str();
                let sealed = match self.store.request(t, &e.rights_request_id).await? {
                    Some(r) if !r.wrapped_key.is_empty() => {
                        let key = self.sealer.key(t, &r.rights_request_id, &r.wrapped_key)?;
                        Some(self.sealer.seal_refs(
                            &key,
                            t,
                            &e.rights_request_id,
                            &e.event_id,
                            &e.external_refs,
                        ))
                    }
                    _ => None,
                };
                if self.store.seal_feed_refs(e, sealed).await? {
                    changed += 1;
                    progress = true;
                }
            }
            if !progress {
                return Ok(changed);
            }
        }
    }

    /// Events as the feed shows them, with their confirmations.
    pub async fn events(
        &self,
        tenant: &str,
        rows: Vec<event::Model>,
    ) -> Result<Vec<Event>, RightsError> {
        let ids: Vec<String> = rows.iter().map(|e| e.event_id.clone()).collect();
        let acks = self.store.acks_of(tenant, &ids).await?;
        // The data keys of the requests whose events carry sealed references; a key
        // destroyed with its erased subject leaves the references unreadable (none).
        let mut keys: HashMap<String, Option<vern_seal::crypto::DataKey>> = HashMap::new();
        for e in rows.iter().filter(|e| e.external_refs_ct.is_some()) {
            if keys.contains_key(&e.rights_request_id) {
                continue;
            }
            let key = match self.store.request(tenant, &e.rights_request_id).await? {
                Some(r) if !r.wrapped_key.is_empty() => Some(self.sealer.key(
                    tenant,
                    &r.rights_request_id,
                    &r.wrapped_key,
                )?),
                _ => None,
            };
            keys.insert(e.rights_request_id.clone(), key);
        }
        rows.into_iter()
            .map(|e| {
                let refs = match (&e.external_refs_ct, keys.get(&e.rights_request_id)) {
                    (Some(ct), Some(Some(key))) => from_json::<Vec<ExternalRef>>(
                        &self.sealer.open_refs(
                            key,
                            tenant,
                            &e.rights_request_id,
                            &e.event_id,
                            ct,
                        )?,
                        "refs",
                    )?,
                    (Some(_), _) => vec![],
                    // Plaintext of an older version, until sealed at start.
                    (None, _) => from_json::<Vec<ExternalRef>>(&e.external_refs, "refs")?,
                };
                Ok(Event {
                    event_type: EventType::parse(&e.event_type)
                        .ok_or_else(|| corrupt("event type"))?,
                    external_refs: refs,
                    purposes: from_json(&e.purposes, "purposes")?,
                    fields: from_json(&e.fields, "fields")?,
                    confirmations: acks
                        .iter()
                        .filter(|a| a.event_id == e.event_id)
                        .map(|a| Confirmation {
                            system: a.system.clone(),
                            event_id: a.event_id.clone(),
                            acked_by: a.acked_by.clone(),
                            ack_time: a.ack_time,
                        })
                        .collect(),
                    tenant_id: e.tenant_id,
                    event_id: e.event_id,
                    seq: e.seq,
                    subject_id: e.subject_id,
                    rights_request_id: e.rights_request_id,
                    retain_until_time: e.retain_until_time,
                    occur_time: e.occur_time,
                    erasure: if e.detail.is_empty() {
                        Default::default()
                    } else {
                        from_json(&e.detail, "detail")?
                    },
                })
            })
            .collect()
    }

    /// ListEvents / one batch of WatchEvents.
    pub async fn list_events(
        &self,
        tenant: &str,
        filter: &EventFilter,
        after_seq: i64,
        limit: u64,
    ) -> Result<Page<Event>, RightsError> {
        let page = self
            .store
            .list_events(tenant, filter, after_seq, limit)
            .await?;
        Ok(Page {
            items: self.events(tenant, page.items).await?,
            more: page.more,
        })
    }

    /// AckEvent: records the system's confirmation (idempotent) and completes the
    /// request when it was the last one it waited for.
    pub async fn ack(
        &self,
        tenant: &TenantId,
        sub: &str,
        by: EventRef<'_>,
        system: &str,
        key: Option<Key>,
    ) -> Result<Event, RightsError> {
        let mut v = Violations::new();
        v.check(system_name("system", system));
        if let EventRef::Id(id) = by {
            v.check(
                request_id_of("event_id", id)
                    .map_err(|_| FieldViolation::new("event_id", "must be an event id (UUID)")),
            );
        }
        v.finish()?;
        let t = tenant.as_str();
        let by_id;
        let by = match (self.store.replay::<String>(key.as_ref()).await?, by) {
            (Some(id), _) => {
                by_id = id;
                EventRef::Id(by_id.as_str())
            }
            (None, by) => by,
        };
        let ev = self
            .store
            .event(t, by)
            .await?
            .ok_or(RightsError::EventNotFound)?;
        vern_kit::audit::subject(&ev.subject_id);
        vern_kit::audit::resource("rights_event", &ev.event_id);
        let now = vern_kit::time::now();
        let id = self
            .store
            .ack(t, ev, system, sub, now, key.as_ref())
            .await?;
        let row = self
            .store
            .event(t, EventRef::Id(&id))
            .await?
            .ok_or(RightsError::EventNotFound)?;
        let mut events = self.events(t, vec![row]).await?;
        events.pop().ok_or(RightsError::EventNotFound)
    }

    /// GetRightsSettings (defaults when never saved).
    pub async fn settings(&self, tenant: &TenantId) -> Result<Settings, RightsError> {
        let t = tenant.as_str();
        Ok(match self.store.settings(t).await? {
            None => Settings::defaults(t),
            Some(row) => Settings {
                tenant_id: row.tenant_id,
                required_systems: from_json(&row.required_systems, "required_systems")?,
                automated_decision_making: row.automated_decision_making,
                update_time: Some(row.update_time),
                default_language: row
                    .default_language
                    .as_deref()
                    .and_then(Language::parse)
                    .unwrap_or(crate::domain::DEFAULT_LANGUAGE),
            },
        })
    }

    /// ApplySubjectErasures (from the subjects service's outbox): puts each
    /// restriction change on the feed, then destroys the personal content held about
    /// each erased subject. At most [`MAX_ERASURES`] notices a call.
    pub async fn apply_erasures(
        &self,
        tenant: &TenantId,
        restrictions: Vec<RestrictionChange>,
        erasures: Vec<ErasedSubject>,
        key: Option<Key>,
    ) -> Result<i32, RightsError> {
        if erasures.len() + restrictions.len() > MAX_ERASURES {
            return Err(
                ApiError::invalid("erasures", format!("at most {MAX_ERASURES} a call")).into(),
            );
        }
        if let Some(done) = self.store.replay::<i32>(key.as_ref()).await? {
            return Ok(done);
        }
        let applied = self
            .store
            .shred_erased(tenant.as_str(), restrictions, erasures, key.as_ref())
            .await?;
        // RESTRICTED and ERASED events were appended.
        self.feed.wake(tenant.as_str());
        // Page images of the destroyed content must not linger in the SQLite log.
        self.store.checkpoint().await;
        tracing::info!(
            tenant = tenant.as_str(),
            erasures = applied,
            "erased subjects' copies destroyed"
        );
        Ok(applied)
    }

    /// UpdateRightsSettings for the fields named in `mask`.
    pub async fn update_settings(
        &self,
        tenant: &TenantId,
        new: Settings,
        mask: &[String],
        key: Option<Key>,
    ) -> Result<Settings, RightsError> {
        let mut v = Violations::new();
        if mask.is_empty() {
            v.add(
                "update_mask",
                "is required (required_systems, automated_decision_making, default_language)",
            );
        }
        for p in mask {
            if !matches!(
                p.as_str(),
                "required_systems" | "automated_decision_making" | "default_language"
            ) {
                v.add("update_mask", format!("cannot update {p:?}"));
            }
        }
        for (i, s) in new.required_systems.iter().enumerate() {
            v.check(system_name(&format!("settings.required_systems[{i}]"), s));
        }
        if new.required_systems.len() > 32 {
            v.add("settings.required_systems", "at most 32 systems");
        }
        v.check(validate::optional_text(
            "settings.automated_decision_making",
            &new.automated_decision_making,
            4000,
        ));
        v.finish()?;
        if self.store.replay::<String>(key.as_ref()).await?.is_some() {
            return self.settings(tenant).await;
        }
        let mut current = self.settings(tenant).await?;
        for p in mask {
            match p.as_str() {
                "required_systems" => {
                    current.required_systems = domain::normalise_systems(&new.required_systems)
                }
                "default_language" => current.default_language = new.default_language,
                _ => {
                    current.automated_decision_making =
                        if new.automated_decision_making.trim().is_empty() {
                            NO_AUTOMATED_DECISIONS.to_owned()
                        } else {
                            new.automated_decision_making.trim().to_owned()
                        }
                }
            }
        }
        vern_kit::audit::changed_fields(mask);
        let row = settings::Model {
            tenant_id: tenant.as_str().to_owned(),
            required_systems: json(&current.required_systems)?,
            automated_decision_making: current.automated_decision_making,
            update_time: vern_kit::time::now(),
            default_language: Some(current.default_language.as_str().to_owned()),
        };
        self.store.put_settings(row, key.as_ref()).await?;
        self.settings(tenant).await
    }
}
