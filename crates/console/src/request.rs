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
use crate::queue::{channel_message, type_message};

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

/// The page's facts.
pub struct Facts {
    /// The request's id.
    pub id: String,
    /// Its type.
    pub kind: String,
    /// Its status.
    pub status: String,
    /// How it arrived.
    pub channel: String,
    /// When it was received (a date).
    pub received: String,
    /// Its deadline (a date).
    pub due: String,
    /// The deadline before an extension, if extended.
    pub original_due: Option<String>,
    /// The extension, in words, if extended.
    pub extension: Option<String>,
    /// The days left, in words, and their class.
    pub left: String,
    /// See [`crate::queue::Row::urgency`].
    pub urgency: &'static str,
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

#[derive(askama::Template)]
#[template(path = "request.html")]
struct RequestPage<'a> {
    f: Frame<'a>,
    facts: Option<Facts>,
    steps: Vec<Step>,
    problem: Option<String>,
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
    let lang = lang_of(&headers);
    let f = Frame::signed_in(&console, lang, "/requests", &who, &session).await;
    // Only a UUID is ever asked for (the API's ids): anything else is no request.
    let got = match uuid::Uuid::parse_str(&id) {
        Ok(_) => {
            async {
                let channel = console.gateway.clone()?;
                let req = authed(
                    &who,
                    rights::GetRequestRequest {
                        rights_request_id: id.clone(),
                    },
                )?;
                Some(
                    rights::rights_service_client::RightsServiceClient::new(channel)
                        .get_request(req)
                        .await
                        .map(tonic::Response::into_inner),
                )
            }
            .await
        }
        Err(_) => Some(Err(tonic::Status::not_found("no such request"))),
    };
    let (facts, steps, problem, status) = match got {
        Some(Ok(r)) => {
            let (urgency, words, days) = crate::queue::urgency(&r, Utc::now());
            let facts = Facts {
                id: r.rights_request_id.clone(),
                kind: f.t.get(type_message(r.r#type())),
                status: f.t.get(crate::overview::status_message(r.status())),
                channel: f.t.get(channel_message(r.channel())),
                received: day(r.received_at.as_ref()),
                due: day(r.due_at.as_ref()),
                original_due: r.extended.then(|| day(r.original_due_at.as_ref())),
                extension: r.extended.then(|| {
                    f.t.with(
                        "request-extended-by",
                        &[("months", r.extension_months.to_string())],
                    )
                }),
                left: f.t.with(words, &[("days", days.to_string())]),
                urgency,
                pending: r.pending_systems.clone(),
            };
            let steps = timeline(&r, &f.t);
            (Some(facts), steps, None, StatusCode::OK)
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
            (None, vec![], Some(f.t.get(id)), status)
        }
        None => (
            None,
            vec![],
            Some(f.t.get("api-unavailable")),
            StatusCode::SERVICE_UNAVAILABLE,
        ),
    };
    render(
        &RequestPage {
            f,
            facts,
            steps,
            problem,
        },
        status,
    )
}
