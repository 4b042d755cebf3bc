//! kill -9 of `vern dev` right after acknowledged writes loses no audit event of a
//! committed change: the events wait in the outbox (written in the change's own
//! transaction) and reach the chain after the restart, each exactly once.
//!
//! And kill -9 in the middle of a concurrent write load (RecordConsent and
//! CreateSubject), at several points, on SQLite and on PostgreSQL: after each restart
//! every acknowledged write is there once, retries are recognised, the outboxes drain
//! into the audit chain and the chain verifies.

mod support;

use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use tonic::transport::Channel;
use vern_proto::audit::v1 as apb;
use vern_proto::subjects::v1 as spb;

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .expect("bind")
        .local_addr()
        .expect("addr")
        .port()
}

fn start(data_dir: &std::path::Path, port: u16) -> Child {
    Command::new(env!("CARGO_BIN_EXE_vern"))
        .args(["dev", "--data-dir"])
        .arg(data_dir)
        .args(["--listen", &format!("127.0.0.1:{port}")])
        .args(["--console-listen", "127.0.0.1:0"])
        .env("RUST_LOG", "warn")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("vern dev starts")
}

async fn connect(port: u16) -> Channel {
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        if let Ok(ch) = Channel::from_shared(format!("http://127.0.0.1:{port}"))
            .expect("uri")
            .connect()
            .await
        {
            let mut health = tonic_health::pb::health_client::HealthClient::new(ch.clone());
            if let Ok(r) = health
                .check(tonic_health::pb::HealthCheckRequest {
                    service: String::new(),
                })
                .await
                && r.into_inner().status
                    == tonic_health::pb::health_check_response::ServingStatus::Serving as i32
            {
                return ch;
            }
        }
        assert!(Instant::now() < deadline, "vern dev did not become ready");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

fn token(data_dir: &std::path::Path, role: &str) -> String {
    let secret =
        std::fs::read_to_string(data_dir.join(vern_kit::auth::DEV_KEY_FILE)).expect("dev key");
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .expect("time")
        .as_secs() as i64;
    vern_kit::auth::sign_hs256(
        &vern_kit::auth::Claims {
            sub: "crash-test".into(),
            tenant: if role == "platform-admin" {
                vec![]
            } else {
                vec!["kultur".into()]
            },
            roles: vec![role.into()],
            iss: "vern-dev".into(),
            aud: "vern".into(),
            exp: now + 600,
            nbf: now,
            iat: now,
        },
        secret.trim().as_bytes(),
    )
    .expect("sign")
}

fn authed<T>(msg: T, token: &str) -> tonic::Request<T> {
    let mut r = tonic::Request::new(msg);
    r.metadata_mut().insert(
        "authorization",
        format!("Bearer {token}").parse().expect("metadata"),
    );
    r
}

#[tokio::test]
async fn kill_9_loses_no_audit_event_of_a_committed_change() {
    let dir = tempfile::tempdir().expect("dir");
    let port = free_port();
    let mut vern = start(dir.path(), port);
    let ch = connect(port).await;
    // Tokens must name a tenant that exists.
    vern_proto::tenants::v1::tenant_service_client::TenantServiceClient::new(ch.clone())
        .create_tenant(authed(
            vern_proto::tenants::v1::CreateTenantRequest {
                tenant_id: "kultur".into(),
                name: "Oslo Kulturfabrikk".into(),
                org_number: "989990748".into(),
                dpo_email: "personvern@kultur.example".into(),
                ..Default::default()
            },
            &token(dir.path(), "platform-admin"),
        ))
        .await
        .expect("tenant");
    let crm = token(dir.path(), "integration");
    let mut subjects = spb::subject_service_client::SubjectServiceClient::new(ch);
    let mut acknowledged = vec![];
    for i in 0..40 {
        let s = subjects
            .create_subject(authed(
                spb::CreateSubjectRequest {
                    email: format!("k{i}@example.no"),
                    ..Default::default()
                },
                &crm,
            ))
            .await
            .expect("create")
            .into_inner();
        acknowledged.push(s.subject_id);
    }
    // SIGKILL right after the last acknowledgement: most events are still in the outbox.
    vern.kill().expect("kill -9");
    let _ = vern.wait();

    let mut vern = start(dir.path(), port);
    let ch = connect(port).await;
    let auditor = token(dir.path(), "auditor");
    let mut audit = apb::audit_service_client::AuditServiceClient::new(ch.clone());
    let deadline = Instant::now() + Duration::from_secs(30);
    let events = loop {
        let page = audit
            .query_events(authed(
                apb::QueryEventsRequest {
                    action: "CreateSubject".into(),
                    page_size: 1000,
                    ..Default::default()
                },
                &auditor,
            ))
            .await
            .expect("query")
            .into_inner();
        if page.events.len() >= acknowledged.len() {
            break page.events;
        }
        assert!(
            Instant::now() < deadline,
            "{} of {} events reached the chain",
            page.events.len(),
            acknowledged.len()
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    for id in &acknowledged {
        assert_eq!(
            events.iter().filter(|e| &e.subject_id == id).count(),
            1,
            "exactly once: {id}"
        );
    }
    // Every acknowledged subject survived too.
    let mut subjects = spb::subject_service_client::SubjectServiceClient::new(ch);
    let crm = token(dir.path(), "integration");
    for id in &acknowledged {
        subjects
            .get_subject(authed(
                spb::GetSubjectRequest {
                    subject_id: id.clone(),
                    view: 0,
                    ..Default::default()
                },
                &crm,
            ))
            .await
            .expect("acknowledged subject present");
    }
    // Verified while the reads above are still being appended: must not fail.
    let verified = audit
        .verify_chain(authed(apb::VerifyChainRequest::default(), &auditor))
        .await
        .expect("verify")
        .into_inner();
    assert!(verified.ok, "{verified:?}");
    vern.kill().expect("stop");
    let _ = vern.wait();
}

/// Load, SIGKILL after each of `kill_points`, restart, check everything acknowledged so
/// far (cumulative, so later cycles also show that earlier crashes stay repaired).
async fn crash_cycles(env: &[(&str, String)]) {
    let dir = tempfile::tempdir().expect("dir");
    let (mut vern, mut ch) = support::Vern::start(dir.path(), env).await;
    let subjects = support::setup(&ch, &vern, 12).await;
    let mut acked = vec![];
    for (cycle, kill_after) in [50u64, 300, 1000].into_iter().enumerate() {
        let started = Instant::now();
        let load = support::Load::start(
            &ch,
            &vern.token("integration"),
            &subjects,
            8,
            &format!("k{cycle}"),
        );
        tokio::time::sleep(Duration::from_millis(kill_after)).await;
        load.expect_failures
            .store(true, std::sync::atomic::Ordering::SeqCst);
        vern.kill9();
        let result = load.finish().await;
        assert!(
            result.unexpected.is_empty(),
            "failures before the kill: {:?}",
            result.unexpected
        );
        eprintln!(
            "cycle {cycle}: killed after {kill_after} ms with {} acknowledged, failures at the kill {:?}",
            result.acked.len(),
            result.failures
        );
        acked.extend(result.acked);
        ch = vern.restart().await;
        support::check_acknowledged(&ch, &vern, &subjects, &acked).await;
        eprintln!(
            "cycle {cycle}: {} acknowledged writes checked in {} ms",
            acked.len(),
            started.elapsed().as_millis()
        );
    }
    assert!(
        acked
            .iter()
            .any(|a| matches!(a, support::Acked::Consent(..))),
        "the load acknowledged no consent at all"
    );
    let kinds = |f: fn(&support::Acked) -> bool| acked.iter().filter(|a| f(a)).count();
    eprintln!(
        "acknowledged in all: {} RecordConsent, {} CreateSubject, {} SubmitRequest",
        kinds(|a| matches!(a, support::Acked::Consent(..))),
        kinds(|a| matches!(a, support::Acked::Subject(..))),
        kinds(|a| matches!(a, support::Acked::Rights(..)))
    );
    assert!(
        acked
            .iter()
            .any(|a| matches!(a, support::Acked::Rights(..))),
        "the load acknowledged no rights request"
    );
    vern.kill9();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kill_9_during_write_load_loses_nothing_acknowledged_sqlite() {
    tokio::time::timeout(Duration::from_secs(60), crash_cycles(&[]))
        .await
        .expect("bounded in time");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kill_9_during_write_load_loses_nothing_acknowledged_postgres() {
    let Some((env, cleanup)) = support::postgres_env(None) else {
        return;
    };
    let res = tokio::time::timeout(Duration::from_secs(60), crash_cycles(&env)).await;
    cleanup.run().await;
    res.expect("bounded in time");
}
