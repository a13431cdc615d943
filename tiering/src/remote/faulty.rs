//! A fault-injecting store decorator for tests: outages, failing the next N requests, failing only
//! writes, added latency.

use std::fmt;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use futures::stream::BoxStream;
use futures::StreamExt;
use object_store::path::Path;
use object_store::{
    CopyOptions, GetOptions, GetResult, ListResult, MultipartUpload, ObjectMeta, ObjectStore,
    PutMultipartOptions, PutOptions, PutPayload, PutResult,
};

/// Wraps a store and fails or delays requests on command.
#[derive(Debug)]
pub struct FaultyStore {
    inner: Arc<dyn ObjectStore>,
    down: AtomicBool,
    writes_down: AtomicBool,
    fail_next: AtomicU64,
    fail_skip: AtomicU64,
    latency_ms: AtomicU64,
    /// Requests refused so far.
    pub injected: AtomicU64,
}

impl FaultyStore {
    /// Wraps `inner`; nothing is injected until asked.
    pub fn new(inner: Arc<dyn ObjectStore>) -> FaultyStore {
        FaultyStore {
            inner,
            down: AtomicBool::new(false),
            writes_down: AtomicBool::new(false),
            fail_next: AtomicU64::new(0),
            fail_skip: AtomicU64::new(0),
            latency_ms: AtomicU64::new(0),
            injected: AtomicU64::new(0),
        }
    }

    /// Every request fails while `down` (an outage).
    pub fn set_down(&self, down: bool) {
        self.down.store(down, Ordering::SeqCst);
    }

    /// Puts, multipart uploads and deletes fail while set; reads work (a partial failure).
    pub fn set_writes_down(&self, down: bool) {
        self.writes_down.store(down, Ordering::SeqCst);
    }

    /// The next `n` requests fail.
    pub fn fail_next(&self, n: u64) {
        self.fail_after(0, n);
    }

    /// After `skip` more requests succeed, the `n` following ones fail.
    pub fn fail_after(&self, skip: u64, n: u64) {
        self.fail_skip.store(skip, Ordering::SeqCst);
        self.fail_next.store(n, Ordering::SeqCst);
    }

    /// Every request waits this long first.
    pub fn set_latency(&self, latency: Duration) {
        self.latency_ms
            .store(latency.as_millis() as u64, Ordering::SeqCst);
    }

    async fn gate(&self, write: bool, what: &str) -> object_store::Result<()> {
        let latency = self.latency_ms.load(Ordering::SeqCst);
        if latency > 0 {
            tokio::time::sleep(Duration::from_millis(latency)).await;
        }
        let skipped = self
            .fail_skip
            .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |n| n.checked_sub(1))
            .is_ok();
        let one_off = !skipped
            && self
                .fail_next
                .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |n| n.checked_sub(1))
                .is_ok();
        if one_off
            || self.down.load(Ordering::SeqCst)
            || (write && self.writes_down.load(Ordering::SeqCst))
        {
            self.injected.fetch_add(1, Ordering::SeqCst);
            return Err(object_store::Error::Generic {
                store: "FaultyStore",
                source: format!("injected failure of {what}").into(),
            });
        }
        Ok(())
    }
}

impl fmt::Display for FaultyStore {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "FaultyStore({})", self.inner)
    }
}

#[async_trait]
impl ObjectStore for FaultyStore {
    async fn put_opts(
        &self,
        location: &Path,
        payload: PutPayload,
        opts: PutOptions,
    ) -> object_store::Result<PutResult> {
        self.gate(true, "put").await?;
        self.inner.put_opts(location, payload, opts).await
    }

    async fn put_multipart_opts(
        &self,
        location: &Path,
        opts: PutMultipartOptions,
    ) -> object_store::Result<Box<dyn MultipartUpload>> {
        self.gate(true, "multipart upload").await?;
        self.inner.put_multipart_opts(location, opts).await
    }

    async fn get_opts(
        &self,
        location: &Path,
        options: GetOptions,
    ) -> object_store::Result<GetResult> {
        self.gate(false, "get").await?;
        self.inner.get_opts(location, options).await
    }

    fn delete_stream(
        &self,
        locations: BoxStream<'static, object_store::Result<Path>>,
    ) -> BoxStream<'static, object_store::Result<Path>> {
        if self.down.load(Ordering::SeqCst) || self.writes_down.load(Ordering::SeqCst) {
            self.injected.fetch_add(1, Ordering::SeqCst);
            return locations
                .map(|_| {
                    Err(object_store::Error::Generic {
                        store: "FaultyStore",
                        source: "injected failure of delete".into(),
                    })
                })
                .boxed();
        }
        self.inner.delete_stream(locations)
    }

    fn list(&self, prefix: Option<&Path>) -> BoxStream<'static, object_store::Result<ObjectMeta>> {
        if self.down.load(Ordering::SeqCst) {
            self.injected.fetch_add(1, Ordering::SeqCst);
            return futures::stream::once(async {
                Err(object_store::Error::Generic {
                    store: "FaultyStore",
                    source: "injected failure of list".into(),
                })
            })
            .boxed();
        }
        self.inner.list(prefix)
    }

    async fn list_with_delimiter(&self, prefix: Option<&Path>) -> object_store::Result<ListResult> {
        self.gate(false, "list").await?;
        self.inner.list_with_delimiter(prefix).await
    }

    async fn copy_opts(
        &self,
        from: &Path,
        to: &Path,
        options: CopyOptions,
    ) -> object_store::Result<()> {
        self.gate(true, "copy").await?;
        self.inner.copy_opts(from, to, options).await
    }
}
