//! kafka-sink's Debezium records, read by a consumer written against Debezium's format.

use super::{consume, unique, wait_for};
use crate::support::{unsafe_kill, Pipeline};

/// A consumer written against Debezium's documented record format (Kafka Connect JSON,
/// with or without the schema wrapper): rebuilds a table keyed by `id` from a topic and
/// checks each record's envelope. Prints `{"rows": [[id, name, balance, updated_us,
/// day, blob_hex]...], "ops": {op: count}, "tombstones": n, "problems": [...]}`.
const DEBEZIUM_CONSUMER: &str = r#"
import base64, datetime, decimal, json, sys, time
from confluent_kafka import Consumer, TopicPartition
boot, topic, n, db = sys.argv[1], sys.argv[2], int(sys.argv[3]), sys.argv[4]
c = Consumer({"bootstrap.servers": boot, "group.id": "dbz-%s" % time.time(), "enable.auto.commit": False})
deadline = time.time() + 90
while True:
    md = c.list_topics(topic, timeout=10).topics.get(topic)
    if md is not None and md.partitions:
        break
    assert time.time() < deadline, "no topic"
    time.sleep(0.2)
c.assign([TopicPartition(topic, p, 0) for p in md.partitions])
msgs = []
while len(msgs) < n and time.time() < deadline:
    msgs.extend(m for m in c.consume(1000, 1.0) if not m.error())
c.close()
msgs.sort(key=lambda m: (m.partition(), m.offset()))
table, ops, tombstones, problems, last_deleted = {}, {}, 0, [], {}
def unwrap(raw):
    v = json.loads(raw)
    return v["payload"] if isinstance(v, dict) and "schema" in v and "payload" in v else v
for m in msgs:
    key = unwrap(m.key()) if m.key() is not None else None
    if m.value() is None:
        tombstones += 1
        if last_deleted.get(m.partition()) != key:
            problems.append("tombstone not right after its delete: %r" % key)
        continue
    v = unwrap(m.value())
    op, src = v["op"], v["source"]
    ops[op] = ops.get(op, 0) + 1
    if src["connector"] != "postgresql" or src["db"] != db or src["table"] != "acct" or src["schema"] != "public":
        problems.append("source %r" % src)
    if (op == "r") != (src["snapshot"] == "true"):
        problems.append("snapshot flag %r for op %s" % (src["snapshot"], op))
    if op != "r" and not isinstance(src["lsn"], int):
        problems.append("lsn %r" % src["lsn"])
    if not isinstance(v["ts_ms"], int) or "transaction" not in v:
        problems.append("envelope %r" % sorted(v))
    row = v["after"] if op in ("r", "c", "u") else v["before"]
    if key != {"id": row["id"]}:
        problems.append("key %r for row %r" % (key, row["id"]))
    if op == "d":
        table.pop(row["id"], None)
        last_deleted[m.partition()] = key
    else:
        table[row["id"]] = row
        last_deleted[m.partition()] = None
def balance(b64):
    unscaled = int.from_bytes(base64.b64decode(b64), "big", signed=True)
    return str(decimal.Decimal(unscaled).scaleb(-2))
def micros(iso):
    t = datetime.datetime.fromisoformat(iso.replace("Z", "+00:00"))
    return (t - datetime.datetime(1970, 1, 1, tzinfo=datetime.timezone.utc)) // datetime.timedelta(microseconds=1)
rows = [[r["id"], r["name"], balance(r["balance"]), micros(r["updated"]), r["day"],
         base64.b64decode(r["blob"]).hex() if r["blob"] is not None else None]
        for _, r in sorted(table.items())]
print(json.dumps({"rows": rows, "ops": ops, "tombstones": tombstones, "problems": problems[:10]}))
"#;

#[test]
fn a_debezium_consumer_rebuilds_a_postgres_table_from_the_kafka_sinks_topic() {
    let py = rivven_testkit::require!(rivven_testkit::python());
    let kafka = rivven_testkit::require!(rivven_testkit::tansu());
    let Some(db) = crate::postgres::database(
        "dbz",
        &[
            "CREATE TABLE acct (id int PRIMARY KEY, name text NOT NULL, \
             balance numeric(12,2) NOT NULL, updated timestamptz NOT NULL, day date, blob bytea)",
            "INSERT INTO acct SELECT g, 'n' || g, g * 1.25 - 500, \
             timestamptz '2026-01-01 00:00:00.123456+00' + g * interval '1 second', \
             date '2026-01-01' + g, CASE WHEN g % 4 = 0 THEN NULL ELSE decode(lpad(to_hex(g), 8, '0'), 'hex') END \
             FROM generate_series(1, 2000) g",
        ],
    ) else {
        return;
    };
    let boot = kafka.bootstrap();
    let topic = unique("dbz");
    let p = Pipeline::new(&format!(
        "{}sinks:
  out:
    connector: kafka-sink
    topics: [changes]
    consumer_group: dbz
    config:
      brokers: [\"{boot}\"]
      topic: {topic}
      partitions: 3
      server_name: shop
",
        crate::postgres::pg_source(&db.pg, &db.name, "dbz_slot", "      tables: [acct]\n"),
    ));
    let mut run = p.spawn_run(&p.dir.path().join("run.out"));
    // Streamed changes once the snapshot is in: 500 inserts, 1,000 updates, 500 deletes.
    wait_for(&mut run, "the snapshot in the topic", || {
        consume(&py, &boot, &topic, 2000).len() >= 2000
    });
    for sql in [
        "INSERT INTO acct SELECT g, 'new' || g, g * 0.5, now(), NULL, '\\x00ff' FROM generate_series(2001, 2500) g",
        "UPDATE acct SET balance = balance + 0.01, name = name || '!' WHERE id % 2 = 0",
        "DELETE FROM acct WHERE id % 4 = 1",
    ] {
        db.pg.psql(&db.name, sql).unwrap();
    }
    let updates: usize = db
        .pg
        .psql(&db.name, "SELECT count(*) FROM acct WHERE id % 2 = 0")
        .unwrap()
        .trim()
        .parse()
        .unwrap();
    let deletes = (1..=2500).filter(|i| i % 4 == 1).count();
    let expected = 2000 + 500 + updates + 2 * deletes;
    let out = py
        .run(
            DEBEZIUM_CONSUMER,
            &[&boot, &topic, &expected.to_string(), &db.name],
        )
        .unwrap();
    assert_eq!(unsafe_kill(run.id(), libc::SIGTERM), 0);
    assert!(run.wait().unwrap().success());
    let got: serde_json::Value = serde_json::from_str(out.trim()).unwrap();
    assert_eq!(
        got["problems"],
        serde_json::json!([]),
        "{}",
        got["problems"]
    );
    assert_eq!(
        got["ops"],
        serde_json::json!({"r": 2000, "c": 500, "u": updates, "d": deletes})
    );
    assert_eq!(got["tombstones"], deletes);
    let source = db
        .pg
        .psql(
            &db.name,
            "SELECT json_agg(json_build_array(id, name, balance::text, \
             (extract(epoch from updated) * 1000000)::bigint, day - date '1970-01-01', \
             encode(blob, 'hex')) ORDER BY id) FROM acct",
        )
        .unwrap();
    let source: serde_json::Value = serde_json::from_str(source.trim()).unwrap();
    assert_eq!(
        got["rows"].as_array().unwrap().len(),
        source.as_array().unwrap().len()
    );
    assert_eq!(
        got["rows"], source,
        "the rebuilt table equals the source table"
    );
}
