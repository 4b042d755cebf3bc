//! Per-call load balancing over every address a service name resolves to.
//!
//! Kubernetes balances *connections*, not calls: a client holding one HTTP/2
//! connection to a ClusterIP sends every call to one pod, and pods the HPA adds get
//! nothing. So a service URL naming a host (a headless Service, whose name resolves to
//! every ready pod) is resolved here, again every [`RESOLVE_EVERY`] and soon after a
//! connection error, and each call goes to the less loaded of two backends (calls in
//! flight), skipping a backend whose connection just failed. A URL naming an IP
//! address has one backend and no resolver.
//!
//! No buffer task sits in the path (tonic's `balance_channel` adds one): a call picks a
//! backend and goes straight to its channel, so an extra hop costs nothing.
//!
//! **A call whose backend failed before answering is sent again, once, to another
//! backend** when the RPC may be repeated (it declares itself a read or idempotent by
//! request id: [`crate::permissions::is_repeatable`]). A replica that dies (killed,
//! OOM, a node lost) takes the calls in flight on its connection with it; without this
//! each would reach its caller as UNAVAILABLE although another replica could answer.
//! Only a failure of the connection counts (no answer head arrived): an answer, even
//! an error status, is the backend's and is passed on; a call past its deadline is not
//! sent again. Such a request is held in memory until answered (one message: vern has
//! no client-streaming RPC).

use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, RwLock, Weak};
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use tonic::body::Body;
use tonic::transport::{Channel, Endpoint, Uri};
use tower::{Service, ServiceExt};

/// How often a name is resolved again (a headless Service's record follows its ready
/// pods; CoreDNS answers with a 5 s TTL by default).
pub const RESOLVE_EVERY: Duration = Duration::from_secs(5);
/// Shortest pause between two resolutions (after connection errors).
const RESOLVE_AT_MOST_EVERY: Duration = Duration::from_millis(500);
/// How long a backend whose connection failed is skipped while others are up.
const DOWN_FOR: Duration = Duration::from_secs(2);

/// A call carrying this header (a replica's index, from 0) goes to that backend of the
/// service, in address order, not to the balancer's choice; the answer carries
/// [`REPLICAS_HEADER`] and [`REPLICA_ADDR_HEADER`]. For operators' tools that must ask
/// every replica (`vern keys status`); the gateway passes it only on key operations.
pub const REPLICA_HEADER: &str = "x-vern-replica";
/// How many backends the service has now, on the answer of a pinned call.
pub const REPLICAS_HEADER: &str = "x-vern-replicas";
/// The address of the backend that answered a pinned call.
pub const REPLICA_ADDR_HEADER: &str = "x-vern-replica-addr";

/// An error of a balanced call: the backend's transport error, or no backend at all.
pub type BalanceError = Box<dyn std::error::Error + Send + Sync>;

/// How channels to one service are set up.
#[derive(Clone, Debug)]
pub struct Settings {
    /// Connection timeout.
    pub connect_timeout: Duration,
    /// Default deadline of a call (a call's own `grpc-timeout` still applies).
    pub timeout: Option<Duration>,
    /// HTTP/2 keep-alive pings, so a dead peer is noticed between calls.
    pub keepalive: Option<Duration>,
    /// Which RPC paths may be sent again after a failed connection (see the module
    /// docs); [`crate::permissions::is_repeatable`] unless a test says otherwise.
    pub repeatable: fn(&str) -> bool,
    /// The largest request held to be sent again. A larger one (beyond the services'
    /// default message limit, which they refuse anyway) is streamed on once, as it
    /// comes: the balancer never holds more than this of a caller's request.
    pub retry_buffer: usize,
}

/// Default [`Settings::retry_buffer`]: the services' default message limit (4 MiB) and
/// the gRPC frame header.
pub const RETRY_BUFFER: usize = 4 * 1024 * 1024 + 5;

impl Default for Settings {
    fn default() -> Self {
        Self {
            connect_timeout: Duration::from_secs(5),
            timeout: None,
            keepalive: Some(Duration::from_secs(30)),
            repeatable: crate::permissions::is_repeatable,
            retry_buffer: RETRY_BUFFER,
        }
    }
}

/// A channel spreading calls over a service's backends (see the module docs). Cheap
/// to clone; the resolver stops when the last clone is dropped.
#[derive(Clone)]
pub struct Balanced {
    shared: Arc<Shared>,
}

impl std::fmt::Debug for Balanced {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Balanced")
            .field("target", &self.shared.target.origin)
            .field("backends", &self.backends().len())
            .finish()
    }
}

struct Target {
    /// The URL as configured (the `:authority` calls carry).
    origin: Uri,
    scheme: String,
    host: String,
    port: u16,
    /// The Unix socket every call goes to, instead of resolving `host`.
    unix: Option<std::path::PathBuf>,
}

struct Shared {
    target: Target,
    settings: Settings,
    backends: RwLock<Arc<Vec<Arc<Backend>>>>,
    next: AtomicUsize,
    /// Wakes the resolver early (a connection error).
    resolve_now: Arc<tokio::sync::Notify>,
    /// Bumped after every resolution, so a first call can wait for the first one.
    resolved: tokio::sync::watch::Sender<u64>,
    started: Instant,
}

/// One address of the service.
struct Backend {
    addr: SocketAddr,
    channel: Channel,
    in_flight: AtomicUsize,
    /// Milliseconds since `Shared::started` until which the backend is skipped.
    down_until_ms: AtomicU64,
}

impl Balanced {
    /// A lazily connected channel to `url`; resolving starts at once when it names a
    /// host. Must be called inside a tokio runtime.
    pub fn new(url: &str, settings: Settings) -> Result<Self, tonic::transport::Error> {
        // A Unix socket (`unix:/path`, as `vern dev`'s internal listener): one backend.
        let unix = crate::client::unix_socket_path(url);
        let url = if unix.is_some() {
            "http://localhost"
        } else {
            url
        };
        // Validates the URL the way tonic does.
        let endpoint = Endpoint::from_shared(url.to_owned())?;
        let origin = endpoint.uri().clone();
        let scheme = origin.scheme_str().unwrap_or("http").to_owned();
        let host = origin
            .host()
            .unwrap_or("localhost")
            .trim_start_matches('[')
            .trim_end_matches(']')
            .to_owned();
        let port = origin
            .port_u16()
            .unwrap_or(if scheme == "https" { 443 } else { 80 });
        let literal = host.parse::<std::net::IpAddr>().ok();
        let (resolved, _) = tokio::sync::watch::channel(0);
        let shared = Arc::new(Shared {
            target: Target {
                origin,
                scheme,
                host,
                port,
                unix: unix.clone(),
            },
            settings,
            backends: RwLock::new(Arc::new(Vec::new())),
            next: AtomicUsize::new(0),
            resolve_now: Arc::new(tokio::sync::Notify::new()),
            resolved,
            started: Instant::now(),
        });
        match (&unix, literal) {
            (Some(_), _) => shared.replace(vec![crate::listen::LOCAL_PEER]),
            (None, Some(ip)) => shared.replace(vec![SocketAddr::new(ip, port)]),
            (None, None) => spawn_resolver(&shared),
        }
        Ok(Self { shared })
    }

    /// The addresses currently balanced over.
    pub fn backends(&self) -> Vec<SocketAddr> {
        self.shared.snapshot().iter().map(|b| b.addr).collect()
    }

    /// Resolves now (for tests and after a topology change).
    pub fn resolve_now(&self) {
        self.shared.resolve_now.notify_one();
    }
}

impl Shared {
    fn snapshot(&self) -> Arc<Vec<Arc<Backend>>> {
        match self.backends.read() {
            Ok(b) => b.clone(),
            Err(poisoned) => poisoned.into_inner().clone(),
        }
    }

    fn now_ms(&self) -> u64 {
        self.started.elapsed().as_millis() as u64
    }

    /// Sets the backends to `addrs`, keeping the connections of addresses still there.
    fn replace(&self, mut addrs: Vec<SocketAddr>) {
        addrs.sort();
        addrs.dedup();
        let current = self.snapshot();
        if current.iter().map(|b| b.addr).eq(addrs.iter().copied()) {
            return;
        }
        let next: Vec<Arc<Backend>> = addrs
            .into_iter()
            .filter_map(|addr| {
                if let Some(b) = current.iter().find(|b| b.addr == addr) {
                    return Some(b.clone());
                }
                self.connect(addr)
            })
            .collect();
        tracing::info!(
            service = %self.target.origin,
            backends = next.len(),
            "service addresses changed"
        );
        let next = Arc::new(next);
        match self.backends.write() {
            Ok(mut b) => *b = next,
            Err(poisoned) => *poisoned.into_inner() = next,
        }
    }

    fn connect(&self, addr: SocketAddr) -> Option<Arc<Backend>> {
        let t = &self.target;
        // `http` even for TLS: the TLS is [`crate::tls::connector`]'s, and tonic, were
        // its own TLS compiled in by another crate, would refuse an https endpoint
        // without its configuration. Requests still carry the configured origin.
        let endpoint = Endpoint::from_shared(format!("http://{addr}")).ok()?;
        let mut endpoint = endpoint
            // Calls name the service as configured, not the pod's address.
            .origin(t.origin.clone())
            .connect_timeout(self.settings.connect_timeout)
            .tcp_nodelay(true);
        if let Some(every) = self.settings.keepalive {
            endpoint = endpoint.http2_keep_alive_interval(every);
        }
        if let Some(timeout) = self.settings.timeout {
            endpoint = endpoint.timeout(timeout);
        }
        let channel = if let Some(path) = &t.unix {
            crate::client::unix_channel(endpoint, path.clone())
        } else if t.scheme == "https" {
            // Verified against the configured host's name, not the pod's address.
            let tls = match crate::tls::client() {
                Ok(tls) => tls,
                Err(e) => {
                    tracing::error!(error = %e, "client TLS does not load; no connection");
                    return None;
                }
            };
            let name = match crate::tls::server_name(&t.host) {
                Ok(n) => n,
                Err(e) => {
                    tracing::error!(error = %e, host = %t.host, "not a TLS server name");
                    return None;
                }
            };
            endpoint.connect_with_connector_lazy(crate::tls::connector(tls, name))
        } else {
            endpoint.connect_lazy()
        };
        Some(Arc::new(Backend {
            addr,
            channel,
            in_flight: AtomicUsize::new(0),
            down_until_ms: AtomicU64::new(0),
        }))
    }

    /// The less loaded of two backends, preferring those whose connection is up.
    fn pick(&self) -> Option<Arc<Backend>> {
        let all = self.snapshot();
        let now = self.now_ms();
        let up = |b: &&Arc<Backend>| b.down_until_ms.load(Ordering::Relaxed) <= now;
        // Every call passes here: count and index, no allocation. When all are down,
        // all are candidates (one may be back).
        let n_up = all.iter().filter(up).count();
        let nth = |k: usize| {
            if n_up == 0 {
                all.get(k)
            } else {
                all.iter().filter(up).nth(k)
            }
        };
        let n = if n_up == 0 { all.len() } else { n_up };
        match n {
            0 => None,
            1 => nth(0).cloned(),
            n => {
                // Round-robin over pairs, the less busy of each pair wins: spreads evenly
                // under light load and steers away from a slow backend under heavy load.
                let i = self.next.fetch_add(1, Ordering::Relaxed) % n;
                let (a, b) = (nth(i)?, nth((i + 1) % n)?);
                let busy = |x: &Backend| x.in_flight.load(Ordering::Relaxed);
                Some(if busy(b) < busy(a) { b } else { a }.clone())
            }
        }
    }

    /// A call sent to the `n`th backend in address order (see [`REPLICA_HEADER`]).
    async fn call_replica(
        &self,
        n: usize,
        req: http::Request<Body>,
    ) -> Result<http::Response<Body>, BalanceError> {
        // The first resolution, as for any call.
        self.backend().await?;
        let all = self.snapshot();
        let Some(backend) = all.get(n).cloned() else {
            return Ok(tonic::Status::out_of_range(format!(
                "no replica {n}: the service has {} now",
                all.len()
            ))
            .into_http());
        };
        let mut channel = backend.channel.clone();
        let mut resp = channel.ready().await?.call(req).await?;
        let headers = resp.headers_mut();
        if let Ok(v) = http::HeaderValue::from_str(&all.len().to_string()) {
            headers.insert(REPLICAS_HEADER, v);
        }
        if let Ok(v) = http::HeaderValue::from_str(&backend.addr.to_string()) {
            headers.insert(REPLICA_ADDR_HEADER, v);
        }
        Ok(resp)
    }

    fn mark_down(&self, backend: &Backend) {
        backend.down_until_ms.store(
            self.now_ms() + DOWN_FOR.as_millis() as u64,
            Ordering::Relaxed,
        );
        self.resolve_now.notify_one();
    }

    /// A backend, waiting (up to the connect timeout) for a first resolution.
    async fn backend(&self) -> Result<Arc<Backend>, BalanceError> {
        if let Some(b) = self.pick() {
            return Ok(b);
        }
        let mut resolved = self.resolved.subscribe();
        self.resolve_now.notify_one();
        let wait = async {
            loop {
                if resolved.changed().await.is_err() {
                    return None;
                }
                if let Some(b) = self.pick() {
                    return Some(b);
                }
            }
        };
        match tokio::time::timeout(self.settings.connect_timeout, wait).await {
            Ok(Some(b)) => Ok(b),
            _ => Err(format!("no address for {}:{}", self.target.host, self.target.port).into()),
        }
    }
}

fn spawn_resolver(shared: &Arc<Shared>) {
    let weak: Weak<Shared> = Arc::downgrade(shared);
    let wake = shared.resolve_now.clone();
    let host = shared.target.host.clone();
    let port = shared.target.port;
    tokio::spawn(async move {
        loop {
            let found = tokio::net::lookup_host((host.as_str(), port)).await;
            let Some(shared) = weak.upgrade() else { return };
            match found {
                Ok(addrs) => {
                    let addrs: Vec<SocketAddr> = addrs.collect();
                    if addrs.is_empty() {
                        tracing::warn!(%host, "service name resolved to no address: keeping the last ones");
                    } else {
                        shared.replace(addrs);
                    }
                }
                Err(e) => {
                    tracing::warn!(%host, error = %e, "resolving a service name failed: keeping the last addresses")
                }
            }
            shared.resolved.send_modify(|n| *n += 1);
            drop(shared);
            tokio::select! {
                _ = tokio::time::sleep(RESOLVE_EVERY) => {}
                _ = wake.notified() => tokio::time::sleep(RESOLVE_AT_MOST_EVERY).await,
            }
        }
    });
}

/// Counts a call in flight on its backend until dropped.
struct InFlight(Arc<Backend>);

impl Drop for InFlight {
    fn drop(&mut self) {
        self.0.in_flight.fetch_sub(1, Ordering::Relaxed);
    }
}

impl Service<http::Request<Body>> for Balanced {
    type Response = http::Response<Body>;
    type Error = BalanceError;
    type Future = std::pin::Pin<
        Box<dyn std::future::Future<Output = Result<Self::Response, Self::Error>> + Send>,
    >;

    fn poll_ready(&mut self, _cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        // Readiness is awaited per call on the chosen backend's channel.
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, req: http::Request<Body>) -> Self::Future {
        let shared = self.shared.clone();
        let pinned = req
            .headers()
            .get(REPLICA_HEADER)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.parse::<usize>().ok());
        Box::pin(async move {
            if let Some(n) = pinned {
                return shared.call_replica(n, req).await;
            }
            if !(shared.settings.repeatable)(req.uri().path()) {
                let backend = shared.backend().await?;
                return shared.call_on(&backend, req).await;
            }
            // Kept to be sent again: the head is cloned, the one message collected
            // (up to the retry buffer; a larger one goes on once, streamed).
            let (head, body) = req.into_parts();
            let body = match held(body, shared.settings.retry_buffer).await? {
                Held::Whole(bytes) => bytes,
                Held::TooLarge(body) => {
                    let backend = shared.backend().await?;
                    return shared
                        .call_on(&backend, http::Request::from_parts(head, body))
                        .await;
                }
            };
            let again = || {
                http::Request::from_parts(
                    head.clone(),
                    Body::new(http_body_util::Full::new(body.clone())),
                )
            };
            let first = shared.backend().await?;
            match shared.call_on(&first, again()).await {
                Err(e) if !past_deadline(&*e) => {
                    // `first` is marked down now, so another backend is picked if
                    // there is one that is up.
                    let second = shared.backend().await?;
                    tracing::info!(
                        service = %shared.target.origin,
                        other_backend = !Arc::ptr_eq(&first, &second),
                        "a backend failed before answering: the call is sent again"
                    );
                    shared.call_on(&second, again()).await
                }
                other => other,
            }
        })
    }
}

impl Shared {
    /// Sends `req` to `backend`, counting it in flight; a failure is the connection's
    /// (statuses arrive as answers) and marks the backend down.
    async fn call_on(
        &self,
        backend: &Arc<Backend>,
        req: http::Request<Body>,
    ) -> Result<http::Response<Body>, BalanceError> {
        backend.in_flight.fetch_add(1, Ordering::Relaxed);
        let _counted = InFlight(backend.clone());
        let mut channel = backend.channel.clone();
        let result = match channel.ready().await {
            Ok(ch) => ch.call(req).await,
            Err(e) => Err(e),
        };
        result.map_err(|e| {
            self.mark_down(backend);
            Box::new(e) as BalanceError
        })
    }
}

/// A request body read for a retry.
enum Held {
    /// The whole body, at most the retry buffer.
    Whole(tonic::codegen::Bytes),
    /// Longer: what was read, then the rest as it comes.
    TooLarge(Body),
}

/// Reads `body` to its end while it stays within `cap` bytes; past that, hands back
/// a body that replays the frames read and streams the rest.
async fn held(mut body: Body, cap: usize) -> Result<Held, tonic::Status> {
    use http_body_util::BodyExt;
    let mut frames = vec![];
    let mut size = 0usize;
    while let Some(frame) = body.frame().await {
        let frame = frame?;
        size = size.saturating_add(frame.data_ref().map_or(0, |d| d.len()));
        // A frame that is not data (trailers; gRPC requests have none) is passed on
        // as it is, unbuffered, like an oversized body.
        let plain = frame.is_data();
        frames.push(frame);
        if size > cap || !plain {
            let read = tokio_stream::iter(frames.into_iter().map(Ok::<_, tonic::Status>));
            let rest = http_body_util::BodyStream::new(body);
            let chained = tokio_stream::StreamExt::chain(read, rest);
            return Ok(Held::TooLarge(Body::new(http_body_util::StreamBody::new(
                chained,
            ))));
        }
    }
    let mut whole = Vec::with_capacity(size);
    for f in frames {
        if let Ok(data) = f.into_data() {
            whole.extend_from_slice(&data);
        }
    }
    Ok(Held::Whole(whole.into()))
}

/// Whether a call failed because its deadline (the channel's timeout) passed: sending
/// it again would only be late again.
fn past_deadline(err: &(dyn std::error::Error + 'static)) -> bool {
    let mut cur = Some(err);
    while let Some(e) = cur {
        if e.is::<tonic::TimeoutExpired>() {
            return true;
        }
        cur = e.source();
    }
    false
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn an_address_is_one_backend_and_a_name_resolves_to_every_address() {
        let one = Balanced::new("http://127.0.0.1:9", Settings::default()).expect("url");
        assert_eq!(one.backends(), vec!["127.0.0.1:9".parse().expect("addr")]);

        // `localhost` resolves through the system resolver, like a headless Service.
        let named = Balanced::new("http://localhost:9", Settings::default()).expect("url");
        let backend = named.shared.backend().await.expect("resolved");
        assert_eq!(backend.addr.port(), 9);
        assert!(backend.addr.ip().is_loopback());
        assert!(!named.backends().is_empty());
    }

    /// A health server on a port of its own; its address.
    async fn health_server() -> SocketAddr {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind");
        let addr = listener.local_addr().expect("addr");
        let (_reporter, health) = tonic_health::server::health_reporter();
        tokio::spawn(
            tonic::transport::Server::builder()
                .add_service(health)
                .serve_with_incoming(crate::listen::incoming_plain(
                    listener,
                    Duration::from_secs(5),
                    tokio::sync::watch::channel(false).1,
                )),
        );
        addr
    }

    /// A call whose backend refuses the connection is answered by the other backend
    /// when the RPC may be repeated, and fails when it may not.
    #[tokio::test]
    async fn a_repeatable_call_whose_backend_fails_is_answered_by_another() {
        use tonic_health::pb::{HealthCheckRequest, health_client::HealthClient};
        let good = health_server().await;
        let dead = {
            let l = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
            l.local_addr().expect("addr")
        };
        for repeatable in [true, false] {
            let b = Balanced::new(
                &format!("http://{good}"),
                Settings {
                    repeatable: if repeatable { |_| true } else { |_| false },
                    ..Settings::default()
                },
            )
            .expect("url");
            b.shared.replace(vec![dead, good]);
            // The dead backend is picked first: the good one looks busy.
            let all = b.shared.snapshot();
            let good_backend = all.iter().find(|x| x.addr == good).expect("good");
            good_backend.in_flight.store(10, Ordering::Relaxed);
            let answer = HealthClient::new(b.clone())
                .check(HealthCheckRequest::default())
                .await;
            assert_eq!(
                answer.is_ok(),
                repeatable,
                "repeatable={repeatable}: {answer:?}"
            );
            let dead_backend = all.iter().find(|x| x.addr == dead).expect("dead");
            assert!(
                dead_backend.down_until_ms.load(Ordering::Relaxed) > 0,
                "the refusing backend was tried first and marked down"
            );
        }
    }

    /// A request larger than the retry buffer is not held: it goes on once, streamed,
    /// and arrives whole (the frames read and the rest); it is not sent again.
    #[tokio::test]
    async fn a_request_larger_than_the_retry_buffer_goes_on_once_unheld() {
        use tonic_health::pb::{HealthCheckRequest, health_client::HealthClient};
        let good = health_server().await;
        let dead = {
            let l = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
            l.local_addr().expect("addr")
        };
        let settings = Settings {
            repeatable: |_| true,
            retry_buffer: 1,
            ..Settings::default()
        };
        // Alone with a working backend: answered, so the replayed frames and the rest
        // made a whole request.
        let b = Balanced::new(&format!("http://{good}"), settings.clone()).expect("url");
        let answer = HealthClient::new(b)
            .check(HealthCheckRequest {
                service: "x".repeat(64),
            })
            .await;
        assert_eq!(
            answer.map(|_| ()).map_err(|s| s.code()),
            Err(tonic::Code::NotFound),
            "the health server read the service name it was sent"
        );
        // Behind a dead backend it is not sent again.
        let b = Balanced::new(&format!("http://{good}"), settings).expect("url");
        b.shared.replace(vec![dead, good]);
        let all = b.shared.snapshot();
        let good_backend = all.iter().find(|x| x.addr == good).expect("good");
        good_backend.in_flight.store(10, Ordering::Relaxed);
        let answer = HealthClient::new(b.clone())
            .check(HealthCheckRequest {
                service: "x".repeat(64),
            })
            .await;
        // The health server's NotFound would mean it was sent again and answered.
        assert!(
            matches!(&answer, Err(s) if s.code() != tonic::Code::NotFound),
            "not held, so not sent again: {answer:?}"
        );
    }

    #[tokio::test]
    async fn a_pinned_call_reaches_the_replica_it_names() {
        let (a, b) = (health_server().await, health_server().await);
        let balanced = Balanced::new(&format!("http://{a}"), Settings::default()).expect("url");
        balanced.shared.replace(vec![a, b]);
        let mut sorted = [a, b];
        sorted.sort();
        let ask = |n: usize| {
            let channel = balanced.clone();
            async move {
                let mut req = tonic::Request::new(tonic_health::pb::HealthCheckRequest::default());
                req.metadata_mut()
                    .insert(REPLICA_HEADER, n.to_string().parse().expect("value"));
                tonic_health::pb::health_client::HealthClient::new(channel)
                    .check(req)
                    .await
            }
        };
        for (n, expected) in sorted.iter().enumerate() {
            // Asked twice: the balancer would alternate; a pinned call does not.
            for _ in 0..2 {
                let answer = ask(n).await.expect("answer");
                let meta = answer.metadata();
                assert_eq!(
                    meta.get(REPLICA_ADDR_HEADER).and_then(|v| v.to_str().ok()),
                    Some(expected.to_string().as_str())
                );
                assert_eq!(
                    meta.get(REPLICAS_HEADER).and_then(|v| v.to_str().ok()),
                    Some("2")
                );
            }
        }
        let beyond = ask(2).await.expect_err("no third replica");
        assert_eq!(beyond.code(), tonic::Code::OutOfRange);
    }

    #[tokio::test]
    async fn calls_alternate_between_backends_and_skip_one_that_failed() {
        let b = Balanced::new("http://127.0.0.1:9", Settings::default()).expect("url");
        b.shared.replace(vec![
            "127.0.0.2:9".parse().expect("addr"),
            "127.0.0.3:9".parse().expect("addr"),
        ]);
        let picks: Vec<SocketAddr> = (0..10)
            .map(|_| b.shared.pick().expect("backend").addr)
            .collect();
        let first = picks
            .iter()
            .filter(|a| a.ip().to_string() == "127.0.0.2")
            .count();
        assert_eq!(first, 5, "even spread without load: {picks:?}");

        let down = b.shared.snapshot()[0].clone();
        b.shared.mark_down(&down);
        for _ in 0..10 {
            assert_ne!(b.shared.pick().expect("backend").addr, down.addr);
        }

        // A busy backend loses its pairings.
        let all = b.shared.snapshot();
        all[0].down_until_ms.store(0, Ordering::Relaxed);
        all[0].in_flight.store(10, Ordering::Relaxed);
        for _ in 0..10 {
            assert_eq!(b.shared.pick().expect("backend").addr, all[1].addr);
        }
    }

    #[tokio::test]
    async fn keeps_connections_of_addresses_still_resolved() {
        let b = Balanced::new("http://127.0.0.1:9", Settings::default()).expect("url");
        let before = b.shared.snapshot()[0].clone();
        b.shared.replace(vec![
            "127.0.0.1:9".parse().expect("addr"),
            "127.0.0.2:9".parse().expect("addr"),
        ]);
        let after = b.shared.snapshot();
        assert_eq!(after.len(), 2);
        assert!(after.iter().any(|x| Arc::ptr_eq(x, &before)));
    }

    #[tokio::test]
    async fn a_call_to_a_closed_port_fails_and_marks_the_backend_down() {
        // Port 9 (discard) is closed on loopback here.
        let mut b = Balanced::new("http://127.0.0.1:9", Settings::default()).expect("url");
        let req = http::Request::builder()
            .uri("http://127.0.0.1:9/x.Y/Z")
            .body(Body::empty())
            .expect("request");
        assert!(b.call(req).await.is_err());
        let backend = b.shared.snapshot()[0].clone();
        assert!(backend.down_until_ms.load(Ordering::Relaxed) > 0);
        assert_eq!(backend.in_flight.load(Ordering::Relaxed), 0);
    }
}
