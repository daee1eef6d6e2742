//! Connection keys shared by `kafka-source` and `kafka-sink` (flat in each connector's
//! `config:`, as the spec spells them), and their checks.

use crate::client::ClientConfig;
use rivven_engine::config::FieldError;
use rivven_engine::secret::SecretString;
use schemars::JsonSchema;
use serde::Deserialize;
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

/// `security`: how to authenticate and encrypt. Only `plaintext` is implemented so far;
/// `check` refuses the others, naming the key.
#[derive(Debug, Clone, Default, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Security {
    /// `plaintext` (default), `ssl`, `sasl_plaintext` or `sasl_ssl`.
    #[serde(default)]
    pub protocol: SecurityProtocol,
    /// SASL mechanism: `PLAIN`, `SCRAM-SHA-256` or `SCRAM-SHA-512`.
    #[serde(default)]
    pub mechanism: Option<String>,
    /// SASL user name.
    #[serde(default)]
    pub username: Option<String>,
    /// SASL password (use `${VAR}` substitution; never printed).
    #[serde(default)]
    #[schemars(with = "Option<String>")]
    pub password: Option<SecretString>,
}

impl Security {
    /// Errors for what this client cannot do yet, at `security.*`.
    pub fn validate(&self) -> Vec<FieldError> {
        let mut errs = Vec::new();
        if self.protocol != SecurityProtocol::Plaintext {
            errs.push(FieldError::new(
                "security.protocol",
                format!(
                    "{:?} is not supported yet: this client speaks plaintext only (TLS and SASL \
                     are the next step of the Kafka connectors)",
                    self.protocol
                ),
            ));
        }
        for (key, set) in [
            ("mechanism", self.mechanism.is_some()),
            ("username", self.username.is_some()),
            ("password", self.password.is_some()),
        ] {
            if set {
                errs.push(FieldError::new(
                    format!("security.{key}"),
                    "SASL is not supported yet (plaintext only)",
                ));
            }
        }
        errs
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
    retries: u32,
    retry_initial_ms: u64,
    retry_max_ms: u64,
) -> ClientConfig {
    ClientConfig {
        brokers: brokers.to_vec(),
        client_id: client_id.to_string(),
        request_timeout: Duration::from_millis(request_timeout_ms),
        retries,
        retry_initial: Duration::from_millis(retry_initial_ms),
        retry_max: Duration::from_millis(retry_max_ms),
    }
}
