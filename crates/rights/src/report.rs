//! The report of a rights request (Art. 15 access, Art. 20 portability, Art. 17 erasure)
//! as one serde document: the same structure is stored (sealed), returned as the
//! `Report` message and as its `json` field, and rendered as readable text for
//! `vern requests export`.
//!
//! JSON conventions (from the proto): snake_case field names, enums as their value names,
//! times as RFC 3339 strings.

use chrono::{DateTime, SecondsFormat, Utc};
use serde::{Deserialize, Serialize};

use crate::model::{ExternalRef, Identity, RetainedItem};

/// The controller.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct ReportController {
    /// Tenant id.
    pub tenant_id: String,
    /// Name.
    pub name: String,
    /// Organisation number.
    pub org_number: String,
    /// DPO contact.
    pub dpo_email: String,
}

/// A record. `value` is personal data.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct ReportRecord {
    /// Record id.
    pub record_id: String,
    /// Category name.
    pub category: String,
    /// Field name.
    pub field: String,
    /// The value.
    pub value: String,
    /// Source (Art. 15(1)(g)).
    pub source: String,
    /// Purpose keys.
    pub purposes: Vec<String>,
    /// Collected.
    pub collected_at: Option<DateTime<Utc>>,
    /// Provided by the subject.
    pub provided_by_subject: bool,
    /// Restricted.
    pub restricted: bool,
}

/// A recipient.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct ReportRecipient {
    /// Name.
    pub name: String,
    /// "processor", "controller" or "authority".
    pub role: String,
    /// Country.
    pub country: String,
    /// Transfer safeguard name, if any.
    pub transfer_safeguard: String,
}

/// A purpose with everything Art. 15(1) asks about it.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct ReportPurpose {
    /// Key.
    pub key: String,
    /// Description.
    pub description: String,
    /// Legal basis name, e.g. "CONTRACT".
    pub legal_basis: String,
    /// Legitimate interest.
    pub legitimate_interest: String,
    /// Category names.
    pub data_categories: Vec<String>,
    /// Recipients.
    pub recipients: Vec<ReportRecipient>,
    /// Retention period or criteria.
    pub retention: String,
    /// Direct marketing.
    pub direct_marketing: bool,
    /// Consent status for consent-based purposes.
    pub consent_status: String,
}

/// A retention rule.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct ReportRetention {
    /// Category name, or "DATA_CATEGORY_UNSPECIFIED".
    pub category: String,
    /// Purpose key.
    pub purpose: String,
    /// ISO-8601 period.
    pub period: String,
    /// Anchor name.
    pub anchor: String,
    /// Legal reference.
    pub legal_reference: String,
}

/// Where to complain.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct ComplaintAuthority {
    /// Name.
    pub name: String,
    /// Website.
    pub url: String,
}

/// The report.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct Report {
    /// The request.
    pub rights_request_id: String,
    /// The right, e.g. "ACCESS".
    #[serde(rename = "type")]
    pub request_type: String,
    /// The subject.
    pub subject_id: String,
    /// When produced.
    pub generate_time: DateTime<Utc>,
    /// The controller.
    pub controller: ReportController,
    /// Identifiers (ACCESS, PORTABILITY).
    pub identifiers: Option<Identity>,
    /// External references.
    pub external_refs: Vec<ExternalRef>,
    /// The data.
    pub data: Vec<ReportRecord>,
    /// Purposes.
    pub purposes: Vec<ReportPurpose>,
    /// Retention rules.
    pub retention: Vec<ReportRetention>,
    /// Rights sentences.
    pub rights: Vec<String>,
    /// Complaint authority.
    pub complaint_authority: ComplaintAuthority,
    /// Automated decision-making.
    pub automated_decision_making: String,
    /// ERASURE: kept records.
    pub retained: Vec<RetainedItem>,
    /// ERASURE: erased count.
    pub erased_record_count: i32,
}

/// The subject's rights as told in every report (Art. 15(1)(e), (f)).
pub const RIGHTS: [&str; 6] = [
    "You have the right to have inaccurate personal data about you rectified and incomplete data completed (Art. 16).",
    "You have the right to have your personal data erased where it is no longer needed, you withdraw consent or object, or it was processed unlawfully (Art. 17).",
    "You have the right to have processing of your personal data restricted, e.g. while its accuracy is contested (Art. 18).",
    "You have the right to object to processing based on legitimate interests or a public task, and always to direct marketing (Art. 21).",
    "You have the right to receive the personal data you provided, processed under consent or contract, in a structured, machine-readable format and to have it sent to another controller (Art. 20).",
    "Where processing is based on consent, you may withdraw your consent at any time without affecting the lawfulness of processing before the withdrawal (Art. 7(3)).",
];

/// The Norwegian supervisory authority.
pub const DATATILSYNET: &str = "Datatilsynet";
/// Its website.
pub const DATATILSYNET_URL: &str = "https://www.datatilsynet.no";

/// The complaint authority for a tenant's configured supervisory authority.
pub fn complaint_authority(configured: &str) -> ComplaintAuthority {
    let name = if configured.trim().is_empty() {
        DATATILSYNET
    } else {
        configured.trim()
    };
    ComplaintAuthority {
        name: name.to_owned(),
        url: if name.eq_ignore_ascii_case(DATATILSYNET) {
            DATATILSYNET_URL.to_owned()
        } else {
            String::new()
        },
    }
}

fn time(t: &Option<DateTime<Utc>>) -> String {
    t.map(|t| t.to_rfc3339_opts(SecondsFormat::Secs, true))
        .unwrap_or_else(|| "-".into())
}

/// The report as readable text (the subject's copy). Contains personal data.
pub fn render_text(r: &Report) -> String {
    use std::fmt::Write;
    let mut o = String::new();
    let title = match r.request_type.as_str() {
        "ACCESS" => "Access to your personal data (GDPR Art. 15)",
        "PORTABILITY" => "Your data for portability (GDPR Art. 20)",
        "ERASURE" => "Erasure of your personal data (GDPR Art. 17)",
        "RECTIFICATION" => "Rectification of your personal data (GDPR Art. 16)",
        "RESTRICTION" => "Restriction of processing (GDPR Art. 18)",
        "OBJECTION" => "Your objection to processing (GDPR Art. 21)",
        "WITHDRAW_CONSENT" => "Withdrawal of consent (GDPR Art. 7(3))",
        _ => "Rights request report",
    };
    let _ = writeln!(o, "{title}");
    let _ = writeln!(o, "{}", "=".repeat(title.chars().count()));
    let _ = writeln!(o, "Request      {}", r.rights_request_id);
    let _ = writeln!(o, "Produced     {}", time(&Some(r.generate_time)));
    let c = &r.controller;
    let _ = writeln!(
        o,
        "Controller   {} (org. no. {}), privacy contact {}",
        c.name, c.org_number, c.dpo_email
    );
    if let Some(id) = &r.identifiers {
        let _ = writeln!(o, "\nYour identifiers");
        for (k, v) in [
            ("e-mail", &id.email),
            ("phone", &id.phone),
            ("national id", &id.national_id),
            ("name", &id.name),
        ] {
            if !v.is_empty() {
                let _ = writeln!(o, "  {k:<12} {v}");
            }
        }
    }
    if !r.external_refs.is_empty() {
        let _ = writeln!(o, "\nReferences in our systems");
        for x in &r.external_refs {
            let _ = writeln!(o, "  {}: {}", x.system, x.id);
        }
    }
    if !r.data.is_empty() || matches!(r.request_type.as_str(), "ACCESS" | "PORTABILITY") {
        let _ = writeln!(o, "\nThe personal data we hold about you");
        if r.data.is_empty() {
            let _ = writeln!(o, "  (none)");
        }
        for d in &r.data {
            let _ = writeln!(o, "  - {} ({}): {}", d.field, d.category, d.value);
            let _ = writeln!(
                o,
                "      source {}; purposes {}; collected {}{}{}",
                d.source,
                d.purposes.join(", "),
                time(&d.collected_at),
                if d.provided_by_subject {
                    "; provided by you"
                } else {
                    ""
                },
                if d.restricted { "; restricted" } else { "" }
            );
        }
    }
    if !r.purposes.is_empty() {
        let _ = writeln!(o, "\nWhy we process it");
        for p in &r.purposes {
            let _ = writeln!(o, "  {}: {}", p.key, p.description);
            let _ = writeln!(o, "      legal basis      {}", p.legal_basis);
            if !p.legitimate_interest.is_empty() {
                let _ = writeln!(o, "      interest         {}", p.legitimate_interest);
            }
            let _ = writeln!(o, "      categories       {}", p.data_categories.join(", "));
            let recipients = if p.recipients.is_empty() {
                "none".to_owned()
            } else {
                p.recipients
                    .iter()
                    .map(|x| {
                        let mut s = format!("{} ({}, {})", x.name, x.role, x.country);
                        if !x.transfer_safeguard.is_empty() {
                            s.push_str(&format!(", safeguard {}", x.transfer_safeguard));
                        }
                        s
                    })
                    .collect::<Vec<_>>()
                    .join("; ")
            };
            let _ = writeln!(o, "      recipients       {recipients}");
            let _ = writeln!(o, "      kept             {}", p.retention);
            if p.direct_marketing {
                let _ = writeln!(o, "      direct marketing yes");
            }
            if !p.consent_status.is_empty() {
                let _ = writeln!(o, "      your consent     {}", p.consent_status);
            }
        }
    }
    if r.request_type == "ERASURE" {
        let _ = writeln!(o, "\nErased records: {}", r.erased_record_count);
        if !r.retained.is_empty() {
            let _ = writeln!(
                o,
                "Kept, with processing restricted, because the law requires it:"
            );
            for k in &r.retained {
                let _ = writeln!(
                    o,
                    "  - {} ({}) until {}: {}",
                    k.field,
                    k.category,
                    time(&k.retain_until_time),
                    k.legal_reference
                );
            }
        }
    }
    let _ = writeln!(
        o,
        "\nAutomated decision-making, including profiling: {}",
        r.automated_decision_making
    );
    if !r.rights.is_empty() {
        let _ = writeln!(o, "\nYour rights");
        for s in &r.rights {
            let _ = writeln!(o, "  - {s}");
        }
    }
    let a = &r.complaint_authority;
    let _ = writeln!(
        o,
        "\nYou may complain to the supervisory authority: {}{}",
        a.name,
        if a.url.is_empty() {
            String::new()
        } else {
            format!(" ({})", a.url)
        }
    );
    o
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn json_uses_proto_field_names_and_rfc3339() {
        let r = Report {
            rights_request_id: "r1".into(),
            request_type: "ACCESS".into(),
            generate_time: DateTime::from_timestamp(1_770_000_000, 0).expect("t"),
            complaint_authority: complaint_authority(""),
            ..Default::default()
        };
        let v: serde_json::Value = serde_json::to_value(&r).expect("json");
        assert_eq!(v["type"], "ACCESS");
        assert_eq!(v["complaint_authority"]["name"], "Datatilsynet");
        assert_eq!(
            v["complaint_authority"]["url"],
            "https://www.datatilsynet.no"
        );
        assert!(
            v["generate_time"]
                .as_str()
                .expect("str")
                .starts_with("2026-")
        );
        let text = render_text(&r);
        assert!(text.contains("Datatilsynet (https://www.datatilsynet.no)"));
    }
}
