//! Prometheus metrics and the `/metrics` endpoint.
//!
//! Request counts and latency histograms per API, bytes in/out per topic, malformed frames and open
//! connections are updated on the request path; per-partition log end offset, log start offset and size
//! are read from the logs when the endpoint is scraped.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::atomic::AtomicI64;
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

use crate::broker::Broker;
use crate::log_manager::LogManager;

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
const REMOTE_TOTALS: [(&str, &str); 16] = [
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
}

/// Metadata quorum and cluster figures, read from the embedded controller at scrape time.
const CLUSTER_GAUGES: [(&str, &str); 6] = [
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
        let group_lag = Family::<GroupPartitionLabel, Gauge<i64, AtomicI64>>::default();
        r.register(
            "consumer_group_lag",
            "Log end offset minus committed offset, per group and partition",
            group_lag.clone(),
        );
        Self {
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

    /// Text exposition with consumer group lag computed from `broker` at scrape time.
    pub fn render_broker(&self, broker: &Broker) -> String {
        self.group_lag.clear();
        for (group, topic, partition, lag) in broker.groups.lag(broker) {
            self.group_lag
                .get_or_create(&GroupPartitionLabel {
                    group,
                    topic,
                    partition: partition.to_string(),
                })
                .set(lag);
        }
        let status = broker.cluster.quorum_status();
        let view = broker.view();
        let values = [
            i64::from(status.is_leader()),
            status
                .current_leader
                .and_then(|l| i64::try_from(l).ok())
                .unwrap_or(-1),
            status
                .last_applied
                .and_then(|i| i64::try_from(i).ok())
                .unwrap_or(0),
            i64::try_from(view.index).unwrap_or(i64::MAX),
            broker.cluster.broker_epoch(),
            i64::try_from(view.live_brokers().count()).unwrap_or(i64::MAX),
        ];
        for (g, v) in self.cluster.iter().zip(values) {
            g.set(v);
        }
        self.render(&broker.logs)
    }

    /// Text exposition of every metric, refreshing per-partition gauges from `logs`.
    pub fn render(&self, logs: &LogManager) -> String {
        self.log_end_offset.clear();
        self.log_start_offset.clear();
        self.log_size.clear();
        for f in &self.remote_partition {
            f.clear();
        }
        if let Some(tier) = logs.remote_tier() {
            let s = &tier.store_stats;
            let o = &tier.stats;
            let c = tier.ctx.cache.stats();
            let load =
                |a: &std::sync::atomic::AtomicU64| a.load(std::sync::atomic::Ordering::Relaxed);
            let values = [
                load(&s.puts),
                load(&s.put_bytes),
                load(&s.gets),
                load(&s.get_bytes),
                load(&s.deletes),
                load(&s.errors),
                load(&o.segments_uploaded),
                load(&o.bytes_uploaded),
                load(&o.upload_errors),
                load(&o.upload_ms_total),
                load(&o.seal_to_upload_ms_total),
                load(&o.segments_deleted),
                c.hits,
                c.misses,
                c.gets,
                c.get_latency_micros_total,
            ];
            for (g, v) in self.remote_totals.iter().zip(values) {
                g.set(i64::try_from(v).unwrap_or(i64::MAX));
            }
        }
        for p in logs.all() {
            if let (Some(remote), Some((lag_bytes, lag_segments))) = (p.remote(), p.upload_lag()) {
                let label = PartitionLabel {
                    topic: p.topic.clone(),
                    partition: p.index.to_string(),
                };
                let values = [
                    i64::try_from(lag_bytes).unwrap_or(i64::MAX),
                    i64::try_from(lag_segments).unwrap_or(i64::MAX),
                    i64::try_from(remote.size_bytes()).unwrap_or(i64::MAX),
                    remote.readable_start().unwrap_or(-1),
                ];
                for (f, v) in self.remote_partition.iter().zip(values) {
                    f.get_or_create(&label).set(v);
                }
            }
            let label = PartitionLabel {
                topic: p.topic.clone(),
                partition: p.index.to_string(),
            };
            let (start, end, size) = p.offsets();
            self.log_end_offset.get_or_create(&label).set(end);
            self.log_start_offset.get_or_create(&label).set(start);
            self.log_size
                .get_or_create(&label)
                .set(i64::try_from(size).unwrap_or(i64::MAX));
        }
        let mut out = String::new();
        if let Err(e) = prometheus_client::encoding::text::encode(&mut out, &self.registry.lock()) {
            tracing::warn!(error = %e, "cannot encode metrics");
        }
        out
    }
}

/// Serves `GET /metrics` on `addr` until `cancel` fires.
pub async fn serve(listener: TcpListener, broker: Arc<Broker>, cancel: CancellationToken) {
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
        let broker = broker.clone();
        tokio::spawn(async move {
            let service = hyper::service::service_fn(move |req: Request<hyper::body::Incoming>| {
                let body = if req.uri().path() == "/metrics" {
                    Some(broker.metrics.render_broker(&broker))
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
