//! Subjects, their identifiers, external references and records: the types the use
//! cases work with, their validation, and the associated data that binds each
//! ciphertext to its place.
//!
//! Types that hold personal data (identifiers, reference ids, record values) print
//! only their shape in `Debug`, never the values, so a stray `{:?}` cannot log them.

use std::fmt;

use chrono::{DateTime, Duration, Utc};
use serde::{Deserialize, Serialize};
use vern_kit::error::{ApiError, FieldViolation, Violations};
use vern_kit::validate;

use super::identifiers::{self, NationalIdKind};

macro_rules! text_enum {
    ($(#[$m:meta])* $name:ident { $($(#[$vm:meta])* $v:ident = $s:literal),+ $(,)? }) => {
        $(#[$m])*
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
        pub enum $name { $($(#[$vm])* $v),+ }
        impl $name {
            /// The stored name.
            pub fn as_str(self) -> &'static str { match self { $(Self::$v => $s),+ } }
            /// Parses a stored name.
            pub fn parse(s: &str) -> Option<Self> { match s { $($s => Some(Self::$v),)+ _ => None } }
        }
    };
}

text_enum!(
    /// Lifecycle state of a subject.
    SubjectState {
        /// Processing allowed per legal basis.
        Active = "ACTIVE",
        /// Processing restricted (Art. 18, or records kept after an erasure).
        Restricted = "RESTRICTED",
        /// Erased: only the tombstone remains.
        Erased = "ERASED",
    }
);
text_enum!(
    /// The identifiers a subject is found by; also the blind index's kind label.
    IdentifierKind {
        /// E-mail address.
        Email = "email",
        /// Phone number (E.164).
        Phone = "phone",
        /// Norwegian national identity number.
        NationalId = "national_id",
    }
);
text_enum!(
    /// Category of personal data (as in `vern.common.v1.DataCategory`).
    DataCategory {
        /// Name, e-mail, phone.
        Contact = "CONTACT",
        /// National identity numbers.
        Identity = "IDENTITY",
        /// Workplace, title.
        Employment = "EMPLOYMENT",
        /// Gender, age group.
        Demographic = "DEMOGRAPHIC",
        /// Events attended, web use.
        Behaviour = "BEHAVIOUR",
        /// Correspondence.
        Communications = "COMMUNICATIONS",
        /// Interests and preferences.
        Preferences = "PREFERENCES",
        /// Bank account, salary, invoices.
        Financial = "FINANCIAL",
        /// Absence from work.
        Absence = "ABSENCE",
        /// Health (Art. 9).
        Health = "HEALTH",
    }
);
text_enum!(
    /// What a purge does to a matching record.
    PurgeAction {
        /// Delete the record.
        Delete = "DELETE",
        /// Destroy the value and detach the record from its subject.
        Anonymise = "ANONYMISE",
    }
);

impl IdentifierKind {
    /// Every kind, in field order.
    pub const ALL: [IdentifierKind; 3] = [Self::Email, Self::Phone, Self::NationalId];
}

/// How much of a subject a read returns.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum View {
    /// Ids, state, times, external references, record metadata: nothing decrypted.
    Basic,
    /// Everything, decrypted.
    Full,
}

/// Most external references one subject may have.
pub const MAX_EXTERNAL_REFS: usize = 50;
/// Most records one call may add.
pub const MAX_RECORDS_PER_CALL: usize = 1000;
/// Longest record value, characters.
pub const MAX_VALUE_CHARS: usize = 65_536;
/// How far in the future `collected_at` may lie (clock skew between systems).
const CLOCK_SKEW_SECONDS: i64 = 60;

/// Fields UpdateSubject may change.
pub const SUBJECT_UPDATABLE: &[&str] = &[
    "email",
    "phone",
    "national_id",
    "external_refs",
    "relationship_end_time",
];
/// Fields UpdateRecord may change.
pub const RECORD_UPDATABLE: &[&str] = &[
    "category",
    "field",
    "value",
    "source",
    "purposes",
    "collected_at",
    "provided_by_subject",
];

/// Validates a subject id (a UUID) and returns its canonical form.
pub fn subject_id(field: &str, id: &str) -> Result<String, FieldViolation> {
    uuid::Uuid::parse_str(id)
        .map(|u| u.hyphenated().to_string())
        .map_err(|_| FieldViolation::new(field, "must be a UUID"))
}

/// Validates a record id (a UUID) and returns its canonical form.
pub fn record_id(field: &str, id: &str) -> Result<String, FieldViolation> {
    subject_id(field, id)
}

/// Validates a purpose key (as the tenants service defines them).
pub fn purpose_key(field: &str, key: &str) -> Result<(), FieldViolation> {
    validate::slug(field, key, 2, 63)
}

/// A subject's identifiers, normalised. Absent ones are `None`.
#[derive(Clone, Default, PartialEq, Eq)]
pub struct Identifiers {
    /// E-mail address, lower case.
    pub email: Option<String>,
    /// Phone number, E.164.
    pub phone: Option<String>,
    /// National identity number, 11 digits.
    pub national_id: Option<String>,
    /// Kind of `national_id`.
    pub national_id_kind: Option<NationalIdKind>,
}

impl fmt::Debug for Identifiers {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Identifiers")
            .field("email", &self.email.as_ref().map(|_| "‹redacted›"))
            .field("phone", &self.phone.as_ref().map(|_| "‹redacted›"))
            .field(
                "national_id",
                &self.national_id.as_ref().map(|_| "‹redacted›"),
            )
            .field("national_id_kind", &self.national_id_kind)
            .finish()
    }
}

impl Identifiers {
    /// Validates and normalises raw identifiers; an empty value is absent. Field names
    /// are `prefix` + `email`/`phone`/`national_id`.
    pub fn validate(
        prefix: &str,
        email: &str,
        phone: &str,
        national_id: &str,
        v: &mut Violations,
    ) -> Self {
        let mut ids = Self::default();
        for kind in IdentifierKind::ALL {
            let raw = match kind {
                IdentifierKind::Email => email,
                IdentifierKind::Phone => phone,
                IdentifierKind::NationalId => national_id,
            };
            if let Some((value, k)) = v.check(normalise(prefix, kind, raw)).flatten() {
                ids.set(kind, Some(value));
                if k.is_some() {
                    ids.national_id_kind = k;
                }
            }
        }
        ids
    }

    /// The identifier of `kind`.
    pub fn get(&self, kind: IdentifierKind) -> Option<&str> {
        match kind {
            IdentifierKind::Email => self.email.as_deref(),
            IdentifierKind::Phone => self.phone.as_deref(),
            IdentifierKind::NationalId => self.national_id.as_deref(),
        }
    }

    /// Sets (or clears) the identifier of `kind`; clearing the national id clears its
    /// kind.
    pub fn set(&mut self, kind: IdentifierKind, value: Option<String>) {
        match kind {
            IdentifierKind::Email => self.email = value,
            IdentifierKind::Phone => self.phone = value,
            IdentifierKind::NationalId => {
                if value.is_none() {
                    self.national_id_kind = None;
                }
                self.national_id = value;
            }
        }
    }

    /// Whether no identifier is present.
    pub fn is_empty(&self) -> bool {
        IdentifierKind::ALL.iter().all(|k| self.get(*k).is_none())
    }
}

/// Normalises one identifier for storage or lookup: `Ok(None)` for an empty value,
/// else the normalised value and (for national ids) its kind.
#[allow(clippy::type_complexity)]
pub fn normalise(
    prefix: &str,
    kind: IdentifierKind,
    raw: &str,
) -> Result<Option<(String, Option<NationalIdKind>)>, FieldViolation> {
    if raw.trim().is_empty() {
        return Ok(None);
    }
    let field = format!("{prefix}{}", kind.as_str());
    Ok(Some(match kind {
        IdentifierKind::Email => (identifiers::email(&field, raw)?, None),
        IdentifierKind::Phone => (identifiers::phone(&field, raw)?, None),
        IdentifierKind::NationalId => {
            let (id, k) = identifiers::national_id(&field, raw)?;
            (id, Some(k))
        }
    }))
}

/// A reference to the subject in another system of the tenant.
#[derive(Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ExternalRef {
    /// The other system, e.g. `crm`.
    pub system: String,
    /// The subject's id there.
    pub id: String,
}

impl fmt::Debug for ExternalRef {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ExternalRef")
            .field("system", &self.system)
            .field("id", &"‹redacted›")
            .finish()
    }
}

impl ExternalRef {
    /// Validates one reference; `field` names it, e.g. `external_refs[0]`.
    pub fn validate(self, field: &str, v: &mut Violations) -> Option<Self> {
        let system = self.system.trim().to_owned();
        let id = self.id.trim().to_owned();
        let ok_system = v
            .check(validate::slug(&format!("{field}.system"), &system, 1, 63))
            .is_some();
        let ok_id = v
            .check(validate::line(&format!("{field}.id"), &id, 255))
            .is_some();
        (ok_system && ok_id).then_some(Self { system, id })
    }
}

/// Validates a list of references (`field` is e.g. `external_refs`): each valid, no
/// system/id pair twice.
pub fn validate_refs(field: &str, refs: Vec<ExternalRef>, v: &mut Violations) -> Vec<ExternalRef> {
    if refs.len() > MAX_EXTERNAL_REFS {
        v.add(field, format!("at most {MAX_EXTERNAL_REFS} references"));
        return vec![];
    }
    let mut out: Vec<ExternalRef> = Vec::with_capacity(refs.len());
    for (i, r) in refs.into_iter().enumerate() {
        let f = format!("{field}[{i}]");
        if let Some(r) = r.validate(&f, v) {
            if out.contains(&r) {
                v.add(f, "is listed twice");
            } else {
                out.push(r);
            }
        }
    }
    out
}

/// One item of personal data as given by a caller (not yet validated).
#[derive(Clone, Default)]
pub struct RecordInput {
    /// Category; `None` when unset or unknown.
    pub category: Option<DataCategory>,
    /// Name of the data item.
    pub field: String,
    /// The value (personal data).
    pub value: String,
    /// Where it came from.
    pub source: String,
    /// Purpose keys.
    pub purposes: Vec<String>,
    /// When collected; `None`: now.
    pub collected_at: Option<DateTime<Utc>>,
    /// Whether the subject provided it.
    pub provided_by_subject: bool,
}

impl fmt::Debug for RecordInput {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RecordInput")
            .field("category", &self.category)
            .field("field", &self.field)
            .field("value", &"‹redacted›")
            .finish_non_exhaustive()
    }
}

/// A validated item of personal data.
#[derive(Clone, PartialEq, Eq)]
pub struct RecordData {
    /// Category.
    pub category: DataCategory,
    /// Name of the data item.
    pub field: String,
    /// The value (personal data); empty in the BASIC view.
    pub value: String,
    /// Where it came from.
    pub source: String,
    /// Purpose keys, at least one.
    pub purposes: Vec<String>,
    /// When collected.
    pub collected_at: DateTime<Utc>,
    /// Whether the subject provided it.
    pub provided_by_subject: bool,
}

impl fmt::Debug for RecordData {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RecordData")
            .field("category", &self.category)
            .field("field", &self.field)
            .field("value", &"‹redacted›")
            .field("source", &self.source)
            .field("purposes", &self.purposes)
            .field("collected_at", &self.collected_at)
            .finish_non_exhaustive()
    }
}

impl RecordInput {
    /// Validates the record; `prefix` is prepended to field names (e.g. `records[2].`).
    /// `now` is the default and upper bound of `collected_at`.
    pub fn validate(
        self,
        prefix: &str,
        now: DateTime<Utc>,
        v: &mut Violations,
    ) -> Option<RecordData> {
        let f = |n: &str| format!("{prefix}{n}");
        let mut bad = false;
        if self.category.is_none() {
            v.add(f("category"), "is required (a known data category)");
            bad = true;
        }
        bad |= v
            .check(validate::line(&f("field"), &self.field, 100))
            .is_none();
        bad |= v
            .check(validate::optional_text(
                &f("value"),
                &self.value,
                MAX_VALUE_CHARS,
            ))
            .is_none();
        bad |= v
            .check(validate::line(&f("source"), &self.source, 100))
            .is_none();
        let purposes = purposes(&f("purposes"), self.purposes, v);
        bad |= purposes.is_none();
        if let Some(t) = self.collected_at
            && t > now + Duration::seconds(CLOCK_SKEW_SECONDS)
        {
            v.add(f("collected_at"), "must not be in the future");
            bad = true;
        }
        if bad {
            return None;
        }
        Some(RecordData {
            category: self.category?,
            field: self.field.trim().to_owned(),
            value: self.value,
            source: self.source.trim().to_owned(),
            purposes: purposes?,
            collected_at: self.collected_at.unwrap_or(now),
            provided_by_subject: self.provided_by_subject,
        })
    }
}

/// Validates a record's purpose keys: at least one, each a key, no duplicates (they
/// are removed), at most 50.
pub fn purposes(field: &str, keys: Vec<String>, v: &mut Violations) -> Option<Vec<String>> {
    if keys.is_empty() {
        v.add(field, "at least one purpose is required");
        return None;
    }
    if keys.len() > 50 {
        v.add(field, "at most 50 purposes");
        return None;
    }
    let mut ok = true;
    let mut out: Vec<String> = vec![];
    for (i, k) in keys.into_iter().enumerate() {
        if v.check(purpose_key(&format!("{field}[{i}]"), &k)).is_none() {
            ok = false;
        } else if !out.contains(&k) {
            out.push(k);
        }
    }
    ok.then_some(out)
}

/// Validates a list of records; field names are `field[i].…`.
pub fn validate_records(
    field: &str,
    records: Vec<RecordInput>,
    now: DateTime<Utc>,
    v: &mut Violations,
) -> Vec<RecordData> {
    if records.len() > MAX_RECORDS_PER_CALL {
        v.add(
            field,
            format!("at most {MAX_RECORDS_PER_CALL} records per call"),
        );
        return vec![];
    }
    records
        .into_iter()
        .enumerate()
        .filter_map(|(i, r)| r.validate(&format!("{field}[{i}]."), now, v))
        .collect()
}

impl DataCategory {
    /// A special category (Art. 9(1)) or one that may hold one: HEALTH, and ABSENCE,
    /// since sick leave is data concerning health (a payroll department keeps absence
    /// records, "fraværsinformasjon"). Such a record needs a purpose declaring its category.
    pub fn may_be_special(self) -> bool {
        matches!(self, DataCategory::Health | DataCategory::Absence)
    }
}

/// Checks a validated record's purposes against the tenant's purposes (key → the data
/// categories it declares): each must be one of the tenant's (Art. 5(1)(b): processing
/// only for declared purposes), and a record whose category is or may be special must
/// name only purposes that declare that category — the tenants service requires an
/// Art. 9(2) condition of those. `prefix` is the record's field path with its dot
/// (`records[0].`); violations name `…purposes[i]` and never echo a value.
pub fn check_record_purposes(
    prefix: &str,
    record: &RecordData,
    catalogue: &std::collections::HashMap<String, Vec<DataCategory>>,
    v: &mut Violations,
) {
    for (i, key) in record.purposes.iter().enumerate() {
        let field = format!("{prefix}purposes[{i}]");
        match catalogue.get(key) {
            None => v.add(field, "is not a purpose of the tenant"),
            Some(declared)
                if record.category.may_be_special() && !declared.contains(&record.category) =>
            {
                v.add(
                    field,
                    format!(
                        "does not declare the category {} (Art. 9: a purpose processing it needs an Art. 9(2) condition)",
                        record.category.as_str()
                    ),
                )
            }
            Some(_) => {}
        }
    }
}

/// The input of CreateSubject.
#[derive(Clone, Default)]
pub struct NewSubject {
    /// Raw e-mail (empty: none).
    pub email: String,
    /// Raw phone (empty: none).
    pub phone: String,
    /// Raw national id (empty: none).
    pub national_id: String,
    /// External references.
    pub external_refs: Vec<ExternalRef>,
    /// Initial records.
    pub records: Vec<RecordInput>,
    /// End of the relationship, if it has ended.
    pub relationship_end_time: Option<DateTime<Utc>>,
}

impl fmt::Debug for NewSubject {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("NewSubject")
            .field("external_refs", &self.external_refs.len())
            .field("records", &self.records.len())
            .finish_non_exhaustive()
    }
}

/// A validated CreateSubject input.
#[derive(Debug, Clone)]
pub struct ValidSubject {
    /// Normalised identifiers.
    pub identifiers: Identifiers,
    /// External references.
    pub external_refs: Vec<ExternalRef>,
    /// Records.
    pub records: Vec<RecordData>,
    /// End of the relationship.
    pub relationship_end_time: Option<DateTime<Utc>>,
}

impl NewSubject {
    /// Validates everything and reports every bad field at once.
    pub fn validate(self, now: DateTime<Utc>) -> Result<ValidSubject, ApiError> {
        let mut v = Violations::new();
        let identifiers =
            Identifiers::validate("", &self.email, &self.phone, &self.national_id, &mut v);
        let external_refs = validate_refs("external_refs", self.external_refs, &mut v);
        let records = validate_records("records", self.records, now, &mut v);
        if v.is_empty() && identifiers.is_empty() && external_refs.is_empty() {
            v.add(
                "email",
                "at least one of email, phone, national_id or external_refs is required",
            );
        }
        v.finish()?;
        Ok(ValidSubject {
            identifiers,
            external_refs,
            records,
            relationship_end_time: self.relationship_end_time,
        })
    }
}

/// The new values of UpdateSubject (only the fields in the mask are used).
#[derive(Clone, Default)]
pub struct SubjectChanges {
    /// Raw e-mail; empty clears it.
    pub email: String,
    /// Raw phone; empty clears it.
    pub phone: String,
    /// Raw national id; empty clears it.
    pub national_id: String,
    /// Replaces the whole list.
    pub external_refs: Vec<ExternalRef>,
    /// End of the relationship; `None` clears it.
    pub relationship_end_time: Option<DateTime<Utc>>,
}

impl fmt::Debug for SubjectChanges {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SubjectChanges").finish_non_exhaustive()
    }
}

/// Checks an update mask: required, each path one of `allowed`.
pub fn check_mask(v: &mut Violations, mask: &[String], allowed: &[&str]) {
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

/// One record of a subject, as read.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Record {
    /// Server-assigned id.
    pub record_id: String,
    /// The data (value empty in the BASIC view).
    pub data: RecordData,
    /// Kept only because of a retention duty after an erasure.
    pub restricted: bool,
    /// For a kept record: when its duty ends.
    pub retain_until_time: Option<DateTime<Utc>>,
    /// For a kept record: why it is kept.
    pub legal_reference: String,
    /// Stored.
    pub create_time: DateTime<Utc>,
    /// Last changed.
    pub update_time: DateTime<Utc>,
}

/// A subject, as read.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Subject {
    /// Owning tenant.
    pub tenant_id: String,
    /// UUID.
    pub subject_id: String,
    /// Identifiers (all `None` in the BASIC view and after erasure).
    pub identifiers: Identifiers,
    /// External references.
    pub external_refs: Vec<ExternalRef>,
    /// Records, ordered by `collected_at`.
    pub records: Vec<Record>,
    /// State.
    pub state: SubjectState,
    /// Why restricted (no personal data).
    pub restriction_reason: String,
    /// When restricted.
    pub restrict_time: Option<DateTime<Utc>>,
    /// Purpose keys restricted while ACTIVE (Art. 18); empty when none or all are.
    pub restricted_purposes: Vec<String>,
    /// When erasure was requested while records had to be kept.
    pub erase_request_time: Option<DateTime<Utc>>,
    /// Tombstone: when erased.
    pub erase_time: Option<DateTime<Utc>>,
    /// End of the relationship.
    pub relationship_end_time: Option<DateTime<Utc>>,
    /// Monotonic version of the state.
    pub version: i64,
    /// Created.
    pub create_time: DateTime<Utc>,
    /// Last changed.
    pub update_time: DateTime<Utc>,
}

/// A record an erasure keeps, restricted.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Retain {
    /// The record.
    pub record_id: String,
    /// When the duty ends (`None`: a hold without end).
    pub retain_until_time: Option<DateTime<Utc>>,
    /// Why it is kept (no personal data).
    pub legal_reference: String,
}

/// Validates the `retain` list of EraseSubject.
pub fn validate_retain(field: &str, retain: Vec<Retain>, v: &mut Violations) -> Vec<Retain> {
    let mut out: Vec<Retain> = vec![];
    for (i, r) in retain.into_iter().enumerate() {
        let f = format!("{field}[{i}]");
        let id = v.check(record_id(&format!("{f}.record_id"), &r.record_id));
        let reference = v.check(validate::line(
            &format!("{f}.legal_reference"),
            &r.legal_reference,
            500,
        ));
        if let (Some(id), Some(())) = (id, reference) {
            if out.iter().any(|o| o.record_id == id) {
                v.add(format!("{f}.record_id"), "is listed twice");
                continue;
            }
            out.push(Retain {
                record_id: id,
                retain_until_time: r.retain_until_time,
                legal_reference: r.legal_reference.trim().to_owned(),
            });
        }
    }
    out
}

/// The answer of EraseSubject (no personal data: stored for idempotent retries).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct EraseOutcome {
    /// The subject.
    pub subject_id: String,
    /// ERASED, or RESTRICTED when records were kept.
    pub state: SubjectState,
    /// Nothing left but the tombstone.
    pub fully_erased: bool,
    /// Records erased by this call.
    pub erased_record_count: i32,
    /// Records kept.
    pub retained: Vec<Retain>,
    /// When erased, or when erasure was requested (records kept).
    pub erase_time: DateTime<Utc>,
}

/// Which records a purge matches; every set filter must hold.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct PurgeFilter {
    /// Only this category.
    pub category: Option<DataCategory>,
    /// Only records processed for this purpose.
    pub purpose: Option<String>,
    /// Only records collected strictly before this time.
    pub older_than: Option<DateTime<Utc>>,
    /// Only this field name.
    pub field: Option<String>,
    /// Only these subjects (empty: all).
    pub subject_ids: Vec<String>,
    /// Never these subjects (legal holds).
    pub exclude_subject_ids: Vec<String>,
    /// Only subjects whose relationship ended before this time.
    pub relationship_end_before: Option<DateTime<Utc>>,
    /// Only records kept after an erasure whose duty ends before this time. Without
    /// it, kept records are never matched.
    pub retain_until_before: Option<DateTime<Utc>>,
    /// With `retain_until_before`: also records kept after an erasure without an end.
    pub include_open_ended: bool,
}

/// Default and largest number of records one purge handles.
pub const PURGE_DEFAULT_LIMIT: u64 = 1000;
/// Largest number of records one purge handles.
pub const PURGE_MAX_LIMIT: u64 = 10_000;

/// A PurgeRecords call.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PurgeRequest {
    /// What to match.
    pub filter: PurgeFilter,
    /// What to do.
    pub action: Option<PurgeAction>,
    /// Only report.
    pub dry_run: bool,
    /// Requested limit (0: default).
    pub limit: i32,
    /// The retention policy applied (for the audit trail).
    pub policy_id: String,
}

impl PurgeRequest {
    /// Validates the request; returns the effective limit.
    pub fn validate(&mut self) -> Result<u64, ApiError> {
        let mut v = Violations::new();
        if self.action.is_none() {
            v.add("action", "is required (DELETE or ANONYMISE)");
        }
        let f = &mut self.filter;
        if f.older_than.is_none() && f.retain_until_before.is_none() {
            v.add(
                "older_than",
                "is required unless retain_until_before is set",
            );
        }
        if f.include_open_ended && f.retain_until_before.is_none() {
            v.add(
                "include_open_ended",
                "needs retain_until_before (it widens that filter)",
            );
        }
        if let Some(p) = &f.purpose {
            v.check(purpose_key("purpose", p));
        }
        if let Some(field) = &f.field {
            v.check(validate::line("field", field, 100));
        }
        for (name, ids) in [
            ("subject_ids", &mut f.subject_ids),
            ("exclude_subject_ids", &mut f.exclude_subject_ids),
        ] {
            if ids.len() > PURGE_MAX_LIMIT as usize {
                v.add(name, format!("at most {PURGE_MAX_LIMIT} ids"));
                continue;
            }
            for (i, id) in ids.iter_mut().enumerate() {
                if let Some(c) = v.check(subject_id(&format!("{name}[{i}]"), id)) {
                    *id = c;
                }
            }
        }
        v.check(validate::optional_text("policy_id", &self.policy_id, 128));
        let limit = match self.limit {
            n if n < 0 => {
                v.add("limit", "must not be negative");
                0
            }
            0 => PURGE_DEFAULT_LIMIT,
            n => (n as u64).min(PURGE_MAX_LIMIT),
        };
        v.finish()?;
        Ok(limit)
    }
}

/// A record matched by a purge (no values).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PurgeItem {
    /// The record's subject.
    pub subject_id: String,
    /// The record.
    pub record_id: String,
    /// Its category.
    pub category: DataCategory,
    /// Its field name.
    pub field: String,
    /// Its purposes.
    pub purposes: Vec<String>,
    /// When collected.
    pub collected_at: DateTime<Utc>,
}

/// The answer of PurgeRecords (no personal data: stored for idempotent retries).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, Default)]
pub struct PurgeOutcome {
    /// Records matched (by this call, or in total on a dry run).
    pub matched_count: i64,
    /// Records deleted or anonymised.
    pub purged_count: i64,
    /// The matched records (dry run only).
    pub items: Vec<PurgeItem>,
    /// More records match than the limit allowed.
    pub truncated: bool,
    /// Subjects that became ERASED because their last kept record went.
    pub erased_subject_ids: Vec<String>,
}

/// Associated data of a subject's wrapped data key: binds it to tenant and subject.
pub fn key_aad(tenant: &str, subject: &str) -> Vec<u8> {
    aad(&["dek", tenant, subject])
}

/// Associated data of an identifier ciphertext: binds it to tenant, subject and kind.
pub fn identifier_aad(tenant: &str, subject: &str, kind: IdentifierKind) -> Vec<u8> {
    aad(&["identifier", tenant, subject, kind.as_str()])
}

/// Associated data of a record value: binds it to tenant, subject and record, so a
/// ciphertext cannot be moved to another row and still open.
pub fn record_aad(tenant: &str, subject: &str, record: &str) -> Vec<u8> {
    aad(&["record", tenant, subject, record])
}

/// Associated data of a sealed restriction reason: binds it to tenant and subject.
pub fn restriction_aad(tenant: &str, subject: &str) -> Vec<u8> {
    aad(&["restriction_reason", tenant, subject])
}

/// `vern/subjects/v1` ‖ (0x00 ‖ part)*: the parts (ids without NUL bytes) stay apart.
/// Associated data of a sealed external reference id: binds it to tenant, subject and
/// system.
pub fn ref_aad(tenant: &str, subject: &str, system: &str) -> Vec<u8> {
    aad(&["external_ref", tenant, subject, system])
}

/// The blind-index kind of external references (never an identifier kind).
pub const REF_INDEX_KIND: &str = "external_ref";

/// The value an external reference is blind-indexed by: `system ‖ 0x00 ‖ id` (a system
/// is a slug, so the split is unambiguous).
pub fn ref_index_value(system: &str, id: &str) -> String {
    format!("{system}\0{id}")
}

fn aad(parts: &[&str]) -> Vec<u8> {
    let mut out = b"vern/subjects/v1".to_vec();
    for p in parts {
        out.push(0);
        out.extend_from_slice(p.as_bytes());
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn now() -> DateTime<Utc> {
        vern_kit::time::now()
    }

    fn record() -> RecordInput {
        RecordInput {
            category: Some(DataCategory::Contact),
            field: "name".into(),
            value: "Ola Nordmann".into(),
            source: "web-form".into(),
            purposes: vec!["newsletter".into()],
            collected_at: None,
            provided_by_subject: true,
        }
    }

    fn fields(e: ApiError) -> Vec<String> {
        match e {
            ApiError::InvalidArgument(v) => v.into_iter().map(|v| v.field).collect(),
            other => panic!("unexpected {other:?}"),
        }
    }

    #[test]
    fn new_subject_reports_every_bad_field() {
        let cases: Vec<(&str, NewSubject, Vec<&str>)> = vec![
            ("nothing", NewSubject::default(), vec!["email"]),
            (
                "bad identifiers",
                NewSubject {
                    email: "not-an-email".into(),
                    phone: "123".into(),
                    national_id: "0101901234x".into(),
                    ..Default::default()
                },
                vec!["email", "phone", "national_id"],
            ),
            (
                "bad refs",
                NewSubject {
                    external_refs: vec![
                        ExternalRef {
                            system: "CRM".into(),
                            id: "1".into(),
                        },
                        ExternalRef {
                            system: "crm".into(),
                            id: " ".into(),
                        },
                        ExternalRef {
                            system: "crm".into(),
                            id: "7".into(),
                        },
                        ExternalRef {
                            system: "crm".into(),
                            id: "7".into(),
                        },
                    ],
                    ..Default::default()
                },
                vec![
                    "external_refs[0].system",
                    "external_refs[1].id",
                    "external_refs[3]",
                ],
            ),
            (
                "bad records",
                NewSubject {
                    email: "ola@example.no".into(),
                    records: vec![
                        record(),
                        RecordInput {
                            category: None,
                            ..record()
                        },
                        RecordInput {
                            purposes: vec![],
                            source: String::new(),
                            ..record()
                        },
                        RecordInput {
                            purposes: vec!["ok-key".into(), "Bad Key".into()],
                            collected_at: Some(now() + Duration::days(1)),
                            ..record()
                        },
                    ],
                    ..Default::default()
                },
                vec![
                    "records[1].category",
                    "records[2].source",
                    "records[2].purposes",
                    "records[3].purposes[1]",
                    "records[3].collected_at",
                ],
            ),
        ];
        for (name, input, want) in cases {
            let got = fields(input.validate(now()).expect_err(name));
            assert_eq!(got, want, "{name}");
        }
    }

    #[test]
    fn new_subject_normalises() {
        let s = NewSubject {
            email: " Ola@Example.NO ".into(),
            phone: "412 34 567".into(),
            external_refs: vec![ExternalRef {
                system: "crm".into(),
                id: " 42 ".into(),
            }],
            records: vec![RecordInput {
                purposes: vec!["newsletter".into(), "newsletter".into()],
                ..record()
            }],
            ..Default::default()
        }
        .validate(now())
        .expect("valid");
        assert_eq!(s.identifiers.email.as_deref(), Some("ola@example.no"));
        assert_eq!(s.identifiers.phone.as_deref(), Some("+4741234567"));
        assert_eq!(s.identifiers.national_id, None);
        assert_eq!(s.external_refs[0].id, "42");
        assert_eq!(s.records[0].purposes, vec!["newsletter".to_owned()]);
    }

    #[test]
    fn debug_never_shows_personal_data() {
        let s = NewSubject {
            email: "ola@example.no".into(),
            phone: "41234567".into(),
            external_refs: vec![ExternalRef {
                system: "crm".into(),
                id: "cust-991".into(),
            }],
            records: vec![record()],
            ..Default::default()
        };
        let v = s.clone().validate(now()).expect("valid");
        let shown = format!("{s:?} {v:?} {:?}", record());
        for secret in [
            "ola@example.no",
            "4741234567",
            "41234567",
            "cust-991",
            "Ola Nordmann",
        ] {
            assert!(!shown.contains(secret), "{secret} in {shown}");
        }
    }

    #[test]
    fn associated_data_separates_places() {
        let all = [
            key_aad("a", "s1"),
            identifier_aad("a", "s1", IdentifierKind::Email),
            identifier_aad("a", "s1", IdentifierKind::Phone),
            identifier_aad("b", "s1", IdentifierKind::Email),
            record_aad("a", "s1", "r1"),
            record_aad("a", "s1", "r2"),
            record_aad("a", "s2", "r1"),
        ];
        for (i, x) in all.iter().enumerate() {
            for y in &all[i + 1..] {
                assert_ne!(x, y);
            }
        }
    }

    #[test]
    fn purge_requests() {
        let base = PurgeRequest {
            filter: PurgeFilter {
                older_than: Some(now()),
                ..Default::default()
            },
            action: Some(PurgeAction::Delete),
            dry_run: false,
            limit: 0,
            policy_id: String::new(),
        };
        assert_eq!(base.clone().validate().ok(), Some(PURGE_DEFAULT_LIMIT));
        let big = PurgeRequest {
            limit: 1_000_000,
            ..base.clone()
        };
        assert_eq!(big.clone().validate().ok(), Some(PURGE_MAX_LIMIT));
        let bad = PurgeRequest {
            filter: PurgeFilter {
                subject_ids: vec!["nope".into()],
                purpose: Some("X".into()),
                ..Default::default()
            },
            action: None,
            limit: -1,
            ..base
        };
        assert_eq!(
            fields(bad.clone().validate().expect_err("bad")),
            ["action", "older_than", "purpose", "subject_ids[0]", "limit"]
        );
    }
}
