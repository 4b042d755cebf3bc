//! Hostile input through the gateway, as a table: malformed protobuf bytes, oversized
//! messages, 1 MB strings, invalid UTF-8 on the wire, unknown enum values, negative page
//! sizes, forged page tokens, SQL-ish and control characters in every string field of
//! the main mutating RPCs, and deadlines that have already expired. Each gets its code
//! (INVALID_ARGUMENT naming the field where a field is to blame), nothing is written by
//! a rejected call, and the suite still answers afterwards.

use std::time::Duration;

use tonic::Code;
use tonic::codegen::http::uri::PathAndQuery;
use tonic_types::StatusExt;
use vern_proto::audit::v1 as apb;
use vern_proto::common::v1::{DataCategory, LegalBasis};
use vern_proto::consents::v1 as cpb;
use vern_proto::subjects::v1 as spb;
use vern_proto::tenants::v1 as tpb;
use vern_tests::{Backend, Suite, authed, token};

/// A codec that sends and receives raw message bytes, so the test can put anything on
/// the wire.
#[derive(Debug, Clone, Copy, Default)]
struct Raw;
#[derive(Debug)]
struct RawEnc;
#[derive(Debug)]
struct RawDec;

impl tonic::codec::Encoder for RawEnc {
    type Item = Vec<u8>;
    type Error = tonic::Status;
    fn encode(
        &mut self,
        item: Vec<u8>,
        dst: &mut tonic::codec::EncodeBuf<'_>,
    ) -> Result<(), tonic::Status> {
        use bytes::BufMut;
        dst.put_slice(&item);
        Ok(())
    }
}

impl tonic::codec::Decoder for RawDec {
    type Item = Vec<u8>;
    type Error = tonic::Status;
    fn decode(
        &mut self,
        src: &mut tonic::codec::DecodeBuf<'_>,
    ) -> Result<Option<Vec<u8>>, tonic::Status> {
        use bytes::Buf;
        let n = src.remaining();
        Ok(Some(src.copy_to_bytes(n).to_vec()))
    }
}

impl tonic::codec::Codec for Raw {
    type Encode = Vec<u8>;
    type Decode = Vec<u8>;
    type Encoder = RawEnc;
    type Decoder = RawDec;
    fn encoder(&mut self) -> RawEnc {
        RawEnc
    }
    fn decoder(&mut self) -> RawDec {
        RawDec
    }
}

/// Sends `bytes` as the message of `path`; returns the status code.
async fn raw_bytes(suite: &Suite, path: &str, bytes: Vec<u8>, tok: &str) -> Code {
    let mut grpc = tonic::client::Grpc::new(suite.channel.clone());
    grpc.ready().await.expect("ready");
    let req = authed(bytes, tok);
    let res = grpc
        .unary::<Vec<u8>, Vec<u8>, Raw>(req, PathAndQuery::try_from(path).expect("path"), Raw)
        .await;
    match res {
        Ok(_) => Code::Ok,
        Err(s) => s.code(),
    }
}

const TENANT: &str = "kultur";
const PURPOSE: &str = "newsletter";

/// What must happen to a field's hostile value.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    /// An identifier, key or code: anything hostile is INVALID_ARGUMENT.
    Ident,
    /// Free text: SQL-ish text and newlines are data (stored as given, harmless);
    /// control and bidi-override characters and oversized values are refused.
    Text,
    /// A single line (a name, a reference): as free text, but a line break is refused.
    Line,
}

/// The hostile values: (label, value, refused in free text too).
fn hostile() -> Vec<(&'static str, String, bool)> {
    vec![
        ("sql", "x'; DROP TABLE subjects;--".into(), false),
        ("newline", "a\nb".into(), false),
        ("nul", "a\u{0}b".into(), true),
        ("escape", "\u{1b}[31mred".into(), true),
        ("rlo", "abc\u{202e}fed".into(), true),
        ("1mb", "a".repeat(1024 * 1024), true),
    ]
}

struct Counts {
    tenants: usize,
    purposes: usize,
    subjects: usize,
    consent_events: usize,
}

async fn counts(suite: &Suite, subject: &str) -> Counts {
    let admin = token(&["platform-admin"], &[], 600);
    let kultur_admin = token(&["tenant-admin"], &[TENANT], 600);
    let crm = token(&["integration"], &[TENANT], 600);
    let ch = suite.channel.clone();
    let tenants = tpb::tenant_service_client::TenantServiceClient::new(ch.clone())
        .list_tenants(authed(
            tpb::ListTenantsRequest {
                page_size: 1000,
                ..Default::default()
            },
            &admin,
        ))
        .await
        .expect("tenants")
        .into_inner()
        .tenants
        .len();
    let purposes = tpb::tenant_service_client::TenantServiceClient::new(ch.clone())
        .list_purposes(authed(
            tpb::ListPurposesRequest {
                page_size: 1000,
                ..Default::default()
            },
            &kultur_admin,
        ))
        .await
        .expect("purposes")
        .into_inner()
        .purposes
        .len();
    let subjects = spb::subject_service_client::SubjectServiceClient::new(ch.clone())
        .list_subjects(authed(
            spb::ListSubjectsRequest {
                page_size: 1000,
                ..Default::default()
            },
            &crm,
        ))
        .await
        .expect("subjects")
        .into_inner()
        .subjects
        .len();
    let consent_events = cpb::consent_service_client::ConsentServiceClient::new(ch)
        .list_consent_history(authed(
            cpb::ListConsentHistoryRequest {
                page_size: 1000,
                subject_id: subject.into(),
                ..Default::default()
            },
            &crm,
        ))
        .await
        .expect("history")
        .into_inner()
        .events
        .len();
    Counts {
        tenants,
        purposes,
        subjects,
        consent_events,
    }
}

async fn setup(suite: &Suite) -> String {
    let ch = suite.channel.clone();
    let mut tenants = tpb::tenant_service_client::TenantServiceClient::new(ch.clone());
    tenants
        .create_tenant(authed(
            tpb::CreateTenantRequest {
                tenant_id: TENANT.into(),
                name: "Kultur".into(),
                org_number: "989990748".into(),
                dpo_email: "dpo@kultur.example".into(),
                ..Default::default()
            },
            &token(&["platform-admin"], &[], 600),
        ))
        .await
        .expect("tenant");
    tenants
        .create_purpose(authed(
            tpb::CreatePurposeRequest {
                key: PURPOSE.into(),
                description: "Nyhetsbrev".into(),
                legal_basis: LegalBasis::Consent as i32,
                data_categories: vec![DataCategory::Contact as i32],
                direct_marketing: true,
                ..Default::default()
            },
            &token(&["tenant-admin"], &[TENANT], 600),
        ))
        .await
        .expect("purpose");
    spb::subject_service_client::SubjectServiceClient::new(ch)
        .create_subject(authed(
            spb::CreateSubjectRequest {
                email: "base@example.no".into(),
                ..Default::default()
            },
            &token(&["integration"], &[TENANT], 600),
        ))
        .await
        .expect("subject")
        .into_inner()
        .subject_id
}

/// Sends one mutating request with `field` set to `value` (every other field valid and
/// unique per `n`); returns the status of the call.
async fn mutate(
    suite: &Suite,
    rpc: &str,
    field: &str,
    value: &str,
    subject: &str,
    n: usize,
) -> Result<(), tonic::Status> {
    let ch = suite.channel.clone();
    let admin = token(&["platform-admin"], &[], 600);
    let kultur_admin = token(&["tenant-admin"], &[TENANT], 600);
    let crm = token(&["integration"], &[TENANT], 600);
    let v = value.to_owned();
    match rpc {
        "CreateTenant" => {
            let mut r = tpb::CreateTenantRequest {
                tenant_id: format!("hostile-{n}"),
                name: "Hostile".into(),
                org_number: "989990748".into(),
                dpo_email: "dpo@hostile.example".into(),
                dpo_name: "Dpo".into(),
                supervisory_authority: "Datatilsynet".into(),
                group_id: "oslo".into(),
                security_measures: vec!["encryption at rest".into()],
                request_id: format!("hostile-tenant-{n}"),
            };
            match field {
                "tenant_id" => r.tenant_id = v,
                "name" => r.name = v,
                "org_number" => r.org_number = v,
                "dpo_email" => r.dpo_email = v,
                "dpo_name" => r.dpo_name = v,
                "supervisory_authority" => r.supervisory_authority = v,
                "group_id" => r.group_id = v,
                "security_measures[0]" => r.security_measures = vec![v],
                "request_id" => r.request_id = v,
                other => panic!("{other}"),
            }
            tpb::tenant_service_client::TenantServiceClient::new(ch)
                .create_tenant(authed(r, &admin))
                .await
                .map(drop)
        }
        "CreatePurpose" => {
            let mut r = tpb::CreatePurposeRequest {
                key: format!("hostile-{n}"),
                description: "A purpose".into(),
                legal_basis: LegalBasis::LegitimateInterests as i32,
                legitimate_interest: "fraud prevention".into(),
                data_categories: vec![DataCategory::Contact as i32],
                subject_categories: vec!["customers".into()],
                retention_summary: "3 years".into(),
                request_id: format!("hostile-purpose-{n}"),
                ..Default::default()
            };
            match field {
                "key" => r.key = v,
                "description" => r.description = v,
                "legitimate_interest" => r.legitimate_interest = v,
                "subject_categories[0]" => r.subject_categories = vec![v],
                "retention_summary" => r.retention_summary = v,
                "request_id" => r.request_id = v,
                other => panic!("{other}"),
            }
            tpb::tenant_service_client::TenantServiceClient::new(ch)
                .create_purpose(authed(r, &kultur_admin))
                .await
                .map(drop)
        }
        "CreateSubject" => {
            let mut r = spb::CreateSubjectRequest {
                email: format!("hostile{n}@example.no"),
                external_refs: vec![spb::ExternalRef {
                    system: "crm".into(),
                    id: format!("H-{n}"),
                }],
                records: vec![spb::Record {
                    category: DataCategory::Contact as i32,
                    field: "note".into(),
                    value: "a note".into(),
                    source: "crm".into(),
                    purposes: vec![PURPOSE.into()],
                    ..Default::default()
                }],
                request_id: format!("hostile-subject-{n}"),
                ..Default::default()
            };
            match field {
                "email" => r.email = v,
                "phone" => r.phone = v,
                "national_id" => r.national_id = v,
                "external_refs[0].system" => r.external_refs[0].system = v,
                "external_refs[0].id" => r.external_refs[0].id = v,
                "records[0].field" => r.records[0].field = v,
                "records[0].value" => r.records[0].value = v,
                "records[0].source" => r.records[0].source = v,
                "request_id" => r.request_id = v,
                other => panic!("{other}"),
            }
            spb::subject_service_client::SubjectServiceClient::new(ch)
                .create_subject(authed(r, &crm))
                .await
                .map(drop)
        }
        "RecordConsent" => {
            let mut r = cpb::RecordConsentRequest {
                subject_id: subject.into(),
                purpose: PURPOSE.into(),
                action: cpb::ConsentAction::Grant as i32,
                channel: cpb::ConsentChannel::WebForm as i32,
                notice_version: "2026-11".into(),
                evidence: "form".into(),
                actor: "kundesenter".into(),
                request_id: format!("hostile-consent-{n}"),
                ..Default::default()
            };
            match field {
                "subject_id" => r.subject_id = v,
                "purpose" => r.purpose = v,
                "notice_version" => r.notice_version = v,
                "evidence" => r.evidence = v,
                "actor" => r.actor = v,
                "rights_request_id" => r.rights_request_id = v,
                "request_id" => r.request_id = v,
                other => panic!("{other}"),
            }
            cpb::consent_service_client::ConsentServiceClient::new(ch)
                .record_consent(authed(r, &crm))
                .await
                .map(drop)
        }
        other => panic!("{other}"),
    }
}

/// The string fields of the main mutating RPCs and what kind of value each holds.
const FIELDS: &[(&str, &str, Kind)] = &[
    ("CreateTenant", "tenant_id", Kind::Ident),
    ("CreateTenant", "name", Kind::Line),
    ("CreateTenant", "org_number", Kind::Ident),
    ("CreateTenant", "dpo_email", Kind::Ident),
    ("CreateTenant", "dpo_name", Kind::Line),
    ("CreateTenant", "supervisory_authority", Kind::Line),
    ("CreateTenant", "group_id", Kind::Ident),
    ("CreateTenant", "security_measures[0]", Kind::Line),
    ("CreateTenant", "request_id", Kind::Ident),
    ("CreatePurpose", "key", Kind::Ident),
    ("CreatePurpose", "description", Kind::Text),
    ("CreatePurpose", "legitimate_interest", Kind::Text),
    ("CreatePurpose", "subject_categories[0]", Kind::Line),
    ("CreatePurpose", "retention_summary", Kind::Text),
    ("CreatePurpose", "request_id", Kind::Ident),
    ("CreateSubject", "email", Kind::Ident),
    ("CreateSubject", "phone", Kind::Ident),
    ("CreateSubject", "national_id", Kind::Ident),
    ("CreateSubject", "external_refs[0].system", Kind::Ident),
    ("CreateSubject", "external_refs[0].id", Kind::Line),
    ("CreateSubject", "records[0].field", Kind::Line),
    ("CreateSubject", "records[0].value", Kind::Text),
    ("CreateSubject", "records[0].source", Kind::Line),
    ("CreateSubject", "request_id", Kind::Ident),
    ("RecordConsent", "subject_id", Kind::Ident),
    ("RecordConsent", "purpose", Kind::Ident),
    ("RecordConsent", "notice_version", Kind::Line),
    ("RecordConsent", "evidence", Kind::Text),
    ("RecordConsent", "actor", Kind::Line),
    ("RecordConsent", "rights_request_id", Kind::Line),
    ("RecordConsent", "request_id", Kind::Ident),
];

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hostile_strings_in_every_field_are_refused_or_stored_as_data() {
    tokio::time::timeout(Duration::from_secs(120), async {
        let suite = Suite::start(Backend::Sqlite).await.expect("suite");
        let subject = setup(&suite).await;
        let before = counts(&suite, &subject).await;
        let mut n = 0;
        let (mut refused, mut accepted) = (0usize, std::collections::HashMap::new());
        let mut wrong = vec![];
        for (rpc, field, kind) in FIELDS {
            for (label, value, refused_in_text) in hostile() {
                n += 1;
                let must_refuse = *kind == Kind::Ident
                    || refused_in_text
                    || (*kind == Kind::Line && label == "newline");
                let res = mutate(&suite, rpc, field, &value, &subject, n).await;
                match (&res, must_refuse) {
                    (Err(s), true) if s.code() == Code::InvalidArgument => {
                        let fields: Vec<String> = s
                            .get_details_bad_request()
                            .map(|b| b.field_violations.into_iter().map(|v| v.field).collect())
                            .unwrap_or_default();
                        if !fields.iter().any(|f| f == field) {
                            wrong
                                .push(format!("{rpc}.{field} {label}: violations name {fields:?}"));
                        }
                        if s.message().contains(&value) && value.len() > 3 {
                            wrong.push(format!("{rpc}.{field} {label}: value echoed"));
                        }
                        refused += 1;
                    }
                    (Ok(()), false) => *accepted.entry(*rpc).or_insert(0usize) += 1,
                    (r, _) => wrong.push(format!(
                        "{rpc}.{field} {label}: got {:?}, want {}",
                        r.as_ref().map_err(|s| (
                            s.code(),
                            s.message().chars().take(80).collect::<String>()
                        )),
                        if must_refuse {
                            "INVALID_ARGUMENT"
                        } else {
                            "OK"
                        }
                    )),
                }
            }
        }
        assert!(
            wrong.is_empty(),
            "{} wrong answers:\n{}",
            wrong.len(),
            wrong.join("\n")
        );
        // Nothing but the accepted requests was written.
        let after = counts(&suite, &subject).await;
        let acc = |rpc| accepted.get(rpc).copied().unwrap_or(0);
        assert_eq!(
            after.tenants,
            before.tenants + acc("CreateTenant"),
            "tenants"
        );
        assert_eq!(
            after.purposes,
            before.purposes + acc("CreatePurpose"),
            "purposes"
        );
        assert_eq!(
            after.subjects,
            before.subjects + acc("CreateSubject"),
            "subjects"
        );
        assert_eq!(
            after.consent_events,
            before.consent_events + acc("RecordConsent"),
            "consent events"
        );
        eprintln!("{refused} refused, accepted as data: {accepted:?}");
        assert!(refused > 100);
        still_serving(&suite).await;
        suite.stop().await;
    })
    .await
    .expect("bounded in time");
}

/// Length-delimited field `tag` with `bytes`.
fn ld(tag: u8, bytes: &[u8]) -> Vec<u8> {
    let mut out = vec![(tag << 3) | 2];
    let mut n = bytes.len();
    loop {
        let b = (n & 0x7f) as u8;
        n >>= 7;
        if n == 0 {
            out.push(b);
            break;
        }
        out.push(b | 0x80);
    }
    out.extend_from_slice(bytes);
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn malformed_oversized_and_out_of_range_requests_get_their_codes() {
    tokio::time::timeout(Duration::from_secs(120), async {
        let suite = Suite::start(Backend::Sqlite).await.expect("suite");
        let subject = setup(&suite).await;
        let before = counts(&suite, &subject).await;
        let crm = token(&["integration"], &[TENANT], 600);
        let admin = token(&["platform-admin"], &[], 600);
        let record = "/vern.consents.v1.ConsentService/RecordConsent";
        let create_tenant = "/vern.tenants.v1.TenantService/CreateTenant";
        let mut valid = ld(1, subject.as_bytes());
        valid.extend(ld(2, PURPOSE.as_bytes()));
        valid.extend([3 << 3, 1, 4 << 3, 1]);
        valid.extend(ld(5, b"2026-11"));

        // Undecodable bytes are INTERNAL: the code gRPC's statuscodes.md gives to "error
        // parsing request proto" (tonic-prost follows it). Oversized is OUT_OF_RANGE
        // (tonic) or RESOURCE_EXHAUSTED.
        let mut bad_utf8 = ld(1, &[0xc3, 0x28, 0xff]);
        bad_utf8.extend(ld(2, PURPOSE.as_bytes()));
        let mut bad_utf8_tenant = ld(1, b"utf");
        bad_utf8_tenant.extend(ld(2, &[b'n', 0xfe, 0xfe]));
        type Case<'a> = (&'a str, &'a str, Vec<u8>, &'a str, &'a [Code]);
        let cases: Vec<Case> = vec![
            ("garbage", record, vec![0xff; 16], &crm, &[Code::Internal]),
            (
                "truncated field",
                record,
                vec![0x0a, 0x20, b'a'],
                &crm,
                &[Code::Internal],
            ),
            (
                "bad varint",
                record,
                vec![
                    0x18, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff,
                ],
                &crm,
                &[Code::Internal],
            ),
            (
                "invalid utf-8 subject_id",
                record,
                bad_utf8,
                &crm,
                &[Code::Internal],
            ),
            (
                "invalid utf-8 tenant name",
                create_tenant,
                bad_utf8_tenant,
                &admin,
                &[Code::Internal],
            ),
            (
                "group 0 wire type",
                record,
                vec![0x03, 0x04],
                &crm,
                &[Code::Internal],
            ),
            (
                "5 MB message",
                record,
                {
                    let mut m = valid.clone();
                    m.extend(ld(6, &vec![b'e'; 5 * 1024 * 1024]));
                    m
                },
                &crm,
                &[Code::OutOfRange, Code::ResourceExhausted],
            ),
            (
                "unknown field numbers only",
                record,
                vec![0xf8, 0x07, 0x01],
                &crm,
                &[Code::InvalidArgument],
            ),
        ];
        let mut wrong = vec![];
        for (label, path, bytes, tok, want) in cases {
            let got = raw_bytes(&suite, path, bytes, tok).await;
            if !want.contains(&got) {
                wrong.push(format!("{label}: {got:?}, want {want:?}"));
            }
        }

        // Unknown enum values (proto3 keeps them): INVALID_ARGUMENT naming the field.
        let mut consents =
            cpb::consent_service_client::ConsentServiceClient::new(suite.channel.clone());
        let mut tenants =
            tpb::tenant_service_client::TenantServiceClient::new(suite.channel.clone());
        let kultur_admin = token(&["tenant-admin"], &[TENANT], 600);
        let base = cpb::RecordConsentRequest {
            subject_id: subject.clone(),
            purpose: PURPOSE.into(),
            action: cpb::ConsentAction::Grant as i32,
            channel: cpb::ConsentChannel::WebForm as i32,
            notice_version: "2026-11".into(),
            ..Default::default()
        };
        let purpose = tpb::CreatePurposeRequest {
            key: "enum-test".into(),
            description: "x".into(),
            legal_basis: LegalBasis::Consent as i32,
            data_categories: vec![DataCategory::Contact as i32],
            ..Default::default()
        };
        let mut expect_invalid = |label: &str, field: &str, r: Result<(), tonic::Status>| match r {
            Err(s) if s.code() == Code::InvalidArgument => {
                let fields: Vec<String> = s
                    .get_details_bad_request()
                    .map(|b| b.field_violations.into_iter().map(|v| v.field).collect())
                    .unwrap_or_default();
                if !fields.iter().any(|f| f == field) {
                    wrong.push(format!("{label}: violations name {fields:?}, want {field}"));
                }
            }
            other => wrong.push(format!(
                "{label}: {:?}, want INVALID_ARGUMENT",
                other.map_err(|s| s.code())
            )),
        };
        for (label, field, req) in [
            (
                "action 99",
                "action",
                cpb::RecordConsentRequest {
                    action: 99,
                    ..base.clone()
                },
            ),
            (
                "action -1",
                "action",
                cpb::RecordConsentRequest {
                    action: -1,
                    ..base.clone()
                },
            ),
            (
                "channel 42",
                "channel",
                cpb::RecordConsentRequest {
                    channel: 42,
                    ..base.clone()
                },
            ),
        ] {
            let r = consents.record_consent(authed(req, &crm)).await.map(drop);
            expect_invalid(label, field, r);
        }
        for (label, field, req) in [
            (
                "legal_basis 77",
                "legal_basis",
                tpb::CreatePurposeRequest {
                    legal_basis: 77,
                    ..purpose.clone()
                },
            ),
            (
                "data category 99",
                "data_categories[0]",
                tpb::CreatePurposeRequest {
                    data_categories: vec![99],
                    ..purpose.clone()
                },
            ),
        ] {
            let r = tenants
                .create_purpose(authed(req, &kultur_admin))
                .await
                .map(drop);
            expect_invalid(label, field, r);
        }

        // Negative page sizes and forged page tokens.
        use base64::Engine;
        let b64 = |s: &str| base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(s);
        // A real token of another list: tenants, page size 1 (two tenants exist after
        // this one).
        tenants
            .create_tenant(authed(
                tpb::CreateTenantRequest {
                    tenant_id: "second".into(),
                    name: "Second".into(),
                    org_number: "989990748".into(),
                    dpo_email: "dpo@second.example".into(),
                    ..Default::default()
                },
                &admin,
            ))
            .await
            .expect("second tenant");
        let tenants_token = tenants
            .list_tenants(authed(
                tpb::ListTenantsRequest {
                    page_size: 1,
                    ..Default::default()
                },
                &admin,
            ))
            .await
            .expect("list")
            .into_inner()
            .next_page_token;
        assert!(!tenants_token.is_empty());
        let forged = [
            ("garbage", "%%%not-base64%%%".to_string()),
            ("other list", tenants_token.clone()),
            ("wrong version", b64("v0\npurposes\nx")),
            ("no separator", b64("v1")),
            (
                "invalid utf-8",
                base64::engine::general_purpose::URL_SAFE_NO_PAD.encode([0xff, 0xfe, 0x0a]),
            ),
            ("huge", "A".repeat(4096)),
            ("sql", b64("v1\npurposes\n' OR 1=1 --")),
        ];
        for (label, tok) in &forged {
            if *label == "sql" {
                // A well-formed token of this list whose key is SQL-ish: a key like any
                // other, compared with a bound parameter. Must not fail or leak rows.
                let r = tenants
                    .list_purposes(authed(
                        tpb::ListPurposesRequest {
                            page_token: tok.clone(),
                            page_size: 10,
                        },
                        &kultur_admin,
                    ))
                    .await;
                match r {
                    Ok(p) => assert!(p.into_inner().purposes.len() <= 10),
                    Err(s) => expect_invalid("sql page token", "page_token", Err(s)),
                }
                continue;
            }
            let r = tenants
                .list_purposes(authed(
                    tpb::ListPurposesRequest {
                        page_token: tok.clone(),
                        ..Default::default()
                    },
                    &kultur_admin,
                ))
                .await
                .map(drop);
            expect_invalid(&format!("ListPurposes token {label}"), "page_token", r);
            let r = consents
                .list_consent_history(authed(
                    cpb::ListConsentHistoryRequest {
                        page_token: tok.clone(),
                        subject_id: subject.clone(),
                        ..Default::default()
                    },
                    &crm,
                ))
                .await
                .map(drop);
            expect_invalid(
                &format!("ListConsentHistory token {label}"),
                "page_token",
                r,
            );
        }
        let auditor = token(&["auditor"], &[TENANT], 600);
        let mut subjects =
            spb::subject_service_client::SubjectServiceClient::new(suite.channel.clone());
        let mut audit = apb::audit_service_client::AuditServiceClient::new(suite.channel.clone());
        for size in [-1, i32::MIN] {
            let r = tenants
                .list_tenants(authed(
                    tpb::ListTenantsRequest {
                        page_size: size,
                        ..Default::default()
                    },
                    &admin,
                ))
                .await
                .map(drop);
            expect_invalid("ListTenants negative", "page_size", r);
            let r = tenants
                .list_purposes(authed(
                    tpb::ListPurposesRequest {
                        page_size: size,
                        ..Default::default()
                    },
                    &kultur_admin,
                ))
                .await
                .map(drop);
            expect_invalid("ListPurposes negative", "page_size", r);
            let r = subjects
                .list_subjects(authed(
                    spb::ListSubjectsRequest {
                        page_size: size,
                        ..Default::default()
                    },
                    &crm,
                ))
                .await
                .map(drop);
            expect_invalid("ListSubjects negative", "page_size", r);
            let r = consents
                .list_consent_history(authed(
                    cpb::ListConsentHistoryRequest {
                        page_size: size,
                        subject_id: subject.clone(),
                        ..Default::default()
                    },
                    &crm,
                ))
                .await
                .map(drop);
            expect_invalid("ListConsentHistory negative", "page_size", r);
            let r = audit
                .query_events(authed(
                    apb::QueryEventsRequest {
                        page_size: size,
                        ..Default::default()
                    },
                    &auditor,
                ))
                .await
                .map(drop);
            expect_invalid("QueryEvents negative", "page_size", r);
        }

        // Deadlines of 0 and already expired: DEADLINE_EXCEEDED, and nothing written.
        // Sent with a bare HTTP/2 client: tonic's client runs its own timer on the
        // same header and would answer CANCELLED itself before the server is heard.
        let mut msg = vec![];
        {
            use prost::Message;
            cpb::RecordConsentRequest {
                request_id: "deadline-expired".into(),
                ..base.clone()
            }
            .encode(&mut msg)
            .expect("encode");
        }
        for timeout in ["0n", "1n", "999u", "0S"] {
            let code = h2_call(suite.addr, record, &msg, &crm, timeout).await;
            if code != Code::DeadlineExceeded {
                wrong.push(format!("grpc-timeout {timeout}: {code:?}"));
            }
        }
        assert!(
            wrong.is_empty(),
            "{} wrong answers:\n{}",
            wrong.len(),
            wrong.join("\n")
        );

        // Nothing was written (the second tenant is the test's own).
        let after = counts(&suite, &subject).await;
        assert_eq!(after.tenants, before.tenants + 1);
        assert_eq!(after.purposes, before.purposes, "purposes");
        assert_eq!(after.subjects, before.subjects, "subjects");
        assert_eq!(
            after.consent_events, before.consent_events,
            "consent events"
        );
        still_serving(&suite).await;
        suite.stop().await;
    })
    .await
    .expect("bounded in time");
}

/// Health answers SERVING and a normal call works: nothing above took the suite down.
async fn still_serving(suite: &Suite) {
    let mut health = tonic_health::pb::health_client::HealthClient::new(suite.channel.clone());
    let status = health
        .check(tonic_health::pb::HealthCheckRequest {
            service: String::new(),
        })
        .await
        .expect("health answers")
        .into_inner()
        .status;
    assert_eq!(
        status,
        tonic_health::pb::health_check_response::ServingStatus::Serving as i32
    );
    tpb::tenant_service_client::TenantServiceClient::new(suite.channel.clone())
        .get_tenant(authed(
            tpb::GetTenantRequest {
                tenant_id: TENANT.into(),
            },
            &token(&["platform-admin"], &[], 600),
        ))
        .await
        .expect("a normal call still works");
}

/// One unary gRPC call over a bare HTTP/2 connection with the given `grpc-timeout`
/// header; returns the `grpc-status` of the answer.
async fn h2_call(
    addr: std::net::SocketAddr,
    path: &str,
    msg: &[u8],
    tok: &str,
    grpc_timeout: &str,
) -> Code {
    use tonic::codegen::http;
    let tcp = tokio::net::TcpStream::connect(addr).await.expect("connect");
    let (mut client, conn) = h2::client::handshake(tcp).await.expect("h2 handshake");
    tokio::spawn(async move {
        let _ = conn.await;
    });
    let req = http::Request::builder()
        .method("POST")
        .uri(format!("http://{addr}{path}"))
        .header("content-type", "application/grpc")
        .header("te", "trailers")
        .header("grpc-timeout", grpc_timeout)
        .header("authorization", format!("Bearer {tok}"))
        .body(())
        .expect("request");
    let (response, mut send) = client.send_request(req, false).expect("send");
    let mut frame = vec![0u8];
    frame.extend_from_slice(&(msg.len() as u32).to_be_bytes());
    frame.extend_from_slice(msg);
    send.send_data(frame.into(), true).expect("data");
    let response = response.await.expect("response");
    let status_of = |h: &http::HeaderMap| {
        h.get("grpc-status")
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.parse::<i32>().ok())
    };
    // A trailers-only answer carries the status in the headers.
    if let Some(code) = status_of(response.headers()) {
        return Code::from_i32(code);
    }
    let mut body = response.into_body();
    while let Some(chunk) = body.data().await {
        let _ = chunk.expect("body");
    }
    let trailers = body.trailers().await.expect("trailers").unwrap_or_default();
    Code::from_i32(status_of(&trailers).expect("grpc-status"))
}
