//! The object-storage sink end to end: datagen → embedded topic → files on the local
//! provider and on a real S3-compatible server (s3s-fs), read back by independent readers
//! (pyarrow, fastavro, cramjam) and compared row by row with what the topic held; kill -9
//! during writes leaves every row exactly once; `check` rejects dead or missing keys.

use crate::support::{stderr, Pipeline};
use std::path::{Path, PathBuf};

const PY: &str = include_str!("read_objects.py");

/// One sink under test: its name, format and config lines.
struct Case {
    name: String,
    format: &'static str,
    compression: &'static str,
    extra: String,
}

fn case(format: &'static str, compression: &'static str, extra: &str) -> Case {
    let tag = extra
        .chars()
        .filter(|c| c.is_ascii_alphanumeric())
        .take(12)
        .collect::<String>();
    Case {
        name: format!("{format}_{compression}_{tag}").to_lowercase(),
        format,
        compression,
        extra: extra.to_string(),
    }
}

/// The text-format compression key of a case (`compression:` only for text formats).
fn compression_line(c: &Case) -> String {
    if matches!(c.format, "jsonl" | "json" | "csv") {
        format!("compression: {}, ", c.compression)
    } else {
        String::new()
    }
}

/// Every visible file under `dir` (hidden staging directories skipped), sorted by path:
/// with one directory, that is offset order.
fn files_under(dir: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        let Ok(entries) = std::fs::read_dir(&d) else {
            continue;
        };
        for e in entries {
            let p = e.unwrap().path();
            if p.file_name().unwrap().to_string_lossy().starts_with('.') {
                continue;
            }
            if p.is_dir() {
                stack.push(p);
            } else {
                out.push(p);
            }
        }
    }
    out.sort();
    out
}

fn read_back(py: &rivven_testkit::Python, spec: serde_json::Value) -> serde_json::Value {
    let out = py.run(PY, &[&spec.to_string()]).unwrap();
    serde_json::from_str(out.trim()).unwrap()
}

fn sinks_yaml(cases: &[Case], topic: &str, store: &dyn Fn(&Case) -> String) -> String {
    let mut y = String::from("sinks:\n");
    for c in cases {
        y.push_str(&format!(
            "  {name}:\n    connector: object-storage\n    topics: [{topic}]\n    consumer_group: {name}\n    start_offset: earliest\n    config: {{{store}format: {format}, {comp}{extra}}}\n",
            name = c.name,
            store = store(c),
            format = c.format,
            comp = compression_line(c),
            extra = c.extra,
        ));
    }
    y
}

/// Run the pipeline (with extra environment variables) to completion; the reference IPC
/// path and its row count.
async fn run_to_end(p: &Pipeline, topic: &str, env: &[(&str, &str)]) -> (PathBuf, usize) {
    let out = p.cmd_env(&["run"], env);
    assert!(out.status.success(), "run failed: {}", stderr(&out));
    let ipc = p.dir.path().join("reference.arrow");
    let rows = crate::support::reference(&p.log(), topic, &ipc).await;
    (ipc, rows)
}

fn check_case(
    py: &rivven_testkit::Python,
    c: &Case,
    ipc: &Path,
    rows: usize,
    files: Vec<PathBuf>,
    min_files: usize,
) {
    assert!(
        files.len() >= min_files,
        "{}: {} files, expected at least {min_files}: {files:?}",
        c.name,
        files.len()
    );
    let ext = files[0].to_string_lossy().into_owned();
    assert!(ext.contains(&format!(".{}", c.format)), "{}: {ext}", c.name);
    let delimiter = if c.extra.contains("delimiter: ';'") {
        ";"
    } else {
        ","
    };
    let got = read_back(
        py,
        serde_json::json!({
            "ref": ipc, "format": c.format, "compression": c.compression,
            "files": files, "csv_delimiter": delimiter,
        }),
    );
    assert_eq!(got["equal"], true, "{}: {got}", c.name);
    assert_eq!(got["rows"], rows as u64, "{}", c.name);
}

fn datagen(topic: &str, pattern: &str, max: u64, extra: &str) -> String {
    format!(
        "sources:\n  gen:\n    connector: datagen\n    topic: {topic}\n    config: {{pattern: {pattern}, events_per_second: 0, max_events: {max}, seed: 11{extra}}}\n"
    )
}

/// Every format, every text compression, every Parquet codec and option, every Avro codec.
fn every_case() -> Vec<Case> {
    let mut cases = Vec::new();
    for c in ["none", "gzip", "zstd", "snappy", "lz4"] {
        cases.push(case("jsonl", c, ""));
    }
    cases.push(case("json", "none", ""));
    cases.push(case("json", "gzip", ""));
    cases.push(case("csv", "none", "csv: {delimiter: ';'}"));
    cases.push(case("csv", "zstd", ""));
    for c in ["none", "snappy", "gzip", "lz4", "brotli"] {
        cases.push(case(
            "parquet",
            c,
            &format!("parquet: {{compression: {c}}}"),
        ));
    }
    cases.push(case(
        "parquet",
        "zstd",
        "parquet: {compression: zstd, compression_level: 9, row_group_size: 100, dictionary: false, statistics: chunk}",
    ));
    for c in ["null", "deflate", "snappy", "zstd", "bzip2", "xz"] {
        cases.push(case("avro", c, &format!("avro: {{codec: {c}}}")));
    }
    cases
}

/// One file of ~9 MB of JSON: a multipart upload of two 5 MiB parts. Goes last in a list.
fn multipart_case() -> Case {
    case(
        "jsonl",
        "none",
        "batch_size: 1000000, part_size_bytes: 5242880",
    )
}

/// The `batch_size` key for cases that do not set their own: 12000 rows per file.
fn rows_per_file(c: &Case) -> &'static str {
    if c.extra.contains("batch_size") {
        ""
    } else {
        "batch_size: 12000, "
    }
}

/// Check every case of a remote run whose last case is [`multipart_case`]: at least four
/// rolled files each, and one file of more than one part for the last.
fn check_remote_cases(
    py: &rivven_testkit::Python,
    cases: &[Case],
    ipc: &Path,
    rows: usize,
    files_of: &dyn Fn(&Case) -> Vec<PathBuf>,
) {
    for (i, c) in cases.iter().enumerate() {
        let files = files_of(c);
        let last = i == cases.len() - 1;
        check_case(py, c, ipc, rows, files.clone(), if last { 1 } else { 4 });
        if last {
            let size = std::fs::metadata(&files[0]).unwrap().len();
            assert!(
                size > 5 << 20,
                "{}: the multipart case wrote one part only ({size} bytes)",
                c.name
            );
        }
    }
}

/// Every format and compression on the local provider, several files each.
#[tokio::test]
async fn every_format_and_compression_reads_back_exactly_locally() {
    let py = rivven_testkit::require!(rivven_testkit::python());
    let cases = every_case();
    let p = Pipeline::new("");
    let root = p.dir.path().join("out");
    let body = format!(
        "{}{}",
        datagen("orders", "orders", 5000, ""),
        sinks_yaml(&cases, "orders", &|c| format!(
            "provider: local, local: {{root: {}}}, batch_size: 1500, ",
            root.join(&c.name).display()
        ))
    );
    let p = Pipeline::new(&body);
    let (ipc, rows) = run_to_end(&p, "orders", &[]).await;
    assert_eq!(rows, 5000);
    for c in &cases {
        let files = files_under(&root.join(&c.name));
        // 5000 rows at 1500 per file: at least 4 files (more when batches straddle).
        check_case(&py, c, &ipc, rows, files, 4);
    }
}

/// Change events keep their nested before/after/source structs in Parquet and Avro, and
/// are flattened into dotted columns in CSV.
#[tokio::test]
async fn change_events_keep_their_structure() {
    let py = rivven_testkit::require!(rivven_testkit::python());
    let cases = vec![
        case("parquet", "zstd", "parquet: {compression: zstd}"),
        case("avro", "deflate", "avro: {codec: deflate}"),
        case("csv", "gzip", ""),
        case("jsonl", "none", ""),
    ];
    let p0 = Pipeline::new("");
    let root = p0.dir.path().join("out");
    let body = format!(
        "{}{}",
        datagen(
            "users",
            "users",
            3000,
            ", cdc_mode: true, stream_name: users"
        ),
        sinks_yaml(&cases, "users", &|c| format!(
            "provider: local, local: {{root: {}}}, batch_size: 100000, ",
            root.join(&c.name).display()
        ))
    );
    let p = Pipeline::new(&body);
    let (ipc, rows) = run_to_end(&p, "users", &[]).await;
    assert_eq!(rows, 3000);
    for c in &cases {
        check_case(&py, c, &ipc, rows, files_under(&root.join(&c.name)), 1);
    }
}

/// Hive-style directories by column value and by hour of a timestamp column; every file
/// holds only rows of its directory, and together they hold every row once.
#[tokio::test]
async fn partitioned_directories_hold_their_rows() {
    let py = rivven_testkit::require!(rivven_testkit::python());
    let p0 = Pipeline::new("");
    let root = p0.dir.path().join("out");
    let body = format!(
        "{}sinks:
  by_status:
    connector: object-storage
    topics: [orders]
    consumer_group: by_status
    start_offset: earliest
    config: {{provider: local, local: {{root: {root}}}, prefix: lake/, format: parquet, partitioning: field, partition_fields: [status, product]}}
  by_hour:
    connector: object-storage
    topics: [orders]
    consumer_group: by_hour
    start_offset: earliest
    config: {{provider: local, local: {{root: {root}}}, prefix: hourly, format: jsonl, partitioning: hour, timestamp_field: created_at}}
",
        datagen("orders", "orders", 4000, ""),
        root = root.display()
    );
    let p = Pipeline::new(&body);
    let (ipc, rows) = run_to_end(&p, "orders", &[]).await;
    let script = r#"
import json, sys, os, datetime
import pyarrow as pa, pyarrow.ipc as ipc, pyarrow.parquet as pq, pyarrow.json as pj
ref = ipc.open_file(open(sys.argv[1], "rb")).read_all()
root = sys.argv[2]
def walk(d):
    for dp, dn, fn in os.walk(d):
        dn[:] = [x for x in dn if not x.startswith(".")]
        for f in fn:
            yield os.path.join(dp, f)
seen = []
for path in walk(os.path.join(root, "lake", "orders")):
    parts = dict(p.split("=", 1) for p in os.path.relpath(path, root).split("/") if "=" in p)
    t = pq.read_table(path)
    for r in t.to_pylist():
        assert r["status"] == parts["status"] and r["product"] == parts["product"], (path, r)
        seen.append(r["sequence"])
assert sorted(seen) == sorted(ref.column("sequence").to_pylist()), "field partitions"
hours = []
for path in walk(os.path.join(root, "hourly", "orders")):
    rel = os.path.relpath(path, os.path.join(root, "hourly", "orders")).split("/")
    assert rel[0].startswith("dt=") and rel[1].startswith("hour="), rel
    t = pj.read_json(path, parse_options=pj.ParseOptions(explicit_schema=ref.schema))
    for r in t.to_pylist():
        ts = r["created_at"].astimezone(datetime.timezone.utc)
        assert rel[0] == "dt=" + ts.strftime("%Y-%m-%d") and rel[1] == "hour=" + ts.strftime("%H"), (rel, ts)
        hours.append(r["sequence"])
assert sorted(hours) == sorted(ref.column("sequence").to_pylist()), "hour partitions"
print(len(seen), len(hours))
"#;
    let out = py
        .run(script, &[ipc.to_str().unwrap(), root.to_str().unwrap()])
        .unwrap();
    assert_eq!(out.trim(), format!("{rows} {rows}"));
}

/// Every format and compression through a real S3-compatible server, plus a multipart upload
/// (a file larger than one 5 MiB part); objects are read from the server's storage.
#[tokio::test]
async fn formats_read_back_exactly_from_s3() {
    let py = rivven_testkit::require!(rivven_testkit::python());
    let s3 = rivven_testkit::require!(rivven_testkit::s3());
    let bucket = s3
        .create_bucket(&rivven_testkit::unique_name("os"))
        .unwrap();
    let mut cases = every_case();
    cases.push(multipart_case());
    let store = |c: &Case| {
        format!(
            "provider: s3, bucket: {bucket}, prefix: {name}/, {rows}s3: {{endpoint_url: '{ep}', region: us-east-1, access_key_id: {ak}, secret_access_key: {sk}}}, ",
            name = c.name,
            rows = rows_per_file(c),
            ep = s3.endpoint,
            ak = s3.access_key,
            sk = s3.secret_key,
        )
    };
    let body = format!(
        "{}{}",
        datagen("orders", "orders", 40_000, ""),
        sinks_yaml(&cases, "orders", &store)
    );
    let p = Pipeline::new(&body);
    let check = p.cmd(&["check"]);
    assert!(check.status.success(), "check: {}", stderr(&check));
    let (ipc, rows) = run_to_end(&p, "orders", &[]).await;
    check_remote_cases(&py, &cases, &ipc, rows, &|c| {
        files_under(&s3.root.join(&bucket).join(&c.name))
    });
}

/// kill -9 while files are being written and committed, five times, then a run to the
/// end: every row is in exactly one file (no duplicate, no gap).
fn crash_run(store_line: &str, list: &dyn Fn() -> Vec<PathBuf>, py: &rivven_testkit::Python) {
    const N: u64 = 60_000;
    let body = format!(
        "sources:\n  gen:\n    connector: datagen\n    topic: orders\n    config: {{pattern: orders, events_per_second: 15000, max_events: {N}, seed: 5}}
sinks:
  lake:
    connector: object-storage
    topics: [orders]
    consumer_group: lake
    start_offset: earliest
    config: {{{store_line}format: parquet, batch_size: 700, flush_interval_secs: 1}}
"
    );
    let p = Pipeline::new(&body);
    let (kills, progress) = crate::support::kill_9_runs(&p, || list().len());
    assert!(kills >= 4, "the run ended before it could be killed");
    assert!(
        progress.windows(2).all(|w| w[0] <= w[1]) && progress[progress.len() - 1] > 0,
        "no files between kills: {progress:?}"
    );
    let out = p.cmd(&["run"]);
    assert!(out.status.success(), "final run: {}", stderr(&out));
    let files = list();
    let script = r#"
import json, sys
import pyarrow.parquet as pq
seqs = []
for path in json.loads(sys.argv[1]):
    seqs.extend(pq.read_table(path).column("sequence").to_pylist())
print(json.dumps(seqs))
"#;
    let names: Vec<String> = files.iter().map(|f| f.display().to_string()).collect();
    let out = py
        .run(script, &[&serde_json::to_string(&names).unwrap()])
        .unwrap();
    let mut seqs: Vec<i64> = serde_json::from_str(out.trim()).unwrap();
    let total = seqs.len();
    seqs.sort_unstable();
    seqs.dedup();
    assert_eq!(
        total - seqs.len(),
        0,
        "duplicate rows across {} files",
        files.len()
    );
    assert_eq!(seqs, (0..N as i64).collect::<Vec<_>>(), "missing rows");
    eprintln!(
        "kill -9 x{kills}: {} files, {total} rows, 0 duplicates, 0 missing (files after each kill: {progress:?})",
        files.len()
    );
}

#[test]
fn kill_9_during_local_writes_leaves_every_row_once() {
    let py = rivven_testkit::require!(rivven_testkit::python());
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().to_path_buf();
    let r2 = root.clone();
    crash_run(
        &format!("provider: local, local: {{root: {}}}, ", root.display()),
        &move || files_under(&r2),
        &py,
    );
}

#[test]
fn kill_9_during_s3_writes_leaves_every_row_once() {
    let py = rivven_testkit::require!(rivven_testkit::python());
    let s3 = rivven_testkit::require!(rivven_testkit::s3());
    let bucket = s3
        .create_bucket(&rivven_testkit::unique_name("crash"))
        .unwrap();
    let dir = s3.root.join(&bucket);
    crash_run(
        &format!(
            "provider: s3, bucket: {bucket}, s3: {{endpoint_url: '{}', access_key_id: {}, secret_access_key: {}}}, ",
            s3.endpoint, s3.access_key, s3.secret_key
        ),
        &move || files_under(&dir),
        &py,
    );
}

/// `check` names the key path and line of each dead or missing key.
#[test]
fn check_rejects_dead_and_missing_keys() {
    let cases = [
        (
            "connector: object-storage\n    config: {format: parquet, compression: gzip, local: {root: /tmp/x}, provider: local}",
            "sinks.s.config.compression",
            "parquet.compression",
        ),
        (
            "connector: s3\n    config: {format: jsonl}",
            "sinks.s.config.bucket",
            "required for provider s3",
        ),
        (
            "connector: gcs\n    config: {bucket: b, region: eu}",
            "sinks.s.config.region",
            "does not apply to provider gcs",
        ),
        (
            "connector: object-storage\n    config: {provider: local, local: {root: /tmp/x}, avro: {codec: zstd}}",
            "sinks.s.config.avro",
            "format is jsonl",
        ),
        (
            "connector: object-storage\n    config: {provider: local, local: {root: /tmp/x}, partitioning: field}",
            "sinks.s.config.partition_fields",
            "required with partitioning: field",
        ),
    ];
    for (sink, path, message) in cases {
        let p = Pipeline::new(&format!(
            "sources:\n  g:\n    connector: datagen\n    topic: t\nsinks:\n  s:\n    {sink}\n    topics: [t]\n    consumer_group: s\n"
        ));
        let out = p.cmd(&["check"]);
        let err = stderr(&out);
        assert_eq!(out.status.code(), Some(2), "{sink}: {err}");
        assert!(err.contains(path) && err.contains(message), "{sink}: {err}");
        assert!(err.contains("p.yaml:"), "no file position: {err}");
    }
}

/// Azure Blob through Azurite (the `azure-blob` connector in emulator mode), including a
/// multipart (block list) upload; blobs are downloaded with the Azure SDK for Python and
/// read back like the others.
#[tokio::test]
async fn formats_read_back_exactly_from_azurite() {
    let py = rivven_testkit::require!(rivven_testkit::python());
    let az = rivven_testkit::require!(rivven_testkit::azurite());
    let container = rivven_testkit::unique_name("az").replace('_', "-");
    let admin = r#"
import json, os, sys
from azure.storage.blob import BlobServiceClient
svc = BlobServiceClient.from_connection_string(sys.argv[1])
if sys.argv[2] == "create":
    svc.create_container(sys.argv[3])
    print("ok")
else:
    c = svc.get_container_client(sys.argv[3])
    out = []
    for b in sorted(c.list_blobs(name_starts_with=sys.argv[4]), key=lambda b: b.name):
        path = os.path.join(sys.argv[5], b.name.replace("/", "_"))
        with open(path, "wb") as f:
            f.write(c.download_blob(b.name).readall())
        out.append(path)
    print(json.dumps(out))
"#;
    let cs = az.connection_string();
    py.run(admin, &[&cs, "create", &container]).unwrap();
    let cases = vec![
        case("jsonl", "gzip", ""),
        case("csv", "none", ""),
        case("parquet", "snappy", "parquet: {compression: snappy}"),
        case("avro", "deflate", "avro: {codec: deflate}"),
        multipart_case(),
    ];
    let store = |c: &Case| {
        format!(
            "container: {container}, prefix: {}/, {}azure: {{use_emulator: true}}, ",
            c.name,
            rows_per_file(c)
        )
    };
    let body = format!(
        "{}{}",
        datagen("orders", "orders", 40_000, ""),
        sinks_yaml(&cases, "orders", &store)
            .replace("connector: object-storage", "connector: azure-blob")
    );
    let p = Pipeline::new(&body);
    let env = [("AZURITE_BLOB_STORAGE_URL", az.blob_url.as_str())];
    let check = p.cmd_env(&["check"], &env);
    assert!(check.status.success(), "check: {}", stderr(&check));
    let (ipc, rows) = run_to_end(&p, "orders", &env).await;
    check_remote_cases(&py, &cases, &ipc, rows, &|c| {
        let dl = p.dir.path().join(format!("dl-{}", c.name));
        std::fs::create_dir_all(&dl).unwrap();
        let prefix = format!("{}/", c.name);
        let listed = py
            .run(
                admin,
                &[&cs, "get", &container, &prefix, dl.to_str().unwrap()],
            )
            .unwrap();
        serde_json::from_str(listed.trim()).unwrap()
    });
}
