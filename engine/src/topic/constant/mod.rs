//! Constant columns in topic frames.
//!
//! Change-event batches repeat a lot: every row of a snapshot batch has `op = r`, a null
//! `before` image and the same `source` fields, and every insert has a null `before`. Stored
//! as is, those columns are a third of a snapshot frame (a null 16-column struct alone is
//! about 90 bytes of zeroed buffers per row). Before a batch is framed, [`compact`] replaces
//! each column whose values are all equal (all null included) by a one-run
//! `RunEndEncoded<Int32, T>` column holding the value once, marks it in the field metadata,
//! and [`expand`] turns it back into a plain `T` column when the frame is read. Readers of
//! the topic therefore see exactly the schema and values that were appended.
//!
//! Columns are compacted at the top level and inside structs without nulls (where each
//! child is a column of its own). Values are compared by their bytes, so `0.0` and `-0.0`
//! are different values and NaNs are equal only with the same bits; a column that does not
//! match exactly is simply stored as is. Batches shorter than [`MIN_ROWS`] are left alone,
//! and so is a batch whose schema already uses the mark key anywhere. Whether a frame's
//! batch was compacted is recorded in the frame itself (see [`segment`](super::segment)), so
//! [`expand`] runs only on batches [`compact`] produced: the producer's own run-end encoded
//! columns and metadata pass through untouched.

use arrow::array::{
    new_null_array, Array, ArrayData, ArrayRef, AsArray, GenericByteArray, Int32Array, RecordBatch,
    RecordBatchOptions, RunArray, StructArray, UInt32Array,
};
use arrow::datatypes::{
    ArrowNativeType, ByteArrayType, DataType, Field, FieldRef, Fields, GenericBinaryType,
    GenericStringType, Int32Type, Schema,
};
use arrow::error::ArrowError;
use std::sync::Arc;

/// Field-metadata key marking a column this module run-end encoded.
pub(crate) const MARK: &str = "rivven.topic.constant";

/// Fewer rows than this are stored as is: the run's own buffers and the work of expanding
/// it would cost more than the repeated values.
pub(crate) const MIN_ROWS: usize = 64;

/// The batch with its constant columns run-end encoded, or `None` when it has none (or
/// its schema already uses [`MARK`]).
pub(crate) fn compact(batch: &RecordBatch) -> Result<Option<RecordBatch>, ArrowError> {
    if batch.num_rows() < MIN_ROWS || i32::try_from(batch.num_rows()).is_err() {
        return Ok(None);
    }
    let schema = batch.schema();
    if schema.fields().iter().any(marked_within) {
        return Ok(None);
    }
    let Some((fields, columns)) = compact_all(schema.fields(), batch.columns())? else {
        return Ok(None);
    };
    let schema = Schema::new_with_metadata(fields, schema.metadata().clone());
    let options = RecordBatchOptions::new().with_row_count(Some(batch.num_rows()));
    RecordBatch::try_new_with_options(Arc::new(schema), columns, &options).map(Some)
}

/// The batch [`compact`] made, with every marked column expanded back to its declared type.
pub(crate) fn expand(batch: RecordBatch) -> Result<RecordBatch, ArrowError> {
    let schema = batch.schema();
    if !schema.fields().iter().any(marked_within) {
        return Ok(batch);
    }
    // One all-zero index array serves every column that repeats a value.
    let zeros = UInt32Array::from(vec![0u32; batch.num_rows()]);
    let (fields, columns) = expand_all(schema.fields(), batch.columns(), &zeros)?;
    let schema = Schema::new_with_metadata(fields, schema.metadata().clone());
    let options = RecordBatchOptions::new().with_row_count(Some(batch.num_rows()));
    RecordBatch::try_new_with_options(Arc::new(schema), columns, &options)
}

/// Compact a list of sibling columns; `None` when none of them changes.
#[allow(clippy::type_complexity)]
fn compact_all(
    fields: &Fields,
    columns: &[ArrayRef],
) -> Result<Option<(Vec<FieldRef>, Vec<ArrayRef>)>, ArrowError> {
    let mut out: Option<(Vec<FieldRef>, Vec<ArrayRef>)> = None;
    for (i, (f, c)) in fields.iter().zip(columns).enumerate() {
        if let Some((nf, nc)) = compact_column(f, c)? {
            let (fs, cs) =
                out.get_or_insert_with(|| (fields.iter().cloned().collect(), columns.to_vec()));
            fs[i] = nf;
            cs[i] = nc;
        }
    }
    Ok(out)
}

fn compact_column(
    field: &FieldRef,
    array: &ArrayRef,
) -> Result<Option<(FieldRef, ArrayRef)>, ArrowError> {
    if is_constant(array) {
        let values = if array.null_count() == 0 {
            array.slice(0, 1)
        } else {
            new_null_array(array.data_type(), 1)
        };
        // `compact` admits only batches whose length fits an i32.
        let len = i32::try_from(array.len()).unwrap_or(i32::MAX);
        // The values field carries a dictionary's `dict_is_ordered`, which IPC keeps only on
        // dictionary-typed fields.
        let values_field = Field::new("values", array.data_type().clone(), true)
            .with_dict_is_ordered(field.dict_is_ordered().unwrap_or(false));
        let ty = DataType::RunEndEncoded(
            Arc::new(Field::new("run_ends", DataType::Int32, false)),
            Arc::new(values_field),
        );
        let run = RunArray::<Int32Type>::from(
            ArrayData::builder(ty)
                .len(array.len())
                .add_child_data(Int32Array::from(vec![len]).into_data())
                .add_child_data(values.into_data())
                .build()?,
        );
        let mut metadata = field.metadata().clone();
        metadata.insert(MARK.to_owned(), String::new());
        let f = field
            .as_ref()
            .clone()
            .with_data_type(run.data_type().clone())
            .with_metadata(metadata);
        return Ok(Some((Arc::new(f), Arc::new(run))));
    }
    let DataType::Struct(children) = field.data_type() else {
        return Ok(None);
    };
    // Below a null slot a child's values are arbitrary: only null-free structs are looked into.
    if array.null_count() > 0 {
        return Ok(None);
    }
    let s = array.as_struct();
    let Some((fields, columns)) = compact_all(children, s.columns())? else {
        return Ok(None);
    };
    let s = StructArray::try_new(fields.into(), columns, None)?;
    let f = field.as_ref().clone().with_data_type(s.data_type().clone());
    Ok(Some((Arc::new(f), Arc::new(s))))
}

/// Whether every value of `array` is the same (all null counts), compared by bytes.
/// [`compact`] has checked the batch's length.
fn is_constant(array: &ArrayRef) -> bool {
    let n = array.len();
    if array.null_count() == n {
        return true;
    }
    if array.null_count() > 0 {
        return false;
    }
    let ty = array.data_type();
    if let Some(width) = ty.primitive_width() {
        let data = array.to_data();
        let start = data.offset() * width;
        let bytes = &data.buffers()[0].as_slice()[start..start + n * width];
        return all_equal_chunks(bytes, width);
    }
    match ty {
        DataType::Boolean => {
            let t = array.as_boolean().true_count();
            t == 0 || t == n
        }
        DataType::FixedSizeBinary(w) => {
            let a = array.as_fixed_size_binary();
            let width = *w as usize;
            // The array's value buffer starts at its first value (slicing slices the buffer).
            width == 0 || all_equal_chunks(&a.value_data()[..n * width], width)
        }
        DataType::Utf8 => bytes_constant(array.as_bytes::<GenericStringType<i32>>()),
        DataType::LargeUtf8 => bytes_constant(array.as_bytes::<GenericStringType<i64>>()),
        DataType::Binary => bytes_constant(array.as_bytes::<GenericBinaryType<i32>>()),
        DataType::LargeBinary => bytes_constant(array.as_bytes::<GenericBinaryType<i64>>()),
        _ => false,
    }
}

fn all_equal_chunks(bytes: &[u8], width: usize) -> bool {
    let (first, rest) = bytes.split_at(width);
    match width {
        8 => {
            let f = u64::from_ne_bytes(first.try_into().unwrap_or_default());
            rest.chunks_exact(8)
                .all(|c| u64::from_ne_bytes(c.try_into().unwrap_or_default()) == f)
        }
        4 => {
            let f = u32::from_ne_bytes(first.try_into().unwrap_or_default());
            rest.chunks_exact(4)
                .all(|c| u32::from_ne_bytes(c.try_into().unwrap_or_default()) == f)
        }
        _ => rest.chunks_exact(width).all(|c| c == first),
    }
}

/// One pass that stops at the first value unlike the first (values of equal length that
/// differ, such as LSNs or UUIDs, are told apart as early as values of other lengths).
fn bytes_constant<T: ByteArrayType>(a: &GenericByteArray<T>) -> bool {
    let offsets = a.value_offsets();
    let data = a.value_data();
    let first = &data[offsets[0].as_usize()..offsets[1].as_usize()];
    offsets[1..]
        .windows(2)
        .all(|w| &data[w[0].as_usize()..w[1].as_usize()] == first)
}

/// Whether the field, or a field nested in it, was compacted.
fn marked_within(field: &FieldRef) -> bool {
    field.metadata().contains_key(MARK)
        || matches!(field.data_type(), DataType::Struct(c) if c.iter().any(marked_within))
}

/// Expand a list of sibling columns.
#[allow(clippy::type_complexity)]
fn expand_all(
    fields: &Fields,
    columns: &[ArrayRef],
    zeros: &UInt32Array,
) -> Result<(Vec<FieldRef>, Vec<ArrayRef>), ArrowError> {
    fields
        .iter()
        .zip(columns)
        .map(|(f, c)| expand_column(f, c, zeros))
        .collect::<Result<Vec<_>, _>>()
        .map(|pairs| pairs.into_iter().unzip())
}

fn expand_column(
    field: &FieldRef,
    array: &ArrayRef,
    zeros: &UInt32Array,
) -> Result<(FieldRef, ArrayRef), ArrowError> {
    if field.metadata().contains_key(MARK) {
        let DataType::RunEndEncoded(_, values_field) = field.data_type() else {
            return Err(ArrowError::InvalidArgumentError(format!(
                "column {} is marked constant but is {}",
                field.name(),
                field.data_type()
            )));
        };
        let run = array
            .as_run_opt::<Int32Type>()
            .ok_or_else(|| ArrowError::InvalidArgumentError("bad constant column".into()))?;
        let values = run.values();
        if values.len() != 1 {
            return Err(ArrowError::InvalidArgumentError(format!(
                "constant column {} holds {} values",
                field.name(),
                values.len()
            )));
        }
        let n = array.len();
        let expanded = if values.null_count() == 1 {
            new_null_array(values_field.data_type(), n)
        } else {
            arrow::compute::take(values.as_ref(), &zeros.slice(0, n), None)?
        };
        let mut metadata = field.metadata().clone();
        metadata.remove(MARK);
        let f = field
            .as_ref()
            .clone()
            .with_data_type(values_field.data_type().clone())
            .with_dict_is_ordered(values_field.dict_is_ordered().unwrap_or(false))
            .with_metadata(metadata);
        return Ok((Arc::new(f), expanded));
    }
    match field.data_type() {
        DataType::Struct(children) if children.iter().any(marked_within) => {
            let s = array.as_struct();
            let (fields, columns) = expand_all(children, s.columns(), zeros)?;
            let s = StructArray::try_new(fields.into(), columns, s.nulls().cloned())?;
            let f = field.as_ref().clone().with_data_type(s.data_type().clone());
            Ok((Arc::new(f), Arc::new(s)))
        }
        _ => Ok((field.clone(), array.clone())),
    }
}

#[cfg(test)]
mod tests;
