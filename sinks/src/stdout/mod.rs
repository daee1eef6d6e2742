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
use rivven_engine::connector::Sink;
use rivven_engine::registry::{Category, ConnectorInfo, PipelineContext, SinkConnector};
use rivven_engine::Result;

/// The `stdout` sink connector.
#[derive(Debug, Clone, Copy)]
pub struct Stdout;

#[async_trait]
impl SinkConnector for Stdout {
    type Config = StdoutConfig;

    fn info(&self) -> ConnectorInfo {
        ConnectorInfo {
            name: "stdout",
            category: Category::Utility,
            description: "Console output (JSON lines, pretty JSON, tables) for debugging",
            tags: &["debug", "console", "test"],
        }
    }

    async fn check(&self, cfg: &StdoutConfig) -> Result<String> {
        Ok(format!(
            "standard output, format {:?}",
            cfg.effective_format()
        ))
    }

    fn create(&self, _: &PipelineContext, cfg: StdoutConfig) -> Result<Box<dyn Sink>> {
        Ok(Box::new(StdoutSink::new(cfg)))
    }
}
