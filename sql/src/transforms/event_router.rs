//! `cdc_features.router`: rows go to the destination of the first rule that holds (see
//! [`crate::features`]).

use arrow::array::BooleanArray;
use arrow::datatypes::SchemaRef;
use datafusion::physical_expr::PhysicalExpr;
use rivven_engine::config::{FieldError, Validate};
use rivven_engine::connector::Routed;
use rivven_engine::Result;
use schemars::JsonSchema;
use serde::Deserialize;
use std::sync::Arc;

use crate::image;
use crate::op::{dead_letter_rows, no_predicate, split_by, Ctx, Op, Route, Spec};
use crate::predicate::{FieldValue, Operation, PredicateConfig};

/// What a routing rule tests.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum ConditionType {
    /// Every row.
    Always,
    /// The table name (`orders` or `public.orders`), exactly.
    Table,
    /// The table name, by anchored regex.
    TablePattern,
    /// The schema name, exactly.
    Schema,
    /// The operation: `insert`/`c`/`INSERT`, `update`, `delete`, `snapshot`, `truncate`;
    /// several comma-separated.
    Operation,
    /// `field=value` (compared as text; nested paths allowed).
    FieldEquals,
    /// The row has the field.
    FieldExists,
}

/// One routing rule.
#[derive(Debug, Clone, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct RouteRule {
    /// What the rule tests.
    pub condition_type: ConditionType,
    /// The value tested (all types but `always`).
    #[serde(default)]
    pub condition_value: Option<String>,
    /// Topic for matching rows.
    pub destination: String,
    /// Higher first; ties in list order.
    #[serde(default)]
    pub priority: i64,
}

impl RouteRule {
    /// The rule as a predicate.
    fn predicate(&self) -> std::result::Result<PredicateConfig, FieldError> {
        let value = || {
            self.condition_value
                .clone()
                .filter(|v| !v.trim().is_empty())
                .ok_or_else(|| FieldError::new("condition_value", "required for this condition"))
        };
        let mut p = PredicateConfig::default();
        match self.condition_type {
            ConditionType::Always => {}
            ConditionType::Table => p.table = Some(regex::escape(&value()?)),
            ConditionType::TablePattern => p.table = Some(value()?),
            ConditionType::Schema => p.schema = Some(regex::escape(&value()?)),
            ConditionType::Operation => {
                for o in value()?.split(',') {
                    let o = o.trim();
                    let parsed: Operation =
                        serde_yaml::from_value(serde_yaml::Value::String(o.to_owned()))
                            .or_else(|_| {
                                serde_yaml::from_value(serde_yaml::Value::String(o.to_lowercase()))
                            })
                            .map_err(|_| {
                                FieldError::new(
                                    "condition_value",
                                    format!(
                                "unknown operation `{o}`; use insert, update, delete, snapshot, \
                                 truncate (or c, u, d, r, t)"
                            ),
                                )
                            })?;
                    p.operations.push(parsed);
                }
            }
            ConditionType::FieldEquals => p.field_value = Some(FieldValue::Text(value()?)),
            ConditionType::FieldExists => p.field_exists = Some(value()?),
        }
        let errs = p.validate();
        if let Some(e) = errs.into_iter().next() {
            return Err(FieldError::new("condition_value", e.message));
        }
        Ok(p)
    }
}

/// `cdc_features.router`.
#[derive(Debug, Clone, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Router {
    /// Run it.
    #[serde(default)]
    pub enabled: bool,
    /// Topic for rows no rule matches.
    #[serde(default)]
    pub default_destination: Option<String>,
    /// Topic for rows no rule matches, with the reason.
    #[serde(default)]
    pub dead_letter_queue: Option<String>,
    /// Drop rows no rule matches.
    #[serde(default)]
    pub drop_unroutable: bool,
    /// The rules.
    #[serde(default)]
    pub rules: Vec<RouteRule>,
}

impl Router {
    /// Rule indices by priority (higher first, then list order).
    fn order(&self) -> Vec<usize> {
        let mut idx: Vec<usize> = (0..self.rules.len()).collect();
        idx.sort_by_key(|&i| std::cmp::Reverse(self.rules[i].priority));
        idx
    }
}

impl Validate for Router {
    fn validate(&self) -> Vec<FieldError> {
        let mut errs = Vec::new();
        if self.rules.is_empty() && self.default_destination.is_none() {
            errs.push(FieldError::new(
                "rules",
                "give at least one rule or a default_destination",
            ));
        }
        let unroutable = [
            self.default_destination.is_some(),
            self.dead_letter_queue.is_some(),
            self.drop_unroutable,
        ];
        if unroutable.iter().filter(|b| **b).count() > 1 {
            errs.push(FieldError::new(
                "default_destination",
                "default_destination, dead_letter_queue and drop_unroutable each decide where \
                 unmatched rows go; give at most one",
            ));
        }
        for (key, t) in [
            ("default_destination", &self.default_destination),
            ("dead_letter_queue", &self.dead_letter_queue),
        ] {
            if let Some(t) = t {
                if let Err(e) = rivven_engine::config::valid_name(t) {
                    errs.push(FieldError::new(key, format!("topic name `{t}` {e}")));
                }
            }
        }
        for (i, r) in self.rules.iter().enumerate() {
            let at = format!("rules[{i}]");
            if let Err(e) = r.predicate() {
                errs.push(e.under(&at));
            }
            if let Err(e) = rivven_engine::config::valid_name(&r.destination) {
                errs.push(FieldError::new(
                    format!("{at}.destination"),
                    format!("topic name `{}` {e}", r.destination),
                ));
            }
        }
        errs
    }
}

impl Spec for Router {
    fn compile(&self, input: &SchemaRef) -> std::result::Result<Arc<dyn Op>, FieldError> {
        let view = image::view_schema(input);
        let mut rules = Vec::new();
        for i in self.order() {
            let r = &self.rules[i];
            let p = r.predicate().map_err(|e| e.under(&format!("rules[{i}]")))?;
            let expr = p
                .compile(input, &view)
                .map_err(|e| FieldError::new(format!("rules[{i}]"), e.message))?;
            rules.push((
                expr,
                p.needs_view(),
                Arc::<str>::from(r.destination.as_str()),
            ));
        }
        let unmatched = match (&self.default_destination, &self.dead_letter_queue) {
            (Some(d), _) => Unmatched::To(d.as_str().into()),
            (None, Some(q)) => Unmatched::DeadLetter(q.as_str().into()),
            (None, None) if self.drop_unroutable => Unmatched::Drop,
            (None, None) => Unmatched::Keep,
        };
        Ok(Arc::new(RouterOp {
            schema: input.clone(),
            view,
            rules,
            unmatched,
        }))
    }
}

enum Unmatched {
    To(Arc<str>),
    DeadLetter(Arc<str>),
    Drop,
    Keep,
}

type Rule = (Arc<dyn PhysicalExpr>, bool, Arc<str>);

struct RouterOp {
    schema: SchemaRef,
    view: SchemaRef,
    rules: Vec<Rule>,
    unmatched: Unmatched,
}

/// Where the router sends one row.
#[derive(Clone, PartialEq, Eq, Hash)]
enum Dest {
    Rule(usize),
    Unmatched,
}

impl Route for RouterOp {
    fn schema(&self) -> &SchemaRef {
        &self.schema
    }

    fn route(
        &self,
        input: Routed,
        mask: Option<&BooleanArray>,
        ctx: &Ctx<'_>,
        out: &mut Vec<Routed>,
    ) -> Result<()> {
        no_predicate(mask)?;
        let n = input.batch.num_rows();
        let needs_view = self.rules.iter().any(|r| r.1);
        let view = if needs_view {
            Some(image::view(&input.batch, &self.view)?)
        } else {
            None
        };
        let mut dest: Vec<Option<Dest>> = vec![None; n];
        let mut open = n;
        for (i, (expr, on_view, _)) in self.rules.iter().enumerate() {
            if open == 0 {
                break;
            }
            let target = match (&view, *on_view) {
                (Some(v), true) => v,
                _ => &input.batch,
            };
            let m = crate::expr::eval_mask(expr, target)?;
            for (row, d) in dest.iter_mut().enumerate() {
                if d.is_none() && m.value(row) {
                    *d = Some(Dest::Rule(i));
                    open -= 1;
                }
            }
        }
        let dest: Vec<Dest> = dest
            .into_iter()
            .map(|d| d.unwrap_or(Dest::Unmatched))
            .collect();
        for (d, batch) in split_by(&input.batch, dest)? {
            let piece = Routed {
                batch,
                ..input.clone()
            };
            match d {
                Dest::Rule(i) => out.push(Routed {
                    topic: Some(self.rules[i].2.clone()),
                    ..piece
                }),
                Dest::Unmatched => match &self.unmatched {
                    Unmatched::To(t) => out.push(Routed {
                        topic: Some(t.clone()),
                        ..piece
                    }),
                    Unmatched::Keep => out.push(piece),
                    Unmatched::Drop => {}
                    Unmatched::DeadLetter(q) => {
                        let err = rivven_engine::Error::data(
                            "no routing rule matched (cdc_features.router)",
                        );
                        out.push(dead_letter_rows(
                            &piece,
                            ctx.topic,
                            "cdc_features.router",
                            &err,
                            q,
                        )?);
                    }
                },
            }
        }
        Ok(())
    }
}
