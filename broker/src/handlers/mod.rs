//! Request handlers, one module per API family, and the dispatcher that runs them with a tracing span
//! and metrics around each request.

mod admin_topics;
mod cluster;
mod configs;
mod fetch;
mod groups;
mod offsets;
mod produce;
mod replicas;

use std::sync::Arc;
use std::time::Instant;

use bytes::Bytes;
use kafka_protocol::messages::{RequestKind, ResponseKind};
use kafka_protocol::protocol::StrBytes;
use tracing::Instrument;

use crate::api_versions;
use crate::codec::{self, DecodedRequest, FrameError};
use crate::error::BrokerError;
use crate::metrics::ApiLabel;
use crate::services::Services;

/// Handles one decoded request; `Ok(None)` means no response is sent (acks=0 produce).
pub async fn handle(
    broker: Arc<Services>,
    req: DecodedRequest,
    peer: std::net::SocketAddr,
) -> Result<Option<Bytes>, FrameError> {
    let api = req.api_key;
    let version = req.header.request_api_version;
    let correlation_id = req.header.correlation_id;
    let client_id = req
        .header
        .client_id
        .as_ref()
        .map(|c| c.to_string())
        .unwrap_or_default();
    let span = tracing::debug_span!("request", api = ?api, version, correlation_id, client_id = %client_id);
    let started = Instant::now();
    let label = ApiLabel {
        api: format!("{api:?}"),
    };
    let client = groups::Client {
        id: client_id.clone(),
        host: format!("/{}", peer.ip()),
    };
    let response = dispatch(&broker, api, version, req.body, &client)
        .instrument(span)
        .await;
    broker.metrics.requests.get_or_create(&label).inc();
    broker
        .metrics
        .latency
        .get_or_create(&label)
        .observe(started.elapsed().as_secs_f64());
    match response {
        Ok(Some(body)) => codec::encode_response(api, version, correlation_id, &body).map(Some),
        Ok(None) => Ok(None),
        Err(e) => {
            broker.metrics.request_errors.get_or_create(&label).inc();
            Err(e)
        }
    }
}

async fn dispatch(
    broker: &Arc<Services>,
    api: kafka_protocol::messages::ApiKey,
    version: i16,
    body: RequestKind,
    client: &groups::Client,
) -> Result<Option<ResponseKind>, FrameError> {
    use RequestKind as Rq;
    use ResponseKind as Rs;
    let resp = match body {
        Rq::ApiVersions(_) => Rs::ApiVersions(api_versions::response()),
        // Metadata changes go through the metadata quorum; the reconciler, not the request, opens
        // and removes partition directories (on the blocking pool).
        Rq::Metadata(r) => Rs::Metadata(cluster::metadata(broker, r, version).await),
        Rq::DescribeCluster(r) => Rs::DescribeCluster(cluster::describe_cluster(broker, r)),
        Rq::DescribeQuorum(r) => {
            Rs::DescribeQuorum(cluster::describe_quorum(broker, r, version).await)
        }
        Rq::Produce(r) => match produce::handle(broker, r, version).await {
            produce::ProduceReply::Respond(r) => Rs::Produce(r),
            produce::ProduceReply::Silent => return Ok(None),
            produce::ProduceReply::Close => return Err(FrameError::AcksZeroFailed),
        },
        Rq::Fetch(r) => Rs::Fetch(fetch::handle(broker, r, version).await),
        Rq::ListOffsets(r) => Rs::ListOffsets(offsets::list_offsets(broker, r, version).await),
        Rq::OffsetForLeaderEpoch(r) => {
            Rs::OffsetForLeaderEpoch(offsets::offset_for_leader_epoch(broker, r))
        }
        Rq::DeleteRecords(r) => Rs::DeleteRecords(offsets::delete_records(broker, r).await),
        Rq::InitProducerId(r) => Rs::InitProducerId(produce::init_producer_id(broker, r).await),
        Rq::CreateTopics(r) => {
            Rs::CreateTopics(admin_topics::create_topics(broker, r, version).await)
        }
        Rq::DeleteTopics(r) => Rs::DeleteTopics(admin_topics::delete_topics(broker, r).await),
        Rq::CreatePartitions(r) => {
            Rs::CreatePartitions(admin_topics::create_partitions(broker, r).await)
        }
        Rq::DescribeConfigs(r) => {
            Rs::DescribeConfigs(configs::describe_configs(broker, r, version))
        }
        Rq::AlterConfigs(r) => Rs::AlterConfigs(configs::alter_configs(broker, r).await),
        Rq::IncrementalAlterConfigs(r) => {
            Rs::IncrementalAlterConfigs(configs::incremental_alter_configs(broker, r).await)
        }
        Rq::DescribeLogDirs(r) => Rs::DescribeLogDirs(cluster::describe_log_dirs(broker, r)),
        Rq::FindCoordinator(r) => {
            Rs::FindCoordinator(groups::find_coordinator(broker, r, version).await)
        }
        Rq::JoinGroup(r) => Rs::JoinGroup(groups::join_group(broker, r, version, client).await),
        Rq::SyncGroup(r) => Rs::SyncGroup(groups::sync_group(broker, r, version).await),
        Rq::Heartbeat(r) => Rs::Heartbeat(groups::heartbeat(broker, r)),
        Rq::LeaveGroup(r) => Rs::LeaveGroup(groups::leave_group(broker, r, version).await),
        Rq::OffsetCommit(r) => Rs::OffsetCommit(groups::offset_commit(broker, r, version).await),
        Rq::OffsetFetch(r) => Rs::OffsetFetch(groups::offset_fetch(broker, r, version)),
        Rq::ListGroups(r) => Rs::ListGroups(groups::list_groups(broker, r, version)),
        Rq::DescribeGroups(r) => Rs::DescribeGroups(groups::describe_groups(broker, r, version)),
        Rq::DeleteGroups(r) => Rs::DeleteGroups(groups::delete_groups(broker, r).await),
        Rq::OffsetDelete(r) => Rs::OffsetDelete(groups::offset_delete(broker, r).await),
        Rq::ConsumerGroupHeartbeat(r) => {
            Rs::ConsumerGroupHeartbeat(groups::consumer_group_heartbeat(broker, r, client).await)
        }
        Rq::ElectLeaders(r) => Rs::ElectLeaders(replicas::elect_leaders(broker, r).await),
        Rq::AlterPartitionReassignments(r) => Rs::AlterPartitionReassignments(
            replicas::alter_partition_reassignments(broker, r, version).await,
        ),
        Rq::ListPartitionReassignments(r) => {
            Rs::ListPartitionReassignments(replicas::list_partition_reassignments(broker, r))
        }
        Rq::ConsumerGroupDescribe(r) => {
            Rs::ConsumerGroupDescribe(groups::consumer_group_describe(broker, r, version))
        }
        _ => {
            // decode_frame admits only implemented APIs, so this is a table mismatch (a bug).
            return Err(FrameError::UnsupportedVersion { api, version });
        }
    };
    Ok(Some(resp))
}

/// Writes a failed operation's error code and message into a response's fields.
fn fill_error(e: &BrokerError, code: &mut i16, message: &mut Option<StrBytes>) {
    (*code, *message) = error_parts(e);
}

/// The error code and message of a failed operation.
fn error_parts(e: &BrokerError) -> (i16, Option<StrBytes>) {
    (e.code(), Some(StrBytes::from_string(e.to_string())))
}

/// Checks a client's `current_leader_epoch` against ours (-1 = not given).
fn check_leader_epoch(current: i32, ours: i32) -> i16 {
    use kafka_protocol::error::ResponseError;
    if current == -1 || current == ours {
        0
    } else if current > ours {
        ResponseError::UnknownLeaderEpoch.code()
    } else {
        ResponseError::FencedLeaderEpoch.code()
    }
}
