//! Fetch: full fetches (no incremental sessions; session id 0 tells clients to send full requests), with
//! long-polling on max_wait_ms/min_bytes, the request-wide max_bytes and per-partition limits.
//!
//! Consumers (v11+) may fetch from a live follower, which serves up to its own high watermark; a
//! leader under the rack-aware selector names a replica in the consumer's rack
//! (`preferred_read_replica`, KIP-392) instead of returning records.
//!
//! Reads return whole batches; the first batch of the first non-empty partition is returned even when it
//! is larger than the limits (KIP-74), so a consumer can always make progress.

use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use futures::future::select_all;
use futures::FutureExt;
use kafka_protocol::error::ResponseError;
use kafka_protocol::messages::fetch_response::{FetchableTopicResponse, PartitionData};
use kafka_protocol::messages::{BrokerId, FetchRequest, FetchResponse};
use tokio::sync::watch;

use super::check_leader_epoch;
use crate::metrics::TopicLabel;
use crate::replica::Partition;
use crate::services::Services;

/// Upper bound on how long a fetch may park, whatever the client asks.
const MAX_WAIT_CAP: Duration = Duration::from_secs(30);

struct Slot {
    topic_index: usize,
    topic: String,
    partition: Option<Arc<Partition>>,
    index: i32,
    fetch_offset: i64,
    max_bytes: usize,
    current_leader_epoch: i32,
    missing_code: i16,
    /// KIP-392: the replica the consumer should read from instead (-1: this one).
    preferred_read_replica: i32,
}

pub(super) async fn handle(
    broker: &Arc<Services>,
    req: FetchRequest,
    version: i16,
) -> FetchResponse {
    let deadline =
        Instant::now() + Duration::from_millis(req.max_wait_ms.max(0) as u64).min(MAX_WAIT_CAP);
    let min_bytes = req.min_bytes.max(0) as usize;
    let max_bytes = if req.max_bytes <= 0 {
        usize::MAX
    } else {
        req.max_bytes as usize
    };
    let by_id = version >= 13;
    // KIP-392: consumers (no replica id) may read from followers from v11 on.
    let follower_ok = version >= 11 && req.replica_id.0 < 0;
    let client_rack = if version >= 11 {
        req.rack_id.as_str()
    } else {
        ""
    };

    let mut topics_out: Vec<FetchableTopicResponse> = Vec::with_capacity(req.topics.len());
    let mut slots = Vec::new();
    for (ti, t) in req.topics.iter().enumerate() {
        let record = if by_id {
            broker.topic_by_id(t.topic_id)
        } else {
            broker.topic(&t.topic.0)
        };
        let name = record
            .as_ref()
            .map(|r| r.name.clone())
            .unwrap_or_else(|| t.topic.0.to_string());
        let mut out = FetchableTopicResponse::default();
        out.topic = t.topic.clone();
        out.topic_id = t.topic_id;
        topics_out.push(out);
        for p in &t.partitions {
            let found = record
                .as_ref()
                .map(|_| broker.fetch_partition(&name, p.partition, follower_ok));
            let preferred_read_replica = match &found {
                Some(Ok(part)) if part.is_leader() => broker
                    .preferred_read_replica(&name, p.partition, client_rack)
                    .unwrap_or(-1),
                _ => -1,
            };
            let (partition, missing_code) = match found {
                Some(Ok(part)) => (Some(part), 0),
                Some(Err(e)) => (None, e.code()),
                None if by_id => (None, ResponseError::UnknownTopicId.code()),
                None => (None, ResponseError::UnknownTopicOrPartition.code()),
            };
            slots.push(Slot {
                topic_index: ti,
                topic: name.clone(),
                partition,
                index: p.partition,
                fetch_offset: p.fetch_offset,
                max_bytes: p.partition_max_bytes.max(0) as usize,
                current_leader_epoch: p.current_leader_epoch,
                missing_code,
                preferred_read_replica,
            });
        }
    }

    let read_committed = req.isolation_level == 1;
    let datas = loop {
        // Subscribe before reading so that an append between the read and the wait is not missed.
        let mut watchers: Vec<watch::Receiver<i64>> = slots
            .iter()
            .filter_map(|s| s.partition.as_ref().map(|p| p.subscribe_end()))
            .collect();
        let (datas, total, any_error) = read_all(&slots, max_bytes, read_committed).await;
        let now = Instant::now();
        if total >= min_bytes || any_error || now >= deadline || watchers.is_empty() {
            break datas;
        }
        let changed = select_all(watchers.iter_mut().map(|w| w.changed().boxed()));
        if tokio::time::timeout(deadline - now, changed).await.is_err() {
            let (datas, _, _) = read_all(&slots, max_bytes, read_committed).await;
            break datas;
        }
    };

    for (slot, data) in slots.iter().zip(datas) {
        if let Some(bytes) = data.records.as_ref().filter(|b| !b.is_empty()) {
            broker
                .metrics
                .bytes_out
                .get_or_create(&TopicLabel {
                    topic: slot.topic.clone(),
                })
                .inc_by(bytes.len() as u64);
        }
        topics_out[slot.topic_index].partitions.push(data);
    }
    let mut resp = FetchResponse::default();
    resp.responses = topics_out;
    resp.session_id = 0;
    resp
}

async fn read_all(
    slots: &[Slot],
    max_bytes: usize,
    read_committed: bool,
) -> (Vec<PartitionData>, usize, bool) {
    let mut remaining = max_bytes;
    let mut total = 0usize;
    let mut any_error = false;
    let mut out = Vec::with_capacity(slots.len());
    for slot in slots {
        let mut d = PartitionData::default();
        d.partition_index = slot.index;
        d.high_watermark = -1;
        d.last_stable_offset = -1;
        d.log_start_offset = -1;
        d.preferred_read_replica = BrokerId(-1);
        d.aborted_transactions = if read_committed {
            Some(Vec::new())
        } else {
            None
        };
        d.records = Some(Bytes::new());
        let Some(p) = slot.partition.as_ref() else {
            d.error_code = slot.missing_code;
            any_error = true;
            out.push(d);
            continue;
        };
        let epoch_code = check_leader_epoch(slot.current_leader_epoch, p.leader_epoch());
        if epoch_code != 0 {
            d.error_code = epoch_code;
            any_error = true;
            out.push(d);
            continue;
        }
        // A read below the local log needs a manifest view that reaches the agreed offloaded end
        // (the log start answered below too). Above it, an object-store outage must not matter.
        if slot.fetch_offset < p.local_log_start_offset() {
            if let Err(e) = p.sync_remote_view().await {
                d.error_code = e.code();
                any_error = true;
                out.push(d);
                continue;
            }
        }
        let (start, hw, _) = p.offsets();
        d.high_watermark = hw;
        d.last_stable_offset = hw;
        d.log_start_offset = start;
        if slot.preferred_read_replica >= 0 {
            // The consumer reads from a replica in its rack; no records from here.
            d.preferred_read_replica = BrokerId(slot.preferred_read_replica);
            any_error = true; // answer at once, as for an error: nothing to wait for here
            out.push(d);
            continue;
        }
        let limit = slot.max_bytes.min(remaining);
        let min_one = total == 0;
        if limit == 0 && !min_one {
            out.push(d);
            continue;
        }
        match p.read_any(slot.fetch_offset, limit, min_one).await {
            Ok(bytes) => {
                total += bytes.len();
                remaining = remaining.saturating_sub(bytes.len());
                d.records = Some(bytes);
            }
            Err(e) => {
                d.error_code = e.code();
                any_error = true;
            }
        }
        out.push(d);
    }
    (out, total, any_error)
}
