//! `vern bench check`: Check through the gateway against the bare tonic echo, in
//! alternating rounds (echo, check, echo, check, …) with the same client.

use std::sync::Arc;
use std::time::Duration;

use serde::Serialize;
use tonic::metadata::{Ascii, MetadataValue};
use tonic::transport::Channel;
use vern_kit::config::Config;
use vern_proto::consents::v1 as cpb;

use crate::echo::{EchoServer, pb as epb};
use crate::env::{Backend, Env, Host, TargetArgs};
use crate::load::{self, CallFn, Window, median, percentiles};
use crate::seed::{self, CONSENT_PURPOSE, LI_PURPOSE};

/// Options of `vern bench check`.
#[derive(clap::Args, Debug, Clone)]
pub struct CheckArgs {
    /// Measured time of each round, per side (e.g. 5s, 500ms).
    #[arg(long, default_value = "5s", value_parser = crate::parse_duration)]
    pub duration: Duration,
    /// Calls in flight.
    #[arg(long, default_value_t = 64)]
    pub concurrency: usize,
    /// Subjects to seed.
    #[arg(long, default_value_t = 100_000)]
    pub subjects: usize,
    /// Rounds (pairs of echo and Check windows); the ratio is the median of the pairs.
    #[arg(long, default_value_t = 3)]
    pub rounds: usize,
    /// Unmeasured warm-up of each side before the first round.
    #[arg(long, default_value = "1s", value_parser = crate::parse_duration)]
    pub warmup: Duration,
    /// Measure from a cold Check cache: do not read every seeded subject once (BatchCheck)
    /// before the first round, so the first round's Checks read the database.
    #[arg(long)]
    pub cold: bool,
    #[command(flatten)]
    pub target: TargetArgs,
}

/// The result of `vern bench check`.
#[derive(Debug, Clone, Serialize)]
pub struct CheckReport {
    /// "check".
    pub scenario: &'static str,
    /// Where Check ran.
    pub target: String,
    /// Calls in flight.
    pub concurrency: usize,
    /// HTTP/2 connections.
    pub connections: usize,
    /// Rounds.
    pub rounds: usize,
    /// Measured seconds per round and side.
    pub duration_s: f64,
    /// Subjects seeded.
    pub subjects: usize,
    /// Seconds the seeding took.
    pub seed_s: f64,
    /// Whether every seeded subject was read once before measuring (not `--cold`).
    pub primed: bool,
    /// Check calls per second (median of the rounds).
    pub rps: f64,
    /// Check latency percentiles over all rounds, ms.
    pub p50_ms: f64,
    /// See p50_ms.
    pub p99_ms: f64,
    /// See p50_ms.
    pub p999_ms: f64,
    /// Failed Check calls.
    pub errors: u64,
    /// Echo calls per second (median of the rounds).
    pub baseline_rps: f64,
    /// Echo latency percentiles over all rounds, ms.
    pub baseline_p50_ms: f64,
    /// See baseline_p50_ms.
    pub baseline_p99_ms: f64,
    /// See baseline_p50_ms.
    pub baseline_p999_ms: f64,
    /// Failed echo calls.
    pub baseline_errors: u64,
    /// Check rps / echo rps: the median of the per-round ratios.
    pub ratio: f64,
    /// p99_ms / baseline_p99_ms.
    pub p99_ratio: f64,
    /// Check rps of each round.
    pub round_rps: Vec<f64>,
    /// Echo rps of each round.
    pub round_baseline_rps: Vec<f64>,
    /// Check / echo of each round.
    pub round_ratios: Vec<f64>,
    /// The first error, if any.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub first_error: Option<String>,
}

/// Builds the Check call: random subject, alternating purposes.
pub fn check_call(
    channels: Vec<Channel>,
    token: MetadataValue<Ascii>,
    subjects: Arc<Vec<String>>,
) -> CallFn {
    let clients: Arc<Vec<_>> = Arc::new(
        channels
            .into_iter()
            .map(cpb::consent_service_client::ConsentServiceClient::new)
            .collect(),
    );
    Arc::new(move |worker, rng| {
        let mut client = clients[worker % clients.len()].clone();
        let subject = subjects[(rng % subjects.len() as u64) as usize].clone();
        let purpose = if rng & (1 << 40) == 0 {
            CONSENT_PURPOSE
        } else {
            LI_PURPOSE
        };
        let req = seed::authed(
            cpb::CheckRequest {
                subject_id: subject,
                purpose: purpose.into(),
            },
            &token,
        );
        Box::pin(async move { client.check(req).await.map(|_| ()) })
    })
}

/// Builds the echo call: the same request shape, metadata and client set-up.
pub fn echo_call(
    channels: Vec<Channel>,
    token: MetadataValue<Ascii>,
    subjects: Arc<Vec<String>>,
) -> CallFn {
    let clients: Arc<Vec<_>> = Arc::new(
        channels
            .into_iter()
            .map(epb::echo_service_client::EchoServiceClient::new)
            .collect(),
    );
    Arc::new(move |worker, rng| {
        let mut client = clients[worker % clients.len()].clone();
        let subject = subjects[(rng % subjects.len() as u64) as usize].clone();
        let purpose = if rng & (1 << 40) == 0 {
            CONSENT_PURPOSE
        } else {
            LI_PURPOSE
        };
        let req = seed::authed(
            epb::EchoRequest {
                subject_id: subject,
                purpose: purpose.into(),
            },
            &token,
        );
        Box::pin(async move { client.echo(req).await.map(|_| ()) })
    })
}

/// Reads every seeded subject once through BatchCheck (10,000 a call). The seed's
/// writes invalidated the consents service's Check cache for every subject; a service
/// holding this data fills it at start-up (`warm_check_cache`). Priming measures Check
/// in that steady state rather than in the first pass after a bulk write.
async fn prime(
    ch: &Channel,
    token: &MetadataValue<Ascii>,
    subjects: &[String],
) -> anyhow::Result<()> {
    let mut client = cpb::consent_service_client::ConsentServiceClient::new(ch.clone())
        .max_decoding_message_size(64 * 1024 * 1024)
        .max_encoding_message_size(64 * 1024 * 1024);
    for chunk in subjects.chunks(10_000) {
        client
            .batch_check(seed::authed(
                cpb::BatchCheckRequest {
                    purpose: CONSENT_PURPOSE.into(),
                    subject_ids: chunk.to_vec(),
                },
                token,
            ))
            .await
            .map_err(|s| anyhow::anyhow!("BatchCheck: {:?}: {}", s.code(), s.message()))?;
    }
    Ok(())
}

/// Runs `vern bench check`.
pub async fn run(
    host: &dyn Host,
    config: &Config,
    args: &CheckArgs,
    progress: bool,
) -> anyhow::Result<CheckReport> {
    anyhow::ensure!(args.subjects > 0, "--subjects must be at least 1");
    let env = Env::start(host, config, &args.target, Backend::Sqlite).await?;
    let result = measure(&env, args, progress).await;
    env.stop().await;
    result
}

async fn measure(env: &Env, args: &CheckArgs, progress: bool) -> anyhow::Result<CheckReport> {
    let connections = args.target.connections.max(1);
    let setup = load::connect(&env.url, 1).await?;
    let (seeded, tokens) = seed::check_data(&setup[0], env, args.subjects, progress).await?;
    // Let the audit relay deliver the seed's events before measuring.
    let settle = Duration::from_millis(300 + (seeded.consent_events as u64 / 10).min(2700));
    tokio::time::sleep(settle).await;
    if !args.cold {
        prime(&setup[0], &tokens.crm, &seeded.subjects).await?;
    }

    let echo = EchoServer::start().await?;
    let check = check_call(
        load::connect(&env.url, connections).await?,
        tokens.crm.clone(),
        seeded.subjects.clone(),
    );
    let baseline = echo_call(
        load::connect(&format!("http://{}", echo.addr), connections).await?,
        tokens.crm.clone(),
        seeded.subjects.clone(),
    );

    let rounds = args.rounds.max(1);
    let round_warmup = (args.duration / 10).min(Duration::from_millis(500));
    let mut echo_windows: Vec<Window> = vec![];
    let mut check_windows: Vec<Window> = vec![];
    let b = seed::bar(rounds as u64 * 2, "measuring", progress);
    for r in 0..rounds {
        let first = if r == 0 { args.warmup } else { Duration::ZERO };
        echo_windows.push(
            load::run(
                baseline.clone(),
                args.concurrency,
                first + round_warmup,
                args.duration,
            )
            .await,
        );
        b.inc(1);
        check_windows.push(
            load::run(
                check.clone(),
                args.concurrency,
                first + round_warmup,
                args.duration,
            )
            .await,
        );
        b.inc(1);
    }
    b.finish_and_clear();
    echo.stop().await;

    let round_rps: Vec<f64> = check_windows.iter().map(Window::rps).collect();
    let round_baseline_rps: Vec<f64> = echo_windows.iter().map(Window::rps).collect();
    let round_ratios: Vec<f64> = round_rps
        .iter()
        .zip(&round_baseline_rps)
        .map(|(c, e)| if *e > 0.0 { c / e } else { 0.0 })
        .collect();
    let mut check_lat: Vec<u64> = check_windows
        .iter()
        .flat_map(|w| w.latencies_ns.iter().copied())
        .collect();
    let mut echo_lat: Vec<u64> = echo_windows
        .iter()
        .flat_map(|w| w.latencies_ns.iter().copied())
        .collect();
    let c = percentiles(&mut check_lat);
    let e = percentiles(&mut echo_lat);
    Ok(CheckReport {
        scenario: "check",
        target: env.label.clone(),
        concurrency: args.concurrency,
        connections,
        rounds,
        duration_s: args.duration.as_secs_f64(),
        subjects: seeded.subjects.len(),
        seed_s: seeded.secs,
        primed: !args.cold,
        rps: median(&round_rps),
        p50_ms: c.p50_ms,
        p99_ms: c.p99_ms,
        p999_ms: c.p999_ms,
        errors: check_windows.iter().map(|w| w.errors).sum(),
        baseline_rps: median(&round_baseline_rps),
        baseline_p50_ms: e.p50_ms,
        baseline_p99_ms: e.p99_ms,
        baseline_p999_ms: e.p999_ms,
        baseline_errors: echo_windows.iter().map(|w| w.errors).sum(),
        ratio: median(&round_ratios),
        p99_ratio: if e.p99_ms > 0.0 {
            c.p99_ms / e.p99_ms
        } else {
            0.0
        },
        round_rps,
        round_baseline_rps,
        round_ratios,
        first_error: check_windows
            .iter()
            .chain(&echo_windows)
            .find_map(|w| w.first_error.clone()),
    })
}

/// The report as text.
pub fn text(r: &CheckReport) -> String {
    let list = |v: &[f64]| {
        v.iter()
            .map(|x| format!("{x:.0}"))
            .collect::<Vec<_>>()
            .join(", ")
    };
    let mut s = format!(
        "Check through the gateway ({}), {} in flight over {} HTTP/2 connection(s), {} subjects{}, {} round(s) of {:.1} s\n\
         \n\
         {:<14} {:>10} {:>9} {:>9} {:>9}\n\
         {:<14} {:>10.0} {:>9.3} {:>9.3} {:>9.3}\n\
         {:<14} {:>10.0} {:>9.3} {:>9.3} {:>9.3}\n\
         \n\
         ratio (Check rps / echo rps, median of rounds)  {:.2}   rounds: {}\n\
         p99 ratio (Check p99 / echo p99)                {:.2}\n\
         rounds rps: Check [{}], echo [{}]\n",
        r.target,
        r.concurrency,
        r.connections,
        r.subjects,
        if r.primed {
            " (each read once before)"
        } else {
            " (cold)"
        },
        r.rounds,
        r.duration_s,
        "",
        "req/s",
        "p50 ms",
        "p99 ms",
        "p99.9 ms",
        "Check",
        r.rps,
        r.p50_ms,
        r.p99_ms,
        r.p999_ms,
        "echo baseline",
        r.baseline_rps,
        r.baseline_p50_ms,
        r.baseline_p99_ms,
        r.baseline_p999_ms,
        r.ratio,
        r.round_ratios
            .iter()
            .map(|x| format!("{x:.2}"))
            .collect::<Vec<_>>()
            .join(", "),
        r.p99_ratio,
        list(&r.round_rps),
        list(&r.round_baseline_rps),
    );
    if r.errors + r.baseline_errors > 0 {
        s.push_str(&format!(
            "errors: Check {}, echo {} (first: {})\n",
            r.errors,
            r.baseline_errors,
            r.first_error.as_deref().unwrap_or("?")
        ));
    }
    s
}
