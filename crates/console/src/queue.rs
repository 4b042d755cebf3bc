//! The department's rights request queue: every request, the nearest deadline first
//! (as ListRequests orders them), with its type, status, channel, when it was received
//! and its deadline, and the days left in words as well as colour. Filters for status,
//! type and overdue, and paging through the API's page tokens, travel in the URL:
//! none of them is personal data, and the rows show none either.

use axum::extract::{Query, State};
use axum::response::{IntoResponse, Redirect, Response};
use chrono::{DateTime, Utc};
use http::{HeaderMap, StatusCode};
use serde::Deserialize;
use tower_sessions::Session;
use vern_proto::rights::v1 as rights;

use crate::Console;
use crate::auth;
use crate::overview::authed;
use crate::pages::{Frame, Texts, lang_of, render};

/// Requests per page.
pub const PAGE_SIZE: i32 = 50;
/// Fewer days left than this: "soon".
const SOON_DAYS: i64 = 5;
/// Fewer days left than this: "near".
const NEAR_DAYS: i64 = 10;

/// The queue's filters and page, from the URL.
#[derive(Clone, Debug, Default, Deserialize)]
pub struct QueueQuery {
    /// A status (`received`, `verified`, `in-progress`, `completed`, `rejected`).
    #[serde(default)]
    pub status: String,
    /// A request type (`access`, `erasure`, …).
    #[serde(default, rename = "type")]
    pub kind: String,
    /// Only overdue requests (`1`).
    #[serde(default)]
    pub overdue: String,
    /// The API's page token of the page shown.
    #[serde(default)]
    pub page: String,
}

const STATUSES: [(&str, rights::RequestStatus); 5] = [
    ("received", rights::RequestStatus::Received),
    ("verified", rights::RequestStatus::Verified),
    ("in-progress", rights::RequestStatus::InProgress),
    ("completed", rights::RequestStatus::Completed),
    ("rejected", rights::RequestStatus::Rejected),
];

/// Every request type, by the value forms send.
pub(crate) const TYPES: [(&str, rights::RequestType); 7] = [
    ("access", rights::RequestType::Access),
    ("rectification", rights::RequestType::Rectification),
    ("erasure", rights::RequestType::Erasure),
    ("restriction", rights::RequestType::Restriction),
    ("objection", rights::RequestType::Objection),
    ("portability", rights::RequestType::Portability),
    ("withdraw-consent", rights::RequestType::WithdrawConsent),
];

/// The message id of a request type.
pub fn type_message(t: rights::RequestType) -> &'static str {
    match t {
        rights::RequestType::Access => "request-type-access",
        rights::RequestType::Rectification => "request-type-rectification",
        rights::RequestType::Erasure => "request-type-erasure",
        rights::RequestType::Restriction => "request-type-restriction",
        rights::RequestType::Objection => "request-type-objection",
        rights::RequestType::Portability => "request-type-portability",
        rights::RequestType::WithdrawConsent => "request-type-withdraw-consent",
        rights::RequestType::Unspecified => "api-other",
    }
}

/// The message id of a channel.
pub fn channel_message(c: rights::RequestChannel) -> &'static str {
    match c {
        rights::RequestChannel::WebForm => "channel-web-form",
        rights::RequestChannel::Email => "channel-email",
        rights::RequestChannel::Paper => "channel-paper",
        rights::RequestChannel::Phone => "channel-phone",
        rights::RequestChannel::InPerson => "channel-in-person",
        rights::RequestChannel::Api => "channel-api",
        rights::RequestChannel::Unspecified => "channel-unknown",
    }
}

/// One choice of a filter's list.
pub struct Choice {
    /// The value sent.
    pub value: &'static str,
    /// Its label in the page's language.
    pub label: String,
    /// Chosen now.
    pub selected: bool,
}

/// One request's row: no personal data.
pub struct Row {
    /// The request's id (its page is `/requests/<id>`).
    pub id: String,
    /// The request's type.
    pub kind: String,
    /// Its status.
    pub status: String,
    /// How it arrived.
    pub channel: String,
    /// When it was received (a date).
    pub received: String,
    /// Its deadline (a date).
    pub due: String,
    /// The days left, in words.
    pub left: String,
    /// The CSS class of the days left (`due overdue`, `due soon`, `due near`, `due`,
    /// or empty for a closed request): colour on top of the words, never instead.
    pub urgency: &'static str,
}

/// How a request stands against its deadline at `now`: the class and the words'
/// message id with the days.
pub(crate) fn urgency(
    r: &rights::RightsRequest,
    now: DateTime<Utc>,
) -> (&'static str, &'static str, i64) {
    let open = matches!(
        r.status(),
        rights::RequestStatus::Received
            | rights::RequestStatus::Verified
            | rights::RequestStatus::InProgress
    );
    let Some(due) = r
        .due_at
        .as_ref()
        .and_then(|t| DateTime::from_timestamp(t.seconds, 0))
    else {
        return ("", "queue-no-deadline", 0);
    };
    if !open {
        return ("", "queue-closed", 0);
    }
    let secs = (due - now).num_seconds();
    if r.overdue || secs < 0 {
        // Whole days past, the day it fell due counting as one.
        let days = (-secs).div_euclid(86_400) + 1;
        return ("due overdue", "queue-overdue-by", days);
    }
    let days = secs.div_euclid(86_400);
    let class = if days < SOON_DAYS {
        "due soon"
    } else if days < NEAR_DAYS {
        "due near"
    } else {
        "due"
    };
    (class, "queue-days-left", days)
}

fn date(t: Option<&prost_types::Timestamp>) -> String {
    t.and_then(|t| DateTime::from_timestamp(t.seconds, 0))
        .map(|d| d.format("%Y-%m-%d").to_string())
        .unwrap_or_default()
}

/// The row of `r` in the page's language.
pub(crate) fn row(r: &rights::RightsRequest, now: DateTime<Utc>, t: &Texts<'_>) -> Row {
    let (class, words, days) = urgency(r, now);
    Row {
        id: r.rights_request_id.clone(),
        kind: t.get(type_message(r.r#type())),
        status: t.get(crate::overview::status_message(r.status())),
        channel: t.get(channel_message(r.channel())),
        received: date(r.received_at.as_ref()),
        due: date(r.due_at.as_ref()),
        left: t.with(words, &[("days", days.to_string())]),
        urgency: class,
    }
}

/// `/requests` with `query` and the page token `page` (none: the first page).
fn link(query: &QueueQuery, page: Option<&str>) -> String {
    let mut s = url::form_urlencoded::Serializer::new(String::new());
    if !query.status.is_empty() {
        s.append_pair("status", &query.status);
    }
    if !query.kind.is_empty() {
        s.append_pair("type", &query.kind);
    }
    if query.overdue == "1" {
        s.append_pair("overdue", "1");
    }
    if let Some(p) = page {
        s.append_pair("page", p);
    }
    let q = s.finish();
    if q.is_empty() {
        "/requests".into()
    } else {
        format!("/requests?{q}")
    }
}

/// The filters' lists, with `status` and `kind` chosen.
fn choices(t: &Texts<'_>, status: Option<&str>, kind: Option<&str>) -> (Vec<Choice>, Vec<Choice>) {
    let statuses = STATUSES
        .iter()
        .map(|(v, s)| Choice {
            value: v,
            label: t.get(crate::overview::status_message(*s)),
            selected: status == Some(*v),
        })
        .collect();
    let types = TYPES
        .iter()
        .map(|(v, k)| Choice {
            value: v,
            label: t.get(type_message(*k)),
            selected: kind == Some(*v),
        })
        .collect();
    (statuses, types)
}

#[derive(askama::Template)]
#[template(path = "requests.html")]
struct QueuePage<'a> {
    /// The rows are a search's results, not the filtered queue.
    searched: bool,
    /// The session's CSRF token (the search form).
    csrf: String,
    f: Frame<'a>,
    statuses: Vec<Choice>,
    types: Vec<Choice>,
    overdue: bool,
    rows: Vec<Row>,
    /// Why the list could not be read, in the page's language.
    problem: Option<String>,
    next: Option<String>,
    first: Option<String>,
}

/// `GET /requests`: the queue, read through the gateway with the person's token.
pub async fn page(
    State(console): State<Console>,
    session: Session,
    headers: HeaderMap,
    Query(query): Query<QueueQuery>,
) -> Response {
    let Some(who) = auth::signed_in(&console, &session).await else {
        return Redirect::to("/").into_response();
    };
    let lang = lang_of(&headers);
    let f = Frame::signed_in(&console, lang, "/requests", &who, &session).await;
    // An unknown filter value is no filter (the form offers only known ones).
    let status = STATUSES.iter().find(|(v, _)| *v == query.status);
    let kind = TYPES.iter().find(|(v, _)| *v == query.kind);
    let overdue = query.overdue == "1";
    let (statuses, types) = choices(&f.t, status.map(|(v, _)| *v), kind.map(|(v, _)| *v));
    let listed = async {
        let channel = console.gateway.clone()?;
        let req = authed(
            &who,
            rights::ListRequestsRequest {
                page_size: PAGE_SIZE,
                page_token: query.page.clone(),
                status: status.map_or(0, |(_, s)| *s as i32),
                r#type: kind.map_or(0, |(_, k)| *k as i32),
                overdue,
                ..Default::default()
            },
        )?;
        Some(
            rights::rights_service_client::RightsServiceClient::new(channel)
                .list_requests(req)
                .await
                .map(tonic::Response::into_inner),
        )
    }
    .await;
    let now = Utc::now();
    let (rows, next, problem, status_code) = match listed {
        Some(Ok(page)) => (
            page.rights_requests
                .iter()
                .map(|r| row(r, now, &f.t))
                .collect(),
            (!page.next_page_token.is_empty()).then(|| link(&query, Some(&page.next_page_token))),
            None,
            StatusCode::OK,
        ),
        Some(Err(s)) => {
            let id = match s.code() {
                tonic::Code::PermissionDenied => "queue-denied",
                // A page token from another filter or an old link.
                tonic::Code::InvalidArgument => "queue-bad-page",
                c => crate::overview::problem(c).unwrap_or("api-other"),
            };
            (vec![], None, Some(f.t.get(id)), StatusCode::OK)
        }
        None => (
            vec![],
            None,
            Some(f.t.get("api-unavailable")),
            StatusCode::SERVICE_UNAVAILABLE,
        ),
    };
    let first = (!query.page.is_empty()).then(|| link(&query, None));
    let csrf = f.user.as_ref().map(|u| u.csrf.clone()).unwrap_or_default();
    render(
        &QueuePage {
            searched: false,
            csrf,
            f,
            statuses,
            types,
            overdue,
            rows,
            problem,
            next,
            first,
        },
        status_code,
    )
}

/// What the search form sends.
#[derive(Deserialize)]
pub struct SearchForm {
    #[serde(default)]
    csrf: String,
    #[serde(default)]
    q: String,
}

/// What was typed: a request id, else an identifier of a person.
enum Wanted {
    Request(String),
    Person(vern_proto::subjects::v1::find_subject_request::Identifier),
}

fn wanted(q: &str) -> Option<Wanted> {
    use vern_proto::subjects::v1::find_subject_request::Identifier;
    let q = q.trim();
    if q.is_empty() {
        return None;
    }
    if uuid::Uuid::parse_str(q).is_ok() {
        return Some(Wanted::Request(q.to_owned()));
    }
    if q.contains('@') {
        return Some(Wanted::Person(Identifier::Email(q.to_owned())));
    }
    let digits: String = q.chars().filter(char::is_ascii_digit).collect();
    if digits.len() == 11 && q.chars().all(|c| c.is_ascii_digit() || c == ' ') {
        return Some(Wanted::Person(Identifier::NationalId(digits)));
    }
    Some(Wanted::Person(Identifier::Phone(q.to_owned())))
}

/// `POST /requests/search`: a request by its id (its page), or a person's requests by
/// their e-mail, phone or national identity number (FindSubject, then ListRequests for
/// the subject). A POST: what was typed is in no URL, no history entry and no log.
/// Requests registered with an identity the department holds no data of are found by
/// their id only.
pub async fn search(
    State(console): State<Console>,
    session: Session,
    headers: HeaderMap,
    axum::extract::Form(form): axum::extract::Form<SearchForm>,
) -> Response {
    use vern_proto::subjects::v1 as subjects;
    let lang = lang_of(&headers);
    let who = match auth::form_sender(&console, &session, lang, &form.csrf).await {
        Ok(who) => who,
        Err(answer) => return answer,
    };
    let f = Frame::signed_in(&console, lang, "/requests", &who, &session).await;
    let Some(channel) = console.gateway.clone() else {
        return crate::pages::error_page(
            &console,
            lang,
            StatusCode::SERVICE_UNAVAILABLE,
            "api-unavailable",
        );
    };
    let found: Result<Vec<rights::RightsRequest>, &'static str> = match wanted(&form.q) {
        None => Err("search-empty"),
        Some(Wanted::Request(id)) => {
            match authed(
                &who,
                rights::GetRequestRequest {
                    rights_request_id: id,
                },
            ) {
                Some(req) => match rights::rights_service_client::RightsServiceClient::new(channel)
                    .get_request(req)
                    .await
                {
                    Ok(r) => {
                        return Redirect::to(&format!(
                            "/requests/{}",
                            r.into_inner().rights_request_id
                        ))
                        .into_response();
                    }
                    Err(s) if s.code() == tonic::Code::NotFound => Ok(vec![]),
                    Err(s) => Err(search_problem(s.code())),
                },
                None => Err("api-unavailable"),
            }
        }
        Some(Wanted::Person(identifier)) => {
            let find = authed(
                &who,
                subjects::FindSubjectRequest {
                    identifier: Some(identifier),
                    ..Default::default()
                },
            );
            match find {
                Some(req) => match subjects::subject_service_client::SubjectServiceClient::new(
                    channel.clone(),
                )
                .find_subject(req)
                .await
                {
                    Ok(subject) => {
                        let list = authed(
                            &who,
                            rights::ListRequestsRequest {
                                page_size: PAGE_SIZE,
                                subject_id: subject.into_inner().subject_id,
                                ..Default::default()
                            },
                        );
                        match list {
                            Some(req) => {
                                rights::rights_service_client::RightsServiceClient::new(channel)
                                    .list_requests(req)
                                    .await
                                    .map(|r| r.into_inner().rights_requests)
                                    .map_err(|s| search_problem(s.code()))
                            }
                            None => Err("api-unavailable"),
                        }
                    }
                    Err(s) if s.code() == tonic::Code::NotFound => Ok(vec![]),
                    // A malformed identifier is no one the department knows.
                    Err(s) if s.code() == tonic::Code::InvalidArgument => Ok(vec![]),
                    Err(s) => Err(search_problem(s.code())),
                },
                None => Err("api-unavailable"),
            }
        }
    };
    let now = Utc::now();
    let (rows, problem) = match found {
        Ok(list) => (list.iter().map(|r| row(r, now, &f.t)).collect(), None),
        Err(id) => (vec![], Some(f.t.get(id))),
    };
    let (statuses, types) = choices(&f.t, None, None);
    let csrf = f.user.as_ref().map(|u| u.csrf.clone()).unwrap_or_default();
    render(
        &QueuePage {
            searched: true,
            csrf,
            f,
            statuses,
            types,
            overdue: false,
            rows,
            problem,
            next: None,
            first: None,
        },
        StatusCode::OK,
    )
}

fn search_problem(code: tonic::Code) -> &'static str {
    match code {
        tonic::Code::PermissionDenied => "search-denied",
        c => crate::overview::problem(c).unwrap_or("api-other"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn request(
        status: rights::RequestStatus,
        due_in_secs: i64,
        now: DateTime<Utc>,
    ) -> rights::RightsRequest {
        rights::RightsRequest {
            status: status as i32,
            due_at: Some(prost_types::Timestamp {
                seconds: now.timestamp() + due_in_secs,
                nanos: 0,
            }),
            overdue: due_in_secs < 0,
            ..Default::default()
        }
    }

    #[test]
    fn days_left_in_words_and_colour_by_how_near_the_deadline_is() {
        use rights::RequestStatus::*;
        let now = Utc::now();
        let day = 86_400;
        let u = |s, d| {
            let (class, words, days) = urgency(&request(s, d, now), now);
            (class, words, days)
        };
        assert_eq!(u(Received, 20 * day + 10), ("due", "queue-days-left", 20));
        assert_eq!(
            u(Verified, 9 * day + 10),
            ("due near", "queue-days-left", 9)
        );
        assert_eq!(
            u(InProgress, 4 * day + 10),
            ("due soon", "queue-days-left", 4)
        );
        assert_eq!(u(Received, 10), ("due soon", "queue-days-left", 0));
        assert_eq!(u(Received, -10), ("due overdue", "queue-overdue-by", 1));
        assert_eq!(
            u(Received, -3 * day - 10),
            ("due overdue", "queue-overdue-by", 4)
        );
        // Closed requests have no time left to show.
        assert_eq!(u(Completed, -3 * day), ("", "queue-closed", 0));
        assert_eq!(u(Rejected, 3 * day), ("", "queue-closed", 0));
    }

    #[test]
    fn links_keep_the_filters_and_carry_the_page_token() {
        let q = QueueQuery {
            status: "received".into(),
            kind: "erasure".into(),
            overdue: "1".into(),
            page: "abc".into(),
        };
        assert_eq!(
            link(&q, Some("tok/en+=")),
            "/requests?status=received&type=erasure&overdue=1&page=tok%2Fen%2B%3D"
        );
        assert_eq!(link(&QueueQuery::default(), None), "/requests");
    }
}
