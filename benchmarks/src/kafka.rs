//! What every Kafka-speaking subcommand shares: connection flags, topic preparation, and the
//! librdkafka client context that counts deliveries and surfaces client errors on stderr.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use clap::{Args, ValueEnum};
use hdrhistogram::Histogram;
use rdkafka::admin::{AdminClient, AdminOptions, NewTopic, TopicReplication};
use rdkafka::client::{Client, ClientContext, DefaultClientContext};
use rdkafka::config::{ClientConfig, RDKafkaLogLevel};
use rdkafka::consumer::ConsumerContext;
use rdkafka::error::KafkaError;
use rdkafka::producer::{DeliveryResult, ProducerContext};
use rdkafka::types::RDKafkaErrorCode;

use crate::report;

/// How to reach the cluster, shared by `produce`, `consume` and `e2e`.
#[derive(Args, Debug, Clone)]
pub struct ConnectArgs {
    /// Bootstrap servers, `HOST:PORT[,HOST:PORT…]`.
    #[arg(long)]
    pub bootstrap: String,
    /// Extra librdkafka property `KEY=VALUE` for every client of the run, applied last so it
    /// overrides the harness's own settings (repeatable), e.g. `-X fetch.wait.max.ms=100`;
    /// `-X debug=fetch,protocol` also prints every librdkafka log line.
    #[arg(short = 'X', long = "config", value_parser = parse_key_value)]
    pub config: Vec<(String, String)>,
    /// Process id of the broker, when it runs on this machine: report its CPU seconds, CPU seconds
    /// per GB and peak RSS for the run.
    #[arg(long)]
    pub broker_pid: Option<u32>,
}

fn parse_key_value(s: &str) -> Result<(String, String), String> {
    match s.split_once('=') {
        Some((k, v)) if !k.is_empty() => Ok((k.to_string(), v.to_string())),
        _ => Err(format!("expected KEY=VALUE, got {s:?}")),
    }
}

impl ConnectArgs {
    /// A client config with the bootstrap servers; `role` settings go in `settings`, and the user's
    /// `-X` overrides are applied after them.
    pub fn client_config(&self, settings: &[(&str, String)]) -> ClientConfig {
        let mut config = ClientConfig::new();
        config.set("bootstrap.servers", &self.bootstrap);
        config.set("client.id", "strata-bench");
        for (k, v) in settings {
            config.set(*k, v);
        }
        for (k, v) in &self.config {
            config.set(k, v);
            if k == "debug" {
                VERBOSE.store(true, Ordering::Relaxed);
            }
        }
        config
    }
}

/// Which topic to use and whether to create it.
#[derive(Args, Debug, Clone)]
pub struct TopicArgs {
    /// Topic to use.
    #[arg(long)]
    pub topic: String,
    /// Number of partitions to spread records over (and to create with `--create-topic`); by default
    /// all partitions the topic has.
    #[arg(long)]
    pub partitions: Option<i32>,
    /// Create the topic first with `--partitions` partitions (an existing topic is accepted).
    #[arg(long)]
    pub create_topic: bool,
    /// Replication factor for `--create-topic`.
    #[arg(long, default_value_t = 1)]
    pub replication_factor: i32,
}

/// `acks` of the producer.
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum Acks {
    /// Fire and forget: the delivery report fires once the request is written.
    #[value(name = "0")]
    Zero,
    /// The leader has appended the batch.
    #[value(name = "1")]
    One,
    /// Every in-sync replica has the batch.
    #[value(name = "all", alias = "-1")]
    All,
}

impl Acks {
    /// The librdkafka value and the name used in `RESULT` lines.
    pub fn as_str(self) -> &'static str {
        match self {
            Acks::Zero => "0",
            Acks::One => "1",
            Acks::All => "all",
        }
    }
}

/// `compression.type` of the producer.
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum Compression {
    /// No compression.
    None,
    /// gzip.
    Gzip,
    /// snappy.
    Snappy,
    /// lz4.
    Lz4,
    /// zstd (needs librdkafka built with zstd; see README).
    Zstd,
}

impl Compression {
    /// The librdkafka value and the name used in `RESULT` lines.
    pub fn as_str(self) -> &'static str {
        match self {
            Compression::None => "none",
            Compression::Gzip => "gzip",
            Compression::Snappy => "snappy",
            Compression::Lz4 => "lz4",
            Compression::Zstd => "zstd",
        }
    }
}

/// Client errors and warnings are printed to stderr, but only the first few: a broker that is down
/// makes librdkafka repeat the same complaint many times a second.
const MAX_PRINTED_CLIENT_MESSAGES: u64 = 20;
static PRINTED_CLIENT_MESSAGES: AtomicU64 = AtomicU64::new(0);
/// Set by `-X debug=...`: print every librdkafka log line, uncapped.
static VERBOSE: AtomicBool = AtomicBool::new(false);

fn print_client_message(what: &str) {
    if VERBOSE.load(Ordering::Relaxed) {
        eprintln!("librdkafka: {what}");
        return;
    }
    let n = PRINTED_CLIENT_MESSAGES.fetch_add(1, Ordering::Relaxed);
    if n < MAX_PRINTED_CLIENT_MESSAGES {
        eprintln!("librdkafka: {what}");
    } else if n == MAX_PRINTED_CLIENT_MESSAGES {
        eprintln!("librdkafka: further client messages suppressed");
    }
}

/// Delivery outcomes of a producer: counts and the send-to-delivery-report latency histogram.
pub struct DeliveryStats {
    start: Instant,
    latency: Mutex<Histogram<u64>>,
    /// Records sent at or after this many nanoseconds are counted in `latency` (earlier ones are
    /// warm-up).
    record_from_nanos: AtomicU64,
    delivered: AtomicU64,
    failed: AtomicU64,
    first_error: Mutex<Option<String>>,
}

impl DeliveryStats {
    /// Nanoseconds since the stats' start instant; the value producers pass as the delivery opaque.
    pub fn now_nanos(&self) -> u64 {
        self.start.elapsed().as_nanos() as u64
    }

    /// Counts latencies only of records sent at or after `nanos` (see `now_nanos`).
    pub fn record_from(&self, nanos: u64) {
        self.record_from_nanos.store(nanos, Ordering::Relaxed);
    }

    /// The instant that send timestamps are measured from.
    pub fn start(&self) -> Instant {
        self.start
    }

    /// Records acknowledged by the broker.
    pub fn delivered(&self) -> u64 {
        self.delivered.load(Ordering::Relaxed)
    }

    /// Records whose delivery failed.
    pub fn failed(&self) -> u64 {
        self.failed.load(Ordering::Relaxed)
    }

    /// The first delivery error, if any.
    pub fn first_error(&self) -> Option<String> {
        self.first_error.lock().map(|e| e.clone()).unwrap_or(None)
    }

    /// A copy of the latency histogram.
    pub fn latency(&self) -> Histogram<u64> {
        match self.latency.lock() {
            Ok(h) => h.clone(),
            Err(poisoned) => poisoned.into_inner().clone(),
        }
    }
}

/// Client context shared by the harness's producers, consumers and admin clients.
pub struct BenchContext {
    /// Delivery outcomes (producers only; untouched by other clients).
    pub stats: DeliveryStats,
}

impl BenchContext {
    /// A context whose clock starts at `start`; latencies of records sent before `warmup` has passed
    /// are not recorded.
    pub fn new(start: Instant, warmup: Duration) -> Self {
        BenchContext {
            stats: DeliveryStats {
                start,
                latency: Mutex::new(report::new_latency_histogram()),
                record_from_nanos: AtomicU64::new(warmup.as_nanos() as u64),
                delivered: AtomicU64::new(0),
                failed: AtomicU64::new(0),
                first_error: Mutex::new(None),
            },
        }
    }
}

impl ClientContext for BenchContext {
    fn log(&self, level: RDKafkaLogLevel, fac: &str, log_message: &str) {
        use RDKafkaLogLevel::{Alert, Critical, Emerg, Error, Warning};
        if VERBOSE.load(Ordering::Relaxed)
            || matches!(level, Emerg | Alert | Critical | Error | Warning)
        {
            print_client_message(&format!("{level:?} {fac}: {log_message}"));
        }
    }

    fn error(&self, error: KafkaError, reason: &str) {
        print_client_message(&format!("error {error}: {reason}"));
    }
}

impl ConsumerContext for BenchContext {}

impl ProducerContext for BenchContext {
    /// Send time of the record, in nanoseconds since `DeliveryStats::start`.
    type DeliveryOpaque = usize;

    fn delivery(&self, result: &DeliveryResult<'_>, sent_at_nanos: usize) {
        let stats = &self.stats;
        match result {
            Ok(_) => {
                stats.delivered.fetch_add(1, Ordering::Relaxed);
                let sent = sent_at_nanos as u64;
                if sent >= stats.record_from_nanos.load(Ordering::Relaxed) {
                    let latency = stats.now_nanos().saturating_sub(sent);
                    if let Ok(mut h) = stats.latency.lock() {
                        report::record_latency_nanos(&mut h, latency);
                    }
                }
            }
            Err((error, _)) => {
                stats.failed.fetch_add(1, Ordering::Relaxed);
                if let Ok(mut first) = stats.first_error.lock() {
                    if first.is_none() {
                        *first = Some(error.to_string());
                    }
                }
            }
        }
    }
}

/// How long to wait for metadata and topic creation.
const METADATA_TIMEOUT: Duration = Duration::from_secs(30);

/// Creates the topic if asked, waits until its partitions have leaders, and returns the number of
/// partitions the run should use.
pub fn prepare_topic(connect: &ConnectArgs, topic: &TopicArgs) -> Result<i32> {
    if let Some(p) = topic.partitions {
        if p < 1 {
            bail!("--partitions must be at least 1, got {p}");
        }
    }
    let admin: AdminClient<DefaultClientContext> = connect
        .client_config(&[])
        .create()
        .context("creating the admin client")?;
    if topic.create_topic {
        let partitions = topic.partitions.unwrap_or(1);
        create_topic(&admin, &topic.topic, partitions, topic.replication_factor)?;
    }
    let available =
        wait_for_partitions(admin.inner(), &topic.topic, topic.partitions.unwrap_or(1))?;
    match topic.partitions {
        Some(wanted) if wanted > available => bail!(
            "topic {} has {available} partitions, fewer than --partitions {wanted}",
            topic.topic
        ),
        Some(wanted) => Ok(wanted),
        None => Ok(available),
    }
}

fn create_topic(
    admin: &AdminClient<DefaultClientContext>,
    name: &str,
    partitions: i32,
    replication_factor: i32,
) -> Result<()> {
    let new_topic = NewTopic::new(
        name,
        partitions,
        TopicReplication::Fixed(replication_factor),
    );
    let options = AdminOptions::new().operation_timeout(Some(METADATA_TIMEOUT));
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .context("starting a runtime for the admin client")?;
    let results = runtime
        .block_on(admin.create_topics([&new_topic], &options))
        .with_context(|| format!("CreateTopics topic={name} partitions={partitions}"))?;
    for result in results {
        match result {
            Ok(_) => {}
            Err((_, RDKafkaErrorCode::TopicAlreadyExists)) => {
                eprintln!("topic {name} already exists; using it as it is");
            }
            Err((topic, code)) => {
                bail!("creating topic={topic} partitions={partitions} failed: {code}")
            }
        }
    }
    Ok(())
}

/// Polls metadata until `topic` exists with at least `min_partitions` partitions that all have a
/// leader; returns its partition count.
pub fn wait_for_partitions<C: ClientContext>(
    client: &Client<C>,
    topic: &str,
    min_partitions: i32,
) -> Result<i32> {
    let deadline = Instant::now() + METADATA_TIMEOUT;
    let mut last_problem;
    loop {
        match client.fetch_metadata(Some(topic), Duration::from_secs(5)) {
            Ok(metadata) => match metadata.topics().iter().find(|t| t.name() == topic) {
                Some(t) if t.error().is_some() => {
                    last_problem = format!("topic error {:?}", t.error());
                }
                Some(t) => {
                    let count = t.partitions().len() as i32;
                    let leaderless = t.partitions().iter().filter(|p| p.leader() < 0).count();
                    if count >= min_partitions && leaderless == 0 {
                        return Ok(count);
                    }
                    last_problem = format!("{count} partitions, {leaderless} without a leader");
                }
                None => last_problem = "topic not in metadata".to_string(),
            },
            Err(e) => last_problem = format!("metadata request failed: {e}"),
        }
        if Instant::now() >= deadline {
            bail!("topic {topic} not ready after {METADATA_TIMEOUT:?}: {last_problem}");
        }
        std::thread::sleep(Duration::from_millis(200));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_overrides() {
        assert_eq!(
            parse_key_value("a.b=c=d"),
            Ok(("a.b".to_string(), "c=d".to_string()))
        );
        assert!(parse_key_value("novalue").is_err());
        assert!(parse_key_value("=x").is_err());
    }
}
