//! The in-memory Check cache never answers from a state older than the last write
//! acknowledged by its own replica: consent events, withdrawals, objections, restriction
//! and erasure show at once, also while Checks run concurrently with the writes, on
//! SQLite and on PostgreSQL. On PostgreSQL another replica's write shows within
//! `CACHE_MAX_AGE`. And the cache is used: repeated Checks with no write between are
//! counted as answered from it (`ConsentStore::cache_stats`).

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use vern_consents::domain::{
    Channel, ConsentAction, Decision, LegalBasis, PurposeRule, Reason, SubjectStatus,
};
use vern_consents::error::ConsentError;
use vern_consents::purposes::{PurposeCache, PurposeSource};
use vern_consents::remote::SubjectSource;
use vern_consents::service::{Consents, NewEvent};
use vern_consents::store::{CACHE_MAX_AGE, CacheStats, ConsentStore};
use vern_kit::context::TenantId;
use vern_kit::db::DbTarget;
use vern_kit::testing::TestDb;

struct Purposes;

#[async_trait::async_trait]
impl PurposeSource for Purposes {
    async fn fetch(&self, _tenant: &str, key: &str) -> Result<Option<PurposeRule>, ConsentError> {
        Ok(match key {
            "newsletter" => Some(PurposeRule {
                legal_basis: LegalBasis::Consent,
                direct_marketing: true,
            }),
            "analytics" => Some(PurposeRule {
                legal_basis: LegalBasis::LegitimateInterests,
                direct_marketing: false,
            }),
            _ => None,
        })
    }
}

struct NoSubjects;

#[async_trait::async_trait]
impl SubjectSource for NoSubjects {
    async fn fetch_state(
        &self,
        _tenant: &str,
        _subject_id: &str,
    ) -> Result<Option<SubjectStatus>, ConsentError> {
        Ok(None)
    }
}

async fn consents(target: &DbTarget) -> Consents {
    with_store(ConsentStore::open(target, keyring()).await.expect("open"))
}

/// A store whose Check cache may be used (on PostgreSQL: its listener has heard a
/// heartbeat).
async fn cached_store(target: &DbTarget) -> ConsentStore {
    let store = ConsentStore::open(target, keyring()).await.expect("open");
    assert!(
        store.cache_ready(Duration::from_secs(5)).await,
        "cache usable"
    );
    store
}

fn with_store(store: ConsentStore) -> Consents {
    Consents::new(
        store,
        Arc::new(PurposeCache::new(Arc::new(Purposes))),
        Arc::new(NoSubjects),
    )
}

fn tenant() -> TenantId {
    TenantId::new("kultur")
}

fn event(subject: &str, purpose: &str, action: ConsentAction) -> NewEvent {
    NewEvent {
        subject_id: subject.into(),
        purpose: purpose.into(),
        action: Some(action),
        channel: Some(Channel::WebForm),
        notice_version: "2026-01".into(),
        evidence: "form".into(),
        actor: String::new(),
        rights_request_id: String::new(),
        occur_time: None,
        expires_at: None,
    }
}

async fn record(c: &Consents, subject: &str, purpose: &str, action: ConsentAction) {
    c.record(&tenant(), "test", event(subject, purpose, action), "", None)
        .await
        .expect("record");
}

async fn set_state(c: &Consents, subject: &str, status: SubjectStatus, version: i64) {
    c.apply_subject_states(
        &tenant(),
        vec![vern_consents::domain::SubjectChange::new(
            subject,
            status,
            version,
            chrono::Utc::now(),
        )],
    )
    .await
    .expect("apply");
}

async fn check(c: &Consents, subject: &str, purpose: &str) -> Decision {
    c.check(&tenant(), subject, purpose).await.expect("check").0
}

/// What the database says, through a store whose cache is empty.
async fn from_db(target: &DbTarget, subject: &str, purpose: &str) -> Decision {
    check(&consents(target).await, subject, purpose).await
}

#[tokio::test]
async fn every_change_shows_at_once() {
    every_change_shows_at_once_on(TestDb::sqlite("consents")).await;
}

#[tokio::test]
async fn every_change_shows_at_once_on_postgres() {
    if let Some(db) = TestDb::postgres("consents") {
        every_change_shows_at_once_on(db).await;
    }
}

async fn every_change_shows_at_once_on(db: TestDb) {
    let store = cached_store(&db.target).await;
    let c = with_store(store.clone());
    let s = uuid::Uuid::now_v7().to_string();
    // Unknown subject, cached as unknown; then notified.
    assert_eq!(
        check(&c, &s, "newsletter").await.reason,
        Reason::SubjectUnknown
    );
    set_state(&c, &s, SubjectStatus::Active, 1).await;
    assert_eq!(check(&c, &s, "newsletter").await.reason, Reason::NoConsent);
    assert_eq!(check(&c, &s, "analytics").await.reason, Reason::NoObjection);
    // Cached (on PostgreSQL the notification of the write above may still arrive and
    // empty the cache once: ask again until it holds).
    let filling = Instant::now();
    while store.cached_subjects() == 0 {
        assert!(filling.elapsed() < Duration::from_secs(5), "never cached");
        assert_eq!(check(&c, &s, "newsletter").await.reason, Reason::NoConsent);
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    let steps: [(&str, ConsentAction, &str, Reason); 4] = [
        (
            "newsletter",
            ConsentAction::Grant,
            "newsletter",
            Reason::ConsentGranted,
        ),
        (
            "newsletter",
            ConsentAction::Withdraw,
            "newsletter",
            Reason::ConsentWithdrawn,
        ),
        (
            "analytics",
            ConsentAction::Object,
            "analytics",
            Reason::SubjectObjected,
        ),
        (
            "newsletter",
            ConsentAction::Grant,
            "newsletter",
            Reason::ConsentGranted,
        ),
    ];
    for (purpose, action, asked, want) in steps {
        // Warm the cache, change, ask again.
        check(&c, &s, asked).await;
        record(&c, &s, purpose, action).await;
        assert_eq!(check(&c, &s, asked).await.reason, want, "after {action:?}");
        assert_eq!(from_db(&db.target, &s, asked).await.reason, want);
    }
    check(&c, &s, "newsletter").await;
    set_state(&c, &s, SubjectStatus::Restricted, 2).await;
    assert_eq!(
        check(&c, &s, "newsletter").await.reason,
        Reason::SubjectRestricted
    );
    set_state(&c, &s, SubjectStatus::Active, 3).await;
    assert_eq!(
        check(&c, &s, "newsletter").await.reason,
        Reason::ConsentGranted
    );
    set_state(&c, &s, SubjectStatus::Erased, 4).await;
    assert_eq!(
        check(&c, &s, "newsletter").await.reason,
        Reason::SubjectErased
    );
    // BatchCheck reads the same cache.
    let (batch, _) = c
        .batch_check(&tenant(), "newsletter", std::slice::from_ref(&s))
        .await
        .expect("batch");
    assert_eq!(batch[0].1.reason, Reason::SubjectErased);
    db.cleanup().await;
}

#[tokio::test]
async fn repeated_checks_are_answered_from_the_cache() {
    repeated_checks_are_answered_from_the_cache_on(TestDb::sqlite("consents")).await;
}

#[tokio::test]
async fn repeated_checks_are_answered_from_the_cache_on_postgres() {
    if let Some(db) = TestDb::postgres("consents") {
        repeated_checks_are_answered_from_the_cache_on(db).await;
    }
}

/// What `store` counted since `before`.
fn since(store: &ConsentStore, before: CacheStats) -> CacheStats {
    let now = store.cache_stats();
    CacheStats {
        hits: now.hits - before.hits,
        misses: now.misses - before.misses,
    }
}

/// On PostgreSQL: waits until the notifications of every write acknowledged so far
/// have been handled, so that none of them empties the cache later. A fresh cache
/// reflects every write committed more than `CACHE_MAX_AGE` ago.
async fn settle(db: &TestDb, store: &ConsentStore) {
    if db.backend == "postgres" {
        tokio::time::sleep(CACHE_MAX_AGE + Duration::from_millis(50)).await;
        assert!(
            store.cache_ready(Duration::from_secs(5)).await,
            "cache usable"
        );
    }
}

/// One Check of (`s`, newsletter) to fill the cache, then `n` identical ones with no
/// write between, each answering `want`; what those `n` counted. A window in which the
/// cache became unusable (PostgreSQL: the listener fell behind on a loaded machine, so
/// the cache is rightly bypassed, or reconnected and cleared it) is measured again.
async fn repeated(store: &ConsentStore, c: &Consents, s: &str, want: Reason, n: u64) -> CacheStats {
    for _ in 0..5 {
        assert!(
            store.cache_ready(Duration::from_secs(5)).await,
            "cache usable"
        );
        assert_eq!(check(c, s, "newsletter").await.reason, want);
        let before = store.cache_stats();
        for _ in 0..n {
            assert_eq!(check(c, s, "newsletter").await.reason, want);
        }
        let counted = since(store, before);
        if store.cache_ready(Duration::ZERO).await {
            return counted;
        }
    }
    panic!("the cache never stayed usable for {n} Checks");
}

/// Guards the freshness tests above against a cache that is never used: they would
/// pass as well if every Check read the database.
async fn repeated_checks_are_answered_from_the_cache_on(db: TestDb) {
    const N: u64 = 50;
    let store = cached_store(&db.target).await;
    let c = with_store(store.clone());
    let s = uuid::Uuid::now_v7().to_string();
    set_state(&c, &s, SubjectStatus::Active, 1).await;
    record(&c, &s, "newsletter", ConsentAction::Grant).await;
    settle(&db, &store).await;

    // Never read since the writes: a database read, which fills the cache …
    let before = store.cache_stats();
    assert_eq!(
        check(&c, &s, "newsletter").await.reason,
        Reason::ConsentGranted
    );
    assert_eq!(since(&store, before), CacheStats { hits: 0, misses: 1 });
    // … and every identical Check after it is answered from the cache.
    assert_eq!(
        repeated(&store, &c, &s, Reason::ConsentGranted, N).await,
        CacheStats { hits: N, misses: 0 },
        "no write between: all from the cache"
    );

    // A write for the subject empties its entry: the next Check reads the database
    // and answers the new state …
    record(&c, &s, "newsletter", ConsentAction::Withdraw).await;
    let before = store.cache_stats();
    assert_eq!(
        check(&c, &s, "newsletter").await.reason,
        Reason::ConsentWithdrawn
    );
    assert_eq!(since(&store, before), CacheStats { hits: 0, misses: 1 });
    // … and, once filled again, the cache answers it (PostgreSQL: the write's own
    // notification may still empty the entry once; let it arrive first).
    settle(&db, &store).await;
    assert_eq!(
        repeated(&store, &c, &s, Reason::ConsentWithdrawn, N).await,
        CacheStats { hits: N, misses: 0 },
        "no write between: all from the cache"
    );
    // BatchCheck counts per subject and reads the same cache.
    let before = store.cache_stats();
    let (batch, _) = c
        .batch_check(&tenant(), "newsletter", std::slice::from_ref(&s))
        .await
        .expect("batch");
    assert_eq!(batch[0].1.reason, Reason::ConsentWithdrawn);
    assert_eq!(since(&store, before), CacheStats { hits: 1, misses: 0 });
    db.cleanup().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_checks_never_keep_a_stale_state() {
    concurrent_checks_never_keep_a_stale_state_on(TestDb::sqlite("consents")).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_checks_never_keep_a_stale_state_on_postgres() {
    if let Some(db) = TestDb::postgres("consents") {
        concurrent_checks_never_keep_a_stale_state_on(db).await;
    }
}

async fn concurrent_checks_never_keep_a_stale_state_on(db: TestDb) {
    let store = cached_store(&db.target).await;
    let c = with_store(store);
    let subjects: Vec<String> = (0..4).map(|_| uuid::Uuid::now_v7().to_string()).collect();
    for s in &subjects {
        set_state(&c, s, SubjectStatus::Active, 1).await;
    }
    let stop = Arc::new(AtomicBool::new(false));
    let mut readers = vec![];
    for r in 0..4 {
        let (c, subjects, stop) = (c.clone(), subjects.clone(), stop.clone());
        readers.push(tokio::spawn(async move {
            let mut n = 0u64;
            while !stop.load(Ordering::Relaxed) {
                let s = &subjects[(n as usize + r) % subjects.len()];
                c.check(&tenant(), s, "newsletter").await.expect("check");
                n += 1;
                // A cache hit never suspends: let the writer's tasks (the pool's
                // connection returns) have the worker threads too.
                tokio::task::yield_now().await;
            }
            n
        }));
    }
    let mut last: HashMap<String, Reason> = HashMap::new();
    for i in 0..40 {
        let s = &subjects[i % subjects.len()];
        let (action, want) = if i % 3 == 2 {
            (ConsentAction::Withdraw, Reason::ConsentWithdrawn)
        } else {
            (ConsentAction::Grant, Reason::ConsentGranted)
        };
        record(&c, s, "newsletter", action).await;
        // Acknowledged: every Check from now on sees it.
        assert_eq!(check(&c, s, "newsletter").await.reason, want, "write {i}");
        last.insert(s.clone(), want);
    }
    stop.store(true, Ordering::Relaxed);
    let mut reads = 0;
    for r in readers {
        reads += r.await.expect("reader");
    }
    assert!(reads > 0);
    for (s, want) in &last {
        assert_eq!(check(&c, s, "newsletter").await.reason, *want);
        assert_eq!(from_db(&db.target, s, "newsletter").await.reason, *want);
    }
    db.cleanup().await;
}

#[tokio::test]
async fn a_warmed_cache_answers_like_the_database_and_follows_writes() {
    let db = TestDb::sqlite("consents");
    let c = consents(&db.target).await;
    let subjects: Vec<String> = (0..5).map(|_| uuid::Uuid::now_v7().to_string()).collect();
    for s in &subjects {
        set_state(&c, s, SubjectStatus::Active, 1).await;
    }
    record(&c, &subjects[0], "newsletter", ConsentAction::Grant).await;
    record(&c, &subjects[1], "analytics", ConsentAction::Object).await;
    set_state(&c, &subjects[2], SubjectStatus::Restricted, 2).await;

    // A fresh store (as after a restart) warms its cache from the database …
    let store = ConsentStore::open(&db.target, keyring())
        .await
        .expect("open");
    assert_eq!(
        store.warm_check_cache().await.expect("warm"),
        subjects.len()
    );
    let warm = Consents::new(
        store,
        Arc::new(PurposeCache::new(Arc::new(Purposes))),
        Arc::new(NoSubjects),
    );
    // … and answers every (subject, purpose) as the database does.
    for s in &subjects {
        for p in ["newsletter", "analytics"] {
            assert_eq!(check(&warm, s, p).await, from_db(&db.target, s, p).await);
        }
    }
    assert_eq!(
        check(&warm, &subjects[0], "newsletter").await.reason,
        Reason::ConsentGranted
    );
    // A write through the warmed store shows at once.
    record(&warm, &subjects[0], "newsletter", ConsentAction::Withdraw).await;
    assert_eq!(
        check(&warm, &subjects[0], "newsletter").await.reason,
        Reason::ConsentWithdrawn
    );
    record(&warm, &subjects[3], "newsletter", ConsentAction::Grant).await;
    assert_eq!(
        check(&warm, &subjects[3], "newsletter").await.reason,
        Reason::ConsentGranted
    );
}

/// Two replicas on one PostgreSQL database: what one writes, the other's cache answers
/// within `CACHE_MAX_AGE` of the acknowledgement (a Check that *started* later than
/// that never answers the older state), and the writer itself at once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn another_replicas_write_shows_within_the_bound() {
    let Some(db) = TestDb::postgres("consents") else {
        return;
    };
    let replica_a = ConsentStore::open(&db.target, keyring())
        .await
        .expect("open");
    let replica_b = ConsentStore::open(&db.target, keyring())
        .await
        .expect("open");
    assert!(replica_b.cache_ready(Duration::from_secs(5)).await);
    let (a, b) = (with_store(replica_a), with_store(replica_b.clone()));
    let s = uuid::Uuid::now_v7().to_string();
    set_state(&a, &s, SubjectStatus::Active, 1).await;
    let mut version = 1;
    let steps: [(Option<ConsentAction>, Option<SubjectStatus>, Reason); 5] = [
        (Some(ConsentAction::Grant), None, Reason::ConsentGranted),
        (
            Some(ConsentAction::Withdraw),
            None,
            Reason::ConsentWithdrawn,
        ),
        (Some(ConsentAction::Grant), None, Reason::ConsentGranted),
        (
            None,
            Some(SubjectStatus::Restricted),
            Reason::SubjectRestricted,
        ),
        (None, Some(SubjectStatus::Erased), Reason::SubjectErased),
    ];
    let mut converged = vec![];
    for (action, status, want) in steps {
        // B holds the subject in its cache before A writes (the notification of A's
        // previous write may still arrive and empty it: ask again until it holds).
        let filling = Instant::now();
        loop {
            check(&b, &s, "newsletter").await;
            if replica_b.cached_subjects() >= 1 {
                break;
            }
            assert!(filling.elapsed() < Duration::from_secs(5), "B never caches");
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        if let Some(action) = action {
            record(&a, &s, "newsletter", action).await;
        }
        if let Some(status) = status {
            version += 1;
            set_state(&a, &s, status, version).await;
        }
        let acked = Instant::now();
        assert_eq!(check(&a, &s, "newsletter").await.reason, want, "the writer");
        loop {
            let started = acked.elapsed();
            let got = check(&b, &s, "newsletter").await.reason;
            if got == want {
                converged.push(started);
                break;
            }
            assert!(
                started < CACHE_MAX_AGE,
                "B answered {got:?} for {want:?} {started:?} after A's acknowledgement"
            );
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    }
    // The notifications, not the bound's expiry, carried the changes (typically a
    // few milliseconds); printed for the record.
    eprintln!("B converged after {converged:?}");
    db.cleanup().await;
}

fn keyring() -> vern_seal::keyring::Keyring {
    vern_seal::keyring::Keyring::new(
        Some(vern_seal::crypto::MasterKey::from_bytes([7; 32])),
        HashMap::new(),
    )
    .expect("keyring")
}

/// Without LISTEN/NOTIFY (a transaction-mode pooler) a PostgreSQL store keeps no Check
/// cache: another replica's write shows at once.
#[tokio::test]
async fn without_notifications_postgres_reads_the_database() {
    let Some(db) = TestDb::postgres("consents") else {
        return;
    };
    let writer = with_store(
        ConsentStore::open(&db.target, keyring())
            .await
            .expect("open"),
    );
    let store = ConsentStore::open_with(&db.target, keyring(), false)
        .await
        .expect("open");
    assert!(!store.cache_ready(Duration::from_millis(300)).await);
    let reader = with_store(store.clone());
    let s = uuid::Uuid::now_v7().to_string();
    set_state(&writer, &s, SubjectStatus::Active, 1).await;
    assert_eq!(
        check(&reader, &s, "newsletter").await.reason,
        Reason::NoConsent
    );
    record(&writer, &s, "newsletter", ConsentAction::Grant).await;
    assert_eq!(
        check(&reader, &s, "newsletter").await.reason,
        Reason::ConsentGranted
    );
    assert_eq!(store.cached_subjects(), 0);
    assert_eq!(store.cache_stats().hits, 0, "no cache: every Check reads");
    db.cleanup().await;
}

/// BatchCheck of many subjects (one array parameter on PostgreSQL, `IN` on SQLite)
/// answers each subject as Check does, from the cache and from the database.
async fn batch_answers_like_check_on(db: TestDb) {
    let store = ConsentStore::open(&db.target, keyring())
        .await
        .expect("open");
    let c = with_store(store);
    let subjects: Vec<String> = (0..12).map(|_| uuid::Uuid::now_v7().to_string()).collect();
    for (i, s) in subjects.iter().enumerate().skip(1) {
        let status = match i % 4 {
            0 => SubjectStatus::Restricted,
            1 => SubjectStatus::Erased,
            _ => SubjectStatus::Active,
        };
        set_state(&c, s, status, 1).await;
        if i % 3 == 0 && status == SubjectStatus::Active {
            record(&c, s, "newsletter", ConsentAction::Grant).await;
        }
        if i % 5 == 2 {
            record(&c, s, "analytics", ConsentAction::Object).await;
        }
    }
    // subjects[0] was never notified.
    let mut ids = subjects.clone();
    ids.push(subjects[3].clone()); // a repeated id is answered twice
    let fresh = with_store(
        ConsentStore::open_with(&db.target, keyring(), false)
            .await
            .expect("open"),
    );
    for purpose in ["newsletter", "analytics"] {
        // Twice: the first from the database, the second from the cache it filled.
        for round in 0..2 {
            for (who, store) in [("cached", &c), ("uncached", &fresh)] {
                let (batch, _) = store
                    .batch_check(&tenant(), purpose, &ids)
                    .await
                    .expect("batch");
                // Exactly the ids asked, in the order asked (the repeat in its place),
                // whether answered from the cache or from the database.
                assert_eq!(
                    batch.iter().map(|(id, _)| id).collect::<Vec<_>>(),
                    ids.iter().collect::<Vec<_>>(),
                    "{who} round {round}: {purpose}"
                );
                for (id, decision) in &batch {
                    let single = from_db(&db.target, id, purpose).await;
                    assert_eq!(
                        decision.reason, single.reason,
                        "{who} round {round}: {purpose} for {id}"
                    );
                }
            }
        }
    }
    let (batch, _) = c
        .batch_check(&tenant(), "newsletter", &ids)
        .await
        .expect("batch");
    let reasons: Vec<Reason> = batch.iter().map(|(_, d)| d.reason).collect();
    assert!(reasons.contains(&Reason::SubjectUnknown));
    assert!(reasons.contains(&Reason::ConsentGranted));
    assert!(reasons.contains(&Reason::SubjectRestricted));
    assert!(reasons.contains(&Reason::SubjectErased));
    db.cleanup().await;
}

#[tokio::test]
async fn batch_answers_like_check() {
    batch_answers_like_check_on(TestDb::sqlite("consents")).await;
}

#[tokio::test]
async fn batch_answers_like_check_on_postgres() {
    if let Some(db) = TestDb::postgres("consents") {
        batch_answers_like_check_on(db).await;
    }
}
