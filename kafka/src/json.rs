//! Rows as JSON objects, written by arrow-json straight from the columns.

use arrow::array::RecordBatch;
use bytes::Bytes;
use rivven_engine::{Error, Result};

/// Each row of `rows` as one JSON object (nulls written as `null`), slices of one
/// buffer.
pub(crate) fn rows(rows: &RecordBatch) -> Result<Vec<Bytes>> {
    let mut buf = Vec::with_capacity(rows.get_array_memory_size() + rows.num_rows() * 2);
    {
        let mut w = arrow::json::WriterBuilder::new()
            .with_explicit_nulls(true)
            .build::<_, arrow::json::writer::LineDelimited>(&mut buf);
        w.write(rows)?;
        w.finish()?;
    }
    let buf = Bytes::from(buf);
    let mut out = Vec::with_capacity(rows.num_rows());
    let mut start = 0;
    // JSON text escapes newlines inside strings: every b'\n' ends a row.
    for (i, b) in buf.iter().enumerate() {
        if *b == b'\n' {
            out.push(buf.slice(start..i));
            start = i + 1;
        }
    }
    if out.len() != rows.num_rows() {
        return Err(Error::internal(format!(
            "kafka: {} JSON rows written for {} rows",
            out.len(),
            rows.num_rows()
        )));
    }
    Ok(out)
}
