//! The Arrow Flight endpoint (`settings.flight`): the embedded log's topics, live copies of
//! the batches at each pipeline stage (taps), and Flight SQL over both, read from a running
//! process with any Flight client (pyarrow, ADBC, the Flight SQL JDBC driver, ...).
//!
//! - `ListFlights`: one flight per topic; its descriptor is the path `[topic]`, its schema
//!   the schema of the topic's newest batch, one endpoint per partition (the ticket reads
//!   the partition from its oldest retained offset to the end at the time of the call),
//!   `total_records` the rows retained; then one flight per tap, path `["tap", name]`.
//! - `GetFlightInfo` / `GetSchema` on the path `[topic]`: the same for one topic.
//! - `DoGet`: a ticket is JSON, `{"topic": T, "partition": P, "from": O, "to": O,
//!   "from_time_ms": MS, "follow": BOOL}` (all but `topic` optional: every partition, from
//!   the oldest retained offset, to the end at the time of the call), or just a topic
//!   name. With `follow` the stream does not end: batches arrive as they become durable
//!   (single partition only). Batches keep their own schemas: a schema change mid-stream
//!   arrives as a new schema message. `{"tap": NAME}` streams a tap (see [`topics`]).
//! - Flight SQL commands in descriptors, tickets and actions: see [`sql`].
//!
//! With a `token`, every call must carry `authorization: Bearer <token>`; a wrong or
//! missing one is refused (`UNAUTHENTICATED`) and never logged. Reading never blocks the
//! pipeline: a reader reads the log's files like a sink does, at its own pace.

mod encode;
mod sql;
mod table;
mod topics;

use arrow_flight::flight_service_server::{FlightService, FlightServiceServer};
use arrow_flight::{
    Action, ActionType, Criteria, Empty, FlightData, FlightDescriptor, FlightInfo,
    HandshakeRequest, HandshakeResponse, PollInfo, PutResult, SchemaAsIpc, SchemaResult, Ticket,
};
use encode::{encode, flight_schema};
use futures_util::stream::{self, BoxStream, StreamExt};
use rivven_engine::config::FlightSettings;
use rivven_engine::status::StatusRegistry;
use rivven_engine::tap::Taps;
use rivven_engine::topic::EmbeddedLog;
use std::sync::Arc;
use tokio_util::sync::CancellationToken;
use tonic::{Request, Response, Status, Streaming};
use topics::{internal, topic_of, TicketSpec};

/// The action type of creating a prepared statement.
const CREATE_PREPARED: &str = "CreatePreparedStatement";
/// The action type of closing one.
const CLOSE_PREPARED: &str = "ClosePreparedStatement";

/// The Flight service over one process's embedded log, taps and status.
#[derive(Clone)]
pub struct Server {
    log: EmbeddedLog,
    taps: Arc<Taps>,
    sql: sql::Sql,
    shutdown: CancellationToken,
}

impl Server {
    pub fn new(
        log: EmbeddedLog,
        taps: Arc<Taps>,
        status: Arc<StatusRegistry>,
        shutdown: CancellationToken,
    ) -> Self {
        Server {
            sql: sql::Sql::new(log.clone(), status),
            log,
            taps,
            shutdown,
        }
    }
}

#[tonic::async_trait]
impl FlightService for Server {
    type HandshakeStream = BoxStream<'static, Result<HandshakeResponse, Status>>;
    type ListFlightsStream = BoxStream<'static, Result<FlightInfo, Status>>;
    type DoGetStream = BoxStream<'static, Result<FlightData, Status>>;
    type DoPutStream = BoxStream<'static, Result<PutResult, Status>>;
    type DoActionStream = BoxStream<'static, Result<arrow_flight::Result, Status>>;
    type ListActionsStream = BoxStream<'static, Result<ActionType, Status>>;
    type DoExchangeStream = BoxStream<'static, Result<FlightData, Status>>;

    async fn handshake(
        &self,
        _: Request<Streaming<HandshakeRequest>>,
    ) -> Result<Response<Self::HandshakeStream>, Status> {
        // Authentication is the bearer token on every call: nothing to exchange.
        Ok(Response::new(stream::empty().boxed()))
    }

    async fn list_flights(
        &self,
        _: Request<Criteria>,
    ) -> Result<Response<Self::ListFlightsStream>, Status> {
        let mut infos = Vec::new();
        for topic in self.log.topic_names() {
            // One unreadable topic does not hide the others.
            match self.info(&topic).await {
                Ok(info) => infos.push(Ok(info)),
                Err(e) => {
                    tracing::warn!(topic, error = %e.message(), "topic left out of ListFlights")
                }
            }
        }
        for tap in self.taps.names() {
            infos.push(Ok(self.tap_info(&tap)?));
        }
        Ok(Response::new(stream::iter(infos).boxed()))
    }

    async fn get_flight_info(
        &self,
        request: Request<FlightDescriptor>,
    ) -> Result<Response<FlightInfo>, Status> {
        let descriptor = request.into_inner();
        if let Some(command) = sql::Sql::command(&descriptor.cmd) {
            return Ok(Response::new(
                self.sql.flight_info(command?, descriptor).await?,
            ));
        }
        if let [kind, name] = descriptor.path.as_slice() {
            if kind == "tap" {
                return Ok(Response::new(self.tap_info(name)?));
            }
        }
        let topic = topic_of(&descriptor)?;
        Ok(Response::new(self.info(&topic).await?))
    }

    async fn poll_flight_info(
        &self,
        _: Request<FlightDescriptor>,
    ) -> Result<Response<PollInfo>, Status> {
        Err(Status::unimplemented(
            "poll_flight_info: use get_flight_info",
        ))
    }

    async fn get_schema(
        &self,
        request: Request<FlightDescriptor>,
    ) -> Result<Response<SchemaResult>, Status> {
        let descriptor = request.into_inner();
        let schema = if let Some(command) = sql::Sql::command(&descriptor.cmd) {
            self.sql
                .flight_info(command?, descriptor)
                .await?
                .try_decode_schema()
                .map_err(|e| Status::internal(e.to_string()))?
        } else if let [kind, name] = descriptor.path.as_slice() {
            if kind != "tap" {
                return Err(topic_of(&descriptor).err().unwrap_or_else(|| {
                    Status::invalid_argument("a path of a topic or [\"tap\", name]")
                }));
            }
            // A tap's schema is that of its last batch (empty before the first).
            self.taps
                .schema(name)
                .ok_or_else(|| Status::not_found(format!("no tap `{name}`")))?
                .map_or_else(arrow::datatypes::Schema::empty, |s| s.as_ref().clone())
        } else {
            let topic = topic_of(&descriptor)?;
            self.topic_exists(&topic)?;
            table::newest_schema(&self.log, &topic)
                .await
                .map_err(internal)?
                .as_ref()
                .clone()
        };
        let options = arrow::ipc::writer::IpcWriteOptions::default();
        let schema = flight_schema(&schema);
        let result = SchemaResult::try_from(SchemaAsIpc::new(&schema, &options))
            .map_err(|e| Status::internal(e.to_string()))?;
        Ok(Response::new(result))
    }

    async fn do_get(
        &self,
        request: Request<Ticket>,
    ) -> Result<Response<Self::DoGetStream>, Status> {
        let raw = &request.get_ref().ticket;
        if let Some(command) = sql::Sql::command(raw) {
            return Ok(Response::new(self.sql.do_get(command?).await?));
        }
        if let Ok(serde_json::Value::Object(m)) = serde_json::from_slice(raw) {
            if let Some(tap) = m.get("tap").and_then(|t| t.as_str()) {
                return Ok(Response::new(self.tap_stream(tap)?));
            }
        }
        let spec = TicketSpec::parse(raw)?;
        let (log, topic) = (self.log.clone(), spec.topic.clone());
        let batches = self.batches(spec)?;
        let schema = async move { table::newest_schema(&log, &topic).await.map_err(internal) };
        Ok(Response::new(encode(None, batches, Some(Box::pin(schema)))))
    }

    async fn do_put(
        &self,
        _: Request<Streaming<FlightData>>,
    ) -> Result<Response<Self::DoPutStream>, Status> {
        Err(Status::unimplemented("the Flight endpoint is read-only"))
    }

    async fn do_action(
        &self,
        request: Request<Action>,
    ) -> Result<Response<Self::DoActionStream>, Status> {
        let action = request.into_inner();
        let result = match action.r#type.as_str() {
            CREATE_PREPARED => vec![Ok(self.sql.create_prepared(&action.body).await?)],
            // Handles are the queries themselves: nothing to release.
            CLOSE_PREPARED => Vec::new(),
            other => return Err(Status::unimplemented(format!("no action `{other}`"))),
        };
        Ok(Response::new(stream::iter(result).boxed()))
    }

    async fn list_actions(
        &self,
        _: Request<Empty>,
    ) -> Result<Response<Self::ListActionsStream>, Status> {
        let actions = [
            (
                CREATE_PREPARED,
                "Plan a read-only query; the handle is the query",
            ),
            (
                CLOSE_PREPARED,
                "Release a prepared statement (nothing is held)",
            ),
        ]
        .map(|(t, d)| {
            Ok(ActionType {
                r#type: t.into(),
                description: d.into(),
            })
        });
        Ok(Response::new(stream::iter(actions).boxed()))
    }

    async fn do_exchange(
        &self,
        _: Request<Streaming<FlightData>>,
    ) -> Result<Response<Self::DoExchangeStream>, Status> {
        Err(Status::unimplemented("the Flight endpoint is read-only"))
    }
}

/// Whether `header` (an `authorization` value) carries `token` as a bearer token, compared
/// in time independent of where they differ.
fn bearer_matches(header: Option<&str>, token: &str) -> bool {
    let Some(given) = header.and_then(|h| h.strip_prefix("Bearer ")) else {
        return false;
    };
    let (a, b) = (given.as_bytes(), token.as_bytes());
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

/// The TLS configuration of `settings.flight.tls`, read from its PEM files; `None`
/// without TLS. An unreadable file is an error naming its key and path.
pub fn tls_config(
    settings: &FlightSettings,
) -> Result<Option<tonic::transport::ServerTlsConfig>, String> {
    let Some(tls) = &settings.tls else {
        return Ok(None);
    };
    // More than one rustls crypto provider is linked in (ring, and aws-lc through the AWS
    // SDKs): name the process default, as rustls requires. Already set is fine.
    let _ = rustls::crypto::ring::default_provider().install_default();
    let read = |key: &str, path: &std::path::Path| {
        std::fs::read(path).map_err(|e| {
            format!(
                "settings.flight.tls.{key}: cannot read {}: {e}",
                path.display()
            )
        })
    };
    let identity =
        tonic::transport::Identity::from_pem(read("cert", &tls.cert)?, read("key", &tls.key)?);
    Ok(Some(
        tonic::transport::ServerTlsConfig::new().identity(identity),
    ))
}

/// Serve the Flight endpoint on `listener` until `shutdown`, over TLS when `tls` is given
/// (see [`tls_config`]).
pub async fn serve(
    listener: tokio::net::TcpListener,
    settings: FlightSettings,
    tls: Option<tonic::transport::ServerTlsConfig>,
    log: EmbeddedLog,
    taps: Arc<Taps>,
    status: Arc<StatusRegistry>,
    shutdown: CancellationToken,
) -> Result<(), tonic::transport::Error> {
    let token = settings.token.as_ref().map(|t| t.expose().to_string());
    let service = FlightServiceServer::with_interceptor(
        Server::new(log, taps, status, shutdown.clone()),
        move |req: Request<()>| match &token {
            None => Ok(req),
            Some(t) => {
                let header = req
                    .metadata()
                    .get("authorization")
                    .and_then(|v| v.to_str().ok());
                if bearer_matches(header, t) {
                    Ok(req)
                } else {
                    Err(Status::unauthenticated(
                        "missing or wrong bearer token (authorization: Bearer <token>)",
                    ))
                }
            }
        },
    );
    let incoming = tonic::transport::server::TcpIncoming::from(listener);
    let mut server = tonic::transport::Server::builder();
    if let Some(tls) = tls {
        server = server.tls_config(tls)?;
    }
    server
        .add_service(service)
        .serve_with_incoming_shutdown(incoming, shutdown.cancelled_owned())
        .await
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bearer_tokens_must_match_exactly() {
        assert!(bearer_matches(Some("Bearer s3cret"), "s3cret"));
        assert!(!bearer_matches(Some("Bearer s3cre"), "s3cret"));
        assert!(!bearer_matches(Some("s3cret"), "s3cret"));
        assert!(!bearer_matches(None, "s3cret"));
    }
}
