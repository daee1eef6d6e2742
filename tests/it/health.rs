//! Source health monitoring (`config.health`) of a running postgres-cdc pipeline: a lag
//! over `max_lag_ms` while rows stream in degrades it, makes it unhealthy (`/ready` 503)
//! and auto-recovery restarts it; when the lag is gone it is healthy again, and the
//! `rivven_cdc_health_*` metrics count what happened. Bad `health` keys are config errors.

use crate::postgres::items_pipeline;
use crate::support::{stderr, stdout, Pipeline};
use std::collections::BTreeSet;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

fn get(port: u16, path: &str) -> (String, String) {
    let o = std::process::Command::new("curl")
        .args(["-s", "-w", "\n%{http_code}"])
        .arg(format!("http://127.0.0.1:{port}{path}"))
        .output()
        .unwrap();
    let text = stdout(&o);
    let (body, code) = text.rsplit_once('\n').unwrap_or(("", ""));
    (body.to_string(), code.to_string())
}

#[test]
fn a_lagging_source_is_degraded_unhealthy_recovered_and_healthy_again() {
    // Any change takes more than 1 ms from its commit to the topic: while rows stream in,
    // every check fails on the lag.
    let Some((temp, p)) = items_pipeline(
        "health",
        0,
        "      health:
        check_interval_secs: 1
        max_lag_ms: 1
        failure_threshold: 2
        success_threshold: 2
        check_timeout_secs: 5
        auto_recovery: true
        recovery_delay_secs: 1
        max_recovery_delay_secs: 2
",
    ) else {
        return;
    };
    let (pg, db) = (&temp.pg, temp.name.as_str());
    let mut child = p.spawn_run(&p.dir.path().join("run.out"));
    let health = |p: &Pipeline| -> Option<serde_json::Value> {
        let (body, _) = get(p.health_port, "/status");
        let v: serde_json::Value = serde_json::from_str(&body).ok()?;
        Some(v["pipelines"][0]["health"].clone()).filter(|h| h.is_object())
    };
    let wait_for = |what: &str, until: &dyn Fn(&serde_json::Value) -> bool| {
        let deadline = Instant::now() + Duration::from_secs(90);
        loop {
            if let Some(h) = health(&p) {
                if until(&h) {
                    return h;
                }
            }
            assert!(Instant::now() < deadline, "never {what}");
            std::thread::sleep(Duration::from_millis(100));
        }
    };
    wait_for("healthy at first", &|h| {
        h["state"] == "healthy" && h["checks_passed"].as_u64() >= Some(1)
    });
    // Stream rows until auto-recovery has restarted the source.
    let stop = Arc::new(AtomicBool::new(false));
    let writer = {
        let (stop, pg, db) = (stop.clone(), pg.clone(), db.to_string());
        std::thread::spawn(move || {
            let mut id = 0;
            while !stop.load(Ordering::Relaxed) {
                pg.psql(&db, &format!("INSERT INTO items VALUES ({id}, 'v')"))
                    .unwrap();
                id += 1;
                std::thread::sleep(Duration::from_millis(50));
            }
            id
        })
    };
    let mut states = BTreeSet::new();
    let mut not_ready = None;
    let deadline = Instant::now() + Duration::from_secs(90);
    loop {
        if let Some(h) = health(&p) {
            states.insert(h["state"].as_str().unwrap_or_default().to_string());
            if h["state"] == "recovering" && not_ready.is_none() {
                not_ready = Some(get(p.health_port, "/ready"));
            }
            if states.contains("recovering") && not_ready.is_some() {
                break;
            }
        }
        assert!(
            Instant::now() < deadline,
            "never recovering: saw {states:?}"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    stop.store(true, Ordering::Relaxed);
    let inserted = writer.join().unwrap();
    let healed = wait_for("healthy again", &|h| h["state"] == "healthy");
    let (ready_body, ready_code) = get(p.health_port, "/ready");
    let (metrics, _) = get(p.health_port, "/metrics");
    let (status, _) = get(p.health_port, "/status");
    child.kill().unwrap();
    child.wait().unwrap();

    for s in ["degraded", "unhealthy", "recovering"] {
        assert!(states.contains(s), "{s} not seen: {states:?}");
    }
    let (body, code) = not_ready.unwrap();
    assert_eq!(code, "503", "{body}");
    assert!(
        body.contains("pg: health recovering") && body.contains("max_lag_ms"),
        "{body}"
    );
    assert_eq!(ready_code, "200", "{ready_body}");
    assert!(
        healed["recoveries_succeeded"].as_u64() >= Some(1),
        "{healed}"
    );
    assert!(healed["checks_failed"].as_u64() >= Some(2), "{healed}");
    assert!(healed["transitions"].as_u64() >= Some(4), "{healed}");
    assert!(healed["unhealthy_ms"].as_u64() > Some(0), "{healed}");
    // The restart was a real one.
    let status: serde_json::Value = serde_json::from_str(&status).unwrap();
    assert!(
        status["pipelines"][0]["restarts"].as_u64() >= Some(1),
        "{status}"
    );
    let labels = r#"{connector="postgres-cdc",pipeline="pg"}"#;
    for (series, at_least) in [
        ("rivven_cdc_health_monitoring_enabled", 1.0),
        ("rivven_cdc_health_state_healthy", 1.0),
        ("rivven_cdc_health_state_ready", 1.0),
        ("rivven_cdc_health_checks_failed_total", 2.0),
        ("rivven_cdc_health_checks_passed_total", 3.0),
        ("rivven_cdc_health_recoveries_succeeded_total", 1.0),
        ("rivven_cdc_health_state_transitions_total", 4.0),
    ] {
        let line = format!("{series}{labels} ");
        let value: f64 = metrics
            .lines()
            .find_map(|l| l.strip_prefix(&line))
            .unwrap_or_else(|| panic!("{series} missing:\n{metrics}"))
            .parse()
            .unwrap();
        assert!(value >= at_least, "{series} = {value}");
    }
    assert!(inserted > 0);
}

#[test]
fn bad_health_keys_are_config_errors_with_their_paths() {
    // `check` of a datagen source with `config.health: HEALTH`.
    let check = |health: &str| {
        let p = Pipeline::new(&format!(
            "sources:\n  gen:\n    connector: datagen\n    topic: t\n    config:\n      \
             max_events: 10\n      health: {health}\n"
        ));
        p.cmd(&["check"])
    };
    let out = check("{check_interval_secs: 0, max_recovery_delay_secs: 0, recovery_delay_secs: 5}");
    let text = stderr(&out);
    assert_eq!(out.status.code(), Some(2), "{text}");
    for needle in [
        "sources.gen.config.health.check_interval_secs",
        "must be at least 1, got 0",
        "sources.gen.config.health.max_recovery_delay_secs",
        ":8:",
    ] {
        assert!(text.contains(needle), "{needle} missing: {text}");
    }
    let text = stderr(&check("{check_every: 5}"));
    assert!(
        text.contains("sources.gen.config.health") && text.contains("check_every"),
        "{text}"
    );
}
