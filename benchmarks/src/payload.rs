//! Record payloads: fresh bytes for every record, so neither the broker nor a compression codec sees
//! the same record twice.

use clap::ValueEnum;

/// What the bytes of a generated record look like.
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum PayloadKind {
    /// Uniformly random bytes: incompressible, the worst case for the network and the best case for
    /// measuring a broker's raw byte throughput.
    Random,
    /// Space-separated words drawn at random from a small vocabulary, roughly as compressible as
    /// application log lines (gzip shrinks it about 3x).
    Text,
}

impl PayloadKind {
    /// The name used on the command line and in `RESULT` lines.
    pub fn as_str(self) -> &'static str {
        match self {
            PayloadKind::Random => "random",
            PayloadKind::Text => "text",
        }
    }
}

const WORDS: &[&[u8]] = &[
    b"GET",
    b"POST",
    b"PUT",
    b"DELETE",
    b"/api/v1/orders",
    b"/api/v1/users",
    b"/health",
    b"/metrics",
    b"status=200",
    b"status=201",
    b"status=404",
    b"status=500",
    b"user_id=",
    b"order_id=",
    b"latency_ms=",
    b"region=eu-west-1",
    b"region=us-east-1",
    b"level=INFO",
    b"level=WARN",
    b"level=ERROR",
    b"service=checkout",
    b"service=payments",
    b"service=inventory",
    b"trace_id=",
    b"span_id=",
    b"retrying",
    b"connection",
    b"timeout",
    b"accepted",
    b"committed",
    b"0",
    b"1",
    b"2",
    b"3",
    b"4",
    b"5",
    b"6",
    b"7",
    b"8",
    b"9",
    b"a",
    b"b",
    b"c",
    b"d",
    b"e",
    b"f",
];

/// A deterministic generator of record payloads (xorshift64*; the seed is printed by callers that
/// care, but nothing here depends on the exact bytes).
pub struct PayloadGen {
    kind: PayloadKind,
    state: u64,
}

impl PayloadGen {
    /// A generator of `kind` payloads seeded with `seed` (0 is replaced by a fixed non-zero seed).
    pub fn new(kind: PayloadKind, seed: u64) -> Self {
        let state = if seed == 0 {
            0x9E37_79B9_7F4A_7C15
        } else {
            seed
        };
        PayloadGen { kind, state }
    }

    fn next_u64(&mut self) -> u64 {
        let mut x = self.state;
        x ^= x >> 12;
        x ^= x << 25;
        x ^= x >> 27;
        self.state = x;
        x.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }

    /// Overwrites all of `buf` with a new payload.
    pub fn fill(&mut self, buf: &mut [u8]) {
        match self.kind {
            PayloadKind::Random => {
                let mut chunks = buf.chunks_exact_mut(8);
                for chunk in &mut chunks {
                    chunk.copy_from_slice(&self.next_u64().to_le_bytes());
                }
                let tail = chunks.into_remainder();
                let last = self.next_u64().to_le_bytes();
                let n = tail.len();
                tail.copy_from_slice(&last[..n]);
            }
            PayloadKind::Text => {
                let mut pos = 0;
                while pos < buf.len() {
                    let r = self.next_u64();
                    let word = WORDS[(r % WORDS.len() as u64) as usize];
                    let n = word.len().min(buf.len() - pos);
                    buf[pos..pos + n].copy_from_slice(&word[..n]);
                    pos += n;
                    if pos < buf.len() {
                        buf[pos] = b' ';
                        pos += 1;
                    }
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fills_every_byte_and_differs_between_records() {
        for kind in [PayloadKind::Random, PayloadKind::Text] {
            let mut gen = PayloadGen::new(kind, 7);
            for len in [0usize, 1, 7, 8, 9, 100, 1024] {
                let mut a = vec![0xAAu8; len];
                let mut b = vec![0xAAu8; len];
                gen.fill(&mut a);
                gen.fill(&mut b);
                assert_eq!(a.len(), len);
                if len >= 64 {
                    assert_ne!(a, b, "{kind:?} len={len} produced identical records");
                }
            }
        }
    }
}
