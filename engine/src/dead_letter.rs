//! Dead-letter rows: records that a transform failed on, or that a source could not decode,
//! kept with the reason instead of failing the pipeline.
//!
//! A dead-letter row is the record as it was, its own columns first, followed by three
//! `Utf8` columns in this order: [`DLQ_ERROR`] (what went wrong), [`DLQ_TRANSFORM`] (the
//! step or decoder that failed) and [`DLQ_TOPIC`] (where the record was bound). Every
//! producer of dead-letter rows builds them with [`rows`], so a dead-letter topic has one
//! layout whoever wrote to it.

use crate::error::{Error, Result};
use arrow::array::{ArrayRef, RecordBatch, StringArray};
use arrow::datatypes::{DataType, Field, FieldRef, Schema};
use std::sync::Arc;

/// The reason a record failed.
pub const DLQ_ERROR: &str = "__dlq_error";
/// The step or decoder that failed (`transforms[2] (cast)`, `postgres-cdc decode`).
pub const DLQ_TRANSFORM: &str = "__dlq_transform";
/// The topic (or destination) the record was bound for.
pub const DLQ_TOPIC: &str = "__dlq_topic";
/// The dead-letter columns, in the order they follow the record's own.
pub const COLUMNS: [&str; 3] = [DLQ_ERROR, DLQ_TRANSFORM, DLQ_TOPIC];

/// `records` followed by the dead-letter columns, every row with the same `error`, `stage`
/// and `bound_for`. Dead-letter columns already present (a dead-letter topic read back,
/// failing again) are replaced, so a row carries exactly one reason. Schema metadata is
/// kept.
pub fn rows(
    records: &RecordBatch,
    error: &str,
    stage: &str,
    bound_for: &str,
) -> Result<RecordBatch> {
    let n = records.num_rows();
    let schema = records.schema();
    let kept: Vec<usize> = (0..schema.fields().len())
        .filter(|&i| !COLUMNS.contains(&schema.field(i).name().as_str()))
        .collect();
    let mut fields: Vec<FieldRef> = kept.iter().map(|&i| schema.fields()[i].clone()).collect();
    let mut columns: Vec<ArrayRef> = kept.iter().map(|&i| records.column(i).clone()).collect();
    for (name, value) in COLUMNS.into_iter().zip([error, stage, bound_for]) {
        fields.push(Arc::new(Field::new(name, DataType::Utf8, false)));
        columns.push(Arc::new(StringArray::from_iter_values(
            std::iter::repeat_n(value, n),
        )));
    }
    RecordBatch::try_new(
        Arc::new(Schema::new_with_metadata(fields, schema.metadata().clone())),
        columns,
    )
    .map_err(|e| Error::internal(format!("dead-letter rows: {e}")))
}

#[cfg(test)]
mod tests {
    use super::*;
    use arrow::array::{AsArray, Int32Array};

    #[test]
    fn record_columns_first_then_one_reason() {
        let schema = Arc::new(Schema::new(vec![Field::new("id", DataType::Int32, false)]));
        let b = RecordBatch::try_new(schema, vec![Arc::new(Int32Array::from(vec![1, 2]))]).unwrap();
        let once = rows(&b, "bad", "transforms[0] (cast)", "t").unwrap();
        let names: Vec<&str> = once
            .schema_ref()
            .fields()
            .iter()
            .map(|f| f.name().as_str())
            .collect();
        assert_eq!(names, ["id", DLQ_ERROR, DLQ_TRANSFORM, DLQ_TOPIC]);
        let twice = rows(&once, "worse", "transforms[1] (sql)", "dlq").unwrap();
        assert_eq!(twice.num_columns(), 4);
        assert_eq!(twice.column(1).as_string::<i32>().value(1), "worse");
        assert_eq!(twice.column(3).as_string::<i32>().value(0), "dlq");
    }
}
