//! `cdc_features.partitioner`: spreads rows over the partitions of their topic (see
//! [`crate::features`]).

use arrow::array::{Array, AsArray, BooleanArray, RecordBatch, StringArray};
use arrow::compute::cast;
use arrow::datatypes::{DataType, SchemaRef};
use rivven_engine::batch::{is_change_event_schema, META_KEY, META_NAMESPACE, META_STREAM};
use rivven_engine::config::{FieldError, Validate};
use rivven_engine::connector::{PartitionChoice, Routed};
use rivven_engine::Result;
use schemars::JsonSchema;
use serde::Deserialize;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use crate::field_list::Names;
use crate::image::{self, path_column};
use crate::op::{fresh_copy, no_predicate, split_by, Ctx, Op, Route, Spec};

/// How the partitioner chooses.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum Strategy {
    /// Row by row, in turn.
    RoundRobin,
    /// By the record key (or `key_columns`).
    #[default]
    KeyHash,
    /// By table name.
    TableHash,
    /// By `schema.table`.
    FullTableHash,
    /// One partition per batch, in turn.
    Sticky,
}

fn default_partitions() -> u32 {
    16
}

/// `cdc_features.partitioner`.
#[derive(Debug, Clone, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Partitioner {
    /// Run it.
    #[serde(default)]
    pub enabled: bool,
    /// Partitions per topic.
    #[serde(default = "default_partitions")]
    pub num_partitions: u32,
    /// How rows are spread.
    #[serde(default)]
    pub strategy: Strategy,
    /// Key columns for `key_hash` (default: the record key).
    #[serde(default)]
    pub key_columns: Names,
    /// Next partition of `round_robin` / `sticky`.
    #[serde(skip)]
    turn: Arc<AtomicU64>,
}

impl Validate for Partitioner {
    fn validate(&self) -> Vec<FieldError> {
        let mut errs = Vec::new();
        if !(1..=1000).contains(&self.num_partitions) {
            errs.push(FieldError::new("num_partitions", "between 1 and 1000"));
        }
        if !self.key_columns.is_empty() && self.strategy != Strategy::KeyHash {
            errs.push(FieldError::new(
                "key_columns",
                "only `strategy: key_hash` reads key columns",
            ));
        }
        errs
    }
}

impl Spec for Partitioner {
    /// A new chain starts with no turn of `round_robin` / `sticky`.
    fn fresh(&self) -> Option<Arc<dyn Spec>> {
        fresh_copy(self, |s| s.turn = Default::default())
    }

    fn compile(&self, input: &SchemaRef) -> std::result::Result<Arc<dyn Op>, FieldError> {
        let view = image::view_schema(input);
        let change = is_change_event_schema(input);
        let meta = |k: &str| input.metadata().get(k).cloned().unwrap_or_default();
        let by = match self.strategy {
            Strategy::RoundRobin => By::RoundRobin,
            Strategy::Sticky => By::Sticky,
            Strategy::TableHash if change => By::Columns(vec!["source.table".into()]),
            Strategy::FullTableHash if change => {
                By::Columns(vec!["source.schema".into(), "source.table".into()])
            }
            Strategy::TableHash => By::Constant(fnv(&[Some(meta(META_STREAM).as_bytes())])),
            Strategy::FullTableHash => By::Constant(fnv(&[
                Some(meta(META_NAMESPACE).as_bytes()),
                Some(meta(META_STREAM).as_bytes()),
            ])),
            Strategy::KeyHash => {
                let keys: Vec<String> = if self.key_columns.is_empty() {
                    meta(META_KEY)
                        .split(',')
                        .map(|s| s.trim().to_owned())
                        .filter(|s| !s.is_empty())
                        .collect()
                } else {
                    self.key_columns.to_vec()
                };
                if keys.is_empty() {
                    return Err(FieldError::new(
                        "key_columns",
                        "key_hash needs key columns: list them, or give the stream a record \
                         key (`value_to_key`)",
                    ));
                }
                for (i, k) in keys.iter().enumerate() {
                    let Some(ty) = image::path_type(&view, k) else {
                        return Err(FieldError::new(
                            format!("key_columns[{i}]"),
                            format!("no field `{k}` in the row"),
                        ));
                    };
                    if !arrow::compute::can_cast_types(&ty, &DataType::Utf8) {
                        return Err(FieldError::new(
                            format!("key_columns[{i}]"),
                            format!("cannot hash a {ty} value"),
                        ));
                    }
                }
                By::Columns(keys)
            }
        };
        Ok(Arc::new(PartitionOp {
            schema: input.clone(),
            view,
            of: self.num_partitions,
            by,
            turn: self.turn.clone(),
        }))
    }
}

enum By {
    RoundRobin,
    Sticky,
    Constant(u64),
    Columns(Vec<String>),
}

/// FNV-1a over length-prefixed values (`None`: null), stable everywhere.
fn fnv(values: &[Option<&[u8]>]) -> u64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    let mut feed = |b: u8| {
        h ^= u64::from(b);
        h = h.wrapping_mul(0x0100_0000_01b3);
    };
    for v in values {
        match v {
            None => feed(0),
            Some(bytes) => {
                feed(1);
                for b in (bytes.len() as u32).to_le_bytes() {
                    feed(b);
                }
                for &b in *bytes {
                    feed(b);
                }
            }
        }
    }
    h
}

struct PartitionOp {
    schema: SchemaRef,
    view: SchemaRef,
    of: u32,
    by: By,
    turn: Arc<AtomicU64>,
}

impl PartitionOp {
    /// The partition of every row. A tombstone (a change event with a null `op`, right
    /// after its delete) takes its delete's partition, whatever its key columns hold.
    fn partitions(&self, batch: &RecordBatch) -> Result<Vec<u32>> {
        let mut parts = self.spread(batch)?;
        if let Some(op) = batch.column_by_name("op").filter(|o| o.null_count() > 0) {
            for i in 1..parts.len() {
                if op.is_null(i) {
                    parts[i] = parts[i - 1];
                }
            }
        }
        Ok(parts)
    }

    fn spread(&self, batch: &RecordBatch) -> Result<Vec<u32>> {
        let n = batch.num_rows();
        let of = u64::from(self.of);
        Ok(match &self.by {
            By::Sticky => {
                let p = (self.turn.fetch_add(1, Ordering::Relaxed) % of) as u32;
                vec![p; n]
            }
            By::RoundRobin => {
                let start = self.turn.fetch_add(n as u64, Ordering::Relaxed);
                (0..n as u64).map(|i| ((start + i) % of) as u32).collect()
            }
            By::Constant(h) => vec![(h % of) as u32; n],
            By::Columns(paths) => {
                let view = image::view(batch, &self.view)?;
                let texts = paths
                    .iter()
                    .map(|p| {
                        let col = path_column(&view, p).ok_or_else(|| {
                            rivven_engine::Error::internal(format!("no field `{p}`"))
                        })?;
                        let t = cast(&col, &DataType::Utf8)?;
                        Ok(t.as_string::<i32>().clone())
                    })
                    .collect::<Result<Vec<StringArray>>>()?;
                (0..n)
                    .map(|i| {
                        let vals: Vec<Option<&[u8]>> = texts
                            .iter()
                            .map(|t| t.is_valid(i).then(|| t.value(i).as_bytes()))
                            .collect();
                        (fnv(&vals) % of) as u32
                    })
                    .collect()
            }
        })
    }
}

impl Route for PartitionOp {
    fn schema(&self) -> &SchemaRef {
        &self.schema
    }

    fn route(
        &self,
        input: Routed,
        mask: Option<&BooleanArray>,
        _: &Ctx<'_>,
        out: &mut Vec<Routed>,
    ) -> Result<()> {
        no_predicate(mask)?;
        for (p, batch) in split_by(&input.batch, self.partitions(&input.batch)?)? {
            out.push(Routed {
                batch,
                partition: Some(PartitionChoice {
                    partition: p,
                    of: self.of,
                }),
                ..input.clone()
            });
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fnv_is_stable() {
        // Partitions must not move between releases or machines.
        assert_eq!(fnv(&[Some(b"42")]) % 16, fnv(&[Some(b"42")]) % 16);
        assert_eq!(fnv(&[]), 0xcbf2_9ce4_8422_2325);
        assert_ne!(fnv(&[Some(b"a"), None]), fnv(&[None, Some(b"a")]));
    }
}
