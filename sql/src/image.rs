//! Batch shapes: flat batches and change-event batches (`op`, `before`, `after`, `source`,
//! `ts_ms`), and how transforms see their fields.
//!
//! - Field **rewrites** (mask, cast, rename, ...) apply to the row: the batch itself when it
//!   is flat, both row images (`before` and `after`) when it is a change event. They are
//!   compiled once against the *image schema* and applied to each image with
//!   [`map_images`], which keeps each image's nulls.
//! - Field **reads** (filter conditions, predicates, routers) see a *view*: for a flat batch
//!   the batch itself; for a change event the row's current image (`after`, or `before` for
//!   deletes) as top-level columns, plus the envelope columns `op`, `before`, `after`,
//!   `source`, `ts_ms` where no table column has the same name. So `status = 'active'` and
//!   `source.table = 'orders'` both work on change events.

use arrow::array::{Array, ArrayRef, AsArray, RecordBatch, RecordBatchOptions, StructArray};
use arrow::compute::kernels::zip::zip;
use arrow::datatypes::{DataType, Field, FieldRef, Fields, Schema, SchemaRef};
use rivven_engine::batch::is_change_event_schema;
use std::sync::Arc;

use rivven_engine::Result;

/// The envelope columns of a change event, in order.
pub const ENVELOPE: [&str; 5] = ["op", "before", "after", "source", "ts_ms"];

/// The row-image fields of a change-event schema (`after`'s struct fields), or `None` for a
/// flat schema.
pub fn image_fields(schema: &Schema) -> Option<Fields> {
    if !is_change_event_schema(schema) {
        return None;
    }
    match schema.field_with_name("after").ok()?.data_type() {
        DataType::Struct(f) => Some(f.clone()),
        _ => None,
    }
}

/// The schema rewrites compile against: the image's fields (all nullable) for a change
/// event, the schema itself for a flat batch. Schema metadata is kept.
pub fn image_schema(schema: &SchemaRef) -> SchemaRef {
    // Image fields are read as nullable: a null image (`before` of an insert) has null
    // children even where the column is NOT NULL.
    match image_fields(schema) {
        Some(f) => Arc::new(Schema::new_with_metadata(
            f.iter().map(nullable).collect::<Vec<_>>(),
            schema.metadata().clone(),
        )),
        None => schema.clone(),
    }
}

fn struct_batch(sa: &StructArray, schema: SchemaRef) -> Result<RecordBatch> {
    Ok(RecordBatch::try_new_with_options(
        schema,
        sa.columns().to_vec(),
        &RecordBatchOptions::new().with_row_count(Some(sa.len())),
    )?)
}

fn with_nulls(batch: RecordBatch, nulls: Option<arrow::buffer::NullBuffer>) -> Result<ArrayRef> {
    let fields = batch.schema().fields().clone();
    let columns = batch.columns().to_vec();
    if fields.is_empty() {
        return Ok(Arc::new(StructArray::new_empty_fields(
            batch.num_rows(),
            nulls,
        )));
    }
    Ok(Arc::new(StructArray::try_new(fields, columns, nulls)?))
}

/// Apply a row rewrite: to the batch when flat, to `before` and `after` when a change event.
/// `f` gets an image batch whose schema is [`image_schema`] of the input and returns the new
/// image; the envelope's types follow the new image.
pub fn map_images(
    batch: &RecordBatch,
    f: &dyn Fn(&RecordBatch) -> Result<RecordBatch>,
) -> Result<RecordBatch> {
    map_images_with_validity(batch, &|img, _| f(img))
}

/// [`map_images`], where `f` also gets the image's validity: `None` for a flat batch (or an
/// image without nulls); where it is false the row has no such image (the `before` of an
/// insert) and the image batch's values in that row mean nothing.
pub fn map_images_with_validity(
    batch: &RecordBatch,
    f: &dyn Fn(&RecordBatch, Option<&arrow::buffer::NullBuffer>) -> Result<RecordBatch>,
) -> Result<RecordBatch> {
    let schema = batch.schema();
    if image_fields(&schema).is_none() {
        return f(batch, None);
    }
    let img = image_schema(&schema);
    let mut columns = batch.columns().to_vec();
    let mut fields: Vec<FieldRef> = schema.fields().iter().cloned().collect();
    for name in ["before", "after"] {
        let (i, field) = schema.column_with_name(name).ok_or_else(|| {
            rivven_engine::Error::internal(format!("change event without `{name}`"))
        })?;
        let sa = batch.column(i).as_struct();
        let out = f(&struct_batch(sa, img.clone())?, sa.nulls())?;
        let new_fields = out.schema().fields().clone();
        columns[i] = with_nulls(out, sa.nulls().cloned())?;
        fields[i] = Arc::new(
            Field::new(name, DataType::Struct(new_fields), field.is_nullable())
                .with_metadata(field.metadata().clone()),
        );
    }
    let schema = Arc::new(Schema::new_with_metadata(fields, schema.metadata().clone()));
    Ok(RecordBatch::try_new(schema, columns)?)
}

/// The schema of [`view`] for an input schema.
pub fn view_schema(schema: &SchemaRef) -> SchemaRef {
    let Some(image) = image_fields(schema) else {
        return schema.clone();
    };
    let mut fields: Vec<FieldRef> = image.iter().map(nullable).collect();
    for name in ENVELOPE {
        if image.find(name).is_none() {
            if let Ok(f) = schema.field_with_name(name) {
                fields.push(Arc::new(f.clone()));
            }
        }
    }
    Arc::new(Schema::new_with_metadata(fields, schema.metadata().clone()))
}

fn nullable(f: &FieldRef) -> FieldRef {
    if f.is_nullable() {
        f.clone()
    } else {
        Arc::new(f.as_ref().clone().with_nullable(true))
    }
}

/// The batch expressions read: see the module docs.
pub fn view(batch: &RecordBatch, view_schema: &SchemaRef) -> Result<RecordBatch> {
    let schema = batch.schema();
    let Some(image) = image_fields(&schema) else {
        return Ok(batch.clone());
    };
    let after = batch
        .column_by_name("after")
        .ok_or_else(|| rivven_engine::Error::internal("change event without `after`"))?;
    let before = batch
        .column_by_name("before")
        .ok_or_else(|| rivven_engine::Error::internal("change event without `before`"))?;
    let current = if after.null_count() == 0 {
        after.clone()
    } else if after.null_count() == after.len() {
        before.clone()
    } else {
        let has_after = arrow::compute::is_not_null(after)?;
        zip(&has_after, after, before)?
    };
    let current = current.as_struct();
    let mut columns: Vec<ArrayRef> = Vec::with_capacity(view_schema.fields().len());
    for (i, _) in image.iter().enumerate() {
        let child = current.column(i);
        // A null image (a truncate has neither) makes its fields null.
        columns.push(match current.nulls() {
            Some(n) if n.null_count() > 0 => {
                let valid = arrow::array::BooleanArray::new(n.inner().clone(), None);
                arrow::compute::nullif(child, &arrow::compute::not(&valid)?)?
            }
            _ => child.clone(),
        });
    }
    for name in ENVELOPE {
        if image.find(name).is_none() {
            if let Some(c) = batch.column_by_name(name) {
                columns.push(c.clone());
            }
        }
    }
    Ok(RecordBatch::try_new(view_schema.clone(), columns)?)
}

/// The data type at a dotted path (`source.table`), or `None`.
pub fn path_type(schema: &Schema, path: &str) -> Option<DataType> {
    if let Ok(f) = schema.field_with_name(path) {
        return Some(f.data_type().clone());
    }
    let mut parts = path.split('.');
    let mut ty = schema
        .field_with_name(parts.next()?)
        .ok()?
        .data_type()
        .clone();
    for p in parts {
        let DataType::Struct(fields) = &ty else {
            return None;
        };
        ty = fields.find(p)?.1.data_type().clone();
    }
    Some(ty)
}

/// The column at a dotted path; a null struct makes its fields null.
pub fn path_column(batch: &RecordBatch, path: &str) -> Option<ArrayRef> {
    if let Some(c) = batch.column_by_name(path) {
        return Some(c.clone());
    }
    let mut parts = path.split('.');
    let mut col = batch.column_by_name(parts.next()?)?.clone();
    for p in parts {
        let sa = col.as_struct_opt()?;
        let child = sa.column_by_name(p)?.clone();
        col = match sa.nulls() {
            Some(n) if n.null_count() > 0 => {
                let valid = arrow::array::BooleanArray::new(n.inner().clone(), None);
                arrow::compute::nullif(&child, &arrow::compute::not(&valid).ok()?).ok()?
            }
            _ => child,
        };
    }
    Some(col)
}
