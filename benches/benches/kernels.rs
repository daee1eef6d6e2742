//! Criterion micro-benchmarks of hot kernels: building a change-event batch in datagen,
//! and one embedded-log frame round trip (IPC encode + CRC + write, read + CRC + decode).
//! Run with `cargo bench -p rivven-bench --bench kernels`.
#![allow(clippy::unwrap_used, clippy::expect_used, missing_docs)]

use criterion::{criterion_group, criterion_main, BatchSize, Criterion, Throughput};
use rivven_engine::config::{FsyncPolicy, TopicSettings};
use rivven_engine::connector::Source;
use rivven_engine::topic::EmbeddedLog;
use rivven_sources::datagen::DatagenSource;

const ROWS: usize = 8192;

fn source(rows: u64) -> DatagenSource {
    let cfg = serde_yaml::from_str(&format!(
        "pattern: users\ncdc_mode: true\nseed: 7\nevents_per_second: 0\nmax_events: {rows}\n"
    ))
    .unwrap();
    DatagenSource::new(cfg)
}

fn datagen_batch(c: &mut Criterion) {
    let rt = tokio::runtime::Builder::new_current_thread()
        .build()
        .unwrap();
    let mut g = c.benchmark_group("datagen");
    g.throughput(Throughput::Elements(ROWS as u64));
    g.bench_function("cdc_batch_8192", |b| {
        b.iter_batched(
            || {
                let mut s = source(ROWS as u64);
                rt.block_on(s.open(None)).unwrap();
                s
            },
            |mut s| rt.block_on(s.poll(ROWS)).unwrap(),
            BatchSize::LargeInput,
        )
    });
    g.finish();
}

fn log_frame(c: &mut Criterion) {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
        .unwrap();
    let batch = rt.block_on(async {
        let mut s = source(ROWS as u64);
        s.open(None).await.unwrap();
        s.poll(ROWS).await.unwrap().unwrap().batch
    });
    let dir = tempfile::tempdir().unwrap();
    let settings = TopicSettings {
        fsync: FsyncPolicy::Never,
        ..TopicSettings::default()
    };
    let log = EmbeddedLog::open(dir.path(), settings).unwrap();
    log.ensure_topic("k").unwrap();
    let mut g = c.benchmark_group("embedded_log");
    g.throughput(Throughput::Bytes(batch.get_array_memory_size() as u64));
    g.bench_function("append_read_8192", |b| {
        b.iter(|| {
            rt.block_on(async {
                let off = log.append("k", 0, &batch, None).await.unwrap();
                let got = log.read("k", 0, off, 1).await.unwrap();
                assert_eq!(got[0].batch.num_rows(), ROWS);
            })
        })
    });
    g.finish();
}

criterion_group!(benches, datagen_batch, log_frame);
criterion_main!(benches);
