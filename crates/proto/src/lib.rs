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
        #[prost(message, repeated, tag = "4")]
        message_type: Vec<MessageType>,
        #[prost(message, repeated, tag = "6")]
        service: Vec<Service>,
    }
    #[derive(Clone, PartialEq, Message)]
    struct MessageType {
        #[prost(string, tag = "1")]
        name: String,
        #[prost(message, repeated, tag = "2")]
        field: Vec<Field>,
    }
    #[derive(Clone, PartialEq, Message)]
    struct Field {
        #[prost(string, tag = "1")]
        name: String,
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
        #[prost(string, tag = "2")]
        input_type: String,
        #[prost(message, optional, tag = "4")]
        options: Option<MethodOptions>,
        #[prost(bool, tag = "5")]
        client_streaming: bool,
        #[prost(bool, tag = "6")]
        server_streaming: bool,
    }
    #[derive(Clone, PartialEq, Message)]
    struct MethodOptions {
        #[prost(enumeration = "Idempotency", tag = "34")]
        idempotency_level: i32,
        #[prost(enumeration = "Permission", tag = "50001")]
        permission: i32,
    }

    /// What repeating a call does: protobuf's standard `option idempotency_level`,
    /// which every vern RPC declares. A call that may be repeated is retried once on
    /// another backend when its connection failed before an answer
    /// (`vern_kit::balance`).
    #[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, prost::Enumeration)]
    #[repr(i32)]
    pub enum Idempotency {
        /// Not declared: never repeated on the caller's behalf.
        Unknown = 0,
        /// A read.
        NoSideEffects = 1,
        /// A change that repeated has the effect of one: by its `request_id`, or by
        /// nature (a page of a re-wrap that skips what is done).
        Idempotent = 2,
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
        /// Whether the client streams its request.
        pub client_streaming: bool,
        /// What repeating the call does.
        pub idempotency: Idempotency,
        /// The fields of the request message, by name.
        pub request_fields: Vec<String>,
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
        // Request messages by their fully qualified name, `.vern.x.v1.Message`.
        let mut messages = std::collections::HashMap::new();
        for file in &set.file {
            for m in &file.message_type {
                let fields: Vec<String> = m.field.iter().map(|f| f.name.clone()).collect();
                messages.insert(format!(".{}.{}", file.package, m.name), fields);
            }
        }
        let mut out = vec![];
        for file in set.file.iter().filter(|f| f.package.starts_with("vern.")) {
            for service in &file.service {
                for method in &service.method {
                    let permission = method
                        .options
                        .as_ref()
                        .and_then(|o| Permission::try_from(o.permission).ok())
                        .unwrap_or(Permission::Unspecified);
                    let idempotency = method
                        .options
                        .as_ref()
                        .and_then(|o| Idempotency::try_from(o.idempotency_level).ok())
                        .unwrap_or(Idempotency::Unknown);
                    out.push(Rpc {
                        service: format!("{}.{}", file.package, service.name),
                        method: method.name.clone(),
                        server_streaming: method.server_streaming,
                        client_streaming: method.client_streaming,
                        idempotency,
                        request_fields: messages
                            .get(&method.input_type)
                            .cloned()
                            .unwrap_or_default(),
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

    /// Every RPC says what repeating it does, and says it truly: a read carries no
    /// request id, a change that may be repeated carries one (or is one of the few
    /// idempotent by nature), and no request with a request id is left undeclared.
    #[test]
    fn every_rpc_declares_what_repeating_it_does() {
        use super::rpcs::Idempotency;
        // Repeating these changes nothing more: a re-wrap or re-index page skips what
        // is done; a parked row put back is put back.
        let by_nature = ["RewrapDataKeys", "ReindexSubjects", "RetryOutboxRows"];
        // Its rows carry their request ids.
        let per_row = ["ImportSubjects"];
        let all = super::rpcs::all().expect("descriptors");
        assert!(all.len() > 80, "{} RPCs", all.len());
        let mut wrong = vec![];
        for rpc in &all {
            let has_id = rpc.request_fields.iter().any(|f| f == "request_id");
            let ok = match rpc.idempotency {
                Idempotency::Unknown => false,
                Idempotency::NoSideEffects => !has_id,
                Idempotency::Idempotent => {
                    has_id
                        || by_nature.contains(&rpc.method.as_str())
                        || per_row.contains(&rpc.method.as_str())
                }
            };
            if !ok || rpc.client_streaming {
                wrong.push(format!(
                    "{} {:?} request_id={has_id}",
                    rpc.path(),
                    rpc.idempotency
                ));
            }
        }
        assert!(wrong.is_empty(), "{wrong:#?}");
        let level = |path: &str| all.iter().find(|r| r.path() == path).map(|r| r.idempotency);
        assert_eq!(
            level("/vern.consents.v1.ConsentService/Check"),
            Some(Idempotency::NoSideEffects)
        );
        assert_eq!(
            level("/vern.consents.v1.ConsentService/RecordConsent"),
            Some(Idempotency::Idempotent)
        );
    }
}
