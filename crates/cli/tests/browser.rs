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
        tpb::tenant_service_client::TenantServiceClient::new(ch)
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
