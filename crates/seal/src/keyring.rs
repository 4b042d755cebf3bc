//! Which key protects which tenant's personal data.
//!
//! A tenant's key-encryption key is the explicitly configured one
//! (`keys.tenant_keys[tenant]`) when present, else derived from the master key
//! ([`crypto::derive_tenant_key`]). Its blind-index key is derived from it.

use std::collections::HashMap;

use crate::crypto::{self, BlindIndexKey, CryptoError, MasterKey, TenantKey};

/// Why the configured keys cannot be used. Names the tenant, never key material.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum KeyringError {
    /// Neither a master key nor any tenant key is configured.
    #[error(
        "no key for personal data: set keys.master_key (VERN_KEYS__MASTER_KEY, base64 of 32 random bytes, e.g. `openssl rand -base64 32`) or keys.tenant_keys"
    )]
    NoKeys,
    /// The master key is not 32 bytes of base64.
    #[error("keys.master_key is invalid: expected base64 of 32 bytes")]
    InvalidMasterKey,
    /// A tenant key is not 32 bytes of base64.
    #[error("keys.tenant_keys[{0}] is invalid: expected base64 of 32 bytes")]
    InvalidTenantKey(String),
}

/// The keys of one tenant.
#[derive(Debug, Clone)]
pub struct TenantKeys {
    /// Wraps the tenant's subjects' data keys.
    pub kek: TenantKey,
    /// Keys the identifiers' blind index.
    pub blind: BlindIndexKey,
}

/// Every tenant's keys.
#[derive(Clone)]
pub struct Keyring {
    master: Option<MasterKey>,
    tenants: HashMap<String, TenantKey>,
}

impl std::fmt::Debug for Keyring {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Keyring")
            .field("master", &self.master.is_some())
            .field("explicit_tenants", &self.tenants.len())
            .finish()
    }
}

impl Keyring {
    /// A keyring of these keys; at least one must be given.
    pub fn new(
        master: Option<MasterKey>,
        tenants: HashMap<String, TenantKey>,
    ) -> Result<Self, KeyringError> {
        if master.is_none() && tenants.is_empty() {
            return Err(KeyringError::NoKeys);
        }
        Ok(Self { master, tenants })
    }

    /// A keyring from configuration text: the master key and the tenant keys, each
    /// base64 of 32 bytes.
    pub fn from_base64(
        master: Option<&str>,
        tenants: &HashMap<String, String>,
    ) -> Result<Self, KeyringError> {
        let master = master
            .map(MasterKey::from_base64)
            .transpose()
            .map_err(|_: CryptoError| KeyringError::InvalidMasterKey)?;
        let tenants = tenants
            .iter()
            .map(|(t, k)| {
                TenantKey::from_base64(k)
                    .map(|k| (t.clone(), k))
                    .map_err(|_| KeyringError::InvalidTenantKey(t.clone()))
            })
            .collect::<Result<HashMap<_, _>, _>>()?;
        Self::new(master, tenants)
    }

    /// The keys of `tenant`, or `None` when it has no explicit key and there is no
    /// master key.
    pub fn tenant(&self, tenant: &str) -> Option<TenantKeys> {
        let kek = match self.tenants.get(tenant) {
            Some(k) => k.clone(),
            None => crypto::derive_tenant_key(self.master.as_ref()?, tenant),
        };
        let blind = crypto::derive_blind_index_key(&kek);
        Some(TenantKeys { kek, blind })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::crypto::{DataKey, KEY_LEN, unwrap_data_key, wrap_data_key};
    use base64::Engine as _;
    use base64::engine::general_purpose::STANDARD;

    #[test]
    fn explicit_keys_win_over_derived_ones() {
        let master = STANDARD.encode([1u8; KEY_LEN]);
        let explicit = STANDARD.encode([2u8; KEY_LEN]);
        let tenants = HashMap::from([("own-key".to_owned(), explicit)]);
        let ring = Keyring::from_base64(Some(&master), &tenants).expect("ring");
        let dek = DataKey::generate();
        let own = ring.tenant("own-key").expect("own");
        let wrapped = wrap_data_key(&own.kek, &dek, b"x");
        assert!(
            unwrap_data_key(&TenantKey::from_bytes([2u8; KEY_LEN]), &wrapped, b"x").is_ok(),
            "the explicit key is used as is"
        );
        let derived = ring.tenant("other").expect("derived");
        let expected = crypto::derive_tenant_key(&MasterKey::from_bytes([1u8; KEY_LEN]), "other");
        let wrapped = wrap_data_key(&derived.kek, &dek, b"x");
        assert!(unwrap_data_key(&expected, &wrapped, b"x").is_ok());
    }

    #[test]
    fn configuration_errors() {
        let none = HashMap::new();
        assert_eq!(
            Keyring::from_base64(None, &none).err(),
            Some(KeyringError::NoKeys)
        );
        assert_eq!(
            Keyring::from_base64(Some("short"), &none).err(),
            Some(KeyringError::InvalidMasterKey)
        );
        let bad = HashMap::from([("dept-a".to_owned(), "nope".to_owned())]);
        let e = Keyring::from_base64(None, &bad).expect_err("bad");
        assert_eq!(e, KeyringError::InvalidTenantKey("dept-a".into()));
        assert!(
            !e.to_string().contains("nope"),
            "no key material in messages"
        );
        // Only explicit keys: other tenants have none.
        let one = HashMap::from([("dept-a".to_owned(), STANDARD.encode([5u8; KEY_LEN]))]);
        let ring = Keyring::from_base64(None, &one).expect("ring");
        assert!(ring.tenant("dept-a").is_some());
        assert!(ring.tenant("dept-b").is_none());
        assert!(!format!("{ring:?}").contains("5"), "Debug shows no keys");
    }
}
