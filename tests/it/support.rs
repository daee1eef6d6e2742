//! Helpers: the binary, free loopback ports, pipeline files in temp dirs, reading topics.

use rivven_connect::engine::config::TopicSettings;
use rivven_connect::engine::topic::EmbeddedLog;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};

pub fn bin() -> &'static str {
    env!("CARGO_BIN_EXE_rivven-connect")
}

/// A free port on 127.0.0.1 (bound, then released).
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// A temp dir holding `p.yaml` with `sources`/`sinks` YAML and settings on free ports.
pub struct Pipeline {
    pub dir: tempfile::TempDir,
    pub health_port: u16,
}

impl Pipeline {
    pub fn new(body: &str) -> Self {
        Self::with_settings(body, "")
    }

    pub fn with_settings(body: &str, extra_settings: &str) -> Self {
        let dir = tempfile::tempdir().unwrap();
        let (health_port, metrics_port) = (free_port(), free_port());
        let yaml = format!(
            "version: \"1.0\"\n{body}\nsettings:\n  state_dir: {}\n  health: {{port: {health_port}}}\n  metrics: {{port: {metrics_port}}}\n{extra_settings}",
            dir.path().join("state").display()
        );
        std::fs::write(dir.path().join("p.yaml"), yaml).unwrap();
        Self { dir, health_port }
    }

    pub fn config(&self) -> PathBuf {
        self.dir.path().join("p.yaml")
    }

    pub fn state(&self) -> PathBuf {
        self.dir.path().join("state")
    }

    /// `rivven-connect <args> -c p.yaml`, waiting for it.
    pub fn cmd(&self, args: &[&str]) -> Output {
        self.cmd_env(args, &[])
    }

    /// `rivven-connect <args> -c p.yaml` with extra environment variables, waiting for it.
    pub fn cmd_env(&self, args: &[&str], env: &[(&str, &str)]) -> Output {
        Command::new(bin())
            .args(args)
            .arg("-c")
            .arg(self.config())
            .envs(env.iter().copied())
            .output()
            .unwrap()
    }

    /// Start `run` with stdout appended to `out`.
    pub fn spawn_run(&self, out: &Path) -> std::process::Child {
        self.spawn_run_env(out, &[])
    }

    /// Start `run` with `env` and stdout appended to `out`.
    pub fn spawn_run_env(&self, out: &Path, env: &[(&str, &str)]) -> std::process::Child {
        let file = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(out)
            .unwrap();
        Command::new(bin())
            .args(["run", "-c"])
            .arg(self.config())
            .env("RUST_LOG", "warn")
            .envs(env.iter().copied())
            .stdout(Stdio::from(file))
            .stderr(Stdio::piped())
            .spawn()
            .unwrap()
    }

    /// Open the state dir's topic log (the process must not be running).
    pub fn log(&self) -> EmbeddedLog {
        EmbeddedLog::open(&self.state(), TopicSettings::default()).unwrap()
    }
}

/// Every `sequence` value of topic partition 0, in offset order.
pub async fn topic_sequences(log: &EmbeddedLog, topic: &str) -> Vec<i64> {
    use arrow::array::{Array, Int64Array};
    let end = log.end_offset(topic, 0).unwrap();
    let mut out = Vec::new();
    let mut from = 0;
    while from < end {
        for b in log.read(topic, 0, from, 1 << 24).await.unwrap() {
            from = b.next_offset();
            let col = b.batch.column_by_name("sequence").unwrap();
            let seq = col.as_any().downcast_ref::<Int64Array>().unwrap();
            assert_eq!(seq.null_count(), 0);
            out.extend(seq.values().iter().copied());
        }
    }
    out
}

/// `sequence` of every parseable JSON line of `path`, and the count of unparseable lines.
pub fn printed_sequences(path: &Path) -> (Vec<i64>, usize) {
    let text = std::fs::read_to_string(path).unwrap_or_default();
    let mut seqs = Vec::new();
    let mut bad = 0;
    for line in text.lines().filter(|l| !l.is_empty()) {
        match serde_json::from_str::<serde_json::Value>(line) {
            Ok(v) => seqs.push(v["sequence"].as_i64().unwrap()),
            Err(_) => bad += 1,
        }
    }
    (seqs, bad)
}

pub fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

pub fn stdout(o: &Output) -> String {
    String::from_utf8_lossy(&o.stdout).into_owned()
}

/// kill(2): send `sig` to `pid`; returns kill's result.
pub fn unsafe_kill(pid: u32, sig: i32) -> i32 {
    #[allow(unsafe_code)]
    // SAFETY: kill(2) has no memory-safety preconditions.
    unsafe {
        libc::kill(pid as i32, sig)
    }
}

/// If `child` (spawned with piped stderr, as [`Pipeline::spawn_run`] does) has exited:
/// its exit status and what it wrote to stderr.
pub fn ended(child: &mut std::process::Child) -> Option<String> {
    let status = child.try_wait().unwrap()?;
    let mut err = String::new();
    if let Some(mut e) = child.stderr.take() {
        use std::io::Read;
        e.read_to_string(&mut err).unwrap();
    }
    Some(format!("{status:?}: {err}"))
}

/// Write the topic's batches (partition 0) to an Arrow IPC file: the reference.
pub async fn reference(log: &EmbeddedLog, topic: &str, path: &Path) -> usize {
    let end = log.end_offset(topic, 0).unwrap();
    let mut from = 0;
    let mut batches = Vec::new();
    while from < end {
        for b in log.read(topic, 0, from, 1 << 24).await.unwrap() {
            from = b.next_offset();
            batches.push(b.batch);
        }
    }
    let schema = batches[0].schema();
    let mut w =
        arrow::ipc::writer::FileWriter::try_new(std::fs::File::create(path).unwrap(), &schema)
            .unwrap();
    for b in &batches {
        w.write(&b.clone().with_schema(schema.clone()).unwrap())
            .unwrap();
    }
    w.finish().unwrap();
    batches.iter().map(|b| b.num_rows()).sum()
}

/// Start `run` five times and SIGKILL it 500-1100 ms later (unless it already ended),
/// calling `progress` after each: the number of kills and what `progress` returned.
pub fn kill_9_runs(p: &Pipeline, mut progress: impl FnMut() -> usize) -> (u32, Vec<usize>) {
    let mut kills = 0;
    let mut seen = Vec::new();
    for delay_ms in [900u64, 650, 1100, 500, 800] {
        let mut child = Command::new(bin())
            .args(["run", "-c"])
            .arg(p.config())
            .env("RUST_LOG", "warn")
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        std::thread::sleep(std::time::Duration::from_millis(delay_ms));
        if child.try_wait().unwrap().is_none() {
            assert_eq!(unsafe_kill(child.id(), libc::SIGKILL), 0);
            kills += 1;
        }
        child.wait().unwrap();
        seen.push(progress());
    }
    (kills, seen)
}

/// datagen `orders` (`max` events at `rate` per second; 0: as fast as it can) into a
/// `connector` sink `lake`, group `lake`, with `config` (the lines of its `config:`
/// mapping, each indented six spaces).
#[cfg(feature = "lakehouse")]
pub fn orders_into(connector: &str, max: u64, rate: u64, config: &str) -> Pipeline {
    Pipeline::new(&format!(
        "sources:
  gen:
    connector: datagen
    topic: orders
    config: {{pattern: orders, events_per_second: {rate}, max_events: {max}, seed: 5}}
sinks:
  lake:
    connector: {connector}
    topics: [orders]
    consumer_group: lake
    start_offset: earliest
    config:
{config}"
    ))
}

/// `rivven-connect <cmd>` for each of `cmds` (with `env`), each expected to succeed.
#[cfg(feature = "lakehouse")]
pub fn run_ok(p: &Pipeline, cmds: &[&str], env: &[(&str, &str)]) {
    for cmd in cmds {
        let out = p.cmd_env(&[cmd], env);
        assert!(out.status.success(), "{cmd}: {}", stderr(&out));
    }
}

/// The topic's rows written to `reference.arrow` in the pipeline's directory.
#[cfg(feature = "lakehouse")]
pub async fn reference_file(p: &Pipeline) -> (PathBuf, usize) {
    let ipc = p.dir.path().join("reference.arrow");
    let rows = reference(&p.log(), "orders", &ipc).await;
    (ipc, rows)
}

#[cfg(feature = "lakehouse")]
pub fn group_file(state: &Path, group: &str) -> Option<PathBuf> {
    let mut stack = vec![state.to_path_buf()];
    while let Some(d) = stack.pop() {
        for e in std::fs::read_dir(&d).ok()?.flatten() {
            let p = e.path();
            if p.is_dir() {
                stack.push(p);
            } else if p
                .file_name()
                .is_some_and(|n| n == format!("{group}.json").as_str())
            {
                return Some(p);
            }
        }
    }
    None
}
