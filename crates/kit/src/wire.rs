//! The codes of requests that cannot be decoded, for every service at once.
//!
//! tonic-prost answers bytes that are not the request message (malformed, truncated,
//! a bad varint, invalid UTF-8 in a string) with INTERNAL, and tonic answers a message
//! over `max_decoding_message_size` with OUT_OF_RANGE. Both are the caller's fault:
//! vern answers INVALID_ARGUMENT and RESOURCE_EXHAUSTED. Both errors happen before the
//! handler runs, so tonic answers them trailers-only (the status in the response
//! headers); [`DecodeErrorLayer`] rewrites the code there and never touches a body.
//! Nothing else is rewritten: the match is on the code and tonic's own message.
//! A response over the encoding limit (trailers after the headers) keeps tonic's
//! OUT_OF_RANGE: it is a server-side condition the services avoid by design.

use std::task::{Context, Poll};

use http::HeaderValue;
use tonic::Code;
use tower::{Layer, Service};

/// How tonic-prost's message of a prost decode error begins.
const PROST_DECODE: &str = "failed to decode Protobuf message";
/// How tonic's message of a request over the decoding limit begins.
const TOO_LARGE: &str = "Error, decoded message length too large";

/// The code the answer with `headers` is given instead of its own, when it is a
/// trailers-only answer to a request that could not be decoded; `None` otherwise.
pub fn rewritten(headers: &http::HeaderMap) -> Option<Code> {
    let code = headers.get("grpc-status")?.as_bytes();
    let (from, prefix, to) = match code {
        b"13" => (Code::Internal, PROST_DECODE, Code::InvalidArgument),
        b"11" => (Code::OutOfRange, TOO_LARGE, Code::ResourceExhausted),
        _ => return None,
    };
    let status = tonic::Status::from_header_map(headers)?;
    (status.code() == from && status.message().starts_with(prefix)).then_some(to)
}

/// Rewrites the code of tonic's answers to undecodable and oversized requests (see
/// the module documentation).
#[derive(Clone, Copy, Debug, Default)]
pub struct DecodeErrorLayer;

impl<S> Layer<S> for DecodeErrorLayer {
    type Service = DecodeErrors<S>;
    fn layer(&self, inner: S) -> Self::Service {
        DecodeErrors { inner }
    }
}

/// The service of [`DecodeErrorLayer`].
#[derive(Clone, Debug)]
pub struct DecodeErrors<S> {
    inner: S,
}

type BoxFuture<T> = std::pin::Pin<Box<dyn std::future::Future<Output = T> + Send>>;

impl<S, B, R> Service<http::Request<B>> for DecodeErrors<S>
where
    S: Service<http::Request<B>, Response = http::Response<R>>,
    S::Future: Send + 'static,
{
    type Response = http::Response<R>;
    type Error = S::Error;
    type Future = BoxFuture<Result<Self::Response, Self::Error>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, req: http::Request<B>) -> Self::Future {
        let fut = self.inner.call(req);
        Box::pin(async move {
            let mut res = fut.await;
            if let Ok(r) = &mut res
                && let Some(code) = rewritten(r.headers())
            {
                r.headers_mut()
                    .insert("grpc-status", HeaderValue::from(code as i32));
            }
            res
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tonic::Status;
    use tower::ServiceExt;

    async fn through(status: Option<Status>) -> http::HeaderMap {
        let svc = DecodeErrorLayer.layer(tower::service_fn(move |_req: http::Request<()>| {
            let status = status.clone();
            async move {
                Ok::<_, std::convert::Infallible>(match status {
                    Some(s) => s.into_http::<()>(),
                    None => http::Response::new(()),
                })
            }
        }));
        let res = svc.oneshot(http::Request::new(())).await.expect("answer");
        res.headers().clone()
    }

    fn code(h: &http::HeaderMap) -> Option<Code> {
        Status::from_header_map(h).map(|s| s.code())
    }

    #[tokio::test]
    async fn decode_errors_become_invalid_argument_and_resource_exhausted() {
        // The error tonic-prost turns into INTERNAL: invalid UTF-8 in a string field.
        use prost::Message;
        let prost = prost_types::Any::decode(&[0x0a, 0x02, 0xc3, 0x28][..]).expect_err("bad");
        let h = through(Some(Status::internal(prost.to_string()))).await;
        assert_eq!(code(&h), Some(Code::InvalidArgument));
        let msg = Status::from_header_map(&h).expect("status");
        assert!(msg.message().contains("not UTF-8"), "{}", msg.message());
        let h = through(Some(Status::out_of_range(
            "Error, decoded message length too large: found 5242913 bytes, the limit is: 4194304 bytes",
        )))
        .await;
        assert_eq!(code(&h), Some(Code::ResourceExhausted));
    }

    #[tokio::test]
    async fn other_answers_are_left_alone() {
        for s in [
            Status::internal("internal error"),
            Status::internal("Missing request message."),
            Status::out_of_range("page past the end"),
            Status::out_of_range(
                "Error, encoded message length too large: found 5 bytes, the limit is: 4 bytes",
            ),
            Status::invalid_argument("failed to decode Protobuf message: x"),
        ] {
            let want = s.code();
            let h = through(Some(s)).await;
            assert_eq!(code(&h), Some(want));
        }
        let h = through(None).await;
        assert!(h.get("grpc-status").is_none());
    }
}
