//! The remote read cache. TEMPORARY pass-through stand-in (no caching) with the final API; replaced
//! by the foyer-based implementation.

use std::ops::Range;
use std::sync::Arc;

use bytes::Bytes;
use object_store::path::Path;
use object_store::{ObjectStore, ObjectStoreExt};

use super::RemoteError;

/// Cache sizing.
#[derive(Debug, Clone)]
pub struct ChunkCacheConfig {
    /// Chunk size.
    pub chunk_size: u64,
    /// Memory tier bytes.
    pub memory_bytes: usize,
    /// Disk tier directory.
    pub disk_dir: Option<std::path::PathBuf>,
    /// Disk tier bytes.
    pub disk_bytes: u64,
    /// Chunks read ahead.
    pub read_ahead_chunks: usize,
}

impl Default for ChunkCacheConfig {
    fn default() -> Self {
        ChunkCacheConfig {
            chunk_size: 4 << 20,
            memory_bytes: 256 << 20,
            disk_dir: None,
            disk_bytes: 1 << 30,
            read_ahead_chunks: 4,
        }
    }
}

/// Counters.
#[derive(Debug, Default, Clone, Copy)]
pub struct CacheStats {
    /// Hits.
    pub hits: u64,
    /// Misses.
    pub misses: u64,
    /// GETs.
    pub gets: u64,
    /// GET bytes.
    pub get_bytes: u64,
    /// GET errors.
    pub get_errors: u64,
    /// Total GET latency.
    pub get_latency_micros_total: u64,
}

/// The cache.
#[derive(Debug)]
pub struct ChunkCache {
    store: Arc<dyn ObjectStore>,
}

impl ChunkCache {
    /// Builds the cache.
    pub async fn new(
        config: ChunkCacheConfig,
        store: Arc<dyn ObjectStore>,
    ) -> Result<ChunkCache, RemoteError> {
        let _ = config;
        Ok(ChunkCache { store })
    }

    /// Reads `range` of the object at `path`.
    pub async fn read(
        &self,
        path: &Path,
        object_size: u64,
        range: Range<u64>,
    ) -> Result<Bytes, RemoteError> {
        let end = range.end.min(object_size);
        if range.start > end {
            return Err(RemoteError::Cache(format!(
                "range {range:?} beyond {object_size}"
            )));
        }
        self.store
            .get_range(path, range.start..end)
            .await
            .map_err(RemoteError::store(format!("get {path}")))
    }

    /// Counters.
    pub fn stats(&self) -> CacheStats {
        CacheStats::default()
    }

    /// Closes the cache.
    pub async fn close(&self) {}
}
