//! Logs, traces and metrics.
//!
//! - Logs: human-readable lines in `vern dev`, JSON lines in production ([`init`]). Only
//!   ids and kinds are ever logged; never personal data or secrets. While a call is
//!   traced, its lines carry the trace id.
//! - Traces (OpenTelemetry, exported over OTLP/gRPC when `telemetry.otlp_endpoint` is
//!   set): a server span per RPC ([`layer::TelemetryLayer`], composed in
//!   [`crate::server`]), W3C trace context taken from incoming metadata and put on
//!   outgoing calls ([`layer::Traced`], [`inject_current`]), client spans for outgoing
//!   calls and database spans (queries and `commit_once` transactions). Spans carry the
//!   RPC name, status code, database operation and table: never request bodies, SQL
//!   values or messages.
//! - Metrics: [`crate::metrics`], on `GET /metrics` and over OTLP.
//!
//! Each component (gateway, a service, or the whole suite in `vern dev`) starts one
//! [`Telemetry`]; its spans report `service.name = <service_name>-<component>`. The
//! tracer travels in the OpenTelemetry context of the call, so several components in
//! one process (tests) keep their own names. With nothing configured every hook is a
//! flag check.

pub mod layer;

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, SystemTime};

use opentelemetry::propagation::{Extractor, Injector, TextMapPropagator};
use opentelemetry::trace::{
    FutureExt as _, Span as _, SpanKind, Status, TraceContextExt, Tracer as _, TracerProvider as _,
};
use opentelemetry::{Context, KeyValue};
use opentelemetry_sdk::propagation::TraceContextPropagator;
use opentelemetry_sdk::trace::{SdkTracer, SdkTracerProvider};
use tracing_subscriber::EnvFilter;

use crate::config::{LogFormat, TelemetryConfig};

pub use layer::{TelemetryLayer, Traced};

/// Installs the global subscriber. `RUST_LOG` overrides `level`. Safe to call twice
/// (the second call is ignored), which tests rely on.
pub fn init(format: LogFormat, level: &str) {
    let filter = EnvFilter::try_from_default_env()
        .or_else(|_| EnvFilter::try_new(level))
        .unwrap_or_else(|_| EnvFilter::new("info"));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    let _ = match format {
        LogFormat::Human => builder.with_target(false).try_init(),
        // The current span is the traced call's `rpc` span: its only field is the
        // trace id.
        LogFormat::Json => builder
            .json()
            .flatten_event(true)
            .with_current_span(true)
            .with_span_list(false)
            .try_init(),
    };
}

/// Why telemetry could not start.
#[derive(Debug, thiserror::Error)]
pub enum TelemetryError {
    /// The OTLP endpoint is not a usable URL.
    #[error("telemetry.otlp_endpoint is not usable: {0}")]
    Endpoint(String),
    /// The metrics address could not be bound.
    #[error("binding telemetry.metrics_listen {0}: {1}")]
    Bind(SocketAddr, std::io::Error),
    /// `telemetry.metrics_tls` without a certificate.
    #[error("telemetry.metrics_tls needs tls.cert_file and tls.key_file")]
    MetricsTls,
}

/// Whether any component of this process traces (fast path for the database hook).
static TRACING: AtomicBool = AtomicBool::new(false);

/// The tracer of the component serving the current call, kept in the call's context.
#[derive(Clone, Debug)]
pub(crate) struct Active {
    pub tracer: SdkTracer,
}

/// One component's telemetry: its tracer provider, the metrics endpoint and the OTLP
/// metrics push. Cheap to clone; [`Telemetry::off`] does nothing.
#[derive(Clone, Debug, Default)]
pub struct Telemetry {
    inner: Option<Arc<Inner>>,
}

#[derive(Debug)]
struct Inner {
    tracer: Option<SdkTracer>,
    provider: Option<SdkTracerProvider>,
    metrics_addr: Option<SocketAddr>,
    pusher: Option<crate::metrics::export::OtlpPusher>,
    tasks: Vec<tokio::task::AbortHandle>,
}

impl Drop for Inner {
    fn drop(&mut self) {
        for t in &self.tasks {
            t.abort();
        }
        if let Some(p) = self.provider.take() {
            // Shutting down flushes over the network and blocks: never on a runtime
            // thread.
            let _ = std::thread::Builder::new()
                .name("otel-shutdown".into())
                .spawn(move || {
                    let _ = p.shutdown_with_timeout(Duration::from_secs(5));
                });
        }
    }
}

impl Telemetry {
    /// No traces, no metrics.
    pub fn off() -> Self {
        Self::default()
    }

    /// Starts what `config` asks for, reporting as `<service_name>-<component>`:
    /// span export (batched, on its own thread) and a periodic metrics push when
    /// `otlp_endpoint` is set, the `/metrics` endpoint when `metrics_listen` is set.
    /// Must run inside a tokio runtime.
    pub async fn start(config: &TelemetryConfig, component: &str) -> Result<Self, TelemetryError> {
        Self::start_with_tls(config, component, None).await
    }

    /// Like [`Telemetry::start`]; with `telemetry.metrics_tls`, `/metrics` is served
    /// over `tls` (the component's listener TLS).
    pub async fn start_with_tls(
        config: &TelemetryConfig,
        component: &str,
        tls: Option<Arc<crate::tls::ServerTls>>,
    ) -> Result<Self, TelemetryError> {
        if config.metrics_tls && config.metrics_listen.is_some() && tls.is_none() {
            return Err(TelemetryError::MetricsTls);
        }
        let endpoint = config
            .otlp_endpoint
            .as_deref()
            .map(str::trim)
            .filter(|e| !e.is_empty());
        if endpoint.is_none() && config.metrics_listen.is_none() {
            return Ok(Self::off());
        }
        let service_name = format!("{}-{component}", config.service_name);
        crate::metrics::enable();
        let mut tasks = vec![];
        let (mut tracer, mut provider, mut pusher) = (None, None, None);
        if let Some(url) = endpoint {
            use opentelemetry_otlp::{WithExportConfig, WithTonicConfig};
            let mut builder = opentelemetry_otlp::SpanExporter::builder()
                .with_tonic()
                .with_endpoint(url)
                .with_timeout(Duration::from_secs(5));
            if url.starts_with("https://") {
                // Verified like every other client of vern (tls.ca_file, else the
                // system roots; a client certificate when configured).
                builder = builder.with_channel(
                    crate::tls::lazy_channel(url)
                        .map_err(|e| TelemetryError::Endpoint(e.to_string()))?,
                );
            }
            let exporter = builder
                .build()
                .map_err(|e| TelemetryError::Endpoint(e.to_string()))?;
            let p = SdkTracerProvider::builder()
                .with_batch_exporter(exporter)
                .with_resource(
                    opentelemetry_sdk::Resource::builder()
                        .with_service_name(service_name.clone())
                        .build(),
                )
                .build();
            tracer = Some(p.tracer("vern"));
            provider = Some(p);
            TRACING.store(true, Ordering::Relaxed);
            let push = crate::metrics::export::OtlpPusher::new(url, &service_name)
                .map_err(|e| TelemetryError::Endpoint(e.to_string()))?;
            let every = Duration::from_secs(config.metrics_export_interval_seconds.max(1));
            tasks.push(tokio::spawn(push.clone().run(every)).abort_handle());
            pusher = Some(push);
        }
        let mut metrics_addr = None;
        if let Some(addr) = config.metrics_listen {
            let listener = tokio::net::TcpListener::bind(addr)
                .await
                .map_err(|e| TelemetryError::Bind(addr, e))?;
            let bound = listener
                .local_addr()
                .map_err(|e| TelemetryError::Bind(addr, e))?;
            let serve = match tls.filter(|_| config.metrics_tls) {
                Some(tls) => tokio::spawn(crate::metrics::export::serve_https(listener, tls)),
                None => tokio::spawn(crate::metrics::export::serve_http(listener)),
            };
            tasks.push(serve.abort_handle());
            metrics_addr = Some(bound);
        }
        tracing::info!(
            service_name,
            traces = tracer.is_some(),
            metrics_listen = %metrics_addr.map_or_else(|| "off".to_owned(), |a| a.to_string()),
            "telemetry on"
        );
        Ok(Self {
            inner: Some(Arc::new(Inner {
                tracer,
                provider,
                metrics_addr,
                pusher,
                tasks,
            })),
        })
    }

    /// Where `/metrics` is served, if it is.
    pub fn metrics_addr(&self) -> Option<SocketAddr> {
        self.inner.as_ref().and_then(|i| i.metrics_addr)
    }

    /// Whether spans are exported.
    pub fn traces(&self) -> bool {
        self.tracer().is_some()
    }

    pub(crate) fn tracer(&self) -> Option<&SdkTracer> {
        self.inner.as_ref().and_then(|i| i.tracer.as_ref())
    }

    /// The server layer of this component (composed by [`crate::server::serve`]);
    /// `None` when neither traces nor metrics are on.
    pub fn layer(&self) -> Option<TelemetryLayer> {
        self.inner
            .as_ref()
            .map(|i| TelemetryLayer::new(i.tracer.clone()))
    }

    /// Exports the spans ended so far and pushes the metrics once (e.g. before exit).
    pub async fn flush(&self) {
        let Some(inner) = &self.inner else { return };
        if let Some(p) = inner.provider.clone() {
            // Blocks until the export thread is done: keep it off the runtime threads.
            let _ = tokio::task::spawn_blocking(move || p.force_flush()).await;
        }
        if let Some(push) = &inner.pusher
            && let Err(s) = push.push().await
        {
            tracing::debug!(code = ?s.code(), "metrics export failed");
        }
    }
}

static PROPAGATOR: std::sync::LazyLock<TraceContextPropagator> =
    std::sync::LazyLock::new(TraceContextPropagator::new);

struct HeaderExtractor<'a>(&'a http::HeaderMap);

impl Extractor for HeaderExtractor<'_> {
    fn get(&self, key: &str) -> Option<&str> {
        self.0.get(key).and_then(|v| v.to_str().ok())
    }
    fn keys(&self) -> Vec<&str> {
        self.0.keys().map(|k| k.as_str()).collect()
    }
}

struct HeaderInjector<'a>(&'a mut http::HeaderMap);

impl Injector for HeaderInjector<'_> {
    fn set(&mut self, key: &str, value: String) {
        if let (Ok(k), Ok(v)) = (
            http::HeaderName::from_bytes(key.as_bytes()),
            http::HeaderValue::from_str(&value),
        ) {
            self.0.insert(k, v);
        }
    }
}

/// The remote parent a call's `traceparent`/`tracestate` metadata names, if any.
pub(crate) fn extract(headers: &http::HeaderMap) -> Context {
    PROPAGATOR.extract(&HeaderExtractor(headers))
}

/// Writes `cx`'s span as `traceparent` (and `tracestate`) into `headers`.
pub(crate) fn inject(cx: &Context, headers: &mut http::HeaderMap) {
    PROPAGATOR.inject_context(cx, &mut HeaderInjector(headers));
}

/// Puts the current call's trace context on an outgoing request's metadata, so the
/// callee's spans join the trace (done by [`crate::client::request`]). Nothing when the
/// current call is not traced.
pub fn inject_current(metadata: &mut tonic::metadata::MetadataMap) {
    if !TRACING.load(Ordering::Relaxed) {
        return;
    }
    Context::map_current(|cx| {
        if cx.span().span_context().is_valid() {
            let mut headers = http::HeaderMap::new();
            inject(cx, &mut headers);
            for (k, v) in headers.iter() {
                if let Ok(v) = tonic::metadata::MetadataValue::try_from(v.as_bytes()) {
                    metadata.insert(
                        tonic::metadata::MetadataKey::from_bytes(k.as_str().as_bytes())
                            .unwrap_or_else(|_| {
                                tonic::metadata::MetadataKey::from_static("traceparent")
                            }),
                        v,
                    );
                }
            }
        }
    });
}

/// A child span of the current call's span, started now, with the context holding it;
/// `None` when the current call is not traced.
pub(crate) fn child(
    name: &'static str,
    kind: SpanKind,
    attributes: Vec<KeyValue>,
) -> Option<Context> {
    if !TRACING.load(Ordering::Relaxed) {
        return None;
    }
    Context::map_current(|cx| {
        let active = cx.get::<Active>()?;
        let span = active
            .tracer
            .span_builder(name)
            .with_kind(kind)
            .with_attributes(attributes)
            .start_with_context(&active.tracer, cx);
        Some(cx.with_span(span))
    })
}

/// Runs `fut` inside a database span named `name` (e.g. a transaction), so the queries
/// it runs become its children. Just `fut` when the current call is not traced.
pub async fn db_span<F: std::future::Future>(name: &'static str, fut: F) -> F::Output {
    match child(
        name,
        SpanKind::Internal,
        vec![KeyValue::new("db.operation.name", name)],
    ) {
        None => fut.await,
        Some(cx) => {
            let out = fut.with_context(cx.clone()).await;
            cx.span().end();
            out
        }
    }
}

/// The database hook ([`crate::db::connect`] installs it): one client span per query of
/// a traced call, named by operation and table, without the statement's text or values.
pub(crate) fn db_query(info: &sea_orm::metric::Info<'_>) {
    if !TRACING.load(Ordering::Relaxed) {
        return;
    }
    Context::map_current(|cx| {
        let Some(active) = cx.get::<Active>() else {
            return;
        };
        if !cx.span().span_context().is_valid() {
            return;
        }
        let end = SystemTime::now();
        let start = end.checked_sub(info.elapsed).unwrap_or(end);
        let (operation, table) = sql_summary(&info.statement.sql);
        let system = match info.statement.db_backend {
            sea_orm::DbBackend::Postgres => "postgresql",
            sea_orm::DbBackend::Sqlite => "sqlite",
            _ => "other_sql",
        };
        let name = match table {
            Some(t) => format!("{operation} {t}"),
            None => operation.to_owned(),
        };
        let mut attributes = vec![
            KeyValue::new("db.system.name", system),
            KeyValue::new("db.operation.name", operation),
        ];
        if let Some(t) = table {
            attributes.push(KeyValue::new("db.collection.name", t.to_owned()));
        }
        let mut span = active
            .tracer
            .span_builder(name)
            .with_kind(SpanKind::Client)
            .with_start_time(start)
            .with_attributes(attributes)
            .start_with_context(&active.tracer, cx);
        if info.failed {
            span.set_status(Status::error(""));
        }
        span.end_with_timestamp(end);
    });
}

/// The operation keyword and the first table of a statement: `("SELECT",
/// Some("consents"))`. Only a known keyword and an identifier made of `[A-Za-z0-9_]`
/// are ever returned, so no literal of the statement can leak.
pub(crate) fn sql_summary(sql: &str) -> (&'static str, Option<&str>) {
    const OPS: [&str; 10] = [
        "SELECT",
        "INSERT",
        "UPDATE",
        "DELETE",
        "BEGIN",
        "COMMIT",
        "ROLLBACK",
        "SAVEPOINT",
        "WITH",
        "SET",
    ];
    let first = sql.split_whitespace().next().unwrap_or_default();
    let op = OPS
        .iter()
        .find(|o| first.eq_ignore_ascii_case(o))
        .copied()
        .unwrap_or("OTHER");
    let after = match op {
        "INSERT" => " INTO ",
        "UPDATE" => "UPDATE ",
        _ => " FROM ",
    };
    // sea-query quotes every identifier: only a quoted identifier counts.
    let table = sql.find(after).and_then(|i| {
        let rest = sql[i + after.len()..].trim_start().strip_prefix('"')?;
        let end = rest.find('"')?;
        let name = &rest[..end];
        (!name.is_empty()
            && name.len() <= 63
            && name.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_'))
        .then_some(name)
    });
    (op, table)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sql_summaries_name_operation_and_table_only() {
        assert_eq!(
            sql_summary(r#"SELECT "a"."x" FROM "consents" WHERE "a" = $1"#),
            ("SELECT", Some("consents"))
        );
        assert_eq!(
            sql_summary(r#"INSERT INTO "outbox" ("tenant_id") VALUES ($1)"#),
            ("INSERT", Some("outbox"))
        );
        assert_eq!(
            sql_summary(r#"UPDATE "subjects" SET "state" = $1"#),
            ("UPDATE", Some("subjects"))
        );
        assert_eq!(sql_summary("BEGIN"), ("BEGIN", None));
        // Literals never come out: only a keyword and an identifier.
        assert_eq!(sql_summary("SELECT 'a' FROM \"x y\""), ("SELECT", None));
        assert_eq!(
            sql_summary("SELECT ' FROM alice@example.com'"),
            ("SELECT", None)
        );
        assert_eq!(sql_summary("VACUUM 'secret'"), ("OTHER", None));
    }

    #[tokio::test]
    async fn outgoing_calls_carry_the_current_trace() {
        use tower::{Service as _, ServiceExt as _};
        TRACING.store(true, Ordering::Relaxed);
        let provider = SdkTracerProvider::builder().build();
        let tracer = provider.tracer("test");
        let span = tracer.start("server");
        let server_cx = Context::new().with_span(span).with_value(Active {
            tracer: tracer.clone(),
        });
        let trace_id = server_cx.span().span_context().trace_id().to_string();
        let server_span_id = server_cx.span().span_context().span_id().to_string();
        // kit::client::request: the current span is the callee's parent.
        let req = {
            let _g = server_cx.clone().attach();
            crate::client::request((), "t").expect("request")
        };
        let tp = req
            .metadata()
            .get("traceparent")
            .and_then(|v| v.to_str().ok())
            .expect("traceparent")
            .to_owned();
        assert_eq!(tp, format!("00-{trace_id}-{server_span_id}-01"));
        // Outside a traced call nothing is added.
        let req = crate::client::request((), "t").expect("request");
        assert!(req.metadata().get("traceparent").is_none());
        // Traced: a client span of its own, child of the current span.
        let seen = std::sync::Arc::new(std::sync::Mutex::new(None::<String>));
        let s2 = seen.clone();
        let mut svc = Traced::new(tower::service_fn(
            move |r: http::Request<tonic::body::Body>| {
                *s2.lock().expect("lock") = r
                    .headers()
                    .get("traceparent")
                    .and_then(|v| v.to_str().ok())
                    .map(str::to_owned);
                async { Ok::<_, std::convert::Infallible>(tonic::Status::ok("").into_http()) }
            },
        ));
        let call = http::Request::builder()
            .uri(crate::permissions::rpc_with(
                crate::auth::Permission::PurposesRead,
            ))
            .body(tonic::body::Body::empty())
            .expect("req");
        let fut = {
            let _g = server_cx.clone().attach();
            svc.ready().await.expect("ready").call(call)
        };
        fut.await.expect("call");
        let tp = seen
            .lock()
            .expect("lock")
            .clone()
            .expect("traceparent sent");
        assert!(tp.starts_with(&format!("00-{trace_id}-")), "{tp}");
        assert!(
            !tp.contains(&server_span_id),
            "a client span of its own: {tp}"
        );
    }

    #[test]
    fn trace_context_round_trips_through_headers() {
        let mut h = http::HeaderMap::new();
        h.insert(
            "traceparent",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"
                .parse()
                .expect("hdr"),
        );
        let cx = extract(&h);
        let sc = cx.span().span_context().clone();
        assert!(sc.is_valid() && sc.is_remote());
        assert_eq!(
            sc.trace_id().to_string(),
            "4bf92f3577b34da6a3ce929d0e0e4736"
        );
        let mut out = http::HeaderMap::new();
        inject(&cx, &mut out);
        assert_eq!(
            out.get("traceparent").and_then(|v| v.to_str().ok()),
            Some("00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01")
        );
        // Garbage is no parent.
        h.insert("traceparent", "garbage".parse().expect("hdr"));
        assert!(!extract(&h).span().span_context().is_valid());
    }
}
