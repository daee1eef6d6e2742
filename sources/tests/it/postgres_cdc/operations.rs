//! Operating it: heartbeats, TLS, check and discover, undecodable values and the
//! dead-letter topic, lag health, binary: auto.

use super::*;

#[tokio::test]
async fn heartbeats_run_the_action_query_emit_events_and_let_an_idle_slot_advance() {
    let Some(db) = Db::new() else { return };
    db.sql("CREATE TABLE h (id int PRIMARY KEY)");
    let cfg = db.config(
        "tables: [h]\nsnapshot_mode: no_data\nstatus_interval_ms: 200\nheartbeat:\n  enabled: true\n  \
         interval_secs: 1\n  emit_events: true\n  topic: hb\n  \
         action_query: \"SELECT pg_logical_emit_message(false, 'heartbeat', now()::text)\"\n",
    );
    let slot = cfg.slot_name.clone();
    let mut src = PostgresCdcSource::new(cfg);
    src.open(None).await.unwrap();
    let start_lsn = db.sql(&format!(
        "SELECT confirmed_flush_lsn FROM pg_replication_slots WHERE slot_name = '{slot}'"
    ));
    let mut got = Vec::new();
    collect_until(&mut src, &mut got, |b| {
        b.iter()
            .filter(|x| x.topic.as_deref() == Some("hb"))
            .count()
            >= 3
    })
    .await;
    let hb = got
        .iter()
        .find(|b| b.topic.as_deref() == Some("hb"))
        .unwrap();
    let schema = hb.batch.schema();
    let names: Vec<&str> = schema.fields().iter().map(|f| f.name().as_str()).collect();
    assert_eq!(
        names,
        [
            "ts_ms",
            "slot",
            "received_lsn",
            "confirmed_lsn",
            "lag_bytes"
        ]
    );
    // The action query made WAL in this idle database and the slot moved past it.
    let advanced = db.sql(&format!(
        "SELECT confirmed_flush_lsn > '{}'::pg_lsn FROM pg_replication_slots WHERE slot_name = '{slot}'",
        start_lsn.trim()
    ));
    assert_eq!(
        advanced.trim(),
        "t",
        "slot did not advance from {start_lsn}"
    );
}

#[tokio::test]
async fn tls_modes_verify_as_libpq_does() {
    let Some(db) = Db::new() else { return };
    let Some(ca) = db.pg.ca_cert.clone() else {
        assert!(
            !rivven_testkit::in_ci(),
            "the test PostgreSQL has no TLS (openssl missing)"
        );
        eprintln!("skipped: the test PostgreSQL has no TLS (openssl missing)");
        return;
    };
    db.sql("CREATE TABLE t (id int PRIMARY KEY)");
    let ca = ca.display().to_string();
    // The server certificate names only `localhost`, signed by the test CA.
    let cases: [(&str, &str, Option<&str>, Option<&str>); 6] = [
        ("verify-full", "localhost", Some(&ca), None),
        (
            "verify-full",
            "127.0.0.1",
            Some(&ca),
            Some("not valid for name"),
        ),
        ("verify-ca", "127.0.0.1", Some(&ca), None),
        ("verify-ca", "127.0.0.1", None, Some("UnknownIssuer")),
        ("require", "127.0.0.1", None, None),
        ("prefer", "127.0.0.1", None, None),
    ];
    for (i, (mode, host, root, fails_with)) in cases.iter().enumerate() {
        let mut extra = format!("tables: [t]\nsnapshot_mode: no_data\nsslmode: {mode}\n");
        if let Some(r) = root {
            extra.push_str(&format!("sslrootcert: {r}\n"));
        }
        let mut src = PostgresCdcSource::new(db.config_at(host, &extra));
        let opened = src.open(None).await;
        match fails_with {
            Some(needle) => {
                let e = opened
                    .expect_err(&format!("{mode} to {host} must fail"))
                    .to_string();
                assert!(
                    e.contains(needle) || e.to_lowercase().contains(&needle.to_lowercase()),
                    "{mode} {host}: {e}"
                );
                continue;
            }
            None => opened.unwrap_or_else(|e| panic!("{mode} to {host}: {e}")),
        }
        db.sql(&format!("INSERT INTO t VALUES ({i})"));
        let mut got = Vec::new();
        collect_until(&mut src, &mut got, |b| rows(b) >= 1).await;
        let plain = db.sql(&format!(
            "SELECT count(*) FROM pg_stat_ssl s JOIN pg_stat_activity a USING (pid) \
             WHERE a.application_name LIKE 'rivven-connect%' AND a.datname = '{}' AND NOT s.ssl",
            db.name
        ));
        assert_eq!(plain.trim(), "0", "{mode}: every session uses TLS");
        drop(src);
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

#[tokio::test]
async fn check_names_each_unmet_prerequisite_and_discover_lists_arrow_schemas() {
    use rivven_engine::registry::SourceConnector;
    use rivven_sources::postgres_cdc::{PostgresCdc, PostgresCdcConfig};
    let Some(db) = Db::new() else { return };
    db.sql(
        "CREATE TABLE good (id int PRIMARY KEY, amount numeric(10,2), tags text[]);
         CREATE TABLE nopk (v text);
         CREATE PUBLICATION checked FOR TABLE good",
    );
    let config = |yaml: String| -> PostgresCdcConfig {
        rivven_engine::config::parse(&serde_yaml::from_str(&yaml).unwrap()).unwrap()
    };
    let yaml = |extra: &str| {
        config(format!(
            "host: 127.0.0.1\nport: {}\ndatabase: {}\nuser: {}\npassword: {}\n{extra}",
            db.pg.port, db.name, db.pg.user, db.pg.password
        ))
    };
    let ok = PostgresCdc
        .check(&yaml("publication: checked\ntables: [good]\n"))
        .await
        .unwrap();
    assert!(
        ok.contains("wal_level logical") && ok.contains("1 table(s)"),
        "{ok}"
    );
    let err = PostgresCdc
        .check(&yaml("publication: checked\ntables: [good, nopk]\n"))
        .await
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("public.nopk is not in publication checked"),
        "{err}"
    );
    assert!(err.contains("public.nopk has no primary key"), "{err}");
    assert!(!err.contains(&db.pg.password), "password in error");
    let bad_password = PostgresCdc
        .check(&config(format!(
            "host: 127.0.0.1\nport: {}\ndatabase: {}\nuser: {}\npassword: wrong-secret-value\n",
            db.pg.port, db.name, db.pg.user
        )))
        .await
        .unwrap_err()
        .to_string();
    assert!(bad_password.contains("28P01"), "{bad_password}");
    let streams = PostgresCdc
        .discover(&yaml("publication: checked\n"))
        .await
        .unwrap();
    assert_eq!(streams.len(), 1);
    assert_eq!(
        (streams[0].namespace.as_deref(), streams[0].name.as_str()),
        (Some("public"), "good")
    );
    let after = streams[0]
        .schema
        .field_with_name("after")
        .unwrap()
        .data_type()
        .to_string();
    assert!(
        after.contains("Decimal128(10, 2)") && after.contains("List("),
        "{after}"
    );
}

#[tokio::test]
async fn binary_pgoutput_names_a_column_it_cannot_decode() {
    let Some(db) = Db::new() else { return };
    db.sql("CREATE TABLE geo (id int PRIMARY KEY, p point)");
    let mut src =
        PostgresCdcSource::new(db.config("tables: [geo]\nsnapshot_mode: never\nbinary: true\n"));
    src.open(None).await.unwrap();
    db.sql("INSERT INTO geo VALUES (1, '(1,2)')");
    let deadline = Instant::now() + Duration::from_secs(30);
    let err = loop {
        assert!(Instant::now() < deadline, "no error");
        match tokio::time::timeout(Duration::from_millis(500), src.poll(1000)).await {
            Ok(Err(e)) => break e.to_string(),
            Ok(Ok(Some(b))) => panic!("decoded {:?}", b.batch),
            _ => {}
        }
    };
    assert!(
        err.contains("public.geo.p") && err.contains("binary: false"),
        "{err}"
    );
}

#[tokio::test]
async fn a_change_that_cannot_be_decoded_goes_to_the_dead_letter_topic() {
    let Some(db) = Db::new() else { return };
    db.sql("CREATE TABLE inf (id int PRIMARY KEY, at timestamp, v text)");
    let mut src =
        PostgresCdcSource::new(db.config("tables: [inf]\nsnapshot_mode: never\nbinary: false\n"))
            .with_dead_letter(Some("pg.dlq".into()));
    src.open(None).await.unwrap();
    let mut got = Vec::new();
    // The failing change first (nothing complete to flush before it), then one in the middle.
    // PostgreSQL holds timestamps up to year 294276; Arrow's microseconds end in 294247.
    db.sql(
        "BEGIN;
         INSERT INTO inf VALUES (2, '294270-01-01 00:00:00', 'two');
         INSERT INTO inf VALUES (1, '2024-01-01 00:00:00', 'one');
         INSERT INTO inf VALUES (4, '294271-06-01 00:00:00', 'four');
         INSERT INTO inf VALUES (3, '2024-01-03 00:00:00', 'three');
         COMMIT;",
    );
    collect_until(&mut src, &mut got, |b| rows(b) >= 4).await;
    let mut good = Vec::new();
    let mut dead = Vec::new();
    for b in &got {
        if b.topic.as_deref() == Some("pg.dlq") {
            let col = |n: &str| {
                b.batch
                    .column_by_name(n)
                    .unwrap()
                    .as_string::<i32>()
                    .value(0)
                    .to_string()
            };
            dead.push((col("table"), col("op"), col("__dlq_error"), col("after")));
            continue;
        }
        let after = image(&b.batch, "after");
        for i in 0..b.batch.num_rows() {
            good.push(row_text(after, i));
        }
    }
    assert_eq!(
        good,
        [
            "id=1 at=2024-01-01T00:00:00 v=one",
            "id=3 at=2024-01-03T00:00:00 v=three"
        ]
    );
    assert_eq!(dead.len(), 2, "{dead:?}");
    assert!(dead[1].3.contains("294271-06-01"), "{dead:?}");
    let (table, op, error, after) = &dead[0];
    assert_eq!((table.as_str(), op.as_str()), ("public.inf", "c"));
    assert!(error.contains("294270-01-01"), "{error}");
    let after: serde_json::Value = serde_json::from_str(after).unwrap();
    assert_eq!(after["at"], "294270-01-01 00:00:00");
    assert_eq!(after["v"], "two");
}

#[tokio::test]
async fn a_snapshot_row_that_cannot_be_decoded_goes_to_the_dead_letter_topic() {
    let Some(db) = Db::new() else { return };
    db.sql(
        "CREATE TABLE inf (id int PRIMARY KEY, at timestamp, v text);
         INSERT INTO inf VALUES (1, '2024-01-01', 'one'), (2, '2024-01-02', 'two'),
           (3, '294270-01-01', 'three'), (4, '2024-01-04', 'four'), (5, '2024-01-05', 'five'),
           (6, '294271-06-01', 'six')",
    );
    let mut src = PostgresCdcSource::new(db.config("tables: [inf]\nsnapshot_mode: initial_only\n"))
        .with_dead_letter(Some("pg.dlq".into()));
    src.open(None).await.unwrap();
    // Two rows per batch: the failing row comes right after a full batch; the last row
    // fails too, so the batch recording the table as done has no rows.
    let mut got = Vec::new();
    while let Some(b) = src.poll(2).await.unwrap() {
        got.push(b);
    }
    let mut good = Vec::new();
    let mut dead = Vec::new();
    for b in &got {
        if b.topic.as_deref() == Some("pg.dlq") {
            let col = |n: &str| {
                let c = b.batch.column_by_name(n).unwrap().as_string::<i32>();
                c.is_valid(0).then(|| c.value(0).to_string())
            };
            dead.push((
                col("table"),
                col("op"),
                col("__dlq_error"),
                col("before"),
                col("after"),
            ));
            continue;
        }
        let after = image(&b.batch, "after");
        for i in 0..b.batch.num_rows() {
            good.push(row_text(after, i));
        }
    }
    let ids: Vec<&str> = good.iter().map(|r| r.split(' ').next().unwrap()).collect();
    assert_eq!(ids, ["id=1", "id=2", "id=4", "id=5"], "{good:?}");
    assert_eq!(dead.len(), 2, "{dead:?}");
    let last = got.last().unwrap();
    assert_eq!(last.batch.num_rows(), 0);
    assert_eq!(
        last.position.0["snapshot_done"], true,
        "{:?}",
        last.position
    );
    let (table, op, error, before, after) = &dead[0];
    assert_eq!(table.as_deref(), Some("public.inf"));
    assert_eq!(op.as_deref(), Some("r"));
    assert!(
        error.as_deref().unwrap().contains("public.inf.at"),
        "{error:?}"
    );
    assert_eq!(before, &None);
    let after: serde_json::Value = serde_json::from_str(after.as_deref().unwrap()).unwrap();
    // Binary COPY values, as hex: microseconds since 2000; text is its UTF-8.
    assert_eq!(after["at"], "\\x7fff366da378c000");
    assert_eq!(after["v"], "\\x7468726565");
    assert_eq!(after["id"], "\\x00000003");
}

#[tokio::test]
async fn a_slot_lagging_past_max_lag_secs_marks_the_pipeline_unhealthy_until_it_catches_up() {
    let Some(db) = Db::new() else { return };
    db.sql("CREATE TABLE lag (id int PRIMARY KEY)");
    let cfg = db.config(
        "tables: [lag]\nsnapshot_mode: no_data\nstatus_interval_ms: 200\nheartbeat:\n  \
         enabled: true\n  interval_secs: 1\n  max_lag_secs: 1\n",
    );
    let registry = rivven_engine::status::StatusRegistry::default();
    let status = registry.add(
        "pg",
        rivven_engine::status::PipelineKind::Source,
        "postgres-cdc",
    );
    let mut src = PostgresCdcSource::new(cfg).with_status(status);
    src.open(None).await.unwrap();
    db.sql("INSERT INTO lag VALUES (1)");
    // Received but never committed: the change stays unconfirmed and ages.
    let mut held = None;
    let deadline = Instant::now() + Duration::from_secs(30);
    while registry.not_ready().is_empty() {
        assert!(Instant::now() < deadline, "never became unhealthy");
        if let Ok(r) = tokio::time::timeout(Duration::from_millis(300), src.poll(100)).await {
            if let Some(b) = r.unwrap() {
                held = Some(b.position);
            }
        }
    }
    let reasons = registry.not_ready();
    assert!(
        reasons[0].starts_with("pg: unhealthy: slot "),
        "{reasons:?}"
    );
    assert!(
        reasons[0].contains("heartbeat.max_lag_secs (1)"),
        "{reasons:?}"
    );
    assert!(registry
        .prometheus()
        .contains("rivven_connect_pipeline_healthy{connector=\"postgres-cdc\",kind=\"source\",pipeline=\"pg\"} 0"));
    // Once the change is durable and confirmed, the next heartbeat clears it.
    src.commit(&held.expect("the change was polled"))
        .await
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(30);
    while !registry.not_ready().is_empty() {
        assert!(Instant::now() < deadline, "stayed unhealthy");
        let _ = tokio::time::timeout(Duration::from_millis(300), src.poll(100)).await;
    }
}

#[tokio::test]
async fn binary_auto_switches_to_text_values_for_a_column_without_a_binary_decoder() {
    let Some(db) = Db::new() else { return };
    db.sql("CREATE TABLE geo (id int PRIMARY KEY, v text)");
    let state = std::env::temp_dir().join(unique_name("pg-state"));
    let cfg = db.config("tables: [geo]\nsnapshot_mode: never\nstatus_interval_ms: 200\n");
    let registry = rivven_engine::status::StatusRegistry::default();
    let binary_values = |registry: &rivven_engine::status::StatusRegistry| {
        let r = registry.report();
        let p = r.pipelines.last().unwrap();
        p.details.as_ref().unwrap()["slot"]["binary_values"]
            .as_bool()
            .unwrap()
    };
    let status = registry.add(
        "pg",
        rivven_engine::status::PipelineKind::Source,
        "postgres-cdc",
    );
    let mut src = PostgresCdcSource::new(cfg.clone())
        .with_status(status)
        .with_state_dir(state.clone());
    src.open(None).await.unwrap();
    assert!(
        binary_values(&registry),
        "every column decodable: binary values"
    );
    db.sql("INSERT INTO geo VALUES (1, 'one')");
    let mut got = Vec::new();
    collect_until(&mut src, &mut got, |b| rows(b) >= 1).await;
    let durable = got.last().unwrap().position.clone();

    // A column of a type without a binary decoder: the source asks to be reconnected.
    db.sql("ALTER TABLE geo ADD COLUMN p point; INSERT INTO geo VALUES (2, 'two', '(1,2)')");
    let deadline = Instant::now() + Duration::from_secs(30);
    let err = loop {
        assert!(Instant::now() < deadline, "no error");
        match tokio::time::timeout(Duration::from_millis(500), src.poll(100)).await {
            Ok(Err(e)) => break e,
            Ok(Ok(Some(b))) => panic!("unexpected batch of {} rows", b.batch.num_rows()),
            _ => {}
        }
    };
    assert!(err.is_retryable(), "{err}");
    let text = err.to_string();
    assert!(
        text.contains("public.geo.p") && text.contains("text values"),
        "{text}"
    );
    drop(src);

    // The next attempt resumes at the durable position with text values, even once the
    // column is gone again: the change that needed them is replayed first.
    db.sql("ALTER TABLE geo DROP COLUMN p");
    let status = registry.add(
        "pg2",
        rivven_engine::status::PipelineKind::Source,
        "postgres-cdc",
    );
    let mut src = PostgresCdcSource::new(cfg)
        .with_status(status)
        .with_state_dir(state.clone());
    src.open(Some(durable)).await.unwrap();
    assert!(
        !binary_values(&registry),
        "replaying the change: text values"
    );
    let mut got = Vec::new();
    collect_until(&mut src, &mut got, |b| rows(b) >= 1).await;
    let after = image(&got[0].batch, "after");
    assert_eq!(row_text(after, 0), "id=2 v=two p=(1,2)");
    let _ = std::fs::remove_dir_all(&state);
}
