//! Writing rows as the files of an Iceberg table: data files, or equality delete files of
//! the rows' key columns, split by the table's default partition spec and rolled at the
//! target size. [`Streaming`] writes data files in a task of its own while the rows still
//! arrive, so that encoding Parquet overlaps reading the topic.

use super::catalog::ice_err;
use super::schema;
use arrow::array::RecordBatch;
use arrow::datatypes::SchemaRef;
use iceberg::arrow::{arrow_schema_to_schema, RecordBatchPartitionSplitter};
use iceberg::spec::{DataFile, DataFileFormat};
use iceberg::table::Table;
use iceberg::writer::base_writer::data_file_writer::DataFileWriterBuilder;
use iceberg::writer::base_writer::equality_delete_writer::{
    EqualityDeleteFileWriterBuilder, EqualityDeleteWriterConfig,
};
use iceberg::writer::file_writer::location_generator::{
    DefaultFileNameGenerator, DefaultLocationGenerator,
};
use iceberg::writer::file_writer::rolling_writer::RollingFileWriterBuilder;
use iceberg::writer::file_writer::ParquetWriterBuilder;
use iceberg::writer::partitioning::fanout_writer::FanoutWriter;
use iceberg::writer::partitioning::PartitioningWriter;
use iceberg::writer::{IcebergWriter, IcebergWriterBuilder};
use parquet::file::properties::WriterProperties;
use rivven_engine::{Error, Result};
use std::sync::Arc;
use tokio::sync::mpsc;
use tokio::task::JoinHandle;

/// Batches a [`Streaming`] writer holds before `write` waits for the encoder.
const STREAM_DEPTH: usize = 4;

/// The buffered batches as data files of `table`, each conformed to its Arrow schema
/// `target` first.
pub async fn write_rows(
    table: &Table,
    props: &WriterProperties,
    target_mb: u64,
    buffered: &[RecordBatch],
    target: &SchemaRef,
) -> Result<Vec<DataFile>> {
    let batches = buffered
        .iter()
        .map(|b| schema::conform(b, target))
        .collect::<Result<Vec<_>>>()?;
    write_files(table, props, target_mb, Files::Data, batches).await
}

/// What [`write_files`] writes.
pub enum Files {
    /// Data files of the rows.
    Data,
    /// Equality delete files of the rows' values of these field ids.
    Deletes(Vec<i32>),
}

/// Write `batches` (already conformed to the table's schema) as data or equality delete
/// files of `table`, split by its default partition spec, rolling at `target_mb`.
pub async fn write_files(
    table: &Table,
    props: &WriterProperties,
    target_mb: u64,
    kind: Files,
    batches: Vec<RecordBatch>,
) -> Result<Vec<DataFile>> {
    let (tx, rx) = mpsc::channel(batches.len().max(1));
    for b in batches {
        // The channel has room for every batch.
        let _ = tx.try_send(b);
    }
    drop(tx);
    write_from(table, props, target_mb, kind, rx).await
}

/// [`write_files`] of the batches `rows` yields until it closes.
async fn write_from(
    table: &Table,
    props: &WriterProperties,
    target_mb: u64,
    kind: Files,
    rows: mpsc::Receiver<RecordBatch>,
) -> Result<Vec<DataFile>> {
    let ident = table.identifier().clone();
    let err = |what: &'static str| ice_err(format!("{what} {ident}"));
    let metadata = table.metadata();
    let locations = DefaultLocationGenerator::new(metadata).map_err(err("locate"))?;
    // A fresh prefix per commit: file names never collide with files of an earlier attempt.
    let prefix = match kind {
        Files::Data => "rivven",
        Files::Deletes(_) => "rivven-eq-del",
    };
    let names = DefaultFileNameGenerator::new(
        format!("{prefix}-{}", uuid::Uuid::new_v4()),
        None,
        DataFileFormat::Parquet,
    );
    let schema = metadata.current_schema().clone();
    let size = usize::try_from(target_mb.saturating_mul(1024 * 1024)).unwrap_or(usize::MAX);
    let file_io = table.file_io().clone();
    match kind {
        Files::Data => {
            let parquet = ParquetWriterBuilder::new(props.clone(), schema);
            let rolling = RollingFileWriterBuilder::new(parquet, size, file_io, locations, names);
            write_partitioned(table, DataFileWriterBuilder::new(rolling), rows).await
        }
        Files::Deletes(ids) => {
            let config =
                EqualityDeleteWriterConfig::new(ids, schema).map_err(err("key columns of"))?;
            let delete_schema = arrow_schema_to_schema(config.projected_arrow_schema_ref())
                .map_err(err("key columns of"))?;
            let parquet = ParquetWriterBuilder::new(props.clone(), Arc::new(delete_schema));
            let rolling = RollingFileWriterBuilder::new(parquet, size, file_io, locations, names);
            let builder = EqualityDeleteFileWriterBuilder::new(rolling, config);
            write_partitioned(table, builder, rows).await
        }
    }
}

/// Write the batches of `rows` through writers of `builder`, one per partition of the
/// table's default spec (one in all for an unpartitioned table).
async fn write_partitioned<B: IcebergWriterBuilder>(
    table: &Table,
    builder: B,
    mut rows: mpsc::Receiver<RecordBatch>,
) -> Result<Vec<DataFile>> {
    let ident = table.identifier().clone();
    let err = |what: &'static str| ice_err(format!("{what} {ident}"));
    let metadata = table.metadata();
    let spec = metadata.default_partition_spec();
    if spec.is_unpartitioned() {
        let mut w = builder
            .build(None)
            .await
            .map_err(err("open a writer for"))?;
        while let Some(b) = rows.recv().await {
            w.write(b).await.map_err(err("write to"))?;
        }
        return w.close().await.map_err(err("close a file of"));
    }
    let splitter = RecordBatchPartitionSplitter::try_new_with_computed_values(
        metadata.current_schema().clone(),
        spec.clone(),
    )
    .map_err(err("partition"))?;
    let mut w = FanoutWriter::new(builder);
    while let Some(b) = rows.recv().await {
        for (key, part) in splitter.split(&b).map_err(err("partition rows of"))? {
            w.write(key, part).await.map_err(err("write to"))?;
        }
    }
    w.close().await.map_err(err("close a file of"))
}

/// Data files of one table written by a task of its own while the rows arrive: `write`
/// hands a batch over (waiting only when the encoder is [`STREAM_DEPTH`] batches behind),
/// `finish` closes the files. The files are written with the table's schema as it was at
/// [`Streaming::start`]; rows that need another schema must not be given to it. Dropped
/// unfinished, it stops the task; the files written so far belong to no snapshot.
pub struct Streaming {
    tx: Option<mpsc::Sender<RecordBatch>>,
    task: JoinHandle<Result<Vec<DataFile>>>,
    target: SchemaRef,
}

impl Streaming {
    /// Start writing data files of `table` (its current schema and default spec).
    pub fn start(table: &Table, props: &WriterProperties, target_mb: u64) -> Result<Self> {
        let target = schema::table_arrow_schema(table.metadata().current_schema())?;
        let (tx, rx) = mpsc::channel(STREAM_DEPTH);
        let (table, props) = (table.clone(), props.clone());
        let task =
            tokio::spawn(
                async move { write_from(&table, &props, target_mb, Files::Data, rx).await },
            );
        Ok(Streaming {
            tx: Some(tx),
            task,
            target,
        })
    }

    /// Write `rows`, conformed to the table's schema first.
    pub async fn write(&mut self, rows: &RecordBatch) -> Result<()> {
        let rows = schema::conform(rows, &self.target)?;
        let sent = match &self.tx {
            Some(tx) => tx.send(rows).await.is_ok(),
            None => false,
        };
        if sent {
            return Ok(());
        }
        // The writer ended early: it failed, and says why.
        self.tx = None;
        match (&mut self.task).await {
            Ok(Err(e)) => Err(e),
            Ok(Ok(_)) => Err(Error::internal(
                "iceberg: data file writer ended before its rows",
            )),
            Err(e) => Err(Error::internal(format!("iceberg: data file writer: {e}"))),
        }
    }

    /// Close the files and return them.
    pub async fn finish(mut self) -> Result<Vec<DataFile>> {
        self.tx = None;
        match (&mut self.task).await {
            Ok(r) => r,
            Err(e) => Err(Error::internal(format!("iceberg: data file writer: {e}"))),
        }
    }
}

impl Drop for Streaming {
    fn drop(&mut self) {
        self.task.abort();
    }
}
