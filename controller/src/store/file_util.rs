//! On-disk building blocks shared by the log store and the state machine store.
//!
//! - Frames: `len: u32 LE | crc32c(payload): u32 LE | payload`, payload is JSON. A reader stops at
//!   the first frame that is short or fails its CRC and reports where the valid prefix ends.
//! - Atomic replace: write `<name>.tmp`, fsync it, rename over `<name>`, fsync the directory. After
//!   a crash the file is either the old or the new version; a stale `.tmp` is deleted on open.

use std::fs;
use std::fs::File;
use std::io;
use std::io::Write;
use std::path::Path;

use serde::de::DeserializeOwned;
use serde::Serialize;

/// Bytes of a frame header (length and CRC).
pub(crate) const FRAME_HEADER_LEN: usize = 8;

/// Largest payload a frame may claim; a larger length is treated as corruption, not allocated.
pub(crate) const MAX_FRAME_LEN: usize = 256 * 1024 * 1024;

/// Append one frame holding `value` as JSON to `buf`.
pub(crate) fn encode_frame<T: Serialize>(buf: &mut Vec<u8>, value: &T) -> io::Result<()> {
    let payload =
        serde_json::to_vec(value).map_err(|e| io::Error::new(io::ErrorKind::InvalidData, e))?;
    let len = u32::try_from(payload.len())
        .ok()
        .filter(|l| (*l as usize) <= MAX_FRAME_LEN)
        .ok_or_else(|| {
            io::Error::new(
                io::ErrorKind::InvalidInput,
                format!("frame of {} bytes is too large", payload.len()),
            )
        })?;
    buf.extend_from_slice(&len.to_le_bytes());
    buf.extend_from_slice(&crc32c::crc32c(&payload).to_le_bytes());
    buf.extend_from_slice(&payload);
    Ok(())
}

/// Result of decoding one frame at the start of a buffer.
pub(crate) enum Frame<'a> {
    /// A whole frame with a valid CRC: its payload and total length.
    Valid(&'a [u8], usize),
    /// The buffer ends inside the frame, or the CRC or length is wrong.
    Invalid,
    /// The buffer is empty.
    End,
}

/// Decode the frame at the start of `buf`.
pub(crate) fn decode_frame(buf: &[u8]) -> Frame<'_> {
    if buf.is_empty() {
        return Frame::End;
    }
    if buf.len() < FRAME_HEADER_LEN {
        return Frame::Invalid;
    }
    let len = u32::from_le_bytes([buf[0], buf[1], buf[2], buf[3]]) as usize;
    let crc = u32::from_le_bytes([buf[4], buf[5], buf[6], buf[7]]);
    if len > MAX_FRAME_LEN || buf.len() - FRAME_HEADER_LEN < len {
        return Frame::Invalid;
    }
    let payload = &buf[FRAME_HEADER_LEN..FRAME_HEADER_LEN + len];
    if crc32c::crc32c(payload) != crc {
        return Frame::Invalid;
    }
    Frame::Valid(payload, FRAME_HEADER_LEN + len)
}

/// Decode a JSON payload, naming `what` in the error.
pub(crate) fn decode_json<T: DeserializeOwned>(payload: &[u8], what: &str) -> io::Result<T> {
    serde_json::from_slice(payload).map_err(|e| {
        io::Error::new(
            io::ErrorKind::InvalidData,
            format!("{what}: undecodable payload: {e}"),
        )
    })
}

/// Replace `dir/name` with `bytes` atomically and durably.
pub(crate) fn atomic_write(dir: &Path, name: &str, bytes: &[u8]) -> io::Result<()> {
    let tmp = dir.join(format!("{name}.tmp"));
    {
        let mut f = File::create(&tmp)?;
        f.write_all(bytes)?;
        f.sync_all()?;
    }
    fs::rename(&tmp, dir.join(name))?;
    sync_dir(dir)
}

/// Fsync a directory so that creations, renames and removals in it are durable.
pub(crate) fn sync_dir(dir: &Path) -> io::Result<()> {
    File::open(dir)?.sync_all()
}

/// Create `dir` if needed and delete temporary files a crash may have left behind.
pub(crate) fn prepare_dir(dir: &Path) -> io::Result<()> {
    fs::create_dir_all(dir)?;
    for entry in fs::read_dir(dir)? {
        let path = entry?.path();
        if path.extension().is_some_and(|e| e == "tmp") {
            fs::remove_file(&path)?;
        }
    }
    sync_dir(dir)
}

/// Read `dir/name`, or `None` if it does not exist.
pub(crate) fn read_optional(dir: &Path, name: &str) -> io::Result<Option<Vec<u8>>> {
    match fs::read(dir.join(name)) {
        Ok(b) => Ok(Some(b)),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(e),
    }
}

/// A file holding a magic prefix followed by exactly one frame (vote, committed, snapshot parts).
pub(crate) fn encode_single<T: Serialize>(magic: &[u8; 8], value: &T) -> io::Result<Vec<u8>> {
    let mut buf = magic.to_vec();
    encode_frame(&mut buf, value)?;
    Ok(buf)
}

/// Decode a file written by [`encode_single`]; any damage is an error (these files are replaced
/// atomically, so they are never torn).
pub(crate) fn decode_single<T: DeserializeOwned>(
    magic: &[u8; 8],
    bytes: &[u8],
    what: &str,
) -> io::Result<T> {
    let invalid = |m: &str| io::Error::new(io::ErrorKind::InvalidData, format!("{what}: {m}"));
    let body = bytes
        .strip_prefix(magic.as_slice())
        .ok_or_else(|| invalid("bad magic or format version"))?;
    match decode_frame(body) {
        Frame::Valid(payload, len) if len == body.len() => decode_json(payload, what),
        Frame::Valid(..) => Err(invalid("trailing bytes")),
        Frame::Invalid | Frame::End => Err(invalid("torn or corrupt frame")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Byte-exact frame layout, so a format change is deliberate.
    #[test]
    fn frame_layout_is_stable() {
        let mut buf = Vec::new();
        encode_frame(&mut buf, &42u32).expect("encode");
        assert_eq!(&buf[..4], &2u32.to_le_bytes());
        assert_eq!(&buf[4..8], &crc32c::crc32c(b"42").to_le_bytes());
        assert_eq!(&buf[8..], b"42");
        match decode_frame(&buf) {
            Frame::Valid(p, n) => assert_eq!((p, n), (&b"42"[..], 10)),
            _ => panic!("valid frame"),
        }
        assert!(matches!(decode_frame(&buf[..9]), Frame::Invalid));
        buf[9] = b'3';
        assert!(matches!(decode_frame(&buf), Frame::Invalid));
        assert!(matches!(decode_frame(&[]), Frame::End));
    }
}
