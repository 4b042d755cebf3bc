//! One rights request's page: what it is, where it stands against its deadline, and
//! its timeline — received, identity verified, the deadline extended, refused or
//! fulfilled, and each downstream system's confirmation — read with GetRequest through
//! the gateway with the person's token. The request's id (a UUID) is in the URL; the
//! person's identity and words are not shown here.

use axum::extract::{Path, State};
use axum::response::{IntoResponse, Redirect, Response};
use chrono::{DateTime, Utc};
use http::{HeaderMap, StatusCode};
use tower_sessions::Session;
use vern_proto::rights::v1 as rights;

use crate::Console;
use crate::auth;
use crate::overview::authed;
use crate::pages::{Frame, Texts, lang_of, render};
use crate::queue::channel_message;

/// One entry of the timeline.
pub struct Step {
    /// When (date and time, UTC).
    pub at: String,
    /// What happened, in the page's language.
    pub what: String,
    /// More about it (a reason, a ground), if any.
    pub detail: Option<String>,
    sort: i64,
}

/// The page's facts: the request's row in the queue, and what only its page shows.
pub struct Facts {
    /// Type, status, channel, dates and days left, as the queue shows them.
    pub row: crate::queue::Row,
    /// The deadline before an extension, if extended.
    pub original_due: Option<String>,
    /// The extension, in words, if extended.
    pub extension: Option<String>,
    /// Downstream systems that have not confirmed yet.
    pub pending: Vec<String>,
}

fn when(t: Option<&prost_types::Timestamp>) -> Option<(i64, String)> {
    let t = t?;
    let d = DateTime::from_timestamp(t.seconds, 0)?;
    Some((t.seconds, d.format("%Y-%m-%d %H:%M UTC").to_string()))
}

fn day(t: Option<&prost_types::Timestamp>) -> String {
    t.and_then(|t| DateTime::from_timestamp(t.seconds, 0))
        .map(|d| d.format("%Y-%m-%d").to_string())
        .unwrap_or_default()
}

fn method_message(m: rights::VerificationMethod) -> &'static str {
    match m {
        rights::VerificationMethod::ElectronicId => "verify-electronic-id",
        rights::VerificationMethod::IdDocument => "verify-id-document",
        rights::VerificationMethod::EmailConfirmation => "verify-email",
        rights::VerificationMethod::SmsConfirmation => "verify-sms",
        rights::VerificationMethod::InPerson => "verify-in-person",
        rights::VerificationMethod::AuthenticatedSession => "verify-session",
        rights::VerificationMethod::Other | rights::VerificationMethod::Unspecified => {
            "verify-other"
        }
    }
}

fn ground_message(g: rights::RejectionGround) -> &'static str {
    match g {
        rights::RejectionGround::ManifestlyUnfounded => "ground-manifestly-unfounded",
        rights::RejectionGround::Excessive => "ground-excessive",
        rights::RejectionGround::IdentityNotVerified => "ground-identity-not-verified",
        rights::RejectionGround::LegalExemption => "ground-legal-exemption",
        rights::RejectionGround::WithdrawnBySubject => "ground-withdrawn",
        rights::RejectionGround::Other | rights::RejectionGround::Unspecified => "ground-other",
    }
}

/// The timeline of `r`, oldest first.
pub fn timeline(r: &rights::RightsRequest, t: &Texts<'_>) -> Vec<Step> {
    let mut steps = vec![];
    let mut push = |at: Option<(i64, String)>, what: String, detail: Option<String>| {
        if let Some((sort, at)) = at {
            steps.push(Step {
                at,
                what,
                detail,
                sort,
            });
        }
    };
    push(
        when(r.received_at.as_ref()),
        t.with(
            "step-received",
            &[("channel", t.get(channel_message(r.channel())))],
        ),
        None,
    );
    push(
        when(r.verify_time.as_ref()),
        t.with(
            "step-verified",
            &[("method", t.get(method_message(r.verification_method())))],
        ),
        None,
    );
    if r.extended {
        push(
            when(r.subject_informed_at.as_ref()),
            t.with(
                "step-extended",
                &[("months", r.extension_months.to_string())],
            ),
            (!r.extension_reason.is_empty()).then(|| r.extension_reason.clone()),
        );
    }
    push(
        when(r.reject_time.as_ref()),
        t.with(
            "step-refused",
            &[("ground", t.get(ground_message(r.rejection_ground())))],
        ),
        (!r.rejection_reason.is_empty()).then(|| r.rejection_reason.clone()),
    );
    for c in &r.confirmations {
        push(
            when(c.ack_time.as_ref()),
            t.with("step-confirmed", &[("system", c.system.clone())]),
            None,
        );
    }
    push(
        when(r.complete_time.as_ref()),
        t.get("step-fulfilled"),
        None,
    );
    steps.sort_by_key(|s| s.sort);
    steps
}

/// The actions the request's state and the person's role allow (the API would refuse
/// any other, so no other button is shown).
pub struct Actions {
    /// RECEIVED: verify the requester's identity.
    pub verify: bool,
    /// Open and not yet extended: extend once.
    pub extend: bool,
    /// Open: refuse with grounds.
    pub refuse: bool,
    /// VERIFIED, or IN_PROGRESS to retry: fulfil.
    pub fulfil: bool,
}

fn actions(r: &rights::RightsRequest, role: auth::ConsoleRole) -> Actions {
    use rights::RequestStatus as S;
    let handles = matches!(
        role,
        auth::ConsoleRole::TenantAdmin | auth::ConsoleRole::PrivacyOfficer
    );
    let open = matches!(r.status(), S::Received | S::Verified | S::InProgress);
    Actions {
        verify: handles && r.status() == S::Received,
        extend: handles && open && !r.extended,
        refuse: handles && open,
        fulfil: handles && matches!(r.status(), S::Verified | S::InProgress),
    }
}

/// One choice of a form's list.
pub struct Option_ {
    /// The value sent.
    pub value: &'static str,
    /// Its label.
    pub label: String,
}

const METHODS: [(&str, rights::VerificationMethod); 7] = [
    ("electronic-id", rights::VerificationMethod::ElectronicId),
    ("id-document", rights::VerificationMethod::IdDocument),
    ("email", rights::VerificationMethod::EmailConfirmation),
    ("sms", rights::VerificationMethod::SmsConfirmation),
    ("in-person", rights::VerificationMethod::InPerson),
    ("session", rights::VerificationMethod::AuthenticatedSession),
    ("other", rights::VerificationMethod::Other),
];

const GROUNDS: [(&str, rights::RejectionGround); 6] = [
    (
        "manifestly-unfounded",
        rights::RejectionGround::ManifestlyUnfounded,
    ),
    ("excessive", rights::RejectionGround::Excessive),
    (
        "identity-not-verified",
        rights::RejectionGround::IdentityNotVerified,
    ),
    ("legal-exemption", rights::RejectionGround::LegalExemption),
    ("withdrawn", rights::RejectionGround::WithdrawnBySubject),
    ("other", rights::RejectionGround::Other),
];

fn stamp(t: Option<&prost_types::Timestamp>) -> String {
    t.map(|t| format!("{}.{:09}", t.seconds, t.nanos))
        .unwrap_or_default()
}

#[derive(askama::Template)]
#[template(path = "request.html")]
struct RequestPage<'a> {
    f: Frame<'a>,
    facts: Option<Facts>,
    steps: Vec<Step>,
    problem: Option<String>,
    notice: Option<String>,
    actions: Option<Actions>,
    methods: Vec<Option_>,
    grounds: Vec<Option_>,
    /// The version of the request the forms act on (its update_time).
    seen: String,
    /// A fresh idempotency key for each form shown: a second submit of the same form
    /// (a double click, the back button) repeats the same call, which the API answers
    /// as it answered the first.
    request_id: String,
    today: String,
    /// The form whose submission the problems are of.
    acted: String,
    /// The session's CSRF token, for the forms.
    csrf: String,
    problems: Vec<crate::problems::FieldProblem>,
}

impl RequestPage<'_> {
    /// The problem of `field` in the form of `action`, if that form was sent.
    fn problem_of(&self, action: &str, field: &str) -> Option<&str> {
        if self.acted != action {
            return None;
        }
        crate::problems::for_field(&self.problems, field)
    }
}

async fn get_request(
    console: &Console,
    who: &auth::SignedIn,
    id: &str,
) -> Option<Result<rights::RightsRequest, tonic::Status>> {
    if uuid::Uuid::parse_str(id).is_err() {
        // Only a UUID is ever asked for (the API's ids): anything else is no request.
        return Some(Err(tonic::Status::not_found("no such request")));
    }
    let channel = console.gateway.clone()?;
    let req = authed(
        who,
        rights::GetRequestRequest {
            rights_request_id: id.to_owned(),
        },
    )?;
    Some(
        rights::rights_service_client::RightsServiceClient::new(channel)
            .get_request(req)
            .await
            .map(tonic::Response::into_inner),
    )
}

/// The page of request `id`, with `notice` (a conflict, a refusal) and the API's
/// `problems` with the fields of a form, answered with `ok` when it shows.
#[allow(clippy::too_many_arguments)]
async fn show(
    console: &Console,
    session: &Session,
    who: &auth::SignedIn,
    lang: crate::i18n::Lang,
    id: &str,
    notice: Option<String>,
    (acted, problems): (&str, Vec<crate::problems::FieldProblem>),
    ok: StatusCode,
) -> Response {
    let f = Frame::signed_in(console, lang, "/requests", who, session).await;
    let got = get_request(console, who, id).await;
    let (facts, steps, problem, status, actions, seen) = match got {
        Some(Ok(r)) => {
            let facts = Facts {
                row: crate::queue::row(&r, Utc::now(), &f.t),
                original_due: r.extended.then(|| day(r.original_due_at.as_ref())),
                extension: r.extended.then(|| {
                    f.t.with(
                        "request-extended-by",
                        &[("months", r.extension_months.to_string())],
                    )
                }),
                pending: r.pending_systems.clone(),
            };
            let steps = timeline(&r, &f.t);
            let actions = actions(&r, who.role);
            let seen = stamp(r.update_time.as_ref());
            (Some(facts), steps, None, ok, Some(actions), seen)
        }
        Some(Err(s)) => {
            let (id, status) = match s.code() {
                tonic::Code::NotFound | tonic::Code::InvalidArgument => {
                    ("request-not-found", StatusCode::NOT_FOUND)
                }
                tonic::Code::PermissionDenied => ("queue-denied", StatusCode::FORBIDDEN),
                c => (
                    crate::overview::problem(c).unwrap_or("api-other"),
                    StatusCode::BAD_GATEWAY,
                ),
            };
            (None, vec![], Some(f.t.get(id)), status, None, String::new())
        }
        None => (
            None,
            vec![],
            Some(f.t.get("api-unavailable")),
            StatusCode::SERVICE_UNAVAILABLE,
            None,
            String::new(),
        ),
    };
    let methods = METHODS
        .iter()
        .map(|(v, m)| Option_ {
            value: v,
            label: f.t.get(method_message(*m)),
        })
        .collect();
    let grounds = GROUNDS
        .iter()
        .map(|(v, g)| Option_ {
            value: v,
            label: f.t.get(ground_message(*g)),
        })
        .collect();
    let csrf = f.user.as_ref().map(|u| u.csrf.clone()).unwrap_or_default();
    render(
        &RequestPage {
            csrf,
            f,
            facts,
            steps,
            problem,
            notice,
            actions,
            methods,
            grounds,
            seen,
            request_id: uuid::Uuid::new_v4().to_string(),
            today: Utc::now().format("%Y-%m-%d").to_string(),
            acted: acted.to_owned(),
            problems,
        },
        status,
    )
}

/// `GET /requests/{id}`.
pub async fn page(
    State(console): State<Console>,
    session: Session,
    headers: HeaderMap,
    Path(id): Path<String>,
) -> Response {
    let Some(who) = auth::signed_in(&console, &session).await else {
        return Redirect::to("/").into_response();
    };
    show(
        &console,
        &session,
        &who,
        lang_of(&headers),
        &id,
        None,
        ("", vec![]),
        StatusCode::OK,
    )
    .await
}

/// What an action's form sends.
#[derive(serde::Deserialize, Default)]
pub struct ActionForm {
    #[serde(default)]
    csrf: String,
    #[serde(default)]
    request_id: String,
    #[serde(default)]
    seen: String,
    #[serde(default)]
    method: String,
    #[serde(default)]
    note: String,
    #[serde(default)]
    months: String,
    #[serde(default)]
    reason: String,
    #[serde(default)]
    informed: String,
    #[serde(default)]
    ground: String,
}

const DONE: &str = "done_actions";
/// Idempotency keys of actions this session completed, kept for a repeated submit.
const DONE_KEPT: usize = 20;

/// `POST /requests/{id}/{action}`: verify, extend, refuse or fulfil, with the person's
/// token, unless the request changed since the form was shown (then the conflict is
/// shown with the request as it is now, and nothing is changed).
pub async fn act(
    State(console): State<Console>,
    session: Session,
    headers: HeaderMap,
    Path((id, action)): Path<(String, String)>,
    axum::extract::Form(form): axum::extract::Form<ActionForm>,
) -> Response {
    let lang = lang_of(&headers);
    let who = match auth::form_sender(&console, &session, lang, &form.csrf).await {
        Ok(who) => who,
        Err(answer) => return answer,
    };
    let t = Texts::new(&console, lang);
    if uuid::Uuid::parse_str(&form.request_id).is_err() {
        return show(
            &console,
            &session,
            &who,
            lang,
            &id,
            Some(t.get("request-form-stale")),
            ("", vec![]),
            StatusCode::BAD_REQUEST,
        )
        .await;
    }
    let done: Vec<String> = session.get(DONE).await.ok().flatten().unwrap_or_default();
    let repeated = done.contains(&form.request_id);
    // The version check (an etag): another officer's change since the form was shown
    // is a conflict, never overwritten. A repeat of this session's own completed
    // action is not one: the API answers it as it answered the first time.
    let mut current = None;
    if !repeated {
        match get_request(&console, &who, &id).await {
            Some(Ok(r)) if stamp(r.update_time.as_ref()) != form.seen => {
                return show(
                    &console,
                    &session,
                    &who,
                    lang,
                    &id,
                    Some(t.get("request-conflict")),
                    ("", vec![]),
                    StatusCode::CONFLICT,
                )
                .await;
            }
            Some(Ok(r)) => current = Some(r),
            _ => {
                return show(
                    &console,
                    &session,
                    &who,
                    lang,
                    &id,
                    None,
                    ("", vec![]),
                    StatusCode::OK,
                )
                .await;
            }
        }
    }
    let Some(channel) = console.gateway.clone() else {
        return crate::pages::error_page(
            &console,
            lang,
            StatusCode::SERVICE_UNAVAILABLE,
            "api-unavailable",
        );
    };
    let mut client = rights::rights_service_client::RightsServiceClient::new(channel);
    let rid = id.clone();
    let key = form.request_id.clone();
    let called: Option<Result<(), tonic::Status>> = match action.as_str() {
        "verify" => {
            // The request's own subject, if it names one (an identity only: the
            // department holds no data of the person, or the API says it does).
            // Read by the version check already, unless this is a repeat.
            let subject = match current {
                Some(r) => r.subject_id,
                None => match get_request(&console, &who, &rid).await {
                    Some(Ok(r)) => r.subject_id,
                    _ => String::new(),
                },
            };
            let method = METHODS
                .iter()
                .find(|(v, _)| *v == form.method)
                .map_or(0, |(_, m)| *m as i32);
            match authed(
                &who,
                rights::VerifyIdentityRequest {
                    rights_request_id: rid,
                    subject_id: subject,
                    method,
                    note: form.note.clone(),
                    request_id: key,
                },
            ) {
                Some(req) => Some(client.verify_identity(req).await.map(drop)),
                None => None,
            }
        }
        "extend" => match authed(
            &who,
            rights::ExtendDeadlineRequest {
                rights_request_id: rid,
                reason: form.reason.clone(),
                months: form.months.trim().parse().unwrap_or(0),
                subject_informed_at: crate::pages::day_to_timestamp(&form.informed),
                request_id: key,
            },
        ) {
            Some(req) => Some(client.extend_deadline(req).await.map(drop)),
            None => None,
        },
        "refuse" => match authed(
            &who,
            rights::RejectRequestRequest {
                rights_request_id: rid,
                reason: form.reason.clone(),
                ground: GROUNDS
                    .iter()
                    .find(|(v, _)| *v == form.ground)
                    .map_or(0, |(_, g)| *g as i32),
                request_id: key,
            },
        ) {
            Some(req) => Some(client.reject_request(req).await.map(drop)),
            None => None,
        },
        "fulfil" => match authed(
            &who,
            rights::FulfilRequestRequest {
                rights_request_id: rid,
                note: form.note.clone(),
                request_id: key,
            },
        ) {
            Some(req) => Some(client.fulfil_request(req).await.map(drop)),
            None => None,
        },
        _ => {
            return crate::pages::error_page(
                &console,
                lang,
                StatusCode::NOT_FOUND,
                "error-not-found",
            );
        }
    };
    match called {
        Some(Ok(())) => {
            let mut done = done;
            if !repeated {
                done.push(form.request_id.clone());
                if done.len() > DONE_KEPT {
                    done.remove(0);
                }
                let _ = session.insert(DONE, &done).await;
            }
            // After a change, the page by GET: a reload never sends the form again.
            Redirect::to(&format!("/requests/{id}")).into_response()
        }
        Some(Err(s)) => {
            let problems = crate::problems::field_problems(&s, &t);
            let (notice, status) = match s.code() {
                _ if !problems.is_empty() => {
                    (Some(t.get("request-form-invalid")), StatusCode::BAD_REQUEST)
                }
                // The API's state rules: another change came first.
                tonic::Code::FailedPrecondition | tonic::Code::Aborted => {
                    (Some(t.get("request-conflict")), StatusCode::CONFLICT)
                }
                tonic::Code::PermissionDenied => (Some(t.get("api-denied")), StatusCode::FORBIDDEN),
                c => (
                    Some(t.get(crate::overview::problem(c).unwrap_or("api-other"))),
                    StatusCode::BAD_GATEWAY,
                ),
            };
            show(
                &console,
                &session,
                &who,
                lang,
                &id,
                notice,
                (&action, problems),
                status,
            )
            .await
        }
        None => crate::pages::error_page(
            &console,
            lang,
            StatusCode::SERVICE_UNAVAILABLE,
            "api-unavailable",
        ),
    }
}
