//! Flight SQL over the same endpoint: read-only SQL (DataFusion) over the topics of the
//! embedded log and the process's pipelines.
//!
//! The catalog is `rivven` with two schemas: `topics` (the default: every topic is a table,
//! see [`super::table`]) and `system` (`system.pipelines`: the `/status` data, one row per
//! source and sink pipeline, as of the query). Statements that change anything (DDL, DML,
//! `SET`) are refused.
//!
//! Commands served: `CommandStatementQuery`; prepared statements without parameters
//! (`CreatePreparedStatement` / `ClosePreparedStatement` actions and
//! `CommandPreparedStatementQuery`, as JDBC clients use); `CommandGetCatalogs`,
//! `CommandGetDbSchemas`, `CommandGetTables`, `CommandGetTableTypes` and
//! `CommandGetSqlInfo`. The statement handle is the SQL text itself: the server keeps no
//! state between calls, and the rows are those durable when `DoGet` plans the query.

use super::table::LogTable;
use arrow::array::{ArrayRef, Int64Array, RecordBatch, StringArray};
use arrow::datatypes::{DataType, Field, Schema, SchemaRef};
use arrow_flight::encode::FlightDataEncoderBuilder;
use arrow_flight::error::FlightError;
use arrow_flight::sql::metadata::{SqlInfoData, SqlInfoDataBuilder};
use arrow_flight::sql::{
    ActionCreatePreparedStatementRequest, ActionCreatePreparedStatementResult, Any, Command,
    CommandStatementQuery, ProstMessageExt, SqlInfo, TicketStatementQuery,
};
use arrow_flight::{
    FlightData, FlightDescriptor, FlightEndpoint, FlightInfo, IpcMessage, SchemaAsIpc, Ticket,
};
use async_trait::async_trait;
use datafusion::catalog::{MemoryCatalogProvider, SchemaProvider, TableProvider};
use datafusion::common::DataFusionError;
use datafusion::datasource::MemTable;
use datafusion::execution::context::{SQLOptions, SessionConfig, SessionContext};
use futures_util::stream::{BoxStream, StreamExt, TryStreamExt};
use prost::Message;
use rivven_engine::status::StatusRegistry;
use rivven_engine::topic::EmbeddedLog;
use std::sync::Arc;
use tonic::Status;

/// The catalog's name.
pub const CATALOG: &str = "rivven";
/// The schema holding the topics (the default schema).
pub const TOPICS: &str = "topics";
/// The schema holding `pipelines`.
pub const SYSTEM: &str = "system";

/// Memory one query may use (sorts and joins spill to disk beyond it): a query must not
/// starve the pipelines of the process it runs in.
const QUERY_MEMORY: usize = 512 << 20;

/// The URL prefix of every Flight SQL message's `Any` type.
const FLIGHT_SQL_TYPE: &str = "type.googleapis.com/arrow.flight.protocol.sql.";

/// Flight SQL over one process's log and status.
#[derive(Clone)]
pub struct Sql {
    log: EmbeddedLog,
    status: Arc<StatusRegistry>,
}

impl Sql {
    pub fn new(log: EmbeddedLog, status: Arc<StatusRegistry>) -> Sql {
        Sql { log, status }
    }

    /// What `CommandGetSqlInfo` answers.
    fn info() -> Result<SqlInfoData, Status> {
        let mut b = SqlInfoDataBuilder::new();
        b.append(SqlInfo::FlightSqlServerName, "rivven-connect");
        b.append(SqlInfo::FlightSqlServerVersion, env!("CARGO_PKG_VERSION"));
        b.append(SqlInfo::FlightSqlServerArrowVersion, "58");
        b.append(SqlInfo::FlightSqlServerReadOnly, true);
        b.append(SqlInfo::SqlIdentifierQuoteChar, "\"");
        b.build().map_err(|e| Status::internal(e.to_string()))
    }

    /// The Flight SQL command in `bytes` (a descriptor's `cmd` or a ticket), if it is one.
    pub fn command(bytes: &[u8]) -> Option<Result<Command, Status>> {
        let any = Any::decode(bytes).ok()?;
        if !any.type_url.starts_with(FLIGHT_SQL_TYPE) {
            return None;
        }
        Some(Command::try_from(any).map_err(|e| Status::invalid_argument(e.to_string())))
    }

    /// A session over the catalog as it is now.
    fn context(&self) -> Result<SessionContext, Status> {
        let config = SessionConfig::new()
            .with_default_catalog_and_schema(CATALOG, TOPICS)
            .with_information_schema(true)
            .with_target_partitions(2);
        let runtime = datafusion::execution::runtime_env::RuntimeEnvBuilder::new()
            .with_memory_limit(QUERY_MEMORY, 1.0)
            .build_arc()
            .map_err(planning)?;
        let ctx = SessionContext::new_with_config_rt(config, runtime);
        let catalog = MemoryCatalogProvider::new();
        use datafusion::catalog::CatalogProvider;
        catalog
            .register_schema(TOPICS, Arc::new(Topics(self.log.clone())))
            .map_err(planning)?;
        let system = datafusion::catalog::MemorySchemaProvider::new();
        let pipelines = pipelines(&self.status).map_err(|e| Status::internal(e.to_string()))?;
        let table =
            MemTable::try_new(pipelines.schema(), vec![vec![pipelines]]).map_err(planning)?;
        system
            .register_table("pipelines".into(), Arc::new(table))
            .map_err(planning)?;
        catalog
            .register_schema(SYSTEM, Arc::new(system))
            .map_err(planning)?;
        ctx.register_catalog(CATALOG, Arc::new(catalog));
        Ok(ctx)
    }

    /// Plan `query` (read-only statements only).
    async fn plan(&self, query: &str) -> Result<datafusion::dataframe::DataFrame, Status> {
        let options = SQLOptions::new()
            .with_allow_ddl(false)
            .with_allow_dml(false)
            .with_allow_statements(false);
        self.context()?
            .sql_with_options(query, options)
            .await
            .map_err(planning)
    }

    /// `GetFlightInfo` for a Flight SQL command.
    pub async fn flight_info(
        &self,
        command: Command,
        descriptor: FlightDescriptor,
    ) -> Result<FlightInfo, Status> {
        let (schema, ticket) = match command {
            Command::CommandStatementQuery(CommandStatementQuery { query, .. }) => {
                let schema =
                    super::encode::flight_schema(self.plan(&query).await?.schema().as_arrow());
                let ticket = TicketStatementQuery {
                    statement_handle: query.into_bytes().into(),
                };
                (Arc::new(schema), ticket.as_any())
            }
            Command::CommandPreparedStatementQuery(q) => {
                let query = handle_query(&q.prepared_statement_handle)?;
                let schema =
                    super::encode::flight_schema(self.plan(&query).await?.schema().as_arrow());
                (Arc::new(schema), q.as_any())
            }
            Command::CommandGetCatalogs(c) => (c.into_builder().schema(), c.as_any()),
            Command::CommandGetDbSchemas(c) => (c.clone().into_builder().schema(), c.as_any()),
            Command::CommandGetTables(c) => (c.clone().into_builder().schema(), c.as_any()),
            Command::CommandGetTableTypes(c) => (c.into_builder().schema(), c.as_any()),
            Command::CommandGetSqlInfo(c) => {
                (c.clone().into_builder(&Self::info()?).schema(), c.as_any())
            }
            other => return Err(unsupported(&other)),
        };
        Ok(FlightInfo::new()
            .try_with_schema(&schema)
            .map_err(|e| Status::internal(e.to_string()))?
            .with_descriptor(descriptor)
            .with_endpoint(FlightEndpoint::new().with_ticket(Ticket::new(ticket.encode_to_vec())))
            .with_total_records(-1))
    }

    /// `DoGet` for a Flight SQL ticket.
    pub async fn do_get(
        &self,
        command: Command,
    ) -> Result<BoxStream<'static, Result<FlightData, Status>>, Status> {
        let batch = match command {
            Command::TicketStatementQuery(t) => {
                return self.execute(&handle_query(&t.statement_handle)?).await
            }
            Command::CommandPreparedStatementQuery(q) => {
                return self
                    .execute(&handle_query(&q.prepared_statement_handle)?)
                    .await
            }
            Command::CommandGetCatalogs(c) => {
                let mut b = c.into_builder();
                b.append(CATALOG);
                b.build()
            }
            Command::CommandGetDbSchemas(c) => {
                let mut b = c.into_builder();
                b.append(CATALOG, SYSTEM);
                b.append(CATALOG, TOPICS);
                b.build()
            }
            Command::CommandGetTables(c) => {
                let mut b = c.into_builder();
                let ctx = self.context()?;
                for (schema, tables) in [
                    (TOPICS, self.log.topic_names()),
                    (SYSTEM, vec!["pipelines".to_string()]),
                ] {
                    for t in tables {
                        let provider = ctx
                            .table_provider(datafusion::sql::TableReference::full(
                                CATALOG,
                                schema,
                                t.as_str(),
                            ))
                            .await
                            .map_err(planning)?;
                        b.append(CATALOG, schema, &t, "TABLE", &provider.schema())
                            .map_err(|e| Status::internal(e.to_string()))?;
                    }
                }
                b.build()
            }
            Command::CommandGetTableTypes(c) => {
                let mut b = c.into_builder();
                b.append("TABLE");
                b.build()
            }
            Command::CommandGetSqlInfo(c) => c.into_builder(&Self::info()?).build(),
            other => return Err(unsupported(&other)),
        }
        .map_err(|e| Status::internal(e.to_string()))?;
        let schema = batch.schema();
        Ok(FlightDataEncoderBuilder::new()
            .with_schema(schema)
            .build(futures_util::stream::once(async move { Ok(batch) }))
            .map_err(|e| Status::internal(e.to_string()))
            .boxed())
    }

    /// Run `query`, streaming its batches (an empty result still sends its schema).
    async fn execute(
        &self,
        query: &str,
    ) -> Result<BoxStream<'static, Result<FlightData, Status>>, Status> {
        let df = self.plan(query).await?;
        let schema: SchemaRef = Arc::new(df.schema().as_arrow().clone());
        let batches = df.execute_stream().await.map_err(execution)?;
        Ok(FlightDataEncoderBuilder::new()
            .with_schema(schema)
            .build(batches.map_err(|e| FlightError::ExternalError(Box::new(e))))
            .map_err(|e| match e {
                FlightError::ExternalError(e) => Status::internal(e.to_string()),
                e => Status::internal(e.to_string()),
            })
            .boxed())
    }

    /// The `CreatePreparedStatement` action: the handle is the query; its result schema
    /// comes from planning it.
    pub async fn create_prepared(&self, body: &[u8]) -> Result<arrow_flight::Result, Status> {
        let any = Any::decode(body).map_err(|e| Status::invalid_argument(e.to_string()))?;
        let request: ActionCreatePreparedStatementRequest = any
            .unpack()
            .map_err(|e| Status::invalid_argument(e.to_string()))?
            .ok_or_else(|| {
                Status::invalid_argument("expected an ActionCreatePreparedStatementRequest")
            })?;
        let schema =
            super::encode::flight_schema(self.plan(&request.query).await?.schema().as_arrow());
        let options = arrow::ipc::writer::IpcWriteOptions::default();
        let IpcMessage(dataset_schema) = SchemaAsIpc::new(&schema, &options)
            .try_into()
            .map_err(|e: arrow::error::ArrowError| Status::internal(e.to_string()))?;
        let result = ActionCreatePreparedStatementResult {
            prepared_statement_handle: request.query.into_bytes().into(),
            dataset_schema,
            parameter_schema: Default::default(),
        };
        Ok(arrow_flight::Result {
            body: result.as_any().encode_to_vec().into(),
        })
    }
}

/// The query a statement handle carries.
fn handle_query(handle: &[u8]) -> Result<String, Status> {
    String::from_utf8(handle.to_vec())
        .map_err(|_| Status::invalid_argument("the statement handle is not a query"))
}

fn unsupported(command: &Command) -> Status {
    Status::unimplemented(format!(
        "{} is not supported: the endpoint is read-only and takes queries without parameters",
        command.type_url().trim_start_matches(FLIGHT_SQL_TYPE)
    ))
}

/// A planning error (unknown table, syntax, a refused statement) is the client's to fix;
/// one from reading the log (opening a topic's table) is ours.
fn planning(e: DataFusionError) -> Status {
    match e {
        DataFusionError::External(_) | DataFusionError::IoError(_) => {
            Status::internal(e.to_string())
        }
        e => Status::invalid_argument(e.to_string()),
    }
}

fn execution(e: DataFusionError) -> Status {
    Status::internal(e.to_string())
}

/// The `topics` schema: every topic of the log, looked up when a query names it.
#[derive(Debug)]
struct Topics(EmbeddedLog);

#[async_trait]
impl SchemaProvider for Topics {
    fn as_any(&self) -> &dyn std::any::Any {
        self
    }

    fn table_names(&self) -> Vec<String> {
        self.0.topic_names()
    }

    async fn table(
        &self,
        name: &str,
    ) -> datafusion::common::Result<Option<Arc<dyn TableProvider>>> {
        if !self.0.has_topic(name) {
            return Ok(None);
        }
        let table = LogTable::open(self.0.clone(), name)
            .await
            .map_err(|e| DataFusionError::External(Box::new(e)))?;
        Ok(Some(Arc::new(table)))
    }

    fn table_exist(&self, name: &str) -> bool {
        self.0.has_topic(name)
    }
}

/// `system.pipelines`: one row per pipeline, as `/status` reports it.
fn pipelines(status: &StatusRegistry) -> Result<RecordBatch, arrow::error::ArrowError> {
    let report = status.report();
    let p = &report.pipelines;
    let text = |f: &dyn Fn(&rivven_engine::status::PipelineSnapshot) -> Option<String>| {
        Arc::new(p.iter().map(f).collect::<StringArray>()) as ArrayRef
    };
    let int = |f: &dyn Fn(&rivven_engine::status::PipelineSnapshot) -> u64| {
        Arc::new(Int64Array::from_iter_values(p.iter().map(|s| f(s) as i64))) as ArrayRef
    };
    let json = |v: &Option<serde_json::Value>| v.as_ref().map(|v| v.to_string());
    let schema = Schema::new(vec![
        Field::new("name", DataType::Utf8, false),
        Field::new("kind", DataType::Utf8, false),
        Field::new("connector", DataType::Utf8, false),
        Field::new("state", DataType::Utf8, false),
        Field::new("events", DataType::Int64, false),
        Field::new("bytes", DataType::Int64, false),
        Field::new("lag", DataType::Int64, false),
        Field::new("restarts", DataType::Int64, false),
        Field::new("last_error", DataType::Utf8, true),
        Field::new("unhealthy", DataType::Utf8, true),
        Field::new("position", DataType::Utf8, true),
        Field::new("details", DataType::Utf8, true),
    ]);
    // The names `/status` gives the kind and the state.
    let name = |v: Result<serde_json::Value, _>| v.ok()?.as_str().map(str::to_string);
    RecordBatch::try_new(
        Arc::new(schema),
        vec![
            text(&|s| Some(s.name.clone())),
            text(&|s| Some(s.kind.as_str().to_string())),
            text(&|s| Some(s.connector.clone())),
            text(&|s| name(serde_json::to_value(s.state))),
            int(&|s| s.events),
            int(&|s| s.bytes),
            int(&|s| s.lag),
            int(&|s| s.restarts),
            text(&|s| s.last_error.clone()),
            text(&|s| s.unhealthy.clone()),
            text(&|s| json(&s.position)),
            text(&|s| json(&s.details)),
        ],
    )
}
