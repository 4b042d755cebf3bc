//! Shared harness of the reliability tests of the `vern` binary: start `vern dev` as a
//! child process (SQLite in a temp dir, or PostgreSQL through `VERN_DATABASE_URL` with a
//! schema prefix of its own), mint tokens from its dev key, drive a write load, kill it,
//! restart it and check what it acknowledged.
//!
//! Every wait here has a deadline, and every address is loopback.

#![allow(dead_code)]

use std::collections::{HashMap, HashSet};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use tonic::Code;
use tonic::transport::Channel;
use vern_proto::audit::v1 as apb;
use vern_proto::common::v1::{DataCategory, LegalBasis};
use vern_proto::consents::v1 as cpb;
use vern_proto::rights::v1 as rpb;
use vern_proto::subjects::v1 as spb;
use vern_proto::tenants::v1 as tpb;

/// The tenant every reliability test works in.
pub const TENANT: &str = "kultur";
/// The consent purpose of the load.
pub const PURPOSE: &str = "newsletter";

/// The standard output of a successful command; fails the test with its stderr
/// otherwise.
pub fn stdout(o: &std::process::Output) -> String {
    assert!(
        o.status.success(),
        "{:?}: {}",
        o.status,
        String::from_utf8_lossy(&o.stderr)
    );
    String::from_utf8_lossy(&o.stdout).into_owned()
}

/// A free loopback port (bound, then released for the child to take).
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .expect("bind")
        .local_addr()
        .expect("addr")
        .port()
}

/// A `vern dev` child process.
pub struct Vern {
    /// The child.
    pub child: Child,
    /// Its gateway port.
    pub port: u16,
    /// Its data directory (dev keys; SQLite files unless PostgreSQL is configured).
    pub dir: PathBuf,
    env: Vec<(String, String)>,
}

impl Vern {
    /// Starts `vern dev` on `dir` with extra environment (`VERN_*` configuration) and
    /// waits until health answers SERVING (20 s at most).
    pub async fn start(dir: &Path, env: &[(&str, String)]) -> (Vern, Channel) {
        let env: Vec<(String, String)> = env
            .iter()
            .map(|(k, v)| ((*k).to_owned(), v.clone()))
            .collect();
        let port = free_port();
        let child = spawn(dir, port, &env);
        let mut vern = Vern {
            child,
            port,
            dir: dir.to_path_buf(),
            env,
        };
        let ch = vern.ready().await;
        (vern, ch)
    }

    /// Starts it again on the same data (a new port), after a kill or an exit.
    pub async fn restart(&mut self) -> Channel {
        self.port = free_port();
        self.child = spawn(&self.dir, self.port, &self.env);
        self.ready().await
    }

    async fn ready(&mut self) -> Channel {
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            if let Ok(Some(status)) = self.child.try_wait() {
                panic!("vern dev exited during start-up: {status}");
            }
            if let Ok(ch) = Channel::from_shared(self.url())
                .expect("uri")
                .connect_timeout(Duration::from_secs(1))
                .connect()
                .await
            {
                let mut health = tonic_health::pb::health_client::HealthClient::new(ch.clone());
                if let Ok(r) = health
                    .check(tonic_health::pb::HealthCheckRequest {
                        service: String::new(),
                    })
                    .await
                    && r.into_inner().status
                        == tonic_health::pb::health_check_response::ServingStatus::Serving as i32
                {
                    return ch;
                }
            }
            assert!(Instant::now() < deadline, "vern dev did not become ready");
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// `http://127.0.0.1:<port>`.
    pub fn url(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    /// SIGKILL, and reap the child.
    pub fn kill9(&mut self) {
        self.child.kill().expect("kill -9");
        let _ = self.child.wait();
    }

    /// Sends SIGTERM (through kill(1): the workspace forbids unsafe code).
    pub fn sigterm(&self) {
        let status = Command::new("kill")
            .args(["-TERM", &self.child.id().to_string()])
            .status()
            .expect("kill -TERM");
        assert!(status.success(), "kill -TERM failed");
    }

    /// Resident set size of the child, KiB (from /proc).
    pub fn rss_kib(&self) -> u64 {
        let status = std::fs::read_to_string(format!("/proc/{}/status", self.child.id()))
            .expect("/proc status");
        status
            .lines()
            .find_map(|l| l.strip_prefix("VmRSS:"))
            .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
            .expect("VmRSS")
    }

    /// A token for `role` in [`TENANT`], signed with this data dir's dev key.
    pub fn token(&self, role: &str) -> String {
        token(&self.dir, role)
    }
}

impl Drop for Vern {
    fn drop(&mut self) {
        // Never leave a child behind when a test fails half-way.
        if let Ok(None) = self.child.try_wait() {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

fn spawn(dir: &Path, port: u16, env: &[(String, String)]) -> Child {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_vern"));
    cmd.args(["dev", "--data-dir"])
        .arg(dir)
        .args(["--listen", &format!("127.0.0.1:{port}")])
        // Tests run side by side: the console on a port of its own each.
        .args(["--console-listen", "127.0.0.1:0"])
        .env("RUST_LOG", "error")
        .stdout(Stdio::null())
        .stderr(Stdio::null());
    for (k, v) in env {
        cmd.env(k, v);
    }
    cmd.spawn().expect("vern dev starts")
}

/// A token for `role` in [`TENANT`] signed with the dev key in `data_dir`.
pub fn token(data_dir: &Path, role: &str) -> String {
    let secret =
        std::fs::read_to_string(data_dir.join(vern_kit::auth::DEV_KEY_FILE)).expect("dev key");
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .expect("time")
        .as_secs() as i64;
    let tenant = if role == "platform-admin" {
        vec![]
    } else {
        vec![TENANT.to_owned()]
    };
    vern_kit::auth::sign_hs256(
        &vern_kit::auth::Claims {
            sub: format!("reliability-{role}"),
            tenant,
            roles: vec![role.into()],
            iss: "vern-dev".into(),
            aud: "vern".into(),
            exp: now + 600,
            nbf: now,
            iat: now,
        },
        secret.trim().as_bytes(),
    )
    .expect("sign")
}

/// Wraps `msg` with `token` and a deadline.
pub fn authed<T>(msg: T, token: &str) -> tonic::Request<T> {
    let mut r = tonic::Request::new(msg);
    r.metadata_mut().insert(
        "authorization",
        format!("Bearer {token}").parse().expect("metadata"),
    );
    r.set_timeout(Duration::from_secs(10));
    r
}

/// PostgreSQL for a `vern dev` child: the `VERN_*` environment and the schemas to drop
/// afterwards. `None` when no test database is configured (and it is not required).
pub fn postgres_env(
    url_override: Option<String>,
) -> Option<(Vec<(&'static str, String)>, PgCleanup)> {
    // An unset or empty URL skips, unless CI requires PostgreSQL (then it fails).
    let Some(url) = vern_kit::testing::pg_url() else {
        eprintln!("skipping PostgreSQL reliability test: no URL");
        return None;
    };
    let prefix = format!("rel_{}", uuid_like());
    let mut schemas: Vec<String> = vern_cli::SERVICES
        .iter()
        .map(|s| format!("{prefix}_{s}"))
        .collect();
    schemas.push(format!("{prefix}_subject_keys"));
    let env = vec![
        (
            "VERN_DATABASE_URL",
            url_override.unwrap_or_else(|| url.clone()),
        ),
        ("VERN_DATABASE_SCHEMA_PREFIX", prefix),
    ];
    Some((env, PgCleanup { url, schemas }))
}

/// The schemas a PostgreSQL test created.
pub struct PgCleanup {
    /// The real database URL.
    pub url: String,
    schemas: Vec<String>,
}

impl PgCleanup {
    /// Drops the schemas.
    pub async fn run(self) {
        vern_kit::testing::drop_schemas(&self.url, &self.schemas).await;
    }
}

fn uuid_like() -> String {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .expect("time")
        .as_nanos();
    format!("{:x}{:x}", nanos, std::process::id())
}

/// Creates [`TENANT`], the consent purpose [`PURPOSE`] and `subjects` subjects; returns
/// their ids.
pub async fn setup(ch: &Channel, vern: &Vern, subjects: usize) -> Vec<String> {
    let admin = vern.token("platform-admin");
    let mut tenants = tpb::tenant_service_client::TenantServiceClient::new(ch.clone());
    tenants
        .create_tenant(authed(
            tpb::CreateTenantRequest {
                tenant_id: TENANT.into(),
                name: "Oslo Kulturfabrikk".into(),
                org_number: "989990748".into(),
                dpo_email: "dpo@kultur.example".into(),
                request_id: "setup-tenant".into(),
                ..Default::default()
            },
            &admin,
        ))
        .await
        .expect("tenant");
    tenants
        .create_purpose(authed(
            tpb::CreatePurposeRequest {
                key: PURPOSE.into(),
                description: "Nyhetsbrev".into(),
                legal_basis: LegalBasis::Consent as i32,
                data_categories: vec![DataCategory::Contact as i32],
                direct_marketing: true,
                request_id: "setup-purpose".into(),
                ..Default::default()
            },
            &vern.token("tenant-admin"),
        ))
        .await
        .expect("purpose");
    let crm = vern.token("integration");
    let mut client = spb::subject_service_client::SubjectServiceClient::new(ch.clone());
    let mut ids = vec![];
    for i in 0..subjects {
        let s = client
            .create_subject(authed(
                spb::CreateSubjectRequest {
                    email: format!("setup{i}@example.no"),
                    request_id: format!("setup-subject-{i}"),
                    ..Default::default()
                },
                &crm,
            ))
            .await
            .expect("subject")
            .into_inner();
        ids.push(s.subject_id);
    }
    ids
}

/// One acknowledged write: its request and the answer.
#[derive(Debug, Clone)]
pub enum Acked {
    /// RecordConsent.
    Consent(cpb::RecordConsentRequest, cpb::ConsentEvent),
    /// CreateSubject.
    Subject(spb::CreateSubjectRequest, spb::Subject),
    /// RightsService.SubmitRequest.
    Rights(rpb::SubmitRequestRequest, Box<rpb::SubmitRequestResponse>),
}

/// What a load saw.
#[derive(Debug, Default)]
pub struct LoadResult {
    /// Acknowledged writes.
    pub acked: Vec<Acked>,
    /// Calls that failed while the server was meant to be up, with their code.
    pub unexpected: Vec<(String, Code)>,
    /// Codes of all failed calls.
    pub failures: HashMap<Code, usize>,
    /// Failed calls: their code and request_id.
    pub failed: Vec<(Code, String)>,
}

/// A running write load: `workers` tasks, 4 of 5 calls RecordConsent on `subjects`
/// (GRANT/WITHDRAW alternating), 1 of 5 CreateSubject; every request has a unique
/// `request_id` starting with `tag`.
pub struct Load {
    stop: Arc<AtomicBool>,
    /// Set when failures are expected (after a kill or SIGTERM).
    pub expect_failures: Arc<AtomicBool>,
    tasks: Vec<tokio::task::JoinHandle<LoadResult>>,
    /// Calls started so far.
    pub started: Arc<AtomicUsize>,
}

impl Load {
    /// Starts the load.
    pub fn start(
        ch: &Channel,
        token: &str,
        subjects: &[String],
        workers: usize,
        tag: &str,
    ) -> Load {
        let stop = Arc::new(AtomicBool::new(false));
        let expect_failures = Arc::new(AtomicBool::new(false));
        let started = Arc::new(AtomicUsize::new(0));
        let subjects = Arc::new(subjects.to_vec());
        let tasks = (0..workers)
            .map(|w| {
                let stop = stop.clone();
                let expect = expect_failures.clone();
                let started = started.clone();
                let subjects = subjects.clone();
                let ch = ch.clone();
                let token = token.to_owned();
                let tag = tag.to_owned();
                tokio::spawn(async move {
                    let mut out = LoadResult::default();
                    let mut consents =
                        cpb::consent_service_client::ConsentServiceClient::new(ch.clone());
                    let mut rights =
                        rpb::rights_service_client::RightsServiceClient::new(ch.clone());
                    let mut subj = spb::subject_service_client::SubjectServiceClient::new(ch);
                    let mut i = 0usize;
                    while !stop.load(Ordering::SeqCst) {
                        i += 1;
                        started.fetch_add(1, Ordering::SeqCst);
                        let res = if i % 10 == 3 {
                            let req = rpb::SubmitRequestRequest {
                                r#type: rpb::RequestType::Access as i32,
                                requester: Some(rpb::submit_request_request::Requester::SubjectId(
                                    subjects[(w + i) % subjects.len()].clone(),
                                )),
                                channel: rpb::RequestChannel::WebForm as i32,
                                request_id: format!("{tag}-r-{w}-{i}"),
                                ..Default::default()
                            };
                            rights
                                .submit_request(authed(req.clone(), &token))
                                .await
                                .map(|r| Acked::Rights(req, Box::new(r.into_inner())))
                        } else if i.is_multiple_of(5) {
                            let req = spb::CreateSubjectRequest {
                                email: format!("{tag}-{w}-{i}@example.no"),
                                request_id: format!("{tag}-s-{w}-{i}"),
                                ..Default::default()
                            };
                            subj.create_subject(authed(req.clone(), &token))
                                .await
                                .map(|r| Acked::Subject(req, r.into_inner()))
                        } else {
                            let req = consent_request(
                                &subjects[(w * 7 + i) % subjects.len()],
                                i.is_multiple_of(2),
                                &format!("{tag}-c-{w}-{i}"),
                            );
                            consents
                                .record_consent(authed(req.clone(), &token))
                                .await
                                .map(|r| Acked::Consent(req, r.into_inner()))
                        };
                        match res {
                            Ok(a) => out.acked.push(a),
                            Err(s) => {
                                *out.failures.entry(s.code()).or_default() += 1;
                                out.failed.push((s.code(), format!("{tag}-{w}-{i}")));
                                if expect.load(Ordering::SeqCst) {
                                    // The server is going away: stop this worker.
                                    break;
                                }
                                // Retryable refusals under load are allowed (the write
                                // was not acknowledged, so nothing is promised of it);
                                // anything else is a bug.
                                if matches!(
                                    s.code(),
                                    Code::Unavailable | Code::Aborted | Code::ResourceExhausted
                                ) {
                                    continue;
                                }
                                out.unexpected.push((format!("{tag} {w}/{i}"), s.code()));
                                if out.unexpected.len() > 20 {
                                    break;
                                }
                            }
                        }
                    }
                    out
                })
            })
            .collect();
        Load {
            stop,
            expect_failures,
            tasks,
            started,
        }
    }

    /// Stops the workers and collects what they saw (15 s at most).
    pub async fn finish(self) -> LoadResult {
        self.stop.store(true, Ordering::SeqCst);
        let mut all = LoadResult::default();
        for t in self.tasks {
            let r = tokio::time::timeout(Duration::from_secs(15), t)
                .await
                .expect("load worker stops within 15 s")
                .expect("load worker");
            all.acked.extend(r.acked);
            all.unexpected.extend(r.unexpected);
            all.failed.extend(r.failed);
            for (k, v) in r.failures {
                *all.failures.entry(k).or_default() += v;
            }
        }
        all
    }
}

/// A RecordConsent request (GRANT or WITHDRAW) with `request_id`.
pub fn consent_request(subject: &str, grant: bool, request_id: &str) -> cpb::RecordConsentRequest {
    cpb::RecordConsentRequest {
        subject_id: subject.into(),
        purpose: PURPOSE.into(),
        action: if grant {
            cpb::ConsentAction::Grant
        } else {
            cpb::ConsentAction::Withdraw
        } as i32,
        channel: cpb::ConsentChannel::WebForm as i32,
        notice_version: "2026-11-01".into(),
        evidence: "signup-form".into(),
        request_id: request_id.into(),
        ..Default::default()
    }
}

/// Every consent event of `subject` for [`PURPOSE`] (all pages).
pub async fn history(ch: &Channel, token: &str, subject: &str) -> Vec<cpb::ConsentEvent> {
    let mut client = cpb::consent_service_client::ConsentServiceClient::new(ch.clone());
    let mut out = vec![];
    let mut page_token = String::new();
    for _ in 0..1000 {
        let page = client
            .list_consent_history(authed(
                cpb::ListConsentHistoryRequest {
                    page_size: 1000,
                    page_token: page_token.clone(),
                    subject_id: subject.into(),
                    purpose: PURPOSE.into(),
                },
                token,
            ))
            .await
            .expect("ListConsentHistory")
            .into_inner();
        out.extend(page.events);
        if page.next_page_token.is_empty() {
            return out;
        }
        page_token = page.next_page_token;
    }
    panic!("history pagination did not end")
}

/// Every audit event with `action` in the tenant's chain (all pages).
pub async fn audit_events(ch: &Channel, token: &str, action: &str) -> Vec<apb::AuditEvent> {
    let mut client = apb::audit_service_client::AuditServiceClient::new(ch.clone());
    let mut out = vec![];
    let mut page_token = String::new();
    for _ in 0..1000 {
        let page = client
            .query_events(authed(
                apb::QueryEventsRequest {
                    page_size: 1000,
                    page_token: page_token.clone(),
                    action: action.into(),
                    ..Default::default()
                },
                token,
            ))
            .await
            .expect("QueryEvents")
            .into_inner();
        out.extend(page.events);
        if page.next_page_token.is_empty() {
            return out;
        }
        page_token = page.next_page_token;
    }
    panic!("audit pagination did not end")
}

/// Checks, after a restart, everything promised about `acked`:
/// 1. every acknowledged RecordConsent is in ListConsentHistory with its request_id and
///    event id, once; every acknowledged subject is readable;
/// 2. the audit events of every acknowledged write reach the chain exactly once (the
///    outboxes drain), polled for up to 30 s;
/// 3. VerifyChain is ok;
/// 4. retrying every acknowledged request returns the first answer and appends no event.
pub async fn check_acknowledged(ch: &Channel, vern: &Vern, subjects: &[String], acked: &[Acked]) {
    let crm = vern.token("integration");
    let auditor = vern.token("auditor");

    // 1. Present, once, with the acknowledged event id.
    let mut histories = HashMap::new();
    for s in subjects {
        histories.insert(s.clone(), history(ch, &crm, s).await);
    }
    let total_before: usize = histories.values().map(Vec::len).sum();
    let mut by_request: HashMap<&str, Vec<&cpb::ConsentEvent>> = HashMap::new();
    for e in histories.values().flatten() {
        by_request.entry(e.request_id.as_str()).or_default().push(e);
    }
    let mut subj = spb::subject_service_client::SubjectServiceClient::new(ch.clone());
    let mut rights = rpb::rights_service_client::RightsServiceClient::new(ch.clone());
    let officer = vern.token("privacy-officer");
    let (mut consents_acked, mut subjects_acked) = (HashSet::new(), HashSet::new());
    for a in acked {
        match a {
            Acked::Consent(req, ev) => {
                let found = by_request
                    .get(req.request_id.as_str())
                    .unwrap_or_else(|| panic!("acknowledged {} lost", req.request_id));
                assert_eq!(found.len(), 1, "{} recorded once", req.request_id);
                assert_eq!(found[0].event_id, ev.event_id, "{}", req.request_id);
                consents_acked.insert(req.request_id.clone());
            }
            Acked::Subject(req, s) => {
                subj.get_subject(authed(
                    spb::GetSubjectRequest {
                        subject_id: s.subject_id.clone(),
                        view: 0,
                        ..Default::default()
                    },
                    &crm,
                ))
                .await
                .unwrap_or_else(|e| panic!("acknowledged subject {} lost: {e}", req.request_id));
                subjects_acked.insert(req.request_id.clone());
            }
            Acked::Rights(req, r) => {
                let got = rights
                    .get_request(authed(
                        rpb::GetRequestRequest {
                            rights_request_id: r.rights_request_id.clone(),
                        },
                        &officer,
                    ))
                    .await
                    .unwrap_or_else(|e| {
                        panic!("acknowledged rights request {} lost: {e}", req.request_id)
                    })
                    .into_inner();
                assert_eq!(got.rights_request_id, r.rights_request_id);
            }
        }
    }

    // 2. The outboxes drain: each acknowledged write's audit event arrives exactly once.
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let rc = audit_events(ch, &auditor, "RecordConsent").await;
        let cs = audit_events(ch, &auditor, "CreateSubject").await;
        fn count(events: &[apb::AuditEvent], want: &HashSet<String>) -> HashMap<String, usize> {
            let mut n: HashMap<String, usize> = HashMap::new();
            for e in events {
                if want.contains(&e.request_id) && e.outcome == apb::Outcome::Success as i32 {
                    *n.entry(e.request_id.clone()).or_default() += 1;
                }
            }
            n
        }
        let (n_rc, n_cs) = (count(&rc, &consents_acked), count(&cs, &subjects_acked));
        if n_rc.len() == consents_acked.len() && n_cs.len() == subjects_acked.len() {
            for (id, n) in n_rc.iter().chain(n_cs.iter()) {
                assert_eq!(*n, 1, "audit event of {id} exactly once");
            }
            break;
        }
        assert!(
            Instant::now() < deadline,
            "outbox did not drain: {} of {} RecordConsent and {} of {} CreateSubject events in the chain",
            n_rc.len(),
            consents_acked.len(),
            n_cs.len(),
            subjects_acked.len()
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }

    // 3. The chain verifies.
    let mut audit = apb::audit_service_client::AuditServiceClient::new(ch.clone());
    let verified = audit
        .verify_chain(authed(apb::VerifyChainRequest::default(), &auditor))
        .await
        .expect("VerifyChain")
        .into_inner();
    assert!(verified.ok, "{verified:?}");
    assert!(verified.checked > 0);

    // 4. Retries are recognised: same answer, nothing written twice.
    let mut consents = cpb::consent_service_client::ConsentServiceClient::new(ch.clone());
    for a in acked {
        match a {
            Acked::Consent(req, ev) => {
                let again = consents
                    .record_consent(authed(req.clone(), &crm))
                    .await
                    .unwrap_or_else(|e| panic!("retry of {}: {e}", req.request_id))
                    .into_inner();
                assert_eq!(again.event_id, ev.event_id, "retry of {}", req.request_id);
            }
            Acked::Subject(req, s) => {
                let again = subj
                    .create_subject(authed(req.clone(), &crm))
                    .await
                    .unwrap_or_else(|e| panic!("retry of {}: {e}", req.request_id))
                    .into_inner();
                assert_eq!(
                    again.subject_id, s.subject_id,
                    "retry of {}",
                    req.request_id
                );
            }
            Acked::Rights(req, r) => {
                let again = rights
                    .submit_request(authed(req.clone(), &crm))
                    .await
                    .unwrap_or_else(|e| panic!("retry of {}: {e}", req.request_id))
                    .into_inner();
                assert_eq!(
                    again.rights_request_id, r.rights_request_id,
                    "retry of {}",
                    req.request_id
                );
            }
        }
    }
    let mut total_after = 0;
    for s in subjects {
        total_after += history(ch, &crm, s).await.len();
    }
    assert_eq!(
        total_after, total_before,
        "retries appended no consent event"
    );
}

/// A shared mutable list, for tests that collect from several tasks.
pub type Shared<T> = Arc<Mutex<Vec<T>>>;

/// A child process killed when the test ends, however it ends.
pub struct Running(pub Child);

impl Drop for Running {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// `vern dev` on `data` with its console on a port of its own, its banner read until
/// the console's line: the process, the console's address, the banner so far and the
/// gateway's port.
pub fn vern_dev_with_console(data: &Path) -> (Running, String, String, u16) {
    let gateway = free_port();
    use std::io::{BufRead, BufReader};
    let mut child = Command::new(env!("CARGO_BIN_EXE_vern"))
        .args(["dev", "--data-dir"])
        .arg(data)
        .args(["--listen", &format!("127.0.0.1:{gateway}")])
        .args(["--console-listen", "127.0.0.1:0"])
        .env("RUST_LOG", "error")
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .expect("vern dev");
    let out = child.stdout.take().expect("stdout");
    let running = Running(child);
    let mut banner = String::new();
    let mut reader = BufReader::new(out);
    loop {
        let mut line = String::new();
        if reader.read_line(&mut line).expect("banner") == 0 {
            break;
        }
        let line = line.trim_end().to_owned();
        banner.push_str(&line);
        banner.push('\n');
        if let Some(rest) = line.trim_start().strip_prefix("console") {
            let url = rest.split_whitespace().next().expect("an address");
            let addr = url
                .strip_prefix("http://")
                .and_then(|u| u.strip_suffix('/'))
                .unwrap_or_else(|| panic!("an http:// address: {line}"))
                .to_owned();
            // Keep reading: a closed pipe would make vern dev's next line its last
            // (println! panics on EPIPE), and the console would never answer.
            let mut tail = reader;
            std::thread::spawn(move || {
                let mut sink = String::new();
                while matches!(tail.read_line(&mut sink), Ok(n) if n > 0) {
                    sink.clear();
                }
            });
            return (running, addr, banner, gateway);
        }
    }
    panic!("vern dev printed no console line: {banner}");
}
