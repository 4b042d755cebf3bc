//! Server streams hold their access for their whole life, through the real gateway:
//! an open WatchEvents or ExportEvents ends when its token expires (UNAUTHENTICATED) or
//! its tenant is suspended (PERMISSION_DENIED); streams count against their own
//! budgets while they run; a stream ends at its longest lifetime (UNAVAILABLE). On
//! `vern dev` and on the separate-process topology on PostgreSQL.

use std::time::{Duration, Instant};

use tonic::Code;
use tonic::transport::Channel;
use vern_proto::audit::v1 as apb;
use vern_proto::rights::v1 as rpb;
use vern_proto::tenants::v1 as tpb;
use vern_tests::{Backend, Suite, authed, create_tenant, token};

/// The verifier's clock leeway in the suites (`auth.leeway_seconds`, default 30): a
/// token that expired `LEEWAY - n` seconds ago is accepted for `n` more seconds.
const LEEWAY: i64 = 30;

async fn watch(
    channel: &Channel,
    token: &str,
) -> Result<tonic::Streaming<rpb::RightsEvent>, tonic::Status> {
    rpb::rights_service_client::RightsServiceClient::new(channel.clone())
        .watch_events(authed(rpb::WatchEventsRequest::default(), token))
        .await
        .map(|r| r.into_inner())
}

async fn follow(
    channel: &Channel,
    token: &str,
) -> Result<tonic::Streaming<apb::ExportEventsResponse>, tonic::Status> {
    apb::audit_service_client::AuditServiceClient::new(channel.clone())
        .export_events(authed(
            apb::ExportEventsRequest {
                follow: true,
                ..Default::default()
            },
            token,
        ))
        .await
        .map(|r| r.into_inner())
}

/// Reads `stream` until it ends; its final code (OK for a clean end) and when.
async fn ending<T>(mut stream: tonic::Streaming<T>, within: Duration) -> Option<(Code, Instant)> {
    let read = async {
        loop {
            match stream.message().await {
                Ok(Some(_)) => continue,
                Ok(None) => return (Code::Ok, Instant::now()),
                Err(s) => return (s.code(), Instant::now()),
            }
        }
    };
    tokio::time::timeout(within, read).await.ok()
}

async fn suspend(channel: &Channel, tenant: &str) {
    let platform = token(&["platform-admin"], &[], 600);
    tpb::tenant_service_client::TenantServiceClient::new(channel.clone())
        .suspend_tenant(authed(
            tpb::SuspendTenantRequest {
                tenant_id: tenant.into(),
                reason: "stream test".into(),
                request_id: format!("suspend-{tenant}"),
            },
            &platform,
        ))
        .await
        .expect("suspend");
}

/// Expiry and suspension end open streams; other tenants' streams go on.
async fn access_ends_streams(suite: &Suite) {
    let ch = &suite.channel;
    create_tenant(ch, "stream-a", "Avdeling A").await;
    create_tenant(ch, "stream-b", "Avdeling B").await;

    // A token with 4 s left (expired 26 s ago, inside the 30 s leeway).
    let short = token(&["integration"], &["stream-a"], 4 - LEEWAY);
    let short_audit = token(&["auditor"], &["stream-a"], 4 - LEEWAY);
    let opened = Instant::now();
    let watched = watch(ch, &short)
        .await
        .expect("watch opens while the token is valid");
    let followed = follow(ch, &short_audit)
        .await
        .expect("export opens while the token is valid");
    // A stream of the other tenant with a long token, for the suspension below.
    let other = watch(ch, &token(&["integration"], &["stream-b"], 600))
        .await
        .expect("other tenant's watch");

    let (w, f) = tokio::join!(
        ending(watched, Duration::from_secs(30)),
        ending(followed, Duration::from_secs(30))
    );
    for (what, end) in [("WatchEvents", w), ("ExportEvents follow", f)] {
        let (code, at) = end.unwrap_or_else(|| panic!("{what} outlived its token"));
        assert_eq!(
            code,
            Code::Unauthenticated,
            "{what} ends when its token expires"
        );
        let after = at.duration_since(opened);
        assert!(
            after >= Duration::from_secs(2),
            "{what} ended before the token expired ({after:?})"
        );
    }

    // Suspension: open streams of the tenant end; the other tenant's go on.
    let long = token(&["integration"], &["stream-a"], 600);
    let watched = watch(ch, &long).await.expect("watch");
    let followed = follow(ch, &token(&["auditor"], &["stream-a"], 600))
        .await
        .expect("follow");
    suspend(ch, "stream-a").await;
    let suspended_at = Instant::now();
    let (code, at) = ending(watched, Duration::from_secs(20))
        .await
        .expect("the integration's watch outlived the suspension");
    assert_eq!(code, Code::PermissionDenied, "suspension ends the stream");
    // The tenant-status bound: the gate's TTL (5 s) and one recheck.
    assert!(
        at.duration_since(suspended_at) < Duration::from_secs(12),
        "ended {:?} after the suspension",
        at.duration_since(suspended_at)
    );
    // An auditor may read while the tenant is suspended (accountability, Art. 5(2)):
    // its export goes on.
    assert!(
        ending(followed, Duration::from_secs(3)).await.is_none(),
        "an auditor's export of a suspended tenant goes on"
    );
    assert!(
        ending(other, Duration::from_millis(500)).await.is_none(),
        "the other tenant's stream goes on"
    );
    // A new watch of the suspended tenant is refused at once.
    let refused = watch(ch, &long).await.err().map(|s| s.code());
    assert_eq!(refused, Some(Code::PermissionDenied));
}

#[tokio::test]
async fn streams_end_with_their_access_on_vern_dev() {
    let suite = Suite::start(Backend::Sqlite).await.expect("suite");
    access_ends_streams(&suite).await;
    suite.stop().await;
}

#[tokio::test]
async fn streams_end_with_their_access_on_the_topology() {
    let Some(suite) = Suite::start(Backend::Replicas).await else {
        return;
    };
    access_ends_streams(&suite).await;
    suite.stop().await;
}

/// Streams hold their budget while they run: one client gets
/// `max_streams_per_client`, the next is refused with a retry hint; a closed stream
/// frees its place; another client is not affected.
async fn budgets(suite: &Suite, per_client: usize) {
    let ch = &suite.channel;
    create_tenant(ch, "budget-a", "Avdeling A").await;
    let crm = token(&["integration"], &["budget-a"], 600);
    let mut open = vec![];
    for i in 0..per_client {
        open.push(
            watch(ch, &crm)
                .await
                .unwrap_or_else(|s| panic!("stream {i} of {per_client}: {s:?}")),
        );
    }
    // Every stream is still open (the first answer released nothing).
    tokio::time::sleep(Duration::from_millis(300)).await;
    let refused = watch(ch, &crm)
        .await
        .expect_err("one stream over the budget");
    assert_eq!(refused.code(), Code::ResourceExhausted);
    assert!(
        refused.metadata().get("grpc-retry-pushback-ms").is_some(),
        "the refusal says when to retry: {refused:?}"
    );
    // Another client of the same tenant has its own budget.
    let erp = vern_kit::auth::sign_hs256(
        &vern_kit::auth::Claims {
            sub: "erp".into(),
            tenant: vec!["budget-a".into()],
            roles: vec!["integration".into()],
            iss: "vern-dev".into(),
            aud: "vern".into(),
            exp: chrono_now() + 600,
            nbf: chrono_now(),
            iat: chrono_now(),
        },
        b"e2e-test-secret",
    )
    .expect("sign");
    let _erp_stream = watch(ch, &erp).await.expect("another client streams");
    // Closing one frees its place.
    drop(open.pop());
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        match watch(ch, &crm).await {
            Ok(s) => {
                open.push(s);
                break;
            }
            Err(s) if s.code() == Code::ResourceExhausted && Instant::now() < deadline => {
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
            Err(s) => panic!("a freed place is not given back: {s:?}"),
        }
    }
}

fn chrono_now() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs() as i64)
        .unwrap_or_default()
}

#[tokio::test]
async fn streams_count_against_their_budget_on_vern_dev() {
    let suite = Suite::start_with(Backend::Sqlite, |c| {
        c.server.max_streams_per_client = 5;
    })
    .await
    .expect("suite");
    budgets(&suite, 5).await;
    suite.stop().await;
}

#[tokio::test]
async fn streams_count_against_their_budget_on_the_topology() {
    let Some(suite) = Suite::start(Backend::Replicas).await else {
        return;
    };
    // The topology runs with the defaults.
    budgets(
        &suite,
        vern_kit::config::ServerConfig::default().max_streams_per_client,
    )
    .await;
    suite.stop().await;
}

#[tokio::test]
async fn a_stream_ends_at_its_longest_lifetime() {
    let suite = Suite::start_with(Backend::Sqlite, |c| {
        c.server.max_stream_seconds = 2;
    })
    .await
    .expect("suite");
    create_tenant(&suite.channel, "life-a", "Avdeling A").await;
    let opened = Instant::now();
    let stream = watch(&suite.channel, &token(&["integration"], &["life-a"], 600))
        .await
        .expect("watch");
    let (code, at) = ending(stream, Duration::from_secs(15))
        .await
        .expect("the stream outlived server.max_stream_seconds");
    assert_eq!(code, Code::Unavailable, "the client is told to resume");
    assert!(at.duration_since(opened) >= Duration::from_millis(1900));
    suite.stop().await;
}

/// Connections that never speak are closed on `vern dev`'s gateway (plaintext), and
/// health keeps answering while they pile up.
#[tokio::test]
async fn silent_connections_are_closed_and_health_keeps_answering() {
    use tokio::io::AsyncReadExt;
    let suite = Suite::start_with(Backend::Sqlite, |c| {
        c.server.handshake_timeout_seconds = 1;
    })
    .await
    .expect("suite");
    let mut silent = vec![];
    for _ in 0..200 {
        silent.push(
            tokio::net::TcpStream::connect(suite.addr)
                .await
                .expect("connect"),
        );
    }
    let mut health = tonic_health::pb::health_client::HealthClient::new(suite.channel.clone());
    let answer = health
        .check(tonic_health::pb::HealthCheckRequest::default())
        .await
        .expect("health answers while 200 silent connections are open");
    assert_eq!(answer.get_ref().status, 1, "SERVING");
    let started = Instant::now();
    for mut s in silent {
        let mut buf = [0u8; 16];
        let closed = tokio::time::timeout(Duration::from_secs(10), s.read(&mut buf)).await;
        assert!(
            matches!(closed, Ok(Ok(0)) | Ok(Err(_))),
            "a silent connection is still open after {:?}",
            started.elapsed()
        );
    }
    suite.stop().await;
}
