//! postgres-cdc against a real PostgreSQL 15: type mapping, change events, snapshot
//! consistency under concurrent writes, positions.

use arrow::array::{Array, AsArray, RecordBatch, StructArray};
use arrow::datatypes::{
    Date32Type, Decimal128Type, Float32Type, Float64Type, Int16Type, Int32Type, Int64Type,
    IntervalMonthDayNanoType, Time64MicrosecondType, TimestampMicrosecondType,
};
use arrow::util::display::{ArrayFormatter, FormatOptions};
use rivven_engine::batch::{Position, SourceBatch};
use rivven_engine::connector::Source;
use rivven_sources::postgres_cdc::{PostgresCdcConfig, PostgresCdcSource};
use rivven_testkit::{unique_name, Postgres};
use std::collections::BTreeMap;
use std::time::{Duration, Instant};

struct Db {
    pg: Postgres,
    name: String,
}

impl Db {
    fn new() -> Option<Db> {
        let pg = rivven_testkit::require(rivven_testkit::postgres())?;
        let name = pg.create_database(&unique_name("cdc")).unwrap();
        Some(Db { pg, name })
    }

    fn sql(&self, sql: &str) -> String {
        self.pg
            .psql(&self.name, sql)
            .unwrap_or_else(|e| panic!("{sql}: {e}"))
    }

    /// Run SQL on a thread (DDL may wait for the snapshot's locks, which only the source,
    /// polled meanwhile, releases).
    fn sql_bg(&self, sql: &str) -> std::thread::JoinHandle<String> {
        let (pg, name, sql) = (self.pg.clone(), self.name.clone(), sql.to_string());
        std::thread::spawn(move || {
            pg.psql(&name, &sql)
                .unwrap_or_else(|e| panic!("{sql}: {e}"))
        })
    }

    fn config(&self, extra: &str) -> PostgresCdcConfig {
        self.config_at("127.0.0.1", extra)
    }

    fn config_at(&self, host: &str, extra: &str) -> PostgresCdcConfig {
        let yaml = format!(
            "host: {host}\nport: {}\ndatabase: {}\nuser: {}\npassword: {}\n\
             slot_name: {}\npublication: {}\n{extra}",
            self.pg.port,
            self.name,
            self.pg.user,
            self.pg.password,
            unique_name("slot"),
            unique_name("pub"),
        );
        serde_yaml::from_str(&yaml).unwrap()
    }
}

impl Drop for Db {
    fn drop(&mut self) {
        // Slots pin WAL on the shared server: drop the ones this database made.
        let _ = self.pg.psql(
            "postgres",
            &format!(
                "SELECT pg_drop_replication_slot(slot_name) FROM pg_replication_slots \
                 WHERE database = '{}' AND NOT active",
                self.name
            ),
        );
    }
}

/// Poll until `pred` holds for everything collected, or panic after 30 s.
async fn collect_until(
    src: &mut PostgresCdcSource,
    out: &mut Vec<SourceBatch>,
    pred: impl Fn(&[SourceBatch]) -> bool,
) {
    let deadline = Instant::now() + Duration::from_secs(30);
    while !pred(out) {
        assert!(
            Instant::now() < deadline,
            "timed out; got {} batches",
            out.len()
        );
        if let Ok(r) = tokio::time::timeout(Duration::from_millis(500), src.poll(1000)).await {
            if let Some(b) = r.unwrap() {
                src.commit(&b.position).await.unwrap();
                out.push(b);
            }
        }
    }
}

fn rows(batches: &[SourceBatch]) -> usize {
    batches.iter().map(|b| b.batch.num_rows()).sum()
}

fn ops(batches: &[SourceBatch]) -> Vec<String> {
    batches
        .iter()
        .flat_map(|b| {
            let op = b
                .batch
                .column_by_name("op")
                .unwrap()
                .as_string::<i32>()
                .clone();
            (0..op.len()).map(move |i| op.value(i).to_string())
        })
        .collect()
}

fn image<'a>(b: &'a RecordBatch, which: &str) -> &'a StructArray {
    b.column_by_name(which).unwrap().as_struct()
}

/// `column=value` text of row `i` of a struct image (null image → "null").
fn row_text(s: &StructArray, i: usize) -> String {
    if s.is_null(i) {
        return "null".into();
    }
    let opts = FormatOptions::default().with_null("NULL");
    s.fields()
        .iter()
        .zip(s.columns())
        .map(|(f, c)| {
            let fmt = ArrayFormatter::try_new(c.as_ref(), &opts).unwrap();
            format!("{}={}", f.name(), fmt.value(i))
        })
        .collect::<Vec<_>>()
        .join(" ")
}

const TYPES_DDL: &str = "
CREATE TYPE mood AS ENUM ('sad', 'ok', 'happy');
CREATE DOMAIN posint AS int4 CHECK (VALUE > 0);
CREATE TABLE types_t (
  id int PRIMARY KEY, b bool, i2 int2, i4 int4, i8 int8, f4 float4, f8 float8,
  n numeric(12,3), nbig numeric(50,10), nu numeric, t text, vc varchar(10), c char(3),
  by bytea, d date, tm time, ttz timetz, ts timestamp, tstz timestamptz, iv interval,
  u uuid, j json, jb jsonb, ip inet, ci cidr, ai int4[], at text[], e mood, dm posint)";

const TYPES_VALUES: &str = "true, -32768, 2147483647, -9223372036854775808, 'NaN', 1.5e300,
  '-12345.678', '1234567890123456789012345678901234567890.0123456789', '3.14159265358979323846264338327950288419716939937510',
  E'multi\\nline\\ttab \\\\ back \"q\" ''s', 'short', 'ab', '\\x00ff0a5c',
  '2024-02-29', '23:59:59.999999', '12:00:00+05:30', '1999-12-31 23:59:59.5',
  '2000-01-01 05:30:00+05:30', '1 year 2 months 3 days 04:05:06.5',
  'a0eebc99-9c0b-4ef8-bb6d-6bb9bd380a11', '{\"k\": [1, 2]}', '{\"k\": [1, 2]}',
  '192.168.0.1/24', '10.0.0.0/8', '{1,NULL,-3}', '{\"a b\",\"c,d\",NULL,\"\"}', 'happy', 7";

#[tokio::test]
async fn every_mapped_type_round_trips_in_snapshot_and_stream() {
    types_round_trip("binary: false\n").await;
}

/// The same values through pgoutput's binary form decode exactly as through its text form
/// and the snapshot's binary COPY.
#[tokio::test]
async fn every_mapped_type_round_trips_through_binary_pgoutput() {
    types_round_trip("binary: true\n").await;
}

async fn types_round_trip(extra: &str) {
    let Some(db) = Db::new() else { return };
    db.sql(TYPES_DDL);
    db.sql(&format!("INSERT INTO types_t VALUES (1, {TYPES_VALUES})"));
    db.sql("INSERT INTO types_t (id) VALUES (2)");
    let mut src = PostgresCdcSource::new(db.config(&format!("tables: [types_t]\n{extra}")));
    src.open(None).await.unwrap();
    let mut got = Vec::new();
    collect_until(&mut src, &mut got, |b| rows(b) == 2).await;
    db.sql(&format!("INSERT INTO types_t VALUES (3, {TYPES_VALUES})"));
    db.sql("INSERT INTO types_t (id) VALUES (4)");
    collect_until(&mut src, &mut got, |b| rows(b) == 4).await;
    assert_eq!(ops(&got), ["r", "r", "c", "c"]);
    // Snapshot (COPY text) and stream (pgoutput text) decode to identical Arrow values.
    let all: Vec<RecordBatch> = got.iter().map(|b| b.batch.clone()).collect();
    let batch = arrow::compute::concat_batches(&all[0].schema(), &all).unwrap();
    let after = image(&batch, "after");
    for (f, c) in after.fields().iter().zip(after.columns()) {
        if f.name() == "id" {
            continue;
        }
        assert!(
            c.slice(0, 1).to_data() == c.slice(2, 1).to_data(),
            "column {} snapshot vs stream: {:?} vs {:?}",
            f.name(),
            c.slice(0, 1),
            c.slice(2, 1)
        );
        assert!(
            c.slice(1, 1).to_data() == c.slice(3, 1).to_data(),
            "column {} (nulls)",
            f.name()
        );
        assert!(c.is_null(1), "column {} null", f.name());
    }
    let col = |n: &str| after.column_by_name(n).unwrap();
    assert!(col("b").as_boolean().value(0));
    assert_eq!(col("i2").as_primitive::<Int16Type>().value(0), -32768);
    assert_eq!(col("i4").as_primitive::<Int32Type>().value(0), 2147483647);
    assert_eq!(col("i8").as_primitive::<Int64Type>().value(0), i64::MIN);
    assert!(col("f4").as_primitive::<Float32Type>().value(0).is_nan());
    assert_eq!(col("f8").as_primitive::<Float64Type>().value(0), 1.5e300);
    assert_eq!(col("n").data_type().to_string(), "Decimal128(12, 3)");
    assert_eq!(
        col("n").as_primitive::<Decimal128Type>().value(0),
        -12_345_678
    );
    assert_eq!(col("nbig").data_type().to_string(), "Decimal256(50, 10)");
    let show = |n: &str| {
        ArrayFormatter::try_new(col(n).as_ref(), &FormatOptions::default())
            .unwrap()
            .value(0)
            .to_string()
    };
    assert_eq!(
        show("nbig"),
        "1234567890123456789012345678901234567890.0123456789"
    );
    assert_eq!(
        show("nu"),
        "3.14159265358979323846264338327950288419716939937510"
    );
    assert_eq!(show("t"), "multi\nline\ttab \\ back \"q\" 's");
    assert_eq!(show("vc"), "short");
    assert_eq!(show("c"), "ab ");
    assert_eq!(col("by").as_binary::<i32>().value(0), &[0u8, 255, 10, 92]);
    assert_eq!(col("d").as_primitive::<Date32Type>().value(0), 19_782);
    assert_eq!(
        col("tm").as_primitive::<Time64MicrosecondType>().value(0),
        86_399_999_999
    );
    assert_eq!(show("ttz"), "12:00:00+05:30");
    assert_eq!(
        col("ts")
            .as_primitive::<TimestampMicrosecondType>()
            .value(0),
        946_684_799_500_000
    );
    assert_eq!(
        col("tstz")
            .as_primitive::<TimestampMicrosecondType>()
            .value(0),
        946_684_800_000_000
    );
    let iv = col("iv")
        .as_primitive::<IntervalMonthDayNanoType>()
        .value(0);
    assert_eq!((iv.months, iv.days), (14, 3));
    assert_eq!(
        iv.nanoseconds,
        (4 * 3600 + 5 * 60 + 6) * 1_000_000_000 + 500_000_000
    );
    assert_eq!(show("u"), "a0eebc99-9c0b-4ef8-bb6d-6bb9bd380a11");
    assert_eq!(show("j"), "{\"k\": [1, 2]}");
    assert_eq!(show("jb"), "{\"k\": [1, 2]}");
    assert_eq!(show("ip"), "192.168.0.1/24");
    assert_eq!(show("ci"), "10.0.0.0/8");
    assert_eq!(show("ai"), "[1, , -3]");
    let at = col("at").as_list::<i32>().value(0);
    let at = at.as_string::<i32>();
    assert_eq!(
        (0..at.len())
            .map(|i| at.is_valid(i).then(|| at.value(i)))
            .collect::<Vec<_>>(),
        vec![Some("a b"), Some("c,d"), None, Some("")]
    );
    assert_eq!(show("e"), "happy");
    assert_eq!(col("dm").as_primitive::<Int32Type>().value(0), 7);
    assert_eq!(
        col("j").data_type(),
        &arrow::datatypes::DataType::Utf8,
        "json is text with the arrow.json extension name"
    );
}

#[tokio::test]
async fn changes_arrive_in_commit_order_with_images_and_new_shapes() {
    let Some(db) = Db::new() else { return };
    db.sql(
        "CREATE TABLE a (id int PRIMARY KEY, v text, big text);
         ALTER TABLE a ALTER COLUMN big SET STORAGE EXTERNAL;
         CREATE TABLE f (id int PRIMARY KEY, v text);
         ALTER TABLE f REPLICA IDENTITY FULL;
         INSERT INTO a VALUES (1, 'one', repeat('x', 10000))",
    );
    let mut src = PostgresCdcSource::new(db.config("tables: [a, public.f]\n"));
    src.open(None).await.unwrap();
    let mut got = Vec::new();
    collect_until(&mut src, &mut got, |b| rows(b) == 1).await;
    let script = db.sql_bg(
        "BEGIN; INSERT INTO a VALUES (2, 'two', 'b2'); INSERT INTO f VALUES (10, 'ten');
         INSERT INTO a VALUES (3, 'three', 'b3'); COMMIT;
         UPDATE a SET v = 'uno' WHERE id = 1;
         UPDATE f SET v = 'TEN' WHERE id = 10;
         UPDATE a SET id = 20 WHERE id = 2;
         DELETE FROM a WHERE id = 3;
         DELETE FROM f WHERE id = 10;
         ALTER TABLE a ADD COLUMN extra int4 DEFAULT 5;
         INSERT INTO a (id, v) VALUES (4, 'four');
         TRUNCATE f;",
    );
    collect_until(&mut src, &mut got, |b| rows(b) == 11).await;
    script.join().unwrap();
    assert_eq!(
        ops(&got),
        ["r", "c", "c", "c", "u", "u", "u", "d", "d", "c", "t"],
        "{:?}",
        ops(&got)
    );
    let events: Vec<(String, String, String, String)> = got
        .iter()
        .flat_map(|b| {
            let table = b.stream.as_deref().unwrap().to_string();
            (0..b.batch.num_rows()).map(move |i| {
                (
                    table.clone(),
                    b.batch
                        .column_by_name("op")
                        .unwrap()
                        .as_string::<i32>()
                        .value(i)
                        .to_string(),
                    row_text(image(&b.batch, "before"), i),
                    row_text(image(&b.batch, "after"), i),
                )
            })
        })
        .collect();
    let x = "x".repeat(10000);
    let expect = [
        (
            "public.a",
            "r",
            "null".to_string(),
            format!("id=1 v=one big={x}"),
        ),
        ("public.a", "c", "null".into(), "id=2 v=two big=b2".into()),
        ("public.f", "c", "null".into(), "id=10 v=ten".into()),
        ("public.a", "c", "null".into(), "id=3 v=three big=b3".into()),
        // Default identity, key unchanged: no before image; the unchanged TOASTed `big`
        // gets the placeholder, never a wrong value.
        (
            "public.a",
            "u",
            "null".into(),
            "id=1 v=uno big=__debezium_unavailable_value".into(),
        ),
        ("public.f", "u", "id=10 v=ten".into(), "id=10 v=TEN".into()),
        // Key changed: the old key is the before image.
        (
            "public.a",
            "u",
            "id=2 v=NULL big=NULL".into(),
            "id=20 v=two big=b2".into(),
        ),
        (
            "public.a",
            "d",
            "id=3 v=NULL big=NULL".into(),
            "null".into(),
        ),
        ("public.f", "d", "id=10 v=TEN".into(), "null".into()),
        (
            "public.a",
            "c",
            "null".into(),
            "id=4 v=four big=NULL extra=5".into(),
        ),
        ("public.f", "t", "null".into(), "null".into()),
    ];
    assert_eq!(events.len(), expect.len());
    for (got, want) in events.iter().zip(expect.iter()) {
        assert_eq!(
            (
                got.0.as_str(),
                got.1.as_str(),
                got.2.as_str(),
                got.3.as_str()
            ),
            (want.0, want.1, want.2.as_str(), want.3.as_str())
        );
    }
    // The new shape is a new schema; source metadata is filled.
    let last_a = got
        .iter()
        .rev()
        .find(|b| b.stream.as_deref() == Some("public.a"))
        .unwrap();
    assert!(image(&last_a.batch, "after")
        .column_by_name("extra")
        .is_some());
    let source = last_a.batch.column_by_name("source").unwrap().as_struct();
    assert_eq!(
        source
            .column_by_name("connector")
            .unwrap()
            .as_string::<i32>()
            .value(0),
        "postgresql"
    );
    assert_eq!(
        source
            .column_by_name("db")
            .unwrap()
            .as_string::<i32>()
            .value(0),
        db.name
    );
    assert!(source.column_by_name("txid").unwrap().is_valid(0));
}

/// Apply change events to a key → row-text map (the table's state as seen downstream).
fn apply(state: &mut BTreeMap<String, String>, batches: &[SourceBatch]) {
    for b in batches {
        let op = b
            .batch
            .column_by_name("op")
            .unwrap()
            .as_string::<i32>()
            .clone();
        let before = image(&b.batch, "before");
        let after = image(&b.batch, "after");
        for i in 0..b.batch.num_rows() {
            let key = |s: &StructArray| {
                let id = s.column_by_name("id").unwrap().as_primitive::<Int32Type>();
                id.value(i).to_string()
            };
            match op.value(i) {
                "r" | "c" => {
                    let prev = state.insert(key(after), row_text(after, i));
                    assert!(
                        prev.is_none(),
                        "insert of existing key {} (overlap)",
                        key(after)
                    );
                }
                "u" => {
                    if before.is_valid(i) {
                        state.remove(&key(before));
                    }
                    state.insert(key(after), row_text(after, i));
                }
                "d" => {
                    assert!(
                        state.remove(&key(before)).is_some(),
                        "delete of missing key"
                    );
                }
                other => panic!("unexpected op {other}"),
            }
        }
    }
}

#[tokio::test]
async fn snapshot_under_concurrent_writes_then_stream_reproduces_the_table() {
    let Some(db) = Db::new() else { return };
    db.sql(
        "CREATE TABLE w (id int PRIMARY KEY, n int NOT NULL, s text);
         ALTER TABLE w REPLICA IDENTITY FULL;
         INSERT INTO w SELECT g, 0, 'v' || g FROM generate_series(1, 20000) g",
    );
    // A writer keeps changing the table while the snapshot runs and after.
    let pg = db.pg.clone();
    let name = db.name.clone();
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let stop2 = stop.clone();
    let writer = std::thread::spawn(move || {
        let mut round = 0;
        while !stop2.load(std::sync::atomic::Ordering::Relaxed) || round < 5 {
            round += 1;
            pg.psql(
                &name,
                &format!(
                    "BEGIN;
                     UPDATE w SET n = n + 1 WHERE id % 97 = {m};
                     DELETE FROM w WHERE id % 1009 = {m};
                     INSERT INTO w SELECT g, {round}, 'new' FROM generate_series({lo}, {lo} + 49) g;
                     COMMIT;",
                    m = round % 97,
                    lo = 100_000 + round * 50
                ),
            )
            .unwrap();
        }
        round
    });
    let mut src = PostgresCdcSource::new(db.config("tables: [w]\n"));
    src.open(None).await.unwrap();
    let mut got = Vec::new();
    // Let the snapshot finish and some streaming happen, then stop the writer.
    collect_until(&mut src, &mut got, |b| {
        b.iter()
            .any(|x| ops(std::slice::from_ref(x)).iter().any(|o| o != "r"))
    })
    .await;
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    let rounds = writer.join().unwrap();
    let expected: BTreeMap<String, String> = db
        .sql("SELECT id, n, coalesce(s, 'NULL') FROM w ORDER BY id")
        .lines()
        .map(|l| {
            let f: Vec<&str> = l.split('|').collect();
            (
                f[0].to_string(),
                format!("id={} n={} s={}", f[0], f[1], f[2]),
            )
        })
        .collect();
    let end_lsn = db.sql("SELECT pg_current_wal_lsn()");
    let mut state = BTreeMap::new();
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        state.clear();
        apply(&mut state, &got);
        if state == expected {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "state differs after {rounds} writer rounds (end {end_lsn}): {} rows vs {} expected",
            state.len(),
            expected.len()
        );
        let n = rows(&got);
        collect_until(&mut src, &mut got, |b| rows(b) > n).await;
    }
}

#[tokio::test]
async fn a_restart_resumes_after_the_durable_position() {
    let Some(db) = Db::new() else { return };
    db.sql(
        "CREATE TABLE \"OrderLines\" (id int PRIMARY KEY); INSERT INTO \"OrderLines\" VALUES (1)",
    );
    let cfg = db.config(
        "tables: [OrderLines]\ntopic_routing: \"cdc.{database}.{schema}.{table}\"\n\
         normalization: {case_conversion: snake_case, strip_prefixes: [cdc_]}\n",
    );
    let mut src = PostgresCdcSource::new(cfg.clone());
    src.open(None).await.unwrap();
    let mut got = Vec::new();
    collect_until(&mut src, &mut got, |b| rows(b) == 1).await;
    // Routed and normalized topic: `cdc_<pid>_<n>` loses its `cdc_` prefix.
    let topic = got[0].topic.as_deref().unwrap().to_string();
    assert_eq!(
        topic,
        format!(
            "cdc.{}.public.order_lines",
            db.name.trim_start_matches("cdc_")
        )
    );
    db.sql("INSERT INTO \"OrderLines\" VALUES (2); INSERT INTO \"OrderLines\" VALUES (3)");
    collect_until(&mut src, &mut got, |b| rows(b) == 3).await;
    let durable: Position = got.last().unwrap().position.clone();
    drop(src);
    db.sql("INSERT INTO \"OrderLines\" VALUES (4)");
    // Restart from the stored position: no snapshot again, no replay of 2 and 3.
    let mut src = PostgresCdcSource::new(cfg);
    src.open(Some(durable)).await.unwrap();
    let mut after = Vec::new();
    collect_until(&mut src, &mut after, |b| rows(b) >= 1).await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    let mut state = BTreeMap::new();
    apply(&mut state, &after);
    assert_eq!(state.keys().collect::<Vec<_>>(), ["4"]);
    // The slot's confirmed position is at or past what was durable.
    let confirmed = db.sql(&format!(
        "SELECT confirmed_flush_lsn IS NOT NULL FROM pg_replication_slots WHERE database = '{}'",
        db.name
    ));
    assert_eq!(confirmed.trim(), "t");
}

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
async fn streamed_in_progress_transactions_commit_abort_and_subtransaction_rollback() {
    let Some(db) = Db::new() else { return };
    // A tiny decoding memory makes the server stream these transactions before commit.
    db.sql(&format!(
        "ALTER DATABASE \"{}\" SET logical_decoding_work_mem = '64kB'",
        db.name
    ));
    db.sql("CREATE TABLE s (id int PRIMARY KEY, pad text)");
    let cfg = db.config("tables: [s]\nsnapshot_mode: no_data\nstreaming: true\n");
    let slot = cfg.slot_name.clone();
    let mut src = PostgresCdcSource::new(cfg);
    src.open(None).await.unwrap();
    let script = db.sql_bg(
        "BEGIN;
         INSERT INTO s SELECT g, repeat('p', 200) FROM generate_series(1, 3000) g;
         SAVEPOINT sp;
         INSERT INTO s SELECT g, repeat('q', 200) FROM generate_series(3001, 6000) g;
         ROLLBACK TO SAVEPOINT sp;
         ALTER TABLE s ADD COLUMN extra int DEFAULT 7;
         INSERT INTO s SELECT g, repeat('r', 200) FROM generate_series(6001, 6500) g;
         COMMIT;
         BEGIN;
         INSERT INTO s SELECT g, repeat('x', 200) FROM generate_series(10001, 15000) g;
         ROLLBACK;
         INSERT INTO s VALUES (20000, 'last');",
    );
    let mut got = Vec::new();
    collect_until(&mut src, &mut got, |b| {
        b.iter().any(|x| {
            let after = image(&x.batch, "after");
            let id = after
                .column_by_name("id")
                .unwrap()
                .as_primitive::<Int32Type>();
            (0..id.len()).any(|i| id.value(i) == 20000)
        })
    })
    .await;
    script.join().unwrap();
    let mut state = BTreeMap::new();
    apply(&mut state, &got);
    let ids: Vec<i32> = state.keys().map(|k| k.parse().unwrap()).collect();
    let want: Vec<i32> = (1..=3000).chain(6001..=6500).chain([20000]).collect();
    let mut ids_sorted = ids.clone();
    ids_sorted.sort();
    assert_eq!(
        ids_sorted.len(),
        want.len(),
        "committed rows only, exactly once"
    );
    assert_eq!(ids_sorted, want);
    assert_eq!(
        rows(&got),
        want.len(),
        "no aborted or rolled-back row was emitted"
    );
    // The DDL inside the streamed transaction: rows before it keep the old shape, rows
    // after it have the new column.
    assert_eq!(state["1"], format!("id=1 pad={}", "p".repeat(200)));
    assert_eq!(
        state["6001"],
        format!("id=6001 pad={} extra=7", "r".repeat(200))
    );
    let streamed = db.sql(&format!(
        "SELECT stream_txns FROM pg_stat_replication_slots WHERE slot_name = '{slot}'"
    ));
    assert!(
        streamed.trim().parse::<i64>().unwrap_or(0) > 0,
        "the server did not stream (stream_txns = {streamed:?})"
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
async fn an_interrupted_snapshot_resumes_without_rereading_finished_tables() {
    let Some(db) = Db::new() else { return };
    for t in ["t1", "t2", "t3"] {
        db.sql(&format!(
            "CREATE TABLE {t} (id int PRIMARY KEY); INSERT INTO {t} SELECT generate_series(1, 3000)"
        ));
    }
    // One table at a time, so the crash point is deterministic.
    let cfg = db.config("tables: [t1, t2, t3]\nsnapshot: {parallel_tables: 1}\n");
    let mut src = PostgresCdcSource::new(cfg.clone());
    src.open(None).await.unwrap();
    // Read all of t1 and part of t2, then "crash" (drop without a clean stop).
    let mut first = Vec::new();
    collect_until(&mut src, &mut first, |b| {
        b.iter().any(|x| x.stream.as_deref() == Some("public.t2"))
    })
    .await;
    let last = first.last().unwrap().position.clone();
    assert_eq!(
        last.0["tables_done"],
        serde_json::json!(["public.t1"]),
        "{}",
        last.0
    );
    assert_eq!(last.0["snapshot_done"], false);
    drop(src);
    db.sql("INSERT INTO t1 VALUES (100000)");
    let mut src = PostgresCdcSource::new(cfg);
    src.open(Some(last)).await.unwrap();
    let mut second = Vec::new();
    collect_until(&mut src, &mut second, |b| {
        b.iter().any(|x| {
            x.stream.as_deref() == Some("public.t1")
                && ops(std::slice::from_ref(x)).iter().any(|o| o == "c")
        })
    })
    .await;
    let count = |table: &str, op: &str| -> usize {
        second
            .iter()
            .filter(|b| b.stream.as_deref() == Some(table))
            .flat_map(|b| ops(std::slice::from_ref(b)))
            .filter(|o| o == op)
            .count()
    };
    assert_eq!(
        count("public.t1", "r"),
        0,
        "a finished table was read again"
    );
    assert_eq!(
        count("public.t2", "r"),
        3000,
        "the interrupted table is read whole"
    );
    assert_eq!(count("public.t3", "r"), 3000);
    assert_eq!(
        count("public.t1", "c"),
        1,
        "then the stream continues from the slot"
    );
}

// Multi-threaded, as in the runtime: the tasks starting other sessions' COPYs run while
// this one reads.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tables_are_snapshotted_in_parallel_sessions_exactly_once() {
    let Some(db) = Db::new() else { return };
    let tables = ["p1", "p2", "p3", "p4", "p5"];
    for t in tables {
        db.sql(&format!(
            "CREATE TABLE {t} (id int PRIMARY KEY, v text); \
             INSERT INTO {t} SELECT g, md5(g::text) FROM generate_series(1, 20000) g"
        ));
    }
    let cfg = db.config(&format!(
        "tables: [{}]\nsnapshot: {{parallel_tables: 3}}\n",
        tables.join(", ")
    ));
    let mut src = PostgresCdcSource::new(cfg);
    src.open(None).await.unwrap();
    let mut got = Vec::new();
    collect_until(&mut src, &mut got, |b| rows(b) == 100_000).await;
    db.sql("INSERT INTO p3 VALUES (9999999, 'after')");
    collect_until(&mut src, &mut got, |b| rows(b) == 100_001).await;
    for t in tables {
        let mut state = BTreeMap::new();
        let mine: Vec<SourceBatch> = got
            .iter()
            .filter(|b| b.stream.as_deref() == Some(&format!("public.{t}")))
            .cloned()
            .collect();
        apply(&mut state, &mine); // panics on a duplicate key
        assert_eq!(state.len(), if t == "p3" { 20001 } else { 20000 }, "{t}");
    }
    // Positions record finished tables, never fewer than before; streaming positions say
    // the snapshot is done.
    let mut finished = 0;
    for b in &got {
        if b.position.0["snapshot_done"] == false {
            let n = b.position.0["tables_done"].as_array().unwrap().len();
            assert!(n >= finished, "tables_done shrank: {}", b.position.0);
            finished = n;
        }
    }
    assert_eq!(
        finished,
        tables.len() - 1,
        "finished tables recorded before the last"
    );
    // The batch that ends the snapshot says so.
    let last_snapshot = got
        .iter()
        .rev()
        .find(|b| ops(std::slice::from_ref(b))[0] == "r")
        .unwrap();
    assert_eq!(last_snapshot.position.0["snapshot_done"], true);
    assert_eq!(got.last().unwrap().position.0["snapshot_done"], true);
    let streams: Vec<&str> = got.iter().filter_map(|b| b.stream.as_deref()).collect();
    // Interleaved: some table's batches come in more than one run (another table's
    // batches between them).
    let runs = 1 + streams.windows(2).filter(|w| w[0] != w[1]).count();
    let distinct: std::collections::BTreeSet<&str> = streams.iter().copied().collect();
    let interleaved = runs > distinct.len();
    assert!(
        interleaved,
        "tables were read one after another: {streams:?}"
    );
}

#[tokio::test]
async fn big_tables_are_read_in_block_chunks_and_a_resume_skips_finished_chunks() {
    let Some(db) = Db::new() else { return };
    db.sql(
        "CREATE TABLE c (id int PRIMARY KEY, v text);
         INSERT INTO c SELECT g, md5(g::text) FROM generate_series(1, 30000) g;
         ANALYZE c",
    );
    let cfg = db.config("tables: [c]\nsnapshot: {parallel_tables: 1, chunk_rows: 8000}\n");
    let mut src = PostgresCdcSource::new(cfg.clone());
    src.open(None).await.unwrap();
    // Read until the first chunk is recorded as done, then "crash".
    let mut first = Vec::new();
    collect_until(&mut src, &mut first, |b| {
        b.iter().any(|x| {
            x.position.0["tables_done"]
                .as_array()
                .is_some_and(|a| !a.is_empty())
        })
    })
    .await;
    let last = first
        .iter()
        .rev()
        .find(|x| {
            x.position.0["tables_done"]
                .as_array()
                .is_some_and(|a| !a.is_empty())
        })
        .unwrap()
        .position
        .clone();
    let chunk = last.0["tables_done"][0].as_str().unwrap().to_string();
    let (_, range) = chunk.split_once('@').expect("a chunk id");
    let (_, end) = range.split_once('-').unwrap();
    assert!(!end.is_empty(), "the first chunk is bounded: {chunk}");
    let in_chunk: usize = db
        .sql(&format!(
            "SELECT count(*) FROM c WHERE ctid < '({end},0)'::tid"
        ))
        .trim()
        .parse()
        .unwrap();
    assert!(in_chunk > 0 && in_chunk < 30000, "{chunk}: {in_chunk} rows");
    drop(src);
    let mut src = PostgresCdcSource::new(cfg);
    src.open(Some(last)).await.unwrap();
    let mut second = Vec::new();
    collect_until(&mut src, &mut second, |b| {
        b.iter().any(|x| x.position.0["snapshot_done"] == true)
    })
    .await;
    let reread = rows(&second);
    assert_eq!(
        reread,
        30000 - in_chunk,
        "the finished chunk was not read again"
    );
    // First run + second run cover every row.
    let mut ids = std::collections::BTreeSet::new();
    for b in first.iter().chain(&second) {
        let after = image(&b.batch, "after");
        let id = after
            .column_by_name("id")
            .unwrap()
            .as_primitive::<Int32Type>();
        ids.extend(id.values().iter().copied());
    }
    assert_eq!(ids.len(), 30000);
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
async fn snapshot_honours_the_publication_column_list_and_row_filter() {
    use rivven_engine::registry::SourceConnector;
    use rivven_sources::postgres_cdc::{PostgresCdc, PostgresCdcConfig};
    let Some(db) = Db::new() else { return };
    let cfg = db.config("tables: [f]\n");
    db.sql(&format!(
        "CREATE TABLE f (id int PRIMARY KEY, status text NOT NULL, secret text, n int);
         INSERT INTO f SELECT g, CASE WHEN g % 2 = 0 THEN 'active' ELSE 'off' END, 's' || g, g
           FROM generate_series(1, 100) g;
         CREATE PUBLICATION {} FOR TABLE f (id, status, n) WHERE (status = 'active')",
        cfg.publication
    ));
    let published = ["id", "status", "n"];

    // discover reports the published columns only.
    let yaml: PostgresCdcConfig = rivven_engine::config::parse(
        &serde_yaml::from_str(&format!(
            "host: 127.0.0.1\nport: {}\ndatabase: {}\nuser: {}\npassword: {}\npublication: {}\ntables: [f]\n",
            db.pg.port, db.name, db.pg.user, db.pg.password, cfg.publication
        ))
        .unwrap(),
    )
    .unwrap();
    let streams = PostgresCdc.discover(&yaml).await.unwrap();
    let after = streams[0].schema.field_with_name("after").unwrap().clone();
    let arrow::datatypes::DataType::Struct(fields) = after.data_type() else {
        panic!("{after:?}")
    };
    let names: Vec<&str> = fields.iter().map(|f| f.name().as_str()).collect();
    assert_eq!(names, published);

    let mut src = PostgresCdcSource::new(cfg);
    src.open(None).await.unwrap();
    let mut got = Vec::new();
    collect_until(&mut src, &mut got, |b| rows(b) >= 50).await;
    db.sql("INSERT INTO f VALUES (1001, 'active', 'x', 1), (1002, 'off', 'y', 2)");
    collect_until(&mut src, &mut got, |b| ops(b).iter().any(|o| o == "c")).await;

    let mut snapshot_ids = Vec::new();
    let mut inserted = Vec::new();
    for b in &got {
        // Snapshot and stream batches have one shape: the published columns.
        let img = image(&b.batch, "after");
        let names: Vec<&str> = img.fields().iter().map(|f| f.name().as_str()).collect();
        assert_eq!(names, published, "{:?}", b.batch.schema());
        let ids = img
            .column_by_name("id")
            .unwrap()
            .as_primitive::<Int32Type>();
        let status = img.column_by_name("status").unwrap().as_string::<i32>();
        let op = ops(std::slice::from_ref(b));
        for (i, op) in op.iter().enumerate() {
            assert_eq!(status.value(i), "active", "the row filter holds");
            match op.as_str() {
                "r" => snapshot_ids.push(ids.value(i)),
                "c" => inserted.push(ids.value(i)),
                o => panic!("unexpected op {o}"),
            }
        }
    }
    snapshot_ids.sort();
    assert_eq!(snapshot_ids, (1..=50).map(|i| i * 2).collect::<Vec<i32>>());
    assert_eq!(inserted, vec![1001]);
}

#[tokio::test]
async fn logical_messages_arrive_in_commit_order_filtered_by_prefix() {
    let Some(db) = Db::new() else { return };
    db.sql("CREATE TABLE lm (id int PRIMARY KEY)");
    let mut src =
        PostgresCdcSource::new(db.config(
            "tables: [lm]\nsnapshot_mode: never\nmessages: true\nmessage_prefixes: [audit]\n",
        ));
    src.open(None).await.unwrap();
    let mut got = Vec::new();
    db.sql(
        "BEGIN;
         INSERT INTO lm VALUES (1);
         SELECT pg_logical_emit_message(true, 'audit', 'inside');
         SELECT pg_logical_emit_message(true, 'other', 'skipped');
         INSERT INTO lm VALUES (2);
         COMMIT;
         SELECT pg_logical_emit_message(false, 'audit', 'outside');
         INSERT INTO lm VALUES (3);",
    );
    collect_until(&mut src, &mut got, |b| rows(b) >= 5).await;
    let mut seen = Vec::new();
    for b in &got {
        let op = ops(std::slice::from_ref(b));
        let after = image(&b.batch, "after");
        for (i, o) in op.iter().enumerate() {
            if o == "m" {
                let prefix = after.column_by_name("prefix").unwrap().as_string::<i32>();
                let content = after.column_by_name("content").unwrap().as_binary::<i32>();
                let tx = after
                    .column_by_name("transactional")
                    .unwrap()
                    .as_boolean()
                    .value(i);
                let table = b.batch.column_by_name("source").unwrap().as_struct();
                let table = table.column_by_name("table").unwrap().as_string::<i32>();
                assert_eq!(table.value(i), "pg_logical_message");
                seen.push(format!(
                    "m {} {} {tx}",
                    prefix.value(i),
                    String::from_utf8_lossy(content.value(i))
                ));
            } else {
                let id = after
                    .column_by_name("id")
                    .unwrap()
                    .as_primitive::<Int32Type>();
                seen.push(format!("{o} {}", id.value(i)));
            }
        }
    }
    assert_eq!(
        seen,
        [
            "c 1",
            "m audit inside true",
            "c 2",
            "m audit outside false",
            "c 3"
        ]
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
    db.sql(
        "BEGIN;
         INSERT INTO inf VALUES (2, 'infinity', 'two');
         INSERT INTO inf VALUES (1, '2024-01-01 00:00:00', 'one');
         INSERT INTO inf VALUES (4, '-infinity', 'four');
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
    assert!(dead[1].3.contains("-infinity"), "{dead:?}");
    let (table, op, error, after) = &dead[0];
    assert_eq!((table.as_str(), op.as_str()), ("public.inf", "c"));
    assert!(error.contains("infinity"), "{error}");
    let after: serde_json::Value = serde_json::from_str(after).unwrap();
    assert_eq!(after["at"], "infinity");
    assert_eq!(after["v"], "two");
}

#[tokio::test]
async fn a_snapshot_row_that_cannot_be_decoded_goes_to_the_dead_letter_topic() {
    let Some(db) = Db::new() else { return };
    db.sql(
        "CREATE TABLE inf (id int PRIMARY KEY, at timestamp, v text);
         INSERT INTO inf VALUES (1, '2024-01-01', 'one'), (2, '2024-01-02', 'two'),
           (3, 'infinity', 'three'), (4, '2024-01-04', 'four'), (5, '2024-01-05', 'five'),
           (6, '-infinity', 'six')",
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
    // Binary COPY values, as hex: timestamp 'infinity' is i64::MAX; text is its UTF-8.
    assert_eq!(after["at"], "\\x7fffffffffffffff");
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
        .contains("rivven_connect_pipeline_healthy{pipeline=\"pg\",kind=\"source\",connector=\"postgres-cdc\"} 0"));
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
