//! The pipeline configuration: the YAML of `rivven-connect run --config pipeline.yaml`.
//!
//! ```yaml
//! version: "1.0"
//! sources:
//!   demo:
//!     connector: datagen
//!     topic: demo-events
//!     config: { pattern: orders, events_per_second: 10 }
//! sinks:
//!   console:
//!     connector: stdout
//!     topics: [demo-events]
//!     consumer_group: console
//! settings:
//!   state_dir: ./rivven-state
//! ```
//!
//! The types here are the documentation: every field has a doc comment, unknown keys are
//! rejected, and validation ([`PipelineConfig::validate`]) is a pure function whose errors
//! name the key path and the constraint. Loading ([`load`]) adds `${VAR}` substitution and
//! maps every error to its line and column.

mod env;
mod load;
mod locate;
mod settings;

pub use env::{substitute, SubstError, Substituted};
pub use load::{load, load_str, ConfigError, ConfigErrors, LoadedConfig};
pub use locate::{Location, PositionIndex};
pub use settings::{
    BatchSettings, EndpointSettings, FlightSettings, FlightTls, FsyncPolicy, QueueSettings,
    RetrySettings, Settings, TopicSettings,
};

use schemars::JsonSchema;
use serde::de::DeserializeOwned;
use serde::Deserialize;
use std::collections::BTreeMap;

/// A validation failure at a key path (relative to the document root or to a connector's
/// `config`, depending on who reports it).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FieldError {
    /// Dotted key path, sequences as `[i]`: `sinks.out.topics[0]`.
    pub path: String,
    /// What is wrong, naming the constraint.
    pub message: String,
}

impl FieldError {
    /// A new field error.
    pub fn new(path: impl Into<String>, message: impl Into<String>) -> Self {
        Self {
            path: path.into(),
            message: message.into(),
        }
    }

    /// Prefix the path with `prefix` (a parent key path).
    pub fn under(mut self, prefix: &str) -> Self {
        self.path = match (prefix.is_empty(), self.path.is_empty()) {
            (true, _) => self.path,
            (false, true) => prefix.to_owned(),
            (false, false) if self.path.starts_with('[') => format!("{prefix}{}", self.path),
            (false, false) => format!("{prefix}.{}", self.path),
        };
        self
    }
}

impl std::fmt::Display for FieldError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        if self.path.is_empty() {
            f.write_str(&self.message)
        } else {
            write!(f, "{}: {}", self.path, self.message)
        }
    }
}

/// Checks of a parsed config that the types cannot express (ranges, keys that exclude each
/// other, references between keys). Pure: no I/O, no clock, no environment.
///
/// Every config type of the engine, of a connector and of a transform implements it; the
/// registry runs it right after [`parse`], so code that receives a config may assume it
/// holds.
pub trait Validate {
    /// What is wrong, with key paths relative to the value itself (`port`,
    /// `tables[2]`) and the constraint named: `must be 1-65535, got 0`. Empty: valid.
    fn validate(&self) -> Vec<FieldError> {
        Vec::new()
    }
}

/// Deserialize a YAML value into `T`, reporting errors with their key path. A missing
/// (`null`) value is read as an empty mapping, so a config whose keys all have defaults may
/// be omitted. See [`parse`] for deserializing and validating at once.
pub fn parse_value<T: DeserializeOwned>(value: &serde_yaml::Value) -> Result<T, Vec<FieldError>> {
    let value = if value.is_null() {
        serde_yaml::Value::Mapping(Default::default())
    } else {
        value.clone()
    };
    serde_path_to_error::deserialize::<_, T>(value).map_err(|e| {
        let mut path = e.path().to_string();
        if path == "." {
            path.clear();
        }
        let message = e.inner().to_string();
        // For an unknown key, point at the key itself.
        if let Some(rest) = message.strip_prefix("unknown field `") {
            if let Some(key) = rest.split('`').next() {
                if !path.ends_with(key) {
                    path = if path.is_empty() {
                        key.to_owned()
                    } else {
                        format!("{path}.{key}")
                    };
                }
            }
        }
        vec![FieldError::new(path, message)]
    })
}

/// Deserialize (see [`parse_value`]) and [`Validate`]: the one way a config becomes a typed
/// value. Errors carry key paths relative to `value`.
pub fn parse<T: DeserializeOwned + Validate>(
    value: &serde_yaml::Value,
) -> Result<T, Vec<FieldError>> {
    let config = parse_value::<T>(value)?;
    let errs = config.validate();
    if errs.is_empty() {
        Ok(config)
    } else {
        Err(errs)
    }
}

/// Field errors as one configuration [`crate::Error`], for errors found after the loader has
/// reported positions (or in code paths with no file at hand).
pub fn errors_to_error(errs: &[FieldError]) -> crate::Error {
    crate::Error::config(
        errs.iter()
            .map(ToString::to_string)
            .collect::<Vec<_>>()
            .join("; "),
    )
}

/// The whole pipeline file.
#[derive(Debug, Clone, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct PipelineConfig {
    /// Config format version; `"1.0"`.
    pub version: String,
    /// A Kafka-protocol broker for topics. Without it, topics live in the embedded log.
    #[serde(default)]
    pub broker: Option<BrokerConfig>,
    /// Source pipelines by name.
    #[serde(default)]
    pub sources: BTreeMap<String, SourceSpec>,
    /// Sink pipelines by name.
    #[serde(default)]
    pub sinks: BTreeMap<String, SinkSpec>,
    /// Engine settings.
    #[serde(default)]
    pub settings: Settings,
    /// Schema registry used by Avro/Protobuf encodings.
    #[serde(default)]
    pub schema_registry: Option<SchemaRegistryConfig>,
    /// Multi-node coordination.
    #[serde(default)]
    pub distributed: Option<DistributedConfig>,
}

/// Kafka-protocol broker connection.
#[derive(Debug, Clone, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct BrokerConfig {
    /// Bootstrap servers, `host:port`.
    #[serde(default)]
    pub bootstrap_servers: Vec<String>,
    /// A single broker address (shorthand for one bootstrap server).
    #[serde(default)]
    pub address: Option<String>,
}

/// One source pipeline: a connector writing into a topic.
#[derive(Debug, Clone, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct SourceSpec {
    /// Connector name (`rivven-connect spec` lists them).
    pub connector: String,
    /// Destination topic.
    pub topic: String,
    /// Whether to run it.
    #[serde(default = "yes")]
    pub enabled: bool,
    /// Connector-specific configuration (`rivven-connect spec <connector>`). A
    /// `transforms` list here is the same as one beside `config` (the spec's CDC examples
    /// put it inside); it is not passed to the connector.
    #[serde(default)]
    #[schemars(with = "serde_json::Value")]
    pub config: serde_yaml::Value,
    /// Transforms applied to every batch before it is written to the topic (snapshot rows
    /// included).
    #[serde(default)]
    #[schemars(with = "Vec<serde_json::Value>")]
    pub transforms: serde_yaml::Value,
    /// Topic for rows a transform fails on, and records the connector cannot decode, each
    /// with the reason (`__dlq_*` columns). Without it, such a row fails its batch (the
    /// pipeline retries, then stops).
    #[serde(default)]
    pub dead_letter_topic: Option<String>,
}

/// One sink pipeline: a connector consuming topics through a consumer group.
#[derive(Debug, Clone, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct SinkSpec {
    /// Connector name.
    pub connector: String,
    /// Topics to consume.
    pub topics: Vec<String>,
    /// Consumer group whose committed offsets track progress.
    pub consumer_group: String,
    /// Whether to run it.
    #[serde(default = "yes")]
    pub enabled: bool,
    /// Where a new consumer group starts: `earliest`, `latest`, or a time (RFC 3339 text or
    /// milliseconds since the Unix epoch). Ignored once the group has committed offsets.
    #[serde(default)]
    pub start_offset: StartOffset,
    /// Connector-specific configuration. A `transforms` list here is the same as one beside
    /// `config`; it is not passed to the connector.
    #[serde(default)]
    #[schemars(with = "serde_json::Value")]
    pub config: serde_yaml::Value,
    /// Transforms applied to every batch read from the topics before the sink sees it.
    #[serde(default)]
    #[schemars(with = "Vec<serde_json::Value>")]
    pub transforms: serde_yaml::Value,
    /// Topic (in the pipeline's own log) for rows a transform fails on or the sink refuses
    /// (a sink that checks its rows, e.g. a column type its table cannot take), each with
    /// the reason. Without it, such a row fails its batch.
    #[serde(default)]
    pub dead_letter_topic: Option<String>,
}

/// What a pipeline asks of its transform compiler: the `transforms` list, a source's
/// `config.cdc_features` block and the dead-letter topic.
#[derive(Debug, Clone, Default)]
pub struct TransformSpec {
    /// The transform list (`null` when none).
    pub list: serde_yaml::Value,
    /// Where the list was written, relative to the pipeline's key (`transforms` or
    /// `config.transforms`).
    pub list_path: &'static str,
    /// A source's `config.cdc_features` (`null` when none; always `null` for sinks).
    pub features: serde_yaml::Value,
    /// `dead_letter_topic`.
    pub dead_letter_topic: Option<String>,
}

impl TransformSpec {
    /// Nothing to compile: no transforms and no CDC features.
    pub fn is_empty(&self) -> bool {
        let empty = |v: &serde_yaml::Value| match v {
            serde_yaml::Value::Null => true,
            serde_yaml::Value::Sequence(s) => s.is_empty(),
            serde_yaml::Value::Mapping(m) => m.is_empty(),
            _ => false,
        };
        empty(&self.list) && empty(&self.features)
    }
}

/// A pipeline's transforms and the connector's own config, separated.
#[derive(Debug, Clone)]
pub struct ConnectorParts {
    /// The connector's `config` without the `transforms` (and, for sources, `cdc_features`
    /// and `health`) keys.
    pub config: serde_yaml::Value,
    /// A source's `config.health` block, unparsed (see [`crate::health`]).
    pub health: Option<serde_yaml::Value>,
    /// What the transform compiler builds.
    pub transforms: TransformSpec,
}

/// Split `config.transforms` (the spec's CDC examples) or a pipeline-level `transforms` out
/// of a connector config, and `config.cdc_features` when `features` is set (sources). Both
/// lists at once is an error at `config.transforms`.
pub fn split_transforms(
    config: &serde_yaml::Value,
    transforms: &serde_yaml::Value,
    features: bool,
    dead_letter_topic: &Option<String>,
) -> Result<ConnectorParts, FieldError> {
    let mut config = config.clone();
    let mut take = |key: &str| match &mut config {
        serde_yaml::Value::Mapping(m) => m.remove(serde_yaml::Value::String(key.into())),
        _ => None,
    };
    let inner = take("transforms");
    let cdc = if features { take("cdc_features") } else { None };
    let health = if features { take("health") } else { None };
    let (list, list_path) = match (inner, transforms.is_null()) {
        (Some(_), false) => {
            return Err(FieldError::new(
                "config.transforms",
                "transforms are given both here and beside `config`; keep one list",
            ))
        }
        (Some(t), true) => (t, "config.transforms"),
        (None, _) => (transforms.clone(), "transforms"),
    };
    let spec = TransformSpec {
        list,
        list_path,
        features: cdc.unwrap_or_default(),
        dead_letter_topic: dead_letter_topic.clone(),
    };
    // A source's own undecodable records use it, and so do the rows a sink refuses.
    if let Some(t) = &spec.dead_letter_topic {
        valid_name(t)
            .map_err(|e| FieldError::new("dead_letter_topic", format!("topic name `{t}` {e}")))?;
    }
    Ok(ConnectorParts {
        config,
        health,
        transforms: spec,
    })
}

impl SourceSpec {
    /// The connector config and its transforms, separated (see [`split_transforms`]).
    pub fn parts(&self) -> Result<ConnectorParts, FieldError> {
        if self.dead_letter_topic.as_ref() == Some(&self.topic) {
            return Err(FieldError::new(
                "dead_letter_topic",
                "is the pipeline's own topic; dead-letter rows need a topic of their own",
            ));
        }
        split_transforms(
            &self.config,
            &self.transforms,
            true,
            &self.dead_letter_topic,
        )
    }
}

impl SinkSpec {
    /// The connector config and its transforms, separated (see [`split_transforms`]).
    pub fn parts(&self) -> Result<ConnectorParts, FieldError> {
        if let Some(t) = &self.dead_letter_topic {
            if self.topics.contains(t) {
                return Err(FieldError::new(
                    "dead_letter_topic",
                    format!("`{t}` is also in `topics`: a row failing again would loop through it"),
                ));
            }
        }
        split_transforms(
            &self.config,
            &self.transforms,
            false,
            &self.dead_letter_topic,
        )
    }
}

fn yes() -> bool {
    true
}

/// Where a new consumer group starts reading.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, JsonSchema)]
#[schemars(with = "String")]
pub enum StartOffset {
    /// The oldest retained record.
    Earliest,
    /// Only records appended after the group is created.
    #[default]
    Latest,
    /// The first record appended at or after this time (ms since the Unix epoch).
    Timestamp(i64),
}

impl<'de> Deserialize<'de> for StartOffset {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        #[derive(Deserialize)]
        #[serde(untagged)]
        enum Raw {
            Int(i64),
            Text(String),
        }
        match Raw::deserialize(d)? {
            Raw::Int(ms) => Ok(StartOffset::Timestamp(ms)),
            Raw::Text(s) => match s.as_str() {
                "earliest" => Ok(StartOffset::Earliest),
                "latest" => Ok(StartOffset::Latest),
                other => chrono::DateTime::parse_from_rfc3339(other)
                    .map(|t| StartOffset::Timestamp(t.timestamp_millis()))
                    .map_err(|_| {
                        serde::de::Error::custom(format!(
                            "expected `earliest`, `latest`, an RFC 3339 time or epoch milliseconds, got `{other}`"
                        ))
                    }),
            },
        }
    }
}

/// Schema registry settings.
#[derive(Debug, Clone, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct SchemaRegistryConfig {
    /// `disabled`, `external` or `glue`.
    pub mode: SchemaRegistryMode,
    /// Settings of an external (Confluent-compatible) registry.
    #[serde(default)]
    pub external: Option<ExternalRegistryConfig>,
    /// Settings of AWS Glue.
    #[serde(default)]
    pub glue: Option<GlueRegistryConfig>,
}

/// Schema registry mode.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum SchemaRegistryMode {
    /// No registry: plain encodings.
    Disabled,
    /// A Confluent-compatible registry.
    External,
    /// AWS Glue Schema Registry.
    Glue,
}

/// External registry connection.
#[derive(Debug, Clone, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct ExternalRegistryConfig {
    /// Registry URL.
    pub url: String,
    /// Basic-auth user.
    #[serde(default)]
    pub username: Option<String>,
    /// Basic-auth password.
    #[serde(default)]
    pub password: Option<crate::secret::SecretString>,
}

/// AWS Glue registry.
#[derive(Debug, Clone, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct GlueRegistryConfig {
    /// AWS region.
    pub region: String,
    /// Registry name.
    #[serde(default)]
    pub registry_name: Option<String>,
    /// Schema cache TTL in seconds.
    #[serde(default)]
    pub cache_ttl_secs: Option<u64>,
}

/// Distributed mode.
#[derive(Debug, Clone, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct DistributedConfig {
    /// Enable multi-node coordination.
    #[serde(default)]
    pub enabled: bool,
    /// This node's id.
    #[serde(default)]
    pub node_id: Option<String>,
    /// Topic for cluster status.
    #[serde(default)]
    pub cluster_topic: Option<String>,
    /// Singleton failover timing.
    #[serde(default)]
    pub failover: Option<FailoverConfig>,
}

/// Singleton failover timing.
#[derive(Debug, Clone, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct FailoverConfig {
    /// Heartbeat interval.
    #[serde(default)]
    pub heartbeat_interval_ms: Option<u64>,
    /// Time without heartbeat before failover.
    #[serde(default)]
    pub failure_timeout_ms: Option<u64>,
}

/// Whether `name` is a valid topic or consumer-group name: 1-249 characters of
/// `[A-Za-z0-9._-]`, not `.` or `..` (Kafka's rule, so names carry over to a broker).
pub fn valid_name(name: &str) -> Result<(), String> {
    if name.is_empty() {
        return Err("must not be empty".into());
    }
    if name.len() > 249 {
        return Err(format!(
            "must be at most 249 characters, got {}",
            name.len()
        ));
    }
    if name == "." || name == ".." {
        return Err("must not be `.` or `..`".into());
    }
    if let Some(c) = name
        .chars()
        .find(|c| !(c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-')))
    {
        return Err(format!(
            "may contain only letters, digits, `.`, `_` and `-`, found `{c}`"
        ));
    }
    Ok(())
}

impl Validate for PipelineConfig {
    /// Every constraint that does not need the connector registry.
    fn validate(&self) -> Vec<FieldError> {
        let mut errs = Vec::new();
        if self.version != "1.0" && self.version != "1" {
            errs.push(FieldError::new(
                "version",
                format!("must be \"1.0\", got \"{}\"", self.version),
            ));
        }
        if self.broker.is_some() {
            errs.push(FieldError::new(
                "broker",
                "the Kafka-protocol broker backend is not available in this build yet; remove `broker` to use the embedded topic log",
            ));
        }
        if let Some(sr) = &self.schema_registry {
            if sr.mode != SchemaRegistryMode::Disabled {
                errs.push(FieldError::new(
                    "schema_registry.mode",
                    "only `disabled` is available in this build; no connector here encodes with a registry yet",
                ));
            }
        }
        if self.distributed.as_ref().is_some_and(|d| d.enabled) {
            errs.push(FieldError::new(
                "distributed.enabled",
                "distributed mode is not available in this build; run one process per pipeline set",
            ));
        }
        if self.sources.is_empty() && self.sinks.is_empty() {
            errs.push(FieldError::new(
                "",
                "nothing to run: configure at least one source or sink",
            ));
        }
        for (name, src) in &self.sources {
            let p = format!("sources.{name}");
            if let Err(e) = valid_name(name) {
                errs.push(FieldError::new(&p, format!("pipeline name {e}")));
            }
            if let Err(e) = valid_name(&src.topic) {
                errs.push(FieldError::new(format!("{p}.topic"), e));
            }
        }
        for (name, sink) in &self.sinks {
            let p = format!("sinks.{name}");
            if let Err(e) = valid_name(name) {
                errs.push(FieldError::new(&p, format!("pipeline name {e}")));
            }
            if sink.topics.is_empty() {
                errs.push(FieldError::new(
                    format!("{p}.topics"),
                    "must name at least one topic",
                ));
            }
            for (i, t) in sink.topics.iter().enumerate() {
                if let Err(e) = valid_name(t) {
                    errs.push(FieldError::new(format!("{p}.topics[{i}]"), e));
                }
            }
            if let Err(e) = valid_name(&sink.consumer_group) {
                errs.push(FieldError::new(format!("{p}.consumer_group"), e));
            }
        }
        errs.extend(
            self.settings
                .validate()
                .into_iter()
                .map(|e| e.under("settings")),
        );
        errs
    }
}
