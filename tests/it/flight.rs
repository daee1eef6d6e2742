//! The Arrow Flight endpoint of a running process, read by pyarrow.flight: topics listed
//! with their schema and offsets, a partition read exactly, a live tail, a wrong token
//! refused, and an open listener off loopback rejected by `check`.

use crate::support::{free_port, stderr, stdout, unsafe_kill, Pipeline};

const CLIENT: &str = r#"
import json, sys, time
import pyarrow.flight as fl
port, token = sys.argv[1], sys.argv[2]
c = fl.connect(f"grpc://127.0.0.1:{port}")
ok = fl.FlightCallOptions(headers=[(b"authorization", f"Bearer {token}".encode())])
bad = fl.FlightCallOptions(headers=[(b"authorization", b"Bearer nope")])
out = {}
# Wait until the endpoint is up and the topic holds some rows.
deadline = time.time() + 60
while True:
    try:
        info = c.get_flight_info(fl.FlightDescriptor.for_path("orders"), ok)
        if info.total_records >= 2000:
            break
    except fl.FlightError:
        pass
    if time.time() > deadline:
        raise SystemExit("no rows in time")
    time.sleep(0.2)
for opts, key in ((bad, "wrong_token"), (fl.FlightCallOptions(), "no_token")):
    try:
        list(c.list_flights(options=opts))
        out[key] = "accepted"
    except fl.FlightUnauthenticatedError as e:
        out[key] = "refused"
out["flights"] = [f.descriptor.path[0].decode() for f in c.list_flights(options=ok) if len(f.descriptor.path) == 1]
out["schema"] = c.get_schema(fl.FlightDescriptor.for_path("orders"), ok).schema.names
out["endpoints"] = len(info.endpoints)
ticket = json.loads(info.endpoints[0].ticket.ticket)
table = c.do_get(info.endpoints[0].ticket, ok).read_all()
seq = table.column("sequence").to_pylist()
out["range"] = [ticket["from"], ticket["to"]]
out["read_exact"] = seq == list(range(ticket["from"], ticket["to"]))
out["rows"] = table.num_rows
# Follow up to an offset not yet written: the stream waits for the rows, then ends.
end = ticket["to"] + 1500
follow = fl.Ticket(json.dumps({"topic": "orders", "partition": 0, "from": ticket["to"], "to": end, "follow": True}))
got = c.do_get(follow, ok).read_all().column("sequence").to_pylist()
out["follow_contiguous"] = got == list(range(ticket["to"], end))
# A range past the end holds no rows: the stream still has the topic's schema.
empty = c.do_get(fl.Ticket(json.dumps({"topic": "orders", "from": 10**12})), ok).read_all()
out["empty_range"] = [empty.num_rows, "sequence" in empty.schema.names]
try:
    c.do_get(fl.Ticket("nosuch"), ok).read_all()
    out["missing_topic"] = "served"
except Exception as e:  # pyarrow raises NOT_FOUND as ArrowKeyError
    out["missing_topic"] = "not found" if "no topic" in str(e) else str(e)
print(json.dumps(out))
"#;

#[test]
fn flight_serves_topics_of_a_running_process() {
    let py = rivven_testkit::require!(rivven_testkit::python());
    let port = free_port();
    let p = Pipeline::with_settings(
        "sources:
  gen:
    connector: datagen
    topic: orders
    config: {pattern: orders, events_per_second: 2000, max_events: 200000, seed: 5}
sinks:
  out:
    connector: stdout
    topics: [orders]
    consumer_group: out
    config: {format: json}
",
        &format!("  flight: {{enabled: true, port: {port}, token: s3cret-token}}\n"),
    );
    let log = p.dir.path().join("run.out");
    let child = p.spawn_run(&log);
    let result = py.run(CLIENT, &[&port.to_string(), "s3cret-token"]);
    // `tap` through the same endpoint, with the token from the configuration.
    let tapped = p.cmd(&[
        "tap", "orders", "--from", "0", "--limit", "5", "--format", "json",
    ]);
    let live = p.cmd(&["tap", "orders", "--limit", "3", "--format", "table"]);
    let missing = p.cmd(&["tap", "nosuch", "--limit", "1"]);
    assert_eq!(unsafe_kill(child.id(), libc::SIGTERM), 0);
    let out = child.wait_with_output().unwrap();
    let got: serde_json::Value = serde_json::from_str(result.unwrap().trim()).unwrap();
    assert_eq!(got["wrong_token"], "refused", "{got}");
    assert_eq!(got["no_token"], "refused", "{got}");
    assert_eq!(got["flights"], serde_json::json!(["orders"]), "{got}");
    assert!(got["schema"].to_string().contains("\"sequence\""), "{got}");
    assert_eq!(got["endpoints"], 1, "{got}");
    assert_eq!(got["read_exact"], true, "{got}");
    assert!(got["rows"].as_u64().unwrap() >= 2000, "{got}");
    assert_eq!(got["follow_contiguous"], true, "{got}");
    assert_eq!(got["missing_topic"], "not found", "{got}");
    assert_eq!(got["empty_range"], serde_json::json!([0, true]), "{got}");
    assert!(tapped.status.success(), "{}", stderr(&tapped));
    let seqs: Vec<u64> = stdout(&tapped)
        .lines()
        .map(|l| {
            serde_json::from_str::<serde_json::Value>(l).unwrap()["sequence"]
                .as_u64()
                .unwrap()
        })
        .collect();
    assert_eq!(seqs, [0, 1, 2, 3, 4]);
    assert!(live.status.success(), "{}", stderr(&live));
    assert!(stdout(&live).contains("| sequence"), "{}", stdout(&live));
    assert!(!missing.status.success());
    assert!(
        stderr(&missing).contains("no topic or tap `nosuch`"),
        "{}",
        stderr(&missing)
    );
    // The token never reaches the logs.
    let logs = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stderr),
        std::fs::read_to_string(&log).unwrap_or_default()
    );
    assert!(!logs.contains("s3cret-token"), "token logged");
}

#[test]
fn an_open_flight_listener_off_loopback_is_refused() {
    let p = Pipeline::with_settings(
        "sources:
  gen:
    connector: datagen
    topic: orders
    config: {pattern: orders, max_events: 10}
",
        "  flight: {enabled: true, host: 0.0.0.0}\n",
    );
    let out = p.cmd(&["check"]);
    let text = format!("{}{}", stdout(&out), stderr(&out));
    assert!(!out.status.success(), "{text}");
    assert!(text.contains("settings.flight.token"), "{text}");
    // An unknown key is rejected, not ignored.
    let p = Pipeline::with_settings(
        "sources:
  gen:
    connector: datagen
    topic: orders
    config: {pattern: orders, max_events: 10}
",
        "  flight: {enabled: true, tls: {cert: a.pem, key: b.pem, ca: c.pem}}\n",
    );
    let out = p.cmd(&["check"]);
    let text = format!("{}{}", stdout(&out), stderr(&out));
    assert!(!out.status.success(), "{text}");
    assert!(
        text.contains("settings.flight.tls") && text.contains("ca"),
        "{text}"
    );
}

const TLS_CLIENT: &str = r#"
import json, sys, time
import pyarrow.flight as fl
port, cert = sys.argv[1], open(sys.argv[2], "rb").read()
out = {}
deadline = time.time() + 60
c = fl.connect(f"grpc+tls://127.0.0.1:{port}", tls_root_certs=cert)
while True:
    try:
        out["flights"] = [f.descriptor.path[0].decode() for f in c.list_flights() if len(f.descriptor.path) == 1]
        break
    except fl.FlightUnavailableError:
        if time.time() > deadline:
            raise
        time.sleep(0.2)
try:
    list(fl.connect(f"grpc://127.0.0.1:{port}").list_flights())
    out["plain"] = "served"
except Exception:
    out["plain"] = "refused"
print(json.dumps(out))
"#;

/// `flight.tls`: the endpoint speaks gRPC over TLS with the configured certificate; a
/// plain-text client gets nothing.
#[test]
fn flight_over_tls() {
    let py = rivven_testkit::require!(rivven_testkit::python());
    let dir = tempfile::tempdir().unwrap();
    let (cert, key) = (dir.path().join("cert.pem"), dir.path().join("key.pem"));
    let made = std::process::Command::new("openssl")
        .args([
            "req",
            "-x509",
            "-newkey",
            "ec",
            "-pkeyopt",
            "ec_paramgen_curve:prime256v1",
        ])
        .args(["-nodes", "-days", "1", "-subj", "/CN=localhost"])
        .args(["-addext", "subjectAltName=IP:127.0.0.1,DNS:localhost"])
        .arg("-keyout")
        .arg(&key)
        .arg("-out")
        .arg(&cert)
        .output()
        .unwrap();
    assert!(made.status.success(), "{}", stderr(&made));
    let port = free_port();
    let p = Pipeline::with_settings(
        "sources:
  gen:
    connector: datagen
    topic: orders
    config: {pattern: orders, events_per_second: 100, max_events: 100000}
",
        &format!(
            "  flight: {{enabled: true, port: {port}, tls: {{cert: {}, key: {}}}}}\n",
            cert.display(),
            key.display()
        ),
    );
    let child = p.spawn_run(&p.dir.path().join("run.out"));
    let result = py.run(TLS_CLIENT, &[&port.to_string(), &cert.to_string_lossy()]);
    assert_eq!(unsafe_kill(child.id(), libc::SIGTERM), 0);
    child.wait_with_output().unwrap();
    let got: serde_json::Value = serde_json::from_str(result.unwrap().trim()).unwrap();
    assert_eq!(got["flights"], serde_json::json!(["orders"]), "{got}");
    assert_eq!(got["plain"], "refused", "{got}");
}

const TAP_CLIENT: &str = r#"
import json, sys, time
import pyarrow.flight as fl
c = fl.connect(f"grpc://127.0.0.1:{sys.argv[1]}")
deadline = time.time() + 60
while True:
    try:
        paths = [[p.decode() for p in f.descriptor.path] for f in c.list_flights()]
        break
    except fl.FlightUnavailableError:
        if time.time() > deadline:
            raise
        time.sleep(0.2)
out = {"taps": sorted(p[1] for p in paths if p[0] == "tap")}
for tap in ("gen.source", "gen.transformed", "out.sink"):
    reader = c.do_get(fl.Ticket(json.dumps({"tap": tap})))
    rows, cols, meta = [], None, []
    while len(rows) < 300:
        chunk = reader.read_chunk()
        cols = chunk.data.schema.names
        rows.extend(chunk.data.column("quantity").to_pylist())
        meta.append(json.loads(chunk.app_metadata.to_pybytes()))
    reader.cancel()
    out[tap] = {"min_quantity": min(rows), "columns": cols, "dropped_key": all("dropped" in m for m in meta)}
out["sink_tap_schema"] = c.get_schema(fl.FlightDescriptor.for_path("tap", "out.sink")).schema.names
try:
    c.do_get(fl.Ticket(json.dumps({"tap": "gen.nosuch"}))).read_all()
    out["missing"] = "served"
except Exception as e:
    out["missing"] = "not found" if "no tap" in str(e) else str(e)
print(json.dumps(out))
"#;

/// Taps of a running pipeline's stages: the source as decoded, after its transforms (a
/// filter) and as the sink receives it (after the sink's own transform), each live.
#[test]
fn taps_show_each_stage_live() {
    let py = rivven_testkit::require!(rivven_testkit::python());
    let port = free_port();
    let p = Pipeline::with_settings(
        "sources:
  gen:
    connector: datagen
    topic: orders
    config: {pattern: orders, events_per_second: 3000, max_events: 1000000, seed: 5}
    transforms:
      - type: filter
        config: {condition: \"quantity > 5\"}
sinks:
  out:
    connector: stdout
    topics: [orders]
    consumer_group: out
    transforms:
      - type: insert_field
        config: {static_field: tapped, static_value: yes}
",
        &format!("  flight: {{enabled: true, port: {port}}}\n"),
    );
    let child = p.spawn_run(&p.dir.path().join("run.out"));
    let result = py.run(TAP_CLIENT, &[&port.to_string()]);
    let tapped = p.cmd(&["tap", "out.sink", "--limit", "4", "--format", "json"]);
    assert_eq!(unsafe_kill(child.id(), libc::SIGTERM), 0);
    child.wait_with_output().unwrap();
    let got: serde_json::Value = serde_json::from_str(result.unwrap().trim()).unwrap();
    assert_eq!(
        got["taps"],
        serde_json::json!([
            "gen.dead_letter",
            "gen.source",
            "gen.transformed",
            "out.dead_letter",
            "out.sink"
        ]),
        "{got}"
    );
    // Quantities are 1-10: the source tap sees the small ones, the later stages do not.
    assert!(
        got["gen.source"]["min_quantity"].as_u64().unwrap() <= 5,
        "{got}"
    );
    assert!(
        got["gen.transformed"]["min_quantity"].as_u64().unwrap() > 5,
        "{got}"
    );
    assert!(
        got["out.sink"]["min_quantity"].as_u64().unwrap() > 5,
        "{got}"
    );
    assert!(
        got["out.sink"]["columns"].to_string().contains("tapped"),
        "{got}"
    );
    assert!(
        !got["gen.transformed"]["columns"]
            .to_string()
            .contains("tapped"),
        "{got}"
    );
    for tap in ["gen.source", "gen.transformed", "out.sink"] {
        assert_eq!(got[tap]["dropped_key"], true, "{got}");
    }
    assert_eq!(got["missing"], "not found", "{got}");
    assert_eq!(
        got["sink_tap_schema"], got["out.sink"]["columns"],
        "GetSchema of a tap: {got}"
    );
    assert!(tapped.status.success(), "{}", stderr(&tapped));
    let rows: Vec<serde_json::Value> = stdout(&tapped)
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(rows.len(), 4, "{rows:?}");
    assert!(
        rows.iter()
            .all(|r| r["tapped"] == "yes" && r["quantity"].as_u64().unwrap() > 5),
        "{rows:?}"
    );
}

/// Two sources of different schemas into one topic: a `DoGet` of the topic sends a new
/// schema message where the schema changes, and `tap` follows it.
#[test]
fn tap_follows_a_schema_change_mid_stream() {
    let port = free_port();
    let p = Pipeline::with_settings(
        "sources:
  orders:
    connector: datagen
    topic: mixed
    config: {pattern: orders, events_per_second: 0, max_events: 20}
  users:
    connector: datagen
    topic: mixed
    config: {pattern: users, events_per_second: 0, max_events: 20}
  ticks:
    connector: datagen
    topic: ticks
    config: {events_per_second: 5}
",
        &format!("  flight: {{enabled: true, port: {port}}}\n"),
    );
    let child = p.spawn_run(&p.dir.path().join("run.out"));
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(60);
    let out = loop {
        let o = p.cmd(&[
            "tap", "mixed", "--from", "0", "--limit", "40", "--format", "json",
        ]);
        if o.status.success() || std::time::Instant::now() > deadline {
            break o;
        }
        std::thread::sleep(std::time::Duration::from_millis(300));
    };
    assert_eq!(unsafe_kill(child.id(), libc::SIGTERM), 0);
    child.wait_with_output().unwrap();
    assert!(out.status.success(), "{}", stderr(&out));
    let rows: Vec<serde_json::Value> = stdout(&out)
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(rows.len(), 40);
    let orders = rows.iter().filter(|r| r.get("order_id").is_some()).count();
    let users = rows.iter().filter(|r| r.get("email").is_some()).count();
    assert_eq!((orders, users), (20, 20), "{rows:?}");
}
