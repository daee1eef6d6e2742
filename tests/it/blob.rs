//! `externalize_blob` end to end: datagen rows grown into long text and binary values by
//! the source-side chain, externalized into a real S3 server (s3s-fs, which checks SigV4
//! signatures and stores each object as a file `<root>/<bucket>/<key>`) and into Azurite.
//! Every reference in the topic names an object holding exactly the original bytes, under
//! their SHA-256; small values stay inline; nothing else is stored. An upload failure names the transform, field and object, not
//! the secret; `check` rejects a bad config with its key path.

use crate::support::{stderr, stdout, Pipeline};
use arrow::array::{Array, AsArray, StructArray};
use arrow::datatypes::Int64Type;
use sha2::Digest;
use std::collections::BTreeSet;
use std::path::Path;

/// Values longer than this many bytes are externalized.
const THRESHOLD: usize = 400;

/// A datagen source whose chain adds `body` (text: the email repeated `sequence % 40`
/// times, up to ~1 KB) and `thumb` (binary: the name repeated `sequence % 50` times), then
/// externalizes both with `store` (the config's storage keys).
fn pipeline_yaml(store: &str) -> String {
    format!(
        "sources:
  gen:
    connector: datagen
    topic: docs
    config:
      pattern: users
      events_per_second: 0
      max_events: 600
      seed: 3
      transforms:
        - type: compute_field
          config: {{ field: body, operation: expression, expression: 'repeat(email, CAST(sequence % 40 AS INT))' }}
        - type: compute_field
          config: {{ field: thumb, operation: expression, expression: 'CAST(repeat(name, CAST(sequence % 50 AS INT)) AS BYTEA)' }}
        - type: externalize_blob
          config: {{ {store}, prefix: docs/, fields: [body, thumb], size_threshold: {THRESHOLD} }}
"
    )
}

/// The s3 storage keys for a bucket, with the given secret.
fn s3_keys(s3: &rivven_testkit::S3, bucket: &str, secret: &str) -> String {
    format!(
        "storage_type: s3, bucket: {bucket}, endpoint_url: '{}', region: {}, access_key_id: {}, secret_access_key: {secret}",
        s3.endpoint, s3.region, s3.access_key
    )
}

fn sha256_hex(b: &[u8]) -> String {
    format!("{:x}", sha2::Sha256::digest(b))
}

/// What one externalized column held for one row.
enum Seen {
    Null,
    Inline(Vec<u8>),
    Url(String),
}

fn seen(col: &StructArray, row: usize) -> Seen {
    if col.is_null(row) {
        return Seen::Null;
    }
    let url = col.column_by_name("url").unwrap().as_string::<i32>();
    let value = col.column_by_name("value").unwrap();
    if url.is_valid(row) {
        assert!(
            value.is_null(row),
            "an externalized value is not also inline"
        );
        return Seen::Url(url.value(row).to_owned());
    }
    let bytes = match value.data_type() {
        arrow::datatypes::DataType::Utf8 => value.as_string::<i32>().value(row).as_bytes().to_vec(),
        arrow::datatypes::DataType::Binary => value.as_binary::<i32>().value(row).to_vec(),
        other => panic!("value type {other}"),
    };
    Seen::Inline(bytes)
}

/// Check every row of topic `docs`: each large value is referenced as `<base>/docs/<sha256>`
/// and `read(key)` returns exactly its bytes; each small value is inline and unchanged.
/// Returns the referenced object names.
async fn check_topic(p: &Pipeline, base: &str, read: &dyn Fn(&str) -> Vec<u8>) -> BTreeSet<String> {
    let log = p.log();
    let (mut rows, mut external, mut inline) = (0usize, 0usize, 0usize);
    let mut objects = BTreeSet::new();
    for part in 0..log.partitions("docs").unwrap() {
        let end = log.end_offset("docs", part).unwrap();
        let mut from = 0;
        while from < end {
            for b in log.read("docs", part, from, 1 << 24).await.unwrap() {
                from = b.next_offset();
                let batch = &b.batch;
                let schema = batch.schema();
                for name in ["body", "thumb"] {
                    let f = schema.field_with_name(name).unwrap();
                    assert_eq!(
                        f.metadata().get("rivven.externalized").map(String::as_str),
                        Some("true"),
                        "{name} is marked"
                    );
                }
                let seq = batch.column_by_name("sequence").unwrap();
                let seq = seq.as_primitive::<Int64Type>();
                let email = batch.column_by_name("email").unwrap().as_string::<i32>();
                let uname = batch.column_by_name("name").unwrap().as_string::<i32>();
                let body = batch.column_by_name("body").unwrap().as_struct();
                let thumb = batch.column_by_name("thumb").unwrap().as_struct();
                for i in 0..batch.num_rows() {
                    rows += 1;
                    let n = seq.value(i);
                    let want = [
                        (body, email.value(i).repeat((n % 40) as usize)),
                        (thumb, uname.value(i).repeat((n % 50) as usize)),
                    ];
                    for (col, want) in want {
                        let want = want.into_bytes();
                        match seen(col, i) {
                            Seen::Null => panic!("row {n}: a non-null value became null"),
                            Seen::Inline(got) => {
                                assert!(
                                    want.len() <= THRESHOLD,
                                    "row {n}: {} bytes inline",
                                    want.len()
                                );
                                assert_eq!(got, want, "row {n}: inline value unchanged");
                                inline += 1;
                            }
                            Seen::Url(url) => {
                                assert!(
                                    want.len() > THRESHOLD,
                                    "row {n}: {} bytes externalized",
                                    want.len()
                                );
                                let key = format!("docs/{}", sha256_hex(&want));
                                assert_eq!(url, format!("{base}/{key}"), "row {n}");
                                assert!(
                                    read(&key) == want,
                                    "row {n}: object {key} holds the value"
                                );
                                objects.insert(key);
                                external += 1;
                            }
                        }
                    }
                }
            }
        }
    }
    assert_eq!(rows, 600);
    assert!(
        external > 100 && inline > 100,
        "{external} externalized, {inline} inline"
    );
    objects
}

/// Names of the visible files in `dir`.
fn file_names(dir: &Path) -> BTreeSet<String> {
    std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|n| !n.starts_with('.'))
        .collect()
}

#[tokio::test]
async fn large_values_go_to_s3_and_rows_keep_references() {
    let s3 = rivven_testkit::require!(rivven_testkit::s3());
    let bucket = s3
        .create_bucket(&rivven_testkit::unique_name("blob"))
        .unwrap();
    let p = Pipeline::new(&pipeline_yaml(&s3_keys(&s3, &bucket, &s3.secret_key)));
    let check = p.cmd(&["check"]);
    assert!(
        check.status.success(),
        "{}{}",
        stdout(&check),
        stderr(&check)
    );
    let run = p.cmd(&["run"]);
    assert!(run.status.success(), "{}", stderr(&run));
    let root = s3.root.join(&bucket);
    let read = |key: &str| {
        let file = root.join(key);
        std::fs::read(&file).unwrap_or_else(|e| panic!("{}: {e}", file.display()))
    };
    let objects = check_topic(&p, &format!("s3://{bucket}"), &read).await;
    // Nothing else was written: one object per distinct large value.
    let stored: BTreeSet<String> = file_names(&root.join("docs"))
        .into_iter()
        .map(|n| format!("docs/{n}"))
        .collect();
    assert_eq!(stored, objects);
}

/// The same on Azure Blob Storage (Azurite, `use_emulator`); blobs are downloaded with the
/// Azure SDK for Python.
#[tokio::test]
async fn large_values_go_to_azurite() {
    let py = rivven_testkit::require!(rivven_testkit::python());
    let az = rivven_testkit::require!(rivven_testkit::azurite());
    let container = rivven_testkit::unique_name("blob").replace('_', "-");
    let admin = r#"
import os, sys
from azure.storage.blob import BlobServiceClient
svc = BlobServiceClient.from_connection_string(sys.argv[1])
if sys.argv[2] == "create":
    svc.create_container(sys.argv[3])
else:
    c = svc.get_container_client(sys.argv[3])
    for b in c.list_blobs():
        with open(os.path.join(sys.argv[4], b.name.replace("/", "_")), "wb") as f:
            f.write(c.download_blob(b.name).readall())
print("ok")
"#;
    let cs = az.connection_string();
    py.run(admin, &[&cs, "create", &container]).unwrap();
    let p = Pipeline::new(&pipeline_yaml(&format!(
        "storage_type: azure, container: {container}, use_emulator: true"
    )));
    let env = [("AZURITE_BLOB_STORAGE_URL", az.blob_url.as_str())];
    let run = p.cmd_env(&["run"], &env);
    assert!(run.status.success(), "{}", stderr(&run));
    let dl = p.dir.path().join("dl");
    std::fs::create_dir_all(&dl).unwrap();
    py.run(admin, &[&cs, "get", &container, dl.to_str().unwrap()])
        .unwrap();
    let read = |key: &str| std::fs::read(dl.join(key.replace('/', "_"))).unwrap();
    let objects = check_topic(&p, &format!("az://{container}"), &read).await;
    let stored: BTreeSet<String> = file_names(&dl)
        .into_iter()
        .map(|n| n.replacen('_', "/", 1))
        .collect();
    assert_eq!(stored, objects);
}

#[test]
fn upload_failures_name_field_and_object_but_not_the_secret() {
    let s3 = rivven_testkit::require!(rivven_testkit::s3());
    let bucket = s3
        .create_bucket(&rivven_testkit::unique_name("blobfail"))
        .unwrap();
    let wrong = "WrongSecretKeyForTheTest0123456789";
    let p = Pipeline::with_settings(
        &pipeline_yaml(&s3_keys(&s3, &bucket, wrong)),
        "  retry: {max_retries: 0}\n",
    );
    let run = p.cmd(&["run"]);
    let err = format!("{}{}", stdout(&run), stderr(&run));
    assert!(!run.status.success(), "{err}");
    assert!(
        err.contains("transforms[2] (externalize_blob)")
            && err.contains("field `")
            && err.contains(&format!("s3://{bucket}/docs/")),
        "{err}"
    );
    assert!(!err.contains(wrong), "the secret leaked: {err}");
}

#[test]
fn check_rejects_bad_externalize_blob_config_with_its_path() {
    let p = Pipeline::new(&pipeline_yaml(
        "storage_type: local, path: /tmp/blobs, bucket: b, secret_access_key: hunter2",
    ));
    let o = p.cmd(&["check"]);
    assert_eq!(o.status.code(), Some(2), "{}{}", stdout(&o), stderr(&o));
    let err = stderr(&o);
    assert!(
        err.contains("sources.gen.config.transforms[2].config.bucket: not used by storage_type local")
            && err.contains(
                "sources.gen.config.transforms[2].config.secret_access_key: applies to storage_type s3, not local"
            ),
        "{err}"
    );
    assert!(!err.contains("hunter2"), "{err}");
}
