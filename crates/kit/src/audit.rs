//! Audit events from every service, never lost and never carrying personal data.
//!
//! - [`AuditLayer`] wraps one service: for each audited call it opens a scope holding
//!   who calls (token subject and roles, client), for which tenant, which RPC and the
//!   trace id.
//! - A mutation commits through [`crate::idempotency::commit_once`], which writes the
//!   scope's event to the service's outbox **in the same transaction** as the change.
//! - A read of personal data, or a call that failed, commits nothing of its own; the layer
//!   then writes the event (with the gRPC status as outcome) in a small transaction.
//! - The outbox relay delivers `audit` rows to `AuditService/AppendEvents`, which is
//!   idempotent by event id ([`AuditDelivery`]).
//!
//! Handlers name the data subject a call concerns with [`subject`]; resource ids of
//! created things are taken from the committed answer. Events carry ids, names of
//! changed fields and outcomes — never values.

use std::cell::RefCell;
use std::collections::HashMap;
use std::sync::Arc;
use std::task::{Context, Poll};

use crate::db::Db;
use prost::Message;
use sea_orm::{ConnectionTrait, TransactionTrait};
use tonic::body::Body;
use tonic::server::NamedService;
use tower::{Layer, Service};
use vern_proto::audit::v1 as pb;

use crate::context::CallContext;
use crate::outbox::{self, Deliver, DeliveryError, Relay};

/// Outbox topic of audit events.
pub const AUDIT_TOPIC: &str = "audit";

/// The chain of the platform itself: what platform admins do that belongs to no
/// department (key rotation, re-indexing, key counts, calls that failed before naming a
/// tenant) and what platform tokens were refused. It is read like a tenant's chain, by
/// a token naming this id with an audit role; no other permission acts in it, and no
/// tenant can take the id ([`is_platform_chain`]).
pub const PLATFORM_CHAIN: &str = "vern-platform";

/// Whether `tenant` is the platform's own chain rather than a department.
pub fn is_platform_chain(tenant: &str) -> bool {
    tenant == PLATFORM_CHAIN
}

#[derive(Debug, Clone, Default)]
struct Scope {
    tenant: String,
    service: &'static str,
    action: String,
    sub: String,
    roles: Vec<String>,
    client: String,
    trace_id: String,
    subject_id: String,
    resource_type: String,
    resource_id: String,
    changed_fields: Vec<String>,
    /// An event of this call was committed with its change.
    emitted: bool,
}

tokio::task_local! {
    static SCOPE: RefCell<Scope>;
}

/// Names the data subject the current call concerns (no effect outside a scope).
pub fn subject(subject_id: &str) {
    let _ = SCOPE.try_with(|s| s.borrow_mut().subject_id = subject_id.to_owned());
}

/// Names the resource the current call concerns.
pub fn resource(resource_type: &str, resource_id: &str) {
    let _ = SCOPE.try_with(|s| {
        let mut s = s.borrow_mut();
        s.resource_type = resource_type.to_owned();
        s.resource_id = resource_id.to_owned();
    });
}

/// Names the fields the current call changes (names only, never values).
pub fn changed_fields(fields: &[String]) {
    let _ = SCOPE.try_with(|s| s.borrow_mut().changed_fields = fields.to_vec());
}

/// The event of the current scope for a change about to commit; `None` outside a scope.
/// `answer` is the committed answer, whose ids name what was created.
pub(crate) fn event_for_commit(
    answer: Option<&serde_json::Value>,
    request_id: &str,
) -> Option<pb::AuditEvent> {
    SCOPE
        .try_with(|s| {
            let mut scope = s.borrow().clone();
            if let Some(serde_json::Value::String(id)) = answer
                && scope.resource_id.is_empty()
            {
                scope.resource_id = id.clone();
            }
            if let Some(serde_json::Value::Object(map)) = answer {
                let text = |k: &str| map.get(k).and_then(|v| v.as_str()).map(str::to_owned);
                // Platform-level calls (e.g. CreateTenant) belong to the tenant they change.
                if scope.tenant.is_empty()
                    && let Some(t) = text("tenant_id")
                {
                    scope.tenant = t;
                }
                if scope.subject_id.is_empty()
                    && let Some(id) = text("subject_id")
                {
                    scope.subject_id = id;
                }
                if scope.resource_id.is_empty() {
                    for k in [
                        "event_id",
                        "decision_id",
                        "recipient_id",
                        "policy_id",
                        "rights_request_id",
                        "subject_id",
                        "key",
                        "tenant_id",
                    ] {
                        if let Some(id) = text(k) {
                            scope.resource_id = id;
                            break;
                        }
                    }
                }
            }
            (!scope.tenant.is_empty()).then(|| build(&scope, pb::Outcome::Success, 0, request_id))
        })
        .ok()
        .flatten()
}

/// The event of the current scope for one subject a call creates among several (a
/// batch: one event per subject, as its own CreateSubject would have); `None` outside
/// a scope or without a tenant.
pub(crate) fn event_for_subject(subject_id: &str, request_id: &str) -> Option<pb::AuditEvent> {
    SCOPE
        .try_with(|s| {
            let mut scope = s.borrow().clone();
            scope.subject_id = subject_id.to_owned();
            scope.resource_type = "subject".to_owned();
            scope.resource_id = subject_id.to_owned();
            (!scope.tenant.is_empty()).then(|| build(&scope, pb::Outcome::Success, 0, request_id))
        })
        .ok()
        .flatten()
}

/// Records that the current scope's event was committed with its change.
pub(crate) fn mark_emitted() {
    let _ = SCOPE.try_with(|s| s.borrow_mut().emitted = true);
}

/// Runs `fut` to completion in a task of its own, even if the caller is cancelled, with
/// the caller's audit scope (so a change commits its audit event, as in the caller's
/// task) and trace context. When it finishes, what it recorded in the scope (e.g. that
/// its event was committed) is copied back to the caller's scope.
///
/// For a write whose completion must be followed by an action (the consents service
/// invalidates its Check cache after a write): with the write in the caller's task, a
/// cancelled call could still commit after its follow-up ran.
pub async fn in_own_task<F>(fut: F) -> Result<F::Output, tokio::task::JoinError>
where
    F: std::future::Future + Send + 'static,
    F::Output: Send + 'static,
{
    use opentelemetry::trace::FutureExt as _;
    let scope = SCOPE.try_with(|s| s.borrow().clone()).ok();
    let cx = opentelemetry::Context::current();
    let task = tokio::spawn(
        async move {
            match scope {
                None => (fut.await, None),
                Some(scope) => {
                    SCOPE
                        .scope(RefCell::new(scope), async move {
                            let out = fut.await;
                            (out, Some(SCOPE.with(|s| s.borrow().clone())))
                        })
                        .await
                }
            }
        }
        .with_context(cx),
    );
    let (out, scope) = task.await?;
    if let Some(after) = scope {
        let _ = SCOPE.try_with(|s| *s.borrow_mut() = after);
    }
    Ok(out)
}

/// The limits AuditService.AppendEvents applies to each field (crates/audit's
/// `EventInput::validate`). An event is built within them, so what a service emits its
/// receiver accepts: a value from a refused request (a subject id of 1,000 characters,
/// a resource id with a line break) is left out, never sent to be refused.
mod limits {
    pub const SUB: usize = 256;
    pub const CLIENT: usize = 256;
    pub const ACTION: usize = 256;
    pub const SERVICE: usize = 64;
    pub const SUBJECT_ID: usize = 128;
    pub const RESOURCE_TYPE: usize = 64;
    pub const RESOURCE_ID: usize = 256;
    pub const REQUEST_ID: usize = 128;
    pub const TRACE_ID: usize = 64;
    pub const FIELD_NAME: usize = 128;
    pub const FIELDS: usize = 200;
}

/// `value` if it is one line of at most `max` characters the receiver accepts, else
/// empty.
fn fit(value: &str, max: usize) -> String {
    if crate::validate::optional_line("", value, max).is_ok() {
        value.to_owned()
    } else {
        String::new()
    }
}

fn build(
    scope: &Scope,
    outcome: pb::Outcome,
    status_code: i32,
    request_id: &str,
) -> pb::AuditEvent {
    use limits as l;
    pb::AuditEvent {
        event_id: uuid::Uuid::now_v7().to_string(),
        tenant_id: scope.tenant.clone(),
        actor: Some(pb::Actor {
            // Empty only if the token's sub escaped the edge's check; the receiver
            // then still records the call.
            sub: fit(&scope.sub, l::SUB),
            roles: scope.roles.clone(),
            client: fit(&scope.client, l::CLIENT),
        }),
        action: fit(&scope.action, l::ACTION),
        service: fit(scope.service, l::SERVICE),
        subject_id: fit(&scope.subject_id, l::SUBJECT_ID),
        resource_type: fit(
            &if scope.resource_type.is_empty() {
                resource_type_of(&scope.action)
            } else {
                scope.resource_type.clone()
            },
            l::RESOURCE_TYPE,
        ),
        resource_id: fit(&scope.resource_id, l::RESOURCE_ID),
        outcome: outcome as i32,
        status_code,
        changed_fields: scope
            .changed_fields
            .iter()
            .map(|f| fit(f, l::FIELD_NAME))
            .filter(|f| !f.is_empty())
            .take(l::FIELDS)
            .collect(),
        request_id: fit(request_id, l::REQUEST_ID),
        trace_id: fit(&scope.trace_id, l::TRACE_ID),
        occur_time: Some(crate::time::to_timestamp(crate::time::now())),
        ..Default::default()
    }
}

/// "CreateSubject" → "subject", "ListConsentHistory" → "consent_history".
fn resource_type_of(action: &str) -> String {
    const VERBS: [&str; 17] = [
        "Create", "Get", "Find", "List", "Update", "Delete", "Suspend", "Resume", "Restrict",
        "Lift", "Erase", "Add", "Record", "Purge", "Submit", "Fulfil", "Reject",
    ];
    let rest = VERBS
        .iter()
        .find_map(|v| action.strip_prefix(v))
        .unwrap_or(action);
    let mut out = String::new();
    for (i, c) in rest.chars().enumerate() {
        if c.is_uppercase() && i > 0 {
            out.push('_');
        }
        out.extend(c.to_lowercase());
    }
    out.trim_end_matches('s').to_owned()
}

/// Which RPCs of a service are audited and how.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Audit {
    /// Not audited (e.g. Check on the hot path, or reads without personal data).
    No,
    /// A read of personal data: audited with its outcome.
    Read,
    /// A change: audited in its own transaction; failures audited too.
    Change,
    /// An operator's action that commits no event of its own (a key rotation batch, a
    /// re-index, a key count): audited with its outcome, in the platform chain when the
    /// call has no tenant. Every call needing KEYS_ROTATE or OUTBOX_ADMINISTER is audited
    /// so, whatever the service's policy says ([`crate::auth::operates_the_platform`]).
    Operation,
}

/// What a service audits and where it writes.
#[derive(Clone)]
pub struct Auditor {
    db: Db,
    relay: Option<Relay>,
    service: &'static str,
    policy: fn(&str) -> Audit,
}

impl std::fmt::Debug for Auditor {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Auditor")
            .field("service", &self.service)
            .finish_non_exhaustive()
    }
}

impl Auditor {
    /// An auditor writing to `db`'s outbox; `policy` maps an RPC name to how it is audited.
    pub fn new(
        db: Db,
        relay: Option<Relay>,
        service: &'static str,
        policy: fn(&str) -> Audit,
    ) -> Self {
        // The outbox backlog gauge of this service (read only while metrics are on).
        crate::metrics::watch_outbox(service, db.clone(), std::time::Duration::from_secs(15));
        Self {
            db,
            relay,
            service,
            policy,
        }
    }

    async fn write_alone(&self, event: pb::AuditEvent) {
        let mut event = event;
        if event.tenant_id.is_empty() {
            // A platform-level call that named no tenant: the platform's own chain.
            event.tenant_id = PLATFORM_CHAIN.to_owned();
        }
        let tenant = event.tenant_id.clone();
        let result = async {
            let txn = self.db.begin().await?;
            outbox::enqueue(&txn, &tenant, AUDIT_TOPIC, event.encode_to_vec()).await?;
            txn.commit().await
        }
        .await;
        match result {
            Ok(()) => {
                if let Some(r) = &self.relay {
                    r.nudge();
                }
            }
            Err(e) => {
                tracing::error!(kind = ?crate::db::classify(&e), action = %event.action, "audit event not written")
            }
        }
    }
}

/// Writes `event` to the outbox inside `txn` (used by `commit_once`).
pub(crate) async fn enqueue(
    txn: &impl ConnectionTrait,
    event: &pb::AuditEvent,
) -> Result<(), sea_orm::DbErr> {
    outbox::enqueue(txn, &event.tenant_id, AUDIT_TOPIC, event.encode_to_vec()).await
}

/// Writes `events` (of one tenant each; grouped here) to the outbox inside `txn`.
pub(crate) async fn enqueue_many(
    txn: &impl ConnectionTrait,
    events: Vec<pb::AuditEvent>,
) -> Result<(), sea_orm::DbErr> {
    let mut by_tenant: std::collections::BTreeMap<String, Vec<Vec<u8>>> = Default::default();
    for e in events {
        by_tenant
            .entry(e.tenant_id.clone())
            .or_default()
            .push(e.encode_to_vec());
    }
    for (tenant, payloads) in by_tenant {
        outbox::enqueue_many(txn, &tenant, AUDIT_TOPIC, payloads).await?;
    }
    Ok(())
}

/// The layer auditing one service.
#[derive(Clone, Debug)]
pub struct AuditLayer {
    auditor: Arc<Auditor>,
}

impl AuditLayer {
    /// A layer over `auditor`.
    pub fn new(auditor: Auditor) -> Self {
        Self {
            auditor: Arc::new(auditor),
        }
    }
}

impl<S> Layer<S> for AuditLayer {
    type Service = Audited<S>;
    fn layer(&self, inner: S) -> Self::Service {
        Audited {
            inner,
            auditor: self.auditor.clone(),
        }
    }
}

/// A service whose calls are audited.
#[derive(Clone, Debug)]
pub struct Audited<S> {
    inner: S,
    auditor: Arc<Auditor>,
}

impl<S: NamedService> NamedService for Audited<S> {
    const NAME: &'static str = S::NAME;
}

type BoxFuture<T> = std::pin::Pin<Box<dyn std::future::Future<Output = T> + Send>>;

impl<S, B> Service<http::Request<B>> for Audited<S>
where
    S: Service<http::Request<B>, Response = http::Response<Body>> + Clone + Send + 'static,
    S::Future: Send + 'static,
    S::Error: Send + 'static,
    B: Send + 'static,
{
    type Response = http::Response<Body>;
    type Error = S::Error;
    type Future = BoxFuture<Result<Self::Response, Self::Error>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, req: http::Request<B>) -> Self::Future {
        let clone = self.inner.clone();
        let mut inner = std::mem::replace(&mut self.inner, clone);
        let rpc = req.uri().path().rsplit('/').next().unwrap_or_default();
        let how = (self.auditor.policy)(rpc);
        let key_operation = || {
            req.extensions()
                .get::<CallContext>()
                .is_some_and(|c| crate::auth::operates_the_platform(c.permission))
        };
        // Un-audited calls (Check, the hot path) pass straight through without allocating.
        if how == Audit::No && !key_operation() {
            return Box::pin(inner.call(req));
        }
        let action = rpc.to_owned();
        let ctx = req.extensions().get::<CallContext>().cloned();
        let (how, ctx) = match (how, ctx) {
            // Key operations are audited in every service, present and future.
            (_, Some(ctx)) if crate::auth::operates_the_platform(ctx.permission) => {
                (Audit::Operation, ctx)
            }
            (Audit::No, _) | (_, None) => return Box::pin(inner.call(req)),
            (how, Some(ctx)) => (how, ctx),
        };
        // Empty for platform-level calls; the committed answer names the tenant then.
        let tenant = ctx
            .tenant
            .as_ref()
            .map(|t| t.as_str().to_owned())
            .unwrap_or_default();
        let scope = Scope {
            tenant,
            service: self.auditor.service,
            action,
            sub: ctx.sub.clone(),
            roles: ctx.roles.iter().map(|r| r.as_str().to_owned()).collect(),
            client: client_of(req.headers()),
            trace_id: trace_id_of(req.headers()),
            ..Default::default()
        };
        let auditor = self.auditor.clone();
        let fut = inner.call(req);
        Box::pin(async move {
            let cell = RefCell::new(scope);
            let (result, cell) = SCOPE
                .scope(cell, async move {
                    let r = fut.await;
                    let scope = SCOPE.with(|s| s.borrow().clone());
                    (r, scope)
                })
                .await;
            if let Ok(resp) = &result
                && !cell.emitted
            {
                // The code the caller is answered (kit::wire rewrites decode errors).
                let code = crate::wire::rewritten(resp.headers())
                    .map(|c| c as i32)
                    .or_else(|| {
                        let v = resp.headers().get("grpc-status")?;
                        v.to_str().ok()?.parse::<i32>().ok()
                    })
                    .unwrap_or(0);
                // A change that failed, any read and any operation: recorded on its own.
                if code != 0 || matches!(how, Audit::Read | Audit::Operation) {
                    let outcome = match tonic::Code::from_i32(code) {
                        tonic::Code::Ok => pb::Outcome::Success,
                        tonic::Code::PermissionDenied | tonic::Code::Unauthenticated => {
                            pb::Outcome::Denied
                        }
                        _ => pb::Outcome::Failed,
                    };
                    let event = build(&cell, outcome, code, "");
                    if code == tonic::Code::Unavailable as i32 {
                        // The database is likely down: the event's own transaction would
                        // wait out the pool's acquire timeout again. Try it off the
                        // caller's path, so UNAVAILABLE is answered at once.
                        tokio::spawn(async move { auditor.write_alone(event).await });
                    } else {
                        auditor.write_alone(event).await;
                    }
                }
            }
            result
        })
    }
}

fn client_of(headers: &http::HeaderMap) -> String {
    let ua = headers
        .get("x-vern-client")
        .or_else(|| headers.get(http::header::USER_AGENT))
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default();
    // The product token only (e.g. "grpc-rust/0.14"), bounded.
    ua.split_whitespace()
        .next()
        .unwrap_or_default()
        .chars()
        .take(64)
        .collect()
}

/// The trace id of a W3C `traceparent` header, if any.
fn trace_id_of(headers: &http::HeaderMap) -> String {
    headers
        .get("traceparent")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.split('-').nth(1))
        .filter(|t| t.len() == 32 && t.bytes().all(|b| b.is_ascii_hexdigit()))
        .unwrap_or_default()
        .to_owned()
}

/// Sends each outbox topic to its own delivery.
#[derive(Default)]
pub struct TopicRouter {
    routes: HashMap<&'static str, Arc<dyn Deliver>>,
}

impl TopicRouter {
    /// An empty router.
    pub fn new() -> Self {
        Self::default()
    }

    /// Routes `topic` to `deliver`.
    pub fn route(mut self, topic: &'static str, deliver: Arc<dyn Deliver>) -> Self {
        self.routes.insert(topic, deliver);
        self
    }

    /// Starts one relay loop per routed topic over `db`'s outbox.
    pub fn spawn(self, db: Db, settings: outbox::RelaySettings) -> Relay {
        outbox::spawn_topic_relays(db, self.routes.into_iter().collect(), settings)
    }
}

#[async_trait::async_trait]
impl Deliver for TopicRouter {
    async fn deliver(
        &self,
        tenant_id: &str,
        topic: &str,
        payloads: Vec<Vec<u8>>,
    ) -> Result<(), DeliveryError> {
        match self.routes.get(topic) {
            Some(d) => d.deliver(tenant_id, topic, payloads).await,
            None => Err(DeliveryError::Retry(format!(
                "no delivery for outbox topic {topic:?}"
            ))),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn in_scope(tenant: &str) -> RefCell<Scope> {
        RefCell::new(Scope {
            tenant: tenant.into(),
            action: "RecordConsent".into(),
            ..Default::default()
        })
    }

    /// The task sees the caller's scope, and what it records there comes back.
    #[tokio::test]
    async fn own_task_carries_the_audit_scope_in_and_out() {
        let after = SCOPE
            .scope(in_scope("kultur"), async {
                let seen = in_own_task(async {
                    subject("s-1");
                    mark_emitted();
                    SCOPE.with(|s| s.borrow().tenant.clone())
                })
                .await
                .expect("task");
                assert_eq!(seen, "kultur");
                SCOPE.with(|s| s.borrow().clone())
            })
            .await;
        assert_eq!(after.subject_id, "s-1");
        assert!(after.emitted);
    }

    /// A cancelled caller does not cancel the work: it runs to its end.
    #[tokio::test]
    async fn own_task_finishes_when_the_caller_is_cancelled() {
        let (started_tx, started) = tokio::sync::oneshot::channel();
        let (done_tx, done) = tokio::sync::oneshot::channel();
        let caller = tokio::spawn(SCOPE.scope(in_scope("kultur"), async move {
            in_own_task(async move {
                let _ = started_tx.send(());
                tokio::time::sleep(std::time::Duration::from_millis(50)).await;
                let _ = done_tx.send(SCOPE.with(|s| s.borrow().tenant.clone()));
            })
            .await
        }));
        started.await.expect("started");
        caller.abort();
        assert!(caller.await.expect_err("aborted").is_cancelled());
        assert_eq!(done.await.expect("the work finished"), "kultur");
    }

    #[test]
    fn events_are_built_within_the_receivers_limits() {
        let scope = Scope {
            tenant: "acme".into(),
            service: "subjects",
            action: "GetSubject".into(),
            sub: "crm".into(),
            subject_id: "x".repeat(1000),
            resource_id: "line\nbreak".into(),
            changed_fields: vec!["email".into(), String::new(), "y".repeat(200)],
            ..Default::default()
        };
        let e = build(&scope, pb::Outcome::Failed, 3, &"r".repeat(129));
        assert_eq!(
            e.subject_id, "",
            "a subject id the receiver refuses is left out"
        );
        assert_eq!(e.resource_id, "");
        assert_eq!(e.request_id, "");
        assert_eq!(e.changed_fields, vec!["email".to_owned()]);
        assert_eq!(e.actor.expect("actor").sub, "crm");
        let ok = build(
            &Scope {
                subject_id: "0191c1a2-0000-7000-8000-000000000000".into(),
                ..scope
            },
            pb::Outcome::Success,
            0,
            "req-1",
        );
        assert_eq!(ok.subject_id, "0191c1a2-0000-7000-8000-000000000000");
        assert_eq!(ok.request_id, "req-1");
    }

    #[test]
    fn resource_types_from_actions() {
        assert_eq!(resource_type_of("CreateSubject"), "subject");
        assert_eq!(resource_type_of("ListConsentHistory"), "consent_history");
        assert_eq!(resource_type_of("AddRecords"), "record");
        assert_eq!(resource_type_of("RecordConsent"), "consent");
    }

    #[test]
    fn trace_ids_from_traceparent() {
        let mut h = http::HeaderMap::new();
        h.insert(
            "traceparent",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"
                .parse()
                .expect("hdr"),
        );
        assert_eq!(trace_id_of(&h), "4bf92f3577b34da6a3ce929d0e0e4736");
        h.insert("traceparent", "garbage".parse().expect("hdr"));
        assert_eq!(trace_id_of(&h), "");
    }

    #[tokio::test]
    async fn commit_events_take_ids_from_the_answer() {
        let scope = Scope {
            tenant: "t".into(),
            service: "subjects",
            action: "CreateSubject".into(),
            sub: "crm".into(),
            ..Default::default()
        };
        let answer = serde_json::json!({"subject_id": "s-1", "email": "never@copied.no"});
        let ev = SCOPE
            .scope(RefCell::new(scope), async {
                event_for_commit(Some(&answer), "req-1")
            })
            .await
            .expect("in scope");
        assert_eq!(
            (
                ev.subject_id.as_str(),
                ev.resource_id.as_str(),
                ev.request_id.as_str()
            ),
            ("s-1", "s-1", "req-1")
        );
        assert_eq!(ev.resource_type, "subject");
        let encoded = ev.encode_to_vec();
        assert!(
            !encoded.windows(9).any(|w| w == b"never@cop"),
            "values never copied"
        );
        assert!(event_for_commit(None, "").is_none(), "no scope, no event");
    }
}

/// Where the auth layer reports denied calls: a bounded queue drained in batches to
/// `AuditService/AppendEvents`. Best effort by design — a denial changes nothing, so
/// there is no transaction to join; when the queue is full the event is dropped and
/// counted, never blocking the call.
#[derive(Clone, Debug)]
pub struct DenialSink {
    tx: tokio::sync::mpsc::Sender<pb::AuditEvent>,
}

/// Denials dropped because the queue was full.
pub static DROPPED_DENIALS: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);

impl DenialSink {
    /// A sink delivering through `delivery`; spawns its drain task.
    pub fn spawn(delivery: Arc<dyn Deliver>) -> Self {
        let (tx, mut rx) = tokio::sync::mpsc::channel::<pb::AuditEvent>(10_000);
        tokio::spawn(async move {
            while let Some(first) = rx.recv().await {
                let mut batch = vec![first];
                while batch.len() < 500 {
                    match rx.try_recv() {
                        Ok(e) => batch.push(e),
                        Err(_) => break,
                    }
                }
                let mut by_tenant: HashMap<String, Vec<Vec<u8>>> = HashMap::new();
                for e in batch {
                    by_tenant
                        .entry(e.tenant_id.clone())
                        .or_default()
                        .push(e.encode_to_vec());
                }
                for (tenant, payloads) in by_tenant {
                    if let Err(e) = delivery.deliver(&tenant, AUDIT_TOPIC, payloads).await {
                        tracing::warn!(error = %e, "denial events not delivered");
                    }
                }
            }
        });
        Self { tx }
    }

    /// Reports a denied call of `path` by `principal` acting in `tenant`.
    pub fn report(
        &self,
        tenant: &str,
        path: &str,
        principal: &crate::auth::Principal,
        code: tonic::Code,
        headers: &http::HeaderMap,
    ) {
        let scope = Scope {
            tenant: tenant.to_owned(),
            service: "gateway",
            action: path.rsplit('/').next().unwrap_or_default().to_owned(),
            sub: principal.sub.clone(),
            roles: principal
                .roles
                .iter()
                .map(|r| r.as_str().to_owned())
                .collect(),
            client: client_of(headers),
            trace_id: trace_id_of(headers),
            ..Default::default()
        };
        let event = build(&scope, pb::Outcome::Denied, code as i32, "");
        if self.tx.try_send(event).is_err() {
            let n = DROPPED_DENIALS.fetch_add(1, std::sync::atomic::Ordering::Relaxed) + 1;
            // The first and then every power of two: seen, without a log line per drop.
            if n.is_power_of_two() {
                tracing::warn!(
                    dropped_total = n,
                    "denial audit events dropped: the queue to the audit service is full"
                );
            }
        }
    }
}

#[cfg(test)]
mod denial_tests {
    use super::*;

    /// An audit service that never answers.
    struct Stalled;

    #[async_trait::async_trait]
    impl Deliver for Stalled {
        async fn deliver(
            &self,
            _tenant_id: &str,
            _topic: &str,
            _payloads: Vec<Vec<u8>>,
        ) -> Result<(), crate::outbox::DeliveryError> {
            std::future::pending().await
        }
    }

    #[tokio::test]
    async fn dropped_denials_are_counted_and_exported() {
        crate::metrics::enable();
        let sink = DenialSink::spawn(Arc::new(Stalled));
        let principal = crate::auth::Principal {
            sub: "crm".into(),
            roles: vec![crate::auth::Role::Integration],
            tenants: vec!["dept-a".into()],
        };
        let before = DROPPED_DENIALS.load(std::sync::atomic::Ordering::Relaxed);
        // The queue holds 10,000 and the drain holds one batch (at most 500) in the
        // stalled delivery: 11,000 reports overflow it.
        for _ in 0..11_000 {
            sink.report(
                "dept-a",
                "/vern.example.v1.ExampleService/EraseSomething",
                &principal,
                tonic::Code::PermissionDenied,
                &http::HeaderMap::new(),
            );
            tokio::task::yield_now().await;
        }
        let dropped = DROPPED_DENIALS.load(std::sync::atomic::Ordering::Relaxed) - before;
        assert!(dropped >= 500, "dropped {dropped}");
        let text = crate::metrics::render_prometheus();
        let exported: u64 = text
            .lines()
            .find_map(|l| l.strip_prefix("vern_audit_denials_dropped_total "))
            .and_then(|v| v.trim().parse().ok())
            .expect("the metric is exported");
        assert!(
            exported >= dropped,
            "exported {exported}, dropped {dropped}"
        );
    }
}
