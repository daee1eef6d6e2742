//! `object-storage` (and `s3`, `gcs`, `azure-blob`): batches as files in a bucket or a
//! local directory.
//!
//! **Reads** batches from its topics (flat or change-event batches; sink-side transforms
//! may unwrap or route them). **Writes** `jsonl`, `json`, `csv`, `parquet` or `avro` files
//! (see [`crate::format`]) under
//! `<prefix><topic or route>/<partitions>/<topic>+<partition>+<first offset>.<ext>`,
//! partitioned by nothing, day, hour or column values (Hive-style `key=value` directories),
//! through `object_store` (S3 and compatibles, GCS, Azure Blob) or to a local directory.
//!
//! **Rolling**: a file is closed when it holds `batch_size` rows or `max_file_bytes`
//! bytes, when it has been open `flush_interval_secs`, when its schema changes, and on
//! shutdown. Closing one file flushes all open files of the sink.
//!
//! **Guarantees: exactly once per object.** Every object appears atomically (a single
//! `PUT`, a completed multipart upload, or a synced local file renamed into place). A flush
//! first records the objects it is about to commit in a journal in the pipeline's state
//! directory, then commits them; the runtime commits consumer offsets only after the flush
//! returns. If the process dies in between, the next start deletes the objects of that
//! flush (their offsets were not committed) before the rows are delivered again, so the
//! bucket ends up with every row exactly once. Readers listing the bucket while a crashed
//! flush is being repaired may briefly see those objects. Incomplete multipart uploads of a
//! crashed process are invisible but billed by cloud stores until a lifecycle rule
//! (`AbortIncompleteMultipartUpload`) removes them.
//!
//! ```yaml
//! sinks:
//!   lake:
//!     connector: s3
//!     topics: [cdc.public.orders]
//!     consumer_group: lake
//!     config:
//!       bucket: analytics
//!       prefix: raw/
//!       format: parquet
//!       parquet: { compression: zstd }
//!       partitioning: day
//!       batch_size: 100000
//!       s3: { region: eu-west-1 }
//! ```

mod config;
mod layout;
mod sink;
mod store;

pub use config::{
    AzureOptions, GcsOptions, LocalOptions, ObjectStorageConfig, Partitioning, Provider, Resolved,
    S3Options, StoreOptions,
};
pub use layout::{escape as hive_escape, Layout, HIVE_NULL};
pub use sink::ObjectStorageSink;

use async_trait::async_trait;
use rivven_engine::config::{errors_to_error, FieldError};
use rivven_engine::connector::Sink;
use rivven_engine::registry::{Category, ConnectorInfo, PipelineContext, SinkConnector};
use rivven_engine::Result;

/// One of the object-storage connector names; the name may imply the provider.
#[derive(Debug, Clone, Copy)]
pub struct ObjectStorage {
    name: &'static str,
}

impl ObjectStorage {
    /// The four connector names: `object-storage`, `s3`, `gcs`, `azure-blob`.
    pub fn all() -> [ObjectStorage; 4] {
        ["object-storage", "s3", "gcs", "azure-blob"].map(|name| ObjectStorage { name })
    }

    /// `cfg` resolved for this connector name (validated already, so this does not fail
    /// for a config the registry handed over).
    fn resolved(&self, cfg: &ObjectStorageConfig) -> Result<Resolved> {
        cfg.clone()
            .resolve(self.name)
            .map_err(|errs| errors_to_error(&errs))
    }
}

#[async_trait]
impl SinkConnector for ObjectStorage {
    type Config = ObjectStorageConfig;

    fn info(&self) -> ConnectorInfo {
        let (description, tags): (&'static str, &'static [&'static str]) = match self.name {
            "s3" => (
                "Amazon S3 / MinIO / R2 (via object-storage)",
                &["s3", "aws", "minio", "r2", "parquet", "avro"],
            ),
            "gcs" => (
                "Google Cloud Storage (via object-storage)",
                &["gcs", "google", "parquet", "avro"],
            ),
            "azure-blob" => (
                "Azure Blob Storage (via object-storage)",
                &["azure", "blob", "parquet", "avro"],
            ),
            _ => (
                "Unified object storage (S3, GCS, Azure, local): JSONL, JSON, CSV, Parquet, Avro",
                &[
                    "s3", "gcs", "azure", "local", "parquet", "avro", "csv", "json",
                ],
            ),
        };
        ConnectorInfo {
            name: self.name,
            category: Category::Storage,
            description,
            tags,
        }
    }

    /// The provider the connector name implies, and the keys that depend on it.
    fn validate(&self, cfg: &ObjectStorageConfig) -> Vec<FieldError> {
        cfg.clone().resolve(self.name).err().unwrap_or_default()
    }

    async fn check(&self, cfg: &ObjectStorageConfig) -> Result<String> {
        let r = self.resolved(cfg)?;
        let backend = store::check_backend(&r)?;
        let layout_prefix = Layout::new(
            &r.config.prefix,
            r.config.partitioning,
            &[],
            None,
            String::new(),
        );
        backend.check(layout_prefix.prefix()).await
    }

    fn create(&self, ctx: &PipelineContext, cfg: ObjectStorageConfig) -> Result<Box<dyn Sink>> {
        let r = self.resolved(&cfg)?;
        let backend = store::backend(&r, &ctx.name)?;
        Ok(Box::new(ObjectStorageSink::new(
            &r,
            backend,
            ctx.state_dir.clone(),
            ctx.status.clone(),
        )))
    }
}
