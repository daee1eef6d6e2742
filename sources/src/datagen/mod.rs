//! `datagen`: a synthetic data generator for tests and demos; no external system needed.
//!
//! **Reads** nothing. **Writes** flat batches of a pattern (`sequence`, `random`, `users`,
//! `orders`, `events`, `metrics`, `key_value`), or with `cdc_mode: true` change-event batches
//! in the canonical schema (60% inserts, 30% updates, 10% deletes, with the before image of
//! an update or delete equal to the row's previous after image).
//!
//! **Guarantees**: event *i* is a pure function of the seed and *i* (wall-clock `timestamp`
//! and `ts_ms` aside), whatever the batch sizes. The position (`{"seed", "next"}`) is stored
//! with each batch in the topic, so a restart continues the sequence exactly where the last
//! durable batch ended: no gap, no duplicate. `max_events` counts across restarts.
//!
//! ```yaml
//! sources:
//!   demo:
//!     connector: datagen
//!     topic: demo-events
//!     config:
//!       pattern: orders
//!       events_per_second: 100
//!       max_events: 10000
//!       seed: 42
//!       cdc_mode: false
//! ```

mod config;
mod patterns;
mod source;

pub use config::DatagenConfig;
pub use patterns::Pattern;
pub use source::DatagenSource;

use async_trait::async_trait;
use rivven_engine::connector::{Source, StreamInfo};
use rivven_engine::registry::{Category, ConnectorInfo, PipelineContext, SourceConnector};
use rivven_engine::Result;

/// The `datagen` source connector.
#[derive(Debug, Clone, Copy)]
pub struct Datagen;

#[async_trait]
impl SourceConnector for Datagen {
    type Config = DatagenConfig;

    fn info(&self) -> ConnectorInfo {
        ConnectorInfo {
            name: "datagen",
            category: Category::Utility,
            description: "Synthetic data generator (patterns, CDC mode) for tests and demos",
            tags: &["test", "demo", "generator", "cdc"],
        }
    }

    async fn check(&self, cfg: &DatagenConfig) -> Result<String> {
        Ok(format!(
            "generator ready (pattern {:?}, cdc_mode {})",
            cfg.pattern, cfg.cdc_mode
        ))
    }

    async fn discover(&self, cfg: &DatagenConfig) -> Result<Vec<StreamInfo>> {
        Ok(vec![StreamInfo {
            name: cfg.stream_name.clone(),
            namespace: cfg.namespace.clone(),
            schema: source::schema_for(cfg),
        }])
    }

    fn create(&self, _: &PipelineContext, cfg: DatagenConfig) -> Result<Box<dyn Source>> {
        Ok(Box::new(DatagenSource::new(cfg)))
    }
}
