//! `postgres-cdc` configuration.

use rivven_engine::config::{FieldError, Validate};
use rivven_engine::routing::{NormalizationConfig, TopicResolver};
use rivven_engine::secret::SecretString;
use schemars::JsonSchema;
use serde::Deserialize;
use std::collections::BTreeMap;

pub use super::types::TemporalInfinity;

/// When to read the tables' existing rows.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum SnapshotMode {
    /// Snapshot on the first start (no stored position), then stream.
    #[default]
    Initial,
    /// Snapshot on every start, then stream.
    Always,
    /// Never snapshot: stream changes from the slot's position.
    Never,
    /// Snapshot on the first start, then stop (no streaming).
    InitialOnly,
    /// Snapshot when there is no stored position or the slot is missing, then stream.
    WhenNeeded,
    /// Create the slot and stream without reading existing rows (schemas only).
    NoData,
}

/// `binary`: whether pgoutput sends column values in their binary send form
/// (PostgreSQL 14+). `auto` (the default) uses it when every column of the captured
/// tables has a binary decoder here, and text otherwise; `true` always (a column
/// without a decoder then fails its changes); `false` never.
#[derive(Debug, Clone, Copy, PartialEq, Eq, JsonSchema)]
#[serde(untagged)]
pub enum BinaryValues {
    /// `true` or `false`.
    Fixed(bool),
    /// `auto`.
    Auto(AutoWord),
}

/// The word `auto`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum AutoWord {
    Auto,
}

impl Default for BinaryValues {
    fn default() -> Self {
        BinaryValues::Auto(AutoWord::Auto)
    }
}

impl<'de> Deserialize<'de> for BinaryValues {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        match serde_yaml::Value::deserialize(d)? {
            serde_yaml::Value::Bool(b) => Ok(BinaryValues::Fixed(b)),
            serde_yaml::Value::String(s) if s == "auto" => Ok(BinaryValues::default()),
            other => Err(serde::de::Error::custom(format!(
                "expected true, false or auto, found {}",
                serde_yaml::to_string(&other).unwrap_or_default().trim_end()
            ))),
        }
    }
}

impl BinaryValues {
    /// `Some(fixed choice)`, or `None` for `auto`.
    pub fn fixed(self) -> Option<bool> {
        match self {
            BinaryValues::Fixed(b) => Some(b),
            BinaryValues::Auto(_) => None,
        }
    }
}

/// TLS mode, as libpq's `sslmode`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize, JsonSchema)]
#[serde(rename_all = "kebab-case")]
pub enum SslMode {
    #[default]
    Disable,
    Prefer,
    Require,
    VerifyCa,
    VerifyFull,
}

/// Columns to capture for one table. With both keys, `include` is applied first, then
/// `exclude` removes columns from what it kept.
#[derive(Debug, Clone, Default, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct ColumnFilter {
    /// Only these columns (empty: every column).
    #[serde(default)]
    pub include: Vec<String>,
    /// Never these columns.
    #[serde(default)]
    pub exclude: Vec<String>,
}

impl ColumnFilter {
    /// Whether column `name` is captured.
    pub fn keeps(&self, name: &str) -> bool {
        (self.include.is_empty() || self.include.iter().any(|c| c == name))
            && !self.exclude.iter().any(|c| c == name)
    }
}

/// Periodic heartbeats: an optional SQL statement run in the captured database (so an
/// otherwise idle database produces WAL and its slot keeps advancing), an optional event
/// per heartbeat, and a warning when the stream falls behind.
#[derive(Debug, Clone, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct HeartbeatConfig {
    #[serde(default)]
    pub enabled: bool,
    /// Seconds between heartbeats (1-3600).
    #[serde(default = "default_heartbeat_interval")]
    pub interval_secs: u64,
    /// When the oldest unconfirmed change is older than this many seconds: a warning,
    /// and the pipeline is marked unhealthy (`/ready` answers 503) until it catches up.
    #[serde(default = "default_max_lag")]
    pub max_lag_secs: u64,
    /// Emit one heartbeat event per heartbeat to `topic`.
    #[serde(default)]
    pub emit_events: bool,
    /// Topic of heartbeat events (required with `emit_events`).
    #[serde(default)]
    pub topic: Option<String>,
    /// SQL run on each heartbeat, e.g.
    /// `SELECT pg_logical_emit_message(false, 'heartbeat', now()::text)`.
    #[serde(default)]
    pub action_query: Option<String>,
}

fn default_heartbeat_interval() -> u64 {
    10
}
fn default_max_lag() -> u64 {
    300
}

/// Snapshot settings.
#[derive(Debug, Clone, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct SnapshotConfig {
    /// Tables (or chunks) read at once, each on its own session in the same snapshot
    /// (1-32).
    #[serde(default = "default_parallel_tables")]
    pub parallel_tables: usize,
    /// Tables estimated (`pg_class.reltuples`) above this many rows are read in chunks
    /// of heap blocks (TID range scans, PostgreSQL 14+), which parallel sessions share
    /// and a resumed snapshot skips once done; 0 turns chunking off.
    #[serde(default = "default_chunk_rows")]
    pub chunk_rows: u64,
}

impl Default for SnapshotConfig {
    fn default() -> Self {
        Self {
            parallel_tables: default_parallel_tables(),
            chunk_rows: default_chunk_rows(),
        }
    }
}

fn default_parallel_tables() -> usize {
    4
}

fn default_chunk_rows() -> u64 {
    1_000_000
}

/// `postgres-cdc` configuration.
#[derive(Debug, Clone, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct PostgresCdcConfig {
    /// Server host name or IP address.
    #[serde(default = "default_host")]
    pub host: String,
    /// Server port.
    #[serde(default = "default_port")]
    pub port: u16,
    /// Database to capture.
    pub database: String,
    /// User with the REPLICATION attribute (or superuser).
    pub user: String,
    /// Password (use `${VAR}` substitution; never logged).
    #[serde(default)]
    pub password: Option<SecretString>,
    /// TLS mode: disable, prefer, require, verify-ca, verify-full (as libpq).
    #[serde(default)]
    pub sslmode: SslMode,
    /// PEM file of the certificate authorities to trust (default: the system roots).
    #[serde(default)]
    pub sslrootcert: Option<std::path::PathBuf>,
    /// Logical replication slot; created when absent.
    #[serde(default = "default_slot")]
    pub slot_name: String,
    /// Publication; created when absent: for `tables`, else for the tables in `schemas`,
    /// else for all tables.
    #[serde(default = "default_publication")]
    pub publication: String,
    /// Schemas to capture (empty: every schema).
    #[serde(default)]
    pub schemas: Vec<String>,
    /// Tables to capture, `table` or `schema.table` (empty: every table of the
    /// publication in `schemas`).
    #[serde(default)]
    pub tables: Vec<String>,
    /// Per-table column selection, keyed by `schema.table`.
    #[serde(default)]
    pub column_filters: BTreeMap<String, ColumnFilter>,
    /// When to snapshot existing rows.
    #[serde(default)]
    pub snapshot_mode: SnapshotMode,
    /// How the snapshot reads.
    #[serde(default)]
    pub snapshot: SnapshotConfig,
    /// Topic per table: a template with `{database}`, `{schema}`, `{table}`.
    #[serde(default)]
    pub topic_routing: Option<String>,
    /// How `topic_routing` placeholder values are normalized.
    #[serde(default)]
    pub normalization: Option<NormalizationConfig>,
    /// Text written for an unchanged TOASTed value the server did not send (text and bytea
    /// columns; other types get null). Use replica identity FULL to get the real value.
    #[serde(default = "default_placeholder")]
    pub unavailable_value_placeholder: String,
    /// What `infinity` / `-infinity` dates and timestamps become: `sentinel` (the largest /
    /// smallest value of the Arrow type) or `null`.
    #[serde(default)]
    pub temporal_infinity: TemporalInfinity,
    /// Use pgoutput protocol 2 streaming of large in-progress transactions (PostgreSQL
    /// 14+): they are then buffered in this process's memory until they commit, instead
    /// of spilling to disk on the server. Off by default: a transaction of many GB would
    /// need that much memory here.
    #[serde(default)]
    pub streaming: bool,
    /// Values from pgoutput in binary form (PostgreSQL 14+; text before): less text to
    /// parse. See [`BinaryValues`].
    #[serde(default)]
    pub binary: BinaryValues,
    /// Emit logical decoding messages (`pg_logical_emit_message`) as events with `op = "m"`
    /// (PostgreSQL 14+), in commit order among the table changes.
    #[serde(default)]
    pub messages: bool,
    /// Only messages with one of these prefixes (empty: all).
    #[serde(default)]
    pub message_prefixes: Vec<String>,
    /// Heartbeats (disabled by default).
    #[serde(default)]
    pub heartbeat: Option<HeartbeatConfig>,
    /// Standby status update interval, milliseconds (keep below the server's
    /// `wal_sender_timeout`).
    #[serde(default = "default_status_interval")]
    pub status_interval_ms: u64,
    /// Connect timeout, milliseconds.
    #[serde(default = "default_connect_timeout")]
    pub connect_timeout_ms: u64,
}

fn default_host() -> String {
    "localhost".into()
}
fn default_port() -> u16 {
    5432
}
fn default_slot() -> String {
    "rivven_slot".into()
}
fn default_publication() -> String {
    "rivven_pub".into()
}
fn default_placeholder() -> String {
    "__debezium_unavailable_value".into()
}
fn default_status_interval() -> u64 {
    10_000
}
fn default_connect_timeout() -> u64 {
    10_000
}

fn valid_identifier(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= 63
        && s.chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_')
}

impl Validate for PostgresCdcConfig {
    fn validate(&self) -> Vec<FieldError> {
        let mut errors = Vec::new();
        if !valid_identifier(&self.slot_name) {
            errors.push(FieldError::new(
                "slot_name",
                "must be 1-63 characters of lower-case letters, digits and underscores",
            ));
        }
        if self.publication.is_empty() || self.publication.contains('"') {
            errors.push(FieldError::new(
                "publication",
                "must be a non-empty name without quotes",
            ));
        }
        if let Some(p) = &self.sslrootcert {
            if self.sslmode == SslMode::Disable {
                errors.push(FieldError::new(
                    "sslrootcert",
                    "is set but sslmode is disable",
                ));
            } else if !p.is_file() {
                errors.push(FieldError::new(
                    "sslrootcert",
                    format!("{} is not a readable file", p.display()),
                ));
            }
        }
        if !self.message_prefixes.is_empty() && !self.messages {
            errors.push(FieldError::new(
                "message_prefixes",
                "is set but messages is false",
            ));
        }
        for (i, t) in self.tables.iter().enumerate() {
            if t.is_empty() || t.split('.').count() > 2 {
                errors.push(FieldError::new(
                    format!("tables[{i}]"),
                    "expected `table` or `schema.table`",
                ));
            }
        }
        for table in self.column_filters.keys() {
            if !table.contains('.') {
                errors.push(FieldError::new(
                    format!("column_filters.{table}"),
                    "key must be `schema.table`",
                ));
            }
        }
        if let Some(t) = &self.topic_routing {
            if let Err(e) = TopicResolver::new(t, NormalizationConfig::default()) {
                errors.push(e);
            }
        } else if self.normalization.is_some() {
            errors.push(FieldError::new(
                "normalization",
                "applies to topic_routing, which is not set",
            ));
        }
        if let Some(h) = &self.heartbeat {
            if !(1..=3600).contains(&h.interval_secs) {
                errors.push(FieldError::new("heartbeat.interval_secs", "must be 1-3600"));
            }
            if h.emit_events && h.topic.as_deref().is_none_or(str::is_empty) {
                errors.push(FieldError::new(
                    "heartbeat.topic",
                    "required when heartbeat.emit_events is true",
                ));
            }
            if !h.enabled && (h.emit_events || h.action_query.is_some()) {
                errors.push(FieldError::new(
                    "heartbeat.enabled",
                    "is false, so emit_events/action_query would never run",
                ));
            }
        }
        if !(1..=32).contains(&self.snapshot.parallel_tables) {
            errors.push(FieldError::new("snapshot.parallel_tables", "must be 1-32"));
        }
        if self.status_interval_ms == 0 {
            errors.push(FieldError::new("status_interval_ms", "must be positive"));
        }
        errors
    }
}

impl PostgresCdcConfig {
    /// `(schema, table)` of each configured table (`public` when unqualified).
    pub fn table_names(&self) -> Vec<(String, String)> {
        self.tables
            .iter()
            .map(|t| match t.split_once('.') {
                Some((s, t)) => (s.to_string(), t.to_string()),
                None => ("public".to_string(), t.clone()),
            })
            .collect()
    }

    /// Whether a table is captured.
    pub fn selects(&self, schema: &str, table: &str) -> bool {
        let schema_ok = self.schemas.is_empty() || self.schemas.iter().any(|s| s == schema);
        let table_ok = self.tables.is_empty()
            || self
                .table_names()
                .iter()
                .any(|(s, t)| s == schema && t == table);
        schema_ok && table_ok
    }

    /// Positions of `columns` to keep for `schema.table`.
    pub fn kept_columns<'a>(
        &self,
        schema: &str,
        table: &str,
        columns: impl Iterator<Item = &'a str>,
    ) -> Vec<usize> {
        let f = self.column_filters.get(&format!("{schema}.{table}"));
        columns
            .enumerate()
            .filter(|(_, name)| f.is_none_or(|f| f.keeps(name)))
            .map(|(i, _)| i)
            .collect()
    }

    /// The resolver of `topic_routing`, if set (validated by `validate`).
    pub fn resolver(&self) -> Option<TopicResolver> {
        let t = self.topic_routing.as_ref()?;
        TopicResolver::new(t, self.normalization.clone().unwrap_or_default()).ok()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config(yaml: &str) -> PostgresCdcConfig {
        serde_yaml::from_str(yaml).unwrap()
    }

    #[test]
    fn column_filters_include_then_exclude() {
        // The spec's own CDC example gives both keys.
        let cfg = config(
            "database: d\nuser: u\ncolumn_filters:\n  public.users:\n    include: [id, email, name, password_hash]\n    exclude: [password_hash]\n  public.orders:\n    exclude: [note]\n",
        );
        assert!(cfg.validate().is_empty(), "{:?}", cfg.validate());
        let cols = ["id", "email", "password_hash", "name", "ssn"];
        assert_eq!(
            cfg.kept_columns("public", "users", cols.into_iter()),
            vec![0, 1, 3]
        );
        assert_eq!(
            cfg.kept_columns("public", "orders", ["id", "note", "total"].into_iter()),
            vec![0, 2]
        );
        assert_eq!(
            cfg.kept_columns("public", "other", cols.into_iter()),
            vec![0, 1, 2, 3, 4]
        );
    }
}
