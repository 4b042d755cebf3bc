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
use crate::tenancy::{TenantGate, TenantRefusal};

/// Header a multi-tenant token uses to select the tenant of a call.
pub const TENANT_HEADER: &str = "x-vern-tenant";

/// Header in which a component forwarding a caller's call (the gateway) vouches for
/// it with its own `service` token: an internal port serves a caller's token only
/// with it. The caller's own token is still what the call is authorised as.
pub const VIA_HEADER: &str = "x-vern-via";

/// Whether `headers` carry a valid `service` token in [`VIA_HEADER`].
fn vouched_by_a_component(verifier: &TokenVerifier, headers: &http::HeaderMap) -> bool {
    headers
        .get(VIA_HEADER)
        .and_then(|v| v.to_str().ok())
        .and_then(|t| verifier.verify(t.trim()).ok())
        .is_some_and(|p| p.roles.contains(&Role::Service))
}

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

/// Where a server is reached from, which decides whether the `service` role counts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Exposure {
    /// The gateway's public listener: a token carrying the `service` role is refused,
    /// so service-only RPCs (AppendEvents, ApplyPurposes, PurgeRecords, …) are never
    /// reachable from outside.
    Public,
    /// A service's own listener, reached only by vern's components: a call is served
    /// when its token has the `service` role, or when a component forwarding it (the
    /// gateway) vouches for it in [`VIA_HEADER`]. Anything else is PERMISSION_DENIED
    /// (and audited), so the port is no second, unguarded way in.
    Internal,
}

/// Decides whether a call may proceed and in which context.
pub fn authorize(
    verifier: &TokenVerifier,
    path: &str,
    headers: &http::HeaderMap,
    exposure: Exposure,
) -> Result<Option<CallContext>, Status> {
    if auth::is_public(path) {
        return Ok(None);
    }
    let token = bearer(headers).map_err(unauthenticated)?;
    let principal = verifier.verify(token).map_err(unauthenticated)?;
    if exposure == Exposure::Public && principal.roles.contains(&Role::Service) {
        return Err(deny(
            path,
            "service_role",
            Status::permission_denied("the service role is not accepted through the gateway"),
        ));
    }
    if exposure == Exposure::Internal
        && !principal.roles.contains(&Role::Service)
        && !vouched_by_a_component(verifier, headers)
    {
        return Err(deny(
            path,
            "internal_port",
            Status::permission_denied(
                "this port serves vern's own components only: call the gateway",
            ),
        ));
    }
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

/// The tenant a call acts for. Only a platform role, for a platform-level permission
/// it holds, acts platform-wide (no tenant: the call names the tenant it concerns).
/// Every other caller acts in exactly one tenant: the one its token names, or the one
/// it selects with `x-vern-tenant` among those its token names.
fn effective_tenant(
    principal: &Principal,
    headers: &http::HeaderMap,
    permission: Permission,
) -> Result<Option<TenantId>, &'static str> {
    let selected = match headers.get(TENANT_HEADER) {
        Some(v) => Some(v.to_str().map_err(|_| "x-vern-tenant is not valid text")?),
        None => None,
    };
    if let Some(sel) = selected
        && !principal.tenants.iter().any(|t| t == sel)
    {
        return Err("the token does not name the tenant selected by x-vern-tenant");
    }
    let platform_wide = !auth::tenant_scoped(permission)
        && principal
            .roles
            .iter()
            .any(|r| r.platform_wide() && r.grants(permission));
    if platform_wide {
        return Ok(None);
    }
    let tenant = match (selected, principal.tenants.as_slice()) {
        (Some(sel), _) => TenantId::new(sel),
        (None, [one]) => TenantId::new(one.clone()),
        (None, []) => return Err("the token names no tenant"),
        (None, _) => {
            return Err("the token names several tenants: select one with x-vern-tenant");
        }
    };
    // The platform's chain is no department: its events are read there, and vern's own
    // components act in its name (appending events, watching tenant statuses); nothing
    // else does.
    if crate::audit::is_platform_chain(tenant.as_str())
        && permission != Permission::AuditRead
        && !principal.roles.contains(&Role::Service)
    {
        return Err("vern-platform is the platform's audit chain: only audit reads act in it");
    }
    Ok(Some(tenant))
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

/// The tenant a denied call belongs to: the one its token names, or the one it
/// selected among them; a platform token naming none, the platform chain.
fn denial_tenant(principal: &Principal, headers: &http::HeaderMap) -> Option<String> {
    let selected = headers.get(TENANT_HEADER).and_then(|v| v.to_str().ok());
    match (selected, principal.tenants.as_slice()) {
        (Some(sel), names) if names.iter().any(|t| t == sel) => Some(sel.to_owned()),
        (_, [one]) => Some(one.clone()),
        // A platform token acts in no department: its refusals go to the platform chain.
        (_, []) if principal.roles.iter().any(|r| r.platform_wide()) => {
            Some(crate::audit::PLATFORM_CHAIN.to_owned())
        }
        _ => None,
    }
}

/// Tower layer running [`authorize`] before the inner service, then (for calls with a
/// tenant) the [`TenantGate`]: the tenant must exist and be active.
#[derive(Clone, Debug)]
pub struct AuthLayer {
    verifier: Arc<TokenVerifier>,
    denials: Option<crate::audit::DenialSink>,
    exposure: Exposure,
    tenants: Option<TenantGate>,
    open_reflection: bool,
    budget: crate::limits::DenialBudget,
}

impl AuthLayer {
    /// A layer verifying tokens with `verifier` on an internal listener.
    pub fn new(verifier: TokenVerifier) -> Self {
        Self {
            verifier: Arc::new(verifier),
            denials: None,
            exposure: Exposure::Internal,
            tenants: None,
            open_reflection: true,
            budget: crate::limits::DenialBudget::default(),
        }
    }

    /// Charges denied calls to the per-client rate budget of `budget` (the rate limit
    /// layer's): past it a denied call gets RESOURCE_EXHAUSTED, unaudited, so denied
    /// calls can flood neither the server nor the audit queue.
    pub fn with_denial_budget(mut self, budget: crate::limits::DenialBudget) -> Self {
        self.budget = budget;
        self
    }

    /// Whether server reflection needs no token (`false`: any valid token).
    pub fn with_open_reflection(mut self, open: bool) -> Self {
        self.open_reflection = open;
        self
    }

    /// Also hands every denied call of an existing tenant to `sink` (the audit hook).
    pub fn with_denials(mut self, sink: Option<crate::audit::DenialSink>) -> Self {
        self.denials = sink;
        self
    }

    /// Serves a listener of this exposure.
    pub fn with_exposure(mut self, exposure: Exposure) -> Self {
        self.exposure = exposure;
        self
    }

    /// Checks every call's tenant against `gate` (exists and is active). Calls by the
    /// `service` role are not checked: vern's own components act for tenants they
    /// were told of, and the gate's own lookups are such calls.
    pub fn with_tenants(mut self, gate: Option<TenantGate>) -> Self {
        self.tenants = gate;
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
            exposure: self.exposure,
            tenants: self.tenants.clone(),
            open_reflection: self.open_reflection,
            budget: self.budget.clone(),
        }
    }
}

/// The service produced by [`AuthLayer`].
#[derive(Clone, Debug)]
pub struct Auth<S> {
    inner: S,
    verifier: Arc<TokenVerifier>,
    denials: Option<crate::audit::DenialSink>,
    exposure: Exposure,
    tenants: Option<TenantGate>,
    open_reflection: bool,
    budget: crate::limits::DenialBudget,
}

type BoxFuture<T> = std::pin::Pin<Box<dyn std::future::Future<Output = T> + Send>>;

pub(crate) fn tenant_denied(path: &str, refusal: TenantRefusal) -> Status {
    match refusal {
        TenantRefusal::Unavailable => Status::unavailable(refusal.to_string()),
        TenantRefusal::Unknown => deny(
            path,
            "unknown_tenant",
            Status::permission_denied(refusal.to_string()),
        ),
        TenantRefusal::Suspended => deny(
            path,
            "suspended_tenant",
            Status::permission_denied(refusal.to_string()),
        ),
    }
}

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
        let path = req.uri().path().to_owned();
        if auth::is_reflection(&path) && !self.open_reflection {
            // Any caller with a valid token may list the API; nobody else.
            if let Err(e) = bearer(req.headers()).and_then(|t| self.verifier.verify(t)) {
                let status = unauthenticated(e);
                return Box::pin(async move { Ok(status.into_http()) });
            }
        }
        let mut exempt_if_suspended = false;
        let caller = match authorize(&self.verifier, &path, req.headers(), self.exposure) {
            Ok(Some(ctx)) => {
                // The caller as the audit hook names it, acting in the call's tenant.
                let caller = match (&self.tenants, &ctx.tenant) {
                    (Some(_), Some(t)) if !ctx.roles.contains(&Role::Service) => Some(Principal {
                        sub: ctx.sub.clone(),
                        roles: ctx.roles.clone(),
                        tenants: vec![t.as_str().to_owned()],
                    }),
                    _ => None,
                };
                exempt_if_suspended =
                    crate::tenancy::allowed_while_suspended(&ctx.roles, ctx.permission);
                req.extensions_mut().insert(ctx);
                caller
            }
            Ok(None) => None,
            Err(status) => {
                let principal = bearer(req.headers())
                    .ok()
                    .and_then(|t| self.verifier.verify(t).ok());
                // Charged as the client it is (a verified token) or, without one, as
                // its address.
                let client = match &principal {
                    Some(p) => denied_client(p, req.headers()),
                    None => format!("peer\u{0}{}", peer_ip(req.extensions())),
                };
                if !self.budget.admit(&client) {
                    crate::limits::LIMITED_CALLS.fetch_add(1, Ordering::Relaxed);
                    return Box::pin(async move {
                        Ok(Status::resource_exhausted(
                            "rate limit exceeded for this client, retry later",
                        )
                        .into_http())
                    });
                }
                let report = (status.code() == tonic::Code::PermissionDenied)
                    .then(|| {
                        let principal = principal?;
                        let tenant = denial_tenant(&principal, req.headers())?;
                        Some((principal, tenant))
                    })
                    .flatten();
                let sink = self.denials.clone();
                let gate = self.tenants.clone();
                let headers = req.headers().clone();
                return Box::pin(async move {
                    if let (Some(sink), Some((principal, tenant))) = (sink, report) {
                        // Only a tenant that exists gets the denial in its chain.
                        let exists = match &gate {
                            Some(g) => !matches!(
                                g.check(&tenant).await,
                                Err(TenantRefusal::Unknown | TenantRefusal::Unavailable)
                            ),
                            None => true,
                        };
                        if exists {
                            sink.report(&tenant, &path, &principal, status.code(), &headers);
                        }
                    }
                    Ok(status.into_http())
                });
            }
        };
        let clone = self.inner.clone();
        let mut inner = std::mem::replace(&mut self.inner, clone);
        let (Some(caller), Some(gate)) = (caller, self.tenants.clone()) else {
            return Box::pin(inner.call(req));
        };
        let tenant = caller.tenants.first().cloned().unwrap_or_default();
        // The hot path: a fresh answer costs a map lookup, no await.
        match gate.check_cached(&tenant) {
            Some(Err(TenantRefusal::Suspended)) if exempt_if_suspended => Box::pin(inner.call(req)),
            Some(Ok(())) => Box::pin(inner.call(req)),
            Some(Err(refusal)) => {
                if !self.budget.admit(&denied_client(&caller, req.headers())) {
                    crate::limits::LIMITED_CALLS.fetch_add(1, Ordering::Relaxed);
                    return Box::pin(async move {
                        Ok(Status::resource_exhausted(
                            "rate limit exceeded for this client, retry later",
                        )
                        .into_http())
                    });
                }
                let status = tenant_denied(&path, refusal);
                report_tenant_denial(
                    self.denials.as_ref(),
                    refusal,
                    &caller,
                    &path,
                    req.headers(),
                    &status,
                );
                Box::pin(async move { Ok(status.into_http()) })
            }
            None => {
                let sink = self.denials.clone();
                let budget = self.budget.clone();
                Box::pin(async move {
                    match gate.check(&tenant).await {
                        Ok(()) => inner.call(req).await,
                        Err(TenantRefusal::Suspended) if exempt_if_suspended => {
                            inner.call(req).await
                        }
                        Err(_) if !budget.admit(&denied_client(&caller, req.headers())) => {
                            crate::limits::LIMITED_CALLS.fetch_add(1, Ordering::Relaxed);
                            Ok(Status::resource_exhausted(
                                "rate limit exceeded for this client, retry later",
                            )
                            .into_http())
                        }
                        Err(refusal) => {
                            let status = tenant_denied(&path, refusal);
                            report_tenant_denial(
                                sink.as_ref(),
                                refusal,
                                &caller,
                                &path,
                                req.headers(),
                                &status,
                            );
                            Ok(status.into_http())
                        }
                    }
                })
            }
        }
    }
}

/// The rate-limit client of a denied call with a verified token: the key the rate
/// limit layer uses for the same caller's allowed calls (tenant and subject).
fn denied_client(principal: &Principal, headers: &http::HeaderMap) -> String {
    let tenant = denial_tenant(principal, headers).unwrap_or_default();
    format!("{tenant}\u{0}{}", principal.sub)
}

/// The address a call came from (plaintext or TLS listener), for callers without a
/// valid token.
fn peer_ip(extensions: &http::Extensions) -> String {
    extensions
        .get::<crate::listen::Peer>()
        .map(|p| p.0.ip().to_string())
        .unwrap_or_default()
}

/// A call refused because its tenant is suspended is audited in that tenant's chain;
/// a tenant that does not exist has no chain.
fn report_tenant_denial(
    sink: Option<&crate::audit::DenialSink>,
    refusal: TenantRefusal,
    principal: &Principal,
    path: &str,
    headers: &http::HeaderMap,
    status: &Status,
) {
    if let (Some(sink), TenantRefusal::Suspended, Some(tenant)) =
        (sink, refusal, principal.tenants.first())
    {
        sink.report(tenant, path, principal, status.code(), headers);
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

    use crate::permissions::rpc_with;

    /// A tenant read (platform-wide for a platform admin, own tenant for the others).
    fn get_tenant() -> String {
        rpc_with(Permission::TenantsRead)
    }

    /// A tenant-scoped change a tenant admin may make.
    fn create_purpose() -> String {
        rpc_with(Permission::PurposesManage)
    }

    #[test]
    fn public_paths_need_no_token() {
        let v = TokenVerifier::hs256(b"k", &AuthConfig::default());
        assert_eq!(
            authorize(
                &v,
                "/grpc.health.v1.Health/Check",
                &http::HeaderMap::new(),
                Exposure::Public
            )
            .ok(),
            Some(None)
        );
    }

    #[test]
    fn missing_and_bad_tokens_are_unauthenticated() {
        let v = TokenVerifier::hs256(b"k", &AuthConfig::default());
        let e = authorize(&v, &get_tenant(), &http::HeaderMap::new(), Exposure::Public)
            .expect_err("denied");
        assert_eq!(e.code(), tonic::Code::Unauthenticated);
        let t = token(&["tenant-admin"], &["dept-a"]);
        let e = authorize(
            &v,
            &get_tenant(),
            &headers(&format!("{t}x"), None),
            Exposure::Public,
        )
        .expect_err("denied");
        assert_eq!(e.code(), tonic::Code::Unauthenticated);
        assert!(!e.message().contains(&t[..20]), "token not echoed");
    }

    #[test]
    fn the_platform_chain_serves_audit_reads_only() {
        let v = TokenVerifier::hs256(b"k", &AuthConfig::default());
        let platform = crate::audit::PLATFORM_CHAIN;
        let auditor = token(&["auditor"], &[platform]);
        let ctx = authorize(
            &v,
            &rpc_with(Permission::AuditRead),
            &headers(&auditor, None),
            Exposure::Public,
        )
        .expect("an auditor reads the platform chain")
        .expect("context");
        assert_eq!(ctx.tenant.as_ref().map(TenantId::as_str), Some(platform));
        // Nothing but audit reads acts in it: no subject, purpose or tenant setting.
        for (roles, permission) in [
            (&["integration"][..], Permission::SubjectsWrite),
            (&["tenant-admin"][..], Permission::PurposesManage),
            (&["tenant-admin"][..], Permission::TenantsUpdate),
            (&["privacy-officer"][..], Permission::RightsSubmit),
        ] {
            let t = token(roles, &[platform]);
            let e = authorize(
                &v,
                &rpc_with(permission),
                &headers(&t, None),
                Exposure::Public,
            )
            .expect_err("refused");
            assert_eq!(e.code(), tonic::Code::PermissionDenied, "{permission:?}");
            assert!(e.message().contains("platform"), "{}", e.message());
        }
        // A refused platform token is reported in the platform chain; a department
        // token in its own.
        let admin = Principal {
            sub: "ops".into(),
            roles: vec![Role::PlatformAdmin],
            tenants: vec![],
        };
        assert_eq!(
            denial_tenant(&admin, &http::HeaderMap::new()).as_deref(),
            Some(platform)
        );
        let crm = Principal {
            sub: "crm".into(),
            roles: vec![Role::Integration],
            tenants: vec!["dept-a".into()],
        };
        assert_eq!(
            denial_tenant(&crm, &http::HeaderMap::new()).as_deref(),
            Some("dept-a")
        );
        let nobody = Principal {
            sub: "x".into(),
            roles: vec![Role::Integration],
            tenants: vec![],
        };
        assert_eq!(denial_tenant(&nobody, &http::HeaderMap::new()), None);
    }

    #[test]
    fn effective_tenant_rules() {
        let v = TokenVerifier::hs256(b"k", &AuthConfig::default());
        let single = token(&["tenant-admin"], &["dept-a"]);
        let ctx = authorize(
            &v,
            &create_purpose(),
            &headers(&single, None),
            Exposure::Public,
        )
        .expect("ok")
        .expect("ctx");
        assert_eq!(ctx.tenant, Some(TenantId::new("dept-a")));
        // selecting a tenant the token does not name
        let e = authorize(
            &v,
            &create_purpose(),
            &headers(&single, Some("dept-b")),
            Exposure::Public,
        )
        .expect_err("denied");
        assert_eq!(e.code(), tonic::Code::PermissionDenied);
        // multi-tenant token: must select
        let multi = token(&["tenant-admin"], &["dept-a", "dept-b"]);
        assert_eq!(
            authorize(
                &v,
                &create_purpose(),
                &headers(&multi, None),
                Exposure::Public
            )
            .expect_err("denied")
            .code(),
            tonic::Code::PermissionDenied
        );
        let ctx = authorize(
            &v,
            &create_purpose(),
            &headers(&multi, Some("dept-b")),
            Exposure::Public,
        )
        .expect("ok")
        .expect("ctx");
        assert_eq!(ctx.tenant, Some(TenantId::new("dept-b")));
        // tenant-scoped permission without any tenant
        let none = token(&["tenant-admin"], &[]);
        assert_eq!(
            authorize(
                &v,
                &create_purpose(),
                &headers(&none, None),
                Exposure::Public
            )
            .expect_err("denied")
            .code(),
            tonic::Code::PermissionDenied
        );
    }

    #[test]
    fn roles_are_checked() {
        let v = TokenVerifier::hs256(b"k", &AuthConfig::default());
        let auditor = token(&["auditor"], &["dept-a"]);
        assert_eq!(
            authorize(
                &v,
                &get_tenant(),
                &headers(&auditor, None),
                Exposure::Public
            )
            .expect_err("denied")
            .code(),
            tonic::Code::PermissionDenied
        );
        let admin = token(&["platform-admin"], &[]);
        let ctx = authorize(
            &v,
            &rpc_with(Permission::TenantsAdminister),
            &headers(&admin, None),
            Exposure::Public,
        )
        .expect("ok")
        .expect("ctx");
        assert_eq!(ctx.tenant, None);
    }

    #[test]
    fn tenant_scoped_roles_never_act_platform_wide() {
        let v = TokenVerifier::hs256(b"k", &AuthConfig::default());
        for tenants in [&["dept-a", "dept-b"][..], &[][..]] {
            let t = token(&["tenant-admin"], tenants);
            for path in [
                &get_tenant(),
                &rpc_with(Permission::TenantsRead),
                &rpc_with(Permission::TenantsUpdate),
            ] {
                let e = authorize(&v, path, &headers(&t, None), Exposure::Public)
                    .expect_err("a tenant admin needs exactly one tenant");
                assert_eq!(
                    e.code(),
                    tonic::Code::PermissionDenied,
                    "{path} {tenants:?}"
                );
            }
        }
        // One tenant selected among two: that tenant only.
        let t = token(&["tenant-admin"], &["dept-a", "dept-b"]);
        let ctx = authorize(
            &v,
            &get_tenant(),
            &headers(&t, Some("dept-a")),
            Exposure::Public,
        )
        .expect("ok")
        .expect("ctx");
        assert_eq!(ctx.tenant, Some(TenantId::new("dept-a")));
        // A platform admin acts platform-wide even if its token names a tenant.
        let t = token(&["platform-admin"], &["dept-a"]);
        let ctx = authorize(&v, &get_tenant(), &headers(&t, None), Exposure::Public)
            .expect("ok")
            .expect("ctx");
        assert_eq!(ctx.tenant, None);
        // With both roles, the tenant role's calls stay in the tenant.
        let t = token(&["platform-admin", "tenant-admin"], &["dept-a"]);
        let ctx = authorize(&v, &create_purpose(), &headers(&t, None), Exposure::Public)
            .expect("ok")
            .expect("ctx");
        assert_eq!(ctx.tenant, Some(TenantId::new("dept-a")));
    }

    #[test]
    fn the_service_role_is_refused_on_the_public_listener_only() {
        let v = TokenVerifier::hs256(b"k", &AuthConfig::default());
        let t = token(&["service"], &["dept-a"]);
        let path = &rpc_with(Permission::AuditAppend);
        let e = authorize(&v, path, &headers(&t, None), Exposure::Public).expect_err("refused");
        assert_eq!(e.code(), tonic::Code::PermissionDenied);
        // Hiding it among other roles does not help.
        let t2 = token(&["integration", "service"], &["dept-a"]);
        let e = authorize(
            &v,
            &rpc_with(Permission::ConsentsCheck),
            &headers(&t2, None),
            Exposure::Public,
        )
        .expect_err("refused");
        assert_eq!(e.code(), tonic::Code::PermissionDenied);
        assert!(
            authorize(&v, path, &headers(&t, None), Exposure::Internal)
                .expect("internal")
                .is_some()
        );
    }

    #[test]
    fn malformed_tenant_claims_are_unauthenticated() {
        let v = TokenVerifier::hs256(b"k", &AuthConfig::default());
        let long = "t".repeat(300);
        for bad in ["TENA", "tena ", "", "../tena", long.as_str()] {
            let t = token(&["integration"], &[bad]);
            let e = authorize(
                &v,
                &rpc_with(Permission::SubjectsRead),
                &headers(&t, None),
                Exposure::Public,
            )
            .expect_err("refused");
            assert_eq!(e.code(), tonic::Code::Unauthenticated, "{bad:?}");
            assert!(!e.message().contains("../"), "value not echoed");
        }
    }
}
