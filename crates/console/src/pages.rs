//! The pages and their handlers. Every text comes from the catalogs in the person's
//! language; templates hold markup only.

use askama::Template;
use axum::extract::{Form, State};
use axum::response::{Html, IntoResponse, Redirect, Response};
use http::{HeaderMap, HeaderValue, StatusCode, header};
use tower_sessions::Session;

use crate::Console;
use crate::auth::{self, ConsoleRole, SignedIn};
use crate::i18n::{self, Lang};

/// The texts of one page, in one language (what templates call `t.get("id")` on).
pub struct Texts<'a> {
    console: &'a Console,
    lang: Lang,
}

impl<'a> Texts<'a> {
    /// The texts of `console` in `lang`.
    pub fn new(console: &'a Console, lang: Lang) -> Self {
        Self { console, lang }
    }

    /// The message `id`.
    pub fn get(&self, id: &str) -> String {
        self.console.catalogs().text(self.lang, id, None)
    }

    /// Whether the catalog has the message `id`.
    pub fn has(&self, id: &str) -> bool {
        self.console.catalogs().has(self.lang, id)
    }

    /// The message `id` with `args`.
    pub fn with(&self, id: &str, args: &[(&'static str, String)]) -> String {
        let mut a = fluent_bundle::FluentArgs::new();
        for (k, v) in args {
            a.set(*k, v.clone());
        }
        self.console.catalogs().text(self.lang, id, Some(&a))
    }
}

/// The signed-in person's part of the frame: who, and the sign-out form's token.
pub struct UserNav {
    /// "Signed in as … in …".
    pub label: String,
    /// The session's CSRF token.
    pub csrf: String,
    /// The person's departments (the switcher shows when there are several).
    pub departments: Vec<String>,
    /// The department shown now.
    pub current: String,
    /// The rights request queue is in the navigation (roles that may read it).
    pub requests: bool,
}

/// One entry of the language switch.
pub struct LangOption {
    /// The code sent.
    pub code: &'static str,
    /// The language's own name.
    pub name: &'static str,
    /// The page's language.
    pub selected: bool,
}

/// What every page's frame needs.
pub struct Frame<'a> {
    /// The texts.
    pub t: Texts<'a>,
    /// `<html lang>`.
    pub lang: &'static str,
    /// The language switch.
    pub langs: Vec<LangOption>,
    /// Where the language switch returns to.
    pub back: String,
    /// The signed-in person, if any.
    pub user: Option<UserNav>,
}

impl<'a> Frame<'a> {
    fn new(console: &'a Console, lang: Lang, back: &str) -> Self {
        Frame {
            t: Texts { console, lang },
            lang: lang.code(),
            langs: Lang::ALL
                .iter()
                .map(|l| LangOption {
                    code: l.code(),
                    name: l.own_name(),
                    selected: *l == lang,
                })
                .collect(),
            back: back.to_owned(),
            user: None,
        }
    }

    pub(crate) async fn signed_in(
        console: &'a Console,
        lang: Lang,
        back: &str,
        who: &SignedIn,
        session: &Session,
    ) -> Self {
        let mut f = Frame::new(console, lang, back);
        let role = f.t.get(who.role.message());
        f.user = Some(UserNav {
            label: f.t.with(
                "signed-in-as",
                &[("role", role), ("department", who.tenant.clone())],
            ),
            csrf: auth::csrf_token(session).await,
            departments: who.departments(),
            current: who.tenant.clone(),
            requests: matches!(
                who.role,
                ConsoleRole::TenantAdmin | ConsoleRole::PrivacyOfficer
            ),
        });
        f
    }
}

/// One role of the development sign-in's form.
pub struct RoleOption {
    /// The role's name in tokens.
    pub value: &'static str,
    /// The role's name in the page's language.
    pub label: String,
}

#[derive(Template)]
#[template(path = "signin.html")]
struct SignIn<'a> {
    f: Frame<'a>,
    /// The development sign-in is offered.
    dev: bool,
    /// The sign-in through the organisation's OpenID provider is offered.
    idp: bool,
    csrf: String,
    department: String,
    department_error: Option<String>,
    role_error: Option<String>,
    roles: Vec<RoleOption>,
}

#[derive(Template)]
#[template(path = "overview.html")]
struct Overview<'a> {
    f: Frame<'a>,
    tenant: Option<vern_proto::tenants::v1::Tenant>,
    problem: Option<String>,
    none: String,
    figures: crate::overview::Figures,
}

#[derive(Template)]
#[template(path = "error.html")]
struct ErrorPage<'a> {
    f: Frame<'a>,
    message: String,
}

#[derive(Template)]
#[template(path = "signed-out.html")]
struct SignedOut<'a> {
    f: Frame<'a>,
    /// The provider's end-session URL the page moves on to.
    next: String,
}

/// After signing out here: the page that moves on to the OpenID provider's
/// end-session URL `next` (at once, and by a link if the browser does not).
pub(crate) fn signed_out(console: &Console, lang: Lang, next: &str) -> Response {
    let f = Frame::new(console, lang, "/");
    render(
        &SignedOut {
            f,
            next: next.to_owned(),
        },
        StatusCode::OK,
    )
}

/// The language of a request: the switch's cookie, else `Accept-Language`.
pub(crate) fn lang_of(headers: &HeaderMap) -> Lang {
    let cookie = headers
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .find_map(|c| c.trim().strip_prefix(i18n::COOKIE)?.strip_prefix('='));
    let accept = headers
        .get(header::ACCEPT_LANGUAGE)
        .and_then(|v| v.to_str().ok());
    Lang::negotiate(cookie, accept)
}

pub(crate) fn render(page: &impl Template, status: StatusCode) -> Response {
    match page.render() {
        Ok(html) => (status, Html(html)).into_response(),
        Err(e) => {
            tracing::error!(error = %e, "a console page did not render");
            StatusCode::INTERNAL_SERVER_ERROR.into_response()
        }
    }
}

/// An error page with the message `id`, in `lang`.
pub(crate) fn error_page(console: &Console, lang: Lang, status: StatusCode, id: &str) -> Response {
    let f = Frame::new(console, lang, "/");
    let message = f.t.get(id);
    render(&ErrorPage { f, message }, status)
}

/// `GET /`: the sign-in page, or the overview for someone signed in.
pub async fn sign_in(
    State(console): State<Console>,
    session: Session,
    headers: HeaderMap,
) -> Response {
    if auth::signed_in(&console, &session).await.is_some() {
        return Redirect::to("/overview").into_response();
    }
    let department = console
        .dev
        .as_ref()
        .and_then(|d| d.department.clone())
        .unwrap_or_default();
    sign_in_form(
        &console,
        &session,
        lang_of(&headers),
        &department,
        None,
        None,
    )
    .await
}

/// The sign-in page, with what was typed and the fields' errors (message ids).
pub(crate) async fn sign_in_form(
    console: &Console,
    session: &Session,
    lang: Lang,
    department: &str,
    department_error: Option<&str>,
    role_error: Option<&str>,
) -> Response {
    let f = Frame::new(console, lang, "/");
    let status = if department_error.is_some() || role_error.is_some() {
        StatusCode::BAD_REQUEST
    } else {
        StatusCode::OK
    };
    // A token (and so a stored session) only where a form needs one.
    let csrf = match console.dev {
        Some(_) => auth::csrf_token(session).await,
        None => String::new(),
    };
    let page = SignIn {
        dev: console.dev.is_some(),
        idp: console.oidc.is_some(),
        csrf,
        department: department.to_owned(),
        department_error: department_error.map(|id| f.t.get(id)),
        role_error: role_error.map(|id| f.t.get(id)),
        roles: ConsoleRole::ALL
            .iter()
            .map(|r| RoleOption {
                value: r.claim(),
                label: f.t.get(r.message()),
            })
            .collect(),
        f,
    };
    render(&page, status)
}

/// `GET /overview`: the department's overview, read through the gateway with the
/// person's own token.
pub async fn overview(
    State(console): State<Console>,
    session: Session,
    headers: HeaderMap,
) -> Response {
    let Some(who) = auth::signed_in(&console, &session).await else {
        return Redirect::to("/").into_response();
    };
    let lang = lang_of(&headers);
    let f = Frame::signed_in(&console, lang, "/overview", &who, &session).await;
    let figures = async {
        match console.gateway.clone() {
            Some(ch) => crate::overview::read(ch, &who, chrono::Utc::now()).await,
            None => crate::overview::Figures::default(),
        }
    };
    let (tenant, figures) = tokio::join!(tenant_of(&console, &who), figures);
    let (tenant, problem) = match tenant {
        Ok(t) => (Some(t), None),
        Err(id) => (None, Some(f.t.get(id))),
    };
    let none = f.t.get("overview-none");
    render(
        &Overview {
            f,
            tenant,
            problem,
            none,
            figures,
        },
        StatusCode::OK,
    )
}

/// The department's profile (GetTenant), or the message id of why not.
async fn tenant_of(
    console: &Console,
    who: &SignedIn,
) -> Result<vern_proto::tenants::v1::Tenant, &'static str> {
    use vern_proto::tenants::v1 as pb;
    let Some(channel) = console.gateway.clone() else {
        return Err("api-unavailable");
    };
    let req = crate::overview::authed(
        who,
        pb::GetTenantRequest {
            tenant_id: who.tenant.clone(),
        },
    )
    .ok_or("api-other")?;
    match pb::tenant_service_client::TenantServiceClient::new(channel)
        .get_tenant(req)
        .await
    {
        Ok(t) => Ok(t.into_inner()),
        Err(s) => Err(match s.code() {
            tonic::Code::PermissionDenied | tonic::Code::Unauthenticated => "api-denied",
            tonic::Code::NotFound => "api-not-found",
            tonic::Code::Unavailable | tonic::Code::DeadlineExceeded => "api-unavailable",
            _ => "api-other",
        }),
    }
}

/// The language switch's form.
#[derive(serde::Deserialize)]
pub struct LanguageForm {
    lang: String,
    #[serde(default)]
    back: String,
}

/// A path on this console to return to: absolute, not another host (`//host`), or `/`.
fn local_path(back: &str) -> &str {
    let ok = back.starts_with('/')
        && !back.starts_with("//")
        && !back.contains('\\')
        && !back.chars().any(char::is_control);
    if ok { back } else { "/" }
}

/// `POST /language`: remembers the language (a year) and returns to the page.
pub async fn set_language(
    State(console): State<Console>,
    headers: HeaderMap,
    Form(form): Form<LanguageForm>,
) -> Response {
    let Some(lang) = Lang::from_tag(&form.lang) else {
        return error_page(
            &console,
            lang_of(&headers),
            StatusCode::BAD_REQUEST,
            "error-not-found",
        );
    };
    let secure = if console.tls { "; Secure" } else { "" };
    let cookie = format!(
        "{}={}; Path=/; Max-Age=31536000; SameSite=Lax; HttpOnly{secure}",
        i18n::COOKIE,
        lang.code()
    );
    let mut resp = StatusCode::SEE_OTHER.into_response();
    let h = resp.headers_mut();
    if let Ok(v) = HeaderValue::from_str(local_path(&form.back)) {
        h.insert(header::LOCATION, v);
    }
    if let Ok(v) = HeaderValue::from_str(&cookie) {
        h.insert(header::SET_COOKIE, v);
    }
    resp
}

/// `GET /static/console.css`: the one stylesheet (a file: the CSP allows no inline
/// style).
pub async fn stylesheet() -> Response {
    (
        [
            (header::CONTENT_TYPE, "text/css; charset=utf-8"),
            (header::CACHE_CONTROL, "public, max-age=3600"),
        ],
        include_str!("../static/console.css"),
    )
        .into_response()
}

/// Any other path.
pub async fn not_found(State(console): State<Console>, headers: HeaderMap) -> Response {
    error_page(
        &console,
        lang_of(&headers),
        StatusCode::NOT_FOUND,
        "error-not-found",
    )
}

/// A date typed in a form (`YYYY-MM-DD`) as the time it stands for: the start of
/// the day (UTC) for today — a later time of today could be in the future — else noon
/// UTC of that day. The same date always gives the same time, so a form sent twice
/// (a double click, the back button) makes the same call, which the API's idempotency
/// answers as the first. `None`: not a date.
pub(crate) fn day_to_timestamp(date: &str) -> Option<prost_types::Timestamp> {
    let today = chrono::Utc::now().date_naive();
    let d = chrono::NaiveDate::parse_from_str(date.trim(), "%Y-%m-%d").ok()?;
    let at = if d == today {
        d.and_hms_opt(0, 0, 0)?
    } else {
        d.and_hms_opt(12, 0, 0)?
    }
    .and_utc();
    Some(prost_types::Timestamp {
        seconds: at.timestamp(),
        nanos: 0,
    })
}

#[cfg(test)]
mod tests {
    use super::local_path;

    #[test]
    fn the_switch_returns_only_to_this_console() {
        assert_eq!(local_path("/requests"), "/requests");
        for bad in [
            "//evil.example/",
            "https://evil.example/",
            "/\\evil",
            "",
            "x",
            "/a\nb",
        ] {
            assert_eq!(local_path(bad), "/", "{bad:?}");
        }
    }
}
