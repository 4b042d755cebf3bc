//! The rules of rights requests, pure: request types and states, the legal deadline
//! (Art. 12(3)) and its one extension, the lifecycle, and which downstream systems still
//! have to confirm. No I/O, no tonic, no database.

use std::collections::BTreeSet;

use chrono::{DateTime, Datelike, Months, NaiveDate, Utc};
use serde::{Deserialize, Serialize};

macro_rules! named_enum {
    ($(#[$m:meta])* $name:ident { $($(#[$vm:meta])* $variant:ident = $text:literal),+ $(,)? }) => {
        $(#[$m])*
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
        pub enum $name {
            $($(#[$vm])* $variant),+
        }

        impl $name {
            /// Every value.
            pub const ALL: &'static [$name] = &[$($name::$variant),+];

            /// The stored (and protobuf) name.
            pub fn as_str(self) -> &'static str {
                match self {
                    $($name::$variant => $text),+
                }
            }

            /// The value of a stored (or protobuf) name.
            pub fn parse(s: &str) -> Option<Self> {
                match s {
                    $($text => Some($name::$variant),)+
                    _ => None,
                }
            }
        }
    };
}

named_enum!(
    /// The right a request exercises.
    RequestType {
        /// Art. 15.
        Access = "ACCESS",
        /// Art. 16.
        Rectification = "RECTIFICATION",
        /// Art. 17.
        Erasure = "ERASURE",
        /// Art. 18.
        Restriction = "RESTRICTION",
        /// Art. 21.
        Objection = "OBJECTION",
        /// Art. 20.
        Portability = "PORTABILITY",
        /// Art. 7(3).
        WithdrawConsent = "WITHDRAW_CONSENT",
    }
);

named_enum!(
    /// Lifecycle of a request.
    RequestStatus {
        /// Registered; identity not verified.
        Received = "RECEIVED",
        /// Identity verified.
        Verified = "VERIFIED",
        /// Being carried out or waiting for downstream confirmations.
        InProgress = "IN_PROGRESS",
        /// Done.
        Completed = "COMPLETED",
        /// Refused with a reason.
        Rejected = "REJECTED",
    }
);

named_enum!(
    /// How a request arrived.
    Channel {
        /// Web form.
        WebForm = "WEB_FORM",
        /// E-mail.
        Email = "EMAIL",
        /// Letter or paper form.
        Paper = "PAPER",
        /// Phone call.
        Phone = "PHONE",
        /// In person.
        InPerson = "IN_PERSON",
        /// Another system.
        Api = "API",
    }
);

named_enum!(
    /// How the requester's identity was verified.
    VerificationMethod {
        /// BankID, ID-porten.
        ElectronicId = "VERIFICATION_METHOD_ELECTRONIC_ID",
        /// An identity document.
        IdDocument = "VERIFICATION_METHOD_ID_DOCUMENT",
        /// E-mail confirmation.
        EmailConfirmation = "VERIFICATION_METHOD_EMAIL_CONFIRMATION",
        /// SMS code.
        SmsConfirmation = "VERIFICATION_METHOD_SMS_CONFIRMATION",
        /// Seen in person.
        InPerson = "VERIFICATION_METHOD_IN_PERSON",
        /// Logged-in session.
        AuthenticatedSession = "VERIFICATION_METHOD_AUTHENTICATED_SESSION",
        /// Another method.
        Other = "VERIFICATION_METHOD_OTHER",
    }
);

named_enum!(
    /// Ground of a rejection.
    RejectionGround {
        /// Art. 12(5).
        ManifestlyUnfounded = "REJECTION_GROUND_MANIFESTLY_UNFOUNDED",
        /// Art. 12(5).
        Excessive = "REJECTION_GROUND_EXCESSIVE",
        /// Art. 12(6), 11(2).
        IdentityNotVerified = "REJECTION_GROUND_IDENTITY_NOT_VERIFIED",
        /// E.g. Art. 17(3).
        LegalExemption = "REJECTION_GROUND_LEGAL_EXEMPTION",
        /// Withdrawn by the subject.
        WithdrawnBySubject = "REJECTION_GROUND_WITHDRAWN_BY_SUBJECT",
        /// Another ground.
        Other = "REJECTION_GROUND_OTHER",
    }
);

named_enum!(
    /// Kind of a feed event.
    EventType {
        /// Erased (fully or except kept records).
        Erased = "RIGHTS_EVENT_TYPE_ERASED",
        /// Restricted.
        Restricted = "RIGHTS_EVENT_TYPE_RESTRICTED",
        /// Restriction lifted.
        RestrictionLifted = "RIGHTS_EVENT_TYPE_RESTRICTION_LIFTED",
        /// Rectified.
        Rectified = "RIGHTS_EVENT_TYPE_RECTIFIED",
        /// Objected.
        Objected = "RIGHTS_EVENT_TYPE_OBJECTED",
        /// Consent withdrawn.
        ConsentWithdrawn = "RIGHTS_EVENT_TYPE_CONSENT_WITHDRAWN",
        /// Some records erased, the subject remains (e.g. by a retention sweep).
        RecordsErased = "RIGHTS_EVENT_TYPE_RECORDS_ERASED",
    }
);

/// What an objection does to processing for one purpose (Art. 21), as fulfilment
/// reports it; the consents service's Check applies the same rule.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ObjectionEffect {
    /// Direct marketing, whatever the basis: processing stops for good (Art. 21(3)).
    StopsAbsolutely,
    /// PUBLIC_TASK or LEGITIMATE_INTERESTS: stops unless the controller records
    /// compelling legitimate grounds (Art. 21(1)).
    StopsUnlessCompellingGrounds,
    /// CONSENT: ends the consent like a withdrawal.
    EndsConsent,
    /// CONTRACT, LEGAL_OBLIGATION, VITAL_INTERESTS: Art. 21 gives no right to object;
    /// processing continues on its basis.
    NoRightToObject,
}

/// The effect of an objection to a purpose with `basis` (the protobuf `LegalBasis`
/// value name) and the direct-marketing flag.
pub fn objection_effect(basis: &str, direct_marketing: bool) -> ObjectionEffect {
    if direct_marketing {
        return ObjectionEffect::StopsAbsolutely;
    }
    match basis {
        "CONSENT" => ObjectionEffect::EndsConsent,
        "PUBLIC_TASK" | "LEGITIMATE_INTERESTS" => ObjectionEffect::StopsUnlessCompellingGrounds,
        _ => ObjectionEffect::NoRightToObject,
    }
}

/// The outcome summary of an OBJECTION request: what the objection really does to each
/// purpose, grouped by effect.
pub fn objection_summary(effects: &[(String, ObjectionEffect)]) -> String {
    let of = |want: ObjectionEffect| -> Vec<&str> {
        effects
            .iter()
            .filter(|(_, e)| *e == want)
            .map(|(k, _)| k.as_str())
            .collect()
    };
    let mut parts = vec![];
    let stops: Vec<&str> = of(ObjectionEffect::StopsAbsolutely)
        .into_iter()
        .chain(of(ObjectionEffect::EndsConsent))
        .collect();
    if !stops.is_empty() {
        parts.push(format!(
            "processing stops for {} (direct marketing: Art. 21(3); consent: ended)",
            stops.join(", ")
        ));
    }
    let unless = of(ObjectionEffect::StopsUnlessCompellingGrounds);
    if !unless.is_empty() {
        parts.push(format!(
            "processing stops for {} unless the controller records compelling legitimate grounds (Art. 21(1))",
            unless.join(", ")
        ));
    }
    let continues = of(ObjectionEffect::NoRightToObject);
    if !continues.is_empty() {
        parts.push(format!(
            "objection recorded but processing continues for {} (its legal basis carries no right to object: Art. 21 covers Art. 6(1)(e) and (f) and direct marketing)",
            continues.join(", ")
        ));
    }
    format!("objection recorded: {}", parts.join("; "))
}

named_enum!(
    /// Why personal data was erased.
    ErasureCause {
        /// A rights request (Art. 17).
        RightsRequest = "ERASURE_CAUSE_RIGHTS_REQUEST",
        /// EraseSubject called directly.
        Direct = "ERASURE_CAUSE_DIRECT",
        /// A retention policy's period ended (Art. 5(1)(e)).
        Retention = "ERASURE_CAUSE_RETENTION",
    }
);

impl RequestStatus {
    /// COMPLETED or REJECTED: nothing more happens to the request.
    pub fn is_final(self) -> bool {
        matches!(self, RequestStatus::Completed | RequestStatus::Rejected)
    }
}

named_enum!(
    /// The language of a request's report (Art. 12(1): intelligible to the subject).
    Language {
        /// Norwegian bokmål.
        Nb = "nb",
        /// Norwegian nynorsk.
        Nn = "nn",
        /// English.
        En = "en",
    }
);

/// The language of a tenant that has not chosen one.
pub const DEFAULT_LANGUAGE: Language = Language::Nb;

impl Language {
    /// The language of a BCP 47 tag, case-insensitive: `nb`, `nn`, `en`, and `no`,
    /// `nb-NO`, `nn-NO`, `en-GB`, `en-US` for those. `None` for any other tag.
    pub fn from_tag(tag: &str) -> Option<Language> {
        match tag.trim().to_ascii_lowercase().replace('_', "-").as_str() {
            "nb" | "no" | "nb-no" => Some(Language::Nb),
            "nn" | "nn-no" => Some(Language::Nn),
            "en" | "en-gb" | "en-us" => Some(Language::En),
            _ => None,
        }
    }

    /// The language a stored report or request names; empty (made before languages
    /// existed, in English) or unknown is English.
    pub fn of_stored(s: &str) -> Language {
        Language::parse(s).unwrap_or(Language::En)
    }
}

/// A language field of a request: `None` when empty (the default applies),
/// INVALID_ARGUMENT naming `field` for a tag that is not nb, nn or en.
pub fn language(
    field: &str,
    tag: &str,
) -> Result<Option<Language>, vern_kit::error::FieldViolation> {
    if tag.trim().is_empty() {
        return Ok(None);
    }
    Language::from_tag(tag).map(Some).ok_or_else(|| {
        vern_kit::error::FieldViolation::new(
            field,
            "must be nb (Norwegian bokmål), nn (nynorsk) or en (English)",
        )
    })
}

/// Identifier fields a rectification may name (the rest are record fields).
pub const IDENTIFIER_FIELDS: [&str; 3] = ["email", "phone", "national_id"];

/// `t` plus `months` calendar months: the same day number, or the month's last day where
/// that day does not exist (31 January + 1 month = 28 or 29 February); the time of day
/// is kept.
pub fn add_months(t: DateTime<Utc>, months: u32) -> Option<DateTime<Utc>> {
    let date = t.date_naive();
    let (y, m0) = (date.year(), date.month0() + months);
    let year = y + (m0 / 12) as i32;
    let month = m0 % 12 + 1;
    let last = last_day(year, month)?;
    let day = date.day().min(last);
    let new = NaiveDate::from_ymd_opt(year, month, day)?;
    Some(new.and_time(t.time()).and_utc())
}

fn last_day(year: i32, month: u32) -> Option<u32> {
    let first = NaiveDate::from_ymd_opt(year, month, 1)?;
    let next = first.checked_add_months(Months::new(1))?;
    Some(next.signed_duration_since(first).num_days() as u32)
}

/// The deadline of a request received at `received`: one calendar month (Art. 12(3)).
pub fn due_at(received: DateTime<Utc>) -> Option<DateTime<Utc>> {
    add_months(received, 1)
}

/// Why a deadline cannot be extended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ExtensionRefused {
    /// Bad input in a field (INVALID_ARGUMENT).
    Invalid {
        /// The field.
        field: &'static str,
        /// Why.
        why: &'static str,
    },
    /// The request's state forbids it (FAILED_PRECONDITION).
    Precondition {
        /// Machine-readable kind.
        kind: &'static str,
        /// Why.
        why: &'static str,
    },
}

/// The deadline after an extension by `months`, checked against Art. 12(3): once, by 1
/// or 2 further months, with a reason, the subject told within the original deadline.
/// The extended deadline counts from the receipt (receipt + 1 + `months` calendar
/// months), so the day-number rule applies to it as well.
#[allow(clippy::too_many_arguments)]
pub fn extend(
    status: RequestStatus,
    already_extended: bool,
    received: DateTime<Utc>,
    original_due: DateTime<Utc>,
    months: i32,
    reason: &str,
    subject_informed_at: Option<DateTime<Utc>>,
    now: DateTime<Utc>,
) -> Result<DateTime<Utc>, ExtensionRefused> {
    use ExtensionRefused::*;
    if !(1..=2).contains(&months) {
        return Err(Invalid {
            field: "months",
            why: "must be 1 or 2: Art. 12(3) allows one extension by at most two further months",
        });
    }
    if reason.trim().is_empty() {
        return Err(Invalid {
            field: "reason",
            why: "is required: the subject must be told why the deadline is extended (Art. 12(3))",
        });
    }
    let Some(informed) = subject_informed_at else {
        return Err(Invalid {
            field: "subject_informed_at",
            why: "is required: the subject must be told of the extension within the original deadline",
        });
    };
    if informed > now + vern_kit::time::CLOCK_SKEW {
        return Err(Invalid {
            field: "subject_informed_at",
            why: "must not be in the future",
        });
    }
    if status.is_final() {
        return Err(Precondition {
            kind: "REQUEST_CLOSED",
            why: "the request is already completed or rejected",
        });
    }
    if already_extended {
        return Err(Precondition {
            kind: "ALREADY_EXTENDED",
            why: "the deadline was already extended; Art. 12(3) allows one extension",
        });
    }
    if informed > original_due {
        return Err(Precondition {
            kind: "INFORMED_TOO_LATE",
            why: "the subject must be told of the extension within the original deadline (Art. 12(3))",
        });
    }
    add_months(received, 1 + months as u32).ok_or(Invalid {
        field: "months",
        why: "gives a deadline out of range",
    })
}

/// A lifecycle step.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Step {
    /// VerifyIdentity.
    Verify,
    /// FulfilRequest starts or retries.
    Fulfil,
    /// RejectRequest.
    Reject,
}

/// Whether `step` may happen in `status`; `Err` names why not.
pub fn allowed(status: RequestStatus, step: Step) -> Result<(), &'static str> {
    use RequestStatus::*;
    match (step, status) {
        (Step::Verify, Received) => Ok(()),
        (Step::Verify, _) => Err("only a RECEIVED request can be verified"),
        (Step::Fulfil, Verified | InProgress) => Ok(()),
        (Step::Fulfil, Received) => {
            Err("the requester's identity must be verified first (VerifyIdentity)")
        }
        (Step::Fulfil, _) => Err("the request is already completed or rejected"),
        (Step::Reject, s) if s.is_final() => Err("the request is already completed or rejected"),
        (Step::Reject, _) => Ok(()),
    }
}

/// Required systems that have not acknowledged every one of the request's events.
/// Before fulfilment every required system is pending; a fulfilled request without
/// events has nothing to confirm.
pub fn pending_systems(
    required: &[String],
    fulfilled: bool,
    event_ids: &[String],
    acks: &[(String, String)],
) -> Vec<String> {
    if !fulfilled {
        return required.to_vec();
    }
    required
        .iter()
        .filter(|system| {
            event_ids.iter().any(|e| {
                !acks
                    .iter()
                    .any(|(ev, sys)| ev == e && sys.as_str() == system.as_str())
            })
        })
        .cloned()
        .collect()
}

/// Systems as a sorted set without duplicates.
pub fn normalise_systems(systems: &[String]) -> Vec<String> {
    systems
        .iter()
        .map(|s| s.trim().to_owned())
        .collect::<BTreeSet<_>>()
        .into_iter()
        .collect()
}

/// Human-readable ISO-8601 duration in `lang`, e.g. "P5Y" → "5 years" / "5 år",
/// "P3Y6M" → "3 years 6 months". Unknown shapes are returned as given.
pub fn humanise_period(period: &str, lang: Language) -> String {
    let words = crate::report::text::of(lang);
    let Some(rest) = period.strip_prefix('P') else {
        return period.to_owned();
    };
    let mut parts = vec![];
    let mut num = String::new();
    for c in rest.chars() {
        if c.is_ascii_digit() {
            num.push(c);
            continue;
        }
        let Ok(n) = num.parse::<u64>() else {
            return period.to_owned();
        };
        num.clear();
        let (one, many) = match c {
            'Y' => words.year,
            'M' => words.month,
            'W' => words.week,
            'D' => words.day,
            _ => return period.to_owned(),
        };
        parts.push(format!("{n} {}", if n == 1 { one } else { many }));
    }
    if !num.is_empty() || parts.is_empty() {
        return period.to_owned();
    }
    parts.join(" ")
}

/// A retention rule as a sentence for a report in `lang`, e.g. "5 years after the end
/// of the financial year (bokføringsloven § 13)".
pub fn retention_sentence(
    lang: Language,
    period: &str,
    anchor: &str,
    field: &str,
    legal_reference: &str,
) -> String {
    let words = crate::report::text::of(lang);
    let p = humanise_period(period, lang);
    let from = match anchor {
        "COLLECTED_AT" => format!("{p} {}", words.after_collection),
        "END_OF_FINANCIAL_YEAR" => format!("{p} {}", words.after_financial_year),
        "END_OF_RELATIONSHIP" => format!("{p} {}", words.after_relationship),
        "CONSENT_WITHDRAWN" => format!("{p} {}", words.after_withdrawal),
        _ => p,
    };
    let mut s = if field.is_empty() {
        from
    } else {
        format!("{field}: {from}")
    };
    if !legal_reference.trim().is_empty() {
        s.push_str(&format!(" ({})", legal_reference.trim()));
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::TimeZone;

    fn at(y: i32, m: u32, d: u32) -> DateTime<Utc> {
        Utc.with_ymd_and_hms(y, m, d, 10, 30, 0)
            .single()
            .expect("date")
    }

    #[test]
    fn deadline_is_one_calendar_month_same_day_or_month_end() {
        assert_eq!(due_at(at(2026, 1, 15)), Some(at(2026, 2, 15)));
        assert_eq!(due_at(at(2026, 1, 31)), Some(at(2026, 2, 28)));
        assert_eq!(due_at(at(2028, 1, 31)), Some(at(2028, 2, 29)), "leap year");
        assert_eq!(due_at(at(2026, 3, 31)), Some(at(2026, 4, 30)));
        assert_eq!(due_at(at(2026, 12, 31)), Some(at(2027, 1, 31)), "year end");
        assert_eq!(due_at(at(2026, 2, 28)), Some(at(2026, 3, 28)));
        assert_eq!(add_months(at(2026, 11, 30), 3), Some(at(2027, 2, 28)));
        assert_eq!(add_months(at(2026, 1, 31), 0), Some(at(2026, 1, 31)));
    }

    #[test]
    fn one_extension_by_one_or_two_months_with_reason_told_in_time() {
        let received = at(2026, 1, 31);
        let due = due_at(received).expect("due");
        let told = Some(at(2026, 2, 10));
        let now = at(2026, 2, 11);
        let ok = |months| {
            extend(
                RequestStatus::Verified,
                false,
                received,
                due,
                months,
                "many requests",
                told,
                now,
            )
        };
        assert_eq!(ok(1), Ok(at(2026, 3, 31)));
        assert_eq!(ok(2), Ok(at(2026, 4, 30)));
        for bad in [0, 3, -1, 12] {
            assert!(
                matches!(
                    ok(bad),
                    Err(ExtensionRefused::Invalid {
                        field: "months",
                        ..
                    })
                ),
                "{bad}"
            );
        }
        let no_reason = extend(
            RequestStatus::Verified,
            false,
            received,
            due,
            1,
            "  ",
            told,
            now,
        );
        assert!(matches!(
            no_reason,
            Err(ExtensionRefused::Invalid {
                field: "reason",
                ..
            })
        ));
        let untold = extend(
            RequestStatus::Verified,
            false,
            received,
            due,
            1,
            "x",
            None,
            now,
        );
        assert!(matches!(
            untold,
            Err(ExtensionRefused::Invalid {
                field: "subject_informed_at",
                ..
            })
        ));
        let twice = extend(
            RequestStatus::Verified,
            true,
            received,
            due,
            1,
            "x",
            told,
            now,
        );
        assert!(matches!(
            twice,
            Err(ExtensionRefused::Precondition {
                kind: "ALREADY_EXTENDED",
                ..
            })
        ));
        let late = extend(
            RequestStatus::Verified,
            false,
            received,
            due,
            1,
            "x",
            Some(at(2026, 3, 1)),
            at(2026, 3, 2),
        );
        assert!(matches!(
            late,
            Err(ExtensionRefused::Precondition {
                kind: "INFORMED_TOO_LATE",
                ..
            })
        ));
        let closed = extend(
            RequestStatus::Completed,
            false,
            received,
            due,
            1,
            "x",
            told,
            now,
        );
        assert!(matches!(closed, Err(ExtensionRefused::Precondition { .. })));
    }

    #[test]
    fn lifecycle() {
        use RequestStatus::*;
        assert!(allowed(Received, Step::Verify).is_ok());
        for s in [Verified, InProgress, Completed, Rejected] {
            assert!(allowed(s, Step::Verify).is_err(), "{s:?}");
        }
        assert!(allowed(Received, Step::Fulfil).is_err(), "verify first");
        assert!(allowed(Verified, Step::Fulfil).is_ok());
        assert!(allowed(InProgress, Step::Fulfil).is_ok(), "retry");
        assert!(allowed(Completed, Step::Fulfil).is_err());
        assert!(allowed(Rejected, Step::Fulfil).is_err());
        for s in [Received, Verified, InProgress] {
            assert!(allowed(s, Step::Reject).is_ok(), "{s:?}");
        }
        assert!(allowed(Completed, Step::Reject).is_err());
        assert!(allowed(Rejected, Step::Reject).is_err());
        assert!(Completed.is_final() && Rejected.is_final() && !InProgress.is_final());
    }

    #[test]
    fn pending_until_every_required_system_acked_every_event() {
        let req = vec!["accounting".to_owned(), "crm".to_owned()];
        let events = vec!["e1".to_owned(), "e2".to_owned()];
        assert_eq!(pending_systems(&req, false, &[], &[]), req, "not fulfilled");
        assert!(
            pending_systems(&req, true, &[], &[]).is_empty(),
            "no events"
        );
        let acks = vec![
            ("e1".to_owned(), "crm".to_owned()),
            ("e2".to_owned(), "crm".to_owned()),
            ("e1".to_owned(), "accounting".to_owned()),
        ];
        assert_eq!(
            pending_systems(&req, true, &events, &acks),
            vec!["accounting"]
        );
        assert!(pending_systems(&[], true, &events, &[]).is_empty());
    }

    #[test]
    fn names_round_trip() {
        for t in RequestType::ALL {
            assert_eq!(RequestType::parse(t.as_str()), Some(*t));
        }
        for t in EventType::ALL {
            assert_eq!(EventType::parse(t.as_str()), Some(*t));
        }
        assert_eq!(RequestStatus::parse("nope"), None);
    }

    #[test]
    fn retention_sentences() {
        assert_eq!(
            retention_sentence(
                Language::En,
                "P5Y",
                "END_OF_FINANCIAL_YEAR",
                "",
                "bokføringsloven § 13"
            ),
            "5 years after the end of the financial year (bokføringsloven § 13)"
        );
        assert_eq!(
            retention_sentence(Language::En, "P3Y6M", "COLLECTED_AT", "receipt", ""),
            "receipt: 3 years 6 months after collection"
        );
        assert_eq!(
            retention_sentence(
                Language::Nb,
                "P5Y",
                "END_OF_FINANCIAL_YEAR",
                "",
                "bokføringsloven § 13"
            ),
            "5 år etter utløpet av regnskapsåret (bokføringsloven § 13)"
        );
        assert_eq!(
            retention_sentence(Language::Nn, "P3Y6M", "COLLECTED_AT", "", ""),
            "3 år 6 månader etter innsamlinga"
        );
        assert_eq!(humanise_period("P1Y", Language::En), "1 year");
        assert_eq!(humanise_period("P30D", Language::En), "30 days");
        assert_eq!(humanise_period("P1M", Language::Nb), "1 måned");
        assert_eq!(humanise_period("P2W", Language::Nn), "2 veker");
        assert_eq!(humanise_period("garbage", Language::Nb), "garbage");
        assert_eq!(humanise_period("P5", Language::En), "P5");
    }

    #[test]
    fn language_tags() {
        for (tag, want) in [
            ("nb", Language::Nb),
            ("NB", Language::Nb),
            ("no", Language::Nb),
            ("nb-NO", Language::Nb),
            ("nn", Language::Nn),
            ("nn-no", Language::Nn),
            ("en", Language::En),
            ("en-GB", Language::En),
            ("en-US", Language::En),
        ] {
            assert_eq!(language("language", tag), Ok(Some(want)), "{tag}");
        }
        assert_eq!(language("language", ""), Ok(None));
        for bad in ["de", "sv", "nb-SE", "english", "x"] {
            let e = language("language", bad).expect_err(bad);
            assert_eq!(e.field, "language");
        }
    }

    #[test]
    fn an_objection_summary_says_what_really_happens() {
        use ObjectionEffect::*;
        assert_eq!(objection_effect("CONTRACT", true), StopsAbsolutely);
        assert_eq!(objection_effect("CONTRACT", false), NoRightToObject);
        assert_eq!(
            objection_effect("PUBLIC_TASK", false),
            StopsUnlessCompellingGrounds
        );
        assert_eq!(objection_effect("CONSENT", false), EndsConsent);
        let s = objection_summary(&[
            ("newsletter".into(), StopsAbsolutely),
            ("archive".into(), StopsUnlessCompellingGrounds),
            ("invoicing".into(), NoRightToObject),
        ]);
        assert!(s.contains("processing stops for newsletter"), "{s}");
        assert!(s.contains("archive unless"), "{s}");
        assert!(s.contains("continues for invoicing"), "{s}");
    }
}
