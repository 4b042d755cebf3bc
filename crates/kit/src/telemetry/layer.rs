//! The tower pieces of telemetry: [`TelemetryLayer`] on the server (a span and the RED
//! metrics per call) and [`Traced`] around outgoing channels (a client span and the
//! `traceparent` header). A call ends when its response's trailers (the gRPC status)
//! have been sent, or when the response is dropped (CANCELLED).

use std::pin::Pin;
use std::task::{Context as TaskContext, Poll};
use std::time::Instant;

use opentelemetry::trace::{FutureExt as _, SpanKind, Status, TraceContextExt as _, Tracer as _};
use opentelemetry::{Context, KeyValue};
use opentelemetry_sdk::trace::SdkTracer;
use tonic::body::Body;
use tower::{Layer, Service};
use tracing::Instrument as _;

use super::Active;
use crate::metrics::{self, CODE_NAMES, Method};

type BoxFuture<T> = Pin<Box<dyn std::future::Future<Output = T> + Send>>;

/// The gRPC status of a trailers-only response (or of trailers).
fn grpc_status(headers: &http::HeaderMap) -> Option<i32> {
    headers
        .get("grpc-status")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse().ok())
}

fn rpc_attributes(m: &Method) -> Vec<KeyValue> {
    vec![
        KeyValue::new("rpc.system", "grpc"),
        KeyValue::new("rpc.service", m.service),
        KeyValue::new("rpc.method", m.method),
    ]
}

/// What to do when a call ends: count it, end its span.
struct CallEnd {
    started: Instant,
    method: Option<&'static Method>,
    span: Option<Context>,
    client: bool,
}

impl CallEnd {
    fn finish(self, code: i32) {
        if let Some(m) = self.method {
            m.record(code, self.started.elapsed());
        }
        if let Some(cx) = self.span {
            let span = cx.span();
            span.set_attribute(KeyValue::new("rpc.grpc.status_code", i64::from(code)));
            // Server spans fail on the codes that mean the server failed (OpenTelemetry
            // semantic conventions); client spans on any error. The status carries the
            // code's name only, never the message.
            let failed = if self.client {
                code != 0
            } else {
                matches!(code, 2 | 4 | 12 | 13 | 14 | 15)
            };
            if failed {
                let name = usize::try_from(code)
                    .ok()
                    .and_then(|c| CODE_NAMES.get(c))
                    .copied()
                    .unwrap_or("UNKNOWN");
                span.set_status(Status::error(name));
            }
            span.end();
        }
    }
}

/// A response body that reports the call's end when its trailers pass (or it is
/// dropped early).
struct ObservedBody {
    inner: Body,
    end: Option<CallEnd>,
}

impl Drop for ObservedBody {
    fn drop(&mut self) {
        if let Some(end) = self.end.take() {
            end.finish(1);
        }
    }
}

impl http_body::Body for ObservedBody {
    type Data = <Body as http_body::Body>::Data;
    type Error = <Body as http_body::Body>::Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut TaskContext<'_>,
    ) -> Poll<Option<Result<http_body::Frame<Self::Data>, Self::Error>>> {
        let polled = Pin::new(&mut self.inner).poll_frame(cx);
        let code = match &polled {
            Poll::Ready(Some(Ok(frame))) => {
                frame.trailers_ref().map(|t| grpc_status(t).unwrap_or(2))
            }
            Poll::Ready(Some(Err(_))) => Some(2),
            Poll::Ready(None) => Some(2),
            Poll::Pending => None,
        };
        if let Some(code) = code
            && let Some(end) = self.end.take()
        {
            end.finish(code);
        }
        polled
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> http_body::SizeHint {
        self.inner.size_hint()
    }
}

fn observe(resp: http::Response<Body>, end: CallEnd) -> http::Response<Body> {
    if let Some(code) = grpc_status(resp.headers()) {
        end.finish(code);
        return resp;
    }
    resp.map(|inner| {
        Body::new(ObservedBody {
            inner,
            end: Some(end),
        })
    })
}

/// The server layer: RED metrics for every call, and a server span (child of the
/// caller's `traceparent`) for every RPC when traces are exported. Health and reflection
/// are counted, not traced.
#[derive(Clone, Debug)]
pub struct TelemetryLayer {
    tracer: Option<SdkTracer>,
}

impl TelemetryLayer {
    pub(crate) fn new(tracer: Option<SdkTracer>) -> Self {
        Self { tracer }
    }
}

impl<S> Layer<S> for TelemetryLayer {
    type Service = Telemetered<S>;
    fn layer(&self, inner: S) -> Self::Service {
        Telemetered {
            inner,
            tracer: self.tracer.clone(),
        }
    }
}

/// The service of [`TelemetryLayer`].
#[derive(Clone, Debug)]
pub struct Telemetered<S> {
    inner: S,
    tracer: Option<SdkTracer>,
}

impl<S, B> Service<http::Request<B>> for Telemetered<S>
where
    S: Service<http::Request<B>, Response = http::Response<Body>> + Clone + Send + 'static,
    S::Future: Send + 'static,
    S::Error: Send + 'static,
    B: Send + 'static,
{
    type Response = http::Response<Body>;
    type Error = S::Error;
    type Future = BoxFuture<Result<Self::Response, Self::Error>>;

    fn poll_ready(&mut self, cx: &mut TaskContext<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, req: http::Request<B>) -> Self::Future {
        let started = Instant::now();
        let method = metrics::method(req.uri().path());
        let clone = self.inner.clone();
        let mut inner = std::mem::replace(&mut self.inner, clone);
        let tracer = match &self.tracer {
            Some(t) if !method.infrastructure => t,
            _ => {
                let fut = inner.call(req);
                let end = CallEnd {
                    started,
                    method: Some(method),
                    span: None,
                    client: false,
                };
                return Box::pin(respond(fut, end));
            }
        };
        let parent = super::extract(req.headers());
        let span = tracer
            .span_builder(method.span_name)
            .with_kind(SpanKind::Server)
            .with_attributes(rpc_attributes(method))
            .start_with_context(tracer, &parent);
        let cx = parent.with_span(span).with_value(Active {
            tracer: tracer.clone(),
        });
        let log = tracing::info_span!(
            "rpc",
            trace_id = %cx.span().span_context().trace_id()
        );
        let fut = {
            let _attached = cx.clone().attach();
            let _entered = log.enter();
            inner.call(req)
        };
        let end = CallEnd {
            started,
            method: Some(method),
            span: Some(cx.clone()),
            client: false,
        };
        Box::pin(respond(fut, end).with_context(cx).instrument(log))
    }
}

async fn respond<F, E>(fut: F, end: CallEnd) -> Result<http::Response<Body>, E>
where
    F: std::future::Future<Output = Result<http::Response<Body>, E>>,
{
    match fut.await {
        Ok(resp) => Ok(observe(resp, end)),
        Err(e) => {
            let code = if end.client { 14 } else { 2 };
            end.finish(code);
            Err(e)
        }
    }
}

/// An outgoing channel that, inside a traced call, opens a client span per call and
/// sends it as the callee's parent (`traceparent`). Outside traced calls it adds nothing.
#[derive(Clone, Debug)]
pub struct Traced<S> {
    inner: S,
}

impl<S> Traced<S> {
    /// Wraps `inner` (e.g. a `tonic::transport::Channel`).
    pub fn new(inner: S) -> Self {
        Self { inner }
    }
}

impl<S> Service<http::Request<Body>> for Traced<S>
where
    S: Service<http::Request<Body>, Response = http::Response<Body>>,
    S::Future: Send + 'static,
    S::Error: 'static,
{
    type Response = http::Response<Body>;
    type Error = S::Error;
    type Future = BoxFuture<Result<Self::Response, Self::Error>>;

    fn poll_ready(&mut self, cx: &mut TaskContext<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, mut req: http::Request<Body>) -> Self::Future {
        let method = metrics::method(req.uri().path());
        let span = if method.infrastructure {
            None
        } else {
            super::child(method.span_name, SpanKind::Client, rpc_attributes(method))
        };
        let Some(cx) = span else {
            return Box::pin(self.inner.call(req));
        };
        super::inject(&cx, req.headers_mut());
        let fut = self.inner.call(req);
        let end = CallEnd {
            started: Instant::now(),
            method: None,
            span: Some(cx),
            client: true,
        };
        Box::pin(respond(fut, end))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tower::ServiceExt;

    fn ok_service() -> impl Service<
        http::Request<Body>,
        Response = http::Response<Body>,
        Error = std::convert::Infallible,
        Future = impl Send,
    > + Clone
    + Send
    + 'static {
        tower::service_fn(|_req: http::Request<Body>| async {
            // A unary success: status in the trailers.
            let mut trailers = http::HeaderMap::new();
            trailers.insert("grpc-status", "0".parse().expect("hdr"));
            let body = http_body_util_like::with_trailers(trailers);
            Ok::<_, std::convert::Infallible>(http::Response::new(body))
        })
    }

    mod http_body_util_like {
        use super::*;
        /// A body that yields only trailers.
        pub fn with_trailers(t: http::HeaderMap) -> Body {
            struct T(Option<http::HeaderMap>);
            impl http_body::Body for T {
                type Data = <Body as http_body::Body>::Data;
                type Error = tonic::Status;
                fn poll_frame(
                    mut self: Pin<&mut Self>,
                    _cx: &mut TaskContext<'_>,
                ) -> Poll<Option<Result<http_body::Frame<Self::Data>, Self::Error>>>
                {
                    Poll::Ready(self.0.take().map(|t| Ok(http_body::Frame::trailers(t))))
                }
            }
            Body::new(T(Some(t)))
        }
    }

    #[tokio::test]
    async fn counts_calls_when_their_trailers_pass() {
        crate::metrics::enable();
        let path = crate::permissions::rpc_with(crate::auth::Permission::RetentionRead);
        let (service, method) = path
            .trim_start_matches('/')
            .split_once('/')
            .expect("a gRPC path");
        let svc = TelemetryLayer::new(None).layer(ok_service());
        let req = http::Request::builder()
            .uri(path.as_str())
            .body(Body::empty())
            .expect("req");
        let resp = svc.clone().oneshot(req).await.expect("resp");
        let before = crate::metrics::render_prometheus();
        assert!(
            !before.contains(&format!("{service}\",method=\"{method}\",code=\"OK\"}}")),
            "not counted before the body ends"
        );
        let mut body = resp.into_body();
        while let Some(f) =
            std::future::poll_fn(|cx| http_body::Body::poll_frame(Pin::new(&mut body), cx)).await
        {
            f.expect("frame");
        }
        let after = crate::metrics::render_prometheus();
        assert!(after.contains(&format!(
            "vern_rpc_requests_total{{service=\"{service}\",method=\"{method}\",code=\"OK\"}} 1"
        )));
        // A trailers-only error is counted at once; a dropped body is CANCELLED.
        let refusing = tower::service_fn(|_req: http::Request<Body>| async {
            Ok::<_, std::convert::Infallible>(tonic::Status::not_found("x").into_http())
        });
        let svc = TelemetryLayer::new(None).layer(refusing);
        let req = http::Request::builder()
            .uri(path.as_str())
            .body(Body::empty())
            .expect("req");
        let _ = svc.oneshot(req).await.expect("resp");
        let svc = TelemetryLayer::new(None).layer(ok_service());
        let req = http::Request::builder()
            .uri(path.as_str())
            .body(Body::empty())
            .expect("req");
        drop(svc.oneshot(req).await.expect("resp"));
        let text = crate::metrics::render_prometheus();
        assert!(text.contains(&format!("method=\"{method}\",code=\"NOT_FOUND\"}} 1")));
        assert!(text.contains(&format!("method=\"{method}\",code=\"CANCELLED\"}} 1")));
    }
}
