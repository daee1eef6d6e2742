//! The `settings` block: engine-wide knobs (state directory, batching, queues, topics,
//! retries) and the endpoints the process serves (health, metrics, Arrow Flight).

use super::{yes, FieldError, Validate};
use schemars::JsonSchema;
use serde::Deserialize;
use std::path::PathBuf;

/// Engine settings.
#[derive(Debug, Clone, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields, default)]
pub struct Settings {
    /// Directory for the embedded topic log, consumer offsets and source positions.
    pub state_dir: PathBuf,
    /// Micro-batching of source output.
    pub batch: BatchSettings,
    /// Bounds of the in-memory queues between a source and the topic and between the topic
    /// and a sink. A full queue slows the producer: memory stays flat.
    pub queue: QueueSettings,
    /// Topic creation and the embedded log's storage policy.
    pub topic: TopicSettings,
    /// Restart policy of failed connectors.
    pub retry: RetrySettings,
    /// How often a sink is flushed and its consumer offsets committed while data flows.
    pub commit_interval_ms: u64,
    /// The HTTP endpoint serving `/health`, `/ready` and `/status` (used by
    /// `rivven-connect status`); port 8080 unless given.
    #[serde(deserialize_with = "endpoint::<8080, _>")]
    #[schemars(with = "EndpointKeys")]
    pub health: EndpointSettings,
    /// The HTTP endpoint serving Prometheus `/metrics`; port 9091 unless given.
    #[serde(deserialize_with = "endpoint::<9091, _>")]
    #[schemars(with = "EndpointKeys")]
    pub metrics: EndpointSettings,
    /// The Arrow Flight endpoint serving the topics' batches (off unless enabled).
    pub flight: FlightSettings,
}

/// The Arrow Flight endpoint: `ListFlights`, `GetFlightInfo`, `GetSchema` and `DoGet` over
/// the embedded log's topics.
#[derive(Debug, Clone, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields, default)]
pub struct FlightSettings {
    /// Serve it (default false).
    pub enabled: bool,
    /// Address to bind: an IP address or `localhost` (default 127.0.0.1). Any other than a
    /// loopback address needs a `token`.
    pub host: String,
    /// Port to bind (default 8815).
    pub port: u16,
    /// Bearer token every call must carry (`authorization: Bearer <token>`); use
    /// `${VAR}` substitution. Without it the endpoint is open to whoever can reach it,
    /// which is allowed on loopback only.
    pub token: Option<crate::secret::SecretString>,
    /// Serve gRPC over TLS with this certificate and key (clients connect with
    /// `grpc+tls://`); plain gRPC without it.
    pub tls: Option<FlightTls>,
}

/// TLS of the Flight endpoint: PEM files.
#[derive(Debug, Clone, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct FlightTls {
    /// Certificate chain (PEM), the server's certificate first.
    pub cert: PathBuf,
    /// Private key (PEM: PKCS#8, PKCS#1 or SEC1).
    pub key: PathBuf,
}

impl Default for FlightSettings {
    fn default() -> Self {
        Self {
            enabled: false,
            host: localhost(),
            port: 8815,
            token: None,
            tls: None,
        }
    }
}

/// The keys of an HTTP endpoint as written in the file.
#[derive(Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
struct EndpointKeys {
    /// Serve it.
    #[serde(default = "yes")]
    enabled: bool,
    /// Address to bind: an IP address or `localhost`.
    #[serde(default = "localhost")]
    host: String,
    /// Port to bind (default 8080 for `health`, 9091 for `metrics`).
    #[serde(default)]
    port: Option<u16>,
}

/// An [`EndpointSettings`] whose `port` defaults to `PORT`, so that `{enabled: false}`
/// needs no port.
fn endpoint<'de, const PORT: u16, D: serde::Deserializer<'de>>(
    d: D,
) -> Result<EndpointSettings, D::Error> {
    let k = EndpointKeys::deserialize(d)?;
    Ok(EndpointSettings {
        enabled: k.enabled,
        host: k.host,
        port: k.port.unwrap_or(PORT),
    })
}

impl Default for Settings {
    fn default() -> Self {
        Self {
            state_dir: PathBuf::from("rivven-state"),
            batch: BatchSettings::default(),
            queue: QueueSettings::default(),
            topic: TopicSettings::default(),
            retry: RetrySettings::default(),
            commit_interval_ms: 1000,
            health: EndpointSettings {
                enabled: true,
                host: "127.0.0.1".into(),
                port: 8080,
            },
            metrics: EndpointSettings {
                enabled: true,
                host: "127.0.0.1".into(),
                port: 9091,
            },
            flight: FlightSettings::default(),
        }
    }
}

/// A source's output is cut into micro-batches at `max_rows`, at `max_bytes`, when the
/// source has nothing more ready, or after `linger_ms`, whichever comes first: changes go
/// out as soon as they are read at low rates, and batches fill up under load.
#[derive(Debug, Clone, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields, default)]
pub struct BatchSettings {
    /// Maximum rows per batch.
    pub max_rows: usize,
    /// Maximum bytes (Arrow memory) per batch.
    pub max_bytes: usize,
    /// The longest a batch stays open while its source keeps producing rows, in
    /// milliseconds (a batch never waits for rows the source does not have ready).
    pub linger_ms: u64,
}

impl Default for BatchSettings {
    fn default() -> Self {
        Self {
            max_rows: 8192,
            max_bytes: 16 << 20,
            linger_ms: 100,
        }
    }
}

/// Queue bounds, in rows and in bytes; the first reached blocks the producer.
#[derive(Debug, Clone, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields, default)]
pub struct QueueSettings {
    /// Maximum rows queued.
    pub max_rows: usize,
    /// Maximum bytes queued.
    pub max_bytes: usize,
}

impl Default for QueueSettings {
    fn default() -> Self {
        Self {
            max_rows: 65_536,
            max_bytes: 64 << 20,
        }
    }
}

/// When the embedded log calls `fsync`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum FsyncPolicy {
    /// After every append, before it is acknowledged: nothing acknowledged is lost even if
    /// the machine loses power.
    Always,
    /// Every `fsync_interval_ms`: a machine crash may lose the last interval; a process
    /// crash (kill -9) loses nothing, as the data is in the OS page cache.
    Interval,
    /// Never; the OS writes back on its own schedule.
    Never,
}

/// Topic creation and embedded-log storage settings.
#[derive(Debug, Clone, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields, default)]
pub struct TopicSettings {
    /// Create topics on first use. When false, topics must already exist.
    pub auto_create: bool,
    /// Partitions of a newly created topic.
    pub default_partitions: u32,
    /// Replication factor of a newly created topic; the embedded log keeps one copy.
    pub default_replication_factor: u32,
    /// Size at which the embedded log starts a new segment file.
    pub segment_bytes: u64,
    /// Delete the oldest segments of a partition beyond this many bytes (unset: no limit).
    pub retention_bytes: Option<u64>,
    /// Delete segments whose newest record is older than this (unset: keep forever).
    pub retention_ms: Option<u64>,
    /// When to fsync appended data.
    pub fsync: FsyncPolicy,
    /// Interval for `fsync: interval`.
    pub fsync_interval_ms: u64,
}

impl Default for TopicSettings {
    fn default() -> Self {
        Self {
            auto_create: true,
            default_partitions: 1,
            default_replication_factor: 1,
            segment_bytes: 128 << 20,
            retention_bytes: None,
            retention_ms: Some(7 * 24 * 3600 * 1000),
            fsync: FsyncPolicy::Always,
            fsync_interval_ms: 1000,
        }
    }
}

/// Restart with exponential backoff.
#[derive(Debug, Clone, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields, default)]
pub struct RetrySettings {
    /// Consecutive failed restarts before the pipeline is marked failed.
    pub max_retries: u32,
    /// First backoff, in milliseconds; doubled after each failure.
    pub initial_backoff_ms: u64,
    /// Backoff ceiling, in milliseconds.
    pub max_backoff_ms: u64,
}

impl Default for RetrySettings {
    fn default() -> Self {
        Self {
            max_retries: 10,
            initial_backoff_ms: 100,
            max_backoff_ms: 30_000,
        }
    }
}

/// An HTTP endpoint.
#[derive(Debug, Clone)]
pub struct EndpointSettings {
    /// Serve it (default true).
    pub enabled: bool,
    /// Address to bind (default 127.0.0.1).
    pub host: String,
    /// Port to bind (default 8080 for `health`, 9091 for `metrics`).
    pub port: u16,
}

fn localhost() -> String {
    "127.0.0.1".into()
}

impl Validate for Settings {
    /// Paths relative to `settings`.
    fn validate(&self) -> Vec<FieldError> {
        let mut errs = Vec::new();
        let mut at_least = |path: &str, v: u64, min: u64| {
            if v < min {
                errs.push(FieldError::new(
                    path.to_owned(),
                    format!("must be at least {min}, got {v}"),
                ));
            }
        };
        at_least("batch.max_rows", self.batch.max_rows as u64, 1);
        at_least("batch.max_bytes", self.batch.max_bytes as u64, 1024);
        at_least("queue.max_rows", self.queue.max_rows as u64, 1);
        at_least("queue.max_bytes", self.queue.max_bytes as u64, 1024);
        at_least("topic.segment_bytes", self.topic.segment_bytes, 4096);
        at_least("topic.fsync_interval_ms", self.topic.fsync_interval_ms, 1);
        at_least("commit_interval_ms", self.commit_interval_ms, 1);
        at_least("retry.initial_backoff_ms", self.retry.initial_backoff_ms, 1);
        if !(1..=1024).contains(&self.topic.default_partitions) {
            errs.push(FieldError::new(
                "topic.default_partitions",
                format!("must be 1-1024, got {}", self.topic.default_partitions),
            ));
        }
        if self.topic.default_replication_factor != 1 {
            errs.push(FieldError::new(
                "topic.default_replication_factor",
                format!(
                    "the embedded topic log keeps one copy: must be 1, got {}",
                    self.topic.default_replication_factor
                ),
            ));
        }
        if self.retry.max_backoff_ms < self.retry.initial_backoff_ms {
            errs.push(FieldError::new(
                "retry.max_backoff_ms",
                format!(
                    "must be at least initial_backoff_ms ({}), got {}",
                    self.retry.initial_backoff_ms, self.retry.max_backoff_ms
                ),
            ));
        }
        let f = &self.flight;
        if f.enabled {
            if f.port == 0 {
                errs.push(FieldError::new("flight.port", "must be 1-65535, got 0"));
            }
            match f.host.parse::<std::net::IpAddr>() {
                Ok(ip) if !ip.is_loopback() && f.token.is_none() => errs.push(FieldError::new(
                    "flight.token",
                    format!(
                        "required when flight.host ({}) is not a loopback address: the endpoint \
                         serves every topic's rows",
                        f.host
                    ),
                )),
                Ok(_) => {}
                Err(_) if f.host == "localhost" => {}
                Err(_) => errs.push(FieldError::new(
                    "flight.host",
                    format!("an IP address or localhost, got `{}`", f.host),
                )),
            }
            if f.token.as_ref().is_some_and(|t| t.expose().is_empty()) {
                errs.push(FieldError::new("flight.token", "must not be empty"));
            }
        }
        for (key, ep) in [("health", &self.health), ("metrics", &self.metrics)] {
            if ep.enabled && ep.port == 0 {
                errs.push(FieldError::new(
                    format!("{key}.port"),
                    "must be 1-65535, got 0",
                ));
            }
            if ep.enabled && ep.host.parse::<std::net::IpAddr>().is_err() && ep.host != "localhost"
            {
                errs.push(FieldError::new(
                    format!("{key}.host"),
                    format!("must be an IP address or `localhost`, got `{}`", ep.host),
                ));
            }
        }
        if self.state_dir.as_os_str().is_empty() {
            errs.push(FieldError::new("state_dir", "must not be empty"));
        }
        errs
    }
}
