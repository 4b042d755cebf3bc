//! Intake: a privacy officer registers a request that came by letter, e-mail, phone or
//! in person — its type, channel, when it was received and who asks (e-mail, phone or
//! national identity number, sealed by the rights service like every identity). The
//! API gives it its legal deadline. What is typed goes in a POST body only, never in a
//! URL or a log; the form carries a request_id, so submitting it twice (a double click,
//! the back button) registers one request.

use axum::extract::{Form, State};
use axum::response::{IntoResponse, Redirect, Response};
use chrono::Utc;
use http::{HeaderMap, StatusCode};
use serde::Deserialize;
use tower_sessions::Session;
use vern_proto::rights::v1 as rights;

use crate::Console;
use crate::auth;
use crate::overview::authed;
use crate::pages::{Frame, Texts, lang_of, render};
use crate::problems::FieldProblem;
use crate::queue::{TYPES, channel_message, type_message};

/// The ways a request reaches an officer (integrations use the API themselves).
const CHANNELS: [(&str, rights::RequestChannel); 5] = [
    ("paper", rights::RequestChannel::Paper),
    ("email", rights::RequestChannel::Email),
    ("phone", rights::RequestChannel::Phone),
    ("in-person", rights::RequestChannel::InPerson),
    ("web-form", rights::RequestChannel::WebForm),
];

/// What the intake form sends (and shows again after a refusal).
#[derive(Clone, Debug, Default, Deserialize)]
pub struct IntakeForm {
    #[serde(default)]
    csrf: String,
    #[serde(default)]
    request_id: String,
    #[serde(default, rename = "type")]
    kind: String,
    #[serde(default)]
    channel: String,
    #[serde(default)]
    received: String,
    #[serde(default)]
    email: String,
    #[serde(default)]
    phone: String,
    #[serde(default)]
    national_id: String,
    #[serde(default)]
    description: String,
}

/// One choice of a list.
pub struct Choice {
    /// The value sent.
    pub value: &'static str,
    /// Its label.
    pub label: String,
    /// Chosen now.
    pub selected: bool,
}

#[derive(askama::Template)]
#[template(path = "intake.html")]
struct IntakePage<'a> {
    f: Frame<'a>,
    form: IntakeForm,
    csrf: String,
    types: Vec<Choice>,
    channels: Vec<Choice>,
    notice: Option<String>,
    problems: Vec<FieldProblem>,
}

impl IntakePage<'_> {
    fn problem_of(&self, field: &str) -> Option<&str> {
        crate::problems::for_field(&self.problems, field)
    }
}

fn page(
    f: Frame<'_>,
    mut form: IntakeForm,
    notice: Option<String>,
    problems: Vec<FieldProblem>,
    status: StatusCode,
) -> Response {
    if form.request_id.is_empty() {
        form.request_id = uuid::Uuid::new_v4().to_string();
    }
    if form.received.is_empty() {
        form.received = Utc::now().format("%Y-%m-%d").to_string();
    }
    let types = TYPES
        .iter()
        .map(|(v, k)| Choice {
            value: v,
            label: f.t.get(type_message(*k)),
            selected: form.kind == *v,
        })
        .collect();
    let channels = CHANNELS
        .iter()
        .map(|(v, c)| Choice {
            value: v,
            label: f.t.get(channel_message(*c)),
            selected: form.channel == *v,
        })
        .collect();
    let csrf = f.user.as_ref().map(|u| u.csrf.clone()).unwrap_or_default();
    render(
        &IntakePage {
            f,
            form,
            csrf,
            types,
            channels,
            notice,
            problems,
        },
        status,
    )
}

/// `GET /requests/new`: the intake form.
pub async fn form(
    State(console): State<Console>,
    session: Session,
    headers: HeaderMap,
) -> Response {
    let Some(who) = auth::signed_in(&console, &session).await else {
        return Redirect::to("/").into_response();
    };
    let f = Frame::signed_in(&console, lang_of(&headers), "/requests", &who, &session).await;
    page(f, IntakeForm::default(), None, vec![], StatusCode::OK)
}

/// `POST /requests/new`: registers the request through the API; its page next.
pub async fn submit(
    State(console): State<Console>,
    session: Session,
    headers: HeaderMap,
    Form(form): Form<IntakeForm>,
) -> Response {
    let lang = lang_of(&headers);
    let who = match auth::form_sender(&console, &session, lang, &form.csrf).await {
        Ok(who) => who,
        Err(answer) => return answer,
    };
    let t = Texts::new(&console, lang);
    // The console's own checks first, in the person's language; the API's after.
    let mut mine = vec![];
    let kind = TYPES.iter().find(|(v, _)| *v == form.kind).map(|(_, k)| *k);
    let channel = CHANNELS
        .iter()
        .find(|(v, _)| *v == form.channel)
        .map(|(_, c)| *c);
    let received = crate::pages::day_to_timestamp(&form.received);
    if kind.is_none() {
        mine.push(FieldProblem {
            field: "type".into(),
            message: t.get("api-field-type"),
        });
    }
    if channel.is_none() {
        mine.push(FieldProblem {
            field: "channel".into(),
            message: t.get("api-field-channel"),
        });
    }
    if received.is_none() {
        mine.push(FieldProblem {
            field: "received_at".into(),
            message: t.get("api-field-received-at"),
        });
    }
    if form.email.trim().is_empty()
        && form.phone.trim().is_empty()
        && form.national_id.trim().is_empty()
    {
        mine.push(FieldProblem {
            field: "requester".into(),
            message: t.get("api-field-requester"),
        });
    }
    let f = Frame::signed_in(&console, lang, "/requests", &who, &session).await;
    if !mine.is_empty() || uuid::Uuid::parse_str(&form.request_id).is_err() {
        return page(
            f,
            form,
            Some(t.get("intake-invalid")),
            mine,
            StatusCode::BAD_REQUEST,
        );
    }
    let Some(channel_to) = console.gateway.clone() else {
        return crate::pages::error_page(
            &console,
            lang,
            StatusCode::SERVICE_UNAVAILABLE,
            "api-unavailable",
        );
    };
    let Some(req) = authed(
        &who,
        rights::SubmitRequestRequest {
            r#type: kind.map_or(0, |k| k as i32),
            requester: Some(rights::submit_request_request::Requester::Identity(
                rights::Identity {
                    email: form.email.trim().to_owned(),
                    phone: form.phone.trim().to_owned(),
                    national_id: form.national_id.trim().to_owned(),
                    ..Default::default()
                },
            )),
            channel: channel.map_or(0, |c| c as i32),
            request_id: form.request_id.clone(),
            received_at: received,
            description: form.description.clone(),
            ..Default::default()
        },
    ) else {
        return crate::pages::error_page(
            &console,
            lang,
            StatusCode::SERVICE_UNAVAILABLE,
            "api-unavailable",
        );
    };
    match rights::rights_service_client::RightsServiceClient::new(channel_to)
        .submit_request(req)
        .await
    {
        // The same request_id again (a double submit) answers with the same request.
        Ok(r) => {
            Redirect::to(&format!("/requests/{}", r.into_inner().rights_request_id)).into_response()
        }
        Err(s) => {
            let problems = crate::problems::field_problems(&s, &t);
            let (notice, status) = if problems.is_empty() {
                let id = match s.code() {
                    tonic::Code::PermissionDenied => "api-denied",
                    c => crate::overview::problem(c).unwrap_or("api-other"),
                };
                (t.get(id), StatusCode::BAD_GATEWAY)
            } else {
                (t.get("intake-invalid"), StatusCode::BAD_REQUEST)
            };
            page(f, form, Some(notice), problems, status)
        }
    }
}
