//! Health monitoring of a source (its `config.health` block): a check every
//! `check_interval_secs`, a state machine over consecutive results, and auto-recovery by
//! restarting the source.
//!
//! A check passes when all of these hold:
//! - the pipeline is not restarting or failed;
//! - its connector does not report it unhealthy (postgres-cdc does when its slot lags);
//! - the connector's own check (what `rivven-connect check` runs: connect, prerequisites)
//!   succeeds within `check_timeout_secs`;
//! - the lag, the longest time from an upstream commit (`source.ts_ms`) to the durable
//!   append of that change among the changes since the previous check, is at most
//!   `max_lag_ms` (no changes: no lag).
//!
//! States: `healthy`; `degraded` after a failed check, until `failure_threshold`
//! consecutive failures make it `unhealthy`; back to `healthy` after `success_threshold`
//! consecutive passes. With `auto_recovery`, an unhealthy source is restarted after
//! `recovery_delay_secs` and is `recovering` until it passes `success_threshold` checks in
//! a row; while it keeps failing it is restarted again, the delay doubling up to
//! `max_recovery_delay_secs`. `/ready` answers 503 while a source is `unhealthy` or
//! `recovering`.

use crate::config::{FieldError, Validate};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};
use std::time::{Duration, Instant};

/// The longest period any `health` key may set, in seconds.
const DAY_SECS: u64 = 86_400;

/// A source's `config.health`.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields, default)]
pub struct HealthSettings {
    /// Monitor the source (default true when the block is given).
    pub enabled: bool,
    /// Seconds between checks (default 10).
    pub check_interval_secs: u64,
    /// Longest commit-to-durable time of a change before a check fails, in milliseconds
    /// (default 30000).
    pub max_lag_ms: u64,
    /// Consecutive failed checks that make the source unhealthy (default 3).
    pub failure_threshold: u32,
    /// Consecutive passed checks that make it healthy again (default 2).
    pub success_threshold: u32,
    /// Longest a connector check may take before the check fails, in seconds (default 5).
    pub check_timeout_secs: u64,
    /// Restart an unhealthy source (default true).
    pub auto_recovery: bool,
    /// Seconds from becoming unhealthy to the first restart (default 1).
    pub recovery_delay_secs: u64,
    /// Ceiling of the delay between restarts, doubled after each failed recovery, in
    /// seconds (default 60).
    pub max_recovery_delay_secs: u64,
}

impl Default for HealthSettings {
    fn default() -> Self {
        HealthSettings {
            enabled: true,
            check_interval_secs: 10,
            max_lag_ms: 30_000,
            failure_threshold: 3,
            success_threshold: 2,
            check_timeout_secs: 5,
            auto_recovery: true,
            recovery_delay_secs: 1,
            max_recovery_delay_secs: 60,
        }
    }
}

impl Validate for HealthSettings {
    fn validate(&self) -> Vec<FieldError> {
        let mut errs = Vec::new();
        let mut at_least = |key: &str, v: u64, min: u64| {
            if v < min {
                errs.push(FieldError::new(
                    key,
                    format!("must be at least {min}, got {v}"),
                ));
            }
        };
        at_least("check_interval_secs", self.check_interval_secs, 1);
        at_least("check_timeout_secs", self.check_timeout_secs, 1);
        at_least("failure_threshold", self.failure_threshold.into(), 1);
        at_least("success_threshold", self.success_threshold.into(), 1);
        at_least("recovery_delay_secs", self.recovery_delay_secs, 1);
        // A day bounds every period: beyond, a check or a restart would never come.
        for (key, v) in [
            ("check_interval_secs", self.check_interval_secs),
            ("check_timeout_secs", self.check_timeout_secs),
            ("recovery_delay_secs", self.recovery_delay_secs),
            ("max_recovery_delay_secs", self.max_recovery_delay_secs),
        ] {
            if v > DAY_SECS {
                errs.push(FieldError::new(
                    key,
                    format!("must be at most {DAY_SECS} (a day), got {v}"),
                ));
            }
        }
        if self.max_recovery_delay_secs < self.recovery_delay_secs {
            errs.push(FieldError::new(
                "max_recovery_delay_secs",
                format!(
                    "must be at least recovery_delay_secs ({}), got {}",
                    self.recovery_delay_secs, self.max_recovery_delay_secs
                ),
            ));
        }
        errs
    }
}

/// A monitored source's health.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum HealthState {
    /// Every check passes.
    Healthy,
    /// A check failed, fewer than `failure_threshold` in a row.
    Degraded,
    /// `failure_threshold` checks in a row failed.
    Unhealthy,
    /// Restarted by auto-recovery, not yet passing `success_threshold` checks in a row.
    Recovering,
}

impl HealthState {
    /// Whether `/ready` counts the source ready.
    pub fn ready(self) -> bool {
        matches!(self, HealthState::Healthy | HealthState::Degraded)
    }
}

/// What the monitor reports (the `health` object of a source in `/status`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct HealthReport {
    /// The state.
    pub state: HealthState,
    /// Why the last failed check failed (absent after a pass).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
    /// The lag of the last check, in milliseconds.
    pub lag_ms: u64,
    /// Checks failed in a row.
    pub consecutive_failures: u32,
    /// Checks passed.
    pub checks_passed: u64,
    /// Checks failed.
    pub checks_failed: u64,
    /// State changes.
    pub transitions: u64,
    /// Recoveries that ended healthy.
    pub recoveries_succeeded: u64,
    /// Restarts after which the source kept failing.
    pub recoveries_failed: u64,
    /// Time spent unhealthy or recovering, in milliseconds.
    pub unhealthy_ms: u64,
}

/// The state machine over check results, apart from time sources and I/O.
#[derive(Debug)]
pub struct Tracker {
    settings: HealthSettings,
    report: HealthReport,
    passes_in_a_row: u32,
    /// When the next restart is due while unhealthy or recovering.
    next_restart: Option<Instant>,
    delay: Duration,
    since: Instant,
}

impl Tracker {
    pub fn new(settings: HealthSettings, now: Instant) -> Tracker {
        Tracker {
            delay: Duration::from_secs(settings.recovery_delay_secs),
            settings,
            report: HealthReport {
                state: HealthState::Healthy,
                reason: None,
                lag_ms: 0,
                consecutive_failures: 0,
                checks_passed: 0,
                checks_failed: 0,
                transitions: 0,
                recoveries_succeeded: 0,
                recoveries_failed: 0,
                unhealthy_ms: 0,
            },
            passes_in_a_row: 0,
            next_restart: None,
            since: now,
        }
    }

    /// The report as of the last check.
    pub fn report(&self) -> &HealthReport {
        &self.report
    }

    fn set(&mut self, state: HealthState, now: Instant) {
        if !self.report.state.ready() {
            self.report.unhealthy_ms += now.duration_since(self.since).as_millis() as u64;
        }
        self.since = now;
        if state != self.report.state {
            self.report.transitions += 1;
            self.report.state = state;
        }
    }

    /// Take a check's result (`Err`: why it failed) with the lag it measured and whether
    /// the source made durable progress since the previous check; returns whether the
    /// source should be restarted now. A source that makes progress is never restarted (a
    /// restart does not cure lag; it would throw away a snapshot's work): it stays
    /// unhealthy until its checks pass or it stops moving.
    pub fn observe(
        &mut self,
        result: Result<(), String>,
        lag_ms: u64,
        progressing: bool,
        now: Instant,
    ) -> bool {
        use HealthState::*;
        self.report.lag_ms = lag_ms;
        let state = self.report.state;
        match result {
            Ok(()) => {
                self.report.checks_passed += 1;
                self.report.consecutive_failures = 0;
                self.report.reason = None;
                self.passes_in_a_row += 1;
                if state != Healthy && self.passes_in_a_row >= self.settings.success_threshold {
                    if state == Recovering {
                        self.report.recoveries_succeeded += 1;
                    }
                    self.next_restart = None;
                    self.delay = Duration::from_secs(self.settings.recovery_delay_secs);
                    self.set(Healthy, now);
                } else {
                    self.set(state, now);
                }
                false
            }
            Err(reason) => {
                self.report.checks_failed += 1;
                self.report.consecutive_failures += 1;
                self.report.reason = Some(reason);
                self.passes_in_a_row = 0;
                let failing = self.report.consecutive_failures >= self.settings.failure_threshold;
                let next = match state {
                    Healthy | Degraded if !failing => Degraded,
                    Healthy | Degraded => {
                        if self.settings.auto_recovery {
                            self.next_restart = Some(now + self.delay);
                        }
                        Unhealthy
                    }
                    Unhealthy | Recovering => state,
                };
                let restart = self.settings.auto_recovery
                    && !progressing
                    && self.next_restart.is_some_and(|at| now >= at)
                    && matches!(next, Unhealthy | Recovering);
                if restart {
                    if state == Recovering {
                        self.report.recoveries_failed += 1;
                        self.delay = (self.delay * 2)
                            .min(Duration::from_secs(self.settings.max_recovery_delay_secs));
                    }
                    self.next_restart = Some(now + self.delay);
                    self.set(Recovering, now);
                } else {
                    self.set(next, now);
                }
                restart
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use HealthState::*;

    fn settings() -> HealthSettings {
        HealthSettings {
            failure_threshold: 2,
            success_threshold: 2,
            recovery_delay_secs: 10,
            max_recovery_delay_secs: 25,
            ..HealthSettings::default()
        }
    }

    #[test]
    fn failures_degrade_then_make_unhealthy_and_passes_heal() {
        let t0 = Instant::now();
        let mut t = Tracker::new(
            HealthSettings {
                auto_recovery: false,
                ..settings()
            },
            t0,
        );
        let at = |s: u64| t0 + Duration::from_secs(s);
        assert!(!t.observe(Err("down".into()), 0, false, at(1)));
        assert_eq!(t.report().state, Degraded);
        assert!(!t.observe(Err("down".into()), 0, false, at(2)));
        assert_eq!(t.report().state, Unhealthy);
        assert!(
            !t.observe(Err("down".into()), 0, false, at(30)),
            "no auto-recovery"
        );
        assert!(!t.observe(Ok(()), 5, false, at(31)));
        assert_eq!(t.report().state, Unhealthy, "one pass is not enough");
        assert!(!t.observe(Ok(()), 5, false, at(32)));
        let r = t.report();
        assert_eq!(r.state, Healthy);
        assert_eq!((r.checks_passed, r.checks_failed, r.transitions), (2, 3, 3));
        assert_eq!(r.unhealthy_ms, 30_000, "unhealthy from 2 s to 32 s");
        assert_eq!(r.reason, None);
    }

    #[test]
    fn recovery_restarts_with_a_doubling_delay_until_healthy() {
        let t0 = Instant::now();
        let mut t = Tracker::new(settings(), t0);
        let at = |s: u64| t0 + Duration::from_secs(s);
        assert!(!t.observe(Err("lag".into()), 0, false, at(0)));
        assert!(
            !t.observe(Err("lag".into()), 0, false, at(1)),
            "unhealthy, restart due at 11"
        );
        assert_eq!(t.report().state, Unhealthy);
        assert!(!t.observe(Err("lag".into()), 0, false, at(5)));
        assert!(
            t.observe(Err("lag".into()), 0, false, at(11)),
            "first restart"
        );
        assert_eq!(t.report().state, Recovering);
        assert!(!t.observe(Err("lag".into()), 0, false, at(15)));
        assert!(
            t.observe(Err("lag".into()), 0, false, at(21)),
            "second restart after 10 s"
        );
        assert_eq!(t.report().recoveries_failed, 1);
        assert!(!t.observe(Err("lag".into()), 0, false, at(30)));
        assert!(
            t.observe(Err("lag".into()), 0, false, at(41)),
            "third after 20 s"
        );
        assert!(!t.observe(Err("lag".into()), 0, false, at(60)));
        assert!(
            t.observe(Err("lag".into()), 0, false, at(66)),
            "then capped at 25 s"
        );
        assert!(!t.observe(Ok(()), 0, false, at(70)));
        assert!(!t.observe(Ok(()), 0, false, at(71)));
        let r = t.report();
        assert_eq!(r.state, Healthy);
        assert_eq!((r.recoveries_succeeded, r.recoveries_failed), (1, 3));
    }

    #[test]
    fn a_source_that_makes_progress_is_not_restarted() {
        let t0 = Instant::now();
        let mut t = Tracker::new(settings(), t0);
        let at = |s: u64| t0 + Duration::from_secs(s);
        t.observe(Err("lag".into()), 90_000, true, at(0));
        t.observe(Err("lag".into()), 90_000, true, at(1));
        assert!(
            !t.observe(Err("lag".into()), 90_000, true, at(20)),
            "moving: no restart"
        );
        assert_eq!(t.report().state, Unhealthy);
        assert!(
            t.observe(Err("lag".into()), 90_000, false, at(21)),
            "stuck: restart"
        );
        assert_eq!(t.report().state, Recovering);
    }

    #[test]
    fn settings_are_validated() {
        let bad = HealthSettings {
            check_interval_secs: 0,
            success_threshold: 0,
            recovery_delay_secs: 10,
            max_recovery_delay_secs: 5,
            check_timeout_secs: u64::MAX,
            ..HealthSettings::default()
        };
        let paths: Vec<String> = bad.validate().into_iter().map(|e| e.path).collect();
        assert_eq!(
            paths,
            [
                "check_interval_secs",
                "success_threshold",
                "check_timeout_secs",
                "max_recovery_delay_secs"
            ]
        );
    }
}
