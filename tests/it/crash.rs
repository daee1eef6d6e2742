//! Crash and shutdown behaviour: kill -9 loses nothing; SIGTERM drains.

use crate::support::*;
use std::time::{Duration, Instant};

fn pipeline(max_events: u64, rate: u64) -> Pipeline {
    Pipeline::new(&format!(
        "sources:
  gen:
    connector: datagen
    topic: events
    config: {{pattern: orders, events_per_second: {rate}, max_events: {max_events}, seed: 9}}
sinks:
  out:
    connector: stdout
    topics: [events]
    consumer_group: out
    start_offset: earliest
    config: {{format: json}}
"
    ))
}

/// SIGKILL several times during a datagen → embedded topic → stdout run. Afterwards the topic
/// holds every event exactly once and in order (the source resumed from its durable position
/// each time: no gap, no duplicate), and the sink printed every event at least once.
#[test]
fn kill_9_loses_nothing_and_source_resumes() {
    // Well above what five short runs can emit (a restarted run catches up faster than
    // `rate`: up to ~27,000 rows/s seen), so every kill hits a live stream.
    const N: u64 = 150_000;
    let p = pipeline(N, 15_000);
    let out = p.dir.path().join("out.jsonl");
    let mut kills = 0;
    let mut progress = Vec::new();
    // Deterministic kill times spread over the run.
    for delay_ms in [700u64, 450, 900, 300, 650] {
        let mut child = p.spawn_run(&out);
        std::thread::sleep(Duration::from_millis(delay_ms));
        if child.try_wait().unwrap().is_none() {
            child.kill().unwrap(); // SIGKILL
            kills += 1;
        }
        child.wait().unwrap();
        progress.push(printed_sequences(&out).0.len());
        // A killed writer may leave a partial last line; end it so the next run starts a line.
        std::fs::OpenOptions::new()
            .append(true)
            .open(&out)
            .and_then(|mut f| {
                use std::io::Write;
                f.write_all(b"\n")
            })
            .unwrap();
    }
    assert!(kills >= 3, "the run ended before it could be killed");
    // Every killed run moved data, and none had finished: the kills hit a live stream.
    assert!(
        progress.windows(2).all(|w| w[0] < w[1]),
        "no progress between kills: {progress:?}"
    );
    assert!(
        (*progress.last().unwrap() as u64) < N,
        "finished before the last kill: {progress:?}"
    );
    let mut child = p.spawn_run(&out);
    let status = child.wait().unwrap();
    assert!(status.success());

    let rt = tokio::runtime::Runtime::new().unwrap();
    let topic = rt.block_on(topic_sequences(&p.log(), "events"));
    assert_eq!(
        topic.len() as u64,
        N,
        "topic holds every event exactly once"
    );
    assert!(
        topic.iter().copied().eq(0..N as i64),
        "topic is the exact sequence 0..N"
    );

    let (printed, torn) = printed_sequences(&out);
    let mut seen = vec![false; N as usize];
    for s in &printed {
        seen[*s as usize] = true;
    }
    let missing = seen.iter().filter(|s| !**s).count();
    assert_eq!(missing, 0, "sink lost {missing} events");
    let duplicates = printed.len() as u64 - N;
    eprintln!("kill -9 x{kills} (printed after each: {progress:?}): {N} events, {duplicates} re-delivered duplicates, {torn} torn lines");
    assert!(torn <= kills, "more torn lines than kills");
}

/// SIGTERM during a run: exits 0 within seconds, and everything the sink took was printed
/// and committed (committed offset = number of printed events, each printed once).
#[test]
fn sigterm_drains_and_exits_cleanly() {
    let p = pipeline(0, 20_000);
    let out = p.dir.path().join("out.jsonl");
    let mut child = p.spawn_run(&out);
    std::thread::sleep(Duration::from_millis(1500));
    let sent = Instant::now();
    // SAFETY-free: libc::kill with a valid pid and signal number.
    let rc = unsafe_kill(child.id(), libc::SIGTERM);
    assert_eq!(rc, 0);
    let status = loop {
        if let Some(s) = child.try_wait().unwrap() {
            break s;
        }
        assert!(
            sent.elapsed() < Duration::from_secs(30),
            "no exit 30 s after SIGTERM"
        );
        std::thread::sleep(Duration::from_millis(20));
    };
    eprintln!("exited {:?} after SIGTERM", sent.elapsed());
    assert!(status.success(), "{status:?}");
    let (printed, torn) = printed_sequences(&out);
    assert_eq!(torn, 0);
    assert!(!printed.is_empty());
    assert!(
        printed.iter().copied().eq(0..printed.len() as i64),
        "printed once each, in order"
    );
    let log = p.log();
    let committed = log.groups().committed("out", "events", 0).unwrap();
    assert_eq!(
        committed,
        printed.len() as u64,
        "every printed batch committed, nothing taken left unprinted"
    );
    // The source's last batches are durable in the topic too.
    let rt = tokio::runtime::Runtime::new().unwrap();
    let topic = rt.block_on(topic_sequences(&log, "events"));
    assert!(topic.iter().copied().eq(0..topic.len() as i64));
    assert!(topic.len() >= printed.len());
}
