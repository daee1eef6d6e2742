//! The contract of a format: what a format and an output compression are, the
//! [`FormatWriter`] / [`FileEncoder`] traits every format implements, and the buffer and
//! null handling they share.

use arrow::array::RecordBatch;
use arrow::datatypes::SchemaRef;
use rivven_engine::{Error, Result};
use schemars::JsonSchema;
use serde::Deserialize;
use std::io::Write;
use std::sync::{Arc, Mutex};

/// Output file format.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum Format {
    /// One JSON object per line.
    #[default]
    Jsonl,
    /// One JSON array of objects per file.
    Json,
    /// Comma- (or otherwise-) separated values with a header line.
    Csv,
    /// Apache Parquet.
    Parquet,
    /// Apache Avro object container file.
    Avro,
}

impl Format {
    /// The format's name in configs and file extensions (`"parquet"`).
    pub fn name(self) -> &'static str {
        match self {
            Format::Jsonl => "jsonl",
            Format::Json => "json",
            Format::Csv => "csv",
            Format::Parquet => "parquet",
            Format::Avro => "avro",
        }
    }

    /// Whether the format is text (and so takes an output [`Compression`]).
    pub fn is_text(self) -> bool {
        matches!(self, Format::Jsonl | Format::Json | Format::Csv)
    }
}

/// Output compression of text formats.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum Compression {
    /// No compression.
    #[default]
    None,
    /// gzip (`.gz`).
    Gzip,
    /// Zstandard (`.zst`).
    Zstd,
    /// Snappy framing format (`.snappy`).
    Snappy,
    /// LZ4 frame format (`.lz4`).
    Lz4,
}

impl Compression {
    /// The extension the compression adds (`""` for none).
    pub fn extension(self) -> &'static str {
        match self {
            Compression::None => "",
            Compression::Gzip => ".gz",
            Compression::Zstd => ".zst",
            Compression::Snappy => ".snappy",
            Compression::Lz4 => ".lz4",
        }
    }
}

/// Serializes batches into files of one format.
///
/// # Contract
/// - [`FormatWriter::open`] starts one file for batches of exactly one schema; the caller
///   starts a new file when the schema changes.
/// - The bytes of [`FileEncoder::take`] calls followed by those of [`FileEncoder::finish`],
///   concatenated, are one complete file readable by the format's standard readers.
pub trait FormatWriter: Send + Sync + std::fmt::Debug {
    /// Format name (`"parquet"`).
    fn name(&self) -> &'static str;
    /// File extension, including the output compression's (`".parquet"`, `".jsonl.gz"`).
    fn extension(&self) -> String;
    /// Whether files of this format can be appended to by concatenation.
    fn supports_append(&self) -> bool;
    /// Start a file for batches of `schema`.
    fn open(&self, schema: SchemaRef) -> Result<Box<dyn FileEncoder>>;

    /// Encode `batches` (one schema) as one whole file.
    fn write_batch(&self, batches: &[RecordBatch]) -> Result<Vec<u8>> {
        let Some(first) = batches.first() else {
            return Err(Error::data("no batches to write"));
        };
        let mut enc = self.open(first.schema())?;
        for b in batches {
            enc.write(b)?;
        }
        let mut out = enc.take();
        out.extend(enc.finish()?);
        Ok(out)
    }
}

/// One file being encoded. See [`FormatWriter`].
pub trait FileEncoder: Send {
    /// Append the rows of `batch` (whose schema is the file's).
    fn write(&mut self, batch: &RecordBatch) -> Result<()>;
    /// The encoded bytes produced since the last call; they are final and can be uploaded.
    fn take(&mut self) -> Vec<u8>;
    /// Size of the file so far: bytes produced plus an estimate of what is still buffered
    /// (a Parquet row group in progress). The measure for rolling files by bytes.
    fn size(&self) -> u64;
    /// Finish the file; returns the remaining bytes (footer included).
    fn finish(self: Box<Self>) -> Result<Vec<u8>>;
}

/// `col` with the rows null where `parent` (the nulls of an enclosing struct) is null: a
/// field of a null struct is null. Works for sliced arrays of any type; `Null` columns are
/// returned as they are.
pub(crate) fn with_parent_nulls(
    col: &arrow::array::ArrayRef,
    parent: Option<&arrow::buffer::NullBuffer>,
) -> Result<arrow::array::ArrayRef> {
    let Some(parent) = parent.filter(|p| p.null_count() > 0) else {
        return Ok(col.clone());
    };
    if col.data_type() == &arrow::datatypes::DataType::Null {
        return Ok(col.clone());
    }
    let parent_is_null = arrow::array::BooleanArray::new(!parent.inner(), None);
    Ok(arrow::compute::nullif(col.as_ref(), &parent_is_null)?)
}

/// An output buffer shared between a format's writer (which owns one handle) and the file
/// encoder (which drains it), counting every byte that went through.
#[derive(Debug, Clone, Default)]
pub(crate) struct SharedBuf {
    inner: Arc<Mutex<(Vec<u8>, u64)>>,
}

impl SharedBuf {
    /// Drain what was written so far.
    pub(crate) fn take(&self) -> Vec<u8> {
        match self.inner.lock() {
            Ok(mut g) => std::mem::take(&mut g.0),
            Err(p) => std::mem::take(&mut p.into_inner().0),
        }
    }

    /// Bytes written in total.
    pub(crate) fn total(&self) -> u64 {
        match self.inner.lock() {
            Ok(g) => g.1,
            Err(p) => p.into_inner().1,
        }
    }
}

impl Write for SharedBuf {
    fn write(&mut self, data: &[u8]) -> std::io::Result<usize> {
        let mut g = self
            .inner
            .lock()
            .map_err(|_| std::io::Error::other("output buffer poisoned"))?;
        g.0.extend_from_slice(data);
        g.1 += data.len() as u64;
        Ok(data.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}
