//! The permission table: every RPC of every service → exactly one permission.
//! A test derives the RPC list from the descriptors and fails on any gap.

use crate::auth::Permission::{self, *};

/// Every RPC path with its permission.
pub const TABLE: [(&str, Permission); 79] = [
    // vern.tenants.v1.TenantService
    (
        "/vern.tenants.v1.TenantService/CreateTenant",
        TenantsAdminister,
    ),
    (
        "/vern.tenants.v1.TenantService/SuspendTenant",
        TenantsAdminister,
    ),
    (
        "/vern.tenants.v1.TenantService/ResumeTenant",
        TenantsAdminister,
    ),
    ("/vern.tenants.v1.TenantService/GetTenant", TenantsRead),
    ("/vern.tenants.v1.TenantService/ListTenants", TenantsRead),
    ("/vern.tenants.v1.TenantService/UpdateTenant", TenantsUpdate),
    (
        "/vern.tenants.v1.TenantService/CreatePurpose",
        PurposesManage,
    ),
    (
        "/vern.tenants.v1.TenantService/UpdatePurpose",
        PurposesManage,
    ),
    (
        "/vern.tenants.v1.TenantService/CreateRecipient",
        PurposesManage,
    ),
    (
        "/vern.tenants.v1.TenantService/UpdateRecipient",
        PurposesManage,
    ),
    (
        "/vern.tenants.v1.TenantService/EndRecipient",
        PurposesManage,
    ),
    ("/vern.tenants.v1.TenantService/GetPurpose", PurposesRead),
    ("/vern.tenants.v1.TenantService/ListPurposes", PurposesRead),
    (
        "/vern.tenants.v1.TenantService/ListRecipients",
        PurposesRead,
    ),
    (
        "/vern.tenants.v1.TenantService/GetProcessingRecord",
        PurposesRead,
    ),
    // vern.subjects.v1.SubjectService
    (
        "/vern.subjects.v1.SubjectService/CreateSubject",
        SubjectsWrite,
    ),
    (
        "/vern.subjects.v1.SubjectService/ImportSubjects",
        SubjectsWrite,
    ),
    ("/vern.subjects.v1.SubjectService/GetSubject", SubjectsRead),
    ("/vern.subjects.v1.SubjectService/FindSubject", SubjectsRead),
    (
        "/vern.subjects.v1.SubjectService/ListSubjects",
        SubjectsRead,
    ),
    (
        "/vern.subjects.v1.SubjectService/UpdateSubject",
        SubjectsWrite,
    ),
    ("/vern.subjects.v1.SubjectService/AddRecords", SubjectsWrite),
    (
        "/vern.subjects.v1.SubjectService/UpdateRecord",
        SubjectsWrite,
    ),
    (
        "/vern.subjects.v1.SubjectService/DeleteRecord",
        SubjectsWrite,
    ),
    (
        "/vern.subjects.v1.SubjectService/RestrictSubject",
        SubjectsWrite,
    ),
    (
        "/vern.subjects.v1.SubjectService/LiftRestriction",
        SubjectsWrite,
    ),
    (
        "/vern.subjects.v1.SubjectService/EraseSubject",
        SubjectsErase,
    ),
    (
        "/vern.subjects.v1.SubjectService/PurgeRecords",
        SubjectsPurge,
    ),
    (
        "/vern.subjects.v1.SubjectService/RewrapDataKeys",
        KeysRotate,
    ),
    ("/vern.subjects.v1.SubjectService/CountDataKeys", KeysRotate),
    (
        "/vern.subjects.v1.SubjectService/ReindexSubjects",
        KeysRotate,
    ),
    // vern.consents.v1.ConsentService
    (
        "/vern.consents.v1.ConsentService/RecordConsent",
        ConsentsWrite,
    ),
    (
        "/vern.consents.v1.ConsentService/GetConsentState",
        ConsentsRead,
    ),
    (
        "/vern.consents.v1.ConsentService/ListConsentStates",
        ConsentsRead,
    ),
    (
        "/vern.consents.v1.ConsentService/ListConsentHistory",
        ConsentsRead,
    ),
    ("/vern.consents.v1.ConsentService/Check", ConsentsCheck),
    ("/vern.consents.v1.ConsentService/BatchCheck", ConsentsCheck),
    (
        "/vern.consents.v1.ConsentService/RecordCompellingGrounds",
        ObjectionsDecide,
    ),
    (
        "/vern.consents.v1.ConsentService/ApplySubjectStates",
        ConsentsSync,
    ),
    (
        "/vern.consents.v1.ConsentService/ApplyPurposes",
        ConsentsSync,
    ),
    (
        "/vern.consents.v1.ConsentService/RewrapDataKeys",
        KeysRotate,
    ),
    ("/vern.consents.v1.ConsentService/CountDataKeys", KeysRotate),
    // vern.retention.v1.RetentionService
    (
        "/vern.retention.v1.RetentionService/CreatePolicy",
        RetentionManage,
    ),
    (
        "/vern.retention.v1.RetentionService/GetPolicy",
        RetentionRead,
    ),
    (
        "/vern.retention.v1.RetentionService/ListPolicies",
        RetentionRead,
    ),
    (
        "/vern.retention.v1.RetentionService/UpdatePolicy",
        RetentionManage,
    ),
    (
        "/vern.retention.v1.RetentionService/DeletePolicy",
        RetentionManage,
    ),
    (
        "/vern.retention.v1.RetentionService/PlaceHold",
        RetentionManage,
    ),
    ("/vern.retention.v1.RetentionService/GetHold", RetentionRead),
    (
        "/vern.retention.v1.RetentionService/ReleaseHold",
        RetentionManage,
    ),
    (
        "/vern.retention.v1.RetentionService/ListHolds",
        RetentionRead,
    ),
    (
        "/vern.retention.v1.RetentionService/RunSweep",
        RetentionSweep,
    ),
    (
        "/vern.retention.v1.RetentionService/GetSweepRun",
        RetentionRead,
    ),
    (
        "/vern.retention.v1.RetentionService/ListSweepRuns",
        RetentionRead,
    ),
    (
        "/vern.retention.v1.RetentionService/Evaluate",
        RetentionRead,
    ),
    // vern.rights.v1.RightsService
    ("/vern.rights.v1.RightsService/SubmitRequest", RightsSubmit),
    ("/vern.rights.v1.RightsService/GetRequest", RightsRead),
    ("/vern.rights.v1.RightsService/ListRequests", RightsRead),
    ("/vern.rights.v1.RightsService/VerifyIdentity", RightsHandle),
    ("/vern.rights.v1.RightsService/ExtendDeadline", RightsHandle),
    ("/vern.rights.v1.RightsService/RejectRequest", RightsHandle),
    ("/vern.rights.v1.RightsService/FulfilRequest", RightsHandle),
    ("/vern.rights.v1.RightsService/GetReport", RightsRead),
    ("/vern.rights.v1.RightsService/ExportReport", RightsRead),
    ("/vern.rights.v1.RightsService/WatchEvents", RightsEvents),
    ("/vern.rights.v1.RightsService/ListEvents", RightsEvents),
    ("/vern.rights.v1.RightsService/AckEvent", RightsEvents),
    (
        "/vern.rights.v1.RightsService/GetRightsSettings",
        RightsRead,
    ),
    (
        "/vern.rights.v1.RightsService/UpdateRightsSettings",
        RightsConfigure,
    ),
    (
        "/vern.rights.v1.RightsService/ApplySubjectErasures",
        RightsSync,
    ),
    ("/vern.rights.v1.RightsService/RewrapDataKeys", KeysRotate),
    ("/vern.rights.v1.RightsService/CountDataKeys", KeysRotate),
    // vern.audit.v1.AuditService
    ("/vern.audit.v1.AuditService/AppendEvents", AuditAppend),
    ("/vern.audit.v1.AuditService/GetEvent", AuditRead),
    ("/vern.audit.v1.AuditService/QueryEvents", AuditRead),
    ("/vern.audit.v1.AuditService/VerifyChain", AuditRead),
    ("/vern.audit.v1.AuditService/GetCheckpoint", AuditRead),
    ("/vern.audit.v1.AuditService/ListCheckpoints", AuditRead),
    ("/vern.audit.v1.AuditService/ExportEvents", AuditRead),
];

#[cfg(test)]
mod tests {
    use super::*;
    use prost::Message;
    use std::collections::HashSet;

    /// Every RPC named in the embedded descriptors, as gRPC paths.
    fn rpc_paths() -> Vec<String> {
        let fds = prost_types::FileDescriptorSet::decode(vern_proto::FILE_DESCRIPTOR_SET)
            .expect("descriptors");
        let mut paths = vec![];
        for file in fds.file {
            let pkg = file.package().to_owned();
            if !pkg.starts_with("vern.") {
                continue;
            }
            for svc in &file.service {
                for m in &svc.method {
                    paths.push(format!("/{pkg}.{}/{}", svc.name(), m.name()));
                }
            }
        }
        paths
    }

    #[test]
    fn every_rpc_has_exactly_one_permission() {
        let paths = rpc_paths();
        assert!(
            paths.len() > 50,
            "descriptors list the RPCs ({} found)",
            paths.len()
        );
        for p in &paths {
            let n = TABLE.iter().filter(|(t, _)| t == p).count();
            assert_eq!(
                n, 1,
                "{p} must have exactly one entry in the permission table"
            );
        }
        let known: HashSet<&str> = paths.iter().map(String::as_str).collect();
        for (t, _) in TABLE.iter() {
            assert!(
                known.contains(t),
                "{t} is in the table but not in the protos"
            );
        }
    }

    #[test]
    fn every_service_is_in_the_service_list() {
        for (t, _) in TABLE.iter() {
            let svc = t
                .trim_start_matches('/')
                .split('/')
                .next()
                .unwrap_or_default();
            assert!(vern_proto::SERVICE_NAMES.contains(&svc), "{svc}");
        }
    }
}
