//! Opening the configured object store, and the decorators every store is wrapped in.
//!
//! - `s3://bucket/prefix` — S3 or any S3-compatible server (MinIO, R2, s3s, moto) through
//!   `object_store`'s AmazonS3 client. Credentials and region come from the usual AWS environment
//!   (`AWS_ACCESS_KEY_ID`, `AWS_SECRET_ACCESS_KEY`, `AWS_SESSION_TOKEN`, `AWS_REGION`, web identity /
//!   IRSA, ECS and EC2 instance metadata); endpoint, region, path-style and plain-HTTP can be set in
//!   [`ObjectStoreConfig`]. Conditional puts use `If-Match`/`If-None-Match`.
//! - `file:///path` — the local filesystem (the embedded default), with fsync on every write. The
//!   filesystem store has no compare-and-swap, so [`LocalCas`] provides it for one process.
//! - `memory://` — in memory, for tests.
//!
//! Every store is wrapped in [`MeteredStore`], which counts requests and bytes for metrics and for the
//! PUTs-per-GB figures in the benchmarks.

use std::fmt;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use async_trait::async_trait;
use futures::stream::BoxStream;
use futures::StreamExt;
use object_store::path::Path;
use object_store::{
    CopyOptions, GetOptions, GetResult, ListResult, MultipartUpload, ObjectMeta, ObjectStore,
    ObjectStoreExt, PutMode, PutMultipartOptions, PutOptions, PutPayload, PutResult, UploadPart,
};

use super::RemoteError;

/// Where sealed segments go.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ObjectStoreConfig {
    /// `s3://bucket[/prefix]`, `file:///absolute/path` or `memory://`.
    pub url: String,
    /// S3 endpoint for S3-compatible servers (`http://127.0.0.1:9000` for a local MinIO).
    pub endpoint: Option<String>,
    /// S3 region (default from the environment, else `us-east-1`).
    pub region: Option<String>,
    /// Path-style requests (`endpoint/bucket/key`), as MinIO and most S3-compatible servers need.
    pub path_style: bool,
    /// Allow plain HTTP endpoints.
    pub allow_http: bool,
    /// Explicit credentials `(access key id, secret access key)`; `None` uses the AWS environment
    /// and instance/web-identity credentials.
    pub credentials: Option<(String, String)>,
}

/// An opened store and the key prefix inside it.
#[derive(Debug, Clone)]
pub struct OpenedStore {
    /// The store, metered.
    pub store: Arc<dyn ObjectStore>,
    /// Request counters of `store`.
    pub stats: Arc<StoreStats>,
    /// Key prefix every object goes under.
    pub prefix: String,
    /// Human-readable description for logs (no secrets).
    pub description: String,
}

/// Opens the store that `config` names.
pub fn open_object_store(config: &ObjectStoreConfig) -> Result<OpenedStore, RemoteError> {
    let url = config.url.trim();
    let (scheme, rest) = url
        .split_once("://")
        .ok_or_else(|| RemoteError::Config(format!("object store url {url:?} has no scheme")))?;
    let (inner, prefix): (Arc<dyn ObjectStore>, String) = match scheme {
        "s3" | "s3a" => {
            let (bucket, prefix) = rest.split_once('/').unwrap_or((rest, ""));
            if bucket.is_empty() {
                return Err(RemoteError::Config(format!(
                    "object store url {url:?} names no bucket"
                )));
            }
            let mut builder = object_store::aws::AmazonS3Builder::from_env()
                .with_bucket_name(bucket)
                .with_virtual_hosted_style_request(!config.path_style)
                .with_allow_http(config.allow_http)
                .with_conditional_put(object_store::aws::S3ConditionalPut::ETagMatch);
            if let Some(endpoint) = &config.endpoint {
                builder = builder.with_endpoint(endpoint);
            }
            if let Some(region) = &config.region {
                builder = builder.with_region(region);
            }
            if let Some((id, secret)) = &config.credentials {
                builder = builder
                    .with_access_key_id(id)
                    .with_secret_access_key(secret);
            } else if std::env::var_os("AWS_ACCESS_KEY_ID").is_none() {
                if let Some(credential) = profile_credentials()? {
                    builder = builder.with_credentials(Arc::new(
                        object_store::StaticCredentialProvider::new(credential),
                    ));
                }
            }
            let s3 = builder
                .build()
                .map_err(|e| RemoteError::Config(format!("s3 store for {url:?}: {e}")))?;
            (Arc::new(s3), prefix.trim_matches('/').to_string())
        }
        "file" => {
            if !rest.starts_with('/') {
                return Err(RemoteError::Config(format!(
                    "object store url {url:?} must be an absolute path (file:///...)"
                )));
            }
            std::fs::create_dir_all(rest).map_err(RemoteError::io(format!(
                "create object store directory {rest}"
            )))?;
            let fs = object_store::local::LocalFileSystem::new_with_prefix(rest)
                .map_err(|e| RemoteError::Config(format!("file store at {rest}: {e}")))?
                .with_fsync(true)
                .with_automatic_cleanup(true);
            (Arc::new(LocalCas::new(Arc::new(fs))), String::new())
        }
        "memory" => (
            Arc::new(object_store::memory::InMemory::new()),
            rest.trim_matches('/').to_string(),
        ),
        other => {
            return Err(RemoteError::Config(format!(
                "object store scheme {other:?} is not supported (use s3://, file:// or memory://)"
            )))
        }
    };
    let stats = Arc::new(StoreStats::default());
    Ok(OpenedStore {
        store: Arc::new(MeteredStore::new(inner, stats.clone())),
        stats,
        prefix,
        description: match &config.endpoint {
            Some(endpoint) => format!("{url} at {endpoint}"),
            None => url.to_string(),
        },
    })
}

/// Static keys of the AWS profile `AWS_PROFILE` (default `default`) from the shared credentials file
/// (`AWS_SHARED_CREDENTIALS_FILE`, default `~/.aws/credentials`), the step of the AWS credential chain
/// that `object_store` does not take itself. `None` if there is no such file or profile.
fn profile_credentials() -> Result<Option<object_store::aws::AwsCredential>, RemoteError> {
    let path = match std::env::var_os("AWS_SHARED_CREDENTIALS_FILE") {
        Some(p) => std::path::PathBuf::from(p),
        None => match std::env::var_os("HOME") {
            Some(home) => std::path::PathBuf::from(home).join(".aws/credentials"),
            None => return Ok(None),
        },
    };
    let text = match std::fs::read_to_string(&path) {
        Ok(t) => t,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(RemoteError::io(format!("read {}", path.display()))(e)),
    };
    let profile = std::env::var("AWS_PROFILE").unwrap_or_else(|_| "default".into());
    let values = parse_profile(&text, &profile);
    let get = |k: &str| {
        values
            .iter()
            .find(|(key, _)| key == k)
            .map(|(_, v)| v.clone())
    };
    match (get("aws_access_key_id"), get("aws_secret_access_key")) {
        (Some(key_id), Some(secret_key)) => Ok(Some(object_store::aws::AwsCredential {
            key_id,
            secret_key,
            token: get("aws_session_token"),
        })),
        (None, None) => Ok(None),
        _ => Err(RemoteError::Config(format!(
            "profile [{profile}] in {} has only one of aws_access_key_id and aws_secret_access_key",
            path.display()
        ))),
    }
}

/// The `key = value` pairs of section `[profile]` of an INI-style AWS credentials file.
fn parse_profile(text: &str, profile: &str) -> Vec<(String, String)> {
    let mut inside = false;
    let mut out = Vec::new();
    for line in text.lines().map(str::trim) {
        if line.is_empty() || line.starts_with('#') || line.starts_with(';') {
            continue;
        }
        if let Some(name) = line.strip_prefix('[').and_then(|l| l.strip_suffix(']')) {
            inside = name.trim() == profile;
            continue;
        }
        if inside {
            if let Some((k, v)) = line.split_once('=') {
                out.push((k.trim().to_ascii_lowercase(), v.trim().to_string()));
            }
        }
    }
    out
}

/// Compare-and-swap for stores without it (the local filesystem): conditional puts are checked
/// and applied under one lock. Correct when this process is the only writer of the directory, which
/// is the embedded single-node setup this store is meant for.
#[derive(Debug)]
pub struct LocalCas {
    inner: Arc<dyn ObjectStore>,
    lock: tokio::sync::Mutex<()>,
}

impl LocalCas {
    /// Wraps `inner`.
    pub fn new(inner: Arc<dyn ObjectStore>) -> LocalCas {
        LocalCas {
            inner,
            lock: tokio::sync::Mutex::new(()),
        }
    }
}

impl fmt::Display for LocalCas {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "LocalCas({})", self.inner)
    }
}

#[async_trait]
impl ObjectStore for LocalCas {
    async fn put_opts(
        &self,
        location: &Path,
        payload: PutPayload,
        mut opts: PutOptions,
    ) -> object_store::Result<PutResult> {
        let PutMode::Update(expected) = &opts.mode else {
            return self.inner.put_opts(location, payload, opts).await;
        };
        let _guard = self.lock.lock().await;
        let current = match self.inner.head(location).await {
            Ok(meta) => meta,
            Err(object_store::Error::NotFound { path, .. }) => {
                return Err(object_store::Error::Precondition {
                    path,
                    source: "object does not exist".into(),
                })
            }
            Err(e) => return Err(e),
        };
        if current.e_tag != expected.e_tag {
            return Err(object_store::Error::Precondition {
                path: location.to_string(),
                source: format!(
                    "e_tag {:?} does not match expected {:?}",
                    current.e_tag, expected.e_tag
                )
                .into(),
            });
        }
        opts.mode = PutMode::Overwrite;
        self.inner.put_opts(location, payload, opts).await
    }

    async fn put_multipart_opts(
        &self,
        location: &Path,
        opts: PutMultipartOptions,
    ) -> object_store::Result<Box<dyn MultipartUpload>> {
        self.inner.put_multipart_opts(location, opts).await
    }

    async fn get_opts(
        &self,
        location: &Path,
        options: GetOptions,
    ) -> object_store::Result<GetResult> {
        self.inner.get_opts(location, options).await
    }

    fn delete_stream(
        &self,
        locations: BoxStream<'static, object_store::Result<Path>>,
    ) -> BoxStream<'static, object_store::Result<Path>> {
        self.inner.delete_stream(locations)
    }

    fn list(&self, prefix: Option<&Path>) -> BoxStream<'static, object_store::Result<ObjectMeta>> {
        self.inner.list(prefix)
    }

    async fn list_with_delimiter(&self, prefix: Option<&Path>) -> object_store::Result<ListResult> {
        self.inner.list_with_delimiter(prefix).await
    }

    async fn copy_opts(
        &self,
        from: &Path,
        to: &Path,
        options: CopyOptions,
    ) -> object_store::Result<()> {
        self.inner.copy_opts(from, to, options).await
    }
}

/// Request and byte counters of a store.
#[derive(Debug, Default)]
pub struct StoreStats {
    /// PUT-class requests: single puts, and for multipart uploads the create, each part and the
    /// complete (as S3 bills them).
    pub puts: AtomicU64,
    /// Bytes sent by PUTs.
    pub put_bytes: AtomicU64,
    /// GET requests.
    pub gets: AtomicU64,
    /// Bytes returned by GETs.
    pub get_bytes: AtomicU64,
    /// Objects deleted.
    pub deletes: AtomicU64,
    /// LIST requests.
    pub lists: AtomicU64,
    /// Requests that failed.
    pub errors: AtomicU64,
}

impl StoreStats {
    fn count<T>(&self, result: &object_store::Result<T>) {
        if matches!(result, Err(e) if !matches!(e, object_store::Error::NotFound { .. })) {
            self.errors.fetch_add(1, Ordering::Relaxed);
        }
    }
}

/// Counts every request made through it in a [`StoreStats`].
#[derive(Debug)]
pub struct MeteredStore {
    inner: Arc<dyn ObjectStore>,
    stats: Arc<StoreStats>,
}

impl MeteredStore {
    /// Wraps `inner`, counting into `stats`.
    pub fn new(inner: Arc<dyn ObjectStore>, stats: Arc<StoreStats>) -> MeteredStore {
        MeteredStore { inner, stats }
    }
}

impl fmt::Display for MeteredStore {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.inner)
    }
}

#[derive(Debug)]
struct MeteredUpload {
    inner: Box<dyn MultipartUpload>,
    stats: Arc<StoreStats>,
}

#[async_trait]
impl MultipartUpload for MeteredUpload {
    fn put_part(&mut self, data: PutPayload) -> UploadPart {
        self.stats.puts.fetch_add(1, Ordering::Relaxed);
        self.stats
            .put_bytes
            .fetch_add(data.content_length() as u64, Ordering::Relaxed);
        let stats = self.stats.clone();
        let part = self.inner.put_part(data);
        Box::pin(async move {
            let result = part.await;
            stats.count(&result);
            result
        })
    }

    async fn complete(&mut self) -> object_store::Result<PutResult> {
        // CompleteMultipartUpload is billed as a PUT-class request.
        self.stats.puts.fetch_add(1, Ordering::Relaxed);
        let result = self.inner.complete().await;
        self.stats.count(&result);
        result
    }

    async fn abort(&mut self) -> object_store::Result<()> {
        self.inner.abort().await
    }
}

#[async_trait]
impl ObjectStore for MeteredStore {
    async fn put_opts(
        &self,
        location: &Path,
        payload: PutPayload,
        opts: PutOptions,
    ) -> object_store::Result<PutResult> {
        self.stats.puts.fetch_add(1, Ordering::Relaxed);
        self.stats
            .put_bytes
            .fetch_add(payload.content_length() as u64, Ordering::Relaxed);
        let result = self.inner.put_opts(location, payload, opts).await;
        self.stats.count(&result);
        result
    }

    async fn put_multipart_opts(
        &self,
        location: &Path,
        opts: PutMultipartOptions,
    ) -> object_store::Result<Box<dyn MultipartUpload>> {
        // CreateMultipartUpload is billed as a PUT-class request.
        self.stats.puts.fetch_add(1, Ordering::Relaxed);
        let result = self.inner.put_multipart_opts(location, opts).await;
        self.stats.count(&result);
        Ok(Box::new(MeteredUpload {
            inner: result?,
            stats: self.stats.clone(),
        }))
    }

    async fn get_opts(
        &self,
        location: &Path,
        options: GetOptions,
    ) -> object_store::Result<GetResult> {
        self.stats.gets.fetch_add(1, Ordering::Relaxed);
        let result = self.inner.get_opts(location, options).await;
        self.stats.count(&result);
        if let Ok(got) = &result {
            self.stats
                .get_bytes
                .fetch_add(got.range.end - got.range.start, Ordering::Relaxed);
        }
        result
    }

    fn delete_stream(
        &self,
        locations: BoxStream<'static, object_store::Result<Path>>,
    ) -> BoxStream<'static, object_store::Result<Path>> {
        let stats = self.stats.clone();
        self.inner
            .delete_stream(locations)
            .map(move |r| {
                match &r {
                    Ok(_) => stats.deletes.fetch_add(1, Ordering::Relaxed),
                    Err(_) => stats.errors.fetch_add(1, Ordering::Relaxed),
                };
                r
            })
            .boxed()
    }

    fn list(&self, prefix: Option<&Path>) -> BoxStream<'static, object_store::Result<ObjectMeta>> {
        self.stats.lists.fetch_add(1, Ordering::Relaxed);
        self.inner.list(prefix)
    }

    async fn list_with_delimiter(&self, prefix: Option<&Path>) -> object_store::Result<ListResult> {
        self.stats.lists.fetch_add(1, Ordering::Relaxed);
        self.inner.list_with_delimiter(prefix).await
    }

    async fn copy_opts(
        &self,
        from: &Path,
        to: &Path,
        options: CopyOptions,
    ) -> object_store::Result<()> {
        self.inner.copy_opts(from, to, options).await
    }
}

/// Deletes every object under `prefix` (idempotent: a missing object is fine). Returns how many
/// were deleted.
pub async fn delete_prefix(
    store: &Arc<dyn ObjectStore>,
    prefix: &Path,
) -> Result<usize, RemoteError> {
    let listed: Vec<Path> = store
        .list(Some(prefix))
        .map(|r| r.map(|m| m.location))
        .collect::<Vec<_>>()
        .await
        .into_iter()
        .collect::<object_store::Result<_>>()
        .map_err(RemoteError::store(format!("list {prefix}")))?;
    let n = listed.len();
    delete_objects(store, listed).await?;
    Ok(n)
}

/// Deletes `paths` (a missing object is fine).
pub async fn delete_objects(
    store: &Arc<dyn ObjectStore>,
    paths: Vec<Path>,
) -> Result<(), RemoteError> {
    if paths.is_empty() {
        return Ok(());
    }
    let stream = futures::stream::iter(paths.into_iter().map(Ok)).boxed();
    let results: Vec<object_store::Result<Path>> = store.delete_stream(stream).collect().await;
    for r in results {
        match r {
            Ok(_) | Err(object_store::Error::NotFound { .. }) => {}
            Err(e) => return Err(RemoteError::store("delete objects")(e)),
        }
    }
    Ok(())
}

/// Reads a whole object.
pub async fn get_bytes(
    store: &Arc<dyn ObjectStore>,
    path: &Path,
) -> Result<bytes::Bytes, RemoteError> {
    let got = store
        .get(path)
        .await
        .map_err(RemoteError::store(format!("get {path}")))?;
    got.bytes()
        .await
        .map_err(RemoteError::store(format!("read {path}")))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls_are_checked() {
        let bad = |url: &str| {
            open_object_store(&ObjectStoreConfig {
                url: url.into(),
                endpoint: None,
                region: None,
                path_style: true,
                allow_http: true,
                credentials: None,
            })
            .unwrap_err()
            .to_string()
        };
        assert!(bad("nonsense").contains("no scheme"), "{}", bad("nonsense"));
        assert!(bad("gopher://x").contains("not supported"));
        assert!(bad("s3://").contains("no bucket"));
        assert!(bad("file://relative").contains("absolute"));
    }

    #[test]
    fn profiles_are_parsed_from_the_shared_credentials_file() {
        let text = "[default]\naws_access_key_id = A\naws_secret_access_key=B\n\n# c\n[dev]\nAWS_ACCESS_KEY_ID = C\naws_secret_access_key = D\naws_session_token = T\n";
        assert_eq!(
            parse_profile(text, "default"),
            vec![
                ("aws_access_key_id".into(), "A".into()),
                ("aws_secret_access_key".into(), "B".into())
            ]
        );
        let dev = parse_profile(text, "dev");
        assert_eq!(dev.len(), 3);
        assert_eq!(dev[0], ("aws_access_key_id".into(), "C".into()));
        assert!(parse_profile(text, "missing").is_empty());
    }

    #[tokio::test]
    async fn local_store_supports_conditional_updates_and_counts_requests() {
        let dir = tempfile::tempdir().unwrap();
        let opened = open_object_store(&ObjectStoreConfig {
            url: format!("file://{}", dir.path().display()),
            endpoint: None,
            region: None,
            path_style: false,
            allow_http: false,
            credentials: None,
        })
        .unwrap();
        let store = opened.store;
        let key = Path::from("a/manifest.json");
        let create = PutOptions {
            mode: PutMode::Create,
            ..Default::default()
        };
        let v1 = store
            .put_opts(&key, PutPayload::from_static(b"one"), create.clone())
            .await
            .unwrap();
        assert!(matches!(
            store
                .put_opts(&key, PutPayload::from_static(b"x"), create)
                .await,
            Err(object_store::Error::AlreadyExists { .. })
        ));
        let update = |v: &PutResult| PutOptions {
            mode: PutMode::Update(v.clone().into()),
            ..Default::default()
        };
        let v2 = store
            .put_opts(&key, PutPayload::from_static(b"two!"), update(&v1))
            .await
            .unwrap();
        assert!(matches!(
            store
                .put_opts(&key, PutPayload::from_static(b"stale"), update(&v1))
                .await,
            Err(object_store::Error::Precondition { .. })
        ));
        store
            .put_opts(&key, PutPayload::from_static(b"three"), update(&v2))
            .await
            .unwrap();
        assert_eq!(&get_bytes(&store, &key).await.unwrap()[..], b"three");
        assert_eq!(&store.get_range(&key, 1..3).await.unwrap()[..], b"hr");
        let stats = &opened.stats;
        assert_eq!(stats.puts.load(Ordering::Relaxed), 5);
        assert_eq!(stats.gets.load(Ordering::Relaxed), 2);
        assert_eq!(stats.get_bytes.load(Ordering::Relaxed), 5 + 2);
        assert_eq!(delete_prefix(&store, &Path::from("a")).await.unwrap(), 1);
        assert_eq!(delete_prefix(&store, &Path::from("a")).await.unwrap(), 0);
    }
}
