//! `externalize_blob`: the claim-check pattern. Large values are moved to object storage and
//! the row keeps a reference to them.
//!
//! ```yaml
//! - type: externalize_blob
//!   predicate: { table: documents }
//!   config:
//!     storage_type: s3                # s3, gcs, azure or local
//!     bucket: my-blobs                # bucket (s3, gcs) or container (azure); local: `path`
//!     prefix: cdc/documents/          # object name prefix (default none)
//!     fields: [body, thumbnail]       # default: every binary and text field
//!     size_threshold: 65536           # bytes; values this size or smaller stay inline
//!     region: eu-west-1               # + endpoint_url, access_key_id, secret_access_key, ...
//! ```
//!
//! **Reads**: the selected fields of the row (both images of a change event): `fields`, or
//! by default every `Binary`, `LargeBinary`, `BinaryView`, `Utf8`, `LargeUtf8` and
//! `Utf8View` field. **Writes**: each non-null value longer than `size_threshold` bytes
//! (default [`config::DEFAULT_THRESHOLD`], 1 MiB; the UTF-8 bytes of text, the bytes of binary) as
//! one object named `<prefix><sha256 of the bytes, 64 hex digits>`, in a single PUT (for
//! `local`: a file under `path`, written to a temp name, fsynced and renamed, and its
//! directory fsynced; an existing file of that name is kept). Each PUT may take up to five
//! minutes, plus the store client's retries.
//!
//! **Output**: every selected field becomes a struct `{url: Utf8, value: <original type>}`
//! with field metadata `rivven.externalized = true`:
//! - an externalized value: `url` is the reference, `value` is null. The reference is
//!   `s3://<bucket>/<object>`, `gs://<bucket>/<object>`, `az://<container>/<object>`, or
//!   `file://` followed by the absolute path of the file for `local`;
//! - a value kept inline (at or below the threshold, or in a row a predicate did not
//!   select): `url` is null, `value` is the original value;
//! - a null value: the struct is null.
//!
//! So the column has one type whatever the value sizes, the original type is kept, and a
//! consumer never has to guess whether a text is a reference. Naming an already
//! externalized field is an error; the default selection skips them (they are structs).
//!
//! **Connection keys** are those of the object-storage sink, flat: s3 `region`,
//! `endpoint_url`, `access_key_id` + `secret_access_key`, `session_token`, `allow_http`,
//! `force_path_style`; gcs `credentials_file`, `endpoint_url`; azure `account_name`,
//! `access_key`, `use_emulator`, `endpoint_url`. Without static credentials each cloud's
//! default chain (environment, instance or workload identity) is used. A key of another
//! storage type is rejected by validation, as is an unknown key.
//!
//! **Guarantees**: the batch is returned only after every object of it is stored (all PUTs
//! completed; local files fsynced), so a row that reaches the topic or sink never points at
//! a missing object. Names are content addresses: a replay after a crash writes the same
//! objects again under the same names (idempotent), and equal values share one object.
//! Objects are never deleted by rivven. Uploads of one batch run concurrently (at most
//! [`store::MAX_IN_FLIGHT`] at once) on a small runtime of the transform's own, created at
//! the first upload. A failed upload fails the batch with the transform, field and object
//! name in the message (never a credential); the pipeline then restarts and replays the
//! batch (with backoff, up to `settings.retry.max_retries`), except when the store refused
//! the credentials.
//!
//! With a `predicate:`, a batch in which it selects no row passes through unchanged (other
//! tables keep their types); in a batch where it selects some rows, the others are kept
//! inline (`url` null).

mod config;
mod op;
mod store;

use config::ExternalizeBlob;

use arrow::datatypes::{DataType, Field, FieldRef, Schema, SchemaRef};
use rivven_engine::config::{FieldError, Validate};
use schemars::JsonSchema;
use serde::Deserialize;
use std::sync::{Arc, OnceLock};

use super::envelope::images_schema;
use crate::field_list::require_fields;
use crate::image::image_schema;
use crate::op::Op;
use crate::op::{fresh_copy, Spec};

/// Field metadata key set (to `true`) on every externalized field.
pub const META_EXTERNALIZED: &str = "rivven.externalized";

/// The lazily built store of one `externalize_blob` step.
#[derive(Clone, Default)]
struct Shared(Arc<OnceLock<Result<Arc<store::Store>, FieldError>>>);

impl std::fmt::Debug for Shared {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Shared")
    }
}

impl Blob {
    fn store(&self) -> Result<Arc<store::Store>, FieldError> {
        self.shared
            .0
            .get_or_init(|| store::Store::new(&self.config).map(Arc::new))
            .clone()
    }
}

/// Binary and text types: the ones whose values are bytes.
fn is_blob_type(ty: &DataType) -> bool {
    matches!(
        ty,
        DataType::Binary
            | DataType::LargeBinary
            | DataType::BinaryView
            | DataType::Utf8
            | DataType::LargeUtf8
            | DataType::Utf8View
    )
}

/// `externalize_blob` as a chain step: its config and the store its ops share.
#[derive(Debug, Clone, Deserialize, JsonSchema)]
#[serde(transparent)]
pub struct Blob {
    config: ExternalizeBlob,
    /// The store, connected once and shared by the ops compiled for each input schema.
    #[serde(skip)]
    #[schemars(skip)]
    shared: Shared,
}

impl Validate for Blob {
    fn validate(&self) -> Vec<FieldError> {
        self.config.validate()
    }
}

impl Spec for Blob {
    /// A new chain starts with no store connection.
    fn fresh(&self) -> Option<Arc<dyn Spec>> {
        fresh_copy(self, |s| s.shared = Default::default())
    }

    fn compile(&self, input: &SchemaRef) -> Result<Arc<dyn Op>, FieldError> {
        let row = image_schema(input);
        let chosen: Vec<usize> = match &self.config.fields {
            Some(names) => {
                require_fields("fields", names, &row)?;
                let mut idx = Vec::new();
                for (i, n) in names.iter().enumerate() {
                    let (at, f) = row.column_with_name(n).ok_or_else(|| {
                        FieldError::new(format!("fields[{i}]"), format!("no field `{n}`"))
                    })?;
                    if f.metadata().contains_key(META_EXTERNALIZED) {
                        return Err(FieldError::new(
                            format!("fields[{i}]"),
                            format!("`{n}` is already externalized"),
                        ));
                    }
                    if !is_blob_type(f.data_type()) {
                        return Err(FieldError::new(
                            format!("fields[{i}]"),
                            format!(
                                "`{n}` is {}; externalize_blob takes binary and text fields",
                                f.data_type()
                            ),
                        ));
                    }
                    if !idx.contains(&at) {
                        idx.push(at);
                    }
                }
                idx
            }
            None => row
                .fields()
                .iter()
                .enumerate()
                .filter(|(_, f)| is_blob_type(f.data_type()))
                .map(|(i, _)| i)
                .collect(),
        };
        if chosen.is_empty() {
            return Ok(Arc::new(op::Identity(input.clone())));
        }
        let store = self.store()?;
        let mut fields: Vec<FieldRef> = row.fields().iter().cloned().collect();
        for &i in &chosen {
            fields[i] = externalized_field(&fields[i]);
        }
        let image_out = Arc::new(Schema::new_with_metadata(fields, row.metadata().clone()));
        Ok(Arc::new(op::BlobOp {
            output: images_schema(input, &image_out),
            image_out,
            targets: chosen,
            threshold: self.config.size_threshold,
            store,
        }))
    }
}

/// `f` as an externalized field: `{url: Utf8, value: <f's type>}`, marked in its metadata.
fn externalized_field(f: &FieldRef) -> FieldRef {
    let mut meta = f.metadata().clone();
    meta.insert(META_EXTERNALIZED.into(), "true".into());
    Arc::new(
        Field::new(
            f.name(),
            DataType::Struct(op::struct_fields(f.data_type())),
            f.is_nullable(),
        )
        .with_metadata(meta),
    )
}
