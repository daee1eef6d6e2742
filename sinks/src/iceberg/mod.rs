//! `iceberg`: writes the rows of its topics into Apache Iceberg tables with iceberg-rust.
//!
//! **Reads** batches from its topics. **Writes** them, column for column, as typed Iceberg
//! columns (see [`schema`] for the type table) through a catalog: `memory` (a file
//! warehouse), `sql` (SQLite or PostgreSQL, the JDBC catalog layout), `rest`, `glue` or
//! `hive` (untested against a metastore).
//! `namespace` and `table` may hold `{topic}` and `{table}` (the change event's source
//! table), so one sink writes one table per source table. A table is created from the
//! first batch's schema when it does not exist, with `partition_fields` as its partition
//! spec; columns new to the table are added by a schema update committed just before the
//! rows that carry them. Each commit is one snapshot holding the Parquet files of the rows
//! buffered since the previous one, split by partition and rolled at
//! `target_file_size_mb`: an append (`commit_mode: append`), a row delta (`upsert`: the
//! last change per key, as equality deletes of every changed key plus the rows not
//! deleted, so the table holds what the source holds) or a dynamic partition overwrite
//! (`overwrite`). iceberg-rust 0.10 commits only appends; the other two are built in
//! [`commit`] and committed per catalog by [`catalog::Tables::commit`].
//!
//! **Guarantees**: exactly once per row and table. Every snapshot's summary carries, under
//! `rivven-connect.offset/<sink>/<topic>/<partition>`, the consumer offset after the last
//! topic batch it holds rows of. On start the sink reads them back from the table each
//! topic writes, and the runtime resumes after them when they are ahead of the group's
//! committed offsets; with a `{table}` template (tables known only from the rows) the
//! runtime resumes at the group's offsets and each table skips the rows it already holds. Commits are made
//! when `batch_size` rows are buffered or the oldest has waited `flush_interval_secs`; a
//! failed commit fails the flush, and the runtime retries from the committed offsets.
//!
//! Rows a table cannot take (a column type it cannot hold) are refused with the reason
//! ([`Sink::take_rejected`]): they go to the sink's dead-letter topic.
//!
//! Rows wider than a column (int→long, float→double, decimal precision) widen it: a schema
//! with the wider type is committed before the rows.
//!
//! **Not tested here**: the `hive` catalog against a Hive Metastore (none runs here).
//!
//! ```yaml
//! sinks:
//!   lake:
//!     connector: iceberg
//!     topics: [cdc.events]
//!     consumer_group: iceberg-sink
//!     config:
//!       catalog:
//!         type: sql
//!         sql:
//!           uri: sqlite:///var/lib/rivven/catalog.db
//!           warehouse: /var/lib/rivven/warehouse
//!       namespace: analytics
//!       table: events
//!       partition_fields: ["day(created_at)"]
//! ```

mod catalog;
mod commit;
mod config;
mod files;
mod hive;
mod rest;
pub mod schema;
mod sink;
mod upsert;

pub use config::{CatalogConfig, CatalogKind, CommitMode, IcebergConfig, Partitioning};
pub use sink::{offset_key, IcebergSink};

use async_trait::async_trait;
use catalog::{ice_err, Tables};
use iceberg::{NamespaceIdent, TableIdent};
use rivven_engine::connector::Sink;
use rivven_engine::registry::{Category, ConnectorInfo, PipelineContext, SinkConnector};
use rivven_engine::{Error, Result};

/// The `iceberg` sink connector.
#[derive(Debug, Clone, Copy)]
pub struct Iceberg;

#[async_trait]
impl SinkConnector for Iceberg {
    type Config = IcebergConfig;

    fn info(&self) -> ConnectorInfo {
        ConnectorInfo {
            name: "iceberg",
            category: Category::Lakehouse,
            description: "Apache Iceberg tables (memory, sql, rest, glue catalogs), exactly once",
            tags: &["lakehouse", "iceberg", "parquet", "acid"],
        }
    }

    async fn check(&self, cfg: &IcebergConfig) -> Result<String> {
        // A SQLite catalog that does not exist yet: `run` creates it (`check` creates
        // nothing).
        if let Some(file) = cfg
            .catalog
            .sql
            .as_ref()
            .and_then(|s| catalog::sqlite_file(s.uri.expose()))
            .filter(|f| !f.exists())
        {
            return Ok(format!(
                "sql catalog `{}`: SQLite file {} does not exist yet: created by the first run",
                cfg.catalog.name(),
                file.display()
            ));
        }
        let tables = Tables::connect(cfg, false).await?;
        let catalog = format!(
            "{} catalog `{}`",
            cfg.catalog.kind.name(),
            cfg.catalog.name()
        );
        if cfg.namespace.contains('{') || cfg.table.contains('{') {
            return Ok(format!(
                "{catalog} reachable; tables are named per topic/table ({}.{})",
                cfg.namespace, cfg.table
            ));
        }
        let namespace =
            NamespaceIdent::from_vec(cfg.namespace.split('.').map(str::to_string).collect())
                .map_err(ice_err("namespace"))?;
        let ident = TableIdent::new(namespace, cfg.table.clone());
        match tables.load(&ident).await? {
            Some(t) => Ok(format!(
                "{catalog}: table {ident} at snapshot {}",
                t.metadata()
                    .current_snapshot_id()
                    .map_or("(none yet)".to_string(), |s| s.to_string())
            )),
            None if cfg.auto_create => Ok(format!(
                "{catalog}: no table {ident} yet: created by the first commit"
            )),
            None => Err(Error::config(format!(
                "iceberg: {catalog} has no table {ident} and auto_create is false"
            ))),
        }
    }

    fn create(&self, ctx: &PipelineContext, cfg: IcebergConfig) -> Result<Box<dyn Sink>> {
        Ok(Box::new(IcebergSink::new(
            cfg,
            &ctx.name,
            ctx.status.clone(),
        )?))
    }
}
