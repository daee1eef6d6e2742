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
//! (default [`DEFAULT_THRESHOLD`], 1 MiB; the UTF-8 bytes of text, the bytes of binary) as
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

mod op;
mod store;

use arrow::datatypes::{DataType, Field, FieldRef, Schema, SchemaRef};
use rivven_engine::config::FieldError;
use rivven_engine::secret::SecretString;
use serde::Deserialize;
use std::sync::{Arc, OnceLock};

use super::envelope::images_schema;
use super::{require_fields, Names, Spec};
use crate::chain::Op;
use crate::image::image_schema;

/// Field metadata key set (to `true`) on every externalized field.
pub const META_EXTERNALIZED: &str = "rivven.externalized";

/// Default `size_threshold`: 1 MiB.
pub const DEFAULT_THRESHOLD: u64 = 1 << 20;

/// Where the objects go.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum StorageType {
    /// Amazon S3 and S3-compatible servers (MinIO, R2, Ceph).
    S3,
    /// Google Cloud Storage.
    Gcs,
    /// Azure Blob Storage.
    Azure,
    /// A local (or mounted) directory.
    Local,
}

impl StorageType {
    /// The name used in config and messages.
    pub fn name(self) -> &'static str {
        match self {
            StorageType::S3 => "s3",
            StorageType::Gcs => "gcs",
            StorageType::Azure => "azure",
            StorageType::Local => "local",
        }
    }
}

/// `externalize_blob`: see the module docs. Connection keys follow the object-storage sink.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ExternalizeBlob {
    /// `s3`, `gcs`, `azure` or `local`.
    pub storage_type: StorageType,
    /// Bucket (s3, gcs) or container (azure).
    #[serde(default, alias = "container")]
    pub bucket: Option<String>,
    /// Directory (local).
    #[serde(default)]
    pub path: Option<String>,
    /// Prefix of every object name, e.g. `blobs/`.
    #[serde(default)]
    pub prefix: String,
    /// Fields to externalize (default: every binary and text field of the row).
    #[serde(default)]
    pub fields: Option<Names>,
    /// Values of at most this many bytes stay inline.
    #[serde(default = "default_threshold")]
    pub size_threshold: u64,
    /// s3: region (default: from the environment, else `us-east-1`).
    #[serde(default)]
    pub region: Option<String>,
    /// s3, gcs, azure: custom endpoint (MinIO, an emulator, ...).
    #[serde(default, alias = "endpoint")]
    pub endpoint_url: Option<String>,
    /// s3: static access key id (default: the AWS credential chain).
    #[serde(default)]
    pub access_key_id: Option<String>,
    /// s3: static secret access key, with `access_key_id`.
    #[serde(default)]
    pub secret_access_key: Option<SecretString>,
    /// s3: session token of temporary credentials.
    #[serde(default)]
    pub session_token: Option<SecretString>,
    /// s3: allow plain HTTP (default: true when `endpoint_url` starts with `http://`).
    #[serde(default)]
    pub allow_http: Option<bool>,
    /// s3: path-style requests (default true); false for virtual-hosted style.
    #[serde(default, alias = "path_style")]
    pub force_path_style: Option<bool>,
    /// gcs: service-account JSON file (default: Application Default Credentials).
    #[serde(default, alias = "service_account_path")]
    pub credentials_file: Option<String>,
    /// azure: storage account.
    #[serde(default, alias = "account")]
    pub account_name: Option<String>,
    /// azure: shared account key (default: the Azure credential chain).
    #[serde(default, alias = "account_key")]
    pub access_key: Option<SecretString>,
    /// azure: use the Azurite emulator.
    #[serde(default)]
    pub use_emulator: Option<bool>,
    /// The store, connected once and shared by the ops compiled for each input schema.
    #[serde(skip)]
    shared: Shared,
}

fn default_threshold() -> u64 {
    DEFAULT_THRESHOLD
}

/// The lazily built store of one `externalize_blob` step.
#[derive(Clone, Default)]
struct Shared(Arc<OnceLock<Result<Arc<store::Store>, FieldError>>>);

impl std::fmt::Debug for Shared {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Shared")
    }
}

impl ExternalizeBlob {
    /// Every connection key that is set, with the storage type it belongs to.
    fn connection_keys(&self) -> Vec<(&'static str, StorageType)> {
        use StorageType::{Azure, Gcs, Local, S3};
        let mut keys = Vec::new();
        let mut key = |name: &'static str, set: bool, owner: StorageType| {
            if set {
                keys.push((name, owner));
            }
        };
        key("bucket", self.bucket.is_some(), self.storage_type);
        key("path", self.path.is_some(), Local);
        key("region", self.region.is_some(), S3);
        key("access_key_id", self.access_key_id.is_some(), S3);
        key("secret_access_key", self.secret_access_key.is_some(), S3);
        key("session_token", self.session_token.is_some(), S3);
        key("allow_http", self.allow_http.is_some(), S3);
        key("force_path_style", self.force_path_style.is_some(), S3);
        key("credentials_file", self.credentials_file.is_some(), Gcs);
        key("account_name", self.account_name.is_some(), Azure);
        key("access_key", self.access_key.is_some(), Azure);
        key("use_emulator", self.use_emulator.is_some(), Azure);
        keys
    }

    fn store(&self) -> Result<Arc<store::Store>, FieldError> {
        self.shared
            .0
            .get_or_init(|| store::Store::new(self).map(Arc::new))
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

impl Spec for ExternalizeBlob {
    fn validate(&self) -> Vec<FieldError> {
        let mut errs = Vec::new();
        let st = self.storage_type;
        for (key, owner) in self.connection_keys() {
            if key == "bucket" && st == StorageType::Local {
                errs.push(FieldError::new(
                    key,
                    "not used by storage_type local; set `path` (a directory)",
                ));
            } else if owner != st {
                errs.push(FieldError::new(
                    key,
                    format!(
                        "applies to storage_type {}, not {}",
                        owner.name(),
                        st.name()
                    ),
                ));
            }
        }
        if st == StorageType::Local {
            if self.path.as_deref().is_none_or(str::is_empty) {
                errs.push(FieldError::new("path", "required for storage_type local"));
            }
            if self.endpoint_url.is_some() {
                errs.push(FieldError::new(
                    "endpoint_url",
                    "applies to storage_type s3, gcs or azure, not local",
                ));
            }
        } else if self.bucket.as_deref().is_none_or(str::is_empty) {
            let what = if st == StorageType::Azure {
                "bucket (the container)"
            } else {
                "bucket"
            };
            errs.push(FieldError::new(
                "bucket",
                format!("{what} is required for storage_type {}", st.name()),
            ));
        }
        if st == StorageType::S3 && self.access_key_id.is_some() != self.secret_access_key.is_some()
        {
            errs.push(FieldError::new(
                "access_key_id",
                "give both `access_key_id` and `secret_access_key`, or neither (the AWS \
                 credential chain)",
            ));
        }
        if st == StorageType::Azure {
            let emulator = self.use_emulator.unwrap_or(false);
            if emulator && self.endpoint_url.is_some() {
                errs.push(FieldError::new(
                    "endpoint_url",
                    "not used with use_emulator; the emulator address comes from \
                     AZURITE_BLOB_STORAGE_URL",
                ));
            }
            if !emulator && self.account_name.is_none() {
                errs.push(FieldError::new(
                    "account_name",
                    "required for storage_type azure",
                ));
            }
        }
        if let Err(m) = store::check_prefix(&self.prefix) {
            errs.push(FieldError::new("prefix", m));
        }
        if let Some(f) = &self.fields {
            if f.is_empty() {
                errs.push(FieldError::new(
                    "fields",
                    "list at least one field, or leave `fields` out for every binary and text \
                     field",
                ));
            }
        }
        errs
    }

    fn compile(&self, input: &SchemaRef) -> Result<Arc<dyn Op>, FieldError> {
        let row = image_schema(input);
        let chosen: Vec<usize> = match &self.fields {
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
            threshold: self.size_threshold,
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
