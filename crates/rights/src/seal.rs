//! Encryption at rest of a request's personal data (identity, description, corrected
//! values, verification note, extension and rejection reasons) and of its report, with
//! the subjects service's envelope scheme: each request has its own data key, stored
//! only wrapped by the tenant's key (`keys.master_key` / `keys.tenant_keys`), and every
//! ciphertext is bound to its tenant, request and kind.

use serde::Serialize;
use serde::de::DeserializeOwned;
use vern_seal::crypto::{self, DataKey};
use vern_seal::keyring::Keyring;

use crate::error::RightsError;

/// What a sealed blob holds (part of its associated data).
#[derive(Debug, Clone, Copy)]
pub enum Kind {
    /// The request's personal data.
    Personal,
    /// The report.
    Report,
}

impl Kind {
    fn label(self) -> &'static str {
        match self {
            Kind::Personal => "personal",
            Kind::Report => "report",
        }
    }
}

/// Seals and opens personal data of rights requests.
#[derive(Clone)]
pub struct Sealer {
    keyring: Keyring,
}

impl std::fmt::Debug for Sealer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Sealer(..)")
    }
}

/// The associated data a request's data key is wrapped with (public for the store tests
/// that wrap real keys).
pub fn key_aad(tenant: &str, request: &str) -> Vec<u8> {
    format!("vern/rights/key/v1\0{tenant}\0{request}").into_bytes()
}

fn value_aad(tenant: &str, request: &str, kind: Kind) -> Vec<u8> {
    format!("vern/rights/{}/v1\0{tenant}\0{request}", kind.label()).into_bytes()
}

fn refs_aad(tenant: &str, request: &str, event: &str) -> Vec<u8> {
    format!("vern/rights/refs/v1\0{tenant}\0{request}\0{event}").into_bytes()
}

impl Sealer {
    /// The external references of a feed event (JSON), sealed with its request's key
    /// and bound to the event.
    pub fn seal_refs(
        &self,
        key: &DataKey,
        tenant: &str,
        request: &str,
        event: &str,
        refs_json: &str,
    ) -> Vec<u8> {
        crypto::seal(key, refs_json.as_bytes(), &refs_aad(tenant, request, event))
    }

    /// Sealed references of a feed event opened (JSON).
    pub fn open_refs(
        &self,
        key: &DataKey,
        tenant: &str,
        request: &str,
        event: &str,
        sealed: &[u8],
    ) -> Result<String, RightsError> {
        let plain = crypto::open(key, sealed, &refs_aad(tenant, request, event))
            .map_err(|_| RightsError::Corrupt("sealed references"))?;
        String::from_utf8(plain).map_err(|_| RightsError::Corrupt("sealed references"))
    }

    /// A sealer over the tenants' keys.
    pub fn new(keyring: Keyring) -> Self {
        Self { keyring }
    }

    /// The tenants' keys (master key rotation re-wraps with them).
    pub fn keyring(&self) -> &Keyring {
        &self.keyring
    }

    fn kek(&self, tenant: &str) -> Result<vern_seal::keyring::TenantKek, RightsError> {
        self.keyring
            .tenant(tenant)
            .map(|k| k.kek)
            .ok_or(RightsError::NoTenantKey)
    }

    /// A fresh data key for a new request, and its wrapped form for storage.
    pub fn new_key(&self, tenant: &str, request: &str) -> Result<(DataKey, Vec<u8>), RightsError> {
        let dek = DataKey::generate();
        let wrapped = self.kek(tenant)?.wrap(&dek, &key_aad(tenant, request));
        Ok((dek, wrapped))
    }

    /// The data key of a request from its wrapped form.
    pub fn key(&self, tenant: &str, request: &str, wrapped: &[u8]) -> Result<DataKey, RightsError> {
        self.kek(tenant)?
            .unwrap(wrapped, &key_aad(tenant, request))
            .map_err(|e| match e {
                vern_seal::keyring::UnwrapError::UnknownVersion(v) => {
                    RightsError::MasterKeyVersionMissing(v)
                }
                vern_seal::keyring::UnwrapError::DoesNotOpen(v) => RightsError::KeyDoesNotOpen(v),
                vern_seal::keyring::UnwrapError::Crypto(_) => RightsError::Corrupt("wrapped key"),
            })
    }

    /// A keyed fingerprint of a request that carries personal data (for its idempotency
    /// key), so no unkeyed hash of personal data is stored.
    /// Under the current index key first, then (during a re-index) the previous one.
    pub fn fingerprints(&self, tenant: &str, request: &[u8]) -> Result<Vec<[u8; 32]>, RightsError> {
        let keys = self
            .keyring
            .tenant(tenant)
            .ok_or(RightsError::NoTenantKey)?;
        Ok(keys.fingerprints(request))
    }

    /// `value` as JSON, sealed.
    pub fn seal<T: Serialize>(
        &self,
        key: &DataKey,
        tenant: &str,
        request: &str,
        kind: Kind,
        value: &T,
    ) -> Result<Vec<u8>, RightsError> {
        let plain = zeroize::Zeroizing::new(
            serde_json::to_vec(value).map_err(|_| RightsError::Corrupt("serialise"))?,
        );
        Ok(crypto::seal(key, &plain, &value_aad(tenant, request, kind)))
    }

    /// A sealed value opened.
    pub fn open<T: DeserializeOwned>(
        &self,
        key: &DataKey,
        tenant: &str,
        request: &str,
        kind: Kind,
        sealed: &[u8],
    ) -> Result<T, RightsError> {
        let plain = zeroize::Zeroizing::new(
            crypto::open(key, sealed, &value_aad(tenant, request, kind))
                .map_err(|_| RightsError::Corrupt("sealed value"))?,
        );
        serde_json::from_slice(&plain).map_err(|_| RightsError::Corrupt("sealed value"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashMap;

    #[test]
    fn sealed_values_open_only_in_their_place() {
        let ring = Keyring::from_base64(
            Some("AAECAwQFBgcICQoLDA0ODxAREhMUFRYXGBkaGxwdHh8="),
            &HashMap::new(),
        )
        .expect("ring");
        let s = Sealer::new(ring);
        let (dek, wrapped) = s.new_key("t", "r1").expect("key");
        let sealed = s
            .seal(&dek, "t", "r1", Kind::Personal, &"kari@example.no")
            .expect("seal");
        assert!(!sealed.windows(4).any(|w| w == b"kari"), "no plaintext");
        let dek2 = s.key("t", "r1", &wrapped).expect("unwrap");
        let back: String = s
            .open(&dek2, "t", "r1", Kind::Personal, &sealed)
            .expect("open");
        assert_eq!(back, "kari@example.no");
        assert!(
            s.open::<String>(&dek2, "t", "r2", Kind::Personal, &sealed)
                .is_err()
        );
        assert!(
            s.open::<String>(&dek2, "t", "r1", Kind::Report, &sealed)
                .is_err()
        );
        assert!(s.key("u", "r1", &wrapped).is_err(), "other tenant");
    }

    #[test]
    fn personal_data_sealed_before_the_case_texts_still_opens() {
        let old: crate::model::Personal =
            serde_json::from_str(r#"{"identity":null,"description":"d","rectifications":[]}"#)
                .expect("older personal data");
        assert_eq!(old.description, "d");
        assert!(old.verification_note.is_empty() && old.rejection_reason.is_empty());
        let json = serde_json::to_string(&crate::model::Personal {
            extension_reason: "r".into(),
            ..Default::default()
        })
        .expect("json");
        assert!(json.contains(r#""extension_reason":"r""#), "{json}");
        assert!(!json.contains("rejection_reason"), "{json}");
    }
}
