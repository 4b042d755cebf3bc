//! End to end: the whole suite in process, real tonic clients through the gateway,
//! on SQLite and on PostgreSQL.

use tokio_stream::StreamExt;
use tonic::Code;
use tonic_health::pb::HealthCheckRequest;
use tonic_health::pb::health_check_response::ServingStatus;
use tonic_health::pb::health_client::HealthClient;
use tonic_reflection::pb::v1::ServerReflectionRequest;
use tonic_reflection::pb::v1::server_reflection_client::ServerReflectionClient;
use tonic_reflection::pb::v1::server_reflection_request::MessageRequest;
use tonic_reflection::pb::v1::server_reflection_response::MessageResponse;
use tonic_types::StatusExt;
use vern_proto::common::v1::{DataCategory, LegalBasis};
use vern_proto::tenants::v1 as pb;
use vern_proto::tenants::v1::tenant_service_client::TenantServiceClient;
use vern_tests::{Backend, Suite, authed, token};

#[tokio::test]
async fn suite_on_sqlite() {
    let suite = Suite::start(Backend::Sqlite)
        .await
        .expect("sqlite always runs");
    scenario(&suite).await;
    suite.stop().await;
}

/// The same scenario against the deployed shape: two replicas of every service as
/// separate processes on PostgreSQL behind one name, one gateway.
#[tokio::test]
async fn suite_on_replicas() {
    let Some(suite) = Suite::start(Backend::Replicas).await else {
        return;
    };
    scenario(&suite).await;
    suite.stop().await;
}

#[tokio::test]
async fn suite_on_postgres() {
    let Some(suite) = Suite::start(Backend::Postgres).await else {
        return;
    };
    scenario(&suite).await;
    suite.stop().await;
}

fn create_request(id: &str, org: &str) -> pb::CreateTenantRequest {
    pb::CreateTenantRequest {
        tenant_id: id.into(),
        name: "Oslo Kulturfabrikk".into(),
        org_number: org.into(),
        dpo_email: "personvern@kulturfabrikk.example".into(),
        ..Default::default()
    }
}

async fn scenario(suite: &Suite) {
    // Health and reflection need no token.
    let mut health = HealthClient::new(suite.channel.clone());
    for name in vern_proto::SERVICE_NAMES.iter().chain(std::iter::once(&"")) {
        let r = health
            .check(HealthCheckRequest {
                service: name.to_string(),
            })
            .await
            .expect("health")
            .into_inner();
        assert_eq!(r.status, ServingStatus::Serving as i32, "{name}");
    }
    let mut reflection = ServerReflectionClient::new(suite.channel.clone());
    let req = ServerReflectionRequest {
        host: String::new(),
        message_request: Some(MessageRequest::ListServices(String::new())),
    };
    let mut stream = reflection
        .server_reflection_info(tokio_stream::iter(vec![req]))
        .await
        .expect("reflection")
        .into_inner();
    let listed = match stream
        .next()
        .await
        .expect("one answer")
        .expect("ok")
        .message_response
    {
        Some(MessageResponse::ListServicesResponse(l)) => {
            l.service.into_iter().map(|s| s.name).collect::<Vec<_>>()
        }
        other => panic!("unexpected reflection answer {other:?}"),
    };
    for name in vern_proto::SERVICE_NAMES {
        assert!(
            listed.iter().any(|l| l == name),
            "reflection lists {name}: {listed:?}"
        );
    }
    // Clients read each RPC's permission from reflection: the served descriptor of
    // ConsentService carries option (vern.common.v1.permission) on Check.
    let req = ServerReflectionRequest {
        host: String::new(),
        message_request: Some(MessageRequest::FileContainingSymbol(
            "vern.consents.v1.ConsentService".into(),
        )),
    };
    let mut stream = reflection
        .server_reflection_info(tokio_stream::iter(vec![req]))
        .await
        .expect("reflection")
        .into_inner();
    let files = match stream
        .next()
        .await
        .expect("one answer")
        .expect("ok")
        .message_response
    {
        Some(MessageResponse::FileDescriptorResponse(f)) => f.file_descriptor_proto,
        other => panic!("unexpected reflection answer {other:?}"),
    };
    let mut set = vec![];
    for file in &files {
        // Re-wrap each FileDescriptorProto as field 1 of a FileDescriptorSet.
        prost::encoding::bytes::encode(1, file, &mut set);
    }
    let served = vern_proto::rpcs::from_descriptor_set(&set).expect("served descriptors");
    let check = served
        .iter()
        .find(|r| r.path() == "/vern.consents.v1.ConsentService/Check")
        .expect("Check is served");
    assert_eq!(
        check.permission,
        vern_proto::common::v1::Permission::ConsentsCheck,
        "reflection carries the permission option"
    );

    let mut tenants = TenantServiceClient::new(suite.channel.clone());
    let admin = token(&["platform-admin"], &[], 300);

    // No token, a bad token, an expired token.
    let e = tenants
        .get_tenant(pb::GetTenantRequest {
            tenant_id: "kultur".into(),
        })
        .await
        .expect_err("no token");
    assert_eq!(e.code(), Code::Unauthenticated);
    let e = tenants
        .get_tenant(authed(
            pb::GetTenantRequest {
                tenant_id: "kultur".into(),
            },
            "x.y.z",
        ))
        .await
        .expect_err("bad token");
    assert_eq!(e.code(), Code::Unauthenticated);
    let expired = token(&["platform-admin"], &[], -120);
    let e = tenants
        .get_tenant(authed(
            pb::GetTenantRequest {
                tenant_id: "kultur".into(),
            },
            &expired,
        ))
        .await
        .expect_err("expired");
    assert_eq!(e.code(), Code::Unauthenticated);
    assert!(
        !e.message().contains(&expired[..16]),
        "the token is never echoed"
    );

    // Create, retry with the same request_id, read back.
    let mut create = create_request("kultur", "989 990 748");
    create.request_id = "create-kultur-1".into();
    let created = tenants
        .create_tenant(authed(create.clone(), &admin))
        .await
        .expect("create")
        .into_inner();
    assert_eq!(created.supervisory_authority, "Datatilsynet");
    assert_eq!(created.org_number, "989990748");
    let retried = tenants
        .create_tenant(authed(create, &admin))
        .await
        .expect("idempotent retry")
        .into_inner();
    assert_eq!(retried, created, "the retry gets the first answer");
    let got = tenants
        .get_tenant(authed(
            pb::GetTenantRequest {
                tenant_id: "kultur".into(),
            },
            &admin,
        ))
        .await
        .expect("get")
        .into_inner();
    assert_eq!(got, created);

    // Duplicate id without a request_id: ALREADY_EXISTS.
    let e = tenants
        .create_tenant(authed(create_request("kultur", "989990748"), &admin))
        .await
        .expect_err("duplicate");
    assert_eq!(e.code(), Code::AlreadyExists);

    // Wrong check digit: INVALID_ARGUMENT naming the field, nothing written.
    let e = tenants
        .create_tenant(authed(create_request("other-dept", "989990749"), &admin))
        .await
        .expect_err("bad org number");
    assert_eq!(e.code(), Code::InvalidArgument);
    let violations = e
        .get_details_bad_request()
        .expect("field violations")
        .field_violations;
    assert_eq!(violations[0].field, "org_number");
    let e = tenants
        .get_tenant(authed(
            pb::GetTenantRequest {
                tenant_id: "other-dept".into(),
            },
            &admin,
        ))
        .await
        .expect_err("not written");
    assert_eq!(e.code(), Code::NotFound);

    // A second tenant, and a tenant admin of the first.
    tenants
        .create_tenant(authed(create_request("okorad-bergen", "989990748"), &admin))
        .await
        .expect("second tenant");
    let kultur_admin = token(&["tenant-admin"], &["kultur"], 300);
    let e = tenants
        .get_tenant(authed(
            pb::GetTenantRequest {
                tenant_id: "okorad-bergen".into(),
            },
            &kultur_admin,
        ))
        .await
        .expect_err("other tenant is invisible");
    assert_eq!(e.code(), Code::NotFound);
    let listed = tenants
        .list_tenants(authed(pb::ListTenantsRequest::default(), &kultur_admin))
        .await
        .expect("list")
        .into_inner();
    assert_eq!(listed.tenants.len(), 1);
    let e = tenants
        .create_tenant(authed(create_request("sneaky", "989990748"), &kultur_admin))
        .await
        .expect_err("tenant admins do not create tenants");
    assert_eq!(e.code(), Code::PermissionDenied);

    // Purposes: the tenant admin defines them; the platform admin cannot.
    let purpose = pb::CreatePurposeRequest {
        key: "newsletter".into(),
        description: "Sende ut nyhetsbrev og invitasjoner til arrangementer".into(),
        legal_basis: LegalBasis::Consent as i32,
        data_categories: vec![DataCategory::Contact as i32, DataCategory::Behaviour as i32],
        direct_marketing: true,
        subject_categories: vec!["subscribers".into()],
        ..Default::default()
    };
    let e = tenants
        .create_purpose(authed(purpose.clone(), &admin))
        .await
        .expect_err("platform admin has no tenant data");
    assert_eq!(e.code(), Code::PermissionDenied);
    let created = tenants
        .create_purpose(authed(purpose, &kultur_admin))
        .await
        .expect("purpose")
        .into_inner();
    assert_eq!(created.tenant_id, "kultur");
    let bad = pb::CreatePurposeRequest {
        key: "analytics".into(),
        description: "Web analytics".into(),
        legal_basis: LegalBasis::LegitimateInterests as i32,
        data_categories: vec![DataCategory::Behaviour as i32],
        ..Default::default()
    };
    let e = tenants
        .create_purpose(authed(bad, &kultur_admin))
        .await
        .expect_err("needs interest");
    assert_eq!(e.code(), Code::InvalidArgument);
    assert_eq!(
        e.get_details_bad_request()
            .expect("details")
            .field_violations[0]
            .field,
        "legitimate_interest"
    );
    tenants
        .create_recipient(authed(
            pb::CreateRecipientRequest {
                name: "Mailchimp".into(),
                role: pb::RecipientRole::Processor as i32,
                purposes: vec!["newsletter".into()],
                country: "US".into(),
                transfer_safeguard: pb::TransferSafeguard::StandardContractualClauses as i32,
                ..Default::default()
            },
            &kultur_admin,
        ))
        .await
        .expect("recipient");
    let record = tenants
        .get_processing_record(authed(pb::GetProcessingRecordRequest {}, &kultur_admin))
        .await
        .expect("record")
        .into_inner();
    assert_eq!(
        record.controller.as_ref().map(|c| c.tenant_id.as_str()),
        Some("kultur")
    );
    assert_eq!(record.activities.len(), 1);
    assert_eq!(record.activities[0].recipients.len(), 1);
    assert_eq!(
        record.transfers.len(),
        1,
        "US processor is a third-country transfer"
    );

    // The other tenant's admin sees none of it.
    let bergen_admin = token(&["tenant-admin"], &["okorad-bergen"], 300);
    let e = tenants
        .get_purpose(authed(
            pb::GetPurposeRequest {
                key: "newsletter".into(),
            },
            &bergen_admin,
        ))
        .await
        .expect_err("isolated");
    assert_eq!(e.code(), Code::NotFound);

    // Auditors read audit only.
    let auditor = token(&["auditor"], &["kultur"], 300);
    let e = tenants
        .list_purposes(authed(pb::ListPurposesRequest::default(), &auditor))
        .await
        .expect_err("auditor");
    assert_eq!(e.code(), Code::PermissionDenied);

    // The retention service answers through the gateway, scoped to the caller's tenant.
    let mut retention =
        vern_proto::retention::v1::retention_service_client::RetentionServiceClient::new(
            suite.channel.clone(),
        );
    let policies = retention
        .list_policies(authed(
            vern_proto::retention::v1::ListPoliciesRequest::default(),
            &kultur_admin,
        ))
        .await
        .expect("list policies")
        .into_inner();
    assert!(policies.policies.is_empty());
}

#[tokio::test]
async fn recipients_lifecycle_on_sqlite() {
    let suite = Suite::start(Backend::Sqlite)
        .await
        .expect("sqlite always runs");
    recipients_lifecycle(&suite).await;
    suite.stop().await;
}

#[tokio::test]
async fn recipients_lifecycle_on_postgres() {
    let Some(suite) = Suite::start(Backend::Postgres).await else {
        return;
    };
    recipients_lifecycle(&suite).await;
    suite.stop().await;
}

/// A recipient with its data processing agreement (Art. 28(3)) is in the record of
/// processing (Art. 30(1)(d)) until it is ended; then it stays only in the history, and
/// cannot change.
async fn recipients_lifecycle(suite: &Suite) {
    vern_tests::create_tenant(&suite.channel, "kultur", "Oslo Kulturfabrikk").await;
    let admin = token(&["tenant-admin"], &["kultur"], 300);
    let mut tenants = TenantServiceClient::new(suite.channel.clone());
    tenants
        .create_purpose(authed(
            pb::CreatePurposeRequest {
                key: "newsletter".into(),
                description: "Nyhetsbrevet".into(),
                legal_basis: LegalBasis::Consent as i32,
                data_categories: vec![DataCategory::Contact as i32],
                request_id: "purpose-newsletter".into(),
                ..Default::default()
            },
            &admin,
        ))
        .await
        .expect("purpose");
    let signed = prost_types::Timestamp {
        seconds: 1_709_251_200, // 2024-03-01
        nanos: 0,
    };
    let created = tenants
        .create_recipient(authed(
            pb::CreateRecipientRequest {
                name: "Mailchimp".into(),
                role: pb::RecipientRole::Processor as i32,
                purposes: vec!["newsletter".into()],
                country: "US".into(),
                transfer_safeguard: pb::TransferSafeguard::StandardContractualClauses as i32,
                dpa_reference: "DPA-2024-17".into(),
                dpa_signed_date: Some(signed),
                request_id: "recipient-mailchimp".into(),
                ..Default::default()
            },
            &admin,
        ))
        .await
        .expect("recipient")
        .into_inner();
    assert_eq!(created.dpa_reference, "DPA-2024-17");
    assert_eq!(created.dpa_signed_date, Some(signed));
    assert!(created.end_time.is_none());
    assert!(created.update_time.is_some());
    let record = |tenants: &mut TenantServiceClient<tonic::transport::Channel>| {
        let mut t = tenants.clone();
        let admin = admin.clone();
        async move {
            t.get_processing_record(authed(pb::GetProcessingRecordRequest {}, &admin))
                .await
                .expect("record")
                .into_inner()
        }
    };
    let before = record(&mut tenants).await;
    assert_eq!(before.recipients.len(), 1);
    assert_eq!(before.recipients[0].name, "Mailchimp");
    assert_eq!(before.activities[0].recipients.len(), 1);
    assert_eq!(before.transfers.len(), 1);

    // Updating names its fields; a path that cannot be updated is INVALID_ARGUMENT.
    let update = |paths: &[&str], request_id: &str| pb::UpdateRecipientRequest {
        recipient: Some(pb::Recipient {
            recipient_id: created.recipient_id.clone(),
            name: "Intuit Mailchimp".into(),
            dpa_reference: "DPA-2025-02".into(),
            ..Default::default()
        }),
        update_mask: Some(prost_types::FieldMask {
            paths: paths.iter().map(|p| (*p).into()).collect(),
        }),
        request_id: request_id.into(),
    };
    let err = tenants
        .update_recipient(authed(update(&["role"], "upd-bad"), &admin))
        .await
        .expect_err("role cannot change");
    assert_eq!(err.code(), Code::InvalidArgument);
    assert_eq!(
        err.get_details_bad_request()
            .expect("details")
            .field_violations[0]
            .field,
        "update_mask.paths[0]"
    );
    let updated = tenants
        .update_recipient(authed(update(&["name", "dpa_reference"], "upd-1"), &admin))
        .await
        .expect("update")
        .into_inner();
    assert_eq!(updated.name, "Intuit Mailchimp");
    assert_eq!(updated.dpa_reference, "DPA-2025-02");
    assert_eq!(updated.country, "US", "not in the mask");
    assert_eq!(updated.dpa_signed_date, Some(signed), "not in the mask");

    // Ending: out of the record, in the history with its end.
    let end = pb::EndRecipientRequest {
        recipient_id: created.recipient_id.clone(),
        end_time: None,
        reason: "contract terminated".into(),
        request_id: "end-1".into(),
    };
    let ended = tenants
        .end_recipient(authed(end.clone(), &admin))
        .await
        .expect("end")
        .into_inner();
    assert!(ended.end_time.is_some());
    assert_eq!(ended.end_reason, "contract terminated");
    let retried = tenants
        .end_recipient(authed(end, &admin))
        .await
        .expect("retry")
        .into_inner();
    assert_eq!(retried, ended, "the first answer");
    let err = tenants
        .end_recipient(authed(
            pb::EndRecipientRequest {
                recipient_id: created.recipient_id.clone(),
                end_time: None,
                reason: "again".into(),
                request_id: "end-2".into(),
            },
            &admin,
        ))
        .await
        .expect_err("ended twice");
    assert_eq!(err.code(), Code::FailedPrecondition);
    let after = record(&mut tenants).await;
    assert!(after.recipients.is_empty(), "{:?}", after.recipients);
    assert!(after.activities[0].recipients.is_empty());
    assert!(after.transfers.is_empty());
    let list = |include_ended: bool| pb::ListRecipientsRequest {
        include_ended,
        ..Default::default()
    };
    let current = tenants
        .list_recipients(authed(list(false), &admin))
        .await
        .expect("list")
        .into_inner();
    assert!(current.recipients.is_empty());
    let history = tenants
        .list_recipients(authed(list(true), &admin))
        .await
        .expect("list")
        .into_inner();
    assert_eq!(history.recipients.len(), 1);
    assert_eq!(history.recipients[0].end_time, ended.end_time);

    // An ended recipient cannot change.
    let err = tenants
        .update_recipient(authed(update(&["name"], "upd-2"), &admin))
        .await
        .expect_err("ended");
    assert_eq!(err.code(), Code::FailedPrecondition);
    // An end in the future is refused, naming the field.
    let err = tenants
        .end_recipient(authed(
            pb::EndRecipientRequest {
                recipient_id: created.recipient_id.clone(),
                end_time: Some(vern_kit::time::to_timestamp(
                    vern_kit::time::now() + chrono::Duration::days(1),
                )),
                reason: "later".into(),
                request_id: "end-3".into(),
            },
            &admin,
        ))
        .await
        .expect_err("future");
    assert_eq!(err.code(), Code::InvalidArgument);
    assert_eq!(
        err.get_details_bad_request()
            .expect("details")
            .field_violations[0]
            .field,
        "end_time"
    );
}
