//! `consume`: read a topic from the beginning with a `BaseConsumer` that is assigned every partition
//! by hand (no consumer group, no offset commits) and time how fast the records arrive.
//!
//! Before the clock starts the consumer is connected and knows each partition's leader and log start
//! offset (from ListOffsets). The clock starts at `assign` and stops at the last record wanted, so it
//! includes the first fetch round trip ("first record ms").

use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use clap::Args;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::error::KafkaError;
use rdkafka::topic_partition_list::{Offset, TopicPartitionList};
use serde_json::json;

use crate::kafka::{self, BenchContext, ConnectArgs, TopicArgs};
use crate::proc_stats::{self, BrokerSampler};
use crate::report;

/// Flags of `consume`.
#[derive(Args, Debug)]
pub struct ConsumeArgs {
    #[command(flatten)]
    connect: ConnectArgs,
    #[command(flatten)]
    topic: TopicArgs,
    /// Records to read; by default everything between each partition's low and high watermark when
    /// the run starts.
    #[arg(long)]
    count: Option<u64>,
    /// Stop, and fail, when no record has arrived for this many seconds.
    #[arg(long, default_value_t = 30)]
    idle_timeout_secs: u64,
}

/// Settings of a consumer that is assigned partitions by hand and never commits.
pub fn assign_only_settings() -> Vec<(&'static str, String)> {
    vec![
        // librdkafka's assign() needs a group.id, but with explicit start offsets and no commits
        // the group is never joined (no JoinGroup/SyncGroup/OffsetFetch/OffsetCommit); librdkafka
        // may still look up its coordinator in the background. A per-process id keeps runs apart.
        ("group.id", format!("strata-bench-{}", std::process::id())),
        ("enable.auto.commit", "false".to_string()),
        ("enable.auto.offset.store", "false".to_string()),
        ("auto.offset.reset", "earliest".to_string()),
        ("enable.partition.eof", "false".to_string()),
        // When the prefetch queue passes queued.min.messages (100k: only 10 MB of 100 B records)
        // librdkafka postpones that partition's next fetch by this much, 1 s by default, even if
        // the application drains the queue in milliseconds; consuming 100 B records then measured
        // that back-off (about 4x slower), not the broker. 10 ms keeps the memory bound.
        ("fetch.queue.backoff.ms", "10".to_string()),
    ]
}

/// Creates a consumer for `assign`-only use.
pub fn create_consumer(connect: &ConnectArgs) -> Result<BaseConsumer<BenchContext>> {
    connect
        .client_config(&assign_only_settings())
        .create_with_context(BenchContext::new(Instant::now(), Duration::ZERO))
        .context("creating the consumer")
}

/// Runs `consume`.
pub fn run(args: ConsumeArgs) -> Result<()> {
    let partitions = kafka::prepare_topic(&args.connect, &args.topic)?;
    let topic = args.topic.topic.as_str();
    let consumer = create_consumer(&args.connect)?;

    // Start offsets are resolved here rather than left to the fetcher as `Offset::Beginning`: a fresh
    // librdkafka consumer that does not know a partition's leader yet retries its logical-offset
    // lookup after a fixed 500 ms, which would be timed as broker latency. Asking for the
    // watermarks first also teaches the client the leaders.
    let mut assignment = TopicPartitionList::new();
    let mut available = 0u64;
    for p in 0..partitions {
        let (low, high) = consumer
            .fetch_watermarks(topic, p, Duration::from_secs(10))
            .with_context(|| format!("ListOffsets topic={topic} partition={p}"))?;
        available += (high - low).max(0) as u64;
        assignment
            .add_partition_offset(topic, p, Offset::Offset(low))
            .with_context(|| format!("assigning topic={topic} partition={p}"))?;
    }
    let count = args.count.unwrap_or(available);
    if count == 0 {
        bail!("nothing to consume: topic {topic} is empty (or pass --count)");
    }
    if count > available {
        eprintln!("topic {topic} holds {available} records now; waiting for {count}");
    }

    let broker = args
        .connect
        .broker_pid
        .map(BrokerSampler::start)
        .transpose()?;
    let client_cpu_before = proc_stats::self_cpu_secs();
    let started = Instant::now();
    consumer.assign(&assignment).context("assign")?;

    let idle_timeout = Duration::from_secs(args.idle_timeout_secs);
    let mut received = 0u64;
    let mut bytes = 0u64;
    let mut errors = 0u64;
    let mut first_error: Option<String> = None;
    let mut last_progress = Instant::now();
    let mut first_record_at: Option<Duration> = None;
    while received < count {
        match consumer.poll(Duration::from_millis(100)) {
            Some(Ok(message)) => {
                received += 1;
                bytes += message.payload_len() as u64;
                last_progress = Instant::now();
                if first_record_at.is_none() {
                    first_record_at = Some(started.elapsed());
                }
            }
            Some(Err(KafkaError::PartitionEOF(_))) => {}
            Some(Err(e)) => {
                errors += 1;
                first_error.get_or_insert_with(|| e.to_string());
            }
            None => {
                if last_progress.elapsed() >= idle_timeout {
                    break;
                }
            }
        }
    }
    let elapsed = started.elapsed().as_secs_f64();
    let client_cpu = client_cpu_before
        .zip(proc_stats::self_cpu_secs())
        .map(|(a, b)| b - a);
    let broker = broker.map(|b| b.finish(bytes)).transpose()?;
    let (msgs_per_sec, mb_per_sec) = report::rates(received, bytes, elapsed);

    println!(
        "consume topic={topic} partitions={partitions}: {received}/{count} records, {bytes} bytes in \
         {elapsed:.2}s = {msgs_per_sec:.0} msg/s, {mb_per_sec:.1} MB/s; first record after {:.1} ms; \
         {errors} errors",
        first_record_at.map(|d| d.as_secs_f64() * 1e3).unwrap_or(f64::NAN)
    );
    if let Some(b) = &broker {
        println!("{}", b.human());
    }
    let ok = received >= count;
    report::emit(json!({
        "bench": "consume",
        "ok": ok,
        "bootstrap": args.connect.bootstrap,
        "topic": topic,
        "partitions": partitions,
        "count": count,
        "consumed": received,
        "bytes": bytes,
        "record_size": bytes.checked_div(received).unwrap_or(0),
        "errors": errors,
        "first_error": first_error,
        "first_record_ms": first_record_at.map(|d| d.as_secs_f64() * 1e3),
        "elapsed_secs": elapsed,
        "msgs_per_sec": msgs_per_sec,
        "mb_per_sec": mb_per_sec,
        "client_cpu_secs": client_cpu,
        "broker": broker.as_ref().map(|b| b.to_json()),
    }));
    if !ok {
        bail!(
            "consume incomplete: {received} of {count} records before {}s without progress (first error: {})",
            args.idle_timeout_secs,
            first_error.unwrap_or_else(|| "none".to_string())
        );
    }
    Ok(())
}
