//! The retention store and use cases (policies, holds, sweeps, Evaluate, the
//! scheduler), on SQLite and on PostgreSQL, with an in-memory stand-in for the other
//! services that applies PurgeRecords' filters as the subjects service does.

use std::collections::HashMap;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use chrono::{DateTime, Utc};
use vern_kit::ApiError;
use vern_kit::context::TenantId;
use vern_kit::db::DbTarget;
use vern_kit::idempotency::Key;
use vern_retention::domain::{
    Action, Anchor, DataCategory, Disposition, HoldInput, HoldScope, PolicyInput, RecordInfo,
    SweepStatus, SweepTrigger,
};
use vern_retention::error::RetentionError;
use vern_retention::remote::{
    EraseCall, PurgeCall, PurgeOutcome, PurgedRecord, SubjectSnapshot, Upstream, Withdrawal,
};
use vern_retention::service::Retention;
use vern_retention::store::{PolicyFilter, RetentionStore};
use vern_retention::sweep::{Scheduler, SweepRequest};

vern_kit::store_test_suite!("retention":
    policy_crud_with_mask_pagination_and_isolation,
    policies_need_known_purposes_and_valid_fields,
    request_id_makes_writes_idempotent,
    holds_lifecycle,
    dry_run_lists_expired_and_real_sweep_deletes,
    holds_exclude_subjects_and_tenant_hold_skips,
    longer_legal_duty_keeps_records,
    consent_withdrawn_and_erasure_leftovers,
    records_kept_after_erasure_are_decided_again_when_their_end_passes,
    one_sweep_per_tenant_at_a_time,
    a_dead_sweep_is_taken_over,
    evaluate_decides_per_record,
    scheduler_sweeps_and_stops,
    two_schedulers_sweep_each_interval_once,
    an_interrupted_sweep_is_recorded_and_the_next_interval_runs,
    a_stopped_scheduler_records_its_sweep_interrupted,
);

#[derive(Clone, Debug)]
struct FakeRecord {
    tenant: String,
    subject: String,
    info: RecordInfo,
    relationship_end: Option<DateTime<Utc>>,
}

/// Tenants, subjects and consents in memory.
#[derive(Default)]
struct Fake {
    purposes: Vec<(String, String)>,
    records: Mutex<Vec<FakeRecord>>,
    withdrawals: Mutex<Vec<(String, Withdrawal)>>,
    purge_calls: AtomicUsize,
    /// Each purge call waits this long (to hold a sweep open).
    purge_delay: Mutex<Duration>,
    /// EraseSubject calls, in order.
    erase_calls: Mutex<Vec<EraseCall>>,
}

fn matches(r: &FakeRecord, tenant: &str, c: &PurgeCall) -> bool {
    let i = &r.info;
    r.tenant == tenant
        && c.category.is_none_or(|x| Some(x) == i.category)
        && c.purpose
            .as_ref()
            .is_none_or(|p| i.purposes.iter().any(|x| x == p))
        && c.field.as_ref().is_none_or(|f| f == &i.field)
        && c.older_than.is_none_or(|t| i.collected_at < t)
        && (c.subject_ids.is_empty() || c.subject_ids.contains(&r.subject))
        && !c.exclude_subject_ids.contains(&r.subject)
        && c.relationship_end_before
            .is_none_or(|t| r.relationship_end.is_some_and(|e| e < t))
        && match c.retain_until_before {
            Some(t) => {
                i.restricted
                    && match i.retain_until {
                        Some(u) => u < t,
                        None => c.include_open_ended,
                    }
            }
            None => !i.restricted,
        }
}

#[async_trait::async_trait]
impl Upstream for Fake {
    async fn purpose_exists(&self, tenant: &str, key: &str) -> Result<bool, RetentionError> {
        Ok(self.purposes.iter().any(|(t, k)| t == tenant && k == key))
    }

    async fn subject(
        &self,
        tenant: &str,
        subject_id: &str,
    ) -> Result<Option<SubjectSnapshot>, RetentionError> {
        let all = self.records.lock().expect("lock");
        let mine: Vec<&FakeRecord> = all
            .iter()
            .filter(|r| r.tenant == tenant && r.subject == subject_id)
            .collect();
        if mine.is_empty() {
            return Ok(None);
        }
        Ok(Some(SubjectSnapshot {
            relationship_end: mine[0].relationship_end,
            records: mine.iter().map(|r| r.info.clone()).collect(),
        }))
    }

    async fn withdrawals(
        &self,
        tenant: &str,
        subject_id: Option<&str>,
        purpose: Option<&str>,
        before: Option<DateTime<Utc>>,
    ) -> Result<Vec<Withdrawal>, RetentionError> {
        Ok(self
            .withdrawals
            .lock()
            .expect("lock")
            .iter()
            .filter(|(t, w)| {
                t == tenant
                    && subject_id.is_none_or(|s| s == w.subject_id)
                    && purpose.is_none_or(|p| p == w.purpose)
                    && before.is_none_or(|b| w.time < b)
            })
            .map(|(_, w)| w.clone())
            .collect())
    }

    async fn purge(&self, tenant: &str, call: PurgeCall) -> Result<PurgeOutcome, RetentionError> {
        self.purge_calls.fetch_add(1, Ordering::SeqCst);
        let delay = *self.purge_delay.lock().expect("lock");
        if !delay.is_zero() {
            tokio::time::sleep(delay).await;
        }
        assert!(
            call.older_than.is_some() || call.retain_until_before.is_some(),
            "PurgeRecords needs a time filter"
        );
        assert!(call.limit > 0);
        let mut all = self.records.lock().expect("lock");
        let hits: Vec<FakeRecord> = all
            .iter()
            .filter(|r| matches(r, tenant, &call))
            .cloned()
            .collect();
        let limit = call.limit as usize;
        let item = |r: &FakeRecord| PurgedRecord {
            subject_id: r.subject.clone(),
            record_id: r.info.record_id.clone(),
            category: r.info.category,
            field: r.info.field.clone(),
            purposes: r.info.purposes.clone(),
            collected_at: r.info.collected_at,
        };
        if call.dry_run {
            return Ok(PurgeOutcome {
                matched_count: hits.len() as i64,
                purged_count: 0,
                items: hits.iter().take(limit).map(item).collect(),
                truncated: hits.len() > limit,
            });
        }
        let gone: Vec<String> = hits
            .iter()
            .take(limit)
            .map(|r| r.info.record_id.clone())
            .collect();
        all.retain(|r| !gone.contains(&r.info.record_id));
        Ok(PurgeOutcome {
            matched_count: gone.len() as i64,
            purged_count: gone.len() as i64,
            items: vec![],
            truncated: hits.len() > limit,
        })
    }

    async fn erase(&self, tenant: &str, call: EraseCall) -> Result<i64, RetentionError> {
        Ok(self.erase_now(tenant, &call))
    }
}

impl Fake {
    /// EraseSubject as the subjects service does it: every record not retained goes,
    /// the retained ones are kept restricted with their (new) end.
    fn erase_now(&self, tenant: &str, call: &EraseCall) -> i64 {
        let mut all = self.records.lock().expect("lock");
        let before = all.len();
        all.retain(|r| {
            r.tenant != tenant
                || r.subject != call.subject_id
                || call.retain.iter().any(|k| k.record_id == r.info.record_id)
        });
        let erased = (before - all.len()) as i64;
        for r in all.iter_mut() {
            if let Some(k) = call.retain.iter().find(|k| k.record_id == r.info.record_id) {
                r.info.restricted = true;
                r.info.retain_until = k.retain_until;
                r.info.legal_reference = k.legal_reference.clone();
            }
        }
        self.erase_calls.lock().expect("lock").push(call.clone());
        erased
    }

    fn with_purposes(tenant: &str, keys: &[&str]) -> Self {
        Fake {
            purposes: keys
                .iter()
                .map(|k| (tenant.to_owned(), k.to_string()))
                .collect(),
            ..Default::default()
        }
    }

    fn add(
        &self,
        tenant: &str,
        subject: &str,
        category: DataCategory,
        field: &str,
        purposes: &[&str],
        collected_at: DateTime<Utc>,
    ) -> String {
        let id = uuid::Uuid::now_v7().to_string();
        self.records.lock().expect("lock").push(FakeRecord {
            tenant: tenant.into(),
            subject: subject.into(),
            info: RecordInfo {
                record_id: id.clone(),
                category: Some(category),
                field: field.into(),
                purposes: purposes.iter().map(|s| s.to_string()).collect(),
                collected_at,
                restricted: false,
                retain_until: None,
                legal_reference: String::new(),
            },
            relationship_end: None,
        });
        id
    }

    fn ids(&self) -> Vec<String> {
        self.records
            .lock()
            .expect("lock")
            .iter()
            .map(|r| r.info.record_id.clone())
            .collect()
    }
}

async fn setup(target: DbTarget, fake: Fake) -> (Retention, Arc<Fake>) {
    let store = RetentionStore::open(&target).await.expect("open store");
    let fake = Arc::new(fake);
    (Retention::new(store, fake.clone()), fake)
}

fn tenant(t: &str) -> TenantId {
    TenantId::new(t)
}

fn ago(days: i64) -> DateTime<Utc> {
    vern_kit::time::now() - chrono::Duration::days(days)
}

fn mail_policy() -> PolicyInput {
    PolicyInput {
        name: "E-mail correspondence".into(),
        category: Some(DataCategory::Communications),
        purpose: "correspondence".into(),
        field: "email-correspondence".into(),
        period: "P1Y".into(),
        anchor: Some(Anchor::CollectedAt),
        action: Some(Action::Delete),
        legal_reference: "GDPR Art. 5(1)(e)".into(),
        legal_duty: false,
    }
}

fn books_policy() -> PolicyInput {
    PolicyInput {
        name: "Bookkeeping documentation".into(),
        category: Some(DataCategory::Financial),
        purpose: "bookkeeping".into(),
        field: String::new(),
        period: "P5Y".into(),
        anchor: Some(Anchor::EndOfFinancialYear),
        action: Some(Action::Delete),
        legal_reference: "bokføringsloven § 13".into(),
        legal_duty: true,
    }
}

fn sweep(dry_run: bool) -> SweepRequest {
    SweepRequest {
        dry_run,
        policy_ids: vec![],
        max_items: 0,
        trigger: SweepTrigger::OnDemand,
        requested_by: "tester".into(),
        slot: None,
    }
}

fn key(t: &str, id: &str, method: &'static str, body: &[u8]) -> Option<Key> {
    Key::new(Some(t), id, method, body)
}

async fn policy_crud_with_mask_pagination_and_isolation(target: DbTarget) {
    let mut fake = Fake::with_purposes("kultur", &["correspondence", "bookkeeping"]);
    fake.purposes
        .push(("okorad".into(), "correspondence".into()));
    let (r, _) = setup(target, fake).await;
    let k = tenant("kultur");
    let mail = r
        .create_policy(&k, mail_policy(), None)
        .await
        .expect("create");
    assert_eq!(mail.spec.period.to_string(), "P1Y");
    let books = r
        .create_policy(&k, books_policy(), None)
        .await
        .expect("create");
    let other = r
        .create_policy(&tenant("okorad"), mail_policy(), None)
        .await
        .expect("create other tenant");
    // Pages in creation order; tenant isolation.
    let p1 = r
        .list_policies(&k, None, 1, PolicyFilter::default())
        .await
        .expect("list");
    assert_eq!(p1.items.len(), 1);
    assert!(p1.more);
    assert_eq!(p1.items[0].policy_id, mail.policy_id);
    let p2 = r
        .list_policies(&k, Some(&mail.policy_id), 10, PolicyFilter::default())
        .await
        .expect("list");
    assert_eq!(
        p2.items.iter().map(|p| &p.policy_id).collect::<Vec<_>>(),
        vec![&books.policy_id]
    );
    assert!(!p2.more);
    let by_cat = r
        .list_policies(
            &k,
            None,
            10,
            PolicyFilter {
                category: Some(DataCategory::Financial),
                purpose: None,
            },
        )
        .await
        .expect("list");
    assert_eq!(by_cat.items.len(), 1);
    assert!(matches!(
        r.get_policy(&k, &other.policy_id).await,
        Err(RetentionError::PolicyNotFound)
    ));
    // Update by mask: only the named fields change.
    let changes = PolicyInput {
        period: "P18M".into(),
        name: "ignored".into(),
        ..Default::default()
    };
    let updated = r
        .update_policy(&k, &mail.policy_id, &["period".into()], changes, None)
        .await
        .expect("update");
    assert_eq!(updated.spec.period.to_string(), "P18M");
    assert_eq!(updated.spec.name, "E-mail correspondence");
    assert!(updated.update_time > mail.update_time);
    let bad = r
        .update_policy(
            &k,
            &mail.policy_id,
            &["anchor".into()],
            PolicyInput::default(),
            None,
        )
        .await;
    assert!(
        matches!(&bad, Err(RetentionError::Api(ApiError::InvalidArgument(v))) if v[0].field == "policy.anchor"),
        "{bad:?}"
    );
    assert!(
        r.update_policy(
            &k,
            &mail.policy_id,
            &["tenant_id".into()],
            PolicyInput::default(),
            None
        )
        .await
        .is_err()
    );
    // Delete; others unaffected; foreign tenant cannot delete.
    let err = r
        .delete_policy(&tenant("okorad"), &mail.policy_id, None)
        .await
        .expect_err("foreign tenant");
    assert_eq!(tonic::Status::from(err).code(), tonic::Code::NotFound);
    r.delete_policy(&k, &mail.policy_id, None)
        .await
        .expect("delete");
    assert!(matches!(
        r.get_policy(&k, &mail.policy_id).await,
        Err(RetentionError::PolicyNotFound)
    ));
    assert!(
        r.get_policy(&tenant("okorad"), &other.policy_id)
            .await
            .is_ok()
    );
    assert_eq!(
        r.store().tenants_with_policies().await.expect("tenants"),
        vec!["kultur".to_string(), "okorad".to_string()]
    );
}

async fn policies_need_known_purposes_and_valid_fields(target: DbTarget) {
    let (r, _) = setup(target, Fake::with_purposes("kultur", &["bookkeeping"])).await;
    let k = tenant("kultur");
    let err = r.create_policy(&k, mail_policy(), None).await;
    assert!(
        matches!(err, Err(RetentionError::UnknownPurpose("purpose"))),
        "{err:?}"
    );
    let mut bad = books_policy();
    bad.period = "5 years".into();
    bad.legal_reference = String::new();
    match r.create_policy(&k, bad, None).await {
        Err(RetentionError::Api(ApiError::InvalidArgument(v))) => {
            let fields: Vec<&str> = v.iter().map(|f| f.field.as_str()).collect();
            assert!(fields.contains(&"period"), "{fields:?}");
            assert!(fields.contains(&"legal_reference"), "{fields:?}");
        }
        other => panic!("expected invalid argument, got {other:?}"),
    }
    assert!(
        r.list_policies(&k, None, 10, PolicyFilter::default())
            .await
            .expect("list")
            .items
            .is_empty()
    );
}

async fn request_id_makes_writes_idempotent(target: DbTarget) {
    let (r, _) = setup(target, Fake::with_purposes("kultur", &["bookkeeping"])).await;
    let k = tenant("kultur");
    let a = r
        .create_policy(
            &k,
            books_policy(),
            key("kultur", "req-1", "CreatePolicy", b"x"),
        )
        .await
        .expect("create");
    let b = r
        .create_policy(
            &k,
            books_policy(),
            key("kultur", "req-1", "CreatePolicy", b"x"),
        )
        .await
        .expect("retry");
    assert_eq!(a, b);
    assert_eq!(
        r.list_policies(&k, None, 10, PolicyFilter::default())
            .await
            .expect("list")
            .items
            .len(),
        1
    );
    let reuse = r
        .create_policy(
            &k,
            books_policy(),
            key("kultur", "req-1", "CreatePolicy", b"y"),
        )
        .await;
    assert!(matches!(
        reuse,
        Err(RetentionError::Api(ApiError::FailedPrecondition(_)))
    ));
    // Deleting twice with the same id answers the same.
    r.delete_policy(
        &k,
        &a.policy_id,
        key("kultur", "del-1", "DeletePolicy", b"d"),
    )
    .await
    .expect("delete");
    r.delete_policy(
        &k,
        &a.policy_id,
        key("kultur", "del-1", "DeletePolicy", b"d"),
    )
    .await
    .expect("retried delete");
    // RunSweep: a retry returns the run the first call started.
    let s1 = r
        .run_sweep(
            &k,
            sweep(true),
            key("kultur", "sw-1", "RunSweep", b"s"),
            None,
        )
        .await
        .expect("sweep");
    let s2 = r
        .run_sweep(
            &k,
            sweep(true),
            key("kultur", "sw-1", "RunSweep", b"s"),
            None,
        )
        .await
        .expect("retry");
    assert_eq!(s1.sweep_run_id, s2.sweep_run_id);
    assert_eq!(s2.status, SweepStatus::Succeeded);
    let runs = r
        .store()
        .list_runs("kultur", None, 10, false)
        .await
        .expect("runs");
    assert_eq!(runs.items.len(), 1);
}

async fn holds_lifecycle(target: DbTarget) {
    let (r, fake) = setup(target, Fake::default()).await;
    let k = tenant("kultur");
    let subject = uuid::Uuid::new_v4().to_string();
    let second = uuid::Uuid::new_v4().to_string();
    for s in [&subject, &second] {
        fake.add(
            "kultur",
            s,
            DataCategory::Contact,
            "email",
            &[],
            vern_kit::time::now(),
        );
    }
    // A subject the tenant does not hold (another department's, a typo) is refused.
    let foreign = uuid::Uuid::new_v4().to_string();
    fake.add(
        "other-dept",
        &foreign,
        DataCategory::Contact,
        "email",
        &[],
        vern_kit::time::now(),
    );
    let err = r
        .place_hold(
            &k,
            HoldInput {
                scope: Some(HoldScope::Subject),
                subject_id: foreign.clone(),
                reason: "case 2026/18".into(),
                end_time: None,
            },
            "officer",
            None,
        )
        .await
        .expect_err("unknown in the tenant");
    assert!(matches!(err, RetentionError::SubjectNotFound), "{err:?}");
    let h1 = r
        .place_hold(
            &k,
            HoldInput {
                scope: Some(HoldScope::Subject),
                subject_id: subject.clone(),
                reason: "case 2026/17".into(),
                end_time: None,
            },
            "officer",
            None,
        )
        .await
        .expect("place");
    assert_eq!(h1.placed_by, "officer");
    let h2 = r
        .place_hold(
            &k,
            HoldInput {
                scope: Some(HoldScope::Tenant),
                subject_id: String::new(),
                reason: "audit by Datatilsynet".into(),
                end_time: Some(vern_kit::time::now() + chrono::Duration::days(30)),
            },
            "admin",
            None,
        )
        .await
        .expect("place");
    let other = r
        .place_hold(
            &k,
            HoldInput {
                scope: Some(HoldScope::Subject),
                subject_id: second.clone(),
                reason: "case 2".into(),
                end_time: None,
            },
            "officer",
            None,
        )
        .await
        .expect("place");
    // Newest first; a subject filter includes tenant-wide holds.
    let all = r.list_holds(&k, None, 10, "", false).await.expect("list");
    assert_eq!(
        all.items.iter().map(|h| &h.hold_id).collect::<Vec<_>>(),
        vec![&other.hold_id, &h2.hold_id, &h1.hold_id]
    );
    let mine = r
        .list_holds(&k, None, 10, &subject, false)
        .await
        .expect("list");
    assert_eq!(mine.items.len(), 2);
    let page = r.list_holds(&k, None, 2, "", false).await.expect("list");
    assert!(page.more);
    let rest = r
        .list_holds(&k, Some(&page.items[1].hold_id), 2, "", false)
        .await
        .expect("list");
    assert_eq!(rest.items.len(), 1);
    // Release; released holds leave the active list but stay listable.
    let released = r
        .release_hold(&k, &h1.hold_id, "case closed", "officer2", None)
        .await
        .expect("release");
    assert!(released.release_time.is_some());
    assert_eq!(released.released_by, "officer2");
    assert!(matches!(
        r.release_hold(&k, &h1.hold_id, "again", "x", None).await,
        Err(RetentionError::HoldReleased)
    ));
    assert_eq!(
        r.list_holds(&k, None, 10, "", false)
            .await
            .expect("l")
            .items
            .len(),
        2
    );
    assert_eq!(
        r.list_holds(&k, None, 10, "", true)
            .await
            .expect("l")
            .items
            .len(),
        3
    );
    assert!(matches!(
        r.get_hold(&tenant("okorad"), &h2.hold_id).await,
        Err(RetentionError::HoldNotFound)
    ));
    assert!(
        r.place_hold(
            &k,
            HoldInput {
                scope: Some(HoldScope::Subject),
                subject_id: subject,
                reason: "x".into(),
                end_time: Some(ago(1)),
            },
            "o",
            None
        )
        .await
        .is_err(),
        "end_time in the past"
    );
}

async fn dry_run_lists_expired_and_real_sweep_deletes(target: DbTarget) {
    let fake = Fake::with_purposes("kultur", &["correspondence", "bookkeeping"]);
    let s1 = uuid::Uuid::new_v4().to_string();
    let old_mail = fake.add(
        "kultur",
        &s1,
        DataCategory::Communications,
        "email-correspondence",
        &["correspondence"],
        ago(730),
    );
    let new_mail = fake.add(
        "kultur",
        &s1,
        DataCategory::Communications,
        "email-correspondence",
        &["correspondence"],
        ago(30),
    );
    let invoice = fake.add(
        "kultur",
        &s1,
        DataCategory::Financial,
        "invoice",
        &["bookkeeping"],
        ago(60),
    );
    let foreign = fake.add(
        "okorad",
        &s1,
        DataCategory::Communications,
        "email-correspondence",
        &["correspondence"],
        ago(730),
    );
    let (r, fake) = setup(target, fake).await;
    let k = tenant("kultur");
    let mail = r.create_policy(&k, mail_policy(), None).await.expect("p");
    let books = r.create_policy(&k, books_policy(), None).await.expect("p");
    let dry = r.run_sweep(&k, sweep(true), None, None).await.expect("dry");
    assert_eq!(dry.status, SweepStatus::Succeeded);
    assert!(dry.dry_run);
    assert_eq!(dry.items.len(), 1, "{:?}", dry.items);
    let item = &dry.items[0];
    assert_eq!(item.record_id, old_mail);
    assert_eq!(item.policy_id, mail.policy_id);
    assert!(
        item.reason.starts_with("P1Y from COLLECTED_AT ended ")
            && item.reason.ends_with("(E-mail correspondence)"),
        "{}",
        item.reason
    );
    assert!(item.expire_time.is_some());
    let mail_result = dry
        .policy_results
        .iter()
        .find(|p| p.policy_id == mail.policy_id)
        .expect("mail result");
    assert_eq!(
        (mail_result.matched_count, mail_result.deleted_count),
        (1, 0)
    );
    let books_result = dry
        .policy_results
        .iter()
        .find(|p| p.policy_id == books.policy_id)
        .expect("books result");
    assert_eq!(books_result.matched_count, 0);
    assert_eq!(fake.ids().len(), 4, "a dry run changes nothing");
    // Stored with its items.
    let stored = r
        .store()
        .get_run("kultur", &dry.sweep_run_id)
        .await
        .expect("get")
        .expect("run");
    assert_eq!(stored.items, dry.items);
    // The real sweep.
    let real = r
        .run_sweep(&k, sweep(false), None, None)
        .await
        .expect("real");
    assert_eq!(real.status, SweepStatus::Succeeded);
    assert!(real.items.is_empty());
    let mail_result = real
        .policy_results
        .iter()
        .find(|p| p.policy_id == mail.policy_id)
        .expect("mail result");
    assert_eq!(
        (mail_result.matched_count, mail_result.deleted_count),
        (1, 1)
    );
    let left = fake.ids();
    assert!(!left.contains(&old_mail));
    assert!(left.contains(&new_mail) && left.contains(&invoice) && left.contains(&foreign));
    let again = r.run_sweep(&k, sweep(true), None, None).await.expect("dry");
    assert!(again.items.is_empty());
    // max_items cuts the list but not the counts.
    for _ in 0..3 {
        fake.add(
            "kultur",
            &s1,
            DataCategory::Communications,
            "email-correspondence",
            &["correspondence"],
            ago(800),
        );
    }
    let mut req = sweep(true);
    req.max_items = 2;
    let cut = r.run_sweep(&k, req, None, None).await.expect("dry");
    assert_eq!(cut.items.len(), 2);
    assert!(cut.items_truncated);
    assert_eq!(cut.policy_results[0].matched_count, 3);
    // Only the named policies.
    let mut req = sweep(true);
    req.policy_ids = vec![books.policy_id.clone()];
    let only = r.run_sweep(&k, req, None, None).await.expect("dry");
    assert_eq!(only.policy_results.len(), 1);
    assert!(only.items.is_empty());
    let mut req = sweep(true);
    req.policy_ids = vec![uuid::Uuid::new_v4().to_string()];
    assert!(matches!(
        r.run_sweep(&k, req, None, None).await,
        Err(RetentionError::Api(ApiError::InvalidArgument(_)))
    ));
    let list = r
        .store()
        .list_runs("kultur", None, 10, true)
        .await
        .expect("runs");
    assert_eq!(list.items.len(), 1, "only the real run");
    assert!(list.items[0].items.is_empty());
}

async fn holds_exclude_subjects_and_tenant_hold_skips(target: DbTarget) {
    let fake = Fake::with_purposes("kultur", &["correspondence"]);
    let held = uuid::Uuid::new_v4().to_string();
    let free = uuid::Uuid::new_v4().to_string();
    for s in [&held, &free] {
        fake.add(
            "kultur",
            s,
            DataCategory::Communications,
            "email-correspondence",
            &["correspondence"],
            ago(730),
        );
    }
    let (r, fake) = setup(target, fake).await;
    let k = tenant("kultur");
    r.create_policy(&k, mail_policy(), None).await.expect("p");
    let hold = r
        .place_hold(
            &k,
            HoldInput {
                scope: Some(HoldScope::Subject),
                subject_id: held.clone(),
                reason: "case".into(),
                end_time: None,
            },
            "o",
            None,
        )
        .await
        .expect("hold");
    let dry = r.run_sweep(&k, sweep(true), None, None).await.expect("dry");
    assert_eq!(dry.items.len(), 1);
    assert_eq!(dry.items[0].subject_id, free);
    assert_eq!(dry.held_subject_count, 1);
    assert_eq!(
        (
            dry.policy_results[0].matched_count,
            dry.policy_results[0].kept_count
        ),
        (2, 1)
    );
    let tenant_hold = r
        .place_hold(
            &k,
            HoldInput {
                scope: Some(HoldScope::Tenant),
                subject_id: String::new(),
                reason: "litigation".into(),
                end_time: None,
            },
            "o",
            None,
        )
        .await
        .expect("hold");
    let skipped = r
        .run_sweep(&k, sweep(false), None, None)
        .await
        .expect("run");
    assert_eq!(skipped.status, SweepStatus::SkippedHold);
    assert_eq!(fake.ids().len(), 2, "nothing swept under a tenant hold");
    r.release_hold(&k, &tenant_hold.hold_id, "done", "o", None)
        .await
        .expect("release");
    let real = r
        .run_sweep(&k, sweep(false), None, None)
        .await
        .expect("run");
    assert_eq!(real.policy_results[0].deleted_count, 1);
    assert_eq!(real.policy_results[0].kept_count, 1);
    assert_eq!(fake.ids().len(), 1, "the held subject's record stays");
    r.release_hold(&k, &hold.hold_id, "done", "o", None)
        .await
        .expect("release");
    let real = r
        .run_sweep(&k, sweep(false), None, None)
        .await
        .expect("run");
    assert_eq!(real.policy_results[0].deleted_count, 1);
    assert!(fake.ids().is_empty());
}

async fn longer_legal_duty_keeps_records(target: DbTarget) {
    let fake = Fake::with_purposes("kultur", &["bookkeeping", "customer"]);
    let s = uuid::Uuid::new_v4().to_string();
    // A contact record also processed for bookkeeping, two years old: the P1Y maximum
    // has passed, the P5Y bookkeeping duty has not.
    let both = fake.add(
        "kultur",
        &s,
        DataCategory::Contact,
        "address",
        &["customer", "bookkeeping"],
        ago(730),
    );
    let plain = fake.add(
        "kultur",
        &s,
        DataCategory::Contact,
        "phone",
        &["customer"],
        ago(730),
    );
    let ancient = fake.add(
        "kultur",
        &s,
        DataCategory::Contact,
        "address",
        &["customer", "bookkeeping"],
        ago(365 * 8),
    );
    let (r, fake) = setup(target, fake).await;
    let k = tenant("kultur");
    let contact = r
        .create_policy(
            &k,
            PolicyInput {
                name: "Customer contact data".into(),
                category: Some(DataCategory::Contact),
                purpose: "customer".into(),
                period: "P1Y".into(),
                anchor: Some(Anchor::CollectedAt),
                action: Some(Action::Delete),
                legal_reference: "GDPR Art. 5(1)(e)".into(),
                ..Default::default()
            },
            None,
        )
        .await
        .expect("p");
    r.create_policy(
        &k,
        PolicyInput {
            name: "Bookkeeping".into(),
            category: None,
            purpose: "bookkeeping".into(),
            period: "P5Y".into(),
            anchor: Some(Anchor::EndOfFinancialYear),
            action: Some(Action::Delete),
            legal_reference: "bokføringsloven § 13".into(),
            legal_duty: true,
            ..Default::default()
        },
        None,
    )
    .await
    .expect("p");
    let dry = r.run_sweep(&k, sweep(true), None, None).await.expect("dry");
    let res = dry
        .policy_results
        .iter()
        .find(|p| p.policy_id == contact.policy_id)
        .expect("result");
    assert_eq!(res.matched_count, 3);
    // The duty overlaps only partly (another purpose, any category): the rule keeps
    // the contact policy's records until the duty has ended too (documented,
    // conservative: the phone record is kept as well).
    let listed: Vec<&str> = dry.items.iter().map(|i| i.record_id.as_str()).collect();
    assert_eq!(listed, vec![ancient.as_str()]);
    assert_eq!(res.kept_count, 2);
    r.run_sweep(&k, sweep(false), None, None)
        .await
        .expect("real");
    let left = fake.ids();
    assert!(left.contains(&both), "never swept before the duty ends");
    assert!(!left.contains(&ancient));
    assert!(left.contains(&plain));
}

async fn consent_withdrawn_and_erasure_leftovers(target: DbTarget) {
    let fake = Fake::with_purposes("kultur", &["newsletter"]);
    let gone = uuid::Uuid::new_v4().to_string();
    let recent = uuid::Uuid::new_v4().to_string();
    let active = uuid::Uuid::new_v4().to_string();
    for s in [&gone, &recent, &active] {
        fake.add(
            "kultur",
            s,
            DataCategory::Contact,
            "email",
            &["newsletter"],
            ago(400),
        );
    }
    fake.withdrawals.lock().expect("lock").extend([
        (
            "kultur".to_string(),
            Withdrawal {
                subject_id: gone.clone(),
                purpose: "newsletter".into(),
                time: ago(60),
            },
        ),
        (
            "kultur".to_string(),
            Withdrawal {
                subject_id: recent.clone(),
                purpose: "newsletter".into(),
                time: ago(5),
            },
        ),
    ]);
    // A record kept after an erasure whose duty ended yesterday, and one still due.
    let erased = uuid::Uuid::new_v4().to_string();
    let leftover = fake.add(
        "kultur",
        &erased,
        DataCategory::Financial,
        "invoice",
        &["newsletter"],
        ago(3000),
    );
    let kept = fake.add(
        "kultur",
        &erased,
        DataCategory::Financial,
        "invoice2",
        &["newsletter"],
        ago(300),
    );
    for r in fake.records.lock().expect("lock").iter_mut() {
        if r.info.record_id == leftover {
            r.info.restricted = true;
            r.info.retain_until = Some(ago(1));
        }
        if r.info.record_id == kept {
            r.info.restricted = true;
            r.info.retain_until = Some(ago(-100));
        }
    }
    let (r, fake) = setup(target, fake).await;
    let k = tenant("kultur");
    r.create_policy(
        &k,
        PolicyInput {
            name: "Newsletter after withdrawal".into(),
            purpose: "newsletter".into(),
            period: "P30D".into(),
            anchor: Some(Anchor::ConsentWithdrawn),
            action: Some(Action::Anonymise),
            legal_reference: "GDPR Art. 17(1)(b)".into(),
            ..Default::default()
        },
        None,
    )
    .await
    .expect("p");
    let dry = r.run_sweep(&k, sweep(true), None, None).await.expect("dry");
    let subjects: Vec<&str> = dry.items.iter().map(|i| i.subject_id.as_str()).collect();
    assert_eq!(subjects.len(), 2, "{:?}", dry.items);
    assert!(subjects.contains(&gone.as_str()));
    assert!(
        subjects.contains(&erased.as_str()),
        "the leftover after erasure"
    );
    let after = dry
        .policy_results
        .iter()
        .find(|p| p.policy_id.is_empty())
        .expect("erasure leftovers result");
    assert_eq!(after.matched_count, 1);
    let real = r
        .run_sweep(&k, sweep(false), None, None)
        .await
        .expect("real");
    assert_eq!(real.policy_results[0].anonymised_count, 1);
    assert_eq!(real.policy_results[0].deleted_count, 0);
    let left = fake.ids();
    assert_eq!(
        left.len(),
        3,
        "recent and active subjects' records and the still-kept one"
    );
    assert!(left.contains(&kept) && !left.contains(&leftover));
}

async fn one_sweep_per_tenant_at_a_time(target: DbTarget) {
    let fake = Fake::with_purposes("kultur", &["correspondence"]);
    *fake.purge_delay.lock().expect("lock") = Duration::from_millis(400);
    let (r, _) = setup(target, fake).await;
    let k = tenant("kultur");
    r.create_policy(&k, mail_policy(), None).await.expect("p");
    let r2 = r.clone();
    let first = tokio::spawn(async move {
        r2.run_sweep(&tenant("kultur"), sweep(true), None, None)
            .await
    });
    tokio::time::sleep(Duration::from_millis(150)).await;
    let second = r.run_sweep(&k, sweep(true), None, None).await;
    assert!(
        matches!(second, Err(RetentionError::SweepRunning)),
        "{second:?}"
    );
    let status: tonic::Status = second.err().map(tonic::Status::from).expect("status");
    assert_eq!(status.code(), tonic::Code::FailedPrecondition);
    // Another tenant is not blocked.
    assert!(
        r.run_sweep(&tenant("okorad"), sweep(true), None, None)
            .await
            .is_ok()
    );
    let first = first.await.expect("join").expect("first sweep");
    assert_eq!(first.status, SweepStatus::Succeeded);
    assert!(
        r.run_sweep(&k, sweep(true), None, None).await.is_ok(),
        "free again"
    );
}

async fn evaluate_decides_per_record(target: DbTarget) {
    let fake = Fake::with_purposes("kultur", &["correspondence", "bookkeeping"]);
    let s = uuid::Uuid::new_v4().to_string();
    let mail = fake.add(
        "kultur",
        &s,
        DataCategory::Communications,
        "email-correspondence",
        &["correspondence"],
        ago(730),
    );
    let invoice_time = ago(60);
    let invoice = fake.add(
        "kultur",
        &s,
        DataCategory::Financial,
        "invoice",
        &["bookkeeping"],
        invoice_time,
    );
    let (r, _) = setup(target, fake).await;
    let k = tenant("kultur");
    r.create_policy(&k, mail_policy(), None).await.expect("p");
    let books = r.create_policy(&k, books_policy(), None).await.expect("p");
    let e = r.evaluate(&k, &s, None).await.expect("evaluate");
    let by_id: HashMap<&str, &vern_retention::domain::Decision> = e
        .decisions
        .iter()
        .map(|(rec, d)| (rec.record_id.as_str(), d))
        .collect();
    assert_eq!(by_id[mail.as_str()].disposition, Disposition::Expired);
    let d = by_id[invoice.as_str()];
    assert_eq!(d.disposition, Disposition::MustKeep);
    assert_eq!(d.legal_reference, "bokføringsloven § 13");
    assert_eq!(d.policy_id.as_deref(), Some(books.policy_id.as_str()));
    use chrono::Datelike;
    let until = vern_retention::domain::start_of_year(invoice_time.year() + 6);
    assert_eq!(d.retain_until, until);
    assert!(e.any_kept);
    assert_eq!(e.retain_until, until);
    // A subject hold makes every record HELD.
    let hold = r
        .place_hold(
            &k,
            HoldInput {
                scope: Some(HoldScope::Subject),
                subject_id: s.clone(),
                reason: "case".into(),
                end_time: None,
            },
            "o",
            None,
        )
        .await
        .expect("hold");
    let e = r.evaluate(&k, &s, None).await.expect("evaluate");
    assert!(
        e.decisions
            .iter()
            .all(|(_, d)| d.disposition == Disposition::Held)
    );
    assert_eq!(e.holds.len(), 1);
    assert_eq!(e.holds[0].hold_id, hold.hold_id);
    assert_eq!(e.retain_until, None, "open-ended hold");
    assert!(matches!(
        r.evaluate(&tenant("okorad"), &s, None).await,
        Err(RetentionError::SubjectNotFound)
    ));
}

async fn scheduler_sweeps_and_stops(target: DbTarget) {
    let fake = Fake::with_purposes("kultur", &["correspondence"]);
    let s = uuid::Uuid::new_v4().to_string();
    fake.add(
        "kultur",
        &s,
        DataCategory::Communications,
        "email-correspondence",
        &["correspondence"],
        ago(730),
    );
    let (r, fake) = setup(target, fake).await;
    r.create_policy(&tenant("kultur"), mail_policy(), None)
        .await
        .expect("p");
    let handle = Scheduler::new(r.clone(), None, Duration::from_millis(100)).spawn();
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    loop {
        let runs = r
            .store()
            .list_runs("kultur", None, 10, false)
            .await
            .expect("runs");
        if let Some(run) = runs.items.iter().find(|x| x.status != SweepStatus::Running) {
            assert_eq!(run.trigger, SweepTrigger::Scheduled);
            assert!(run.requested_by.is_empty());
            assert_eq!(run.policy_results[0].deleted_count, 1);
            break;
        }
        assert!(std::time::Instant::now() < deadline, "no scheduled run");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(fake.ids().is_empty());
    tokio::time::timeout(Duration::from_secs(5), handle.stop())
        .await
        .expect("the scheduler stops");
    let calls = fake.purge_calls.load(Ordering::SeqCst);
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(
        fake.purge_calls.load(Ordering::SeqCst),
        calls,
        "no sweep after stop"
    );
    // A dropped handle stops the loop too.
    let dropped = Scheduler::new(r.clone(), None, Duration::from_millis(50)).spawn();
    drop(dropped);
    let calls = fake.purge_calls.load(Ordering::SeqCst);
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(fake.purge_calls.load(Ordering::SeqCst), calls);
}

async fn a_dead_sweep_is_taken_over(target: DbTarget) {
    let (r, _) = setup(target, Fake::with_purposes("kultur", &["correspondence"])).await;
    let k = tenant("kultur");
    r.create_policy(&k, mail_policy(), None).await.expect("p");
    // A run whose process died an hour ago (no heartbeat since).
    let dead = vern_retention::domain::SweepRun {
        tenant_id: "kultur".into(),
        sweep_run_id: uuid::Uuid::now_v7().to_string(),
        dry_run: false,
        trigger: SweepTrigger::Scheduled,
        status: SweepStatus::Running,
        requested_by: String::new(),
        start_time: vern_kit::time::now() - chrono::Duration::hours(1),
        end_time: None,
        policy_results: vec![],
        items: vec![],
        items_truncated: false,
        held_subject_count: 0,
        error: String::new(),
    };
    r.store()
        .start_run(&dead, None, None, None)
        .await
        .expect("start");
    let run = r
        .run_sweep(&k, sweep(true), None, None)
        .await
        .expect("taken over");
    assert_eq!(run.status, SweepStatus::Succeeded);
    let old = r
        .store()
        .get_run("kultur", &dead.sweep_run_id)
        .await
        .expect("get")
        .expect("run");
    assert_eq!(old.status, SweepStatus::Interrupted);
    assert!(old.error.starts_with("interrupted"), "{}", old.error);
    assert!(old.end_time.is_some());
    // Its instance, were it alive, learns it lost the lease.
    assert!(
        !r.store()
            .heartbeat("kultur", &dead.sweep_run_id)
            .await
            .expect("heartbeat")
    );

    // A scheduler round marks a dead holder's run INTERRUPTED, then sweeps.
    let dead = vern_retention::domain::SweepRun {
        sweep_run_id: uuid::Uuid::now_v7().to_string(),
        start_time: vern_kit::time::now() - vern_retention::store::SWEEP_LEASE * 2,
        ..dead
    };
    r.store()
        .start_run(&dead, None, None, None)
        .await
        .expect("start");
    let scheduler = Scheduler::new(r.clone(), None, Duration::from_secs(3600));
    let runs = scheduler
        .run_once(scheduler.slot_of(vern_kit::time::now()), None)
        .await;
    assert_eq!(runs.len(), 1);
    assert_eq!(runs[0].status, SweepStatus::Succeeded);
    let old = r
        .store()
        .get_run("kultur", &dead.sweep_run_id)
        .await
        .expect("get")
        .expect("run");
    assert_eq!(old.status, SweepStatus::Interrupted);
    assert!(old.error.contains("lease"), "{}", old.error);
}

/// Two instances (two connection pools on one database) each run the scheduler's round
/// for the same interval at the same moment: the tenant is swept once per interval, and
/// a round that comes late in the interval (after the other finished) sweeps nothing.
async fn two_schedulers_sweep_each_interval_once(target: DbTarget) {
    let fake = Arc::new(Fake::with_purposes("kultur", &["correspondence"]));
    *fake.purge_delay.lock().expect("lock") = Duration::from_millis(20);
    let a = Retention::new(
        RetentionStore::open(&target).await.expect("a"),
        fake.clone(),
    );
    let b = Retention::new(
        RetentionStore::open(&target).await.expect("b"),
        fake.clone(),
    );
    a.create_policy(&tenant("kultur"), mail_policy(), None)
        .await
        .expect("p");
    let interval = Duration::from_secs(3600);
    let (sa, sb) = (
        Scheduler::new(a.clone(), None, interval),
        Scheduler::new(b, None, interval),
    );
    let first = sa.slot_of(vern_kit::time::now());
    let rounds = 10;
    for i in 0..rounds {
        let slot = first + chrono::Duration::hours(i);
        let (ra, rb) = tokio::join!(sa.run_once(slot, None), sb.run_once(slot, None));
        assert_eq!(ra.len() + rb.len(), 1, "interval {i}: swept once");
        assert!(
            ra.iter()
                .chain(&rb)
                .all(|r| r.status == SweepStatus::Succeeded),
            "{ra:?} {rb:?}"
        );
        // Later in the same interval, after the first sweep finished.
        assert!(
            sb.run_once(slot, None).await.is_empty(),
            "interval {i} again"
        );
        assert!(
            sa.run_once(slot, None).await.is_empty(),
            "interval {i} again"
        );
    }
    // An earlier interval is never swept after a later one.
    assert!(sa.run_once(first, None).await.is_empty());
    let runs = a
        .store()
        .list_runs("kultur", None, 100, false)
        .await
        .expect("runs");
    assert_eq!(runs.items.len(), rounds as usize);
    assert!(
        runs.items
            .iter()
            .all(|r| r.trigger == SweepTrigger::Scheduled)
    );
}

/// A sweep cut off by shutdown is recorded INTERRUPTED (with what it did) rather than
/// left RUNNING, and the next interval sweeps again.
async fn an_interrupted_sweep_is_recorded_and_the_next_interval_runs(target: DbTarget) {
    let fake = Fake::with_purposes("kultur", &["correspondence"]);
    let s = uuid::Uuid::new_v4().to_string();
    fake.add(
        "kultur",
        &s,
        DataCategory::Communications,
        "email-correspondence",
        &["correspondence"],
        ago(730),
    );
    let (r, fake) = setup(target, fake).await;
    r.create_policy(&tenant("kultur"), mail_policy(), None)
        .await
        .expect("p");
    *fake.purge_delay.lock().expect("lock") = Duration::from_secs(30);
    let running = || async {
        let deadline = std::time::Instant::now() + Duration::from_secs(10);
        loop {
            let runs = r
                .store()
                .list_runs("kultur", None, 10, false)
                .await
                .expect("runs");
            if let Some(run) = runs.items.iter().find(|x| x.status == SweepStatus::Running) {
                return run.sweep_run_id.clone();
            }
            assert!(std::time::Instant::now() < deadline, "no running sweep");
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    };

    // A round told to stop while its sweep waits on the subjects service.
    let scheduler = Scheduler::new(r.clone(), None, Duration::from_secs(3600));
    let slot = scheduler.slot_of(vern_kit::time::now());
    let (stop, rx) = tokio::sync::watch::channel(false);
    let round = {
        let scheduler = scheduler.clone();
        tokio::spawn(async move { scheduler.run_once(slot, Some(rx)).await })
    };
    let id = running().await;
    stop.send_replace(true);
    let runs = tokio::time::timeout(Duration::from_secs(5), round)
        .await
        .expect("cut off at once")
        .expect("join");
    assert_eq!(runs.len(), 1);
    let stored = r
        .store()
        .get_run("kultur", &id)
        .await
        .expect("get")
        .expect("run");
    assert_eq!(stored.status, SweepStatus::Interrupted);
    assert_eq!(stored.error, "interrupted: the service shut down");
    assert!(stored.end_time.is_some());
    assert_eq!(stored.policy_results.len(), 1);
    assert!(!stored.policy_results[0].error.is_empty());
    assert_eq!(fake.ids().len(), 1, "nothing purged yet");

    // The same interval is not swept again; the next one is, and finishes.
    *fake.purge_delay.lock().expect("lock") = Duration::ZERO;
    assert!(scheduler.run_once(slot, None).await.is_empty());
    let next = scheduler
        .run_once(slot + chrono::Duration::hours(1), None)
        .await;
    assert_eq!(next.len(), 1);
    assert_eq!(next[0].status, SweepStatus::Succeeded);
    assert!(fake.ids().is_empty());
}

/// Stopping the spawned scheduler (graceful shutdown) records its running sweep
/// INTERRUPTED before `stop` returns.
async fn a_stopped_scheduler_records_its_sweep_interrupted(target: DbTarget) {
    let fake = Fake::with_purposes("kultur", &["correspondence"]);
    fake.add(
        "kultur",
        &uuid::Uuid::new_v4().to_string(),
        DataCategory::Communications,
        "email-correspondence",
        &["correspondence"],
        ago(730),
    );
    let (r, fake) = setup(target, fake).await;
    r.create_policy(&tenant("kultur"), mail_policy(), None)
        .await
        .expect("p");
    *fake.purge_delay.lock().expect("lock") = Duration::from_secs(30);
    let handle = Scheduler::new(r.clone(), None, Duration::from_millis(200)).spawn();
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    let id = loop {
        let runs = r
            .store()
            .list_runs("kultur", None, 10, false)
            .await
            .expect("runs");
        if let Some(run) = runs.items.first() {
            assert_eq!(run.status, SweepStatus::Running);
            break run.sweep_run_id.clone();
        }
        assert!(std::time::Instant::now() < deadline, "no running sweep");
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    tokio::time::timeout(Duration::from_secs(5), handle.stop())
        .await
        .expect("stops at once");
    let stored = r
        .store()
        .get_run("kultur", &id)
        .await
        .expect("get")
        .expect("run");
    assert_eq!(stored.status, SweepStatus::Interrupted);
    assert!(stored.end_time.is_some());
}

/// What was kept after an erasure is decided again when its end passes or, kept
/// without an end, at every sweep: a hold's end is not a duty's end, and a record held
/// until released goes once the hold is released.
async fn records_kept_after_erasure_are_decided_again_when_their_end_passes(target: DbTarget) {
    let fake = Fake::with_purposes("kultur", &["bookkeeping", "customer"]);
    let erased = uuid::Uuid::new_v4().to_string();
    let held = uuid::Uuid::new_v4().to_string();
    // Kept under a hold that ended yesterday; its bookkeeping duty runs for years yet.
    let invoice = fake.add(
        "kultur",
        &erased,
        DataCategory::Financial,
        "invoice",
        &["bookkeeping"],
        ago(400),
    );
    // Kept under the same hold; nothing else keeps it.
    let note = fake.add(
        "kultur",
        &erased,
        DataCategory::Contact,
        "note",
        &["customer"],
        ago(400),
    );
    // Kept under a hold until released (no end), of another subject.
    let letter = fake.add(
        "kultur",
        &held,
        DataCategory::Contact,
        "letter",
        &["customer"],
        ago(100),
    );
    for r in fake.records.lock().expect("lock").iter_mut() {
        r.info.restricted = true;
        r.info.legal_reference = "legal hold h-1".into();
        r.info.retain_until = if r.info.record_id == letter {
            None
        } else {
            Some(ago(1))
        };
    }
    let (r, fake) = setup(target, fake).await;
    let k = tenant("kultur");
    r.create_policy(
        &k,
        PolicyInput {
            name: "Bookkeeping".into(),
            purpose: "bookkeeping".into(),
            period: "P5Y".into(),
            anchor: Some(Anchor::EndOfFinancialYear),
            action: Some(Action::Delete),
            legal_reference: "bokføringsloven § 13".into(),
            legal_duty: true,
            ..Default::default()
        },
        None,
    )
    .await
    .expect("policy");
    let hold = r
        .place_hold(
            &k,
            HoldInput {
                scope: Some(HoldScope::Subject),
                subject_id: held.clone(),
                reason: "court case".into(),
                end_time: None,
            },
            "officer",
            None,
        )
        .await
        .expect("hold");

    let dry = r.run_sweep(&k, sweep(true), None, None).await.expect("dry");
    let listed: Vec<&str> = dry.items.iter().map(|i| i.record_id.as_str()).collect();
    assert_eq!(listed, [note.as_str()], "{:?}", dry.items);
    assert!(
        fake.erase_calls.lock().expect("lock").is_empty(),
        "a dry run erases nothing"
    );

    let real = r
        .run_sweep(&k, sweep(false), None, None)
        .await
        .expect("sweep");
    let after = real
        .policy_results
        .iter()
        .find(|p| p.policy_id.is_empty())
        .expect("erasure leftovers result");
    assert_eq!((after.matched_count, after.deleted_count), (2, 1));
    let left = fake.ids();
    assert!(!left.contains(&note), "nothing keeps the note");
    assert!(left.contains(&letter), "still held");
    let kept = fake
        .records
        .lock()
        .expect("lock")
        .iter()
        .find(|x| x.info.record_id == invoice)
        .map(|x| x.info.clone())
        .expect("the invoice stays: its bookkeeping duty runs on");
    assert!(kept.restricted);
    assert!(
        kept.retain_until.is_some_and(|u| u > ago(-365 * 3)),
        "{kept:?}"
    );
    assert_eq!(kept.legal_reference, "bokføringsloven § 13");
    let calls = fake.erase_calls.lock().expect("lock").clone();
    assert_eq!(calls.len(), 1);
    assert_eq!(calls[0].subject_id, erased);

    // The next sweep finds nothing new to decide.
    r.run_sweep(&k, sweep(false), None, None)
        .await
        .expect("again");
    assert_eq!(fake.erase_calls.lock().expect("lock").len(), 1);

    // Released, the held letter goes (and with it the subject, in the subjects service).
    r.release_hold(&k, &hold.hold_id, "case closed", "officer", None)
        .await
        .expect("release");
    r.run_sweep(&k, sweep(false), None, None)
        .await
        .expect("after release");
    assert!(!fake.ids().contains(&letter));
    let calls = fake.erase_calls.lock().expect("lock").clone();
    assert_eq!(calls.len(), 2);
    assert_eq!(
        (calls[1].subject_id.as_str(), calls[1].retain.len()),
        (held.as_str(), 0)
    );
}
