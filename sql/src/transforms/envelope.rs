//! Envelope transforms: unwrapping change events, keys, headers (envelope metadata) and
//! message timestamps, and reshaping nested values (`unwrap`, `flatten`).
//!
//! Our batches have no per-record Kafka headers. What Kafka Connect keeps in headers lives
//! in the batch itself: in change events, the envelope (`op`, `source.*`, `ts_ms`); in flat
//! batches, the `__`-prefixed metadata columns that `extract_new_record_state` adds
//! (`__op`, `__table`, `__source_ts_ms`, ...). The record key is the list of key columns in
//! the schema metadata `rivven.key`.

use arrow::array::{Array, ArrayRef, AsArray, BooleanArray, Int64Array, RecordBatch, StringArray};
use arrow::compute::kernels::cmp::{eq, neq};
use arrow::compute::kernels::zip::zip;
use arrow::compute::{and, cast, filter_record_batch, is_not_null};
use arrow::datatypes::{DataType, Field, FieldRef, Fields, Schema, SchemaRef, TimeUnit};
use rivven_engine::batch::{is_change_event_schema, op, META_KEY};
use rivven_engine::config::{FieldError, Validate};
use schemars::JsonSchema;
use serde::Deserialize;
use std::sync::Arc;

use crate::field_list::{non_empty, require_fields, Names};
use crate::image::{self, image_fields, image_schema, map_images, path_column, path_type};
use crate::op::Spec;
use crate::op::{Ctx, Op};
use rivven_engine::Result;

fn yes() -> bool {
    true
}

/// An op that returns its input (a transform that does not apply to this shape).
struct Identity(SchemaRef);

impl Op for Identity {
    fn output_schema(&self) -> &SchemaRef {
        &self.0
    }
    fn map(&self, batch: &RecordBatch, _: &Ctx<'_>) -> Result<RecordBatch> {
        Ok(batch.clone())
    }
}

/// How deletes leave `extract_new_record_state`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, JsonSchema)]
#[serde(rename_all = "lowercase")]
pub enum DeleteMode {
    /// Deletes are dropped.
    Drop,
    /// Deletes become their `before` image with `__deleted = true`.
    Rewrite,
}

/// `extract_new_record_state` (alias `unwrap_envelope`): change events become flat rows of
/// their new state.
///
/// - Inserts, updates and snapshot reads become their `after` image.
/// - Deletes are dropped (`drop_tombstones: true`, the default, or
///   `delete_handling_mode: drop`), or kept as their `before` image with a `__deleted`
///   column (`drop_tombstones: false` / `delete_handling_mode: rewrite`).
/// - Truncates carry no row and are dropped.
/// - `add_op`, `add_table`, `add_schema`, `add_db`, `add_ts` add `__op`, `__table`,
///   `__schema`, `__db`, `__ts_ms`; `add_fields: "op,source.ts_ms,lsn"` adds one `__` column
///   per name (dots become `_`; a bare name is an envelope column, else a `source` field).
///
/// Flat batches pass through unchanged.
#[derive(Debug, Clone, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct ExtractNewRecordState {
    /// Drop deletes (default) or rewrite them.
    #[serde(default = "yes", alias = "dropTombstones")]
    pub drop_tombstones: bool,
    /// Overrides `drop_tombstones`.
    #[serde(default, alias = "deleteHandlingMode")]
    pub delete_handling_mode: Option<DeleteMode>,
    /// Add `__table`.
    #[serde(default)]
    pub add_table: bool,
    /// Add `__schema`.
    #[serde(default)]
    pub add_schema: bool,
    /// Add `__db`.
    #[serde(default)]
    pub add_db: bool,
    /// Add `__op`.
    #[serde(default)]
    pub add_op: bool,
    /// Add `__ts_ms` (the event's processing time).
    #[serde(default)]
    pub add_ts: bool,
    /// More envelope or source fields to add.
    #[serde(default, alias = "addFields")]
    pub add_fields: Names,
}

impl ExtractNewRecordState {
    fn mode(&self) -> DeleteMode {
        self.delete_handling_mode
            .unwrap_or(if self.drop_tombstones {
                DeleteMode::Drop
            } else {
                DeleteMode::Rewrite
            })
    }

    /// `(output name, envelope path)` of every added field, in order, without duplicates.
    fn added(&self, schema: &Schema) -> Result<Vec<(String, String)>, FieldError> {
        let mut out: Vec<(String, String)> = Vec::new();
        let mut push = |name: String, path: String| {
            if !out.iter().any(|(n, _)| *n == name) {
                out.push((name, path));
            }
        };
        for (on, name, path) in [
            (self.add_op, "__op", "op"),
            (self.add_table, "__table", "source.table"),
            (self.add_schema, "__schema", "source.schema"),
            (self.add_db, "__db", "source.db"),
            (self.add_ts, "__ts_ms", "ts_ms"),
        ] {
            if on {
                push(name.into(), path.into());
            }
        }
        for (i, f) in self.add_fields.iter().enumerate() {
            let path = if f.contains('.') || schema.field_with_name(f).is_ok() {
                f.clone()
            } else {
                format!("source.{f}")
            };
            if path_type(schema, &path).is_none() {
                return Err(FieldError::new(
                    format!("add_fields[{i}]"),
                    format!("no envelope or source field `{f}`"),
                ));
            }
            push(format!("__{}", f.replace('.', "_")), path);
        }
        Ok(out)
    }
}

impl Validate for ExtractNewRecordState {}

impl Spec for ExtractNewRecordState {
    fn compile(&self, input: &SchemaRef) -> Result<Arc<dyn Op>, FieldError> {
        let Some(image) = image_fields(input) else {
            return Ok(Arc::new(Identity(input.clone())));
        };
        let added = self.added(input)?;
        let mut fields: Vec<FieldRef> = image.iter().cloned().collect();
        if self.mode() == DeleteMode::Rewrite {
            fields.push(Arc::new(Field::new("__deleted", DataType::Boolean, false)));
        }
        for (name, path) in &added {
            let ty = path_type(input, path).unwrap_or(DataType::Null);
            fields.push(Arc::new(Field::new(name, ty, true)));
        }
        if let Some(dup) = dup_name(&fields) {
            return Err(FieldError::new(
                "",
                format!("the unwrapped row would have two fields named `{dup}`"),
            ));
        }
        Ok(Arc::new(ExtractOp {
            schema: Arc::new(Schema::new_with_metadata(fields, input.metadata().clone())),
            rewrite: self.mode() == DeleteMode::Rewrite,
            added,
        }))
    }
}

fn dup_name(fields: &[FieldRef]) -> Option<String> {
    let mut seen = std::collections::HashSet::new();
    fields
        .iter()
        .find(|f| !seen.insert(f.name().clone()))
        .map(|f| f.name().clone())
}

struct ExtractOp {
    schema: SchemaRef,
    rewrite: bool,
    added: Vec<(String, String)>,
}

fn op_codes(batch: &RecordBatch) -> Result<ArrayRef> {
    let op = batch
        .column_by_name("op")
        .ok_or_else(|| rivven_engine::Error::internal("change event without `op`"))?;
    Ok(cast(op, &DataType::Utf8)?)
}

impl Op for ExtractOp {
    fn output_schema(&self) -> &SchemaRef {
        &self.schema
    }

    /// Builds the flat row columns for every event first and filters once at the end, so
    /// the filter copies only the output columns, not the `before`/`after`/`source`
    /// structs of the envelope.
    fn map(&self, batch: &RecordBatch, _: &Ctx<'_>) -> Result<RecordBatch> {
        let (out, keep) = self.unfiltered(batch)?;
        if keep.true_count() == out.num_rows() {
            Ok(out)
        } else {
            Ok(filter_record_batch(&out, &keep)?)
        }
    }

    fn select(
        &self,
        batch: &RecordBatch,
        _: &Ctx<'_>,
    ) -> Option<Result<(RecordBatch, BooleanArray)>> {
        Some(self.unfiltered(batch))
    }
}

impl ExtractOp {
    /// The flat row of every event, and which events survive (not dropped deletes,
    /// truncates, tombstones).
    fn unfiltered(&self, batch: &RecordBatch) -> Result<(RecordBatch, BooleanArray)> {
        let ops = op_codes(batch)?;
        let truncate = StringArray::new_scalar(op::TRUNCATE);
        let delete = StringArray::new_scalar(op::DELETE);
        let mut keep = neq(&ops, &truncate)?;
        if !self.rewrite {
            keep = and(&keep, &neq(&ops, &delete)?)?;
        }
        let n = batch.num_rows();
        let after = batch
            .column_by_name("after")
            .ok_or_else(|| rivven_engine::Error::internal("change event without `after`"))?;
        // Only a rewritten delete takes its `before` image; dropped rows are filtered out
        // below, whatever their image holds.
        let row = if !self.rewrite || after.null_count() == 0 {
            after.clone()
        } else {
            let before = batch
                .column_by_name("before")
                .ok_or_else(|| rivven_engine::Error::internal("change event without `before`"))?;
            zip(&is_not_null(after)?, after, before)?
        };
        let row = row.as_struct();
        let mut columns: Vec<ArrayRef> = row.columns().to_vec();
        if self.rewrite {
            // A null op (a tombstone) is not a delete; the column has no nulls.
            let deleted: BooleanArray = eq(&ops, &delete)?;
            let deleted = BooleanArray::new(
                match deleted.nulls() {
                    Some(n) => deleted.values() & n.inner(),
                    None => deleted.values().clone(),
                },
                None,
            );
            columns.push(Arc::new(deleted));
        }
        for (name, path) in &self.added {
            columns.push(path_column(batch, path).ok_or_else(|| {
                rivven_engine::Error::internal(format!("no envelope field `{path}` for `{name}`"))
            })?);
        }
        let out = RecordBatch::try_new_with_options(
            self.schema.clone(),
            columns,
            &arrow::array::RecordBatchOptions::new().with_row_count(Some(n)),
        )?;
        // Null ops (tombstones) compare as null: they are not kept.
        let keep = match keep.nulls() {
            Some(nulls) if nulls.null_count() > 0 => {
                BooleanArray::new(keep.values() & nulls.inner(), None)
            }
            _ => keep,
        };
        Ok((out, keep))
    }
}

/// `value_to_key`: the listed fields become the record key (schema metadata `rivven.key`),
/// which key-aware sinks (Kafka, upserts, partitioners) use.
#[derive(Debug, Clone, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct ValueToKey {
    /// Key fields, in order.
    pub fields: Names,
}

impl Validate for ValueToKey {
    fn validate(&self) -> Vec<FieldError> {
        non_empty("fields", &self.fields)
    }
}

impl Spec for ValueToKey {
    fn compile(&self, input: &SchemaRef) -> Result<Arc<dyn Op>, FieldError> {
        require_fields("fields", &self.fields, &image_schema(input))?;
        let mut meta = input.metadata().clone();
        meta.insert(META_KEY.to_owned(), self.fields.join(","));
        Ok(Arc::new(WithSchema(Arc::new(
            input.as_ref().clone().with_metadata(meta),
        ))))
    }
}

/// Replaces only the schema (metadata changes).
struct WithSchema(SchemaRef);

impl Op for WithSchema {
    fn output_schema(&self) -> &SchemaRef {
        &self.0
    }
    fn map(&self, batch: &RecordBatch, _: &Ctx<'_>) -> Result<RecordBatch> {
        Ok(batch.clone().with_schema(self.0.clone())?)
    }
}

/// Copy or move headers.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize, JsonSchema)]
#[serde(rename_all = "lowercase")]
pub enum HeaderOperation {
    /// Keep the header.
    #[default]
    Copy,
    /// Remove the header (flat batches only: the change-event envelope is fixed).
    Move,
}

/// `header_to_value` (alias `header_from`): copy envelope metadata into the row.
///
/// `headers` are envelope paths in change events (`op`, `source.table`, `ts_ms`) and
/// metadata columns in flat batches (`op` means `__op`); `fields` names the new row fields
/// (default: the header name with dots as `_`). In change events the value is added to both
/// row images.
#[derive(Debug, Clone, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct HeaderToValue {
    /// Headers to copy.
    pub headers: Names,
    /// Names of the new fields, one per header.
    #[serde(default)]
    pub fields: Names,
    /// `copy` (default) or `move`.
    #[serde(default)]
    pub operation: HeaderOperation,
}

/// The column of a flat batch that holds header `h`: `__h`, or `h` itself when it is
/// already `__`-prefixed.
fn header_column(schema: &Schema, h: &str) -> Option<String> {
    [format!("__{h}"), h.to_owned()]
        .into_iter()
        .find(|c| c.starts_with("__") && schema.field_with_name(c).is_ok())
}

impl HeaderToValue {
    fn targets(&self) -> Vec<String> {
        if self.fields.is_empty() {
            self.headers
                .iter()
                .map(|h| h.trim_start_matches("__").replace('.', "_"))
                .collect()
        } else {
            self.fields.to_vec()
        }
    }
}

impl Validate for HeaderToValue {
    fn validate(&self) -> Vec<FieldError> {
        let mut errs = Vec::new();
        if self.headers.is_empty() {
            errs.push(FieldError::new("headers", "list at least one header"));
        }
        if !self.fields.is_empty() && self.fields.len() != self.headers.len() {
            errs.push(FieldError::new(
                "fields",
                format!(
                    "give one field per header ({} headers, {} fields)",
                    self.headers.len(),
                    self.fields.len()
                ),
            ));
        }
        errs
    }
}

impl Spec for HeaderToValue {
    fn compile(&self, input: &SchemaRef) -> Result<Arc<dyn Op>, FieldError> {
        let change = is_change_event_schema(input);
        if change && self.operation == HeaderOperation::Move {
            return Err(FieldError::new(
                "operation",
                "`move` would remove envelope fields a change event needs; use `copy`, or unwrap the event first",
            ));
        }
        let mut sources = Vec::new();
        for (i, h) in self.headers.iter().enumerate() {
            let path = if change {
                if path_type(input, h).is_some() {
                    Some(h.clone())
                } else {
                    let p = format!("source.{h}");
                    path_type(input, &p).map(|_| p)
                }
            } else {
                header_column(input, h)
            };
            let Some(path) = path else {
                return Err(FieldError::new(
                    format!("headers[{i}]"),
                    format!("no header `{h}` in this batch"),
                ));
            };
            sources.push(path);
        }
        let targets = self.targets();
        let img = image_schema(input);
        let mut fields: Vec<FieldRef> = img
            .fields()
            .iter()
            .filter(|f| !(self.operation == HeaderOperation::Move && sources.contains(f.name())))
            .cloned()
            .collect();
        for (t, s) in targets.iter().zip(&sources) {
            let ty = path_type(input, s).unwrap_or(DataType::Null);
            fields.push(Arc::new(Field::new(t, ty, true)));
        }
        if let Some(dup) = dup_name(&fields) {
            return Err(FieldError::new(
                "fields",
                format!("the row already has a field `{dup}`"),
            ));
        }
        let image_out = Arc::new(Schema::new_with_metadata(fields, input.metadata().clone()));
        Ok(Arc::new(HeaderOp {
            output: images_schema(input, &image_out),
            image_out,
            sources,
            drop: self.operation == HeaderOperation::Move,
        }))
    }
}

/// The output schema of an op that maps row images to `image_out`.
pub(crate) fn images_schema(input: &SchemaRef, image_out: &SchemaRef) -> SchemaRef {
    if image_fields(input).is_none() {
        return image_out.clone();
    }
    let fields: Vec<FieldRef> = input
        .fields()
        .iter()
        .map(|f| match f.name().as_str() {
            "before" | "after" => Arc::new(
                Field::new(
                    f.name(),
                    DataType::Struct(image_out.fields().clone()),
                    f.is_nullable(),
                )
                .with_metadata(f.metadata().clone()),
            ),
            _ => f.clone(),
        })
        .collect();
    Arc::new(Schema::new_with_metadata(fields, input.metadata().clone()))
}

struct HeaderOp {
    output: SchemaRef,
    image_out: SchemaRef,
    sources: Vec<String>,
    drop: bool,
}

impl Op for HeaderOp {
    fn output_schema(&self) -> &SchemaRef {
        &self.output
    }
    fn map(&self, batch: &RecordBatch, _: &Ctx<'_>) -> Result<RecordBatch> {
        let values: Vec<ArrayRef> = self
            .sources
            .iter()
            .map(|s| {
                path_column(batch, s).ok_or_else(|| {
                    rivven_engine::Error::internal(format!("no header column `{s}`"))
                })
            })
            .collect::<Result<_>>()?;
        map_images(batch, &|img: &RecordBatch| {
            let schema = img.schema();
            let mut columns: Vec<ArrayRef> = schema
                .fields()
                .iter()
                .zip(img.columns())
                .filter(|(f, _)| !(self.drop && self.sources.contains(f.name())))
                .map(|(_, c)| c.clone())
                .collect();
            columns.extend(values.iter().cloned());
            Ok(RecordBatch::try_new(self.image_out.clone(), columns)?)
        })
    }
}

/// `drop_headers`: remove metadata columns (`__op`, `__table`, ...) from flat batches.
/// Headers that are absent are ignored; change events keep their envelope (an error).
#[derive(Debug, Clone, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct DropHeaders {
    /// Headers to remove (`op` or `__op`).
    pub headers: Names,
}

impl Validate for DropHeaders {
    fn validate(&self) -> Vec<FieldError> {
        if self.headers.is_empty() {
            return vec![FieldError::new("headers", "list at least one header")];
        }
        Vec::new()
    }
}

impl Spec for DropHeaders {
    fn compile(&self, input: &SchemaRef) -> Result<Arc<dyn Op>, FieldError> {
        if is_change_event_schema(input) {
            return Err(FieldError::new(
                "headers",
                "a change event's envelope cannot be dropped; unwrap it first (extract_new_record_state)",
            ));
        }
        let drop: Vec<String> = self
            .headers
            .iter()
            .filter_map(|h| header_column(input, h))
            .collect();
        let keep: Vec<usize> = input
            .fields()
            .iter()
            .enumerate()
            .filter(|(_, f)| !drop.contains(f.name()))
            .map(|(i, _)| i)
            .collect();
        let schema = Arc::new(
            input
                .project(&keep)
                .map_err(|e| FieldError::new("", e.to_string()))?,
        );
        Ok(Arc::new(Project { schema, keep }))
    }
}

struct Project {
    schema: SchemaRef,
    keep: Vec<usize>,
}

impl Op for Project {
    fn output_schema(&self) -> &SchemaRef {
        &self.schema
    }
    fn map(&self, batch: &RecordBatch, _: &Ctx<'_>) -> Result<RecordBatch> {
        Ok(batch
            .project(&self.keep)?
            .with_schema(self.schema.clone())?)
    }
}

/// `message_timestamp`: the record's timestamp becomes a row field's value. Change events
/// get it in `ts_ms`; flat batches in `__ts_ms` (added if absent). The field may be a
/// timestamp, a date, epoch milliseconds or RFC 3339 text; rows where it is null keep their
/// previous timestamp.
#[derive(Debug, Clone, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct MessageTimestamp {
    /// The row field holding the time.
    pub field: String,
}

impl Validate for MessageTimestamp {}

impl Spec for MessageTimestamp {
    fn compile(&self, input: &SchemaRef) -> Result<Arc<dyn Op>, FieldError> {
        let view = image::view_schema(input);
        let ty = path_type(&view, &self.field).ok_or_else(|| {
            FieldError::new("field", format!("no field `{}` in the row", self.field))
        })?;
        if !matches!(
            ty,
            DataType::Timestamp(..)
                | DataType::Date32
                | DataType::Date64
                | DataType::Int64
                | DataType::Int32
                | DataType::Utf8
                | DataType::LargeUtf8
        ) {
            return Err(FieldError::new(
                "field",
                format!(
                    "`{}` is {ty}; expected a timestamp, date, epoch milliseconds or text",
                    self.field
                ),
            ));
        }
        let change = is_change_event_schema(input);
        let target = if change { "ts_ms" } else { "__ts_ms" };
        let mut fields: Vec<FieldRef> = input.fields().iter().cloned().collect();
        let index = input.index_of(target).ok();
        if index.is_none() {
            fields.push(Arc::new(Field::new(target, DataType::Int64, true)));
        }
        Ok(Arc::new(TimestampOp {
            schema: Arc::new(Schema::new_with_metadata(fields, input.metadata().clone())),
            view,
            field: self.field.clone(),
            index,
        }))
    }
}

struct TimestampOp {
    schema: SchemaRef,
    view: SchemaRef,
    field: String,
    index: Option<usize>,
}

/// Epoch milliseconds of a time-like array.
pub(crate) fn epoch_ms(col: &ArrayRef) -> Result<Int64Array> {
    let ms = match col.data_type() {
        DataType::Int64 => col.clone(),
        DataType::Int32 => cast(col, &DataType::Int64)?,
        DataType::Date32 | DataType::Date64 => cast(
            &cast(col, &DataType::Timestamp(TimeUnit::Millisecond, None))?,
            &DataType::Int64,
        )?,
        DataType::Timestamp(_, tz) => cast(
            &cast(col, &DataType::Timestamp(TimeUnit::Millisecond, tz.clone()))?,
            &DataType::Int64,
        )?,
        _ => cast(
            &cast(
                col,
                &DataType::Timestamp(TimeUnit::Millisecond, Some("UTC".into())),
            )?,
            &DataType::Int64,
        )?,
    };
    Ok(ms.as_primitive::<arrow::datatypes::Int64Type>().clone())
}

impl Op for TimestampOp {
    fn output_schema(&self) -> &SchemaRef {
        &self.schema
    }
    fn map(&self, batch: &RecordBatch, _: &Ctx<'_>) -> Result<RecordBatch> {
        let view = image::view(batch, &self.view)?;
        let col = path_column(&view, &self.field)
            .ok_or_else(|| rivven_engine::Error::internal(format!("no field `{}`", self.field)))?;
        let ms: ArrayRef = Arc::new(epoch_ms(&col)?);
        let mut columns = batch.columns().to_vec();
        match self.index {
            Some(i) => {
                let old = cast(&columns[i], &DataType::Int64)?;
                columns[i] = zip(&is_not_null(&ms)?, &ms, &old)?;
            }
            None => columns.push(ms),
        }
        Ok(RecordBatch::try_new(self.schema.clone(), columns)?)
    }
}

/// `unwrap`: the value becomes one nested field (Kafka Connect's `ExtractField`): a struct
/// field's children become the row's fields; any other field becomes a one-column row.
#[derive(Debug, Clone, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Unwrap {
    /// The field path (`payload`, `after`, `data.attrs`).
    pub field: String,
}

impl Validate for Unwrap {}

impl Spec for Unwrap {
    fn compile(&self, input: &SchemaRef) -> Result<Arc<dyn Op>, FieldError> {
        let view = image::view_schema(input);
        let ty = path_type(&view, &self.field).ok_or_else(|| {
            FieldError::new("field", format!("no field `{}` in the row", self.field))
        })?;
        let fields: Fields = match &ty {
            DataType::Struct(f) => f.clone(),
            other => {
                let name = self.field.rsplit('.').next().unwrap_or(&self.field);
                Fields::from(vec![Field::new(name, other.clone(), true)])
            }
        };
        Ok(Arc::new(UnwrapOp {
            schema: Arc::new(Schema::new_with_metadata(fields, input.metadata().clone())),
            view,
            field: self.field.clone(),
            is_struct: matches!(ty, DataType::Struct(_)),
        }))
    }
}

struct UnwrapOp {
    schema: SchemaRef,
    view: SchemaRef,
    field: String,
    is_struct: bool,
}

impl Op for UnwrapOp {
    fn output_schema(&self) -> &SchemaRef {
        &self.schema
    }
    fn map(&self, batch: &RecordBatch, _: &Ctx<'_>) -> Result<RecordBatch> {
        let view = image::view(batch, &self.view)?;
        let col = path_column(&view, &self.field)
            .ok_or_else(|| rivven_engine::Error::internal(format!("no field `{}`", self.field)))?;
        let columns = if self.is_struct {
            let sa = col.as_struct();
            sa.columns()
                .iter()
                .map(|c| null_by_parent(c, sa.nulls()))
                .collect::<Result<Vec<_>>>()?
        } else {
            vec![col]
        };
        Ok(RecordBatch::try_new_with_options(
            self.schema.clone(),
            columns,
            &arrow::array::RecordBatchOptions::new().with_row_count(Some(batch.num_rows())),
        )?)
    }
}

/// A child array with its parent's nulls applied.
fn null_by_parent(
    child: &ArrayRef,
    parent: Option<&arrow::buffer::NullBuffer>,
) -> Result<ArrayRef> {
    Ok(match parent {
        Some(n) if n.null_count() > 0 => {
            let valid = BooleanArray::new(n.inner().clone(), None);
            arrow::compute::nullif(child, &arrow::compute::not(&valid)?)?
        }
        _ => child.clone(),
    })
}

fn default_delimiter() -> String {
    ".".into()
}

/// `flatten`: nested struct fields become top-level fields named `parent<delimiter>child`,
/// recursively (a change event becomes `op`, `before.id`, ..., `after.id`, ...,
/// `source.table`, ...). A null struct makes its fields null.
#[derive(Debug, Clone, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Flatten {
    /// Separator between names (default `.`).
    #[serde(default = "default_delimiter")]
    pub delimiter: String,
}

fn flat_fields(prefix: &str, delim: &str, fields: &Fields, out: &mut Vec<FieldRef>) {
    for f in fields.iter() {
        let name = if prefix.is_empty() {
            f.name().clone()
        } else {
            format!("{prefix}{delim}{}", f.name())
        };
        match f.data_type() {
            DataType::Struct(children) => flat_fields(&name, delim, children, out),
            ty => out.push(Arc::new(
                Field::new(name, ty.clone(), f.is_nullable() || !prefix.is_empty())
                    .with_metadata(f.metadata().clone()),
            )),
        }
    }
}

fn flat_columns(col: &ArrayRef, out: &mut Vec<ArrayRef>) -> Result<()> {
    match col.as_struct_opt() {
        Some(sa) => {
            for c in sa.columns() {
                flat_columns(&null_by_parent(c, sa.nulls())?, out)?;
            }
        }
        None => out.push(col.clone()),
    }
    Ok(())
}

impl Validate for Flatten {}

impl Spec for Flatten {
    fn compile(&self, input: &SchemaRef) -> Result<Arc<dyn Op>, FieldError> {
        let mut fields = Vec::new();
        flat_fields("", &self.delimiter, input.fields(), &mut fields);
        if let Some(dup) = dup_name(&fields) {
            return Err(FieldError::new(
                "delimiter",
                format!("flattening makes two fields named `{dup}`; choose another delimiter"),
            ));
        }
        Ok(Arc::new(FlattenOp(Arc::new(Schema::new_with_metadata(
            fields,
            input.metadata().clone(),
        )))))
    }
}

struct FlattenOp(SchemaRef);

impl Op for FlattenOp {
    fn output_schema(&self) -> &SchemaRef {
        &self.0
    }
    fn map(&self, batch: &RecordBatch, _: &Ctx<'_>) -> Result<RecordBatch> {
        let mut columns = Vec::with_capacity(self.0.fields().len());
        for c in batch.columns() {
            flat_columns(c, &mut columns)?;
        }
        Ok(RecordBatch::try_new_with_options(
            self.0.clone(),
            columns,
            &arrow::array::RecordBatchOptions::new().with_row_count(Some(batch.num_rows())),
        )?)
    }
}
