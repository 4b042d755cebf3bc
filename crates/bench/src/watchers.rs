//! `vern bench watchers`: what open WatchEvents streams cost another tenant.
//!
//! Tenant A's integration holds `--watchers` WatchEvents streams open (they share the
//! tenant's one feed read); tenant B's integration reads subjects (GetSubject) at
//! `--concurrency` in flight. Rounds alternate a window without watchers and one with
//! them, as the Check ratio does against its echo: the figure is the median of the
//! per-round ratios of GetSubject's p50, with watchers over without.

use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::Context;
use serde::Serialize;
use vern_kit::config::Config;
use vern_proto::rights::v1 as rpb;
use vern_proto::subjects::v1 as spb;

use crate::env::{Env, Host, TargetArgs};
use crate::load::{self, CallFn, median, percentiles};
use crate::scenarios::{DbChoice, backend};
use crate::seed::{self, authed};

/// Options of `vern bench watchers`.
#[derive(clap::Args, Debug, Clone)]
pub struct WatchersArgs {
    /// WatchEvents streams of the watching tenant.
    #[arg(long, default_value_t = 1000)]
    pub watchers: usize,
    /// GetSubject calls in flight of the other tenant.
    #[arg(long, default_value_t = 16)]
    pub concurrency: usize,
    /// Each measured window.
    #[arg(long, default_value = "3s", value_parser = crate::parse_duration)]
    pub duration: Duration,
    /// Rounds (a window without watchers, then one with them).
    #[arg(long, default_value_t = 3)]
    pub rounds: usize,
    /// Subjects of the measured tenant.
    #[arg(long, default_value_t = 1000)]
    pub subjects: usize,
    /// Database of the in-process suite.
    #[arg(long, value_enum, default_value_t = DbChoice::Sqlite)]
    pub backend: DbChoice,
    /// PostgreSQL URL for --backend postgres (default $VERN_TEST_DATABASE_URL).
    #[arg(long)]
    pub database_url: Option<String>,
    #[command(flatten)]
    pub target: TargetArgs,
}

/// Result of `vern bench watchers`.
#[derive(Debug, Clone, Serialize)]
pub struct WatchersReport {
    /// "watchers".
    pub scenario: &'static str,
    /// Where it ran.
    pub target: String,
    /// Database.
    pub backend: DbChoice,
    /// Streams held open in the "with" windows.
    pub watchers: usize,
    /// Streams that were open when each "with" window ended (the smallest of the rounds).
    pub watchers_open: usize,
    /// GetSubject calls in flight.
    pub concurrency: usize,
    /// GetSubject p50 per round without watchers, ms.
    pub p50_without_ms: Vec<f64>,
    /// GetSubject p50 per round with watchers, ms.
    pub p50_with_ms: Vec<f64>,
    /// Median over the rounds of p50 with / p50 without (target < 1.10).
    pub p50_ratio: f64,
    /// GetSubject calls per second, median of the rounds, without and with.
    pub rps_without: f64,
    /// See rps_without.
    pub rps_with: f64,
    /// Failed GetSubject calls.
    pub errors: u64,
    /// The first error, if any.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub first_error: Option<String>,
    /// Streams that failed to open or ended early, over all rounds.
    pub stream_errors: u64,
    /// The first such failure, if any.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub first_stream_error: Option<String>,
}

impl WatchersReport {
    /// As text.
    pub fn text(&self) -> String {
        let list = |v: &[f64]| {
            v.iter()
                .map(|x| format!("{x:.3}"))
                .collect::<Vec<_>>()
                .join(", ")
        };
        let mut s = format!(
            "GetSubject of one tenant ({}) while another holds {} WatchEvents streams ({} open at the end), {} in flight\n\
             p50 without [{}] ms, with [{}] ms\n\
             p50 ratio (with / without, median of rounds)  {:.3}   target < 1.10 {}\n\
             rps without {:.0}, with {:.0}\n",
            self.target,
            self.watchers,
            self.watchers_open,
            self.concurrency,
            list(&self.p50_without_ms),
            list(&self.p50_with_ms),
            self.p50_ratio,
            if self.p50_ratio < 1.10 { "✔" } else { "✘" },
            self.rps_without,
            self.rps_with,
        );
        if self.stream_errors > 0 {
            s.push_str(&format!(
                "streams failed: {} (first: {})\n",
                self.stream_errors,
                self.first_stream_error.as_deref().unwrap_or("?")
            ));
        }
        if self.errors > 0 {
            s.push_str(&format!(
                "errors: {} (first: {})\n",
                self.errors,
                self.first_error.as_deref().unwrap_or("?")
            ));
        }
        s
    }
}

/// Runs `vern bench watchers`.
pub async fn run(
    host: &dyn Host,
    config: &Config,
    args: &WatchersArgs,
    progress: bool,
) -> anyhow::Result<WatchersReport> {
    let be = backend(args.backend, &args.database_url)?;
    // One benchmark client is one token subject: its stream budget must hold them all
    // (with --target, set VERN_SERVER__MAX_STREAMS and _PER_CLIENT on the server).
    let mut config = config.clone();
    config.server.max_streams = config.server.max_streams.max(args.watchers + 64);
    config.server.max_streams_per_client =
        config.server.max_streams_per_client.max(args.watchers + 64);
    let env = Env::start(host, &config, &args.target, be).await?;
    let result = async {
        let setup = load::connect(&env.url, 1).await?.remove(0);
        let (_watched, watching) = seed::tenant(&setup, &env).await?;
        let (_measured, measured) = seed::tenant(&setup, &env).await?;
        // Real subjects of the measured tenant (GetSubject reads them in full).
        let mut ids = Vec::with_capacity(args.subjects.max(1));
        let mut creating = spb::subject_service_client::SubjectServiceClient::new(setup.clone());
        let b = seed::bar(args.subjects.max(1) as u64, "subjects", progress);
        for n in 0..args.subjects.max(1) {
            let created = creating
                .create_subject(authed(
                    spb::CreateSubjectRequest {
                        email: format!("watchers-bench-{n}@example.test"),
                        request_id: format!("watchers-bench-{n}"),
                        ..Default::default()
                    },
                    &measured.crm,
                ))
                .await
                .context("CreateSubject")?;
            ids.push(created.into_inner().subject_id);
            b.inc(1);
        }
        b.finish_and_clear();
        let subjects = ids;
        let clients: Arc<Vec<_>> = Arc::new(
            load::connect(&env.url, args.target.connections.max(1))
                .await?
                .into_iter()
                .map(spb::subject_service_client::SubjectServiceClient::new)
                .collect(),
        );
        let token = measured.crm.clone();
        let subjects = Arc::new(subjects);
        let call: CallFn = Arc::new(move |worker, rng| {
            let mut client = clients[worker % clients.len()].clone();
            let subject = subjects[(rng % subjects.len() as u64) as usize].clone();
            let req = authed(
                spb::GetSubjectRequest {
                    subject_id: subject,
                    ..Default::default()
                },
                &token,
            );
            Box::pin(async move { client.get_subject(req).await.map(|_| ()) })
        });
        // The watchers' own connections (many streams share one HTTP/2 connection).
        let watch_channels = load::connect(&env.url, 8).await?;
        let mut without = vec![];
        let mut with = vec![];
        let mut rps_without = vec![];
        let mut rps_with = vec![];
        let mut ratios = vec![];
        let mut errors = 0;
        let mut first_error = None;
        let mut watchers_open = usize::MAX;
        // Streams that failed to open or ended before the window did: count, first.
        let stream_failures = Arc::new(std::sync::Mutex::new((0u64, None::<String>)));
        let mut stream_errors = 0;
        let mut first_stream_error = None;
        let b = seed::bar(args.rounds.max(1) as u64 * 2, "measuring", progress);
        for _ in 0..args.rounds.max(1) {
            let mut w = load::run(
                call.clone(),
                args.concurrency,
                Duration::from_millis(300),
                args.duration,
            )
            .await;
            b.inc(1);
            let p0 = percentiles(&mut w.latencies_ns).p50_ms;
            errors += w.errors;
            first_error = first_error.or(w.first_error.take());
            rps_without.push(w.rps());

            // Open the watchers; each drains its stream in a task of its own.
            let open = Arc::new(std::sync::atomic::AtomicUsize::new(0));
            let opening = Arc::new(tokio::sync::Semaphore::new(64));
            let mut tasks = tokio::task::JoinSet::new();
            for i in 0..args.watchers {
                let mut client = rpb::rights_service_client::RightsServiceClient::new(
                    watch_channels[i % watch_channels.len()].clone(),
                );
                let req = authed(rpb::WatchEventsRequest::default(), &watching.crm);
                let open = open.clone();
                let failed = stream_failures.clone();
                let opening = opening.clone();
                tasks.spawn(async move {
                    // A client opens its streams a bounded number at a time: each
                    // opening call counts against the per-client calls in progress.
                    let permit = opening.acquire_owned().await;
                    let opened = client.watch_events(req).await;
                    drop(permit);
                    let ended = match opened {
                        Ok(s) => {
                            open.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                            let mut s = s.into_inner();
                            let end = loop {
                                match s.message().await {
                                    Ok(Some(_)) => continue,
                                    Ok(None) => break None,
                                    Err(e) => break Some(e),
                                }
                            };
                            open.fetch_sub(1, std::sync::atomic::Ordering::Relaxed);
                            end
                        }
                        Err(e) => Some(e),
                    };
                    if let (Some(e), Ok(mut f)) = (ended, failed.lock()) {
                        f.0 += 1;
                        f.1.get_or_insert_with(|| format!("{:?}: {}", e.code(), e.message()));
                    }
                });
            }
            // Until they are all open (or 10 s), then a second for them to settle.
            let deadline = Instant::now() + Duration::from_secs(10);
            while open.load(std::sync::atomic::Ordering::Relaxed) < args.watchers
                && Instant::now() < deadline
            {
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
            tokio::time::sleep(Duration::from_secs(1)).await;
            let mut w = load::run(
                call.clone(),
                args.concurrency,
                Duration::from_millis(300),
                args.duration,
            )
            .await;
            b.inc(1);
            watchers_open = watchers_open.min(open.load(std::sync::atomic::Ordering::Relaxed));
            // What failed before this point is a failure; what follows is the abort.
            let (n, first) = stream_failures
                .lock()
                .map(|f| f.clone())
                .unwrap_or_default();
            stream_errors = n;
            first_stream_error = first;
            tasks.abort_all();
            while tasks.join_next().await.is_some() {}
            let p1 = percentiles(&mut w.latencies_ns).p50_ms;
            errors += w.errors;
            first_error = first_error.or(w.first_error.take());
            rps_with.push(w.rps());
            without.push(p0);
            with.push(p1);
            if p0 > 0.0 {
                ratios.push(p1 / p0);
            }
            // The server notices the closed streams before the next round.
            tokio::time::sleep(Duration::from_millis(500)).await;
        }
        b.finish_and_clear();
        Ok(WatchersReport {
            scenario: "watchers",
            target: env.label.clone(),
            backend: args.backend,
            watchers: args.watchers,
            watchers_open: if watchers_open == usize::MAX {
                0
            } else {
                watchers_open
            },
            concurrency: args.concurrency,
            p50_without_ms: without,
            p50_with_ms: with,
            p50_ratio: median(&ratios),
            rps_without: median(&rps_without),
            rps_with: median(&rps_with),
            errors,
            first_error,
            stream_errors,
            first_stream_error,
        })
    }
    .await;
    env.stop().await;
    result
}
