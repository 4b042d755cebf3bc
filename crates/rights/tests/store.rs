//! Store tests of the rights service, on SQLite and PostgreSQL.

use chrono::{DateTime, Duration, TimeZone, Utc};
use vern_kit::db::DbTarget;
use vern_kit::idempotency::Key;
use vern_rights::domain::ErasureCause;
use vern_rights::domain::{EventType, RequestStatus};
use vern_rights::model::ErasedRecord;
use vern_rights::store::entities::{event, report, request};
use vern_rights::store::{
    ErasedSubject, EventFilter, EventRef, RequestFilter, RestrictionChange, RightsStore,
};

vern_kit::store_test_suite!("rights":
    requests_list_in_deadline_order_with_filters_and_pages,
    feed_seqs_are_gap_free_under_concurrency_and_failures,
    the_last_required_ack_completes_the_request,
    simultaneous_acks_from_two_replicas_complete_the_request,
    events_filter_by_type_request_and_unacked_system,
    tenants_are_isolated,
    idempotent_commits_answer_once,
    erasure_destroys_the_subjects_personal_content,
    erasures_from_the_subjects_service_spare_only_the_request_carrying_them_out,
    a_rotation_never_brings_back_a_key_an_erasure_destroyed_meanwhile,
);

fn at(d: u32) -> DateTime<Utc> {
    Utc.with_ymd_and_hms(2026, 1, d, 9, 0, 0)
        .single()
        .expect("t")
}

fn row(tenant: &str, id: &str, due: DateTime<Utc>, status: RequestStatus) -> request::Model {
    request::Model {
        tenant_id: tenant.into(),
        rights_request_id: id.into(),
        request_type: "ACCESS".into(),
        status: status.as_str().into(),
        subject_id: String::new(),
        channel: "EMAIL".into(),
        request_id: String::new(),
        wrapped_key: vec![1, 2, 3],
        personal: vec![4, 5, 6],
        purposes: "[]".into(),
        received_at: due - Duration::days(30),
        due_at: due,
        original_due_at: due,
        extended: false,
        extension_months: 0,
        extension_reason: String::new(),
        subject_informed_at: None,
        verify_time: None,
        verified_by: String::new(),
        verification_method: String::new(),
        verification_note: String::new(),
        rejection_ground: String::new(),
        rejection_reason: String::new(),
        reject_time: None,
        complete_time: None,
        fulfilled: false,
        outcome: None,
        required_systems: "[]".into(),
        version: 1,
        create_time: at(1),
        update_time: at(1),
        personal_erased_at: None,
        language: Some("nb".into()),
    }
}

fn ev(tenant: &str, request: &str, t: EventType) -> event::Model {
    event::Model {
        tenant_id: tenant.into(),
        seq: 0,
        event_id: uuid::Uuid::now_v7().to_string(),
        event_type: t.as_str().into(),
        subject_id: "s-1".into(),
        external_refs: r#"[{"system":"crm","id":"C-1"}]"#.into(),
        rights_request_id: request.into(),
        purposes: "[]".into(),
        fields: "[]".into(),
        retain_until_time: None,
        occur_time: at(2),
        external_refs_ct: None,
        detail: "{}".into(),
    }
}

async fn requests_list_in_deadline_order_with_filters_and_pages(target: DbTarget) {
    let s = RightsStore::open(&target).await.expect("open");
    let ids: Vec<String> = (0..5).map(|_| uuid::Uuid::now_v7().to_string()).collect();
    let specs = [
        (20, RequestStatus::Received),
        (5, RequestStatus::Verified),
        (12, RequestStatus::Completed),
        (5, RequestStatus::Received),
        (28, RequestStatus::Rejected),
    ];
    for (id, (day, status)) in ids.iter().zip(specs) {
        let mut r = row("t1", id, at(day), status);
        if day == 20 {
            r.subject_id = "11111111-1111-1111-1111-111111111111".into();
            r.request_type = "ERASURE".into();
        }
        s.insert_request(r, None).await.expect("insert");
    }
    let all = s
        .list_requests("t1", &RequestFilter::default(), None, 100)
        .await
        .expect("list");
    let dues: Vec<u32> = all
        .items
        .iter()
        .map(|r| r.due_at.format("%d").to_string().parse().expect("day"))
        .collect();
    assert_eq!(dues, vec![5, 5, 12, 20, 28], "ordered by due_at");
    assert!(!all.more);

    // Overdue as of the 15th: due before and not COMPLETED/REJECTED.
    let overdue = s
        .list_requests(
            "t1",
            &RequestFilter {
                overdue_at: Some(at(15)),
                ..Default::default()
            },
            None,
            100,
        )
        .await
        .expect("overdue");
    assert_eq!(overdue.items.len(), 2);
    assert!(
        overdue
            .items
            .iter()
            .all(|r| r.due_at < at(15) && r.status != "COMPLETED" && r.status != "REJECTED")
    );

    let received = s
        .list_requests(
            "t1",
            &RequestFilter {
                status: Some(RequestStatus::Received),
                ..Default::default()
            },
            None,
            100,
        )
        .await
        .expect("status");
    assert_eq!(received.items.len(), 2);
    let erasures = s
        .list_requests(
            "t1",
            &RequestFilter {
                request_type: Some("ERASURE".into()),
                subject_id: Some("11111111-1111-1111-1111-111111111111".into()),
                ..Default::default()
            },
            None,
            100,
        )
        .await
        .expect("type");
    assert_eq!(erasures.items.len(), 1);
    let before = s
        .list_requests(
            "t1",
            &RequestFilter {
                due_before: Some(at(13)),
                ..Default::default()
            },
            None,
            100,
        )
        .await
        .expect("due before");
    assert_eq!(before.items.len(), 3);

    // Pages of two, resumed by (due_at, id), see every request once in order.
    let mut seen = vec![];
    let mut after = None;
    loop {
        let p = s
            .list_requests("t1", &RequestFilter::default(), after.clone(), 2)
            .await
            .expect("page");
        seen.extend(p.items.iter().map(|r| r.rights_request_id.clone()));
        let last = p
            .items
            .last()
            .map(|r| (r.due_at, r.rights_request_id.clone()));
        if !p.more {
            break;
        }
        after = last;
    }
    let expected: Vec<String> = all
        .items
        .iter()
        .map(|r| r.rights_request_id.clone())
        .collect();
    assert_eq!(seen, expected);
}

async fn feed_seqs_are_gap_free_under_concurrency_and_failures(target: DbTarget) {
    let s = RightsStore::open(&target).await.expect("open");
    let mut ids = vec![];
    for i in 0..8 {
        let id = uuid::Uuid::now_v7().to_string();
        s.insert_request(row("t1", &id, at(10 + i), RequestStatus::InProgress), None)
            .await
            .expect("insert");
        ids.push(id);
    }
    // A commit that loses its compare-and-set appends nothing.
    let stale = row("t1", &ids[0], at(10), RequestStatus::Completed);
    let err = s
        .commit_request(
            stale,
            99,
            vec![ev("t1", &ids[0], EventType::Erased)],
            None,
            None,
        )
        .await;
    assert!(err.is_err(), "stale version refused");
    let mut tasks = vec![];
    for id in ids.clone() {
        let s = s.clone();
        tasks.push(tokio::spawn(async move {
            let mut updated = row("t1", &id, at(10), RequestStatus::Completed);
            updated.version = 2;
            let events = vec![
                ev("t1", &id, EventType::Erased),
                ev("t1", &id, EventType::Restricted),
            ];
            s.commit_request(updated, 1, events, None, None).await
        }));
    }
    for t in tasks {
        t.await.expect("join").expect("commit");
    }
    let page = s
        .list_events("t1", &EventFilter::default(), 0, 1000)
        .await
        .expect("events");
    let seqs: Vec<i64> = page.items.iter().map(|e| e.seq).collect();
    assert_eq!(seqs, (1..=16).collect::<Vec<_>>(), "gap-free from 1");
    // Each request's two events are adjacent (one transaction).
    for id in &ids {
        let mine = s.events_of_request("t1", id).await.expect("mine");
        assert_eq!(mine.len(), 2);
        assert_eq!(mine[1].seq, mine[0].seq + 1);
    }
    // Resuming after a seq.
    let rest = s
        .list_events("t1", &EventFilter::default(), 10, 1000)
        .await
        .expect("rest");
    assert_eq!(rest.items.first().map(|e| e.seq), Some(11));
    assert_eq!(rest.items.len(), 6);
}

async fn the_last_required_ack_completes_the_request(target: DbTarget) {
    let s = RightsStore::open(&target).await.expect("open");
    let id = uuid::Uuid::now_v7().to_string();
    let mut r = row("t1", &id, at(20), RequestStatus::Verified);
    r.required_systems = r#"["accounting","crm"]"#.into();
    s.insert_request(r.clone(), None).await.expect("insert");
    let mut done = r.clone();
    done.status = RequestStatus::InProgress.as_str().into();
    done.fulfilled = true;
    done.version = 2;
    let e1 = ev("t1", &id, EventType::Erased);
    let e2 = ev("t1", &id, EventType::Restricted);
    s.commit_request(done, 1, vec![e1.clone(), e2.clone()], None, None)
        .await
        .expect("fulfil");
    let stored = |seq| s.event("t1", EventRef::Seq(seq));
    let e1 = stored(1).await.expect("e1").expect("e1");
    let e2 = stored(2).await.expect("e2").expect("e2");
    let status = || async {
        s.request("t1", &id)
            .await
            .expect("get")
            .expect("row")
            .status
    };
    s.ack("t1", e1.clone(), "crm", "crm-svc", at(21), None)
        .await
        .expect("ack");
    s.ack("t1", e2.clone(), "crm", "crm-svc", at(21), None)
        .await
        .expect("ack");
    assert_eq!(status().await, "IN_PROGRESS", "accounting still pending");
    // Acknowledging again is a no-op.
    s.ack("t1", e1.clone(), "crm", "someone-else", at(22), None)
        .await
        .expect("again");
    let acks = s
        .acks_of("t1", std::slice::from_ref(&e1.event_id))
        .await
        .expect("acks");
    assert_eq!(acks.len(), 1);
    assert_eq!(acks[0].acked_by, "crm-svc", "first ack kept");
    s.ack("t1", e1.clone(), "accounting", "acc", at(23), None)
        .await
        .expect("ack");
    assert_eq!(status().await, "IN_PROGRESS", "e2 not acked by accounting");
    s.ack("t1", e2.clone(), "accounting", "acc", at(23), None)
        .await
        .expect("ack");
    let final_row = s.request("t1", &id).await.expect("get").expect("row");
    assert_eq!(final_row.status, "COMPLETED");
    assert_eq!(final_row.complete_time, Some(at(23)));
    // An unrequired system's ack changes nothing further.
    s.ack("t1", e2, "newsletter-tool", "x", at(24), None)
        .await
        .expect("ack");
    assert_eq!(status().await, "COMPLETED");
}

/// Two replicas (two pools on one database) acknowledge the two required systems of a
/// request at the same moment; each ack must see the other's, or the request stalls
/// IN_PROGRESS (write skew under READ COMMITTED).
async fn simultaneous_acks_from_two_replicas_complete_the_request(target: DbTarget) {
    let a = RightsStore::open(&target).await.expect("open a");
    let b = RightsStore::open(&target).await.expect("open b");
    for round in 0..30 {
        let id = uuid::Uuid::now_v7().to_string();
        let mut r = row("t1", &id, at(20), RequestStatus::Verified);
        r.required_systems = r#"["accounting","crm"]"#.into();
        a.insert_request(r.clone(), None).await.expect("insert");
        let mut done = r.clone();
        done.status = RequestStatus::InProgress.as_str().into();
        done.fulfilled = true;
        done.version = 2;
        a.commit_request(done, 1, vec![ev("t1", &id, EventType::Erased)], None, None)
            .await
            .expect("fulfil");
        let e = a.events_of_request("t1", &id).await.expect("events")[0].clone();
        let barrier = std::sync::Arc::new(tokio::sync::Barrier::new(2));
        let tasks: Vec<_> = [(a.clone(), "crm"), (b.clone(), "accounting")]
            .into_iter()
            .map(|(s, system)| {
                let (e, barrier) = (e.clone(), barrier.clone());
                tokio::spawn(async move {
                    barrier.wait().await;
                    s.ack("t1", e, system, "svc", at(21), None).await
                })
            })
            .collect();
        for t in tasks {
            t.await.expect("join").expect("ack");
        }
        let status = b
            .request("t1", &id)
            .await
            .expect("get")
            .expect("row")
            .status;
        assert_eq!(status, "COMPLETED", "round {round}: both acks seen");
    }
}

async fn events_filter_by_type_request_and_unacked_system(target: DbTarget) {
    let s = RightsStore::open(&target).await.expect("open");
    let (a, b) = (
        uuid::Uuid::now_v7().to_string(),
        uuid::Uuid::now_v7().to_string(),
    );
    for id in [&a, &b] {
        s.insert_request(row("t1", id, at(20), RequestStatus::InProgress), None)
            .await
            .expect("insert");
    }
    let mut ua = row("t1", &a, at(20), RequestStatus::Completed);
    ua.version = 2;
    s.commit_request(
        ua,
        1,
        vec![
            ev("t1", &a, EventType::Erased),
            ev("t1", &a, EventType::Objected),
        ],
        None,
        None,
    )
    .await
    .expect("a");
    let mut ub = row("t1", &b, at(20), RequestStatus::Completed);
    ub.version = 2;
    s.commit_request(ub, 1, vec![ev("t1", &b, EventType::Erased)], None, None)
        .await
        .expect("b");
    let erased = s
        .list_events(
            "t1",
            &EventFilter {
                types: vec![EventType::Erased.as_str().into()],
                ..Default::default()
            },
            0,
            100,
        )
        .await
        .expect("erased");
    assert_eq!(
        erased.items.iter().map(|e| e.seq).collect::<Vec<_>>(),
        vec![1, 3]
    );
    let of_a = s
        .list_events(
            "t1",
            &EventFilter {
                rights_request_id: Some(a.clone()),
                ..Default::default()
            },
            0,
            100,
        )
        .await
        .expect("of a");
    assert_eq!(of_a.items.len(), 2);
    let first = s
        .event("t1", EventRef::Seq(1))
        .await
        .expect("e")
        .expect("e");
    s.ack("t1", first, "crm", "crm", at(21), None)
        .await
        .expect("ack");
    let unacked = s
        .list_events(
            "t1",
            &EventFilter {
                unacked_by: Some("crm".into()),
                ..Default::default()
            },
            0,
            100,
        )
        .await
        .expect("unacked");
    assert_eq!(
        unacked.items.iter().map(|e| e.seq).collect::<Vec<_>>(),
        vec![2, 3]
    );
    let page = s
        .list_events("t1", &EventFilter::default(), 0, 2)
        .await
        .expect("page");
    assert!(page.more);
    assert_eq!(page.items.len(), 2);
}

async fn tenants_are_isolated(target: DbTarget) {
    let s = RightsStore::open(&target).await.expect("open");
    let id = uuid::Uuid::now_v7().to_string();
    s.insert_request(row("t1", &id, at(20), RequestStatus::InProgress), None)
        .await
        .expect("insert");
    let mut u = row("t1", &id, at(20), RequestStatus::Completed);
    u.version = 2;
    let e = ev("t1", &id, EventType::Erased);
    let eid = e.event_id.clone();
    s.commit_request(u, 1, vec![e], None, None)
        .await
        .expect("commit");
    assert!(s.request("t2", &id).await.expect("get").is_none());
    assert!(
        s.event("t2", EventRef::Id(&eid))
            .await
            .expect("ev")
            .is_none()
    );
    assert!(
        s.list_events("t2", &EventFilter::default(), 0, 100)
            .await
            .expect("list")
            .items
            .is_empty()
    );
    assert!(
        s.list_requests("t2", &RequestFilter::default(), None, 100)
            .await
            .expect("list")
            .items
            .is_empty()
    );
    // Each tenant's feed starts at 1.
    let other = uuid::Uuid::now_v7().to_string();
    s.insert_request(row("t2", &other, at(20), RequestStatus::InProgress), None)
        .await
        .expect("insert");
    let mut u2 = row("t2", &other, at(20), RequestStatus::Completed);
    u2.version = 2;
    s.commit_request(u2, 1, vec![ev("t2", &other, EventType::Erased)], None, None)
        .await
        .expect("commit");
    let t2 = s
        .list_events("t2", &EventFilter::default(), 0, 100)
        .await
        .expect("t2");
    assert_eq!(t2.items.iter().map(|e| e.seq).collect::<Vec<_>>(), vec![1]);
}

async fn idempotent_commits_answer_once(target: DbTarget) {
    let s = RightsStore::open(&target).await.expect("open");
    let id = uuid::Uuid::now_v7().to_string();
    let key = Key::new(Some("t1"), "submit-1", "SubmitRequest", b"req");
    let first = s
        .insert_request(
            row("t1", &id, at(20), RequestStatus::Received),
            key.as_ref(),
        )
        .await
        .expect("insert");
    assert_eq!(first, id);
    let replayed: Option<String> = s.replay(key.as_ref()).await.expect("replay");
    assert_eq!(replayed.as_deref(), Some(id.as_str()));
    // The same key with another request is refused.
    let other = Key::new(Some("t1"), "submit-1", "SubmitRequest", b"different");
    assert!(s.replay::<String>(other.as_ref()).await.is_err());
    // A second insert under the same key (a lost race) returns the first answer.
    let again = s
        .insert_request(
            row(
                "t1",
                &uuid::Uuid::now_v7().to_string(),
                at(20),
                RequestStatus::Received,
            ),
            key.as_ref(),
        )
        .await
        .expect("raced");
    assert_eq!(again, id);
    let all = s
        .list_requests("t1", &RequestFilter::default(), None, 100)
        .await
        .expect("list");
    assert_eq!(all.items.len(), 1, "no second write");
}

/// `n` bytes nobody else writes (random, so a search for them in the files is exact).
fn unique_bytes(n: usize) -> Vec<u8> {
    let mut out = Vec::with_capacity(n + 16);
    while out.len() < n {
        out.extend_from_slice(uuid::Uuid::new_v4().as_bytes());
    }
    out.truncate(n);
    out
}

fn contains(hay: &[u8], needle: &[u8]) -> bool {
    hay.windows(needle.len()).any(|w| w == needle)
}

/// The SQLite database file and its WAL, concatenated (empty on PostgreSQL).
fn sqlite_files(target: &DbTarget) -> Vec<u8> {
    let Some(rest) = target.url.strip_prefix("sqlite://") else {
        return vec![];
    };
    let path = rest.split('?').next().expect("path");
    let mut bytes = std::fs::read(path).expect("db file");
    if let Ok(wal) = std::fs::read(format!("{path}-wal")) {
        bytes.extend_from_slice(&wal);
    }
    bytes
}

/// A verified request of `subject` with a data key and sealed personal content.
fn personal_request(tenant: &str, subject: &str, ty: &str) -> request::Model {
    let id = uuid::Uuid::now_v7().to_string();
    let mut r = row(tenant, &id, at(20), RequestStatus::Verified);
    r.subject_id = subject.to_owned();
    r.request_type = ty.to_owned();
    r.wrapped_key = unique_bytes(60);
    r.personal = unique_bytes(200);
    r
}

/// Completes `r` (version 1 → 2) with the report `sealed`.
async fn complete_with_report(s: &RightsStore, r: &request::Model, sealed: Vec<u8>) {
    let done = request::Model {
        status: RequestStatus::Completed.as_str().into(),
        fulfilled: true,
        version: 2,
        ..r.clone()
    };
    let rep = report::Model {
        tenant_id: r.tenant_id.clone(),
        rights_request_id: r.rights_request_id.clone(),
        sealed,
        generate_time: at(3),
    };
    s.commit_request(done, 1, vec![], Some(rep), None)
        .await
        .expect("fulfil");
}

async fn erasure_destroys_the_subjects_personal_content(target: DbTarget) {
    let s = RightsStore::open(&target).await.expect("open");
    let subject = uuid::Uuid::new_v4().to_string();
    let other_subject = uuid::Uuid::new_v4().to_string();
    // An earlier access request of the subject, fulfilled with a (large) report; a
    // rectification; the erasure; the same subject id in another tenant; another
    // subject in the tenant.
    let access = personal_request("t1", &subject, "ACCESS");
    let rectify = personal_request("t1", &subject, "RECTIFICATION");
    let erasure = personal_request("t1", &subject, "ERASURE");
    let foreign = personal_request("t2", &subject, "ACCESS");
    let bystander = personal_request("t1", &other_subject, "ACCESS");
    for r in [&access, &rectify, &erasure, &foreign, &bystander] {
        s.insert_request(r.clone(), None).await.expect("insert");
    }
    let access_report = unique_bytes(6000);
    complete_with_report(&s, &access, access_report.clone()).await;
    for r in [&foreign, &bystander] {
        complete_with_report(&s, r, unique_bytes(6000)).await;
    }
    // A writer that read the access request before the erasure.
    let stale = s
        .request("t1", &access.rights_request_id)
        .await
        .expect("read")
        .expect("row");

    let erased_at = at(5);
    let fulfilled = request::Model {
        status: RequestStatus::Completed.as_str().into(),
        fulfilled: true,
        outcome: Some(r#"{"summary":"erased 2 records; nothing kept"}"#.into()),
        version: 2,
        ..erasure.clone()
    };
    let erasure_report = report::Model {
        tenant_id: erasure.tenant_id.clone(),
        rights_request_id: erasure.rights_request_id.clone(),
        sealed: unique_bytes(6000),
        generate_time: at(3),
    };
    let key = Key::new(Some("t1"), "fulfil-erase", "FulfilRequest", b"f");
    let answer = s
        .commit_erasure(
            fulfilled,
            1,
            vec![ev("t1", &erasure.rights_request_id, EventType::Erased)],
            Some(erasure_report.clone()),
            erased_at,
            key.as_ref(),
        )
        .await
        .expect("erasure");
    assert_eq!(answer, erasure.rights_request_id);
    let replayed: Option<String> = s.replay(key.as_ref()).await.expect("replay");
    assert_eq!(replayed, Some(answer), "the stored answer is the id only");

    let get = |r: &request::Model| {
        let s = s.clone();
        let (t, id) = (r.tenant_id.clone(), r.rights_request_id.clone());
        async move { s.request(&t, &id).await.expect("get").expect("row") }
    };
    for (r, keeps_key) in [(&access, false), (&rectify, false), (&erasure, true)] {
        let now = get(r).await;
        assert!(
            now.personal.is_empty(),
            "{}: personal content",
            r.request_type
        );
        assert_eq!(now.personal_erased_at, Some(erased_at));
        assert_eq!(
            now.wrapped_key == r.wrapped_key,
            keeps_key,
            "{}: the data key is destroyed unless it seals an erasure report",
            r.request_type
        );
        if !keeps_key {
            assert!(now.wrapped_key.is_empty());
        }
        // Accountability evidence stays.
        assert_eq!(
            (now.request_type.as_str(), now.subject_id.as_str()),
            (r.request_type.as_str(), subject.as_str())
        );
        assert!(now.version > r.version);
    }
    assert_eq!(
        get(&erasure).await.status,
        RequestStatus::Completed.as_str()
    );
    assert!(
        s.report("t1", &access.rights_request_id)
            .await
            .expect("report")
            .is_none(),
        "the access report is gone"
    );
    assert_eq!(
        s.report("t1", &erasure.rights_request_id)
            .await
            .expect("report")
            .map(|r| r.sealed),
        Some(erasure_report.sealed.clone()),
        "the erasure report (ids, counts, what was kept) stays"
    );
    // Other tenants and other subjects are untouched.
    for r in [&foreign, &bystander] {
        let now = get(r).await;
        assert_eq!(
            (now.personal.clone(), now.wrapped_key.clone()),
            (r.personal.clone(), r.wrapped_key.clone())
        );
        assert_eq!(now.personal_erased_at, None);
        assert!(
            s.report(&r.tenant_id, &r.rights_request_id)
                .await
                .expect("report")
                .is_some()
        );
    }
    // The stale writer cannot put the personal content back.
    let err = s
        .update_request(
            request::Model {
                version: stale.version + 1,
                ..stale.clone()
            },
            stale.version,
            None,
        )
        .await
        .expect_err("stale write");
    assert!(matches!(
        err,
        vern_rights::error::RightsError::Api(vern_kit::ApiError::Aborted(_))
    ));
    assert!(get(&access).await.personal.is_empty());

    // On SQLite the destroyed key, content and report are not left in the database
    // file's free space nor in its WAL (secure_delete plus a truncating checkpoint).
    s.checkpoint().await;
    let files = sqlite_files(&target);
    if !files.is_empty() {
        assert!(
            contains(&files, &foreign.wrapped_key) && contains(&files, &erasure.wrapped_key),
            "kept keys are found: the search works"
        );
        for (what, secret) in [
            ("access key", &access.wrapped_key),
            ("access personal", &access.personal),
            ("rectification key", &rectify.wrapped_key),
            ("erasure personal", &erasure.personal),
            ("access report", &access_report[..64].to_vec()),
            ("access report end", &access_report[5900..].to_vec()),
        ] {
            assert!(!contains(&files, secret), "{what} left in the SQLite files");
        }
    }
}

/// ApplySubjectErasures: a subject erased by the subjects service (EraseSubject called
/// directly, or its last kept record purged) loses its personal content here too; an
/// erasure carried out by a rights request spares that request, whose own commit
/// shreds.
async fn erasures_from_the_subjects_service_spare_only_the_request_carrying_them_out(
    target: DbTarget,
) {
    let s = RightsStore::open(&target).await.expect("open");
    let erased = uuid::Uuid::new_v4().to_string();
    let by_request = uuid::Uuid::new_v4().to_string();
    let bystander = uuid::Uuid::new_v4().to_string();
    let access = personal_request("t1", &erased, "ACCESS");
    let foreign = personal_request("t2", &erased, "ACCESS");
    let other = personal_request("t1", &bystander, "ACCESS");
    let pending_access = personal_request("t1", &by_request, "ACCESS");
    let in_flight = personal_request("t1", &by_request, "ERASURE");
    for r in [&access, &foreign, &other, &pending_access, &in_flight] {
        s.insert_request(r.clone(), None).await.expect("insert");
    }
    for r in [&access, &foreign, &other] {
        complete_with_report(&s, r, unique_bytes(600)).await;
    }
    let erased_at = at(6);
    let key = Key::new(Some("t1"), "outbox-1", "ApplySubjectErasures", b"e");
    let erasures = vec![
        ErasedSubject {
            subject_id: erased.clone(),
            at: erased_at,
            by_request: None,
            cause: Some(ErasureCause::Direct),
            records: vec![],
            policy_id: String::new(),
        },
        ErasedSubject {
            subject_id: by_request.clone(),
            at: erased_at,
            by_request: Some(in_flight.rights_request_id.clone()),
            cause: Some(ErasureCause::RightsRequest),
            records: vec![],
            policy_id: String::new(),
        },
        // Only records of the bystander went (a sweep): nothing of it is destroyed.
        ErasedSubject {
            subject_id: bystander.clone(),
            at: erased_at,
            by_request: None,
            cause: Some(ErasureCause::Retention),
            records: vec![ErasedRecord {
                record_id: uuid::Uuid::new_v4().to_string(),
                category: "FINANCIAL".into(),
                field: "invoice".into(),
            }],
            policy_id: "p-1".into(),
        },
    ];
    // The bystander's newsletter is restricted and lifted again (Art. 18, 19); the
    // restriction a request carried out is left to that request's fulfilment.
    let restriction = |restricted, by_request: Option<String>| RestrictionChange {
        subject_id: bystander.clone(),
        restricted,
        purposes: vec!["newsletter".into()],
        at: at(5),
        by_request,
    };
    let restrictions = vec![
        restriction(true, None),
        restriction(true, Some(other.rights_request_id.clone())),
        restriction(false, None),
    ];
    let applied = s
        .shred_erased("t1", restrictions.clone(), erasures.clone(), key.as_ref())
        .await
        .expect("apply");
    assert_eq!(applied, 6);
    // The erasures no request carried out are on the feed, with why (Art. 17(2), 19),
    // after the restriction changes.
    let feed = s
        .list_events("t1", &EventFilter::default(), 0, 1000)
        .await
        .expect("feed")
        .items;
    let summary: Vec<(String, String, String)> = feed
        .iter()
        .map(|e| (e.event_type.clone(), e.subject_id.clone(), e.detail.clone()))
        .collect();
    assert_eq!(feed.len(), 4, "{summary:?}");
    for (e, want) in feed[..2].iter().zip([
        "RIGHTS_EVENT_TYPE_RESTRICTED",
        "RIGHTS_EVENT_TYPE_RESTRICTION_LIFTED",
    ]) {
        assert_eq!(e.event_type, want);
        assert_eq!(e.subject_id, bystander);
        assert_eq!(e.purposes, r#"["newsletter"]"#);
        assert_eq!(e.rights_request_id, "");
    }
    let feed = &feed[2..];
    assert_eq!(feed[0].event_type, "RIGHTS_EVENT_TYPE_ERASED");
    assert_eq!(feed[0].subject_id, erased);
    assert!(feed[0].detail.contains("Direct"), "{}", feed[0].detail);
    assert_eq!(feed[1].event_type, "RIGHTS_EVENT_TYPE_RECORDS_ERASED");
    assert_eq!(feed[1].subject_id, bystander);
    assert!(feed[1].detail.contains("invoice") && feed[1].detail.contains("p-1"));
    let get = |r: &request::Model| {
        let s = s.clone();
        let (t, id) = (r.tenant_id.clone(), r.rights_request_id.clone());
        async move { s.request(&t, &id).await.expect("get").expect("row") }
    };
    for r in [&access, &pending_access] {
        let now = get(r).await;
        assert!(now.personal.is_empty() && now.wrapped_key.is_empty());
        assert_eq!(now.personal_erased_at, Some(erased_at));
        assert!(now.version > r.version);
    }
    assert!(
        s.report("t1", &access.rights_request_id)
            .await
            .expect("report")
            .is_none(),
        "the access report is gone"
    );
    // The in-flight erasure is untouched: its fulfilment's compare-and-set still holds.
    let now = get(&in_flight).await;
    assert_eq!(
        (now.personal.clone(), now.version, now.personal_erased_at),
        (in_flight.personal.clone(), in_flight.version, None)
    );
    // Other tenants and other subjects are untouched.
    for r in [&foreign, &other] {
        let now = get(r).await;
        assert_eq!(now.personal, r.personal);
        assert_eq!(now.personal_erased_at, None);
        assert!(
            s.report(&r.tenant_id, &r.rights_request_id)
                .await
                .expect("report")
                .is_some()
        );
    }
    // A repeat answers the same and destroys nothing more.
    let replayed: Option<i32> = s.replay(key.as_ref()).await.expect("replay");
    assert_eq!(replayed, Some(6));
    let again = s
        .shred_erased("t1", vec![], erasures, None)
        .await
        .expect("apply again");
    assert_eq!(again, 3);
    assert_eq!(get(&access).await.personal_erased_at, Some(erased_at));
}

/// A master-key rotation meets another replica's erasure of a subject. Inside a page
/// (PostgreSQL: the erasure holds the rows it shreds while the page's rewrite waits on
/// them, then commits) and between pages (a page of one key, the erasure after the
/// first): the erasure wins every time. The destroyed data keys stay destroyed, and
/// the other subject's key is re-wrapped.
async fn a_rotation_never_brings_back_a_key_an_erasure_destroyed_meanwhile(target: DbTarget) {
    use sea_orm::{ConnectionTrait, DbBackend, Statement, TransactionTrait};
    use vern_seal::crypto::{DataKey, MasterKey};
    use vern_seal::keyring::Keyring;
    let rotator = RightsStore::open(&target).await.expect("open");
    let other = RightsStore::open(&target).await.expect("another replica");
    let postgres = target.schema.is_some();
    let v1 = Keyring::new(Some(MasterKey::from_bytes([7; 32])), Default::default()).expect("v1");
    let v2 = Keyring::versioned(
        Some((2, MasterKey::from_bytes([9; 32]))),
        vec![(1, MasterKey::from_bytes([7; 32]))],
        1,
        Default::default(),
    )
    .expect("v2");
    let kek = v1.tenant("t1").expect("tenant keys").kek;
    let (erased, kept) = (
        uuid::Uuid::new_v4().to_string(),
        uuid::Uuid::new_v4().to_string(),
    );
    let mut requests = vec![];
    for (subject, ty) in [
        (&erased, "ACCESS"),
        (&erased, "RECTIFICATION"),
        (&kept, "ACCESS"),
    ] {
        let mut r = personal_request("t1", subject, ty);
        r.wrapped_key = kek.wrap(
            &DataKey::generate(),
            &vern_rights::seal::key_aad("t1", &r.rights_request_id),
        );
        rotator
            .insert_request(r.clone(), None)
            .await
            .expect("insert");
        requests.push(r);
    }
    let rotate = |page_size: i32, page_token: String| {
        let (rotator, v2) = (rotator.clone(), v2.clone());
        async move {
            rotator
                .rewrap_data_keys(
                    &v2,
                    &vern_proto::common::v1::RewrapDataKeysRequest {
                        page_size,
                        page_token,
                        ..Default::default()
                    },
                )
                .await
                .expect("rotation page")
        }
    };
    let erase = || async {
        other
            .shred_erased(
                "t1",
                vec![],
                vec![ErasedSubject {
                    subject_id: erased.clone(),
                    at: at(5),
                    by_request: None,
                    cause: Some(ErasureCause::Direct),
                    records: vec![],
                    policy_id: String::new(),
                }],
                None,
            )
            .await
            .expect("erasure")
    };
    let rewrapped = if postgres {
        // Inside a page: the erasure's transaction has destroyed the keys and holds
        // their rows; the page is read (the old keys are still what is committed) and
        // its rewrite waits on those rows; then the erasure commits.
        let txn = other.connection().begin().await.expect("begin");
        txn.execute_raw(Statement::from_sql_and_values(
            DbBackend::Postgres,
            "UPDATE rights_requests SET wrapped_key = ''::bytea WHERE tenant_id = $1 AND subject_id = $2",
            ["t1".into(), erased.clone().into()],
        ))
        .await
        .expect("the erasure's shred");
        let holder: i32 = txn
            .query_one_raw(Statement::from_string(
                DbBackend::Postgres,
                "SELECT pg_backend_pid() AS pid",
            ))
            .await
            .expect("pid")
            .and_then(|r| r.try_get::<i32>("", "pid").ok())
            .expect("a pid");
        let page = tokio::spawn(rotate(100, String::new()));
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
        loop {
            let waiting = rotator
                .connection()
                .query_one_raw(Statement::from_sql_and_values(
                    DbBackend::Postgres,
                    "SELECT count(*) AS n FROM pg_stat_activity WHERE $1 = ANY(pg_blocking_pids(pid))",
                    [holder.into()],
                ))
                .await
                .expect("activity")
                .and_then(|r| r.try_get::<i64>("", "n").ok())
                .unwrap_or(0);
            if waiting > 0 {
                break;
            }
            assert!(
                std::time::Instant::now() < deadline,
                "the page's rewrite never waited on the erasure"
            );
            tokio::time::sleep(std::time::Duration::from_millis(10)).await;
        }
        txn.commit().await.expect("the erasure commits");
        page.await.expect("page").rewrapped
    } else {
        // Between pages: one key per page, the erasure after the first.
        let first = rotate(1, String::new()).await;
        erase().await;
        let mut total = first.rewrapped;
        let mut token = first.next_page_token;
        while !token.is_empty() {
            let p = rotate(1, token).await;
            total += p.rewrapped;
            token = p.next_page_token;
        }
        total
    };
    for r in &requests {
        let now = rotator
            .request("t1", &r.rights_request_id)
            .await
            .expect("read")
            .expect("row");
        if r.subject_id == erased {
            assert!(
                now.wrapped_key.is_empty(),
                "{}: a destroyed data key came back",
                r.request_type
            );
        } else {
            assert_eq!(
                v2.tenant("t1")
                    .expect("keys")
                    .kek
                    .version_of(&now.wrapped_key)
                    .expect("version"),
                vern_seal::keyring::KeyVersion::Master(2),
                "the other subject's key is re-wrapped"
            );
        }
    }
    // The first page may have re-wrapped an erased subject's key before the erasure
    // (between pages); inside a page only the other subject's.
    if postgres {
        assert_eq!(rewrapped, 1);
    } else {
        assert!((1..=2).contains(&rewrapped), "{rewrapped}");
    }
}
