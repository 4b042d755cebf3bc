//! Server streams stay authorised and counted for their whole life.
//!
//! [`crate::context::AuthLayer`] decides when a call opens; a server stream
//! (WatchEvents, ExportEvents with `follow`) then runs for minutes or hours. This layer
//! wraps the answer of every server-streaming RPC (read from the descriptors, so new
//! ones are covered without naming them) in a body that, before each message and at
//! least every [`RECHECK_EVERY`]:
//!
//! - authorises the call again with its own headers: an expired token ends the stream
//!   with UNAUTHENTICATED, a role that no longer grants the permission with
//!   PERMISSION_DENIED;
//! - asks the [`TenantGate`] again: a suspended or deleted tenant ends it with
//!   PERMISSION_DENIED, within the gate's bound (roles allowed while suspended go on);
//! - ends it with UNAVAILABLE after `server.max_stream_seconds`; the client resumes
//!   from its last cursor.
//!
//! Streams have budgets of their own, held until the stream ends (the call limits are
//! released with the answer's head): `server.max_streams` on the server and
//! `server.max_streams_per_client` per client. Past either, RESOURCE_EXHAUSTED with a
//! `grpc-retry-pushback-ms` hint.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use http_body::Frame;
use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use tonic::Status;
use tonic::body::Body;
use tonic::codegen::Bytes;
use tower::{Layer, Service};

use crate::auth::{Role, TokenVerifier};
use crate::context::{CallContext, Exposure};
use crate::limits::{InFlight, Slot, client_key};
use crate::tenancy::{TenantGate, TenantRefusal};

/// How often an idle stream is checked (a stream that sends is checked before every
/// message as well).
pub const RECHECK_EVERY: Duration = Duration::from_secs(1);

/// How long a refused stream is asked to wait before it opens again.
const RETRY_PUSHBACK_MS: &str = "1000";

/// Streams ended because their access ended (token, role, tenant) since start.
pub static STREAMS_ENDED_BY_ACCESS: AtomicU64 = AtomicU64::new(0);
/// Streams ended at their longest lifetime since start.
pub static STREAMS_ENDED_BY_LIFETIME: AtomicU64 = AtomicU64::new(0);
/// Streams refused by a stream budget since start.
pub static STREAMS_REFUSED: AtomicU64 = AtomicU64::new(0);

type BoxFuture<T> = Pin<Box<dyn Future<Output = T> + Send>>;

/// What the guard needs of the server it runs in.
#[derive(Debug)]
struct Guard {
    verifier: TokenVerifier,
    exposure: Exposure,
    tenants: Option<TenantGate>,
    lifetime: Duration,
    streams: Arc<Semaphore>,
    per_client: Arc<InFlight>,
}

/// The layer; place it inside [`crate::context::AuthLayer`] (it reads the
/// [`CallContext`] the auth layer puts in the request).
#[derive(Clone, Debug)]
pub struct StreamGuardLayer {
    guard: Arc<Guard>,
}

impl StreamGuardLayer {
    /// Guards streams with the same verifier, exposure and tenant gate as the auth
    /// layer; `lifetime` is the longest a stream runs, `max_streams` and
    /// `max_per_client` the budgets (0: no per-client budget).
    pub fn new(
        verifier: TokenVerifier,
        exposure: Exposure,
        tenants: Option<TenantGate>,
        lifetime: Duration,
        max_streams: usize,
        max_per_client: usize,
    ) -> Self {
        Self {
            guard: Arc::new(Guard {
                verifier,
                exposure,
                tenants,
                lifetime,
                streams: Arc::new(Semaphore::new(max_streams.max(1))),
                per_client: Arc::new(InFlight::new(max_per_client)),
            }),
        }
    }
}

impl<S> Layer<S> for StreamGuardLayer {
    type Service = StreamGuard<S>;
    fn layer(&self, inner: S) -> Self::Service {
        StreamGuard {
            inner,
            guard: self.guard.clone(),
        }
    }
}

/// The service of [`StreamGuardLayer`].
#[derive(Clone, Debug)]
pub struct StreamGuard<S> {
    inner: S,
    guard: Arc<Guard>,
}

fn refuse(message: &'static str) -> http::Response<Body> {
    STREAMS_REFUSED.fetch_add(1, Ordering::Relaxed);
    crate::limits::LIMITED_CALLS.fetch_add(1, Ordering::Relaxed);
    let mut status = Status::resource_exhausted(message);
    if let Ok(v) = RETRY_PUSHBACK_MS.parse() {
        status.metadata_mut().insert("grpc-retry-pushback-ms", v);
    }
    status.into_http()
}

impl<S, B> Service<http::Request<B>> for StreamGuard<S>
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
        let path = req.uri().path();
        let ctx = match req.extensions().get::<CallContext>() {
            Some(ctx) if crate::permissions::is_server_streaming(path) => ctx.clone(),
            _ => return Box::pin(inner.call(req)),
        };
        let Ok(permit) = self.guard.streams.clone().try_acquire_owned() else {
            return Box::pin(async {
                Ok(refuse(
                    "server busy: too many streams open, retry with backoff",
                ))
            });
        };
        let Some(slot) = self.guard.per_client.enter(client_key(&ctx)) else {
            return Box::pin(async {
                Ok(refuse(
                    "too many streams open for this client, close one or retry later",
                ))
            });
        };
        // The same rule as the auth layer: calls of vern's own components are not gated.
        let tenant = match (&self.guard.tenants, &ctx.tenant) {
            (Some(_), Some(t)) if !ctx.roles.contains(&Role::Service) => {
                Some(t.as_str().to_owned())
            }
            _ => None,
        };
        let watch = Watch {
            guard: self.guard.clone(),
            path: path.to_owned(),
            headers: req.headers().clone(),
            tenant,
            exempt_if_suspended: crate::tenancy::allowed_while_suspended(
                &ctx.roles,
                ctx.permission,
            ),
            ends_at: Instant::now() + self.guard.lifetime,
        };
        let fut = inner.call(req);
        Box::pin(async move {
            let response = fut.await?;
            let (parts, body) = response.into_parts();
            let first = (Instant::now() + RECHECK_EVERY).min(watch.ends_at);
            let guarded = Guarded {
                inner: Some(body),
                watch,
                _budget: (permit, slot),
                timer: Box::pin(tokio::time::sleep_until(first.into())),
                asking: None,
            };
            Ok(http::Response::from_parts(parts, Body::new(guarded)))
        })
    }
}

/// One stream's access, checked again and again.
struct Watch {
    guard: Arc<Guard>,
    path: String,
    headers: http::HeaderMap,
    /// The tenant the gate is asked about (`None`: not gated).
    tenant: Option<String>,
    exempt_if_suspended: bool,
    ends_at: Instant,
}

/// What a check found.
enum Verdict {
    /// Go on.
    Go,
    /// Go on, and ask the tenant directory (the gate's answer is too old).
    Ask,
}

impl Watch {
    /// Checks without I/O: lifetime, token and permission, the gate's cached answer.
    fn check(&self, now: Instant) -> Result<Verdict, Status> {
        if now >= self.ends_at {
            STREAMS_ENDED_BY_LIFETIME.fetch_add(1, Ordering::Relaxed);
            return Err(Status::unavailable(
                "the stream reached its longest lifetime (server.max_stream_seconds): open it again from the last cursor",
            ));
        }
        if let Err(status) = crate::context::authorize(
            &self.guard.verifier,
            &self.path,
            &self.headers,
            self.guard.exposure,
        ) {
            STREAMS_ENDED_BY_ACCESS.fetch_add(1, Ordering::Relaxed);
            return Err(status);
        }
        let (Some(gate), Some(tenant)) = (&self.guard.tenants, &self.tenant) else {
            return Ok(Verdict::Go);
        };
        match gate.check_cached(tenant) {
            None => Ok(Verdict::Ask),
            Some(answer) => self.answer(answer).map(|()| Verdict::Go),
        }
    }

    /// The gate's answer, as the stream's fate.
    fn answer(&self, answer: Result<(), TenantRefusal>) -> Result<(), Status> {
        match answer {
            Ok(()) => Ok(()),
            Err(TenantRefusal::Suspended) if self.exempt_if_suspended => Ok(()),
            Err(refusal) => {
                STREAMS_ENDED_BY_ACCESS.fetch_add(1, Ordering::Relaxed);
                Err(crate::context::tenant_denied(&self.path, refusal))
            }
        }
    }

    /// Asks the directory (through the gate, which remembers the answer).
    fn ask(&self) -> Option<BoxFuture<Result<(), TenantRefusal>>> {
        let gate = self.guard.tenants.clone()?;
        let tenant = self.tenant.clone()?;
        Some(Box::pin(async move { gate.check(&tenant).await }))
    }
}

/// A stream's body under [`Watch`].
struct Guarded {
    /// `None` once the stream has ended (the service's stream is dropped with it).
    inner: Option<Body>,
    watch: Watch,
    /// Held until the stream ends.
    _budget: (OwnedSemaphorePermit, Slot),
    timer: Pin<Box<tokio::time::Sleep>>,
    asking: Option<BoxFuture<Result<(), TenantRefusal>>>,
}

impl Guarded {
    /// Ends the stream with `status` in its trailers.
    fn end(&mut self, status: Status) -> Poll<Option<Result<Frame<Bytes>, Status>>> {
        self.inner = None;
        self.asking = None;
        tracing::info!(method = %self.watch.path, code = ?status.code(), "stream ended by the server");
        let mut trailers = http::HeaderMap::new();
        match status.add_header(&mut trailers) {
            Ok(()) => Poll::Ready(Some(Ok(Frame::trailers(trailers)))),
            Err(status) => Poll::Ready(Some(Err(status))),
        }
    }

    /// Polls the directory question, if one is open; `Err` ends the stream.
    fn poll_asking(&mut self, cx: &mut Context<'_>) -> Result<(), Status> {
        if let Some(ask) = self.asking.as_mut()
            && let Poll::Ready(answer) = ask.as_mut().poll(cx)
        {
            self.asking = None;
            self.watch.answer(answer)?;
        }
        Ok(())
    }

    fn start_asking(&mut self) {
        if self.asking.is_none() {
            self.asking = self.watch.ask();
        }
    }
}

impl http_body::Body for Guarded {
    type Data = Bytes;
    type Error = Status;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Self::Data>, Self::Error>>> {
        let this = self.get_mut();
        if this.inner.is_none() {
            return Poll::Ready(None);
        }
        // The periodic check: also ends streams that send nothing (a quiet feed).
        loop {
            if let Err(status) = this.poll_asking(cx) {
                return this.end(status);
            }
            if this.timer.as_mut().poll(cx).is_pending() {
                break;
            }
            let now = Instant::now();
            match this.watch.check(now) {
                Err(status) => return this.end(status),
                Ok(Verdict::Ask) => this.start_asking(),
                Ok(Verdict::Go) => {}
            }
            let next = (now + RECHECK_EVERY).min(this.watch.ends_at);
            this.timer.as_mut().reset(next.into());
        }
        let Some(inner) = this.inner.as_mut() else {
            return Poll::Ready(None);
        };
        match Pin::new(inner).poll_frame(cx) {
            Poll::Ready(Some(Ok(frame))) if frame.is_data() => {
                // Nothing leaves once access has ended.
                match this.watch.check(Instant::now()) {
                    Err(status) => return this.end(status),
                    Ok(Verdict::Ask) => {
                        this.start_asking();
                        if let Err(status) = this.poll_asking(cx) {
                            return this.end(status);
                        }
                    }
                    Ok(Verdict::Go) => {}
                }
                Poll::Ready(Some(Ok(frame)))
            }
            Poll::Ready(None) => {
                this.inner = None;
                Poll::Ready(None)
            }
            other => other,
        }
    }

    fn is_end_stream(&self) -> bool {
        self.inner.as_ref().is_none_or(|b| b.is_end_stream())
    }
}
