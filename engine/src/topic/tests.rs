use super::*;
use arrow::array::{Int64Array, StringArray};
use arrow::datatypes::{DataType, Field, Schema};
use std::io::Write;

fn batch(start: i64, n: usize) -> RecordBatch {
    let schema = Arc::new(Schema::new(vec![Field::new("v", DataType::Int64, false)]));
    RecordBatch::try_new(
        schema,
        vec![Arc::new(Int64Array::from_iter_values(
            start..start + n as i64,
        ))],
    )
    .unwrap()
}

fn values(batches: &[SinkBatch]) -> Vec<i64> {
    batches
        .iter()
        .flat_map(|b| {
            let a = b
                .batch
                .column(0)
                .as_any()
                .downcast_ref::<Int64Array>()
                .unwrap();
            a.values().to_vec()
        })
        .collect()
}

fn settings() -> TopicSettings {
    TopicSettings {
        segment_bytes: 4096,
        ..TopicSettings::default()
    }
}

#[tokio::test]
async fn append_read_and_slice() {
    let dir = tempfile::tempdir().unwrap();
    let log = EmbeddedLog::open(dir.path(), settings()).unwrap();
    log.ensure_topic("t").unwrap();
    assert_eq!(log.append("t", 0, &batch(0, 10), None).await.unwrap(), 0);
    assert_eq!(log.append("t", 0, &batch(10, 5), None).await.unwrap(), 10);
    assert_eq!(log.end_offset("t", 0).unwrap(), 15);
    let got = log.read("t", 0, 7, 1 << 20).await.unwrap();
    assert_eq!(values(&got), (7..15).collect::<Vec<_>>());
    assert_eq!(got[0].first_offset, 7);
    assert_eq!(got[1].first_offset, 10);
    assert!(log.read("t", 0, 15, 1 << 20).await.unwrap().is_empty());
}

#[tokio::test]
async fn schema_changes_between_frames() {
    let dir = tempfile::tempdir().unwrap();
    let log = EmbeddedLog::open(dir.path(), settings()).unwrap();
    log.ensure_topic("t").unwrap();
    log.append("t", 0, &batch(0, 2), None).await.unwrap();
    let s2 = Arc::new(Schema::new(vec![Field::new("s", DataType::Utf8, true)]));
    let b2 = RecordBatch::try_new(
        s2.clone(),
        vec![Arc::new(StringArray::from(vec!["a", "b"]))],
    )
    .unwrap();
    log.append("t", 0, &b2, None).await.unwrap();
    let got = log.read("t", 0, 0, 1 << 20).await.unwrap();
    assert_eq!(got[1].batch.schema(), s2);
    assert_eq!(got[1].first_offset, 2);
}

#[tokio::test]
async fn recovers_offsets_marks_and_cuts_torn_tail() {
    let dir = tempfile::tempdir().unwrap();
    {
        let log = EmbeddedLog::open(dir.path(), settings()).unwrap();
        log.ensure_topic("t").unwrap();
        for i in 0..3u64 {
            let mark = SourceMark {
                source: "gen".into(),
                seq: i,
                position: Position(serde_json::json!({"next": i * 4 + 4})),
            };
            log.append("t", 0, &batch(i as i64 * 4, 4), Some(&mark))
                .await
                .unwrap();
        }
    }
    // Simulate an append torn by kill -9: a frame prefix and half a body.
    let seg = dir.path().join("topics/t/0/00000000000000000000.log");
    let before = std::fs::metadata(&seg).unwrap().len();
    let frame = segment::encode_frame(12, 4, 0, b"", &segment::encode_ipc(&batch(12, 4)).unwrap());
    std::fs::OpenOptions::new()
        .append(true)
        .open(&seg)
        .unwrap()
        .write_all(&frame[..frame.len() / 2])
        .unwrap();

    let log = EmbeddedLog::open(dir.path(), settings()).unwrap();
    assert_eq!(
        std::fs::metadata(&seg).unwrap().len(),
        before,
        "torn tail cut"
    );
    assert_eq!(log.end_offset("t", 0).unwrap(), 12);
    let mark = log.source_mark("gen").unwrap();
    assert_eq!((mark.seq, mark.position.0["next"].as_u64()), (2, Some(12)));
    assert_eq!(
        values(&log.read("t", 0, 0, 1 << 20).await.unwrap()),
        (0..12).collect::<Vec<_>>()
    );
    // Appending continues at the recovered end.
    assert_eq!(log.append("t", 0, &batch(12, 1), None).await.unwrap(), 12);
}

#[tokio::test]
async fn corrupt_checksum_is_cut_not_read() {
    let dir = tempfile::tempdir().unwrap();
    {
        let log = EmbeddedLog::open(dir.path(), settings()).unwrap();
        log.ensure_topic("t").unwrap();
        log.append("t", 0, &batch(0, 3), None).await.unwrap();
        log.append("t", 0, &batch(3, 3), None).await.unwrap();
    }
    let seg = dir.path().join("topics/t/0/00000000000000000000.log");
    let mut data = std::fs::read(&seg).unwrap();
    let n = data.len();
    data[n - 3] ^= 0xff;
    std::fs::write(&seg, data).unwrap();
    let log = EmbeddedLog::open(dir.path(), settings()).unwrap();
    assert_eq!(log.end_offset("t", 0).unwrap(), 3);
}

#[tokio::test]
async fn rolls_segments_and_applies_size_retention() {
    let dir = tempfile::tempdir().unwrap();
    let s = TopicSettings {
        segment_bytes: 4096,
        retention_bytes: Some(8192),
        ..TopicSettings::default()
    };
    let log = EmbeddedLog::open(dir.path(), s.clone()).unwrap();
    log.create_topic("t", 2).unwrap();
    for i in 0..100 {
        log.append("t", 1, &batch(i * 100, 100), None)
            .await
            .unwrap();
    }
    let segs = std::fs::read_dir(dir.path().join("topics/t/1"))
        .unwrap()
        .count();
    assert!((2..=4).contains(&segs), "{segs} segments");
    let start = log.start_offset("t", 1).unwrap();
    assert!(start > 0);
    // Reading below the retained start begins at the start.
    let got = log.read("t", 1, 0, 1 << 20).await.unwrap();
    assert_eq!(got[0].first_offset, start);
    assert_eq!(*values(&got).last().unwrap(), 9999);
    // Reopen sees the same.
    drop(log);
    let log = EmbeddedLog::open(dir.path(), s).unwrap();
    assert_eq!(log.start_offset("t", 1).unwrap(), start);
    assert_eq!(log.end_offset("t", 1).unwrap(), 10_000);
    assert_eq!(log.end_offset("t", 0).unwrap(), 0);
}

#[tokio::test]
async fn age_retention_and_timestamps() {
    let dir = tempfile::tempdir().unwrap();
    let log = EmbeddedLog::open(dir.path(), settings()).unwrap();
    log.ensure_topic("t").unwrap();
    for i in 0..50 {
        log.append("t", 0, &batch(i * 100, 100), None)
            .await
            .unwrap();
    }
    let now = now_ms();
    assert_eq!(
        log.offset_for_timestamp("t", 0, now + 60_000).unwrap(),
        5000
    );
    assert_eq!(log.offset_for_timestamp("t", 0, 0).unwrap(), 0);
    {
        let t = log.topic("t").unwrap();
        let mut p = t.partitions[0].lock().unwrap();
        let settings = TopicSettings {
            retention_ms: Some(1000),
            ..settings()
        };
        p.enforce_retention(&settings, now + 10_000).unwrap();
        assert_eq!(p.segments.len(), 1, "all sealed segments expired");
    }
}

#[tokio::test]
async fn group_offsets_persist() {
    let dir = tempfile::tempdir().unwrap();
    {
        let log = EmbeddedLog::open(dir.path(), settings()).unwrap();
        log.groups()
            .commit("g", [("t".to_owned(), 0, 42), ("t".to_owned(), 1, 7)])
            .unwrap();
    }
    let log = EmbeddedLog::open(dir.path(), settings()).unwrap();
    assert_eq!(log.groups().committed("g", "t", 0), Some(42));
    assert_eq!(log.groups().committed("g", "t", 1), Some(7));
    assert_eq!(log.groups().committed("g", "t", 2), None);
    assert_eq!(log.groups().committed("other", "t", 0), None);
}

/// Frames whose constant columns were compacted decode to far more than they store: a read
/// counts decoded bytes too, so it still returns about `max_bytes`.
#[tokio::test]
async fn reads_count_the_decoded_size_of_compacted_frames() {
    use arrow::array::{new_null_array, Array};
    let dir = tempfile::tempdir().unwrap();
    let log = EmbeddedLog::open(dir.path(), TopicSettings::default()).unwrap();
    log.ensure_topic("t").unwrap();
    let wide = DataType::Struct(
        (0..16)
            .map(|i| Field::new(format!("c{i}"), DataType::Int64, true))
            .collect(),
    );
    let schema = Arc::new(Schema::new(vec![
        Field::new("v", DataType::Int64, false),
        Field::new("before", wide.clone(), true),
    ]));
    for i in 0..4 {
        let b = RecordBatch::try_new(
            schema.clone(),
            vec![
                Arc::new(Int64Array::from_iter_values(i * 1000..(i + 1) * 1000)),
                new_null_array(&wide, 1000),
            ],
        )
        .unwrap();
        log.append("t", 0, &b, None).await.unwrap();
    }
    let stored = std::fs::metadata(dir.path().join("topics/t/0/00000000000000000000.log"))
        .unwrap()
        .len();
    assert!(
        stored < 4 * 16_000,
        "the null struct is stored once per frame: {stored}"
    );
    // Every frame fits the budget as stored; decoded, one frame alone exceeds it.
    let got = log.read("t", 0, 0, 100_000).await.unwrap();
    assert_eq!(got.len(), 1);
    assert_eq!(got[0].batch.column(1).null_count(), 1000);
    assert!(got[0].batch.get_array_memory_size() > 100_000);
    let all = log.read("t", 0, 0, 64 << 20).await.unwrap();
    assert_eq!(values(&all), (0..4000).collect::<Vec<_>>());
}

/// `append_all` writes consecutive batches of one partition as one run (one fsync), keeps
/// their order and offsets across partitions, and records the newest mark of each source.
#[tokio::test]
async fn group_appends_keep_order_offsets_and_marks() {
    let dir = tempfile::tempdir().unwrap();
    let mark = |seq: u64| SourceMark {
        source: "src".into(),
        seq,
        position: Position(serde_json::json!({ "seq": seq })),
    };
    let (m0, m1, m2) = (mark(0), mark(1), mark(2));
    let (b0, b1, b2, b3) = (batch(0, 3), batch(3, 2), batch(100, 4), batch(5, 1));
    {
        let log = EmbeddedLog::open(dir.path(), settings()).unwrap();
        log.create_topic("t", 2).unwrap();
        let item = |partition, batch, mark| Append {
            topic: "t",
            partition,
            batch,
            mark,
        };
        let bases = log
            .append_all(&[
                item(0, &b0, Some(&m0)),
                item(0, &b1, None),
                item(1, &b2, Some(&m1)),
                item(0, &b3, Some(&m2)),
            ])
            .await
            .unwrap();
        assert_eq!(bases, [0, 3, 0, 5]);
        assert_eq!(log.source_mark("src").unwrap().seq, 2);
    }
    // Everything is durable and found again on reopening, in order.
    let log = EmbeddedLog::open(dir.path(), settings()).unwrap();
    assert_eq!(log.source_mark("src").unwrap(), m2);
    let p0 = log.read("t", 0, 0, 1 << 20).await.unwrap();
    assert_eq!(values(&p0), [0, 1, 2, 3, 4, 5]);
    let p1 = log.read("t", 1, 0, 1 << 20).await.unwrap();
    assert_eq!(values(&p1), [100, 101, 102, 103]);
    // An empty batch fails the whole call before anything is written.
    let empty = batch(0, 0);
    let err = log
        .append_all(&[
            Append {
                topic: "t",
                partition: 0,
                batch: &b0,
                mark: None,
            },
            Append {
                topic: "t",
                partition: 0,
                batch: &empty,
                mark: None,
            },
        ])
        .await;
    assert!(err.is_err());
    assert_eq!(log.end_offset("t", 0).unwrap(), 6);
}

/// `stored_bytes` adds the frames a range touches, across segments, whole frames only.
#[tokio::test]
async fn stored_bytes_counts_the_frames_a_range_touches() {
    let dir = tempfile::tempdir().unwrap();
    let s = TopicSettings {
        segment_bytes: 4096,
        ..TopicSettings::default()
    };
    let log = EmbeddedLog::open(dir.path(), s).unwrap();
    log.create_topic("t", 1).unwrap();
    for i in 0..40 {
        log.append("t", 0, &batch(i * 100, 100), None)
            .await
            .unwrap();
    }
    let segs = std::fs::read_dir(dir.path().join("topics/t/0"))
        .unwrap()
        .count();
    assert!(segs >= 2, "{segs} segments");
    let bytes = |from, to| log.stored_bytes("t", 0, from, to).unwrap();
    let all = bytes(0, 4000);
    // Each frame alone, summed, is the whole; a range inside one frame costs the frame.
    let per_frame: u64 = (0..40).map(|i| bytes(i * 100, i * 100 + 100)).sum();
    assert_eq!(per_frame, all);
    assert_eq!(bytes(150, 151), bytes(100, 200));
    assert_eq!(bytes(150, 250), bytes(100, 300));
    assert_eq!(bytes(4000, 5000), 0);
    assert_eq!(bytes(0, u64::MAX), all);
    // What the segment files hold, less their headers and indexes, is at least `all`.
    let on_disk: u64 = std::fs::read_dir(dir.path().join("topics/t/0"))
        .unwrap()
        .map(|e| e.unwrap().metadata().unwrap().len())
        .sum();
    assert!(all > 0 && all <= on_disk, "{all} of {on_disk}");
}
