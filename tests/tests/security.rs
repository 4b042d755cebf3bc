//! The security model through the real gateway: the full RPC × role × own/foreign
//! tenant matrix generated from the permission table, forged tokens, key rotation
//! without a restart, rate limits, and forwarding to remote services.

use std::time::{Duration, Instant};

use tonic::Code;
use vern_kit::auth::{Role, permission_for};
use vern_kit::context::TENANT_HEADER;
use vern_tests::{Backend, Suite, all_rpcs, create_tenant, raw_call, token, token_with_key};

#[tokio::test]
async fn matrix_every_rpc_every_role_own_and_foreign_tenant() {
    matrix(Backend::Sqlite).await;
}

/// The same matrix as deployed: a gateway process forwarding to two replicas of every
/// service, each its own process on PostgreSQL. The services check every call again
/// (defence in depth): a call that skips the gateway without a token is refused by
/// the service itself.
#[tokio::test]
async fn matrix_every_rpc_every_role_on_replicas() {
    let Some(suite) = Suite::start(Backend::Replicas).await else {
        return;
    };
    for (path, streaming) in &all_rpcs() {
        assert_eq!(
            raw_call(&suite.internal, path, *streaming, &[]).await,
            Code::Unauthenticated,
            "{path} straight to its service without a token"
        );
        let t = token(&["tenant-admin"], &["tenant-a"], 300);
        let forged = format!("Bearer {}x", t);
        assert_eq!(
            raw_call(
                &suite.internal,
                path,
                *streaming,
                &[("authorization", forged)]
            )
            .await,
            Code::Unauthenticated,
            "{path} straight to its service with a forged token"
        );
        // A valid token of a role the gateway would let through: the service's port
        // serves vern's components only.
        // (A tenant of its own: the denial's audit lookup caches "no such tenant".)
        let admin = token(
            &["tenant-admin", "integration", "privacy-officer"],
            &["tenant-probe"],
            300,
        );
        assert_eq!(
            raw_call(
                &suite.internal,
                path,
                *streaming,
                &[("authorization", format!("Bearer {admin}"))]
            )
            .await,
            Code::PermissionDenied,
            "{path} straight to its service with a caller's token"
        );
    }
    matrix_on(suite).await;
}

/// The same matrix with every hop over TLS and mutual TLS between the components, as
/// the prod-tls overlay deploys it; plaintext and certificate-less clients are refused
/// before any token is looked at.
#[tokio::test]
async fn matrix_every_rpc_every_role_on_replicas_over_mutual_tls() {
    let Some(suite) = Suite::start(Backend::ReplicasTls).await else {
        return;
    };
    let topology = suite.topology.as_ref().expect("topology");
    let gateway = topology.gateway();
    // Plaintext to the gateway and to a service: no answer at all.
    let plain = tonic::transport::Channel::from_shared(format!("http://{gateway}"))
        .expect("uri")
        .connect()
        .await;
    if let Ok(ch) = plain {
        let health = tonic_health::pb::health_client::HealthClient::new(ch)
            .check(tonic_health::pb::HealthCheckRequest::default())
            .await;
        assert!(health.is_err(), "plaintext is refused by the gateway");
    }
    // A client trusting the CA but without a certificate: the gateway serves it, a
    // service refuses the handshake.
    let no_cert = vern_kit::tls::ClientTls::from_config(&vern_kit::config::TlsConfig {
        ca_file: Some(topology.tls_file("ca.crt")),
        ..Default::default()
    })
    .expect("client tls");
    let health_over = |port: u16| {
        let tls = no_cert.current();
        async move {
            let tcp = tokio::net::TcpStream::connect(("127.0.0.2", port)).await?;
            let mut stream = tokio_rustls::TlsConnector::from(tls)
                .connect(vern_kit::tls::server_name("localhost").expect("name"), tcp)
                .await?;
            // TLS 1.3: a refused client certificate shows at the first read.
            use tokio::io::{AsyncReadExt, AsyncWriteExt};
            stream
                .write_all(b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n")
                .await?;
            let mut buf = [0u8; 64];
            let n = stream.read(&mut buf).await?;
            Ok::<usize, std::io::Error>(n)
        }
    };
    assert!(
        !matches!(health_over(topology.port("subjects")).await, Ok(n) if n > 0),
        "a service refuses a client without a certificate"
    );
    matrix_on(suite).await;
}

async fn matrix(backend: Backend) {
    matrix_on(Suite::start(backend).await.expect("suite")).await;
}

/// What a granted call with an empty request may get: an answer from the service
/// itself. Anything else (UNAVAILABLE from a dead backend or a channel that is not ready,
/// INTERNAL, UNIMPLEMENTED, a denial) means the call did not get through as it should.
fn granted_answer(code: Code) -> bool {
    matches!(
        code,
        Code::Ok
            | Code::InvalidArgument
            | Code::NotFound
            | Code::FailedPrecondition
            | Code::OutOfRange
    )
}

async fn matrix_on(suite: Suite) {
    create_tenant(&suite.channel, "tenant-a", "Avdeling A").await;
    create_tenant(&suite.channel, "tenant-b", "Avdeling B").await;
    let rpcs = all_rpcs();
    assert!(rpcs.len() > 50, "{} RPCs", rpcs.len());
    // Recipients change and end as they are created: tenant administrators (and the
    // privacy officer where granted) with PurposesManage, never integrations.
    for path in [
        "/vern.tenants.v1.TenantService/UpdateRecipient",
        "/vern.tenants.v1.TenantService/EndRecipient",
    ] {
        assert!(
            rpcs.iter().any(|(p, _)| p == path),
            "{path} is in the matrix"
        );
        assert_eq!(
            permission_for(path),
            permission_for("/vern.tenants.v1.TenantService/CreateRecipient"),
            "{path}"
        );
        assert_eq!(
            permission_for(path),
            Some(vern_kit::auth::Permission::PurposesManage)
        );
        assert!(Role::TenantAdmin.grants(vern_kit::auth::Permission::PurposesManage));
        assert!(!Role::Integration.grants(vern_kit::auth::Permission::PurposesManage));
    }
    let mut checked = 0usize;
    let mut tenant_probes = 0usize;
    for (path, streaming) in &rpcs {
        let permission = permission_for(path).unwrap_or_else(|| panic!("{path} has no permission"));
        // No token at all.
        assert_eq!(
            raw_call(&suite.channel, path, *streaming, &[]).await,
            Code::Unauthenticated,
            "{path} without token"
        );
        for role in Role::ALL {
            let t = token(&[role.as_str()], &["tenant-a"], 300);
            let auth = ("authorization", format!("Bearer {t}"));
            let own = raw_call(
                &suite.channel,
                path,
                *streaming,
                std::slice::from_ref(&auth),
            )
            .await;
            if role == Role::Service {
                // Never through the gateway; on the internal listener where granted.
                assert_eq!(own, Code::PermissionDenied, "{path} as service via gateway");
                let internal = raw_call(
                    &suite.internal,
                    path,
                    *streaming,
                    std::slice::from_ref(&auth),
                )
                .await;
                if role.grants(permission) {
                    assert!(
                        granted_answer(internal),
                        "{path} as service on the internal listener must reach the service, got {internal:?}"
                    );
                } else {
                    assert_eq!(
                        internal,
                        Code::PermissionDenied,
                        "{path} as service on the internal listener"
                    );
                }
            } else if role.grants(permission) {
                assert!(
                    granted_answer(own),
                    "{path} as {} (own tenant) must reach the service, got {own:?}",
                    role.as_str()
                );
            } else {
                assert_eq!(
                    own,
                    Code::PermissionDenied,
                    "{path} as {} must be denied",
                    role.as_str()
                );
            }
            // Selecting a tenant the token does not name is always denied.
            let foreign = raw_call(
                &suite.channel,
                path,
                *streaming,
                &[auth.clone(), (TENANT_HEADER, "tenant-b".to_string())],
            )
            .await;
            assert_eq!(
                foreign,
                Code::PermissionDenied,
                "{path} as {} into tenant-b",
                role.as_str()
            );
            checked += 2;
            if matches!(role, Role::PlatformAdmin | Role::Service) {
                continue;
            }
            // A tenant role never acts without exactly one existing tenant: not for a
            // tenant that does not exist, not with two tenants and no selection, not
            // with none (issue 15: this made a tenant admin platform-wide).
            for (named, what) in [
                (&["ghost-tenant"][..], "an unknown tenant"),
                (&["tenant-a", "tenant-b"][..], "two tenants, none selected"),
                (&[][..], "no tenant"),
            ] {
                let t = token(&[role.as_str()], named, 300);
                let code = raw_call(
                    &suite.channel,
                    path,
                    *streaming,
                    &[("authorization", format!("Bearer {t}"))],
                )
                .await;
                assert_eq!(
                    code,
                    Code::PermissionDenied,
                    "{path} as {} naming {what}",
                    role.as_str()
                );
                tenant_probes += 1;
            }
        }
    }
    assert_eq!(
        tenant_probes,
        rpcs.len() * (Role::ALL.len() - 2) * 3,
        "every RPC probed with bad tenants"
    );
    assert_eq!(
        checked,
        rpcs.len() * Role::ALL.len() * 2,
        "100% of the RPCs covered"
    );
    suite.stop().await;
}

fn jwks(keys: Vec<jsonwebtoken::jwk::Jwk>) -> String {
    serde_json::to_string(&jsonwebtoken::jwk::JwkSet { keys }).expect("json")
}

async fn code_of(suite: &Suite, token: &str) -> Code {
    raw_call(
        &suite.channel,
        "/vern.tenants.v1.TenantService/ListTenants",
        false,
        &[("authorization", format!("Bearer {token}"))],
    )
    .await
}

#[tokio::test]
async fn forged_tokens_are_unauthenticated_and_keys_rotate_without_restart() {
    let dir = tempfile::tempdir().expect("dir");
    let jwks_path = dir.path().join("jwks.json");
    let (k1_pem, k1) = vern_kit::auth::generate_ed25519("k1").expect("k1");
    let (k2_pem, k2) = vern_kit::auth::generate_ed25519("k2").expect("k2");
    std::fs::write(&jwks_path, jwks(vec![k1.clone()])).expect("write");
    let path = jwks_path.clone();
    let suite = Suite::start_with(Backend::Sqlite, move |c| {
        c.auth.jwks_file = Some(path);
        c.auth.jwks_refresh_seconds = 1;
    })
    .await
    .expect("suite");

    let admin_k1 = token_with_key(&k1_pem, "k1", &["platform-admin"], &[]);
    let admin_k2 = token_with_key(&k2_pem, "k2", &["platform-admin"], &[]);
    assert_eq!(code_of(&suite, &admin_k1).await, Code::Ok);
    assert_eq!(
        code_of(&suite, &admin_k2).await,
        Code::Unauthenticated,
        "k2 not published yet"
    );

    // Attacks, all UNAUTHENTICATED.
    let parts: Vec<&str> = admin_k1.split('.').collect();
    use base64::Engine;
    let b64 = |b: &[u8]| base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(b);
    let mut claims: serde_json::Value = serde_json::from_slice(
        &base64::engine::general_purpose::URL_SAFE_NO_PAD
            .decode(parts[1])
            .expect("b64"),
    )
    .expect("json");
    claims["roles"] = serde_json::json!(["platform-admin", "service"]);
    claims["tenant"] = serde_json::json!("tenant-b");
    let tampered = format!(
        "{}.{}.{}",
        parts[0],
        b64(claims.to_string().as_bytes()),
        parts[2]
    );
    let none = format!("{}.{}.", b64(br#"{"alg":"none","typ":"JWT"}"#), parts[1]);
    let stripped = format!("{}.{}.", parts[0], parts[1]);
    let foreign_hs = {
        let now = chrono_now();
        vern_kit::auth::sign_hs256(
            &vern_kit::auth::Claims {
                sub: "x".into(),
                tenant: vec![],
                roles: vec!["platform-admin".into()],
                iss: "vern-dev".into(),
                aud: "vern".into(),
                exp: now + 60,
                nbf: now,
                iat: now,
            },
            b"someone else's secret",
        )
        .expect("sign")
    };
    for (label, t) in [
        ("alg none", none.as_str()),
        ("stripped signature", stripped.as_str()),
        ("tampered claims", tampered.as_str()),
        ("foreign HS256 key", foreign_hs.as_str()),
        ("unknown kid", admin_k2.as_str()),
        ("expired", &token(&["platform-admin"], &[], -120)),
        ("garbage", "definitely-not-a-jwt"),
    ] {
        assert_eq!(code_of(&suite, t).await, Code::Unauthenticated, "{label}");
    }

    // Rotation: publish k2, wait for the refresh, then retire k1.
    std::fs::write(&jwks_path, jwks(vec![k1, k2.clone()])).expect("write");
    wait_for(&suite, &admin_k2, Code::Ok).await;
    std::fs::write(&jwks_path, jwks(vec![k2])).expect("write");
    wait_for(&suite, &admin_k1, Code::Unauthenticated).await;
    assert_eq!(code_of(&suite, &admin_k2).await, Code::Ok);
    suite.stop().await;
}

async fn wait_for(suite: &Suite, token: &str, want: Code) {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let got = code_of(suite, token).await;
        if got == want {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "still {got:?} after the refresh interval"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

fn chrono_now() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs() as i64)
        .unwrap_or_default()
}

#[tokio::test]
async fn per_client_rate_limit_refuses_with_resource_exhausted() {
    let suite = Suite::start_with(Backend::Sqlite, |c| {
        c.server.rate_limit_per_client = 1;
        c.server.rate_limit_burst = 3;
    })
    .await
    .expect("suite");
    let greedy = token(&["platform-admin"], &[], 300);
    let mut codes = vec![];
    for _ in 0..6 {
        codes.push(code_of(&suite, &greedy).await);
    }
    assert_eq!(
        &codes[..3],
        &[Code::Ok, Code::Ok, Code::Ok],
        "burst admitted"
    );
    assert!(codes[3..].contains(&Code::ResourceExhausted), "{codes:?}");
    // Another client is not affected; health is never limited.
    let mut other = vern_kit::auth::Claims {
        sub: "another-client".into(),
        tenant: vec![],
        roles: vec!["platform-admin".into()],
        iss: "vern-dev".into(),
        aud: "vern".into(),
        exp: chrono_now() + 60,
        nbf: chrono_now(),
        iat: chrono_now(),
    };
    other.iat -= 1;
    let other = vern_kit::auth::sign_hs256(&other, b"e2e-test-secret").expect("sign");
    assert_eq!(code_of(&suite, &other).await, Code::Ok);
    suite.stop().await;
}

/// Denied calls spend the same per-client budget as allowed ones: a client cannot
/// make unlimited calls by making them denied (each is verified, logged and audited).
/// Callers without a valid token are counted by their address.
#[tokio::test]
async fn denied_calls_count_against_the_rate_limit() {
    let suite = Suite::start_with(Backend::Sqlite, |c| {
        c.server.rate_limit_per_client = 1;
        c.server.rate_limit_burst = 3;
    })
    .await
    .expect("suite");
    create_tenant(&suite.channel, "tenant-a", "Avdeling A").await;
    // An integration may not list tenants: denied, until the budget is spent.
    let crm = token(&["integration"], &["tenant-a"], 300);
    let mut codes = vec![];
    for _ in 0..6 {
        codes.push(code_of(&suite, &crm).await);
    }
    assert_eq!(
        &codes[..3],
        &[Code::PermissionDenied; 3],
        "the burst is spent on denials"
    );
    assert!(
        codes[3..].iter().all(|c| *c == Code::ResourceExhausted),
        "{codes:?}"
    );
    // Without a valid token: counted by address.
    let mut codes = vec![];
    for _ in 0..6 {
        codes.push(code_of(&suite, "not-a-token").await);
    }
    assert_eq!(&codes[..3], &[Code::Unauthenticated; 3], "{codes:?}");
    assert!(
        codes[3..].iter().all(|c| *c == Code::ResourceExhausted),
        "{codes:?}"
    );
    suite.stop().await;
}

/// `vern dev`'s internal listener serves vern's own components only: a platform
/// admin's CreateTenant and an integration's CreateSubject are refused there (and
/// audited), although both are allowed through the gateway.
#[tokio::test]
async fn the_internal_listener_serves_only_the_service_role() {
    let suite = Suite::start(Backend::Sqlite).await.expect("suite");
    create_tenant(&suite.channel, "tenant-a", "Avdeling A").await;
    for (path, roles, tenants) in [
        (
            "/vern.tenants.v1.TenantService/CreateTenant",
            &["platform-admin"][..],
            &[][..],
        ),
        (
            "/vern.subjects.v1.SubjectService/CreateSubject",
            &["integration"][..],
            &["tenant-a"][..],
        ),
        (
            "/vern.tenants.v1.TenantService/GetTenant",
            &["tenant-admin"][..],
            &["tenant-a"][..],
        ),
    ] {
        let t = token(roles, tenants, 300);
        let auth = [("authorization", format!("Bearer {t}"))];
        assert_eq!(
            raw_call(&suite.internal, path, false, &auth).await,
            Code::PermissionDenied,
            "{path} as {roles:?} on the internal listener"
        );
        assert_ne!(
            raw_call(&suite.channel, path, false, &auth).await,
            Code::PermissionDenied,
            "{path} as {roles:?} through the gateway"
        );
    }
    // A user token vouched for by a forged "component" is still refused.
    let t = token(&["tenant-admin"], &["tenant-a"], 300);
    let fake_via = token(&["tenant-admin"], &["tenant-a"], 300);
    assert_eq!(
        raw_call(
            &suite.internal,
            "/vern.tenants.v1.TenantService/GetTenant",
            false,
            &[
                ("authorization", format!("Bearer {t}")),
                (vern_kit::context::VIA_HEADER, fake_via),
            ],
        )
        .await,
        Code::PermissionDenied,
        "only a service token vouches"
    );
    // The denial is in the tenant's audit chain.
    let auditor = token(&["auditor"], &["tenant-a"], 300);
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let events = vern_proto::audit::v1::audit_service_client::AuditServiceClient::new(
            suite.channel.clone(),
        )
        .query_events(vern_tests::authed(
            vern_proto::audit::v1::QueryEventsRequest {
                page_size: 1000,
                ..Default::default()
            },
            &auditor,
        ))
        .await
        .expect("query")
        .into_inner()
        .events;
        if events.iter().any(|e| {
            e.action == "CreateSubject"
                && e.outcome == vern_proto::audit::v1::Outcome::Denied as i32
        }) {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "the internal port's denial is not audited"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    suite.stop().await;
}

/// `vern dev`'s internal listener is no port at all: a Unix socket (0600, in a 0700
/// directory) that only the suite's user can open, whatever TLS the gateway speaks. A
/// second suite on the same data refuses to start rather than take it over, and the
/// socket goes when the suite stops.
#[tokio::test]
async fn the_internal_listener_is_a_socket_only_its_user_can_open() {
    use std::os::unix::fs::{FileTypeExt, PermissionsExt};
    let suite = Suite::start(Backend::Sqlite).await.expect("suite");
    let socket = suite.data_dir().join("run").join("internal.sock");
    let meta = std::fs::metadata(&socket).expect("the internal socket exists");
    assert!(meta.file_type().is_socket(), "{meta:?}");
    assert_eq!(meta.permissions().mode() & 0o777, 0o600, "socket mode");
    let dir = std::fs::metadata(socket.parent().expect("dir")).expect("dir");
    assert_eq!(dir.permissions().mode() & 0o777, 0o700, "directory mode");
    // It serves the suite's components (the service role) ...
    let service = token(&["service"], &["tenant-x"], 300);
    assert_eq!(
        raw_call(
            &suite.internal,
            "/vern.tenants.v1.TenantService/GetTenantStatusGeneration",
            false,
            &[("authorization", format!("Bearer {service}"))],
        )
        .await,
        Code::Ok,
        "the service role on the internal socket"
    );
    // ... and a second suite on the same data does not take it over.
    let second = vern_kit::config::Config {
        data_dir: suite.data_dir(),
        ..Default::default()
    };
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let refused = vern_cli::start_suite(second, listener)
        .await
        .err()
        .expect("a second suite on the same data is refused");
    assert!(
        refused.to_string().contains("another vern dev"),
        "{refused:#}"
    );
    assert!(socket.exists(), "the first suite keeps its socket");
    suite.stop().await;
    assert!(!socket.exists(), "the socket goes with the suite");
}

/// A component that should check tenants but cannot sign service tokens does not
/// start (it would otherwise serve every tenant, suspended or unknown).
#[tokio::test]
async fn a_component_without_a_service_key_refuses_to_start() {
    let dir = tempfile::tempdir().expect("dir");
    let config = vern_kit::config::Config {
        data_dir: dir.path().to_path_buf(),
        ..Default::default()
    };
    assert!(config.auth.hs256_secret.is_none() && config.auth.service_key_file.is_none());
    let gateway = vern_cli::gateway(&config)
        .err()
        .expect("the gateway refuses");
    assert!(
        format!("{gateway:#}").contains("no service signing key"),
        "{gateway:#}"
    );
    let service = vern_cli::suite_of(&config, &["tenants"])
        .await
        .err()
        .expect("a service refuses");
    assert!(
        format!("{service:#}").contains("auth.service_key_file"),
        "{service:#}"
    );
}

#[tokio::test]
async fn standalone_gateway_forwards_to_remote_services() {
    use vern_proto::tenants::v1 as pb;
    // A tenants service on its own port, as in Kubernetes.
    let dir = tempfile::tempdir().expect("dir");
    let mut config = vern_kit::config::Config {
        data_dir: dir.path().to_path_buf(),
        ..Default::default()
    };
    config.auth.hs256_secret = Some("e2e-test-secret".into());
    config.keys.master_key = Some("dmVybi1lMmUtdGVzdC1tYXN0ZXIta2V5LTMyYnl0ZXM=".into());
    let tenants_listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let tenants_addr = tenants_listener.local_addr().expect("addr");
    let served = vern_cli::suite_of(&config, &["tenants"])
        .await
        .expect("tenants");
    let verifier = vern_cli::verifier(&config).expect("verifier");
    let server_config = config.server.clone();
    let (stop_tenants, stopped) = tokio::sync::oneshot::channel::<()>();
    let tenants = tokio::spawn(async move {
        vern_kit::server::serve(served, tenants_listener, &server_config, verifier, async {
            let _ = stopped.await;
        })
        .await
    });

    // The gateway forwards tenants there; subjects points at a closed port.
    config.services.tenants.url = format!("http://{tenants_addr}");
    config.services.subjects.url = "http://127.0.0.1:1".into();
    let routes = vern_gateway::forwarding_routes(
        &config.services,
        vern_cli::service_tokens(&config).expect("service tokens"),
    )
    .expect("routes");
    let gw_listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let gw_addr = gw_listener.local_addr().expect("addr");
    let verifier = vern_cli::verifier(&config).expect("verifier");
    let server_config = config.server.clone();
    let (stop_gw, gw_stopped) = tokio::sync::oneshot::channel::<()>();
    let gateway = tokio::spawn(async move {
        vern_kit::server::serve(
            vern_kit::server::Served {
                routes,
                health_names: vern_proto::SERVICE_NAMES.to_vec(),
                denials: None,
                telemetry: vern_kit::telemetry::Telemetry::off(),
                exposure: vern_kit::context::Exposure::Public,
                tenants: None,
                shutdown: vern_kit::shutdown::Shutdown::new(),
                tls: None,
            },
            gw_listener,
            &server_config,
            verifier,
            async {
                let _ = gw_stopped.await;
            },
        )
        .await
    });

    let channel = tonic::transport::Channel::from_shared(format!("http://{gw_addr}"))
        .expect("uri")
        .connect()
        .await
        .expect("connect");
    let mut client = pb::tenant_service_client::TenantServiceClient::new(channel.clone());
    let admin = token(&["platform-admin"], &[], 300);
    let created = client
        .create_tenant(vern_tests::authed(
            pb::CreateTenantRequest {
                tenant_id: "remote".into(),
                name: "Remote Dept".into(),
                org_number: "989990748".into(),
                dpo_email: "dpo@remote.example".into(),
                ..Default::default()
            },
            &admin,
        ))
        .await
        .expect("forwarded create")
        .into_inner();
    assert_eq!(created.tenant_id, "remote");
    // The gateway refuses before forwarding: no token, wrong role.
    assert_eq!(
        raw_call(
            &channel,
            "/vern.tenants.v1.TenantService/ListTenants",
            false,
            &[]
        )
        .await,
        Code::Unauthenticated
    );
    let auditor = token(&["auditor"], &["remote"], 300);
    assert_eq!(
        raw_call(
            &channel,
            "/vern.tenants.v1.TenantService/ListTenants",
            false,
            &[("authorization", format!("Bearer {auditor}"))]
        )
        .await,
        Code::PermissionDenied
    );
    // A backend that is down is UNAVAILABLE, quickly.
    let integration = token(&["integration"], &["remote"], 300);
    let started = Instant::now();
    let code = raw_call(
        &channel,
        "/vern.subjects.v1.SubjectService/GetSubject",
        false,
        &[("authorization", format!("Bearer {integration}"))],
    )
    .await;
    assert_eq!(code, Code::Unavailable);
    assert!(started.elapsed() < Duration::from_secs(6));

    let _ = stop_gw.send(());
    let _ = stop_tenants.send(());
    let _ = gateway.await;
    let _ = tenants.await;
}
