//! Benchmarks of the chain (one core): the chain step (canonical encoding + SHA-256),
//! verification of N events in memory (what VerifyChain and `vern audit verify` do per
//! event), offline verification of a JSON-lines export, and checkpoint signatures.
//!
//! `cargo bench -p vern-audit --bench chain`

use std::hint::black_box;

use criterion::{BatchSize, Criterion, Throughput, criterion_group, criterion_main};
use ed25519_dalek::SigningKey;
use vern_audit::chain::{ChainedEvent, Checkpoint, Event, Start, Verifier, ZERO_HASH, next_hash};
use vern_audit::export::{CheckpointLine, EventLine, rfc3339_micros, verify_export};

const N: usize = 100_000;

/// A realistic event: UUIDs, an RPC name, a trace id; about 300 canonical bytes.
fn event(seq: i64) -> Event {
    Event {
        tenant_id: "kultur-oslo".into(),
        seq,
        event_id: format!("0192f0c1-7a2b-7c3d-8e4f-{seq:012}"),
        occur_micros: 1_767_225_600_000_000 + seq * 1000,
        actor_sub: "crm-sync".into(),
        actor_roles: vec!["service".into()],
        actor_client: "grpc-rust/0.14".into(),
        action: "UpdateSubject".into(),
        service: "subjects".into(),
        subject_id: format!("0192f0c1-0000-7000-8000-{seq:012}"),
        resource_type: "subject".into(),
        resource_id: format!("0192f0c1-0000-7000-8000-{seq:012}"),
        outcome: "SUCCESS".into(),
        status_code: 0,
        changed_fields: vec!["email".into(), "phone".into()],
        request_id: format!("req-{seq}"),
        trace_id: "4bf92f3577b34da6a3ce929d0e0e4736".into(),
        detail: String::new(),
    }
}

fn key() -> SigningKey {
    SigningKey::from_bytes(&[7; 32])
}

fn chain(n: usize) -> (Vec<ChainedEvent>, Vec<Checkpoint>) {
    let mut prev = ZERO_HASH;
    let mut scratch = vec![];
    let mut events = Vec::with_capacity(n);
    let mut cps = vec![];
    for seq in 1..=n as i64 {
        let e = event(seq);
        let hash = next_hash(&prev, &e, &mut scratch);
        events.push(ChainedEvent {
            event: e,
            prev_hash: prev,
            hash,
        });
        if seq % 1000 == 0 {
            cps.push(Checkpoint::sign(&key(), "kultur-oslo", seq, hash, seq));
        }
        prev = hash;
    }
    (events, cps)
}

fn verify_all(events: &[ChainedEvent], cps: &[Checkpoint]) -> u64 {
    let mut v = Verifier::new(
        key().verifying_key(),
        Some("kultur-oslo"),
        Start::FirstEvent,
    );
    let mut cps = cps.iter().peekable();
    for e in events {
        v.event(e);
        while let Some(cp) = cps.next_if(|c| c.seq == e.event.seq) {
            v.checkpoint(cp.clone());
        }
    }
    let s = v.finish();
    assert!(s.ok());
    s.checked
}

fn jsonl(events: &[ChainedEvent], cps: &[Checkpoint]) -> Vec<u8> {
    let mut out = Vec::new();
    let mut cps = cps.iter().peekable();
    for e in events {
        let ev = &e.event;
        let line = EventLine {
            seq: ev.seq,
            tenant_id: ev.tenant_id.clone(),
            event_id: ev.event_id.clone(),
            occur_time: rfc3339_micros(ev.occur_micros),
            actor: vern_audit::export::ActorLine {
                sub: ev.actor_sub.clone(),
                roles: ev.actor_roles.clone(),
                client: ev.actor_client.clone(),
            },
            action: ev.action.clone(),
            service: ev.service.clone(),
            subject_id: ev.subject_id.clone(),
            resource_type: ev.resource_type.clone(),
            resource_id: ev.resource_id.clone(),
            outcome: ev.outcome.clone(),
            status_code: ev.status_code,
            changed_fields: ev.changed_fields.clone(),
            request_id: ev.request_id.clone(),
            trace_id: ev.trace_id.clone(),
            detail: ev.detail.clone(),
            append_time: rfc3339_micros(ev.occur_micros),
            prev_hash: hex::encode(e.prev_hash),
            hash: hex::encode(e.hash),
        };
        serde_json::to_writer(&mut out, &line).expect("json");
        out.push(b'\n');
        while let Some(cp) = cps.next_if(|c| c.seq == ev.seq) {
            serde_json::to_writer(&mut out, &CheckpointLine::from_checkpoint(cp)).expect("json");
            out.push(b'\n');
        }
    }
    out
}

fn benches(c: &mut Criterion) {
    let e = event(42);
    let canonical_len = e.canonical().len();
    let mut g = c.benchmark_group("chain_step");
    g.throughput(Throughput::Elements(1));
    g.bench_function(format!("canonical+sha256 ({canonical_len} bytes)"), |b| {
        let mut scratch = Vec::with_capacity(512);
        b.iter(|| next_hash(black_box(&ZERO_HASH), black_box(&e), &mut scratch))
    });
    g.finish();

    let (events, cps) = chain(N);
    let mut g = c.benchmark_group("verify");
    g.sample_size(20);
    g.throughput(Throughput::Elements(N as u64));
    g.bench_function(format!("in_memory/{N}"), |b| {
        b.iter(|| verify_all(black_box(&events), black_box(&cps)))
    });
    let file = jsonl(&events, &cps);
    g.bench_function(format!("jsonl_export/{N}"), |b| {
        b.iter(|| {
            let r = verify_export(black_box(file.as_slice()), key().verifying_key()).expect("io");
            assert!(r.summary.ok());
            r.summary.checked
        })
    });
    g.finish();

    let mut g = c.benchmark_group("checkpoint");
    let cp = Checkpoint::sign(&key(), "kultur-oslo", 1000, [9; 32], 1);
    g.bench_function("sign", |b| {
        b.iter(|| Checkpoint::sign(&key(), "kultur-oslo", black_box(1000), [9; 32], 1))
    });
    g.bench_function("verify", |b| {
        let k = key().verifying_key();
        b.iter_batched(|| cp.clone(), |cp| cp.verify(&k), BatchSize::SmallInput)
    });
    g.finish();
}

criterion_group!(chain_benches, benches);
criterion_main!(chain_benches);
