//! Decompression with an output cap.
//!
//! Stored batches are passed through untouched on the produce and fetch paths; only record-exact
//! lookups (ListOffsets by timestamp) need the records, and a batch of 1 MiB can expand to gigabytes
//! (gzip ~1000:1, zstd more). Every codec here stops reading once `cap` bytes have come out and reports
//! an error instead of growing the buffer further.

use std::io::Read;

use bytes::Bytes;
use kafka_protocol::records::Compression;

/// Largest decompressed size of one batch that lookups accept.
pub const MAX_DECOMPRESSED_BATCH: usize = 64 * 1024 * 1024;

/// The xerial-framed snappy header Java clients write (librdkafka reads both forms).
const XERIAL_MAGIC: &[u8; 8] = b"\x82SNAPPY\x00";
const XERIAL_HEADER_LEN: usize = 16;

/// Decompresses `input` with `codec`, failing once the output would exceed `cap` bytes.
pub fn decompress_bounded(input: &[u8], codec: Compression, cap: usize) -> Result<Bytes, String> {
    let out = match codec {
        Compression::None => {
            if input.len() > cap {
                return Err(too_large(cap));
            }
            input.to_vec()
        }
        Compression::Gzip => read_capped(flate2::read::GzDecoder::new(input), cap)?,
        Compression::Lz4 => {
            let d = lz4::Decoder::new(input).map_err(|e| format!("lz4: {e}"))?;
            read_capped(d, cap)?
        }
        Compression::Zstd => {
            let d = zstd::stream::read::Decoder::new(input).map_err(|e| format!("zstd: {e}"))?;
            read_capped(d, cap)?
        }
        Compression::Snappy => snappy(input, cap)?,
    };
    Ok(Bytes::from(out))
}

fn too_large(cap: usize) -> String {
    format!("decompressed batch exceeds the limit of {cap} bytes")
}

fn read_capped(reader: impl Read, cap: usize) -> Result<Vec<u8>, String> {
    let mut out = Vec::new();
    reader
        .take(cap as u64 + 1)
        .read_to_end(&mut out)
        .map_err(|e| format!("decompress: {e}"))?;
    if out.len() > cap {
        return Err(too_large(cap));
    }
    Ok(out)
}

fn snappy(input: &[u8], cap: usize) -> Result<Vec<u8>, String> {
    let mut decoder = snap::raw::Decoder::new();
    let mut out = Vec::new();
    let mut block = |compressed: &[u8], out: &mut Vec<u8>| -> Result<(), String> {
        let len = snap::raw::decompress_len(compressed).map_err(|e| format!("snappy: {e}"))?;
        if out.len() + len > cap {
            return Err(too_large(cap));
        }
        let start = out.len();
        out.resize(start + len, 0);
        decoder
            .decompress(compressed, &mut out[start..])
            .map_err(|e| format!("snappy: {e}"))?;
        Ok(())
    };
    if input.len() >= XERIAL_HEADER_LEN && &input[..8] == XERIAL_MAGIC {
        let mut rest = &input[XERIAL_HEADER_LEN..];
        while !rest.is_empty() {
            if rest.len() < 4 {
                return Err("snappy: truncated xerial block length".into());
            }
            let n = u32::from_be_bytes([rest[0], rest[1], rest[2], rest[3]]) as usize;
            rest = &rest[4..];
            if n > rest.len() {
                return Err("snappy: xerial block longer than the batch".into());
            }
            block(&rest[..n], &mut out)?;
            rest = &rest[n..];
        }
    } else {
        block(input, &mut out)?;
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;

    #[test]
    fn every_codec_round_trips_under_the_cap_and_fails_over_it() {
        let data = vec![7u8; 100_000];
        let gz = {
            let mut e = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
            e.write_all(&data).expect("gzip");
            e.finish().expect("gzip")
        };
        let zs = zstd::encode_all(&data[..], 3).expect("zstd");
        let lz = {
            let mut e = lz4::EncoderBuilder::new().build(Vec::new()).expect("lz4");
            e.write_all(&data).expect("lz4");
            let (v, r) = e.finish();
            r.expect("lz4");
            v
        };
        let sn = snap::raw::Encoder::new()
            .compress_vec(&data)
            .expect("snappy");
        for (codec, bytes) in [
            (Compression::Gzip, &gz),
            (Compression::Zstd, &zs),
            (Compression::Lz4, &lz),
            (Compression::Snappy, &sn),
        ] {
            let out = decompress_bounded(bytes, codec, 200_000).expect("under cap");
            assert_eq!(&out[..], &data[..], "{codec:?}");
            let err = decompress_bounded(bytes, codec, 50_000).expect_err("over cap");
            assert!(err.contains("exceeds"), "{codec:?}: {err}");
        }
    }
}
