//! `kafka-source`: reads Kafka topics into the pipeline's topic.
//!
//! **Reads** every partition of `topic` / `topics` from the partitions' leaders (one fetch
//! request per leader, all partitions in it), from the position kept in the pipeline's
//! topic, else the `consumer_group`'s committed offsets, else `start_offset`.
//! **Writes** one batch per fetched run of one partition (at most `fetch_max_messages`
//! rows), decoded by [`rivven_kafka::Decoder`]: JSON values into columns (a declared
//! `schema`, or one inferred and widened as new fields appear), or the raw value as
//! text or bytes; with `include_metadata`, the key, topic, partition, offset, timestamp
//! and headers as `__kafka_*` columns. Each Kafka partition is one stream, so its order
//! is kept in the pipeline's topic. A record that does not decode goes to the
//! dead-letter topic with the reason and its raw value.
//!
//! **Guarantees**: every batch carries the next offset of every partition; the runtime
//! stores it with the batch in the embedded topic, so a restart resumes exactly after
//! the last durable batch (no loss, no duplicate into the embedded topic). Offsets are
//! committed to the `consumer_group` only after the batches up to them are durable
//! (`Source::commit`), as a standalone consumer (no group membership yet): they show
//! the group's progress to Kafka tooling and seed a first start. Partitions added to a
//! topic are picked up at the next start.
//!
//! ```yaml
//! sources:
//!   orders:
//!     connector: kafka-source
//!     topic: orders-in
//!     config:
//!       brokers: ["127.0.0.1:9092"]
//!       topic: orders
//!       consumer_group: rivven-orders
//!       start_offset: earliest
//! ```

mod config;
mod source;

pub use config::{ColumnSpec, KafkaSourceConfig};
pub use source::KafkaSource;

use async_trait::async_trait;
use rivven_engine::connector::{Source, StreamInfo};
use rivven_engine::registry::{Category, ConnectorInfo, PipelineContext, SourceConnector};
use rivven_engine::{Error, Result};

/// The `kafka-source` connector, also registered as `external-source` (the operator's
/// name for it).
#[derive(Debug, Clone, Copy)]
pub struct KafkaSourceConnector {
    name: &'static str,
}

impl KafkaSourceConnector {
    /// The connector under each of its names.
    pub fn all() -> [KafkaSourceConnector; 2] {
        ["kafka-source", "external-source"].map(|name| KafkaSourceConnector { name })
    }
}

#[async_trait]
impl SourceConnector for KafkaSourceConnector {
    type Config = KafkaSourceConfig;

    fn info(&self) -> ConnectorInfo {
        ConnectorInfo {
            name: self.name,
            category: Category::Messaging,
            description: if self.name == "kafka-source" {
                "Apache Kafka consumer (pure Rust, zero C deps)"
            } else {
                "kafka-source under the operator's name"
            },
            tags: &["kafka", "messaging", "consumer"],
        }
    }

    async fn check(&self, cfg: &KafkaSourceConfig) -> Result<String> {
        let client = rivven_kafka::Client::connect(cfg.client()?).await?;
        let mut parts = Vec::new();
        let topics = cfg.all_topics(&client).await?;
        if topics.is_empty() {
            return Err(Error::config(format!(
                "kafka-source: topic_pattern matches no topic on {}",
                cfg.brokers.join(",")
            )));
        }
        for t in topics {
            match client.partitions(&t).await? {
                Some(n) => parts.push(format!("{t} ({n} partitions)")),
                None => {
                    return Err(Error::config(format!(
                        "kafka-source: topic `{t}` does not exist on {}",
                        cfg.brokers.join(",")
                    )))
                }
            }
        }
        Ok(format!(
            "connected to {}; {}",
            cfg.brokers.join(","),
            parts.join(", ")
        ))
    }

    async fn discover(&self, cfg: &KafkaSourceConfig) -> Result<Vec<StreamInfo>> {
        let schema = cfg
            .declared_schema()
            .map_err(Error::config)?
            .unwrap_or_else(|| std::sync::Arc::new(arrow::datatypes::Schema::empty()));
        Ok(cfg
            .named_topics()
            .into_iter()
            .map(|t| StreamInfo {
                name: t,
                namespace: None,
                schema: schema.clone(),
            })
            .collect())
    }

    fn create(&self, ctx: &PipelineContext, cfg: KafkaSourceConfig) -> Result<Box<dyn Source>> {
        Ok(Box::new(KafkaSource::new(
            cfg,
            ctx.dead_letter_topic.clone(),
        )?))
    }
}
