//! The services a fulfilment acts through, called directly (never through the gateway)
//! with a short-lived `service` token for the request's tenant: tenants (controller,
//! purposes, recipients), subjects (the data; rectify, restrict, erase), consents
//! (consent status; objections and withdrawals) and retention (policies, Evaluate).

use std::sync::Arc;

use tonic::Code;
use vern_kit::auth::ServiceTokens;
use vern_kit::client::ServiceChannel as Channel;
use vern_kit::client::request;
use vern_proto::consents::v1 as cpb;
use vern_proto::retention::v1 as rpb;
use vern_proto::subjects::v1 as spb;
use vern_proto::tenants::v1 as tpb;

use crate::error::RightsError;

/// Most pages read from one list (50,000 items at 1,000 a page): a bound, not a limit
/// any tenant is expected to reach.
const MAX_PAGES: usize = 50;

/// Clients of the other services.
pub struct Upstream {
    tenants: Channel,
    subjects: Channel,
    consents: Channel,
    retention: Channel,
    tokens: Arc<ServiceTokens>,
}

impl std::fmt::Debug for Upstream {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Upstream(..)")
    }
}

fn up(which: &'static str) -> impl Fn(tonic::Status) -> RightsError {
    move |s| RightsError::Upstream(which, s.code())
}

/// Records per GetSubject page, the most it takes: half the subjects server's message
/// limit bounds a page first (2 MiB by default), so pages are few and each fits.
const RECORDS_PAGE: i32 = 10_000;

impl Upstream {
    /// Clients over lazily connected channels.
    pub fn new(
        tenants: Channel,
        subjects: Channel,
        consents: Channel,
        retention: Channel,
        tokens: Arc<ServiceTokens>,
    ) -> Self {
        Self {
            tenants,
            subjects,
            consents,
            retention,
            tokens,
        }
    }

    fn req<T>(&self, tenant: &str, msg: T) -> Result<tonic::Request<T>, RightsError> {
        let token = self
            .tokens
            .for_tenant(tenant)
            .map_err(|_| RightsError::Upstream("service token", Code::Internal))?;
        request(msg, &token).map_err(|_| RightsError::Upstream("service token", Code::Internal))
    }

    /// The tenant (controller) profile.
    pub async fn tenant(&self, tenant: &str) -> Result<tpb::Tenant, RightsError> {
        let mut c = tpb::tenant_service_client::TenantServiceClient::new(self.tenants.clone());
        let msg = tpb::GetTenantRequest {
            tenant_id: tenant.to_owned(),
        };
        Ok(c.get_tenant(self.req(tenant, msg)?)
            .await
            .map_err(up("tenants"))?
            .into_inner())
    }

    /// All purposes of the tenant.
    pub async fn purposes(&self, tenant: &str) -> Result<Vec<tpb::Purpose>, RightsError> {
        let mut c = tpb::tenant_service_client::TenantServiceClient::new(self.tenants.clone());
        let (mut out, mut token) = (vec![], String::new());
        for _ in 0..MAX_PAGES {
            let msg = tpb::ListPurposesRequest {
                page_size: 1000,
                page_token: token,
            };
            let r = c
                .list_purposes(self.req(tenant, msg)?)
                .await
                .map_err(up("tenants"))?
                .into_inner();
            out.extend(r.purposes);
            if r.next_page_token.is_empty() {
                break;
            }
            token = r.next_page_token;
        }
        Ok(out)
    }

    /// All recipients of the tenant, ended ones included (with their end_time): an
    /// Art. 15 report names the recipients data "have been or will be disclosed" to.
    pub async fn recipients(&self, tenant: &str) -> Result<Vec<tpb::Recipient>, RightsError> {
        let mut c = tpb::tenant_service_client::TenantServiceClient::new(self.tenants.clone());
        let (mut out, mut token) = (vec![], String::new());
        for _ in 0..MAX_PAGES {
            let msg = tpb::ListRecipientsRequest {
                page_size: 1000,
                page_token: token,
                include_ended: true,
            };
            let r = c
                .list_recipients(self.req(tenant, msg)?)
                .await
                .map_err(up("tenants"))?
                .into_inner();
            out.extend(r.recipients);
            if r.next_page_token.is_empty() {
                break;
            }
            token = r.next_page_token;
        }
        Ok(out)
    }

    /// All retention policies of the tenant.
    pub async fn policies(&self, tenant: &str) -> Result<Vec<rpb::RetentionPolicy>, RightsError> {
        let mut c =
            rpb::retention_service_client::RetentionServiceClient::new(self.retention.clone());
        let (mut out, mut token) = (vec![], String::new());
        for _ in 0..MAX_PAGES {
            let msg = rpb::ListPoliciesRequest {
                page_size: 1000,
                page_token: token,
                ..Default::default()
            };
            let r = c
                .list_policies(self.req(tenant, msg)?)
                .await
                .map_err(up("retention"))?
                .into_inner();
            out.extend(r.policies);
            if r.next_page_token.is_empty() {
                break;
            }
            token = r.next_page_token;
        }
        Ok(out)
    }

    /// What must be kept of a subject's data, until when and why.
    pub async fn evaluate(
        &self,
        tenant: &str,
        subject_id: &str,
    ) -> Result<rpb::EvaluateResponse, RightsError> {
        let mut c =
            rpb::retention_service_client::RetentionServiceClient::new(self.retention.clone());
        let msg = rpb::EvaluateRequest {
            subject_id: subject_id.to_owned(),
            evaluate_time: None,
        };
        Ok(c.evaluate(self.req(tenant, msg)?)
            .await
            .map_err(up("retention"))?
            .into_inner())
    }

    /// The subject (FULL decrypts the data: a read of personal data, audited by the
    /// subjects service); `None` when it does not exist.
    pub async fn subject(
        &self,
        tenant: &str,
        subject_id: &str,
        full: bool,
    ) -> Result<Option<spb::Subject>, RightsError> {
        let mut c = spb::subject_service_client::SubjectServiceClient::new(self.subjects.clone());
        let view = if full {
            spb::SubjectView::Full
        } else {
            spb::SubjectView::Basic
        };
        // Records a page at a time, so a subject whose records exceed one message is
        // still read whole (the report itself is streamed by ExportReport).
        let mut subject: Option<spb::Subject> = None;
        let mut token = String::new();
        loop {
            let msg = spb::GetSubjectRequest {
                subject_id: subject_id.to_owned(),
                view: view as i32,
                records_page_size: RECORDS_PAGE,
                records_page_token: std::mem::take(&mut token),
            };
            let page = match c.get_subject(self.req(tenant, msg)?).await {
                Ok(s) => s.into_inner(),
                Err(s) if s.code() == Code::NotFound => return Ok(None),
                Err(s) => return Err(RightsError::Upstream("subjects", s.code())),
            };
            token = page.next_records_page_token.clone();
            match &mut subject {
                None => subject = Some(page),
                Some(s) => s.records.extend(page.records),
            }
            if token.is_empty() {
                return Ok(subject.map(|mut s| {
                    s.next_records_page_token.clear();
                    s
                }));
            }
        }
    }

    /// EraseSubject.
    pub async fn erase(
        &self,
        tenant: &str,
        msg: spb::EraseSubjectRequest,
    ) -> Result<spb::EraseSubjectResponse, RightsError> {
        let mut c = spb::subject_service_client::SubjectServiceClient::new(self.subjects.clone());
        Ok(c.erase_subject(self.req(tenant, msg)?)
            .await
            .map_err(up("subjects"))?
            .into_inner())
    }

    /// RestrictSubject.
    pub async fn restrict(
        &self,
        tenant: &str,
        msg: spb::RestrictSubjectRequest,
    ) -> Result<spb::Subject, RightsError> {
        let mut c = spb::subject_service_client::SubjectServiceClient::new(self.subjects.clone());
        Ok(c.restrict_subject(self.req(tenant, msg)?)
            .await
            .map_err(up("subjects"))?
            .into_inner())
    }

    /// UpdateSubject.
    pub async fn update_subject(
        &self,
        tenant: &str,
        msg: spb::UpdateSubjectRequest,
    ) -> Result<(), RightsError> {
        let mut c = spb::subject_service_client::SubjectServiceClient::new(self.subjects.clone());
        c.update_subject(self.req(tenant, msg)?)
            .await
            .map_err(up("subjects"))?;
        Ok(())
    }

    /// UpdateRecord.
    pub async fn update_record(
        &self,
        tenant: &str,
        msg: spb::UpdateRecordRequest,
    ) -> Result<(), RightsError> {
        let mut c = spb::subject_service_client::SubjectServiceClient::new(self.subjects.clone());
        c.update_record(self.req(tenant, msg)?)
            .await
            .map_err(up("subjects"))?;
        Ok(())
    }

    /// The subject's consent states (every purpose with a recorded event).
    pub async fn consent_states(
        &self,
        tenant: &str,
        subject_id: &str,
    ) -> Result<Vec<cpb::ConsentState>, RightsError> {
        let mut c = cpb::consent_service_client::ConsentServiceClient::new(self.consents.clone());
        let (mut out, mut token) = (vec![], String::new());
        for _ in 0..MAX_PAGES {
            let msg = cpb::ListConsentStatesRequest {
                page_size: 1000,
                page_token: token,
                subject_id: subject_id.to_owned(),
                ..Default::default()
            };
            let r = c
                .list_consent_states(self.req(tenant, msg)?)
                .await
                .map_err(up("consents"))?
                .into_inner();
            out.extend(r.consent_states);
            if r.next_page_token.is_empty() {
                break;
            }
            token = r.next_page_token;
        }
        Ok(out)
    }

    /// RecordConsent.
    pub async fn record_consent(
        &self,
        tenant: &str,
        msg: cpb::RecordConsentRequest,
    ) -> Result<(), RightsError> {
        let mut c = cpb::consent_service_client::ConsentServiceClient::new(self.consents.clone());
        c.record_consent(self.req(tenant, msg)?)
            .await
            .map_err(up("consents"))?;
        Ok(())
    }
}
