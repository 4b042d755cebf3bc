//! The pages and their handlers. Every text comes from the catalogs in the person's
//! language; templates hold markup only.

use askama::Template;
use axum::extract::{Form, State};
use axum::response::{Html, IntoResponse, Response};
use http::{HeaderMap, HeaderValue, StatusCode, header};

use crate::Console;
use crate::i18n::{self, Lang};

/// The texts of one page, in one language (what templates call `t.get("id")` on).
pub struct Texts<'a> {
    console: &'a Console,
    lang: Lang,
}

impl Texts<'_> {
    /// The message `id`.
    pub fn get(&self, id: &str) -> String {
        self.console.catalogs().text(self.lang, id, None)
    }
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
        }
    }
}

#[derive(Template)]
#[template(path = "signin.html")]
struct SignIn<'a> {
    f: Frame<'a>,
}

#[derive(Template)]
#[template(path = "error.html")]
struct ErrorPage<'a> {
    f: Frame<'a>,
    message: String,
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

fn render(page: &impl Template, status: StatusCode) -> Response {
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

/// `GET /`: the sign-in page.
pub async fn sign_in(State(console): State<Console>, headers: HeaderMap) -> Response {
    let f = Frame::new(&console, lang_of(&headers), "/");
    render(&SignIn { f }, StatusCode::OK)
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
