//! The Ed25519 key that signs checkpoints, and the audit service's settings that the
//! shared configuration does not (yet) have a section for.
//!
//! Where the signing key comes from, first match wins:
//! 1. `VERN_AUDIT_SIGNING_KEY_FILE`: path to a file holding the 32-byte Ed25519 seed as
//!    64 hex characters (production: mount it from a secret);
//! 2. with `auth.dev_key` (as in `vern dev`): `<data_dir>/audit-signing.key`, created
//!    with 32 random bytes (hex, mode 0600) when missing;
//! 3. an existing `<data_dir>/audit-signing.key`.
//!
//! Otherwise the service refuses to start: checkpoints nobody can verify later would be
//! worse than none.
//!
//! Checkpoints are verified against the current key and the retired public keys of
//! `audit.retired_public_keys` ([`verify_keys`]), each by the key id it carries.

use std::path::{Path, PathBuf};
use std::time::Duration;

use ed25519_dalek::{SigningKey, VerifyingKey};
use vern_kit::config::Config;

/// Environment variable naming the signing key file.
pub const SIGNING_KEY_FILE_VAR: &str = "VERN_AUDIT_SIGNING_KEY_FILE";
/// Name of the dev signing key inside the data directory.
pub const DEV_SIGNING_KEY_FILE: &str = "audit-signing.key";
/// Environment variable: checkpoint after this many new events (default 1000).
pub const CHECKPOINT_EVENTS_VAR: &str = "VERN_AUDIT_CHECKPOINT_EVENTS";
/// Environment variable: checkpoint every this many seconds when new events arrived
/// (default 60).
pub const CHECKPOINT_SECONDS_VAR: &str = "VERN_AUDIT_CHECKPOINT_SECONDS";

/// Why the signing key could not be had.
#[derive(Debug, thiserror::Error)]
pub enum KeyError {
    /// No key is configured.
    #[error(
        "no audit signing key: set {SIGNING_KEY_FILE_VAR} to a file holding a hex Ed25519 seed (or run with auth.dev_key, as vern dev does)"
    )]
    Missing,
    /// The key file could not be read or created.
    #[error("audit signing key file {path}: {source}")]
    Io {
        /// The file.
        path: PathBuf,
        /// The cause.
        source: std::io::Error,
    },
    /// The key file does not hold 64 hex characters.
    #[error("audit signing key file {0}: expected 64 hex characters (a 32-byte Ed25519 seed)")]
    Malformed(PathBuf),
    /// A numeric setting is not a positive number.
    #[error("{0} must be a positive whole number")]
    Setting(&'static str),
    /// A public key is neither 64 hex characters of an Ed25519 public key nor a
    /// readable file holding them. `what` names where it was given.
    #[error("{what}: expected 64 hex characters of an Ed25519 public key, or a file holding them")]
    PublicKey {
        /// Where the key was given (`audit.retired_public_keys[1]`, a file path).
        what: String,
    },
}

/// The checkpoint signing key and its id.
#[derive(Clone)]
pub struct AuditSigner {
    key: SigningKey,
    key_id: String,
}

impl std::fmt::Debug for AuditSigner {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Never the key.
        f.debug_struct("AuditSigner")
            .field("key_id", &self.key_id)
            .finish_non_exhaustive()
    }
}

impl AuditSigner {
    /// A signer from a 32-byte seed.
    pub fn from_seed(seed: [u8; 32]) -> Self {
        let key = SigningKey::from_bytes(&seed);
        let key_id = crate::chain::key_id(&key.verifying_key());
        Self { key, key_id }
    }

    /// The key configured for `config` (see the module doc); with `create`, the dev key
    /// is created when `auth.dev_key` is on and it is missing.
    pub fn from_config(config: &Config, create: bool) -> Result<Self, KeyError> {
        if let Some(path) = std::env::var_os(SIGNING_KEY_FILE_VAR) {
            return Self::from_file(Path::new(&path));
        }
        let dev = config.data_dir.join(DEV_SIGNING_KEY_FILE);
        if config.auth.dev_key && create && !dev.exists() {
            create_seed_file(&dev).map_err(|source| KeyError::Io {
                path: dev.clone(),
                source,
            })?;
        }
        if dev.exists() {
            return Self::from_file(&dev);
        }
        Err(KeyError::Missing)
    }

    /// The file the signing key of `config` is read from (re-read when it changes).
    pub fn source_file(config: &Config) -> Option<PathBuf> {
        if let Some(path) = std::env::var_os(SIGNING_KEY_FILE_VAR) {
            return Some(PathBuf::from(path));
        }
        let dev = config.data_dir.join(DEV_SIGNING_KEY_FILE);
        dev.exists().then_some(dev)
    }

    /// A signer from a file holding the seed as 64 hex characters.
    pub fn from_file(path: &Path) -> Result<Self, KeyError> {
        let text = std::fs::read_to_string(path).map_err(|source| KeyError::Io {
            path: path.to_owned(),
            source,
        })?;
        let bytes = hex::decode(text.trim()).map_err(|_| KeyError::Malformed(path.to_owned()))?;
        let seed: [u8; 32] = bytes
            .try_into()
            .map_err(|_| KeyError::Malformed(path.to_owned()))?;
        Ok(Self::from_seed(seed))
    }

    /// The signing key.
    pub fn signing_key(&self) -> &SigningKey {
        &self.key
    }

    /// The public key.
    pub fn verifying_key(&self) -> VerifyingKey {
        self.key.verifying_key()
    }

    /// The public key as 64 hex characters (what `vern audit verify --public-key` takes).
    pub fn public_key_hex(&self) -> String {
        hex::encode(self.key.verifying_key().as_bytes())
    }

    /// The key id checkpoints carry.
    pub fn key_id(&self) -> &str {
        &self.key_id
    }
}

/// Parses a public key given as 64 hex characters.
pub fn parse_public_key(hex_text: &str) -> Option<VerifyingKey> {
    let bytes: [u8; 32] = hex::decode(hex_text.trim()).ok()?.try_into().ok()?;
    VerifyingKey::from_bytes(&bytes).ok()
}

/// A public key given as 64 hex characters or as the path of a file holding them
/// (what `vern audit public-key` prints). `what` names the setting in errors.
pub fn load_public_key(value: &str, what: &str) -> Result<VerifyingKey, KeyError> {
    if let Some(k) = parse_public_key(value) {
        return Ok(k);
    }
    let text = std::fs::read_to_string(value.trim()).map_err(|_| KeyError::PublicKey {
        what: what.to_owned(),
    })?;
    parse_public_key(&text).ok_or_else(|| KeyError::PublicKey {
        what: format!("{what} ({})", value.trim()),
    })
}

/// The keys checkpoints are verified with: `current` (the signing key's public key)
/// and every `audit.retired_public_keys` entry.
pub fn verify_keys(
    config: &Config,
    current: VerifyingKey,
) -> Result<crate::chain::KeySet, KeyError> {
    let mut keys = crate::chain::KeySet::from(current);
    for (i, value) in config.audit.retired_public_keys.iter().enumerate() {
        keys.insert(load_public_key(
            value,
            &format!("audit.retired_public_keys[{i}]"),
        )?);
    }
    Ok(keys)
}

/// Writes 32 random bytes as hex to `path` (mode 0600), unless another process created
/// it first.
fn create_seed_file(path: &Path) -> std::io::Result<()> {
    use std::io::Write;
    if let Some(dir) = path.parent() {
        vern_kit::db::create_private_dir(dir)?;
    }
    let seed = hex::encode(rand::random::<[u8; 32]>());
    let tmp = path.with_extension(format!("key.{}", std::process::id()));
    {
        let mut opts = std::fs::OpenOptions::new();
        opts.write(true).create_new(true);
        #[cfg(unix)]
        {
            use std::os::unix::fs::OpenOptionsExt;
            opts.mode(0o600);
        }
        let mut f = opts.open(&tmp)?;
        f.write_all(seed.as_bytes())?;
        f.sync_all()?;
    }
    // hard_link fails if the file exists: keep the other process's key.
    let linked = std::fs::hard_link(&tmp, path);
    let _ = std::fs::remove_file(&tmp);
    match linked {
        Ok(()) => Ok(()),
        Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => Ok(()),
        Err(e) => Err(e),
    }
}

/// When checkpoints are made.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CheckpointPolicy {
    /// After an append that leaves at least this many events after the latest
    /// checkpoint.
    pub every_events: i64,
    /// Periodically, for every tenant with events after its latest checkpoint.
    pub every: Duration,
}

impl Default for CheckpointPolicy {
    fn default() -> Self {
        Self {
            every_events: 1000,
            every: Duration::from_secs(60),
        }
    }
}

impl CheckpointPolicy {
    /// The defaults overridden by `VERN_AUDIT_CHECKPOINT_EVENTS` and
    /// `VERN_AUDIT_CHECKPOINT_SECONDS`.
    pub fn from_env() -> Result<Self, KeyError> {
        let mut p = Self::default();
        if let Some(n) = positive(CHECKPOINT_EVENTS_VAR)? {
            p.every_events = n as i64;
        }
        if let Some(s) = positive(CHECKPOINT_SECONDS_VAR)? {
            p.every = Duration::from_secs(s);
        }
        Ok(p)
    }
}

fn positive(var: &'static str) -> Result<Option<u64>, KeyError> {
    match std::env::var(var) {
        Err(_) => Ok(None),
        Ok(v) => match v.trim().parse::<u64>() {
            Ok(n) if n > 0 && n <= i64::MAX as u64 => Ok(Some(n)),
            _ => Err(KeyError::Setting(var)),
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dev_key_is_created_once_with_mode_0600() {
        let dir = tempfile::tempdir().expect("dir");
        let mut config = Config {
            data_dir: dir.path().to_path_buf(),
            ..Default::default()
        };
        assert!(matches!(
            AuditSigner::from_config(&config, true),
            Err(KeyError::Missing)
        ));
        config.auth.dev_key = true;
        let a = AuditSigner::from_config(&config, true).expect("created");
        let b = AuditSigner::from_config(&config, true).expect("read back");
        assert_eq!(a.public_key_hex(), b.public_key_hex());
        assert_eq!(a.key_id().len(), 16);
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            let mode = std::fs::metadata(dir.path().join(DEV_SIGNING_KEY_FILE))
                .expect("file")
                .permissions()
                .mode();
            assert_eq!(mode & 0o777, 0o600);
        }
        // Without dev_key an existing file is still used.
        config.auth.dev_key = false;
        let c = AuditSigner::from_config(&config, false).expect("existing");
        assert_eq!(c.key_id(), a.key_id());
        assert_eq!(
            parse_public_key(&a.public_key_hex()),
            Some(a.verifying_key())
        );
        assert!(parse_public_key("zz").is_none());
        assert!(!format!("{a:?}").contains(&hex::encode(a.signing_key().to_bytes())));
    }

    #[test]
    fn retired_keys_load_inline_or_from_files() {
        let dir = tempfile::tempdir().expect("dir");
        let (current, old, older) = (
            AuditSigner::from_seed([1; 32]),
            AuditSigner::from_seed([2; 32]),
            AuditSigner::from_seed([3; 32]),
        );
        let file = dir.path().join("older.hex");
        std::fs::write(&file, format!("{}\n", older.public_key_hex())).expect("write");
        let mut config = Config::default();
        let keys = verify_keys(&config, current.verifying_key()).expect("none retired");
        assert_eq!(keys.ids(), vec![current.key_id()]);
        config.audit.retired_public_keys =
            vec![old.public_key_hex(), file.to_string_lossy().into_owned()];
        let keys = verify_keys(&config, current.verifying_key()).expect("keys");
        for s in [&current, &old, &older] {
            assert_eq!(keys.get(s.key_id()), Some(&s.verifying_key()));
        }
        config.audit.retired_public_keys.push("abcd".into());
        let err = verify_keys(&config, current.verifying_key())
            .expect_err("bad entry")
            .to_string();
        assert!(err.contains("audit.retired_public_keys[2]"), "{err}");
    }

    #[test]
    fn malformed_key_files_are_refused() {
        let dir = tempfile::tempdir().expect("dir");
        let p = dir.path().join("k");
        std::fs::write(&p, "abcd").expect("write");
        assert!(matches!(
            AuditSigner::from_file(&p),
            Err(KeyError::Malformed(_))
        ));
        std::fs::write(&p, format!("{}\n", "11".repeat(32))).expect("write");
        assert!(AuditSigner::from_file(&p).is_ok());
    }
}
