//! The audit chain through its use cases, on SQLite and on PostgreSQL: appends and
//! idempotency, gap-free per-tenant seqs, tenant isolation, verification, checkpoints,
//! tampering found at the right seq (in the service and offline), exports.

use std::time::Duration;

use sea_orm::{ActiveValue::Set, ColumnTrait, ConnectionTrait, EntityTrait, QueryFilter};
use vern_audit::chain::{self, FailureKind, KeySet};
use vern_audit::domain::{EventFilter, EventInput, ExportItem, Outcome};
use vern_audit::error::AuditError;
use vern_audit::export::{CheckpointLine, EventLine, verify_export};
use vern_audit::keys::{AuditSigner, CheckpointPolicy};
use vern_audit::service::AuditLog;
use vern_audit::store::AuditStore;
use vern_audit::store::entities::{audit_event, chain_head};
use vern_kit::ApiError;
use vern_kit::context::TenantId;
use vern_kit::db::DbTarget;

vern_kit::store_test_suite!("audit":
    append_is_idempotent_by_event_id,
    seqs_are_gap_free_per_tenant,
    tenants_are_isolated,
    intact_chain_verifies_against_checkpoints,
    modified_event_is_found,
    deleted_event_is_found,
    reordered_pair_is_found,
    inserted_event_is_found,
    truncated_tail_is_found_against_a_checkpoint,
    forged_checkpoint_is_refused,
    offline_verification_finds_an_edited_export,
    export_interleaves_checkpoints_and_follows,
    query_filters_and_pages,
    two_replicas_do_not_fork_the_chain,
    periodic_checkpoint_covers_new_events,
    bad_batches_write_nothing,
    checkpoints_across_a_key_rotation_verify_with_the_retired_key,
    a_signing_key_replaced_in_its_file_signs_from_then_on_and_the_chain_verifies,
);

const SEED: [u8; 32] = [42; 32];

async fn log_with(target: &DbTarget, every_events: i64) -> AuditLog {
    let store = AuditStore::open(target).await.expect("open store");
    AuditLog::new(
        store,
        AuditSigner::from_seed(SEED),
        CheckpointPolicy {
            every_events,
            every: Duration::from_secs(3600),
        },
    )
}

async fn log(target: &DbTarget) -> AuditLog {
    log_with(target, 10).await
}

fn tenant(t: &str) -> TenantId {
    TenantId::new(t)
}

fn ev(i: usize) -> EventInput {
    EventInput {
        event_id: uuid::Uuid::new_v4().to_string(),
        actor_sub: format!("user-{}", i % 3),
        actor_roles: vec!["privacy-officer".into()],
        actor_client: "vern-cli".into(),
        action: if i.is_multiple_of(2) {
            "GetSubject"
        } else {
            "UpdateSubject"
        }
        .into(),
        service: "subjects".into(),
        subject_id: format!("subject-{}", i % 4),
        resource_type: "subject".into(),
        resource_id: format!("subject-{}", i % 4),
        outcome: Some(if i % 5 == 4 {
            Outcome::Denied
        } else {
            Outcome::Success
        }),
        status_code: if i % 5 == 4 { 7 } else { 0 },
        changed_fields: if i % 2 == 1 {
            vec!["email".into()]
        } else {
            vec![]
        },
        request_id: format!("req-{i}"),
        trace_id: "4bf92f3577b34da6a3ce929d0e0e4736".into(),
        occur_time: chrono::DateTime::from_timestamp(1_767_225_600 + i as i64 * 60, 0),
        ..Default::default()
    }
}

fn batch(range: std::ops::Range<usize>) -> Vec<EventInput> {
    range.map(ev).collect()
}

/// Appends `n` events to `t` in batches of `per`.
async fn fill(log: &AuditLog, t: &str, n: usize, per: usize) {
    let mut i = 0;
    while i < n {
        let end = (i + per).min(n);
        log.append(&tenant(t), batch(i..end)).await.expect("append");
        i = end;
    }
}

/// The checkpoints of kultur's chain as (seq, key id), in seq order.
async fn signed_checkpoints(log: &AuditLog) -> Vec<(i64, String)> {
    let cps = log
        .list_checkpoints(&tenant("kultur"), None, 100)
        .await
        .expect("checkpoints");
    let mut signed: Vec<(i64, String)> = cps
        .items
        .iter()
        .map(|c| (c.seq, c.key_id.clone()))
        .collect();
    signed.sort();
    signed
}

async fn verify(log: &AuditLog, t: &str) -> (i64, Option<FailureKind>) {
    let v = log.verify(&tenant(t), 0, 0).await.expect("verify");
    (v.first_bad_seq(), v.kind())
}

async fn sql(log: &AuditLog, statement: &str) {
    log.store()
        .connection()
        .execute_unprepared(statement)
        .await
        .expect(statement);
}

async fn export_all(log: &AuditLog, t: &str, from: i64, to: i64) -> Vec<ExportItem> {
    let mut rx = log.export(tenant(t), from, to, false).expect("export");
    let mut out = vec![];
    while let Some(item) = rx.recv().await {
        out.push(item.expect("item"));
    }
    out
}

fn to_lines(items: &[ExportItem]) -> Vec<String> {
    items
        .iter()
        .map(|i| match i {
            ExportItem::Event(e) => serde_json::to_string(&EventLine::from_pb(
                &vern_audit::api::event_pb((**e).clone()),
            ))
            .expect("json"),
            ExportItem::Checkpoint(c) => {
                serde_json::to_string(&CheckpointLine::from_checkpoint(c)).expect("json")
            }
        })
        .collect()
}

async fn append_is_idempotent_by_event_id(target: DbTarget) {
    let log = log(&target).await;
    let t = tenant("kultur");
    let events = batch(0..3);
    let out = log.append(&t, events.clone()).await.expect("append");
    assert_eq!((out.appended, out.duplicates), (3, 0));
    let seqs: Vec<_> = out.results.iter().map(|r| r.seq).collect();
    assert_eq!(seqs, [1, 2, 3]);
    // A redelivered batch with one new event, and the new one twice.
    let mut again = vec![events[1].clone(), events[2].clone(), ev(3)];
    again.push(again[2].clone());
    let out = log.append(&t, again).await.expect("append");
    assert_eq!((out.appended, out.duplicates), (1, 3));
    let got: Vec<_> = out.results.iter().map(|r| (r.seq, r.duplicate)).collect();
    assert_eq!(got, [(2, true), (3, true), (4, false), (4, true)]);
    // Upper-case ids are the same ids.
    let mut upper = events[0].clone();
    upper.event_id = upper.event_id.to_uppercase();
    // After a restart (a new store on the same database).
    drop(log);
    let log = log_with(&target, 10).await;
    let out = log.append(&t, vec![upper]).await.expect("append");
    assert_eq!(out.results[0].seq, 1);
    assert!(out.results[0].duplicate);
    assert_eq!(log.store().head("kultur").await.expect("head").seq, 4);
    assert_eq!(verify(&log, "kultur").await, (0, None));
}

async fn seqs_are_gap_free_per_tenant(target: DbTarget) {
    let log = log(&target).await;
    fill(&log, "a-dept", 5, 2).await;
    fill(&log, "b-dept", 3, 3).await;
    let out = log
        .append(&tenant("a-dept"), batch(10..12))
        .await
        .expect("append");
    assert_eq!(
        out.results.iter().map(|r| r.seq).collect::<Vec<_>>(),
        [6, 7]
    );
    for (t, n) in [("a-dept", 7), ("b-dept", 3)] {
        let items = export_all(&log, t, 0, 0).await;
        let seqs: Vec<i64> = items
            .iter()
            .filter_map(|i| match i {
                ExportItem::Event(e) => Some(e.chained.event.seq),
                ExportItem::Checkpoint(_) => None,
            })
            .collect();
        assert_eq!(seqs, (1..=n).collect::<Vec<_>>(), "{t}");
        assert_eq!(verify(&log, t).await, (0, None));
    }
}

async fn tenants_are_isolated(target: DbTarget) {
    let log = log(&target).await;
    fill(&log, "a-dept", 12, 12).await;
    fill(&log, "b-dept", 4, 4).await;
    let (a, b) = (tenant("a-dept"), tenant("b-dept"));
    // The same event id in another tenant is another event.
    let a_first = log
        .query(&a, &EventFilter::default(), 0, 1)
        .await
        .expect("query")
        .items
        .remove(0);
    let id = a_first.chained.event.event_id.clone();
    let e = log.get_event(&b, &id).await.expect_err("hidden");
    assert!(matches!(e, AuditError::EventNotFound));
    assert_eq!(
        log.get_event(&a, &id).await.expect("own").chained.event.seq,
        1
    );
    let page = log
        .query(&b, &EventFilter::default(), 0, 100)
        .await
        .expect("query");
    assert_eq!(page.items.len(), 4);
    assert!(
        page.items
            .iter()
            .all(|e| e.chained.event.tenant_id == "b-dept")
    );
    let v = log.verify(&b, 0, 0).await.expect("verify");
    assert!(v.ok());
    assert_eq!(v.checked, 4);
    assert!(v.checkpoint.is_none(), "a's checkpoint is not b's");
    let items = export_all(&log, "b-dept", 0, 0).await;
    assert_eq!(items.len(), 4);
    assert!(
        items
            .iter()
            .all(|i| matches!(i, ExportItem::Event(e) if e.chained.event.tenant_id == "b-dept"))
    );
    assert!(matches!(
        log.checkpoint(&b, 0).await,
        Err(AuditError::CheckpointNotFound)
    ));
    assert_eq!(log.checkpoint(&a, 0).await.expect("a's").seq, 12);
    // Tampering with a's chain does not touch b's.
    sql(
        &log,
        "UPDATE audit_events SET action = 'x' WHERE tenant_id = 'a-dept' AND seq = 3",
    )
    .await;
    assert_eq!(verify(&log, "a-dept").await.0, 3);
    assert_eq!(verify(&log, "b-dept").await, (0, None));
}

async fn intact_chain_verifies_against_checkpoints(target: DbTarget) {
    let log = log(&target).await;
    fill(&log, "kultur", 25, 5).await;
    let t = tenant("kultur");
    let v = log.verify(&t, 0, 0).await.expect("verify");
    assert!(v.ok(), "{:?}", v.failure);
    assert_eq!((v.checked, v.to_seq), (25, 25));
    assert_eq!(v.checkpoint.as_ref().map(|c| c.seq), Some(20));
    assert_eq!(
        v.head_hash,
        log.store().head("kultur").await.expect("head").hash
    );
    // Checkpoints every 10 events, signed with the service's key.
    let list = log.list_checkpoints(&t, None, 10).await.expect("list");
    assert_eq!(
        list.items.iter().map(|c| c.seq).collect::<Vec<_>>(),
        [20, 10]
    );
    let key = log.signer().verifying_key();
    assert!(list.items.iter().all(|c| c.verify(&key)));
    assert_eq!(log.checkpoint(&t, 0).await.expect("latest").seq, 20);
    assert_eq!(log.checkpoint(&t, 10).await.expect("at 10").seq, 10);
    assert!(matches!(
        log.checkpoint(&t, 11).await,
        Err(AuditError::CheckpointNotFound)
    ));
    let page = log.list_checkpoints(&t, Some(20), 10).await.expect("list");
    assert_eq!(page.items.len(), 1);
    // A sub-range.
    let v = log.verify(&t, 5, 12).await.expect("verify");
    assert!(v.ok());
    assert_eq!((v.checked, v.to_seq), (8, 12));
    assert_eq!(v.checkpoint.map(|c| c.seq), Some(10));
    // Bad ranges.
    for (from, to) in [(-1, 0), (5, 3), (26, 0)] {
        let e = log.verify(&t, from, to).await.expect_err("invalid");
        assert_eq!(ApiError::from(e).code(), tonic::Code::InvalidArgument);
    }
    // An empty chain is fine.
    let v = log.verify(&tenant("empty"), 0, 0).await.expect("verify");
    assert!(v.ok());
    assert_eq!(v.checked, 0);
}

async fn modified_event_is_found(target: DbTarget) {
    let log = log(&target).await;
    fill(&log, "kultur", 15, 5).await;
    sql(
        &log,
        "UPDATE audit_events SET subject_id = 'someone-else' WHERE tenant_id = 'kultur' AND seq = 7",
    )
    .await;
    assert_eq!(
        verify(&log, "kultur").await,
        (7, Some(FailureKind::HashMismatch))
    );
    let v = log.verify(&tenant("kultur"), 0, 0).await.expect("verify");
    assert_eq!((v.checked, v.to_seq), (6, 6));
    // A range before the edit still verifies.
    assert!(log.verify(&tenant("kultur"), 1, 6).await.expect("v").ok());
}

async fn deleted_event_is_found(target: DbTarget) {
    let log = log(&target).await;
    fill(&log, "kultur", 15, 5).await;
    sql(
        &log,
        "DELETE FROM audit_events WHERE tenant_id = 'kultur' AND seq = 7",
    )
    .await;
    assert_eq!(verify(&log, "kultur").await, (7, Some(FailureKind::SeqGap)));
    // Renumbering the rest to hide the gap does not help.
    sql(
        &log,
        "UPDATE audit_events SET seq = seq + 1000000 WHERE tenant_id = 'kultur' AND seq > 7",
    )
    .await;
    sql(
        &log,
        "UPDATE audit_events SET seq = seq - 1000001 WHERE tenant_id = 'kultur' AND seq > 1000000",
    )
    .await;
    assert_eq!(
        verify(&log, "kultur").await,
        (7, Some(FailureKind::LinkMismatch))
    );
}

async fn reordered_pair_is_found(target: DbTarget) {
    let log = log(&target).await;
    fill(&log, "kultur", 15, 5).await;
    for s in [
        "UPDATE audit_events SET seq = -8 WHERE tenant_id = 'kultur' AND seq = 8",
        "UPDATE audit_events SET seq = 8 WHERE tenant_id = 'kultur' AND seq = 9",
        "UPDATE audit_events SET seq = 9 WHERE tenant_id = 'kultur' AND seq = -8",
    ] {
        sql(&log, s).await;
    }
    assert_eq!(
        verify(&log, "kultur").await,
        (8, Some(FailureKind::LinkMismatch))
    );
}

async fn inserted_event_is_found(target: DbTarget) {
    let log = log(&target).await;
    fill(&log, "kultur", 15, 5).await;
    // A forger who knows the algorithm: shifts seq 7.. up and chains a fake event
    // correctly after seq 6.
    sql(
        &log,
        "UPDATE audit_events SET seq = seq + 1000000 WHERE tenant_id = 'kultur' AND seq >= 7",
    )
    .await;
    sql(
        &log,
        "UPDATE audit_events SET seq = seq - 999999 WHERE tenant_id = 'kultur' AND seq >= 1000000",
    )
    .await;
    let prev = log
        .store()
        .hash_at("kultur", 6)
        .await
        .expect("read")
        .expect("seq 6");
    let mut fake = log
        .get_event(
            &tenant("kultur"),
            &log.query(&tenant("kultur"), &EventFilter::default(), 0, 1)
                .await
                .expect("q")
                .items[0]
                .chained
                .event
                .event_id,
        )
        .await
        .expect("event")
        .chained
        .event;
    fake.seq = 7;
    fake.event_id = uuid::Uuid::new_v4().to_string();
    fake.action = "EraseSubject".into();
    let hash = chain::next_hash(&prev, &fake, &mut vec![]);
    audit_event::Entity::insert(audit_event::ActiveModel {
        tenant_id: Set(fake.tenant_id.clone()),
        seq: Set(7),
        event_id: Set(fake.event_id.clone()),
        occur_time_us: Set(fake.occur_micros),
        actor_sub: Set(fake.actor_sub.clone()),
        actor_roles: Set(serde_json::to_string(&fake.actor_roles).expect("json")),
        actor_client: Set(fake.actor_client.clone()),
        action: Set(fake.action.clone()),
        service: Set(fake.service.clone()),
        subject_id: Set(fake.subject_id.clone()),
        resource_type: Set(fake.resource_type.clone()),
        resource_id: Set(fake.resource_id.clone()),
        outcome: Set(fake.outcome.clone()),
        status_code: Set(fake.status_code),
        changed_fields: Set(serde_json::to_string(&fake.changed_fields).expect("json")),
        request_id: Set(fake.request_id.clone()),
        trace_id: Set(fake.trace_id.clone()),
        detail: Set(fake.detail.clone()),
        prev_hash: Set(prev.to_vec()),
        hash: Set(hash.to_vec()),
        append_time_us: Set(0),
    })
    .exec_without_returning(log.store().connection())
    .await
    .expect("insert");
    let v = log.verify(&tenant("kultur"), 0, 0).await.expect("verify");
    assert_eq!(
        (v.first_bad_seq(), v.kind()),
        (7, Some(FailureKind::LinkMismatch))
    );
    assert!(
        v.failure.expect("failure").reason.contains("inserted"),
        "names the insertion"
    );
}

async fn truncated_tail_is_found_against_a_checkpoint(target: DbTarget) {
    let log = log(&target).await;
    fill(&log, "kultur", 25, 5).await;
    // Cut the tail and make the recorded head agree: only the signed checkpoint at
    // seq 20 knows better.
    let h15 = log
        .store()
        .hash_at("kultur", 15)
        .await
        .expect("read")
        .expect("seq 15");
    sql(
        &log,
        "DELETE FROM audit_events WHERE tenant_id = 'kultur' AND seq > 15",
    )
    .await;
    chain_head::Entity::update_many()
        .col_expr(chain_head::Column::Seq, sea_orm::sea_query::Expr::value(15))
        .col_expr(
            chain_head::Column::HeadHash,
            sea_orm::sea_query::Expr::value(h15.to_vec()),
        )
        .filter(chain_head::Column::TenantId.eq("kultur"))
        .exec(log.store().connection())
        .await
        .expect("rewrite head");
    let v = log.verify(&tenant("kultur"), 0, 0).await.expect("verify");
    assert_eq!(
        (v.first_bad_seq(), v.kind()),
        (16, Some(FailureKind::CheckpointMismatch))
    );
    assert_eq!(v.checkpoint.map(|c| c.seq), Some(20));
    assert_eq!((v.checked, v.to_seq, v.head_hash), (15, 15, h15));
    // Without rewriting the head, the recorded head alone finds a cut after the last
    // checkpoint.
    let log2 = log_with(&target, 1000).await;
    fill(&log2, "other", 8, 8).await;
    sql(
        &log2,
        "DELETE FROM audit_events WHERE tenant_id = 'other' AND seq > 5",
    )
    .await;
    assert_eq!(verify(&log2, "other").await, (6, Some(FailureKind::SeqGap)));
}

async fn forged_checkpoint_is_refused(target: DbTarget) {
    let log = log(&target).await;
    fill(&log, "kultur", 20, 10).await;
    let cp = log.checkpoint(&tenant("kultur"), 10).await.expect("cp");
    assert!(cp.verify(&log.signer().verifying_key()));
    // Re-signed with a key that is not the service's.
    let forged = chain::Checkpoint::sign(
        AuditSigner::from_seed([1; 32]).signing_key(),
        "kultur",
        10,
        cp.head_hash,
        cp.checkpoint_micros,
    );
    assert!(!forged.verify(&log.signer().verifying_key()));
    // A checkpoint moved in time keeps its signature, which no longer verifies.
    sql(
        &log,
        "UPDATE audit_checkpoints SET checkpoint_time_us = checkpoint_time_us + 1 WHERE tenant_id = 'kultur' AND seq = 10",
    )
    .await;
    assert_eq!(
        verify(&log, "kultur").await,
        (10, Some(FailureKind::BadSignature))
    );
}

async fn offline_verification_finds_an_edited_export(target: DbTarget) {
    let log = log(&target).await;
    fill(&log, "kultur", 23, 5).await;
    let items = export_all(&log, "kultur", 0, 0).await;
    let lines = to_lines(&items);
    assert_eq!(
        lines.len(),
        23 + 2,
        "23 events and checkpoints at 10 and 20"
    );
    assert!(lines[10].starts_with("{\"checkpoint\"") && lines[21].starts_with("{\"checkpoint\""));
    let key = log.signer().verifying_key();
    let file = lines.join("\n") + "\n";
    let report = verify_export(file.as_bytes(), key).expect("read");
    assert!(report.summary.ok(), "{:?}", report.summary.failure);
    assert_eq!(
        (report.summary.checked, report.summary.checkpoints),
        (23, 2)
    );
    assert_eq!(report.tenant_id.as_deref(), Some("kultur"));
    // Every line carries no more than ids: no e-mail, no name.
    assert!(!file.contains('@'));
    // Edit seq 9's action in the file.
    let mut edited = lines.clone();
    let i = edited
        .iter()
        .position(|l| l.contains("\"seq\":9,"))
        .expect("seq 9");
    edited[i] = edited[i].replacen("\"action\":\"", "\"action\":\"Not", 1);
    let report = verify_export(edited.join("\n").as_bytes(), key).expect("read");
    let f = report.summary.failure.expect("failure");
    assert_eq!((f.seq, f.kind), (9, FailureKind::HashMismatch));
    // A line removed.
    let mut cut = lines.clone();
    cut.remove(i);
    let f = verify_export(cut.join("\n").as_bytes(), key)
        .expect("read")
        .summary
        .failure
        .expect("failure");
    assert_eq!((f.seq, f.kind), (9, FailureKind::SeqGap));
    // Events 18..=20 cut out before the checkpoint of seq 20.
    let mut tail = lines[..18].to_vec();
    tail.push(lines[21].clone());
    let f = verify_export(tail.join("\n").as_bytes(), key)
        .expect("read")
        .summary
        .failure
        .expect("failure");
    assert_eq!((f.seq, f.kind), (18, FailureKind::CheckpointMismatch));
    // The wrong public key.
    let other = AuditSigner::from_seed([9; 32]).verifying_key();
    let f = verify_export(file.as_bytes(), other)
        .expect("read")
        .summary
        .failure
        .expect("failure");
    assert_eq!((f.seq, f.kind), (10, FailureKind::UnknownKey));
    // Garbage instead of an event.
    let mut junk = lines.clone();
    junk[3] = "{not json".into();
    let f = verify_export(junk.join("\n").as_bytes(), key)
        .expect("read")
        .summary
        .failure
        .expect("failure");
    assert_eq!(f.seq, 4);
    // A partial export (from seq 10) verifies on its own.
    let part = to_lines(&export_all(&log, "kultur", 10, 20).await);
    assert_eq!(part.len(), 11 + 2);
    let report = verify_export(part.join("\n").as_bytes(), key).expect("read");
    assert!(report.summary.ok(), "{:?}", report.summary.failure);
    assert_eq!(
        (report.summary.first_seq, report.summary.last_seq),
        (10, 20)
    );
}

async fn export_interleaves_checkpoints_and_follows(target: DbTarget) {
    let log = log(&target).await;
    fill(&log, "kultur", 12, 6).await;
    let items = export_all(&log, "kultur", 0, 0).await;
    let shape: Vec<String> = items
        .iter()
        .map(|i| match i {
            ExportItem::Event(e) => format!("e{}", e.chained.event.seq),
            ExportItem::Checkpoint(c) => format!("c{}", c.seq),
        })
        .collect();
    assert_eq!(shape[10..], ["e11", "e12", "c12"]);
    // Following: new events arrive as they are chained.
    let mut rx = log.export(tenant("kultur"), 12, 0, true).expect("follow");
    let first = rx.recv().await.expect("item").expect("ok");
    assert!(matches!(first, ExportItem::Event(ref e) if e.chained.event.seq == 12));
    assert!(matches!(
        rx.recv().await.expect("item").expect("ok"),
        ExportItem::Checkpoint(ref c) if c.seq == 12
    ));
    log.append(&tenant("kultur"), batch(100..102))
        .await
        .expect("append");
    for want in [13, 14] {
        let item = tokio::time::timeout(Duration::from_secs(5), rx.recv())
            .await
            .expect("in time")
            .expect("item")
            .expect("ok");
        assert!(matches!(item, ExportItem::Event(ref e) if e.chained.event.seq == want));
    }
    // A checkpoint made later for what was already sent still arrives.
    log.checkpoint_now(&tenant("kultur")).await.expect("cp");
    let item = tokio::time::timeout(Duration::from_secs(5), rx.recv())
        .await
        .expect("in time")
        .expect("item")
        .expect("ok");
    assert!(matches!(item, ExportItem::Checkpoint(ref c) if c.seq == 14));
    drop(rx);
    assert!(log.export(tenant("kultur"), 0, 5, true).is_err());
}

async fn query_filters_and_pages(target: DbTarget) {
    let log = log(&target).await;
    fill(&log, "kultur", 20, 20).await;
    let t = tenant("kultur");
    let all = |f: EventFilter| {
        let log = log.clone();
        let t = t.clone();
        async move {
            let mut seqs = vec![];
            let mut after = 0;
            loop {
                let page = log.query(&t, &f, after, 3).await.expect("query");
                seqs.extend(page.items.iter().map(|e| e.chained.event.seq));
                match (page.more, page.items.last()) {
                    (true, Some(l)) => after = l.chained.event.seq,
                    _ => break,
                }
            }
            seqs
        }
    };
    assert_eq!(
        all(EventFilter::default()).await,
        (1..=20).collect::<Vec<_>>()
    );
    // ev(i) is seq i + 1.
    let by_subject = all(EventFilter {
        subject_id: Some("subject-1".into()),
        ..Default::default()
    })
    .await;
    assert_eq!(by_subject, [2, 6, 10, 14, 18]);
    let by_actor_action = all(EventFilter {
        actor: Some("user-0".into()),
        action: Some("UpdateSubject".into()),
        ..Default::default()
    })
    .await;
    assert_eq!(by_actor_action, [4, 10, 16]);
    let denied = all(EventFilter {
        outcome: Some(Outcome::Denied),
        ..Default::default()
    })
    .await;
    assert_eq!(denied, [5, 10, 15, 20]);
    let base = 1_767_225_600_000_000_i64;
    let window = all(EventFilter {
        from_micros: Some(base + 5 * 60_000_000),
        to_micros: Some(base + 8 * 60_000_000),
        resource_id: Some("subject-2".into()),
        ..Default::default()
    })
    .await;
    assert_eq!(window, [7]);
    let e = log
        .query(
            &t,
            &EventFilter {
                from_micros: Some(2),
                to_micros: Some(1),
                ..Default::default()
            },
            0,
            10,
        )
        .await
        .expect_err("bad window");
    assert_eq!(ApiError::from(e).code(), tonic::Code::InvalidArgument);
    let e = log.get_event(&t, "nope").await.expect_err("bad id");
    assert_eq!(ApiError::from(e).code(), tonic::Code::InvalidArgument);
}

async fn two_replicas_do_not_fork_the_chain(target: DbTarget) {
    // Two services on one database, as two replicas: each has its own in-process
    // locks, so only the head's compare-and-set keeps the chain linear.
    let a = log(&target).await;
    let b = log_with(&target, 10).await;
    let mut tasks = vec![];
    for (n, log) in [a.clone(), b.clone(), a.clone(), b.clone()]
        .into_iter()
        .enumerate()
    {
        tasks.push(tokio::spawn(async move {
            for k in 0..5 {
                let base = n * 1000 + k * 10;
                log.append(&tenant("kultur"), batch(base..base + 10))
                    .await
                    .expect("append");
            }
        }));
    }
    for t in tasks {
        t.await.expect("task");
    }
    assert_eq!(a.store().head("kultur").await.expect("head").seq, 200);
    assert_eq!(verify(&a, "kultur").await, (0, None));
    assert_eq!(verify(&b, "kultur").await, (0, None));
}

async fn periodic_checkpoint_covers_new_events(target: DbTarget) {
    let log = log_with(&target, 1000).await;
    fill(&log, "kultur", 7, 7).await;
    fill(&log, "sport", 2, 2).await;
    assert!(matches!(
        log.checkpoint(&tenant("kultur"), 0).await,
        Err(AuditError::CheckpointNotFound)
    ));
    assert_eq!(log.checkpoint_idle().await.expect("idle"), 2);
    assert_eq!(log.checkpoint_idle().await.expect("idle"), 0, "nothing new");
    assert_eq!(
        log.checkpoint(&tenant("kultur"), 0).await.expect("cp").seq,
        7
    );
    fill(&log, "kultur", 1, 1).await;
    assert_eq!(log.checkpoint_idle().await.expect("idle"), 1);
    let v = log.verify(&tenant("kultur"), 0, 0).await.expect("verify");
    assert!(v.ok());
    assert_eq!(v.checkpoint.map(|c| c.seq), Some(8));
}

async fn bad_batches_write_nothing(target: DbTarget) {
    let log = log(&target).await;
    let mut bad = ev(1);
    bad.tenant_id = "other".into();
    let e = log
        .append(&tenant("kultur"), vec![ev(0), bad])
        .await
        .expect_err("invalid");
    let ApiError::InvalidArgument(v) = ApiError::from(e) else {
        panic!("invalid argument");
    };
    assert_eq!(v[0].field, "events[1].tenant_id");
    assert_eq!(log.store().head("kultur").await.expect("head").seq, 0);
    let out = log.append(&tenant("kultur"), vec![]).await.expect("empty");
    assert_eq!(out.results.len(), 0);
}

/// A rolling restart of two replicas during a key rotation: a replica with the old key
/// and one with the new key append, and checkpoint, in turn; each knows the other's
/// public key (`audit.retired_public_keys`). VerifyChain and the offline verification
/// check each checkpoint by its key id; without the retired key they fail at its first
/// checkpoint, naming its key id.
async fn checkpoints_across_a_key_rotation_verify_with_the_retired_key(target: DbTarget) {
    let (old, new) = (
        AuditSigner::from_seed(SEED),
        AuditSigner::from_seed([43; 32]),
    );
    let policy = CheckpointPolicy {
        every_events: 5,
        every: Duration::from_secs(3600),
    };
    let replica = |signer: &AuditSigner, other: &AuditSigner| {
        let (signer, other) = (signer.clone(), other.verifying_key());
        let target = target.clone();
        async move {
            AuditLog::with_keys(
                AuditStore::open(&target).await.expect("open"),
                signer,
                KeySet::from(other),
                policy,
            )
        }
    };
    let a = replica(&old, &new).await;
    let b = replica(&new, &old).await;
    for round in 0..4 {
        fill(if round % 2 == 0 { &a } else { &b }, "kultur", 5, 5).await;
    }
    let signed = signed_checkpoints(&a).await;
    let (o, n) = (old.key_id().to_owned(), new.key_id().to_owned());
    assert_eq!(
        signed,
        vec![
            (5, o.clone()),
            (10, n.clone()),
            (15, o.clone()),
            (20, n.clone())
        ]
    );
    for log in [&a, &b] {
        let v = log.verify(&tenant("kultur"), 0, 0).await.expect("verify");
        assert!(v.ok(), "{:?}", v.failure);
        assert_eq!((v.checked, v.to_seq), (20, 20));
    }

    // The new key alone (the retired key not configured).
    let alone = AuditLog::new(
        AuditStore::open(&target).await.expect("open"),
        new.clone(),
        policy,
    );
    let v = alone.verify(&tenant("kultur"), 0, 0).await.expect("verify");
    let f = v.failure.as_ref().expect("fails");
    assert_eq!((f.seq, f.kind), (5, FailureKind::UnknownKey));
    assert!(
        f.reason.contains(&o),
        "names the missing key id: {}",
        f.reason
    );
    let pb = vern_audit::api::verification_pb(v);
    assert_eq!(
        pb.failure,
        vern_proto::audit::v1::ChainFailure::UnknownKey as i32
    );
    assert!(pb.reason.contains(&o), "{}", pb.reason);

    // Offline, the same.
    let file = to_lines(&export_all(&a, "kultur", 0, 0).await).join("\n") + "\n";
    let both = KeySet::new([old.verifying_key(), new.verifying_key()]);
    let report = verify_export(file.as_bytes(), both).expect("read");
    assert!(report.summary.ok(), "{:?}", report.summary.failure);
    assert_eq!(report.summary.checkpoints, 4);
    let f = verify_export(file.as_bytes(), new.verifying_key())
        .expect("read")
        .summary
        .failure
        .expect("fails");
    assert_eq!((f.seq, f.kind), (5, FailureKind::UnknownKey));
    assert!(f.reason.contains(&o), "{}", f.reason);
}

async fn a_signing_key_replaced_in_its_file_signs_from_then_on_and_the_chain_verifies(
    target: DbTarget,
) {
    let dir = tempfile::tempdir().expect("dir");
    let path = dir.path().join("audit-signing.key");
    std::fs::write(&path, hex::encode(SEED)).expect("write");
    let old = AuditSigner::from_file(&path).expect("key");
    let log = AuditLog::new(
        AuditStore::open(&target).await.expect("open"),
        old.clone(),
        CheckpointPolicy {
            every_events: 10,
            every: Duration::from_secs(3600),
        },
    );
    let watch = log.spawn_key_watch(path.clone(), Duration::from_millis(50));
    fill(&log, "kultur", 10, 5).await;
    // The Secret is rotated in place (cert-manager, kubelet): no restart.
    let new = AuditSigner::from_seed([44; 32]);
    std::fs::write(&path, hex::encode([44u8; 32])).expect("write");
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    while log.signer().key_id() != new.key_id() {
        assert!(
            std::time::Instant::now() < deadline,
            "new key not picked up"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    // A broken file keeps the current key. Failures counted from here on are reads of
    // the complete broken file (a read of the half-written file may count before).
    std::fs::write(&path, "not a key").expect("write");
    let failures = log.key_reload_failures();
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    while log.key_reload_failures() <= failures {
        assert!(
            std::time::Instant::now() < deadline,
            "the broken key file was not read again within 10 s"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert_eq!(
        log.signer().key_id(),
        new.key_id(),
        "a broken key file keeps the current key"
    );
    fill(&log, "kultur", 10, 5).await;
    watch.abort();
    let signed = signed_checkpoints(&log).await;
    assert_eq!(
        signed,
        vec![(10, old.key_id().to_owned()), (20, new.key_id().to_owned())]
    );
    let v = log.verify(&tenant("kultur"), 0, 0).await.expect("verify");
    assert!(v.ok(), "{:?}", v.failure);
    assert_eq!((v.checked, v.to_seq), (20, 20));
    // After a restart the old key verifies only as a retired one.
    let restarted = AuditLog::with_keys(
        AuditStore::open(&target).await.expect("open"),
        new.clone(),
        KeySet::from(old.verifying_key()),
        CheckpointPolicy::default(),
    );
    assert!(
        restarted
            .verify(&tenant("kultur"), 0, 0)
            .await
            .expect("verify")
            .ok()
    );
    let forgot = AuditLog::new(
        AuditStore::open(&target).await.expect("open"),
        new,
        CheckpointPolicy::default(),
    );
    let (_, kind) = verify(&forgot, "kultur").await;
    assert_eq!(kind, Some(FailureKind::UnknownKey));
}
