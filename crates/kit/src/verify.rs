//! Token verification: HS256 with a configured (or dev) secret, and RS256, ES256 and
//! EdDSA with public keys from a JWKS file or URL selected by `kid`, re-read on a
//! schedule so keys rotate without a restart.
//!
//! Verified tokens are cached (bounded, keyed by the token's SHA-256) because RS256 and
//! ES256 verification costs hundreds of microseconds with the pure-Rust backend; an
//! entry honours the token's `exp`/`nbf` and dies with the key set it was verified
//! against, so a removed key is refused at once after the refresh.
//!
//! Refresh rules: a refresh that finds the same keys keeps the cache; a JWKS that
//! parses but holds no usable key never replaces a working set (it is logged); a token
//! naming an unknown `kid` triggers one fetch at once (a key published since the last
//! refresh), at most once per [`UNKNOWN_KID_FETCH_INTERVAL`], so a flood of made-up
//! key ids cannot turn into a flood of fetches.

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::{Arc, Mutex, RwLock};
use std::time::{Duration, Instant};

use jsonwebtoken::jwk::{
    AlgorithmParameters, EllipticCurve, Jwk, JwkSet, KeyAlgorithm, PublicKeyUse,
};
use jsonwebtoken::{Algorithm, DecodingKey, Validation};
use sha2::{Digest, Sha256};

use crate::auth::{Claims, Principal};
use crate::config::AuthConfig;

/// Shortest time between two fetches of the JWKS caused by unknown key ids.
pub const UNKNOWN_KID_FETCH_INTERVAL: Duration = Duration::from_secs(10);

/// Longest a JWKS fetch over HTTP may take.
const FETCH_TIMEOUT: Duration = Duration::from_secs(5);

/// Longest token accepted (bytes); longer is malformed without parsing.
const MAX_TOKEN_LEN: usize = 8 * 1024;

/// Why a token was refused. The message names the reason, never the token.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TokenError {
    /// No `authorization: Bearer …` metadata.
    #[error("missing bearer token")]
    Missing,
    /// Not a well-formed JWT.
    #[error("malformed token")]
    Malformed,
    /// Signature does not verify.
    #[error("bad token signature")]
    BadSignature,
    /// `alg` not accepted, or not the algorithm of the key named by `kid`.
    #[error("token algorithm not accepted")]
    WrongAlgorithm,
    /// `kid` names no current key (or is missing).
    #[error("unknown signing key")]
    UnknownKey,
    /// `exp` is past.
    #[error("token expired")]
    Expired,
    /// `nbf` is in the future.
    #[error("token not yet valid")]
    NotYetValid,
    /// Wrong `iss`.
    #[error("token issuer not accepted")]
    WrongIssuer,
    /// Wrong `aud`.
    #[error("token audience not accepted")]
    WrongAudience,
    /// A required claim is absent or empty.
    #[error("token lacks a required claim")]
    MissingClaim,
    /// A claim the suite relies on is malformed (an over-long or multi-line `sub`, a
    /// tenant id that is not a slug); names the claim, never its value.
    #[error("token claim {0} is not valid")]
    InvalidClaim(&'static str),
    /// `exp` lies further ahead than the longest lifetime accepted.
    #[error("token lifetime exceeds the maximum accepted")]
    LifetimeTooLong,
    /// No verification key is configured.
    #[error("no token verification key configured")]
    NoKey,
}

/// Where the public keys come from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum KeySource {
    /// A JWKS file.
    File(PathBuf),
    /// A JWKS document over HTTP(S).
    Url(String),
}

impl KeySource {
    /// The source configured in `auth`, if any.
    pub fn from_config(auth: &AuthConfig) -> Option<Self> {
        match (&auth.jwks_file, &auth.jwks_url) {
            (Some(f), _) => Some(KeySource::File(f.clone())),
            (None, Some(u)) => Some(KeySource::Url(u.clone())),
            (None, None) => None,
        }
    }

    /// Reads and parses the JWKS (blocking).
    pub fn load(&self) -> Result<KeySet, String> {
        let text = match self {
            KeySource::File(path) => std::fs::read_to_string(path)
                .map_err(|e| format!("reading {}: {e}", path.display()))?,
            KeySource::Url(url) => ureq::get(url)
                .config()
                .timeout_global(Some(FETCH_TIMEOUT))
                .build()
                .call()
                .map_err(|e| format!("fetching the JWKS: {e}"))?
                .body_mut()
                .with_config()
                .limit(1024 * 1024)
                .read_to_string()
                .map_err(|e| format!("reading the JWKS: {e}"))?,
        };
        KeySet::parse(&text)
    }
}

/// The signing keys currently trusted, by `kid`.
#[derive(Clone, Default)]
pub struct KeySet {
    keys: HashMap<String, (Algorithm, DecodingKey)>,
    /// Each usable key's id and JWK, sorted: two sets with equal fingerprints verify
    /// exactly the same tokens.
    fingerprint: Vec<(String, String)>,
}

impl std::fmt::Debug for KeySet {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("KeySet")
            .field("kids", &self.keys.keys().collect::<Vec<_>>())
            .finish()
    }
}

impl KeySet {
    /// Parses a JWKS document. Keys without `kid`, meant for encryption, or of an
    /// algorithm other than RS256, ES256 and EdDSA are skipped.
    pub fn parse(json: &str) -> Result<Self, String> {
        let set: JwkSet =
            serde_json::from_str(json).map_err(|e| format!("not a JWKS document: {e}"))?;
        let mut keys = HashMap::new();
        let mut fingerprint = vec![];
        for jwk in &set.keys {
            let Some(kid) = jwk.common.key_id.clone() else {
                continue;
            };
            if matches!(jwk.common.public_key_use, Some(PublicKeyUse::Encryption)) {
                continue;
            }
            let Some(alg) = algorithm_of(jwk) else {
                continue;
            };
            let Ok(key) = DecodingKey::from_jwk(jwk) else {
                continue;
            };
            fingerprint.push((kid.clone(), serde_json::to_string(jwk).unwrap_or_default()));
            keys.insert(kid, (alg, key));
        }
        fingerprint.sort();
        Ok(Self { keys, fingerprint })
    }

    /// Whether both sets hold the same keys under the same ids.
    pub fn same_keys(&self, other: &KeySet) -> bool {
        self.fingerprint == other.fingerprint
    }

    /// Whether the set holds no usable key.
    pub fn is_empty(&self) -> bool {
        self.keys.is_empty()
    }

    /// The key ids.
    pub fn kids(&self) -> Vec<String> {
        let mut k: Vec<String> = self.keys.keys().cloned().collect();
        k.sort();
        k
    }
}

/// The one algorithm a JWK may verify: from its `alg`, else from its key type.
fn algorithm_of(jwk: &Jwk) -> Option<Algorithm> {
    let by_type = match &jwk.algorithm {
        AlgorithmParameters::RSA(_) => Algorithm::RS256,
        AlgorithmParameters::EllipticCurve(p) if p.curve == EllipticCurve::P256 => Algorithm::ES256,
        AlgorithmParameters::OctetKeyPair(p) if p.curve == EllipticCurve::Ed25519 => {
            Algorithm::EdDSA
        }
        _ => return None,
    };
    match jwk.common.key_algorithm {
        None => Some(by_type),
        Some(KeyAlgorithm::RS256) if by_type == Algorithm::RS256 => Some(by_type),
        Some(KeyAlgorithm::ES256) if by_type == Algorithm::ES256 => Some(by_type),
        Some(KeyAlgorithm::EdDSA) if by_type == Algorithm::EdDSA => Some(by_type),
        Some(_) => None,
    }
}

struct Cached {
    principal: Principal,
    exp: i64,
    nbf: i64,
    generation: u64,
}

struct Inner {
    hs256: Option<DecodingKey>,
    keys: RwLock<(u64, Arc<KeySet>)>,
    source: Option<KeySource>,
    issuer: String,
    audience: String,
    leeway: u64,
    max_lifetime: i64,
    cache: Mutex<HashMap<[u8; 32], Cached>>,
    cache_size: usize,
    /// When an unknown `kid` last caused a fetch.
    unknown_kid_fetch: Mutex<Option<Instant>>,
}

/// Verifies tokens; cheap to clone (shared state).
#[derive(Clone)]
pub struct TokenVerifier {
    inner: Arc<Inner>,
}

impl std::fmt::Debug for TokenVerifier {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TokenVerifier").finish_non_exhaustive()
    }
}

impl TokenVerifier {
    /// A verifier with an optional HS256 secret and an optional JWKS source, loading the
    /// key set now (an unreadable source at start-up is an error).
    pub fn new(
        hs256: Option<&[u8]>,
        source: Option<KeySource>,
        auth: &AuthConfig,
    ) -> Result<Self, String> {
        let keys = match &source {
            Some(s) => s.load()?,
            None => KeySet::default(),
        };
        Ok(Self::with_keys(hs256, source, keys, auth))
    }

    fn with_keys(
        hs256: Option<&[u8]>,
        source: Option<KeySource>,
        keys: KeySet,
        auth: &AuthConfig,
    ) -> Self {
        Self {
            inner: Arc::new(Inner {
                hs256: hs256.map(DecodingKey::from_secret),
                keys: RwLock::new((0, Arc::new(keys))),
                source,
                issuer: auth.issuer.clone(),
                audience: auth.audience.clone(),
                leeway: auth.leeway_seconds.min(30),
                max_lifetime: i64::try_from(auth.max_token_lifetime_seconds).unwrap_or(i64::MAX),
                cache: Mutex::new(HashMap::new()),
                cache_size: auth.token_cache_size,
                unknown_kid_fetch: Mutex::new(None),
            }),
        }
    }

    /// A verifier for HS256 tokens signed with `secret` only.
    pub fn hs256(secret: &[u8], auth: &AuthConfig) -> Self {
        Self::with_keys(Some(secret), None, KeySet::default(), auth)
    }

    /// A verifier that refuses every token.
    pub fn none() -> Self {
        Self::with_keys(None, None, KeySet::default(), &AuthConfig::default())
    }

    /// Replaces the key set (e.g. after a refresh). Cached verifications against the
    /// old set stop counting, unless the new set holds the very same keys.
    pub fn set_keys(&self, keys: KeySet) {
        if let Ok(mut guard) = self.inner.keys.write() {
            if guard.1.same_keys(&keys) {
                return;
            }
            let generation = guard.0 + 1;
            *guard = (generation, Arc::new(keys));
        }
    }

    /// Which key set cached verifications belong to (changes only when the keys do).
    pub fn key_generation(&self) -> u64 {
        self.current_keys().0
    }

    /// Re-reads the key source now (blocking). Keeps the current keys when the source
    /// cannot be read, or parses but holds no usable key while the current set has
    /// some.
    pub fn refresh(&self) -> Result<(), String> {
        let Some(source) = &self.inner.source else {
            return Ok(());
        };
        let keys = source.load()?;
        let (_, current) = self.current_keys();
        if keys.is_empty() && !current.is_empty() {
            return Err(format!(
                "the JWKS holds no usable signing key; keeping the current {} keys",
                current.keys.len()
            ));
        }
        self.set_keys(keys);
        Ok(())
    }

    /// The key `kid` after one fetch of the source, if no unknown `kid` caused a fetch
    /// in the last [`UNKNOWN_KID_FETCH_INTERVAL`]. In a multi-threaded runtime the
    /// fetch blocks this call only (`block_in_place`); elsewhere in a runtime it runs
    /// in the background and this call is refused.
    fn fetch_unknown(&self, kid: &str) -> Option<(Algorithm, DecodingKey)> {
        self.inner.source.as_ref()?;
        {
            let mut last = self.inner.unknown_kid_fetch.lock().ok()?;
            if last.is_some_and(|t| t.elapsed() < UNKNOWN_KID_FETCH_INTERVAL) {
                return None;
            }
            *last = Some(Instant::now());
        }
        let report = |r: Result<(), String>| match r {
            Ok(()) => tracing::info!("JWKS fetched for a token with an unknown key id"),
            Err(e) => tracing::warn!(error = %e, "JWKS fetch for an unknown key id failed"),
        };
        match tokio::runtime::Handle::try_current() {
            Ok(h) if h.runtime_flavor() == tokio::runtime::RuntimeFlavor::MultiThread => {
                report(tokio::task::block_in_place(|| self.refresh()));
            }
            Ok(h) => {
                let this = self.clone();
                h.spawn_blocking(move || report(this.refresh()));
                return None;
            }
            Err(_) => report(self.refresh()),
        }
        self.current_keys().1.keys.get(kid).cloned()
    }

    /// Re-reads the key source every `every` until the process ends.
    pub fn spawn_refresh(&self, every: Duration) -> Option<tokio::task::JoinHandle<()>> {
        self.inner.source.as_ref()?;
        let this = self.clone();
        Some(tokio::spawn(async move {
            loop {
                tokio::time::sleep(every).await;
                let v = this.clone();
                match tokio::task::spawn_blocking(move || v.refresh()).await {
                    Ok(Ok(())) => tracing::debug!("signing keys refreshed"),
                    Ok(Err(e)) => {
                        tracing::warn!(error = %e, "signing key refresh failed; keeping the current keys")
                    }
                    Err(_) => tracing::warn!("signing key refresh task failed"),
                }
            }
        }))
    }

    fn current_keys(&self) -> (u64, Arc<KeySet>) {
        match self.inner.keys.read() {
            Ok(g) => (g.0, g.1.clone()),
            Err(_) => (u64::MAX, Arc::new(KeySet::default())),
        }
    }

    /// Verifies `token` and returns its caller.
    pub fn verify(&self, token: &str) -> Result<Principal, TokenError> {
        if token.is_empty() || token.len() > MAX_TOKEN_LEN {
            return Err(TokenError::Malformed);
        }
        let now = chrono::Utc::now().timestamp();
        let leeway = self.inner.leeway as i64;
        let (mut generation, keys) = self.current_keys();
        let digest: [u8; 32] = Sha256::digest(token.as_bytes()).into();
        if let Ok(cache) = self.inner.cache.lock()
            && let Some(c) = cache.get(&digest)
            && c.generation == generation
            && now <= c.exp + leeway
            && now + leeway >= c.nbf
        {
            return Ok(c.principal.clone());
        }

        let header = jsonwebtoken::decode_header(token).map_err(|_| TokenError::Malformed)?;
        // HS256 is cached too: its verification (base64, HMAC, JSON) costs ~6 µs a
        // call here against ~0.5 µs for a hit, and its secret never changes while the
        // verifier lives. A hit needs the very same token bytes (SHA-256).
        let (alg, key, cacheable) = match header.alg {
            Algorithm::HS256 => (
                Algorithm::HS256,
                self.inner.hs256.clone().ok_or(TokenError::WrongAlgorithm)?,
                true,
            ),
            Algorithm::RS256 | Algorithm::ES256 | Algorithm::EdDSA => {
                let kid = header.kid.as_deref().ok_or(TokenError::UnknownKey)?;
                let (key_alg, key) = match keys.keys.get(kid) {
                    Some(k) => k.clone(),
                    None => {
                        let found = self.fetch_unknown(kid).ok_or(TokenError::UnknownKey)?;
                        generation = self.current_keys().0;
                        found
                    }
                };
                if key_alg != header.alg {
                    return Err(TokenError::WrongAlgorithm);
                }
                (header.alg, key, true)
            }
            _ => return Err(TokenError::WrongAlgorithm),
        };
        if self.inner.hs256.is_none() && keys.keys.is_empty() && generation == 0 {
            return Err(TokenError::NoKey);
        }
        let mut validation = Validation::new(alg);
        validation.leeway = self.inner.leeway;
        validation.validate_nbf = true;
        validation.set_issuer(&[self.inner.issuer.as_str()]);
        validation.set_audience(&[self.inner.audience.as_str()]);
        validation.set_required_spec_claims(&["exp", "iss", "aud", "sub"]);
        use jsonwebtoken::errors::ErrorKind as K;
        let data = jsonwebtoken::decode::<Claims>(token, &key, &validation).map_err(|e| match e
            .kind()
        {
            K::InvalidSignature => TokenError::BadSignature,
            K::ExpiredSignature => TokenError::Expired,
            K::ImmatureSignature => TokenError::NotYetValid,
            K::InvalidIssuer => TokenError::WrongIssuer,
            K::InvalidAudience => TokenError::WrongAudience,
            K::InvalidAlgorithm | K::InvalidAlgorithmName | K::UnsupportedAlgorithm => {
                TokenError::WrongAlgorithm
            }
            K::MissingRequiredClaim(_) => TokenError::MissingClaim,
            _ => TokenError::Malformed,
        })?;
        let claims = data.claims;
        if claims.sub.trim().is_empty() {
            return Err(TokenError::MissingClaim);
        }
        crate::auth::check_claims(&claims).map_err(TokenError::InvalidClaim)?;
        // A token valid for years is a standing credential: refuse it whatever signed it.
        if self.inner.max_lifetime > 0
            && claims.exp.saturating_sub(now) > self.inner.max_lifetime + leeway
        {
            return Err(TokenError::LifetimeTooLong);
        }
        let mut roles: Vec<crate::auth::Role> =
            claims.roles.iter().filter_map(|r| r.parse().ok()).collect();
        roles.dedup();
        // A tenant named twice is one tenant.
        let mut tenants = claims.tenant;
        let mut seen = std::collections::HashSet::new();
        tenants.retain(|t| seen.insert(t.clone()));
        let principal = Principal {
            sub: claims.sub,
            roles,
            tenants,
        };
        if cacheable && self.inner.cache_size > 0 {
            self.remember(digest, &principal, claims.exp, claims.nbf, generation, now);
        }
        Ok(principal)
    }

    fn remember(
        &self,
        digest: [u8; 32],
        principal: &Principal,
        exp: i64,
        nbf: i64,
        generation: u64,
        now: i64,
    ) {
        let Ok(mut cache) = self.inner.cache.lock() else {
            return;
        };
        if cache.len() >= self.inner.cache_size {
            let leeway = self.inner.leeway as i64;
            cache.retain(|_, c| c.generation == generation && now <= c.exp + leeway);
            if cache.len() >= self.inner.cache_size {
                cache.clear();
            }
        }
        cache.insert(
            digest,
            Cached {
                principal: principal.clone(),
                exp,
                nbf,
                generation,
            },
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::auth::{Role, generate_ed25519, sign_hs256, sign_with_pem};
    use base64::Engine;
    use jsonwebtoken::{EncodingKey, Header};
    use std::io::{Read, Write};
    use std::net::{SocketAddr, TcpListener, TcpStream};
    use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
    use std::sync::mpsc;

    const RSA_PEM: &str = include_str!("../tests/fixtures/rsa.pem");
    const RSA_PUB_PEM: &str = include_str!("../tests/fixtures/rsa.pub.pem");
    const EC_PEM: &str = include_str!("../tests/fixtures/ec.pem");

    fn claims(exp_offset: i64) -> Claims {
        let now = chrono::Utc::now().timestamp();
        Claims {
            sub: "svc-crm".into(),
            tenant: vec!["kultur".into()],
            roles: vec!["integration".into(), "no-such-role".into()],
            iss: "vern-dev".into(),
            aud: "vern".into(),
            exp: now + exp_offset,
            nbf: now - 1,
            iat: now,
        }
    }

    fn jwk_of(pem: &str, alg: Algorithm, kid: &str) -> Jwk {
        let key = match alg {
            Algorithm::RS256 => EncodingKey::from_rsa_pem(pem.as_bytes()),
            Algorithm::ES256 => EncodingKey::from_ec_pem(pem.as_bytes()),
            _ => EncodingKey::from_ed_pem(pem.as_bytes()),
        }
        .expect("pem");
        let mut jwk = Jwk::from_encoding_key(&key, alg).expect("jwk");
        jwk.common.key_id = Some(kid.into());
        jwk
    }

    fn jwks(keys: Vec<Jwk>) -> String {
        serde_json::to_string(&JwkSet { keys }).expect("json")
    }

    fn b64(b: &[u8]) -> String {
        base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(b)
    }

    struct Fixture {
        verifier: TokenVerifier,
        ed_pem: String,
    }

    /// A verifier trusting an RSA, an EC and an Ed25519 key, plus HS256 with "secret".
    fn fixture() -> Fixture {
        let (ed_pem, ed_jwk) = generate_ed25519("ed-1").expect("ed");
        let set = jwks(vec![
            jwk_of(RSA_PEM, Algorithm::RS256, "rsa-1"),
            jwk_of(EC_PEM, Algorithm::ES256, "ec-1"),
            ed_jwk,
        ]);
        let keys = KeySet::parse(&set).expect("parse");
        assert_eq!(keys.kids(), ["ec-1", "ed-1", "rsa-1"]);
        Fixture {
            verifier: TokenVerifier::with_keys(Some(b"secret"), None, keys, &AuthConfig::default()),
            ed_pem,
        }
    }

    #[test]
    fn every_supported_algorithm_verifies() {
        let f = fixture();
        for (pem, kid) in [
            (RSA_PEM, "rsa-1"),
            (EC_PEM, "ec-1"),
            (f.ed_pem.as_str(), "ed-1"),
        ] {
            let t = sign_with_pem(&claims(60), pem.as_bytes(), kid).expect("sign");
            let p = f.verifier.verify(&t).expect(kid);
            assert_eq!(p.roles, vec![Role::Integration]);
            // Cached path gives the same answer.
            assert_eq!(f.verifier.verify(&t).expect("cached"), p);
        }
        let t = sign_hs256(&claims(60), b"secret").expect("sign");
        assert!(f.verifier.verify(&t).is_ok());
    }

    #[test]
    fn attacks_are_refused_with_the_right_reason() {
        let f = fixture();
        let v = &f.verifier;
        let good = sign_with_pem(&claims(60), f.ed_pem.as_bytes(), "ed-1").expect("sign");
        let parts: Vec<&str> = good.split('.').collect();
        let payload = b64(&serde_json::to_vec(&claims(60)).expect("json"));

        // alg none, with and without a signature part.
        let none = format!("{}.{payload}.", b64(br#"{"alg":"none","typ":"JWT"}"#));
        assert!(v.verify(&none).is_err());
        assert!(v.verify(&none[..none.len() - 1]).is_err());
        // Stripped signature.
        assert!(v.verify(&format!("{}.{}.", parts[0], parts[1])).is_err());
        // Tampered claims: tenant swapped, roles escalated; signature kept.
        let mut c = claims(60);
        c.tenant = vec!["other".into()];
        c.roles = vec!["platform-admin".into()];
        let forged = format!(
            "{}.{}.{}",
            parts[0],
            b64(&serde_json::to_vec(&c).expect("json")),
            parts[2]
        );
        assert_eq!(v.verify(&forged), Err(TokenError::BadSignature));
        // Foreign HS256 key.
        let foreign = sign_hs256(&claims(60), b"not-our-secret").expect("sign");
        assert_eq!(v.verify(&foreign), Err(TokenError::BadSignature));
        // RS/HS confusion: HS256 "signed" with the RSA public key as the secret.
        let confused = sign_hs256(&claims(60), RSA_PUB_PEM.as_bytes()).expect("sign");
        assert_eq!(v.verify(&confused), Err(TokenError::BadSignature));
        let hs_only_rsa = TokenVerifier::with_keys(
            None,
            None,
            KeySet::parse(&jwks(vec![jwk_of(RSA_PEM, Algorithm::RS256, "rsa-1")])).expect("keys"),
            &AuthConfig::default(),
        );
        assert_eq!(
            hs_only_rsa.verify(&confused),
            Err(TokenError::WrongAlgorithm),
            "HS256 not configured"
        );
        // A kid naming an RSA key with an EdDSA signature: alg must match the key.
        let mut header = Header::new(Algorithm::EdDSA);
        header.kid = Some("rsa-1".into());
        let key = EncodingKey::from_ed_pem(f.ed_pem.as_bytes()).expect("ed");
        let mismatched = jsonwebtoken::encode(&header, &claims(60), &key).expect("sign");
        assert_eq!(v.verify(&mismatched), Err(TokenError::WrongAlgorithm));
        // Wrong audience and issuer.
        let mut c = claims(60);
        c.aud = "someone-else".into();
        assert_eq!(
            v.verify(&sign_with_pem(&c, RSA_PEM.as_bytes(), "rsa-1").expect("sign")),
            Err(TokenError::WrongAudience)
        );
        let mut c = claims(60);
        c.iss = "evil".into();
        assert_eq!(
            v.verify(&sign_with_pem(&c, EC_PEM.as_bytes(), "ec-1").expect("sign")),
            Err(TokenError::WrongIssuer)
        );
        // Expired (beyond the 30 s leeway) and not yet valid.
        assert_eq!(
            v.verify(&sign_with_pem(&claims(-120), f.ed_pem.as_bytes(), "ed-1").expect("sign")),
            Err(TokenError::Expired)
        );
        let mut c = claims(600);
        c.nbf = chrono::Utc::now().timestamp() + 300;
        assert_eq!(
            v.verify(&sign_with_pem(&c, f.ed_pem.as_bytes(), "ed-1").expect("sign")),
            Err(TokenError::NotYetValid)
        );
        // Unknown and missing kid.
        assert_eq!(
            v.verify(&sign_with_pem(&claims(60), f.ed_pem.as_bytes(), "ed-9").expect("sign")),
            Err(TokenError::UnknownKey)
        );
        let no_kid =
            jsonwebtoken::encode(&Header::new(Algorithm::EdDSA), &claims(60), &key).expect("sign");
        assert_eq!(v.verify(&no_kid), Err(TokenError::UnknownKey));
        // Garbage.
        for g in ["", "garbage", "a.b.c", "....", &"x".repeat(10_000)] {
            assert!(v.verify(g).is_err(), "{g:.20}");
        }
        // Messages never echo the token.
        let e = v.verify(&forged).expect_err("forged").to_string();
        assert!(!e.contains(parts[2]));
    }

    #[test]
    fn keys_rotate_on_refresh_and_cached_tokens_follow() {
        let dir = tempfile::tempdir().expect("dir");
        let path = dir.path().join("jwks.json");
        let (old_pem, old_jwk) = generate_ed25519("old").expect("old");
        let (new_pem, new_jwk) = generate_ed25519("new").expect("new");
        std::fs::write(&path, jwks(vec![old_jwk.clone()])).expect("write");
        let v = TokenVerifier::new(
            None,
            Some(KeySource::File(path.clone())),
            &AuthConfig::default(),
        )
        .expect("load");
        let old_token = sign_with_pem(&claims(60), old_pem.as_bytes(), "old").expect("sign");
        let new_token = sign_with_pem(&claims(60), new_pem.as_bytes(), "new").expect("sign");
        assert!(v.verify(&old_token).is_ok());
        assert_eq!(v.verify(&new_token), Err(TokenError::UnknownKey));

        // Rotation step 1: publish the new key next to the old.
        std::fs::write(&path, jwks(vec![old_jwk, new_jwk.clone()])).expect("write");
        v.refresh().expect("refresh");
        assert!(v.verify(&new_token).is_ok());
        assert!(v.verify(&old_token).is_ok());

        // Step 2: retire the old key; its (cached) tokens stop working at once.
        std::fs::write(&path, jwks(vec![new_jwk])).expect("write");
        v.refresh().expect("refresh");
        assert_eq!(v.verify(&old_token), Err(TokenError::UnknownKey));
        assert!(v.verify(&new_token).is_ok());

        // A broken file keeps the current keys.
        std::fs::write(&path, "{ not json").expect("write");
        assert!(v.refresh().is_err());
        assert!(v.verify(&new_token).is_ok());
    }

    #[test]
    fn refresh_rules_same_keys_unknown_kid_and_empty_sets() {
        let dir = tempfile::tempdir().expect("dir");
        let path = dir.path().join("jwks.json");
        let (a_pem, a_jwk) = generate_ed25519("a").expect("a");
        let (b_pem, b_jwk) = generate_ed25519("b").expect("b");
        let (c_pem, c_jwk) = generate_ed25519("c").expect("c");
        std::fs::write(&path, jwks(vec![a_jwk.clone()])).expect("write");
        let v = TokenVerifier::new(
            None,
            Some(KeySource::File(path.clone())),
            &AuthConfig::default(),
        )
        .expect("load");
        let a = sign_with_pem(&claims(60), a_pem.as_bytes(), "a").expect("sign");
        assert!(v.verify(&a).is_ok());
        // The same keys (even re-ordered, re-written): the cache stays.
        let before = v.key_generation();
        std::fs::write(&path, jwks(vec![a_jwk.clone()])).expect("write");
        v.refresh().expect("refresh");
        assert_eq!(v.key_generation(), before, "same keys keep the cache");
        // A key published since the last refresh: the first token naming it fetches.
        std::fs::write(&path, jwks(vec![a_jwk.clone(), b_jwk.clone()])).expect("write");
        let b = sign_with_pem(&claims(60), b_pem.as_bytes(), "b").expect("sign");
        assert!(v.verify(&b).is_ok(), "unknown kid fetched once");
        assert!(v.key_generation() > before);
        // Another unknown kid right after: no second fetch within the interval.
        std::fs::write(&path, jwks(vec![a_jwk.clone(), b_jwk.clone(), c_jwk])).expect("write");
        let c = sign_with_pem(&claims(60), c_pem.as_bytes(), "c").expect("sign");
        assert_eq!(v.verify(&c), Err(TokenError::UnknownKey), "rate-limited");
        assert!(v.verify(&a).is_ok() && v.verify(&b).is_ok());
        // A JWKS that parses but holds no usable key never replaces working keys.
        let generation = v.key_generation();
        std::fs::write(&path, r#"{"keys":[]}"#).expect("write");
        let e = v.refresh().expect_err("empty set refused");
        assert!(e.contains("no usable signing key"), "{e}");
        let mut enc = b_jwk.clone();
        enc.common.public_key_use = Some(PublicKeyUse::Encryption);
        std::fs::write(&path, jwks(vec![enc])).expect("write");
        assert!(v.refresh().is_err(), "only unusable keys: refused");
        assert_eq!(v.key_generation(), generation);
        assert!(v.verify(&a).is_ok() && v.verify(&b).is_ok());
    }

    /// A loopback HTTP server publishing a JWKS: answers every request with the current
    /// body (`Connection: close`, so one connection is one request), counts the requests,
    /// and in stall mode reads the request but never answers.
    struct JwksServer {
        url: String,
        addr: SocketAddr,
        body: Arc<Mutex<String>>,
        requests: Arc<AtomicUsize>,
        stall: Arc<AtomicBool>,
        shutdown: Arc<AtomicBool>,
    }

    impl JwksServer {
        fn start(body: String) -> Self {
            let listener = TcpListener::bind("127.0.0.1:0").expect("bind");
            let addr = listener.local_addr().expect("addr");
            let server = Self {
                url: format!("http://{addr}/.well-known/jwks.json"),
                addr,
                body: Arc::new(Mutex::new(body)),
                requests: Arc::new(AtomicUsize::new(0)),
                stall: Arc::new(AtomicBool::new(false)),
                shutdown: Arc::new(AtomicBool::new(false)),
            };
            let (body, requests, stall, shutdown) = (
                server.body.clone(),
                server.requests.clone(),
                server.stall.clone(),
                server.shutdown.clone(),
            );
            std::thread::spawn(move || {
                for stream in listener.incoming() {
                    if shutdown.load(Ordering::SeqCst) {
                        break;
                    }
                    let Ok(stream) = stream else { continue };
                    let (body, requests, stall) = (body.clone(), requests.clone(), stall.clone());
                    // One thread a connection: a stalled one must not block the next.
                    std::thread::spawn(move || answer(stream, &body, &requests, &stall));
                }
            });
            server
        }

        fn publish(&self, body: String) {
            *self.body.lock().expect("body") = body;
        }

        fn requests(&self) -> usize {
            self.requests.load(Ordering::SeqCst)
        }
    }

    impl Drop for JwksServer {
        fn drop(&mut self) {
            self.shutdown.store(true, Ordering::SeqCst);
            // Wake the accept loop so its thread ends.
            let _ = TcpStream::connect(self.addr);
        }
    }

    fn answer(
        mut stream: TcpStream,
        body: &Mutex<String>,
        requests: &AtomicUsize,
        stall: &AtomicBool,
    ) {
        // Bounded, so no handler outlives a client that went silent for long.
        let _ = stream.set_read_timeout(Some(Duration::from_secs(30)));
        let mut head = Vec::new();
        let mut buf = [0u8; 1024];
        while !head.windows(4).any(|w| w == b"\r\n\r\n") {
            match stream.read(&mut buf) {
                Ok(0) | Err(_) => return,
                Ok(n) => head.extend_from_slice(&buf[..n]),
            }
        }
        // Counted before answering, so the count is final when the client has its answer.
        requests.fetch_add(1, Ordering::SeqCst);
        if stall.load(Ordering::SeqCst) {
            // Never answer: hold the connection until the client gives up and closes.
            while matches!(stream.read(&mut buf), Ok(n) if n > 0) {}
            return;
        }
        let body = body.lock().expect("body").clone();
        let response = format!(
            "HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
            body.len()
        );
        let _ = stream.write_all(response.as_bytes());
        let _ = stream.flush();
    }

    /// A verifier reading its keys from `server` (the initial load is one request).
    fn verifier_over_http(server: &JwksServer) -> TokenVerifier {
        TokenVerifier::new(
            None,
            Some(KeySource::Url(server.url.clone())),
            &AuthConfig::default(),
        )
        .expect("load over HTTP")
    }

    // Plain #[test] (no runtime): the unknown-kid fetch runs inline in verify().
    #[test]
    fn jwks_over_http_is_fetched_once_per_interval_for_unknown_key_ids() {
        let (a_pem, a_jwk) = generate_ed25519("a").expect("a");
        let (b_pem, b_jwk) = generate_ed25519("b").expect("b");
        let (c_pem, c_jwk) = generate_ed25519("c").expect("c");
        let server = JwksServer::start(jwks(vec![a_jwk.clone()]));
        let v = verifier_over_http(&server);
        assert_eq!(server.requests(), 1, "the initial load is one request");
        let a = sign_with_pem(&claims(60), a_pem.as_bytes(), "a").expect("sign");
        assert!(v.verify(&a).is_ok());
        assert_eq!(server.requests(), 1, "a known kid fetches nothing");

        // A key published since the load: the first token naming it fetches once.
        server.publish(jwks(vec![a_jwk.clone(), b_jwk.clone()]));
        let b = sign_with_pem(&claims(60), b_pem.as_bytes(), "b").expect("sign");
        assert!(v.verify(&b).is_ok(), "unknown kid fetched");
        assert_eq!(server.requests(), 2);

        // Within the interval another unknown kid fetches nothing, even one that is
        // published by now, and neither does a flood of made-up kids.
        server.publish(jwks(vec![a_jwk.clone(), b_jwk.clone(), c_jwk.clone()]));
        let c = sign_with_pem(&claims(60), c_pem.as_bytes(), "c").expect("sign");
        assert_eq!(v.verify(&c), Err(TokenError::UnknownKey), "rate-limited");
        assert_eq!(server.requests(), 2, "no fetch within the interval");
        for i in 0..50 {
            let t = sign_with_pem(&claims(60), c_pem.as_bytes(), &format!("made-up-{i}"))
                .expect("sign");
            assert_eq!(v.verify(&t), Err(TokenError::UnknownKey));
        }
        assert_eq!(
            server.requests(),
            2,
            "a flood of unknown kids is one fetch at most"
        );
        assert!(v.verify(&a).is_ok() && v.verify(&b).is_ok());

        // Once the interval has passed (the last fetch moved back instead of sleeping
        // 10 s), the next unknown kid fetches again, once.
        {
            let mut last = v.inner.unknown_kid_fetch.lock().expect("lock");
            assert!(last.is_some(), "the fetch for b was recorded");
            *last = Some(
                Instant::now()
                    .checked_sub(UNKNOWN_KID_FETCH_INTERVAL)
                    .expect("an instant one interval ago"),
            );
        }
        assert!(v.verify(&c).is_ok(), "fetched after the interval");
        assert_eq!(server.requests(), 3);
        let t = sign_with_pem(&claims(60), c_pem.as_bytes(), "made-up").expect("sign");
        assert_eq!(v.verify(&t), Err(TokenError::UnknownKey));
        assert_eq!(server.requests(), 3, "the interval starts again");
    }

    #[test]
    fn a_stalled_jwks_server_times_out_and_keeps_the_keys() {
        let (a_pem, a_jwk) = generate_ed25519("a").expect("a");
        let server = JwksServer::start(jwks(vec![a_jwk]));
        let v = verifier_over_http(&server);
        let a = sign_with_pem(&claims(60), a_pem.as_bytes(), "a").expect("sign");
        assert!(v.verify(&a).is_ok());
        let generation = v.key_generation();
        let before = server.requests();

        server.stall.store(true, Ordering::SeqCst);
        // The refresh runs on its own thread so a missing timeout fails this test
        // instead of hanging it.
        let (tx, rx) = mpsc::channel();
        let stalled = v.clone();
        std::thread::spawn(move || {
            let started = Instant::now();
            let result = stalled.refresh();
            let _ = tx.send((result, started.elapsed()));
        });
        // While the fetch hangs, the current keys keep verifying (a new, uncached token).
        let deadline = Instant::now() + FETCH_TIMEOUT;
        while server.requests() == before && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(10));
        }
        assert!(
            server.requests() > before,
            "the refresh reached the stalled server"
        );
        let fresh = sign_with_pem(&claims(61), a_pem.as_bytes(), "a").expect("sign");
        assert!(
            v.verify(&fresh).is_ok(),
            "keys usable during a stalled fetch"
        );

        let (result, elapsed) = rx
            .recv_timeout(FETCH_TIMEOUT + Duration::from_secs(3))
            .expect("a refresh against a stalled server times out instead of hanging");
        let e = result.expect_err("a stalled fetch is an error");
        assert!(e.contains("timeout"), "{e}");
        assert!(
            elapsed < FETCH_TIMEOUT + Duration::from_secs(3),
            "{elapsed:?}"
        );
        // It failed by timing out, not at once for some other reason.
        assert!(elapsed >= FETCH_TIMEOUT / 2, "{elapsed:?}");
        assert_eq!(v.key_generation(), generation, "the keys were kept");
        assert!(v.verify(&a).is_ok());

        // The server answering again: the refresh succeeds, the same keys keep the cache.
        server.stall.store(false, Ordering::SeqCst);
        let before = server.requests();
        v.refresh().expect("refresh");
        assert_eq!(server.requests(), before + 1);
        assert_eq!(v.key_generation(), generation);
    }

    #[test]
    fn a_jwks_with_no_usable_key_over_http_never_replaces_a_working_one() {
        let (a_pem, a_jwk) = generate_ed25519("a").expect("a");
        let (b_pem, b_jwk) = generate_ed25519("b").expect("b");
        let server = JwksServer::start(jwks(vec![a_jwk]));
        let v = verifier_over_http(&server);
        let a = sign_with_pem(&claims(60), a_pem.as_bytes(), "a").expect("sign");
        assert!(v.verify(&a).is_ok());
        let generation = v.key_generation();
        assert_eq!(server.requests(), 1);

        // An empty set.
        server.publish(r#"{"keys":[]}"#.to_owned());
        let e = v.refresh().expect_err("empty set refused");
        assert!(e.contains("no usable signing key"), "{e}");
        assert_eq!(server.requests(), 2, "the server was asked");
        assert_eq!(v.key_generation(), generation);
        assert!(v.verify(&a).is_ok());

        // A set whose only key is for encryption.
        let mut enc = b_jwk;
        enc.common.public_key_use = Some(PublicKeyUse::Encryption);
        server.publish(jwks(vec![enc]));
        let e = v.refresh().expect_err("only unusable keys refused");
        assert!(e.contains("no usable signing key"), "{e}");
        assert_eq!(server.requests(), 3, "the server was asked");
        assert_eq!(v.key_generation(), generation);
        assert!(v.verify(&a).is_ok());

        // A token naming the encryption key fetches (unknown kid) and is refused; that
        // fetch does not replace the working set either.
        let b = sign_with_pem(&claims(60), b_pem.as_bytes(), "b").expect("sign");
        assert_eq!(v.verify(&b), Err(TokenError::UnknownKey));
        assert_eq!(server.requests(), 4, "the unknown kid fetched");
        assert_eq!(v.key_generation(), generation);
        // A new (uncached) token: the working key itself is still there.
        let fresh = sign_with_pem(&claims(61), a_pem.as_bytes(), "a").expect("sign");
        assert!(v.verify(&fresh).is_ok());
    }

    #[test]
    fn key_types_must_match_declared_algorithms() {
        let mut jwk = jwk_of(RSA_PEM, Algorithm::RS256, "rsa-1");
        jwk.common.key_algorithm = Some(KeyAlgorithm::ES256);
        assert!(
            KeySet::parse(&jwks(vec![jwk]))
                .expect("parse")
                .kids()
                .is_empty(),
            "inconsistent key skipped"
        );
        let mut enc = jwk_of(EC_PEM, Algorithm::ES256, "enc");
        enc.common.public_key_use = Some(PublicKeyUse::Encryption);
        assert!(
            KeySet::parse(&jwks(vec![enc]))
                .expect("parse")
                .kids()
                .is_empty(),
            "encryption key skipped"
        );
        assert!(KeySet::parse("[]").is_err());
    }

    #[test]
    fn no_keys_refuses_everything() {
        let t = sign_hs256(&claims(60), b"secret").expect("sign");
        assert!(TokenVerifier::none().verify(&t).is_err());
    }
}
