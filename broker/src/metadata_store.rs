//! The single-node broker's metadata: cluster id, topics (name, id, partition count, config overrides),
//! dynamic broker configs and the producer-id high mark, kept in `<data-dir>/metadata.json`.
//!
//! Write order and commit point: every change builds the new state, writes it to `metadata.json.tmp`,
//! fsyncs it, renames it over `metadata.json` and fsyncs the directory. The rename is the commit point: a
//! crash before it leaves the old file (and a stray `.tmp` that the next write replaces); after it, the new
//! one. Only then is the in-memory state replaced, so memory never runs ahead of disk.
//!
//! The format is versioned and read strictly. Cluster metadata now lives in the metadata quorum
//! (`crate::cluster`); this format remains as the import of a single-node data dir written by an
//! earlier version and as the copy of the metadata kept in the object store.

use std::collections::BTreeMap;
use std::io::Write;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};
use uuid::Uuid;

use crate::error::BrokerError;

const FILE_NAME: &str = "metadata.json";
pub const FORMAT_VERSION: u32 = 1;
/// Producer ids are handed out from blocks of this size; only the block end is persisted.
pub const PRODUCER_ID_BLOCK: i64 = 1000;

/// A topic as the broker records it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TopicRecord {
    /// Topic name.
    pub name: String,
    /// Topic id (KIP-516).
    pub id: Uuid,
    /// Partition count.
    pub partitions: i32,
    /// Topic-level config overrides.
    pub configs: BTreeMap<String, String>,
}

/// The persisted state.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MetadataState {
    /// Format version; must be `FORMAT_VERSION`.
    pub version: u32,
    /// Cluster id reported to clients.
    pub cluster_id: String,
    /// Topics by name.
    pub topics: BTreeMap<String, TopicRecord>,
    /// Dynamic cluster-wide broker defaults.
    pub broker_dynamic_default: BTreeMap<String, String>,
    /// Dynamic per-broker configs.
    pub broker_dynamic: BTreeMap<String, String>,
    /// Producer ids below this value may have been handed out.
    pub producer_id_high_mark: i64,
    /// Deleted topics whose objects in the object store are still to be removed.
    #[serde(default)]
    pub pending_remote_deletions: std::collections::BTreeSet<Uuid>,
}

/// Producer-id blocks skipped when metadata is restored from the object store copy, which may lag
/// the lost local file by the blocks handed out since its last upload.
pub const RESTORE_PRODUCER_ID_SKIP: i64 = 1_000 * PRODUCER_ID_BLOCK;

/// The metadata file and its in-memory copy.
#[derive(Debug)]
pub struct MetadataStore {
    dir: PathBuf,
    state: MetadataState,
    generation: u64,
}

impl MetadataStore {
    /// Opens the store in `dir`, creating it with `cluster_id` (or a random id) on first start.
    pub fn open(dir: &Path, cluster_id: Option<&str>) -> Result<Self, BrokerError> {
        std::fs::create_dir_all(dir)
            .map_err(|e| io_err(&format!("create data dir {}", dir.display()), e))?;
        let path = dir.join(FILE_NAME);
        match std::fs::read(&path) {
            Ok(bytes) => {
                let state: MetadataState = serde_json::from_slice(&bytes).map_err(|e| {
                    BrokerError::MetadataIo(format!("{} is not valid: {e}", path.display()))
                })?;
                if state.version != FORMAT_VERSION {
                    return Err(BrokerError::MetadataIo(format!(
                        "{} has format version {}, this broker reads {FORMAT_VERSION}",
                        path.display(),
                        state.version
                    )));
                }
                Ok(Self {
                    dir: dir.to_path_buf(),
                    state,
                    generation: 1,
                })
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                let state = MetadataState {
                    version: FORMAT_VERSION,
                    cluster_id: cluster_id
                        .map(str::to_string)
                        .unwrap_or_else(new_cluster_id),
                    topics: BTreeMap::new(),
                    broker_dynamic_default: BTreeMap::new(),
                    broker_dynamic: BTreeMap::new(),
                    producer_id_high_mark: 0,
                    pending_remote_deletions: Default::default(),
                };
                let mut store = Self {
                    dir: dir.to_path_buf(),
                    state: state.clone(),
                    generation: 0,
                };
                store.commit(state)?;
                Ok(store)
            }
            Err(e) => Err(io_err(&format!("read {}", path.display()), e)),
        }
    }

    /// The current state.
    pub fn state(&self) -> &MetadataState {
        &self.state
    }

    /// Increases with every committed change (for publishing copies).
    pub fn generation(&self) -> u64 {
        self.generation
    }

    /// Renames an imported `metadata.json` to `metadata.json.imported` (the cluster metadata now
    /// lives in the metadata quorum; the file is kept for reference only).
    pub fn retire(dir: &Path) -> Result<(), BrokerError> {
        let from = dir.join(FILE_NAME);
        let to = dir.join(format!("{FILE_NAME}.imported"));
        std::fs::rename(&from, &to).map_err(|e| io_err(&format!("rename {}", from.display()), e))
    }

    /// Whether `dir` holds a metadata file.
    pub fn exists(dir: &Path) -> bool {
        dir.join(FILE_NAME).exists()
    }

    /// The state as stored (for the object store copy).
    pub fn encode(state: &MetadataState) -> Result<Vec<u8>, BrokerError> {
        serde_json::to_vec_pretty(state)
            .map_err(|e| BrokerError::MetadataIo(format!("encode metadata: {e}")))
    }

    /// Decodes the copy kept in the object store, skipping producer-id blocks the copy may not
    /// know about (it lags the cluster by the blocks handed out since its last upload).
    pub fn decode_copy(bytes: &[u8]) -> Result<MetadataState, BrokerError> {
        let mut state: MetadataState = serde_json::from_slice(bytes).map_err(|e| {
            BrokerError::MetadataIo(format!("object store metadata copy is not valid: {e}"))
        })?;
        if state.version != FORMAT_VERSION {
            return Err(BrokerError::MetadataIo(format!(
                "object store metadata copy has format version {}, this broker reads {FORMAT_VERSION}",
                state.version
            )));
        }
        state.producer_id_high_mark += RESTORE_PRODUCER_ID_SKIP;
        Ok(state)
    }

    /// Applies `change` to a copy of the state and persists it; the in-memory state changes only if the
    /// write succeeded.
    pub fn update<T>(
        &mut self,
        change: impl FnOnce(&mut MetadataState) -> Result<T, BrokerError>,
    ) -> Result<T, BrokerError> {
        let mut next = self.state.clone();
        let out = change(&mut next)?;
        self.commit(next)?;
        Ok(out)
    }

    fn commit(&mut self, next: MetadataState) -> Result<(), BrokerError> {
        let bytes = serde_json::to_vec_pretty(&next)
            .map_err(|e| BrokerError::MetadataIo(format!("encode metadata: {e}")))?;
        let tmp = self.dir.join(format!("{FILE_NAME}.tmp"));
        let path = self.dir.join(FILE_NAME);
        let mut f = std::fs::File::create(&tmp)
            .map_err(|e| io_err(&format!("create {}", tmp.display()), e))?;
        f.write_all(&bytes)
            .and_then(|()| f.sync_all())
            .map_err(|e| io_err(&format!("write {}", tmp.display()), e))?;
        std::fs::rename(&tmp, &path)
            .map_err(|e| io_err(&format!("rename {}", tmp.display()), e))?;
        std::fs::File::open(&self.dir)
            .and_then(|d| d.sync_all())
            .map_err(|e| io_err(&format!("fsync {}", self.dir.display()), e))?;
        self.state = next;
        self.generation += 1;
        Ok(())
    }
}

/// Writes `name` in `dir` atomically: a temporary file, fsync, rename, fsync of the directory.
pub fn write_atomically(dir: &Path, name: &str, bytes: &[u8]) -> Result<(), BrokerError> {
    let tmp = dir.join(format!("{name}.tmp"));
    let path = dir.join(name);
    let mut f =
        std::fs::File::create(&tmp).map_err(|e| io_err(&format!("create {}", tmp.display()), e))?;
    f.write_all(bytes)
        .and_then(|()| f.sync_all())
        .map_err(|e| io_err(&format!("write {}", tmp.display()), e))?;
    std::fs::rename(&tmp, &path).map_err(|e| io_err(&format!("rename {}", tmp.display()), e))?;
    std::fs::File::open(dir)
        .and_then(|d| d.sync_all())
        .map_err(|e| io_err(&format!("fsync {}", dir.display()), e))
}

fn io_err(what: &str, e: std::io::Error) -> BrokerError {
    BrokerError::MetadataIo(format!("{what}: {e}"))
}

/// A new cluster id in Kafka's format (22 characters of URL-safe base64 of a UUID).
pub fn new_cluster_id() -> String {
    const ALPHABET: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";
    let v = Uuid::new_v4().as_u128();
    (0..22)
        .map(|i| ALPHABET[((v >> (i * 6)) & 63) as usize] as char)
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn survives_reopen_and_keeps_cluster_id() {
        let dir = tempfile::tempdir().expect("tempdir");
        let mut s = MetadataStore::open(dir.path(), Some("abc")).expect("open");
        s.update(|st| {
            st.topics.insert(
                "t".into(),
                TopicRecord {
                    name: "t".into(),
                    id: Uuid::new_v4(),
                    partitions: 3,
                    configs: BTreeMap::new(),
                },
            );
            Ok(())
        })
        .expect("update");
        let s2 = MetadataStore::open(dir.path(), Some("other")).expect("reopen");
        assert_eq!(s2.state().cluster_id, "abc");
        assert_eq!(s2.state().topics["t"].partitions, 3);
    }

    #[test]
    fn failed_change_leaves_state_untouched() {
        let dir = tempfile::tempdir().expect("tempdir");
        let mut s = MetadataStore::open(dir.path(), None).expect("open");
        let before = s.state().clone();
        let r: Result<(), _> = s.update(|st| {
            st.producer_id_high_mark = 99;
            Err(BrokerError::InvalidRequest("no".into()))
        });
        assert!(r.is_err());
        assert_eq!(s.state(), &before);
        assert_eq!(s.state().cluster_id.len(), 22);
    }

    #[test]
    fn unknown_format_version_is_refused() {
        let dir = tempfile::tempdir().expect("tempdir");
        drop(MetadataStore::open(dir.path(), None).expect("open"));
        let p = dir.path().join(FILE_NAME);
        let text = std::fs::read_to_string(&p).expect("read");
        std::fs::write(&p, text.replace("\"version\": 1", "\"version\": 7")).expect("write");
        let e = MetadataStore::open(dir.path(), None).expect_err("version 7");
        assert!(e.to_string().contains("format version 7"), "{e}");
    }
}
