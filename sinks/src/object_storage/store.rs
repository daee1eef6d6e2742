//! Where objects go: a local directory, or a cloud object store through `object_store`.
//!
//! Both backends make an object visible only when it is complete:
//! - **local**: the file is written under `<root>/.rivven-staging/<sink>/`, synced, renamed
//!   into place, and its directory synced; a crash leaves only staging files, which the
//!   next start removes (and which hidden-file-aware readers never list).
//! - **cloud**: a file smaller than one part is sent with one `PUT`; a larger one is a
//!   multipart upload whose parts go out while the file is still being encoded, and which
//!   becomes visible only at `complete`.

use super::config::{Provider, Resolved};
use async_trait::async_trait;
use bytes::Bytes;
use object_store::path::Path as ObjPath;
use object_store::{MultipartUpload, ObjectStore, ObjectStoreExt, PutPayload};
use rivven_engine::{Error, ErrorKind, Origin, Result};
use std::collections::VecDeque;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::Arc;

/// An object being written, not yet visible.
#[async_trait]
pub trait Staging: Send {
    /// Append bytes to the object (may upload a part).
    async fn append(&mut self, bytes: Vec<u8>) -> Result<()>;
    /// Make the object visible under its name, atomically.
    async fn commit(self: Box<Self>) -> Result<()>;
}

/// A place objects are written to.
#[async_trait]
pub trait Backend: Send + Sync {
    /// Start an object named `key`.
    fn stage(&self, key: &str) -> Result<Box<dyn Staging>>;
    /// Remove `key` if it exists.
    async fn delete(&self, key: &str) -> Result<()>;
    /// Discard leftovers of writes that never committed (local staging files).
    async fn discard_staged(&self) -> Result<()>;
    /// Reach the store; a one-line description of what was reached.
    async fn check(&self, prefix: &str) -> Result<String>;
    /// `s3://bucket`, `file:///root`, ... for messages.
    fn url(&self) -> String;
}

/// The backend for a resolved config; `sink` names the staging directory.
pub fn backend(r: &Resolved, sink: &str) -> Result<Arc<dyn Backend>> {
    backend_with(r, sink, object_store::RetryConfig::default())
}

/// The backend `check` probes with: one retry, within 10 s, so an unreachable store is
/// reported in seconds rather than after the sink's full retries.
pub fn check_backend(r: &Resolved) -> Result<Arc<dyn Backend>> {
    let retry = object_store::RetryConfig {
        max_retries: 1,
        retry_timeout: std::time::Duration::from_secs(10),
        ..Default::default()
    };
    backend_with(r, "check", retry)
}

fn backend_with(
    r: &Resolved,
    sink: &str,
    retry: object_store::RetryConfig,
) -> Result<Arc<dyn Backend>> {
    let c = &r.config;
    let bucket = c.bucket.clone().unwrap_or_default();
    let store: Arc<dyn ObjectStore> = match r.provider {
        Provider::Local => {
            let root = PathBuf::from(c.local.as_ref().map(|l| l.root.as_str()).unwrap_or("."));
            return Ok(Arc::new(Local {
                staging: root.join(".rivven-staging").join(sink),
                root,
            }));
        }
        Provider::S3 => {
            let mut b = object_store::aws::AmazonS3Builder::from_env()
                .with_retry(retry)
                .with_bucket_name(&bucket);
            for (k, v) in c.s3.clone().unwrap_or_default().store_options() {
                b = b.with_config(k.parse().map_err(store_err("configure s3"))?, v);
            }
            Arc::new(b.build().map_err(store_err("configure s3"))?)
        }
        Provider::Gcs => {
            let o = c.gcs.clone().unwrap_or_default();
            let mut b = if o.use_adc {
                object_store::gcp::GoogleCloudStorageBuilder::from_env()
            } else {
                object_store::gcp::GoogleCloudStorageBuilder::new()
            }
            .with_retry(retry)
            .with_bucket_name(&bucket);
            for (k, v) in o.store_options() {
                b = b.with_config(k.parse().map_err(store_err("configure gcs"))?, v);
            }
            Arc::new(b.build().map_err(store_err("configure gcs"))?)
        }
        Provider::Azure => {
            let mut b = object_store::azure::MicrosoftAzureBuilder::from_env()
                .with_retry(retry)
                .with_container_name(&bucket);
            for (k, v) in c.azure.clone().unwrap_or_default().store_options() {
                b = b.with_config(k.parse().map_err(store_err("configure azure"))?, v);
            }
            Arc::new(b.build().map_err(store_err("configure azure"))?)
        }
    };
    let scheme = match r.provider {
        Provider::S3 => "s3",
        Provider::Gcs => "gs",
        _ => "az",
    };
    Ok(Arc::new(Remote {
        store,
        url: format!("{scheme}://{bucket}"),
        part_size: r.config.part_size_bytes as usize,
        max_inflight: r.config.max_concurrent_uploads,
    }))
}

fn store_err(context: &'static str) -> impl Fn(object_store::Error) -> Error {
    move |e| {
        // A store that cannot be configured will not get better by retrying.
        let retryable = !context.starts_with("configure");
        Error::new(
            ErrorKind::Connect,
            Origin::External,
            retryable,
            format!("{context}: {e}"),
        )
    }
}

struct Remote {
    store: Arc<dyn ObjectStore>,
    url: String,
    part_size: usize,
    max_inflight: usize,
}

#[async_trait]
impl Backend for Remote {
    fn stage(&self, key: &str) -> Result<Box<dyn Staging>> {
        Ok(Box::new(RemoteStaging {
            store: self.store.clone(),
            path: obj_path(key)?,
            buf: Vec::new(),
            upload: None,
            inflight: VecDeque::new(),
            part_size: self.part_size,
            max_inflight: self.max_inflight,
        }))
    }

    async fn delete(&self, key: &str) -> Result<()> {
        match self.store.delete(&obj_path(key)?).await {
            Ok(()) | Err(object_store::Error::NotFound { .. }) => Ok(()),
            Err(e) => Err(store_err("delete object")(e)),
        }
    }

    async fn discard_staged(&self) -> Result<()> {
        Ok(())
    }

    async fn check(&self, prefix: &str) -> Result<String> {
        let p = (!prefix.is_empty()).then(|| ObjPath::from(prefix));
        self.store
            .list_with_delimiter(p.as_ref())
            .await
            .map_err(store_err("list objects"))?;
        Ok(format!("{}/{prefix} is reachable and listable", self.url))
    }

    fn url(&self) -> String {
        self.url.clone()
    }
}

fn obj_path(key: &str) -> Result<ObjPath> {
    ObjPath::parse(key).map_err(|e| Error::data(format!("object name `{key}`: {e}")))
}

struct RemoteStaging {
    store: Arc<dyn ObjectStore>,
    path: ObjPath,
    buf: Vec<u8>,
    upload: Option<Box<dyn MultipartUpload>>,
    inflight: VecDeque<tokio::task::JoinHandle<object_store::Result<()>>>,
    part_size: usize,
    max_inflight: usize,
}

impl RemoteStaging {
    async fn wait_one(&mut self) -> Result<()> {
        if let Some(h) = self.inflight.pop_front() {
            h.await
                .map_err(|e| Error::internal(format!("part upload task: {e}")))?
                .map_err(store_err("upload part"))?;
        }
        Ok(())
    }

    async fn send_part(&mut self, part: Vec<u8>) -> Result<()> {
        if self.upload.is_none() {
            self.upload = Some(
                self.store
                    .put_multipart(&self.path)
                    .await
                    .map_err(store_err("start multipart upload"))?,
            );
        }
        while self.inflight.len() >= self.max_inflight {
            self.wait_one().await?;
        }
        if let Some(up) = self.upload.as_mut() {
            let fut = up.put_part(PutPayload::from(Bytes::from(part)));
            self.inflight.push_back(tokio::spawn(fut));
        }
        Ok(())
    }
}

impl Drop for RemoteStaging {
    fn drop(&mut self) {
        // Parts still uploading for an object that will never be completed.
        for h in &self.inflight {
            h.abort();
        }
    }
}

impl RemoteStaging {
    async fn finish(&mut self) -> Result<()> {
        if self.upload.is_none() {
            let body = PutPayload::from(Bytes::from(std::mem::take(&mut self.buf)));
            self.store
                .put(&self.path, body)
                .await
                .map_err(store_err("put object"))?;
            return Ok(());
        }
        if !self.buf.is_empty() {
            let last = std::mem::take(&mut self.buf);
            self.send_part(last).await?;
        }
        while !self.inflight.is_empty() {
            self.wait_one().await?;
        }
        if let Some(up) = self.upload.as_mut() {
            up.complete()
                .await
                .map_err(store_err("complete multipart upload"))?;
        }
        Ok(())
    }
}

#[async_trait]
impl Staging for RemoteStaging {
    async fn append(&mut self, bytes: Vec<u8>) -> Result<()> {
        self.buf.extend_from_slice(&bytes);
        while self.buf.len() >= self.part_size {
            let rest = self.buf.split_off(self.part_size);
            let part = std::mem::replace(&mut self.buf, rest);
            self.send_part(part).await?;
        }
        Ok(())
    }

    async fn commit(mut self: Box<Self>) -> Result<()> {
        let result = self.finish().await;
        if result.is_err() {
            for h in self.inflight.drain(..) {
                h.abort();
            }
            if let Some(up) = self.upload.as_mut() {
                // Best effort: an aborted upload leaves no billed parts behind.
                let _ = up.abort().await;
            }
        }
        result
    }
}

struct Local {
    root: PathBuf,
    staging: PathBuf,
}

#[async_trait]
impl Backend for Local {
    fn stage(&self, key: &str) -> Result<Box<dyn Staging>> {
        Ok(Box::new(LocalStaging {
            staging: self.staging.clone(),
            tmp: None,
            dest: self.root.join(key),
        }))
    }

    async fn delete(&self, key: &str) -> Result<()> {
        let path = self.root.join(key);
        match tokio::fs::remove_file(&path).await {
            Ok(()) => match path.parent() {
                Some(dir) => sync_dir(dir),
                None => Ok(()),
            },
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
            Err(e) => Err(Error::io(format!("remove {}", path.display()), e)),
        }
    }

    async fn discard_staged(&self) -> Result<()> {
        match tokio::fs::remove_dir_all(&self.staging).await {
            Ok(()) => Ok(()),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
            Err(e) => Err(Error::io(format!("remove {}", self.staging.display()), e)),
        }
    }

    async fn check(&self, prefix: &str) -> Result<String> {
        let dir = self.root.join(prefix);
        let staging = self.staging.clone();
        tokio::task::spawn_blocking(move || -> Result<()> {
            std::fs::create_dir_all(&dir)
                .map_err(|e| Error::io(format!("create {}", dir.display()), e))?;
            std::fs::create_dir_all(&staging)
                .map_err(|e| Error::io(format!("create {}", staging.display()), e))?;
            let probe = staging.join(".check");
            std::fs::write(&probe, b"ok")
                .map_err(|e| Error::io(format!("write {}", probe.display()), e))?;
            let _ = std::fs::remove_file(&probe);
            let _ = std::fs::remove_dir(&staging);
            Ok(())
        })
        .await
        .map_err(|e| Error::internal(e.to_string()))??;
        Ok(format!("{} is writable", self.url()))
    }

    fn url(&self) -> String {
        format!("file://{}", self.root.display())
    }
}

struct LocalStaging {
    staging: PathBuf,
    tmp: Option<(PathBuf, std::fs::File)>,
    dest: PathBuf,
}

fn create_tmp(staging: &Path) -> Result<(PathBuf, std::fs::File)> {
    std::fs::create_dir_all(staging)
        .map_err(|e| Error::io(format!("create {}", staging.display()), e))?;
    let nonce: u64 = rand_u64();
    let path = staging.join(format!("{nonce:016x}.tmp"));
    let f = std::fs::File::create_new(&path)
        .map_err(|e| Error::io(format!("create {}", path.display()), e))?;
    Ok((path, f))
}

/// A random-enough name component (time and a process-wide counter).
fn rand_u64() -> u64 {
    use std::sync::atomic::{AtomicU64, Ordering};
    static COUNTER: AtomicU64 = AtomicU64::new(0);
    let t = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos() as u64);
    t ^ (u64::from(std::process::id()) << 32) ^ COUNTER.fetch_add(1, Ordering::Relaxed)
}

fn sync_dir(dir: &Path) -> Result<()> {
    rivven_engine::topic::sync_dir(dir).map_err(|e| Error::io(format!("sync {}", dir.display()), e))
}

#[async_trait]
impl Staging for LocalStaging {
    async fn append(&mut self, bytes: Vec<u8>) -> Result<()> {
        if self.tmp.is_none() {
            self.tmp = Some(create_tmp(&self.staging)?);
        }
        if let Some((path, f)) = self.tmp.as_mut() {
            f.write_all(&bytes)
                .map_err(|e| Error::io(format!("write {}", path.display()), e))?;
        }
        Ok(())
    }

    async fn commit(self: Box<Self>) -> Result<()> {
        let LocalStaging { staging, tmp, dest } = *self;
        tokio::task::spawn_blocking(move || -> Result<()> {
            let (path, f) = match tmp {
                Some(t) => t,
                None => create_tmp(&staging)?,
            };
            f.sync_all()
                .map_err(|e| Error::io(format!("sync {}", path.display()), e))?;
            drop(f);
            let dir = dest.parent().unwrap_or(Path::new("."));
            // Directories created here are synced into their parents too, so a machine
            // crash cannot lose a committed file with its new partition directory.
            let created: Vec<&Path> = dir.ancestors().take_while(|d| !d.exists()).collect();
            std::fs::create_dir_all(dir)
                .map_err(|e| Error::io(format!("create {}", dir.display()), e))?;
            std::fs::rename(&path, &dest)
                .map_err(|e| Error::io(format!("rename into {}", dest.display()), e))?;
            sync_dir(dir)?;
            for d in created {
                if let Some(parent) = d.parent() {
                    sync_dir(parent)?;
                }
            }
            Ok(())
        })
        .await
        .map_err(|e| Error::internal(e.to_string()))?
    }
}
