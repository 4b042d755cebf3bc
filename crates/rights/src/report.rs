//! The report of a rights request (Art. 15 access, Art. 20 portability, Art. 17 erasure)
//! as one serde document: the same structure is stored (sealed), returned as the
//! `Report` message and as its `json` field, and rendered as readable text for
//! `vern requests export`.
//!
//! JSON conventions (from the proto): snake_case field names, enums as their value names,
//! times as RFC 3339 strings. The human-readable parts (the rights, the retention
//! wording, the rendered text) are in the report's `language`; every wording is in
//! [`text`].

pub mod text;

use chrono::{DateTime, Datelike, Timelike, Utc};
use serde::{Deserialize, Serialize};

use crate::domain::Language;
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
    /// When the recipient was ended (data no longer goes to it), if it was.
    #[serde(default)]
    pub end_time: Option<DateTime<Utc>>,
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
    /// The rules `retention` is written from (empty: the purpose's own summary, or no
    /// fixed period). Absent in reports made before languages existed.
    #[serde(default)]
    pub retention_rules: Vec<ReportRetention>,
    /// The subject objected and the controller recorded compelling legitimate grounds
    /// to continue (Art. 21(1)): the decision, so the subject can contest it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub compelling_grounds: Option<ReportGrounds>,
}

/// A compelling-grounds decision as the report shows it.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct ReportGrounds {
    /// The decision's id.
    pub decision_id: String,
    /// The controller's grounds.
    pub reason: String,
    /// When it was decided.
    pub decide_time: Option<DateTime<Utc>>,
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
    /// Field name the rule is limited to, if any.
    #[serde(default)]
    pub field: String,
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
    /// Language of the human-readable parts: "nb", "nn" or "en"; empty in reports made
    /// before languages existed (English).
    #[serde(default)]
    pub language: String,
}

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

/// A retention rule's wording in `lang`.
pub fn retention_rule_sentence(rule: &ReportRetention, lang: Language) -> String {
    crate::domain::retention_sentence(
        lang,
        &rule.period,
        &rule.anchor,
        &rule.field,
        &rule.legal_reference,
    )
}

/// The retention of a purpose in `lang`: its rules, else its own summary (the tenant's
/// text, as written), else "no fixed period".
pub fn purpose_retention_text(rules: &[ReportRetention], summary: &str, lang: Language) -> String {
    if !rules.is_empty() {
        return rules
            .iter()
            .map(|r| retention_rule_sentence(r, lang))
            .collect::<Vec<_>>()
            .join("; ");
    }
    if !summary.trim().is_empty() {
        return summary.trim().to_owned();
    }
    text::of(lang).no_fixed_period.to_owned()
}

impl Report {
    /// The report's language (English for reports made before languages existed).
    pub fn lang(&self) -> Language {
        Language::of_stored(&self.language)
    }

    /// Writes the human-readable parts in `lang`: the rights (naming the complaint
    /// authority) and the retention wording of each purpose (a tenant's own summary
    /// stays as written). The structured fields are not touched.
    pub fn localise(&mut self, lang: Language) {
        self.language = lang.as_str().to_owned();
        self.rights = text::rights(lang, &self.complaint_authority.name);
        for p in &mut self.purposes {
            if !p.retention_rules.is_empty() {
                p.retention = purpose_retention_text(&p.retention_rules, "", lang);
            } else if text::is_no_fixed_period(&p.retention) {
                p.retention = text::of(lang).no_fixed_period.to_owned();
            }
        }
    }
}

fn time(t: &Option<DateTime<Utc>>, lang: Language) -> String {
    let Some(t) = t else {
        return "-".into();
    };
    let words = text::of(lang);
    let month = words.months[t.month0() as usize];
    words
        .date_format
        .replace("{d}", &t.day().to_string())
        .replace("{month}", month)
        .replace("{y}", &t.year().to_string())
        .replace("{hm}", &format!("{:02}:{:02}", t.hour(), t.minute()))
}

/// The report as readable text (the subject's copy) in the report's language.
/// Contains personal data.
pub fn render_text(r: &Report) -> String {
    use std::fmt::Write;
    let lang = r.lang();
    let w = text::of(lang);
    let tm = |t: &Option<DateTime<Utc>>| time(t, lang);
    let mut o = String::new();
    let title = match r.request_type.as_str() {
        "ACCESS" => w.title_access,
        "PORTABILITY" => w.title_portability,
        "ERASURE" => w.title_erasure,
        "RECTIFICATION" => w.title_rectification,
        "RESTRICTION" => w.title_restriction,
        "OBJECTION" => w.title_objection,
        "WITHDRAW_CONSENT" => w.title_withdraw_consent,
        _ => w.title_other,
    };
    let _ = writeln!(o, "{title}");
    let _ = writeln!(o, "{}", "=".repeat(title.chars().count()));
    let _ = writeln!(o, "{}{}", w.label_request, r.rights_request_id);
    let _ = writeln!(o, "{}{}", w.label_produced, tm(&Some(r.generate_time)));
    let c = &r.controller;
    let _ = writeln!(
        o,
        "{}{} ({} {}), {} {}",
        w.label_controller, c.name, w.org_no, c.org_number, w.privacy_contact, c.dpo_email
    );
    if let Some(id) = &r.identifiers {
        let _ = writeln!(o, "\n{}", w.heading_identifiers);
        for (k, v) in w
            .id_labels
            .iter()
            .zip([&id.email, &id.phone, &id.national_id, &id.name])
        {
            if !v.is_empty() {
                let _ = writeln!(o, "  {k:<14} {v}");
            }
        }
    }
    if !r.external_refs.is_empty() {
        let _ = writeln!(o, "\n{}", w.heading_references);
        for x in &r.external_refs {
            let _ = writeln!(o, "  {}: {}", x.system, x.id);
        }
    }
    if !r.data.is_empty() || matches!(r.request_type.as_str(), "ACCESS" | "PORTABILITY") {
        let _ = writeln!(o, "\n{}", w.heading_data);
        if r.data.is_empty() {
            let _ = writeln!(o, "  {}", w.none_list);
        }
        for d in &r.data {
            let _ = writeln!(
                o,
                "  - {} ({}): {}",
                d.field,
                text::lookup(&w.categories, &d.category),
                d.value
            );
            let _ = writeln!(
                o,
                "      {} {}; {} {}; {} {}{}{}",
                w.source,
                d.source,
                w.purposes,
                d.purposes.join(", "),
                w.collected,
                tm(&d.collected_at),
                if d.provided_by_subject {
                    format!("; {}", w.provided_by_you)
                } else {
                    String::new()
                },
                if d.restricted {
                    format!("; {}", w.restricted)
                } else {
                    String::new()
                }
            );
        }
    }
    if !r.purposes.is_empty() {
        let _ = writeln!(o, "\n{}", w.heading_purposes);
        for p in &r.purposes {
            let _ = writeln!(o, "  {}: {}", p.key, p.description);
            let _ = writeln!(
                o,
                "      {}{}",
                w.label_legal_basis,
                text::lookup(&w.legal_bases, &p.legal_basis)
            );
            if !p.legitimate_interest.is_empty() {
                let _ = writeln!(o, "      {}{}", w.label_interest, p.legitimate_interest);
            }
            let categories: Vec<&str> = p
                .data_categories
                .iter()
                .map(|c| text::lookup(&w.categories, c))
                .collect();
            let _ = writeln!(o, "      {}{}", w.label_categories, categories.join(", "));
            let recipients = if p.recipients.is_empty() {
                w.no_recipients.to_owned()
            } else {
                p.recipients
                    .iter()
                    .map(|x| {
                        let mut s = format!(
                            "{} ({}, {})",
                            x.name,
                            text::lookup(&w.roles, &x.role),
                            x.country
                        );
                        if !x.transfer_safeguard.is_empty() {
                            s.push_str(&format!(
                                ", {} {}",
                                w.safeguard,
                                text::lookup(&w.safeguards, &x.transfer_safeguard)
                            ));
                        }
                        if x.end_time.is_some() {
                            s.push_str(&format!(", {} {}", w.ended, tm(&x.end_time)));
                        }
                        s
                    })
                    .collect::<Vec<_>>()
                    .join("; ")
            };
            let _ = writeln!(o, "      {}{recipients}", w.label_recipients);
            let _ = writeln!(o, "      {}{}", w.label_kept, p.retention);
            if p.direct_marketing {
                let _ = writeln!(o, "      {}", w.direct_marketing_yes);
            }
            if !p.consent_status.is_empty() {
                let _ = writeln!(
                    o,
                    "      {}{}",
                    w.label_consent,
                    text::lookup(&w.consent_statuses, &p.consent_status)
                );
            }
            if let Some(g) = &p.compelling_grounds {
                let _ = writeln!(o, "      {}{}", w.label_compelling_grounds, g.reason);
            }
        }
    }
    if r.request_type == "ERASURE" {
        let _ = writeln!(o, "\n{}: {}", w.erased_records, r.erased_record_count);
        if !r.retained.is_empty() {
            let _ = writeln!(o, "{}", w.kept_by_law);
            for k in &r.retained {
                let _ = writeln!(
                    o,
                    "  - {} ({}) {} {}: {}",
                    k.field,
                    text::lookup(&w.categories, &k.category),
                    w.until,
                    tm(&k.retain_until_time),
                    k.legal_reference
                );
            }
        }
    }
    let adm = if text::is_no_automated_decisions(&r.automated_decision_making) {
        w.no_automated_decisions
    } else {
        r.automated_decision_making.as_str()
    };
    let _ = writeln!(o, "\n{}: {adm}", w.automated_decisions);
    if !r.rights.is_empty() {
        let _ = writeln!(o, "\n{}", w.heading_rights);
        for s in &r.rights {
            let _ = writeln!(o, "  - {s}");
        }
    }
    let a = &r.complaint_authority;
    let _ = writeln!(
        o,
        "\n{}: {}{}",
        w.complain_to,
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
        assert_eq!(v["language"], "");
        let text = render_text(&r);
        assert!(text.contains("Datatilsynet (https://www.datatilsynet.no)"));
    }

    fn sample(lang: Language) -> Report {
        let mut r = Report {
            rights_request_id: "r1".into(),
            request_type: "ACCESS".into(),
            generate_time: DateTime::from_timestamp(1_770_000_000, 0).expect("t"),
            complaint_authority: complaint_authority(""),
            automated_decision_making: crate::model::NO_AUTOMATED_DECISIONS.into(),
            purposes: vec![ReportPurpose {
                key: "invoicing".into(),
                legal_basis: "LEGAL_OBLIGATION".into(),
                data_categories: vec!["FINANCIAL".into()],
                retention_rules: vec![ReportRetention {
                    category: "FINANCIAL".into(),
                    period: "P5Y".into(),
                    anchor: "END_OF_FINANCIAL_YEAR".into(),
                    legal_reference: "bokføringsloven § 13".into(),
                    ..Default::default()
                }],
                ..Default::default()
            }],
            ..Default::default()
        };
        r.localise(lang);
        r
    }

    #[test]
    fn bokmal_report_is_norwegian() {
        let r = sample(Language::Nb);
        assert_eq!(r.language, "nb");
        let t = render_text(&r);
        assert!(t.contains("Datatilsynet"), "{t}");
        assert!(t.contains("rett til innsyn"), "{t}");
        assert!(t.contains("klage til Datatilsynet"), "{t}");
        assert!(t.contains("begrensning av behandlingen"), "{t}");
        assert!(t.contains("dataportabilitet"), "{t}");
        assert!(t.contains("5 år etter utløpet av regnskapsåret"), "{t}");
        assert!(t.contains("rettslig forpliktelse"), "{t}");
        assert!(t.contains("profilering: ingen"), "{t}");
        assert!(t.contains("2. februar 2026 kl."), "{t}");
        assert!(!t.contains("right of access"), "{t}");
        assert!(!t.contains("years"), "{t}");
    }

    #[test]
    fn nynorsk_report_has_its_own_wording() {
        let t = render_text(&sample(Language::Nn));
        assert!(t.contains("rett til innsyn"), "{t}");
        assert!(t.contains("avgrensing av behandlinga"), "{t}");
        assert!(t.contains("klage til Datatilsynet"), "{t}");
        assert!(t.contains("Rettane dine"), "{t}");
        assert!(t.contains("rekneskapsåret"), "{t}");
        assert!(
            !t.contains("begrensning av behandlingen"),
            "bokmål in nynorsk: {t}"
        );
        assert!(!t.contains("Dine rettigheter"), "{t}");
    }

    #[test]
    fn english_report_is_english() {
        let t = render_text(&sample(Language::En));
        assert!(t.contains("right of access"), "{t}");
        assert!(t.contains("lodge a complaint with Datatilsynet"), "{t}");
        assert!(
            t.contains("5 years after the end of the financial year"),
            "{t}"
        );
        assert!(!t.contains("innsyn"), "{t}");
    }

    #[test]
    fn localising_again_rewrites_rights_and_retention() {
        let mut r = sample(Language::En);
        r.purposes.push(ReportPurpose {
            key: "newsletter".into(),
            retention: text::of(Language::En).no_fixed_period.into(),
            ..Default::default()
        });
        r.purposes.push(ReportPurpose {
            key: "own".into(),
            retention: "as the tenant wrote it".into(),
            ..Default::default()
        });
        r.localise(Language::Nb);
        assert_eq!(r.rights, text::rights(Language::Nb, "Datatilsynet"));
        assert!(r.purposes[0].retention.starts_with("5 år"));
        assert_eq!(
            r.purposes[1].retention,
            text::of(Language::Nb).no_fixed_period
        );
        assert_eq!(r.purposes[2].retention, "as the tenant wrote it");
        // The API values stay language-neutral.
        let v: serde_json::Value = serde_json::to_value(&r).expect("json");
        assert_eq!(v["purposes"][0]["legal_basis"], "LEGAL_OBLIGATION");
        assert_eq!(v["language"], "nb");
    }

    #[test]
    fn every_language_states_every_right() {
        for lang in Language::ALL {
            let rights = text::rights(*lang, "Datatilsynet");
            assert_eq!(rights.len(), 10);
            for art in ["15", "16", "17", "18", "19", "20", "21", "22", "77"] {
                assert!(
                    rights.iter().any(|s| s.contains(&format!(" {art})."))),
                    "{lang:?} lacks Art. {art}"
                );
            }
            assert!(rights.iter().all(|s| !s.contains("{authority}")));
        }
    }
}
