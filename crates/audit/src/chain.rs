//! The chain itself: the canonical encoding of an audit event, the hash chain step,
//! checkpoint signatures, and verification. Pure code (no I/O, no async, no database):
//! the service and the offline verifier (`vern audit verify`) run exactly this module.
//!
//! # Canonical encoding of an event, version 1
//!
//! A binary, length-prefixed encoding of a fixed list of fields in a fixed order. It is
//! neither JSON nor protobuf bytes (neither is canonical: key order, whitespace,
//! escaping, field order and default-value omission all vary between encoders).
//!
//! Primitive types:
//!
//! | type   | bytes                                                             |
//! |--------|-------------------------------------------------------------------|
//! | `u8`   | 1 byte                                                            |
//! | `i32`  | 4 bytes, big-endian two's complement                              |
//! | `i64`  | 8 bytes, big-endian two's complement                              |
//! | `str`  | `u32` big-endian length in bytes, then that many bytes of UTF-8   |
//! | `list` | `u32` big-endian element count, then each element as a `str`      |
//!
//! Every variable-length value carries its length, so no two different events encode
//! to the same bytes (moving a character from one field to the next changes the
//! prefixes). Fields, in this order:
//!
//! | # | field            | type   | notes                                                 |
//! |---|------------------|--------|-------------------------------------------------------|
//! | 0 | version          | `u8`   | `0x01`                                                |
//! | 1 | tenant_id        | `str`  |                                                       |
//! | 2 | seq              | `i64`  | position in the tenant's chain, from 1                |
//! | 3 | event_id         | `str`  | lower-case hyphenated UUID, as stored                 |
//! | 4 | occur_time       | `i64`  | microseconds since 1970-01-01T00:00:00Z (UTC)         |
//! | 5 | actor.sub        | `str`  |                                                       |
//! | 6 | actor.roles      | `list` | as stored (the service sorts and de-duplicates)       |
//! | 7 | actor.client     | `str`  |                                                       |
//! | 8 | action           | `str`  |                                                       |
//! | 9 | service          | `str`  |                                                       |
//! |10 | subject_id       | `str`  | empty when none                                       |
//! |11 | resource_type    | `str`  |                                                       |
//! |12 | resource_id      | `str`  |                                                       |
//! |13 | outcome          | `str`  | `SUCCESS`, `DENIED` or `FAILED`                       |
//! |14 | status_code      | `i32`  | gRPC status code                                      |
//! |15 | changed_fields   | `list` | as stored (the service sorts and de-duplicates)       |
//! |16 | request_id       | `str`  |                                                       |
//! |17 | trace_id         | `str`  |                                                       |
//! |18 | detail           | `str`  |                                                       |
//!
//! Not covered: `prev_hash` and `hash` (they are the chain) and `append_time`
//! (bookkeeping of the audit service, not a fact about the audited operation).
//!
//! # The chain
//!
//! Per tenant: `h_0` = 32 zero bytes, `h_n = SHA-256(h_{n-1} ‖ canonical(event_n))`.
//! Each stored event keeps `prev_hash = h_{n-1}` and `hash = h_n`.
//!
//! # Checkpoints
//!
//! A checkpoint states `(tenant_id, seq, head_hash, checkpoint_time)` and is signed with
//! Ed25519 (RFC 8032) over this message:
//!
//! | field                       | type          |
//! |-----------------------------|---------------|
//! | `"vern.audit.checkpoint.v1"`| `str` (domain separation) |
//! | tenant_id                   | `str`         |
//! | seq                         | `i64`         |
//! | head_hash                   | 32 raw bytes  |
//! | checkpoint_time             | `i64`, microseconds since the epoch (UTC) |
//!
//! The key id is the first 16 hex characters of SHA-256 of the 32-byte public key.
//! Verification takes a [`KeySet`] (the current key and retired ones) and checks each
//! checkpoint with the key its id names, so a chain signed across a key rotation (or
//! with two replicas holding different keys during a rolling restart) verifies.

use std::collections::{BTreeMap, VecDeque};

use ed25519_dalek::{Signature, Signer, SigningKey, Verifier as _, VerifyingKey};
use sha2::{Digest, Sha256};

/// A SHA-256 chain hash.
pub type Hash = [u8; 32];

/// The hash before the first event of every chain.
pub const ZERO_HASH: Hash = [0; 32];

/// Version byte of the canonical event encoding.
pub const EVENT_ENCODING_VERSION: u8 = 1;

/// Domain-separation prefix of the signed checkpoint message.
pub const CHECKPOINT_CONTEXT: &str = "vern.audit.checkpoint.v1";

/// The chained content of one audit event: exactly the fields of the canonical
/// encoding, in their stored form.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Event {
    /// The tenant whose chain holds the event.
    pub tenant_id: String,
    /// Position in the chain, from 1.
    pub seq: i64,
    /// The emitting service's event id (lower-case hyphenated UUID).
    pub event_id: String,
    /// When the operation happened, microseconds since the Unix epoch (UTC).
    pub occur_micros: i64,
    /// The caller's token subject.
    pub actor_sub: String,
    /// The caller's roles.
    pub actor_roles: Vec<String>,
    /// The calling client.
    pub actor_client: String,
    /// What was done (an RPC or a domain action).
    pub action: String,
    /// The emitting service.
    pub service: String,
    /// The data subject concerned, if any.
    pub subject_id: String,
    /// Kind of the target resource.
    pub resource_type: String,
    /// Id of the target resource.
    pub resource_id: String,
    /// `SUCCESS`, `DENIED` or `FAILED`.
    pub outcome: String,
    /// gRPC status code of the answer.
    pub status_code: i32,
    /// Names of the changed fields.
    pub changed_fields: Vec<String>,
    /// The operation's request id.
    pub request_id: String,
    /// W3C trace id.
    pub trace_id: String,
    /// Non-personal detail.
    pub detail: String,
}

fn put_str(out: &mut Vec<u8>, s: &str) {
    out.extend_from_slice(&(s.len() as u32).to_be_bytes());
    out.extend_from_slice(s.as_bytes());
}

fn put_list(out: &mut Vec<u8>, items: &[String]) {
    out.extend_from_slice(&(items.len() as u32).to_be_bytes());
    for s in items {
        put_str(out, s);
    }
}

impl Event {
    /// Appends the canonical encoding (version 1) of the event to `out`.
    pub fn encode_into(&self, out: &mut Vec<u8>) {
        self.encode_with_seq(self.seq, out);
    }

    /// The canonical encoding (version 1) of the event.
    pub fn canonical(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(256);
        self.encode_into(&mut out);
        out
    }

    fn encode_with_seq(&self, seq: i64, out: &mut Vec<u8>) {
        out.push(EVENT_ENCODING_VERSION);
        put_str(out, &self.tenant_id);
        out.extend_from_slice(&seq.to_be_bytes());
        put_str(out, &self.event_id);
        out.extend_from_slice(&self.occur_micros.to_be_bytes());
        put_str(out, &self.actor_sub);
        put_list(out, &self.actor_roles);
        put_str(out, &self.actor_client);
        put_str(out, &self.action);
        put_str(out, &self.service);
        put_str(out, &self.subject_id);
        put_str(out, &self.resource_type);
        put_str(out, &self.resource_id);
        put_str(out, &self.outcome);
        out.extend_from_slice(&self.status_code.to_be_bytes());
        put_list(out, &self.changed_fields);
        put_str(out, &self.request_id);
        put_str(out, &self.trace_id);
        put_str(out, &self.detail);
    }
}

/// One chain step: `SHA-256(prev ‖ canonical)`.
pub fn chain_hash(prev: &Hash, canonical: &[u8]) -> Hash {
    let mut h = Sha256::new();
    h.update(prev);
    h.update(canonical);
    h.finalize().into()
}

/// The hash of `event` chained after `prev`, encoding into `scratch` (reused to avoid
/// an allocation per event).
pub fn next_hash(prev: &Hash, event: &Event, scratch: &mut Vec<u8>) -> Hash {
    scratch.clear();
    event.encode_into(scratch);
    chain_hash(prev, scratch)
}

fn hash_with_seq(prev: &Hash, event: &Event, seq: i64, scratch: &mut Vec<u8>) -> Hash {
    scratch.clear();
    event.encode_with_seq(seq, scratch);
    chain_hash(prev, scratch)
}

/// An event as stored in the chain: its content, the hash it was chained to and its
/// own hash.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ChainedEvent {
    /// The chained content.
    pub event: Event,
    /// The hash of the previous event (zeros for seq 1).
    pub prev_hash: Hash,
    /// `SHA-256(prev_hash ‖ canonical(event))`.
    pub hash: Hash,
}

/// The key id of a public key: the first 16 hex characters of SHA-256 of its 32 bytes.
pub fn key_id(key: &VerifyingKey) -> String {
    let digest = Sha256::digest(key.as_bytes());
    hex::encode(&digest[..8])
}

/// The public keys checkpoints are verified with, by key id: the current signing key
/// and the retired ones whose checkpoints are still in the chains.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct KeySet {
    keys: BTreeMap<String, VerifyingKey>,
}

impl KeySet {
    /// The set of `keys`.
    pub fn new(keys: impl IntoIterator<Item = VerifyingKey>) -> Self {
        let mut set = Self::default();
        for k in keys {
            set.insert(k);
        }
        set
    }

    /// Adds `key` (under its [`key_id`]).
    pub fn insert(&mut self, key: VerifyingKey) {
        self.keys.insert(key_id(&key), key);
    }

    /// The key with id `key_id`.
    pub fn get(&self, key_id: &str) -> Option<&VerifyingKey> {
        self.keys.get(key_id)
    }

    /// The ids of the keys, sorted.
    pub fn ids(&self) -> Vec<&str> {
        self.keys.keys().map(String::as_str).collect()
    }

    /// True when the set holds no key.
    pub fn is_empty(&self) -> bool {
        self.keys.is_empty()
    }
}

impl From<VerifyingKey> for KeySet {
    fn from(key: VerifyingKey) -> Self {
        Self::new([key])
    }
}

/// A signed statement of a tenant's chain head.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Checkpoint {
    /// The tenant.
    pub tenant_id: String,
    /// The seq of the head event.
    pub seq: i64,
    /// The hash of the head event.
    pub head_hash: Hash,
    /// When the checkpoint was made, microseconds since the Unix epoch (UTC).
    pub checkpoint_micros: i64,
    /// Id of the signing key ([`key_id`]).
    pub key_id: String,
    /// Ed25519 signature over [`Checkpoint::signed_message`].
    pub signature: [u8; 64],
}

impl Checkpoint {
    /// Signs `(tenant_id, seq, head_hash, checkpoint_micros)` with `key`.
    pub fn sign(
        key: &SigningKey,
        tenant_id: &str,
        seq: i64,
        head_hash: Hash,
        checkpoint_micros: i64,
    ) -> Self {
        let message = signed_message(tenant_id, seq, &head_hash, checkpoint_micros);
        Self {
            tenant_id: tenant_id.to_owned(),
            seq,
            head_hash,
            checkpoint_micros,
            key_id: key_id(&key.verifying_key()),
            signature: key.sign(&message).to_bytes(),
        }
    }

    /// The message the signature covers.
    pub fn signed_message(&self) -> Vec<u8> {
        signed_message(
            &self.tenant_id,
            self.seq,
            &self.head_hash,
            self.checkpoint_micros,
        )
    }

    /// Whether the signature is `key`'s over this checkpoint (and names its key id).
    pub fn verify(&self, key: &VerifyingKey) -> bool {
        self.key_id == key_id(key)
            && key
                .verify(
                    &self.signed_message(),
                    &Signature::from_bytes(&self.signature),
                )
                .is_ok()
    }
}

fn signed_message(tenant_id: &str, seq: i64, head_hash: &Hash, micros: i64) -> Vec<u8> {
    let mut out = Vec::with_capacity(96 + tenant_id.len());
    put_str(&mut out, CHECKPOINT_CONTEXT);
    put_str(&mut out, tenant_id);
    out.extend_from_slice(&seq.to_be_bytes());
    out.extend_from_slice(head_hash);
    out.extend_from_slice(&micros.to_be_bytes());
    out
}

/// Why verification failed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FailureKind {
    /// An event's content does not match its hash: it was altered.
    HashMismatch,
    /// An event does not link to its predecessor: one was removed, inserted, replaced
    /// or reordered.
    LinkMismatch,
    /// The sequence has a gap or a repeat.
    SeqGap,
    /// The chain disagrees with a signed checkpoint (e.g. a truncated tail).
    CheckpointMismatch,
    /// A checkpoint's signature does not verify.
    BadSignature,
    /// A checkpoint was signed by a key that is not among the keys given.
    UnknownKey,
}

impl FailureKind {
    /// A short lower-case name.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::HashMismatch => "hash mismatch",
            Self::LinkMismatch => "link mismatch",
            Self::SeqGap => "sequence gap",
            Self::CheckpointMismatch => "checkpoint mismatch",
            Self::BadSignature => "bad signature",
            Self::UnknownKey => "unknown key",
        }
    }
}

/// The first problem found: where, what kind, and why (seqs and ids only).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Failure {
    /// The first bad seq.
    pub seq: i64,
    /// The kind of problem.
    pub kind: FailureKind,
    /// Explanation for people.
    pub reason: String,
}

/// Where verification starts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Start {
    /// At the first event given: from seq 1 (the zero hash) or, for a partial export,
    /// trusting the first event's `prev_hash`.
    FirstEvent,
    /// At `seq`, chained after `prev` (the hash of seq - 1, or zeros for seq 1).
    At {
        /// The first seq expected.
        seq: i64,
        /// The hash the first event must link to.
        prev: Hash,
    },
}

/// The result of a verification.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Summary {
    /// The first problem, if any.
    pub failure: Option<Failure>,
    /// Events whose link and hash were checked and found good.
    pub checked: u64,
    /// The first seq verified (0 when no event was seen).
    pub first_seq: i64,
    /// The last good seq (0 when none).
    pub last_seq: i64,
    /// The hash of the last good event (the start hash when none).
    pub head_hash: Hash,
    /// Checkpoints whose signature and head hash verified.
    pub checkpoints: u64,
    /// The latest checkpoint that verified, or the one that failed.
    pub checkpoint: Option<Checkpoint>,
}

impl Summary {
    /// True when nothing failed.
    pub fn ok(&self) -> bool {
        self.failure.is_none()
    }
}

/// Verifies a stream of events (in seq order) and checkpoints (each after the event at
/// its seq, or beyond the last event) of one tenant. Stops at the first failure.
///
/// Where the blame lies when an event does not link to its predecessor:
/// - the event is self-consistent (its hash matches its own `prev_hash` and content):
///   the predecessor was altered or replaced after the event was chained to it, so the
///   predecessor's seq is reported;
/// - it was chained to the same hash as its predecessor and its hash matches its
///   content at seq - 1: the predecessor was inserted (later events renumbered);
/// - otherwise the event itself is out of place (removed, reordered or altered).
pub struct Verifier {
    keys: KeySet,
    tenant_id: Option<String>,
    started: bool,
    next_seq: i64,
    first_seq: i64,
    head: Hash,
    before_head: Hash,
    last_prev: Option<Hash>,
    checked: u64,
    checkpoints: u64,
    checkpoint: Option<Checkpoint>,
    pending: VecDeque<Checkpoint>,
    failure: Option<Failure>,
    scratch: Vec<u8>,
}

impl std::fmt::Debug for Verifier {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Verifier")
            .field("key_ids", &self.keys.ids())
            .field("next_seq", &self.next_seq)
            .field("failure", &self.failure)
            .finish_non_exhaustive()
    }
}

impl Verifier {
    /// A verifier checking each checkpoint's signature with the key of `keys` its key
    /// id names. `tenant_id`: the chain's tenant, or `None` to take it from the first
    /// event.
    pub fn new(keys: impl Into<KeySet>, tenant_id: Option<&str>, start: Start) -> Self {
        let (started, next_seq, head) = match start {
            Start::FirstEvent => (false, 0, ZERO_HASH),
            Start::At { seq, prev } => (true, seq.max(1), prev),
        };
        Self {
            keys: keys.into(),
            tenant_id: tenant_id.map(str::to_owned),
            started,
            next_seq,
            first_seq: if started { next_seq } else { 0 },
            head,
            before_head: head,
            last_prev: None,
            checked: 0,
            checkpoints: 0,
            checkpoint: None,
            pending: VecDeque::new(),
            failure: None,
            scratch: Vec::with_capacity(512),
        }
    }

    /// The seq expected next (0 before the first event of a [`Start::FirstEvent`]).
    pub fn next_seq(&self) -> i64 {
        self.next_seq
    }

    /// The first failure so far.
    pub fn failure(&self) -> Option<&Failure> {
        self.failure.as_ref()
    }

    /// Records the first failure. When it blames the last event counted good (a link
    /// from its successor or a checkpoint of it disagrees), that event is taken back:
    /// the summary's head and count then end just before the failure.
    fn fail(&mut self, seq: i64, kind: FailureKind, reason: String) -> bool {
        if self.started && self.checked > 0 && seq == self.next_seq - 1 {
            self.head = self.before_head;
            self.checked -= 1;
        }
        self.failure = Some(Failure { seq, kind, reason });
        false
    }

    /// Records that the event expected next could not be read (corrupt row or line).
    pub fn unreadable(&mut self, what: &str) {
        if self.failure.is_none() {
            let seq = self.next_seq.max(1);
            self.fail(
                seq,
                FailureKind::HashMismatch,
                format!("{what} cannot be read: altered or corrupt"),
            );
        }
    }

    /// Checks the next event. False once anything failed.
    pub fn event(&mut self, e: &ChainedEvent) -> bool {
        if self.failure.is_some() {
            return false;
        }
        let ev = &e.event;
        match &self.tenant_id {
            Some(t) if *t != ev.tenant_id => {
                let seq = if self.started { self.next_seq } else { ev.seq };
                return self.fail(
                    seq,
                    FailureKind::HashMismatch,
                    format!("the event at seq {} names another tenant", ev.seq),
                );
            }
            Some(_) => {}
            None => self.tenant_id = Some(ev.tenant_id.clone()),
        }
        if !self.started {
            self.started = true;
            self.next_seq = ev.seq.max(1);
            self.first_seq = self.next_seq;
            self.head = if ev.seq <= 1 { ZERO_HASH } else { e.prev_hash };
            self.before_head = self.head;
            if let Some(cp) = self.pending.front()
                && cp.seq < self.next_seq
            {
                let seq = cp.seq;
                return self.fail(
                    seq,
                    FailureKind::CheckpointMismatch,
                    format!("the checkpoint at seq {seq} precedes the first event"),
                );
            }
        }
        let n = self.next_seq;
        if ev.seq != n {
            let reason = if ev.seq > n {
                format!("seq {n} is missing: the next event has seq {}", ev.seq)
            } else {
                format!("seq {} appears again after seq {}", ev.seq, n - 1)
            };
            return self.fail(n, FailureKind::SeqGap, reason);
        }
        if e.prev_hash != self.head {
            let self_consistent = next_hash(&e.prev_hash, ev, &mut self.scratch) == e.hash;
            if self_consistent && n > 1 {
                return self.fail(
                    n - 1,
                    FailureKind::LinkMismatch,
                    format!(
                        "seq {n} was chained to a different event than the one now at seq {}: that event was altered or replaced",
                        n - 1
                    ),
                );
            }
            if n > 1
                && self.last_prev == Some(e.prev_hash)
                && hash_with_seq(&e.prev_hash, ev, n - 1, &mut self.scratch) == e.hash
            {
                return self.fail(
                    n - 1,
                    FailureKind::LinkMismatch,
                    format!(
                        "the event at seq {} was inserted: the event now at seq {n} was chained directly after seq {}",
                        n - 1,
                        n - 2
                    ),
                );
            }
            let reason = if hash_with_seq(&e.prev_hash, ev, n + 1, &mut self.scratch) == e.hash {
                format!(
                    "the event at seq {n} was chained as seq {}: the original seq {n} was removed or moved",
                    n + 1
                )
            } else {
                format!(
                    "the event at seq {n} does not link to seq {}: an event was removed, inserted or reordered",
                    n - 1
                )
            };
            return self.fail(n, FailureKind::LinkMismatch, reason);
        }
        let h = next_hash(&self.head, ev, &mut self.scratch);
        if h != e.hash {
            return self.fail(
                n,
                FailureKind::HashMismatch,
                format!("the content of seq {n} does not match its hash: the event was altered"),
            );
        }
        self.before_head = self.head;
        self.head = h;
        self.last_prev = Some(e.prev_hash);
        self.next_seq = n + 1;
        self.checked += 1;
        while let Some(cp) = self.pending.front() {
            if cp.seq != n {
                break;
            }
            if let Some(cp) = self.pending.pop_front()
                && !self.compare(cp)
            {
                return false;
            }
        }
        true
    }

    fn compare(&mut self, cp: Checkpoint) -> bool {
        if cp.head_hash != self.head {
            let seq = cp.seq;
            self.checkpoint = Some(cp);
            return self.fail(
                seq,
                FailureKind::CheckpointMismatch,
                format!(
                    "the chain's hash at seq {seq} differs from the signed checkpoint: events up to seq {seq} were rewritten"
                ),
            );
        }
        self.checkpoints += 1;
        self.checkpoint = Some(cp);
        true
    }

    /// Checks a checkpoint: its signature, then its head hash against the chain (now if
    /// it covers the last event, later if it lies beyond). False once anything failed.
    pub fn checkpoint(&mut self, cp: Checkpoint) -> bool {
        if self.failure.is_some() {
            return false;
        }
        let seq = cp.seq;
        let Some(key) = self.keys.get(&cp.key_id) else {
            let known = self.keys.ids();
            let reason = format!(
                "the checkpoint at seq {seq} was signed by key {}, which is not among the keys given ({}): add that key's public key (a retired key, after a rotation)",
                cp.key_id,
                if known.is_empty() {
                    "none".to_owned()
                } else {
                    known.join(", ")
                }
            );
            self.checkpoint = Some(cp);
            return self.fail(seq, FailureKind::UnknownKey, reason);
        };
        if !cp.verify(key) {
            self.checkpoint = Some(cp);
            return self.fail(
                seq,
                FailureKind::BadSignature,
                format!("the signature of the checkpoint at seq {seq} does not verify"),
            );
        }
        match &self.tenant_id {
            Some(t) if *t != cp.tenant_id => {
                self.checkpoint = Some(cp);
                return self.fail(
                    seq,
                    FailureKind::CheckpointMismatch,
                    format!("the checkpoint at seq {seq} is of another tenant"),
                );
            }
            Some(_) => {}
            None => self.tenant_id = Some(cp.tenant_id.clone()),
        }
        let last = self.next_seq - 1;
        if self.started && seq == last && self.pending.is_empty() {
            return self.compare(cp);
        }
        if !self.started || seq > last {
            if self.pending.back().is_some_and(|p| p.seq >= seq) {
                self.checkpoint = Some(cp);
                return self.fail(
                    seq,
                    FailureKind::CheckpointMismatch,
                    format!("the checkpoint at seq {seq} is out of order"),
                );
            }
            self.pending.push_back(cp);
            return true;
        }
        self.checkpoint = Some(cp);
        self.fail(
            seq,
            FailureKind::CheckpointMismatch,
            format!("the checkpoint at seq {seq} does not follow the event it covers"),
        )
    }

    /// Ends verification. A checkpoint beyond the last event means the tail was
    /// truncated.
    pub fn finish(mut self) -> Summary {
        if self.failure.is_none()
            && let Some(cp) = self.pending.pop_front()
        {
            let last = self.next_seq - 1;
            let missing = if self.started { self.next_seq } else { 1 };
            let reason = format!(
                "a signed checkpoint covers seq {} but the chain ends at seq {}: the tail was truncated",
                cp.seq,
                last.max(0)
            );
            self.checkpoint = Some(cp);
            self.fail(missing, FailureKind::CheckpointMismatch, reason);
        }
        let last_seq = match &self.failure {
            Some(f) => (f.seq - 1).min(self.next_seq - 1).max(0),
            None => (self.next_seq - 1).max(0),
        };
        Summary {
            checked: self.checked,
            first_seq: self.first_seq,
            last_seq: if self.checked == 0 && self.failure.is_none() {
                (self.first_seq - 1).max(0)
            } else {
                last_seq
            },
            head_hash: self.head,
            checkpoints: self.checkpoints,
            checkpoint: self.checkpoint,
            failure: self.failure,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn event(seq: i64) -> Event {
        Event {
            tenant_id: "kultur".into(),
            seq,
            event_id: "0192f0c1-7a2b-7c3d-8e4f-5a6b7c8d9e0f".into(),
            occur_micros: 1_767_225_600_123_456,
            actor_sub: "crm-sync".into(),
            actor_roles: vec!["integration".into(), "service".into()],
            actor_client: "crm/4.2".into(),
            action: "UpdateSubject".into(),
            service: "subjects".into(),
            subject_id: "0192f0c1-0000-7000-8000-000000000001".into(),
            resource_type: "subject".into(),
            resource_id: "0192f0c1-0000-7000-8000-000000000001".into(),
            outcome: "SUCCESS".into(),
            status_code: 0,
            changed_fields: vec!["email".into(), "phone".into()],
            request_id: "req-1".into(),
            trace_id: "4bf92f3577b34da6a3ce929d0e0e4736".into(),
            detail: String::new(),
        }
    }

    fn key() -> SigningKey {
        SigningKey::from_bytes(&[7; 32])
    }

    fn chain(n: i64) -> Vec<ChainedEvent> {
        let mut prev = ZERO_HASH;
        let mut out = vec![];
        let mut scratch = vec![];
        for seq in 1..=n {
            let mut e = event(seq);
            e.event_id = format!("0192f0c1-7a2b-7c3d-8e4f-{seq:012}");
            let hash = next_hash(&prev, &e, &mut scratch);
            out.push(ChainedEvent {
                event: e,
                prev_hash: prev,
                hash,
            });
            prev = hash;
        }
        out
    }

    fn verify(events: &[ChainedEvent], cps: &[Checkpoint]) -> Summary {
        verify_with(key().verifying_key(), events, cps)
    }

    fn verify_with(
        keys: impl Into<KeySet>,
        events: &[ChainedEvent],
        cps: &[Checkpoint],
    ) -> Summary {
        let mut v = Verifier::new(keys, Some("kultur"), Start::FirstEvent);
        for e in events {
            v.event(e);
            for cp in cps.iter().filter(|c| c.seq == e.event.seq) {
                v.checkpoint(cp.clone());
            }
        }
        for cp in cps
            .iter()
            .filter(|c| events.last().is_none_or(|l| c.seq > l.event.seq))
        {
            v.checkpoint(cp.clone());
        }
        v.finish()
    }

    fn failure(s: &Summary) -> (i64, FailureKind) {
        let f = s.failure.as_ref().expect("a failure");
        (f.seq, f.kind)
    }

    /// The canonical encoding of `event(42)`, field by field. The hashes below were
    /// cross-checked with an independent implementation of the spec (CANONICAL.md).
    const GOLDEN_CANONICAL: [&str; 23] = [
        "01",                                 // version
        "000000066b756c747572",               // tenant_id "kultur"
        "000000000000002a",                   // seq 42
        "00000024GOLDEN_EVENT_ID",            // event_id
        "GOLDEN_MICROS",                      // occur_time
        "0000000863726d2d73796e63",           // actor.sub "crm-sync"
        "00000002",                           // actor.roles: 2 elements
        "0000000b696e746567726174696f6e",     // "integration"
        "0000000773657276696365",             // "service"
        "0000000763726d2f342e32",             // actor.client "crm/4.2"
        "0000000d5570646174655375626a656374", // action "UpdateSubject"
        "000000087375626a65637473",           // service "subjects"
        "00000024GOLDEN_SUBJECT",             // subject_id
        "000000077375626a656374",             // resource_type "subject"
        "00000024GOLDEN_SUBJECT",             // resource_id
        "0000000753554343455353",             // outcome "SUCCESS"
        "00000000",                           // status_code 0
        "00000002",                           // changed_fields: 2 elements
        "00000005656d61696c",                 // "email"
        "0000000570686f6e65",                 // "phone"
        "000000057265712d31",                 // request_id "req-1"
        "00000020GOLDEN_TRACE",               // trace_id
        "00000000",                           // detail ""
    ];

    #[test]
    fn golden_vector_is_stable() {
        let e = event(42);
        let expected = GOLDEN_CANONICAL
            .concat()
            .replace("GOLDEN_EVENT_ID", &hex::encode(e.event_id.as_bytes()))
            .replace("GOLDEN_MICROS", &hex::encode(e.occur_micros.to_be_bytes()))
            .replace("GOLDEN_SUBJECT", &hex::encode(e.subject_id.as_bytes()))
            .replace("GOLDEN_TRACE", &hex::encode(e.trace_id.as_bytes()));
        let canonical = e.canonical();
        assert_eq!(hex::encode(&canonical), expected);
        // Fixed forever for version 1: a change here breaks every stored chain.
        assert_eq!(
            hex::encode(Sha256::digest(&canonical)),
            GOLDEN_CANONICAL_SHA256
        );
        assert_eq!(
            hex::encode(chain_hash(&ZERO_HASH, &canonical)),
            GOLDEN_H1,
            "h_1 of the golden event"
        );
    }

    const GOLDEN_CANONICAL_SHA256: &str =
        "9d2548e796ad4c0f0bea9b9c2ea5d9518afadaa141a0ba1bf05f0236a0447272";
    const GOLDEN_H1: &str = "9c680be46210945f0f54b8f3b00a2c8345788cd67cedb0c592ae531b3108f0ef";

    #[test]
    fn every_field_changes_the_encoding() {
        let base = event(1);
        let c0 = base.canonical();
        type Change = Box<dyn Fn(&mut Event)>;
        let variants: Vec<(&str, Change)> = vec![
            ("tenant_id", Box::new(|e| e.tenant_id.push('x'))),
            ("seq", Box::new(|e| e.seq += 1)),
            ("event_id", Box::new(|e| e.event_id.push('x'))),
            ("occur_micros", Box::new(|e| e.occur_micros += 1)),
            ("actor_sub", Box::new(|e| e.actor_sub.push('x'))),
            (
                "actor_roles",
                Box::new(|e| {
                    e.actor_roles.pop();
                }),
            ),
            ("actor_client", Box::new(|e| e.actor_client.push('x'))),
            ("action", Box::new(|e| e.action.push('x'))),
            ("service", Box::new(|e| e.service.push('x'))),
            ("subject_id", Box::new(|e| e.subject_id.push('x'))),
            ("resource_type", Box::new(|e| e.resource_type.push('x'))),
            ("resource_id", Box::new(|e| e.resource_id.push('x'))),
            ("outcome", Box::new(|e| e.outcome = "FAILED".into())),
            ("status_code", Box::new(|e| e.status_code = 5)),
            ("changed_fields", Box::new(|e| e.changed_fields.reverse())),
            ("request_id", Box::new(|e| e.request_id.push('x'))),
            ("trace_id", Box::new(|e| e.trace_id.push('x'))),
            ("detail", Box::new(|e| e.detail.push('x'))),
        ];
        assert_eq!(variants.len(), 18, "every field of Event is varied");
        for (name, change) in variants {
            let mut e = base.clone();
            change(&mut e);
            assert_ne!(e.canonical(), c0, "{name} is not in the encoding");
        }
    }

    #[test]
    fn length_prefixes_prevent_ambiguity() {
        let mut a = event(1);
        let mut b = event(1);
        // The same concatenated text split differently between neighbouring fields.
        a.resource_type = "subject".into();
        a.resource_id = "x".into();
        b.resource_type = "subjec".into();
        b.resource_id = "tx".into();
        assert_ne!(a.canonical(), b.canonical());
        // A list element boundary moved, or an empty element added.
        let mut c = event(1);
        let mut d = event(1);
        c.changed_fields = vec!["ab".into(), "c".into()];
        d.changed_fields = vec!["a".into(), "bc".into()];
        assert_ne!(c.canonical(), d.canonical());
        let mut e = event(1);
        e.changed_fields = vec!["ab".into(), "c".into(), String::new()];
        assert_ne!(c.canonical(), e.canonical());
        // A value moved from the end of a list into the next string field.
        let mut f = event(1);
        let mut g = event(1);
        f.actor_roles = vec!["a".into()];
        f.actor_client = "b".into();
        g.actor_roles = vec![];
        g.actor_client = "ab".into();
        assert_ne!(f.canonical(), g.canonical());
    }

    #[test]
    fn intact_chain_verifies_with_checkpoints() {
        let events = chain(10);
        let cps = vec![
            Checkpoint::sign(&key(), "kultur", 5, events[4].hash, 1),
            Checkpoint::sign(&key(), "kultur", 10, events[9].hash, 2),
        ];
        let s = verify(&events, &cps);
        assert!(s.ok(), "{:?}", s.failure);
        assert_eq!(
            (s.checked, s.first_seq, s.last_seq, s.checkpoints),
            (10, 1, 10, 2)
        );
        assert_eq!(s.head_hash, events[9].hash);
    }

    #[test]
    fn altered_event_is_found_at_its_seq() {
        let mut events = chain(10);
        events[3].event.action = "GetSubject".into();
        assert_eq!(
            failure(&verify(&events, &[])),
            (4, FailureKind::HashMismatch)
        );
    }

    #[test]
    fn altered_and_rehashed_event_is_blamed_not_its_successor() {
        let mut events = chain(10);
        let mut scratch = vec![];
        events[3].event.action = "GetSubject".into();
        events[3].hash = next_hash(&events[3].prev_hash, &events[3].event, &mut scratch);
        let s = verify(&events, &[]);
        assert_eq!(failure(&s), (4, FailureKind::LinkMismatch));
        assert_eq!((s.last_seq, s.checked), (3, 3));
        assert_eq!(s.head_hash, events[2].hash);
    }

    #[test]
    fn removed_event_is_a_gap_or_a_link_mismatch() {
        let mut events = chain(10);
        events.remove(4);
        assert_eq!(failure(&verify(&events, &[])), (5, FailureKind::SeqGap));
        // Renumbered to hide the gap.
        for e in events.iter_mut().skip(4) {
            e.event.seq -= 1;
        }
        let s = verify(&events, &[]);
        assert_eq!(failure(&s), (5, FailureKind::LinkMismatch));
        assert!(s.failure.expect("f").reason.contains("removed"));
    }

    #[test]
    fn reordered_pair_is_found_at_the_first() {
        let mut events = chain(10);
        events.swap(5, 6);
        events[5].event.seq = 6;
        events[6].event.seq = 7;
        assert_eq!(
            failure(&verify(&events, &[])),
            (6, FailureKind::LinkMismatch)
        );
    }

    #[test]
    fn inserted_event_is_found_at_its_seq() {
        let mut events = chain(10);
        let mut scratch = vec![];
        let mut fake = event(4);
        fake.event_id = "0192f0c1-dead-7000-8000-000000000000".into();
        let prev = events[2].hash;
        let hash = next_hash(&prev, &fake, &mut scratch);
        events.insert(
            3,
            ChainedEvent {
                event: fake,
                prev_hash: prev,
                hash,
            },
        );
        for e in events.iter_mut().skip(4) {
            e.event.seq += 1;
        }
        let s = verify(&events, &[]);
        assert_eq!(failure(&s), (4, FailureKind::LinkMismatch));
        assert!(s.failure.expect("f").reason.contains("inserted"));
    }

    #[test]
    fn truncated_tail_is_found_against_a_checkpoint() {
        let events = chain(10);
        let cp = Checkpoint::sign(&key(), "kultur", 10, events[9].hash, 1);
        let s = verify(&events[..7], &[cp]);
        assert_eq!(failure(&s), (8, FailureKind::CheckpointMismatch));
        assert_eq!(s.checkpoint.map(|c| c.seq), Some(10));
    }

    #[test]
    fn rewritten_history_is_found_against_a_checkpoint() {
        let mut events = chain(10);
        let cp = Checkpoint::sign(&key(), "kultur", 8, events[7].hash, 1);
        // Rewrite from seq 6 on, recomputing every hash: only the signature catches it.
        let mut scratch = vec![];
        events[5].event.action = "Rewritten".into();
        let mut prev = events[4].hash;
        for e in events.iter_mut().skip(5) {
            e.prev_hash = prev;
            e.hash = next_hash(&prev, &e.event, &mut scratch);
            prev = e.hash;
        }
        let s = verify(&events, &[cp]);
        assert_eq!(failure(&s), (8, FailureKind::CheckpointMismatch));
        assert_eq!((s.last_seq, s.checked), (7, 7));
        assert_eq!(s.head_hash, events[6].hash);
    }

    #[test]
    fn forged_checkpoints_are_refused() {
        let events = chain(4);
        let mut cp = Checkpoint::sign(&key(), "kultur", 4, events[3].hash, 1);
        cp.checkpoint_micros += 1;
        assert_eq!(
            failure(&verify(&events, &[cp])),
            (4, FailureKind::BadSignature)
        );
        let other = SigningKey::from_bytes(&[8; 32]);
        let cp = Checkpoint::sign(&other, "kultur", 4, events[3].hash, 1);
        assert_eq!(
            failure(&verify(&events, std::slice::from_ref(&cp))),
            (4, FailureKind::UnknownKey)
        );
        // Another key's signature under the known key's id.
        let forged = Checkpoint {
            key_id: key_id(&key().verifying_key()),
            ..cp
        };
        assert_eq!(
            failure(&verify(&events, &[forged])),
            (4, FailureKind::BadSignature)
        );
        let good = Checkpoint::sign(&key(), "kultur", 4, events[3].hash, 1);
        assert!(good.verify(&key().verifying_key()));
    }

    /// Checkpoints signed before and after a key rotation (interleaved, as two replicas
    /// restarting one after the other sign them) verify with both keys, each by its
    /// key id; without the retired key the first of its checkpoints fails, naming it.
    #[test]
    fn checkpoints_across_a_key_rotation_verify_with_both_keys() {
        let events = chain(12);
        let (old, new) = (key(), SigningKey::from_bytes(&[9; 32]));
        let cps = vec![
            Checkpoint::sign(&old, "kultur", 3, events[2].hash, 1),
            Checkpoint::sign(&new, "kultur", 6, events[5].hash, 2),
            Checkpoint::sign(&old, "kultur", 9, events[8].hash, 3),
            Checkpoint::sign(&new, "kultur", 12, events[11].hash, 4),
        ];
        let both = KeySet::new([new.verifying_key(), old.verifying_key()]);
        let s = verify_with(both, &events, &cps);
        assert!(s.ok(), "{:?}", s.failure);
        assert_eq!((s.checked, s.checkpoints), (12, 4));

        let s = verify_with(new.verifying_key(), &events, &cps);
        let f = s.failure.as_ref().expect("a failure");
        assert_eq!((f.seq, f.kind), (3, FailureKind::UnknownKey));
        let old_id = key_id(&old.verifying_key());
        assert!(f.reason.contains(&old_id), "{}", f.reason);
        assert!(
            f.reason.contains(&key_id(&new.verifying_key())),
            "{}",
            f.reason
        );
        assert_eq!(s.checkpoint.map(|c| c.key_id), Some(old_id));
        assert_eq!(s.last_seq, 2, "verified up to the unverifiable checkpoint");
    }

    #[test]
    fn partial_range_trusts_its_anchor() {
        let events = chain(10);
        let mut v = Verifier::new(
            key().verifying_key(),
            Some("kultur"),
            Start::At {
                seq: 4,
                prev: events[2].hash,
            },
        );
        for e in &events[3..] {
            assert!(v.event(e));
        }
        let s = v.finish();
        assert!(s.ok());
        assert_eq!((s.first_seq, s.last_seq, s.checked), (4, 10, 7));
        // A partial export verified from its first event.
        let s = verify(&events[3..], &[]);
        assert!(s.ok());
        assert_eq!(s.first_seq, 4);
    }

    #[test]
    fn key_id_is_sha256_prefix() {
        let k = key().verifying_key();
        let id = key_id(&k);
        assert_eq!(id.len(), 16);
        assert_eq!(id, hex::encode(&Sha256::digest(k.as_bytes())[..8]));
    }
}
