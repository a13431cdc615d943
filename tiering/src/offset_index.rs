//! The sparse offset index (`<base:020>.index`): 8-byte entries `(relative offset u32 BE, file
//! position u32 BE)`, each naming the first offset of a batch and where that batch starts in the
//! `.log`. An entry is added when more than `index.interval.bytes` of batches were appended since
//! the previous one. Crash behaviour: see `index_file`.

use crate::index_file::IndexEntry;

/// Maps the base offset of a batch (relative to the segment base) to its file position.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct OffsetEntry {
    /// Batch base offset minus segment base offset.
    pub(crate) relative_offset: u32,
    /// Byte position of the batch in the segment's `.log`.
    pub(crate) position: u32,
}

impl IndexEntry for OffsetEntry {
    const SIZE: usize = 8;

    fn encode(&self, out: &mut Vec<u8>) {
        out.extend_from_slice(&self.relative_offset.to_be_bytes());
        out.extend_from_slice(&self.position.to_be_bytes());
    }

    fn decode(buf: &[u8]) -> Self {
        OffsetEntry {
            relative_offset: u32::from_be_bytes(buf[0..4].try_into().expect("4 bytes")),
            position: u32::from_be_bytes(buf[4..8].try_into().expect("4 bytes")),
        }
    }

    fn may_precede(&self, next: &Self) -> bool {
        self.relative_offset < next.relative_offset && self.position < next.position
    }
}

/// Position to start scanning from for `relative_offset`: the largest entry at or below it, or
/// the start of the segment.
pub(crate) fn lookup(entries: &[OffsetEntry], relative_offset: u32) -> u64 {
    let n = entries.partition_point(|e| e.relative_offset <= relative_offset);
    if n == 0 {
        0
    } else {
        u64::from(entries[n - 1].position)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn encodes_big_endian() {
        let mut out = Vec::new();
        OffsetEntry {
            relative_offset: 0x0102_0304,
            position: 0x0a0b_0c0d,
        }
        .encode(&mut out);
        assert_eq!(out, [1, 2, 3, 4, 10, 11, 12, 13]);
        assert_eq!(
            OffsetEntry::decode(&out),
            OffsetEntry {
                relative_offset: 0x0102_0304,
                position: 0x0a0b_0c0d
            }
        );
    }

    #[test]
    fn lookup_finds_floor_entry() {
        let e = |o, p| OffsetEntry {
            relative_offset: o,
            position: p,
        };
        let entries = [e(10, 100), e(20, 200)];
        assert_eq!(lookup(&entries, 5), 0);
        assert_eq!(lookup(&entries, 10), 100);
        assert_eq!(lookup(&entries, 19), 100);
        assert_eq!(lookup(&entries, 25), 200);
        assert_eq!(lookup(&[], 25), 0);
    }
}
