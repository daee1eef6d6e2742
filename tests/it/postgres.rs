//! postgres-cdc through the binary: kill -9 five times while a writer commits (nothing
//! committed is lost, duplicates counted), and the legacy `postgres` subcommand.

use crate::support::*;
use arrow::array::{Array, AsArray};
use arrow::datatypes::Int32Type;
use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

/// `(op, after.id)` of every row of partition 0 of `topic`, in offset order.
async fn topic_events(
    log: &rivven_connect::engine::topic::EmbeddedLog,
    topic: &str,
) -> Vec<(String, i32)> {
    let mut out = Vec::new();
    if !log.has_topic(topic) {
        return out;
    }
    let end = log.end_offset(topic, 0).unwrap();
    let mut from = 0;
    while from < end {
        for b in log.read(topic, 0, from, 1 << 24).await.unwrap() {
            from = b.next_offset();
            let op = b
                .batch
                .column_by_name("op")
                .unwrap()
                .as_string::<i32>()
                .clone();
            let after = b.batch.column_by_name("after").unwrap().as_struct().clone();
            let id = after
                .column_by_name("id")
                .unwrap()
                .as_primitive::<Int32Type>()
                .clone();
            for i in 0..b.batch.num_rows() {
                out.push((
                    op.value(i).to_string(),
                    if id.is_valid(i) { id.value(i) } else { -1 },
                ));
            }
        }
    }
    out
}

/// The test PostgreSQL with a fresh database made by `setup` (SQL statements, run in order),
/// dropped with its slots when the guard is.
pub(crate) fn database(prefix: &str, setup: &[&str]) -> Option<rivven_testkit::TempDatabase> {
    let pg = rivven_testkit::require(rivven_testkit::postgres())?;
    let db = pg.temp_database(prefix).unwrap();
    for sql in setup {
        pg.psql(&db.name, sql).unwrap();
    }
    Some(db)
}

/// A fresh database with a table `items (id int PRIMARY KEY, v text)` of `rows` rows
/// (analyzed, so the snapshot has an estimate) and a pipeline whose postgres-cdc source `pg`
/// captures it into topic `changes`, reporting status every 200 ms; `extra` is more
/// connector config (indented lines). `None` when PostgreSQL is unavailable outside CI.
pub(crate) fn items_pipeline(
    prefix: &str,
    rows: u64,
    extra: &str,
) -> Option<(rivven_testkit::TempDatabase, Pipeline)> {
    let fill = format!("INSERT INTO items SELECT g, 'v' FROM generate_series(1, {rows}) g");
    let temp = database(
        prefix,
        &[
            "CREATE TABLE items (id int PRIMARY KEY, v text)",
            &fill,
            "ANALYZE items",
        ],
    )?;
    let p = Pipeline::new(&pg_source(
        &temp.pg,
        &temp.name,
        &format!("{prefix}_slot"),
        &format!("      tables: [items]\n      status_interval_ms: 200\n{extra}"),
    ));
    Some((temp, p))
}

/// A `sources:` section with one postgres-cdc source `pg` writing to topic `changes`;
/// `extra` is more connector config (indented lines).
pub(crate) fn pg_source(
    pg: &rivven_testkit::Postgres,
    db: &str,
    slot_prefix: &str,
    extra: &str,
) -> String {
    format!(
        "sources:
  pg:
    connector: postgres-cdc
    topic: changes
    config:
      host: 127.0.0.1
      port: {}
      database: {db}
      user: {}
      password: \"{}\"
      slot_name: {}
{extra}",
        pg.port,
        pg.user,
        pg.password,
        rivven_testkit::unique_name(slot_prefix),
    )
}

#[test]
fn postgres_cdc_kill_9_loses_no_committed_change() {
    let Some(temp) = database(
        "crash",
        &[
            "CREATE TABLE k (id int PRIMARY KEY, v text NOT NULL)",
            "INSERT INTO k SELECT g, 'seed' FROM generate_series(1, 2000) g",
        ],
    ) else {
        return;
    };
    let (pg, db) = (&temp.pg, temp.name.as_str());
    let p = Pipeline::new(&format!(
        "{}sinks:
  out:
    connector: stdout
    topics: [changes]
    consumer_group: out
    start_offset: earliest
    config: {{format: json}}
",
        pg_source(
            pg,
            db,
            "crash_slot",
            "      publication: crash_pub\n      tables: [k]\n"
        )
    ));
    // The writer commits inserts of increasing ids, 10 per transaction, until stopped.
    let stop = Arc::new(AtomicBool::new(false));
    let (pg2, db2, stop2) = (pg.clone(), db.to_string(), stop.clone());
    let writer = std::thread::spawn(move || {
        let mut next = 2001;
        while !stop2.load(Ordering::Relaxed) {
            pg2.psql(
                &db2,
                &format!(
                    "INSERT INTO k SELECT g, 'w' FROM generate_series({next}, {}) g",
                    next + 9
                ),
            )
            .unwrap();
            next += 10;
        }
        next - 1
    });
    let out = p.dir.path().join("out.jsonl");
    let mut kills = 0;
    let mut progress = Vec::new();
    for delay_ms in [900u64, 500, 1200, 400, 800] {
        let mut child = p.spawn_run(&out);
        std::thread::sleep(Duration::from_millis(delay_ms));
        if child.try_wait().unwrap().is_none() {
            child.kill().unwrap(); // SIGKILL
            kills += 1;
        }
        let status = child.wait().unwrap();
        if kills == 0 {
            let mut err = String::new();
            use std::io::Read;
            child
                .stderr
                .take()
                .unwrap()
                .read_to_string(&mut err)
                .unwrap();
            panic!("run ended by itself ({status:?}): {err}");
        }
        let printed = std::fs::read_to_string(&out)
            .unwrap_or_default()
            .lines()
            .count();
        progress.push(printed);
        // A killed stdout writer may leave a partial line; end it.
        use std::io::Write;
        std::fs::OpenOptions::new()
            .append(true)
            .open(&out)
            .and_then(|mut f| f.write_all(b"\n"))
            .unwrap();
    }
    // Every killed run moved data: the kills hit a live snapshot or stream.
    assert!(
        progress.windows(2).all(|w| w[0] < w[1]),
        "no progress between kills: {progress:?}"
    );
    stop.store(true, Ordering::Relaxed);
    let last_id = writer.join().unwrap();
    assert_eq!(kills, 5);
    // A final run catches up to the end, then drains on SIGTERM.
    let mut child = p.spawn_run(&out);
    let deadline = Instant::now() + Duration::from_secs(60);
    let needle = format!("\"id\":{last_id},");
    loop {
        let text = std::fs::read_to_string(&out).unwrap_or_default();
        if text.contains(&needle) {
            break;
        }
        assert!(Instant::now() < deadline, "id {last_id} never printed");
        std::thread::sleep(Duration::from_millis(100));
    }
    assert_eq!(unsafe_kill(child.id(), libc::SIGTERM), 0);
    assert!(child.wait().unwrap().success());

    let rt = tokio::runtime::Runtime::new().unwrap();
    let events = rt.block_on(topic_events(&p.log(), "changes"));
    let mut seen: BTreeMap<i32, usize> = BTreeMap::new();
    for (op, id) in &events {
        assert!(op == "r" || op == "c", "unexpected op {op}");
        *seen.entry(*id).or_default() += 1;
    }
    let missing: Vec<i32> = (1..=last_id).filter(|i| !seen.contains_key(i)).collect();
    assert!(
        missing.is_empty(),
        "lost {} committed rows, e.g. {:?}",
        missing.len(),
        &missing[..missing.len().min(10)]
    );
    let duplicates: usize = seen.values().map(|n| n - 1).sum();
    eprintln!(
        "postgres-cdc kill -9 x{kills} (lines printed after each: {progress:?}): {last_id} committed rows, all in the topic; {duplicates} duplicates in the topic (unconfirmed tail / redone snapshot)"
    );
}

#[test]
fn legacy_postgres_subcommand_streams_without_a_config_file() {
    let Some(temp) = database(
        "legacy",
        &[
            "CREATE TABLE items (id int PRIMARY KEY, name text)",
            "INSERT INTO items VALUES (1, 'snapshot row')",
        ],
    ) else {
        return;
    };
    let (pg, db) = (&temp.pg, temp.name.as_str());
    let dir = tempfile::tempdir().unwrap();
    let out_path = dir.path().join("out.jsonl");
    let url = format!(
        "postgres://{}:{}@127.0.0.1:{}/{db}",
        pg.user, pg.password, pg.port
    );
    let mut child = std::process::Command::new(bin())
        .args([
            "postgres",
            "--connection",
            &url,
            "--tables",
            "items",
            "--print",
        ])
        .arg("--slot")
        .arg(rivven_testkit::unique_name("legacy_slot"))
        .arg("--state-dir")
        .arg(dir.path().join("state"))
        .env("RUST_LOG", "info")
        .stdout(std::process::Stdio::from(
            std::fs::File::create(&out_path).unwrap(),
        ))
        .stderr(std::process::Stdio::from(
            std::fs::File::create(dir.path().join("err.log")).unwrap(),
        ))
        .spawn()
        .unwrap();
    let wait_for = |needle: &str| {
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            let text = std::fs::read_to_string(&out_path).unwrap_or_default();
            if text.contains(needle) {
                return text;
            }
            assert!(
                Instant::now() < deadline,
                "{needle} never printed; stderr: {}",
                std::fs::read_to_string(dir.path().join("err.log")).unwrap_or_default()
            );
            std::thread::sleep(Duration::from_millis(100));
        }
    };
    wait_for("snapshot row");
    pg.psql(db, "INSERT INTO items VALUES (2, 'streamed row')")
        .unwrap();
    let text = wait_for("streamed row");
    assert_eq!(unsafe_kill(child.id(), libc::SIGTERM), 0);
    assert!(child.wait().unwrap().success());
    let err = std::fs::read_to_string(dir.path().join("err.log")).unwrap();
    assert!(
        !err.contains(&pg.password) && !text.contains(&pg.password),
        "password leaked"
    );
    // --broker is refused, not ignored.
    let refused = std::process::Command::new(bin())
        .args([
            "postgres",
            "--connection",
            &url,
            "--broker",
            "localhost:9092",
        ])
        .output()
        .unwrap();
    assert_eq!(refused.status.code(), Some(2));
    assert!(stderr(&refused).contains("--broker"));
    assert!(!stderr(&refused).contains(&pg.password));
}

#[test]
fn snapshot_progress_and_slot_lag_reach_status_and_metrics() {
    let Some((_temp, p)) = items_pipeline("progress", 20000, "") else {
        return;
    };
    let out = p.dir.path().join("out.jsonl");
    let mut child = p.spawn_run(&out);
    let deadline = Instant::now() + Duration::from_secs(30);
    let status = loop {
        let o = p.cmd(&["status", "--json"]);
        if o.status.success() {
            let v: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
            let d = &v["pipelines"][0]["details"];
            if d["snapshot"]["tables"]["public.items"]["finished"] == true && d["slot"].is_object()
            {
                break v;
            }
        }
        assert!(
            Instant::now() < deadline,
            "status never showed snapshot progress and slot"
        );
        std::thread::sleep(Duration::from_millis(100));
    };
    let metrics = std::process::Command::new("curl")
        .args([
            "-sf",
            &format!("http://127.0.0.1:{}/metrics", p.health_port),
        ])
        .output()
        .map(|o| stdout(&o))
        .unwrap_or_default();
    child.kill().unwrap();
    child.wait().unwrap();
    let d = &status["pipelines"][0]["details"];
    assert_eq!(
        d["snapshot"]["tables"]["public.items"]["rows"], 20000,
        "{d}"
    );
    assert!(
        d["snapshot"]["tables"]["public.items"]["estimated"]
            .as_i64()
            .is_some_and(|n| n > 0),
        "{d}"
    );
    assert!(d["slot"]["lag_bytes"].is_u64(), "{d}");
    assert!(
        metrics.contains(
            "rivven_connect_postgres_snapshot_rows{connector=\"postgres-cdc\",kind=\"source\",pipeline=\"pg\",table=\"public.items\"} 20000"
        ),
        "{metrics}"
    );
    assert!(
        metrics.contains("rivven_connect_postgres_slot_lag_bytes{connector=\"postgres-cdc\",kind=\"source\",pipeline=\"pg\",slot="),
        "{metrics}"
    );
}
