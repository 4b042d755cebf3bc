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

/// Sends `bytes` as the message of `path` (a server-streaming RPC when `streaming`) on
/// `channel`; returns the status code (of the first item, for a stream).
async fn raw_bytes(
    channel: &tonic::transport::Channel,
    path: &str,
    streaming: bool,
    bytes: Vec<u8>,
    tok: &str,
) -> Code {
    let mut grpc = tonic::client::Grpc::new(channel.clone());
    grpc.ready().await.expect("ready");
    // Vouched for: the standalone service is called on its own port, as the gateway would.
    let req = vern_tests::vouched(bytes, tok);
    let path = PathAndQuery::try_from(path).expect("path");
    if streaming {
        let res = grpc
            .server_streaming::<Vec<u8>, Vec<u8>, Raw>(req, path, Raw)
            .await;
        return match res {
            Ok(mut stream) => match stream.get_mut().message().await {
                Ok(_) => Code::Ok,
                Err(s) => s.code(),
            },
            Err(s) => s.code(),
        };
    }
    match grpc.unary::<Vec<u8>, Vec<u8>, Raw>(req, path, Raw).await {
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

        // Undecodable bytes are the caller's fault: INVALID_ARGUMENT (tonic-prost says
        // INTERNAL; kit::wire rewrites it). A message over the limit is
        // RESOURCE_EXHAUSTED (tonic says OUT_OF_RANGE). Unary and server-streaming RPCs
        // alike: both decode their one request before the handler runs.
        let watch = "/vern.rights.v1.RightsService/WatchEvents";
        let export = "/vern.audit.v1.AuditService/ExportEvents";
        let auditor = token(&["auditor"], &[TENANT], 600);
        let mut bad_utf8 = ld(1, &[0xc3, 0x28, 0xff]);
        bad_utf8.extend(ld(2, PURPOSE.as_bytes()));
        let mut bad_utf8_tenant = ld(1, b"utf");
        bad_utf8_tenant.extend(ld(2, &[b'n', 0xfe, 0xfe]));
        let five_mb = |mut m: Vec<u8>, tag: u8| {
            m.extend(ld(tag, &vec![b'e'; 5 * 1024 * 1024]));
            m
        };
        let bad_varint = vec![
            0x18, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff,
        ];
        type Case<'a> = (&'a str, &'a str, bool, Vec<u8>, &'a str, Code);
        let invalid = Code::InvalidArgument;
        let cases: Vec<Case> = vec![
            ("garbage", record, false, vec![0xff; 16], &crm, invalid),
            (
                "truncated field",
                record,
                false,
                vec![0x0a, 0x20, b'a'],
                &crm,
                invalid,
            ),
            (
                "bad varint",
                record,
                false,
                bad_varint.clone(),
                &crm,
                invalid,
            ),
            (
                "invalid utf-8 subject_id",
                record,
                false,
                bad_utf8,
                &crm,
                invalid,
            ),
            (
                "invalid utf-8 tenant name",
                create_tenant,
                false,
                bad_utf8_tenant.clone(),
                &admin,
                invalid,
            ),
            (
                "group 0 wire type",
                record,
                false,
                vec![0x03, 0x04],
                &crm,
                invalid,
            ),
            (
                "5 MB message",
                record,
                false,
                five_mb(valid.clone(), 6),
                &crm,
                Code::ResourceExhausted,
            ),
            (
                "unknown field numbers only",
                record,
                false,
                vec![0xf8, 0x07, 0x01],
                &crm,
                invalid,
            ),
            // Server-streaming RPCs.
            (
                "WatchEvents invalid utf-8 cursor",
                watch,
                true,
                ld(1, &[0xff, 0xfe]),
                &crm,
                invalid,
            ),
            (
                "WatchEvents truncated field",
                watch,
                true,
                vec![0x1a, 0x10, b'c'],
                &crm,
                invalid,
            ),
            (
                "WatchEvents 5 MB message",
                watch,
                true,
                five_mb(vec![], 3),
                &crm,
                Code::ResourceExhausted,
            ),
            (
                "ExportEvents bad varint",
                export,
                true,
                vec![
                    0x08, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff,
                ],
                &auditor,
                invalid,
            ),
            (
                "ExportEvents garbage",
                export,
                true,
                vec![0xff; 16],
                &auditor,
                invalid,
            ),
            (
                "ExportEvents 5 MB message",
                export,
                true,
                five_mb(vec![], 9),
                &auditor,
                Code::ResourceExhausted,
            ),
        ];
        let mut wrong = vec![];
        for (label, path, streaming, bytes, tok, want) in cases {
            let got = raw_bytes(&suite.channel, path, streaming, bytes, tok).await;
            if got != want {
                wrong.push(format!("{label}: {got:?}, want {want:?}"));
            }
        }

        // `vern serve`: a standalone service and a standalone gateway forwarding to it
        // (each through kit::server::serve) answer the same.
        let standalone = Standalone::start().await;
        for (where_, channel) in [
            ("standalone tenants", &standalone.service),
            ("standalone gateway", &standalone.gateway),
        ] {
            for (label, bytes, want) in [
                (
                    "invalid utf-8 tenant name",
                    bad_utf8_tenant.clone(),
                    invalid,
                ),
                ("bad varint", bad_varint.clone(), invalid),
                (
                    "5 MB message",
                    five_mb(ld(1, b"big"), 2),
                    Code::ResourceExhausted,
                ),
            ] {
                let got = raw_bytes(channel, create_tenant, false, bytes, &admin).await;
                if got != want {
                    wrong.push(format!("{where_} {label}: {got:?}, want {want:?}"));
                }
            }
        }
        standalone.stop().await;

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
    // A server may answer before the body is sent (an expired `grpc-timeout` is
    // refused on its head): the stream is then closed, and the answer is what counts.
    if let Err(e) = send.send_data(frame.into(), true) {
        eprintln!("body not sent ({e}): the answer came first");
    }
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

/// A tenants service served on its own (`vern serve tenants`) and a gateway forwarding
/// to it (`vern serve gateway`), each through `kit::server::serve`.
struct Standalone {
    service: tonic::transport::Channel,
    gateway: tonic::transport::Channel,
    stops: Vec<tokio::sync::oneshot::Sender<()>>,
    tasks: Vec<tokio::task::JoinHandle<Result<(), tonic::transport::Error>>>,
    _dir: tempfile::TempDir,
}

impl Standalone {
    async fn start() -> Self {
        let dir = tempfile::tempdir().expect("dir");
        let mut config = vern_kit::config::Config {
            data_dir: dir.path().to_path_buf(),
            ..Default::default()
        };
        config.auth.hs256_secret = Some("e2e-test-secret".into());
        config.keys.master_key = Some("dmVybi1lMmUtdGVzdC1tYXN0ZXIta2V5LTMyYnl0ZXM=".into());
        let mut stops = vec![];
        let mut tasks = vec![];
        let mut serve = |served: vern_kit::server::Served,
                         listener: tokio::net::TcpListener,
                         config: &vern_kit::config::Config| {
            let verifier = vern_cli::verifier(config).expect("verifier");
            let server_config = config.server.clone();
            let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
            stops.push(stop);
            tasks.push(tokio::spawn(async move {
                vern_kit::server::serve(served, listener, &server_config, verifier, async {
                    let _ = stopped.await;
                })
                .await
            }));
        };
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind");
        let service_addr = listener.local_addr().expect("addr");
        let served = vern_cli::suite_of(&config, &["tenants"])
            .await
            .expect("tenants");
        serve(served, listener, &config);

        config.services.tenants.url = format!("http://{service_addr}");
        let routes = vern_gateway::forwarding_routes(
            &config.services,
            vern_cli::service_tokens(&config).expect("service tokens"),
        )
        .expect("routes");
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind");
        let gateway_addr = listener.local_addr().expect("addr");
        serve(
            vern_kit::server::Served {
                routes,
                health_names: vern_proto::SERVICE_NAMES.to_vec(),
                denials: None,
                telemetry: vern_kit::telemetry::Telemetry::off(),
                exposure: vern_kit::context::Exposure::Public,
                tenants: None,
                shutdown: vern_kit::shutdown::Shutdown::new(),
                tls: None,
            },
            listener,
            &config,
        );
        let connect = |addr: std::net::SocketAddr| async move {
            tonic::transport::Channel::from_shared(format!("http://{addr}"))
                .expect("uri")
                .connect()
                .await
                .expect("connect")
        };
        Self {
            service: connect(service_addr).await,
            gateway: connect(gateway_addr).await,
            stops,
            tasks,
            _dir: dir,
        }
    }

    async fn stop(self) {
        for stop in self.stops {
            let _ = stop.send(());
        }
        for task in self.tasks {
            let _ = task.await;
        }
    }
}

/// Which range a request timestamp field has (see `vern_kit::time::Bounds`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Range {
    /// Any valid protobuf Timestamp (filters).
    Protobuf,
    /// 1900 to now + 5 minutes (something that happened).
    Event,
    /// 1900 to 2200 (ends, expiries, as-of times, times from other services).
    Business,
}

/// Sends `t` in `field` of one request of `rpc` (everything else valid enough to reach
/// the field's check); returns the answer.
async fn send_time(
    suite: &Suite,
    subject: &str,
    rpc: &str,
    field: &str,
    t: prost_types::Timestamp,
) -> Result<(), tonic::Status> {
    use vern_proto::retention::v1 as rpb;
    use vern_proto::rights::v1 as qpb;
    let ch = suite.channel.clone();
    let officer = token(&["privacy-officer"], &[TENANT], 600);
    let service = token(&["service"], &[TENANT], 600);
    let id = || uuid::Uuid::new_v4().to_string();
    let t = Some(t);
    let record = |t: Option<prost_types::Timestamp>| spb::Record {
        category: DataCategory::Contact as i32,
        field: "address".into(),
        value: "Storgata 1".into(),
        source: "web form".into(),
        purposes: vec![PURPOSE.into()],
        collected_at: t,
        ..Default::default()
    };
    let mut subjects = spb::subject_service_client::SubjectServiceClient::new(ch.clone());
    let mut consents = cpb::consent_service_client::ConsentServiceClient::new(ch.clone());
    let mut retention = rpb::retention_service_client::RetentionServiceClient::new(ch.clone());
    let mut rights = qpb::rights_service_client::RightsServiceClient::new(ch.clone());
    let mut audit = apb::audit_service_client::AuditServiceClient::new(ch);
    // Service-only RPCs on the suite's internal listener (the gateway refuses the role).
    let internal = suite.internal.clone();
    match (rpc, field) {
        ("RecordConsent", f) => {
            let mut r = cpb::RecordConsentRequest {
                subject_id: subject.into(),
                purpose: PURPOSE.into(),
                action: cpb::ConsentAction::Grant as i32,
                channel: cpb::ConsentChannel::WebForm as i32,
                notice_version: "2026-11".into(),
                request_id: id(),
                ..Default::default()
            };
            if f == "occur_time" {
                r.occur_time = t;
            } else {
                r.expires_at = t;
            }
            consents.record_consent(authed(r, &officer)).await.map(drop)
        }
        ("CreateSubject", f) => {
            let mut r = spb::CreateSubjectRequest {
                email: format!("{}@example.no", id()),
                request_id: id(),
                ..Default::default()
            };
            if f == "relationship_end_time" {
                r.relationship_end_time = t;
            } else {
                r.records = vec![record(t)];
            }
            subjects.create_subject(authed(r, &officer)).await.map(drop)
        }
        ("AddRecords", _) => subjects
            .add_records(authed(
                spb::AddRecordsRequest {
                    subject_id: subject.into(),
                    records: vec![record(None), record(t)],
                    request_id: id(),
                },
                &officer,
            ))
            .await
            .map(drop),
        ("UpdateRecord", _) => subjects
            .update_record(authed(
                spb::UpdateRecordRequest {
                    subject_id: subject.into(),
                    record: Some(spb::Record {
                        record_id: id(),
                        ..record(t)
                    }),
                    update_mask: Some(prost_types::FieldMask {
                        paths: vec!["collected_at".into()],
                    }),
                    request_id: id(),
                },
                &officer,
            ))
            .await
            .map(drop),
        ("UpdateSubject", _) => subjects
            .update_subject(authed(
                spb::UpdateSubjectRequest {
                    subject: Some(spb::Subject {
                        subject_id: subject.into(),
                        relationship_end_time: t,
                        ..Default::default()
                    }),
                    update_mask: Some(prost_types::FieldMask {
                        paths: vec!["relationship_end_time".into()],
                    }),
                    request_id: id(),
                },
                &officer,
            ))
            .await
            .map(drop),
        ("EraseSubject", _) => subjects
            .erase_subject(authed(
                spb::EraseSubjectRequest {
                    subject_id: subject.into(),
                    reason: "test".into(),
                    retain: vec![spb::RetainedRecord {
                        record_id: id(),
                        retain_until_time: t,
                        legal_reference: "bokføringsloven § 13".into(),
                    }],
                    request_id: id(),
                    ..Default::default()
                },
                &officer,
            ))
            .await
            .map(drop),
        ("PurgeRecords", f) => {
            let mut r = spb::PurgeRecordsRequest {
                action: spb::PurgeAction::Delete as i32,
                dry_run: true,
                request_id: id(),
                ..Default::default()
            };
            match f {
                "older_than" => r.older_than = t,
                "relationship_end_before" => r.relationship_end_before = t,
                _ => r.retain_until_before = t,
            }
            spb::subject_service_client::SubjectServiceClient::new(internal.clone())
                .purge_records(authed(r, &service))
                .await
                .map(drop)
        }
        ("ListConsentStates", _) => consents
            .list_consent_states(authed(
                cpb::ListConsentStatesRequest {
                    update_before: t,
                    ..Default::default()
                },
                &officer,
            ))
            .await
            .map(drop),
        ("ApplySubjectStates", _) => {
            cpb::consent_service_client::ConsentServiceClient::new(internal.clone())
                .apply_subject_states(authed(
                    cpb::ApplySubjectStatesRequest {
                        changes: vec![
                            cpb::SubjectStateChange {
                                subject_id: subject.into(),
                                state: cpb::SubjectState::Active as i32,
                                version: 1_000,
                                change_time: None,
                                restricted_purposes: vec![],
                            },
                            cpb::SubjectStateChange {
                                subject_id: subject.into(),
                                state: cpb::SubjectState::Restricted as i32,
                                version: 1_001,
                                change_time: t,
                                restricted_purposes: vec![],
                            },
                        ],
                        request_id: id(),
                    },
                    &service,
                ))
                .await
                .map(drop)
        }
        ("PlaceHold", _) => retention
            .place_hold(authed(
                rpb::PlaceHoldRequest {
                    scope: rpb::HoldScope::Subject as i32,
                    subject_id: subject.into(),
                    reason: "tvist".into(),
                    end_time: t,
                    request_id: id(),
                },
                &officer,
            ))
            .await
            .map(drop),
        ("Evaluate", _) => retention
            .evaluate(authed(
                rpb::EvaluateRequest {
                    subject_id: subject.into(),
                    evaluate_time: t,
                },
                &officer,
            ))
            .await
            .map(drop),
        ("SubmitRequest", _) => rights
            .submit_request(authed(
                qpb::SubmitRequestRequest {
                    r#type: qpb::RequestType::Access as i32,
                    requester: Some(qpb::submit_request_request::Requester::SubjectId(
                        subject.into(),
                    )),
                    channel: qpb::RequestChannel::Email as i32,
                    request_id: id(),
                    received_at: t,
                    ..Default::default()
                },
                &officer,
            ))
            .await
            .map(drop),
        ("ListRequests", _) => rights
            .list_requests(authed(
                qpb::ListRequestsRequest {
                    due_before: t,
                    ..Default::default()
                },
                &officer,
            ))
            .await
            .map(drop),
        ("ExtendDeadline", _) => rights
            .extend_deadline(authed(
                qpb::ExtendDeadlineRequest {
                    rights_request_id: id(),
                    reason: "complex".into(),
                    months: 1,
                    subject_informed_at: t,
                    request_id: id(),
                },
                &officer,
            ))
            .await
            .map(drop),
        ("ApplySubjectErasures", _) => {
            qpb::rights_service_client::RightsServiceClient::new(internal.clone())
                .apply_subject_erasures(authed(
                    qpb::ApplySubjectErasuresRequest {
                        erasures: vec![qpb::SubjectErasure {
                            subject_id: subject.into(),
                            erase_time: t,
                            rights_request_id: String::new(),
                            ..Default::default()
                        }],
                        request_id: id(),
                        restrictions: vec![],
                    },
                    &service,
                ))
                .await
                .map(drop)
        }
        ("AppendEvents", _) => apb::audit_service_client::AuditServiceClient::new(internal.clone())
            .append_events(authed(
                apb::AppendEventsRequest {
                    events: vec![apb::AuditEvent {
                        event_id: id(),
                        action: "Test".into(),
                        service: "tests".into(),
                        outcome: apb::Outcome::Success as i32,
                        occur_time: t,
                        ..Default::default()
                    }],
                    request_id: id(),
                },
                &service,
            ))
            .await
            .map(drop),
        ("QueryEvents", f) => {
            let mut r = apb::QueryEventsRequest::default();
            if f == "from" {
                r.from = t;
            } else {
                r.to = t;
            }
            audit
                .query_events(authed(r, &token(&["auditor"], &[TENANT], 600)))
                .await
                .map(drop)
        }
        other => panic!("no request for {other:?}"),
    }
}

/// Every timestamp a request carries, out of the protobuf range (year 10000, year 0,
/// nanos outside 0..=999,999,999) or out of its field's business range (before 1900,
/// an event in the future, an end after 2200), is INVALID_ARGUMENT naming the field,
/// nothing is written, and list calls afterwards answer times every client decodes.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn out_of_range_timestamps_are_refused_naming_the_field() {
    tokio::time::timeout(Duration::from_secs(120), async {
        use prost_types::Timestamp;
        use vern_proto::retention::v1 as rpb;
        use vern_proto::rights::v1 as qpb;
        let suite = Suite::start(Backend::Sqlite).await.expect("suite");
        let subject = setup(&suite).await;
        let before = counts(&suite, &subject).await;
        let at = |s: &str| {
            let t = chrono::DateTime::parse_from_rfc3339(s).expect("time");
            Timestamp {
                seconds: t.timestamp(),
                nanos: t.timestamp_subsec_nanos() as i32,
            }
        };
        let tomorrow = Timestamp {
            seconds: chrono::Utc::now().timestamp() + 86_400,
            nanos: 0,
        };
        // (label, value, refused in: Protobuf, Event, Business)
        let values: Vec<(&str, Timestamp, [bool; 3])> = vec![
            (
                "year 10000",
                Timestamp {
                    seconds: 253_402_300_800,
                    nanos: 0,
                },
                [true; 3],
            ),
            (
                "year 0",
                Timestamp {
                    seconds: -62_135_596_801,
                    nanos: 0,
                },
                [true; 3],
            ),
            (
                "i64::MAX seconds",
                Timestamp {
                    seconds: i64::MAX,
                    nanos: 0,
                },
                [true; 3],
            ),
            (
                "nanos 1e9",
                Timestamp {
                    seconds: 1_767_225_600,
                    nanos: 1_000_000_000,
                },
                [true; 3],
            ),
            (
                "nanos -1",
                Timestamp {
                    seconds: 1_767_225_600,
                    nanos: -1,
                },
                [true; 3],
            ),
            ("year 0001", at("0001-01-01T00:00:00Z"), [false, true, true]),
            ("1899", at("1899-12-31T23:59:59Z"), [false, true, true]),
            ("tomorrow", tomorrow, [false, true, false]),
            ("year 2201", at("2201-01-01T00:00:00Z"), [false, true, true]),
        ];
        use Range::{Business, Event, Protobuf};
        let fields: &[(&str, &str, Range)] = &[
            ("RecordConsent", "occur_time", Event),
            ("RecordConsent", "expires_at", Business),
            ("CreateSubject", "records[0].collected_at", Event),
            ("CreateSubject", "relationship_end_time", Business),
            ("AddRecords", "records[1].collected_at", Event),
            ("UpdateRecord", "record.collected_at", Event),
            ("UpdateSubject", "subject.relationship_end_time", Business),
            ("EraseSubject", "retain[0].retain_until_time", Protobuf),
            ("PurgeRecords", "older_than", Protobuf),
            ("PurgeRecords", "relationship_end_before", Protobuf),
            ("PurgeRecords", "retain_until_before", Protobuf),
            ("ListConsentStates", "update_before", Protobuf),
            ("ApplySubjectStates", "changes[1].change_time", Business),
            ("PlaceHold", "end_time", Business),
            ("Evaluate", "evaluate_time", Business),
            ("SubmitRequest", "received_at", Event),
            ("ListRequests", "due_before", Protobuf),
            ("ExtendDeadline", "subject_informed_at", Event),
            ("ApplySubjectErasures", "erasures[0].erase_time", Business),
            ("AppendEvents", "events[0].occur_time", Business),
            ("QueryEvents", "from", Protobuf),
            ("QueryEvents", "to", Protobuf),
        ];
        let mut wrong = vec![];
        let mut refused = 0;
        for (rpc, field, range) in fields {
            for (label, t, refused_in) in &values {
                let refuse = match range {
                    Protobuf => refused_in[0],
                    Event => refused_in[1],
                    Business => refused_in[2],
                };
                if !refuse {
                    continue;
                }
                refused += 1;
                match send_time(&suite, &subject, rpc, field, *t).await {
                    Err(s) if s.code() == Code::InvalidArgument => {
                        let named: Vec<String> = s
                            .get_details_bad_request()
                            .map(|b| b.field_violations.into_iter().map(|v| v.field).collect())
                            .unwrap_or_default();
                        if !named.iter().any(|f| f == field) {
                            wrong.push(format!("{rpc} {field} {label}: names {named:?}"));
                        }
                    }
                    other => wrong.push(format!(
                        "{rpc} {field} {label}: {:?}, want INVALID_ARGUMENT",
                        other.map_err(|s| (s.code(), s.message().to_owned()))
                    )),
                }
            }
        }
        assert!(
            wrong.is_empty(),
            "{} of {refused} wrong:\n{}",
            wrong.len(),
            wrong.join("\n")
        );
        eprintln!("{refused} out-of-range timestamps refused naming their field");

        // Nothing was written.
        let after = counts(&suite, &subject).await;
        assert_eq!(after.tenants, before.tenants, "tenants");
        assert_eq!(after.subjects, before.subjects, "subjects");
        assert_eq!(
            after.consent_events, before.consent_events,
            "consent events"
        );

        // Valid times still work, and every time a list answers is one standard
        // clients decode (inside the protobuf range).
        let ok = |t: &Option<Timestamp>| {
            t.as_ref()
                .is_none_or(|t| vern_kit::time::from_timestamp(t).is_some())
        };
        let officer = token(&["privacy-officer"], &[TENANT], 600);
        let ch = suite.channel.clone();
        cpb::consent_service_client::ConsentServiceClient::new(ch.clone())
            .record_consent(authed(
                cpb::RecordConsentRequest {
                    subject_id: subject.clone(),
                    purpose: PURPOSE.into(),
                    action: cpb::ConsentAction::Grant as i32,
                    channel: cpb::ConsentChannel::WebForm as i32,
                    notice_version: "2026-11".into(),
                    occur_time: Some(at("1900-01-01T00:00:00Z")),
                    expires_at: Some(at("2200-01-01T00:00:00Z")),
                    ..Default::default()
                },
                &officer,
            ))
            .await
            .expect("the edges of the ranges are accepted");
        spb::subject_service_client::SubjectServiceClient::new(ch.clone())
            .create_subject(authed(
                spb::CreateSubjectRequest {
                    email: "edges@example.no".into(),
                    relationship_end_time: Some(at("2200-01-01T00:00:00Z")),
                    records: vec![spb::Record {
                        category: DataCategory::Contact as i32,
                        field: "address".into(),
                        value: "Storgata 1".into(),
                        source: "web form".into(),
                        purposes: vec![PURPOSE.into()],
                        collected_at: Some(at("1900-01-01T00:00:00Z")),
                        ..Default::default()
                    }],
                    ..Default::default()
                },
                &officer,
            ))
            .await
            .expect("the edges of the ranges are accepted");
        let history = cpb::consent_service_client::ConsentServiceClient::new(ch.clone())
            .list_consent_history(authed(
                cpb::ListConsentHistoryRequest {
                    subject_id: subject.clone(),
                    page_size: 100,
                    ..Default::default()
                },
                &officer,
            ))
            .await
            .expect("history decodes")
            .into_inner();
        assert_eq!(history.events.len(), before.consent_events + 1);
        for e in &history.events {
            assert!(ok(&e.occur_time) && ok(&e.expires_at) && ok(&e.create_time));
        }
        let listed = spb::subject_service_client::SubjectServiceClient::new(ch.clone())
            .list_subjects(authed(
                spb::ListSubjectsRequest {
                    page_size: 100,
                    ..Default::default()
                },
                &officer,
            ))
            .await
            .expect("subjects decode")
            .into_inner();
        for s in &listed.subjects {
            assert!(ok(&s.relationship_end_time) && ok(&s.create_time) && ok(&s.update_time));
            for r in &s.records {
                assert!(ok(&r.collected_at) && ok(&r.retain_until_time));
            }
        }
        let holds = rpb::retention_service_client::RetentionServiceClient::new(ch.clone())
            .list_holds(authed(
                rpb::ListHoldsRequest {
                    include_inactive: true,
                    ..Default::default()
                },
                &officer,
            ))
            .await
            .expect("holds decode")
            .into_inner();
        assert!(holds.holds.is_empty(), "no hold was placed");
        let requests = qpb::rights_service_client::RightsServiceClient::new(ch.clone())
            .list_requests(authed(qpb::ListRequestsRequest::default(), &officer))
            .await
            .expect("requests decode")
            .into_inner();
        assert!(
            requests.rights_requests.is_empty(),
            "no request was submitted"
        );
        let events = apb::audit_service_client::AuditServiceClient::new(ch)
            .query_events(authed(
                apb::QueryEventsRequest {
                    page_size: 1000,
                    ..Default::default()
                },
                &token(&["auditor"], &[TENANT], 600),
            ))
            .await
            .expect("audit events decode")
            .into_inner();
        for e in &events.events {
            assert!(ok(&e.occur_time) && ok(&e.append_time));
            assert_ne!(e.action, "Test", "no appended test event");
        }
        suite.stop().await;
    })
    .await
    .expect("bounded in time");
}
