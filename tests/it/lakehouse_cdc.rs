//! PostgreSQL changes into lakehouse tables: `postgres-cdc → delta-lake (upsert)` and
//! `→ iceberg (upsert)` end with tables equal to the source table, also across kill -9;
//! `postgres-cdc → iceberg` writes one table per source table and picks up a column added
//! mid-stream.

use crate::support::{ended, stderr, unsafe_kill, Pipeline};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

/// A `sources:` section with one postgres-cdc source `pg` (topic `cdc`, one topic per
/// table with `topic_routing`) on `db`, for `tables`.
fn pg_source(pg: &rivven_testkit::Postgres, db: &str, tables: &str) -> String {
    format!(
        "sources:
  pg:
    connector: postgres-cdc
    topic: cdc
    config:
      host: 127.0.0.1
      port: {}
      database: {db}
      user: {}
      password: \"{}\"
      slot_name: {}
      publication: {}
      tables: [{tables}]
",
        pg.port,
        pg.user,
        pg.password,
        rivven_testkit::unique_name("lake_slot"),
        rivven_testkit::unique_name("lake_pub"),
    )
}

/// The account table and its workload: `100_000` inserts, a column `extra` added, `50_000`
/// updates (even ids, setting `extra`) and `20_000` deletes (ids ≡ 1 mod 5), in statements
/// of 10,000 rows.
const ACCOUNTS: &str = "CREATE TABLE acct (id int PRIMARY KEY, name text NOT NULL, \
     balance numeric(12,2) NOT NULL, updated timestamptz NOT NULL, tags text[], blob bytea, \
     note text)";

fn workload() -> Vec<String> {
    let mut sql = Vec::new();
    for s in (1..=100_000).step_by(10_000) {
        sql.push(format!(
            "INSERT INTO acct SELECT g, 'n' || g, g * 1.25, \
             timestamptz '2026-01-01 00:00:00+00' + g * interval '1 second', \
             ARRAY['t' || (g % 7), NULL], decode(lpad(to_hex(g), 8, '0'), 'hex'), \
             CASE WHEN g % 3 = 0 THEN NULL ELSE 'note' END \
             FROM generate_series({s}, {}) g",
            s + 9_999
        ));
    }
    // A column added while the pipeline runs; the updates fill it.
    sql.push("ALTER TABLE acct ADD COLUMN extra int".to_string());
    for s in (1..=100_000).step_by(20_000) {
        sql.push(format!(
            "UPDATE acct SET balance = balance + 0.01, name = name || '!', \
             updated = updated + interval '1 day', tags = NULL, extra = id % 100 \
             WHERE id % 2 = 0 AND id BETWEEN {s} AND {}",
            s + 19_999
        ));
    }
    for s in (1..=100_000).step_by(50_000) {
        sql.push(format!(
            "DELETE FROM acct WHERE id % 5 = 1 AND id BETWEEN {s} AND {}",
            s + 49_999
        ));
    }
    sql
}

/// Compare the PostgreSQL table with the Delta table in Python, row by row, as `deltalake`
/// and as DuckDB's `delta` extension read it: `{"pg", "delta", "equal", "duckdb_equal",
/// "columns", "first_diff"}`; `has_marker`: whether id 0 is there.
const COMPARE_DELTA: &str = r#"
import json, sys, psycopg2
from deltalake import DeltaTable
conn = psycopg2.connect(sys.argv[1])
cur = conn.cursor()
cur.execute("SELECT id, name, balance, updated, tags, blob, note, extra FROM acct ORDER BY id")
cols = [d[0] for d in cur.description]
pg = [dict(zip(cols, [bytes(v) if isinstance(v, memoryview) else v for v in r])) for r in cur.fetchall()]
try:
    t = DeltaTable(sys.argv[2]).to_pyarrow_table()
except Exception as e:
    print(json.dumps({"error": str(e)})); sys.exit(0)
dl = sorted(({c: r.get(c) for c in cols} for r in t.to_pylist()), key=lambda r: r["id"])
dd = duck_rows(duck(), f"SELECT * FROM delta_scan('{sys.argv[2]}') ORDER BY id")
dd = [{c: (bytes(v) if isinstance(v, (bytearray, memoryview)) else v) for c, v in ((c, r.get(c)) for c in cols)} for r in dd]
print(json.dumps({"pg": len(pg), "delta": len(dl), "equal": pg == dl, "duckdb_equal": pg == dd,
                  "columns": t.column_names,
                  "has_marker": any(r["id"] == 0 for r in dl),
                  "first_diff": next((str((a, b)) for a, b in zip(pg, dl) if a != b), None)}, default=str))
"#;

/// The same comparison against the Iceberg table of a SQLite catalog, read by DuckDB
/// (pyiceberg 0.12 cannot apply equality deletes): `{"pg", "iceberg", "equal",
/// "has_marker", "first_diff"}`.
const COMPARE_ICEBERG: &str = r#"
import json, sqlite3, sys, psycopg2
conn = psycopg2.connect(sys.argv[1])
cur = conn.cursor()
cur.execute("SELECT id, name, balance, updated, tags, blob, note, extra FROM acct ORDER BY id")
cols = [d[0] for d in cur.description]
pg = [dict(zip(cols, [bytes(v) if isinstance(v, memoryview) else v for v in r])) for r in cur.fetchall()]
row = sqlite3.connect(sys.argv[2]).execute(
    "SELECT metadata_location FROM iceberg_tables WHERE table_name = 'acct'").fetchone() if __import__("os").path.exists(sys.argv[2]) else None
if row is None:
    print(json.dumps({"error": "no table yet"})); sys.exit(0)
rows = duck_rows(duck(), f"SELECT * FROM iceberg_scan('{row[0].removeprefix('file://')}') ORDER BY id")
rows = [{c: (bytes(v) if isinstance(v, (bytearray, memoryview)) else v) for c, v in ((c, r.get(c)) for c in cols)} for r in rows]
print(json.dumps({"pg": len(pg), "iceberg": len(rows), "equal": pg == rows,
                  "has_marker": any(r["id"] == 0 for r in rows),
                  "first_diff": next((str((a, b)) for a, b in zip(pg, rows) if a != b), None)}, default=str))
"#;

/// The Iceberg sink block (upsert through a SQLite catalog, committing every second).
fn iceberg_sink(dir: &std::path::Path) -> String {
    format!(
        "  ice:
    connector: iceberg
    topics: [cdc]
    consumer_group: ice
    start_offset: earliest
    config:
      catalog: {{type: sql, sql: {{uri: 'sqlite://{}', warehouse: {}}}}}
      table: acct
      commit_mode: upsert
      batch_size: 20000
      flush_interval_secs: 1
",
        dir.join("catalog.db").display(),
        dir.join("warehouse").display()
    )
}

/// The Delta sink block (upsert, committing every second).
fn delta_sink(table: &std::path::Path) -> String {
    format!(
        "sinks:
  lake:
    connector: delta-lake
    topics: [cdc]
    consumer_group: lake
    start_offset: earliest
    config:
      table_uri: {}
      write_mode: upsert
      batch_size: 20000
      flush_interval_secs: 1
",
        table.display()
    )
}

/// Run the pipeline until `done` holds (polled every 300 ms, at most 180 s), then stop it
/// with SIGTERM and wait for a clean exit.
fn run_until(p: &Pipeline, mut done: impl FnMut() -> bool) {
    let out = p.dir.path().join("run.out");
    let mut child = p.spawn_run(&out);
    let deadline = Instant::now() + Duration::from_secs(180);
    while !done() {
        if let Some(ended) = ended(&mut child) {
            panic!("run ended by itself : {ended}");
        }
        assert!(Instant::now() < deadline, "never caught up");
        std::thread::sleep(Duration::from_millis(300));
    }
    assert_eq!(unsafe_kill(child.id(), libc::SIGTERM), 0);
    assert!(child.wait().unwrap().success());
}

#[test]
fn postgres_cdc_upserts_into_delta_and_iceberg_equal_to_the_source_across_kill_9() {
    let py = rivven_testkit::require!(rivven_testkit::python());
    let pg = rivven_testkit::require!(rivven_testkit::postgres());
    let temp = pg.temp_database("lake_upsert").unwrap();
    let db = temp.name.clone();
    pg.psql(&db, ACCOUNTS).unwrap();
    let lake = tempfile::tempdir().unwrap();
    let table = lake.path().join("acct");
    let ice = lake.path().join("iceberg");
    let p = Pipeline::new(&format!(
        "{}{}{}",
        pg_source(&pg, &db, "acct"),
        delta_sink(&table),
        iceberg_sink(&ice)
    ));
    let out = p.cmd(&["check"]);
    assert!(
        out.status.success(),
        "check: {} {}",
        crate::support::stdout(&out),
        stderr(&out)
    );

    // The workload runs in its own thread while the pipeline is killed five times.
    let stop = Arc::new(AtomicBool::new(false));
    let (pg2, db2, stop2) = (pg.clone(), db.clone(), stop.clone());
    let writer = std::thread::spawn(move || {
        for sql in workload() {
            pg2.psql(&db2, &sql).unwrap();
            std::thread::sleep(Duration::from_millis(150));
            if stop2.load(Ordering::Relaxed) {
                break;
            }
        }
        pg2.psql(
            &db2,
            "INSERT INTO acct VALUES (0, 'marker', 0, now(), NULL, NULL, NULL, 7)",
        )
        .unwrap();
    });
    let (kills, _) = crate::support::kill_9_runs(&p, || 0);
    writer.join().unwrap();
    assert!(kills >= 4, "the runs ended before they could be killed");

    let dsn = pg.conn_str(&db);
    let delta_script = format!("{}{COMPARE_DELTA}", rivven_testkit::DUCKDB_LAKEHOUSE);
    let compare = || -> serde_json::Value {
        let out = py
            .run(&delta_script, &[&dsn, &table.to_string_lossy()])
            .unwrap();
        serde_json::from_str(out.trim()).unwrap()
    };
    let iceberg_script = format!("{}{COMPARE_ICEBERG}", rivven_testkit::DUCKDB_LAKEHOUSE);
    let catalog = ice.join("catalog.db");
    let compare_iceberg = || -> serde_json::Value {
        let out = py
            .run(&iceberg_script, &[&dsn, &catalog.to_string_lossy()])
            .unwrap();
        serde_json::from_str(out.trim()).unwrap()
    };
    run_until(&p, || {
        compare()["has_marker"] == true && compare_iceberg()["has_marker"] == true
    });
    let got = compare();
    assert_eq!(got["pg"], 80_001, "{got}");
    assert_eq!(got["delta"], 80_001, "{got}");
    assert_eq!(got["equal"], true, "{got}");
    assert_eq!(got["duckdb_equal"], true, "{got}");
    assert!(
        !got["columns"].to_string().contains("__rivven"),
        "the delete flag is not a table column: {got}"
    );
    let ice = compare_iceberg();
    assert_eq!(ice["iceberg"], 80_001, "{ice}");
    assert_eq!(ice["equal"], true, "{ice}");
    eprintln!("postgres-cdc → delta-lake and iceberg upsert: 170,001 changes, kill -9 x{kills}, both tables equal to PostgreSQL ({} rows)", got["delta"]);
}

#[test]
fn postgres_cdc_into_iceberg_one_table_per_source_table_with_a_column_added_mid_stream() {
    let py = rivven_testkit::require!(rivven_testkit::python());
    let pg = rivven_testkit::require!(rivven_testkit::postgres());
    let temp = pg.temp_database("lake_ice").unwrap();
    let db = temp.name.clone();
    pg.psql(&db, "CREATE TABLE a (id int PRIMARY KEY, v text)")
        .unwrap();
    pg.psql(
        &db,
        "CREATE TABLE b (id bigint PRIMARY KEY, amount numeric(10,3), at timestamptz)",
    )
    .unwrap();
    pg.psql(
        &db,
        "INSERT INTO a SELECT g, 'a' || g FROM generate_series(1, 500) g",
    )
    .unwrap();
    pg.psql(
        &db,
        "INSERT INTO b SELECT g, g / 8.0, timestamptz '2026-03-01 12:00:00+00' FROM generate_series(1, 300) g",
    )
    .unwrap();
    let lake = tempfile::tempdir().unwrap();
    let catalog = lake.path().join("catalog.db");
    let warehouse = lake.path().join("warehouse");
    let p = Pipeline::new(&format!(
        "{}sinks:
  lake:
    connector: iceberg
    topics: [cdc]
    consumer_group: lake
    start_offset: earliest
    dead_letter_topic: lake_dlq
    transforms:
      - type: extract_new_record_state
        config: {{add_op: true, add_table: true}}
    config:
      catalog: {{type: sql, sql: {{uri: 'sqlite://{}', warehouse: {}}}}}
      namespace: cdc
      table: '{{table}}'
      batch_size: 1000
      flush_interval_secs: 1
",
        pg_source(&pg, &db, "a, b"),
        catalog.display(),
        warehouse.display()
    ));
    const READ: &str = r#"
import json, sys
from pyiceberg.catalog.sql import SqlCatalog
cat = SqlCatalog("rivven", uri=sys.argv[1], warehouse=sys.argv[2])
out = {}
for name in ("a", "b"):
    try:
        t = cat.load_table("cdc." + name)
    except Exception:
        continue
    rows = t.scan().to_arrow().to_pylist()
    out[name] = {"rows": len(rows), "columns": [f.name for f in t.schema().fields],
                 "sample": sorted(rows, key=lambda r: (r["id"], str(r)))[-1] if rows else None,
                 "extra": sum(1 for r in rows if r.get("extra") is not None)}
print(json.dumps(out, default=str))
"#;
    let uri = format!("sqlite:///{}", catalog.display());
    let wh = format!("file://{}", warehouse.display());
    let read = || -> serde_json::Value {
        serde_json::from_str(py.run(READ, &[&uri, &wh]).unwrap().trim()).unwrap()
    };
    // The snapshot lands first; then a column is added and rows using it follow, while
    // the same process keeps running.
    let out = p.dir.path().join("run.out");
    let mut child = p.spawn_run(&out);
    let mut wait = |what: &str, cond: &dyn Fn(&serde_json::Value) -> bool| {
        let deadline = Instant::now() + Duration::from_secs(120);
        loop {
            let v = read();
            if cond(&v) {
                return v;
            }
            if let Some(ended) = ended(&mut child) {
                panic!("run ended by itself  waiting for {what}: {ended}");
            }
            assert!(Instant::now() < deadline, "{what}: {v}");
            std::thread::sleep(Duration::from_millis(300));
        }
    };
    wait("snapshot", &|v| {
        v["a"]["rows"] == 500 && v["b"]["rows"] == 300
    });
    pg.psql(&db, "ALTER TABLE a ADD COLUMN extra int").unwrap();
    pg.psql(
        &db,
        "INSERT INTO a SELECT g, 'late', g FROM generate_series(501, 520) g",
    )
    .unwrap();
    wait("the new column", &|v| v["a"]["rows"] == 520);
    // A type the table's column cannot take: those rows go to the dead-letter topic with
    // the reason; the rows after them still land.
    pg.psql(&db, "ALTER TABLE a ALTER COLUMN v TYPE int USING length(v)")
        .unwrap();
    pg.psql(
        &db,
        "INSERT INTO a SELECT g, g, 1 FROM generate_series(521, 525) g",
    )
    .unwrap();
    pg.psql(&db, "INSERT INTO b VALUES (301, 1.5, now())")
        .unwrap();
    wait("rows after the refused ones", &|v| v["b"]["rows"] == 301);
    assert_eq!(unsafe_kill(child.id(), libc::SIGTERM), 0);
    assert!(child.wait().unwrap().success());
    let rt = tokio::runtime::Runtime::new().unwrap();
    let dead: Vec<String> = rt.block_on(async {
        let log = p.log();
        let mut reasons = Vec::new();
        for part in 0..log.partitions("lake_dlq").unwrap() {
            let end = log.end_offset("lake_dlq", part).unwrap();
            let mut from = 0;
            while from < end {
                for b in log.read("lake_dlq", part, from, 1 << 24).await.unwrap() {
                    from = b.next_offset();
                    let col = b.batch.column_by_name("__dlq_error").unwrap();
                    let col = arrow::array::AsArray::as_string::<i32>(col);
                    reasons.extend(col.iter().map(|r| r.unwrap_or_default().to_string()));
                }
            }
        }
        reasons
    });
    assert_eq!(dead.len(), 5, "{dead:?}");
    assert!(
        dead[0].contains("`v`") && dead[0].contains("cdc.a"),
        "{}",
        dead[0]
    );
    let v = read();
    assert_eq!(v["a"]["rows"], 520, "{v}");
    assert_eq!(v["a"]["extra"], 20, "{v}");
    let cols = v["a"]["columns"].to_string();
    for c in ["id", "v", "__op", "__table", "extra"] {
        assert!(cols.contains(&format!("\"{c}\"")), "{c} missing: {v}");
    }
    assert_eq!(
        v["b"]["sample"]["amount"], "1.500",
        "numeric(10,3) kept its scale: {v}"
    );
}
