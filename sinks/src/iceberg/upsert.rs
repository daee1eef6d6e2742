//! `commit_mode: upsert` rows: the key they are upserted on, and the buffered changes
//! reduced to the table rows a commit writes (see [`crate::changes`]).

use super::schema;
use crate::changes::{self, DELETE_FLAG};
use arrow::array::RecordBatch;
use arrow::datatypes::{DataType, SchemaRef};
use iceberg::table::Table;
use rivven_engine::{Error, Result};
use std::sync::Arc;

/// The key of `upsert`: `configured`, else the identifier fields of `table`, else the
/// primary key the source put on the rows.
pub fn upsert_key(
    configured: &[String],
    table: Option<&Table>,
    rows: &RecordBatch,
) -> Result<Vec<String>> {
    if !configured.is_empty() {
        return Ok(configured.to_vec());
    }
    if let Some(t) = table {
        let schema = t.metadata().current_schema();
        let ids: Vec<String> = schema
            .identifier_field_ids()
            .filter_map(|id| schema.name_by_field_id(id).map(str::to_string))
            .collect();
        if !ids.is_empty() {
            return Ok(ids);
        }
    }
    changes::key_columns(rows, &[])
}

/// `rows` without its last column, the [`DELETE_FLAG`], when `key` says it has one
/// (`upsert` buffers).
pub fn without_flag(rows: &RecordBatch, key: &[String]) -> Result<RecordBatch> {
    if key.is_empty() {
        return Ok(rows.clone());
    }
    let n = rows.num_columns();
    if rows.schema().field(n - 1).name() != DELETE_FLAG {
        return Err(Error::internal(
            "iceberg: upsert rows without their delete flag",
        ));
    }
    Ok(rows.project(&(0..n - 1).collect::<Vec<_>>())?)
}

/// The buffered upsert rows (each ending with its delete flag) as rows of the table's
/// Arrow schema `target` plus the flag, reduced to the last change per key.
pub fn upsert_rows(
    buffered: &[RecordBatch],
    key: &[String],
    target: &SchemaRef,
) -> Result<RecordBatch> {
    let mut fields: Vec<arrow::datatypes::FieldRef> = target.fields().iter().cloned().collect();
    fields.push(Arc::new(arrow::datatypes::Field::new(
        DELETE_FLAG,
        DataType::Boolean,
        false,
    )));
    let schema = Arc::new(arrow::datatypes::Schema::new(fields));
    let mut out = Vec::with_capacity(buffered.len());
    for b in buffered {
        let rows = schema::conform(&without_flag(b, key)?, target)?;
        let mut columns = rows.columns().to_vec();
        columns.push(b.column(b.num_columns() - 1).clone());
        out.push(RecordBatch::try_new(schema.clone(), columns)?);
    }
    let rows = arrow::compute::concat_batches(&schema, &out)?;
    changes::dedupe(&rows, key)
}

/// The field ids of `key` in `table`'s schema. Each partition field must be a transform
/// of a key column: a row's partition then follows from its key, and a delete in the
/// key's partition reaches every earlier row of the key.
pub fn key_field_ids(table: &Table, key: &[String]) -> Result<Vec<i32>> {
    let metadata = table.metadata();
    let schema = metadata.current_schema();
    let mut ids = Vec::with_capacity(key.len());
    for k in key {
        let f = schema.field_by_name(k).ok_or_else(|| {
            Error::config(format!(
                "iceberg: key column `{k}` is not in table {}",
                table.identifier()
            ))
        })?;
        // Iceberg's identifier-field rule: primitive, not floating point.
        let usable = match f.field_type.as_ref() {
            iceberg::spec::Type::Primitive(p) => !matches!(
                p,
                iceberg::spec::PrimitiveType::Float | iceberg::spec::PrimitiveType::Double
            ),
            _ => false,
        };
        if !usable {
            return Err(Error::config(format!(
                "iceberg: key column `{k}` of {} is {}; an upsert key must be a primitive, \
                 non-floating-point column",
                table.identifier(),
                f.field_type
            )));
        }
        ids.push(f.id);
    }
    for p in metadata.default_partition_spec().fields() {
        if !ids.contains(&p.source_id) {
            let column = schema.name_by_field_id(p.source_id).unwrap_or("?");
            return Err(Error::config(format!(
                "iceberg: table {} is partitioned by `{column}`, which is not a key column \
                 ({}): commit_mode upsert needs every partition field to come from the key",
                table.identifier(),
                key.join(", ")
            )));
        }
    }
    Ok(ids)
}
