//! Who is signed in, kept in the server-side session (the browser holds only the
//! session cookie), and the development sign-in of `vern dev`.
//!
//! A session lasts at most [`LIFETIME`] from sign-in and ends after
//! [`IDLE_MINUTES`] without a request. Signing in gives the session a new id (no
//! fixation). Every form that changes something carries the session's CSRF token,
//! checked here, on top of the same-origin check of [`crate::security`].
//!
//! The development sign-in exists only when the console is given the development
//! key ([`DevSignIn`]: `vern dev`): the person picks a department and a role, and the
//! console signs a token for them with that key, as `vern token` does. The gateway
//! checks that token like any other, so a made-up department or a role it does not
//! grant gets the API's refusal, shown on the page.

use axum::extract::{Form, State};
use axum::response::{IntoResponse, Redirect, Response};
use http::{HeaderMap, StatusCode};
use serde::{Deserialize, Serialize};
use tower_sessions::Session;

use crate::Console;

/// The session cookie: `__Host-` (this host only, path `/`, `Secure`), HttpOnly,
/// SameSite=Lax.
pub const COOKIE: &str = "__Host-vern_session";
/// Minutes without a request after which a session ends.
pub const IDLE_MINUTES: i64 = 30;
/// The longest a session lasts, from sign-in, in seconds (8 hours).
pub const LIFETIME: i64 = 8 * 3600;

const SIGNED_IN: &str = "signed_in";
const CSRF: &str = "csrf";

/// The development sign-in's key and the claims its tokens carry.
#[derive(Clone)]
pub struct DevSignIn {
    /// The HS256 development key the gateway accepts.
    pub secret: Vec<u8>,
    /// The tokens' issuer (`auth.issuer`).
    pub issuer: String,
    /// The tokens' audience (`auth.audience`).
    pub audience: String,
    /// The department the form offers first (`vern dev`'s demo department), if any.
    pub department: Option<String>,
}

impl std::fmt::Debug for DevSignIn {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("DevSignIn")
            .field("issuer", &self.issuer)
            .finish_non_exhaustive()
    }
}

/// The roles a person may sign in with.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum ConsoleRole {
    /// A department admin.
    TenantAdmin,
    /// A privacy officer.
    PrivacyOfficer,
    /// An auditor.
    Auditor,
}

impl ConsoleRole {
    /// Every role, in the order the form offers them.
    pub const ALL: [ConsoleRole; 3] = [
        ConsoleRole::TenantAdmin,
        ConsoleRole::PrivacyOfficer,
        ConsoleRole::Auditor,
    ];

    /// The role's name in tokens.
    pub fn claim(self) -> &'static str {
        match self {
            ConsoleRole::TenantAdmin => "tenant-admin",
            ConsoleRole::PrivacyOfficer => "privacy-officer",
            ConsoleRole::Auditor => "auditor",
        }
    }

    /// The id of the role's name in the catalogs.
    pub fn message(self) -> &'static str {
        match self {
            ConsoleRole::TenantAdmin => "role-tenant-admin",
            ConsoleRole::PrivacyOfficer => "role-privacy-officer",
            ConsoleRole::Auditor => "role-auditor",
        }
    }

    fn from_claim(s: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|r| r.claim() == s)
    }
}

/// Who is signed in, in the session.
#[derive(Clone, Serialize, Deserialize)]
pub struct SignedIn {
    /// The bearer token every call to the gateway carries (never sent to the browser).
    pub token: String,
    /// The department the pages show now: one of `tenants`.
    pub tenant: String,
    /// Every department the token names (the switcher's choices); empty in sessions
    /// from before the switcher: then `tenant` alone.
    #[serde(default)]
    pub tenants: Vec<String>,
    /// The role.
    pub role: ConsoleRole,
    /// When they signed in (seconds since the epoch).
    pub since: i64,
    /// The OpenID provider's tokens, for a person signed in through it (`None`: the
    /// development sign-in).
    #[serde(default)]
    pub idp: Option<IdpTokens>,
}

impl std::fmt::Debug for SignedIn {
    // Never the bearer token.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SignedIn")
            .field("tenant", &self.tenant)
            .field("tenants", &self.tenants)
            .field("role", &self.role)
            .field("since", &self.since)
            .field("idp", &self.idp)
            .finish_non_exhaustive()
    }
}

/// What the session keeps of the provider's tokens besides the access token.
#[derive(Clone, Serialize, Deserialize)]
pub struct IdpTokens {
    /// The refresh token, if the provider gave one.
    pub refresh_token: Option<String>,
    /// The ID token (the hint of RP-initiated logout).
    pub id_token: String,
    /// When the access token runs out (seconds since the epoch).
    pub expires_at: i64,
}

impl std::fmt::Debug for IdpTokens {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("IdpTokens")
            .field("expires_at", &self.expires_at)
            .finish_non_exhaustive()
    }
}

fn now() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs() as i64)
}

/// Who is signed in to `session`, if anyone and not past the session's lifetime (a
/// session past it is ended here). An access token from the OpenID provider that is
/// about to run out is refreshed first; if the provider refuses, the session ends.
pub async fn signed_in(console: &Console, session: &Session) -> Option<SignedIn> {
    let mut who: SignedIn = session.get(SIGNED_IN).await.ok().flatten()?;
    if now() - who.since > LIFETIME {
        let _ = session.flush().await;
        return None;
    }
    let due = who
        .idp
        .as_ref()
        .filter(|t| t.expires_at - now() < crate::oidc::REFRESH_MARGIN)
        .cloned();
    if let Some(tokens) = due {
        let Some(oidc) = console.oidc.as_ref() else {
            let _ = session.flush().await;
            return None;
        };
        match oidc.refresh(&tokens).await {
            Ok(g) => {
                // The departments may have changed at the provider meanwhile.
                if !g.tenants.contains(&who.tenant) {
                    who.tenant = g.tenants[0].clone();
                }
                who.tenants = g.tenants;
                who.role = g.role;
                who.token = g.access_token;
                who.idp = Some(g.tokens);
                if let Err(e) = session.insert(SIGNED_IN, &who).await {
                    tracing::warn!(error = %e, "the console session could not keep refreshed tokens");
                }
            }
            Err(e) => {
                tracing::info!(error = %e, "refreshing a console session's token failed; the session ends");
                let _ = session.flush().await;
                return None;
            }
        }
    }
    Some(who)
}

/// The session's CSRF token, made on first use.
pub async fn csrf_token(session: &Session) -> String {
    if let Ok(Some(t)) = session.get::<String>(CSRF).await {
        return t;
    }
    let t = format!(
        "{}{}",
        uuid::Uuid::new_v4().simple(),
        uuid::Uuid::new_v4().simple()
    );
    if let Err(e) = session.insert(CSRF, &t).await {
        tracing::warn!(error = %e, "the console session could not keep its CSRF token");
    }
    t
}

/// Whether `given` is the session's CSRF token.
pub async fn csrf_ok(session: &Session, given: &str) -> bool {
    match session.get::<String>(CSRF).await {
        Ok(Some(t)) => !given.is_empty() && t.len() == given.len() && t == given,
        _ => false,
    }
}

/// Who sends a form that changes something: the signed-in person, if the form carries
/// the session's CSRF token (else the refusal page) and someone is signed in (else
/// the sign-in page).
pub(crate) async fn form_sender(
    console: &Console,
    session: &Session,
    lang: crate::i18n::Lang,
    csrf: &str,
) -> Result<SignedIn, Response> {
    if !csrf_ok(session, csrf).await {
        return Err(crate::pages::error_page(
            console,
            lang,
            StatusCode::FORBIDDEN,
            "error-forbidden",
        ));
    }
    signed_in(console, session)
        .await
        .ok_or_else(|| Redirect::to("/").into_response())
}

/// A department id as the API takes it: 3–63 lower-case letters, digits and `-`,
/// starting with a letter.
fn department_ok(s: &str) -> bool {
    (3..=63).contains(&s.len())
        && s.starts_with(|c: char| c.is_ascii_lowercase())
        && s.chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-')
}

/// The development sign-in's form.
#[derive(Deserialize)]
pub struct DevForm {
    #[serde(default)]
    csrf: String,
    #[serde(default)]
    department: String,
    #[serde(default)]
    role: String,
}

/// `POST /dev/sign-in`.
pub async fn dev_sign_in(
    State(console): State<Console>,
    session: Session,
    headers: HeaderMap,
    Form(form): Form<DevForm>,
) -> Response {
    let lang = crate::pages::lang_of(&headers);
    let Some(dev) = console.dev.clone() else {
        return crate::pages::error_page(&console, lang, StatusCode::NOT_FOUND, "error-not-found");
    };
    if !csrf_ok(&session, &form.csrf).await {
        return crate::pages::error_page(&console, lang, StatusCode::FORBIDDEN, "error-forbidden");
    }
    // One department, or several separated by commas (a person of several departments:
    // the switcher then offers them).
    let departments: Vec<String> = form
        .department
        .split(',')
        .map(|d| d.trim().to_owned())
        .filter(|d| !d.is_empty())
        .collect();
    let department = form.department.trim().to_owned();
    let role = ConsoleRole::from_claim(&form.role);
    let department_error = (departments.is_empty()
        || departments.len() > MAX_DEPARTMENTS
        || !departments.iter().all(|d| department_ok(d)))
    .then_some("field-department-invalid");
    let role_error = role.is_none().then_some("field-role-invalid");
    let (Some(role), None) = (role, department_error) else {
        return crate::pages::sign_in_form(
            &console,
            &session,
            lang,
            &department,
            department_error,
            role_error,
        )
        .await;
    };
    let at = now();
    let claims = vern_kit::auth::Claims {
        sub: format!("dev-{}", role.claim()),
        tenant: departments.clone(),
        roles: vec![role.claim().to_owned()],
        iss: dev.issuer.clone(),
        aud: dev.audience.clone(),
        exp: at + LIFETIME,
        nbf: at,
        iat: at,
    };
    let token = match vern_kit::auth::sign_hs256(&claims, &dev.secret) {
        Ok(t) => t,
        Err(e) => {
            tracing::error!(error = %e, "signing a development token failed");
            return crate::pages::error_page(
                &console,
                lang,
                StatusCode::INTERNAL_SERVER_ERROR,
                "api-other",
            );
        }
    };
    let who = SignedIn {
        token,
        tenant: departments[0].clone(),
        tenants: departments,
        role,
        since: at,
        idp: None,
    };
    keep_sign_in(&console, lang, &session, who).await
}

/// Keeps a new sign-in in `session` under a new session id (an id planted before it
/// is worth nothing after) and answers with the overview.
pub(crate) async fn keep_sign_in(
    console: &Console,
    lang: crate::i18n::Lang,
    session: &Session,
    who: SignedIn,
) -> Response {
    let stored = async {
        session.cycle_id().await?;
        session.insert(SIGNED_IN, who).await
    };
    to_overview(console, lang, stored.await)
}

/// After a change to the signed-in person kept in the session: the overview, or why
/// the session could not keep it.
fn to_overview(
    console: &Console,
    lang: crate::i18n::Lang,
    kept: Result<(), tower_sessions::session::Error>,
) -> Response {
    match kept {
        Ok(()) => Redirect::to("/overview").into_response(),
        Err(e) => {
            tracing::error!(error = %e, "the console session could not be kept");
            crate::pages::error_page(
                console,
                lang,
                StatusCode::SERVICE_UNAVAILABLE,
                "api-unavailable",
            )
        }
    }
}

/// The most departments one development sign-in names.
const MAX_DEPARTMENTS: usize = 20;

impl SignedIn {
    /// Every department the person may switch to.
    pub fn departments(&self) -> Vec<String> {
        if self.tenants.is_empty() {
            vec![self.tenant.clone()]
        } else {
            self.tenants.clone()
        }
    }
}

/// The department switcher's form.
#[derive(Deserialize)]
pub struct DepartmentForm {
    #[serde(default)]
    csrf: String,
    #[serde(default)]
    department: String,
}

/// `POST /department`: shows another of the person's departments. Only one the token
/// names (the gateway would refuse any other anyway), by a form with the session's
/// CSRF token: never by URL alone.
pub async fn switch_department(
    State(console): State<Console>,
    session: Session,
    headers: HeaderMap,
    Form(form): Form<DepartmentForm>,
) -> Response {
    let lang = crate::pages::lang_of(&headers);
    let mut who = match form_sender(&console, &session, lang, &form.csrf).await {
        Ok(who) => who,
        Err(answer) => return answer,
    };
    if !who.departments().contains(&form.department) {
        return crate::pages::error_page(&console, lang, StatusCode::FORBIDDEN, "api-denied");
    }
    who.tenants = who.departments();
    who.tenant = form.department;
    to_overview(&console, lang, session.insert(SIGNED_IN, who).await)
}

/// A form carrying only the CSRF token.
#[derive(Deserialize)]
pub struct CsrfForm {
    #[serde(default)]
    csrf: String,
}

/// `POST /sign-out`: ends the session here, and at the OpenID provider when the
/// person signed in through one that offers RP-initiated logout.
pub async fn sign_out(
    State(console): State<Console>,
    session: Session,
    headers: HeaderMap,
    Form(form): Form<CsrfForm>,
) -> Response {
    let lang = crate::pages::lang_of(&headers);
    if !csrf_ok(&session, &form.csrf).await {
        return crate::pages::error_page(&console, lang, StatusCode::FORBIDDEN, "error-forbidden");
    }
    let tokens: Option<IdpTokens> = session
        .get::<SignedIn>(SIGNED_IN)
        .await
        .ok()
        .flatten()
        .and_then(|w| w.idp);
    let at_provider = match (console.oidc.as_ref(), tokens) {
        (Some(oidc), Some(t)) => oidc.logout_url(&t).await,
        _ => None,
    };
    if let Err(e) = session.flush().await {
        tracing::warn!(error = %e, "the console session could not be ended");
    }
    match at_provider {
        // A page that moves on to the provider, not a redirect: a form's redirect to
        // another origin is stopped by the CSP's `form-action 'self'`.
        Some(url) => crate::pages::signed_out(&console, lang, url.as_str()),
        None => Redirect::to("/").into_response(),
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn department_ids_as_the_api_takes_them() {
        for ok in ["kultur", "dept-a", "a12"] {
            assert!(super::department_ok(ok), "{ok}");
        }
        for bad in [
            "",
            "ab",
            "Kultur",
            "1abc",
            "dept a",
            "dept/a",
            &"a".repeat(64),
        ] {
            assert!(!super::department_ok(bad), "{bad}");
        }
    }

    #[test]
    fn the_bearer_token_never_shows_in_debug_output() {
        let who = super::SignedIn {
            token: "secret-bearer-token".into(),
            tenant: "kultur".into(),
            tenants: vec![],
            role: super::ConsoleRole::Auditor,
            since: 0,
            idp: Some(super::IdpTokens {
                refresh_token: Some("secret-refresh-token".into()),
                id_token: "secret-id-token".into(),
                expires_at: 0,
            }),
        };
        let shown = format!("{who:?}");
        assert!(shown.contains("kultur"), "{shown}");
        assert!(!shown.contains("secret"), "{shown}");
    }
}
