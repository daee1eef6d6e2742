//! The connector traits: [`Source`], [`Transform`] and [`Sink`].
//!
//! The runtime drives each connector from its own task. The traits are deliberately small;
//! optional capabilities get their own traits rather than more hooks here.

use crate::batch::{Position, SinkBatch, SourceBatch};
use crate::error::Result;
use arrow::array::RecordBatch;
use arrow::datatypes::SchemaRef;
use async_trait::async_trait;
use std::sync::Arc;

/// A stream a source can produce, with its Arrow schema (the answer to `discover`).
#[derive(Debug, Clone)]
pub struct StreamInfo {
    /// Stream (table) name.
    pub name: String,
    /// Namespace (schema, database), if the source has one.
    pub namespace: Option<String>,
    /// The Arrow schema of the batches this stream produces.
    pub schema: SchemaRef,
}

/// A source of batches.
///
/// # Contract
/// - **Ordering**: batches of one stream are returned in source order; the runtime keeps that
///   order in the topic (one stream maps to one partition).
/// - **Positions**: every batch carries the position to resume *after* it. The runtime
///   persists that position atomically with the batch in the topic, then calls
///   [`Source::commit`]. A source must acknowledge upstream (confirm an LSN, delete a queue
///   message) only in `commit`, never earlier, so that nothing is lost if the process dies.
/// - **Delivery**: at-least-once from the upstream system into the topic in general; with the
///   embedded topic log, whose appends carry the position, a restart resumes exactly after the
///   last durable batch. Upstream acknowledgements may lag behind (a crash between append and
///   `commit` replays nothing, because the resume position comes from the topic).
/// - **Cancellation**: [`Source::poll`] must be cancel-safe: if its future is dropped at any
///   await, no data may be lost and no state may be left half-updated. The runtime drops it
///   often: on every acknowledgement (to call [`Source::commit`]), when a micro-batch lingers
///   out, and on shutdown. Keep decoded data in `self` before awaiting, and run multi-step
///   exchanges with a server as spawned tasks whose handles `poll` awaits.
#[async_trait]
pub trait Source: Send {
    /// Prepare to read, resuming after `position` (`None`: first start).
    async fn open(&mut self, position: Option<Position>) -> Result<()>;

    /// The next batch of at most `max_rows` rows. `Ok(None)` means the source is exhausted
    /// (bounded sources only); unbounded sources wait until data is available.
    async fn poll(&mut self, max_rows: usize) -> Result<Option<SourceBatch>>;

    /// Everything up to and including `position` is durable downstream; the source may now
    /// acknowledge it upstream. Positions arrive in the order their batches were polled.
    async fn commit(&mut self, position: &Position) -> Result<()>;
}

/// One output of a [`Transform`]: rows, and where a router sent them.
#[derive(Debug, Clone)]
pub struct Routed {
    /// The rows.
    pub batch: RecordBatch,
    /// Destination chosen by a router (a topic on the source side; a destination name, such
    /// as an object-storage prefix, on the sink side). `None`: unchanged.
    pub topic: Option<Arc<str>>,
    /// Partition chosen by a partitioner (source side). `None`: the runtime's default,
    /// one partition per stream.
    pub partition: Option<PartitionChoice>,
    /// Rows a transform failed on, bound for the dead-letter topic named by `topic`. The
    /// runtime appends them to that topic of its own log (on the sink side too) instead of
    /// handing them on.
    pub dead_letter: bool,
}

impl Routed {
    /// Rows bound for `topic` (`None`: unchanged), with no partition choice.
    pub fn new(batch: RecordBatch, topic: Option<Arc<str>>) -> Self {
        Self {
            batch,
            topic,
            partition: None,
            dead_letter: false,
        }
    }
}

/// A partitioner's choice for a batch: partition `partition` of a topic that has `of`
/// partitions. The runtime creates a missing topic with `of` partitions; on an existing
/// topic with another count it writes to `partition % count` (so a key still maps to one
/// partition) and warns once.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PartitionChoice {
    /// Partition index, below `of`.
    pub partition: u32,
    /// The partition count the choice was made for.
    pub of: u32,
}

/// A chain of transforms over batches, compiled once per input schema.
///
/// # Contract
/// - Rows keep their relative order within each output batch, and outputs are returned in
///   input order: a transform that changes the schema of only some rows (a conditional
///   transform) splits the batch into consecutive runs rather than reordering.
/// - A transform may drop rows (filters) or split a batch by destination (routers); it never
///   holds rows back across calls, so positions and offsets stay exact.
/// - Errors are data errors naming the transform; they never panic.
pub trait Transform: Send {
    /// Transform one batch currently bound for `topic`.
    fn apply(&mut self, batch: RecordBatch, topic: &str) -> Result<Vec<Routed>>;
}

/// A sink of batches.
///
/// # Contract
/// - **Ordering**: batches of one topic partition arrive in offset order.
/// - **Accepted vs durable**: [`Sink::write`] returning `Ok` means the batch is *accepted*
///   (buffered or in flight); after [`Sink::flush`] returns `Ok`, everything accepted so far
///   is *durable* in the destination. The runtime advances consumer offsets only after
///   `flush`, so a crash re-delivers what was accepted but not flushed: sinks are
///   **at-least-once** unless they document otherwise (exactly-once sinks store the offsets
///   in their own commit).
/// - On error the runtime drops the sink, waits with backoff, creates a new one and
///   re-delivers from the last committed offsets.
///
/// # Flush cadence
/// By default ([`FlushWhen::Idle`]) the runtime flushes whenever the sink's queue drains and
/// at least every `settings.commit_interval_ms`. Sinks whose output unit is costly to cut
/// (files, table commits) report their own cadence through [`Sink::flush_when`], asked after
/// every write.
#[async_trait]
pub trait Sink: Send {
    /// Called once per attempt, before the first write, with the committed offset of every
    /// assigned topic partition: re-delivery starts there. Sinks that commit their own
    /// output use it to discard output of a commit that had not completed (its rows will be
    /// delivered again).
    ///
    /// Returns the offsets that the sink's own durable commits cover, for sinks that store
    /// them inside each commit (a table snapshot's summary, a Delta `txn` action, an offsets
    /// table written in the same transaction). Where one is ahead of the committed offset
    /// of its partition, the sink crashed between its commit and the consumer-offset
    /// commit: the runtime resumes at the sink's offset, and commits it for the group, so
    /// those rows are not written twice. Offsets behind the committed ones, or of
    /// partitions not assigned, are ignored; one past the end of the topic is an error.
    /// Default: none.
    async fn open(&mut self, committed: &[Committed]) -> Result<Vec<Committed>> {
        let _ = committed;
        Ok(Vec::new())
    }

    /// Accept one batch. Rows the sink cannot write because of what they hold (a column
    /// type its table cannot take, a null key), as opposed to a failure of the target,
    /// are handed back through [`Sink::take_rejected`] rather than failing the batch.
    async fn write(&mut self, batch: &SinkBatch) -> Result<()>;

    /// Rows refused since the last call, each group with the reason, asked after every
    /// write. The runtime appends them to the sink's `dead_letter_topic` (durably, before
    /// the offsets can move past them) or, without one, fails the batch with the reason.
    /// Default: none.
    fn take_rejected(&mut self) -> Vec<Rejected> {
        Vec::new()
    }

    /// Make everything accepted so far durable.
    async fn flush(&mut self) -> Result<()>;

    /// When the sink wants its next flush, asked after every write. Default:
    /// [`FlushWhen::Idle`].
    fn flush_when(&self) -> FlushWhen {
        FlushWhen::Idle
    }
}

/// Rows a sink refused, and why (see [`Sink::take_rejected`]).
#[derive(Debug, Clone)]
pub struct Rejected {
    /// The rows, as the sink received them.
    pub rows: arrow::array::RecordBatch,
    /// What is wrong with them, naming the column or value.
    pub reason: String,
}

/// The committed consumer offset of one topic partition, handed to [`Sink::open`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Committed {
    /// Topic.
    pub topic: String,
    /// Partition.
    pub partition: u32,
    /// Offset of the next row to deliver.
    pub offset: u64,
}

/// A sink's answer to "when should the runtime flush next?".
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FlushWhen {
    /// The runtime's cadence: when the queue drains, and at least every commit interval.
    Idle,
    /// As soon as the current write returns (an output unit is full).
    Now,
    /// No later than this instant (for example, when the oldest open file reaches its age
    /// limit); not earlier unless the queue closes.
    At(std::time::Instant),
}
