//! `/metrics`: the Prometheus text exposition, written by the `prometheus` crate. The
//! pipeline counters and gauges (the `/status` numbers, kept as lock-free atomics in
//! [`super::PipelineStatus`]) are copied into the crate's metric types at each scrape; the
//! histograms are the crate's own (see [`super::metrics`]).

use super::metrics::PIPELINE;
use super::{PipelineState, StatusRegistry};
use prometheus::{
    Encoder, Gauge, GaugeVec, IntCounterVec, IntGaugeVec, Opts, Registry, TextEncoder,
};
use std::collections::BTreeMap;

impl StatusRegistry {
    /// The Prometheus text exposition of the counters, gauges and histograms.
    pub fn prometheus(&self) -> String {
        let report = self.report();
        let scrape = Registry::new();
        let register = |m: Box<dyn prometheus::core::Collector>| {
            if let Err(e) = scrape.register(m) {
                tracing::warn!(error = %e, "metric not exported");
            }
        };
        let counter = |name: &str, help: &str| {
            let v = IntCounterVec::new(Opts::new(name, help), &PIPELINE).ok();
            if let Some(v) = &v {
                register(Box::new(v.clone()));
            }
            v
        };
        let gauge = |name: &str, help: &str| {
            let v = IntGaugeVec::new(Opts::new(name, help), &PIPELINE).ok();
            if let Some(v) = &v {
                register(Box::new(v.clone()));
            }
            v
        };
        let events = counter("rivven_connect_events_total", "Rows moved by the pipeline.");
        let bytes = counter(
            "rivven_connect_bytes_total",
            "Arrow bytes moved by the pipeline.",
        );
        let restarts = counter("rivven_connect_restarts_total", "Restarts after failures.");
        let lag = gauge(
            "rivven_connect_lag_records",
            "Records in the sink's topics not yet durable in the sink.",
        );
        let running = gauge(
            "rivven_connect_pipeline_running",
            "1 while the pipeline is running.",
        );
        let healthy = gauge(
            "rivven_connect_pipeline_healthy",
            "0 while the connector reports the pipeline unhealthy (see /status).",
        );
        for p in &report.pipelines {
            let l = [p.name.as_str(), p.kind.as_str(), p.connector.as_str()];
            let set_counter = |v: &Option<IntCounterVec>, n: u64| {
                if let Some(v) = v {
                    v.with_label_values(&l).inc_by(n);
                }
            };
            let set_gauge = |v: &Option<IntGaugeVec>, n: i64| {
                if let Some(v) = v {
                    v.with_label_values(&l).set(n);
                }
            };
            set_counter(&events, p.events);
            set_counter(&bytes, p.bytes);
            set_counter(&restarts, p.restarts);
            set_gauge(&lag, p.lag as i64);
            set_gauge(&running, i64::from(p.state == PipelineState::Running));
            set_gauge(&healthy, i64::from(p.unhealthy.is_none()));
        }
        // Connector gauges, one family per name, labelled by the pipeline and the connector's
        // own labels (the first series of a name sets the label names).
        let mut families: BTreeMap<&str, GaugeVec> = BTreeMap::new();
        for p in &report.pipelines {
            for g in &p.gauges {
                let vec = match families.get(g.name.as_str()) {
                    Some(v) => v.clone(),
                    None => {
                        let mut names: Vec<&str> = PIPELINE.to_vec();
                        names.extend(g.labels.keys().map(String::as_str));
                        let name = format!("rivven_connect_{}", g.name);
                        let Ok(v) = GaugeVec::new(Opts::new(name, "Connector gauge."), &names)
                        else {
                            tracing::warn!(gauge = %g.name, "connector gauge not exported");
                            continue;
                        };
                        register(Box::new(v.clone()));
                        families.insert(g.name.as_str(), v.clone());
                        v
                    }
                };
                let mut values: Vec<&str> = vec![&p.name, p.kind.as_str(), &p.connector];
                values.extend(g.labels.values().map(String::as_str));
                match vec.get_metric_with_label_values(&values) {
                    Ok(m) => m.set(g.value),
                    Err(e) => {
                        tracing::warn!(gauge = %g.name, error = %e, "connector gauge series not exported")
                    }
                }
            }
        }
        health(&report, &register);
        if let Ok(up) = Gauge::new("rivven_connect_uptime_seconds", "Seconds since start.") {
            up.set(report.uptime_secs as f64);
            register(Box::new(up));
        }
        let mut all = scrape.gather();
        all.extend(self.histograms.registry.gather());
        let mut out = Vec::new();
        match TextEncoder::new().encode(&all, &mut out) {
            Ok(()) => String::from_utf8_lossy(&out).into_owned(),
            Err(e) => format!("# error encoding metrics: {e}\n"),
        }
    }
}

/// The health monitor's series (`rivven_cdc_health_*`, the spec's names), labelled
/// `pipeline` and `connector`, for sources with `config.health`.
fn health(report: &super::StatusReport, register: &dyn Fn(Box<dyn prometheus::core::Collector>)) {
    let monitored: Vec<_> = report
        .pipelines
        .iter()
        .filter_map(|p| p.health.as_ref().map(|h| (p, h)))
        .collect();
    if monitored.is_empty() {
        return;
    }
    let labels = ["pipeline", "connector"];
    type Value = fn(&crate::health::HealthReport) -> f64;
    let series: [(&str, &str, bool, Value); 9] = [
        (
            "monitoring_enabled",
            "1: the source's health is monitored.",
            false,
            |_| 1.0,
        ),
        (
            "state_healthy",
            "1 while the source is healthy.",
            false,
            |h| f64::from(u8::from(h.state == crate::health::HealthState::Healthy)),
        ),
        (
            "state_ready",
            "1 while /ready counts the source ready.",
            false,
            |h| f64::from(u8::from(h.state.ready())),
        ),
        ("checks_passed_total", "Health checks passed.", true, |h| {
            h.checks_passed as f64
        }),
        ("checks_failed_total", "Health checks failed.", true, |h| {
            h.checks_failed as f64
        }),
        (
            "state_transitions_total",
            "Health state changes.",
            true,
            |h| h.transitions as f64,
        ),
        (
            "recoveries_succeeded_total",
            "Auto-recoveries that ended healthy.",
            true,
            |h| h.recoveries_succeeded as f64,
        ),
        (
            "recoveries_failed_total",
            "Restarts after which the source kept failing.",
            true,
            |h| h.recoveries_failed as f64,
        ),
        (
            "unhealthy_time_ms_total",
            "Milliseconds spent unhealthy or recovering.",
            true,
            |h| h.unhealthy_ms as f64,
        ),
    ];
    for (name, help, counter, value) in series {
        let name = format!("rivven_cdc_health_{name}");
        let opts = Opts::new(name, help);
        if counter {
            let Ok(v) = prometheus::CounterVec::new(opts, &labels) else {
                continue;
            };
            for (p, h) in &monitored {
                v.with_label_values(&[&p.name, &p.connector])
                    .inc_by(value(h));
            }
            register(Box::new(v));
        } else {
            let Ok(v) = GaugeVec::new(opts, &labels) else {
                continue;
            };
            for (p, h) in &monitored {
                v.with_label_values(&[&p.name, &p.connector]).set(value(h));
            }
            register(Box::new(v));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::super::{PipelineKind, StatusRegistry};
    use arrow::array::{ArrayRef, Int64Array, RecordBatch, StructArray};
    use arrow::datatypes::{DataType, Field};
    use std::sync::Arc;

    #[test]
    fn counters_gauges_and_histograms_are_exported() {
        let reg = StatusRegistry::default();
        let src = reg.add("pg", PipelineKind::Source, "postgres-cdc");
        let sink = reg.add("lake", PipelineKind::Sink, "iceberg");
        src.add(3, 300);
        src.set_gauge("postgres_slot_lag_bytes", &[("slot", "s\"1")], 42.0);
        sink.add(8192, 1000);
        sink.observe_flush(std::time::Duration::from_millis(3));
        // Three change events committed 1.5 s, 20 ms and (null) before durable.
        let ts = Int64Array::from(vec![Some(8_500), Some(9_980), None]);
        let source = StructArray::from(vec![(
            Arc::new(Field::new("ts_ms", DataType::Int64, true)),
            Arc::new(ts) as ArrayRef,
        )]);
        let batch = RecordBatch::try_from_iter([("source", Arc::new(source) as ArrayRef)]).unwrap();
        src.observe_durable(&super::super::commit_times(&batch).unwrap(), 10_000);
        let text = reg.prometheus();
        for line in [
            "# TYPE rivven_connect_events_total counter",
            r#"rivven_connect_events_total{connector="postgres-cdc",kind="source",pipeline="pg"} 3"#,
            r#"rivven_connect_postgres_slot_lag_bytes{connector="postgres-cdc",kind="source",pipeline="pg",slot="s\"1"} 42"#,
            "# TYPE rivven_connect_batch_rows histogram",
            r#"rivven_connect_batch_rows_bucket{connector="iceberg",kind="sink",pipeline="lake",le="8192"} 1"#,
            r#"rivven_connect_batch_rows_bucket{connector="iceberg",kind="sink",pipeline="lake",le="4096"} 0"#,
            r#"rivven_connect_sink_flush_duration_seconds_count{connector="iceberg",pipeline="lake"} 1"#,
            r#"rivven_connect_commit_to_durable_seconds_count{connector="postgres-cdc",pipeline="pg"} 2"#,
            r#"rivven_connect_commit_to_durable_seconds_bucket{connector="postgres-cdc",pipeline="pg",le="0.025"} 1"#,
            r#"rivven_connect_commit_to_durable_seconds_bucket{connector="postgres-cdc",pipeline="pg",le="2.5"} 2"#,
            r#"rivven_connect_commit_to_durable_seconds_sum{connector="postgres-cdc",pipeline="pg"} 1.52"#,
            "rivven_connect_uptime_seconds 0",
        ] {
            assert!(
                text.lines().any(|l| l == line),
                "{line} missing from\n{text}"
            );
        }
        // A sink has no commit latency, a source no flush duration.
        assert!(!text.contains(
            r#"rivven_connect_sink_flush_duration_seconds_count{connector="postgres-cdc""#
        ));
        assert!(
            !text.contains(r#"rivven_connect_commit_to_durable_seconds_count{connector="iceberg""#)
        );
    }
}
