//! Change batches as table rows, for sinks that upsert: each row becomes the row image the
//! table should hold (the `after` image; for deletes the `before` image, flagged), the
//! change-event metadata columns a sink's config keeps are added, and only the last change
//! per key survives.
//!
//! Two input shapes are accepted: the canonical change events (`op`, `before`, `after`,
//! `source`, `ts_ms`) and flat rows, as `extract_new_record_state` leaves them, where a
//! delete is `__deleted = true` or `__op = 'd'`. The key is the configured key columns, or
//! the batch's [`META_KEY`] metadata (set by CDC sources from the primary key).

use arrow::array::{
    Array, ArrayRef, AsArray, BooleanArray, RecordBatch, StringArray, StructArray, UInt32Array,
};
use arrow::compute::kernels::zip::zip;
use arrow::datatypes::{DataType, Field, Schema};
use arrow::row::{RowConverter, SortField};
use rivven_engine::batch::{is_change_event_schema, op, META_KEY};
use rivven_engine::{Error, Result};
use schemars::JsonSchema;
use serde::Deserialize;
use std::collections::{BTreeMap, HashSet};
use std::sync::Arc;

/// The name of the delete-flag column of [`table_rows`]' output (never written to tables).
pub const DELETE_FLAG: &str = "__rivven_delete";

/// Change-event metadata kept as table columns: the metadata name and the column it
/// becomes. Metadata not listed is dropped.
#[derive(Debug, Clone, Default, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct MetadataColumns {
    /// Column for the operation code (`c`, `u`, `d`, `r`).
    #[serde(default)]
    pub op: Option<String>,
    /// Column for the source position (`source.pos`: LSN, binlog position, GTID).
    #[serde(default)]
    pub pos: Option<String>,
    /// Column for the source commit time (`source.ts_ms`).
    #[serde(default)]
    pub source_ts_ms: Option<String>,
    /// Column for the source table (`source.table`).
    #[serde(default)]
    pub table: Option<String>,
    /// Column for the source transaction id (`source.txid`).
    #[serde(default)]
    pub txid: Option<String>,
}

impl MetadataColumns {
    /// `(column name, where it comes from)` for each kept metadata field.
    fn kept(&self) -> Vec<(&str, Meta)> {
        [
            (&self.op, Meta::Op),
            (&self.pos, Meta::Source("pos")),
            (&self.source_ts_ms, Meta::Source("ts_ms")),
            (&self.table, Meta::Source("table")),
            (&self.txid, Meta::Source("txid")),
        ]
        .into_iter()
        .filter_map(|(name, m)| Some((name.as_deref()?, m)))
        .collect()
    }

    /// No metadata is kept.
    pub fn is_empty(&self) -> bool {
        self.kept().is_empty()
    }

    /// Names must be distinct and non-empty.
    pub fn problems(&self) -> Vec<String> {
        let mut seen = HashSet::new();
        let mut out = Vec::new();
        for (name, _) in self.kept() {
            if name.is_empty() {
                out.push("empty column name".to_string());
            } else if !seen.insert(name) {
                out.push(format!("column `{name}` named twice"));
            }
        }
        out
    }
}

#[derive(Debug, Clone, Copy)]
enum Meta {
    Op,
    Source(&'static str),
}

/// The table rows of one change batch, and the changes that cannot be applied.
#[derive(Debug)]
pub struct TableRows {
    /// Flat columns plus a boolean [`DELETE_FLAG`] column (last), at most one row per key
    /// (the last change of each key, in batch order).
    pub rows: RecordBatch,
    /// Input rows that cannot be applied (a truncate, a null key), with the reason.
    pub refused: Option<(RecordBatch, String)>,
}

/// The table rows of one change batch (see [`TableRows`]). A missing key or metadata field
/// is a configuration error; a bad row is refused on its own.
pub fn table_rows(
    batch: &RecordBatch,
    key: &[String],
    meta: &MetadataColumns,
) -> Result<TableRows> {
    let (flat, deleted, truncate) = if is_change_event_schema(&batch.schema()) {
        from_change_events(batch, meta)?
    } else {
        let (flat, deleted) = from_flat_rows(batch)?;
        let n = flat.num_rows();
        (flat, deleted, BooleanArray::from(vec![false; n]))
    };
    let key = key_columns(batch, key)?;
    let mut bad: Vec<bool> = truncate.iter().map(|t| t == Some(true)).collect();
    let mut reason = bad
        .iter()
        .any(|b| *b)
        .then(|| "a truncate cannot be applied as an upsert (filter `op = 't'` out)".to_string());
    for k in &key {
        let c = flat
            .column_by_name(k)
            .ok_or_else(|| Error::config(format!("upsert: key column `{k}` is not in the rows")))?;
        for (i, b) in bad.iter_mut().enumerate() {
            if c.is_null(i) && !*b {
                *b = true;
                reason.get_or_insert_with(|| format!("a change with a null key `{k}`"));
            }
        }
    }
    let refused = match reason {
        None => None,
        Some(why) => {
            let bad_mask = BooleanArray::from(bad.clone());
            let good_mask = arrow::compute::not(&bad_mask)?;
            let refused = arrow::compute::filter_record_batch(batch, &bad_mask)?;
            let flat = arrow::compute::filter_record_batch(&flat, &good_mask)?;
            let deleted = arrow::compute::filter(&deleted, &good_mask)?;
            let rows = last_per_key(&flat, deleted.as_boolean(), &key)?;
            return Ok(TableRows {
                rows,
                refused: Some((refused, why)),
            });
        }
    };
    Ok(TableRows {
        rows: last_per_key(&flat, &deleted, &key)?,
        refused,
    })
}

/// The key columns: `configured`, else the batch's `rivven.key` metadata.
pub fn key_columns(batch: &RecordBatch, configured: &[String]) -> Result<Vec<String>> {
    if !configured.is_empty() {
        return Ok(configured.to_vec());
    }
    let schema = batch.schema();
    let from_meta: Vec<String> = schema
        .metadata()
        .get(META_KEY)
        .map(|k| {
            k.split(',')
                .map(str::trim)
                .filter(|k| !k.is_empty())
                .map(str::to_string)
                .collect()
        })
        .unwrap_or_default();
    if from_meta.is_empty() {
        return Err(Error::config(
            "upsert: the rows carry no key (no rivven.key metadata from the source); set \
             key_columns",
        ));
    }
    Ok(from_meta)
}

fn op_strings(batch: &RecordBatch, name: &str) -> Result<Option<StringArray>> {
    let Some(c) = batch.column_by_name(name) else {
        return Ok(None);
    };
    let s = arrow::compute::cast(c, &DataType::Utf8)?;
    Ok(Some(s.as_string::<i32>().clone()))
}

/// Flat rows of change events, their delete flags and their truncate flags.
fn from_change_events(
    batch: &RecordBatch,
    meta: &MetadataColumns,
) -> Result<(RecordBatch, BooleanArray, BooleanArray)> {
    let ops = op_strings(batch, "op")?.ok_or_else(|| Error::internal("op column missing"))?;
    let truncate: BooleanArray = ops.iter().map(|o| Some(o == Some(op::TRUNCATE))).collect();
    let deleted: BooleanArray = ops.iter().map(|o| Some(o == Some(op::DELETE))).collect();
    let image = |name: &str| -> Result<StructArray> {
        batch
            .column_by_name(name)
            .and_then(|c| c.as_any().downcast_ref::<StructArray>())
            .cloned()
            .ok_or_else(|| Error::data(format!("upsert: `{name}` is not a struct")))
    };
    let (before, after) = (image("before")?, image("after")?);
    let mut fields: Vec<Field> = Vec::new();
    let mut columns: Vec<ArrayRef> = Vec::new();
    for (i, f) in after.fields().iter().enumerate() {
        let a = after.column(i);
        let col = match before.column_by_name(f.name()) {
            Some(b) if b.data_type() == a.data_type() => zip(&deleted, b, a)?,
            _ => a.clone(),
        };
        fields.push(Field::new(f.name(), f.data_type().clone(), true));
        columns.push(col);
    }
    let source = batch
        .column_by_name("source")
        .and_then(|c| c.as_any().downcast_ref::<StructArray>());
    for (name, m) in meta.kept() {
        let col: ArrayRef = match m {
            Meta::Op => batch
                .column_by_name("op")
                .cloned()
                .ok_or_else(|| Error::internal("op column missing"))?,
            Meta::Source(field) => source
                .and_then(|s| s.column_by_name(field))
                .cloned()
                .ok_or_else(|| {
                    Error::config(format!(
                        "upsert: metadata_columns: the change events have no source.{field}"
                    ))
                })?,
        };
        if fields.iter().any(|f| f.name() == name) {
            return Err(Error::config(format!(
                "upsert: metadata column `{name}` collides with a table column"
            )));
        }
        fields.push(Field::new(name, col.data_type().clone(), true));
        columns.push(col);
    }
    let schema = Schema::new(fields).with_metadata(batch.schema().metadata().clone());
    Ok((
        RecordBatch::try_new(Arc::new(schema), columns)?,
        deleted,
        truncate,
    ))
}

fn from_flat_rows(batch: &RecordBatch) -> Result<(RecordBatch, BooleanArray)> {
    let n = batch.num_rows();
    let deleted: BooleanArray = if let Some(d) = batch.column_by_name("__deleted") {
        let d = arrow::compute::cast(d, &DataType::Boolean)?;
        d.as_boolean()
            .iter()
            .map(|v| Some(v == Some(true)))
            .collect()
    } else if let Some(ops) = op_strings(batch, "__op")? {
        ops.iter().map(|o| Some(o == Some(op::DELETE))).collect()
    } else {
        BooleanArray::from(vec![false; n])
    };
    let schema = batch.schema();
    let keep: Vec<usize> = (0..schema.fields().len())
        .filter(|&i| schema.field(i).name() != "__deleted")
        .collect();
    Ok((batch.project(&keep)?, deleted))
}

/// Rows of [`table_rows`] (several batches concatenated) reduced again to the last row per
/// key.
pub fn dedupe(rows: &RecordBatch, key: &[String]) -> Result<RecordBatch> {
    let n = rows.num_columns();
    let deleted = rows
        .column(n - 1)
        .as_boolean_opt()
        .ok_or_else(|| Error::internal("upsert: delete flag missing"))?
        .clone();
    let data = rows.project(&(0..n - 1).collect::<Vec<_>>())?;
    last_per_key(&data, &deleted, key)
}

/// The last row of each key (in batch order), with the delete flag as the last column.
fn last_per_key(rows: &RecordBatch, deleted: &BooleanArray, key: &[String]) -> Result<RecordBatch> {
    let mut key_arrays = Vec::with_capacity(key.len());
    for k in key {
        let c = rows.column_by_name(k).ok_or_else(|| {
            Error::data(format!("upsert: key column `{k}` is not in the rows")).retryable(false)
        })?;
        if let Some(i) = (0..c.len()).find(|&i| c.is_null(i)) {
            return Err(
                Error::data(format!("upsert: row {i} has a null key `{k}`")).retryable(false)
            );
        }
        key_arrays.push(c.clone());
    }
    let converter = RowConverter::new(
        key_arrays
            .iter()
            .map(|a| SortField::new(a.data_type().clone()))
            .collect(),
    )?;
    let keys = converter.convert_columns(&key_arrays)?;
    let mut seen = HashSet::with_capacity(rows.num_rows());
    let mut keep: Vec<u32> = Vec::with_capacity(rows.num_rows());
    for i in (0..rows.num_rows()).rev() {
        if seen.insert(keys.row(i)) {
            keep.push(i as u32);
        }
    }
    keep.reverse();
    let idx = UInt32Array::from(keep);
    let mut columns = rows
        .columns()
        .iter()
        .map(|c| arrow::compute::take(c, &idx, None))
        .collect::<std::result::Result<Vec<_>, _>>()?;
    columns.push(arrow::compute::take(deleted, &idx, None)?);
    let mut fields: Vec<Field> = rows
        .schema()
        .fields()
        .iter()
        .map(|f| f.as_ref().clone())
        .collect();
    fields.push(Field::new(DELETE_FLAG, DataType::Boolean, false));
    let schema = Schema::new(fields).with_metadata(rows.schema().metadata().clone());
    Ok(RecordBatch::try_new(Arc::new(schema), columns)?)
}

/// Group consecutive items that share a key, keeping order: `[(k, [items])]`.
pub fn runs<K: PartialEq + Clone, T>(items: Vec<(K, T)>) -> Vec<(K, Vec<T>)> {
    let mut out: Vec<(K, Vec<T>)> = Vec::new();
    for (k, t) in items {
        match out.last_mut() {
            Some((last, v)) if *last == k => v.push(t),
            _ => out.push((k, vec![t])),
        }
    }
    out
}

/// Offsets after the last row per topic partition, from `(topic, partition, next)` items.
pub fn offsets_of<'a>(
    items: impl IntoIterator<Item = &'a (String, u32, u64)>,
) -> BTreeMap<(String, u32), u64> {
    let mut out = BTreeMap::new();
    for (t, p, o) in items {
        let e = out.entry((t.clone(), *p)).or_insert(*o);
        *e = (*e).max(*o);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use arrow::array::{Int64Array, StringArray};
    use arrow::datatypes::Fields;

    fn events(ops: &[&str], ids: &[i64], names: &[Option<&str>]) -> RecordBatch {
        let cols: Fields = vec![
            Field::new("id", DataType::Int64, false),
            Field::new("name", DataType::Utf8, true),
        ]
        .into();
        let image = |valid: Vec<bool>| -> ArrayRef {
            Arc::new(StructArray::new(
                cols.clone(),
                vec![
                    Arc::new(Int64Array::from(ids.to_vec())),
                    Arc::new(StringArray::from(names.to_vec())),
                ],
                Some(valid.into()),
            ))
        };
        let source_fields: Fields = vec![
            Field::new("table", DataType::Utf8, true),
            Field::new("pos", DataType::Utf8, true),
        ]
        .into();
        let source = StructArray::new(
            source_fields.clone(),
            vec![
                Arc::new(StringArray::from(vec!["t"; ops.len()])),
                Arc::new(StringArray::from(vec!["0/1"; ops.len()])),
            ],
            None,
        );
        let schema = Schema::new(vec![
            Field::new("op", DataType::Utf8, false),
            Field::new("before", DataType::Struct(cols.clone()), true),
            Field::new("after", DataType::Struct(cols.clone()), true),
            Field::new("source", DataType::Struct(source_fields), false),
            Field::new("ts_ms", DataType::Int64, false),
        ]);
        let mut md = std::collections::HashMap::new();
        md.insert(META_KEY.to_string(), "id".to_string());
        RecordBatch::try_new(
            Arc::new(schema.with_metadata(md)),
            vec![
                Arc::new(StringArray::from(ops.to_vec())),
                image(ops.iter().map(|o| *o != "c").collect()),
                image(ops.iter().map(|o| *o != "d").collect()),
                Arc::new(source),
                Arc::new(Int64Array::from(vec![0; ops.len()])),
            ],
        )
        .unwrap()
    }

    #[test]
    fn the_last_change_per_key_wins_and_deletes_are_flagged() {
        let b = events(
            &["c", "c", "u", "d", "c"],
            &[1, 2, 1, 2, 3],
            &[Some("a"), Some("b"), Some("a2"), Some("b"), None],
        );
        let rows = table_rows(&b, &[], &MetadataColumns::default())
            .unwrap()
            .rows;
        let schema = rows.schema();
        let names: Vec<&str> = schema.fields().iter().map(|f| f.name().as_str()).collect();
        assert_eq!(names, ["id", "name", DELETE_FLAG]);
        let ids = rows
            .column(0)
            .as_any()
            .downcast_ref::<Int64Array>()
            .unwrap();
        assert_eq!(ids.values(), &[1, 2, 3]);
        let name = rows.column(1).as_string::<i32>();
        assert_eq!(name.value(0), "a2");
        let del = rows.column(2).as_boolean();
        assert_eq!(
            del.iter().collect::<Vec<_>>(),
            [Some(false), Some(true), Some(false)]
        );
    }

    #[test]
    fn metadata_columns_are_kept_under_their_names() {
        let b = events(&["c"], &[1], &[Some("a")]);
        let meta = MetadataColumns {
            op: Some("_op".into()),
            ..Default::default()
        };
        let rows = table_rows(&b, &[], &meta).unwrap().rows;
        assert_eq!(rows.schema().field(2).name(), "_op");
        assert_eq!(rows.column(2).as_string::<i32>().value(0), "c");
    }

    #[test]
    fn flat_rows_use_deleted_or_op_and_need_a_key() {
        let b = RecordBatch::try_from_iter(vec![
            ("id", Arc::new(Int64Array::from(vec![1, 1])) as ArrayRef),
            (
                "__op",
                Arc::new(StringArray::from(vec!["c", "d"])) as ArrayRef,
            ),
        ])
        .unwrap();
        assert!(table_rows(&b, &[], &MetadataColumns::default())
            .unwrap_err()
            .to_string()
            .contains("key_columns"));
        let rows = table_rows(&b, &["id".into()], &MetadataColumns::default())
            .unwrap()
            .rows;
        assert_eq!(rows.num_rows(), 1);
        assert!(rows.column(2).as_boolean().value(0));
    }

    #[test]
    fn truncates_are_refused_alone() {
        let b = events(&["c", "t", "c"], &[1, 2, 3], &[Some("a"), None, Some("c")]);
        let out = table_rows(&b, &[], &MetadataColumns::default()).unwrap();
        assert_eq!(out.rows.num_rows(), 2);
        let (refused, why) = out.refused.unwrap();
        assert_eq!(refused.num_rows(), 1);
        assert!(why.contains("truncate"), "{why}");
    }
}
