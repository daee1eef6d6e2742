//! A topic of the embedded log as a DataFusion table, for Flight SQL.
//!
//! Columns: the data columns of the topic's newest batch (all nullable: older batches that
//! lack a column read it as null, and a column whose type was widened since is cast), then
//! three metadata columns, unless a data column already has the name:
//!
//! | column       | type                        | value                               |
//! |--------------|-----------------------------|-------------------------------------|
//! | `_partition` | Int32                       | the row's partition                 |
//! | `_offset`    | Int64                       | the row's offset in its partition   |
//! | `_timestamp` | Timestamp(ms, UTC)          | when its batch was appended         |
//!
//! The scan reads only what a query needs: comparisons of `_offset` with constants (`=`,
//! `<`, `<=`, `>`, `>=`, `BETWEEN`) and `_partition = N` / `IN (...)` select the offset
//! ranges to read and are applied exactly, `_timestamp >` / `>=` finds the first offset
//! through the log's time index (the filter is still applied to the rows), and a `LIMIT`
//! over exactly applied filters stops reading once enough rows are out. Reading starts with
//! one frame and doubles, so a small `LIMIT` reads one frame. The rows are those durable
//! when the query was planned. `EXPLAIN ANALYZE` shows `bytes_read`: the bytes of the
//! frames read from the segment files.

use arrow::array::{
    new_null_array, Array, ArrayRef, Int32Array, Int64Array, RecordBatch, TimestampMillisecondArray,
};
use arrow::datatypes::{DataType, Field, Schema, SchemaRef, TimeUnit};
use async_trait::async_trait;
use datafusion::catalog::{Session, TableProvider};
use datafusion::common::{DataFusionError, Result, ScalarValue};
use datafusion::datasource::TableType;
use datafusion::execution::TaskContext;
use datafusion::logical_expr::{Between, BinaryExpr, Expr, Operator, TableProviderFilterPushDown};
use datafusion::physical_expr::EquivalenceProperties;
use datafusion::physical_plan::execution_plan::{Boundedness, EmissionType};
use datafusion::physical_plan::metrics::{
    BaselineMetrics, Count, ExecutionPlanMetricsSet, MetricBuilder, MetricsSet,
};
use datafusion::physical_plan::stream::RecordBatchStreamAdapter;
use datafusion::physical_plan::{
    DisplayAs, DisplayFormatType, ExecutionPlan, Partitioning, PlanProperties,
    SendableRecordBatchStream,
};
use futures_util::stream::{self, StreamExt};
use rivven_engine::topic::EmbeddedLog;
use std::any::Any;
use std::collections::BTreeSet;
use std::sync::Arc;

/// The metadata column holding a row's partition.
pub const PARTITION: &str = "_partition";
/// The metadata column holding a row's offset.
pub const OFFSET: &str = "_offset";
/// The metadata column holding a row's append time.
pub const TIMESTAMP: &str = "_timestamp";

/// The most a scan reads from the log in one step.
const MAX_READ_BYTES: usize = 8 << 20;

/// The schema of the topic's newest batch (empty when it holds none).
pub async fn newest_schema(log: &EmbeddedLog, topic: &str) -> rivven_engine::Result<SchemaRef> {
    let mut newest: Option<(i64, SchemaRef)> = None;
    for p in 0..log.partitions(topic)? {
        let (start, end) = (log.start_offset(topic, p)?, log.end_offset(topic, p)?);
        if end <= start {
            continue;
        }
        if let Some(b) = log.read(topic, p, end - 1, 1).await?.last() {
            if newest.as_ref().is_none_or(|(t, _)| b.append_time_ms >= *t) {
                newest = Some((b.append_time_ms, b.batch.schema()));
            }
        }
    }
    Ok(newest.map_or_else(|| Arc::new(Schema::empty()), |(_, s)| s))
}

/// Which metadata column a table column is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Meta {
    Partition,
    Offset,
    Timestamp,
}

/// One topic as a table.
#[derive(Debug)]
pub struct LogTable {
    log: EmbeddedLog,
    topic: Arc<str>,
    schema: SchemaRef,
    /// Per column of `schema`: the metadata column it is, if any.
    meta: Vec<Option<Meta>>,
}

impl LogTable {
    /// The table of `topic` with the schema of its newest batch.
    pub async fn open(log: EmbeddedLog, topic: &str) -> rivven_engine::Result<LogTable> {
        let data = newest_schema(&log, topic).await?;
        let mut fields: Vec<Field> = data
            .fields()
            .iter()
            .map(|f| f.as_ref().clone().with_nullable(true))
            .collect();
        let mut meta = vec![None; fields.len()];
        for (name, kind, ty) in [
            (PARTITION, Meta::Partition, DataType::Int32),
            (OFFSET, Meta::Offset, DataType::Int64),
            (
                TIMESTAMP,
                Meta::Timestamp,
                DataType::Timestamp(TimeUnit::Millisecond, Some("UTC".into())),
            ),
        ] {
            if data.field_with_name(name).is_err() {
                fields.push(Field::new(name, ty, false));
                meta.push(Some(kind));
            }
        }
        Ok(LogTable {
            log,
            topic: Arc::from(topic),
            schema: Arc::new(Schema::new(fields)),
            meta,
        })
    }

    /// The metadata column `e` is, if it is one of this table's.
    fn meta_column(&self, e: &Expr) -> Option<Meta> {
        let Expr::Column(c) = e else { return None };
        let i = self.schema.index_of(&c.name).ok()?;
        self.meta[i]
    }

    /// What the scan can do with filter `e` itself, and how exactly.
    fn restriction(&self, e: &Expr) -> Option<(Restriction, TableProviderFilterPushDown)> {
        use TableProviderFilterPushDown::{Exact, Inexact};
        match e {
            Expr::BinaryExpr(BinaryExpr { left, op, right }) => {
                let (col, op, lit) = match (self.meta_column(left), self.meta_column(right)) {
                    (Some(m), None) => (m, *op, literal(right)?),
                    (None, Some(m)) => (m, op.swap()?, literal(left)?),
                    _ => return None,
                };
                match col {
                    Meta::Offset => {
                        let v = lit.as_i128()?;
                        let (lo, hi) = match op {
                            Operator::Eq => (v, v + 1),
                            Operator::Gt => (v + 1, i128::MAX),
                            Operator::GtEq => (v, i128::MAX),
                            Operator::Lt => (0, v),
                            Operator::LtEq => (0, v + 1),
                            _ => return None,
                        };
                        Some((Restriction::offsets(lo, hi), Exact))
                    }
                    Meta::Partition if op == Operator::Eq => {
                        Some((Restriction::Partitions(partition_set([lit])), Exact))
                    }
                    Meta::Timestamp if matches!(op, Operator::Gt | Operator::GtEq) => {
                        Some((Restriction::TimeFrom(lit.as_ms()?), Inexact))
                    }
                    _ => None,
                }
            }
            Expr::Between(Between {
                expr,
                negated: false,
                low,
                high,
            }) if self.meta_column(expr) == Some(Meta::Offset) => {
                let (lo, hi) = (literal(low)?.as_i128()?, literal(high)?.as_i128()?);
                Some((Restriction::offsets(lo, hi + 1), Exact))
            }
            Expr::InList(l) if !l.negated && self.meta_column(&l.expr) == Some(Meta::Partition) => {
                let values: Option<Vec<Lit>> = l.list.iter().map(literal).collect();
                Some((Restriction::Partitions(partition_set(values?)), Exact))
            }
            _ => None,
        }
    }
}

/// A constant of a filter.
struct Lit(ScalarValue);

impl Lit {
    fn as_i128(&self) -> Option<i128> {
        Some(match &self.0 {
            ScalarValue::Int8(Some(v)) => i128::from(*v),
            ScalarValue::Int16(Some(v)) => i128::from(*v),
            ScalarValue::Int32(Some(v)) => i128::from(*v),
            ScalarValue::Int64(Some(v)) => i128::from(*v),
            ScalarValue::UInt8(Some(v)) => i128::from(*v),
            ScalarValue::UInt16(Some(v)) => i128::from(*v),
            ScalarValue::UInt32(Some(v)) => i128::from(*v),
            ScalarValue::UInt64(Some(v)) => i128::from(*v),
            _ => return None,
        })
    }

    /// A timestamp constant in milliseconds, rounded down.
    fn as_ms(&self) -> Option<i64> {
        Some(match &self.0 {
            ScalarValue::TimestampSecond(Some(v), _) => v.saturating_mul(1000),
            ScalarValue::TimestampMillisecond(Some(v), _) => *v,
            ScalarValue::TimestampMicrosecond(Some(v), _) => v.div_euclid(1000),
            ScalarValue::TimestampNanosecond(Some(v), _) => v.div_euclid(1_000_000),
            _ => return None,
        })
    }
}

fn literal(e: &Expr) -> Option<Lit> {
    match e {
        Expr::Literal(v, _) => Some(Lit(v.clone())),
        _ => None,
    }
}

/// The partitions named by constants (those that are not partition numbers select none).
fn partition_set(values: impl IntoIterator<Item = Lit>) -> BTreeSet<u32> {
    values
        .into_iter()
        .filter_map(|v| u32::try_from(v.as_i128()?).ok())
        .collect()
}

/// A part of the filters that selects what the scan reads.
#[derive(Debug, Clone)]
enum Restriction {
    /// Offsets `lo..hi` (clamped to u64).
    Offsets(u64, u64),
    /// Only these partitions.
    Partitions(BTreeSet<u32>),
    /// Rows appended at or after this time (ms) and, as batches are appended in time
    /// order, possibly a few before.
    TimeFrom(i64),
}

impl Restriction {
    fn offsets(lo: i128, hi: i128) -> Restriction {
        let clamp = |v: i128| v.clamp(0, i128::from(u64::MAX)) as u64;
        Restriction::Offsets(clamp(lo), clamp(hi))
    }
}

/// What to read of one partition: offsets `from..to`.
#[derive(Debug, Clone, Copy)]
struct Range {
    partition: u32,
    from: u64,
    to: u64,
}

#[async_trait]
impl TableProvider for LogTable {
    fn as_any(&self) -> &dyn Any {
        self
    }

    fn schema(&self) -> SchemaRef {
        self.schema.clone()
    }

    fn table_type(&self) -> TableType {
        TableType::Base
    }

    fn supports_filters_pushdown(
        &self,
        filters: &[&Expr],
    ) -> Result<Vec<TableProviderFilterPushDown>> {
        Ok(filters
            .iter()
            .map(|f| {
                self.restriction(f)
                    .map_or(TableProviderFilterPushDown::Unsupported, |(_, how)| how)
            })
            .collect())
    }

    async fn scan(
        &self,
        _state: &dyn Session,
        projection: Option<&Vec<usize>>,
        filters: &[Expr],
        limit: Option<usize>,
    ) -> Result<Arc<dyn ExecutionPlan>> {
        let (mut lo, mut hi, mut time_from) = (0u64, u64::MAX, None::<i64>);
        let mut partitions: Option<BTreeSet<u32>> = None;
        for f in filters {
            match self.restriction(f).map(|(r, _)| r) {
                Some(Restriction::Offsets(l, h)) => (lo, hi) = (lo.max(l), hi.min(h)),
                Some(Restriction::Partitions(p)) => {
                    partitions = Some(match partitions {
                        Some(q) => q.intersection(&p).copied().collect(),
                        None => p,
                    })
                }
                Some(Restriction::TimeFrom(ms)) => {
                    time_from = Some(time_from.map_or(ms, |t| t.max(ms)))
                }
                None => {}
            }
        }
        let err = |e: rivven_engine::Error| DataFusionError::External(Box::new(e));
        let mut ranges = Vec::new();
        for p in 0..self.log.partitions(&self.topic).map_err(err)? {
            if partitions.as_ref().is_some_and(|s| !s.contains(&p)) {
                continue;
            }
            let start = self.log.start_offset(&self.topic, p).map_err(err)?;
            let end = self.log.end_offset(&self.topic, p).map_err(err)?;
            let mut from = start.max(lo);
            if let Some(ms) = time_from {
                from = from.max(
                    self.log
                        .offset_for_timestamp(&self.topic, p, ms)
                        .map_err(err)?,
                );
            }
            let to = end.min(hi);
            if from < to {
                ranges.push(Range {
                    partition: p,
                    from,
                    to,
                });
            }
        }
        let columns: Vec<usize> = match projection {
            Some(p) => p.clone(),
            None => (0..self.schema.fields().len()).collect(),
        };
        let schema = Arc::new(self.schema.project(&columns)?);
        let props = PlanProperties::new(
            EquivalenceProperties::new(schema.clone()),
            Partitioning::UnknownPartitioning(ranges.len().max(1)),
            EmissionType::Incremental,
            Boundedness::Bounded,
        );
        Ok(Arc::new(LogScan {
            log: self.log.clone(),
            topic: self.topic.clone(),
            table: self.schema.clone(),
            meta: self.meta.clone(),
            columns,
            schema,
            ranges,
            limit,
            props: Arc::new(props),
            metrics: ExecutionPlanMetricsSet::new(),
        }))
    }
}

/// Reads offset ranges of a topic's partitions, one DataFusion partition per topic
/// partition.
#[derive(Debug)]
struct LogScan {
    log: EmbeddedLog,
    topic: Arc<str>,
    /// The table's schema.
    table: SchemaRef,
    meta: Vec<Option<Meta>>,
    /// The table columns produced, in order.
    columns: Vec<usize>,
    /// The output schema (`columns` of `table`).
    schema: SchemaRef,
    ranges: Vec<Range>,
    limit: Option<usize>,
    props: Arc<PlanProperties>,
    metrics: ExecutionPlanMetricsSet,
}

impl DisplayAs for LogScan {
    fn fmt_as(&self, _: DisplayFormatType, f: &mut std::fmt::Formatter) -> std::fmt::Result {
        write!(f, "LogScan: topic={}, ranges=[", self.topic)?;
        for (i, r) in self.ranges.iter().enumerate() {
            let sep = if i == 0 { "" } else { ", " };
            write!(f, "{sep}{}:{}..{}", r.partition, r.from, r.to)?;
        }
        write!(f, "]")?;
        if let Some(l) = self.limit {
            write!(f, ", limit={l}")?;
        }
        Ok(())
    }
}

impl ExecutionPlan for LogScan {
    fn name(&self) -> &str {
        "LogScan"
    }

    fn as_any(&self) -> &dyn Any {
        self
    }

    fn properties(&self) -> &Arc<PlanProperties> {
        &self.props
    }

    fn children(&self) -> Vec<&Arc<dyn ExecutionPlan>> {
        vec![]
    }

    fn with_new_children(
        self: Arc<Self>,
        _: Vec<Arc<dyn ExecutionPlan>>,
    ) -> Result<Arc<dyn ExecutionPlan>> {
        Ok(self)
    }

    fn metrics(&self) -> Option<MetricsSet> {
        Some(self.metrics.clone_inner())
    }

    fn execute(
        &self,
        partition: usize,
        _context: Arc<TaskContext>,
    ) -> Result<SendableRecordBatchStream> {
        let Some(range) = self.ranges.get(partition).copied() else {
            return Ok(Box::pin(RecordBatchStreamAdapter::new(
                self.schema.clone(),
                stream::empty(),
            )));
        };
        let reader = RangeReader {
            log: self.log.clone(),
            topic: self.topic.clone(),
            range,
            next: range.from,
            step: 1,
            remaining: self.limit.unwrap_or(usize::MAX),
            conform: Conform {
                table: self.table.clone(),
                meta: self.meta.clone(),
                columns: self.columns.clone(),
                schema: self.schema.clone(),
            },
            bytes_read: MetricBuilder::new(&self.metrics).counter("bytes_read", partition),
            baseline: BaselineMetrics::new(&self.metrics, partition),
        };
        let batches = stream::try_unfold(reader, |mut r| async move {
            let batch = r.next_batch().await?;
            Ok(batch.map(|b| (b, r)))
        })
        .flat_map(|r: Result<Vec<RecordBatch>>| {
            stream::iter(match r {
                Ok(v) => v.into_iter().map(Ok).collect::<Vec<_>>(),
                Err(e) => vec![Err(e)],
            })
        });
        Ok(Box::pin(RecordBatchStreamAdapter::new(
            self.schema.clone(),
            batches,
        )))
    }
}

/// Reads one partition's range step by step.
struct RangeReader {
    log: EmbeddedLog,
    topic: Arc<str>,
    range: Range,
    next: u64,
    /// Bytes to read in the next step: one frame first, doubling up to
    /// [`MAX_READ_BYTES`].
    step: usize,
    remaining: usize,
    conform: Conform,
    bytes_read: Count,
    baseline: BaselineMetrics,
}

impl RangeReader {
    /// The rows of the next step, as table batches (`None` when the range is read or the
    /// limit reached).
    async fn next_batch(&mut self) -> Result<Option<Vec<RecordBatch>>> {
        if self.next >= self.range.to || self.remaining == 0 {
            return Ok(None);
        }
        let err = |e: rivven_engine::Error| DataFusionError::External(Box::new(e));
        let p = self.range.partition;
        let read = self
            .log
            .read(&self.topic, p, self.next, self.step)
            .await
            .map_err(err)?;
        self.step = (self.step.saturating_mul(2)).min(MAX_READ_BYTES);
        let Some(last) = read.last() else {
            return Ok(None);
        };
        let read_to = last.first_offset + last.batch.num_rows() as u64;
        let stored = self
            .log
            .stored_bytes(&self.topic, p, self.next, read_to)
            .map_err(err)?;
        self.bytes_read.add(stored as usize);
        let mut out = Vec::with_capacity(read.len());
        for sb in read {
            let _timer = self.baseline.elapsed_compute().timer();
            let first = sb.first_offset.max(self.next);
            let skip = (first - sb.first_offset) as usize;
            let end = (sb.first_offset + sb.batch.num_rows() as u64).min(self.range.to);
            if end <= first {
                continue;
            }
            let rows = ((end - first) as usize).min(self.remaining);
            let batch = sb.batch.slice(skip, rows);
            let batch = self.conform.apply(&batch, p, first, sb.append_time_ms)?;
            // Counts the output rows, batches and bytes.
            let _ = self
                .baseline
                .record_poll(std::task::Poll::Ready(Some(Ok(batch.clone()))));
            out.push(batch);
            self.remaining -= rows;
            if self.remaining == 0 {
                break;
            }
        }
        self.next = read_to;
        Ok(Some(out))
    }
}

/// Turns a stored batch into the table's projected columns.
struct Conform {
    table: SchemaRef,
    meta: Vec<Option<Meta>>,
    columns: Vec<usize>,
    schema: SchemaRef,
}

impl Conform {
    fn apply(
        &self,
        batch: &RecordBatch,
        partition: u32,
        first_offset: u64,
        append_time_ms: i64,
    ) -> Result<RecordBatch> {
        let n = batch.num_rows();
        let columns = self
            .columns
            .iter()
            .map(|&i| {
                let field = self.table.field(i);
                Ok(match self.meta[i] {
                    Some(Meta::Partition) => {
                        Arc::new(Int32Array::from_value(partition as i32, n)) as ArrayRef
                    }
                    Some(Meta::Offset) => {
                        let first = first_offset as i64;
                        Arc::new(Int64Array::from_iter_values(first..first + n as i64))
                    }
                    Some(Meta::Timestamp) => Arc::new(
                        TimestampMillisecondArray::from_value(append_time_ms, n)
                            .with_timezone("UTC"),
                    ),
                    None => match batch.column_by_name(field.name()) {
                        Some(c) if c.data_type() == field.data_type() => c.clone(),
                        // Values that do not fit are an error, never a silent null.
                        Some(c) => arrow::compute::cast_with_options(
                            c,
                            field.data_type(),
                            &arrow::compute::CastOptions {
                                safe: false,
                                ..Default::default()
                            },
                        )
                        .map_err(|e| {
                            DataFusionError::Execution(format!(
                                "column `{}` at offset {first_offset}: {} does not cast to \
                                 the table's {}: {e}",
                                field.name(),
                                c.data_type(),
                                field.data_type()
                            ))
                        })?,
                        None => new_null_array(field.data_type(), n),
                    },
                })
            })
            .collect::<Result<Vec<ArrayRef>>>()?;
        Ok(RecordBatch::try_new_with_options(
            self.schema.clone(),
            columns,
            &arrow::array::RecordBatchOptions::new().with_row_count(Some(n)),
        )?)
    }
}
