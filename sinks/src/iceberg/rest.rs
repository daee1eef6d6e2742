//! Commits to an Iceberg REST catalog for the snapshots the sink builds itself: the
//! REST protocol's `POST /v1/{prefix}/namespaces/{namespace}/tables/{table}` with the
//! requirements and updates, which the server checks and applies atomically (409 when a
//! requirement fails). Authentication as the catalog's own client does it: a bearer
//! `token`, or an OAuth2 client-credentials `credential` exchanged at the token endpoint;
//! `header.*` extra properties are sent as headers.

use super::config::RestCatalog;
use iceberg::{TableIdent, TableRequirement, TableUpdate};
use rivven_engine::{Error, Result};
use std::collections::BTreeMap;
use tokio::sync::Mutex;

/// A REST catalog's commit endpoint, with its configuration prefix and token fetched on
/// first use.
pub struct RestCommits {
    http: reqwest::Client,
    uri: String,
    warehouse: Option<String>,
    token: Option<String>,
    credential: Option<(Option<String>, String)>,
    token_endpoint: String,
    scope: String,
    headers: BTreeMap<String, String>,
    /// The catalog's own properties (`prefix`, `uri`), between the server's defaults and
    /// its overrides.
    properties: BTreeMap<String, String>,
    /// The session once the catalog's config has been read.
    session: Mutex<Option<Session>>,
}

/// Where commits go and with which token.
#[derive(Debug, Clone, Default)]
struct Session {
    /// Base URI (the server may override the configured one).
    uri: String,
    /// Path prefix after `/v1/`, inserted as the server gives it.
    prefix: Option<String>,
    token: Option<String>,
}

impl RestCommits {
    /// From the sink's `catalog.rest` block.
    pub fn new(r: &RestCatalog) -> Result<Self> {
        let uri = r.uri.trim_end_matches('/').to_string();
        let credential = r.credential.as_ref().map(|c| {
            let c = c.expose();
            match c.split_once(':') {
                Some((id, secret)) => (Some(id.to_string()), secret.to_string()),
                None => (None, c.to_string()),
            }
        });
        Ok(RestCommits {
            http: reqwest::Client::builder()
                .connect_timeout(std::time::Duration::from_secs(10))
                .timeout(std::time::Duration::from_secs(120))
                .build()
                .map_err(|e| Error::config(format!("iceberg: REST client: {e}")))?,
            token_endpoint: r
                .oauth2_server_uri
                .clone()
                .unwrap_or_else(|| format!("{uri}/v1/oauth/tokens")),
            uri,
            warehouse: r.warehouse.clone(),
            token: r.token.as_ref().map(|t| t.expose().to_string()),
            credential,
            scope: r.scope.clone().unwrap_or_else(|| "catalog".to_string()),
            headers: r
                .extra_properties
                .iter()
                .filter_map(|(k, v)| Some((k.strip_prefix("header.")?.to_string(), v.clone())))
                .collect(),
            properties: r.extra_properties.clone().into_iter().collect(),
            session: Mutex::new(None),
        })
    }

    fn request(
        &self,
        method: reqwest::Method,
        url: &str,
        token: Option<&str>,
    ) -> reqwest::RequestBuilder {
        let mut req = self.http.request(method, url);
        for (k, v) in &self.headers {
            req = req.header(k, v);
        }
        if let Some(t) = token {
            req = req.bearer_auth(t);
        }
        req
    }

    /// The bearer token: the configured one, or one the token endpoint grants for the
    /// client credentials.
    async fn bearer(&self) -> Result<Option<String>> {
        if let Some(t) = &self.token {
            return Ok(Some(t.clone()));
        }
        let Some((id, secret)) = &self.credential else {
            return Ok(None);
        };
        let mut form = vec![
            ("grant_type", "client_credentials"),
            ("client_secret", secret.as_str()),
            ("scope", self.scope.as_str()),
        ];
        if let Some(id) = id {
            form.push(("client_id", id.as_str()));
        }
        let resp = self
            .request(reqwest::Method::POST, &self.token_endpoint, None)
            .form(&form)
            .send()
            .await
            .map_err(|e| Error::connect(format!("iceberg: OAuth2 token request: {e}")))?;
        let status = resp.status();
        let body: serde_json::Value = resp.json().await.unwrap_or_default();
        match body.get("access_token").and_then(|t| t.as_str()) {
            Some(t) if status.is_success() => Ok(Some(t.to_string())),
            // The body may echo the request: only the status and the error code are shown.
            _ => {
                let msg = format!(
                    "iceberg: the OAuth2 token endpoint answered {status} ({})",
                    body.get("error")
                        .and_then(|e| e.as_str())
                        .unwrap_or("no error code")
                );
                if matches!(status.as_u16(), 400 | 401 | 403) {
                    Err(Error::config(msg))
                } else {
                    Err(Error::connect(msg))
                }
            }
        }
    }

    /// The session, reading the catalog's `/v1/config` on first use: its `defaults`, then
    /// the catalog's own properties, then its `overrides` decide `prefix` and `uri`, as
    /// the catalog client merges them.
    async fn session(&self) -> Result<Session> {
        let mut s = self.session.lock().await;
        if let Some(s) = s.as_ref() {
            return Ok(s.clone());
        }
        let token = self.bearer().await?;
        let mut url = format!("{}/v1/config", self.uri);
        if let Some(w) = &self.warehouse {
            url = format!(
                "{url}?{}",
                url::form_urlencoded::Serializer::new(String::new())
                    .append_pair("warehouse", w)
                    .finish()
            );
        }
        let resp = self
            .request(reqwest::Method::GET, &url, token.as_deref())
            .send()
            .await
            .map_err(|e| Error::connect(format!("iceberg: {}/v1/config: {e}", self.uri)))?;
        let status = resp.status();
        if !status.is_success() {
            return Err(Error::connect(format!(
                "iceberg: {}/v1/config answered {status}",
                self.uri
            )));
        }
        let body: serde_json::Value = resp
            .json()
            .await
            .map_err(|e| Error::connect(format!("iceberg: {}/v1/config: {e}", self.uri)))?;
        let mut merged = BTreeMap::new();
        let server = |k: &str| -> BTreeMap<String, String> {
            body.get(k)
                .and_then(|m| m.as_object())
                .map(|m| {
                    m.iter()
                        .filter_map(|(k, v)| Some((k.clone(), v.as_str()?.to_string())))
                        .collect()
                })
                .unwrap_or_default()
        };
        merged.extend(server("defaults"));
        merged.extend(self.properties.clone());
        merged.extend(server("overrides"));
        let session = Session {
            uri: merged
                .get("uri")
                .map_or(self.uri.as_str(), String::as_str)
                .trim_end_matches('/')
                .to_string(),
            prefix: merged.get("prefix").cloned(),
            token,
        };
        *s = Some(session.clone());
        Ok(session)
    }

    /// Post the commit; a failed requirement (409) is a retryable conflict.
    pub async fn commit(
        &self,
        ident: &TableIdent,
        requirements: Vec<TableRequirement>,
        updates: Vec<TableUpdate>,
    ) -> Result<()> {
        let session = self.session().await?;
        // The prefix goes in as the server gave it (already a URL path); the namespace
        // (levels joined by 0x1F) and table name are percent-encoded as path segments.
        let base = match &session.prefix {
            Some(p) => format!("{}/v1/{}/", session.uri, p.trim_matches('/')),
            None => format!("{}/v1/", session.uri),
        };
        let mut url = reqwest::Url::parse(&base)
            .map_err(|e| Error::config(format!("iceberg: catalog.rest.uri: {e}")))?;
        url.path_segments_mut()
            .map_err(|_| Error::config("iceberg: catalog.rest.uri cannot be a base URL"))?
            .pop_if_empty()
            .push("namespaces")
            .push(&ident.namespace().to_url_string())
            .push("tables")
            .push(ident.name());
        let body = serde_json::json!({
            "identifier": { "namespace": ident.namespace().as_ref(), "name": ident.name() },
            "requirements": requirements,
            "updates": updates,
        });
        let resp = self
            .request(
                reqwest::Method::POST,
                url.as_str(),
                session.token.as_deref(),
            )
            .json(&body)
            .send()
            .await
            .map_err(|e| Error::connect(format!("iceberg: commit to {ident}: {e}")))?;
        let status = resp.status();
        if status.is_success() {
            return Ok(());
        }
        let text = resp.text().await.unwrap_or_default();
        let message = serde_json::from_str::<serde_json::Value>(&text)
            .ok()
            .and_then(|v| Some(v.get("error")?.get("message")?.as_str()?.to_string()))
            .unwrap_or(text);
        let msg = format!("iceberg: commit to {ident}: the catalog answered {status}: {message}");
        // Conflicts, server trouble, throttling and expired tokens are worth a retry.
        if status.is_server_error() || matches!(status.as_u16(), 401 | 408 | 409 | 419 | 429) {
            if status == reqwest::StatusCode::UNAUTHORIZED {
                // A token that expired: fetch a new one on the retry.
                *self.session.lock().await = None;
            }
            Err(Error::connect(msg))
        } else {
            Err(Error::data(msg).retryable(false))
        }
    }
}
