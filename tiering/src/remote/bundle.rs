//! The `.indexes` object uploaded beside each segment: its offset index, time index and the
//! producer state snapshot taken when it was sealed, in one object so an upload costs two PUTs
//! (plus the manifest) instead of four.
//!
//! Layout: `b"STIX"`, version u16 BE, then three sections each `len u32 BE` + bytes (offset index
//! entries, time index entries, producer snapshot; a snapshot length of `u32::MAX` means none), then
//! the CRC32C (u32 BE) of everything before it.

use bytes::Bytes;

use super::RemoteError;
use crate::index_file::IndexEntry;
use crate::offset_index::{self, OffsetEntry};
use crate::time_index::{self, TimeEntry};

const MAGIC: &[u8; 4] = b"STIX";
const VERSION: u16 = 1;
const NO_SNAPSHOT: u32 = u32::MAX;

/// A segment's indexes as stored remotely.
#[derive(Debug, Clone, PartialEq)]
pub struct IndexesBundle {
    offsets: Vec<OffsetEntry>,
    times: Vec<TimeEntry>,
    /// The producer snapshot as of the segment's end, if one was uploaded.
    pub producer_snapshot: Option<Bytes>,
}

impl IndexesBundle {
    /// Encodes the bundle from encoded index files and an optional snapshot.
    pub fn encode(offset_index: &[u8], time_index: &[u8], snapshot: Option<&[u8]>) -> Vec<u8> {
        let mut out = Vec::with_capacity(
            18 + offset_index.len() + time_index.len() + snapshot.map_or(0, <[u8]>::len),
        );
        out.extend_from_slice(MAGIC);
        out.extend_from_slice(&VERSION.to_be_bytes());
        for section in [offset_index, time_index] {
            out.extend_from_slice(&(section.len() as u32).to_be_bytes());
            out.extend_from_slice(section);
        }
        match snapshot {
            Some(s) => {
                out.extend_from_slice(&(s.len() as u32).to_be_bytes());
                out.extend_from_slice(s);
            }
            None => out.extend_from_slice(&NO_SNAPSHOT.to_be_bytes()),
        }
        let crc = crc32c::crc32c(&out);
        out.extend_from_slice(&crc.to_be_bytes());
        out
    }

    /// Decodes and validates a bundle read from `key`.
    pub fn decode(key: &str, bytes: Bytes) -> Result<IndexesBundle, RemoteError> {
        let corrupt = |reason: &str| RemoteError::Corrupt {
            key: key.to_string(),
            reason: reason.to_string(),
        };
        if bytes.len() < 4 + 2 + 4 * 3 + 4 {
            return Err(corrupt("too short"));
        }
        let (body, crc) = bytes.split_at(bytes.len() - 4);
        let crc = u32::from_be_bytes(crc.try_into().map_err(|_| corrupt("crc"))?);
        if crc32c::crc32c(body) != crc {
            return Err(corrupt("checksum mismatch"));
        }
        if &body[..4] != MAGIC {
            return Err(corrupt("bad magic"));
        }
        if u16::from_be_bytes([body[4], body[5]]) != VERSION {
            return Err(corrupt("unsupported version"));
        }
        let mut pos = 6usize;
        let mut section = |allow_none: bool| -> Result<Option<(usize, usize)>, RemoteError> {
            let len_bytes = body.get(pos..pos + 4).ok_or_else(|| corrupt("truncated"))?;
            let len = u32::from_be_bytes(len_bytes.try_into().map_err(|_| corrupt("len"))?);
            pos += 4;
            if allow_none && len == NO_SNAPSHOT {
                return Ok(None);
            }
            let len = len as usize;
            if body.len() - pos < len {
                return Err(corrupt("section longer than the object"));
            }
            let range = (pos, pos + len);
            pos += len;
            Ok(Some(range))
        };
        let offsets = section(false)?.ok_or_else(|| corrupt("offset index"))?;
        let times = section(false)?.ok_or_else(|| corrupt("time index"))?;
        let snapshot = section(true)?;
        let offsets = decode_entries::<OffsetEntry>(&body[offsets.0..offsets.1])
            .ok_or_else(|| corrupt("offset index length"))?;
        let times = decode_entries::<TimeEntry>(&body[times.0..times.1])
            .ok_or_else(|| corrupt("time index length"))?;
        Ok(IndexesBundle {
            offsets,
            times,
            producer_snapshot: snapshot.map(|(a, b)| bytes.slice(a..b)),
        })
    }

    /// Byte position to start scanning from for `relative_offset`.
    pub fn position_for(&self, relative_offset: u32) -> u64 {
        offset_index::lookup(&self.offsets, relative_offset)
    }

    /// Byte position to start scanning from for the first record with timestamp >= `timestamp`.
    pub fn position_for_timestamp(&self, timestamp: i64) -> u64 {
        match time_index::scan_start_for(&self.times, timestamp) {
            Some(relative) => self.position_for(relative),
            None => 0,
        }
    }
}

fn decode_entries<E: IndexEntry>(bytes: &[u8]) -> Option<Vec<E>> {
    if !bytes.len().is_multiple_of(E::SIZE) {
        return None;
    }
    Some(bytes.chunks_exact(E::SIZE).map(E::decode).collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trips_and_rejects_damage() {
        let mut offsets = Vec::new();
        for (rel, pos) in [(0u32, 0u32), (10, 4096), (25, 9000)] {
            OffsetEntry {
                relative_offset: rel,
                position: pos,
            }
            .encode(&mut offsets);
        }
        let mut times = Vec::new();
        TimeEntry {
            timestamp: 500,
            relative_offset: 10,
        }
        .encode(&mut times);
        let encoded = IndexesBundle::encode(&offsets, &times, Some(b"{snap}"));
        let b = IndexesBundle::decode("k", Bytes::from(encoded.clone())).unwrap();
        assert_eq!(b.position_for(0), 0);
        assert_eq!(b.position_for(24), 4096);
        assert_eq!(b.position_for(30), 9000);
        assert_eq!(b.position_for_timestamp(100), 0);
        assert_eq!(b.position_for_timestamp(501), 4096);
        assert_eq!(b.producer_snapshot.as_deref(), Some(&b"{snap}"[..]));

        let none = IndexesBundle::encode(&[], &[], None);
        let b = IndexesBundle::decode("k", Bytes::from(none)).unwrap();
        assert!(b.producer_snapshot.is_none());
        assert_eq!(b.position_for(7), 0);

        let mut flipped = encoded.clone();
        flipped[8] ^= 1;
        assert!(IndexesBundle::decode("k", Bytes::from(flipped)).is_err());
        assert!(IndexesBundle::decode("k", Bytes::from(encoded[..10].to_vec())).is_err());
        assert!(IndexesBundle::decode("k", Bytes::new()).is_err());
    }
}
