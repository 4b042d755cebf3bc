//! The platform's own audit chain (`vern-platform`): what platform admins do that
//! belongs to no department is recorded there — every key operation (counting,
//! rewrapping, re-indexing), a platform call that failed before naming a tenant, and
//! the refusals of platform tokens. An auditor token naming `vern-platform` reads and
//! verifies it like a department's chain; nothing else acts in it, and no department
//! can take its id. Checked on `vern dev` and on the separate-process topology.

use std::time::{Duration, Instant};

use tonic::Code;
use tonic::transport::Channel;
use vern_proto::audit::v1 as apb;
use vern_proto::common::v1 as cpb;
use vern_proto::subjects::v1 as spb;
use vern_proto::tenants::v1 as tpb;
use vern_tests::{Backend, Suite, authed, token};

const PLATFORM: &str = "vern-platform";

/// The platform chain's events, as its auditor reads them.
async fn platform_events(ch: &Channel) -> Vec<apb::AuditEvent> {
    vern_tests::chain_events(ch, PLATFORM).await
}

/// Waits (the outbox relays deliver in the background) until `wanted` holds.
async fn until(ch: &Channel, what: &str, wanted: impl Fn(&[apb::AuditEvent]) -> bool) {
    let start = Instant::now();
    loop {
        let events = platform_events(ch).await;
        if wanted(&events) {
            return;
        }
        assert!(
            start.elapsed() < Duration::from_secs(20),
            "{what} is not in the platform chain: {:?}",
            events
                .iter()
                .map(|e| (&e.service, &e.action, e.status_code))
                .collect::<Vec<_>>()
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

async fn recorded_in_the_platform_chain(suite: &Suite) {
    let ch = &suite.channel;
    let admin = token(&["platform-admin"], &[], 600);

    // A key count in each service holding data keys.
    let counted = spb::subject_service_client::SubjectServiceClient::new(ch.clone())
        .count_data_keys(authed(cpb::CountDataKeysRequest {}, &admin))
        .await;
    assert!(counted.is_ok(), "{counted:?}");
    let counted =
        vern_proto::consents::v1::consent_service_client::ConsentServiceClient::new(ch.clone())
            .count_data_keys(authed(cpb::CountDataKeysRequest {}, &admin))
            .await;
    assert!(counted.is_ok(), "{counted:?}");
    // A platform token refused personal data.
    let refused = spb::subject_service_client::SubjectServiceClient::new(ch.clone())
        .get_subject(authed(
            spb::GetSubjectRequest {
                subject_id: uuid::Uuid::now_v7().to_string(),
                ..Default::default()
            },
            &admin,
        ))
        .await
        .expect_err("refused");
    assert_eq!(refused.code(), Code::PermissionDenied);
    // No department takes the platform chain's id.
    let taken = tpb::tenant_service_client::TenantServiceClient::new(ch.clone())
        .create_tenant(authed(
            tpb::CreateTenantRequest {
                tenant_id: PLATFORM.into(),
                name: "Plattform".into(),
                request_id: "take-platform".into(),
                ..Default::default()
            },
            &admin,
        ))
        .await
        .expect_err("reserved");
    assert_eq!(taken.code(), Code::InvalidArgument, "{taken:?}");
    assert!(taken.message().contains("tenant_id"), "{taken:?}");

    until(
        ch,
        "both key counts, the refusal and the failed creation",
        |events| {
            let has = |service: &str, action: &str, code: Code| {
                events.iter().any(|e| {
                    e.service == service
                        && e.action == action
                        && e.status_code == code as i32
                        && e.tenant_id == PLATFORM
                        && e.actor
                            .as_ref()
                            .is_some_and(|a| a.roles == ["platform-admin"])
                })
            };
            has("subjects", "CountDataKeys", Code::Ok)
                && has("consents", "CountDataKeys", Code::Ok)
                && has("gateway", "GetSubject", Code::PermissionDenied)
                && has("tenants", "CreateTenant", Code::InvalidArgument)
        },
    )
    .await;
    // The key counts are recorded as successes.
    let events = platform_events(ch).await;
    let count = events
        .iter()
        .find(|e| e.action == "CountDataKeys")
        .expect("a count");
    assert_eq!(count.outcome(), apb::Outcome::Success);

    // The chain verifies like any other.
    let auditor = token(&["auditor"], &[PLATFORM], 600);
    let verified = apb::audit_service_client::AuditServiceClient::new(ch.clone())
        .verify_chain(authed(apb::VerifyChainRequest::default(), &auditor))
        .await
        .expect("verify")
        .into_inner();
    assert!(verified.ok, "{verified:?}");
    assert!(verified.checked >= 4, "{verified:?}");

    // Nothing but audit reads acts in it.
    let crm = token(&["integration"], &[PLATFORM], 600);
    let write = spb::subject_service_client::SubjectServiceClient::new(ch.clone())
        .create_subject(authed(
            spb::CreateSubjectRequest {
                email: "someone@example.no".into(),
                request_id: "platform-write".into(),
                ..Default::default()
            },
            &crm,
        ))
        .await
        .expect_err("refused");
    assert_eq!(write.code(), Code::PermissionDenied, "{write:?}");
    let tenant_admin = token(&["tenant-admin"], &[PLATFORM], 600);
    let purpose = tpb::tenant_service_client::TenantServiceClient::new(ch.clone())
        .list_purposes(authed(tpb::ListPurposesRequest::default(), &tenant_admin))
        .await
        .expect_err("refused");
    assert_eq!(purpose.code(), Code::PermissionDenied, "{purpose:?}");
}

#[tokio::test]
async fn platform_operations_are_recorded_in_the_platform_chain_on_vern_dev() {
    let suite = Suite::start(Backend::Sqlite).await.expect("suite");
    recorded_in_the_platform_chain(&suite).await;
    suite.stop().await;
}

#[tokio::test]
async fn platform_operations_are_recorded_in_the_platform_chain_on_the_topology() {
    let Some(suite) = Suite::start(Backend::Replicas).await else {
        return;
    };
    recorded_in_the_platform_chain(&suite).await;
    suite.stop().await;
}
