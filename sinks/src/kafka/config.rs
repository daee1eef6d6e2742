//! Configuration of the `kafka-sink`.

use rivven_engine::config::{FieldError, Validate};
use rivven_kafka::settings::{self, Security};
use rivven_kafka::{Codec, EncodeOptions};
use schemars::JsonSchema;
use serde::Deserialize;

/// `kafka-sink` configuration.
#[derive(Debug, Clone, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct KafkaSinkConfig {
    /// Bootstrap brokers, `host:port`.
    pub brokers: Vec<String>,
    /// The Kafka topic to write.
    pub topic: String,
    /// Record batch compression: `none` (default), `gzip`, `snappy`, `lz4` or `zstd`.
    #[serde(default)]
    pub compression: Codec,
    /// Acknowledgement asked of the broker: `all` (default, also `-1`), `1` (`leader`)
    /// or `0` (`none`: nothing is waited for, so a lost request loses its rows).
    #[serde(default)]
    pub acks: Acks,
    /// Uncompressed bytes of one partition's records sent as one record batch (default
    /// 1048576, librdkafka's `batch.size`); a flush sends what is left.
    #[serde(default = "default_batch_size_bytes", alias = "batchSize")]
    pub batch_size_bytes: usize,
    /// Longest time an accepted row waits before it is sent (default 5 ms).
    #[serde(default = "default_linger_ms", alias = "lingerMs")]
    pub linger_ms: u64,
    /// Column whose value is the record key (text and bytes as they are, other types as
    /// text). Without one, records have no key.
    #[serde(default)]
    pub key_column: Option<String>,
    /// Column whose bytes are the whole record value (text or binary). Without one, the
    /// value is the row as a JSON object (all columns but `__kafka_*` ones).
    #[serde(default)]
    pub value_column: Option<String>,
    /// Map column (text keys, text or binary values) of record headers.
    #[serde(default)]
    pub headers_column: Option<String>,
    /// Timestamp or integer (ms) column of record timestamps. Without one, a record's
    /// timestamp is the time its row was appended to the pipeline's topic.
    #[serde(default)]
    pub timestamp_column: Option<String>,
    /// Integer column choosing the partition (modulo the partition count). Without one,
    /// keyed records go where the Java client would put them (murmur2 of the key), and
    /// unkeyed rows one batch per partition in turn.
    #[serde(default)]
    pub partition_column: Option<String>,
    /// Create the topic when it does not exist (default true).
    #[serde(default = "yes")]
    pub create_topic: bool,
    /// Partitions of a topic this sink creates (default 1).
    #[serde(default = "one")]
    pub partitions: u32,
    /// Client id sent to the brokers (default `rivven-connect`).
    #[serde(default = "settings::default_client_id")]
    pub client_id: String,
    /// Longest wait for a broker's answer (default 30000 ms).
    #[serde(default = "settings::default_request_timeout_ms")]
    pub request_timeout_ms: u64,
    /// Retries of a request after a retriable error (default 5).
    #[serde(default = "settings::default_retries")]
    pub retries: u32,
    /// First backoff between retries, doubled per retry (default 100 ms).
    #[serde(default = "settings::default_retry_initial_ms")]
    pub retry_initial_ms: u64,
    /// Longest backoff between retries (default 10000 ms).
    #[serde(default = "settings::default_retry_max_ms")]
    pub retry_max_ms: u64,
    /// Encryption (TLS) and authentication (SASL PLAIN, SCRAM-SHA-256, SCRAM-SHA-512).
    #[serde(default)]
    pub security: Security,
}

/// `acks`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, JsonSchema)]
#[schemars(with = "String")]
pub enum Acks {
    /// Every in-sync replica.
    #[default]
    All,
    /// The leader only.
    Leader,
    /// None: the broker does not answer.
    None,
}

impl Acks {
    /// The wire value.
    pub fn wire(self) -> i16 {
        match self {
            Acks::All => -1,
            Acks::Leader => 1,
            Acks::None => 0,
        }
    }
}

impl<'de> Deserialize<'de> for Acks {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        #[derive(Deserialize)]
        #[serde(untagged)]
        enum Raw {
            Int(i64),
            Text(String),
        }
        let text = match Raw::deserialize(d)? {
            Raw::Int(i) => i.to_string(),
            Raw::Text(s) => s.to_ascii_lowercase(),
        };
        match text.as_str() {
            "all" | "-1" => Ok(Acks::All),
            "1" | "leader" => Ok(Acks::Leader),
            "0" | "none" => Ok(Acks::None),
            other => Err(serde::de::Error::custom(format!(
                "expected `all`, `-1`, `1`, `leader`, `0` or `none`, got `{other}`"
            ))),
        }
    }
}

fn default_batch_size_bytes() -> usize {
    1024 * 1024
}
fn default_linger_ms() -> u64 {
    5
}
fn yes() -> bool {
    true
}
fn one() -> u32 {
    1
}

impl KafkaSinkConfig {
    /// The client settings (reads `security.ca_file`).
    pub fn client(&self) -> rivven_engine::Result<rivven_kafka::ClientConfig> {
        settings::client_config(
            &self.brokers,
            &self.client_id,
            self.request_timeout_ms,
            (self.retries, self.retry_initial_ms, self.retry_max_ms),
            &self.security,
        )
    }

    /// Where records take their parts from.
    pub fn encode_options(&self) -> EncodeOptions {
        EncodeOptions {
            key_column: self.key_column.clone(),
            value_column: self.value_column.clone(),
            headers_column: self.headers_column.clone(),
            timestamp_column: self.timestamp_column.clone(),
            partition_column: self.partition_column.clone(),
        }
    }
}

impl Validate for KafkaSinkConfig {
    fn validate(&self) -> Vec<FieldError> {
        let mut errs = settings::validate_brokers(&self.brokers);
        if self.topic.is_empty() {
            errs.push(FieldError::new("topic", "name the Kafka topic to write"));
        }
        if self.batch_size_bytes == 0 {
            errs.push(FieldError::new("batch_size_bytes", "must be at least 1"));
        }
        if self.partitions == 0 {
            errs.push(FieldError::new("partitions", "must be at least 1"));
        }
        errs.extend(settings::validate_retries(
            self.retry_initial_ms,
            self.retry_max_ms,
        ));
        errs.extend(self.security.validate());
        errs
    }
}
