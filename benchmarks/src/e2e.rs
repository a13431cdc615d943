//! `e2e`: produce at a fixed rate and measure, for every record, the time from when it was due to be
//! sent to when a consumer in the same process received it.
//!
//! Each record's payload starts with its scheduled send time (8 bytes, nanoseconds since the run's
//! clock started, little endian) and a run id (8 bytes) so that records from other runs in the same
//! topic are ignored. The timestamp is the *scheduled* time, not the moment `send` ran: when the
//! producer falls behind its schedule the delay counts against the latency instead of silently
//! lowering the offered load (no coordinated omission). The consumer is assigned every partition at
//! its high watermark before the first record is sent, so it sees every record of the run.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use anyhow::{bail, Context, Result};
use clap::Args;
use hdrhistogram::Histogram;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::message::Message;
use rdkafka::producer::Producer;
use rdkafka::topic_partition_list::{Offset, TopicPartitionList};
use serde_json::json;

use crate::consume;
use crate::kafka::{self, BenchContext, ConnectArgs, TopicArgs};
use crate::payload::PayloadGen;
use crate::proc_stats::{self, BrokerSampler};
use crate::produce::{self, ProducerSettings};
use crate::report;

/// Bytes at the start of every payload: scheduled send time and run id.
const HEADER_LEN: usize = 16;

/// Flags of `e2e`.
#[derive(Args, Debug)]
pub struct E2eArgs {
    #[command(flatten)]
    connect: ConnectArgs,
    #[command(flatten)]
    topic: TopicArgs,
    #[command(flatten)]
    producer: ProducerSettings,
    /// Records per second offered by the producer.
    #[arg(long)]
    rate: f64,
    /// How long to produce.
    #[arg(long, default_value_t = 30)]
    duration_secs: u64,
    /// Leading seconds whose records are sent but not counted in the latency figures.
    #[arg(long, default_value_t = 1)]
    warmup_secs: u64,
    /// Payload bytes per record (at least 16).
    #[arg(long, default_value_t = 1024)]
    record_size: usize,
    /// After the last send, how long to wait for the consumer to catch up.
    #[arg(long, default_value_t = 60)]
    drain_timeout_secs: u64,
}

/// What the consumer thread saw.
struct ConsumerOutcome {
    latency: Histogram<u64>,
    consumed: u64,
    foreign: u64,
    errors: u64,
    first_error: Option<String>,
}

/// Runs `e2e`.
pub fn run(mut args: E2eArgs) -> Result<()> {
    args.producer = args.producer.with_default_linger_ms(0);
    if !(args.rate.is_finite() && args.rate > 0.0) {
        bail!(
            "--rate must be a positive number of records per second, got {}",
            args.rate
        );
    }
    if args.record_size < HEADER_LEN {
        bail!(
            "--record-size must be at least {HEADER_LEN} (timestamp and run id), got {}",
            args.record_size
        );
    }
    if args.warmup_secs >= args.duration_secs {
        bail!(
            "--warmup-secs {} leaves nothing of --duration-secs {}",
            args.warmup_secs,
            args.duration_secs
        );
    }
    // The producer first: librdkafka rejects bad settings (a mistyped -X key) at creation.
    let producer = produce::create_producer(&args.connect, &args.producer, Duration::ZERO)?;
    let partitions = kafka::prepare_topic(&args.connect, &args.topic)?;
    let topic = args.topic.topic.clone();
    let run_id = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_nanos() as u64)
        .unwrap_or(1)
        | 1;

    kafka::wait_for_partitions(producer.client(), &topic, partitions)?;
    let stats = &producer.context().stats;

    // Assign the consumer at the current end of every partition before anything is sent.
    let consumer = consume::create_consumer(&args.connect)?;
    let mut assignment = TopicPartitionList::new();
    for p in 0..partitions {
        let (_, high) = consumer
            .fetch_watermarks(&topic, p, Duration::from_secs(10))
            .with_context(|| format!("ListOffsets topic={topic} partition={p}"))?;
        assignment
            .add_partition_offset(&topic, p, Offset::Offset(high))
            .with_context(|| format!("assigning topic={topic} partition={p}"))?;
    }
    consumer.assign(&assignment).context("assign")?;

    let duration = Duration::from_secs(args.duration_secs);
    let total = (args.rate * duration.as_secs_f64()).round() as u64;
    let interval_nanos = 1e9 / args.rate;
    let start_nanos = stats.now_nanos();
    let warmup_until = start_nanos + Duration::from_secs(args.warmup_secs).as_nanos() as u64;
    stats.record_from(warmup_until);

    // u64::MAX until the producer knows how many records were delivered.
    let expected = Arc::new(AtomicU64::new(u64::MAX));
    let consumer_thread = {
        let expected = Arc::clone(&expected);
        let clock = stats.start();
        let drain_timeout = Duration::from_secs(args.drain_timeout_secs);
        std::thread::Builder::new()
            .name("e2e-consumer".into())
            .spawn(move || {
                consume_loop(
                    consumer,
                    clock,
                    run_id,
                    warmup_until,
                    &expected,
                    drain_timeout,
                )
            })
            .context("starting the consumer thread")?
    };

    let broker = args
        .connect
        .broker_pid
        .map(BrokerSampler::start)
        .transpose()?;
    let client_cpu_before = proc_stats::self_cpu_secs();
    let mut payloads = PayloadGen::new(args.producer.payload, run_id);
    let mut payload = vec![0u8; args.record_size];
    let mut max_lag_nanos = 0u64;
    let wall_start = Instant::now();
    let mut send_result = Ok(());
    for i in 0..total {
        let due = start_nanos + (i as f64 * interval_nanos) as u64;
        let mut now = stats.now_nanos();
        if due > now + 100_000 {
            std::thread::sleep(Duration::from_nanos(due - now));
            now = stats.now_nanos();
        }
        max_lag_nanos = max_lag_nanos.max(now.saturating_sub(due));
        // Late: the schedule's time, so the lag counts. Early (within the 100 us not slept): now.
        let stamp = now.min(due);
        payloads.fill(&mut payload[HEADER_LEN..]);
        payload[..8].copy_from_slice(&stamp.to_le_bytes());
        payload[8..16].copy_from_slice(&run_id.to_le_bytes());
        let partition = (i % partitions as u64) as i32;
        if let Err(e) = produce::send_blocking(&producer, &topic, partition, &payload, stamp) {
            send_result = Err(e);
            break;
        }
    }
    let send_secs = wall_start.elapsed().as_secs_f64();
    let flushed = producer.flush(Duration::from_secs(args.drain_timeout_secs));
    let delivered = stats.delivered();
    expected.store(delivered, Ordering::Release);
    let outcome = consumer_thread
        .join()
        .map_err(|_| anyhow::anyhow!("the consumer thread panicked"))?;
    let elapsed = wall_start.elapsed().as_secs_f64();
    let client_cpu = client_cpu_before
        .zip(proc_stats::self_cpu_secs())
        .map(|(a, b)| b - a);
    let bytes = delivered * args.record_size as u64;
    let broker = broker.map(|b| b.finish(bytes)).transpose()?;
    send_result?;

    let failed = stats.failed();
    let ack_latency = stats.latency();
    let achieved_rate = total as f64 / send_secs.max(1e-9);
    println!(
        "e2e topic={topic} partitions={partitions} record_size={} acks={}: offered {:.0} msg/s, sent \
         {total} at {achieved_rate:.0} msg/s (max schedule lag {:.1} ms), delivered {delivered}, consumed {}",
        args.record_size,
        args.producer.acks.as_str(),
        args.rate,
        max_lag_nanos as f64 / 1e6,
        outcome.consumed,
    );
    println!(
        "  produce->consume {}",
        report::latency_human(&outcome.latency)
    );
    println!("  send->ack        {}", report::latency_human(&ack_latency));
    if let Some(b) = &broker {
        println!("{}", b.human());
    }
    let ok = failed == 0 && delivered == total && outcome.consumed >= delivered && flushed.is_ok();
    report::emit(json!({
        "bench": "e2e",
        "ok": ok,
        "bootstrap": args.connect.bootstrap,
        "topic": topic,
        "partitions": partitions,
        "record_size": args.record_size,
        "producer": args.producer.to_json(),
        "target_rate": args.rate,
        "duration_secs": args.duration_secs,
        "warmup_secs": args.warmup_secs,
        "sent": total,
        "achieved_rate": achieved_rate,
        "max_schedule_lag_ms": max_lag_nanos as f64 / 1e6,
        "delivered": delivered,
        "failed": failed,
        "first_error": stats.first_error().or(outcome.first_error.clone()),
        "consumed": outcome.consumed,
        "foreign_records": outcome.foreign,
        "consumer_errors": outcome.errors,
        "elapsed_secs": elapsed,
        "e2e_latency_ms": report::latency_json(&outcome.latency),
        "ack_latency_ms": report::latency_json(&ack_latency),
        "client_cpu_secs": client_cpu,
        "broker": broker.as_ref().map(|b| b.to_json()),
    }));
    if !ok {
        bail!(
            "e2e incomplete: sent={total} delivered={delivered} failed={failed} consumed={} (first error: {})",
            outcome.consumed,
            stats.first_error().or(outcome.first_error).unwrap_or_else(|| "none".to_string())
        );
    }
    Ok(())
}

fn consume_loop(
    consumer: BaseConsumer<BenchContext>,
    clock: Instant,
    run_id: u64,
    warmup_until: u64,
    expected: &AtomicU64,
    drain_timeout: Duration,
) -> ConsumerOutcome {
    let mut outcome = ConsumerOutcome {
        latency: report::new_latency_histogram(),
        consumed: 0,
        foreign: 0,
        errors: 0,
        first_error: None,
    };
    let mut last_progress = Instant::now();
    loop {
        let target = expected.load(Ordering::Acquire);
        if outcome.consumed >= target {
            break;
        }
        if target != u64::MAX && last_progress.elapsed() >= drain_timeout {
            break;
        }
        match consumer.poll(Duration::from_millis(50)) {
            Some(Ok(message)) => {
                let received = clock.elapsed().as_nanos() as u64;
                last_progress = Instant::now();
                let Some(payload) = message.payload().filter(|p| p.len() >= HEADER_LEN) else {
                    outcome.foreign += 1;
                    continue;
                };
                let field = |range: std::ops::Range<usize>| {
                    u64::from_le_bytes(
                        payload[range]
                            .try_into()
                            .expect("an 8-byte range of a 16+ byte payload"),
                    )
                };
                if field(8..16) != run_id {
                    outcome.foreign += 1;
                    continue;
                }
                outcome.consumed += 1;
                let sent = field(0..8);
                if sent >= warmup_until {
                    report::record_latency_nanos(
                        &mut outcome.latency,
                        received.saturating_sub(sent),
                    );
                }
            }
            Some(Err(e)) => {
                outcome.errors += 1;
                outcome.first_error.get_or_insert_with(|| e.to_string());
            }
            None => {}
        }
    }
    outcome
}
