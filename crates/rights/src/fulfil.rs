//! FulfilRequest: carries a verified request out through the other services, builds
//! and seals its report, and publishes the outcomes others must act on to the feed —
//! the events, the report and the request's new state commit in one transaction.
//!
//! Calls to other services carry request ids derived from the rights request, so a
//! retry after a partial failure (the request then stays IN_PROGRESS) repeats nothing.

use std::collections::BTreeSet;

use chrono::{DateTime, Utc};
use vern_kit::context::TenantId;
use vern_kit::idempotency::Key;
use vern_proto::common::v1 as common;
use vern_proto::consents::v1 as cpb;
use vern_proto::retention::v1 as rpb;
use vern_proto::subjects::v1 as spb;
use vern_proto::tenants::v1 as tpb;

use crate::api::basis_name;
use crate::domain::{
    self, Channel, EventType, IDENTIFIER_FIELDS, Language, RequestStatus, RequestType, Step,
};
use crate::error::RightsError;
use crate::model::{ExternalRef, Identity, Outcome, RetainedItem, RightsRequest};
use crate::report::{
    self, Report, ReportController, ReportPurpose, ReportRecipient, ReportRecord, ReportRetention,
};
use crate::seal::Kind;
use crate::service::Rights;
use crate::store::entities::{event, report as report_row, request};

fn category_name(c: i32) -> String {
    crate::api::category_name(
        common::DataCategory::try_from(c).unwrap_or(common::DataCategory::Unspecified),
    )
    .to_owned()
}

// Other services' enums by explicit arms: report texts never follow their protobuf
// value names.
vern_kit::proto_enum!(consent_channel, channel_of_consent: Channel => cpb::ConsentChannel {
    WebForm, Email, Paper, Phone, InPerson, Api
});

/// The report's name of a consent status.
fn consent_status_name(s: cpb::ConsentStatus) -> &'static str {
    use cpb::ConsentStatus as S;
    match s {
        S::Unspecified => "CONSENT_STATUS_UNSPECIFIED",
        S::Granted => "GRANTED",
        S::Withdrawn => "WITHDRAWN",
        S::Objected => "OBJECTED",
        S::Expired => "EXPIRED",
        S::NotRecorded => "NOT_RECORDED",
    }
}

/// The report's name of a transfer safeguard; empty when unspecified.
fn safeguard_name(s: tpb::TransferSafeguard) -> &'static str {
    use tpb::TransferSafeguard as S;
    match s {
        S::Unspecified => "",
        S::AdequacyDecision => "ADEQUACY_DECISION",
        S::StandardContractualClauses => "STANDARD_CONTRACTUAL_CLAUSES",
        S::BindingCorporateRules => "BINDING_CORPORATE_RULES",
        S::Derogation => "DEROGATION",
    }
}

fn basis_of(p: &tpb::Purpose) -> common::LegalBasis {
    common::LegalBasis::try_from(p.legal_basis).unwrap_or(common::LegalBasis::Unspecified)
}

fn time(t: Option<&prost_types::Timestamp>) -> Option<DateTime<Utc>> {
    t.and_then(vern_kit::time::from_timestamp)
}

fn refs(s: &spb::Subject) -> Vec<ExternalRef> {
    s.external_refs
        .iter()
        .map(|r| ExternalRef {
            system: r.system.clone(),
            id: r.id.clone(),
        })
        .collect()
}

fn record(r: &spb::Record) -> ReportRecord {
    ReportRecord {
        record_id: r.record_id.clone(),
        category: category_name(r.category),
        field: r.field.clone(),
        value: r.value.clone(),
        source: r.source.clone(),
        purposes: r.purposes.clone(),
        collected_at: time(r.collected_at.as_ref()),
        provided_by_subject: r.provided_by_subject,
        restricted: r.restricted,
    }
}

fn recipient_role(r: i32) -> &'static str {
    match tpb::RecipientRole::try_from(r) {
        Ok(tpb::RecipientRole::Processor) => "processor",
        Ok(tpb::RecipientRole::Controller) => "controller",
        Ok(tpb::RecipientRole::Authority) => "authority",
        _ => "unspecified",
    }
}

fn anchor_name(a: i32) -> &'static str {
    use rpb::RetentionAnchor as A;
    match A::try_from(a) {
        Ok(A::CollectedAt) => "COLLECTED_AT",
        Ok(A::EndOfFinancialYear) => "END_OF_FINANCIAL_YEAR",
        Ok(A::EndOfRelationship) => "END_OF_RELATIONSHIP",
        Ok(A::ConsentWithdrawn) => "CONSENT_WITHDRAWN",
        Ok(A::Unspecified) | Err(_) => "RETENTION_ANCHOR_UNSPECIFIED",
    }
}

/// Whether `policy` covers `record`.
fn policy_matches(p: &rpb::RetentionPolicy, r: &spb::Record) -> bool {
    (p.category == 0 || p.category == r.category)
        && (p.purpose.is_empty() || r.purposes.contains(&p.purpose))
        && (p.field.is_empty() || p.field == r.field)
}

/// Whether `policy` concerns the purpose: named for it, or for one of its categories.
fn policy_for_purpose(p: &rpb::RetentionPolicy, purpose: &tpb::Purpose) -> bool {
    if !p.purpose.is_empty() {
        return p.purpose == purpose.key;
    }
    p.category != 0 && purpose.data_categories.contains(&p.category)
}

fn retention_of(p: &rpb::RetentionPolicy) -> ReportRetention {
    ReportRetention {
        category: category_name(p.category),
        purpose: p.purpose.clone(),
        period: p.period.clone(),
        anchor: anchor_name(p.anchor).to_owned(),
        legal_reference: p.legal_reference.clone(),
        field: p.field.clone(),
    }
}

/// The retention of a purpose as told in a report in `lang`, with the rules it is
/// written from.
pub fn purpose_retention(
    purpose: &tpb::Purpose,
    policies: &[rpb::RetentionPolicy],
    lang: Language,
) -> (String, Vec<ReportRetention>) {
    let rules: Vec<ReportRetention> = policies
        .iter()
        .filter(|p| policy_for_purpose(p, purpose))
        .map(retention_of)
        .collect();
    let text = report::purpose_retention_text(&rules, &purpose.retention_summary, lang);
    (text, rules)
}

/// When the subject's data could first have gone anywhere: the earliest of the
/// subject's creation, its records' collection and its consent events. `None` when
/// nothing tells (then every recipient is named).
fn earliest_data_time(
    subject: &spb::Subject,
    consents: &[cpb::ConsentState],
) -> Option<DateTime<Utc>> {
    subject
        .records
        .iter()
        .filter_map(|r| time(r.collected_at.as_ref()))
        .chain(time(subject.create_time.as_ref()))
        .chain(consents.iter().filter_map(|c| time(c.update_time.as_ref())))
        .min()
}

/// Whether the subject's data may have gone to `r`: it is current, or it was ended
/// after the subject's data existed (`since`).
fn received_data_since(r: &tpb::Recipient, since: Option<DateTime<Utc>>) -> bool {
    match (time(r.end_time.as_ref()), since) {
        (None, _) | (_, None) => true,
        (Some(end), Some(since)) => end > since,
    }
}

/// What a fulfilment produced, before it is committed.
struct Done {
    outcome: Outcome,
    events: Vec<event::Model>,
    report: Report,
}

impl Rights {
    /// FulfilRequest.
    pub async fn fulfil(
        &self,
        tenant: &TenantId,
        id: &str,
        note: &str,
        key: Option<Key>,
    ) -> Result<RightsRequest, RightsError> {
        let mut v = vern_kit::error::Violations::new();
        v.check(vern_kit::validate::optional_text("note", note, 1000));
        v.finish()?;
        if let Some(id) = self.store.replay::<String>(key.as_ref()).await? {
            return self.get(tenant, &id).await;
        }
        let mut row = self.row(tenant, id).await?;
        vern_kit::audit::subject(&row.subject_id);
        let status = RequestStatus::parse(&row.status).ok_or(RightsError::Corrupt("status"))?;
        domain::allowed(status, Step::Fulfil)
            .map_err(|why| RightsError::state("NOT_VERIFIED", why))?;
        if row.fulfilled {
            let pending = self.hydrate(row).await?.pending_systems;
            return Err(RightsError::state(
                "ALREADY_FULFILLED",
                format!(
                    "the request was carried out; waiting for confirmations from: {}",
                    pending.join(", ")
                ),
            ));
        }
        if status == RequestStatus::Verified {
            // Visible as IN_PROGRESS while the other services act; a failure below leaves
            // it so, and FulfilRequest can be retried.
            let version = row.version;
            let now = vern_kit::time::now();
            row = request::Model {
                status: RequestStatus::InProgress.as_str().to_owned(),
                version: version + 1,
                update_time: now.max(row.update_time),
                ..row
            };
            self.store.mark(row.clone(), version).await?;
        }
        let req = self.hydrate(row.clone()).await?;
        let done = self.carry_out(&req).await?;
        let t = tenant.as_str();
        let now = vern_kit::time::now();
        let event_ids: Vec<String> = done.events.iter().map(|e| e.event_id.clone()).collect();
        let complete = req.required_systems.is_empty() || event_ids.is_empty();
        let mut outcome = done.outcome;
        outcome.event_ids = event_ids;
        // A request whose key was destroyed with its erased subject gets a fresh one for
        // the report of what is (still) held.
        let (dek, wrapped_key) = if row.wrapped_key.is_empty() {
            self.sealer.new_key(t, &req.rights_request_id)?
        } else {
            let dek = self
                .sealer
                .key(t, &req.rights_request_id, &row.wrapped_key)?;
            (dek, row.wrapped_key.clone())
        };
        let sealed =
            self.sealer
                .seal(&dek, t, &req.rights_request_id, Kind::Report, &done.report)?;
        // The events' external references are personal data: sealed with the request's
        // key, which an ERASURE request keeps, so downstream systems can still read the
        // references of an erasure after the subject is gone.
        let mut events = done.events;
        for e in &mut events {
            let refs = std::mem::replace(&mut e.external_refs, "[]".to_owned());
            e.external_refs_ct = (refs != "[]").then(|| {
                self.sealer
                    .seal_refs(&dek, t, &req.rights_request_id, &e.event_id, &refs)
            });
        }
        let version = row.version;
        let has_events = !events.is_empty();
        let updated = request::Model {
            status: if complete {
                RequestStatus::Completed
            } else {
                RequestStatus::InProgress
            }
            .as_str()
            .to_owned(),
            fulfilled: true,
            complete_time: complete.then_some(now),
            outcome: Some(
                serde_json::to_string(&outcome).map_err(|_| RightsError::Corrupt("outcome"))?,
            ),
            version: version + 1,
            update_time: now.max(row.update_time),
            wrapped_key,
            ..row
        };
        let report = report_row::Model {
            tenant_id: t.to_owned(),
            rights_request_id: req.rights_request_id.clone(),
            sealed,
            generate_time: done.report.generate_time,
        };
        let erasure = req.request_type == RequestType::Erasure && !req.subject_id.is_empty();
        let id = if erasure {
            // The rights service's own copies go with the subject, in the same commit.
            let id = self
                .store
                .commit_erasure(updated, version, events, Some(report), now, key.as_ref())
                .await?;
            self.store.checkpoint().await;
            id
        } else {
            self.store
                .commit_request(updated, version, events, Some(report), key.as_ref())
                .await?
        };
        if has_events {
            self.feed.wake(t);
        }
        tracing::info!(
            tenant = t,
            rights_request_id = %id,
            completed = complete,
            "rights request fulfilled"
        );
        self.get(tenant, &id).await
    }

    fn new_event(
        &self,
        req: &RightsRequest,
        event_type: EventType,
        external_refs: &[ExternalRef],
        purposes: Vec<String>,
        fields: Vec<String>,
        retain_until: Option<DateTime<Utc>>,
    ) -> Result<event::Model, RightsError> {
        Ok(event::Model {
            tenant_id: req.tenant_id.clone(),
            seq: 0,
            event_id: uuid::Uuid::now_v7().to_string(),
            event_type: event_type.as_str().to_owned(),
            subject_id: req.subject_id.clone(),
            external_refs: to_json(&external_refs)?,
            rights_request_id: req.rights_request_id.clone(),
            purposes: to_json(&purposes)?,
            fields: to_json(&fields)?,
            retain_until_time: retain_until,
            occur_time: vern_kit::time::now(),
            // Sealed by `fulfil` with the request's key before it is stored.
            external_refs_ct: None,
            detail: if event_type == EventType::Erased {
                to_json(&crate::model::ErasureDetail {
                    cause: Some(crate::domain::ErasureCause::RightsRequest),
                    ..Default::default()
                })?
            } else {
                "{}".to_owned()
            },
        })
    }

    /// The report skeleton every request gets: controller, rights, authority.
    async fn base_report(&self, req: &RightsRequest) -> Result<Report, RightsError> {
        let t = req.tenant_id.as_str();
        let tenant = self.upstream.tenant(t).await?;
        let settings = self.settings(&TenantId::new(t)).await?;
        // A request from before languages existed gets the tenant's default now.
        let lang = req.language.unwrap_or(settings.default_language);
        let mut report = Report {
            rights_request_id: req.rights_request_id.clone(),
            request_type: req.request_type.as_str().to_owned(),
            subject_id: req.subject_id.clone(),
            generate_time: vern_kit::time::now(),
            controller: ReportController {
                tenant_id: tenant.tenant_id,
                name: tenant.name,
                org_number: tenant.org_number,
                dpo_email: tenant.dpo_email,
            },
            complaint_authority: report::complaint_authority(&tenant.supervisory_authority),
            automated_decision_making: settings.automated_decision_making,
            ..Default::default()
        };
        report.localise(lang);
        Ok(report)
    }

    async fn carry_out(&self, req: &RightsRequest) -> Result<Done, RightsError> {
        let mut report = self.base_report(req).await?;
        let none = |report: Report| Done {
            outcome: Outcome {
                summary: "the controller holds no personal data about the requester".into(),
                ..Default::default()
            },
            events: vec![],
            report,
        };
        if req.subject_id.is_empty() {
            return Ok(none(report));
        }
        let t = req.tenant_id.as_str();
        let sid = req.subject_id.as_str();
        match req.request_type {
            RequestType::Access | RequestType::Portability => {
                let Some(subject) = self.upstream.subject(t, sid, true).await? else {
                    return Ok(none(report));
                };
                let purposes = self.upstream.purposes(t).await?;
                let access = req.request_type == RequestType::Access;
                report.identifiers = Some(Identity {
                    email: subject.email.clone(),
                    phone: subject.phone.clone(),
                    national_id: subject.national_id.clone(),
                    ..Default::default()
                });
                report.external_refs = refs(&subject);
                if access {
                    self.access(t, &subject, &purposes, &mut report).await?;
                } else {
                    // Art. 20(1): provided by the subject, processed under consent or contract.
                    let portable = |key: &String| {
                        purposes.iter().any(|p| {
                            &p.key == key
                                && matches!(
                                    basis_of(p),
                                    common::LegalBasis::Consent | common::LegalBasis::Contract
                                )
                        })
                    };
                    report.data = subject
                        .records
                        .iter()
                        .filter(|r| r.provided_by_subject && r.purposes.iter().any(portable))
                        .map(record)
                        .collect();
                }
                let summary = format!(
                    "{} report produced with {} records",
                    if access {
                        "access (Art. 15)"
                    } else {
                        "portability (Art. 20)"
                    },
                    report.data.len()
                );
                Ok(Done {
                    outcome: Outcome {
                        summary,
                        ..Default::default()
                    },
                    events: vec![],
                    report,
                })
            }
            RequestType::Erasure => self.erase(req, report).await,
            RequestType::Rectification => {
                let Some(subject) = self.upstream.subject(t, sid, false).await? else {
                    return Err(RightsError::SubjectNotFound);
                };
                let mut fields = BTreeSet::new();
                let mut ident = spb::Subject {
                    subject_id: sid.to_owned(),
                    ..Default::default()
                };
                let mut paths = vec![];
                for r in &req.personal.rectifications {
                    match r.field.as_str() {
                        "email" => ident.email = r.value.clone(),
                        "phone" => ident.phone = r.value.clone(),
                        "national_id" => ident.national_id = r.value.clone(),
                        _ => continue,
                    }
                    paths.push(r.field.clone());
                    fields.insert(r.field.clone());
                }
                if !paths.is_empty() {
                    self.upstream
                        .update_subject(
                            t,
                            spb::UpdateSubjectRequest {
                                subject: Some(ident),
                                update_mask: Some(prost_types::FieldMask { paths }),
                                request_id: format!("rights-{}-rectify", req.rights_request_id),
                            },
                        )
                        .await?;
                }
                for (i, r) in req.personal.rectifications.iter().enumerate() {
                    if IDENTIFIER_FIELDS.contains(&r.field.as_str()) {
                        continue;
                    }
                    self.upstream
                        .update_record(
                            t,
                            spb::UpdateRecordRequest {
                                subject_id: sid.to_owned(),
                                record: Some(spb::Record {
                                    record_id: r.record_id.clone(),
                                    value: r.value.clone(),
                                    ..Default::default()
                                }),
                                update_mask: Some(prost_types::FieldMask {
                                    paths: vec!["value".into()],
                                }),
                                request_id: format!("rights-{}-rectify-{i}", req.rights_request_id),
                            },
                        )
                        .await?;
                    fields.insert(r.field.clone());
                }
                let fields: Vec<String> = fields.into_iter().collect();
                let ev = self.new_event(
                    req,
                    EventType::Rectified,
                    &refs(&subject),
                    vec![],
                    fields.clone(),
                    None,
                )?;
                Ok(Done {
                    outcome: Outcome {
                        summary: format!("rectified: {}", fields.join(", ")),
                        ..Default::default()
                    },
                    events: vec![ev],
                    report,
                })
            }
            RequestType::Restriction => {
                let subject = self
                    .upstream
                    .restrict(
                        t,
                        spb::RestrictSubjectRequest {
                            subject_id: sid.to_owned(),
                            reason: "restriction requested by the data subject (Art. 18)".into(),
                            rights_request_id: req.rights_request_id.clone(),
                            request_id: format!("rights-{}-restrict", req.rights_request_id),
                            // Art. 18 per purpose: the purposes the request names, or all.
                            purposes: req.purposes.clone(),
                        },
                    )
                    .await?;
                let ev = self.new_event(
                    req,
                    EventType::Restricted,
                    &refs(&subject),
                    req.purposes.clone(),
                    vec![],
                    None,
                )?;
                let summary = if req.purposes.is_empty() {
                    "processing of the subject restricted for every purpose (Art. 18)".to_owned()
                } else {
                    format!(
                        "processing of the subject restricted for: {} (Art. 18)",
                        req.purposes.join(", ")
                    )
                };
                Ok(Done {
                    outcome: Outcome {
                        summary,
                        ..Default::default()
                    },
                    events: vec![ev],
                    report,
                })
            }
            RequestType::Objection | RequestType::WithdrawConsent => {
                self.object_or_withdraw(req, report).await
            }
        }
    }

    /// Fills the Art. 15 parts of the report.
    async fn access(
        &self,
        t: &str,
        subject: &spb::Subject,
        purposes: &[tpb::Purpose],
        report: &mut Report,
    ) -> Result<(), RightsError> {
        let lang = report.lang();
        let all_recipients = self.upstream.recipients(t).await?;
        let policies = self.upstream.policies(t).await?;
        let consents = self.upstream.consent_states(t, &subject.subject_id).await?;
        // Art. 15(1)(c): recipients the data "have been or will be disclosed" to. A
        // recipient ended before the subject's data existed here never received it; one
        // ended after may have, so it stays in the report with its end date.
        let since = earliest_data_time(subject, &consents);
        let recipients: Vec<&tpb::Recipient> = all_recipients
            .iter()
            .filter(|r| received_data_since(r, since))
            .collect();
        report.data = subject.records.iter().map(record).collect();
        let used: BTreeSet<&str> = subject
            .records
            .iter()
            .flat_map(|r| r.purposes.iter().map(String::as_str))
            .chain(consents.iter().map(|c| c.purpose.as_str()))
            .collect();
        for p in purposes.iter().filter(|p| used.contains(p.key.as_str())) {
            let basis = basis_of(p);
            let (retention_text, retention_rules) = purpose_retention(p, &policies, lang);
            report.purposes.push(ReportPurpose {
                key: p.key.clone(),
                description: p.description.clone(),
                legal_basis: basis_name(basis).to_owned(),
                legitimate_interest: p.legitimate_interest.clone(),
                data_categories: p
                    .data_categories
                    .iter()
                    .map(|c| category_name(*c))
                    .collect(),
                recipients: recipients
                    .iter()
                    .filter(|r| r.purposes.contains(&p.key))
                    .map(|r| ReportRecipient {
                        end_time: time(r.end_time.as_ref()),
                        name: r.name.clone(),
                        role: recipient_role(r.role).to_owned(),
                        country: r.country.clone(),
                        transfer_safeguard: tpb::TransferSafeguard::try_from(r.transfer_safeguard)
                            .map_or(String::new(), |s| safeguard_name(s).to_owned()),
                    })
                    .collect(),
                retention: retention_text,
                retention_rules,
                direct_marketing: p.direct_marketing,
                consent_status: if basis == common::LegalBasis::Consent {
                    consent_status_name(
                        consents
                            .iter()
                            .find(|c| c.purpose == p.key)
                            .and_then(|c| cpb::ConsentStatus::try_from(c.status).ok())
                            .unwrap_or(cpb::ConsentStatus::NotRecorded),
                    )
                    .to_owned()
                } else {
                    String::new()
                },
                compelling_grounds: consents
                    .iter()
                    .find(|c| c.purpose == p.key)
                    .and_then(|c| c.compelling_grounds.as_ref())
                    .map(|g| crate::report::ReportGrounds {
                        decision_id: g.decision_id.clone(),
                        reason: g.reason.clone(),
                        decide_time: time(g.decide_time.as_ref()),
                    }),
            });
        }
        report.retention = policies
            .iter()
            .filter(|p| {
                subject.records.iter().any(|r| policy_matches(p, r))
                    || purposes
                        .iter()
                        .any(|x| used.contains(x.key.as_str()) && policy_for_purpose(p, x))
            })
            .map(retention_of)
            .collect();
        Ok(())
    }

    /// ERASURE: what must stay (retention duty, legal hold) is kept restricted, the rest
    /// is erased.
    async fn erase(&self, req: &RightsRequest, mut report: Report) -> Result<Done, RightsError> {
        let t = req.tenant_id.as_str();
        let sid = req.subject_id.as_str();
        let Some(subject) = self.upstream.subject(t, sid, false).await? else {
            return Err(RightsError::SubjectNotFound);
        };
        let already = subject.state == spb::SubjectState::Erased as i32;
        let decisions = if already {
            vec![]
        } else {
            self.upstream.evaluate(t, sid).await?.decisions
        };
        let retain: Vec<spb::RetainedRecord> = decisions
            .iter()
            .filter(|d| {
                matches!(
                    rpb::Disposition::try_from(d.disposition),
                    Ok(rpb::Disposition::MustKeep | rpb::Disposition::Held)
                )
            })
            .map(|d| spb::RetainedRecord {
                record_id: d.record_id.clone(),
                retain_until_time: d.retain_until_time,
                legal_reference: if d.legal_reference.trim().is_empty() {
                    format!("legal hold {}", d.hold_id)
                } else {
                    d.legal_reference.clone()
                },
            })
            .collect();
        let erased = self
            .upstream
            .erase(
                t,
                spb::EraseSubjectRequest {
                    subject_id: sid.to_owned(),
                    reason: "erasure requested by the data subject (Art. 17)".into(),
                    retain,
                    rights_request_id: req.rights_request_id.clone(),
                    request_id: format!("rights-{}-erase", req.rights_request_id),
                },
            )
            .await?;
        let retained: Vec<RetainedItem> = erased
            .retained
            .iter()
            .map(|k| {
                let d = decisions.iter().find(|d| d.record_id == k.record_id);
                RetainedItem {
                    record_id: k.record_id.clone(),
                    category: d.map(|d| category_name(d.category)).unwrap_or_default(),
                    field: d.map(|d| d.field.clone()).unwrap_or_default(),
                    retain_until_time: time(k.retain_until_time.as_ref()),
                    legal_reference: k.legal_reference.clone(),
                }
            })
            .collect();
        // The last date a kept record stays; open-ended (a hold without end) wins.
        let retain_until = if retained.iter().any(|r| r.retain_until_time.is_none()) {
            None
        } else {
            retained.iter().filter_map(|r| r.retain_until_time).max()
        };
        let ev = self.new_event(
            req,
            EventType::Erased,
            &refs(&subject),
            vec![],
            vec![],
            retain_until,
        )?;
        report.erased_record_count = erased.erased_record_count;
        report.retained = retained.clone();
        let summary = if retained.is_empty() {
            format!(
                "erased {} records; nothing kept",
                erased.erased_record_count
            )
        } else {
            format!(
                "erased {} records; kept {} restricted under a retention duty or legal hold",
                erased.erased_record_count,
                retained.len()
            )
        };
        Ok(Done {
            outcome: Outcome {
                summary,
                erased_record_count: erased.erased_record_count,
                retained,
                event_ids: vec![],
            },
            events: vec![ev],
            report,
        })
    }

    /// OBJECTION and WITHDRAW_CONSENT: consent events for the named purposes, or for all
    /// the subject's purposes they can apply to.
    async fn object_or_withdraw(
        &self,
        req: &RightsRequest,
        report: Report,
    ) -> Result<Done, RightsError> {
        let t = req.tenant_id.as_str();
        let sid = req.subject_id.as_str();
        let object = req.request_type == RequestType::Objection;
        let Some(subject) = self.upstream.subject(t, sid, false).await? else {
            return Err(RightsError::SubjectNotFound);
        };
        let states = self.upstream.consent_states(t, sid).await?;
        let purposes = self.upstream.purposes(t).await?;
        let effect = |p: &tpb::Purpose| {
            domain::objection_effect(basis_name(basis_of(p)), p.direct_marketing)
        };
        let targets: Vec<String> = if !req.purposes.is_empty() {
            req.purposes.clone()
        } else {
            let used: BTreeSet<&str> = subject
                .records
                .iter()
                .flat_map(|r| r.purposes.iter().map(String::as_str))
                .chain(states.iter().map(|c| c.purpose.as_str()))
                .collect();
            purposes
                .iter()
                .filter(|p| used.contains(p.key.as_str()))
                .filter(|p| {
                    let basis = basis_of(p);
                    if object {
                        // Art. 21(1), (2): legitimate interests, public task, direct marketing.
                        matches!(
                            effect(p),
                            domain::ObjectionEffect::StopsAbsolutely
                                | domain::ObjectionEffect::StopsUnlessCompellingGrounds
                        )
                    } else {
                        basis == common::LegalBasis::Consent
                            && states.iter().any(|s| {
                                s.purpose == p.key
                                    && matches!(
                                        cpb::ConsentStatus::try_from(s.status),
                                        Ok(cpb::ConsentStatus::Granted
                                            | cpb::ConsentStatus::Expired)
                                    )
                            })
                    }
                })
                .map(|p| p.key.clone())
                .collect()
        };
        let channel = consent_channel(req.channel);
        let action = if object {
            cpb::ConsentAction::Object
        } else {
            cpb::ConsentAction::Withdraw
        };
        for p in &targets {
            self.upstream
                .record_consent(
                    t,
                    cpb::RecordConsentRequest {
                        subject_id: sid.to_owned(),
                        purpose: p.clone(),
                        action: action as i32,
                        channel: channel as i32,
                        evidence: format!("rights request {}", req.rights_request_id),
                        request_id: format!(
                            "rights-{}-{}-{p}",
                            req.rights_request_id,
                            if object { "object" } else { "withdraw" }
                        ),
                        actor: "rights".into(),
                        rights_request_id: req.rights_request_id.clone(),
                        ..Default::default()
                    },
                )
                .await?;
        }
        let what = if object {
            "objection"
        } else {
            "consent withdrawal"
        };
        if targets.is_empty() {
            return Ok(Done {
                outcome: Outcome {
                    summary: format!("no purpose the {what} applies to"),
                    ..Default::default()
                },
                events: vec![],
                report,
            });
        }
        let ev = self.new_event(
            req,
            if object {
                EventType::Objected
            } else {
                EventType::ConsentWithdrawn
            },
            &refs(&subject),
            targets.clone(),
            vec![],
            None,
        )?;
        let summary = if object {
            // Say what the objection really does to each purpose (Art. 21).
            let effects: Vec<(String, domain::ObjectionEffect)> = targets
                .iter()
                .map(|k| {
                    let e = purposes
                        .iter()
                        .find(|p| &p.key == k)
                        .map_or(domain::ObjectionEffect::NoRightToObject, effect);
                    (k.clone(), e)
                })
                .collect();
            domain::objection_summary(&effects)
        } else {
            format!("{what} recorded for: {}", targets.join(", "))
        };
        Ok(Done {
            outcome: Outcome {
                summary,
                ..Default::default()
            },
            events: vec![ev],
            report,
        })
    }
}

/// A value as JSON for an event column.
fn to_json<T: serde::Serialize + ?Sized>(v: &T) -> Result<String, RightsError> {
    serde_json::to_string(v).map_err(|_| RightsError::Corrupt("serialise"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ended_recipients_stay_when_the_data_may_have_reached_them() {
        let at = |s: i64| prost_types::Timestamp {
            seconds: s,
            nanos: 0,
        };
        let subject = spb::Subject {
            create_time: Some(at(2_000)),
            records: vec![spb::Record {
                collected_at: Some(at(1_000)),
                ..Default::default()
            }],
            ..Default::default()
        };
        let since = earliest_data_time(&subject, &[]);
        assert_eq!(since, DateTime::from_timestamp(1_000, 0));
        let current = tpb::Recipient::default();
        let ended_before = tpb::Recipient {
            end_time: Some(at(999)),
            ..Default::default()
        };
        let ended_after = tpb::Recipient {
            end_time: Some(at(1_500)),
            ..Default::default()
        };
        assert!(received_data_since(&current, since));
        assert!(!received_data_since(&ended_before, since));
        assert!(received_data_since(&ended_after, since));
        assert!(received_data_since(&ended_before, None), "unknown: named");
    }

    #[test]
    fn purpose_retention_names_period_anchor_and_reference() {
        let purpose = tpb::Purpose {
            key: "invoicing".into(),
            data_categories: vec![common::DataCategory::Financial as i32],
            ..Default::default()
        };
        let policy = rpb::RetentionPolicy {
            purpose: "invoicing".into(),
            period: "P5Y".into(),
            anchor: rpb::RetentionAnchor::EndOfFinancialYear as i32,
            legal_reference: "bokføringsloven § 13".into(),
            ..Default::default()
        };
        let other = rpb::RetentionPolicy {
            purpose: "newsletter".into(),
            period: "P1Y".into(),
            anchor: rpb::RetentionAnchor::CollectedAt as i32,
            ..Default::default()
        };
        let (text, rules) =
            purpose_retention(&purpose, &[policy.clone(), other.clone()], Language::En);
        assert_eq!(
            text,
            "5 years after the end of the financial year (bokføringsloven § 13)"
        );
        assert_eq!(rules.len(), 1);
        assert_eq!(
            purpose_retention(&purpose, &[policy], Language::Nb).0,
            "5 år etter utløpet av regnskapsåret (bokføringsloven § 13)"
        );
        let by_category = rpb::RetentionPolicy {
            category: common::DataCategory::Financial as i32,
            purpose: String::new(),
            ..other
        };
        assert_eq!(
            purpose_retention(&purpose, &[by_category], Language::En).0,
            "1 year after collection"
        );
        assert!(
            purpose_retention(&purpose, &[], Language::En)
                .0
                .starts_with("no fixed period")
        );
        assert!(
            purpose_retention(&purpose, &[], Language::Nn)
                .0
                .starts_with("inga fast lagringstid")
        );
    }
}
