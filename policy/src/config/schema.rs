//! The raw schema of `airlock.toml`: what serde reads, before any check.
//! Unknown keys are errors (`deny_unknown_fields`), so a typo is named
//! rather than ignored. Only the build step reads these types.

use std::collections::BTreeMap;
use std::path::PathBuf;

use serde::Deserialize;

use crate::limits::RawLimits;
use crate::policy::Egress;
use crate::units::Size;

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawConfig {
    #[serde(default)]
    pub(super) proxy: RawProxy,
    #[serde(default)]
    pub(super) audit: RawAudit,
    #[serde(default)]
    pub(super) limits: RawLimits,
    #[serde(default)]
    pub(super) secrets: BTreeMap<String, RawSecret>,
    #[serde(default)]
    pub(super) tenants: BTreeMap<String, RawTenant>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawProxy {
    pub(super) listen: Option<String>,
    pub(super) egress: Option<Egress>,
    pub(super) deny_private_egress: Option<bool>,
    #[serde(default)]
    pub(super) upstream_ca: Vec<PathBuf>,
    #[serde(default)]
    pub(super) resolve: BTreeMap<String, String>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawAudit {
    pub(super) path: Option<PathBuf>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawSecret {
    pub(super) source: String,
    pub(super) var: Option<String>,
    pub(super) path: Option<PathBuf>,
    pub(super) command: Option<Vec<String>>,
    pub(super) service: Option<String>,
    pub(super) account: Option<String>,
    pub(super) ttl: Option<String>,
    pub(super) timeout: Option<String>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawTenant {
    pub(super) token: String,
    #[serde(default)]
    pub(super) routes: Vec<RawRoute>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawRoute {
    pub(super) name: String,
    pub(super) host: String,
    pub(super) secret: Option<String>,
    pub(super) placeholder: String,
    pub(super) env: Option<String>,
    pub(super) headers: Option<Vec<String>>,
    #[serde(default)]
    pub(super) add_headers: std::collections::BTreeMap<String, String>,
    #[serde(default)]
    pub(super) query: Vec<String>,
    pub(super) body: Option<String>,
    pub(super) format: Option<String>,
    pub(super) methods: Option<Vec<String>>,
    pub(super) paths: Option<Vec<String>>,
    pub(super) max_request_body: Option<Size>,
    pub(super) client_cert: Option<RawClientCert>,
    pub(super) credential: Option<RawCredential>,
    #[serde(default)]
    pub(super) danger_plaintext_private_upstream: bool,
    #[serde(default)]
    pub(super) danger_unscrubbed_websocket: bool,
    /// Message kinds (`"text"`, `"binary"`) whose agent → upstream
    /// messages get the placeholder swapped; absent: none.
    pub(super) websocket: Option<Vec<String>>,
}

/// `client_cert = { cert = "SECRET", key = "SECRET" }`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawClientCert {
    pub(super) cert: String,
    pub(super) key: String,
}

/// `credential = { kind = "oauth2", … }`: a credential airlock mints.
#[derive(Debug, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case", deny_unknown_fields)]
pub(super) enum RawCredential {
    Oauth2 {
        grant: String,
        token_url: String,
        client_id: Option<String>,
        client_secret: Option<String>,
        refresh_token: Option<String>,
        service_account: Option<String>,
        scope: Option<String>,
    },
    GithubApp {
        app_id: u64,
        installation_id: u64,
        private_key: String,
        api: Option<String>,
    },
    #[serde(rename = "aws_sigv4")]
    AwsSigV4 {
        access_key_id: String,
        secret_access_key: String,
        session_token: Option<String>,
        region: String,
        service: String,
    },
}
