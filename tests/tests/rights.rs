//! End to end through the gateway: rights requests as a privacy officer handles them and
//! the downstream feed as a CRM consumes it, on SQLite and PostgreSQL.
//!
//! The erasure scenario needs the RetentionService (CreatePolicy, ListPolicies,
//! Evaluate) of crates/retention.

use std::time::Duration;

use tokio_stream::StreamExt;
use tonic::Code;
use tonic::transport::Channel;
use tonic_types::StatusExt;
use vern_proto::audit::v1 as apb;
use vern_proto::common::v1::{DataCategory, LegalBasis};
use vern_proto::consents::v1 as cpb;
use vern_proto::retention::v1 as rtpb;
use vern_proto::rights::v1 as pb;
use vern_proto::subjects::v1 as spb;
use vern_proto::tenants::v1 as tpb;
use vern_tests::{Backend, Suite, authed, token};

const TENANT: &str = "kultur";
const EMAIL: &str = "kari.nordmann@example.no";
const NAME: &str = "Kari Nordmann";
/// The erasure request's description (personal data, destroyed with the subject).
const ERASURE_WORDS: &str = "delete everything about Kari";

#[tokio::test]
async fn rights_on_sqlite() {
    let suite = Suite::start(Backend::Sqlite).await.expect("suite");
    scenario(&suite.channel).await;
    // No plaintext personal data in the rights service's files (tables, WAL).
    for entry in std::fs::read_dir(suite.data_dir()).expect("data dir") {
        let path = entry.expect("entry").path();
        let name = path
            .file_name()
            .and_then(|n| n.to_str())
            .unwrap_or_default();
        if !name.starts_with("rights.db") {
            continue;
        }
        let bytes = std::fs::read(&path).expect("read");
        // Sealed at rest, and since the erasure also gone from free pages and the WAL.
        // The feed's external references are sealed too (and still read by the CRM).
        for secret in [
            EMAIL,
            NAME,
            "please send me everything",
            ERASURE_WORDS,
            "C-1001",
        ] {
            assert!(
                !bytes.windows(secret.len()).any(|w| w == secret.as_bytes()),
                "plaintext personal data in {}",
                path.display()
            );
        }
    }
    suite.stop().await;
}

/// A report above the message limit: GetReport refuses it with a pointer to
/// ExportReport, which streams the whole JSON document in chunks under the limit.
#[tokio::test]
async fn a_report_above_the_message_limit_is_exported_in_chunks() {
    const LIMIT: usize = 64 * 1024;
    let suite = Suite::start_with(Backend::Sqlite, |c| c.server.max_message_bytes = LIMIT)
        .await
        .expect("suite");
    let ch = &suite.channel;
    let officer = token(&["privacy-officer"], &[TENANT], 600);
    // 300 records of ~300 bytes: ~100 KB of data, more than one message holds, so the
    // fulfilment reads them a page at a time; a report (data and its JSON) of ~220 KB.
    let (_, rid) = reported_subject(ch, 300).await;

    let mut rights = pb::rights_service_client::RightsServiceClient::new(ch.clone());
    let err = rights
        .get_report(authed(
            pb::GetReportRequest {
                rights_request_id: rid.clone(),
            },
            &officer,
        ))
        .await
        .expect_err("above the limit");
    assert_eq!(err.code(), Code::FailedPrecondition, "{}", err.message());
    assert!(err.message().contains("ExportReport"), "{}", err.message());
    assert!(
        !err.message().contains("Kari"),
        "no personal data in errors"
    );

    let mut stream = rights
        .export_report(authed(
            pb::ExportReportRequest {
                rights_request_id: rid.clone(),
                language: String::new(),
            },
            &officer,
        ))
        .await
        .expect("export")
        .into_inner();
    let (mut json, mut chunks) = (Vec::new(), 0);
    while let Some(chunk) = stream.message().await.expect("chunk") {
        assert_eq!(chunk.offset, json.len() as i64, "chunks in order, no gaps");
        assert!(chunk.json.len() <= LIMIT / 2);
        json.extend_from_slice(&chunk.json);
        assert!(json.len() as i64 <= chunk.total_bytes);
        chunks += 1;
    }
    assert!(chunks >= 2, "{chunks} chunks");
    let doc: serde_json::Value = serde_json::from_slice(&json).expect("one JSON document");
    let data = doc["data"].as_array().expect("data");
    assert_eq!(data.len(), 300, "every record");
    assert!(data.iter().any(|d| {
        d["field"] == "note-299"
            && d["value"]
                .as_str()
                .is_some_and(|v| v.starts_with("299 Kari"))
    }));
    // The same document the CLI renders (`vern requests export`).
    use vern_cli::requests_cli::{Format, render};
    let text = render(std::str::from_utf8(&json).expect("utf-8"), Format::Text).expect("text");
    assert!(text.contains("note-299"), "{text}");
    suite.stop().await;
}

async fn create_tenant(ch: &Channel, platform: &str, id: &str, name: &str) {
    tpb::tenant_service_client::TenantServiceClient::new(ch.clone())
        .create_tenant(authed(
            tpb::CreateTenantRequest {
                tenant_id: id.into(),
                name: name.into(),
                org_number: "989990748".into(),
                dpo_email: "personvern@kulturfabrikk.example".into(),
                ..Default::default()
            },
            platform,
        ))
        .await
        .expect("tenant");
}

/// A tenant, a subject with `records` notes of ~300 bytes each, and a fulfilled access
/// request of it: the subject id and the request id.
async fn reported_subject(ch: &Channel, records: usize) -> (String, String) {
    let platform = token(&["platform-admin"], &[], 600);
    let crm = token(&["integration"], &[TENANT], 600);
    create_tenant(ch, &platform, TENANT, "Oslo Kulturfabrikk").await;
    tpb::tenant_service_client::TenantServiceClient::new(ch.clone())
        .create_purpose(authed(
            tpb::CreatePurposeRequest {
                key: "service".into(),
                description: "Customer service".into(),
                legal_basis: LegalBasis::Contract as i32,
                data_categories: vec![DataCategory::Contact as i32],
                ..Default::default()
            },
            &token(&["tenant-admin"], &[TENANT], 600),
        ))
        .await
        .expect("purpose");
    let mut records: Vec<spb::Record> = (0..records)
        .map(|i| spb::Record {
            category: DataCategory::Contact as i32,
            field: format!("note-{i:03}"),
            value: format!("{i:03} {}", "Kari Nordmann ringte om billetter. ".repeat(8)),
            source: "crm".into(),
            purposes: vec!["service".into()],
            ..Default::default()
        })
        .collect();
    // 100 records a call: under any message limit the tests use.
    let mut later = records.split_off(records.len().min(100));
    let mut subjects = spb::subject_service_client::SubjectServiceClient::new(ch.clone());
    let subject = subjects
        .create_subject(authed(
            spb::CreateSubjectRequest {
                email: EMAIL.into(),
                records,
                request_id: "reported-subject".into(),
                ..Default::default()
            },
            &crm,
        ))
        .await
        .expect("subject")
        .into_inner();
    let mut n = 0;
    while !later.is_empty() {
        let rest = later.split_off(later.len().min(100));
        n += 1;
        subjects
            .add_records(authed(
                spb::AddRecordsRequest {
                    subject_id: subject.subject_id.clone(),
                    records: std::mem::replace(&mut later, rest),
                    request_id: format!("reported-subject-{n}"),
                },
                &crm,
            ))
            .await
            .expect("more records");
    }
    let rid = submit(
        ch,
        pb::RequestType::Access,
        &subject.subject_id,
        &[],
        vec![],
    )
    .await;
    let (done, _) = fulfil_and_confirm(ch, &rid).await;
    assert_eq!(done.status, pb::RequestStatus::Completed as i32);
    (subject.subject_id, rid)
}

/// A subject erased directly (EraseSubject, not through a rights request) takes the
/// rights service's copies with it: the subjects service's outbox tells the rights
/// service, which destroys the earlier access report and the request's identity.
#[tokio::test]
async fn a_subject_erased_directly_takes_its_rights_reports_with_it() {
    let suite = Suite::start(Backend::Sqlite).await.expect("suite");
    let ch = &suite.channel;
    let officer = token(&["privacy-officer"], &[TENANT], 600);
    let (subject_id, rid) = reported_subject(ch, 3).await;
    let mut rights = pb::rights_service_client::RightsServiceClient::new(ch.clone());
    let reader = rights.clone();
    let get_report = || {
        let mut rights = reader.clone();
        let req = authed(
            pb::GetReportRequest {
                rights_request_id: rid.clone(),
            },
            &officer,
        );
        async move { rights.get_report(req).await }
    };
    let report = get_report().await.expect("report").into_inner();
    assert!(
        report.json.contains("note-002"),
        "the report holds the data"
    );

    // Only services may tell the rights service of erasures.
    let err = rights
        .apply_subject_erasures(authed(
            pb::ApplySubjectErasuresRequest {
                erasures: vec![pb::SubjectErasure {
                    subject_id: subject_id.clone(),
                    erase_time: Some(ts(2026, 1, 1, 0)),
                    ..Default::default()
                }],
                request_id: "not-mine".into(),
                restrictions: vec![],
            },
            &officer,
        ))
        .await
        .expect_err("service only");
    assert_eq!(err.code(), Code::PermissionDenied);
    let report = get_report().await.expect("report still there");
    assert!(report.into_inner().json.contains("note-002"));

    let erased = spb::subject_service_client::SubjectServiceClient::new(ch.clone())
        .erase_subject(authed(
            spb::EraseSubjectRequest {
                subject_id: subject_id.clone(),
                reason: "the customer asked at the counter".into(),
                request_id: "erase-at-counter".into(),
                ..Default::default()
            },
            &officer,
        ))
        .await
        .expect("erase")
        .into_inner();
    assert!(erased.fully_erased);

    // Delivered by the outbox relay: at once, normally; give it a few seconds.
    let mut last = None;
    for _ in 0..100 {
        match get_report().await {
            Ok(_) => tokio::time::sleep(Duration::from_millis(100)).await,
            Err(e) => {
                last = Some(e);
                break;
            }
        }
    }
    let err = last.expect("the report is destroyed within 10 s");
    assert_eq!(err.code(), Code::FailedPrecondition, "{}", err.message());
    assert!(
        err.message()
            .contains("report content was erased with the subject on "),
        "{}",
        err.message()
    );
    // The request stays as evidence.
    let r = rights
        .get_request(authed(
            pb::GetRequestRequest {
                rights_request_id: rid.clone(),
            },
            &officer,
        ))
        .await
        .expect("request stays")
        .into_inner();
    assert_eq!(r.status, pb::RequestStatus::Completed as i32);
    assert_eq!(r.subject_id, subject_id);
    suite.stop().await;
}

/// The same scenario against the deployed shape: two replicas of every service as
/// separate processes on PostgreSQL behind one name, one gateway.
#[tokio::test]
async fn rights_on_replicas() {
    let Some(suite) = Suite::start(Backend::Replicas).await else {
        return;
    };
    scenario(&suite.channel).await;
    suite.stop().await;
}

#[tokio::test]
async fn rights_on_postgres() {
    let Some(suite) = Suite::start(Backend::Postgres).await else {
        return;
    };
    scenario(&suite.channel).await;
    suite.stop().await;
}

/// Days since 1970-01-01 of a civil date (Howard Hinnant's algorithm).
fn days_from_civil(y: i64, m: i64, d: i64) -> i64 {
    let y = if m <= 2 { y - 1 } else { y };
    let era = if y >= 0 { y } else { y - 399 } / 400;
    let yoe = y - era * 400;
    let doy = (153 * (m + if m > 2 { -3 } else { 9 }) + 2) / 5 + d - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}

/// The civil date of days since 1970-01-01.
fn civil_from_days(z: i64) -> (i64, i64, i64) {
    let z = z + 719_468;
    let era = if z >= 0 { z } else { z - 146_096 } / 146_097;
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    (yoe + era * 400 + i64::from(m <= 2), m, d)
}

/// A UTC time at `hour`:00 on a date.
fn ts(y: i64, m: i64, d: i64, hour: i64) -> prost_types::Timestamp {
    prost_types::Timestamp {
        seconds: days_from_civil(y, m, d) * 86_400 + hour * 3600,
        nanos: 0,
    }
}

fn date_of(t: Option<&prost_types::Timestamp>) -> String {
    let (y, m, d) = civil_from_days(t.expect("time").seconds.div_euclid(86_400));
    format!("{y:04}-{m:02}-{d:02}")
}

struct Fixture {
    subject_id: String,
    invoice_id: String,
}

async fn setup(ch: &Channel) -> Fixture {
    let platform = token(&["platform-admin"], &[], 600);
    let admin = token(&["tenant-admin"], &[TENANT], 600);
    let officer = token(&["privacy-officer"], &[TENANT], 600);
    let crm = token(&["integration"], &[TENANT], 600);
    for (id, name) in [(TENANT, "Oslo Kulturfabrikk"), ("okorad", "ØkoRåd Oslo")] {
        create_tenant(ch, &platform, id, name).await;
    }
    let mut tenants = tpb::tenant_service_client::TenantServiceClient::new(ch.clone());
    for (key, basis, cats, dm) in [
        (
            "newsletter",
            LegalBasis::Consent,
            vec![DataCategory::Contact],
            true,
        ),
        (
            "invoicing",
            LegalBasis::Contract,
            vec![DataCategory::Contact, DataCategory::Financial],
            false,
        ),
        (
            "analytics",
            LegalBasis::LegitimateInterests,
            vec![DataCategory::Behaviour],
            false,
        ),
    ] {
        tenants
            .create_purpose(authed(
                tpb::CreatePurposeRequest {
                    key: key.into(),
                    description: format!("{key} for our customers"),
                    legal_basis: basis as i32,
                    data_categories: cats.into_iter().map(|c| c as i32).collect(),
                    direct_marketing: dm,
                    legitimate_interest: if key == "analytics" {
                        "understanding which events our audience attends".into()
                    } else {
                        String::new()
                    },
                    ..Default::default()
                },
                &admin,
            ))
            .await
            .expect("purpose");
    }
    for (name, role, purposes, country, safeguard) in [
        (
            "Mailchimp",
            tpb::RecipientRole::Processor,
            vec!["newsletter"],
            "US",
            tpb::TransferSafeguard::StandardContractualClauses,
        ),
        (
            "Skatteetaten",
            tpb::RecipientRole::Authority,
            vec!["invoicing"],
            "NO",
            tpb::TransferSafeguard::Unspecified,
        ),
    ] {
        tenants
            .create_recipient(authed(
                tpb::CreateRecipientRequest {
                    name: name.into(),
                    role: role as i32,
                    purposes: purposes.into_iter().map(Into::into).collect(),
                    country: country.into(),
                    transfer_safeguard: safeguard as i32,
                    ..Default::default()
                },
                &admin,
            ))
            .await
            .expect("recipient");
    }
    let mut retention = rtpb::retention_service_client::RetentionServiceClient::new(ch.clone());
    retention
        .create_policy(authed(
            rtpb::CreatePolicyRequest {
                name: "Bookkeeping documentation".into(),
                category: DataCategory::Financial as i32,
                purpose: "invoicing".into(),
                field: "invoice".into(),
                period: "P5Y".into(),
                anchor: rtpb::RetentionAnchor::EndOfFinancialYear as i32,
                action: rtpb::RetentionAction::Delete as i32,
                legal_reference: "bokføringsloven § 13".into(),
                legal_duty: true,
                request_id: "policy-bookkeeping".into(),
            },
            &officer,
        ))
        .await
        .expect("create retention policy (RetentionService)");

    let mut subjects = spb::subject_service_client::SubjectServiceClient::new(ch.clone());
    let rec = |cat: DataCategory, field: &str, value: &str, source: &str, purpose: &str, own| {
        spb::Record {
            category: cat as i32,
            field: field.into(),
            value: value.into(),
            source: source.into(),
            purposes: vec![purpose.into()],
            provided_by_subject: own,
            ..Default::default()
        }
    };
    let subject = subjects
        .create_subject(authed(
            spb::CreateSubjectRequest {
                email: EMAIL.into(),
                external_refs: vec![spb::ExternalRef {
                    system: "crm".into(),
                    id: "C-1001".into(),
                }],
                records: vec![
                    rec(
                        DataCategory::Contact,
                        "name",
                        NAME,
                        "web-form",
                        "newsletter",
                        true,
                    ),
                    rec(
                        DataCategory::Contact,
                        "newsletter-email",
                        EMAIL,
                        "web-form",
                        "newsletter",
                        true,
                    ),
                    rec(
                        DataCategory::Financial,
                        "invoice",
                        "Invoice 2026-117: 1 250 NOK",
                        "accounting",
                        "invoicing",
                        false,
                    ),
                ],
                request_id: "crm-create-1001".into(),
                ..Default::default()
            },
            &crm,
        ))
        .await
        .expect("subject")
        .into_inner();
    let invoice_id = subject
        .records
        .iter()
        .find(|r| r.field == "invoice")
        .expect("invoice record")
        .record_id
        .clone();
    let mut consents = cpb::consent_service_client::ConsentServiceClient::new(ch.clone());
    consents
        .record_consent(authed(
            cpb::RecordConsentRequest {
                subject_id: subject.subject_id.clone(),
                purpose: "newsletter".into(),
                action: cpb::ConsentAction::Grant as i32,
                channel: cpb::ConsentChannel::WebForm as i32,
                notice_version: "2022-11-20".into(),
                request_id: "grant-1001".into(),
                ..Default::default()
            },
            &crm,
        ))
        .await
        .expect("consent");
    Fixture {
        subject_id: subject.subject_id,
        invoice_id,
    }
}

async fn scenario(ch: &Channel) {
    let fx = setup(ch).await;
    let access_rid = access(ch, &fx).await;
    erasure(ch, &fx, &access_rid).await;
    other_rights(ch).await;
}

/// Verifies and fulfils a request, acknowledges its events as the CRM (the settings
/// require it) and returns the completed request with its events.
async fn fulfil_and_confirm(ch: &Channel, rid: &str) -> (pb::RightsRequest, Vec<pb::RightsEvent>) {
    let officer = token(&["privacy-officer"], &[TENANT], 600);
    let crm = token(&["integration"], &[TENANT], 600);
    let mut rights = pb::rights_service_client::RightsServiceClient::new(ch.clone());
    let fulfilled = vern_tests::verify_and_fulfil(ch, TENANT, rid).await;
    let events = rights
        .list_events(authed(
            pb::ListEventsRequest {
                rights_request_id: rid.into(),
                ..Default::default()
            },
            &crm,
        ))
        .await
        .expect("events")
        .into_inner()
        .events;
    if events.is_empty() {
        assert_eq!(fulfilled.status, pb::RequestStatus::Completed as i32);
    } else {
        assert_eq!(fulfilled.status, pb::RequestStatus::InProgress as i32);
        assert_eq!(fulfilled.pending_systems, vec!["crm"]);
    }
    for e in &events {
        rights
            .ack_event(authed(
                pb::AckEventRequest {
                    event: Some(pb::ack_event_request::Event::EventId(e.event_id.clone())),
                    system: "crm".into(),
                    request_id: format!("ack-{}", e.event_id),
                },
                &crm,
            ))
            .await
            .expect("ack");
    }
    let done = rights
        .get_request(authed(
            pb::GetRequestRequest {
                rights_request_id: rid.into(),
            },
            &officer,
        ))
        .await
        .expect("get")
        .into_inner();
    assert_eq!(done.status, pb::RequestStatus::Completed as i32);
    (done, events)
}

async fn submit(
    ch: &Channel,
    kind: pb::RequestType,
    subject: &str,
    purposes: &[&str],
    rectifications: Vec<pb::Rectification>,
) -> String {
    let crm = token(&["integration"], &[TENANT], 600);
    let mut rights = pb::rights_service_client::RightsServiceClient::new(ch.clone());
    rights
        .submit_request(authed(
            pb::SubmitRequestRequest {
                r#type: kind as i32,
                requester: Some(pb::submit_request_request::Requester::SubjectId(
                    subject.into(),
                )),
                channel: pb::RequestChannel::Api as i32,
                purposes: purposes.iter().map(|p| (*p).into()).collect(),
                rectifications,
                ..Default::default()
            },
            &crm,
        ))
        .await
        .expect("submit")
        .into_inner()
        .rights_request_id
}

/// Reports in the subject's language (Art. 12(1)): a request in bokmål, one without a
/// language (the tenant's default: bokmål, then English once the tenant changes it),
/// an export in nynorsk, and tags that are not nb, nn or en refused naming the field.
#[tokio::test]
async fn reports_are_written_in_the_requests_language() {
    let suite = Suite::start(Backend::Sqlite).await.expect("suite");
    let ch = &suite.channel;
    let officer = token(&["privacy-officer"], &[TENANT], 600);
    let admin = token(&["tenant-admin"], &[TENANT], 600);
    let (subject, default_rid) = reported_subject(ch, 2).await;
    let mut rights = pb::rights_service_client::RightsServiceClient::new(ch.clone());
    let reader = rights.clone();
    let report_of = |rid: String| {
        let mut rights = reader.clone();
        let officer = officer.clone();
        async move {
            rights
                .get_report(authed(
                    pb::GetReportRequest {
                        rights_request_id: rid,
                    },
                    &officer,
                ))
                .await
                .expect("report")
                .into_inner()
        }
    };
    let text_of = |r: &pb::Report| {
        vern_cli::requests_cli::render(&r.json, vern_cli::requests_cli::Format::Text).expect("text")
    };

    // Submitted without a language: the tenant's default, bokmål.
    let default_report = report_of(default_rid.clone()).await;
    assert_eq!(default_report.language, "nb");
    assert!(text_of(&default_report).contains("rett til innsyn"));

    // Submitted in bokmål ("nb").
    let submitted = rights
        .submit_request(authed(
            pb::SubmitRequestRequest {
                r#type: pb::RequestType::Access as i32,
                requester: Some(pb::submit_request_request::Requester::SubjectId(
                    subject.clone(),
                )),
                channel: pb::RequestChannel::WebForm as i32,
                language: "nb".into(),
                request_id: "access-nb".into(),
                ..Default::default()
            },
            &officer,
        ))
        .await
        .expect("submit nb")
        .into_inner();
    let nb_rid = submitted.rights_request_id.clone();
    assert_eq!(submitted.rights_request.expect("request").language, "nb");
    fulfil_and_confirm(ch, &nb_rid).await;
    let nb = report_of(nb_rid.clone()).await;
    assert_eq!(nb.language, "nb");
    let text = text_of(&nb);
    for needle in [
        "Innsyn i dine personopplysninger",
        "rett til innsyn",
        "klage til Datatilsynet",
        "Datatilsynet (https://www.datatilsynet.no)",
        "begrensning av behandlingen",
        "Dine rettigheter",
    ] {
        assert!(
            text.contains(needle),
            "bokmål text lacks {needle:?}:\n{text}"
        );
    }
    assert!(!text.contains("You have the right"), "{text}");
    // The API values stay language-neutral.
    let json: serde_json::Value = serde_json::from_str(&nb.json).expect("json");
    assert_eq!(json["type"], "ACCESS");
    assert_eq!(json["language"], "nb");

    // ExportReport in nynorsk, whatever the request's language.
    let mut stream = rights
        .export_report(authed(
            pb::ExportReportRequest {
                rights_request_id: nb_rid.clone(),
                language: "nn-NO".into(),
            },
            &officer,
        ))
        .await
        .expect("export nn")
        .into_inner();
    let mut bytes = vec![];
    while let Some(chunk) = stream.message().await.expect("chunk") {
        bytes.extend_from_slice(&chunk.json);
    }
    let nn_json = String::from_utf8(bytes).expect("utf-8");
    let nn_text = vern_cli::requests_cli::render(&nn_json, vern_cli::requests_cli::Format::Text)
        .expect("text");
    assert!(nn_text.contains("avgrensing av behandlinga"), "{nn_text}");
    assert!(nn_text.contains("Rettane dine"), "{nn_text}");
    let err = rights
        .export_report(authed(
            pb::ExportReportRequest {
                rights_request_id: nb_rid.clone(),
                language: "sv".into(),
            },
            &officer,
        ))
        .await
        .expect_err("Swedish");
    assert_eq!(err.code(), Code::InvalidArgument);

    // The tenant's default changes to English: a request without a language follows.
    let settings = rights
        .update_rights_settings(authed(
            pb::UpdateRightsSettingsRequest {
                settings: Some(pb::RightsSettings {
                    default_language: "en".into(),
                    ..Default::default()
                }),
                update_mask: Some(prost_types::FieldMask {
                    paths: vec!["default_language".into()],
                }),
                request_id: "default-en".into(),
            },
            &admin,
        ))
        .await
        .expect("settings")
        .into_inner();
    assert_eq!(settings.default_language, "en");
    let fetched = rights
        .get_rights_settings(authed(pb::GetRightsSettingsRequest {}, &admin))
        .await
        .expect("get settings")
        .into_inner();
    assert_eq!(fetched.default_language, "en");
    let en_rid = submit(ch, pb::RequestType::Access, &subject, &[], vec![]).await;
    let (en_request, _) = fulfil_and_confirm(ch, &en_rid).await;
    assert_eq!(en_request.language, "en");
    let en = report_of(en_rid).await;
    assert_eq!(en.language, "en");
    let en_text = text_of(&en);
    assert!(en_text.contains("right of access"), "{en_text}");
    assert!(!en_text.contains("innsyn"), "{en_text}");
    // The earlier request keeps its own language.
    assert_eq!(report_of(nb_rid).await.language, "nb");

    // A language that is not nb, nn or en is refused, naming the field.
    let fields_of = |e: &tonic::Status| -> Vec<String> {
        e.get_details_bad_request()
            .map(|b| b.field_violations.into_iter().map(|v| v.field).collect())
            .unwrap_or_default()
    };
    let err = rights
        .submit_request(authed(
            pb::SubmitRequestRequest {
                r#type: pb::RequestType::Access as i32,
                requester: Some(pb::submit_request_request::Requester::SubjectId(
                    subject.clone(),
                )),
                channel: pb::RequestChannel::WebForm as i32,
                language: "de-DE".into(),
                request_id: "access-de".into(),
                ..Default::default()
            },
            &officer,
        ))
        .await
        .expect_err("German");
    assert_eq!(err.code(), Code::InvalidArgument);
    assert_eq!(fields_of(&err), vec!["language"]);
    let err = rights
        .update_rights_settings(authed(
            pb::UpdateRightsSettingsRequest {
                settings: Some(pb::RightsSettings {
                    default_language: "fr".into(),
                    ..Default::default()
                }),
                update_mask: Some(prost_types::FieldMask {
                    paths: vec!["default_language".into()],
                }),
                request_id: "default-fr".into(),
            },
            &admin,
        ))
        .await
        .expect_err("French");
    assert_eq!(err.code(), Code::InvalidArgument);
    assert_eq!(fields_of(&err), vec!["settings.default_language"]);
    suite.stop().await;
}

/// Portability, rectification, withdrawal of consent, objection, restriction and a
/// rejection, each through the service that owns the data.
async fn other_rights(ch: &Channel) {
    let officer = token(&["privacy-officer"], &[TENANT], 600);
    let crm = token(&["integration"], &[TENANT], 600);
    let mut subjects = spb::subject_service_client::SubjectServiceClient::new(ch.clone());
    let mut consents = cpb::consent_service_client::ConsentServiceClient::new(ch.clone());
    let mut rights = pb::rights_service_client::RightsServiceClient::new(ch.clone());
    let rec = |cat: DataCategory, field: &str, value: &str, purpose: &str, own| spb::Record {
        category: cat as i32,
        field: field.into(),
        value: value.into(),
        source: "web-form".into(),
        purposes: vec![purpose.into()],
        provided_by_subject: own,
        ..Default::default()
    };
    let ola = subjects
        .create_subject(authed(
            spb::CreateSubjectRequest {
                email: "ola@example.no".into(),
                external_refs: vec![spb::ExternalRef {
                    system: "crm".into(),
                    id: "C-2002".into(),
                }],
                records: vec![
                    rec(
                        DataCategory::Contact,
                        "name",
                        "Ola Nordman",
                        "newsletter",
                        true,
                    ),
                    rec(
                        DataCategory::Behaviour,
                        "event-attended",
                        "Jazz night",
                        "analytics",
                        true,
                    ),
                    rec(
                        DataCategory::Financial,
                        "invoice",
                        "Invoice 7",
                        "invoicing",
                        false,
                    ),
                ],
                request_id: "crm-create-2002".into(),
                ..Default::default()
            },
            &crm,
        ))
        .await
        .expect("subject")
        .into_inner();
    let sid = ola.subject_id.clone();
    let name_id = ola
        .records
        .iter()
        .find(|r| r.field == "name")
        .expect("name")
        .record_id
        .clone();
    consents
        .record_consent(authed(
            cpb::RecordConsentRequest {
                subject_id: sid.clone(),
                purpose: "newsletter".into(),
                action: cpb::ConsentAction::Grant as i32,
                channel: cpb::ConsentChannel::WebForm as i32,
                notice_version: "2022-11-20".into(),
                request_id: "grant-2002".into(),
                ..Default::default()
            },
            &crm,
        ))
        .await
        .expect("consent");

    // Portability (Art. 20): only what the subject provided under consent or contract.
    let rid = submit(ch, pb::RequestType::Portability, &sid, &[], vec![]).await;
    let (_, events) = fulfil_and_confirm(ch, &rid).await;
    assert!(events.is_empty());
    let report = rights
        .get_report(authed(
            pb::GetReportRequest {
                rights_request_id: rid,
            },
            &officer,
        ))
        .await
        .expect("report")
        .into_inner();
    let fields: Vec<&str> = report.data.iter().map(|d| d.field.as_str()).collect();
    assert_eq!(
        fields,
        vec!["name"],
        "not analytics (LI), not the invoice (not provided)"
    );
    let json: serde_json::Value = serde_json::from_str(&report.json).expect("json");
    assert_eq!(json["type"], "PORTABILITY");
    assert_eq!(json["data"][0]["value"], "Ola Nordman");

    // Rectification (Art. 16): an identifier and a record, through the subjects service.
    let rid = submit(
        ch,
        pb::RequestType::Rectification,
        &sid,
        &[],
        vec![
            pb::Rectification {
                field: "email".into(),
                value: "ola.nordmann@example.no".into(),
                ..Default::default()
            },
            pb::Rectification {
                field: "name".into(),
                record_id: name_id.clone(),
                value: "Ola Nordmann".into(),
            },
        ],
    )
    .await;
    let (_, events) = fulfil_and_confirm(ch, &rid).await;
    assert_eq!(events.len(), 1);
    assert_eq!(events[0].r#type, pb::RightsEventType::Rectified as i32);
    assert_eq!(
        events[0].fields,
        vec!["email", "name"],
        "names, never values"
    );
    let now = subjects
        .get_subject(authed(
            spb::GetSubjectRequest {
                subject_id: sid.clone(),
                view: spb::SubjectView::Full as i32,
                ..Default::default()
            },
            &officer,
        ))
        .await
        .expect("subject")
        .into_inner();
    assert_eq!(now.email, "ola.nordmann@example.no");
    assert_eq!(
        now.records
            .iter()
            .find(|r| r.record_id == name_id)
            .map(|r| r.value.as_str()),
        Some("Ola Nordmann")
    );

    // Withdrawal of consent, all purposes: the consent-based ones with consent given.
    let rid = submit(ch, pb::RequestType::WithdrawConsent, &sid, &[], vec![]).await;
    let (_, events) = fulfil_and_confirm(ch, &rid).await;
    assert_eq!(
        events[0].r#type,
        pb::RightsEventType::ConsentWithdrawn as i32
    );
    assert_eq!(events[0].purposes, vec!["newsletter"]);
    // Objection to a named purpose.
    let rid = submit(ch, pb::RequestType::Objection, &sid, &["analytics"], vec![]).await;
    let (_, events) = fulfil_and_confirm(ch, &rid).await;
    assert_eq!(events[0].r#type, pb::RightsEventType::Objected as i32);
    assert_eq!(events[0].purposes, vec!["analytics"]);
    for (purpose, want) in [
        ("newsletter", cpb::ConsentStatus::Withdrawn),
        ("analytics", cpb::ConsentStatus::Objected),
    ] {
        let state = consents
            .get_consent_state(authed(
                cpb::GetConsentStateRequest {
                    subject_id: sid.clone(),
                    purpose: purpose.into(),
                },
                &officer,
            ))
            .await
            .expect("state")
            .into_inner();
        assert_eq!(state.status, want as i32, "{purpose}");
    }

    // Restriction (Art. 18).
    let rid = submit(ch, pb::RequestType::Restriction, &sid, &[], vec![]).await;
    let (_, events) = fulfil_and_confirm(ch, &rid).await;
    assert_eq!(events[0].r#type, pb::RightsEventType::Restricted as i32);
    let s = subjects
        .get_subject(authed(
            spb::GetSubjectRequest {
                subject_id: sid.clone(),
                view: spb::SubjectView::Basic as i32,
                ..Default::default()
            },
            &officer,
        ))
        .await
        .expect("subject")
        .into_inner();
    assert_eq!(s.state, spb::SubjectState::Restricted as i32);

    // A request by identity only: verification links it to the subject; a requester the
    // tenant holds nothing about gets an answer saying so.
    let by_identity = |email: &str, id: &str| pb::SubmitRequestRequest {
        r#type: pb::RequestType::Access as i32,
        requester: Some(pb::submit_request_request::Requester::Identity(
            pb::Identity {
                email: email.into(),
                name: "Ola Nordmann".into(),
                ..Default::default()
            },
        )),
        channel: pb::RequestChannel::Paper as i32,
        request_id: id.into(),
        ..Default::default()
    };
    let linked = rights
        .submit_request(authed(
            by_identity("ola.nordmann@example.no", "by-id-1"),
            &officer,
        ))
        .await
        .expect("submit by identity")
        .into_inner();
    let r = linked.rights_request.expect("request");
    assert!(r.subject_id.is_empty());
    assert_eq!(
        r.identity.as_ref().map(|i| i.name.as_str()),
        Some("Ola Nordmann")
    );
    let verified = rights
        .verify_identity(authed(
            pb::VerifyIdentityRequest {
                rights_request_id: linked.rights_request_id.clone(),
                subject_id: sid.clone(),
                method: pb::VerificationMethod::InPerson as i32,
                note: "passport checked at the counter".into(),
                request_id: "verify-by-id-1".into(),
            },
            &officer,
        ))
        .await
        .expect("verify")
        .into_inner();
    assert_eq!(verified.subject_id, sid);
    assert_eq!(verified.verified_by, "e2e");
    let done = rights
        .fulfil_request(authed(
            pb::FulfilRequestRequest {
                rights_request_id: linked.rights_request_id.clone(),
                request_id: "fulfil-by-id-1".into(),
                ..Default::default()
            },
            &officer,
        ))
        .await
        .expect("fulfil")
        .into_inner();
    assert_eq!(done.status, pb::RequestStatus::Completed as i32);
    let report = rights
        .get_report(authed(
            pb::GetReportRequest {
                rights_request_id: linked.rights_request_id,
            },
            &officer,
        ))
        .await
        .expect("report")
        .into_inner();
    assert_eq!(report.subject_id, sid);
    assert!(!report.data.is_empty());
    let stranger = rights
        .submit_request(authed(
            by_identity("nobody@example.no", "by-id-2"),
            &officer,
        ))
        .await
        .expect("submit stranger")
        .into_inner();
    rights
        .verify_identity(authed(
            pb::VerifyIdentityRequest {
                rights_request_id: stranger.rights_request_id.clone(),
                method: pb::VerificationMethod::EmailConfirmation as i32,
                request_id: "verify-by-id-2".into(),
                ..Default::default()
            },
            &officer,
        ))
        .await
        .expect("verify stranger");
    let done = rights
        .fulfil_request(authed(
            pb::FulfilRequestRequest {
                rights_request_id: stranger.rights_request_id.clone(),
                request_id: "fulfil-by-id-2".into(),
                ..Default::default()
            },
            &officer,
        ))
        .await
        .expect("fulfil stranger")
        .into_inner();
    assert_eq!(done.status, pb::RequestStatus::Completed as i32);
    assert!(
        done.outcome
            .expect("outcome")
            .summary
            .contains("no personal data")
    );

    // A rejection needs a ground and a reason; a rejected request cannot be fulfilled.
    let rid = submit(ch, pb::RequestType::Access, &sid, &[], vec![]).await;
    let err = rights
        .reject_request(authed(
            pb::RejectRequestRequest {
                rights_request_id: rid.clone(),
                ground: pb::RejectionGround::Excessive as i32,
                ..Default::default()
            },
            &officer,
        ))
        .await
        .expect_err("no reason");
    assert_eq!(err.code(), Code::InvalidArgument);
    let rejected = rights
        .reject_request(authed(
            pb::RejectRequestRequest {
                rights_request_id: rid.clone(),
                ground: pb::RejectionGround::Excessive as i32,
                reason: "the fourth identical request this month".into(),
                request_id: "reject-1".into(),
            },
            &officer,
        ))
        .await
        .expect("reject")
        .into_inner();
    assert_eq!(rejected.status, pb::RequestStatus::Rejected as i32);
    assert!(rejected.reject_time.is_some());
    let err = rights
        .fulfil_request(authed(
            pb::FulfilRequestRequest {
                rights_request_id: rid,
                ..Default::default()
            },
            &officer,
        ))
        .await
        .expect_err("rejected");
    assert_eq!(err.code(), Code::FailedPrecondition);
}

/// An access request: the deadline (one calendar month, extended once by at most two),
/// and the Art. 15 report.
/// Returns the id of the fulfilled access request.
async fn access(ch: &Channel, fx: &Fixture) -> String {
    let officer = token(&["privacy-officer"], &[TENANT], 600);
    let mut rights = pb::rights_service_client::RightsServiceClient::new(ch.clone());
    let submit = pb::SubmitRequestRequest {
        r#type: pb::RequestType::Access as i32,
        requester: Some(pb::submit_request_request::Requester::SubjectId(
            fx.subject_id.clone(),
        )),
        channel: pb::RequestChannel::Email as i32,
        request_id: "access-1".into(),
        received_at: Some(ts(2026, 1, 31, 10)),
        description: "please send me everything".into(),
        // The tenant's default is Norwegian bokmål; this subject asked in English.
        language: "en-GB".into(),
        ..Default::default()
    };
    let created = rights
        .submit_request(authed(submit.clone(), &officer))
        .await
        .expect("submit")
        .into_inner();
    assert_eq!(
        date_of(created.due_at.as_ref()),
        "2026-02-28",
        "31 January + one calendar month = the last day of February"
    );
    let rid = created.rights_request_id.clone();
    let r = created.rights_request.expect("request");
    assert_eq!(r.status, pb::RequestStatus::Received as i32);
    assert_eq!(r.description, "please send me everything");
    // Idempotent by request_id.
    let again = rights
        .submit_request(authed(submit, &officer))
        .await
        .expect("retry")
        .into_inner();
    assert_eq!(again.rights_request_id, rid);

    // Bad input names the field.
    let err = rights
        .submit_request(authed(
            pb::SubmitRequestRequest {
                channel: pb::RequestChannel::Email as i32,
                ..Default::default()
            },
            &officer,
        ))
        .await
        .expect_err("no type");
    assert_eq!(err.code(), Code::InvalidArgument);

    // Extensions: beyond two months, or without a reason, are refused.
    let extend = |months: i32, reason: &str, id: &str| pb::ExtendDeadlineRequest {
        rights_request_id: rid.clone(),
        reason: reason.into(),
        months,
        subject_informed_at: Some(ts(2026, 2, 10, 9)),
        request_id: id.into(),
    };
    let err = rights
        .extend_deadline(authed(extend(3, "complex request", "ext-3"), &officer))
        .await
        .expect_err("3 months");
    assert_eq!(err.code(), Code::InvalidArgument);
    let fields: Vec<String> = err
        .get_details_bad_request()
        .map(|b| b.field_violations.into_iter().map(|v| v.field).collect())
        .unwrap_or_default();
    assert_eq!(fields, vec!["months"]);
    let err = rights
        .extend_deadline(authed(extend(2, "", "ext-no-reason"), &officer))
        .await
        .expect_err("no reason");
    assert_eq!(err.code(), Code::InvalidArgument);
    assert!(err.message().contains("reason"), "{}", err.message());
    let extended = rights
        .extend_deadline(authed(
            extend(2, "many requests this month", "ext-2"),
            &officer,
        ))
        .await
        .expect("extend")
        .into_inner();
    assert!(extended.extended);
    assert_eq!(extended.extension_months, 2);
    assert_eq!(date_of(extended.original_due_at.as_ref()), "2026-02-28");
    assert_eq!(date_of(extended.due_at.as_ref()), "2026-04-30");
    let err = rights
        .extend_deadline(authed(extend(1, "still busy", "ext-again"), &officer))
        .await
        .expect_err("second extension");
    assert_eq!(err.code(), Code::FailedPrecondition);

    // Overdue listing (received in January 2026, due end of April).
    let overdue = rights
        .list_requests(authed(
            pb::ListRequestsRequest {
                overdue: true,
                ..Default::default()
            },
            &officer,
        ))
        .await
        .expect("list")
        .into_inner();
    let listed = overdue
        .rights_requests
        .iter()
        .find(|x| x.rights_request_id == rid)
        .expect("overdue request listed");
    assert!(listed.overdue);

    // Fulfilment needs a verified identity first.
    let err = rights
        .fulfil_request(authed(
            pb::FulfilRequestRequest {
                rights_request_id: rid.clone(),
                ..Default::default()
            },
            &officer,
        ))
        .await
        .expect_err("not verified");
    assert_eq!(err.code(), Code::FailedPrecondition);
    rights
        .verify_identity(authed(
            pb::VerifyIdentityRequest {
                rights_request_id: rid.clone(),
                method: pb::VerificationMethod::ElectronicId as i32,
                request_id: "verify-access-1".into(),
                ..Default::default()
            },
            &officer,
        ))
        .await
        .expect("verify");
    let done = rights
        .fulfil_request(authed(
            pb::FulfilRequestRequest {
                rights_request_id: rid.clone(),
                request_id: "fulfil-access-1".into(),
                ..Default::default()
            },
            &officer,
        ))
        .await
        .expect("fulfil access")
        .into_inner();
    assert_eq!(
        done.status,
        pb::RequestStatus::Completed as i32,
        "nothing to confirm"
    );

    let report = rights
        .get_report(authed(
            pb::GetReportRequest {
                rights_request_id: rid.clone(),
            },
            &officer,
        ))
        .await
        .expect("report")
        .into_inner();
    let c = report.controller.as_ref().expect("controller");
    assert_eq!(
        (c.name.as_str(), c.org_number.as_str()),
        ("Oslo Kulturfabrikk", "989990748")
    );
    assert_eq!(report.subject_id, fx.subject_id);
    assert_eq!(
        report.identifiers.as_ref().map(|i| i.email.as_str()),
        Some(EMAIL)
    );
    // The data itself, with its source.
    let name = report
        .data
        .iter()
        .find(|d| d.field == "name")
        .expect("name record");
    assert_eq!(name.value, NAME);
    assert_eq!(name.source, "web-form");
    assert!(report.data.iter().any(|d| d.field == "invoice"));
    // Purposes with legal bases, categories, recipients, retention, consent status.
    let purpose = |k: &str| {
        report
            .purposes
            .iter()
            .find(|p| p.key == k)
            .unwrap_or_else(|| panic!("purpose {k}"))
    };
    let newsletter = purpose("newsletter");
    assert_eq!(newsletter.legal_basis, LegalBasis::Consent as i32);
    assert_eq!(
        newsletter.data_categories,
        vec![DataCategory::Contact as i32]
    );
    assert_eq!(newsletter.consent_status, "GRANTED");
    assert!(newsletter.direct_marketing);
    let mailchimp = &newsletter.recipients[0];
    assert_eq!(
        (
            mailchimp.name.as_str(),
            mailchimp.role.as_str(),
            mailchimp.country.as_str()
        ),
        ("Mailchimp", "processor", "US")
    );
    assert_eq!(mailchimp.transfer_safeguard, "STANDARD_CONTRACTUAL_CLAUSES");
    let invoicing = purpose("invoicing");
    assert_eq!(invoicing.legal_basis, LegalBasis::Contract as i32);
    assert!(
        invoicing
            .data_categories
            .contains(&(DataCategory::Financial as i32))
    );
    assert_eq!(invoicing.recipients[0].name, "Skatteetaten");
    assert_eq!(
        invoicing.retention,
        "invoice: 5 years after the end of the financial year (bokføringsloven § 13)"
    );
    assert!(!newsletter.retention.is_empty(), "criteria when no period");
    assert!(
        report
            .retention
            .iter()
            .any(|r| r.period == "P5Y" && r.legal_reference == "bokføringsloven § 13")
    );
    // Rights, complaint authority, automated decisions.
    assert_eq!(report.language, "en");
    assert_eq!(report.rights.len(), 10);
    for word in [
        "right of access",
        "rectif",
        "erase",
        "restrict",
        "object",
        "machine-readable",
        "withdraw",
    ] {
        assert!(
            report.rights.iter().any(|s| s.contains(word)),
            "right mentioning {word}"
        );
    }
    let authority = report.complaint_authority.as_ref().expect("authority");
    assert_eq!(authority.name, "Datatilsynet");
    assert_eq!(authority.url, "https://www.datatilsynet.no");
    assert_eq!(report.automated_decision_making, "none");
    // The same report as one JSON document.
    let json: serde_json::Value = serde_json::from_str(&report.json).expect("json");
    assert_eq!(json["type"], "ACCESS");
    assert_eq!(json["complaint_authority"]["name"], "Datatilsynet");
    assert_eq!(json["controller"]["org_number"], "989990748");
    let purposes = json["purposes"].as_array().expect("purposes");
    assert!(purposes.iter().any(|p| p["legal_basis"] == "CONTRACT"));
    assert!(
        json["data"]
            .as_array()
            .expect("data")
            .iter()
            .any(|d| d["value"] == NAME && d["category"] == "CONTACT")
    );
    assert!(json["generate_time"].as_str().expect("time").contains('T'));
    // `vern requests export`: the readable copy and the JSON document.
    use vern_cli::requests_cli::{Format, render, table};
    let text = render(&report.json, Format::Text).expect("text");
    for needle in [
        "Access to your personal data (GDPR Art. 15)",
        NAME,
        "source web-form",
        "legal basis      contract with you (Art. 6(1)(b))",
        "Skatteetaten (public authority, NO)",
        "5 years after the end of the financial year (bokføringsloven § 13)",
        "Datatilsynet (https://www.datatilsynet.no)",
        "Automated decision-making, including profiling: none",
    ] {
        assert!(
            text.contains(needle),
            "export text lacks {needle:?}:\n{text}"
        );
    }
    assert_eq!(
        render(&report.json, Format::Json).expect("json").trim(),
        report.json.trim()
    );
    // `vern requests list --overdue`: the table names no personal data.
    let listed = table(&overdue.rights_requests);
    assert!(listed.contains(&rid) && listed.contains("ACCESS"));
    assert!(!listed.contains("please send me everything"));

    // Reading the report is audited as a read of personal data (no values in the event).
    let auditor = token(&["auditor"], &[TENANT], 600);
    let mut audit = apb::audit_service_client::AuditServiceClient::new(ch.clone());
    let mut found = false;
    for _ in 0..100 {
        let events = audit
            .query_events(authed(
                apb::QueryEventsRequest {
                    action: "GetReport".into(),
                    subject_id: fx.subject_id.clone(),
                    ..Default::default()
                },
                &auditor,
            ))
            .await
            .expect("query audit")
            .into_inner()
            .events;
        if !events.is_empty() {
            found = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(found, "GetReport audited");
    rid
}

/// An erasure of a customer with an invoice under the bookkeeping duty: the newsletter
/// data goes, the invoice is kept restricted, the report cites the reference; a CRM
/// watching the feed receives the erasure and its acknowledgement completes the request.
async fn erasure(ch: &Channel, fx: &Fixture, access_rid: &str) {
    let admin = token(&["tenant-admin"], &[TENANT], 600);
    let officer = token(&["privacy-officer"], &[TENANT], 600);
    let crm = token(&["integration"], &[TENANT], 600);
    let mut rights = pb::rights_service_client::RightsServiceClient::new(ch.clone());
    let settings = rights
        .update_rights_settings(authed(
            pb::UpdateRightsSettingsRequest {
                settings: Some(pb::RightsSettings {
                    required_systems: vec!["crm".into()],
                    ..Default::default()
                }),
                update_mask: Some(prost_types::FieldMask {
                    paths: vec!["required_systems".into()],
                }),
                request_id: "settings-1".into(),
            },
            &admin,
        ))
        .await
        .expect("settings")
        .into_inner();
    assert_eq!(settings.required_systems, vec!["crm"]);
    assert_eq!(settings.automated_decision_making, "none");

    // The CRM watches its unacknowledged events from the start of the feed.
    let mut watcher = pb::rights_service_client::RightsServiceClient::new(ch.clone());
    let mut stream = watcher
        .watch_events(authed(
            pb::WatchEventsRequest {
                system: "crm".into(),
                unacked_only: true,
                ..Default::default()
            },
            &crm,
        ))
        .await
        .expect("watch")
        .into_inner();

    let created = rights
        .submit_request(authed(
            pb::SubmitRequestRequest {
                r#type: pb::RequestType::Erasure as i32,
                requester: Some(pb::submit_request_request::Requester::SubjectId(
                    fx.subject_id.clone(),
                )),
                channel: pb::RequestChannel::WebForm as i32,
                request_id: "erase-1".into(),
                description: ERASURE_WORDS.into(),
                ..Default::default()
            },
            &crm,
        ))
        .await
        .expect("submit erasure")
        .into_inner();
    let rid = created.rights_request_id;
    assert_eq!(
        created.rights_request.expect("req").required_systems,
        vec!["crm"],
        "copied from the settings"
    );
    rights
        .verify_identity(authed(
            pb::VerifyIdentityRequest {
                rights_request_id: rid.clone(),
                method: pb::VerificationMethod::AuthenticatedSession as i32,
                request_id: "verify-erase-1".into(),
                ..Default::default()
            },
            &officer,
        ))
        .await
        .expect("verify");
    let fulfilled = rights
        .fulfil_request(authed(
            pb::FulfilRequestRequest {
                rights_request_id: rid.clone(),
                request_id: "fulfil-erase-1".into(),
                ..Default::default()
            },
            &officer,
        ))
        .await
        .expect("fulfil erasure")
        .into_inner();
    assert_eq!(
        fulfilled.status,
        pb::RequestStatus::InProgress as i32,
        "waits for crm"
    );
    assert_eq!(fulfilled.pending_systems, vec!["crm"]);
    let outcome = fulfilled.outcome.expect("outcome");
    assert_eq!(outcome.erased_record_count, 2, "name and newsletter e-mail");
    assert_eq!(outcome.retained.len(), 1);
    let kept = &outcome.retained[0];
    assert_eq!(kept.record_id, fx.invoice_id);
    assert_eq!(kept.legal_reference, "bokføringsloven § 13");
    assert!(kept.retain_until_time.is_some());

    // The subject: newsletter data gone, invoice kept restricted.
    let mut subjects = spb::subject_service_client::SubjectServiceClient::new(ch.clone());
    let s = subjects
        .get_subject(authed(
            spb::GetSubjectRequest {
                subject_id: fx.subject_id.clone(),
                view: spb::SubjectView::Basic as i32,
                ..Default::default()
            },
            &officer,
        ))
        .await
        .expect("subject")
        .into_inner();
    assert_eq!(s.state, spb::SubjectState::Restricted as i32);
    assert_eq!(s.records.len(), 1);
    assert!(s.records[0].restricted);
    assert_eq!(s.records[0].field, "invoice");

    // The report names what was kept, until when, and why.
    let report = rights
        .get_report(authed(
            pb::GetReportRequest {
                rights_request_id: rid.clone(),
            },
            &officer,
        ))
        .await
        .expect("report")
        .into_inner();
    assert_eq!(report.erased_record_count, 2);
    assert_eq!(report.retained.len(), 1);
    assert_eq!(report.retained[0].field, "invoice");
    assert_eq!(report.retained[0].category, DataCategory::Financial as i32);
    assert!(report.json.contains("bokføringsloven § 13"));

    // The CRM receives the erasure: ids and its own reference, no personal data.
    let ev = tokio::time::timeout(Duration::from_secs(10), stream.next())
        .await
        .expect("event within 10 s")
        .expect("stream open")
        .expect("event");
    assert_eq!(ev.r#type, pb::RightsEventType::Erased as i32);
    assert_eq!(ev.subject_id, fx.subject_id);
    assert_eq!(ev.rights_request_id, rid);
    assert_eq!(ev.seq, 1, "first event of the tenant's feed");
    assert_eq!(
        ev.external_refs
            .iter()
            .map(|r| (r.system.as_str(), r.id.as_str()))
            .collect::<Vec<_>>(),
        vec![("crm", "C-1001")]
    );
    assert!(ev.retain_until_time.is_some());
    drop(stream);

    // Acknowledging completes the request; a repeat is a no-op.
    let acked = rights
        .ack_event(authed(
            pb::AckEventRequest {
                event: Some(pb::ack_event_request::Event::Cursor(ev.cursor.clone())),
                system: "crm".into(),
                request_id: "ack-1".into(),
            },
            &crm,
        ))
        .await
        .expect("ack")
        .into_inner();
    assert_eq!(acked.confirmations.len(), 1);
    assert_eq!(acked.confirmations[0].system, "crm");
    rights
        .ack_event(authed(
            pb::AckEventRequest {
                event: Some(pb::ack_event_request::Event::EventId(ev.event_id.clone())),
                system: "crm".into(),
                request_id: "ack-2".into(),
            },
            &crm,
        ))
        .await
        .expect("ack again");
    let done = rights
        .get_request(authed(
            pb::GetRequestRequest {
                rights_request_id: rid.clone(),
            },
            &officer,
        ))
        .await
        .expect("get")
        .into_inner();
    assert_eq!(done.status, pb::RequestStatus::Completed as i32);
    assert!(done.pending_systems.is_empty());
    assert_eq!(done.confirmations.len(), 1);
    assert!(done.complete_time.is_some());

    // The feed holds the event; nothing is left unacknowledged for the CRM.
    let unacked = rights
        .list_events(authed(
            pb::ListEventsRequest {
                unacked_by_system: "crm".into(),
                ..Default::default()
            },
            &crm,
        ))
        .await
        .expect("list events")
        .into_inner();
    assert!(unacked.events.is_empty());
    let all = rights
        .list_events(authed(pb::ListEventsRequest::default(), &crm))
        .await
        .expect("list events")
        .into_inner();
    assert_eq!(all.events.len(), 1);

    // Art. 17 reaches the rights service's own copies: the earlier access report (every
    // record value) is destroyed with the subject, and no request of the subject shows
    // its identity or description any more; ids, type, status, dates and the outcome
    // stay as evidence.
    let err = rights
        .get_report(authed(
            pb::GetReportRequest {
                rights_request_id: access_rid.to_owned(),
            },
            &officer,
        ))
        .await
        .expect_err("access report erased");
    assert_eq!(err.code(), Code::FailedPrecondition);
    assert!(
        err.message()
            .contains("report content was erased with the subject on "),
        "{}",
        err.message()
    );
    for (id, ty) in [
        (access_rid, pb::RequestType::Access),
        (rid.as_str(), pb::RequestType::Erasure),
    ] {
        let r = rights
            .get_request(authed(
                pb::GetRequestRequest {
                    rights_request_id: id.to_owned(),
                },
                &officer,
            ))
            .await
            .expect("get after erasure")
            .into_inner();
        assert_eq!(r.r#type, ty as i32);
        assert_eq!(r.subject_id, fx.subject_id);
        assert_eq!(r.description, "", "{ty:?}: description destroyed");
        assert!(r.identity.is_none());
        assert_eq!(r.status, pb::RequestStatus::Completed as i32);
        assert!(r.outcome.is_some(), "the outcome stays as evidence");
    }
    // A replayed submission answers from the shredded request: its stored answer is the
    // id only.
    let replayed = rights
        .submit_request(authed(
            pb::SubmitRequestRequest {
                r#type: pb::RequestType::Erasure as i32,
                requester: Some(pb::submit_request_request::Requester::SubjectId(
                    fx.subject_id.clone(),
                )),
                channel: pb::RequestChannel::WebForm as i32,
                request_id: "erase-1".into(),
                description: ERASURE_WORDS.into(),
                ..Default::default()
            },
            &crm,
        ))
        .await
        .expect("replay")
        .into_inner();
    assert_eq!(replayed.rights_request_id, rid);
    assert_eq!(
        replayed.rights_request.expect("request").description,
        "",
        "no personal data replayed"
    );
    // The erasure's own report (counts, what was kept) stays.
    let kept = rights
        .get_report(authed(
            pb::GetReportRequest {
                rights_request_id: rid.clone(),
            },
            &officer,
        ))
        .await
        .expect("erasure report after erasure")
        .into_inner();
    assert_eq!(kept.erased_record_count, 2);

    // Another tenant sees none of it.
    let other = token(&["privacy-officer"], &["okorad"], 600);
    let err = rights
        .get_request(authed(
            pb::GetRequestRequest {
                rights_request_id: rid,
            },
            &other,
        ))
        .await
        .expect_err("foreign tenant");
    assert_eq!(err.code(), Code::NotFound);
}
