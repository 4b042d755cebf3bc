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
