//! The gRPC handlers in process (no network): decoding, tenant scoping, page tokens,
//! status codes and the export stream.

use std::time::Duration;

use tokio_stream::StreamExt;
use tonic::Request;
use vern_audit::AuditApi;
use vern_audit::keys::{AuditSigner, CheckpointPolicy};
use vern_audit::service::AuditLog;
use vern_audit::store::AuditStore;
use vern_kit::auth::{Permission, Role};
use vern_kit::context::CallContext;
use vern_proto::audit::v1 as pb;
use vern_proto::audit::v1::audit_service_server::AuditService;

async fn api() -> (AuditApi, vern_kit::testing::TestDb) {
    let db = vern_kit::testing::TestDb::sqlite("audit");
    let store = AuditStore::open(&db.target).await.expect("open");
    let log = AuditLog::new(
        store,
        AuditSigner::from_seed([3; 32]),
        CheckpointPolicy {
            every_events: 4,
            every: Duration::from_secs(3600),
        },
    );
    (AuditApi::new(log), db)
}

fn req<T>(msg: T, tenant: &str, role: Role, permission: Permission) -> Request<T> {
    let mut r = Request::new(msg);
    r.extensions_mut()
        .insert(CallContext::for_tests(Some(tenant), &[role], permission));
    r
}

fn service<T>(msg: T, tenant: &str) -> Request<T> {
    req(msg, tenant, Role::Service, Permission::AuditAppend)
}

fn auditor<T>(msg: T, tenant: &str) -> Request<T> {
    req(msg, tenant, Role::Auditor, Permission::AuditRead)
}

fn event(i: i64) -> pb::AuditEvent {
    pb::AuditEvent {
        event_id: uuid::Uuid::new_v4().to_string(),
        actor: Some(pb::Actor {
            sub: "crm".into(),
            roles: vec!["integration".into()],
            client: "crm/1".into(),
        }),
        action: "CreateSubject".into(),
        service: "subjects".into(),
        subject_id: format!("s-{i}"),
        resource_type: "subject".into(),
        resource_id: format!("s-{i}"),
        outcome: pb::Outcome::Success as i32,
        changed_fields: vec!["email".into()],
        occur_time: Some(prost_types::Timestamp {
            seconds: 1_767_225_600 + i,
            nanos: 123_456_789,
        }),
        // Output-only fields are ignored on input.
        seq: 99,
        hash: vec![1; 32],
        ..Default::default()
    }
}

#[tokio::test]
async fn handlers_round_trip() {
    let (api, db) = api().await;
    let out = api
        .append_events(service(
            pb::AppendEventsRequest {
                events: (1..=6).map(event).collect(),
                request_id: "batch-1".into(),
            },
            "kultur",
        ))
        .await
        .expect("append")
        .into_inner();
    assert_eq!((out.appended_count, out.duplicate_count), (6, 0));
    assert_eq!(out.results[5].seq, 6);

    let got = api
        .get_event(auditor(
            pb::GetEventRequest {
                event_id: out.results[2].event_id.clone(),
            },
            "kultur",
        ))
        .await
        .expect("get")
        .into_inner();
    assert_eq!((got.seq, got.tenant_id.as_str()), (3, "kultur"));
    assert_eq!(got.occur_time.map(|t| t.nanos), Some(123_456_000));
    assert_eq!((got.prev_hash.len(), got.hash.len()), (32, 32));
    assert_eq!(got.outcome, pb::Outcome::Success as i32);
    let hidden = api
        .get_event(auditor(
            pb::GetEventRequest {
                event_id: out.results[2].event_id.clone(),
            },
            "sport",
        ))
        .await
        .expect_err("other tenant");
    assert_eq!(hidden.code(), tonic::Code::NotFound);

    // Paged query with tokens.
    let mut token = String::new();
    let mut seqs = vec![];
    loop {
        let page = api
            .query_events(auditor(
                pb::QueryEventsRequest {
                    page_size: 4,
                    page_token: token.clone(),
                    action: "CreateSubject".into(),
                    ..Default::default()
                },
                "kultur",
            ))
            .await
            .expect("query")
            .into_inner();
        seqs.extend(page.events.iter().map(|e| e.seq));
        if page.next_page_token.is_empty() {
            break;
        }
        token = page.next_page_token;
    }
    assert_eq!(seqs, [1, 2, 3, 4, 5, 6]);
    let bad = api
        .query_events(auditor(
            pb::QueryEventsRequest {
                page_token: "garbage".into(),
                ..Default::default()
            },
            "kultur",
        ))
        .await
        .expect_err("bad token");
    assert_eq!(bad.code(), tonic::Code::InvalidArgument);

    let v = api
        .verify_chain(auditor(pb::VerifyChainRequest::default(), "kultur"))
        .await
        .expect("verify")
        .into_inner();
    assert!(v.ok);
    assert_eq!((v.checked, v.to_seq, v.first_bad_seq), (6, 6, 0));
    assert_eq!(v.checkpoint.map(|c| c.seq), Some(6));

    let cp = api
        .get_checkpoint(auditor(pb::GetCheckpointRequest { seq: 0 }, "kultur"))
        .await
        .expect("checkpoint")
        .into_inner();
    assert_eq!((cp.seq, cp.signature.len(), cp.key_id.len()), (6, 64, 16));
    assert_eq!(cp.key_id, api.log().signer().key_id());
    let list = api
        .list_checkpoints(auditor(pb::ListCheckpointsRequest::default(), "kultur"))
        .await
        .expect("list")
        .into_inner();
    assert_eq!(list.checkpoints.len(), 1);

    let stream = api
        .export_events(auditor(pb::ExportEventsRequest::default(), "kultur"))
        .await
        .expect("export")
        .into_inner();
    let items: Vec<_> = stream.collect::<Result<Vec<_>, _>>().await.expect("items");
    assert_eq!(items.len(), 7);
    assert!(matches!(
        items.last().and_then(|i| i.item.as_ref()),
        Some(pb::export_events_response::Item::Checkpoint(c)) if c.seq == 6
    ));
    db.cleanup().await;
}

#[tokio::test]
async fn bad_input_is_invalid_argument() {
    let (api, db) = api().await;
    let mut foreign = event(1);
    foreign.tenant_id = "sport".into();
    let mut no_time = event(2);
    no_time.occur_time = None;
    let e = api
        .append_events(service(
            pb::AppendEventsRequest {
                events: vec![event(0), foreign, no_time],
                request_id: String::new(),
            },
            "kultur",
        ))
        .await
        .expect_err("invalid");
    assert_eq!(e.code(), tonic::Code::InvalidArgument);
    assert!(e.message().contains("events[1].tenant_id"));
    assert!(e.message().contains("events[2].occur_time"));
    let e = api
        .append_events(service(
            pb::AppendEventsRequest {
                events: vec![event(0)],
                request_id: "has space".into(),
            },
            "kultur",
        ))
        .await
        .expect_err("invalid");
    assert_eq!(e.code(), tonic::Code::InvalidArgument);
    // Nothing was written.
    let v = api
        .verify_chain(auditor(pb::VerifyChainRequest::default(), "kultur"))
        .await
        .expect("verify")
        .into_inner();
    assert_eq!(v.checked, 0);
    let e = api
        .get_checkpoint(auditor(pb::GetCheckpointRequest { seq: 0 }, "kultur"))
        .await
        .expect_err("none");
    assert_eq!(e.code(), tonic::Code::NotFound);
    let e = api
        .export_events(auditor(
            pb::ExportEventsRequest {
                to_seq: 3,
                follow: true,
                ..Default::default()
            },
            "kultur",
        ))
        .await
        .err()
        .expect("follow with to_seq");
    assert_eq!(e.code(), tonic::Code::InvalidArgument);
    // Without the auth layer's context nothing is answered.
    let e = api
        .verify_chain(Request::new(pb::VerifyChainRequest::default()))
        .await
        .expect_err("no caller");
    assert_eq!(e.code(), tonic::Code::Unauthenticated);
    db.cleanup().await;
}
