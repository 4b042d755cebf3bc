//! The console in a real browser, as a newcomer meets it: `vern dev` started as a user
//! starts it, Debian's chromium driven through chromedriver (WebDriver, fantoccini),
//! axe-core run on every page (no serious or critical violation), a screenshot of each
//! page kept.
//!
//! Needs `chromium`, `chromium-driver` and axe-core (`npm install axe-core`; the file
//! `VERN_AXE_JS`, default `~/.cache/vern-axe/node_modules/axe-core/axe.min.js`).
//! Without them the test says so and passes, unless `VERN_REQUIRE_BROWSER=1` (set by
//! `.ci/run`, which installs them), when it fails instead. Screenshots go to
//! `VERN_SCREENSHOT_DIR` (default `target/console-screenshots`).

mod support;

use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use fantoccini::{Client, ClientBuilder, Locator};
use serde_json::json;

use support::{Running, free_port, vern_dev_with_console};

/// What the test needs from the machine, or why it cannot run.
struct Tools {
    chromedriver: PathBuf,
    chromium: PathBuf,
    axe: String,
}

fn tools() -> Result<Tools, String> {
    let found = |name: &str| {
        std::env::var_os("PATH")
            .into_iter()
            .flat_map(|p| std::env::split_paths(&p).collect::<Vec<_>>())
            .map(|d| d.join(name))
            .find(|p| p.is_file())
            .ok_or_else(|| format!("{name} is not installed (Debian: chromium, chromium-driver)"))
    };
    let axe_path = std::env::var_os("VERN_AXE_JS")
        .map(PathBuf::from)
        .or_else(|| {
            std::env::var_os("HOME")
                .map(|h| PathBuf::from(h).join(".cache/vern-axe/node_modules/axe-core/axe.min.js"))
        })
        .ok_or("no VERN_AXE_JS and no HOME")?;
    let axe = std::fs::read_to_string(&axe_path).map_err(|e| {
        format!(
            "axe-core at {}: {e} (npm install axe-core)",
            axe_path.display()
        )
    })?;
    Ok(Tools {
        chromedriver: found("chromedriver")?,
        chromium: found("chromium")?,
        axe,
    })
}

/// chromedriver on a port of its own, and a headless chromium session through it.
async fn browser(t: &Tools) -> (Running, Client) {
    let port = free_port();
    let driver = Running(
        Command::new(&t.chromedriver)
            .arg(format!("--port={port}"))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("chromedriver"),
    );
    let mut caps = serde_json::Map::new();
    caps.insert(
        "goog:chromeOptions".into(),
        json!({
            "binary": t.chromium,
            "args": ["--headless=new", "--no-sandbox", "--disable-gpu",
                     "--disable-dev-shm-usage", "--window-size=1280,900", "--lang=nb-NO"],
            "prefs": {"intl.accept_languages": "nb-NO,nb"}
        }),
    );
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        match ClientBuilder::new(hyper_util::client::legacy::connect::HttpConnector::new())
            .capabilities(caps.clone())
            .connect(&format!("http://127.0.0.1:{port}"))
            .await
        {
            Ok(c) => return (driver, c),
            Err(e) if Instant::now() < deadline => {
                let _ = e;
                tokio::time::sleep(Duration::from_millis(200)).await;
            }
            Err(e) => panic!("no WebDriver session: {e}"),
        }
    }
}

/// Runs axe-core on the page; panics on any serious or critical violation.
async fn axe(c: &Client, t: &Tools, page: &str) {
    c.execute(&t.axe, vec![]).await.expect("axe-core loads");
    let found = c
        .execute_async(
            "const done = arguments[arguments.length - 1];
             axe.run(document).then(r => done(r.violations
                 .filter(v => v.impact === 'serious' || v.impact === 'critical')
                 .map(v => v.id + ': ' + v.nodes.map(n => n.target.join(' ')).join(', '))))
               .catch(e => done(['axe failed: ' + e]));",
            vec![],
        )
        .await
        .expect("axe-core runs");
    let found: Vec<String> = serde_json::from_value(found).expect("a list");
    assert!(found.is_empty(), "axe on {page}: {found:?}");
}

/// Keeps a screenshot of the page as `name`.png.
async fn screenshot(c: &Client, name: &str) {
    let dir = std::env::var_os("VERN_SCREENSHOT_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| {
            PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../target/console-screenshots")
        });
    std::fs::create_dir_all(&dir).expect("screenshot dir");
    let png = c.screenshot().await.expect("screenshot");
    std::fs::write(dir.join(format!("{name}.png")), png).expect("write screenshot");
}

/// The page's heading; `None` while a navigation replaces the page.
async fn h1(c: &Client) -> Option<String> {
    c.find(Locator::Css("h1")).await.ok()?.text().await.ok()
}

async fn wait_h1(c: &Client, want: &str) {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let now = h1(c).await;
        if now.as_deref() == Some(want) {
            return;
        }
        assert!(Instant::now() < deadline, "heading {now:?}, want {want:?}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_newcomer_signs_in_to_the_console_in_a_real_browser() {
    let t = match tools() {
        Ok(t) => t,
        Err(why) if std::env::var("VERN_REQUIRE_BROWSER").as_deref() == Ok("1") => {
            panic!("VERN_REQUIRE_BROWSER=1 but {why}")
        }
        Err(why) => {
            eprintln!("skipping the browser test: {why}");
            return;
        }
    };
    let dir = tempfile::tempdir().expect("dir");
    let (mut vern, addr, _, gateway) = vern_dev_with_console(dir.path());
    // A second department, for the switcher.
    {
        use vern_proto::tenants::v1 as tpb;
        let ch = tonic::transport::Channel::from_shared(format!("http://127.0.0.1:{gateway}"))
            .expect("uri")
            .connect()
            .await
            .expect("gateway");
        tpb::tenant_service_client::TenantServiceClient::new(ch.clone())
            .create_tenant(support::authed(
                tpb::CreateTenantRequest {
                    tenant_id: "kultur".into(),
                    name: "Oslo Kulturfabrikk".into(),
                    org_number: "989990748".into(),
                    dpo_email: "dpo@kultur.example".into(),
                    request_id: "browser-second-department".into(),
                    ..Default::default()
                },
                &support::token(dir.path(), "platform-admin"),
            ))
            .await
            .expect("a second department");
        // A request in it, for the queue.
        use vern_proto::rights::v1 as rpb;
        rpb::rights_service_client::RightsServiceClient::new(ch)
            .submit_request(support::authed(
                rpb::SubmitRequestRequest {
                    r#type: rpb::RequestType::Erasure as i32,
                    requester: Some(rpb::submit_request_request::Requester::Identity(
                        rpb::Identity {
                            email: "asker@kultur.example".into(),
                            ..Default::default()
                        },
                    )),
                    channel: rpb::RequestChannel::Email as i32,
                    request_id: "browser-queue-1".into(),
                    ..Default::default()
                },
                &support::token(dir.path(), "privacy-officer"),
            ))
            .await
            .expect("a request");
    }
    let (_driver, c) = browser(&t).await;
    let base = format!("http://{addr}");

    // The sign-in page, in bokmål (the browser asks for it), with the development
    // sign-in offering the demo department.
    // The console answers before the browser opens it (a refused first connection says
    // whether vern dev is still running).
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        match c.goto(&format!("{base}/")).await {
            Ok(()) => break,
            Err(e) if Instant::now() < deadline => {
                let _ = e;
                tokio::time::sleep(Duration::from_millis(200)).await;
            }
            Err(e) => panic!(
                "the console at {base} does not open ({e}); vern dev exited: {:?}",
                vern.0.try_wait()
            ),
        }
    }
    wait_h1(&c, "Logg inn").await;
    let lang = c
        .find(Locator::Css("html"))
        .await
        .expect("html")
        .attr("lang")
        .await
        .expect("lang");
    assert_eq!(lang.as_deref(), Some("nb"));
    axe(&c, &t, "the sign-in page").await;
    screenshot(&c, "01-sign-in").await;

    // Sign in as the demo department's privacy officer.
    let department = c.find(Locator::Id("department")).await.expect("field");
    assert_eq!(
        department.prop("value").await.expect("value").as_deref(),
        Some("demo")
    );
    // A person of two departments.
    department.clear().await.expect("clear");
    department.send_keys("demo, kultur").await.expect("type");
    c.find(Locator::Css("#role option[value=privacy-officer]"))
        .await
        .expect("role")
        .click()
        .await
        .expect("choose");
    c.find(Locator::Css("form[action='/dev/sign-in'] button"))
        .await
        .expect("button")
        .click()
        .await
        .expect("sign in");
    wait_h1(&c, "Oversikt").await;
    let main = c
        .find(Locator::Id("main"))
        .await
        .expect("main")
        .text()
        .await
        .expect("text");
    assert!(main.contains("Demoavdelingen"), "{main}");
    assert!(main.contains("Registrerte"), "the counts: {main}");
    assert_eq!(c.current_url().await.expect("url").path(), "/overview");
    axe(&c, &t, "the overview (bokmål)").await;
    screenshot(&c, "02-overview-nb").await;

    // Switch to English.
    c.find(Locator::Css("#language option[value=en]"))
        .await
        .expect("English")
        .click()
        .await
        .expect("choose");
    c.find(Locator::Css("form.language button"))
        .await
        .expect("switch")
        .click()
        .await
        .expect("switch");
    wait_h1(&c, "Overview").await;
    axe(&c, &t, "the overview (English)").await;
    screenshot(&c, "03-overview-en").await;

    // Switch department: the other department's overview, by the switcher only.
    c.find(Locator::Css("#department-switch option[value=kultur]"))
        .await
        .expect("the other department")
        .click()
        .await
        .expect("choose");
    c.find(Locator::Css("form.department button"))
        .await
        .expect("switch")
        .click()
        .await
        .expect("switch");
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let main = match c.find(Locator::Id("main")).await {
            Ok(m) => m.text().await.unwrap_or_default(),
            Err(_) => String::new(),
        };
        if main.contains("Oslo Kulturfabrikk") {
            assert!(!main.contains("Demoavdelingen"), "{main}");
            break;
        }
        assert!(Instant::now() < deadline, "not switched: {main}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    axe(&c, &t, "the overview after the switch").await;
    screenshot(&c, "03b-switched-department").await;

    // The department's request queue, from the navigation.
    c.find(Locator::Css("nav a[href='/requests']"))
        .await
        .expect("the queue in the navigation")
        .click()
        .await
        .expect("open the queue");
    wait_h1(&c, "Rights requests").await;
    let main = wait_main(&c, "Erasure").await;
    assert!(
        main.contains("E-mail") && main.contains("days left"),
        "{main}"
    );
    assert!(
        !main.contains("asker@kultur.example"),
        "no personal data: {main}"
    );
    axe(&c, &t, "the request queue").await;
    screenshot(&c, "03c-request-queue").await;

    // The request's page, from its row.
    c.find(Locator::Css("table.queue a"))
        .await
        .expect("the request's link")
        .click()
        .await
        .expect("open the request");
    wait_h1(&c, "Request: Erasure").await;
    wait_main(&c, "Received (E-mail)").await;
    axe(&c, &t, "a request's page").await;
    screenshot(&c, "03d-request-page").await;

    // Verify the requester's identity, then fulfil: each form offered in its turn.
    c.find(Locator::Css("#verify-method option[value=id-document]"))
        .await
        .expect("a method")
        .click()
        .await
        .expect("choose");
    c.find(Locator::Css("form[action$='/verify'] button"))
        .await
        .expect("verify")
        .click()
        .await
        .expect("verify");
    wait_main(&c, "Identity verified: identity document").await;
    c.find(Locator::Css("form[action$='/fulfil'] button"))
        .await
        .expect("fulfil is offered once verified")
        .click()
        .await
        .expect("fulfil");
    let deadline = Instant::now() + Duration::from_secs(15);
    loop {
        let main = main_text(&c).await;
        if !main.is_empty() && !main.contains("Fulfil the request") {
            assert!(!main.contains("Verify identity"), "{main}");
            break;
        }
        assert!(Instant::now() < deadline, "not fulfilled: {main}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    axe(&c, &t, "a request's page after fulfilment").await;
    screenshot(&c, "03e-request-fulfilled").await;

    // A forged CSRF token on sign-out is refused, and the session goes on.
    c.execute(
        "document.querySelector(\"form[action='/sign-out'] input[name=csrf]\").value = 'forged';",
        vec![],
    )
    .await
    .expect("forge");
    c.find(Locator::Css("form[action='/sign-out'] button"))
        .await
        .expect("sign-out")
        .click()
        .await
        .expect("post");
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let body = match c.find(Locator::Id("main")).await {
            Ok(m) => m.text().await.unwrap_or_default(),
            Err(_) => String::new(),
        };
        if body.contains("did not come from this console and was refused") {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "the forged post was not refused: {body}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    axe(&c, &t, "the refusal").await;
    screenshot(&c, "04-forged-csrf-refused").await;
    c.goto(&format!("{base}/overview")).await.expect("back");
    wait_h1(&c, "Overview").await;

    // Sign out: the session ends, and the overview is no longer reachable.
    c.find(Locator::Css("form[action='/sign-out'] button"))
        .await
        .expect("sign-out")
        .click()
        .await
        .expect("sign out");
    wait_h1(&c, "Sign in").await;
    c.goto(&format!("{base}/overview")).await.expect("overview");
    wait_h1(&c, "Sign in").await;
    assert_eq!(c.current_url().await.expect("url").path(), "/");
    screenshot(&c, "05-signed-out").await;
    c.close().await.expect("close");
}

/// The test OpenID provider (`tests/idp/provider.mjs`: oidc-provider from npm) as a
/// child process, and the token grants it reports.
struct Idp {
    _child: Running,
    issuer: String,
    grants: std::sync::Arc<std::sync::Mutex<Vec<serde_json::Value>>>,
}

impl Idp {
    /// How many grants of `kind` (e.g. `refresh_token`) it has made.
    fn granted(&self, kind: &str) -> usize {
        self.grants
            .lock()
            .expect("grants")
            .iter()
            .filter(|g| g["grant"] == kind)
            .count()
    }
}

/// The provider's directory, if its npm packages are installed (`npm ci` there).
fn idp_dir() -> Result<PathBuf, String> {
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../tests/idp");
    if dir
        .join("node_modules/oidc-provider/package.json")
        .is_file()
    {
        Ok(dir)
    } else {
        Err(format!(
            "the test OpenID provider's packages are not installed (cd {} && npm ci)",
            dir.display()
        ))
    }
}

/// Starts the provider with `accounts`, one client for the console at `console`
/// (its base URL), and access tokens living `access_ttl` seconds.
fn start_idp(
    dir: &std::path::Path,
    accounts: serde_json::Value,
    console: &str,
    access_ttl: u64,
) -> Idp {
    use std::io::{BufRead, BufReader};
    let mut child = Command::new("node")
        .arg("provider.mjs")
        .current_dir(dir)
        .env("VERN_IDP_ACCOUNTS", accounts.to_string())
        .env("VERN_IDP_CLIENT_SECRET", IDP_SECRET)
        .env("VERN_IDP_REDIRECT_URIS", format!("{console}/oidc/callback"))
        .env("VERN_IDP_POST_LOGOUT_URIS", format!("{console}/"))
        .env("VERN_IDP_ACCESS_TTL", access_ttl.to_string())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .expect("node provider.mjs");
    let out = child.stdout.take().expect("stdout");
    let running = Running(child);
    let grants = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
    let (tx, rx) = std::sync::mpsc::channel();
    let kept = grants.clone();
    std::thread::spawn(move || {
        for line in BufReader::new(out).lines().map_while(Result::ok) {
            let Ok(v) = serde_json::from_str::<serde_json::Value>(&line) else {
                continue;
            };
            if let Some(issuer) = v["issuer"].as_str() {
                let _ = tx.send(issuer.to_owned());
            } else if v.get("grant").is_some() {
                kept.lock().expect("grants").push(v);
            }
        }
    });
    let issuer = rx
        .recv_timeout(Duration::from_secs(30))
        .expect("the OpenID provider printed its issuer");
    Idp {
        _child: running,
        issuer,
        grants,
    }
}

const IDP_SECRET: &str = "console-secret-for-tests";

/// A national identity number (synthetic, with valid check digits) the browser test
/// searches for.
const SEARCHED_NATIONAL_ID: &str = "17058510068";

/// `vern dev` whose gateway accepts the provider's access tokens and whose console
/// signs people in through it, on `console_port`.
fn vern_dev_with_idp(
    data: &std::path::Path,
    idp: &Idp,
    gateway: u16,
    console_port: u16,
) -> Running {
    Running(
        Command::new(env!("CARGO_BIN_EXE_vern"))
            .args(["dev", "--data-dir"])
            .arg(data)
            .args(["--listen", &format!("127.0.0.1:{gateway}")])
            .args(["--console-listen", &format!("127.0.0.1:{console_port}")])
            .env("RUST_LOG", "error")
            .env("VERN_AUTH__ISSUER", &idp.issuer)
            .env("VERN_AUTH__AUDIENCE", "urn:vern")
            .env("VERN_AUTH__JWKS_URL", format!("{}/jwks", idp.issuer))
            .env("VERN_CONSOLE__OIDC__ISSUER_URL", &idp.issuer)
            .env("VERN_CONSOLE__OIDC__CLIENT_SECRET", IDP_SECRET)
            .env("VERN_CONSOLE__OIDC__RESOURCE", "urn:vern")
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("vern dev"),
    )
}

/// The text of `#main`, or "" while a navigation replaces the page.
async fn main_text(c: &Client) -> String {
    match c.find(Locator::Id("main")).await {
        Ok(m) => m.text().await.unwrap_or_default(),
        Err(_) => String::new(),
    }
}

async fn wait_main(c: &Client, want: &str) -> String {
    let deadline = Instant::now() + Duration::from_secs(15);
    loop {
        let main = main_text(c).await;
        if main.contains(want) {
            return main;
        }
        assert!(Instant::now() < deadline, "want {want:?} in: {main}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// Signs in through the provider as `login`: the console's link, the provider's login
/// form (and its consent, the first time).
async fn sign_in_at_idp(c: &Client, base: &str, login: &str) {
    c.goto(&format!("{base}/")).await.expect("sign-in page");
    wait_h1(c, "Logg inn").await;
    c.find(Locator::Id("sign-in-idp"))
        .await
        .expect("the provider's sign-in link")
        .click()
        .await
        .expect("follow");
    let field = c
        .wait()
        .at_most(Duration::from_secs(15))
        .for_element(Locator::Css("input[name=login]"))
        .await
        .expect("the provider's login form");
    field.send_keys(login).await.expect("login");
    c.find(Locator::Css("input[name=password]"))
        .await
        .expect("password")
        .send_keys("any password")
        .await
        .expect("password");
    c.find(Locator::Css("button[type=submit]"))
        .await
        .expect("submit")
        .click()
        .await
        .expect("submit");
    // The provider asks for consent once per account; the console's page otherwise.
    let deadline = Instant::now() + Duration::from_secs(15);
    loop {
        let url = c.current_url().await.expect("url");
        if url.as_str().starts_with(base) {
            return;
        }
        if let Ok(b) = c
            .find(Locator::Css(
                "form input[name=prompt][value=consent] ~ button",
            ))
            .await
        {
            let _ = b.click().await;
        }
        assert!(Instant::now() < deadline, "still at the provider: {url}");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// Fills the intake form shown (type, channel and one identifier `field` = `value`)
/// and sends it.
async fn register_at_intake(c: &Client, kind: &str, channel: &str, field: &str, value: &str) {
    for (select, choice) in [("#type", kind), ("#channel", channel)] {
        c.find(Locator::Css(&format!("{select} option[value={choice}]")))
            .await
            .expect("an option")
            .click()
            .await
            .expect("choose");
    }
    c.find(Locator::Id(field))
        .await
        .expect("the identifier's field")
        .send_keys(value)
        .await
        .expect("type");
    c.find(Locator::Css("form[action='/requests/new'] button"))
        .await
        .expect("submit")
        .click()
        .await
        .expect("submit");
}

/// Signs out of the console and, at the provider's page, of the provider too.
async fn sign_out_everywhere(c: &Client, base: &str) {
    c.find(Locator::Css("form[action='/sign-out'] button"))
        .await
        .expect("sign-out")
        .click()
        .await
        .expect("sign out");
    // The console's page moves on to the provider, which asks to confirm.
    let yes = c
        .wait()
        .at_most(Duration::from_secs(15))
        .for_element(Locator::Css("button[name=logout][value=yes]"))
        .await
        .expect("the provider's sign-out question");
    yes.click().await.expect("confirm");
    let deadline = Instant::now() + Duration::from_secs(15);
    loop {
        let url = c.current_url().await.expect("url");
        if url.as_str().starts_with(base) && h1(c).await.as_deref() == Some("Logg inn") {
            return;
        }
        assert!(Instant::now() < deadline, "not back at the console: {url}");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn officers_sign_in_through_the_openid_provider_and_never_see_another_department() {
    let (t, dir_idp) = match tools().and_then(|t| Ok((t, idp_dir()?))) {
        Ok(x) => x,
        Err(why) if std::env::var("VERN_REQUIRE_BROWSER").as_deref() == Ok("1") => {
            panic!("VERN_REQUIRE_BROWSER=1 but {why}")
        }
        Err(why) => {
            eprintln!("skipping the OpenID browser test: {why}");
            return;
        }
    };
    let console_port = free_port();
    let base = format!("http://127.0.0.1:{console_port}");
    // Access tokens of 65 s: the console refreshes them in their last minute, so
    // every page after the first 5 s goes through a refresh.
    let idp = start_idp(
        &dir_idp,
        json!({
            "officer-a": {"tenant": ["dept-a"], "roles": ["privacy-officer"]},
            "officer-b": {"tenant": ["dept-b"], "roles": ["privacy-officer"]},
            "visitor": {"tenant": [], "roles": []}
        }),
        &base,
        65,
    );
    let dir = tempfile::tempdir().expect("dir");
    let gateway = free_port();
    let vern = vern_dev_with_idp(dir.path(), &idp, gateway, console_port);
    // Two departments, made by a platform admin (the dev key, with the provider's
    // issuer and vern's audience, as the gateway now expects).
    {
        use vern_proto::tenants::v1 as tpb;
        let deadline = Instant::now() + Duration::from_secs(60);
        let mut tenants = loop {
            if let (true, Ok(ch)) = (
                dir.path().join(vern_kit::auth::DEV_KEY_FILE).is_file(),
                tonic::transport::Channel::from_shared(format!("http://127.0.0.1:{gateway}"))
                    .expect("uri")
                    .connect()
                    .await,
            ) {
                break tpb::tenant_service_client::TenantServiceClient::new(ch);
            }
            assert!(Instant::now() < deadline, "vern dev did not start");
            tokio::time::sleep(Duration::from_millis(200)).await;
        };
        let secret = std::fs::read_to_string(dir.path().join(vern_kit::auth::DEV_KEY_FILE))
            .expect("dev key");
        let admin = token_beside_idp(secret.trim().as_bytes(), &idp.issuer, "platform-admin", &[]);
        two_departments(&mut tenants, &admin, "oidc-browser").await;
        // A person of department A, with a request, for the search.
        let officer = token_beside_idp(
            secret.trim().as_bytes(),
            &idp.issuer,
            "privacy-officer",
            &["dept-a"],
        );
        let ch = tonic::transport::Channel::from_shared(format!("http://127.0.0.1:{gateway}"))
            .expect("uri")
            .connect()
            .await
            .expect("gateway");
        use vern_proto::rights::v1 as rpb;
        use vern_proto::subjects::v1 as spb;
        let subject = spb::subject_service_client::SubjectServiceClient::new(ch.clone())
            .create_subject(support::authed(
                spb::CreateSubjectRequest {
                    email: "ola.nordmann@example.no".into(),
                    national_id: SEARCHED_NATIONAL_ID.into(),
                    request_id: "oidc-browser-subject".into(),
                    ..Default::default()
                },
                &officer,
            ))
            .await
            .expect("a subject")
            .into_inner()
            .subject_id;
        rpb::rights_service_client::RightsServiceClient::new(ch)
            .submit_request(support::authed(
                rpb::SubmitRequestRequest {
                    r#type: rpb::RequestType::Portability as i32,
                    requester: Some(rpb::submit_request_request::Requester::SubjectId(subject)),
                    channel: rpb::RequestChannel::Phone as i32,
                    request_id: "oidc-browser-request".into(),
                    ..Default::default()
                },
                &officer,
            ))
            .await
            .expect("a request");
    }
    let (_driver, c) = browser(&t).await;

    // Officer A signs in through the provider and sees department A only.
    sign_in_at_idp(&c, &base, "officer-a").await;
    wait_h1(&c, "Oversikt").await;
    let main = wait_main(&c, "Avdeling Alfa").await;
    assert!(!main.contains("Avdeling Beta"), "{main}");
    assert!(
        main.contains("Registrerte"),
        "the counts, read with the provider's token: {main}"
    );
    assert!(
        c.find(Locator::Id("department-switch")).await.is_err(),
        "one department: no switcher"
    );
    axe(&c, &t, "the overview after an OpenID sign-in").await;
    screenshot(&c, "06-oidc-overview-officer-a").await;

    // Officer A registers a letter (intake), in bokmål; the back button and a second
    // submit give the same request, not a second one.
    c.goto(&format!("{base}/requests/new"))
        .await
        .expect("intake");
    wait_h1(&c, "Registrer en henvendelse").await;
    axe(&c, &t, "the intake form").await;
    register_at_intake(&c, "access", "paper", "email", "kari.nordmann@example.no").await;
    wait_h1(&c, "Henvendelse: Innsyn").await;
    let registered = c.current_url().await.expect("url");
    assert!(
        !registered.as_str().contains("example"),
        "no identifier in the URL: {registered}"
    );
    screenshot(&c, "06b-oidc-intake-registered").await;
    c.back().await.expect("back");
    wait_h1(&c, "Registrer en henvendelse").await;
    c.find(Locator::Css("form[action='/requests/new'] button"))
        .await
        .expect("submit again")
        .click()
        .await
        .expect("submit again");
    // The browser either restored the form as it was sent (the same request_id: the
    // same request's page) or showed it afresh (empty: refused, nothing registered).
    // Either way there is one request, never a second.
    let deadline = Instant::now() + Duration::from_secs(15);
    loop {
        let heading = h1(&c).await;
        let main = main_text(&c).await;
        if heading.as_deref() == Some("Henvendelse: Innsyn") {
            assert_eq!(
                c.current_url().await.expect("url"),
                registered,
                "the same request, not a second"
            );
            break;
        }
        if heading.as_deref() == Some("Registrer en henvendelse")
            && main.contains("Henvendelsen ble ikke registrert")
        {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "after the resubmit: {heading:?} {main}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    c.goto(&format!("{base}/requests?type=access"))
        .await
        .expect("queue");
    wait_h1(&c, "Henvendelser om rettigheter").await;
    let rows = c
        .find_all(Locator::Css("table.queue tbody tr"))
        .await
        .expect("rows")
        .len();
    assert_eq!(rows, 1, "one access request registered, not two");

    // A search by national identity number: a POST, so the number is in no URL and no
    // history entry; the person's request is found.
    c.goto(&format!("{base}/requests")).await.expect("queue");
    wait_h1(&c, "Henvendelser om rettigheter").await;
    c.find(Locator::Id("q"))
        .await
        .expect("the search field")
        .send_keys(SEARCHED_NATIONAL_ID)
        .await
        .expect("type");
    c.find(Locator::Css("form.search button"))
        .await
        .expect("search")
        .click()
        .await
        .expect("search");
    wait_h1(&c, "Henvendelser funnet").await;
    let main = wait_main(&c, "Dataportabilitet").await;
    assert!(!main.contains(SEARCHED_NATIONAL_ID), "not echoed: {main}");
    let url = c.current_url().await.expect("url");
    assert!(!url.as_str().contains(SEARCHED_NATIONAL_ID), "{url}");
    assert_eq!(url.path(), "/requests/search");
    axe(&c, &t, "the search results").await;
    screenshot(&c, "06c-oidc-search-results").await;

    // A switch to department B, forged into the page with the session's own CSRF
    // token, is refused; the overview still shows A.
    c.execute(
        "const f = document.createElement('form');
         f.method = 'post'; f.action = '/department';
         for (const [k, v] of [['csrf', document.querySelector(\"form[action='/sign-out'] input[name=csrf]\").value],
                               ['department', 'dept-b']]) {
           const i = document.createElement('input'); i.type = 'hidden'; i.name = k; i.value = v; f.appendChild(i);
         }
         document.body.appendChild(f); f.submit();",
        vec![],
    )
    .await
    .expect("forge a switch");
    wait_main(&c, "Du har ikke tilgang til dette i avdelingen.").await;
    c.goto(&format!("{base}/overview")).await.expect("overview");
    let main = wait_main(&c, "Avdeling Alfa").await;
    assert!(!main.contains("Avdeling Beta"), "{main}");

    // The access token is refreshed with the refresh token as it nears its end, and
    // the pages go on working with the new one.
    tokio::time::sleep(Duration::from_secs(6)).await;
    c.goto(&format!("{base}/overview")).await.expect("overview");
    wait_main(&c, "Avdeling Alfa").await;
    assert!(
        idp.granted("refresh_token") >= 1,
        "no refresh at the provider: {:?}",
        idp.grants.lock().expect("grants")
    );

    // Sign out here and at the provider: the next sign-in asks for the login again.
    sign_out_everywhere(&c, &base).await;
    screenshot(&c, "07-oidc-signed-out").await;
    c.goto(&format!("{base}/overview")).await.expect("overview");
    wait_h1(&c, "Logg inn").await;

    // Officer B, in the same browser: department B only, never A.
    sign_in_at_idp(&c, &base, "officer-b").await;
    let main = wait_main(&c, "Avdeling Beta").await;
    assert!(!main.contains("Avdeling Alfa"), "{main}");
    sign_out_everywhere(&c, &base).await;

    // An account with no department and no role gets in nowhere.
    sign_in_at_idp(&c, &base, "visitor").await;
    wait_main(&c, "Kontoen din gir deg ingen avdeling eller ingen rolle").await;
    axe(&c, &t, "the no-access page").await;
    screenshot(&c, "08-oidc-no-access").await;
    c.goto(&format!("{base}/overview")).await.expect("overview");
    wait_h1(&c, "Logg inn").await;

    c.close().await.expect("close");
    drop(vern);
}

/// `deploy/local/topology.sh` with two replicas of everything and the test OpenID
/// provider; stopped with SIGTERM (the script then stops every component and drops
/// its schemas).
struct Topology {
    child: std::process::Child,
    base: u16,
    _dir: tempfile::TempDir,
}

impl Drop for Topology {
    fn drop(&mut self) {
        let _ = Command::new("kill")
            .arg(self.child.id().to_string())
            .status();
        let _ = self.child.wait();
    }
}

const TOPOLOGY_SECRET: &str = "browser-topology-secret";

/// A token the gateway takes beside the provider's: HS256 with `secret` (the dev key
/// or the topology's shared secret), the provider's `issuer` and vern's audience.
fn token_beside_idp(secret: &[u8], issuer: &str, role: &str, tenant: &[&str]) -> String {
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .expect("time")
        .as_secs() as i64;
    vern_kit::auth::sign_hs256(
        &vern_kit::auth::Claims {
            sub: format!("browser-test-{role}"),
            tenant: tenant.iter().map(|t| (*t).to_owned()).collect(),
            roles: vec![role.into()],
            iss: issuer.to_owned(),
            aud: "urn:vern".into(),
            exp: now + 600,
            nbf: now,
            iat: now,
        },
        secret,
    )
    .expect("sign")
}

/// Departments `dept-a` (Avdeling Alfa) and `dept-b` (Avdeling Beta), made by the
/// platform admin `admin`.
async fn two_departments(
    tenants: &mut vern_proto::tenants::v1::tenant_service_client::TenantServiceClient<
        tonic::transport::Channel,
    >,
    admin: &str,
    tag: &str,
) {
    use vern_proto::tenants::v1 as tpb;
    for (id, name) in [("dept-a", "Avdeling Alfa"), ("dept-b", "Avdeling Beta")] {
        tenants
            .create_tenant(support::authed(
                tpb::CreateTenantRequest {
                    tenant_id: id.into(),
                    name: name.into(),
                    org_number: "989990748".into(),
                    dpo_email: format!("dpo@{id}.example"),
                    request_id: format!("{tag}-{id}"),
                    ..Default::default()
                },
                admin,
            ))
            .await
            .unwrap_or_else(|e| panic!("department {id}: {e}"));
    }
}

/// A base port whose offsets the script uses are free on the replicas' addresses.
fn topology_base() -> u16 {
    let ips = [[127, 0, 0, 1], [127, 0, 0, 2], [127, 0, 0, 3]];
    for attempt in 0..200u32 {
        let seed = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .expect("time")
            .subsec_nanos()
            .wrapping_add(attempt * 7919);
        // Below Linux's ephemeral range, like the end-to-end suite's topologies.
        let base = 20_000 + 100 * (seed % 120) as u16 + 50;
        let free = (1..=3)
            .chain(11..=16)
            .chain(20..=26)
            .map(|o| base + o)
            .all(|p| {
                ips.iter().all(|ip| {
                    std::net::TcpListener::bind((std::net::Ipv4Addr::from(*ip), p)).is_ok()
                })
            });
        if free {
            return base;
        }
    }
    panic!("no free port range for the topology");
}

fn start_topology(database_url: &str, accounts: serde_json::Value) -> Topology {
    let root = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../..");
    let dir = tempfile::tempdir().expect("dir");
    let ready = dir.path().join("ready");
    let base = topology_base();
    let child = Command::new("bash")
        .arg(root.join("deploy/local/topology.sh"))
        .env("VERN_BIN", env!("CARGO_BIN_EXE_vern"))
        .env("VERN_TOPOLOGY_REPLICAS", "2")
        .env("VERN_TOPOLOGY_PORT_BASE", base.to_string())
        .env("VERN_TOPOLOGY_DATABASE_URL", database_url)
        .env("VERN_TOPOLOGY_DIR", dir.path())
        .env("VERN_TOPOLOGY_READY_FILE", &ready)
        .env("VERN_TOPOLOGY_IDP", "1")
        .env("VERN_TOPOLOGY_IDP_ACCOUNTS", accounts.to_string())
        .env("VERN_AUTH__HS256_SECRET", TOPOLOGY_SECRET)
        .env_remove("RUST_LOG")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::inherit())
        .spawn()
        .expect("deploy/local/topology.sh");
    let mut t = Topology {
        child,
        base,
        _dir: dir,
    };
    let deadline = Instant::now() + Duration::from_secs(120);
    while !std::fs::read_to_string(&ready).is_ok_and(|p| !p.trim().is_empty()) {
        if let Ok(Some(status)) = t.child.try_wait() {
            panic!("the topology exited before it was ready: {status}");
        }
        assert!(
            Instant::now() < deadline,
            "the topology was not ready in 2 minutes"
        );
        std::thread::sleep(Duration::from_millis(200));
    }
    t
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn as_deployed_two_console_replicas_share_a_session_signed_in_at_the_openid_provider() {
    let database_url = std::env::var("VERN_TEST_DATABASE_URL").unwrap_or_default();
    let required = std::env::var("VERN_REQUIRE_BROWSER").as_deref() == Ok("1");
    let t = match tools().and_then(|t| {
        idp_dir()?;
        if database_url.is_empty() {
            return Err("no VERN_TEST_DATABASE_URL (PostgreSQL) for the topology".into());
        }
        Ok(t)
    }) {
        Ok(t) => t,
        Err(why) if required => panic!("VERN_REQUIRE_BROWSER=1 but {why}"),
        Err(why) => {
            eprintln!("skipping the topology browser test: {why}");
            return;
        }
    };
    let topology = start_topology(
        &database_url,
        json!({
            "officer-a": {"tenant": ["dept-a"], "roles": ["privacy-officer"]},
            "officer-b": {"tenant": ["dept-b"], "roles": ["privacy-officer"]}
        }),
    );
    let base = topology.base;
    let issuer = format!("http://127.0.0.1:{}", base + 3);
    // Two departments, by a platform admin with the shared secret (the issuer and
    // audience the components now expect).
    {
        use vern_proto::tenants::v1 as tpb;
        let ch = tonic::transport::Channel::from_shared(format!("http://127.0.0.1:{}", base + 1))
            .expect("uri")
            .connect()
            .await
            .expect("gateway");
        let mut tenants = tpb::tenant_service_client::TenantServiceClient::new(ch);
        let admin = token_beside_idp(TOPOLOGY_SECRET.as_bytes(), &issuer, "platform-admin", &[]);
        two_departments(&mut tenants, &admin, "topology-browser").await;
    }
    let replica_1 = format!("http://127.0.0.2:{}", base + 2);
    let replica_2 = format!("http://127.0.0.3:{}", base + 2);
    let (_driver, c) = browser(&t).await;

    // Officer A signs in through the provider at the first console replica.
    sign_in_at_idp(&c, &replica_1, "officer-a").await;
    let main = wait_main(&c, "Avdeling Alfa").await;
    assert!(!main.contains("Avdeling Beta"), "{main}");
    screenshot(&c, "09-topology-replica-1").await;

    // A load balancer sends the same browser to the other replica: the session is
    // the same (their shared store on PostgreSQL).
    let cookie = c
        .get_named_cookie(vern_console::auth::COOKIE)
        .await
        .expect("the session cookie");
    // Without the cookie, the second replica has nobody signed in (another host).
    c.goto(&format!("{replica_2}/overview"))
        .await
        .expect("replica 2");
    wait_h1(&c, "Logg inn").await;
    c.goto(&format!("{replica_2}/healthz"))
        .await
        .expect("replica 2");
    // Set by script (chromedriver refuses `__Host-` cookies through WebDriver): the
    // same name and value, Secure, path `/`, no domain — what the console set.
    c.execute(
        "document.cookie = arguments[0] + '=' + arguments[1] + '; Path=/; Secure; SameSite=Lax';",
        vec![json!(vern_console::auth::COOKIE), json!(cookie.value())],
    )
    .await
    .expect("the cookie at replica 2");
    c.goto(&format!("{replica_2}/overview"))
        .await
        .expect("overview");
    let main = wait_main(&c, "Avdeling Alfa").await;
    assert!(!main.contains("Avdeling Beta"), "{main}");
    axe(&c, &t, "the overview at the second replica").await;
    screenshot(&c, "10-topology-replica-2-same-session").await;

    // The officer's desk as deployed (PostgreSQL, every service its own process):
    // register a phoned-in erasure, verify the caller, fulfil it.
    c.goto(&format!("{replica_2}/requests/new"))
        .await
        .expect("intake");
    wait_h1(&c, "Registrer en henvendelse").await;
    register_at_intake(&c, "erasure", "phone", "phone", "+47 912 34 567").await;
    wait_h1(&c, "Henvendelse: Sletting").await;
    wait_main(&c, "Mottatt (Telefon)").await;
    c.find(Locator::Css("form[action$='/verify'] button"))
        .await
        .expect("verify")
        .click()
        .await
        .expect("verify");
    wait_main(&c, "Identitet bekreftet").await;
    c.find(Locator::Css("form[action$='/fulfil'] button"))
        .await
        .expect("fulfil")
        .click()
        .await
        .expect("fulfil");
    let deadline = Instant::now() + Duration::from_secs(15);
    loop {
        let main = main_text(&c).await;
        if !main.is_empty() && !main.contains("Gjennomfør henvendelsen") {
            break;
        }
        assert!(Instant::now() < deadline, "not fulfilled: {main}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    axe(&c, &t, "a request fulfilled on the topology").await;
    screenshot(&c, "11-topology-request-fulfilled").await;

    // Signing out at the second replica ends the session at the first too.
    sign_out_everywhere(&c, &replica_2).await;
    c.goto(&format!("{replica_1}/overview"))
        .await
        .expect("replica 1");
    wait_h1(&c, "Logg inn").await;

    // Officer B, at the second replica: department B only.
    sign_in_at_idp(&c, &replica_2, "officer-b").await;
    let main = wait_main(&c, "Avdeling Beta").await;
    assert!(!main.contains("Avdeling Alfa"), "{main}");
    c.close().await.expect("close");
    drop(topology);
}
