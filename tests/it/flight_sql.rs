//! Flight SQL on the Flight endpoint of a running process, through ADBC's Flight SQL driver
//! (the Go driver behind `adbc-driver-flightsql`) and pyarrow.flight: exact answers over a
//! 5M-row topic checked against a plain `DoGet` of the same offsets, `LIMIT` reading one
//! frame (bytes read shown by `EXPLAIN ANALYZE`), `system.pipelines`, prepared
//! statements, catalog metadata, refused writes and a wrong token.

use crate::support::{free_port, unsafe_kill, Pipeline};

const ROWS: u64 = 5_000_000;

const SQL_CLIENT: &str = r#"
import json, re, sys, time
import adbc_driver_flightsql.dbapi as flightsql
import adbc_driver_manager
import pyarrow.compute as pc
import pyarrow.flight as fl

port, token, rows = sys.argv[1], sys.argv[2], int(sys.argv[3])
uri = f"grpc://127.0.0.1:{port}"
def connect(tok):
    return flightsql.connect(uri, db_kwargs={"adbc.flight.sql.authorization_header": f"Bearer {tok}"})
def query(conn, sql):
    with conn.cursor() as cur:
        cur.execute(sql)
        return cur.fetch_arrow_table()

out = {}
deadline = time.time() + 600
conn = None
# Wait for the endpoint, then for `gen` to finish writing its rows.
while True:
    try:
        conn = conn or connect(token)
        t = query(conn, "SELECT state, events FROM system.pipelines WHERE name = 'gen'")
        if t.num_rows and t.column("state")[0].as_py() == "finished":
            break
    except adbc_driver_manager.Error:
        conn = None
    if time.time() > deadline:
        raise SystemExit("gen did not finish in time")
    time.sleep(1)

# An aggregate over an offset range with a data predicate, against the same offsets read
# through a plain DoGet.
lo, hi = 1000, 1_000_000
t = query(conn, f"SELECT count(*) AS n, max(_offset) AS top, min(_offset) AS bottom, sum(quantity) AS q "
                f"FROM orders WHERE _offset >= {lo} AND _offset < {hi} AND quantity > 5")
got = {k: t.column(k)[0].as_py() for k in t.column_names}
c = fl.connect(uri)
opts = fl.FlightCallOptions(headers=[(b"authorization", f"Bearer {token}".encode())])
ref = c.do_get(fl.Ticket(json.dumps({"topic": "orders", "from": lo, "to": hi})), opts).read_all()
keep = pc.greater(ref.column("quantity"), 5)
# One source into one partition: a row's sequence is its offset.
offsets = pc.cast(ref.column("sequence"), "int64")
want = {"n": pc.sum(pc.cast(keep, "int64")).as_py(),
        "top": pc.max(pc.filter(offsets, keep)).as_py(),
        "bottom": pc.min(pc.filter(offsets, keep)).as_py(),
        "q": pc.sum(pc.filter(ref.column("quantity"), keep)).as_py()}
out["aggregate"] = got
out["aggregate_want"] = want
out["total"] = query(conn, "SELECT count(*) AS n, max(_offset) AS m FROM orders").to_pylist()[0]

# LIMIT reads one frame; a full scan reads every frame.
def bytes_read(sql):
    plan = query(conn, "EXPLAIN ANALYZE " + sql)
    text = "\n".join(str(v) for col in plan.columns for v in col.to_pylist())
    # Counts print as 730.2 K, 445.8 M, ...
    scale = {"": 1, "K": 1e3, "M": 1e6, "G": 1e9, "T": 1e12}
    return sum(float(v) * scale[u] for v, u in re.findall(r"bytes_read=([\d.]+) ?([KMGT]?)\b", text)), text
limited, plan = bytes_read("SELECT * FROM orders LIMIT 10")
full, full_plan = bytes_read("SELECT count(*) FROM orders")
out["limit_bytes"], out["full_bytes"] = limited, full
out["plans"] = [plan, full_plan]
first = query(conn, "SELECT _offset, sequence FROM orders LIMIT 10")
out["limit_rows"] = first.column("_offset").to_pylist()
out["tail"] = query(conn, f"SELECT sequence FROM orders WHERE _offset BETWEEN {rows - 3} AND {rows + 10} ORDER BY _offset").column("sequence").to_pylist()
out["recent"] = query(conn, "SELECT count(*) AS n FROM orders WHERE _timestamp >= now() - INTERVAL '1 hour'").column("n")[0].as_py()
out["future"] = query(conn, "SELECT count(*) AS n FROM orders WHERE _timestamp > now() + INTERVAL '1 hour'").column("n")[0].as_py()
out["partition"] = query(conn, "SELECT count(*) AS n FROM orders WHERE _partition IN (1, 2)").column("n")[0].as_py()

# system.pipelines, a prepared statement, catalog metadata.
out["pipelines"] = sorted(query(conn, "SELECT name, kind, state FROM system.pipelines").to_pylist(), key=lambda r: r["name"])
with conn.cursor() as cur:
    cur.adbc_prepare("SELECT sequence FROM orders WHERE _offset < 3")
    cur.execute("SELECT sequence FROM orders WHERE _offset < 3")
    out["prepared"] = cur.fetch_arrow_table().column("sequence").to_pylist()
objects = conn.adbc_get_objects(depth="tables").read_all().to_pylist()
out["objects"] = sorted(
    f"{cat['catalog_name']}.{s['db_schema_name']}.{t['table_name']}"
    for cat in objects for s in (cat["catalog_db_schemas"] or []) for t in (s["db_schema_tables"] or []))
info = conn.adbc_get_info()
out["vendor"] = str(info.get("vendor_name"))

def refused(sql):
    try:
        query(conn, sql)
        return "served"
    except adbc_driver_manager.Error as e:
        return str(e)
out["drop"] = refused("DROP TABLE orders")
out["insert"] = refused("INSERT INTO orders (sequence) VALUES (1)")
out["missing"] = refused("SELECT * FROM nosuch")
try:
    query(connect("wrong"), "SELECT 1")
    out["wrong_token"] = "served"
except adbc_driver_manager.Error as e:
    out["wrong_token"] = "refused" if "nauthenticated" in str(e) or "UNAUTHENTICATED" in str(e) else str(e)
print(json.dumps(out, default=str))
"#;

/// A 5M-row topic queried through ADBC while the process runs.
#[test]
fn flight_sql_answers_exactly_and_reads_only_what_a_query_needs() {
    let py = rivven_testkit::require!(rivven_testkit::python());
    let port = free_port();
    let p = Pipeline::with_settings(
        &format!(
            "sources:
  gen:
    connector: datagen
    topic: orders
    config: {{pattern: orders, events_per_second: 0, max_events: {ROWS}, seed: 3}}
  ticks:
    connector: datagen
    topic: ticks
    config: {{pattern: sequence, events_per_second: 2}}
"
        ),
        &format!("  flight: {{enabled: true, port: {port}, token: sql-token}}\n"),
    );
    let log = p.dir.path().join("run.out");
    let child = p.spawn_run(&log);
    let result = py.run(
        SQL_CLIENT,
        &[&port.to_string(), "sql-token", &ROWS.to_string()],
    );
    assert_eq!(unsafe_kill(child.id(), libc::SIGTERM), 0);
    let out = child.wait_with_output().unwrap();
    let got: serde_json::Value = serde_json::from_str(result.unwrap().trim()).unwrap();
    assert_eq!(got["aggregate"], got["aggregate_want"], "{got}");
    assert!(got["aggregate"]["n"].as_u64().unwrap() > 100_000, "{got}");
    assert_eq!(
        got["total"],
        serde_json::json!({"n": ROWS, "m": ROWS - 1}),
        "{got}"
    );
    // LIMIT 10 reads the first frame only.
    let (limited, full) = (
        got["limit_bytes"].as_f64().unwrap(),
        got["full_bytes"].as_f64().unwrap(),
    );
    eprintln!("LIMIT 10 read {limited} bytes, a full scan {full}");
    assert!(limited > 0.0, "{got}");
    assert!(
        limited * 100.0 < full,
        "LIMIT read {limited} of {full} bytes: {}",
        got["plans"]
    );
    assert_eq!(
        got["limit_rows"],
        serde_json::json!([0, 1, 2, 3, 4, 5, 6, 7, 8, 9]),
        "{got}"
    );
    assert_eq!(
        got["tail"],
        serde_json::json!([ROWS - 3, ROWS - 2, ROWS - 1]),
        "{got}"
    );
    assert_eq!(got["recent"], ROWS, "{got}");
    assert_eq!(got["future"], 0, "{got}");
    assert_eq!(got["partition"], 0, "{got}");
    assert_eq!(
        got["pipelines"],
        serde_json::json!([
            {"name": "gen", "kind": "source", "state": "finished"},
            {"name": "ticks", "kind": "source", "state": "running"},
        ]),
        "{got}"
    );
    assert_eq!(got["prepared"], serde_json::json!([0, 1, 2]), "{got}");
    let objects = got["objects"].to_string();
    for t in [
        "rivven.topics.orders",
        "rivven.topics.ticks",
        "rivven.system.pipelines",
    ] {
        assert!(objects.contains(t), "{got}");
    }
    assert!(got["vendor"].as_str().unwrap().contains("rivven"), "{got}");
    assert!(
        got["drop"].as_str().unwrap().contains("DDL not supported"),
        "{got}"
    );
    assert!(
        got["insert"]
            .as_str()
            .unwrap()
            .contains("DML not supported"),
        "{got}"
    );
    assert!(got["missing"].as_str().unwrap().contains("nosuch"), "{got}");
    assert_eq!(got["wrong_token"], "refused", "{got}");
    let logs = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stderr),
        std::fs::read_to_string(&log).unwrap_or_default()
    );
    assert!(!logs.contains("sql-token"), "token logged");
}
