//! End to end through the gateway: retention policies, legal holds, sweeps and
//! Evaluate with the seeds' case (a two-year-old e-mail under a one-year policy, a
//! recent invoice under the five-year bookkeeping duty), on SQLite and PostgreSQL.

use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use prost_types::Timestamp;
use tonic::Code;
use tonic::transport::Channel;
use tonic_types::StatusExt;
use vern_proto::audit::v1 as apb;
use vern_proto::common::v1::{DataCategory, LegalBasis};
use vern_proto::retention::v1 as rpb;
use vern_proto::subjects::v1 as spb;
use vern_proto::tenants::v1 as tpb;
use vern_tests::{Backend, Suite, authed, token};

const DAY: i64 = 86_400;

#[tokio::test]
async fn retention_on_sqlite() {
    let suite = Suite::start(Backend::Sqlite).await.expect("suite");
    scenario(&suite).await;
    suite.stop().await;
}

/// The same scenario against the deployed shape: two replicas of every service as
/// separate processes on PostgreSQL behind one name, one gateway.
#[tokio::test]
async fn retention_on_replicas() {
    let Some(suite) = Suite::start(Backend::Replicas).await else {
        return;
    };
    scenario(&suite).await;
    suite.stop().await;
}

#[tokio::test]
async fn retention_on_postgres() {
    let Some(suite) = Suite::start(Backend::Postgres).await else {
        return;
    };
    scenario(&suite).await;
    suite.stop().await;
}

#[tokio::test]
async fn scheduled_sweep_on_sqlite() {
    let suite = Suite::start_with(Backend::Sqlite, |c| c.retention.sweep_interval_seconds = 1)
        .await
        .expect("suite");
    let ch = &suite.channel;
    setup_tenant(ch, "sched").await;
    let admin = token(&["tenant-admin"], &["sched"], 600);
    let crm = token(&["integration"], &["sched"], 600);
    let subject = create_subject(ch, &crm, "s-1", now() - 730 * DAY, now() - 60 * DAY).await;
    let mut retention = rpb::retention_service_client::RetentionServiceClient::new(ch.clone());
    create_policies(&mut retention, &admin).await;
    let deadline = Instant::now() + Duration::from_secs(20);
    let run = loop {
        let runs = retention
            .list_sweep_runs(authed(rpb::ListSweepRunsRequest::default(), &admin))
            .await
            .expect("list runs")
            .into_inner()
            .sweep_runs;
        if let Some(r) = runs
            .into_iter()
            .find(|r| r.status != rpb::SweepStatus::Running as i32)
        {
            break r;
        }
        assert!(Instant::now() < deadline, "no scheduled sweep ran");
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    assert_eq!(run.trigger, rpb::SweepTrigger::Scheduled as i32);
    assert_eq!(run.status, rpb::SweepStatus::Succeeded as i32);
    assert!(!run.dry_run);
    assert!(run.requested_by.is_empty());
    let deleted: i64 = run.policy_results.iter().map(|p| p.deleted_count).sum();
    assert_eq!(deleted, 1);
    let records = get_records(ch, &crm, &subject).await;
    assert_eq!(records.len(), 1, "only the invoice is left");
    assert_eq!(records[0].field, "invoice");
    let events = audited(ch, "sched", "RunSweep", 1).await;
    let e = events
        .iter()
        .find(|e| e.resource_id == run.sweep_run_id)
        .expect("the scheduled run is audited");
    assert_eq!(e.actor.as_ref().expect("actor").sub, "retention-scheduler");
    assert_eq!(e.resource_type, "sweep_run");
    assert_eq!(e.service, "retention");
    suite.stop().await;
}

/// The tenant's audit events of `action`, once at least `want` reached the chain.
/// A subject erased while under an open-ended legal hold keeps its held records,
/// restricted, with no end; once the hold is released, the next sweep decides again:
/// the old e-mail goes, the invoice stays under its bookkeeping duty with that end.
#[tokio::test]
async fn records_kept_under_a_released_hold_are_swept_or_kept_by_their_duty() {
    let suite = Suite::start(Backend::Sqlite).await.expect("suite");
    let ch = &suite.channel;
    setup_tenant(ch, "acme").await;
    let admin = token(&["tenant-admin"], &["acme"], 600);
    let officer = token(&["privacy-officer"], &["acme"], 600);
    let crm = token(&["integration"], &["acme"], 600);
    let mut retention = rpb::retention_service_client::RetentionServiceClient::new(ch.clone());
    let (_, _) = create_policies(&mut retention, &admin).await;
    let (mail_at, invoice_at) = (now() - 800 * DAY, now() - 400 * DAY);
    let kari = create_subject(ch, &crm, "K-1", mail_at, invoice_at).await;
    let hold = retention
        .place_hold(authed(
            rpb::PlaceHoldRequest {
                scope: rpb::HoldScope::Subject as i32,
                subject_id: kari.clone(),
                reason: "tvistesak 2026/118".into(),
                request_id: "hold-kari".into(),
                ..Default::default()
            },
            &officer,
        ))
        .await
        .expect("hold")
        .into_inner();
    // The erasure as a rights request carries it out: everything held, no end.
    let records = get_records(ch, &crm, &kari).await;
    let mut subjects = spb::subject_service_client::SubjectServiceClient::new(ch.clone());
    let erased = subjects
        .erase_subject(authed(
            spb::EraseSubjectRequest {
                subject_id: kari.clone(),
                reason: "Art. 17 request".into(),
                retain: records
                    .iter()
                    .map(|r| spb::RetainedRecord {
                        record_id: r.record_id.clone(),
                        retain_until_time: None,
                        legal_reference: format!("legal hold {}", hold.hold_id),
                    })
                    .collect(),
                request_id: "erase-kari".into(),
                ..Default::default()
            },
            &officer,
        ))
        .await
        .expect("erase")
        .into_inner();
    assert!(!erased.fully_erased);
    let sweeper = retention.clone();
    let sweep = |n: &str| {
        let mut retention = sweeper.clone();
        let req = authed(
            rpb::RunSweepRequest {
                request_id: format!("sweep-{n}"),
                ..Default::default()
            },
            &admin,
        );
        async move { retention.run_sweep(req).await.expect("sweep").into_inner() }
    };
    sweep("held").await;
    assert_eq!(
        get_records(ch, &crm, &kari).await.len(),
        2,
        "held: all kept"
    );

    retention
        .release_hold(authed(
            rpb::ReleaseHoldRequest {
                hold_id: hold.hold_id.clone(),
                reason: "saken er avsluttet".into(),
                request_id: "release-kari".into(),
            },
            &officer,
        ))
        .await
        .expect("release");
    let run = sweep("released").await;
    let after = run
        .policy_results
        .iter()
        .find(|p| p.policy_id.is_empty())
        .expect("the after-erasure result");
    assert_eq!(
        (after.matched_count, after.deleted_count),
        (2, 1),
        "{after:?}"
    );
    let left = get_records(ch, &crm, &kari).await;
    assert_eq!(left.len(), 1, "{left:?}");
    assert_eq!(left[0].field, "invoice");
    assert!(left[0].restricted);
    assert_eq!(left[0].legal_reference, "bokføringsloven § 13");
    let invoice_year = civil(invoice_at.div_euclid(DAY)).0;
    assert_eq!(left[0].retain_until_time, ts(new_year(invoice_year + 6)));
    suite.stop().await;
}

async fn audited(ch: &Channel, tenant: &str, action: &str, want: usize) -> Vec<apb::AuditEvent> {
    let auditor = token(&["auditor"], &[tenant], 600);
    let mut audit = apb::audit_service_client::AuditServiceClient::new(ch.clone());
    let deadline = Instant::now() + Duration::from_secs(15);
    loop {
        let events = audit
            .query_events(authed(
                apb::QueryEventsRequest {
                    action: action.into(),
                    page_size: 100,
                    ..Default::default()
                },
                &auditor,
            ))
            .await
            .expect("query audit")
            .into_inner()
            .events;
        if events.len() >= want {
            return events;
        }
        assert!(Instant::now() < deadline, "{action} not audited");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

fn now() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs() as i64)
        .unwrap_or_default()
}

fn ts(seconds: i64) -> Option<Timestamp> {
    Some(Timestamp { seconds, nanos: 0 })
}

/// Days since 1970-01-01 → (year, month, day) (proleptic Gregorian, H. Hinnant).
fn civil(days: i64) -> (i64, u32, u32) {
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let m = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    let y = yoe + era * 400 + i64::from(m <= 2);
    (y, m, d)
}

/// 1 January of `year`, 00:00 UTC, as Unix seconds.
fn new_year(year: i64) -> i64 {
    let y = year - 1;
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let doy = 306; // 1 January is day 306 of the March-based year
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    (era * 146_097 + doe - 719_468) * DAY
}

async fn setup_tenant(ch: &Channel, id: &str) {
    let platform = token(&["platform-admin"], &[], 600);
    let mut tenants = tpb::tenant_service_client::TenantServiceClient::new(ch.clone());
    tenants
        .create_tenant(authed(
            tpb::CreateTenantRequest {
                tenant_id: id.into(),
                name: id.into(),
                org_number: "989990748".into(),
                dpo_email: "dpo@example.no".into(),
                ..Default::default()
            },
            &platform,
        ))
        .await
        .expect("tenant");
    let admin = token(&["tenant-admin"], &[id], 600);
    for (key, basis, categories) in [
        (
            "newsletter",
            LegalBasis::Consent,
            vec![DataCategory::Contact],
        ),
        (
            "bookkeeping",
            LegalBasis::LegalObligation,
            vec![DataCategory::Financial],
        ),
        (
            "correspondence",
            LegalBasis::LegitimateInterests,
            vec![DataCategory::Communications],
        ),
    ] {
        tenants
            .create_purpose(authed(
                tpb::CreatePurposeRequest {
                    key: key.into(),
                    description: format!("{key} purpose"),
                    legal_basis: basis as i32,
                    data_categories: categories.into_iter().map(|c| c as i32).collect(),
                    legitimate_interest: if basis == LegalBasis::LegitimateInterests {
                        "answering enquiries".into()
                    } else {
                        String::new()
                    },
                    direct_marketing: key == "newsletter",
                    ..Default::default()
                },
                &admin,
            ))
            .await
            .expect("purpose");
    }
}

/// A customer with an e-mail exchange collected at `mail_at` and an invoice collected
/// at `invoice_at`.
async fn create_subject(
    ch: &Channel,
    crm: &str,
    reference: &str,
    mail_at: i64,
    invoice_at: i64,
) -> String {
    let mut subjects = spb::subject_service_client::SubjectServiceClient::new(ch.clone());
    subjects
        .create_subject(authed(
            spb::CreateSubjectRequest {
                external_refs: vec![spb::ExternalRef {
                    system: "crm".into(),
                    id: reference.into(),
                }],
                records: vec![
                    spb::Record {
                        category: DataCategory::Communications as i32,
                        field: "email-correspondence".into(),
                        value: "Re: ordre 1001".into(),
                        source: "crm".into(),
                        purposes: vec!["correspondence".into()],
                        collected_at: ts(mail_at),
                        ..Default::default()
                    },
                    spb::Record {
                        category: DataCategory::Financial as i32,
                        field: "invoice".into(),
                        value: "Faktura 2026-0042, 12 500 kr".into(),
                        source: "accounting".into(),
                        purposes: vec!["bookkeeping".into()],
                        collected_at: ts(invoice_at),
                        ..Default::default()
                    },
                ],
                ..Default::default()
            },
            crm,
        ))
        .await
        .expect("create subject")
        .into_inner()
        .subject_id
}

async fn get_records(ch: &Channel, crm: &str, subject: &str) -> Vec<spb::Record> {
    let mut subjects = spb::subject_service_client::SubjectServiceClient::new(ch.clone());
    subjects
        .get_subject(authed(
            spb::GetSubjectRequest {
                subject_id: subject.into(),
                view: spb::SubjectView::Basic as i32,
                ..Default::default()
            },
            crm,
        ))
        .await
        .expect("get subject")
        .into_inner()
        .records
}

type Client = rpb::retention_service_client::RetentionServiceClient<Channel>;

/// The e-mail policy (P1Y from collection) and the bookkeeping duty (P5Y after the end
/// of the financial year).
async fn create_policies(
    retention: &mut Client,
    admin: &str,
) -> (rpb::RetentionPolicy, rpb::RetentionPolicy) {
    let mail = retention
        .create_policy(authed(
            rpb::CreatePolicyRequest {
                name: "E-mail correspondence".into(),
                category: DataCategory::Communications as i32,
                field: "email-correspondence".into(),
                period: "P1Y".into(),
                anchor: rpb::RetentionAnchor::CollectedAt as i32,
                action: rpb::RetentionAction::Delete as i32,
                legal_reference: "GDPR Art. 5(1)(e)".into(),
                request_id: "policy-mail".into(),
                ..Default::default()
            },
            admin,
        ))
        .await
        .expect("mail policy")
        .into_inner();
    let books = retention
        .create_policy(authed(
            rpb::CreatePolicyRequest {
                name: "Bookkeeping documentation".into(),
                category: DataCategory::Financial as i32,
                purpose: "bookkeeping".into(),
                period: "P5Y".into(),
                anchor: rpb::RetentionAnchor::EndOfFinancialYear as i32,
                action: rpb::RetentionAction::Delete as i32,
                legal_reference: "bokføringsloven § 13".into(),
                legal_duty: true,
                request_id: "policy-books".into(),
                ..Default::default()
            },
            admin,
        ))
        .await
        .expect("books policy")
        .into_inner();
    (mail, books)
}

async fn dry_run(retention: &mut Client, admin: &str) -> rpb::SweepRun {
    retention
        .run_sweep(authed(
            rpb::RunSweepRequest {
                dry_run: true,
                ..Default::default()
            },
            admin,
        ))
        .await
        .expect("dry run")
        .into_inner()
}

async fn scenario(suite: &Suite) {
    let ch = &suite.channel;
    setup_tenant(ch, "acme").await;
    let admin = token(&["tenant-admin"], &["acme"], 600);
    let officer = token(&["privacy-officer"], &["acme"], 600);
    let crm = token(&["integration"], &["acme"], 600);
    let service = token(&["service"], &["acme"], 600);
    let mut retention = rpb::retention_service_client::RetentionServiceClient::new(ch.clone());

    // Policies: validation names the field; an unknown purpose is refused.
    let e = retention
        .create_policy(authed(
            rpb::CreatePolicyRequest {
                purpose: "no-such-purpose".into(),
                period: "P1Y".into(),
                anchor: rpb::RetentionAnchor::CollectedAt as i32,
                action: rpb::RetentionAction::Delete as i32,
                legal_reference: "x".into(),
                ..Default::default()
            },
            &admin,
        ))
        .await
        .expect_err("unknown purpose");
    assert_eq!(e.code(), Code::InvalidArgument);
    assert_eq!(
        e.get_details_bad_request()
            .expect("details")
            .field_violations[0]
            .field,
        "purpose"
    );
    let e = retention
        .create_policy(authed(
            rpb::CreatePolicyRequest {
                category: DataCategory::Contact as i32,
                period: "5 years".into(),
                anchor: rpb::RetentionAnchor::CollectedAt as i32,
                action: rpb::RetentionAction::Delete as i32,
                legal_reference: "x".into(),
                ..Default::default()
            },
            &admin,
        ))
        .await
        .expect_err("bad period");
    assert_eq!(e.code(), Code::InvalidArgument);
    assert_eq!(
        e.get_details_bad_request()
            .expect("details")
            .field_violations[0]
            .field,
        "period"
    );
    let (mail, books) = create_policies(&mut retention, &admin).await;
    assert_eq!(books.period, "P5Y");
    assert!(books.legal_duty);
    let (again, _) = create_policies(&mut retention, &admin).await;
    assert_eq!(
        again.policy_id, mail.policy_id,
        "request_id makes CreatePolicy idempotent"
    );
    // The rights service reads the policies with a service token, on the internal
    // listener (the gateway refuses the service role).
    let listed = rpb::retention_service_client::RetentionServiceClient::new(suite.internal.clone())
        .list_policies(authed(rpb::ListPoliciesRequest::default(), &service))
        .await
        .expect("list policies")
        .into_inner()
        .policies;
    assert_eq!(
        listed
            .iter()
            .map(|p| p.policy_id.as_str())
            .collect::<Vec<_>>(),
        vec![mail.policy_id.as_str(), books.policy_id.as_str()]
    );
    let updated = retention
        .update_policy(authed(
            rpb::UpdatePolicyRequest {
                policy: Some(rpb::RetentionPolicy {
                    policy_id: books.policy_id.clone(),
                    name: "Regnskapsmateriale".into(),
                    ..Default::default()
                }),
                update_mask: Some(prost_types::FieldMask {
                    paths: vec!["name".into()],
                }),
                request_id: "rename-books".into(),
            },
            &admin,
        ))
        .await
        .expect("update")
        .into_inner();
    assert_eq!(updated.name, "Regnskapsmateriale");
    assert_eq!(updated.period, "P5Y", "fields outside the mask unchanged");

    // Two customers: each with a two-year-old e-mail exchange and a recent invoice.
    let t0 = now();
    let invoice_at = t0 - 60 * DAY;
    let kari = create_subject(ch, &crm, "C-1", t0 - 730 * DAY, invoice_at).await;
    let ola = create_subject(ch, &crm, "C-2", t0 - 730 * DAY, invoice_at).await;
    let kari_records = get_records(ch, &crm, &kari).await;
    let kari_mail = kari_records
        .iter()
        .find(|r| r.field == "email-correspondence")
        .expect("mail")
        .record_id
        .clone();
    let kari_invoice = kari_records
        .iter()
        .find(|r| r.field == "invoice")
        .expect("invoice")
        .record_id
        .clone();

    // Ola's data is under a legal hold.
    let hold = retention
        .place_hold(authed(
            rpb::PlaceHoldRequest {
                scope: rpb::HoldScope::Subject as i32,
                subject_id: ola.clone(),
                reason: "tvistesak 2026/117".into(),
                request_id: "hold-ola".into(),
                ..Default::default()
            },
            &officer,
        ))
        .await
        .expect("place hold")
        .into_inner();
    assert_eq!(hold.status, rpb::HoldStatus::Active as i32);
    assert_eq!(hold.placed_by, "e2e");

    // Dry run: the old e-mail of Kari, not the invoice, not Ola's (held) data.
    let dry = dry_run(&mut retention, &admin).await;
    assert_eq!(dry.status, rpb::SweepStatus::Succeeded as i32);
    assert_eq!(dry.trigger, rpb::SweepTrigger::OnDemand as i32);
    assert_eq!(dry.items.len(), 1, "{:?}", dry.items);
    let item = &dry.items[0];
    assert_eq!(item.record_id, kari_mail);
    assert_eq!(item.subject_id, kari);
    assert_eq!(item.policy_id, mail.policy_id);
    let (y, m, d) = civil((t0 - 730 * DAY + 365 * DAY).div_euclid(DAY));
    let (y2, m2, d2) = civil((t0 - 730 * DAY + 366 * DAY).div_euclid(DAY));
    assert!(
        item.reason
            == format!("P1Y from COLLECTED_AT ended {y}-{m:02}-{d:02} (E-mail correspondence)")
            || item.reason
                == format!(
                    "P1Y from COLLECTED_AT ended {y2}-{m2:02}-{d2:02} (E-mail correspondence)"
                ),
        "{}",
        item.reason
    );
    assert_eq!(dry.held_subject_count, 1);
    let mail_result = dry
        .policy_results
        .iter()
        .find(|p| p.policy_id == mail.policy_id)
        .expect("mail result");
    assert_eq!(mail_result.matched_count, 2);
    assert_eq!(mail_result.kept_count, 1, "Ola's e-mail is held");
    assert_eq!(mail_result.deleted_count, 0);
    let books_result = dry
        .policy_results
        .iter()
        .find(|p| p.policy_id == books.policy_id)
        .expect("books result");
    assert_eq!(books_result.matched_count, 0);
    assert_eq!(books_result.legal_reference, "bokføringsloven § 13");
    // Nothing changed; the run is recorded with its items.
    assert_eq!(get_records(ch, &crm, &kari).await.len(), 2);
    let stored = retention
        .get_sweep_run(authed(
            rpb::GetSweepRunRequest {
                sweep_run_id: dry.sweep_run_id.clone(),
            },
            &admin,
        ))
        .await
        .expect("get run")
        .into_inner();
    assert_eq!(stored.items, dry.items);

    // A privacy officer may not run sweeps.
    let e = retention
        .run_sweep(authed(rpb::RunSweepRequest::default(), &officer))
        .await
        .expect_err("no sweep permission");
    assert_eq!(e.code(), Code::PermissionDenied);

    // The real sweep deletes the e-mail (count 1) through the subjects service.
    let real = retention
        .run_sweep(authed(
            rpb::RunSweepRequest {
                request_id: "sweep-1".into(),
                ..Default::default()
            },
            &admin,
        ))
        .await
        .expect("sweep")
        .into_inner();
    assert_eq!(real.status, rpb::SweepStatus::Succeeded as i32);
    assert!(!real.dry_run);
    assert!(real.items.is_empty());
    assert_eq!(real.requested_by, "e2e");
    let mail_result = real
        .policy_results
        .iter()
        .find(|p| p.policy_id == mail.policy_id)
        .expect("mail result");
    assert_eq!(mail_result.deleted_count, 1);
    assert_eq!(mail_result.kept_count, 1);
    let left = get_records(ch, &crm, &kari).await;
    assert_eq!(left.len(), 1);
    assert_eq!(left[0].record_id, kari_invoice);
    assert_eq!(
        get_records(ch, &crm, &ola).await.len(),
        2,
        "held data stays"
    );
    // A retry of the same request returns the same run and sweeps nothing more.
    let retry = retention
        .run_sweep(authed(
            rpb::RunSweepRequest {
                request_id: "sweep-1".into(),
                ..Default::default()
            },
            &admin,
        ))
        .await
        .expect("retry")
        .into_inner();
    assert_eq!(retry.sweep_run_id, real.sweep_run_id);
    // A second dry run lists nothing.
    assert!(dry_run(&mut retention, &admin).await.items.is_empty());
    let runs = retention
        .list_sweep_runs(authed(
            rpb::ListSweepRunsRequest {
                exclude_dry_runs: true,
                ..Default::default()
            },
            &admin,
        ))
        .await
        .expect("runs")
        .into_inner()
        .sweep_runs;
    assert_eq!(runs.len(), 1);
    assert_eq!(runs[0].sweep_run_id, real.sweep_run_id);

    // Evaluate: the invoice must be kept until 1 Jan (Y+1) + 5 years, under the
    // bookkeeping reference.
    let invoice_year = civil(invoice_at.div_euclid(DAY)).0;
    let eval = rpb::retention_service_client::RetentionServiceClient::new(suite.internal.clone())
        .evaluate(authed(
            rpb::EvaluateRequest {
                subject_id: kari.clone(),
                evaluate_time: None,
            },
            &service,
        ))
        .await
        .expect("evaluate")
        .into_inner();
    assert_eq!(eval.decisions.len(), 1);
    let d = &eval.decisions[0];
    assert_eq!(d.record_id, kari_invoice);
    assert_eq!(d.disposition, rpb::Disposition::MustKeep as i32);
    assert_eq!(d.legal_reference, "bokføringsloven § 13");
    assert_eq!(d.policy_id, books.policy_id);
    assert_eq!(d.retain_until_time, ts(new_year(invoice_year + 6)));
    assert!(eval.any_kept);
    assert_eq!(eval.retain_until_time, ts(new_year(invoice_year + 6)));
    assert!(eval.holds.is_empty());

    // Ola's records are HELD.
    let eval = retention
        .evaluate(authed(
            rpb::EvaluateRequest {
                subject_id: ola.clone(),
                evaluate_time: None,
            },
            &admin,
        ))
        .await
        .expect("evaluate")
        .into_inner();
    assert_eq!(eval.decisions.len(), 2);
    for d in &eval.decisions {
        assert_eq!(d.disposition, rpb::Disposition::Held as i32);
        assert_eq!(d.hold_id, hold.hold_id);
    }
    assert_eq!(eval.holds.len(), 1);
    assert!(eval.retain_until_time.is_none(), "open-ended hold");
    let e = retention
        .evaluate(authed(
            rpb::EvaluateRequest {
                subject_id: uuid::Uuid::new_v4().to_string(),
                evaluate_time: None,
            },
            &admin,
        ))
        .await
        .expect_err("unknown subject");
    assert_eq!(e.code(), Code::NotFound);

    // Releasing the hold lets the next sweep take Ola's old e-mail.
    let released = retention
        .release_hold(authed(
            rpb::ReleaseHoldRequest {
                hold_id: hold.hold_id.clone(),
                reason: "saken er avsluttet".into(),
                request_id: "release-ola".into(),
            },
            &officer,
        ))
        .await
        .expect("release")
        .into_inner();
    assert_eq!(released.status, rpb::HoldStatus::Released as i32);
    let e = retention
        .release_hold(authed(
            rpb::ReleaseHoldRequest {
                hold_id: hold.hold_id.clone(),
                reason: "again".into(),
                request_id: "release-ola-2".into(),
            },
            &officer,
        ))
        .await
        .expect_err("already released");
    assert_eq!(e.code(), Code::FailedPrecondition);
    let holds = retention
        .list_holds(authed(
            rpb::ListHoldsRequest {
                include_inactive: true,
                ..Default::default()
            },
            &admin,
        ))
        .await
        .expect("holds")
        .into_inner()
        .holds;
    assert_eq!(holds.len(), 1);
    let dry = dry_run(&mut retention, &admin).await;
    assert_eq!(dry.items.len(), 1);
    assert_eq!(dry.items[0].subject_id, ola);

    // Another tenant sees none of it.
    setup_tenant(ch, "other").await;
    let other = token(&["tenant-admin"], &["other"], 600);
    let e = retention
        .get_policy(authed(
            rpb::GetPolicyRequest {
                policy_id: mail.policy_id.clone(),
            },
            &other,
        ))
        .await
        .expect_err("foreign policy");
    assert_eq!(e.code(), Code::NotFound);
    let e = retention
        .evaluate(authed(
            rpb::EvaluateRequest {
                subject_id: kari.clone(),
                evaluate_time: None,
            },
            &other,
        ))
        .await
        .expect_err("foreign subject");
    assert_eq!(e.code(), Code::NotFound);
    assert!(
        retention
            .list_sweep_runs(authed(rpb::ListSweepRunsRequest::default(), &other))
            .await
            .expect("runs")
            .into_inner()
            .sweep_runs
            .is_empty()
    );

    // Deleting a policy: past runs keep its id.
    retention
        .delete_policy(authed(
            rpb::DeletePolicyRequest {
                policy_id: mail.policy_id.clone(),
                request_id: "delete-mail".into(),
            },
            &admin,
        ))
        .await
        .expect("delete");
    let stored = retention
        .get_sweep_run(authed(
            rpb::GetSweepRunRequest {
                sweep_run_id: real.sweep_run_id.clone(),
            },
            &admin,
        ))
        .await
        .expect("run")
        .into_inner();
    assert!(
        stored
            .policy_results
            .iter()
            .any(|p| p.policy_id == mail.policy_id)
    );

    // Changes are audited with ids only.
    let created = audited(ch, "acme", "CreatePolicy", 2).await;
    assert!(
        created
            .iter()
            .all(|e| e.service == "retention" && e.resource_type == "policy")
    );
    let ids: Vec<&str> = created.iter().map(|e| e.resource_id.as_str()).collect();
    assert!(ids.contains(&mail.policy_id.as_str()) && ids.contains(&books.policy_id.as_str()));
    let placed = audited(ch, "acme", "PlaceHold", 1).await;
    assert_eq!(placed[0].resource_type, "hold");
    assert_eq!(placed[0].resource_id, hold.hold_id);
    assert_eq!(placed[0].subject_id, ola);
    let sweeps = audited(ch, "acme", "RunSweep", 3).await;
    assert!(
        sweeps
            .iter()
            .any(|e| e.resource_id == real.sweep_run_id && e.resource_type == "sweep_run")
    );
    let updates = audited(ch, "acme", "UpdatePolicy", 1).await;
    assert_eq!(updates[0].changed_fields, vec!["name".to_string()]);
    audited(ch, "acme", "ReleaseHold", 1).await;
    audited(ch, "acme", "DeletePolicy", 1).await;
    let reads = audited(ch, "acme", "Evaluate", 2).await;
    assert!(reads.iter().any(|e| e.subject_id == kari));
    for e in created.iter().chain(&placed).chain(&sweeps).chain(&reads) {
        let text = format!("{e:?}");
        assert!(
            !text.contains("Re: ordre") && !text.contains("Faktura"),
            "no personal data in audit events"
        );
    }
}
