//! The stream: change events in commit order, snapshot + stream consistency under
//! concurrent writes, restarts, streamed in-progress transactions, logical messages.

use super::*;

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
