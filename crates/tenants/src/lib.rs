//! TenantService: the controller registry (tenants, purposes, recipients) and the
//! Art. 30 record of processing.
//!
//! Layers: [`api`] (tonic handlers) → [`service`] (use cases) → [`domain`] (rules) and
//! [`store`] (sea-orm).

pub mod api;
pub mod domain;
pub mod error;
pub mod service;
pub mod store;

use vern_kit::config::Config;
use vern_kit::db::DbTarget;
use vern_kit::server::Limits;
use vern_proto::tenants::v1::tenant_service_server::TenantServiceServer;

/// Why a service could not start.
pub type BuildError = Box<dyn std::error::Error + Send + Sync>;

/// The gRPC service name.
pub const SERVICE_NAME: &str = "vern.tenants.v1.TenantService";

/// Opens the store (running migrations) and builds the gRPC service.
pub async fn build(
    config: &Config,
    target: &DbTarget,
) -> Result<TenantServiceServer<api::TenantApi>, BuildError> {
    let limits = Limits::from(&config.server);
    let store = store::TenantStore::open(target).await?;
    Ok(vern_kit::limited!(
        TenantServiceServer::new(api::TenantApi::new(service::Registry::new(store))),
        limits
    ))
}
