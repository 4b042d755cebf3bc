//! `vern bench console`: how long the console's pages take to render on the server
//! when the department is large: the department overview (`--page overview`, target
//! ≤ 50 ms p95 with 100,000 subjects and 1,000 open requests) and the rights request
//! queue (`--page queue`, target ≤ 100 ms p95 with 10,000 requests).
//!
//! A department with `--subjects` subjects (imported, 1,000 a call) and `--requests`
//! open rights requests; a console in process in front of the suite's gateway, signed
//! in through its development sign-in as the department's privacy officer; then
//! `--renders` GETs of the page one after another (after a warm-up), each timed from the
//! request to the last byte of the page. The page's calls go to the services through
//! the gateway, as deployed, and the run checks what it shows (the overview: the
//! department's subject count; the queue: a full first page of 50 rows), so an empty or
//! failing page cannot pass for a fast one.

use std::sync::Arc;
use std::time::Instant;

use anyhow::Context;
use axum::body::Body;
use http_body_util::BodyExt;
use serde::Serialize;
use tower::ServiceExt;
use vern_kit::config::Config;
use vern_proto::rights::v1 as rpb;
use vern_proto::subjects::v1 as spb;

use crate::env::{Env, Host, TargetArgs};
use crate::load::percentiles;
use crate::scenarios::{DbChoice, backend};
use crate::seed::{self, authed};

/// The page measured.
#[derive(clap::ValueEnum, Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum ConsolePage {
    /// GET /overview.
    Overview,
    /// GET /requests (the first page of the queue).
    Queue,
}

impl ConsolePage {
    fn path(self) -> &'static str {
        match self {
            ConsolePage::Overview => "/overview",
            ConsolePage::Queue => "/requests",
        }
    }

    /// The p95 target, ms.
    fn target_ms(self) -> f64 {
        match self {
            ConsolePage::Overview => 50.0,
            ConsolePage::Queue => 100.0,
        }
    }
}

/// Options of `vern bench console`.
#[derive(clap::Args, Debug, Clone)]
pub struct ConsoleArgs {
    /// The page measured.
    #[arg(long, value_enum, default_value_t = ConsolePage::Overview)]
    pub page: ConsolePage,
    /// Subjects of the department.
    #[arg(long, default_value_t = 100_000)]
    pub subjects: usize,
    /// Open rights requests of the department (default 1,000 for the overview, 10,000
    /// for the queue).
    #[arg(long)]
    pub requests: Option<usize>,
    /// Overview renders measured, one after another.
    #[arg(long, default_value_t = 300)]
    pub renders: usize,
    /// Database of the in-process suite.
    #[arg(long, value_enum, default_value_t = DbChoice::Sqlite)]
    pub backend: DbChoice,
    /// PostgreSQL URL for --backend postgres (default $VERN_TEST_DATABASE_URL).
    #[arg(long)]
    pub database_url: Option<String>,
    #[command(flatten)]
    pub target: TargetArgs,
}

/// Result of `vern bench console`.
#[derive(Debug, Clone, Serialize)]
pub struct ConsoleReport {
    /// "console".
    pub scenario: &'static str,
    /// The page measured.
    pub page: ConsolePage,
    /// Where the suite ran.
    pub target: String,
    /// Database.
    pub backend: DbChoice,
    /// Subjects of the department.
    pub subjects: usize,
    /// Open rights requests of the department.
    pub open_requests: usize,
    /// Renders measured.
    pub renders: usize,
    /// Render time, ms.
    pub p50_ms: f64,
    /// See p50_ms (target ≤ 50 for the overview, ≤ 100 for the queue).
    pub p95_ms: f64,
    /// See p50_ms.
    pub p99_ms: f64,
    /// The slowest render, ms.
    pub max_ms: f64,
    /// Seconds the seeding took.
    pub seed_seconds: f64,
    /// PostgreSQL only: the seeded tables were vacuumed (as autovacuum does) before the
    /// renders.
    pub vacuumed: bool,
}

impl ConsoleReport {
    /// As text.
    pub fn text(&self) -> String {
        format!(
            "GET {} of a department with {} subjects and {} open requests ({}, {:?}), {} renders one after another\n\
             p50 {:.1} ms, p95 {:.1} ms   target ≤ {} {}, p99 {:.1} ms, max {:.1} ms\n\
             (seeding took {:.0} s)\n",
            self.page.path(),
            self.subjects,
            self.open_requests,
            self.target,
            self.backend,
            self.renders,
            self.p50_ms,
            self.p95_ms,
            self.page.target_ms(),
            if self.p95_ms <= self.page.target_ms() {
                "✔"
            } else {
                "✘"
            },
            self.p99_ms,
            self.max_ms,
            self.seed_seconds,
        )
    }
}

/// The session cookie a response sets, if any.
fn cookie_of(resp: &http::Response<Body>) -> Option<String> {
    resp.headers()
        .get(http::header::SET_COOKIE)?
        .to_str()
        .ok()?
        .split(';')
        .next()
        .map(str::to_owned)
}

async fn body(resp: http::Response<Body>) -> anyhow::Result<String> {
    let bytes = resp.into_body().collect().await?.to_bytes();
    Ok(String::from_utf8(bytes.to_vec())?)
}

/// Runs `vern bench console`.
pub async fn run(
    host: &dyn Host,
    config: &Config,
    args: &ConsoleArgs,
    progress: bool,
) -> anyhow::Result<ConsoleReport> {
    let requests = args.requests.unwrap_or(match args.page {
        ConsolePage::Overview => 1000,
        ConsolePage::Queue => 10_000,
    });
    let be = backend(args.backend, &args.database_url)?;
    let env = Env::start(host, config, &args.target, be).await?;
    let result = async {
        let setup = crate::load::connect(&env.url, 1).await?.remove(0);
        let (tenant, tokens) = seed::tenant(&setup, &env).await?;
        let seeding = Instant::now();

        // The department's subjects, 1,000 a call, 4 calls in flight.
        let b = seed::bar(args.subjects as u64, "subjects", progress);
        let permits = Arc::new(tokio::sync::Semaphore::new(4));
        let mut tasks = tokio::task::JoinSet::new();
        let mut first_ids: Vec<String> = vec![];
        for start in (0..args.subjects).step_by(1000) {
            let end = (start + 1000).min(args.subjects);
            let permit = permits.clone().acquire_owned().await?;
            let mut client = spb::subject_service_client::SubjectServiceClient::new(setup.clone());
            let token = tokens.crm.clone();
            tasks.spawn(async move {
                let rows = (start..end)
                    .map(|n| spb::CreateSubjectRequest {
                        email: format!("console-bench-{n}@example.test"),
                        request_id: format!("console-bench-{n}"),
                        ..Default::default()
                    })
                    .collect();
                let r = client
                    .import_subjects(authed(
                        spb::ImportSubjectsRequest { subjects: rows },
                        &token,
                    ))
                    .await;
                drop(permit);
                r.map(|r| r.into_inner())
                    .map_err(|s| anyhow::anyhow!("ImportSubjects: {:?}: {}", s.code(), s.message()))
            });
            while let Some(done) = tasks.try_join_next() {
                let done = done??;
                b.inc(done.results.len() as u64);
                first_ids.extend(done.results.into_iter().map(|r| r.subject_id));
            }
        }
        while let Some(done) = tasks.join_next().await {
            let done = done??;
            b.inc(done.results.len() as u64);
            first_ids.extend(done.results.into_iter().map(|r| r.subject_id));
        }
        b.finish_and_clear();
        first_ids.retain(|id| !id.is_empty());
        anyhow::ensure!(
            first_ids.len() >= requests,
            "{} subjects created, {} requests asked",
            first_ids.len(),
            requests
        );

        // Open access requests, one per subject, 8 in flight.
        let officer = crate::env::bearer(&env.token(&["privacy-officer"], Some(&tenant))?)?;
        let b = seed::bar(requests as u64, "requests", progress);
        let permits = Arc::new(tokio::sync::Semaphore::new(8));
        for (n, subject) in first_ids.iter().take(requests).enumerate() {
            let permit = permits.clone().acquire_owned().await?;
            let mut client = rpb::rights_service_client::RightsServiceClient::new(setup.clone());
            let req = authed(
                rpb::SubmitRequestRequest {
                    r#type: rpb::RequestType::Access as i32,
                    requester: Some(rpb::submit_request_request::Requester::SubjectId(
                        subject.clone(),
                    )),
                    channel: rpb::RequestChannel::Email as i32,
                    request_id: format!("console-bench-request-{n}"),
                    ..Default::default()
                },
                &officer,
            );
            tasks.spawn(async move {
                let r = client.submit_request(req).await;
                drop(permit);
                r.map(|_| vern_proto::subjects::v1::ImportSubjectsResponse::default())
                    .map_err(|s| anyhow::anyhow!("SubmitRequest: {:?}: {}", s.code(), s.message()))
            });
            while let Some(done) = tasks.try_join_next() {
                done??;
                b.inc(1);
            }
        }
        while let Some(done) = tasks.join_next().await {
            done??;
            b.inc(1);
        }
        b.finish_and_clear();
        let seed_seconds = seeding.elapsed().as_secs_f64();
        // A department grows over months; autovacuum has long run by then.
        let vacuumed = env.vacuum(&["subjects", "rights"]).await?;

        // The console in front of the gateway, signed in as the privacy officer.
        let dir = tempfile::tempdir()?;
        let sessions = vern_console::sessions::Sessions::open(
            &vern_kit::db::DbTarget::for_service(None, dir.path(), "console"),
        )
        .await
        .context("the console's session store")?;
        let gateway = tonic::transport::Endpoint::from_shared(env.url.clone())?.connect_lazy();
        let console = vern_console::Console::new(vern_console::Settings {
            tls: false,
            dev_sign_in: Some(env.dev_sign_in()),
            gateway: Some(gateway),
            oidc: None,
        })?;
        let app = vern_console::router(console, sessions);
        let resp = app
            .clone()
            .oneshot(http::Request::get("/").body(Body::empty())?)
            .await?;
        let cookie = cookie_of(&resp).context("the sign-in page set no session cookie")?;
        let page = body(resp).await?;
        let csrf = page
            .split("name=\"csrf\" value=\"")
            .nth(1)
            .and_then(|s| s.split('"').next())
            .context("no CSRF token on the sign-in page")?
            .to_owned();
        let resp = app
            .clone()
            .oneshot(
                http::Request::post("/dev/sign-in")
                    .header(http::header::COOKIE, &cookie)
                    .header("sec-fetch-site", "same-origin")
                    .header(
                        http::header::CONTENT_TYPE,
                        "application/x-www-form-urlencoded",
                    )
                    .body(Body::from(format!(
                        "csrf={csrf}&department={tenant}&role=privacy-officer"
                    )))?,
            )
            .await?;
        anyhow::ensure!(
            resp.status() == http::StatusCode::SEE_OTHER,
            "the development sign-in answered {}",
            resp.status()
        );
        let cookie = cookie_of(&resp).unwrap_or(cookie);

        let render = |app: axum::Router, cookie: String| async move {
            let started = Instant::now();
            let resp = app
                .oneshot(
                    http::Request::get(args.page.path())
                        .header(http::header::COOKIE, cookie)
                        .body(Body::empty())?,
                )
                .await?;
            let status = resp.status();
            let page = body(resp).await?;
            Ok::<_, anyhow::Error>((started.elapsed(), status, page))
        };
        // The page must show the department's figures, not a refusal or an empty frame.
        let (_, status, page) = render(app.clone(), cookie.clone()).await?;
        anyhow::ensure!(
            status == http::StatusCode::OK,
            "GET {}: {status}",
            args.page.path()
        );
        anyhow::ensure!(
            !page.contains("role=\"alert\""),
            "the page shows a problem: {page}"
        );
        match args.page {
            ConsolePage::Overview => {
                let active = format!("<dd>{}</dd>", args.subjects);
                anyhow::ensure!(
                    page.contains(&active),
                    "the overview does not show {} active subjects: {page}",
                    args.subjects
                );
            }
            ConsolePage::Queue => {
                let rows = page.matches("<tr><td>").count();
                let full = (vern_console::queue::PAGE_SIZE as usize).min(requests);
                anyhow::ensure!(
                    rows == full,
                    "the queue shows {rows} rows, not {full}: {page}"
                );
            }
        }
        for _ in 0..20 {
            render(app.clone(), cookie.clone()).await?;
        }
        let b = seed::bar(args.renders as u64, "rendering", progress);
        let mut latencies = Vec::with_capacity(args.renders);
        for _ in 0..args.renders.max(1) {
            let (took, status, _) = render(app.clone(), cookie.clone()).await?;
            anyhow::ensure!(
                status == http::StatusCode::OK,
                "GET {}: {status}",
                args.page.path()
            );
            latencies.push(u64::try_from(took.as_nanos()).unwrap_or(u64::MAX));
            b.inc(1);
        }
        b.finish_and_clear();
        let p = percentiles(&mut latencies);
        // The nearest-rank 95th percentile (the shared helper reports 50, 99 and 99.9).
        latencies.sort_unstable();
        let rank = (latencies.len() * 95).div_ceil(100).max(1) - 1;
        let p95_ms = latencies.get(rank).copied().unwrap_or_default() as f64 / 1e6;
        Ok::<_, anyhow::Error>(ConsoleReport {
            scenario: "console",
            page: args.page,
            target: env.label.clone(),
            backend: args.backend,
            subjects: args.subjects,
            open_requests: requests,
            renders: args.renders.max(1),
            p50_ms: p.p50_ms,
            p95_ms,
            p99_ms: p.p99_ms,
            max_ms: p.max_ms,
            seed_seconds,
            vacuumed,
        })
    }
    .await;
    env.stop().await;
    result
}
