//! Replicated mode of the segment log (RFC 0006): the partition log is also the Raft log. Every
//! Raft entry gets a record in its segment's entry index (`entry_index`); record batches are the
//! segment's own bytes, other entries are markers or skips. The API speaks Raft ids (term, index)
//! but knows nothing of openraft.
//!
//! Appends: a *proposal* (the leader's own, [`SegmentLog::append_proposal`]) is admitted here
//! (size, idempotent sequence, epoch), stamped (offsets, leader epoch = term, LogAppendTime) and
//! written, or stored as a skip if it is refused or a duplicate; a *replicated* entry
//! ([`SegmentLog::append_entry`]) is written exactly as the leader stored it, rolling where the
//! leader rolled. So every replica holds the same bytes in the same segments.
//!
//! Write order per entry: `.log` bytes (data) or marker frame, then the index record; a failed
//! index write cuts the `.log` back. Durability comes from the group commit ([`crate::PendingSync`]
//! covers the `.log`, the active entry index and the marker store).
//!
//! Opening ([`SegmentLog::open_replicated`]) runs the Kafka-level recovery first, then keeps the
//! longest prefix of the active segment on which index, `.log` and markers agree: index records
//! that point past the recovered `.log` or at a batch that does not continue the offsets are cut,
//! batches after the last valid data record are cut, markers after the last index record are
//! cut. None of it was reported durable (the group commit fsyncs all three before the IO callback).
//!
//! Purging ([`SegmentLog::purge_entries`]) only records the last purged id (`raft-purged`): Raft
//! no longer reads below it. Deleting segments (retention, log start) is allowed only for segments
//! entirely at or below it, so Raft never finds an entry missing that it still needs.

use std::path::Path;

use bytes::Bytes;

use super::SegmentLog;
use crate::batch::{rewrite_batch_header, BatchHeader};
use crate::config::LogConfig;
use crate::entry_index::{
    load_purged, store_purged, EntryFile, EntryId, MarkerStore, Record, MARKER, SKIP,
};
use crate::error::LogError;
use crate::leader_epoch::EpochEntry;
use crate::log::{admit, log_append_time, AppendOutcome, PartitionLog};
use crate::producer_state::ProducerStateManager;

/// State of a replicated log besides its segments.
#[derive(Debug)]
pub(crate) struct Replication {
    markers: MarkerStore,
    purged: Option<EntryId>,
    last: Option<EntryId>,
}

/// What a stored entry holds.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum EntryBody {
    /// A record batch, as stored (offsets and leader epoch stamped).
    Data {
        /// The batch bytes.
        batch: Bytes,
        /// It starts a segment (the leader rolled before it).
        first_in_segment: bool,
    },
    /// A proposal the leader refused or found to be a duplicate: nothing stored.
    Skip,
    /// A control entry of the replication layer.
    Marker(Bytes),
}

/// One Raft entry of the log.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StoredEntry {
    /// Raft id.
    pub id: EntryId,
    /// Kafka offset after the entry.
    pub next_offset: i64,
    /// Contents.
    pub body: EntryBody,
}

/// What happened to a proposal.
#[derive(Debug)]
pub enum ProposalOutcome {
    /// Written at these offsets (or, for a duplicate, found at them).
    Accepted(AppendOutcome),
    /// Refused (stored as a skip entry); the producer gets this error.
    Refused(LogError),
}

/// Where a log restarts from a Raft snapshot.
#[derive(Debug, Clone)]
pub struct ResetPoint {
    /// The last entry the snapshot covers; the log continues after it.
    pub purged: EntryId,
    /// Kafka offset at which the log continues.
    pub start_offset: i64,
    /// Producer state at `start_offset` (the snapshot file format), if any.
    pub producer_snapshot: Option<Vec<u8>>,
    /// Leader epochs up to `start_offset`.
    pub epochs: Vec<EpochEntry>,
}

impl SegmentLog {
    /// Opens (creating if missing) a partition log in replicated mode. A log written before
    /// replication is carried over: its data is sealed and counts as purged at id (0, 0), so Raft
    /// entries start at index 1 in a new segment.
    pub fn open_replicated(dir: &Path, config: LogConfig) -> Result<SegmentLog, LogError> {
        let mut log = SegmentLog::open(dir, config)?;
        log.attach_entries()?;
        Ok(log)
    }

    /// Deletes everything in the log's directory and starts an empty replicated log at `point`
    /// (a Raft snapshot was installed). On error the log must not be used any more.
    pub fn reset_replicated(&mut self, point: &ResetPoint) -> Result<(), LogError> {
        let dir = self.dir.clone();
        let config = self.config.clone();
        SegmentLog::delete_files(&dir)?;
        SegmentLog::seed_empty_dir(
            &dir,
            point.start_offset,
            point.producer_snapshot.as_deref(),
            &point.epochs,
        )?;
        store_purged(&dir, point.purged)?;
        // Dropping the old log closes its (deleted) files.
        *self = SegmentLog::open_replicated(&dir, config)?;
        Ok(())
    }

    fn attach_entries(&mut self) -> Result<(), LogError> {
        let mut purged = load_purged(&self.dir)?;
        let markers = MarkerStore::open(&self.dir)?;
        for s in &mut self.segments {
            s.entries = EntryFile::open(&self.dir, s.base_offset())?;
        }
        let first_indexed = self.segments.iter().position(|s| s.entries.is_some());
        if let Some(first) = first_indexed {
            if let Some(gap) = self.segments[first..]
                .iter()
                .position(|s| s.entries.is_none())
            {
                let at = first + gap;
                if at + 1 != self.segments.len() || !self.segments[at].is_empty() {
                    return Err(LogError::Corrupt {
                        context: format!(
                            "{}: segment base_offset={} has no entry index",
                            self.dir.display(),
                            self.segments[at].base_offset()
                        ),
                    });
                }
            }
        } else if purged.is_none() && self.has_data() {
            // Written before replication: seal it; it stands for the purged prefix up to (0, 0).
            self.roll()?;
            let legacy = EntryId { term: 0, index: 0 };
            store_purged(&self.dir, legacy)?;
            purged = Some(legacy);
            tracing::info!(dir = %self.dir.display(), "carried a log written before replication over into replicated mode");
        }
        self.replication = Some(Replication {
            markers,
            purged,
            last: None,
        });
        self.recover_entries()?;
        if self.active().entries.is_none() {
            let next = self.next_index();
            let base = self.active().base_offset();
            let file = EntryFile::create(&self.dir, base, next)?;
            self.active_mut().entries = Some(file);
        }
        Ok(())
    }

    fn has_data(&self) -> bool {
        self.segments.len() > 1 || !self.active().is_empty()
    }

    fn replication(&self) -> Result<&Replication, LogError> {
        self.replication.as_ref().ok_or_else(|| LogError::Corrupt {
            context: format!("{}: not opened in replicated mode", self.dir.display()),
        })
    }

    fn replication_mut(&mut self) -> Result<&mut Replication, LogError> {
        let dir = self.dir.display().to_string();
        self.replication.as_mut().ok_or_else(|| LogError::Corrupt {
            context: format!("{dir}: not opened in replicated mode"),
        })
    }

    /// Cuts the active segment back to the prefix its entry index, `.log` and markers agree on,
    /// checks the sealed ones, and computes the last entry id.
    fn recover_entries(&mut self) -> Result<(), LogError> {
        let n = self.segments.len();
        for i in 0..n {
            let Some(entries) = &self.segments[i].entries else {
                continue;
            };
            let records = entries.read(entries.first_index(), u64::MAX)?;
            let first_index = entries.first_index();
            let segment = &self.segments[i];
            let mut position = 0u64;
            let mut next = segment.base_offset();
            let mut valid = 0u64;
            for (k, r) in records.iter().enumerate() {
                let index = first_index + k as u64;
                let ok = if r.is_data() {
                    match segment.read_header_at(u64::from(r.position)) {
                        Ok(Some(h)) => {
                            u64::from(r.position) == position
                                && h.base_offset == next
                                && h.total_size() == r.size as usize
                                && h.last_offset() + 1 == r.next_offset
                        }
                        _ => false,
                    }
                } else {
                    // Markers at or below the purged entry were dropped from the store with it.
                    let purged = self.replication()?.purged.is_some_and(|p| index <= p.index);
                    r.next_offset == next
                        && (r.position == SKIP
                            || (r.position == MARKER
                                && (purged
                                    || self
                                        .replication()?
                                        .markers
                                        .get(index)
                                        .is_some_and(|m| m.term == r.term))))
                };
                if !ok {
                    break;
                }
                valid += 1;
                if r.is_data() {
                    position += u64::from(r.size);
                }
                next = r.next_offset;
            }
            let complete = valid == records.len() as u64 && position == segment.size();
            if complete {
                continue;
            }
            if i + 1 != n {
                return Err(LogError::Corrupt {
                    context: format!(
                        "{}: sealed segment base_offset={} disagrees with its entry index after {valid} entries",
                        self.dir.display(),
                        segment.base_offset()
                    ),
                });
            }
            tracing::warn!(
                dir = %self.dir.display(),
                kept_entries = valid,
                cut_entries = records.len() as u64 - valid,
                kept_bytes = position,
                "cutting the active segment back to the prefix its entry index describes"
            );
            if let Some(e) = self.segments[i].entries.as_mut() {
                e.truncate(valid)?;
            }
            if next < self.log_end_offset() {
                self.truncate_suffix(next)?;
            }
        }
        let last = self.last_record_id()?;
        let replication = self.replication_mut()?;
        replication.markers.truncate_after(last.map(|l| l.index))?;
        replication.last = last.or(replication.purged);
        Ok(())
    }

    /// The id of the last index record over all segments.
    fn last_record_id(&self) -> Result<Option<EntryId>, LogError> {
        for s in self.segments.iter().rev() {
            if let Some(e) = &s.entries {
                if let (Some(index), Some(r)) = (e.last_index(), e.last()) {
                    return Ok(Some(EntryId {
                        term: r.term,
                        index,
                    }));
                }
            }
        }
        Ok(None)
    }

    /// The marker store's file (synced by the group commit), in replicated mode.
    pub(crate) fn marker_file(&self) -> Option<std::sync::Arc<std::fs::File>> {
        self.replication.as_ref().map(|r| r.markers.file().clone())
    }

    /// Whether the log is in replicated mode.
    pub fn is_replicated(&self) -> bool {
        self.replication.is_some()
    }

    /// The last purged entry id (Raft reads nothing at or below it).
    pub fn purged_entry(&self) -> Option<EntryId> {
        self.replication.as_ref().and_then(|r| r.purged)
    }

    /// The last entry id (the purged one if the log holds no entries).
    pub fn last_entry(&self) -> Option<EntryId> {
        self.replication.as_ref().and_then(|r| r.last)
    }

    /// The Kafka offset where the first Raft entry of the log starts: the base of the first
    /// segment with an entry index (data below it was written before replication).
    pub fn entries_start_offset(&self) -> i64 {
        self.segments
            .iter()
            .find(|s| s.entries.is_some())
            .map_or(self.log_end_offset(), |s| s.base_offset())
    }

    /// The index the next entry gets.
    pub fn next_index(&self) -> u64 {
        self.last_entry().map_or(0, |l| l.index + 1)
    }

    fn expect_next(&self, id: EntryId) -> Result<(), LogError> {
        let next = self.next_index();
        if id.index != next {
            return Err(LogError::Corrupt {
                context: format!(
                    "{}: entry index={} appended where index={next} was expected",
                    self.dir.display(),
                    id.index
                ),
            });
        }
        Ok(())
    }

    fn push_record(&mut self, id: EntryId, record: Record) -> Result<(), LogError> {
        let file = self
            .active_mut()
            .entries
            .as_mut()
            .ok_or_else(|| LogError::Corrupt {
                context: "active segment has no entry index".into(),
            })?;
        file.append(record)?;
        self.replication_mut()?.last = Some(id);
        Ok(())
    }

    /// Appends a data batch already stamped with `base_offset` and its header, then its record;
    /// a failed record write cuts the batch back off.
    fn write_data(
        &mut self,
        id: EntryId,
        batch: &[u8],
        header: &BatchHeader,
        now_ms: i64,
    ) -> Result<(), LogError> {
        let base_offset = header.base_offset;
        let epoch = i32::try_from(id.term).unwrap_or(i32::MAX);
        let new_epoch = self.epochs.assign(epoch, base_offset)?;
        let position = self.active().size();
        let interval = self.config.index_interval_bytes;
        if let Err(e) = self.active_mut().append(batch, header, interval, now_ms) {
            if new_epoch {
                if let Err(undo) = self.epochs.truncate_from_end(base_offset) {
                    tracing::warn!(
                        "could not remove leader epoch={epoch} after a failed append: {undo}"
                    );
                }
            }
            return Err(e);
        }
        let record = Record {
            term: id.term,
            position: u32::try_from(position).unwrap_or(u32::MAX - 2),
            size: u32::try_from(batch.len()).unwrap_or(u32::MAX),
            next_offset: header.last_offset() + 1,
        };
        if let Err(e) = self.push_record(id, record) {
            if let Err(undo) = self.truncate_suffix(base_offset) {
                tracing::error!("could not cut a batch whose entry record failed: {undo}");
            }
            return Err(e);
        }
        self.producers.update(header, base_offset);
        Ok(())
    }

    /// Appends the leader's own proposal: admits it (size, idempotent sequence and epoch),
    /// stamps offsets, the leader epoch (`id.term`) and, for LogAppendTime topics, `now_ms`, rolls
    /// the segment if due, and writes it. A refused or duplicate proposal is stored as a skip.
    pub fn append_proposal(
        &mut self,
        id: EntryId,
        batch: &mut [u8],
        now_ms: i64,
    ) -> Result<ProposalOutcome, LogError> {
        self.expect_next(id)?;
        let admitted = admit(batch, &self.config, &self.producers);
        let refusal = match admitted {
            Ok(None) => None,
            Ok(Some(duplicate)) => Some(ProposalOutcome::Accepted(duplicate)),
            Err(e) if e.is_storage_error() => return Err(e),
            Err(e) => Some(ProposalOutcome::Refused(e)),
        };
        if let Some(outcome) = refusal {
            self.append_skip(id)?;
            return Ok(outcome);
        }
        let base_offset = self.log_end_offset();
        let log_append_time_ms = log_append_time(&self.config, now_ms);
        let epoch = i32::try_from(id.term).unwrap_or(i32::MAX);
        rewrite_batch_header(batch, base_offset, epoch, log_append_time_ms);
        let header = BatchHeader::parse(batch)?;
        if self.should_roll(&header, now_ms) {
            self.roll()?;
        }
        self.write_data(id, batch, &header, now_ms)?;
        Ok(ProposalOutcome::Accepted(AppendOutcome::Appended {
            base_offset,
            last_offset: header.last_offset(),
            log_append_time_ms,
        }))
    }

    /// Appends a skip entry (no bytes).
    fn append_skip(&mut self, id: EntryId) -> Result<(), LogError> {
        let next_offset = self.log_end_offset();
        self.push_record(
            id,
            Record {
                term: id.term,
                position: SKIP,
                size: 0,
                next_offset,
            },
        )
    }

    /// Appends a marker entry.
    pub fn append_marker(&mut self, id: EntryId, payload: &[u8]) -> Result<(), LogError> {
        self.expect_next(id)?;
        self.replication_mut()?
            .markers
            .append(id.index, id.term, payload)?;
        let next_offset = self.log_end_offset();
        if let Err(e) = self.push_record(
            id,
            Record {
                term: id.term,
                position: MARKER,
                size: 0,
                next_offset,
            },
        ) {
            let replication = self.replication_mut()?;
            let keep = replication.last.map(|l| l.index);
            replication.markers.truncate_after(keep)?;
            return Err(e);
        }
        Ok(())
    }

    /// Appends an entry exactly as the leader stored it (a follower).
    pub fn append_entry(&mut self, entry: &StoredEntry, now_ms: i64) -> Result<(), LogError> {
        self.expect_next(entry.id)?;
        match &entry.body {
            EntryBody::Data {
                batch,
                first_in_segment,
            } => {
                let header = BatchHeader::parse(batch)?;
                let end = self.log_end_offset();
                if header.base_offset != end || header.total_size() != batch.len() {
                    return Err(LogError::Corrupt {
                        context: format!(
                            "{}: replicated entry index={} holds a batch at offset={} of {} bytes where offset={end} was expected",
                            self.dir.display(),
                            entry.id.index,
                            header.base_offset,
                            batch.len()
                        ),
                    });
                }
                if *first_in_segment && !self.active().is_empty() {
                    self.roll()?;
                }
                self.write_data(entry.id, batch, &header, now_ms)
            }
            EntryBody::Skip => self.append_skip(entry.id),
            EntryBody::Marker(payload) => self.append_marker(entry.id, payload),
        }
    }

    /// The entries in `[from, to)`, in order, stopping before the data would pass `max_bytes`
    /// (the first entry is always returned). With `with_data == false` data entries come back
    /// with empty batches (for applying: only ids, offsets and markers matter).
    pub fn entries(
        &self,
        from: u64,
        to: u64,
        max_bytes: usize,
        with_data: bool,
    ) -> Result<Vec<StoredEntry>, LogError> {
        let replication = self.replication()?;
        let mut out = Vec::new();
        let mut bytes = 0usize;
        for segment in &self.segments {
            let Some(file) = &segment.entries else {
                continue;
            };
            if file.count() == 0 || file.first_index() + file.count() <= from {
                continue;
            }
            if file.first_index() >= to {
                break;
            }
            let start = from.max(file.first_index());
            let records = file.read(start, to)?;
            // Data entries of a segment are contiguous in its `.log`: read their span once.
            let mut take = 0usize;
            let mut span_end = None;
            let mut span_start = None;
            for r in &records {
                if r.is_data() && with_data {
                    if (!out.is_empty() || take > 0) && bytes + r.size as usize > max_bytes {
                        break;
                    }
                    bytes += r.size as usize;
                    span_start.get_or_insert(u64::from(r.position));
                    span_end = Some(u64::from(r.position) + u64::from(r.size));
                }
                take += 1;
            }
            let span = match (span_start, span_end) {
                (Some(s), Some(e)) => {
                    Bytes::from(segment.read_bytes(s, usize::try_from(e - s).unwrap_or(0))?)
                }
                _ => Bytes::new(),
            };
            let base = span_start.unwrap_or(0);
            for (k, r) in records.iter().take(take).enumerate() {
                let index = start + k as u64;
                let id = EntryId {
                    term: r.term,
                    index,
                };
                let body = if r.position == SKIP {
                    EntryBody::Skip
                } else if r.position == MARKER {
                    let m = replication
                        .markers
                        .get(index)
                        .ok_or_else(|| LogError::Corrupt {
                            context: format!(
                                "{}: marker of entry index={index} missing",
                                self.dir.display()
                            ),
                        })?;
                    EntryBody::Marker(m.payload.clone())
                } else {
                    let batch = if with_data {
                        let s = usize::try_from(u64::from(r.position) - base).unwrap_or(0);
                        span.slice(s..s + r.size as usize)
                    } else {
                        Bytes::new()
                    };
                    EntryBody::Data {
                        batch,
                        first_in_segment: r.position == 0,
                    }
                };
                out.push(StoredEntry {
                    id,
                    next_offset: r.next_offset,
                    body,
                });
            }
            if take < records.len() {
                break;
            }
        }
        Ok(out)
    }

    /// The id of entry `index`, if the log holds it (or it is the purged one).
    pub fn entry_id(&self, index: u64) -> Result<Option<EntryId>, LogError> {
        if let Some(p) = self.purged_entry().filter(|p| p.index == index) {
            return Ok(Some(p));
        }
        for segment in self.segments.iter().rev() {
            if let Some(file) = &segment.entries {
                if file.contains(index) {
                    return Ok(file.read_one(Some(index))?.map(|r| EntryId {
                        term: r.term,
                        index,
                    }));
                }
            }
        }
        Ok(None)
    }

    /// The Kafka offset after entry `index` (the high watermark when it is the last committed
    /// entry), if the log holds it.
    pub fn next_offset_after(&self, index: u64) -> Result<Option<i64>, LogError> {
        for segment in self.segments.iter().rev() {
            if let Some(file) = &segment.entries {
                if file.contains(index) {
                    return Ok(file.read_one(Some(index))?.map(|r| r.next_offset));
                }
            }
        }
        Ok(None)
    }

    /// The last entry entirely below `offset`: the last one whose next offset is <= `offset`
    /// (the purged id if no held entry qualifies).
    pub fn last_entry_below(&self, offset: i64) -> Result<Option<EntryId>, LogError> {
        for segment in self.segments.iter().rev() {
            let Some(file) = &segment.entries else {
                continue;
            };
            let Some(last) = file.last_index() else {
                continue;
            };
            let first = file.first_index();
            let first_next = file
                .read_one(Some(first))?
                .map_or(i64::MAX, |r| r.next_offset);
            if first_next > offset {
                continue;
            }
            // Binary search for the last record with next_offset <= offset.
            let (mut lo, mut hi) = (first, last);
            while lo < hi {
                let mid = lo + (hi - lo).div_ceil(2);
                let r = file.read_one(Some(mid))?.ok_or_else(|| LogError::Corrupt {
                    context: format!("{}: entry index={mid} unreadable", self.dir.display()),
                })?;
                if r.next_offset <= offset {
                    lo = mid;
                } else {
                    hi = mid - 1;
                }
            }
            return Ok(file.read_one(Some(lo))?.map(|r| EntryId {
                term: r.term,
                index: lo,
            }));
        }
        Ok(self.purged_entry())
    }

    /// The markers with index in `[from, to)`.
    pub fn markers(&self, from: u64, to: u64) -> Vec<(EntryId, Bytes)> {
        let Some(r) = &self.replication else {
            return Vec::new();
        };
        r.markers
            .range(from..to)
            .map(|(index, m)| {
                (
                    EntryId {
                        term: m.term,
                        index,
                    },
                    m.payload.clone(),
                )
            })
            .collect()
    }

    /// Removes every entry after `index` (all entries with `None`), durably: Raft found them in
    /// conflict with the leader's log. Producer state and epochs follow the cut.
    pub fn truncate_entries_after(&mut self, index: Option<u64>) -> Result<(), LogError> {
        let purged = self.purged_entry();
        if let (Some(p), i) = (purged, index) {
            if i.is_none_or(|i| i < p.index) {
                return Err(LogError::Corrupt {
                    context: format!(
                        "{}: truncation after {i:?} would cut below the purged entry {}",
                        self.dir.display(),
                        p.index
                    ),
                });
            }
        }
        let keep_offset = match index {
            Some(i) if Some(i) == purged.map(|p| p.index) => None,
            Some(i) => Some(
                self.next_offset_after(i)?
                    .ok_or_else(|| LogError::Corrupt {
                        context: format!(
                            "{}: entry index={i} to truncate after is missing",
                            self.dir.display()
                        ),
                    })?,
            ),
            None => None,
        };
        // Kafka-level cut first (deletes later segments and cuts the one holding the offset).
        let cut_offset = keep_offset.unwrap_or_else(|| {
            // Everything after the purged point goes: the log continues at the first indexed
            // segment's base.
            self.segments
                .iter()
                .find(|s| s.entries.is_some())
                .map_or(self.log_end_offset(), |s| s.base_offset())
        });
        if cut_offset < self.log_end_offset() {
            self.truncate_suffix(cut_offset)?;
        }
        let keep_to = index.map_or(0, |i| i + 1);
        for segment in &mut self.segments {
            if let Some(file) = segment.entries.as_mut() {
                let keep = keep_to.saturating_sub(file.first_index());
                file.truncate(keep)?;
            }
        }
        let last = self.last_record_id()?;
        let replication = self.replication_mut()?;
        replication.markers.truncate_after(index)?;
        replication.last = last.or(replication.purged);
        // The active segment may now be empty with an index that starts past the next entry.
        let next = self.next_index();
        let active = self.active();
        if active
            .entries
            .as_ref()
            .is_some_and(|e| e.count() == 0 && e.first_index() != next)
        {
            let base = active.base_offset();
            let file = EntryFile::create(&self.dir, base, next)?;
            self.active_mut().entries = Some(file);
        }
        Ok(())
    }

    /// Records that Raft no longer needs entries at or below `upto` (they are in a snapshot).
    pub fn purge_entries(&mut self, upto: EntryId) -> Result<(), LogError> {
        if self.purged_entry().is_some_and(|p| p.index >= upto.index) {
            return Ok(());
        }
        store_purged(&self.dir, upto)?;
        let replication = self.replication_mut()?;
        replication.purged = Some(upto);
        replication.markers.purge_below(upto.index + 1)?;
        if replication.last.is_none_or(|l| l.index < upto.index) {
            replication.last = Some(upto);
        }
        // Segments below the log start that waited for this purge can go now.
        let start = self.log_start_offset;
        self.purge_prefix(start)
    }

    /// How many of the oldest segments may be deleted without losing an entry Raft still needs:
    /// those without an entry index and those whose entries are all purged (never the active one).
    pub(crate) fn deletable_segments(&self) -> usize {
        let Some(r) = &self.replication else {
            return self.segments.len() - 1;
        };
        let purged = r.purged.map(|p| p.index);
        self.segments[..self.segments.len() - 1]
            .iter()
            .take_while(|s| match &s.entries {
                None => true,
                Some(e) => match (e.last_index(), purged) {
                    (None, _) => true,
                    (Some(last), Some(p)) => last <= p,
                    (Some(_), None) => false,
                },
            })
            .count()
    }

    /// The producer state as of `offset` (the snapshot file format), rebuilt from the newest
    /// snapshot at or below it plus the batches between.
    pub fn producer_snapshot_at(&self, offset: i64) -> Result<Vec<u8>, LogError> {
        let (mut producers, from) = ProducerStateManager::load_latest(&self.dir, offset)?
            .unwrap_or_else(|| (ProducerStateManager::new(), i64::MIN));
        self.for_each_batch_from(from.max(self.log_start_offset), |h| {
            if h.base_offset >= from && h.base_offset < offset {
                producers.update(h, h.base_offset);
            }
            Ok(())
        })?;
        Ok(producers.snapshot_bytes(offset))
    }

    /// The leader epochs starting before `offset`.
    pub fn epochs_below(&self, offset: i64) -> Vec<EpochEntry> {
        self.epochs
            .entries()
            .iter()
            .copied()
            .filter(|e| e.start_offset < offset)
            .collect()
    }
}
