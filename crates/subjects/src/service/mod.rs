//! Use cases of the subjects service: validation through the domain, encryption and
//! blind indexing, tenant scoping and idempotency around the store. No tonic types.
//!
//! - this module: create, read (get, find, list) and rectify subjects;
//! - [`records`]: add, rectify and delete records;
//! - [`lifecycle`]: restrict, lift, erase, purge;
//! - [`import`]: ImportSubjects, many creates in one transaction.
//!
//! Idempotency answers are stored in plaintext (`idempotency_keys`), so they never
//! hold personal data: a create stores the new id and a retry reads the subject
//! again; erase and purge answers hold only ids, counts and legal references.

pub mod duplicates;
mod import;
mod lifecycle;
mod records;
mod reindex;

pub use reindex::ReindexPage;

pub use import::{ImportOutcome, ImportRow, MAX_IMPORT_ROWS};
pub use lifecycle::{MAX_RESTRICTED_PURPOSES, RestrictionCall};

use std::collections::HashMap;
use std::sync::Arc;

use chrono::{DateTime, Duration, TimeZone, Utc};
use vern_kit::context::TenantId;
use vern_kit::error::{ApiError, FieldViolation, Violations};
use vern_kit::idempotency::Key;
use vern_kit::outbox::Relay;

use crate::domain::crypto::{self, CryptoError, DataKey};
use crate::domain::identifiers::NationalIdKind;
use crate::domain::keyring::{Keyring, TenantKeys};
use crate::domain::{
    self, DataCategory, ExternalRef, IdentifierKind, Identifiers, NewSubject, REF_INDEX_KIND,
    Record, RecordData, SUBJECT_UPDATABLE, Subject, SubjectChanges, SubjectState, View, check_mask,
    identifier_aad, key_aad, record_aad, ref_aad, ref_index_value, restriction_aad,
};
use crate::error::SubjectError;
use crate::purposes::{PurposeDirectory, PurposeSource};
use crate::relay::state_change;
use crate::store::entities::{external_ref, lookup, record, subject};
use crate::store::{
    Batch, KeyStore, ListFilter, Page, RecordKey, SubjectStore, corrupt, from_json, json,
};

/// How a subject is looked up by FindSubject.
#[derive(Clone)]
pub enum Lookup {
    /// By an identifier, raw (normalised before lookup).
    Identifier(IdentifierKind, String),
    /// By a reference in another system.
    ExternalRef(ExternalRef),
}

impl std::fmt::Debug for Lookup {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Lookup::Identifier(kind, _) => write!(f, "Lookup::Identifier({kind:?}, ‹redacted›)"),
            Lookup::ExternalRef(r) => write!(f, "Lookup::ExternalRef({r:?})"),
        }
    }
}

/// The subjects service's use cases.
#[derive(Clone, Debug)]
pub struct Subjects {
    store: SubjectStore,
    keys: KeyStore,
    keyring: Arc<Keyring>,
    relay: Option<Relay>,
    purposes: Arc<PurposeDirectory>,
}

impl Subjects {
    /// Use cases over the main store, the key store, the configured keys and the
    /// tenants' purposes (which records may name).
    pub fn new(
        store: SubjectStore,
        keys: KeyStore,
        keyring: Keyring,
        purposes: Arc<dyn PurposeSource>,
    ) -> Self {
        Self {
            store,
            keys,
            keyring: Arc::new(keyring),
            relay: None,
            purposes: Arc::new(PurposeDirectory::new(purposes)),
        }
    }

    /// One page of a master key rotation over the key store.
    pub async fn rewrap_data_keys(
        &self,
        request: &vern_proto::common::v1::RewrapDataKeysRequest,
    ) -> Result<vern_proto::common::v1::RewrapDataKeysResponse, vern_kit::error::ApiError> {
        KeyStore::wrapped_keys()
            .rewrap(self.keys.connection(), &self.keyring, request)
            .await
    }

    /// GetSubjectStats: the tenant's subjects counted by state.
    pub async fn stats(
        &self,
        tenant: &TenantId,
    ) -> Result<HashMap<SubjectState, i64>, SubjectError> {
        let mut out = HashMap::new();
        for (state, n) in self.store.state_counts(tenant.as_str()).await? {
            let state = SubjectState::parse(&state).ok_or_else(|| corrupt("subjects.state"))?;
            out.insert(state, n);
        }
        Ok(out)
    }

    /// How many subject data keys each key version wraps.
    pub async fn count_data_keys(
        &self,
    ) -> Result<vern_proto::common::v1::CountDataKeysResponse, vern_kit::error::ApiError> {
        let mut counts = KeyStore::wrapped_keys()
            .count(self.keys.connection(), &self.keyring)
            .await?;
        counts.index_entries = self.index_entries().await?;
        Ok(counts)
    }

    /// Refuses records naming a purpose the tenant does not have, or a special
    /// category under a purpose that does not declare it
    /// ([`domain::check_record_purposes`]); one cached catalogue per call.
    /// `records` pairs each record with its field path (`records[0].`).
    pub(crate) async fn check_purposes(
        &self,
        tenant: &str,
        records: &[(String, &RecordData)],
    ) -> Result<(), SubjectError> {
        let violations = self.purpose_violations(tenant, records).await?;
        if violations.is_empty() {
            return Ok(());
        }
        Err(SubjectError::Api(ApiError::InvalidArgument(violations)))
    }

    /// The violations of [`Subjects::check_purposes`], for callers that report them
    /// per row.
    pub(crate) async fn purpose_violations(
        &self,
        tenant: &str,
        records: &[(String, &RecordData)],
    ) -> Result<Vec<FieldViolation>, SubjectError> {
        if records.is_empty() {
            return Ok(vec![]);
        }
        let keys = records
            .iter()
            .flat_map(|(_, r)| r.purposes.iter().map(String::as_str));
        let catalogue = self.purposes.catalogue(tenant, keys).await?;
        let mut v = Violations::new();
        for (prefix, r) in records {
            crate::domain::check_record_purposes(prefix, r, &catalogue, &mut v);
        }
        Ok(v.into_violations())
    }

    /// Wakes `relay` after every committed state change.
    pub fn with_relay(mut self, relay: Relay) -> Self {
        self.relay = Some(relay);
        self
    }

    /// The main store.
    pub fn store(&self) -> &SubjectStore {
        &self.store
    }

    /// The key store.
    pub fn key_store(&self) -> &KeyStore {
        &self.keys
    }

    /// The idempotency key of a call. The request (which may carry identifiers) is
    /// fingerprinted with the tenant's blind-index key, so the stored hash is not an
    /// unkeyed hash of personal data. `None` when `request_id` is empty.
    pub fn request_key(
        &self,
        tenant: &TenantId,
        request_id: &str,
        method: &'static str,
        request: &[u8],
    ) -> Result<Option<Key>, SubjectError> {
        vern_kit::validate::request_id(request_id).map_err(invalid)?;
        if request_id.is_empty() {
            return Ok(None);
        }
        let keys = self.tenant_keys(tenant.as_str())?;
        Ok(Key::fingerprinted(
            Some(tenant.as_str()),
            request_id,
            method,
            &keys.fingerprints(request),
        ))
    }

    /// CreateSubject: validates everything, writes the subject's wrapped data key to
    /// the key store, then the subject, its blind-index entries, references, records
    /// and the ACTIVE notification in one transaction.
    pub async fn create(
        &self,
        tenant: &TenantId,
        new: NewSubject,
        idem: Option<Key>,
    ) -> Result<Subject, SubjectError> {
        let now = vern_kit::time::now();
        let valid = new.validate(now)?;
        if let Some(id) = self.store.replay::<String>(idem.as_ref()).await? {
            return self.get(tenant, &id, View::Full).await;
        }
        let t = tenant.as_str();
        let records: Vec<(String, &RecordData)> = valid
            .records
            .iter()
            .enumerate()
            .map(|(i, r)| (format!("records[{i}]."), r))
            .collect();
        self.check_purposes(t, &records).await?;
        let keys = self.tenant_keys(t)?;
        // Refuse before a key is written when an identifier or reference is taken (the
        // unique constraints still decide races).
        let mut digests = vec![];
        for kind in IdentifierKind::ALL {
            if let Some(value) = valid.identifiers.get(kind) {
                let all = identifier_digests(&keys, kind, value);
                if self.store.find_by_digest(t, kind, &all).await?.is_some() {
                    return Err(SubjectError::IdentifierTaken(kind));
                }
                digests.push((kind, all[0]));
            }
        }
        for r in &valid.external_refs {
            if self
                .store
                .find_by_ref(t, &r.system, &ref_digests(&keys, r), &r.id)
                .await?
                .is_some()
            {
                return Err(SubjectError::ExternalRefTaken);
            }
        }
        let subject_id = uuid::Uuid::now_v7().to_string();
        vern_kit::audit::subject(&subject_id);
        let dek = DataKey::generate();
        let wrapped = keys.kek.wrap(&dek, &key_aad(t, &subject_id));
        self.keys.put(t, &subject_id, wrapped).await?;

        let row = new_subject_row(t, &subject_id, &valid, &dek, now);
        let batch = Batch {
            insert_subjects: vec![row],
            insert_lookups: digests
                .into_iter()
                .map(|(kind, digest)| lookup_row(t, &subject_id, kind, digest, &keys))
                .collect(),
            insert_refs: valid
                .external_refs
                .iter()
                .map(|r| ref_row(t, &subject_id, r, &keys, &dek))
                .collect(),
            insert_records: valid
                .records
                .into_iter()
                .map(|d| record_row(t, &subject_id, &dek, d, now))
                .collect::<Result<_, _>>()?,
            outbox: vec![state_change(&subject_id, SubjectState::Active, 1, now, &[])],
            ..Default::default()
        };
        let id = self
            .store
            .apply(t, batch, idem.as_ref(), subject_id)
            .await?;
        tracing::info!(tenant = t, subject_id = %id, "subject created");
        self.nudge();
        self.get(tenant, &id, View::Full).await
    }

    /// GetSubject. An erased subject is its tombstone; a malformed id is
    /// INVALID_ARGUMENT, another tenant's id NOT_FOUND.
    pub async fn get(
        &self,
        tenant: &TenantId,
        subject_id: &str,
        view: View,
    ) -> Result<Subject, SubjectError> {
        let id = domain::subject_id("subject_id", subject_id).map_err(invalid)?;
        let row = self.subject_row(tenant.as_str(), &id).await?;
        self.read(tenant.as_str(), row, view, None).await
    }

    /// GetSubject a page of records at a time (see [`RecordsPage`]): the subject with
    /// the page's records, and the token of the next page when more follow.
    pub async fn get_page(
        &self,
        tenant: &TenantId,
        subject_id: &str,
        view: View,
        page: RecordsPage,
    ) -> Result<(Subject, Option<String>), SubjectError> {
        let id = domain::subject_id("subject_id", subject_id).map_err(invalid)?;
        let t = tenant.as_str();
        let row = self.subject_row(t, &id).await?;
        // An erased subject has no records: `read` leaves the page without a next one.
        let mut page = page;
        let s = self.read(t, row, view, Some(&mut page)).await?;
        Ok((s, page.next))
    }

    /// FindSubject: through the blind index (after normalising) or an external
    /// reference. NOT_FOUND when no subject holds it (erased subjects hold none).
    pub async fn find(
        &self,
        tenant: &TenantId,
        by: Lookup,
        view: View,
    ) -> Result<Subject, SubjectError> {
        let t = tenant.as_str();
        let found = match by {
            Lookup::Identifier(kind, raw) => {
                let (value, _) = domain::subject::normalise("", kind, &raw)
                    .map_err(invalid)?
                    .ok_or_else(|| invalid(FieldViolation::new(kind.as_str(), "is required")))?;
                let keys = self.tenant_keys(t)?;
                let digests = identifier_digests(&keys, kind, &value);
                self.store.find_by_digest(t, kind, &digests).await?
            }
            Lookup::ExternalRef(r) => {
                let mut v = Violations::new();
                let r = r.validate("external_ref", &mut v);
                v.finish()?;
                match r {
                    Some(r) => {
                        let digests = ref_digests(&self.tenant_keys(t)?, &r);
                        self.store
                            .find_by_ref(t, &r.system, &digests, &r.id)
                            .await?
                    }
                    None => None,
                }
            }
        };
        let id = found.ok_or(SubjectError::SubjectNotFound)?;
        let row = self.subject_row(t, &id).await?;
        self.read(t, row, view, None).await
    }

    /// ListSubjects: a page ordered by (`create_time`, `subject_id`) after the cursor
    /// of the previous page ([`cursor`]).
    pub async fn list(
        &self,
        tenant: &TenantId,
        after: Option<&str>,
        limit: u64,
        filter: ListFilter,
        view: View,
    ) -> Result<Page<Subject>, SubjectError> {
        let t = tenant.as_str();
        let after = after.map(parse_cursor).transpose()?;
        let mut v = Violations::new();
        if let Some(s) = &filter.external_system {
            v.check(vern_kit::validate::slug("external_system", s, 1, 63));
        }
        v.finish()?;
        let page = self.store.list(t, after, limit, &filter).await?;
        let ids: Vec<String> = page.items.iter().map(|s| s.subject_id.clone()).collect();
        let mut refs = group(self.store.refs_of(t, &ids).await?, |r| r.subject_id.clone());
        let mut records = group(self.store.records_of(t, &ids).await?, |r| {
            r.subject_id.clone().unwrap_or_default()
        });
        // FULL opens everything; BASIC still opens the external references and the
        // restriction reason.
        let needs_key = |s: &subject::Model| {
            view == View::Full
                || s.restriction_reason_ct.is_some()
                || refs
                    .get(&s.subject_id)
                    .is_some_and(|r| r.iter().any(|r| r.ref_ct.is_some()))
        };
        let live: Vec<String> = page
            .items
            .iter()
            .filter(|s| s.state != SubjectState::Erased.as_str())
            .filter(|s| needs_key(s))
            .map(|s| s.subject_id.clone())
            .collect();
        let deks = match live.is_empty() {
            true => HashMap::new(),
            false => {
                let keys = self.tenant_keys(t)?;
                let wrapped = self.keys.get_many(t, &live).await?;
                let mut deks = HashMap::new();
                for id in live {
                    let w = wrapped.get(&id).ok_or(SubjectError::DataKeyMissing)?;
                    let dek = keys.kek.unwrap(w, &key_aad(t, &id))?;
                    deks.insert(id, dek);
                }
                deks
            }
        };
        let items = page
            .items
            .into_iter()
            .map(|row| {
                let id = row.subject_id.clone();
                subject_view(
                    t,
                    row,
                    refs.remove(&id).unwrap_or_default(),
                    records.remove(&id).unwrap_or_default(),
                    deks.get(&id),
                    view,
                )
            })
            .collect::<Result<Vec<_>, _>>()?;
        Ok(Page {
            items,
            more: page.more,
        })
    }

    /// UpdateSubject (rectification, Art. 16): replaces the masked identifiers
    /// (re-encrypted, blind index updated), the external references or the
    /// relationship end. An empty identifier clears it; the subject must keep at
    /// least one identifier or reference.
    pub async fn update(
        &self,
        tenant: &TenantId,
        subject_id: &str,
        mask: &[String],
        changes: SubjectChanges,
        idem: Option<Key>,
    ) -> Result<Subject, SubjectError> {
        let id = domain::subject_id("subject.subject_id", subject_id).map_err(invalid)?;
        let mut v = Violations::new();
        check_mask(&mut v, mask, SUBJECT_UPDATABLE);
        let wants = |f: &str| mask.iter().any(|m| m == f);
        let mut new_ids = vec![];
        for kind in IdentifierKind::ALL {
            if !wants(kind.as_str()) {
                continue;
            }
            let raw = match kind {
                IdentifierKind::Email => &changes.email,
                IdentifierKind::Phone => &changes.phone,
                IdentifierKind::NationalId => &changes.national_id,
            };
            if let Some(n) = v.check(domain::subject::normalise("subject.", kind, raw)) {
                new_ids.push((kind, n));
            }
        }
        let refs = wants("external_refs")
            .then(|| domain::validate_refs("subject.external_refs", changes.external_refs, &mut v));
        v.finish()?;
        if let Some(id) = self.store.replay::<String>(idem.as_ref()).await? {
            return self.get(tenant, &id, View::Full).await;
        }
        let t = tenant.as_str();
        let row = self.subject_row(t, &id).await?;
        writable(&row)?;
        let keys = self.tenant_keys(t)?;
        let dek = self.data_key(t, &keys, &id).await?;
        let mut new_row = row.clone();
        let mut batch = Batch::default();
        for (kind, value) in new_ids {
            batch.delete_lookups.push((id.clone(), Some(kind)));
            let ct = match value {
                Some((value, national_kind)) => {
                    let digests = identifier_digests(&keys, kind, &value);
                    if let Some(holder) = self.store.find_by_digest(t, kind, &digests).await?
                        && holder != id
                    {
                        return Err(SubjectError::IdentifierTaken(kind));
                    }
                    batch
                        .insert_lookups
                        .push(lookup_row(t, &id, kind, digests[0], &keys));
                    if kind == IdentifierKind::NationalId {
                        new_row.national_id_kind = national_kind.map(|k| k.as_str().to_owned());
                    }
                    Some(seal_identifier(&dek, t, &id, kind, &value))
                }
                None => {
                    if kind == IdentifierKind::NationalId {
                        new_row.national_id_kind = None;
                    }
                    None
                }
            };
            set_ciphertext(&mut new_row, kind, ct);
        }
        let has_refs = match &refs {
            Some(refs) => {
                for r in refs {
                    if let Some(holder) = self
                        .store
                        .find_by_ref(t, &r.system, &ref_digests(&keys, r), &r.id)
                        .await?
                        && holder != id
                    {
                        return Err(SubjectError::ExternalRefTaken);
                    }
                }
                batch.delete_refs_of.push(id.clone());
                batch.insert_refs = refs
                    .iter()
                    .map(|r| ref_row(t, &id, r, &keys, &dek))
                    .collect();
                !refs.is_empty()
            }
            None => !self
                .store
                .refs_of(t, std::slice::from_ref(&id))
                .await?
                .is_empty(),
        };
        let has_ids = IdentifierKind::ALL
            .iter()
            .any(|k| ciphertext(&new_row, *k).is_some());
        if !has_ids && !has_refs {
            return Err(ApiError::invalid(
                "update_mask",
                "the subject would keep no identifier and no external reference",
            )
            .into());
        }
        if wants("relationship_end_time") {
            new_row.relationship_end_time = changes.relationship_end_time;
        }
        new_row.update_time = later(row.update_time);
        batch.update_subjects.push((new_row, row.update_time));
        let id = self.store.apply(t, batch, idem.as_ref(), id).await?;
        tracing::info!(tenant = t, subject_id = %id, fields = ?mask, "subject rectified");
        self.get(tenant, &id, View::Full).await
    }

    /// Seals the external references that versions before m0002 stored in plaintext:
    /// each row is replaced by its blind index and the id sealed with the subject's
    /// data key. Run once at start; a no-op once done. Returns the rows sealed.
    pub async fn seal_legacy_refs(&self) -> Result<u64, SubjectError> {
        let mut sealed = 0;
        loop {
            let rows = self.store.plaintext_refs(500).await?;
            let mut progress = false;
            for old in &rows {
                let t = old.tenant_id.as_str();
                let keys = self.tenant_keys(t)?;
                let dek = match self.data_key(t, &keys, &old.subject_id).await {
                    Ok(dek) => dek,
                    // No key: nothing of the subject can be opened; leave the row to
                    // its erasure (which deletes references) and go on.
                    Err(SubjectError::DataKeyMissing) => continue,
                    Err(e) => return Err(e),
                };
                let r = ExternalRef {
                    system: old.system.clone(),
                    id: old.ref_id.clone(),
                };
                let new = ref_row(t, &old.subject_id, &r, &keys, &dek);
                if self.store.seal_ref(old, new).await? {
                    sealed += 1;
                }
                progress = true;
            }
            if !progress {
                return Ok(sealed);
            }
        }
    }

    /// Seals the restriction reasons that versions before m0005 stored in plaintext
    /// with each subject's data key. Run once at start; a no-op once done. Returns the
    /// rows sealed.
    pub async fn seal_legacy_restriction_reasons(&self) -> Result<u64, SubjectError> {
        let mut sealed = 0;
        let mut after: Option<(String, String)> = None;
        loop {
            let rows = self
                .store
                .plaintext_restriction_reasons(lifecycle::ERASURE_RESTRICTION, after.as_ref(), 500)
                .await?;
            let Some(last) = rows.last() else {
                return Ok(sealed);
            };
            after = Some((last.tenant_id.clone(), last.subject_id.clone()));
            for old in rows {
                let t = old.tenant_id.clone();
                let keys = self.tenant_keys(&t)?;
                let dek = match self.data_key(&t, &keys, &old.subject_id).await {
                    Ok(dek) => dek,
                    // No key: the reason can no longer be tied to anyone readable; its
                    // erasure clears it.
                    Err(SubjectError::DataKeyMissing) => continue,
                    Err(e) => return Err(e),
                };
                let ct = crypto::seal(
                    &dek,
                    old.restriction_reason.as_bytes(),
                    &restriction_aad(&t, &old.subject_id),
                );
                if self.store.seal_restriction_reason(&old, ct).await? {
                    sealed += 1;
                }
            }
        }
    }

    // ---- helpers shared by the use cases ----

    fn tenant_keys(&self, tenant: &str) -> Result<TenantKeys, SubjectError> {
        self.keyring.tenant(tenant).ok_or(SubjectError::NoTenantKey)
    }

    /// The subject's data key, unwrapped.
    async fn data_key(
        &self,
        tenant: &str,
        keys: &TenantKeys,
        subject_id: &str,
    ) -> Result<DataKey, SubjectError> {
        let wrapped = self
            .keys
            .get(tenant, subject_id)
            .await?
            .ok_or(SubjectError::DataKeyMissing)?;
        Ok(keys.kek.unwrap(&wrapped, &key_aad(tenant, subject_id))?)
    }

    async fn subject_row(&self, tenant: &str, id: &str) -> Result<subject::Model, SubjectError> {
        self.store
            .subject(tenant, id)
            .await?
            .ok_or(SubjectError::SubjectNotFound)
    }

    /// A subject row with its references and records, decrypted for the FULL view.
    async fn read(
        &self,
        tenant: &str,
        row: subject::Model,
        view: View,
        page: Option<&mut RecordsPage>,
    ) -> Result<Subject, SubjectError> {
        if row.state == SubjectState::Erased.as_str() {
            return subject_view(tenant, row, vec![], vec![], None, view);
        }
        let ids = [row.subject_id.clone()];
        let refs = self.store.refs_of(tenant, &ids).await?;
        let records = match page {
            None => self.store.records_of(tenant, &ids).await?,
            Some(page) => {
                // The page's rows only: the keys are small, the contents are read once.
                let keys = self.store.record_keys_of(tenant, &row.subject_id).await?;
                let wanted = page.take(keys);
                let mut rows = self.store.records(tenant, &wanted).await?;
                let order: HashMap<&str, usize> = wanted
                    .iter()
                    .enumerate()
                    .map(|(i, id)| (id.as_str(), i))
                    .collect();
                rows.retain(|r| r.subject_id.as_deref() == Some(row.subject_id.as_str()));
                rows.sort_by_key(|r| order.get(r.record_id.as_str()).copied());
                rows
            }
        };
        // FULL opens everything; BASIC still opens the external references and the
        // restriction reason.
        let dek = if view == View::Full
            || refs.iter().any(|r| r.ref_ct.is_some())
            || row.restriction_reason_ct.is_some()
        {
            let keys = self.tenant_keys(tenant)?;
            Some(self.data_key(tenant, &keys, &row.subject_id).await?)
        } else {
            None
        };
        subject_view(tenant, row, refs, records, dek.as_ref(), view)
    }

    fn nudge(&self) {
        if let Some(r) = &self.relay {
            r.nudge();
        }
    }
}

/// Records a page holds when the caller names no size.
pub const RECORDS_PAGE_DEFAULT: usize = 1000;
/// Records a page holds at most.
pub const RECORDS_PAGE_MAX: usize = 10_000;

/// One page of a subject's records (GetSubject with `records_page_size`), oldest first
/// by (collected_at, record_id): at most `size` records whose values and names take at
/// most `budget` bytes (at least one record).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RecordsPage {
    size: usize,
    budget: usize,
    after: Option<(DateTime<Utc>, String)>,
    /// After [`RecordsPage::take`]: the token of the next page, if more follow.
    pub next: Option<String>,
}

impl RecordsPage {
    /// A page of `size` records (0: the default) after `token` (empty: the first).
    pub fn new(size: i32, token: &str, budget: usize) -> Result<Self, SubjectError> {
        let size = match size {
            n if n < 0 => {
                return Err(invalid(FieldViolation::new(
                    "records_page_size",
                    "must not be negative",
                )));
            }
            0 => RECORDS_PAGE_DEFAULT,
            n => (n as usize).min(RECORDS_PAGE_MAX),
        };
        let after = if token.is_empty() {
            None
        } else {
            let bad = || {
                invalid(FieldViolation::new(
                    "records_page_token",
                    "is not a token GetSubject issued",
                ))
            };
            let (micros, id) = token.split_once('/').ok_or_else(bad)?;
            let at = micros
                .parse::<i64>()
                .ok()
                .and_then(DateTime::from_timestamp_micros)
                .ok_or_else(bad)?;
            let id = domain::record_id("records_page_token", id).map_err(|_| bad())?;
            Some((at, id))
        };
        Ok(Self {
            size,
            budget,
            after,
            next: None,
        })
    }

    /// The ids of this page's records among `keys` (in the order of
    /// [`SubjectStore::record_keys_of`]), noting the next page's token.
    pub(crate) fn take(&mut self, keys: Vec<RecordKey>) -> Vec<String> {
        let mut out: Vec<RecordKey> = Vec::new();
        let mut bytes = 0;
        let mut more = false;
        let after = self.after.as_ref();
        for k in keys
            .into_iter()
            .filter(|k| after.is_none_or(|(at, id)| (k.collected_at, &k.record_id) > (*at, id)))
        {
            // Sealed value (its plaintext is a little shorter), names and metadata.
            let size = k.bytes + 128;
            if !out.is_empty() && (out.len() == self.size || bytes + size > self.budget) {
                more = true;
                break;
            }
            bytes += size;
            out.push(k);
        }
        // The next page starts after this page's last record.
        self.next = out
            .last()
            .filter(|_| more)
            .map(|k| format!("{}/{}", k.collected_at.timestamp_micros(), k.record_id));
        out.into_iter().map(|k| k.record_id).collect()
    }
}

/// The page cursor of a subject: its `create_time` (µs) and id.
pub fn cursor(s: &Subject) -> String {
    format!("{}/{}", s.create_time.timestamp_micros(), s.subject_id)
}

fn parse_cursor(c: &str) -> Result<(DateTime<Utc>, String), SubjectError> {
    let bad = || {
        invalid(FieldViolation::new(
            "page_token",
            "is not a token this list issued",
        ))
    };
    let (micros, id) = c.split_once('/').ok_or_else(bad)?;
    let t = micros
        .parse::<i64>()
        .ok()
        .and_then(DateTime::from_timestamp_micros)
        .ok_or_else(bad)?;
    let id = domain::subject_id("page_token", id).map_err(|_| bad())?;
    Ok((t, id))
}

pub(crate) fn invalid(v: FieldViolation) -> SubjectError {
    ApiError::InvalidArgument(vec![v]).into()
}

/// A time after `previous` (the optimistic-concurrency token must change).
pub(crate) fn later(previous: DateTime<Utc>) -> DateTime<Utc> {
    vern_kit::time::now().max(previous + Duration::microseconds(1))
}

/// The first instant of `t`'s month.
pub fn month_start(t: DateTime<Utc>) -> DateTime<Utc> {
    use chrono::Datelike;
    Utc.with_ymd_and_hms(t.year(), t.month(), 1, 0, 0, 0)
        .single()
        .unwrap_or(t)
}

/// Identifiers and records may change: not erased, no erasure pending.
pub(crate) fn writable(row: &subject::Model) -> Result<(), SubjectError> {
    if row.state == SubjectState::Erased.as_str() {
        return Err(SubjectError::Erased);
    }
    if row.erase_request_time.is_some() {
        return Err(SubjectError::ErasurePending);
    }
    Ok(())
}

fn group<T>(rows: Vec<T>, key: impl Fn(&T) -> String) -> HashMap<String, Vec<T>> {
    let mut out: HashMap<String, Vec<T>> = HashMap::new();
    for r in rows {
        out.entry(key(&r)).or_default().push(r);
    }
    out
}

fn seal_identifier(
    dek: &DataKey,
    tenant: &str,
    subject: &str,
    kind: IdentifierKind,
    value: &str,
) -> Vec<u8> {
    crypto::seal(
        dek,
        value.as_bytes(),
        &identifier_aad(tenant, subject, kind),
    )
}

pub(crate) fn ciphertext(row: &subject::Model, kind: IdentifierKind) -> Option<&Vec<u8>> {
    match kind {
        IdentifierKind::Email => row.email_ct.as_ref(),
        IdentifierKind::Phone => row.phone_ct.as_ref(),
        IdentifierKind::NationalId => row.national_id_ct.as_ref(),
    }
}

/// The stored row of a subject created now: ACTIVE, version 1, its identifiers sealed
/// under `dek` (CreateSubject and ImportSubjects alike).
pub(crate) fn new_subject_row(
    t: &str,
    subject_id: &str,
    valid: &crate::domain::ValidSubject,
    dek: &DataKey,
    now: chrono::DateTime<chrono::Utc>,
) -> subject::Model {
    let mut row = subject::Model {
        tenant_id: t.to_owned(),
        subject_id: subject_id.to_owned(),
        state: SubjectState::Active.as_str().to_owned(),
        national_id_kind: valid
            .identifiers
            .national_id_kind
            .map(|k| k.as_str().to_owned()),
        email_ct: None,
        phone_ct: None,
        national_id_ct: None,
        restriction_reason: String::new(),
        restriction_reason_ct: None,
        restrict_time: None,
        restricted_purposes: "[]".to_owned(),
        erase_request_time: None,
        relationship_end_time: valid.relationship_end_time,
        erase_time: None,
        version: 1,
        create_time: now,
        update_time: now,
    };
    for kind in IdentifierKind::ALL {
        let ct = valid
            .identifiers
            .get(kind)
            .map(|v| seal_identifier(dek, t, subject_id, kind, v));
        set_ciphertext(&mut row, kind, ct);
    }
    row
}

pub(crate) fn set_ciphertext(row: &mut subject::Model, kind: IdentifierKind, ct: Option<Vec<u8>>) {
    match kind {
        IdentifierKind::Email => row.email_ct = ct,
        IdentifierKind::Phone => row.phone_ct = ct,
        IdentifierKind::NationalId => row.national_id_ct = ct,
    }
}

fn lookup_row(
    tenant: &str,
    subject: &str,
    kind: IdentifierKind,
    digest: [u8; 32],
    keys: &TenantKeys,
) -> lookup::Model {
    lookup::Model {
        tenant_id: tenant.to_owned(),
        kind: kind.as_str().to_owned(),
        digest: digest.to_vec(),
        subject_id: subject.to_owned(),
        index_version: index_version(keys),
    }
}

/// The index version new entries are written under, as stored.
fn index_version(keys: &TenantKeys) -> i32 {
    i32::try_from(keys.index_version).unwrap_or(i32::MAX)
}

/// The blind indexes an identifier may be stored under: the current index key's
/// first, then (during a re-index) the previous one's.
pub(crate) fn identifier_digests(
    keys: &TenantKeys,
    kind: IdentifierKind,
    normalised: &str,
) -> Vec<[u8; 32]> {
    keys.blind_keys()
        .map(|k| crypto::blind_index(k, kind.as_str(), normalised))
        .collect()
}

/// The blind index of an external reference (hex), its key in `external_refs`.
fn ref_digest(keys: &TenantKeys, r: &ExternalRef) -> String {
    ref_digest_under(&keys.blind, r)
}

fn ref_digest_under(key: &crypto::BlindIndexKey, r: &ExternalRef) -> String {
    crypto::blind_index(key, REF_INDEX_KIND, &ref_index_value(&r.system, &r.id))
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

/// The blind indexes an external reference may be stored under, current first.
pub(crate) fn ref_digests(keys: &TenantKeys, r: &ExternalRef) -> Vec<String> {
    keys.blind_keys().map(|k| ref_digest_under(k, r)).collect()
}

/// An external reference row: keyed by its blind index, the id sealed.
fn ref_row(
    tenant: &str,
    subject: &str,
    r: &ExternalRef,
    keys: &TenantKeys,
    dek: &DataKey,
) -> external_ref::Model {
    external_ref::Model {
        tenant_id: tenant.to_owned(),
        system: r.system.clone(),
        ref_id: ref_digest(keys, r),
        subject_id: subject.to_owned(),
        ref_ct: Some(crypto::seal(
            dek,
            r.id.as_bytes(),
            &ref_aad(tenant, subject, &r.system),
        )),
        index_version: index_version(keys),
    }
}

/// A new record row, its value sealed with the subject's data key.
pub(crate) fn record_row(
    tenant: &str,
    subject: &str,
    dek: &DataKey,
    d: RecordData,
    now: DateTime<Utc>,
) -> Result<record::Model, SubjectError> {
    let record_id = uuid::Uuid::now_v7().to_string();
    let value_ct = crypto::seal(
        dek,
        d.value.as_bytes(),
        &record_aad(tenant, subject, &record_id),
    );
    Ok(record::Model {
        tenant_id: tenant.to_owned(),
        record_id,
        subject_id: Some(subject.to_owned()),
        category: d.category.as_str().to_owned(),
        field: d.field,
        value_ct: Some(value_ct),
        source: d.source,
        purposes: json(&d.purposes)?,
        collected_at: d.collected_at,
        provided_by_subject: d.provided_by_subject,
        restricted: false,
        retain_until_time: None,
        legal_reference: String::new(),
        create_time: now,
        update_time: now,
    })
}

fn open_text(dek: &DataKey, ct: &[u8], aad: &[u8]) -> Result<String, SubjectError> {
    let plain = crypto::open(dek, ct, aad)?;
    String::from_utf8(plain).map_err(|_| SubjectError::Crypto(CryptoError::Malformed))
}

/// A record row as read; the value decrypted when `dek` is given.
pub(crate) fn record_view(
    tenant: &str,
    r: record::Model,
    dek: Option<&DataKey>,
) -> Result<Record, SubjectError> {
    let category = DataCategory::parse(&r.category).ok_or_else(|| corrupt("records.category"))?;
    let value = match (dek, &r.value_ct, &r.subject_id) {
        (Some(dek), Some(ct), Some(subject)) => {
            open_text(dek, ct, &record_aad(tenant, subject, &r.record_id))?
        }
        _ => String::new(),
    };
    Ok(Record {
        data: RecordData {
            category,
            field: r.field,
            value,
            source: r.source,
            purposes: from_json(&r.purposes)?,
            collected_at: r.collected_at,
            provided_by_subject: r.provided_by_subject,
        },
        record_id: r.record_id,
        restricted: r.restricted,
        retain_until_time: r.retain_until_time,
        legal_reference: r.legal_reference,
        create_time: r.create_time,
        update_time: r.update_time,
    })
}

/// A subject row as read: the tombstone when erased; identifiers decrypted when
/// `dek` is given.
fn subject_view(
    tenant: &str,
    row: subject::Model,
    refs: Vec<external_ref::Model>,
    records: Vec<record::Model>,
    dek: Option<&DataKey>,
    view: View,
) -> Result<Subject, SubjectError> {
    let state = SubjectState::parse(&row.state).ok_or_else(|| corrupt("subjects.state"))?;
    let restriction_reason = match (&row.restriction_reason_ct, dek) {
        (Some(ct), Some(dek)) => open_text(dek, ct, &restriction_aad(tenant, &row.subject_id))?,
        (Some(_), None) => return Err(SubjectError::DataKeyMissing),
        // vern's own text, or a row of an older version not sealed yet.
        (None, _) => row.restriction_reason.clone(),
    };
    let mut identifiers = Identifiers::default();
    let (refs, records) = if state == SubjectState::Erased {
        (vec![], vec![])
    } else {
        if let Some(dek) = dek.filter(|_| view == View::Full) {
            for kind in IdentifierKind::ALL {
                if let Some(ct) = ciphertext(&row, kind) {
                    let aad = identifier_aad(tenant, &row.subject_id, kind);
                    identifiers.set(kind, Some(open_text(dek, ct, &aad)?));
                }
            }
            identifiers.national_id_kind = row
                .national_id_kind
                .as_deref()
                .map(|k| {
                    NationalIdKind::parse(k).ok_or_else(|| corrupt("subjects.national_id_kind"))
                })
                .transpose()?;
        }
        let mut refs = refs
            .into_iter()
            .map(|r| {
                let id = match (&r.ref_ct, dek) {
                    (Some(ct), Some(dek)) => {
                        open_text(dek, ct, &ref_aad(tenant, &row.subject_id, &r.system))?
                    }
                    (Some(_), None) => return Err(SubjectError::DataKeyMissing),
                    // A row of an older version, not sealed yet.
                    (None, _) => r.ref_id,
                };
                Ok(ExternalRef {
                    system: r.system,
                    id,
                })
            })
            .collect::<Result<Vec<_>, SubjectError>>()?;
        refs.sort_by(|a, b| (&a.system, &a.id).cmp(&(&b.system, &b.id)));
        let dek = dek.filter(|_| view == View::Full);
        let records = records
            .into_iter()
            .map(|r| record_view(tenant, r, dek))
            .collect::<Result<Vec<_>, _>>()?;
        (refs, records)
    };
    Ok(Subject {
        tenant_id: row.tenant_id,
        subject_id: row.subject_id,
        identifiers,
        external_refs: refs,
        records,
        state,
        restriction_reason,
        restrict_time: row.restrict_time,
        restricted_purposes: from_json(&row.restricted_purposes)?,
        erase_request_time: row.erase_request_time,
        erase_time: row.erase_time,
        relationship_end_time: row.relationship_end_time,
        version: row.version,
        create_time: row.create_time,
        update_time: row.update_time,
    })
}

/// The tombstone that replaces an erased subject's row: no ciphertexts, no kind, no
/// reason, the erase time, the next version.
pub(crate) fn tombstone(row: &subject::Model, now: DateTime<Utc>) -> subject::Model {
    subject::Model {
        state: SubjectState::Erased.as_str().to_owned(),
        national_id_kind: None,
        email_ct: None,
        phone_ct: None,
        national_id_ct: None,
        restriction_reason: String::new(),
        restriction_reason_ct: None,
        restrict_time: None,
        restricted_purposes: "[]".to_owned(),
        relationship_end_time: None,
        erase_time: Some(now),
        version: row.version + 1,
        update_time: later(row.update_time),
        ..row.clone()
    }
}
