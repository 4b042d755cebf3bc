//! Telemetry end to end: no personal data in logs, spans or metrics during a full
//! scenario; one trace across a standalone gateway and a service; `/metrics` after calls.
//! Spans and metrics go to a test OTLP collector on a loopback port.

use std::io::Write as _;
use std::sync::{Arc, LazyLock, Mutex};
use std::time::{Duration, Instant};

use opentelemetry_proto::tonic::collector::metrics::v1::metrics_service_server::{
    MetricsService, MetricsServiceServer,
};
use opentelemetry_proto::tonic::collector::metrics::v1::{
    ExportMetricsServiceRequest, ExportMetricsServiceResponse,
};
use opentelemetry_proto::tonic::collector::trace::v1::trace_service_server::{
    TraceService, TraceServiceServer,
};
use opentelemetry_proto::tonic::collector::trace::v1::{
    ExportTraceServiceRequest, ExportTraceServiceResponse,
};
use opentelemetry_proto::tonic::common::v1::{AnyValue, KeyValue, any_value};
use opentelemetry_proto::tonic::trace::v1::Span;
use opentelemetry_proto::tonic::trace::v1::span::SpanKind;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tonic::Code;
use vern_proto::common::v1::{DataCategory, LegalBasis};
use vern_proto::consents::v1 as cpb;
use vern_proto::subjects::v1 as spb;
use vern_proto::tenants::v1 as tpb;
use vern_tests::{Backend, Suite, authed, sample, scrape, token};

// ---------------------------------------------------------------- test collector

/// Spans (with their resource's `service.name`) and metric pushes received.
#[derive(Clone, Default)]
struct Collector {
    spans: Arc<Mutex<Vec<(String, Span)>>>,
    metrics: Arc<Mutex<Vec<ExportMetricsServiceRequest>>>,
}

fn text(v: &Option<AnyValue>) -> String {
    match v.as_ref().and_then(|v| v.value.as_ref()) {
        Some(any_value::Value::StringValue(s)) => s.clone(),
        Some(any_value::Value::IntValue(i)) => i.to_string(),
        Some(any_value::Value::BoolValue(b)) => b.to_string(),
        other => format!("{other:?}"),
    }
}

fn attr(attrs: &[KeyValue], key: &str) -> Option<String> {
    attrs
        .iter()
        .find(|kv| kv.key == key)
        .map(|kv| text(&kv.value))
}

#[tonic::async_trait]
impl TraceService for Collector {
    async fn export(
        &self,
        req: tonic::Request<ExportTraceServiceRequest>,
    ) -> Result<tonic::Response<ExportTraceServiceResponse>, tonic::Status> {
        let mut spans = self.spans.lock().expect("lock");
        for rs in req.into_inner().resource_spans {
            let service = rs
                .resource
                .as_ref()
                .and_then(|r| attr(&r.attributes, "service.name"))
                .unwrap_or_default();
            for ss in rs.scope_spans {
                for s in ss.spans {
                    spans.push((service.clone(), s));
                }
            }
        }
        Ok(tonic::Response::new(ExportTraceServiceResponse::default()))
    }
}

#[tonic::async_trait]
impl MetricsService for Collector {
    async fn export(
        &self,
        req: tonic::Request<ExportMetricsServiceRequest>,
    ) -> Result<tonic::Response<ExportMetricsServiceResponse>, tonic::Status> {
        self.metrics.lock().expect("lock").push(req.into_inner());
        Ok(tonic::Response::new(ExportMetricsServiceResponse::default()))
    }
}

impl Collector {
    /// Starts a collector on a loopback port; returns it and its URL.
    async fn start() -> (Collector, String) {
        let c = Collector::default();
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind");
        let url = format!("http://{}", listener.local_addr().expect("addr"));
        let server = tonic::transport::Server::builder()
            .add_service(TraceServiceServer::new(c.clone()))
            .add_service(MetricsServiceServer::new(c.clone()))
            .serve_with_incoming(tokio_stream::wrappers::TcpListenerStream::new(listener));
        tokio::spawn(server);
        (c, url)
    }

    /// Starts a collector speaking TLS only, with a certificate of `pki`.
    async fn start_tls(
        pki: &vern_kit::testing::TestPki,
        dir: &std::path::Path,
    ) -> (Collector, String) {
        let (cert, key) = (dir.join("collector.crt"), dir.join("collector.key"));
        pki.write_server(&cert, &key);
        let tls = vern_kit::tls::ServerTls::from_config(&vern_kit::config::TlsConfig {
            cert_file: Some(cert),
            key_file: Some(key),
            ..Default::default()
        })
        .expect("server tls")
        .expect("configured");
        let c = Collector::default();
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind");
        let url = format!(
            "https://localhost:{}",
            listener.local_addr().expect("addr").port()
        );
        let server = tonic::transport::Server::builder()
            .add_service(TraceServiceServer::new(c.clone()))
            .add_service(MetricsServiceServer::new(c.clone()))
            .serve_with_incoming(vern_kit::listen::incoming_tls(
                listener,
                tls,
                std::time::Duration::from_secs(10),
                tokio::sync::watch::channel(false).1,
            ));
        tokio::spawn(server);
        (c, url)
    }

    fn spans(&self) -> Vec<(String, Span)> {
        self.spans.lock().expect("lock").clone()
    }

    /// Waits (flushing `flush`) until `done` holds for the received spans; bounded.
    async fn wait_for(
        &self,
        flush: &[&vern_kit::telemetry::Telemetry],
        done: impl Fn(&[(String, Span)]) -> bool,
    ) -> Vec<(String, Span)> {
        let deadline = Instant::now() + Duration::from_secs(15);
        loop {
            for t in flush {
                t.flush().await;
            }
            let spans = self.spans();
            if done(&spans) {
                return spans;
            }
            assert!(
                Instant::now() < deadline,
                "spans not received in time; got {:?}",
                spans
                    .iter()
                    .map(|(s, sp)| (s, &sp.name))
                    .collect::<Vec<_>>()
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }
}

// ---------------------------------------------------------------- log capture

static LOGS: LazyLock<Mutex<Vec<u8>>> = LazyLock::new(|| Mutex::new(Vec::new()));

struct LogWriter;

impl std::io::Write for LogWriter {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        LOGS.lock().expect("lock").extend_from_slice(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

/// Every log line of this process at debug level, as JSON with all span fields.
fn capture_logs() {
    let _ = tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::new("debug"))
        .json()
        .flatten_event(true)
        .with_current_span(true)
        .with_span_list(true)
        .with_writer(|| LogWriter)
        .try_init();
}

fn logs() -> String {
    String::from_utf8_lossy(&LOGS.lock().expect("lock")).into_owned()
}

// ---------------------------------------------------------------- the scenario

/// A valid synthetic (test) fødselsnummer: month + 80.
fn synthetic_fnr(day: u32, month: u32, year: u32, seed: u32) -> String {
    for individual in (seed % 400)..1000 {
        let base = format!("{day:02}{:02}{:02}{individual:03}", month + 80, year % 100);
        let d: Vec<u32> = base.bytes().map(|b| u32::from(b - b'0')).collect();
        let k1w = [3, 7, 6, 1, 8, 9, 4, 5, 2];
        let k1 = match 11 - k1w.iter().zip(&d).map(|(w, x)| w * x).sum::<u32>() % 11 {
            11 => 0,
            10 => continue,
            k => k,
        };
        let mut d2 = d.clone();
        d2.push(k1);
        let k2w = [5, 4, 3, 2, 7, 6, 5, 4, 3, 2];
        let k2 = match 11 - k2w.iter().zip(&d2).map(|(w, x)| w * x).sum::<u32>() % 11 {
            11 => 0,
            10 => continue,
            k => k,
        };
        return format!("{base}{k1}{k2}");
    }
    panic!("no valid number")
}

/// Distinctive personal data: every form it may take (as sent and normalised).
struct Pii {
    email: &'static str,
    phone: &'static str,
    national_id: String,
    address: &'static str,
    salary: &'static str,
}

impl Pii {
    fn new() -> Self {
        Self {
            email: "Zorblax.Quendt@Telemetry-Probe.example",
            phone: "+47 41 97 53 86",
            national_id: synthetic_fnr(23, 9, 1977, 271),
            address: "Qwyzzle Alley 77, 9999 Snorvik",
            salary: "PIIVALUE-8472-9931-salary",
        }
    }

    /// Substrings that must appear nowhere.
    fn needles(&self) -> Vec<String> {
        vec![
            self.email.into(),
            self.email.to_lowercase(),
            "zorblax".into(),
            "Zorblax".into(),
            "41975386".into(),
            "41 97 53 86".into(),
            self.national_id.clone(),
            "Qwyzzle".into(),
            "Snorvik".into(),
            "PIIVALUE-8472".into(),
        ]
    }
}

async fn wait_check(
    consents: &mut cpb::consent_service_client::ConsentServiceClient<tonic::transport::Channel>,
    tok: &str,
    subject: &str,
    purpose: &str,
    want: cpb::CheckReason,
) {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let r = consents
            .check(authed(
                cpb::CheckRequest {
                    subject_id: subject.into(),
                    purpose: purpose.into(),
                },
                tok,
            ))
            .await
            .expect("check")
            .into_inner();
        if r.reason == want as i32 {
            return;
        }
        assert!(Instant::now() < deadline, "check never became {want:?}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Tenant and purposes, a subject with identifiers and records, consents, checks,
/// lookups by identifier (also failing ones), erasure. Returns the subject id.
async fn scenario(suite: &Suite, pii: &Pii) -> String {
    let ch = &suite.channel;
    let admin = token(&["platform-admin"], &[], 600);
    let mut tenants = tpb::tenant_service_client::TenantServiceClient::new(ch.clone());
    tenants
        .create_tenant(authed(
            tpb::CreateTenantRequest {
                tenant_id: "tele".into(),
                name: "Telemetry Dept".into(),
                org_number: "989990748".into(),
                dpo_email: "dpo@example.no".into(),
                ..Default::default()
            },
            &admin,
        ))
        .await
        .expect("tenant");
    let tenant_admin = token(&["tenant-admin"], &["tele"], 600);
    for (key, basis) in [
        ("newsletter", LegalBasis::Consent),
        ("invoicing", LegalBasis::Contract),
    ] {
        tenants
            .create_purpose(authed(
                tpb::CreatePurposeRequest {
                    key: key.into(),
                    description: format!("{key} purpose"),
                    legal_basis: basis as i32,
                    data_categories: vec![DataCategory::Contact as i32],
                    direct_marketing: key == "newsletter",
                    ..Default::default()
                },
                &tenant_admin,
            ))
            .await
            .expect("purpose");
    }

    let crm = token(&["integration"], &["tele"], 600);
    let mut subjects = spb::subject_service_client::SubjectServiceClient::new(ch.clone());
    let mut consents = cpb::consent_service_client::ConsentServiceClient::new(ch.clone());
    let record = |field: &str, value: &str| spb::Record {
        category: DataCategory::Contact as i32,
        field: field.into(),
        value: value.into(),
        source: "crm".into(),
        purposes: vec!["newsletter".into()],
        ..Default::default()
    };
    let sid = subjects
        .create_subject(authed(
            spb::CreateSubjectRequest {
                email: pii.email.into(),
                phone: pii.phone.into(),
                national_id: pii.national_id.clone(),
                records: vec![record("address", pii.address)],
                request_id: "tele-create-1".into(),
                ..Default::default()
            },
            &crm,
        ))
        .await
        .expect("create subject")
        .into_inner()
        .subject_id;
    subjects
        .add_records(authed(
            spb::AddRecordsRequest {
                subject_id: sid.clone(),
                records: vec![record("salary", pii.salary)],
                request_id: "tele-records-1".into(),
            },
            &crm,
        ))
        .await
        .expect("add records");
    // The same identifiers again: ALREADY_EXISTS, and a malformed one: INVALID_ARGUMENT.
    let e = subjects
        .create_subject(authed(
            spb::CreateSubjectRequest {
                email: pii.email.into(),
                ..Default::default()
            },
            &crm,
        ))
        .await
        .expect_err("duplicate");
    assert!(
        matches!(e.code(), Code::AlreadyExists | Code::FailedPrecondition),
        "{e:?}"
    );
    let e = subjects
        .create_subject(authed(
            spb::CreateSubjectRequest {
                email: format!("{}@@", pii.email),
                ..Default::default()
            },
            &crm,
        ))
        .await
        .expect_err("malformed");
    assert_eq!(e.code(), Code::InvalidArgument);
    // Lookups by every identifier, and one that finds nothing.
    for identifier in [
        spb::find_subject_request::Identifier::Email(pii.email.into()),
        spb::find_subject_request::Identifier::Phone(pii.phone.into()),
        spb::find_subject_request::Identifier::NationalId(pii.national_id.clone()),
    ] {
        let found = subjects
            .find_subject(authed(
                spb::FindSubjectRequest {
                    identifier: Some(identifier),
                    view: spb::SubjectView::Full as i32,
                },
                &crm,
            ))
            .await
            .expect("find")
            .into_inner();
        assert_eq!(found.subject_id, sid);
        assert_eq!(found.records.len(), 2, "records readable");
    }
    let e = subjects
        .find_subject(authed(
            spb::FindSubjectRequest {
                identifier: Some(spb::find_subject_request::Identifier::Email(
                    "zorblax.nobody@telemetry-probe.example".into(),
                )),
                view: 0,
            },
            &crm,
        ))
        .await
        .expect_err("unknown");
    assert_eq!(e.code(), Code::NotFound);
    // A call without a token (logged with the trace id) and one with the wrong role.
    let e = subjects
        .get_subject(tonic::Request::new(spb::GetSubjectRequest {
            subject_id: sid.clone(),
            view: 0,
            ..Default::default()
        }))
        .await
        .expect_err("no token");
    assert_eq!(e.code(), Code::Unauthenticated);

    wait_check(
        &mut consents,
        &crm,
        &sid,
        "newsletter",
        cpb::CheckReason::NoConsent,
    )
    .await;
    consents
        .record_consent(authed(
            cpb::RecordConsentRequest {
                subject_id: sid.clone(),
                purpose: "newsletter".into(),
                action: cpb::ConsentAction::Grant as i32,
                channel: cpb::ConsentChannel::WebForm as i32,
                notice_version: "2022-11-20".into(),
                evidence: "signup-form".into(),
                request_id: "tele-grant-1".into(),
                ..Default::default()
            },
            &crm,
        ))
        .await
        .expect("grant");
    wait_check(
        &mut consents,
        &crm,
        &sid,
        "newsletter",
        cpb::CheckReason::ConsentGranted,
    )
    .await;
    let batch = consents
        .batch_check(authed(
            cpb::BatchCheckRequest {
                purpose: "invoicing".into(),
                subject_ids: vec![sid.clone()],
            },
            &crm,
        ))
        .await
        .expect("batch")
        .into_inner();
    assert!(batch.results[0].allowed);

    let officer = token(&["privacy-officer"], &["tele"], 600);
    subjects
        .erase_subject(authed(
            spb::EraseSubjectRequest {
                subject_id: sid.clone(),
                reason: "Art. 17 request".into(),
                request_id: "tele-erase-1".into(),
                ..Default::default()
            },
            &officer,
        ))
        .await
        .expect("erase");
    wait_check(
        &mut consents,
        &crm,
        &sid,
        "invoicing",
        cpb::CheckReason::SubjectErased,
    )
    .await;
    sid
}

fn assert_clean(what: &str, haystack: &str, pii: &Pii) {
    for needle in pii.needles() {
        assert!(
            !haystack.contains(&needle),
            "personal data {needle:?} found in {what}"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn no_personal_data_in_logs_spans_or_metrics() {
    capture_logs();
    let (collector, url) = Collector::start().await;
    let suite = Suite::start_with(Backend::Sqlite, |c| {
        c.telemetry.otlp_endpoint = Some(url.clone());
        c.telemetry.metrics_listen = Some("127.0.0.1:0".parse().expect("addr"));
        c.telemetry.metrics_export_interval_seconds = 1;
    })
    .await
    .expect("suite");
    let pii = Pii::new();
    let sid = scenario(&suite, &pii).await;
    let telemetry = suite.telemetry().expect("telemetry").clone();
    let metrics_addr = telemetry.metrics_addr().expect("metrics endpoint");

    // Spans: every call traced, including the erasure and its database work.
    let spans = collector
        .wait_for(&[&telemetry], |spans| {
            spans
                .iter()
                .any(|(_, s)| s.name == "vern.subjects.v1.SubjectService/EraseSubject")
        })
        .await;
    assert!(
        spans.iter().all(|(svc, _)| svc == "vern-dev"),
        "service.name"
    );
    for name in [
        "vern.subjects.v1.SubjectService/CreateSubject",
        "vern.subjects.v1.SubjectService/FindSubject",
        "vern.subjects.v1.SubjectService/AddRecords",
        "vern.consents.v1.ConsentService/Check",
        "vern.consents.v1.ConsentService/BatchCheck",
    ] {
        assert!(spans.iter().any(|(_, s)| s.name == name), "{name} traced");
    }
    assert!(
        spans
            .iter()
            .any(|(_, s)| attr(&s.attributes, "db.system.name").as_deref() == Some("sqlite")),
        "database spans"
    );
    let span_text = format!("{spans:?}");
    // Spans carry names, codes and database operations, not ids from request bodies.
    assert!(!span_text.contains(&sid));
    assert_clean("spans", &span_text, &pii);

    // Metrics: the scrape and the OTLP pushes.
    let scraped = scrape(metrics_addr).await;
    assert!(
        sample(
            &scraped,
            "vern_rpc_requests_total{service=\"vern.subjects.v1.SubjectService\",method=\"FindSubject\",code=\"NOT_FOUND\"}"
        )
        .is_some_and(|v| v >= 1.0),
        "{scraped}"
    );
    assert_clean("/metrics", &scraped, &pii);
    telemetry.flush().await;
    let pushed = format!("{:?}", collector.metrics.lock().expect("lock"));
    assert!(
        pushed.contains("vern_rpc_requests"),
        "metrics pushed over OTLP"
    );
    assert_clean("OTLP metrics", &pushed, &pii);

    // Logs at debug level, with span fields.
    let logs = logs();
    assert!(logs.lines().count() > 10, "logs captured");
    assert!(
        logs.lines()
            .any(|l| l.contains("call unauthenticated") && l.contains("\"trace_id\":\"")),
        "log lines of traced calls carry the trace id"
    );
    assert_clean("logs", &logs, &pii);
    suite.stop().await;
}

// ---------------------------------------------------------------- one trace

async fn serve(
    served: vern_kit::server::Served,
    config: &vern_kit::config::Config,
) -> (
    std::net::SocketAddr,
    tokio::sync::oneshot::Sender<()>,
    tokio::task::JoinHandle<()>,
) {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let addr = listener.local_addr().expect("addr");
    let verifier = vern_cli::verifier(config).expect("verifier");
    let server_config = config.server.clone();
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let handle = tokio::spawn(async move {
        let _ = vern_kit::server::serve(served, listener, &server_config, verifier, async {
            let _ = stopped.await;
        })
        .await;
    });
    (addr, stop, handle)
}

/// A configuration exporting to the collector at `url`, with test keys.
fn exporting_config(dir: &std::path::Path, url: String) -> vern_kit::config::Config {
    let mut config = vern_kit::config::Config {
        data_dir: dir.to_path_buf(),
        ..Default::default()
    };
    config.auth.hs256_secret = Some("e2e-test-secret".into());
    config.keys.master_key = Some("dmVybi1lMmUtdGVzdC1tYXN0ZXIta2V5LTMyYnl0ZXM=".into());
    config.telemetry.otlp_endpoint = Some(url);
    config
}

/// The tenants service on a port of its own with its telemetry.
async fn serve_tenants(
    config: &vern_kit::config::Config,
) -> (
    std::net::SocketAddr,
    tokio::sync::oneshot::Sender<()>,
    tokio::task::JoinHandle<()>,
    vern_kit::telemetry::Telemetry,
) {
    let mut served = vern_cli::suite_of(config, &["tenants"])
        .await
        .expect("tenants");
    let telemetry = vern_kit::telemetry::Telemetry::start(&config.telemetry, "tenants")
        .await
        .expect("telemetry");
    served.telemetry = telemetry.clone();
    let (addr, stop, handle) = serve(served, config).await;
    (addr, stop, handle, telemetry)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_trace_spans_gateway_and_service() {
    let (collector, url) = Collector::start().await;
    let dir = tempfile::tempdir().expect("dir");
    let mut config = exporting_config(dir.path(), url);
    // The tenants service on its own port, as in Kubernetes.
    let (tenants_addr, stop_tenants, tenants, tenants_telemetry) = serve_tenants(&config).await;

    // A standalone gateway forwarding to it.
    config.services.tenants.url = format!("http://{tenants_addr}");
    let gateway_telemetry = vern_kit::telemetry::Telemetry::start(&config.telemetry, "gateway")
        .await
        .expect("telemetry");
    let served = vern_kit::server::Served {
        routes: vern_gateway::forwarding_routes(
            &config.services,
            vern_cli::service_tokens(&config).expect("service tokens"),
        )
        .expect("routes"),
        health_names: vern_proto::SERVICE_NAMES.to_vec(),
        denials: None,
        telemetry: gateway_telemetry.clone(),
        exposure: vern_kit::context::Exposure::Public,
        tenants: None,
        shutdown: vern_kit::shutdown::Shutdown::new(),
        tls: None,
    };
    let (gw_addr, stop_gw, gateway) = serve(served, &config).await;

    // One call through the gateway, continuing the caller's trace.
    let channel = tonic::transport::Channel::from_shared(format!("http://{gw_addr}"))
        .expect("uri")
        .connect()
        .await
        .expect("connect");
    let trace_id = "4bf92f3577b34da6a3ce929d0e0e4736";
    let caller_span = "00f067aa0ba902b7";
    let mut req = authed(
        tpb::CreateTenantRequest {
            tenant_id: "traced".into(),
            name: "Traced Dept".into(),
            org_number: "989990748".into(),
            dpo_email: "dpo@traced.example".into(),
            ..Default::default()
        },
        &token(&["platform-admin"], &[], 300),
    );
    req.metadata_mut().insert(
        "traceparent",
        format!("00-{trace_id}-{caller_span}-01")
            .parse()
            .expect("metadata"),
    );
    tpb::tenant_service_client::TenantServiceClient::new(channel)
        .create_tenant(req)
        .await
        .expect("forwarded call");

    const NAME: &str = "vern.tenants.v1.TenantService/CreateTenant";
    let server_kind = SpanKind::Server as i32;
    let client_kind = SpanKind::Client as i32;
    let spans = collector
        .wait_for(&[&gateway_telemetry, &tenants_telemetry], |spans| {
            let has = |svc: &str, kind: i32| {
                spans
                    .iter()
                    .any(|(s, sp)| s == svc && sp.name == NAME && sp.kind == kind)
            };
            has("vern-gateway", server_kind)
                && has("vern-gateway", client_kind)
                && has("vern-tenants", server_kind)
        })
        .await;
    let find = |svc: &str, kind: i32| {
        spans
            .iter()
            .find(|(s, sp)| s == svc && sp.name == NAME && sp.kind == kind)
            .map(|(_, sp)| sp.clone())
            .expect("span")
    };
    let gw_server = find("vern-gateway", server_kind);
    let gw_client = find("vern-gateway", client_kind);
    let svc_server = find("vern-tenants", server_kind);
    let hex = |b: &[u8]| b.iter().map(|x| format!("{x:02x}")).collect::<String>();
    // One trace: the caller's.
    for s in [&gw_server, &gw_client, &svc_server] {
        assert_eq!(hex(&s.trace_id), trace_id, "{}", s.name);
    }
    // caller → gateway server span → gateway client span → service server span.
    assert_eq!(hex(&gw_server.parent_span_id), caller_span);
    assert_eq!(gw_client.parent_span_id, gw_server.span_id);
    assert_eq!(svc_server.parent_span_id, gw_client.span_id);
    for s in [&gw_server, &svc_server] {
        assert_eq!(attr(&s.attributes, "rpc.system").as_deref(), Some("grpc"));
        assert_eq!(
            attr(&s.attributes, "rpc.service").as_deref(),
            Some("vern.tenants.v1.TenantService")
        );
        assert_eq!(
            attr(&s.attributes, "rpc.method").as_deref(),
            Some("CreateTenant")
        );
        assert_eq!(
            attr(&s.attributes, "rpc.grpc.status_code").as_deref(),
            Some("0")
        );
    }
    // The service's database work is part of the same trace, under its span.
    let db: Vec<&Span> = spans
        .iter()
        .filter(|(s, sp)| s == "vern-tenants" && hex(&sp.trace_id) == trace_id)
        .map(|(_, sp)| sp)
        .filter(|sp| attr(&sp.attributes, "db.operation.name").is_some())
        .collect();
    assert!(
        db.iter()
            .any(|sp| sp.name == "transaction" && sp.parent_span_id == svc_server.span_id),
        "commit transaction span under the service span: {:?}",
        db.iter().map(|s| &s.name).collect::<Vec<_>>()
    );
    assert!(
        db.iter().any(|sp| sp.name.starts_with("INSERT ")),
        "query spans: {:?}",
        db.iter().map(|s| &s.name).collect::<Vec<_>>()
    );

    let _ = stop_gw.send(());
    let _ = stop_tenants.send(());
    let _ = tokio::time::timeout(Duration::from_secs(30), gateway).await;
    let _ = tokio::time::timeout(Duration::from_secs(30), tenants).await;
}

// ---------------------------------------------------------------- /metrics

#[tokio::test]
async fn metrics_endpoint_counts_calls_by_method_and_code() {
    let suite = Suite::start_with(Backend::Sqlite, |c| {
        c.telemetry.metrics_listen = Some("127.0.0.1:0".parse().expect("addr"));
    })
    .await
    .expect("suite");
    let addr = suite
        .telemetry()
        .and_then(|t| t.metrics_addr())
        .expect("metrics endpoint");
    assert!(
        !suite.telemetry().expect("telemetry").traces(),
        "no OTLP endpoint: no traces"
    );
    let series = |method: &str, code: &str| {
        format!(
            "vern_rpc_requests_total{{service=\"vern.tenants.v1.TenantService\",method=\"{method}\",code=\"{code}\"}}"
        )
    };
    let before = scrape(addr).await;
    let count = |text: &str, s: &str| sample(text, s).unwrap_or(0.0);

    let mut tenants = tpb::tenant_service_client::TenantServiceClient::new(suite.channel.clone());
    tenants
        .create_tenant(authed(
            tpb::CreateTenantRequest {
                tenant_id: "metered".into(),
                name: "Metered Dept".into(),
                org_number: "989990748".into(),
                dpo_email: "dpo@metered.example".into(),
                ..Default::default()
            },
            &token(&["platform-admin"], &[], 300),
        ))
        .await
        .expect("create");
    let e = tenants
        .list_tenants(authed(
            tpb::ListTenantsRequest::default(),
            &token(&["auditor"], &["metered"], 300),
        ))
        .await
        .expect_err("auditors do not list tenants");
    assert_eq!(e.code(), Code::PermissionDenied);

    let after = scrape(addr).await;
    assert_eq!(
        count(&after, &series("CreateTenant", "OK"))
            - count(&before, &series("CreateTenant", "OK")),
        1.0,
        "{after}"
    );
    assert_eq!(
        count(&after, &series("ListTenants", "PERMISSION_DENIED"))
            - count(&before, &series("ListTenants", "PERMISSION_DENIED")),
        1.0
    );
    let labels = "service=\"vern.tenants.v1.TenantService\",method=\"CreateTenant\"";
    let hist_count = format!("vern_rpc_duration_seconds_count{{{labels}}}");
    assert_eq!(
        count(&after, &hist_count) - count(&before, &hist_count),
        1.0
    );
    let inf = format!("vern_rpc_duration_seconds_bucket{{{labels},le=\"+Inf\"}}");
    assert_eq!(
        count(&after, &inf),
        count(&after, &hist_count),
        "+Inf holds every call"
    );
    assert!(
        count(
            &after,
            &format!("vern_rpc_duration_seconds_sum{{{labels}}}")
        ) > 0.0
    );
    assert!(after.contains("# TYPE vern_rpc_duration_seconds histogram"));
    assert!(count(&after, "vern_auth_denials_total{reason=\"role\"}") >= 1.0);
    // Unknown paths never become label values.
    let _ = vern_tests::raw_call(
        &suite.channel,
        "/vern.tenants.v1.TenantService/NoSuchMethod",
        false,
        &[],
    )
    .await;
    let last = scrape(addr).await;
    assert!(!last.contains("NoSuchMethod"));
    assert!(
        count(
            &last,
            "vern_rpc_requests_total{service=\"unknown\",method=\"unknown\",code=\"UNAUTHENTICATED\"}"
        ) >= 1.0,
        "{last}"
    );
    // Not found is 404.
    let mut s = tokio::net::TcpStream::connect(addr).await.expect("connect");
    s.write_all(b"GET /other HTTP/1.1\r\n\r\n")
        .await
        .expect("write");
    let mut out = String::new();
    s.read_to_string(&mut out).await.expect("read");
    assert!(out.starts_with("HTTP/1.1 404"));
    let _ = std::io::stderr().flush();
    suite.stop().await;
}

/// A tenants service exporting to a TLS collector whose certificate `collector_ca`
/// signed, trusting only `trusted`; one traced CreateTenant served. Returns the collector
/// and the service's telemetry, the service still running (stop it with the sender).
async fn traced_call_to_a_tls_collector(
    dir: &std::path::Path,
    trusted: &vern_kit::testing::TestPki,
    collector_ca: &vern_kit::testing::TestPki,
    tenant_id: &str,
) -> (
    Collector,
    vern_kit::telemetry::Telemetry,
    tokio::sync::oneshot::Sender<()>,
    tokio::task::JoinHandle<()>,
) {
    let (collector, url) = Collector::start_tls(collector_ca, dir).await;
    let ca = dir.join("ca.pem");
    trusted.write_ca(&ca);
    let mut config = exporting_config(dir, url);
    config.tls.ca_file = Some(ca);
    vern_kit::tls::install_client(&config.tls).expect("client tls");
    let (addr, stop, server, telemetry) = serve_tenants(&config).await;
    let channel = tonic::transport::Channel::from_shared(format!("http://{addr}"))
        .expect("uri")
        .connect()
        .await
        .expect("connect");
    tpb::tenant_service_client::TenantServiceClient::new(channel)
        .create_tenant(vern_tests::vouched(
            tpb::CreateTenantRequest {
                tenant_id: tenant_id.into(),
                name: "Traced over TLS".into(),
                org_number: "989990748".into(),
                dpo_email: "dpo@traced.example".into(),
                ..Default::default()
            },
            &token(&["platform-admin"], &[], 300),
        ))
        .await
        .expect("the call itself is served");
    (collector, telemetry, stop, server)
}

/// The OTLP exporter verifies an https collector: with the test CA trusted, spans and
/// metrics arrive over TLS; nothing is sent in plaintext.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn spans_and_metrics_reach_an_https_collector_the_ca_vouches_for() {
    let dir = tempfile::tempdir().expect("dir");
    let pki = vern_kit::testing::TestPki::new("otlp-test-ca");
    let (collector, telemetry, stop, server) =
        traced_call_to_a_tls_collector(dir.path(), &pki, &pki, "tls-traced").await;
    collector
        .wait_for(&[&telemetry], |spans| {
            spans.iter().any(|(s, sp)| {
                s == "vern-tenants" && sp.name == "vern.tenants.v1.TenantService/CreateTenant"
            })
        })
        .await;
    assert!(
        !collector.metrics.lock().expect("lock").is_empty(),
        "metrics pushed over TLS"
    );
    let _ = stop.send(());
    let _ = server.await;
}

/// The negative of the test above: a collector whose certificate another CA signed
/// receives nothing — no span, no metric — though the suite traces and meters as
/// before. The exporter verifies; it does not fall back to trusting anyone.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_collector_signed_by_another_ca_receives_nothing() {
    let dir = tempfile::tempdir().expect("dir");
    let trusted = vern_kit::testing::TestPki::new("otlp-test-ca");
    let other = vern_kit::testing::TestPki::new("someone-elses-ca");
    let (collector, telemetry, stop, server) =
        traced_call_to_a_tls_collector(dir.path(), &trusted, &other, "untrusted-collector").await;
    assert!(telemetry.traces(), "the suite traces");
    // Shutting down flushes spans and metrics: whatever would be sent is sent now.
    let _ = stop.send(());
    let _ = server.await;
    tokio::time::sleep(Duration::from_secs(2)).await;
    assert!(
        collector.spans.lock().expect("lock").is_empty(),
        "a span reached a collector the CA does not vouch for"
    );
    assert!(
        collector.metrics.lock().expect("lock").is_empty(),
        "metrics reached a collector the CA does not vouch for"
    );
}
