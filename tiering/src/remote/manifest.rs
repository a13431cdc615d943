//! The remote manifest: the authoritative list of a partition's offloaded segments.
//!
//! One JSON object per partition (`keys::ObjectKeys::manifest`). It is only ever replaced with a
//! conditional put (`PutMode::Create` for the first version, `PutMode::Update` with the e-tag read or
//! written last after that), so two writers can never silently overwrite each other. A writer that
//! loses the race re-reads the manifest: if a newer leader epoch wrote it, this writer is deposed and
//! gets [`RemoteError::Fenced`]; otherwise (its own earlier write whose answer was lost) it adopts the
//! new version and retries. Recovery reads this object and never lists the bucket.

use std::sync::Arc;

use bytes::Bytes;
use object_store::path::Path;
use object_store::{ObjectStore, ObjectStoreExt, PutMode, PutOptions, PutPayload, UpdateVersion};
use serde::{Deserialize, Serialize};
use uuid::Uuid;

use super::keys::SegmentId;
use super::RemoteError;
use crate::leader_epoch::EpochEntry;

/// Version of the manifest document format.
pub const MANIFEST_VERSION: u32 = 1;

/// One leader epoch and the first offset written in it (serialisable form of [`EpochEntry`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct RemoteEpoch {
    /// The leader epoch.
    pub epoch: i32,
    /// Its first offset.
    pub start_offset: i64,
}

impl From<EpochEntry> for RemoteEpoch {
    fn from(e: EpochEntry) -> Self {
        RemoteEpoch {
            epoch: e.epoch,
            start_offset: e.start_offset,
        }
    }
}

/// One offloaded segment.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RemoteSegment {
    /// Object identity (base offset, uploader epoch, unique suffix).
    pub id: SegmentId,
    /// One past the segment's last offset.
    pub next_offset: i64,
    /// Size of the `.log` object.
    pub size_bytes: u64,
    /// Size of the `.indexes` object.
    pub indexes_bytes: u64,
    /// Largest record timestamp in the segment (-1 if none).
    pub max_timestamp: i64,
    /// Base offset of the batch holding `max_timestamp`, if any.
    pub max_timestamp_batch: Option<i64>,
    /// Leader epochs that start inside this segment (the first one may start before it).
    pub epochs: Vec<RemoteEpoch>,
    /// Wall-clock time of the upload.
    pub uploaded_at_ms: i64,
}

impl RemoteSegment {
    /// Base offset.
    pub fn base_offset(&self) -> i64 {
        self.id.base_offset
    }
}

/// The manifest document.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RemoteManifest {
    /// Format version ([`MANIFEST_VERSION`]).
    pub version: u32,
    /// Topic id.
    pub topic_id: Uuid,
    /// Partition index.
    pub partition: i32,
    /// Leader epoch of the last writer; a writer with a lower epoch is fenced.
    pub leader_epoch: i32,
    /// The partition's log start offset (DeleteRecords and total retention raise it).
    pub log_start_offset: i64,
    /// Offloaded segments, ordered and contiguous.
    pub segments: Vec<RemoteSegment>,
    /// Segments removed from the log whose objects may still exist; deleted asynchronously.
    #[serde(default)]
    pub garbage: Vec<SegmentId>,
    /// One past the last offset ever offloaded; kept when retention removes every segment, so the
    /// next upload continues from there instead of offloading the same offsets again.
    #[serde(default)]
    pub offloaded_end: Option<i64>,
}

impl RemoteManifest {
    /// An empty manifest.
    pub fn new(topic_id: Uuid, partition: i32, leader_epoch: i32) -> RemoteManifest {
        RemoteManifest {
            version: MANIFEST_VERSION,
            topic_id,
            partition,
            leader_epoch,
            log_start_offset: 0,
            segments: Vec::new(),
            garbage: Vec::new(),
            offloaded_end: None,
        }
    }

    /// One past the last offloaded offset, if anything was ever offloaded (even if retention has
    /// removed it since).
    pub fn end_offset(&self) -> Option<i64> {
        self.segments
            .last()
            .map(|s| s.next_offset)
            .or(self.offloaded_end)
    }

    /// The first readable offset held remotely, if the remote tier holds any readable data.
    pub fn readable_start(&self) -> Option<i64> {
        let first = self.segments.first()?;
        let end = self.end_offset()?;
        (self.log_start_offset < end).then(|| self.log_start_offset.max(first.base_offset()))
    }

    /// Total bytes of the `.log` objects.
    pub fn size_bytes(&self) -> u64 {
        self.segments.iter().map(|s| s.size_bytes).sum()
    }

    /// The segment holding `offset`, if it is offloaded.
    pub fn segment_for(&self, offset: i64) -> Option<&RemoteSegment> {
        let i = self.segments.partition_point(|s| s.base_offset() <= offset);
        let seg = self.segments.get(i.checked_sub(1)?)?;
        (offset < seg.next_offset).then_some(seg)
    }

    /// Appends an uploaded segment; it must start exactly at the current end (or anywhere for the
    /// first one).
    pub fn push(&mut self, segment: RemoteSegment) -> Result<(), RemoteError> {
        if let Some(end) = self.end_offset() {
            if segment.base_offset() != end {
                return Err(RemoteError::Corrupt {
                    key: format!("manifest of {}-{}", self.topic_id, self.partition),
                    reason: format!(
                        "segment base_offset={} does not follow remote end={end}",
                        segment.base_offset()
                    ),
                });
            }
        } else if self.log_start_offset < segment.base_offset() {
            self.log_start_offset = segment.base_offset();
        }
        self.offloaded_end = Some(segment.next_offset);
        self.segments.push(segment);
        Ok(())
    }

    /// Raises the log start to `new_start` and moves segments entirely below it to the garbage list.
    /// Returns how many segments were removed.
    pub fn advance_start(&mut self, new_start: i64) -> usize {
        if new_start <= self.log_start_offset {
            return 0;
        }
        self.log_start_offset = new_start;
        let below = self
            .segments
            .iter()
            .take_while(|s| s.next_offset <= new_start)
            .count();
        self.garbage
            .extend(self.segments.drain(..below).map(|s| s.id));
        below
    }

    /// All `(epoch, start offset)` entries of the offloaded segments, oldest first, deduplicated.
    pub fn epochs(&self) -> Vec<RemoteEpoch> {
        let mut out: Vec<RemoteEpoch> = Vec::new();
        for e in self.segments.iter().flat_map(|s| s.epochs.iter()) {
            if out.last().is_none_or(|last| e.epoch > last.epoch) {
                out.push(*e);
            }
        }
        out
    }
}

/// Reads and conditionally writes one partition's manifest.
#[derive(Debug)]
pub struct ManifestStore {
    store: Arc<dyn ObjectStore>,
    key: Path,
    /// Version of the object last read or written; `None` if it did not exist.
    version: Option<UpdateVersion>,
}

impl ManifestStore {
    /// Loads the manifest at `key` (`None` if there is none yet).
    pub async fn load(
        store: Arc<dyn ObjectStore>,
        key: Path,
    ) -> Result<(ManifestStore, Option<RemoteManifest>), RemoteError> {
        let mut this = ManifestStore {
            store,
            key,
            version: None,
        };
        let manifest = this.reload().await?;
        Ok((this, manifest))
    }

    /// A store for a manifest known not to exist yet (a new partition): the first save creates it,
    /// and if it does exist after all, that save reports the conflict like any other.
    pub fn new_absent(store: Arc<dyn ObjectStore>, key: Path) -> ManifestStore {
        ManifestStore {
            store,
            key,
            version: None,
        }
    }

    /// The manifest's key.
    pub fn key(&self) -> &Path {
        &self.key
    }

    /// Reads the stored manifest again (and remembers its version for the next conditional write).
    pub async fn reload(&mut self) -> Result<Option<RemoteManifest>, RemoteError> {
        let got = match self.store.get(&self.key).await {
            Ok(got) => got,
            Err(object_store::Error::NotFound { .. }) => {
                self.version = None;
                return Ok(None);
            }
            Err(e) => return Err(RemoteError::store(format!("get {}", self.key))(e)),
        };
        let version = UpdateVersion {
            e_tag: got.meta.e_tag.clone(),
            version: got.meta.version.clone(),
        };
        let bytes = got
            .bytes()
            .await
            .map_err(RemoteError::store(format!("read {}", self.key)))?;
        let manifest = decode(&self.key, &bytes)?;
        self.version = Some(version);
        Ok(Some(manifest))
    }

    /// Writes `manifest` if nobody else wrote since our last read or write. On a conflict the
    /// stored manifest is re-read: if a newer leader epoch wrote it we are fenced
    /// ([`RemoteError::Fenced`]); otherwise it is returned as `Ok(Some(current))` so the caller can
    /// re-apply its change on top of it (never blindly overwrite it).
    pub async fn save(
        &mut self,
        manifest: &RemoteManifest,
    ) -> Result<Option<RemoteManifest>, RemoteError> {
        let body =
            Bytes::from(
                serde_json::to_vec_pretty(manifest).map_err(|e| RemoteError::Corrupt {
                    key: self.key.to_string(),
                    reason: format!("cannot encode manifest: {e}"),
                })?,
            );
        let mode = match &self.version {
            Some(v) => PutMode::Update(v.clone()),
            None => PutMode::Create,
        };
        let opts = PutOptions {
            mode,
            ..Default::default()
        };
        match self
            .store
            .put_opts(&self.key, PutPayload::from_bytes(body), opts)
            .await
        {
            Ok(result) => {
                self.version = Some(UpdateVersion::from(result));
                Ok(None)
            }
            Err(
                object_store::Error::Precondition { .. }
                | object_store::Error::AlreadyExists { .. },
            ) => {
                let current = self.reload().await?;
                match current {
                    Some(current) if current.leader_epoch > manifest.leader_epoch => {
                        Err(RemoteError::Fenced {
                            key: self.key.to_string(),
                            current: current.leader_epoch,
                            ours: manifest.leader_epoch,
                        })
                    }
                    Some(current) => {
                        tracing::info!(key = %self.key, "manifest changed underneath us at the same or an older epoch; re-applying");
                        Ok(Some(current))
                    }
                    None => Ok(Some(RemoteManifest::new(
                        manifest.topic_id,
                        manifest.partition,
                        manifest.leader_epoch,
                    ))),
                }
            }
            Err(e) => Err(RemoteError::store(format!("put {}", self.key))(e)),
        }
    }
}

fn decode(key: &Path, bytes: &[u8]) -> Result<RemoteManifest, RemoteError> {
    let manifest: RemoteManifest =
        serde_json::from_slice(bytes).map_err(|e| RemoteError::Corrupt {
            key: key.to_string(),
            reason: e.to_string(),
        })?;
    if manifest.version != MANIFEST_VERSION {
        return Err(RemoteError::Corrupt {
            key: key.to_string(),
            reason: format!("unsupported manifest version={}", manifest.version),
        });
    }
    Ok(manifest)
}

#[cfg(test)]
mod tests {
    use object_store::memory::InMemory;

    use super::*;

    fn segment(base: i64, next: i64, epoch: i32) -> RemoteSegment {
        RemoteSegment {
            id: SegmentId::new(base, epoch),
            next_offset: next,
            size_bytes: 100,
            indexes_bytes: 10,
            max_timestamp: base,
            max_timestamp_batch: Some(base),
            epochs: vec![RemoteEpoch {
                epoch,
                start_offset: base,
            }],
            uploaded_at_ms: 0,
        }
    }

    #[test]
    fn segments_must_be_contiguous_and_lookup_finds_the_holder() {
        let mut m = RemoteManifest::new(Uuid::from_u128(1), 0, 0);
        m.push(segment(10, 20, 0)).unwrap();
        assert_eq!(m.log_start_offset, 10);
        m.push(segment(20, 35, 1)).unwrap();
        assert!(m.push(segment(36, 40, 1)).is_err());
        assert_eq!(m.segment_for(9), None);
        assert_eq!(m.segment_for(10).unwrap().base_offset(), 10);
        assert_eq!(m.segment_for(34).unwrap().base_offset(), 20);
        assert_eq!(m.segment_for(35), None);
        assert_eq!(m.readable_start(), Some(10));
        assert_eq!(m.advance_start(25), 1);
        assert_eq!(m.readable_start(), Some(25));
        assert_eq!(m.garbage.len(), 1);
        assert_eq!(m.epochs().len(), 1);
        assert_eq!(m.advance_start(35), 1);
        assert_eq!(m.readable_start(), None);
        // The end survives retention of every segment; the next one must follow it.
        assert_eq!(m.end_offset(), Some(35));
        assert!(m.push(segment(30, 40, 1)).is_err());
        m.push(segment(35, 40, 1)).unwrap();
        assert_eq!(m.readable_start(), Some(35));
    }

    #[tokio::test]
    async fn a_deposed_writer_is_fenced_and_cannot_overwrite() {
        let store: Arc<dyn ObjectStore> = Arc::new(InMemory::new());
        let key = Path::from("t/0/manifest.json");
        let (mut old, none) = ManifestStore::load(store.clone(), key.clone())
            .await
            .unwrap();
        assert!(none.is_none());
        let mut m1 = RemoteManifest::new(Uuid::from_u128(1), 0, 1);
        m1.push(segment(0, 10, 1)).unwrap();
        assert!(old.save(&m1).await.unwrap().is_none());

        // A new leader (epoch 2) takes over and writes.
        let (mut new, loaded) = ManifestStore::load(store.clone(), key.clone())
            .await
            .unwrap();
        let mut m2 = loaded.unwrap();
        assert_eq!(m2, m1);
        m2.leader_epoch = 2;
        m2.push(segment(10, 20, 2)).unwrap();
        assert!(new.save(&m2).await.unwrap().is_none());

        // The old leader's next write fails and leaves the new manifest in place.
        m1.push(segment(10, 30, 1)).unwrap();
        let err = old.save(&m1).await.unwrap_err();
        assert!(
            matches!(
                err,
                RemoteError::Fenced {
                    current: 2,
                    ours: 1,
                    ..
                }
            ),
            "{err}"
        );
        let (_, stored) = ManifestStore::load(store, key).await.unwrap();
        assert_eq!(stored.unwrap(), m2);
    }

    #[tokio::test]
    async fn a_conflict_at_the_same_epoch_returns_the_current_manifest_to_re_apply_on() {
        let store: Arc<dyn ObjectStore> = Arc::new(InMemory::new());
        let key = Path::from("m.json");
        let (mut a, _) = ManifestStore::load(store.clone(), key.clone())
            .await
            .unwrap();
        let mut m = RemoteManifest::new(Uuid::from_u128(1), 0, 0);
        assert!(a.save(&m).await.unwrap().is_none());
        // Someone at the same epoch (our own retried request whose answer was lost) wrote more.
        let (mut b, _) = ManifestStore::load(store.clone(), key.clone())
            .await
            .unwrap();
        let mut theirs = m.clone();
        theirs.push(segment(0, 5, 0)).unwrap();
        assert!(b.save(&theirs).await.unwrap().is_none());
        m.log_start_offset = 3;
        let current = a.save(&m).await.unwrap().expect("conflict");
        assert_eq!(current, theirs, "the stored manifest is not overwritten");
        let (_, stored) = ManifestStore::load(store.clone(), key.clone())
            .await
            .unwrap();
        assert_eq!(stored.unwrap(), theirs);
        // Re-applied on top of the current version, the write goes through.
        let mut next = current;
        next.log_start_offset = 3;
        assert!(a.save(&next).await.unwrap().is_none());
        let (_, stored) = ManifestStore::load(store, key).await.unwrap();
        assert_eq!(stored.unwrap(), next);
    }

    #[tokio::test]
    async fn garbage_in_the_store_is_a_clear_error() {
        let store: Arc<dyn ObjectStore> = Arc::new(InMemory::new());
        let key = Path::from("m.json");
        store
            .put(&key, PutPayload::from_static(b"{not json"))
            .await
            .unwrap();
        let err = ManifestStore::load(store, key).await.unwrap_err();
        assert!(matches!(err, RemoteError::Corrupt { .. }), "{err}");
    }
}
