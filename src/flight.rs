//! The Arrow Flight endpoint (`settings.flight`): the embedded log's topics as flights, read
//! live from a running process with any Flight client (pyarrow, the Arrow Flight CLI, ...).
//!
//! - `ListFlights`: one flight per topic; its descriptor is the path `[topic]`, its schema
//!   the schema of the topic's newest batch, one endpoint per partition (the ticket reads
//!   the partition from its oldest retained offset to the end at the time of the call),
//!   `total_records` the rows retained.
//! - `GetFlightInfo` / `GetSchema` on the path `[topic]`: the same for one topic.
//! - `DoGet`: a ticket is JSON, `{"topic": T, "partition": P, "from": O, "to": O,
//!   "from_time_ms": MS, "follow": BOOL}` (all but `topic` optional: every partition, from
//!   the oldest retained offset, to the end at the time of the call), or just a topic
//!   name. With `follow` the stream does not end: batches arrive as they become durable
//!   (single partition only). Batches keep their own schemas: a schema change mid-stream
//!   arrives as a new schema message.
//!
//! With a `token`, every call must carry `authorization: Bearer <token>`; a wrong or
//! missing one is refused (`UNAUTHENTICATED`) and never logged. Reading never blocks the
//! pipeline: a reader reads the log's files like a sink does, at its own pace.

use arrow::array::RecordBatch;
use arrow::datatypes::{Schema, SchemaRef};
use arrow_flight::encode::FlightDataEncoderBuilder;
use arrow_flight::error::FlightError;
use arrow_flight::flight_service_server::{FlightService, FlightServiceServer};
use arrow_flight::{
    Action, ActionType, Criteria, Empty, FlightData, FlightDescriptor, FlightEndpoint, FlightInfo,
    HandshakeRequest, HandshakeResponse, PollInfo, PutResult, SchemaAsIpc, SchemaResult, Ticket,
};
use futures_util::stream::{self, BoxStream, StreamExt, TryStreamExt};
use rivven_engine::config::FlightSettings;
use rivven_engine::tap::Taps;
use rivven_engine::topic::EmbeddedLog;
use serde::Deserialize;
use std::sync::Arc;
use tokio_util::sync::CancellationToken;
use tonic::{Request, Response, Status, Streaming};

/// Bytes read from the log per step of a `DoGet`.
const READ_BYTES: usize = 8 << 20;

/// What a `DoGet` ticket asks for.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
struct TicketSpec {
    topic: String,
    #[serde(default)]
    partition: Option<u32>,
    #[serde(default)]
    from: Option<u64>,
    #[serde(default)]
    to: Option<u64>,
    #[serde(default)]
    from_time_ms: Option<i64>,
    #[serde(default)]
    follow: bool,
}

impl TicketSpec {
    fn parse(bytes: &[u8]) -> Result<TicketSpec, Status> {
        let text = std::str::from_utf8(bytes)
            .map_err(|_| Status::invalid_argument("the ticket is not UTF-8"))?;
        if text.trim_start().starts_with('{') {
            serde_json::from_str(text).map_err(|e| Status::invalid_argument(format!("ticket: {e}")))
        } else {
            Ok(TicketSpec {
                topic: text.trim().to_string(),
                partition: None,
                from: None,
                to: None,
                from_time_ms: None,
                follow: false,
            })
        }
    }
}

/// The Flight service over one process's embedded log and taps.
#[derive(Clone)]
pub struct TopicFlights {
    log: EmbeddedLog,
    taps: Arc<Taps>,
    shutdown: CancellationToken,
}

impl TopicFlights {
    pub fn new(log: EmbeddedLog, taps: Arc<Taps>, shutdown: CancellationToken) -> Self {
        TopicFlights {
            log,
            taps,
            shutdown,
        }
    }

    /// The flight of tap `name`: no schema (each batch brings its own), one endpoint.
    fn tap_info(&self, name: &str) -> Result<FlightInfo, Status> {
        if !self.taps.names().iter().any(|n| n == name) {
            return Err(Status::not_found(format!("no tap `{name}`")));
        }
        let ticket = serde_json::json!({ "tap": name });
        Ok(FlightInfo::new()
            .with_descriptor(FlightDescriptor::new_path(vec![
                "tap".to_string(),
                name.to_string(),
            ]))
            .with_endpoint(FlightEndpoint::new().with_ticket(Ticket::new(ticket.to_string())))
            .with_total_records(-1))
    }

    /// Live copies of the batches at tap `name`, each record-batch message carrying
    /// `{"dropped": N}` (batches this reader lost so far by falling behind) as app
    /// metadata; ends at shutdown.
    fn tap_stream(
        &self,
        name: &str,
    ) -> Result<BoxStream<'static, Result<FlightData, Status>>, Status> {
        let rx = self
            .taps
            .subscribe(name)
            .ok_or_else(|| Status::not_found(format!("no tap `{name}`")))?;
        let dropped = Arc::new(std::sync::atomic::AtomicU64::new(0));
        let (counter, shutdown) = (dropped.clone(), self.shutdown.clone());
        let batches = stream::unfold(rx, move |mut rx| {
            let (counter, shutdown) = (counter.clone(), shutdown.clone());
            async move {
                loop {
                    let got = tokio::select! {
                        r = rx.recv() => r,
                        _ = shutdown.cancelled() => return None,
                    };
                    match got {
                        Ok(b) => return Some((Ok::<_, FlightError>(b), rx)),
                        Err(tokio::sync::broadcast::error::RecvError::Lagged(n)) => {
                            counter.fetch_add(n, std::sync::atomic::Ordering::Relaxed);
                        }
                        Err(tokio::sync::broadcast::error::RecvError::Closed) => return None,
                    }
                }
            }
        });
        let data = FlightDataEncoderBuilder::new()
            .build(batches)
            .map_err(|e| Status::internal(e.to_string()))
            .map_ok(move |mut d| {
                if !d.data_body.is_empty() {
                    let n = dropped.load(std::sync::atomic::Ordering::Relaxed);
                    d.app_metadata = serde_json::json!({ "dropped": n }).to_string().into();
                }
                d
            });
        Ok(data.boxed())
    }

    fn topic_exists(&self, topic: &str) -> Result<(), Status> {
        if self.log.has_topic(topic) {
            Ok(())
        } else {
            Err(Status::not_found(format!("no topic `{topic}`")))
        }
    }

    /// The schema of the topic's newest batch (empty when it holds none).
    async fn schema(&self, topic: &str) -> Result<SchemaRef, Status> {
        let parts = self.log.partitions(topic).map_err(internal)?;
        let mut newest: Option<(i64, SchemaRef)> = None;
        for p in 0..parts {
            let (start, end) = self.bounds(topic, p)?;
            if end <= start {
                continue;
            }
            let batches = self
                .log
                .read(topic, p, end - 1, 1)
                .await
                .map_err(internal)?;
            if let Some(b) = batches.last() {
                if newest.as_ref().is_none_or(|(t, _)| b.append_time_ms >= *t) {
                    newest = Some((b.append_time_ms, b.batch.schema()));
                }
            }
        }
        Ok(newest.map_or_else(|| Arc::new(Schema::empty()), |(_, s)| s))
    }

    fn bounds(&self, topic: &str, partition: u32) -> Result<(u64, u64), Status> {
        Ok((
            self.log.start_offset(topic, partition).map_err(internal)?,
            self.log.end_offset(topic, partition).map_err(internal)?,
        ))
    }

    async fn info(&self, topic: &str) -> Result<FlightInfo, Status> {
        self.topic_exists(topic)?;
        let schema = self.schema(topic).await?;
        let mut info = FlightInfo::new()
            .try_with_schema(&schema)
            .map_err(|e| Status::internal(e.to_string()))?
            .with_descriptor(FlightDescriptor::new_path(vec![topic.to_string()]));
        let mut total = 0u64;
        for p in 0..self.log.partitions(topic).map_err(internal)? {
            let (start, end) = self.bounds(topic, p)?;
            total += end - start;
            let ticket = serde_json::json!({
                "topic": topic, "partition": p, "from": start, "to": end,
            });
            info = info
                .with_endpoint(FlightEndpoint::new().with_ticket(Ticket::new(ticket.to_string())));
        }
        Ok(info.with_total_records(total as i64).with_ordered(true))
    }

    /// The batches a ticket asks for, in offset order per partition.
    fn batches(
        &self,
        spec: TicketSpec,
    ) -> Result<BoxStream<'static, Result<RecordBatch, FlightError>>, Status> {
        self.topic_exists(&spec.topic)?;
        let parts: Vec<u32> = match spec.partition {
            Some(p) => {
                if p >= self.log.partitions(&spec.topic).map_err(internal)? {
                    return Err(Status::not_found(format!(
                        "topic `{}` has no partition {p}",
                        spec.topic
                    )));
                }
                vec![p]
            }
            None if spec.follow => {
                return Err(Status::invalid_argument(
                    "follow reads one partition: set `partition`",
                ))
            }
            None => (0..self.log.partitions(&spec.topic).map_err(internal)?).collect(),
        };
        let mut ranges = Vec::with_capacity(parts.len());
        for p in parts {
            let (start, end) = self.bounds(&spec.topic, p)?;
            let from = match (spec.from, spec.from_time_ms) {
                (Some(o), _) => o.max(start),
                (None, Some(ms)) => self
                    .log
                    .offset_for_timestamp(&spec.topic, p, ms)
                    .map_err(internal)?,
                (None, None) => start,
            };
            // Without `follow`, the end is the end now (or `to`, if lower).
            let to = match (spec.to, spec.follow) {
                (Some(t), _) => Some(t),
                (None, true) => None,
                (None, false) => Some(end),
            };
            ranges.push((p, from, to));
        }
        let log = self.log.clone();
        let shutdown = self.shutdown.clone();
        let topic: Arc<str> = Arc::from(spec.topic.as_str());
        let per_partition = ranges.into_iter().map(move |(p, from, to)| {
            partition_stream(log.clone(), topic.clone(), p, from, to, shutdown.clone())
        });
        Ok(stream::iter(per_partition).flatten().boxed())
    }
}

/// The batches of one partition from `from` up to `to` (exclusive; `None`: follow new
/// appends until the process shuts down).
fn partition_stream(
    log: EmbeddedLog,
    topic: Arc<str>,
    partition: u32,
    from: u64,
    to: Option<u64>,
    shutdown: CancellationToken,
) -> BoxStream<'static, Result<RecordBatch, FlightError>> {
    let appended = log.subscribe();
    stream::try_unfold(
        (from, appended, Vec::<RecordBatch>::new()),
        move |(mut next, mut appended, mut pending)| {
            let (log, topic, shutdown) = (log.clone(), topic.clone(), shutdown.clone());
            async move {
                loop {
                    if let Some(b) = pending.pop() {
                        return Ok(Some((b, (next, appended, pending))));
                    }
                    if to.is_some_and(|t| next >= t) {
                        return Ok(None);
                    }
                    let read = log
                        .read(&topic, partition, next, READ_BYTES)
                        .await
                        .map_err(|e| FlightError::ExternalError(Box::new(e)))?;
                    if read.is_empty() {
                        if to.is_some() {
                            return Ok(None);
                        }
                        // Follow: wait for the next append (or shutdown).
                        tokio::select! {
                            changed = appended.changed() => {
                                if changed.is_err() {
                                    return Ok(None);
                                }
                            }
                            _ = shutdown.cancelled() => return Ok(None),
                        }
                        continue;
                    }
                    for sb in read.into_iter().rev() {
                        let mut batch = sb.batch;
                        let first = sb.first_offset;
                        if let Some(t) = to {
                            if first >= t {
                                continue;
                            }
                            let keep = (t - first).min(batch.num_rows() as u64) as usize;
                            batch = batch.slice(0, keep);
                        }
                        next = next.max(first + batch.num_rows() as u64);
                        pending.push(batch);
                    }
                }
            }
        },
    )
    .boxed()
}

fn internal(e: rivven_engine::Error) -> Status {
    Status::internal(e.to_string())
}

fn topic_of(d: &FlightDescriptor) -> Result<String, Status> {
    match d.path.as_slice() {
        [topic] => Ok(topic.clone()),
        _ => Err(Status::invalid_argument(
            "a flight descriptor is a path of one element: the topic",
        )),
    }
}

#[tonic::async_trait]
impl FlightService for TopicFlights {
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
            infos.push(Ok(self.info(&topic).await?));
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
        if let [kind, name] = request.get_ref().path.as_slice() {
            if kind == "tap" {
                return Ok(Response::new(self.tap_info(name)?));
            }
        }
        let topic = topic_of(request.get_ref())?;
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
        let topic = topic_of(request.get_ref())?;
        self.topic_exists(&topic)?;
        let schema = self.schema(&topic).await?;
        let options = arrow::ipc::writer::IpcWriteOptions::default();
        let result = SchemaResult::try_from(SchemaAsIpc::new(&schema, &options))
            .map_err(|e| Status::internal(e.to_string()))?;
        Ok(Response::new(result))
    }

    async fn do_get(
        &self,
        request: Request<Ticket>,
    ) -> Result<Response<Self::DoGetStream>, Status> {
        let raw = &request.get_ref().ticket;
        if let Ok(serde_json::Value::Object(m)) = serde_json::from_slice(raw) {
            if let Some(tap) = m.get("tap").and_then(|t| t.as_str()) {
                return Ok(Response::new(self.tap_stream(tap)?));
            }
        }
        let spec = TicketSpec::parse(raw)?;
        let batches = self.batches(spec)?;
        let data = FlightDataEncoderBuilder::new()
            .build(batches)
            .map_err(|e| Status::internal(e.to_string()));
        Ok(Response::new(data.boxed()))
    }

    async fn do_put(
        &self,
        _: Request<Streaming<FlightData>>,
    ) -> Result<Response<Self::DoPutStream>, Status> {
        Err(Status::unimplemented("the Flight endpoint is read-only"))
    }

    async fn do_action(
        &self,
        _: Request<Action>,
    ) -> Result<Response<Self::DoActionStream>, Status> {
        Err(Status::unimplemented("no actions"))
    }

    async fn list_actions(
        &self,
        _: Request<Empty>,
    ) -> Result<Response<Self::ListActionsStream>, Status> {
        Ok(Response::new(stream::empty().boxed()))
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
    shutdown: CancellationToken,
) -> Result<(), tonic::transport::Error> {
    let token = settings.token.as_ref().map(|t| t.expose().to_string());
    let service = FlightServiceServer::with_interceptor(
        TopicFlights::new(log, taps, shutdown.clone()),
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
    fn tickets_are_json_or_a_topic_name() {
        let t = TicketSpec::parse(b"orders").unwrap();
        assert_eq!(t.topic, "orders");
        assert!(!t.follow);
        let t = TicketSpec::parse(br#"{"topic": "a", "partition": 1, "from": 5, "follow": true}"#)
            .unwrap();
        assert_eq!((t.partition, t.from, t.follow), (Some(1), Some(5), true));
        assert!(TicketSpec::parse(br#"{"topic": "a", "frm": 5}"#).is_err());
    }

    #[test]
    fn bearer_tokens_must_match_exactly() {
        assert!(bearer_matches(Some("Bearer s3cret"), "s3cret"));
        assert!(!bearer_matches(Some("Bearer s3cre"), "s3cret"));
        assert!(!bearer_matches(Some("s3cret"), "s3cret"));
        assert!(!bearer_matches(None, "s3cret"));
    }
}
