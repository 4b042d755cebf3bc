//! Generated code for vern's public gRPC API (`proto/vern/**`).
//!
//! One module per package; `FILE_DESCRIPTOR_SET` feeds server reflection and the
//! permission table's completeness test.
#![allow(clippy::all, missing_docs, clippy::unwrap_used)]

/// Encoded `FileDescriptorSet` of every vern proto file and its imports.
pub const FILE_DESCRIPTOR_SET: &[u8] = tonic::include_file_descriptor_set!("vern_descriptor");

pub mod common {
    pub mod v1 {
        tonic::include_proto!("vern.common.v1");
    }
}
pub mod tenants {
    pub mod v1 {
        tonic::include_proto!("vern.tenants.v1");
    }
}
pub mod subjects {
    pub mod v1 {
        tonic::include_proto!("vern.subjects.v1");
    }
}
pub mod consents {
    pub mod v1 {
        tonic::include_proto!("vern.consents.v1");
    }
}
pub mod retention {
    pub mod v1 {
        tonic::include_proto!("vern.retention.v1");
    }
}
pub mod rights {
    pub mod v1 {
        tonic::include_proto!("vern.rights.v1");
    }
}
pub mod audit {
    pub mod v1 {
        tonic::include_proto!("vern.audit.v1");
    }
}

/// Fully qualified gRPC service names, one per package.
pub const SERVICE_NAMES: &[&str] = &[
    "vern.tenants.v1.TenantService",
    "vern.subjects.v1.SubjectService",
    "vern.consents.v1.ConsentService",
    "vern.retention.v1.RetentionService",
    "vern.rights.v1.RightsService",
    "vern.audit.v1.AuditService",
];

/// Every RPC of vern's public API, read from the embedded descriptors: its path,
/// whether it streams, and the permission it declares with
/// `option (vern.common.v1.permission)`.
pub mod rpcs {
    use crate::common::v1::Permission;
    use prost::Message;

    // prost-types drops extension fields, so these are the few descriptor fields
    // needed, with the option's field number (permission.proto) in MethodOptions.
    #[derive(Clone, PartialEq, Message)]
    struct FileSet {
        #[prost(message, repeated, tag = "1")]
        file: Vec<File>,
    }
    #[derive(Clone, PartialEq, Message)]
    struct File {
        #[prost(string, tag = "2")]
        package: String,
        #[prost(message, repeated, tag = "6")]
        service: Vec<Service>,
    }
    #[derive(Clone, PartialEq, Message)]
    struct Service {
        #[prost(string, tag = "1")]
        name: String,
        #[prost(message, repeated, tag = "2")]
        method: Vec<Method>,
    }
    #[derive(Clone, PartialEq, Message)]
    struct Method {
        #[prost(string, tag = "1")]
        name: String,
        #[prost(message, optional, tag = "4")]
        options: Option<MethodOptions>,
        #[prost(bool, tag = "6")]
        server_streaming: bool,
    }
    #[derive(Clone, PartialEq, Message)]
    struct MethodOptions {
        #[prost(enumeration = "Permission", tag = "50001")]
        permission: i32,
    }

    /// One RPC of a vern service.
    #[derive(Debug, Clone, PartialEq, Eq)]
    pub struct Rpc {
        /// The fully qualified service, `vern.consents.v1.ConsentService`.
        pub service: String,
        /// The method, `Check`.
        pub method: String,
        /// Whether the server streams its answer.
        pub server_streaming: bool,
        /// The declared permission; `Unspecified` when the RPC declares none (or one
        /// this build does not know), which servers treat as "refused to everyone".
        pub permission: Permission,
    }

    impl Rpc {
        /// The gRPC path, `/vern.consents.v1.ConsentService/Check`.
        pub fn path(&self) -> String {
            format!("/{}/{}", self.service, self.method)
        }
    }

    /// Every RPC of the `vern.` packages in `descriptor_set` (an encoded
    /// `FileDescriptorSet`).
    pub fn from_descriptor_set(descriptor_set: &[u8]) -> Result<Vec<Rpc>, prost::DecodeError> {
        let set = FileSet::decode(descriptor_set)?;
        let mut out = vec![];
        for file in set.file.iter().filter(|f| f.package.starts_with("vern.")) {
            for service in &file.service {
                for method in &service.method {
                    let permission = method
                        .options
                        .as_ref()
                        .and_then(|o| Permission::try_from(o.permission).ok())
                        .unwrap_or(Permission::Unspecified);
                    out.push(Rpc {
                        service: format!("{}.{}", file.package, service.name),
                        method: method.name.clone(),
                        server_streaming: method.server_streaming,
                        permission,
                    });
                }
            }
        }
        Ok(out)
    }

    /// Every RPC of vern's public API, from the embedded descriptors.
    pub fn all() -> Result<Vec<Rpc>, prost::DecodeError> {
        from_descriptor_set(crate::FILE_DESCRIPTOR_SET)
    }
}

#[cfg(test)]
mod tests {
    use super::common::v1::Permission;

    /// The options are read as declared in the protos (a sample across the services).
    #[test]
    fn the_permission_options_are_read_as_declared() {
        let all = super::rpcs::all().expect("descriptors");
        for (path, want) in [
            (
                "/vern.consents.v1.ConsentService/Check",
                Permission::ConsentsCheck,
            ),
            (
                "/vern.tenants.v1.TenantService/CreateTenant",
                Permission::TenantsAdminister,
            ),
            (
                "/vern.subjects.v1.SubjectService/EraseSubject",
                Permission::SubjectsErase,
            ),
            (
                "/vern.rights.v1.RightsService/AckEvent",
                Permission::RightsEvents,
            ),
            (
                "/vern.audit.v1.AuditService/AppendEvents",
                Permission::AuditAppend,
            ),
            (
                "/vern.subjects.v1.SubjectService/ReindexSubjects",
                Permission::KeysRotate,
            ),
        ] {
            let rpc = all
                .iter()
                .find(|r| r.path() == path)
                .unwrap_or_else(|| panic!("{path} is an RPC"));
            assert_eq!(rpc.permission, want, "{path}");
        }
        assert!(
            all.iter()
                .any(|r| r.server_streaming && r.path().ends_with("/WatchEvents"))
        );
    }
}
