//! The `externalize_blob` config: where objects go and the connection keys, validated
//! without I/O.

use crate::field_list::Names;
use object_store::path::Path as ObjPath;
use rivven_engine::config::{FieldError, Validate};
use rivven_engine::secret::SecretString;
use schemars::JsonSchema;
use serde::Deserialize;

/// Default `size_threshold`: 1 MiB.
pub const DEFAULT_THRESHOLD: u64 = 1 << 20;

/// Where the objects go.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, JsonSchema)]
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
#[derive(Debug, Clone, Deserialize, JsonSchema)]
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
}

fn default_threshold() -> u64 {
    DEFAULT_THRESHOLD
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
}

impl Validate for ExternalizeBlob {
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
        if let Err(m) = check_prefix(&self.prefix) {
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
}

/// Whether `prefix` makes valid object names and stays inside a local directory.
pub fn check_prefix(prefix: &str) -> std::result::Result<(), String> {
    if prefix.starts_with('/') {
        return Err("must not start with `/`".into());
    }
    ObjPath::parse(format!("{prefix}x"))
        .map(|_| ())
        .map_err(|e| format!("not a valid object name prefix: {e}"))
}
