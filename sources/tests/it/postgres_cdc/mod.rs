//! postgres-cdc against a real PostgreSQL 15: type mapping, change events, snapshot
//! consistency under concurrent writes, positions. Shared helpers here; the tests in the
//! submodules.

use arrow::array::{Array, AsArray, RecordBatch, StructArray};
use arrow::datatypes::{
    Date32Type, Decimal128Type, Float32Type, Float64Type, Int16Type, Int32Type, Int64Type,
    IntervalMonthDayNanoType, Time64MicrosecondType, TimestampMicrosecondType,
};
use arrow::util::display::{ArrayFormatter, FormatOptions};
use rivven_engine::batch::{Position, SourceBatch};
use rivven_engine::connector::Source;
use rivven_sources::postgres_cdc::{PostgresCdcConfig, PostgresCdcSource};
use rivven_testkit::{unique_name, Postgres, TempDatabase};
use std::collections::BTreeMap;
use std::time::{Duration, Instant};

mod operations;
mod snapshot;
mod stream;
mod types;

pub(super) struct Db {
    pub pg: Postgres,
    pub name: String,
    /// Drops the database and its slots (they pin WAL on the shared server).
    _temp: TempDatabase,
}

impl Db {
    pub(super) fn new() -> Option<Db> {
        let pg = rivven_testkit::require(rivven_testkit::postgres())?;
        let temp = pg.temp_database("cdc").unwrap();
        Some(Db {
            pg,
            name: temp.name.clone(),
            _temp: temp,
        })
    }

    pub(super) fn sql(&self, sql: &str) -> String {
        self.pg
            .psql(&self.name, sql)
            .unwrap_or_else(|e| panic!("{sql}: {e}"))
    }

    /// Run SQL on a thread (DDL may wait for the snapshot's locks, which only the source,
    /// polled meanwhile, releases).
    pub(super) fn sql_bg(&self, sql: &str) -> std::thread::JoinHandle<String> {
        let (pg, name, sql) = (self.pg.clone(), self.name.clone(), sql.to_string());
        std::thread::spawn(move || {
            pg.psql(&name, &sql)
                .unwrap_or_else(|e| panic!("{sql}: {e}"))
        })
    }

    pub(super) fn config(&self, extra: &str) -> PostgresCdcConfig {
        self.config_at("127.0.0.1", extra)
    }

    pub(super) fn config_at(&self, host: &str, extra: &str) -> PostgresCdcConfig {
        let yaml = format!(
            "host: {host}\nport: {}\ndatabase: {}\nuser: {}\npassword: {}\n\
             slot_name: {}\npublication: {}\n{extra}",
            self.pg.port,
            self.name,
            self.pg.user,
            self.pg.password,
            unique_name("slot"),
            unique_name("pub"),
        );
        serde_yaml::from_str(&yaml).unwrap()
    }
}

/// Poll until `pred` holds for everything collected, or panic after 30 s.
pub(super) async fn collect_until(
    src: &mut PostgresCdcSource,
    out: &mut Vec<SourceBatch>,
    pred: impl Fn(&[SourceBatch]) -> bool,
) {
    let deadline = Instant::now() + Duration::from_secs(30);
    while !pred(out) {
        assert!(
            Instant::now() < deadline,
            "timed out; got {} batches",
            out.len()
        );
        if let Ok(r) = tokio::time::timeout(Duration::from_millis(500), src.poll(1000)).await {
            if let Some(b) = r.unwrap() {
                src.commit(&b.position).await.unwrap();
                out.push(b);
            }
        }
    }
}

pub(super) fn rows(batches: &[SourceBatch]) -> usize {
    batches.iter().map(|b| b.batch.num_rows()).sum()
}

pub(super) fn ops(batches: &[SourceBatch]) -> Vec<String> {
    batches
        .iter()
        .flat_map(|b| {
            let op = b
                .batch
                .column_by_name("op")
                .unwrap()
                .as_string::<i32>()
                .clone();
            (0..op.len()).map(move |i| op.value(i).to_string())
        })
        .collect()
}

fn image<'a>(b: &'a RecordBatch, which: &str) -> &'a StructArray {
    b.column_by_name(which).unwrap().as_struct()
}

/// `column=value` text of row `i` of a struct image (null image → "null").
pub(super) fn row_text(s: &StructArray, i: usize) -> String {
    if s.is_null(i) {
        return "null".into();
    }
    let opts = FormatOptions::default().with_null("NULL");
    s.fields()
        .iter()
        .zip(s.columns())
        .map(|(f, c)| {
            let fmt = ArrayFormatter::try_new(c.as_ref(), &opts).unwrap();
            format!("{}={}", f.name(), fmt.value(i))
        })
        .collect::<Vec<_>>()
        .join(" ")
}

/// Apply change events to a key → row-text map (the table's state as seen downstream).
pub(super) fn apply(state: &mut BTreeMap<String, String>, batches: &[SourceBatch]) {
    for b in batches {
        let op = b
            .batch
            .column_by_name("op")
            .unwrap()
            .as_string::<i32>()
            .clone();
        let before = image(&b.batch, "before");
        let after = image(&b.batch, "after");
        for i in 0..b.batch.num_rows() {
            let key = |s: &StructArray| {
                let id = s.column_by_name("id").unwrap().as_primitive::<Int32Type>();
                id.value(i).to_string()
            };
            match op.value(i) {
                "r" | "c" => {
                    let prev = state.insert(key(after), row_text(after, i));
                    assert!(
                        prev.is_none(),
                        "insert of existing key {} (overlap)",
                        key(after)
                    );
                }
                "u" => {
                    if before.is_valid(i) {
                        state.remove(&key(before));
                    }
                    state.insert(key(after), row_text(after, i));
                }
                "d" => {
                    assert!(
                        state.remove(&key(before)).is_some(),
                        "delete of missing key"
                    );
                }
                other => panic!("unexpected op {other}"),
            }
        }
    }
}
