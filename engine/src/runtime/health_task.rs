//! The health monitor of a source with `config.health` (see [`crate::health`]): one check
//! every `check_interval_secs` until the process shuts down or the source ends.

use crate::health::{HealthSettings, Tracker};
use crate::registry::ConfiguredSource;
use crate::status::{PipelineState, PipelineStatus};
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio_util::sync::CancellationToken;

pub(super) async fn run(
    settings: HealthSettings,
    connector: Arc<dyn ConfiguredSource>,
    status: Arc<PipelineStatus>,
    stop: CancellationToken,
) {
    let mut tracker = Tracker::new(settings.clone(), Instant::now());
    let mut events = status.events();
    status.set_health(tracker.report().clone());
    let every = Duration::from_secs(settings.check_interval_secs);
    let mut tick = tokio::time::interval_at(tokio::time::Instant::now() + every, every);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = tick.tick() => {}
            _ = stop.cancelled() => return,
        }
        // An ended or permanently failed source has nothing left to monitor or restart.
        match status.state() {
            PipelineState::Finished | PipelineState::Stopped => return,
            PipelineState::Failed => {
                let mut last = tracker.report().clone();
                last.state = crate::health::HealthState::Unhealthy;
                last.reason = Some("the source failed; no more checks".into());
                status.set_health(last);
                return;
            }
            _ => {}
        }
        let lag_ms = status.take_lag_ms();
        let (before_events, now_events) = (events, status.events());
        events = now_events;
        let result = check(&settings, connector.as_ref(), &status, lag_ms).await;
        if let Err(why) = &result {
            tracing::warn!(source = %status.name, reason = %why, "health check failed");
        }
        let before = tracker.report().state;
        let restart = tracker.observe(result, lag_ms, now_events > before_events, Instant::now());
        let report = tracker.report().clone();
        if report.state != before {
            tracing::info!(source = %status.name, from = ?before, to = ?report.state, "health state changed");
        }
        status.set_health(report);
        if restart {
            tracing::warn!(source = %status.name, "health monitor restarting the source");
            status.request_restart();
        }
    }
}

/// One check: `Err` says why it failed.
async fn check(
    settings: &HealthSettings,
    connector: &dyn ConfiguredSource,
    status: &PipelineStatus,
    lag_ms: u64,
) -> Result<(), String> {
    match status.state() {
        PipelineState::Restarting => return Err("the source is restarting after a failure".into()),
        PipelineState::Failed => return Err("the source failed".into()),
        _ => {}
    }
    if let Some(why) = status.unhealthy_reason() {
        return Err(why);
    }
    let timeout = Duration::from_secs(settings.check_timeout_secs);
    match tokio::time::timeout(timeout, connector.check()).await {
        Err(_) => {
            return Err(format!(
                "the connector check took longer than check_timeout_secs ({}s)",
                settings.check_timeout_secs
            ))
        }
        Ok(Err(e)) => {
            return Err(format!(
                "connector check: {}",
                crate::redact::scrub(&e.to_string())
            ))
        }
        Ok(Ok(_)) => {}
    }
    if lag_ms > settings.max_lag_ms {
        return Err(format!(
            "a change took {lag_ms} ms from its commit to the topic, more than max_lag_ms ({})",
            settings.max_lag_ms
        ));
    }
    Ok(())
}
