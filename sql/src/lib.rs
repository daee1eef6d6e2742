//! rivven-sql: the transform compiler of rivven-connect.
//!
//! A pipeline's `transforms:` list (single message transforms, predicates, SQL) is parsed
//! once, then compiled against each input schema into DataFusion physical expressions and
//! Arrow kernels, and evaluated per batch. Nothing runs per row except the row-shaped parts
//! of routers (choosing a destination), and compiled steps are cached per schema, so a
//! chain costs a few vectorised kernel calls per batch.
//!
//! ```yaml
//! transforms:
//!   - type: mask_field
//!     predicate: { table: users }
//!     config: { fields: [ssn], keep_last: 4 }
//!   - type: filter
//!     config: { condition: "status = active" }
//!   - type: extract_new_record_state
//!     config: { add_op: true, add_table: true }
//! ```
//!
//! Modules, each depending only on those listed before it:
//! - [`udf`], [`expr`]: SQL expressions compiled to DataFusion physical expressions.
//! - [`image`]: how transforms see flat and change-event batches.
//! - [`predicate`]: `predicate:` keys.
//! - [`field_list`]: field-name lists in configs.
//! - [`op`]: the contract a transform compiles to ([`op::Spec`], [`op::Op`]).
//! - [`transforms`]: the built-in transforms, one table of every `type:`.
//! - [`chain`]: steps, per-schema compilation, predicates (`CASE WHEN` merge or runs),
//!   dead-letter isolation.
//! - [`features`]: a source's `cdc_features` block (deduplication, encryption, tombstones,
//!   event router, partitioner) as steps around the list.
//! - [`plan`]: a pipeline's transforms parsed once ([`SqlPlan`]) and the registry's
//!   [`SqlTransforms`].
//!
//! [`register`] installs the compiler in a connector registry.

pub mod chain;
pub mod expr;
pub mod features;
pub mod field_list;
pub mod image;
pub mod op;
pub mod plan;
pub mod predicate;
pub mod transforms;
pub mod udf;

pub use plan::{SqlPlan, SqlTransforms};

use rivven_engine::registry::Registry;
use std::sync::Arc;

/// Install the transform compiler in `registry`.
pub fn register(registry: &mut Registry) {
    registry.set_transforms(Arc::new(SqlTransforms));
}
