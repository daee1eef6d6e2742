//! A compiled transform chain: steps, each compiled once per input schema and cached.
//!
//! A step is a transform spec plus an optional predicate. For every distinct input schema the
//! step compiles an [`Op`] (and the predicate's boolean expression) once; batches with that
//! schema reuse it. Because each step's output schema is known at compile time, a chain
//! compiles step by step.
//!
//! Predicates: rows where the predicate is false pass through unchanged. An op whose output
//! schema equals its input schema is applied to the whole batch and the result merged by the
//! mask (`zip`, which is `CASE WHEN pred THEN new ELSE old END` per column); an op that
//! changes the schema is applied to consecutive runs of selected rows, so the output is a
//! sequence of batches in input order.

use arrow::array::{Array, BooleanArray, RecordBatch};
use arrow::compute::kernels::zip::zip;
use arrow::datatypes::SchemaRef;
use datafusion::physical_expr::PhysicalExpr;
use rivven_engine::connector::{Routed, Transform};
use rivven_engine::Error;
use std::sync::Arc;

use crate::image;
use crate::predicate::PredicateConfig;
use crate::transforms::Spec;
use crate::Result;

/// What an op sees besides the batch.
pub struct Ctx<'a> {
    /// The topic the batch is currently bound for.
    pub topic: &'a str,
}

/// A transform compiled for one input schema.
pub trait Op: Send + Sync {
    /// The schema of the batches [`Op::map`] returns.
    fn output_schema(&self) -> &SchemaRef;

    /// Transform every row of `batch`.
    fn map(&self, batch: &RecordBatch, ctx: &Ctx<'_>) -> Result<RecordBatch>;

    /// Transform the rows where `mask` is true (all rows when `None`), pass the others
    /// through unchanged, and push the outputs in order. Filters and routers override this.
    fn apply(
        &self,
        input: Routed,
        mask: Option<&BooleanArray>,
        ctx: &Ctx<'_>,
        out: &mut Vec<Routed>,
    ) -> Result<()> {
        apply_masked(self, input, mask, ctx, out)
    }
}

/// The default [`Op::apply`]: see the module docs.
pub fn apply_masked<O: Op + ?Sized>(
    op: &O,
    input: Routed,
    mask: Option<&BooleanArray>,
    ctx: &Ctx<'_>,
    out: &mut Vec<Routed>,
) -> Result<()> {
    let Some(mask) = mask else {
        let batch = op.map(&input.batch, ctx)?;
        out.push(Routed { batch, ..input });
        return Ok(());
    };
    let selected = mask.true_count();
    if selected == mask.len() {
        let batch = op.map(&input.batch, ctx)?;
        out.push(Routed { batch, ..input });
        return Ok(());
    }
    if selected == 0 {
        out.push(input);
        return Ok(());
    }
    if same_shape(op.output_schema(), &input.batch.schema()) {
        let new = op.map(&input.batch, ctx)?;
        let columns = new
            .columns()
            .iter()
            .zip(input.batch.columns())
            .map(|(n, o)| Ok(zip(mask, n, &retype(o, n.data_type())?)?))
            .collect::<Result<Vec<_>>>()?;
        let batch = RecordBatch::try_new(new.schema(), columns)?;
        out.push(Routed { batch, ..input });
        return Ok(());
    }
    apply_runs(op, input, mask, ctx, out)
}

/// Apply `op` to each consecutive run of selected rows; other runs pass unchanged. For ops
/// whose output rows do not correspond one to one with input rows.
pub fn apply_runs<O: Op + ?Sized>(
    op: &O,
    input: Routed,
    mask: &BooleanArray,
    ctx: &Ctx<'_>,
    out: &mut Vec<Routed>,
) -> Result<()> {
    for (start, len, on) in runs(mask) {
        let part = input.batch.slice(start, len);
        let batch = if on { op.map(&part, ctx)? } else { part };
        out.push(Routed {
            batch,
            topic: input.topic.clone(),
        });
    }
    Ok(())
}

/// Same field names and types (nullability may differ: a merged column is as nullable as
/// the more nullable side).
fn same_shape(a: &SchemaRef, b: &SchemaRef) -> bool {
    a.fields().len() == b.fields().len()
        && a.fields()
            .iter()
            .zip(b.fields())
            .all(|(x, y)| x.name() == y.name() && types_match(x.data_type(), y.data_type()))
}

fn types_match(a: &arrow::datatypes::DataType, b: &arrow::datatypes::DataType) -> bool {
    use arrow::datatypes::DataType::Struct;
    match (a, b) {
        (Struct(x), Struct(y)) => {
            x.len() == y.len()
                && x.iter()
                    .zip(y.iter())
                    .all(|(p, q)| p.name() == q.name() && types_match(p.data_type(), q.data_type()))
        }
        _ => a == b,
    }
}

/// `a` with the type `to`, which differs from its own at most in struct-field nullability.
fn retype(
    a: &arrow::array::ArrayRef,
    to: &arrow::datatypes::DataType,
) -> Result<arrow::array::ArrayRef> {
    use arrow::array::AsArray;
    use arrow::datatypes::DataType::Struct;
    if a.data_type() == to {
        return Ok(a.clone());
    }
    match (a.as_struct_opt(), to) {
        (Some(sa), Struct(fields)) => {
            let children = sa
                .columns()
                .iter()
                .zip(fields.iter())
                .map(|(c, f)| retype(c, f.data_type()))
                .collect::<Result<Vec<_>>>()?;
            Ok(Arc::new(arrow::array::StructArray::try_new(
                fields.clone(),
                children,
                sa.nulls().cloned(),
            )?))
        }
        _ => Ok(arrow::compute::cast(a, to)?),
    }
}

/// Consecutive runs of equal mask values: `(start, len, value)`.
pub fn runs(mask: &BooleanArray) -> Vec<(usize, usize, bool)> {
    let mut out: Vec<(usize, usize, bool)> = Vec::new();
    for i in 0..mask.len() {
        let v = mask.value(i);
        match out.last_mut() {
            Some((_, len, last)) if *last == v => *len += 1,
            _ => out.push((i, 1, v)),
        }
    }
    out
}

struct Compiled {
    schema: SchemaRef,
    op: Arc<dyn Op>,
    predicate: Option<(Arc<dyn PhysicalExpr>, bool)>,
    view_schema: SchemaRef,
}

/// One step of the chain.
pub struct Step {
    /// Position in the list, for error messages (`transforms[2]`).
    pub index: usize,
    /// The transform's `type`.
    pub kind: String,
    /// The parsed config.
    pub spec: Box<dyn Spec>,
    /// The parsed predicate.
    pub predicate: Option<PredicateConfig>,
    cache: Vec<Arc<Compiled>>,
}

/// Compiled schemas kept per step; more distinct schemas than this (many tables through one
/// pipeline) evict the oldest.
const CACHE: usize = 256;

impl Step {
    /// A step with an empty cache.
    pub fn new(
        index: usize,
        kind: String,
        spec: Box<dyn Spec>,
        predicate: Option<PredicateConfig>,
    ) -> Self {
        Self {
            index,
            kind,
            spec,
            predicate,
            cache: Vec::new(),
        }
    }

    fn what(&self) -> String {
        format!("transforms[{}] ({})", self.index, self.kind)
    }

    /// Compile for `schema` without caching; errors are [`rivven_engine::config::FieldError`]s
    /// relative to the step (`config.fields[0]`, `predicate`).
    pub fn compile_for(
        &self,
        schema: &SchemaRef,
    ) -> std::result::Result<(Arc<dyn Op>, SchemaRef), rivven_engine::config::FieldError> {
        let op = self.spec.compile(schema).map_err(|e| e.under("config"))?;
        if let Some(p) = &self.predicate {
            let view = image::view_schema(schema);
            p.compile(schema, &view).map_err(|e| e.under("predicate"))?;
        }
        let out = op.output_schema().clone();
        Ok((op, out))
    }

    fn compiled(&mut self, schema: &SchemaRef) -> Result<Arc<Compiled>> {
        if let Some(c) = self
            .cache
            .iter()
            .find(|c| Arc::ptr_eq(&c.schema, schema) || c.schema == *schema)
        {
            return Ok(c.clone());
        }
        let what = self.what();
        let fail = |e: rivven_engine::config::FieldError| {
            Error::data(format!("{what}: {e} (input schema: {})", brief(schema)))
        };
        let op = self
            .spec
            .compile(schema)
            .map_err(|e| fail(e.under("config")))?;
        let view_schema = image::view_schema(schema);
        let predicate = match &self.predicate {
            None => None,
            Some(p) => Some((
                p.compile(schema, &view_schema)
                    .map_err(|e| fail(e.under("predicate")))?,
                p.needs_view(),
            )),
        };
        let c = Arc::new(Compiled {
            schema: schema.clone(),
            op,
            predicate,
            view_schema,
        });
        if self.cache.len() >= CACHE {
            self.cache.remove(0);
        }
        self.cache.push(c.clone());
        Ok(c)
    }

    fn run(&mut self, input: Routed, default_topic: &str, out: &mut Vec<Routed>) -> Result<()> {
        let c = self.compiled(&input.batch.schema())?;
        let what = self.what();
        let topic = input.topic.clone();
        let ctx = Ctx {
            topic: topic.as_deref().unwrap_or(default_topic),
        };
        let mask = match &c.predicate {
            None => None,
            Some((p, needs_view)) => {
                let m = if *needs_view {
                    let v = image::view(&input.batch, &c.view_schema)?;
                    crate::expr::eval_mask(p, &v)
                } else {
                    crate::expr::eval_mask(p, &input.batch)
                };
                Some(m.map_err(|e| e.context(format!("{what}: predicate")))?)
            }
        };
        c.op.apply(input, mask.as_ref(), &ctx, out)
            .map_err(|e| e.context(what))
    }
}

fn brief(schema: &SchemaRef) -> String {
    let names: Vec<String> = schema
        .fields()
        .iter()
        .map(|f| format!("{} {}", f.name(), f.data_type()))
        .collect();
    names.join(", ")
}

/// A compiled chain of steps: the engine's [`Transform`].
pub struct Chain {
    steps: Vec<Step>,
}

impl Chain {
    /// A chain of steps, applied in order.
    pub fn new(steps: Vec<Step>) -> Self {
        Self { steps }
    }

    /// The steps.
    pub fn steps(&self) -> &[Step] {
        &self.steps
    }
}

impl Transform for Chain {
    fn apply(&mut self, batch: RecordBatch, topic: &str) -> Result<Vec<Routed>> {
        let mut cur = vec![Routed { batch, topic: None }];
        for step in &mut self.steps {
            let mut next = Vec::with_capacity(cur.len());
            for r in cur {
                if r.batch.num_rows() == 0 {
                    continue;
                }
                step.run(r, topic, &mut next)?;
            }
            cur = next;
            if cur.is_empty() {
                break;
            }
        }
        Ok(cur)
    }
}
