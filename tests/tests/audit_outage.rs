//! With the audit service down, changes in other services still commit; when it comes
//! back every event arrives exactly once and the chain verifies.

use std::collections::HashMap;
use std::time::{Duration, Instant};

use vern_proto::audit::v1 as apb;
use vern_proto::subjects::v1 as spb;
use vern_tests::{token, vouched};

async fn serve(
    config: &vern_kit::config::Config,
    service: &str,
    listener: tokio::net::TcpListener,
) -> tokio::sync::oneshot::Sender<()> {
    let mut served = vern_cli::suite_of(config, &[service])
        .await
        .expect("service builds");
    // No tenants service runs here: this test is about the audit outage, not tenancy.
    served.tenants = None;
    let verifier = vern_cli::verifier(config).expect("verifier");
    let server_config = config.server.clone();
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    tokio::spawn(async move {
        let _ = vern_kit::server::serve(served, listener, &server_config, verifier, async {
            let _ = stopped.await;
        })
        .await;
    });
    stop
}

#[tokio::test]
async fn events_wait_in_the_outbox_while_audit_is_down() {
    let dir = tempfile::tempdir().expect("dir");
    let mut config = vern_kit::config::Config {
        data_dir: dir.path().to_path_buf(),
        ..Default::default()
    };
    config.auth.hs256_secret = Some("e2e-test-secret".into());
    config.auth.dev_key = true;
    config.keys.master_key = Some("dmVybi1lMmUtdGVzdC1tYXN0ZXIta2V5LTMyYnl0ZXM=".into());
    // Reserve a port for audit, then free it: calls to it are refused until it starts.
    let audit_addr = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind")
        .local_addr()
        .expect("addr");
    config.services.audit.url = format!("http://{audit_addr}");
    config.services.consents.url = "http://127.0.0.1:1".into();
    let subjects_listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let subjects_addr = subjects_listener.local_addr().expect("addr");
    let stop_subjects = serve(&config, "subjects", subjects_listener).await;

    let channel = tonic::transport::Channel::from_shared(format!("http://{subjects_addr}"))
        .expect("uri")
        .connect()
        .await
        .expect("connect");
    let mut subjects = spb::subject_service_client::SubjectServiceClient::new(channel);
    let crm = token(&["integration"], &["kultur"], 600);
    let mut ids = vec![];
    for i in 0..20 {
        let s = subjects
            .create_subject(vouched(
                spb::CreateSubjectRequest {
                    email: format!("p{i}@example.no"),
                    ..Default::default()
                },
                &crm,
            ))
            .await
            .expect("commits while audit is down")
            .into_inner();
        ids.push(s.subject_id);
    }
    tokio::time::sleep(Duration::from_millis(500)).await;

    // Audit comes up on its address; the relays deliver what waited.
    let audit_listener = tokio::net::TcpListener::bind(audit_addr)
        .await
        .expect("rebind");
    let stop_audit = serve(&config, "audit", audit_listener).await;
    let channel = tonic::transport::Channel::from_shared(format!("http://{audit_addr}"))
        .expect("uri")
        .connect()
        .await
        .expect("connect");
    let mut audit = apb::audit_service_client::AuditServiceClient::new(channel);
    let auditor = token(&["auditor"], &["kultur"], 600);
    let deadline = Instant::now() + Duration::from_secs(30);
    let events = loop {
        let page = audit
            .query_events(vouched(
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
        if page.events.len() >= ids.len() {
            break page.events;
        }
        assert!(
            Instant::now() < deadline,
            "{} of {} events arrived",
            page.events.len(),
            ids.len()
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    let mut per_subject: HashMap<&str, usize> = HashMap::new();
    for e in &events {
        *per_subject.entry(e.subject_id.as_str()).or_default() += 1;
    }
    for id in &ids {
        assert_eq!(per_subject.get(id.as_str()), Some(&1), "exactly once: {id}");
    }
    assert_eq!(events.len(), ids.len(), "no duplicates");
    let verified = audit
        .verify_chain(vouched(apb::VerifyChainRequest::default(), &auditor))
        .await
        .expect("verify")
        .into_inner();
    assert!(verified.ok, "{verified:?}");
    let _ = stop_audit.send(());
    let _ = stop_subjects.send(());
}
