//! The read cache of the remote tier: [`ChunkCache`].
//!
//! Remote objects (sealed log segments) are immutable: the bytes at a key never change once
//! written. That makes caching them simple and safe — no invalidation — and the cache only has to
//! solve four problems:
//!
//! * **Chunking.** An object is cut into aligned chunks of `chunk_size` bytes: chunk `i` covers
//!   `[i * chunk_size, min((i + 1) * chunk_size, object_size))`. A read of any byte range maps to
//!   the chunks it touches; each chunk is either in the cache or is fetched with exactly one ranged
//!   GET, and the requested bytes are cut out of the chunks (zero-copy with [`Bytes::slice`] when the
//!   range lies inside one chunk, one copy into a fresh buffer otherwise). Cache keys are
//!   `(object path, chunk index)` and values are the chunk bytes.
//! * **Single flight.** Concurrent readers of the same missing chunk share one GET. This is foyer's
//!   `get_or_fetch` request deduplication: the first caller's fetch is spawned by foyer and every
//!   other caller of the same key waits for its result. A failed GET is delivered to every waiter
//!   and is *not* cached, so the next read retries. Because foyer runs the fetch in its own task,
//!   a GET whose readers have all gone away still completes and populates the cache.
//! * **Read-ahead.** After a read whose last chunk is `i`, chunks `i + 1 ..= i + read_ahead_chunks`
//!   that lie within the object and are not cached are fetched in a fire-and-forget task (errors
//!   are only logged), through the same deduplicated path as foreground reads: a consumer reading
//!   sequentially finds the next chunks warm, and a foreground read of a chunk being read ahead
//!   waits for that GET instead of issuing a second one.
//! * **Bounds.** The memory tier is a foyer in-memory cache weighed in bytes (chunk length plus
//!   key), bounded by `memory_bytes`. With `disk_dir` set, it is the memory tier of a foyer
//!   [`HybridCache`] whose disk tier is a block engine on a filesystem device of `disk_bytes`: the
//!   device pre-creates fixed-size block files whose total never exceeds `disk_bytes` (foyer
//!   evicts whole blocks to make room), so the directory cannot grow past it. Chunks reach the disk
//!   when the memory tier evicts them. The disk tier is not recovered on restart: the cache is a
//!   pure accelerator, and starting cold means an entry written under another `chunk_size` can
//!   never be served.
//!
//! Counters ([`ChunkCache::stats`]) report hits, misses, GET count and bytes, GET errors and the
//! total GET latency, so the broker can export the hit ratio and remote read latency.

use std::ops::Range;
use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Instant;

use bytes::{Bytes, BytesMut};
use foyer::{
    BlockEngineConfig, Cache, Code, DeviceBuilder, FsDeviceBuilder, HybridCache,
    HybridCacheBuilder, HybridCachePolicy, HybridCacheProperties, RecoverMode, Source,
};
use futures::{StreamExt, TryStreamExt};
use object_store::path::Path;
use object_store::{ObjectStore, ObjectStoreExt};

use super::RemoteError;

/// How many chunks of one read are fetched at once.
const MAX_CONCURRENT_CHUNK_FETCHES: usize = 8;
/// Bytes charged to the memory tier per entry on top of the chunk and the key.
const ENTRY_OVERHEAD: usize = 64;
/// The disk tier's block size never exceeds this unless a chunk needs more (foyer's default).
const MAX_PREFERRED_BLOCK_SIZE: u64 = 16 * 1024 * 1024;
/// The disk tier must hold at least this many blocks.
const MIN_DISK_BLOCKS: u64 = 4;
/// foyer's disk block size alignment.
const PAGE: u64 = 4096;

/// Configuration of a [`ChunkCache`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ChunkCacheConfig {
    /// The size of an aligned chunk: the unit of caching and of a remote GET. Default 4 MiB.
    pub chunk_size: u64,
    /// The capacity of the memory tier in bytes. Default 256 MiB.
    pub memory_bytes: usize,
    /// The directory of the disk tier; `None` for a memory-only cache. Default `None`.
    pub disk_dir: Option<PathBuf>,
    /// The capacity of the disk tier in bytes: an upper bound of the total size of the files in
    /// `disk_dir`. Must hold at least 4 blocks of `max(2 * chunk_size, min(disk_bytes / 16, 16 MiB))`
    /// bytes. Default 1 GiB.
    pub disk_bytes: u64,
    /// How many chunks after the last chunk of a read are fetched in the background; 0 disables
    /// read-ahead. Default 4.
    pub read_ahead_chunks: usize,
}

impl Default for ChunkCacheConfig {
    fn default() -> Self {
        ChunkCacheConfig {
            chunk_size: 4 * 1024 * 1024,
            memory_bytes: 256 * 1024 * 1024,
            disk_dir: None,
            disk_bytes: 1024 * 1024 * 1024,
            read_ahead_chunks: 4,
        }
    }
}

/// A snapshot of a [`ChunkCache`]'s counters. All are totals since the cache was built.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct CacheStats {
    /// Chunks that reads got without waiting for a GET (from memory or disk).
    pub hits: u64,
    /// Chunks that reads had to wait for a GET for (their own, another reader's or a read-ahead's).
    pub misses: u64,
    /// Ranged GETs issued to the object store (foreground and read-ahead).
    pub gets: u64,
    /// Bytes received by successful GETs.
    pub get_bytes: u64,
    /// GETs that failed.
    pub get_errors: u64,
    /// The summed latency of all GETs (successful or not), in microseconds.
    pub get_latency_micros_total: u64,
}

impl CacheStats {
    /// `hits / (hits + misses)`, or 0 before the first read.
    pub fn hit_ratio(&self) -> f64 {
        let total = self.hits + self.misses;
        if total == 0 {
            0.0
        } else {
            self.hits as f64 / total as f64
        }
    }
}

#[derive(Debug, Default)]
struct Counters {
    hits: AtomicU64,
    misses: AtomicU64,
    gets: AtomicU64,
    get_bytes: AtomicU64,
    get_errors: AtomicU64,
    get_latency_micros_total: AtomicU64,
}

impl Counters {
    fn add(counter: &AtomicU64, n: u64) {
        counter.fetch_add(n, Ordering::Relaxed);
    }
}

/// The cache key: one chunk of one object.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
struct ChunkKey {
    path: String,
    index: u64,
}

impl Code for ChunkKey {
    fn encode(&self, writer: &mut impl std::io::Write) -> foyer::Result<()> {
        self.path.encode(writer)?;
        self.index.encode(writer)
    }

    fn decode(reader: &mut impl std::io::Read) -> foyer::Result<Self> {
        let path = String::decode(reader)?;
        let index = u64::decode(reader)?;
        Ok(ChunkKey { path, index })
    }

    fn estimated_size(&self) -> usize {
        self.path.estimated_size() + self.index.estimated_size()
    }
}

/// Why a GET behind the cache failed. Travels through foyer (shared by every waiter of the GET).
#[derive(Debug, thiserror::Error)]
enum FetchError {
    #[error("{context}: {source}")]
    Store {
        context: String,
        source: object_store::Error,
    },
    #[error("{key}: {reason}")]
    Short { key: String, reason: String },
}

enum Tier {
    Memory(Cache<ChunkKey, Bytes>),
    Hybrid(HybridCache<ChunkKey, Bytes>),
}

struct Shared {
    tier: Tier,
    store: Arc<dyn ObjectStore>,
    counters: Arc<Counters>,
    chunk_size: u64,
    read_ahead_chunks: usize,
}

/// A read cache of immutable remote objects, chunked, single-flight, with read-ahead and an
/// optional bounded disk tier. See the [module documentation](self).
///
/// Cheap to share behind an `Arc`; all methods take `&self`. Must be used inside a Tokio runtime.
pub struct ChunkCache {
    shared: Arc<Shared>,
}

impl std::fmt::Debug for ChunkCache {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ChunkCache")
            .field("chunk_size", &self.shared.chunk_size)
            .field("read_ahead_chunks", &self.shared.read_ahead_chunks)
            .field("hybrid", &matches!(self.shared.tier, Tier::Hybrid(_)))
            .field("stats", &self.stats())
            .finish()
    }
}

impl ChunkCache {
    /// Builds a cache in front of `store`: memory-only when `config.disk_dir` is `None`, memory
    /// plus a disk tier in `disk_dir` (created if missing) bounded by `disk_bytes` otherwise.
    ///
    /// Fails with [`RemoteError::Config`] for a zero `chunk_size` or a `disk_bytes` too small for
    /// the chunk size, and with [`RemoteError::Cache`] if the disk tier cannot be opened.
    pub async fn new(
        config: ChunkCacheConfig,
        store: Arc<dyn ObjectStore>,
    ) -> Result<ChunkCache, RemoteError> {
        if config.chunk_size == 0 {
            return Err(RemoteError::Config(
                "chunk cache chunk_size must be positive".into(),
            ));
        }
        let chunk_bytes = to_usize(config.chunk_size)?;
        let shards = memory_shards(config.memory_bytes, config.chunk_size);
        let weigher = |key: &ChunkKey, value: &Bytes| value.len() + key.path.len() + ENTRY_OVERHEAD;
        let tier = match &config.disk_dir {
            None => Tier::Memory(
                Cache::builder(config.memory_bytes)
                    .with_name("strata-chunk-cache")
                    .with_shards(shards)
                    .with_weighter(weigher)
                    .build(),
            ),
            Some(dir) => {
                let block_size = disk_block_size(config.chunk_size, config.disk_bytes)?;
                let capacity = to_usize(config.disk_bytes)?;
                let device = FsDeviceBuilder::new(dir)
                    .with_capacity(capacity)
                    .build()
                    .map_err(|e| {
                        RemoteError::Cache(format!("opening disk tier in {}: {e}", dir.display()))
                    })?;
                let block_bytes = to_usize(block_size)?;
                // One flusher: its write buffer must hold a whole block.
                let buffer_pool = block_bytes.saturating_mul(2).max(16 * 1024 * 1024);
                let engine =
                    BlockEngineConfig::<ChunkKey, Bytes, HybridCacheProperties>::new(device)
                        .with_block_size(block_bytes)
                        .with_buffer_pool_size(buffer_pool)
                        .with_submit_queue_size_threshold(buffer_pool.saturating_mul(2));
                let hybrid = HybridCacheBuilder::new()
                    .with_name("strata-chunk-cache")
                    .with_policy(HybridCachePolicy::WriteOnEviction)
                    // The disk tier is not recovered, so flushing memory to it on close is wasted I/O.
                    .with_flush_on_close(false)
                    .memory(config.memory_bytes)
                    .with_shards(shards)
                    .with_weighter(weigher)
                    .storage()
                    .with_engine_config(engine)
                    .with_recover_mode(RecoverMode::None)
                    .build()
                    .await
                    .map_err(|e| {
                        RemoteError::Cache(format!("opening disk tier in {}: {e}", dir.display()))
                    })?;
                Tier::Hybrid(hybrid)
            }
        };
        tracing::debug!(
            chunk_size = chunk_bytes,
            memory_bytes = config.memory_bytes,
            disk_dir = ?config.disk_dir,
            disk_bytes = config.disk_bytes,
            read_ahead_chunks = config.read_ahead_chunks,
            "chunk cache built"
        );
        Ok(ChunkCache {
            shared: Arc::new(Shared {
                tier,
                store,
                counters: Arc::new(Counters::default()),
                chunk_size: config.chunk_size,
                read_ahead_chunks: config.read_ahead_chunks,
            }),
        })
    }

    /// Returns the bytes `range` of the object at `path`, whose size is `object_size`.
    ///
    /// The end of `range` is clamped to `object_size`; a range starting at `object_size` yields no
    /// bytes. Chunks are served from the cache or fetched with one ranged GET each (shared with
    /// concurrent readers of the same chunk), and read-ahead of the following chunks is started.
    ///
    /// Fails with [`RemoteError::Cache`] if `range.start > object_size` or `range.end < range.start`,
    /// with [`RemoteError::Store`] if a GET failed (for example a missing object:
    /// [`RemoteError::is_not_found`]), and with [`RemoteError::Corrupt`] if a GET returned fewer
    /// bytes than asked (an object shorter than `object_size`; stores that reject such a range
    /// yield [`RemoteError::Store`] instead). Failures are not cached.
    pub async fn read(
        &self,
        path: &Path,
        object_size: u64,
        range: Range<u64>,
    ) -> Result<Bytes, RemoteError> {
        if range.start > object_size {
            return Err(RemoteError::Cache(format!(
                "read of {path} at {} is beyond its end {object_size}",
                range.start
            )));
        }
        if range.end < range.start {
            return Err(RemoteError::Cache(format!(
                "read of {path} with an inverted range {}..{}",
                range.start, range.end
            )));
        }
        let start = range.start;
        let end = range.end.min(object_size);
        if start == end {
            return Ok(Bytes::new());
        }
        let chunk_size = self.shared.chunk_size;
        let first = start / chunk_size;
        let last = (end - 1) / chunk_size;
        let bytes = if first == last {
            let chunk = self.chunk(path, object_size, first).await?;
            let offset = to_usize(start - first * chunk_size)?;
            chunk.slice(offset..offset + to_usize(end - start)?)
        } else {
            let chunks: Vec<Bytes> = futures::stream::iter(first..=last)
                .map(|index| self.chunk(path, object_size, index))
                .buffered(MAX_CONCURRENT_CHUNK_FETCHES)
                .try_collect()
                .await?;
            let mut out = BytesMut::with_capacity(to_usize(end - start)?);
            for (index, chunk) in (first..=last).zip(&chunks) {
                let chunk_start = index * chunk_size;
                let from = to_usize(start.max(chunk_start) - chunk_start)?;
                let to = to_usize(end.min(chunk_start + chunk_size) - chunk_start)?;
                out.extend_from_slice(&chunk[from..to]);
            }
            out.freeze()
        };
        self.read_ahead(path, object_size, last);
        Ok(bytes)
    }

    /// A snapshot of the counters.
    pub fn stats(&self) -> CacheStats {
        let c = &self.shared.counters;
        CacheStats {
            hits: c.hits.load(Ordering::Relaxed),
            misses: c.misses.load(Ordering::Relaxed),
            gets: c.gets.load(Ordering::Relaxed),
            get_bytes: c.get_bytes.load(Ordering::Relaxed),
            get_errors: c.get_errors.load(Ordering::Relaxed),
            get_latency_micros_total: c.get_latency_micros_total.load(Ordering::Relaxed),
        }
    }

    /// Closes the disk tier, waiting for its in-progress writes; a no-op for a memory-only cache.
    /// The cache should not be read after `close`.
    pub async fn close(&self) -> Result<(), RemoteError> {
        match &self.shared.tier {
            Tier::Memory(_) => Ok(()),
            Tier::Hybrid(hybrid) => hybrid
                .close()
                .await
                .map_err(|e| RemoteError::Cache(format!("closing the disk tier: {e}"))),
        }
    }

    /// Chunk `index` of the object, whole, counting a hit or a miss.
    async fn chunk(&self, path: &Path, object_size: u64, index: u64) -> Result<Bytes, RemoteError> {
        let (key, range) = self.shared.chunk_key(path, object_size, index);
        let expected = range.end - range.start;
        let (value, source) = self.shared.get_or_fetch(&key, path, range).await?;
        let counters = &self.shared.counters;
        match source {
            Source::Outer => Counters::add(&counters.misses, 1),
            _ => Counters::add(&counters.hits, 1),
        }
        if value.len() as u64 != expected {
            // Only possible if callers disagree on the object's size: drop the entry so the chunk
            // is fetched again with this caller's bounds next time.
            self.shared.remove(&key);
            return Err(RemoteError::Corrupt {
                key: path.to_string(),
                reason: format!(
                    "cached chunk {index} has {} bytes, expected {expected} for an object of {object_size} bytes",
                    value.len()
                ),
            });
        }
        Ok(value)
    }

    /// Starts fetching the chunks after `last` that are in the object and not cached.
    fn read_ahead(&self, path: &Path, object_size: u64, last: u64) {
        let shared = &self.shared;
        if shared.read_ahead_chunks == 0 {
            return;
        }
        let chunks = object_size.div_ceil(shared.chunk_size);
        let wanted = last.saturating_add(shared.read_ahead_chunks as u64);
        let targets: Vec<u64> = (last.saturating_add(1)..=wanted)
            .take_while(|&index| index < chunks)
            .filter(|&index| !shared.contains(&shared.chunk_key(path, object_size, index).0))
            .collect();
        if targets.is_empty() {
            return;
        }
        let shared = Arc::clone(shared);
        let path = path.clone();
        tokio::spawn(async move {
            let fetches = targets.iter().map(|&index| {
                let shared = &shared;
                let path = &path;
                async move {
                    let (key, range) = shared.chunk_key(path, object_size, index);
                    (index, shared.get_or_fetch(&key, path, range).await)
                }
            });
            for (index, result) in futures::future::join_all(fetches).await {
                if let Err(e) = result {
                    tracing::warn!(%path, index, error = %e, "chunk cache read-ahead failed");
                }
            }
        });
    }
}

impl Shared {
    /// The key and the byte range of chunk `index` of an object of `object_size` bytes.
    fn chunk_key(&self, path: &Path, object_size: u64, index: u64) -> (ChunkKey, Range<u64>) {
        let start = index.saturating_mul(self.chunk_size);
        let end = start.saturating_add(self.chunk_size).min(object_size);
        let key = ChunkKey {
            path: path.to_string(),
            index,
        };
        (key, start..end)
    }

    fn contains(&self, key: &ChunkKey) -> bool {
        match &self.tier {
            Tier::Memory(cache) => cache.contains(key),
            Tier::Hybrid(hybrid) => hybrid.contains(key),
        }
    }

    fn remove(&self, key: &ChunkKey) {
        match &self.tier {
            Tier::Memory(cache) => {
                cache.remove(key);
            }
            Tier::Hybrid(hybrid) => hybrid.remove(key),
        }
    }

    /// The chunk at `key` and where it came from: the cache, or a (possibly shared) GET of
    /// `range` ([`Source::Outer`]).
    async fn get_or_fetch(
        &self,
        key: &ChunkKey,
        path: &Path,
        range: Range<u64>,
    ) -> Result<(Bytes, Source), RemoteError> {
        let fetch = || {
            fetch_chunk(
                Arc::clone(&self.store),
                Arc::clone(&self.counters),
                path.clone(),
                key.index,
                range,
            )
        };
        match &self.tier {
            Tier::Memory(cache) => {
                // Fast path: a memory hit without building the fetch future.
                if let Some(entry) = cache.get(key) {
                    return Ok((entry.value().clone(), Source::Memory));
                }
                let entry = cache
                    .get_or_fetch(key, fetch)
                    .await
                    .map_err(|e| fetch_failed(path, key.index, &e))?;
                Ok((entry.value().clone(), entry.source()))
            }
            Tier::Hybrid(hybrid) => {
                if let Some(entry) = hybrid.memory().get(key) {
                    return Ok((entry.value().clone(), Source::Memory));
                }
                let entry = hybrid
                    .get_or_fetch(key, fetch)
                    .await
                    .map_err(|e| fetch_failed(path, key.index, &e))?;
                Ok((entry.value().clone(), entry.source()))
            }
        }
    }
}

/// One ranged GET of a chunk, counted. Runs at most once per miss (foyer dedups callers).
async fn fetch_chunk(
    store: Arc<dyn ObjectStore>,
    counters: Arc<Counters>,
    path: Path,
    index: u64,
    range: Range<u64>,
) -> Result<Bytes, FetchError> {
    let expected = range.end - range.start;
    let started = Instant::now();
    let result = store.get_range(&path, range.clone()).await;
    let micros = u64::try_from(started.elapsed().as_micros()).unwrap_or(u64::MAX);
    Counters::add(&counters.gets, 1);
    Counters::add(&counters.get_latency_micros_total, micros);
    match result {
        Ok(body) => {
            Counters::add(&counters.get_bytes, body.len() as u64);
            if body.len() as u64 != expected {
                return Err(FetchError::Short {
                    key: path.to_string(),
                    reason: format!(
                        "GET of bytes {}..{} (chunk {index}) returned {} bytes",
                        range.start,
                        range.end,
                        body.len()
                    ),
                });
            }
            // A response body may be a view into a larger network buffer: copy it into an exactly
            // sized one so that the memory tier's byte accounting is true.
            Ok(Bytes::copy_from_slice(&body))
        }
        Err(source) => {
            Counters::add(&counters.get_errors, 1);
            Err(FetchError::Store {
                context: format!(
                    "GET {path} bytes {}..{} (chunk {index})",
                    range.start, range.end
                ),
                source,
            })
        }
    }
}

/// Turns foyer's error for a failed fetch back into a [`RemoteError`]. foyer shares one error
/// between all waiters of a GET, so the object store error is rebuilt with the same variant (a
/// missing object stays [`object_store::Error::NotFound`]) and message.
fn fetch_failed(path: &Path, index: u64, error: &foyer::Error) -> RemoteError {
    match error.downcast_ref::<FetchError>() {
        Some(FetchError::Store { context, source }) => RemoteError::Store {
            context: context.clone(),
            source: replicate(source),
        },
        Some(FetchError::Short { key, reason }) => RemoteError::Corrupt {
            key: key.clone(),
            reason: reason.clone(),
        },
        None => RemoteError::Cache(format!("chunk {index} of {path}: {error}")),
    }
}

/// A copy of an object store error: same variant and message, with the source reduced to its text.
fn replicate(error: &object_store::Error) -> object_store::Error {
    use object_store::Error as E;
    type BoxError = Box<dyn std::error::Error + Send + Sync + 'static>;
    let text = |source: &BoxError| -> BoxError { source.to_string().into() };
    match error {
        E::Generic { store, source } => E::Generic {
            store,
            source: text(source),
        },
        E::NotFound { path, source } => E::NotFound {
            path: path.clone(),
            source: text(source),
        },
        E::PermissionDenied { path, source } => E::PermissionDenied {
            path: path.clone(),
            source: text(source),
        },
        E::Unauthenticated { path, source } => E::Unauthenticated {
            path: path.clone(),
            source: text(source),
        },
        E::Precondition { path, source } => E::Precondition {
            path: path.clone(),
            source: text(source),
        },
        E::NotModified { path, source } => E::NotModified {
            path: path.clone(),
            source: text(source),
        },
        other => E::Generic {
            store: "ChunkCache",
            source: other.to_string().into(),
        },
    }
}

fn to_usize(n: u64) -> Result<usize, RemoteError> {
    usize::try_from(n).map_err(|_| RemoteError::Config(format!("{n} does not fit in usize")))
}

/// Memory shards such that each shard holds at least 4 chunks (a shard smaller than a chunk would
/// cache nothing), at most 8.
fn memory_shards(memory_bytes: usize, chunk_size: u64) -> usize {
    let per_shard = chunk_size.saturating_mul(4).max(1);
    let shards = (memory_bytes as u64) / per_shard;
    shards.clamp(1, 8) as usize
}

/// The disk tier's block size (foyer's unit of disk eviction, which also bounds the largest entry):
/// `disk_bytes / 16` clamped to `[2 * chunk_size, max(16 MiB, 2 * chunk_size)]`, 4 KiB aligned.
/// The disk must hold at least [`MIN_DISK_BLOCKS`] blocks.
fn disk_block_size(chunk_size: u64, disk_bytes: u64) -> Result<u64, RemoteError> {
    let align_up = |n: u64| n.div_ceil(PAGE).saturating_mul(PAGE);
    let min = align_up(chunk_size.saturating_mul(2));
    let preferred = align_up((disk_bytes / 16).min(MAX_PREFERRED_BLOCK_SIZE));
    let block_size = preferred.max(min);
    if disk_bytes / block_size < MIN_DISK_BLOCKS {
        return Err(RemoteError::Config(format!(
            "chunk cache disk_bytes {disk_bytes} is too small for chunk_size {chunk_size}: it must hold \
             {MIN_DISK_BLOCKS} blocks of {block_size} bytes"
        )));
    }
    Ok(block_size)
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use object_store::memory::InMemory;
    use object_store::PutPayload;

    use super::super::faulty::FaultyStore;
    use super::super::store::{MeteredStore, StoreStats};
    use super::*;

    /// An `InMemory` store behind the fault injector (delay, failures) behind the meter (GET
    /// counts and bytes): the same decorators the broker and the engine tests use.
    struct CountingStore {
        faulty: Arc<FaultyStore>,
        stats: Arc<StoreStats>,
        store: Arc<dyn ObjectStore>,
    }

    impl CountingStore {
        fn with_delay(delay: Duration) -> Self {
            let faulty = Arc::new(FaultyStore::new(Arc::new(InMemory::new())));
            faulty.set_latency(delay);
            let stats = Arc::new(StoreStats::default());
            let store: Arc<dyn ObjectStore> =
                Arc::new(MeteredStore::new(faulty.clone(), stats.clone()));
            CountingStore {
                faulty,
                stats,
                store,
            }
        }

        fn gets(&self) -> u64 {
            self.stats.gets.load(Ordering::SeqCst)
        }

        fn get_bytes(&self) -> u64 {
            self.stats.get_bytes.load(Ordering::SeqCst)
        }

        fn set_failing(&self, failing: bool) {
            self.faulty.set_down(failing);
        }
    }

    impl Default for CountingStore {
        fn default() -> Self {
            CountingStore::with_delay(Duration::ZERO)
        }
    }

    fn pattern(len: usize) -> Bytes {
        (0..len)
            .map(|i| (i % 251) as u8)
            .collect::<Vec<u8>>()
            .into()
    }

    async fn put(store: &CountingStore, path: &Path, data: Bytes) {
        store
            .store
            .put(path, PutPayload::from(data))
            .await
            .expect("put object");
    }

    fn config(chunk_size: u64, read_ahead_chunks: usize) -> ChunkCacheConfig {
        ChunkCacheConfig {
            chunk_size,
            memory_bytes: 1024 * 1024,
            disk_dir: None,
            disk_bytes: 0,
            read_ahead_chunks,
        }
    }

    async fn cache(config: ChunkCacheConfig, store: &Arc<CountingStore>) -> ChunkCache {
        ChunkCache::new(config, store.store.clone())
            .await
            .expect("build cache")
    }

    /// Total apparent and allocated size of the files under `dir`.
    fn dir_size(dir: &std::path::Path) -> (u64, u64) {
        use std::os::unix::fs::MetadataExt;
        let mut apparent = 0;
        let mut allocated = 0;
        for entry in std::fs::read_dir(dir).expect("read dir") {
            let entry = entry.expect("dir entry");
            let meta = entry.metadata().expect("metadata");
            if meta.is_dir() {
                let (a, b) = dir_size(&entry.path());
                apparent += a;
                allocated += b;
            } else {
                apparent += meta.len();
                allocated += meta.blocks() * 512;
            }
        }
        (apparent, allocated)
    }

    #[tokio::test]
    async fn reads_exact_ranges() {
        let store = Arc::new(CountingStore::default());
        let path = Path::from("topic/0/00000000000000000000.log");
        let data = pattern(10_000);
        put(&store, &path, data.clone()).await;
        let cache = cache(config(1024, 0), &store).await;

        // Spanning several chunks, inside one chunk, at the end, clamped past the end.
        for range in [
            100..3000u64,
            1100..1200,
            0..1024,
            9000..10_000,
            9500..20_000,
            0..10_000,
        ] {
            let got = cache
                .read(&path, 10_000, range.clone())
                .await
                .expect("read");
            let end = range.end.min(10_000) as usize;
            assert_eq!(
                got,
                data.slice(range.start as usize..end),
                "range {range:?}"
            );
        }
        // Empty reads need no GET.
        let gets = store.gets();
        assert!(cache
            .read(&path, 10_000, 10_000..10_100)
            .await
            .expect("read")
            .is_empty());
        assert!(cache
            .read(&path, 10_000, 5..5)
            .await
            .expect("read")
            .is_empty());
        assert_eq!(store.gets(), gets);

        // Starting beyond the end, or an inverted range, is an error.
        let err = cache.read(&path, 10_000, 10_001..10_002).await;
        assert!(matches!(err, Err(RemoteError::Cache(_))), "{err:?}");
        let inverted = Range { start: 20, end: 10 };
        let err = cache.read(&path, 10_000, inverted).await;
        assert!(matches!(err, Err(RemoteError::Cache(_))), "{err:?}");

        // Every chunk was fetched exactly once.
        assert_eq!(store.gets(), 10);
        let stats = cache.stats();
        assert_eq!(stats.gets, 10);
        assert_eq!(stats.get_bytes, 10_000);
        assert_eq!(store.get_bytes(), 10_000);
        assert_eq!(stats.get_errors, 0);
    }

    #[tokio::test]
    async fn second_read_is_served_from_cache() {
        let store = Arc::new(CountingStore::default());
        let path = Path::from("a.log");
        let data = pattern(8192);
        put(&store, &path, data.clone()).await;
        let cache = cache(config(1024, 0), &store).await;

        let first = cache.read(&path, 8192, 500..4000).await.expect("read");
        let after_first = cache.stats();
        assert_eq!(after_first.gets, 4);
        assert_eq!(after_first.misses, 4);
        assert_eq!(after_first.hits, 0);

        let second = cache.read(&path, 8192, 500..4000).await.expect("read");
        assert_eq!(first, second);
        assert_eq!(second, data.slice(500..4000));
        let after_second = cache.stats();
        assert_eq!(after_second.gets, 4, "no GET for a cached range");
        assert_eq!(after_second.hits, 4);
        assert_eq!(after_second.misses, 4);
        assert_eq!(store.gets(), 4);
        assert!((after_second.hit_ratio() - 0.5).abs() < 1e-9);
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn concurrent_readers_share_one_get() {
        let store = Arc::new(CountingStore::with_delay(Duration::from_millis(200)));
        let path = Path::from("hot.log");
        let data = pattern(4096);
        put(&store, &path, data.clone()).await;
        let cache = Arc::new(cache(config(4096, 0), &store).await);

        let readers: Vec<_> = (0..16u64)
            .map(|i| {
                let cache = Arc::clone(&cache);
                let path = path.clone();
                tokio::spawn(async move { cache.read(&path, 4096, i * 10..i * 10 + 100).await })
            })
            .collect();
        for (i, reader) in readers.into_iter().enumerate() {
            let got = reader.await.expect("join").expect("read");
            let start = i * 10;
            assert_eq!(got, data.slice(start..start + 100));
        }
        assert_eq!(store.gets(), 1, "one GET for 16 concurrent readers");
        let stats = cache.stats();
        assert_eq!(stats.gets, 1);
        assert_eq!(stats.hits + stats.misses, 16);
        assert!(stats.misses >= 1);
        assert!(stats.get_latency_micros_total >= 200_000);
    }

    #[tokio::test]
    async fn sequential_reads_are_read_ahead() {
        let store = Arc::new(CountingStore::with_delay(Duration::from_millis(5)));
        let path = Path::from("seq.log");
        let data = pattern(16 * 1024);
        put(&store, &path, data.clone()).await;
        let cache = cache(config(1024, 2), &store).await;

        assert_eq!(
            cache.read(&path, 16 * 1024, 0..1024).await.expect("read"),
            data.slice(0..1024)
        );
        // Chunk 0 by the read, chunks 1 and 2 by read-ahead.
        let cached = |index: u64| {
            let shared = &cache.shared;
            shared.contains(&shared.chunk_key(&path, 16 * 1024, index).0)
        };
        wait_for(|| cached(1) && cached(2)).await;
        tokio::time::sleep(Duration::from_millis(50)).await;
        assert_eq!(store.gets(), 3);
        assert!(!cached(3));

        let before = cache.stats();
        assert_eq!(
            cache
                .read(&path, 16 * 1024, 1024..2048)
                .await
                .expect("read"),
            data.slice(1024..2048)
        );
        let after = cache.stats();
        assert_eq!(after.misses, before.misses, "the next chunk was warm");
        assert_eq!(after.hits, before.hits + 1);

        // Read-ahead stops at the end of the object.
        assert_eq!(
            cache
                .read(&path, 16 * 1024, 15 * 1024..16 * 1024)
                .await
                .expect("read"),
            data.slice(15 * 1024..16 * 1024)
        );
        wait_for(|| cached(3)).await;
        tokio::time::sleep(Duration::from_millis(50)).await;
        // Chunk 3 (read-ahead of the second read) and chunk 15: nothing past the end.
        assert_eq!(store.gets(), 5);
        assert_eq!(cache.stats().get_errors, 0);
    }

    async fn wait_for(mut condition: impl FnMut() -> bool) {
        for _ in 0..500 {
            if condition() {
                return;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        panic!("condition not reached in 5s");
    }

    #[tokio::test]
    async fn get_errors_propagate_and_are_not_cached() {
        let store = Arc::new(CountingStore::default());
        let cache = cache(config(1024, 0), &store).await;
        let path = Path::from("late.log");

        // A missing object: NotFound survives the trip through foyer.
        let err = cache
            .read(&path, 2048, 0..100)
            .await
            .expect_err("missing object");
        assert!(matches!(err, RemoteError::Store { .. }), "{err:?}");
        assert!(err.is_not_found(), "{err:?}");
        assert_eq!(cache.stats().get_errors, 1);

        // The next read retries and succeeds once the object exists.
        let data = pattern(2048);
        put(&store, &path, data.clone()).await;
        assert_eq!(
            cache.read(&path, 2048, 0..100).await.expect("read"),
            data.slice(0..100)
        );

        // An injected failure on a not yet cached chunk.
        store.set_failing(true);
        let err = cache
            .read(&path, 2048, 1500..1600)
            .await
            .expect_err("injected failure");
        match &err {
            RemoteError::Store { context, source } => {
                assert!(context.contains("late.log"), "{context}");
                assert!(source.to_string().contains("injected failure"), "{source}");
            }
            other => panic!("expected a store error, got {other:?}"),
        }
        assert!(!err.is_not_found());
        store.set_failing(false);
        assert_eq!(
            cache.read(&path, 2048, 1500..1600).await.expect("read"),
            data.slice(1500..1600)
        );
        let stats = cache.stats();
        assert_eq!(stats.get_errors, 2);
        assert_eq!(stats.gets, 4);
    }

    #[tokio::test]
    async fn object_shorter_than_its_size_is_an_error() {
        let store = Arc::new(CountingStore::default());
        let path = Path::from("short.log");
        put(&store, &path, pattern(1000)).await;
        let cache = cache(config(4096, 0), &store).await;
        // The caller believes the object is longer than it is.
        let err = cache.read(&path, 1200, 0..10).await;
        assert!(err.is_err(), "{err:?}");
        // Nothing was cached: with the right size the read succeeds.
        assert_eq!(
            cache.read(&path, 1000, 0..10).await.expect("read"),
            pattern(1000).slice(0..10)
        );
    }

    #[test]
    fn config_validation() {
        assert!(disk_block_size(64 * 1024, 4 * 1024 * 1024).is_ok());
        assert_eq!(
            disk_block_size(64 * 1024, 4 * 1024 * 1024).expect("ok"),
            256 * 1024
        );
        assert_eq!(
            disk_block_size(4 * 1024 * 1024, 1024 * 1024 * 1024).expect("ok"),
            16 * 1024 * 1024
        );
        assert!(disk_block_size(4 * 1024 * 1024, 16 * 1024 * 1024).is_err());
        assert_eq!(memory_shards(256 * 1024 * 1024, 4 * 1024 * 1024), 8);
        assert_eq!(memory_shards(256 * 1024, 64 * 1024), 1);
        assert_eq!(memory_shards(0, 64 * 1024), 1);
    }

    #[tokio::test]
    async fn rejects_bad_config() {
        let store = CountingStore::default().store;
        let err = ChunkCache::new(config(0, 0), store.clone()).await;
        assert!(matches!(err, Err(RemoteError::Config(_))));
        let dir = tempfile::tempdir().expect("tempdir");
        let bad = ChunkCacheConfig {
            disk_dir: Some(dir.path().to_path_buf()),
            disk_bytes: 1024 * 1024,
            ..ChunkCacheConfig::default()
        };
        assert!(matches!(
            ChunkCache::new(bad, store).await,
            Err(RemoteError::Config(_))
        ));
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn disk_tier_serves_evicted_chunks_and_stays_bounded() {
        const CHUNK: u64 = 64 * 1024;
        const DISK: u64 = 4 * 1024 * 1024;
        let dir = tempfile::tempdir().expect("tempdir");
        let store = Arc::new(CountingStore::default());
        let cache = cache(
            ChunkCacheConfig {
                chunk_size: CHUNK,
                memory_bytes: 256 * 1024,
                disk_dir: Some(dir.path().join("cache")),
                disk_bytes: DISK,
                read_ahead_chunks: 0,
            },
            &store,
        )
        .await;
        let (apparent, _) = dir_size(dir.path());
        assert!(apparent <= DISK, "fresh disk tier uses {apparent} > {DISK}");

        // 1 MiB: 16 chunks, 4x the memory tier, a quarter of the disk tier.
        let small = Path::from("small.log");
        let small_data = pattern(1024 * 1024);
        put(&store, &small, small_data.clone()).await;
        let size = small_data.len() as u64;
        for i in 0..16 {
            let range = i * CHUNK..(i + 1) * CHUNK;
            let got = cache.read(&small, size, range.clone()).await.expect("read");
            assert_eq!(
                got,
                small_data.slice(range.start as usize..range.end as usize)
            );
        }
        assert_eq!(store.gets(), 16);
        // The memory tier holds the last 3 chunks; the first 13 were evicted to the disk tier.
        // Let the flusher write them, then read the first half back: all from disk. (Only chunks
        // evicted before the pause are asserted: one evicted a moment before it is read again may
        // still be in foyer's write pipeline and miss.)
        tokio::time::sleep(Duration::from_millis(500)).await;
        let before = cache.stats();
        let half = 8 * CHUNK;
        let got = cache.read(&small, size, 0..half).await.expect("read");
        assert_eq!(got, small_data.slice(..half as usize));
        let after = cache.stats();
        assert_eq!(
            store.gets(),
            16,
            "evicted chunks came back from the disk tier"
        );
        assert_eq!(after.hits - before.hits, 8);
        let got = cache.read(&small, size, 0..size).await.expect("read");
        assert_eq!(got, small_data);

        // Now write far more than the disk tier holds: 16 MiB (4x disk_bytes).
        let big = Path::from("big.log");
        let big_data = pattern(16 * 1024 * 1024);
        put(&store, &big, big_data.clone()).await;
        let size = big_data.len() as u64;
        for i in 0..size / CHUNK {
            let range = i * CHUNK..(i + 1) * CHUNK;
            let got = cache.read(&big, size, range.clone()).await.expect("read");
            assert_eq!(
                got,
                big_data.slice(range.start as usize..range.end as usize)
            );
            if i % 16 == 0 {
                let (apparent, allocated) = dir_size(dir.path());
                assert!(apparent <= DISK, "disk tier uses {apparent} > {DISK}");
                assert!(
                    allocated <= DISK,
                    "disk tier allocates {allocated} > {DISK}"
                );
            }
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
        // Everything read back is still exact (from memory, disk or a new GET).
        let got = cache
            .read(&big, size, size - 3 * CHUNK - 7..size)
            .await
            .expect("read");
        assert_eq!(
            got,
            big_data.slice(big_data.len() - 3 * CHUNK as usize - 7..)
        );
        cache.close().await.expect("close");
        let (apparent, allocated) = dir_size(dir.path());
        eprintln!("disk tier: disk_bytes={DISK} apparent={apparent} allocated={allocated}");
        assert!(apparent <= DISK, "disk tier uses {apparent} > {DISK}");
        assert!(
            allocated <= DISK,
            "disk tier allocates {allocated} > {DISK}"
        );
    }
}
