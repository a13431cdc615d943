//! `tcp-ceiling`: the fastest this machine moves the same records over loopback TCP with no broker
//! in the way, the physical ceiling each broker figure is compared with.
//!
//! A server thread accepts one connection, reads length-prefixed frames and discards them; the
//! client writes `--count` records as frames of `--batch-bytes` (each record itself length-prefixed,
//! as in a Kafka record batch). No acknowledgements, no disk, no copies beyond the socket: a broker
//! must do at least this much work per byte, so `broker / ceiling` is the share of the machine's
//! loopback bandwidth the broker achieves. Client and server share the machine's cores, as a local
//! broker and its benchmark client do.

use std::io::{self, BufWriter, Read, Write};
use std::net::{Shutdown, TcpListener, TcpStream};
use std::time::Instant;

use anyhow::{bail, Context, Result};
use clap::Args;
use serde_json::json;

use crate::payload::{PayloadGen, PayloadKind};
use crate::report;

/// Flags of `tcp-ceiling`.
#[derive(Args, Debug)]
pub struct TcpCeilingArgs {
    /// Payload bytes per record.
    #[arg(long, default_value_t = 1024)]
    record_size: usize,
    /// Number of records to send.
    #[arg(long, default_value_t = 1_000_000)]
    count: u64,
    /// Target frame size in bytes; a frame holds as many whole records as fit (at least one).
    #[arg(long, default_value_t = 1_000_000)]
    batch_bytes: usize,
    /// Send the `--count` records again until at least this many seconds have passed, so that a
    /// short run is not dominated by start-up noise; throughput counts every pass.
    #[arg(long, default_value_t = 2.0)]
    min_secs: f64,
}

/// Bytes of the length prefix of a frame and of a record.
const PREFIX: usize = 4;

/// Reads frames until the client closes; returns (frames, frame payload bytes).
fn sink(listener: TcpListener, max_frame: usize) -> Result<(u64, u64)> {
    let (mut stream, _) = listener.accept().context("accepting the client")?;
    stream.set_nodelay(true).context("TCP_NODELAY")?;
    let mut header = [0u8; PREFIX];
    let mut buf = vec![0u8; max_frame];
    let (mut frames, mut bytes) = (0u64, 0u64);
    loop {
        match stream.read_exact(&mut header) {
            Ok(()) => {}
            Err(e) if e.kind() == io::ErrorKind::UnexpectedEof => return Ok((frames, bytes)),
            Err(e) => return Err(e).context("reading a frame header"),
        }
        let len = u32::from_be_bytes(header) as usize;
        if len > max_frame {
            bail!("frame of {len} bytes exceeds the agreed maximum {max_frame}");
        }
        stream
            .read_exact(&mut buf[..len])
            .context("reading a frame")?;
        frames += 1;
        bytes += len as u64;
    }
}

/// Builds a frame of `records` records of `record_size` bytes each.
fn build_frame(records: usize, record_size: usize, payloads: &mut PayloadGen) -> Vec<u8> {
    let body = records * (PREFIX + record_size);
    let mut frame = Vec::with_capacity(PREFIX + body);
    frame.extend_from_slice(&(body as u32).to_be_bytes());
    let mut record = vec![0u8; record_size];
    for _ in 0..records {
        payloads.fill(&mut record);
        frame.extend_from_slice(&(record_size as u32).to_be_bytes());
        frame.extend_from_slice(&record);
    }
    frame
}

/// Runs `tcp-ceiling`.
pub fn run(args: TcpCeilingArgs) -> Result<()> {
    if args.count == 0 || args.record_size == 0 {
        bail!("--count and --record-size must be at least 1");
    }
    let per_frame = (args.batch_bytes / (PREFIX + args.record_size)).max(1);
    let max_frame = per_frame * (PREFIX + args.record_size);
    if max_frame > u32::MAX as usize {
        bail!(
            "--batch-bytes {} makes frames larger than 4 GiB",
            args.batch_bytes
        );
    }

    let listener = TcpListener::bind("127.0.0.1:0").context("binding a loopback port")?;
    let addr = listener.local_addr().context("local address")?;
    let server = std::thread::Builder::new()
        .name("tcp-sink".into())
        .spawn(move || sink(listener, max_frame))
        .context("starting the sink thread")?;

    // Frames are built before the clock starts: the ceiling is the transport, not payload generation.
    let mut payloads = PayloadGen::new(PayloadKind::Random, 0x5EED);
    let full_frame = build_frame(per_frame, args.record_size, &mut payloads);
    let full_frames = args.count / per_frame as u64;
    let rest = (args.count % per_frame as u64) as usize;
    let last_frame = (rest > 0).then(|| build_frame(rest, args.record_size, &mut payloads));

    let stream =
        TcpStream::connect(addr).with_context(|| format!("connecting to the sink at {addr}"))?;
    stream.set_nodelay(true).context("TCP_NODELAY")?;
    let started = Instant::now();
    let mut writer = BufWriter::with_capacity(1 << 16, &stream);
    let mut passes = 0u64;
    loop {
        for _ in 0..full_frames {
            writer.write_all(&full_frame).context("writing a frame")?;
        }
        if let Some(frame) = &last_frame {
            writer.write_all(frame).context("writing the last frame")?;
        }
        passes += 1;
        if started.elapsed().as_secs_f64() >= args.min_secs {
            break;
        }
    }
    writer.flush().context("flushing")?;
    drop(writer);
    stream
        .shutdown(Shutdown::Write)
        .context("closing the write side")?;
    let (frames, frame_bytes) = server
        .join()
        .map_err(|_| anyhow::anyhow!("the sink thread panicked"))??;
    let elapsed = started.elapsed().as_secs_f64();

    let expected_frames = passes * (full_frames + u64::from(last_frame.is_some()));
    if frames != expected_frames {
        bail!("sink read {frames} frames, expected {expected_frames}");
    }
    let records = passes * args.count;
    let payload_bytes = records * args.record_size as u64;
    let wire_bytes = frame_bytes + frames * PREFIX as u64;
    let (msgs_per_sec, mb_per_sec) = report::rates(records, payload_bytes, elapsed);
    let wire_mb_per_sec = wire_bytes as f64 / 1e6 / elapsed.max(1e-9);
    println!(
        "tcp-ceiling record_size={} records={records} ({passes} passes of {}) records_per_frame={per_frame}: \
         {elapsed:.3}s = {msgs_per_sec:.0} msg/s, {mb_per_sec:.1} MB/s payload ({wire_mb_per_sec:.1} MB/s on the wire)",
        args.record_size, args.count
    );
    report::emit(json!({
        "bench": "tcp-ceiling",
        "ok": true,
        "record_size": args.record_size,
        "count": args.count,
        "passes": passes,
        "records": records,
        "batch_bytes": args.batch_bytes,
        "records_per_frame": per_frame,
        "frames": frames,
        "elapsed_secs": elapsed,
        "msgs_per_sec": msgs_per_sec,
        "mb_per_sec": mb_per_sec,
        "wire_mb_per_sec": wire_mb_per_sec,
    }));
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn frame_layout() {
        let mut payloads = PayloadGen::new(PayloadKind::Random, 1);
        let frame = build_frame(3, 10, &mut payloads);
        assert_eq!(frame.len(), PREFIX + 3 * (PREFIX + 10));
        assert_eq!(
            u32::from_be_bytes(frame[..4].try_into().expect("4 bytes")) as usize,
            3 * 14
        );
        assert_eq!(
            u32::from_be_bytes(frame[4..8].try_into().expect("4 bytes")),
            10
        );
    }

    #[test]
    fn small_run_moves_every_frame() {
        run(TcpCeilingArgs {
            record_size: 100,
            count: 1_001,
            batch_bytes: 1_000,
            min_secs: 0.0,
        })
        .expect("loopback run");
    }
}
