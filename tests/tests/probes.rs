//! The probes of issue 15, as an attacker runs them: a real tonic client through the
//! gateway with hand-made tokens. Each failed before its fix.

use std::time::{Duration, Instant};

use tonic::Code;
use tonic_types::StatusExt;
use vern_kit::auth::{Claims, sign_hs256};
use vern_kit::context::TENANT_HEADER;
use vern_proto::audit::v1 as apb;
use vern_proto::consents::v1 as cpb;
use vern_proto::subjects::v1 as spb;
use vern_proto::tenants::v1 as tpb;
use vern_tests::{Backend, Suite, authed, create_tenant, raw_call, token};

const SECRET: &[u8] = b"e2e-test-secret";

fn now() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs() as i64)
        .unwrap_or_default()
}

/// A token with any claims, signed with the suite's key.
fn forged(sub: &str, roles: &[&str], tenants: &[&str], exp: i64) -> String {
    sign_hs256(
        &Claims {
            sub: sub.into(),
            tenant: tenants.iter().map(|s| s.to_string()).collect(),
            roles: roles.iter().map(|s| s.to_string()).collect(),
            iss: "vern-dev".into(),
            aud: "vern".into(),
            exp,
            nbf: now() - 1,
            iat: now() - 1,
        },
        SECRET,
    )
    .expect("sign")
}

/// A token from raw JSON claims (e.g. `aud` as an array).
fn forged_json(claims: serde_json::Value) -> String {
    jsonwebtoken::encode(
        &jsonwebtoken::Header::new(jsonwebtoken::Algorithm::HS256),
        &claims,
        &jsonwebtoken::EncodingKey::from_secret(SECRET),
    )
    .expect("sign")
}

fn tenants(
    suite: &Suite,
) -> tpb::tenant_service_client::TenantServiceClient<tonic::transport::Channel> {
    tpb::tenant_service_client::TenantServiceClient::new(suite.channel.clone())
}

fn with_tenant<T>(msg: T, token: &str, tenant: &str) -> tonic::Request<T> {
    let mut r = authed(msg, token);
    r.metadata_mut()
        .insert(TENANT_HEADER, tenant.parse().expect("metadata"));
    r
}

/// The tenant's audit events of `action`, waiting up to `wait` for at least one.
async fn audit_events(
    suite: &Suite,
    tenant: &str,
    action: &str,
    wait: Duration,
) -> Vec<apb::AuditEvent> {
    let auditor = token(&["auditor"], &[tenant], 600);
    let mut audit = apb::audit_service_client::AuditServiceClient::new(suite.channel.clone());
    let deadline = Instant::now() + wait;
    loop {
        let events = audit
            .query_events(authed(
                apb::QueryEventsRequest {
                    action: action.into(),
                    page_size: 100,
                    ..Default::default()
                },
                &auditor,
            ))
            .await
            .expect("query")
            .into_inner()
            .events;
        if !events.is_empty() || Instant::now() >= deadline {
            return events;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

async fn audit_actions(suite: &Suite, tenant: &str, action: &str) -> Vec<apb::AuditEvent> {
    audit_events(suite, tenant, action, Duration::from_secs(10)).await
}

/// Defect 1: a tenant admin never acts platform-wide; a platform change is audited in
/// the chain of the tenant it changes.
#[tokio::test]
async fn a_tenant_admin_cannot_read_or_rewrite_other_departments() {
    let suite = Suite::start(Backend::Sqlite).await.expect("suite");
    for (id, name) in [("dept-a", "A"), ("dept-b", "B"), ("dept-c", "C")] {
        create_tenant(&suite.channel, id, name).await;
    }
    let update_c = |t: &str| {
        authed(
            tpb::UpdateTenantRequest {
                tenant: Some(tpb::Tenant {
                    tenant_id: "dept-c".into(),
                    name: "Taken over".into(),
                    dpo_email: "attacker@evil.example".into(),
                    ..Default::default()
                }),
                update_mask: Some(prost_types::FieldMask {
                    paths: vec!["name".into(), "dpo_email".into()],
                }),
                request_id: String::new(),
            },
            t,
        )
    };
    for named in [&["dept-a", "dept-b"][..], &[][..]] {
        let t = token(&["tenant-admin"], named, 600);
        let e = tenants(&suite)
            .update_tenant(update_c(&t))
            .await
            .expect_err("denied");
        assert_eq!(
            e.code(),
            Code::PermissionDenied,
            "UpdateTenant naming {named:?}"
        );
        let e = tenants(&suite)
            .list_tenants(authed(tpb::ListTenantsRequest::default(), &t))
            .await
            .expect_err("denied");
        assert_eq!(
            e.code(),
            Code::PermissionDenied,
            "ListTenants naming {named:?}"
        );
        let e = tenants(&suite)
            .get_tenant(authed(
                tpb::GetTenantRequest {
                    tenant_id: "dept-c".into(),
                },
                &t,
            ))
            .await
            .expect_err("denied");
        assert_eq!(
            e.code(),
            Code::PermissionDenied,
            "GetTenant naming {named:?}"
        );
    }
    // Selecting one of its tenants, it sees that one only.
    let two = token(&["tenant-admin"], &["dept-a", "dept-b"], 600);
    let listed = tenants(&suite)
        .list_tenants(with_tenant(
            tpb::ListTenantsRequest::default(),
            &two,
            "dept-a",
        ))
        .await
        .expect("list")
        .into_inner()
        .tenants;
    assert_eq!(
        listed
            .iter()
            .map(|t| t.tenant_id.as_str())
            .collect::<Vec<_>>(),
        ["dept-a"]
    );
    let mut r = update_c(&two);
    r.metadata_mut()
        .insert(TENANT_HEADER, "dept-a".parse().expect("metadata"));
    assert_eq!(
        tenants(&suite)
            .update_tenant(r)
            .await
            .expect_err("not its tenant")
            .code(),
        Code::NotFound
    );
    let c = tenants(&suite)
        .get_tenant(authed(
            tpb::GetTenantRequest {
                tenant_id: "dept-c".into(),
            },
            &token(&["platform-admin"], &[], 600),
        ))
        .await
        .expect("get")
        .into_inner();
    assert_eq!(c.name, "C", "dept-c unchanged");

    // A platform admin's change lands in the changed tenant's chain, even when its
    // token names another tenant.
    let platform = token(&["platform-admin"], &["dept-a"], 600);
    let mut r = update_c(&platform);
    r.get_mut().tenant.as_mut().expect("tenant").dpo_email = "personvern@dept-c.example".into();
    r.get_mut().request_id = "rename-c".into();
    tenants(&suite)
        .update_tenant(r)
        .await
        .expect("platform update");
    let events = audit_actions(&suite, "dept-c", "UpdateTenant").await;
    assert_eq!(events.len(), 1, "audited in dept-c's chain");
    assert_eq!(events[0].resource_id, "dept-c");
    // dept-a's chain holds only its admin's refused attempt, no success.
    let in_a = audit_actions(&suite, "dept-a", "UpdateTenant").await;
    assert!(
        in_a.iter()
            .all(|e| e.outcome != apb::Outcome::Success as i32),
        "not in the caller's tenant's chain: {in_a:?}"
    );
    suite.stop().await;
}

/// Defects 2 and 4: claims are validated at the edge with the audit service's limits;
/// tenants must exist and be active.
#[tokio::test]
async fn malformed_unknown_and_suspended_tenants_and_long_subs_are_refused() {
    let suite = Suite::start(Backend::Sqlite).await.expect("suite");
    create_tenant(&suite.channel, "tena", "Avdeling A").await;
    let list = "/vern.subjects.v1.SubjectService/ListSubjects";
    let create = "/vern.subjects.v1.SubjectService/CreateSubject";
    let call = |t: String, path: &'static str| {
        let ch = suite.channel.clone();
        async move {
            raw_call(
                &ch,
                path,
                false,
                &[("authorization", format!("Bearer {t}"))],
            )
            .await
        }
    };
    let long = "t".repeat(300);
    for bad in ["TENA", "tena ", "", "../tena", long.as_str()] {
        let t = forged("crm", &["integration"], &[bad], now() + 600);
        assert_eq!(
            call(t.clone(), list).await,
            Code::Unauthenticated,
            "{bad:?}"
        );
        assert_eq!(call(t, create).await, Code::Unauthenticated, "{bad:?}");
    }
    let ghost = forged("crm", &["integration"], &["ghost-tenant"], now() + 600);
    assert_eq!(call(ghost.clone(), list).await, Code::PermissionDenied);
    assert_eq!(call(ghost, create).await, Code::PermissionDenied);
    // A sub the audit trail would refuse never gets in.
    let long_sub = forged(&"x".repeat(300), &["integration"], &["tena"], now() + 600);
    assert_eq!(call(long_sub, create).await, Code::Unauthenticated);
    let multi_line = forged("crm\nadmin", &["integration"], &["tena"], now() + 600);
    assert_eq!(call(multi_line, create).await, Code::Unauthenticated);
    // The longest accepted sub works, and its events reach the chain.
    let sub = "s".repeat(256);
    let crm = forged(&sub, &["integration"], &["tena"], now() + 600);
    let created = spb::subject_service_client::SubjectServiceClient::new(suite.channel.clone())
        .create_subject(authed(
            spb::CreateSubjectRequest {
                email: "kari@example.no".into(),
                request_id: "probe-1".into(),
                ..Default::default()
            },
            &crm,
        ))
        .await
        .expect("created")
        .into_inner();
    let events = audit_actions(&suite, "tena", "CreateSubject").await;
    assert_eq!(events.len(), 1);
    assert_eq!(events[0].subject_id, created.subject_id);
    assert_eq!(events[0].actor.as_ref().expect("actor").sub, sub);

    // Suspended: refused within the status TTL (5 s), for every tenant role.
    tenants(&suite)
        .suspend_tenant(authed(
            tpb::SuspendTenantRequest {
                tenant_id: "tena".into(),
                reason: "unpaid invoice".into(),
                request_id: "suspend-tena".into(),
            },
            &token(&["platform-admin"], &[], 600),
        ))
        .await
        .expect("suspend");
    let deadline = Instant::now() + Duration::from_secs(10);
    let crm = token(&["integration"], &["tena"], 600);
    loop {
        let code = call(crm.clone(), list).await;
        if code == Code::PermissionDenied {
            break;
        }
        assert!(Instant::now() < deadline, "still {code:?} after 10 s");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let admin = token(&["tenant-admin"], &["tena"], 600);
    assert_eq!(
        call(admin, "/vern.tenants.v1.TenantService/UpdateTenant").await,
        Code::PermissionDenied
    );
    // Even the platform cannot edit a suspended controller's record.
    let e = tenants(&suite)
        .update_tenant(authed(
            tpb::UpdateTenantRequest {
                tenant: Some(tpb::Tenant {
                    tenant_id: "tena".into(),
                    name: "Renamed".into(),
                    ..Default::default()
                }),
                update_mask: Some(prost_types::FieldMask {
                    paths: vec!["name".into()],
                }),
                request_id: String::new(),
            },
            &token(&["platform-admin"], &[], 600),
        ))
        .await
        .expect_err("suspended");
    assert_eq!(e.code(), Code::FailedPrecondition);
    suite.stop().await;
}

/// Defect 5: the service role never passes the gateway (forged audit events, purpose
/// rules, subject states).
#[tokio::test]
async fn the_service_role_is_refused_through_the_gateway() {
    let suite = Suite::start(Backend::Sqlite).await.expect("suite");
    create_tenant(&suite.channel, "tena", "Avdeling A").await;
    let service = token(&["service"], &["tena"], 600);
    let hidden = token(&["integration", "service"], &["tena"], 600);
    for t in [&service, &hidden] {
        let e = apb::audit_service_client::AuditServiceClient::new(suite.channel.clone())
            .append_events(authed(
                apb::AppendEventsRequest {
                    events: vec![apb::AuditEvent {
                        event_id: uuid::Uuid::new_v4().to_string(),
                        actor: Some(apb::Actor {
                            sub: "the-ceo".into(),
                            ..Default::default()
                        }),
                        action: "EraseSubject".into(),
                        service: "subjects".into(),
                        outcome: apb::Outcome::Success as i32,
                        occur_time: Some(prost_types::Timestamp {
                            seconds: 1_000_000_000,
                            nanos: 0,
                        }),
                        ..Default::default()
                    }],
                    request_id: String::new(),
                },
                t,
            ))
            .await
            .expect_err("forged audit event");
        assert_eq!(e.code(), Code::PermissionDenied);
        let mut consents =
            cpb::consent_service_client::ConsentServiceClient::new(suite.channel.clone());
        let e = consents
            .apply_purposes(authed(
                cpb::ApplyPurposesRequest {
                    purposes: vec![cpb::PurposeDefinition {
                        key: "newsletter".into(),
                        legal_basis: vern_proto::common::v1::LegalBasis::Contract as i32,
                        ..Default::default()
                    }],
                    request_id: String::new(),
                },
                t,
            ))
            .await
            .expect_err("purpose rule");
        assert_eq!(e.code(), Code::PermissionDenied);
        let e = consents
            .apply_subject_states(authed(
                cpb::ApplySubjectStatesRequest {
                    changes: vec![cpb::SubjectStateChange {
                        subject_id: uuid::Uuid::new_v4().to_string(),
                        state: cpb::SubjectState::Erased as i32,
                        version: 99,
                        ..Default::default()
                    }],
                    request_id: String::new(),
                },
                t,
            ))
            .await
            .expect_err("subject state");
        assert_eq!(e.code(), Code::PermissionDenied);
    }
    // Nothing was appended.
    assert!(
        audit_events(&suite, "tena", "EraseSubject", Duration::ZERO)
            .await
            .is_empty()
    );
    suite.stop().await;
}

/// Hardening: token lifetime, `aud` arrays, a repeated tenant, bodies naming another
/// tenant, holds on subjects the tenant does not hold, reflection settings.
#[tokio::test]
async fn tokens_bodies_and_holds_are_checked_as_a_mature_product_would() {
    let suite = Suite::start(Backend::Sqlite).await.expect("suite");
    create_tenant(&suite.channel, "tena", "Avdeling A").await;
    create_tenant(&suite.channel, "tenb", "Avdeling B").await;
    let list = "/vern.tenants.v1.TenantService/ListPurposes";
    let call = |t: String| {
        let ch = suite.channel.clone();
        async move {
            raw_call(
                &ch,
                list,
                false,
                &[("authorization", format!("Bearer {t}"))],
            )
            .await
        }
    };
    // exp in year 9999: refused; 23 h: fine.
    assert_eq!(
        call(forged("crm", &["integration"], &["tena"], 253_402_300_799)).await,
        Code::Unauthenticated
    );
    assert_eq!(
        call(forged(
            "crm",
            &["integration"],
            &["tena"],
            now() + 23 * 3600
        ))
        .await,
        Code::Ok
    );
    // aud as an array holding vern's audience (RFC 7519); one without it is refused.
    let claims = |aud: serde_json::Value, tenant: serde_json::Value| {
        serde_json::json!({
            "sub": "crm", "tenant": tenant, "roles": ["integration"],
            "iss": "vern-dev", "aud": aud, "exp": now() + 600, "iat": now(), "nbf": now() - 1
        })
    };
    assert_eq!(
        call(forged_json(claims(
            serde_json::json!(["other", "vern"]),
            serde_json::json!("tena")
        )))
        .await,
        Code::Ok
    );
    assert_eq!(
        call(forged_json(claims(
            serde_json::json!(["other"]),
            serde_json::json!("tena")
        )))
        .await,
        Code::Unauthenticated
    );
    // A tenant named twice is one tenant (no x-vern-tenant needed).
    assert_eq!(
        call(forged_json(claims(
            serde_json::json!("vern"),
            serde_json::json!(["tena", "tena"])
        )))
        .await,
        Code::Ok
    );

    // UpdatePurpose with another tenant in the body is refused, not applied to ours.
    let admin = token(&["tenant-admin"], &["tena"], 600);
    let mut t = tenants(&suite);
    t.create_purpose(authed(
        tpb::CreatePurposeRequest {
            key: "newsletter".into(),
            description: "Nyhetsbrev".into(),
            legal_basis: vern_proto::common::v1::LegalBasis::Consent as i32,
            data_categories: vec![vern_proto::common::v1::DataCategory::Contact as i32],
            direct_marketing: true,
            request_id: "p1".into(),
            ..Default::default()
        },
        &admin,
    ))
    .await
    .expect("purpose");
    let e = t
        .update_purpose(authed(
            tpb::UpdatePurposeRequest {
                purpose: Some(tpb::Purpose {
                    tenant_id: "tenb".into(),
                    key: "newsletter".into(),
                    description: "Hijacked".into(),
                    ..Default::default()
                }),
                update_mask: Some(prost_types::FieldMask {
                    paths: vec!["description".into()],
                }),
                request_id: String::new(),
            },
            &admin,
        ))
        .await
        .expect_err("another tenant in the body");
    assert_eq!(e.code(), Code::InvalidArgument);
    assert_eq!(
        e.get_details_bad_request()
            .expect("details")
            .field_violations[0]
            .field,
        "purpose.tenant_id"
    );

    // PlaceHold on a subject of another department is NOT_FOUND.
    let crm_b = token(&["integration"], &["tenb"], 600);
    let theirs = spb::subject_service_client::SubjectServiceClient::new(suite.channel.clone())
        .create_subject(authed(
            spb::CreateSubjectRequest {
                email: "ola@example.no".into(),
                request_id: "b-1".into(),
                ..Default::default()
            },
            &crm_b,
        ))
        .await
        .expect("subject of tenb")
        .into_inner();
    let officer = token(&["privacy-officer"], &["tena"], 600);
    let e = vern_proto::retention::v1::retention_service_client::RetentionServiceClient::new(
        suite.channel.clone(),
    )
    .place_hold(authed(
        vern_proto::retention::v1::PlaceHoldRequest {
            scope: vern_proto::retention::v1::HoldScope::Subject as i32,
            subject_id: theirs.subject_id.clone(),
            reason: "case 2026/19".into(),
            ..Default::default()
        },
        &officer,
    ))
    .await
    .expect_err("not a subject of tena");
    assert_eq!(e.code(), Code::NotFound);
    suite.stop().await;
}

/// Reflection: open in `vern dev` (the harness), authenticated or off when configured.
#[tokio::test]
async fn reflection_is_open_authenticated_or_off_as_configured() {
    use vern_kit::config::ReflectionMode;
    let path = "/grpc.reflection.v1.ServerReflection/ServerReflectionInfo";
    for (mode, without, with) in [
        (ReflectionMode::Open, true, true),
        (ReflectionMode::Authenticated, false, true),
        (ReflectionMode::Off, false, false),
    ] {
        let suite = Suite::start_with(Backend::Sqlite, |c| c.server.reflection = mode)
            .await
            .expect("suite");
        let t = token(&["auditor"], &[], 600);
        let anon = reflect(&suite, None).await;
        let authd = reflect(&suite, Some(&t)).await;
        assert_eq!(anon.is_ok(), without, "{mode:?} without a token: {anon:?}");
        assert_eq!(authd.is_ok(), with, "{mode:?} with a token: {authd:?}");
        if mode == ReflectionMode::Authenticated {
            assert_eq!(anon.expect_err("refused"), Code::Unauthenticated);
        }
        if mode == ReflectionMode::Off {
            assert_eq!(authd.expect_err("off"), Code::Unimplemented);
        }
        let _ = path;
        suite.stop().await;
    }
}

async fn reflect(suite: &Suite, token: Option<&str>) -> Result<usize, Code> {
    use tonic_reflection::pb::v1 as rpb;
    let mut client =
        rpb::server_reflection_client::ServerReflectionClient::new(suite.channel.clone());
    let mut req = tonic::Request::new(tokio_stream::iter(vec![rpb::ServerReflectionRequest {
        host: String::new(),
        message_request: Some(
            rpb::server_reflection_request::MessageRequest::ListServices(String::new()),
        ),
    }]));
    if let Some(t) = token {
        req.metadata_mut().insert(
            "authorization",
            format!("Bearer {t}").parse().expect("metadata"),
        );
    }
    let mut stream = client
        .server_reflection_info(req)
        .await
        .map_err(|s| s.code())?
        .into_inner();
    match stream.message().await {
        Ok(Some(r)) => match r.message_response {
            Some(rpb::server_reflection_response::MessageResponse::ListServicesResponse(l)) => {
                Ok(l.service.len())
            }
            _ => Err(Code::Unknown),
        },
        Ok(None) => Err(Code::Unknown),
        Err(s) => Err(s.code()),
    }
}
