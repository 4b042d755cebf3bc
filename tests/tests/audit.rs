//! End to end: every change and every read of personal data lands in the tenant's
//! audit chain, without personal data, and the chain verifies.

use std::time::{Duration, Instant};

use prost::Message;
use vern_proto::audit::v1 as apb;
use vern_proto::subjects::v1 as spb;
use vern_proto::tenants::v1 as tpb;
use vern_tests::{Backend, Suite, authed, token};

#[tokio::test]
async fn changes_and_reads_reach_the_chain_on_sqlite() {
    let suite = Suite::start(Backend::Sqlite).await.expect("suite");
    scenario(&suite).await;
    suite.stop().await;
}

/// The same scenario against the deployed shape: two replicas of every service as
/// separate processes on PostgreSQL behind one name, one gateway.
#[tokio::test]
async fn changes_and_reads_reach_the_chain_on_replicas() {
    let Some(suite) = Suite::start(Backend::Replicas).await else {
        return;
    };
    scenario(&suite).await;
    suite.stop().await;
}

#[tokio::test]
async fn changes_and_reads_reach_the_chain_on_postgres() {
    let Some(suite) = Suite::start(Backend::Postgres).await else {
        return;
    };
    scenario(&suite).await;
    suite.stop().await;
}

async fn scenario(suite: &Suite) {
    let ch = &suite.channel;
    let admin = token(&["platform-admin"], &[], 600);
    tpb::tenant_service_client::TenantServiceClient::new(ch.clone())
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
    let crm = token(&["integration"], &["kultur"], 600);
    let mut subjects = spb::subject_service_client::SubjectServiceClient::new(ch.clone());
    let email = "audit.person@example.no";
    let started = Instant::now();
    let s = subjects
        .create_subject(authed(
            spb::CreateSubjectRequest {
                email: email.into(),
                request_id: "audit-create-1".into(),
                ..Default::default()
            },
            &crm,
        ))
        .await
        .expect("create")
        .into_inner();
    subjects
        .get_subject(authed(
            spb::GetSubjectRequest {
                subject_id: s.subject_id.clone(),
                view: 0,
                ..Default::default()
            },
            &crm,
        ))
        .await
        .expect("read");
    // A failed read of another id is audited too (with its outcome).
    let _ = subjects
        .get_subject(authed(
            spb::GetSubjectRequest {
                subject_id: uuid::Uuid::now_v7().to_string(),
                view: 0,
                ..Default::default()
            },
            &crm,
        ))
        .await;

    let auditor = token(&["auditor"], &["kultur"], 600);
    let mut audit = apb::audit_service_client::AuditServiceClient::new(ch.clone());
    let deadline = Instant::now() + Duration::from_secs(10);
    let events = loop {
        let page = audit
            .query_events(authed(
                apb::QueryEventsRequest {
                    subject_id: s.subject_id.clone(),
                    page_size: 100,
                    ..Default::default()
                },
                &auditor,
            ))
            .await
            .expect("query")
            .into_inner();
        let actions: Vec<&str> = page.events.iter().map(|e| e.action.as_str()).collect();
        if actions.contains(&"CreateSubject") && actions.contains(&"GetSubject") {
            break page.events;
        }
        assert!(
            Instant::now() < deadline,
            "events did not reach the chain: {actions:?}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    let elapsed = started.elapsed();
    eprintln!(
        "create + read reached the audit chain in {} ms",
        elapsed.as_millis()
    );
    assert!(elapsed < Duration::from_secs(3), "took {elapsed:?}");

    let create = events
        .iter()
        .find(|e| e.action == "CreateSubject")
        .expect("create event");
    assert_eq!(create.service, "subjects");
    assert_eq!(create.request_id, "audit-create-1");
    assert_eq!(create.actor.as_ref().map(|a| a.sub.as_str()), Some("e2e"));
    assert_eq!(create.outcome, apb::Outcome::Success as i32);
    assert!(create.seq > 0 && !create.hash.is_empty());
    for e in &events {
        let bytes = e.encode_to_vec();
        assert!(
            !bytes.windows(email.len()).any(|w| w == email.as_bytes()),
            "no personal data in {}",
            e.action
        );
    }

    let verified = audit
        .verify_chain(authed(apb::VerifyChainRequest::default(), &auditor))
        .await
        .expect("verify")
        .into_inner();
    assert!(verified.ok, "{verified:?}");
    assert!(verified.checked >= 2);

    // A denied call is handed to the audit hook: an auditor may not read subjects.
    let denied = subjects
        .get_subject(authed(
            spb::GetSubjectRequest {
                subject_id: s.subject_id.clone(),
                view: 0,
                ..Default::default()
            },
            &auditor,
        ))
        .await
        .expect_err("auditors read audit only");
    assert_eq!(denied.code(), tonic::Code::PermissionDenied);
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let page = audit
            .query_events(authed(
                apb::QueryEventsRequest {
                    action: "GetSubject".into(),
                    outcome: apb::Outcome::Denied as i32,
                    ..Default::default()
                },
                &auditor,
            ))
            .await
            .expect("query")
            .into_inner();
        if let Some(e) = page.events.first() {
            assert_eq!(e.service, "gateway");
            assert_eq!(e.status_code, tonic::Code::PermissionDenied as i32);
            break;
        }
        assert!(Instant::now() < deadline, "denial not audited");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }

    // Tenant creation (platform level) is in the new tenant's chain as well.
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let tenant_events = audit
            .query_events(authed(
                apb::QueryEventsRequest {
                    action: "CreateTenant".into(),
                    ..Default::default()
                },
                &auditor,
            ))
            .await
            .expect("query")
            .into_inner();
        if !tenant_events.events.is_empty() {
            assert_eq!(tenant_events.events.len(), 1, "exactly once");
            assert_eq!(tenant_events.events[0].service, "tenants");
            break;
        }
        assert!(Instant::now() < deadline, "tenant creation not audited");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}
