//! ListOffsets, OffsetForLeaderEpoch and DeleteRecords.

use std::sync::Arc;

use kafka_protocol::error::ResponseError;
use kafka_protocol::messages::delete_records_response::{
    DeleteRecordsPartitionResult, DeleteRecordsTopicResult,
};
use kafka_protocol::messages::list_offsets_response::{
    ListOffsetsPartitionResponse, ListOffsetsTopicResponse,
};
use kafka_protocol::messages::offset_for_leader_epoch_response::{
    EpochEndOffset, OffsetForLeaderTopicResult,
};
use kafka_protocol::messages::{
    DeleteRecordsRequest, DeleteRecordsResponse, ListOffsetsRequest, ListOffsetsResponse,
    OffsetForLeaderEpochRequest, OffsetForLeaderEpochResponse,
};

use super::check_leader_epoch;
use crate::replica::Partition;
use crate::services::Services;

/// ListOffsets special timestamps.
const LATEST: i64 = -1;
const EARLIEST: i64 = -2;
const MAX_TIMESTAMP: i64 = -3;
const EARLIEST_LOCAL: i64 = -4;
const LATEST_TIERED: i64 = -5;

pub(super) async fn list_offsets(
    broker: &Arc<Services>,
    req: ListOffsetsRequest,
    version: i16,
) -> ListOffsetsResponse {
    let mut resp = ListOffsetsResponse::default();
    for t in req.topics {
        let name = t.name.0.to_string();
        let mut out = ListOffsetsTopicResponse::default();
        for p in t.partitions {
            let mut r = ListOffsetsPartitionResponse::default();
            r.partition_index = p.partition_index;
            r.timestamp = -1;
            r.offset = -1;
            r.leader_epoch = -1;
            match broker.leader_partition(&name, p.partition_index) {
                Err(e) => r.error_code = e.code(),
                Ok(part) => {
                    r.error_code = check_leader_epoch(p.current_leader_epoch, part.leader_epoch());
                    if r.error_code == 0 {
                        lookup(&part, p.timestamp, &mut r).await;
                    }
                    if version < 4 {
                        // leader_epoch exists from v4 on; the codec refuses it below.
                        r.leader_epoch = -1;
                    }
                }
            }
            out.partitions.push(r);
        }
        out.name = t.name;
        resp.topics.push(out);
    }
    resp
}

async fn lookup(part: &Partition, timestamp: i64, r: &mut ListOffsetsPartitionResponse) {
    // A new leader's manifest view may lag the agreed offloaded end: its earliest offset would be
    // the local log start. (The latest and local offsets need no object store.)
    if !matches!(timestamp, LATEST | EARLIEST_LOCAL) {
        if let Err(e) = part.sync_remote_view().await {
            r.error_code = e.code();
            return;
        }
    }
    let (start, hw, _) = part.offsets();
    let found = match timestamp {
        LATEST => Ok(Some((hw, -1))),
        EARLIEST => Ok(Some((start, -1))),
        EARLIEST_LOCAL => Ok(Some((part.local_log_start_offset(), -1))),
        LATEST_TIERED => Ok(part
            .remote()
            .and_then(|r| r.end_offset())
            .map(|end| (end - 1, -1))),
        MAX_TIMESTAMP => part.max_timestamp_offset_any().await,
        ts if ts >= 0 => part.offset_for_timestamp_any(ts).await,
        other => {
            tracing::debug!(timestamp = other, "unknown ListOffsets timestamp");
            r.error_code = ResponseError::InvalidRequest.code();
            return;
        }
    };
    match found {
        Ok(Some((offset, ts))) => {
            r.offset = offset;
            r.timestamp = ts;
            r.leader_epoch = part.leader_epoch();
        }
        Ok(None) => {}
        Err(e) => r.error_code = e.code(),
    }
}

pub(super) fn offset_for_leader_epoch(
    broker: &Arc<Services>,
    req: OffsetForLeaderEpochRequest,
) -> OffsetForLeaderEpochResponse {
    let mut resp = OffsetForLeaderEpochResponse::default();
    resp.topics = req
        .topics
        .into_iter()
        .map(|t| {
            let name = t.topic.0.to_string();
            let mut out = OffsetForLeaderTopicResult::default();
            out.partitions = t
                .partitions
                .into_iter()
                .map(|p| {
                    let mut r = EpochEndOffset::default();
                    r.partition = p.partition;
                    r.leader_epoch = -1;
                    r.end_offset = -1;
                    match broker.leader_partition(&name, p.partition) {
                        Err(e) => r.error_code = e.code(),
                        Ok(part) => {
                            r.error_code =
                                check_leader_epoch(p.current_leader_epoch, part.leader_epoch());
                            if r.error_code == 0 {
                                if let Some((epoch, end)) =
                                    part.offset_for_leader_epoch_any(p.leader_epoch)
                                {
                                    r.leader_epoch = epoch;
                                    r.end_offset = end;
                                }
                            }
                        }
                    }
                    r
                })
                .collect();
            out.topic = t.topic;
            out
        })
        .collect();
    resp
}

pub(super) async fn delete_records(
    broker: &Arc<Services>,
    req: DeleteRecordsRequest,
) -> DeleteRecordsResponse {
    let mut resp = DeleteRecordsResponse::default();
    for t in req.topics {
        let name = t.name.0.to_string();
        let mut out = DeleteRecordsTopicResult::default();
        for p in t.partitions {
            let mut r = DeleteRecordsPartitionResult::default();
            r.partition_index = p.partition_index;
            r.low_watermark = -1;
            match broker.leader_partition(&name, p.partition_index) {
                Err(e) => r.error_code = e.code(),
                Ok(part) => match part.delete_records_any(p.offset).await {
                    Ok(low) => r.low_watermark = low,
                    Err(e) => r.error_code = e.code(),
                },
            }
            out.partitions.push(r);
        }
        out.name = t.name;
        resp.topics.push(out);
    }
    resp
}
