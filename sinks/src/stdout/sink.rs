//! The `stdout` sink.

use arrow::array::{
    ArrayRef, RecordBatch, StringArray, StructArray, TimestampMillisecondArray, UInt32Array,
    UInt64Array,
};
use arrow::datatypes::{DataType, Field, Fields, Schema};
use async_trait::async_trait;
use rivven_engine::batch::SinkBatch;
use rivven_engine::config::{FieldError, Validate};
use rivven_engine::connector::Sink;
use rivven_engine::{Error, ErrorKind, Origin, Result};
use schemars::JsonSchema;
use serde::Deserialize;
use std::sync::Arc;
use tokio::io::AsyncWriteExt;

/// Output format.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum StdoutFormat {
    /// One JSON object per line.
    #[default]
    Json,
    /// Indented JSON objects.
    Pretty,
    /// An ASCII table per batch.
    Table,
}

/// `stdout` configuration.
#[derive(Debug, Clone, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct StdoutConfig {
    /// `json`, `pretty` or `table`.
    #[serde(default)]
    pub format: StdoutFormat,
    /// Shorthand for `format: pretty` (only with `format: json`).
    #[serde(default)]
    pub pretty: bool,
    /// Add a `_meta` object (topic, partition, offset, append time) to every record.
    #[serde(default)]
    pub include_metadata: bool,
}

impl StdoutConfig {
    /// The format after applying `pretty`.
    pub fn effective_format(&self) -> StdoutFormat {
        if self.pretty {
            StdoutFormat::Pretty
        } else {
            self.format
        }
    }
}

impl Validate for StdoutConfig {
    fn validate(&self) -> Vec<FieldError> {
        if self.pretty && self.format == StdoutFormat::Table {
            return vec![FieldError::new(
                "pretty",
                "applies to JSON output only; remove it or use `format: pretty`",
            )];
        }
        Vec::new()
    }
}

/// Writes batches to standard output.
pub struct StdoutSink {
    format: StdoutFormat,
    include_metadata: bool,
    out: tokio::io::Stdout,
}

impl StdoutSink {
    /// A sink for `cfg`.
    pub fn new(cfg: StdoutConfig) -> Self {
        Self {
            format: cfg.effective_format(),
            include_metadata: cfg.include_metadata,
            out: tokio::io::stdout(),
        }
    }
}

/// The batch with a `_meta` struct column appended (built columnar, one array per field).
pub fn with_metadata(b: &SinkBatch) -> Result<RecordBatch> {
    let n = b.batch.num_rows();
    let fields = Fields::from(vec![
        Field::new("topic", DataType::Utf8, false),
        Field::new("partition", DataType::UInt32, false),
        Field::new("offset", DataType::UInt64, false),
        Field::new(
            "append_time",
            rivven_engine::batch::timestamp_ms_utc(),
            false,
        ),
    ]);
    let meta = StructArray::try_new(
        fields.clone(),
        vec![
            Arc::new(StringArray::from(vec![b.topic.as_ref(); n])) as ArrayRef,
            Arc::new(UInt32Array::from(vec![b.partition; n])),
            Arc::new(UInt64Array::from_iter_values(
                b.first_offset..b.first_offset + n as u64,
            )),
            Arc::new(
                TimestampMillisecondArray::from(vec![b.append_time_ms; n]).with_timezone("UTC"),
            ),
        ],
        None,
    )?;
    let schema = b.batch.schema();
    let mut all: Vec<Field> = schema.fields().iter().map(|f| f.as_ref().clone()).collect();
    all.push(Field::new("_meta", DataType::Struct(fields), false));
    let mut cols = b.batch.columns().to_vec();
    cols.push(Arc::new(meta));
    Ok(RecordBatch::try_new(
        Arc::new(Schema::new_with_metadata(all, schema.metadata().clone())),
        cols,
    )?)
}

/// One JSON object per row (see [`crate::render`]).
fn json_lines(batch: &RecordBatch, out: &mut Vec<u8>) -> Result<()> {
    let mut w = arrow::json::WriterBuilder::new()
        .with_encoder_factory(crate::render::encoders())
        .build::<_, arrow::json::writer::LineDelimited>(out);
    w.write(batch)?;
    w.finish()?;
    Ok(())
}

/// Render a batch in `format`.
pub fn render(batch: &RecordBatch, format: StdoutFormat) -> Result<Vec<u8>> {
    let mut buf = Vec::with_capacity(batch.get_array_memory_size());
    match format {
        StdoutFormat::Json => json_lines(batch, &mut buf)?,
        StdoutFormat::Pretty => {
            let mut lines = Vec::new();
            json_lines(batch, &mut lines)?;
            for line in lines.split(|b| *b == b'\n').filter(|l| !l.is_empty()) {
                let v: serde_json::Value = serde_json::from_slice(line)
                    .map_err(|e| Error::internal(format!("re-reading JSON: {e}")))?;
                serde_json::to_writer_pretty(&mut buf, &v)
                    .map_err(|e| Error::internal(e.to_string()))?;
                buf.push(b'\n');
            }
        }
        StdoutFormat::Table => {
            let table =
                arrow::util::pretty::pretty_format_batches(&[crate::render::infinity_as_text(
                    batch,
                )?])?;
            buf.extend_from_slice(table.to_string().as_bytes());
            buf.push(b'\n');
        }
    }
    Ok(buf)
}

fn write_error(e: std::io::Error) -> Error {
    if e.kind() == std::io::ErrorKind::BrokenPipe {
        Error::new(
            ErrorKind::Io,
            Origin::External,
            false,
            "standard output was closed",
        )
    } else {
        Error::io("write to standard output", e)
    }
}

#[async_trait]
impl Sink for StdoutSink {
    async fn write(&mut self, batch: &SinkBatch) -> Result<()> {
        let rendered = if self.include_metadata {
            render(&with_metadata(batch)?, self.format)?
        } else {
            render(&batch.batch, self.format)?
        };
        self.out.write_all(&rendered).await.map_err(write_error)
    }

    async fn flush(&mut self) -> Result<()> {
        self.out.flush().await.map_err(write_error)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use arrow::array::{ArrayRef, Int64Array};

    fn sample() -> SinkBatch {
        let schema = Arc::new(Schema::new(vec![
            Field::new("id", DataType::Int64, false),
            Field::new("name", DataType::Utf8, true),
        ]));
        let batch = RecordBatch::try_new(
            schema,
            vec![
                Arc::new(Int64Array::from(vec![1, 2])),
                Arc::new(StringArray::from(vec![Some("a"), None])),
            ],
        )
        .unwrap();
        SinkBatch {
            batch,
            topic: Arc::from("t"),
            partition: 0,
            first_offset: 10,
            end_offset: 12,
            append_time_ms: 0,
            route: None,
        }
    }

    #[test]
    fn json_lines() {
        let out = String::from_utf8(render(&sample().batch, StdoutFormat::Json).unwrap()).unwrap();
        assert_eq!(out, "{\"id\":1,\"name\":\"a\"}\n{\"id\":2}\n");
    }

    #[test]
    fn metadata_and_pretty() {
        let b = with_metadata(&sample()).unwrap();
        let out = String::from_utf8(render(&b, StdoutFormat::Pretty).unwrap()).unwrap();
        let first: serde_json::Value = serde_json::Deserializer::from_str(&out)
            .into_iter()
            .next()
            .unwrap()
            .unwrap();
        assert_eq!(first["_meta"]["offset"], 10);
        assert_eq!(first["_meta"]["topic"], "t");
        assert!(out.contains("\n  \"id\": 1"));
    }

    #[test]
    fn table() {
        let out = String::from_utf8(render(&sample().batch, StdoutFormat::Table).unwrap()).unwrap();
        assert!(out.contains("| id | name |"), "{out}");
    }

    #[test]
    fn table_prints_infinite_dates() {
        let days = arrow::array::Date32Array::from(vec![Some(-i32::MAX), Some(0)]);
        let batch = RecordBatch::try_from_iter([("d", Arc::new(days) as ArrayRef)]).unwrap();
        let out = String::from_utf8(render(&batch, StdoutFormat::Table).unwrap()).unwrap();
        assert!(out.contains("| -infinity  |"), "{out}");
        assert!(out.contains("| 1970-01-01 |"), "{out}");
        assert!(!out.contains("ERROR"), "{out}");
    }
}
