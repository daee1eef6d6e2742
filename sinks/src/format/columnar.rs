//! The columnar formats: Parquet (arrow-rs `ArrowWriter`) and Avro object container files
//! (arrow-avro), both encoding straight from Arrow arrays.

use super::encoder::{FileEncoder, FormatWriter, SharedBuf};
use arrow::array::RecordBatch;
use arrow::datatypes::SchemaRef;
use parquet::arrow::ArrowWriter;
use parquet::basic::{BrotliLevel, GzipLevel, ZstdLevel};
use parquet::file::properties::{EnabledStatistics, WriterProperties};
use rivven_engine::{Error, Result};
use schemars::JsonSchema;
use serde::Deserialize;

/// Parquet page compression.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum ParquetCompression {
    /// No compression.
    #[serde(alias = "uncompressed")]
    None,
    /// Snappy (the default).
    #[default]
    Snappy,
    /// gzip (`compression_level` 0-10).
    Gzip,
    /// LZ4 (the `LZ4_RAW` codec).
    Lz4,
    /// Zstandard (`compression_level` 1-22).
    Zstd,
    /// Brotli (`compression_level` 0-11).
    Brotli,
}

/// Which Parquet statistics to write.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum ParquetStatistics {
    /// None.
    None,
    /// Per column chunk.
    Chunk,
    /// Per column chunk and page (the default).
    #[default]
    Page,
}

fn default_row_group_size() -> usize {
    100_000
}

fn yes() -> bool {
    true
}

/// `parquet:` options.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct ParquetOptions {
    /// Page compression (default `snappy`).
    #[serde(default)]
    pub compression: ParquetCompression,
    /// Level for gzip, zstd and brotli (their default level when absent).
    #[serde(default)]
    pub compression_level: Option<u32>,
    /// Maximum rows per row group (default 100000).
    #[serde(default = "default_row_group_size")]
    pub row_group_size: usize,
    /// Dictionary-encode columns (default true).
    #[serde(default = "yes")]
    pub dictionary: bool,
    /// Statistics to write: `none`, `chunk` or `page` (default). `true` / `false` are
    /// accepted for `page` / `none`.
    #[serde(default, deserialize_with = "statistics")]
    pub statistics: ParquetStatistics,
}

fn statistics<'de, D: serde::Deserializer<'de>>(
    d: D,
) -> std::result::Result<ParquetStatistics, D::Error> {
    #[derive(Deserialize)]
    #[serde(untagged)]
    enum Either {
        Bool(bool),
        Named(ParquetStatistics),
    }
    Ok(match Either::deserialize(d)? {
        Either::Bool(true) => ParquetStatistics::Page,
        Either::Bool(false) => ParquetStatistics::None,
        Either::Named(s) => s,
    })
}

impl Default for ParquetOptions {
    fn default() -> Self {
        ParquetOptions {
            compression: ParquetCompression::default(),
            compression_level: None,
            row_group_size: default_row_group_size(),
            dictionary: true,
            statistics: ParquetStatistics::default(),
        }
    }
}

impl ParquetOptions {
    /// The writer properties, or a message saying which option is out of range.
    pub fn properties(&self) -> std::result::Result<WriterProperties, String> {
        use parquet::basic::Compression as C;
        let level = self.compression_level;
        let compression = match self.compression {
            ParquetCompression::None => C::UNCOMPRESSED,
            ParquetCompression::Snappy => C::SNAPPY,
            ParquetCompression::Lz4 => C::LZ4_RAW,
            ParquetCompression::Gzip => C::GZIP(match level {
                Some(l) => GzipLevel::try_new(l).map_err(|e| e.to_string())?,
                None => GzipLevel::default(),
            }),
            ParquetCompression::Zstd => C::ZSTD(match level {
                Some(l) => ZstdLevel::try_new(l as i32).map_err(|e| e.to_string())?,
                None => ZstdLevel::default(),
            }),
            ParquetCompression::Brotli => C::BROTLI(match level {
                Some(l) => BrotliLevel::try_new(l).map_err(|e| e.to_string())?,
                None => BrotliLevel::default(),
            }),
        };
        if level.is_some()
            && matches!(
                self.compression,
                ParquetCompression::None | ParquetCompression::Snappy | ParquetCompression::Lz4
            )
        {
            return Err(format!(
                "{:?} compression has no level; remove compression_level",
                self.compression
            ));
        }
        if self.row_group_size == 0 {
            return Err("row_group_size must be at least 1".into());
        }
        let stats = match self.statistics {
            ParquetStatistics::None => EnabledStatistics::None,
            ParquetStatistics::Chunk => EnabledStatistics::Chunk,
            ParquetStatistics::Page => EnabledStatistics::Page,
        };
        Ok(WriterProperties::builder()
            .set_compression(compression)
            .set_max_row_group_row_count(Some(self.row_group_size))
            .set_dictionary_enabled(self.dictionary)
            .set_statistics_enabled(stats)
            .set_created_by(format!("rivven-connect {}", env!("CARGO_PKG_VERSION")))
            .build())
    }
}

#[derive(Debug)]
pub(super) struct ParquetFormat {
    options: ParquetOptions,
}

impl ParquetFormat {
    pub(super) fn new(options: ParquetOptions) -> Self {
        ParquetFormat { options }
    }
}

impl FormatWriter for ParquetFormat {
    fn name(&self) -> &'static str {
        "parquet"
    }

    fn extension(&self) -> String {
        ".parquet".into()
    }

    fn supports_append(&self) -> bool {
        false
    }

    fn open(&self, schema: SchemaRef) -> Result<Box<dyn FileEncoder>> {
        let props = self.options.properties().map_err(Error::config)?;
        let buf = SharedBuf::default();
        let writer = ArrowWriter::try_new(buf.clone(), schema, Some(props)).map_err(parquet_err)?;
        Ok(Box::new(ParquetEncoder { writer, buf }))
    }
}

fn parquet_err(e: parquet::errors::ParquetError) -> Error {
    Error::data(format!("parquet: {e}"))
}

struct ParquetEncoder {
    writer: ArrowWriter<SharedBuf>,
    buf: SharedBuf,
}

impl FileEncoder for ParquetEncoder {
    fn write(&mut self, batch: &RecordBatch) -> Result<()> {
        self.writer.write(batch).map_err(parquet_err)
    }

    fn take(&mut self) -> Vec<u8> {
        self.buf.take()
    }

    fn size(&self) -> u64 {
        (self.writer.bytes_written() + self.writer.in_progress_size()) as u64
    }

    fn finish(self: Box<Self>) -> Result<Vec<u8>> {
        self.writer.close().map_err(parquet_err)?;
        Ok(self.buf.take())
    }
}

/// Avro block compression.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum AvroCodec {
    /// No compression (the default).
    #[default]
    #[serde(alias = "none")]
    Null,
    /// Deflate.
    Deflate,
    /// Snappy (with the CRC32 the Avro spec requires).
    Snappy,
    /// Zstandard.
    Zstd,
    /// bzip2.
    Bzip2,
    /// xz.
    Xz,
}

/// `avro:` options.
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct AvroOptions {
    /// Block codec (default `null`; YAML's `null` and `none` mean the same).
    #[serde(default, deserialize_with = "codec")]
    pub codec: AvroCodec,
}

fn codec<'de, D: serde::Deserializer<'de>>(d: D) -> std::result::Result<AvroCodec, D::Error> {
    Ok(Option::<AvroCodec>::deserialize(d)?.unwrap_or_default())
}

#[derive(Debug)]
pub(super) struct AvroFormat {
    options: AvroOptions,
}

impl AvroFormat {
    pub(super) fn new(options: AvroOptions) -> Self {
        AvroFormat { options }
    }
}

impl FormatWriter for AvroFormat {
    fn name(&self) -> &'static str {
        "avro"
    }

    fn extension(&self) -> String {
        ".avro".into()
    }

    fn supports_append(&self) -> bool {
        false
    }

    fn open(&self, schema: SchemaRef) -> Result<Box<dyn FileEncoder>> {
        use arrow_avro::compression::CompressionCodec as C;
        let codec = match self.options.codec {
            AvroCodec::Null => None,
            AvroCodec::Deflate => Some(C::Deflate),
            AvroCodec::Snappy => Some(C::Snappy),
            AvroCodec::Zstd => Some(C::ZStandard),
            AvroCodec::Bzip2 => Some(C::Bzip2),
            AvroCodec::Xz => Some(C::Xz),
        };
        let buf = SharedBuf::default();
        let writer = arrow_avro::writer::WriterBuilder::new(schema.as_ref().clone())
            .with_compression(codec)
            .build::<_, arrow_avro::writer::format::AvroOcfFormat>(buf.clone())
            .map_err(|e| Error::data(format!("avro: {e}")))?;
        Ok(Box::new(AvroEncoder {
            writer,
            buf,
            schema,
        }))
    }
}

struct AvroEncoder {
    writer: arrow_avro::writer::AvroWriter<SharedBuf>,
    buf: SharedBuf,
    schema: SchemaRef,
}

impl FileEncoder for AvroEncoder {
    fn write(&mut self, batch: &RecordBatch) -> Result<()> {
        // The writer compares fields exactly; metadata-only differences are not a new file.
        let batch = if batch.schema().fields() == self.schema.fields() {
            batch.clone()
        } else {
            batch.clone().with_schema(self.schema.clone())?
        };
        self.writer
            .write(&batch)
            .map_err(|e| Error::data(format!("avro: {e}")))
    }

    fn take(&mut self) -> Vec<u8> {
        self.buf.take()
    }

    fn size(&self) -> u64 {
        self.buf.total()
    }

    fn finish(mut self: Box<Self>) -> Result<Vec<u8>> {
        self.writer
            .finish()
            .map_err(|e| Error::data(format!("avro: {e}")))?;
        Ok(self.buf.take())
    }
}
