//! Change events of one table built straight into Arrow: `op`, `before`, `after` (structs
//! of the table's columns), `source` and `ts_ms`, the canonical change-event schema.

use super::binary::Decoder;
use super::pgoutput::{Relation, Value};
use super::types::{Column, Kind, TemporalInfinity, TypeCatalog};
use arrow::array::builder::NullBufferBuilder;
use arrow::array::{
    ArrayRef, BooleanBuilder, Int64Builder, RecordBatch, StringBuilder, StructArray,
};
use arrow::datatypes::{Field, Fields, SchemaRef};
use rivven_engine::batch::now_ms;
use rivven_engine::batch::{change_event_schema, change_event_source_fields, META_KEY};
use std::sync::Arc;

/// Where a change came from, for the `source` struct.
#[derive(Debug, Clone)]
pub struct SourceInfo<'a> {
    /// `pos`: the commit LSN (`X/Y`) for streamed changes, `snapshot` for snapshot rows.
    pub pos: &'a str,
    pub txid: Option<i64>,
    /// Commit time (ms since the Unix epoch).
    pub ts_ms: Option<i64>,
    pub snapshot: bool,
    /// Processing time (the event's `ts_ms`): read once per received chunk, not per row.
    pub now_ms: i64,
}

impl<'a> SourceInfo<'a> {
    /// A streamed change (or message) at `pos`, processed now.
    pub fn streamed(pos: &'a str, txid: Option<i64>, ts_ms: Option<i64>) -> Self {
        SourceInfo {
            pos,
            txid,
            ts_ms,
            snapshot: false,
            now_ms: now_ms(),
        }
    }
}

/// How to fill a value the server did not send (an unchanged TOASTed column).
#[derive(Debug, Clone)]
pub struct ToastPolicy {
    pub placeholder: String,
}

/// Accumulates the change events of one table (one relation shape).
pub struct TableEvents {
    pub relation: Arc<Relation>,
    /// Positions in the relation of the columns kept (column filters).
    keep: Vec<usize>,
    kinds: Vec<Kind>,
    /// Per kept column: how pgoutput's binary values decode (`binary: true`).
    decoders: Vec<Result<Decoder, String>>,
    columns: Fields,
    schema: SchemaRef,
    database: Arc<str>,
    op: StringBuilder,
    before: Vec<Column>,
    before_valid: NullBufferBuilder,
    /// Rows whose before image (null) is not in the `before` builders yet: snapshot rows
    /// leave it out, so a batch of them gets one all-null image at `finish`.
    before_owed: usize,
    after: Vec<Column>,
    after_valid: NullBufferBuilder,
    pos: StringBuilder,
    txid: Int64Builder,
    src_ts: Int64Builder,
    snapshot: BooleanBuilder,
    ts_ms: Int64Builder,
    rows: usize,
}

impl std::fmt::Debug for TableEvents {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TableEvents")
            .field("table", &self.relation.name)
            .field("rows", &self.rows)
            .finish()
    }
}

impl TableEvents {
    /// `keep`: the relation's column positions to capture, in order.
    pub fn new(
        relation: Arc<Relation>,
        keep: Vec<usize>,
        catalog: &TypeCatalog,
        database: Arc<str>,
        infinity: TemporalInfinity,
    ) -> Self {
        let kinds: Vec<Kind> = keep
            .iter()
            .map(|&i| {
                let c = &relation.columns[i];
                Kind::of_column(c.type_oid, c.type_modifier, c.dims, catalog)
            })
            .collect();
        let columns: Fields = keep
            .iter()
            .zip(&kinds)
            .map(|(&i, k)| Arc::new(k.field(&relation.columns[i].name)))
            .collect::<Vec<Arc<Field>>>()
            .into();
        // The replica identity (by default the primary key) travels with the rows, for
        // sinks that upsert.
        let key: Vec<&str> = keep
            .iter()
            .map(|&i| &relation.columns[i])
            .filter(|c| c.key)
            .map(|c| c.name.as_str())
            .collect();
        let schema = change_event_schema(columns.clone());
        let schema = if key.is_empty() {
            schema
        } else {
            Arc::new(
                schema
                    .as_ref()
                    .clone()
                    .with_metadata(std::collections::HashMap::from([(
                        META_KEY.to_string(),
                        key.join(","),
                    )])),
            )
        };
        let decoders = keep
            .iter()
            .map(|&i| {
                let c = &relation.columns[i];
                super::binary::decoder(c.type_oid, c.type_modifier, catalog)
            })
            .collect();
        let cap = 1024;
        Self {
            before: kinds
                .iter()
                .map(|k| Column::new(k, cap, infinity))
                .collect(),
            after: kinds
                .iter()
                .map(|k| Column::new(k, cap, infinity))
                .collect(),
            before_valid: NullBufferBuilder::new(cap),
            before_owed: 0,
            after_valid: NullBufferBuilder::new(cap),
            op: StringBuilder::new(),
            pos: StringBuilder::new(),
            txid: Int64Builder::new(),
            src_ts: Int64Builder::new(),
            snapshot: BooleanBuilder::new(),
            ts_ms: Int64Builder::new(),
            relation,
            keep,
            kinds,
            decoders,
            columns,
            schema,
            database,
            rows: 0,
        }
    }

    pub fn schema(&self) -> &SchemaRef {
        &self.schema
    }

    pub fn len(&self) -> usize {
        self.rows
    }

    pub fn is_empty(&self) -> bool {
        self.rows == 0
    }

    /// The Arrow kinds of the kept columns.
    pub fn kinds(&self) -> &[Kind] {
        &self.kinds
    }

    #[allow(clippy::too_many_arguments)]
    fn push_image(
        cols: &mut [Column],
        valid: &mut NullBufferBuilder,
        keep: &[usize],
        decoders: &[Result<Decoder, String>],
        values: Option<&[Value]>,
        fallback: Option<&[Value]>,
        toast: &ToastPolicy,
        relation: &Relation,
    ) -> Result<(), String> {
        let Some(values) = values else {
            for c in cols.iter_mut() {
                c.append_null();
            }
            valid.append_null();
            return Ok(());
        };
        for ((c, &i), dec) in cols.iter_mut().zip(keep).zip(decoders) {
            let v = values.get(i).ok_or_else(|| {
                format!(
                    "{}.{}: tuple has {} columns, relation {}",
                    relation.namespace,
                    relation.name,
                    values.len(),
                    relation.columns.len()
                )
            })?;
            let v = match (v, fallback.and_then(|f| f.get(i))) {
                (
                    Value::Unchanged,
                    Some(old @ (Value::Text(_) | Value::Binary(_) | Value::Null)),
                ) => old,
                (v, _) => v,
            };
            match v {
                Value::Null => c.append_null(),
                Value::Unchanged => c.append_placeholder(&toast.placeholder),
                Value::Text(t) => c.append_text(t).map_err(|e| {
                    format!(
                        "{}.{}.{}: {e}",
                        relation.namespace, relation.name, relation.columns[i].name
                    )
                })?,
                Value::Binary(b) => dec
                    .as_ref()
                    .map_err(|e| format!("{e}; this type needs binary: false"))
                    .and_then(|d| super::binary::append(c, d, b))
                    .map_err(|e| {
                        format!(
                            "{}.{}.{}: {e}",
                            relation.namespace, relation.name, relation.columns[i].name
                        )
                    })?,
            }
        }
        valid.append_non_null();
        Ok(())
    }

    /// Append one change event. `before`/`after` are whole tuples in relation column order
    /// (`None`: absent image). Unchanged TOAST values in `after` take their value from
    /// `old_row` (the whole old row, sent under replica identity FULL) when given, else the
    /// placeholder. A key-only old tuple must not be passed as `old_row`: its non-key
    /// columns are nulls, not values. After an error the builders hold a partial row: the
    /// caller must discard this `TableEvents` (the source fails with a data error).
    pub fn push(
        &mut self,
        op: &str,
        before: Option<&[Value]>,
        after: Option<&[Value]>,
        old_row: Option<&[Value]>,
        src: &SourceInfo<'_>,
        toast: &ToastPolicy,
    ) -> Result<(), String> {
        let rel = self.relation.clone();
        self.settle_before();
        Self::push_image(
            &mut self.before,
            &mut self.before_valid,
            &self.keep,
            &self.decoders,
            before,
            None,
            toast,
            &rel,
        )?;
        Self::push_image(
            &mut self.after,
            &mut self.after_valid,
            &self.keep,
            &self.decoders,
            after,
            old_row,
            toast,
            &rel,
        )?;
        self.end_row(op, src);
        Ok(())
    }

    /// Append one snapshot row (`op = r`, no before image) from binary COPY fields, one per
    /// relation column (`None` = NULL). Same error contract as [`Self::push`].
    pub fn push_snapshot_row(
        &mut self,
        fields: &[Option<&[u8]>],
        src: &SourceInfo<'_>,
    ) -> Result<(), String> {
        for ((c, &i), dec) in self.after.iter_mut().zip(&self.keep).zip(&self.decoders) {
            let v = match fields.get(i) {
                Some(Some(v)) => v,
                Some(None) => {
                    c.append_null();
                    continue;
                }
                None => {
                    return Err(format!(
                        "{}.{}: COPY row has {} fields, expected {}",
                        self.relation.namespace,
                        self.relation.name,
                        fields.len(),
                        self.relation.columns.len()
                    ))
                }
            };
            // Text-shaped scalars come in binary and are rendered as pgoutput's binary
            // values are; the rest in the snapshot's binary COPY form (see
            // `copies_as_text`).
            match dec {
                Ok(d @ Decoder::Text(_)) => super::binary::append(c, d, v),
                _ => c.append_binary(v),
            }
            .map_err(|e| {
                format!(
                    "{}.{}.{}: {e}",
                    self.relation.namespace, self.relation.name, self.relation.columns[i].name
                )
            })?;
        }
        self.after_valid.append_non_null();
        self.before_owed += 1;
        self.end_row(rivven_engine::batch::op::READ, src);
        Ok(())
    }

    /// Append the null before images owed to snapshot rows (before a row that has one).
    fn settle_before(&mut self) {
        for _ in 0..self.before_owed {
            for c in self.before.iter_mut() {
                c.append_null();
            }
            self.before_valid.append_null();
        }
        self.before_owed = 0;
    }

    /// Complete a row whose images are appended: op, source metadata, event time.
    fn end_row(&mut self, op: &str, src: &SourceInfo<'_>) {
        self.op.append_value(op);
        self.pos.append_value(src.pos);
        self.txid.append_option(src.txid);
        self.src_ts.append_option(src.ts_ms);
        self.snapshot.append_value(src.snapshot);
        self.ts_ms.append_value(src.now_ms);
        self.rows += 1;
    }

    /// Take the accumulated events as a batch (None when empty).
    pub fn finish(&mut self) -> Result<Option<RecordBatch>, arrow::error::ArrowError> {
        let n = self.rows;
        self.rows = 0;
        // A row that failed to decode part-way left values in some builders: only the
        // first `n` (complete) rows are kept.
        let image = |cols: &mut Vec<Column>, valid: &mut NullBufferBuilder, fields: &Fields| {
            let arrays: Vec<ArrayRef> = cols.iter_mut().map(|c| c.finish().slice(0, n)).collect();
            let nulls = valid.finish().map(|b| b.slice(0, n));
            if fields.is_empty() {
                StructArray::new_empty_fields(n, nulls)
            } else {
                StructArray::new(fields.clone(), arrays, nulls)
            }
        };
        let before = if n > 0 && self.before_owed == n {
            // Snapshot rows only: the builders are empty; one all-null image.
            self.before_owed = 0;
            StructArray::new_null(self.columns.clone(), n)
        } else {
            self.settle_before();
            image(&mut self.before, &mut self.before_valid, &self.columns)
        };
        let after = image(&mut self.after, &mut self.after_valid, &self.columns);
        if n == 0 {
            // Nothing complete; the builders are now empty (a partial row is dropped).
            return Ok(None);
        }
        let constant = |v: &str| {
            let mut b = StringBuilder::with_capacity(n, n * v.len());
            for _ in 0..n {
                b.append_value(v);
            }
            Arc::new(b.finish()) as ArrayRef
        };
        let source = StructArray::new(
            change_event_source_fields(),
            vec![
                constant("postgresql"),
                constant(&self.database),
                constant(&self.relation.namespace),
                constant(&self.relation.name),
                Arc::new(self.pos.finish()),
                Arc::new(self.txid.finish()),
                Arc::new(self.src_ts.finish()),
                Arc::new(self.snapshot.finish()),
            ],
            None,
        );
        RecordBatch::try_new(
            self.schema.clone(),
            vec![
                Arc::new(self.op.finish()),
                Arc::new(before),
                Arc::new(after),
                Arc::new(source),
                Arc::new(self.ts_ms.finish()),
            ],
        )
        .map(Some)
    }
}

/// The stream (and `source.table`) name of logical decoding messages.
pub const MESSAGE_STREAM: &str = "pg_logical_message";

/// One logical decoding message as a change event: `op = "m"`, `before` null, `after` =
/// `{prefix, content, transactional}`, `source.table` = `pg_logical_message`.
pub fn message_batch(
    database: &str,
    prefix: &str,
    content: &[u8],
    transactional: bool,
    src: &SourceInfo<'_>,
) -> Result<RecordBatch, arrow::error::ArrowError> {
    use arrow::array::{BinaryArray, BooleanArray, Int64Array, StringArray};
    use arrow::datatypes::DataType;
    let fields = Fields::from(vec![
        Field::new("prefix", DataType::Utf8, true),
        Field::new("content", DataType::Binary, true),
        Field::new("transactional", DataType::Boolean, true),
    ]);
    let text = |v: Option<&str>| Arc::new(StringArray::from(vec![v])) as ArrayRef;
    let after = StructArray::new(
        fields.clone(),
        vec![
            text(Some(prefix)),
            Arc::new(BinaryArray::from(vec![Some(content)])),
            Arc::new(BooleanArray::from(vec![Some(transactional)])),
        ],
        None,
    );
    let before = StructArray::new_null(fields.clone(), 1);
    let source = StructArray::new(
        change_event_source_fields(),
        vec![
            text(Some("postgresql")),
            text(Some(database)),
            text(None),
            text(Some(MESSAGE_STREAM)),
            text(Some(src.pos)),
            Arc::new(Int64Array::from(vec![src.txid])),
            Arc::new(Int64Array::from(vec![src.ts_ms])),
            Arc::new(BooleanArray::from(vec![src.snapshot])),
        ],
        None,
    );
    RecordBatch::try_new(
        change_event_schema(fields),
        vec![
            text(Some(MESSAGE_OP)),
            Arc::new(before),
            Arc::new(after),
            Arc::new(source),
            Arc::new(Int64Array::from(vec![now_ms()])),
        ],
    )
}

/// The `op` of a logical decoding message (Debezium's code).
pub const MESSAGE_OP: &str = "m";
