//! The retention rules, pure: ISO-8601 periods with calendar arithmetic, anchors,
//! policies and holds with their validation, the per-record decision of Evaluate, and
//! how a sweep turns a policy into purge filters.
//!
//! # Rules
//!
//! - **Periods** are ISO-8601 durations of years, months, weeks and days (`P5Y`,
//!   `P3Y6M`, `P30D`, `P2W`); no time part. Adding a period adds the years and months
//!   first (clamped to the last day of a shorter month: 31 Jan + P1M = 28/29 Feb), then
//!   the days. Subtracting goes the other way round (days first, then months), so
//!   `(t - p) + p <= t` always holds: a cut-off computed by subtraction never lets a
//!   record go before its period has ended.
//! - **Anchors**: COLLECTED_AT is the record's `collected_at`; END_OF_FINANCIAL_YEAR is
//!   1 January (00:00 UTC) of the year after collection (the financial year is the
//!   calendar year, in UTC); END_OF_RELATIONSHIP is the subject's
//!   `relationship_end_time` (none: the period has not started); CONSENT_WITHDRAWN is
//!   when the subject's consent for the policy's purpose became WITHDRAWN or OBJECTED
//!   (none: the period has not started). A record expires at `anchor + period`.
//! - **Evaluate** decides per record, in this order: an active legal hold (the
//!   subject's or tenant-wide) → HELD; a matching legal-duty policy whose period has not
//!   ended (or has not started: an ongoing relationship, consent not withdrawn) →
//!   MUST_KEEP until the latest such end (unset when open-ended), under the policy
//!   keeping it longest; a record kept after an erasure whose `retain_until_time` lies
//!   ahead counts as such a duty too; otherwise a matching policy whose period has ended
//!   → EXPIRED (the sweep applies every policy, so the first end removes it); otherwise
//!   MAY_ERASE, with the end of the longest matching maximum period as
//!   `retain_until_time` (as the API defines it).
//! - **Longer legal duties in sweeps.** A policy P sweeps a record only when every
//!   *other* legal-duty policy D that could match the same record (their categories
//!   and fields do not contradict each other; purposes never do, a record may serve
//!   several) has ended for it too: the sweep
//!   ANDs D's expiry condition into P's purge filters. When D is at least as broad as
//!   P (each of D's set filters equals P's) this is exact; when D is narrower or only
//!   overlaps, records of P that D cannot match may be kept longer than P says — never
//!   shorter. Records left because of such a duty or a legal hold are counted as kept.

use std::fmt;

use chrono::{DateTime, Datelike, Days, Months, NaiveDate, TimeZone, Utc};
use serde::{Deserialize, Serialize};
use vern_kit::error::{FieldViolation, Violations};
use vern_kit::validate;

macro_rules! text_enum {
    ($(#[$m:meta])* $name:ident { $($(#[$vm:meta])* $v:ident = $s:literal),+ $(,)? }) => {
        $(#[$m])*
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
        pub enum $name { $($(#[$vm])* $v),+ }
        impl $name {
            /// The stored (and protobuf) name.
            pub fn as_str(self) -> &'static str { match self { $(Self::$v => $s),+ } }
            /// Parses a stored name.
            pub fn parse(s: &str) -> Option<Self> { match s { $($s => Some(Self::$v),)+ _ => None } }
        }
    };
}

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
    /// What a retention period runs from.
    Anchor {
        /// The record's collected_at.
        CollectedAt = "COLLECTED_AT",
        /// 1 January after the calendar year of collection.
        EndOfFinancialYear = "END_OF_FINANCIAL_YEAR",
        /// The subject's relationship_end_time.
        EndOfRelationship = "END_OF_RELATIONSHIP",
        /// When consent for the policy's purpose was withdrawn or objected to.
        ConsentWithdrawn = "CONSENT_WITHDRAWN",
    }
);
text_enum!(
    /// What happens to data whose period has passed.
    Action {
        /// Delete it.
        Delete = "DELETE",
        /// Destroy the value and detach it from the subject.
        Anonymise = "ANONYMISE",
    }
);
text_enum!(
    /// What a legal hold covers.
    HoldScope {
        /// One subject.
        Subject = "SUBJECT",
        /// The whole tenant.
        Tenant = "TENANT",
    }
);
text_enum!(
    /// Status of a legal hold, derived from release and end time.
    HoldStatus {
        /// In force.
        Active = "ACTIVE",
        /// Released.
        Released = "RELEASED",
        /// Its end time has passed.
        Expired = "EXPIRED",
    }
);
text_enum!(
    /// What started a sweep.
    SweepTrigger {
        /// The scheduler.
        Scheduled = "SCHEDULED",
        /// A RunSweep call.
        OnDemand = "ON_DEMAND",
    }
);
text_enum!(
    /// Outcome of a sweep.
    SweepStatus {
        /// Still running.
        Running = "RUNNING",
        /// Every policy applied.
        Succeeded = "SUCCEEDED",
        /// Some policies failed.
        Partial = "PARTIAL",
        /// Nothing could be applied.
        Failed = "FAILED",
        /// A tenant-wide legal hold stopped the sweep.
        SkippedHold = "SKIPPED_HOLD",
        /// Cut off by a shutdown, or its holder died (its lease expired).
        Interrupted = "INTERRUPTED",
    }
);
text_enum!(
    /// What Evaluate decided for one record.
    Disposition {
        /// A legal duty keeps it.
        MustKeep = "MUST_KEEP",
        /// A legal hold keeps it.
        Held = "HELD",
        /// No duty keeps it.
        MayErase = "MAY_ERASE",
        /// Its period has passed.
        Expired = "EXPIRED",
    }
);

/// Longest period accepted, in years (anything longer is a typo).
const MAX_PERIOD_YEARS: u32 = 200;

/// An ISO-8601 period of years, months, weeks and days.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Period {
    /// Years.
    pub years: u32,
    /// Months.
    pub months: u32,
    /// Weeks.
    pub weeks: u32,
    /// Days.
    pub days: u32,
}

impl Period {
    /// Parses `PnYnMnWnD` (each part optional, in this order, at least one non-zero).
    pub fn parse(s: &str) -> Result<Period, String> {
        let bad = || {
            "must be an ISO-8601 period of years, months, weeks and days, e.g. P5Y, P3Y6M, P30D"
                .to_owned()
        };
        let rest = s.strip_prefix('P').ok_or_else(bad)?;
        if rest.is_empty() || rest.contains('T') {
            return Err(bad());
        }
        let mut p = Period::default();
        let mut digits = String::new();
        let mut last = 0usize;
        for c in rest.chars() {
            if c.is_ascii_digit() {
                digits.push(c);
                continue;
            }
            let order = match c {
                'Y' => 1,
                'M' => 2,
                'W' => 3,
                'D' => 4,
                _ => return Err(bad()),
            };
            if digits.is_empty() || order <= last || digits.len() > 6 {
                return Err(bad());
            }
            let n: u32 = digits.parse().map_err(|_| bad())?;
            match c {
                'Y' => p.years = n,
                'M' => p.months = n,
                'W' => p.weeks = n,
                _ => p.days = n,
            }
            last = order;
            digits.clear();
        }
        if !digits.is_empty() {
            return Err(bad());
        }
        if p == Period::default() {
            return Err("must not be zero".into());
        }
        let approx_years = p.years + p.months / 12 + (p.weeks * 7 + p.days) / 365;
        if approx_years > MAX_PERIOD_YEARS {
            return Err(format!("must be at most {MAX_PERIOD_YEARS} years"));
        }
        Ok(p)
    }

    fn total_months(self) -> u32 {
        self.years * 12 + self.months
    }

    fn total_days(self) -> u64 {
        u64::from(self.weeks) * 7 + u64::from(self.days)
    }

    /// `t + self`: years and months first (clamped to the month's last day), then days.
    pub fn add_to(self, t: DateTime<Utc>) -> Option<DateTime<Utc>> {
        t.checked_add_months(Months::new(self.total_months()))?
            .checked_add_days(Days::new(self.total_days()))
    }

    /// `t - self`: days first, then years and months (clamped), so that
    /// `add_to(sub_from(t)) <= t`.
    pub fn sub_from(self, t: DateTime<Utc>) -> Option<DateTime<Utc>> {
        t.checked_sub_days(Days::new(self.total_days()))?
            .checked_sub_months(Months::new(self.total_months()))
    }
}

impl fmt::Display for Period {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("P")?;
        for (n, unit) in [
            (self.years, 'Y'),
            (self.months, 'M'),
            (self.weeks, 'W'),
            (self.days, 'D'),
        ] {
            if n > 0 {
                write!(f, "{n}{unit}")?;
            }
        }
        Ok(())
    }
}

impl Serialize for Period {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&self.to_string())
    }
}

impl<'de> Deserialize<'de> for Period {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        Period::parse(&s).map_err(serde::de::Error::custom)
    }
}

/// 1 January 00:00 UTC of `year`.
pub fn start_of_year(year: i32) -> Option<DateTime<Utc>> {
    let d = NaiveDate::from_ymd_opt(year, 1, 1)?;
    Some(Utc.from_utc_datetime(&d.and_hms_opt(0, 0, 0)?))
}

/// The anchor of END_OF_FINANCIAL_YEAR for a record collected at `collected`: the
/// start of the next calendar year.
pub fn end_of_financial_year(collected: DateTime<Utc>) -> Option<DateTime<Utc>> {
    start_of_year(collected.year() + 1)
}

/// Validates a purpose key (as the tenants service defines them).
pub fn purpose_key(field: &str, key: &str) -> Result<(), FieldViolation> {
    validate::slug(field, key, 2, 63)
}

/// Validates a UUID and returns its canonical form.
pub fn uuid(field: &str, id: &str) -> Result<String, FieldViolation> {
    uuid::Uuid::parse_str(id)
        .map(|u| u.hyphenated().to_string())
        .map_err(|_| FieldViolation::new(field, "must be a UUID"))
}

/// The settable fields of a policy (CreatePolicy input, or the merged result of an
/// update), before validation.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct PolicyInput {
    /// Display name.
    pub name: String,
    /// Category filter.
    pub category: Option<DataCategory>,
    /// Purpose filter (empty: none).
    pub purpose: String,
    /// Field filter (empty: any).
    pub field: String,
    /// The period as text.
    pub period: String,
    /// Anchor.
    pub anchor: Option<Anchor>,
    /// Action.
    pub action: Option<Action>,
    /// Legal reference.
    pub legal_reference: String,
    /// Legal duty.
    pub legal_duty: bool,
}

/// Fields UpdatePolicy may change.
pub const POLICY_UPDATABLE: &[&str] = &[
    "name",
    "category",
    "purpose",
    "field",
    "period",
    "anchor",
    "action",
    "legal_reference",
    "legal_duty",
];

/// A validated policy definition.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PolicySpec {
    /// Display name.
    pub name: String,
    /// Only records of this category.
    pub category: Option<DataCategory>,
    /// Only records processed for this purpose.
    pub purpose: Option<String>,
    /// Only records with this field name.
    pub field: Option<String>,
    /// The period.
    pub period: Period,
    /// What it runs from.
    pub anchor: Anchor,
    /// What happens after it.
    pub action: Action,
    /// The legal basis of the rule.
    pub legal_reference: String,
    /// The law requires keeping the data for the period.
    pub legal_duty: bool,
}

impl PolicyInput {
    /// Validates; field names get `prefix` (e.g. `policy.` for updates).
    pub fn validate(self, prefix: &str, v: &mut Violations) -> Option<PolicySpec> {
        let f = |n: &str| format!("{prefix}{n}");
        let name = self.name.trim().to_owned();
        v.check(validate::optional_line(&f("name"), &name, 200));
        let purpose = self.purpose.trim().to_owned();
        if !purpose.is_empty() {
            v.check(purpose_key(&f("purpose"), &purpose));
        }
        let field = self.field.trim().to_owned();
        v.check(validate::optional_line(&f("field"), &field, 100));
        if self.category.is_none() && purpose.is_empty() {
            v.add(
                f("category"),
                "at least one of category and purpose is required",
            );
        }
        let period = if self.period.trim().is_empty() {
            v.add(f("period"), "is required");
            None
        } else {
            v.check(
                Period::parse(self.period.trim()).map_err(|e| FieldViolation::new(f("period"), e)),
            )
        };
        if self.anchor.is_none() {
            v.add(f("anchor"), "is required");
        }
        if self.anchor == Some(Anchor::ConsentWithdrawn) && purpose.is_empty() {
            v.add(f("purpose"), "is required with anchor CONSENT_WITHDRAWN");
        }
        if self.action.is_none() {
            v.add(f("action"), "is required");
        }
        let legal_reference = self.legal_reference.trim().to_owned();
        v.check(validate::line(&f("legal_reference"), &legal_reference, 500));
        Some(PolicySpec {
            name,
            category: self.category,
            purpose: (!purpose.is_empty()).then_some(purpose),
            field: (!field.is_empty()).then_some(field),
            period: period?,
            anchor: self.anchor?,
            action: self.action?,
            legal_reference,
            legal_duty: self.legal_duty,
        })
    }
}

/// A stored retention policy.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Policy {
    /// Owning tenant.
    pub tenant_id: String,
    /// Id (UUID).
    pub policy_id: String,
    /// Definition.
    pub spec: PolicySpec,
    /// Created.
    pub create_time: DateTime<Utc>,
    /// Last changed.
    pub update_time: DateTime<Utc>,
}

impl Policy {
    /// The name for messages: the display name, or the legal reference.
    pub fn label(&self) -> &str {
        if self.spec.name.is_empty() {
            &self.spec.legal_reference
        } else {
            &self.spec.name
        }
    }
}

/// A legal hold.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Hold {
    /// Owning tenant.
    pub tenant_id: String,
    /// Id (UUID).
    pub hold_id: String,
    /// What it covers.
    pub scope: HoldScope,
    /// The held subject (scope SUBJECT).
    pub subject_id: Option<String>,
    /// Why (no personal data).
    pub reason: String,
    /// When it ends by itself.
    pub end_time: Option<DateTime<Utc>>,
    /// Who placed it.
    pub placed_by: String,
    /// When it was placed.
    pub create_time: DateTime<Utc>,
    /// When it was released.
    pub release_time: Option<DateTime<Utc>>,
    /// Who released it.
    pub released_by: String,
    /// Why it was released.
    pub release_reason: String,
}

impl Hold {
    /// Status at `now`.
    pub fn status(&self, now: DateTime<Utc>) -> HoldStatus {
        if self.release_time.is_some() {
            HoldStatus::Released
        } else if self.end_time.is_some_and(|e| e <= now) {
            HoldStatus::Expired
        } else {
            HoldStatus::Active
        }
    }

    /// Whether it is in force at `now`.
    pub fn is_active(&self, now: DateTime<Utc>) -> bool {
        self.status(now) == HoldStatus::Active
    }
}

/// PlaceHold input, validated into a [`Hold`] by the use case.
#[derive(Debug, Clone, Default)]
pub struct HoldInput {
    /// Scope.
    pub scope: Option<HoldScope>,
    /// Subject (scope SUBJECT).
    pub subject_id: String,
    /// Reason.
    pub reason: String,
    /// End.
    pub end_time: Option<DateTime<Utc>>,
}

impl HoldInput {
    /// Validates at `now`; returns (scope, subject, reason).
    pub fn validate(
        &self,
        now: DateTime<Utc>,
    ) -> Result<(HoldScope, Option<String>, String), vern_kit::ApiError> {
        let mut v = Violations::new();
        let subject = match self.scope {
            None => {
                v.add("scope", "is required");
                None
            }
            Some(HoldScope::Subject) => {
                if self.subject_id.is_empty() {
                    v.add("subject_id", "is required for HOLD_SCOPE_SUBJECT");
                    None
                } else {
                    v.check(uuid("subject_id", &self.subject_id))
                }
            }
            Some(HoldScope::Tenant) => {
                if !self.subject_id.is_empty() {
                    v.add("subject_id", "must be empty for HOLD_SCOPE_TENANT");
                }
                None
            }
        };
        let reason = self.reason.trim().to_owned();
        v.check(validate::text("reason", &reason, 1000));
        if self.end_time.is_some_and(|e| e <= now) {
            v.add("end_time", "must be in the future");
        }
        v.finish()?;
        let scope = self
            .scope
            .ok_or_else(|| vern_kit::ApiError::invalid("scope", "is required"))?;
        Ok((scope, subject, reason))
    }
}

/// One record of a subject, as Evaluate sees it (metadata only, no value).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RecordInfo {
    /// Record id.
    pub record_id: String,
    /// Category.
    pub category: Option<DataCategory>,
    /// Field name.
    pub field: String,
    /// Purpose keys.
    pub purposes: Vec<String>,
    /// When collected.
    pub collected_at: DateTime<Utc>,
    /// Kept, restricted, after an erasure.
    pub restricted: bool,
    /// For a restricted record: when its duty ends.
    pub retain_until: Option<DateTime<Utc>>,
    /// For a restricted record: why it is kept.
    pub legal_reference: String,
}

/// What Evaluate knows about the subject besides its records.
#[derive(Debug, Clone, Default)]
pub struct SubjectFacts {
    /// When the relationship ended, if it has.
    pub relationship_end: Option<DateTime<Utc>>,
    /// Purpose → when consent was withdrawn or objected to (current state only).
    pub withdrawn: std::collections::HashMap<String, DateTime<Utc>>,
}

/// Whether `p` matches a record of `category`, `field` and `purposes`.
pub fn matches(
    p: &PolicySpec,
    category: Option<DataCategory>,
    field: &str,
    purposes: &[String],
) -> bool {
    p.category.is_none_or(|c| Some(c) == category)
        && p.field.as_deref().is_none_or(|f| f == field)
        && p.purpose
            .as_deref()
            .is_none_or(|k| purposes.iter().any(|x| x == k))
}

/// When `p`'s period starts for a record; `None` when it has not started (ongoing
/// relationship, consent not withdrawn).
pub fn anchor_time(
    p: &PolicySpec,
    collected_at: DateTime<Utc>,
    facts: &SubjectFacts,
) -> Option<DateTime<Utc>> {
    match p.anchor {
        Anchor::CollectedAt => Some(collected_at),
        Anchor::EndOfFinancialYear => end_of_financial_year(collected_at),
        Anchor::EndOfRelationship => facts.relationship_end,
        Anchor::ConsentWithdrawn => p
            .purpose
            .as_ref()
            .and_then(|k| facts.withdrawn.get(k).copied()),
    }
}

/// When `p`'s period ends for a record; `None` when open-ended.
pub fn expire_time(
    p: &PolicySpec,
    collected_at: DateTime<Utc>,
    facts: &SubjectFacts,
) -> Option<DateTime<Utc>> {
    anchor_time(p, collected_at, facts).and_then(|a| p.period.add_to(a))
}

/// Evaluate's decision for one record.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Decision {
    /// The record.
    pub record_id: String,
    /// Keep or may go.
    pub disposition: Disposition,
    /// Until when (see the API's RetentionDecision.retain_until_time).
    pub retain_until: Option<DateTime<Utc>>,
    /// The deciding policy.
    pub policy_id: Option<String>,
    /// The deciding reference.
    pub legal_reference: String,
    /// The deciding hold.
    pub hold_id: Option<String>,
    /// The deciding policy's action.
    pub action: Option<Action>,
    /// Why, readable; no personal data.
    pub reason: String,
}

fn day(t: DateTime<Utc>) -> String {
    t.format("%Y-%m-%d").to_string()
}

/// Orders ends so that an open end (`None`) is the latest.
fn later(a: Option<DateTime<Utc>>, b: Option<DateTime<Utc>>) -> bool {
    match (a, b) {
        (None, None) => false,
        (None, Some(_)) => true,
        (Some(_), None) => false,
        (Some(x), Some(y)) => x > y,
    }
}

/// Decides for one record (see the module rules). `holds` are the active holds that
/// affect the subject.
pub fn decide(
    record: &RecordInfo,
    policies: &[Policy],
    holds: &[Hold],
    facts: &SubjectFacts,
    now: DateTime<Utc>,
) -> Decision {
    let mut d = Decision {
        record_id: record.record_id.clone(),
        disposition: Disposition::MayErase,
        retain_until: None,
        policy_id: None,
        legal_reference: String::new(),
        hold_id: None,
        action: None,
        reason: String::new(),
    };
    // Holds first: an open-ended hold decides over one with an end; else the latest end.
    let mut best_hold: Option<&Hold> = None;
    for h in holds {
        if best_hold.is_none_or(|b| later(h.end_time, b.end_time)) {
            best_hold = Some(h);
        }
    }
    if let Some(h) = best_hold {
        d.disposition = Disposition::Held;
        d.retain_until = h.end_time;
        d.hold_id = Some(h.hold_id.clone());
        d.legal_reference = format!("legal hold {}", h.hold_id);
        d.reason = match h.end_time {
            Some(e) => format!("legal hold until {}", day(e)),
            None => "legal hold until released".into(),
        };
        return d;
    }
    let matching: Vec<(&Policy, Option<DateTime<Utc>>)> = policies
        .iter()
        .filter(|p| matches(&p.spec, record.category, &record.field, &record.purposes))
        .map(|p| (p, expire_time(&p.spec, record.collected_at, facts)))
        .collect();
    // Duties still running (or not yet started).
    let mut duty: Option<(&Policy, Option<DateTime<Utc>>)> = None;
    for (p, end) in &matching {
        if p.spec.legal_duty
            && end.is_none_or(|e| e > now)
            && duty.is_none_or(|(_, best)| later(*end, best))
        {
            duty = Some((p, *end));
        }
    }
    let erasure_duty = (record.restricted && record.retain_until.is_some_and(|t| t > now))
        .then_some(record.retain_until);
    if let Some(until) = erasure_duty
        && duty.is_none_or(|(_, best)| later(until, best))
    {
        d.disposition = Disposition::MustKeep;
        d.retain_until = until;
        d.legal_reference = record.legal_reference.clone();
        d.reason = format!(
            "kept after erasure until {}",
            until.map(day).unwrap_or_default()
        );
        return d;
    }
    if let Some((p, end)) = duty {
        let s = &p.spec;
        d.disposition = Disposition::MustKeep;
        d.retain_until = end;
        d.policy_id = Some(p.policy_id.clone());
        d.legal_reference = s.legal_reference.clone();
        d.action = Some(s.action);
        d.reason = match end {
            Some(e) => format!(
                "{} from {} ends {} ({})",
                s.period,
                s.anchor.as_str(),
                day(e),
                p.label()
            ),
            None => format!(
                "{} from {}, which has not occurred yet ({})",
                s.period,
                s.anchor.as_str(),
                p.label()
            ),
        };
        return d;
    }
    // Expired under some policy: the earliest end is the one a sweep acts on.
    let mut expired: Option<(&Policy, DateTime<Utc>)> = None;
    for (p, end) in &matching {
        if let Some(e) = end
            && *e <= now
            && expired.is_none_or(|(_, best)| *e < best)
        {
            expired = Some((p, *e));
        }
    }
    if let Some((p, e)) = expired {
        let s = &p.spec;
        d.disposition = Disposition::Expired;
        d.retain_until = Some(e);
        d.policy_id = Some(p.policy_id.clone());
        d.legal_reference = s.legal_reference.clone();
        d.action = Some(s.action);
        d.reason = format!(
            "{} from {} ended {} ({})",
            s.period,
            s.anchor.as_str(),
            day(e),
            p.label()
        );
        return d;
    }
    if record.restricted && record.retain_until.is_some() {
        // Kept after an erasure and its duty has ended: the sweep removes it.
        d.disposition = Disposition::Expired;
        d.retain_until = record.retain_until;
        d.legal_reference = record.legal_reference.clone();
        d.reason = "kept after erasure; the retention duty has ended".into();
        return d;
    }
    let mut longest: Option<(&Policy, Option<DateTime<Utc>>)> = None;
    for (p, end) in &matching {
        if longest.is_none_or(|(_, best)| later(*end, best)) {
            longest = Some((p, *end));
        }
    }
    match longest {
        Some((p, end)) => {
            let s = &p.spec;
            d.retain_until = end;
            d.policy_id = Some(p.policy_id.clone());
            d.legal_reference = s.legal_reference.clone();
            d.action = Some(s.action);
            d.reason = match end {
                Some(e) => format!(
                    "no duty to keep; at most {} from {}, until {} ({})",
                    s.period,
                    s.anchor.as_str(),
                    day(e),
                    p.label()
                ),
                None => format!(
                    "no duty to keep; at most {} from {}, which has not occurred yet ({})",
                    s.period,
                    s.anchor.as_str(),
                    p.label()
                ),
            };
        }
        None => d.reason = "no retention policy applies".into(),
    }
    d
}

/// Overall result of Evaluate: whether anything is kept and until when (`None` when
/// nothing is kept or a kept record is open-ended).
pub fn overall(decisions: &[Decision]) -> (bool, Option<DateTime<Utc>>) {
    let kept: Vec<&Decision> = decisions
        .iter()
        .filter(|d| matches!(d.disposition, Disposition::MustKeep | Disposition::Held))
        .collect();
    if kept.is_empty() {
        return (false, None);
    }
    if kept.iter().any(|d| d.retain_until.is_none()) {
        return (true, None);
    }
    (true, kept.iter().filter_map(|d| d.retain_until).max())
}

/// When a policy's records expire, as purge filters: records collected before
/// `older_than`, of subjects whose relationship ended before `relationship_end_before`,
/// of subjects who withdrew consent for `withdrawn.0` before `withdrawn.1`. Every set
/// part must hold.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Expiry {
    /// collected_at strictly before.
    pub older_than: Option<DateTime<Utc>>,
    /// relationship_end_time strictly before.
    pub relationship_end_before: Option<DateTime<Utc>>,
    /// (purpose, consent withdrawn or objected before).
    pub withdrawn: Vec<(String, DateTime<Utc>)>,
}

impl Expiry {
    /// Both conditions at once.
    pub fn and(mut self, other: &Expiry) -> Expiry {
        self.older_than = min_opt(self.older_than, other.older_than);
        self.relationship_end_before =
            min_opt(self.relationship_end_before, other.relationship_end_before);
        for w in &other.withdrawn {
            if !self.withdrawn.contains(w) {
                self.withdrawn.push(w.clone());
            }
        }
        self
    }
}

fn min_opt(a: Option<DateTime<Utc>>, b: Option<DateTime<Utc>>) -> Option<DateTime<Utc>> {
    match (a, b) {
        (Some(x), Some(y)) => Some(x.min(y)),
        (x, None) => x,
        (None, y) => y,
    }
}

/// The expiry condition of `p` at `now` (see the module rules). END_OF_FINANCIAL_YEAR:
/// a record collected in year Y expires at 1 Jan Y+1 + period, i.e. when it was
/// collected before 1 Jan of the year of `now - period`.
pub fn expiry(p: &PolicySpec, now: DateTime<Utc>) -> Option<Expiry> {
    let cut = p.period.sub_from(now)?;
    Some(match p.anchor {
        Anchor::CollectedAt => Expiry {
            older_than: Some(cut),
            ..Default::default()
        },
        Anchor::EndOfFinancialYear => Expiry {
            older_than: Some(start_of_year(cut.year())?),
            ..Default::default()
        },
        Anchor::EndOfRelationship => Expiry {
            relationship_end_before: Some(cut),
            ..Default::default()
        },
        Anchor::ConsentWithdrawn => Expiry {
            withdrawn: vec![(p.purpose.clone()?, cut)],
            ..Default::default()
        },
    })
}

/// Whether a record could match both `a` and `b`: their categories and fields do not
/// contradict each other. Purposes never do: a record may serve several purposes.
pub fn overlaps(a: &PolicySpec, b: &PolicySpec) -> bool {
    let category_clash = matches!((a.category, b.category), (Some(x), Some(y)) if x != y);
    let field_clash =
        matches!((a.field.as_deref(), b.field.as_deref()), (Some(x), Some(y)) if x != y);
    !(category_clash || field_clash)
}

/// The legal-duty policies (other than `p`) whose expiry a sweep of `p` must also wait
/// for.
pub fn guarding_duties<'a>(p: &Policy, all: &'a [Policy]) -> Vec<&'a Policy> {
    all.iter()
        .filter(|d| d.policy_id != p.policy_id && d.spec.legal_duty && overlaps(&p.spec, &d.spec))
        .collect()
}

/// The human reason of a sweep item: when its period ended, or (anchors the record
/// alone does not tell) the cut-off its anchor lay before.
pub fn sweep_reason(
    p: &Policy,
    expire: Option<DateTime<Utc>>,
    cutoff: Option<DateTime<Utc>>,
) -> String {
    let s = &p.spec;
    match (expire, cutoff) {
        (Some(e), _) => format!(
            "{} from {} ended {} ({})",
            s.period,
            s.anchor.as_str(),
            day(e),
            p.label()
        ),
        (None, Some(c)) => format!(
            "{} from {} before {} has ended ({})",
            s.period,
            s.anchor.as_str(),
            day(c),
            p.label()
        ),
        (None, None) => format!(
            "{} from {} has ended ({})",
            s.period,
            s.anchor.as_str(),
            p.label()
        ),
    }
}

/// When a swept record's period ended, where the record alone tells (collected-based
/// anchors).
pub fn item_expire_time(p: &PolicySpec, collected_at: DateTime<Utc>) -> Option<DateTime<Utc>> {
    match p.anchor {
        Anchor::CollectedAt | Anchor::EndOfFinancialYear => {
            expire_time(p, collected_at, &SubjectFacts::default())
        }
        Anchor::EndOfRelationship | Anchor::ConsentWithdrawn => None,
    }
}

/// Counts of one policy in one sweep.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, Default)]
pub struct PolicyResult {
    /// The policy (empty for records kept after an erasure whose duty ended).
    pub policy_id: String,
    /// Its legal reference at the time.
    pub legal_reference: String,
    /// Its action.
    pub action: Option<Action>,
    /// Records whose period had passed.
    pub matched_count: i64,
    /// Records deleted.
    pub deleted_count: i64,
    /// Records anonymised.
    pub anonymised_count: i64,
    /// Expired records kept (hold or longer duty).
    pub kept_count: i64,
    /// Why it failed; no personal data.
    pub error: String,
}

/// One record a sweep removes or would remove.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SweepItem {
    /// The policy.
    pub policy_id: String,
    /// Subject.
    pub subject_id: String,
    /// Record.
    pub record_id: String,
    /// Category.
    pub category: Option<DataCategory>,
    /// Field.
    pub field: String,
    /// Purposes.
    pub purposes: Vec<String>,
    /// Collected.
    pub collected_at: DateTime<Utc>,
    /// When its period ended, if known per record.
    pub expire_time: Option<DateTime<Utc>>,
    /// What happens.
    pub action: Action,
    /// Why.
    pub reason: String,
}

/// One recorded sweep.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SweepRun {
    /// Tenant.
    pub tenant_id: String,
    /// Id.
    pub sweep_run_id: String,
    /// Dry run.
    pub dry_run: bool,
    /// Trigger.
    pub trigger: SweepTrigger,
    /// Status.
    pub status: SweepStatus,
    /// Caller (empty for scheduled runs).
    pub requested_by: String,
    /// Start.
    pub start_time: DateTime<Utc>,
    /// End.
    pub end_time: Option<DateTime<Utc>>,
    /// Counts per policy.
    pub policy_results: Vec<PolicyResult>,
    /// Items (dry runs).
    pub items: Vec<SweepItem>,
    /// Items cut at max_items.
    pub items_truncated: bool,
    /// Subjects skipped for a legal hold.
    pub held_subject_count: i64,
    /// Why it failed.
    pub error: String,
}

/// The status of a finished run from its per-policy results.
pub fn run_status(results: &[PolicyResult]) -> SweepStatus {
    let failed = results.iter().filter(|r| !r.error.is_empty()).count();
    if failed == 0 {
        SweepStatus::Succeeded
    } else if failed == results.len() {
        SweepStatus::Failed
    } else {
        SweepStatus::Partial
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn t(s: &str) -> DateTime<Utc> {
        DateTime::parse_from_rfc3339(s)
            .expect("time")
            .with_timezone(&Utc)
    }

    fn spec(period: &str, anchor: Anchor, duty: bool) -> PolicySpec {
        PolicySpec {
            name: "test".into(),
            category: Some(DataCategory::Contact),
            purpose: None,
            field: None,
            period: Period::parse(period).expect("period"),
            anchor,
            action: Action::Delete,
            legal_reference: "ref".into(),
            legal_duty: duty,
        }
    }

    fn policy(id: &str, s: PolicySpec) -> Policy {
        Policy {
            tenant_id: "t".into(),
            policy_id: id.into(),
            spec: s,
            create_time: t("2020-01-01T00:00:00Z"),
            update_time: t("2020-01-01T00:00:00Z"),
        }
    }

    fn record(
        category: DataCategory,
        field: &str,
        purposes: &[&str],
        collected: &str,
    ) -> RecordInfo {
        RecordInfo {
            record_id: format!("r-{field}"),
            category: Some(category),
            field: field.into(),
            purposes: purposes.iter().map(|s| s.to_string()).collect(),
            collected_at: t(collected),
            restricted: false,
            retain_until: None,
            legal_reference: String::new(),
        }
    }

    #[test]
    fn periods_parse_and_print() {
        for (s, p) in [
            ("P5Y", (5, 0, 0, 0)),
            ("P3Y6M", (3, 6, 0, 0)),
            ("P1Y", (1, 0, 0, 0)),
            ("P30D", (0, 0, 0, 30)),
            ("P2W", (0, 0, 2, 0)),
            ("P1Y2M3W4D", (1, 2, 3, 4)),
            ("P18M", (0, 18, 0, 0)),
        ] {
            let parsed = Period::parse(s).expect(s);
            assert_eq!(
                (parsed.years, parsed.months, parsed.weeks, parsed.days),
                p,
                "{s}"
            );
            assert_eq!(parsed.to_string(), s);
        }
        for bad in [
            "",
            "P",
            "5Y",
            "P5",
            "PY",
            "P1M1Y",
            "P1Y1Y",
            "PT1H",
            "P1YT1H",
            "P-1Y",
            "P1.5Y",
            "P0D",
            "P0Y0M",
            "p5y",
            "P1000Y",
            "P 1Y",
            "P1234567D",
        ] {
            assert!(Period::parse(bad).is_err(), "{bad:?} must be rejected");
        }
    }

    #[test]
    fn calendar_arithmetic_clamps_to_month_end() {
        let p = |s: &str| Period::parse(s).expect("period");
        assert_eq!(
            p("P1M").add_to(t("2025-01-31T10:00:00Z")),
            Some(t("2025-02-28T10:00:00Z"))
        );
        assert_eq!(
            p("P1M").add_to(t("2024-01-31T10:00:00Z")),
            Some(t("2024-02-29T10:00:00Z")),
            "leap year"
        );
        assert_eq!(
            p("P1Y").add_to(t("2024-02-29T00:00:00Z")),
            Some(t("2025-02-28T00:00:00Z"))
        );
        assert_eq!(
            p("P3Y6M").add_to(t("2021-08-31T00:00:00Z")),
            Some(t("2025-02-28T00:00:00Z"))
        );
        assert_eq!(
            p("P30D").add_to(t("2025-02-15T12:00:00Z")),
            Some(t("2025-03-17T12:00:00Z"))
        );
        assert_eq!(
            p("P1M2W").add_to(t("2025-01-31T00:00:00Z")),
            Some(t("2025-03-14T00:00:00Z")),
            "months first (28 Feb), then days"
        );
        assert_eq!(
            p("P1M").sub_from(t("2025-03-31T00:00:00Z")),
            Some(t("2025-02-28T00:00:00Z"))
        );
        assert_eq!(
            p("P5Y").sub_from(t("2026-11-23T00:00:00Z")),
            Some(t("2021-11-23T00:00:00Z"))
        );
    }

    #[test]
    fn subtracting_then_adding_never_overshoots() {
        let periods = ["P1M", "P1Y", "P3Y6M", "P1M2W", "P30D", "P1Y1M1D", "P2M"];
        let mut now = t("2023-12-25T13:00:00Z");
        for _ in 0..500 {
            for s in periods {
                let p = Period::parse(s).expect("period");
                let cut = p.sub_from(now).expect("sub");
                assert!(p.add_to(cut).expect("add") <= now, "{s} at {now}");
            }
            now += chrono::Duration::days(1);
        }
    }

    #[test]
    fn financial_year_anchor() {
        assert_eq!(
            end_of_financial_year(t("2025-03-01T09:00:00Z")),
            Some(t("2026-01-01T00:00:00Z"))
        );
        assert_eq!(
            end_of_financial_year(t("2025-12-31T23:59:59Z")),
            Some(t("2026-01-01T00:00:00Z"))
        );
        let s = spec("P5Y", Anchor::EndOfFinancialYear, true);
        assert_eq!(
            expire_time(&s, t("2025-03-01T09:00:00Z"), &SubjectFacts::default()),
            Some(t("2031-01-01T00:00:00Z"))
        );
        // Sweep filter: collected before 1 Jan of the year of now - P5Y.
        let e = expiry(&s, t("2031-06-01T00:00:00Z")).expect("expiry");
        assert_eq!(e.older_than, Some(t("2026-01-01T00:00:00Z")));
        // A record of 2025 expired 2031-01-01: swept in June 2031 (collected < 2026),
        // one of 2026 not.
        let e = expiry(&s, t("2030-12-31T23:00:00Z")).expect("expiry");
        assert_eq!(e.older_than, Some(t("2025-01-01T00:00:00Z")));
    }

    #[test]
    fn sweep_filter_agrees_with_evaluate() {
        // For every collected day and sweep day: a record is swept only if Evaluate
        // says its period has ended.
        for (period, anchor) in [
            ("P1Y", Anchor::CollectedAt),
            ("P1M", Anchor::CollectedAt),
            ("P3Y6M", Anchor::EndOfFinancialYear),
            ("P5Y", Anchor::EndOfFinancialYear),
        ] {
            let s = spec(period, anchor, false);
            let mut collected = t("2020-01-15T08:00:00Z");
            for _ in 0..120 {
                let mut now = collected;
                for _ in 0..80 {
                    now += chrono::Duration::days(29);
                    let e = expiry(&s, now).expect("expiry");
                    let swept = collected < e.older_than.expect("cut");
                    let end = expire_time(&s, collected, &SubjectFacts::default()).expect("end");
                    if swept {
                        assert!(end <= now, "{period} {anchor:?}: swept before its end");
                    }
                    if end + chrono::Duration::days(31) <= now {
                        assert!(
                            swept,
                            "{period} {anchor:?}: not swept a month after its end"
                        );
                    }
                }
                collected += chrono::Duration::days(17);
            }
        }
    }

    #[test]
    fn matching_by_category_purpose_and_field() {
        let mut s = spec("P1Y", Anchor::CollectedAt, false);
        s.field = Some("email-correspondence".into());
        let purposes = vec!["correspondence".to_string()];
        assert!(matches(
            &s,
            Some(DataCategory::Contact),
            "email-correspondence",
            &purposes
        ));
        assert!(!matches(&s, Some(DataCategory::Contact), "name", &purposes));
        assert!(!matches(
            &s,
            Some(DataCategory::Financial),
            "email-correspondence",
            &purposes
        ));
        s.category = None;
        s.purpose = Some("bookkeeping".into());
        assert!(!matches(
            &s,
            Some(DataCategory::Contact),
            "email-correspondence",
            &purposes
        ));
        assert!(matches(
            &s,
            Some(DataCategory::Contact),
            "email-correspondence",
            &["x".into(), "bookkeeping".into()]
        ));
    }

    #[test]
    fn evaluate_expired_must_keep_and_may_erase() {
        let now = t("2026-11-23T12:00:00Z");
        let mut mail = spec("P1Y", Anchor::CollectedAt, false);
        mail.category = Some(DataCategory::Communications);
        mail.field = Some("email-correspondence".into());
        let mut books = spec("P5Y", Anchor::EndOfFinancialYear, true);
        books.category = Some(DataCategory::Financial);
        books.purpose = Some("bookkeeping".into());
        books.legal_reference = "bokføringsloven § 13".into();
        let policies = vec![policy("mail", mail), policy("books", books)];
        let facts = SubjectFacts::default();
        let old_mail = record(
            DataCategory::Communications,
            "email-correspondence",
            &["correspondence"],
            "2024-11-01T10:00:00Z",
        );
        let d = decide(&old_mail, &policies, &[], &facts, now);
        assert_eq!(d.disposition, Disposition::Expired);
        assert_eq!(d.policy_id.as_deref(), Some("mail"));
        assert_eq!(d.retain_until, Some(t("2025-11-01T10:00:00Z")));
        assert!(
            d.reason.contains("P1Y from COLLECTED_AT ended 2025-11-01"),
            "{}",
            d.reason
        );

        let invoice = record(
            DataCategory::Financial,
            "invoice",
            &["bookkeeping"],
            "2026-03-01T10:00:00Z",
        );
        let d = decide(&invoice, &policies, &[], &facts, now);
        assert_eq!(d.disposition, Disposition::MustKeep);
        assert_eq!(d.retain_until, Some(t("2032-01-01T00:00:00Z")));
        assert_eq!(d.legal_reference, "bokføringsloven § 13");
        assert_eq!(d.policy_id.as_deref(), Some("books"));

        let new_mail = record(
            DataCategory::Communications,
            "email-correspondence",
            &["correspondence"],
            "2026-10-01T10:00:00Z",
        );
        let d = decide(&new_mail, &policies, &[], &facts, now);
        assert_eq!(d.disposition, Disposition::MayErase);
        assert_eq!(d.retain_until, Some(t("2027-10-01T10:00:00Z")));

        let other = record(
            DataCategory::Preferences,
            "topics",
            &["newsletter"],
            "2026-10-01T10:00:00Z",
        );
        let d = decide(&other, &policies, &[], &facts, now);
        assert_eq!(d.disposition, Disposition::MayErase);
        assert_eq!(d.retain_until, None);
        assert_eq!(d.policy_id, None);

        let decisions: Vec<Decision> = [old_mail, invoice, new_mail, other]
            .iter()
            .map(|r| decide(r, &policies, &[], &facts, now))
            .collect();
        assert_eq!(overall(&decisions), (true, Some(t("2032-01-01T00:00:00Z"))));
    }

    #[test]
    fn the_longest_duty_decides_and_duty_beats_expired_maximum() {
        let now = t("2026-11-23T12:00:00Z");
        let mut short = spec("P3Y6M", Anchor::EndOfFinancialYear, true);
        short.legal_reference = "bokføringsloven § 13 (2)".into();
        let long = spec("P5Y", Anchor::EndOfFinancialYear, true);
        let max = spec("P1Y", Anchor::CollectedAt, false);
        let policies = vec![
            policy("short", short),
            policy("long", long),
            policy("max", max),
        ];
        let r = record(
            DataCategory::Contact,
            "invoice",
            &[],
            "2024-05-05T00:00:00Z",
        );
        let d = decide(&r, &policies, &[], &SubjectFacts::default(), now);
        assert_eq!(d.disposition, Disposition::MustKeep);
        assert_eq!(d.policy_id.as_deref(), Some("long"));
        assert_eq!(d.retain_until, Some(t("2030-01-01T00:00:00Z")));
    }

    #[test]
    fn open_ended_anchors() {
        let now = t("2026-11-23T12:00:00Z");
        let duty = spec("P3Y", Anchor::EndOfRelationship, true);
        let policies = vec![policy("rel", duty)];
        let r = record(DataCategory::Contact, "name", &[], "2020-01-01T00:00:00Z");
        // Ongoing relationship: kept, open-ended.
        let d = decide(&r, &policies, &[], &SubjectFacts::default(), now);
        assert_eq!(d.disposition, Disposition::MustKeep);
        assert_eq!(d.retain_until, None);
        assert_eq!(overall(&[d]), (true, None));
        // Ended 2025-06-30: kept until 2028-06-30.
        let facts = SubjectFacts {
            relationship_end: Some(t("2025-06-30T00:00:00Z")),
            ..Default::default()
        };
        let d = decide(&r, &policies, &[], &facts, now);
        assert_eq!(d.retain_until, Some(t("2028-06-30T00:00:00Z")));
        // Ended long ago: expired.
        let facts = SubjectFacts {
            relationship_end: Some(t("2022-06-30T00:00:00Z")),
            ..Default::default()
        };
        assert_eq!(
            decide(&r, &policies, &[], &facts, now).disposition,
            Disposition::Expired
        );

        let mut cw = spec("P30D", Anchor::ConsentWithdrawn, false);
        cw.category = None;
        cw.purpose = Some("newsletter".into());
        let policies = vec![policy("cw", cw)];
        let r = record(
            DataCategory::Contact,
            "email",
            &["newsletter"],
            "2020-01-01T00:00:00Z",
        );
        assert_eq!(
            decide(&r, &policies, &[], &SubjectFacts::default(), now).disposition,
            Disposition::MayErase
        );
        let mut facts = SubjectFacts::default();
        facts
            .withdrawn
            .insert("newsletter".into(), t("2026-10-01T00:00:00Z"));
        let d = decide(&r, &policies, &[], &facts, now);
        assert_eq!(d.disposition, Disposition::Expired);
        assert_eq!(d.retain_until, Some(t("2026-10-31T00:00:00Z")));
    }

    #[test]
    fn holds_decide_first() {
        let now = t("2026-11-23T12:00:00Z");
        let policies = vec![policy("max", spec("P1Y", Anchor::CollectedAt, false))];
        let r = record(DataCategory::Contact, "name", &[], "2020-01-01T00:00:00Z");
        let hold = |id: &str, end: Option<&str>| Hold {
            tenant_id: "t".into(),
            hold_id: id.into(),
            scope: HoldScope::Subject,
            subject_id: Some("s".into()),
            reason: "case 1".into(),
            end_time: end.map(t),
            placed_by: "x".into(),
            create_time: now,
            release_time: None,
            released_by: String::new(),
            release_reason: String::new(),
        };
        let holds = vec![hold("a", Some("2027-01-01T00:00:00Z")), hold("b", None)];
        let d = decide(&r, &policies, &holds, &SubjectFacts::default(), now);
        assert_eq!(d.disposition, Disposition::Held);
        assert_eq!(
            d.hold_id.as_deref(),
            Some("b"),
            "the open-ended hold decides"
        );
        assert_eq!(d.retain_until, None);
        let d = decide(&r, &policies, &holds[..1], &SubjectFacts::default(), now);
        assert_eq!(d.retain_until, Some(t("2027-01-01T00:00:00Z")));
        // Status derivation.
        let mut h = hold("c", Some("2026-11-23T12:00:00Z"));
        assert_eq!(h.status(now), HoldStatus::Expired);
        h.end_time = None;
        assert_eq!(h.status(now), HoldStatus::Active);
        h.release_time = Some(now);
        assert_eq!(h.status(now), HoldStatus::Released);
    }

    #[test]
    fn records_kept_after_erasure() {
        let now = t("2026-11-23T12:00:00Z");
        let mut r = record(
            DataCategory::Financial,
            "invoice",
            &["bookkeeping"],
            "2024-01-01T00:00:00Z",
        );
        r.restricted = true;
        r.retain_until = Some(t("2030-01-01T00:00:00Z"));
        r.legal_reference = "bokføringsloven § 13".into();
        let d = decide(&r, &[], &[], &SubjectFacts::default(), now);
        assert_eq!(d.disposition, Disposition::MustKeep);
        assert_eq!(d.retain_until, Some(t("2030-01-01T00:00:00Z")));
        r.retain_until = Some(t("2026-01-01T00:00:00Z"));
        assert_eq!(
            decide(&r, &[], &[], &SubjectFacts::default(), now).disposition,
            Disposition::Expired
        );
    }

    #[test]
    fn duties_guard_overlapping_policies_only() {
        let mut mail = spec("P1Y", Anchor::CollectedAt, false);
        mail.category = Some(DataCategory::Communications);
        let mut books = spec("P5Y", Anchor::EndOfFinancialYear, true);
        books.category = Some(DataCategory::Financial);
        let mut any_books = spec("P5Y", Anchor::EndOfFinancialYear, true);
        any_books.category = None;
        any_books.purpose = Some("bookkeeping".into());
        let all = vec![
            policy("mail", mail),
            policy("books", books),
            policy("any", any_books),
        ];
        let guards: Vec<&str> = guarding_duties(&all[0], &all)
            .iter()
            .map(|p| p.policy_id.as_str())
            .collect();
        assert_eq!(guards, vec!["any"], "different categories never overlap");
        assert!(
            guarding_duties(&all[1], &all)
                .iter()
                .any(|p| p.policy_id == "any")
        );
        // ANDing the duty's expiry keeps the earlier cut-off.
        let now = t("2026-11-23T00:00:00Z");
        let e = expiry(&all[0].spec, now)
            .expect("e")
            .and(&expiry(&all[2].spec, now).expect("e"));
        assert_eq!(e.older_than, Some(t("2021-01-01T00:00:00Z")));
    }

    #[test]
    fn policy_validation_names_fields() {
        let mut v = Violations::new();
        let out = PolicyInput::default().validate("", &mut v);
        assert!(out.is_none());
        let err = v.finish().expect_err("invalid");
        let text = err.to_string();
        for f in ["category", "period", "anchor", "action", "legal_reference"] {
            assert!(text.contains(f), "{f} in {text}");
        }
        let mut v = Violations::new();
        let out = PolicyInput {
            purpose: "newsletter".into(),
            period: "P30D".into(),
            anchor: Some(Anchor::ConsentWithdrawn),
            action: Some(Action::Delete),
            legal_reference: "GDPR Art. 17(1)(b)".into(),
            ..Default::default()
        }
        .validate("", &mut v);
        assert!(v.is_empty());
        assert_eq!(out.expect("spec").period.days, 30);
        let mut v = Violations::new();
        PolicyInput {
            category: Some(DataCategory::Contact),
            period: "P1Y".into(),
            anchor: Some(Anchor::ConsentWithdrawn),
            action: Some(Action::Delete),
            legal_reference: "x".into(),
            ..Default::default()
        }
        .validate("policy.", &mut v);
        assert!(
            v.finish()
                .expect_err("needs purpose")
                .to_string()
                .contains("policy.purpose")
        );
    }

    #[test]
    fn hold_validation() {
        let now = t("2026-11-23T00:00:00Z");
        let ok = HoldInput {
            scope: Some(HoldScope::Subject),
            subject_id: "0190a5c8-0000-7000-8000-000000000001".into(),
            reason: "case 2026/17".into(),
            end_time: Some(t("2027-01-01T00:00:00Z")),
        };
        assert!(ok.validate(now).is_ok());
        let past = HoldInput {
            end_time: Some(t("2026-01-01T00:00:00Z")),
            ..ok.clone()
        };
        assert!(past.validate(now).is_err());
        let tenant_with_subject = HoldInput {
            scope: Some(HoldScope::Tenant),
            ..ok.clone()
        };
        assert!(tenant_with_subject.validate(now).is_err());
        let no_reason = HoldInput {
            reason: " ".into(),
            ..ok
        };
        assert!(no_reason.validate(now).is_err());
    }

    #[test]
    fn run_status_from_results() {
        let ok = PolicyResult::default();
        let bad = PolicyResult {
            error: "x".into(),
            ..Default::default()
        };
        assert_eq!(run_status(&[]), SweepStatus::Succeeded);
        assert_eq!(
            run_status(std::slice::from_ref(&ok)),
            SweepStatus::Succeeded
        );
        assert_eq!(run_status(&[ok, bad.clone()]), SweepStatus::Partial);
        assert_eq!(run_status(&[bad]), SweepStatus::Failed);
    }
}
