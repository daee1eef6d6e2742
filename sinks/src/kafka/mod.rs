//! `kafka-sink`: writes the pipeline's rows to a Kafka topic.
//!
//! **Reads** batches from its topics. **Writes** one Kafka record per row
//! ([`rivven_kafka::Encoder`]): the value is the row as a JSON object written straight
//! from the columns (or the bytes of `value_column`), the key, headers and timestamp come
//! from the configured columns, the partition from `partition_column`, else the Java
//! client's murmur2 hash of the key, else one partition per batch in turn. Records of one
//! partition go out as one record batch (compressed with `compression`) once they reach
//! `batch_size_bytes`, and at every flush.
//!
//! **Guarantees**: at-least-once with `acks: all` or `1`: `flush` returns only after the
//! broker acknowledged every record accepted before it, and the runtime commits the
//! consumer offsets only after `flush`; a crash between the two sends the records
//! after the last commit again (duplicates in Kafka, never a gap). With `acks: 0`
//! nothing is acknowledged: at-most-once for records lost in flight. Rows whose
//! configured columns cannot become a key, headers or timestamp go to the dead-letter
//! topic with the reason.
//!
//! ```yaml
//! sinks:
//!   replica:
//!     connector: kafka-sink
//!     topics: [orders]
//!     consumer_group: kafka-replica
//!     config:
//!       brokers: ["127.0.0.1:9092"]
//!       topic: orders-replica
//!       compression: lz4
//!       acks: all
//!       key_column: id
//! ```

mod config;
mod sink;

pub use config::{Acks, KafkaSinkConfig};
pub use sink::KafkaSink;

use async_trait::async_trait;
use rivven_engine::connector::Sink;
use rivven_engine::registry::{Category, ConnectorInfo, PipelineContext, SinkConnector};
use rivven_engine::Result;

/// The `kafka-sink` connector, also registered as `external-sink` (the operator's name
/// for it).
#[derive(Debug, Clone, Copy)]
pub struct KafkaSinkConnector {
    name: &'static str,
}

impl KafkaSinkConnector {
    /// The connector under each of its names.
    pub fn all() -> [KafkaSinkConnector; 2] {
        ["kafka-sink", "external-sink"].map(|name| KafkaSinkConnector { name })
    }
}

#[async_trait]
impl SinkConnector for KafkaSinkConnector {
    type Config = KafkaSinkConfig;

    fn info(&self) -> ConnectorInfo {
        ConnectorInfo {
            name: self.name,
            category: Category::Messaging,
            description: if self.name == "kafka-sink" {
                "Apache Kafka producer (pure Rust, zero C deps)"
            } else {
                "kafka-sink under the operator's name"
            },
            tags: &["kafka", "messaging", "producer"],
        }
    }

    async fn check(&self, cfg: &KafkaSinkConfig) -> Result<String> {
        let client = rivven_kafka::Client::connect(cfg.client()?).await?;
        let topic = match client.partitions(&cfg.topic).await? {
            Some(n) => format!("topic {} ({n} partitions)", cfg.topic),
            None if cfg.create_topic => format!(
                "topic {} does not exist yet: created with {} partition(s) on start",
                cfg.topic, cfg.partitions
            ),
            None => {
                return Err(rivven_engine::Error::config(format!(
                    "kafka-sink: topic `{}` does not exist and create_topic is false",
                    cfg.topic
                )))
            }
        };
        Ok(format!("connected to {}; {topic}", cfg.brokers.join(",")))
    }

    fn create(&self, ctx: &PipelineContext, cfg: KafkaSinkConfig) -> Result<Box<dyn Sink>> {
        Ok(Box::new(KafkaSink::new(cfg, ctx.status.clone())))
    }
}
