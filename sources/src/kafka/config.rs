//! Configuration of the `kafka-source`.

use rivven_engine::config::{FieldError, StartOffset, Validate};
use rivven_kafka::settings::{self, Security};
use rivven_kafka::ValueFormat;
use schemars::JsonSchema;
use serde::Deserialize;

/// `kafka-source` configuration.
#[derive(Debug, Clone, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct KafkaSourceConfig {
    /// Bootstrap brokers, `host:port`.
    pub brokers: Vec<String>,
    /// The Kafka topic to read (or `topics`).
    #[serde(default)]
    pub topic: Option<String>,
    /// Several Kafka topics to read (or `topic`).
    #[serde(default)]
    pub topics: Vec<String>,
    /// A regular expression: every topic whose whole name matches it is read too (listed
    /// when the source starts).
    #[serde(default)]
    pub topic_pattern: Option<String>,
    /// Consumer group: where a first start resumes from (its committed offsets), and
    /// where the source commits the offsets that are durable in the pipeline's topic.
    /// Without one, nothing is committed to Kafka.
    #[serde(default, alias = "consumerGroup")]
    pub consumer_group: Option<String>,
    /// Where a partition without a position (and without a committed group offset) starts:
    /// `earliest`, `latest` (default), an RFC 3339 time or epoch milliseconds.
    #[serde(default, alias = "startOffset")]
    pub start_offset: StartOffset,
    /// Most records per fetched batch of one partition (default 500; the runtime's batch
    /// size caps it too).
    #[serde(default = "default_fetch_max_messages")]
    pub fetch_max_messages: usize,
    /// Most bytes per fetch of one partition (default 1 MiB).
    #[serde(default = "default_fetch_max_bytes")]
    pub fetch_max_bytes: u32,
    /// Longest time the broker holds a fetch open waiting for records (default 500 ms).
    #[serde(default = "default_fetch_max_wait_ms")]
    pub fetch_max_wait_ms: u64,
    /// How values are read: `json` (default: one object per record, into columns),
    /// `string` or `bytes` (one `value` column).
    #[serde(default)]
    pub format: ValueFormat,
    /// The columns of `json` values (name, type, nullable), in order. Without it the
    /// schema is inferred from the first records and widened when later records bring
    /// new fields.
    #[serde(default)]
    pub schema: Option<Vec<ColumnSpec>>,
    /// Add the `__kafka_key`, `__kafka_topic`, `__kafka_partition`, `__kafka_offset`,
    /// `__kafka_timestamp` and `__kafka_headers` columns (default false).
    #[serde(default)]
    pub include_metadata: bool,
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

/// One column of `schema`.
#[derive(Debug, Clone, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct ColumnSpec {
    /// Column (JSON field) name.
    pub name: String,
    /// Type: Kafka Connect's names (`int8` .. `int64`, `float32`, `float64`, `boolean`,
    /// `string`, `bytes`, `date`, `timestamp`) or an Arrow type (`Decimal128(10, 2)`,
    /// `Timestamp(Microsecond, Some("UTC"))`, `List(Int64)` ...).
    #[serde(rename = "type")]
    pub data_type: String,
    /// Whether the column may be null (default true).
    #[serde(default = "yes")]
    pub nullable: bool,
}

fn default_fetch_max_messages() -> usize {
    500
}
fn default_fetch_max_bytes() -> u32 {
    1024 * 1024
}
fn default_fetch_max_wait_ms() -> u64 {
    500
}
fn yes() -> bool {
    true
}

/// The Arrow type a `schema` type names.
pub fn parse_type(name: &str) -> Result<arrow::datatypes::DataType, String> {
    use arrow::datatypes::{DataType, TimeUnit};
    Ok(match name.trim().to_ascii_lowercase().as_str() {
        "int8" => DataType::Int8,
        "int16" => DataType::Int16,
        "int32" | "int" | "integer" => DataType::Int32,
        "int64" | "long" => DataType::Int64,
        "float32" | "float" => DataType::Float32,
        "float64" | "double" => DataType::Float64,
        "boolean" | "bool" => DataType::Boolean,
        "string" | "text" => DataType::Utf8,
        "bytes" | "binary" => DataType::Binary,
        "date" => DataType::Date32,
        "timestamp" => DataType::Timestamp(TimeUnit::Millisecond, Some("UTC".into())),
        _ => name
            .trim()
            .parse::<DataType>()
            .map_err(|e| format!("unknown type `{name}`: {e}"))?,
    })
}

impl KafkaSourceConfig {
    /// The topics named by `topic` and `topics`.
    pub fn named_topics(&self) -> Vec<String> {
        let mut t: Vec<String> = self.topic.iter().cloned().collect();
        t.extend(self.topics.iter().cloned());
        t
    }

    /// The topics to read: the named ones and those of the cluster matching
    /// `topic_pattern`, sorted, each once.
    pub async fn all_topics(
        &self,
        client: &rivven_kafka::Client,
    ) -> rivven_engine::Result<Vec<String>> {
        let mut t = self.named_topics();
        if let Some(p) = &self.topic_pattern {
            let re = regex::Regex::new(&format!("^(?:{p})$"))
                .map_err(|e| rivven_engine::Error::config(format!("topic_pattern: {e}")))?;
            t.extend(
                client
                    .topics()
                    .await?
                    .into_iter()
                    .filter(|n| re.is_match(n)),
            );
        }
        t.sort();
        t.dedup();
        Ok(t)
    }

    /// The declared schema, if any.
    pub fn declared_schema(&self) -> Result<Option<arrow::datatypes::SchemaRef>, String> {
        let Some(cols) = &self.schema else {
            return Ok(None);
        };
        let fields = cols
            .iter()
            .map(|c| {
                parse_type(&c.data_type)
                    .map(|t| arrow::datatypes::Field::new(&c.name, t, c.nullable))
            })
            .collect::<Result<Vec<_>, _>>()?;
        Ok(Some(std::sync::Arc::new(arrow::datatypes::Schema::new(
            fields,
        ))))
    }

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
}

impl Validate for KafkaSourceConfig {
    fn validate(&self) -> Vec<FieldError> {
        let mut errs = settings::validate_brokers(&self.brokers);
        if self.named_topics().is_empty() && self.topic_pattern.is_none() {
            errs.push(FieldError::new(
                "topic",
                "name the Kafka topic to read (`topic`, `topics` or `topic_pattern`)",
            ));
        }
        if let Some(p) = &self.topic_pattern {
            if let Err(e) = regex::Regex::new(p) {
                errs.push(FieldError::new(
                    "topic_pattern",
                    format!("not a regular expression: {e}"),
                ));
            }
        }
        if self.fetch_max_messages == 0 {
            errs.push(FieldError::new("fetch_max_messages", "must be at least 1"));
        }
        if self.fetch_max_bytes == 0 || self.fetch_max_bytes > i32::MAX as u32 {
            errs.push(FieldError::new(
                "fetch_max_bytes",
                "must be between 1 and 2147483647",
            ));
        }
        if self.schema.is_some() && self.format != ValueFormat::Json {
            errs.push(FieldError::new("schema", "applies to `format: json` only"));
        }
        if let Some(cols) = &self.schema {
            for (i, c) in cols.iter().enumerate() {
                if let Err(e) = parse_type(&c.data_type) {
                    errs.push(FieldError::new(format!("schema[{i}].type"), e));
                }
            }
        }
        errs.extend(settings::validate_retries(
            self.retry_initial_ms,
            self.retry_max_ms,
        ));
        errs.extend(self.security.validate());
        errs
    }
}
