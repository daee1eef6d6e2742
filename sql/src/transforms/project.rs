//! Row rewrites as projections: each output field of the row is one compiled expression over
//! the input row. Applied to flat batches directly and to both images of change events.

use arrow::array::{
    ArrayRef, Date32Array, RecordBatch, RecordBatchOptions, TimestampMillisecondArray,
};
use arrow::datatypes::{DataType, Field, FieldRef, Schema, SchemaRef};
use datafusion::common::Column;
use datafusion::logical_expr::Expr;
use datafusion::physical_expr::PhysicalExpr;
use rivven_engine::config::FieldError;
use std::sync::Arc;

use super::envelope::images_schema;
use crate::expr;
use crate::image::{image_schema, map_images};
use crate::op::{Ctx, Op};
use rivven_engine::Result;

/// How one output field is computed.
#[derive(Clone)]
pub enum Value {
    /// A compiled expression over the input row.
    Expr(Arc<dyn PhysicalExpr>),
    /// The processing time, per batch (millisecond UTC timestamp).
    Now,
    /// The processing date, per batch (UTC).
    Today,
}

/// Builds a projection over a row schema: start from the input fields, then replace, add,
/// drop and rename.
pub struct Builder {
    input: SchemaRef,
    out: Vec<(String, Value, DataType, bool)>,
}

/// A column reference that never parses its name (names may contain dots).
pub fn col(name: &str) -> Expr {
    Expr::Column(Column::from_name(name))
}

impl Builder {
    /// Every field of the row image of `input`, unchanged.
    pub fn new(input: &SchemaRef) -> Result<Self, FieldError> {
        let img = image_schema(input);
        let mut out = Vec::with_capacity(img.fields().len());
        for f in img.fields() {
            let e = expr::physical(col(f.name()), &img).map_err(|e| FieldError::new("", e))?;
            out.push((
                f.name().clone(),
                Value::Expr(e),
                f.data_type().clone(),
                f.is_nullable(),
            ));
        }
        Ok(Self { input: img, out })
    }

    /// The row schema expressions compile against.
    pub fn row(&self) -> &SchemaRef {
        &self.input
    }

    /// Whether the output currently has `name`.
    pub fn has(&self, name: &str) -> bool {
        self.out.iter().any(|(n, ..)| n == name)
    }

    /// Compile `e` against the row; `key` names the config key for errors.
    pub fn compile(&self, key: &str, e: Expr) -> Result<(Value, DataType, bool), FieldError> {
        let p = expr::physical(e.clone(), &self.input).map_err(|m| FieldError::new(key, m))?;
        // Strings are `Utf8` in the engine; some functions return views or large strings.
        if let Ok(DataType::Utf8View | DataType::LargeUtf8) = p.data_type(&self.input) {
            return self.compile(key, datafusion::logical_expr::cast(e, DataType::Utf8));
        }
        let ty = p
            .data_type(&self.input)
            .map_err(|m| FieldError::new(key, expr::strip_df(&m.to_string())))?;
        let nullable = p.nullable(&self.input).unwrap_or(true);
        Ok((Value::Expr(p), ty, nullable))
    }

    /// Compile SQL text against the row.
    pub fn compile_sql(&self, key: &str, sql: &str) -> Result<(Value, DataType, bool), FieldError> {
        let e = expr::parse(sql, &self.input).map_err(|m| FieldError::new(key, m))?;
        self.compile(key, e)
    }

    /// Set field `name` (replacing it in place, or appending it).
    pub fn set(&mut self, name: &str, v: (Value, DataType, bool)) {
        let (value, ty, nullable) = v;
        match self.out.iter_mut().find(|(n, ..)| n == name) {
            Some(slot) => *slot = (name.to_owned(), value, ty, nullable),
            None => self.out.push((name.to_owned(), value, ty, nullable)),
        }
    }

    /// Keep only the fields `keep` says yes to.
    pub fn retain(&mut self, keep: impl Fn(&str) -> bool) {
        self.out.retain(|(n, ..)| keep(n));
    }

    /// Rename a field; an error if `to` is taken.
    pub fn rename(&mut self, from: &str, to: &str, key: &str) -> Result<(), FieldError> {
        if from != to && self.has(to) {
            return Err(FieldError::new(
                key,
                format!("the row already has a field `{to}`"),
            ));
        }
        if let Some(slot) = self.out.iter_mut().find(|(n, ..)| n == from) {
            slot.0 = to.to_owned();
        }
        Ok(())
    }

    /// The finished op, for batches of schema `batch_schema`.
    pub fn build(self, batch_schema: &SchemaRef) -> Arc<dyn Op> {
        let fields: Vec<FieldRef> = self
            .out
            .iter()
            .map(|(n, _, ty, nullable)| Arc::new(Field::new(n, ty.clone(), *nullable)))
            .collect();
        let image_out = Arc::new(Schema::new_with_metadata(
            fields,
            batch_schema.metadata().clone(),
        ));
        Arc::new(Projection {
            output: images_schema(batch_schema, &image_out),
            image_out,
            values: self.out.into_iter().map(|(_, v, ..)| v).collect(),
        })
    }
}

struct Projection {
    output: SchemaRef,
    image_out: SchemaRef,
    values: Vec<Value>,
}

impl Op for Projection {
    fn output_schema(&self) -> &SchemaRef {
        &self.output
    }

    fn row_wise(&self) -> bool {
        true
    }

    fn map(&self, batch: &RecordBatch, _: &Ctx<'_>) -> Result<RecordBatch> {
        let now = rivven_engine::batch::now_ms();
        map_images(batch, &|img: &RecordBatch| {
            let n = img.num_rows();
            let columns = self
                .values
                .iter()
                .map(|v| -> Result<ArrayRef> {
                    Ok(match v {
                        Value::Expr(e) => expr::eval(e, img)?,
                        Value::Now => Arc::new(
                            TimestampMillisecondArray::from_value(now, n).with_timezone("UTC"),
                        ),
                        Value::Today => Arc::new(Date32Array::from_value(
                            now.div_euclid(86_400_000) as i32,
                            n,
                        )),
                    })
                })
                .collect::<Result<Vec<_>>>()?;
            Ok(RecordBatch::try_new_with_options(
                self.image_out.clone(),
                columns,
                &RecordBatchOptions::new().with_row_count(Some(n)),
            )?)
        })
    }
}
