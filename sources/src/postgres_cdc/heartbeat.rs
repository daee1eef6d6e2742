//! Heartbeats (`heartbeat.enabled`): every `interval_secs`, between transactions, run the
//! `action_query` (so an idle database makes WAL and its slot keeps advancing), check how
//! far the stream is behind the server (the pipeline is marked unhealthy while the oldest
//! unconfirmed commit is older than `max_lag_secs`), and with `emit_events` produce one
//! heartbeat event.

use super::acks::Acks;
use super::catalog;
use super::config::HeartbeatConfig;
use super::conn::format_lsn;
use arrow::array::{ArrayRef, Int64Array, RecordBatch, StringArray, TimestampMillisecondArray};
use arrow::datatypes::{DataType, Field, Schema};
use rivven_engine::batch::now_ms;
use rivven_engine::status::PipelineStatus;
use rivven_engine::{Error, Result};
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio_postgres::Client;

/// The stream name of heartbeat events.
pub(super) const STREAM: &str = "__heartbeat";

/// The heartbeat of one source.
pub(super) struct Heartbeat {
    cfg: HeartbeatConfig,
    last: Instant,
    /// The action query of the heartbeat under way, as a task: a poll dropped while it
    /// runs does not run it again.
    action: Option<tokio::task::JoinHandle<Result<()>>>,
}

impl Heartbeat {
    /// The heartbeat `cfg` asks for, if enabled.
    pub fn new(cfg: Option<&HeartbeatConfig>) -> Option<Self> {
        cfg.filter(|h| h.enabled).map(|cfg| Heartbeat {
            cfg: cfg.clone(),
            last: Instant::now(),
            action: None,
        })
    }

    /// Time until the next heartbeat is due (zero: due).
    pub fn due_in(&self) -> Duration {
        Duration::from_secs(self.cfg.interval_secs).saturating_sub(self.last.elapsed())
    }

    /// Run one heartbeat: the action query, then the lag check (reported to `status`).
    /// Returns the heartbeat event and its topic when `emit_events` is set. Cancel-safe:
    /// a cancelled heartbeat is finished by the next call, and its query runs once.
    pub async fn beat(
        &mut self,
        sql: &Arc<Client>,
        slot: &str,
        acks: &Acks,
        status: Option<&PipelineStatus>,
    ) -> Result<Option<(RecordBatch, Arc<str>)>> {
        if let (None, Some(q)) = (&self.action, &self.cfg.action_query) {
            let (sql, q) = (sql.clone(), q.clone());
            self.action = Some(tokio::spawn(async move {
                sql.batch_execute(&q)
                    .await
                    .map_err(|e| catalog::pg_error("heartbeat.action_query", e))
            }));
        }
        if let Some(task) = self.action.as_mut() {
            let done = task
                .await
                .map_err(|e| Error::internal(format!("heartbeat action query task: {e}")));
            self.action = None;
            done??;
        }
        self.last = Instant::now();
        let h = &self.cfg;
        let lag_bytes = acks.lag_bytes();
        let lag_secs = acks.lag_secs(now_ms());
        let behind = lag_secs as u64 > h.max_lag_secs;
        if behind {
            tracing::warn!(
                slot = %slot,
                lag_secs,
                lag_bytes,
                max_lag_secs = h.max_lag_secs,
                "postgres-cdc is behind: the oldest unconfirmed change is older than heartbeat.max_lag_secs"
            );
        } else {
            tracing::debug!(slot = %slot, lag_bytes, lag_secs, "heartbeat");
        }
        if let Some(st) = status {
            st.set_unhealthy(
                behind
                    .then(|| {
                        format!(
                            "slot {slot} lags {lag_secs} s ({lag_bytes} bytes) behind the \
                             server, more than heartbeat.max_lag_secs ({})",
                            h.max_lag_secs
                        )
                    })
                    .as_deref(),
            );
        }
        match (&h.topic, h.emit_events) {
            (Some(topic), true) => Ok(Some((
                event(slot, acks.received(), acks.confirmed(), lag_bytes)?,
                Arc::from(topic.as_str()),
            ))),
            _ => Ok(None),
        }
    }
}

/// One heartbeat event: `ts_ms`, `slot`, `received_lsn`, `confirmed_lsn`, `lag_bytes`.
fn event(slot: &str, received: u64, confirmed: u64, lag_bytes: u64) -> Result<RecordBatch> {
    let schema = Arc::new(Schema::new(vec![
        Field::new("ts_ms", rivven_engine::batch::timestamp_ms_utc(), false),
        Field::new("slot", DataType::Utf8, false),
        Field::new("received_lsn", DataType::Utf8, false),
        Field::new("confirmed_lsn", DataType::Utf8, false),
        Field::new("lag_bytes", DataType::Int64, false),
    ]));
    let cols: Vec<ArrayRef> = vec![
        Arc::new(TimestampMillisecondArray::from(vec![now_ms()]).with_timezone("UTC")),
        Arc::new(StringArray::from(vec![slot])),
        Arc::new(StringArray::from(vec![format_lsn(received)])),
        Arc::new(StringArray::from(vec![format_lsn(confirmed)])),
        Arc::new(Int64Array::from(vec![lag_bytes as i64])),
    ];
    RecordBatch::try_new(schema, cols).map_err(|e| Error::internal(format!("heartbeat event: {e}")))
}
