//! Append throughput, measured (not asserted): batches of 500 events, as the outbox
//! relays deliver them, through the use case (validation, one transaction per batch,
//! chain step, checkpoints every 1000 events). Ignored by default; run in release:
//!
//! ```text
//! cargo test --release -p vern-audit --test append_throughput -- --ignored --nocapture
//! VERN_TEST_DATABASE_URL=postgres://postgres@127.0.0.1:5432/test \
//!   cargo test --release -p vern-audit --test append_throughput -- --ignored --nocapture
//! ```

use std::time::{Duration, Instant};

use vern_audit::domain::{EventInput, Outcome};
use vern_audit::keys::{AuditSigner, CheckpointPolicy};
use vern_audit::service::AuditLog;
use vern_audit::store::AuditStore;
use vern_kit::context::TenantId;
use vern_kit::testing::TestDb;

const BATCH: usize = 500;
const BATCHES: usize = 120;

fn event(i: usize) -> EventInput {
    EventInput {
        event_id: uuid::Uuid::now_v7().to_string(),
        actor_sub: format!("svc-{}", i % 7),
        actor_roles: vec!["service".into()],
        actor_client: "grpc-rust/0.14".into(),
        action: "UpdateSubject".into(),
        service: "subjects".into(),
        subject_id: uuid::Uuid::now_v7().to_string(),
        resource_type: "subject".into(),
        resource_id: uuid::Uuid::now_v7().to_string(),
        outcome: Some(Outcome::Success),
        changed_fields: vec!["email".into(), "phone".into()],
        request_id: format!("req-{i}"),
        trace_id: "4bf92f3577b34da6a3ce929d0e0e4736".into(),
        occur_time: Some(chrono::Utc::now()),
        ..Default::default()
    }
}

async fn measure(db: TestDb) {
    let store = AuditStore::open(&db.target).await.expect("open");
    let log = AuditLog::new(
        store,
        AuditSigner::from_seed([5; 32]),
        CheckpointPolicy {
            every_events: 1000,
            every: Duration::from_secs(3600),
        },
    );
    let tenant = TenantId::new("bench");
    // Warm-up batch (connections, statement caches).
    log.append(&tenant, (0..BATCH).map(event).collect())
        .await
        .expect("append");
    let batches: Vec<Vec<EventInput>> = (0..BATCHES)
        .map(|b| (0..BATCH).map(|i| event(b * BATCH + i)).collect())
        .collect();
    let started = Instant::now();
    let mut n = 0;
    for b in batches {
        n += log.append(&tenant, b).await.expect("append").appended;
    }
    let secs = started.elapsed().as_secs_f64();
    println!(
        "append {}: {n} events in batches of {BATCH}: {:.0} events/s ({:.1} ms per batch)",
        db.backend,
        n as f64 / secs,
        secs * 1000.0 / BATCHES as f64
    );
    let started = Instant::now();
    let v = log.verify(&tenant, 0, 0).await.expect("verify");
    assert!(v.ok());
    let secs = started.elapsed().as_secs_f64();
    println!(
        "verify {} (VerifyChain from the database): {} events: {:.0} events/s",
        db.backend,
        v.checked,
        v.checked as f64 / secs
    );
    db.cleanup().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "a measurement; run with --ignored --nocapture in release"]
async fn append_throughput_sqlite() {
    measure(TestDb::sqlite("audit")).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "a measurement; run with --ignored --nocapture in release"]
async fn append_throughput_postgres() {
    if let Some(db) = TestDb::postgres("audit") {
        measure(db).await;
    }
}
