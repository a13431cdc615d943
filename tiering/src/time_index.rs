//! The sparse time index (`<base:020>.timeindex`): 12-byte entries `(max timestamp so far i64 BE,
//! relative offset u32 BE)`. An entry is added whenever a batch raises the segment's maximum
//! timestamp; its offset is that batch's base offset (relative to the segment base). So every
//! batch up to and including the one an entry names has a max timestamp <= the entry's, and the
//! last entry names the batch holding the segment's largest timestamp. Crash behaviour: see
//! `index_file`.

use crate::index_file::IndexEntry;

/// A new maximum timestamp and the batch that set it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct TimeEntry {
    /// Largest timestamp in the segment up to and including this batch.
    pub(crate) timestamp: i64,
    /// Base offset of the batch, minus the segment base offset.
    pub(crate) relative_offset: u32,
}

impl IndexEntry for TimeEntry {
    const SIZE: usize = 12;

    fn encode(&self, out: &mut Vec<u8>) {
        out.extend_from_slice(&self.timestamp.to_be_bytes());
        out.extend_from_slice(&self.relative_offset.to_be_bytes());
    }

    fn decode(buf: &[u8]) -> Self {
        TimeEntry {
            timestamp: i64::from_be_bytes(buf[0..8].try_into().expect("8 bytes")),
            relative_offset: u32::from_be_bytes(buf[8..12].try_into().expect("4 bytes")),
        }
    }

    fn may_precede(&self, next: &Self) -> bool {
        self.timestamp < next.timestamp && self.relative_offset < next.relative_offset
    }
}

/// The relative offset of the last batch known to be entirely below `timestamp` (all batches up
/// to it have smaller max timestamps), from which a scan for `timestamp` can start.
pub(crate) fn scan_start_for(entries: &[TimeEntry], timestamp: i64) -> Option<u32> {
    let n = entries.partition_point(|e| e.timestamp < timestamp);
    (n > 0).then(|| entries[n - 1].relative_offset)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn encodes_big_endian() {
        let mut out = Vec::new();
        TimeEntry {
            timestamp: 0x0102_0304_0506_0708,
            relative_offset: 9,
        }
        .encode(&mut out);
        assert_eq!(out, [1, 2, 3, 4, 5, 6, 7, 8, 0, 0, 0, 9]);
        assert_eq!(TimeEntry::decode(&out).relative_offset, 9);
    }

    #[test]
    fn scan_start_is_last_entry_below() {
        let e = |t, o| TimeEntry {
            timestamp: t,
            relative_offset: o,
        };
        let entries = [e(100, 0), e(200, 5), e(300, 9)];
        assert_eq!(scan_start_for(&entries, 50), None);
        assert_eq!(scan_start_for(&entries, 100), None);
        assert_eq!(scan_start_for(&entries, 150), Some(0));
        assert_eq!(scan_start_for(&entries, 301), Some(9));
    }
}
