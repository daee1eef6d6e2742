//! Transforms end to end: datagen in `cdc_mode` through a source-side chain into the
//! embedded topic, then a sink-side chain into the stdout sink; and `check` rejecting bad
//! transform configs with their key path and line.

use crate::support::{stderr, stdout, Pipeline};
use arrow::array::AsArray;

const CHAIN: &str = "sources:
  gen:
    connector: datagen
    topic: users
    config:
      pattern: users
      cdc_mode: true
      events_per_second: 0
      max_events: 2000
      seed: 7
      stream_name: users
      transforms:
        - type: mask_field
          predicate: { operations: [insert, update, snapshot, delete] }
          config: { fields: [email], keep_last: 4 }
        - type: extract_new_record_state
          config: { add_op: true, add_table: true }
sinks:
  out:
    connector: stdout
    topics: [users]
    consumer_group: out
    start_offset: earliest
    config: {format: json}
    transforms:
      - type: filter
        config: { condition: 'age >= 30' }
      - type: rename_field
        config: { renames: { name: full_name } }
";

#[tokio::test]
async fn datagen_cdc_through_source_and_sink_chains() {
    let p = Pipeline::new(CHAIN);
    let check = p.cmd(&["check"]);
    assert!(
        check.status.success(),
        "{}{}",
        stdout(&check),
        stderr(&check)
    );
    assert!(
        stdout(&check).contains("transforms of source gen: ok")
            || stdout(&check).contains("ok      transforms of source gen"),
        "{}",
        stdout(&check)
    );
    let run = p.cmd(&["run"]);
    assert!(run.status.success(), "{}", stderr(&run));

    // The topic holds what the source-side chain produced: flat rows, masked, no deletes.
    let log = p.log();
    let parts = log.partitions("users").unwrap();
    let (mut topic_rows, mut want_out) = (0usize, 0usize);
    for part in 0..parts {
        let end = log.end_offset("users", part).unwrap();
        let mut from = 0;
        while from < end {
            for b in log.read("users", part, from, 1 << 24).await.unwrap() {
                from = b.next_offset();
                let schema = b.batch.schema();
                assert!(
                    schema.field_with_name("after").is_err(),
                    "unwrapped: {schema:?}"
                );
                let ops = b
                    .batch
                    .column_by_name("__op")
                    .unwrap()
                    .as_string::<i32>()
                    .clone();
                let emails = b
                    .batch
                    .column_by_name("email")
                    .unwrap()
                    .as_string::<i32>()
                    .clone();
                let ages = arrow::compute::cast(
                    b.batch.column_by_name("age").unwrap(),
                    &arrow::datatypes::DataType::Int64,
                )
                .unwrap();
                let ages = ages.as_primitive::<arrow::datatypes::Int64Type>();
                for i in 0..b.batch.num_rows() {
                    assert_ne!(ops.value(i), "d", "deletes are dropped by the unwrap");
                    let e = emails.value(i);
                    let stars = e.chars().take_while(|c| *c == '*').count();
                    assert_eq!(e.chars().count() - stars, 4, "masked email {e}");
                    if ages.value(i) >= 30 {
                        want_out += 1;
                    }
                }
                topic_rows += b.batch.num_rows();
            }
        }
    }
    assert!(
        topic_rows > 0 && topic_rows < 2000,
        "deletes removed: {topic_rows}"
    );

    // The sink saw the sink-side chain's output.
    let lines: Vec<serde_json::Value> = stdout(&run)
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(lines.len(), want_out);
    for l in &lines {
        assert!(l["age"].as_i64().unwrap() >= 30, "{l}");
        assert!(l.get("name").is_none() && l["full_name"].is_string(), "{l}");
        assert_eq!(l["__table"], "users", "{l}");
    }
}

/// `check` of `p`, which must fail; its stdout and stderr.
fn failed_check(p: &Pipeline) -> String {
    let o = p.cmd(&["check"]);
    assert!(!o.status.success(), "check passed: {}", stdout(&o));
    format!("{}{}", stdout(&o), stderr(&o))
}

/// The 1-based line of the pipeline file holding `needle`.
fn line_of(p: &Pipeline, needle: &str) -> usize {
    let text = std::fs::read_to_string(p.config()).unwrap();
    text.lines().position(|l| l.contains(needle)).unwrap() + 1
}

#[test]
fn check_rejects_bad_transforms_with_path_and_line() {
    // A field the discovered schema does not have.
    let p = Pipeline::new(&CHAIN.replace("fields: [email]", "fields: [ssn]"));
    let o = p.cmd(&["check"]);
    assert!(!o.status.success());
    let out = stdout(&o);
    assert!(
        out.contains(&format!(":{}:", line_of(&p, "fields: [ssn]")))
            && out.contains("sources.gen.config.transforms[0].config.fields[0]: no field `ssn`"),
        "{out}"
    );
    // An unknown transform type: a config error before any connection.
    let p = Pipeline::new(&CHAIN.replace("type: rename_field", "type: rename_fields"));
    let o = p.cmd(&["check"]);
    assert_eq!(o.status.code(), Some(2));
    let err = stderr(&o);
    assert!(
        err.contains(&format!(":{}:", line_of(&p, "type: rename_fields")))
            && err.contains("sinks.out.transforms[1].type: unknown transform type `rename_fields`"),
        "{err}"
    );
    // Invalid SQL.
    let p = Pipeline::new(&CHAIN.replace("'age >= 30'", "'age >= >= 30'"));
    let err = stderr(&p.cmd(&["check"]));
    assert!(
        err.contains("sinks.out.transforms[0].config.condition: invalid SQL expression"),
        "{err}"
    );
    // A misspelled key inside a transform's config.
    let p = Pipeline::new(&CHAIN.replace("keep_last: 4", "keep_lats: 4"));
    let err = stderr(&p.cmd(&["check"]));
    assert!(
        err.contains(
            "sources.gen.config.transforms[0].config.keep_lats: unknown field `keep_lats`"
        ),
        "{err}"
    );
}

/// Emails of `max_events` datagen users (seed 3) as printed by the stdout sink, run with
/// the given transforms on the source and on the sink, in `p`'s state dir.
fn emails(p: &Pipeline) -> Vec<String> {
    let run = p.cmd(&["run"]);
    assert!(run.status.success(), "{}", stderr(&run));
    stdout(&run)
        .lines()
        .map(|l| {
            let v: serde_json::Value = serde_json::from_str(l).unwrap();
            v["email"].as_str().unwrap().to_owned()
        })
        .collect()
}

fn crypto_pipeline(max_events: u32, source_tf: &str, sink_tf: &str, group: &str) -> String {
    format!(
        "sources:
  gen:
    connector: datagen
    topic: users
    config: {{pattern: users, events_per_second: 0, max_events: {max_events}, seed: 3}}
    transforms: {source_tf}
sinks:
  out:
    connector: stdout
    topics: [users]
    consumer_group: {group}
    start_offset: earliest
    config: {{format: json}}
    transforms: {sink_tf}
"
    )
}

#[test]
fn encrypted_fields_decrypt_in_a_later_process_across_a_key_rotation() {
    let keys = tempfile::tempdir().unwrap();
    let k1 = keys.path().join("k1");
    std::fs::write(&k1, "11".repeat(32)).unwrap();
    let k2 = keys.path().join("k2");
    std::fs::write(&k2, "22".repeat(32)).unwrap();
    let enc = |active: &str, alg: &str| {
        format!(
            "[{{type: encrypt_field, config: {{fields: [email], algorithm: {alg}, active_key: {active}, keys: [{{id: k1, file: {}}}, {{id: k2, file: {}}}]}}}}]",
            k1.display(),
            k2.display()
        )
    };
    let dec = format!(
        "[{{type: decrypt_field, config: {{fields: [email], keys: [{{id: k2, file: {}}}, {{id: k1, file: {}}}]}}}}]",
        k2.display(),
        k1.display()
    );
    // The plaintext, from a run without encryption.
    let plain = emails(&Pipeline::new(&crypto_pipeline(200, "[]", "[]", "plain")));
    assert_eq!(plain.len(), 200);

    // Process 1 writes 100 events encrypted with k1 (AES-256-GCM); its sink sees ciphertext.
    let p = Pipeline::new(&crypto_pipeline(
        100,
        &enc("k1", "aes-256-gcm"),
        "[]",
        "raw",
    ));
    let sealed = emails(&p);
    assert_eq!(sealed.len(), 100);
    for (s, e) in sealed.iter().zip(&plain) {
        assert!(s.starts_with("rivven:enc:1:aes256gcm:k1:"), "{s}");
        assert!(!s.contains(e.as_str()));
    }
    // Process 2, same state: the key rotated to k2 (ChaCha20-Poly1305); the source resumes
    // and writes events 100..200 with k2; a new consumer decrypts all 200 from the topic.
    let cfg = crypto_pipeline(200, &enc("k2", "chacha20-poly1305"), &dec, "clear");
    std::fs::write(
        p.config(),
        std::fs::read_to_string(p.config()).unwrap().replace(
            &crypto_pipeline(100, &enc("k1", "aes-256-gcm"), "[]", "raw"),
            &cfg,
        ),
    )
    .unwrap();
    assert!(std::fs::read_to_string(p.config())
        .unwrap()
        .contains("decrypt_field"));
    let clear = emails(&p);
    assert_eq!(clear, plain);
}

/// Every batch of every partition of `topic`, with its partition, in offset order.
async fn read_topic(
    log: &rivven_engine::topic::EmbeddedLog,
    topic: &str,
) -> Vec<(u32, arrow::array::RecordBatch)> {
    let mut out = Vec::new();
    for part in 0..log.partitions(topic).unwrap() {
        let end = log.end_offset(topic, part).unwrap();
        let mut from = 0;
        while from < end {
            for b in log.read(topic, part, from, 1 << 24).await.unwrap() {
                from = b.next_offset();
                out.push((part, b.batch));
            }
        }
    }
    out
}

/// `id` of the current image of each change event (`after`, or `before` for deletes and
/// tombstones), with its op (`None`: a tombstone).
fn ids_and_ops(b: &arrow::array::RecordBatch) -> Vec<(i64, Option<String>)> {
    use arrow::array::Array;
    let ops = b.column_by_name("op").unwrap().as_string::<i32>().clone();
    let id_of = |image: &str| {
        let s = b.column_by_name(image).unwrap().as_struct().clone();
        let ids = arrow::compute::cast(
            s.column_by_name("id").unwrap(),
            &arrow::datatypes::DataType::Int64,
        )
        .unwrap();
        (s, ids)
    };
    let (after, after_ids) = id_of("after");
    let (_, before_ids) = id_of("before");
    let after_ids = after_ids.as_primitive::<arrow::datatypes::Int64Type>();
    let before_ids = before_ids.as_primitive::<arrow::datatypes::Int64Type>();
    (0..b.num_rows())
        .map(|i| {
            let id = if after.is_valid(i) {
                after_ids.value(i)
            } else {
                before_ids.value(i)
            };
            (id, ops.is_valid(i).then(|| ops.value(i).to_owned()))
        })
        .collect()
}

#[tokio::test]
async fn cdc_features_route_tombstone_partition_encrypt_and_dead_letter() {
    let keys = tempfile::tempdir().unwrap();
    let key = keys.path().join("k");
    std::fs::write(&key, "ef".repeat(32)).unwrap();
    let p = Pipeline::new(&format!(
        "sources:
  gen:
    connector: datagen
    topic: users
    config:
      pattern: users
      cdc_mode: true
      events_per_second: 0
      max_events: 3000
      seed: 11
      stream_name: users
      cdc_features:
        deduplication: {{ enabled: true, ttl_seconds: 600, max_entries: 10000 }}
        encryption: {{ enabled: true, fields: [email], keys: [{{ id: k, file: {key} }}] }}
        tombstones: {{ enabled: true, emit_tombstone_after_delete: true }}
        router:
          enabled: true
          default_destination: users.main
          rules:
            - {{ condition_type: operation, condition_value: delete, destination: users.deletes, priority: 10 }}
            - {{ condition_type: field_equals, condition_value: country=nowhere, destination: users.never }}
        partitioner: {{ enabled: true, num_partitions: 4, strategy: key_hash, key_columns: [id] }}
sinks:
  out:
    connector: stdout
    topics: [users.main]
    consumer_group: out
    start_offset: earliest
    config: {{ format: json }}
    dead_letter_topic: users.bad
    transforms:
      - type: extract_new_record_state
      - type: sql
        config:
          query: \"SELECT id, CAST(CASE WHEN age < 25 THEN 'young' ELSE CAST(age AS VARCHAR) END AS INT) AS age FROM input\"
",
        key = key.display()
    ));
    let check = p.cmd(&["check"]);
    assert!(
        check.status.success(),
        "{}{}",
        stdout(&check),
        stderr(&check)
    );
    let run = p.cmd(&["run"]);
    assert!(run.status.success(), "{}", stderr(&run));
    let log = p.log();

    // Deletes went to their own topic, each followed by its tombstone, in one partition
    // per key.
    let mut partition_of: std::collections::HashMap<i64, u32> = Default::default();
    let mut same_partition = |id: i64, part: u32| {
        assert_eq!(*partition_of.entry(id).or_insert(part), part, "id {id}");
    };
    let (mut deletes, mut tombstones) = (0, 0);
    for (part, b) in read_topic(&log, "users.deletes").await {
        let rows = ids_and_ops(&b);
        for (i, (id, op)) in rows.iter().enumerate() {
            same_partition(*id, part);
            match op.as_deref() {
                Some("d") => {
                    deletes += 1;
                    assert_eq!(rows.get(i + 1), Some(&(*id, None)), "tombstone follows");
                }
                None => tombstones += 1,
                other => panic!("{other:?} in users.deletes"),
            }
        }
    }
    assert!(
        deletes > 0 && deletes == tombstones,
        "{deletes} {tombstones}"
    );

    // Everything else went to the default destination, encrypted, partitioned by key.
    let mut main_rows = 0usize;
    let mut young = 0usize;
    for (part, b) in read_topic(&log, "users.main").await {
        for (id, op) in ids_and_ops(&b) {
            same_partition(id, part);
            assert!(matches!(op.as_deref(), Some("c" | "u" | "r")), "{op:?}");
        }
        let after = b.column_by_name("after").unwrap().as_struct().clone();
        let emails = after
            .column_by_name("email")
            .unwrap()
            .as_string::<i32>()
            .clone();
        let ages = arrow::compute::cast(
            after.column_by_name("age").unwrap(),
            &arrow::datatypes::DataType::Int64,
        )
        .unwrap();
        let ages = ages.as_primitive::<arrow::datatypes::Int64Type>();
        for i in 0..b.num_rows() {
            assert!(emails.value(i).starts_with("rivven:enc:1:aes256gcm:k:"));
            if ages.value(i) < 25 {
                young += 1;
            }
        }
        main_rows += b.num_rows();
    }
    assert_eq!(
        main_rows + deletes,
        3000,
        "every event routed once, none dropped"
    );
    assert!(read_topic(&log, "users.never").await.is_empty());
    assert_eq!(
        log.partitions("users.main").unwrap(),
        4,
        "created with num_partitions"
    );
    assert!(
        partition_of
            .values()
            .collect::<std::collections::HashSet<_>>()
            .len()
            > 1
    );

    // The sink's chain failed on young users: they are in the dead-letter topic with the
    // reason; the others reached the sink.
    let printed = stdout(&run).lines().count();
    let mut dead = 0usize;
    for (_, b) in read_topic(&log, "users.bad").await {
        let err = b
            .column_by_name("__dlq_error")
            .unwrap()
            .as_string::<i32>()
            .clone();
        let step = b
            .column_by_name("__dlq_transform")
            .unwrap()
            .as_string::<i32>()
            .clone();
        let from = b
            .column_by_name("__dlq_topic")
            .unwrap()
            .as_string::<i32>()
            .clone();
        for i in 0..b.num_rows() {
            assert!(err.value(i).contains("young"), "{}", err.value(i));
            assert_eq!(step.value(i), "transforms[1] (sql)");
            assert_eq!(from.value(i), "users.main");
        }
        dead += b.num_rows();
    }
    assert!(young > 0);
    assert_eq!(dead, young);
    assert_eq!(printed + dead, main_rows);
}

#[test]
fn check_rejects_bad_cdc_features_with_path_and_line() {
    let p = Pipeline::new(
        "sources:
  gen:
    connector: datagen
    topic: users
    config:
      pattern: users
      cdc_mode: true
      cdc_features:
        router:
          enabled: true
          rules:
            - { condition_type: colour, destination: x }
",
    );
    let out = failed_check(&p);
    assert!(
        out.contains(&format!(":{}:", line_of(&p, "condition_type: colour")))
            && out.contains("sources.gen.config.cdc_features.router.rules[0].condition_type"),
        "{out}"
    );

    let p = Pipeline::new(
        "sources:
  gen:
    connector: datagen
    topic: users
    config:
      pattern: users
      cdc_features:
        tombstones: { enabled: true }
        partitioner: { enabled: true, num_partitions: 0 }
",
    );
    let out = failed_check(&p);
    assert!(
        out.contains(&format!(":{}:", line_of(&p, "num_partitions: 0")))
            && out.contains(
                "sources.gen.config.cdc_features.partitioner.num_partitions: between 1 and 1000"
            ),
        "{out}"
    );
}

#[test]
fn check_compiles_cdc_features_against_discovered_streams() {
    // Tombstones need change events; datagen without cdc_mode emits flat rows.
    let p = Pipeline::new(
        "sources:
  gen:
    connector: datagen
    topic: users
    config:
      pattern: users
      cdc_features:
        tombstones: { enabled: true }
",
    );
    let out = failed_check(&p);
    assert!(
        out.contains("sources.gen.config.cdc_features.tombstones: tombstones need change events"),
        "{out}"
    );
}
