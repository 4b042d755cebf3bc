//! The two ways out of the registry: a tiny HTTP/1.1 endpoint answering `GET /metrics`
//! with the Prometheus text format, and a periodic OTLP/gRPC push (cumulative
//! temporality) of the same numbers.

use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use opentelemetry_proto::tonic::collector::metrics::v1::ExportMetricsServiceRequest;
use opentelemetry_proto::tonic::collector::metrics::v1::metrics_service_client::MetricsServiceClient;
use opentelemetry_proto::tonic::common::v1::{AnyValue, InstrumentationScope, KeyValue, any_value};
use opentelemetry_proto::tonic::metrics::v1::{
    AggregationTemporality, Gauge, Histogram, HistogramDataPoint, Metric, NumberDataPoint,
    ResourceMetrics, ScopeMetrics, Sum, metric::Data, number_data_point,
};
use opentelemetry_proto::tonic::resource::v1::Resource;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpListener;
use tokio::sync::Semaphore;

use super::{DURATION_BUCKETS, render_prometheus, snapshot};

/// Scrapes answered at once; more wait for a permit.
const MAX_SCRAPES: usize = 8;

/// Answers `GET /metrics` on `listener` until the task is dropped. Anything else is 404;
/// requests are read up to 8 KiB and must arrive within 5 seconds.
pub async fn serve_http(listener: TcpListener) {
    serve(listener, None).await
}

/// Like [`serve_http`], over TLS with the component's certificate (read again when
/// it changes, as for its gRPC listener): `telemetry.metrics_tls`.
pub async fn serve_https(listener: TcpListener, tls: Arc<crate::tls::ServerTls>) {
    serve(listener, Some(tls)).await
}

async fn serve(listener: TcpListener, tls: Option<Arc<crate::tls::ServerTls>>) {
    let permits = Arc::new(Semaphore::new(MAX_SCRAPES));
    loop {
        let Ok((sock, _)) = listener.accept().await else {
            tokio::time::sleep(Duration::from_millis(50)).await;
            continue;
        };
        let Ok(permit) = permits.clone().acquire_owned().await else {
            return;
        };
        let tls = tls.clone();
        tokio::spawn(async move {
            let _ = tokio::time::timeout(Duration::from_secs(5), async move {
                match tls {
                    None => answer(sock).await,
                    Some(tls) => {
                        let stream = tokio_rustls::TlsAcceptor::from(tls.current_http1())
                            .accept(sock)
                            .await?;
                        answer(stream).await
                    }
                }
            })
            .await;
            drop(permit);
        });
    }
}

async fn answer<S>(mut sock: S) -> std::io::Result<()>
where
    S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin,
{
    let mut buf = Vec::with_capacity(1024);
    let mut chunk = [0u8; 1024];
    while !buf.windows(4).any(|w| w == b"\r\n\r\n") {
        let n = sock.read(&mut chunk).await?;
        if n == 0 || buf.len() + n > 8192 {
            return Ok(());
        }
        buf.extend_from_slice(&chunk[..n]);
    }
    let line = buf.split(|b| *b == b'\n').next().unwrap_or_default();
    let mut parts = line.split(|b| *b == b' ');
    let (method, target) = (parts.next(), parts.next().unwrap_or_default());
    let path = target.split(|b| *b == b'?').next().unwrap_or_default();
    let (status, kind, body) = match (method, path) {
        (Some(b"GET"), b"/metrics") => (
            "200 OK",
            "text/plain; version=0.0.4; charset=utf-8",
            render_prometheus(),
        ),
        _ => ("404 Not Found", "text/plain", "not found\n".to_owned()),
    };
    let head = format!(
        "HTTP/1.1 {status}\r\ncontent-type: {kind}\r\ncontent-length: {}\r\nconnection: close\r\n\r\n",
        body.len()
    );
    sock.write_all(head.as_bytes()).await?;
    sock.write_all(body.as_bytes()).await?;
    sock.shutdown().await
}

/// Pushes the registry to an OTLP/gRPC collector.
#[derive(Debug, Clone)]
pub struct OtlpPusher {
    client: MetricsServiceClient<crate::client::ServiceChannel>,
    resource: Resource,
    start_nanos: u64,
}

fn kv(key: &str, value: &str) -> KeyValue {
    KeyValue {
        key: key.to_owned(),
        value: Some(AnyValue {
            value: Some(any_value::Value::StringValue(value.to_owned())),
        }),
        ..Default::default()
    }
}

fn unix_nanos(t: SystemTime) -> u64 {
    t.duration_since(UNIX_EPOCH)
        .map(|d| u64::try_from(d.as_nanos()).unwrap_or(u64::MAX))
        .unwrap_or_default()
}

impl OtlpPusher {
    /// A pusher to `endpoint` reporting as `service_name`. Needs a tokio runtime.
    pub fn new(endpoint: &str, service_name: &str) -> Result<Self, tonic::transport::Error> {
        Ok(Self {
            client: MetricsServiceClient::new(crate::client::channel(endpoint)?),
            resource: Resource {
                attributes: vec![kv("service.name", service_name)],
                ..Default::default()
            },
            start_nanos: unix_nanos(SystemTime::now()),
        })
    }

    /// Sends the registry once.
    pub async fn push(&self) -> Result<(), tonic::Status> {
        let req = self.request(SystemTime::now());
        self.client.clone().export(req).await.map(|_| ())
    }

    /// Pushes every `interval` until the task is dropped; failures are logged (code only).
    pub async fn run(self, interval: Duration) {
        let mut tick = tokio::time::interval(interval);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        tick.tick().await;
        loop {
            tick.tick().await;
            if let Err(s) = self.push().await {
                tracing::debug!(code = ?s.code(), "metrics export failed");
            }
        }
    }

    /// The registry as one OTLP request. Names are chosen so a Prometheus backend
    /// receiving OTLP derives the same names as `/metrics` (`_total`, `_seconds`).
    pub fn request(&self, now: SystemTime) -> ExportMetricsServiceRequest {
        let s = snapshot();
        let (start, now) = (self.start_nanos, unix_nanos(now));
        let int_point = |attrs: Vec<KeyValue>, v: i64| NumberDataPoint {
            attributes: attrs,
            start_time_unix_nano: start,
            time_unix_nano: now,
            value: Some(number_data_point::Value::AsInt(v)),
            ..Default::default()
        };
        let to_i64 = |n: u64| i64::try_from(n).unwrap_or(i64::MAX);
        let sum =
            |name: &str, unit: &str, description: &str, points: Vec<NumberDataPoint>| Metric {
                name: name.into(),
                unit: unit.into(),
                description: description.into(),
                data: Some(Data::Sum(Sum {
                    data_points: points,
                    aggregation_temporality: AggregationTemporality::Cumulative as i32,
                    is_monotonic: true,
                })),
                ..Default::default()
            };
        let gauge = |name: &str, description: &str, points: Vec<NumberDataPoint>| Metric {
            name: name.into(),
            description: description.into(),
            data: Some(Data::Gauge(Gauge {
                data_points: points,
            })),
            ..Default::default()
        };
        let mut metrics = vec![
            sum(
                "vern_rpc_requests",
                "{call}",
                "gRPC calls served, by service, method and status code.",
                s.rpc_counts
                    .iter()
                    .map(|(svc, m, code, n)| {
                        int_point(
                            vec![kv("service", svc), kv("method", m), kv("code", code)],
                            to_i64(*n),
                        )
                    })
                    .collect(),
            ),
            Metric {
                name: "vern_rpc_duration".into(),
                unit: "s".into(),
                description: "Time from a call's arrival to its last response byte.".into(),
                data: Some(Data::Histogram(Histogram {
                    data_points: s
                        .rpc_durations
                        .iter()
                        .map(|(svc, m, buckets, total, count)| HistogramDataPoint {
                            attributes: vec![kv("service", svc), kv("method", m)],
                            start_time_unix_nano: start,
                            time_unix_nano: now,
                            count: *count,
                            sum: Some(*total),
                            bucket_counts: buckets.clone(),
                            explicit_bounds: DURATION_BUCKETS.to_vec(),
                            ..Default::default()
                        })
                        .collect(),
                    aggregation_temporality: AggregationTemporality::Cumulative as i32,
                })),
                ..Default::default()
            },
            sum(
                "vern_consent_checks",
                "{decision}",
                "Consent decisions of Check and BatchCheck, by decision and reason.",
                s.consent_checks
                    .iter()
                    .map(|(d, r, n)| {
                        int_point(vec![kv("decision", d), kv("reason", r)], to_i64(*n))
                    })
                    .collect(),
            ),
            sum(
                "vern_auth_denials",
                "{call}",
                "Calls refused by token verification or the permission check, by reason.",
                s.auth_denials
                    .iter()
                    .map(|(r, n)| int_point(vec![kv("reason", r)], to_i64(*n)))
                    .collect(),
            ),
        ];
        if !s.rights.is_empty() {
            metrics.push(gauge(
                "vern_rights_requests",
                "Rights requests by status.",
                s.rights
                    .iter()
                    .map(|(st, n)| int_point(vec![kv("status", st)], *n))
                    .collect(),
            ));
        }
        if let Some(n) = s.rights_overdue {
            metrics.push(gauge(
                "vern_rights_requests_overdue",
                "Open rights requests past their deadline.",
                vec![int_point(vec![], n)],
            ));
        }
        if !s.outbox.is_empty() {
            metrics.push(gauge(
                "vern_outbox_backlog",
                "Notifications waiting in a service's outbox, by topic.",
                s.outbox
                    .iter()
                    .map(|(svc, t, n)| int_point(vec![kv("service", svc), kv("topic", t)], *n))
                    .collect(),
            ));
        }
        if !s.outbox_parked.is_empty() {
            metrics.push(gauge(
                "vern_outbox_parked",
                "Outbox notifications refused by their receiver and parked, by topic.",
                s.outbox_parked
                    .iter()
                    .map(|(svc, t, n)| int_point(vec![kv("service", svc), kv("topic", t)], *n))
                    .collect(),
            ));
        }
        if let Some(n) = s.audit_chain_length {
            metrics.push(gauge(
                "vern_audit_chain_length",
                "Events in the audit hash chains of all tenants.",
                vec![int_point(vec![], n)],
            ));
        }
        if let Some(n) = s.audit_duplicates {
            metrics.push(sum(
                "vern_audit_duplicate_events",
                "{event}",
                "Events offered to the audit chain that it already held (outbox redeliveries).",
                vec![int_point(vec![], n)],
            ));
        }
        ExportMetricsServiceRequest {
            resource_metrics: vec![ResourceMetrics {
                resource: Some(self.resource.clone()),
                scope_metrics: vec![ScopeMetrics {
                    scope: Some(InstrumentationScope {
                        name: "vern".into(),
                        version: env!("CARGO_PKG_VERSION").into(),
                        ..Default::default()
                    }),
                    metrics,
                    ..Default::default()
                }],
                ..Default::default()
            }],
        }
    }
}
