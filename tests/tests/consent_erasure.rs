//! End to end through the gateway: consent evidence is sealed at rest and goes with its
//! subject. A consent is recorded with evidence, the subject is erased with
//! SubjectService.EraseSubject, and once the outbox has told consents, the history
//! answers no evidence and no database holds the evidence (SQLite: the raw files, -wal
//! included; PostgreSQL: every cell of the consents schema).

use std::time::{Duration, Instant};

use vern_proto::common::v1::{DataCategory, LegalBasis};
use vern_proto::consents::v1 as cpb;
use vern_proto::subjects::v1 as spb;
use vern_proto::tenants::v1 as tpb;
use vern_tests::{Backend, Suite, authed, token};

const EVIDENCE: &str = "paper form signed by kari.e2e@example.no at the library";
const EXTERNAL_REF: &str = "CRM-E2E-7741";

#[tokio::test]
async fn erased_subjects_consent_evidence_is_gone_on_sqlite() {
    let suite = Suite::start(Backend::Sqlite).await.expect("suite");
    scenario(&suite).await;
    // Every file vern wrote into the data dir: no evidence, no reference, owner-only.
    let mut seen = vec![];
    for entry in std::fs::read_dir(suite.data_dir()).expect("data dir") {
        let path = entry.expect("entry").path();
        if !path.is_file() {
            continue;
        }
        let name = path
            .file_name()
            .expect("name")
            .to_string_lossy()
            .into_owned();
        let bytes = std::fs::read(&path).expect("read");
        for needle in [EVIDENCE, "kari.e2e", EXTERNAL_REF] {
            assert!(
                !vern_kit::testing::raw::contains(&bytes, needle.as_bytes()),
                "{needle:?} found in {name}"
            );
        }
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            let mode = std::fs::metadata(&path).expect("meta").permissions().mode() & 0o777;
            assert_eq!(mode, 0o600, "{name} is {mode:o}");
        }
        seen.push(name);
    }
    for f in [
        "consents.db",
        "consents.db-wal",
        "subjects.db",
        "subject_keys.db",
    ] {
        assert!(seen.iter().any(|s| s == f), "{f} scanned: {seen:?}");
    }
    suite.stop().await;
}

/// The same scenario against the deployed shape: two replicas of every service as
/// separate processes on PostgreSQL behind one name, one gateway.
#[tokio::test]
async fn erased_subjects_consent_evidence_is_gone_on_replicas() {
    let Some(suite) = Suite::start(Backend::Replicas).await else {
        return;
    };
    scenario(&suite).await;
    suite.stop().await;
}

#[tokio::test]
async fn erased_subjects_consent_evidence_is_gone_on_postgres() {
    let Some(suite) = Suite::start(Backend::Postgres).await else {
        return;
    };
    scenario(&suite).await;
    for service in ["consents", "subjects", "rights"] {
        let target = suite.db_target(service);
        let db = vern_kit::db::connect(&target).await.expect("connect");
        for needle in [EVIDENCE, "kari.e2e", EXTERNAL_REF] {
            let cells = vern_kit::testing::raw::cells_containing(&db, needle.as_bytes()).await;
            assert!(cells.is_empty(), "{needle:?} in {service}: {cells:?}");
        }
        db.close().await.expect("close");
    }
    suite.stop().await;
}

async fn scenario(suite: &Suite) {
    let ch = &suite.channel;
    let admin = token(&["platform-admin"], &[], 600);
    let mut tenants = tpb::tenant_service_client::TenantServiceClient::new(ch.clone());
    tenants
        .create_tenant(authed(
            tpb::CreateTenantRequest {
                tenant_id: "kultur".into(),
                name: "Kultur".into(),
                org_number: "989990748".into(),
                dpo_email: "dpo@example.no".into(),
                ..Default::default()
            },
            &admin,
        ))
        .await
        .expect("tenant");
    tenants
        .create_purpose(authed(
            tpb::CreatePurposeRequest {
                key: "newsletter".into(),
                description: "newsletter".into(),
                legal_basis: LegalBasis::Consent as i32,
                data_categories: vec![DataCategory::Contact as i32],
                direct_marketing: true,
                ..Default::default()
            },
            &token(&["tenant-admin"], &["kultur"], 600),
        ))
        .await
        .expect("purpose");

    let crm = token(&["integration"], &["kultur"], 600);
    let mut subjects = spb::subject_service_client::SubjectServiceClient::new(ch.clone());
    let mut consents = cpb::consent_service_client::ConsentServiceClient::new(ch.clone());
    let sid = subjects
        .create_subject(authed(
            spb::CreateSubjectRequest {
                email: "kari.e2e@example.no".into(),
                external_refs: vec![spb::ExternalRef {
                    system: "crm".into(),
                    id: EXTERNAL_REF.into(),
                }],
                request_id: "e2e-create".into(),
                ..Default::default()
            },
            &crm,
        ))
        .await
        .expect("create subject")
        .into_inner()
        .subject_id;
    let record = || cpb::RecordConsentRequest {
        subject_id: sid.clone(),
        purpose: "newsletter".into(),
        action: cpb::ConsentAction::Grant as i32,
        channel: cpb::ConsentChannel::Paper as i32,
        notice_version: "2026-11".into(),
        evidence: EVIDENCE.into(),
        request_id: "e2e-consent-1".into(),
        ..Default::default()
    };
    let recorded = consents
        .record_consent(authed(record(), &crm))
        .await
        .expect("record")
        .into_inner();
    assert_eq!(recorded.evidence, EVIDENCE);
    let retried = consents
        .record_consent(authed(record(), &crm))
        .await
        .expect("retry")
        .into_inner();
    assert_eq!(
        retried, recorded,
        "a retry answers the same, evidence included"
    );
    let history = || cpb::ListConsentHistoryRequest {
        subject_id: sid.clone(),
        ..Default::default()
    };
    let before = consents
        .list_consent_history(authed(history(), &crm))
        .await
        .expect("history")
        .into_inner();
    assert_eq!(before.events[0].evidence, EVIDENCE);

    subjects
        .erase_subject(authed(
            spb::EraseSubjectRequest {
                subject_id: sid.clone(),
                reason: "Art. 17 request".into(),
                request_id: "e2e-erase".into(),
                ..Default::default()
            },
            &token(&["privacy-officer"], &["kultur"], 600),
        ))
        .await
        .expect("erase");

    // The outbox delivers the ERASED state to consents: Check says so, and the
    // history (same events, ids and actions) has no evidence left.
    let deadline = Instant::now() + Duration::from_secs(15);
    loop {
        let check = consents
            .check(authed(
                cpb::CheckRequest {
                    subject_id: sid.clone(),
                    purpose: "newsletter".into(),
                },
                &crm,
            ))
            .await
            .expect("check")
            .into_inner();
        if check.reason == cpb::CheckReason::SubjectErased as i32 {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "erasure not delivered: {check:?}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let after = consents
        .list_consent_history(authed(history(), &crm))
        .await
        .expect("history after erasure")
        .into_inner();
    assert_eq!(after.events.len(), 1, "the event stays");
    assert_eq!(after.events[0].event_id, recorded.event_id);
    assert_eq!(after.events[0].evidence, "", "no evidence after erasure");
    let state = consents
        .get_consent_state(authed(
            cpb::GetConsentStateRequest {
                subject_id: sid.clone(),
                purpose: "newsletter".into(),
            },
            &crm,
        ))
        .await
        .expect("state after erasure")
        .into_inner();
    assert_eq!(state.latest_event_id, recorded.event_id);
    // A late retry of the original call still answers, without the evidence.
    let late = consents
        .record_consent(authed(record(), &crm))
        .await
        .expect("late retry")
        .into_inner();
    assert_eq!(late.event_id, recorded.event_id);
    assert_eq!(late.evidence, "");
}
