//! The `kafka-sink` [`Sink`]: rows → records ([`rivven_kafka::Encoder`]) kept per
//! partition, sent as one record batch per partition and request when a partition holds
//! `batch_size_bytes`, and at every flush. With `idempotence`, each batch carries the
//! producer id, epoch and per-partition sequence numbers, so the broker writes a retried
//! batch once.

use super::config::KafkaSinkConfig;
use async_trait::async_trait;
use bytes::Bytes;
use rivven_engine::batch::SinkBatch;
use rivven_engine::connector::{FlushWhen, Rejected, Sink};
use rivven_engine::status::PipelineStatus;
use rivven_engine::{Error, ErrorKind, Result};
use rivven_kafka::{records, Client, Encoder, Record};
use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

/// Writes rows to a Kafka topic.
pub struct KafkaSink {
    cfg: KafkaSinkConfig,
    status: Arc<PipelineStatus>,
    client: Option<Arc<Client>>,
    partitions: usize,
    encoder: Encoder,
    /// Records accepted and not yet sent, per partition, with their size estimate.
    pending: BTreeMap<i32, (Vec<Record>, usize)>,
    first_at: Option<Instant>,
    rejected: Vec<Rejected>,
    /// Idempotent producer id and epoch (with `idempotence`), from `open`.
    producer: Option<(i64, i16)>,
    /// Next sequence number per partition of the idempotent producer.
    sequences: BTreeMap<i32, i32>,
    records_sent: u64,
    bytes_sent: u64,
    requests: u64,
}

impl KafkaSink {
    /// A sink of `cfg` reporting to `status`.
    pub fn new(cfg: KafkaSinkConfig, status: Arc<PipelineStatus>) -> Self {
        KafkaSink {
            encoder: Encoder::new(cfg.encode_options()),
            cfg,
            status,
            client: None,
            partitions: 1,
            pending: BTreeMap::new(),
            first_at: None,
            rejected: Vec::new(),
            producer: None,
            sequences: BTreeMap::new(),
            records_sent: 0,
            bytes_sent: 0,
            requests: 0,
        }
    }

    fn client(&self) -> Result<Arc<Client>> {
        self.client
            .clone()
            .ok_or_else(|| Error::internal("kafka-sink: used before open"))
    }

    /// Send the pending records of `parts` (one record batch each) in one request per
    /// leader, and wait for the broker's acknowledgement (`acks`).
    async fn send(&mut self, parts: &[i32]) -> Result<()> {
        let mut batches: Vec<(i32, Bytes)> = Vec::new();
        let mut next_sequences = Vec::new();
        let mut n = 0u64;
        for p in parts {
            if let Some((mut recs, _)) = self.pending.remove(p) {
                if recs.is_empty() {
                    continue;
                }
                n += recs.len() as u64;
                let sequenced = self.producer.map(|(producer_id, producer_epoch)| {
                    let base_sequence = self.sequences.get(p).copied().unwrap_or(0);
                    next_sequences.push((*p, records::sequence_after(base_sequence, recs.len())));
                    records::Sequenced {
                        producer_id,
                        producer_epoch,
                        base_sequence,
                    }
                });
                batches.push((
                    *p,
                    records::encode(&mut recs, self.cfg.compression, sequenced)?,
                ));
            }
        }
        if batches.is_empty() {
            return Ok(());
        }
        let bytes: u64 = batches.iter().map(|(_, b)| b.len() as u64).sum();
        let started = Instant::now();
        self.client()?
            .produce(&self.cfg.topic, &batches, self.cfg.acks.wire())
            .await?;
        // Only once the broker has the batches: a failed send ends this sink (the runtime
        // opens a new one, with a new producer id, and sends from the committed offsets).
        self.sequences.extend(next_sequences);
        self.records_sent += n;
        self.bytes_sent += bytes;
        self.requests += 1;
        let labels = [("topic", self.cfg.topic.as_str())];
        self.status
            .set_gauge("kafka_sink_records_sent", &labels, self.records_sent as f64);
        self.status
            .set_gauge("kafka_sink_bytes_sent", &labels, self.bytes_sent as f64);
        self.status
            .set_gauge("kafka_sink_requests", &labels, self.requests as f64);
        self.status.set_gauge(
            "kafka_sink_last_request_ms",
            &labels,
            started.elapsed().as_secs_f64() * 1000.0,
        );
        Ok(())
    }
}

#[async_trait]
impl Sink for KafkaSink {
    async fn open(
        &mut self,
        _committed: &[rivven_engine::connector::Committed],
    ) -> Result<Vec<rivven_engine::connector::Committed>> {
        let client = Client::connect(self.cfg.client()?).await?;
        self.partitions = if self.cfg.create_topic {
            client
                .ensure_topic(&self.cfg.topic, self.cfg.partitions, &[])
                .await?
        } else {
            client.partitions(&self.cfg.topic).await?.ok_or_else(|| {
                Error::config(format!(
                    "kafka-sink: topic `{}` does not exist (and create_topic is false)",
                    self.cfg.topic
                ))
            })?
        };
        self.producer = if self.cfg.idempotent() {
            Some(client.init_producer_id().await?)
        } else {
            None
        };
        self.sequences.clear();
        self.client = Some(Arc::new(client));
        self.pending.clear();
        self.first_at = None;
        Ok(Vec::new())
    }

    async fn write(&mut self, b: &SinkBatch) -> Result<()> {
        if b.batch.num_rows() == 0 {
            return Ok(());
        }
        let encoded = match self
            .encoder
            .encode(&b.batch, self.partitions, b.append_time_ms)
        {
            Ok(e) => e,
            Err(e) if e.kind() == ErrorKind::Data => {
                self.rejected.push(Rejected {
                    rows: b.batch.clone(),
                    reason: e.to_string(),
                });
                return Ok(());
            }
            Err(e) => return Err(e),
        };
        let mut full = Vec::new();
        for (p, recs) in encoded {
            let size: usize = recs
                .iter()
                .map(|r| {
                    r.key.as_ref().map_or(0, |k| k.len())
                        + r.value.as_ref().map_or(0, |v| v.len())
                        + r.headers
                            .iter()
                            .map(|(k, v)| k.len() + v.as_ref().map_or(0, |v| v.len()))
                            .sum::<usize>()
                        + 16
                })
                .sum();
            let slot = self.pending.entry(p).or_default();
            slot.0.extend(recs);
            slot.1 += size;
            if slot.1 >= self.cfg.batch_size_bytes {
                full.push(p);
            }
        }
        self.first_at.get_or_insert_with(Instant::now);
        if !full.is_empty() {
            self.send(&full).await?;
        }
        Ok(())
    }

    fn take_rejected(&mut self) -> Vec<Rejected> {
        std::mem::take(&mut self.rejected)
    }

    async fn flush(&mut self) -> Result<()> {
        let parts: Vec<i32> = self.pending.keys().copied().collect();
        self.send(&parts).await?;
        self.first_at = None;
        Ok(())
    }

    fn flush_when(&self) -> FlushWhen {
        match self.first_at {
            Some(t) => FlushWhen::At(t + Duration::from_millis(self.cfg.linger_ms)),
            None => FlushWhen::Idle,
        }
    }
}
