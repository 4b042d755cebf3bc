//! Talking to a running vern as a client: where it is and which token to send.

use std::path::PathBuf;

use anyhow::Context;
use tonic::metadata::MetadataValue;
use tonic::transport::Channel;
use vern_kit::config::Config;

/// Connection options shared by the client commands.
#[derive(clap::Args, Debug, Clone)]
pub struct ClientArgs {
    /// Gateway address.
    #[arg(long, env = "VERN_ADDR", default_value = "http://127.0.0.1:50051")]
    pub addr: String,
    /// Bearer token. Without it a dev token is minted for --tenant with --role (needs the
    /// dev key of `vern dev` in --data-dir).
    #[arg(long, env = "VERN_TOKEN", hide_env_values = true)]
    pub token: Option<String>,
    /// Tenant to act for (selects it for a multi-tenant token; names it in a dev token).
    #[arg(long, env = "VERN_TENANT")]
    pub tenant: Option<String>,
    /// Role of a minted dev token.
    #[arg(long, default_value = "integration")]
    pub role: String,
    /// Directory holding the dev signing key.
    #[arg(long, default_value = "vern-data")]
    pub data_dir: PathBuf,
}

/// A connected client: channel plus the metadata every call carries.
#[derive(Clone, Debug)]
pub struct Client {
    /// The channel to the gateway.
    pub channel: Channel,
    token: String,
    select_tenant: Option<String>,
}

impl Client {
    /// Connects using `args` (and `config` for the dev key).
    pub async fn connect(args: &ClientArgs, config: &Config) -> anyhow::Result<Self> {
        let (token, select_tenant) = match &args.token {
            Some(t) => (t.clone(), args.tenant.clone()),
            None => {
                let mut config = config.clone();
                config.data_dir = args.data_dir.clone();
                config.auth.dev_key = true;
                let secret =
                    vern_kit::auth::hs256_secret(&config)?.context("no dev signing key")?;
                let now = std::time::SystemTime::now()
                    .duration_since(std::time::UNIX_EPOCH)?
                    .as_secs() as i64;
                let claims = vern_kit::auth::Claims {
                    sub: "vern-cli".into(),
                    tenant: args.tenant.iter().cloned().collect(),
                    roles: vec![args.role.clone()],
                    iss: config.auth.issuer.clone(),
                    aud: config.auth.audience.clone(),
                    exp: now + 3600,
                    nbf: now,
                    iat: now,
                };
                (vern_kit::auth::sign_hs256(&claims, &secret)?, None)
            }
        };
        let channel = vern_kit::tls::channel(&args.addr)
            .await
            .with_context(|| format!("connecting to {}", args.addr))?;
        Ok(Self {
            channel,
            token,
            select_tenant,
        })
    }

    /// A client over an existing channel (tests).
    pub fn with_channel(channel: Channel, token: String) -> Self {
        Self {
            channel,
            token,
            select_tenant: None,
        }
    }

    /// `msg` as an authenticated request.
    pub fn request<T>(&self, msg: T) -> tonic::Request<T> {
        let mut req = tonic::Request::new(msg);
        if let Ok(v) = format!("Bearer {}", self.token).parse::<MetadataValue<_>>() {
            req.metadata_mut().insert("authorization", v);
        }
        if let Some(t) = &self.select_tenant
            && let Ok(v) = t.parse::<MetadataValue<_>>()
        {
            req.metadata_mut()
                .insert(vern_kit::context::TENANT_HEADER, v);
        }
        req
    }
}
