//! The `kafka-source` [`Source`]: fetches every partition of its topics from the
//! partitions' leaders, decodes each partition's records into one batch per fetch, and
//! keeps the next offset of every partition in its position.

use super::config::KafkaSourceConfig;
use rivven_engine::batch::{Position, SourceBatch};
use rivven_engine::connector::Source;
use rivven_engine::{Error, Result};
use rivven_kafka::client::OffsetAt;
use rivven_kafka::{Client, Decoder, Fetched, Record};
use std::collections::{BTreeMap, VecDeque};
use std::sync::Arc;
use std::time::Duration;
use tokio::task::JoinHandle;

/// Next offset to read, per topic and partition.
type Offsets = BTreeMap<String, BTreeMap<i32, i64>>;

/// A fetch of every partition, running in a task of its own.
type FetchTask = JoinHandle<Result<Vec<(String, i32, Fetched)>>>;

/// Reads Kafka topics into batches.
pub struct KafkaSource {
    cfg: KafkaSourceConfig,
    dead_letter: Option<Arc<str>>,
    client: Option<Arc<Client>>,
    decoder: Decoder,
    /// Next offset of every partition, as of the last batch handed out.
    next: Offsets,
    /// Batches decoded but not yet handed out.
    ready: VecDeque<SourceBatch>,
    /// The fetch in flight: kept across dropped `poll`s (cancel safety).
    inflight: Option<FetchTask>,
}

impl KafkaSource {
    /// A source of `cfg`; records that do not decode go to `dead_letter` (or fail the
    /// pipeline without one).
    pub fn new(cfg: KafkaSourceConfig, dead_letter: Option<String>) -> Result<Self> {
        let schema = cfg.declared_schema().map_err(Error::config)?;
        Ok(KafkaSource {
            decoder: Decoder::new(cfg.format, schema, cfg.include_metadata),
            cfg,
            dead_letter: dead_letter.map(Arc::from),
            client: None,
            next: Offsets::new(),
            ready: VecDeque::new(),
            inflight: None,
        })
    }

    fn position(&self) -> Position {
        Position(serde_json::json!({ "offsets": self.next }))
    }

    fn client(&self) -> Result<Arc<Client>> {
        self.client
            .clone()
            .ok_or_else(|| Error::internal("kafka-source: used before open"))
    }

    /// Turn one partition's fetched records into batches (and dead-letter rows), each
    /// carrying the position after it.
    fn take(
        &mut self,
        topic: &str,
        partition: i32,
        fetched: Fetched,
        max_rows: usize,
    ) -> Result<()> {
        let max = self.cfg.fetch_max_messages.min(max_rows).max(1);
        if fetched.records.is_empty() {
            // Only control records or nothing: move past them without a batch.
            if let Some(n) = self.next.get_mut(topic).and_then(|p| p.get_mut(&partition)) {
                *n = (*n).max(fetched.next_offset);
            }
            return Ok(());
        }
        let stream: Arc<str> = Arc::from(format!("{topic}/{partition}"));
        let chunks: Vec<&[Record]> = fetched.records.chunks(max).collect();
        let last_chunk = chunks.len() - 1;
        for (i, chunk) in chunks.into_iter().enumerate() {
            let decoded = self.decoder.decode(chunk, topic, partition)?;
            let end = if i == last_chunk {
                fetched.next_offset
            } else {
                chunk
                    .last()
                    .map(|r| r.offset + 1)
                    .unwrap_or(fetched.next_offset)
            };
            if let Some(n) = self.next.get_mut(topic).and_then(|p| p.get_mut(&partition)) {
                *n = (*n).max(end);
            }
            for (rows, reason) in decoded.failed {
                let Some(dlq) = &self.dead_letter else {
                    return Err(Error::data(format!(
                        "kafka-source: a record of {topic}/{partition} does not decode: {reason} \
                         (set dead_letter_topic to keep such records instead of failing)"
                    ))
                    .retryable(false));
                };
                let rows =
                    rivven_engine::dead_letter::rows(&rows, &reason, "kafka-source decode", topic)?;
                self.ready.push_back(SourceBatch {
                    batch: rows,
                    position: self.position(),
                    stream: Some(stream.clone()),
                    topic: Some(dlq.clone()),
                });
            }
            if let Some(rows) = decoded.rows {
                self.ready.push_back(SourceBatch {
                    batch: rows,
                    position: self.position(),
                    stream: Some(stream.clone()),
                    topic: None,
                });
            }
        }
        Ok(())
    }
}

#[async_trait::async_trait]
impl Source for KafkaSource {
    async fn open(&mut self, position: Option<Position>) -> Result<()> {
        let client = Arc::new(Client::connect(self.cfg.client()?).await?);
        let resumed: Offsets = match &position {
            Some(p) => serde_json::from_value(p.0.get("offsets").cloned().unwrap_or_default())
                .map_err(|e| {
                    Error::state(format!("kafka-source: unreadable position {}: {e}", p.0))
                })?,
            None => Offsets::new(),
        };
        let mut next = Offsets::new();
        let topics = self.cfg.all_topics(&client).await?;
        if topics.is_empty() {
            return Err(
                Error::config("kafka-source: topic_pattern matches no topic").retryable(true),
            );
        }
        for topic in topics {
            let n = client.partitions(&topic).await?.ok_or_else(|| {
                Error::config(format!("kafka-source: topic `{topic}` does not exist"))
                    .retryable(true)
            })?;
            let parts: Vec<i32> = (0..n as i32).collect();
            let committed = match &self.cfg.consumer_group {
                Some(g) => client.committed_offsets(g, &topic, &parts).await?,
                None => Default::default(),
            };
            let mut offsets = BTreeMap::new();
            for p in parts {
                let at = match (
                    resumed.get(&topic).and_then(|t| t.get(&p)),
                    committed.get(&p),
                ) {
                    (Some(o), _) => *o,
                    (None, Some(o)) => *o,
                    (None, None) => {
                        let at = match self.cfg.start_offset {
                            rivven_engine::config::StartOffset::Earliest => OffsetAt::Earliest,
                            rivven_engine::config::StartOffset::Latest => OffsetAt::Latest,
                            rivven_engine::config::StartOffset::Timestamp(ms) => OffsetAt::Time(ms),
                        };
                        client.list_offset(&topic, p, at).await?
                    }
                };
                offsets.insert(p, at);
            }
            next.insert(topic, offsets);
        }
        tracing::info!(offsets = ?next, "kafka-source: reading");
        self.next = next;
        self.client = Some(client);
        self.ready.clear();
        self.inflight = None;
        Ok(())
    }

    async fn poll(&mut self, max_rows: usize) -> Result<Option<SourceBatch>> {
        loop {
            if let Some(b) = self.ready.pop_front() {
                return Ok(Some(b));
            }
            if self.inflight.is_none() {
                let client = self.client()?;
                let wanted: Vec<(String, i32, i64)> = self
                    .next
                    .iter()
                    .flat_map(|(t, ps)| ps.iter().map(move |(p, o)| (t.clone(), *p, *o)))
                    .collect();
                let max_bytes = i32::try_from(self.cfg.fetch_max_bytes).unwrap_or(i32::MAX);
                let wait = Duration::from_millis(self.cfg.fetch_max_wait_ms);
                self.inflight = Some(tokio::spawn(async move {
                    client.fetch_many(&wanted, max_bytes, wait).await
                }));
            }
            let Some(handle) = self.inflight.as_mut() else {
                continue;
            };
            let result = handle
                .await
                .map_err(|e| Error::internal(format!("kafka-source: fetch task: {e}")));
            self.inflight = None;
            for (topic, partition, fetched) in result?? {
                self.take(&topic, partition, fetched, max_rows)?;
            }
        }
    }

    async fn commit(&mut self, position: &Position) -> Result<()> {
        let Some(group) = &self.cfg.consumer_group else {
            return Ok(());
        };
        let offsets: Offsets =
            serde_json::from_value(position.0.get("offsets").cloned().unwrap_or_default())
                .map_err(|e| Error::state(format!("kafka-source: unreadable position: {e}")))?;
        let list: Vec<(String, i32, i64)> = offsets
            .into_iter()
            .flat_map(|(t, ps)| ps.into_iter().map(move |(p, o)| (t.clone(), p, o)))
            .collect();
        self.client()?.commit_offsets(group, &list).await
    }
}

impl Drop for KafkaSource {
    fn drop(&mut self) {
        if let Some(h) = self.inflight.take() {
            h.abort();
        }
    }
}
