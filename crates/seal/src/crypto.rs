//! Envelope encryption of personal data and the keyed blind index identifiers are
//! looked up by.
//!
//! - Each tenant has a [`TenantKey`] from configuration. It never encrypts data; it
//!   wraps the per-subject [`DataKey`]s ([`wrap_data_key`], [`unwrap_data_key`]).
//! - Each subject has its own [`DataKey`], stored only wrapped. Every identifier and
//!   record value of the subject is [`seal`]ed with it. Erasure deletes the wrapped
//!   key (crypto-shredding): without it no copy of the ciphertexts, e.g. in a backup,
//!   can be opened again.
//! - Identifiers are found through [`blind_index`]: an HMAC of the normalised value
//!   under a [`BlindIndexKey`] derived from the tenant key, so equal values match
//!   without any plaintext in a table or index.
//!
//! Ciphertext format (wrapped keys and sealed values alike):
//! `version (1 byte) ‖ nonce (12 bytes, random) ‖ AES-256-GCM ciphertext ‖ tag (16 bytes)`.
//! The version byte ([`FORMAT_V1`]) lets the format or the tenant key rotate later.
//! The associated data (AAD) binds a ciphertext to its place, e.g. the subject id and
//! field name, so it cannot be moved to another row or column and still open.
//!
//! - A tenant's key comes from configuration: an explicit per-tenant key, or one
//!   derived from the suite's [`MasterKey`] ([`derive_tenant_key`]).
//!
//! Keys are zeroed when dropped and their `Debug` output shows nothing secret.

use aes_gcm::aead::{Aead, KeyInit, Payload};
use aes_gcm::{Aes256Gcm, Nonce};
use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;
use hmac::{Hmac, Mac};
use rand::RngCore;
use sha2::Sha256;
use zeroize::{Zeroize, Zeroizing};

/// Length of every key, in bytes (256 bits).
pub const KEY_LEN: usize = 32;
/// The current ciphertext format: AES-256-GCM with a 96-bit random nonce.
pub const FORMAT_V1: u8 = 1;
/// Length of the random nonce, in bytes.
const NONCE_LEN: usize = 12;
/// Length of the GCM authentication tag, in bytes.
const TAG_LEN: usize = 16;
/// Label the blind-index key is derived with (HMAC-SHA-256 under the tenant key).
const BLIND_INDEX_LABEL: &[u8] = b"vern/subjects/blind-index/v1";
/// Prefix of the message a tenant key is derived with from the master key
/// (HMAC-SHA-256(master, label ‖ tenant id)).
const TENANT_KEK_LABEL: &[u8] = b"vern/tenant-kek/v1/";

type HmacSha256 = Hmac<Sha256>;

/// Why a key or ciphertext could not be used. The messages say nothing about the key,
/// the data or which byte was wrong.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum CryptoError {
    /// The ciphertext is too short or its plaintext has the wrong shape.
    #[error("malformed ciphertext")]
    Malformed,
    /// Authentication failed: wrong key, wrong associated data or altered bytes.
    #[error("decryption failed")]
    Decrypt,
    /// The ciphertext's version byte is not one this build reads.
    #[error("unsupported ciphertext version")]
    UnsupportedVersion,
    /// Key material is not 32 bytes of standard base64.
    #[error("invalid key: expected 32 bytes, base64-encoded")]
    InvalidKey,
}

macro_rules! secret_key {
    ($(#[$m:meta])* $name:ident) => {
        $(#[$m])*
        pub struct $name([u8; KEY_LEN]);

        impl $name {
            /// The key with these bytes.
            pub fn from_bytes(bytes: [u8; KEY_LEN]) -> Self {
                Self(bytes)
            }

            fn bytes(&self) -> &[u8; KEY_LEN] {
                &self.0
            }
        }

        impl Clone for $name {
            fn clone(&self) -> Self {
                Self(self.0)
            }
        }

        impl Drop for $name {
            fn drop(&mut self) {
                self.0.zeroize();
            }
        }

        impl std::fmt::Debug for $name {
            fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str(concat!(stringify!($name), "(..)"))
            }
        }
    };
}

secret_key!(
    /// The suite's master key for personal data, from configuration. Never used
    /// directly: each tenant's [`TenantKey`] is derived from it ([`derive_tenant_key`]).
    MasterKey
);
secret_key!(
    /// A tenant's key-encryption key, from configuration. Wraps the tenant's data keys
    /// and derives its [`BlindIndexKey`].
    TenantKey
);
secret_key!(
    /// A subject's data-encryption key. Stored only wrapped by the [`TenantKey`];
    /// destroying the wrapped copy shreds all the subject's ciphertexts.
    DataKey
);
secret_key!(
    /// The key of the blind index over identifiers ([`blind_index`]).
    BlindIndexKey
);

/// Decodes 32 bytes of standard base64 (with padding; surrounding whitespace ignored).
fn key_from_base64(encoded: &str) -> Result<[u8; KEY_LEN], CryptoError> {
    let decoded = Zeroizing::new(
        STANDARD
            .decode(encoded.trim())
            .map_err(|_| CryptoError::InvalidKey)?,
    );
    let mut bytes = [0u8; KEY_LEN];
    if decoded.len() != KEY_LEN {
        return Err(CryptoError::InvalidKey);
    }
    bytes.copy_from_slice(&decoded);
    Ok(bytes)
}

impl TenantKey {
    /// Parses 32 bytes of standard base64 (with padding; surrounding whitespace is
    /// ignored), e.g. the output of `openssl rand -base64 32`.
    pub fn from_base64(encoded: &str) -> Result<Self, CryptoError> {
        key_from_base64(encoded).map(Self)
    }
}

impl MasterKey {
    /// Parses 32 bytes of standard base64, like [`TenantKey::from_base64`].
    pub fn from_base64(encoded: &str) -> Result<Self, CryptoError> {
        key_from_base64(encoded).map(Self)
    }
}

/// Derives a tenant's key-encryption key from the master key:
/// HMAC-SHA-256(master, `vern/tenant-kek/v1/` ‖ tenant id). Deterministic, so every
/// replica derives the same key; one tenant's key reveals nothing of another's.
pub fn derive_tenant_key(master: &MasterKey, tenant_id: &str) -> TenantKey {
    let mut mac = hmac(master.bytes());
    mac.update(TENANT_KEK_LABEL);
    mac.update(tenant_id.as_bytes());
    TenantKey(mac.finalize().into_bytes().into())
}

/// A key's check value: HMAC-SHA-256(key, `vern/key-check/v1`). Stored the first time a
/// key is used, it tells a later process whether it was given the same key, without
/// revealing anything of the key (a MAC of a fixed public label).
pub fn check_value_of_master(key: &MasterKey) -> [u8; 32] {
    check_value(key.bytes())
}

/// [`check_value_of_master`] of a tenant's own key.
pub fn check_value_of_tenant(key: &TenantKey) -> [u8; 32] {
    check_value(key.bytes())
}

fn check_value(key: &[u8; KEY_LEN]) -> [u8; 32] {
    let mut mac = hmac(key);
    mac.update(b"vern/key-check/v1");
    mac.finalize().into_bytes().into()
}

/// A keyed digest of arbitrary bytes under the blind-index key (HMAC-SHA-256), e.g. to
/// fingerprint a request that carries personal data without an unkeyed hash of it.
pub fn keyed_digest(key: &BlindIndexKey, data: &[u8]) -> [u8; 32] {
    let mut mac = hmac(key.bytes());
    mac.update(b"vern/subjects/digest/v1\0");
    mac.update(data);
    mac.finalize().into_bytes().into()
}

impl DataKey {
    /// A fresh random key from the thread-local CSPRNG (ChaCha, seeded from the OS).
    pub fn generate() -> Self {
        let mut bytes = [0u8; KEY_LEN];
        rand::rng().fill_bytes(&mut bytes);
        Self(bytes)
    }
}

/// Encrypts `plaintext` under `key` with `aad` in the [`FORMAT_V1`] layout.
fn encrypt(key: &[u8; KEY_LEN], plaintext: &[u8], aad: &[u8]) -> Vec<u8> {
    let cipher = Aes256Gcm::new(key.into());
    let mut nonce = [0u8; NONCE_LEN];
    rand::rng().fill_bytes(&mut nonce);
    let mut out = Vec::with_capacity(1 + NONCE_LEN + plaintext.len() + TAG_LEN);
    out.push(FORMAT_V1);
    out.extend_from_slice(&nonce);
    // Encryption into a Vec only fails if the plaintext exceeds GCM's limit (64 GiB),
    // far beyond anything a request can carry.
    match cipher.encrypt(
        &Nonce::from(nonce),
        Payload {
            msg: plaintext,
            aad,
        },
    ) {
        Ok(ciphertext) => out.extend_from_slice(&ciphertext),
        Err(_) => unreachable!("AES-GCM plaintext within limits"),
    }
    out
}

/// Decrypts a [`FORMAT_V1`] ciphertext; the plaintext is zeroed when dropped.
fn decrypt(
    key: &[u8; KEY_LEN],
    sealed: &[u8],
    aad: &[u8],
) -> Result<Zeroizing<Vec<u8>>, CryptoError> {
    let (&version, rest) = sealed.split_first().ok_or(CryptoError::Malformed)?;
    if version != FORMAT_V1 {
        return Err(CryptoError::UnsupportedVersion);
    }
    if rest.len() < NONCE_LEN + TAG_LEN {
        return Err(CryptoError::Malformed);
    }
    let (nonce, ciphertext) = rest.split_at(NONCE_LEN);
    let nonce: [u8; NONCE_LEN] = nonce.try_into().map_err(|_| CryptoError::Malformed)?;
    let cipher = Aes256Gcm::new(key.into());
    cipher
        .decrypt(
            &Nonce::from(nonce),
            Payload {
                msg: ciphertext,
                aad,
            },
        )
        .map(Zeroizing::new)
        .map_err(|_| CryptoError::Decrypt)
}

/// Wraps (encrypts) a data key under the tenant key for storage. `aad` should name the
/// owner, e.g. the tenant and subject id, so a wrapped key only opens for its subject.
pub fn wrap_data_key(tenant: &TenantKey, key: &DataKey, aad: &[u8]) -> Vec<u8> {
    encrypt(tenant.bytes(), key.bytes(), aad)
}

/// Unwraps a data key stored by [`wrap_data_key`] with the same tenant key and `aad`.
pub fn unwrap_data_key(
    tenant: &TenantKey,
    wrapped: &[u8],
    aad: &[u8],
) -> Result<DataKey, CryptoError> {
    let plain = decrypt(tenant.bytes(), wrapped, aad)?;
    let bytes: [u8; KEY_LEN] = plain
        .as_slice()
        .try_into()
        .map_err(|_| CryptoError::Malformed)?;
    Ok(DataKey(bytes))
}

/// Encrypts a value with a subject's data key. `aad` binds it to its place (e.g.
/// subject id ‖ field name); [`open`] needs the same `aad`.
pub fn seal(key: &DataKey, plaintext: &[u8], aad: &[u8]) -> Vec<u8> {
    encrypt(key.bytes(), plaintext, aad)
}

/// Decrypts a value sealed by [`seal`] with the same key and `aad`.
pub fn open(key: &DataKey, sealed: &[u8], aad: &[u8]) -> Result<Vec<u8>, CryptoError> {
    decrypt(key.bytes(), sealed, aad).map(|plain| plain.to_vec())
}

/// The blind index of a normalised identifier: HMAC-SHA-256(key, kind ‖ 0x00 ‖ value).
///
/// `kind` (e.g. `email`, `phone`, `national_id`) separates the identifier types, so an
/// e-mail and a phone number never share an index entry; it must not contain a NUL
/// byte. `normalised` must be the normalised form from
/// the owning service (e.g. `vern_subjects::domain::identifiers`), so that equal
/// identifiers match.
pub fn blind_index(key: &BlindIndexKey, kind: &str, normalised: &str) -> [u8; 32] {
    debug_assert!(!kind.contains('\0'), "blind index kind contains NUL");
    let mut mac = hmac(key.bytes());
    mac.update(kind.as_bytes());
    mac.update(&[0]);
    mac.update(normalised.as_bytes());
    mac.finalize().into_bytes().into()
}

/// Derives the tenant's blind-index key from its tenant key (HMAC-SHA-256 under the
/// tenant key of a fixed label), so one configured secret yields both keys while
/// neither reveals the other.
pub fn derive_blind_index_key(tenant: &TenantKey) -> BlindIndexKey {
    let mut mac = hmac(tenant.bytes());
    mac.update(BLIND_INDEX_LABEL);
    BlindIndexKey(mac.finalize().into_bytes().into())
}

/// An HMAC-SHA-256 instance under a 32-byte key.
fn hmac(key: &[u8; KEY_LEN]) -> HmacSha256 {
    // HMAC accepts keys of any length; `new_from_slice` cannot fail for it.
    match <HmacSha256 as Mac>::new_from_slice(key) {
        Ok(mac) => mac,
        Err(_) => unreachable!("HMAC takes keys of any length"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tenant() -> TenantKey {
        TenantKey::from_bytes([7; KEY_LEN])
    }

    #[test]
    fn tenant_key_from_base64() {
        let encoded = STANDARD.encode([42u8; KEY_LEN]);
        let key = TenantKey::from_base64(&format!("  {encoded}\n")).expect("valid");
        assert_eq!(key.bytes(), &[42u8; KEY_LEN]);
        let short = STANDARD.encode([1u8; 31]);
        let long = STANDARD.encode([1u8; 33]);
        let unpadded = STANDARD
            .encode([1u8; KEY_LEN])
            .trim_end_matches('=')
            .to_owned();
        for bad in ["", "not base64!", short.as_str(), long.as_str(), &unpadded] {
            assert_eq!(
                TenantKey::from_base64(bad).map(|_| ()),
                Err(CryptoError::InvalidKey),
                "{bad:?}"
            );
        }
    }

    #[test]
    fn debug_shows_no_key_material() {
        let key = TenantKey::from_bytes([0xAB; KEY_LEN]);
        let shown = format!(
            "{key:?} {:?} {:?}",
            DataKey::generate(),
            derive_blind_index_key(&key)
        );
        assert_eq!(shown, "TenantKey(..) DataKey(..) BlindIndexKey(..)");
    }

    #[test]
    fn generated_keys_differ() {
        let a = DataKey::generate();
        let b = DataKey::generate();
        assert_ne!(a.bytes(), b.bytes());
        assert_ne!(a.bytes(), &[0u8; KEY_LEN]);
    }

    #[test]
    fn seal_round_trip() {
        let key = DataKey::generate();
        for plaintext in [&b""[..], b"ola@example.no", &[0u8; 4096]] {
            let sealed = seal(&key, plaintext, b"subject-1/email");
            assert_eq!(sealed[0], FORMAT_V1);
            assert_eq!(sealed.len(), 1 + NONCE_LEN + plaintext.len() + TAG_LEN);
            let opened = open(&key, &sealed, b"subject-1/email").expect("opens");
            assert_eq!(opened, plaintext);
        }
    }

    #[test]
    fn sealing_is_randomised() {
        let key = DataKey::generate();
        let a = seal(&key, b"same", b"aad");
        let b = seal(&key, b"same", b"aad");
        assert_ne!(a, b, "a fresh nonce each time");
        assert!(
            !a.windows(4).any(|w| w == b"same"),
            "no plaintext in ciphertext"
        );
    }

    #[test]
    fn wrap_round_trip() {
        let dek = DataKey::generate();
        let wrapped = wrap_data_key(&tenant(), &dek, b"acme/subject-1");
        assert_eq!(wrapped.len(), 1 + NONCE_LEN + KEY_LEN + TAG_LEN);
        assert!(!wrapped.windows(KEY_LEN).any(|w| w == dek.bytes()));
        let back = unwrap_data_key(&tenant(), &wrapped, b"acme/subject-1").expect("unwraps");
        assert_eq!(back.bytes(), dek.bytes());
        // The unwrapped key opens what the original sealed.
        let sealed = seal(&dek, b"12345678901", b"aad");
        assert_eq!(
            open(&back, &sealed, b"aad").as_deref(),
            Ok(&b"12345678901"[..])
        );
    }

    #[test]
    fn failures() {
        let dek = DataKey::generate();
        let sealed = seal(&dek, b"kari@example.no", b"subject-1/email");
        let wrapped = wrap_data_key(&tenant(), &dek, b"subject-1");
        let flip = |bytes: &[u8], i: usize| {
            let mut b = bytes.to_vec();
            b[i] ^= 0x01;
            b
        };
        let other_tenant = TenantKey::from_bytes([8; KEY_LEN]);
        let other_dek = DataKey::generate();

        let cases: Vec<(&str, Option<CryptoError>, CryptoError)> = vec![
            (
                "wrong aad",
                open(&dek, &sealed, b"subject-2/email").err(),
                CryptoError::Decrypt,
            ),
            (
                "aad moved to another field",
                open(&dek, &sealed, b"subject-1/phone").err(),
                CryptoError::Decrypt,
            ),
            (
                "no aad",
                open(&dek, &sealed, b"").err(),
                CryptoError::Decrypt,
            ),
            (
                "wrong key",
                open(&other_dek, &sealed, b"subject-1/email").err(),
                CryptoError::Decrypt,
            ),
            (
                "tampered nonce",
                open(&dek, &flip(&sealed, 1), b"subject-1/email").err(),
                CryptoError::Decrypt,
            ),
            (
                "tampered ciphertext",
                open(&dek, &flip(&sealed, 1 + NONCE_LEN), b"subject-1/email").err(),
                CryptoError::Decrypt,
            ),
            (
                "tampered tag",
                open(&dek, &flip(&sealed, sealed.len() - 1), b"subject-1/email").err(),
                CryptoError::Decrypt,
            ),
            (
                "truncated",
                open(&dek, &sealed[..sealed.len() - 1], b"subject-1/email").err(),
                CryptoError::Decrypt,
            ),
            (
                "too short",
                open(&dek, &sealed[..NONCE_LEN + TAG_LEN], b"subject-1/email").err(),
                CryptoError::Malformed,
            ),
            (
                "empty",
                open(&dek, &[], b"subject-1/email").err(),
                CryptoError::Malformed,
            ),
            (
                "version",
                open(&dek, &flip(&sealed, 0), b"subject-1/email").err(),
                CryptoError::UnsupportedVersion,
            ),
            (
                "wrapped: wrong tenant key",
                unwrap_data_key(&other_tenant, &wrapped, b"subject-1").err(),
                CryptoError::Decrypt,
            ),
            (
                "wrapped: wrong aad",
                unwrap_data_key(&tenant(), &wrapped, b"subject-2").err(),
                CryptoError::Decrypt,
            ),
            (
                "wrapped: tampered",
                unwrap_data_key(&tenant(), &flip(&wrapped, 20), b"subject-1").err(),
                CryptoError::Decrypt,
            ),
            (
                "wrapped: not a key",
                unwrap_data_key(
                    &tenant(),
                    &encrypt(tenant().bytes(), b"short", b"subject-1"),
                    b"subject-1",
                )
                .err(),
                CryptoError::Malformed,
            ),
        ];
        for (name, got, want) in cases {
            assert_eq!(got, Some(want), "{name}");
        }
    }

    #[test]
    fn error_messages_are_fixed() {
        let cases = [
            (CryptoError::Malformed, "malformed ciphertext"),
            (CryptoError::Decrypt, "decryption failed"),
            (
                CryptoError::UnsupportedVersion,
                "unsupported ciphertext version",
            ),
            (
                CryptoError::InvalidKey,
                "invalid key: expected 32 bytes, base64-encoded",
            ),
        ];
        for (e, want) in cases {
            assert_eq!(e.to_string(), want);
        }
    }

    #[test]
    fn blind_index_is_deterministic_and_separated() {
        let key = derive_blind_index_key(&tenant());
        let other = derive_blind_index_key(&TenantKey::from_bytes([9; KEY_LEN]));
        let a = blind_index(&key, "email", "ola@example.no");
        assert_eq!(a, blind_index(&key, "email", "ola@example.no"));
        assert_ne!(a, blind_index(&key, "email", "kari@example.no"));
        assert_ne!(a, blind_index(&key, "phone", "ola@example.no"), "per kind");
        assert_ne!(a, blind_index(&other, "email", "ola@example.no"), "per key");
        // The separator keeps `kind ‖ value` splits apart.
        assert_ne!(
            blind_index(&key, "email", "x"),
            blind_index(&key, "emai", "lx")
        );
        // Known-answer test against an independent HMAC computation.
        let mut mac = <HmacSha256 as Mac>::new_from_slice(key.bytes()).expect("key");
        mac.update(b"email\0ola@example.no");
        assert_eq!(a, <[u8; 32]>::from(mac.finalize().into_bytes()));
    }

    #[test]
    fn tenant_key_derivation() {
        let master = MasterKey::from_bytes([3; KEY_LEN]);
        let a = derive_tenant_key(&master, "dept-a");
        assert_eq!(a.bytes(), derive_tenant_key(&master, "dept-a").bytes());
        assert_ne!(a.bytes(), derive_tenant_key(&master, "dept-b").bytes());
        assert_ne!(a.bytes(), master.bytes());
        let other = MasterKey::from_bytes([4; KEY_LEN]);
        assert_ne!(a.bytes(), derive_tenant_key(&other, "dept-a").bytes());
        // Known answer: HMAC-SHA-256(master, "vern/tenant-kek/v1/" ‖ tenant).
        let mut mac = <HmacSha256 as Mac>::new_from_slice(&[3; KEY_LEN]).expect("key");
        mac.update(b"vern/tenant-kek/v1/dept-a");
        assert_eq!(a.bytes(), &<[u8; 32]>::from(mac.finalize().into_bytes()));
        assert!(MasterKey::from_base64(&STANDARD.encode([1u8; 31])).is_err());
        assert_eq!(format!("{master:?}"), "MasterKey(..)");
    }

    #[test]
    fn blind_index_key_derivation() {
        let a = derive_blind_index_key(&tenant());
        let b = derive_blind_index_key(&tenant());
        assert_eq!(a.bytes(), b.bytes(), "deterministic");
        assert_ne!(a.bytes(), tenant().bytes(), "not the tenant key itself");
        let other = derive_blind_index_key(&TenantKey::from_bytes([9; KEY_LEN]));
        assert_ne!(a.bytes(), other.bytes());
    }

    #[test]
    fn crypto_shredding() {
        // A subject's value is sealed and its data key is stored only wrapped.
        let dek = DataKey::generate();
        let aad = b"acme/subject-1/national_id";
        let sealed = seal(&dek, b"01019012345", aad);
        let wrapped = wrap_data_key(&tenant(), &dek, b"acme/subject-1");
        drop(dek);
        // Erasure deletes the wrapped key. What remains (e.g. a restored backup of the
        // value rows) cannot be opened by any other key: not a new data key for the
        // same subject, not the tenant key, not another subject's key.
        drop(wrapped);
        let replacement = DataKey::generate();
        assert_eq!(open(&replacement, &sealed, aad), Err(CryptoError::Decrypt));
        let tenant_as_dek = DataKey::from_bytes(*tenant().bytes());
        assert_eq!(
            open(&tenant_as_dek, &sealed, aad),
            Err(CryptoError::Decrypt)
        );
        for _ in 0..64 {
            assert_eq!(
                open(&DataKey::generate(), &sealed, aad),
                Err(CryptoError::Decrypt)
            );
        }
    }
}
