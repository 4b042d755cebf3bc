//! The services consents asks, off the hot path only: the tenants service for a purpose
//! missing from the cache, the subjects service for a subject not yet in the projection
//! (recording consent right after the subject was created).

use std::sync::Arc;

use tonic::Code;
use vern_kit::auth::ServiceTokens;
use vern_kit::client::TracedChannel as Channel;
use vern_kit::client::request;
use vern_proto::subjects::v1 as subjects_pb;
use vern_proto::tenants::v1 as tenants_pb;

use crate::domain::{PurposeRule, SubjectStatus};
use crate::error::ConsentError;
use crate::purposes::{PurposeSource, Versioned};

/// Where a subject's state comes from when the projection has not heard of it yet.
#[async_trait::async_trait]
pub trait SubjectSource: Send + Sync + 'static {
    /// The subject's state; `None` when it does not exist in the tenant.
    async fn fetch_state(
        &self,
        tenant: &str,
        subject_id: &str,
    ) -> Result<Option<SubjectStatus>, ConsentError>;
}

fn token(tokens: &ServiceTokens, tenant: &str) -> Result<String, ConsentError> {
    tokens
        .for_tenant(tenant)
        .map_err(|_| ConsentError::Upstream("service token"))
}

/// Purposes from the tenants service.
pub struct TenantsClient {
    /// Channel to the tenants service.
    pub channel: Channel,
    /// Service token signer.
    pub tokens: Arc<ServiceTokens>,
}

#[async_trait::async_trait]
impl PurposeSource for TenantsClient {
    async fn fetch(&self, tenant: &str, key: &str) -> Result<Option<PurposeRule>, ConsentError> {
        Ok(self
            .fetch_versioned(tenant, key)
            .await?
            .and_then(|v| v.rule))
    }

    async fn fetch_versioned(
        &self,
        tenant: &str,
        key: &str,
    ) -> Result<Option<Versioned>, ConsentError> {
        let mut client =
            tenants_pb::tenant_service_client::TenantServiceClient::new(self.channel.clone());
        let req = request(
            tenants_pb::GetPurposeRequest {
                key: key.to_owned(),
            },
            &token(&self.tokens, tenant)?,
        )
        .map_err(|_| ConsentError::Upstream("tenants"))?;
        match client.get_purpose(req).await {
            Ok(p) => {
                let p = p.into_inner();
                let basis = vern_proto::common::v1::LegalBasis::try_from(p.legal_basis)
                    .ok()
                    .and_then(crate::api::basis_of)
                    .ok_or(ConsentError::Upstream("tenants"))?;
                let version = p
                    .update_time
                    .as_ref()
                    .map(vern_kit::time::micros)
                    .unwrap_or(0);
                Ok(Some(Versioned {
                    rule: Some(PurposeRule {
                        legal_basis: basis,
                        direct_marketing: p.direct_marketing,
                    }),
                    version,
                }))
            }
            Err(s) if matches!(s.code(), Code::NotFound | Code::InvalidArgument) => Ok(None),
            Err(_) => Err(ConsentError::Upstream("tenants")),
        }
    }
}

/// Subject states from the subjects service.
pub struct SubjectsClient {
    /// Channel to the subjects service.
    pub channel: Channel,
    /// Service token signer.
    pub tokens: Arc<ServiceTokens>,
}

#[async_trait::async_trait]
impl SubjectSource for SubjectsClient {
    async fn fetch_state(
        &self,
        tenant: &str,
        subject_id: &str,
    ) -> Result<Option<SubjectStatus>, ConsentError> {
        let mut client =
            subjects_pb::subject_service_client::SubjectServiceClient::new(self.channel.clone());
        let msg = subjects_pb::GetSubjectRequest {
            subject_id: subject_id.to_owned(),
            view: subjects_pb::SubjectView::Basic as i32,
            ..Default::default()
        };
        let req = request(msg, &token(&self.tokens, tenant)?)
            .map_err(|_| ConsentError::Upstream("subjects"))?;
        match client.get_subject(req).await {
            Ok(s) => Ok(Some(
                match subjects_pb::SubjectState::try_from(s.into_inner().state) {
                    Ok(subjects_pb::SubjectState::Restricted) => SubjectStatus::Restricted,
                    Ok(subjects_pb::SubjectState::Erased) => SubjectStatus::Erased,
                    Ok(subjects_pb::SubjectState::Active) => SubjectStatus::Active,
                    _ => return Err(ConsentError::Upstream("subjects")),
                },
            )),
            Err(s) if matches!(s.code(), Code::NotFound | Code::InvalidArgument) => Ok(None),
            Err(_) => Err(ConsentError::Upstream("subjects")),
        }
    }
}
