//! The console against a running suite, through its gateway: the development sign-in
//! (a department and a role, a token signed with the development key), the overview
//! read with that token, the session's CSRF token and its new id at sign-in, the
//! API's refusal shown in the person's language, sign-out; and a console without the
//! development key offers no such sign-in.

use axum::body::Body;
use http::{Request, Response, StatusCode, header};
use http_body_util::BodyExt;
use tower::ServiceExt;
use vern_console::auth::DevSignIn;
use vern_console::sessions::Sessions;
use vern_console::{Console, Settings, router};
use vern_tests::{Backend, Suite, create_tenant};

struct Browser {
    app: axum::Router,
    cookie: Option<String>,
    _dir: tempfile::TempDir,
}

impl Browser {
    async fn new(suite: &Suite, dev: bool) -> Browser {
        let dir = tempfile::tempdir().expect("dir");
        let sessions = Sessions::open(&vern_kit::db::DbTarget::for_service(
            None,
            dir.path(),
            "console",
        ))
        .await
        .expect("sessions");
        let console = Console::new(Settings {
            tls: false,
            dev_sign_in: dev.then(|| DevSignIn {
                secret: vern_tests::SECRET.as_bytes().to_vec(),
                issuer: "vern-dev".into(),
                audience: "vern".into(),
                department: None,
            }),
            gateway: Some(suite.channel.clone()),
            oidc: None,
        })
        .expect("console");
        Browser {
            app: router(console, sessions),
            cookie: None,
            _dir: dir,
        }
    }

    /// Sends `req` with the session cookie, keeps a new one; the answer and its body.
    async fn send(
        &mut self,
        mut req: http::request::Builder,
        body: Body,
    ) -> (Response<Body>, String) {
        if let Some(c) = &self.cookie {
            req = req.header(header::COOKIE, c.clone());
        }
        let mut resp = self
            .app
            .clone()
            .oneshot(req.body(body).expect("request"))
            .await
            .expect("answer");
        if let Some(set) = resp.headers().get(header::SET_COOKIE) {
            let set = set.to_str().expect("cookie");
            assert!(set.starts_with("__Host-vern_session="), "{set}");
            if set.contains("Max-Age=0") {
                // The session ended: the browser drops the cookie.
                self.cookie = None;
                let bytes = resp.body_mut().collect().await.expect("body").to_bytes();
                return (resp, String::from_utf8(bytes.to_vec()).expect("utf-8"));
            }
            assert!(
                set.contains("HttpOnly")
                    && set.contains("Secure")
                    && set.contains("SameSite=Lax")
                    && set.contains("Path=/"),
                "{set}"
            );
            self.cookie = set.split(';').next().map(str::to_owned);
        }
        let bytes = resp.body_mut().collect().await.expect("body").to_bytes();
        (resp, String::from_utf8(bytes.to_vec()).expect("utf-8"))
    }

    async fn get(&mut self, path: &str) -> (Response<Body>, String) {
        self.send(Request::get(path), Body::empty()).await
    }

    async fn post(&mut self, path: &str, form: &str) -> (Response<Body>, String) {
        self.send(
            Request::post(path)
                .header("sec-fetch-site", "same-origin")
                .header(header::CONTENT_TYPE, "application/x-www-form-urlencoded"),
            Body::from(form.to_owned()),
        )
        .await
    }
}

/// The value of the form field `name` in `html`.
fn field(html: &str, name: &str) -> String {
    let at = html
        .find(&format!("name=\"{name}\" value=\""))
        .unwrap_or_else(|| panic!("no {name} in {html}"));
    let rest = &html[at + name.len() + 15..];
    rest[..rest.find('"').expect("end")].to_owned()
}

fn location(resp: &Response<Body>) -> &str {
    resp.headers()[header::LOCATION].to_str().expect("location")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_developer_signs_in_sees_the_departments_overview_and_signs_out() {
    let suite = Suite::start(Backend::Sqlite).await.expect("suite");
    create_tenant(&suite.channel, "kultur", "Oslo Kulturfabrikk").await;
    let mut b = Browser::new(&suite, true).await;

    // The sign-in page offers the development sign-in, in bokmål.
    let (resp, html) = b.get("/").await;
    assert_eq!(resp.status(), StatusCode::OK);
    assert!(html.contains("Utviklerinnlogging"), "{html}");
    let csrf = field(&html, "csrf");
    let before = b.cookie.clone().expect("a session for the form's token");

    // A wrong token is refused and signs nobody in.
    let (resp, _) = b
        .post(
            "/dev/sign-in",
            "csrf=forged&department=kultur&role=tenant-admin",
        )
        .await;
    assert_eq!(resp.status(), StatusCode::FORBIDDEN);
    // A department id the API would refuse: the error next to the field, in bokmål.
    let (resp, html) = b
        .post(
            "/dev/sign-in",
            &format!("csrf={csrf}&department=Kultur+Etaten&role=tenant-admin"),
        )
        .await;
    assert_eq!(resp.status(), StatusCode::BAD_REQUEST);
    assert!(
        html.contains("aria-describedby=\"department-error\""),
        "{html}"
    );
    assert!(
        html.contains("id=\"department-error\">Skriv avdelingens id"),
        "{html}"
    );

    // Signed in: a new session id, and the overview read through the gateway.
    let (resp, _) = b
        .post(
            "/dev/sign-in",
            &format!("csrf={csrf}&department=kultur&role=tenant-admin"),
        )
        .await;
    assert_eq!(resp.status(), StatusCode::SEE_OTHER);
    assert_eq!(location(&resp), "/overview");
    let after = b.cookie.clone().expect("cookie");
    assert_ne!(after, before, "a new session id at sign-in");
    let (resp, html) = b.get("/overview").await;
    assert_eq!(resp.status(), StatusCode::OK);
    assert!(html.contains("Oslo Kulturfabrikk"), "{html}");
    assert!(html.contains("Behandlingsansvarlig"), "{html}");
    assert!(
        html.contains("Logget inn som Avdelingsadministrator i kultur"),
        "{html}"
    );
    assert!(!html.contains("eyJ"), "the token never reaches the browser");

    // The id from before the sign-in is worth nothing now.
    let mut planted = Browser {
        cookie: Some(before),
        ..Browser::new(&suite, true).await
    };
    planted.app = b.app.clone();
    let (resp, _) = planted.get("/overview").await;
    assert_eq!(resp.status(), StatusCode::SEE_OTHER);
    assert_eq!(location(&resp), "/");

    // Signed out: the session is gone on the server, not only in this browser.
    let csrf = field(&html, "csrf");
    let signed_in_cookie = b.cookie.clone();
    let (resp, _) = b.post("/sign-out", &format!("csrf={csrf}")).await;
    assert_eq!(resp.status(), StatusCode::SEE_OTHER);
    assert_eq!(location(&resp), "/");
    b.cookie = signed_in_cookie;
    let (resp, _) = b.get("/overview").await;
    assert_eq!(resp.status(), StatusCode::SEE_OTHER, "signed out");
    assert_eq!(location(&resp), "/");
    suite.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_apis_refusal_is_shown_in_the_persons_language() {
    let suite = Suite::start(Backend::Sqlite).await.expect("suite");
    create_tenant(&suite.channel, "kultur", "Oslo Kulturfabrikk").await;
    let mut b = Browser::new(&suite, true).await;
    let (_, html) = b.get("/").await;
    let csrf = field(&html, "csrf");
    // A department that does not exist: the gateway refuses the token's tenant.
    let (resp, _) = b
        .post(
            "/dev/sign-in",
            &format!("csrf={csrf}&department=ghost-dept&role=auditor"),
        )
        .await;
    assert_eq!(resp.status(), StatusCode::SEE_OTHER);
    let (resp, html) = b
        .send(
            Request::get("/overview").header(header::ACCEPT_LANGUAGE, "en"),
            Body::empty(),
        )
        .await;
    assert_eq!(resp.status(), StatusCode::OK);
    assert!(
        html.contains("You may not see this in the department."),
        "{html}"
    );
    assert!(!html.contains("Oslo Kulturfabrikk"), "{html}");
    suite.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_the_development_key_there_is_no_development_sign_in() {
    let suite = Suite::start(Backend::Sqlite).await.expect("suite");
    let mut b = Browser::new(&suite, false).await;
    let (resp, html) = b.get("/").await;
    assert_eq!(resp.status(), StatusCode::OK);
    assert!(!html.contains("/dev/sign-in"), "{html}");
    assert!(!html.contains("Utviklerinnlogging"), "{html}");
    let (resp, _) = b
        .post("/dev/sign-in", "csrf=x&department=kultur&role=tenant-admin")
        .await;
    assert_eq!(resp.status(), StatusCode::NOT_FOUND);
    suite.stop().await;
}

/// Signs `b` in to `department` as `role` through the development sign-in.
async fn dev_sign_in(b: &mut Browser, department: &str, role: &str) {
    let (_, html) = b.get("/").await;
    let csrf = field(&html, "csrf");
    let (resp, _) = b
        .post(
            "/dev/sign-in",
            &format!("csrf={csrf}&department={department}&role={role}"),
        )
        .await;
    assert_eq!(resp.status(), StatusCode::SEE_OTHER);
    assert_eq!(location(&resp), "/overview");
}

/// The text of `html` with its tags and line breaks gone, spaces collapsed.
fn text(html: &str) -> String {
    let mut out = String::new();
    let mut in_tag = false;
    for c in html.chars() {
        match c {
            '<' => in_tag = true,
            '>' => {
                in_tag = false;
                out.push(' ');
            }
            c if !in_tag => out.push(c),
            _ => {}
        }
    }
    out.split_whitespace().collect::<Vec<_>>().join(" ")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_overview_counts_what_the_department_holds_from_cheap_calls() {
    use vern_proto::rights::v1 as rpb;
    use vern_proto::subjects::v1 as spb;
    use vern_tests::{authed, token};
    let suite = Suite::start(Backend::Sqlite).await.expect("suite");
    create_tenant(&suite.channel, "kultur", "Oslo Kulturfabrikk").await;
    let officer = token(&["privacy-officer"], &["kultur"], 600);
    let mut subjects =
        spb::subject_service_client::SubjectServiceClient::new(suite.channel.clone());
    let mut ids = vec![];
    for n in 0..3 {
        ids.push(
            subjects
                .create_subject(authed(
                    spb::CreateSubjectRequest {
                        email: format!("person{n}@example.no"),
                        request_id: format!("overview-{n}"),
                        ..Default::default()
                    },
                    &officer,
                ))
                .await
                .expect("create")
                .into_inner()
                .subject_id,
        );
    }
    subjects
        .erase_subject(authed(
            spb::EraseSubjectRequest {
                subject_id: ids[2].clone(),
                reason: "Art. 17 request".into(),
                request_id: "overview-erase".into(),
                ..Default::default()
            },
            &officer,
        ))
        .await
        .expect("erase");
    let mut rights = rpb::rights_service_client::RightsServiceClient::new(suite.channel.clone());
    for (n, kind) in [rpb::RequestType::Access, rpb::RequestType::Portability]
        .into_iter()
        .enumerate()
    {
        rights
            .submit_request(authed(
                rpb::SubmitRequestRequest {
                    r#type: kind as i32,
                    requester: Some(rpb::submit_request_request::Requester::SubjectId(
                        ids[n].clone(),
                    )),
                    channel: rpb::RequestChannel::Email as i32,
                    request_id: format!("overview-request-{n}"),
                    ..Default::default()
                },
                &officer,
            ))
            .await
            .expect("submit");
    }

    let mut b = Browser::new(&suite, true).await;
    dev_sign_in(&mut b, "kultur", "privacy-officer").await;
    let (resp, html) = b.get("/overview").await;
    assert_eq!(resp.status(), StatusCode::OK);
    let page = text(&html);
    assert!(
        page.contains("Aktive 2 Begrenset behandling 0 Slettet 1"),
        "subjects by state: {page}"
    );
    assert!(
        page.contains("Mottatt 2"),
        "open requests by status: {page}"
    );
    // A month from today (the legal deadline of Art. 12(3)), in words and numbers.
    assert!(page.contains("Nærmeste frist:"), "{page}");
    assert!(page.contains("Avsluttet: 0."), "{page}");
    assert!(!html.contains("person0@example.no"), "no personal data");
    assert!(page.contains("Siste sletterunde ingen ennå"), "{page}");

    // An auditor sees the audit part only: the counts are not theirs to see, and no
    // refusal notice stands in for them (the one notice is the controller details',
    // which the auditor's role does not read either).
    let mut auditor = Browser::new(&suite, true).await;
    dev_sign_in(&mut auditor, "kultur", "auditor").await;
    let (_, html) = auditor.get("/overview").await;
    let page = text(&html);
    assert!(!page.contains("Registrerte"), "{page}");
    assert!(!page.contains("Henvendelser om rettigheter"), "{page}");
    assert!(page.contains("Revisjonslogg"), "{page}");
    assert_eq!(html.matches("role=\"alert\"").count(), 1, "{html}");
    suite.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_person_of_two_departments_switches_between_them_and_to_no_other() {
    let suite = Suite::start(Backend::Sqlite).await.expect("suite");
    create_tenant(&suite.channel, "kultur", "Oslo Kulturfabrikk").await;
    create_tenant(&suite.channel, "musikk", "Bergen Musikkhus").await;
    create_tenant(&suite.channel, "okonomi", "Økonomiavdelingen").await;
    let mut b = Browser::new(&suite, true).await;
    dev_sign_in(&mut b, "kultur%2C+musikk", "tenant-admin").await;
    let (_, html) = b.get("/overview").await;
    assert!(
        html.contains("Oslo Kulturfabrikk"),
        "the first department: {html}"
    );
    assert!(
        html.contains("action=\"/department\""),
        "a switcher: {html}"
    );
    assert!(!html.contains("Bergen Musikkhus"), "{html}");
    let csrf = field(&html, "csrf");

    // A URL names no department: the page stays on the one chosen.
    let (_, html) = b.get("/overview?department=musikk&tenant=musikk").await;
    assert!(html.contains("Oslo Kulturfabrikk"), "{html}");

    // The switcher moves to the other department.
    let (resp, _) = b
        .post("/department", &format!("csrf={csrf}&department=musikk"))
        .await;
    assert_eq!(resp.status(), StatusCode::SEE_OTHER);
    let (_, html) = b.get("/overview").await;
    assert!(html.contains("Bergen Musikkhus"), "{html}");
    assert!(!html.contains("Oslo Kulturfabrikk"), "{html}");

    // Never to a department the token does not name, nor without the CSRF token.
    let (resp, _) = b
        .post("/department", &format!("csrf={csrf}&department=okonomi"))
        .await;
    assert_eq!(resp.status(), StatusCode::FORBIDDEN);
    let (resp, _) = b.post("/department", "csrf=forged&department=kultur").await;
    assert_eq!(resp.status(), StatusCode::FORBIDDEN);
    let (_, html) = b.get("/overview").await;
    assert!(html.contains("Bergen Musikkhus"), "unchanged: {html}");
    assert!(!html.contains("Økonomiavdelingen"), "{html}");
    suite.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_queue_lists_requests_nearest_deadline_first_with_filters_and_pages() {
    use vern_proto::rights::v1 as rpb;
    use vern_tests::{authed, token};
    let suite = Suite::start(Backend::Sqlite).await.expect("suite");
    create_tenant(&suite.channel, "kultur", "Oslo Kulturfabrikk").await;
    let officer = token(&["privacy-officer"], &["kultur"], 600);
    let mut rights = rpb::rights_service_client::RightsServiceClient::new(suite.channel.clone());
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .expect("time")
        .as_secs() as i64;
    // 50 access requests, 2 erasures and one access request received 40 days ago
    // (by letter): overdue, so first.
    let mut submit = async |n: usize, kind: rpb::RequestType, days_ago: i64| {
        rights
            .submit_request(authed(
                rpb::SubmitRequestRequest {
                    r#type: kind as i32,
                    requester: Some(rpb::submit_request_request::Requester::Identity(
                        rpb::Identity {
                            email: format!("asker{n}@example.no"),
                            ..Default::default()
                        },
                    )),
                    channel: rpb::RequestChannel::Paper as i32,
                    received_at: Some(prost_types::Timestamp {
                        seconds: now - days_ago * 86_400,
                        nanos: 0,
                    }),
                    request_id: format!("queue-{n}"),
                    ..Default::default()
                },
                &officer,
            ))
            .await
            .expect("submit");
    };
    for n in 0..50 {
        submit(n, rpb::RequestType::Access, 0).await;
    }
    submit(50, rpb::RequestType::Erasure, 1).await;
    submit(51, rpb::RequestType::Erasure, 1).await;
    submit(52, rpb::RequestType::Access, 40).await;

    let mut b = Browser::new(&suite, true).await;
    dev_sign_in(&mut b, "kultur", "privacy-officer").await;
    let rows = |html: &str| html.matches("<tr><td>").count();
    let (resp, html) = b.get("/requests").await;
    assert_eq!(resp.status(), StatusCode::OK);
    assert!(
        html.contains("href=\"/requests\" aria-current=\"page\""),
        "in the navigation"
    );
    assert_eq!(rows(&html), 50, "a page of 50");
    let first_row = &html[html.find("<tr><td>").expect("a row")..];
    let first_row = &first_row[..first_row.find("</tr>").expect("row end")];
    assert!(
        first_row.contains("Innsyn")
            && first_row.contains("class=\"due overdue\"")
            && first_row.contains("Forfalt for"),
        "the overdue request first, in words and colour: {first_row}"
    );
    assert!(text(&html).contains("Brev"), "the channel");
    assert!(
        !html.contains("@example.no"),
        "no personal data in the queue"
    );
    let next = html
        .split("href=\"")
        .find(|s| s.starts_with("/requests?page="))
        .and_then(|s| s.split('"').next())
        .expect("a next page link")
        .replace("&amp;", "&");
    let (_, html) = b.get(&next).await;
    assert_eq!(rows(&html), 3, "the rest");
    assert!(html.contains("Første side"), "{html}");
    assert!(!html.contains("Neste side"));

    // Filters: type, overdue.
    let (_, html) = b.get("/requests?type=erasure").await;
    assert_eq!(rows(&html), 2);
    assert_eq!(html.matches(">Sletting</a></td>").count(), 2, "{html}");
    assert!(
        html.contains("<option value=\"erasure\" selected>"),
        "the filter shows"
    );
    let (_, html) = b.get("/requests?overdue=1").await;
    assert_eq!(rows(&html), 1);
    let (_, html) = b.get("/requests?status=completed").await;
    assert_eq!(rows(&html), 0);
    assert!(html.contains("Ingen henvendelser passer."), "{html}");
    // A page token that is not the API's: said so, not an error page.
    let (resp, html) = b.get("/requests?page=not-a-token").await;
    assert_eq!(resp.status(), StatusCode::OK);
    assert!(
        html.contains("Denne siden av listen gjelder ikke lenger"),
        "{html}"
    );

    // An auditor's role does not read requests (yet): no link, and the page says so.
    let mut auditor = Browser::new(&suite, true).await;
    dev_sign_in(&mut auditor, "kultur", "auditor").await;
    let (_, html) = auditor.get("/overview").await;
    assert!(
        !html.contains("href=\"/requests\""),
        "no queue for the auditor"
    );
    let (_, html) = auditor.get("/requests").await;
    assert!(
        html.contains("Rollen din kan ikke lese avdelingens henvendelser."),
        "{html}"
    );
    assert_eq!(rows(&html), 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_requests_page_shows_its_timeline_and_never_another_departments_request() {
    use vern_proto::rights::v1 as rpb;
    use vern_tests::{authed, token, verify_and_fulfil};
    let suite = Suite::start(Backend::Sqlite).await.expect("suite");
    create_tenant(&suite.channel, "kultur", "Oslo Kulturfabrikk").await;
    create_tenant(&suite.channel, "idrett", "Oslo Idrettslag").await;
    let mut rights = rpb::rights_service_client::RightsServiceClient::new(suite.channel.clone());
    let mut submit = async |tenant: &str, n: &str| {
        rights
            .submit_request(authed(
                rpb::SubmitRequestRequest {
                    r#type: rpb::RequestType::Access as i32,
                    requester: Some(rpb::submit_request_request::Requester::Identity(
                        rpb::Identity {
                            email: format!("{n}@example.no"),
                            ..Default::default()
                        },
                    )),
                    channel: rpb::RequestChannel::Paper as i32,
                    request_id: format!("page-{n}"),
                    ..Default::default()
                },
                &token(&["privacy-officer"], &[tenant], 600),
            ))
            .await
            .expect("submit")
            .into_inner()
            .rights_request_id
    };
    let ours = submit("kultur", "ours").await;
    let theirs = submit("idrett", "theirs").await;
    verify_and_fulfil(&suite.channel, "kultur", &ours).await;

    let mut b = Browser::new(&suite, true).await;
    dev_sign_in(&mut b, "kultur", "privacy-officer").await;
    let (_, html) = b.get("/requests").await;
    assert!(
        html.contains(&format!("href=\"/requests/{ours}\"")),
        "linked from the queue: {html}"
    );
    let (resp, html) = b.get(&format!("/requests/{ours}")).await;
    assert_eq!(resp.status(), StatusCode::OK);
    let page = text(&html);
    assert!(page.contains("Henvendelse: Innsyn"), "{page}");
    let received = page
        .find("Mottatt (Brev)")
        .expect("received on the timeline");
    let verified = page
        .find("Identitet bekreftet: legitimasjon")
        .expect("verified on the timeline");
    let fulfilled = page.rfind("Fullført").expect("fulfilled on the timeline");
    assert!(
        received < verified && verified < fulfilled,
        "in order: {page}"
    );
    assert!(
        !html.contains("@example.no"),
        "no personal data on the page"
    );

    // Another department's request, an unknown id and no id at all: no such request.
    for path in [
        format!("/requests/{theirs}"),
        format!("/requests/{}", uuid::Uuid::new_v4()),
        "/requests/not-a-request".to_owned(),
    ] {
        let (resp, html) = b.get(&path).await;
        assert_eq!(resp.status(), StatusCode::NOT_FOUND, "{path}");
        assert!(
            html.contains("Det finnes ingen slik henvendelse i avdelingen."),
            "{path}: {html}"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_officer_acts_on_a_request_only_as_its_state_allows_and_never_over_a_newer_change() {
    use vern_proto::rights::v1 as rpb;
    use vern_tests::{authed, token};
    let suite = Suite::start(Backend::Sqlite).await.expect("suite");
    create_tenant(&suite.channel, "kultur", "Oslo Kulturfabrikk").await;
    let officer = token(&["privacy-officer"], &["kultur"], 600);
    let mut rights = rpb::rights_service_client::RightsServiceClient::new(suite.channel.clone());
    let mut submit = async |n: &str| {
        rights
            .submit_request(authed(
                rpb::SubmitRequestRequest {
                    r#type: rpb::RequestType::Access as i32,
                    requester: Some(rpb::submit_request_request::Requester::Identity(
                        rpb::Identity {
                            email: format!("{n}@example.no"),
                            ..Default::default()
                        },
                    )),
                    channel: rpb::RequestChannel::Email as i32,
                    request_id: format!("act-{n}"),
                    ..Default::default()
                },
                &officer,
            ))
            .await
            .expect("submit")
            .into_inner()
            .rights_request_id
    };
    let rid = submit("one").await;
    let other = submit("two").await;
    let mut b = Browser::new(&suite, true).await;
    dev_sign_in(&mut b, "kultur", "privacy-officer").await;
    let page = format!("/requests/{rid}");

    // RECEIVED: verify, extend and refuse are offered; fulfil is not.
    let (_, html) = b.get(&page).await;
    for action in ["verify", "extend", "refuse"] {
        assert!(
            html.contains(&format!("action=\"{page}/{action}\"")),
            "{action}: {html}"
        );
    }
    assert!(
        !html.contains(&format!("action=\"{page}/fulfil\"")),
        "not yet: {html}"
    );
    let form = |html: &str| {
        (
            field(html, "csrf"),
            field(html, "request_id"),
            field(html, "seen"),
        )
    };

    // A reason left empty: the API's refusal next to the field, in bokmål; no change.
    let (csrf, key, seen) = form(&html);
    let (resp, html) = b
        .post(
            &format!("{page}/extend"),
            &format!("csrf={csrf}&request_id={key}&seen={seen}&months=1&reason=&informed="),
        )
        .await;
    assert_eq!(resp.status(), StatusCode::BAD_REQUEST, "{html}");
    assert!(
        html.contains("id=\"extend-reason-error\""),
        "next to the field: {html}"
    );
    assert!(
        html.contains("Skriv begrunnelsen: den må være med."),
        "{html}"
    );

    // Verify: done, and the page by GET shows it, now offering fulfil.
    let (csrf, key, seen) = form(&html);
    let verify = format!("csrf={csrf}&request_id={key}&seen={seen}&method=id-document&note=");
    let (resp, _) = b.post(&format!("{page}/verify"), &verify).await;
    assert_eq!(resp.status(), StatusCode::SEE_OTHER);
    assert_eq!(location(&resp), page);
    // The same form sent again (a double click): the same answer, not a conflict.
    let (resp, _) = b.post(&format!("{page}/verify"), &verify).await;
    assert_eq!(
        resp.status(),
        StatusCode::SEE_OTHER,
        "a repeat is no conflict"
    );
    let (_, html) = b.get(&page).await;
    assert!(
        text(&html).contains("Identitet bekreftet: legitimasjon"),
        "{html}"
    );
    assert!(html.contains(&format!("action=\"{page}/fulfil\"")));
    assert!(
        !html.contains(&format!("action=\"{page}/verify\"")),
        "verified once"
    );

    // Another officer fulfils it meanwhile (through the API): the refusal form this
    // page still shows is a conflict, and the request stays fulfilled.
    let (csrf, key, seen) = form(&html);
    vern_tests::verify_and_fulfil(&suite.channel, "kultur", &other).await;
    rights
        .fulfil_request(authed(
            rpb::FulfilRequestRequest {
                rights_request_id: rid.clone(),
                request_id: "act-fulfil-elsewhere".into(),
                ..Default::default()
            },
            &officer,
        ))
        .await
        .expect("fulfilled elsewhere");
    let (resp, html) = b
        .post(
            &format!("{page}/refuse"),
            &format!("csrf={csrf}&request_id={key}&seen={seen}&ground=excessive&reason=Too+many"),
        )
        .await;
    assert_eq!(resp.status(), StatusCode::CONFLICT, "{html}");
    assert!(html.contains("Noen endret denne henvendelsen"), "{html}");
    let r = rights
        .get_request(authed(
            rpb::GetRequestRequest {
                rights_request_id: rid.clone(),
            },
            &officer,
        ))
        .await
        .expect("get")
        .into_inner();
    assert_eq!(
        r.status(),
        rpb::RequestStatus::Completed,
        "never overwritten"
    );
    assert!(
        !html.contains(&format!("action=\"{page}/refuse\"")),
        "nothing left to refuse"
    );

    // A forged CSRF token changes nothing.
    let (resp, _) = b
        .post(
            &format!("/requests/{other}/refuse"),
            "csrf=forged&request_id=x&seen=y&ground=excessive&reason=x",
        )
        .await;
    assert_eq!(resp.status(), StatusCode::FORBIDDEN);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_officer_registers_a_letter_once_with_its_legal_deadline_and_no_identifier_in_a_url() {
    use vern_proto::rights::v1 as rpb;
    use vern_tests::{authed, token};
    let suite = Suite::start(Backend::Sqlite).await.expect("suite");
    create_tenant(&suite.channel, "kultur", "Oslo Kulturfabrikk").await;
    let mut b = Browser::new(&suite, true).await;
    dev_sign_in(&mut b, "kultur", "privacy-officer").await;
    let (_, html) = b.get("/requests").await;
    assert!(
        html.contains("href=\"/requests/new\""),
        "intake from the queue"
    );
    let (resp, html) = b.get("/requests/new").await;
    assert_eq!(resp.status(), StatusCode::OK);
    let (csrf, key) = (field(&html, "csrf"), field(&html, "request_id"));

    // Nobody named: refused in bokmål, before the API; a bad e-mail: the API's refusal
    // next to the field; what was typed stays in the form.
    let (resp, html) = b
        .post(
            "/requests/new",
            &format!("csrf={csrf}&request_id={key}&type=access&channel=paper&received=2026-12-01"),
        )
        .await;
    assert_eq!(resp.status(), StatusCode::BAD_REQUEST);
    assert!(
        html.contains("Oppgi minst én av e-post, telefon eller fødselsnummer."),
        "{html}"
    );
    let (resp, html) = b
        .post(
            "/requests/new",
            &format!("csrf={csrf}&request_id={key}&type=access&channel=paper&received=2026-12-01&email=not-an-address"),
        )
        .await;
    assert_eq!(resp.status(), StatusCode::BAD_REQUEST, "{html}");
    assert!(
        html.contains("id=\"email-error\""),
        "next to the field: {html}"
    );
    assert!(html.contains("value=\"not-an-address\""), "kept: {html}");

    // Registered once, though sent twice; its page next, by id only.
    let letter = format!(
        "csrf={csrf}&request_id={key}&type=erasure&channel=paper&received=2026-12-01&email=kari%40example.no&national_id=&phone="
    );
    let (resp, _) = b.post("/requests/new", &letter).await;
    assert_eq!(resp.status(), StatusCode::SEE_OTHER);
    let first = location(&resp).to_owned();
    assert!(
        first.starts_with("/requests/") && !first.contains("example"),
        "{first}"
    );
    let (resp, _) = b.post("/requests/new", &letter).await;
    assert_eq!(location(&resp), first, "a double submit: the same request");
    let (_, html) = b.get(&first).await;
    let page = text(&html);
    assert!(page.contains("Henvendelse: Sletting"), "{page}");
    assert!(page.contains("Mottatt 2026-12-01"), "{page}");
    assert!(
        page.contains("Frist 2027-01-01"),
        "a month from receipt: {page}"
    );
    let officer = token(&["privacy-officer"], &["kultur"], 600);
    let listed = rpb::rights_service_client::RightsServiceClient::new(suite.channel.clone())
        .list_requests(authed(rpb::ListRequestsRequest::default(), &officer))
        .await
        .expect("list")
        .into_inner()
        .rights_requests;
    assert_eq!(listed.len(), 1, "one request");
    assert_eq!(listed[0].channel(), rpb::RequestChannel::Paper);

    // Received today (the form's default): sent twice, still one request — the same
    // date always stands for the same time.
    let (_, html) = b.get("/requests/new").await;
    let key = field(&html, "request_id");
    let today = html
        .split("name=\"received\" type=\"date\" value=\"")
        .nth(1)
        .and_then(|r| r.split('"').next())
        .expect("the date received, today by default")
        .to_owned();
    let call = format!(
        "csrf={csrf}&request_id={key}&type=access&channel=phone&received={today}&phone=%2B4791234567"
    );
    let (resp, _) = b.post("/requests/new", &call).await;
    assert_eq!(resp.status(), StatusCode::SEE_OTHER);
    let first = location(&resp).to_owned();
    let (resp, _) = b.post("/requests/new", &call).await;
    assert_eq!(
        resp.status(),
        StatusCode::SEE_OTHER,
        "a repeat received today"
    );
    assert_eq!(location(&resp), first);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_search_by_request_id_or_a_persons_identifier_is_a_post_and_finds_their_requests() {
    use vern_proto::rights::v1 as rpb;
    use vern_proto::subjects::v1 as spb;
    use vern_tests::{authed, token};
    let suite = Suite::start(Backend::Sqlite).await.expect("suite");
    create_tenant(&suite.channel, "kultur", "Oslo Kulturfabrikk").await;
    let officer = token(&["privacy-officer"], &["kultur"], 600);
    let subject = spb::subject_service_client::SubjectServiceClient::new(suite.channel.clone())
        .create_subject(authed(
            spb::CreateSubjectRequest {
                email: "ola@example.no".into(),
                national_id: "17058510068".into(),
                request_id: "search-subject".into(),
                ..Default::default()
            },
            &officer,
        ))
        .await
        .expect("subject")
        .into_inner()
        .subject_id;
    let mut rights = rpb::rights_service_client::RightsServiceClient::new(suite.channel.clone());
    let mut submit = async |requester, n: &str| {
        rights
            .submit_request(authed(
                rpb::SubmitRequestRequest {
                    r#type: rpb::RequestType::Access as i32,
                    requester: Some(requester),
                    channel: rpb::RequestChannel::Email as i32,
                    request_id: format!("search-{n}"),
                    ..Default::default()
                },
                &officer,
            ))
            .await
            .expect("submit")
            .into_inner()
            .rights_request_id
    };
    let theirs = submit(
        rpb::submit_request_request::Requester::SubjectId(subject.clone()),
        "theirs",
    )
    .await;
    submit(
        rpb::submit_request_request::Requester::Identity(rpb::Identity {
            email: "someone-else@example.no".into(),
            ..Default::default()
        }),
        "other",
    )
    .await;

    let mut b = Browser::new(&suite, true).await;
    dev_sign_in(&mut b, "kultur", "privacy-officer").await;
    let (_, html) = b.get("/requests").await;
    let csrf = field(&html, "csrf");
    // By e-mail and by national identity number: the person's request, and no other.
    for q in ["ola%40example.no", "17058510068"] {
        let (resp, html) = b
            .post("/requests/search", &format!("csrf={csrf}&q={q}"))
            .await;
        assert_eq!(resp.status(), StatusCode::OK);
        assert!(html.contains("Henvendelser funnet"), "{html}");
        assert!(
            html.contains(&format!("href=\"/requests/{theirs}\"")),
            "{q}: {html}"
        );
        assert_eq!(html.matches("<tr><td>").count(), 1, "{q}: {html}");
        assert!(
            !html.contains("ola@example.no") && !html.contains("17058510068"),
            "what was typed is not echoed: {html}"
        );
    }
    // By request id: its page.
    let (resp, _) = b
        .post("/requests/search", &format!("csrf={csrf}&q={theirs}"))
        .await;
    assert_eq!(resp.status(), StatusCode::SEE_OTHER);
    assert_eq!(location(&resp), format!("/requests/{theirs}"));
    // Nobody the department knows: nothing, said so.
    let (_, html) = b
        .post(
            "/requests/search",
            &format!("csrf={csrf}&q=nobody%40example.no"),
        )
        .await;
    assert!(html.contains("Fant ingenting."), "{html}");
    // A GET never searches, and a forged token does not either.
    let (resp, _) = b.get("/requests/search?q=ola%40example.no").await;
    assert_ne!(resp.status(), StatusCode::OK);
    let (resp, _) = b
        .post("/requests/search", "csrf=forged&q=ola%40example.no")
        .await;
    assert_eq!(resp.status(), StatusCode::FORBIDDEN);
}
