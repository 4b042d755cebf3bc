//! The gateway: the one public entry.
//!
//! Token verification, the permission check, the effective tenant and the limits are
//! the shared tower layers of `vern_kit::server` (composed in one place). What this
//! crate adds is routing: each call goes, unchanged and unparsed (the body is streamed),
//! to the service that owns its package.
//!
//! - `vern dev`: the services run in the same process and are mounted directly behind
//!   the layers — no second HTTP/2 hop (a forwarding hop costs ~0.35× throughput on these machines, docs/design.md).
//! - Kubernetes (`vern serve gateway`): [`forwarding_routes`] forwards to each service's
//!   address from config, spreading calls over every address the service's name
//!   resolves to (`vern_kit::balance`: a headless Service in Kubernetes). The
//!   `grpc-timeout` header travels with the call, so deadlines propagate; the service
//!   verifies the token again (defence in depth).

use std::convert::Infallible;
use std::pin::Pin;
use std::task::{Context, Poll};

use tonic::Status;
use tonic::body::Body;
use tonic::server::NamedService;
use tonic::service::Routes;
use tower::Service;
use vern_kit::config::ServicesConfig;

/// The service (crate name) owning a gRPC path, by package prefix.
pub fn owning_service(path: &str) -> Option<&'static str> {
    let pkg = path.strip_prefix("/vern.")?;
    let name = pkg.split('.').next()?;
    [
        "tenants",
        "subjects",
        "consents",
        "retention",
        "rights",
        "audit",
    ]
    .into_iter()
    .find(|s| *s == name)
}

/// Forwards every call of service `vern_proto::SERVICE_NAMES[I]` to one backend.
#[derive(Clone, Debug)]
pub struct Forward<const I: usize> {
    // Traced: inside a traced call the forwarded call gets a client span and carries
    // it as the service's parent; otherwise the caller's `traceparent` passes as is.
    channel: vern_kit::client::TracedChannel,
    /// Signs the gateway's word for the calls it forwards ([`vern_kit::context::VIA_HEADER`]):
    /// a service's port serves a caller's token only with it.
    tokens: std::sync::Arc<vern_kit::auth::ServiceTokens>,
}

impl<const I: usize> NamedService for Forward<I> {
    const NAME: &'static str = vern_proto::SERVICE_NAMES[I];
}

impl<const I: usize> Service<http::Request<Body>> for Forward<I> {
    type Response = http::Response<Body>;
    type Error = Infallible;
    type Future =
        Pin<Box<dyn std::future::Future<Output = Result<Self::Response, Infallible>> + Send>>;

    fn poll_ready(&mut self, _cx: &mut Context<'_>) -> Poll<Result<(), Infallible>> {
        // Readiness is awaited per call on a clone of the channel (below), so a slow
        // backend never blocks the gateway's other services.
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, mut req: http::Request<Body>) -> Self::Future {
        let mut channel = self.channel.clone();
        let status_change = changes_tenant_status(req.uri().path());
        // Asking one replica by number is for key operations only (`vern keys status`
        // asks each); any other call is balanced whatever it says.
        if vern_kit::auth::permission_for(req.uri().path())
            != Some(vern_kit::auth::Permission::KeysRotate)
        {
            req.headers_mut().remove(vern_kit::balance::REPLICA_HEADER);
        }
        // Replaces whatever a client sent in the header.
        match self
            .tokens
            .for_tenant(STATUS_WATCH_TENANT)
            .ok()
            .and_then(|t| http::HeaderValue::from_str(&t).ok())
        {
            Some(via) => {
                req.headers_mut().insert(vern_kit::context::VIA_HEADER, via);
            }
            None => {
                req.headers_mut().remove(vern_kit::context::VIA_HEADER);
                tracing::error!(
                    "signing the gateway's service token failed: forwarded calls will be refused"
                );
            }
        }
        Box::pin(async move {
            use tower::ServiceExt;
            let result = match channel.ready().await {
                Ok(ch) => ch.call(req).await,
                Err(e) => Err(e),
            };
            if status_change {
                // The head of a unary answer leaves the service after its commit.
                vern_kit::tenancy::status_changed(None);
            }
            Ok(result.unwrap_or_else(|e| {
                tracing::warn!(service = Self::NAME_FOR_LOG, error = %e, "backend unavailable");
                Status::unavailable("the owning service is unavailable").into_http()
            }))
        })
    }
}

impl<const I: usize> Forward<I> {
    const NAME_FOR_LOG: &'static str = vern_proto::SERVICE_NAMES[I];
}

fn channel(url: &str) -> Result<vern_kit::client::TracedChannel, tonic::transport::Error> {
    // No default deadline: the caller's `grpc-timeout` travels with the call.
    Ok(vern_kit::telemetry::Traced::new(
        vern_kit::balance::Balanced::new(url, vern_kit::balance::Settings::default())?,
    ))
}

/// Routes forwarding each of the six services to its URL in `services`, each call
/// vouched for with a service token signed by `tokens`.
pub fn forwarding_routes(
    services: &ServicesConfig,
    tokens: std::sync::Arc<vern_kit::auth::ServiceTokens>,
) -> Result<Routes, tonic::transport::Error> {
    // Order must match vern_proto::SERVICE_NAMES.
    let mut b = Routes::builder();
    b.add_service(Forward::<0> {
        channel: channel(&services.tenants.url)?,
        tokens: tokens.clone(),
    });
    b.add_service(Forward::<1> {
        channel: channel(&services.subjects.url)?,
        tokens: tokens.clone(),
    });
    b.add_service(Forward::<2> {
        channel: channel(&services.consents.url)?,
        tokens: tokens.clone(),
    });
    b.add_service(Forward::<3> {
        channel: channel(&services.retention.url)?,
        tokens: tokens.clone(),
    });
    b.add_service(Forward::<4> {
        channel: channel(&services.rights.url)?,
        tokens: tokens.clone(),
    });
    b.add_service(Forward::<5> {
        channel: channel(&services.audit.url)?,
        tokens,
    });
    Ok(b.routes())
}

/// The tenant directory of [`vern_kit::tenancy`] backed by the tenants service: a
/// `GetTenant` with a service token acting for the tenant asked about.
pub struct RemoteTenants {
    channel: vern_kit::client::ServiceChannel,
    tokens: std::sync::Arc<vern_kit::auth::ServiceTokens>,
}

impl RemoteTenants {
    /// A directory asking the tenants service at `url`.
    pub fn new(
        url: &str,
        tokens: std::sync::Arc<vern_kit::auth::ServiceTokens>,
    ) -> Result<Self, tonic::transport::Error> {
        Ok(Self {
            channel: vern_kit::client::channel(url)?,
            tokens,
        })
    }
}

#[async_trait::async_trait]
impl vern_kit::tenancy::TenantDirectory for RemoteTenants {
    async fn status(&self, tenant: &str) -> Result<vern_kit::tenancy::TenantStatus, String> {
        use vern_kit::tenancy::TenantStatus;
        use vern_proto::tenants::v1 as pb;
        let token = self
            .tokens
            .for_tenant(tenant)
            .map_err(|_| "signing a service token failed".to_owned())?;
        let mut req = vern_kit::client::request(
            pb::GetTenantRequest {
                tenant_id: tenant.to_owned(),
            },
            &token,
        )
        .map_err(|s| s.message().to_owned())?;
        req.set_timeout(std::time::Duration::from_secs(3));
        match pb::tenant_service_client::TenantServiceClient::new(self.channel.clone())
            .get_tenant(req)
            .await
        {
            Ok(t) if t.get_ref().status == pb::TenantStatus::Suspended as i32 => {
                Ok(TenantStatus::Suspended)
            }
            Ok(_) => Ok(TenantStatus::Active),
            Err(s) if s.code() == tonic::Code::NotFound => Ok(TenantStatus::Unknown),
            Err(s) => Err(format!("GetTenant failed: {:?}", s.code())),
        }
    }

    async fn generation(&self) -> Result<Option<i64>, String> {
        use vern_proto::tenants::v1 as pb;
        // Platform-level in substance; a service token always names a tenant, and
        // the tenants service ignores it for this call.
        let token = self
            .tokens
            .for_tenant(STATUS_WATCH_TENANT)
            .map_err(|_| "signing a service token failed".to_owned())?;
        let mut req = vern_kit::client::request(pb::GetTenantStatusGenerationRequest {}, &token)
            .map_err(|s| s.message().to_owned())?;
        req.set_timeout(std::time::Duration::from_secs(3));
        match pb::tenant_service_client::TenantServiceClient::new(self.channel.clone())
            .get_tenant_status_generation(req)
            .await
        {
            Ok(r) => Ok(Some(r.get_ref().generation)),
            // A tenants service older than this gateway: only the time bound applies.
            Err(s) if s.code() == tonic::Code::Unimplemented => Ok(None),
            Err(s) => Err(format!("GetTenantStatusGeneration failed: {:?}", s.code())),
        }
    }
}

/// The tenant named by the service tokens that ask for the status generation: the
/// platform's own, which no department can take.
const STATUS_WATCH_TENANT: &str = vern_kit::audit::PLATFORM_CHAIN;

/// Whether a call changes a tenant's status (creation included: "no such tenant" may
/// be cached): the gateway that forwarded it forgets
/// the statuses it cached once the answer is back, so the change is in force here
/// from its acknowledgement (other processes learn it from the generation).
fn changes_tenant_status(path: &str) -> bool {
    matches!(
        path,
        "/vern.tenants.v1.TenantService/SuspendTenant"
            | "/vern.tenants.v1.TenantService/ResumeTenant"
            | "/vern.tenants.v1.TenantService/CreateTenant"
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn routes_by_package() {
        assert_eq!(
            owning_service("/vern.tenants.v1.TenantService/GetTenant"),
            Some("tenants")
        );
        assert_eq!(
            owning_service("/vern.audit.v1.AuditService/VerifyChain"),
            Some("audit")
        );
        assert_eq!(owning_service("/vern.nope.v1.X/Y"), None);
        assert_eq!(owning_service("/grpc.health.v1.Health/Check"), None);
    }

    #[test]
    fn forward_names_follow_the_service_list() {
        assert_eq!(Forward::<0>::NAME, "vern.tenants.v1.TenantService");
        assert_eq!(Forward::<1>::NAME, "vern.subjects.v1.SubjectService");
        assert_eq!(Forward::<2>::NAME, "vern.consents.v1.ConsentService");
        assert_eq!(Forward::<3>::NAME, "vern.retention.v1.RetentionService");
        assert_eq!(Forward::<4>::NAME, "vern.rights.v1.RightsService");
        assert_eq!(Forward::<5>::NAME, "vern.audit.v1.AuditService");
    }
}
