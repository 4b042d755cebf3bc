//! `vern audit …`: export a tenant's chain as JSON lines, verify an export offline
//! (reading the file only, with the chain code of `vern-audit`), follow new events,
//! and print the checkpoint public key.
//!
//! Dev tokens minted for these commands default to the `auditor` role (the
//! `integration` default of the other client commands cannot read the audit trail).

use std::io::{BufRead, BufWriter, Write};
use std::path::PathBuf;

use anyhow::Context;
use vern_audit::chain::FailureKind;
use vern_audit::export::{CheckpointLine, EventLine, rfc3339_micros};
use vern_kit::config::Config;
use vern_proto::audit::v1 as pb;

use crate::remote::{Client, ClientArgs};

/// `vern audit export`.
#[derive(clap::Args, Debug)]
pub struct ExportArgs {
    /// The file to write (JSON lines: one event per line, each checkpoint after the event
    /// it covers).
    #[arg(long)]
    pub out: PathBuf,
    /// First seq to export (default: the start of the chain).
    #[arg(long, default_value_t = 0)]
    pub from_seq: i64,
    /// Last seq to export (default: the head when the export starts).
    #[arg(long, default_value_t = 0)]
    pub to_seq: i64,
    #[command(flatten)]
    pub client: ClientArgs,
}

/// `vern audit verify`.
#[derive(clap::Args, Debug)]
pub struct VerifyArgs {
    /// The export to verify.
    #[arg(long)]
    pub file: PathBuf,
    /// A checkpoint public key: 64 hex characters (`vern audit public-key`) or a file
    /// holding them. Repeat it for every key the export's checkpoints were signed with
    /// (the current key and the keys retired by rotations); each checkpoint is checked
    /// with the key its key id names.
    #[arg(long, required = true)]
    pub public_key: Vec<String>,
}

/// `vern audit tail`.
#[derive(clap::Args, Debug)]
pub struct TailArgs {
    /// Start at this seq (default: at the latest checkpoint, or the start of the chain).
    #[arg(long, default_value_t = 0)]
    pub from_seq: i64,
    #[command(flatten)]
    pub client: ClientArgs,
}

/// `vern audit public-key`.
#[derive(clap::Args, Debug)]
pub struct PublicKeyArgs {
    /// Data directory holding the dev key `audit-signing.key` (as given to `vern dev`);
    /// `VERN_AUDIT_SIGNING_KEY_FILE` takes precedence.
    #[arg(long)]
    pub data_dir: Option<PathBuf>,
}

/// Connects with a dev token of the auditor role unless a role or token was given.
async fn connect(config: &Config, args: &ClientArgs) -> anyhow::Result<Client> {
    let mut args = args.clone();
    if args.token.is_none() && args.role == "integration" {
        args.role = "auditor".into();
    }
    Client::connect(&args, config).await
}

fn status_error(s: tonic::Status) -> anyhow::Error {
    anyhow::anyhow!("{:?}: {}", s.code(), s.message())
}

/// Writes the caller's tenant chain to `--out` as JSON lines, with progress on stderr.
pub async fn export(config: &Config, args: ExportArgs) -> anyhow::Result<()> {
    let c = connect(config, &args.client).await?;
    let mut audit = pb::audit_service_client::AuditServiceClient::new(c.channel.clone())
        .max_decoding_message_size(config.server.max_message_bytes);
    let mut stream = audit
        .export_events(c.request(pb::ExportEventsRequest {
            from_seq: args.from_seq,
            to_seq: args.to_seq,
            follow: false,
        }))
        .await
        .map_err(status_error)?
        .into_inner();
    let file = std::fs::File::create(&args.out)
        .with_context(|| format!("creating {}", args.out.display()))?;
    let mut out = BufWriter::new(file);
    let (mut events, mut checkpoints, mut first, mut last) = (0u64, 0u64, 0, 0);
    while let Some(msg) = stream.message().await.map_err(status_error)? {
        match msg.item {
            Some(pb::export_events_response::Item::Event(e)) => {
                if events == 0 {
                    first = e.seq;
                }
                last = e.seq;
                events += 1;
                serde_json::to_writer(&mut out, &EventLine::from_pb(&e))?;
                if events.is_multiple_of(10_000) {
                    eprint!("\rexported {events} events (seq {last})");
                }
            }
            Some(pb::export_events_response::Item::Checkpoint(cp)) => {
                checkpoints += 1;
                serde_json::to_writer(&mut out, &CheckpointLine::from_pb(&cp))?;
            }
            None => continue,
        }
        out.write_all(b"\n")?;
    }
    out.flush()?;
    out.get_ref().sync_all()?;
    if events >= 10_000 {
        eprintln!();
    }
    eprintln!(
        "exported {events} events (seq {first}..{last}) and {checkpoints} checkpoints to {}",
        args.out.display()
    );
    Ok(())
}

/// Verifies an export offline: recomputes every hash, checks every link and every
/// checkpoint's signature and head. Prints `ok …` or where and why it failed; a
/// failure is an error (exit code 1).
pub fn verify(args: VerifyArgs) -> anyhow::Result<()> {
    let mut keys = vern_audit::chain::KeySet::default();
    for (i, value) in args.public_key.iter().enumerate() {
        keys.insert(vern_audit::keys::load_public_key(
            value,
            &format!("--public-key #{}", i + 1),
        )?);
    }
    let file = std::fs::File::open(&args.file)
        .with_context(|| format!("opening {}", args.file.display()))?;
    let reader: Box<dyn BufRead> = Box::new(std::io::BufReader::with_capacity(1 << 20, file));
    let report = vern_audit::export::verify_export(reader, keys.clone())
        .with_context(|| format!("reading {}", args.file.display()))?;
    let s = &report.summary;
    let tenant = report.tenant_id.as_deref().unwrap_or("?");
    if let Some(f) = &s.failure {
        println!("FAILED at seq {}: {}: {}", f.seq, f.kind.as_str(), f.reason);
        if s.checked > 0 {
            println!(
                "verified before it: {} events of tenant {tenant} (seq {}..{}), {} checkpoints",
                s.checked, s.first_seq, s.last_seq, s.checkpoints
            );
        }
        if matches!(f.kind, FailureKind::BadSignature | FailureKind::UnknownKey) {
            println!("the keys given have ids {}", keys.ids().join(", "));
        }
        anyhow::bail!(
            "the export does not verify (first bad seq {}: {}: {})",
            f.seq,
            f.kind.as_str(),
            f.reason
        );
    }
    if s.checked == 0 {
        anyhow::bail!("the export holds no events");
    }
    println!(
        "ok: {} events of tenant {tenant} (seq {}..{}), {} checkpoints verified; head {}",
        s.checked,
        s.first_seq,
        s.last_seq,
        s.checkpoints,
        hex::encode(s.head_hash)
    );
    if s.first_seq > 1 {
        println!(
            "note: a partial export: seq {} was checked against the hash it names for seq {}",
            s.first_seq,
            s.first_seq - 1
        );
    }
    match &s.checkpoint {
        Some(cp) if cp.seq < s.last_seq => println!(
            "note: seq {}..{} follow the last signed checkpoint (seq {}, {}): their order and content verify, but no signature covers them yet",
            cp.seq + 1,
            s.last_seq,
            cp.seq,
            rfc3339_micros(cp.checkpoint_micros)
        ),
        Some(_) => {}
        None => println!("note: no signed checkpoint covers this export"),
    }
    Ok(())
}

/// Follows new events of the caller's tenant, one line each (ids and names only).
pub async fn tail(config: &Config, args: TailArgs) -> anyhow::Result<()> {
    let c = connect(config, &args.client).await?;
    let mut audit = pb::audit_service_client::AuditServiceClient::new(c.channel.clone());
    let from_seq = if args.from_seq > 0 {
        args.from_seq
    } else {
        match audit
            .get_checkpoint(c.request(pb::GetCheckpointRequest { seq: 0 }))
            .await
        {
            Ok(cp) => cp.into_inner().seq,
            Err(s) if s.code() == tonic::Code::NotFound => 1,
            Err(s) => return Err(status_error(s)),
        }
    };
    // A server ends a stream at its longest lifetime (server.max_stream_seconds) or
    // when it shuts down, with UNAVAILABLE: open it again after the last event seen.
    let mut next = from_seq;
    let stdout = std::io::stdout();
    loop {
        let mut stream = audit
            .export_events(c.request(pb::ExportEventsRequest {
                from_seq: next,
                to_seq: 0,
                follow: true,
            }))
            .await
            .map_err(status_error)?
            .into_inner();
        let ended = loop {
            let msg = match stream.message().await {
                Ok(Some(msg)) => msg,
                Ok(None) => break None,
                Err(s) => break Some(s),
            };
            let line = match msg.item {
                Some(pb::export_events_response::Item::Event(e)) => {
                    next = next.max(e.seq + 1);
                    tail_line(&e)
                }
                Some(pb::export_events_response::Item::Checkpoint(cp)) => format!(
                    "{:>8} checkpoint  head {}  key {}",
                    cp.seq,
                    hex::encode(&cp.head_hash),
                    cp.key_id
                ),
                None => continue,
            };
            let mut out = stdout.lock();
            writeln!(out, "{line}")?;
            out.flush()?;
        };
        match ended {
            None => return Ok(()),
            Some(s) if s.code() == tonic::Code::Unavailable => {
                eprintln!("the stream ended ({}); resuming at seq {next}", s.message());
                tokio::time::sleep(std::time::Duration::from_millis(500)).await;
            }
            Some(s) => return Err(status_error(s)),
        }
    }
}

/// One event as a line: seq, time, service/action, outcome, actor, target.
pub fn tail_line(e: &pb::AuditEvent) -> String {
    let l = EventLine::from_pb(e);
    let mut line = format!(
        "{:>8} {} {}/{} {}",
        l.seq, l.occur_time, l.service, l.action, l.outcome
    );
    if l.status_code != 0 {
        line.push_str(&format!("({})", l.status_code));
    }
    line.push_str(&format!(" actor={}", l.actor.sub));
    if !l.resource_id.is_empty() {
        line.push_str(&format!(" {}={}", l.resource_type, l.resource_id));
    }
    if !l.subject_id.is_empty() && l.subject_id != l.resource_id {
        line.push_str(&format!(" subject={}", l.subject_id));
    }
    if !l.changed_fields.is_empty() {
        line.push_str(&format!(" changed={}", l.changed_fields.join(",")));
    }
    line
}

/// Prints the checkpoint public key (hex) on stdout and its key id on stderr.
pub fn public_key(config: &Config, args: PublicKeyArgs) -> anyhow::Result<()> {
    let mut config = config.clone();
    if let Some(d) = args.data_dir {
        config.data_dir = d;
    }
    let signer = vern_audit::keys::AuditSigner::from_config(&config, false)?;
    println!("{}", signer.public_key_hex());
    eprintln!("key_id {}", signer.key_id());
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use vern_audit::chain::{ChainedEvent, Checkpoint, Event, ZERO_HASH, next_hash};
    use vern_audit::keys::AuditSigner;

    /// An export of 4 events with checkpoints at seq 2 (signed by `signers[0]`) and 4 (by
    /// the last of `signers`).
    fn export_file(name: &str, signers: &[&AuditSigner], edit: bool) -> PathBuf {
        let mut prev = ZERO_HASH;
        let mut lines = vec![];
        for seq in 1..=4 {
            let event = Event {
                tenant_id: "kultur".into(),
                seq,
                event_id: format!("0192f0c1-7a2b-7c3d-8e4f-{seq:012}"),
                occur_micros: 1_767_225_600_000_000 + seq,
                actor_sub: "crm".into(),
                action: "CreateSubject".into(),
                service: "subjects".into(),
                outcome: "SUCCESS".into(),
                ..Default::default()
            };
            let hash = next_hash(&prev, &event, &mut vec![]);
            let e = ChainedEvent {
                event,
                prev_hash: prev,
                hash,
            };
            let mut pb_event = pb::AuditEvent {
                event_id: e.event.event_id.clone(),
                tenant_id: e.event.tenant_id.clone(),
                seq,
                actor: Some(pb::Actor {
                    sub: e.event.actor_sub.clone(),
                    ..Default::default()
                }),
                action: e.event.action.clone(),
                service: e.event.service.clone(),
                outcome: pb::Outcome::Success as i32,
                occur_time: Some(prost_types::Timestamp {
                    seconds: 1_767_225_600,
                    nanos: seq as i32 * 1000,
                }),
                prev_hash: e.prev_hash.to_vec(),
                hash: e.hash.to_vec(),
                ..Default::default()
            };
            if edit && seq == 2 {
                pb_event.action = "EraseSubject".into();
            }
            lines.push(serde_json::to_string(&EventLine::from_pb(&pb_event)).expect("json"));
            prev = hash;
            let signer = match seq {
                2 => signers.first(),
                4 => signers.last(),
                _ => None,
            };
            if let Some(signer) = signer {
                let cp = Checkpoint::sign(signer.signing_key(), "kultur", seq, prev, seq);
                lines.push(
                    serde_json::to_string(&CheckpointLine::from_checkpoint(&cp)).expect("json"),
                );
            }
        }
        let path =
            std::env::temp_dir().join(format!("vern-audit-{}-{name}.jsonl", std::process::id()));
        std::fs::write(&path, lines.join("\n") + "\n").expect("write");
        path
    }

    #[test]
    fn verify_accepts_an_intact_export_and_fails_on_an_edit() {
        let signer = AuditSigner::from_seed([4; 32]);
        let good = export_file("good", &[&signer], false);
        let bad = export_file("bad", &[&signer], true);
        let args = |file: &PathBuf, key: String| VerifyArgs {
            file: file.clone(),
            public_key: vec![key],
        };
        assert!(verify(args(&good, signer.public_key_hex())).is_ok());
        let e = verify(args(&bad, signer.public_key_hex())).expect_err("edited");
        assert!(e.to_string().contains("first bad seq 2"), "{e}");
        let other = AuditSigner::from_seed([5; 32]).public_key_hex();
        assert!(verify(args(&good, other)).is_err(), "wrong key");
        assert!(verify(args(&good, "nothex".into())).is_err());
        let _ = std::fs::remove_file(good);
        let _ = std::fs::remove_file(bad);
    }

    /// An export whose checkpoints were signed before and after a key rotation verifies
    /// with both public keys (inline or in files) and fails, naming the old key's id,
    /// without it.
    #[test]
    fn verify_takes_the_keys_of_a_rotation() {
        let (old, new) = (
            AuditSigner::from_seed([6; 32]),
            AuditSigner::from_seed([7; 32]),
        );
        let file = export_file("rotated", &[&old, &new], false);
        let old_key =
            std::env::temp_dir().join(format!("vern-audit-{}-old.hex", std::process::id()));
        std::fs::write(&old_key, old.public_key_hex() + "\n").expect("write");
        let args = |keys: Vec<String>| VerifyArgs {
            file: file.clone(),
            public_key: keys,
        };
        verify(args(vec![
            new.public_key_hex(),
            old_key.to_string_lossy().into_owned(),
        ]))
        .expect("both keys");
        let e = verify(args(vec![new.public_key_hex()])).expect_err("old key missing");
        let text = e.to_string();
        assert!(text.contains("first bad seq 2: unknown key"), "{text}");
        assert!(
            text.contains(old.key_id()),
            "names the missing key id: {text}"
        );
        let e = verify(args(vec!["/no/such/key.hex".into()])).expect_err("no file");
        assert!(e.to_string().contains("--public-key #1"), "{e}");
        let _ = std::fs::remove_file(file);
        let _ = std::fs::remove_file(old_key);
    }

    #[test]
    fn tail_lines_carry_ids_and_names_only() {
        let line = tail_line(&pb::AuditEvent {
            seq: 7,
            action: "UpdateSubject".into(),
            service: "subjects".into(),
            resource_type: "subject".into(),
            resource_id: "s-1".into(),
            subject_id: "s-1".into(),
            outcome: pb::Outcome::Denied as i32,
            status_code: 7,
            changed_fields: vec!["email".into()],
            actor: Some(pb::Actor {
                sub: "crm".into(),
                ..Default::default()
            }),
            ..Default::default()
        });
        assert!(
            line.contains("subjects/UpdateSubject DENIED(7) actor=crm subject=s-1 changed=email"),
            "{line}"
        );
    }
}
