//! Micro-batching of source output: consecutive batches of the same stream, topic and
//! schema are coalesced into one micro-batch.
//!
//! A micro-batch closes at `max_rows` or `max_bytes`, when the source has nothing more
//! ready right now, or when its first rows have waited `linger_ms`, whichever comes first.
//! So at low rates a change goes out as soon as it is read (no lingering for rows that are
//! not coming), and under load, when the source always has more ready, batches fill up to
//! `max_rows`. `linger_ms` bounds how long a source that keeps trickling rows can hold a
//! batch open.

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
            let polled = match self.first_at {
                // Nothing pending: wait for the source.
                None => Some(source.poll(room).await?),
                Some(first) => {
                    if self.settings.linger_ms == 0
                        || first.elapsed() >= Duration::from_millis(self.settings.linger_ms)
                    {
                        None
                    } else {
                        ready_now(source, room).await?
                    }
                }
            };
            match polled {
                // Nothing more ready, or lingered long enough: the micro-batch closes.
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
                    } else {
                        self.carry = Some(b);
                    }
                }
            }
        }
    }
}

/// What `source` has ready right now: its next batch if `poll` completes without waiting
/// (`Some`), else `None`, and the poll is dropped (sources' `poll` is cancel-safe). The
/// poll stays inside tokio's cooperative budget: a source that keeps reading without
/// producing a batch yields, the batch closes, and the task gets to acknowledgements and
/// shutdown; at worst a batch closes a little early.
async fn ready_now(source: &mut dyn Source, room: usize) -> Result<Option<Option<SourceBatch>>> {
    tokio::select! {
        biased;
        r = source.poll(room) => Ok(Some(r?)),
        () = std::future::ready(()) => Ok(None),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::batch::Position;
    use arrow::array::{Int64Array, RecordBatch};
    use arrow::datatypes::{DataType, Field, Schema};
    use async_trait::async_trait;
    use std::sync::Arc;

    /// Yields `ready` batches of `rows` rows at once, then waits forever (an idle source),
    /// or never runs dry with `ready: usize::MAX` (a source under load).
    struct Scripted {
        ready: usize,
        rows: usize,
        next: i64,
    }

    #[async_trait]
    impl Source for Scripted {
        async fn open(&mut self, _: Option<Position>) -> Result<()> {
            Ok(())
        }

        async fn poll(&mut self, max_rows: usize) -> Result<Option<SourceBatch>> {
            if self.ready == 0 {
                std::future::pending::<()>().await;
            }
            self.ready = self.ready.saturating_sub(1);
            let n = self.rows.min(max_rows) as i64;
            let schema = Arc::new(Schema::new(vec![Field::new("v", DataType::Int64, false)]));
            let batch = RecordBatch::try_new(
                schema,
                vec![Arc::new(Int64Array::from_iter_values(
                    self.next..self.next + n,
                ))],
            )?;
            self.next += n;
            Ok(Some(SourceBatch {
                batch,
                position: Position(serde_json::json!(self.next)),
                stream: None,
                topic: None,
            }))
        }

        async fn commit(&mut self, _: &Position) -> Result<()> {
            Ok(())
        }
    }

    fn settings(max_rows: usize, linger_ms: u64) -> BatchSettings {
        BatchSettings {
            max_rows,
            max_bytes: 1 << 30,
            linger_ms,
        }
    }

    fn rows(n: Next) -> usize {
        match n {
            Next::Batch(b) => b.batch.num_rows(),
            Next::Exhausted => 0,
        }
    }

    #[tokio::test(start_paused = true)]
    async fn a_batch_closes_when_the_source_has_nothing_more_ready() {
        // Three batches are ready, then nothing: the micro-batch holds all three and goes
        // out at once, without lingering (the clock, paused, would jump to the deadline).
        let mut source = Scripted {
            ready: 3,
            rows: 10,
            next: 0,
        };
        let mut b = Batcher::new(settings(8192, 3_600_000));
        let start = Instant::now();
        assert_eq!(rows(b.next(&mut source).await.unwrap()), 30);
        assert_eq!(
            Instant::now(),
            start,
            "it did not wait for the linger deadline"
        );
    }

    #[tokio::test(start_paused = true)]
    async fn under_load_batches_fill_up_to_max_rows() {
        let mut source = Scripted {
            ready: usize::MAX,
            rows: 10,
            next: 0,
        };
        let mut b = Batcher::new(settings(1000, 3_600_000));
        for _ in 0..3 {
            assert_eq!(rows(b.next(&mut source).await.unwrap()), 1000);
        }
    }

    #[tokio::test(start_paused = true)]
    async fn rows_that_are_not_ready_yet_are_not_waited_for() {
        // Each poll is ready only after 10 ms: the batch closes at the first poll found not
        // ready, so it holds one source batch (lingering 50 ms would have taken about five);
        // with linger 0 likewise.
        struct Trickle(Scripted);
        #[async_trait]
        impl Source for Trickle {
            async fn open(&mut self, _: Option<Position>) -> Result<()> {
                Ok(())
            }
            async fn poll(&mut self, max_rows: usize) -> Result<Option<SourceBatch>> {
                tokio::time::sleep(Duration::from_millis(10)).await;
                self.0.poll(max_rows).await
            }
            async fn commit(&mut self, _: &Position) -> Result<()> {
                Ok(())
            }
        }
        for linger in [0, 50] {
            let mut source = Trickle(Scripted {
                ready: usize::MAX,
                rows: 10,
                next: 0,
            });
            let mut b = Batcher::new(settings(1000, linger));
            assert_eq!(rows(b.next(&mut source).await.unwrap()), 10);
        }
    }
}
