//! Idempotent producer state: per producer id, the current epoch and the last five batches'
//! sequence ranges and offsets, used to detect duplicate retries and sequence gaps.
//!
//! Snapshots: `<offset:020>.snapshot` holds the state after every batch below `offset` (JSON with
//! `"version": 1`, read strictly). The segment log writes one at each roll (named by the new
//! segment's base) and at close (named by the log end), via `atomic_write`, so a snapshot is
//! either complete or absent. Recovery loads the newest snapshot at or below its start point and
//! replays the batches after it. Only the newest two snapshots are kept; a snapshot above a
//! truncated log end is deleted by the truncation.

use std::collections::{BTreeMap, VecDeque};
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::batch::{increment_sequence, BatchHeader};
use crate::error::LogError;
use crate::fs_util::{atomic_write, remove_if_exists};

/// How many recent batches per producer are remembered for duplicate detection (Kafka's value).
pub const MAX_CACHED_BATCHES: usize = 5;
/// File extension of producer state snapshots.
pub const SNAPSHOT_EXTENSION: &str = "snapshot";

const SNAPSHOT_VERSION: u32 = 1;

/// Sequence range and offsets of one appended batch.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BatchMetadata {
    /// Sequence number of the first record.
    pub first_seq: i32,
    /// Sequence number of the last record.
    pub last_seq: i32,
    /// Offset of the first record.
    pub base_offset: i64,
    /// Offset of the last record.
    pub last_offset: i64,
}

/// What the log knows about one producer id.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ProducerEntry {
    /// The producer's current epoch.
    pub epoch: i16,
    /// Its most recent batches, oldest first, at most [`MAX_CACHED_BATCHES`].
    pub batches: VecDeque<BatchMetadata>,
}

/// Result of checking a batch against the producer state.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SequenceCheck {
    /// Append the batch.
    Accept,
    /// The batch was already appended at these offsets; answer success without appending.
    Duplicate {
        /// Offset the original batch was assigned.
        base_offset: i64,
        /// Last offset of the original batch.
        last_offset: i64,
    },
}

#[derive(Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct SnapshotFile {
    version: u32,
    offset: i64,
    producers: BTreeMap<i64, ProducerEntry>,
}

/// Producer id -> state for one partition.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ProducerStateManager {
    producers: BTreeMap<i64, ProducerEntry>,
}

impl ProducerStateManager {
    /// An empty state.
    pub fn new() -> ProducerStateManager {
        ProducerStateManager::default()
    }

    /// The state of one producer, if known.
    pub fn producer(&self, producer_id: i64) -> Option<&ProducerEntry> {
        self.producers.get(&producer_id)
    }

    /// Number of producers tracked.
    pub fn len(&self) -> usize {
        self.producers.len()
    }

    /// Whether no producer is tracked.
    pub fn is_empty(&self) -> bool {
        self.producers.is_empty()
    }

    /// Checks an idempotent batch (Kafka semantics) without changing state. Batches without a
    /// producer id, control batches and batches without a sequence are always accepted.
    pub fn check(&self, header: &BatchHeader) -> Result<SequenceCheck, LogError> {
        if !header.has_producer_id() || header.is_control() {
            return Ok(SequenceCheck::Accept);
        }
        let producer_id = header.producer_id;
        let Some(entry) = self.producers.get(&producer_id) else {
            // Unknown producer (new, or its state expired): accept and start tracking.
            return Ok(SequenceCheck::Accept);
        };
        if header.producer_epoch < entry.epoch {
            return Err(LogError::InvalidProducerEpoch {
                producer_id,
                current: entry.epoch,
                got: header.producer_epoch,
            });
        }
        if header.base_sequence < 0 {
            return Ok(SequenceCheck::Accept);
        }
        if header.producer_epoch > entry.epoch {
            if header.base_sequence != 0 {
                return Err(LogError::OutOfOrderSequence {
                    producer_id,
                    expected: 0,
                    got: header.base_sequence,
                });
            }
            return Ok(SequenceCheck::Accept);
        }
        let (first, last) = (header.base_sequence, header.last_sequence());
        if let Some(dup) = entry
            .batches
            .iter()
            .find(|b| b.first_seq == first && b.last_seq == last)
        {
            return Ok(SequenceCheck::Duplicate {
                base_offset: dup.base_offset,
                last_offset: dup.last_offset,
            });
        }
        if let Some(latest) = entry.batches.back() {
            let expected = increment_sequence(latest.last_seq, 1);
            if first != expected {
                return Err(LogError::OutOfOrderSequence {
                    producer_id,
                    expected,
                    got: first,
                });
            }
        }
        Ok(SequenceCheck::Accept)
    }

    /// Records an appended batch whose first record got `base_offset`.
    pub fn update(&mut self, header: &BatchHeader, base_offset: i64) {
        if !header.has_producer_id() || header.is_control() {
            return;
        }
        let entry = self
            .producers
            .entry(header.producer_id)
            .or_insert_with(|| ProducerEntry {
                epoch: header.producer_epoch,
                batches: VecDeque::new(),
            });
        if header.producer_epoch != entry.epoch {
            entry.epoch = header.producer_epoch;
            entry.batches.clear();
        }
        if header.base_sequence < 0 {
            return;
        }
        if entry.batches.len() == MAX_CACHED_BATCHES {
            entry.batches.pop_front();
        }
        entry.batches.push_back(BatchMetadata {
            first_seq: header.base_sequence,
            last_seq: header.last_sequence(),
            base_offset,
            last_offset: base_offset + i64::from(header.last_offset_delta),
        });
    }

    /// Serialises the state as of `offset` into a snapshot file body.
    pub fn snapshot_bytes(&self, offset: i64) -> Vec<u8> {
        let file = SnapshotFile {
            version: SNAPSHOT_VERSION,
            offset,
            producers: self.producers.clone(),
        };
        serde_json::to_vec(&file).expect("producer state serialises to json")
    }

    /// Parses a snapshot file body; returns the state and the offset it was taken at.
    pub fn from_snapshot_bytes(bytes: &[u8]) -> Result<(ProducerStateManager, i64), String> {
        let file: SnapshotFile = serde_json::from_slice(bytes).map_err(|e| e.to_string())?;
        if file.version != SNAPSHOT_VERSION {
            return Err(format!("unsupported snapshot version={}", file.version));
        }
        Ok((
            ProducerStateManager {
                producers: file.producers,
            },
            file.offset,
        ))
    }

    /// Writes `<offset:020>.snapshot` in `dir` atomically. One snapshot is kept per segment (taken
    /// when it was sealed, so the remote tier can upload it with the segment); the log deletes the
    /// ones below its first segment.
    pub fn write_snapshot(&self, dir: &Path, offset: i64) -> Result<(), LogError> {
        atomic_write(&snapshot_path(dir, offset), &self.snapshot_bytes(offset))
    }

    /// Loads the newest readable snapshot at or below `max_offset`, returning it with its offset.
    /// Unreadable snapshots are skipped (with a warning) in favour of older ones.
    pub fn load_latest(
        dir: &Path,
        max_offset: i64,
    ) -> Result<Option<(ProducerStateManager, i64)>, LogError> {
        for offset in list_snapshots(dir)?.into_iter().rev() {
            if offset > max_offset {
                continue;
            }
            let path = snapshot_path(dir, offset);
            let bytes =
                std::fs::read(&path).map_err(LogError::io(format!("read {}", path.display())))?;
            match Self::from_snapshot_bytes(&bytes) {
                Ok((state, at)) if at == offset => return Ok(Some((state, offset))),
                Ok((_, at)) => tracing::warn!(
                    path = %path.display(),
                    "producer snapshot claims offset={at}; ignoring it"
                ),
                Err(reason) => tracing::warn!(
                    path = %path.display(),
                    "unreadable producer snapshot ({reason}); ignoring it"
                ),
            }
        }
        Ok(None)
    }
}

/// Path of the snapshot taken at `offset`.
pub fn snapshot_path(dir: &Path, offset: i64) -> PathBuf {
    dir.join(format!("{offset:020}.{SNAPSHOT_EXTENSION}"))
}

/// Offsets of the snapshots in `dir`, ascending.
pub fn list_snapshots(dir: &Path) -> Result<Vec<i64>, LogError> {
    let entries =
        std::fs::read_dir(dir).map_err(LogError::io(format!("list {}", dir.display())))?;
    let mut offsets = Vec::new();
    for entry in entries {
        let entry = entry.map_err(LogError::io(format!("list {}", dir.display())))?;
        let name = entry.file_name();
        let Some(name) = name.to_str() else { continue };
        if let Some(stem) = name.strip_suffix(&format!(".{SNAPSHOT_EXTENSION}")) {
            if let Ok(offset) = stem.parse::<i64>() {
                offsets.push(offset);
            }
        }
    }
    offsets.sort_unstable();
    Ok(offsets)
}

/// Deletes snapshots at offsets for which `doomed` is true.
pub fn delete_snapshots(dir: &Path, doomed: impl Fn(i64) -> bool) -> Result<(), LogError> {
    for offset in list_snapshots(dir)? {
        if doomed(offset) {
            remove_if_exists(&snapshot_path(dir, offset))?;
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::batch::test_support::{batch_with, Producer};
    use crate::batch::BatchHeader;
    use kafka_protocol::records::Compression;

    fn header(id: i64, epoch: i16, seq: i32, count: usize) -> BatchHeader {
        let producer = Producer {
            id,
            epoch,
            base_sequence: seq,
        };
        BatchHeader::parse(&batch_with(count, &[], Compression::None, Some(producer))).unwrap()
    }

    fn append(state: &mut ProducerStateManager, h: &BatchHeader, offset: i64) -> SequenceCheck {
        let check = state.check(h).unwrap();
        if check == SequenceCheck::Accept {
            state.update(h, offset);
        }
        check
    }

    #[test]
    fn detects_duplicates_in_last_five() {
        let mut s = ProducerStateManager::new();
        for i in 0..6 {
            assert_eq!(
                append(&mut s, &header(1, 0, i * 2, 2), i64::from(i) * 2),
                SequenceCheck::Accept
            );
        }
        assert_eq!(
            s.check(&header(1, 0, 10, 2)).unwrap(),
            SequenceCheck::Duplicate {
                base_offset: 10,
                last_offset: 11
            }
        );
        assert_eq!(
            s.check(&header(1, 0, 2, 2)).unwrap(),
            SequenceCheck::Duplicate {
                base_offset: 2,
                last_offset: 3
            }
        );
        // The first batch fell out of the cache: it is now out of order.
        assert!(matches!(
            s.check(&header(1, 0, 0, 2)),
            Err(LogError::OutOfOrderSequence {
                expected: 12,
                got: 0,
                ..
            })
        ));
    }

    #[test]
    fn rejects_gaps_and_accepts_unknown_producers() {
        let mut s = ProducerStateManager::new();
        assert_eq!(
            append(&mut s, &header(1, 0, 40, 1), 0),
            SequenceCheck::Accept
        );
        assert!(matches!(
            s.check(&header(1, 0, 42, 1)),
            Err(LogError::OutOfOrderSequence {
                expected: 41,
                got: 42,
                ..
            })
        ));
        assert_eq!(
            s.check(&header(1, 0, 41, 1)).unwrap(),
            SequenceCheck::Accept
        );
    }

    #[test]
    fn fences_old_epochs_and_requires_zero_on_bump() {
        let mut s = ProducerStateManager::new();
        append(&mut s, &header(1, 3, 0, 2), 0);
        assert!(matches!(
            s.check(&header(1, 2, 2, 1)),
            Err(LogError::InvalidProducerEpoch {
                current: 3,
                got: 2,
                ..
            })
        ));
        assert!(matches!(
            s.check(&header(1, 4, 5, 1)),
            Err(LogError::OutOfOrderSequence { expected: 0, .. })
        ));
        assert_eq!(
            append(&mut s, &header(1, 4, 0, 1), 2),
            SequenceCheck::Accept
        );
        assert_eq!(s.producer(1).unwrap().epoch, 4);
        assert_eq!(s.producer(1).unwrap().batches.len(), 1);
    }

    #[test]
    fn sequence_wraps_past_max() {
        let mut s = ProducerStateManager::new();
        append(&mut s, &header(1, 0, i32::MAX - 1, 2), 0);
        assert_eq!(s.check(&header(1, 0, 0, 1)).unwrap(), SequenceCheck::Accept);
    }

    #[test]
    fn non_idempotent_batches_are_not_tracked() {
        let mut s = ProducerStateManager::new();
        let h = BatchHeader::parse(&batch_with(2, &[], Compression::None, None)).unwrap();
        assert_eq!(append(&mut s, &h, 0), SequenceCheck::Accept);
        assert!(s.is_empty());
    }

    #[test]
    fn snapshot_is_versioned_and_byte_exact() {
        let mut s = ProducerStateManager::new();
        append(&mut s, &header(7, 1, 0, 3), 10);
        let bytes = s.snapshot_bytes(13);
        assert_eq!(
            String::from_utf8(bytes.clone()).unwrap(),
            r#"{"version":1,"offset":13,"producers":{"7":{"epoch":1,"batches":[{"first_seq":0,"last_seq":2,"base_offset":10,"last_offset":12}]}}}"#
        );
        let (loaded, offset) = ProducerStateManager::from_snapshot_bytes(&bytes).unwrap();
        assert_eq!((loaded, offset), (s, 13));
        assert!(ProducerStateManager::from_snapshot_bytes(
            br#"{"version":2,"offset":0,"producers":{}}"#
        )
        .is_err());
        assert!(ProducerStateManager::from_snapshot_bytes(
            br#"{"version":1,"offset":0,"producers":{},"extra":1}"#
        )
        .is_err());
    }

    #[test]
    fn keeps_one_snapshot_per_write_and_loads_at_or_below() {
        let dir = tempfile::tempdir().unwrap();
        let mut s = ProducerStateManager::new();
        for offset in [0, 10, 20] {
            append(&mut s, &header(1, 0, (offset / 10) as i32, 1), offset);
            s.write_snapshot(dir.path(), offset + 1).unwrap();
        }
        assert_eq!(list_snapshots(dir.path()).unwrap(), vec![1, 11, 21]);
        let (_, at) = ProducerStateManager::load_latest(dir.path(), 15)
            .unwrap()
            .unwrap();
        assert_eq!(at, 11);
        assert!(ProducerStateManager::load_latest(dir.path(), 0)
            .unwrap()
            .is_none());
        std::fs::write(snapshot_path(dir.path(), 21), b"garbage").unwrap();
        let (_, at) = ProducerStateManager::load_latest(dir.path(), 100)
            .unwrap()
            .unwrap();
        assert_eq!(at, 11);
        delete_snapshots(dir.path(), |o| o < 20).unwrap();
        assert_eq!(list_snapshots(dir.path()).unwrap(), vec![21]);
    }
}
