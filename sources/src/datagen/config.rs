//! Configuration of the `datagen` source.

use rivven_engine::config::{FieldError, Validate};
use schemars::JsonSchema;
use serde::Deserialize;
use std::collections::BTreeMap;

use super::patterns::Pattern;

/// `datagen` configuration.
#[derive(Debug, Clone, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct DatagenConfig {
    /// Data pattern.
    #[serde(default)]
    pub pattern: Pattern,
    /// Events per second; 0 = as fast as possible.
    #[serde(default = "default_rate")]
    pub events_per_second: u64,
    /// Stop after this many events in total (across restarts); 0 = unlimited.
    #[serde(default)]
    pub max_events: u64,
    /// Stream (table) name of the events.
    #[serde(default = "default_stream")]
    pub stream_name: String,
    /// Namespace (schema) of the events.
    #[serde(default)]
    pub namespace: Option<String>,
    /// Add a `sequence` column: the event's index, 0-based, continuing across restarts.
    #[serde(default = "yes")]
    pub include_sequence: bool,
    /// Add a `timestamp` column: the wall-clock time the event was generated.
    #[serde(default = "yes")]
    pub include_timestamp: bool,
    /// Constant columns added to every event. Strings, integers, floats and booleans keep
    /// their type; lists and maps are added as JSON text.
    #[serde(default)]
    #[schemars(with = "BTreeMap<String, serde_json::Value>")]
    pub custom_fields: BTreeMap<String, serde_yaml::Value>,
    /// Seed: the same seed gives the same data. Without one a random seed is chosen at first
    /// start and kept in the source position, so a restart continues the same sequence.
    #[serde(default)]
    pub seed: Option<u64>,
    /// Emit change events (canonical `op`/`before`/`after`/`source` schema): 60% inserts,
    /// 30% updates of a live row, 10% deletes of a live row.
    #[serde(default)]
    pub cdc_mode: bool,
}

fn default_rate() -> u64 {
    1
}
fn default_stream() -> String {
    "datagen".into()
}
fn yes() -> bool {
    true
}

/// Column names the generator itself uses, which custom fields must not shadow.
pub(crate) const RESERVED: &[&str] = &[
    "sequence",
    "timestamp",
    "op",
    "before",
    "after",
    "source",
    "ts_ms",
];

impl Validate for DatagenConfig {
    fn validate(&self) -> Vec<FieldError> {
        let mut errs = Vec::new();
        if self.stream_name.is_empty() {
            errs.push(FieldError::new("stream_name", "must not be empty"));
        }
        let pattern_cols = super::patterns::columns(self.pattern);
        for name in self.custom_fields.keys() {
            if name.is_empty() {
                errs.push(FieldError::new(
                    "custom_fields",
                    "field names must not be empty",
                ));
            } else if RESERVED.contains(&name.as_str())
                || pattern_cols.iter().any(|c| c.name == name)
            {
                errs.push(FieldError::new(
                    format!("custom_fields.{name}"),
                    format!(
                        "`{name}` is already a column of pattern {:?}; choose another name",
                        self.pattern
                    ),
                ));
            }
        }
        errs
    }
}
