//! The built-in service catalogue `airlock route add --service NAME` fills
//! a route from: one reviewed TOML file per service in `proxy/services/`,
//! embedded in the binary, each naming the provider's authentication
//! document it follows.
//!
//! A file holds route keys — `host`, `env`, `headers`, `format`,
//! `methods`, `query`, and for a credential airlock mints or signs,
//! `credential` and `add_headers` — plus `title`, `docs`, `note` and
//! `secrets` (the secret names the route needs). Secret names are written
//! `{prefix}_…` and take the route's secret prefix when it is added. The
//! files are read with `toml_edit`, so the keys are copied into the
//! operator's config as written.

use toml_edit::{DocumentMut, Item, Table, Value};

/// Each service's name and file.
const FILES: &[(&str, &str)] = &[
    ("airtable", include_str!("../services/airtable.toml")),
    ("anthropic", include_str!("../services/anthropic.toml")),
    ("apify", include_str!("../services/apify.toml")),
    ("aws-s3", include_str!("../services/aws-s3.toml")),
    ("callrail", include_str!("../services/callrail.toml")),
    ("firecrawl", include_str!("../services/firecrawl.toml")),
    ("github", include_str!("../services/github.toml")),
    ("gitlab", include_str!("../services/gitlab.toml")),
    ("google-ads", include_str!("../services/google-ads.toml")),
    ("google-cloud", include_str!("../services/google-cloud.toml")),
    ("hubspot", include_str!("../services/hubspot.toml")),
    ("meta-graph", include_str!("../services/meta-graph.toml")),
    ("notion", include_str!("../services/notion.toml")),
    ("openai", include_str!("../services/openai.toml")),
    ("sendgrid", include_str!("../services/sendgrid.toml")),
    ("slack", include_str!("../services/slack.toml")),
    ("stripe", include_str!("../services/stripe.toml")),
    ("twilio", include_str!("../services/twilio.toml")),
];

/// The keys a file may hold that become route keys, in the order they are
/// written into the route.
const ROUTE_KEYS: &[&str] = &["host", "env", "headers", "format", "methods", "query", "credential", "add_headers"];

/// The keys that describe the service and are not copied.
const ABOUT_KEYS: &[&str] = &["title", "docs", "note", "secrets"];

/// What is written in place of the route's secret prefix.
pub const PREFIX_SLOT: &str = "{prefix}";

/// One service of the catalogue.
#[derive(Clone, Debug)]
pub struct Service {
    /// Its name (`openai`, `aws-s3`).
    pub name: &'static str,
    /// Its display name.
    pub title: String,
    /// The provider's authentication document the entry follows.
    pub docs: String,
    /// The default host (`name` or `name:port`).
    pub host: String,
    /// What to tell the operator once the route is added.
    pub note: Option<String>,
    secrets: Vec<String>,
    doc: DocumentMut,
}

/// A service name the catalogue does not have, or a file it cannot read.
#[derive(Debug, thiserror::Error)]
pub enum CatalogueError {
    /// No such service.
    #[error("the catalogue has no service {name:?}; it has: {known}")]
    Unknown {
        /// The name asked for.
        name: String,
        /// The names the catalogue has.
        known: String,
    },
    /// A file that does not hold what it must (a bug in the catalogue).
    #[error("the catalogue's file for {name} is invalid: {message}")]
    Invalid {
        /// The service.
        name: &'static str,
        /// What is wrong with its file.
        message: String,
    },
}

/// Every service, in name order.
pub fn services() -> Result<Vec<Service>, CatalogueError> {
    FILES.iter().map(|(name, text)| Service::parse(name, text)).collect()
}

/// The service called `name`.
pub fn service(name: &str) -> Result<Service, CatalogueError> {
    match FILES.iter().find(|(n, _)| *n == name) {
        Some((name, text)) => Service::parse(name, text),
        None => Err(CatalogueError::Unknown {
            name: name.to_owned(),
            known: FILES.iter().map(|(n, _)| *n).collect::<Vec<_>>().join(", "),
        }),
    }
}

impl Service {
    fn parse(name: &'static str, text: &str) -> Result<Service, CatalogueError> {
        let invalid = |message: String| CatalogueError::Invalid { name, message };
        let doc: DocumentMut = text.parse().map_err(|e| invalid(format!("{e}")))?;
        if let Some((key, _)) = doc.iter().find(|(k, _)| !ROUTE_KEYS.contains(k) && !ABOUT_KEYS.contains(k)) {
            return Err(invalid(format!("unknown key {key:?}")));
        }
        let text_of = |key: &str| doc.get(key).and_then(Item::as_str).map(str::to_owned);
        let required = |key: &str| text_of(key).ok_or_else(|| invalid(format!("no {key} (a string)")));
        let secrets = match doc.get("secrets") {
            None => Vec::new(),
            Some(item) => item
                .as_array()
                .and_then(|a| a.iter().map(|v| v.as_str().map(str::to_owned)).collect::<Option<Vec<_>>>())
                .ok_or_else(|| invalid("secrets is not a list of strings".into()))?,
        };
        if doc.contains_key("credential") == secrets.is_empty() {
            return Err(invalid("a credential needs its secrets listed, and secrets a credential".into()));
        }
        Ok(Service {
            name,
            title: required("title")?,
            docs: required("docs")?,
            host: required("host")?,
            note: text_of("note"),
            secrets,
            doc,
        })
    }

    /// Whether airlock mints or signs this service's credential (the route
    /// has a `credential` and no `secret`).
    pub fn has_credential(&self) -> bool {
        self.doc.contains_key("credential")
    }

    /// The secret names the route needs, with `prefix`: its `secrets`, or
    /// `prefix` itself for a route that swaps one key.
    pub fn secrets(&self, prefix: &str) -> Vec<String> {
        if self.secrets.is_empty() {
            return vec![prefix.to_owned()];
        }
        self.secrets.iter().map(|s| s.replace(PREFIX_SLOT, prefix)).collect()
    }

    /// The route keys the service fills, `{prefix}` replaced by `prefix`
    /// in every string; the keys' comments are kept.
    pub fn route_keys(&self, prefix: &str) -> Table {
        let mut table = Table::new();
        for key in ROUTE_KEYS {
            if let Some(item) = self.doc.get(key) {
                let mut item = item.clone();
                if let Some(value) = item.as_value_mut() {
                    expand(value, prefix);
                }
                table.insert(key, item);
            }
        }
        table
    }
}

/// Replaces `{prefix}` in every string of `value`, keeping its decoration.
fn expand(value: &mut Value, prefix: &str) {
    match value {
        Value::String(s) if s.value().contains(PREFIX_SLOT) => {
            let decor = s.decor().clone();
            let mut new = toml_edit::Formatted::new(s.value().replace(PREFIX_SLOT, prefix));
            *new.decor_mut() = decor;
            *s = new;
        }
        Value::Array(a) => a.iter_mut().for_each(|v| expand(v, prefix)),
        Value::InlineTable(t) => t.iter_mut().for_each(|(_, v)| expand(v, prefix)),
        _ => {}
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use std::path::Path;

    use super::*;

    /// Every service file reads, and the route it fills — with its secrets
    /// declared and a client id where an OAuth2 client needs one — loads as
    /// the proxy loads a config.
    #[test]
    fn every_service_fills_a_route_the_policy_accepts() {
        let services = services().unwrap();
        assert!(services.len() >= 18, "{}", services.len());
        for service in services {
            let mut text = String::new();
            for secret in service.secrets("t_x") {
                text.push_str(&format!("[secrets.{secret}]\nsource = \"store\"\n"));
            }
            text.push_str("[tenants.t]\ntoken = \"0123456789abcdef0123\"\n");
            let mut doc: DocumentMut = text.parse().unwrap();
            let mut route = service.route_keys("t_x");
            route.insert("name", toml_edit::value(service.name));
            route.insert("placeholder", toml_edit::value("AIRLOCK_T_X"));
            if !service.has_credential() {
                route.insert("secret", toml_edit::value("t_x"));
            }
            if let Some(c) = route.get_mut("credential").and_then(|c| c.as_inline_table_mut())
                && c.get("client_id").and_then(Value::as_str) == Some("")
            {
                c.insert("client_id", "id.apps.example".into());
            }
            let mut routes = toml_edit::ArrayOfTables::new();
            routes.push(route);
            doc["tenants"]["t"]["routes"] = Item::ArrayOfTables(routes);
            let text = doc.to_string();
            airlock_policy::Policy::from_toml(&text, service.name, Path::new("/etc/airlock"), Path::new("/h"))
                .unwrap_or_else(|e| panic!("{}: {e}\n{text}", service.name));
            assert!(service.docs.starts_with("https://"), "{}", service.name);
        }
    }

    #[test]
    fn unknown_services_are_named_with_the_known_ones() {
        let e = service("openia").unwrap_err().to_string();
        assert!(e.contains("\"openia\"") && e.contains("openai, sendgrid"), "{e}");
    }

    #[test]
    fn prefixes_reach_every_secret_name() {
        let s = service("aws-s3").unwrap();
        assert_eq!(s.secrets("acme_s3"), ["acme_s3_access_key_id", "acme_s3_secret_access_key"]);
        let keys = s.route_keys("acme_s3").to_string();
        assert!(keys.contains("access_key_id = \"acme_s3_access_key_id\""), "{keys}");
        assert!(!keys.contains(PREFIX_SLOT), "{keys}");
        assert_eq!(service("openai").unwrap().secrets("acme_openai"), ["acme_openai"]);
    }
}
