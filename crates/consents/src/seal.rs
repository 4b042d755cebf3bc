//! Encryption at rest of consent evidence and compelling-grounds reasons, with the
//! subjects service's envelope scheme (`vern-seal`): each subject has its own data key in
//! this service (`consent_keys`), stored only wrapped by the tenant's key
//! (`keys.master_key` / `keys.tenant_keys`), and every sealed value is bound to its
//! tenant, subject and event (or decision). Erasure deletes the key (crypto-shredding)
//! and blanks the ciphertexts.

use std::sync::Arc;

use vern_seal::crypto::{self, DataKey};
use vern_seal::keyring::Keyring;

use crate::error::ConsentError;

/// Seals and opens consent evidence and compelling-grounds reasons.
#[derive(Clone)]
pub struct Sealer {
    keyring: Arc<Keyring>,
}

impl std::fmt::Debug for Sealer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Sealer(..)")
    }
}

pub(crate) fn key_aad(tenant: &str, subject: &str) -> Vec<u8> {
    format!("vern/consents/key/v1\0{tenant}\0{subject}").into_bytes()
}

fn evidence_aad(tenant: &str, subject: &str, event: &str) -> Vec<u8> {
    format!("vern/consents/evidence/v1\0{tenant}\0{subject}\0{event}").into_bytes()
}

/// The AAD of a compelling-grounds decision's reason: bound to its tenant, subject and
/// decision.
fn grounds_aad(tenant: &str, subject: &str, decision: &str) -> Vec<u8> {
    format!("vern/consents/grounds/v1\0{tenant}\0{subject}\0{decision}").into_bytes()
}

impl Sealer {
    /// A sealer over the tenants' keys.
    pub fn new(keyring: Keyring) -> Self {
        Self {
            keyring: Arc::new(keyring),
        }
    }

    /// The tenants' keys (master key rotation re-wraps with them).
    pub fn keyring(&self) -> &Keyring {
        &self.keyring
    }

    fn kek(&self, tenant: &str) -> Result<vern_seal::keyring::TenantKek, ConsentError> {
        self.keyring
            .tenant(tenant)
            .map(|k| k.kek)
            .ok_or(ConsentError::NoTenantKey)
    }

    /// A fresh data key for a subject, and its wrapped form for storage.
    pub fn new_key(&self, tenant: &str, subject: &str) -> Result<(DataKey, Vec<u8>), ConsentError> {
        let dek = DataKey::generate();
        let wrapped = self.kek(tenant)?.wrap(&dek, &key_aad(tenant, subject));
        Ok((dek, wrapped))
    }

    /// A subject's data key from its wrapped form.
    pub fn key(
        &self,
        tenant: &str,
        subject: &str,
        wrapped: &[u8],
    ) -> Result<DataKey, ConsentError> {
        self.kek(tenant)?
            .unwrap(wrapped, &key_aad(tenant, subject))
            .map_err(|e| match e {
                vern_seal::keyring::UnwrapError::UnknownVersion(v) => {
                    ConsentError::MasterKeyVersionMissing(v)
                }
                vern_seal::keyring::UnwrapError::DoesNotOpen(v) => ConsentError::KeyDoesNotOpen(v),
                vern_seal::keyring::UnwrapError::Crypto(_) => ConsentError::Corrupt("wrapped key"),
            })
    }

    /// A keyed fingerprint of a request that carries personal data (its idempotency
    /// hash), so no unkeyed hash of the evidence is stored.
    /// Under the current index key first, then (during a re-index) the previous one.
    pub fn fingerprints(
        &self,
        tenant: &str,
        request: &[u8],
    ) -> Result<Vec<[u8; 32]>, ConsentError> {
        let keys = self
            .keyring
            .tenant(tenant)
            .ok_or(ConsentError::NoTenantKey)?;
        Ok(keys.fingerprints(request))
    }

    /// The evidence of an event, sealed.
    pub fn seal_evidence(
        &self,
        key: &DataKey,
        tenant: &str,
        subject: &str,
        event: &str,
        evidence: &str,
    ) -> Vec<u8> {
        crypto::seal(
            key,
            evidence.as_bytes(),
            &evidence_aad(tenant, subject, event),
        )
    }

    /// Sealed evidence opened.
    pub fn open_evidence(
        &self,
        key: &DataKey,
        tenant: &str,
        subject: &str,
        event: &str,
        sealed: &[u8],
    ) -> Result<String, ConsentError> {
        let plain = crypto::open(key, sealed, &evidence_aad(tenant, subject, event))
            .map_err(|_| ConsentError::Corrupt("sealed evidence"))?;
        String::from_utf8(plain).map_err(|_| ConsentError::Corrupt("sealed evidence"))
    }

    /// The reason of a compelling-grounds decision, sealed: a statement about one
    /// subject's case, shredded with the subject's key.
    pub fn seal_reason(
        &self,
        key: &DataKey,
        tenant: &str,
        subject: &str,
        decision: &str,
        reason: &str,
    ) -> Vec<u8> {
        crypto::seal(
            key,
            reason.as_bytes(),
            &grounds_aad(tenant, subject, decision),
        )
    }

    /// A sealed reason opened.
    pub fn open_reason(
        &self,
        key: &DataKey,
        tenant: &str,
        subject: &str,
        decision: &str,
        sealed: &[u8],
    ) -> Result<String, ConsentError> {
        let plain = crypto::open(key, sealed, &grounds_aad(tenant, subject, decision))
            .map_err(|_| ConsentError::Corrupt("sealed reason"))?;
        String::from_utf8(plain).map_err(|_| ConsentError::Corrupt("sealed reason"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashMap;

    #[test]
    fn evidence_opens_only_in_its_place() {
        let ring = Keyring::from_base64(
            Some("AAECAwQFBgcICQoLDA0ODxAREhMUFRYXGBkaGxwdHh8="),
            &HashMap::new(),
        )
        .expect("ring");
        let s = Sealer::new(ring);
        let (dek, wrapped) = s.new_key("t", "s1").expect("key");
        let sealed = s.seal_evidence(&dek, "t", "s1", "e1", "signed form kari@example.no");
        assert!(!sealed.windows(4).any(|w| w == b"kari"), "no plaintext");
        let dek = s.key("t", "s1", &wrapped).expect("unwrap");
        assert_eq!(
            s.open_evidence(&dek, "t", "s1", "e1", &sealed)
                .expect("open"),
            "signed form kari@example.no"
        );
        assert!(
            s.open_evidence(&dek, "t", "s1", "e2", &sealed).is_err(),
            "other event"
        );
        assert!(
            s.open_evidence(&dek, "t", "s2", "e1", &sealed).is_err(),
            "other subject"
        );
        assert!(
            s.open_evidence(&dek, "u", "s1", "e1", &sealed).is_err(),
            "other tenant"
        );
        assert!(
            s.key("t", "s2", &wrapped).is_err(),
            "key of another subject"
        );
    }

    #[test]
    fn reasons_open_only_in_their_place() {
        let ring = Keyring::from_base64(
            Some("AAECAwQFBgcICQoLDA0ODxAREhMUFRYXGBkaGxwdHh8="),
            &HashMap::new(),
        )
        .expect("ring");
        let s = Sealer::new(ring);
        let (dek, _) = s.new_key("t", "s1").expect("key");
        let reason = "Kari's unpaid claim in case 2024-17";
        let sealed = s.seal_reason(&dek, "t", "s1", "d1", reason);
        assert!(!sealed.windows(4).any(|w| w == b"Kari"), "no plaintext");
        assert_eq!(
            s.open_reason(&dek, "t", "s1", "d1", &sealed).expect("open"),
            reason
        );
        assert!(
            s.open_reason(&dek, "t", "s1", "d2", &sealed).is_err(),
            "other decision"
        );
        assert!(
            s.open_reason(&dek, "t", "s2", "d1", &sealed).is_err(),
            "other subject"
        );
        assert!(
            s.open_reason(&dek, "u", "s1", "d1", &sealed).is_err(),
            "other tenant"
        );
        // Not interchangeable with evidence under the same ids.
        let evidence = s.seal_evidence(&dek, "t", "s1", "d1", reason);
        assert!(
            s.open_reason(&dek, "t", "s1", "d1", &evidence).is_err(),
            "evidence is no reason"
        );
        assert!(
            s.open_evidence(&dek, "t", "s1", "d1", &sealed).is_err(),
            "a reason is no evidence"
        );
    }
}
