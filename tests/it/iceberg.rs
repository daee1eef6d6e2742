//! `iceberg` sink end to end: tables written through the memory and sql (SQLite,
//! PostgreSQL) catalogs read back by pyiceberg, exactly once across a lost consumer-offset
//! commit and across kill -9.

use crate::support::{group_file, kill_9_runs, orders_into, reference_file, run_ok};
use std::path::Path;

/// How pyiceberg finds the table: `{"static": "<warehouse dir>"}` (the newest metadata
/// file of `default.orders` under a memory catalog's warehouse), `{"sql": "<uri>",
/// "warehouse": "<dir>"}` (pyiceberg's `SqlCatalog` named `rivven`), `{"rest": "<uri>"}`
/// or `{"glue": {<GlueCatalog properties>}}`; `table` (default `default.orders`).
const LOAD: &str = r#"
import glob, json, os, sys
def load(spec):
    spec = json.loads(spec)
    if "static" in spec:
        from pyiceberg.table import StaticTable
        files = glob.glob(os.path.join(spec["static"], "default", "orders", "metadata", "*.metadata.json"))
        newest = max(files, key=lambda f: int(os.path.basename(f).split("-")[0]))
        return StaticTable.from_metadata(newest)
    if "rest" in spec:
        from pyiceberg.catalog.rest import RestCatalog
        cat = RestCatalog("rest", uri=spec["rest"])
    elif "glue" in spec:
        from pyiceberg.catalog.glue import GlueCatalog
        cat = GlueCatalog("rivven", **spec["glue"])
    else:
        from pyiceberg.catalog.sql import SqlCatalog
        cat = SqlCatalog("rivven", uri=spec["sql"], warehouse=spec["warehouse"])
    return cat.load_table(spec.get("table", "default.orders"))
"#;

/// Every row of the table and of the reference file, sorted by `sequence`, compared in
/// Python: `{"rows", "equal", "snapshots", "offsets", "spec"}` (`offsets`: this sink's
/// summary keys of the current snapshot).
fn compare(
    py: &rivven_testkit::Python,
    reference: &Path,
    spec: &serde_json::Value,
) -> serde_json::Value {
    let script = format!(
        r#"{LOAD}{duck}
import pyarrow.ipc as ipc
with open(sys.argv[1], "rb") as f:
    ref = ipc.open_file(f).read_all()
t = load(sys.argv[2])
got = t.scan().to_arrow()
ref_rows = sorted(ref.to_pylist(), key=lambda r: r["sequence"])
for c in json.loads(sys.argv[2]).get("epoch_ms", []):
    for r in ref_rows:
        r[c] = None if r[c] is None else round(r[c].timestamp() * 1000)
got_rows = sorted(got.to_pylist(), key=lambda r: r["sequence"])
duck_sorted = None
if t.metadata_location.startswith("file://") or t.metadata_location.startswith("/"):
    loc = t.metadata_location.removeprefix("file://")
    duck_sorted = sorted(duck_rows(duck(), f"SELECT * FROM iceberg_scan('{{loc}}')"), key=lambda r: r["sequence"])
snap = t.current_snapshot()
offsets = {{k: v for k, v in (snap.summary.additional_properties.items() if snap else [])
           if k.startswith("rivven-connect.offset/")}}
print(json.dumps({{"rows": len(got_rows), "equal": ref_rows == got_rows,
                  "duckdb_equal": None if duck_sorted is None else ref_rows == duck_sorted,
                  "snapshots": len(t.metadata.snapshots), "offsets": offsets,
                  "spec": str(t.spec()), "types": {{f.name: str(f.field_type) for f in t.schema().fields}},
                  "first_diff": next((str((a, b)) for a, b in zip(ref_rows, got_rows) if a != b), None)}}))
"#,
        duck = rivven_testkit::DUCKDB_LAKEHOUSE
    );
    let out = py
        .run(&script, &[&reference.to_string_lossy(), &spec.to_string()])
        .unwrap();
    serde_json::from_str(out.trim()).unwrap()
}

/// The `sequence` column of the table, as pyiceberg reads it.
fn sequences(py: &rivven_testkit::Python, spec: &serde_json::Value) -> Vec<i64> {
    let script = format!(
        "{LOAD}\nprint(json.dumps(load(sys.argv[1]).scan().to_arrow().column('sequence').to_pylist()))\n"
    );
    let out = py.run(&script, &[&spec.to_string()]).unwrap();
    serde_json::from_str(out.trim()).unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn memory_catalog_rows_read_back_exactly_and_a_replay_writes_nothing_twice() {
    let py = rivven_testkit::require!(rivven_testkit::python());
    let lake = tempfile::tempdir().unwrap();
    let p = orders_into(
        "iceberg",
        5000,
        0,
        &format!(
            "      catalog: {{type: memory, memory: {{warehouse: {}}}}}\n      table: orders\n      \
             batch_size: 1500\n      compression: zstd\n",
            lake.path().display()
        ),
    );
    run_ok(&p, &["check", "run"], &[]);
    let (ipc, rows) = reference_file(&p).await;
    assert_eq!(rows, 5000);
    let spec = serde_json::json!({ "static": lake.path() });
    let got = compare(&py, &ipc, &spec);
    assert_eq!(got["rows"], 5000, "{got}");
    assert_eq!(got["equal"], true, "{got}");
    assert_eq!(got["duckdb_equal"], true, "{got}");
    assert_eq!(
        got["offsets"]["rivven-connect.offset/lake/orders/0"], "5000",
        "{got}"
    );
    assert_eq!(got["types"]["created_at"], "timestamptz", "{got}");
    assert_eq!(got["types"]["unit_price"], "decimal(10, 2)", "{got}");
    let snapshots = got["snapshots"].clone();

    // The group's offsets are lost (a crash between the table commit and the offset
    // commit): the replay from `earliest` resumes after the table's own offsets.
    std::fs::remove_file(group_file(&p.state(), "lake").expect("group file")).unwrap();
    run_ok(&p, &["run"], &[]);
    let again = compare(&py, &ipc, &spec);
    assert_eq!(again["rows"], 5000, "{again}");
    assert_eq!(again["snapshots"], snapshots, "no new snapshot: {again}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sql_catalog_on_sqlite_is_read_by_pyiceberg_with_a_partition_spec() {
    let py = rivven_testkit::require!(rivven_testkit::python());
    let lake = tempfile::tempdir().unwrap();
    let db = lake.path().join("catalog.db");
    let warehouse = lake.path().join("warehouse");
    let p = orders_into(
        "iceberg",
        4000,
        0,
        &format!(
            "      catalog: {{type: sql, sql: {{uri: 'sqlite://{}', warehouse: {}}}}}\n      \
             table: orders\n      batch_size: 1000\n      \
             partition_fields: [status, 'bucket[4](customer_id)', 'day(created_at)']\n",
            db.display(),
            warehouse.display()
        ),
    );
    run_ok(&p, &["check", "run"], &[]);
    let (ipc, rows) = reference_file(&p).await;
    assert_eq!(rows, 4000);
    let spec = serde_json::json!({
        "sql": format!("sqlite:///{}", db.display()),
        "warehouse": format!("file://{}", warehouse.display()),
    });
    let got = compare(&py, &ipc, &spec);
    assert_eq!(got["rows"], 4000, "{got}");
    assert_eq!(got["equal"], true, "{got}");
    assert_eq!(got["duckdb_equal"], true, "{got}");
    let spec_text = got["spec"].as_str().unwrap();
    for t in ["identity", "bucket[4]", "day"] {
        assert!(spec_text.contains(t), "{t} missing from {spec_text}");
    }
    assert_eq!(
        got["offsets"]["rivven-connect.offset/lake/orders/0"], "4000",
        "{got}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sql_catalog_on_postgres_is_read_by_pyiceberg() {
    let py = rivven_testkit::require!(rivven_testkit::python());
    let pg = rivven_testkit::require!(rivven_testkit::postgres());
    let db = pg.temp_database("iceberg_catalog").unwrap();
    let url = pg.url(&db.name);
    let lake = tempfile::tempdir().unwrap();
    let warehouse = lake.path().join("warehouse");
    let p = orders_into(
        "iceberg",
        3000,
        0,
        &format!(
            "      catalog: {{type: sql, sql: {{uri: '{}', warehouse: {}}}}}\n      \
             table: orders\n      batch_size: 1000\n",
            url,
            warehouse.display()
        ),
    );
    run_ok(&p, &["check", "run"], &[]);
    let (ipc, rows) = reference_file(&p).await;
    assert_eq!(rows, 3000);
    let spec = serde_json::json!({
        "sql": url.replacen("postgres://", "postgresql+psycopg2://", 1),
        "warehouse": format!("file://{}", warehouse.display()),
    });
    let got = compare(&py, &ipc, &spec);
    assert_eq!(got["rows"], 3000, "{got}");
    assert_eq!(got["equal"], true, "{got}");
    assert_eq!(got["duckdb_equal"], true, "{got}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rest_catalog_rustberg_is_read_by_pyiceberg() {
    let py = rivven_testkit::require!(rivven_testkit::python());
    let rest = rivven_testkit::require!(rivven_testkit::iceberg_rest());
    let ns = rivven_testkit::unique_name("rest");
    let p = orders_into(
        "iceberg",
        3000,
        0,
        &format!(
            "      catalog: {{type: rest, rest: {{uri: '{}'}}}}\n      namespace: {ns}\n      \
             table: orders\n      batch_size: 1000\n      partition_fields: ['month(created_at)']\n",
            rest.uri
        ),
    );
    run_ok(&p, &["check", "run"], &[]);
    let (ipc, rows) = reference_file(&p).await;
    assert_eq!(rows, 3000);
    let spec = serde_json::json!({ "rest": rest.uri, "table": format!("{ns}.orders") });
    let got = compare(&py, &ipc, &spec);
    assert_eq!(got["rows"], 3000, "{got}");
    assert_eq!(got["equal"], true, "{got}");
    assert_eq!(got["duckdb_equal"], true, "{got}");
    assert!(got["snapshots"].as_u64().unwrap() >= 1, "{got}");
    assert!(got["spec"].as_str().unwrap().contains("month"), "{got}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn glue_catalog_with_s3_files_on_moto_is_read_by_pyiceberg() {
    let py = rivven_testkit::require!(rivven_testkit::python());
    let moto = rivven_testkit::require!(rivven_testkit::moto());
    let (keys, spec) = glue_on_moto(&py, &moto, &rivven_testkit::unique_name("glue"));
    let p = orders_into(
        "iceberg",
        2000,
        0,
        &format!("{keys}      table: orders\n      batch_size: 1000\n"),
    );
    run_ok(&p, &["check", "run"], &[]);
    let (ipc, rows) = reference_file(&p).await;
    assert_eq!(rows, 2000);
    let got = compare(&py, &ipc, &spec);
    assert_eq!(got["rows"], 2000, "{got}");
    assert_eq!(got["equal"], true, "{got}");
}

/// kill -9 while commits are being made, five times, then a run to the end: the table
/// holds every row exactly once.
#[test]
fn kill_9_during_commits_leaves_every_row_once() {
    const N: i64 = 60_000;
    let py = rivven_testkit::require!(rivven_testkit::python());
    let lake = tempfile::tempdir().unwrap();
    let db = lake.path().join("catalog.db");
    let warehouse = lake.path().join("warehouse");
    let p = orders_into(
        "iceberg",
        N as u64,
        15_000,
        &format!(
            "      catalog: {{type: sql, sql: {{uri: 'sqlite://{}', warehouse: {}}}}}\n      \
             table: orders\n      batch_size: 700\n      flush_interval_secs: 1\n",
            db.display(),
            warehouse.display()
        ),
    );
    let spec = serde_json::json!({
        "sql": format!("sqlite:///{}", db.display()),
        "warehouse": format!("file://{}", warehouse.display()),
    });
    let snapshots = || {
        std::fs::read_dir(warehouse.join("default/orders/metadata"))
            .map(|d| {
                d.flatten()
                    .filter(|e| e.file_name().to_string_lossy().starts_with("snap-"))
                    .count()
            })
            .unwrap_or(0)
    };
    let (kills, progress) = kill_9_runs(&p, snapshots);
    assert!(kills >= 4, "the run ended before it could be killed");
    assert!(
        progress[progress.len() - 1] > 0,
        "no commits between kills: {progress:?}"
    );
    let out = p.cmd(&["run"]);
    assert!(
        out.status.success(),
        "final run: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let mut seqs = sequences(&py, &spec);
    let total = seqs.len();
    seqs.sort_unstable();
    seqs.dedup();
    assert_eq!(total - seqs.len(), 0, "duplicate rows");
    assert_eq!(seqs, (0..N).collect::<Vec<_>>(), "missing rows");
    eprintln!(
        "kill -9 x{kills}: {} snapshots, {total} rows, 0 duplicates, 0 missing (snapshot files after each kill: {progress:?})",
        snapshots()
    );
}

/// While the sink runs, `/metrics` carries its per-table gauges and `status` its details.
#[test]
fn commits_reach_metrics_and_status_while_running() {
    let lake = tempfile::tempdir().unwrap();
    let p = orders_into(
        "iceberg",
        20_000,
        1_000,
        &format!(
            "      catalog: {{type: memory, memory: {{warehouse: {}}}}}\n      table: orders\n      \
             batch_size: 300\n      flush_interval_secs: 1\n",
            lake.path().display()
        ),
    );
    let mut child = p.spawn_run(&p.dir.path().join("run.out"));
    let get = |path: &str| {
        std::process::Command::new("curl")
            .args(["-sf", &format!("http://127.0.0.1:{}{path}", p.health_port)])
            .output()
            .map(|o| crate::support::stdout(&o))
            .unwrap_or_default()
    };
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(60);
    let metrics = loop {
        let m = get("/metrics");
        if m.lines().any(|l| {
            l.starts_with("rivven_connect_iceberg_commits{")
                && l.contains("table=\"default.orders\"")
                && !l.ends_with(" 0")
        }) {
            break m;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "no iceberg gauges: {m}"
        );
        std::thread::sleep(std::time::Duration::from_millis(200));
    };
    let status: serde_json::Value = serde_json::from_str(&get("/status")).unwrap();
    assert_eq!(crate::support::unsafe_kill(child.id(), libc::SIGTERM), 0);
    child.wait().unwrap();
    for g in [
        "rivven_connect_iceberg_rows_written",
        "rivven_connect_iceberg_files_written",
        "rivven_connect_iceberg_bytes_written",
        "rivven_connect_iceberg_last_commit_ms",
        "rivven_connect_iceberg_schema_id",
    ] {
        assert!(metrics.contains(g), "{g} missing: {metrics}");
    }
    let sink = status["pipelines"]
        .as_array()
        .unwrap()
        .iter()
        .find(|s| s["name"] == "lake")
        .unwrap();
    let t = &sink["details"]["iceberg"]["tables"]["default.orders"];
    assert!(t["commits"].as_u64().unwrap() >= 1, "{sink}");
    assert!(t["snapshot_id"].is_i64(), "{sink}");
}

/// The table as DuckDB's `iceberg` extension reads it (deletes applied: pyiceberg 0.12
/// refuses tables with equality deletes, so it only reads the metadata here) against the
/// last row per `customer_id` of the reference file, in Python: `{"rows", "want",
/// "equal", "operations", "equality_deletes", "first_diff"}`. `spec` as in [`LOAD`], plus
/// `s3` (`endpoint`, `region`, `key`, `secret`) when the files are on S3.
fn compare_upserted(
    py: &rivven_testkit::Python,
    reference: &Path,
    spec: &serde_json::Value,
) -> serde_json::Value {
    let script = format!(
        r#"{LOAD}{duck}
import pyarrow.ipc as ipc
with open(sys.argv[1], "rb") as f:
    ref = ipc.open_file(f).read_all()
spec = json.loads(sys.argv[2])
last = {{}}
for r in sorted(ref.to_pylist(), key=lambda r: r["sequence"]):
    last[r["customer_id"]] = r
want = sorted(last.values(), key=lambda r: r["customer_id"])
for c in spec.get("epoch_ms", []):
    for r in want:
        r[c] = None if r[c] is None else round(r[c].timestamp() * 1000)
t = load(sys.argv[2])
con = duck()
if "s3" in spec:
    s = spec["s3"]
    con.sql(f"CREATE SECRET (TYPE s3, KEY_ID '{{s['key']}}', SECRET '{{s['secret']}}', REGION '{{s['region']}}', "
            f"ENDPOINT '{{s['endpoint'].split('://')[-1]}}', URL_STYLE 'path', USE_SSL false)")
loc = t.metadata_location.removeprefix("file://")
got = sorted(duck_rows(con, f"SELECT * FROM iceberg_scan('{{loc}}')"), key=lambda r: r["customer_id"])
snap = t.current_snapshot()
print(json.dumps({{"rows": len(got), "want": len(want), "equal": got == want,
                  "operations": [s.summary.operation.value for s in t.metadata.snapshots],
                  "identifier": [t.schema().find_column_name(i) for i in t.schema().identifier_field_ids],
                  "equality_deletes": snap.summary.additional_properties.get("total-equality-deletes") if snap else None,
                  "first_diff": next((str((a, b)) for a, b in zip(want, got) if a != b), None)}}, default=str))
"#,
        duck = rivven_testkit::DUCKDB_LAKEHOUSE
    );
    let out = py
        .run(&script, &[&reference.to_string_lossy(), &spec.to_string()])
        .unwrap();
    serde_json::from_str(out.trim()).unwrap()
}

/// `commit_mode: upsert` keyed on `customer_id` through `catalog` (a `catalog:` line plus
/// whatever else the sink needs): 4,000 orders of 1,000-row commits end as one row per
/// customer, the last one, as DuckDB reads the table; every commit is an `overwrite`
/// snapshot carrying equality deletes, and the key is the table's identifier.
async fn upsert_keeps_the_last_row_per_key(catalog: &str, spec: serde_json::Value) {
    let py = rivven_testkit::require!(rivven_testkit::python());
    // 4,000 events a second: the sink sees them in several flushes.
    let p = orders_into(
        "iceberg",
        4000,
        4000,
        &format!(
            "{catalog}      table: orders\n      commit_mode: upsert\n      \
             key_columns: [customer_id]\n      batch_size: 1000\n      flush_interval_secs: 1\n"
        ),
    );
    run_ok(&p, &["check", "run"], &[]);
    let (ipc, rows) = reference_file(&p).await;
    assert_eq!(rows, 4000);
    let got = compare_upserted(&py, &ipc, &spec);
    assert_eq!(got["equal"], true, "{got}");
    assert!(got["rows"].as_u64().unwrap() < 4000, "keys repeat: {got}");
    assert_eq!(
        got["identifier"],
        serde_json::json!(["customer_id"]),
        "{got}"
    );
    let ops = got["operations"].as_array().unwrap();
    assert!(ops.len() >= 3, "several commits: {got}");
    assert!(ops.iter().all(|o| o == "overwrite"), "{got}");
    // One equality delete per key changed in a commit (a key changed twice in one commit
    // counts once): at least one per key, at most one per event.
    let deletes: u64 = got["equality_deletes"].as_str().unwrap().parse().unwrap();
    assert!(
        deletes >= got["want"].as_u64().unwrap() && deletes <= rows as u64,
        "{got}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn upsert_through_the_memory_catalog() {
    let lake = tempfile::tempdir().unwrap();
    upsert_keeps_the_last_row_per_key(
        &format!(
            "      catalog: {{type: memory, memory: {{warehouse: {}}}}}\n",
            lake.path().display()
        ),
        serde_json::json!({ "static": lake.path() }),
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn upsert_through_the_sql_catalog_on_postgres() {
    let pg = rivven_testkit::require!(rivven_testkit::postgres());
    let db = pg.temp_database("iceberg_upsert").unwrap();
    let url = pg.url(&db.name);
    let lake = tempfile::tempdir().unwrap();
    let warehouse = lake.path().join("warehouse");
    upsert_keeps_the_last_row_per_key(
        &format!(
            "      catalog: {{type: sql, sql: {{uri: '{url}', warehouse: {}}}}}\n",
            warehouse.display()
        ),
        serde_json::json!({
            "sql": url.replacen("postgres://", "postgresql+psycopg2://", 1),
            "warehouse": format!("file://{}", warehouse.display()),
        }),
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn upsert_through_the_rest_catalog() {
    let rest = rivven_testkit::require!(rivven_testkit::iceberg_rest());
    let ns = rivven_testkit::unique_name("rest_up");
    upsert_keeps_the_last_row_per_key(
        &format!(
            "      catalog: {{type: rest, rest: {{uri: '{}'}}}}\n      namespace: {ns}\n",
            rest.uri
        ),
        serde_json::json!({ "rest": rest.uri, "table": format!("{ns}.orders") }),
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn upsert_through_the_glue_catalog_with_s3_files() {
    let py = rivven_testkit::require!(rivven_testkit::python());
    let moto = rivven_testkit::require!(rivven_testkit::moto());
    let (keys, spec) = glue_on_moto(&py, &moto, &rivven_testkit::unique_name("glue_up"));
    upsert_keeps_the_last_row_per_key(&keys, spec).await;
}

/// `commit_mode: overwrite` replaces the partitions a commit writes and keeps the others:
/// a second sink on the same topic, filtered to one `status`, replaces that partition's
/// file with the same rows, so the table still equals the topic and its last snapshot
/// removed exactly one data file.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn overwrite_replaces_only_the_partitions_written() {
    let py = rivven_testkit::require!(rivven_testkit::python());
    let lake = tempfile::tempdir().unwrap();
    let db = lake.path().join("catalog.db");
    let warehouse = lake.path().join("warehouse");
    let p = orders_into(
        "iceberg",
        3000,
        0,
        &format!(
            "      catalog: {{type: sql, sql: {{uri: 'sqlite://{}', warehouse: {}}}}}\n      \
             table: orders\n      commit_mode: overwrite\n      partition_fields: [status]\n      \
             batch_size: 100000\n",
            db.display(),
            warehouse.display()
        ),
    );
    run_ok(&p, &["check", "run"], &[]);
    let (ipc, rows) = reference_file(&p).await;
    assert_eq!(rows, 3000);
    let spec = serde_json::json!({
        "sql": format!("sqlite:///{}", db.display()),
        "warehouse": format!("file://{}", warehouse.display()),
    });
    let first = compare(&py, &ipc, &spec);
    assert_eq!(first["equal"], true, "{first}");
    assert_eq!(first["snapshots"], 1, "{first}");

    // A second sink, one status only.
    let yaml = std::fs::read_to_string(p.config()).unwrap();
    let yaml = yaml
        .replace("  lake:\n", "  lake2:\n")
        .replace("consumer_group: lake\n", "consumer_group: lake2\n    transforms:\n      - type: filter\n        config: {condition: \"status = 'shipped'\"}\n");
    std::fs::write(p.config(), yaml).unwrap();
    run_ok(&p, &["check", "run"], &[]);
    let second = compare(&py, &ipc, &spec);
    assert_eq!(second["rows"], 3000, "{second}");
    assert_eq!(second["equal"], true, "{second}");
    assert_eq!(second["duckdb_equal"], true, "{second}");
    assert_eq!(second["snapshots"], 2, "{second}");
    let summary = py
        .run(
            &format!(
                "{LOAD}\ns = load(sys.argv[1]).current_snapshot().summary\n\
                 print(json.dumps({{'op': s.operation.value, **s.additional_properties}}))\n"
            ),
            &[&spec.to_string()],
        )
        .unwrap();
    let summary: serde_json::Value = serde_json::from_str(summary.trim()).unwrap();
    assert_eq!(summary["op"], "overwrite", "{summary}");
    assert_eq!(summary["deleted-data-files"], "1", "{summary}");
    assert_eq!(summary["added-data-files"], "1", "{summary}");
    assert_eq!(summary["total-records"], "3000", "{summary}");
}

/// Rows wider than the table's columns widen them (int→long, float→double, decimal
/// precision) in a schema of their own, committed before the rows: a first sink writes
/// `customer_id` as int, `quantity` as float and `unit_price` as decimal(8, 2); a second
/// sink on the same topic writes them as long, double and decimal(10, 2). pyiceberg and
/// DuckDB then read every row of both, the old files through the wider types.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn wider_rows_widen_the_table_columns() {
    let py = rivven_testkit::require!(rivven_testkit::python());
    let lake = tempfile::tempdir().unwrap();
    let cast = |spec: &str| {
        format!("    transforms:\n      - type: cast\n        config: {{spec: {{{spec}}}}}\n")
    };
    let p = orders_into(
        "iceberg",
        2000,
        0,
        &format!(
            "      catalog: {{type: memory, memory: {{warehouse: {}}}}}\n      table: orders\n",
            lake.path().display()
        ),
    );
    let yaml = std::fs::read_to_string(p.config()).unwrap();
    let narrow = yaml.replace(
        "    start_offset: earliest\n",
        &format!(
            "    start_offset: earliest\n{}",
            cast("customer_id: int32, quantity: float32, unit_price: 'DECIMAL(8,2)'")
        ),
    );
    std::fs::write(p.config(), &narrow).unwrap();
    run_ok(&p, &["check", "run"], &[]);
    let wide = yaml
        .replace("  lake:\n", "  lake2:\n")
        .replace("consumer_group: lake\n", "consumer_group: lake2\n")
        .replace(
            "    start_offset: earliest\n",
            &format!("    start_offset: earliest\n{}", cast("quantity: float64")),
        );
    std::fs::write(p.config(), &wide).unwrap();
    run_ok(&p, &["run"], &[]);
    let (ipc, rows) = reference_file(&p).await;
    assert_eq!(rows, 2000);
    let script = format!(
        r#"{LOAD}{duck}
import pyarrow.ipc as ipc
from collections import Counter
with open(sys.argv[1], "rb") as f:
    ref = ipc.open_file(f).read_all().to_pylist()
key = lambda r: (r["sequence"], r["customer_id"], float(r["quantity"]), str(r["unit_price"]))
want = Counter(key(r) for r in ref for _ in range(2))
t = load(sys.argv[2])
got = Counter(key(r) for r in t.scan().to_arrow().to_pylist())
loc = t.metadata_location.removeprefix("file://")
duck_got = Counter(key(r) for r in duck_rows(duck(), f"SELECT * FROM iceberg_scan('{{loc}}')"))
print(json.dumps({{"rows": sum(got.values()), "equal": got == want, "duckdb_equal": duck_got == want,
                  "schemas": len(t.metadata.schemas),
                  "types": {{f.name: str(f.field_type) for f in t.schema().fields}}}}))
"#,
        duck = rivven_testkit::DUCKDB_LAKEHOUSE
    );
    let spec = serde_json::json!({ "static": lake.path() });
    let out = py
        .run(&script, &[&ipc.to_string_lossy(), &spec.to_string()])
        .unwrap();
    let got: serde_json::Value = serde_json::from_str(out.trim()).unwrap();
    assert_eq!(got["rows"], 4000, "{got}");
    assert_eq!(got["equal"], true, "{got}");
    assert_eq!(got["duckdb_equal"], true, "{got}");
    assert_eq!(got["types"]["customer_id"], "long", "{got}");
    assert_eq!(got["types"]["quantity"], "double", "{got}");
    assert_eq!(got["types"]["unit_price"], "decimal(10, 2)", "{got}");
    assert!(got["schemas"].as_u64().unwrap() >= 2, "{got}");
}

/// One commit holding rows of the table's schema (written while they arrive) and, after
/// them, rows with a new column and a wider type (buffered, written after the schema
/// change): one snapshot, every row read back by pyiceberg and DuckDB, the older rows
/// with the new column null.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_commit_of_rows_before_and_after_a_schema_change() {
    let py = rivven_testkit::require!(rivven_testkit::python());
    let lake = tempfile::tempdir().unwrap();
    let pipeline = |narrow: bool| {
        let (gen, wide) = if narrow {
            ("true", "false")
        } else {
            ("false", "true")
        };
        format!(
            "sources:
  narrow:
    connector: datagen
    topic: orders
    enabled: {gen}
    config: {{pattern: orders, max_events: 1500, events_per_second: 0, seed: 5}}
    transforms:
      - type: cast
        config: {{spec: {{customer_id: int32}}}}
  wide:
    connector: datagen
    topic: orders
    enabled: {wide}
    config: {{pattern: orders, max_events: 700, events_per_second: 0, seed: 6}}
    transforms:
      - type: insert_field
        config: {{static_field: extra, static_value: 7}}
sinks:
  lake:
    connector: iceberg
    topics: [orders]
    consumer_group: lake
    start_offset: earliest
    enabled: {wide}
    config:
      catalog: {{type: memory, memory: {{warehouse: {}}}}}
      table: orders
      batch_size: 100000
      flush_interval_secs: 3600
",
            lake.path().display()
        )
    };
    let p = crate::support::Pipeline::new(&pipeline(true));
    run_ok(&p, &["check", "run"], &[]);
    let yaml = std::fs::read_to_string(p.config()).unwrap();
    assert!(yaml.contains(&pipeline(true)));
    std::fs::write(p.config(), yaml.replace(&pipeline(true), &pipeline(false))).unwrap();
    run_ok(&p, &["check", "run"], &[]);
    let script = format!(
        r#"{LOAD}{duck}
from collections import Counter
t = load(sys.argv[1])
rows = t.scan().to_arrow().to_pylist()
loc = t.metadata_location.removeprefix("file://")
duck = duck_rows(duck(), f"SELECT * FROM iceberg_scan('{{loc}}')")
key = lambda r: (r["sequence"], r["customer_id"], r["extra"])
print(json.dumps({{"rows": len(rows), "extra": dict(Counter(str(r["extra"]) for r in rows)),
                  "duckdb_equal": Counter(map(key, rows)) == Counter(map(key, duck)),
                  "snapshots": len(t.metadata.snapshots), "schemas": len(t.metadata.schemas),
                  "files": int(t.current_snapshot().summary["added-data-files"]),
                  "types": {{f.name: str(f.field_type) for f in t.schema().fields}}}}))
"#,
        duck = rivven_testkit::DUCKDB_LAKEHOUSE
    );
    let spec = serde_json::json!({ "static": lake.path() });
    let out = py.run(&script, &[&spec.to_string()]).unwrap();
    let got: serde_json::Value = serde_json::from_str(out.trim()).unwrap();
    assert_eq!(got["rows"], 2200, "{got}");
    assert_eq!(got["extra"]["None"], 1500, "{got}");
    assert_eq!(got["extra"]["7"], 700, "{got}");
    assert_eq!(got["duckdb_equal"], true, "{got}");
    assert_eq!(got["snapshots"], 1, "one commit: {got}");
    assert!(got["files"].as_u64().unwrap() >= 2, "{got}");
    assert!(got["schemas"].as_u64().unwrap() >= 2, "{got}");
    assert_eq!(got["types"]["customer_id"], "long", "{got}");
}

/// The `hive` catalog against a metastore that is not there (none runs here): `check`
/// fails naming the metastore's address; a two-level namespace is a configuration error.
#[test]
fn hive_catalog_reports_an_unreachable_metastore() {
    let lake = tempfile::tempdir().unwrap();
    let port = crate::support::free_port();
    let p = orders_into(
        "iceberg",
        100,
        0,
        &format!(
            "      catalog: {{type: hive, hive: {{uri: 'thrift://127.0.0.1:{port}', warehouse: {}}}}}\n      \
             namespace: lake\n      table: orders\n",
            lake.path().display()
        ),
    );
    let out = p.cmd(&["check"]);
    let text = crate::support::stdout(&out);
    assert!(!out.status.success(), "{text}");
    let failed = text
        .lines()
        .find(|l| l.contains("FAILED  sink lake (iceberg)"))
        .unwrap_or_else(|| panic!("{text}"));
    assert!(failed.contains(&format!("127.0.0.1:{port}")), "{failed}");
    // `run` retries an unreachable catalog with backoff like any sink (not waited for
    // here).

    // A namespace of two levels cannot be a Hive database.
    let yaml = std::fs::read_to_string(p.config())
        .unwrap()
        .replace("namespace: lake", "namespace: a.b");
    std::fs::write(p.config(), yaml).unwrap();
    let out = p.cmd(&["check"]);
    let text = format!(
        "{}{}",
        crate::support::stdout(&out),
        crate::support::stderr(&out)
    );
    assert!(
        text.contains("namespace") && text.contains("one level"),
        "{text}"
    );
}

/// A Glue catalog on moto whose warehouse is a fresh moto S3 bucket: the sink's keys
/// (`catalog`, `namespace: NS`, `s3`, and a transform turning the UTC timestamps into epoch
/// milliseconds, as iceberg-catalog-glue 0.10 has no Glue type for timestamptz) and the
/// reader's spec of the table `NS.orders`.
fn glue_on_moto(
    py: &rivven_testkit::Python,
    moto: &rivven_testkit::Moto,
    ns: &str,
) -> (String, serde_json::Value) {
    let bucket = rivven_testkit::unique_name("lake").replace('_', "-");
    py.run(
        "import boto3, sys\n\
         boto3.client('s3', endpoint_url=sys.argv[1], region_name='us-east-1', \
         aws_access_key_id='testing', aws_secret_access_key='testing').create_bucket(Bucket=sys.argv[2])\n",
        &[&moto.endpoint, &bucket],
    )
    .unwrap();
    let keys = format!(
        "      transforms:\n        - type: timestamp_converter\n          \
         config: {{fields: [created_at, timestamp], target_type: unix}}\n      catalog:\n        type: glue\n        glue: {{warehouse: 's3://{bucket}/wh', \
         region: {r}, endpoint_url: '{e}', access_key_id: {k}, secret_access_key: {s}}}\n      \
         namespace: {ns}\n      \
         s3: {{endpoint: '{e}', path_style_access: true, region: {r}, access_key_id: {k}, \
         secret_access_key: {s}}}\n",
        e = moto.endpoint,
        r = moto.region,
        k = moto.access_key,
        s = moto.secret_key,
    );
    let spec = serde_json::json!({
        "glue": {
            "glue.endpoint": moto.endpoint, "glue.region": moto.region,
            "glue.access-key-id": moto.access_key, "glue.secret-access-key": moto.secret_key,
            "s3.endpoint": moto.endpoint, "s3.region": moto.region,
            "s3.access-key-id": moto.access_key, "s3.secret-access-key": moto.secret_key,
        },
        "table": format!("{ns}.orders"),
        "epoch_ms": ["created_at", "timestamp"],
        "s3": {"endpoint": moto.endpoint, "region": moto.region,
               "key": moto.access_key, "secret": moto.secret_key},
    });
    (keys, spec)
}
