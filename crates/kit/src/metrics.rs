//! vern's metrics: a fixed registry of atomics, read out as Prometheus text on
//! `GET /metrics` ([`export::serve_http`]) and pushed over OTLP ([`export::OtlpPusher`]).
//!
//! Recording is lock-free and allocation-free on the request path: every label set is
//! known up front (the RPC table comes from the compiled protos; decisions, reasons and
//! statuses are closed enums), so a call is a hash lookup of its path and a few atomic
//! adds. Labels never carry personal data or caller-supplied text: an unknown gRPC path
//! is counted as `unknown`, an unknown reason as `other`.
//!
//! Nothing is recorded until telemetry is started with a metrics sink ([`enabled`]).

pub mod export;

use std::collections::{BTreeMap, HashMap};
use std::sync::atomic::{AtomicBool, AtomicI64, AtomicU64, Ordering::Relaxed};
use std::sync::{LazyLock, Mutex};
use std::time::Duration;

use crate::verify::TokenError;

static ENABLED: AtomicBool = AtomicBool::new(false);

/// Whether metrics are recorded (a metrics endpoint or an OTLP collector is configured).
pub fn enabled() -> bool {
    ENABLED.load(Relaxed)
}

/// Turns recording on (done by [`crate::telemetry::Telemetry::start`]).
pub(crate) fn enable() {
    ENABLED.store(true, Relaxed);
}

/// Upper bounds of the RPC duration histogram, seconds.
pub const DURATION_BUCKETS: [f64; 14] = [
    0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0,
];

/// gRPC status codes 0..=16 by name, as used in the `code` label.
pub const CODE_NAMES: [&str; 17] = [
    "OK",
    "CANCELLED",
    "UNKNOWN",
    "INVALID_ARGUMENT",
    "DEADLINE_EXCEEDED",
    "NOT_FOUND",
    "ALREADY_EXISTS",
    "PERMISSION_DENIED",
    "RESOURCE_EXHAUSTED",
    "FAILED_PRECONDITION",
    "ABORTED",
    "OUT_OF_RANGE",
    "UNIMPLEMENTED",
    "INTERNAL",
    "UNAVAILABLE",
    "DATA_LOSS",
    "UNAUTHENTICATED",
];

/// One known RPC: its names and its counters.
#[derive(Debug)]
pub struct Method {
    /// Full gRPC service name, e.g. `vern.consents.v1.ConsentService` (`unknown` for
    /// paths not in the table).
    pub service: &'static str,
    /// Method name, e.g. `Check`.
    pub method: &'static str,
    /// `service/method`, the span name.
    pub span_name: &'static str,
    /// Health and reflection: counted, not traced.
    pub infrastructure: bool,
    codes: [AtomicU64; 17],
    buckets: [AtomicU64; DURATION_BUCKETS.len() + 1],
    sum_nanos: AtomicU64,
    count: AtomicU64,
}

impl Method {
    fn new(service: &'static str, method: &'static str, span_name: &'static str) -> Self {
        Self {
            service,
            method,
            span_name,
            infrastructure: service.starts_with("grpc."),
            codes: Default::default(),
            buckets: Default::default(),
            sum_nanos: AtomicU64::new(0),
            count: AtomicU64::new(0),
        }
    }

    /// Counts one finished call with gRPC status `code` that took `elapsed`.
    pub fn record(&self, code: i32, elapsed: Duration) {
        let code = usize::try_from(code).ok().filter(|c| *c < 17).unwrap_or(2);
        self.codes[code].fetch_add(1, Relaxed);
        let secs = elapsed.as_secs_f64();
        let bucket = DURATION_BUCKETS
            .iter()
            .position(|b| secs <= *b)
            .unwrap_or(DURATION_BUCKETS.len());
        self.buckets[bucket].fetch_add(1, Relaxed);
        self.sum_nanos.fetch_add(
            u64::try_from(elapsed.as_nanos()).unwrap_or(u64::MAX),
            Relaxed,
        );
        self.count.fetch_add(1, Relaxed);
    }
}

/// Reasons an auth denial is counted under (`vern_auth_denials_total{reason}`).
pub const AUTH_REASONS: [&str; 20] = [
    "missing_token",
    "malformed_token",
    "bad_signature",
    "wrong_algorithm",
    "unknown_key",
    "expired",
    "not_yet_valid",
    "wrong_issuer",
    "wrong_audience",
    "missing_claim",
    "no_key",
    "unknown_method",
    "role",
    "tenant",
    "invalid_claim",
    "lifetime_too_long",
    "service_role",
    "unknown_tenant",
    "suspended_tenant",
    "other",
];

/// Statuses of rights requests (`vern_rights_requests{status}`), the proto
/// `RequestStatus` names in lower case.
pub const RIGHTS_STATUSES: [&str; 6] = [
    "received",
    "verified",
    "in_progress",
    "completed",
    "rejected",
    "other",
];

/// Consent check reasons are the proto `CheckReason` values below this bound.
const CHECK_REASONS: usize = 32;
const UNSET: i64 = i64::MIN;

struct Registry {
    methods: Vec<Method>,
    by_path: HashMap<&'static str, usize>,
    consent: [[AtomicU64; CHECK_REASONS]; 2],
    auth: [AtomicU64; AUTH_REASONS.len()],
    rights: [AtomicI64; RIGHTS_STATUSES.len()],
    rights_overdue: AtomicI64,
    audit_chain_length: AtomicI64,
    audit_duplicates: AtomicI64,
    outbox: Mutex<BTreeMap<(&'static str, String), i64>>,
    outbox_parked: Mutex<BTreeMap<(&'static str, String), i64>>,
}

fn leak(s: String) -> &'static str {
    Box::leak(s.into_boxed_str())
}

static REGISTRY: LazyLock<Registry> = LazyLock::new(|| {
    let mut methods = vec![];
    let mut by_path = HashMap::new();
    let mut add = |service: &str, method: &str| {
        let path = leak(format!("/{service}/{method}"));
        let span_name = &path[1..];
        let service = &span_name[..service.len()];
        let method = &span_name[service.len() + 1..];
        by_path.insert(path, methods.len());
        methods.push(Method::new(service, method, span_name));
    };
    for (service, method) in vern_rpcs() {
        add(&service, &method);
    }
    add("grpc.health.v1.Health", "Check");
    add("grpc.health.v1.Health", "Watch");
    add(
        "grpc.reflection.v1.ServerReflection",
        "ServerReflectionInfo",
    );
    add(
        "grpc.reflection.v1alpha.ServerReflection",
        "ServerReflectionInfo",
    );
    methods.push(Method::new("unknown", "unknown", "unknown"));
    Registry {
        methods,
        by_path,
        consent: Default::default(),
        auth: Default::default(),
        rights: std::array::from_fn(|_| AtomicI64::new(UNSET)),
        rights_overdue: AtomicI64::new(UNSET),
        audit_chain_length: AtomicI64::new(UNSET),
        audit_duplicates: AtomicI64::new(UNSET),
        outbox: Mutex::new(BTreeMap::new()),
        outbox_parked: Mutex::new(BTreeMap::new()),
    }
});

/// Every (service, method) of the vern protos.
fn vern_rpcs() -> Vec<(String, String)> {
    vern_proto::rpcs::all()
        .unwrap_or_default()
        .into_iter()
        .map(|r| (r.service, r.method))
        .collect()
}

/// The RPC of a gRPC `path`; the `unknown` entry for paths not in the table.
pub fn method(path: &str) -> &'static Method {
    let r = &*REGISTRY;
    let i = r.by_path.get(path).copied().unwrap_or(r.methods.len() - 1);
    &r.methods[i]
}

/// Counts one consent decision of Check or BatchCheck; `reason` is the proto
/// `CheckReason` value.
pub fn consent_check(allowed: bool, reason: i32) {
    if !enabled() {
        return;
    }
    let reason = usize::try_from(reason)
        .ok()
        .filter(|r| *r < CHECK_REASONS)
        .unwrap_or(0);
    REGISTRY.consent[usize::from(allowed)][reason].fetch_add(1, Relaxed);
}

/// Counts a call the auth layer refused; `reason` is one of [`AUTH_REASONS`] (anything
/// else counts as `other`).
pub fn auth_denied(reason: &str) {
    if !enabled() {
        return;
    }
    let i = AUTH_REASONS
        .iter()
        .position(|r| *r == reason)
        .unwrap_or(AUTH_REASONS.len() - 1);
    REGISTRY.auth[i].fetch_add(1, Relaxed);
}

/// The `reason` label of a refused token.
pub fn token_reason(e: &TokenError) -> &'static str {
    match e {
        TokenError::Missing => "missing_token",
        TokenError::Malformed => "malformed_token",
        TokenError::BadSignature => "bad_signature",
        TokenError::WrongAlgorithm => "wrong_algorithm",
        TokenError::UnknownKey => "unknown_key",
        TokenError::Expired => "expired",
        TokenError::NotYetValid => "not_yet_valid",
        TokenError::WrongIssuer => "wrong_issuer",
        TokenError::WrongAudience => "wrong_audience",
        TokenError::MissingClaim => "missing_claim",
        TokenError::NoKey => "no_key",
        TokenError::InvalidClaim(_) => "invalid_claim",
        TokenError::LifetimeTooLong => "lifetime_too_long",
    }
}

/// Sets how many rights requests are in `status` now (a proto `RequestStatus` name,
/// with or without its `REQUEST_STATUS_` prefix, in any case; anything else is
/// `other`). Called by the rights service after it counts them.
pub fn set_rights_requests(status: &str, n: i64) {
    let status = status.trim_start_matches("REQUEST_STATUS_");
    let i = RIGHTS_STATUSES
        .iter()
        .position(|s| s.eq_ignore_ascii_case(status))
        .unwrap_or(RIGHTS_STATUSES.len() - 1);
    REGISTRY.rights[i].store(n, Relaxed);
}

/// Sets how many open rights requests are past their deadline now.
pub fn set_rights_requests_overdue(n: i64) {
    REGISTRY.rights_overdue.store(n, Relaxed);
}

/// Sets the number of events in the audit chains (all tenants) of this process.
pub fn set_audit_chain_length(n: i64) {
    REGISTRY.audit_chain_length.store(n, Relaxed);
}

/// Counts events offered to the audit chain again (already chained: a redelivery).
/// `add_audit_duplicates(0)` makes the counter appear.
pub fn add_audit_duplicates(n: u64) {
    let _ = REGISTRY
        .audit_duplicates
        .compare_exchange(UNSET, 0, Relaxed, Relaxed);
    REGISTRY
        .audit_duplicates
        .fetch_add(i64::try_from(n).unwrap_or(i64::MAX), Relaxed);
}

/// Sets the outbox backlog of `service` for `topic` (topics are code constants; a
/// malformed one is reported as `other`).
pub fn set_outbox_backlog(service: &'static str, topic: &str, n: i64) {
    set_outbox(&REGISTRY.outbox, service, topic, n);
}

/// Sets the number of parked outbox rows (refused by their receiver) of `service` for
/// `topic`.
pub fn set_outbox_parked(service: &'static str, topic: &str, n: i64) {
    set_outbox(&REGISTRY.outbox_parked, service, topic, n);
}

fn set_outbox(
    gauge: &Mutex<BTreeMap<(&'static str, String), i64>>,
    service: &'static str,
    topic: &str,
    n: i64,
) {
    let topic = if !topic.is_empty()
        && topic.len() <= 40
        && topic
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_')
    {
        topic
    } else {
        "other"
    };
    if let Ok(mut m) = gauge.lock() {
        m.insert((service, topic.to_owned()), n);
    }
}

/// Every `interval` while metrics are enabled, counts `service`'s outbox rows per topic
/// and sets `vern_outbox_backlog`. Needs a tokio runtime; does nothing without one.
pub fn watch_outbox(service: &'static str, db: crate::db::Db, interval: Duration) {
    let Ok(rt) = tokio::runtime::Handle::try_current() else {
        return;
    };
    rt.spawn(async move {
        let mut seen: Vec<String> = vec![];
        // A first look soon after start (telemetry starts after the services).
        let mut pause = interval.min(Duration::from_secs(1));
        loop {
            tokio::time::sleep(pause).await;
            pause = interval;
            if !enabled() {
                continue;
            }
            match outbox_counts(&db).await {
                Ok(counts) => {
                    // Topics that drained since the last look read 0, not their old value.
                    for t in &seen {
                        for parked in [false, true] {
                            if !counts.iter().any(|(c, p, _)| c == t && *p == parked) {
                                set(service, t, parked, 0);
                            }
                        }
                    }
                    for (t, parked, n) in &counts {
                        set(service, t, *parked, *n);
                        if !seen.contains(t) {
                            seen.push(t.clone());
                        }
                    }
                }
                Err(e) => {
                    tracing::debug!(service, kind = ?crate::db::classify(&e), "outbox backlog not read")
                }
            }
        }
    });
}

fn set(service: &'static str, topic: &str, parked: bool, n: i64) {
    if parked {
        set_outbox_parked(service, topic, n);
    } else {
        set_outbox_backlog(service, topic, n);
    }
}

/// Rows per topic, waiting (`false`) and parked (`true`).
async fn outbox_counts(db: &crate::db::Db) -> Result<Vec<(String, bool, i64)>, sea_orm::DbErr> {
    use sea_orm::{ConnectionTrait, Statement};
    let rows = db
        .query_all_raw(Statement::from_string(
            db.get_database_backend(),
            "SELECT topic, CAST(CASE WHEN parked_at IS NULL THEN 0 ELSE 1 END AS BIGINT) AS parked, \
             CAST(COUNT(*) AS BIGINT) AS n FROM outbox GROUP BY topic, parked_at IS NULL",
        ))
        .await?;
    rows.iter()
        .map(|r| {
            Ok((
                r.try_get::<String>("", "topic")?,
                r.try_get::<i64>("", "parked")? == 1,
                r.try_get::<i64>("", "n")?,
            ))
        })
        .collect()
}

/// Every `interval` while metrics are enabled, runs `read` and hands its value to `set`
/// (e.g. the audit chain length). Needs a tokio runtime; does nothing without one.
pub fn poll_gauge<F, Fut>(interval: Duration, read: F, set: fn(i64))
where
    F: Fn() -> Fut + Send + 'static,
    Fut: std::future::Future<Output = Option<i64>> + Send,
{
    let Ok(rt) = tokio::runtime::Handle::try_current() else {
        return;
    };
    rt.spawn(async move {
        let mut pause = interval.min(Duration::from_secs(1));
        loop {
            tokio::time::sleep(pause).await;
            pause = interval;
            if enabled()
                && let Some(n) = read().await
            {
                set(n);
            }
        }
    });
}

/// [`poll_gauge`] of a query returning one integer column `n`, e.g. the audit chain
/// length: `SELECT CAST(COALESCE(SUM(seq), 0) AS BIGINT) AS n FROM chain_heads`.
pub fn poll_sql_gauge(db: crate::db::Db, sql: &'static str, interval: Duration, set: fn(i64)) {
    poll_gauge(
        interval,
        move || {
            let db = db.clone();
            async move {
                use sea_orm::{ConnectionTrait, Statement};
                let row = db
                    .query_one_raw(Statement::from_string(db.get_database_backend(), sql))
                    .await
                    .ok()??;
                row.try_get::<i64>("", "n").ok()
            }
        },
        set,
    );
}

/// A point-in-time copy of the registry, for the exporters.
#[derive(Debug, Default)]
pub(crate) struct Snapshot {
    /// (service, method, code, count) for every non-zero count.
    pub rpc_counts: Vec<(&'static str, &'static str, &'static str, u64)>,
    /// (service, method, per-bucket counts (not cumulative, last = +Inf), sum s, count).
    pub rpc_durations: Vec<(&'static str, &'static str, Vec<u64>, f64, u64)>,
    /// (decision, reason, count) for every non-zero count.
    pub consent_checks: Vec<(&'static str, String, u64)>,
    /// (reason, count) for every non-zero count.
    pub auth_denials: Vec<(&'static str, u64)>,
    /// (status, n) for every status the rights service reported.
    pub rights: Vec<(&'static str, i64)>,
    pub rights_overdue: Option<i64>,
    pub audit_chain_length: Option<i64>,
    /// Events offered to the audit chain again.
    pub audit_duplicates: Option<i64>,
    /// (service, topic, n).
    pub outbox: Vec<(&'static str, String, i64)>,
    /// Parked outbox rows by service and topic.
    pub outbox_parked: Vec<(&'static str, String, i64)>,
}

fn check_reason_name(i: usize) -> String {
    i32::try_from(i)
        .ok()
        .and_then(|i| vern_proto::consents::v1::CheckReason::try_from(i).ok())
        .map(|r| {
            r.as_str_name()
                .trim_start_matches("CHECK_REASON_")
                .to_ascii_lowercase()
        })
        .unwrap_or_else(|| "unspecified".into())
}

pub(crate) fn snapshot() -> Snapshot {
    let r = &*REGISTRY;
    let mut s = Snapshot::default();
    for m in &r.methods {
        for (code, c) in m.codes.iter().enumerate() {
            let n = c.load(Relaxed);
            if n > 0 {
                s.rpc_counts
                    .push((m.service, m.method, CODE_NAMES[code], n));
            }
        }
        let count = m.count.load(Relaxed);
        if count > 0 {
            s.rpc_durations.push((
                m.service,
                m.method,
                m.buckets.iter().map(|b| b.load(Relaxed)).collect(),
                m.sum_nanos.load(Relaxed) as f64 / 1e9,
                count,
            ));
        }
    }
    for (allowed, reasons) in r.consent.iter().enumerate() {
        for (i, c) in reasons.iter().enumerate() {
            let n = c.load(Relaxed);
            if n > 0 {
                let decision = if allowed == 1 { "allow" } else { "deny" };
                s.consent_checks.push((decision, check_reason_name(i), n));
            }
        }
    }
    for (i, c) in r.auth.iter().enumerate() {
        let n = c.load(Relaxed);
        if n > 0 {
            s.auth_denials.push((AUTH_REASONS[i], n));
        }
    }
    for (i, g) in r.rights.iter().enumerate() {
        let n = g.load(Relaxed);
        if n != UNSET {
            s.rights.push((RIGHTS_STATUSES[i], n));
        }
    }
    s.rights_overdue = Some(r.rights_overdue.load(Relaxed)).filter(|n| *n != UNSET);
    s.audit_chain_length = Some(r.audit_chain_length.load(Relaxed)).filter(|n| *n != UNSET);
    s.audit_duplicates = Some(r.audit_duplicates.load(Relaxed)).filter(|n| *n != UNSET);
    if let Ok(m) = r.outbox.lock() {
        s.outbox = m
            .iter()
            .map(|((svc, topic), n)| (*svc, topic.clone(), *n))
            .collect();
    }
    if let Ok(m) = r.outbox_parked.lock() {
        s.outbox_parked = m
            .iter()
            .map(|((svc, topic), n)| (*svc, topic.clone(), *n))
            .collect();
    }
    s
}

/// Connections closed because they did not speak in time (since start).
static SILENT_CONNECTIONS: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
/// Failed accepts (out of file descriptors and the like) since start.
static ACCEPT_FAILURES: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);

/// Counts a connection closed before it spoke ([`crate::listen`]).
pub fn connection_silent() {
    SILENT_CONNECTIONS.fetch_add(1, Relaxed);
}

/// Counts a streak of failed accepts ([`crate::listen`]).
pub fn accept_failed() {
    ACCEPT_FAILURES.fetch_add(1, Relaxed);
}

/// The registry in the Prometheus text exposition format (version 0.0.4).
pub fn render_prometheus() -> String {
    use std::fmt::Write;
    let s = snapshot();
    let mut out = String::with_capacity(4096);
    let head = |out: &mut String, name: &str, kind: &str, help: &str| {
        let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} {kind}");
    };
    head(
        &mut out,
        "vern_rpc_requests_total",
        "counter",
        "gRPC calls served, by service, method and status code.",
    );
    for (svc, m, code, n) in &s.rpc_counts {
        let _ = writeln!(
            out,
            "vern_rpc_requests_total{{service=\"{svc}\",method=\"{m}\",code=\"{code}\"}} {n}"
        );
    }
    head(
        &mut out,
        "vern_rpc_duration_seconds",
        "histogram",
        "Time from a call's arrival to its last response byte, seconds.",
    );
    for (svc, m, buckets, sum, count) in &s.rpc_durations {
        let mut cumulative = 0;
        for (i, b) in buckets.iter().enumerate() {
            cumulative += b;
            let le = DURATION_BUCKETS
                .get(i)
                .map_or_else(|| "+Inf".to_owned(), |b| b.to_string());
            let _ = writeln!(
                out,
                "vern_rpc_duration_seconds_bucket{{service=\"{svc}\",method=\"{m}\",le=\"{le}\"}} {cumulative}"
            );
        }
        let _ = writeln!(
            out,
            "vern_rpc_duration_seconds_sum{{service=\"{svc}\",method=\"{m}\"}} {sum}\nvern_rpc_duration_seconds_count{{service=\"{svc}\",method=\"{m}\"}} {count}"
        );
    }
    head(
        &mut out,
        "vern_consent_checks_total",
        "counter",
        "Consent decisions of Check and BatchCheck, by decision and reason.",
    );
    for (d, reason, n) in &s.consent_checks {
        let _ = writeln!(
            out,
            "vern_consent_checks_total{{decision=\"{d}\",reason=\"{reason}\"}} {n}"
        );
    }
    head(
        &mut out,
        "vern_auth_denials_total",
        "counter",
        "Calls refused by token verification or the permission check, by reason.",
    );
    for (reason, n) in &s.auth_denials {
        let _ = writeln!(out, "vern_auth_denials_total{{reason=\"{reason}\"}} {n}");
    }
    head(
        &mut out,
        "vern_audit_denials_dropped_total",
        "counter",
        "Audit events of denied calls dropped because the queue to the audit service was full.",
    );
    let _ = writeln!(
        out,
        "vern_audit_denials_dropped_total {}",
        crate::audit::DROPPED_DENIALS.load(Relaxed)
    );
    head(
        &mut out,
        "vern_connections_silent_total",
        "counter",
        "Connections closed because their TLS handshake or HTTP/2 preface did not arrive in time.",
    );
    let _ = writeln!(
        out,
        "vern_connections_silent_total {}",
        SILENT_CONNECTIONS.load(Relaxed)
    );
    head(
        &mut out,
        "vern_accept_failures_total",
        "counter",
        "Times the accept loop backed off (out of file descriptors and the like).",
    );
    let _ = writeln!(
        out,
        "vern_accept_failures_total {}",
        ACCEPT_FAILURES.load(Relaxed)
    );
    head(
        &mut out,
        "vern_streams_ended_total",
        "counter",
        "Server streams the server ended, by reason: access (token, role or tenant) or lifetime.",
    );
    for (reason, n) in [
        ("access", &crate::streams::STREAMS_ENDED_BY_ACCESS),
        ("lifetime", &crate::streams::STREAMS_ENDED_BY_LIFETIME),
    ] {
        let _ = writeln!(
            out,
            "vern_streams_ended_total{{reason=\"{reason}\"}} {}",
            n.load(Relaxed)
        );
    }
    head(
        &mut out,
        "vern_streams_refused_total",
        "counter",
        "Server streams refused by a stream budget (server.max_streams, server.max_streams_per_client).",
    );
    let _ = writeln!(
        out,
        "vern_streams_refused_total {}",
        crate::streams::STREAMS_REFUSED.load(Relaxed)
    );
    if !s.rights.is_empty() {
        head(
            &mut out,
            "vern_rights_requests",
            "gauge",
            "Rights requests by status.",
        );
        for (status, n) in &s.rights {
            let _ = writeln!(out, "vern_rights_requests{{status=\"{status}\"}} {n}");
        }
    }
    if let Some(n) = s.rights_overdue {
        head(
            &mut out,
            "vern_rights_requests_overdue",
            "gauge",
            "Open rights requests past their deadline.",
        );
        let _ = writeln!(out, "vern_rights_requests_overdue {n}");
    }
    if !s.outbox.is_empty() {
        head(
            &mut out,
            "vern_outbox_backlog",
            "gauge",
            "Notifications waiting in a service's outbox, by topic.",
        );
        for (svc, topic, n) in &s.outbox {
            let _ = writeln!(
                out,
                "vern_outbox_backlog{{service=\"{svc}\",topic=\"{topic}\"}} {n}"
            );
        }
    }
    if !s.outbox_parked.is_empty() {
        head(
            &mut out,
            "vern_outbox_parked",
            "gauge",
            "Outbox notifications refused by their receiver and parked, by topic.",
        );
        for (svc, topic, n) in &s.outbox_parked {
            let _ = writeln!(
                out,
                "vern_outbox_parked{{service=\"{svc}\",topic=\"{topic}\"}} {n}"
            );
        }
    }
    if let Some(n) = s.audit_chain_length {
        head(
            &mut out,
            "vern_audit_chain_length",
            "gauge",
            "Events in the audit hash chains of all tenants.",
        );
        let _ = writeln!(out, "vern_audit_chain_length {n}");
    }
    if let Some(n) = s.audit_duplicates {
        head(
            &mut out,
            "vern_audit_duplicate_events_total",
            "counter",
            "Events offered to the audit chain that it already held (outbox redeliveries).",
        );
        let _ = writeln!(out, "vern_audit_duplicate_events_total {n}");
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn known_and_unknown_paths() {
        let path = crate::permissions::rpc_with(crate::auth::Permission::ConsentsCheck);
        let (service, name) = path[1..].split_once('/').expect("a gRPC path");
        let m = method(&path);
        assert_eq!(m.service, service);
        assert_eq!(m.method, name);
        assert_eq!(m.span_name, &path[1..]);
        assert!(!m.infrastructure);
        assert!(method("/grpc.health.v1.Health/Check").infrastructure);
        let u = method(&format!("/{service}/alice@example.com"));
        assert_eq!((u.service, u.method), ("unknown", "unknown"));
        assert_eq!(method("not a path").method, "unknown");
    }

    #[test]
    fn histogram_buckets_and_prometheus_text() {
        enable();
        let path = crate::permissions::rpc_with(crate::auth::Permission::PurposesRead);
        let (service, name) = path[1..].split_once('/').expect("a gRPC path");
        let m = method(&path);
        m.record(0, Duration::from_micros(300));
        m.record(0, Duration::from_millis(3));
        m.record(5, Duration::from_secs(60));
        consent_check(true, 1);
        consent_check(false, 9);
        auth_denied("role");
        auth_denied("made up");
        set_rights_requests("REQUEST_STATUS_IN_PROGRESS", 4);
        set_rights_requests("anything", 1);
        set_outbox_backlog("subjects", "subject_state", 3);
        set_outbox_backlog("subjects", "Alice Smith", 1);
        let text = render_prometheus();
        let svc = format!("service=\"{service}\",method=\"{name}\"");
        assert!(text.contains(&format!("vern_rpc_requests_total{{{svc},code=\"OK\"}} 2")));
        assert!(text.contains(&format!(
            "vern_rpc_requests_total{{{svc},code=\"NOT_FOUND\"}} 1"
        )));
        assert!(text.contains(&format!(
            "vern_rpc_duration_seconds_bucket{{{svc},le=\"0.0005\"}} 1"
        )));
        assert!(text.contains(&format!(
            "vern_rpc_duration_seconds_bucket{{{svc},le=\"0.005\"}} 2"
        )));
        assert!(text.contains(&format!(
            "vern_rpc_duration_seconds_bucket{{{svc},le=\"10\"}} 2"
        )));
        assert!(text.contains(&format!(
            "vern_rpc_duration_seconds_bucket{{{svc},le=\"+Inf\"}} 3"
        )));
        assert!(text.contains(&format!("vern_rpc_duration_seconds_count{{{svc}}} 3")));
        assert!(text.contains(
            "vern_consent_checks_total{decision=\"allow\",reason=\"consent_granted\"} 1"
        ));
        assert!(
            text.contains(
                "vern_consent_checks_total{decision=\"deny\",reason=\"subject_erased\"} 1"
            )
        );
        assert!(text.contains("vern_auth_denials_total{reason=\"role\"} 1"));
        assert!(text.contains("vern_auth_denials_total{reason=\"other\"} 1"));
        assert!(text.contains("vern_rights_requests{status=\"in_progress\"} 4"));
        assert!(text.contains("vern_rights_requests{status=\"other\"} 1"));
        assert!(
            text.contains("vern_outbox_backlog{service=\"subjects\",topic=\"subject_state\"} 3")
        );
        assert!(text.contains("vern_outbox_backlog{service=\"subjects\",topic=\"other\"} 1"));
        assert!(!text.contains("Alice"));
        // Every sample line is `name{labels} value` or `name value`.
        for line in text.lines().filter(|l| !l.starts_with('#')) {
            let (_, value) = line.rsplit_once(' ').expect("sample");
            assert!(value.parse::<f64>().is_ok(), "{line}");
        }
    }
}
