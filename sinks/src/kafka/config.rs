//! Configuration of the `kafka-sink`.

use rivven_engine::config::{FieldError, Validate};
use rivven_kafka::settings::{self, Security};
use rivven_kafka::{Codec, DebeziumOptions, EncodeOptions, Envelope};
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
    /// Idempotent producer (default true with `acks: all`): the sink asks the broker for
    /// a producer id when it opens and numbers every partition's records, so a batch
    /// sent again after a lost answer is written once. Needs `acks: all`.
    #[serde(default, alias = "enableIdempotence")]
    pub idempotence: Option<bool>,
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
    /// How rows become records: `auto` (default: change events in Debezium's layout,
    /// other rows as JSON objects), `debezium` (change events only) or `plain` (every row
    /// as one JSON object, change events too).
    #[serde(default)]
    pub envelope: EnvelopeKind,
    /// Debezium layout: write a tombstone (the key, no value) after each delete, so a
    /// compacted topic drops the key (default true, as Debezium's `tombstones.on.delete`).
    #[serde(default)]
    pub tombstones_on_delete: Option<bool>,
    /// Debezium layout: the logical server name in `source.name` (Debezium's
    /// `topic.prefix`; default `rivven`).
    #[serde(default)]
    pub server_name: Option<String>,
    /// Debezium layout: decimals as `precise` (default: Kafka Connect's `Decimal`, the
    /// unscaled value's bytes in base64), `double` or `string`, as Debezium's
    /// `decimal.handling.mode`.
    #[serde(default)]
    pub decimal_handling: Option<rivven_kafka::DecimalHandling>,
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

/// `envelope`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum EnvelopeKind {
    /// Change events in Debezium's layout, other rows as JSON objects; `plain` for
    /// every row when `key_column` or `value_column` is set.
    #[default]
    Auto,
    /// Debezium's layout; rows that are not change events go to the dead-letter topic.
    Debezium,
    /// Every row as one JSON object.
    Plain,
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

    /// Whether the producer is idempotent.
    pub fn idempotent(&self) -> bool {
        self.idempotence.unwrap_or(self.acks == Acks::All)
    }

    /// Where records take their parts from.
    pub fn encode_options(&self) -> EncodeOptions {
        EncodeOptions {
            key_column: self.key_column.clone(),
            value_column: self.value_column.clone(),
            headers_column: self.headers_column.clone(),
            timestamp_column: self.timestamp_column.clone(),
            partition_column: self.partition_column.clone(),
            envelope: self.envelope(),
        }
    }

    fn envelope(&self) -> Envelope {
        let d = DebeziumOptions {
            server_name: self.server_name.clone().unwrap_or_else(|| "rivven".into()),
            tombstones: self.tombstones_on_delete.unwrap_or(true),
            decimal_handling: self.decimal_handling.unwrap_or_default(),
        };
        match self.envelope {
            EnvelopeKind::Debezium => Envelope::Debezium(d),
            EnvelopeKind::Auto if self.key_column.is_none() && self.value_column.is_none() => {
                Envelope::Auto(d)
            }
            _ => Envelope::Plain,
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
        if self.envelope == EnvelopeKind::Debezium {
            for (key, set) in [
                ("key_column", self.key_column.is_some()),
                ("value_column", self.value_column.is_some()),
            ] {
                if set {
                    errs.push(FieldError::new(
                        key,
                        "`envelope: debezium` writes Debezium's keys and values; \
                         remove this key or use `envelope: plain`",
                    ));
                }
            }
        }
        if matches!(self.envelope(), Envelope::Plain) {
            for (key, set) in [
                ("tombstones_on_delete", self.tombstones_on_delete.is_some()),
                ("server_name", self.server_name.is_some()),
                ("decimal_handling", self.decimal_handling.is_some()),
            ] {
                if set {
                    errs.push(FieldError::new(
                        key,
                        "applies to Debezium's layout only, which this sink does not write \
                         (`envelope: plain`, or `key_column`/`value_column` set)",
                    ));
                }
            }
        }
        if self.idempotence == Some(true) && self.acks != Acks::All {
            errs.push(FieldError::new(
                "idempotence",
                "an idempotent producer needs `acks: all`",
            ));
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
