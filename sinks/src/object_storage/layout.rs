//! Object names: `<prefix><topic or route>/<hive partitions>/<topic>+<partition>+<offset>.<ext>`.
//!
//! - The directory is the topic the rows were read from, or the destination a sink-side
//!   router transform chose.
//! - Hive partitions (`dt=2026-11-22/hour=07`, `region=eu`) come from the append time of
//!   the rows, a timestamp column, or column values. Values are escaped as Hive does (`/`,
//!   `=`, `%`, ... become `%XX`); null is `__HIVE_DEFAULT_PARTITION__`.
//! - The file name holds the topic partition and the offset of the file's first row,
//!   zero-padded to 20 digits so names sort by offset. Two files of one topic batch in one
//!   directory (a sink-side transform split it) get `-1`, `-2`, ... suffixes.

use super::config::Partitioning;
use arrow::array::{Array, ArrayRef, AsArray, RecordBatch, StructArray, UInt32Array};
use arrow::compute::take_record_batch;
use arrow::datatypes::{DataType, Int64Type, TimeUnit};
use arrow::util::display::{ArrayFormatter, FormatOptions};
use chrono::{DateTime, Utc};
use rivven_engine::batch::SinkBatch;
use rivven_engine::{Error, Result};
use std::collections::HashMap;

/// Hive's name for the partition of null values.
pub const HIVE_NULL: &str = "__HIVE_DEFAULT_PARTITION__";

/// Rows of one batch bound for one directory.
#[derive(Debug)]
pub struct Group {
    /// Directory key (prefix, topic or route, partitions), ending in `/`.
    pub dir: String,
    /// The rows, in their order in the batch.
    pub batch: RecordBatch,
    /// Index in the source batch of each row (`None`: all rows, in order).
    pub rows: Option<Vec<u32>>,
}

impl Group {
    /// Index in the source batch of row `i` of this group.
    pub fn source_row(&self, i: usize) -> u64 {
        self.rows.as_ref().map_or(i as u64, |r| u64::from(r[i]))
    }
}

/// The naming scheme of one sink.
#[derive(Debug, Clone)]
pub struct Layout {
    prefix: String,
    partitioning: Partitioning,
    /// (escaped directory name, column path) per partition field.
    fields: Vec<(String, Vec<String>)>,
    timestamp: Option<Vec<String>>,
    extension: String,
}

impl Layout {
    /// A layout; `prefix` is normalized to end in `/` (or be empty).
    pub fn new(
        prefix: &str,
        partitioning: Partitioning,
        partition_fields: &[String],
        timestamp_field: Option<&str>,
        extension: String,
    ) -> Self {
        let prefix = clean_path(prefix);
        let split = |f: &str| f.split('.').map(str::to_owned).collect::<Vec<_>>();
        Layout {
            prefix: if prefix.is_empty() {
                prefix
            } else {
                format!("{prefix}/")
            },
            partitioning,
            fields: partition_fields
                .iter()
                .map(|f| (escape(f.rsplit('.').next().unwrap_or(f)), split(f)))
                .collect(),
            timestamp: timestamp_field.map(split),
            extension,
        }
    }

    /// The key prefix every object of this sink starts with.
    pub fn prefix(&self) -> &str {
        &self.prefix
    }

    /// Split `b` by directory, keeping row order within each directory; directories come
    /// in the order of their first row.
    pub fn split(&self, b: &SinkBatch) -> Result<Vec<Group>> {
        let base = format!(
            "{}{}/",
            self.prefix,
            clean_path(b.route.as_deref().unwrap_or(&b.topic))
        );
        let keys: Vec<String> = match self.partitioning {
            Partitioning::None => return Ok(vec![whole(base, b)]),
            Partitioning::Day | Partitioning::Hour => match &self.timestamp {
                None => {
                    let dir = format!("{base}{}", time_dirs(b.append_time_ms, self.partitioning));
                    return Ok(vec![whole(dir, b)]);
                }
                Some(path) => {
                    let ms = epoch_ms(&column(&b.batch, path)?)?;
                    (0..b.batch.num_rows())
                        .map(|i| match ms[i] {
                            Some(ms) => time_dirs(ms, self.partitioning),
                            None if self.partitioning == Partitioning::Hour => {
                                format!("dt={HIVE_NULL}/hour={HIVE_NULL}/")
                            }
                            None => format!("dt={HIVE_NULL}/"),
                        })
                        .collect()
                }
            },
            Partitioning::Field => {
                let mut keys = vec![String::new(); b.batch.num_rows()];
                for (name, path) in &self.fields {
                    let col = column(&b.batch, path)?;
                    let fmt = ArrayFormatter::try_new(col.as_ref(), &FormatOptions::default())?;
                    for (i, key) in keys.iter_mut().enumerate() {
                        key.push_str(name);
                        key.push('=');
                        if col.is_null(i) {
                            key.push_str(HIVE_NULL);
                        } else {
                            key.push_str(&escape(&fmt.value(i).to_string()));
                        }
                        key.push('/');
                    }
                }
                keys
            }
        };
        let mut order: Vec<(String, Vec<u32>)> = Vec::new();
        let mut index: HashMap<String, usize> = HashMap::new();
        for (row, key) in keys.into_iter().enumerate() {
            let slot = *index.entry(key.clone()).or_insert_with(|| {
                order.push((key, Vec::new()));
                order.len() - 1
            });
            order[slot].1.push(row as u32);
        }
        if order.len() == 1 {
            let (key, _) = order.pop().unwrap_or_default();
            return Ok(vec![whole(format!("{base}{key}"), b)]);
        }
        order
            .into_iter()
            .map(|(key, rows)| {
                let idx = UInt32Array::from(rows.clone());
                Ok(Group {
                    dir: format!("{base}{key}"),
                    batch: take_record_batch(&b.batch, &idx)?,
                    rows: Some(rows),
                })
            })
            .collect()
    }

    /// The object name for a file in `dir` whose first row has `offset`; `seq` > 0 adds a
    /// suffix for a second file with the same first offset.
    pub fn object_name(
        &self,
        dir: &str,
        topic: &str,
        partition: u32,
        offset: u64,
        seq: u32,
    ) -> String {
        let suffix = if seq == 0 {
            String::new()
        } else {
            format!("-{seq}")
        };
        format!(
            "{dir}{}+{partition}+{offset:020}{suffix}{}",
            escape(topic),
            self.extension
        )
    }
}

fn whole(dir: String, b: &SinkBatch) -> Group {
    Group {
        dir,
        batch: b.batch.clone(),
        rows: None,
    }
}

/// `dt=YYYY-MM-DD/` or `dt=YYYY-MM-DD/hour=HH/` (UTC).
fn time_dirs(ms: i64, p: Partitioning) -> String {
    let t = DateTime::<Utc>::from_timestamp_millis(ms).unwrap_or_default();
    match p {
        Partitioning::Hour => t.format("dt=%Y-%m-%d/hour=%H/").to_string(),
        _ => t.format("dt=%Y-%m-%d/").to_string(),
    }
}

/// The column at a dotted path (`after.region`).
fn column(batch: &RecordBatch, path: &[String]) -> Result<ArrayRef> {
    let missing = || {
        Error::data(format!(
            "partition column `{}` is not in the batch (columns: {})",
            path.join("."),
            batch
                .schema()
                .fields()
                .iter()
                .map(|f| f.name().as_str())
                .collect::<Vec<_>>()
                .join(", ")
        ))
    };
    // A column literally named `a.b` (a flattened field) wins over the path a → b.
    if let Some(c) = batch.column_by_name(&path.join(".")) {
        return Ok(c.clone());
    }
    let (first, rest) = path.split_first().ok_or_else(missing)?;
    let mut col = batch.column_by_name(first).ok_or_else(missing)?.clone();
    for name in rest {
        let s = col
            .as_any()
            .downcast_ref::<StructArray>()
            .ok_or_else(missing)?;
        let child = s.column_by_name(name).ok_or_else(missing)?;
        // A field of a null struct is null.
        col = crate::format::with_parent_nulls(child, s.nulls())?;
    }
    Ok(col)
}

/// Milliseconds since the epoch of a timestamp, date or integer (milliseconds) column.
fn epoch_ms(col: &ArrayRef) -> Result<Vec<Option<i64>>> {
    let scale: (i64, i64) = match col.data_type() {
        DataType::Timestamp(TimeUnit::Second, _) => (1000, 1),
        DataType::Timestamp(TimeUnit::Millisecond, _) | DataType::Int64 | DataType::Date64 => {
            (1, 1)
        }
        DataType::Timestamp(TimeUnit::Microsecond, _) => (1, 1000),
        DataType::Timestamp(TimeUnit::Nanosecond, _) => (1, 1_000_000),
        DataType::Date32 => (86_400_000, 1),
        other => {
            return Err(Error::data(format!(
                "timestamp_field must be a timestamp, date or int64 (epoch ms) column, not {other}"
            )))
        }
    };
    let as_i64 = arrow::compute::cast(col, &DataType::Int64)?;
    let v = as_i64.as_primitive::<Int64Type>();
    (0..v.len())
        .map(|i| {
            if v.is_null(i) {
                return Ok(None);
            }
            let ms = v.value(i).checked_mul(scale.0).ok_or_else(|| {
                Error::data(format!(
                    "timestamp_field value {} is out of range",
                    v.value(i)
                ))
            })?;
            Ok(Some(ms.div_euclid(scale.1)))
        })
        .collect()
}

/// Hive path escaping of a partition name or value.
pub fn escape(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        if c.is_control()
            || matches!(
                c,
                '"' | '#'
                    | '%'
                    | '\''
                    | '*'
                    | '/'
                    | ':'
                    | '='
                    | '?'
                    | '\\'
                    | '{'
                    | '}'
                    | '['
                    | ']'
                    | '^'
                    | '+'
            )
        {
            let mut buf = [0u8; 4];
            for byte in c.encode_utf8(&mut buf).bytes() {
                out.push_str(&format!("%{byte:02X}"));
            }
        } else {
            out.push(c);
        }
    }
    if out.is_empty() || out == "." || out == ".." {
        out = out.replace('.', "%2E");
        if out.is_empty() {
            out.push_str(HIVE_NULL);
        }
    }
    out
}

/// A key path without empty, `.` or `..` segments.
fn clean_path(p: &str) -> String {
    p.split('/')
        .filter(|s| !s.is_empty())
        .map(|s| match s {
            "." | ".." => s.replace('.', "%2E"),
            s => s.to_owned(),
        })
        .collect::<Vec<_>>()
        .join("/")
}

#[cfg(test)]
mod tests {
    use super::*;
    use arrow::array::{Int64Array, StringArray};
    use arrow::datatypes::{Field, Schema};
    use std::sync::Arc;

    fn batch() -> SinkBatch {
        let schema = Arc::new(Schema::new(vec![
            Field::new("id", DataType::Int64, false),
            Field::new("region", DataType::Utf8, true),
        ]));
        let batch = RecordBatch::try_new(
            schema,
            vec![
                Arc::new(Int64Array::from(vec![1, 2, 3, 4])) as ArrayRef,
                Arc::new(StringArray::from(vec![
                    Some("eu"),
                    Some("us/w"),
                    None,
                    Some("eu"),
                ])),
            ],
        )
        .unwrap();
        SinkBatch {
            batch,
            topic: Arc::from("orders"),
            partition: 0,
            first_offset: 40,
            end_offset: 44,
            append_time_ms: 1_764_000_000_000,
            route: None,
        }
    }

    #[test]
    fn field_partitions_keep_row_order() {
        let l = Layout::new(
            "/out//x/",
            Partitioning::Field,
            &["region".into()],
            None,
            ".jsonl".into(),
        );
        let groups = l.split(&batch()).unwrap();
        let dirs: Vec<&str> = groups.iter().map(|g| g.dir.as_str()).collect();
        assert_eq!(
            dirs,
            [
                "out/x/orders/region=eu/",
                "out/x/orders/region=us%2Fw/",
                "out/x/orders/region=__HIVE_DEFAULT_PARTITION__/"
            ]
        );
        assert_eq!(groups[0].rows, Some(vec![0, 3]));
        assert_eq!(groups[0].source_row(1), 3);
        assert_eq!(
            l.object_name(&groups[0].dir, "orders", 0, 43, 0),
            "out/x/orders/region=eu/orders+0+00000000000000000043.jsonl"
        );
        assert_eq!(
            l.object_name("d/", "a+b", 2, 1, 2),
            "d/a%2Bb+2+00000000000000000001-2.jsonl"
        );
    }

    #[test]
    fn time_partitions_use_append_time() {
        let l = Layout::new("", Partitioning::Hour, &[], None, ".parquet".into());
        let g = l.split(&batch()).unwrap();
        assert_eq!(g.len(), 1);
        assert_eq!(g[0].dir, "orders/dt=2025-11-24/hour=16/");
        assert!(g[0].rows.is_none());
        let l = Layout::new("p", Partitioning::Day, &[], Some("id"), ".parquet".into());
        let mut b = batch();
        b.route = Some(Arc::from("routed"));
        let g = l.split(&b).unwrap();
        assert_eq!(g[0].dir, "p/routed/dt=1970-01-01/");
    }
}
