//! openraft's state machine for a partition group. The state is the log itself: applying a
//! committed entry moves the high watermark to the Kafka offset after it, records memberships,
//! and applies Strata's control entries (offload progress; a new log start). Nothing is written per
//! entry; the applied position is written down lazily (`ReplicaLog::set_applied`).
//!
//! Snapshots (`snapshot.rs`): building one records where the log continues at the replica's
//! snapshot boundary; installing one resets the follower's log to start there.

use std::io;
use std::sync::Arc;

use futures::{Stream, TryStreamExt};
use openraft::storage::{EntryResponder, RaftStateMachine};
use openraft::{EntryPayload, OptionalSend, RaftSnapshotBuilder};
use tiering::{PartitionLog, ResetPoint};

use super::log::{io_error, ReplicaLog};
use super::snapshot::SnapshotData;
use super::types::{
    to_entry_id, to_log_id, Control, LogId, MarkerPayload, PartitionRaftConfig, Record, Snapshot,
    SnapshotMeta, StoredMembership,
};

/// The state machine of one partition group.
#[derive(Clone, Debug)]
pub struct StateMachine {
    log: Arc<ReplicaLog>,
    /// Snapshots are built at or below this Kafka offset (the replica's snapshot boundary).
    boundary: Arc<parking_lot::Mutex<Option<i64>>>,
}

impl StateMachine {
    /// The state machine over `log`.
    pub fn new(log: Arc<ReplicaLog>) -> Self {
        Self {
            log,
            boundary: Arc::default(),
        }
    }

    /// Sets the Kafka offset the next snapshot is built at (or below, where the log's entries
    /// end).
    pub fn set_snapshot_boundary(&self, offset: i64) {
        *self.boundary.lock() = Some(offset);
    }

    fn apply_control(&self, c: &Control) {
        match *c {
            Control::Offloaded { next_offset } => self.log.set_applied(|a| {
                a.offloaded_end = a.offloaded_end.max(Some(next_offset));
            }),
            Control::LogStart { offset } => {
                let mut log = self.log.log().write();
                let end = log.log_end_offset();
                if offset > log.log_start_offset() {
                    if let Err(e) = log.purge_prefix(offset.min(end)) {
                        tracing::warn!(partition = %self.log.label(), error = %e, "cannot move the log start");
                    }
                }
            }
        }
    }

    /// The membership in effect at `index`: the last membership marker at or below it, else the
    /// snapshot's.
    fn membership_at(&self, index: u64) -> StoredMembership {
        let markers = self.log.log().read().markers(0, index + 1);
        for (id, payload) in markers.iter().rev() {
            if let Ok(MarkerPayload::Membership(m)) = MarkerPayload::decode(payload) {
                return StoredMembership::new(Some(to_log_id(*id)), m);
            }
        }
        self.log
            .snapshot()
            .map(|(meta, _)| meta.last_membership)
            .unwrap_or_else(|| self.log.applied().membership)
    }
}

impl RaftSnapshotBuilder<PartitionRaftConfig> for StateMachine {
    type SnapshotData = SnapshotData;

    async fn build_snapshot(&mut self) -> Result<Snapshot, io::Error> {
        let applied = self.log.applied();
        let boundary = *self.boundary.lock();
        let (last, data) = {
            let log = self.log.log().read();
            let applied_next = match applied.last {
                Some(l) => log.next_offset_after(l.index).map_err(io_error)?,
                None => None,
            };
            // The snapshot covers entries below the boundary, never past what is applied.
            let target = match (boundary, applied_next) {
                (Some(b), Some(a)) => b.min(a),
                (Some(b), None) => b,
                (None, Some(a)) => a,
                (None, None) => log.log_start_offset(),
            };
            let mut last = log.last_entry_below(target).map_err(io_error)?;
            if let (Some(l), Some(a)) = (last, applied.last) {
                if l.index > a.index {
                    last = Some(to_entry_id(&a));
                }
            }
            let Some(last) = last else {
                return Err(io_error(format!(
                    "{}: no entry to snapshot below offset {target}",
                    self.log.label()
                )));
            };
            let start_offset = if Some(last) == log.purged_entry() {
                self.log
                    .snapshot()
                    .map_or(log.log_start_offset(), |(_, d)| d.start_offset)
            } else {
                log.next_offset_after(last.index)
                    .map_err(io_error)?
                    .unwrap_or(target)
            };
            let producer_state = log
                .producer_snapshot_at(start_offset)
                .ok()
                .and_then(|b| String::from_utf8(b).ok());
            let data = SnapshotData {
                version: SnapshotData::VERSION,
                start_offset,
                log_start_offset: log.log_start_offset(),
                producer_state,
                epochs: log
                    .epochs_below(start_offset)
                    .into_iter()
                    .map(|e| (e.epoch, e.start_offset))
                    .collect(),
                offloaded_end: applied.offloaded_end,
            };
            (last, data)
        };
        let meta = SnapshotMeta {
            last_log_id: Some(to_log_id(last)),
            last_membership: self.membership_at(last.index),
        };
        // Write order: the applied point first, then the snapshot (never a snapshot beyond the
        // applied point on disk; `applied_state` repairs logs written before this order).
        self.log.flush_applied();
        self.log.save_snapshot(&meta, &data).map_err(io_error)?;
        tracing::debug!(partition = %self.log.label(), last = last.index, start_offset = data.start_offset, "built a snapshot");
        Ok(Snapshot {
            meta,
            snapshot: data,
        })
    }
}

impl RaftStateMachine<PartitionRaftConfig> for StateMachine {
    type SnapshotData = SnapshotData;
    type SnapshotBuilder = Self;

    async fn applied_state(&mut self) -> Result<(Option<LogId>, StoredMembership), io::Error> {
        let mut a = self.log.applied();
        if let Some((meta, _)) = self.log.snapshot() {
            if meta.last_log_id > a.last {
                // Killed between saving a snapshot and persisting the applied point: everything
                // the snapshot covers was applied (the state machine is the log itself), and
                // openraft requires the applied point to be at least the snapshot's.
                a.last = meta.last_log_id;
                if meta.last_membership.log_id() > a.membership.log_id() {
                    a.membership = meta.last_membership.clone();
                }
                let (last, membership) = (a.last, a.membership.clone());
                self.log.set_applied(|x| {
                    x.last = last;
                    x.membership = membership;
                });
                if let Some(l) = last {
                    let next = self
                        .log
                        .log()
                        .read()
                        .next_offset_after(l.index)
                        .map_err(io_error)?;
                    if let Some(next) = next {
                        self.log.publish_hw(next);
                    }
                }
            }
        }
        Ok((a.last, a.membership))
    }

    async fn apply<Strm>(&mut self, mut entries: Strm) -> Result<(), io::Error>
    where
        Strm: Stream<Item = Result<EntryResponder<PartitionRaftConfig>, io::Error>>
            + Unpin
            + OptionalSend,
    {
        let mut hw = None;
        // Responders answer only after the high watermark covers their entries: a producer
        // (or the group coordinator) that reads right after its write must see it.
        let mut responders = Vec::new();
        while let Some((entry, responder)) = entries.try_next().await? {
            let log_id = entry.log_id;
            match &entry.payload {
                EntryPayload::Normal(Record::Applied { next_offset }) => hw = Some(*next_offset),
                EntryPayload::Normal(Record::Control(c)) => self.apply_control(c),
                EntryPayload::Membership(m) => {
                    let m = m.clone();
                    self.log.set_applied(|a| {
                        a.membership = StoredMembership::new(Some(log_id), m);
                    });
                }
                _ => {}
            }
            self.log.set_applied(|a| a.last = Some(log_id));
            responders.extend(responder);
        }
        if let Some(offset) = hw {
            self.log.publish_hw(offset);
        }
        for r in responders {
            r.send(());
        }
        Ok(())
    }

    async fn get_snapshot_builder(&mut self) -> Self::SnapshotBuilder {
        self.clone()
    }

    async fn install_snapshot(
        &mut self,
        meta: &SnapshotMeta,
        snapshot: Self::SnapshotData,
    ) -> Result<(), io::Error> {
        let Some(last) = meta.last_log_id else {
            return Err(io_error("a snapshot without a last log id"));
        };
        let id = to_entry_id(&last);
        {
            let mut log = self.log.log().write();
            // If the log still holds the snapshot's last entry, its data is ours already: keep it
            // (openraft purges up to it). Otherwise the log restarts at the snapshot.
            let held = log.entry_id(id.index).map_err(io_error)? == Some(id);
            if !held {
                let point = ResetPoint {
                    purged: id,
                    start_offset: snapshot.start_offset,
                    producer_snapshot: snapshot.producer_state.clone().map(String::into_bytes),
                    epochs: snapshot.epoch_entries(),
                };
                log.reset_replicated(&point).map_err(io_error)?;
                let end = log.log_end_offset();
                if snapshot.log_start_offset > snapshot.start_offset {
                    log.purge_prefix(snapshot.log_start_offset.min(end))
                        .map_err(io_error)?;
                }
                tracing::info!(partition = %self.log.label(), last = id.index, start_offset = snapshot.start_offset, "installed a snapshot: the local log restarts at its boundary");
            }
        }
        self.log.save_snapshot(meta, &snapshot).map_err(io_error)?;
        let membership = meta.last_membership.clone();
        self.log.set_applied(|a| {
            a.last = Some(last);
            a.membership = membership;
            a.offloaded_end = a.offloaded_end.max(snapshot.offloaded_end);
        });
        self.log.publish_hw(snapshot.start_offset);
        Ok(())
    }

    async fn get_current_snapshot(&mut self) -> Result<Option<Snapshot>, io::Error> {
        Ok(self.log.snapshot().map(|(meta, data)| Snapshot {
            meta,
            snapshot: data,
        }))
    }
}
