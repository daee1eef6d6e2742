//! The runtime: one task per source and per sink, joined by topics.
//!
//! ```text
//! source ─poll─► batcher ─► bounded queue ─► writer ─append(batch + position)─► topic
//!    ▲                                         │
//!    └──────────── commit(position) ◄── ack ───┘ (after the append is durable)
//! topic ─► reader ─► bounded queue ─► sink.write ─► sink.flush ─► commit group offsets
//! ```
//! - Queues are bounded by rows and bytes (`settings.queue`); batches are cut at
//!   `settings.batch.max_rows | max_bytes | linger_ms`.
//! - A failed connector is dropped and re-created after an exponential backoff
//!   (`settings.retry`), resuming from its last durable position or committed offsets. A
//!   non-retryable error, or `max_retries` consecutive failures, fails the pipeline.
//! - Shutdown ([`Runtime::shutdown_token`], cancelled on SIGINT/SIGTERM by the CLI): sources
//!   stop polling, whatever they produced is appended and acknowledged; sinks stop reading,
//!   and every batch they already took is written, flushed and committed before exit.
//! - When every source has finished (bounded sources) and every sink has caught up with its
//!   topics, [`Runtime::run`] returns. With no sources, it runs until shut down.

mod batcher;
pub mod queue;
mod sink_task;
mod source_task;

use crate::config::{LoadedConfig, RetrySettings, Settings};
use crate::error::{Error, Result};
use crate::registry::Registry;
use crate::status::{PipelineKind, StatusRegistry};
use crate::topic::EmbeddedLog;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;

pub use batcher::{Batcher, Next};

/// How a pipeline task ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TaskEnd {
    /// Source exhausted / sink caught up after all sources finished.
    Finished,
    /// Stopped by shutdown.
    Stopped,
    /// Failed permanently.
    Failed,
}

/// State shared by every task.
pub(crate) struct Shared {
    pub settings: Settings,
    pub state_dir: PathBuf,
    pub log: EmbeddedLog,
    pub cancel: CancellationToken,
    /// Topics already warned about for a partition-count mismatch.
    pub mismatch_warned: std::sync::Mutex<std::collections::HashSet<String>>,
}

impl Shared {
    /// True the first time it is asked about `topic`.
    pub(crate) fn first_mismatch(&self, topic: &str) -> bool {
        self.mismatch_warned
            .lock()
            .map(|mut s| s.insert(topic.to_owned()))
            .unwrap_or(false)
    }
}

/// A pipeline's transform list with the compiler that builds a fresh chain per attempt.
#[derive(Clone)]
pub(crate) struct Transforms {
    registry: Registry,
    spec: crate::config::TransformSpec,
}

impl Transforms {
    /// See [`crate::registry::TransformFactory::topic_layout`].
    pub(crate) fn topic_layout(&self) -> Option<crate::registry::TopicLayout> {
        self.registry.topic_layout(&self.spec)
    }
}

impl Transforms {
    /// Compile once up front so a bad list fails at start, not on the first batch.
    fn new(registry: &Registry, parts: &crate::config::ConnectorParts) -> Result<Self> {
        registry.create_transforms(&parts.transforms)?;
        Ok(Self {
            registry: registry.clone(),
            spec: parts.transforms.clone(),
        })
    }

    /// A new chain (`None`: no transforms).
    pub(crate) fn create(&self) -> Result<Option<Box<dyn crate::connector::Transform>>> {
        self.registry.create_transforms(&self.spec)
    }
}

/// Exponential backoff: `initial * 2^failures`, capped at `max`.
pub(crate) fn backoff(retry: &RetrySettings, failures: u32) -> Duration {
    let ms = retry
        .initial_backoff_ms
        .saturating_mul(1u64 << failures.min(30));
    Duration::from_millis(ms.min(retry.max_backoff_ms))
}

/// Run a pipeline: call `attempt` until it ends without error, restarting it after an
/// exponential backoff when it fails with a retryable error. `attempt` returns how it ended
/// and whether it made progress (a durable batch), which resets the failure count.
/// A non-retryable error or `max_retries` consecutive failures fail the pipeline.
pub(crate) async fn supervise<F, Fut>(
    status: &crate::status::PipelineStatus,
    shared: &Shared,
    mut attempt: F,
) -> TaskEnd
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = (Result<TaskEnd>, bool)>,
{
    use crate::status::PipelineState;
    let what = match status.kind {
        crate::status::PipelineKind::Source => "source",
        crate::status::PipelineKind::Sink => "sink",
    };
    let mut failures = 0u32;
    loop {
        status.set_state(PipelineState::Starting);
        let (result, progressed) = attempt().await;
        let e = match result {
            Ok(end) => {
                let (state, msg) = match end {
                    TaskEnd::Finished => (PipelineState::Finished, "finished"),
                    TaskEnd::Stopped => (PipelineState::Stopped, "stopped"),
                    TaskEnd::Failed => (PipelineState::Failed, "failed"),
                };
                status.set_state(state);
                tracing::info!(pipeline = %status.name, "{what} {msg}");
                return end;
            }
            Err(e) => e,
        };
        status.record_error(&e);
        if progressed {
            failures = 0;
        }
        if !e.is_retryable() || failures >= shared.settings.retry.max_retries {
            tracing::error!(pipeline = %status.name, error = %e, retries = failures, "{what} failed");
            status.set_state(PipelineState::Failed);
            return TaskEnd::Failed;
        }
        let wait = backoff(&shared.settings.retry, failures);
        failures += 1;
        tracing::warn!(pipeline = %status.name, error = %e, backoff_ms = wait.as_millis() as u64, "{what} failed; restarting");
        status.set_state(PipelineState::Restarting);
        status.restarted();
        tokio::select! {
            _ = tokio::time::sleep(wait) => {}
            _ = shared.cancel.cancelled() => {
                status.set_state(PipelineState::Stopped);
                return TaskEnd::Stopped;
            }
        }
    }
}

/// What a run ended with.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RunReport {
    /// Pipelines that failed permanently.
    pub failed: Vec<String>,
    /// Whether the run ended because of a shutdown request.
    pub stopped: bool,
}

/// A configured set of pipelines, ready to run.
pub struct Runtime {
    shared: Arc<Shared>,
    sources: Vec<source_task::SourcePipeline>,
    sinks: Vec<sink_task::SinkPipeline>,
    status: Arc<StatusRegistry>,
}

impl std::fmt::Debug for Runtime {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Runtime")
            .field("sources", &self.sources.len())
            .field("sinks", &self.sinks.len())
            .finish()
    }
}

impl Runtime {
    /// Build the runtime: validate connector configs, open the topic log.
    pub fn new(loaded: &LoadedConfig, registry: &Registry) -> Result<Self> {
        loaded
            .validate_connectors(registry)
            .map_err(|e| Error::config(e.to_string()))?;
        let cfg = &loaded.config;
        let state_dir = loaded.state_dir();
        std::fs::create_dir_all(&state_dir).map_err(|e| {
            Error::io(
                format!("settings.state_dir: create {}", state_dir.display()),
                e,
            )
        })?;
        let log = EmbeddedLog::open(&state_dir, cfg.settings.topic.clone())?;
        let status = Arc::new(StatusRegistry::default());
        let mut sources = Vec::new();
        for (name, s) in cfg.sources.iter().filter(|(_, s)| s.enabled) {
            let factory = registry.source(&s.connector).cloned().ok_or_else(|| {
                Error::config(format!(
                    "sources.{name}.connector: unknown `{}`",
                    s.connector
                ))
            })?;
            let parts = s
                .parts()
                .map_err(|e| Error::config(e.under(&format!("sources.{name}")).to_string()))?;
            let transforms = Transforms::new(registry, &parts)
                .map_err(|e| e.context(format!("sources.{name}")))?;
            sources.push(source_task::SourcePipeline {
                name: name.clone(),
                topic: s.topic.clone(),
                dead_letter_topic: parts.transforms.dead_letter_topic.clone(),
                config: parts.config,
                transforms,
                factory,
                status: status.add(name, PipelineKind::Source, &s.connector),
            });
        }
        let mut sinks = Vec::new();
        for (name, s) in cfg.sinks.iter().filter(|(_, s)| s.enabled) {
            let factory = registry.sink(&s.connector).cloned().ok_or_else(|| {
                Error::config(format!("sinks.{name}.connector: unknown `{}`", s.connector))
            })?;
            let parts = s
                .parts()
                .map_err(|e| Error::config(e.under(&format!("sinks.{name}")).to_string()))?;
            let transforms = Transforms::new(registry, &parts)
                .map_err(|e| e.context(format!("sinks.{name}")))?;
            sinks.push(sink_task::SinkPipeline {
                name: name.clone(),
                topics: s.topics.clone(),
                group: s.consumer_group.clone(),
                start: s.start_offset,
                config: parts.config,
                transforms,
                factory,
                status: status.add(name, PipelineKind::Sink, &s.connector),
            });
        }
        let shared = Arc::new(Shared {
            settings: cfg.settings.clone(),
            state_dir,
            log,
            cancel: CancellationToken::new(),
            mismatch_warned: Default::default(),
        });
        Ok(Self {
            shared,
            sources,
            sinks,
            status,
        })
    }

    /// The live status of every pipeline.
    pub fn status(&self) -> Arc<StatusRegistry> {
        self.status.clone()
    }

    /// Cancelling this token starts a graceful drain.
    pub fn shutdown_token(&self) -> CancellationToken {
        self.shared.cancel.clone()
    }

    /// The topic log (for tools and tests).
    pub fn log(&self) -> &EmbeddedLog {
        &self.shared.log
    }

    /// Run every pipeline until they finish or a shutdown drains them.
    pub async fn run(self) -> Result<RunReport> {
        let shared = self.shared;
        // Topics of sources exist before sinks resolve their start, so `latest` is pinned
        // before any source appends.
        // A partitioning chain gets the topics it writes with its partition count.
        for s in &self.sources {
            if let Some(layout) = s.transforms.topic_layout() {
                for t in std::iter::once(&s.topic).chain(&layout.topics) {
                    if !shared.log.has_topic(t) && shared.settings.topic.auto_create {
                        shared.log.create_topic(t, layout.partitions)?;
                    }
                }
            }
            shared.log.ensure_topic(&s.topic)?;
        }
        for s in &self.sinks {
            sink_task::resolve_start(s, &shared)
                .map_err(|e| e.context(format!("sinks.{}", s.name)))?;
        }
        let background = CancellationToken::new();
        spawn_maintenance(&shared, background.clone());

        let has_sources = !self.sources.is_empty();
        let (done_tx, done_rx) = tokio::sync::watch::channel(false);
        let mut sink_set = JoinSet::new();
        for p in self.sinks {
            let name = p.name.clone();
            let sh = shared.clone();
            let rx = done_rx.clone();
            sink_set.spawn(async move { (name, sink_task::run(p, sh, rx).await) });
        }
        let mut source_set = JoinSet::new();
        for p in self.sources {
            let name = p.name.clone();
            let sh = shared.clone();
            source_set.spawn(async move { (name, source_task::run(p, sh).await) });
        }
        let mut failed = Vec::new();
        while let Some(r) = source_set.join_next().await {
            match r {
                Ok((name, TaskEnd::Failed)) => failed.push(name),
                Ok(_) => {}
                Err(e) => failed.push(format!("source task panicked: {e}")),
            }
        }
        if has_sources {
            let _ = done_tx.send(true);
        }
        while let Some(r) = sink_set.join_next().await {
            match r {
                Ok((name, TaskEnd::Failed)) => failed.push(name),
                Ok(_) => {}
                Err(e) => failed.push(format!("sink task panicked: {e}")),
            }
        }
        background.cancel();
        let log = shared.log.clone();
        tokio::task::spawn_blocking(move || log.sync_all())
            .await
            .map_err(|e| Error::internal(e.to_string()))??;
        Ok(RunReport {
            failed,
            stopped: shared.cancel.is_cancelled(),
        })
    }
}

/// Periodic fsync (`fsync: interval`) and age-based retention.
fn spawn_maintenance(shared: &Arc<Shared>, stop: CancellationToken) {
    let topic = &shared.settings.topic;
    let interval = Duration::from_millis(match topic.fsync {
        crate::config::FsyncPolicy::Interval => topic.fsync_interval_ms,
        _ => 60_000,
    });
    let log = shared.log.clone();
    tokio::spawn(async move {
        let mut tick = tokio::time::interval(interval);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let mut last_retention = std::time::Instant::now();
        loop {
            tokio::select! {
                _ = stop.cancelled() => return,
                _ = tick.tick() => {}
            }
            let l = log.clone();
            let run_retention = last_retention.elapsed() >= Duration::from_secs(60);
            if run_retention {
                last_retention = std::time::Instant::now();
            }
            let r = tokio::task::spawn_blocking(move || {
                l.sync_all()?;
                if run_retention {
                    l.enforce_retention()?;
                }
                Ok::<_, Error>(())
            })
            .await;
            if let Ok(Err(e)) = r {
                tracing::error!(error = %e, "topic log maintenance failed");
            }
        }
    });
}

#[cfg(test)]
mod tests;
