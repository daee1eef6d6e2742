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

use arrow::array::{BooleanArray, RecordBatch};
use arrow::datatypes::SchemaRef;
use datafusion::physical_expr::PhysicalExpr;
use rivven_engine::connector::{Routed, Transform};
use rivven_engine::{Error, Result};
use std::sync::Arc;

use crate::image;
use crate::op::{dead_letter_rows, Ctx, Op, Spec};
use crate::predicate::PredicateConfig;

struct Compiled {
    schema: SchemaRef,
    op: Arc<dyn Op>,
    predicate: Option<(Arc<dyn PhysicalExpr>, bool)>,
    view_schema: SchemaRef,
}

/// One step of the chain.
pub struct Step {
    /// Key path of the step's config relative to the pipeline (`config.transforms[2]`,
    /// `config.cdc_features.router`), for `check` errors.
    pub path: String,
    /// How messages name the step (`transforms[2] (mask_field)`).
    pub label: String,
    /// Where the spec's keys sit below `path`: `config` for list entries, `""` for
    /// `cdc_features` blocks.
    pub config_key: &'static str,
    /// The parsed config.
    pub spec: Arc<dyn Spec>,
    /// The parsed predicate.
    pub predicate: Option<PredicateConfig>,
    cache: Vec<Arc<Compiled>>,
}

/// Compiled schemas kept per step; more distinct schemas than this (many tables through one
/// pipeline) evict the oldest.
const CACHE: usize = 256;

/// A copy for a new chain: the same config, an empty cache, fresh state (see
/// [`Spec::fresh`]).
impl Clone for Step {
    fn clone(&self) -> Self {
        Self::new(
            self.path.clone(),
            self.label.clone(),
            self.config_key,
            self.spec.fresh().unwrap_or_else(|| self.spec.clone()),
            self.predicate.clone(),
        )
    }
}

impl Step {
    /// A step with an empty cache.
    pub fn new(
        path: String,
        label: String,
        config_key: &'static str,
        spec: Arc<dyn Spec>,
        predicate: Option<PredicateConfig>,
    ) -> Self {
        Self {
            path,
            label,
            config_key,
            spec,
            predicate,
            cache: Vec::new(),
        }
    }

    fn what(&self) -> String {
        self.label.clone()
    }

    /// Compile for `schema` without caching; errors are [`rivven_engine::config::FieldError`]s
    /// relative to the step (`config.fields[0]`, `predicate`).
    pub fn compile_for(
        &self,
        schema: &SchemaRef,
    ) -> std::result::Result<(Arc<dyn Op>, SchemaRef), rivven_engine::config::FieldError> {
        let op = self
            .spec
            .compile(schema)
            .map_err(|e| e.under(self.config_key))?;
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
            .map_err(|e| fail(e.under(self.config_key)))?;
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

    /// Run without materializing `sel` (rows an earlier step will drop) when the op allows
    /// it (see [`Op::row_wise`], [`Op::select`]); `None` when it does not, or when the
    /// attempt failed and the step must run the ordinary way over the kept rows.
    fn run_fused(
        &mut self,
        input: &Routed,
        sel: Option<&BooleanArray>,
        default_topic: &str,
    ) -> Result<Option<(Routed, Option<BooleanArray>)>> {
        if self.predicate.is_some() {
            return Ok(None);
        }
        let Ok(c) = self.compiled(&input.batch.schema()) else {
            return Ok(None);
        };
        let ctx = Ctx {
            topic: input.topic.as_deref().unwrap_or(default_topic),
        };
        if c.op.row_wise() {
            // Rewriting rows that will be dropped is wasted work; beyond a tenth of the
            // batch it costs more than the copy it saves (measured: masking over a 73%
            // selection ran 2% slower than copying first).
            let dense = sel.is_some_and(|s| s.true_count() * 10 >= s.len() * 9);
            if !dense {
                return Ok(None);
            }
            return Ok(c.op.map(&input.batch, &ctx).ok().map(|batch| {
                (
                    Routed {
                        batch,
                        ..input.clone()
                    },
                    sel.cloned(),
                )
            }));
        }
        let Some(Ok((batch, keep))) = c.op.select(&input.batch, &ctx) else {
            return Ok(None);
        };
        let keep = match sel {
            Some(s) => arrow::compute::and(s, &keep)?,
            None => keep,
        };
        let keep = (keep.true_count() < keep.len()).then_some(keep);
        Ok(Some((
            Routed {
                batch,
                ..input.clone()
            },
            keep,
        )))
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
///
/// With a dead-letter topic, a step that fails on a batch with a data error is retried on
/// halves of the batch until the failing rows are isolated; those rows (as they entered the
/// failing step) go to the dead-letter topic with `__dlq_error`, `__dlq_transform` and
/// `__dlq_topic` columns, and the other rows go on. Errors that are not about the data
/// (I/O, connections) still fail the batch, so the runtime retries it.
pub struct Chain {
    steps: Vec<Step>,
    dead_letter: Option<Arc<str>>,
    fuse: bool,
}

impl Chain {
    /// A chain of steps, applied in order, sending rows a step fails on to `dead_letter`
    /// (`None`: the failure fails the batch).
    pub fn new(steps: Vec<Step>, dead_letter: Option<Arc<str>>) -> Self {
        Self {
            steps,
            dead_letter,
            fuse: true,
        }
    }

    /// The same chain with every filter copying its rows at once instead of fusing
    /// selections (the benchmark compares both; results are identical).
    pub fn without_fusion(mut self) -> Self {
        self.fuse = false;
        self
    }

    /// The steps.
    pub fn steps(&self) -> &[Step] {
        &self.steps
    }
}

/// Whether a failure is about the rows (a dead-letter candidate) rather than the system.
fn is_row_error(e: &Error) -> bool {
    e.kind() == rivven_engine::error::ErrorKind::Data && !e.is_retryable()
}

/// Run `step` over `input`; with a dead-letter topic, isolate the rows it fails on by
/// halving (a batch where every row fails costs about twice the rows in step calls).
fn run_isolating(
    step: &mut Step,
    input: Routed,
    topic: &str,
    dead_letter: Option<&Arc<str>>,
    out: &mut Vec<Routed>,
    dead: &mut Vec<Routed>,
) -> Result<()> {
    let mut tmp = Vec::new();
    let err = match step.run(input.clone(), topic, &mut tmp) {
        Ok(()) => {
            out.append(&mut tmp);
            return Ok(());
        }
        Err(e) => e,
    };
    let Some(dlq) = dead_letter.filter(|_| is_row_error(&err)) else {
        return Err(err);
    };
    let n = input.batch.num_rows();
    // A compile error (the schema, not a row) fails every row alike: no halving.
    let schema_level = step.compiled(&input.batch.schema()).is_err();
    if n == 1 || schema_level {
        dead.push(dead_letter_rows(&input, topic, &step.label, &err, dlq)?);
        return Ok(());
    }
    let half = n / 2;
    for (start, len) in [(0, half), (half, n - half)] {
        let part = Routed {
            batch: input.batch.slice(start, len),
            ..input.clone()
        };
        run_isolating(step, part, topic, dead_letter, out, dead)?;
    }
    Ok(())
}

/// `r` with only the rows `sel` keeps.
fn materialize(r: Routed, sel: Option<BooleanArray>) -> Result<Routed> {
    Ok(match sel {
        None => r,
        Some(s) => Routed {
            batch: arrow::compute::filter_record_batch(&r.batch, &s)?,
            ..r
        },
    })
}

impl Transform for Chain {
    /// Steps run in order. Rows a filter drops are carried as a pending selection through
    /// following filters and row-wise rewrites and dropped with one copy, before the first
    /// step that needs the rows gone (see [`Op::select`]).
    fn apply(&mut self, batch: RecordBatch, topic: &str) -> Result<Vec<Routed>> {
        let mut cur: Vec<(Routed, Option<BooleanArray>)> = vec![(Routed::new(batch, None), None)];
        let mut dead = Vec::new();
        for step in &mut self.steps {
            let mut next = Vec::with_capacity(cur.len());
            for (r, sel) in cur {
                if r.batch.num_rows() == 0 || sel.as_ref().is_some_and(|s| s.true_count() == 0) {
                    continue;
                }
                if r.dead_letter {
                    dead.push(materialize(r, sel)?);
                    continue;
                }
                let fused = if self.fuse {
                    step.run_fused(&r, sel.as_ref(), topic)?
                } else {
                    None
                };
                if let Some(fused) = fused {
                    next.push(fused);
                    continue;
                }
                let mut out = Vec::new();
                run_isolating(
                    step,
                    materialize(r, sel)?,
                    topic,
                    self.dead_letter.as_ref(),
                    &mut out,
                    &mut dead,
                )?;
                next.extend(out.into_iter().map(|r| (r, None)));
            }
            cur = next;
            if cur.is_empty() {
                break;
            }
        }
        let mut out = cur
            .into_iter()
            .filter(|(_, s)| s.as_ref().is_none_or(|s| s.true_count() > 0))
            .map(|(r, s)| materialize(r, s))
            .collect::<Result<Vec<_>>>()?;
        out.append(&mut dead);
        Ok(out)
    }
}
