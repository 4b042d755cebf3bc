//! The gateway: the one public entry. It verifies the token, maps the method to its
//! permission, fixes the effective tenant (all through `vern_kit::context::AuthLayer`)
//! and routes each call by package to the owning service.
//!
//! In `vern dev` the services run in the same process and the gateway dispatches to
//! them directly (no second HTTP/2 hop). Forwarding to remote services (Kubernetes)
//! comes with the security issue.

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
}
