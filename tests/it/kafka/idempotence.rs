//! kafka-sink's idempotent producer: a batch whose answer was lost is sent again and
//! written once.

use super::proxy::answer_dropping_proxy;
use super::unique;
use crate::support::Pipeline;

/// The records in `topic`, read from the start of every partition until none came for
/// 3 s (tansu 0.6 answers watermark queries with 1, so they cannot count).
fn topic_records(py: &rivven_testkit::Python, boot: &str, topic: &str) -> i64 {
    let out = py
        .run(
            r#"
import sys, time
from confluent_kafka import Consumer, TopicPartition
c = Consumer({"bootstrap.servers": sys.argv[1], "group.id": "count", "enable.auto.commit": False})
md = c.list_topics(sys.argv[2], timeout=10).topics.get(sys.argv[2])
c.assign([TopicPartition(sys.argv[2], p, 0) for p in (md.partitions if md else {})])
n, quiet = 0, time.time()
while time.time() - quiet < 3:
    got = [m for m in c.consume(1000, 0.5) if not m.error()]
    if got:
        n, quiet = n + len(got), time.time()
print(n)
"#,
            &[boot, topic],
        )
        .unwrap();
    out.trim().parse().unwrap()
}

#[test]
fn an_idempotent_sink_writes_a_batch_whose_answer_was_lost_once() {
    let py = rivven_testkit::require!(rivven_testkit::python());
    let proxy = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let proxy_port = proxy.local_addr().unwrap().port();
    let kafka = rivven_testkit::require!(rivven_testkit::Tansu::start_private(proxy_port, false));
    // The answers to the 2nd and 4th produce requests are lost.
    answer_dropping_proxy(proxy, kafka.port, &[1, 3]);
    let boot = format!("127.0.0.1:{proxy_port}");
    const N: i64 = 4000;
    let run = |idempotence: bool| -> i64 {
        let topic = unique(if idempotence { "idem" } else { "plain" });
        let p = Pipeline::new(&format!(
            "sources:
  gen:
    connector: datagen
    topic: rows
    config:
      pattern: orders
      events_per_second: 0
      max_events: {N}
sinks:
  out:
    connector: kafka-sink
    topics: [rows]
    consumer_group: out
    config:
      brokers: [\"{boot}\"]
      topic: {topic}
      batch_size_bytes: 20000
      retry_initial_ms: 50
      idempotence: {idempotence}
"
        ));
        // The run ends by itself once datagen's rows are all delivered.
        let out = p.cmd(&["run"]);
        assert!(out.status.success(), "{}", crate::support::stderr(&out));
        topic_records(&py, &boot, &topic)
    };
    let with = run(true);
    let without = run(false);
    assert_eq!(with, N, "idempotent: each record once");
    assert!(
        without > N,
        "without idempotence the resent batches are there twice ({without} records), so \
         this test can tell the difference"
    );
    eprintln!("kafka-sink: {N} rows, 2 produce answers lost: idempotent {with} records, not idempotent {without}");
}
