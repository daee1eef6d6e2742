//! Where externalized values go: a cloud object store through `object_store`, or a local
//! directory; and the small runtime of the transform's own that stores a batch's objects
//! concurrently while the calling (synchronous) transform waits.

use object_store::path::Path as ObjPath;
use object_store::{ClientConfigKey, ObjectStore, ObjectStoreExt, PutPayload};
use rivven_engine::config::FieldError;
use rivven_engine::{Error, ErrorKind, Origin, Result};
use std::path::{Path, PathBuf};
use std::sync::{Arc, OnceLock};

use super::config::{ExternalizeBlob, StorageType};

/// Objects stored at once per batch.
pub const MAX_IN_FLIGHT: usize = 16;

/// Time one PUT may take (one value is one PUT, so this bounds the upload of the largest
/// value; the store's own retries come on top).
const REQUEST_TIMEOUT: &str = "300s";

/// One object to store: a value of field `field` under name `key`.
pub struct Upload {
    /// The field the value came from, for messages.
    pub field: String,
    /// The object name: prefix and SHA-256.
    pub key: String,
    /// The value.
    pub bytes: Vec<u8>,
}

enum Backend {
    /// A bucket or container; `base` is `s3://bucket`, `gs://bucket` or `az://container`.
    Remote {
        store: Arc<dyn ObjectStore>,
        base: String,
    },
    /// Files under an absolute directory.
    Local { root: PathBuf },
}

/// The store of one `externalize_blob` step.
pub struct Store {
    backend: Arc<Backend>,
    prefix: String,
    runtime: OnceLock<std::result::Result<tokio::runtime::Runtime, String>>,
}

impl Drop for Store {
    fn drop(&mut self) {
        // Dropping a runtime blocks; the transform may be dropped inside an async task.
        if let Some(Ok(rt)) = self.runtime.take() {
            rt.shutdown_background();
        }
    }
}

fn configure(what: &str) -> impl Fn(object_store::Error) -> FieldError + '_ {
    move |e| FieldError::new("", format!("configure {what}: {e}"))
}

impl Store {
    /// The store for a validated config. Builds the client (no I/O); credentials are handed
    /// to it and appear in no message.
    pub fn new(c: &ExternalizeBlob) -> std::result::Result<Self, FieldError> {
        let bucket = c.bucket.clone().unwrap_or_default();
        let timeout = ClientConfigKey::Timeout;
        let (store, scheme): (Arc<dyn ObjectStore>, &str) = match c.storage_type {
            StorageType::Local => {
                let dir = c.path.as_deref().unwrap_or(".");
                let root = std::path::absolute(dir).map_err(|e| {
                    FieldError::new("path", format!("`{dir}`: no absolute path: {e}"))
                })?;
                return Ok(Self::with(Backend::Local { root }, &c.prefix));
            }
            StorageType::S3 => {
                use object_store::aws::{AmazonS3Builder, AmazonS3ConfigKey};
                let mut b = AmazonS3Builder::from_env()
                    .with_bucket_name(&bucket)
                    .with_virtual_hosted_style_request(!c.force_path_style.unwrap_or(true))
                    .with_config(AmazonS3ConfigKey::Client(timeout), REQUEST_TIMEOUT);
                if let Some(r) = &c.region {
                    b = b.with_region(r);
                }
                if let Some(ep) = &c.endpoint_url {
                    b = b.with_endpoint(ep);
                }
                let http = c
                    .allow_http
                    .or_else(|| c.endpoint_url.as_ref().map(|e| e.starts_with("http://")));
                if let Some(h) = http {
                    b = b.with_allow_http(h);
                }
                if let Some(id) = &c.access_key_id {
                    b = b.with_access_key_id(id);
                }
                if let Some(k) = &c.secret_access_key {
                    b = b.with_secret_access_key(k.expose());
                }
                if let Some(t) = &c.session_token {
                    b = b.with_token(t.expose());
                }
                (Arc::new(b.build().map_err(configure("s3"))?), "s3")
            }
            StorageType::Gcs => {
                use object_store::gcp::{GoogleCloudStorageBuilder, GoogleConfigKey};
                let mut b = GoogleCloudStorageBuilder::from_env()
                    .with_bucket_name(&bucket)
                    .with_config(GoogleConfigKey::Client(timeout), REQUEST_TIMEOUT);
                if let Some(f) = &c.credentials_file {
                    b = b.with_service_account_path(f);
                }
                if let Some(ep) = &c.endpoint_url {
                    b = b.with_base_url(ep).with_config(
                        GoogleConfigKey::Client(ClientConfigKey::AllowHttp),
                        ep.starts_with("http://").to_string(),
                    );
                }
                (Arc::new(b.build().map_err(configure("gcs"))?), "gs")
            }
            StorageType::Azure => {
                use object_store::azure::{AzureConfigKey, MicrosoftAzureBuilder};
                let mut b = MicrosoftAzureBuilder::from_env()
                    .with_container_name(&bucket)
                    .with_use_emulator(c.use_emulator.unwrap_or(false))
                    .with_config(AzureConfigKey::Client(timeout), REQUEST_TIMEOUT);
                if let Some(a) = &c.account_name {
                    b = b.with_account(a);
                }
                if let Some(k) = &c.access_key {
                    b = b.with_access_key(k.expose());
                }
                if let Some(ep) = &c.endpoint_url {
                    b = b
                        .with_endpoint(ep.clone())
                        .with_allow_http(ep.starts_with("http://"));
                }
                (Arc::new(b.build().map_err(configure("azure"))?), "az")
            }
        };
        let base = format!("{scheme}://{bucket}");
        Ok(Self::with(Backend::Remote { store, base }, &c.prefix))
    }

    fn with(backend: Backend, prefix: &str) -> Self {
        Self {
            backend: Arc::new(backend),
            prefix: prefix.to_owned(),
            runtime: OnceLock::new(),
        }
    }

    /// The object name of a value whose SHA-256 is `sha` (hex).
    pub fn key(&self, sha: &str) -> String {
        format!("{}{sha}", self.prefix)
    }

    /// The reference written into the row for object `key`.
    pub fn url(&self, key: &str) -> String {
        self.backend.url(key)
    }

    fn runtime(&self) -> Result<&tokio::runtime::Runtime> {
        self.runtime
            .get_or_init(|| {
                tokio::runtime::Builder::new_multi_thread()
                    .worker_threads(2)
                    .thread_name("rivven-blob")
                    .enable_all()
                    .build()
                    .map_err(|e| e.to_string())
            })
            .as_ref()
            .map_err(|e| Error::internal(format!("start the upload runtime: {e}")))
    }

    /// Store every upload; returns when all are stored, or with the first failure (after
    /// the uploads already started have ended). Callable inside or outside a tokio runtime.
    pub fn put_all(&self, uploads: Vec<Upload>) -> Result<()> {
        if uploads.is_empty() {
            return Ok(());
        }
        let (tx, rx) = std::sync::mpsc::sync_channel(1);
        let backend = self.backend.clone();
        self.runtime()?.spawn(async move {
            // The receiver waits for this; it is gone only if the caller is.
            let _ = tx.send(store_all(backend, uploads).await);
        });
        let recv = move || rx.recv();
        let got = match tokio::runtime::Handle::try_current() {
            // Blocking a worker of a multi-thread runtime: let it hand its tasks over first.
            Ok(h) if h.runtime_flavor() == tokio::runtime::RuntimeFlavor::MultiThread => {
                tokio::task::block_in_place(recv)
            }
            // No runtime, or a current-thread one (the uploads do not need it).
            _ => recv(),
        };
        got.map_err(|_| Error::internal("the upload task ended without a result"))?
    }
}

async fn store_all(backend: Arc<Backend>, uploads: Vec<Upload>) -> Result<()> {
    let mut tasks = tokio::task::JoinSet::new();
    let mut first: Option<Error> = None;
    let note = |r: std::result::Result<Result<()>, tokio::task::JoinError>,
                first: &mut Option<Error>| {
        let r = r.unwrap_or_else(|e| Err(Error::internal(format!("upload task: {e}"))));
        if let (Err(e), None) = (r, &first) {
            *first = Some(e);
        }
    };
    for up in uploads {
        while tasks.len() >= MAX_IN_FLIGHT {
            if let Some(r) = tasks.join_next().await {
                note(r, &mut first);
            }
        }
        if first.is_some() {
            break;
        }
        let b = backend.clone();
        tasks.spawn(async move { b.put(up).await });
    }
    while let Some(r) = tasks.join_next().await {
        note(r, &mut first);
    }
    first.map_or(Ok(()), Err)
}

impl Backend {
    fn url(&self, key: &str) -> String {
        match self {
            Backend::Remote { base, .. } => format!("{base}/{key}"),
            Backend::Local { root } => format!("file://{}", root.join(key).display()),
        }
    }

    async fn put(&self, up: Upload) -> Result<()> {
        match self {
            Backend::Remote { store, .. } => {
                let fail = |e: &dyn std::fmt::Display, retryable: bool| {
                    Error::new(
                        ErrorKind::Connect,
                        Origin::External,
                        retryable,
                        format!("field `{}`: store {}: {e}", up.field, self.url(&up.key)),
                    )
                };
                let path = ObjPath::parse(&up.key).map_err(|e| fail(&e, false))?;
                store
                    .put(&path, PutPayload::from(up.bytes))
                    .await
                    .map_err(|e| {
                        // Refused credentials need a config change; anything else may pass
                        // on a restart, which writes the same objects under the same names.
                        let denied = matches!(
                            e,
                            object_store::Error::PermissionDenied { .. }
                                | object_store::Error::Unauthenticated { .. }
                        );
                        fail(&e, !denied)
                    })?;
                Ok(())
            }
            Backend::Local { root } => {
                let dest = root.join(&up.key);
                let Upload { field, bytes, .. } = up;
                tokio::task::spawn_blocking(move || write_file(&dest, &bytes, &field))
                    .await
                    .map_err(|e| Error::internal(format!("write task: {e}")))?
            }
        }
    }
}

/// Write `bytes` to `dest` durably: a unique temp file in the same directory, fsynced,
/// renamed into place, the directory (and any directory created) fsynced. A file already
/// at `dest` holds the same bytes (the name is their hash) and is kept.
fn write_file(dest: &Path, bytes: &[u8], field: &str) -> Result<()> {
    use std::io::Write;
    let io = |what: &str, p: &Path, e: std::io::Error| {
        Error::io(format!("field `{field}`: {what} {}", p.display()), e)
    };
    let dir = dest.parent().unwrap_or(Path::new("/"));
    if dest.exists() {
        // Its writer may not have synced the directory yet.
        return rivven_engine::topic::sync_dir(dir).map_err(|e| io("sync", dir, e));
    }
    let created: Vec<PathBuf> = dir
        .ancestors()
        .take_while(|d| !d.exists())
        .map(Path::to_path_buf)
        .collect();
    std::fs::create_dir_all(dir).map_err(|e| io("create", dir, e))?;
    let name = dest
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    let tmp = dir.join(format!(".{name}.{}.tmp", unique()));
    let written = (|| {
        let mut f = std::fs::File::create_new(&tmp).map_err(|e| io("create", &tmp, e))?;
        f.write_all(bytes).map_err(|e| io("write", &tmp, e))?;
        f.sync_all().map_err(|e| io("sync", &tmp, e))?;
        std::fs::rename(&tmp, dest).map_err(|e| io("rename into", dest, e))
    })();
    if written.is_err() {
        let _ = std::fs::remove_file(&tmp);
    }
    written?;
    rivven_engine::topic::sync_dir(dir).map_err(|e| io("sync", dir, e))?;
    for d in &created {
        if let Some(parent) = d.parent() {
            rivven_engine::topic::sync_dir(parent).map_err(|e| io("sync", parent, e))?;
        }
    }
    Ok(())
}

/// A name component unique among concurrent writers: process id and a counter.
fn unique() -> String {
    use std::sync::atomic::{AtomicU64, Ordering};
    static N: AtomicU64 = AtomicU64::new(0);
    format!(
        "{}-{}",
        std::process::id(),
        N.fetch_add(1, Ordering::Relaxed)
    )
}

#[cfg(test)]
mod tests {
    use super::super::config::check_prefix;
    use super::write_file;

    #[test]
    fn prefixes_make_valid_names() {
        assert!(check_prefix("").is_ok());
        assert!(check_prefix("blobs/").is_ok());
        assert!(check_prefix("a/b-").is_ok());
        assert!(check_prefix("/abs/").is_err());
        assert!(check_prefix("a//b/").is_err());
        assert!(check_prefix("../up/").is_err());
    }

    #[test]
    fn local_files_are_written_once_and_completely() {
        let dir = tempfile::tempdir().unwrap();
        let dest = dir.path().join("new/sub/abc");
        write_file(&dest, b"hello", "f").unwrap();
        assert_eq!(std::fs::read(&dest).unwrap(), b"hello");
        // Same name, same content: the file is kept.
        write_file(&dest, b"hello", "f").unwrap();
        let names: Vec<_> = std::fs::read_dir(dest.parent().unwrap())
            .unwrap()
            .map(|e| e.unwrap().file_name())
            .collect();
        assert_eq!(names, vec!["abc"], "no temp file left");
    }
}
