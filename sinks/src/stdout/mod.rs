//! `stdout`: prints batches on standard output, for debugging and demos.
//!
//! **Reads** batches from its topics. **Writes** to standard output as `json` (one JSON
//! object per line), `pretty` (indented JSON, one object after another) or `table` (an
//! ASCII table per batch). With `include_metadata`, every record gets a `_meta` object
//! with its topic, partition, offset and append time.
//!
//! **Guarantees**: at-least-once. A batch is durable once written and flushed to the
//! stdout file descriptor; records written after the last offset commit are printed again
//! after a crash. A closed stdout (`| head`) fails the pipeline without retries.
//!
//! ```yaml
//! sinks:
//!   console:
//!     connector: stdout
//!     topics: [demo-events]
//!     consumer_group: console
//!     config:
//!       format: json
//!       include_metadata: true
//! ```

mod sink;

pub use sink::{StdoutConfig, StdoutFormat, StdoutSink};

use async_trait::async_trait;
use rivven_engine::config::FieldError;
use rivven_engine::connector::Sink;
use rivven_engine::registry::{
    config_or_error, parse_config, Category, ConnectorInfo, PipelineContext, SinkFactory,
};
use rivven_engine::Result;

/// Factory of the `stdout` sink.
#[derive(Debug, Clone, Copy)]
pub struct StdoutFactory;

#[async_trait]
impl SinkFactory for StdoutFactory {
    fn info(&self) -> ConnectorInfo {
        ConnectorInfo {
            name: "stdout",
            category: Category::Utility,
            description: "Console output (JSON lines, pretty JSON, tables) for debugging",
            tags: &["debug", "console", "test"],
        }
    }

    fn config_schema(&self) -> schemars::Schema {
        schemars::schema_for!(StdoutConfig)
    }

    fn validate(&self, config: &serde_yaml::Value) -> Vec<FieldError> {
        parse_config::<StdoutConfig>(config)
            .err()
            .unwrap_or_default()
    }

    async fn check(&self, config: &serde_yaml::Value) -> Result<String> {
        let cfg: StdoutConfig = config_or_error(config)?;
        Ok(format!(
            "standard output, format {:?}",
            cfg.effective_format()
        ))
    }

    fn create(&self, _ctx: &PipelineContext, config: &serde_yaml::Value) -> Result<Box<dyn Sink>> {
        Ok(Box::new(StdoutSink::new(config_or_error(config)?)))
    }
}
