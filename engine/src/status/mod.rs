//! Pipeline status and metrics, shared by the runtime and served over HTTP.
//!
//! `GET /health` answers 200 while the process runs (liveness); `GET /ready` answers 200
//! while no pipeline has failed or is unhealthy and 503 with the reasons otherwise
//! (readiness; a connector marks its pipeline unhealthy, e.g. postgres-cdc when its slot
//! lags more than `heartbeat.max_lag_secs`); `GET /status` returns every pipeline's state,
//! health, counters, lag and last error as JSON (what `rivven-connect status` prints);
//! `GET /metrics` returns the same counters in the Prometheus text format. Error texts are
//! scrubbed of secrets before they are stored.

mod exposition;
mod http;
mod metrics;

pub use metrics::commit_times;

pub use http::serve;

use serde::Serialize;
use std::collections::{BTreeMap, VecDeque};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, RwLock};
use std::time::{Duration, Instant};

/// Whether a pipeline is a source or a sink.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum PipelineKind {
    /// A source pipeline.
    Source,
    /// A sink pipeline.
    Sink,
}

impl PipelineKind {
    /// `source` or `sink`.
    pub fn as_str(self) -> &'static str {
        match self {
            PipelineKind::Source => "source",
            PipelineKind::Sink => "sink",
        }
    }
}

/// Lifecycle state of a pipeline.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum PipelineState {
    /// Being created / opened.
    Starting,
    /// Moving data.
    Running,
    /// Failed; waiting for the backoff before the next attempt.
    Restarting,
    /// Bounded source exhausted, or sink caught up after every source finished.
    Finished,
    /// Stopped by shutdown.
    Stopped,
    /// Failed permanently (non-retryable error or retries exhausted).
    Failed,
}

/// Live status of one pipeline. Counters are lock-free.
#[derive(Debug)]
pub struct PipelineStatus {
    /// Pipeline name.
    pub name: String,
    /// Source or sink.
    pub kind: PipelineKind,
    /// Connector name.
    pub connector: String,
    state: Mutex<PipelineState>,
    events: AtomicU64,
    bytes: AtomicU64,
    lag: AtomicU64,
    restarts: AtomicU64,
    last_error: Mutex<Option<(String, crate::error::Origin)>>,
    unhealthy: Mutex<Option<String>>,
    position: Mutex<Option<serde_json::Value>>,
    gauges: Mutex<BTreeMap<GaugeKey, f64>>,
    details: Mutex<serde_json::Map<String, serde_json::Value>>,
    /// `(when, events, bytes)` every [`SAMPLE_INTERVAL`], oldest first, at most
    /// [`SAMPLES`].
    samples: Mutex<VecDeque<(Instant, u64, u64)>>,
    observed: metrics::Observed,
    /// The longest commit-to-durable time (ms) since the health monitor last took it.
    lag_ms: AtomicU64,
    /// The health monitor's report (sources with `config.health`).
    health: Mutex<Option<crate::health::HealthReport>>,
    /// Bumped when the health monitor asks for a restart.
    restart: tokio::sync::watch::Sender<u64>,
}

/// How often the HTTP endpoint samples the counters for rates and history.
pub const SAMPLE_INTERVAL: Duration = Duration::from_secs(2);
/// Samples kept: five minutes of history.
const SAMPLES: usize = 151;

/// A connector gauge: metric name and labels.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
struct GaugeKey {
    name: String,
    labels: Vec<(String, String)>,
}

/// A connector gauge's value, as exported.
#[derive(Debug, Clone, Serialize, serde::Deserialize)]
pub struct GaugeValue {
    /// Prometheus metric name (`rivven_connect_` + the connector's name).
    pub name: String,
    /// Labels besides pipeline, kind and connector.
    pub labels: BTreeMap<String, String>,
    /// Value.
    pub value: f64,
}

impl PipelineStatus {
    /// Set a connector-specific gauge, exported as `rivven_connect_<name>{pipeline, kind,
    /// connector, labels...}`. `name` is lower-case letters, digits and `_`.
    pub fn set_gauge(&self, name: &str, labels: &[(&str, &str)], value: f64) {
        let key = GaugeKey {
            name: name.to_owned(),
            labels: labels
                .iter()
                .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
                .collect(),
        };
        if let Ok(mut g) = self.gauges.lock() {
            g.insert(key, value);
        }
    }

    /// Set a connector-specific detail shown under `details` in `/status` (and `status`).
    pub fn set_detail(&self, key: &str, value: serde_json::Value) {
        if let Ok(mut d) = self.details.lock() {
            d.insert(key.to_owned(), value);
        }
    }

    /// Set the state.
    pub fn set_state(&self, state: PipelineState) {
        if let Ok(mut s) = self.state.lock() {
            *s = state;
        }
    }

    /// The current state.
    pub fn state(&self) -> PipelineState {
        self.state
            .lock()
            .map(|s| *s)
            .unwrap_or(PipelineState::Failed)
    }

    /// Count rows and bytes moved: one batch (its rows also go to the
    /// `rivven_connect_batch_rows` histogram).
    pub fn add(&self, events: u64, bytes: u64) {
        self.events.fetch_add(events, Ordering::Relaxed);
        self.bytes.fetch_add(bytes, Ordering::Relaxed);
        if let Some(h) = &self.observed.batch_rows {
            h.observe(events as f64);
        }
    }

    /// A sink flush took `took` (the `rivven_connect_sink_flush_duration_seconds`
    /// histogram).
    pub fn observe_flush(&self, took: Duration) {
        if let Some(h) = &self.observed.flush {
            h.observe(took.as_secs_f64());
        }
    }

    /// Change events with these commit times (see [`commit_times`]) became durable in the
    /// topic at `now_ms`: observe each one's time since its upstream commit (the
    /// `rivven_connect_commit_to_durable_seconds` histogram, and the health monitor's lag).
    pub fn observe_durable(&self, commit_times: &arrow::array::ArrayRef, now_ms: i64) {
        if let Some(ms) = self.observed.commit_latencies(commit_times, now_ms) {
            self.lag_ms.fetch_max(ms, Ordering::Relaxed);
        }
    }

    /// Rows moved so far.
    pub fn events(&self) -> u64 {
        self.events.load(Ordering::Relaxed)
    }

    /// The longest commit-to-durable time (ms) of the changes made durable since the last
    /// call (0 when none).
    pub fn take_lag_ms(&self) -> u64 {
        self.lag_ms.swap(0, Ordering::Relaxed)
    }

    /// Record the health monitor's report (shown in `/status`, `/ready`, `/metrics`).
    pub fn set_health(&self, report: crate::health::HealthReport) {
        if let Ok(mut h) = self.health.lock() {
            *h = Some(report);
        }
    }

    /// Why the connector reports the pipeline unhealthy (`None`: it does not).
    pub fn unhealthy_reason(&self) -> Option<String> {
        self.unhealthy.lock().ok().and_then(|u| u.clone())
    }

    /// Ask the running attempt of the source to stop with a retryable error, so that it is
    /// restarted (the health monitor's auto-recovery).
    pub fn request_restart(&self) {
        self.restart.send_modify(|n| *n += 1);
    }

    /// A receiver that changes when a restart is requested.
    pub fn restart_requests(&self) -> tokio::sync::watch::Receiver<u64> {
        self.restart.subscribe()
    }

    /// Set the lag (records not yet durable in the sink, or source-defined).
    pub fn set_lag(&self, lag: u64) {
        self.lag.store(lag, Ordering::Relaxed);
    }

    /// Record a failure (the text is scrubbed of secrets) and whose fault it is.
    pub fn record_error(&self, error: &crate::Error) {
        if let Ok(mut e) = self.last_error.lock() {
            *e = Some((crate::redact::scrub(&error.to_string()), error.origin()));
        }
    }

    /// Whose fault the last recorded failure was (`None`: no failure).
    pub fn last_error_origin(&self) -> Option<crate::error::Origin> {
        self.last_error
            .lock()
            .ok()
            .and_then(|e| e.as_ref().map(|e| e.1))
    }

    /// Mark the pipeline unhealthy with a reason (scrubbed of secrets), or healthy again
    /// with `None`. An unhealthy pipeline keeps running; `/ready` answers 503 meanwhile.
    pub fn set_unhealthy(&self, reason: Option<&str>) {
        if let Ok(mut u) = self.unhealthy.lock() {
            *u = reason.map(crate::redact::scrub);
        }
    }

    /// Count a restart.
    pub fn restarted(&self) {
        self.restarts.fetch_add(1, Ordering::Relaxed);
    }

    /// Record the last durable source position.
    pub fn set_position(&self, position: serde_json::Value) {
        if let Ok(mut p) = self.position.lock() {
            *p = Some(position);
        }
    }

    /// Record the counters now (ignored when the last sample is under half an interval
    /// old, so two endpoints sampling do not halve the intervals).
    fn sample(&self, now: Instant) {
        let Ok(mut s) = self.samples.lock() else {
            return;
        };
        if s.back()
            .is_some_and(|(t, _, _)| now.duration_since(*t) < SAMPLE_INTERVAL / 2)
        {
            return;
        }
        if s.len() == SAMPLES {
            s.pop_front();
        }
        s.push_back((
            now,
            self.events.load(Ordering::Relaxed),
            self.bytes.load(Ordering::Relaxed),
        ));
    }

    /// Events and bytes per second over the last sample interval, and events per second
    /// over each interval of the history.
    fn rates(&self) -> (f64, f64, Vec<f64>) {
        let Ok(s) = self.samples.lock() else {
            return (0.0, 0.0, Vec::new());
        };
        let per_sec = |a: &(Instant, u64, u64), b: &(Instant, u64, u64)| {
            let dt = b.0.duration_since(a.0).as_secs_f64().max(1e-3);
            (
                b.1.saturating_sub(a.1) as f64 / dt,
                b.2.saturating_sub(a.2) as f64 / dt,
            )
        };
        let history: Vec<f64> = s
            .iter()
            .zip(s.iter().skip(1))
            .map(|(a, b)| (per_sec(a, b).0 * 10.0).round() / 10.0)
            .collect();
        let (events, bytes) = match (s.len().checked_sub(2).map(|i| &s[i]), s.back()) {
            (Some(a), Some(b)) => per_sec(a, b),
            _ => (0.0, 0.0),
        };
        ((events * 10.0).round() / 10.0, bytes.round(), history)
    }

    fn snapshot(&self) -> PipelineSnapshot {
        let (events_per_sec, bytes_per_sec, history) = self.rates();
        PipelineSnapshot {
            health: self.health.lock().ok().and_then(|h| h.clone()),
            events_per_sec,
            bytes_per_sec,
            history,
            name: self.name.clone(),
            kind: self.kind,
            connector: self.connector.clone(),
            state: self.state(),
            events: self.events.load(Ordering::Relaxed),
            bytes: self.bytes.load(Ordering::Relaxed),
            lag: self.lag.load(Ordering::Relaxed),
            restarts: self.restarts.load(Ordering::Relaxed),
            last_error: self
                .last_error
                .lock()
                .ok()
                .and_then(|e| e.as_ref().map(|e| e.0.clone())),
            last_error_origin: self.last_error_origin(),
            unhealthy: self.unhealthy.lock().ok().and_then(|u| u.clone()),
            position: self.position.lock().ok().and_then(|p| p.clone()),
            details: self
                .details
                .lock()
                .ok()
                .filter(|d| !d.is_empty())
                .map(|d| serde_json::Value::Object(d.clone())),
            gauges: self
                .gauges
                .lock()
                .map(|g| {
                    g.iter()
                        .map(|(k, v)| GaugeValue {
                            name: k.name.clone(),
                            labels: k.labels.iter().cloned().collect(),
                            value: *v,
                        })
                        .collect()
                })
                .unwrap_or_default(),
        }
    }
}

/// A point-in-time copy of one pipeline's status (the JSON of `/status`).
#[derive(Debug, Clone, Serialize, serde::Deserialize)]
pub struct PipelineSnapshot {
    /// Pipeline name.
    pub name: String,
    /// Source or sink.
    #[serde(with = "kind_serde")]
    pub kind: PipelineKind,
    /// Connector name.
    pub connector: String,
    /// State.
    #[serde(with = "state_serde")]
    pub state: PipelineState,
    /// Rows moved (sources: appended to the topic; sinks: written).
    pub events: u64,
    /// Arrow bytes moved.
    pub bytes: u64,
    /// Sinks: records in their topics not yet durable in the sink.
    pub lag: u64,
    /// Restarts after failures.
    pub restarts: u64,
    /// Events per second over the last sample interval (2 s; 0 until two samples).
    #[serde(default)]
    pub events_per_sec: f64,
    /// Arrow bytes per second over the last sample interval.
    #[serde(default)]
    pub bytes_per_sec: f64,
    /// Events per second in each 2-second interval of the last five minutes, oldest first.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub history: Vec<f64>,
    /// Last error, scrubbed of secrets.
    pub last_error: Option<String>,
    /// Whose fault the last error was: `user` (configuration, permissions: change
    /// something), `external` (a system outside the process failed) or `internal` (a bug in
    /// rivven-connect: please report it).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_error_origin: Option<crate::error::Origin>,
    /// Why the connector reports the pipeline unhealthy (absent: healthy).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub unhealthy: Option<String>,
    /// Sources: last durable position.
    pub position: Option<serde_json::Value>,
    /// Connector-specific details (e.g. snapshot progress, replication slot lag).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub details: Option<serde_json::Value>,
    /// Sources with `config.health`: the health monitor's report.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub health: Option<crate::health::HealthReport>,
    /// Connector-specific gauges (also in `/metrics`).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub gauges: Vec<GaugeValue>,
}

macro_rules! enum_serde {
    ($m:ident, $t:ty, $($v:ident = $s:literal),*) => {
        mod $m {
            use super::*;
            pub fn serialize<S: serde::Serializer>(v: &$t, s: S) -> Result<S::Ok, S::Error> {
                s.serialize_str(match v { $(<$t>::$v => $s),* })
            }
            pub fn deserialize<'de, D: serde::Deserializer<'de>>(d: D) -> Result<$t, D::Error> {
                let s = <String as serde::Deserialize>::deserialize(d)?;
                match s.as_str() { $($s => Ok(<$t>::$v),)* o => Err(serde::de::Error::custom(format!("unknown value {o}"))) }
            }
        }
    };
}
enum_serde!(kind_serde, PipelineKind, Source = "source", Sink = "sink");
enum_serde!(
    state_serde,
    PipelineState,
    Starting = "starting",
    Running = "running",
    Restarting = "restarting",
    Finished = "finished",
    Stopped = "stopped",
    Failed = "failed"
);

/// The whole process's status (the JSON of `/status`).
#[derive(Debug, Clone, Serialize, serde::Deserialize)]
pub struct StatusReport {
    /// Seconds since the runtime started.
    pub uptime_secs: u64,
    /// Every pipeline.
    pub pipelines: Vec<PipelineSnapshot>,
}

/// Registry of every pipeline's status.
#[derive(Debug)]
pub struct StatusRegistry {
    started: Instant,
    pipelines: RwLock<Vec<Arc<PipelineStatus>>>,
    histograms: metrics::Histograms,
}

impl Default for StatusRegistry {
    fn default() -> Self {
        Self {
            started: Instant::now(),
            pipelines: RwLock::new(Vec::new()),
            histograms: metrics::Histograms::new(),
        }
    }
}

impl StatusRegistry {
    /// Register a pipeline.
    pub fn add(&self, name: &str, kind: PipelineKind, connector: &str) -> Arc<PipelineStatus> {
        let st = Arc::new(PipelineStatus {
            name: name.to_owned(),
            kind,
            connector: connector.to_owned(),
            state: Mutex::new(PipelineState::Starting),
            events: AtomicU64::new(0),
            bytes: AtomicU64::new(0),
            lag: AtomicU64::new(0),
            restarts: AtomicU64::new(0),
            last_error: Mutex::new(None),
            unhealthy: Mutex::new(None),
            position: Mutex::new(None),
            gauges: Mutex::new(BTreeMap::new()),
            details: Mutex::new(serde_json::Map::new()),
            samples: Mutex::new(VecDeque::with_capacity(SAMPLES)),
            observed: self.histograms.pipeline(name, kind.as_str(), connector),
            lag_ms: AtomicU64::new(0),
            health: Mutex::new(None),
            restart: tokio::sync::watch::channel(0).0,
        });
        if let Ok(mut p) = self.pipelines.write() {
            p.push(st.clone());
        }
        st
    }

    /// The status of the source or sink pipeline `name`.
    pub fn get(&self, kind: PipelineKind, name: &str) -> Option<Arc<PipelineStatus>> {
        self.pipelines
            .read()
            .ok()?
            .iter()
            .find(|p| p.kind == kind && p.name == name)
            .cloned()
    }

    /// Why the process is not ready: one line per failed or unhealthy pipeline (empty:
    /// ready).
    pub fn not_ready(&self) -> Vec<String> {
        let mut out = Vec::new();
        for p in self.report().pipelines {
            if p.state == PipelineState::Failed {
                let why = p.last_error.as_deref().unwrap_or("failed");
                out.push(format!("{}: failed: {why}", p.name));
            }
            // A connector's health matters while its pipeline runs (or will run again).
            let ended = matches!(p.state, PipelineState::Finished | PipelineState::Stopped);
            if let (Some(why), false) = (&p.unhealthy, ended) {
                out.push(format!("{}: unhealthy: {why}", p.name));
            }
            if let (Some(h), false) = (&p.health, ended) {
                if !h.state.ready() {
                    let state = serde_json::to_value(h.state).unwrap_or_default();
                    let why = h.reason.as_deref().unwrap_or("recovering");
                    out.push(format!(
                        "{}: health {}: {why}",
                        p.name,
                        state.as_str().unwrap_or("unhealthy")
                    ));
                }
            }
        }
        out
    }

    /// Record every pipeline's counters now, for the rates and history in `/status`.
    pub fn sample(&self) {
        let now = Instant::now();
        if let Ok(p) = self.pipelines.read() {
            for s in p.iter() {
                s.sample(now);
            }
        }
    }

    /// A snapshot of everything.
    pub fn report(&self) -> StatusReport {
        StatusReport {
            uptime_secs: self.started.elapsed().as_secs(),
            pipelines: self
                .pipelines
                .read()
                .map(|p| p.iter().map(|s| s.snapshot()).collect())
                .unwrap_or_default(),
        }
    }
}
