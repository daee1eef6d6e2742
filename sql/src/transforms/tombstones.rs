//! `cdc_features.tombstones`: a tombstone row after every delete, for compacted topics (see
//! [`crate::features`]).

use arrow::array::{Array, ArrayRef, AsArray, BooleanArray, RecordBatch, StructArray, UInt32Array};
use arrow::compute::{cast, nullif, take_record_batch};
use arrow::datatypes::{DataType, Field, FieldRef, Fields, Schema, SchemaRef};
use rivven_engine::batch::{op, META_KEY};
use rivven_engine::config::{FieldError, Validate};
use rivven_engine::Result;
use schemars::JsonSchema;
use serde::Deserialize;
use std::sync::Arc;

use crate::image;
use crate::op::{retype, Ctx, Op, Spec};

fn yes() -> bool {
    true
}

/// What a tombstone's `before` holds.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum TombstoneBehavior {
    /// The record key columns (the whole image when no key is declared).
    #[default]
    EmitWithKey,
    /// Nothing: `before` is null.
    EmitNull,
}

/// `cdc_features.tombstones`.
#[derive(Debug, Clone, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Tombstones {
    /// Run it.
    #[serde(default)]
    pub enabled: bool,
    /// Emit a tombstone after each delete (`false`: none are emitted).
    #[serde(default = "yes", alias = "after_delete")]
    pub emit_tombstone_after_delete: bool,
    /// What the tombstone's `before` holds.
    #[serde(default)]
    pub behavior: TombstoneBehavior,
}

impl Validate for Tombstones {}

impl Spec for Tombstones {
    fn compile(&self, input: &SchemaRef) -> std::result::Result<Arc<dyn Op>, FieldError> {
        let Some(image) = image::image_fields(input) else {
            return Err(FieldError::new(
                "",
                "tombstones need change events (`op`, `before`, `after`, `source`); these \
                 rows are flat (from the source, or flattened by a transform)",
            ));
        };
        let keys: Vec<String> = input
            .metadata()
            .get(META_KEY)
            .map(|k| {
                k.split(',')
                    .map(|s| s.trim().to_owned())
                    .filter(|s| !s.is_empty())
                    .collect()
            })
            .unwrap_or_default();
        let keep_child: Vec<bool> = image
            .iter()
            .map(|f| keys.is_empty() || keys.iter().any(|k| k == f.name()))
            .collect();
        let before_fields: Fields = image
            .iter()
            .map(|f| Arc::new(f.as_ref().clone().with_nullable(true)))
            .collect::<Vec<FieldRef>>()
            .into();
        let fields: Vec<FieldRef> = input
            .fields()
            .iter()
            .map(|f| match f.name().as_str() {
                "op" => Arc::new(f.as_ref().clone().with_nullable(true)),
                // Both images get nullable children, so they keep one type (readers
                // combine them: `after`, else `before`).
                name @ ("before" | "after") if self.behavior == TombstoneBehavior::EmitWithKey => {
                    Arc::new(
                        Field::new(name, DataType::Struct(before_fields.clone()), true)
                            .with_metadata(f.metadata().clone()),
                    )
                }
                "before" | "after" => Arc::new(f.as_ref().clone().with_nullable(true)),
                _ => f.clone(),
            })
            .collect();
        Ok(Arc::new(TombstoneOp {
            schema: Arc::new(Schema::new_with_metadata(fields, input.metadata().clone())),
            behavior: self.behavior,
            keep_child,
        }))
    }
}

struct TombstoneOp {
    schema: SchemaRef,
    behavior: TombstoneBehavior,
    /// Which `before` children a tombstone keeps (`emit_with_key`).
    keep_child: Vec<bool>,
}

impl Op for TombstoneOp {
    fn output_schema(&self) -> &SchemaRef {
        &self.schema
    }

    fn map(&self, batch: &RecordBatch, _: &Ctx<'_>) -> Result<RecordBatch> {
        let ops = cast(
            batch
                .column_by_name("op")
                .ok_or_else(|| rivven_engine::Error::internal("change event without `op`"))?,
            &DataType::Utf8,
        )?;
        let ops = ops.as_string::<i32>();
        // Every row, and a second copy of each delete: the tombstone.
        let mut index: Vec<u32> = Vec::with_capacity(batch.num_rows());
        let mut tomb: Vec<bool> = Vec::with_capacity(batch.num_rows());
        for i in 0..batch.num_rows() {
            index.push(i as u32);
            tomb.push(false);
            if ops.is_valid(i) && ops.value(i) == op::DELETE {
                index.push(i as u32);
                tomb.push(true);
            }
        }
        let taken = if index.len() == batch.num_rows() {
            batch.clone()
        } else {
            take_record_batch(batch, &UInt32Array::from(index))?
        };
        let tomb = BooleanArray::from(tomb);
        let columns = self
            .schema
            .fields()
            .iter()
            .zip(taken.columns())
            .map(|(f, c)| -> Result<ArrayRef> {
                let c = match f.name().as_str() {
                    "op" | "after" => nullif(c, &tomb)?,
                    "before" if self.behavior == TombstoneBehavior::EmitNull => nullif(c, &tomb)?,
                    "before" => self.key_only(c, &tomb, f.data_type())?,
                    _ => c.clone(),
                };
                retype(&c, f.data_type())
            })
            .collect::<Result<Vec<_>>>()?;
        Ok(RecordBatch::try_new(self.schema.clone(), columns)?)
    }
}

impl TombstoneOp {
    /// `before` where tombstone rows keep only the key children.
    fn key_only(&self, before: &ArrayRef, tomb: &BooleanArray, to: &DataType) -> Result<ArrayRef> {
        let DataType::Struct(fields) = to else {
            return Err(rivven_engine::Error::internal("`before` is not a struct"));
        };
        let sa = before.as_struct();
        let children = sa
            .columns()
            .iter()
            .zip(&self.keep_child)
            .zip(fields.iter())
            .map(|((c, keep), f)| {
                let c = if *keep { c.clone() } else { nullif(c, tomb)? };
                retype(&c, f.data_type())
            })
            .collect::<Result<Vec<_>>>()?;
        Ok(Arc::new(StructArray::try_new(
            fields.clone(),
            children,
            sa.nulls().cloned(),
        )?))
    }
}
