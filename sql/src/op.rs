//! The op contract: what a transform compiles to, and the helpers ops share.
//!
//! A transform's parsed config is a [`Spec`]; compiled against one input schema it becomes
//! an [`Op`], which the chain ([`crate::chain`]) caches per schema and runs per batch. This
//! module depends on no transform and not on the chain: transforms implement it, the chain
//! drives it.

use arrow::array::{Array, BooleanArray, RecordBatch};
use arrow::compute::kernels::zip::zip;
use arrow::datatypes::SchemaRef;
use rivven_engine::config::{FieldError, Validate};
use rivven_engine::connector::Routed;
use rivven_engine::Result;
use std::sync::Arc;

/// A transform's parsed config: validated without a schema ([`Validate`]), compiled against
/// each input schema into an [`Op`].
pub trait Spec: Validate + Send + Sync {
    /// Compile against an input schema; errors relative to the transform's `config`.
    fn compile(&self, input: &SchemaRef) -> std::result::Result<Arc<dyn Op>, FieldError>;

    /// For a spec whose ops share state across schemas (deduplication's memory, a
    /// round-robin turn, a store connection): a copy with that state new. Every chain is
    /// built from fresh copies, so an attempt of a pipeline never inherits what an earlier
    /// attempt remembered. `None` (the default): the spec keeps no state and is shared.
    fn fresh(&self) -> Option<Arc<dyn Spec>> {
        None
    }
}

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

    /// Whether [`Op::map`] is row-wise: it keeps the row count and output row *i* depends on
    /// input row *i* alone. The chain may then run it over rows that an earlier filter has
    /// marked for dropping (one fused selection instead of a copy per filter); if that
    /// fails, it runs again over the kept rows only, so errors are those of the kept rows.
    fn row_wise(&self) -> bool {
        false
    }

    /// For ops that only drop rows (besides a row-wise rewrite): the output *before*
    /// dropping and which rows to keep, so that consecutive filters are applied as one
    /// selection, materialized once. `None`: not such an op.
    fn select(
        &self,
        batch: &RecordBatch,
        ctx: &Ctx<'_>,
    ) -> Option<Result<(RecordBatch, BooleanArray)>> {
        let _ = (batch, ctx);
        None
    }

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

/// An op that keeps every row as it is and only decides where rows go (routers,
/// partitioners): its output schema is its input's and [`Op::map`] is the identity; the
/// work is in [`Route::route`], which every such type implements instead of [`Op`].
pub trait Route: Send + Sync {
    /// The input schema, which is also the output schema.
    fn schema(&self) -> &SchemaRef;

    /// Push `input`'s rows, in order, with their destination (topic or partition); rows
    /// where `mask` is false keep theirs. See [`Op::apply`].
    fn route(
        &self,
        input: Routed,
        mask: Option<&BooleanArray>,
        ctx: &Ctx<'_>,
        out: &mut Vec<Routed>,
    ) -> Result<()>;
}

impl<R: Route> Op for R {
    fn output_schema(&self) -> &SchemaRef {
        self.schema()
    }

    fn map(&self, batch: &RecordBatch, _: &Ctx<'_>) -> Result<RecordBatch> {
        Ok(batch.clone())
    }

    fn apply(
        &self,
        input: Routed,
        mask: Option<&BooleanArray>,
        ctx: &Ctx<'_>,
        out: &mut Vec<Routed>,
    ) -> Result<()> {
        self.route(input, mask, ctx, out)
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
            ..input.clone()
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
pub fn retype(
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

/// Split `batch` by a per-row key: one batch per distinct key, in order of first
/// appearance, rows in their order within each (the `take` kernel). When every row has the
/// same key the batch is returned whole, without a copy.
pub fn split_by<K: Eq + std::hash::Hash + Clone>(
    batch: &RecordBatch,
    keys: impl IntoIterator<Item = K>,
) -> Result<Vec<(K, RecordBatch)>> {
    let mut groups: Vec<(K, Vec<u32>)> = Vec::new();
    let mut at: std::collections::HashMap<K, usize> = std::collections::HashMap::new();
    for (row, k) in keys.into_iter().enumerate() {
        let g = *at.entry(k.clone()).or_insert_with(|| {
            groups.push((k, Vec::new()));
            groups.len() - 1
        });
        groups[g].1.push(row as u32);
    }
    if groups.len() == 1 {
        return Ok(groups
            .into_iter()
            .map(|(k, _)| (k, batch.clone()))
            .collect());
    }
    groups
        .into_iter()
        .map(|(k, rows)| {
            let taken =
                arrow::compute::take_record_batch(batch, &arrow::array::UInt32Array::from(rows))?;
            Ok((k, taken))
        })
        .collect()
}

/// Push `input` with only the rows `keep` selects (uncopied when it selects all).
pub fn push_kept(input: Routed, keep: &BooleanArray, out: &mut Vec<Routed>) -> Result<()> {
    if keep.true_count() == keep.len() {
        out.push(input);
    } else {
        out.push(Routed {
            batch: arrow::compute::filter_record_batch(&input.batch, keep)?,
            ..input
        });
    }
    Ok(())
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

/// For [`Spec::fresh`]: a clone of `spec` with its state replaced by `reset`.
pub fn fresh_copy<S: Spec + Clone + 'static>(
    spec: &S,
    reset: impl FnOnce(&mut S),
) -> Option<Arc<dyn Spec>> {
    let mut copy = spec.clone();
    reset(&mut copy);
    Some(Arc::new(copy))
}

/// Ops of steps that never carry a `predicate:` (the `cdc_features` blocks): a mask here is
/// a bug.
pub fn no_predicate(mask: Option<&BooleanArray>) -> Result<()> {
    match mask {
        None => Ok(()),
        Some(_) => Err(rivven_engine::Error::internal(
            "this step takes no predicate",
        )),
    }
}

/// `input`'s rows as dead-letter rows bound for `dlq` (see [`rivven_engine::dead_letter`]):
/// `err` is why, `label` the step that failed, and the topic they were bound for is
/// `input`'s own or `topic`.
pub fn dead_letter_rows(
    input: &Routed,
    topic: &str,
    label: &str,
    err: &rivven_engine::Error,
    dlq: &Arc<str>,
) -> Result<Routed> {
    let to = input.topic.as_deref().unwrap_or(topic);
    let batch = rivven_engine::dead_letter::rows(&input.batch, &err.to_string(), label, to)?;
    tracing::warn!(
        transform = label,
        rows = batch.num_rows(),
        dead_letter_topic = %dlq,
        error = %err,
        "rows sent to the dead-letter topic"
    );
    Ok(Routed {
        batch,
        topic: Some(dlq.clone()),
        partition: None,
        dead_letter: true,
    })
}
