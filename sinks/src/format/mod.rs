//! Format writers: how batches become file bytes, independent of where the files go.
//!
//! A [`FormatWriter`] (one per format: `jsonl`, `json`, `csv`, `parquet`, `avro`) opens a
//! [`FileEncoder`] per output file. The encoder takes Arrow [`RecordBatch`]es of one schema
//! and yields the file's bytes incrementally ([`FileEncoder::take`]), so a storage sink can
//! upload large files in parts while they are being written, and holds at most one part in
//! memory.
//!
//! - `jsonl`, `json`, `csv` are text; they can be wrapped in an output [`Compression`]
//!   (gzip, zstd, snappy framing format, lz4 frame format), which adds its own extension
//!   (`.jsonl.gz`).
//! - `parquet` and `avro` compress internally (`parquet.compression`, `avro.codec`) and keep
//!   nested types: change events keep their `before` / `after` / `source` structs.
//! - `csv` has no nested types: struct columns are flattened into dotted columns
//!   (`after.id`), and lists and maps are written as their display text (`[1, 2]`).

mod columnar;
mod encoder;
mod text;

pub use columnar::{AvroCodec, AvroOptions, ParquetCompression, ParquetOptions, ParquetStatistics};
#[cfg(feature = "object-storage")]
pub(crate) use encoder::with_parent_nulls;
pub use encoder::{Compression, FileEncoder, Format, FormatWriter};
pub use text::{CsvDelimiter, CsvOptions};

use std::sync::Arc;

/// Format options as configured (the `format`, `compression`, `parquet`, `avro` and `csv`
/// keys of a storage sink).
#[derive(Debug, Clone, Default)]
pub struct FormatOptions {
    /// The format.
    pub format: Format,
    /// Output compression (text formats only).
    pub compression: Compression,
    /// Parquet options.
    pub parquet: ParquetOptions,
    /// Avro options.
    pub avro: AvroOptions,
    /// CSV options.
    pub csv: CsvOptions,
}

/// The writer for `options`.
pub fn writer(options: &FormatOptions) -> Arc<dyn FormatWriter> {
    match options.format {
        Format::Jsonl | Format::Json | Format::Csv => Arc::new(text::TextFormat::new(
            options.format,
            options.compression,
            options.csv.clone(),
        )),
        Format::Parquet => Arc::new(columnar::ParquetFormat::new(options.parquet.clone())),
        Format::Avro => Arc::new(columnar::AvroFormat::new(options.avro.clone())),
    }
}

#[cfg(test)]
mod tests;
