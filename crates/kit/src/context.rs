//! The per-call context (who calls, for which tenant) and the tower layer that
//! establishes it: token verification, the permission check and the effective tenant.
//! The gateway and every service run the same layer (defence in depth).

use std::fmt;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::task::{Context, Poll};

use tonic::Status;
use tonic::body::Body;
use tower::{Layer, Service};

use crate::auth::{self, Permission, Principal, Role, TokenError, TokenVerifier};

/// Header a multi-tenant token uses to select the tenant of a call.
pub const TENANT_HEADER: &str = "x-vern-tenant";

/// Calls denied by the auth layer since start (for metrics).
pub static DENIED_CALLS: AtomicU64 = AtomicU64::new(0);

/// A tenant (controller) id. Only built from a verified token or validated input.
#[derive(
    Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, serde::Serialize, serde::Deserialize,
)]
pub struct TenantId(String);

impl TenantId {
    /// Wraps an id that has already been validated.
    pub fn new(id: impl Into<String>) -> Self {
        Self(id.into())
    }

    /// The id as text.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for TenantId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// Who is calling and for which tenant; put in the request extensions by [`AuthLayer`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CallContext {
    /// The token's subject.
    pub sub: String,
    /// The caller's roles.
    pub roles: Vec<Role>,
    /// The effective tenant, if the call has one.
    pub tenant: Option<TenantId>,
    /// The permission the RPC needed.
    pub permission: Permission,
}

impl CallContext {
    /// The context of a request; UNAUTHENTICATED if the auth layer did not run.
    pub fn of<T>(req: &tonic::Request<T>) -> Result<CallContext, Status> {
        req.extensions()
            .get::<CallContext>()
            .cloned()
            .ok_or_else(|| Status::unauthenticated("no verified caller"))
    }

    /// The effective tenant; PERMISSION_DENIED when the call has none.
    pub fn tenant(&self) -> Result<&TenantId, Status> {
        self.tenant
            .as_ref()
            .ok_or_else(|| Status::permission_denied("the call needs a tenant"))
    }

    /// A context for tests and in-process service calls.
    pub fn for_tests(tenant: Option<&str>, roles: &[Role], permission: Permission) -> Self {
        Self {
            sub: "test".into(),
            roles: roles.to_vec(),
            tenant: tenant.map(TenantId::new),
            permission,
        }
    }
}

/// Decides whether a call may proceed and in which context.
pub fn authorize(
    verifier: &TokenVerifier,
    path: &str,
    headers: &http::HeaderMap,
) -> Result<Option<CallContext>, Status> {
    if auth::is_public(path) {
        return Ok(None);
    }
    let token = bearer(headers).map_err(unauthenticated)?;
    let principal = verifier.verify(token).map_err(unauthenticated)?;
    let Some(permission) = auth::permission_for(path) else {
        return Err(deny(
            path,
            "unknown_method",
            Status::unimplemented("unknown method"),
        ));
    };
    if !principal.roles.iter().any(|r| r.grants(permission)) {
        return Err(deny(
            path,
            "role",
            Status::permission_denied("the caller's roles do not allow this call"),
        ));
    }
    let tenant = effective_tenant(&principal, headers, permission)
        .map_err(|msg| deny(path, "tenant", Status::permission_denied(msg)))?;
    Ok(Some(CallContext {
        sub: principal.sub,
        roles: principal.roles,
        tenant,
        permission,
    }))
}

fn effective_tenant(
    principal: &Principal,
    headers: &http::HeaderMap,
    permission: Permission,
) -> Result<Option<TenantId>, &'static str> {
    let selected = match headers.get(TENANT_HEADER) {
        Some(v) => Some(v.to_str().map_err(|_| "x-vern-tenant is not valid text")?),
        None => None,
    };
    let tenant = match (selected, principal.tenants.as_slice()) {
        (Some(sel), names) => {
            if !names.iter().any(|t| t == sel) {
                return Err("the token does not name the tenant selected by x-vern-tenant");
            }
            Some(TenantId::new(sel))
        }
        (None, []) => None,
        (None, [one]) => Some(TenantId::new(one.clone())),
        (None, _) if permission.tenant_scoped() => {
            return Err("the token names several tenants: select one with x-vern-tenant");
        }
        (None, _) => None,
    };
    if permission.tenant_scoped() && tenant.is_none() {
        return Err("the token names no tenant");
    }
    Ok(tenant)
}

fn bearer(headers: &http::HeaderMap) -> Result<&str, TokenError> {
    let value = headers
        .get(http::header::AUTHORIZATION)
        .ok_or(TokenError::Missing)?;
    let value = value.to_str().map_err(|_| TokenError::Malformed)?;
    let token = value
        .strip_prefix("Bearer ")
        .or_else(|| value.strip_prefix("bearer "))
        .ok_or(TokenError::Missing)?;
    Ok(token.trim())
}

fn unauthenticated(e: TokenError) -> Status {
    DENIED_CALLS.fetch_add(1, Ordering::Relaxed);
    crate::metrics::auth_denied(crate::metrics::token_reason(&e));
    // Only the reason; never the token.
    tracing::info!(reason = %e, "call unauthenticated");
    Status::unauthenticated(e.to_string())
}

fn deny(path: &str, reason: &'static str, status: Status) -> Status {
    DENIED_CALLS.fetch_add(1, Ordering::Relaxed);
    crate::metrics::auth_denied(reason);
    // Audit hook until the audit service lands: ids only.
    tracing::info!(method = path, reason, code = ?status.code(), "call denied");
    status
}

/// Hands a denied call to the audit hook, in the chain of the tenant the caller acts
/// for (the one its token names, or the one it selected among them). A token naming no
/// tenant (platform level) belongs to no chain: it is counted and logged only.
fn report_denial(
    sink: &crate::audit::DenialSink,
    verifier: &TokenVerifier,
    path: &str,
    headers: &http::HeaderMap,
    code: tonic::Code,
) {
    let Ok(token) = bearer(headers) else { return };
    let Ok(principal) = verifier.verify(token) else {
        return;
    };
    let selected = headers.get(TENANT_HEADER).and_then(|v| v.to_str().ok());
    let tenant = match (selected, principal.tenants.as_slice()) {
        (Some(sel), names) if names.iter().any(|t| t == sel) => Some(sel.to_owned()),
        (_, [one]) => Some(one.clone()),
        _ => None,
    };
    if let Some(tenant) = tenant {
        sink.report(&tenant, path, &principal, code, headers);
    }
}

/// Tower layer running [`authorize`] before the inner service.
#[derive(Clone, Debug)]
pub struct AuthLayer {
    verifier: Arc<TokenVerifier>,
    denials: Option<crate::audit::DenialSink>,
}

impl AuthLayer {
    /// A layer verifying tokens with `verifier`.
    pub fn new(verifier: TokenVerifier) -> Self {
        Self {
            verifier: Arc::new(verifier),
            denials: None,
        }
    }

    /// Also hands every denied call that names a tenant to `sink` (the audit hook).
    pub fn with_denials(mut self, sink: Option<crate::audit::DenialSink>) -> Self {
        self.denials = sink;
        self
    }
}

impl<S> Layer<S> for AuthLayer {
    type Service = Auth<S>;
    fn layer(&self, inner: S) -> Self::Service {
        Auth {
            inner,
            verifier: self.verifier.clone(),
            denials: self.denials.clone(),
        }
    }
}

/// The service produced by [`AuthLayer`].
#[derive(Clone, Debug)]
pub struct Auth<S> {
    inner: S,
    verifier: Arc<TokenVerifier>,
    denials: Option<crate::audit::DenialSink>,
}

type BoxFuture<T> = std::pin::Pin<Box<dyn std::future::Future<Output = T> + Send>>;

impl<S, B> Service<http::Request<B>> for Auth<S>
where
    S: Service<http::Request<B>, Response = http::Response<Body>> + Clone + Send + 'static,
    S::Future: Send + 'static,
    B: Send + 'static,
{
    type Response = http::Response<Body>;
    type Error = S::Error;
    type Future = BoxFuture<Result<Self::Response, Self::Error>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, mut req: http::Request<B>) -> Self::Future {
        match authorize(&self.verifier, req.uri().path(), req.headers()) {
            Ok(Some(ctx)) => {
                req.extensions_mut().insert(ctx);
            }
            Ok(None) => {}
            Err(status) => {
                if status.code() == tonic::Code::PermissionDenied
                    && let Some(sink) = &self.denials
                {
                    report_denial(
                        sink,
                        &self.verifier,
                        req.uri().path(),
                        req.headers(),
                        status.code(),
                    );
                }
                return Box::pin(async move { Ok(status.into_http()) });
            }
        }
        let clone = self.inner.clone();
        let mut inner = std::mem::replace(&mut self.inner, clone);
        Box::pin(inner.call(req))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::auth::{Claims, sign_hs256};
    use crate::config::AuthConfig;

    fn token(roles: &[&str], tenants: &[&str]) -> String {
        let now = chrono::Utc::now().timestamp();
        sign_hs256(
            &Claims {
                sub: "u1".into(),
                tenant: tenants.iter().map(|s| s.to_string()).collect(),
                roles: roles.iter().map(|s| s.to_string()).collect(),
                iss: "vern-dev".into(),
                aud: "vern".into(),
                exp: now + 60,
                nbf: now,
                iat: now,
            },
            b"k",
        )
        .expect("sign")
    }

    fn headers(token: &str, tenant: Option<&str>) -> http::HeaderMap {
        let mut h = http::HeaderMap::new();
        h.insert(
            http::header::AUTHORIZATION,
            format!("Bearer {token}").parse().expect("header"),
        );
        if let Some(t) = tenant {
            h.insert(TENANT_HEADER, t.parse().expect("header"));
        }
        h
    }

    const GET_TENANT: &str = "/vern.tenants.v1.TenantService/GetTenant";
    const CREATE_PURPOSE: &str = "/vern.tenants.v1.TenantService/CreatePurpose";

    #[test]
    fn public_paths_need_no_token() {
        let v = TokenVerifier::hs256(b"k", &AuthConfig::default());
        assert_eq!(
            authorize(&v, "/grpc.health.v1.Health/Check", &http::HeaderMap::new()).ok(),
            Some(None)
        );
    }

    #[test]
    fn missing_and_bad_tokens_are_unauthenticated() {
        let v = TokenVerifier::hs256(b"k", &AuthConfig::default());
        let e = authorize(&v, GET_TENANT, &http::HeaderMap::new()).expect_err("denied");
        assert_eq!(e.code(), tonic::Code::Unauthenticated);
        let t = token(&["tenant-admin"], &["a"]);
        let e = authorize(&v, GET_TENANT, &headers(&format!("{t}x"), None)).expect_err("denied");
        assert_eq!(e.code(), tonic::Code::Unauthenticated);
        assert!(!e.message().contains(&t[..20]), "token not echoed");
    }

    #[test]
    fn effective_tenant_rules() {
        let v = TokenVerifier::hs256(b"k", &AuthConfig::default());
        let single = token(&["tenant-admin"], &["a"]);
        let ctx = authorize(&v, CREATE_PURPOSE, &headers(&single, None))
            .expect("ok")
            .expect("ctx");
        assert_eq!(ctx.tenant, Some(TenantId::new("a")));
        // selecting a tenant the token does not name
        let e = authorize(&v, CREATE_PURPOSE, &headers(&single, Some("b"))).expect_err("denied");
        assert_eq!(e.code(), tonic::Code::PermissionDenied);
        // multi-tenant token: must select
        let multi = token(&["tenant-admin"], &["a", "b"]);
        assert_eq!(
            authorize(&v, CREATE_PURPOSE, &headers(&multi, None))
                .expect_err("denied")
                .code(),
            tonic::Code::PermissionDenied
        );
        let ctx = authorize(&v, CREATE_PURPOSE, &headers(&multi, Some("b")))
            .expect("ok")
            .expect("ctx");
        assert_eq!(ctx.tenant, Some(TenantId::new("b")));
        // tenant-scoped permission without any tenant
        let none = token(&["tenant-admin"], &[]);
        assert_eq!(
            authorize(&v, CREATE_PURPOSE, &headers(&none, None))
                .expect_err("denied")
                .code(),
            tonic::Code::PermissionDenied
        );
    }

    #[test]
    fn roles_are_checked() {
        let v = TokenVerifier::hs256(b"k", &AuthConfig::default());
        let auditor = token(&["auditor"], &["a"]);
        assert_eq!(
            authorize(&v, GET_TENANT, &headers(&auditor, None))
                .expect_err("denied")
                .code(),
            tonic::Code::PermissionDenied
        );
        let admin = token(&["platform-admin"], &[]);
        let ctx = authorize(
            &v,
            "/vern.tenants.v1.TenantService/CreateTenant",
            &headers(&admin, None),
        )
        .expect("ok")
        .expect("ctx");
        assert_eq!(ctx.tenant, None);
    }
}
