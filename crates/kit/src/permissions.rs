//! The permission table: every RPC of every service → exactly one permission, built
//! once from the `(vern.common.v1.permission)` options in the embedded descriptors.
//! kit holds no list of RPCs: a service's RPCs and their permissions live in its proto.

use std::collections::HashMap;
use std::sync::LazyLock;

use crate::auth::Permission;

static TABLE: LazyLock<HashMap<String, Permission>> = LazyLock::new(|| {
    // The descriptors are compiled into the binary; if they did not decode, every call
    // would be denied (an empty table), which the start-up check below turns into an error.
    vern_proto::rpcs::all()
        .unwrap_or_default()
        .into_iter()
        .filter(|m| m.permission != Permission::Unspecified)
        .map(|m| (m.path(), m.permission))
        .collect()
});

static STREAMING: LazyLock<std::collections::HashSet<String>> = LazyLock::new(|| {
    vern_proto::rpcs::all()
        .unwrap_or_default()
        .into_iter()
        .filter(|m| m.server_streaming)
        .map(|m| m.path())
        .collect()
});

static REPEATABLE: LazyLock<std::collections::HashSet<String>> = LazyLock::new(|| {
    vern_proto::rpcs::all()
        .unwrap_or_default()
        .into_iter()
        .filter(|m| m.idempotency != vern_proto::rpcs::Idempotency::Unknown && !m.client_streaming)
        .map(|m| m.path())
        .collect()
});

/// Whether a call of the RPC at `path` may be sent again when its connection failed
/// before an answer: it declares itself a read or idempotent (by request id), and its
/// request is one message (see `vern_proto::rpcs::Idempotency`).
pub fn is_repeatable(path: &str) -> bool {
    REPEATABLE.contains(path)
}

/// Whether the RPC at `path` streams its answer (and so is guarded for its whole life
/// by [`crate::streams`]).
pub fn is_server_streaming(path: &str) -> bool {
    STREAMING.contains(path)
}

/// An RPC that declares `permission` (the first in the descriptors), for kit's own
/// tests: kit names no service RPC, even there.
#[cfg(test)]
pub(crate) fn rpc_with(permission: Permission) -> String {
    let mut paths: Vec<&String> = table()
        .iter()
        .filter(|(_, p)| **p == permission)
        .map(|(path, _)| path)
        .collect();
    paths.sort();
    paths
        .first()
        .map(|p| (*p).clone())
        .unwrap_or_else(|| panic!("no RPC declares {permission:?}"))
}

/// Every RPC path with its permission. RPCs that declare no permission are absent
/// (and so refused to everyone).
pub fn table() -> &'static HashMap<String, Permission> {
    &TABLE
}

/// Checks at start that every RPC in the descriptors declares a permission: a server
/// never runs with an RPC that would be silently refused. Returns the paths at fault.
pub fn check_complete() -> Result<(), String> {
    let methods = vern_proto::rpcs::all()
        .map_err(|e| format!("the embedded descriptors do not decode: {e}"))?;
    let missing: Vec<String> = methods
        .into_iter()
        .filter(|m| m.permission == Permission::Unspecified)
        .map(|m| m.path())
        .collect();
    if missing.is_empty() {
        Ok(())
    } else {
        Err(format!(
            "RPCs without option (vern.common.v1.permission): {}",
            missing.join(", ")
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use prost::Message;

    /// Every RPC named in the embedded descriptors, as gRPC paths (by prost-types,
    /// independently of the option reader).
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
    fn every_rpc_declares_a_permission() {
        let paths = rpc_paths();
        assert!(
            paths.len() > 50,
            "descriptors list the RPCs ({} found)",
            paths.len()
        );
        check_complete().expect("every RPC declares a permission");
        for p in &paths {
            assert!(
                table().contains_key(p),
                "{p} must declare option (vern.common.v1.permission)"
            );
        }
        assert_eq!(table().len(), paths.len(), "the table holds only RPCs");
    }

    #[test]
    fn unknown_paths_have_no_permission() {
        assert_eq!(crate::auth::permission_for("/vern.x.v1.X/Nothing"), None);
        for p in [
            Permission::ConsentsCheck,
            Permission::AuditAppend,
            Permission::KeysRotate,
        ] {
            assert_eq!(crate::auth::permission_for(&rpc_with(p)), Some(p));
        }
    }

    /// A method without the option is reported, and one with it is read: the reader
    /// works on any descriptor set, not only this build's.
    #[test]
    fn a_method_without_the_option_is_found() {
        use prost_types::{
            FileDescriptorProto, FileDescriptorSet, MethodDescriptorProto, ServiceDescriptorProto,
        };
        let set = FileDescriptorSet {
            file: vec![FileDescriptorProto {
                package: Some("vern.planted.v1".into()),
                service: vec![ServiceDescriptorProto {
                    name: Some("PlantedService".into()),
                    method: vec![MethodDescriptorProto {
                        name: Some("Forgotten".into()),
                        ..Default::default()
                    }],
                    ..Default::default()
                }],
                ..Default::default()
            }],
        };
        let methods = vern_proto::rpcs::from_descriptor_set(&set.encode_to_vec()).expect("decode");
        assert_eq!(methods.len(), 1);
        assert_eq!(
            methods[0].path(),
            "/vern.planted.v1.PlantedService/Forgotten"
        );
        assert_eq!(methods[0].permission, Permission::Unspecified);
    }

    #[test]
    fn every_service_is_in_the_service_list() {
        for t in table().keys() {
            let svc = t
                .trim_start_matches('/')
                .split('/')
                .next()
                .unwrap_or_default();
            assert!(vern_proto::SERVICE_NAMES.contains(&svc), "{svc}");
        }
    }
}
