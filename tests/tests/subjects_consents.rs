//! End to end through the gateway: subjects and consents as a CRM would use them,
//! on SQLite and PostgreSQL.

use std::time::{Duration, Instant};

use tonic::Code;
use tonic::transport::Channel;
use tonic_types::StatusExt;
use vern_proto::common::v1::{DataCategory, LegalBasis};
use vern_proto::consents::v1 as cpb;
use vern_proto::subjects::v1 as spb;
use vern_proto::tenants::v1 as tpb;
use vern_tests::{Backend, Suite, authed, token};

#[tokio::test]
async fn crm_flow_on_sqlite() {
    let suite = Suite::start(Backend::Sqlite).await.expect("suite");
    let secrets = scenario(&suite).await;
    // No plaintext identifier in any database file (tables, indexes, WAL).
    for entry in std::fs::read_dir(suite.data_dir()).expect("data dir") {
        let path = entry.expect("entry").path();
        // Files only: `run/` holds the internal socket.
        if !path.is_file() {
            continue;
        }
        let bytes = std::fs::read(&path).expect("read");
        for secret in &secrets {
            assert!(
                !bytes.windows(secret.len()).any(|w| w == secret.as_bytes()),
                "plaintext identifier found in {}",
                path.display()
            );
        }
    }
    suite.stop().await;
}

/// The same scenario against the deployed shape: two replicas of every service as
/// separate processes on PostgreSQL behind one name, one gateway.
#[tokio::test]
async fn crm_flow_on_replicas() {
    let Some(suite) = Suite::start(Backend::Replicas).await else {
        return;
    };
    scenario(&suite).await;
    suite.stop().await;
}

#[tokio::test]
async fn crm_flow_on_postgres() {
    let Some(suite) = Suite::start(Backend::Postgres).await else {
        return;
    };
    scenario(&suite).await;
    suite.stop().await;
}

/// A valid synthetic (test) fødselsnummer: month + 80.
fn synthetic_fnr(day: u32, month: u32, year: u32, seed: u32) -> String {
    for individual in (seed % 400)..1000 {
        let base = format!("{day:02}{:02}{:02}{individual:03}", month + 80, year % 100);
        let d: Vec<u32> = base.bytes().map(|b| u32::from(b - b'0')).collect();
        let k1w = [3, 7, 6, 1, 8, 9, 4, 5, 2];
        let k1 = match 11 - k1w.iter().zip(&d).map(|(w, x)| w * x).sum::<u32>() % 11 {
            11 => 0,
            10 => continue,
            k => k,
        };
        let mut d2 = d.clone();
        d2.push(k1);
        let k2w = [5, 4, 3, 2, 7, 6, 5, 4, 3, 2];
        let k2 = match 11 - k2w.iter().zip(&d2).map(|(w, x)| w * x).sum::<u32>() % 11 {
            11 => 0,
            10 => continue,
            k => k,
        };
        return format!("{base}{k1}{k2}");
    }
    panic!("no valid number")
}

async fn poll_check(
    channel: &Channel,
    tok: &str,
    subject: &str,
    purpose: &str,
    want: cpb::CheckReason,
) -> cpb::CheckResponse {
    let mut consents = cpb::consent_service_client::ConsentServiceClient::new(channel.clone());
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let r = consents
            .check(authed(
                cpb::CheckRequest {
                    subject_id: subject.into(),
                    purpose: purpose.into(),
                },
                tok,
            ))
            .await
            .expect("check")
            .into_inner();
        if r.reason == want as i32 {
            return r;
        }
        assert!(
            Instant::now() < deadline,
            "still {:?}, want {want:?}",
            cpb::CheckReason::try_from(r.reason)
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

fn grant(
    subject: &str,
    purpose: &str,
    action: cpb::ConsentAction,
    request_id: &str,
) -> cpb::RecordConsentRequest {
    cpb::RecordConsentRequest {
        subject_id: subject.into(),
        purpose: purpose.into(),
        action: action as i32,
        channel: cpb::ConsentChannel::WebForm as i32,
        notice_version: "2022-11-20".into(),
        evidence: "signup-form".into(),
        request_id: request_id.into(),
        ..Default::default()
    }
}

/// Runs the CRM scenario; returns the plaintext identifiers used.
async fn scenario(suite: &Suite) -> Vec<String> {
    let ch = &suite.channel;
    let admin = token(&["platform-admin"], &[], 600);
    let mut tenants = tpb::tenant_service_client::TenantServiceClient::new(ch.clone());
    for id in ["kultur", "okorad"] {
        tenants
            .create_tenant(authed(
                tpb::CreateTenantRequest {
                    tenant_id: id.into(),
                    name: id.into(),
                    org_number: "989990748".into(),
                    dpo_email: "dpo@example.no".into(),
                    ..Default::default()
                },
                &admin,
            ))
            .await
            .expect("tenant");
    }
    let kultur_admin = token(&["tenant-admin"], &["kultur"], 600);
    for (key, basis, interest) in [
        ("newsletter", LegalBasis::Consent, ""),
        ("invoicing", LegalBasis::Contract, ""),
        (
            "analytics",
            LegalBasis::LegitimateInterests,
            "improving our web site",
        ),
    ] {
        tenants
            .create_purpose(authed(
                tpb::CreatePurposeRequest {
                    key: key.into(),
                    description: format!("{key} purpose"),
                    legal_basis: basis as i32,
                    data_categories: vec![DataCategory::Contact as i32],
                    legitimate_interest: interest.into(),
                    direct_marketing: key == "newsletter",
                    ..Default::default()
                },
                &kultur_admin,
            ))
            .await
            .expect("purpose");
    }

    let crm = token(&["integration"], &["kultur"], 600);
    let mut subjects = spb::subject_service_client::SubjectServiceClient::new(ch.clone());
    let mut consents = cpb::consent_service_client::ConsentServiceClient::new(ch.clone());
    let email = "Kari.Nordmann@Example.NO";
    let fnr = synthetic_fnr(17, 5, 1985, 123);
    let subject = subjects
        .create_subject(authed(
            spb::CreateSubjectRequest {
                email: email.into(),
                phone: "912 34 567".into(),
                national_id: fnr.clone(),
                external_refs: vec![spb::ExternalRef {
                    system: "crm".into(),
                    id: "C-1001".into(),
                }],
                request_id: "crm-create-1001".into(),
                ..Default::default()
            },
            &crm,
        ))
        .await
        .expect("create subject")
        .into_inner();
    let sid = subject.subject_id.clone();
    assert_eq!(subject.email, "kari.nordmann@example.no", "normalised");
    assert_eq!(subject.phone, "+4791234567", "E.164");

    // Bad input: INVALID_ARGUMENT naming the field.
    for (field, req) in [
        (
            "email",
            spb::CreateSubjectRequest {
                email: "not-an-email".into(),
                ..Default::default()
            },
        ),
        (
            "national_id",
            spb::CreateSubjectRequest {
                national_id: "17058512345".into(),
                ..Default::default()
            },
        ),
        (
            "national_id",
            spb::CreateSubjectRequest {
                national_id: "abcdefghijk".into(),
                ..Default::default()
            },
        ),
    ] {
        let e = subjects
            .create_subject(authed(req, &crm))
            .await
            .expect_err(field);
        assert_eq!(e.code(), Code::InvalidArgument, "{field}");
        let v = e
            .get_details_bad_request()
            .expect("details")
            .field_violations;
        assert_eq!(v[0].field, field);
        assert!(
            !e.message().contains("not-an-email") && !e.message().contains("17058512345"),
            "values never echoed"
        );
    }
    let e = consents
        .check(authed(
            cpb::CheckRequest {
                subject_id: "12345".into(),
                purpose: "newsletter".into(),
            },
            &crm,
        ))
        .await
        .expect_err("non-uuid id");
    assert_eq!(e.code(), Code::InvalidArgument);

    // Found by every identifier.
    for identifier in [
        spb::find_subject_request::Identifier::Email("kari.nordmann@example.no".into()),
        spb::find_subject_request::Identifier::Phone("+47 91234567".into()),
        spb::find_subject_request::Identifier::NationalId(fnr.clone()),
        spb::find_subject_request::Identifier::ExternalRef(spb::ExternalRef {
            system: "crm".into(),
            id: "C-1001".into(),
        }),
    ] {
        let found = subjects
            .find_subject(authed(
                spb::FindSubjectRequest {
                    identifier: Some(identifier),
                    view: 0,
                },
                &crm,
            ))
            .await
            .expect("find")
            .into_inner();
        assert_eq!(found.subject_id, sid);
    }

    // Consent purpose: denied before GRANT, allowed after, denied after WITHDRAW.
    poll_check(ch, &crm, &sid, "newsletter", cpb::CheckReason::NoConsent).await;
    let first = consents
        .record_consent(authed(
            grant(&sid, "newsletter", cpb::ConsentAction::Grant, "grant-1"),
            &crm,
        ))
        .await
        .expect("grant")
        .into_inner();
    let retried = consents
        .record_consent(authed(
            grant(&sid, "newsletter", cpb::ConsentAction::Grant, "grant-1"),
            &crm,
        ))
        .await
        .expect("retry")
        .into_inner();
    assert_eq!(
        first.event_id, retried.event_id,
        "the retry is the same event"
    );
    let allowed = poll_check(
        ch,
        &crm,
        &sid,
        "newsletter",
        cpb::CheckReason::ConsentGranted,
    )
    .await;
    assert!(allowed.allowed);
    assert_eq!(allowed.evidence_id, first.event_id);
    assert_eq!(allowed.legal_basis, LegalBasis::Consent as i32);
    consents
        .record_consent(authed(
            grant(
                &sid,
                "newsletter",
                cpb::ConsentAction::Withdraw,
                "withdraw-1",
            ),
            &crm,
        ))
        .await
        .expect("withdraw");
    let denied = poll_check(
        ch,
        &crm,
        &sid,
        "newsletter",
        cpb::CheckReason::ConsentWithdrawn,
    )
    .await;
    assert!(!denied.allowed);
    let history = consents
        .list_consent_history(authed(
            cpb::ListConsentHistoryRequest {
                subject_id: sid.clone(),
                purpose: "newsletter".into(),
                ..Default::default()
            },
            &crm,
        ))
        .await
        .expect("history")
        .into_inner();
    let ids: Vec<&str> = history
        .events
        .iter()
        .map(|e| e.request_id.as_str())
        .collect();
    assert_eq!(ids, ["grant-1", "withdraw-1"], "one event per request_id");

    // Contract purpose allowed while active; legitimate interest until an objection.
    assert!(
        poll_check(ch, &crm, &sid, "invoicing", cpb::CheckReason::BasisAllows)
            .await
            .allowed
    );
    assert!(
        poll_check(ch, &crm, &sid, "analytics", cpb::CheckReason::NoObjection)
            .await
            .allowed
    );
    consents
        .record_consent(authed(
            grant(&sid, "analytics", cpb::ConsentAction::Object, "object-1"),
            &crm,
        ))
        .await
        .expect("object");
    assert!(
        !poll_check(
            ch,
            &crm,
            &sid,
            "analytics",
            cpb::CheckReason::SubjectObjected
        )
        .await
        .allowed
    );

    // BatchCheck agrees with Check.
    let other = subjects
        .create_subject(authed(
            spb::CreateSubjectRequest {
                email: "ola@example.no".into(),
                ..Default::default()
            },
            &crm,
        ))
        .await
        .expect("second subject")
        .into_inner()
        .subject_id;
    // Its state reaches consents through the subjects outbox.
    poll_check(ch, &crm, &other, "invoicing", cpb::CheckReason::BasisAllows).await;
    for purpose in ["newsletter", "invoicing", "analytics"] {
        let ids = vec![sid.clone(), other.clone(), uuid::Uuid::now_v7().to_string()];
        let batch = consents
            .batch_check(authed(
                cpb::BatchCheckRequest {
                    purpose: purpose.into(),
                    subject_ids: ids.clone(),
                },
                &crm,
            ))
            .await
            .expect("batch")
            .into_inner();
        for (r, id) in batch.results.iter().zip(&ids) {
            let single = consents
                .check(authed(
                    cpb::CheckRequest {
                        subject_id: id.clone(),
                        purpose: purpose.into(),
                    },
                    &crm,
                ))
                .await
                .expect("check")
                .into_inner();
            assert_eq!(
                (r.allowed, r.reason, &r.evidence_id),
                (single.allowed, single.reason, &single.evidence_id),
                "{purpose} {id}"
            );
        }
    }

    // A purpose change reaches Check through the cache invalidation, not a TTL.
    let mut changed = tpb::Purpose {
        key: "newsletter".into(),
        legal_basis: LegalBasis::Contract as i32,
        ..Default::default()
    };
    changed.description = String::new();
    tenants
        .update_purpose(authed(
            tpb::UpdatePurposeRequest {
                purpose: Some(changed),
                update_mask: Some(prost_types::FieldMask {
                    paths: vec!["legal_basis".into()],
                }),
                request_id: String::new(),
            },
            &kultur_admin,
        ))
        .await
        .expect("update purpose");
    let started = Instant::now();
    poll_check(ch, &crm, &sid, "newsletter", cpb::CheckReason::BasisAllows).await;
    assert!(started.elapsed() < Duration::from_secs(10));

    // Another tenant's staff cannot reach the subject (issue 3's isolation, with data).
    let okorad_admin = token(&["tenant-admin"], &["okorad"], 600);
    let e = subjects
        .get_subject(authed(
            spb::GetSubjectRequest {
                subject_id: sid.clone(),
                view: 0,
                ..Default::default()
            },
            &okorad_admin,
        ))
        .await
        .expect_err("foreign subject");
    assert_eq!(e.code(), Code::NotFound, "{e:?}");
    let e = subjects
        .erase_subject(authed(
            spb::EraseSubjectRequest {
                subject_id: sid.clone(),
                reason: "Art. 17 request".into(),
                ..Default::default()
            },
            &okorad_admin,
        ))
        .await
        .expect_err("tenant admins do not erase");
    assert_eq!(e.code(), Code::PermissionDenied);
    let okorad_officer = token(&["privacy-officer"], &["okorad"], 600);
    let e = subjects
        .erase_subject(authed(
            spb::EraseSubjectRequest {
                subject_id: sid.clone(),
                reason: "Art. 17 request".into(),
                ..Default::default()
            },
            &okorad_officer,
        ))
        .await
        .expect_err("foreign subject");
    assert_eq!(e.code(), Code::NotFound);
    for role in ["platform-admin", "auditor"] {
        let t = token(&[role], &["kultur"], 600);
        let e = subjects
            .get_subject(authed(
                spb::GetSubjectRequest {
                    subject_id: sid.clone(),
                    view: 0,
                    ..Default::default()
                },
                &t,
            ))
            .await
            .expect_err(role);
        assert_eq!(e.code(), Code::PermissionDenied, "{role}");
    }

    // Restriction and erasure reach Check through the subjects outbox.
    let officer = token(&["privacy-officer"], &["kultur"], 600);
    subjects
        .restrict_subject(authed(
            spb::RestrictSubjectRequest {
                subject_id: sid.clone(),
                reason: "accuracy contested".into(),
                ..Default::default()
            },
            &officer,
        ))
        .await
        .expect("restrict");
    poll_check(
        ch,
        &crm,
        &sid,
        "invoicing",
        cpb::CheckReason::SubjectRestricted,
    )
    .await;
    subjects
        .erase_subject(authed(
            spb::EraseSubjectRequest {
                subject_id: sid.clone(),
                reason: "Art. 17 request".into(),
                ..Default::default()
            },
            &officer,
        ))
        .await
        .expect("erase");
    poll_check(ch, &crm, &sid, "invoicing", cpb::CheckReason::SubjectErased).await;
    let tomb = subjects
        .get_subject(authed(
            spb::GetSubjectRequest {
                subject_id: sid.clone(),
                view: 0,
                ..Default::default()
            },
            &crm,
        ))
        .await
        .expect("tombstone")
        .into_inner();
    assert_eq!(tomb.state, spb::SubjectState::Erased as i32);
    assert!(tomb.email.is_empty() && tomb.national_id.is_empty());

    // CSV import: good rows commit, bad rows are reported by line, a re-run adds nothing.
    let dir = tempfile::tempdir().expect("dir");
    let csv = dir.path().join("subjects.csv");
    std::fs::write(
        &csv,
        format!(
            "email,phone,national_id,external_refs\nper@example.no,,,crm:C-2\nbad-email,,,\n,,{},crm:C-3\nlisa@example.no,99999,,\n",
            synthetic_fnr(2, 3, 1990, 7)
        ),
    )
    .expect("csv");
    let client = vern_cli::remote::Client::with_channel(ch.clone(), crm.clone());
    let report = vern_cli::import::import_csv(&client, "kultur", &csv, 4, false)
        .await
        .expect("import");
    assert_eq!(
        (report.rows, report.created, report.invalid.len()),
        (4, 2, 2),
        "{report:?}"
    );
    assert_eq!(
        report.invalid.iter().map(|(l, _)| *l).collect::<Vec<_>>(),
        [3, 5]
    );
    assert!(report.invalid[0].1.starts_with("email"));
    let again = vern_cli::import::import_csv(&client, "kultur", &csv, 4, false)
        .await
        .expect("re-run");
    assert_eq!(again.created + again.present, 2);
    let listed = subjects
        .list_subjects(authed(
            spb::ListSubjectsRequest {
                page_size: 100,
                ..Default::default()
            },
            &crm,
        ))
        .await
        .expect("list")
        .into_inner();
    assert_eq!(
        listed.subjects.len(),
        4,
        "two created here, two imported, none twice"
    );

    vec!["kari.nordmann@example.no".into(), fnr, "91234567".into()]
}
