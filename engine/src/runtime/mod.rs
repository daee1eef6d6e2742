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
mod health_task;
pub mod queue;
mod sink_task;
mod source_task;
mod task;

use crate::config::LoadedConfig;
use crate::error::{Error, Result};
use crate::pipelines::Pipelines;
use crate::status::{PipelineKind, StatusRegistry};
use crate::tap::Stage;
use crate::topic::EmbeddedLog;
use std::sync::Arc;
use std::time::Duration;
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;

pub use batcher::{Batcher, Next};
pub use task::TaskEnd;
use task::{Shared, Transforms};

/// What a run ended with.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RunReport {
    /// Pipelines that failed permanently.
    pub failed: Vec<String>,
    /// Whose fault each failure was, in the order of `failed` (a task that panicked is
    /// our own).
    pub origins: Vec<crate::error::Origin>,
    /// Whether the run ended because of a shutdown request.
    pub stopped: bool,
}

impl RunReport {
    /// The process exit code: 0 when nothing failed, else the most serious failure's
    /// [`Origin::exit_code`](crate::error::Origin::exit_code): a bug (3) before the user's
    /// (2) before an external system's (1).
    pub fn exit_code(&self) -> u8 {
        use crate::error::Origin;
        [Origin::Internal, Origin::User, Origin::External]
            .into_iter()
            .find(|o| self.origins.contains(o))
            .map_or(0, Origin::exit_code)
    }
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
    /// Build the runtime for the enabled pipelines of `pipelines` (resolved from `loaded`):
    /// open the topic log and instantiate every transform chain once, so that one that
    /// cannot be built fails here. (Expressions are compiled later, against the schema of
    /// the first batch they see; their syntax was checked when the config was resolved.)
    pub fn new(loaded: &LoadedConfig, pipelines: &Pipelines) -> Result<Self> {
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
        let transforms = |plan: &Option<Arc<dyn crate::registry::TransformPlan>>, at: &str| {
            let t = Transforms(plan.clone());
            t.create().map_err(|e| e.context(at))?;
            Ok::<_, Error>(t)
        };
        // Every tap point exists from the start, so readers can list them; each task keeps
        // its own points, so publishing looks nothing up.
        let taps = Arc::new(crate::tap::Taps::default());
        let mut sources = Vec::new();
        for s in pipelines.sources.iter().filter(|s| s.enabled) {
            sources.push(source_task::SourcePipeline {
                transforms: transforms(&s.transforms, &format!("sources.{}", s.name))?,
                status: status.add(&s.name, PipelineKind::Source, &s.connector_name),
                taps: source_task::SourceTaps {
                    source: taps.point(&s.name, Stage::Source),
                    transformed: taps.point(&s.name, Stage::Transformed),
                    dead_letter: taps.point(&s.name, Stage::DeadLetter),
                },
                spec: s.clone(),
            });
        }
        let mut sinks = Vec::new();
        for s in pipelines.sinks.iter().filter(|s| s.enabled) {
            sinks.push(sink_task::SinkPipeline {
                transforms: transforms(&s.transforms, &format!("sinks.{}", s.name))?,
                status: status.add(&s.name, PipelineKind::Sink, &s.connector_name),
                tap_sink: taps.point(&s.name, Stage::Sink),
                tap_dead_letter: taps.point(&s.name, Stage::DeadLetter),
                spec: s.clone(),
            });
        }
        let shared = Arc::new(Shared {
            settings: cfg.settings.clone(),
            state_dir,
            log,
            cancel: CancellationToken::new(),
            taps,
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

    /// The tap points of every pipeline stage (see [`crate::tap`]).
    pub fn taps(&self) -> Arc<crate::tap::Taps> {
        self.shared.taps.clone()
    }

    /// Run every pipeline until they finish or a shutdown drains them.
    pub async fn run(self) -> Result<RunReport> {
        let shared = self.shared;
        // Topics of sources exist before sinks resolve their start, so `latest` is pinned
        // before any source appends.
        // A partitioning chain gets the topics it writes with its partition count.
        for s in &self.sources {
            if let Some(layout) = s.transforms.topic_layout() {
                for t in std::iter::once(&s.spec.topic).chain(&layout.topics) {
                    if !shared.log.has_topic(t) && shared.settings.topic.auto_create {
                        shared.log.create_topic(t, layout.partitions)?;
                    }
                }
            }
            shared.log.ensure_topic(&s.spec.topic)?;
        }
        for s in &self.sinks {
            sink_task::resolve_start(s, &shared)
                .map_err(|e| e.context(format!("sinks.{}", s.spec.name)))?;
        }
        let background = CancellationToken::new();
        spawn_maintenance(&shared, background.clone());

        let has_sources = !self.sources.is_empty();
        let (done_tx, done_rx) = tokio::sync::watch::channel(false);
        let mut sink_set = JoinSet::new();
        for p in self.sinks {
            let name = p.spec.name.clone();
            let sh = shared.clone();
            let rx = done_rx.clone();
            sink_set.spawn(async move { (name, sink_task::run(p, sh, rx).await) });
        }
        let mut source_set = JoinSet::new();
        for p in self.sources {
            let name = p.spec.name.clone();
            let sh = shared.clone();
            if let Some(h) = &p.spec.health {
                tokio::spawn(health_task::run(
                    h.clone(),
                    p.spec.connector.clone(),
                    p.status.clone(),
                    background.clone(),
                ));
            }
            source_set.spawn(async move { (name, source_task::run(p, sh).await) });
        }
        let mut failed = Vec::new();
        let origin_of = |kind, name: &str| {
            self.status
                .get(kind, name)
                .and_then(|s| s.last_error_origin())
                .unwrap_or(crate::error::Origin::Internal)
        };
        while let Some(r) = source_set.join_next().await {
            match r {
                Ok((name, TaskEnd::Failed)) => {
                    let origin = origin_of(PipelineKind::Source, &name);
                    failed.push((name, origin));
                }
                Ok(_) => {}
                Err(e) => failed.push((
                    format!("source task panicked: {e}"),
                    crate::error::Origin::Internal,
                )),
            }
        }
        if has_sources {
            let _ = done_tx.send(true);
        }
        while let Some(r) = sink_set.join_next().await {
            match r {
                Ok((name, TaskEnd::Failed)) => {
                    let origin = origin_of(PipelineKind::Sink, &name);
                    failed.push((name, origin));
                }
                Ok(_) => {}
                Err(e) => failed.push((
                    format!("sink task panicked: {e}"),
                    crate::error::Origin::Internal,
                )),
            }
        }
        background.cancel();
        let log = shared.log.clone();
        tokio::task::spawn_blocking(move || log.sync_all())
            .await
            .map_err(|e| Error::internal(e.to_string()))??;
        let (failed, origins) = failed.into_iter().unzip();
        Ok(RunReport {
            failed,
            origins,
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
