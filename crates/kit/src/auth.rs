//! Tokens, roles and the one permission table.
//!
//! Every RPC declares exactly one [`Permission`] in its proto; every [`Role`] grants a
//! fixed set of permissions; anything not in the table is denied. The gateway and every service
//! use the same table through [`crate::context::AuthLayer`].

use std::path::Path;
use std::str::FromStr;

use jsonwebtoken::{Algorithm, EncodingKey, Header};
use serde::{Deserialize, Deserializer, Serialize};

use crate::config::Config;

/// A role a token can carry.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Role {
    /// Runs the platform: creates and suspends tenants; never reads personal data.
    PlatformAdmin,
    /// Administers one department (tenant): purposes, retention, rights requests.
    TenantAdmin,
    /// Handles rights requests and subjects' data.
    PrivacyOfficer,
    /// A CRM or accounting system.
    Integration,
    /// Reads and verifies the audit trail only.
    Auditor,
    /// Another vern service. Never accepted through the gateway.
    Service,
}

impl Role {
    /// Every role.
    pub const ALL: [Role; 6] = [
        Role::PlatformAdmin,
        Role::TenantAdmin,
        Role::PrivacyOfficer,
        Role::Integration,
        Role::Auditor,
        Role::Service,
    ];

    /// The role's name in tokens.
    pub fn as_str(self) -> &'static str {
        match self {
            Role::PlatformAdmin => "platform-admin",
            Role::TenantAdmin => "tenant-admin",
            Role::PrivacyOfficer => "privacy-officer",
            Role::Integration => "integration",
            Role::Auditor => "auditor",
            Role::Service => "service",
        }
    }

    /// Whether the role acts platform-wide (no tenant) for the platform-level
    /// permissions it holds. Every other role acts inside exactly one tenant.
    pub fn platform_wide(self) -> bool {
        matches!(self, Role::PlatformAdmin)
    }

    /// Whether this role grants `permission`.
    pub fn grants(self, permission: Permission) -> bool {
        use Permission::*;
        if permission == Unspecified {
            return false;
        }
        match self {
            Role::PlatformAdmin => {
                matches!(
                    permission,
                    TenantsAdminister | TenantsRead | TenantsUpdate | KeysRotate | OutboxAdminister
                )
            }
            Role::TenantAdmin => matches!(
                permission,
                TenantsRead
                    | TenantsUpdate
                    | PurposesManage
                    | PurposesRead
                    | SubjectsRead
                    | ConsentsRead
                    | RetentionManage
                    | RetentionRead
                    | RetentionSweep
                    | RightsSubmit
                    | RightsRead
                    | RightsHandle
                    | RightsConfigure
                    | AuditRead
            ),
            Role::PrivacyOfficer => matches!(
                permission,
                TenantsRead
                    | PurposesRead
                    | SubjectsRead
                    | SubjectsWrite
                    | SubjectsErase
                    | ConsentsRead
                    | ConsentsWrite
                    | ConsentsCheck
                    | ObjectionsDecide
                    | RetentionManage
                    | RetentionRead
                    | RightsSubmit
                    | RightsRead
                    | RightsHandle
                    | AuditRead
            ),
            Role::Integration => matches!(
                permission,
                PurposesRead
                    | SubjectsRead
                    | SubjectsWrite
                    | ConsentsRead
                    | ConsentsWrite
                    | ConsentsCheck
                    | RightsSubmit
                    | RightsEvents
            ),
            Role::Auditor => matches!(permission, AuditRead),
            Role::Service => !matches!(
                permission,
                TenantsAdminister | TenantsUpdate | KeysRotate | OutboxAdminister
            ),
        }
    }
}

impl FromStr for Role {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Role::ALL
            .into_iter()
            .find(|r| r.as_str() == s)
            .ok_or_else(|| {
                format!(
                    "unknown role (expected one of: {})",
                    Role::ALL.map(Role::as_str).join(", ")
                )
            })
    }
}

/// What an RPC needs. Each RPC declares exactly one, as the method option
/// `(vern.common.v1.permission)` in its proto (`proto/vern/common/v1/permission.proto`).
pub use vern_proto::common::v1::Permission;

/// Whether calls with `permission` act inside one tenant (and so need an effective
/// tenant). Tenant administration and key rotation are platform-level.
pub fn tenant_scoped(permission: Permission) -> bool {
    !matches!(
        permission,
        Permission::TenantsAdminister
            | Permission::TenantsRead
            | Permission::TenantsUpdate
            | Permission::KeysRotate
            | Permission::OutboxAdminister
    )
}

/// Whether `permission` is an operator's action on the platform itself (keys, outboxes):
/// every call needing one is audited, in the platform chain.
pub fn operates_the_platform(permission: Permission) -> bool {
    matches!(
        permission,
        Permission::KeysRotate | Permission::OutboxAdminister
    )
}

/// The permission an RPC needs; `None` for an RPC that declares none, or a path that
/// is no vern RPC (both denied).
pub fn permission_for(path: &str) -> Option<Permission> {
    crate::permissions::table().get(path).copied()
}

/// Paths that need no permission: health (probes) and reflection (tooling; whether it
/// needs a token is the server's `reflection` setting).
pub fn is_public(path: &str) -> bool {
    path.starts_with("/grpc.health.v1.Health/") || is_reflection(path)
}

/// Server reflection paths.
pub fn is_reflection(path: &str) -> bool {
    path.starts_with("/grpc.reflection.v1.ServerReflection/")
        || path.starts_with("/grpc.reflection.v1alpha.ServerReflection/")
}

/// The claims of a vern token.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct Claims {
    /// Who calls (a user or service account id).
    pub sub: String,
    /// The tenant(s) the token acts for: a string, or a list for group roles.
    #[serde(
        default,
        deserialize_with = "one_or_many",
        skip_serializing_if = "Vec::is_empty"
    )]
    pub tenant: Vec<String>,
    /// Role names.
    #[serde(default)]
    pub roles: Vec<String>,
    /// Issuer.
    pub iss: String,
    /// Audience: a string, or a list (RFC 7519 §4.1.3) of which one must be vern's.
    /// Verification checks it; afterwards only the first entry is kept here.
    #[serde(deserialize_with = "first_of_one_or_many")]
    pub aud: String,
    /// Expiry, seconds since the epoch.
    pub exp: i64,
    /// Not before, seconds since the epoch.
    #[serde(default)]
    pub nbf: i64,
    /// Issued at, seconds since the epoch.
    #[serde(default)]
    pub iat: i64,
}

fn one_or_many<'de, D: Deserializer<'de>>(d: D) -> Result<Vec<String>, D::Error> {
    #[derive(Deserialize)]
    #[serde(untagged)]
    enum OneOrMany {
        One(String),
        Many(Vec<String>),
    }
    Ok(match Option::<OneOrMany>::deserialize(d)? {
        None => vec![],
        Some(OneOrMany::One(s)) => vec![s],
        Some(OneOrMany::Many(v)) => v,
    })
}

fn first_of_one_or_many<'de, D: Deserializer<'de>>(d: D) -> Result<String, D::Error> {
    #[derive(Deserialize)]
    #[serde(untagged)]
    enum OneOrMany {
        One(String),
        Many(Vec<String>),
    }
    Ok(match OneOrMany::deserialize(d)? {
        OneOrMany::One(s) => s,
        OneOrMany::Many(v) => v.into_iter().next().unwrap_or_default(),
    })
}

/// Longest token `sub` accepted, characters: the audit service's limit for
/// `actor.sub`, so whatever a caller is named, its audit events are accepted.
pub const MAX_SUB_CHARS: usize = 256;

/// Checks the claims every component relies on after the signature: `sub` a single
/// line the audit trail accepts, every tenant a well-formed tenant id. Returns the
/// claim at fault.
pub fn check_claims(claims: &Claims) -> Result<(), &'static str> {
    if claims.sub.trim().is_empty()
        || crate::validate::line("sub", &claims.sub, MAX_SUB_CHARS).is_err()
    {
        return Err("sub");
    }
    if claims
        .tenant
        .iter()
        .any(|t| crate::validate::tenant_id("tenant", t).is_err())
    {
        return Err("tenant");
    }
    if claims.roles.len() > 16 || claims.tenant.len() > 64 {
        return Err("roles");
    }
    Ok(())
}

/// A verified caller.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Principal {
    /// The token's `sub`.
    pub sub: String,
    /// Recognised roles (unknown role names are ignored).
    pub roles: Vec<Role>,
    /// Tenants the token names.
    pub tenants: Vec<String>,
}

pub use crate::verify::{TokenError, TokenVerifier};

/// Signs `claims` with the HS256 `secret` (dev tokens).
pub fn sign_hs256(claims: &Claims, secret: &[u8]) -> Result<String, jsonwebtoken::errors::Error> {
    jsonwebtoken::encode(
        &Header::new(Algorithm::HS256),
        claims,
        &EncodingKey::from_secret(secret),
    )
}

/// Name of the dev signing key file inside the data directory.
pub const DEV_KEY_FILE: &str = "dev-signing.key";

/// The HS256 secret: the configured one, else (with `auth.dev_key`, as in `vern dev`)
/// the dev key in `data_dir`, created with 32 random bytes, mode 0600, when missing.
/// `None`: HS256 is not accepted.
pub fn hs256_secret(config: &Config) -> std::io::Result<Option<Vec<u8>>> {
    if let Some(secret) = &config.auth.hs256_secret {
        return Ok(Some(secret.as_bytes().to_vec()));
    }
    if config.auth.dev_key {
        return dev_key(&config.data_dir).map(Some);
    }
    Ok(None)
}

/// A PEM private key (Ed25519, P-256 or RSA) and the algorithm it signs with.
fn pem_key(pem: &[u8]) -> Result<(Algorithm, EncodingKey), jsonwebtoken::errors::Error> {
    if let Ok(k) = EncodingKey::from_ed_pem(pem) {
        Ok((Algorithm::EdDSA, k))
    } else if let Ok(k) = EncodingKey::from_ec_pem(pem) {
        Ok((Algorithm::ES256, k))
    } else {
        Ok((Algorithm::RS256, EncodingKey::from_rsa_pem(pem)?))
    }
}

/// Signs `claims` with an EdDSA, RS256 or ES256 private key in PEM form, naming `kid`.
pub fn sign_with_pem(
    claims: &Claims,
    pem: &[u8],
    kid: &str,
) -> Result<String, jsonwebtoken::errors::Error> {
    let (alg, key) = pem_key(pem)?;
    let mut header = Header::new(alg);
    header.kid = Some(kid.to_owned());
    jsonwebtoken::encode(&header, claims, &key)
}

/// A new Ed25519 signing key: the private key as PKCS#8 PEM and its public JWK
/// (`kid`, `alg: EdDSA`, `use: sig`).
pub fn generate_ed25519(
    kid: &str,
) -> Result<(String, jsonwebtoken::jwk::Jwk), jsonwebtoken::errors::Error> {
    use base64::Engine;
    // PKCS#8 v1 wrapping of a 32-byte Ed25519 seed (RFC 8410).
    const PREFIX: [u8; 16] = [
        0x30, 0x2e, 0x02, 0x01, 0x00, 0x30, 0x05, 0x06, 0x03, 0x2b, 0x65, 0x70, 0x04, 0x22, 0x04,
        0x20,
    ];
    let seed: [u8; 32] = rand::random();
    let mut der = PREFIX.to_vec();
    der.extend_from_slice(&seed);
    let key = EncodingKey::from_ed_der(&der);
    let mut jwk = jsonwebtoken::jwk::Jwk::from_encoding_key(&key, Algorithm::EdDSA)?;
    jwk.common.key_id = Some(kid.to_owned());
    jwk.common.public_key_use = Some(jsonwebtoken::jwk::PublicKeyUse::Signature);
    let b64 = base64::engine::general_purpose::STANDARD.encode(&der);
    let pem = format!("-----BEGIN PRIVATE KEY-----\n{b64}\n-----END PRIVATE KEY-----\n");
    Ok((pem, jwk))
}

/// Name of the dev master key file (personal data keys) inside the data directory.
pub const DEV_MASTER_KEY_FILE: &str = "dev-master.key";

/// The master key for personal data: the configured one, else (with `auth.dev_key`,
/// as in `vern dev`) a random one kept in `data_dir`. Base64 text; `None`: no key.
pub fn master_key(config: &Config) -> std::io::Result<Option<String>> {
    if let Some(k) = &config.keys.master_key {
        return Ok(Some(k.clone()));
    }
    if !config.auth.dev_key {
        return Ok(None);
    }
    use base64::Engine;
    let hex_text =
        String::from_utf8(create_once(&config.data_dir, DEV_MASTER_KEY_FILE)?).unwrap_or_default();
    let bytes = hex::decode(hex_text.trim())
        .map_err(|_| std::io::Error::other("dev master key is not hex"))?;
    Ok(Some(
        base64::engine::general_purpose::STANDARD.encode(bytes),
    ))
}

/// Signs short-lived `service` tokens for one tenant at a time, so services can call
/// each other (never through the gateway). Tokens are reused until near expiry.
pub struct ServiceTokens {
    signer: ServiceSigner,
    issuer: String,
    audience: String,
    cache: std::sync::Mutex<std::collections::HashMap<String, (String, i64)>>,
    /// Re-reads of a changed key file that failed (the current key was kept).
    reload_failures: std::sync::atomic::AtomicU64,
}

enum ServiceSigner {
    Hs256(Vec<u8>),
    Pem(std::sync::RwLock<PemSigner>),
}

/// A service signing key from a PEM file, read again when the file changes (a Secret
/// rotated in place). Its key id is the configured one, else the key's RFC 7638
/// thumbprint, so a new key in the same file carries a new id that the JWKS can list
/// next to the old one.
struct PemSigner {
    path: std::path::PathBuf,
    configured_kid: Option<String>,
    pem: Vec<u8>,
    kid: String,
    stamp: Option<(std::time::SystemTime, u64)>,
    checked: std::time::Instant,
}

/// How often the service signing key file is looked at.
const SERVICE_KEY_RECHECK: std::time::Duration = std::time::Duration::from_secs(1);

fn file_stamp(path: &Path) -> Option<(std::time::SystemTime, u64)> {
    let m = std::fs::metadata(path).ok()?;
    Some((m.modified().ok()?, m.len()))
}

/// The RFC 7638 thumbprint (SHA-256, base64url) of a PEM private key's public key.
pub fn key_thumbprint(pem: &[u8]) -> Result<String, jsonwebtoken::errors::Error> {
    let (alg, key) = pem_key(pem)?;
    jsonwebtoken::jwk::Jwk::from_encoding_key(&key, alg)?
        .thumbprint(jsonwebtoken::jwk::ThumbprintHash::SHA256)
}

impl PemSigner {
    fn load(path: &Path, configured_kid: Option<String>) -> std::io::Result<Self> {
        let stamp = file_stamp(path);
        let pem = std::fs::read(path)?;
        let kid = match &configured_kid {
            Some(k) => k.clone(),
            None => key_thumbprint(&pem).map_err(|e| {
                std::io::Error::other(format!(
                    "{} is not a PEM private key (Ed25519, P-256 or RSA): {e}",
                    path.display()
                ))
            })?,
        };
        Ok(Self {
            path: path.to_owned(),
            configured_kid,
            pem,
            kid,
            stamp,
            checked: std::time::Instant::now(),
        })
    }
}

impl std::fmt::Debug for ServiceTokens {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ServiceTokens").finish_non_exhaustive()
    }
}

/// Lifetime of a service token, seconds.
const SERVICE_TOKEN_SECONDS: i64 = 300;

impl ServiceTokens {
    /// The signer configured in `config` (service key file, else the HS256 secret).
    pub fn from_config(config: &Config) -> std::io::Result<Option<Self>> {
        let signer = match &config.auth.service_key_file {
            Some(file) => Some(ServiceSigner::Pem(std::sync::RwLock::new(PemSigner::load(
                file,
                config.auth.service_key_id.clone(),
            )?))),
            None => hs256_secret(config)?.map(ServiceSigner::Hs256),
        };
        Ok(signer.map(|signer| Self {
            signer,
            issuer: config.auth.issuer.clone(),
            audience: config.auth.audience.clone(),
            cache: std::sync::Mutex::new(std::collections::HashMap::new()),
            reload_failures: std::sync::atomic::AtomicU64::new(0),
        }))
    }

    /// How many re-reads of the changed service signing key file failed (unreadable or
    /// not a key); each kept the current key. Always 0 for HS256.
    pub fn key_reload_failures(&self) -> u64 {
        self.reload_failures
            .load(std::sync::atomic::Ordering::SeqCst)
    }

    /// Makes the next use look at the key file again, as if [`SERVICE_KEY_RECHECK`]
    /// had passed since the last look.
    #[cfg(test)]
    fn make_recheck_due(&self) {
        if let ServiceSigner::Pem(p) = &self.signer {
            let mut s = p.write().expect("signer lock");
            s.checked = std::time::Instant::now()
                .checked_sub(SERVICE_KEY_RECHECK)
                .expect("monotonic clock past the recheck interval");
        }
    }

    /// The PEM key and its id, re-read first if the file changed.
    fn pem_key(&self, signer: &std::sync::RwLock<PemSigner>) -> (Vec<u8>, String) {
        self.recheck(signer);
        match signer.read() {
            Ok(s) => (s.pem.clone(), s.kid.clone()),
            Err(poisoned) => {
                let s = poisoned.into_inner();
                (s.pem.clone(), s.kid.clone())
            }
        }
    }

    /// Reads the key file again if it changed (looked at at most every
    /// [`SERVICE_KEY_RECHECK`]); a new key empties the token cache. An unreadable new
    /// file keeps the current key (counted in [`ServiceTokens::key_reload_failures`]).
    fn recheck(&self, signer: &std::sync::RwLock<PemSigner>) {
        let due = signer
            .read()
            .map(|s| s.checked.elapsed() >= SERVICE_KEY_RECHECK)
            .unwrap_or(true);
        if due && let Ok(mut s) = signer.write() {
            s.checked = std::time::Instant::now();
            let stamp = file_stamp(&s.path);
            if stamp.is_some() && stamp != s.stamp {
                match PemSigner::load(&s.path, s.configured_kid.clone()) {
                    Ok(next) if next.pem != s.pem => {
                        tracing::info!(
                            previous_kid = %s.kid,
                            kid = %next.kid,
                            "service signing key changed; new service tokens are signed with it"
                        );
                        *s = next;
                        if let Ok(mut cache) = self.cache.lock() {
                            cache.clear();
                        }
                    }
                    Ok(_) => s.stamp = stamp,
                    Err(e) => {
                        tracing::warn!(error = %e, "service signing key file unreadable; keeping the current key");
                        s.stamp = stamp;
                        self.reload_failures
                            .fetch_add(1, std::sync::atomic::Ordering::SeqCst);
                    }
                }
            }
        }
    }

    /// The key id service tokens are signed under now (`None`: HS256).
    pub fn key_id(&self) -> Option<String> {
        match &self.signer {
            ServiceSigner::Hs256(_) => None,
            ServiceSigner::Pem(p) => Some(self.pem_key(p).1),
        }
    }

    /// A `service` token acting for `tenant`.
    pub fn for_tenant(&self, tenant: &str) -> Result<String, jsonwebtoken::errors::Error> {
        if let ServiceSigner::Pem(p) = &self.signer {
            // Looks at the file (at most once a second) before the cache is used, so
            // a rotated key is used from its first second.
            self.recheck(p);
        }
        let now = chrono::Utc::now().timestamp();
        if let Ok(cache) = self.cache.lock()
            && let Some((t, exp)) = cache.get(tenant)
            && *exp - 60 > now
        {
            return Ok(t.clone());
        }
        let claims = Claims {
            sub: "vern-service".into(),
            tenant: vec![tenant.to_owned()],
            roles: vec![Role::Service.as_str().into()],
            iss: self.issuer.clone(),
            aud: self.audience.clone(),
            exp: now + SERVICE_TOKEN_SECONDS,
            nbf: now,
            iat: now,
        };
        let token = match &self.signer {
            ServiceSigner::Hs256(secret) => sign_hs256(&claims, secret)?,
            ServiceSigner::Pem(p) => {
                let (pem, kid) = self.pem_key(p);
                sign_with_pem(&claims, &pem, &kid)?
            }
        };
        if let Ok(mut cache) = self.cache.lock() {
            if cache.len() > 10_000 {
                cache.clear();
            }
            cache.insert(tenant.to_owned(), (token.clone(), claims.exp));
        }
        Ok(token)
    }
}

fn dev_key(data_dir: &Path) -> std::io::Result<Vec<u8>> {
    create_once(data_dir, DEV_KEY_FILE)
}

/// Reads `<data_dir>/<name>`, creating it with 32 random bytes (hex, mode 0600) first
/// when missing; concurrent creators agree on one key.
fn create_once(data_dir: &Path, name: &str) -> std::io::Result<Vec<u8>> {
    let path = data_dir.join(name);
    match std::fs::read_to_string(&path) {
        Ok(s) => return Ok(s.trim().as_bytes().to_vec()),
        Err(e) if e.kind() != std::io::ErrorKind::NotFound => return Err(e),
        Err(_) => {}
    }
    crate::db::create_private_dir(data_dir)?;
    let secret = hex::encode(rand::random::<[u8; 32]>());
    let tmp = data_dir.join(format!("{name}.{}", std::process::id()));
    {
        use std::io::Write;
        let mut opts = std::fs::OpenOptions::new();
        opts.write(true).create_new(true);
        #[cfg(unix)]
        {
            use std::os::unix::fs::OpenOptionsExt;
            opts.mode(0o600);
        }
        let mut f = opts.open(&tmp)?;
        f.write_all(secret.as_bytes())?;
        f.sync_all()?;
    }
    // Another process may have created it meanwhile: keep theirs.
    match std::fs::hard_link(&tmp, &path) {
        Ok(()) => {
            let _ = std::fs::remove_file(&tmp);
            Ok(secret.into_bytes())
        }
        Err(_) => {
            let _ = std::fs::remove_file(&tmp);
            Ok(std::fs::read_to_string(&path)?.trim().as_bytes().to_vec())
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn service_signing_key_is_read_again_when_its_file_changes() {
        let dir = tempfile::tempdir().expect("dir");
        let path = dir.path().join("service.pem");
        let (a_pem, mut a_jwk) = generate_ed25519("x").expect("a");
        let (b_pem, mut b_jwk) = generate_ed25519("x").expect("b");
        std::fs::write(&path, &a_pem).expect("write");
        let mut config = Config::default();
        config.auth.service_key_file = Some(path.clone());
        let tokens = ServiceTokens::from_config(&config)
            .expect("read")
            .expect("signer");
        let a_kid = key_thumbprint(a_pem.as_bytes()).expect("thumbprint");
        assert_eq!(tokens.key_id().as_deref(), Some(a_kid.as_str()));
        // The JWKS lists both keys under their thumbprints (rotation step 1).
        a_jwk.common.key_id = Some(a_kid.clone());
        let b_kid = key_thumbprint(b_pem.as_bytes()).expect("thumbprint");
        b_jwk.common.key_id = Some(b_kid.clone());
        let jwks = dir.path().join("jwks.json");
        std::fs::write(
            &jwks,
            serde_json::to_string(&jsonwebtoken::jwk::JwkSet {
                keys: vec![a_jwk, b_jwk],
            })
            .expect("json"),
        )
        .expect("write");
        let verifier = TokenVerifier::new(
            None,
            Some(crate::verify::KeySource::File(jwks)),
            &config.auth,
        )
        .expect("verifier");
        let first = tokens.for_tenant("dept-a").expect("token");
        assert_eq!(
            jsonwebtoken::decode_header(&first).expect("header").kid,
            Some(a_kid.clone())
        );
        assert!(verifier.verify(&first).is_ok());
        // The Secret is rotated in place: the next token after the recheck uses B.
        let a_modified = std::fs::metadata(&path)
            .and_then(|m| m.modified())
            .expect("mtime");
        std::fs::write(&path, &b_pem).expect("write");
        // B may have A's size: a later mtime marks the change even on a coarse clock.
        std::fs::File::options()
            .write(true)
            .open(&path)
            .and_then(|f| f.set_modified(a_modified + std::time::Duration::from_secs(2)))
            .expect("set mtime");
        tokens.make_recheck_due();
        let second = tokens.for_tenant("dept-a").expect("token");
        assert_ne!(
            second, first,
            "the cached token of the old key is not reused"
        );
        assert_eq!(
            jsonwebtoken::decode_header(&second).expect("header").kid,
            Some(b_kid.clone())
        );
        assert!(verifier.verify(&second).is_ok());
        // A broken file keeps the current key. Its size differs from B's, so the
        // recheck sees a change and reads it (the use below runs the recheck).
        let failures = tokens.key_reload_failures();
        std::fs::write(&path, "not a key").expect("write");
        tokens.make_recheck_due();
        let third = tokens.for_tenant("dept-b").expect("token");
        assert_eq!(
            tokens.key_reload_failures(),
            failures + 1,
            "the broken key file was read again and refused"
        );
        assert_eq!(
            jsonwebtoken::decode_header(&third).expect("header").kid,
            Some(b_kid.clone()),
            "signed with the current key"
        );
        assert!(verifier.verify(&third).is_ok());
        assert_eq!(tokens.key_id().as_deref(), Some(b_kid.as_str()));
        // The unchanged broken file is not read (nor counted) again.
        tokens.make_recheck_due();
        assert_eq!(tokens.key_id().as_deref(), Some(b_kid.as_str()));
        assert_eq!(tokens.key_reload_failures(), failures + 1);
    }

    #[test]
    fn generated_keys_sign_verifiable_tokens() {
        let (pem, jwk) = generate_ed25519("k1").expect("generate");
        let now = chrono::Utc::now().timestamp();
        let claims = Claims {
            sub: "svc".into(),
            tenant: vec![],
            roles: vec!["service".into()],
            iss: "vern-dev".into(),
            aud: "vern".into(),
            exp: now + 60,
            nbf: now,
            iat: now,
        };
        let token = sign_with_pem(&claims, pem.as_bytes(), "k1").expect("sign");
        let key = jsonwebtoken::DecodingKey::from_jwk(&jwk).expect("jwk");
        let mut v = jsonwebtoken::Validation::new(Algorithm::EdDSA);
        v.set_audience(&["vern"]);
        let data = jsonwebtoken::decode::<Claims>(&token, &key, &v).expect("verifies");
        assert_eq!(data.claims, claims);
    }

    #[test]
    fn tenant_claim_accepts_string_or_list() {
        let c: Claims = serde_json::from_str(
            r#"{"sub":"a","tenant":["x","y"],"roles":[],"iss":"i","aud":"a","exp":1}"#,
        )
        .expect("list");
        assert_eq!(c.tenant, vec!["x", "y"]);
        let c: Claims =
            serde_json::from_str(r#"{"sub":"a","tenant":"x","iss":"i","aud":"a","exp":1}"#)
                .expect("one");
        assert_eq!(c.tenant, vec!["x"]);
    }

    #[test]
    fn roles_grant_as_designed() {
        use Permission::*;
        assert!(Role::PlatformAdmin.grants(TenantsAdminister));
        assert!(
            !Role::PlatformAdmin.grants(SubjectsRead),
            "platform-admin never reads personal data"
        );
        assert!(
            !Role::Integration.grants(TenantsAdminister),
            "integration never manages tenants"
        );
        for p in [
            SubjectsRead,
            ConsentsRead,
            RightsRead,
            TenantsRead,
            PurposesRead,
        ] {
            assert!(!Role::Auditor.grants(p), "auditor reads audit only");
        }
        assert!(Role::Auditor.grants(AuditRead));
        assert!(!Role::Auditor.grants(AuditAppend));
        assert_eq!("tenant-admin".parse::<Role>(), Ok(Role::TenantAdmin));
        assert!("root".parse::<Role>().is_err());
    }

    #[test]
    fn dev_key_is_created_once_and_reused() {
        let dir = tempfile::tempdir().expect("tempdir");
        let a = dev_key(dir.path()).expect("create");
        let b = dev_key(dir.path()).expect("read");
        assert_eq!(a, b);
        assert_eq!(a.len(), 64);
    }
}
