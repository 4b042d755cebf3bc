//! The consent rules: the current state of a (subject, purpose) derived from its
//! append-only events, and the Check decision of docs/design.md, "Domain". Pure: no I/O, no
//! database, no tonic.
//!
//! # Ordering of events
//!
//! An event's place in time is its `occur_time` (when the subject acted), not when it
//! was recorded: a paper form signed last week and entered today is older than a
//! withdrawal made on the web yesterday. Events with the same `occur_time` are ordered
//! by recording order (the later recorded wins). [`ConsentState::apply`] must therefore
//! be fed events in recording order.
//!
//! # Objections
//!
//! An OBJECT (Art. 21) stands until the subject's own later GRANT. A WITHDRAW does not
//! lift it: withdrawing consent is not agreeing to processing, and under LEGITIMATE_
//! INTERESTS, where consent is not the basis, a WITHDRAW after an OBJECT would
//! otherwise re-enable processing the subject objected to. This is why Check takes the
//! standing objection separately from the latest event.
//!
//! Which purposes an objection stops (Art. 21):
//! - **direct marketing**, whatever the purpose's basis (a newsletter sent on the basis
//!   of a customer contract included): absolute, Art. 21(2)–(3); no grounds override it;
//! - **PUBLIC_TASK and LEGITIMATE_INTERESTS** (Art. 6(1)(e), (f)): processing stops
//!   (Art. 21(1)) unless the controller demonstrates compelling legitimate grounds that
//!   override the subject's interests. A privacy officer records that decision for the
//!   standing objection ([`CompellingGrounds`]); a new objection needs a new decision;
//! - CONTRACT, LEGAL_OBLIGATION and VITAL_INTERESTS: Art. 21 gives no right to object;
//!   the objection is recorded (evidence) but does not change Check;
//! - CONSENT: the latest event decides (an OBJECT denies like a WITHDRAW).
//!
//! A GRANT after an OBJECT re-enables processing, also for direct marketing: it is the
//! subject's own newer choice, recorded with its evidence like any consent.

use chrono::{DateTime, TimeDelta, Utc};
use serde::{Deserialize, Serialize};
use vern_kit::error::Violations;

macro_rules! text_enum {
    ($(#[$m:meta])* $name:ident { $($(#[$vm:meta])* $v:ident = $s:literal),+ $(,)? }) => {
        $(#[$m])*
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
        pub enum $name { $($(#[$vm])* $v),+ }
        impl $name {
            /// The stored name (the proto enum value name).
            pub fn as_str(self) -> &'static str { match self { $(Self::$v => $s),+ } }
            /// Parses a stored name.
            pub fn parse(s: &str) -> Option<Self> { match s { $($s => Some(Self::$v),)+ _ => None } }
        }
    };
}

text_enum!(
    /// Art. 6(1) legal basis of a purpose.
    LegalBasis {
        /// (a) consent.
        Consent = "CONSENT",
        /// (b) performance of a contract.
        Contract = "CONTRACT",
        /// (c) a legal obligation.
        LegalObligation = "LEGAL_OBLIGATION",
        /// (d) vital interests.
        VitalInterests = "VITAL_INTERESTS",
        /// (e) a task in the public interest.
        PublicTask = "PUBLIC_TASK",
        /// (f) legitimate interests.
        LegitimateInterests = "LEGITIMATE_INTERESTS",
    }
);
text_enum!(
    /// A subject's state as consents knows it (its projection of the subjects service).
    SubjectStatus {
        /// Processing allowed per legal basis.
        Active = "ACTIVE",
        /// Processing restricted (Art. 18); every check denies.
        Restricted = "RESTRICTED",
        /// Erased; every check denies.
        Erased = "ERASED",
        /// No such subject in the tenant (never stored: the absence of a row).
        Unknown = "UNKNOWN",
    }
);
/// A subject's state change as the subjects service announces it (ApplySubjectStates).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SubjectChange {
    /// The subject.
    pub subject_id: String,
    /// Its new state (UNKNOWN: not given, refused).
    pub status: SubjectStatus,
    /// Monotonic per subject; a change not above the stored version is ignored.
    pub version: i64,
    /// When it changed.
    pub at: DateTime<Utc>,
    /// ACTIVE: the purposes restricted (Art. 18), the whole current set.
    pub restricted_purposes: Vec<String>,
}

impl SubjectChange {
    /// A change restricting no purpose.
    pub fn new(subject_id: &str, status: SubjectStatus, version: i64, at: DateTime<Utc>) -> Self {
        Self {
            subject_id: subject_id.to_owned(),
            status,
            version,
            at,
            restricted_purposes: vec![],
        }
    }
}

/// The subject's state as Check sees it for `purpose`: an ACTIVE subject whose
/// processing is restricted for that purpose (Art. 18(1), per purpose) reads as
/// RESTRICTED, so [`check`] denies SUBJECT_RESTRICTED for it and only for it.
pub fn status_for(
    status: SubjectStatus,
    restricted_purposes: &[String],
    purpose: &str,
) -> SubjectStatus {
    if status == SubjectStatus::Active && restricted_purposes.iter().any(|p| p == purpose) {
        SubjectStatus::Restricted
    } else {
        status
    }
}

text_enum!(
    /// What a consent event records.
    ConsentAction {
        /// The subject gives consent (Art. 6(1)(a), Art. 7).
        Grant = "GRANT",
        /// The subject withdraws consent (Art. 7(3)).
        Withdraw = "WITHDRAW",
        /// The subject objects to processing (Art. 21).
        Object = "OBJECT",
    }
);
text_enum!(
    /// Current consent status of a (subject, purpose).
    ConsentStatus {
        /// The latest event is a GRANT that has not expired.
        Granted = "GRANTED",
        /// The latest event is a WITHDRAW.
        Withdrawn = "WITHDRAWN",
        /// The latest event is an OBJECT.
        Objected = "OBJECTED",
        /// The latest event is a GRANT whose expiry has passed.
        Expired = "EXPIRED",
        /// No event recorded.
        NotRecorded = "NOT_RECORDED",
    }
);
text_enum!(
    /// Why Check allowed or denied (mirrors the proto enum `CheckReason`).
    Reason {
        /// Allowed: basis CONSENT and the latest event is a live GRANT.
        ConsentGranted = "CONSENT_GRANTED",
        /// Allowed: basis LEGITIMATE_INTERESTS and no standing objection.
        NoObjection = "NO_OBJECTION",
        /// Allowed: basis CONTRACT, LEGAL_OBLIGATION, VITAL_INTERESTS or PUBLIC_TASK and
        /// the subject is active (and, for PUBLIC_TASK, has not objected).
        BasisAllows = "BASIS_ALLOWS",
        /// Allowed although the subject objected: the controller recorded compelling
        /// legitimate grounds for this objection (Art. 21(1); never for direct marketing).
        CompellingGrounds = "COMPELLING_GROUNDS",
        /// Denied: basis CONSENT and no event recorded.
        NoConsent = "NO_CONSENT",
        /// Denied: basis CONSENT and the latest event is a WITHDRAW.
        ConsentWithdrawn = "CONSENT_WITHDRAWN",
        /// Denied: basis CONSENT and the latest GRANT has expired.
        ConsentExpired = "CONSENT_EXPIRED",
        /// Denied: the subject objected.
        SubjectObjected = "SUBJECT_OBJECTED",
        /// Denied: processing of the subject is restricted (Art. 18).
        SubjectRestricted = "SUBJECT_RESTRICTED",
        /// Denied: the subject has been erased.
        SubjectErased = "SUBJECT_ERASED",
        /// Denied: no such subject in the tenant.
        SubjectUnknown = "SUBJECT_UNKNOWN",
        /// Denied: no such purpose in the tenant.
        PurposeUnknown = "PURPOSE_UNKNOWN",
    }
);

/// The part of a purpose definition Check needs.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct PurposeRule {
    /// Art. 6(1) legal basis.
    pub legal_basis: LegalBasis,
    /// Whether the purpose is direct marketing (an objection is then absolute).
    pub direct_marketing: bool,
}

/// A privacy officer's decision that compelling legitimate grounds override one
/// objection (Art. 21(1)): it answers that objection only.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CompellingGrounds {
    /// The decision's id: the evidence an allowing Check names.
    pub decision_id: String,
    /// The OBJECT event it answers.
    pub objection_event_id: String,
}

/// A recorded compelling-grounds decision, as stored and answered.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct GroundsDecision {
    /// Owning tenant.
    pub tenant_id: String,
    /// Decision id (time-ordered UUID).
    pub decision_id: String,
    /// The subject.
    pub subject_id: String,
    /// Purpose key.
    pub purpose: String,
    /// The OBJECT event answered.
    pub objection_event_id: String,
    /// The controller's grounds: a statement about this subject's case, so personal
    /// data. Sealed under the subject's data key at rest and gone (`""`) once the
    /// subject is erased.
    pub reason: String,
    /// Who decided (token subject).
    pub decided_by: String,
    /// The caller's idempotency key.
    pub request_id: String,
    /// When.
    pub decide_time: DateTime<Utc>,
}

/// What an objection does to processing for a purpose (Art. 21), for fulfilment and
/// reports to say what really happened.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum ObjectionEffect {
    /// Processing stops for good (direct marketing, Art. 21(3)).
    StopsAbsolutely,
    /// Processing stops unless compelling legitimate grounds are recorded (Art. 21(1)).
    StopsUnlessCompellingGrounds,
    /// The basis carries no right to object (CONTRACT, LEGAL_OBLIGATION,
    /// VITAL_INTERESTS); processing continues on that basis.
    NoRightToObject,
    /// Basis CONSENT: the objection ends the consent like a withdrawal.
    EndsConsent,
}

/// The effect of an objection on a purpose.
pub fn objection_effect(purpose: &PurposeRule) -> ObjectionEffect {
    if purpose.direct_marketing {
        return ObjectionEffect::StopsAbsolutely;
    }
    match purpose.legal_basis {
        LegalBasis::Consent => ObjectionEffect::EndsConsent,
        LegalBasis::PublicTask | LegalBasis::LegitimateInterests => {
            ObjectionEffect::StopsUnlessCompellingGrounds
        }
        LegalBasis::Contract | LegalBasis::LegalObligation | LegalBasis::VitalInterests => {
            ObjectionEffect::NoRightToObject
        }
    }
}

/// A consent event as the rules see it (no channel, evidence or other details).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct LatestEvent {
    /// The event's id: the evidence a decision rests on.
    pub event_id: String,
    /// What the subject did.
    pub action: ConsentAction,
    /// When the subject did it.
    pub occur_time: DateTime<Utc>,
    /// For a GRANT: the first instant it is no longer valid; `None` means no expiry.
    pub expires_at: Option<DateTime<Utc>>,
}

impl LatestEvent {
    /// Whether this is a GRANT that has expired at `now` (expiry exactly at `now` counts
    /// as expired).
    pub fn is_expired(&self, now: DateTime<Utc>) -> bool {
        self.action == ConsentAction::Grant && self.expires_at.is_some_and(|e| e <= now)
    }
}

/// The derived consent state of one (subject, purpose): what Check reads.
///
/// Built from the events in recording order with [`derive_state`] or kept up to date
/// one event at a time with [`ConsentState::apply`] (e.g. as a stored projection).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ConsentState {
    /// The latest event by `occur_time` (ties: the later recorded).
    pub latest: Option<LatestEvent>,
    /// The latest OBJECT, if no GRANT occurred after it.
    pub standing_objection: Option<LatestEvent>,
    /// When the latest GRANT occurred (to tell whether an OBJECT recorded late still
    /// stands).
    pub last_grant_time: Option<DateTime<Utc>>,
    /// The latest compelling-grounds decision; it counts only while the objection it
    /// answers is the standing one.
    #[serde(default)]
    pub compelling_grounds: Option<CompellingGrounds>,
}

impl ConsentState {
    /// Folds in one event; call in recording order.
    pub fn apply(&mut self, event: &LatestEvent) {
        let t = event.occur_time;
        match event.action {
            ConsentAction::Grant => {
                if self.last_grant_time.is_none_or(|g| t >= g) {
                    self.last_grant_time = Some(t);
                }
                if self
                    .standing_objection
                    .as_ref()
                    .is_some_and(|o| t >= o.occur_time)
                {
                    self.standing_objection = None;
                }
            }
            ConsentAction::Object => {
                let after_grants = self.last_grant_time.is_none_or(|g| t >= g);
                let newest = self
                    .standing_objection
                    .as_ref()
                    .is_none_or(|o| t >= o.occur_time);
                if after_grants && newest {
                    self.standing_objection = Some(event.clone());
                }
            }
            ConsentAction::Withdraw => {}
        }
        if self.latest.as_ref().is_none_or(|l| t >= l.occur_time) {
            self.latest = Some(event.clone());
        }
    }

    /// The status at `now`: that of the latest event, a GRANT turning EXPIRED at its
    /// expiry.
    pub fn status(&self, now: DateTime<Utc>) -> ConsentStatus {
        match &self.latest {
            None => ConsentStatus::NotRecorded,
            Some(e) if e.is_expired(now) => ConsentStatus::Expired,
            Some(e) => match e.action {
                ConsentAction::Grant => ConsentStatus::Granted,
                ConsentAction::Withdraw => ConsentStatus::Withdrawn,
                ConsentAction::Object => ConsentStatus::Objected,
            },
        }
    }

    /// Check for this state; see [`check`].
    pub fn check(
        &self,
        purpose: Option<&PurposeRule>,
        subject: SubjectStatus,
        now: DateTime<Utc>,
    ) -> Decision {
        check(
            purpose,
            subject,
            self.latest.as_ref(),
            self.standing_objection.as_ref(),
            self.compelling_grounds.as_ref(),
            now,
        )
    }

    /// Whether the standing objection is overridden by recorded compelling grounds.
    pub fn objection_overridden(&self) -> bool {
        match (&self.standing_objection, &self.compelling_grounds) {
            (Some(o), Some(g)) => g.objection_event_id == o.event_id,
            _ => false,
        }
    }
}

/// The state of a (subject, purpose) from all its events, given in recording order.
pub fn derive_state(events: &[LatestEvent]) -> ConsentState {
    let mut state = ConsentState::default();
    for event in events {
        state.apply(event);
    }
    state
}

/// The answer of Check.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Decision {
    /// Whether the subject may be processed for the purpose now.
    pub allowed: bool,
    /// Why.
    pub reason: Reason,
    /// The consent event the decision rests on (the GRANT, WITHDRAW or OBJECT), if any.
    pub evidence_id: Option<String>,
}

impl Decision {
    fn allow(reason: Reason, evidence: Option<&LatestEvent>) -> Self {
        Self {
            allowed: true,
            reason,
            evidence_id: evidence.map(|e| e.event_id.clone()),
        }
    }

    fn allow_on_grounds(grounds: &CompellingGrounds) -> Self {
        Self {
            allowed: true,
            reason: Reason::CompellingGrounds,
            evidence_id: Some(grounds.decision_id.clone()),
        }
    }

    fn deny(reason: Reason, evidence: Option<&LatestEvent>) -> Self {
        Self {
            allowed: false,
            reason,
            evidence_id: evidence.map(|e| e.event_id.clone()),
        }
    }
}

/// May `subject` be processed for `purpose` at `now`?
///
/// `latest` is the latest consent event of the (subject, purpose),
/// `standing_objection` the latest OBJECT not followed by a GRANT and `grounds` the
/// latest compelling-grounds decision (all as in [`ConsentState`]). In order:
///
/// 1. unknown purpose (`None`) → deny PURPOSE_UNKNOWN;
/// 2. subject ERASED → deny SUBJECT_ERASED; unknown → deny SUBJECT_UNKNOWN;
///    RESTRICTED (Art. 18) → deny SUBJECT_RESTRICTED;
/// 3. CONSENT → allow iff the latest event is a GRANT that has not expired
///    (CONSENT_GRANTED); otherwise NO_CONSENT (no event), CONSENT_WITHDRAWN,
///    CONSENT_EXPIRED or SUBJECT_OBJECTED (the latest event is an OBJECT); the evidence
///    is the latest event;
/// 4. direct marketing, any other basis → deny SUBJECT_OBJECTED while an objection
///    stands (absolute, Art. 21(2)–(3)), else allow by the basis;
/// 5. LEGITIMATE_INTERESTS, PUBLIC_TASK → while an objection stands: allow
///    COMPELLING_GROUNDS if a decision answers that very objection (the decision is
///    the evidence), else deny SUBJECT_OBJECTED with the objection as evidence
///    (Art. 21(1)); no objection: allow NO_OBJECTION (LEGITIMATE_INTERESTS) or
///    BASIS_ALLOWS (PUBLIC_TASK);
/// 6. CONTRACT, LEGAL_OBLIGATION, VITAL_INTERESTS → allow BASIS_ALLOWS (no right to
///    object under Art. 21; consent events do not matter).
pub fn check(
    purpose: Option<&PurposeRule>,
    subject: SubjectStatus,
    latest: Option<&LatestEvent>,
    standing_objection: Option<&LatestEvent>,
    grounds: Option<&CompellingGrounds>,
    now: DateTime<Utc>,
) -> Decision {
    let Some(purpose) = purpose else {
        return Decision::deny(Reason::PurposeUnknown, None);
    };
    match subject {
        SubjectStatus::Erased => return Decision::deny(Reason::SubjectErased, None),
        SubjectStatus::Unknown => return Decision::deny(Reason::SubjectUnknown, None),
        SubjectStatus::Restricted => return Decision::deny(Reason::SubjectRestricted, None),
        SubjectStatus::Active => {}
    }
    if purpose.legal_basis == LegalBasis::Consent {
        return match latest {
            None => Decision::deny(Reason::NoConsent, None),
            Some(e) => match e.action {
                ConsentAction::Grant if e.is_expired(now) => {
                    Decision::deny(Reason::ConsentExpired, Some(e))
                }
                ConsentAction::Grant => Decision::allow(Reason::ConsentGranted, Some(e)),
                ConsentAction::Withdraw => Decision::deny(Reason::ConsentWithdrawn, Some(e)),
                ConsentAction::Object => Decision::deny(Reason::SubjectObjected, Some(e)),
            },
        };
    }
    if let Some(o) = standing_objection {
        match objection_effect(purpose) {
            ObjectionEffect::StopsAbsolutely => {
                return Decision::deny(Reason::SubjectObjected, Some(o));
            }
            ObjectionEffect::StopsUnlessCompellingGrounds => {
                return match grounds.filter(|g| g.objection_event_id == o.event_id) {
                    Some(g) => Decision::allow_on_grounds(g),
                    None => Decision::deny(Reason::SubjectObjected, Some(o)),
                };
            }
            ObjectionEffect::NoRightToObject | ObjectionEffect::EndsConsent => {}
        }
    }
    match purpose.legal_basis {
        LegalBasis::LegitimateInterests => Decision::allow(Reason::NoObjection, None),
        _ => Decision::allow(Reason::BasisAllows, None),
    }
}

/// How far in the future an `occur_time` may lie, for clock skew between systems.
pub const MAX_CLOCK_SKEW: TimeDelta = vern_kit::time::CLOCK_SKEW;

text_enum!(
    /// How the consent event was collected.
    Channel {
        WebForm = "WEB_FORM",
        Email = "EMAIL",
        Paper = "PAPER",
        Phone = "PHONE",
        InPerson = "IN_PERSON",
        Api = "API",
    }
);

/// A recorded consent event: the proof of consent (Art. 7(1)).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ConsentEvent {
    /// Owning tenant.
    pub tenant_id: String,
    /// Event id (time-ordered UUID).
    pub event_id: String,
    /// The subject.
    pub subject_id: String,
    /// Purpose key.
    pub purpose: String,
    /// GRANT, WITHDRAW or OBJECT.
    pub action: ConsentAction,
    /// How it was collected.
    pub channel: Channel,
    /// Version of the privacy notice the subject saw.
    pub notice_version: String,
    /// Evidence reference (form id, document id…).
    pub evidence: String,
    /// Who collected it, as stated by the caller.
    pub actor: String,
    /// The authenticated caller that recorded it (token subject).
    pub recorded_by: String,
    /// The caller's idempotency key.
    pub request_id: String,
    /// The rights request that caused it, if any.
    pub rights_request_id: String,
    /// When the subject acted.
    pub occur_time: DateTime<Utc>,
    /// When a GRANT lapses.
    pub expires_at: Option<DateTime<Utc>>,
    /// When it was recorded.
    pub create_time: DateTime<Utc>,
}

impl ConsentEvent {
    /// The event as the state derivation sees it.
    pub fn as_latest(&self) -> LatestEvent {
        LatestEvent {
            event_id: self.event_id.clone(),
            action: self.action,
            occur_time: self.occur_time,
            expires_at: self.expires_at,
        }
    }
}

/// Maximum length of `notice_version`.
pub const MAX_NOTICE_VERSION_LEN: usize = 64;

/// Checks the rules of a new consent event that do not need the database: a GRANT
/// needs a `notice_version`; `expires_at` is only for a GRANT and must be after
/// `occur_time`; `occur_time` is not in the future (beyond [`MAX_CLOCK_SKEW`]).
/// Violations go to `v`; none of them echoes a value.
pub fn validate_event(
    v: &mut Violations,
    action: ConsentAction,
    notice_version: &str,
    occur_time: DateTime<Utc>,
    expires_at: Option<DateTime<Utc>>,
    now: DateTime<Utc>,
) {
    if action == ConsentAction::Grant && notice_version.trim().is_empty() {
        v.add("notice_version", "is required for GRANT");
    } else {
        v.check(vern_kit::validate::optional_line(
            "notice_version",
            notice_version,
            MAX_NOTICE_VERSION_LEN,
        ));
    }
    if occur_time > now + MAX_CLOCK_SKEW {
        v.add("occur_time", "must not be in the future");
    }
    if let Some(expires_at) = expires_at {
        if action != ConsentAction::Grant {
            v.add("expires_at", "is only allowed for GRANT");
        } else if expires_at <= occur_time {
            v.add("expires_at", "must be after occur_time");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use ConsentAction::{Grant, Object, Withdraw};
    use chrono::TimeZone;
    use vern_kit::ApiError;

    #[test]
    fn a_purpose_restricted_reads_as_a_restricted_subject_for_that_purpose_only() {
        let r = vec!["marketing".to_owned()];
        use SubjectStatus::{Active, Erased, Restricted};
        assert_eq!(status_for(Active, &r, "marketing"), Restricted);
        assert_eq!(status_for(Active, &r, "invoicing"), Active);
        assert_eq!(status_for(Active, &[], "marketing"), Active);
        assert_eq!(status_for(Erased, &r, "marketing"), Erased, "erasure wins");
        let d = check(
            Some(&PurposeRule {
                legal_basis: LegalBasis::Contract,
                direct_marketing: false,
            }),
            status_for(Active, &r, "marketing"),
            None,
            None,
            None,
            Utc::now(),
        );
        assert_eq!(d.reason, Reason::SubjectRestricted);
    }

    fn t(minute: u32) -> DateTime<Utc> {
        Utc.with_ymd_and_hms(2025, 3, 1, 12, minute, 0)
            .single()
            .expect("valid")
    }

    fn ev(id: &str, action: ConsentAction, at: u32, expires: Option<u32>) -> LatestEvent {
        LatestEvent {
            event_id: id.to_owned(),
            action,
            occur_time: t(at),
            expires_at: expires.map(t),
        }
    }

    const NOW: u32 = 30;

    /// name, purpose, subject, events in recording order, allowed, reason, evidence.
    type CheckRow = (
        &'static str,
        Option<PurposeRule>,
        SubjectStatus,
        Vec<LatestEvent>,
        bool,
        Reason,
        Option<&'static str>,
    );

    /// name, action, notice_version, occur_time, expires_at, fields in violation.
    type EventRow<'a> = (
        &'a str,
        ConsentAction,
        &'a str,
        DateTime<Utc>,
        Option<DateTime<Utc>>,
        Vec<&'a str>,
    );

    fn rule(legal_basis: LegalBasis, direct_marketing: bool) -> PurposeRule {
        PurposeRule {
            legal_basis,
            direct_marketing,
        }
    }

    #[test]
    fn stored_names_round_trip() {
        for b in [
            LegalBasis::Consent,
            LegalBasis::Contract,
            LegalBasis::LegalObligation,
            LegalBasis::VitalInterests,
            LegalBasis::PublicTask,
            LegalBasis::LegitimateInterests,
        ] {
            assert_eq!(LegalBasis::parse(b.as_str()), Some(b));
        }
        for s in [
            SubjectStatus::Active,
            SubjectStatus::Restricted,
            SubjectStatus::Erased,
            SubjectStatus::Unknown,
        ] {
            assert_eq!(SubjectStatus::parse(s.as_str()), Some(s));
        }
        for a in [Grant, Withdraw, Object] {
            assert_eq!(ConsentAction::parse(a.as_str()), Some(a));
        }
        assert_eq!(Reason::SubjectObjected.as_str(), "SUBJECT_OBJECTED");
        assert_eq!(
            Reason::parse("PURPOSE_UNKNOWN"),
            Some(Reason::PurposeUnknown)
        );
        assert_eq!(ConsentStatus::NotRecorded.as_str(), "NOT_RECORDED");
        assert_eq!(LegalBasis::parse("consent"), None);
    }

    /// Every row of the Check rules, by legal basis, subject state and events (in
    /// recording order), at minute 30.
    #[test]
    fn check_rules() {
        use LegalBasis::*;
        use Reason::*;
        use SubjectStatus::{Active, Erased, Restricted, Unknown};
        let g = |at, exp| ev("g", Grant, at, exp);
        let w = |at| ev("w", Withdraw, at, None);
        let o = |at| ev("o", Object, at, None);
        #[rustfmt::skip]
        let cases: Vec<CheckRow> = vec![
            // Unknown purpose comes first, whatever else.
            ("unknown purpose", None, Active, vec![g(1, None)], false, PurposeUnknown, None),
            ("unknown purpose, unknown subject", None, Unknown, vec![], false, PurposeUnknown, None),
            // Subject state denies before any basis.
            ("erased, consent granted", Some(rule(Consent, false)), Erased, vec![g(1, None)], false, SubjectErased, None),
            ("erased, contract", Some(rule(Contract, false)), Erased, vec![], false, SubjectErased, None),
            ("unknown subject, contract", Some(rule(Contract, false)), Unknown, vec![], false, SubjectUnknown, None),
            ("unknown subject, LI", Some(rule(LegitimateInterests, false)), Unknown, vec![], false, SubjectUnknown, None),
            ("restricted, consent granted", Some(rule(Consent, false)), Restricted, vec![g(1, None)], false, SubjectRestricted, None),
            ("restricted, legal obligation", Some(rule(LegalObligation, false)), Restricted, vec![], false, SubjectRestricted, None),
            ("restricted, LI", Some(rule(LegitimateInterests, true)), Restricted, vec![], false, SubjectRestricted, None),
            // CONSENT.
            ("consent: nothing recorded", Some(rule(Consent, true)), Active, vec![], false, NoConsent, None),
            ("consent: granted", Some(rule(Consent, true)), Active, vec![g(1, None)], true, ConsentGranted, Some("g")),
            ("consent: granted, expires later", Some(rule(Consent, false)), Active, vec![g(1, Some(31))], true, ConsentGranted, Some("g")),
            ("consent: expires exactly now", Some(rule(Consent, false)), Active, vec![g(1, Some(NOW))], false, ConsentExpired, Some("g")),
            ("consent: expired", Some(rule(Consent, false)), Active, vec![g(1, Some(2))], false, ConsentExpired, Some("g")),
            ("consent: withdrawn", Some(rule(Consent, true)), Active, vec![g(1, None), w(2)], false, ConsentWithdrawn, Some("w")),
            ("consent: withdrawn without grant", Some(rule(Consent, true)), Active, vec![w(2)], false, ConsentWithdrawn, Some("w")),
            ("consent: re-granted", Some(rule(Consent, true)), Active, vec![g(1, None), w(2), ev("g2", Grant, 3, None)], true, ConsentGranted, Some("g2")),
            ("consent: objected", Some(rule(Consent, true)), Active, vec![g(1, None), o(2)], false, SubjectObjected, Some("o")),
            ("consent: grant after objection", Some(rule(Consent, true)), Active, vec![o(1), g(2, None)], true, ConsentGranted, Some("g")),
            ("consent: withdraw after objection", Some(rule(Consent, true)), Active, vec![o(1), w(2)], false, ConsentWithdrawn, Some("w")),
            ("consent: old grant recorded late", Some(rule(Consent, true)), Active, vec![w(5), g(1, None)], false, ConsentWithdrawn, Some("w")),
            ("consent: same time, later recorded wins", Some(rule(Consent, true)), Active, vec![g(5, None), w(5)], false, ConsentWithdrawn, Some("w")),
            ("consent: expired grant then withdraw", Some(rule(Consent, true)), Active, vec![g(1, Some(2)), w(3)], false, ConsentWithdrawn, Some("w")),
            // LEGITIMATE_INTERESTS, direct marketing and not.
            ("LI: nothing recorded", Some(rule(LegitimateInterests, false)), Active, vec![], true, NoObjection, None),
            ("LI DM: nothing recorded", Some(rule(LegitimateInterests, true)), Active, vec![], true, NoObjection, None),
            ("LI: withdraw only", Some(rule(LegitimateInterests, false)), Active, vec![g(1, None), w(2)], true, NoObjection, None),
            ("LI: expired grant", Some(rule(LegitimateInterests, false)), Active, vec![g(1, Some(2))], true, NoObjection, None),
            ("LI: objected", Some(rule(LegitimateInterests, false)), Active, vec![o(1)], false, SubjectObjected, Some("o")),
            ("LI DM: objected", Some(rule(LegitimateInterests, true)), Active, vec![o(1)], false, SubjectObjected, Some("o")),
            ("LI DM: objection after grant", Some(rule(LegitimateInterests, true)), Active, vec![g(1, None), o(2)], false, SubjectObjected, Some("o")),
            ("LI DM: withdraw does not lift objection", Some(rule(LegitimateInterests, true)), Active, vec![o(1), w(2)], false, SubjectObjected, Some("o")),
            ("LI: withdraw does not lift objection", Some(rule(LegitimateInterests, false)), Active, vec![o(1), w(2)], false, SubjectObjected, Some("o")),
            ("LI DM: later grant lifts objection", Some(rule(LegitimateInterests, true)), Active, vec![o(1), g(2, None)], true, NoObjection, None),
            ("LI: later grant lifts objection", Some(rule(LegitimateInterests, false)), Active, vec![o(1), g(2, None)], true, NoObjection, None),
            ("LI DM: expired later grant still lifts", Some(rule(LegitimateInterests, true)), Active, vec![o(1), g(2, Some(3))], true, NoObjection, None),
            ("LI DM: older grant recorded late does not lift", Some(rule(LegitimateInterests, true)), Active, vec![o(5), g(1, None)], false, SubjectObjected, Some("o")),
            ("LI DM: older objection recorded late does not stand", Some(rule(LegitimateInterests, true)), Active, vec![g(5, None), o(1)], true, NoObjection, None),
            ("LI: second objection is the evidence", Some(rule(LegitimateInterests, false)), Active, vec![o(1), ev("o2", Object, 2, None)], false, SubjectObjected, Some("o2")),
            ("LI: objection, grant, objection", Some(rule(LegitimateInterests, false)), Active, vec![o(1), g(2, None), ev("o2", Object, 3, None)], false, SubjectObjected, Some("o2")),
            // Other bases: allowed while active, events do not matter.
            ("contract", Some(rule(Contract, false)), Active, vec![], true, BasisAllows, None),
            ("contract, objected", Some(rule(Contract, false)), Active, vec![o(1)], true, BasisAllows, None),
            // Direct marketing: an objection is absolute whatever the basis (Art. 21(3)).
            ("contract DM: objected", Some(rule(Contract, true)), Active, vec![o(1)], false, SubjectObjected, Some("o")),
            ("contract DM: nothing recorded", Some(rule(Contract, true)), Active, vec![], true, BasisAllows, None),
            ("contract DM: later grant lifts objection", Some(rule(Contract, true)), Active, vec![o(1), g(2, None)], true, BasisAllows, None),
            ("legal obligation DM: objected", Some(rule(LegalObligation, true)), Active, vec![o(1)], false, SubjectObjected, Some("o")),
            ("public task DM: objected", Some(rule(PublicTask, true)), Active, vec![o(1)], false, SubjectObjected, Some("o")),
            // PUBLIC_TASK: objection stops processing (Art. 21(1)).
            ("public task, objected", Some(rule(PublicTask, false)), Active, vec![o(1)], false, SubjectObjected, Some("o")),
            ("public task, withdraw does not lift objection", Some(rule(PublicTask, false)), Active, vec![o(1), w(2)], false, SubjectObjected, Some("o")),
            ("contract, withdrawn", Some(rule(Contract, false)), Active, vec![g(1, None), w(2)], true, BasisAllows, None),
            ("legal obligation", Some(rule(LegalObligation, false)), Active, vec![o(1)], true, BasisAllows, None),
            ("vital interests", Some(rule(VitalInterests, false)), Active, vec![], true, BasisAllows, None),
            ("public task", Some(rule(PublicTask, false)), Active, vec![w(1)], true, BasisAllows, None),
        ];
        for (name, purpose, subject, events, allowed, reason, evidence) in cases {
            let state = derive_state(&events);
            let want = Decision {
                allowed,
                reason,
                evidence_id: evidence.map(str::to_owned),
            };
            assert_eq!(
                state.check(purpose.as_ref(), subject, t(NOW)),
                want,
                "{name}"
            );
            // The free function agrees with the method.
            let direct = check(
                purpose.as_ref(),
                subject,
                state.latest.as_ref(),
                state.standing_objection.as_ref(),
                None,
                t(NOW),
            );
            assert_eq!(direct, want, "{name}");
        }
    }

    /// Compelling grounds override the objection they answer, only under PUBLIC_TASK
    /// and non-marketing LEGITIMATE_INTERESTS, and a new objection needs a new decision.
    #[test]
    fn compelling_grounds_answer_one_objection() {
        let grounds = |o: &str| CompellingGrounds {
            decision_id: "d".into(),
            objection_event_id: o.into(),
        };
        let mut state = derive_state(&[ev("o", Object, 1, None)]);
        state.compelling_grounds = Some(grounds("o"));
        assert!(state.objection_overridden());
        for (basis, dm, allowed, reason) in [
            (
                LegalBasis::PublicTask,
                false,
                true,
                Reason::CompellingGrounds,
            ),
            (
                LegalBasis::LegitimateInterests,
                false,
                true,
                Reason::CompellingGrounds,
            ),
            (
                LegalBasis::LegitimateInterests,
                true,
                false,
                Reason::SubjectObjected,
            ),
            (LegalBasis::PublicTask, true, false, Reason::SubjectObjected),
            (LegalBasis::Contract, true, false, Reason::SubjectObjected),
            (LegalBasis::Consent, false, false, Reason::SubjectObjected),
        ] {
            let d = state.check(Some(&rule(basis, dm)), SubjectStatus::Active, t(NOW));
            assert_eq!(
                (d.allowed, d.reason),
                (allowed, reason),
                "{basis:?} dm={dm}"
            );
            if allowed {
                assert_eq!(
                    d.evidence_id.as_deref(),
                    Some("d"),
                    "the decision is the evidence"
                );
            }
        }
        // Grounds for another objection do not count.
        state.apply(&ev("o2", Object, 2, None));
        assert!(!state.objection_overridden());
        let d = state.check(
            Some(&rule(LegalBasis::PublicTask, false)),
            SubjectStatus::Active,
            t(NOW),
        );
        assert_eq!(
            (d.allowed, d.reason, d.evidence_id.as_deref()),
            (false, Reason::SubjectObjected, Some("o2"))
        );
        // Restriction still wins over grounds.
        let mut state = derive_state(&[ev("o", Object, 1, None)]);
        state.compelling_grounds = Some(grounds("o"));
        let d = state.check(
            Some(&rule(LegalBasis::PublicTask, false)),
            SubjectStatus::Restricted,
            t(NOW),
        );
        assert_eq!(d.reason, Reason::SubjectRestricted);
    }

    #[test]
    fn every_basis_denies_for_every_inactive_subject() {
        let bases = [
            LegalBasis::Consent,
            LegalBasis::Contract,
            LegalBasis::LegalObligation,
            LegalBasis::VitalInterests,
            LegalBasis::PublicTask,
            LegalBasis::LegitimateInterests,
        ];
        let state = derive_state(&[ev("g", Grant, 1, None)]);
        for basis in bases {
            for dm in [false, true] {
                for (subject, reason) in [
                    (SubjectStatus::Erased, Reason::SubjectErased),
                    (SubjectStatus::Unknown, Reason::SubjectUnknown),
                    (SubjectStatus::Restricted, Reason::SubjectRestricted),
                ] {
                    let d = state.check(Some(&rule(basis, dm)), subject, t(NOW));
                    assert_eq!(
                        d,
                        Decision {
                            allowed: false,
                            reason,
                            evidence_id: None
                        },
                        "{basis:?} {subject:?}"
                    );
                }
            }
        }
    }

    #[test]
    fn statuses() {
        let cases: Vec<(&str, Vec<LatestEvent>, u32, ConsentStatus)> = vec![
            ("none", vec![], NOW, ConsentStatus::NotRecorded),
            (
                "granted",
                vec![ev("a", Grant, 1, None)],
                NOW,
                ConsentStatus::Granted,
            ),
            (
                "granted until later",
                vec![ev("a", Grant, 1, Some(31))],
                NOW,
                ConsentStatus::Granted,
            ),
            (
                "expires at now",
                vec![ev("a", Grant, 1, Some(NOW))],
                NOW,
                ConsentStatus::Expired,
            ),
            (
                "a minute before expiry",
                vec![ev("a", Grant, 1, Some(NOW + 1))],
                NOW,
                ConsentStatus::Granted,
            ),
            (
                "withdrawn",
                vec![ev("a", Grant, 1, None), ev("b", Withdraw, 2, None)],
                NOW,
                ConsentStatus::Withdrawn,
            ),
            (
                "objected",
                vec![ev("a", Object, 1, None)],
                NOW,
                ConsentStatus::Objected,
            ),
            (
                "latest by occur_time",
                vec![ev("b", Withdraw, 9, None), ev("a", Grant, 1, None)],
                NOW,
                ConsentStatus::Withdrawn,
            ),
            (
                "regrant after objection",
                vec![ev("a", Object, 1, None), ev("b", Grant, 2, Some(40))],
                NOW,
                ConsentStatus::Granted,
            ),
        ];
        for (name, events, now, want) in cases {
            assert_eq!(derive_state(&events).status(t(now)), want, "{name}");
        }
    }

    #[test]
    fn expiry_boundary() {
        let e = ev("g", Grant, 1, Some(10));
        assert!(!e.is_expired(t(9)));
        assert!(e.is_expired(t(10)));
        assert!(e.is_expired(t(11)));
        assert!(!ev("w", Withdraw, 1, Some(10)).is_expired(t(20)));
        let state = derive_state(&[e]);
        let consent = rule(LegalBasis::Consent, false);
        let at = |m| state.check(Some(&consent), SubjectStatus::Active, t(m));
        assert!(at(9).allowed);
        assert_eq!(at(10).reason, Reason::ConsentExpired);
        assert_eq!(at(10).evidence_id.as_deref(), Some("g"));
    }

    #[test]
    fn incremental_apply_matches_derive() {
        let events = [
            ev("1", Grant, 3, None),
            ev("2", Object, 5, None),
            ev("3", Withdraw, 4, None),
            ev("4", Grant, 2, None),
            ev("5", Grant, 6, Some(20)),
            ev("6", Object, 6, None),
        ];
        let mut state = ConsentState::default();
        for (i, e) in events.iter().enumerate() {
            state.apply(e);
            assert_eq!(state, derive_state(&events[..=i]), "after {i}");
        }
        assert_eq!(
            state.latest.as_ref().map(|e| e.event_id.as_str()),
            Some("6")
        );
        assert_eq!(
            state
                .standing_objection
                .as_ref()
                .map(|e| e.event_id.as_str()),
            Some("6")
        );
        assert_eq!(state.last_grant_time, Some(t(6)));
    }

    fn violations(
        action: ConsentAction,
        notice: &str,
        occur: DateTime<Utc>,
        expires: Option<DateTime<Utc>>,
    ) -> Vec<String> {
        let mut v = Violations::new();
        validate_event(&mut v, action, notice, occur, expires, t(NOW));
        match v.finish() {
            Ok(()) => vec![],
            Err(ApiError::InvalidArgument(list)) => list.into_iter().map(|f| f.field).collect(),
            Err(other) => panic!("unexpected {other:?}"),
        }
    }

    #[test]
    fn event_validation() {
        let skew = t(NOW) + MAX_CLOCK_SKEW;
        let long = "x".repeat(MAX_NOTICE_VERSION_LEN + 1);
        let cases: Vec<EventRow> = vec![
            ("grant", Grant, "2024-05", t(1), None, vec![]),
            (
                "grant with expiry",
                Grant,
                "2024-05",
                t(1),
                Some(t(40)),
                vec![],
            ),
            (
                "grant without notice",
                Grant,
                " ",
                t(1),
                None,
                vec!["notice_version"],
            ),
            ("withdraw without notice", Withdraw, "", t(1), None, vec![]),
            ("object without notice", Object, "", t(1), None, vec![]),
            (
                "notice too long",
                Withdraw,
                &long,
                t(1),
                None,
                vec!["notice_version"],
            ),
            (
                "expiry on withdraw",
                Withdraw,
                "",
                t(1),
                Some(t(40)),
                vec!["expires_at"],
            ),
            (
                "expiry on object",
                Object,
                "",
                t(1),
                Some(t(40)),
                vec!["expires_at"],
            ),
            (
                "expiry at occur_time",
                Grant,
                "v1",
                t(1),
                Some(t(1)),
                vec!["expires_at"],
            ),
            (
                "expiry before occur_time",
                Grant,
                "v1",
                t(2),
                Some(t(1)),
                vec!["expires_at"],
            ),
            ("occur_time within skew", Grant, "v1", skew, None, vec![]),
            (
                "occur_time in the future",
                Grant,
                "v1",
                skew + TimeDelta::seconds(1),
                None,
                vec!["occur_time"],
            ),
            (
                "everything wrong",
                Grant,
                "",
                skew + TimeDelta::seconds(1),
                Some(t(1)),
                vec!["notice_version", "occur_time", "expires_at"],
            ),
        ];
        for (name, action, notice, occur, expires, want) in cases {
            assert_eq!(violations(action, notice, occur, expires), want, "{name}");
        }
    }
}
