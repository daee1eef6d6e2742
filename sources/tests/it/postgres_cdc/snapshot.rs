//! The snapshot: resumed, parallel, chunked, and as the publication filters it.

use super::*;

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
