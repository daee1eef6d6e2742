//! `delta-lake` sink end to end: the table read back by delta-rs's Python reader, and
//! exactly once across a lost consumer-offset commit.

use crate::support::{group_file, kill_9_runs, orders_into, reference_file, run_ok, Pipeline};
use std::path::Path;

/// Every row of the Delta table at `table` and of the topic `topic` (as `rivven-connect`
/// left it in `state`), sorted by `sequence`, compared in Python: `{"rows", "equal",
/// "version", "txn"}` (`txn`: the table's transaction versions by application id).
fn compare(py: &rivven_testkit::Python, reference: &Path, table: &Path) -> serde_json::Value {
    const PY: &str = r#"
import json, sys
import pyarrow.ipc as ipc
from deltalake import DeltaTable
with open(sys.argv[1], "rb") as f:
    ref = ipc.open_file(f).read_all()
dt = DeltaTable(sys.argv[2])
got = dt.to_pyarrow_table()
ref_rows = sorted(ref.to_pylist(), key=lambda r: r["sequence"])
got_rows = sorted(got.to_pylist(), key=lambda r: r["sequence"])
txn = {}
for line in open(sys.argv[2] + "/_delta_log/" + "%020d.json" % dt.version()):
    a = json.loads(line)
    if "txn" in a:
        txn[a["txn"]["appId"]] = a["txn"]["version"]
duck_sorted = sorted(duck_rows(duck(), f"SELECT * FROM delta_scan('{sys.argv[2]}')"), key=lambda r: r["sequence"])
print(json.dumps({"rows": len(got_rows), "equal": ref_rows == got_rows,
                  "duckdb_equal": ref_rows == duck_sorted,
                  "version": dt.version(), "txn": txn,
                  "first_diff": next((str((a, b)) for a, b in zip(ref_rows, got_rows) if a != b), None)}))
"#;
    let script = format!("{}{PY}", rivven_testkit::DUCKDB_LAKEHOUSE);
    let out = py
        .run(
            &script,
            &[&reference.to_string_lossy(), &table.to_string_lossy()],
        )
        .unwrap();
    serde_json::from_str(out.trim()).unwrap()
}

/// datagen `orders` into a `delta-lake` sink (see [`orders_into`]).
fn orders_into_delta(max: u64, rate: u64, config: &str) -> Pipeline {
    orders_into("delta-lake", max, rate, config)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rows_read_back_exactly_and_a_replay_writes_nothing_twice() {
    let py = rivven_testkit::require!(rivven_testkit::python());
    let lake = tempfile::tempdir().unwrap();
    let table = lake.path().join("orders");
    let p = orders_into_delta(
        5000,
        0,
        &format!(
            "      table_uri: {}\n      batch_size: 1500\n      compression: zstd\n",
            table.display()
        ),
    );
    run_ok(&p, &["run"], &[]);
    let (ipc, rows) = reference_file(&p).await;
    assert_eq!(rows, 5000);
    let got = compare(&py, &ipc, &table);
    assert_eq!(got["rows"], 5000, "{got}");
    assert_eq!(got["equal"], true, "{got}");
    assert_eq!(got["duckdb_equal"], true, "{got}");
    let id = "rivven-connect/lake/orders/0";
    assert_eq!(got["txn"][id], 5000, "{got}");
    let version = got["version"].clone();

    // The group's offsets are lost (a crash between the table commit and the offset
    // commit): the replay from `earliest` resumes after the table's own offsets.
    std::fs::remove_file(group_file(&p.state(), "lake").expect("group file")).unwrap();
    run_ok(&p, &["run"], &[]);
    let again = compare(&py, &ipc, &table);
    assert_eq!(again["rows"], 5000, "{again}");
    assert_eq!(again["version"], version, "no new commit: {again}");
}

/// Versions in the table's log (commit files), 0 before the first commit.
fn log_versions(table: &Path) -> usize {
    std::fs::read_dir(table.join("_delta_log"))
        .map(|d| {
            d.flatten()
                .filter(|e| e.file_name().to_string_lossy().ends_with(".json"))
                .count()
        })
        .unwrap_or(0)
}

/// kill -9 while commits are being made, five times, then a run to the end: the table
/// holds every row exactly once.
#[test]
fn kill_9_during_commits_leaves_every_row_once() {
    const N: i64 = 60_000;
    let py = rivven_testkit::require!(rivven_testkit::python());
    let lake = tempfile::tempdir().unwrap();
    let table = lake.path().join("orders");
    let p = orders_into_delta(
        N as u64,
        15_000,
        &format!(
            "      {{table_uri: {}, batch_size: 700, flush_interval_secs: 1}}\n",
            table.display()
        ),
    );
    let (kills, versions) = kill_9_runs(&p, || log_versions(&table));
    assert!(kills >= 4, "the run ended before it could be killed");
    assert!(
        versions.windows(2).all(|w| w[0] <= w[1]) && versions[versions.len() - 1] > 0,
        "no commits between kills: {versions:?}"
    );
    let out = p.cmd(&["run"]);
    assert!(
        out.status.success(),
        "final run: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let script = r#"
import json, sys
from deltalake import DeltaTable
print(json.dumps(DeltaTable(sys.argv[1]).to_pyarrow_table().column("sequence").to_pylist()))
"#;
    let out = py.run(script, &[&table.to_string_lossy()]).unwrap();
    let mut seqs: Vec<i64> = serde_json::from_str(out.trim()).unwrap();
    let total = seqs.len();
    seqs.sort_unstable();
    seqs.dedup();
    assert_eq!(total - seqs.len(), 0, "duplicate rows");
    assert_eq!(seqs, (0..N).collect::<Vec<_>>(), "missing rows");
    eprintln!(
        "kill -9 x{kills}: {} table versions, {total} rows, 0 duplicates, 0 missing (versions after each kill: {versions:?})",
        log_versions(&table)
    );
}

/// The same rows into a table on S3 (s3s-fs), read back from the server's directory.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rows_read_back_exactly_from_s3() {
    let py = rivven_testkit::require!(rivven_testkit::python());
    let s3 = rivven_testkit::require!(rivven_testkit::s3());
    let bucket = s3
        .create_bucket(&rivven_testkit::unique_name("delta"))
        .unwrap();
    let p = orders_into_delta(
        3000,
        0,
        &format!(
            "      table_uri: s3://{bucket}/warehouse/orders\n      batch_size: 1000\n      \
             s3: {{endpoint_url: '{}', access_key_id: {}, secret_access_key: {}, region: us-east-1}}\n",
            s3.endpoint, s3.access_key, s3.secret_key
        ),
    );
    run_ok(&p, &["check", "run"], &[]);
    let (ipc, rows) = reference_file(&p).await;
    assert_eq!(rows, 3000);
    let got = compare(&py, &ipc, &s3.root.join(&bucket).join("warehouse/orders"));
    assert_eq!(got["rows"], 3000, "{got}");
    assert_eq!(got["equal"], true, "{got}");
    assert_eq!(got["txn"]["rivven-connect/lake/orders/0"], 3000, "{got}");
}

/// The same rows into a table on Azure Blob Storage (azurite), downloaded and read back.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rows_read_back_exactly_from_azurite() {
    let py = rivven_testkit::require!(rivven_testkit::python());
    let az = rivven_testkit::require!(rivven_testkit::azurite());
    let container = rivven_testkit::unique_name("delta").replace('_', "-");
    const ADMIN: &str = r#"
import os, sys
from azure.storage.blob import BlobServiceClient
svc = BlobServiceClient.from_connection_string(sys.argv[1])
if sys.argv[2] == "create":
    svc.create_container(sys.argv[3])
else:
    c = svc.get_container_client(sys.argv[3])
    for b in c.list_blobs(name_starts_with=sys.argv[4]):
        path = os.path.join(sys.argv[5], b.name)
        os.makedirs(os.path.dirname(path), exist_ok=True)
        with open(path, "wb") as f:
            f.write(c.download_blob(b.name).readall())
print("ok")
"#;
    let cs = az.connection_string();
    py.run(ADMIN, &[&cs, "create", &container]).unwrap();
    let p = orders_into_delta(
        3000,
        0,
        &format!(
            "      table_uri: az://{container}/warehouse/orders\n      batch_size: 1000\n      \
             azure: {{use_emulator: true}}\n"
        ),
    );
    run_ok(
        &p,
        &["check", "run"],
        &[("AZURITE_BLOB_STORAGE_URL", az.blob_url.as_str())],
    );
    let (ipc, rows) = reference_file(&p).await;
    assert_eq!(rows, 3000);
    let dl = p.dir.path().join("download");
    py.run(
        ADMIN,
        &[
            &cs,
            "get",
            &container,
            "warehouse/orders/",
            &dl.to_string_lossy(),
        ],
    )
    .unwrap();
    let got = compare(&py, &ipc, &dl.join("warehouse/orders"));
    assert_eq!(got["rows"], 3000, "{got}");
    assert_eq!(got["equal"], true, "{got}");
}

/// Checkpoints, OPTIMIZE and VACUUM on their commit counts: the table keeps every row
/// exactly, small files are compacted, and removed files leave the disk.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn checkpoints_optimize_and_vacuum_keep_the_rows_exact() {
    let py = rivven_testkit::require!(rivven_testkit::python());
    let lake = tempfile::tempdir().unwrap();
    let table = lake.path().join("orders");
    let p = orders_into_delta(
        8000,
        4000,
        &format!(
            "      table_uri: {}\n      batch_size: 400\n      flush_interval_secs: 1\n      \
             checkpoint_interval: 2\n      optimize_every_commits: 3\n      \
             vacuum_every_commits: 3\n      vacuum_retention_hours: 0\n",
            table.display()
        ),
    );
    run_ok(&p, &["run"], &[]);
    let (ipc, rows) = reference_file(&p).await;
    assert_eq!(rows, 8000);
    let got = compare(&py, &ipc, &table);
    assert_eq!(got["equal"], true, "{got}");
    assert_eq!(got["duckdb_equal"], true, "{got}");
    const PY: &str = r#"
import glob, json, os, sys
from deltalake import DeltaTable
dt = DeltaTable(sys.argv[1])
ops = [h["operation"] for h in dt.history()]
on_disk = [f for f in glob.glob(os.path.join(sys.argv[1], "**", "*.parquet"), recursive=True)
           if "_delta_log" not in f]
print(json.dumps({"ops": ops, "active": len(dt.file_uris()), "on_disk": len(on_disk),
                  "checkpoints": len(glob.glob(os.path.join(sys.argv[1], "_delta_log", "*.checkpoint.parquet")))}))
"#;
    let out = py.run(PY, &[&table.to_string_lossy()]).unwrap();
    let v: serde_json::Value = serde_json::from_str(out.trim()).unwrap();
    let ops = v["ops"].to_string();
    assert!(ops.contains("OPTIMIZE"), "{v}");
    assert!(ops.contains("VACUUM"), "{v}");
    assert!(v["checkpoints"].as_u64().unwrap() >= 1, "{v}");
    // What VACUUM left on disk is no more than the live files plus those written after it.
    assert!(
        v["on_disk"].as_u64().unwrap() < v["ops"].as_array().unwrap().len() as u64,
        "{v}"
    );
}
