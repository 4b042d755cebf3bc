//! Which key protects which tenant's personal data.
//!
//! A tenant's key-encryption key is the explicitly configured one
//! (`keys.tenant_keys[tenant]`) when present, else derived from the master key
//! ([`crypto::derive_tenant_key`]). Its blind-index key is derived from it.
//!
//! The master key has versions. The current one wraps every new data key; previous
//! ones still open the keys they wrapped until `vern keys rotate-master` has re-wrapped
//! them ([`TenantKek::rewrap`]: the data key, and so every sealed value, stays the
//! same). Blind indexes are keyed by one fixed version (`keys.index_key_version`, 1 by
//! default), so rotating the master key changes no index entry.
//!
//! Changing the index version is a re-index: while `keys.previous_index_key_version`
//! is set, lookups and uniqueness checks try the digests under both versions and
//! request fingerprints match under either, new entries are written under the
//! current one, and `ReindexSubjects` rewrites the old entries
//! ([`TenantKeys::previous_blind`]).

use std::collections::HashMap;

use crate::crypto::{self, BlindIndexKey, CryptoError, DataKey, MasterKey, TenantKey};

/// Why the configured keys cannot be used. Names the tenant or version, never key
/// material.
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
    /// A previous master key is not 32 bytes of base64, or its version is not a
    /// positive number, or it repeats the current version.
    #[error(
        "keys.previous_master_keys[{0}] is invalid: expected a version number (1, 2, …) other than keys.master_key_version, and base64 of 32 bytes"
    )]
    InvalidPreviousMasterKey(String),
    /// The master key version is 0.
    #[error("keys.master_key_version must be 1 or more")]
    InvalidMasterVersion,
    /// The blind indexes are keyed by a master key version that is not configured.
    #[error(
        "keys.index_key_version {0} is not configured: blind indexes and request fingerprints are keyed by that master key version, so keep it in keys.previous_master_keys (it then wraps nothing)"
    )]
    MissingIndexVersion(u32),
    /// The previous index version is not configured, or is the current one.
    #[error(
        "keys.previous_index_key_version {0} is not usable: it must be a configured master key version (keys.master_key_version or keys.previous_master_keys) other than keys.index_key_version"
    )]
    InvalidPreviousIndexVersion(u32),
    /// A tenant key is not 32 bytes of base64.
    #[error("keys.tenant_keys[{0}] is invalid: expected base64 of 32 bytes")]
    InvalidTenantKey(String),
}

/// Which key wrapped a data key.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum KeyVersion {
    /// The tenant's own configured key (`keys.tenant_keys`); not rotated with the
    /// master key.
    Tenant,
    /// The tenant key derived from this version of the master key.
    Master(u32),
}

impl std::fmt::Display for KeyVersion {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            KeyVersion::Tenant => f.write_str("tenant key"),
            KeyVersion::Master(v) => write!(f, "master key version {v}"),
        }
    }
}

/// One configured key, as its check value is stored and as an operator knows it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ConfiguredKey {
    /// A master key version (`current`: `keys.master_key`, else a previous one).
    Master {
        /// Its version.
        version: u32,
        /// Whether it is the current one.
        current: bool,
    },
    /// A tenant's own key.
    Tenant(String),
}

impl ConfiguredKey {
    /// The name its check value is stored under: `master/<version>`, `tenant/<id>`.
    pub fn name(&self) -> String {
        match self {
            ConfiguredKey::Master { version, .. } => format!("master/{version}"),
            ConfiguredKey::Tenant(t) => format!("tenant/{t}"),
        }
    }

    /// The setting that holds it, as an operator configures it (file and environment).
    pub fn setting(&self) -> String {
        match self {
            ConfiguredKey::Master {
                version,
                current: true,
            } => format!(
                "keys.master_key (VERN_KEYS__MASTER_KEY, version {version} by keys.master_key_version)"
            ),
            ConfiguredKey::Master {
                version,
                current: false,
            } => format!(
                "keys.previous_master_keys.{version} (VERN_KEYS__PREVIOUS_MASTER_KEYS__{version})"
            ),
            ConfiguredKey::Tenant(t) => format!("keys.tenant_keys.{t}"),
        }
    }
}

/// Marks a data key wrapped under master key version 2 or later:
/// `0x02 ‖ version (u32, big-endian) ‖ wrapped key`. Keys wrapped under version 1 (and
/// under tenants' own keys) stay bare, byte for byte what earlier releases wrote.
const VERSIONED: u8 = 2;

/// Why a wrapped data key cannot be opened.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum UnwrapError {
    /// It was wrapped under a master key version that is not configured (retired too
    /// early, or a replica that has not been given the new version yet).
    #[error(
        "the data key is wrapped under master key version {0}, which is not configured (keys.master_key / keys.previous_master_keys)"
    )]
    UnknownVersion(u32),
    /// Wrapped under a configured version whose key does not open it: a wrong key
    /// value for that version (which key check values keep from starting), or damaged
    /// bytes.
    #[error("a data key wrapped under {0} does not open with the key configured for it")]
    DoesNotOpen(KeyVersion),
    /// Malformed, altered, or wrapped for another owner.
    #[error(transparent)]
    Crypto(#[from] CryptoError),
}

/// A tenant's key-encryption keys: the current one, which wraps every new data key,
/// and the previous versions, which still open keys not yet re-wrapped.
#[derive(Debug, Clone)]
pub struct TenantKek {
    current: (KeyVersion, TenantKey),
    previous: Vec<(u32, TenantKey)>,
}

impl TenantKek {
    /// A key set of one key (tests, and tenants with their own key).
    pub fn single(version: KeyVersion, key: TenantKey) -> Self {
        Self {
            current: (version, key),
            previous: vec![],
        }
    }

    /// The version new data keys are wrapped under.
    pub fn current_version(&self) -> KeyVersion {
        self.current.0
    }

    /// Wraps a data key under the current version. `aad` names its owner.
    pub fn wrap(&self, key: &DataKey, aad: &[u8]) -> Vec<u8> {
        let bare = crypto::wrap_data_key(&self.current.1, key, aad);
        match self.current.0 {
            KeyVersion::Master(v) if v > 1 => {
                let mut out = Vec::with_capacity(5 + bare.len());
                out.push(VERSIONED);
                out.extend_from_slice(&v.to_be_bytes());
                out.extend_from_slice(&bare);
                out
            }
            _ => bare,
        }
    }

    /// Which version wrapped `wrapped` (from its layout; nothing is decrypted).
    pub fn version_of(&self, wrapped: &[u8]) -> Result<KeyVersion, CryptoError> {
        Ok(split(wrapped, self.current.0)?.0)
    }

    /// Opens a data key wrapped under any configured version.
    pub fn unwrap(&self, wrapped: &[u8], aad: &[u8]) -> Result<DataKey, UnwrapError> {
        let (version, bare) = split(wrapped, self.current.0)?;
        let key = if version == self.current.0 {
            &self.current.1
        } else {
            match version {
                KeyVersion::Master(v) => {
                    &self
                        .previous
                        .iter()
                        .find(|(p, _)| *p == v)
                        .ok_or(UnwrapError::UnknownVersion(v))?
                        .1
                }
                KeyVersion::Tenant => return Err(CryptoError::UnsupportedVersion.into()),
            }
        };
        crypto::unwrap_data_key(key, bare, aad).map_err(|_| UnwrapError::DoesNotOpen(version))
    }

    /// The data key wrapped under the current version, or `None` when it already is.
    /// The data key itself, and so every value sealed with it, stays the same.
    pub fn rewrap(&self, wrapped: &[u8], aad: &[u8]) -> Result<Option<Vec<u8>>, UnwrapError> {
        if self.version_of(wrapped)? == self.current.0 {
            return Ok(None);
        }
        let key = self.unwrap(wrapped, aad)?;
        Ok(Some(self.wrap(&key, aad)))
    }
}

/// The version and the bare wrapped key of a stored wrapped key. A bare key is version
/// 1, or the tenant's own key when that is what the tenant uses.
fn split(wrapped: &[u8], current: KeyVersion) -> Result<(KeyVersion, &[u8]), CryptoError> {
    match wrapped.first() {
        Some(&VERSIONED) => {
            let version = wrapped
                .get(1..5)
                .and_then(|b| <[u8; 4]>::try_from(b).ok())
                .map(u32::from_be_bytes)
                .ok_or(CryptoError::Malformed)?;
            Ok((KeyVersion::Master(version), &wrapped[5..]))
        }
        Some(_) if current == KeyVersion::Tenant => Ok((KeyVersion::Tenant, wrapped)),
        Some(_) => Ok((KeyVersion::Master(1), wrapped)),
        None => Err(CryptoError::Malformed),
    }
}

/// The keys of one tenant.
#[derive(Debug, Clone)]
pub struct TenantKeys {
    /// Wraps the tenant's subjects' data keys.
    pub kek: TenantKek,
    /// Keys the identifiers' blind index (and request fingerprints). It does not
    /// change when the master key rotates: it is derived from the master key version
    /// `keys.index_key_version`.
    pub blind: BlindIndexKey,
    /// The master key version `blind` is derived from (the keyring's index version;
    /// for a tenant with its own key, whose index never changes, the same number).
    pub index_version: u32,
    /// During a re-index: the blind-index key of `keys.previous_index_key_version`,
    /// which entries not yet rewritten are still keyed by. `None` for a tenant with
    /// its own key (its index key does not depend on the master key).
    pub previous_blind: Option<(u32, BlindIndexKey)>,
}

impl TenantKeys {
    /// The blind-index keys an entry may be keyed by: the current one first.
    pub fn blind_keys(&self) -> impl Iterator<Item = &BlindIndexKey> {
        std::iter::once(&self.blind).chain(self.previous_blind.as_ref().map(|p| &p.1))
    }

    /// A request's keyed fingerprints (for its idempotency key, when it carries
    /// personal data): under the current index key first, then the previous one.
    pub fn fingerprints(&self, request: &[u8]) -> Vec<[u8; 32]> {
        self.blind_keys()
            .map(|k| crypto::keyed_digest(k, request))
            .collect()
    }
}

/// Every tenant's keys.
#[derive(Clone)]
pub struct Keyring {
    master: Option<(u32, MasterKey)>,
    previous: Vec<(u32, MasterKey)>,
    index_version: u32,
    previous_index_version: Option<u32>,
    tenants: HashMap<String, TenantKey>,
}

impl std::fmt::Debug for Keyring {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Keyring")
            .field("master_version", &self.master.as_ref().map(|m| m.0))
            .field(
                "previous_versions",
                &self.previous.iter().map(|p| p.0).collect::<Vec<_>>(),
            )
            .field("index_version", &self.index_version)
            .field("previous_index_version", &self.previous_index_version)
            .field("explicit_tenants", &self.tenants.len())
            .finish()
    }
}

/// The master keys of a keyring as configured: the current one with its version, the
/// previous versions still needed, and the version the blind indexes are keyed by.
#[derive(Debug, Clone)]
pub struct MasterKeys<'a> {
    /// The current master key (base64) and its version.
    pub current: Option<(u32, &'a str)>,
    /// Earlier versions (version as text → base64), until nothing uses them.
    pub previous: &'a HashMap<String, String>,
    /// The version whose derived keys key the blind indexes; `None`: 1.
    pub index_version: Option<u32>,
    /// During a re-index, the index version entries are moving from.
    pub previous_index_version: Option<u32>,
}

impl Keyring {
    /// A keyring of these keys with a single master key version 1; at least one key
    /// must be given.
    pub fn new(
        master: Option<MasterKey>,
        tenants: HashMap<String, TenantKey>,
    ) -> Result<Self, KeyringError> {
        Self::versioned(master.map(|m| (1, m)), vec![], 1, tenants)
    }

    /// A keyring with master key versions: `master` is current, `previous` still
    /// open what they wrapped, `index_version` keys the blind indexes.
    pub fn versioned(
        master: Option<(u32, MasterKey)>,
        previous: Vec<(u32, MasterKey)>,
        index_version: u32,
        tenants: HashMap<String, TenantKey>,
    ) -> Result<Self, KeyringError> {
        if master.is_none() && tenants.is_empty() {
            return Err(KeyringError::NoKeys);
        }
        if let Some((v, _)) = &master {
            if *v == 0 {
                return Err(KeyringError::InvalidMasterVersion);
            }
            let known = *v == index_version || previous.iter().any(|p| p.0 == index_version);
            if !known {
                return Err(KeyringError::MissingIndexVersion(index_version));
            }
        }
        Ok(Self {
            master,
            previous,
            index_version,
            previous_index_version: None,
            tenants,
        })
    }

    /// The same keyring during a re-index from index version `previous`, which must be
    /// a configured master key version other than the current index version.
    pub fn with_previous_index_version(mut self, previous: u32) -> Result<Self, KeyringError> {
        if previous == self.index_version || !self.master_versions().contains(&previous) {
            return Err(KeyringError::InvalidPreviousIndexVersion(previous));
        }
        self.previous_index_version = Some(previous);
        Ok(self)
    }

    /// A keyring from configuration text: the master key and the tenant keys, each
    /// base64 of 32 bytes.
    pub fn from_base64(
        master: Option<&str>,
        tenants: &HashMap<String, String>,
    ) -> Result<Self, KeyringError> {
        let none = HashMap::new();
        Self::from_config(
            &MasterKeys {
                current: master.map(|m| (1, m)),
                previous: &none,
                index_version: None,
                previous_index_version: None,
            },
            tenants,
        )
    }

    /// A keyring from configuration text with master key versions.
    pub fn from_config(
        master: &MasterKeys<'_>,
        tenants: &HashMap<String, String>,
    ) -> Result<Self, KeyringError> {
        let current = master
            .current
            .map(|(v, k)| MasterKey::from_base64(k).map(|k| (v, k)))
            .transpose()
            .map_err(|_: CryptoError| KeyringError::InvalidMasterKey)?;
        let current_version = current.as_ref().map(|c| c.0);
        let mut previous = master
            .previous
            .iter()
            .map(|(v, k)| {
                let bad = || KeyringError::InvalidPreviousMasterKey(v.clone());
                let version: u32 = v.trim().parse().map_err(|_| bad())?;
                if version == 0 || Some(version) == current_version {
                    return Err(bad());
                }
                Ok((version, MasterKey::from_base64(k).map_err(|_| bad())?))
            })
            .collect::<Result<Vec<_>, _>>()?;
        previous.sort_by_key(|p| p.0);
        let tenants = tenants
            .iter()
            .map(|(t, k)| {
                TenantKey::from_base64(k)
                    .map(|k| (t.clone(), k))
                    .map_err(|_| KeyringError::InvalidTenantKey(t.clone()))
            })
            .collect::<Result<HashMap<_, _>, _>>()?;
        let ring = Self::versioned(
            current,
            previous,
            master.index_version.unwrap_or(1),
            tenants,
        )?;
        match master.previous_index_version {
            Some(p) => ring.with_previous_index_version(p),
            None => Ok(ring),
        }
    }

    /// The check value of every configured key: each master key version and each
    /// tenant's own key ([`crypto::check_value_of_master`]).
    pub fn check_values(&self) -> Vec<(ConfiguredKey, [u8; 32])> {
        let mut out: Vec<(ConfiguredKey, [u8; 32])> = self
            .master
            .iter()
            .chain(self.previous.iter())
            .map(|(v, m)| {
                (
                    ConfiguredKey::Master {
                        version: *v,
                        current: self.master.as_ref().is_some_and(|c| c.0 == *v),
                    },
                    crypto::check_value_of_master(m),
                )
            })
            .collect();
        out.extend(self.tenants.iter().map(|(t, k)| {
            (
                ConfiguredKey::Tenant(t.clone()),
                crypto::check_value_of_tenant(k),
            )
        }));
        out.sort_by_key(|(k, _)| k.name());
        out
    }

    /// The current master key version (`None`: tenants' own keys only).
    pub fn master_version(&self) -> Option<u32> {
        self.master.as_ref().map(|m| m.0)
    }

    /// Every configured master key version, current and previous, oldest first.
    pub fn master_versions(&self) -> Vec<u32> {
        let mut v: Vec<u32> = self.previous.iter().map(|p| p.0).collect();
        v.extend(self.master.as_ref().map(|m| m.0));
        v.sort_unstable();
        v
    }

    /// The master key version the blind indexes are keyed by.
    pub fn index_version(&self) -> u32 {
        self.index_version
    }

    /// During a re-index, the index version entries are moving from.
    pub fn previous_index_version(&self) -> Option<u32> {
        self.previous_index_version
    }

    fn master_of(&self, version: u32) -> Option<&MasterKey> {
        match &self.master {
            Some((v, m)) if *v == version => Some(m),
            _ => self.previous.iter().find(|p| p.0 == version).map(|p| &p.1),
        }
    }

    /// The keys of `tenant`, or `None` when it has no explicit key and there is no
    /// master key.
    pub fn tenant(&self, tenant: &str) -> Option<TenantKeys> {
        if let Some(own) = self.tenants.get(tenant) {
            return Some(TenantKeys {
                blind: crypto::derive_blind_index_key(own),
                index_version: self.index_version,
                previous_blind: None,
                kek: TenantKek::single(KeyVersion::Tenant, own.clone()),
            });
        }
        let (version, master) = self.master.as_ref()?;
        let blind_of = |v: u32| {
            self.master_of(v)
                .map(|m| crypto::derive_blind_index_key(&crypto::derive_tenant_key(m, tenant)))
        };
        Some(TenantKeys {
            blind: blind_of(self.index_version)?,
            index_version: self.index_version,
            previous_blind: self
                .previous_index_version
                .and_then(|p| blind_of(p).map(|k| (p, k))),
            kek: TenantKek {
                current: (
                    KeyVersion::Master(*version),
                    crypto::derive_tenant_key(master, tenant),
                ),
                previous: self
                    .previous
                    .iter()
                    .map(|(v, m)| (*v, crypto::derive_tenant_key(m, tenant)))
                    .collect(),
            },
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::crypto::{KEY_LEN, blind_index, unwrap_data_key};
    use base64::Engine as _;
    use base64::engine::general_purpose::STANDARD;

    #[test]
    fn every_configured_key_has_a_check_value_that_tells_keys_apart() {
        let k1 = STANDARD.encode([1u8; KEY_LEN]);
        let k2 = STANDARD.encode([2u8; KEY_LEN]);
        let own = STANDARD.encode([3u8; KEY_LEN]);
        let previous = HashMap::from([("1".to_owned(), k1.clone())]);
        let tenants = HashMap::from([("kultur".to_owned(), own)]);
        let ring = |current: &str| {
            Keyring::from_config(
                &MasterKeys {
                    current: Some((2, current)),
                    previous: &previous,
                    index_version: None,
                    previous_index_version: None,
                },
                &tenants,
            )
            .expect("ring")
        };
        let values = ring(&k2).check_values();
        let names: Vec<String> = values.iter().map(|(k, _)| k.name()).collect();
        assert_eq!(names, ["master/1", "master/2", "tenant/kultur"]);
        assert_eq!(
            values[1].0,
            ConfiguredKey::Master {
                version: 2,
                current: true
            }
        );
        assert!(values[0].0.setting().contains("PREVIOUS_MASTER_KEYS__1"));
        assert!(values[1].0.setting().contains("keys.master_key"));
        // The same keys give the same values; another key for version 2 another one.
        assert_eq!(values, ring(&k2).check_values());
        let wrong = ring(&STANDARD.encode([9u8; KEY_LEN])).check_values();
        assert_eq!(wrong[0], values[0]);
        assert_ne!(wrong[1].1, values[1].1);
        // A value reveals nothing of the key: not the key, not the key's derivations.
        for (_, v) in &values {
            assert_ne!(v, &[1u8; KEY_LEN]);
            assert_ne!(v, &[2u8; KEY_LEN]);
            assert_ne!(v, &[3u8; KEY_LEN]);
        }
        assert_ne!(values[0].1, values[1].1);
    }

    #[test]
    fn explicit_keys_win_over_derived_ones() {
        let master = STANDARD.encode([1u8; KEY_LEN]);
        let explicit = STANDARD.encode([2u8; KEY_LEN]);
        let tenants = HashMap::from([("own-key".to_owned(), explicit)]);
        let ring = Keyring::from_base64(Some(&master), &tenants).expect("ring");
        let dek = DataKey::generate();
        let own = ring.tenant("own-key").expect("own");
        let wrapped = own.kek.wrap(&dek, b"x");
        assert!(
            unwrap_data_key(&TenantKey::from_bytes([2u8; KEY_LEN]), &wrapped, b"x").is_ok(),
            "the explicit key is used as is"
        );
        assert_eq!(own.kek.version_of(&wrapped), Ok(KeyVersion::Tenant));
        let derived = ring.tenant("other").expect("derived");
        let expected = crypto::derive_tenant_key(&MasterKey::from_bytes([1u8; KEY_LEN]), "other");
        let wrapped = derived.kek.wrap(&dek, b"x");
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

    fn ring(current: (u32, u8), previous: &[(u32, u8)], index: Option<u32>) -> Keyring {
        let previous: HashMap<String, String> = previous
            .iter()
            .map(|(v, b)| (v.to_string(), STANDARD.encode([*b; KEY_LEN])))
            .collect();
        let current_key = STANDARD.encode([current.1; KEY_LEN]);
        Keyring::from_config(
            &MasterKeys {
                current: Some((current.0, &current_key)),
                previous: &previous,
                index_version: index,
                previous_index_version: None,
            },
            &HashMap::new(),
        )
        .expect("ring")
    }

    #[test]
    fn rotation_rewraps_the_same_data_key_and_keeps_the_blind_index() {
        let v1 = ring((1, 1), &[], None);
        let dek = DataKey::generate();
        let sealed = crypto::seal(&dek, b"ola@example.no", b"field");
        let old = v1.tenant("dept-a").expect("keys").kek.wrap(&dek, b"owner");
        // Version 1 writes what earlier releases wrote: a bare wrapped key.
        assert!(
            unwrap_data_key(
                &crypto::derive_tenant_key(&MasterKey::from_bytes([1; KEY_LEN]), "dept-a"),
                &old,
                b"owner"
            )
            .is_ok()
        );
        let v2 = ring((2, 9), &[(1, 1)], None);
        let keys = v2.tenant("dept-a").expect("keys");
        assert_eq!(keys.kek.version_of(&old), Ok(KeyVersion::Master(1)));
        // Both versions open while the rotation runs.
        assert!(keys.kek.unwrap(&old, b"owner").is_ok());
        let new = keys
            .kek
            .rewrap(&old, b"owner")
            .expect("rewrap")
            .expect("changed");
        assert_eq!(keys.kek.version_of(&new), Ok(KeyVersion::Master(2)));
        assert_eq!(keys.kek.rewrap(&new, b"owner"), Ok(None), "already current");
        assert!(
            keys.kek.rewrap(&old, b"someone else").is_err(),
            "aad still binds"
        );
        // Retired version 1: the re-wrapped key opens, the old one does not, and the
        // data sealed before the rotation opens with the re-wrapped key.
        let only_v2 = ring((2, 9), &[(1, 1)], Some(1));
        let dek2 = only_v2
            .tenant("dept-a")
            .expect("keys")
            .kek
            .unwrap(&new, b"owner")
            .expect("open");
        assert_eq!(
            crypto::open(&dek2, &sealed, b"field").expect("open"),
            b"ola@example.no"
        );
        let retired = Keyring::versioned(
            Some((2, MasterKey::from_bytes([9; KEY_LEN]))),
            vec![],
            2,
            HashMap::new(),
        )
        .expect("ring");
        assert_eq!(
            retired
                .tenant("dept-a")
                .expect("keys")
                .kek
                .unwrap(&old, b"owner")
                .err(),
            Some(UnwrapError::UnknownVersion(1))
        );
        // The blind index is the same before and after (index version 1).
        let before = blind_index(&v1.tenant("dept-a").expect("k").blind, "email", "a@b.no");
        let after = blind_index(&keys.blind, "email", "a@b.no");
        assert_eq!(before, after);
        assert_eq!(v2.master_version(), Some(2));
    }

    #[test]
    fn version_errors_name_the_setting() {
        let previous = HashMap::from([("one".to_owned(), STANDARD.encode([1u8; KEY_LEN]))]);
        let current = STANDARD.encode([2u8; KEY_LEN]);
        let keys = MasterKeys {
            current: Some((2, &current)),
            previous: &previous,
            index_version: None,
            previous_index_version: None,
        };
        assert_eq!(
            Keyring::from_config(&keys, &HashMap::new()).err(),
            Some(KeyringError::InvalidPreviousMasterKey("one".into()))
        );
        let none = HashMap::new();
        let missing = MasterKeys {
            current: Some((2, &current)),
            previous: &none,
            index_version: None,
            previous_index_version: None,
        };
        let e = Keyring::from_config(&missing, &HashMap::new()).expect_err("index key");
        assert_eq!(e, KeyringError::MissingIndexVersion(1));
        assert!(e.to_string().contains("keys.index_key_version"));
        let same = HashMap::from([("2".to_owned(), STANDARD.encode([1u8; KEY_LEN]))]);
        let dup = MasterKeys {
            current: Some((2, &current)),
            previous: &same,
            index_version: Some(2),
            previous_index_version: None,
        };
        assert!(Keyring::from_config(&dup, &HashMap::new()).is_err());
        // Malformed versioned layout.
        let k = ring((1, 1), &[], None).tenant("t").expect("k").kek;
        assert_eq!(
            k.version_of(&[VERSIONED, 0, 0]),
            Err(CryptoError::Malformed)
        );
        assert!(k.unwrap(&[], b"x").is_err());
        // A key wrapped under version 1 by one key, opened with another value for
        // version 1: named by its version, not a generic decryption failure.
        let dek = DataKey::generate();
        let wrapped = k.wrap(&dek, b"x");
        let other = ring((1, 9), &[], None).tenant("t").expect("k").kek;
        assert_eq!(
            other.unwrap(&wrapped, b"x").err(),
            Some(UnwrapError::DoesNotOpen(KeyVersion::Master(1)))
        );
    }

    #[test]
    fn a_reindex_offers_both_index_keys_until_the_previous_version_is_dropped() {
        let v1 = ring((1, 1), &[], None);
        let old = blind_index(&v1.tenant("dept-a").expect("k").blind, "email", "a@b.no");
        let moving = ring((2, 9), &[(1, 1)], Some(2))
            .with_previous_index_version(1)
            .expect("ring");
        let keys = moving.tenant("dept-a").expect("k");
        assert_eq!(keys.index_version, 2);
        let digests: Vec<[u8; 32]> = keys
            .blind_keys()
            .map(|k| blind_index(k, "email", "a@b.no"))
            .collect();
        assert_eq!(digests.len(), 2);
        assert_ne!(digests[0], old, "new entries use the new index key");
        assert_eq!(digests[1], old, "old entries are still found");
        assert_eq!(keys.previous_blind.as_ref().map(|p| p.0), Some(1));
        // After the re-index only version 2 keys the index.
        let done = ring((2, 9), &[], Some(2));
        let keys = done.tenant("dept-a").expect("k");
        assert_eq!(keys.blind_keys().count(), 1);
        assert_eq!(blind_index(&keys.blind, "email", "a@b.no"), digests[0]);
        // The previous version must be configured and differ from the current one.
        assert_eq!(
            ring((2, 9), &[(1, 1)], Some(2))
                .with_previous_index_version(2)
                .err(),
            Some(KeyringError::InvalidPreviousIndexVersion(2))
        );
        assert_eq!(
            ring((2, 9), &[], Some(2))
                .with_previous_index_version(1)
                .err(),
            Some(KeyringError::InvalidPreviousIndexVersion(1))
        );
        // A tenant with its own key has one index key whatever the versions.
        let own = HashMap::from([("own".to_owned(), STANDARD.encode([5u8; KEY_LEN]))]);
        let master = STANDARD.encode([9u8; KEY_LEN]);
        let previous = HashMap::from([("1".to_owned(), STANDARD.encode([1u8; KEY_LEN]))]);
        let ring = Keyring::from_config(
            &MasterKeys {
                current: Some((2, &master)),
                previous: &previous,
                index_version: Some(2),
                previous_index_version: Some(1),
            },
            &own,
        )
        .expect("ring");
        assert_eq!(ring.tenant("own").expect("k").blind_keys().count(), 1);
    }
}
