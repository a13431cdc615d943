//! A partition's Raft snapshot (RFC 0006): not the data, but where the log continues.
//!
//! A snapshot at log id R says: every entry up to R is accounted for; the Kafka log continues at
//! `start_offset` with this producer state and epoch history. Its boundary is chosen by the
//! replica: for a tiered topic the end of the offloaded log (everything below is in the object
//! store, so a new replica copies only the local tail), otherwise the local log start (everything
//! retained is copied, as Kafka does). Installing it resets the follower's log to start there.

use serde::{Deserialize, Serialize};
use tiering::EpochEntry;

/// The data of a partition snapshot (JSON on disk and on the wire).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SnapshotData {
    /// Format version.
    pub version: u32,
    /// Kafka offset at which the log continues after the snapshot.
    pub start_offset: i64,
    /// The partition's log start offset (over both tiers) at the snapshot.
    pub log_start_offset: i64,
    /// Producer state at `start_offset`, in the log's snapshot format (JSON text).
    pub producer_state: Option<String>,
    /// Leader epochs starting before `start_offset`: (epoch, start offset).
    pub epochs: Vec<(i32, i64)>,
    /// The end of the offloaded log agreed so far, if any.
    pub offloaded_end: Option<i64>,
}

impl SnapshotData {
    /// The current format version.
    pub const VERSION: u32 = 1;

    /// The epochs as the log's type.
    pub fn epoch_entries(&self) -> Vec<EpochEntry> {
        self.epochs
            .iter()
            .map(|&(epoch, start_offset)| EpochEntry {
                epoch,
                start_offset,
            })
            .collect()
    }
}
