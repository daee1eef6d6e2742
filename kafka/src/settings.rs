//! Connection keys shared by `kafka-source` and `kafka-sink` (flat in each connector's
//! `config:`, as the spec spells them), and their checks.

use crate::client::ClientConfig;
use crate::sasl::{Credentials, Mechanism};
use rivven_engine::config::FieldError;
use rivven_engine::secret::SecretString;
use rivven_engine::{Error, Result};
use schemars::JsonSchema;
use serde::Deserialize;
use std::sync::Arc;
use std::time::Duration;

/// `security.protocol`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum SecurityProtocol {
    /// Plain TCP.
    #[default]
    Plaintext,
    /// TLS.
    Ssl,
    /// SASL over plain TCP.
    SaslPlaintext,
    /// SASL over TLS.
    SaslSsl,
}

/// `security`: how to encrypt (TLS) and authenticate (SASL).
#[derive(Debug, Clone, Default, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Security {
    /// `plaintext` (default), `ssl`, `sasl_plaintext` or `sasl_ssl`.
    #[serde(default)]
    pub protocol: SecurityProtocol,
    /// SASL mechanism: `PLAIN`, `SCRAM-SHA-256` or `SCRAM-SHA-512` (required with
    /// `sasl_*`).
    #[serde(default)]
    pub mechanism: Option<String>,
    /// SASL user name (required with `sasl_*`).
    #[serde(default)]
    pub username: Option<String>,
    /// SASL password (required with `sasl_*`; use `${VAR}` substitution; never printed).
    #[serde(default)]
    #[schemars(with = "Option<String>")]
    pub password: Option<SecretString>,
    /// PEM file of the certificate authorities that sign the brokers' certificates
    /// (`ssl`, `sasl_ssl`); default: the system's roots.
    #[serde(default)]
    pub ca_file: Option<std::path::PathBuf>,
}

impl Security {
    fn tls(&self) -> bool {
        matches!(
            self.protocol,
            SecurityProtocol::Ssl | SecurityProtocol::SaslSsl
        )
    }

    fn sasl(&self) -> bool {
        matches!(
            self.protocol,
            SecurityProtocol::SaslPlaintext | SecurityProtocol::SaslSsl
        )
    }

    /// Errors at `security.*`: SASL protocols need a known mechanism, a user name and a
    /// password; SASL settings without a SASL protocol, or a CA file without TLS, would
    /// do nothing.
    pub fn validate(&self) -> Vec<FieldError> {
        let mut errs = Vec::new();
        if self.sasl() {
            match &self.mechanism {
                None => errs.push(FieldError::new(
                    "security.mechanism",
                    "required with a sasl_* protocol: PLAIN, SCRAM-SHA-256 or SCRAM-SHA-512",
                )),
                Some(m) if Mechanism::parse(m).is_none() => errs.push(FieldError::new(
                    "security.mechanism",
                    format!("expected PLAIN, SCRAM-SHA-256 or SCRAM-SHA-512, got `{m}`"),
                )),
                Some(_) => {}
            }
            if self.username.is_none() {
                errs.push(FieldError::new(
                    "security.username",
                    "required with a sasl_* protocol",
                ));
            }
            if self.password.is_none() {
                errs.push(FieldError::new(
                    "security.password",
                    "required with a sasl_* protocol",
                ));
            }
        } else {
            for (key, set) in [
                ("mechanism", self.mechanism.is_some()),
                ("username", self.username.is_some()),
                ("password", self.password.is_some()),
            ] {
                if set {
                    errs.push(FieldError::new(
                        format!("security.{key}"),
                        format!(
                            "SASL setting with protocol {:?}: use sasl_plaintext or sasl_ssl",
                            self.protocol
                        ),
                    ));
                }
            }
        }
        if self.ca_file.is_some() && !self.tls() {
            errs.push(FieldError::new(
                "security.ca_file",
                "applies to the ssl and sasl_ssl protocols only",
            ));
        }
        errs
    }

    /// The rustls configuration (`ssl`, `sasl_ssl`): broker certificates verified against
    /// `ca_file` or the system's roots, and the broker's name checked.
    pub fn tls_config(&self) -> Result<Option<Arc<rustls::ClientConfig>>> {
        if !self.tls() {
            return Ok(None);
        }
        let mut roots = rustls::RootCertStore::empty();
        match &self.ca_file {
            Some(path) => {
                use rustls::pki_types::pem::PemObject;
                let certs = rustls::pki_types::CertificateDer::pem_file_iter(path)
                    .and_then(|it| it.collect::<std::result::Result<Vec<_>, _>>())
                    .map_err(|e| {
                        Error::config(format!("security.ca_file {}: {e}", path.display()))
                    })?;
                if certs.is_empty() {
                    return Err(Error::config(format!(
                        "security.ca_file {}: no certificate in the file",
                        path.display()
                    )));
                }
                for c in certs {
                    roots.add(c).map_err(|e| {
                        Error::config(format!("security.ca_file {}: {e}", path.display()))
                    })?;
                }
            }
            None => {
                for c in rustls_native_certs::load_native_certs().certs {
                    let _ = roots.add(c);
                }
            }
        }
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let cfg = rustls::ClientConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .map_err(|e| Error::internal(format!("kafka: TLS: {e}")))?
            .with_root_certificates(roots)
            .with_no_client_auth();
        Ok(Some(Arc::new(cfg)))
    }

    /// The SASL credentials (`sasl_*`).
    pub fn credentials(&self) -> Result<Option<Credentials>> {
        if !self.sasl() {
            return Ok(None);
        }
        let mechanism = self
            .mechanism
            .as_deref()
            .and_then(Mechanism::parse)
            .ok_or_else(|| Error::config("security.mechanism: unknown SASL mechanism"))?;
        Ok(Some(Credentials {
            mechanism,
            username: self.username.clone().unwrap_or_default(),
            password: self.password.clone().unwrap_or_default(),
        }))
    }
}

/// Errors for a broker list: at least one, each `host:port`.
pub fn validate_brokers(brokers: &[String]) -> Vec<FieldError> {
    if brokers.is_empty() {
        return vec![FieldError::new(
            "brokers",
            "list at least one broker (host:port)",
        )];
    }
    brokers
        .iter()
        .enumerate()
        .filter(|(_, b)| {
            b.rsplit_once(':')
                .is_none_or(|(h, p)| h.is_empty() || p.parse::<u16>().is_err())
        })
        .map(|(i, b)| {
            FieldError::new(
                format!("brokers[{i}]"),
                format!("expected host:port, got `{b}`"),
            )
        })
        .collect()
}

/// Errors for the retry keys.
pub fn validate_retries(initial_ms: u64, max_ms: u64) -> Vec<FieldError> {
    let mut errs = Vec::new();
    if initial_ms == 0 {
        errs.push(FieldError::new("retry_initial_ms", "must be at least 1"));
    }
    if max_ms < initial_ms {
        errs.push(FieldError::new(
            "retry_max_ms",
            format!("must be at least retry_initial_ms ({initial_ms}), got {max_ms}"),
        ));
    }
    errs
}

/// The client settings of a connector's keys.
pub fn client_config(
    brokers: &[String],
    client_id: &str,
    request_timeout_ms: u64,
    retries: (u32, u64, u64),
    security: &Security,
) -> Result<ClientConfig> {
    let (retries, retry_initial_ms, retry_max_ms) = retries;
    Ok(ClientConfig {
        brokers: brokers.to_vec(),
        client_id: client_id.to_string(),
        request_timeout: Duration::from_millis(request_timeout_ms),
        retries,
        retry_initial: Duration::from_millis(retry_initial_ms),
        retry_max: Duration::from_millis(retry_max_ms),
        tls: security.tls_config()?,
        sasl: security.credentials()?,
    })
}

/// Default of `client_id`.
pub fn default_client_id() -> String {
    "rivven-connect".into()
}

/// Default of `request_timeout_ms`.
pub fn default_request_timeout_ms() -> u64 {
    30_000
}

/// Default of `retries`.
pub fn default_retries() -> u32 {
    5
}

/// Default of `retry_initial_ms`.
pub fn default_retry_initial_ms() -> u64 {
    100
}

/// Default of `retry_max_ms`.
pub fn default_retry_max_ms() -> u64 {
    10_000
}
