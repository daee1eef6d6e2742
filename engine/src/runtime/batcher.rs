//! Micro-batching of source output: consecutive batches of the same stream, topic and
//! schema are coalesced until `max_rows`, `max_bytes` or `linger_ms` is reached.

use crate::batch::{batch_bytes, SourceBatch};
use crate::config::BatchSettings;
use crate::connector::Source;
use crate::error::Result;
use std::time::Duration;
use tokio::time::Instant;

/// What [`Batcher::next`] produced.
pub enum Next {
    /// A batch ready for the topic.
    Batch(SourceBatch),
    /// The source is exhausted and everything it produced has been returned.
    Exhausted,
}

/// Accumulates polled batches. The pending rows live in `self`, not in the future returned by
/// [`Batcher::next`], so dropping that future (shutdown, an ack arriving) loses nothing.
pub struct Batcher {
    settings: BatchSettings,
    pending: Vec<SourceBatch>,
    pending_rows: usize,
    pending_bytes: usize,
    first_at: Option<Instant>,
    /// A polled batch that did not fit the pending one (other stream/schema).
    carry: Option<SourceBatch>,
    exhausted: bool,
}

fn same_target(a: &SourceBatch, b: &SourceBatch) -> bool {
    a.stream == b.stream && a.topic == b.topic && a.batch.schema() == b.batch.schema()
}

impl Batcher {
    /// A new batcher.
    pub fn new(settings: BatchSettings) -> Self {
        Self {
            settings,
            pending: Vec::new(),
            pending_rows: 0,
            pending_bytes: 0,
            first_at: None,
            carry: None,
            exhausted: false,
        }
    }

    fn push(&mut self, b: SourceBatch) {
        if self.pending.is_empty() {
            self.first_at = Some(Instant::now());
        }
        self.pending_rows += b.batch.num_rows();
        self.pending_bytes += batch_bytes(&b.batch);
        self.pending.push(b);
    }

    fn take(&mut self) -> Result<Option<SourceBatch>> {
        if self.pending.is_empty() {
            return Ok(None);
        }
        let mut parts = std::mem::take(&mut self.pending);
        self.pending_rows = 0;
        self.pending_bytes = 0;
        self.first_at = None;
        if let Some(c) = self.carry.take() {
            self.push(c);
        }
        if parts.len() == 1 {
            return Ok(parts.pop());
        }
        let Some(last) = parts.last() else {
            return Ok(None);
        };
        let (position, stream, topic, schema) = (
            last.position.clone(),
            last.stream.clone(),
            last.topic.clone(),
            last.batch.schema(),
        );
        let batch = arrow::compute::concat_batches(&schema, parts.iter().map(|p| &p.batch))?;
        Ok(Some(SourceBatch {
            batch,
            position,
            stream,
            topic,
        }))
    }

    fn full(&self) -> bool {
        self.pending_rows >= self.settings.max_rows
            || self.pending_bytes >= self.settings.max_bytes
            || self.carry.is_some()
    }

    /// The next batch for the topic. Cancel-safe if the source's `poll` is.
    pub async fn next(&mut self, source: &mut dyn Source) -> Result<Next> {
        loop {
            if self.full() || (self.exhausted && !self.pending.is_empty()) {
                if let Some(b) = self.take()? {
                    return Ok(Next::Batch(b));
                }
            }
            if self.exhausted {
                return Ok(Next::Exhausted);
            }
            let room = self
                .settings
                .max_rows
                .saturating_sub(self.pending_rows)
                .max(1);
            let deadline = self
                .first_at
                .map(|t| t + Duration::from_millis(self.settings.linger_ms));
            let polled = match deadline {
                Some(d) => tokio::select! {
                    r = source.poll(room) => Some(r?),
                    _ = tokio::time::sleep_until(d) => None,
                },
                None => Some(source.poll(room).await?),
            };
            match polled {
                // Linger elapsed.
                None => {
                    if let Some(b) = self.take()? {
                        return Ok(Next::Batch(b));
                    }
                }
                Some(None) => self.exhausted = true,
                Some(Some(b)) => {
                    let fits = self.pending.first().is_none_or(|p| same_target(p, &b));
                    if fits {
                        self.push(b);
                        if self.settings.linger_ms == 0 {
                            if let Some(b) = self.take()? {
                                return Ok(Next::Batch(b));
                            }
                        }
                    } else {
                        self.carry = Some(b);
                    }
                }
            }
        }
    }
}
