//! Load limits as tower layers: a global concurrency limit and a per-client rate limit.
//! Both refuse at once with RESOURCE_EXHAUSTED; neither queues, so memory stays
//! bounded under overload. Health checks are exempt so probes keep answering.

use std::collections::HashMap;
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::Instant;

use tokio::sync::Semaphore;
use tonic::Status;
use tonic::body::Body;
use tower::{Layer, Service};

use crate::context::CallContext;

/// Calls refused by a limit since start (for metrics).
pub static LIMITED_CALLS: AtomicU64 = AtomicU64::new(0);

type BoxFuture<T> = Pin<Box<dyn std::future::Future<Output = T> + Send>>;

fn exempt(path: &str) -> bool {
    path.starts_with("/grpc.health.v1.Health/")
}

fn refuse<E: Send + 'static>(message: &'static str) -> BoxFuture<Result<http::Response<Body>, E>> {
    LIMITED_CALLS.fetch_add(1, Ordering::Relaxed);
    Box::pin(async move { Ok(Status::resource_exhausted(message).into_http()) })
}

/// At most `max` calls in progress; the next is refused.
#[derive(Clone, Debug)]
pub struct ConcurrencyLimitLayer {
    permits: Arc<Semaphore>,
}

impl ConcurrencyLimitLayer {
    /// A limit of `max` concurrent calls.
    pub fn new(max: usize) -> Self {
        Self {
            permits: Arc::new(Semaphore::new(max.max(1))),
        }
    }
}

impl<S> Layer<S> for ConcurrencyLimitLayer {
    type Service = ConcurrencyLimit<S>;
    fn layer(&self, inner: S) -> Self::Service {
        ConcurrencyLimit {
            inner,
            permits: self.permits.clone(),
        }
    }
}

/// The service of [`ConcurrencyLimitLayer`].
#[derive(Clone, Debug)]
pub struct ConcurrencyLimit<S> {
    inner: S,
    permits: Arc<Semaphore>,
}

impl<S, B> Service<http::Request<B>> for ConcurrencyLimit<S>
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
        let permit = if exempt(req.uri().path()) {
            None
        } else {
            match self.permits.clone().try_acquire_owned() {
                Ok(p) => Some(p),
                Err(_) => {
                    return refuse("server busy: too many calls in progress, retry with backoff");
                }
            }
        };
        let clone = self.inner.clone();
        let mut inner = std::mem::replace(&mut self.inner, clone);
        let fut = inner.call(req);
        Box::pin(async move {
            let res = fut.await;
            drop(permit);
            res
        })
    }
}

/// Limits per client, after authentication: a token bucket (`per_second` sustained,
/// `burst` at once) and at most `concurrent` calls in progress. A client is the verified
/// tenant and token subject, so a forged token cannot spend another client's budget and
/// one department's integration cannot take the whole server from the others.
#[derive(Clone, Debug)]
pub struct RateLimitLayer {
    state: Option<Arc<RateState>>,
    in_flight: Arc<InFlight>,
}

#[derive(Debug)]
struct RateState {
    per_second: f64,
    burst: f64,
    buckets: Mutex<HashMap<String, Bucket>>,
}

#[derive(Debug, Clone, Copy)]
struct Bucket {
    tokens: f64,
    at: Instant,
}

/// Calls in progress per client.
#[derive(Debug)]
pub(crate) struct InFlight {
    max: usize,
    calls: Mutex<HashMap<String, usize>>,
}

/// Releases a client's in-flight slot when the call ends (or is dropped).
pub(crate) struct Slot {
    in_flight: Arc<InFlight>,
    client: String,
}

impl Drop for Slot {
    fn drop(&mut self) {
        if let Ok(mut calls) = self.in_flight.calls.lock()
            && let Some(n) = calls.get_mut(&self.client)
        {
            *n -= 1;
            if *n == 0 {
                calls.remove(&self.client);
            }
        }
    }
}

impl InFlight {
    /// At most `max` (0: no limit) at once per client.
    pub(crate) fn new(max: usize) -> Self {
        Self {
            max: if max == 0 { usize::MAX } else { max },
            calls: Mutex::new(HashMap::new()),
        }
    }

    /// A slot for `client`, or `None` when it has `max` calls in progress. The key is
    /// copied into the map only for a client with no call in progress.
    pub(crate) fn enter(self: &Arc<Self>, client: String) -> Option<Slot> {
        let mut calls = self.calls.lock().ok()?;
        match calls.get_mut(&client) {
            Some(n) if *n >= self.max => return None,
            Some(n) => *n += 1,
            None => {
                calls.insert(client.clone(), 1);
            }
        }
        Some(Slot {
            in_flight: self.clone(),
            client,
        })
    }
}

/// Most clients tracked before idle ones are forgotten.
const MAX_CLIENTS: usize = 100_000;

/// The client a call is limited as: its tenant and token subject.
pub(crate) fn client_key(ctx: &CallContext) -> String {
    let tenant = ctx.tenant.as_ref().map(|t| t.as_str()).unwrap_or("");
    format!("{tenant}\u{0}{}", ctx.sub)
}

/// The per-client rate budget as the auth layer charges it for calls it denies, so a
/// client cannot make unlimited denied calls (each verified, logged and audited).
#[derive(Clone, Debug, Default)]
pub struct DenialBudget(Option<Arc<RateState>>);

impl DenialBudget {
    /// Whether `client` may make one more call now (and charges it).
    pub fn admit(&self, client: &str) -> bool {
        self.0
            .as_ref()
            .is_none_or(|state| state.admit(client, Instant::now()))
    }
}

impl RateLimitLayer {
    /// The same budgets, for the calls the auth layer denies before this layer runs.
    pub fn denial_budget(&self) -> DenialBudget {
        DenialBudget(self.state.clone())
    }

    /// A limit of `per_second` calls per client with bursts of `burst` (0 disables
    /// it) and `concurrent` calls in progress per client (0: no per-client limit).
    pub fn new(per_second: u32, burst: u32, concurrent: usize) -> Self {
        Self {
            state: (per_second > 0).then(|| {
                Arc::new(RateState {
                    per_second: f64::from(per_second),
                    burst: f64::from(burst.max(per_second)),
                    buckets: Mutex::new(HashMap::new()),
                })
            }),
            in_flight: Arc::new(InFlight::new(concurrent)),
        }
    }
}

impl RateState {
    fn admit(&self, client: &str, now: Instant) -> bool {
        let Ok(mut buckets) = self.buckets.lock() else {
            return true;
        };
        if buckets.len() >= MAX_CLIENTS && !buckets.contains_key(client) {
            // Forget clients whose buckets have refilled: they lose nothing.
            let (rate, burst) = (self.per_second, self.burst);
            buckets.retain(|_, b| b.tokens + now.duration_since(b.at).as_secs_f64() * rate < burst);
            if buckets.len() >= MAX_CLIENTS {
                buckets.clear();
            }
        }
        // Allocates the key only for a new client (every call passes here).
        if !buckets.contains_key(client) {
            buckets.insert(
                client.to_owned(),
                Bucket {
                    tokens: self.burst,
                    at: now,
                },
            );
        }
        let Some(b) = buckets.get_mut(client) else {
            return true;
        };
        let refill = now.duration_since(b.at).as_secs_f64() * self.per_second;
        b.tokens = (b.tokens + refill).min(self.burst);
        b.at = now;
        if b.tokens >= 1.0 {
            b.tokens -= 1.0;
            true
        } else {
            false
        }
    }
}

impl<S> Layer<S> for RateLimitLayer {
    type Service = RateLimit<S>;
    fn layer(&self, inner: S) -> Self::Service {
        RateLimit {
            inner,
            state: self.state.clone(),
            in_flight: self.in_flight.clone(),
        }
    }
}

/// The service of [`RateLimitLayer`].
#[derive(Clone, Debug)]
pub struct RateLimit<S> {
    inner: S,
    state: Option<Arc<RateState>>,
    in_flight: Arc<InFlight>,
}

impl<S, B> Service<http::Request<B>> for RateLimit<S>
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
        let mut slot = None;
        if let Some(ctx) = req.extensions().get::<CallContext>() {
            let client = client_key(ctx);
            if let Some(state) = &self.state
                && !state.admit(&client, Instant::now())
            {
                return refuse("rate limit exceeded for this client, retry later");
            }
            match self.in_flight.enter(client) {
                Some(s) => slot = Some(s),
                None => {
                    return refuse(
                        "too many calls in progress for this client, retry with backoff",
                    );
                }
            }
        }
        let clone = self.inner.clone();
        let mut inner = std::mem::replace(&mut self.inner, clone);
        let fut = inner.call(req);
        Box::pin(async move {
            let res = fut.await;
            // Held until the answer's head is ready (a stream's body may run longer).
            drop(slot);
            res
        })
    }
}

/// Enforces the caller's deadline (`grpc-timeout`) and the server's request timeout
/// with DEADLINE_EXCEEDED. tonic's own timer answers CANCELLED; this one fires just
/// before it (and is polled first), so callers see the code the gRPC spec names. A
/// deadline that has already passed (0) is refused before any work starts, so it can
/// write nothing.
#[derive(Clone, Debug)]
pub struct DeadlineLayer {
    server_timeout: Option<std::time::Duration>,
}

impl DeadlineLayer {
    /// Deadlines capped at `server_timeout` (the server's `request_timeout_seconds`).
    pub fn new(server_timeout: Option<std::time::Duration>) -> Self {
        Self { server_timeout }
    }
}

impl<S> Layer<S> for DeadlineLayer {
    type Service = Deadline<S>;
    fn layer(&self, inner: S) -> Self::Service {
        Deadline {
            inner,
            server_timeout: self.server_timeout,
        }
    }
}

/// The service of [`DeadlineLayer`].
#[derive(Clone, Debug)]
pub struct Deadline<S> {
    inner: S,
    server_timeout: Option<std::time::Duration>,
}

/// The `grpc-timeout` header: 1–8 digits and a unit (H, M, S, m, u, n).
pub fn grpc_timeout(headers: &http::HeaderMap) -> Option<std::time::Duration> {
    use std::time::Duration;
    let v = headers.get("grpc-timeout")?.to_str().ok()?;
    if v.len() < 2 || v.len() > 9 {
        return None;
    }
    let (digits, unit) = v.split_at(v.len() - 1);
    let n: u64 = digits
        .bytes()
        .all(|b| b.is_ascii_digit())
        .then(|| digits.parse().ok())??;
    Some(match unit {
        "H" => Duration::from_secs(n.saturating_mul(3600)),
        "M" => Duration::from_secs(n.saturating_mul(60)),
        "S" => Duration::from_secs(n),
        "m" => Duration::from_millis(n),
        "u" => Duration::from_micros(n),
        "n" => Duration::from_nanos(n),
        _ => return None,
    })
}

impl<S, B> Service<http::Request<B>> for Deadline<S>
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
        let limit = match (grpc_timeout(req.headers()), self.server_timeout) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        };
        if limit.is_some_and(|d| d < std::time::Duration::from_millis(1)) {
            return Box::pin(async {
                Ok(
                    Status::deadline_exceeded("deadline expired before the call started")
                        .into_http(),
                )
            });
        }
        let clone = self.inner.clone();
        let mut inner = std::mem::replace(&mut self.inner, clone);
        let fut = inner.call(req);
        let Some(limit) = limit else {
            return Box::pin(fut);
        };
        // 1 ms ahead of tonic's timer, which would answer CANCELLED.
        let limit = limit.saturating_sub(std::time::Duration::from_millis(1));
        Box::pin(async move {
            match tokio::time::timeout(limit, fut).await {
                Ok(res) => res,
                Err(_) => Ok(Status::deadline_exceeded("deadline exceeded").into_http()),
            }
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn buckets_refill_and_are_per_client() {
        let s = RateState {
            per_second: 10.0,
            burst: 3.0,
            buckets: Mutex::new(HashMap::new()),
        };
        let t0 = Instant::now();
        assert!(s.admit("a", t0));
        assert!(s.admit("a", t0));
        assert!(s.admit("a", t0));
        assert!(!s.admit("a", t0), "burst spent");
        assert!(s.admit("b", t0), "other clients unaffected");
        assert!(s.admit("a", t0 + Duration::from_millis(150)), "refilled");
    }

    #[test]
    fn in_flight_calls_are_bounded_per_client_and_released() {
        let f = Arc::new(InFlight {
            max: 2,
            calls: Mutex::new(HashMap::new()),
        });
        let key = |k: &str| k.to_owned();
        let a1 = f.enter(key("acme\u{0}crm")).expect("first");
        let _a2 = f.enter(key("acme\u{0}crm")).expect("second");
        assert!(f.enter(key("acme\u{0}crm")).is_none(), "third refused");
        assert!(
            f.enter(key("other\u{0}crm")).is_some(),
            "the same subject in another tenant is another client"
        );
        drop(a1);
        assert!(f.enter(key("acme\u{0}crm")).is_some(), "released on drop");
        let ctx = CallContext::for_tests(
            Some("acme"),
            &[crate::auth::Role::Integration],
            crate::auth::Permission::ConsentsCheck,
        );
        assert_eq!(client_key(&ctx), "acme\u{0}test");
    }

    #[tokio::test]
    async fn concurrency_limit_refuses_without_queueing() {
        use tower::ServiceExt;
        let (release_tx, release_rx) = tokio::sync::watch::channel(false);
        let slow = tower::service_fn(move |_req: http::Request<()>| {
            let mut rx = release_rx.clone();
            async move {
                let _ = rx.wait_for(|v| *v).await;
                Ok::<_, std::convert::Infallible>(http::Response::new(Body::empty()))
            }
        });
        let svc = ConcurrencyLimitLayer::new(1).layer(slow);
        let req = || {
            http::Request::builder()
                .uri("/vern.x.v1.X/Y")
                .body(())
                .expect("req")
        };
        let first = tokio::spawn(svc.clone().oneshot(req()));
        tokio::time::sleep(Duration::from_millis(20)).await;
        let second = svc.clone().oneshot(req()).await.expect("answer");
        let status = Status::from_header_map(second.headers()).expect("grpc status");
        assert_eq!(status.code(), tonic::Code::ResourceExhausted);
        // Health is exempt even when full.
        let health = http::Request::builder()
            .uri("/grpc.health.v1.Health/Check")
            .body(())
            .expect("req");
        let h = tokio::spawn(svc.clone().oneshot(health));
        release_tx.send(true).expect("release");
        assert!(first.await.expect("join").is_ok());
        let h = h.await.expect("join").expect("health");
        assert!(Status::from_header_map(h.headers()).is_none());
    }

    #[test]
    fn grpc_timeout_header() {
        use std::time::Duration;
        let h = |v: &str| {
            let mut m = http::HeaderMap::new();
            m.insert("grpc-timeout", v.parse().expect("value"));
            grpc_timeout(&m)
        };
        assert_eq!(h("0n"), Some(Duration::ZERO));
        assert_eq!(h("150m"), Some(Duration::from_millis(150)));
        assert_eq!(h("2S"), Some(Duration::from_secs(2)));
        assert_eq!(h("1H"), Some(Duration::from_secs(3600)));
        assert_eq!(h("m"), None);
        assert_eq!(h("123456789S"), None);
        assert_eq!(h("-1S"), None);
    }

    #[tokio::test]
    async fn expired_deadlines_are_deadline_exceeded_without_calling_the_service() {
        use tower::ServiceExt;
        let called = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
        let seen = called.clone();
        let slow = tower::service_fn(move |_req: http::Request<()>| {
            seen.store(true, std::sync::atomic::Ordering::SeqCst);
            async {
                tokio::time::sleep(Duration::from_secs(5)).await;
                Ok::<_, std::convert::Infallible>(http::Response::new(Body::empty()))
            }
        });
        let svc = DeadlineLayer::new(Some(Duration::from_secs(30))).layer(slow);
        let req = |t: &str| {
            http::Request::builder()
                .uri("/vern.x.v1.X/Y")
                .header("grpc-timeout", t)
                .body(())
                .expect("req")
        };
        let r = svc.clone().oneshot(req("0n")).await.expect("answer");
        let code = Status::from_header_map(r.headers()).expect("status").code();
        assert_eq!(code, tonic::Code::DeadlineExceeded);
        assert!(
            !called.load(std::sync::atomic::Ordering::SeqCst),
            "no work for an expired call"
        );
        let r = svc.clone().oneshot(req("50m")).await.expect("answer");
        let code = Status::from_header_map(r.headers()).expect("status").code();
        assert_eq!(code, tonic::Code::DeadlineExceeded);
    }
}
