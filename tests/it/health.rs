//! Source health monitoring (`config.health`) of a running postgres-cdc pipeline: a lag
//! over `max_lag_ms` while rows stream in degrades it and makes it unhealthy (`/ready`
//! 503) without a restart (it moves); locked out of PostgreSQL it makes no progress and
//! auto-recovery restarts it until it is healthy again; the `rivven_cdc_health_*` metrics
//! count what happened. Bad `health` keys are config errors.

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
fn a_lagging_source_is_unhealthy_and_a_locked_out_one_is_restarted_until_it_recovers() {
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
    // The source logs in as a role of its own, so that the test can lock it out.
    let role = rivven_testkit::unique_name("health_role");
    pg.psql(
        db,
        &format!(
            "CREATE ROLE {role} LOGIN REPLICATION PASSWORD 'pw-{role}'; \
             ALTER TABLE items OWNER TO {role}; GRANT CREATE ON DATABASE \"{db}\" TO {role}"
        ),
    )
    .unwrap();
    let config = std::fs::read_to_string(p.config()).unwrap();
    let config = config
        .replace(&format!("user: {}", pg.user), &format!("user: {role}"))
        .replace(
            &format!("password: \"{}\"", pg.password),
            &format!("password: \"pw-{role}\""),
        );
    assert!(config.contains(&role));
    std::fs::write(p.config(), config).unwrap();
    let mut child = p.spawn_run(&p.dir.path().join("run.out"));
    let health = |p: &Pipeline| -> Option<serde_json::Value> {
        let (body, _) = get(p.health_port, "/status");
        let v: serde_json::Value = serde_json::from_str(&body).ok()?;
        Some(v["pipelines"][0]["health"].clone()).filter(|h| h.is_object())
    };
    // Poll until `until`; the states seen on the way.
    let watch = |what: &str, until: &dyn Fn(&serde_json::Value) -> bool| {
        let (deadline, mut seen) = (Instant::now() + Duration::from_secs(90), BTreeSet::new());
        loop {
            if let Some(h) = health(&p) {
                seen.insert(h["state"].as_str().unwrap_or_default().to_string());
                if until(&h) {
                    return (h, seen);
                }
            }
            assert!(Instant::now() < deadline, "never {what}: saw {seen:?}");
            std::thread::sleep(Duration::from_millis(100));
        }
    };
    watch("healthy at first", &|h| {
        h["state"] == "healthy" && h["checks_passed"].as_u64() >= Some(1)
    });

    // 1. Lag while rows stream in: unhealthy, but a source that moves is not restarted.
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
    let (_, seen) = watch("unhealthy on lag", &|h| h["state"] == "unhealthy");
    let (lag_body, lag_code) = get(p.health_port, "/ready");
    // Three more checks while the rows keep coming: still no restart.
    std::thread::sleep(Duration::from_secs(3));
    let lagging = health(&p).unwrap();
    stop.store(true, Ordering::Relaxed);
    assert!(writer.join().unwrap() > 0);
    watch("healthy after the lag", &|h| h["state"] == "healthy");

    // 2. Locked out (no connection allowed, a transient server error): the source cannot
    // reconnect, makes no progress and is restarted.
    pg.psql(
        db,
        &format!(
            "ALTER ROLE {role} CONNECTION LIMIT 0; \
             SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE usename = '{role}'"
        ),
    )
    .unwrap();
    let (_, locked) = watch("recovering", &|h| h["state"] == "recovering");
    let (locked_body, locked_code) = get(p.health_port, "/ready");
    pg.psql(db, &format!("ALTER ROLE {role} CONNECTION LIMIT -1"))
        .unwrap();
    let (healed, _) = watch("healthy again", &|h| {
        h["state"] == "healthy" && h["recoveries_succeeded"].as_u64() >= Some(1)
    });
    let (ready_body, ready_code) = get(p.health_port, "/ready");
    let (metrics, _) = get(p.health_port, "/metrics");
    child.kill().unwrap();
    child.wait().unwrap();

    assert!(seen.contains("degraded"), "{seen:?}");
    assert_eq!(lag_code, "503", "{lag_body}");
    assert!(
        lag_body.contains("pg: health unhealthy") && lag_body.contains("max_lag_ms"),
        "{lag_body}"
    );
    assert_eq!(lagging["state"], "unhealthy", "{lagging}");
    assert_eq!(lagging["recoveries_failed"], 0, "{lagging}");
    assert!(locked.contains("unhealthy"), "{locked:?}");
    assert_eq!(locked_code, "503", "{locked_body}");
    assert!(
        locked_body.contains("pg: health recovering"),
        "{locked_body}"
    );
    assert_eq!(ready_code, "200", "{ready_body}");
    assert!(healed["checks_failed"].as_u64() >= Some(4), "{healed}");
    assert!(healed["unhealthy_ms"].as_u64() > Some(0), "{healed}");
    let labels = r#"{connector="postgres-cdc",pipeline="pg"}"#;
    for (series, at_least) in [
        ("rivven_cdc_health_monitoring_enabled", 1.0),
        ("rivven_cdc_health_state_healthy", 1.0),
        ("rivven_cdc_health_state_ready", 1.0),
        ("rivven_cdc_health_checks_failed_total", 4.0),
        ("rivven_cdc_health_checks_passed_total", 3.0),
        ("rivven_cdc_health_recoveries_succeeded_total", 1.0),
        ("rivven_cdc_health_state_transitions_total", 6.0),
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
