//! The tenants store and use cases, run on SQLite and on PostgreSQL.

use vern_kit::ApiError;
use vern_kit::context::TenantId;
use vern_kit::db::DbTarget;
use vern_kit::idempotency::Key;
use vern_tenants::domain::{
    DataCategory, LegalBasis, NewRecipient, PurposeSpec, RecipientRole, TenantProfile,
    TenantStatus, TransferSafeguard,
};
use vern_tenants::error::TenantError;
use vern_tenants::service::{Registry, Visibility};
use vern_tenants::store::{TenantFilter, TenantStore};

vern_kit::store_test_suite!("tenants":
    tenant_round_trip,
    duplicate_tenant_is_rejected,
    tenants_page_in_order,
    update_applies_mask_and_detects_bad_input,
    purposes_are_isolated_per_tenant,
    recipients_need_known_purposes,
    request_id_makes_writes_idempotent,
    suspended_tenant_refuses_new_purposes,
    purpose_changes_are_notified_through_the_outbox,
    recipients_are_updated_with_their_dpa_and_ended,
);

async fn registry(target: DbTarget) -> Registry {
    Registry::new(TenantStore::open(&target).await.expect("open store"))
}

fn profile(name: &str) -> TenantProfile {
    TenantProfile {
        name: name.into(),
        org_number: "989 990 748".into(),
        dpo_email: "Personvern@Example.no".into(),
        ..Default::default()
    }
}

fn spec() -> PurposeSpec {
    PurposeSpec {
        description: "Sende ut nyhetsbrevet KLIMA".into(),
        legal_basis: LegalBasis::Consent,
        data_categories: vec![DataCategory::Contact],
        direct_marketing: true,
        subject_categories: vec!["newsletter subscribers".into()],
        legitimate_interest: String::new(),
        special_condition: None,
        retention_summary: "until consent is withdrawn".into(),
    }
}

async fn tenant_round_trip(target: DbTarget) {
    let r = registry(target).await;
    let t = r
        .create_tenant("cicero".into(), profile("CICERO"), None)
        .await
        .expect("create");
    assert_eq!(t.org_number, "989990748", "normalised");
    assert_eq!(t.dpo_email, "personvern@example.no", "lower-cased");
    assert_eq!(t.supervisory_authority, "Datatilsynet", "default authority");
    assert_eq!(t.status, TenantStatus::Active);
    let got = r.get_tenant(&Visibility::All, "cicero").await.expect("get");
    assert_eq!(got, t);
    // A tenant-scoped caller cannot see another tenant.
    let e = r
        .get_tenant(&Visibility::Own(TenantId::new("other")), "cicero")
        .await
        .expect_err("hidden");
    assert!(matches!(e, TenantError::TenantNotFound));
}

async fn duplicate_tenant_is_rejected(target: DbTarget) {
    let r = registry(target).await;
    r.create_tenant("cicero".into(), profile("CICERO"), None)
        .await
        .expect("create");
    let e = r
        .create_tenant("cicero".into(), profile("Again"), None)
        .await
        .expect_err("dup");
    assert_eq!(ApiError::from(e).code(), tonic::Code::AlreadyExists);
}

async fn tenants_page_in_order(target: DbTarget) {
    let r = registry(target).await;
    for id in ["dept-c", "dept-a", "dept-b", "dept-e", "dept-d"] {
        r.create_tenant(id.into(), profile(id), None)
            .await
            .expect("create");
    }
    let p1 = r
        .list_tenants(&Visibility::All, None, 2, TenantFilter::default())
        .await
        .expect("p1");
    let ids: Vec<_> = p1.items.iter().map(|t| t.tenant_id.as_str()).collect();
    assert_eq!(ids, ["dept-a", "dept-b"]);
    assert!(p1.more);
    let p3 = r
        .list_tenants(&Visibility::All, Some("dept-d"), 2, TenantFilter::default())
        .await
        .expect("p3");
    assert_eq!(p3.items.len(), 1);
    assert!(!p3.more);
    let own = r
        .list_tenants(
            &Visibility::Own(TenantId::new("dept-b")),
            None,
            50,
            TenantFilter::default(),
        )
        .await
        .expect("own");
    assert_eq!(own.items.len(), 1);
    assert_eq!(own.items[0].tenant_id, "dept-b");
}

async fn update_applies_mask_and_detects_bad_input(target: DbTarget) {
    let r = registry(target).await;
    r.create_tenant("cicero".into(), profile("CICERO"), None)
        .await
        .expect("create");
    let changes = TenantProfile {
        dpo_email: "dpo@cicero.example".into(),
        name: "ignored because not in mask".into(),
        ..Default::default()
    };
    let t = r
        .update_tenant(
            &Visibility::All,
            "cicero",
            &["dpo_email".into()],
            changes,
            None,
        )
        .await
        .expect("update");
    assert_eq!(t.dpo_email, "dpo@cicero.example");
    assert_eq!(t.name, "CICERO");
    let bad = TenantProfile {
        org_number: "989990749".into(),
        ..Default::default()
    };
    let e = r
        .update_tenant(
            &Visibility::All,
            "cicero",
            &["org_number".into()],
            bad,
            None,
        )
        .await
        .expect_err("bad org number");
    match ApiError::from(e) {
        ApiError::InvalidArgument(v) => assert_eq!(v[0].field, "tenant.org_number"),
        other => panic!("unexpected {other:?}"),
    }
    let unchanged = r.get_tenant(&Visibility::All, "cicero").await.expect("get");
    assert_eq!(unchanged.org_number, "989990748", "nothing written");
}

async fn purposes_are_isolated_per_tenant(target: DbTarget) {
    let r = registry(target).await;
    r.create_tenant("dept-a".into(), profile("A"), None)
        .await
        .expect("a");
    r.create_tenant("dept-b".into(), profile("B"), None)
        .await
        .expect("b");
    let a = TenantId::new("dept-a");
    let b = TenantId::new("dept-b");
    r.create_purpose(&a, "newsletter".into(), spec(), None)
        .await
        .expect("purpose");
    assert!(matches!(
        r.get_purpose(&b, "newsletter").await.expect_err("isolated"),
        TenantError::PurposeNotFound
    ));
    assert!(
        r.list_purposes(&b, None, 50)
            .await
            .expect("list")
            .items
            .is_empty()
    );
    // The same key in another tenant is a different purpose.
    r.create_purpose(&b, "newsletter".into(), spec(), None)
        .await
        .expect("same key, other tenant");
    let e = r
        .create_purpose(&a, "newsletter".into(), spec(), None)
        .await
        .expect_err("dup");
    assert_eq!(ApiError::from(e).code(), tonic::Code::AlreadyExists);
}

async fn recipients_need_known_purposes(target: DbTarget) {
    let r = registry(target).await;
    r.create_tenant("dept-a".into(), profile("A"), None)
        .await
        .expect("a");
    let a = TenantId::new("dept-a");
    r.create_purpose(&a, "newsletter".into(), spec(), None)
        .await
        .expect("purpose");
    let new = NewRecipient {
        name: "Mailchimp".into(),
        role: Some(RecipientRole::Processor),
        purposes: vec!["newsletter".into(), "payroll".into()],
        country: "US".into(),
        transfer_safeguard: Some(TransferSafeguard::StandardContractualClauses),
        description: String::new(),
        dpa_reference: String::new(),
        dpa_signed_date: None,
        dpa_expiry_date: None,
    };
    let e = r
        .create_recipient(&a, new.clone(), None)
        .await
        .expect_err("unknown purpose");
    match ApiError::from(e) {
        ApiError::InvalidArgument(v) => assert_eq!(v[0].field, "purposes[1]"),
        other => panic!("unexpected {other:?}"),
    }
    let ok = NewRecipient {
        purposes: vec!["newsletter".into()],
        ..new
    };
    let rec = r.create_recipient(&a, ok, None).await.expect("create");
    let (_, purposes, recipients) = r.processing_record(&a).await.expect("record");
    assert_eq!(purposes.len(), 1);
    assert_eq!(recipients, vec![rec]);
}

async fn request_id_makes_writes_idempotent(target: DbTarget) {
    let r = registry(target).await;
    let key = || Key::new(None, "req-1", "CreateTenant", b"same request");
    let first = r
        .create_tenant("cicero".into(), profile("CICERO"), key())
        .await
        .expect("first");
    let again = r
        .create_tenant("cicero".into(), profile("CICERO"), key())
        .await
        .expect("retry");
    assert_eq!(first, again, "same id, same answer");
    let all = r
        .list_tenants(&Visibility::All, None, 50, TenantFilter::default())
        .await
        .expect("list");
    assert_eq!(all.items.len(), 1, "no second write");
    let other = Key::new(None, "req-1", "CreateTenant", b"different request");
    let e = r
        .create_tenant("other-dept".into(), profile("Other"), other)
        .await
        .expect_err("reuse");
    assert_eq!(ApiError::from(e).code(), tonic::Code::FailedPrecondition);
    assert!(
        r.get_tenant(&Visibility::All, "other-dept").await.is_err(),
        "not written"
    );
}

async fn suspended_tenant_refuses_new_purposes(target: DbTarget) {
    let r = registry(target).await;
    r.create_tenant("dept-a".into(), profile("A"), None)
        .await
        .expect("a");
    let t = r
        .suspend_tenant("dept-a", "contract ended", None)
        .await
        .expect("suspend");
    assert_eq!(t.status, TenantStatus::Suspended);
    let e = r
        .create_purpose(&TenantId::new("dept-a"), "newsletter".into(), spec(), None)
        .await
        .expect_err("suspended");
    assert_eq!(ApiError::from(e).code(), tonic::Code::FailedPrecondition);
}

async fn purpose_changes_are_notified_through_the_outbox(target: DbTarget) {
    let r = registry(target).await;
    r.create_tenant("dept-a".into(), profile("A"), None)
        .await
        .expect("a");
    let a = TenantId::new("dept-a");
    r.create_purpose(&a, "newsletter".into(), spec(), None)
        .await
        .expect("purpose");
    let changed = PurposeSpec {
        legal_basis: LegalBasis::LegitimateInterests,
        legitimate_interest: "keeping members informed".into(),
        ..spec()
    };
    r.update_purpose(
        &a,
        "newsletter",
        &["legal_basis".into(), "legitimate_interest".into()],
        changed,
        None,
    )
    .await
    .expect("update");
    let db = r.store().connection();
    assert_eq!(
        vern_kit::outbox::backlog(db).await.expect("backlog"),
        2,
        "one notification per change"
    );
    // A failed change notifies nothing.
    let _ = r
        .create_purpose(&a, "newsletter".into(), spec(), None)
        .await
        .expect_err("duplicate");
    assert_eq!(vern_kit::outbox::backlog(db).await.expect("backlog"), 2);
}

fn fields(e: TenantError) -> (tonic::Code, Vec<String>) {
    match ApiError::from(e) {
        ApiError::InvalidArgument(v) => (
            tonic::Code::InvalidArgument,
            v.into_iter().map(|x| x.field).collect(),
        ),
        other => (other.code(), vec![]),
    }
}

async fn recipients_are_updated_with_their_dpa_and_ended(target: DbTarget) {
    let r = registry(target).await;
    for id in ["dept-a", "dept-b"] {
        r.create_tenant(id.into(), profile(id), None)
            .await
            .expect("tenant");
    }
    let a = TenantId::new("dept-a");
    for key in ["newsletter", "invoicing"] {
        r.create_purpose(&a, key.into(), spec(), None)
            .await
            .expect("purpose");
    }
    let signed = chrono::DateTime::parse_from_rfc3339("2024-03-01T00:00:00Z")
        .expect("t")
        .with_timezone(&chrono::Utc);
    let created = r
        .create_recipient(
            &a,
            NewRecipient {
                name: "Mailchimp".into(),
                role: Some(RecipientRole::Processor),
                purposes: vec!["newsletter".into()],
                country: "US".into(),
                transfer_safeguard: Some(TransferSafeguard::StandardContractualClauses),
                description: "sends the newsletter".into(),
                dpa_reference: " DPA-2024-17 ".into(),
                dpa_signed_date: Some(signed),
                dpa_expiry_date: None,
            },
            None,
        )
        .await
        .expect("create");
    assert_eq!(created.dpa_reference, "DPA-2024-17", "trimmed");
    assert_eq!(created.dpa_signed_date, Some(signed));
    assert_eq!(created.end_time, None);
    let id = created.recipient_id.clone();
    let mask = |paths: &[&str]| -> Vec<String> { paths.iter().map(|p| (*p).into()).collect() };
    let change = NewRecipient {
        name: "Intuit Mailchimp".into(),
        role: None,
        purposes: vec!["newsletter".into(), "invoicing".into()],
        country: "IE".into(),
        transfer_safeguard: None,
        description: "ignored: not in the mask".into(),
        dpa_reference: "DPA-2025-02".into(),
        dpa_signed_date: None,
        dpa_expiry_date: Some(signed + chrono::Duration::days(3 * 365)),
    };

    // Only the masked fields change; the result is checked as on create.
    let updated = r
        .update_recipient(
            &a,
            &id,
            &mask(&["name", "purposes", "dpa_reference", "dpa_expiry_date"]),
            change.clone(),
            None,
        )
        .await
        .expect("update");
    assert_eq!(updated.name, "Intuit Mailchimp");
    assert_eq!(updated.purposes, ["invoicing", "newsletter"]);
    assert_eq!(updated.dpa_reference, "DPA-2025-02");
    assert_eq!(updated.dpa_signed_date, Some(signed), "kept");
    assert_eq!(
        updated.description, "sends the newsletter",
        "not in the mask"
    );
    assert_eq!(updated.country, "US", "not in the mask");
    assert!(updated.update_time > created.update_time);
    assert_eq!(
        r.store().get_recipient("dept-a", &id).await.expect("get"),
        Some(updated.clone()),
        "stored as answered"
    );

    // Bad input names the field: a path that cannot be updated, a purpose the tenant
    // does not have, a third country without a safeguard, an expiry before signing.
    let bad = |m: Vec<String>, c: NewRecipient| {
        let (r, a, id) = (r.clone(), a.clone(), id.clone());
        async move {
            fields(
                r.update_recipient(&a, &id, &m, c, None)
                    .await
                    .expect_err("invalid"),
            )
        }
    };
    assert_eq!(
        bad(mask(&["role"]), change.clone()).await,
        (
            tonic::Code::InvalidArgument,
            vec!["update_mask.paths[0]".into()]
        )
    );
    assert_eq!(
        bad(mask(&[]), change.clone()).await,
        (tonic::Code::InvalidArgument, vec!["update_mask".into()])
    );
    assert_eq!(
        bad(
            mask(&["purposes"]),
            NewRecipient {
                purposes: vec!["payroll".into()],
                ..change.clone()
            }
        )
        .await,
        (
            tonic::Code::InvalidArgument,
            vec!["recipient.purposes[0]".into()]
        )
    );
    assert_eq!(
        bad(
            mask(&["transfer_safeguard"]),
            NewRecipient {
                transfer_safeguard: None,
                ..change.clone()
            }
        )
        .await,
        (
            tonic::Code::InvalidArgument,
            vec!["recipient.transfer_safeguard".into()]
        )
    );
    assert_eq!(
        bad(
            mask(&["dpa_signed_date", "dpa_expiry_date"]),
            NewRecipient {
                dpa_signed_date: Some(signed),
                dpa_expiry_date: Some(signed - chrono::Duration::days(1)),
                ..change.clone()
            }
        )
        .await,
        (
            tonic::Code::InvalidArgument,
            vec!["recipient.dpa_expiry_date".into()]
        )
    );
    // A writer that read before the update loses (compare-and-set on update_time).
    let stale = r
        .store()
        .update_recipient(
            &vern_tenants::domain::Recipient {
                name: "stale".into(),
                ..updated.clone()
            },
            created.update_time,
            None,
        )
        .await
        .expect_err("stale");
    assert_eq!(ApiError::from(stale).code(), tonic::Code::Aborted);
    // Another tenant does not see it.
    let b = TenantId::new("dept-b");
    let e = r
        .update_recipient(&b, &id, &mask(&["name"]), change.clone(), None)
        .await
        .expect_err("foreign");
    assert!(matches!(e, TenantError::RecipientNotFound), "{e:?}");

    // It is in the record of processing until it is ended.
    let (_, _, current) = r.processing_record(&a).await.expect("record");
    assert_eq!(current, vec![updated.clone()]);
    let e = r
        .end_recipient(&a, &id, None, "  ", None)
        .await
        .expect_err("no reason");
    assert_eq!(
        fields(e),
        (tonic::Code::InvalidArgument, vec!["reason".into()])
    );
    let key = || Key::new(Some("dept-a"), "end-1", "EndRecipient", b"end mailchimp");
    let end = signed + chrono::Duration::days(400);
    let ended = r
        .end_recipient(&a, &id, Some(end), "contract terminated", key())
        .await
        .expect("end");
    assert_eq!(ended.end_time, Some(end));
    assert_eq!(ended.end_reason, "contract terminated");
    let (_, _, current) = r.processing_record(&a).await.expect("record");
    assert!(current.is_empty(), "an ended recipient leaves the record");
    let listed = r.list_recipients(&a, None, 50, false).await.expect("list");
    assert!(listed.items.is_empty(), "only current ones by default");
    let history = r.list_recipients(&a, None, 50, true).await.expect("list");
    assert_eq!(
        history.items,
        vec![ended.clone()],
        "but it stays in the history"
    );

    // Ending again: the first answer for the same request id, refused for another.
    let again = r
        .end_recipient(&a, &id, Some(end), "contract terminated", key())
        .await
        .expect("retry");
    assert_eq!(again, ended);
    let other = Key::new(Some("dept-a"), "end-2", "EndRecipient", b"end again");
    let e = r
        .end_recipient(&a, &id, None, "again", other)
        .await
        .expect_err("ended twice");
    assert_eq!(ApiError::from(e).code(), tonic::Code::FailedPrecondition);
    // An ended recipient cannot change.
    let e = r
        .update_recipient(&a, &id, &mask(&["name"]), change, None)
        .await
        .expect_err("ended");
    assert_eq!(ApiError::from(e).code(), tonic::Code::FailedPrecondition);
}
