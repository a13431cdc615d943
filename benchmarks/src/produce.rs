//! `produce`: push `--count` records as fast as librdkafka will take them, and time each one from the
//! `send` call to its delivery report.
//!
//! The run ends when every record has a delivery report (`flush`). Throughput is records delivered
//! over that whole time. Latency is measured from the first attempt to enqueue a record (so it
//! includes waiting for room in librdkafka's queue, as the Java `ProducerPerformance` tool does) to
//! its delivery report: in a saturating run it is mostly queueing, by Little's law; the `e2e`
//! subcommand measures latency at a fixed, sub-saturation rate.

use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use clap::Args;
use rdkafka::error::KafkaError;
use rdkafka::producer::{BaseRecord, Producer, ThreadedProducer};
use rdkafka::types::RDKafkaErrorCode;
use serde_json::json;

use crate::kafka::{self, Acks, BenchContext, Compression, ConnectArgs, TopicArgs};
use crate::payload::{PayloadGen, PayloadKind};
use crate::proc_stats::{self, BrokerSampler};
use crate::report;

/// Flags of `produce`.
#[derive(Args, Debug)]
pub struct ProduceArgs {
    #[command(flatten)]
    connect: ConnectArgs,
    #[command(flatten)]
    topic: TopicArgs,
    #[command(flatten)]
    producer: ProducerSettings,
    /// Payload bytes per record (no key, no headers).
    #[arg(long, default_value_t = 1024)]
    record_size: usize,
    /// Number of records to send.
    #[arg(long, default_value_t = 1_000_000)]
    count: u64,
    /// Give up waiting for outstanding delivery reports after this many seconds.
    #[arg(long, default_value_t = 300)]
    timeout_secs: u64,
}

/// Producer tuning shared by `produce` and `e2e`.
#[derive(Args, Debug, Clone)]
pub struct ProducerSettings {
    /// Acknowledgements the producer waits for.
    #[arg(long, value_enum, default_value = "all")]
    pub acks: Acks,
    /// Batch compression codec.
    #[arg(long, value_enum, default_value = "none")]
    pub compression: Compression,
    /// `linger.ms`: how long a batch may wait for more records [default: 5 (librdkafka's) for
    /// `produce`, 0 for `e2e`].
    #[arg(long)]
    pub linger_ms: Option<u64>,
    /// `batch.size`: upper bound of a partition batch in bytes.
    #[arg(long, default_value_t = 1_000_000)]
    pub batch_size: u64,
    /// What the payload bytes look like.
    #[arg(long, value_enum, default_value = "random")]
    pub payload: PayloadKind,
}

impl ProducerSettings {
    /// Fills in the subcommand's default `linger.ms` where the flag was not given.
    pub fn with_default_linger_ms(mut self, linger_ms: u64) -> Self {
        self.linger_ms.get_or_insert(linger_ms);
        self
    }

    /// The librdkafka settings these flags stand for.
    pub fn client_settings(&self) -> Vec<(&'static str, String)> {
        let mut settings = vec![
            ("acks", self.acks.as_str().to_string()),
            ("compression.type", self.compression.as_str().to_string()),
            ("batch.size", self.batch_size.to_string()),
            // The broker under test decides how fast it goes; a record that cannot be delivered in
            // five minutes is a failure of the run.
            ("message.timeout.ms", "300000".to_string()),
        ];
        if let Some(linger_ms) = self.linger_ms {
            settings.push(("linger.ms", linger_ms.to_string()));
        }
        settings
    }

    /// The flags as `RESULT` fields.
    pub fn to_json(&self) -> serde_json::Value {
        json!({
            "acks": self.acks.as_str(),
            "compression": self.compression.as_str(),
            "linger_ms": self.linger_ms,
            "batch_size": self.batch_size,
            "payload": self.payload.as_str(),
        })
    }
}

/// Creates a threaded producer (its own thread serves delivery reports) whose clock starts now.
pub fn create_producer(
    connect: &ConnectArgs,
    settings: &ProducerSettings,
    warmup: Duration,
) -> Result<ThreadedProducer<BenchContext>> {
    let context = BenchContext::new(Instant::now(), warmup);
    connect
        .client_config(&settings.client_settings())
        .create_with_context(context)
        .with_context(|| {
            format!(
                "creating a producer with acks={} compression={}",
                settings.acks.as_str(),
                settings.compression.as_str()
            )
        })
}

/// Enqueues one record, waiting while librdkafka's queue is full. `sent_at_nanos` is the delivery
/// opaque (see `BenchContext`).
pub fn send_blocking(
    producer: &ThreadedProducer<BenchContext>,
    topic: &str,
    partition: i32,
    payload: &[u8],
    sent_at_nanos: u64,
) -> Result<()> {
    let mut record = BaseRecord::with_opaque_to(topic, sent_at_nanos as usize)
        .partition(partition)
        .payload(payload);
    loop {
        match producer.send::<[u8], [u8]>(record) {
            Ok(()) => return Ok(()),
            Err((KafkaError::MessageProduction(RDKafkaErrorCode::QueueFull), returned)) => {
                record = returned;
                std::thread::sleep(Duration::from_micros(200));
            }
            Err((e, _)) => {
                bail!("enqueueing a record for topic={topic} partition={partition}: {e}")
            }
        }
    }
}

/// Runs `produce`.
pub fn run(mut args: ProduceArgs) -> Result<()> {
    args.producer = args.producer.with_default_linger_ms(5);
    if args.count == 0 {
        bail!("--count must be at least 1");
    }
    // The producer first: librdkafka rejects bad settings (a mistyped -X key) at creation.
    let producer = create_producer(&args.connect, &args.producer, Duration::ZERO)?;
    let partitions = kafka::prepare_topic(&args.connect, &args.topic)?;
    let topic = args.topic.topic.as_str();
    kafka::wait_for_partitions(producer.client(), topic, partitions)?;

    let broker = args
        .connect
        .broker_pid
        .map(BrokerSampler::start)
        .transpose()?;
    let client_cpu_before = proc_stats::self_cpu_secs();
    let stats = &producer.context().stats;
    let mut payloads = PayloadGen::new(args.producer.payload, 0x5EED);
    let mut payload = vec![0u8; args.record_size];

    let started = Instant::now();
    for i in 0..args.count {
        payloads.fill(&mut payload);
        let partition = (i % partitions as u64) as i32;
        send_blocking(&producer, topic, partition, &payload, stats.now_nanos())?;
    }
    let enqueued_secs = started.elapsed().as_secs_f64();
    let flushed = producer.flush(Duration::from_secs(args.timeout_secs));
    let elapsed = started.elapsed().as_secs_f64();
    let client_cpu = client_cpu_before
        .zip(proc_stats::self_cpu_secs())
        .map(|(a, b)| b - a);

    let delivered = stats.delivered();
    let failed = stats.failed();
    let bytes = delivered * args.record_size as u64;
    let broker = broker.map(|b| b.finish(bytes)).transpose()?;
    let (msgs_per_sec, mb_per_sec) = report::rates(delivered, bytes, elapsed);
    let latency = stats.latency();

    println!(
        "produce topic={topic} partitions={partitions} record_size={} acks={} compression={}: \
         {delivered}/{} delivered in {elapsed:.2}s = {msgs_per_sec:.0} msg/s, {mb_per_sec:.1} MB/s; \
         send->ack {}",
        args.record_size,
        args.producer.acks.as_str(),
        args.producer.compression.as_str(),
        args.count,
        report::latency_human(&latency),
    );
    if let Some(b) = &broker {
        println!("{}", b.human());
    }
    let ok = failed == 0 && delivered == args.count && flushed.is_ok();
    report::emit(json!({
        "bench": "produce",
        "ok": ok,
        "bootstrap": args.connect.bootstrap,
        "topic": topic,
        "partitions": partitions,
        "record_size": args.record_size,
        "count": args.count,
        "producer": args.producer.to_json(),
        "delivered": delivered,
        "failed": failed,
        "first_error": stats.first_error(),
        "enqueue_secs": enqueued_secs,
        "elapsed_secs": elapsed,
        "msgs_per_sec": msgs_per_sec,
        "mb_per_sec": mb_per_sec,
        "latency_ms": report::latency_json(&latency),
        "client_cpu_secs": client_cpu,
        "broker": broker.as_ref().map(|b| b.to_json()),
    }));
    if !ok {
        bail!(
            "produce incomplete: delivered={delivered} failed={failed} of count={} (first error: {}){}",
            args.count,
            stats.first_error().unwrap_or_else(|| "none".to_string()),
            flushed.err().map(|e| format!("; flush: {e}")).unwrap_or_default()
        );
    }
    Ok(())
}
