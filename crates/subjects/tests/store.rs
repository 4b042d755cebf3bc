//! The subjects use cases and stores, run on SQLite and on PostgreSQL.
//!
//! Each test gets the main store's target from the suite and derives the key store's
//! from it: a sibling SQLite file, or the same PostgreSQL URL with schema `<schema>_keys`.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use chrono::{DateTime, Duration, Utc};
use prost::Message;
use sea_orm::{
    ActiveModelTrait, ConnectionTrait, DbBackend, EntityTrait, IntoActiveModel, QueryResult,
    Statement,
};
use vern_kit::ApiError;
use vern_kit::context::TenantId;
use vern_kit::db::Db;
use vern_kit::db::DbTarget;
use vern_kit::outbox::{Deliver, DeliveryError, deliver_topic};
use vern_proto::consents::v1 as consents;
use vern_subjects::domain::crypto::{KEY_LEN, MasterKey, TenantKey};
use vern_subjects::domain::identifiers::NationalIdKind;
use vern_subjects::domain::keyring::Keyring;
use vern_subjects::domain::{
    DataCategory, ExternalRef, NewSubject, PurgeAction, PurgeFilter, PurgeRequest, RecordInput,
    Retain, SubjectChanges, SubjectState, View,
};
use vern_subjects::error::SubjectError;
use vern_subjects::purposes::FixedPurposes;
use vern_subjects::service::{
    ImportOutcome, ImportRow, Lookup, RecordsPage, RestrictionCall, Subjects,
};
use vern_subjects::store::entities::{lookup, record, subject};
use vern_subjects::store::{KeyStore, ListFilter, SubjectStore};

use vern_subjects::domain::IdentifierKind::{Email, NationalId, Phone};

vern_kit::store_test_suite!("subjects":
    create_get_and_find_by_every_identifier,
    identifiers_and_references_are_unique_per_tenant,
    bad_input_is_invalid_argument_and_writes_nothing,
    tenants_are_isolated,
    tenant_without_a_key_is_refused,
    create_is_idempotent_by_request_id,
    rectification_re_encrypts_and_moves_the_blind_index,
    records_are_added_rectified_and_deleted,
    subjects_page_in_order_with_filters,
    state_changes_land_in_the_outbox_with_increasing_versions,
    restriction_per_purpose_keeps_the_subject_active_and_tells_consents_and_the_feed,
    a_refused_outbox_row_is_parked_and_holds_up_nothing,
    erased_subject_is_a_tombstone,
    erasure_with_retained_records_restricts_until_purged,
    records_kept_without_end_match_only_when_asked,
    records_come_a_page_at_a_time,
    raw_tables_hold_no_plaintext_identifier,
    crypto_shredding_survives_restoring_rows_from_a_backup,
    purge_dry_run_real_run_and_exclusions,
    external_references_are_sealed_and_shredded,
    plaintext_references_of_older_versions_are_sealed,
    restriction_reasons_are_sealed_and_shredded,
    plaintext_restriction_reasons_of_older_versions_are_sealed,
    import_creates_each_row_as_create_would,
    import_replays_rows_by_request_id,
    import_mixed_batch_commits_the_valid_rows_and_names_the_bad_fields,
    reindex_rewrites_every_entry_and_leaves_what_changed_meanwhile,
    a_reindex_leaves_entries_another_replica_changed_inside_and_between_its_pages,
);

// ---- fixtures ----

struct Env {
    s: Subjects,
    key_target: DbTarget,
    main_target: DbTarget,
}

impl Env {
    /// Drops the key store's PostgreSQL schema (the suite drops the main one).
    async fn done(self) {
        if let Some(schema) = &self.key_target.schema {
            vern_kit::testing::drop_schemas(&self.key_target.url, std::slice::from_ref(schema))
                .await;
        }
    }

    fn db(&self) -> &Db {
        self.s.store().connection()
    }

    fn keys_db(&self) -> &Db {
        self.s.key_store().connection()
    }
}

fn key_target(main: &DbTarget) -> DbTarget {
    match &main.schema {
        Some(schema) => DbTarget {
            url: main.url.clone(),
            schema: Some(format!("{schema}_keys")),
            max_connections: None,
        },
        None => DbTarget {
            url: main.url.replace("/subjects.db", "/subject_keys.db"),
            schema: None,
            max_connections: None,
        },
    }
}

/// The purposes the tests' records name, with the categories each declares.
fn catalogue() -> FixedPurposes {
    use DataCategory::*;
    FixedPurposes(
        [
            ("newsletter", vec![Contact]),
            ("payroll", vec![Employment, Financial, Absence]),
            ("invoicing", vec![Contact, Financial]),
            ("a-b", vec![Contact]),
            ("customer-service", vec![Contact, Communications]),
            ("event-invitations", vec![Contact, Behaviour]),
            ("sick-leave", vec![Health, Absence]),
        ]
        .into_iter()
        .map(|(k, c)| (k.to_owned(), c))
        .collect(),
    )
}

fn keyring() -> Keyring {
    Keyring::new(Some(MasterKey::from_bytes([7; KEY_LEN])), HashMap::new()).expect("keyring")
}

async fn env_with(target: DbTarget, ring: Keyring) -> Env {
    let kt = key_target(&target);
    assert_ne!(kt, target, "the key store is a separate database");
    let store = SubjectStore::open(&target).await.expect("open store");
    let keys = KeyStore::open(&kt).await.expect("open key store");
    Env {
        s: Subjects::new(store, keys, ring, Arc::new(catalogue())),
        key_target: kt,
        main_target: target,
    }
}

async fn env(target: DbTarget) -> Env {
    env_with(target, keyring()).await
}

fn tenant_a() -> TenantId {
    TenantId::new("dept-a")
}

fn tenant_b() -> TenantId {
    TenantId::new("dept-b")
}

/// A valid national id from a date `ddmmyy` (with D/H/synthetic offsets applied by
/// the caller): the first individual number from 100 whose check digits both exist.
fn national_id(ddmmyy: &str) -> String {
    const K1: [u32; 9] = [3, 7, 6, 1, 8, 9, 4, 5, 2];
    const K2: [u32; 10] = [5, 4, 3, 2, 7, 6, 5, 4, 3, 2];
    let check = |d: &[u32], w: &[u32]| -> Option<u32> {
        let s: u32 = d.iter().zip(w).map(|(a, b)| a * b).sum();
        match 11 - s % 11 {
            11 => Some(0),
            10 => None,
            k => Some(k),
        }
    };
    (100..999)
        .find_map(|i| {
            let mut d: Vec<u32> = format!("{ddmmyy}{i:03}")
                .bytes()
                .map(|b| u32::from(b - b'0'))
                .collect();
            d.push(check(&d, &K1)?);
            d.push(check(&d, &K2)?);
            Some(d.iter().map(|x| x.to_string()).collect::<String>())
        })
        .expect("a valid number exists")
}

const EMAIL: &str = "Ola.Nordmann@Example.NO";
const EMAIL_NORMALISED: &str = "ola.nordmann@example.no";
const PHONE: &str = "412 34 567";
const PHONE_NORMALISED: &str = "+4741234567";
const ADDRESS: &str = "Storgata 1, 0155 Oslo";
const SALARY: &str = "Lønn 612 345 kr";

fn rec(category: DataCategory, field: &str, value: &str, purposes: &[&str]) -> RecordInput {
    RecordInput {
        category: Some(category),
        field: field.into(),
        value: value.into(),
        source: "crm".into(),
        purposes: purposes.iter().map(|p| (*p).to_owned()).collect(),
        collected_at: None,
        provided_by_subject: true,
    }
}

fn crm(id: &str) -> ExternalRef {
    ExternalRef {
        system: "crm".into(),
        id: id.into(),
    }
}

fn ola() -> NewSubject {
    NewSubject {
        email: EMAIL.into(),
        phone: PHONE.into(),
        national_id: national_id("010190"),
        external_refs: vec![
            crm("cust-1001"),
            ExternalRef {
                system: "accounting".into(),
                id: "K-77".into(),
            },
        ],
        records: vec![
            rec(DataCategory::Contact, "address", ADDRESS, &["newsletter"]),
            rec(DataCategory::Financial, "salary", SALARY, &["payroll"]),
        ],
        relationship_end_time: None,
    }
}

fn email_only(email: &str) -> NewSubject {
    NewSubject {
        email: email.into(),
        ..Default::default()
    }
}

fn code(e: SubjectError) -> tonic::Code {
    ApiError::from(e).code()
}

fn fields(e: SubjectError) -> Vec<String> {
    match ApiError::from(e) {
        ApiError::InvalidArgument(v) => v.into_iter().map(|v| v.field).collect(),
        other => panic!("expected INVALID_ARGUMENT, got {other:?}"),
    }
}

async fn count(db: &Db, table: &str) -> i64 {
    let row = db
        .query_one_raw(Statement::from_string(
            db.get_database_backend(),
            format!("SELECT COUNT(*) AS n FROM {table}"),
        ))
        .await
        .expect("count")
        .expect("a row");
    row.try_get::<i64>("", "n").expect("n")
}

const STATE: &str = vern_subjects::store::STATE_TOPIC;

/// The outbox's messages of `topic`, in order.
async fn outbox_of<M: Message + Default>(db: &Db, topic: &str) -> Vec<(String, M)> {
    let rows = vern_kit::outbox::entity::Entity::find()
        .all(db)
        .await
        .expect("outbox");
    for r in &rows {
        assert!(
            [STATE, vern_subjects::store::ERASURE_TOPIC].contains(&r.topic.as_str()),
            "{}",
            r.topic
        );
    }
    rows.into_iter()
        .filter(|r| r.topic == topic)
        .map(|r| {
            (
                r.tenant_id,
                M::decode(r.payload.as_slice()).expect("payload"),
            )
        })
        .collect()
}

/// The outbox's state changes, in order.
async fn outbox(db: &Db) -> Vec<(String, consents::SubjectStateChange)> {
    outbox_of(db, STATE).await
}

/// The outbox's notices for the rights service, each split as its delivery splits it.
async fn rights_notices(
    db: &Db,
) -> Vec<(String, vern_proto::rights::v1::ApplySubjectErasuresRequest)> {
    vern_kit::outbox::entity::Entity::find()
        .all(db)
        .await
        .expect("outbox")
        .into_iter()
        .filter(|r| r.topic == vern_subjects::store::ERASURE_TOPIC)
        .map(|r| {
            let req = vern_subjects::relay::erasure_request(&[r.payload]);
            assert_eq!(req.erasures.len() + req.restrictions.len(), 1);
            (r.tenant_id, req)
        })
        .collect()
}

/// The outbox's erasures for the rights service: (tenant, subject, rights request).
async fn erasures(db: &Db) -> Vec<(String, String, String)> {
    rights_notices(db)
        .await
        .into_iter()
        .flat_map(|(t, req)| {
            req.erasures.into_iter().map(move |e| {
                assert!(e.erase_time.is_some());
                (t.clone(), e.subject_id, e.rights_request_id)
            })
        })
        .collect()
}

/// The outbox's restriction notices: (subject, restricted, purposes, rights request).
async fn restrictions(db: &Db) -> Vec<(String, bool, Vec<String>, String)> {
    rights_notices(db)
        .await
        .into_iter()
        .flat_map(|(_, req)| {
            req.restrictions.into_iter().map(|r| {
                assert!(r.change_time.is_some());
                (r.subject_id, r.restricted, r.purposes, r.rights_request_id)
            })
        })
        .collect()
}

// ---- tests ----

async fn create_get_and_find_by_every_identifier(target: DbTarget) {
    let e = env(target).await;
    let a = tenant_a();
    let fnr = national_id("010190");
    let s = e.s.create(&a, ola(), None).await.expect("create");
    assert_eq!(s.state, SubjectState::Active);
    assert_eq!(s.tenant_id, "dept-a");
    assert_eq!(s.identifiers.email.as_deref(), Some(EMAIL_NORMALISED));
    assert_eq!(s.identifiers.phone.as_deref(), Some(PHONE_NORMALISED));
    assert_eq!(s.identifiers.national_id.as_deref(), Some(fnr.as_str()));
    assert_eq!(
        s.identifiers.national_id_kind,
        Some(NationalIdKind::Fodselsnummer)
    );
    assert_eq!(s.external_refs.len(), 2);
    let values: Vec<&str> = s.records.iter().map(|r| r.data.value.as_str()).collect();
    assert_eq!(values, [ADDRESS, SALARY]);
    assert_eq!(s.version, 1);

    let full = e.s.get(&a, &s.subject_id, View::Full).await.expect("get");
    assert_eq!(full, s);
    let basic =
        e.s.get(&a, &s.subject_id, View::Basic)
            .await
            .expect("basic");
    assert_eq!(basic.identifiers.email, None, "BASIC decrypts nothing");
    assert_eq!(basic.identifiers.national_id_kind, None);
    assert!(basic.records.iter().all(|r| r.data.value.is_empty()));
    assert_eq!(basic.records.len(), 2, "record metadata is shown");
    assert_eq!(basic.external_refs, s.external_refs);

    let spaced = format!("{} {}", &fnr[..6], &fnr[6..]);
    let lookups: Vec<(&str, Lookup)> = vec![
        (
            "email, other case",
            Lookup::Identifier(Email, "  OLA.NORDMANN@example.no".into()),
        ),
        (
            "phone with +47",
            Lookup::Identifier(Phone, "+47 41 23 45 67".into()),
        ),
        (
            "phone with 0047",
            Lookup::Identifier(Phone, "004741234567".into()),
        ),
        (
            "national id, spaced",
            Lookup::Identifier(NationalId, spaced),
        ),
        ("crm reference", Lookup::ExternalRef(crm("cust-1001"))),
        (
            "accounting reference",
            Lookup::ExternalRef(ExternalRef {
                system: "accounting".into(),
                id: "K-77".into(),
            }),
        ),
    ];
    for (name, by) in lookups {
        let found = e.s.find(&a, by, View::Basic).await.expect(name);
        assert_eq!(found.subject_id, s.subject_id, "{name}");
    }
    let misses: Vec<(&str, Lookup, tonic::Code)> = vec![
        (
            "unknown email",
            Lookup::Identifier(Email, "kari@example.no".into()),
            tonic::Code::NotFound,
        ),
        (
            "unknown ref",
            Lookup::ExternalRef(crm("cust-9")),
            tonic::Code::NotFound,
        ),
        (
            "bad email",
            Lookup::Identifier(Email, "no-at-sign".into()),
            tonic::Code::InvalidArgument,
        ),
        (
            "empty phone",
            Lookup::Identifier(Phone, String::new()),
            tonic::Code::InvalidArgument,
        ),
        (
            "bad ref",
            Lookup::ExternalRef(crm("")),
            tonic::Code::InvalidArgument,
        ),
    ];
    for (name, by, want) in misses {
        let err = e.s.find(&a, by, View::Basic).await.expect_err(name);
        assert_eq!(code(err), want, "{name}");
    }
    let err =
        e.s.get(&a, "not-a-uuid", View::Full)
            .await
            .expect_err("malformed");
    assert_eq!(fields(err), ["subject_id"]);
    let err =
        e.s.get(&a, &uuid::Uuid::now_v7().to_string(), View::Full)
            .await
            .expect_err("unknown");
    assert_eq!(code(err), tonic::Code::NotFound);
    e.done().await;
}

async fn identifiers_and_references_are_unique_per_tenant(target: DbTarget) {
    let e = env(target).await;
    let (a, b) = (tenant_a(), tenant_b());
    e.s.create(&a, ola(), None).await.expect("ola");
    let cases: Vec<(&str, NewSubject, tonic::Code)> = vec![
        (
            "same e-mail, other case",
            email_only("OLA.nordmann@example.no"),
            tonic::Code::AlreadyExists,
        ),
        (
            "same phone, other form",
            NewSubject {
                phone: "+4741234567".into(),
                ..Default::default()
            },
            tonic::Code::AlreadyExists,
        ),
        (
            "same national id",
            NewSubject {
                national_id: national_id("010190"),
                ..Default::default()
            },
            tonic::Code::AlreadyExists,
        ),
        (
            "same external reference",
            NewSubject {
                external_refs: vec![crm("cust-1001")],
                ..Default::default()
            },
            tonic::Code::AlreadyExists,
        ),
    ];
    for (name, new, want) in cases {
        let err = e.s.create(&a, new.clone(), None).await.expect_err(name);
        assert_eq!(code(err), want, "{name}");
        // Another tenant (controller) may hold the same person as its own subject.
        e.s.create(&b, new, None).await.expect(name);
    }
    assert_eq!(count(e.db(), "subjects").await, 5, "1 in A, 4 in B");
    assert_eq!(
        count(e.keys_db(), "subject_keys").await,
        5,
        "no orphan keys"
    );
    e.done().await;
}

async fn bad_input_is_invalid_argument_and_writes_nothing(target: DbTarget) {
    let e = env(target).await;
    let a = tenant_a();
    let fnr = national_id("010190");
    let wrong_check = format!("{}{}", &fnr[..10], (fnr.as_bytes()[10] - b'0' + 1) % 10);
    let cases: Vec<(&str, NewSubject, Vec<&str>)> = vec![
        ("bad e-mail", email_only("ola@@example"), vec!["email"]),
        (
            "bad fødselsnummer",
            NewSubject {
                national_id: wrong_check,
                ..ola()
            },
            vec!["national_id"],
        ),
        (
            "non-numeric national id",
            NewSubject {
                national_id: "0101901234A".into(),
                ..ola()
            },
            vec!["national_id"],
        ),
        (
            "bad phone",
            NewSubject {
                phone: "12".into(),
                ..ola()
            },
            vec!["phone"],
        ),
        (
            "bad record",
            NewSubject {
                records: vec![
                    rec(DataCategory::Contact, "name", "Ola", &["newsletter"]),
                    rec(DataCategory::Contact, "email", "x", &["newsletter"]),
                    RecordInput {
                        category: None,
                        ..rec(DataCategory::Contact, "x", "y", &["a-b"])
                    },
                ],
                ..ola()
            },
            vec!["records[2].category"],
        ),
        ("nothing to identify", NewSubject::default(), vec!["email"]),
        (
            "several at once",
            NewSubject {
                email: "x".into(),
                national_id: "123".into(),
                external_refs: vec![crm(" ")],
                ..Default::default()
            },
            vec!["email", "national_id", "external_refs[0].id"],
        ),
    ];
    for (name, new, want) in cases {
        let err = e.s.create(&a, new, None).await.expect_err(name);
        assert_eq!(fields(err), want, "{name}");
    }
    for table in [
        "subjects",
        "subject_lookups",
        "external_refs",
        "records",
        "outbox",
        "idempotency_keys",
    ] {
        assert_eq!(count(e.db(), table).await, 0, "nothing written to {table}");
    }
    assert_eq!(
        count(e.keys_db(), "subject_keys").await,
        0,
        "no key written"
    );
    e.done().await;
}

async fn tenants_are_isolated(target: DbTarget) {
    let e = env(target).await;
    let (a, b) = (tenant_a(), tenant_b());
    let s = e.s.create(&a, ola(), None).await.expect("create");
    let id = s.subject_id.as_str();
    let not_found = tonic::Code::NotFound;
    let results: Vec<(&str, Option<SubjectError>)> = vec![
        ("get", e.s.get(&b, id, View::Full).await.err()),
        (
            "find by e-mail",
            e.s.find(&b, Lookup::Identifier(Email, EMAIL.into()), View::Full)
                .await
                .err(),
        ),
        (
            "find by ref",
            e.s.find(&b, Lookup::ExternalRef(crm("cust-1001")), View::Full)
                .await
                .err(),
        ),
        (
            "erase",
            e.s.erase(&b, id, "Art. 17", vec![], "", None).await.err(),
        ),
        (
            "restrict",
            e.s.restrict(&b, RestrictionCall::whole(id, "accuracy contested"), None)
                .await
                .err(),
        ),
        (
            "update",
            e.s.update(
                &b,
                id,
                &["email".into()],
                SubjectChanges {
                    email: "x@example.no".into(),
                    ..Default::default()
                },
                None,
            )
            .await
            .err(),
        ),
        (
            "add records",
            e.s.add_records(
                &b,
                id,
                vec![rec(DataCategory::Contact, "name", "x", &["newsletter"])],
                None,
            )
            .await
            .err(),
        ),
        (
            "delete record",
            e.s.delete_record(&b, id, &s.records[0].record_id, None)
                .await
                .err(),
        ),
    ];
    for (name, err) in results {
        assert_eq!(err.map(code), Some(not_found), "{name}");
    }
    let listed =
        e.s.list(&b, None, 50, ListFilter::default(), View::Basic)
            .await
            .expect("list");
    assert!(listed.items.is_empty());
    // Nothing of A's changed.
    let again = e.s.get(&a, id, View::Full).await.expect("get");
    assert_eq!(again, s);
    e.done().await;
}

async fn tenant_without_a_key_is_refused(target: DbTarget) {
    let only_a = HashMap::from([("dept-a".to_owned(), TenantKey::from_bytes([9; KEY_LEN]))]);
    let e = env_with(target, Keyring::new(None, only_a).expect("ring")).await;
    e.s.create(&tenant_a(), ola(), None).await.expect("own key");
    let err =
        e.s.create(&tenant_b(), ola(), None)
            .await
            .expect_err("no key");
    assert_eq!(code(err), tonic::Code::FailedPrecondition);
    assert_eq!(count(e.db(), "subjects").await, 1);
    e.done().await;
}

async fn create_is_idempotent_by_request_id(target: DbTarget) {
    let e = env(target).await;
    let a = tenant_a();
    let key = |body: &[u8]| {
        e.s.request_key(&a, "req-1", "CreateSubject", body)
            .expect("key")
    };
    let first = e.s.create(&a, ola(), key(b"ola")).await.expect("first");
    let again = e.s.create(&a, ola(), key(b"ola")).await.expect("retry");
    assert_eq!(first, again, "same id, same answer");
    assert_eq!(count(e.db(), "subjects").await, 1, "one row");
    assert_eq!(count(e.keys_db(), "subject_keys").await, 1, "one key");
    assert_eq!(outbox(e.db()).await.len(), 1, "one notification");
    let err =
        e.s.create(&a, email_only("kari@example.no"), key(b"kari"))
            .await
            .expect_err("reused id");
    assert_eq!(code(err), tonic::Code::FailedPrecondition);
    assert_eq!(count(e.db(), "subjects").await, 1, "not written");
    // The same request id in another tenant is another request.
    let b = tenant_b();
    let other =
        e.s.request_key(&b, "req-1", "CreateSubject", b"ola")
            .expect("key");
    let in_b = e.s.create(&b, ola(), other).await.expect("other tenant");
    assert_ne!(in_b.subject_id, first.subject_id);
    assert!(
        e.s.request_key(&a, "", "CreateSubject", b"x")
            .expect("none")
            .is_none()
    );
    let err =
        e.s.request_key(&a, "bad id", "CreateSubject", b"x")
            .expect_err("space");
    assert_eq!(fields(err), ["request_id"]);
    e.done().await;
}

async fn rectification_re_encrypts_and_moves_the_blind_index(target: DbTarget) {
    let e = env(target).await;
    let a = tenant_a();
    let s = e.s.create(&a, ola(), None).await.expect("ola");
    let kari =
        e.s.create(&a, email_only("kari@example.no"), None)
            .await
            .expect("kari");
    let id = s.subject_id.as_str();
    let d_number = national_id("410190");
    let end = Utc::now() - Duration::days(3);
    let changes = SubjectChanges {
        email: "Ola@Nordmann.example".into(),
        phone: String::new(),
        national_id: d_number.clone(),
        relationship_end_time: Some(end),
        ..Default::default()
    };
    let mask: Vec<String> = ["email", "phone", "national_id", "relationship_end_time"]
        .map(String::from)
        .to_vec();
    let before = e.db_subject(id).await;
    let u =
        e.s.update(&a, id, &mask, changes, None)
            .await
            .expect("rectify");
    assert_eq!(u.identifiers.email.as_deref(), Some("ola@nordmann.example"));
    assert_eq!(u.identifiers.phone, None, "cleared");
    assert_eq!(
        u.identifiers.national_id.as_deref(),
        Some(d_number.as_str())
    );
    assert_eq!(
        u.identifiers.national_id_kind,
        Some(NationalIdKind::DNumber)
    );
    assert_eq!(
        u.relationship_end_time.map(|t| t.timestamp()),
        Some(end.timestamp())
    );
    assert_eq!(u.version, s.version, "not a state change");
    assert_eq!(u.records, s.records, "records untouched");
    let after = e.db_subject(id).await;
    assert_ne!(after.email_ct, before.email_ct, "re-encrypted");
    assert_eq!(after.phone_ct, None);

    let finds: Vec<(&str, Lookup, bool)> = vec![
        ("old e-mail", Lookup::Identifier(Email, EMAIL.into()), false),
        (
            "new e-mail",
            Lookup::Identifier(Email, "ola@nordmann.example".into()),
            true,
        ),
        (
            "cleared phone",
            Lookup::Identifier(Phone, PHONE.into()),
            false,
        ),
        (
            "old national id",
            Lookup::Identifier(NationalId, national_id("010190")),
            false,
        ),
        (
            "new national id",
            Lookup::Identifier(NationalId, d_number.clone()),
            true,
        ),
    ];
    for (name, by, hit) in finds {
        let got = e.s.find(&a, by, View::Basic).await;
        assert_eq!(got.is_ok(), hit, "{name}");
    }
    assert_eq!(
        count(e.db(), "subject_lookups").await,
        3,
        "2 of ola, 1 of kari"
    );

    let refs = vec![crm("cust-2002")];
    let u =
        e.s.update(
            &a,
            id,
            &["external_refs".into()],
            SubjectChanges {
                external_refs: refs.clone(),
                ..Default::default()
            },
            None,
        )
        .await
        .expect("refs");
    assert_eq!(u.external_refs, refs);
    assert!(
        e.s.find(&a, Lookup::ExternalRef(crm("cust-1001")), View::Basic)
            .await
            .is_err()
    );

    // Conflicts and bad input change nothing.
    let err =
        e.s.update(
            &a,
            id,
            &["email".into()],
            SubjectChanges {
                email: "KARI@example.no".into(),
                ..Default::default()
            },
            None,
        )
        .await
        .expect_err("taken");
    assert_eq!(code(err), tonic::Code::AlreadyExists);
    let err =
        e.s.update(
            &a,
            &kari.subject_id,
            &["external_refs".into()],
            SubjectChanges {
                external_refs: refs,
                ..Default::default()
            },
            None,
        )
        .await
        .expect_err("ref taken");
    assert_eq!(code(err), tonic::Code::AlreadyExists);
    let bad: Vec<(&str, Vec<String>, SubjectChanges, Vec<&str>)> = vec![
        (
            "no mask",
            vec![],
            SubjectChanges::default(),
            vec!["update_mask"],
        ),
        (
            "unknown path",
            vec!["state".into()],
            SubjectChanges::default(),
            vec!["update_mask.paths[0]"],
        ),
        (
            "bad national id",
            vec!["national_id".into()],
            SubjectChanges {
                national_id: "12345678901".into(),
                ..Default::default()
            },
            vec!["subject.national_id"],
        ),
        (
            "nothing left",
            vec!["email".into()],
            SubjectChanges::default(),
            vec!["update_mask"],
        ),
    ];
    let kari_id = kari.subject_id.as_str();
    for (name, mask, changes, want) in bad {
        let err =
            e.s.update(&a, kari_id, &mask, changes, None)
                .await
                .expect_err(name);
        assert_eq!(fields(err), want, "{name}");
    }
    let still = e.s.get(&a, kari_id, View::Full).await.expect("kari");
    assert_eq!(still.identifiers.email.as_deref(), Some("kari@example.no"));
    e.done().await;
}

impl Env {
    async fn db_subject(&self, id: &str) -> subject::Model {
        subject::Entity::find_by_id(("dept-a".to_owned(), id.to_owned()))
            .one(self.db())
            .await
            .expect("read")
            .expect("row")
    }
}

async fn records_are_added_rectified_and_deleted(target: DbTarget) {
    let e = env(target).await;
    let a = tenant_a();
    let s =
        e.s.create(&a, email_only("ola@example.no"), None)
            .await
            .expect("create");
    let id = s.subject_id.as_str();
    let collected = vern_kit::time::now() - Duration::days(400);
    let added =
        e.s.add_records(
            &a,
            id,
            vec![
                RecordInput {
                    collected_at: Some(collected),
                    ..rec(DataCategory::Employment, "title", "Rådgiver", &["payroll"])
                },
                rec(
                    DataCategory::Behaviour,
                    "event-attended",
                    "Klimafrokost 2024",
                    &["event-invitations"],
                ),
            ],
            None,
        )
        .await
        .expect("add");
    assert_eq!(added.len(), 2);
    assert_eq!(added[0].data.value, "Rådgiver");
    assert_eq!(added[0].data.collected_at, collected);
    let rid = added[0].record_id.clone();

    let changes = RecordInput {
        value: "Seniorrådgiver".into(),
        field: "ignored".into(),
        ..Default::default()
    };
    let u =
        e.s.update_record(&a, id, &rid, &["value".into()], changes, None)
            .await
            .expect("rectify");
    assert_eq!(u.data.value, "Seniorrådgiver");
    assert_eq!(u.data.field, "title", "not in the mask");
    let u =
        e.s.update_record(
            &a,
            id,
            &rid,
            &["purposes".into(), "category".into()],
            RecordInput {
                purposes: vec!["payroll".into(), "invoicing".into()],
                category: Some(DataCategory::Financial),
                ..Default::default()
            },
            None,
        )
        .await
        .expect("purposes");
    assert_eq!(u.data.value, "Seniorrådgiver", "value kept");
    assert_eq!(u.data.category, DataCategory::Financial);
    assert_eq!(u.data.purposes, ["payroll", "invoicing"]);

    let bad: Vec<(&str, Vec<RecordInput>, Vec<&str>)> = vec![
        ("none", vec![], vec!["records"]),
        (
            "a purpose the tenant does not have",
            vec![
                rec(DataCategory::Contact, "name", "x", &["newsletter"]),
                rec(
                    DataCategory::Contact,
                    "name",
                    "x",
                    &["newsletter", "no-such"],
                ),
            ],
            vec!["records[1].purposes[1]"],
        ),
        (
            "health data under a purpose not declaring it (Art. 9)",
            vec![rec(DataCategory::Health, "diagnosis", "x", &["newsletter"])],
            vec!["records[0].purposes[0]"],
        ),
        (
            "absence (may be sick leave) under a purpose not declaring it",
            vec![rec(
                DataCategory::Absence,
                "days",
                "3",
                &["sick-leave", "invoicing"],
            )],
            vec!["records[0].purposes[1]"],
        ),
        (
            "bad purposes",
            vec![
                rec(DataCategory::Contact, "name", "x", &[]),
                rec(DataCategory::Contact, "name", "x", &["Not A Key"]),
            ],
            vec!["records[0].purposes", "records[1].purposes[0]"],
        ),
    ];
    for (name, records, want) in bad {
        let err =
            e.s.add_records(&a, id, records, None)
                .await
                .expect_err(name);
        assert_eq!(fields(err), want, "{name}");
    }
    // Special categories under purposes declaring them are fine.
    let sick =
        e.s.create(&a, email_only("sick-leave@example.no"), None)
            .await
            .expect("subject");
    let ok =
        e.s.add_records(
            &a,
            &sick.subject_id,
            vec![
                rec(DataCategory::Health, "diagnosis", "x", &["sick-leave"]),
                rec(
                    DataCategory::Absence,
                    "days",
                    "3",
                    &["payroll", "sick-leave"],
                ),
            ],
            None,
        )
        .await
        .expect("declared special categories");
    assert_eq!(ok.len(), 2);
    // A rectification moving a record under an unknown purpose is refused too.
    let err =
        e.s.update_record(
            &a,
            id,
            &rid,
            &["purposes".into()],
            RecordInput {
                purposes: vec!["no-such".into()],
                ..Default::default()
            },
            None,
        )
        .await
        .expect_err("unknown purpose");
    assert_eq!(fields(err), ["record.purposes[0]"]);
    let err =
        e.s.update_record(
            &a,
            id,
            &rid,
            &["category".into()],
            RecordInput::default(),
            None,
        )
        .await
        .expect_err("no category");
    assert_eq!(fields(err), ["record.category"]);

    e.s.delete_record(&a, id, &rid, None).await.expect("delete");
    let err =
        e.s.delete_record(&a, id, &rid, None)
            .await
            .expect_err("gone");
    assert_eq!(code(err), tonic::Code::NotFound);
    let got = e.s.get(&a, id, View::Full).await.expect("get");
    assert_eq!(got.records.len(), 1);
    assert_eq!(got.records[0].data.value, "Klimafrokost 2024");

    // A record of another subject is not this subject's.
    let other =
        e.s.create(&a, email_only("kari@example.no"), None)
            .await
            .expect("kari");
    let err =
        e.s.delete_record(&a, &other.subject_id, &got.records[0].record_id, None)
            .await
            .expect_err("not hers");
    assert_eq!(code(err), tonic::Code::NotFound);

    // A restricted subject's data may only be stored.
    e.s.restrict(
        &a,
        RestrictionCall::whole(id, "accuracy contested (Art. 18(1)(a))"),
        None,
    )
    .await
    .expect("restrict");
    let err =
        e.s.add_records(
            &a,
            id,
            vec![rec(DataCategory::Contact, "name", "x", &["newsletter"])],
            None,
        )
        .await
        .expect_err("restricted");
    assert_eq!(code(err), tonic::Code::FailedPrecondition);
    e.done().await;
}

async fn subjects_page_in_order_with_filters(target: DbTarget) {
    let e = env(target).await;
    let a = tenant_a();
    let mut ids = vec![];
    for i in 0..5 {
        let new = NewSubject {
            email: format!("person{i}@example.no"),
            external_refs: if i % 2 == 0 {
                vec![crm(&format!("c-{i}"))]
            } else {
                vec![]
            },
            ..Default::default()
        };
        ids.push(e.s.create(&a, new, None).await.expect("create").subject_id);
    }
    e.s.create(&tenant_b(), email_only("person0@example.no"), None)
        .await
        .expect("b");
    e.s.restrict(
        &a,
        RestrictionCall::whole(&ids[1], "objection pending"),
        None,
    )
    .await
    .expect("restrict");

    let mut seen = vec![];
    let mut cursor: Option<String> = None;
    loop {
        let page =
            e.s.list(&a, cursor.as_deref(), 2, ListFilter::default(), View::Basic)
                .await
                .expect("page");
        assert!(page.items.len() <= 2);
        assert!(
            page.items.iter().all(|s| s.identifiers.email.is_none()),
            "BASIC"
        );
        seen.extend(page.items.iter().map(|s| s.subject_id.clone()));
        if !page.more {
            break;
        }
        cursor = page.items.last().map(vern_subjects::service::cursor);
    }
    assert_eq!(seen, ids, "every subject once, in creation order");

    let cases: Vec<(&str, ListFilter, Vec<&String>)> = vec![
        (
            "restricted",
            ListFilter {
                state: Some(SubjectState::Restricted),
                ..Default::default()
            },
            vec![&ids[1]],
        ),
        (
            "in crm",
            ListFilter {
                external_system: Some("crm".into()),
                ..Default::default()
            },
            vec![&ids[0], &ids[2], &ids[4]],
        ),
        (
            "active in crm",
            ListFilter {
                state: Some(SubjectState::Active),
                external_system: Some("crm".into()),
            },
            vec![&ids[0], &ids[2], &ids[4]],
        ),
        (
            "in accounting",
            ListFilter {
                external_system: Some("accounting".into()),
                ..Default::default()
            },
            vec![],
        ),
    ];
    for (name, filter, want) in cases {
        let page =
            e.s.list(&a, None, 50, filter, View::Basic)
                .await
                .expect(name);
        let got: Vec<&String> = page.items.iter().map(|s| &s.subject_id).collect();
        assert_eq!(got, want, "{name}");
    }
    let full =
        e.s.list(&a, None, 1, ListFilter::default(), View::Full)
            .await
            .expect("full");
    assert_eq!(
        full.items[0].identifiers.email.as_deref(),
        Some("person0@example.no")
    );
    let err =
        e.s.list(&a, Some("garbage"), 2, ListFilter::default(), View::Basic)
            .await
            .expect_err("cursor");
    assert_eq!(fields(err), ["page_token"]);
    e.done().await;
}

/// One delivered batch: tenant, topic, payloads.
type Delivered = (String, String, Vec<Vec<u8>>);

/// Records what the relay delivers; fails while `fail` is set; refuses (as an
/// INVALID_ARGUMENT receiver would) any batch holding a change of version `refuse`.
#[derive(Default)]
struct FakeConsents {
    got: Mutex<Vec<Delivered>>,
    fail: std::sync::atomic::AtomicBool,
    refuse: std::sync::atomic::AtomicI64,
}

#[async_trait::async_trait]
impl Deliver for FakeConsents {
    async fn deliver(
        &self,
        tenant: &str,
        topic: &str,
        payloads: Vec<Vec<u8>>,
    ) -> Result<(), DeliveryError> {
        if self.fail.load(std::sync::atomic::Ordering::SeqCst) {
            return Err(DeliveryError::Retry("consents unavailable".into()));
        }
        let refuse = self.refuse.load(std::sync::atomic::Ordering::SeqCst);
        if refuse > 0
            && vern_subjects::relay::batch_request(&payloads)
                .changes
                .iter()
                .any(|c| c.version == refuse)
        {
            return Err(DeliveryError::Refused(
                "ApplySubjectStates: InvalidArgument: changes[0].version".into(),
            ));
        }
        self.got
            .lock()
            .expect("lock")
            .push((tenant.to_owned(), topic.to_owned(), payloads));
        Ok(())
    }
}

async fn state_changes_land_in_the_outbox_with_increasing_versions(target: DbTarget) {
    use consents::SubjectState as C;
    let e = env(target).await;
    let a = tenant_a();
    let s = e.s.create(&a, ola(), None).await.expect("create");
    let id = s.subject_id.as_str();
    let r =
        e.s.restrict(&a, RestrictionCall::whole(id, "accuracy contested"), None)
            .await
            .expect("restrict");
    assert_eq!(r.state, SubjectState::Restricted);
    assert_eq!(r.restriction_reason, "accuracy contested");
    assert!(r.restrict_time.is_some());
    let again =
        e.s.restrict(&a, RestrictionCall::whole(id, "again"), None)
            .await
            .expect("no-op");
    assert_eq!(
        again.version, r.version,
        "restricting a restricted subject changes nothing"
    );
    let l =
        e.s.lift_restriction(&a, RestrictionCall::whole(id, "verified"), None)
            .await
            .expect("lift");
    assert_eq!(l.state, SubjectState::Active);
    assert_eq!(l.restrict_time, None);
    let err =
        e.s.lift_restriction(&a, RestrictionCall::whole(id, "verified"), None)
            .await
            .expect_err("not restricted");
    assert_eq!(code(err), tonic::Code::FailedPrecondition);
    let err =
        e.s.restrict(&a, RestrictionCall::whole(id, " "), None)
            .await
            .expect_err("reason");
    assert_eq!(fields(err), ["reason"]);
    e.s.restrict(&a, RestrictionCall::whole(id, "objection"), None)
        .await
        .expect("restrict");
    e.s.erase(&a, id, "Art. 17 request", vec![], "", None)
        .await
        .expect("erase");
    let other =
        e.s.create(&tenant_b(), email_only("x@example.no"), None)
            .await
            .expect("b");

    let changes = outbox(e.db()).await;
    let got: Vec<(&str, &str, i32, i64)> = changes
        .iter()
        .map(|(t, c)| (t.as_str(), c.subject_id.as_str(), c.state, c.version))
        .collect();
    assert_eq!(
        got,
        vec![
            ("dept-a", id, C::Active as i32, 1),
            ("dept-a", id, C::Restricted as i32, 2),
            ("dept-a", id, C::Active as i32, 3),
            ("dept-a", id, C::Restricted as i32, 4),
            ("dept-a", id, C::Erased as i32, 5),
            ("dept-b", other.subject_id.as_str(), C::Active as i32, 1),
        ]
    );
    assert!(changes.iter().all(|(_, c)| c.change_time.is_some()));
    assert_eq!(
        erasures(e.db()).await,
        [("dept-a".to_owned(), id.to_owned(), String::new())],
        "the rights service is told of the erasure"
    );

    // The relay delivers per tenant, in order, and keeps what failed.
    let fake = FakeConsents::default();
    fake.fail.store(true, std::sync::atomic::Ordering::SeqCst);
    assert!(deliver_topic(e.db(), &fake, 100, STATE).await.is_err());
    assert_eq!(outbox(e.db()).await.len(), 6, "kept for a retry");
    fake.fail.store(false, std::sync::atomic::Ordering::SeqCst);
    assert_eq!(deliver_topic(e.db(), &fake, 100, STATE).await, Ok(6));
    assert!(outbox(e.db()).await.is_empty());
    let got = fake.got.lock().expect("lock").clone();
    assert_eq!(got.len(), 2, "one batch per tenant");
    assert_eq!(
        (got[0].0.as_str(), got[0].1.as_str(), got[0].2.len()),
        ("dept-a", "subject_state", 5)
    );
    let req = vern_subjects::relay::batch_request(&got[0].2);
    let versions: Vec<i64> = req.changes.iter().map(|c| c.version).collect();
    assert_eq!(versions, [1, 2, 3, 4, 5]);
    assert_eq!(got[1].0, "dept-b");
    e.done().await;
}

/// Art. 18 per purpose: the subject stays ACTIVE, consents hears the whole current set
/// of restricted purposes, the rights feed hears what was restricted and lifted.
async fn restriction_per_purpose_keeps_the_subject_active_and_tells_consents_and_the_feed(
    target: DbTarget,
) {
    let e = env(target).await;
    let a = tenant_a();
    let s = e.s.create(&a, ola(), None).await.expect("create");
    let id = s.subject_id.as_str();
    let purposes = |p: &[&str]| p.iter().map(|s| (*s).to_owned()).collect::<Vec<_>>();
    fn call<'a>(id: &'a str, purposes: &'a [String], reason: &'a str) -> RestrictionCall<'a> {
        RestrictionCall {
            purposes,
            ..RestrictionCall::whole(id, reason)
        }
    }
    let news = purposes(&["newsletter"]);
    let both = purposes(&["newsletter", "event-invitations"]);
    let unknown = purposes(&["invoicing", "no-such-purpose"]);
    let invoicing = purposes(&["invoicing"]);
    let r =
        e.s.restrict(&a, call(id, &news, "accuracy contested"), None)
            .await
            .expect("restrict");
    assert_eq!(
        r.state,
        SubjectState::Active,
        "the contract is still served"
    );
    assert_eq!(r.restricted_purposes, ["newsletter"]);
    assert_eq!(r.restriction_reason, "accuracy contested");
    let again =
        e.s.restrict(&a, call(id, &news, "again"), None)
            .await
            .expect("no-op");
    assert_eq!(
        again.version, r.version,
        "already restricted: nothing changes"
    );
    let r =
        e.s.restrict(&a, call(id, &both, "objection pending"), None)
            .await
            .expect("add");
    assert_eq!(r.restricted_purposes, ["event-invitations", "newsletter"]);
    let err =
        e.s.restrict(&a, call(id, &unknown, "x"), None)
            .await
            .expect_err("unknown purpose");
    assert_eq!(fields(err), ["purposes[1]"]);
    let err =
        e.s.lift_restriction(&a, call(id, &invoicing, "x"), None)
            .await
            .expect_err("not restricted");
    assert_eq!(code(err), tonic::Code::FailedPrecondition);
    let l =
        e.s.lift_restriction(&a, call(id, &news, "verified"), None)
            .await
            .expect("lift one");
    assert_eq!(l.restricted_purposes, ["event-invitations"]);
    assert_eq!(
        l.restriction_reason, "objection pending",
        "the rest stays as it was"
    );
    // Restricting the whole subject absorbs the purposes; purposes cannot be lifted
    // from it, only the whole restriction.
    let w =
        e.s.restrict(&a, RestrictionCall::whole(id, "legal claims"), None)
            .await
            .expect("whole");
    assert_eq!(
        (w.state, w.restricted_purposes.len()),
        (SubjectState::Restricted, 0)
    );
    let err =
        e.s.lift_restriction(&a, call(id, &news, "x"), None)
            .await
            .expect_err("wholly restricted");
    assert_eq!(code(err), tonic::Code::FailedPrecondition);
    let l =
        e.s.lift_restriction(&a, RestrictionCall::whole(id, "claims settled"), None)
            .await
            .expect("lift all");
    assert_eq!(
        (l.state, l.restricted_purposes.len()),
        (SubjectState::Active, 0)
    );

    use consents::SubjectState as C;
    let got: Vec<(i32, i64, Vec<String>)> = outbox(e.db())
        .await
        .into_iter()
        .map(|(_, c)| (c.state, c.version, c.restricted_purposes))
        .collect();
    assert_eq!(
        got,
        vec![
            (C::Active as i32, 1, vec![]),
            (C::Active as i32, 2, purposes(&["newsletter"])),
            (
                C::Active as i32,
                3,
                purposes(&["event-invitations", "newsletter"])
            ),
            (C::Active as i32, 4, purposes(&["event-invitations"])),
            (C::Restricted as i32, 5, vec![]),
            (C::Active as i32, 6, vec![]),
        ],
        "consents gets the whole current set with every change"
    );
    assert_eq!(
        restrictions(e.db()).await,
        vec![
            (
                id.to_owned(),
                true,
                purposes(&["newsletter"]),
                String::new()
            ),
            (
                id.to_owned(),
                true,
                purposes(&["event-invitations"]),
                String::new()
            ),
            (
                id.to_owned(),
                false,
                purposes(&["newsletter"]),
                String::new()
            ),
            (id.to_owned(), true, vec![], String::new()),
            (id.to_owned(), false, vec![], String::new()),
        ],
        "the feed hears what changed (Art. 19)"
    );
    e.done().await;
}

/// One row its receiver refuses (INVALID_ARGUMENT) is parked, visible and counted;
/// the rows behind it, of its tenant and of the others, are delivered in order.
async fn a_refused_outbox_row_is_parked_and_holds_up_nothing(target: DbTarget) {
    let e = env(target).await;
    let a = tenant_a();
    let s = e.s.create(&a, ola(), None).await.expect("create");
    let id = s.subject_id.as_str();
    e.s.restrict(&a, RestrictionCall::whole(id, "accuracy contested"), None)
        .await
        .expect("restrict");
    e.s.lift_restriction(&a, RestrictionCall::whole(id, "verified"), None)
        .await
        .expect("lift");
    e.s.create(&tenant_b(), email_only("x@example.no"), None)
        .await
        .expect("b");
    let fake = FakeConsents::default();
    // Version 2 of dept-a's subject is poison.
    fake.refuse.store(2, std::sync::atomic::Ordering::SeqCst);
    assert_eq!(
        deliver_topic(e.db(), &fake, 100, STATE).await,
        Ok(3),
        "everything but the refused row is delivered at once"
    );
    let got = fake.got.lock().expect("lock").clone();
    let delivered: Vec<(String, Vec<i64>)> = got
        .iter()
        .map(|(t, _, p)| {
            let versions = vern_subjects::relay::batch_request(p)
                .changes
                .iter()
                .map(|c| c.version)
                .collect();
            (t.clone(), versions)
        })
        .collect();
    assert_eq!(
        delivered,
        vec![
            ("dept-a".to_owned(), vec![1]),
            ("dept-a".to_owned(), vec![3]),
            ("dept-b".to_owned(), vec![1]),
        ]
    );
    let parked = vern_kit::outbox::parked(e.db()).await.expect("parked");
    assert_eq!(parked.len(), 1);
    assert_eq!(parked[0].tenant_id, "dept-a");
    assert!(parked[0].parked_at.is_some());
    assert!(
        parked[0]
            .park_reason
            .as_deref()
            .is_some_and(|r| r.contains("InvalidArgument")),
        "{:?}",
        parked[0].park_reason
    );
    assert_eq!(
        vern_kit::outbox::backlog(e.db()).await.expect("backlog"),
        2,
        "only the restriction's and its lifting's notices wait, for the rights topic"
    );
    // The parked row stays parked: later relays skip it.
    fake.refuse.store(0, std::sync::atomic::Ordering::SeqCst);
    assert_eq!(deliver_topic(e.db(), &fake, 100, STATE).await, Ok(0));
    e.done().await;
}

async fn erased_subject_is_a_tombstone(target: DbTarget) {
    let e = env(target).await;
    let a = tenant_a();
    let s = e.s.create(&a, ola(), None).await.expect("create");
    let id = s.subject_id.as_str();
    let key =
        e.s.request_key(&a, "erase-1", "EraseSubject", b"erase")
            .expect("key");
    let out =
        e.s.erase(&a, id, "Art. 17 request", vec![], "", key.clone())
            .await
            .expect("erase");
    assert!(out.fully_erased);
    assert_eq!(out.state, SubjectState::Erased);
    assert_eq!(out.erased_record_count, 2);
    assert_eq!(
        e.s.erase(&a, id, "Art. 17 request", vec![], "", key)
            .await
            .expect("retry"),
        out
    );
    let again =
        e.s.erase(&a, id, "again", vec![], "", None)
            .await
            .expect("repeat");
    assert!(again.fully_erased);
    assert_eq!(again.erase_time, out.erase_time);
    assert_eq!(again.erased_record_count, 0);

    for view in [View::Full, View::Basic] {
        let t = e.s.get(&a, id, view).await.expect("tombstone");
        assert_eq!(t.state, SubjectState::Erased);
        assert_eq!(t.erase_time, Some(out.erase_time));
        assert_eq!(t.identifiers, Default::default());
        assert!(t.records.is_empty() && t.external_refs.is_empty());
    }
    let finds = [
        Lookup::Identifier(Email, EMAIL.into()),
        Lookup::Identifier(Phone, PHONE.into()),
        Lookup::Identifier(NationalId, national_id("010190")),
        Lookup::ExternalRef(crm("cust-1001")),
    ];
    for by in finds {
        let err = e.s.find(&a, by, View::Basic).await.expect_err("erased");
        assert_eq!(code(err), tonic::Code::NotFound);
    }
    let refused: Vec<(&str, Option<SubjectError>)> = vec![
        (
            "restrict",
            e.s.restrict(&a, RestrictionCall::whole(id, "x"), None)
                .await
                .err(),
        ),
        (
            "update",
            e.s.update(
                &a,
                id,
                &["email".into()],
                SubjectChanges {
                    email: "n@example.no".into(),
                    ..Default::default()
                },
                None,
            )
            .await
            .err(),
        ),
        (
            "add records",
            e.s.add_records(
                &a,
                id,
                vec![rec(DataCategory::Contact, "name", "x", &["newsletter"])],
                None,
            )
            .await
            .err(),
        ),
    ];
    for (name, err) in refused {
        assert_eq!(
            err.map(code),
            Some(tonic::Code::FailedPrecondition),
            "{name}"
        );
    }
    let row = e.db_subject(id).await;
    assert_eq!(
        (
            row.email_ct,
            row.phone_ct,
            row.national_id_ct,
            row.national_id_kind
        ),
        (None, None, None, None)
    );
    for table in ["subject_lookups", "external_refs", "records"] {
        assert_eq!(count(e.db(), table).await, 0, "{table} emptied");
    }
    assert_eq!(
        e.s.key_store().get("dept-a", id).await.expect("read"),
        None,
        "key shredded"
    );
    // The same e-mail may register again: a new subject.
    let new =
        e.s.create(&a, email_only(EMAIL), None)
            .await
            .expect("re-register");
    assert_ne!(new.subject_id, id);
    e.done().await;
}

async fn erasure_with_retained_records_restricts_until_purged(target: DbTarget) {
    let e = env(target).await;
    let a = tenant_a();
    let mut new = ola();
    new.records.push(rec(
        DataCategory::Financial,
        "invoice",
        "Faktura 2024-117",
        &["invoicing"],
    ));
    let s = e.s.create(&a, new, None).await.expect("create");
    let id = s.subject_id.as_str();
    let invoice = s
        .records
        .iter()
        .find(|r| r.data.field == "invoice")
        .expect("invoice");
    let until = vern_kit::time::now() + Duration::days(5 * 365);
    let keep = Retain {
        record_id: invoice.record_id.clone(),
        retain_until_time: Some(until),
        legal_reference: "bokføringsloven § 13".into(),
    };
    let err =
        e.s.erase(
            &a,
            id,
            "Art. 17",
            vec![Retain {
                record_id: uuid::Uuid::now_v7().to_string(),
                ..keep.clone()
            }],
            "",
            None,
        )
        .await
        .expect_err("unknown record");
    assert_eq!(fields(err), ["retain[0].record_id"]);
    let err =
        e.s.erase(&a, id, "Art. 17", vec![], "R-17", None)
            .await
            .expect_err("not a rights request id");
    assert_eq!(fields(err), ["rights_request_id"]);

    let rights_request = uuid::Uuid::now_v7().to_string();
    let out =
        e.s.erase(
            &a,
            id,
            "Art. 17 request",
            vec![keep.clone()],
            &rights_request,
            None,
        )
        .await
        .expect("erase");
    assert_eq!(
        erasures(e.db()).await,
        [("dept-a".to_owned(), id.to_owned(), rights_request.clone())],
        "the rights service is told, with the request that carries the erasure out"
    );
    assert!(!out.fully_erased);
    assert_eq!(out.state, SubjectState::Restricted);
    assert_eq!(out.erased_record_count, 2);
    assert_eq!(out.retained, vec![keep.clone()]);
    let got = e.s.get(&a, id, View::Full).await.expect("get");
    assert_eq!(got.state, SubjectState::Restricted);
    assert!(got.erase_request_time.is_some());
    assert_eq!(got.identifiers, Default::default(), "identifiers always go");
    assert_eq!(
        got.external_refs.len(),
        2,
        "references stay while records are kept"
    );
    assert_eq!(got.records.len(), 1);
    let kept = &got.records[0];
    assert!(kept.restricted);
    assert_eq!(
        kept.data.value, "Faktura 2024-117",
        "still readable: the key is kept"
    );
    assert_eq!(kept.legal_reference, "bokføringsloven § 13");
    assert!(
        e.s.find(&a, Lookup::Identifier(Email, EMAIL.into()), View::Basic)
            .await
            .is_err()
    );
    let refused: Vec<(&str, Option<SubjectError>)> = vec![
        (
            "lift",
            e.s.lift_restriction(&a, RestrictionCall::whole(id, "x"), None)
                .await
                .err(),
        ),
        (
            "delete kept",
            e.s.delete_record(&a, id, &kept.record_id, None).await.err(),
        ),
    ];
    for (name, err) in refused {
        assert_eq!(
            err.map(code),
            Some(tonic::Code::FailedPrecondition),
            "{name}"
        );
    }

    // An ordinary sweep never touches kept records; the end of the duty does.
    let sweep = |retain_until_before: Option<DateTime<Utc>>, dry_run: bool| PurgeRequest {
        filter: PurgeFilter {
            older_than: retain_until_before
                .is_none()
                .then(|| until + Duration::days(1)),
            retain_until_before,
            ..Default::default()
        },
        action: Some(PurgeAction::Delete),
        dry_run,
        limit: 0,
        policy_id: "bokforing-5y".into(),
    };
    let out = e.s.purge(&a, sweep(None, true), None).await.expect("dry");
    assert_eq!(out.matched_count, 0);
    let out =
        e.s.purge(&a, sweep(Some(until - Duration::days(1)), false), None)
            .await
            .expect("early");
    assert_eq!(out.purged_count, 0, "duty not over");
    let out =
        e.s.purge(&a, sweep(Some(until + Duration::days(1)), false), None)
            .await
            .expect("due");
    assert_eq!(out.purged_count, 1);
    assert_eq!(out.erased_subject_ids, vec![id.to_owned()]);
    let t = e.s.get(&a, id, View::Full).await.expect("tombstone");
    assert_eq!(t.state, SubjectState::Erased);
    assert!(t.erase_time.is_some());
    assert_eq!(
        e.s.key_store().get("dept-a", id).await.expect("read"),
        None,
        "key shredded"
    );
    assert_eq!(count(e.db(), "external_refs").await, 0);
    let states: Vec<i32> = outbox(e.db())
        .await
        .into_iter()
        .map(|(_, c)| c.state)
        .collect();
    use consents::SubjectState as C;
    assert_eq!(
        states,
        [C::Active as i32, C::Restricted as i32, C::Erased as i32]
    );
    assert_eq!(
        erasures(e.db()).await,
        [
            ("dept-a".to_owned(), id.to_owned(), rights_request),
            ("dept-a".to_owned(), id.to_owned(), String::new())
        ],
        "and again when the purge completes the erasure"
    );
    e.done().await;
}

/// A record kept after an erasure without an end (an open-ended legal hold) is never
/// matched by the end-of-duty filter alone; `include_open_ended` lists it so that the
/// retention service can decide again. Records of a subject merely restricted (Art. 18)
/// never match.
async fn records_kept_without_end_match_only_when_asked(target: DbTarget) {
    let e = env(target).await;
    let a = tenant_a();
    let held = e.s.create(&a, ola(), None).await.expect("create");
    let hid = held.subject_id.as_str();
    let keep = Retain {
        record_id: held.records[0].record_id.clone(),
        retain_until_time: None,
        legal_reference: "legal hold 7".into(),
    };
    e.s.erase(&a, hid, "Art. 17 request", vec![keep], "", None)
        .await
        .expect("erase keeping one record");
    let restricted =
        e.s.create(&a, email_only("kari@example.no"), None)
            .await
            .expect("create");
    e.s.restrict(
        &a,
        RestrictionCall::whole(&restricted.subject_id, "objection"),
        None,
    )
    .await
    .expect("restrict");
    let probe = |include_open_ended: bool| PurgeRequest {
        filter: PurgeFilter {
            retain_until_before: Some(vern_kit::time::now() + Duration::days(3650)),
            include_open_ended,
            ..Default::default()
        },
        action: Some(PurgeAction::Delete),
        dry_run: true,
        limit: 0,
        policy_id: String::new(),
    };
    let out = e.s.purge(&a, probe(false), None).await.expect("dry");
    assert_eq!(
        out.matched_count, 0,
        "no end: not matched by the end filter"
    );
    let out = e.s.purge(&a, probe(true), None).await.expect("dry");
    assert_eq!(out.matched_count, 1);
    assert_eq!(out.items[0].record_id, held.records[0].record_id);
    let mut bad = probe(true);
    bad.filter.retain_until_before = None;
    bad.filter.older_than = Some(vern_kit::time::now());
    let err =
        e.s.purge(&a, bad, None)
            .await
            .expect_err("without the end filter");
    assert_eq!(fields(err), ["include_open_ended"]);
    e.done().await;
}

/// GetSubject a page of records at a time: pages in order, each within its size and
/// byte budget, together the whole list; bad sizes and tokens name their field.
async fn records_come_a_page_at_a_time(target: DbTarget) {
    let e = env(target).await;
    let a = tenant_a();
    let mut new = ola();
    for i in 0..23 {
        new.records.push(rec(
            DataCategory::Contact,
            &format!("note-{i:02}"),
            &format!("{i:02} {}", "x".repeat(200)),
            &["customer-service"],
        ));
    }
    let s = e.s.create(&a, new, None).await.expect("create");
    let all =
        e.s.get(&a, &s.subject_id, View::Full)
            .await
            .expect("get")
            .records;
    assert_eq!(all.len(), 25);
    let read_all = |size: i32, budget: usize| {
        let (s, e) = (s.clone(), &e);
        async move {
            let (mut got, mut token, mut pages) = (vec![], String::new(), vec![]);
            loop {
                let page = RecordsPage::new(size, &token, budget).expect("page");
                let (sub, next) =
                    e.s.get_page(&tenant_a(), &s.subject_id, View::Full, page)
                        .await
                        .expect("page");
                pages.push(sub.records.len());
                got.extend(sub.records);
                match next {
                    Some(t) => token = t,
                    None => return (got, pages),
                }
            }
        }
    };
    let (got, pages) = read_all(10, 1 << 20).await;
    assert_eq!(pages, [10, 10, 5]);
    assert_eq!(got, all, "together, in order, the whole list");
    // A budget of ~2 records' worth: pages of 2, never empty.
    let (got, pages) = read_all(10, 700).await;
    assert!(pages.iter().all(|n| (1..=2).contains(n)), "{pages:?}");
    assert_eq!(got, all);
    let (got, pages) = read_all(10, 1).await;
    assert_eq!(pages.len(), 25, "at least one record a page");
    assert_eq!(got, all);

    for (size, token, field) in [
        (-1, "", "records_page_size"),
        (5, "nope", "records_page_token"),
        (5, "123/not-a-uuid", "records_page_token"),
    ] {
        let err = RecordsPage::new(size, token, 1 << 20).expect_err("bad page");
        assert_eq!(fields(err), [field]);
    }
    e.done().await;
}

// ---- raw table scans ----

async fn tables(db: &Db) -> Vec<String> {
    let sql = match db.get_database_backend() {
        DbBackend::Sqlite => "SELECT name FROM sqlite_master WHERE type = 'table'",
        _ => {
            "SELECT table_name::text AS name FROM information_schema.tables WHERE table_schema = current_schema()"
        }
    };
    db.query_all_raw(Statement::from_string(db.get_database_backend(), sql))
        .await
        .expect("tables")
        .iter()
        .map(|r| r.try_get::<String>("", "name").expect("name"))
        .collect()
}

/// Every cell rendered: blobs as their bytes and hex, everything else as text.
fn render(row: &QueryResult, col: &str) -> Vec<u8> {
    fn hex(b: &[u8]) -> String {
        b.iter().map(|x| format!("{x:02x}")).collect()
    }
    if let Ok(v) = row.try_get::<Option<Vec<u8>>>("", col) {
        let b = v.unwrap_or_default();
        let mut out = b.clone();
        out.extend_from_slice(hex(&b).as_bytes());
        return out;
    }
    let text = if let Ok(v) = row.try_get::<Option<String>>("", col) {
        v
    } else if let Ok(v) = row.try_get::<Option<i64>>("", col) {
        v.map(|x| x.to_string())
    } else if let Ok(v) = row.try_get::<Option<i32>>("", col) {
        v.map(|x| x.to_string())
    } else if let Ok(v) = row.try_get::<Option<bool>>("", col) {
        v.map(|x| x.to_string())
    } else if let Ok(v) = row.try_get::<Option<f64>>("", col) {
        v.map(|x| x.to_string())
    } else if let Ok(v) = row.try_get::<Option<DateTime<Utc>>>("", col) {
        v.map(|x| x.to_rfc3339())
    } else if let Ok(v) = row.try_get::<Option<chrono::NaiveDateTime>>("", col) {
        v.map(|x| x.to_string())
    } else {
        panic!("column {col} could not be rendered")
    };
    text.unwrap_or_default().into_bytes()
}

/// (table.column, rendered cell) of every cell of every table.
async fn dump(db: &Db) -> Vec<(String, Vec<u8>)> {
    let mut out = vec![];
    for table in tables(db).await {
        let rows = db
            .query_all_raw(Statement::from_string(
                db.get_database_backend(),
                format!("SELECT * FROM \"{table}\""),
            ))
            .await
            .expect("select");
        for row in &rows {
            for col in row.column_names() {
                out.push((format!("{table}.{col}"), render(row, &col)));
            }
        }
    }
    out
}

fn contains(hay: &[u8], needle: &[u8]) -> bool {
    hay.windows(needle.len()).any(|w| w == needle)
}

async fn raw_tables_hold_no_plaintext_identifier(target: DbTarget) {
    let e = env(target).await;
    let a = tenant_a();
    let fnr = national_id("010190");
    let key =
        e.s.request_key(&a, "req-raw", "CreateSubject", b"ola")
            .expect("key");
    let s = e.s.create(&a, ola(), key).await.expect("create");
    let old_email = "kari.nordmann@example.no";
    let kari =
        e.s.create(
            &a,
            NewSubject {
                email: old_email.into(),
                phone: "+46 70 123 45 67".into(),
                ..Default::default()
            },
            None,
        )
        .await
        .expect("kari");
    e.s.update(
        &a,
        &kari.subject_id,
        &["email".into()],
        SubjectChanges {
            email: "kari@example.no".into(),
            ..Default::default()
        },
        None,
    )
    .await
    .expect("rectify");
    e.s.restrict(
        &a,
        RestrictionCall::whole(&kari.subject_id, "accuracy contested"),
        None,
    )
    .await
    .expect("restrict");

    let needles: Vec<&str> = vec![
        EMAIL_NORMALISED,
        "Ola.Nordmann",
        PHONE_NORMALISED,
        "41234567",
        "+46701234567",
        &fnr,
        old_email,
        "kari@example.no",
        ADDRESS,
        "Storgata",
        SALARY,
        // A restriction reason is about this person's case: sealed too.
        "accuracy contested",
    ];
    let mut cells = dump(e.db()).await;
    cells.extend(dump(e.keys_db()).await);
    let everything: Vec<u8> = cells.iter().flat_map(|(_, v)| v.clone()).collect();
    // The scan sees the data (ids, field names, ciphertexts) …
    assert!(contains(&everything, s.subject_id.as_bytes()));
    assert!(
        contains(&everything, b"salary"),
        "record field names are metadata"
    );
    let wrapped = cells
        .iter()
        .filter(|(c, v)| c == "subject_keys.wrapped_key" && !v.is_empty())
        .count();
    assert_eq!(wrapped, 2, "both key rows read");
    for c in [
        "subjects.email_ct",
        "records.value_ct",
        "subject_lookups.digest",
        "outbox.payload",
        "idempotency_keys.response",
    ] {
        assert!(
            cells.iter().any(|(n, v)| n == c && !v.is_empty()),
            "{c} scanned"
        );
    }
    // … and no personal data.
    for (cell, value) in &cells {
        for n in &needles {
            assert!(!contains(value, n.as_bytes()), "{n:?} found in {cell}");
        }
    }
    // On SQLite, the database files themselves (main, write-ahead log).
    for t in [&e.main_target, &e.key_target] {
        if let Some(path) = t
            .url
            .strip_prefix("sqlite://")
            .and_then(|p| p.split('?').next())
        {
            for suffix in ["", "-wal"] {
                let file = format!("{path}{suffix}");
                let Ok(bytes) = std::fs::read(&file) else {
                    continue;
                };
                for n in &needles {
                    assert!(!contains(&bytes, n.as_bytes()), "{n:?} in {file}");
                }
            }
        }
    }
    e.done().await;
}

async fn crypto_shredding_survives_restoring_rows_from_a_backup(target: DbTarget) {
    let e = env(target).await;
    let a = tenant_a();
    let s = e.s.create(&a, ola(), None).await.expect("create");
    let id = s.subject_id.clone();
    // The "backup": the subject's rows as they were before erasure.
    let subject_copy = e.db_subject(&id).await;
    let record_copies = record::Entity::find().all(e.db()).await.expect("records");
    let lookup_copies = lookup::Entity::find().all(e.db()).await.expect("lookups");
    assert_eq!(record_copies.len(), 2);
    assert!(subject_copy.email_ct.is_some());

    e.s.erase(&a, &id, "Art. 17 request", vec![], "", None)
        .await
        .expect("erase");

    // Restore the main store's rows from the backup (the key store is not restored:
    // it is backed up separately, with a retention shorter than the erasure deadline).
    subject::Entity::update(subject_copy.clone().into_active_model().reset_all())
        .exec(e.db())
        .await
        .expect("restore subject");
    for r in record_copies {
        record::Entity::insert(r.into_active_model())
            .exec_without_returning(e.db())
            .await
            .expect("restore record");
    }
    for l in lookup_copies {
        lookup::Entity::insert(l.into_active_model())
            .exec_without_returning(e.db())
            .await
            .expect("restore lookup");
    }
    assert_eq!(
        e.db_subject(&id).await,
        subject_copy,
        "ciphertexts are back"
    );

    // The rows are back, but nothing decrypts: the data key is gone.
    assert_eq!(
        e.s.key_store().get("dept-a", &id).await.expect("read"),
        None
    );
    let err =
        e.s.get(&a, &id, View::Full)
            .await
            .expect_err("undecryptable");
    assert_eq!(code(err), tonic::Code::FailedPrecondition);
    let found =
        e.s.find(&a, Lookup::Identifier(Email, EMAIL.into()), View::Full)
            .await;
    assert!(
        found.is_err(),
        "the restored blind index leads to undecryptable rows"
    );
    let basic = e.s.get(&a, &id, View::Basic).await.expect("metadata only");
    assert!(basic.records.iter().all(|r| r.data.value.is_empty()));
    // Not even a fresh key for the same subject opens them (AES-GCM authenticates).
    let fresh = vern_subjects::domain::crypto::DataKey::generate();
    let aad = vern_subjects::domain::identifier_aad("dept-a", &id, Email);
    let ct = subject_copy.email_ct.expect("ct");
    assert!(vern_subjects::domain::crypto::open(&fresh, &ct, &aad).is_err());
    // Erasing again cleans the restored rows up.
    let out =
        e.s.erase(&a, &id, "restored from backup", vec![], "", None)
            .await
            .expect("erase again");
    assert!(out.fully_erased);
    assert_eq!(count(e.db(), "records").await, 0);
    assert_eq!(count(e.db(), "subject_lookups").await, 0);
    e.done().await;
}

async fn purge_dry_run_real_run_and_exclusions(target: DbTarget) {
    let e = env(target).await;
    let a = tenant_a();
    let now = vern_kit::time::now();
    let old = now - Duration::days(3 * 365);
    let recent = now - Duration::days(30);
    let subject_with = |email: &str| NewSubject {
        email: email.into(),
        records: vec![
            RecordInput {
                collected_at: Some(old),
                ..rec(
                    DataCategory::Communications,
                    "email-thread",
                    "Hei!",
                    &["customer-service"],
                )
            },
            RecordInput {
                collected_at: Some(recent),
                ..rec(
                    DataCategory::Communications,
                    "email-thread",
                    "Takk",
                    &["customer-service"],
                )
            },
            RecordInput {
                collected_at: Some(old),
                ..rec(
                    DataCategory::Behaviour,
                    "event-attended",
                    "Frokost",
                    &["event-invitations", "newsletter"],
                )
            },
        ],
        ..Default::default()
    };
    let s1 =
        e.s.create(&a, subject_with("one@example.no"), None)
            .await
            .expect("1");
    let s2 =
        e.s.create(&a, subject_with("two@example.no"), None)
            .await
            .expect("2");
    let held =
        e.s.create(&a, subject_with("held@example.no"), None)
            .await
            .expect("held");
    let restricted =
        e.s.create(&a, subject_with("restricted@example.no"), None)
            .await
            .expect("r");
    e.s.restrict(
        &a,
        RestrictionCall::whole(
            &restricted.subject_id,
            "kept for legal claims (Art. 18(1)(c))",
        ),
        None,
    )
    .await
    .expect("restrict");
    e.s.create(&tenant_b(), subject_with("one@example.no"), None)
        .await
        .expect("b");

    let base = PurgeRequest {
        filter: PurgeFilter {
            older_than: Some(now - Duration::days(365)),
            exclude_subject_ids: vec![held.subject_id.clone()],
            ..Default::default()
        },
        action: Some(PurgeAction::Delete),
        dry_run: true,
        limit: 0,
        policy_id: "p1".into(),
    };
    let with = |f: fn(&mut PurgeRequest)| {
        let mut r = base.clone();
        f(&mut r);
        r
    };
    // (name, request, matched on a dry run)
    let cases: Vec<(&str, PurgeRequest, i64)> = vec![
        ("old, not held, active", base.clone(), 4),
        (
            "communications",
            with(|r| r.filter.category = Some(DataCategory::Communications)),
            2,
        ),
        (
            "purpose newsletter",
            with(|r| r.filter.purpose = Some("newsletter".into())),
            2,
        ),
        (
            "purpose prefix does not match",
            with(|r| r.filter.purpose = Some("news".into())),
            0,
        ),
        (
            "field",
            with(|r| r.filter.field = Some("event-attended".into())),
            2,
        ),
        (
            "all ANDed",
            with(|r| {
                r.filter.category = Some(DataCategory::Behaviour);
                r.filter.purpose = Some("event-invitations".into());
                r.filter.field = Some("email-thread".into());
            }),
            0,
        ),
        (
            "nothing excluded",
            with(|r| r.filter.exclude_subject_ids.clear()),
            6,
        ),
        (
            "relationship not ended",
            with(|r| r.filter.relationship_end_before = Some(Utc::now())),
            0,
        ),
    ];
    for (name, req, want) in cases {
        let out = e.s.purge(&a, req, None).await.expect(name);
        assert_eq!(out.matched_count, want, "{name}");
        assert_eq!(out.items.len() as i64, want, "{name}");
        assert_eq!(out.purged_count, 0, "{name}: dry run");
        assert!(
            out.items
                .iter()
                .all(|i| i.subject_id != restricted.subject_id),
            "{name}: Art. 18"
        );
        if name != "nothing excluded" {
            assert!(
                out.items.iter().all(|i| i.subject_id != held.subject_id),
                "{name}: legal hold"
            );
        }
    }
    let limited =
        e.s.purge(&a, with(|r| r.limit = 3), None)
            .await
            .expect("limited");
    assert_eq!(
        (
            limited.matched_count,
            limited.items.len(),
            limited.truncated
        ),
        (4, 3, true)
    );
    assert_eq!(
        count(e.db(), "records").await,
        15,
        "dry runs change nothing"
    );
    let err =
        e.s.purge(&a, with(|r| r.filter.older_than = None), None)
            .await
            .expect_err("no age");
    assert_eq!(fields(err), ["older_than"]);

    // Real run: deletes old communications, bounded and idempotent.
    let real = with(|r| {
        r.dry_run = false;
        r.limit = 1;
        r.filter.category = Some(DataCategory::Communications);
    });
    let key = || {
        e.s.request_key(&a, "sweep-1", "PurgeRecords", b"sweep")
            .expect("key")
    };
    let first = e.s.purge(&a, real.clone(), key()).await.expect("purge");
    assert_eq!(
        (first.matched_count, first.purged_count, first.truncated),
        (1, 1, true)
    );
    assert!(first.items.is_empty());
    let retry = e.s.purge(&a, real.clone(), key()).await.expect("retry");
    assert_eq!(retry, first, "same answer");
    assert_eq!(count(e.db(), "records").await, 14, "one deleted once");
    let rest =
        e.s.purge(&a, PurgeRequest { limit: 0, ..real }, None)
            .await
            .expect("rest");
    assert_eq!((rest.purged_count, rest.truncated), (1, false));

    // Anonymise: the value and the link to the subject go, the metadata stays.
    let anon = with(|r| {
        r.dry_run = false;
        r.action = Some(PurgeAction::Anonymise);
    });
    let out = e.s.purge(&a, anon.clone(), None).await.expect("anonymise");
    assert_eq!(out.purged_count, 2, "the old events of s1 and s2");
    for s in [&s1, &s2] {
        let got = e.s.get(&a, &s.subject_id, View::Full).await.expect("get");
        let fields: Vec<&str> = got.records.iter().map(|r| r.data.field.as_str()).collect();
        assert_eq!(fields, ["email-thread"], "only the recent thread is left");
        assert_eq!(got.records[0].data.value, "Takk");
    }
    let detached: Vec<record::Model> = record::Entity::find()
        .all(e.db())
        .await
        .expect("records")
        .into_iter()
        .filter(|r| r.subject_id.is_none())
        .collect();
    assert_eq!(detached.len(), 2);
    for r in &detached {
        assert_eq!(
            (r.value_ct.as_ref(), r.field.as_str(), r.category.as_str()),
            (None, "event-attended", "BEHAVIOUR")
        );
        assert_eq!(r.collected_at, vern_subjects::service::month_start(old));
    }
    assert_eq!(
        e.s.purge(&a, anon, None).await.expect("again").purged_count,
        0,
        "anonymous records are out of scope"
    );

    // The held and the restricted subjects kept everything.
    for s in [&held, &restricted] {
        let got = e.s.get(&a, &s.subject_id, View::Full).await.expect("get");
        assert_eq!(got.records.len(), 3);
    }
    e.done().await;
}

// ---- external references at rest ----

/// Where `needle` occurs at rest: any cell of either store, or the raw bytes of the
/// SQLite files (main, -wal, -shm).
async fn found_at_rest(e: &Env, needle: &str) -> Vec<String> {
    use vern_kit::testing::raw;
    let mut found = raw::cells_containing(e.db(), needle.as_bytes()).await;
    found.extend(raw::cells_containing(e.keys_db(), needle.as_bytes()).await);
    for t in [&e.main_target, &e.key_target] {
        for (file, bytes) in raw::sqlite_files(t) {
            if raw::contains(&bytes, needle.as_bytes()) {
                found.push(file.display().to_string());
            }
        }
    }
    found
}

async fn external_references_are_sealed_and_shredded(target: DbTarget) {
    let e = env(target).await;
    let a = tenant_a();
    let key =
        e.s.request_key(&a, "req-refs", "CreateSubject", b"refs")
            .expect("key");
    let s = e.s.create(&a, ola(), key).await.expect("create");
    let none: Vec<String> = vec![];
    for n in ["cust-1001", "K-77"] {
        assert_eq!(found_at_rest(&e, n).await, none, "{n}");
    }
    // Found by reference, shown in both views, sorted by system then id.
    let found =
        e.s.find(&a, Lookup::ExternalRef(crm("cust-1001")), View::Basic)
            .await;
    assert_eq!(found.expect("find").subject_id, s.subject_id);
    for view in [View::Basic, View::Full] {
        let got = e.s.get(&a, &s.subject_id, view).await.expect("get");
        let refs: Vec<(&str, &str)> = got
            .external_refs
            .iter()
            .map(|r| (r.system.as_str(), r.id.as_str()))
            .collect();
        assert_eq!(
            refs,
            [("accounting", "K-77"), ("crm", "cust-1001")],
            "{view:?}"
        );
    }
    let listed =
        e.s.list(&a, None, 10, ListFilter::default(), View::Basic)
            .await
            .expect("list");
    assert_eq!(listed.items[0].external_refs.len(), 2);
    // Still unique per tenant.
    let taken =
        e.s.create(
            &a,
            NewSubject {
                external_refs: vec![crm("cust-1001")],
                ..Default::default()
            },
            None,
        )
        .await
        .expect_err("taken");
    assert!(matches!(taken, SubjectError::ExternalRefTaken), "{taken:?}");
    // Erasure removes them.
    e.s.erase(&a, &s.subject_id, "Art. 17", vec![], "", None)
        .await
        .expect("erase");
    let gone =
        e.s.find(&a, Lookup::ExternalRef(crm("cust-1001")), View::Basic)
            .await;
    assert!(
        matches!(gone, Err(SubjectError::SubjectNotFound)),
        "{gone:?}"
    );
    let rows = e
        .db()
        .query_one_raw(Statement::from_string(
            e.db().get_database_backend(),
            format!(
                "SELECT COUNT(*) AS n FROM external_refs WHERE subject_id = '{}'",
                s.subject_id
            ),
        ))
        .await
        .expect("count")
        .expect("row")
        .try_get::<i64>("", "n")
        .expect("n");
    assert_eq!(rows, 0);
    e.done().await;
}

async fn plaintext_references_of_older_versions_is_sealed_body(e: &Env) {
    let a = tenant_a();
    let s =
        e.s.create(&a, email_only("legacy@example.no"), None)
            .await
            .expect("create");
    // A row as versions before m0002 wrote it.
    e.db()
        .execute_raw(Statement::from_string(
            e.db().get_database_backend(),
            format!(
                "INSERT INTO external_refs (tenant_id, system, ref_id, subject_id) VALUES ('{}', 'crm', 'LEGACY-4711', '{}')",
                a.as_str(),
                s.subject_id
            ),
        ))
        .await
        .expect("legacy row");
    // Readable and findable before the pass …
    let found =
        e.s.find(&a, Lookup::ExternalRef(crm("LEGACY-4711")), View::Basic)
            .await;
    assert_eq!(
        found.expect("find legacy").external_refs[0].id,
        "LEGACY-4711"
    );
    assert_eq!(e.s.seal_legacy_refs().await.expect("seal"), 1);
    assert_eq!(e.s.seal_legacy_refs().await.expect("again"), 0);
    // … and after it, with no plaintext left in the tables.
    let cells = vern_kit::testing::raw::cells_containing(e.db(), b"LEGACY-4711").await;
    assert_eq!(cells, Vec::<String>::new());
    let found =
        e.s.find(&a, Lookup::ExternalRef(crm("LEGACY-4711")), View::Basic)
            .await;
    assert_eq!(
        found.expect("find sealed").external_refs[0].id,
        "LEGACY-4711"
    );
}

async fn restriction_reasons_are_sealed_and_shredded(target: DbTarget) {
    let e = env(target).await;
    let a = tenant_a();
    let reason = "her brother disputes the address on file";
    let s = e.s.create(&a, ola(), None).await.expect("create");
    let id = s.subject_id.as_str();
    let r =
        e.s.restrict(&a, RestrictionCall::whole(id, reason), None)
            .await
            .expect("restrict");
    assert_eq!(r.restriction_reason, reason, "the caller reads it back");
    let basic = e.s.get(&a, id, View::Basic).await.expect("basic");
    assert_eq!(basic.restriction_reason, reason, "also in the BASIC view");
    let listed =
        e.s.list(&a, None, 10, ListFilter::default(), View::Basic)
            .await
            .expect("list");
    assert_eq!(
        listed.items[0].restriction_reason, reason,
        "and when listed"
    );
    assert_eq!(
        vern_kit::testing::raw::cells_containing(e.db(), reason.as_bytes()).await,
        Vec::<String>::new(),
        "no plaintext reason in any table"
    );
    // Without its data key (crypto-shredded), the reason is gone with the rest.
    let erased =
        e.s.erase(&a, id, "Art. 17 request", vec![], "", None)
            .await
            .expect("erase");
    assert_eq!(erased.state, SubjectState::Erased);
    let gone = e.s.get(&a, id, View::Full).await.expect("tombstone");
    assert_eq!(gone.restriction_reason, "");
    e.done().await;
}

async fn plaintext_restriction_reasons_of_older_versions_are_sealed(target: DbTarget) {
    let e = env(target).await;
    let a = tenant_a();
    let reason = "objection pending on the Kari Nordmann account";
    let s = e.s.create(&a, ola(), None).await.expect("create");
    let id = s.subject_id.clone();
    // A row as versions before m0005 wrote it.
    e.db()
        .execute_raw(Statement::from_string(
            e.db().get_database_backend(),
            format!(
                "UPDATE subjects SET state = 'RESTRICTED', restriction_reason = '{reason}' WHERE tenant_id = '{}' AND subject_id = '{id}'",
                a.as_str(),
            ),
        ))
        .await
        .expect("legacy row");
    let before = e.s.get(&a, &id, View::Basic).await.expect("before");
    assert_eq!(
        before.restriction_reason, reason,
        "readable before the pass"
    );
    assert_eq!(
        e.s.seal_legacy_restriction_reasons().await.expect("seal"),
        1
    );
    assert_eq!(
        e.s.seal_legacy_restriction_reasons().await.expect("again"),
        0
    );
    assert_eq!(
        vern_kit::testing::raw::cells_containing(e.db(), reason.as_bytes()).await,
        Vec::<String>::new()
    );
    let after = e.s.get(&a, &id, View::Basic).await.expect("after");
    assert_eq!(after.restriction_reason, reason, "and after it");
    e.done().await;
}

async fn plaintext_references_of_older_versions_are_sealed(target: DbTarget) {
    let e = env(target).await;
    plaintext_references_of_older_versions_is_sealed_body(&e).await;
    e.done().await;
}

// ---- ImportSubjects ----

fn row(e: &Env, t: &TenantId, request_id: &str, new: NewSubject) -> ImportRow {
    // Any stable encoding of the row stands for its protobuf bytes here.
    let body = format!(
        "{}|{}|{}|{:?}",
        new.email, new.phone, new.national_id, new.external_refs
    );
    ImportRow {
        key: e
            .s
            .request_key(t, request_id, "CreateSubject", body.as_bytes())
            .expect("key"),
        input: Ok(new),
    }
}

fn created(o: &ImportOutcome) -> (String, bool) {
    match o {
        ImportOutcome::Created {
            subject_id,
            replayed,
        } => (subject_id.clone(), *replayed),
        other => panic!("expected CREATED, got {other:?}"),
    }
}

async fn import_creates_each_row_as_create_would(target: DbTarget) {
    let e = env(target).await;
    let a = tenant_a();
    let rows: Vec<ImportRow> = (0..250)
        .map(|i| {
            let mut n = email_only(&format!("person{i}@example.no"));
            n.external_refs = vec![crm(&format!("cust-{i}"))];
            if i == 0 {
                n = ola();
            }
            row(&e, &a, &format!("imp-{i}"), n)
        })
        .collect();
    let out = e.s.import(&a, rows).await.expect("import");
    assert_eq!(out.len(), 250);
    let ids: Vec<String> = out.iter().map(|o| created(o).0).collect();
    assert!(out.iter().all(|o| !created(o).1), "none replayed");
    assert_eq!(count(e.db(), "subjects").await, 250);
    assert_eq!(count(e.keys_db(), "subject_keys").await, 250);
    assert_eq!(
        outbox(e.db()).await.len(),
        250,
        "one ACTIVE notification each"
    );
    // Readable, findable by identifier and reference, like a CreateSubject.
    let s = e.s.get(&a, &ids[0], View::Full).await.expect("get");
    assert_eq!(s.identifiers.email.as_deref(), Some(EMAIL_NORMALISED));
    assert_eq!(s.records.len(), 2);
    let found =
        e.s.find(
            &a,
            Lookup::Identifier(Email, "person7@example.no".into()),
            View::Basic,
        )
        .await
        .expect("find by email");
    assert_eq!(found.subject_id, ids[7]);
    let found =
        e.s.find(&a, Lookup::ExternalRef(crm("cust-9")), View::Basic)
            .await
            .expect("find by reference");
    assert_eq!(found.subject_id, ids[9]);
    // A CreateSubject of a held identifier is refused, as before.
    let err =
        e.s.create(&a, email_only("person3@example.no"), None)
            .await
            .expect_err("taken");
    assert_eq!(code(err), tonic::Code::AlreadyExists);
    // Nothing in plaintext at rest.
    for needle in ["person7@example.no", "cust-9", ADDRESS] {
        let cells = vern_kit::testing::raw::cells_containing(e.db(), needle.as_bytes()).await;
        assert!(cells.is_empty(), "{needle} in {cells:?}");
    }
    e.done().await;
}

async fn import_replays_rows_by_request_id(target: DbTarget) {
    let e = env(target).await;
    let a = tenant_a();
    let rows = |e: &Env| -> Vec<ImportRow> {
        (0..20)
            .map(|i| {
                row(
                    e,
                    &a,
                    &format!("imp-{i}"),
                    email_only(&format!("p{i}@example.no")),
                )
            })
            .collect()
    };
    let first = e.s.import(&a, rows(&e)).await.expect("first");
    let again = e.s.import(&a, rows(&e)).await.expect("replay");
    for (f, g) in first.iter().zip(&again) {
        let (id, replayed) = created(g);
        assert_eq!(id, created(f).0, "same subject");
        assert!(replayed, "answered from the stored answer");
    }
    assert_eq!(count(e.db(), "subjects").await, 20, "no duplicates");
    assert_eq!(count(e.keys_db(), "subject_keys").await, 20);
    assert_eq!(outbox(e.db()).await.len(), 20);
    // The same row through CreateSubject replays too (the same key).
    let body = format!(
        "{}|{}|{}|{:?}",
        "p3@example.no",
        "",
        "",
        Vec::<ExternalRef>::new()
    );
    let key =
        e.s.request_key(&a, "imp-3", "CreateSubject", body.as_bytes())
            .expect("key");
    let s =
        e.s.create(&a, email_only("p3@example.no"), key)
            .await
            .expect("create replays");
    assert_eq!(s.subject_id, created(&first[3]).0);
    // A request id reused for another row is refused for that row only.
    let reused = vec![
        row(&e, &a, "imp-4", email_only("other@example.no")),
        row(&e, &a, "new-1", email_only("new@example.no")),
    ];
    let out = e.s.import(&a, reused).await.expect("reuse");
    match &out[0] {
        ImportOutcome::Invalid(v) => assert_eq!(v[0].field, "request_id"),
        other => panic!("{other:?}"),
    }
    created(&out[1]);
    assert_eq!(count(e.db(), "subjects").await, 21);
    e.done().await;
}

async fn import_mixed_batch_commits_the_valid_rows_and_names_the_bad_fields(target: DbTarget) {
    let e = env(target).await;
    let a = tenant_a();
    let existing =
        e.s.create(&a, email_only("held@example.no"), None)
            .await
            .expect("existing");
    let bad_id = "0101901006X";
    let rows = vec![
        row(&e, &a, "m-0", email_only("good0@example.no")),
        row(
            &e,
            &a,
            "m-1",
            NewSubject {
                national_id: bad_id.into(),
                ..Default::default()
            },
        ),
        row(&e, &a, "m-2", email_only("held@example.no")),
        row(&e, &a, "m-3", email_only("good3@example.no")),
        row(&e, &a, "m-4", NewSubject::default()),
        // The same address as row 3 in the same call: row 3's subject holds it.
        row(&e, &a, "m-5", email_only("GOOD3@example.no")),
        ImportRow {
            input: Err(vec![vern_kit::error::FieldViolation::new(
                "records[0].collected_at",
                "is in the future",
            )]),
            key: None,
        },
        row(
            &e,
            &a,
            "m-7",
            NewSubject {
                external_refs: vec![crm("ref-dup-7"), crm("ref-dup-7")],
                ..Default::default()
            },
        ),
    ];
    let out = e.s.import(&a, rows).await.expect("import");
    let good0 = created(&out[0]).0;
    let good3 = created(&out[3]).0;
    let invalid = |o: &ImportOutcome| match o {
        ImportOutcome::Invalid(v) => v.iter().map(|v| v.field.clone()).collect::<Vec<_>>(),
        other => panic!("expected INVALID, got {other:?}"),
    };
    assert_eq!(invalid(&out[1]), ["national_id"]);
    assert_eq!(invalid(&out[4]), ["email"], "no identifier");
    assert_eq!(invalid(&out[6]), ["records[0].collected_at"]);
    assert!(!invalid(&out[7]).is_empty(), "duplicate reference");
    assert_eq!(
        out[2],
        ImportOutcome::AlreadyPresent {
            subject_id: existing.subject_id.clone(),
            field: "email".into()
        }
    );
    assert_eq!(
        out[5],
        ImportOutcome::AlreadyPresent {
            subject_id: good3.clone(),
            field: "email".into()
        }
    );
    // No value in any answer (values chosen so that no random id can contain them).
    let shown = format!("{out:?}");
    for v in [bad_id, "held@example.no", "good3", "ref-dup-7"] {
        assert!(!shown.contains(v), "{v} in {shown}");
    }
    // Exactly the valid rows committed, each whole.
    assert_eq!(count(e.db(), "subjects").await, 3);
    assert_eq!(count(e.db(), "subject_lookups").await, 3);
    assert_eq!(count(e.keys_db(), "subject_keys").await, 3);
    for id in [&good0, &good3] {
        e.s.get(&a, id, View::Full).await.expect("readable");
    }
    e.done().await;
}

/// Index entries per index version: (version, identifiers, references).
async fn index_entries(e: &Env) -> Vec<(u32, i64, i64)> {
    e.s.index_entries()
        .await
        .expect("count")
        .into_iter()
        .map(|c| (c.index_key_version, c.identifiers, c.external_refs))
        .collect()
}

/// Runs a re-index to the end, `page` entries per call: (examined, reindexed, calls).
async fn reindex_all(e: &Env, page: i32) -> (i64, i64, usize) {
    let (mut examined, mut reindexed, mut calls, mut token) = (0, 0, 0, String::new());
    loop {
        let p = e.s.reindex(&token, page, 0).await.expect("reindex page");
        examined += p.examined;
        reindexed += p.reindexed;
        calls += 1;
        assert!(calls < 100, "the re-index ends");
        if p.next_page_token.is_empty() {
            return (examined, reindexed, calls);
        }
        token = p.next_page_token;
    }
}

async fn reindex_rewrites_every_entry_and_leaves_what_changed_meanwhile(target: DbTarget) {
    let v1 = env(target.clone()).await;
    let (a, b) = (tenant_a(), tenant_b());
    let mut ids = vec![];
    for n in 0..5 {
        let s =
            v1.s.create(
                &a,
                NewSubject {
                    email: format!("p{n}@example.no"),
                    phone: if n == 4 {
                        "+47 912 34 567".into()
                    } else {
                        String::new()
                    },
                    external_refs: vec![crm(&format!("c-{n}"))],
                    ..Default::default()
                },
                None,
            )
            .await
            .expect("create");
        ids.push(s.subject_id);
    }
    let other =
        v1.s.create(&b, email_only("p0@example.no"), None)
            .await
            .expect("the same address in another tenant");
    let idem =
        v1.s.request_key(&a, "ri-1", "CreateSubject", b"request")
            .expect("key");
    let replayed =
        v1.s.create(&a, email_only("replayed@example.no"), idem)
            .await
            .expect("create with request id");
    assert_eq!(index_entries(&v1).await, vec![(1, 8, 5)]);
    // Nothing to re-index from.
    let none = v1.s.reindex("", 0, 0).await.expect_err("no previous");
    assert_eq!(code(none), tonic::Code::FailedPrecondition);

    // The index moves from version 1 to version 2.
    let ring = Keyring::versioned(
        Some((2, MasterKey::from_bytes([9; KEY_LEN]))),
        vec![(1, MasterKey::from_bytes([7; KEY_LEN]))],
        2,
        HashMap::new(),
    )
    .expect("ring")
    .with_previous_index_version(1)
    .expect("previous index");
    let e = env_with(target.clone(), ring).await;
    assert_eq!(
        code(e.s.reindex("", 0, 3).await.expect_err("other version")),
        tonic::Code::FailedPrecondition
    );
    assert_eq!(
        fields(e.s.reindex("", -1, 0).await.expect_err("size")),
        ["page_size"]
    );
    assert_eq!(
        fields(e.s.reindex("garbage", 0, 0).await.expect_err("token")),
        ["page_token"]
    );
    // Found under the old digests, and still unique.
    let find = |by: Lookup| e.s.find(&a, by, View::Full);
    assert_eq!(
        find(Lookup::Identifier(Email, "P3@example.no".into()))
            .await
            .expect("find")
            .subject_id,
        ids[3]
    );
    assert_eq!(
        find(Lookup::ExternalRef(crm("c-2")))
            .await
            .expect("find")
            .subject_id,
        ids[2]
    );
    assert!(matches!(
        e.s.create(&a, email_only("p1@example.no"), None).await,
        Err(SubjectError::IdentifierTaken(Email))
    ));
    // A request repeated under its id matches the fingerprint taken under version 1.
    let idem =
        e.s.request_key(&a, "ri-1", "CreateSubject", b"request")
            .expect("key");
    let again =
        e.s.create(&a, email_only("replayed@example.no"), idem)
            .await
            .expect("replayed");
    assert_eq!(again.subject_id, replayed.subject_id);
    // An import finds identifiers and references held under version 1 too.
    let held =
        e.s.import(
            &a,
            vec![
                row(
                    &e,
                    &a,
                    "",
                    NewSubject {
                        external_refs: vec![crm("c-3")],
                        ..Default::default()
                    },
                ),
                row(&e, &a, "", email_only("P4@example.no")),
            ],
        )
        .await
        .expect("import");
    assert_eq!(
        held,
        vec![
            ImportOutcome::AlreadyPresent {
                subject_id: ids[3].clone(),
                field: "external_refs[0]".into()
            },
            ImportOutcome::AlreadyPresent {
                subject_id: ids[4].clone(),
                field: "email".into()
            },
        ]
    );
    // Meanwhile: one subject rectified (its e-mail entry rewritten under version 2 by
    // the rectification), one erased (its entries gone), one created.
    e.s.update(
        &a,
        &ids[0],
        &["email".to_owned()],
        SubjectChanges {
            email: "p0-new@example.no".into(),
            ..Default::default()
        },
        None,
    )
    .await
    .expect("rectify");
    e.s.erase(&a, &ids[1], "Art. 17", vec![], "", None)
        .await
        .expect("erase");
    let newcomer =
        e.s.create(
            &a,
            NewSubject {
                external_refs: vec![crm("c-new")],
                ..email_only("new@example.no")
            },
            None,
        )
        .await
        .expect("create")
        .subject_id;
    // Under version 1: 8 identifiers − p0's (rectified) − p1's (erased) = 6; 5
    // references − p1's = 4. Under version 2: p0's new e-mail and the newcomer's.
    assert_eq!(index_entries(&e).await, vec![(1, 6, 4), (2, 2, 1)]);
    let (examined, reindexed, calls) = reindex_all(&e, 2).await;
    assert_eq!((examined, reindexed), (10, 10));
    assert!(calls >= 6, "{calls} calls of 2 entries");
    assert_eq!(index_entries(&e).await, vec![(2, 8, 5)]);
    // A second run finds nothing to do.
    assert_eq!(reindex_all(&e, 500).await, (0, 0, 2));

    // Version 1 gone entirely: every lookup still finds its subject.
    let done = Keyring::versioned(
        Some((2, MasterKey::from_bytes([9; KEY_LEN]))),
        vec![],
        2,
        HashMap::new(),
    )
    .expect("ring");
    // The data keys are re-wrapped first (they were wrapped under version 1).
    let rotate = vern_proto::common::v1::RewrapDataKeysRequest::default();
    e.s.rewrap_data_keys(&rotate).await.expect("rewrap");
    let f = env_with(target, done).await;
    let fs = &f.s;
    let find = |t: TenantId, by: Lookup| async move { fs.find(&t, by, View::Full).await };
    for (n, id) in ids.iter().enumerate().skip(2) {
        let s = find(
            a.clone(),
            Lookup::Identifier(Email, format!("p{n}@example.no")),
        )
        .await
        .expect("by e-mail");
        assert_eq!(&s.subject_id, id);
        let s = find(a.clone(), Lookup::ExternalRef(crm(&format!("c-{n}"))))
            .await
            .expect("by reference");
        assert_eq!(&s.subject_id, id);
    }
    assert_eq!(
        find(a.clone(), Lookup::Identifier(Phone, "91234567".into()))
            .await
            .expect("phone")
            .subject_id,
        ids[4]
    );
    assert_eq!(
        find(
            a.clone(),
            Lookup::Identifier(Email, "p0-new@example.no".into())
        )
        .await
        .expect("rectified")
        .subject_id,
        ids[0]
    );
    assert_eq!(
        find(a.clone(), Lookup::ExternalRef(crm("c-0")))
            .await
            .expect("ref")
            .subject_id,
        ids[0]
    );
    assert_eq!(
        find(b.clone(), Lookup::Identifier(Email, "p0@example.no".into()))
            .await
            .expect("tenant b")
            .subject_id,
        other.subject_id
    );
    assert_eq!(
        find(a.clone(), Lookup::ExternalRef(crm("c-new")))
            .await
            .expect("newcomer")
            .subject_id,
        newcomer
    );
    for by in [
        Lookup::Identifier(Email, "p1@example.no".into()),
        Lookup::ExternalRef(crm("c-1")),
        Lookup::Identifier(Email, "p0@example.no".into()),
    ] {
        assert!(matches!(
            find(a.clone(), by).await,
            Err(SubjectError::SubjectNotFound)
        ));
    }
    assert!(matches!(
        f.s.create(&a, email_only("p2@example.no"), None).await,
        Err(SubjectError::IdentifierTaken(Email))
    ));
    v1.done().await;
    e.done().await;
    f.done().await;
}

/// The re-index against another replica (a second pool on the same database) writing
/// at the worst moments: inside a page (after the page's entries were read, before they
/// are rewritten) a subject is rectified and another erased; between two pages a third
/// is rectified. The concurrent change wins every time: the rewrite leaves entries that
/// are no longer as read (compare and set), so each subject is found by its current
/// address, never by its old one, and the erased one not at all.
async fn a_reindex_leaves_entries_another_replica_changed_inside_and_between_its_pages(
    target: DbTarget,
) {
    let v1 = env(target.clone()).await;
    let a = tenant_a();
    let mut ids = vec![];
    for n in 0..6 {
        let s =
            v1.s.create(&a, email_only(&format!("q{n}@example.no")), None)
                .await
                .expect("create");
        ids.push(s.subject_id);
    }
    let ring = || {
        Keyring::versioned(
            Some((2, MasterKey::from_bytes([9; KEY_LEN]))),
            vec![(1, MasterKey::from_bytes([7; KEY_LEN]))],
            2,
            HashMap::new(),
        )
        .expect("ring")
        .with_previous_index_version(1)
        .expect("previous index")
    };
    // The re-indexing replica, and another replica with a pool of its own.
    let reindexer = env_with(target.clone(), ring()).await;
    let other = env_with(target.clone(), ring()).await;
    let rectify = |who: String, to: &str| {
        let to = to.to_owned();
        let (o, a) = (&other, a.clone());
        async move {
            o.s.update(
                &a,
                &who,
                &["email".to_owned()],
                SubjectChanges {
                    email: to,
                    ..Default::default()
                },
                None,
            )
            .await
            .expect("rectify");
        }
    };
    let find = |by: Lookup| reindexer.s.find(&a, by, View::Full);
    let entries_under_1 = || async {
        reindexer
            .s
            .store()
            .lookups_after(None, 100)
            .await
            .expect("entries")
            .into_iter()
            .filter(|l| l.index_version == 1)
            .collect::<Vec<lookup::Model>>()
    };

    // Inside a page, for q0..q2: their entries are read...
    let stale: Vec<lookup::Model> = entries_under_1()
        .await
        .into_iter()
        .filter(|l| ids[..3].contains(&l.subject_id))
        .collect();
    assert_eq!(stale.len(), 3, "one e-mail entry per subject");
    // ...the other replica rectifies q0 and erases q1...
    rectify(ids[0].clone(), "q0-new@example.no").await;
    other
        .s
        .erase(&a, &ids[1], "Art. 17", vec![], "", None)
        .await
        .expect("erase");
    // ...and the page is rewritten as it was read. The digests are stand-ins (q2 is not
    // looked up by address below): what is tested is which rows the rewrite touches.
    let rewrites: Vec<(lookup::Model, Vec<u8>)> = stale
        .iter()
        .map(|l| {
            let mut d = l.digest.clone();
            d.reverse();
            (l.clone(), d)
        })
        .collect();
    let done = reindexer
        .s
        .store()
        .rekey_entries(&rewrites, &[], 2)
        .await
        .expect("rewrite");
    assert_eq!(
        done, 1,
        "q0's old entry (rewritten meanwhile) and q1's (gone) are left alone"
    );
    // q0 is found by its new address (the rectification's entry is untouched), not by
    // its old one; q1 by neither.
    assert_eq!(
        find(Lookup::Identifier(Email, "q0-new@example.no".into()))
            .await
            .expect("rectified inside the page")
            .subject_id,
        ids[0]
    );
    for gone in ["q0@example.no", "q1@example.no"] {
        assert!(
            matches!(
                find(Lookup::Identifier(Email, gone.into())).await,
                Err(SubjectError::SubjectNotFound)
            ),
            "{gone}"
        );
    }

    // Between pages, for q3..q5: a re-index one entry per page; after its first page
    // the other replica rectifies a subject whose entry is still to come.
    let (mut pages, mut token, mut moved) = (0, String::new(), None);
    loop {
        let p = reindexer.s.reindex(&token, 1, 0).await.expect("page");
        pages += 1;
        if pages == 1 {
            let later = entries_under_1()
                .await
                .into_iter()
                .next()
                .expect("entries left for later pages");
            rectify(later.subject_id.clone(), "moved@example.no").await;
            moved = Some(later.subject_id);
        }
        assert!(pages < 50, "the re-index ends");
        if p.next_page_token.is_empty() {
            break;
        }
        token = p.next_page_token;
    }
    let moved = moved.expect("a subject rectified between pages");
    let n = ids.iter().position(|i| *i == moved).expect("one of ours");
    assert!(n >= 3, "q3..q5 were left for the re-index");
    assert_eq!(
        find(Lookup::Identifier(Email, "moved@example.no".into()))
            .await
            .expect("rectified between pages")
            .subject_id,
        moved
    );
    for (k, id) in ids.iter().enumerate().skip(3) {
        let got = find(Lookup::Identifier(Email, format!("q{k}@example.no"))).await;
        if *id == moved {
            assert!(matches!(got, Err(SubjectError::SubjectNotFound)), "q{k}");
        } else {
            assert_eq!(&got.expect("re-indexed").subject_id, id, "q{k}");
        }
    }
    // Nothing is left under version 1.
    assert!(entries_under_1().await.is_empty());
    v1.done().await;
}
