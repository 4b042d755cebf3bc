//! End to end through the gateway: the legal rules of issue 17 — what an objection
//! stops (Art. 21), what a suspended department may still do, which purposes a record
//! may name, what downstream systems hear of erasures, restriction per purpose and its
//! lifting (Art. 18, 19).

use std::time::{Duration, Instant};

use tonic::Code;
use tonic::transport::Channel;
use tonic_types::StatusExt;
use vern_proto::common::v1::{DataCategory, LegalBasis};
use vern_proto::consents::v1 as cpb;
use vern_proto::rights::v1 as rpb;
use vern_proto::subjects::v1 as spb;
use vern_proto::tenants::v1 as tpb;
use vern_tests::{Backend, Suite, authed, create_tenant, token, verify_and_fulfil};

const TENANT: &str = "kultur";

fn tenants(ch: &Channel) -> tpb::tenant_service_client::TenantServiceClient<Channel> {
    tpb::tenant_service_client::TenantServiceClient::new(ch.clone())
}

fn consents(ch: &Channel) -> cpb::consent_service_client::ConsentServiceClient<Channel> {
    cpb::consent_service_client::ConsentServiceClient::new(ch.clone())
}

fn subjects(ch: &Channel) -> spb::subject_service_client::SubjectServiceClient<Channel> {
    spb::subject_service_client::SubjectServiceClient::new(ch.clone())
}

async fn purpose(ch: &Channel, key: &str, basis: LegalBasis, direct_marketing: bool) {
    let admin = token(&["tenant-admin"], &[TENANT], 600);
    let interest = if basis == LegalBasis::LegitimateInterests {
        "telling members about our events"
    } else {
        ""
    };
    tenants(ch)
        .create_purpose(authed(
            tpb::CreatePurposeRequest {
                key: key.into(),
                description: format!("{key} purpose"),
                legal_basis: basis as i32,
                data_categories: vec![DataCategory::Contact as i32],
                legitimate_interest: interest.into(),
                direct_marketing,
                ..Default::default()
            },
            &admin,
        ))
        .await
        .unwrap_or_else(|e| panic!("purpose {key}: {e:?}"));
}

async fn new_subject(ch: &Channel, email: &str) -> String {
    let crm = token(&["integration"], &[TENANT], 600);
    subjects(ch)
        .create_subject(authed(
            spb::CreateSubjectRequest {
                email: email.into(),
                request_id: format!("create-{email}"),
                ..Default::default()
            },
            &crm,
        ))
        .await
        .expect("subject")
        .into_inner()
        .subject_id
}

async fn object(ch: &Channel, subject: &str, purpose: &str, request_id: &str) -> String {
    let crm = token(&["integration"], &[TENANT], 600);
    consents(ch)
        .record_consent(authed(
            cpb::RecordConsentRequest {
                subject_id: subject.into(),
                purpose: purpose.into(),
                action: cpb::ConsentAction::Object as i32,
                channel: cpb::ConsentChannel::Email as i32,
                evidence: "letter".into(),
                request_id: request_id.into(),
                ..Default::default()
            },
            &crm,
        ))
        .await
        .expect("object")
        .into_inner()
        .event_id
}

async fn check(ch: &Channel, subject: &str, purpose: &str) -> cpb::CheckResponse {
    let crm = token(&["integration"], &[TENANT], 600);
    consents(ch)
        .check(authed(
            cpb::CheckRequest {
                subject_id: subject.into(),
                purpose: purpose.into(),
            },
            &crm,
        ))
        .await
        .expect("check")
        .into_inner()
}

/// Check until it gives `want` (a replica may see a write up to its documented bound
/// later); the last answer.
async fn check_until(
    ch: &Channel,
    subject: &str,
    purpose: &str,
    want: cpb::CheckReason,
) -> cpb::CheckResponse {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let r = check(ch, subject, purpose).await;
        if r.reason == want as i32 || Instant::now() > deadline {
            return r;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

fn grounds(subject: &str, purpose: &str, request_id: &str) -> cpb::RecordCompellingGroundsRequest {
    cpb::RecordCompellingGroundsRequest {
        subject_id: subject.into(),
        purpose: purpose.into(),
        reason: "statutory archive duty outweighs the objection".into(),
        request_id: request_id.into(),
    }
}

async fn objections(suite: &Suite) {
    let ch = &suite.channel;
    create_tenant(ch, TENANT, "Kulturetaten").await;
    // Seed 003: the newsletter goes to customers on the basis of their contract.
    purpose(ch, "customer-newsletter", LegalBasis::Contract, true).await;
    purpose(ch, "invoicing", LegalBasis::Contract, false).await;
    purpose(ch, "archive", LegalBasis::PublicTask, false).await;
    purpose(ch, "member-events", LegalBasis::LegitimateInterests, false).await;
    let sid = new_subject(ch, "ola@example.no").await;
    let allowed = |r: &cpb::CheckResponse| (r.allowed, r.reason);

    // Direct marketing on CONTRACT: absolute after OBJECT (Art. 21(3)).
    let r = check_until(
        ch,
        &sid,
        "customer-newsletter",
        cpb::CheckReason::BasisAllows,
    )
    .await;
    assert_eq!(allowed(&r), (true, cpb::CheckReason::BasisAllows as i32));
    let o1 = object(ch, &sid, "customer-newsletter", "object-newsletter").await;
    let r = check_until(
        ch,
        &sid,
        "customer-newsletter",
        cpb::CheckReason::SubjectObjected,
    )
    .await;
    assert_eq!(
        allowed(&r),
        (false, cpb::CheckReason::SubjectObjected as i32)
    );
    assert_eq!(r.evidence_id, o1, "the objection is the evidence");
    // Not even a privacy officer's grounds lift it.
    let officer = token(&["privacy-officer"], &[TENANT], 600);
    let e = consents(ch)
        .record_compelling_grounds(authed(
            grounds(&sid, "customer-newsletter", "g-dm"),
            &officer,
        ))
        .await
        .expect_err("absolute");
    assert_eq!(e.code(), Code::FailedPrecondition, "{e:?}");
    assert!(e.message().contains("Art. 21(3)"), "{}", e.message());

    // CONTRACT without direct marketing: no right to object, processing continues.
    object(ch, &sid, "invoicing", "object-invoicing").await;
    let r = check(ch, &sid, "invoicing").await;
    assert_eq!(allowed(&r), (true, cpb::CheckReason::BasisAllows as i32));
    let e = consents(ch)
        .record_compelling_grounds(authed(grounds(&sid, "invoicing", "g-inv"), &officer))
        .await
        .expect_err("not applicable");
    assert_eq!(e.code(), Code::FailedPrecondition);

    // PUBLIC_TASK: denied after OBJECT until compelling grounds are recorded.
    let e = consents(ch)
        .record_compelling_grounds(authed(grounds(&sid, "archive", "g-early"), &officer))
        .await
        .expect_err("no objection yet");
    assert_eq!(e.code(), Code::FailedPrecondition);
    let o2 = object(ch, &sid, "archive", "object-archive").await;
    let r = check_until(ch, &sid, "archive", cpb::CheckReason::SubjectObjected).await;
    assert_eq!(
        allowed(&r),
        (false, cpb::CheckReason::SubjectObjected as i32)
    );
    // Only a privacy officer decides.
    let crm = token(&["integration"], &[TENANT], 600);
    let e = consents(ch)
        .record_compelling_grounds(authed(grounds(&sid, "archive", "g-crm"), &crm))
        .await
        .expect_err("integration");
    assert_eq!(e.code(), Code::PermissionDenied);
    let e = consents(ch)
        .record_compelling_grounds(authed(
            cpb::RecordCompellingGroundsRequest {
                reason: "  ".into(),
                ..grounds(&sid, "archive", "g-empty")
            },
            &officer,
        ))
        .await
        .expect_err("reason required");
    assert_eq!(e.code(), Code::InvalidArgument);
    assert_eq!(
        e.get_details_bad_request()
            .expect("details")
            .field_violations[0]
            .field,
        "reason"
    );
    let d = consents(ch)
        .record_compelling_grounds(authed(grounds(&sid, "archive", "g-archive"), &officer))
        .await
        .expect("grounds")
        .into_inner();
    assert_eq!(d.objection_event_id, o2);
    // Idempotent by request_id.
    let again = consents(ch)
        .record_compelling_grounds(authed(grounds(&sid, "archive", "g-archive"), &officer))
        .await
        .expect("retry")
        .into_inner();
    assert_eq!(again.decision_id, d.decision_id);
    let r = check_until(ch, &sid, "archive", cpb::CheckReason::CompellingGrounds).await;
    assert_eq!(
        allowed(&r),
        (true, cpb::CheckReason::CompellingGrounds as i32)
    );
    assert_eq!(r.evidence_id, d.decision_id, "the decision is the evidence");
    // The state shows the decision (what the Art. 15 report reads).
    let state = consents(ch)
        .get_consent_state(authed(
            cpb::GetConsentStateRequest {
                subject_id: sid.clone(),
                purpose: "archive".into(),
            },
            &officer,
        ))
        .await
        .expect("state")
        .into_inner();
    let shown = state.compelling_grounds.expect("decision shown");
    assert_eq!(shown.decision_id, d.decision_id);
    assert!(shown.reason.contains("archive duty"));
    // The Art. 15 report shows the decision, in the subject's language (nb default).
    let access = submit(ch, &sid, rpb::RequestType::Access, &[], "access-1").await;
    let fulfilled = verify_and_fulfil(ch, TENANT, &access).await;
    assert!(fulfilled.outcome.is_some());
    let report = rpb::rights_service_client::RightsServiceClient::new(ch.clone())
        .get_report(authed(
            rpb::GetReportRequest {
                rights_request_id: access.clone(),
            },
            &officer,
        ))
        .await
        .expect("report")
        .into_inner();
    let text = vern_cli::requests_cli::render(&report.json, vern_cli::requests_cli::Format::Text)
        .expect("text");
    assert!(text.contains("tvingende berettigede grunner"), "{text}");
    assert!(text.contains("archive duty"), "{text}");
    // An OBJECTION request says what it really does to each purpose.
    let objection = submit(
        ch,
        &sid,
        rpb::RequestType::Objection,
        &["invoicing", "member-events"],
        "objection-1",
    )
    .await;
    let done = verify_and_fulfil(ch, TENANT, &objection).await;
    let summary = done.outcome.expect("outcome").summary;
    assert!(summary.contains("continues for invoicing"), "{summary}");
    assert!(
        summary.contains("member-events unless the controller records compelling"),
        "{summary}"
    );
    // A new objection needs a new decision.
    object(ch, &sid, "archive", "object-archive-2").await;
    let r = check_until(ch, &sid, "archive", cpb::CheckReason::SubjectObjected).await;
    assert_eq!(
        allowed(&r),
        (false, cpb::CheckReason::SubjectObjected as i32)
    );

    // Legitimate interests: the same rule.
    object(ch, &sid, "member-events", "object-events").await;
    let r = check_until(ch, &sid, "member-events", cpb::CheckReason::SubjectObjected).await;
    assert!(!r.allowed);
}

async fn submit(
    ch: &Channel,
    subject: &str,
    kind: rpb::RequestType,
    purposes: &[&str],
    request_id: &str,
) -> String {
    let officer = token(&["privacy-officer"], &[TENANT], 600);
    rpb::rights_service_client::RightsServiceClient::new(ch.clone())
        .submit_request(authed(
            rpb::SubmitRequestRequest {
                r#type: kind as i32,
                requester: Some(rpb::submit_request_request::Requester::SubjectId(
                    subject.into(),
                )),
                channel: rpb::RequestChannel::Email as i32,
                purposes: purposes.iter().map(|p| (*p).into()).collect(),
                request_id: request_id.into(),
                ..Default::default()
            },
            &officer,
        ))
        .await
        .expect("submit")
        .into_inner()
        .rights_request_id
}

#[tokio::test]
async fn objections_on_sqlite() {
    let suite = Suite::start(Backend::Sqlite).await.expect("suite");
    objections(&suite).await;
    suite.stop().await;
}

#[tokio::test]
async fn objections_on_postgres() {
    let Some(suite) = Suite::start(Backend::Postgres).await else {
        return;
    };
    objections(&suite).await;
    suite.stop().await;
}

/// Polls `call` until it returns `want` (the tenant status is cached for up to
/// `auth.tenant_status_ttl_seconds`, 1 s here).
async fn until_code<F, Fut>(what: &str, want: Code, mut call: F)
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Code>,
{
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let code = call().await;
        if code == want {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "{what}: still {code:?}, want {want:?}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

fn code<T>(r: Result<T, tonic::Status>) -> Code {
    match r {
        Ok(_) => Code::Ok,
        Err(s) => s.code(),
    }
}

#[tokio::test]
async fn a_suspended_department_answers_its_subjects_and_resumes() {
    let suite = Suite::start_with(Backend::Sqlite, |c| c.auth.tenant_status_ttl_seconds = 1)
        .await
        .expect("suite");
    suspended_department_answers_and_resumes(suite).await;
}

/// The same as deployed: two replicas of every service, each its own process, behind
/// the gateway (each replica learns the suspension on its own).
#[tokio::test]
async fn a_suspended_department_answers_its_subjects_and_resumes_on_the_topology() {
    let Some(suite) = Suite::start(Backend::Replicas).await else {
        return;
    };
    suspended_department_answers_and_resumes(suite).await;
}

async fn suspended_department_answers_and_resumes(suite: Suite) {
    let ch = &suite.channel;
    create_tenant(ch, TENANT, "Kulturetaten").await;
    purpose(ch, "invoicing", LegalBasis::Contract, false).await;
    let sid = new_subject(ch, "kari@example.no").await;
    let platform = token(&["platform-admin"], &[], 600);
    let crm = token(&["integration"], &[TENANT], 600);
    let officer = token(&["privacy-officer"], &[TENANT], 600);
    let crm_check = || {
        let (ch, crm, sid) = (ch.clone(), crm.clone(), sid.clone());
        async move {
            code(
                consents(&ch)
                    .check(authed(
                        cpb::CheckRequest {
                            subject_id: sid,
                            purpose: "invoicing".into(),
                        },
                        &crm,
                    ))
                    .await,
            )
        }
    };
    assert_eq!(crm_check().await, Code::Ok);
    let t = tenants(ch)
        .suspend_tenant(authed(
            tpb::SuspendTenantRequest {
                tenant_id: TENANT.into(),
                reason: "unpaid invoice".into(),
                request_id: "suspend-1".into(),
            },
            &platform,
        ))
        .await
        .expect("suspend")
        .into_inner();
    assert_eq!(t.status, tpb::TenantStatus::Suspended as i32);
    // The integration is refused, Check included.
    until_code(
        "integration while suspended",
        Code::PermissionDenied,
        crm_check,
    )
    .await;
    let e = subjects(ch)
        .create_subject(authed(
            spb::CreateSubjectRequest {
                email: "new@example.no".into(),
                ..Default::default()
            },
            &crm,
        ))
        .await
        .expect_err("refused");
    assert_eq!(e.code(), Code::PermissionDenied);
    assert!(e.message().contains("suspended"), "{}", e.message());
    // The privacy officer still reads and still handles rights requests.
    let got = subjects(ch)
        .get_subject(authed(
            spb::GetSubjectRequest {
                subject_id: sid.clone(),
                ..Default::default()
            },
            &officer,
        ))
        .await
        .expect("officer reads while suspended")
        .into_inner();
    assert_eq!(got.subject_id, sid);
    let request = rpb::rights_service_client::RightsServiceClient::new(ch.clone())
        .submit_request(authed(
            rpb::SubmitRequestRequest {
                r#type: rpb::RequestType::Access as i32,
                requester: Some(rpb::submit_request_request::Requester::SubjectId(
                    sid.clone(),
                )),
                channel: rpb::RequestChannel::Email as i32,
                request_id: "access-while-suspended".into(),
                ..Default::default()
            },
            &officer,
        ))
        .await
        .expect("a suspended department still receives rights requests")
        .into_inner();
    assert!(!request.rights_request_id.is_empty());
    // But not other changes.
    let e = consents(ch)
        .record_consent(authed(
            cpb::RecordConsentRequest {
                subject_id: sid.clone(),
                purpose: "invoicing".into(),
                action: cpb::ConsentAction::Object as i32,
                channel: cpb::ConsentChannel::Email as i32,
                ..Default::default()
            },
            &officer,
        ))
        .await
        .expect_err("no changes");
    assert_eq!(e.code(), Code::PermissionDenied);
    // ResumeTenant: platform admins only, a reason required, idempotent.
    let e = tenants(ch)
        .resume_tenant(authed(
            tpb::ResumeTenantRequest {
                tenant_id: TENANT.into(),
                reason: "paid".into(),
                request_id: String::new(),
            },
            &token(&["tenant-admin"], &[TENANT], 600),
        ))
        .await
        .expect_err("not the tenant's own admin");
    assert_eq!(e.code(), Code::PermissionDenied);
    let e = tenants(ch)
        .resume_tenant(authed(
            tpb::ResumeTenantRequest {
                tenant_id: TENANT.into(),
                reason: String::new(),
                request_id: String::new(),
            },
            &platform,
        ))
        .await
        .expect_err("reason");
    assert_eq!(e.code(), Code::InvalidArgument);
    for _ in 0..2 {
        let t = tenants(ch)
            .resume_tenant(authed(
                tpb::ResumeTenantRequest {
                    tenant_id: TENANT.into(),
                    reason: "invoice paid".into(),
                    request_id: "resume-1".into(),
                },
                &platform,
            ))
            .await
            .expect("resume")
            .into_inner();
        assert_eq!(t.status, tpb::TenantStatus::Active as i32);
        assert!(t.suspension_reason.is_empty());
    }
    until_code("integration after resume", Code::Ok, crm_check).await;
    suite.stop().await;
}

/// The feed's events of `kind` for `subject`, now.
async fn feed_events(
    ch: &Channel,
    subject: &str,
    kind: rpb::RightsEventType,
) -> Vec<rpb::RightsEvent> {
    let crm = token(&["integration"], &[TENANT], 600);
    rpb::rights_service_client::RightsServiceClient::new(ch.clone())
        .list_events(authed(
            rpb::ListEventsRequest {
                subject_id: subject.into(),
                r#type: kind as i32,
                ..Default::default()
            },
            &crm,
        ))
        .await
        .expect("events")
        .into_inner()
        .events
}

/// Polls the feed until an event of `kind` for `subject` is there.
async fn feed_event(ch: &Channel, subject: &str, kind: rpb::RightsEventType) -> rpb::RightsEvent {
    let deadline = Instant::now() + Duration::from_secs(15);
    loop {
        if let Some(e) = feed_events(ch, subject, kind).await.into_iter().next() {
            return e;
        }
        assert!(
            Instant::now() < deadline,
            "no {kind:?} event for the subject"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// Records purged by a sweep and a direct erasure reach the feed (Art. 17(2), Art. 19),
/// with why, and are acknowledged like the other events; a record naming a purpose the
/// tenant lacks is refused.
async fn erasures_reach_the_feed(suite: &Suite) {
    use vern_proto::retention::v1 as qpb;
    let ch = &suite.channel;
    create_tenant(ch, TENANT, "Kulturetaten").await;
    let admin = token(&["tenant-admin"], &[TENANT], 600);
    let crm = token(&["integration"], &[TENANT], 600);
    let officer = token(&["privacy-officer"], &[TENANT], 600);
    tenants(ch)
        .create_purpose(authed(
            tpb::CreatePurposeRequest {
                key: "correspondence".into(),
                description: "Answering enquiries".into(),
                legal_basis: LegalBasis::Contract as i32,
                data_categories: vec![
                    DataCategory::Contact as i32,
                    DataCategory::Communications as i32,
                ],
                ..Default::default()
            },
            &admin,
        ))
        .await
        .expect("purpose");
    let three_years_ago = prost_types::Timestamp {
        seconds: chrono::Utc::now().timestamp() - 3 * 366 * 86_400,
        nanos: 0,
    };
    let record =
        |field: &str, purpose: &str, collected: Option<prost_types::Timestamp>| spb::Record {
            category: DataCategory::Communications as i32,
            field: field.into(),
            value: "Re: billetter".into(),
            source: "crm".into(),
            purposes: vec![purpose.into()],
            collected_at: collected,
            ..Default::default()
        };
    // A purpose the tenant does not have: refused, nothing written.
    let e = subjects(ch)
        .create_subject(authed(
            spb::CreateSubjectRequest {
                email: "nobody@example.no".into(),
                records: vec![record("email-correspondence", "no-such-purpose", None)],
                ..Default::default()
            },
            &crm,
        ))
        .await
        .expect_err("unknown purpose");
    assert_eq!(e.code(), Code::InvalidArgument);
    let bad = e.get_details_bad_request().expect("details");
    assert_eq!(bad.field_violations[0].field, "records[0].purposes[0]");
    assert!(
        !bad.field_violations[0]
            .description
            .contains("no-such-purpose")
    );
    let created = subjects(ch)
        .create_subject(authed(
            spb::CreateSubjectRequest {
                email: "ola@example.no".into(),
                records: vec![
                    record(
                        "email-correspondence",
                        "correspondence",
                        Some(three_years_ago),
                    ),
                    record("phone-notes", "correspondence", None),
                ],
                ..Default::default()
            },
            &crm,
        ))
        .await
        .expect("subject")
        .into_inner();
    let sid = created.subject_id.clone();
    let old_record = created
        .records
        .iter()
        .find(|r| r.field == "email-correspondence")
        .expect("record")
        .record_id
        .clone();
    let mut retention = qpb::retention_service_client::RetentionServiceClient::new(ch.clone());
    let policy = retention
        .create_policy(authed(
            qpb::CreatePolicyRequest {
                name: "E-mail correspondence".into(),
                category: DataCategory::Communications as i32,
                field: "email-correspondence".into(),
                period: "P1Y".into(),
                anchor: qpb::RetentionAnchor::CollectedAt as i32,
                action: qpb::RetentionAction::Delete as i32,
                legal_reference: "GDPR Art. 5(1)(e)".into(),
                request_id: "policy-mail".into(),
                ..Default::default()
            },
            &admin,
        ))
        .await
        .expect("policy")
        .into_inner();
    let run = retention
        .run_sweep(authed(
            qpb::RunSweepRequest {
                request_id: "sweep-1".into(),
                ..Default::default()
            },
            &admin,
        ))
        .await
        .expect("sweep")
        .into_inner();
    let deleted: i64 = run.policy_results.iter().map(|r| r.deleted_count).sum();
    assert_eq!(deleted, 1, "{run:?}");
    let ev = feed_event(ch, &sid, rpb::RightsEventType::RecordsErased).await;
    assert_eq!(ev.erasure_cause, rpb::ErasureCause::Retention as i32);
    assert_eq!(ev.policy_id, policy.policy_id);
    assert_eq!(ev.erased_records.len(), 1);
    assert_eq!(ev.erased_records[0].record_id, old_record);
    assert_eq!(ev.erased_records[0].field, "email-correspondence");
    assert_eq!(
        ev.erased_records[0].category,
        DataCategory::Communications as i32
    );
    // Consumed and acknowledged like the others.
    let mut rights = rpb::rights_service_client::RightsServiceClient::new(ch.clone());
    let acked = rights
        .ack_event(authed(
            rpb::AckEventRequest {
                event: Some(rpb::ack_event_request::Event::EventId(ev.event_id.clone())),
                system: "crm".into(),
                request_id: "ack-sweep".into(),
            },
            &crm,
        ))
        .await
        .expect("ack")
        .into_inner();
    assert_eq!(acked.confirmations.len(), 1);
    // A direct erasure: the whole subject, cause DIRECT.
    subjects(ch)
        .erase_subject(authed(
            spb::EraseSubjectRequest {
                subject_id: sid.clone(),
                reason: "asked by phone".into(),
                request_id: "erase-ola".into(),
                ..Default::default()
            },
            &officer,
        ))
        .await
        .expect("erase");
    let ev = feed_event(ch, &sid, rpb::RightsEventType::Erased).await;
    assert_eq!(ev.erasure_cause, rpb::ErasureCause::Direct as i32);
    assert!(ev.rights_request_id.is_empty());
}

#[tokio::test]
async fn erasures_reach_the_feed_on_sqlite() {
    let suite = Suite::start(Backend::Sqlite).await.expect("suite");
    erasures_reach_the_feed(&suite).await;
    suite.stop().await;
}

#[tokio::test]
async fn erasures_reach_the_feed_on_postgres() {
    let Some(suite) = Suite::start(Backend::Postgres).await else {
        return;
    };
    erasures_reach_the_feed(&suite).await;
    suite.stop().await;
}

/// The deployed shape: every service twice, as separate processes on PostgreSQL.
#[tokio::test]
async fn objections_on_replicas() {
    let Some(suite) = Suite::start(Backend::Replicas).await else {
        return;
    };
    objections(&suite).await;
    suite.stop().await;
}

#[tokio::test]
async fn erasures_reach_the_feed_on_replicas() {
    let Some(suite) = Suite::start(Backend::Replicas).await else {
        return;
    };
    erasures_reach_the_feed(&suite).await;
    suite.stop().await;
}

/// Art. 18 per purpose: a RESTRICTION request naming the newsletter restricts only the
/// newsletter (Check denies it, the contract is still served), the feed says which
/// purpose; lifting it puts RESTRICTION_LIFTED on the feed and Check allows again.
async fn restriction_per_purpose(suite: &Suite) {
    let ch = &suite.channel;
    create_tenant(ch, TENANT, "Kulturetaten").await;
    purpose(ch, "newsletter", LegalBasis::Contract, true).await;
    purpose(ch, "invoicing", LegalBasis::Contract, false).await;
    let sid = new_subject(ch, "kari@example.no").await;
    let allowed = cpb::CheckReason::BasisAllows;
    assert!(check_until(ch, &sid, "newsletter", allowed).await.allowed);

    let rid = submit(
        ch,
        &sid,
        rpb::RequestType::Restriction,
        &["newsletter"],
        "restrict-kari",
    )
    .await;
    let done = verify_and_fulfil(ch, TENANT, &rid).await;
    let summary = done.outcome.map(|o| o.summary).unwrap_or_default();
    assert!(summary.contains("newsletter"), "{summary}");
    let r = check_until(ch, &sid, "newsletter", cpb::CheckReason::SubjectRestricted).await;
    assert_eq!(
        (r.allowed, r.reason),
        (false, cpb::CheckReason::SubjectRestricted as i32)
    );
    let r = check(ch, &sid, "invoicing").await;
    assert!(r.allowed, "only the newsletter is restricted: {r:?}");
    let ev = feed_event(ch, &sid, rpb::RightsEventType::Restricted).await;
    assert_eq!(ev.purposes, ["newsletter"]);
    assert_eq!(ev.rights_request_id, rid);

    let officer = token(&["privacy-officer"], &[TENANT], 600);
    let subject = subjects(ch)
        .get_subject(authed(
            spb::GetSubjectRequest {
                subject_id: sid.clone(),
                ..Default::default()
            },
            &officer,
        ))
        .await
        .expect("get")
        .into_inner();
    assert_eq!(subject.state, spb::SubjectState::Active as i32);
    assert_eq!(subject.restricted_purposes, ["newsletter"]);
    // Lifting a purpose that is not restricted is refused, and changes nothing.
    let e = subjects(ch)
        .lift_restriction(authed(
            spb::LiftRestrictionRequest {
                subject_id: sid.clone(),
                reason: "accuracy verified".into(),
                purposes: vec!["invoicing".into()],
                request_id: "lift-invoicing".into(),
            },
            &officer,
        ))
        .await
        .expect_err("not restricted");
    assert_eq!(e.code(), Code::FailedPrecondition);
    let lifted = subjects(ch)
        .lift_restriction(authed(
            spb::LiftRestrictionRequest {
                subject_id: sid.clone(),
                reason: "accuracy verified".into(),
                purposes: vec!["newsletter".into()],
                request_id: "lift-newsletter".into(),
            },
            &officer,
        ))
        .await
        .expect("lift")
        .into_inner();
    assert!(lifted.restricted_purposes.is_empty());
    let ev = feed_event(ch, &sid, rpb::RightsEventType::RestrictionLifted).await;
    assert_eq!(ev.purposes, ["newsletter"]);
    assert!(ev.rights_request_id.is_empty());
    // The subjects service's notice of the request's restriction came before the
    // lifting's and added nothing: the request's fulfilment had published it.
    let restricted = feed_events(ch, &sid, rpb::RightsEventType::Restricted).await;
    assert_eq!(restricted.len(), 1, "{restricted:?}");
    let r = check_until(ch, &sid, "newsletter", allowed).await;
    assert!(r.allowed, "{r:?}");
}

#[tokio::test]
async fn restriction_per_purpose_on_sqlite() {
    let suite = Suite::start(Backend::Sqlite).await.expect("suite");
    restriction_per_purpose(&suite).await;
    suite.stop().await;
}

#[tokio::test]
async fn restriction_per_purpose_on_postgres() {
    let Some(suite) = Suite::start(Backend::Postgres).await else {
        return;
    };
    restriction_per_purpose(&suite).await;
    suite.stop().await;
}

#[tokio::test]
async fn restriction_per_purpose_on_replicas() {
    let Some(suite) = Suite::start(Backend::Replicas).await else {
        return;
    };
    restriction_per_purpose(&suite).await;
    suite.stop().await;
}
