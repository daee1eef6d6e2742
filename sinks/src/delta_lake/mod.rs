//! `delta-lake`: writes the rows of its topics into a Delta Lake table with delta-rs.
//!
//! **Reads** batches from its topics. **Writes** them, column for column, into one Delta
//! table (local directory, S3, GCS or Azure): each commit is one Delta log version with
//! the Parquet files of the rows buffered since the previous one. The table is created
//! from the first batch's schema when it does not exist (`auto_create_table`), with
//! `partition_columns`; a new column in the data is added to the table's schema in the
//! same commit (`merge_schema`).
//!
//! **Guarantees**: exactly once per row. Every commit carries, as Delta `txn` actions
//! (application id `rivven-connect/<sink>/<topic>/<partition>`), the consumer offset
//! after the last row it holds. On start the sink reads them back and the runtime
//! resumes after them when they are ahead of the group's committed offsets (a crash
//! between the table commit and the offset commit), so no row is written twice and none
//! is skipped. Commits are made when `batch_size` rows are buffered or the oldest has
//! waited `flush_interval_secs`. delta-rs retries a conflicting commit `commit_retries`
//! times; a commit that still fails, or a store error, fails the flush and the runtime
//! retries from the committed offsets. `write_mode: upsert` makes each commit one MERGE on
//! the key. OPTIMIZE and VACUUM run after every `optimize_every_commits` /
//! `vacuum_every_commits` commits.
//!
//! ```yaml
//! sinks:
//!   lake:
//!     connector: delta-lake
//!     topics: [cdc.events]
//!     consumer_group: delta-sink
//!     config:
//!       table_uri: s3://my-bucket/warehouse/events
//!       partition_columns: [event_type]
//!       s3:
//!         region: us-east-1
//! ```

mod config;
mod sink;

pub use config::{DeltaLakeConfig, Store, WriteMode};
pub use sink::{app_id, DeltaLakeSink};

use async_trait::async_trait;
use rivven_engine::connector::Sink;
use rivven_engine::registry::{Category, ConnectorInfo, PipelineContext, SinkConnector};
use rivven_engine::{Error, Result};

/// The `delta-lake` sink connector.
#[derive(Debug, Clone, Copy)]
pub struct DeltaLake;

#[async_trait]
impl SinkConnector for DeltaLake {
    type Config = DeltaLakeConfig;

    fn info(&self) -> ConnectorInfo {
        ConnectorInfo {
            name: "delta-lake",
            category: Category::Lakehouse,
            description: "Delta Lake tables (local, S3, GCS, Azure), exactly once",
            tags: &["lakehouse", "delta", "parquet", "acid"],
        }
    }

    async fn check(&self, cfg: &DeltaLakeConfig) -> Result<String> {
        let table = sink::open_table(cfg, false).await?;
        match table.version() {
            Some(v) => Ok(format!("Delta table {} at version {v}", cfg.table_uri)),
            None if cfg.auto_create_table => Ok(format!(
                "no Delta table at {} yet: created by the first commit",
                cfg.table_uri
            )),
            None => Err(Error::config(format!(
                "no Delta table at {} and auto_create_table is false",
                cfg.table_uri
            ))),
        }
    }

    fn create(&self, ctx: &PipelineContext, cfg: DeltaLakeConfig) -> Result<Box<dyn Sink>> {
        Ok(Box::new(DeltaLakeSink::new(
            cfg,
            &ctx.name,
            ctx.status.clone(),
        )?))
    }
}
