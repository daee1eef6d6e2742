//! The text formats (`jsonl`, `json`, `csv`) and their output compression.

use super::encoder::{
    with_parent_nulls, Compression, FileEncoder, Format, FormatWriter, SharedBuf,
};
use arrow::array::{Array, ArrayRef, RecordBatch, StringArray, StructArray};
use arrow::buffer::NullBuffer;
use arrow::datatypes::{DataType, Field, Schema, SchemaRef};
use arrow::json::writer::{JsonArray, LineDelimited};
use arrow::util::display::{ArrayFormatter, FormatOptions};
use rivven_engine::{Error, Result};
use schemars::JsonSchema;
use serde::Deserialize;
use std::io::Write;
use std::sync::Arc;

/// The CSV field delimiter: `comma`, `tab`, `semicolon`, `pipe`, or any single ASCII
/// character.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, JsonSchema)]
#[serde(try_from = "String")]
#[schemars(with = "String")]
pub struct CsvDelimiter(pub u8);

impl Default for CsvDelimiter {
    fn default() -> Self {
        CsvDelimiter(b',')
    }
}

impl TryFrom<String> for CsvDelimiter {
    type Error = String;

    fn try_from(s: String) -> std::result::Result<Self, String> {
        let byte = match s.to_ascii_lowercase().as_str() {
            "comma" => b',',
            "tab" | "\\t" => b'\t',
            "semicolon" => b';',
            "pipe" => b'|',
            _ if s.len() == 1 && s.is_ascii() && s != "\"" && s != "\n" && s != "\r" => {
                s.as_bytes()[0]
            }
            _ => {
                return Err(format!(
                    "`{s}` is not a delimiter; use comma, tab, semicolon, pipe or one ASCII \
                     character other than a quote or a line break"
                ))
            }
        };
        Ok(CsvDelimiter(byte))
    }
}

fn yes() -> bool {
    true
}

/// `csv:` options.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct CsvOptions {
    /// Field delimiter (default `comma`).
    #[serde(default)]
    pub delimiter: CsvDelimiter,
    /// Write a header line with the column names (default true).
    #[serde(default = "yes", alias = "include_header")]
    pub header: bool,
}

impl Default for CsvOptions {
    fn default() -> Self {
        CsvOptions {
            delimiter: CsvDelimiter::default(),
            header: true,
        }
    }
}

/// `jsonl`, `json` or `csv`, optionally compressed.
#[derive(Debug)]
pub(super) struct TextFormat {
    format: Format,
    compression: Compression,
    csv: CsvOptions,
}

impl TextFormat {
    pub(super) fn new(format: Format, compression: Compression, csv: CsvOptions) -> Self {
        TextFormat {
            format,
            compression,
            csv,
        }
    }
}

impl FormatWriter for TextFormat {
    fn name(&self) -> &'static str {
        self.format.name()
    }

    fn extension(&self) -> String {
        format!(".{}{}", self.name(), self.compression.extension())
    }

    fn supports_append(&self) -> bool {
        self.format != Format::Json
    }

    fn open(&self, schema: SchemaRef) -> Result<Box<dyn FileEncoder>> {
        let buf = SharedBuf::default();
        let out = Compressor::new(self.compression, buf.clone())?;
        let writer = match self.format {
            Format::Json => TextWriter::Json(
                arrow::json::WriterBuilder::new()
                    .with_explicit_nulls(true)
                    .with_encoder_factory(crate::render::encoders())
                    .build::<_, JsonArray>(out),
            ),
            Format::Csv => TextWriter::Csv(
                Box::new(
                    arrow::csv::WriterBuilder::new()
                        .with_header(self.csv.header)
                        .with_delimiter(self.csv.delimiter.0)
                        .build(out),
                ),
                CsvShape::of(&schema),
            ),
            _ => TextWriter::Jsonl(
                arrow::json::WriterBuilder::new()
                    .with_explicit_nulls(true)
                    .with_encoder_factory(crate::render::encoders())
                    .build::<_, LineDelimited>(out),
            ),
        };
        Ok(Box::new(TextEncoder { writer, buf }))
    }
}

enum TextWriter {
    Jsonl(arrow::json::Writer<Compressor, LineDelimited>),
    Json(arrow::json::Writer<Compressor, JsonArray>),
    Csv(Box<arrow::csv::Writer<Compressor>>, CsvShape),
}

struct TextEncoder {
    writer: TextWriter,
    buf: SharedBuf,
}

impl FileEncoder for TextEncoder {
    fn write(&mut self, batch: &RecordBatch) -> Result<()> {
        match &mut self.writer {
            TextWriter::Jsonl(w) => w.write(batch)?,
            TextWriter::Json(w) => w.write(batch)?,
            TextWriter::Csv(w, shape) => w.write(&shape.apply(batch)?)?,
        }
        Ok(())
    }

    fn take(&mut self) -> Vec<u8> {
        self.buf.take()
    }

    fn size(&self) -> u64 {
        self.buf.total()
    }

    fn finish(self: Box<Self>) -> Result<Vec<u8>> {
        let out = match self.writer {
            TextWriter::Jsonl(mut w) => {
                w.finish()?;
                w.into_inner()
            }
            TextWriter::Json(mut w) => {
                w.finish()?;
                w.into_inner()
            }
            TextWriter::Csv(w, _) => w.into_inner(),
        };
        out.finish()?;
        Ok(self.buf.take())
    }
}

/// The output stream of a text writer: the shared buffer, through a compressor.
enum Compressor {
    None(SharedBuf),
    Gzip(flate2::write::GzEncoder<SharedBuf>),
    Zstd(zstd::stream::write::Encoder<'static, SharedBuf>),
    Snappy(Box<snap::write::FrameEncoder<SharedBuf>>),
    Lz4(lz4_flex::frame::FrameEncoder<SharedBuf>),
}

impl Compressor {
    fn new(c: Compression, buf: SharedBuf) -> Result<Self> {
        Ok(match c {
            Compression::None => Compressor::None(buf),
            Compression::Gzip => Compressor::Gzip(flate2::write::GzEncoder::new(
                buf,
                flate2::Compression::default(),
            )),
            Compression::Zstd => Compressor::Zstd(
                zstd::stream::write::Encoder::new(buf, 3)
                    .map_err(|e| Error::io("start zstd stream", e))?,
            ),
            Compression::Snappy => {
                Compressor::Snappy(Box::new(snap::write::FrameEncoder::new(buf)))
            }
            Compression::Lz4 => Compressor::Lz4(lz4_flex::frame::FrameEncoder::new(buf)),
        })
    }

    /// Write the compressed stream's trailer.
    fn finish(self) -> Result<()> {
        let context = "finish compressed stream";
        match self {
            Compressor::None(_) => Ok(()),
            Compressor::Gzip(e) => e.finish().map(drop).map_err(|e| Error::io(context, e)),
            Compressor::Zstd(e) => e.finish().map(drop).map_err(|e| Error::io(context, e)),
            Compressor::Snappy(e) => e
                .into_inner()
                .map(drop)
                .map_err(|e| Error::io(context, e.into_error())),
            Compressor::Lz4(e) => e
                .finish()
                .map(drop)
                .map_err(|e| Error::internal(format!("{context}: {e}"))),
        }
    }
}

impl Write for Compressor {
    fn write(&mut self, data: &[u8]) -> std::io::Result<usize> {
        match self {
            Compressor::None(w) => w.write(data),
            Compressor::Gzip(w) => w.write(data),
            Compressor::Zstd(w) => w.write(data),
            Compressor::Snappy(w) => w.write(data),
            Compressor::Lz4(w) => w.write(data),
        }
    }

    fn flush(&mut self) -> std::io::Result<()> {
        match self {
            Compressor::None(w) => w.flush(),
            Compressor::Gzip(w) => w.flush(),
            Compressor::Zstd(w) => w.flush(),
            Compressor::Snappy(w) => w.flush(),
            Compressor::Lz4(w) => w.flush(),
        }
    }
}

/// How a schema maps onto CSV columns: structs flattened into dotted names, other nested
/// types (lists, maps, unions) rendered as display text. Computed once per file.
struct CsvShape {
    schema: SchemaRef,
    identity: bool,
}

impl CsvShape {
    fn of(schema: &Schema) -> Self {
        let mut fields = Vec::new();
        for f in schema.fields() {
            flat_fields(f.name(), f, &mut fields);
        }
        let identity = !schema.fields().iter().any(|f| f.data_type().is_nested());
        CsvShape {
            schema: Arc::new(Schema::new(fields)),
            identity,
        }
    }

    /// `batch` in CSV's shape, with infinite dates and timestamps as text (see
    /// [`crate::render::infinity_as_text`]); such a column is text in this batch only.
    fn apply(&self, batch: &RecordBatch) -> Result<RecordBatch> {
        let batch = crate::render::infinity_as_text(batch)?;
        if self.identity {
            return Ok(batch);
        }
        let mut cols = Vec::with_capacity(self.schema.fields().len());
        for col in batch.columns() {
            flat_columns(col, None, &mut cols)?;
        }
        let fields: Vec<Field> = self
            .schema
            .fields()
            .iter()
            .zip(&cols)
            .map(|(f, c)| Field::clone(f).with_data_type(c.data_type().clone()))
            .collect();
        Ok(RecordBatch::try_new(Arc::new(Schema::new(fields)), cols)?)
    }
}

fn flat_fields(name: &str, f: &Field, out: &mut Vec<Field>) {
    match f.data_type() {
        DataType::Struct(children) => {
            for c in children {
                flat_fields(&format!("{name}.{}", c.name()), c, out);
            }
        }
        t if t.is_nested() => out.push(Field::new(name, DataType::Utf8, true)),
        t => out.push(Field::new(name, t.clone(), true)),
    }
}

/// Flatten one column; `parent` holds the nulls of enclosing structs, so a field of a null
/// struct is null.
fn flat_columns(
    col: &ArrayRef,
    parent: Option<&NullBuffer>,
    out: &mut Vec<ArrayRef>,
) -> Result<()> {
    let col = with_parent_nulls(col, parent)?;
    match col.data_type() {
        DataType::Struct(_) => {
            let s = col
                .as_any()
                .downcast_ref::<StructArray>()
                .ok_or_else(|| Error::internal("struct column is not a StructArray"))?;
            for child in s.columns() {
                flat_columns(child, s.nulls(), out)?;
            }
        }
        t if t.is_nested() => {
            let fmt = ArrayFormatter::try_new(col.as_ref(), &FormatOptions::default())?;
            let text: StringArray = (0..col.len())
                .map(|i| col.is_valid(i).then(|| fmt.value(i).to_string()))
                .collect();
            out.push(Arc::new(text));
        }
        _ => out.push(col),
    }
    Ok(())
}
