//! SubjectService: data subjects, their identifiers (encrypted, blind-indexed),
//! external references and personal data records, restriction (Art. 18), erasure by
//! crypto-shredding (Art. 17) and the purge primitive of the retention service.
//!
//! Layers: [`api`] (tonic handlers) → [`service`] (use cases) → [`domain`] (rules,
//! crypto) and [`store`] (sea-orm: the main store and the separate key store).
//! [`relay`] delivers state changes to the consents service through the outbox.

pub mod api;
pub mod domain;
pub mod error;
pub mod purposes;
pub mod relay;
pub mod service;
pub mod store;

use std::sync::Arc;

use vern_kit::auth::ServiceTokens;
use vern_kit::config::Config;
use vern_kit::db::DbTarget;
use vern_kit::server::Limits;
use vern_proto::subjects::v1::subject_service_server::SubjectServiceServer;

use crate::relay::{ConsentsDelivery, RightsDelivery};
use crate::store::{KeyStore, SubjectStore};
use tower::Layer;
use vern_append::AuditDelivery;
use vern_kit::audit::{AUDIT_TOPIC, Audit, AuditLayer, Audited, Auditor, TopicRouter};
use vern_proto::consents::v1::consent_service_client::ConsentServiceClient;
use vern_proto::rights::v1::rights_service_client::RightsServiceClient;

pub use api::SubjectApi;

/// Why a service could not start.
pub type BuildError = Box<dyn std::error::Error + Send + Sync>;

/// The gRPC service name.
pub const SERVICE_NAME: &str = "vern.subjects.v1.SubjectService";

/// Name of the key store (its SQLite file or PostgreSQL schema suffix).
pub const KEY_STORE: &str = "subject_keys";

/// Where the key store lives under `config`: its own SQLite file
/// (`<data_dir>/subject_keys.db`) or PostgreSQL schema (`<prefix>_subject_keys`),
/// backed up separately from the main store (see [`store::keys`]).
pub fn key_store_target(config: &Config) -> DbTarget {
    DbTarget {
        max_connections: config.database_max_connections,
        ..DbTarget::with_prefix(
            config.database_url.as_deref(),
            &config.data_dir,
            &config.database_schema_prefix,
            KEY_STORE,
        )
    }
}

/// Runs the pending migrations of the main store at `target` and of the key store at
/// `vern subjects duplicates` on the databases of `config` ([`service::duplicates`]):
/// reads only. Refuses keys whose check values differ (the report would be noise).
pub async fn find_duplicates(
    config: &Config,
    target: &DbTarget,
) -> Result<service::duplicates::DuplicateReport, BuildError> {
    let keyring = vern_kit::keys::keyring(config, "subjects")?;
    let store = SubjectStore::open(target).await?;
    let differing: Vec<String> = vern_kit::keycheck::compare(store.connection(), &keyring)
        .await?
        .into_iter()
        .filter(|(_, c)| *c == vern_kit::keycheck::KeyCheck::Differs)
        .map(|(k, _)| k.setting())
        .collect();
    if !differing.is_empty() {
        return Err(format!(
            "the configured keys are not the ones this database used ({}): check them with `vern keys verify`",
            differing.join("; ")
        )
        .into());
    }
    let keys = KeyStore::open(&key_store_target(config)).await?;
    Ok(service::duplicates::find_duplicates(&store, &keys, &keyring).await?)
}

/// `keys` (see [`key_store_target`]), and nothing else (`vern migrate`).
pub async fn migrate(
    target: &DbTarget,
    keys: &DbTarget,
) -> Result<[(&'static str, vern_kit::db::Migrated); 2], sea_orm::DbErr> {
    Ok([
        (
            "subjects",
            vern_kit::db::migrate_target::<store::Migrator>(target).await?,
        ),
        (
            KEY_STORE,
            vern_kit::db::migrate_target::<store::KeyMigrator>(keys).await?,
        ),
    ])
}

/// Resolves the personal-data keys, opens the main store and the key store (running
/// their migrations), starts the outbox relay to the consents and rights services (so it must run
/// inside a tokio runtime) and builds the gRPC service.
///
/// Fails when no key protects personal data (neither `keys.master_key` nor
/// `keys.tenant_keys`, and no dev key) or when no service token can be signed.
pub async fn build(
    config: &Config,
    target: &DbTarget,
) -> Result<Audited<SubjectServiceServer<SubjectApi>>, BuildError> {
    let limits = Limits::from(&config.server);
    let keyring = vern_kit::keys::keyring(config, "subjects")?;
    let tokens = ServiceTokens::from_config(config)
        .map_err(|e| format!("subjects: reading the service signing key failed: {e}"))?
        .ok_or(
            "subjects: no key to sign service tokens for the consents service: set auth.hs256_secret, \
             or auth.service_key_file and auth.service_key_id",
        )?;
    let store = SubjectStore::open(target).await?;
    let keys = KeyStore::open(&key_store_target(config)).await?;
    // Before anything is read or written under a key: the keys are the ones used here.
    vern_kit::keycheck::at_start(
        store.connection(),
        &keyring,
        "subjects",
        keys.connection(),
        &KeyStore::wrapped_keys(),
    )
    .await?;
    untried_index_versions(&store, &keyring).await?;
    let channel = vern_kit::client::channel(&config.services.consents.url)
        .map_err(|e| format!("subjects: services.consents.url is not usable: {e}"))?;
    let rights_channel = vern_kit::client::channel(&config.services.rights.url)
        .map_err(|e| format!("subjects: services.rights.url is not usable: {e}"))?;
    let rights_tokens =
        ServiceTokens::from_config(config)?.ok_or("subjects: no key to sign service tokens")?;
    let audit_tokens =
        ServiceTokens::from_config(config)?.ok_or("subjects: no key to sign service tokens")?;
    let router = TopicRouter::new()
        .route(
            crate::store::STATE_TOPIC,
            Arc::new(ConsentsDelivery::new(
                ConsentServiceClient::new(channel),
                tokens,
            )),
        )
        .route(
            crate::store::ERASURE_TOPIC,
            Arc::new(RightsDelivery::new(
                RightsServiceClient::new(rights_channel),
                rights_tokens,
            )),
        )
        .route(
            AUDIT_TOPIC,
            Arc::new(AuditDelivery::new(
                &config.services.audit.url,
                Arc::new(audit_tokens),
            )?),
        );
    let relay = router.spawn(
        store.connection().clone(),
        vern_kit::outbox::RelaySettings::new(relay::BATCH, &config.outbox),
    );
    let auditor = Auditor::new(
        store.connection().clone(),
        Some(relay.clone()),
        "subjects",
        audit_policy,
    );
    let tenants_channel = vern_kit::client::traced_channel(&config.services.tenants.url)
        .map_err(|e| format!("subjects: services.tenants.url is not usable: {e}"))?;
    let purpose_tokens =
        ServiceTokens::from_config(config)?.ok_or("subjects: no key to sign service tokens")?;
    let purposes = Arc::new(purposes::TenantsPurposes::new(
        tenants_channel,
        purpose_tokens,
    ));
    let subjects = service::Subjects::new(store, keys, keyring, purposes).with_relay(relay);
    match subjects.seal_legacy_refs().await {
        Ok(0) => {}
        Ok(n) => tracing::info!(rows = n, "sealed external references stored in plaintext"),
        // Retried at the next start; the rows stay readable and findable meanwhile.
        Err(e) => tracing::warn!(error = %e, "sealing plaintext external references failed"),
    }
    match subjects.seal_legacy_restriction_reasons().await {
        Ok(0) => {}
        Ok(n) => tracing::info!(rows = n, "sealed restriction reasons stored in plaintext"),
        // Retried at the next start; the reasons stay readable meanwhile.
        Err(e) => tracing::warn!(error = %e, "sealing plaintext restriction reasons failed"),
    }
    Ok(AuditLayer::new(auditor).layer(vern_kit::limited!(
        SubjectServiceServer::new(
            SubjectApi::new(subjects).with_message_limit(limits.max_message_bytes)
        ),
        limits
    )))
}

/// Refuses to start while blind-index entries are under an index key version this
/// process does not try (`keys.previous_index_key_version` removed before a re-index
/// finished, or the index version changed without one): their people would not be
/// found by identifier, and a uniqueness check would let a duplicate in.
async fn untried_index_versions(
    store: &SubjectStore,
    keyring: &domain::keyring::Keyring,
) -> Result<(), String> {
    let tried = [
        Some(keyring.index_version()),
        keyring.previous_index_version(),
    ];
    let counts = store
        .index_counts()
        .await
        .map_err(|e| format!("subjects: counting the blind-index entries failed: {e}"))?;
    for (version, (identifiers, references)) in counts {
        let untried = u32::try_from(version)
            .ok()
            .is_none_or(|v| !tried.contains(&Some(v)));
        if untried && identifiers + references > 0 {
            return Err(format!(
                "subjects: {} blind-index entries are under index key version {version}, which this process does not try (keys.index_key_version = {}{}): lookups would miss those people and a uniqueness check would let a copy in. Refusing to start. Set keys.previous_index_key_version = {version} (with that master key version configured) and finish the re-index with `vern keys reindex`",
                identifiers + references,
                keyring.index_version(),
                keyring
                    .previous_index_version()
                    .map(|p| format!(", keys.previous_index_key_version = {p}"))
                    .unwrap_or_default(),
            ));
        }
    }
    Ok(())
}

/// How each RPC is audited: every change, and every read of personal data.
pub fn audit_policy(rpc: &str) -> Audit {
    match rpc {
        "GetSubject" | "FindSubject" | "ListSubjects" => Audit::Read,
        // Counts without personal data, asked by every overview.
        "GetSubjectStats" => Audit::No,
        _ => Audit::Change,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config(dir: &std::path::Path) -> Config {
        Config {
            data_dir: dir.to_path_buf(),
            ..Config::default()
        }
    }

    #[tokio::test]
    async fn build_needs_a_personal_data_key_and_a_token_signer() {
        let dir = std::env::temp_dir().join(format!("vern-subjects-{}", uuid::Uuid::new_v4()));
        let target = DbTarget::for_service(None, &dir, "subjects");
        let master = "AAECAwQFBgcICQoLDA0ODxAREhMUFRYXGBkaGxwdHh8=".to_owned();

        let mut no_keys = config(&dir);
        no_keys.auth.hs256_secret = Some("secret".into());
        let e = build(&no_keys, &target).await.expect_err("no keys");
        assert!(e.to_string().contains("keys.master_key"), "{e}");

        let mut bad_key = no_keys.clone();
        bad_key.keys.master_key = Some("too short".into());
        let e = build(&bad_key, &target).await.expect_err("bad key");
        assert!(e.to_string().contains("invalid"), "{e}");
        assert!(
            !e.to_string().contains("too short"),
            "no key material in messages"
        );

        let mut no_signer = config(&dir);
        no_signer.keys.master_key = Some(master.clone());
        let e = build(&no_signer, &target).await.expect_err("no signer");
        assert!(e.to_string().contains("service tokens"), "{e}");

        let mut ok = no_keys.clone();
        ok.keys.master_key = Some(master);
        build(&ok, &target).await.expect("builds");
        assert!(dir.join("subjects.db").exists());
        assert!(dir.join("subject_keys.db").exists(), "a separate key store");

        // `vern dev`: a dev master key and a dev signing key are created. On the data
        // written under the configured key, that other key is refused.
        let mut dev = config(&dir);
        dev.auth.dev_key = true;
        let e = build(&dev, &target).await.expect_err("another master key");
        assert!(e.to_string().contains("master/1"), "{e}");
        let fresh = dir.join("fresh");
        let mut dev = config(&fresh);
        dev.auth.dev_key = true;
        build(&dev, &DbTarget::for_service(None, &fresh, "subjects"))
            .await
            .expect("dev");
        let _ = std::fs::remove_dir_all(dir);
    }
}
