//! Topics and taps as flights: `ListFlights`, `GetFlightInfo`, `GetSchema` and `DoGet`
//! with the JSON tickets described in the module above.

use super::Server;
use arrow::array::RecordBatch;
use arrow_flight::error::FlightError;
use arrow_flight::{FlightData, FlightDescriptor, FlightEndpoint, FlightInfo, Ticket};
use futures_util::stream::{self, BoxStream, StreamExt, TryStreamExt};
use rivven_engine::topic::EmbeddedLog;
use serde::Deserialize;
use std::sync::Arc;
use tokio_util::sync::CancellationToken;
use tonic::Status;

/// Bytes read from the log per step of a `DoGet`.
const READ_BYTES: usize = 8 << 20;

/// What a `DoGet` ticket asks for.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct TicketSpec {
    pub(super) topic: String,
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
    pub(super) fn parse(bytes: &[u8]) -> Result<TicketSpec, Status> {
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

impl Server {
    /// The flight of tap `name`: no schema (each batch brings its own), one endpoint.
    pub(super) fn tap_info(&self, name: &str) -> Result<FlightInfo, Status> {
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
    pub(super) fn tap_stream(
        &self,
        name: &str,
    ) -> Result<BoxStream<'static, Result<FlightData, Status>>, Status> {
        let sub = self
            .taps
            .subscribe(name)
            .ok_or_else(|| Status::not_found(format!("no tap `{name}`")))?;
        let rx = sub.batches;
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
        // The schema goes out at once when the tap has seen a batch: the reader's call
        // returns without waiting for the next batch.
        let data = super::encode::encode(sub.schema, batches.boxed(), None).map_ok(move |mut d| {
            if !d.data_body.is_empty() {
                let n = dropped.load(std::sync::atomic::Ordering::Relaxed);
                d.app_metadata = serde_json::json!({ "dropped": n }).to_string().into();
            }
            d
        });
        Ok(data.boxed())
    }

    pub(super) fn topic_exists(&self, topic: &str) -> Result<(), Status> {
        if self.log.has_topic(topic) {
            Ok(())
        } else {
            Err(Status::not_found(format!("no topic `{topic}`")))
        }
    }

    fn bounds(&self, topic: &str, partition: u32) -> Result<(u64, u64), Status> {
        Ok((
            self.log.start_offset(topic, partition).map_err(internal)?,
            self.log.end_offset(topic, partition).map_err(internal)?,
        ))
    }

    pub(super) async fn info(&self, topic: &str) -> Result<FlightInfo, Status> {
        self.topic_exists(topic)?;
        let schema = super::table::newest_schema(&self.log, topic)
            .await
            .map_err(internal)?;
        let mut info = FlightInfo::new()
            .try_with_schema(&super::encode::flight_schema(&schema))
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
    pub(super) fn batches(
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
            // Without `follow`, the end is the end now (or `to`, if lower); with it, `to`
            // (if any) is waited for.
            let to = match (spec.to, spec.follow) {
                (Some(t), _) => Some(t),
                (None, true) => None,
                (None, false) => Some(end),
            };
            ranges.push((p, from, to));
        }
        let log = self.log.clone();
        let shutdown = self.shutdown.clone();
        let follow = spec.follow;
        let topic: Arc<str> = Arc::from(spec.topic.as_str());
        let per_partition = ranges.into_iter().map(move |(p, from, to)| {
            partition_stream(
                log.clone(),
                topic.clone(),
                p,
                (from, to, follow),
                shutdown.clone(),
            )
        });
        Ok(stream::iter(per_partition).flatten().boxed())
    }
}

/// The batches of one partition from `from` up to `to` (exclusive; `None`: no end). With
/// `follow`, new appends are waited for until `to` is reached or the process shuts down;
/// without it, the stream ends where the log ends.
fn partition_stream(
    log: EmbeddedLog,
    topic: Arc<str>,
    partition: u32,
    (from, to, follow): (u64, Option<u64>, bool),
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
                        if !follow {
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
                                // Retention moved the start past `to`: nothing left.
                                next = next.max(t);
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

pub(super) fn internal(e: rivven_engine::Error) -> Status {
    Status::internal(e.to_string())
}

pub(super) fn topic_of(d: &FlightDescriptor) -> Result<String, Status> {
    match d.path.as_slice() {
        [topic] => Ok(topic.clone()),
        _ => Err(Status::invalid_argument(
            "a flight descriptor is a path of one element: the topic",
        )),
    }
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
}
