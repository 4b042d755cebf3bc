//! The relay over a real outbox, on SQLite and on PostgreSQL: replicas, leases,
//! backoff per tenant, parking and re-queueing.

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use crate::db::Db;
use sea_orm::{ConnectionTrait, Statement, TransactionTrait};
use sea_orm_migration::prelude::{MigrationTrait, MigratorTrait};

use super::*;
use crate::db::DbTarget;

crate::store_test_suite!("outbox":
    two_replicas_deliver_each_row_once_in_order,
    a_row_that_keeps_failing_is_parked_while_other_tenants_go_on,
    an_unreachable_receiver_parks_nothing,
    the_lease_is_held_by_one_relay_at_a_time,
);

const TOPIC: &str = "subject_state";

struct Migrator;

impl MigratorTrait for Migrator {
    fn migrations() -> Vec<Box<dyn MigrationTrait>> {
        vec![
            Box::new(Migration),
            Box::new(ParkingMigration),
            Box::new(LeaseMigration),
        ]
    }
}

async fn open(target: &DbTarget) -> Db {
    crate::db::connect_and_migrate::<Migrator>(target)
        .await
        .expect("open outbox")
}

/// Another replica: its own pool on the same database.
async fn replica(target: &DbTarget) -> Db {
    crate::db::connect(target).await.expect("connect replica")
}

fn payload(n: u32) -> Vec<u8> {
    n.to_be_bytes().to_vec()
}

/// A receiver that records what it got, and fails for one tenant when told to.
#[derive(Default)]
struct Recorder {
    /// (tenant, payload number), in delivery order.
    got: Mutex<Vec<(String, u32)>>,
    /// Every call: (tenant, delivered).
    calls: Mutex<Vec<(String, bool)>>,
    fail: Mutex<Option<(String, DeliveryError)>>,
    /// Time each call takes (widens the window in which two relays could overlap).
    delay: Duration,
}

impl Recorder {
    fn failing(tenant: &str, error: DeliveryError) -> Self {
        Self {
            fail: Mutex::new(Some((tenant.to_owned(), error))),
            ..Self::default()
        }
    }

    fn heal(&self) {
        *self.fail.lock().expect("lock") = None;
    }

    fn got_of(&self, tenant: &str) -> Vec<u32> {
        self.got
            .lock()
            .expect("lock")
            .iter()
            .filter(|(t, _)| t == tenant)
            .map(|(_, n)| *n)
            .collect()
    }
}

#[async_trait::async_trait]
impl Deliver for Recorder {
    async fn deliver(
        &self,
        tenant_id: &str,
        topic: &str,
        payloads: Vec<Vec<u8>>,
    ) -> Result<(), DeliveryError> {
        assert_eq!(topic, TOPIC);
        if !self.delay.is_zero() {
            tokio::time::sleep(self.delay).await;
        }
        let failure = self
            .fail
            .lock()
            .expect("lock")
            .as_ref()
            .filter(|(t, _)| t == tenant_id)
            .map(|(_, e)| e.clone());
        self.calls
            .lock()
            .expect("lock")
            .push((tenant_id.to_owned(), failure.is_none()));
        if let Some(e) = failure {
            return Err(e);
        }
        let mut got = self.got.lock().expect("lock");
        for p in payloads {
            let n = u32::from_be_bytes(p.as_slice().try_into().expect("4 bytes"));
            got.push((tenant_id.to_owned(), n));
        }
        Ok(())
    }
}

async fn eventually(what: &str, timeout: Duration, mut done: impl AsyncFnMut() -> bool) {
    let deadline = Instant::now() + timeout;
    while !done().await {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

async fn drained(db: &Db) {
    eventually("the outbox to drain", Duration::from_secs(30), async || {
        backlog(db).await.expect("backlog") == 0
    })
    .await;
}

async fn enqueue_round(db: &Db, tenants: &[&str], n: u32) {
    let txn = db.begin().await.expect("begin");
    for t in tenants {
        enqueue(&txn, t, TOPIC, payload(n)).await.expect("enqueue");
    }
    txn.commit().await.expect("commit");
}

/// Two replicas relay the same outbox while rows are written to it; then the holder
/// goes away and the other one (or a new one) takes over. Every row arrives exactly
/// once, and each tenant's in the order written.
async fn two_replicas_deliver_each_row_once_in_order(target: DbTarget) {
    let tenants = ["dept-a", "dept-b", "dept-c"];
    let db1 = open(&target).await;
    let db2 = replica(&target).await;
    let rec = Arc::new(Recorder {
        delay: Duration::from_millis(2),
        ..Recorder::default()
    });
    let settings = RelaySettings {
        batch: 7,
        max_attempts: 12,
        lease: Duration::from_secs(2),
    };
    let spawn = |db: &Db| {
        spawn_topic_relays(
            db.clone(),
            vec![(TOPIC, rec.clone() as Arc<dyn Deliver>)],
            settings.clone(),
        )
    };
    let a = spawn(&db1);
    let b = spawn(&db2);
    for n in 0..40 {
        // Written through either replica, each nudging its own relay.
        enqueue_round(if n % 2 == 0 { &db1 } else { &db2 }, &tenants, n).await;
        a.nudge();
        b.nudge();
    }
    drained(&db1).await;
    // Whichever held the lease, one of them is stopped, and later the other.
    a.stop();
    for n in 40..60 {
        enqueue_round(&db2, &tenants, n).await;
        b.nudge();
    }
    drained(&db2).await;
    let db3 = replica(&target).await;
    let c = spawn(&db3);
    b.stop();
    for n in 60..80 {
        enqueue_round(&db3, &tenants, n).await;
        c.nudge();
    }
    drained(&db3).await;
    // A late duplicate would arrive within a poll.
    tokio::time::sleep(Duration::from_millis(600)).await;
    c.stop();
    for t in tenants {
        assert_eq!(rec.got_of(t), (0..80).collect::<Vec<_>>(), "{t}");
    }
}

/// A tenant whose receiver keeps failing backs off and is parked after
/// `max_attempts`; the other tenant's rows behind it go meanwhile. An operator
/// re-queues the parked rows and they are delivered, in order.
async fn a_row_that_keeps_failing_is_parked_while_other_tenants_go_on(target: DbTarget) {
    let db = open(&target).await;
    let rec = Arc::new(Recorder::failing(
        "bad",
        DeliveryError::Retry("ApplySubjectStates failed: Internal".into()),
    ));
    for n in 0..3 {
        enqueue(&db, "bad", TOPIC, payload(n)).await.expect("bad");
    }
    for n in 0..3 {
        enqueue(&db, "good", TOPIC, payload(n)).await.expect("good");
    }
    // Batches of 2: the failing tenant's rows alone fill the first one.
    let relay = spawn_topic_relays(
        db.clone(),
        vec![(TOPIC, rec.clone() as Arc<dyn Deliver>)],
        RelaySettings {
            batch: 2,
            max_attempts: 4,
            lease: Duration::from_secs(15),
        },
    );
    eventually("three parked rows", Duration::from_secs(30), async || {
        list(&db, true, 10).await.expect("list").len() == 3
    })
    .await;
    assert_eq!(rec.got_of("good"), [0, 1, 2]);
    let calls = rec.calls.lock().expect("lock").clone();
    let last_good = calls.iter().rposition(|(t, _)| t == "good");
    let bad: Vec<usize> = (0..calls.len()).filter(|&i| calls[i].0 == "bad").collect();
    assert!(bad.len() >= 4, "{calls:?}");
    assert!(
        last_good.is_some_and(|g| g < bad[3]),
        "the good tenant was delivered before the bad one ran out of attempts: {calls:?}"
    );
    assert!(rec.got_of("bad").is_empty());
    let parked = list(&db, true, 10).await.expect("list");
    for row in &parked {
        assert_eq!((row.tenant_id.as_str(), row.topic.as_str()), ("bad", TOPIC));
        assert_eq!(row.attempts, 4);
        assert!(row.parked_at.is_some());
        assert!(
            row.park_reason
                .as_deref()
                .is_some_and(|r| r.contains("failed 4 times") && r.contains("Internal")),
            "{:?}",
            row.park_reason
        );
    }
    assert_eq!(list(&db, false, 10).await.expect("all"), parked);
    assert_eq!(backlog(&db).await.expect("backlog"), 0);

    // Re-queued: the first alone, then the rest.
    rec.heal();
    assert_eq!(retry(&db, Requeue::Ids(&[])).await.expect("none"), 0);
    assert_eq!(
        retry(&db, Requeue::Ids(&[parked[0].id, 999_999]))
            .await
            .expect("retry one"),
        1
    );
    relay.nudge();
    eventually("the re-queued row", Duration::from_secs(10), async || {
        rec.got_of("bad") == [0]
    })
    .await;
    assert_eq!(retry(&db, Requeue::AllParked).await.expect("retry all"), 2);
    relay.nudge();
    drained(&db).await;
    eventually("the rest", Duration::from_secs(10), async || {
        rec.got_of("bad") == [0, 1, 2]
    })
    .await;
    assert!(list(&db, false, 10).await.expect("list").is_empty());
    relay.stop();
}

/// A receiver that cannot be reached holds its topic up but counts nothing against
/// the rows: they are delivered, not parked, when it is back.
async fn an_unreachable_receiver_parks_nothing(target: DbTarget) {
    let db = open(&target).await;
    let rec = Recorder::failing(
        "dept-a",
        DeliveryError::from_status("AppendEvents", &tonic::Status::unavailable("down")),
    );
    for n in 0..2 {
        enqueue(&db, "dept-a", TOPIC, payload(n))
            .await
            .expect("enqueue");
    }
    let mut relay = TopicRelay::new(
        db.clone(),
        TOPIC,
        RelaySettings {
            batch: 10,
            max_attempts: 2,
            lease: Duration::from_secs(15),
        },
    );
    for _ in 0..5 {
        assert!(
            matches!(relay.pass(&rec).await, Err(RelayError::Unavailable(_))),
            "the topic waits"
        );
    }
    let rows = list(&db, false, 10).await.expect("list");
    assert_eq!(rows.len(), 2);
    assert!(
        rows.iter()
            .all(|r| r.attempts == 0 && r.parked_at.is_none())
    );
    rec.heal();
    let pass = relay.pass(&rec).await.expect("pass");
    assert_eq!((pass.held, pass.delivered, pass.parked), (true, 2, 0));
    assert_eq!(rec.got_of("dept-a"), [0, 1]);
}

async fn lease_holder(db: &Db) -> Option<String> {
    db.query_one_raw(Statement::from_string(
        db.get_database_backend(),
        format!("SELECT holder FROM outbox_leases WHERE topic = '{TOPIC}'"),
    ))
    .await
    .expect("lease")
    .map(|r| r.try_get::<String>("", "holder").expect("holder"))
}

/// One relay holds a topic; another gets it when it is released or has expired, or
/// at once when its holder's process is gone.
async fn the_lease_is_held_by_one_relay_at_a_time(target: DbTarget) {
    let db1 = open(&target).await;
    let db2 = replica(&target).await;
    let rec = Recorder::default();
    // Long enough that a held lease outlives the few statements each step runs on a
    // busy machine; the expiry below is waited for, not slept out.
    let lease = Duration::from_secs(5);
    let settings = RelaySettings {
        batch: 10,
        max_attempts: 12,
        lease,
    };
    let mut r1 = TopicRelay::new(db1.clone(), TOPIC, settings.clone());
    let mut r2 = TopicRelay::new(db2.clone(), TOPIC, settings.clone());
    enqueue(&db1, "dept-a", TOPIC, payload(1))
        .await
        .expect("enqueue");
    let pass = r1.pass(&rec).await.expect("r1");
    assert_eq!((pass.held, pass.delivered), (true, 1));
    enqueue(&db1, "dept-a", TOPIC, payload(2))
        .await
        .expect("enqueue");
    assert!(!r2.pass(&rec).await.expect("r2").held, "r1 holds it");
    assert_eq!(
        deliver_topic(&db2, &rec, 10, TOPIC).await,
        Err(RelayError::Leased)
    );
    assert_eq!(rec.got_of("dept-a"), [1]);
    // Released: taken at once.
    r1.release().await.expect("release");
    // Before r2's statement: the lease it takes expires `lease` after this, or later.
    let r2_asked = Instant::now();
    let pass = r2.pass(&rec).await.expect("r2");
    assert_eq!((pass.held, pass.delivered), (true, 1));
    assert!(!r1.pass(&rec).await.expect("r1").held, "r2 holds it");
    // Expired: r2 stops renewing, r1 takes it (not before the lease ran out, and
    // within 10 s after); r2 then finds it taken.
    let deadline = r2_asked + lease + Duration::from_secs(10);
    while !r1.pass(&rec).await.expect("r1").held {
        assert!(
            Instant::now() < deadline,
            "r1 did not take the lease within 10 s of its expiry"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let after = r2_asked.elapsed();
    assert!(
        after >= lease,
        "r1 took the lease {after:?} after r2 took it, before its {lease:?} ran out"
    );
    assert!(!r2.pass(&rec).await.expect("r2").held, "renewal refused");
    // The holder's process is gone (on this host): taken over before it expires.
    if let Some(scope) = lease::local_scope() {
        let mut child = std::process::Command::new("true").spawn().expect("spawn");
        let gone = child.id();
        child.wait().expect("wait");
        let dead = format!("{scope}/{gone}/0123");
        db1.execute_raw(Statement::from_sql_and_values(
            db1.get_database_backend(),
            match db1.get_database_backend() {
                sea_orm::DbBackend::Sqlite => {
                    "UPDATE outbox_leases SET holder = ?, expires_at = 99999999999999"
                }
                _ => "UPDATE outbox_leases SET holder = $1, expires_at = 99999999999999",
            },
            [dead.clone().into()],
        ))
        .await
        .expect("a dead holder");
        let mut r3 = TopicRelay::new(db2.clone(), TOPIC, settings);
        assert!(r3.pass(&rec).await.expect("r3").held, "took over");
        assert_ne!(lease_holder(&db1).await, Some(dead));
    }
    assert_eq!(rec.got_of("dept-a"), [1, 2]);
}
