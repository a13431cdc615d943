//! Prometheus metrics and the `/metrics` endpoint.
//!
//! Request counts and latency histograms per API, bytes in/out per topic, malformed frames and open
//! connections are updated on the request path; per-partition log end offset, log start offset and size
//! are read from the logs when the endpoint is scraped.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicI64, AtomicU64};
use std::sync::Arc;

use bytes::Bytes;
use http_body_util::Full;
use hyper::{Request, Response};
use parking_lot::Mutex;
use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{exponential_buckets, Histogram};
use prometheus_client::registry::Registry;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

/// Label set naming a Kafka API.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ApiLabel {
    /// API name, e.g. `Produce`.
    pub api: String,
}

/// Label set naming a topic.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct TopicLabel {
    /// Topic name.
    pub topic: String,
}

/// Cumulative remote tier figures, exported as gauges read from the tier's counters at scrape time.
pub const REMOTE_TOTALS: [(&str, &str); 16] = [
    ("remote_put_requests", "Object store PUT-class requests (puts; multipart create, parts and complete), cumulative"),
    ("remote_put_bytes", "Bytes sent to the object store, cumulative"),
    ("remote_get_requests", "Object store GET requests, cumulative"),
    ("remote_get_bytes", "Bytes read from the object store, cumulative"),
    ("remote_delete_requests", "Objects deleted, cumulative"),
    ("remote_request_errors", "Object store requests that failed, cumulative"),
    ("remote_segments_uploaded", "Segments offloaded, cumulative"),
    ("remote_bytes_uploaded", "Bytes offloaded (segments and indexes), cumulative"),
    ("remote_upload_errors", "Failed upload attempts (retried with backoff), cumulative"),
    ("remote_upload_duration_ms", "Time from starting an upload to it being recorded in the manifest, summed"),
    ("remote_seal_to_upload_ms", "Time from a segment's last write (its seal) to its upload being recorded, summed"),
    ("remote_segments_deleted", "Offloaded segments deleted by retention or DeleteRecords, cumulative"),
    ("remote_cache_hits", "Remote reads served from the read cache, cumulative"),
    ("remote_cache_misses", "Remote reads that waited for an object store GET, cumulative"),
    ("remote_cache_get_requests", "GETs made by the read cache (including read-ahead), cumulative"),
    ("remote_cache_get_latency_micros", "Sum of the read cache's GET latencies in microseconds (divide by remote_cache_get_requests)"),
];

/// Label set naming a partition.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct PartitionLabel {
    /// Topic name.
    pub topic: String,
    /// Partition index.
    pub partition: String,
}

/// Label set naming a consumer group's partition.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct GroupPartitionLabel {
    /// Group id.
    pub group: String,
    /// Topic name.
    pub topic: String,
    /// Partition index.
    pub partition: String,
}

/// The broker's metrics.
#[derive(Clone)]
pub struct Metrics {
    registry: Arc<Mutex<Registry>>,
    /// Requests served per API.
    pub requests: Family<ApiLabel, Counter>,
    /// Requests that failed at the top level (connection-closing errors) per API.
    pub request_errors: Family<ApiLabel, Counter>,
    /// Request latency per API, seconds.
    pub latency: Family<ApiLabel, Histogram>,
    /// Record bytes produced per topic.
    pub bytes_in: Family<TopicLabel, Counter>,
    /// Record bytes fetched per topic.
    pub bytes_out: Family<TopicLabel, Counter>,
    /// Frames that could not be decoded (the connection was closed).
    pub malformed_frames: Counter,
    /// Open client connections.
    pub connections: Gauge<i64, AtomicI64>,
    log_end_offset: Family<PartitionLabel, Gauge<i64, AtomicI64>>,
    log_start_offset: Family<PartitionLabel, Gauge<i64, AtomicI64>>,
    log_size: Family<PartitionLabel, Gauge<i64, AtomicI64>>,
    group_lag: Family<GroupPartitionLabel, Gauge<i64, AtomicI64>>,
    remote_partition: [Family<PartitionLabel, Gauge<i64, AtomicI64>>; 4],
    remote_totals: [Gauge<i64, AtomicI64>; 16],
    cluster: [Gauge<i64, AtomicI64>; 6],
    replication: [Gauge<i64, AtomicI64>; 7],
    follower_lag_entries: Family<ReplicaLabel, Gauge<i64, AtomicI64>>,
    follower_caught_up_age: Family<ReplicaLabel, Gauge<f64, AtomicU64>>,
}

/// Labels of a follower replica of a partition this broker leads.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ReplicaLabel {
    /// Topic name.
    pub topic: String,
    /// Partition index.
    pub partition: String,
    /// The follower's broker id.
    pub replica: String,
}

/// Replication figures (Kafka's names where Kafka has them), in [`ReplicationSample`] order.
pub const REPLICATION_GAUGES: [(&str, &str); 7] = [
    (
        "under_replicated_partitions",
        "Partitions this broker leads whose ISR is smaller than their voter set",
    ),
    (
        "under_min_isr_partitions",
        "Partitions this broker leads whose ISR is below min.insync.replicas",
    ),
    (
        "offline_partitions",
        "Partitions without a live leader in this broker's metadata",
    ),
    ("leader_count", "Partitions this broker leads"),
    (
        "leader_elections_won",
        "Leaderships this broker won since it started (a counter)",
    ),
    (
        "reassigning_partitions",
        "Partitions with a reassignment in progress in this broker's metadata",
    ),
    (
        "reassignment_entries_remaining",
        "Log entries the target replicas of reassignments this broker leads still lack",
    ),
];

/// Metadata quorum and cluster figures, read from the embedded controller at scrape time.
pub const CLUSTER_GAUGES: [(&str, &str); 6] = [
    (
        "controller_is_leader",
        "1 if this node's controller is the active one, else 0",
    ),
    (
        "controller_leader_id",
        "Node id of the active controller as this node knows it (-1 if none)",
    ),
    (
        "metadata_applied_index",
        "Index of the last metadata log entry applied by this node",
    ),
    (
        "metadata_published_index",
        "Metadata log index the broker has acted on (its metadata cache)",
    ),
    (
        "broker_epoch",
        "This broker's current registration epoch (-1 before registering)",
    ),
    (
        "cluster_live_brokers",
        "Registered, unfenced brokers in this node's metadata",
    ),
];

impl std::fmt::Debug for Metrics {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Metrics")
    }
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}

impl Metrics {
    /// Registers every metric.
    pub fn new() -> Self {
        let mut r = Registry::with_prefix("strata");
        let requests = Family::<ApiLabel, Counter>::default();
        r.register(
            "requests",
            "Kafka requests served, per API",
            requests.clone(),
        );
        let request_errors = Family::<ApiLabel, Counter>::default();
        r.register(
            "request_errors",
            "Kafka requests that closed the connection, per API",
            request_errors.clone(),
        );
        let latency = Family::<ApiLabel, Histogram>::new_with_constructor(|| {
            Histogram::new(exponential_buckets(0.000_05, 2.0, 20))
        });
        r.register(
            "request_latency_seconds",
            "Kafka request latency, per API",
            latency.clone(),
        );
        let bytes_in = Family::<TopicLabel, Counter>::default();
        r.register(
            "bytes_in",
            "Record bytes produced, per topic",
            bytes_in.clone(),
        );
        let bytes_out = Family::<TopicLabel, Counter>::default();
        r.register(
            "bytes_out",
            "Record bytes fetched, per topic",
            bytes_out.clone(),
        );
        let malformed_frames = Counter::default();
        r.register(
            "malformed_frames",
            "Request frames that could not be decoded",
            malformed_frames.clone(),
        );
        let connections = Gauge::<i64, AtomicI64>::default();
        r.register(
            "connections",
            "Open client connections",
            connections.clone(),
        );
        let log_end_offset = Family::<PartitionLabel, Gauge<i64, AtomicI64>>::default();
        r.register(
            "log_end_offset",
            "Next offset to be written, per partition",
            log_end_offset.clone(),
        );
        let log_start_offset = Family::<PartitionLabel, Gauge<i64, AtomicI64>>::default();
        r.register(
            "log_start_offset",
            "First offset still readable, per partition",
            log_start_offset.clone(),
        );
        let log_size = Family::<PartitionLabel, Gauge<i64, AtomicI64>>::default();
        r.register(
            "log_size_bytes",
            "Bytes on local disk, per partition",
            log_size.clone(),
        );
        let remote_partition = [
            (
                "remote_upload_lag_bytes",
                "Local bytes not offloaded yet (including the active segment), per partition",
            ),
            (
                "remote_upload_lag_segments",
                "Sealed segments not offloaded yet, per partition",
            ),
            (
                "remote_log_size_bytes",
                "Bytes offloaded to the object store, per partition",
            ),
            (
                "remote_log_start_offset",
                "First offloaded offset still readable, per partition (-1 if none)",
            ),
        ]
        .map(|(name, help)| {
            let family = Family::<PartitionLabel, Gauge<i64, AtomicI64>>::default();
            r.register(name, help, family.clone());
            family
        });
        let remote_totals = REMOTE_TOTALS.map(|(name, help)| {
            let g = Gauge::<i64, AtomicI64>::default();
            r.register(name, help, g.clone());
            g
        });
        let cluster = CLUSTER_GAUGES.map(|(name, help)| {
            let g = Gauge::<i64, AtomicI64>::default();
            r.register(name, help, g.clone());
            g
        });
        let replication = REPLICATION_GAUGES.map(|(name, help)| {
            let g = Gauge::<i64, AtomicI64>::default();
            r.register(name, help, g.clone());
            g
        });
        let follower_lag_entries = Family::<ReplicaLabel, Gauge<i64, AtomicI64>>::default();
        r.register(
            "follower_lag_entries",
            "Log entries a follower is behind this leader, per partition and follower",
            follower_lag_entries.clone(),
        );
        let follower_caught_up_age = Family::<ReplicaLabel, Gauge<f64, AtomicU64>>::default();
        r.register(
            "follower_caught_up_age_seconds",
            "Time since a follower last reached this leader's log end (-1: never), per partition and follower",
            follower_caught_up_age.clone(),
        );
        let group_lag = Family::<GroupPartitionLabel, Gauge<i64, AtomicI64>>::default();
        r.register(
            "consumer_group_lag",
            "Log end offset minus committed offset, per group and partition",
            group_lag.clone(),
        );
        Self {
            replication,
            follower_lag_entries,
            follower_caught_up_age,
            remote_partition,
            remote_totals,
            cluster,
            group_lag,
            registry: Arc::new(Mutex::new(r)),
            requests,
            request_errors,
            latency,
            bytes_in,
            bytes_out,
            malformed_frames,
            connections,
            log_end_offset,
            log_start_offset,
            log_size,
        }
    }

    /// Text exposition of every metric, with the gauges that are sampled at scrape time set from
    /// `scrape`.
    pub fn render(&self, scrape: &Scrape) -> String {
        self.group_lag.clear();
        for (group, topic, partition, lag) in &scrape.group_lag {
            self.group_lag
                .get_or_create(&GroupPartitionLabel {
                    group: group.clone(),
                    topic: topic.clone(),
                    partition: partition.to_string(),
                })
                .set(*lag);
        }
        for (g, v) in self.cluster.iter().zip(scrape.cluster) {
            g.set(v);
        }
        let r = &scrape.replication;
        for (g, v) in self.replication.iter().zip([
            r.under_replicated,
            r.under_min_isr,
            r.offline,
            r.leaders,
            r.elections_won,
            r.reassigning,
            r.reassignment_entries_remaining,
        ]) {
            g.set(i64::try_from(v).unwrap_or(i64::MAX));
        }
        self.follower_lag_entries.clear();
        self.follower_caught_up_age.clear();
        for f in &r.followers {
            let label = ReplicaLabel {
                topic: f.topic.clone(),
                partition: f.partition.to_string(),
                replica: f.replica.to_string(),
            };
            self.follower_lag_entries
                .get_or_create(&label)
                .set(i64::try_from(f.lag_entries).unwrap_or(i64::MAX));
            self.follower_caught_up_age
                .get_or_create(&label)
                .set(f.caught_up_age.map_or(-1.0, |d| d.as_secs_f64()));
        }
        self.log_end_offset.clear();
        self.log_start_offset.clear();
        self.log_size.clear();
        for f in &self.remote_partition {
            f.clear();
        }
        if let Some(totals) = &scrape.remote_totals {
            for (g, v) in self.remote_totals.iter().zip(totals) {
                g.set(i64::try_from(*v).unwrap_or(i64::MAX));
            }
        }
        for p in &scrape.partitions {
            let label = PartitionLabel {
                topic: p.topic.clone(),
                partition: p.partition.to_string(),
            };
            if let Some(r) = &p.remote {
                let values = [
                    i64::try_from(r.lag_bytes).unwrap_or(i64::MAX),
                    i64::try_from(r.lag_segments).unwrap_or(i64::MAX),
                    i64::try_from(r.size_bytes).unwrap_or(i64::MAX),
                    r.readable_start,
                ];
                for (f, v) in self.remote_partition.iter().zip(values) {
                    f.get_or_create(&label).set(v);
                }
            }
            self.log_end_offset
                .get_or_create(&label)
                .set(p.high_watermark);
            self.log_start_offset.get_or_create(&label).set(p.log_start);
            self.log_size
                .get_or_create(&label)
                .set(i64::try_from(p.size_bytes).unwrap_or(i64::MAX));
        }
        let mut out = String::new();
        if let Err(e) = prometheus_client::encoding::text::encode(&mut out, &self.registry.lock()) {
            tracing::warn!(error = %e, "cannot encode metrics");
        }
        out
    }
}

/// Figures sampled from the broker's services when the endpoint is scraped.
#[derive(Debug, Default, Clone)]
pub struct Scrape {
    /// One entry per hosted partition.
    pub partitions: Vec<PartitionSample>,
    /// The remote tier's cumulative counters, in [`REMOTE_TOTALS`] order (tiering on).
    pub remote_totals: Option<[u64; 16]>,
    /// (group, topic, partition, lag) for every committed offset of a hosted partition.
    pub group_lag: Vec<(String, String, i32, i64)>,
    /// The metadata quorum gauges, in [`CLUSTER_GAUGES`] order.
    pub cluster: [i64; 6],
    /// Replication figures.
    pub replication: ReplicationSample,
}

/// Replication figures at scrape time (see [`REPLICATION_GAUGES`]).
#[derive(Debug, Default, Clone)]
pub struct ReplicationSample {
    /// Led partitions whose ISR is smaller than their voters.
    pub under_replicated: u64,
    /// Led partitions whose ISR is below min.insync.replicas.
    pub under_min_isr: u64,
    /// Partitions without a live leader (cluster-wide, from the metadata).
    pub offline: u64,
    /// Partitions led here.
    pub leaders: u64,
    /// Leaderships won since start.
    pub elections_won: u64,
    /// Partitions under reassignment (cluster-wide).
    pub reassigning: u64,
    /// Entries the reassignment targets of partitions led here still lack.
    pub reassignment_entries_remaining: u64,
    /// Followers of the partitions led here.
    pub followers: Vec<FollowerSample>,
}

/// One follower of a partition led here.
#[derive(Debug, Clone)]
pub struct FollowerSample {
    /// Topic name.
    pub topic: String,
    /// Partition index.
    pub partition: i32,
    /// The follower's broker id.
    pub replica: u64,
    /// Entries behind the leader's last entry.
    pub lag_entries: u64,
    /// Time since it was last caught up (`None`: never).
    pub caught_up_age: Option<std::time::Duration>,
}

/// One hosted partition at scrape time.
#[derive(Debug, Clone)]
pub struct PartitionSample {
    /// Topic name.
    pub topic: String,
    /// Partition index.
    pub partition: i32,
    /// Log start over both tiers.
    pub log_start: i64,
    /// High watermark.
    pub high_watermark: i64,
    /// Local bytes.
    pub size_bytes: u64,
    /// Remote tier figures, if the partition tiers.
    pub remote: Option<RemoteSample>,
}

/// A partition's remote tier at scrape time.
#[derive(Debug, Clone, Copy)]
pub struct RemoteSample {
    /// Local bytes not offloaded yet.
    pub lag_bytes: u64,
    /// Sealed segments not offloaded yet.
    pub lag_segments: usize,
    /// Offloaded bytes.
    pub size_bytes: u64,
    /// First offloaded offset still readable, or -1.
    pub readable_start: i64,
}

/// Renders the exposition text on each scrape.
pub type Renderer = Arc<dyn Fn() -> String + Send + Sync>;

/// Serves `GET /metrics` on `addr` until `cancel` fires.
pub async fn serve(listener: TcpListener, render: Renderer, cancel: CancellationToken) {
    loop {
        let (stream, _) = tokio::select! {
            _ = cancel.cancelled() => return,
            accepted = listener.accept() => match accepted {
                Ok(a) => a,
                Err(e) => {
                    tracing::warn!(error = %e, "metrics accept failed");
                    continue;
                }
            },
        };
        let render = render.clone();
        tokio::spawn(async move {
            let service = hyper::service::service_fn(move |req: Request<hyper::body::Incoming>| {
                let body = if req.uri().path() == "/metrics" {
                    Some(render())
                } else {
                    None
                };
                async move {
                    let resp = match body {
                        Some(text) => Response::builder()
                            .header("content-type", "text/plain; version=0.0.4; charset=utf-8")
                            .body(Full::new(Bytes::from(text))),
                        None => Response::builder()
                            .status(404)
                            .body(Full::new(Bytes::from_static(b"try /metrics\n"))),
                    };
                    Ok::<_, Infallible>(
                        resp.unwrap_or_else(|_| Response::new(Full::new(Bytes::new()))),
                    )
                }
            });
            let io = hyper_util::rt::TokioIo::new(stream);
            if let Err(e) = hyper::server::conn::http1::Builder::new()
                .serve_connection(io, service)
                .await
            {
                tracing::debug!(error = %e, "metrics connection ended");
            }
        });
    }
}

/// Binds the metrics endpoint.
pub async fn bind(addr: SocketAddr) -> std::io::Result<TcpListener> {
    TcpListener::bind(addr).await
}
