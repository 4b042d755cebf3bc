//! The canonical audit encoding, version 1 (`vern_audit::chain`): for arbitrary events
//! (fields cut from the input) the encoding decodes back to the same event (so no two
//! different events share bytes: the chain hash commits to every field), a chain built
//! from them verifies, and changing any one event makes verification fail.

#![no_main]

use ed25519_dalek::SigningKey;
use libfuzzer_sys::fuzz_target;
use vern_audit::chain::{ChainedEvent, Event, Start, Verifier, ZERO_HASH, next_hash};

/// Cuts the input into fields: each string is the bytes up to the next 0x00, lossily
/// decoded; numbers are 8 bytes.
struct Cut<'a>(&'a [u8]);

impl Cut<'_> {
    fn str(&mut self) -> String {
        let end = self.0.iter().position(|b| *b == 0).unwrap_or(self.0.len());
        let s = String::from_utf8_lossy(&self.0[..end]).into_owned();
        self.0 = &self.0[(end + 1).min(self.0.len())..];
        s
    }
    fn i64(&mut self) -> i64 {
        let mut b = [0u8; 8];
        let n = self.0.len().min(8);
        b[..n].copy_from_slice(&self.0[..n]);
        self.0 = &self.0[n..];
        i64::from_le_bytes(b)
    }
    fn list(&mut self) -> Vec<String> {
        let n = (self.i64().rem_euclid(4)) as usize;
        (0..n).map(|_| self.str()).collect()
    }
    fn event(&mut self, tenant: &str, seq: i64) -> Event {
        Event {
            tenant_id: tenant.to_owned(),
            seq,
            event_id: self.str(),
            occur_micros: self.i64(),
            actor_sub: self.str(),
            actor_roles: self.list(),
            actor_client: self.str(),
            action: self.str(),
            service: self.str(),
            subject_id: self.str(),
            resource_type: self.str(),
            resource_id: self.str(),
            outcome: self.str(),
            status_code: self.i64() as i32,
            changed_fields: self.list(),
            request_id: self.str(),
            trace_id: self.str(),
            detail: self.str(),
        }
    }
}

/// The inverse of `Event::canonical` (version 1), written here from the documented
/// format so the test does not trust the encoder it checks.
fn decode(mut b: &[u8]) -> Option<Event> {
    fn take<'a>(b: &mut &'a [u8], n: usize) -> Option<&'a [u8]> {
        if b.len() < n {
            return None;
        }
        let (h, t) = b.split_at(n);
        *b = t;
        Some(h)
    }
    fn u32_(b: &mut &[u8]) -> Option<u32> {
        Some(u32::from_be_bytes(take(b, 4)?.try_into().ok()?))
    }
    fn i64_(b: &mut &[u8]) -> Option<i64> {
        Some(i64::from_be_bytes(take(b, 8)?.try_into().ok()?))
    }
    fn str_(b: &mut &[u8]) -> Option<String> {
        let n = u32_(b)? as usize;
        String::from_utf8(take(b, n)?.to_vec()).ok()
    }
    fn list(b: &mut &[u8]) -> Option<Vec<String>> {
        let n = u32_(b)?;
        (0..n).map(|_| str_(b)).collect()
    }
    if take(&mut b, 1)? != [1] {
        return None;
    }
    let e = Event {
        tenant_id: str_(&mut b)?,
        seq: i64_(&mut b)?,
        event_id: str_(&mut b)?,
        occur_micros: i64_(&mut b)?,
        actor_sub: str_(&mut b)?,
        actor_roles: list(&mut b)?,
        actor_client: str_(&mut b)?,
        action: str_(&mut b)?,
        service: str_(&mut b)?,
        subject_id: str_(&mut b)?,
        resource_type: str_(&mut b)?,
        resource_id: str_(&mut b)?,
        outcome: str_(&mut b)?,
        status_code: u32_(&mut b)? as i32,
        changed_fields: list(&mut b)?,
        request_id: str_(&mut b)?,
        trace_id: str_(&mut b)?,
        detail: str_(&mut b)?,
    };
    b.is_empty().then_some(e)
}

fuzz_target!(|data: &[u8]| {
    let mut cut = Cut(data);
    let tenant = cut.str();
    let mut events = vec![];
    for seq in 1..=3 {
        if cut.0.is_empty() && seq > 1 {
            break;
        }
        events.push(cut.event(&tenant, seq));
    }
    for e in &events {
        assert_eq!(decode(&e.canonical()).as_ref(), Some(e), "round trip");
    }
    // A chain of them verifies; altering one event breaks it.
    let key = SigningKey::from_bytes(&[7; 32]).verifying_key();
    let mut prev = ZERO_HASH;
    let mut scratch = vec![];
    let chained: Vec<ChainedEvent> = events
        .iter()
        .map(|e| {
            let hash = next_hash(&prev, e, &mut scratch);
            let c = ChainedEvent {
                event: e.clone(),
                prev_hash: prev,
                hash,
            };
            prev = hash;
            c
        })
        .collect();
    let mut v = Verifier::new(key, Some(&tenant), Start::FirstEvent);
    for c in &chained {
        assert!(v.event(c), "a well-formed chain verifies");
    }
    assert!(v.finish().ok());
    let mut tampered = chained.clone();
    let victim = (data.len() % tampered.len()).min(tampered.len() - 1);
    tampered[victim].event.detail.push('x');
    let mut v = Verifier::new(key, Some(&tenant), Start::FirstEvent);
    let all_ok = tampered.iter().all(|c| v.event(c));
    assert!(!all_ok || !v.finish().ok(), "an altered event is found");
});
