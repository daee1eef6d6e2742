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
