//! Row selection and SQL: `filter`, `drop_null`, and `sql` (a stateless
//! `SELECT ... FROM input WHERE ...`).
//!
//! Conditions are SQL expressions over the row view (see [`crate::image`]): comparisons,
//! `AND`/`OR`/`NOT`, `IN`, `IS [NOT] NULL`, `LIKE`, `~` (regex), nested fields
//! (`source.table`) and DataFusion's built-in functions. The spec's shorthand
//! `status = active` (a bare word that is not a field) compares with the text `'active'`.

use arrow::array::{BooleanArray, RecordBatch, RecordBatchOptions};
use arrow::compute::{filter_record_batch, not, or};
use arrow::datatypes::{Field, FieldRef, Schema, SchemaRef};
use datafusion::logical_expr::LogicalPlan;
use datafusion::physical_expr::PhysicalExpr;
use rivven_engine::config::{FieldError, Validate};
use rivven_engine::connector::Routed;
use schemars::JsonSchema;
use serde::Deserialize;
use std::sync::Arc;

use super::fields::{ident, sql_str};
use crate::field_list::Names;
use crate::op::Spec;
use crate::op::{Ctx, Op};
use crate::{expr, image};
use rivven_engine::Result;

/// Rewrite the shorthand `field = word` into SQL (`field = 'word'`) when `word` is not a
/// field, a number, a boolean or null; anything else is returned unchanged.
pub fn shorthand(condition: &str, view: &SchemaRef) -> String {
    let re = regex::Regex::new(r"^\s*([A-Za-z_][\w.]*)\s*(==|=|!=|<>)\s*([A-Za-z_][\w.\-]*)\s*$");
    let Some(c) = re.ok().and_then(|re| re.captures(condition)) else {
        return condition.to_owned();
    };
    let (field, op, word) = (&c[1], &c[2], &c[3]);
    let keyword = ["true", "false", "null"].contains(&word.to_ascii_lowercase().as_str());
    if keyword || expr::has_field(word, view) || !expr::has_field(field, view) {
        return condition.to_owned();
    }
    let op = if op == "==" { "=" } else { op };
    let lhs = if view.field_with_name(field).is_ok() {
        ident(field)
    } else {
        field.to_owned()
    };
    format!("{lhs} {op} {}", sql_str(word))
}

/// `filter`: keep the rows where `condition` is true (`drop: false`, the default), or drop
/// them (`drop: true`). Rows where it is null count as false.
#[derive(Debug, Clone, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Filter {
    /// SQL condition over the row.
    pub condition: String,
    /// Drop matching rows instead of keeping them.
    #[serde(default)]
    pub drop: bool,
}

impl Validate for Filter {
    fn validate(&self) -> Vec<FieldError> {
        syntax("condition", &self.condition)
    }
}

impl Spec for Filter {
    fn compile(&self, input: &SchemaRef) -> Result<Arc<dyn Op>, FieldError> {
        let view = image::view_schema(input);
        let sql = shorthand(&self.condition, &view);
        let cond = expr::compile(&sql, &view).map_err(|e| FieldError::new("condition", e))?;
        Ok(Arc::new(FilterOp {
            schema: input.clone(),
            view,
            cond,
            drop: self.drop,
        }))
    }
}

/// Parse-only check of SQL expression text (no schema needed).
fn syntax(key: &str, sql: &str) -> Vec<FieldError> {
    use datafusion::sql::sqlparser::{dialect::GenericDialect, parser::Parser};
    match Parser::new(&GenericDialect {})
        .try_with_sql(sql)
        .and_then(|mut p| p.parse_expr())
    {
        Ok(_) => Vec::new(),
        Err(e) => vec![FieldError::new(key, format!("invalid SQL expression: {e}"))],
    }
}

/// Keeps rows by a condition over the row view.
pub struct FilterOp {
    schema: SchemaRef,
    view: SchemaRef,
    cond: Arc<dyn PhysicalExpr>,
    drop: bool,
}

impl FilterOp {
    fn keep(&self, batch: &RecordBatch) -> Result<BooleanArray> {
        let view = image::view(batch, &self.view)?;
        let m = expr::eval_mask(&self.cond, &view)?;
        Ok(if self.drop { not(&m)? } else { m })
    }
}

impl Op for FilterOp {
    fn output_schema(&self) -> &SchemaRef {
        &self.schema
    }
    fn map(&self, batch: &RecordBatch, _: &Ctx<'_>) -> Result<RecordBatch> {
        let keep = self.keep(batch)?;
        Ok(filter_record_batch(batch, &keep)?)
    }
    fn select(
        &self,
        batch: &RecordBatch,
        _: &Ctx<'_>,
    ) -> Option<Result<(RecordBatch, BooleanArray)>> {
        Some(self.keep(batch).map(|k| (batch.clone(), k)))
    }
    fn apply(
        &self,
        input: Routed,
        mask: Option<&BooleanArray>,
        _: &Ctx<'_>,
        out: &mut Vec<Routed>,
    ) -> Result<()> {
        let mut keep = self.keep(&input.batch)?;
        if let Some(m) = mask {
            keep = or(&keep, &not(m)?)?;
        }
        crate::op::push_kept(input, &keep, out)
    }
}

/// `drop_null`: drop rows where any of `fields` is null (with no `fields`: rows whose every
/// field is null).
#[derive(Debug, Clone, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct DropNull {
    /// Fields that must be present.
    #[serde(default)]
    pub fields: Names,
}

impl Validate for DropNull {}

impl Spec for DropNull {
    fn compile(&self, input: &SchemaRef) -> Result<Arc<dyn Op>, FieldError> {
        let view = image::view_schema(input);
        let row = image::image_schema(input);
        crate::field_list::require_fields("fields", &self.fields, &row)?;
        let sql = if self.fields.is_empty() {
            let all: Vec<String> = row
                .fields()
                .iter()
                .map(|f| format!("{} IS NOT NULL", ident(f.name())))
                .collect();
            if all.is_empty() {
                "true".to_owned()
            } else {
                all.join(" OR ")
            }
        } else {
            let each: Vec<String> = self
                .fields
                .iter()
                .map(|f| format!("{} IS NOT NULL", ident(f)))
                .collect();
            each.join(" AND ")
        };
        let cond = expr::compile(&sql, &view).map_err(|e| FieldError::new("fields", e))?;
        Ok(Arc::new(FilterOp {
            schema: input.clone(),
            view,
            cond,
            drop: false,
        }))
    }
}

/// `sql`: a stateless query over each batch, `SELECT <expressions> FROM input [WHERE
/// <condition>]`, with DataFusion's built-in functions. `input` is the row view: a flat
/// batch as it is; a change event as its current image plus `op`, `before`, `after`,
/// `source`, `ts_ms`. Aggregates, joins, ordering, `LIMIT`, `DISTINCT` and windows are
/// rejected: they would need state across batches.
#[derive(Debug, Clone, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Sql {
    /// The query.
    pub query: String,
}

/// Run a future that never waits (planning against an in-memory table) to completion.
fn ready<F: std::future::Future>(f: F) -> Option<F::Output> {
    let mut f = std::pin::pin!(f);
    let mut cx = std::task::Context::from_waker(std::task::Waker::noop());
    match f.as_mut().poll(&mut cx) {
        std::task::Poll::Ready(v) => Some(v),
        std::task::Poll::Pending => None,
    }
}

impl Validate for Sql {
    fn validate(&self) -> Vec<FieldError> {
        use datafusion::sql::sqlparser::{dialect::GenericDialect, parser::Parser};
        match Parser::parse_sql(&GenericDialect {}, &self.query) {
            Ok(stmts) if stmts.len() == 1 => Vec::new(),
            Ok(stmts) => vec![FieldError::new(
                "query",
                format!("expected one SELECT statement, got {}", stmts.len()),
            )],
            Err(e) => vec![FieldError::new("query", format!("invalid SQL: {e}"))],
        }
    }
}

impl Spec for Sql {
    fn compile(&self, input: &SchemaRef) -> Result<Arc<dyn Op>, FieldError> {
        let err = |m: String| FieldError::new("query", m);
        let view = image::view_schema(input);
        let ctx =
            datafusion::prelude::SessionContext::new_with_config(expr::session().copied_config());
        let table = datafusion::datasource::MemTable::try_new(view.clone(), vec![vec![]])
            .map_err(|e| err(expr::strip_df(&e.to_string())))?;
        ctx.register_table("input", Arc::new(table))
            .map_err(|e| err(expr::strip_df(&e.to_string())))?;
        let state = ctx.state();
        let plan = ready(state.create_logical_plan(&self.query))
            .ok_or_else(|| err("planning did not complete".into()))?
            .map_err(|e| err(expr::strip_df(&e.to_string())))?;
        let (projection, filter, scan) = stateless(&plan).map_err(err)?;
        let cond = match filter {
            Some(f) => Some(expr::plan(&ctx, f.clone(), &scan).map_err(err)?),
            None => None,
        };
        let mut fields: Vec<FieldRef> = Vec::new();
        let mut exprs = Vec::new();
        for (i, e) in projection.iter().enumerate() {
            let p = expr::plan(&ctx, e.clone(), &scan).map_err(err)?;
            let out = plan.schema().field(i);
            fields.push(Arc::new(Field::new(
                out.name(),
                out.data_type().clone(),
                out.is_nullable(),
            )));
            exprs.push(p);
        }
        Ok(Arc::new(SqlOp {
            schema: Arc::new(Schema::new_with_metadata(fields, input.metadata().clone())),
            view,
            cond,
            exprs,
        }))
    }
}

type Parts<'a> = (
    Vec<datafusion::logical_expr::Expr>,
    Option<&'a datafusion::logical_expr::Expr>,
    datafusion::common::DFSchema,
);

/// The projection, the filter and the scanned schema of `Projection(Filter?(Scan))`.
fn stateless(plan: &LogicalPlan) -> std::result::Result<Parts<'_>, String> {
    let LogicalPlan::Projection(p) = plan else {
        return Err(format!(
            "only `SELECT ... FROM input [WHERE ...]` is supported, got a {} plan (aggregates, joins, ORDER BY, LIMIT and DISTINCT need state across batches)",
            plan.display()
        ));
    };
    let mut node = p.input.as_ref();
    let mut filter = None;
    loop {
        match node {
            LogicalPlan::Filter(f) if filter.is_none() => {
                filter = Some(&f.predicate);
                node = f.input.as_ref();
            }
            LogicalPlan::SubqueryAlias(a) => node = a.input.as_ref(),
            LogicalPlan::TableScan(t) => {
                if t.table_name.table() != "input" {
                    return Err(format!("read from `input`, not `{}`", t.table_name));
                }
                let scan = node.schema().as_ref().clone();
                return Ok((p.expr.clone(), filter, scan));
            }
            other => {
                return Err(format!(
                    "only `SELECT ... FROM input [WHERE ...]` is supported; `{}` needs state across batches",
                    other.display()
                ))
            }
        }
    }
}

struct SqlOp {
    schema: SchemaRef,
    view: SchemaRef,
    cond: Option<Arc<dyn PhysicalExpr>>,
    exprs: Vec<Arc<dyn PhysicalExpr>>,
}

impl Op for SqlOp {
    fn output_schema(&self) -> &SchemaRef {
        &self.schema
    }
    fn apply(
        &self,
        input: Routed,
        mask: Option<&BooleanArray>,
        ctx: &Ctx<'_>,
        out: &mut Vec<Routed>,
    ) -> Result<()> {
        match mask {
            None => {
                let batch = self.map(&input.batch, ctx)?;
                out.push(Routed { batch, ..input });
                Ok(())
            }
            Some(m) => crate::op::apply_runs(self, input, m, ctx, out),
        }
    }
    fn map(&self, batch: &RecordBatch, _: &Ctx<'_>) -> Result<RecordBatch> {
        let mut view = image::view(batch, &self.view)?;
        if let Some(c) = &self.cond {
            let keep = expr::eval_mask(c, &view)?;
            if keep.true_count() != keep.len() {
                view = filter_record_batch(&view, &keep)?;
            }
        }
        let columns = self
            .exprs
            .iter()
            .map(|e| expr::eval(e, &view))
            .collect::<Result<Vec<_>>>()?;
        Ok(RecordBatch::try_new_with_options(
            self.schema.clone(),
            columns,
            &RecordBatchOptions::new().with_row_count(Some(view.num_rows())),
        )?)
    }
}
