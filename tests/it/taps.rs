//! Taps of a running postgres-cdc pipeline, read by pyarrow.flight, compared value by value
//! with what the next stage got: the `source` tap through the source's filter equals the
//! `transformed` tap, which equals the rows the topic holds, and the `sink` tap equals the
//! rows the object-storage sink wrote to its Parquet files (after its `insert_field`, which
//! adds the field to the change event's row images).

use crate::postgres::{database, pg_source};
use crate::support::{free_port, Pipeline};
use std::io::BufRead;
use std::time::{Duration, Instant};

/// Rows inserted while the taps are read; every third one (by id) is filtered out.
const N: u64 = 3000;

const CLIENT: &str = r#"
import json, os, sys, threading, time, urllib.request
import pyarrow as pa, pyarrow.compute as pc, pyarrow.flight as fl, pyarrow.parquet as pq
port, health, n, root = sys.argv[1], sys.argv[2], int(sys.argv[3]), sys.argv[4]
c = fl.connect(f"grpc://127.0.0.1:{port}")
kept = n - n // 3
want = {"pg.source": n, "pg.transformed": kept, "out.sink": kept}
# Each call returns at once: a tap that has seen a batch sends its schema first.
readers = {t: c.do_get(fl.Ticket(json.dumps({"tap": t}))) for t in want}
print("subscribed", flush=True)
got, dropped = {}, {}
def read(t):
    chunks, rows = [], 0
    while rows < want[t]:
        ch = readers[t].read_chunk()
        if ch.data is None or ch.data.num_rows == 0:
            continue
        chunks.append(ch.data)
        rows += ch.data.num_rows
        dropped[t] = json.loads(ch.app_metadata.to_pybytes())["dropped"]
    got[t] = pa.Table.from_batches(chunks)
threads = [threading.Thread(target=read, args=(t,)) for t in want]
for th in threads: th.start()
for th in threads: th.join(120)
out = {"rows": {t: got[t].num_rows for t in got}, "dropped": dropped}
src, tr, sink = (got[t].to_pylist() for t in ("pg.source", "pg.transformed", "out.sink"))
# source -> transformed: the filter `after.id % 3 <> 0`, nothing else.
out["source_filtered_is_transformed"] = [r for r in src if r["after"]["id"] % 3 != 0] == tr
# transformed -> topic: the rows after the warm-up row (offset 0), exactly.
topic = c.do_get(fl.Ticket(json.dumps({"topic": "changes", "from": 1}))).read_all().to_pylist()
out["transformed_is_topic"] = topic == tr
# sink tap -> Parquet files, once the sink has made every row durable.
deadline = time.time() + 120
while True:
    st = json.load(urllib.request.urlopen(f"http://127.0.0.1:{health}/status"))
    out_st = next(p for p in st["pipelines"] if p["name"] == "out")
    if out_st["events"] >= kept + 1 and out_st["lag"] == 0:
        break
    if time.time() > deadline:
        raise SystemExit("the sink did not catch up")
    time.sleep(0.2)
files = [os.path.join(d, f) for d, _, fs in os.walk(root) for f in fs if f.endswith(".parquet")]
written = pa.concat_tables([pq.read_table(f) for f in files]).to_pylist()
written = sorted((r for r in written if r["after"]["id"] <= n), key=lambda r: r["after"]["id"])
out["sink_is_written"] = sorted(sink, key=lambda r: r["after"]["id"]) == written
out["sink_after"] = [f.name for f in got["out.sink"].schema.field("after").type]
out["written"] = len(written)
out["first_diff"] = next((str((a, b)) for a, b in zip(sorted(sink, key=lambda r: r["after"]["id"]), written) if a != b), None)
metrics = urllib.request.urlopen(f"http://127.0.0.1:{health}/metrics").read().decode()
series = 'rivven_connect_commit_to_durable_seconds_count{connector="postgres-cdc",pipeline="pg"} '
out["commit_to_durable_count"] = next((float(l[len(series):]) for l in metrics.splitlines() if l.startswith(series)), None)
print(json.dumps(out, default=str))
"#;

#[test]
fn taps_of_a_postgres_cdc_pipeline_carry_exactly_what_the_next_stage_got() {
    let py = rivven_testkit::require!(rivven_testkit::python());
    let Some(temp) = database(
        "taps",
        &["CREATE TABLE items (id int PRIMARY KEY, v text, amount numeric(10,2), at timestamptz)"],
    ) else {
        return;
    };
    let (pg, db) = (&temp.pg, temp.name.as_str());
    let (port, out_dir) = (free_port(), tempfile::tempdir().unwrap());
    let body = format!(
        "{}    transforms:
      - type: filter
        config: {{condition: \"after.id % 3 <> 0\"}}
sinks:
  out:
    connector: object-storage
    topics: [changes]
    consumer_group: out
    transforms:
      - type: insert_field
        config: {{static_field: tapped, static_value: yes}}
    config: {{provider: local, local: {{root: {}}}, format: parquet, flush_interval_secs: 1}}
",
        pg_source(pg, db, "taps_slot", "      tables: [items]\n"),
        out_dir.path().display()
    );
    let p = Pipeline::with_settings(
        &body,
        &format!("  flight: {{enabled: true, port: {port}}}\n"),
    );
    let mut child = p.spawn_run(&p.dir.path().join("run.out"));
    // A warm-up row through every stage, so that each tap knows its schema.
    pg.psql(
        db,
        "INSERT INTO items VALUES (1000001, 'warm', 1.25, now())",
    )
    .unwrap();
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let o = p.cmd(&["status", "--json"]);
        if o.status.success() {
            let v: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
            let out = v["pipelines"]
                .as_array()
                .unwrap()
                .iter()
                .find(|p| p["name"] == "out")
                .cloned();
            if out.is_some_and(|o| o["events"].as_u64() >= Some(1)) {
                break;
            }
        }
        assert!(
            Instant::now() < deadline,
            "the warm-up row never reached the sink"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    let mut client = std::process::Command::new(&py.python)
        .arg("-c")
        .arg(CLIENT)
        .args([
            &port.to_string(),
            &p.health_port.to_string(),
            &N.to_string(),
            &out_dir.path().to_string_lossy().to_string(),
        ])
        .stdout(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let mut lines = std::io::BufReader::new(client.stdout.take().unwrap()).lines();
    assert_eq!(lines.next().unwrap().unwrap(), "subscribed");
    for (lo, hi) in [(1, 1000), (1001, 2000), (2001, N)] {
        pg.psql(
            db,
            &format!(
                "INSERT INTO items SELECT g, 'v' || g, g * 1.5, now() - g * interval '1 second' \
                 FROM generate_series({lo}, {hi}) g"
            ),
        )
        .unwrap();
    }
    let result = lines.next().map(|l| l.unwrap()).unwrap_or_default();
    let status = client.wait().unwrap();
    child.kill().unwrap();
    child.wait().unwrap();
    assert!(status.success(), "client failed: {result}");
    let got: serde_json::Value = serde_json::from_str(&result).unwrap();
    let kept = N - N / 3;
    assert_eq!(
        got["rows"],
        serde_json::json!({"pg.source": N, "pg.transformed": kept, "out.sink": kept}),
        "{got}"
    );
    assert_eq!(
        got["dropped"],
        serde_json::json!({"pg.source": 0, "pg.transformed": 0, "out.sink": 0}),
        "{got}"
    );
    assert_eq!(got["source_filtered_is_transformed"], true, "{got}");
    assert_eq!(got["transformed_is_topic"], true, "{got}");
    assert_eq!(got["written"], kept, "{got}");
    assert_eq!(got["sink_is_written"], true, "{got}");
    // Every streamed change observed its commit-to-durable latency, those the filter
    // dropped too (their position became durable), and the warm-up row unless the
    // snapshot, which has no commit times, read it.
    let observed = got["commit_to_durable_count"].as_f64().unwrap() as u64;
    assert!((N..=N + 1).contains(&observed), "{got}");
    // The sink's insert_field went into the row image.
    assert!(got["sink_after"].to_string().contains("tapped"), "{got}");
}
