//! Sign-in through the organisation's OpenID provider: the authorization code flow
//! with PKCE, as a confidential client (backend-for-frontend). The provider's tokens
//! stay in the server-side session; the browser holds only the session cookie.
//!
//! The access token is what every call to the gateway carries, so the gateway checks
//! it as it checks any client's (its JWKS settings); the console reads its `tenant`
//! and `roles` claims only to draw the frame. The ID token is verified here (issuer,
//! audience, signature, nonce) and kept for RP-initiated logout. Before the access
//! token runs out it is refreshed with the refresh token; a refresh the provider
//! refuses ends the session.

use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::extract::{Query, State};
use axum::response::{IntoResponse, Redirect, Response};
use base64::Engine as _;
use http::{HeaderMap, StatusCode};
use openidconnect::core::{CoreAuthenticationFlow, CoreClient, CoreIdToken};
use openidconnect::{
    AccessToken, AuthorizationCode, ClientId, ClientSecret, CsrfToken, IssuerUrl, LogoutRequest,
    Nonce, OAuth2TokenResponse, PkceCodeChallenge, PkceCodeVerifier, PostLogoutRedirectUrl,
    ProviderMetadataWithLogout, RedirectUrl, RefreshToken, Scope, TokenResponse,
};
use serde::{Deserialize, Serialize};
use tower_sessions::Session;

use crate::Console;
use crate::auth::{ConsoleRole, IdpTokens, SignedIn};

/// The path the provider sends the person back to.
pub const CALLBACK: &str = "/oidc/callback";
/// How long discovered provider metadata (endpoints, signing keys) is kept.
const METADATA_TTL: Duration = Duration::from_secs(3600);
/// A sign-in started longer ago than this is not finished (seconds).
const PENDING_TTL: i64 = 600;
/// An access token this close to its expiry is refreshed first (seconds).
pub const REFRESH_MARGIN: i64 = 60;

const PENDING: &str = "oidc_pending";

/// How the console signs people in through the provider.
#[derive(Clone)]
pub struct OidcSettings {
    /// The provider's issuer URL (discovery is read from it).
    pub issuer_url: String,
    /// The console's client id at the provider.
    pub client_id: String,
    /// The console's client secret.
    pub client_secret: String,
    /// The address people reach the console at (the redirect and post-logout URLs
    /// are made from it).
    pub public_url: String,
    /// Scopes asked for besides `openid`.
    pub scopes: Vec<String>,
    /// The resource indicator (RFC 8707) of vern's API, e.g. `urn:vern`, sent when
    /// set: the provider then issues an access token for it.
    pub resource: Option<String>,
}

impl std::fmt::Debug for OidcSettings {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("OidcSettings")
            .field("issuer_url", &self.issuer_url)
            .field("client_id", &self.client_id)
            .finish_non_exhaustive()
    }
}

/// What went wrong in a sign-in, a refresh or a sign-out. Never carries a token.
#[derive(Debug, thiserror::Error)]
pub enum OidcError {
    /// The console's own settings do not make a client.
    #[error("the console's OpenID settings are wrong: {0}")]
    Settings(String),
    /// The provider could not be reached, or answered with an error.
    #[error("the OpenID provider did not answer as expected: {0}")]
    Provider(String),
    /// The answer does not belong to a sign-in this session started.
    #[error("the sign-in answer does not match a sign-in this session started")]
    State,
    /// The ID token did not verify.
    #[error("the ID token did not verify: {0}")]
    IdToken(String),
    /// The access token names no department, or no role the console knows.
    #[error("the access token names no department or no console role")]
    NoAccess,
}

/// The sign-in through the provider (cheap to clone).
#[derive(Clone, Debug)]
pub struct Oidc {
    settings: Arc<OidcSettings>,
    http: openidconnect::reqwest::Client,
    discovered: Arc<tokio::sync::Mutex<Discovered>>,
}

/// The provider's metadata and when it was read.
type Discovered = Option<(Arc<ProviderMetadataWithLogout>, Instant)>;

/// A client made from discovered metadata: an authorization endpoint, a token and a
/// userinfo endpoint if the provider names them.
type DiscoveredClient = CoreClient<
    openidconnect::EndpointSet,
    openidconnect::EndpointNotSet,
    openidconnect::EndpointNotSet,
    openidconnect::EndpointNotSet,
    openidconnect::EndpointMaybeSet,
    openidconnect::EndpointMaybeSet,
>;

/// A sign-in started and not yet finished, in the session.
#[derive(Serialize, Deserialize)]
struct Pending {
    state: String,
    nonce: String,
    verifier: String,
    started: i64,
}

/// The claims of the access token the console draws the frame from.
#[derive(Deserialize)]
struct AccessClaims {
    #[serde(default)]
    tenant: OneOrMany,
    #[serde(default)]
    roles: Vec<String>,
}

#[derive(Deserialize, Default)]
#[serde(untagged)]
enum OneOrMany {
    #[default]
    None,
    One(String),
    Many(Vec<String>),
}

/// Fresh tokens from the provider, and what the frame needs of them.
pub struct Granted {
    /// The access token (the bearer of every gateway call).
    pub access_token: String,
    /// The departments the token names.
    pub tenants: Vec<String>,
    /// The console role the token's roles give.
    pub role: ConsoleRole,
    /// The refresh token, ID token and expiry.
    pub tokens: IdpTokens,
}

fn now() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs() as i64)
}

/// The departments and the console role an access token gives (read, not verified:
/// the token came straight from the provider's token endpoint, and the gateway
/// verifies it on every call).
fn access_of(access_token: &str) -> Result<(Vec<String>, ConsoleRole), OidcError> {
    let payload = access_token.split('.').nth(1).ok_or(OidcError::NoAccess)?;
    let bytes = base64::engine::general_purpose::URL_SAFE_NO_PAD
        .decode(payload.trim_end_matches('='))
        .map_err(|_| OidcError::NoAccess)?;
    let claims: AccessClaims = serde_json::from_slice(&bytes).map_err(|_| OidcError::NoAccess)?;
    let tenants = match claims.tenant {
        OneOrMany::None => vec![],
        OneOrMany::One(t) => vec![t],
        OneOrMany::Many(t) => t,
    };
    // The role with the widest view of the console, when the token carries several.
    let role = ConsoleRole::ALL
        .into_iter()
        .find(|r| claims.roles.iter().any(|c| c == r.claim()))
        .ok_or(OidcError::NoAccess)?;
    if tenants.is_empty() {
        return Err(OidcError::NoAccess);
    }
    Ok((tenants, role))
}

impl Oidc {
    /// A sign-in through the provider of `settings`; the provider is asked for its
    /// metadata at the first sign-in, so the console starts while it is away.
    pub fn new(settings: OidcSettings) -> Result<Self, OidcError> {
        IssuerUrl::new(settings.issuer_url.clone())
            .map_err(|e| OidcError::Settings(format!("issuer_url: {e}")))?;
        RedirectUrl::new(format!("{}{CALLBACK}", settings.public_url))
            .map_err(|e| OidcError::Settings(format!("public_url: {e}")))?;
        let http = openidconnect::reqwest::Client::builder()
            // The provider's answers are never followed elsewhere (no SSRF by redirect).
            .redirect(openidconnect::reqwest::redirect::Policy::none())
            .timeout(Duration::from_secs(15))
            .build()
            .map_err(|e| OidcError::Settings(format!("HTTP client: {e}")))?;
        Ok(Self {
            settings: Arc::new(settings),
            http,
            discovered: Arc::default(),
        })
    }

    /// The provider's metadata, discovered again after [`METADATA_TTL`] or when
    /// `fresh` (a signature that did not verify: the keys may have rotated).
    async fn metadata(&self, fresh: bool) -> Result<Arc<ProviderMetadataWithLogout>, OidcError> {
        let mut cached = self.discovered.lock().await;
        if let Some((m, at)) = cached.as_ref()
            && !fresh
            && at.elapsed() < METADATA_TTL
        {
            return Ok(m.clone());
        }
        let issuer = IssuerUrl::new(self.settings.issuer_url.clone())
            .map_err(|e| OidcError::Settings(format!("issuer_url: {e}")))?;
        let m = ProviderMetadataWithLogout::discover_async(issuer, &self.http)
            .await
            .map_err(|e| OidcError::Provider(format!("discovery: {e}")))?;
        let m = Arc::new(m);
        *cached = Some((m.clone(), Instant::now()));
        Ok(m)
    }

    fn redirect_url(&self) -> Result<RedirectUrl, OidcError> {
        RedirectUrl::new(format!("{}{CALLBACK}", self.settings.public_url))
            .map_err(|e| OidcError::Settings(format!("public_url: {e}")))
    }

    async fn client(&self, fresh: bool) -> Result<DiscoveredClient, OidcError> {
        let m = self.metadata(fresh).await?;
        Ok(CoreClient::from_provider_metadata(
            (*m).clone(),
            ClientId::new(self.settings.client_id.clone()),
            Some(ClientSecret::new(self.settings.client_secret.clone())),
        )
        .set_redirect_uri(self.redirect_url()?))
    }

    /// The provider's authorization URL for a new sign-in, and what the session keeps
    /// to finish it.
    async fn begin(&self) -> Result<(url::Url, Pending), OidcError> {
        let client = self.client(false).await?;
        let (challenge, verifier) = PkceCodeChallenge::new_random_sha256();
        let mut request = client
            .authorize_url(
                CoreAuthenticationFlow::AuthorizationCode,
                CsrfToken::new_random,
                Nonce::new_random,
            )
            .set_pkce_challenge(challenge);
        for s in &self.settings.scopes {
            request = request.add_scope(Scope::new(s.clone()));
        }
        if let Some(r) = &self.settings.resource {
            request = request.add_extra_param("resource", r.clone());
        }
        let (url, state, nonce) = request.url();
        Ok((
            url,
            Pending {
                state: state.secret().clone(),
                nonce: nonce.secret().clone(),
                verifier: verifier.secret().clone(),
                started: now(),
            },
        ))
    }

    /// Exchanges `code` for tokens and verifies the ID token against `pending`.
    async fn finish(&self, code: String, pending: Pending) -> Result<Granted, OidcError> {
        let client = self.client(false).await?;
        let mut request = client
            .exchange_code(AuthorizationCode::new(code))
            .map_err(|e| OidcError::Provider(format!("token endpoint: {e}")))?
            .set_pkce_verifier(PkceCodeVerifier::new(pending.verifier));
        if let Some(r) = &self.settings.resource {
            request = request.add_extra_param("resource", r.clone());
        }
        let response = request
            .request_async(&self.http)
            .await
            .map_err(|e| OidcError::Provider(format!("code exchange: {}", describe(&e))))?;
        let id_token = response
            .id_token()
            .ok_or_else(|| OidcError::IdToken("the provider sent no ID token".into()))?;
        let nonce = Nonce::new(pending.nonce);
        if let Err(e) = id_token.claims(&client.id_token_verifier(), &nonce) {
            // The provider may have rotated its keys since discovery: look once more.
            let client = self.client(true).await?;
            id_token
                .claims(&client.id_token_verifier(), &nonce)
                .map_err(|_| OidcError::IdToken(e.to_string()))?;
        }
        let id_token = id_token.to_string();
        granted(
            response.access_token(),
            response.refresh_token().map(|t| t.secret().clone()),
            response.expires_in(),
            id_token,
        )
    }

    /// New tokens for `tokens` by its refresh token (none, or refused: `Err`).
    pub async fn refresh(&self, tokens: &IdpTokens) -> Result<Granted, OidcError> {
        let Some(refresh) = tokens.refresh_token.clone() else {
            return Err(OidcError::Provider(
                "no refresh token to refresh with".into(),
            ));
        };
        let client = self.client(false).await?;
        let refresh = RefreshToken::new(refresh);
        let mut request = client
            .exchange_refresh_token(&refresh)
            .map_err(|e| OidcError::Provider(format!("token endpoint: {e}")))?;
        if let Some(r) = &self.settings.resource {
            request = request.add_extra_param("resource", r.clone());
        }
        let response = request
            .request_async(&self.http)
            .await
            .map_err(|e| OidcError::Provider(format!("refresh: {}", describe(&e))))?;
        granted(
            response.access_token(),
            // A provider that does not rotate refresh tokens sends none back.
            Some(
                response
                    .refresh_token()
                    .map_or(refresh.secret().clone(), |t| t.secret().clone()),
            ),
            response.expires_in(),
            response
                .id_token()
                .map_or(tokens.id_token.clone(), |t| t.to_string()),
        )
    }

    /// Where to send the person to end their session at the provider too, if it
    /// offers RP-initiated logout.
    pub async fn logout_url(&self, tokens: &IdpTokens) -> Option<url::Url> {
        let m = self.metadata(false).await.ok()?;
        let end = m.additional_metadata().end_session_endpoint.clone()?;
        let mut request =
            LogoutRequest::from(end).set_client_id(ClientId::new(self.settings.client_id.clone()));
        if let Ok(back) = PostLogoutRedirectUrl::new(format!("{}/", self.settings.public_url)) {
            request = request.set_post_logout_redirect_uri(back);
        }
        if let Ok(id_token) = tokens.id_token.parse::<CoreIdToken>() {
            request = request.set_id_token_hint(&id_token);
        }
        Some(request.http_get_url())
    }
}

/// A token request's error, without the provider's free text beyond its error code.
fn describe<E: std::error::Error>(e: &E) -> String {
    let mut s = e.to_string();
    let mut source = e.source();
    while let Some(inner) = source {
        s.push_str(": ");
        s.push_str(&inner.to_string());
        source = inner.source();
    }
    s
}

fn granted(
    access: &AccessToken,
    refresh_token: Option<String>,
    expires_in: Option<Duration>,
    id_token: String,
) -> Result<Granted, OidcError> {
    let access_token = access.secret().clone();
    let (tenants, role) = access_of(&access_token)?;
    // A provider that does not say is taken to issue short-lived tokens.
    let expires_at = now() + expires_in.map_or(300, |d| d.as_secs() as i64);
    Ok(Granted {
        access_token,
        tenants,
        role,
        tokens: IdpTokens {
            refresh_token,
            id_token,
            expires_at,
        },
    })
}

/// `GET /sign-in`: starts a sign-in at the provider. A link, not a form: the CSP's
/// `form-action 'self'` would stop a form's redirect to the provider.
pub async fn start(
    State(console): State<Console>,
    session: Session,
    headers: HeaderMap,
) -> Response {
    let lang = crate::pages::lang_of(&headers);
    let Some(oidc) = console.oidc.clone() else {
        return crate::pages::error_page(&console, lang, StatusCode::NOT_FOUND, "error-not-found");
    };
    match oidc.begin().await {
        Ok((url, pending)) => match session.insert(PENDING, pending).await {
            Ok(()) => Redirect::to(url.as_str()).into_response(),
            Err(e) => {
                tracing::error!(error = %e, "the console session could not keep a sign-in");
                crate::pages::error_page(
                    &console,
                    lang,
                    StatusCode::SERVICE_UNAVAILABLE,
                    "api-unavailable",
                )
            }
        },
        Err(e) => {
            tracing::warn!(error = %e, "starting a sign-in at the OpenID provider failed");
            crate::pages::error_page(&console, lang, StatusCode::BAD_GATEWAY, "signin-idp-down")
        }
    }
}

/// What the provider sends back.
#[derive(Deserialize)]
pub struct Callback {
    #[serde(default)]
    code: Option<String>,
    #[serde(default)]
    state: Option<String>,
    #[serde(default)]
    error: Option<String>,
}

/// `GET /oidc/callback`: finishes the sign-in this session started.
pub async fn callback(
    State(console): State<Console>,
    session: Session,
    headers: HeaderMap,
    Query(answer): Query<Callback>,
) -> Response {
    let lang = crate::pages::lang_of(&headers);
    let Some(oidc) = console.oidc.clone() else {
        return crate::pages::error_page(&console, lang, StatusCode::NOT_FOUND, "error-not-found");
    };
    // Used once, whatever the outcome.
    let pending: Option<Pending> = session.remove(PENDING).await.ok().flatten();
    if let Some(code) = answer.error.as_deref() {
        // The provider's error code only (e.g. access_denied): its description may
        // echo what the person typed.
        tracing::info!(
            error = code.chars().take(40).collect::<String>(),
            "the OpenID provider ended a sign-in"
        );
        return crate::pages::error_page(&console, lang, StatusCode::FORBIDDEN, "signin-cancelled");
    }
    let result = match (pending, answer.code, answer.state) {
        (Some(p), Some(code), Some(state))
            if state.len() == p.state.len()
                && state == p.state
                && now() - p.started <= PENDING_TTL =>
        {
            oidc.finish(code, p).await
        }
        _ => Err(OidcError::State),
    };
    let granted = match result {
        Ok(g) => g,
        Err(OidcError::NoAccess) => {
            return crate::pages::error_page(
                &console,
                lang,
                StatusCode::FORBIDDEN,
                "signin-no-access",
            );
        }
        Err(OidcError::State) => {
            return crate::pages::error_page(
                &console,
                lang,
                StatusCode::BAD_REQUEST,
                "signin-stale",
            );
        }
        Err(e) => {
            tracing::warn!(error = %e, "finishing a sign-in at the OpenID provider failed");
            return crate::pages::error_page(
                &console,
                lang,
                StatusCode::BAD_GATEWAY,
                "signin-idp-down",
            );
        }
    };
    let who = SignedIn {
        token: granted.access_token,
        tenant: granted.tenants[0].clone(),
        tenants: granted.tenants,
        role: granted.role,
        since: now(),
        idp: Some(granted.tokens),
    };
    crate::auth::keep_sign_in(&console, lang, &session, who).await
}

#[cfg(test)]
mod tests {
    use super::*;

    fn token(claims: serde_json::Value) -> String {
        let b = |v: &[u8]| base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(v);
        format!(
            "{}.{}.sig",
            b(br#"{"alg":"RS256"}"#),
            b(claims.to_string().as_bytes())
        )
    }

    #[test]
    fn departments_and_the_widest_role_come_from_the_access_token() {
        let (t, r) = access_of(&token(serde_json::json!({
            "tenant": ["a-dept", "b-dept"], "roles": ["auditor", "privacy-officer"]
        })))
        .unwrap();
        assert_eq!(t, ["a-dept", "b-dept"]);
        assert_eq!(r, ConsoleRole::PrivacyOfficer);
        let (t, r) = access_of(&token(
            serde_json::json!({"tenant": "kultur", "roles": ["auditor"]}),
        ))
        .unwrap();
        assert_eq!((t, r), (vec!["kultur".to_owned()], ConsoleRole::Auditor));
    }

    #[test]
    fn a_token_without_a_department_or_a_console_role_gives_no_access() {
        for claims in [
            serde_json::json!({"roles": ["auditor"]}),
            serde_json::json!({"tenant": "kultur", "roles": ["integration"]}),
            serde_json::json!({"tenant": "kultur"}),
        ] {
            assert!(matches!(
                access_of(&token(claims)),
                Err(OidcError::NoAccess)
            ));
        }
        assert!(matches!(access_of("not-a-jwt"), Err(OidcError::NoAccess)));
    }
}
