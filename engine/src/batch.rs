//! The batch model: what flows between sources, the topic and sinks.
//!
//! Data is an Arrow [`RecordBatch`] from the moment a source decodes it until a sink encodes
//! it. A batch holds rows of one stream (one table, one schema). Change-data-capture sources
//! emit batches in the canonical change-event schema ([`change_event_schema`]); other sources
//! emit plain flat batches.

use arrow::array::RecordBatch;
use arrow::datatypes::{DataType, Field, Fields, Schema, SchemaRef, TimeUnit};
use serde::{Deserialize, Serialize};
use std::sync::Arc;

/// Schema metadata key naming the stream (table) a flat batch came from.
pub const META_STREAM: &str = "rivven.stream";
/// Schema metadata key naming the stream's namespace (schema / database).
pub const META_NAMESPACE: &str = "rivven.namespace";
/// Schema metadata key listing the record key columns, comma-separated (set by sources that
/// know the primary key, and by the `value_to_key` transform). For change-event batches the
/// names are columns of the row images.
pub const META_KEY: &str = "rivven.key";

/// An opaque, source-defined resume position (LSN, binlog coordinates, Kafka offsets, a
/// generator's sequence). Serialized as JSON in the topic log and the state dir, so it is
/// readable in `status` and on disk.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(transparent)]
pub struct Position(pub serde_json::Value);

/// A batch produced by a source, with the position to resume *after* it.
#[derive(Debug, Clone)]
pub struct SourceBatch {
    /// The rows.
    pub batch: RecordBatch,
    /// Resume position once this batch (and everything before it) is durable.
    pub position: Position,
    /// Stream (table) name; selects the topic partition so that one stream keeps its order.
    pub stream: Option<Arc<str>>,
    /// Topic override (topic routing); `None` writes to the source's configured topic.
    pub topic: Option<Arc<str>>,
}

/// A batch delivered to a sink, with where it was read from.
#[derive(Debug, Clone)]
pub struct SinkBatch {
    /// The rows.
    pub batch: RecordBatch,
    /// Topic the rows were read from.
    pub topic: Arc<str>,
    /// Partition within the topic.
    pub partition: u32,
    /// Offset of the first row; row `i` has offset `first_offset + i` unless sink-side
    /// transforms dropped or split rows (then it is the offset of the first row of the topic
    /// batch these rows came from).
    pub first_offset: u64,
    /// Offset after the last row of the topic batch these rows came from: the same for
    /// every piece a sink-side transform made of it, whatever rows it dropped.
    pub end_offset: u64,
    /// Time the batch was appended to the topic (ms since the Unix epoch).
    pub append_time_ms: i64,
    /// Destination chosen by a sink-side router transform (`None`: none ran). Sinks that
    /// write per destination (object-storage prefixes, tables) use it in place of `topic`.
    pub route: Option<Arc<str>>,
}

impl SinkBatch {
    /// Offset after the last row of the topic batch: the consumer offset to commit once
    /// this batch is durable.
    pub fn next_offset(&self) -> u64 {
        self.end_offset
    }

    /// Whether row `i` has offset `first_offset + i` (no sink-side transform dropped or
    /// split rows of the topic batch).
    pub fn rows_are_offsets(&self) -> bool {
        self.end_offset - self.first_offset == self.batch.num_rows() as u64
    }
}

/// Change-event operation codes (Debezium-compatible).
pub mod op {
    /// Insert.
    pub const CREATE: &str = "c";
    /// Update.
    pub const UPDATE: &str = "u";
    /// Delete.
    pub const DELETE: &str = "d";
    /// Snapshot read.
    pub const READ: &str = "r";
    /// Truncate.
    pub const TRUNCATE: &str = "t";
}

/// The fields of the `source` struct of a change event.
pub fn change_event_source_fields() -> Fields {
    Fields::from(vec![
        Field::new("connector", DataType::Utf8, false),
        Field::new("db", DataType::Utf8, true),
        Field::new("schema", DataType::Utf8, true),
        Field::new("table", DataType::Utf8, true),
        Field::new("pos", DataType::Utf8, true),
        Field::new("txid", DataType::Int64, true),
        Field::new("ts_ms", DataType::Int64, true),
        Field::new("snapshot", DataType::Boolean, false),
    ])
}

/// The canonical change-event schema for a table with the given columns:
/// `op`, `before`, `after`, `source`, `ts_ms` (see ARCHITECTURE.md).
pub fn change_event_schema(table_columns: Fields) -> SchemaRef {
    Arc::new(Schema::new(vec![
        Field::new("op", DataType::Utf8, false),
        Field::new("before", DataType::Struct(table_columns.clone()), true),
        Field::new("after", DataType::Struct(table_columns), true),
        Field::new(
            "source",
            DataType::Struct(change_event_source_fields()),
            false,
        ),
        Field::new("ts_ms", DataType::Int64, false),
    ]))
}

/// Whether a schema has the change-event shape.
pub fn is_change_event_schema(schema: &Schema) -> bool {
    ["op", "before", "after", "source"]
        .iter()
        .all(|n| schema.field_with_name(n).is_ok())
}

/// Wall-clock time in milliseconds since the Unix epoch (0 if the clock is before it).
pub fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as i64)
}

/// Millisecond UTC timestamps, the type sources use for wall-clock instants.
pub fn timestamp_ms_utc() -> DataType {
    DataType::Timestamp(TimeUnit::Millisecond, Some("UTC".into()))
}

/// Approximate in-memory size of a batch, used to bound queues and batches by bytes.
pub fn batch_bytes(batch: &RecordBatch) -> usize {
    batch.get_array_memory_size()
}
