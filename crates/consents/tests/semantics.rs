//! Consent semantics through the use cases, on SQLite and PostgreSQL: the legal-basis
//! rules of Check, BatchCheck agreeing with Check, idempotent recording, history, and
//! the subject projection.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use chrono::{Duration, Utc};
use vern_consents::domain::{
    Channel, ConsentAction, LegalBasis, PurposeRule, Reason, SubjectChange, SubjectStatus,
};
use vern_consents::error::ConsentError;
use vern_consents::purposes::{PurposeCache, PurposeSource, Versioned};
use vern_consents::remote::SubjectSource;
use vern_consents::service::{Consents, NewEvent, NewGrounds};
use vern_consents::store::ConsentStore;
use vern_kit::ApiError;
use vern_kit::context::TenantId;
use vern_kit::db::DbTarget;
use vern_kit::idempotency::Key;

vern_kit::store_test_suite!("consents":
    legal_basis_rules_table,
    batch_check_agrees_with_check,
    record_is_idempotent_by_request_id,
    history_and_state,
    subject_projection_follows_versions,
    a_purpose_restriction_denies_that_purpose_only,
    tenants_are_isolated,
    bad_input_is_rejected_without_writes,
    evidence_is_sealed_at_rest,
    erasure_shreds_the_evidence,
    plaintext_evidence_of_older_versions_is_sealed,
    grounds_reasons_are_sealed_and_shredded,
    plaintext_grounds_of_older_versions_are_sealed,
    purpose_changes_reach_every_replica_and_older_ones_are_ignored,
);

struct Purposes;

#[async_trait::async_trait]
impl PurposeSource for Purposes {
    async fn fetch(&self, _tenant: &str, key: &str) -> Result<Option<PurposeRule>, ConsentError> {
        let rule = |legal_basis, direct_marketing| {
            Some(PurposeRule {
                legal_basis,
                direct_marketing,
            })
        };
        Ok(match key {
            "newsletter" => rule(LegalBasis::Consent, true),
            "invoicing" => rule(LegalBasis::Contract, false),
            "bookkeeping" => rule(LegalBasis::LegalObligation, false),
            "analytics" => rule(LegalBasis::LegitimateInterests, false),
            "event-invitations" => rule(LegalBasis::LegitimateInterests, true),
            _ => None,
        })
    }
}

/// Subjects known to the (fake) subjects service.
#[derive(Default)]
struct Subjects(Mutex<HashMap<String, SubjectStatus>>);

#[async_trait::async_trait]
impl SubjectSource for Subjects {
    async fn fetch_state(
        &self,
        _tenant: &str,
        subject_id: &str,
    ) -> Result<Option<SubjectStatus>, ConsentError> {
        Ok(self.0.lock().expect("lock").get(subject_id).copied())
    }
}

async fn setup(target: DbTarget) -> (Consents, Arc<Subjects>) {
    let store = ConsentStore::open(&target, keyring()).await.expect("open");
    let subjects = Arc::new(Subjects::default());
    (
        Consents::new(
            store,
            Arc::new(PurposeCache::new(Arc::new(Purposes))),
            subjects.clone(),
        ),
        subjects,
    )
}

fn tenant() -> TenantId {
    TenantId::new("kultur")
}

fn new_subject(subjects: &Subjects) -> String {
    let id = uuid::Uuid::now_v7().to_string();
    subjects
        .0
        .lock()
        .expect("lock")
        .insert(id.clone(), SubjectStatus::Active);
    id
}

fn event(subject: &str, purpose: &str, action: ConsentAction) -> NewEvent {
    NewEvent {
        subject_id: subject.into(),
        purpose: purpose.into(),
        action: Some(action),
        channel: Some(Channel::WebForm),
        notice_version: "2022-11-20".into(),
        evidence: "form:newsletter-signup".into(),
        actor: String::new(),
        rights_request_id: String::new(),
        occur_time: None,
        expires_at: None,
    }
}

/// Sets the subject's state as the subjects service would notify it.
async fn set_subject(c: &Consents, subject: &str, status: SubjectStatus, version: i64) {
    c.apply_subject_states(
        &tenant(),
        vec![SubjectChange::new(subject, status, version, Utc::now())],
    )
    .await
    .expect("apply");
}

/// Restricts `purposes` of an ACTIVE subject as the subjects service would notify it.
async fn restrict_purposes(c: &Consents, subject: &str, purposes: &[&str], version: i64) {
    let mut change = SubjectChange::new(subject, SubjectStatus::Active, version, Utc::now());
    change.restricted_purposes = purposes.iter().map(|p| (*p).to_owned()).collect();
    c.apply_subject_states(&tenant(), vec![change])
        .await
        .expect("apply");
}

async fn legal_basis_rules_table(target: DbTarget) {
    let (c, subjects) = setup(target).await;
    use ConsentAction::*;
    use Reason::*;
    // (purpose, events, subject state, allowed, reason)
    let table: Vec<(&str, Vec<ConsentAction>, SubjectStatus, bool, Reason)> = vec![
        (
            "newsletter",
            vec![],
            SubjectStatus::Active,
            false,
            NoConsent,
        ),
        (
            "newsletter",
            vec![Grant],
            SubjectStatus::Active,
            true,
            ConsentGranted,
        ),
        (
            "newsletter",
            vec![Grant, Withdraw],
            SubjectStatus::Active,
            false,
            ConsentWithdrawn,
        ),
        (
            "newsletter",
            vec![Grant, Withdraw, Grant],
            SubjectStatus::Active,
            true,
            ConsentGranted,
        ),
        (
            "newsletter",
            vec![Grant],
            SubjectStatus::Restricted,
            false,
            SubjectRestricted,
        ),
        (
            "newsletter",
            vec![Grant],
            SubjectStatus::Erased,
            false,
            SubjectErased,
        ),
        (
            "invoicing",
            vec![],
            SubjectStatus::Active,
            true,
            BasisAllows,
        ),
        (
            "invoicing",
            vec![],
            SubjectStatus::Restricted,
            false,
            SubjectRestricted,
        ),
        (
            "bookkeeping",
            vec![],
            SubjectStatus::Active,
            true,
            BasisAllows,
        ),
        (
            "analytics",
            vec![],
            SubjectStatus::Active,
            true,
            NoObjection,
        ),
        (
            "analytics",
            vec![Object],
            SubjectStatus::Active,
            false,
            SubjectObjected,
        ),
        (
            "analytics",
            vec![Object, Withdraw],
            SubjectStatus::Active,
            false,
            SubjectObjected,
        ),
        (
            "event-invitations",
            vec![Object],
            SubjectStatus::Active,
            false,
            SubjectObjected,
        ),
        (
            "no-such-purpose",
            vec![],
            SubjectStatus::Active,
            false,
            PurposeUnknown,
        ),
    ];
    for (i, (purpose, events, state, allowed, reason)) in table.into_iter().enumerate() {
        let subject = new_subject(&subjects);
        for (j, a) in events.iter().enumerate() {
            let mut e = event(&subject, purpose, *a);
            // Distinct occurrence times keep the order of the row's events.
            e.occur_time = Some(Utc::now() - Duration::seconds(100 - j as i64));
            c.record(&tenant(), "crm", e, "", None)
                .await
                .unwrap_or_else(|e| panic!("row {i}: {e:?}"));
        }
        set_subject(&c, &subject, state, 10).await;
        let (d, _) = c.check(&tenant(), &subject, purpose).await.expect("check");
        assert_eq!(
            (d.allowed, d.reason),
            (allowed, reason),
            "row {i}: {purpose} {events:?} {state:?}"
        );
        if matches!(reason, ConsentGranted | ConsentWithdrawn | SubjectObjected) {
            assert!(
                d.evidence_id.is_some(),
                "row {i}: the deciding event is named"
            );
        }
    }
    // A subject nobody told consents about.
    let unknown = uuid::Uuid::now_v7().to_string();
    let (d, _) = c
        .check(&tenant(), &unknown, "invoicing")
        .await
        .expect("check");
    assert_eq!((d.allowed, d.reason), (false, SubjectUnknown));
    // Expired grant.
    let subject = new_subject(&subjects);
    let mut e = event(&subject, "newsletter", Grant);
    e.occur_time = Some(Utc::now() - Duration::days(400));
    e.expires_at = Some(Utc::now() - Duration::days(35));
    c.record(&tenant(), "crm", e, "", None)
        .await
        .expect("record");
    let (d, basis) = c
        .check(&tenant(), &subject, "newsletter")
        .await
        .expect("check");
    assert_eq!(
        (d.allowed, d.reason, basis),
        (false, ConsentExpired, Some(LegalBasis::Consent))
    );
}

async fn batch_check_agrees_with_check(target: DbTarget) {
    let (c, subjects) = setup(target).await;
    let mut ids = vec![];
    for i in 0..40 {
        let s = new_subject(&subjects);
        match i % 4 {
            0 => {}
            1 => {
                c.record(
                    &tenant(),
                    "crm",
                    event(&s, "newsletter", ConsentAction::Grant),
                    "",
                    None,
                )
                .await
                .expect("grant");
            }
            2 => {
                c.record(
                    &tenant(),
                    "crm",
                    event(&s, "newsletter", ConsentAction::Grant),
                    "",
                    None,
                )
                .await
                .expect("grant");
                set_subject(&c, &s, SubjectStatus::Restricted, 5).await;
            }
            _ => {
                c.record(
                    &tenant(),
                    "crm",
                    event(&s, "newsletter", ConsentAction::Object),
                    "",
                    None,
                )
                .await
                .expect("object");
            }
        }
        ids.push(s);
    }
    ids.push(uuid::Uuid::now_v7().to_string()); // unknown
    ids.push(ids[1].clone()); // duplicate keeps its place
    let (batch, basis) = c
        .batch_check(&tenant(), "newsletter", &ids)
        .await
        .expect("batch");
    assert_eq!(basis, Some(LegalBasis::Consent));
    assert_eq!(batch.len(), ids.len());
    for ((id, d), want) in batch.iter().zip(&ids) {
        assert_eq!(id, want, "request order");
        let (single, _) = c.check(&tenant(), id, "newsletter").await.expect("check");
        assert_eq!(d, &single, "{id}");
    }
    assert_eq!(batch.iter().filter(|(_, d)| d.allowed).count(), 11);
    let too_many: Vec<String> = (0..10_001)
        .map(|_| uuid::Uuid::now_v7().to_string())
        .collect();
    assert!(
        c.batch_check(&tenant(), "newsletter", &too_many)
            .await
            .is_err()
    );
}

async fn record_is_idempotent_by_request_id(target: DbTarget) {
    let (c, subjects) = setup(target).await;
    let s = new_subject(&subjects);
    let req = event(&s, "newsletter", ConsentAction::Grant);
    let key = || Key::new(Some("kultur"), "req-42", "RecordConsent", b"same bytes");
    let first = c
        .record(&tenant(), "crm", req.clone(), "req-42", key())
        .await
        .expect("first");
    let again = c
        .record(&tenant(), "crm", req, "req-42", key())
        .await
        .expect("retry");
    assert_eq!(first, again, "same id, same answer");
    let history = c
        .history(&tenant(), &s, None, None, 50)
        .await
        .expect("history");
    assert_eq!(history.items.len(), 1, "one event");
    assert_eq!(history.items[0].request_id, "req-42");
    let other = Key::new(Some("kultur"), "req-42", "RecordConsent", b"other bytes");
    let e = c
        .record(
            &tenant(),
            "crm",
            event(&s, "newsletter", ConsentAction::Withdraw),
            "req-42",
            other,
        )
        .await
        .expect_err("reused id");
    assert_eq!(ApiError::from(e).code(), tonic::Code::FailedPrecondition);
}

async fn history_and_state(target: DbTarget) {
    let (c, subjects) = setup(target).await;
    let s = new_subject(&subjects);
    for a in [
        ConsentAction::Grant,
        ConsentAction::Withdraw,
        ConsentAction::Grant,
    ] {
        c.record(&tenant(), "crm", event(&s, "newsletter", a), "", None)
            .await
            .expect("record");
    }
    c.record(
        &tenant(),
        "crm",
        event(&s, "analytics", ConsentAction::Object),
        "",
        None,
    )
    .await
    .expect("object");
    let all = c
        .history(&tenant(), &s, None, None, 2)
        .await
        .expect("page 1");
    assert_eq!(all.items.len(), 2);
    assert!(all.more);
    let rest = c
        .history(&tenant(), &s, None, Some(&all.items[1].event_id), 10)
        .await
        .expect("page 2");
    assert_eq!(rest.items.len(), 2);
    let only = c
        .history(&tenant(), &s, Some("analytics"), None, 10)
        .await
        .expect("filtered");
    assert_eq!(only.items.len(), 1);
    let state = c
        .state(&tenant(), &s, "newsletter")
        .await
        .expect("state")
        .expect("recorded");
    assert_eq!(
        state.state.latest.as_ref().map(|l| l.action),
        Some(ConsentAction::Grant)
    );
    assert!(
        c.state(&tenant(), &s, "invoicing")
            .await
            .expect("state")
            .is_none()
    );
    let states = c
        .list_states(&tenant(), Some(&s), None, None, None, 10)
        .await
        .expect("list");
    assert_eq!(states.items.len(), 2);
    // update_before lists only states last changed before it (retention's
    // CONSENT_WITHDRAWN sweep asks for "withdrawn more than a period ago").
    let newest = states
        .items
        .iter()
        .map(|st| st.update_time)
        .max()
        .expect("times");
    let oldest = states
        .items
        .iter()
        .map(|st| st.update_time)
        .min()
        .expect("times");
    let before_all = c
        .list_states(&tenant(), Some(&s), None, Some(oldest), None, 10)
        .await
        .expect("list");
    assert!(
        before_all.items.is_empty(),
        "nothing changed before the oldest change"
    );
    let later = c
        .list_states(
            &tenant(),
            Some(&s),
            None,
            Some(newest + chrono::Duration::microseconds(1)),
            None,
            10,
        )
        .await
        .expect("list");
    assert_eq!(later.items.len(), 2);
}

async fn subject_projection_follows_versions(target: DbTarget) {
    let (c, subjects) = setup(target).await;
    let s = new_subject(&subjects);
    set_subject(&c, &s, SubjectStatus::Restricted, 3).await;
    // An older notification arriving late is ignored.
    let (applied, ignored) = c
        .apply_subject_states(
            &tenant(),
            vec![SubjectChange::new(&s, SubjectStatus::Active, 2, Utc::now())],
        )
        .await
        .expect("apply");
    assert_eq!((applied, ignored), (0, 1));
    let (d, _) = c.check(&tenant(), &s, "invoicing").await.expect("check");
    assert_eq!(d.reason, Reason::SubjectRestricted);
    set_subject(&c, &s, SubjectStatus::Erased, 4).await;
    let e = c
        .record(
            &tenant(),
            "crm",
            event(&s, "newsletter", ConsentAction::Grant),
            "",
            None,
        )
        .await
        .expect_err("erased");
    assert_eq!(ApiError::from(e).code(), tonic::Code::FailedPrecondition);
    // A subject the subjects service does not know cannot get consents.
    let ghost = uuid::Uuid::now_v7().to_string();
    let e = c
        .record(
            &tenant(),
            "crm",
            event(&ghost, "newsletter", ConsentAction::Grant),
            "",
            None,
        )
        .await
        .expect_err("unknown");
    assert_eq!(ApiError::from(e).code(), tonic::Code::NotFound);
}

async fn a_purpose_restriction_denies_that_purpose_only(target: DbTarget) {
    let (c, subjects) = setup(target).await;
    let (s, other) = (new_subject(&subjects), new_subject(&subjects));
    for id in [&s, &other] {
        set_subject(&c, id, SubjectStatus::Active, 1).await;
        c.record(
            &tenant(),
            "crm",
            event(id, "newsletter", ConsentAction::Grant),
            "",
            None,
        )
        .await
        .expect("grant");
    }
    let allowed = |purpose: &'static str, id: String| {
        let c = &c;
        async move {
            let (d, _) = c.check(&tenant(), &id, purpose).await.expect("check");
            (d.allowed, d.reason)
        }
    };
    assert!(allowed("newsletter", s.clone()).await.0, "granted");
    // Art. 18 for the newsletter only.
    restrict_purposes(&c, &s, &["newsletter"], 2).await;
    assert_eq!(
        allowed("newsletter", s.clone()).await,
        (false, Reason::SubjectRestricted)
    );
    assert!(
        allowed("invoicing", s.clone()).await.0,
        "the contract is still served"
    );
    assert!(
        allowed("newsletter", other.clone()).await.0,
        "other subjects untouched"
    );
    let ids = vec![s.clone(), other.clone()];
    let (batch, _) = c
        .batch_check(&tenant(), "newsletter", &ids)
        .await
        .expect("batch");
    assert_eq!(batch[0].1.reason, Reason::SubjectRestricted);
    assert!(batch[1].1.allowed);
    // A stale notification does not bring the restriction back after it is lifted.
    restrict_purposes(&c, &s, &[], 3).await;
    assert!(allowed("newsletter", s.clone()).await.0, "lifted");
    restrict_purposes(&c, &s, &["newsletter"], 2).await;
    assert!(
        allowed("newsletter", s.clone()).await.0,
        "older change ignored"
    );
    let (batch, _) = c
        .batch_check(&tenant(), "newsletter", &ids)
        .await
        .expect("batch");
    assert!(batch.iter().all(|(_, d)| d.allowed));
}

async fn tenants_are_isolated(target: DbTarget) {
    let (c, subjects) = setup(target).await;
    let s = new_subject(&subjects);
    c.record(
        &tenant(),
        "crm",
        event(&s, "newsletter", ConsentAction::Grant),
        "",
        None,
    )
    .await
    .expect("grant");
    let other = TenantId::new("okorad");
    let (d, _) = c.check(&other, &s, "newsletter").await.expect("check");
    assert_eq!(
        d.reason,
        Reason::SubjectUnknown,
        "another tenant's subject is unknown here"
    );
    assert!(
        c.history(&other, &s, None, None, 10)
            .await
            .expect("history")
            .items
            .is_empty()
    );
    assert!(
        c.state(&other, &s, "newsletter")
            .await
            .expect("state")
            .is_none()
    );
}

async fn bad_input_is_rejected_without_writes(target: DbTarget) {
    let (c, subjects) = setup(target).await;
    let s = new_subject(&subjects);
    let cases: Vec<(&str, NewEvent)> = vec![
        (
            "subject_id",
            NewEvent {
                subject_id: "12345".into(),
                ..event(&s, "newsletter", ConsentAction::Grant)
            },
        ),
        (
            "purpose",
            NewEvent {
                purpose: "Not A Key!".into(),
                ..event(&s, "newsletter", ConsentAction::Grant)
            },
        ),
        (
            "action",
            NewEvent {
                action: None,
                ..event(&s, "newsletter", ConsentAction::Grant)
            },
        ),
        (
            "notice_version",
            NewEvent {
                notice_version: String::new(),
                ..event(&s, "newsletter", ConsentAction::Grant)
            },
        ),
        (
            "evidence",
            NewEvent {
                evidence: "x\u{0}y".into(),
                ..event(&s, "newsletter", ConsentAction::Grant)
            },
        ),
        (
            "expires_at",
            NewEvent {
                expires_at: Some(Utc::now() + Duration::days(1)),
                ..event(&s, "newsletter", ConsentAction::Withdraw)
            },
        ),
    ];
    for (field, e) in cases {
        match ApiError::from(
            c.record(&tenant(), "crm", e, "", None)
                .await
                .expect_err(field),
        ) {
            ApiError::InvalidArgument(v) => assert_eq!(v[0].field, field),
            other => panic!("{field}: {other:?}"),
        }
    }
    let e = c
        .record(
            &tenant(),
            "crm",
            event(&s, "no-such-purpose", ConsentAction::Grant),
            "",
            None,
        )
        .await
        .expect_err("unknown purpose");
    assert_eq!(ApiError::from(e).code(), tonic::Code::NotFound);
    assert!(
        c.history(&tenant(), &s, None, None, 10)
            .await
            .expect("history")
            .items
            .is_empty(),
        "nothing written"
    );
}

fn keyring() -> vern_seal::keyring::Keyring {
    vern_seal::keyring::Keyring::new(
        Some(vern_seal::crypto::MasterKey::from_bytes([7; 32])),
        HashMap::new(),
    )
    .expect("keyring")
}

// ---- evidence at rest ----

const EVIDENCE: &str = "signed form of kari.nordmann@example.no";

fn with_evidence(subject: &str, action: ConsentAction, evidence: &str) -> NewEvent {
    NewEvent {
        evidence: evidence.into(),
        ..event(subject, "newsletter", action)
    }
}

/// Every cell of every table, and on SQLite the raw bytes of the database file, its
/// write-ahead log and shared memory: where `needle` occurs.
async fn found_at_rest(c: &Consents, target: &DbTarget, needle: &str) -> Vec<String> {
    use vern_kit::testing::raw;
    let mut found = raw::cells_containing(c.store().connection(), needle.as_bytes()).await;
    for (file, bytes) in raw::sqlite_files(target) {
        if raw::contains(&bytes, needle.as_bytes()) {
            found.push(file.display().to_string());
        }
    }
    found
}

async fn count(c: &Consents, sql: &str) -> i64 {
    use sea_orm::{ConnectionTrait, Statement};
    let db = c.store().connection();
    db.query_one_raw(Statement::from_string(db.get_database_backend(), sql))
        .await
        .expect("count")
        .expect("row")
        .try_get::<i64>("", "n")
        .expect("n")
}

async fn evidence_is_sealed_at_rest(target: DbTarget) {
    let (c, subjects) = setup(target.clone()).await;
    let s = new_subject(&subjects);
    let key = || {
        c.request_key(
            &tenant(),
            "req-sealed",
            "RecordConsent",
            EVIDENCE.as_bytes(),
        )
        .expect("key")
    };
    let first = c
        .record(
            &tenant(),
            "crm",
            with_evidence(&s, ConsentAction::Grant, EVIDENCE),
            "req-sealed",
            key(),
        )
        .await
        .expect("record");
    assert_eq!(first.evidence, EVIDENCE, "the answer carries the evidence");
    // A retry answers the same, evidence included, from the ids it stored.
    let again = c
        .record(
            &tenant(),
            "crm",
            with_evidence(&s, ConsentAction::Grant, EVIDENCE),
            "req-sealed",
            key(),
        )
        .await
        .expect("retry");
    assert_eq!(first, again);
    let history = c
        .history(&tenant(), &s, None, None, 50)
        .await
        .expect("history");
    assert_eq!(history.items.len(), 1);
    assert_eq!(history.items[0].evidence, EVIDENCE);
    // At rest: no evidence anywhere, also not in the stored answer.
    assert_eq!(
        found_at_rest(&c, &target, EVIDENCE).await,
        Vec::<String>::new()
    );
    assert_eq!(
        found_at_rest(&c, &target, "kari.nordmann").await,
        Vec::<String>::new()
    );
    assert_eq!(
        count(
            &c,
            "SELECT COUNT(*) AS n FROM idempotency_keys WHERE request_id = 'req-sealed'"
        )
        .await,
        1,
        "the answer is stored"
    );
    assert_eq!(
        count(
            &c,
            "SELECT COUNT(*) AS n FROM consent_events WHERE evidence_ct IS NOT NULL"
        )
        .await,
        1,
        "sealed"
    );
    assert_eq!(count(&c, "SELECT COUNT(*) AS n FROM consent_keys").await, 1);
    // An event without evidence needs no key and seals nothing.
    let bare = c
        .record(
            &tenant(),
            "crm",
            with_evidence(&s, ConsentAction::Withdraw, ""),
            "",
            None,
        )
        .await
        .expect("bare");
    assert_eq!(bare.evidence, "");
}

async fn erasure_shreds_the_evidence(target: DbTarget) {
    let (c, subjects) = setup(target.clone()).await;
    let s = new_subject(&subjects);
    let other = new_subject(&subjects);
    set_subject(&c, &s, SubjectStatus::Active, 1).await;
    let key = || {
        c.request_key(&tenant(), "req-erase", "RecordConsent", b"grant")
            .expect("key")
    };
    c.record(
        &tenant(),
        "crm",
        with_evidence(&s, ConsentAction::Grant, EVIDENCE),
        "req-erase",
        key(),
    )
    .await
    .expect("grant");
    c.record(
        &tenant(),
        "crm",
        with_evidence(&s, ConsentAction::Withdraw, "withdrawn by phone, kari"),
        "",
        None,
    )
    .await
    .expect("withdraw");
    c.record(
        &tenant(),
        "crm",
        with_evidence(&other, ConsentAction::Grant, "other subject's form"),
        "",
        None,
    )
    .await
    .expect("other");
    assert_eq!(count(&c, "SELECT COUNT(*) AS n FROM consent_keys").await, 2);

    set_subject(&c, &s, SubjectStatus::Erased, 2).await;

    let history = c
        .history(&tenant(), &s, None, None, 50)
        .await
        .expect("history");
    assert_eq!(
        history.items.len(),
        2,
        "the events stay (ids, actions, times)"
    );
    assert!(
        history.items.iter().all(|e| e.evidence.is_empty()),
        "{history:?}"
    );
    assert!(
        c.state(&tenant(), &s, "newsletter")
            .await
            .expect("state")
            .is_some(),
        "the state still reads"
    );
    // A retry of a call made before the erasure answers without evidence.
    let replayed = c
        .record(
            &tenant(),
            "crm",
            with_evidence(&s, ConsentAction::Grant, EVIDENCE),
            "req-erase",
            key(),
        )
        .await
        .expect("replay after erasure");
    assert_eq!(replayed.evidence, "");
    // The key row is gone and no ciphertext is left; the other subject keeps its own.
    let subject_keys = format!("SELECT COUNT(*) AS n FROM consent_keys WHERE subject_id = '{s}'");
    assert_eq!(count(&c, &subject_keys).await, 0, "key deleted");
    let sealed = format!(
        "SELECT COUNT(*) AS n FROM consent_events WHERE subject_id = '{s}' AND (evidence_ct IS NOT NULL OR evidence <> '')"
    );
    assert_eq!(count(&c, &sealed).await, 0, "evidence blanked");
    let others = c
        .history(&tenant(), &other, None, None, 50)
        .await
        .expect("other");
    assert_eq!(others.items[0].evidence, "other subject's form");
    // Redelivery of the erasure is a no-op.
    set_subject(&c, &s, SubjectStatus::Erased, 2).await;
    // No new consent for the erased subject.
    let e = c
        .record(
            &tenant(),
            "crm",
            with_evidence(&s, ConsentAction::Grant, "x"),
            "",
            None,
        )
        .await
        .expect_err("erased");
    assert!(matches!(e, ConsentError::SubjectErased), "{e:?}");
    assert_eq!(count(&c, &subject_keys).await, 0, "no key created again");
    assert_eq!(
        found_at_rest(&c, &target, EVIDENCE).await,
        Vec::<String>::new()
    );
}

async fn plaintext_evidence_of_older_versions_is_sealed(target: DbTarget) {
    use sea_orm::{ActiveModelTrait, ActiveValue::Set};
    use vern_consents::store::entities::consent_event;
    let (c, subjects) = setup(target.clone()).await;
    let s = new_subject(&subjects);
    let gone = new_subject(&subjects);
    set_subject(&c, &s, SubjectStatus::Active, 1).await;
    set_subject(&c, &gone, SubjectStatus::Erased, 1).await;
    let db = c.store().connection();
    // Rows as a version before m0002 wrote them: plaintext evidence, and the whole
    // event as the stored answer.
    let mut ids = vec![];
    for (subject, evidence) in [(&s, EVIDENCE), (&gone, "erased subject's form")] {
        let id = uuid::Uuid::now_v7().to_string();
        let now = vern_kit::time::now();
        consent_event::ActiveModel {
            event_id: Set(id.clone()),
            tenant_id: Set("kultur".into()),
            subject_id: Set(subject.clone()),
            purpose: Set("newsletter".into()),
            action: Set("GRANT".into()),
            channel: Set("WEB_FORM".into()),
            notice_version: Set("2022-11-20".into()),
            evidence: Set(evidence.into()),
            actor: Set(String::new()),
            recorded_by: Set("crm".into()),
            request_id: Set(format!("legacy-{id}")),
            rights_request_id: Set(String::new()),
            occur_time: Set(now),
            expires_at: Set(None),
            create_time: Set(now),
            evidence_ct: Set(None),
        }
        .insert(db)
        .await
        .expect("legacy row");
        ids.push(id);
    }
    let legacy_answer = serde_json::json!({
        "tenant_id": "kultur", "event_id": ids[0], "subject_id": s, "purpose": "newsletter",
        "evidence": EVIDENCE,
    });
    let key = c
        .request_key(&tenant(), "req-legacy", "RecordConsent", b"legacy")
        .expect("key");
    vern_kit::idempotency::record(db, key.as_ref(), &legacy_answer)
        .await
        .expect("legacy answer");
    assert!(
        !found_at_rest(&c, &target, EVIDENCE).await.is_empty(),
        "plaintext before"
    );

    let changed = c.store().seal_legacy().await.expect("seal");
    assert_eq!(changed, 3, "two rows and one answer");
    assert_eq!(
        c.store().seal_legacy().await.expect("again"),
        0,
        "idempotent"
    );

    let cells = vern_kit::testing::raw::cells_containing(db, EVIDENCE.as_bytes()).await;
    assert_eq!(cells, Vec::<String>::new());
    let history = c
        .history(&tenant(), &s, None, None, 50)
        .await
        .expect("history");
    assert_eq!(
        history.items[0].evidence, EVIDENCE,
        "sealed, still readable"
    );
    let gone_history = c
        .history(&tenant(), &gone, None, None, 50)
        .await
        .expect("gone");
    assert_eq!(
        gone_history.items[0].evidence, "",
        "an erased subject's is blanked"
    );
    let replayed = c
        .record(
            &tenant(),
            "crm",
            with_evidence(&s, ConsentAction::Grant, EVIDENCE),
            "req-legacy",
            key,
        )
        .await
        .expect("legacy replay");
    assert_eq!(replayed.event_id, ids[0]);
    assert_eq!(replayed.evidence, EVIDENCE);
}

// ---- compelling-grounds reasons at rest ----

/// A reason that is a statement about one person's case.
const REASON: &str = "Kari Nordmann's unpaid claim in court case 2024-117";

/// Compelling grounds for the subject's objection to `analytics` (legitimate interests).
fn grounds<'a>(subject: &'a str, reason: &'a str) -> NewGrounds<'a> {
    NewGrounds {
        subject_id: subject,
        purpose: "analytics",
        reason,
    }
}

/// The stored idempotency answer of `request_id`, as stored.
async fn stored_answer(c: &Consents, request_id: &str) -> String {
    use sea_orm::{ConnectionTrait, Statement};
    let db = c.store().connection();
    let sql = format!("SELECT response FROM idempotency_keys WHERE request_id = '{request_id}'");
    db.query_one_raw(Statement::from_string(db.get_database_backend(), sql))
        .await
        .expect("answer")
        .expect("row")
        .try_get::<String>("", "response")
        .expect("response")
}

async fn grounds_reasons_are_sealed_and_shredded(target: DbTarget) {
    let (c, subjects) = setup(target.clone()).await;
    let s = new_subject(&subjects);
    let other = new_subject(&subjects);
    for subject in [&s, &other] {
        set_subject(&c, subject, SubjectStatus::Active, 1).await;
        c.record(
            &tenant(),
            "crm",
            event(subject, "analytics", ConsentAction::Object),
            "",
            None,
        )
        .await
        .expect("object");
    }
    let key = || {
        c.request_key(
            &tenant(),
            "req-grounds",
            "RecordCompellingGrounds",
            REASON.as_bytes(),
        )
        .expect("key")
    };
    let d = c
        .record_grounds(&tenant(), "dpo", grounds(&s, REASON), "req-grounds", key())
        .await
        .expect("grounds");
    assert_eq!(d.reason, REASON, "the answer carries the reason");
    // A retry answers the same, reason included, from the ids it stored.
    let again = c
        .record_grounds(&tenant(), "dpo", grounds(&s, REASON), "req-grounds", key())
        .await
        .expect("retry");
    assert_eq!(again, d);
    c.record_grounds(
        &tenant(),
        "dpo",
        grounds(&other, "other subject's grounds"),
        "",
        None,
    )
    .await
    .expect("other grounds");
    // The readers open the seal.
    let state = c
        .state(&tenant(), &s, "analytics")
        .await
        .expect("state")
        .expect("recorded");
    let shown = state.grounds.expect("decision shown");
    assert_eq!(shown.decision_id, d.decision_id);
    assert_eq!(shown.reason, REASON);
    let decisions = c
        .store()
        .grounds_decisions(tenant().as_str(), &s)
        .await
        .expect("decisions");
    assert_eq!(decisions, vec![d.clone()]);
    // At rest: no reason anywhere, also not in the stored answer.
    assert_eq!(
        found_at_rest(&c, &target, REASON).await,
        Vec::<String>::new()
    );
    assert_eq!(
        found_at_rest(&c, &target, "Kari Nordmann").await,
        Vec::<String>::new()
    );
    let answer = stored_answer(&c, "req-grounds").await;
    assert!(
        answer.contains(&d.decision_id) && !answer.contains("reason"),
        "ids only: {answer}"
    );
    let sealed = format!(
        "SELECT COUNT(*) AS n FROM objection_decisions WHERE subject_id = '{s}' AND reason = '' AND reason_ct IS NOT NULL"
    );
    assert_eq!(count(&c, &sealed).await, 1, "sealed");

    set_subject(&c, &s, SubjectStatus::Erased, 2).await;

    // The decision stays (ids, times, the state Check reads); its reason is gone.
    let state = c
        .state(&tenant(), &s, "analytics")
        .await
        .expect("state")
        .expect("still recorded");
    let shown = state.grounds.expect("decision still shown");
    assert_eq!(shown.decision_id, d.decision_id);
    assert_eq!(shown.reason, "");
    let decisions = c
        .store()
        .grounds_decisions(tenant().as_str(), &s)
        .await
        .expect("decisions");
    assert_eq!(decisions.len(), 1);
    assert_eq!(decisions[0].reason, "");
    let left = format!(
        "SELECT COUNT(*) AS n FROM objection_decisions WHERE subject_id = '{s}' AND (reason_ct IS NOT NULL OR reason <> '')"
    );
    assert_eq!(count(&c, &left).await, 0, "reason blanked");
    let subject_keys = format!("SELECT COUNT(*) AS n FROM consent_keys WHERE subject_id = '{s}'");
    assert_eq!(count(&c, &subject_keys).await, 0, "key deleted");
    // A retry of the call made before the erasure answers without the reason.
    let replayed = c
        .record_grounds(&tenant(), "dpo", grounds(&s, REASON), "req-grounds", key())
        .await
        .expect("replay after erasure");
    assert_eq!(replayed.decision_id, d.decision_id);
    assert_eq!(replayed.reason, "");
    // The other subject keeps its own.
    let others = c
        .store()
        .grounds_decisions(tenant().as_str(), &other)
        .await
        .expect("other");
    assert_eq!(others[0].reason, "other subject's grounds");
    // No new statement about the erased subject's case.
    let e = c
        .record_grounds(&tenant(), "dpo", grounds(&s, "new grounds"), "", None)
        .await
        .expect_err("erased");
    assert!(matches!(e, ConsentError::SubjectErased), "{e:?}");
    assert_eq!(count(&c, &subject_keys).await, 0, "no key created again");
    // Redelivery of the erasure is a no-op.
    set_subject(&c, &s, SubjectStatus::Erased, 2).await;
    assert_eq!(
        found_at_rest(&c, &target, REASON).await,
        Vec::<String>::new()
    );
    assert_eq!(
        found_at_rest(&c, &target, "Kari Nordmann").await,
        Vec::<String>::new()
    );
}

async fn plaintext_grounds_of_older_versions_are_sealed(target: DbTarget) {
    use sea_orm::{ActiveModelTrait, ActiveValue::Set};
    use vern_consents::domain::GroundsDecision;
    use vern_consents::store::entities::objection_decision;
    const GONE_REASON: &str = "erased subject's case 2023-9";
    let (c, subjects) = setup(target.clone()).await;
    let s = new_subject(&subjects);
    let gone = new_subject(&subjects);
    set_subject(&c, &s, SubjectStatus::Active, 1).await;
    // Erased under a version that neither sealed nor shredded reasons.
    set_subject(&c, &gone, SubjectStatus::Erased, 1).await;
    let db = c.store().connection();
    // Rows as a version before m0006 wrote them: plaintext reasons, and the whole
    // decision as the stored answer.
    let mut decisions = vec![];
    for (subject, reason) in [(&s, REASON), (&gone, GONE_REASON)] {
        let id = uuid::Uuid::now_v7().to_string();
        let d = GroundsDecision {
            tenant_id: "kultur".into(),
            decision_id: id.clone(),
            subject_id: subject.clone(),
            purpose: "analytics".into(),
            objection_event_id: uuid::Uuid::now_v7().to_string(),
            reason: reason.into(),
            decided_by: "dpo".into(),
            request_id: format!("legacy-{id}"),
            decide_time: vern_kit::time::now(),
        };
        objection_decision::ActiveModel {
            tenant_id: Set(d.tenant_id.clone()),
            decision_id: Set(d.decision_id.clone()),
            subject_id: Set(d.subject_id.clone()),
            purpose: Set(d.purpose.clone()),
            objection_event_id: Set(d.objection_event_id.clone()),
            reason: Set(d.reason.clone()),
            decided_by: Set(d.decided_by.clone()),
            request_id: Set(d.request_id.clone()),
            decide_time: Set(d.decide_time),
            reason_ct: Set(None),
        }
        .insert(db)
        .await
        .expect("legacy row");
        let key = c
            .request_key(
                &tenant(),
                &d.request_id,
                "RecordCompellingGrounds",
                reason.as_bytes(),
            )
            .expect("key");
        vern_kit::idempotency::record(db, key.as_ref(), &d)
            .await
            .expect("legacy answer");
        decisions.push(d);
    }
    for needle in [REASON, GONE_REASON] {
        assert!(
            !vern_kit::testing::raw::cells_containing(db, needle.as_bytes())
                .await
                .is_empty(),
            "plaintext before"
        );
    }

    let changed = c.store().seal_legacy().await.expect("seal");
    assert_eq!(changed, 4, "two rows and two answers");
    assert_eq!(
        c.store().seal_legacy().await.expect("again"),
        0,
        "idempotent"
    );

    for needle in [REASON, GONE_REASON] {
        let cells = vern_kit::testing::raw::cells_containing(db, needle.as_bytes()).await;
        assert_eq!(cells, Vec::<String>::new(), "{needle}");
    }
    let sealed = c
        .store()
        .grounds_decisions(tenant().as_str(), &s)
        .await
        .expect("decisions");
    assert_eq!(sealed, vec![decisions[0].clone()], "sealed, still readable");
    let blanked = c
        .store()
        .grounds_decisions(tenant().as_str(), &gone)
        .await
        .expect("gone");
    assert_eq!(blanked[0].reason, "", "an erased subject's is blanked");
    // Retries of those calls read the decisions by the ids their answers kept.
    for (d, reason, want) in [
        (&decisions[0], REASON, REASON),
        (&decisions[1], GONE_REASON, ""),
    ] {
        let key = c
            .request_key(
                &tenant(),
                &d.request_id,
                "RecordCompellingGrounds",
                reason.as_bytes(),
            )
            .expect("key");
        let replayed = c
            .record_grounds(
                &tenant(),
                "dpo",
                grounds(&d.subject_id, reason),
                &d.request_id,
                key,
            )
            .await
            .expect("legacy replay");
        assert_eq!(replayed.decision_id, d.decision_id);
        assert_eq!(replayed.reason, want);
    }
}

/// A replica of the consents service: its own store connection and purpose cache over
/// the shared purposes table, following the change generations.
async fn replica(target: &DbTarget, subjects: Arc<Subjects>) -> Consents {
    let store = ConsentStore::open(target, keyring()).await.expect("open");
    let purposes = Arc::new(PurposeCache::with_book(
        Arc::new(Purposes),
        Arc::new(store.clone()),
    ));
    purposes.watch(store.connection().clone());
    Consents::new(store, purposes, subjects)
}

async fn purpose_changes_reach_every_replica_and_older_ones_are_ignored(target: DbTarget) {
    let subjects = Arc::new(Subjects::default());
    let a = replica(&target, subjects.clone()).await;
    let b = replica(&target, subjects.clone()).await;
    let subject = new_subject(&subjects);
    set_subject(&a, &subject, SubjectStatus::Active, 1).await;
    let rule = |legal_basis| {
        Some(PurposeRule {
            legal_basis,
            direct_marketing: false,
        })
    };
    let at = |version: i64, basis| {
        vec![(
            "loyalty".to_owned(),
            Versioned {
                rule: rule(basis),
                version,
            },
        )]
    };
    let allowed = |c: &Consents| {
        let (c, subject) = (c.clone(), subject.clone());
        async move {
            c.check(&tenant(), &subject, "loyalty")
                .await
                .expect("check")
                .0
                .allowed
        }
    };
    // v1: legitimate interests, announced to replica A only. B reads it from the table.
    let applied = a
        .apply_purposes(&tenant(), at(1_000, LegalBasis::LegitimateInterests))
        .await
        .expect("apply");
    assert_eq!(applied, 1);
    assert!(
        allowed(&a).await && allowed(&b).await,
        "v1 allows without consent"
    );

    // v2: consent is now required. A applies it; B, which cached v1, must follow.
    a.apply_purposes(&tenant(), at(2_000, LegalBasis::Consent))
        .await
        .expect("apply");
    assert!(
        !allowed(&a).await,
        "the writer answers the new rule at once"
    );
    let started = std::time::Instant::now();
    while allowed(&b).await {
        assert!(
            started.elapsed() < std::time::Duration::from_secs(2),
            "replica B still decides on the old legal basis after 2 s"
        );
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }

    // A late redelivery of v1, to either replica, changes nothing.
    for c in [&a, &b] {
        let applied = c
            .apply_purposes(&tenant(), at(1_000, LegalBasis::LegitimateInterests))
            .await
            .expect("apply");
        assert_eq!(applied, 0, "an older definition is ignored");
    }
    tokio::time::sleep(vern_kit::changes::WATCH_EVERY * 3).await;
    assert!(!allowed(&a).await && !allowed(&b).await);

    // A third replica started now reads the current rule.
    let c = replica(&target, subjects.clone()).await;
    assert!(!allowed(&c).await);
}
