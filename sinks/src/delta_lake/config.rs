//! Configuration of the `delta-lake` sink.

use crate::changes::MetadataColumns;
use crate::format::{ParquetCompression, ParquetOptions};
use crate::object_storage::{AzureOptions, GcsOptions, S3Options};
use rivven_engine::config::{FieldError, Validate};
use schemars::JsonSchema;
use serde::Deserialize;
use std::collections::HashMap;

fn yes() -> bool {
    true
}

fn default_batch_size() -> u64 {
    10_000
}

fn default_flush_interval() -> u64 {
    60
}

fn default_commit_retries() -> u32 {
    15
}

fn default_optimize_target() -> u64 {
    256
}

fn default_vacuum_retention() -> u64 {
    168
}

/// `delta-lake` sink configuration.
#[derive(Debug, Clone, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct DeltaLakeConfig {
    /// Where the table lives: a local directory (`/data/events` or `file:///data/events`),
    /// `s3://bucket/path`, `gs://bucket/path` or `az://container/path`.
    pub table_uri: String,
    /// Create the table from the first batch's schema when it does not exist (default
    /// true); false: a missing table is an error.
    #[serde(default = "yes")]
    pub auto_create_table: bool,
    /// Rows buffered before a commit is made (default 10000).
    #[serde(default = "default_batch_size")]
    pub batch_size: u64,
    /// Longest time, in seconds, that a buffered row waits for its commit (default 60).
    #[serde(default = "default_flush_interval")]
    pub flush_interval_secs: u64,
    /// Parquet page compression (default `snappy`).
    #[serde(default)]
    pub compression: ParquetCompression,
    /// Level for gzip, zstd and brotli.
    #[serde(default)]
    pub compression_level: Option<u32>,
    /// Columns the table is partitioned by, when this sink creates it (an existing
    /// table keeps its own partitioning, and must have these columns as its partition
    /// columns).
    #[serde(default)]
    pub partition_columns: Vec<String>,
    /// Add columns that appear in the data to the table's schema in the same commit
    /// (Delta's `mergeSchema`; default true). False: a batch whose schema differs from the
    /// table's fails.
    #[serde(default = "yes")]
    pub merge_schema: bool,
    /// How rows become table rows: `append` (default; every row is added) or `upsert`
    /// (one MERGE per commit on `key_columns`: the last change per key updates or inserts
    /// its row, deletes remove it).
    #[serde(default)]
    pub write_mode: WriteMode,
    /// Key of `upsert` (default: the primary key the source puts on the rows).
    #[serde(default)]
    pub key_columns: Vec<String>,
    /// Change-event metadata kept as columns in `upsert` mode (default: none).
    #[serde(default)]
    pub metadata_columns: MetadataColumns,
    /// Commits between Delta checkpoints of a table this sink creates (its
    /// `delta.checkpointInterval`; default: delta-rs's, 100).
    #[serde(default)]
    pub checkpoint_interval: Option<u64>,
    /// Times delta-rs retries a commit that conflicts with another writer's (default 15).
    #[serde(default = "default_commit_retries")]
    pub commit_retries: u32,
    /// Compact small files (Delta OPTIMIZE, bin-packing) after every this many commits of
    /// this sink (default: never).
    #[serde(default)]
    pub optimize_every_commits: Option<u64>,
    /// Target file size, in MiB, of the compaction (default 256).
    #[serde(default = "default_optimize_target")]
    pub optimize_target_size_mb: u64,
    /// Delete files no longer in the table and older than `vacuum_retention_hours` (Delta
    /// VACUUM) after every this many commits of this sink (default: never).
    #[serde(default)]
    pub vacuum_every_commits: Option<u64>,
    /// How long removed files stay for readers of older versions (default 168: a week).
    #[serde(default = "default_vacuum_retention")]
    pub vacuum_retention_hours: u64,
    /// S3 credentials and endpoint, for `s3://` tables.
    #[serde(default)]
    pub s3: Option<S3Options>,
    /// GCS credentials and endpoint, for `gs://` tables.
    #[serde(default)]
    pub gcs: Option<GcsOptions>,
    /// Azure credentials and endpoint, for `az://` tables.
    #[serde(default)]
    pub azure: Option<AzureOptions>,
}

/// How rows become table rows.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize, JsonSchema)]
#[serde(rename_all = "lowercase")]
pub enum WriteMode {
    /// Every row is appended.
    #[default]
    Append,
    /// Rows are merged by key; deletes remove rows.
    Upsert,
}

/// Where a table lives, from the scheme of `table_uri`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Store {
    /// A local directory.
    Local,
    /// `s3://`, `s3a://`.
    S3,
    /// `gs://`.
    Gcs,
    /// `az://`, `abfs://`, `abfss://`, `azure://`.
    Azure,
}

impl DeltaLakeConfig {
    /// The store `table_uri` names, or `None` for an unknown scheme.
    pub fn store(&self) -> Option<Store> {
        match self.table_uri.split_once("://") {
            None => Some(Store::Local),
            Some(("file", _)) => Some(Store::Local),
            Some(("s3" | "s3a", _)) => Some(Store::S3),
            Some(("gs", _)) => Some(Store::Gcs),
            Some(("az" | "abfs" | "abfss" | "azure", _)) => Some(Store::Azure),
            Some(_) => None,
        }
    }

    /// The table URL: local paths are made absolute.
    pub fn url(&self) -> Result<url::Url, String> {
        match self.store() {
            Some(Store::Local) if !self.table_uri.starts_with("file://") => {
                let path = std::path::absolute(&self.table_uri)
                    .map_err(|e| format!("{}: {e}", self.table_uri))?;
                url::Url::from_directory_path(&path)
                    .map_err(|()| format!("{} is not an absolute path", path.display()))
            }
            _ => url::Url::parse(&self.table_uri).map_err(|e| format!("{}: {e}", self.table_uri)),
        }
    }

    /// The Parquet writer properties.
    pub fn writer_properties(&self) -> Result<parquet::file::properties::WriterProperties, String> {
        ParquetOptions {
            compression: self.compression,
            compression_level: self.compression_level,
            ..ParquetOptions::default()
        }
        .properties()
    }

    /// The storage options handed to delta-rs: the store block's `object_store` keys,
    /// mapped as for the object-storage sinks.
    pub fn storage_options(&self) -> HashMap<String, String> {
        let options = match self.store() {
            Some(Store::S3) => self.s3.clone().unwrap_or_default().store_options(),
            Some(Store::Gcs) => self.gcs.clone().unwrap_or_default().store_options(),
            Some(Store::Azure) => self.azure.clone().unwrap_or_default().store_options(),
            Some(Store::Local) | None => Vec::new(),
        };
        options
            .into_iter()
            .map(|(k, v)| (k.to_string(), v))
            .collect()
    }
}

impl Validate for DeltaLakeConfig {
    fn validate(&self) -> Vec<FieldError> {
        let mut errs = Vec::new();
        match self.store() {
            None => errs.push(FieldError::new(
                "table_uri",
                "a local path, file://, s3://, gs:// or az:// URL",
            )),
            Some(store) => {
                if let Err(e) = self.url() {
                    errs.push(FieldError::new("table_uri", e));
                }
                for (key, set, wanted) in [
                    ("s3", self.s3.is_some(), Store::S3),
                    ("gcs", self.gcs.is_some(), Store::Gcs),
                    ("azure", self.azure.is_some(), Store::Azure),
                ] {
                    if set && store != wanted {
                        errs.push(FieldError::new(
                            key,
                            format!("applies to {key} tables only; table_uri names another store"),
                        ));
                    }
                }
            }
        }
        if let Some(g) = &self.gcs {
            if !g.use_adc && g.credentials_file.is_none() && g.endpoint_url.is_none() {
                errs.push(FieldError::new(
                    "gcs.use_adc",
                    "false needs gcs.credentials_file (or an emulator endpoint_url)",
                ));
            }
        }
        if self.batch_size == 0 {
            errs.push(FieldError::new("batch_size", "at least 1"));
        }
        if self.flush_interval_secs == 0 || self.flush_interval_secs > 86_400 {
            errs.push(FieldError::new(
                "flush_interval_secs",
                "between 1 and 86400",
            ));
        }
        if let Err(e) = self.writer_properties() {
            errs.push(FieldError::new("compression_level", e));
        }
        if self.write_mode == WriteMode::Append {
            if !self.key_columns.is_empty() {
                errs.push(FieldError::new(
                    "key_columns",
                    "applies to write_mode: upsert only",
                ));
            }
            if !self.metadata_columns.is_empty() {
                errs.push(FieldError::new(
                    "metadata_columns",
                    "applies to write_mode: upsert only (append writes the rows as they are)",
                ));
            }
        }
        for p in self.metadata_columns.problems() {
            errs.push(FieldError::new("metadata_columns", p));
        }
        for (key, v) in [
            ("checkpoint_interval", self.checkpoint_interval),
            ("optimize_every_commits", self.optimize_every_commits),
            ("vacuum_every_commits", self.vacuum_every_commits),
        ] {
            if v == Some(0) {
                errs.push(FieldError::new(key, "at least 1"));
            }
        }
        if self.optimize_target_size_mb == 0 {
            errs.push(FieldError::new("optimize_target_size_mb", "at least 1"));
        }
        if self.key_columns.iter().any(|c| c.is_empty()) {
            errs.push(FieldError::new("key_columns", "empty column name"));
        }
        if self.partition_columns.iter().any(|c| c.is_empty()) {
            errs.push(FieldError::new("partition_columns", "empty column name"));
        }
        errs
    }
}
