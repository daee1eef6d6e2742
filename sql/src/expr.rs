//! DataFusion glue: one session for planning, SQL text and logical expressions compiled to
//! physical expressions against a schema, and evaluation helpers.
//!
//! Identifiers are case-sensitive (`enable_ident_normalization = false`): CDC column names
//! keep their case, so `"Status"` and `Status` name the same column. Nested fields are read
//! with dots (`after.status`, `source.table`).

use arrow::array::{Array, ArrayRef, BooleanArray, RecordBatch};
use arrow::datatypes::{DataType, SchemaRef};
use datafusion::common::{Column, DFSchema};
use datafusion::logical_expr::Expr;
use datafusion::physical_expr::PhysicalExpr;
use datafusion::prelude::{SessionConfig, SessionContext};
use std::sync::{Arc, OnceLock};

use rivven_engine::Result;

/// The planning session (no tables; only the function registry and the SQL dialect).
pub fn session() -> &'static SessionContext {
    static CTX: OnceLock<SessionContext> = OnceLock::new();
    CTX.get_or_init(|| {
        let mut config = SessionConfig::new();
        config.options_mut().sql_parser.enable_ident_normalization = false;
        // Strings are Arrow `Utf8` throughout the engine.
        config.options_mut().sql_parser.map_string_types_to_utf8view = false;
        let ctx = SessionContext::new_with_config(config);
        ctx.register_udf(crate::udf::MaskLast::udf());
        ctx.register_udf(crate::udf::Now::udf());
        ctx.register_udf(crate::udf::Clock::current_date());
        ctx.register_udf(crate::udf::Clock::current_time());
        ctx
    })
}

/// A DataFusion error as a data error.
pub fn df_err(e: datafusion::error::DataFusionError) -> rivven_engine::Error {
    rivven_engine::Error::data(strip_df(&e.to_string()))
}

/// DataFusion's messages start with their category; keep the part a user acts on.
pub fn strip_df(msg: &str) -> String {
    let msg = msg
        .strip_prefix("Error during planning: ")
        .or_else(|| msg.strip_prefix("SQL error: "))
        .or_else(|| msg.strip_prefix("Schema error: "))
        .unwrap_or(msg);
    msg.split("\nbacktrace")
        .next()
        .unwrap_or(msg)
        .trim()
        .to_owned()
}

/// Parse SQL expression text against `schema`. Errors are the user-facing message.
pub fn parse(sql: &str, schema: &SchemaRef) -> std::result::Result<Expr, String> {
    let df = DFSchema::try_from(schema.as_ref().clone()).map_err(|e| strip_df(&e.to_string()))?;
    session()
        .parse_sql_expr(sql, &df)
        .map_err(|e| strip_df(&e.to_string()))
}

/// Compile a logical expression against `schema` (type coercion included).
pub fn physical(
    expr: Expr,
    schema: &SchemaRef,
) -> std::result::Result<Arc<dyn PhysicalExpr>, String> {
    let df = DFSchema::try_from(schema.as_ref().clone()).map_err(|e| strip_df(&e.to_string()))?;
    plan(session(), expr, &df)
}

/// Coerce, simplify and plan `expr` against `df` in `ctx`. Simplification rewrites
/// functions that only exist in logical form (`coalesce`, `nvl`, ...). `now()` is our
/// volatile [`crate::udf::Now`], evaluated per batch, not folded here.
pub fn plan(
    ctx: &SessionContext,
    expr: Expr,
    df: &DFSchema,
) -> std::result::Result<Arc<dyn PhysicalExpr>, String> {
    use datafusion::logical_expr::simplify::SimplifyContext;
    use datafusion::optimizer::simplify_expressions::ExprSimplifier;
    let err = |e: datafusion::error::DataFusionError| strip_df(&e.to_string());
    let simplifier =
        ExprSimplifier::new(SimplifyContext::default().with_schema(Arc::new(df.clone())));
    let expr = simplifier.coerce(expr, df).map_err(err)?;
    let expr = simplifier.simplify(expr).map_err(err)?;
    ctx.create_physical_expr(expr, df).map_err(err)
}

/// Compile SQL expression text against `schema`.
pub fn compile(
    sql: &str,
    schema: &SchemaRef,
) -> std::result::Result<Arc<dyn PhysicalExpr>, String> {
    physical(parse(sql, schema)?, schema)
}

/// The output type of a compiled expression.
pub fn data_type(
    e: &Arc<dyn PhysicalExpr>,
    schema: &SchemaRef,
) -> std::result::Result<DataType, String> {
    e.data_type(schema).map_err(|e| strip_df(&e.to_string()))
}

/// Evaluate to an array of the batch's length.
pub fn eval(e: &Arc<dyn PhysicalExpr>, batch: &RecordBatch) -> Result<ArrayRef> {
    e.evaluate(batch)
        .and_then(|v| v.into_array(batch.num_rows()))
        .map_err(df_err)
}

/// Evaluate a boolean expression to a mask where null counts as false.
pub fn eval_mask(e: &Arc<dyn PhysicalExpr>, batch: &RecordBatch) -> Result<BooleanArray> {
    let a = eval(e, batch)?;
    let b = a.as_any().downcast_ref::<BooleanArray>().ok_or_else(|| {
        rivven_engine::Error::data(format!("condition is {}, not boolean", a.data_type()))
    })?;
    Ok(match b.nulls() {
        Some(n) if n.null_count() > 0 => BooleanArray::new(b.values() & n.inner(), None),
        _ => b.clone(),
    })
}

/// A reference to a field by path: `a` is a column, `a.b.c` reads struct fields. A column
/// whose own name contains dots (flattened names) wins over struct access.
pub fn field(path: &str, schema: &SchemaRef) -> std::result::Result<Expr, String> {
    if schema.field_with_name(path).is_ok() {
        return Ok(Expr::Column(Column::from_name(path)));
    }
    let mut parts = path.split('.');
    let first = parts.next().unwrap_or_default();
    let Ok(mut ty) = schema.field_with_name(first).map(|f| f.data_type().clone()) else {
        return Err(missing(path, schema));
    };
    let mut expr = Expr::Column(Column::from_name(first));
    for part in parts {
        let DataType::Struct(fields) = &ty else {
            return Err(missing(path, schema));
        };
        let Some((_, f)) = fields.find(part) else {
            return Err(missing(path, schema));
        };
        ty = f.data_type().clone();
        expr = datafusion::functions::core::expr_fn::get_field(expr, part);
    }
    Ok(expr)
}

/// Whether `path` names a field of `schema` (see [`field`]).
pub fn has_field(path: &str, schema: &SchemaRef) -> bool {
    field(path, schema).is_ok()
}

fn missing(path: &str, schema: &SchemaRef) -> String {
    let names: Vec<&str> = schema.fields().iter().map(|f| f.name().as_str()).collect();
    format!("no field `{path}`; fields: {}", names.join(", "))
}

#[cfg(test)]
mod tests {
    use super::*;
    use arrow::array::AsArray;
    use arrow::datatypes::{DataType, Field};

    #[test]
    fn now_is_evaluated_per_batch_not_at_compile_time() {
        let schema = Arc::new(arrow::datatypes::Schema::new(vec![Field::new(
            "x",
            DataType::Int64,
            true,
        )]));
        let e = compile("now()", &schema).unwrap();
        let batch = arrow::array::RecordBatch::try_new(
            schema.clone(),
            vec![Arc::new(arrow::array::Int64Array::from(vec![1]))],
        )
        .unwrap();
        let at = |b: &arrow::array::RecordBatch| {
            eval(&e, b)
                .unwrap()
                .as_primitive::<arrow::datatypes::TimestampNanosecondType>()
                .value(0)
        };
        let first = at(&batch);
        std::thread::sleep(std::time::Duration::from_millis(5));
        let second = at(&batch);
        assert!(second >= first + 5_000_000, "{first} then {second}");
        let alias = compile("current_timestamp", &schema);
        assert!(alias.is_ok(), "{alias:?}");
        for (f, ty) in [
            ("current_date", DataType::Date32),
            ("today()", DataType::Date32),
            (
                "current_time",
                DataType::Time64(arrow::datatypes::TimeUnit::Nanosecond),
            ),
        ] {
            let e = compile(f, &schema).unwrap();
            // Volatile: still a function call after compilation, not a folded literal.
            assert!(
                !e.as_any()
                    .is::<datafusion::physical_expr::expressions::Literal>(),
                "{f} was folded"
            );
            assert_eq!(eval(&e, &batch).unwrap().data_type(), &ty);
        }
    }
}
